"""Smoke test of the percentile benchmark at a tiny shape, so the script cannot rot (no timing is asserted)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_percentiles.py"


def test_bench_percentiles_runs_at_small_shape(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("bench_percentiles", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out_json = tmp_path / "result.json"
    report = module.main(
        ["--shape", "8", "32", "48", "--chunks", "3", "16", "20", "--workdir", str(tmp_path), "--json", str(out_json)]
    )
    assert report["values_agree"] is True
    assert [r["method"] for r in report["rows"]] == ["streamed", "numpy"]
    assert json.loads(out_json.read_text())["shape_zyx"] == [8, 32, 48]
    assert "| streamed |" in capsys.readouterr().out
