"""A simulated annotator: clicks at the centre of the largest error until the mask is good enough.

For one object with ground truth, the first click is positive at the interior point of the object (the pixel farthest
from its edge). Each next click goes to the interior point of the largest error region: positive on missed object
pixels, negative on pixels wrongly included. The run stops when the IoU reaches ``target_iou`` or after
``max_clicks``. :func:`summarize` reports the standard numbers of interactive segmentation: clicks to reach 85 % and
90 % IoU (an object that never gets there counts as ``max_clicks``, the usual NoC convention) and the IoU after 1, 3
and 5 clicks (the last IoU carried forward once the target is reached), and, since a click can make a mask worse,
how often and how far the IoU fell and the best IoU reached beside the final one.

For stacks, :func:`simulate_stack` clicks the objects of one key slice, propagates them (optionally with the
enhancement steps) and compares the 3D Dice with per-slice prompting (one click on every slice).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage as ndi

from fmscope.errors import InvalidInputError
from fmscope.intensity import IntensityProfile
from fmscope.interactive.enhance import EnhanceConfig
from fmscope.interactive.pipeline import propagate_objects
from fmscope.interactive.prompts import ObjectPrompt
from fmscope.interactive.propagate import PropagationConfig, SliceEmbeddings, interior_point, tracks_to_labels
from fmscope.interactive.protocol import PromptableModel
from fmscope.metrics import dice, iou

logger = logging.getLogger(__name__)

DROP_TOLERANCE = 1e-6  # IoU changes smaller than this are not counted as drops


@dataclass(frozen=True)
class ClickTrace:
    """IoU after each click of one object (``ious[k]`` after click k + 1) and the 2D prompt the clicks made."""

    object_id: int
    ious: tuple[float, ...]
    prompt: ObjectPrompt

    def clicks_to(self, target: float, max_clicks: int) -> int:
        """Clicks needed to reach ``target`` IoU, or ``max_clicks`` when never reached."""
        return next((k + 1 for k, v in enumerate(self.ious) if v >= target), max_clicks)

    def iou_after(self, clicks: int) -> float:
        """IoU after ``clicks`` clicks (the last one carried forward when the run stopped earlier)."""
        return self.ious[min(clicks, len(self.ious)) - 1]

    @property
    def drops(self) -> tuple[float, ...]:
        """How much the IoU fell at each click that made the mask worse (more clicks need not help a backend)."""
        return tuple(a - b for a, b in zip(self.ious, self.ious[1:], strict=False) if b < a - DROP_TOLERANCE)

    @property
    def best_iou(self) -> float:
        """The highest IoU any click reached (the final one may be lower: see :attr:`drops`)."""
        return max(self.ious)

    def report(self) -> dict[str, Any]:
        """The JSON form: IoU after each click, the best and the final IoU, how often and how far it fell, and the
        prompt the clicks made (``box`` when the run started from the object's box)."""
        drops = self.drops
        return {
            "id": self.object_id,
            "clicks": len(self.ious),
            "ious": [round(v, 4) for v in self.ious],
            "best_iou": round(self.best_iou, 4),
            "final_iou": round(self.ious[-1], 4),
            "iou_drops": len(drops),
            "max_drop": round(max(drops, default=0.0), 4),
            "prompt": self.prompt.to_dict(),
        }


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
    box: bool = False,
) -> ClickTrace:
    """Click on one object (2D ground-truth mask ``truth``) until ``target_iou`` or ``max_clicks``.

    With ``box`` the first interaction is the object's bounding box (one more pixel on each side) instead of a click,
    and the clicks refine it; it counts as one interaction in the trace.
    """
    truth = np.asarray(truth, dtype=bool)
    if truth.ndim != 2 or not truth.any():
        raise InvalidInputError(f"truth: expected a non-empty 2D mask, got shape {truth.shape} with {truth.sum()} px")
    if not 0.0 < target_iou <= 1.0:
        raise InvalidInputError(f"target_iou: expected a value in (0, 1], got {target_iou}")
    if max_clicks < 1:
        raise InvalidInputError(f"max_clicks: expected an integer >= 1, got {max_clicks}")
    positive: list[tuple[float, float]] = []
    negative: list[tuple[float, float]] = []
    frame = None
    if box:
        ys, xs = np.nonzero(truth)
        h, w = truth.shape
        frame = (
            float(max(ys.min() - 1, 0)), float(max(xs.min() - 1, 0)),
            float(min(ys.max() + 2, h)), float(min(xs.max() + 2, w)),
        )  # fmt: skip
    prediction = np.zeros_like(truth)
    ious: list[float] = []
    for k in range(max_clicks):
        if k > 0 or frame is None:
            click = next_click(prediction, truth)
            if click is None:
                break
            (positive if click[1] else negative).append(click[0])
        prompt = ObjectPrompt(object_id, tuple(positive), tuple(negative), frame)
        prediction = np.asarray(prompter.predict(embedding, prompt).mask)
        ious.append(iou(prediction, truth))
        if ious[-1] >= target_iou:
            break
    prompt = ObjectPrompt(object_id, tuple(positive), tuple(negative), frame)
    trace = ClickTrace(object_id, tuple(ious) if ious else (1.0,), prompt)
    if trace.drops:
        logger.info(
            "object %d: IoU fell at %d click(s), by up to %.3f (best %.3f, final %.3f)",
            object_id, len(trace.drops), max(trace.drops), trace.best_iou, trace.ious[-1],
        )  # fmt: skip
    return trace


def simulate_image(
    prompter: PromptableModel,
    image: np.ndarray,
    objects: NDArray[np.integer],
    *,
    profile: IntensityProfile | None = None,
    target_iou: float = 0.9,
    max_clicks: int = 20,
    max_objects: int | None = None,
    box: bool = False,
) -> list[ClickTrace]:
    """:func:`simulate_object` on the ``max_objects`` largest objects of a 2D instance label image (one embedding
    of the image, windowed by ``profile``)."""
    objects = np.asarray(objects)
    if np.ndim(image) != 2 or objects.shape != np.shape(image):
        raise InvalidInputError(f"labels: expected a 2D label image of the image's shape {np.shape(image)}, got "
                                f"{objects.shape}")  # fmt: skip
    ids, sizes = np.unique(objects[objects > 0], return_counts=True)
    if ids.size == 0:
        raise InvalidInputError("labels: no labelled object")
    embedding = prompter.embed(image, profile)
    chosen = ids[np.argsort(-sizes, kind="stable")][:max_objects]
    return [
        simulate_object(
            prompter, embedding, objects == k, object_id=int(k), target_iou=target_iou, max_clicks=max_clicks, box=box
        )
        for k in chosen
    ]


def summarize(
    traces: Sequence[ClickTrace], *, max_clicks: int = 20, targets: Sequence[float] = (0.85, 0.9)
) -> dict[str, float]:
    """Means (and medians) over objects: clicks to each target IoU and IoU after 1, 3 and 5 clicks; and whether more
    clicks made masks worse: ``objects_with_drops`` (objects whose IoU fell at some click), ``mean_iou_drops``
    (clicks per object that lowered the IoU), ``max_drop`` (the largest fall), ``mean_best_iou`` beside
    ``mean_final_iou``."""
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
    drops = [tr.drops for tr in traces]
    out["objects_with_drops"] = float(sum(bool(d) for d in drops))
    out["mean_iou_drops"] = float(np.mean([len(d) for d in drops]))
    out["max_drop"] = float(max((max(d) for d in drops if d), default=0.0))
    out["mean_best_iou"] = float(np.mean([tr.best_iou for tr in traces]))
    out["mean_final_iou"] = float(np.mean([tr.ious[-1] for tr in traces]))
    return out


@dataclass(frozen=True)
class StackResult:
    """One object of a stack: key-slice clicks, and the Dice of its 3D mask (propagated, then enhanced when asked,
    and one click per slice) against its 3D ground truth."""

    object_id: int
    key_trace: ClickTrace
    dice_propagated: float
    dice_enhanced: float | None
    dice_per_slice: float
    per_slice_clicks: int

    def report(self) -> dict[str, Any]:
        """The key slice's :meth:`ClickTrace.report` with the object's Dice values."""
        out = self.key_trace.report()
        out.update(dice_propagated=round(self.dice_propagated, 4), dice_per_slice=round(self.dice_per_slice, 4))
        if self.dice_enhanced is not None:
            out["dice_enhanced"] = round(self.dice_enhanced, 4)
        return out


def simulate_stack(
    prompter: PromptableModel,
    volume: np.ndarray,
    objects: NDArray[np.integer],
    key_slice: int,
    *,
    target_iou: float = 0.9,
    max_clicks: int = 20,
    max_objects: int | None = None,
    box: bool = False,
    propagation: PropagationConfig | None = None,
    enhancement: EnhanceConfig | None = None,
    profile: IntensityProfile | None = None,
    embeddings: SliceEmbeddings | None = None,
) -> list[StackResult]:
    """Annotate the objects of ``key_slice`` with simulated clicks, propagate them through the stack and score them.

    ``objects`` is a (Z, Y, X) instance label volume (one id per 3D object). The objects cut by the key slice (the
    ``max_objects`` largest there) are clicked there (after their box, with ``box``) until ``target_iou``; their
    prompts are propagated (and, with ``enhancement``, propagated again bridging failed slices, then enhanced). The
    reference is per-slice prompting: one click at the interior point of the object on every slice it occupies.
    """
    volume, objects = np.asarray(volume), np.asarray(objects)
    if volume.ndim != 3 or objects.shape != volume.shape:
        raise InvalidInputError(
            f"labels: expected a (Z, Y, X) label volume of the image's shape {volume.shape}, got {objects.shape}"
        )
    if not 0 <= key_slice < volume.shape[0]:
        raise InvalidInputError(f"key_slice: expected a slice in [0, {volume.shape[0] - 1}], got {key_slice}")
    ids, sizes = np.unique(objects[key_slice][objects[key_slice] > 0], return_counts=True)
    if ids.size == 0:
        raise InvalidInputError(f"key_slice: no labelled object on slice {key_slice}")
    chosen = ids[np.argsort(-sizes, kind="stable")][:max_objects]
    embeddings = embeddings or SliceEmbeddings(prompter, volume, profile)
    shape = (volume.shape[0], volume.shape[1], volume.shape[2])
    results = []
    for k in chosen:
        truth = objects == k
        trace = simulate_object(
            prompter, embeddings[key_slice], truth[key_slice], object_id=int(k), target_iou=target_iou,
            max_clicks=max_clicks, box=box,
        )  # fmt: skip
        prompt = ObjectPrompt(
            int(k),
            tuple((key_slice, *p) for p in trace.prompt.positive),
            tuple((key_slice, *p) for p in trace.prompt.negative),
            None if trace.prompt.box is None else (key_slice, *trace.prompt.box),
        )
        tracks, _ = propagate_objects(embeddings, [prompt], propagation=propagation)
        propagated = tracks_to_labels(tracks, shape) > 0
        enhanced = None
        if enhancement is not None:
            kept, _ = propagate_objects(embeddings, [prompt], propagation=propagation, enhancement=enhancement)
            enhanced = dice(tracks_to_labels(kept, shape) > 0, truth)
        per_slice = np.zeros_like(truth)
        occupied = [z for z in range(truth.shape[0]) if truth[z].any()]
        for z in occupied:
            click = ObjectPrompt(int(k), positive=(interior_point(truth[z]),))
            per_slice[z] = np.asarray(prompter.predict(embeddings[z], click).mask)
        results.append(
            StackResult(int(k), trace, dice(propagated, truth), enhanced, dice(per_slice, truth), len(occupied))
        )
        logger.info(
            "object %d: key IoU %.3f after %d clicks, Dice propagated %.3f, enhanced %s, per slice %.3f",
            k, trace.ious[-1], len(trace.ious), results[-1].dice_propagated,
            "-" if enhanced is None else f"{enhanced:.3f}", results[-1].dice_per_slice,
        )  # fmt: skip
    return results


def summarize_stack(results: Sequence[StackResult]) -> dict[str, float]:
    """Means over objects: ``stack_dice`` (propagated; enhanced when run), the other variants and the clicks."""
    if not results:
        raise InvalidInputError("results: expected at least one simulated object")
    propagated = [r.dice_propagated for r in results]
    enhanced = [r.dice_enhanced for r in results if r.dice_enhanced is not None]
    out = {
        "objects": float(len(results)),
        "key_slice_clicks": float(np.mean([len(r.key_trace.ious) for r in results])),
        "key_slice_iou": float(np.mean([r.key_trace.ious[-1] for r in results])),
        "stack_dice_propagated": float(np.mean(propagated)),
        "median_stack_dice_propagated": float(np.median(propagated)),
        "stack_dice_per_slice": float(np.mean([r.dice_per_slice for r in results])),
        "per_slice_clicks": float(np.mean([r.per_slice_clicks for r in results])),
    }
    if enhanced:
        out["stack_dice_enhanced"] = float(np.mean(enhanced))
        out["median_stack_dice_enhanced"] = float(np.median(enhanced))
    out["stack_dice"] = out.get("stack_dice_enhanced", out["stack_dice_propagated"])
    return out
