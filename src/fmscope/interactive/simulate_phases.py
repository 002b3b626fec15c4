"""A simulated annotator for phases (semantic mode): strokes or clicks in the largest error, ilastik style.

A phase (a layer, a support, the membranes of an EM slice) is wherever it occurs, so each interaction labels pixels
of the phase or of the rest, and one forest learns both at once (:mod:`fmscope.interactive.phases`). As a person
starts in ilastik, the first interaction marks the phase (its largest region) and the second the rest (the largest
region outside the phase); from then on each interaction goes to the largest connected error region: missed phase
pixels are marked as the phase, wrongly included pixels as "other", until the IoU reaches ``target_iou`` (then the
person stops; later counts carry the last IoU forward, as for clicks). A **stroke** follows the region's medial axis
(the longest path of its skeleton, at most ``max_length`` pixels, ``width`` wide: a person drawing along the region);
a **click** goes to the region's interior point. The phase IoU is recorded after each interaction;
:func:`threshold_baselines` gives what Otsu and multi-Otsu reach on the same image (the better of each class and its
complement, so the comparison is with the threshold's best case).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage as ndi
from skimage.filters import threshold_multiotsu, threshold_otsu
from skimage.morphology import skeletonize

from fmscope.errors import InvalidInputError
from fmscope.interactive.prompts import ObjectPrompt, Stroke
from fmscope.interactive.propagate import interior_point
from fmscope.interactive.protocol import SupportsPhases
from fmscope.metrics import iou

logger = logging.getLogger(__name__)

MODES = ("strokes", "clicks")
_NEIGHBOURS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]


@dataclass(frozen=True)
class PhaseTrace:
    """Phase IoU after each interaction (``ious[k]`` after interaction k + 1) and the prompt they made."""

    ious: tuple[float, ...]
    prompt: ObjectPrompt

    def iou_after(self, n: int) -> float:
        return self.ious[min(n, len(self.ious)) - 1]


def _farthest(start: tuple[int, int], pixels: set[tuple[int, int]]) -> tuple[tuple[int, int], dict[Any, Any]]:
    """The skeleton pixel farthest (in steps) from ``start`` and the BFS parents."""
    parent: dict[tuple[int, int], tuple[int, int] | None] = {start: None}
    queue = deque([start])
    last = start
    while queue:
        last = queue.popleft()
        for dy, dx in _NEIGHBOURS:
            nxt = (last[0] + dy, last[1] + dx)
            if nxt in pixels and nxt not in parent:
                parent[nxt] = last
                queue.append(nxt)
    return last, parent


def stroke_along(region: NDArray[np.bool_], *, width: float = 3.0, max_length: int = 128) -> Stroke:
    """A stroke along the longest path of ``region``'s skeleton (its middle ``max_length`` pixels), sampled every
    few pixels; a region too small for a skeleton gives a one-point stroke at its interior point."""
    region = np.asarray(region, bool)
    if not region.any():
        raise InvalidInputError("region: expected a non-empty mask")
    skeleton = skeletonize(region)
    labels, n = ndi.label(skeleton, structure=np.ones((3, 3), bool))
    if n == 0:
        return Stroke((interior_point(region),), width)
    biggest = 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))
    pixels = {(int(y), int(x)) for y, x in zip(*np.nonzero(labels == biggest), strict=True)}
    end, _ = _farthest(next(iter(pixels)), pixels)
    other, parent = _farthest(end, pixels)
    path = [other]
    while parent[path[-1]] is not None:
        path.append(parent[path[-1]])
    if len(path) > max_length:
        start = (len(path) - max_length) // 2
        path = path[start : start + max_length]
    step = max(1, int(round(width)))
    points = [path[i] for i in range(0, len(path), step)] + ([path[-1]] if (len(path) - 1) % step else [])
    return Stroke(tuple((float(y), float(x)) for y, x in points), width)


def _largest_error(prediction: NDArray[np.bool_], truth: NDArray[np.bool_]) -> tuple[NDArray[np.bool_], bool] | None:
    """The error region to mark next and whether it is missed phase (True) or wrongly included (False): the one with
    the largest interior (its pixels more than one pixel from its edge), as a person corrects what is visibly wrong
    rather than a one-pixel rim along a boundary; a rim only when nothing else is left."""
    best: tuple[int, int, NDArray[np.bool_], bool] | None = None
    for positive, error in ((True, truth & ~prediction), (False, prediction & ~truth)):
        regions, n = ndi.label(error)
        if n == 0:
            continue
        inner = np.bincount(regions[ndi.binary_erosion(error)], minlength=n + 1)[1:]
        sizes = np.bincount(regions.ravel(), minlength=n + 1)[1:]
        k = int(np.lexsort((sizes, inner))[-1]) + 1
        key = (int(inner[k - 1]), int(sizes[k - 1]))
        if best is None or key > best[:2]:
            best = (*key, regions == k, positive)
    return None if best is None else (best[2], best[3])


def simulate_phase(
    backend: Any,
    embedding: Any,
    truth: NDArray[np.bool_],
    *,
    mode: str = "strokes",
    interactions: int = 5,
    width: float = 3.0,
    max_length: int | None = None,
    target_iou: float = 0.9,
) -> PhaseTrace:
    """Annotate the phase ``truth`` (a 2D mask) on one slice with ``interactions`` strokes or clicks (see the module
    doc); ``max_length`` defaults to half the slice's larger side."""
    if not isinstance(backend, SupportsPhases):
        raise InvalidInputError(f"backend: {getattr(backend, 'name', backend)!r} does not learn phases (rf and fm do)")
    truth = np.asarray(truth, bool)
    if truth.ndim != 2 or not truth.any() or truth.all():
        raise InvalidInputError("truth: expected a 2D phase mask that holds some pixels, but not all")
    if mode not in MODES:
        raise InvalidInputError(f"mode: expected one of {', '.join(MODES)}, got {mode!r}")
    if interactions < 1:
        raise InvalidInputError(f"interactions: expected an integer >= 1, got {interactions}")
    if not 0.0 < target_iou <= 1.0:
        raise InvalidInputError(f"target_iou: expected a value in (0, 1], got {target_iou}")
    length = max_length or max(truth.shape) // 2
    prediction = np.zeros_like(truth)
    prompt = ObjectPrompt(1)
    ious: list[float] = []
    for k in range(interactions):
        if ious and ious[-1] >= target_iou:
            break
        # the phase first, then the rest, then corrections (the first two as if nothing were predicted yet)
        found = _largest_error(np.zeros_like(truth) if k == 0 else np.ones_like(truth) if k == 1 else prediction, truth)
        if found is None:
            ious.append(1.0)
            continue
        region, positive = found
        if mode == "strokes":  # a brush no wider than the region (a thin error gets a thin stroke)
            depth = float(ndi.distance_transform_edt(region).max())
            s = stroke_along(region, width=min(width, max(1.0, 2 * depth - 1)), max_length=length)
            prompt = ObjectPrompt(1, prompt.positive, prompt.negative, None, None,
                                  (*prompt.strokes, Stroke(s.points, s.width, positive)))  # fmt: skip
        else:
            point = (interior_point(region),)
            pos = prompt.positive + point if positive else prompt.positive
            neg = prompt.negative if positive else prompt.negative + point
            prompt = ObjectPrompt(1, pos, neg, None, None, prompt.strokes)
        labels = backend.phase_labels(embedding, [prompt], [1])
        model = backend.fit_phases([(embedding, labels)])
        prediction = np.asarray(backend.predict_phases(model, embedding)) == 1
        ious.append(iou(prediction, truth))
    return PhaseTrace(tuple(ious), prompt)


def threshold_baselines(image: np.ndarray, truth: NDArray[np.bool_], classes: int = 3) -> dict[str, float]:
    """Phase IoU of a global Otsu threshold and of a ``classes``-class multi-Otsu: for each, the best of every class
    and its complement."""
    arr = np.asarray(image, np.float64)
    truth = np.asarray(truth, bool)
    otsu = arr > threshold_otsu(arr)
    out = {"otsu": max(iou(otsu, truth), iou(~otsu, truth))}
    bins = np.digitize(arr, threshold_multiotsu(arr, classes=classes))
    out["multiotsu"] = max(max(iou(bins == c, truth), iou(bins != c, truth)) for c in range(classes))
    return out


def simulate_phase_image(
    backend: Any,
    image: np.ndarray,
    truth: NDArray[np.bool_],
    *,
    profile: Any = None,
    mode: str = "strokes",
    interactions: int = 5,
    width: float = 3.0,
) -> dict[str, Any]:
    """One phase of one 2D image: the simulated annotation (:func:`simulate_phase`) beside the threshold baselines;
    returns the IoU after each interaction, ``iou_after_1/3/5``, ``otsu`` and ``multiotsu``."""
    image = np.asarray(image)
    if image.ndim != 2 or np.shape(truth) != image.shape:
        raise InvalidInputError(f"truth: expected a 2D mask of the image's shape {image.shape}, got {np.shape(truth)}")
    trace = simulate_phase(backend, backend.embed(image, profile), truth, mode=mode, interactions=interactions,
                           width=width)  # fmt: skip
    out: dict[str, Any] = {"mode": mode, "ious": list(trace.ious), "interactions": len(trace.ious),
                           **summarize_phases([trace])}  # fmt: skip
    out.update(threshold_baselines(image, truth))
    return out


def summarize_phases(traces: Sequence[PhaseTrace], steps: Sequence[int] = (1, 3, 5)) -> dict[str, float]:
    """Mean phase IoU after each number of interactions in ``steps``."""
    if not traces:
        raise InvalidInputError("traces: expected at least one simulated phase")
    return {f"iou_after_{n}": float(np.mean([t.iou_after(n) for t in traces])) for n in steps}
