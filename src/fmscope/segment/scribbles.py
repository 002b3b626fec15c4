"""Pixel classification from painted scribbles (ilastik's workflow, without a GUI): ``fmscope segment IN --method rf
--labels SCRIBBLES -o OUT``, or a saved forest applied again (``--forest DIR``), in memory or block by block.

Scribbles are an integer image of the input's shape: 0 where nothing is painted, 1..K the class painted there (a
napari or ilastik labels layer). The result holds, per voxel, the most probable painted value (uint8). ``per_slice``
classifies each Z slice with 2D features (anisotropic EM stacks); otherwise features are 3D.

Training data may come piece by piece (:func:`fit_scribbles` takes ``(image, scribbles)`` regions: the blocks of a
volume larger than memory), each region's painted pixels sampled at most ``max_samples_per_class`` per class and the
union sampled again, so memory holds feature rows of sampled pixels only.

A fitted :class:`ScribbleModel` is a folder: ``config.json`` (kind, feature and forest settings, ndim, classes,
versions) and ``forest.joblib`` (scikit-learn's pickle, as scikit-learn documents persistence: load only folders you
trust; a scikit-learn version other than the saving one is warned about).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fmscope.errors import InvalidInputError
from fmscope.segment.pixel_classifier import (
    UNLABELLED,
    PixelClassifier,
    PixelClassifierConfig,
    _check_image,
    feature_rows,
    sample_labelled,
)
from fmscope.utils.atomic import atomic_output
from fmscope.utils.digest import files_sha256

logger = logging.getLogger(__name__)

MODEL_KIND = "fmscope pixel classifier"
CONFIG_FILE, FOREST_FILE = "config.json", "forest.joblib"


def scribble_classes(scribbles: Any, shape: tuple[int, ...] | None = None) -> NDArray[np.int64]:
    """Painted values 1..K as class indices 0..K-1, unpainted (0) as -1; refuses anything but integers >= 0 of
    ``shape``."""
    arr = np.asarray(scribbles)
    if shape is not None and arr.shape != tuple(shape):
        raise InvalidInputError(f"--labels: expected scribbles of the image's shape {tuple(shape)}, got {arr.shape}")
    if arr.dtype.kind not in "biu" or (arr.size and int(arr.min()) < 0) or (arr.size and int(arr.max()) > 255):
        raise InvalidInputError(f"--labels: expected integer scribbles, 0 = unpainted, 1..255 = class, got dtype "
                                f"{arr.dtype}{f', range {arr.min()}..{arr.max()}' if arr.size else ''}")  # fmt: skip
    return arr.astype(np.int64) - 1


@dataclass
class ScribbleModel:
    """A fitted pixel classifier and how it is applied (3D features, or 2D per Z slice)."""

    classifier: PixelClassifier
    per_slice: bool = False

    def label(self, image: Any) -> NDArray[np.uint8]:
        """The most probable painted value (1..K) of every voxel of ``image``."""
        img = _check_image(image)
        ndim = self.classifier.ndim
        if (img.ndim - 1 if self.per_slice else img.ndim) != ndim:
            raise InvalidInputError(f"image: this forest classifies {'slices of ' if self.per_slice else ''}"
                                    f"{ndim}D images, got shape {img.shape}")  # fmt: skip
        if self.per_slice:
            return np.stack([self.label_plane(plane) for plane in img])
        return self.label_plane(img)

    def label_plane(self, img: NDArray[np.float32]) -> NDArray[np.uint8]:
        return (self.classifier.predict_labels(img) + 1).astype(np.uint8)

    def save(self, folder: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write the model folder atomically (see the module doc); returns its path."""
        import joblib
        import sklearn

        from fmscope import __version__

        clf = self.classifier
        meta = {"kind": MODEL_KIND, "classifier": asdict(clf.config), "per_slice": self.per_slice,
                "ndim": clf.ndim, "classes": clf.classes_.tolist(), "n_classes": clf.n_classes,
                "sklearn": sklearn.__version__, "fmscope": __version__}  # fmt: skip
        with atomic_output(folder, overwrite=overwrite) as tmp:
            tmp.mkdir()
            joblib.dump(clf.forest, tmp / FOREST_FILE)
            (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        return Path(folder)

    @classmethod
    def load(cls, folder: str | os.PathLike[str]) -> ScribbleModel:
        """Read a folder written by :meth:`save`."""
        import joblib
        import sklearn

        path = Path(folder)
        try:
            meta = json.loads((path / CONFIG_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InvalidInputError(f"--forest: '{path}' is not a pixel-classifier folder ({exc})") from None
        if not isinstance(meta, dict) or meta.get("kind") != MODEL_KIND or not (path / FOREST_FILE).is_file():
            raise InvalidInputError(f"--forest: '{path}' is not a pixel-classifier folder (expected {CONFIG_FILE} "
                                    f"of kind {MODEL_KIND!r} and {FOREST_FILE})")  # fmt: skip
        if meta.get("sklearn") != sklearn.__version__:
            logger.warning("'%s' was saved with scikit-learn %s, this is %s: predictions may differ", path,
                           meta.get("sklearn"), sklearn.__version__)  # fmt: skip
        try:
            config = PixelClassifierConfig(**meta["classifier"])
            ndim, n_classes, per_slice = int(meta["ndim"]), int(meta["n_classes"]), bool(meta["per_slice"])
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInputError(f"--forest: '{path / CONFIG_FILE}' lacks or mangles an entry ({exc})") from None
        forest = joblib.load(path / FOREST_FILE)
        return cls(PixelClassifier.from_forest(config, forest, ndim, n_classes), per_slice)


def feature_halo(config: PixelClassifierConfig, per_slice: bool, ndim: int) -> list[int]:
    """Context around a block for its features to equal the whole volume's (none along Z per slice)."""
    return [0 if per_slice and axis == 0 else config.margin for axis in range(ndim)]


def model_digest(folder: str | os.PathLike[str]) -> str:
    """sha256 over a model folder's files (what a resumed blockwise run must be applying)."""
    try:
        return files_sha256(folder, (CONFIG_FILE, FOREST_FILE))
    except OSError as exc:
        raise InvalidInputError(f"--forest: cannot read '{exc.filename}' ({exc.strerror})") from None


def fit_scribbles(
    regions: Iterable[tuple[Any, Any]], config: PixelClassifierConfig | None = None, *, per_slice: bool = False
) -> ScribbleModel:
    """Train a :class:`ScribbleModel` on the painted pixels of ``(image, scribbles)`` regions (see the module doc).

    Raises:
        InvalidInputError: mismatched shapes, bad scribble values, fewer than two classes painted over all regions.
    """
    cfg = config if config is not None else PixelClassifierConfig()
    xs: list[NDArray[np.float32]] = []
    ys: list[NDArray[np.int64]] = []
    ndim = None
    held, seen = 0, set[int]()  # rows held and classes met so far, to bound memory without re-reading the rows
    for image, scribbles in regions:
        img = _check_image(image)
        if per_slice and img.ndim != 3:
            raise InvalidInputError(f"--per-slice: expected a (Z, Y, X) stack, got shape {img.shape}")
        labs = scribble_classes(scribbles, img.shape)
        planes = [(img[z], labs[z]) for z in np.flatnonzero((labs >= 0).any(axis=(1, 2)))] if per_slice else [
            (img, labs)]  # fmt: skip
        for plane, lab in planes:
            ndim = plane.ndim
            classes = np.unique(lab[lab != UNLABELLED])
            if classes.size == 0:
                continue
            ((flat, y),) = sample_labelled([lab], classes, cfg)
            xs.append(feature_rows(plane, flat, cfg))
            ys.append(y)
            held, seen = held + y.size, seen | set(classes.tolist())
            if held > 4 * cfg.max_samples_per_class * len(seen):  # memory stays a few times the cap, not per region
                keep = _subsample(np.concatenate(ys), cfg)
                xs, ys = [np.concatenate(xs)[keep]], [np.concatenate(ys)[keep]]
                held = keep.size
    if not xs or ndim is None:
        raise InvalidInputError("--labels: no painted pixels (values 1..K) in the scribbles")
    rows, classes = np.concatenate(xs), np.concatenate(ys)
    if np.unique(classes).size < 2:
        raise InvalidInputError(f"--labels: paint at least 2 classes, got only value {int(classes[0]) + 1}")
    keep = _subsample(classes, cfg)
    logger.info("scribbles: %d painted pixels sampled of %d held, classes %s", keep.size, classes.size,
                (np.unique(classes) + 1).tolist())  # fmt: skip
    return ScribbleModel(PixelClassifier(cfg).fit_rows(rows[keep], classes[keep], ndim), per_slice)


def _subsample(classes: NDArray[np.int64], cfg: PixelClassifierConfig) -> NDArray[np.int64]:
    """Row indices keeping at most ``max_samples_per_class`` rows per class (seeded, in row order)."""
    rng = np.random.default_rng(cfg.seed)
    keep = []
    for c in np.unique(classes):
        rows = np.flatnonzero(classes == c)
        if rows.size > cfg.max_samples_per_class:
            rows = np.sort(rng.choice(rows, size=cfg.max_samples_per_class, replace=False))
        keep.append(rows)
    return np.sort(np.concatenate(keep))


def segment_scribbles(
    image: Any,
    *,
    scribbles: Any = None,
    model: ScribbleModel | None = None,
    config: PixelClassifierConfig | None = None,
    per_slice: bool = False,
) -> tuple[NDArray[np.uint8], ScribbleModel]:
    """Label a whole image in memory: with ``model``, or with a model trained on ``scribbles`` here; returns the
    labels (painted values) and the model."""
    if (scribbles is None) == (model is None):
        raise InvalidInputError("--labels / --forest: give one (scribbles to train on, or a saved forest)")
    if model is None:
        model = fit_scribbles([(image, scribbles)], config, per_slice=per_slice)
    return model.label(image), model
