"""Segmentation modes on top of the promptable protocol: hierarchical re-segmentation inside a region, automatic
("segment everything") stacks, and semantic output.

* :func:`segment_inside` segments again inside an existing region (Zenesis' "further segment"): positive points must
  lie in the region and the mask is cut to it, so a phase found first can be split into its parts with a few more
  clicks.
* :func:`automatic_stack` runs a backend's automatic mode (``automatic(embedding)`` -> label image; SAM) on every
  slice and links the per-slice instances into 3D objects by IoU matching, dropping objects on fewer than
  ``min_slices`` slices.
* :func:`semantic` merges instance labels into one phase mask per label group.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fmscope.errors import InvalidInputError
from fmscope.intensity import IntensityProfile
from fmscope.interactive.enhance import filter_tracks, match_slices
from fmscope.interactive.prompts import ObjectPrompt
from fmscope.interactive.propagate import SliceEmbeddings, tracks_to_labels
from fmscope.interactive.protocol import PromptableModel, PromptMask, SupportsAutomatic
from fmscope.utils.progress import ProgressCallback, make_progress

logger = logging.getLogger(__name__)


def segment_inside(
    backend: PromptableModel, embedding: Any, prompt: ObjectPrompt, region: NDArray[np.bool_]
) -> PromptMask:
    """Segment the 2D ``prompt`` again inside ``region`` (a 2D mask of the slice); the result is cut to the region."""
    region = np.asarray(region, dtype=bool)
    if region.ndim != 2 or not region.any():
        raise InvalidInputError(f"region: expected a non-empty 2D mask, got shape {region.shape}")
    for y, x in prompt.positive:
        if not region[min(round(y), region.shape[0] - 1), min(round(x), region.shape[1] - 1)]:
            raise InvalidInputError(f"prompt {prompt.id}: positive point ({y}, {x}) lies outside the region")
    result = backend.predict(embedding, prompt)
    return PromptMask(np.asarray(result.mask) & region, result.score, result.info)


def automatic_stack(
    backend: PromptableModel,
    volume: Any,
    *,
    profile: IntensityProfile | None = None,
    min_iou: float = 0.5,
    min_slices: int = 1,
    options: Mapping[str, Any] | None = None,
    progress: ProgressCallback | bool | None = None,
    embeddings: SliceEmbeddings | None = None,
) -> NDArray[np.uint32]:
    """Automatic instances of every slice of a (Z, Y, X) ``volume``, linked across slices into 3D objects
    (``embeddings``: slice embeddings to reuse, e.g. a session's)."""
    if not isinstance(backend, SupportsAutomatic):
        raise InvalidInputError(f"method: the {backend.name} backend has no automatic mode (sam has)")
    automatic = backend.automatic
    if np.ndim(volume) == 2:
        return np.asarray(automatic(backend.embed(np.asarray(volume), profile), **dict(options or {})), np.uint32)
    embeddings = embeddings or SliceEmbeddings(backend, volume, profile)
    shape = tuple(int(s) for s in np.shape(volume))
    per_slice = np.zeros(shape, np.int64)
    with make_progress(progress, shape[0], "automatic") as advance:
        for z in range(shape[0]):
            per_slice[z] = automatic(embeddings[z], **dict(options or {}))
            advance(1)
    tracks = filter_tracks(match_slices(per_slice, min_iou=min_iou), min_slices=min_slices)
    for k, track in enumerate(tracks, start=1):
        track.object_id = k
    logger.info("automatic: %d objects over %d slices", len(tracks), shape[0])
    return tracks_to_labels(tracks, (shape[0], shape[1], shape[2]))


def semantic(labels: NDArray[np.integer], groups: Sequence[Sequence[int]] | None = None) -> NDArray[np.uint8]:
    """Phase masks from instance labels: all objects as phase 1, or ``groups[k]`` (lists of ids) as phase k + 1."""
    labels = np.asarray(labels)
    if groups is None:
        return (labels > 0).astype(np.uint8)
    out = np.zeros(labels.shape, np.uint8)
    for k, ids in enumerate(groups, start=1):
        out[np.isin(labels, list(ids)) & (out == 0)] = k
    return out
