"""The promptable-model protocol every interactive backend follows (rf, fm, sam, sam2).

A backend works on 2D slices. ``embed(slice, profile=None)`` does the expensive part once per slice (features, or the
image encoder) and returns an opaque embedding; ``predict(embedding, prompt, mask=None)`` turns the 2D prompts of one
object (points ``(y, x)``, box ``(y_min, x_min, y_max, x_max)``, optionally a mask prompt) into a :class:`PromptMask`.

Raw data stay raw until the backend: ``profile`` is the intensity window of the whole volume (computed once, e.g. with
:func:`fmscope.intensity.fit_profile`); without it a backend windows each slice by its own percentiles. A backend that
only understands 2D refuses a 3D array in ``embed`` and says to use propagation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from fmscope.errors import InvalidInputError
from fmscope.intensity import IntensityProfile, apply_profile, fit_profile
from fmscope.intensity.transforms import to_uint8_block
from fmscope.interactive.prompts import ObjectPrompt


@dataclass(frozen=True)
class PromptMask:
    """A mask for one object and its score in [0, 1] (backend-specific confidence; 0 for an empty mask)."""

    mask: NDArray[np.bool_]
    score: float
    info: dict[str, Any] = field(default_factory=dict, compare=False)


@runtime_checkable
class PromptableModel(Protocol):
    """``embed`` once per slice, ``predict`` once per object and prompt change."""

    name: str

    def embed(self, image: np.ndarray, profile: IntensityProfile | None = None) -> Any: ...

    def predict(self, embedding: Any, prompt: ObjectPrompt, mask: NDArray[np.bool_] | None = None) -> PromptMask: ...


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
