"""Every doctest in the package runs: modules whose source has an example (``>>>``) are found
automatically, so a new doctest is tested without being listed here."""

import doctest
import importlib
from pathlib import Path

import pytest

import altdiffusion

PACKAGE_ROOT = Path(altdiffusion.__file__).parent


def _modules_with_examples() -> list[str]:
    names = []
    for path in sorted(PACKAGE_ROOT.rglob("*.py")):
        if ">>> " in path.read_text(encoding="utf-8"):
            parts = path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


MODULES = _modules_with_examples()


def test_the_package_has_doctests():
    assert "altdiffusion.prompts.emphasis" in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name} has '>>> ' but no example that doctest finds"
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
