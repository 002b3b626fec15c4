"""Block masks: exact ratio, block alignment, schedules, collate shapes, resume reproducibility."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from fmscope.data import MaskingCollate, MaskingConfig, PatchLocation, PatchSample, make_block_mask
from fmscope.errors import InvalidInputError


@pytest.mark.parametrize(
    ("shape", "block", "ratio"), [((32, 32, 32), 8, 0.3), ((16, 32, 48), 4, 0.05), ((8, 8, 8), 8, 1.0)]
)
def test_exact_ratio_and_alignment(shape: tuple[int, int, int], block: int, ratio: float) -> None:
    m = make_block_mask(shape, block, ratio, torch.Generator().manual_seed(0))
    assert m.dtype == torch.bool
    assert tuple(m.shape) == shape
    grid = [s // block for s in shape]
    n_blocks = grid[0] * grid[1] * grid[2]
    blocks = m.reshape(grid[0], block, grid[1], block, grid[2], block)
    per_block = blocks.sum(dim=(1, 3, 5))
    assert set(per_block.unique().tolist()) <= {0, block**3}  # each block fully masked or not at all
    assert int((per_block > 0).sum()) == round(ratio * n_blocks)


def test_mask_seeded() -> None:
    a = make_block_mask((16, 16, 16), 4, 0.3, torch.Generator().manual_seed(1))
    b = make_block_mask((16, 16, 16), 4, 0.3, torch.Generator().manual_seed(1))
    c = make_block_mask((16, 16, 16), 4, 0.3, torch.Generator().manual_seed(2))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (((30, 32, 32), 8, 0.3), "divisible by block_size 8"),
        (((32, 32), 8, 0.3), "3 positive sizes"),
        (((32, 32, 32), 0, 0.3), "block_size"),
        (((32, 32, 32), 8, 1.3), "ratio"),
    ],
)
def test_mask_errors(args: tuple[Any, ...], match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        make_block_mask(*args)


def test_schedules() -> None:
    step = MaskingConfig(ratio=0.3, warmup_ratio=0.05, warmup_steps=100, schedule="step")
    assert [step.ratio_at(s) for s in (0, 99, 100, 10_000)] == [0.05, 0.05, 0.3, 0.3]
    lin = MaskingConfig(ratio=0.3, warmup_ratio=0.1, warmup_steps=100, schedule="linear")
    assert [lin.ratio_at(s) for s in (0, 50, 100, 200)] == pytest.approx([0.1, 0.2, 0.3, 0.3])
    assert MaskingConfig(warmup_steps=0).ratio_at(0) == 0.3
    with pytest.raises(InvalidInputError, match="schedule"):
        MaskingConfig(schedule="cosine")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="step"):
        step.ratio_at(-1)


def _samples(n: int, shape: tuple[int, int, int] = (16, 16, 16)) -> list[PatchSample]:
    loc = PatchLocation(0, (0, 0, 0), shape)
    return [PatchSample(torch.rand(1, *shape), f"cap {i}", f"src {i % 2}", 10 + i, loc) for i in range(n)]


def test_collate_shapes_and_resume() -> None:
    cfg = MaskingConfig(block_size=4, ratio=0.5, warmup_ratio=0.1, warmup_steps=10, seed=3)
    collate = MaskingCollate(cfg)
    samples = _samples(3)
    batch = collate(samples)
    assert batch.images.shape == (3, 1, 16, 16, 16)
    assert batch.masks is not None
    assert batch.masks.shape == (3, 1, 16, 16, 16)
    assert batch.masks.dtype == torch.bool
    assert batch.captions == ["cap 0", "cap 1", "cap 2"]
    assert batch.sources == ["src 0", "src 1", "src 0"]
    assert batch.indices.tolist() == [10, 11, 12]
    assert float(batch.masks[0].float().mean()) == pytest.approx(round(0.1 * 64) / 64)
    assert not torch.equal(batch.masks[0], batch.masks[1])  # one mask per sample
    collate.set_step(25)
    late = collate(samples).masks
    assert late is not None
    assert float(late[0].float().mean()) == pytest.approx(0.5)
    resumed = MaskingCollate(cfg, step=25)  # a fresh collate resumed at step 25 gives the same masks
    again = resumed(samples).masks
    assert again is not None
    assert torch.equal(again, late)
    assert torch.equal(resumed.make_masks([10, 11, 12], (16, 16, 16), 25), late)
    assert MaskingCollate(None)(samples).masks is None


def test_collate_errors() -> None:
    with pytest.raises(InvalidInputError, match="at least one sample"):
        MaskingCollate(MaskingConfig())([])
    with pytest.raises(InvalidInputError, match="one shape"):
        MaskingCollate(MaskingConfig(block_size=4))(_samples(1) + _samples(1, (8, 8, 8)))
