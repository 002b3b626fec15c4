"""Resampling to a target voxel spacing, for numpy and (blockwise, bounded memory) dask arrays.

Geometry: voxel centres are aligned as areas ("grid mode", like ``scipy.ndimage.zoom(grid_mode=True)``). Along an
axis of ``n`` voxels with spacing ``s`` resampled to ``t``, the output has ``m = max(1, round(n * s / t))`` voxels;
output voxel ``o`` samples the input at ``(o + 0.5) * n / m - 0.5`` (borders: nearest). The effective output spacing
is therefore ``s * n / m``, equal to ``t`` up to the rounding of ``m``.

The interpolation is ``scipy.ndimage.affine_transform`` with a diagonal matrix. Labels use order 0 (nearest) and keep
their dtype and values; images keep a float dtype and become float32 when integer with order > 0.
Dask inputs support orders 0 and 1 and are computed block by block (one voxel of overlap), giving the same values
as the numpy path.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import dask.array as da
import numpy as np
from scipy import ndimage

from fmscope.errors import InvalidInputError
from fmscope.intensity._blocks import check_array, is_dask


def check_spacing(value: Sequence[float] | None, name: str) -> tuple[float, ...] | None:
    """Validate a spacing: None, or 1 to 3 positive finite numbers."""
    if value is None:
        return None
    try:
        sp = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise InvalidInputError(f"{name}: expected a sequence of positive numbers, got {value!r}") from None
    if not 1 <= len(sp) <= 3 or any(not (math.isfinite(v) and v > 0) for v in sp):
        raise InvalidInputError(f"{name}: expected 1 to 3 positive finite numbers, got {value!r}")
    return sp


def output_shape(shape: Sequence[int], spacing: Sequence[float], target_spacing: Sequence[float]) -> tuple[int, ...]:
    """Shape after resampling: the last ``len(spacing)`` axes are resampled, leading axes kept."""
    lead = len(shape) - len(spacing)
    tail = [max(1, round(n * s / t)) for n, s, t in zip(shape[lead:], spacing, target_spacing, strict=True)]
    return tuple(shape[:lead]) + tuple(tail)


def _out_dtype(dtype: np.dtype[Any], order: int, is_label: bool) -> np.dtype[Any]:
    if is_label or dtype.kind == "f":
        return dtype
    return np.dtype(np.float32) if order > 0 else dtype


def _resample_block(
    block: np.ndarray,
    scale: tuple[float, ...],
    offset: tuple[float, ...],
    shape: tuple[int, ...],
    order: int,
    dtype: np.dtype[Any],
) -> np.ndarray:
    if 0 in shape:
        return np.empty(shape, dtype=dtype)
    if dtype == np.bool_:
        return _resample_block(block.view(np.uint8), scale, offset, shape, 0, np.dtype(np.uint8)).astype(bool)
    src = block if block.dtype == dtype or block.dtype.kind == "f" else block.astype(np.float32)
    return ndimage.affine_transform(
        src,
        np.asarray(scale),
        offset=np.asarray(offset),
        output_shape=shape,
        output=dtype,
        order=order,
        mode="nearest",
        prefilter=order > 1,
    )


def _boundaries(chunks: tuple[int, ...], n_in: int, n_out: int) -> list[int]:
    """Output chunk boundaries: output voxel o belongs to the input chunk holding its sample coordinate."""
    scale = n_in / n_out
    starts = np.cumsum((0,) + chunks)
    inner = [min(n_out, max(0, math.ceil((b + 0.5) / scale - 0.5))) for b in starts[1:-1]]
    return [0, *inner, n_out]


def _resample_dask(data: da.Array, out_shape: tuple[int, ...], order: int, dtype: np.dtype[Any]) -> da.Array:
    depth = 1
    bounds = [_boundaries(c, n, m) for c, n, m in zip(data.chunks, data.shape, out_shape, strict=True)]
    out_chunks = tuple(tuple(int(b - a) for a, b in zip(bd[:-1], bd[1:], strict=True)) for bd in bounds)
    in_starts = [np.cumsum((0,) + c) for c in data.chunks]
    scales = tuple(n / m for n, m in zip(data.shape, out_shape, strict=True))
    extended = da.overlap.overlap(data, depth=depth, boundary="nearest")

    def block_fn(block: np.ndarray, block_id: tuple[int, ...] | None = None) -> np.ndarray:
        bid = block_id if block_id is not None else (0,) * block.ndim
        shape = tuple(bounds[ax][i + 1] - bounds[ax][i] for ax, i in enumerate(bid))
        offset = tuple(
            (bounds[ax][i] + 0.5) * scales[ax] - 0.5 - (in_starts[ax][i] - depth) for ax, i in enumerate(bid)
        )
        return _resample_block(block, scales, offset, shape, order, dtype)

    return extended.map_blocks(block_fn, chunks=out_chunks, dtype=dtype)


def resample_to_spacing(
    data: Any,
    spacing: Sequence[float],
    target_spacing: Sequence[float],
    *,
    order: int = 1,
    is_label: bool = False,
) -> Any:
    """Resample ``data`` from ``spacing`` to ``target_spacing`` (one value per trailing spatial axis, e.g. (Z, Y, X)).

    ``order`` is the spline order (0 nearest, 1 linear, up to 5 for numpy input); ``is_label`` forces order 0 and
    keeps the dtype, so a label image keeps exactly its label values. Returns numpy for numpy input and dask for dask
    input. See the module doc for the geometry.
    """
    check_array(data)
    sp = check_spacing(spacing, "spacing")
    tsp = check_spacing(target_spacing, "target_spacing")
    if sp is None or tsp is None:
        raise InvalidInputError("spacing/target_spacing: expected sequences of positive numbers, got None")
    if len(tsp) != len(sp):
        raise InvalidInputError(
            f"target_spacing: expected {len(sp)} values (one per axis of spacing {sp}), got {len(tsp)}: {tsp}"
        )
    if len(sp) > data.ndim:
        raise InvalidInputError(f"spacing: expected at most {data.ndim} values for shape {data.shape}, got {sp}")
    if isinstance(order, bool) or not isinstance(order, int | np.integer) or not 0 <= order <= 5:
        raise InvalidInputError(f"order: expected an integer in 0..5, got {order!r}")
    order = 0 if is_label else int(order)
    if is_dask(data) and order > 1:
        raise InvalidInputError(f"order: dask input supports order 0 or 1, got {order}")
    out_shape = output_shape(data.shape, sp, tsp)
    dtype = _out_dtype(np.dtype(data.dtype), order, is_label)
    if out_shape == tuple(data.shape):
        return data.astype(dtype) if is_dask(data) else data.astype(dtype, copy=True)
    if is_dask(data):
        return _resample_dask(data, out_shape, order, dtype)
    scales = tuple(n / m for n, m in zip(data.shape, out_shape, strict=True))
    offset = tuple(0.5 * s - 0.5 for s in scales)
    return _resample_block(data, scales, offset, out_shape, order, dtype)
