"""The on-disk embedding cache: round trips, reuse across runs, and refusal of a stale or foreign cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fmscope.errors import FileFormatError, InvalidInputError
from fmscope.intensity import fit_profile
from fmscope.interactive.cache import EmbeddingCache
from fmscope.interactive.propagate import SliceEmbeddings
from fmscope.interactive.rf_backend import RandomForestPrompter, SliceEmbedding
from fmscope.interactive.sam_backend import SamEmbedding
from fmscope.segment.pixel_classifier import PixelClassifierConfig


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
    cache.put(0, plane, embedding)
    back = cache.get(0, plane)
    assert isinstance(back, SamEmbedding) and isinstance(back.features, torch.Tensor)
    torch.testing.assert_close(back.features, embedding.features)
    assert back.original_size == (300, 500) and back.scale == 2.048 and back.model == "vit_b"
    assert cache.get(1, plane) is None


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
