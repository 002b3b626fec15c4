"""Robust intensity statistics of a whole volume, streamed over its blocks with bounded memory.

Percentiles use numpy's default ``'linear'`` definition (virtual index ``(n - 1) * q / 100``, interpolation between
the two neighbouring order statistics), computed with the same float64 arithmetic as ``np.percentile``.

* bool and integer dtypes of at most 16 bits: one pass accumulating an exact histogram (``np.bincount``); results are
  exact (``exact=True``) and equal ``np.percentile(data.astype(np.float64), q)`` bit for bit. (numpy itself, called
  on int8/int16 data, overflows when the two neighbours differ by more than the dtype's maximum; we do not.)
* other dtypes (floats, 32/64-bit integers): pass 1 finds min/max/mean/std, pass 2 builds a 65,536-bin histogram
  between min and max, pass 3 gathers the voxels of the few bins holding the needed order statistics and selects
  them exactly. When those bins together hold more than ``REFINE_LIMIT`` voxels (heavily repeated values), pass 3 is
  skipped and each order statistic is interpolated inside its bin: the error is then at most one bin width,
  ``(max - min) / 65536``, and ``exact=False``.

Non-finite voxels (NaN, +/-Inf) are excluded from every statistic and counted in ``n_nonfinite`` (a warning is
logged). ``n_voxels`` counts all voxels. Empty input and input without any finite voxel raise ``InvalidInputError``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fmscope.errors import InvalidInputError
from fmscope.intensity._blocks import check_array, iter_block_results, n_blocks
from fmscope.utils.progress import ProgressCallback, make_progress

logger = logging.getLogger(__name__)

DEFAULT_PERCENTILES = (0.5, 1.0, 99.0, 99.5, 99.8)
N_BINS = 1 << 16
REFINE_LIMIT = 1 << 22


@dataclass(frozen=True)
class IntensityStats:
    """Statistics of the finite voxels of an array.

    Attributes:
        min, max, mean, std: of the finite voxels (``std`` is the population standard deviation, ddof=0).
        percentiles: ``(q, value)`` pairs, ``q`` in [0, 100], in the order requested.
        n_voxels: all voxels, finite or not.
        n_nonfinite: NaN and +/-Inf voxels (excluded from the statistics).
        dtype: numpy dtype name of the data.
        exact: whether the percentiles are exact (see the module doc for the tolerance otherwise).
    """

    min: float
    max: float
    mean: float
    std: float
    percentiles: tuple[tuple[float, float], ...]
    n_voxels: int
    n_nonfinite: int
    dtype: str
    exact: bool

    def value(self, q: float) -> float:
        """The value of percentile ``q``; raises if it was not computed."""
        for pq, pv in self.percentiles:
            if abs(pq - float(q)) <= 1e-9:
                return pv
        raise InvalidInputError(f"q: percentile {q} was not computed; available: {[p for p, _ in self.percentiles]}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "min": self.min,
            "max": self.max,
            "mean": self.mean,
            "std": self.std,
            "percentiles": [[q, v] for q, v in self.percentiles],
            "n_voxels": self.n_voxels,
            "n_nonfinite": self.n_nonfinite,
            "dtype": self.dtype,
            "exact": self.exact,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> IntensityStats:
        expected = set(cls.__dataclass_fields__)
        if set(d) != expected:
            raise InvalidInputError(f"IntensityStats: expected keys {sorted(expected)}, got {sorted(d)}")
        return cls(
            min=float(d["min"]),
            max=float(d["max"]),
            mean=float(d["mean"]),
            std=float(d["std"]),
            percentiles=tuple((float(q), float(v)) for q, v in d["percentiles"]),
            n_voxels=int(d["n_voxels"]),
            n_nonfinite=int(d["n_nonfinite"]),
            dtype=str(d["dtype"]),
            exact=bool(d["exact"]),
        )


def check_percentiles(percentiles: Sequence[float], name: str = "percentiles") -> tuple[float, ...]:
    """Validate percentile levels: finite numbers in [0, 100]."""
    try:
        qs = tuple(float(q) for q in percentiles)
    except (TypeError, ValueError):
        raise InvalidInputError(f"{name}: expected a sequence of numbers in [0, 100], got {percentiles!r}") from None
    bad = [q for q in qs if not (0.0 <= q <= 100.0)]
    if bad:
        raise InvalidInputError(f"{name}: expected values in [0, 100], got {bad}")
    return qs


def _virtual_indices(n: int, qs: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """numpy's 'linear' method: previous/next ranks and the interpolation weight, with numpy's float arithmetic."""
    virtual = (n - 1) * np.true_divide(np.asarray(qs, dtype=np.float64), 100)
    prev = np.floor(virtual)
    gamma = virtual - prev
    prev_i = prev.astype(np.intp)
    next_i = np.minimum(prev_i + 1, n - 1)
    prev_i = np.minimum(prev_i, n - 1)
    return prev_i, next_i, gamma


def _lerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """numpy's ``_lerp`` (the two-sided form that is exact at t = 0 and t = 1), in float64."""
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    diff = b - a
    out = a + diff * t
    np.subtract(b, diff * (1 - t), out=out, where=t >= 0.5)
    return out


# ---------------------------------------------------------------- exact histogram path (<= 16-bit integers, bool)


def _int_offset(dtype: np.dtype[Any]) -> tuple[int, int]:
    """(number of levels, value of level 0) of a small integer dtype."""
    if dtype.kind == "b":
        return 2, 0
    info = np.iinfo(dtype)
    return 1 << (8 * dtype.itemsize), int(info.min)


def _hist_block(block: np.ndarray) -> np.ndarray:
    dtype = block.dtype
    if dtype.kind == "b":
        return np.bincount(block.reshape(-1).view(np.uint8), minlength=2)
    unsigned = np.dtype(f"u{dtype.itemsize}")
    flat = block.reshape(-1)
    if dtype.kind == "i":  # order-preserving map to unsigned: flip the sign bit
        flat = flat.view(unsigned) ^ unsigned.type(1 << (8 * dtype.itemsize - 1))
    return np.bincount(flat, minlength=1 << (8 * dtype.itemsize))


def _stats_from_hist(counts: np.ndarray, offset: int, qs: tuple[float, ...], dtype: str) -> IntensityStats:
    n = int(counts.sum())
    values = np.arange(counts.size, dtype=np.float64) + offset
    nonzero = np.flatnonzero(counts)
    mean = float(np.dot(counts, values) / n)
    var = float(np.dot(counts, (values - mean) ** 2) / n)
    cum = np.cumsum(counts)
    prev_i, next_i, gamma = _virtual_indices(n, qs)
    a = values[np.searchsorted(cum, prev_i, side="right")]
    b = values[np.searchsorted(cum, next_i, side="right")]
    pvals = _lerp(a, b, gamma)
    return IntensityStats(
        min=float(values[nonzero[0]]),
        max=float(values[nonzero[-1]]),
        mean=mean,
        std=float(np.sqrt(var)),
        percentiles=tuple((q, float(v)) for q, v in zip(qs, pvals, strict=True)),
        n_voxels=n,
        n_nonfinite=0,
        dtype=dtype,
        exact=True,
    )


# ---------------------------------------------------------------- general path (floats, wide integers)


@dataclass(frozen=True)
class _Moments:
    n: int
    n_nonfinite: int
    min: float
    max: float
    mean: float
    m2: float

    def merge(self, other: _Moments) -> _Moments:
        """Chan et al. parallel merge of counts, means and centred second moments."""
        if other.n == 0:
            return _Moments(self.n, self.n_nonfinite + other.n_nonfinite, self.min, self.max, self.mean, self.m2)
        if self.n == 0:
            return _Moments(other.n, self.n_nonfinite + other.n_nonfinite, other.min, other.max, other.mean, other.m2)
        n = self.n + other.n
        delta = other.mean - self.mean
        return _Moments(
            n=n,
            n_nonfinite=self.n_nonfinite + other.n_nonfinite,
            min=min(self.min, other.min),
            max=max(self.max, other.max),
            mean=self.mean + delta * other.n / n,
            m2=self.m2 + other.m2 + delta * delta * self.n * other.n / n,
        )


def _finite(block: np.ndarray) -> np.ndarray:
    flat = block.reshape(-1)
    if flat.dtype.kind == "f":
        return flat[np.isfinite(flat)]
    return flat


def _moments_block(block: np.ndarray) -> _Moments:
    f = _finite(block)
    if f.size == 0:
        return _Moments(0, block.size, 0.0, 0.0, 0.0, 0.0)
    f64 = f.astype(np.float64)
    mean = float(f64.mean())
    m2 = float(((f64 - mean) ** 2).sum())
    return _Moments(f.size, block.size - f.size, float(f64.min()), float(f64.max()), mean, m2)


def _bin_index(f: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Monotone bin index in [0, N_BINS) of finite values in [lo, hi] (lo < hi)."""
    scale = N_BINS / (hi - lo)
    idx = ((f.astype(np.float64) - lo) * scale).astype(np.intp)
    return np.clip(idx, 0, N_BINS - 1, out=idx)


def _general_stats(
    data: Any, qs: tuple[float, ...], advance: Any, mom: _Moments
) -> tuple[tuple[tuple[float, float], ...], bool]:
    n = mom.n
    lo, hi = mom.min, mom.max
    prev_i, next_i, gamma = _virtual_indices(n, qs)
    if lo == hi or not qs:
        advance(2 * n_blocks(data))
        return tuple((q, float(lo)) for q in qs), True

    def hist(block: np.ndarray) -> np.ndarray:
        return np.bincount(_bin_index(_finite(block), lo, hi), minlength=N_BINS)

    counts = np.zeros(N_BINS, dtype=np.int64)
    for part in iter_block_results(data, hist, advance):
        counts += part
    cum = np.cumsum(counts)
    ranks = np.concatenate([prev_i, next_i])
    rank_bins = np.searchsorted(cum, ranks, side="right")
    wanted = np.unique(rank_bins)
    if int(counts[wanted].sum()) > REFINE_LIMIT:
        # Too many candidates to gather: interpolate each order statistic inside its bin (error <= one bin width).
        logger.info("percentiles: approximate (tolerance one bin width, %.3g)", (hi - lo) / N_BINS)
        width = (hi - lo) / N_BINS
        before = cum[rank_bins] - counts[rank_bins]
        frac = (ranks - before + 0.5) / counts[rank_bins]
        approx = np.clip(lo + (rank_bins + frac) * width, lo, hi)
        pvals = _lerp(approx[: len(qs)], approx[len(qs) :], gamma)
        advance(n_blocks(data))
        return tuple((q, float(v)) for q, v in zip(qs, pvals, strict=True)), False
    table = np.zeros(N_BINS, dtype=bool)
    table[wanted] = True

    def gather(block: np.ndarray) -> np.ndarray:
        f = _finite(block)
        return f[table[_bin_index(f, lo, hi)]]

    candidates = np.sort(np.concatenate(list(iter_block_results(data, gather, advance))))
    # The candidates are the whole content of the wanted bins, bin after bin (binning is monotone), so rank r of the
    # data sits at: (voxels of wanted bins before its bin) + (r - voxels of all bins before its bin).
    wanted_counts = counts[wanted]
    wanted_offset = np.cumsum(wanted_counts) - wanted_counts
    local = wanted_offset[np.searchsorted(wanted, rank_bins)] + ranks - (cum[rank_bins] - counts[rank_bins])
    picked = candidates[local]
    pvals = _lerp(picked[: len(qs)], picked[len(qs) :], gamma)
    return tuple((q, float(v)) for q, v in zip(qs, pvals, strict=True)), True


def compute_stats(
    data: Any,
    *,
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
    progress: ProgressCallback | bool | None = None,
) -> IntensityStats:
    """Min, max, mean, std and percentiles of the finite voxels of ``data`` (numpy or dask, any shape).

    A dask array is streamed chunk by chunk (never materialised); a numpy array is streamed in slabs. See the module
    doc for exactness and the treatment of non-finite voxels.
    """
    check_array(data)
    qs = check_percentiles(percentiles)
    dtype = np.dtype(data.dtype)
    blocks = n_blocks(data)
    small_int = dtype.kind == "b" or (dtype.kind in "iu" and dtype.itemsize <= 2)
    passes = 1 if small_int else 3
    with make_progress(progress, blocks * passes, "intensity statistics") as advance:
        if small_int:
            levels, offset = _int_offset(dtype)
            counts = np.zeros(levels, dtype=np.int64)
            for part in iter_block_results(data, _hist_block, advance):
                counts += part
            return _stats_from_hist(counts, offset, qs, dtype.name)
        mom = _Moments(0, 0, 0.0, 0.0, 0.0, 0.0)
        for block_mom in iter_block_results(data, _moments_block, advance):
            mom = mom.merge(block_mom)
        if mom.n == 0:
            raise InvalidInputError(f"data: expected at least one finite voxel, got {mom.n_nonfinite} NaN/Inf voxels")
        if mom.n_nonfinite:
            logger.warning(
                "data: %d of %d voxels are NaN/Inf; they are excluded from the statistics",
                mom.n_nonfinite,
                data.size,
            )
        pairs, exact = _general_stats(data, qs, advance, mom)
    return IntensityStats(
        min=mom.min,
        max=mom.max,
        mean=mom.mean,
        std=float(np.sqrt(mom.m2 / mom.n)),
        percentiles=pairs,
        n_voxels=int(data.size),
        n_nonfinite=mom.n_nonfinite,
        dtype=dtype.name,
        exact=exact,
    )
