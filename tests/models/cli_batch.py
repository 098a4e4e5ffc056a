"""Run many ``altdiffusion`` CLI invocations fast: import once, then fork one process per run.

Starting Python and importing torch, transformers and diffusers takes seconds per run; the
commands themselves take a fraction of that on tiny checkpoints. Each invocation here is
still its own process, with its own stdout, stderr and exit status, running exactly what
``python -m altdiffusion.cli ARGS`` runs after its imports (``sys.exit(main())``); an
uncaught exception prints a traceback and exits 1, as Python does.

Usage (from tests)::

    results = run_cli_batch([["info", folder], ["clip", "classify", ...]])
    results[0].returncode, results[0].stdout, results[0].stderr

The module is also the script that the test process starts (``python cli_batch.py``): the
argv lists arrive as JSON on stdin and the results leave as JSON on stdout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path
from types import SimpleNamespace


def run_cli_batch(
    argvs: list[list[str]], *, env: dict | None = None, clean_env: bool = False, timeout: float = 300
) -> list[SimpleNamespace]:
    """Each argv's (returncode, stdout, stderr), like ``subprocess.run`` of the real CLI.

    ``env`` is added to this process's environment, or replaces it with ``clean_env=True``.
    """
    base = {} if clean_env else {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env = {**base, **(env or {})}
    env["TOKENIZERS_PARALLELISM"] = "false"
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve())],
        input=json.dumps([[str(a) for a in argv] for argv in argvs]),
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"cli batch runner failed ({proc.returncode}):\n{proc.stderr}")
    return [SimpleNamespace(**r) for r in json.loads(proc.stdout)]


def _child(argv: list[str], out: str, err: str) -> None:
    """In the forked process: stdout/stderr to files, run the CLI, exit with its status."""
    fd_out = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    fd_err = os.open(err, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd_out, 1)
    os.dup2(fd_err, 2)
    code = 1
    try:
        from altdiffusion.cli import main

        sys.argv = ["altdiffusion", *argv]
        code = main(argv)
        code = 0 if code is None else code
    except SystemExit as exc:  # argparse errors, sys.exit in commands
        if exc.code is None:
            code = 0
        elif isinstance(exc.code, int):
            code = exc.code
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except BaseException:  # what the interpreter would do with an uncaught exception
        traceback.print_exc()
        code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code if isinstance(code, int) else 1)


def _serve() -> None:
    argvs = json.loads(sys.stdin.read())
    # Import everything the commands import lazily, once, before forking.
    import diffusers  # noqa: F401
    from diffusers import AutoencoderKL, UNet2DConditionModel  # noqa: F401
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker  # noqa: F401
    from transformers import AltCLIPConfig, AutoTokenizer, CLIPVisionModel, XLMRobertaModel  # noqa: F401

    workers = max(2, os.cpu_count() or 2)
    results: list[dict | None] = [None] * len(argvs)
    with tempfile.TemporaryDirectory() as tmp:
        running: dict[int, int] = {}  # pid -> index
        queue = list(enumerate(argvs))

        def reap_one() -> None:
            pid, status = os.wait()
            i = running.pop(pid)
            out = Path(tmp, f"{i}.out").read_text(encoding="utf-8", errors="replace")
            err = Path(tmp, f"{i}.err").read_text(encoding="utf-8", errors="replace")
            results[i] = {"returncode": os.waitstatus_to_exitcode(status), "stdout": out, "stderr": err}

        while queue or running:
            while queue and len(running) < workers:
                i, argv = queue.pop(0)
                sys.stdout.flush()
                sys.stderr.flush()
                pid = os.fork()
                if pid == 0:
                    _child(argv, str(Path(tmp, f"{i}.out")), str(Path(tmp, f"{i}.err")))
                running[pid] = i
            reap_one()
    sys.stdout.write(json.dumps(results))


if __name__ == "__main__":
    _serve()
