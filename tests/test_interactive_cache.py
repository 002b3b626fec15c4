"""The on-disk embedding cache: round trips, reuse across runs, refusal of a stale or foreign cache, float16 storage,
the size bound (LRU eviction) and fields a backend recomputes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from conftest import disk_labels, disks
from fmscope.errors import FileFormatError, InvalidInputError
from fmscope.intensity import fit_profile
from fmscope.interactive.cache import DEFAULT_MAX_BYTES, VERSION, EmbeddingCache
from fmscope.interactive.prompts import ObjectPrompt
from fmscope.interactive.propagate import SliceEmbeddings
from fmscope.interactive.rf_backend import RandomForestPrompter, SliceEmbedding
from fmscope.interactive.sam2_backend import Sam2Embedding
from fmscope.interactive.sam_backend import SamEmbedding
from fmscope.segment.pixel_classifier import PixelClassifierConfig


class StoringPrompter(RandomForestPrompter):
    """The rf backend with features of its own (as the fm backend's learned ones): stored in the cache, not
    recomputed (the float16 path)."""

    def features(self, window: Any) -> Any:
        return super().features(window)


def _volume() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 4000, (3, 32, 40)).astype(np.uint16)


def test_rf_embeddings_are_reused_and_identical(tmp_path: Path) -> None:
    volume = _volume()
    backend = RandomForestPrompter()
    first = SliceEmbeddings(backend, volume, cache_dir=tmp_path / "cache")
    a = first[1]
    second = SliceEmbeddings(backend, volume, cache_dir=tmp_path / "cache")
    b = second[1]
    assert second.reused == 1 and first.reused == 0 and isinstance(b, SliceEmbedding)
    np.testing.assert_array_equal(a.features, b.features)
    np.testing.assert_array_equal(a.superpixels, b.superpixels)
    np.testing.assert_array_equal(a.gradient, b.gradient)
    assert len(EmbeddingCache(tmp_path / "cache", backend, first.profile)) == 1


def test_sam_embedding_round_trip_keeps_tensors_and_the_transform(tmp_path: Path) -> None:
    embedding = SamEmbedding(torch.randn(1, 256, 64, 64), (300, 500), (614, 1024), 2.048, {"low": 1.0}, "vit_b")
    backend = RandomForestPrompter()  # the signature only needs a backend; the type comes from the stored class
    cache = EmbeddingCache(tmp_path / "c", backend)
    plane = _volume()[0]
    stored = cache.put(0, plane, embedding)
    back = cache.get(0, plane)
    assert isinstance(back, SamEmbedding) and isinstance(back.features, torch.Tensor)
    assert back.features.dtype == torch.float32
    torch.testing.assert_close(back.features, stored.features, rtol=0, atol=0)  # put gives what get will give
    torch.testing.assert_close(back.features, embedding.features, rtol=2**-11, atol=1e-7)  # float16 on disk
    assert back.original_size == (300, 500) and back.scale == 2.048 and back.model == "vit_b"
    assert cache.get(1, plane) is None
    exact = EmbeddingCache(tmp_path / "exact", backend, float16=False)
    exact.put(0, plane, embedding)
    torch.testing.assert_close(exact.get(0, plane).features, embedding.features, rtol=0, atol=0)


def test_sam2_embedding_with_a_tuple_of_feature_maps_round_trips(tmp_path: Path) -> None:
    high = (torch.randn(1, 32, 64, 64), torch.randn(1, 64, 32, 32))
    embedding = Sam2Embedding(torch.randn(1, 256, 16, 16), high, (48, 64), (1024, 1024), {"low": 1.0}, "tiny")
    cache = EmbeddingCache(tmp_path / "c", RandomForestPrompter())
    plane = _volume()[0]
    stored = cache.put(0, plane, embedding)
    back = cache.get(0, plane)
    assert isinstance(back, Sam2Embedding) and isinstance(back.high_res_feats, tuple)
    assert [t.shape for t in back.high_res_feats] == [t.shape for t in high]
    for got, kept, original in zip(back.high_res_feats, stored.high_res_feats, high, strict=True):
        torch.testing.assert_close(got, kept, rtol=0, atol=0)
        torch.testing.assert_close(got, original, rtol=2**-11, atol=1e-7)
    assert back.original_size == (48, 64) and back.model == "tiny"


def test_a_failed_write_leaves_no_half_written_slice(tmp_path: Path) -> None:
    plane = _volume()[0]
    bad = SamEmbedding(torch.zeros(1, 4, 2, 2), (32, 40), (32, 40), 1.0, {"not json": object()}, "vit_b")
    cache = EmbeddingCache(tmp_path / "c", RandomForestPrompter())
    with pytest.raises(TypeError):
        cache.put(0, plane, bad)
    assert 0 not in cache and cache.get(0, plane) is None and cache.nbytes == 0


def test_stale_or_foreign_caches_are_refused(tmp_path: Path) -> None:
    volume = _volume()
    profile = fit_profile(volume)  # what SliceEmbeddings fits when given none
    SliceEmbeddings(RandomForestPrompter(), volume, cache_dir=tmp_path / "cache")[0]
    other = RandomForestPrompter(PixelClassifierConfig(sigmas=(1.0, 3.0)))
    with pytest.raises(FileFormatError, match="another model or window.*sigmas"):
        SliceEmbeddings(other, volume, cache_dir=tmp_path / "cache")
    with pytest.raises(FileFormatError, match="another model or window.*profile"):
        EmbeddingCache(tmp_path / "cache", RandomForestPrompter(), fit_profile(volume, low_percentile=5.0))
    with pytest.raises(FileFormatError, match="other data"):
        SliceEmbeddings(RandomForestPrompter(), volume[::-1], profile, cache_dir=tmp_path / "cache")[0]
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("x")
    with pytest.raises(FileFormatError, match="not an embedding cache"):
        EmbeddingCache(tmp_path / "notes", RandomForestPrompter())
    with pytest.raises(InvalidInputError, match="dataclasses"):
        EmbeddingCache(tmp_path / "d", RandomForestPrompter()).put(0, volume[0], {"features": 1})


def _disks(seed: int, shape: tuple[int, int] = (160, 160), n: int = 8) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """A uint16 image of ``n`` separated noisy bright disks (radius 8-13) and their centres."""
    rng = np.random.default_rng(seed)
    objects = np.zeros(shape, bool)
    centres: list[tuple[float, float]] = []
    radii: list[float] = []
    for _ in range(n):
        for _ in range(100):
            r = rng.uniform(8, 13)
            cy, cx = rng.uniform(r + 10, shape[0] - r - 10, 2)
            one = disk_labels(shape, [(cy, cx)], [r]) > 0
            if not objects[ndi.binary_dilation(one, iterations=4)].any():
                break
        objects |= one
        centres.append((float(cy), float(cx)))
        radii.append(r)
    image, _, _ = disks(rng, shape, centres, radii, background=1000.0, foreground=1500.0, noise=80.0, dtype=np.uint16)
    return image, centres


def test_rf_masks_from_float16_cached_features_match_the_uncached_ones(tmp_path: Path) -> None:
    """Float16 on disk moves the rf features by < 5e-4 of their value; the masks of one click per disk stay (nearly)
    the same: most identical, all pixels together IoU > 0.99 (changing the forest's seed moves them ~10x more)."""
    backend = StoringPrompter()
    inter = union = same = total = 0
    for seed in range(4):
        image, centres = _disks(seed)
        volume = image[None]
        plain = SliceEmbeddings(backend, volume)[0]
        first = SliceEmbeddings(backend, volume, cache_dir=tmp_path / f"c{seed}")[0]
        cached = SliceEmbeddings(backend, volume, cache_dir=tmp_path / f"c{seed}")
        again = cached[0]
        assert cached.reused == 1 and np.abs(again.features - plain.features).max() <= 1e-3
        for k, centre in enumerate(centres, 1):
            prompt = ObjectPrompt(k, positive=(centre,))
            a, b = backend.predict(plain, prompt).mask, backend.predict(again, prompt).mask
            np.testing.assert_array_equal(backend.predict(first, prompt).mask, b)  # a rerun gives the same masks
            inter, union = inter + int((a & b).sum()), union + int((a | b).sum())
            same, total = same + int(np.array_equal(a, b)), total + 1
    assert inter / union > 0.99 and same >= 0.75 * total


def _disk_use(folder: Path) -> int:
    """What ``du -s --block-size=1`` counts below ``folder`` (files and folders), at least the files' sizes."""
    return sum(max(p.stat().st_size, p.stat().st_blocks * 512) for p in [folder, *folder.rglob("*")])


def test_a_bounded_cache_evicts_least_recently_used_slices_and_recomputes_them(tmp_path: Path) -> None:
    volume = np.random.default_rng(1).integers(0, 4000, (12, 48, 48)).astype(np.uint16)
    backend = RandomForestPrompter()
    probe = SliceEmbeddings(backend, volume, cache_dir=tmp_path / "probe")
    probe[0]
    one = probe.disk.nbytes  # type: ignore[union-attr]
    limit = int(3.5 * one) + 8192  # three slices and the group's metadata
    embeddings = SliceEmbeddings(backend, volume, cache_dir=tmp_path / "c", cache_max_bytes=limit, max_slices=1)
    for z in range(12):
        embeddings[z]
        embeddings[0]  # slice 0 is used all the time: never evicted
        assert _disk_use(tmp_path / "c") <= limit
    cache = EmbeddingCache(tmp_path / "c", backend, embeddings.profile, max_bytes=limit)
    assert len(cache) == 3 and 0 in cache and 11 in cache and 10 in cache and 1 not in cache
    again = SliceEmbeddings(backend, volume, cache_dir=tmp_path / "c", cache_max_bytes=limit)
    evicted = again[1]
    assert again.computed == 1 and again.reused == 0
    fresh = SliceEmbeddings(backend, volume, embeddings.profile)[1]
    np.testing.assert_allclose(evicted.features, fresh.features, rtol=2**-11, atol=1e-7)
    np.testing.assert_array_equal(evicted.superpixels, fresh.superpixels)
    again[0]
    assert again.reused == 1  # still there: the least recently used slice (10) made room for slice 1
    assert 10 not in EmbeddingCache(tmp_path / "c", backend, embeddings.profile, max_bytes=limit)
    assert _disk_use(tmp_path / "c") <= limit


def test_use_order_carries_over_to_the_next_run_and_a_smaller_bound_evicts_at_open(tmp_path: Path) -> None:
    plane = _volume()[0]
    backend = RandomForestPrompter()
    cache = EmbeddingCache(tmp_path / "c", backend, max_bytes=0)
    for z in range(4):
        cache.put(z, plane, backend.embed(plane))
    assert cache.get(0, plane) is not None  # 0 is now the most recently used
    size = cache.nbytes // 4
    small = EmbeddingCache(tmp_path / "c", backend, max_bytes=int(2.5 * size) + 4096)
    assert len(small) == 2 and 0 in small and 3 in small


def test_a_slice_larger_than_the_bound_is_used_but_not_stored(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    plane = _volume()[0]
    backend = RandomForestPrompter()
    cache = EmbeddingCache(tmp_path / "c", backend, max_bytes=2000)
    with caplog.at_level("WARNING"):
        stored = cache.put(0, plane, backend.embed(plane))
    assert isinstance(stored, SliceEmbedding) and 0 not in cache and "not cached" in caplog.text


def test_values_outside_float16_range_are_stored_as_they_are(tmp_path: Path) -> None:
    plane = _volume()[0]
    features = np.full((32, 40, 2), 1e6, np.float32)
    features[0, 0, 0] = 1.0 + 2**-20
    embedding = SliceEmbedding(features, None, np.linspace(0, 1, 32 * 40, dtype=np.float32).reshape(32, 40))
    cache = EmbeddingCache(tmp_path / "c", StoringPrompter())
    cache.put(0, plane, embedding)
    back = cache.get(0, plane)
    np.testing.assert_array_equal(back.features, features)  # 1e6 does not fit float16: kept float32
    assert back.gradient.dtype == np.float32 and back.gradient is not embedding.gradient
    assert np.abs(back.gradient - embedding.gradient).max() <= 2**-11


def test_fields_a_backend_recomputes_are_not_stored_and_come_back_exactly(tmp_path: Path) -> None:
    volume = np.random.default_rng(2).integers(0, 4000, (2, 128, 128)).astype(np.uint16)
    backend = RandomForestPrompter()  # recomputes its filter bank and gradient, stores the superpixels
    first = SliceEmbeddings(backend, volume, cache_dir=tmp_path / "r")
    a = first[1]
    stored = SliceEmbeddings(StoringPrompter(), volume, cache_dir=tmp_path / "s")
    stored[1]
    assert first.disk.nbytes * 4 < stored.disk.nbytes  # type: ignore[union-attr]  # superpixels only
    second = SliceEmbeddings(backend, volume, cache_dir=tmp_path / "r")
    b = second[1]
    assert second.reused == 1 and second.computed == 0
    for name in ("features", "superpixels", "gradient"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    np.testing.assert_array_equal(b.features, RandomForestPrompter().embed(volume[1], first.profile).features)


def test_old_versions_are_rebuilt_newer_ones_and_bad_bounds_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import zarr

    plane = _volume()[0]
    backend = RandomForestPrompter()
    cache = EmbeddingCache(tmp_path / "c", backend)
    cache.put(0, plane, backend.embed(plane))
    group = zarr.open_group(str(tmp_path / "c"), mode="r+")
    group.attrs["version"] = 1
    with caplog.at_level("WARNING"):
        rebuilt = EmbeddingCache(tmp_path / "c", backend)
    assert "old format version 1" in caplog.text and len(rebuilt) == 0
    assert dict(zarr.open_group(str(tmp_path / "c"), mode="r").attrs)["version"] == VERSION
    zarr.open_group(str(tmp_path / "c"), mode="r+").attrs["version"] = VERSION + 1
    with pytest.raises(FileFormatError, match="newer than this fmscope"):
        EmbeddingCache(tmp_path / "c", backend)
    for bad in (-1, 1.5, True, "2G"):
        with pytest.raises(InvalidInputError, match="max_bytes"):
            EmbeddingCache(tmp_path / "d", backend, max_bytes=bad)  # type: ignore[arg-type]
    assert EmbeddingCache(tmp_path / "e", backend, max_bytes=None).max_bytes is None
    assert EmbeddingCache(tmp_path / "f", backend, max_bytes=0).max_bytes is None
    assert EmbeddingCache(tmp_path / "g", backend).max_bytes == DEFAULT_MAX_BYTES == 2 * 2**30
