"""Classical segmentation baselines: global/local threshold, clean-up, connected components or watershed.

Every learned method must beat these. Non-finite voxels are never foreground; a constant image (or slice) gives an
empty mask with a logged warning (see :mod:`fmscope.segment.threshold`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage as ndi

from fmscope.errors import InvalidInputError
from fmscope.segment._image import as_image, check_int, check_per_slice, finite_float
from fmscope.segment.postprocess import clean_mask, label_components, label_slices, watershed_split
from fmscope.segment.threshold import local_threshold_mask, multiotsu_mask, threshold_mask

logger = logging.getLogger(__name__)

Method = Literal["otsu", "li", "triangle", "multiotsu", "local", "watershed"]
METHODS = ("otsu", "li", "triangle", "multiotsu", "local", "watershed")
GLOBAL = ("otsu", "li", "triangle")


@dataclass(frozen=True)
class ClassicalConfig:
    """Settings of :func:`segment_classical`.

    Attributes:
        method: global threshold ("otsu", "li", "triangle"), one phase of a multi-level Otsu ("multiotsu", see
            ``classes``/``phase``), adaptive "local" threshold, or "watershed" (global threshold
            ``watershed_threshold`` then distance-transform watershed into instances).
        per_slice: run the 2D algorithm on each Z slice of a 3D stack (one threshold per slice).
        dark_objects: segment dark structures (e.g. EM membranes): foreground below the threshold.
        smooth_sigma: Gaussian smoothing (voxels; in-plane only when per_slice) before thresholding; 0 = none.
        block_size: odd local-threshold window (voxels). offset: local threshold offset (see local_threshold_mask).
        min_size: remove objects with fewer voxels. fill_holes: fill enclosed holes (per slice when per_slice).
        min_distance: minimum distance between watershed seeds. connectivity: 1..ndim, for objects and labels.
        classes: number of intensity phases for "multiotsu" (2-5). phase: which one is foreground (0 = darkest,
            -1 = brightest).
    """

    method: Method = "otsu"
    per_slice: bool = False
    dark_objects: bool = False
    smooth_sigma: float = 0.0
    block_size: int = 51
    offset: float = 0.0
    min_size: int = 0
    fill_holes: bool = False
    min_distance: int = 3
    watershed_threshold: Literal["otsu", "li", "triangle"] = "otsu"
    connectivity: int = 1
    classes: int = 3
    phase: int = -1

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise InvalidInputError(f"method: expected one of {list(METHODS)}, got {self.method!r}")
        if self.watershed_threshold not in GLOBAL:
            raise InvalidInputError(
                f"watershed_threshold: expected one of {list(GLOBAL)}, got {self.watershed_threshold!r}"
            )
        for name in ("per_slice", "dark_objects", "fill_holes"):
            if not isinstance(getattr(self, name), bool):
                raise InvalidInputError(f"{name}: expected a bool, got {getattr(self, name)!r}")
        for name, lo in (("smooth_sigma", 0.0), ("offset", -math.inf)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < lo:
                what = "a finite number >= 0" if lo == 0.0 else "a finite number"
                raise InvalidInputError(f"{name}: expected {what}, got {value!r}")
        check_int(self.block_size, "block_size", 3)
        if self.block_size % 2 == 0:
            raise InvalidInputError(f"block_size: expected an odd integer >= 3, got {self.block_size!r}")
        check_int(self.min_size, "min_size", 0)
        check_int(self.min_distance, "min_distance", 1)
        conn = check_int(self.connectivity, "connectivity", 1)
        if conn > 3:
            raise InvalidInputError(f"connectivity: expected 1, 2 or 3, got {conn}")
        if self.method == "multiotsu" and self.dark_objects:
            raise InvalidInputError("dark_objects: not used by 'multiotsu'; choose the dark phase with phase=0")


@dataclass(frozen=True)
class ClassicalResult:
    """Output of :func:`segment_classical`.

    Attributes:
        mask: bool foreground of the image's shape.
        labels: int32 instance labels (0 = background) for "watershed" or when ``instances=True``, else None.
        thresholds: the global threshold(s) in image units (after smoothing), one per Z slice when per_slice;
            empty for "local" (the threshold varies per voxel).
        config: the configuration used.
    """

    mask: NDArray[np.bool_]
    labels: NDArray[np.int32] | None
    thresholds: tuple[float, ...]
    config: ClassicalConfig


def smooth_finite(image: NDArray[Any], sigma: float, per_slice: bool = False) -> NDArray[Any]:
    """Gaussian smoothing as :func:`segment_classical` does it: float64, non-finite voxels NaN again afterwards;
    in-plane only when ``per_slice``; the image itself when ``sigma`` is 0."""
    if sigma <= 0:
        return image
    work, finite = finite_float(image)
    sigmas = (0.0, sigma, sigma) if per_slice else sigma
    out = ndi.gaussian_filter(work, sigma=sigmas)
    out[~finite] = np.nan
    return np.asarray(out)


def segment_classical(
    image: Any,
    config: ClassicalConfig = ClassicalConfig(),
    *,
    instances: bool = False,
    thresholds: Sequence[float] | None = None,
) -> ClassicalResult:
    """Segment a 2D (Y, X) or 3D (Z, Y, X) image with a classical pipeline.

    Steps: optional Gaussian smoothing -> threshold (global, per slice or local) -> remove objects under
    ``min_size`` -> optional hole filling -> instances (watershed, or connected components when ``instances``).
    ``thresholds``: the global threshold(s) to apply instead of the image's own (one; ``classes - 1`` for
    multiotsu), e.g. those of a whole volume segmented block by block; not with "local" or ``per_slice``.
    The input is not modified.

    Raises:
        InvalidInputError: not 2D/3D, empty, non-numeric, no finite voxel, or per_slice on a 2D image.
    """
    if not isinstance(config, ClassicalConfig):
        raise InvalidInputError(f"config: expected a ClassicalConfig, got {type(config).__name__}")
    arr = as_image(image)
    check_per_slice(arr, config.per_slice)
    if config.connectivity > (2 if config.per_slice else arr.ndim):
        raise InvalidInputError(
            f"connectivity: expected at most {2 if config.per_slice else arr.ndim} for this image "
            f"(shape {arr.shape}, per_slice={config.per_slice}), got {config.connectivity}"
        )
    finite = np.isfinite(arr) if arr.dtype.kind == "f" else np.ones(arr.shape, dtype=bool)
    if not finite.any():
        raise InvalidInputError(f"image: expected at least one finite voxel, got none (shape {arr.shape})")
    if thresholds is not None and (config.method == "local" or config.per_slice):
        raise InvalidInputError("thresholds: a fixed global threshold applies to a global method on the whole image, "
                                f"not to {config.method!r} with per_slice={config.per_slice}")  # fmt: skip
    if thresholds is not None and config.method != "multiotsu" and len(thresholds) != 1:
        raise InvalidInputError(f"thresholds: expected one value for {config.method!r}, got {thresholds!r}")
    work = smooth_finite(arr, config.smooth_sigma, config.per_slice)
    used: tuple[float, ...] = ()
    if config.method == "local":
        mask = local_threshold_mask(
            work,
            block_size=config.block_size,
            offset=config.offset,
            per_slice=config.per_slice,
            dark_objects=config.dark_objects,
        )
    elif config.method == "multiotsu":
        mask, used = multiotsu_mask(work, classes=config.classes, phase=config.phase, per_slice=config.per_slice,
                                    thresholds=thresholds)  # fmt: skip
    else:
        method = config.watershed_threshold if config.method == "watershed" else config.method
        mask, used = threshold_mask(work, method, per_slice=config.per_slice, dark_objects=config.dark_objects,
                                    threshold=None if thresholds is None else float(thresholds[0]))  # fmt: skip
    mask = clean_mask(
        mask,
        min_size=config.min_size,
        fill_holes=config.fill_holes,
        per_slice=config.per_slice,
        connectivity=config.connectivity,
    )
    mask &= finite
    labels: NDArray[np.int32] | None = None
    if config.method == "watershed":
        labels = watershed_split(mask, min_distance=config.min_distance, per_slice=config.per_slice)
    elif instances:
        labels = (
            label_slices(mask, config.connectivity)
            if config.per_slice
            else label_components(mask, connectivity=config.connectivity)
        )
    logger.debug("classical %s: foreground fraction %.4f", config.method, float(mask.mean()))
    return ClassicalResult(mask=mask, labels=labels, thresholds=used, config=config)
