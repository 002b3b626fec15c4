"""Blockwise work over volumes larger than memory (or than one machine): a block plan, per-block done flags, and one
runner that maps a per-block function in process or on a Dask ``distributed`` cluster, resumably.

The plan cuts the output's spatial grid into *cores* aligned to the output's Zarr chunks (a core is a whole number of
chunks, so no two blocks ever write one chunk and no lock is needed), each read with a *halo* of context around it
(clipped at the volume's faces). An optional foreground mask, at any resolution, marks blocks with nothing to do as
*skipped*. The plan is a frozen dataclass saved in the run record; :meth:`BlockPlan.signature` says whether a
rerun's plan is the one an output was started with.

Done flags (:class:`DoneFlags`) are a small uint8 Zarr array beside the output (``OUT.done.zarr``), one chunk per
block: a block's function writes its core first, then its flag is set, so a crash (a killed worker, ``kill -9`` of
the client) redoes at most the blocks in flight. :func:`run_blocks` maps a top-level (picklable) function over the
blocks whose flag is not set: in this process without a client, otherwise ``client.map`` + ``as_completed`` (each
block retried ``retries`` times, on any worker), and reports the blocks that still failed by index instead of
raising on the first one.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fmscope.errors import InvalidInputError
from fmscope.utils.progress import ProgressCallback, make_progress

logger = logging.getLogger(__name__)

DONE_SUFFIX = ".done.zarr"
PLAN_VERSION = 1


@dataclass(frozen=True)
class Block:
    """One block: its index in the plan, its core (written) and the region read (core + halo, clipped)."""

    index: int
    core: tuple[slice, ...]
    read: tuple[slice, ...]

    @property
    def inner(self) -> tuple[slice, ...]:
        """The core inside the region read (to crop a result computed on ``read``)."""
        return tuple(slice(c.start - r.start, c.stop - r.start) for c, r in zip(self.core, self.read, strict=True))


@dataclass(frozen=True)
class BlockPlan:
    """Cores of ``block`` voxels (the last ones cut by the faces) over ``shape``, read with ``halo`` around them;
    ``skipped``: indices of blocks the mask said are empty."""

    shape: tuple[int, ...]
    block: tuple[int, ...]
    halo: tuple[int, ...]
    chunks: tuple[int, ...]
    skipped: tuple[int, ...] = ()
    grid: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        for name in ("shape", "block", "halo", "chunks"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        check_geometry(self.shape, self.block, self.halo, self.chunks)
        object.__setattr__(self, "grid", tuple(math.ceil(s / b) for s, b in zip(self.shape, self.block, strict=True)))
        object.__setattr__(self, "skipped", tuple(sorted({int(i) for i in self.skipped})))
        if self.skipped and not 0 <= self.skipped[0] <= self.skipped[-1] < len(self):
            raise InvalidInputError(f"skipped: block indices must be in 0..{len(self) - 1}, got {self.skipped}")

    def __len__(self) -> int:
        return math.prod(self.grid)

    def block_at(self, index: int) -> Block:
        position = np.unravel_index(index, self.grid)
        core, read = [], []
        for p, b, h, s in zip(position, self.block, self.halo, self.shape, strict=True):
            start, stop = int(p) * b, min(s, (int(p) + 1) * b)
            core.append(slice(start, stop))
            read.append(slice(max(0, start - h), min(s, stop + h)))
        return Block(index, tuple(core), tuple(read))

    def blocks(self) -> Iterator[Block]:
        """The blocks to compute (those the mask did not skip)."""
        skipped = set(self.skipped)
        return (self.block_at(i) for i in range(len(self)) if i not in skipped)

    def to_dict(self) -> dict[str, Any]:
        return {"version": PLAN_VERSION, "shape": list(self.shape), "block": list(self.block),
                "halo": list(self.halo), "chunks": list(self.chunks), "skipped": list(self.skipped)}  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BlockPlan:
        if data.get("version") != PLAN_VERSION:
            raise InvalidInputError(f"plan: version {data.get('version')!r} is not {PLAN_VERSION}")
        shape, block, halo, chunks = (tuple(data[k]) for k in ("shape", "block", "halo", "chunks"))
        return cls(shape, block, halo, chunks, tuple(data.get("skipped", ())))


def check_geometry(shape: Sequence[int], block: Sequence[int], halo: Sequence[int], chunks: Sequence[int]) -> None:
    """Refuse a block shape that is not a whole number of output chunks or is smaller than the halo."""
    n = len(shape)
    for name, value in (("--block-shape", block), ("--halo", halo), ("chunks", chunks)):
        if len(value) != n:
            raise InvalidInputError(f"{name}: expected {n} sizes (one per axis of {tuple(shape)}), got {tuple(value)}")
    if any(s < 1 for s in shape) or any(c < 1 for c in chunks) or any(h < 0 for h in halo):
        raise InvalidInputError(f"shape {tuple(shape)}, chunks {tuple(chunks)} and --halo {tuple(halo)}: expected "
                                "sizes >= 1 (halo >= 0)")  # fmt: skip
    bad = [(b, c) for b, c in zip(block, chunks, strict=True) if b < 1 or b % c]
    if bad:
        raise InvalidInputError(f"--block-shape: {tuple(block)} is not a multiple of the output's chunks "
                                f"{tuple(chunks)} (so that no two blocks write one chunk)")  # fmt: skip
    small = [(b, h) for b, h in zip(block, halo, strict=True) if b < h]
    if small:
        raise InvalidInputError(f"--block-shape: {tuple(block)} is smaller than the halo {tuple(halo)} on some axis;"
                                " make blocks larger than --halo")  # fmt: skip


def plan_blocks(
    shape: Sequence[int],
    block: Sequence[int],
    halo: Sequence[int],
    chunks: Sequence[int],
    *,
    mask: Any = None,
) -> BlockPlan:
    """The plan of the module doc; ``mask`` (a boolean array of any shape with the volume's number of axes, e.g. a
    thresholded low-resolution copy) skips the blocks whose core it covers with no foreground."""
    plan = BlockPlan(tuple(shape), tuple(block), tuple(halo), tuple(chunks))
    if mask is None:
        return plan
    mask = np.asarray(mask)
    if mask.ndim != len(plan.shape):
        raise InvalidInputError(f"mask: expected {len(plan.shape)} axes like the volume, got shape {mask.shape}")
    scale = [m / s for m, s in zip(mask.shape, plan.shape, strict=True)]
    skipped = []
    for b in plan.blocks():
        index = tuple(slice(int(math.floor(c.start * f)), max(int(math.floor(c.start * f)) + 1,
                                                               int(math.ceil(c.stop * f))))
                      for c, f in zip(b.core, scale, strict=True))  # fmt: skip
        if not mask[index].any():
            skipped.append(b.index)
    logger.info("plan: %d blocks, %d skipped by the mask", len(plan), len(skipped))
    return BlockPlan(plan.shape, plan.block, plan.halo, plan.chunks, tuple(skipped))


# ---- done flags ------------------------------------------------------------------------------------------------


def done_path(output: str | os.PathLike[str]) -> Path:
    """Where the done flags of ``output`` are kept (beside it)."""
    out = Path(output)
    return out.with_name(out.name + DONE_SUFFIX)


class DoneFlags:
    """One uint8 flag per block in a Zarr array (one chunk per block: setting a flag writes one small file)."""

    def __init__(self, path: str | os.PathLike[str], n_blocks: int, *, create: bool = False) -> None:
        import zarr

        self.path = Path(path)
        if create:
            self._array = zarr.create_array(store=str(self.path), shape=(n_blocks,), chunks=(1,), dtype="uint8",
                                            fill_value=0, overwrite=True)  # fmt: skip
        else:
            self._array = zarr.open_array(str(self.path), mode="r+")
            if self._array.shape != (n_blocks,):
                raise InvalidInputError(f"done flags '{self.path}': {self._array.shape[0]} blocks, the plan has "
                                        f"{n_blocks}")  # fmt: skip

    def is_done(self, index: int) -> bool:
        return bool(self._array[index])

    def set_done(self, index: int) -> None:
        self._array[index] = 1

    def done(self) -> set[int]:
        return {int(i) for i in np.flatnonzero(self._array[:])}


# ---- the runner ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BlockwiseResult:
    """How a run ended: blocks computed now, found done already, skipped by the mask, failed (index -> message)."""

    computed: tuple[int, ...]
    already_done: tuple[int, ...]
    skipped: tuple[int, ...]
    failed: dict[int, str]
    seconds: float

    @property
    def complete(self) -> bool:
        return not self.failed


def run_block(function: Callable[[Block], Any], block: Block, flags_path: str, n_blocks: int) -> int:
    """Run ``function`` on ``block`` unless its flag is set, then set the flag (on a worker: opens the flags itself).
    Returns the block's index."""
    flags = DoneFlags(flags_path, n_blocks)
    if not flags.is_done(block.index):
        function(block)
        flags.set_done(block.index)
    return block.index


def _attempts(
    function: Callable[[Block], Any], block: Block, flags_path: str, n_blocks: int, retries: int
) -> str | None:
    """Run a block in this process up to ``retries + 1`` times; None when done, else the last error."""
    error = None
    for attempt in range(retries + 1):
        try:
            run_block(function, block, flags_path, n_blocks)
            return None
        except Exception as exc:  # a block's failure belongs to the block: the others go on
            error = f"{type(exc).__name__}: {exc}"
            logger.warning("block %d failed (attempt %d of %d): %s", block.index, attempt + 1, retries + 1, error)
    return error


def run_blocks(
    plan: BlockPlan,
    function: Callable[[Block], Any],
    flags: DoneFlags,
    *,
    client: Any = None,
    retries: int = 2,
    progress: ProgressCallback | bool | None = None,
) -> BlockwiseResult:
    """Map ``function`` (top-level, picklable for a cluster) over the plan's blocks whose flag is not set, in this
    process (``client`` None) or on ``client``; a failed block is retried ``retries`` times, then reported."""
    if retries < 0:
        raise InvalidInputError(f"--retries: expected >= 0, got {retries}")
    t0 = time.perf_counter()
    before = flags.done()
    todo = [b for b in plan.blocks() if b.index not in before]
    failed: dict[int, str] = {}
    computed: list[int] = []
    logger.info("blockwise: %d blocks, %d done already, %d skipped, %d to do", len(plan), len(before),
                len(plan.skipped), len(todo))  # fmt: skip
    with make_progress(progress, len(todo), "blocks") as advance:
        if client is None:
            for b in todo:
                error = _attempts(function, b, str(flags.path), len(plan), retries)
                if error is None:
                    computed.append(b.index)
                else:
                    failed[b.index] = error
                advance()
        else:
            from distributed import as_completed

            futures = client.map(run_block, [function] * len(todo), todo, [str(flags.path)] * len(todo),
                                 [len(plan)] * len(todo), retries=retries, pure=False)  # fmt: skip
            index_of = {f.key: b.index for f, b in zip(futures, todo, strict=True)}
            for future in as_completed(futures):
                if future.status == "finished":
                    computed.append(index_of[future.key])
                else:
                    exc = future.exception()
                    failed[index_of[future.key]] = f"{type(exc).__name__}: {exc}"
                advance()
    if failed:
        logger.error("blockwise: %d block(s) failed: %s; rerun the same command to retry them (the others are kept)",
                     len(failed), sorted(failed))  # fmt: skip
    return BlockwiseResult(tuple(sorted(computed)), tuple(sorted(before)), plan.skipped, failed,
                           time.perf_counter() - t0)  # fmt: skip
