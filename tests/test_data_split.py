"""Split by source volume."""

from __future__ import annotations

from pathlib import Path

import pytest

from fmscope.data import Manifest, ManifestEntry, load_manifest, split_by_source
from fmscope.errors import InvalidInputError


def _manifest(sources: list[str]) -> Manifest:
    return Manifest(tuple(ManifestEntry(f"/v/{i}.tif", f"c{i}", s) for i, s in enumerate(sources)), "/v")


@pytest.mark.parametrize(("n_sources", "fraction", "n_val"), [(2, 0.2, 1), (5, 0.2, 1), (10, 0.3, 3), (3, 0.9, 2)])
def test_disjoint_by_source(n_sources: int, fraction: float, n_val: int) -> None:
    m = _manifest([f"brain{i % n_sources}" for i in range(3 * n_sources)])
    train, val = split_by_source(m, fraction, seed=1)
    assert not set(train.sources) & set(val.sources)
    assert len(val.sources) == n_val
    assert len(train) + len(val) == len(m)
    assert split_by_source(m, fraction, seed=1) == (train, val)


def test_edge_cases() -> None:
    one = _manifest(["a", "a", "a"])
    with pytest.raises(InvalidInputError, match="at least 2 source"):
        split_by_source(one, 0.2)
    train, val = split_by_source(one, 0.0)
    assert len(train) == 3
    assert len(val) == 0
    with pytest.raises(InvalidInputError, match="val_fraction"):
        split_by_source(one, 1.0)


def test_real_lsm(shared_data: Path) -> None:
    m = load_manifest(shared_data / "lsm_selma3d_wu_patches" / "pretrain")
    train, val = split_by_source(m, 0.2, seed=0)
    assert (len(train), len(val)) == (8, 2)
    assert not set(train.sources) & set(val.sources)
