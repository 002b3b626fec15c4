"""Input coercion and validation shared by the metric functions (numpy only, no torch)."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from fmscope.errors import InvalidInputError


def to_numpy(array: Any, name: str) -> NDArray[Any]:
    """Return ``array`` as a numpy array, computing dask (or any lazy ``.compute()``) arrays first.

    Raises InvalidInputError naming ``name`` when the input is not numeric or boolean, or has no voxels.
    """
    if hasattr(array, "compute") and callable(array.compute):
        array = array.compute()
    out = np.asarray(array)
    if out.dtype.kind not in "biuf":
        raise InvalidInputError(f"{name}: expected a numeric or boolean array, got dtype {out.dtype}")
    if out.size == 0:
        raise InvalidInputError(f"{name}: expected a non-empty array, got shape {out.shape}")
    return out


def check_no_nan(array: NDArray[Any], name: str) -> None:
    """Raise InvalidInputError when a float ``array`` holds NaN."""
    if array.dtype.kind == "f" and bool(np.isnan(array).any()):
        raise InvalidInputError(f"{name}: expected no NaN values, got {int(np.isnan(array).sum())} NaN voxel(s)")


def check_same_shape(a: NDArray[Any], b: NDArray[Any], name_a: str, name_b: str) -> None:
    """Raise InvalidInputError naming both shapes when they differ."""
    if a.shape != b.shape:
        raise InvalidInputError(f"{name_a} and {name_b}: expected the same shape, got {a.shape} and {b.shape}")


def as_mask(array: Any, name: str) -> NDArray[np.bool_]:
    """Boolean-like input (nonzero = foreground) as a bool array; NaN raises."""
    arr = to_numpy(array, name)
    check_no_nan(arr, name)
    return arr != 0


def as_labels(array: Any, name: str) -> NDArray[np.int64]:
    """Integer label input as int64; floats are accepted only when every value is a whole number."""
    arr = to_numpy(array, name)
    check_no_nan(arr, name)
    if arr.dtype.kind == "f" and not (bool(np.all(np.isfinite(arr))) and bool(np.all(arr == np.round(arr)))):
        raise InvalidInputError(f"{name}: expected integer labels, got non-integer float values ({arr.dtype})")
    if arr.dtype == np.uint64 and arr.size and int(arr.max()) > np.iinfo(np.int64).max:
        raise InvalidInputError(f"{name}: expected labels below 2**63, got {int(arr.max())}")
    return arr.astype(np.int64, copy=False)


def safe_ratio(num: float, den: float, *, empty: float) -> float:
    """``num / den``, or ``empty`` when the denominator is zero."""
    return float(num) / float(den) if den else float(empty)
