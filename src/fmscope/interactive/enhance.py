"""Slice-to-slice enhancement: composable steps over per-slice results (:class:`ObjectTrack`, one per object).

* :func:`match_slices`: per-slice instance labels (independent ids per slice, e.g. automatic mode or per-slice
  prompting) become tracks by IoU matching of consecutive slices (Hungarian, IoU >= ``min_iou``).
* :func:`find_outliers`: the per-slice geometry of a track (area, box height, box width) is compared with the median of
  a sliding window of ``window`` slices (centred; shifted inwards at the ends of the track); a slice whose area or box
  side deviates by more than ``max_change`` (a fraction of the median) is an outlier.
* :func:`resegment_outliers`: an outlier slice is segmented again from its nearest good neighbours' prompts (their
  union's box, enlarged, and the interior point of the nearer one, plus its mask); when the new mask is still an
  outlier the slice is replaced by the shape interpolated between the neighbours (an end slice is kept as it was).
* :func:`fill_gaps`: missing slices inside a track (up to ``max_gap`` in a row) are filled by interpolating the signed
  distance maps of the slices on either side.
* :func:`filter_tracks`: fragments below ``min_area`` pixels are dropped per slice, then tracks shorter than
  ``min_slices`` slices or smaller than ``min_size`` voxels.

:func:`enhance` applies them in that order with one :class:`EnhanceConfig`. Its ``bridge`` is the one enhancement that
acts during propagation (:class:`~fmscope.interactive.propagate.PropagationConfig` ``bridge``: skip up to that many
failed slices instead of stopping); callers propagate with :func:`bridged` before enhancing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage as ndi
from scipy.optimize import linear_sum_assignment

from fmscope.errors import InvalidInputError
from fmscope.interactive.prompts import ObjectPrompt
from fmscope.interactive.propagate import ObjectTrack, PropagationConfig, SliceEmbeddings, project_prompt
from fmscope.metrics import iou
from fmscope.utils.progress import ProgressCallback, make_progress

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EnhanceConfig:
    """Settings of the enhancement steps (see the module doc); a step is off when its switch is False."""

    bridge: int = 2
    resegment: bool = True
    window: int = 5
    max_change: float = 0.5
    fill: bool = True
    max_gap: int = 2
    min_area: int = 10
    min_slices: int = 1
    min_size: int = 0

    def __post_init__(self) -> None:
        if self.window < 3:
            raise InvalidInputError(f"window: expected an integer >= 3, got {self.window}")
        if self.max_change <= 0:
            raise InvalidInputError(f"max_change: expected a value > 0, got {self.max_change}")
        for name in ("bridge", "max_gap", "min_area", "min_slices", "min_size"):
            if getattr(self, name) < 0:
                raise InvalidInputError(f"{name}: expected an integer >= 0, got {getattr(self, name)}")


def match_slices(labels: NDArray[np.integer], *, min_iou: float = 0.5) -> list[ObjectTrack]:
    """Tracks from per-slice instance labels ``(Z, Y, X)`` whose ids are independent per slice."""
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise InvalidInputError(f"labels: expected (Z, Y, X) per-slice labels, got shape {labels.shape}")
    tracks: list[ObjectTrack] = []
    previous: dict[int, ObjectTrack] = {}  # slice id on z - 1 -> its track
    for z in range(labels.shape[0]):
        ids = [int(i) for i in np.unique(labels[z]) if i != 0]
        current: dict[int, ObjectTrack] = {}
        prev_ids = list(previous)
        if ids and prev_ids:
            cost = np.array([[-iou(labels[z] == a, labels[z - 1] == b) for b in prev_ids] for a in ids])
            for r, c in zip(*linear_sum_assignment(cost), strict=True):
                if -cost[r, c] >= min_iou:
                    current[ids[r]] = previous[prev_ids[c]]
        for i in ids:
            if i not in current:
                current[i] = ObjectTrack(len(tracks) + 1)
                tracks.append(current[i])
            track = current[i]
            track.masks[z], track.source[z] = labels[z] == i, "matched"
        previous = current
    return tracks


def _geometry(mask: NDArray[np.bool_]) -> NDArray[np.float64]:
    ys, xs = np.nonzero(mask)
    return np.array([ys.size, ys.max() - ys.min() + 1, xs.max() - xs.min() + 1], dtype=float)


def find_outliers(track: ObjectTrack, *, window: int = 5, max_change: float = 0.5) -> list[int]:
    """Slices whose area or box side deviates from the sliding-window median by more than ``max_change``."""
    zs = track.slices()
    if len(zs) < 3:
        return []
    geometry = np.stack([_geometry(track.masks[z]) for z in zs])
    outliers = []
    for k, z in enumerate(zs):
        start = min(max(0, k - window // 2), max(0, len(zs) - window))  # centred, shifted inwards at the ends
        others = [j for j in range(start, min(len(zs), start + window)) if j != k]
        median = np.median(geometry[others], axis=0)
        if np.any(np.abs(geometry[k] - median) > max_change * median):
            outliers.append(z)
    return outliers


def _signed_distance(mask: NDArray[np.bool_]) -> NDArray[np.float64]:
    return np.asarray(ndi.distance_transform_edt(~mask) - ndi.distance_transform_edt(mask), dtype=np.float64)


def interpolate_masks(a: NDArray[np.bool_], b: NDArray[np.bool_], t: float) -> NDArray[np.bool_]:
    """The shape a fraction ``t`` of the way from mask ``a`` to mask ``b`` (signed-distance interpolation)."""
    return np.asarray((1.0 - t) * _signed_distance(a) + t * _signed_distance(b) < 0)


def _neighbours(track: ObjectTrack, z: int, bad: set[int]) -> tuple[int | None, int | None]:
    good = [s for s in track.slices() if s not in bad]
    below = max((s for s in good if s < z), default=None)
    above = min((s for s in good if s > z), default=None)
    return below, above


def resegment_outliers(
    embeddings: SliceEmbeddings,
    track: ObjectTrack,
    outliers: Sequence[int],
    *,
    config: EnhanceConfig | None = None,
    propagation: PropagationConfig | None = None,
) -> list[int]:
    """Re-segment each outlier slice from its neighbours' prompts (see the module doc); returns the slices changed."""
    config, propagation = config or EnhanceConfig(), propagation or PropagationConfig()
    bad = set(outliers)
    changed = []
    for z in outliers:
        below, above = _neighbours(track, z, bad)
        near = [s for s in (below, above) if s is not None]
        if not near:
            continue
        nearest = min(near, key=lambda s: abs(s - z))
        union = np.logical_or.reduce([track.masks[s] for s in near])
        boxed = project_prompt(track.object_id, union, propagation)
        point = project_prompt(track.object_id, track.masks[nearest], propagation).positive
        prompt = ObjectPrompt(track.object_id, positive=point, box=boxed.box)
        result = embeddings.backend.predict(embeddings[z], prompt, track.masks[nearest])
        trial = ObjectTrack(track.object_id, {**track.masks, z: result.mask})
        if result.mask.any() and z not in find_outliers(trial, window=config.window, max_change=config.max_change):
            track.masks[z], track.scores[z], track.source[z] = result.mask, result.score, "resegmented"
        elif below is not None and above is not None:
            t = (z - below) / (above - below)
            track.masks[z] = interpolate_masks(track.masks[below], track.masks[above], t)
            track.source[z] = "interpolated"
        else:  # an end slice that stays an outlier: objects do taper at their ends, keep it
            continue
        changed.append(z)
    return changed


def fill_gaps(track: ObjectTrack, *, max_gap: int = 2) -> list[int]:
    """Fill runs of at most ``max_gap`` missing slices between two present slices; returns the slices filled."""
    zs = track.slices()
    filled = []
    for a, b in zip(zs[:-1], zs[1:], strict=True):
        if 1 < b - a <= max_gap + 1:
            for z in range(a + 1, b):
                track.masks[z] = interpolate_masks(track.masks[a], track.masks[b], (z - a) / (b - a))
                track.source[z] = "filled"
                filled.append(z)
    return filled


def filter_tracks(
    tracks: Sequence[ObjectTrack], *, min_area: int = 0, min_slices: int = 1, min_size: int = 0
) -> list[ObjectTrack]:
    """Drop fragments below ``min_area`` per slice, then tracks with too few slices or voxels."""
    kept = []
    for track in tracks:
        for z in track.slices():
            regions, n = ndi.label(track.masks[z])
            if n:
                sizes = np.bincount(regions.ravel())
                small = np.isin(regions, np.nonzero(sizes < min_area)[0])
                track.masks[z] = track.masks[z] & ~small
        zs = track.slices()
        size = sum(int(track.masks[z].sum()) for z in zs)
        if len(zs) >= max(min_slices, 1) and size >= min_size:
            kept.append(track)
        else:
            logger.debug("object %d dropped: %d slices, %d voxels", track.object_id, len(zs), size)
    return kept


def enhance(
    embeddings: SliceEmbeddings,
    tracks: Sequence[ObjectTrack],
    config: EnhanceConfig | None = None,
    *,
    propagation: PropagationConfig | None = None,
    progress: ProgressCallback | bool | None = None,
) -> tuple[list[ObjectTrack], dict[str, int]]:
    """Outlier re-segmentation, gap filling and the size filters; returns the kept tracks and step counts
    (``progress`` counts objects)."""
    config = config or EnhanceConfig()
    counts = {"outliers": 0, "filled": 0, "dropped": 0}
    with make_progress(progress, len(tracks), "enhancement") as advance:
        for track in tracks:
            if config.resegment:
                outliers = find_outliers(track, window=config.window, max_change=config.max_change)
                changed = resegment_outliers(embeddings, track, outliers, config=config, propagation=propagation)
                counts["outliers"] += len(changed)
            if config.fill:
                counts["filled"] += len(fill_gaps(track, max_gap=config.max_gap))
            advance(1, f"object {track.object_id}")
    kept = filter_tracks(tracks, min_area=config.min_area, min_slices=config.min_slices, min_size=config.min_size)
    counts["dropped"] = len(tracks) - len(kept)
    logger.info("enhancement: %(outliers)d outlier slices, %(filled)d gap slices filled, %(dropped)d dropped", counts)
    return kept, counts


def bridged(propagation: PropagationConfig | None, config: EnhanceConfig | None) -> PropagationConfig:
    """``propagation`` with the enhancement's ``bridge`` (when enhancing), else unchanged."""
    propagation = propagation or PropagationConfig()
    return propagation if config is None else replace(propagation, bridge=config.bridge)
