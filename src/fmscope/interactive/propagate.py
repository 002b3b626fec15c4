"""Carry 2D prompt results through a stack: bidirectional propagation from key slices.

A key slice of an object is a slice on which it has prompts (points or a box). The object is segmented there from its
prompts, then slice by slice away from each key slice, each step prompted by the previous slice's result:

* the previous mask's bounding box, enlarged by ``box_expand`` of its size (at least ``box_margin`` pixels) on each
  side, and its interior point (the pixel farthest from its edge, :func:`interior_point`) as a positive click;
* the previous mask itself as a mask prompt (``use_mask_prompt``).

A backend with the transfer ability (:class:`~fmscope.interactive.protocol.SupportsTransfer`: the forest backends) is
asked that instead (``transfer``): it learns the object's appearance on the previous slice, where the mask is known,
and looks for it on this one, rather than labelling this slice's pixels under the old mask as the object.

Propagation in one direction stops when the new mask is empty, or when its IoU with the previous slice's mask falls
below ``stop_iou`` (the object ended or the model lost it; that slice is dropped), unless ``bridge`` > 0: then up to
``bridge`` failed slices in a row are skipped, the next one prompted from the last good slice, and propagation goes on
where it finds the object again (the skipped slices are left for :func:`~fmscope.interactive.enhance.fill_gaps`).
Between two key slices the stack is filled from both ends, meeting in the middle, so a second annotated slice
corrects drift rather than competing with it.

Embeddings are computed once per slice and shared by all objects (:class:`SliceEmbeddings`).
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage as ndi

from fmscope.errors import InvalidInputError
from fmscope.intensity import IntensityProfile, fit_profile
from fmscope.interactive.cache import DEFAULT_MAX_BYTES, EmbeddingCache
from fmscope.interactive.prompts import ObjectPrompt
from fmscope.interactive.protocol import PromptableModel, PromptMask, SupportsTransfer
from fmscope.metrics import iou

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PropagationConfig:
    """How a slice's result prompts the next slice (see the module doc)."""

    stop_iou: float = 0.5
    box_expand: float = 0.1
    box_margin: int = 4
    use_mask_prompt: bool = True
    transfer: bool = True
    bridge: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.stop_iou < 1.0:
            raise InvalidInputError(f"stop_iou: expected a value in [0, 1), got {self.stop_iou}")
        if self.box_expand < 0:
            raise InvalidInputError(f"box_expand: expected a value >= 0, got {self.box_expand}")
        for name in ("box_margin", "bridge"):
            if getattr(self, name) < 0:
                raise InvalidInputError(f"{name}: expected an integer >= 0, got {getattr(self, name)}")


class SliceEmbeddings:
    """Lazily computed ``backend.embed(volume[z], profile)`` of a (Z, Y, X) stack, kept in memory (the
    ``max_slices`` most recently used, or all, within ``max_bytes`` of memory) and, with a ``cache_dir``, on disk
    (:class:`~fmscope.interactive.cache.EmbeddingCache`, at most ``cache_max_bytes``, 0 or None: unbounded) for the
    next run; with a cache, a computed slice is used as the cache will give it back (float16-rounded), so a rerun gives
    the same masks. Without a ``profile`` one is fitted to the whole stack (1st/99.8th percentiles, streamed), so every
    slice is windowed alike. Safe to share between threads (a web app's requests and its background job): a slice is
    embedded once even when asked for twice at a time.
    """

    def __init__(
        self,
        backend: PromptableModel,
        volume: Any,
        profile: IntensityProfile | None = None,
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        max_slices: int | None = None,
        max_bytes: int | None = None,
        cache_max_bytes: int | None = DEFAULT_MAX_BYTES,
    ) -> None:
        if np.ndim(volume) != 3:
            raise InvalidInputError(f"volume: expected a (Z, Y, X) stack, got shape {np.shape(volume)}")
        bounded = max_slices is not None
        if bounded and (not isinstance(max_slices, int) or isinstance(max_slices, bool) or max_slices < 1):
            raise InvalidInputError(f"max_slices: expected None or an integer >= 1, got {max_slices!r}")
        if profile is None:  # one window for the whole stack, so that slices compare (spec: per volume, once)
            profile = fit_profile(volume)
        self.backend, self.volume, self.profile = backend, volume, profile
        self.max_slices, self.max_bytes = max_slices, max_bytes
        self._cache: OrderedDict[int, Any] = OrderedDict()
        self._sizes: dict[int, int] = {}
        self._busy: dict[int, threading.Event] = {}
        self._lock = threading.Lock()
        self.disk = (
            EmbeddingCache(cache_dir, backend, profile, max_bytes=cache_max_bytes) if cache_dir is not None else None
        )
        self.reused = 0
        self.computed = 0

    def __getitem__(self, z: int) -> Any:
        while True:
            with self._lock:
                if z in self._cache:
                    self._cache.move_to_end(z)
                    return self._cache[z]
                wait = self._busy.get(z)
                if wait is None:
                    self._busy[z] = threading.Event()
                    break
            wait.wait()  # another thread is embedding this slice
        try:
            embedding = self._embed(z)
            with self._lock:
                self._cache[z] = embedding
                self._sizes[z] = embedding_bytes(embedding)
                while len(self._cache) > 1 and (
                    (self.max_slices is not None and len(self._cache) > self.max_slices)
                    or (self.max_bytes is not None and self.nbytes > self.max_bytes)
                ):
                    old, _ = self._cache.popitem(last=False)
                    self._sizes.pop(old, None)
        finally:
            with self._lock:
                self._busy.pop(z).set()
        return embedding

    def _embed(self, z: int) -> Any:
        plane = np.asarray(self.volume[z])
        embedding = self.disk.get(z, plane) if self.disk is not None else None
        if embedding is not None:
            self.reused += 1
            return embedding
        embedding = self.backend.embed(plane, self.profile)
        self.computed += 1
        if self.disk is not None:
            embedding = self.disk.put(z, plane, embedding)  # as a later read gives it back
        return embedding

    def __contains__(self, z: int) -> bool:
        """Whether slice ``z`` is embedded and in memory."""
        return z in self._cache

    @property
    def nbytes(self) -> int:
        """Memory held by the embeddings in memory (their arrays and tensors)."""
        return sum(self._sizes.values())

    def capacity(self) -> int | None:
        """How many slices fit in memory at once (from the size of the embeddings so far; None: no bound known)."""
        bounds = [] if self.max_slices is None else [self.max_slices]
        if self.max_bytes is not None and self._sizes:
            bounds.append(max(1, self.max_bytes // max(self._sizes.values())))
        return min(bounds) if bounds else None

    def __len__(self) -> int:
        return int(self.volume.shape[0])


def embedding_bytes(embedding: Any) -> int:
    """The bytes of an embedding's arrays and tensors (a dataclass of fields)."""
    import dataclasses

    total = 0
    fields = dataclasses.fields(embedding) if dataclasses.is_dataclass(embedding) else ()
    for value in (getattr(embedding, f.name) for f in fields) if fields else (embedding,):
        items = value if isinstance(value, tuple | list) else (value,)
        for item in items:
            if isinstance(item, np.ndarray):
                total += item.nbytes
            elif hasattr(item, "element_size") and hasattr(item, "nelement"):  # a torch tensor
                total += int(item.element_size() * item.nelement())
    return total


@dataclass
class ObjectTrack:
    """One object's per-slice masks (z -> mask) with, per slice, the score, the IoU with the slice it came from and
    how it was obtained (``key`` or ``propagated``)."""

    object_id: int
    masks: dict[int, NDArray[np.bool_]] = field(default_factory=dict)
    scores: dict[int, float] = field(default_factory=dict)
    step_iou: dict[int, float] = field(default_factory=dict)
    source: dict[int, str] = field(default_factory=dict)

    def slices(self) -> list[int]:
        """Slices holding a non-empty mask, in order."""
        return sorted(z for z, m in self.masks.items() if m.any())


def project_prompt(object_id: int, previous: NDArray[np.bool_], config: PropagationConfig) -> ObjectPrompt:
    """The prompt a slice's result ``previous`` (2D, non-empty) gives the next slice: enlarged box + interior point."""
    ys, xs = np.nonzero(previous)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    dy = max(config.box_margin, round(config.box_expand * (y1 - y0)))
    dx = max(config.box_margin, round(config.box_expand * (x1 - x0)))
    h, w = previous.shape
    box = (float(max(0, y0 - dy)), float(max(0, x0 - dx)), float(min(h, y1 + dy)), float(min(w, x1 + dx)))
    return ObjectPrompt(object_id, positive=(interior_point(previous),), box=box)


def interior_point(mask: NDArray[np.bool_]) -> tuple[float, float]:
    """The pixel farthest from the edge of a non-empty 2D mask (ties: the one nearest the centroid)."""
    depth = ndi.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    ys, xs = np.nonzero(depth >= depth.max())
    k = int(np.argmin((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2))
    return float(ys[k]), float(xs[k])


def _step(
    embeddings: SliceEmbeddings,
    z: int,
    z_previous: int,
    previous: NDArray[np.bool_],
    object_id: int,
    config: PropagationConfig,
) -> PromptMask:
    prompt = project_prompt(object_id, previous, config)
    backend = embeddings.backend
    if config.transfer and isinstance(backend, SupportsTransfer):
        return backend.transfer(embeddings[z_previous], previous, embeddings[z], prompt)
    return embeddings.backend.predict(embeddings[z], prompt, previous if config.use_mask_prompt else None)


def _walk(
    embeddings: SliceEmbeddings,
    track: ObjectTrack,
    start: int,
    stop: int,
    direction: int,
    config: PropagationConfig,
    progress: Callable[[int], None] | None,
) -> None:
    """Propagate from ``start`` (already in ``track``) towards ``stop`` (inclusive) in ``direction``; up to
    ``config.bridge`` failed slices in a row are skipped (prompted from the last good slice) before it stops."""
    previous, last = track.masks[start], start
    for z in range(start + direction, stop + direction, direction):
        if not previous.any():
            return
        result = _step(embeddings, z, last, previous, track.object_id, config)
        overlap = iou(result.mask, previous)
        if progress is not None:
            progress(1)
        if not result.mask.any() or overlap < config.stop_iou:
            if abs(z - last) > config.bridge:
                logger.debug("object %d: propagation stops at z=%d (IoU %.2f)", track.object_id, z, overlap)
                return
            continue  # bridged: the gap is left for fill_gaps
        track.masks[z], track.scores[z], track.step_iou[z] = result.mask, result.score, overlap
        track.source[z] = "propagated"
        previous, last = result.mask, z


def propagate_object(
    embeddings: SliceEmbeddings,
    prompt: ObjectPrompt,
    config: PropagationConfig | None = None,
    *,
    z_range: tuple[int, int] | None = None,
    key_masks: Mapping[int, NDArray[np.bool_]] | None = None,
    progress: Callable[[int], None] | None = None,
) -> ObjectTrack:
    """Segment ``prompt`` (3D coordinates) on its key slices and propagate both ways (within ``z_range``, inclusive
    bounds; default the whole stack).

    ``key_masks`` (slice -> 2D mask) are key slices whose mask is known (accepted or corrected by hand): they are used
    as they are instead of being predicted from the prompts, and slices without prompts become key slices too."""
    config = config or PropagationConfig()
    known = {int(z): np.asarray(m, dtype=bool) for z, m in (key_masks or {}).items() if np.asarray(m).any()}
    keys = sorted(set(prompt.slices()) | set(known))
    if not keys:
        raise InvalidInputError(
            f"prompt {prompt.id}: propagation needs points, strokes or a box on at least one slice (text alone gives "
            "no slice)"
        )
    lo, hi = z_range if z_range is not None else (0, len(embeddings) - 1)
    if not 0 <= lo <= hi < len(embeddings):
        raise InvalidInputError(f"z_range: expected 0 <= first <= last < {len(embeddings)}, got {z_range}")
    track = ObjectTrack(prompt.id)
    for z in keys:
        if z in known:
            track.masks[z], track.scores[z] = known[z], 1.0
        else:
            result = embeddings.backend.predict(embeddings[z], prompt.on_slice(z))
            track.masks[z], track.scores[z] = result.mask, result.score
            if progress is not None:
                progress(1)
        track.source[z] = "key"
    inside = [z for z in keys if lo <= z <= hi]
    if not inside:
        return track
    _walk(embeddings, track, inside[0], lo, -1, config, progress)
    for a, b in zip(inside[:-1], inside[1:], strict=True):  # fill between key slices from both ends
        middle = (a + b) // 2
        _walk(embeddings, track, a, middle, +1, config, progress)
        _walk(embeddings, track, b, middle + 1, -1, config, progress)
    _walk(embeddings, track, inside[-1], hi, +1, config, progress)
    return track


def tracks_to_labels(tracks: Sequence[ObjectTrack], shape: tuple[int, int, int]) -> NDArray[np.uint32]:
    """A (Z, Y, X) label volume; where objects overlap, the earlier track keeps the pixel."""
    labels = np.zeros(shape, np.uint32)
    for track in tracks:
        for z, mask in track.masks.items():
            plane = labels[z]
            plane[mask & (plane == 0)] = track.object_id
    return labels
