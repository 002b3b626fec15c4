"""Per-voxel and filter steps of raw-data adaptation. Every function takes numpy or dask and returns the same kind.

Inputs are never modified. Dask inputs are processed blockwise: per-voxel steps with ``map_blocks``, filters with
``map_overlap`` (depth = filter radius, reflected borders, so the result equals the whole-array result), CLAHE on
blocks that hold whole slices.

Non-finite voxels: ``normalize``/``to_uint8`` map NaN to 0 and +Inf/-Inf to the upper/lower end of the output range.
Filters (``denoise``) spread NaN to neighbours (which normalisation then maps to 0).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any, Literal, get_args

import numpy as np
from scipy import ndimage
from skimage.exposure import equalize_adapthist

from fmscope.errors import InvalidInputError
from fmscope.intensity._blocks import check_array, is_dask

logger = logging.getLogger(__name__)

DenoiseMethod = Literal["none", "gaussian", "median"]
DENOISE_METHODS: tuple[str, ...] = get_args(DenoiseMethod)
GAUSSIAN_TRUNCATE = 4.0


def _work_dtype(dtype: np.dtype[Any]) -> type[np.floating[Any]]:
    """float32 where it represents the input exactly enough (<= 16-bit integers, bool, float16/32), else float64."""
    if dtype.kind in "biu" and dtype.itemsize <= 2 or dtype in (np.float16, np.float32):
        return np.float32
    return np.float64


def check_window(low: float, high: float) -> tuple[float, float]:
    """Validate an intensity window: finite numbers with low < high."""
    try:
        lo, hi = float(low), float(high)
    except (TypeError, ValueError):
        raise InvalidInputError(f"low/high: expected numbers, got low={low!r}, high={high!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise InvalidInputError(f"low/high: expected finite numbers, got low={lo}, high={hi}")
    if not lo < hi:
        raise InvalidInputError(f"low/high: expected low < high, got low={lo}, high={hi}")
    return lo, hi


def window_block(block: np.ndarray, low: float, high: float, clip: bool = True) -> np.ndarray:
    """Map [low, high] linearly to [0, 1] as float32; NaN -> 0, +Inf -> 1, -Inf -> 0.

    A degenerate window (``low == high``, e.g. from a constant volume) gives a step: 1 above ``low``, else 0.
    """
    if high <= low:
        out = np.greater(block, low).astype(np.float32)
        return out
    work = _work_dtype(block.dtype)
    y = np.subtract(block, work(low), dtype=work)
    np.multiply(y, work(1.0 / (high - low)), out=y)
    np.nan_to_num(y, copy=False, nan=0.0, posinf=1.0, neginf=0.0)
    if clip:
        np.clip(y, 0.0, 1.0, out=y)
    return y.astype(np.float32, copy=False)


def normalize(data: Any, low: float, high: float, *, clip: bool = True) -> Any:
    """Linear window ``(data - low) / (high - low)`` as float32, clipped to [0, 1] by default.

    NaN maps to 0 and +/-Inf to 1/0 (a warning is logged for numpy input holding any). Raises when ``low >= high``.
    """
    check_array(data)
    lo, hi = check_window(low, high)
    if is_dask(data):
        return data.map_blocks(window_block, lo, hi, clip, dtype=np.float32)
    if data.dtype.kind == "f" and not np.isfinite(data).all():
        logger.warning("data: NaN/Inf voxels present; NaN -> 0, +Inf -> 1, -Inf -> 0")
    return window_block(data, lo, hi, clip)


def to_uint8_block(x01: np.ndarray) -> np.ndarray:
    """[0, 1] floats to uint8 by rounding ``x * 255``."""
    return np.rint(np.multiply(x01, 255.0, dtype=np.float32)).astype(np.uint8)


def to_uint8(data: Any, low: float, high: float) -> Any:
    """Window ``[low, high]`` to 8 bits (0..255), as promptable models (SAM) expect. NaN -> 0."""
    x = normalize(data, low, high, clip=True)
    if is_dask(x):
        return x.map_blocks(to_uint8_block, dtype=np.uint8)
    return to_uint8_block(x)


def check_gamma(gamma: float) -> float:
    try:
        g = float(gamma)
    except (TypeError, ValueError):
        raise InvalidInputError(f"gamma: expected a positive number, got {gamma!r}") from None
    if not (math.isfinite(g) and g > 0):
        raise InvalidInputError(f"gamma: expected a positive finite number, got {gamma}")
    return g


def gamma_block(x01: np.ndarray, gamma: float) -> np.ndarray:
    y = np.clip(x01, 0.0, 1.0).astype(np.float32, copy=False)
    if gamma != 1.0:
        np.power(y, np.float32(gamma), out=y)
    return y


def apply_gamma(x01: Any, gamma: float) -> Any:
    """Gamma curve ``x ** gamma`` on values in [0, 1] (clipped there first); float32 out, monotonic in ``x``."""
    check_array(x01, "x01")
    g = check_gamma(gamma)
    if is_dask(x01):
        return x01.map_blocks(gamma_block, g, dtype=np.float32)
    return gamma_block(x01, g)


def check_clahe(clip_limit: float, kernel_size: int | Sequence[int] | None) -> tuple[float, tuple[int, ...] | None]:
    try:
        c = float(clip_limit)
    except (TypeError, ValueError):
        raise InvalidInputError(f"clahe_clip_limit: expected a number in (0, 1], got {clip_limit!r}") from None
    if not 0.0 < c <= 1.0:
        raise InvalidInputError(f"clahe_clip_limit: expected a number in (0, 1], got {clip_limit}")
    if kernel_size is None:
        return c, None
    ks = (kernel_size,) if isinstance(kernel_size, int | np.integer) else tuple(kernel_size)
    if not ks or any(not isinstance(k, int | np.integer) or isinstance(k, bool) or k < 1 for k in ks):
        raise InvalidInputError(f"clahe_kernel_size: expected positive integers or None, got {kernel_size!r}")
    return c, tuple(int(k) for k in ks)


def _clahe_image(img: np.ndarray, clip_limit: float, kernel_size: tuple[int, ...] | None) -> np.ndarray:
    x = np.clip(img, 0.0, 1.0)
    if x.min() == x.max():  # equalize_adapthist would stretch a constant image to 1.0
        return x.astype(np.float32)
    ks = kernel_size if kernel_size is None or len(kernel_size) != 1 else kernel_size * x.ndim
    return equalize_adapthist(x, kernel_size=ks, clip_limit=clip_limit).astype(np.float32)


def _clahe_slices(block: np.ndarray, clip_limit: float, kernel_size: tuple[int, ...] | None) -> np.ndarray:
    if block.ndim == 2:
        return _clahe_image(block, clip_limit, kernel_size)
    return np.stack([_clahe_image(s, clip_limit, kernel_size) for s in block]) if len(block) else block


def apply_clahe(
    x01: Any, clip_limit: float = 0.01, kernel_size: int | Sequence[int] | None = None, per_slice: bool = True
) -> Any:
    """Contrast-limited adaptive histogram equalisation (``skimage.exposure.equalize_adapthist``) of [0, 1] data.

    2D images are equalised as a whole; 3D stacks slice by slice along Z when ``per_slice`` (default), else as one
    3D volume (a dask volume is then gathered into one block: it must fit in memory). ``kernel_size`` is an int or
    one int per axis of the equalised image (skimage's default, 1/8 of each side, when None). Like any adaptive
    equalisation, each image (slice) is stretched to span [0, 1]; constant images are left as they are. float32 out.
    """
    check_array(x01, "x01", ndims=(2, 3))
    c, ks = check_clahe(clip_limit, kernel_size)
    image_ndim = 2 if (per_slice or x01.ndim == 2) else 3
    if ks is not None and len(ks) not in (1, image_ndim):
        raise InvalidInputError(f"clahe_kernel_size: expected 1 or {image_ndim} values, got {ks}")
    if is_dask(x01):
        if image_ndim == 3:
            logger.info("apply_clahe: 3D CLAHE gathers the dask volume into a single block")
            return x01.rechunk(-1).map_blocks(_clahe_image, c, ks, dtype=np.float32)
        chunks = (x01.chunks[0], -1, -1) if x01.ndim == 3 else (-1, -1)
        return x01.rechunk(chunks).map_blocks(_clahe_slices, c, ks, dtype=np.float32)
    return _clahe_slices(x01, c, ks) if image_ndim == 2 else _clahe_image(x01, c, ks)


def check_denoise(method: str, sigma: float, size: int) -> tuple[str, float, int]:
    if method not in DENOISE_METHODS:
        raise InvalidInputError(f"denoise: expected one of {list(DENOISE_METHODS)}, got {method!r}")
    try:
        s = float(sigma)
    except (TypeError, ValueError):
        raise InvalidInputError(f"denoise_sigma: expected a positive number, got {sigma!r}") from None
    if not (math.isfinite(s) and s > 0):
        raise InvalidInputError(f"denoise_sigma: expected a positive finite number, got {sigma}")
    if not isinstance(size, int | np.integer) or isinstance(size, bool) or size < 1:
        raise InvalidInputError(f"denoise_size: expected a positive integer, got {size!r}")
    return method, s, int(size)


def _gaussian_block(block: np.ndarray, sigma: float) -> np.ndarray:
    out = block.astype(_work_dtype(block.dtype))
    return ndimage.gaussian_filter(out, sigma, mode="reflect", truncate=GAUSSIAN_TRUNCATE, output=out.dtype)


def _median_block(block: np.ndarray, size: int) -> np.ndarray:
    return ndimage.median_filter(block, size=size, mode="reflect")


def denoise(data: Any, method: DenoiseMethod, sigma: float = 1.0, size: int = 3) -> Any:
    """Denoise raw data: ``'gaussian'`` (isotropic, ``sigma`` voxels; float32 out, float64 for float64 input),
    ``'median'`` (cube of side ``size``; dtype kept) or ``'none'`` (a copy for numpy, the same graph for dask).

    Borders are reflected (scipy ``mode='reflect'``); dask inputs use ``map_overlap`` with the filter radius as depth,
    so blockwise and whole-array results agree.
    """
    check_array(data)
    m, s, n = check_denoise(method, sigma, size)
    if m == "none":
        return data if is_dask(data) else data.copy()
    if m == "gaussian":
        radius = int(GAUSSIAN_TRUNCATE * s + 0.5)
        out_dtype = _work_dtype(np.dtype(data.dtype))
        if is_dask(data):
            return data.map_overlap(_gaussian_block, depth=radius, boundary="reflect", dtype=out_dtype, sigma=s)
        return _gaussian_block(data, s)
    if is_dask(data):
        return data.map_overlap(_median_block, depth=n // 2, boundary="reflect", dtype=data.dtype, size=n)
    return _median_block(data, n)
