"""Benchmark report: fold aggregates, Markdown tables, sweep plots, example overlays and input validation."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fmscope.errors import InvalidInputError
from fmscope.evaluation.report import aggregate, plot_sweeps, summary_markdown, write_report
from fmscope.tasks.registry import get_task

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
OFFSETS = (-0.1, 0.0, 0.1)  # per fold: mean = base, sample std = 0.1
BASES = {  # (method, datatype, train_size) -> dice mean
    ("otsu", "plaque", 0): 0.3,
    ("otsu", "nucleus", 0): 0.2,
    ("rf", "plaque", 5): 0.5,
    ("rf", "plaque", 15): 0.7,
    ("rf", "nucleus", 5): 0.4,
    ("rf", "nucleus", 15): 0.6,
    ("pretrained-unet", "plaque", 5): 0.6,
    ("pretrained-unet", "plaque", 15): 0.8,
    ("pretrained-unet", "nucleus", 5): 0.5,
    ("pretrained-unet", "nucleus", 15): 0.7,
}


def _rows() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for (method, datatype, size), base in BASES.items():
        for fold, off in enumerate(OFFSETS):
            rows.append(
                {
                    "method": method,
                    "datatype": datatype,
                    "task": "segment",
                    "train_size": size,
                    "fold": fold,
                    "n_train": size,
                    "n_val": 2,
                    "n_test": 4,
                    "status": "ok",
                    "note": "",
                    "seconds": 1.5,
                    "dice": base + off,
                    "iou": base - 0.2 + off,
                    "accuracy": 0.9,
                    # no instances for untrained baselines on nucleus: missing metric
                    "instance_f1": "" if (method, datatype) == ("otsu", "nucleus") else base + 2 * off,
                    "count_ratio": 1.0 + off,
                }
            )
    for size in (5, 15):  # a method that never ran
        for fold in range(3):
            rows.append(
                {"method": "cellpose", "datatype": "plaque", "task": "segment", "train_size": size, "fold": fold}
                | {"status": "skipped", "note": "needs a GPU"}
            )
    for size, acc in ((5, 0.625), (15, 0.875)):  # classification: exact binary values
        for fold, off in enumerate((-0.125, 0.0, 0.125)):
            rows.append(
                {"method": "resnet18", "datatype": "plaque", "task": "classify", "train_size": size, "fold": fold}
                | {"status": "ok", "accuracy": acc + off, "macro_f1": float("nan")}
            )
    return rows


def _entry(entries: list[dict[str, Any]], method: str, datatype: str, size: int) -> dict[str, Any]:
    (found,) = [e for e in entries if (e["method"], e["datatype"], e["train_size"]) == (method, datatype, size)]
    return found


def _same(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> bool:
    def norm(v: Any) -> Any:
        return "nan" if isinstance(v, float) and math.isnan(v) else v

    return [{k: norm(v) for k, v in e.items()} for e in a] == [{k: norm(v) for k, v in e.items()} for e in b]


def test_aggregate_means_and_sample_std() -> None:
    entries = aggregate(_rows())
    assert len(entries) == len(BASES) + 2  # the skipped method contributes nothing
    for (method, datatype, size), base in BASES.items():
        e = _entry(entries, method, datatype, size)
        assert e["n_folds"] == 3
        assert e["dice_mean"] == pytest.approx(base, abs=1e-12)
        assert e["dice_std"] == pytest.approx(0.1, abs=1e-12)  # ddof=1
        assert e["count_ratio_mean"] == pytest.approx(1.0, abs=1e-12)
        assert set(e) >= {f"{m}_{s}" for m in get_task("segment").metrics for s in ("mean", "std")}
    otsu = _entry(entries, "otsu", "nucleus", 0)
    assert math.isnan(otsu["instance_f1_mean"]) and math.isnan(otsu["instance_f1_std"])
    resnet = _entry(entries, "resnet18", "plaque", 5)
    assert resnet["accuracy_mean"] == 0.625 and resnet["accuracy_std"] == 0.125  # exact in binary
    assert math.isnan(resnet["macro_f1_mean"])
    assert [e["task"] for e in entries][-2:] == ["classify", "classify"]


def test_aggregate_single_fold_and_partially_missing() -> None:
    rows = [
        {"method": "rf", "datatype": "d", "task": "deblur", "train_size": 5, "fold": 0, "ssim": 0.5, "psnr": ""},
        {"method": "rf", "datatype": "d", "task": "deblur", "train_size": 5, "fold": 1, "ssim": "nan", "psnr": 20},
        {"method": "rf", "datatype": "d", "task": "deblur", "train_size": 5, "fold": 2, "ssim": None, "psnr": 24},
    ]
    (e,) = aggregate(rows)
    assert e["n_folds"] == 3
    assert (e["ssim_mean"], e["ssim_std"]) == (0.5, 0.0)  # one value: std 0.0
    assert e["psnr_mean"] == 22.0 and e["psnr_std"] == pytest.approx(math.sqrt(8.0))


def test_summary_tables() -> None:
    md = summary_markdown(_rows(), title="Light-sheet benchmark", notes=["seed 0", "3-fold CV"])
    assert md.startswith("# Light-sheet benchmark\n")
    assert "## segment" in md and "## classify" in md
    assert "cells: train sizes 5 / 15, mean ± std over 3 folds" in md
    assert "| method | plaque | nucleus |" in md  # datatypes in order of first appearance
    dice = md.split("### dice")[1].split("###")[0]
    lines = [line for line in dice.splitlines() if line.startswith("| ")]
    assert [line.split(" | ")[0] for line in lines] == ["| method", "| otsu", "| rf", "| pretrained-unet", "| cellpose"]
    assert "| rf | 0.500 ± 0.100 / 0.700 ± 0.100 | 0.400 ± 0.100 / 0.600 ± 0.100 |" in dice
    assert "| otsu | 0.300 ± 0.100 / 0.300 ± 0.100 | 0.200 ± 0.100 / 0.200 ± 0.100 |" in dice  # constant
    assert "| cellpose | – / – | – / – |" in dice
    inst = md.split("### instance_f1")[1].split("###")[0]
    assert "| otsu | 0.300 ± 0.200 / 0.300 ± 0.200 | – / – |" in inst  # missing metric
    assert md.index("### dice") < md.index("### instance_f1") < md.index("### iou")
    assert "| resnet18 | 0.625 ± 0.125 / 0.875 ± 0.125 |" in md
    assert "| resnet18 | – / – |" in md.split("### macro_f1")[1]
    skipped = md.split("## Skipped")[1]
    assert skipped.count("cellpose") == 1  # deduplicated over folds and sizes
    assert "- cellpose on plaque (segment, train sizes 5, 15): needs a GPU" in skipped
    assert md.rstrip().endswith("- seed 0\n- 3-fold CV")


def test_two_decimals_for_psnr() -> None:
    rows = [
        {"method": "m", "datatype": "d", "task": "deblur", "train_size": 0, "fold": f, "ssim": 0.5, "psnr": 21.0 + f}
        for f in range(2)
    ]
    md = summary_markdown(rows, title="t")
    assert "| m | 21.50 ± 0.71 |" in md and "| m | 0.500 ± 0.000 |" in md
    assert "cells: train sizes 0, mean ± std over 2 folds" in md
    assert "None." in md.split("## Skipped")[1]
    tiny = [{"method": "m", "datatype": "d", "task": "deblur", "train_size": 0, "fold": 0, "ssim": -1e-9, "psnr": 1}]
    assert "| m | 0.000 ± 0.000 |" in summary_markdown(tiny, title="t")  # no "-0.000"


def test_csv_strings_give_the_same_report(tmp_path: Path) -> None:
    rows = _rows()
    fields = list(dict.fromkeys(k for row in rows for k in row))
    path = tmp_path / "results.csv"
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    with path.open(newline="") as fh:
        back = list(csv.DictReader(fh))
    assert isinstance(back[0]["dice"], str)
    assert _same(aggregate(back), aggregate(rows))
    assert summary_markdown(back, title="x") == summary_markdown(rows, title="x")


def _is_png(path: Path) -> bool:
    data = path.read_bytes()
    return data[:8] == PNG_MAGIC and len(data) > 2000


def test_plot_sweeps(tmp_path: Path) -> None:
    rows = _rows() + [
        {"method": "rf", "datatype": "weird type/1", "task": "classify", "train_size": 5, "fold": 0, "accuracy": 0.5}
    ]
    paths = plot_sweeps(rows, tmp_path / "plots")
    names = sorted(p.name for p in paths)
    assert names == [
        "classify_plaque_accuracy.png",
        "classify_weird_type_1_accuracy.png",
        "segment_nucleus_dice.png",
        "segment_plaque_dice.png",
    ]
    assert all(p.parent == tmp_path / "plots" and _is_png(p) for p in paths)


def test_write_report(tmp_path: Path) -> None:
    image = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    truth = np.zeros((32, 32), np.uint8)
    truth[8:20, 8:20] = 1
    pred = np.zeros_like(truth)
    pred[10:22, 10:22] = 1
    examples = {"plaque": {"image": image, "truth": truth, "rf": pred, "otsu": truth}}
    out = write_report(tmp_path / "report", _rows(), title="Bench", notes=["n"], examples=examples)
    assert set(out) == {"summary", "plots", "examples"}
    text = out["summary"].read_text(encoding="utf-8")
    assert text.startswith("# Bench\n") and "![segment_plaque_dice](plots/segment_plaque_dice.png)" in text
    assert "![plaque](examples/plaque.png)" in text
    assert len(list(out["plots"].glob("*.png"))) == 3
    assert _is_png(out["examples"] / "plaque.png")
    assert not [p for p in (tmp_path / "report").rglob(".*")]  # no temporaries left behind


def test_errors_name_the_parameter(tmp_path: Path) -> None:
    good = _rows()[0]
    for key in ("method", "datatype", "task", "train_size"):
        bad = {k: v for k, v in good.items() if k != key}
        with pytest.raises(InvalidInputError, match=rf"rows\[0\].*'{key}'"):
            aggregate([bad])
    with pytest.raises(InvalidInputError, match="rows.*'train_size'"):
        aggregate([good | {"train_size": ""}])
    with pytest.raises(InvalidInputError, match="task: unknown task 'detect'"):
        summary_markdown([good | {"task": "detect"}], title="t")
    with pytest.raises(InvalidInputError, match="train_size"):
        aggregate([good | {"train_size": "2.5"}])
    with pytest.raises(InvalidInputError, match="dice"):
        aggregate([good | {"dice": "high"}])
    with pytest.raises(InvalidInputError, match="rows"):
        aggregate({"method": "x"})  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="examples.*truth"):
        write_report(tmp_path / "r", _rows(), title="t", examples={"plaque": {"image": np.zeros((4, 4))}})
    with pytest.raises(InvalidInputError, match="examples.*shape"):
        bad_shape = {"image": np.zeros((4, 4)), "truth": np.zeros((4, 5))}
        write_report(tmp_path / "r", _rows(), title="t", examples={"plaque": bad_shape})
    assert not (tmp_path / "r").exists()  # validated before anything is written
