"""Shared helpers of the intensity package: array-kind checks and bounded-memory iteration over blocks."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import dask
import dask.array as da
import numpy as np

from fmscope.errors import InvalidInputError

T = TypeVar("T")

# A numpy array is streamed in slabs along axis 0 of about this many voxels, so temporaries stay small.
SLAB_VOXELS = 1 << 22


def is_dask(data: Any) -> bool:
    """True for a dask array."""
    return isinstance(data, da.Array)


def check_array(data: Any, name: str = "data", ndims: tuple[int, ...] | None = None) -> None:
    """Validate an input: a numpy or dask array, non-empty, numeric or bool, with an accepted number of dimensions."""
    if not isinstance(data, np.ndarray | da.Array):
        raise InvalidInputError(f"{name}: expected a numpy or dask array, got {type(data).__name__}")
    if ndims is not None and data.ndim not in ndims:
        raise InvalidInputError(f"{name}: expected {' or '.join(map(str, ndims))} dimensions, got shape {data.shape}")
    if data.size == 0:
        raise InvalidInputError(f"{name}: expected a non-empty array, got shape {data.shape}")
    kind = np.dtype(data.dtype).kind
    if kind not in "biuf":
        raise InvalidInputError(f"{name}: expected a bool, integer or float array, got dtype {data.dtype}")


def n_blocks(data: Any) -> int:
    """How many pieces :func:`iter_block_results` visits."""
    if is_dask(data):
        return int(math.prod(data.numblocks))
    if data.ndim == 0:
        return 1
    return math.ceil(data.shape[0] / _slab_rows(data))


def _slab_rows(data: np.ndarray) -> int:
    return max(1, SLAB_VOXELS // max(1, math.prod(data.shape[1:])))


def iter_block_results(data: Any, func: Callable[[np.ndarray], T], advance: Callable[[int], None]) -> Iterator[T]:
    """Yield ``func(block)`` for every block of ``data`` (order unspecified), never holding the whole array.

    A numpy array is visited in slabs along axis 0. A dask array is visited chunk by chunk, a small batch of chunks
    at a time through the active dask scheduler (threads by default), so peak memory is a few chunks.
    """
    if not is_dask(data):
        arr = np.asarray(data).reshape(-1) if data.ndim == 0 else data
        rows = _slab_rows(arr)
        for start in range(0, arr.shape[0], rows):
            yield func(arr[start : start + rows])
            advance(1)
        return
    blocks = list(data.to_delayed().ravel())
    batch = max(2, 2 * (os.cpu_count() or 1))
    delayed_func = dask.delayed(func, pure=True)
    for start in range(0, len(blocks), batch):
        part = blocks[start : start + batch]
        yield from dask.compute(*[delayed_func(b) for b in part])
        advance(len(part))
