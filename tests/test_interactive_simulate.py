"""The simulated annotator: where it clicks, when it stops, what it reports."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from conftest import disks
from fmscope.errors import InvalidInputError
from fmscope.interactive import ObjectPrompt
from fmscope.interactive.rf_backend import RandomForestPrompter
from fmscope.interactive.simulate import ClickTrace, next_click, simulate_image, simulate_object, summarize


def _disks() -> tuple[np.ndarray, np.ndarray]:
    """A (128, 128) uint16 image of three separated bright disks (radius 12) and their labels 1, 2, 3."""
    rng = np.random.default_rng(0)
    image, objects, _ = disks(rng, (128, 128), ((30, 30), (30, 90), (90, 60)), 12, background=1000.0,
                              foreground=1600.0, noise=60.0, dtype=np.uint16)  # fmt: skip
    return image, objects


def test_next_click_goes_to_the_largest_error() -> None:
    truth = np.zeros((40, 40), bool)
    truth[5:25, 5:25] = True
    (y, x), positive = next_click(np.zeros_like(truth), truth)  # type: ignore[misc]
    assert positive and 13 <= y <= 15 and 13 <= x <= 15  # the centre of the missed square
    pred = truth.copy()
    pred[30:38, 2:38] = True  # a large false positive band
    (y, x), positive = next_click(pred, truth)  # type: ignore[misc]
    assert not positive and 30 <= y < 38
    assert next_click(truth, truth) is None


class Scripted:
    """A backend that grows the mask by one fixed step per click (to test the loop, not a model)."""

    def __init__(self, truth: np.ndarray, steps: list[float]) -> None:
        self.truth, self.steps, self.calls = truth, steps, 0

    def predict(self, embedding: Any, prompt: ObjectPrompt) -> Any:
        self.calls += 1
        rows = int(round(self.steps[min(self.calls, len(self.steps)) - 1] * self.truth.shape[0]))
        mask = np.zeros_like(self.truth)
        mask[:rows] = self.truth[:rows]
        return type("R", (), {"mask": mask})()


def test_simulation_stops_at_the_target_and_summarizes() -> None:
    truth = np.ones((20, 20), bool)
    backend = Scripted(truth, [0.5, 0.8, 0.95])
    trace = simulate_object(backend, None, truth, target_iou=0.9, max_clicks=10)
    assert trace.ious == (0.5, 0.8, 0.95) and backend.calls == 3
    assert trace.clicks_to(0.85, 10) == 3 and trace.iou_after(5) == 0.95
    never = ClickTrace(2, (0.3, 0.4), ObjectPrompt(2, positive=((1.0, 1.0),)))
    summary = summarize([trace, never], max_clicks=10)
    assert summary["mean_clicks_to_90"] == (3 + 10) / 2 and summary["iou_after_1"] == pytest.approx(0.4)
    with pytest.raises(InvalidInputError, match="truth"):
        simulate_object(backend, None, np.zeros((5, 5), bool))
    with pytest.raises(InvalidInputError, match="target_iou"):
        simulate_object(backend, None, truth, target_iou=0)


def test_random_forest_reaches_90_percent_on_separated_disks() -> None:
    image, objects = _disks()
    prompter = RandomForestPrompter()
    embedding = prompter.embed(image)
    traces = [simulate_object(prompter, embedding, objects == k, object_id=k, max_clicks=5) for k in (1, 2, 3)]
    summary = summarize(traces, max_clicks=5)
    assert summary["iou_after_5"] > 0.8 and summary["mean_clicks_to_85"] <= 3


def test_the_trace_says_when_a_click_made_the_mask_worse() -> None:
    truth = np.ones((20, 20), bool)
    trace = simulate_object(Scripted(truth, [0.5, 0.8, 0.6, 0.7, 0.95]), None, truth, target_iou=0.9, max_clicks=10)
    assert trace.drops == pytest.approx((0.2,)) and trace.best_iou == 0.95
    report = trace.report()
    assert report["iou_drops"] == 1 and report["max_drop"] == pytest.approx(0.2)
    assert report["best_iou"] == 0.95 and report["final_iou"] == 0.95 and report["clicks"] == 5
    worse = ClickTrace(2, (0.9, 0.4, 0.5), ObjectPrompt(2, positive=((1.0, 1.0),)))
    assert worse.report()["best_iou"] == 0.9 and worse.report()["final_iou"] == 0.5
    summary = summarize([trace, worse], max_clicks=10)
    assert summary["objects_with_drops"] == 2 and summary["mean_iou_drops"] == 1
    assert summary["max_drop"] == pytest.approx(0.5)
    assert summary["mean_best_iou"] == pytest.approx(0.925) and summary["mean_final_iou"] == pytest.approx(0.725)
    steady = summarize([ClickTrace(3, (0.5, 0.5, 0.9), ObjectPrompt(3))], max_clicks=10)
    assert steady["objects_with_drops"] == 0 and steady["max_drop"] == 0


def test_simulate_image_with_a_box_starts_from_the_box() -> None:
    image, objects = _disks()
    prompter = RandomForestPrompter()
    clicked = simulate_image(prompter, image, objects, max_clicks=3)
    boxed = simulate_image(prompter, image, objects, max_clicks=3, box=True)
    assert all(t.prompt.box is None for t in clicked)
    for t in boxed:
        ys, xs = np.nonzero(objects == t.object_id)
        assert t.prompt.box == (ys.min() - 1, xs.min() - 1, ys.max() + 2, xs.max() + 2)
        assert t.report()["prompt"]["box"] == list(t.prompt.box)
    assert [t.ious[0] for t in boxed] != [t.ious[0] for t in clicked]
