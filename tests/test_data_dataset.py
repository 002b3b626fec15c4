"""PatchDataset: real LSM patches, normalisation, determinism by (seed, epoch), pickling, DataLoader batches."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from fmscope.data import (
    Manifest,
    ManifestEntry,
    MaskingCollate,
    MaskingConfig,
    PatchDataset,
    lightsheet_phantom,
    load_manifest,
)
from fmscope.errors import InvalidInputError
from fmscope.io import write_image


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Manifest:
    d = tmp_path_factory.mktemp("vols")
    entries = []
    for i in range(2):
        path = write_image(d / f"v{i}.ome.zarr", lightsheet_phantom((32, 40, 40), seed=i).image, chunks=(16, 16, 16))
        entries.append(ManifestEntry(str(path), f"caption {i}", f"brain{i}"))
    return Manifest(tuple(entries), str(d))


def test_items_and_determinism(manifest: Manifest) -> None:
    ds = PatchDataset(manifest, 16, 3, seed=7)
    assert len(ds) == 6
    s = ds[4]
    assert s.image.shape == (1, 16, 16, 16)
    assert s.image.dtype == torch.float32
    assert float(s.image.min()) >= 0.0
    assert float(s.image.max()) <= 1.0
    assert (s.caption, s.source, s.index) == ("caption 1", "brain1", 4)
    assert all(st.low < st.high for st in ds.stats)
    same = PatchDataset(manifest, 16, 3, seed=7, stats=ds.stats)  # cached statistics skip the volume pass
    assert same.locations == ds.locations
    assert torch.equal(same[4].image, s.image)
    assert PatchDataset(manifest, 16, 3, seed=8, stats=ds.stats).locations != ds.locations
    epoch0 = ds.locations
    ds.set_epoch(1)
    assert ds.locations != epoch0
    ds.set_epoch(0)
    assert ds.locations == epoch0
    clone = pickle.loads(pickle.dumps(ds))
    assert clone.locations == ds.locations
    assert torch.equal(clone[4].image, s.image)


def test_transform_seeded_per_item(manifest: Manifest) -> None:
    from fmscope.data import AugmentConfig, build_augmentation

    aug = build_augmentation(AugmentConfig(noise_prob=1.0, flip_prob=0.5), seed=None)
    ds = PatchDataset(manifest, 16, 2, seed=1, transform=aug)
    first = [ds[i].image for i in range(len(ds))]
    again = [ds[i].image for i in reversed(range(len(ds)))][::-1]  # order does not matter
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    plain = PatchDataset(manifest, 16, 2, seed=1, stats=ds.stats)
    assert not torch.equal(plain[0].image, first[0])


def test_dataloader_batch(shared_data: Path) -> None:
    m = load_manifest(shared_data / "lsm_selma3d_wu_patches" / "pretrain")
    with pytest.raises(InvalidInputError, match=r"08_af3-br4-a1_a.*best fraction found 0\.0017"):
        PatchDataset(m.subset([7]), 96, 1, min_foreground=0.05)  # 0.17 % above Otsu: fails the paper's 5 % rule
    ds = PatchDataset(m, 32, 1, seed=0, min_foreground=0.01)
    assert len(ds) == 10
    loader = DataLoader(ds, batch_size=4, collate_fn=MaskingCollate(MaskingConfig(block_size=8, warmup_steps=0)))
    batch = next(iter(loader))
    assert batch.images.shape == (4, 1, 32, 32, 32)
    assert batch.masks is not None
    assert float(batch.masks.float().mean()) == pytest.approx(round(0.3 * 64) / 64)
    assert len(set(batch.captions)) == 4
    assert batch.sources == [e.source for e in m.entries[:4]]


def test_errors(manifest: Manifest, tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="smaller than patch_size"):
        PatchDataset(manifest, 48, 1)
    with pytest.raises(InvalidInputError, match="patches_per_volume"):
        PatchDataset(manifest, 16, 0)
    with pytest.raises(InvalidInputError, match="non-empty Manifest"):
        PatchDataset(Manifest((), "/"), 16, 1)
    ds = PatchDataset(manifest, 16, 1, min_foreground=0.0)
    with pytest.raises(IndexError):
        ds[5]
    path = write_image(tmp_path / "const.tif", np.full((16, 16, 16), 3, dtype=np.uint16))
    with pytest.raises(InvalidInputError, match=r"const\.tif.*constant"):
        PatchDataset(Manifest((ManifestEntry(str(path), "c", "s"),), str(tmp_path)), 8, 1)
