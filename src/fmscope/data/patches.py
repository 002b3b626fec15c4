"""Patch sampling inside any-size volumes with a minimum-foreground rule.

Foreground = voxels above an Otsu threshold computed once per volume (on a strided subsample of at most
``max_threshold_voxels`` voxels for big volumes). A patch is kept when at least ``min_foreground`` of its voxels are
foreground. Patches of one volume do not overlap when possible; when not enough non-overlapping patches meet the rule
within ``max_tries`` draws, qualifying overlapping ones fill the gap (logged). Only the patch regions are read from
lazy (dask, zarr, h5py) arrays. No padding: a volume smaller than the patch raises.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fmscope.errors import InvalidInputError
from fmscope.segment import threshold_value

logger = logging.getLogger(__name__)

MAX_THRESHOLD_VOXELS = 2_000_000


@dataclass(frozen=True)
class PatchLocation:
    """Where a patch lies: entry of the manifest, corner ``(z, y, x)`` and size ``(Z, Y, X)``."""

    entry_index: int
    start: tuple[int, int, int]
    size: tuple[int, int, int]

    @property
    def slices(self) -> tuple[slice, slice, slice]:
        """Index of the patch in its volume."""
        return (
            slice(self.start[0], self.start[0] + self.size[0]),
            slice(self.start[1], self.start[1] + self.size[1]),
            slice(self.start[2], self.start[2] + self.size[2]),
        )


def patch_size3(patch_size: int | Sequence[int]) -> tuple[int, int, int]:
    """Validate a patch size: one positive int (cubic) or three, ``(Z, Y, X)``."""
    values = [patch_size] * 3 if isinstance(patch_size, int | np.integer) else list(patch_size)
    if len(values) != 3 or not all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in values):
        raise InvalidInputError(f"patch_size: expected an int or 3 ints (Z, Y, X), got {patch_size!r}")
    if any(v <= 0 for v in values):
        raise InvalidInputError(f"patch_size: expected positive sizes, got {patch_size!r}")
    return int(values[0]), int(values[1]), int(values[2])


def to_numpy(region: Any) -> np.ndarray:
    """Materialise an array-like region (numpy, dask, zarr, h5py) as numpy.

    Dask regions are computed with the synchronous scheduler: a patch is a few chunks, and a thread pool per read costs
    more than it saves (DataLoader workers give the parallelism).
    """
    if hasattr(region, "dask") and hasattr(region, "compute"):
        region = region.compute(scheduler="synchronous")
    elif hasattr(region, "compute") and callable(region.compute):
        region = region.compute()
    return np.asarray(region)


def check_volume(data: Any, name: str = "image_data") -> tuple[int, int, int]:
    """Validate a 3D ``(Z, Y, X)`` array-like (anything with ``shape`` and slicing); return its shape."""
    shape = getattr(data, "shape", None)
    if shape is None or len(shape) != 3:
        raise InvalidInputError(f"{name}: expected a 3D (Z, Y, X) array, got shape {shape}")
    if any(int(s) == 0 for s in shape):
        raise InvalidInputError(f"{name}: expected a non-empty array, got shape {tuple(shape)}")
    return int(shape[0]), int(shape[1]), int(shape[2])


def otsu_threshold(data: Any, *, max_voxels: int = MAX_THRESHOLD_VOXELS, name: str = "image_data") -> float:
    """Otsu threshold of a volume, on a strided subsample of at most about ``max_voxels`` voxels."""
    shape = check_volume(data, name)
    n = math.prod(shape)
    step = max(1, math.ceil((n / max_voxels) ** (1 / 3))) if n > max_voxels else 1
    sub = to_numpy(data[::step, ::step, ::step])
    if sub.dtype.kind == "f" and not np.isfinite(sub).any():
        raise InvalidInputError(f"{name}: expected finite voxels to threshold, got none")
    return threshold_value(sub, "otsu")


def _overlaps(a: tuple[int, ...], b: tuple[int, ...], size: tuple[int, int, int]) -> bool:
    return all(abs(i - j) < s for i, j, s in zip(a, b, size, strict=True))


def sample_patches(
    image_data: Any,
    patch_size: int | Sequence[int],
    n: int,
    *,
    rng: np.random.Generator,
    min_foreground: float = 0.05,
    foreground_threshold: float | None = None,
    max_tries: int | None = None,
    entry_index: int = 0,
    name: str = "image_data",
) -> list[PatchLocation]:
    """Choose ``n`` patch corners in a 3D volume whose patches hold at least ``min_foreground`` foreground voxels.

    Args:
        image_data: ``(Z, Y, X)`` numpy, dask, zarr or h5py array; only patch regions (and the threshold subsample)
            are read.
        patch_size: int (cubic) or ``(Z, Y, X)``.
        n: number of patches wanted (>= 1).
        rng: numpy generator; the same generator state gives the same patches.
        min_foreground: fraction in [0, 1]; 0 accepts any patch without reading it.
        foreground_threshold: intensity threshold; ``None`` = Otsu of the volume (see :func:`otsu_threshold`).
        max_tries: random draws allowed (default ``50 * n + 100``).
        entry_index: stored in the returned locations (the volume's index in its manifest).
        name: the volume's name in error messages.

    Returns:
        Up to ``n`` locations (fewer, with a warning, when only fewer qualifying patches were found).

    Raises:
        InvalidInputError: bad arguments, a volume smaller than the patch, or no patch meeting the rule (the message
            names the volume and the best foreground fraction found).
    """
    shape = check_volume(image_data, name)
    size = patch_size3(patch_size)
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise InvalidInputError(f"n: expected a positive int, got {n!r}")
    if not 0.0 <= float(min_foreground) <= 1.0:
        raise InvalidInputError(f"min_foreground: expected a fraction in [0, 1], got {min_foreground!r}")
    tries = 50 * int(n) + 100 if max_tries is None else max_tries
    if isinstance(tries, bool) or not isinstance(tries, int | np.integer) or tries < 1:
        raise InvalidInputError(f"max_tries: expected a positive int, got {max_tries!r}")
    if any(s < p for s, p in zip(shape, size, strict=True)):
        raise InvalidInputError(
            f"{name}: volume of shape {shape} is smaller than patch_size {size}; pretraining does not pad, "
            "use a smaller patch_size or drop the volume"
        )
    need_fg = float(min_foreground) > 0.0
    thr = float(foreground_threshold) if foreground_threshold is not None else None
    if need_fg and thr is None:
        thr = otsu_threshold(image_data, name=name)
    highs = [s - p + 1 for s, p in zip(shape, size, strict=True)]
    accepted: list[tuple[int, int, int]] = []
    spare: list[tuple[int, int, int]] = []  # qualifying but overlapping an accepted patch
    best = -1.0
    for _ in range(int(tries)):
        if len(accepted) >= n:
            break
        start = (int(rng.integers(highs[0])), int(rng.integers(highs[1])), int(rng.integers(highs[2])))
        overlapping = any(_overlaps(start, a, size) for a in accepted)
        if overlapping and (len(spare) >= n or start in spare or start in accepted):
            continue
        if need_fg:
            loc = PatchLocation(entry_index, start, size)
            region = to_numpy(image_data[loc.slices])
            frac = float(np.count_nonzero(region > thr)) / region.size
            best = max(best, frac)
            if frac < min_foreground:
                continue
        (spare if overlapping else accepted).append(start)
    if not accepted:
        raise InvalidInputError(
            f"{name}: no {size} patch with at least {min_foreground:.3g} foreground (voxels > {thr:.6g}) in "
            f"{tries} draws; best fraction found {max(best, 0.0):.4f}; lower min_foreground or drop the volume"
        )
    if len(accepted) < n and spare:
        k = min(n - len(accepted), len(spare))
        logger.info("%s: only %d non-overlapping patches qualify; adding %d overlapping ones", name, len(accepted), k)
        accepted.extend(spare[:k])
    if len(accepted) < n:
        logger.warning("%s: found %d of %d qualifying patches in %d draws", name, len(accepted), n, tries)
    return [PatchLocation(entry_index, s, size) for s in accepted]
