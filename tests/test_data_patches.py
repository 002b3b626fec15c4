"""Patch sampling: minimum foreground, determinism, lazy reads, size and no-foreground errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import RecordingArray
from fmscope.data import PatchLocation, lightsheet_phantom, otsu_threshold, sample_patches
from fmscope.errors import InvalidInputError
from fmscope.io import read_image, write_image


@pytest.fixture(scope="module")
def volume() -> np.ndarray:
    """Foreground only in the upper half in Z, so the rule matters."""
    v = lightsheet_phantom((48, 48, 48), seed=1).image
    v[:24] = v[:24].min()
    return v


def _fraction(v: np.ndarray, loc: PatchLocation, thr: float) -> float:
    return float((v[loc.slices] > thr).mean())


def test_min_foreground_respected(volume: np.ndarray) -> None:
    thr = otsu_threshold(volume)
    locs = sample_patches(volume, 16, 6, rng=np.random.default_rng(0), min_foreground=0.05)
    assert len(locs) == 6
    fractions = [_fraction(volume, loc, thr) for loc in locs]
    assert min(fractions) >= 0.05
    for loc in locs:
        assert loc.size == (16, 16, 16)
        assert all(0 <= s <= 48 - 16 for s in loc.start)
    for i, a in enumerate(locs):  # non-overlapping
        for b in locs[i + 1 :]:
            assert any(abs(p - q) >= 16 for p, q in zip(a.start, b.start, strict=True))
    free = sample_patches(volume, 16, 30, rng=np.random.default_rng(0), min_foreground=0.0)
    assert min(_fraction(volume, loc, thr) for loc in free) < 0.05  # without the rule, empty patches appear


def test_determinism(volume: np.ndarray) -> None:
    a = sample_patches(volume, (8, 16, 16), 5, rng=np.random.default_rng(3))
    b = sample_patches(volume, (8, 16, 16), 5, rng=np.random.default_rng(3))
    c = sample_patches(volume, (8, 16, 16), 5, rng=np.random.default_rng(4))
    assert a == b
    assert a != c


def test_overlap_fallback_when_needed(volume: np.ndarray) -> None:
    locs = sample_patches(volume[:, :24, :24], 16, 3, rng=np.random.default_rng(0), min_foreground=0.0)
    assert len(locs) == 3  # only one non-overlapping 16^3 fits in 48x24x24 along Y/X; the rest overlap


def test_lazy_reads_only_patches(volume: np.ndarray, tmp_path: Path) -> None:
    rec = RecordingArray(volume)
    thr = otsu_threshold(volume)
    locs = sample_patches(rec, 16, 4, rng=np.random.default_rng(0), foreground_threshold=thr)
    assert rec.reads and all(shape == (16, 16, 16) for shape in rec.reads)
    path = write_image(tmp_path / "v.ome.zarr", volume, chunks=(16, 16, 16))
    lazy = read_image(path, lazy=True).data
    assert hasattr(lazy, "dask")
    assert sample_patches(lazy, 16, 4, rng=np.random.default_rng(0)) == locs


def test_volume_smaller_than_patch() -> None:
    with pytest.raises(InvalidInputError, match=r"tiny.*\(8, 40, 40\).*smaller than patch_size \(16, 16, 16\)"):
        sample_patches(np.ones((8, 40, 40)), 16, 1, rng=np.random.default_rng(0), name="tiny")


def test_no_foreground_error() -> None:
    v = np.zeros((32, 32, 32), dtype=np.uint16)
    v[0, 0, :4] = 1000  # a few bright voxels: Otsu splits them off, no 16^3 patch reaches 5%
    with pytest.raises(InvalidInputError, match=r"'sparse'.*best fraction found 0\.00"):
        sample_patches(v, 16, 2, rng=np.random.default_rng(0), name="'sparse'", max_tries=20)
    with pytest.raises(InvalidInputError, match="best fraction found 0.0000"):
        sample_patches(np.full((20, 20, 20), 7.0), 16, 1, rng=np.random.default_rng(0))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"patch_size": 0}, "patch_size"),
        ({"patch_size": (16, 16)}, "patch_size"),
        ({"n": 0}, "n: expected"),
        ({"min_foreground": 1.5}, "min_foreground"),
        ({"max_tries": 0}, "max_tries"),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], match: str) -> None:
    args: dict[str, Any] = {"patch_size": 8, "n": 1, "rng": np.random.default_rng(0), **kwargs}
    with pytest.raises(InvalidInputError, match=match):
        sample_patches(np.ones((16, 16, 16)), **args)
    with pytest.raises(InvalidInputError, match="3D"):
        sample_patches(np.ones((16, 16)), 8, 1, rng=np.random.default_rng(0))
