"""The weight-free promptable backend: a random-forest pixel classifier trained from the prompts of one object.

``embed`` computes the multi-scale filter features of a 2D slice once (windowed by its own percentiles, so any bit
depth works); ``predict`` turns the object's prompts into pixel labels and fits a forest on the cached features:

* a positive point labels a disk of ``point_radius`` pixels as the object, a negative point a disk as background;
* a box labels a band of ``box_margin`` pixels around it as background, and, without positive points, a disk at its
  centre (a fifth of its smaller side) as the object; the mask is kept inside the box;
* without a box, the image border band (``box_margin`` wide) is background too.

The mask is the forest's object probability above 0.5, reduced to the connected regions that hold a positive point
(or the box centre); its score is the mean probability inside it. Text needs a grounding model: refused here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage as ndi

from fmscope.errors import InvalidInputError
from fmscope.intensity import IntensityProfile, apply_profile, fit_profile
from fmscope.interactive.prompts import ObjectPrompt
from fmscope.interactive.protocol import PromptMask
from fmscope.segment.pixel_classifier import PixelClassifier, PixelClassifierConfig, pixel_features

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SliceEmbedding:
    """Cached features ``(Y, X, F)`` of one 2D slice."""

    features: NDArray[np.float32]

    @property
    def shape(self) -> tuple[int, int]:
        """The slice's (Y, X) shape."""
        return (int(self.features.shape[0]), int(self.features.shape[1]))


class RandomForestPrompter:
    """Promptable segmentation without weights (see the module doc)."""

    name = "rf"

    def __init__(
        self, config: PixelClassifierConfig | None = None, *, point_radius: int = 3, box_margin: int = 8
    ) -> None:
        """Forest settings (default: 50 trees, 5000 pixels per class) and the prompt-to-label geometry."""
        self.config = config or PixelClassifierConfig(n_estimators=50, max_samples_per_class=5000)
        for name, value in (("point_radius", point_radius), ("box_margin", box_margin)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInputError(f"{name}: expected an integer >= 1, got {value!r}")
        self.point_radius, self.box_margin = point_radius, box_margin

    def embed(self, image: np.ndarray, profile: IntensityProfile | None = None) -> SliceEmbedding:
        """Features of a 2D slice of any dtype, windowed to [0, 1] by ``profile`` (default: the slice's 1st/99.8th
        percentiles)."""
        arr = np.asarray(image)
        if arr.ndim != 2:
            raise InvalidInputError(
                f"image: the rf backend embeds 2D slices, got shape {arr.shape}; use propagation for stacks"
            )
        window = apply_profile(arr, profile or fit_profile(arr, low_percentile=1.0, high_percentile=99.8))
        return SliceEmbedding(pixel_features(np.asarray(window, dtype=np.float32), self.config))

    def _labels(self, prompt: ObjectPrompt, shape: tuple[int, int]) -> tuple[NDArray[np.int64], list[tuple[int, int]]]:
        labels = np.full(shape, -1, dtype=np.int64)
        yy, xx = np.ogrid[: shape[0], : shape[1]]
        seeds = [(round(y), round(x)) for y, x in prompt.positive]
        m = self.box_margin
        if prompt.box is not None:
            y0, x0, y1, x1 = prompt.box
            outer = (yy >= y0 - m) & (yy < y1 + m) & (xx >= x0 - m) & (xx < x1 + m)
            inner = (yy >= y0) & (yy < y1) & (xx >= x0) & (xx < x1)
            labels[outer & ~inner] = 0
            if not seeds:
                seeds = [(round((y0 + y1 - 1) / 2), round((x0 + x1 - 1) / 2))]
                radius = max(1.0, min(y1 - y0, x1 - x0) / 5)
                labels[(yy - seeds[0][0]) ** 2 + (xx - seeds[0][1]) ** 2 <= radius**2] = 1
        else:  # no box: the image border band is background too (objects rarely fill the border)
            border = np.ones(shape, bool)
            border[m:-m, m:-m] = False
            labels[border] = 0
        for points, value in ((prompt.negative, 0), (prompt.positive, 1)):
            for y, x in points:
                labels[(yy - y) ** 2 + (xx - x) ** 2 <= self.point_radius**2] = value
        return labels, seeds

    def predict(self, embedding: SliceEmbedding, prompt: ObjectPrompt) -> PromptMask:
        """The mask of the object described by the 2D ``prompt`` (points (y, x), box (y0, x0, y1, x1))."""
        if prompt.text is not None and not prompt.positive and prompt.box is None:
            raise InvalidInputError(
                f"prompt {prompt.id}: a text prompt needs a grounding model (text -> boxes); the rf backend takes "
                "points and boxes"
            )
        if not prompt.positive and prompt.box is None:
            raise InvalidInputError(f"prompt {prompt.id}: needs a positive point or a box on this slice")
        labels, seeds = self._labels(prompt, embedding.shape)
        if not (labels == 0).any():
            raise InvalidInputError(f"prompt {prompt.id}: no background pixels (add a negative point or a box)")
        forest = PixelClassifier(self.config).fit_features([embedding.features], [labels])
        proba = forest.predict_proba_features(embedding.features)[1]
        mask = proba > 0.5
        if prompt.box is not None:
            y0, x0, y1, x1 = (round(v) for v in prompt.box)
            inside = np.zeros_like(mask)
            inside[y0:y1, x0:x1] = True
            mask &= inside
        regions, _ = ndi.label(mask)
        keep = {int(regions[y, x]) for y, x in seeds} - {0}
        mask = np.isin(regions, sorted(keep)) if keep else np.zeros_like(mask)
        score = float(proba[mask].mean()) if mask.any() else 0.0
        logger.debug("rf prompt %d: %d pixels, score %.3f", prompt.id, int(mask.sum()), score)
        return PromptMask(mask, score)
