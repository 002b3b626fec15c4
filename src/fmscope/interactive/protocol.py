"""The promptable-model protocol every interactive backend follows (rf, fm, sam, sam2).

A backend works on 2D slices. ``embed(slice, profile=None)`` does the expensive part once per slice (features, or the
image encoder) and returns an opaque embedding; ``predict(embedding, prompt, mask=None)`` turns the 2D prompts of one
object (points ``(y, x)``, box ``(y_min, x_min, y_max, x_max)``, strokes, optionally a mask prompt) into a
:class:`PromptMask`. ``signature()`` says what an embedding depends on (backend, model, weights file, settings): the
embedding cache refuses embeddings made under another signature.

Optional abilities are declared by the methods a backend has, each a runtime-checkable protocol, so callers ask
``isinstance(backend, SupportsTransfer)`` instead of sniffing attributes (:func:`abilities` lists them by name):

* :class:`SupportsTransfer` (``transfer``): one propagation step that learns the object on the previous slice and finds
  it on the next (the forest backends);
* :class:`SupportsAutomatic` (``automatic``): segment everything on a slice (SAM);
* :class:`SupportsVideo` (``propagate_video``): its own tracker through a stack (SAM2's video predictor);
* :class:`SupportsPhases` (``fit_phases`` / ``predict_phases``): semantic (phase) segmentation, every phase learnt at
  once from the prompts of all phases (the forest backends, ilastik style).

Raw data stay raw until the backend: ``profile`` is the intensity window of the whole volume (computed once, e.g. with
:func:`fmscope.intensity.fit_profile`); without it a backend windows each slice by its own percentiles. A backend that
only understands 2D refuses a 3D array in ``embed`` and says to use propagation.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from fmscope.errors import InvalidInputError
from fmscope.intensity import IntensityProfile, apply_profile, fit_profile
from fmscope.intensity.transforms import to_uint8_block
from fmscope.interactive.prompts import ObjectPrompt
from fmscope.utils.progress import ProgressCallback


@dataclass(frozen=True)
class PromptMask:
    """A mask for one object and its score in [0, 1] (backend-specific confidence; 0 for an empty mask)."""

    mask: NDArray[np.bool_]
    score: float
    info: dict[str, Any] = field(default_factory=dict, compare=False)


@runtime_checkable
class PromptableModel(Protocol):
    """``embed`` once per slice, ``predict`` once per object and prompt change; ``signature`` for caches."""

    name: str

    def signature(self) -> dict[str, Any]: ...

    def embed(self, image: np.ndarray, profile: IntensityProfile | None = None) -> Any: ...

    def predict(self, embedding: Any, prompt: ObjectPrompt, mask: NDArray[np.bool_] | None = None) -> PromptMask: ...


@runtime_checkable
class SupportsTransfer(Protocol):
    """A propagation step from the previous slice (known mask) to this one (``prompt``: the projected box/point)."""

    def transfer(
        self, previous: Any, previous_mask: NDArray[np.bool_], embedding: Any, prompt: ObjectPrompt
    ) -> PromptMask: ...


@runtime_checkable
class SupportsAutomatic(Protocol):
    """Segment everything on one slice: a ``(Y, X)`` label image (0 = background)."""

    def automatic(self, embedding: Any, **options: Any) -> NDArray[np.integer]: ...


@runtime_checkable
class SupportsVideo(Protocol):
    """The backend's own tracker through a ``(Z, Y, X)`` stack: labels ``(Z, Y, X)``, object ids as values."""

    def propagate_video(
        self,
        volume: np.ndarray,
        key_slice: int,
        prompts: Sequence[ObjectPrompt],
        profile: IntensityProfile | None = None,
        *,
        progress: ProgressCallback | bool | None = None,
    ) -> NDArray[np.integer]: ...


@runtime_checkable
class SupportsPhases(Protocol):
    """Semantic segmentation: ``fit_phases`` learns every phase at once from labelled pixels of one or more slices
    (``(embedding, labels)`` pairs, labels ``-1`` unlabelled, ``0`` the background / other phase, ``k`` phase k);
    ``predict_phases`` gives the class map ``(Y, X)`` of a slice."""

    def fit_phases(self, samples: Sequence[tuple[Any, NDArray[np.integer]]]) -> Any: ...

    def predict_phases(self, model: Any, embedding: Any) -> NDArray[np.integer]: ...

    def phase_labels(
        self, embedding: Any, prompts: Sequence[ObjectPrompt], classes: Sequence[int]
    ) -> NDArray[np.int64]: ...


ABILITIES: dict[str, type] = {
    "transfer": SupportsTransfer,
    "automatic": SupportsAutomatic,
    "video": SupportsVideo,
    "phases": SupportsPhases,
}


def abilities(backend: Any) -> tuple[str, ...]:
    """The optional abilities of ``backend`` (names of :data:`ABILITIES` it implements)."""
    return tuple(name for name, proto in ABILITIES.items() if isinstance(backend, proto))


def file_stamp(path: str | os.PathLike[str]) -> dict[str, Any]:
    """What a weights file or model folder is, for a signature: its resolved path and size and time (a folder: its
    files' sizes)."""
    p = Path(path)
    if not p.exists():
        return {"path": str(p)}
    if p.is_dir():
        files = {f.name: f.stat().st_size for f in sorted(p.iterdir()) if f.is_file()}
        return {"path": str(p.resolve()), "files": files}
    stat = p.stat()
    return {"path": str(p.resolve()), "size": stat.st_size, "mtime": int(stat.st_mtime)}


def check_slice(image: Any, backend: str) -> np.ndarray:
    """``image`` as a 2D numpy array; a 3D stack is refused with a pointer to propagation."""
    arr = np.asarray(image)
    if arr.ndim == 3:
        raise InvalidInputError(
            f"image: shape {arr.shape} is 3D; {backend} segments 2D slices, use propagation for stacks"
        )
    if arr.ndim != 2 or arr.size == 0:
        raise InvalidInputError(f"image: expected a non-empty 2D slice (Y, X), got shape {arr.shape}")
    return arr


def window_slice(image: np.ndarray, profile: IntensityProfile | None = None) -> tuple[np.ndarray, IntensityProfile]:
    """A raw 2D slice windowed by ``profile`` (default: fitted to the slice, 1st/99.8th percentiles) and the profile
    used: what every backend does with raw data before its own input transform."""
    profile = profile or fit_profile(image, low_percentile=1.0, high_percentile=99.8)
    return np.asarray(apply_profile(image, profile)), profile


def rgb8(window: np.ndarray) -> NDArray[np.uint8]:
    """``(Y, X, 3)`` uint8 from a windowed slice (uint8, or floats in [0, 1])."""
    if window.dtype != np.uint8:
        window = to_uint8_block(np.clip(window, 0.0, 1.0))
    return np.ascontiguousarray(np.repeat(window[:, :, None], 3, axis=2))
