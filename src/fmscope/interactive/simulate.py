"""A simulated annotator: clicks at the centre of the largest error until the mask is good enough.

For one object with ground truth, the first click is positive at the interior point of the object (the pixel farthest
from its edge). Each next click goes to the interior point of the largest error region: positive on missed object
pixels, negative on pixels wrongly included. The run stops when the IoU reaches ``target_iou`` or after
``max_clicks``. :func:`summarize` reports the standard numbers of interactive segmentation: clicks to reach 85 % and
90 % IoU (an object that never gets there counts as ``max_clicks``, the usual NoC convention) and the IoU after 1, 3
and 5 clicks (the last IoU carried forward once the target is reached).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage as ndi

from fmscope.errors import InvalidInputError
from fmscope.interactive.prompts import ObjectPrompt
from fmscope.interactive.protocol import PromptableModel
from fmscope.metrics import iou


@dataclass(frozen=True)
class ClickTrace:
    """IoU after each click of one object (``ious[k]`` after click k + 1)."""

    object_id: int
    ious: tuple[float, ...]

    def clicks_to(self, target: float, max_clicks: int) -> int:
        """Clicks needed to reach ``target`` IoU, or ``max_clicks`` when never reached."""
        return next((k + 1 for k, v in enumerate(self.ious) if v >= target), max_clicks)

    def iou_after(self, clicks: int) -> float:
        """IoU after ``clicks`` clicks (the last one carried forward when the run stopped earlier)."""
        return self.ious[min(clicks, len(self.ious)) - 1]


def next_click(prediction: NDArray[np.bool_], truth: NDArray[np.bool_]) -> tuple[tuple[float, float], bool] | None:
    """``((y, x), positive)`` at the interior point of the largest error region, or None when there is no error."""
    best: tuple[int, tuple[float, float], bool] | None = None
    for positive, error in ((True, truth & ~prediction), (False, prediction & ~truth)):
        regions, n = ndi.label(error)
        if n == 0:
            continue
        sizes = np.bincount(regions.ravel())[1:]
        k = int(np.argmax(sizes)) + 1
        if best is None or sizes[k - 1] > best[0]:
            region = np.pad(regions == k, 1)  # the image edge counts as the region's edge
            depth = ndi.distance_transform_edt(region)[1:-1, 1:-1]
            y, x = np.unravel_index(int(np.argmax(depth)), depth.shape)
            best = (int(sizes[k - 1]), (float(y), float(x)), positive)
    return None if best is None else (best[1], best[2])


def simulate_object(
    prompter: PromptableModel,
    embedding: Any,
    truth: NDArray[np.bool_],
    *,
    object_id: int = 1,
    target_iou: float = 0.9,
    max_clicks: int = 20,
) -> ClickTrace:
    """Click on one object (2D ground-truth mask ``truth``) until ``target_iou`` or ``max_clicks``."""
    truth = np.asarray(truth, dtype=bool)
    if truth.ndim != 2 or not truth.any():
        raise InvalidInputError(f"truth: expected a non-empty 2D mask, got shape {truth.shape} with {truth.sum()} px")
    if not 0.0 < target_iou <= 1.0:
        raise InvalidInputError(f"target_iou: expected a value in (0, 1], got {target_iou}")
    if max_clicks < 1:
        raise InvalidInputError(f"max_clicks: expected an integer >= 1, got {max_clicks}")
    positive: list[tuple[float, float]] = []
    negative: list[tuple[float, float]] = []
    prediction = np.zeros_like(truth)
    ious: list[float] = []
    for _ in range(max_clicks):
        click = next_click(prediction, truth)
        if click is None:
            break
        (positive if click[1] else negative).append(click[0])
        prediction = np.asarray(
            prompter.predict(embedding, ObjectPrompt(object_id, tuple(positive), tuple(negative))).mask
        )
        ious.append(iou(prediction, truth))
        if ious[-1] >= target_iou:
            break
    return ClickTrace(object_id, tuple(ious) if ious else (1.0,))


def summarize(
    traces: Sequence[ClickTrace], *, max_clicks: int = 20, targets: Sequence[float] = (0.85, 0.9)
) -> dict[str, float]:
    """Means (and medians) over objects: clicks to each target IoU and IoU after 1, 3 and 5 clicks."""
    if not traces:
        raise InvalidInputError("traces: expected at least one simulated object")
    out: dict[str, float] = {"objects": float(len(traces))}
    for t in targets:
        clicks = [tr.clicks_to(t, max_clicks) for tr in traces]
        key = f"{round(100 * t)}"
        out[f"mean_clicks_to_{key}"] = float(np.mean(clicks))
        out[f"median_clicks_to_{key}"] = float(np.median(clicks))
    for k in (1, 3, 5):
        values = [tr.iou_after(k) for tr in traces]
        out[f"iou_after_{k}"] = float(np.mean(values))
        out[f"median_iou_after_{k}"] = float(np.median(values))
    return out
