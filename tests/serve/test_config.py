"""One server configuration, one argument set: ``altdiffusion serve`` and ``python -m altdiffusion.serve``
take the same options, configuration mistakes are one-line errors (exit 2), and limits set on
the command line are enforced by the running server."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

import altdiffusion
from altdiffusion.errors import InvalidInputError
from altdiffusion.serve.config import ServeConfig, add_serve_arguments, config_from_args

API = "/sdapi/v1"
LIMIT_OPTIONS = {"--max-queue", "--max-pixels", "--max-steps", "--max-batch", "--max-body-bytes"}
# The subprocesses import the same altdiffusion as this test process.
ENV = {**os.environ, "PYTHONPATH": str(Path(altdiffusion.__file__).parents[1]), "HF_HUB_OFFLINE": "1"}
SERVE_MODULE = [sys.executable, "-m", "altdiffusion.serve"]
SERVE_COMMAND = [sys.executable, "-m", "altdiffusion.cli", "serve"]


def _run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, env=ENV, timeout=120)


def _options(help_text: str) -> set[str]:
    return set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", help_text))


def _parse(argv: list[str]) -> ServeConfig:
    return config_from_args(add_serve_arguments(argparse.ArgumentParser()).parse_args(argv))


def test_both_entry_points_list_the_same_options():
    module, command = _run([*SERVE_MODULE, "--help"]), _run([*SERVE_COMMAND, "--help"])
    assert module.returncode == command.returncode == 0, module.stderr + command.stderr
    assert _options(module.stdout) == _options(command.stdout)
    assert {"--model", "--lora-dir", "--api-auth", "--host", "--port"} | LIMIT_OPTIONS <= _options(module.stdout)


@pytest.mark.parametrize("entry", [SERVE_COMMAND, SERVE_MODULE], ids=["altdiffusion serve", "-m altdiffusion.serve"])
def test_configuration_mistake_is_one_error_line_and_exit_2(entry):
    done = _run([*entry, "--max-queue", "0"])
    assert done.returncode == 2
    output = done.stdout + done.stderr
    assert "Traceback" not in output
    errors = [line for line in output.splitlines() if "error:" in line]
    assert len(errors) == 1 and "--max-queue" in errors[0], output


def test_config_module_imports_nothing_heavy():
    code = "import sys, altdiffusion.serve.config; print(sorted({'torch', 'fastapi', 'diffusers'} & set(sys.modules)))"
    done = _run([sys.executable, "-c", code])
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr


def test_options_fill_the_config_with_current_defaults():
    default = _parse([])
    assert default.models == {"mini": "mini"} and default.default_model == "mini"
    assert (default.max_queue, default.max_pixels, default.max_steps, default.max_batch) == (8, 1024 * 1024, 150, 8)
    assert default.max_body_bytes == 20 * 1024 * 1024 and default.host == "127.0.0.1" and default.port == 7860
    config = _parse(["--model", "a=/models/x", "--max-steps", "12", "--max-pixels", "4096", "--no-ui"])
    assert config.models == {"a": "/models/x"} and config.max_steps == 12 and config.max_pixels == 4096
    assert config.ui is False and config.safety_checker is True
    assert (default.compile, default.memory) == (False, "full")
    fast = _parse(["--compile", "--memory", "full"])
    assert (fast.compile, fast.memory) == (True, "full") and _parse(["--memory", "low"]).memory == "low"


def test_every_limit_and_the_host_checks_are_flags():
    default = _parse([])
    assert (default.max_images, default.max_input_pixels, default.max_job_seconds) == (8, 2 * 4096 * 4096, 600)
    assert (default.max_connections, default.header_timeout, default.body_timeout) == (64, 10, 60)
    assert default.host_names == ("localhost", "127.0.0.1", "::1") and default.cors_origins == ()
    flags = ["--max-images", "2", "--max-input-pixels", "100", "--max-job-seconds", "5", "--max-lora-tags", "1"]
    flags += ["--max-connections", "9", "--header-timeout", "2", "--body-timeout", "3", "--keep-alive-timeout", "4"]
    flags += ["--allowed-hosts", "studio.lan, *", "--cors-origins", "https://app.example", "--host", "10.0.0.5"]
    config = _parse(flags)
    assert (config.max_images, config.max_input_pixels, config.max_job_seconds, config.max_lora_tags) == (2, 100, 5, 1)
    assert (config.max_connections, config.header_timeout, config.body_timeout, config.keep_alive_timeout) == (
        9,
        2,
        3,
        4,
    )
    assert config.host_names == ("studio.lan", "*") and config.cors_origins == ("https://app.example",)
    assert _parse(["--host", "10.0.0.5"]).host_names == ("localhost", "127.0.0.1", "::1", "10.0.0.5")
    with pytest.raises(InvalidInputError, match="--header-timeout"):
        _parse(["--header-timeout", "0"])


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"max_steps": 0}, "--max-steps"),
        ({"max_body_bytes": True}, "--max-body-bytes"),
        ({"default": "other"}, "default model"),
        ({"api_auth": "nopassword"}, "user:password"),
        ({"port": 70000}, "port"),
        ({"lora_dir": "/no/such/folder"}, "--lora-dir"),
        ({"vaes": {"blue": "/no/such/vae.safetensors"}}, "--vae"),
        ({"models": {}}, "no model"),
        ({"memory": "tiny"}, "unknown memory mode 'tiny'"),
        ({"compile": True, "memory": "balanced"}, "--memory balanced"),
    ],
)
def test_validate_names_what_to_fix(settings, message):
    with pytest.raises(InvalidInputError, match=message) as caught:
        ServeConfig(**{"models": {"tiny": "mini"}, **settings}).validate()
    assert "\n" not in str(caught.value)


def test_limits_from_the_command_line_are_enforced(tmp_path):
    from altdiffusion.models.tiny import write_tiny_altdiffusion
    from altdiffusion.serve.process import ServerProcess

    folder = write_tiny_altdiffusion(tmp_path / "tiny", "m9", safety_checker=False)
    limits = ["--max-steps", "3", "--max-batch", "2", "--max-pixels", str(64 * 64), "--no-ui"]
    server = ServerProcess({"tiny": folder}, extra_args=limits, env={"PYTHONPATH": ENV["PYTHONPATH"]})
    # server.url is known once `with` has started it, before the client is made
    with server, httpx.Client(base_url=server.url, timeout=120) as client:
        small = {"prompt": "x", "width": 64, "height": 64}
        too_many_steps = client.post(f"{API}/txt2img", json={**small, "steps": 4})
        assert too_many_steps.status_code == 422 and "at most 3" in too_many_steps.text
        too_large = client.post(f"{API}/txt2img", json={**small, "width": 128, "steps": 2})
        assert too_large.status_code == 422 and "pixels" in too_large.text
        too_many_images = client.post(f"{API}/txt2img", json={**small, "steps": 2, "n_iter": 3})
        assert too_many_images.status_code == 422 and "at most 2" in too_many_images.text
        assert client.post(f"{API}/txt2img", json={**small, "steps": 3}).status_code == 200
        assert client.get("/").status_code == 404  # --no-ui


def _with_open_files(soft: int, hard: int):
    import resource

    return lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_more_connections_than_the_hard_open_files_limit_allows_is_one_error_line():
    pytest.importorskip("resource")
    done = subprocess.run(
        [*SERVE_COMMAND, "--max-connections", "1000"],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
        preexec_fn=_with_open_files(256, 256),
    )
    output = done.stdout + done.stderr
    assert done.returncode == 2 and "Traceback" not in output, output
    errors = [line for line in output.splitlines() if "error:" in line]
    assert len(errors) == 1 and "--max-connections" in errors[0] and "at most 128" in errors[0], output


def test_the_server_lifts_its_soft_open_files_limit_to_its_connections():
    pytest.importorskip("resource")
    import time

    server = subprocess.Popen(
        [*SERVE_COMMAND, "--port", "0", "--max-connections", "500", "--no-ui"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
        preexec_fn=_with_open_files(256, 4096),
    )
    try:
        deadline, soft = time.monotonic() + 60, None
        while time.monotonic() < deadline and server.poll() is None:
            limits = Path(f"/proc/{server.pid}/limits").read_text()
            soft = int(next(line for line in limits.splitlines() if line.startswith("Max open files")).split()[3])
            if soft != 256:
                break
            time.sleep(0.1)
        assert server.poll() is None, server.stderr.read()
        assert soft == 500 + 128
    finally:
        server.terminate()
        server.wait(30)
