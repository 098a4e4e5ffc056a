"""Running training commands as subprocesses, and killing one mid-run."""

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest


def env() -> dict:
    """Offline, one thread per process: runs are reproducible and do not oversubscribe 2 cores."""
    return dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONHASHSEED="0")


def run(cmd: list[str], timeout: int = 900) -> None:
    subprocess.run(cmd, check=True, env=env(), timeout=timeout)


def kill_after_first_checkpoint(cmd: list[str], out: Path, step: int, timeout: int = 600) -> None:
    """Start ``cmd``, SIGKILL it as soon as checkpoint ``step`` is complete, and check that it
    died before writing its final model."""
    proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while time.time() < deadline and not (out / "checkpoints" / f"step-{step}" / "trainer_state.json").exists():
        if proc.poll() is not None:
            pytest.fail("the run ended before its first checkpoint; cannot test the kill")
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "model").exists(), "killed before the end, so no final model"


def torchrun(nproc: int = 2) -> list[str]:
    """A torchrun launcher on a port no other test run uses (--standalone can collide when
    two runs start together)."""
    import socket
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "1",
        "--nproc_per_node",
        str(nproc),
        "--rdzv-backend",
        "c10d",
        "--rdzv-endpoint",
        f"127.0.0.1:{port}",
    ]
