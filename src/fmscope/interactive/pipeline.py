"""The prompted-segmentation pipeline, one set of functions for the CLI, the web app and the benchmarks.

* :func:`propagate_objects`: objects of a stack from their key slices to tracks (propagation, bridging of failed
  slices when enhancing, then the enhancement steps): the one recipe, also behind :meth:`Session.propagate
  <fmscope.interactive.session.Session.propagate>` and the simulated annotator;
* :func:`segment_prompted`: a raw 2D image or ``(Z, Y, X)`` stack plus prompts (points, boxes, strokes, phrases) to a
  label image: phrases become boxes (a grounding detector), a 2D image is segmented object by object, a stack is
  propagated (or run through the backend's own video tracker);
* :func:`segment_automatic`: the backend's automatic mode ("segment everything"), per slice and linked through a
  stack;
* :func:`propagate`: the short form of :func:`propagate_objects` for a volume in memory.

One intensity window is fitted per volume (1st/99.8th percentiles, streamed) unless a ``profile`` is given, so every
slice is windowed alike. Long work reports through ``progress`` (``(done, total, message)``, or ``True`` for a bar);
a callback that raises stops the work there (the web app's cancel button).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fmscope.errors import InvalidInputError
from fmscope.intensity import IntensityProfile, fit_profile
from fmscope.interactive.enhance import EnhanceConfig, bridged, enhance
from fmscope.interactive.grounding import GroundingDetector, text_to_prompts
from fmscope.interactive.modes import automatic_stack
from fmscope.interactive.prompts import ObjectPrompt
from fmscope.interactive.propagate import ObjectTrack, PropagationConfig, SliceEmbeddings, propagate_object
from fmscope.interactive.propagate import tracks_to_labels as tracks_to_labels
from fmscope.interactive.protocol import PromptableModel, SupportsVideo
from fmscope.utils.progress import ProgressCallback, make_progress

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StackConfig:
    """How prompts are carried through a stack: ``propagate`` from their key slices (with ``propagation`` settings,
    the ``enhancement`` steps when given, within ``z_range``: inclusive first and last slice), or the backend's own
    ``video`` tracker (SAM2)."""

    propagate: bool = False
    video: bool = False
    propagation: PropagationConfig = field(default_factory=PropagationConfig)
    enhancement: EnhanceConfig | None = None
    z_range: tuple[int, int] | None = None


@dataclass(frozen=True)
class PromptedResult:
    """A label image (the input's shape, uint32 object ids), the prompts used (phrases turned into boxes), the tracks
    of a propagated stack, the enhancement step counts and the slice embeddings reused from a disk cache."""

    labels: NDArray[np.uint32]
    prompts: tuple[ObjectPrompt, ...]
    tracks: tuple[ObjectTrack, ...] = ()
    counts: Mapping[str, int] = field(default_factory=dict)
    reused: int = 0
    seconds: float = 0.0

    @property
    def found(self) -> int:
        """Objects with at least one pixel."""
        return int(np.count_nonzero(np.unique(self.labels)))


def _check_ids(prompts: Sequence[ObjectPrompt]) -> None:
    ids = [p.id for p in prompts]
    if len(set(ids)) != len(ids):
        raise InvalidInputError(f"prompts: object ids must be distinct, got {ids}")


def propagate_objects(
    embeddings: SliceEmbeddings,
    prompts: Sequence[ObjectPrompt],
    *,
    propagation: PropagationConfig | None = None,
    enhancement: EnhanceConfig | None = None,
    z_range: tuple[int, int] | None = None,
    key_masks: Mapping[int, Mapping[int, NDArray[np.bool_]]] | None = None,
    progress: ProgressCallback | bool | None = None,
) -> tuple[list[ObjectTrack], dict[str, int]]:
    """Tracks of every object of ``prompts`` (3D coordinates) from its key slices, and the enhancement step counts.

    With ``enhancement``, propagation bridges up to ``enhancement.bridge`` failed slices and the tracks then go
    through :func:`~fmscope.interactive.enhance.enhance`; key slices keep their masks. ``key_masks`` (object id ->
    slice -> mask) are masks known on key slices (accepted or corrected by hand): used as they are.
    """
    _check_ids(prompts)
    config = bridged(propagation, enhancement)
    known = key_masks or {}
    per_object = max(1, (z_range[1] - z_range[0] + 1) if z_range else len(embeddings))
    with make_progress(progress, per_object * len(prompts), "propagation") as advance:
        tracks = [
            propagate_object(embeddings, p, config, z_range=z_range, key_masks=known.get(p.id), progress=advance)
            for p in prompts
        ]
    counts: dict[str, int] = {}
    if enhancement is not None:
        keys = {t.object_id: {z: t.masks[z] for z, s in t.source.items() if s == "key"} for t in tracks}
        tracks, counts = enhance(embeddings, tracks, enhancement, propagation=config, progress=progress)
        for track in tracks:  # the enhancement never overrides what the prompts (or the user) fixed
            for z, mask in keys[track.object_id].items():
                track.masks[z], track.source[z] = mask, "key"
    logger.info("propagated %d object(s) through %d slices (%d embedded)", len(tracks), len(embeddings),
                embeddings.computed)  # fmt: skip
    return tracks, counts


def propagate(
    backend: PromptableModel,
    volume: np.ndarray,
    prompts: Sequence[ObjectPrompt],
    config: PropagationConfig | None = None,
    *,
    profile: IntensityProfile | None = None,
    embeddings: SliceEmbeddings | None = None,
    enhancement: EnhanceConfig | None = None,
    progress: ProgressCallback | bool | None = None,
) -> tuple[NDArray[np.uint32], list[ObjectTrack]]:
    """Propagate every object of ``prompts`` through ``volume``; returns the label volume and the tracks."""
    embeddings = embeddings or SliceEmbeddings(backend, volume, profile)
    tracks, _ = propagate_objects(embeddings, prompts, propagation=config, enhancement=enhancement, progress=progress)
    shape = np.shape(volume)
    return tracks_to_labels(tracks, (int(shape[0]), int(shape[1]), int(shape[2]))), tracks


def segment_prompted(
    backend: PromptableModel,
    image: Any,
    prompts: Sequence[ObjectPrompt],
    *,
    stack: StackConfig | None = None,
    profile: IntensityProfile | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    detector: GroundingDetector | None = None,
    phrases: Sequence[str] = (),
    text_slice: int | None = None,
    progress: ProgressCallback | bool | None = None,
) -> PromptedResult:
    """Segment a raw 2D ``(Y, X)`` image or ``(Z, Y, X)`` stack from ``prompts`` (coordinates as the image).

    Text-only objects and ``phrases`` become one box object per detection (``detector``; on ``text_slice`` of a
    stack). A stack needs ``stack.propagate`` or ``stack.video``: a 2D backend is never run on a stack silently.
    ``cache_dir`` keeps the slice embeddings on disk for the next run.
    """
    t0 = time.perf_counter()
    stack = stack or StackConfig()
    ndim = np.ndim(image)
    if ndim not in (2, 3):
        raise InvalidInputError(f"image: expected a 2D (Y, X) image or a (Z, Y, X) stack, got shape {np.shape(image)}")
    if ndim == 3 and not (stack.propagate or stack.video):
        raise InvalidInputError(
            f"image: a stack of {np.shape(image)[0]} slices; the {backend.name} backend segments 2D slices: "
            "propagate the prompts through the stack (CLI: add --propagate)"
        )
    tracker = backend if isinstance(backend, SupportsVideo) else None
    if stack.video and tracker is None:
        raise InvalidInputError(f"video: the {backend.name} backend has no video predictor (sam2 has; CLI: --video)")
    if stack.video and ndim != 3:
        raise InvalidInputError("video: the video predictor carries prompts through a stack; the image is 2D")
    profile = profile or fit_profile(image)  # one window for the whole volume
    prompts = text_to_prompts(detector, image, prompts, phrases, text_slice=text_slice, profile=profile)
    if not prompts:
        raise InvalidInputError("prompts: nothing to segment (the phrase found no box)")
    _check_ids(prompts)
    tracks: list[ObjectTrack] = []
    counts: dict[str, int] = {}
    reused = 0
    if ndim == 2:
        embedding = backend.embed(np.asarray(image), profile)
        labels = np.zeros(np.shape(image), np.uint32)
        for p in prompts:
            mask = np.asarray(backend.predict(embedding, p).mask)
            labels[mask & (labels == 0)] = p.id
    elif stack.video and tracker is not None:
        key = min(z for p in prompts for z in p.slices())
        video = tracker.propagate_video(np.asarray(image), key, prompts, profile, progress=progress)
        labels = np.asarray(video, np.uint32)
    else:
        embeddings = SliceEmbeddings(backend, image, profile, cache_dir=cache_dir)
        tracks, counts = propagate_objects(
            embeddings, prompts, propagation=stack.propagation, enhancement=stack.enhancement, z_range=stack.z_range,
            progress=progress,
        )  # fmt: skip
        shape = np.shape(image)
        labels = tracks_to_labels(tracks, (int(shape[0]), int(shape[1]), int(shape[2])))
        reused = embeddings.reused
    return PromptedResult(labels, tuple(prompts), tuple(tracks), counts, reused, time.perf_counter() - t0)


def segment_automatic(
    backend: PromptableModel,
    image: Any,
    *,
    profile: IntensityProfile | None = None,
    min_slices: int = 1,
    options: Mapping[str, Any] | None = None,
    progress: ProgressCallback | bool | None = None,
) -> PromptedResult:
    """Every object the backend's automatic mode finds on a 2D image, or per slice of a stack linked into 3D objects
    (objects on fewer than ``min_slices`` slices dropped)."""
    t0 = time.perf_counter()
    profile = profile or fit_profile(image)
    labels = automatic_stack(backend, image, profile=profile, min_slices=min_slices, options=options, progress=progress)
    return PromptedResult(np.asarray(labels, np.uint32), (), seconds=time.perf_counter() - t0)
