"""``fmscope segment --method rf|fm --prompts`` and ``fmscope simulate``: outputs, JSON keys, bad input."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np
import pytest

from conftest import run
from fmscope.io import ImageMetadata, read_image, write_image
from fmscope.metrics import dice


@pytest.fixture
def stack(tmp_path: Path) -> tuple[Path, Path, np.ndarray]:
    """A (9, 48, 48) uint16 stack with two bright balls (slices 2 px apart) and their instance labels."""
    rng = np.random.default_rng(0)
    zz, yy, xx = np.ogrid[:9, :48, :48]
    labels = np.zeros((9, 48, 48), np.uint16)
    for i, (y, x) in enumerate(((14, 14), (32, 32)), start=1):
        labels[(2.0 * (zz - 4)) ** 2 + (yy - y) ** 2 + (xx - x) ** 2 <= 81] = i
    image = (1000 + 500 * (labels > 0) + rng.normal(0, 50, labels.shape)).astype(np.uint16)
    meta = ImageMetadata.for_array(image, spacing=(1.0, 0.5, 0.5), unit="micrometer")
    img = write_image(tmp_path / "stack.ome.tif", image, meta)
    gt = write_image(tmp_path / "stack_labels.tif", labels, meta, labels=True)
    return img, gt, labels


def _prompts(path: Path, objects: list[dict[str, object]]) -> Path:
    path.write_text(json.dumps({"objects": objects}))
    return path


def test_segment_a_slice_with_clicks_and_a_box(tmp_path: Path, stack, capsys) -> None:  # type: ignore[no-untyped-def]
    path, _, labels = stack
    image = read_image(path).numpy()[4]
    img = write_image(tmp_path / "slice.tif", image, ImageMetadata.for_array(image))
    prompts = _prompts(tmp_path / "p.json", [{"id": 3, "positive": [[14, 14]]}, {"id": 5, "box": [22, 22, 43, 43]}])
    out, table = tmp_path / "out.tif", tmp_path / "m.csv"
    code, text, err = run(capsys, "segment", img, "-o", out, "--method", "rf", "--prompts", prompts,
                          "--morphometry", table)  # fmt: skip
    assert code == 0, err
    assert "2 of 2 object(s)" in text
    result = read_image(out).numpy()
    assert dice(result == 3, labels[4] == 1) > 0.85 and dice(result == 5, labels[4] == 2) > 0.85
    rows = list(csv.DictReader(table.read_text().splitlines()))
    assert [r["id"] for r in rows] == ["3", "5"] and rows[0]["area_physical"] == ""  # no unit: pixels only


def test_segment_propagates_through_a_stack(tmp_path: Path, stack, capsys) -> None:  # type: ignore[no-untyped-def]
    img, _, labels = stack
    prompts = _prompts(
        tmp_path / "p.json", [{"id": 1, "positive": [[4, 14, 14]]}, {"id": 2, "positive": [[4, 32, 32]]}]
    )
    out, table = tmp_path / "out.tif", tmp_path / "m.csv"
    code, _, err = run(capsys, "segment", img, "-o", out, "--method", "rf", "--prompts", prompts)
    assert code == 1 and "add --propagate" in err  # a 2D backend is not run on a stack silently
    code, text, err = run(capsys, "segment", img, "-o", out, "--method", "rf", "--prompts", prompts, "--propagate",
                          "--enhance", "--morphometry", table)  # fmt: skip
    assert code == 0, err
    result = read_image(out).numpy()
    assert dice(result == 1, labels == 1) > 0.85 and dice(result == 2, labels == 2) > 0.85
    rows = list(csv.DictReader(table.read_text().splitlines()))
    assert float(rows[0]["volume_physical"]) == pytest.approx(0.25 * float(rows[0]["volume_voxels"]))


def test_segment_bad_prompted_input(tmp_path: Path, stack, capsys) -> None:  # type: ignore[no-untyped-def]
    img, _, _ = stack
    out = tmp_path / "out.tif"
    code, _, err = run(capsys, "segment", img, "-o", out, "--method", "rf")
    assert code == 1 and "--prompts" in err
    outside = _prompts(tmp_path / "bad.json", [{"id": 1, "positive": [[4, 60, 10]]}])
    code, _, err = run(capsys, "segment", img, "-o", out, "--method", "rf", "--prompts", outside, "--propagate")
    assert code == 1 and "outside" in err and err.count("\n") == 1
    code, _, err = run(capsys, "segment", img, "-o", out, "--method", "rf", "--text", "a ball", "--propagate")
    assert code == 1 and "grounding model" in err
    code, _, err = run(capsys, "segment", img, "-o", out, "--method", "fm", "--text", "a ball", "--propagate")
    assert code == 1 and "model folder" in err


def test_simulate_2d_prints_the_click_metrics(tmp_path: Path, stack, capsys) -> None:  # type: ignore[no-untyped-def]
    path, _, labels = stack
    image = read_image(path).numpy()[4]
    img = write_image(tmp_path / "slice.tif", image, ImageMetadata.for_array(image))
    gt = write_image(tmp_path / "gt.tif", labels[4], ImageMetadata.for_array(labels[4]), labels=True)
    code, out, err = run(capsys, "simulate", img, gt, "--method", "rf", "--max-clicks", "5", "--json")
    assert code == 0, err
    result = json.loads(out)
    for key in ("mean_clicks_to_85", "mean_clicks_to_90", "iou_after_1", "iou_after_3", "iou_after_5"):
        assert key in result
    assert result["objects"] == 2 and result["iou_after_5"] > 0.8


def test_simulate_2d_with_a_box_starts_from_the_box(tmp_path: Path, stack, capsys) -> None:  # type: ignore[no-untyped-def]
    """``--box`` on a 2D image: each object starts from its box (once ignored: "box": true, the numbers of a run
    without it); the JSON says per object what the clicks made and whether the IoU ever fell."""
    path, _, labels = stack
    image = read_image(path).numpy()[4]
    img = write_image(tmp_path / "slice.tif", image, ImageMetadata.for_array(image))
    gt = write_image(tmp_path / "gt.tif", labels[4], ImageMetadata.for_array(labels[4]), labels=True)
    runs = {}
    for box in (False, True):
        code, out, err = run(capsys, "simulate", img, gt, "--max-clicks", "3", "--json", *(["--box"] if box else []))
        assert code == 0, err
        runs[box] = json.loads(out)
    assert runs[True]["box"] is True and runs[False]["box"] is False
    assert all("box" in o["prompt"] for o in runs[True]["per_object"])
    assert not any("box" in o["prompt"] for o in runs[False]["per_object"])
    assert [o["ious"][0] for o in runs[True]["per_object"]] != [o["ious"][0] for o in runs[False]["per_object"]]
    for o in runs[True]["per_object"]:
        assert {"iou_drops", "max_drop", "best_iou", "final_iou"} <= set(o) and o["best_iou"] >= o["final_iou"]
    assert {"objects_with_drops", "max_drop", "mean_best_iou", "mean_final_iou"} <= set(runs[True])
    code, out, err = run(capsys, "simulate", img, gt, "--max-clicks", "3", "--box")  # the table
    assert code == 0 and "mean_best_iou" in out and "objects_with_drops" in out


def test_simulate_a_stack_from_one_slice(tmp_path: Path, stack, capsys) -> None:  # type: ignore[no-untyped-def]
    img, gt, _ = stack
    code, _, err = run(capsys, "simulate", img, gt, "--json")
    assert code == 1 and "--propagate-from" in err
    code, out, err = run(capsys, "simulate", img, gt, "--propagate-from", "4", "--max-clicks", "3", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["objects"] == 2 and result["stack_dice"] > 0.8 and "iou_after_1" in result
    assert [o["id"] for o in result["per_object"]] == [1, 2] and "dice_propagated" in result["per_object"][0]


def test_segment_reuses_the_embedding_cache(tmp_path: Path, stack, capsys, caplog) -> None:  # type: ignore[no-untyped-def]
    img, _, _ = stack
    prompts = _prompts(tmp_path / "p.json", [{"id": 1, "positive": [[4, 14, 14]]}])
    args = ("segment", img, "--method", "rf", "--prompts", prompts, "--propagate", "--cache", tmp_path / "cache")
    assert run(capsys, *args, "-o", tmp_path / "a.tif")[0] == 0
    with caplog.at_level(logging.INFO, logger="fmscope.cli"):
        assert run(capsys, *args, "-o", tmp_path / "b.tif")[0] == 0
    assert "reused from" in caplog.text
    np.testing.assert_array_equal(read_image(tmp_path / "a.tif").numpy(), read_image(tmp_path / "b.tif").numpy())
    code, _, err = run(capsys, *args, "-o", tmp_path / "c.tif", "--semantic")
    assert code == 0, err  # --semantic changes prediction, not the embeddings: the cache still fits
    code, _, err = run(capsys, *args, "-o", tmp_path / "d.tif", "--video")
    assert code == 1 and "--video" in err
