"""Hierarchical re-segmentation, automatic stacks linked across slices, semantic output."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from scipy import ndimage as ndi

from fmscope.errors import InvalidInputError
from fmscope.intensity import IntensityProfile
from fmscope.interactive import ObjectPrompt
from fmscope.interactive.modes import automatic_stack, segment_inside, semantic
from fmscope.interactive.protocol import PromptMask
from fmscope.interactive.rf_backend import RandomForestPrompter
from fmscope.metrics import dice


class Components:
    """A stand-in automatic backend: bright connected components, ids shuffled per slice."""

    name = "components"

    def signature(self) -> dict[str, Any]:
        return {}

    def embed(self, image: np.ndarray, profile: IntensityProfile | None = None) -> Any:
        return np.asarray(image)

    def predict(self, embedding: Any, prompt: ObjectPrompt, mask: np.ndarray | None = None) -> PromptMask:
        raise NotImplementedError

    def automatic(self, embedding: Any) -> np.ndarray:
        labels, n = ndi.label(embedding > 0.5)
        order = np.random.default_rng(int(embedding.sum())).permutation(n) + 1
        return np.concatenate([[0], order])[labels]


def test_automatic_stack_links_slices_and_drops_short_objects() -> None:
    volume = np.zeros((5, 40, 40), np.float32)
    volume[:, 5:15, 5:15] = 1.0  # on every slice
    volume[1:4, 25:35, 25:35] = 1.0  # on three
    volume[2, 5:8, 30:33] = 1.0  # on one: dropped with min_slices=2
    labels = automatic_stack(Components(), volume, min_slices=2)
    assert labels.dtype == np.uint32 and set(np.unique(labels)) == {0, 1, 2}
    assert (labels[:, 10, 10] == labels[0, 10, 10]).all() and (labels[1:4, 30, 30] == labels[1, 30, 30]).all()
    assert not labels[2, 5:8, 30:33].any()
    with pytest.raises(InvalidInputError, match="no automatic mode"):
        automatic_stack(RandomForestPrompter(), volume)


def test_segment_inside_a_region_keeps_to_it() -> None:
    rng = np.random.default_rng(0)
    image = rng.normal(1000, 40, (80, 80))
    image[10:70, 10:70] += 300  # a bright phase ...
    image[30:50, 30:50] += 300  # ... with a brighter part inside
    region = np.zeros(image.shape, bool)
    region[10:70, 10:70] = True
    backend = RandomForestPrompter(split_touching=False)
    embedding = backend.embed(image.astype(np.float32))
    part = segment_inside(
        backend, embedding, ObjectPrompt(2, positive=((40.0, 40.0),), negative=((20.0, 20.0),)), region
    )
    inner = np.zeros_like(region)
    inner[30:50, 30:50] = True
    assert not (part.mask & ~region).any() and dice(part.mask, inner) > 0.85
    with pytest.raises(InvalidInputError, match="outside the region"):
        segment_inside(backend, embedding, ObjectPrompt(3, positive=((5.0, 5.0),)), region)


def test_semantic_groups() -> None:
    labels = np.array([[0, 1, 2], [3, 3, 0]])
    np.testing.assert_array_equal(semantic(labels), [[0, 1, 1], [1, 1, 0]])
    np.testing.assert_array_equal(semantic(labels, [[1, 3], [2]]), [[0, 1, 2], [1, 1, 0]])
