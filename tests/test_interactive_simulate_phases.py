"""The phase annotator: strokes along the largest error, the phase first and the rest second, threshold baselines."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fmscope.cli.main import main
from fmscope.errors import InvalidInputError
from fmscope.interactive.rf_backend import RandomForestPrompter
from fmscope.interactive.simulate_phases import simulate_phase, stroke_along, threshold_baselines
from fmscope.io import ImageMetadata, write_image


def _layers(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A 96 x 128 uint16 image: a bright wavy layer across a darker background, and the layer mask."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:96, :128]
    layer = np.abs(yy - 48 - 8 * np.sin(xx / 12)) < 14
    image = (1000 + 700 * layer + rng.normal(0, 80, layer.shape)).astype(np.uint16)
    return image, layer


def test_a_stroke_runs_along_the_region_inside_it() -> None:
    region = np.zeros((40, 100), bool)
    region[15:25, 10:90] = True
    stroke = stroke_along(region, width=3, max_length=60)
    ys, xs = np.array(stroke.points).T
    assert region[ys.astype(int), xs.astype(int)].all()
    assert 50 <= xs.max() - xs.min() <= 60 and ys.max() - ys.min() <= 4  # along the long axis, capped
    dot = np.zeros((10, 10), bool)
    dot[4:6, 4:6] = True
    assert len(stroke_along(dot).points) >= 1
    with pytest.raises(InvalidInputError, match="non-empty"):
        stroke_along(np.zeros((5, 5), bool))


def test_the_annotator_marks_the_phase_then_the_rest_then_errors() -> None:
    image, layer = _layers()
    backend = RandomForestPrompter(split_touching=False)
    trace = simulate_phase(backend, backend.embed(image), layer, interactions=4, target_iou=1.0)
    assert [s.positive for s in trace.prompt.strokes][:2] == [True, False] and len(trace.ious) == 4
    stops = simulate_phase(backend, backend.embed(image), layer, interactions=4)  # a person stops at IoU 0.9
    assert len(stops.ious) == 2 and stops.iou_after(3) == stops.iou_after(2) > 0.9
    again = simulate_phase(backend, backend.embed(image), layer, interactions=4, target_iou=1.0)
    assert again.ious == trace.ious  # seeded: the same run twice
    clicks = simulate_phase(backend, backend.embed(image), layer, mode="clicks", interactions=3, target_iou=1.0)
    assert len(clicks.prompt.positive) >= 1 and len(clicks.prompt.negative) >= 1 and not clicks.prompt.strokes
    base = threshold_baselines(image, layer)
    assert base["otsu"] > 0.8 and set(base) == {"otsu", "multiotsu"}


def test_bad_inputs() -> None:
    image, layer = _layers()
    backend = RandomForestPrompter()
    embedding = backend.embed(image)
    with pytest.raises(InvalidInputError, match="some pixels, but not all"):
        simulate_phase(backend, embedding, np.ones_like(layer))
    with pytest.raises(InvalidInputError, match="mode"):
        simulate_phase(backend, embedding, layer, mode="paint")
    with pytest.raises(InvalidInputError, match="does not learn phases"):
        simulate_phase(object(), embedding, layer)


def test_cli_simulate_semantic(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image, layer = _layers(1)
    img = write_image(tmp_path / "img.tif", image, ImageMetadata.for_array(image))
    gt = write_image(tmp_path / "gt.tif", layer.astype(np.uint8), ImageMetadata.for_array(layer.astype(np.uint8)))
    code = main(["simulate", str(img), str(gt), "--semantic", "--interactions", "3", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["semantic"] and out["iou_after_3"] > 0.9 and out["interactions"] == len(out["ious"]) <= 3
    assert {"otsu", "multiotsu", "iou_after_1", "iou_after_5"} <= set(out)
    stack = np.stack([image] * 3)
    simg = write_image(tmp_path / "stack.tif", stack, ImageMetadata.for_array(stack))
    sgt = write_image(tmp_path / "sgt.tif", np.stack([layer] * 3).astype(np.uint8),
                      ImageMetadata.for_array(np.stack([layer] * 3).astype(np.uint8)))  # fmt: skip
    assert main(["simulate", str(simg), str(sgt), "--semantic", "--slice", "9", "--json"]) == 1
    assert "--slice" in capsys.readouterr().err
