"""The README's quick tour runs as written and prints what the README shows (``benchmarks/readme_tour.py``)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("readme_tour", ROOT / "benchmarks" / "readme_tour.py")
assert spec is not None and spec.loader is not None
tour = importlib.util.module_from_spec(spec)
sys.modules["readme_tour"] = tour  # dataclasses look their module up
spec.loader.exec_module(tour)


def test_examples_are_parsed_with_continuations_comments_and_outputs() -> None:
    text = "```console\n$ fmscope a \\\n      --b 1          # (excerpt)\nout  1   # note\n\n$ fmscope c\n```\n"
    first, second = tour.examples(text)
    assert (first.command, first.expected, first.excerpt) == ("fmscope a --b 1", ["out  1"], True)
    assert (second.command, second.expected) == ("fmscope c", [])


@pytest.mark.skipif(not tour.DATA.is_dir(), reason=f"shared data folder {tour.DATA} absent")
def test_the_quick_tour_prints_what_the_readme_shows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = tour.main(["--keep", str(tmp_path)])
    table = capsys.readouterr().out
    assert code == 0, table
    assert table.count("| ok |") >= 8
