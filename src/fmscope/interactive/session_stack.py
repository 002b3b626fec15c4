"""A session through its stack: propagation from key slices, interpolation, per-slice geometry and scores.

* :func:`propagate_session`: objects carried from their key slices (slices with prompts, segmented from them exactly
  as ``fmscope segment`` does, and slices accepted with :meth:`~fmscope.interactive.session.Session.accept_slice`,
  whose masks are used as they are: accept a slice to propagate from a mask corrected by hand) by the same
  :func:`~fmscope.interactive.pipeline.propagate_objects` as ``fmscope segment --propagate``; in semantic mode with a
  phase backend, every slice re-predicted by one forest trained on all prompted slices. The work runs without the
  session's lock, so the session stays usable; the result is one undoable step that replaces the objects' masks on
  the other slices of the z range, except slices that were changed meanwhile or became key slices.
* :func:`interpolate_session`: the shapes between two slices of an object, by signed-distance interpolation.
* :func:`slice_stats`: area and box of each slice of an object with the sliding-window outliers marked.
* :func:`compare_session`: per-slice IoU and Dice against a ground-truth volume.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from fmscope.errors import InvalidInputError
from fmscope.interactive.enhance import EnhanceConfig, find_outliers, interpolate_masks
from fmscope.interactive.pipeline import propagate_objects
from fmscope.interactive.propagate import ObjectTrack, PropagationConfig
from fmscope.interactive.protocol import SupportsPhases
from fmscope.interactive.session_core import is_int
from fmscope.metrics import dice, iou
from fmscope.utils.progress import ProgressCallback, make_progress

if TYPE_CHECKING:
    from fmscope.interactive.session import Session

logger = logging.getLogger(__name__)


def _z_range(session: Session, z_range: Sequence[int] | None) -> tuple[int, int]:
    if z_range is None:
        return 0, session.shape[0] - 1
    if len(z_range) != 2 or not all(is_int(v) for v in z_range):
        raise InvalidInputError(f"z_range: expected (first, last) slice indices, got {z_range!r}")
    lo, hi = int(z_range[0]), int(z_range[1])
    if not 0 <= lo <= hi < session.shape[0]:
        raise InvalidInputError(f"z_range: expected 0 <= first <= last <= {session.shape[0] - 1}, got ({lo}, {hi})")
    return lo, hi


def key_slices(session: Session, object_id: int) -> list[int]:
    """Slices where an object's mask is given: where it has prompts, or accepted."""
    accepted = {z for oid, z in session.accepted_slices if oid == object_id}
    return sorted(set(session.prompts[object_id].slices()) | accepted)


def propagate_session(
    session: Session,
    object_ids: Sequence[int] | None = None,
    *,
    z_range: Sequence[int] | None = None,
    propagation: PropagationConfig | None = None,
    enhancement: EnhanceConfig | None = None,
    progress: ProgressCallback | bool | None = None,
) -> dict[str, Any]:
    """Propagate ``object_ids`` (default: every object with a key slice) within ``z_range`` (inclusive; default the
    whole stack); see the module doc. Returns what was done: objects, slices changed, enhancement counts, slices left
    alone because they changed during the propagation."""
    with session.lock:
        lo, hi = _z_range(session, z_range)
        prompts = session.prompts
        ids = list(prompts) if object_ids is None else [int(i) for i in object_ids]
        for oid in ids:
            if oid not in prompts:
                raise InvalidInputError(f"object_ids: unknown object {oid}; known ids: {list(session.object_ids)}")
        keys = {oid: key_slices(session, oid) for oid in ids}
        ids = [oid for oid in ids if keys[oid]]
        if not ids:
            raise InvalidInputError("object_ids: no object has a key slice (prompts, or an accepted slice) to start")
        phases = session.mode == "semantic" and isinstance(session.backend, SupportsPhases)
        versions = {z: session.plane_version(z) for z in range(lo, hi + 1)}
        had = {oid: set(session.labelled_slices(oid)) for oid in ids}
        accepted = set(session.accepted_slices)
        known = {oid: {z: session.mask(oid, z) for z in keys[oid] if (oid, z) in accepted and lo <= z <= hi
                       and z in had[oid]} for oid in ids}  # fmt: skip
    if phases:
        return _propagate_phases(session, lo, hi, progress)
    tracks, counts = propagate_objects(
        session.embeddings, [prompts[oid] for oid in ids], propagation=propagation, enhancement=enhancement,
        z_range=(lo, hi), key_masks=known, progress=progress,
    )  # fmt: skip
    by_id = {t.object_id: t for t in tracks}
    with session.lock:
        masks: dict[int, dict[int, NDArray[np.bool_]]] = {}
        skipped: list[tuple[int, int]] = []
        empty = np.zeros(session.shape[1:], bool)
        for oid in ids:
            if oid not in session.prompts:
                continue  # deleted meanwhile
            keys_now = set(key_slices(session, oid))
            track = by_id.get(oid, ObjectTrack(oid))
            for z in range(lo, hi + 1):
                if z in keys_now:
                    continue
                if session.plane_version(z) != versions[z]:
                    skipped.append((oid, z))  # edited during the propagation: the person's edit wins
                    continue
                new = track.masks.get(z, empty)
                if new.any() or z in had[oid]:
                    masks.setdefault(oid, {})[z] = new
        if masks:
            session.set_masks("propagate", masks)
    changed = sorted({z for per in masks.values() for z in per})
    logger.info("session propagation: %d object(s), %d slice(s) set, %d left as edited", len(ids), len(changed),
                len(skipped))  # fmt: skip
    return {"objects": ids, "slices": changed, "counts": dict(counts), "skipped": skipped}


def _propagate_phases(session: Session, lo: int, hi: int, progress: ProgressCallback | bool | None) -> dict[str, Any]:
    """Semantic mode: every slice of ``lo..hi`` that is no key slice predicted by one forest (all phases at once);
    the forest and the slices are computed without the session's lock, slices changed meanwhile are left alone."""
    from fmscope.interactive.phases import fit_session_phases, phase_plane

    with session.lock:
        prompts = session.prompts
        children = session.parents
        phases = {oid: p for oid, p in prompts.items() if oid not in children}
        prompted = {z for p in phases.values() for z in p.slices()}
        fixed_slices = prompted | {z for oid, z in session.accepted_slices if oid in phases}
        todo = [z for z in range(lo, hi + 1) if z not in fixed_slices]
        versions = {z: session.plane_version(z) for z in todo}
    model, classes = fit_session_phases(session, phases)
    planes: dict[int, NDArray[np.uint32]] = {}
    with make_progress(progress, len(todo), "phases") as advance:
        for z in todo:
            planes[z] = phase_plane(session, model, classes, z, session.plane(z), children)
            advance(1)
    with session.lock:
        current = {z: p for z, p in planes.items() if session.plane_version(z) == versions[z]}
        skipped = [(0, z) for z in planes if z not in current]
        changed = [z for z, p in current.items() if not np.array_equal(p, session.plane(z))]
        if changed:
            session.set_planes("propagate", {z: current[z] for z in changed})
    return {"objects": sorted(phases), "slices": sorted(changed), "counts": {}, "skipped": skipped}


def interpolate_session(session: Session, object_id: int, z0: int, z1: int) -> list[int]:
    """Fill the slices strictly between ``z0`` and ``z1`` (both holding the object) with the shapes interpolated
    between the two masks (slices accepted for the object are kept); one undoable step. Returns the slices set."""
    with session.lock:
        oid = int(object_id)
        a, b = sorted((session.check_z(z0), session.check_z(z1)))
        if b - a < 2:
            raise InvalidInputError(f"z1: slices {a} and {b} have no slice between them to interpolate")
        first, last = session.mask(oid, a), session.mask(oid, b)
        for z, m in ((a, first), (b, last)):
            if not m.any():
                raise InvalidInputError(f"z: object {oid} has no mask on slice {z} to interpolate from")
        fixed = {z for o, z in session.accepted_slices if o == oid}
        masks = {z: interpolate_masks(first, last, (z - a) / (b - a)) for z in range(a + 1, b) if z not in fixed}
        session.set_masks("interpolate", {oid: masks})
        return sorted(masks)


def slice_stats(session: Session, object_id: int, *, window: int = 5, max_change: float = 0.5) -> list[dict[str, Any]]:
    """One row per slice holding the object: area, box height and width, whether the slice is an outlier of the
    sliding-window median (:func:`~fmscope.interactive.enhance.find_outliers`), key or accepted."""
    EnhanceConfig(window=window, max_change=max_change)  # checks the settings
    with session.lock:
        oid = session._check_object(object_id)
        track = ObjectTrack(oid, {z: session.mask(oid, z) for z in session.labelled_slices(oid)})
        keys = set(key_slices(session, oid))
        accepted = {z for o, z in session.accepted_slices if o == oid}
    outliers = set(find_outliers(track, window=window, max_change=max_change))
    rows = []
    for z in track.slices():
        ys, xs = np.nonzero(track.masks[z])
        rows.append({
            "z": z, "area": int(ys.size), "height": int(ys.max() - ys.min() + 1), "width": int(xs.max() - xs.min() + 1),
            "outlier": z in outliers, "key": z in keys, "accepted": z in accepted,
        })  # fmt: skip
    return rows


def compare_session(
    session: Session,
    truth: Any,
    *,
    truth_values: Sequence[int] | None = None,
    object_ids: Sequence[int] | None = None,
    progress: ProgressCallback | bool | None = None,
) -> dict[str, Any]:
    """Per-slice IoU and Dice of the session's objects (``object_ids``, default all, as one foreground) against a
    ground-truth label volume of the image's shape (foreground: ``truth_values``, default every value > 0), and the
    same over the whole stack. Slices where both are empty are left out of the per-slice table."""
    shape = tuple(int(s) for s in np.shape(truth))
    if shape != session.image_shape:
        raise InvalidInputError(f"truth: expected the image's shape {session.image_shape}, got {shape}")
    with session.lock:
        ids = list(session.object_ids) if object_ids is None else [session._check_object(i) for i in object_ids]
        planes = {z: np.isin(session.plane(z), ids) for z in range(session.shape[0])}
    truth3 = truth if len(shape) == 3 else np.asarray(truth)[None]
    rows, tp, fp, fn = [], 0, 0, 0
    with make_progress(progress, session.shape[0], "scores") as advance:
        for z in range(session.shape[0]):
            t, pred = np.asarray(truth3[z]), planes[z]
            true = t > 0 if truth_values is None else np.isin(t, list(truth_values))
            tp += int((pred & true).sum())
            fp += int((pred & ~true).sum())
            fn += int((~pred & true).sum())
            if pred.any() or true.any():
                rows.append({"z": z, "iou": iou(pred, true), "dice": dice(pred, true), "predicted": int(pred.sum()),
                             "truth": int(true.sum())})  # fmt: skip
            advance(1)
    total = tp + fp + fn
    return {
        "slices": rows,
        "iou": tp / total if total else 1.0,
        "dice": 2 * tp / (2 * tp + fp + fn) if total else 1.0,
        "objects": ids,
    }
