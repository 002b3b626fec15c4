"""Global and local intensity thresholds (scikit-image) on 2D/3D images, optionally slice by slice.

Rules shared by every function here:

* Non-finite voxels (NaN, +-Inf) are left out of the threshold computation and are never foreground.
* Foreground is ``image > t`` (bright objects) or, with ``dark_objects=True``, ``image < t`` (e.g. EM membranes).
* A constant image (or slice) has no threshold to find: the threshold is that constant, the mask is empty, and a
  warning is logged. A slice with no finite voxel gets threshold NaN and an empty mask (warning); a whole image with
  no finite voxel raises InvalidInputError.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from skimage.filters import threshold_li, threshold_local, threshold_otsu, threshold_triangle

from fmscope.errors import InvalidInputError
from fmscope.segment._image import as_image, check_int, check_per_slice, finite_float, map_slices

logger = logging.getLogger(__name__)

GlobalMethod = Literal["otsu", "li", "triangle"]
GLOBAL_METHODS: dict[str, Any] = {"otsu": threshold_otsu, "li": threshold_li, "triangle": threshold_triangle}


def _check_method(method: Any) -> str:
    if method not in GLOBAL_METHODS:
        raise InvalidInputError(f"method: expected one of {sorted(GLOBAL_METHODS)}, got {method!r}")
    return str(method)


def _value(values: NDArray[Any], method: str, where: str) -> float:
    """Threshold of a 1D array of finite values (NaN when empty, the constant when constant)."""
    if values.size == 0:
        logger.warning("%s has no finite voxel: threshold NaN, empty mask", where)
        return float("nan")
    lo, hi = values.min(), values.max()
    if lo == hi:
        logger.warning("%s is constant (%s): no threshold to find, empty mask", where, lo)
        return float(lo)
    return float(GLOBAL_METHODS[method](values))


def threshold_value(image: Any, method: GlobalMethod) -> float:
    """Global threshold (``"otsu"``, ``"li"`` or ``"triangle"``) of the finite voxels of a 2D/3D image.

    Returns the constant value for a constant image (with a logged warning).

    Raises:
        InvalidInputError: bad shape, unknown method, or no finite voxel.
    """
    m = _check_method(method)
    arr = as_image(image)
    values = arr[np.isfinite(arr)] if arr.dtype.kind == "f" else arr.ravel()
    if values.size == 0:
        raise InvalidInputError(f"image: expected at least one finite voxel, got none (shape {arr.shape})")
    return _value(values, m, "image")


def threshold_mask(
    image: Any,
    method: GlobalMethod,
    *,
    per_slice: bool = False,
    dark_objects: bool = False,
    threshold: float | None = None,
) -> tuple[NDArray[np.bool_], tuple[float, ...]]:
    """Foreground mask by a global threshold, over the whole image or one threshold per Z slice; ``threshold``
    given (e.g. of a whole volume segmented block by block): that one instead of the image's own.

    Returns:
        ``(mask, thresholds)``: bool mask of the image's shape, and one threshold (whole image) or one per slice.
    """
    m = _check_method(method)
    arr = as_image(image)
    check_per_slice(arr, per_slice)
    finite = np.isfinite(arr) if arr.dtype.kind == "f" else np.ones(arr.shape, dtype=bool)
    if not finite.any():
        raise InvalidInputError(f"image: expected at least one finite voxel, got none (shape {arr.shape})")
    planes = range(arr.shape[0]) if per_slice else [None]
    mask = np.zeros(arr.shape, dtype=bool)
    thresholds = []
    for z in planes:
        sl = (slice(None),) * arr.ndim if z is None else (z,)
        part, fin = arr[sl], finite[sl]
        t = threshold if threshold is not None else _value(part[fin], m, "image" if z is None else f"slice {z}")
        thresholds.append(t)
        if np.isnan(t):
            continue
        with np.errstate(invalid="ignore"):
            mask[sl] = ((part < t) if dark_objects else (part > t)) & fin
    return mask, tuple(thresholds)


def local_threshold_mask(
    image: Any, *, block_size: int = 51, offset: float = 0.0, per_slice: bool = True, dark_objects: bool = False
) -> NDArray[np.bool_]:
    """Foreground mask by a local (adaptive) threshold: Gaussian-weighted local mean over ``block_size`` voxels.

    A voxel is foreground when it is brighter than its local mean minus ``offset`` (``skimage.filters.
    threshold_local``, method "gaussian"); with ``dark_objects`` when it is darker than its local mean plus
    ``offset``. ``per_slice=True`` (default) works on each Z slice in 2D; ``False`` uses a 3D block (cubic).
    """
    arr = as_image(image)
    block = check_int(block_size, "block_size", 3)
    if block % 2 == 0:
        raise InvalidInputError(f"block_size: expected an odd integer >= 3, got {block_size!r}")
    if isinstance(offset, bool) or not isinstance(offset, int | float) or not np.isfinite(offset):
        raise InvalidInputError(f"offset: expected a finite number, got {offset!r}")
    check_per_slice(arr, per_slice)
    work, finite = finite_float(arr)
    if dark_objects:
        work = -work

    def one(plane: NDArray[np.float64]) -> NDArray[np.bool_]:
        if plane.min() == plane.max():
            logger.warning("local threshold: constant image or slice, empty mask")
            return np.zeros(plane.shape, dtype=bool)
        return np.asarray(plane > threshold_local(plane, block, method="gaussian", offset=float(offset)))

    return map_slices(one, work, per_slice) & finite


def multiotsu_mask(
    image: Any, *, classes: int = 3, phase: int = -1, per_slice: bool = False, thresholds: Sequence[float] | None = None
) -> tuple[NDArray[np.bool_], tuple[float, ...]]:
    """Mask of one intensity phase found by multi-level Otsu (``skimage.filters.threshold_multiotsu``).

    Multi-phase materials (FIB-SEM of pores / ionomer / catalyst particles) need more than one threshold: the voxels
    are split into ``classes`` phases by ``classes - 1`` thresholds and phase ``phase`` (0 = darkest, -1 = brightest)
    is returned. Non-finite voxels are left out and never foreground.

    ``thresholds`` given (``classes - 1`` values, e.g. of a whole volume segmented block by block): those instead
    of the image's own.

    Returns:
        ``(mask, thresholds)``: all ``classes - 1`` thresholds of the image, or of each slice in turn when per_slice.
    """
    from skimage.filters import threshold_multiotsu

    n = check_int(classes, "classes", 2)
    if n > 5:
        raise InvalidInputError(f"classes: expected 2 to 5 phases, got {classes!r}")
    if isinstance(phase, bool) or not isinstance(phase, int) or not -n <= phase < n:
        raise InvalidInputError(f"phase: expected an integer in {-n}..{n - 1} (of {n} phases), got {phase!r}")
    index = phase % n
    arr = as_image(image)
    check_per_slice(arr, per_slice)
    finite = np.isfinite(arr) if arr.dtype.kind == "f" else np.ones(arr.shape, dtype=bool)
    if not finite.any():
        raise InvalidInputError(f"image: expected at least one finite voxel, got none (shape {arr.shape})")
    if thresholds is not None and len(thresholds) != n - 1:
        raise InvalidInputError(f"thresholds: expected {n - 1} values for {n} phases, got {thresholds!r}")
    fixed = thresholds
    mask = np.zeros(arr.shape, dtype=bool)
    found: list[float] = []
    for z in range(arr.shape[0]) if per_slice else [None]:
        sl = (slice(None),) * arr.ndim if z is None else (z,)
        part, fin = arr[sl], finite[sl]
        try:
            t = [float(v) for v in (fixed if fixed is not None else threshold_multiotsu(part[fin], classes=n))]
        except ValueError:  # fewer distinct values than phases (e.g. a constant slice)
            logger.warning("%s: fewer than %d distinct values, empty mask", "image" if z is None else f"slice {z}", n)
            found.extend([float("nan")] * (n - 1))
            continue
        found.extend(t)
        lo = -np.inf if index == 0 else t[index - 1]
        hi = np.inf if index == n - 1 else t[index]
        with np.errstate(invalid="ignore"):
            mask[sl] = (part > lo) & (part <= hi) & fin
    return mask, tuple(found)


def streamed_histogram(data: Any, nbins: int = 256) -> tuple[NDArray[Any], NDArray[Any]]:
    """scikit-image's histogram (``exposure.histogram``, ``source_range='image'``) of the finite voxels of a volume
    too large for memory, streamed over its chunks in two passes (range, then counts) with dask (on the active
    ``distributed`` client, if any): one bin per integer value for integer images, ``nbins`` bins over [min, max]
    otherwise. The global thresholds of this module computed from it (``hist=``) equal those of the whole image."""
    import dask.array as da

    x = data if isinstance(data, da.Array) else da.from_array(data, chunks="auto")
    if x.dtype.kind in "iub":
        lo, hi = (int(v) for v in da.compute(x.min(), x.max()))
        counts = da.bincount((x.ravel().astype(np.int64) - lo), minlength=hi - lo + 1).compute()
        return np.asarray(counts), np.arange(lo, hi + 1)
    finite = da.isfinite(x)
    lo, hi = da.compute(da.where(finite, x, np.inf).min(), da.where(finite, x, -np.inf).max())
    if not np.isfinite(lo):
        raise InvalidInputError(f"image: expected at least one finite voxel, got none (shape {x.shape})")
    if lo == hi:
        return np.asarray([int(finite.sum().compute())]), np.asarray([lo])
    counts, edges = da.histogram(x, bins=nbins, range=(lo, hi))  # non-finite voxels fall outside the range
    edges = np.asarray(edges)
    return np.asarray(counts.compute()), (edges[:-1] + edges[1:]) / 2


def histogram_thresholds(hist: tuple[NDArray[Any], NDArray[Any]], method: str, classes: int = 3) -> tuple[float, ...]:
    """The global threshold(s) of a histogram (:func:`streamed_histogram`): ``"otsu"`` (one) or ``"multiotsu"``
    (``classes - 1``) by scikit-image's own functions; ``"triangle"`` and ``"li"`` by their algorithms as scikit-image
    runs them on its histogram (it exposes no ``hist=`` for them), equal to ``threshold_triangle`` /
    ``threshold_li`` on the whole image. Li from a histogram is exact for integer images only (scikit-image
    iterates over every voxel of a float image): refused for a float histogram."""
    from skimage.filters import threshold_multiotsu

    counts, centers = hist
    nonzero = np.flatnonzero(counts)
    if nonzero.size == 0:
        raise InvalidInputError("image: expected at least one finite voxel, got none")
    if method == "otsu":
        if nonzero.size == 1:
            logger.warning("image is constant (%s): no threshold to find, empty mask", centers[nonzero[0]])
            return (float(centers[nonzero[0]]),)
        return (float(threshold_otsu(hist=(counts, centers))),)
    if method == "multiotsu":
        if nonzero.size < classes:
            raise InvalidInputError(f"classes: the image has {nonzero.size} distinct values, fewer than {classes}")
        prob = counts / counts.sum()  # normalised as scikit-image does for an image (its float32 sums need it)
        return tuple(float(v) for v in threshold_multiotsu(hist=(prob, centers), classes=classes))
    if nonzero.size == 1:
        return (float(centers[nonzero[0]]),)
    if method == "triangle":
        return (float(_triangle(counts, centers)),)
    if method == "li":
        if np.asarray(centers).dtype.kind not in "iu":
            raise InvalidInputError("hist: li of float voxels is iterated over the voxels, not a histogram (as "
                                    "scikit-image does); use streamed_li")  # fmt: skip
        return (float(_li_integer(counts, centers)),)
    raise InvalidInputError(
        f"method: expected 'otsu', 'multiotsu', 'triangle' or 'li' from a histogram, got {method!r}"
    )


def _smallest_gap(block: NDArray[Any]) -> NDArray[np.float64]:
    values = np.unique(block[np.isfinite(block)])
    gap = float(np.diff(values).min()) if values.size > 1 else np.inf
    return np.full((1,) * block.ndim, gap)


def streamed_li(data: Any) -> float:
    """Li's minimum cross-entropy threshold of the finite float voxels of a volume too large for memory, iterated as
    ``skimage.filters.threshold_li`` iterates a float image (from the mean, on values shifted to start at 0), with the
    two means of each iteration streamed over the chunks: one pass over the volume per iteration (typically 5-20).
    Tolerance: half the smallest gap between distinct values *within a chunk* (scikit-image: within the image, which
    cannot be had without sorting the volume; a chunk's gap is never smaller, so this stops at most a step earlier).
    Sums are float64 (scikit-image's are in the image's dtype): equal to ``threshold_li`` to float rounding."""
    import dask.array as da

    x = data if isinstance(data, da.Array) else da.from_array(data, chunks="auto")
    x = x.astype(np.float64)
    finite = da.isfinite(x)
    lo, hi, n, total = da.compute(da.where(finite, x, np.inf).min(), da.where(finite, x, -np.inf).max(), finite.sum(),
                                  da.where(finite, x, 0).sum())  # fmt: skip
    if not np.isfinite(lo):
        raise InvalidInputError(f"image: expected at least one finite voxel, got none (shape {x.shape})")
    if lo == hi:
        logger.warning("image is constant (%s): no threshold to find, empty mask", lo)
        return float(lo)
    gaps = x.map_blocks(_smallest_gap, chunks=tuple((1,) * len(c) for c in x.chunks), dtype=np.float64)
    tolerance = float(gaps.min().compute()) / 2
    shifted = da.where(finite, x - lo, -1.0)  # non-finite voxels: below every threshold, and left out of the sums
    total -= n * lo
    t_next, t_curr = total / n, -2 * tolerance
    while abs(t_next - t_curr) > tolerance:
        t_curr = t_next
        above = shifted > t_curr
        fore_sum, fore_n = da.compute(da.where(above, shifted, 0).sum(), above.sum())
        mean_fore, mean_back = fore_sum / fore_n, (total - fore_sum) / (n - fore_n)
        if mean_back == 0:
            break
        t_next = float((mean_back - mean_fore) / (np.log(mean_back) - np.log(mean_fore)))
    return t_next + float(lo)


def _triangle(counts: NDArray[Any], centers: NDArray[Any]) -> Any:
    """The triangle threshold of a histogram: the bin farthest below the line from the peak to the far end of the
    longer tail (Zack et al. 1977), step for step as ``skimage.filters.threshold_triangle``."""
    hist = np.asarray(counts)
    nbins = len(hist)
    peak = int(np.argmax(hist))
    height = float(hist[peak])
    low, high = (int(i) for i in np.flatnonzero(hist)[[0, -1]])
    flip = peak - low < high - peak
    if flip:
        hist, low, peak = hist[::-1], nbins - high - 1, nbins - peak - 1
    width = peak - low
    x = np.arange(width)
    norm = np.sqrt(height**2 + width**2)
    level = int(np.argmax(height / norm * x - width / norm * hist[x + low])) + low
    return centers[nbins - level - 1 if flip else level]


def _li_integer(counts: NDArray[Any], centers: NDArray[Any]) -> float:
    """Li's minimum cross-entropy threshold of an integer histogram (one bin per value), iterated as
    ``skimage.filters.threshold_li`` does for integer images (values shifted to start at 0, tolerance 0.5)."""
    first = int(np.flatnonzero(counts)[0])  # scikit-image's bins start at the image's minimum
    weights = np.asarray(counts)[first:]
    lo = int(centers[first])
    shifted = np.asarray(centers[first:], dtype=np.int64) - lo
    hist = weights.astype(np.float32)  # as scikit-image casts its histogram
    t_next = float(np.sum(shifted * weights) / np.sum(weights))  # the mean of the shifted voxels
    t_curr = -2 * 0.5
    while abs(t_next - t_curr) > 0.5:
        t_curr = t_next
        fore = shifted > t_curr
        mean_fore = np.average(shifted[fore], weights=hist[fore])
        mean_back = np.average(shifted[~fore], weights=hist[~fore])
        if mean_back == 0:
            break
        t_next = float((mean_back - mean_fore) / (np.log(mean_back) - np.log(mean_fore)))
    return t_next + lo
