"""Mask clean-up, connected components and distance-transform watershed (2D/3D, optionally per Z slice)."""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.filters import sobel
from skimage.morphology import remove_small_objects
from skimage.segmentation import watershed

from fmscope.errors import InvalidInputError
from fmscope.segment._image import as_bool_mask, as_image, check_int, check_per_slice, finite_float, map_slices

_HAS_MAX_SIZE = "max_size" in inspect.signature(remove_small_objects).parameters


def _remove_small(mask: NDArray[np.bool_], min_size: int, connectivity: int) -> NDArray[np.bool_]:
    if _HAS_MAX_SIZE:  # scikit-image >= 0.26: objects of max_size voxels or fewer are removed
        return np.asarray(remove_small_objects(mask, max_size=min_size - 1, connectivity=connectivity))
    return np.asarray(remove_small_objects(mask, min_size=min_size, connectivity=connectivity))


def _check_connectivity(connectivity: Any, ndim: int) -> int:
    ok = isinstance(connectivity, int | np.integer) and not isinstance(connectivity, bool)
    if not ok or not 1 <= connectivity <= ndim:
        raise InvalidInputError(f"connectivity: expected an integer in 1..{ndim} ({ndim}D data), got {connectivity!r}")
    return int(connectivity)


def clean_mask(
    mask: Any, *, min_size: int = 0, fill_holes: bool = False, per_slice: bool = False, connectivity: int = 1
) -> NDArray[np.bool_]:
    """Remove objects of fewer than ``min_size`` voxels, then optionally fill holes (returns a new bool mask).

    ``per_slice``: both steps in 2D on each Z slice (sizes in pixels), else in the mask's dimensionality.
    ``connectivity``: neighbourhood defining an object for ``min_size`` (1 = faces only, up to ndim).
    """
    m = as_bool_mask(mask)
    size = check_int(min_size, "min_size", 0)
    check_per_slice(m, per_slice)
    conn = _check_connectivity(connectivity, 2 if per_slice else m.ndim)

    def one(plane: NDArray[np.bool_]) -> NDArray[np.bool_]:
        out = _remove_small(plane, size, conn) if size > 1 else plane.copy()
        if fill_holes:
            out = ndi.binary_fill_holes(out)
        return np.asarray(out, dtype=bool)

    return map_slices(one, m, per_slice)


def label_components(mask: Any, *, connectivity: int = 1) -> NDArray[np.int32]:
    """Connected components of a 2D/3D mask as int32 labels (0 = background, 1..n objects).

    ``connectivity``: 1 = face neighbours (4 in 2D, 6 in 3D), ndim = all neighbours (8 / 26).
    """
    m = as_bool_mask(mask)
    conn = _check_connectivity(connectivity, m.ndim)
    labels, _ = ndi.label(m, structure=ndi.generate_binary_structure(m.ndim, conn))
    return labels.astype(np.int32, copy=False)


def _watershed_one(mask: NDArray[np.bool_], image: NDArray[np.float64] | None, min_distance: int) -> NDArray[np.int32]:
    if not mask.any():
        return np.zeros(mask.shape, dtype=np.int32)
    distance = ndi.distance_transform_edt(mask)
    components, _ = ndi.label(mask)
    peaks = peak_local_max(distance, min_distance=min_distance, labels=components, exclude_border=False)
    # Peaks on one plateau of the distance (a flat ridge, as in elongated objects) are one seed: label the
    # connected sets of local-maximum voxels and keep those holding a peak.
    full = np.ones((3,) * mask.ndim, dtype=bool)
    local_max = mask & (distance == ndi.maximum_filter(distance, footprint=full))
    plateaus, _ = ndi.label(local_max, structure=full)
    kept = np.unique(plateaus[tuple(peaks.T)])
    markers = np.where(np.isin(plateaus, kept[kept > 0]), plateaus, 0)
    landscape = -distance if image is None else sobel(image)
    labels = watershed(landscape, markers, mask=mask).astype(np.int32)
    missed = mask & (labels == 0)
    if missed.any():  # a component without a seed keeps its own label
        extra, _ = ndi.label(missed)
        labels[missed] = extra[missed] + labels.max()
    return labels


def watershed_split(
    mask: Any, *, image: Any = None, min_distance: int = 3, per_slice: bool = False
) -> NDArray[np.int32]:
    """Split touching objects of a mask into instances (int32 labels), seeded by peaks of the distance transform.

    Seeds are local maxima of the Euclidean distance to the background at least ``min_distance`` voxels apart
    (peaks on one plateau of the distance merged). The flooding landscape is the negated distance (boundaries at
    the necks between round objects) or, when ``image`` is given, its Sobel gradient magnitude (boundaries on
    intensity edges).
    ``per_slice``: each Z slice in 2D, with labels kept unique over the stack.
    """
    m = as_bool_mask(mask)
    dist = check_int(min_distance, "min_distance", 1)
    check_per_slice(m, per_slice)
    img: NDArray[np.float64] | None = None
    if image is not None:
        arr = as_image(image)
        if arr.shape != m.shape:
            raise InvalidInputError(f"image and mask: expected the same shape, got {arr.shape} and {m.shape}")
        img = finite_float(arr)[0]
    if not per_slice:
        return _watershed_one(m, img, dist)
    out = np.zeros(m.shape, dtype=np.int32)
    offset = 0
    for z in range(m.shape[0]):
        lab = _watershed_one(m[z], None if img is None else img[z], dist)
        out[z] = np.where(lab > 0, lab + offset, 0)
        offset = max(offset, int(out[z].max()))
    return out


def label_slices(mask: NDArray[np.bool_], connectivity: int) -> NDArray[np.int32]:
    """Connected components of each Z slice in 2D, labels unique over the stack."""
    out = map_slices(lambda p: label_components(p, connectivity=connectivity), mask, True).astype(np.int32)
    offset = 0
    for z in range(out.shape[0]):
        nz = out[z] > 0
        out[z][nz] += offset
        offset = max(offset, int(out[z].max()))
    return out


def narrow_labels(labels: np.ndarray) -> np.ndarray:
    """Label ids in the smallest unsigned type that files and viewers handle well: uint16 when they fit, else
    uint32 (a mask of 0/1 values stays uint8 only when given as such)."""
    arr = np.asarray(labels)
    if arr.dtype == np.uint8 or arr.dtype == np.bool_:
        return arr.astype(np.uint8)
    top = int(arr.max()) if arr.size else 0
    return arr.astype(np.uint16 if top < 2**16 else np.uint32)
