"""Multiscale pyramids: per-level downsampling factors and 2x downsampling of (dask) arrays.

Y and X are halved at every level; Z is halved too while it is not much coarser than the new in-plane spacing
(``spacing_z < 2 * spacing_yx``), so anisotropic EM stacks (e.g. 50 nm sections, 4 nm pixels) keep their Z until the
pyramid becomes near-isotropic. C and T are never downsampled. Sizes round up (``ceil(n / 2)``).
Intensity images use the 2x2(x2) block mean (edge-replicated at odd borders, rounded back to integer dtypes);
bool images and label images (``labels=True``) use nearest sampling (stride 2), which never invents label values.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from fmscope.errors import InvalidInputError

AUTO_MIN_SIZE = 256  # auto pyramids stop once the largest Y/X size of a level is at most this


def level_factors(axes: str, shape: Sequence[int], spacing: Sequence[float], n_levels: int) -> list[tuple[int, ...]]:
    """Downsampling factor of each level relative to the previous one (``n_levels - 1`` entries).

    ``spacing`` is per spatial axis of ``axes``. Raises InvalidInputError when a level would need to shrink a Y/X
    axis that is already 1 voxel wide.
    """
    if n_levels < 1:
        raise InvalidInputError(f"pyramid_levels: expected at least 1, got {n_levels}")
    spatial = [a for a in axes if a in "ZYX"]
    sp = dict(zip(spatial, (float(s) for s in spacing), strict=True))
    size = dict(zip(axes, (int(s) for s in shape), strict=True))
    out: list[tuple[int, ...]] = []
    for level in range(1, n_levels):
        if min(size["Y"], size["X"]) < 2:
            raise InvalidInputError(
                f"pyramid_levels: shape {tuple(shape)} allows at most {level} levels, got {n_levels}"
            )
        new_yx = 2 * min(sp["Y"], sp["X"])
        factors = []
        for a in axes:
            if a in "YX" or (a == "Z" and size["Z"] >= 2 and sp["Z"] < new_yx):
                factors.append(2)
                sp[a] *= 2
                size[a] = -(-size[a] // 2)
            else:
                factors.append(1)
        out.append(tuple(factors))
    return out


def auto_levels(axes: str, shape: Sequence[int]) -> int:
    """Number of levels so that the coarsest level's largest Y/X size is at most ``AUTO_MIN_SIZE``."""
    size = max(int(shape[axes.index("Y")]), int(shape[axes.index("X")]))
    levels = 1
    while size > AUTO_MIN_SIZE:
        size = -(-size // 2)
        levels += 1
    return levels


def downsample(data: Any, factors: Sequence[int], method: str = "mean") -> Any:
    """Downsample a dask (or numpy) array by integer ``factors`` per axis; returns dask, same dtype.

    ``method`` is ``'mean'`` (block mean) or ``'nearest'`` (stride). Bool data always uses ``'nearest'``.
    """
    import dask.array as da

    x = da.asarray(data)
    factors = tuple(int(f) for f in factors)
    if len(factors) != x.ndim or any(f < 1 for f in factors):
        raise InvalidInputError(f"factors: expected {x.ndim} positive integers, got {factors}")
    if method not in ("mean", "nearest"):
        raise InvalidInputError(f"method: expected 'mean' or 'nearest', got {method!r}")
    if all(f == 1 for f in factors):
        return x
    dtype = x.dtype
    if method == "nearest" or dtype.kind == "b":
        return x[tuple(slice(None, None, f) for f in factors)]
    pad = [(0, (-n) % f) for n, f in zip(x.shape, factors, strict=True)]
    if any(p for _, p in pad):
        x = da.pad(x, pad, mode="edge")
    x = x.rechunk(tuple(max(f, (c[0] // f) * f) for c, f in zip(x.chunks, factors, strict=True)))
    axes = {i: f for i, f in enumerate(factors) if f > 1}
    out = da.coarsen(np.mean, x.astype(np.float64), axes, trim_excess=False)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        out = da.clip(da.round(out), info.min, info.max)
    return out.astype(dtype)
