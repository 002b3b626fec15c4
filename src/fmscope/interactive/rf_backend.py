"""The weight-free promptable backend: a random-forest pixel classifier trained from the prompts of one object.

``embed`` computes once per 2D slice (windowed by a volume profile or the slice's own percentiles, so any bit depth
works) the multi-scale filter features, the gradient magnitude and Felzenszwalb superpixels. ``predict`` turns the
object's prompts into pixel labels and fits a forest on the cached features:

* a positive point labels a disk of ``point_radius`` pixels as the object, a negative point a disk as background.
  With ``superpixels`` (the default) the clicked superpixel (less its rim, which may have leaked across the edge)
  gets the same label when it is smaller than ``max_superpixel`` of the slice and holds no pixel already labelled
  the other way: a disk at a nucleus' centre teaches the forest what its centre looks like, the superpixel what the
  whole nucleus looks like. A superpixel clicked both ways (it leaked across the object's edge) is shared between
  its clicks, so that a correction never turns what an earlier click taught into its opposite;
* a box labels a band of ``box_margin`` pixels around it as background and a disk at its centre (a quarter of its
  smaller side) as the object, unless a negative click falls on that disk (the guess withdrawn: then, without a
  positive click or stroke, a sparse grid over the rest of the box is the object's weak label); the mask is kept
  inside the box (and predicted only there);
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

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage as ndi
from skimage.morphology import h_maxima
from skimage.segmentation import felzenszwalb, watershed

from fmscope.errors import InvalidInputError
from fmscope.intensity import IntensityProfile
from fmscope.interactive import phases, raster
from fmscope.interactive.prompts import ObjectPrompt
from fmscope.interactive.protocol import PromptMask, check_slice, window_slice
from fmscope.interactive.superpixels import label_superpixels
from fmscope.segment.pixel_classifier import PixelClassifier, PixelClassifierConfig, pixel_features

logger = logging.getLogger(__name__)


# Refitted at every click, so it must fit and classify in tens of milliseconds: 32 extremely randomised trees on
# 3000 labelled pixels per class, half the features tried per split. Measured with benchmarks/interactive_clicks.py
# against the earlier 50-tree random forest on 5000 pixels per class: higher IoU after 1, 3 and 5 clicks on DSB nuclei
# and TiO2 particles, about 4x faster (README, "the weight-free backend").
INTERACTIVE_FOREST = PixelClassifierConfig(
    forest="extra", n_estimators=32, max_samples_per_class=3000, max_features=0.5
)


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


def _kept_regions(proba: NDArray[np.float32], seeds: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """The regions of ``proba > 0.5`` that hold a seed (without seeds: the largest region)."""
    regions, n = ndi.label(proba > 0.5)
    if seeds.any():
        keep = np.unique(regions[seeds])
    else:  # a box whose centre guess was withdrawn: its largest region
        keep = np.array([1 + int(np.argmax(np.bincount(regions.ravel())[1:]))]) if n else np.array([0])
    return np.isin(regions, keep[keep > 0])


def _gradient(window: NDArray[np.float32]) -> NDArray[np.float32]:
    return np.asarray(ndi.gaussian_gradient_magnitude(window, 2.0), np.float32)


def _ring(outer: raster.Window, inner: raster.Window) -> list[raster.Window]:
    """The pixels of ``outer`` outside ``inner`` (which it contains) as up to four rectangles."""
    (oy, ox), (iy, ix) = outer, inner
    bands = [
        (slice(oy.start, iy.start), ox),
        (slice(iy.stop, oy.stop), ox),
        (iy, slice(ox.start, ix.start)),
        (iy, slice(ix.stop, ox.stop)),
    ]
    return [b for b in bands if b[0].stop > b[0].start and b[1].stop > b[1].start]


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
    search_margin = 32  # pixels around the seeds classified first (the window grows while the object reaches its edge)
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
        """Forest settings (default :data:`INTERACTIVE_FOREST`) and the prompt-to-label geometry."""
        self.config = config or INTERACTIVE_FOREST
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

    def signature(self) -> dict[str, Any]:
        """What an embedding depends on: the feature settings and the superpixels."""
        features = {k: getattr(self.config, k) for k in ("sigmas", "intensity", "edges", "texture")}
        superpixels = (self.superpixel_scale, self.superpixel_sigma) if self.superpixels else None
        return {"features": {**features, "sigmas": list(self.config.sigmas)}, "superpixels": superpixels}

    def embed(self, image: np.ndarray, profile: IntensityProfile | None = None) -> SliceEmbedding:
        """Features of a 2D slice of any dtype, windowed to [0, 1] by ``profile`` (default: the slice's 1st/99.8th
        percentiles)."""
        window = self._window(image, profile)
        segments = (
            felzenszwalb(window, scale=self.superpixel_scale, sigma=self.superpixel_sigma, min_size=20)
            if self.superpixels
            else None
        )
        return SliceEmbedding(self.features(window), segments, _gradient(window))

    def _window(self, image: np.ndarray, profile: IntensityProfile | None) -> NDArray[np.float32]:
        return np.asarray(window_slice(check_slice(image, f"the {self.name} backend"), profile)[0], np.float32)

    def recomputed_fields(self, embedding: Any) -> tuple[str, ...]:
        """Fields the embedding cache does not store but recomputes on read: the filter bank and the gradient (~95 %
        of the bytes, ~20 % of the time); the superpixels (the slow part) are stored. Learned features (the fm
        backend) are stored."""
        plain = type(self).features is RandomForestPrompter.features
        return ("features", "gradient") if plain and isinstance(embedding, SliceEmbedding) else ()

    def complete_embedding(
        self, image: np.ndarray, profile: IntensityProfile | None, embedding: SliceEmbedding
    ) -> SliceEmbedding:
        """``embedding`` read from a cache with its recomputed fields filled in from the raw slice."""
        window = self._window(image, profile)
        return dataclasses.replace(embedding, features=self.features(window), gradient=_gradient(window))

    def features(self, window: NDArray[np.float32]) -> NDArray[np.float32]:
        """``(Y, X, F)`` features of a windowed slice: the multi-scale filter bank."""
        return pixel_features(window, self.config)

    def _labels(
        self, prompt: ObjectPrompt, embedding: SliceEmbedding, mask: NDArray[np.bool_] | None
    ) -> tuple[NDArray[np.int64], NDArray[np.bool_]]:
        """Pixel labels (-1 unlabelled, 0 background, 1 object) of one object's 2D prompts and the seed pixels (the
        object's sure pixels: clicks, positive strokes, the box's centre guess, the mask prompt's core)."""
        shape = embedding.shape
        labels = np.full(shape, -1, dtype=np.int64)
        seed_mask = np.zeros(shape, bool)
        weak: NDArray[np.bool_] | None = None  # the box less its withdrawn centre guess
        m = self.box_margin
        if mask is not None:
            win = raster.bbox(mask, 2 * m + 1)
            local = mask[win]
            near = ndi.binary_dilation(local, iterations=m)
            labels[win][ndi.binary_dilation(near, iterations=m) & ~near] = 0
            depth = ndi.distance_transform_edt(local)
            core = depth >= depth.max() / 2  # the object may shrink on this slice: only its core is sure
            labels[win][core] = 1
            seed_mask[win] |= core
        if prompt.box is not None:
            y0, x0, y1, x1 = prompt.box
            inner = raster.clip_window(y0, x0, y1, x1, shape)
            kept = labels[inner].copy()
            labels[raster.clip_window(y0 - m, x0 - m, y1 + m, x1 + m, shape)] = 0  # a background band around the box
            labels[inner] = kept
            cy, cx = (y0 + y1 - 1) / 2, (x0 + x1 - 1) / 2
            win, centre = raster.disk(cy, cx, max(1.0, min(y1 - y0, x1 - x0) / 4), shape)
            # a guess (a curved object may miss its box's centre): a negative click on it withdraws it
            withdrawn = any(
                win[0].start <= round(y) < win[0].stop
                and win[1].start <= round(x) < win[1].stop
                and centre[round(y) - win[0].start, round(x) - win[1].start]
                for y, x in prompt.negative
            )
            if mask is None and not withdrawn:
                labels[win][centre] = 1
                seed_mask[win] |= centre
            elif mask is None:
                step = max(1, min(m, round(min(y1 - y0, x1 - x0)) // 4))
                weak = np.zeros(shape, bool)
                weak[
                    inner[0].start + step // 2 : inner[0].stop : step, inner[1].start + step // 2 : inner[1].stop : step
                ] = True
                weak[win] &= ~centre
        elif mask is None:  # no box: the image border band is background too (objects rarely fill the border)
            labels[:m], labels[-m:], labels[:, :m], labels[:, -m:] = 0, 0, 0, 0
        if embedding.superpixels is not None:
            label_superpixels(labels, prompt, embedding, self.max_superpixel, self.point_radius)
        if weak is not None and not prompt.positive and not any(st.positive for st in prompt.strokes):
            # the guess withdrawn and nothing else says where the object is: the rest of the box is the object's weak
            # label, on a sparse grid of the pixels no click has labelled. The box holds mostly its object, and the
            # background pixels among so few are outnumbered by the band around the box: the forest gives what looks
            # like the band to the background (labelling every pixel, it would learn the box back)
            labels[weak & (labels == -1)] = 1
        for stroke in sorted(prompt.strokes, key=lambda s: s.positive):  # positive strokes win where they cross
            win, pixels = raster.stroke_pixels(stroke, shape)
            labels[win][pixels] = int(stroke.positive)
            if stroke.positive:
                seed_mask[win] |= pixels
        for points, value in ((prompt.negative, 0), (prompt.positive, 1)):
            for y, x in points:
                win, pixels = raster.disk(y, x, self.point_radius, shape)
                labels[win][pixels] = value
        for y, x in prompt.positive:
            seed_mask[min(max(round(y), 0), shape[0] - 1), min(max(round(x), 0), shape[1] - 1)] = True
        return labels, seed_mask

    def _snap(
        self,
        mask: NDArray[np.bool_],
        gradient: NDArray[np.float32],
        background: NDArray[np.bool_],
        window: tuple[slice, slice],
    ) -> NDArray[np.bool_]:
        """Give the pixels within ``snap_radius`` of ``mask`` to whichever seed reaches them first across the
        gradient (object: the mask; background: everything farther away and the pixels labelled background), inside
        ``window``. Computed on the mask's bounding box enlarged by the radius: every pixel beyond it is a background
        seed, so the flooding of the pixels near the mask is the same as on the whole slice."""
        crop = raster.bbox(mask, self.snap_radius + 2)
        if crop is None:
            return mask
        local = mask[crop]
        near = ndi.binary_dilation(local, iterations=self.snap_radius)
        markers = np.zeros(local.shape, np.int32)
        markers[~near | background[crop]] = 1
        markers[local & ~background[crop]] = 2
        inside = np.zeros(mask.shape, bool)
        inside[window] = True
        return raster.paste(crop, (watershed(gradient[crop], markers) == 2) & inside[crop], mask.shape)

    def _split(self, mask: NDArray[np.bool_], seeds: NDArray[np.bool_]) -> NDArray[np.bool_]:
        """The watershed basins of ``mask`` (distance transform, h-maxima markers) that hold a seed; computed on the
        mask's bounding box with a one-pixel background rim (the same distances as on the whole slice)."""
        crop = raster.bbox(mask, 1)
        if crop is None:
            return mask
        local = mask[crop]
        distance = ndi.distance_transform_edt(local)
        markers, n = ndi.label(h_maxima(distance, self.split_depth))
        if n < 2:
            return mask
        basins = watershed(-distance, markers, mask=local)
        keep = np.unique(basins[seeds[crop] & local])
        return raster.paste(crop, np.isin(basins, keep[keep > 0]), mask.shape)

    def _classify(
        self, forest: PixelClassifier, embedding: SliceEmbedding, window: raster.Window, seeds: NDArray[np.bool_]
    ) -> tuple[NDArray[np.bool_], NDArray[np.float32]]:
        """Object probability in ``window`` and the regions above 0.5 that hold a seed (or, without seeds, the
        largest region), both in window coordinates."""
        proba = forest.predict_proba_features(embedding.features[window])[1]
        return _kept_regions(proba, seeds[window]), proba

    def _grow(
        self, forest: PixelClassifier, embedding: SliceEmbedding, start: raster.Window, seeds: NDArray[np.bool_]
    ) -> tuple[NDArray[np.bool_], NDArray[np.float32], raster.Window]:
        """Classify a window around the seeds, enlarged until the kept regions no longer touch its edge (or it is
        the whole slice): the regions found are then the ones the whole slice would give, at a fraction of the
        cost. Each enlargement classifies only the pixels it adds."""
        shape = embedding.shape
        window = start
        proba = forest.predict_proba_features(embedding.features[window])[1]
        while True:
            local = _kept_regions(proba, seeds[window])
            (ys, xs), (h, w) = window, shape
            touches = (
                (ys.start > 0 and local[0].any())
                or (ys.stop < h and local[-1].any())
                or (xs.start > 0 and local[:, 0].any())
                or (xs.stop < w and local[:, -1].any())
            )
            if not touches:
                return local, proba, window
            dy, dx = ys.stop - ys.start, xs.stop - xs.start
            grown = raster.clip_window(ys.start - dy, xs.start - dx, ys.stop + dy, xs.stop + dx, shape)
            larger = np.zeros((grown[0].stop - grown[0].start, grown[1].stop - grown[1].start), np.float32)
            inner = (slice(ys.start - grown[0].start, ys.stop - grown[0].start),
                     slice(xs.start - grown[1].start, xs.stop - grown[1].start))  # fmt: skip
            larger[inner] = proba
            for band in _ring(grown, window):  # only the pixels the larger window adds
                local_band = (slice(band[0].start - grown[0].start, band[0].stop - grown[0].start),
                              slice(band[1].start - grown[1].start, band[1].stop - grown[1].start))  # fmt: skip
                larger[local_band] = forest.predict_proba_features(embedding.features[band])[1]
            proba, window = larger, grown

    def predict(
        self, embedding: SliceEmbedding, prompt: ObjectPrompt, mask: NDArray[np.bool_] | None = None
    ) -> PromptMask:
        """The mask of the object described by the 2D ``prompt`` (points (y, x), box (y0, x0, y1, x1), strokes)
        and/or a mask prompt of the slice's shape."""
        if prompt.text is not None and not prompt.has_positive:
            raise InvalidInputError(
                f"prompt {prompt.id}: a text prompt needs a grounding model (text -> boxes); the rf backend takes "
                "points, strokes and boxes"
            )
        if mask is not None:
            mask = np.asarray(mask, dtype=bool)
            if mask.shape != embedding.shape:
                raise InvalidInputError(f"mask: expected shape {embedding.shape}, got {mask.shape}")
            if not mask.any():
                mask = None
        if not prompt.has_positive and mask is None:
            raise InvalidInputError(
                f"prompt {prompt.id}: needs a positive point, a positive stroke, a box or a mask on this slice"
            )
        labels, seeds = self._labels(prompt, embedding, mask)
        if not (labels == 0).any():
            raise InvalidInputError(f"prompt {prompt.id}: no background pixels (add a negative point or a box)")
        if not (labels == 1).any():
            raise InvalidInputError(
                f"prompt {prompt.id}: no object pixels left (negative clicks cover the box; add a positive point)"
            )
        forest = PixelClassifier(self.config).fit_features([embedding.features], [labels])
        if prompt.box is not None:  # the mask stays inside the box: predict only there
            window = _box_window(prompt.box)
            local, proba = self._classify(forest, embedding, window, seeds)
        else:
            start = raster.bbox(seeds, max(self.search_margin, 4 * self.box_margin))
            local, proba, window = self._grow(forest, embedding, start or (slice(None), slice(None)), seeds)
        out = raster.paste(window, local, embedding.shape)
        if self.snap_radius and embedding.gradient is not None and out.any():
            out = self._snap(out, embedding.gradient, labels == 0, window)
        if self.split_touching and prompt.box is None and seeds.any() and out.any():  # a box delimits the object
            out = self._split(out, seeds)
        return self._result(out, proba, window, prompt.id)

    def _result(
        self, out: NDArray[np.bool_], proba: NDArray[np.float32], window: raster.Window, object_id: int
    ) -> PromptMask:
        """The mask (inside ``window``) with its mean probability as the score."""
        inside = out[window]
        score = float(proba[inside].mean()) if inside.any() else 0.0
        logger.debug("rf object %d: %d pixels, score %.3f", object_id, int(out.sum()), score)
        return PromptMask(out, score)

    # ---- semantic (phase) mode: fmscope.interactive.phases --------------------------------------------------------

    def phase_labels(
        self, embedding: SliceEmbedding, prompts: Sequence[ObjectPrompt], classes: Sequence[int]
    ) -> NDArray[np.int64]:
        """Pixel labels of every phase's 2D prompts on one slice (:func:`~fmscope.interactive.phases.phase_labels`)."""
        return phases.phase_labels(self, embedding, prompts, classes)

    def fit_phases(self, samples: Sequence[tuple[SliceEmbedding, NDArray[np.integer]]]) -> PixelClassifier:
        """One forest for all phases (:func:`~fmscope.interactive.phases.fit_phases`)."""
        return phases.fit_phases(self, samples)

    def predict_phases(self, model: PixelClassifier, embedding: SliceEmbedding) -> NDArray[np.int64]:
        """The class map of a slice (:func:`~fmscope.interactive.phases.predict_phases`)."""
        return phases.predict_phases(model, embedding)

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
        previous_mask = np.asarray(previous_mask, dtype=bool)
        width = max(2 * self.box_margin, round(float(np.sqrt(previous_mask.sum() / np.pi))))  # object-sized context
        labels = np.full(embedding.shape, -1, np.int64)
        crop = raster.bbox(previous_mask, width + 3) or (slice(None), slice(None))
        local = previous_mask[crop]
        near = ndi.binary_dilation(local, iterations=2)
        labels[crop][ndi.binary_dilation(near, iterations=width) & ~near] = 0
        core = ndi.binary_erosion(local)
        labels[crop][core if core.any() else local] = 1
        forest = PixelClassifier(self.config).fit_features([previous.features], [labels])
        window = _box_window(prompt.box)
        touching = raster.paste(crop, near, embedding.shape)  # the previous mask, 2 pixels wider
        found, proba = self._classify(forest, embedding, window, touching)
        out = raster.paste(window, found, embedding.shape)
        if self.snap_radius and embedding.gradient is not None and out.any():
            outside = np.ones(embedding.shape, bool)
            outside[window] = False
            out = self._snap(out, embedding.gradient, outside, window)
        return self._result(out, proba, window, prompt.id)
