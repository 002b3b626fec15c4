"""Input validation and per-slice helpers shared by the classical segmenters."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fmscope.errors import InvalidInputError


def as_image(image: Any, name: str = "image") -> NDArray[Any]:
    """Validate a 2D (Y, X) or 3D (Z, Y, X) numeric image (dask arrays are computed); returns a numpy view."""
    if hasattr(image, "compute") and callable(image.compute):
        image = image.compute()
    arr = np.asarray(image)
    if arr.ndim not in (2, 3):
        raise InvalidInputError(f"{name}: expected a 2D (Y, X) or 3D (Z, Y, X) array, got shape {arr.shape}")
    if arr.size == 0:
        raise InvalidInputError(f"{name}: expected a non-empty array, got shape {arr.shape}")
    if arr.dtype.kind not in "biuf":
        raise InvalidInputError(f"{name}: expected a numeric or boolean array, got dtype {arr.dtype}")
    return arr


def as_bool_mask(mask: Any, name: str = "mask") -> NDArray[np.bool_]:
    """Validate a 2D/3D mask (nonzero = foreground; NaN raises) and return it as bool."""
    arr = as_image(mask, name)
    if arr.dtype.kind == "f" and bool(np.isnan(arr).any()):
        raise InvalidInputError(f"{name}: expected no NaN values in a mask, got {int(np.isnan(arr).sum())}")
    return arr != 0


def finite_float(image: NDArray[Any]) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Float64 copy of ``image`` with non-finite voxels replaced by the median of the finite ones, and the finite mask.

    The fill keeps filters (smoothing, local means) from spreading NaN; callers exclude the filled voxels from the
    foreground with the returned mask.
    """
    work = image.astype(np.float64, copy=True)
    finite = np.isfinite(work)
    if not finite.all():
        fill = float(np.median(work[finite])) if finite.any() else 0.0
        work[~finite] = fill
    return work, finite


def check_per_slice(arr: NDArray[Any], per_slice: bool) -> None:
    """``per_slice`` needs a 3D stack."""
    if per_slice and arr.ndim != 3:
        raise InvalidInputError(f"per_slice: expected a 3D (Z, Y, X) image when True, got shape {arr.shape}")


def map_slices(func: Callable[[NDArray[Any]], NDArray[Any]], arr: NDArray[Any], per_slice: bool) -> NDArray[Any]:
    """Apply ``func`` to each Z slice of a 3D array when ``per_slice`` (stacking the results), else to the whole."""
    if not per_slice:
        return func(arr)
    return np.stack([func(arr[z]) for z in range(arr.shape[0])])


def check_int(value: Any, name: str, minimum: int) -> int:
    """Validate an integer parameter >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise InvalidInputError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return int(value)
