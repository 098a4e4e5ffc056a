"""Run ``python -m altdiffusion.serve`` as a child process on a free loopback port.

For load tests and benchmarks, which need the server's own memory (RSS) and CPU apart from
the client's::

    with ServerProcess({"tiny": folder}, max_queue=8) as server:
        httpx.get(server.url + "/sdapi/v1/samplers")
        print(server.rss_bytes())
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

_STARTED = re.compile(r"Uvicorn running on (http://127\.0\.0\.1:\d+)")


class ServerProcess:
    """A server child process bound to 127.0.0.1 on a port the OS picks (no race for a port)."""

    def __init__(
        self,
        models: Mapping[str, str | Path],
        *,
        max_queue: int = 8,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        start_timeout: float = 180.0,
    ) -> None:
        self.models = dict(models)
        self.args = [
            sys.executable,
            "-m",
            "altdiffusion.serve",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--max-queue",
            str(max_queue),
            "--no-safety-checker",
            *extra_args,
        ]
        for name, folder in self.models.items():
            self.args += ["--model", f"{name}={folder}"]
        self.env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen | None = None
        self.url = ""
        self._log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed by stop()
            prefix="altdiffusion-serve-", suffix=".log", delete=False
        )

    # -- lifecycle
    def start(self) -> ServerProcess:
        self.proc = subprocess.Popen(self.args, stdout=self._log, stderr=subprocess.STDOUT, env=self.env)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            match = _STARTED.search(self.log())
            if match:
                self.url = match.group(1)
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the server did not start within {self.start_timeout:.0f} s:\n{self.log()[-4000:]}")

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGINT (uvicorn's graceful shutdown), then SIGKILL if it does not exit; the exit code."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        self._log.close()
        return proc.returncode if proc is not None else None

    def __enter__(self) -> ServerProcess:
        try:
            return self.start()
        except BaseException:
            self.__exit__(None, None, None)
            raise

    def __exit__(self, *exc) -> None:
        self.stop()
        Path(self._log.name).unlink(missing_ok=True)

    # -- inspection
    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError("the server is not running")
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        try:
            return Path(self._log.name).read_text(errors="replace")
        except OSError:
            return ""

    def rss_bytes(self) -> int:
        """Resident memory of the server process now (Linux ``/proc/<pid>/status`` VmRSS)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("VmRSS not found")

    def cpu_seconds(self) -> float:
        """User + system CPU time the server process has used (``/proc/<pid>/stat``)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
