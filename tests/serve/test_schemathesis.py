"""Property-based requests from the server's own OpenAPI schema (schemathesis) against a real server:
every non-generating operation, every schemathesis check (no 5xx, responses as documented, schema-valid
input accepted, invalid input refused, methods listed in ``Allow``...). Generation is left out: it
runs the model. A few examples per operation in CI; ``ALTDIFFUSION_SLOW_TESTS=1`` runs the long one."""

from __future__ import annotations

import os

import pytest

schemathesis = pytest.importorskip("schemathesis")
pytest.importorskip("uvicorn")

from hypothesis import HealthCheck, given, settings  # noqa: E402

from altdiffusion.models.tiny import write_tiny_altdiffusion  # noqa: E402
from altdiffusion.serve import ServeConfig, create_app  # noqa: E402
from tests.serve.running import RunningServer  # noqa: E402

GENERATING = r"/(txt2img|img2img)$"
SLOW = os.environ.get("ALTDIFFUSION_SLOW_TESTS") == "1"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    model = write_tiny_altdiffusion(tmp_path_factory.mktemp("schemathesis") / "tiny", "m9", safety_checker=False)
    config = ServeConfig({"tiny": model}, safety_checker=False)
    running = RunningServer(create_app(config), config)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def api_schema(server):
    return schemathesis.openapi.from_url(f"{server.url}/openapi.json").exclude(path_regex=GENERATING)


def run_operations(api_schema, examples: int) -> list[str]:
    """Each operation's generated cases, with every check; the failures, one line per operation."""
    failures = []
    for result in api_schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case):
            case.call_and_validate()

        try:
            check()
        except Exception as exc:
            failures.append(f"{operation.label}: {type(exc).__name__}: {str(exc)[:1500]}")
    return failures


def test_non_generating_operations_follow_their_schema(api_schema):
    failures = run_operations(api_schema, examples=5)
    assert not failures, "\n".join(failures)


@pytest.mark.slow
@pytest.mark.skipif(not SLOW, reason="long run: set ALTDIFFUSION_SLOW_TESTS=1")
def test_non_generating_operations_long_run(api_schema):
    failures = run_operations(api_schema, examples=300)
    assert not failures, "\n".join(failures)
