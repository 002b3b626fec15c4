"""Block masks for masked student-teacher pretraining, made in the collate function.

A mask zeroes exactly ``round(ratio * n_blocks)`` non-overlapping cubic blocks of ``block_size`` voxels, on the grid
aligned with the patch origin. The ratio follows a warmup schedule (``step``: ``warmup_ratio`` then ``ratio``;
``linear``: a ramp from ``warmup_ratio`` to ``ratio`` over ``warmup_steps``). Each sample's mask comes from a
``torch.Generator`` seeded from ``(seed, step, sample index)``, so resuming at a step reproduces the masks. The masked
input (``image * ~mask``) is made by the pretraining method, not here.

With DataLoader workers the collate function runs in the workers and batches are prefetched, so a ``set_step`` made in
the main process does not reach them: then collate without masks (``MaskingCollate(None)``, or use ``num_workers=0``)
and call :meth:`MaskingCollate.make_masks` in the training loop.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from fmscope.data.dataset import PatchSample, derive_seed
from fmscope.errors import InvalidInputError

Schedule = Literal["step", "linear"]


@dataclass(frozen=True)
class MaskingConfig:
    """Block masking: ``block_size`` voxels per cube side, final ``ratio`` of blocks masked after the warmup.

    Attributes:
        block_size: cube side in voxels (patch sides must be multiples of it).
        ratio: fraction of blocks masked after the warmup (reference: 0.3).
        warmup_ratio: fraction during the warmup (reference: 0.05).
        warmup_steps: optimiser steps of the warmup (0 = none).
        schedule: ``'step'`` (jump at ``warmup_steps``) or ``'linear'`` (ramp over ``warmup_steps``).
        seed: base seed of the masks.
    """

    block_size: int = 8
    ratio: float = 0.3
    warmup_ratio: float = 0.05
    warmup_steps: int = 500
    schedule: Schedule = "step"
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.block_size, bool) or not isinstance(self.block_size, int) or self.block_size < 1:
            raise InvalidInputError(f"block_size: expected a positive int, got {self.block_size!r}")
        for name in ("ratio", "warmup_ratio"):
            v = getattr(self, name)
            if not isinstance(v, int | float) or not 0.0 <= float(v) <= 1.0:
                raise InvalidInputError(f"{name}: expected a fraction in [0, 1], got {v!r}")
        if isinstance(self.warmup_steps, bool) or not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise InvalidInputError(f"warmup_steps: expected an int >= 0, got {self.warmup_steps!r}")
        if self.schedule not in ("step", "linear"):
            raise InvalidInputError(f"schedule: expected 'step' or 'linear', got {self.schedule!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise InvalidInputError(f"seed: expected an int >= 0, got {self.seed!r}")

    def ratio_at(self, step: int) -> float:
        """Mask ratio at optimiser ``step`` (>= 0)."""
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise InvalidInputError(f"step: expected an int >= 0, got {step!r}")
        if self.warmup_steps == 0 or step >= self.warmup_steps:
            return float(self.ratio)
        if self.schedule == "step":
            return float(self.warmup_ratio)
        t = step / self.warmup_steps
        return float(self.warmup_ratio + (self.ratio - self.warmup_ratio) * t)


def make_block_mask(
    shape: Sequence[int], block_size: int, ratio: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Bool ``(Z, Y, X)`` mask (True = masked) of exactly ``round(ratio * n_blocks)`` blocks of ``block_size``^3.

    Raises:
        InvalidInputError: shape not 3D or not divisible by ``block_size``, ratio outside [0, 1].
    """
    dims = tuple(int(s) for s in shape)
    if len(dims) != 3 or any(s < 1 for s in dims):
        raise InvalidInputError(f"shape: expected 3 positive sizes (Z, Y, X), got {tuple(shape)}")
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise InvalidInputError(f"block_size: expected a positive int, got {block_size!r}")
    if any(s % block_size for s in dims):
        raise InvalidInputError(f"shape: expected sizes divisible by block_size {block_size}, got {dims}")
    if not isinstance(ratio, int | float) or not 0.0 <= float(ratio) <= 1.0:
        raise InvalidInputError(f"ratio: expected a fraction in [0, 1], got {ratio!r}")
    grid = tuple(s // block_size for s in dims)
    n_blocks = math.prod(grid)
    k = round(float(ratio) * n_blocks)
    chosen = torch.randperm(n_blocks, generator=generator)[:k]
    blocks = torch.zeros(n_blocks, dtype=torch.bool)
    blocks[chosen] = True
    m = blocks.reshape(grid)
    for axis in range(3):
        m = m.repeat_interleave(block_size, dim=axis)
    return m


@dataclass(frozen=True)
class MaskedBatch:
    """A collated pretraining batch: ``images`` (B, 1, Z, Y, X) float32, ``masks`` (B, 1, Z, Y, X) bool (or None
    when masking is off), captions, sources and dataset indices per sample."""

    images: torch.Tensor
    masks: torch.Tensor | None
    captions: list[str | None]
    sources: list[str]
    indices: torch.Tensor


class MaskingCollate:
    """Collate ``PatchSample`` objects into a :class:`MaskedBatch` with one block mask per sample.

    ``config=None`` collates without masks. ``set_step(step)`` sets the schedule's step (and the mask seed).
    """

    def __init__(self, config: MaskingConfig | None = None, *, step: int = 0) -> None:
        if config is not None and not isinstance(config, MaskingConfig):
            raise InvalidInputError(f"config: expected a MaskingConfig or None, got {type(config).__name__}")
        self.config = config
        self.step = 0
        self.set_step(step)

    def set_step(self, step: int) -> None:
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise InvalidInputError(f"step: expected an int >= 0, got {step!r}")
        self.step = step

    def make_masks(self, indices: Sequence[int], shape: Sequence[int], step: int) -> torch.Tensor:
        """Masks (B, 1, Z, Y, X) for samples ``indices`` of spatial ``shape`` at ``step`` (same as the collate's)."""
        if self.config is None:
            raise InvalidInputError("config: masks need a MaskingConfig, got None")
        cfg = self.config
        ratio = cfg.ratio_at(step)
        masks = []
        for idx in indices:
            g = torch.Generator().manual_seed(derive_seed(cfg.seed, step, int(idx)))
            masks.append(make_block_mask(shape, cfg.block_size, ratio, g))
        return torch.stack(masks)[:, None]

    def __call__(self, samples: Sequence[PatchSample]) -> MaskedBatch:
        if not samples:
            raise InvalidInputError("samples: expected at least one sample, got none")
        bad = [type(s).__name__ for s in samples if not isinstance(s, PatchSample)]
        if bad:
            raise InvalidInputError(f"samples: expected PatchSample objects, got {bad[0]}")
        shapes = {tuple(s.image.shape) for s in samples}
        if len(shapes) != 1:
            raise InvalidInputError(f"samples: expected images of one shape, got {sorted(shapes)}")
        images = torch.stack([s.image for s in samples])
        if images.ndim != 5 or images.shape[1] != 1:
            raise InvalidInputError(f"samples: expected images of shape (1, Z, Y, X), got {tuple(images.shape[1:])}")
        indices = [s.index for s in samples]
        masks = None if self.config is None else self.make_masks(indices, images.shape[2:], self.step)
        return MaskedBatch(
            images=images,
            masks=masks,
            captions=[s.caption for s in samples],
            sources=[s.source for s in samples],
            indices=torch.tensor(indices, dtype=torch.long),
        )
