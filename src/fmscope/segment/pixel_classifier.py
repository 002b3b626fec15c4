"""ilastik-style pixel classifier: multi-scale filter-bank features and a random forest, on 2D or 3D images.

Trained from fully labelled images (benchmark baseline) or from sparse scribbles where unlabelled pixels carry -1
(interactive use). Features are computed slab by slab along the first axis, with a margin wide enough that the slab
features equal the whole-image features, so memory stays bounded by ``chunk_voxels`` voxels of features.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from skimage.feature import multiscale_basic_features
from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier
from sklearn.exceptions import NotFittedError

from fmscope.errors import InvalidInputError
from fmscope.segment._image import as_image, check_int

logger = logging.getLogger(__name__)

UNLABELLED = -1
FORESTS: dict[str, type[RandomForestClassifier] | type[ExtraTreesClassifier]] = {
    "random": RandomForestClassifier,
    "extra": ExtraTreesClassifier,
}


@dataclass(frozen=True)
class PixelClassifierConfig:
    """Settings of :class:`PixelClassifier`.

    Attributes:
        sigmas: scales (pixels) of the Gaussian filter bank; positive, non-empty (a YAML list is accepted).
        intensity: Gaussian-smoothed intensity features.
        edges: Sobel gradient magnitude of the smoothed image.
        texture: Hessian eigenvalues of the smoothed image (one per spatial axis).
        forest: ``random`` (a random forest: best split of a random feature subset) or ``extra`` (extremely
            randomised trees: random thresholds too; several times faster to fit, for interactive refits).
        n_estimators: trees of the forest. max_depth: their depth limit (None = unlimited).
        max_features: features tried per split: ``sqrt`` of their number, or a fraction in (0, 1].
        min_samples_leaf: minimum samples per leaf.
        max_samples_per_class: labelled pixels sampled per class across all training images (seeded).
        seed: seed of the pixel sampling and of the forest.
        n_jobs: threads for the forest and the per-scale filters (scikit-learn convention; -1 = all cores).
        chunk_voxels: predict (and extract training features) in slabs along the first axis of at most about this
            many voxels of features, margins included.
    """

    sigmas: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0)
    intensity: bool = True
    edges: bool = True
    texture: bool = True
    forest: str = "random"
    n_estimators: int = 100
    max_depth: int | None = None
    max_features: str | float = "sqrt"
    min_samples_leaf: int = 1
    max_samples_per_class: int = 20000
    seed: int = 0
    n_jobs: int = 1
    chunk_voxels: int = 2_000_000

    def __post_init__(self) -> None:
        sigmas = tuple(self.sigmas) if isinstance(self.sigmas, list | tuple | np.ndarray) else self.sigmas
        numbers = isinstance(sigmas, tuple) and all(
            not isinstance(s, bool) and isinstance(s, int | float | np.integer | np.floating) for s in sigmas
        )
        if not numbers or not sigmas or not all(math.isfinite(s) and s > 0 for s in sigmas):
            raise InvalidInputError(f"sigmas: expected a non-empty list of positive finite numbers, got {sigmas!r}")
        object.__setattr__(self, "sigmas", tuple(float(s) for s in sigmas))
        for name in ("intensity", "edges", "texture"):
            if not isinstance(getattr(self, name), bool):
                raise InvalidInputError(f"{name}: expected a bool, got {getattr(self, name)!r}")
        if not (self.intensity or self.edges or self.texture):
            raise InvalidInputError("intensity/edges/texture: expected at least one feature family True, got none")
        if self.forest not in FORESTS:
            raise InvalidInputError(f"forest: expected one of {', '.join(FORESTS)}, got {self.forest!r}")
        check_int(self.n_estimators, "n_estimators", 1)
        if self.max_depth is not None:
            check_int(self.max_depth, "max_depth", 1)
        fraction = isinstance(self.max_features, float) and 0.0 < self.max_features <= 1.0
        if self.max_features != "sqrt" and not fraction:
            raise InvalidInputError(f"max_features: expected 'sqrt' or a fraction in (0, 1], got {self.max_features!r}")
        check_int(self.min_samples_leaf, "min_samples_leaf", 1)
        check_int(self.max_samples_per_class, "max_samples_per_class", 1)
        check_int(self.seed, "seed", 0)
        if isinstance(self.n_jobs, bool) or not isinstance(self.n_jobs, int) or self.n_jobs == 0 or self.n_jobs < -1:
            raise InvalidInputError(f"n_jobs: expected -1 or an integer >= 1, got {self.n_jobs!r}")
        check_int(self.chunk_voxels, "chunk_voxels", 1)

    @property
    def margin(self) -> int:
        """Voxels of context a slab needs on each side: the Gaussian radius plus two derivative stencils."""
        return math.ceil(4.0 * max(self.sigmas)) + 2


def _check_image(image: Any, name: str = "image") -> NDArray[np.float32]:
    arr = as_image(image, name)
    out = arr.astype(np.float32)
    if not bool(np.isfinite(out).all()):
        n_bad = int(np.count_nonzero(~np.isfinite(out)))
        raise InvalidInputError(f"{name}: expected finite values (no NaN/inf), got {n_bad} non-finite voxels")
    return out


def pixel_features(image: np.ndarray, config: PixelClassifierConfig) -> NDArray[np.float32]:
    """Multi-scale filter-bank features of a 2D (Y, X) or 3D (Z, Y, X) image.

    Per scale, in ``config.sigmas`` order: smoothed intensity, Sobel edge magnitude, then the Hessian eigenvalues
    (decreasing), each family only when enabled; computed with :func:`skimage.feature.multiscale_basic_features`
    at exactly one sigma per call (so the scales are the configured ones, not a log-spaced range). The image is used
    as float32 without rescaling.

    Args:
        image: 2D or 3D numeric image with finite values.
        config: feature settings (``sigmas``, ``intensity``, ``edges``, ``texture``, ``n_jobs``).

    Returns:
        ``(*image.shape, F)`` float32 features.

    Raises:
        InvalidInputError: the image is not 2D/3D, empty, non-numeric or holds NaN/inf.
    """
    img = _check_image(image)
    return _features(img, config)


def _features(img: NDArray[np.float32], config: PixelClassifierConfig) -> NDArray[np.float32]:
    families = {"intensity": config.intensity, "edges": config.edges, "texture": config.texture}

    def one_scale(sigma: float) -> NDArray[Any]:
        return np.asarray(
            multiscale_basic_features(img, sigma_min=sigma, sigma_max=sigma, num_sigma=1, workers=1, **families)
        )

    workers = (os.cpu_count() or 1) if config.n_jobs == -1 else config.n_jobs
    with ThreadPoolExecutor(max_workers=min(workers, len(config.sigmas))) as pool:  # filters release the GIL
        per_scale = list(pool.map(one_scale, config.sigmas))
    return np.concatenate(per_scale, axis=-1).astype(np.float32, copy=False)


def _slabs(img: NDArray[np.float32], config: PixelClassifierConfig) -> Iterator[tuple[int, int, int, int]]:
    """(start, stop, lo, hi): core rows [start, stop) of axis 0, computed from rows [lo, hi) with margins."""
    n = img.shape[0]
    plane = int(np.prod(img.shape[1:]))
    margin = config.margin
    if n * plane <= config.chunk_voxels:  # the whole image fits: one slab, no margins computed twice
        yield 0, n, 0, n
        return
    core = config.chunk_voxels // plane - 2 * margin
    if core < 1 and n > 1:
        logger.warning("chunk_voxels=%d holds less than 1 + 2x%d rows: 1-row slabs", config.chunk_voxels, margin)
    core = max(core, 1)
    for start in range(0, n, core):
        stop = min(n, start + core)
        yield start, stop, max(0, start - margin), min(n, stop + margin)


class PixelClassifier:
    """Random-forest pixel classifier on multi-scale features (ilastik-style).

    Example (``scribbles``: a class index per pixel, -1 where unlabelled):
        >>> import numpy as np
        >>> image = np.zeros((32, 32), np.float32); image[8:24, 8:24] = 1.0
        >>> scribbles = np.full(image.shape, -1); scribbles[0, :] = 0; scribbles[16, 12:20] = 1
        >>> clf = PixelClassifier().fit([image], [scribbles])
        >>> proba = clf.predict_proba(image)  # (C, *spatial)
        >>> proba.shape, int(clf.predict(image)[16, 16]), int(clf.predict(image)[2, 2])
        ((2, 32, 32), 1, 0)
    """

    def __init__(self, config: PixelClassifierConfig | None = None) -> None:
        """Create an unfitted classifier with ``config`` (defaults when None)."""
        if config is not None and not isinstance(config, PixelClassifierConfig):
            raise InvalidInputError(f"config: expected a PixelClassifierConfig or None, got {type(config).__name__}")
        self.config = config if config is not None else PixelClassifierConfig()
        self._forest: RandomForestClassifier | ExtraTreesClassifier | None = None
        self._ndim: int | None = None
        self._n_classes = 0

    def fit(self, images: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> PixelClassifier:
        """Train on labelled pixels of one or more images.

        Args:
            images: 2D or 3D images, all with the same number of dimensions (shapes may differ).
            labels: per image, an integer array of the same shape: class index >= 0, or -1 for unlabelled pixels
                (ignored). At least two classes must be labelled over all images.

        Returns:
            ``self``.

        Raises:
            InvalidInputError: empty or mismatched sequences, bad shapes or values, fewer than two classes.
        """
        cfg = self.config
        imgs, labs, classes = _check_training(images, labels)
        xs: list[NDArray[np.float32]] = []
        ys: list[NDArray[np.int64]] = []
        for img, (flat, y) in zip(imgs, sample_labelled(labs, classes, cfg), strict=True):
            if flat.size:
                xs.append(feature_rows(img, flat, cfg))
                ys.append(y)
        return self._fit_rows(np.concatenate(xs), np.concatenate(ys), classes, imgs[0].ndim)

    def fit_rows(self, rows: np.ndarray, classes: np.ndarray, ndim: int) -> PixelClassifier:
        """Train on feature rows ``(N, F)`` (from :func:`feature_rows`) and their class indices ``(N,)`` of
        ``ndim``-D images: for training data gathered piece by piece (blocks of a volume larger than memory)."""
        x = np.asarray(rows, dtype=np.float32)
        y = np.asarray(classes, dtype=np.int64)
        if x.ndim != 2 or y.shape != (x.shape[0],) or ndim not in (2, 3):
            raise InvalidInputError(f"rows, classes, ndim: expected (N, F), (N,) and 2 or 3, got {x.shape}, "
                                    f"{y.shape}, {ndim}")  # fmt: skip
        seen = np.unique(y)
        if seen.size < 2 or seen[0] < 0:
            raise InvalidInputError(f"classes: expected at least 2 class indices >= 0, got {seen.tolist()}")
        return self._fit_rows(x, y, seen, ndim)

    def fit_features(self, features: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> PixelClassifier:
        """Train like :meth:`fit` from features computed once by :func:`pixel_features` (``(*spatial, F)`` per
        image; interactive use: the features of a slice are reused for every new click)."""
        feats = [np.asarray(f, dtype=np.float32) for f in features]
        if not feats or any(f.ndim not in (3, 4) for f in feats):
            raise InvalidInputError("features: expected (*spatial, F) arrays from pixel_features, one per image")
        _, labs, classes = _check_training([f[..., 0] for f in feats], labels)
        xs, ys = [], []
        for f, (flat, y) in zip(feats, sample_labelled(labs, classes, self.config), strict=True):
            xs.append(f.reshape(-1, f.shape[-1])[flat])
            ys.append(y)
        return self._fit_rows(np.concatenate(xs), np.concatenate(ys), classes, feats[0].ndim - 1)

    def _fit_rows(
        self, x_train: NDArray[np.float32], y_train: NDArray[np.int64], classes: NDArray[np.int64], ndim: int
    ) -> PixelClassifier:
        cfg = self.config
        keys = ("n_estimators", "max_depth", "max_features", "min_samples_leaf", "n_jobs")
        params = {k: getattr(cfg, k) for k in keys}
        logger.info("pixel classifier: fit on %d pixels x %d features, classes %s", *x_train.shape, classes.tolist())
        forest = FORESTS[cfg.forest](class_weight="balanced", random_state=cfg.seed, **params)
        forest.fit(x_train, y_train)
        self._forest = forest
        self._ndim = ndim
        self._n_classes = int(classes.max()) + 1
        return self

    def predict_proba_features(self, features: np.ndarray) -> NDArray[np.float32]:
        """Class probabilities ``(C, *spatial)`` from features computed by :func:`pixel_features`."""
        forest = self._fitted()
        feats = np.asarray(features, dtype=np.float32)
        if feats.ndim - 1 != self._ndim:
            raise InvalidInputError(
                f"features: expected ({'Z, ' if self._ndim == 3 else ''}Y, X, F), got {feats.shape}"
            )
        out = np.zeros((self._n_classes, *feats.shape[:-1]), dtype=np.float32)
        seen = forest.classes_.astype(np.int64)
        out[seen] = forest.predict_proba(feats.reshape(-1, feats.shape[-1])).T.reshape(len(seen), *feats.shape[:-1])
        return out

    @classmethod
    def from_forest(cls, config: PixelClassifierConfig, forest: Any, ndim: int, n_classes: int) -> PixelClassifier:
        """A fitted classifier from a forest saved earlier (see :mod:`fmscope.segment.scribbles`)."""
        if not isinstance(forest, tuple(FORESTS.values())) or not hasattr(forest, "classes_"):
            raise InvalidInputError(f"forest: expected a fitted scikit-learn forest, got {type(forest).__name__}")
        clf = cls(config)
        clf._forest, clf._ndim, clf._n_classes = forest, int(ndim), int(n_classes)
        return clf

    @property
    def forest(self) -> RandomForestClassifier | ExtraTreesClassifier:
        """The fitted scikit-learn forest."""
        return self._fitted()

    @property
    def ndim(self) -> int:
        """Dimensionality of the images it was trained on (2 or 3)."""
        self._fitted()
        return int(self._ndim or 0)

    @property
    def classes_(self) -> NDArray[np.int64]:
        """Class indices seen among the labelled training pixels (sorted)."""
        return self._fitted().classes_.astype(np.int64)

    @property
    def n_classes(self) -> int:
        """C = largest class index seen + 1 (the first axis of :meth:`predict_proba`)."""
        self._fitted()
        return self._n_classes

    def _fitted(self) -> RandomForestClassifier | ExtraTreesClassifier:
        if self._forest is None:
            raise NotFittedError("PixelClassifier: call fit(images, labels) before predicting")
        return self._forest

    def predict_proba(self, image: np.ndarray) -> NDArray[np.float32]:
        """Class probabilities per pixel.

        Args:
            image: image with the same number of dimensions as the training images.

        Returns:
            ``(C, *image.shape)`` float32, C = largest class index seen in fit + 1; classes never seen get 0.

        Raises:
            NotFittedError: called before :meth:`fit`.
            InvalidInputError: bad image, or its dimensionality differs from the training images.
        """
        forest = self._fitted()
        img = _check_image(image)
        if img.ndim != self._ndim:
            raise InvalidInputError(
                f"image: expected a {self._ndim}D image like the training images, got shape {img.shape}"
            )
        cfg = self.config
        out = np.zeros((self._n_classes, *img.shape), dtype=np.float32)
        seen = forest.classes_.astype(np.int64)
        for start, stop, lo, hi in _slabs(img, cfg):
            feats = _features(img[lo:hi], cfg)[start - lo : stop - lo]
            proba = forest.predict_proba(feats.reshape(-1, feats.shape[-1]))
            out[seen, start:stop] = proba.T.reshape(len(seen), stop - start, *img.shape[1:])
        return out

    def predict_labels(self, image: np.ndarray) -> NDArray[np.int64]:
        """The most probable class index per pixel (as :meth:`predict`), slab by slab from the forest's own
        probabilities: memory holds the classes seen, not ``n_classes`` channels (class values may be sparse)."""
        forest = self._fitted()
        img = _check_image(image)
        if img.ndim != self._ndim:
            raise InvalidInputError(
                f"image: expected a {self._ndim}D image like the training images, got shape {img.shape}"
            )
        out = np.empty(img.shape, dtype=np.int64)
        seen = forest.classes_.astype(np.int64)
        for start, stop, lo, hi in _slabs(img, self.config):
            feats = _features(img[lo:hi], self.config)[start - lo : stop - lo]
            proba = forest.predict_proba(feats.reshape(-1, feats.shape[-1]))
            out[start:stop] = seen[np.argmax(proba, axis=1)].reshape(stop - start, *img.shape[1:])
        return out

    def predict(self, image: np.ndarray) -> NDArray[Any]:
        """Most probable class per pixel (argmax of :meth:`predict_proba`), smallest unsigned dtype holding C - 1."""
        proba = self.predict_proba(image)
        return np.argmax(proba, axis=0).astype(np.min_scalar_type(max(self._n_classes - 1, 0)))


def feature_rows(img: NDArray[np.float32], flat: NDArray[np.int64], cfg: PixelClassifierConfig) -> NDArray[np.float32]:
    """Features ``(len(flat), F)`` of the pixels at flat indices ``flat`` of ``img``, in that order (so that chunking
    does not change the forest); only the slabs holding such pixels are filtered (sparse scribbles)."""
    coords = np.unravel_index(flat, img.shape)
    rows: NDArray[np.float32] | None = None
    for start, stop, lo, hi in _slabs(img, cfg):
        inside = (coords[0] >= start) & (coords[0] < stop)
        if inside.any():
            feats = _features(img[lo:hi], cfg)
            rows = np.empty((flat.size, feats.shape[-1]), np.float32) if rows is None else rows
            rows[inside] = feats[(coords[0][inside] - lo, *(c[inside] for c in coords[1:]))]
    if rows is None:
        raise InvalidInputError("flat: expected at least one pixel index")
    return rows


def sample_labelled(
    labs: Sequence[NDArray[np.int64]], classes: NDArray[np.int64], cfg: PixelClassifierConfig
) -> list[tuple[NDArray[np.int64], NDArray[np.int64]]]:
    """Per image, (flat indices, classes) of up to ``max_samples_per_class`` pixels per class over all images."""
    rng = np.random.default_rng(cfg.seed)
    owner_parts, flat_parts, y_parts = [], [], []
    for c in classes:
        where = [np.flatnonzero(lab == c) for lab in labs]
        owner = np.concatenate([np.full(w.size, i, dtype=np.int64) for i, w in enumerate(where)])
        flat = np.concatenate(where)
        if flat.size > cfg.max_samples_per_class:
            keep = np.sort(rng.choice(flat.size, size=cfg.max_samples_per_class, replace=False))
            owner, flat = owner[keep], flat[keep]
        owner_parts.append(owner)
        flat_parts.append(flat)
        y_parts.append(np.full(flat.size, c, dtype=np.int64))
    owners, flats, ys = (np.concatenate(parts) for parts in (owner_parts, flat_parts, y_parts))
    return [(flats[owners == i], ys[owners == i]) for i in range(len(labs))]


def _check_training(
    images: Sequence[np.ndarray], labels: Sequence[np.ndarray]
) -> tuple[list[NDArray[np.float32]], list[NDArray[np.int64]], NDArray[np.int64]]:
    if isinstance(images, np.ndarray) or not isinstance(images, Sequence) or len(images) == 0:
        raise InvalidInputError(f"images: expected a non-empty sequence of arrays, got {type(images).__name__}")
    if isinstance(labels, np.ndarray) or not isinstance(labels, Sequence) or len(labels) != len(images):
        got = len(labels) if isinstance(labels, Sequence) else type(labels).__name__
        raise InvalidInputError(f"labels: expected a sequence of {len(images)} arrays (one per image), got {got}")
    imgs = [_check_image(img, f"images[{i}]") for i, img in enumerate(images)]
    if len({img.ndim for img in imgs}) != 1:
        raise InvalidInputError(f"images: expected all 2D or all 3D, got shapes {[img.shape for img in imgs]}")
    labs: list[NDArray[np.int64]] = []
    for i, (img, lab) in enumerate(zip(imgs, labels, strict=True)):
        arr = np.asarray(lab)
        integral = arr.dtype.kind in "biu" or (arr.dtype.kind == "f" and bool(np.all(np.mod(arr, 1) == 0)))
        if arr.shape != img.shape or not integral or (arr.size and arr.min() < UNLABELLED):
            raise InvalidInputError(
                f"labels[{i}]: expected class indices >= 0 or -1 (unlabelled) with the shape of images[{i}] "
                f"{img.shape}, got dtype {arr.dtype}, shape {arr.shape}, min {arr.min() if arr.size else None}"
            )
        labs.append(arr.astype(np.int64))
    classes = np.unique(np.concatenate([np.unique(lab[lab >= 0]) for lab in labs]))
    if classes.size < 2:
        raise InvalidInputError(f"labels: expected at least 2 classes among labelled pixels, got {classes.tolist()}")
    return imgs, labs, classes
