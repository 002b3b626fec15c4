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

from fmscope.intensity import IntensityProfile
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
