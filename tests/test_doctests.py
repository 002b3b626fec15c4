"""The examples in module docstrings run (doctest), so a wrong example fails the suite instead of misleading."""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "fmscope"
MODULES = sorted(
    ".".join(("fmscope", *p.relative_to(SRC).with_suffix("").parts)).removesuffix(".__init__")
    for p in SRC.rglob("*.py")
    if ">>> " in p.read_text(encoding="utf-8")
)


def test_the_examples_are_found() -> None:
    assert {"fmscope.config", "fmscope.models", "fmscope.segment.pixel_classifier"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_module_examples_run(name: str) -> None:
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    result = doctest.testmod(importlib.import_module(name), optionflags=flags, report=True)
    assert result.attempted > 0 and result.failed == 0, f"{name}: {result.failed} of {result.attempted} failed"
