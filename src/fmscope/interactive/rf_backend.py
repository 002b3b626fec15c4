"""The weight-free promptable backend: a random-forest pixel classifier trained from the prompts of one object.

``embed`` computes once per 2D slice (windowed by a volume profile or the slice's own percentiles, so any bit depth
works) the multi-scale filter features, the gradient magnitude and Felzenszwalb superpixels. ``predict`` turns the
object's prompts into pixel labels and fits a forest on the cached features:

* a positive point labels a disk of ``point_radius`` pixels as the object, a negative point a disk as background.
  With ``superpixels`` (the default) the clicked superpixel (less its rim, which may have leaked across the edge)
  gets the same label when it is smaller than ``max_superpixel`` of the slice and holds no pixel already labelled
  the other way: a disk at a nucleus' centre teaches the forest what its centre looks like, the superpixel what the
  whole nucleus looks like;
* a box labels a band of ``box_margin`` pixels around it as background and a disk at its centre (a quarter of its
  smaller side) as the object, unless a negative click falls on that disk; the mask is kept inside the box (and
  predicted only there);
* without a box or mask prompt, the image border band (``box_margin`` wide) is background;
* a mask prompt (e.g. the previous slice's result during propagation) labels its core (pixels at least half its
  largest depth from its edge) as the object and a ring ``box_margin`` to ``2 * box_margin`` pixels outside it as
  background.

The mask is the forest's object probability above 0.5, reduced to the connected regions that hold a positive point
(or the box's centre guess, or the mask prompt's core; for a box whose guess was withdrawn, its largest region). Its
outline then snaps to the image's edges: pixels within ``snap_radius`` of it go to the object or the background by a
watershed of the gradient magnitude seeded with both (no click labels edge pixels, so the forest is unsure there).
With ``split_touching`` (instance mode, the default) and no box (a box already delimits the object), a kept region is
cut by a watershed of its distance transform (markers: maxima at least ``split_depth`` pixels above their saddle) and
only the basins holding a seed stay: one click gives the clicked nucleus, not the clump it touches. Semantic (phase)
prompting turns it off. The score is the mean probability inside the mask. Text needs a grounding model: refused.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage as ndi
from skimage.morphology import h_maxima
from skimage.segmentation import felzenszwalb, watershed

from fmscope.errors import InvalidInputError
from fmscope.intensity import IntensityProfile
from fmscope.interactive.prompts import ObjectPrompt
from fmscope.interactive.protocol import PromptMask, check_slice, window_slice
from fmscope.segment.pixel_classifier import PixelClassifier, PixelClassifierConfig, pixel_features

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SliceEmbedding:
    """Cached features ``(Y, X, F)`` of one 2D slice, its gradient magnitude and superpixels (``None`` when off)."""

    features: NDArray[np.float32]
    superpixels: NDArray[np.int64] | None = None
    gradient: NDArray[np.float32] | None = None

    @property
    def shape(self) -> tuple[int, int]:
        """The slice's (Y, X) shape."""
        return (int(self.features.shape[0]), int(self.features.shape[1]))


def _box_window(box: tuple[float, ...] | None) -> tuple[slice, slice]:
    """The pixels of a 2D box (pixel-edge corners), or the whole slice."""
    if box is None:
        return (slice(None), slice(None))
    y0, x0, y1, x1 = (round(v) for v in box)
    return (slice(max(y0, 0), y1), slice(max(x0, 0), x1))


class RandomForestPrompter:
    """Promptable segmentation without weights (see the module doc)."""

    name = "rf"
    superpixel_scale = 100.0  # Felzenszwalb scale and smoothing of the superpixels
    superpixel_sigma = 1.0

    def __init__(
        self,
        config: PixelClassifierConfig | None = None,
        *,
        point_radius: int = 3,
        box_margin: int = 8,
        split_touching: bool = True,
        split_depth: int = 2,
        superpixels: bool = True,
        max_superpixel: float = 0.25,
        snap_radius: int = 4,
    ) -> None:
        """Forest settings (default: 50 trees, 5000 pixels per class) and the prompt-to-label geometry."""
        self.config = config or PixelClassifierConfig(n_estimators=50, max_samples_per_class=5000)
        for name, value, low in (
            ("point_radius", point_radius, 1),
            ("box_margin", box_margin, 1),
            ("split_depth", split_depth, 1),
            ("snap_radius", snap_radius, 0),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise InvalidInputError(f"{name}: expected an integer >= {low}, got {value!r}")
        self.snap_radius = snap_radius
        self.point_radius, self.box_margin = point_radius, box_margin
        self.split_touching, self.split_depth = split_touching, split_depth
        if not 0.0 < max_superpixel <= 1.0:
            raise InvalidInputError(f"max_superpixel: expected a fraction in (0, 1], got {max_superpixel}")
        self.superpixels, self.max_superpixel = superpixels, max_superpixel

    def embed(self, image: np.ndarray, profile: IntensityProfile | None = None) -> SliceEmbedding:
        """Features of a 2D slice of any dtype, windowed to [0, 1] by ``profile`` (default: the slice's 1st/99.8th
        percentiles)."""
        window = np.asarray(window_slice(check_slice(image, f"the {self.name} backend"), profile)[0], np.float32)
        segments = (
            felzenszwalb(window, scale=self.superpixel_scale, sigma=self.superpixel_sigma, min_size=20)
            if self.superpixels
            else None
        )
        gradient = np.asarray(ndi.gaussian_gradient_magnitude(window, 2.0), np.float32)
        return SliceEmbedding(self.features(window), segments, gradient)

    def features(self, window: NDArray[np.float32]) -> NDArray[np.float32]:
        """``(Y, X, F)`` features of a windowed slice: the multi-scale filter bank."""
        return pixel_features(window, self.config)

    def _labels(
        self, prompt: ObjectPrompt, embedding: SliceEmbedding, mask: NDArray[np.bool_] | None
    ) -> tuple[NDArray[np.int64], NDArray[np.bool_]]:
        shape = embedding.shape
        labels = np.full(shape, -1, dtype=np.int64)
        yy, xx = np.ogrid[: shape[0], : shape[1]]
        seeds = [(round(y), round(x)) for y, x in prompt.positive]
        seed_mask = np.zeros(shape, bool)
        m = self.box_margin
        if mask is not None:
            near = ndi.binary_dilation(mask, iterations=m)
            labels[ndi.binary_dilation(near, iterations=m) & ~near] = 0
            depth = ndi.distance_transform_edt(mask)
            core = depth >= depth.max() / 2  # the object may shrink on this slice: only its core is sure
            labels[core] = 1
            seed_mask |= core
        if prompt.box is not None:
            y0, x0, y1, x1 = prompt.box
            outer = (yy >= y0 - m) & (yy < y1 + m) & (xx >= x0 - m) & (xx < x1 + m)
            inner = (yy >= y0) & (yy < y1) & (xx >= x0) & (xx < x1)
            labels[outer & ~inner] = 0
            cy, cx = (y0 + y1 - 1) / 2, (x0 + x1 - 1) / 2
            radius = max(1.0, min(y1 - y0, x1 - x0) / 4)
            centre = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
            # a guess (a curved object may miss its box's centre): a negative click on it withdraws it
            if mask is None and not any(centre[min(round(y), shape[0] - 1), min(round(x), shape[1] - 1)]
                                        for y, x in prompt.negative):  # fmt: skip
                labels[centre] = 1
                seed_mask |= centre
        elif mask is None:  # no box: the image border band is background too (objects rarely fill the border)
            border = np.ones(shape, bool)
            border[m:-m, m:-m] = False
            labels[border] = 0
        if embedding.superpixels is not None:
            sizes = np.bincount(embedding.superpixels.ravel())
            for points, value in ((prompt.negative, 0), (prompt.positive, 1)):
                for y, x in points:
                    k = embedding.superpixels[min(round(y), shape[0] - 1), min(round(x), shape[1] - 1)]
                    segment = embedding.superpixels == k
                    if sizes[k] <= self.max_superpixel * labels.size and not (labels[segment] == 1 - value).any():
                        core = ndi.binary_erosion(segment)  # its rim may have leaked across the edge
                        labels[core if core.any() else segment] = value
        for points, value in ((prompt.negative, 0), (prompt.positive, 1)):
            for y, x in points:
                labels[(yy - y) ** 2 + (xx - x) ** 2 <= self.point_radius**2] = value
        for y, x in seeds:
            seed_mask[min(max(y, 0), shape[0] - 1), min(max(x, 0), shape[1] - 1)] = True
        return labels, seed_mask

    def _snap(
        self,
        mask: NDArray[np.bool_],
        gradient: NDArray[np.float32],
        background: NDArray[np.bool_],
        window: tuple[slice, slice],
    ) -> NDArray[np.bool_]:
        """Give the pixels within ``snap_radius`` of ``mask`` to whichever seed reaches them first across the
        gradient (object: the mask; background: everything farther away and the pixels labelled background)."""
        near = ndi.binary_dilation(mask, iterations=self.snap_radius)
        markers = np.zeros(mask.shape, np.int32)
        markers[~near | background] = 1
        markers[mask & ~background] = 2
        inside = np.zeros_like(mask)
        inside[window] = True
        snapped = watershed(gradient, markers) == 2
        return snapped & inside

    def _split(self, mask: NDArray[np.bool_], seeds: NDArray[np.bool_]) -> NDArray[np.bool_]:
        """The watershed basins of ``mask`` (distance transform, h-maxima markers) that hold a seed."""
        distance = ndi.distance_transform_edt(mask)
        markers, n = ndi.label(h_maxima(distance, self.split_depth))
        if n < 2:
            return mask
        basins = watershed(-distance, markers, mask=mask)
        keep = np.unique(basins[seeds & mask])
        return np.isin(basins, keep[keep > 0])

    def predict(
        self, embedding: SliceEmbedding, prompt: ObjectPrompt, mask: NDArray[np.bool_] | None = None
    ) -> PromptMask:
        """The mask of the object described by the 2D ``prompt`` (points (y, x), box (y0, x0, y1, x1)) and/or a mask
        prompt of the slice's shape."""
        if prompt.text is not None and not prompt.positive and prompt.box is None:
            raise InvalidInputError(
                f"prompt {prompt.id}: a text prompt needs a grounding model (text -> boxes); the rf backend takes "
                "points and boxes"
            )
        if mask is not None:
            mask = np.asarray(mask, dtype=bool)
            if mask.shape != embedding.shape:
                raise InvalidInputError(f"mask: expected shape {embedding.shape}, got {mask.shape}")
            if not mask.any():
                mask = None
        if not prompt.positive and prompt.box is None and mask is None:
            raise InvalidInputError(f"prompt {prompt.id}: needs a positive point, a box or a mask on this slice")
        labels, seeds = self._labels(prompt, embedding, mask)
        if not (labels == 0).any():
            raise InvalidInputError(f"prompt {prompt.id}: no background pixels (add a negative point or a box)")
        forest = PixelClassifier(self.config).fit_features([embedding.features], [labels])
        proba = np.zeros(embedding.shape, np.float32)
        window = _box_window(prompt.box)  # the mask stays inside the box: predict only there
        proba[window] = forest.predict_proba_features(embedding.features[window])[1]
        out = proba > 0.5
        regions, n = ndi.label(out)
        if seeds.any():
            keep = np.unique(regions[seeds])
        else:  # a box whose centre guess was withdrawn: its largest region
            keep = np.array([1 + int(np.argmax(np.bincount(regions.ravel())[1:]))]) if n else np.array([0])
        out = np.isin(regions, keep[keep > 0])
        if self.snap_radius and embedding.gradient is not None and out.any():
            out = self._snap(out, embedding.gradient, labels == 0, window)
        if self.split_touching and prompt.box is None and seeds.any() and out.any():  # a box delimits the object
            out = self._split(out, seeds)
        return self._result(out, proba, prompt.id)

    def _result(self, out: NDArray[np.bool_], proba: NDArray[np.float32], object_id: int) -> PromptMask:
        score = float(proba[out].mean()) if out.any() else 0.0
        logger.debug("rf object %d: %d pixels, score %.3f", object_id, int(out.sum()), score)
        return PromptMask(out, score)

    def transfer(
        self,
        previous: SliceEmbedding,
        previous_mask: NDArray[np.bool_],
        embedding: SliceEmbedding,
        prompt: ObjectPrompt,
    ) -> PromptMask:
        """One propagation step: a forest trained on the *previous* slice classifies this slice inside ``prompt.box``.

        There, the mask eroded by a pixel is the object, and a ring from 2 pixels outside it, as wide as the object's
        radius and at least ``2 * box_margin``, is background: local, so that other objects of the same kind elsewhere
        are not taught as background. The regions touching the previous mask are kept and snapped to edges. The
        appearance comes from a slice whose labels are known, so a mask that has run off the object's end finds
        nothing here (propagation stops) instead of labelling whatever lies under the old mask as the object.
        """
        if previous_mask.shape != embedding.shape or previous.shape != embedding.shape:
            raise InvalidInputError(f"previous_mask: expected shape {embedding.shape}, got {previous_mask.shape}")
        labels = np.full(embedding.shape, -1, np.int64)
        near = ndi.binary_dilation(previous_mask, iterations=2)
        width = max(2 * self.box_margin, round(float(np.sqrt(previous_mask.sum() / np.pi))))  # object-sized context
        labels[ndi.binary_dilation(near, iterations=width) & ~near] = 0
        core = ndi.binary_erosion(previous_mask)
        labels[core if core.any() else previous_mask] = 1
        forest = PixelClassifier(self.config).fit_features([previous.features], [labels])
        window = _box_window(prompt.box)
        proba = np.zeros(embedding.shape, np.float32)
        proba[window] = forest.predict_proba_features(embedding.features[window])[1]
        regions, _ = ndi.label(proba > 0.5)
        keep = np.unique(regions[ndi.binary_dilation(previous_mask, iterations=2)])
        out = np.isin(regions, keep[keep > 0])
        if self.snap_radius and embedding.gradient is not None and out.any():
            outside = np.ones(embedding.shape, bool)
            outside[window] = False
            out = self._snap(out, embedding.gradient, outside, window)
        return self._result(out, proba, prompt.id)
