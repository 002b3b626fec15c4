"""A blockwise output on disk and where its blocks run: the settings shared by every blockwise command
(:class:`BlockwiseConfig`), the block geometry they default to, the run record that makes an output resumable, and
the Dask client of ``--workers`` / ``--scheduler``.

A blockwise output ``OUT.zarr`` has a run record ``OUT.zarr.fmscope.json`` (what it was started with: the input and
its fingerprint, the plan, the method's settings, the statistics fitted once from the whole input) and done flags
``OUT.zarr.done.zarr`` (:class:`~fmscope.inference.blockwise.DoneFlags`). A rerun with the same record resumes; a
different record is refused naming the fields that differ; ``overwrite`` replaces the output, its flags and its side
arrays.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from fmscope.errors import InvalidInputError, OutputExistsError
from fmscope.inference.blockwise import Block, BlockPlan, BlockwiseResult, DoneFlags, done_path, run_blocks
from fmscope.utils.atomic import remove_path
from fmscope.utils.progress import ProgressCallback
from fmscope.utils.provenance import RunRecord, record_path, write_run_record

logger = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class BlockwiseConfig:
    """Blocks and where they run.

    Attributes:
        block_shape: voxels per block core (a multiple of ``chunks``); default 2 chunks per axis (cut to the volume).
        halo: context read around each core; default set by the method (half a model window, a filter's radius).
        chunks: the output's Zarr chunks; default 64 per axis (cut to the volume).
        workers: a LocalCluster of this many single-threaded worker processes (0: in this process).
        scheduler: the address of a running Dask scheduler (instead of ``workers``).
        worker_memory: memory limit per local worker (dask notation, e.g. '512MiB').
        retries: attempts after a block's first failure.
        resume: continue an output whose record matches (False: refuse an existing output unless overwriting).
        timeout: seconds to wait for ``scheduler`` to answer.
    """

    block_shape: tuple[int, ...] | None = None
    halo: tuple[int, ...] | None = None
    chunks: tuple[int, ...] | None = None
    workers: int = 0
    scheduler: str | None = None
    worker_memory: str = "2GiB"
    retries: int = 2
    resume: bool = True
    timeout: float = 10.0

    def __post_init__(self) -> None:
        if self.workers < 0:
            raise InvalidInputError(f"--workers: expected >= 0, got {self.workers}")
        if self.retries < 0:
            raise InvalidInputError(f"--retries: expected >= 0, got {self.retries}")
        if self.workers and self.scheduler:
            raise InvalidInputError("--workers and --scheduler: give one (a local cluster, or an existing one)")

    @property
    def distributed(self) -> bool:
        return bool(self.workers or self.scheduler)


def _sizes(values: Sequence[int] | int | None, fallback: Sequence[int], name: str, n: int) -> tuple[int, ...]:
    if isinstance(values, int | np.integer):
        values = (int(values),)
    out = tuple(int(v) for v in (values if values is not None else fallback))
    if len(out) == 1 and n > 1:
        out = out * n
    if len(out) != n:
        raise InvalidInputError(f"{name}: expected 1 or {n} sizes, got {values}")
    return out


def geometry(
    shape: Sequence[int], config: BlockwiseConfig, default_halo: Sequence[int]
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """``(block_shape, halo, chunks)`` of a volume: the config's, or the defaults (64-voxel chunks, 2 chunks per
    block, ``default_halo`` clipped to the block), each cut to the volume."""
    nd = len(shape)
    chunks = tuple(min(c, s) for c, s in zip(_sizes(config.chunks, [64] * nd, "--chunks", nd), shape, strict=True))
    block = tuple(min(b, -(-s // c) * c) for b, s, c in
                  zip(_sizes(config.block_shape, [2 * c for c in chunks], "--block-shape", nd), shape, chunks,
                      strict=True))  # fmt: skip
    wanted = _sizes(default_halo, [], "halo", nd)
    if config.halo is None:  # a thin volume has thin blocks: the default halo is at most a block
        halo = tuple(min(int(h), b) for h, b in zip(wanted, block, strict=True))
    else:
        halo = _sizes(config.halo, [], "--halo", nd)
    if any(h < w and b < s for h, w, b, s in zip(halo, wanted, block, shape, strict=True)):  # a block face inside
        logger.warning("halo %s is below the method's %s (block %s): near block faces the result may differ from the "
                       "whole-volume one; a larger --block-shape or --halo avoids it", halo, wanted, block)  # fmt: skip
    return block, halo, chunks


def fingerprint(data: Any) -> str:
    """sha256 of the first, middle and last Z slices of a volume: a regenerated input of the same shape is told
    apart from the one an output was started on, without reading the volume."""
    h = hashlib.sha256()
    for z in sorted({0, data.shape[0] // 2, data.shape[0] - 1}):
        h.update(np.ascontiguousarray(np.asarray(data[z])).tobytes())
    return h.hexdigest()


def input_record(path: Path, dataset: str | None, data: Any) -> dict[str, Any]:
    """What a run record says of its input: path, dataset, shape, dtype, fingerprint."""
    return {"path": str(path), "dataset": dataset, "shape": list(data.shape), "dtype": str(data.dtype),
            "fingerprint": fingerprint(data)}  # fmt: skip


def _previous(path: Path) -> dict[str, Any] | None:
    """The parameters of a blockwise run record at ``path`` (None: none there, or not of a blockwise run)."""
    try:
        params = json.loads(path.read_text(encoding="utf-8")).get("parameters", {})
    except (OSError, ValueError):
        return None
    return params if isinstance(params, dict) and "plan" in params else None


def start_or_resume(
    out: Path,
    config: BlockwiseConfig,
    n_blocks: int,
    make_record: Callable[[dict[str, Any] | None], dict[str, Any]],
    create: Callable[[dict[str, Any]], None],
    *,
    fitted: Sequence[str] = (),
    side: Sequence[Path] = (),
    what: str,
    inputs: Sequence[str],
    overwrite: bool = False,
) -> tuple[dict[str, Any], DoneFlags]:
    """The run's record and done flags: those of ``out`` when it resumes, else new ones.

    ``make_record(previous)`` builds the record; on a resume ``previous`` is the recorded one, whose ``fitted``
    entries (statistics fitted from the whole input: a window, thresholds) are to be kept rather than fitted again;
    every other entry must be equal, or the rerun is refused naming what differs. A new run removes an existing
    output (only with ``overwrite``), its flags and ``side`` arrays, calls ``create(record)`` to create the output
    arrays, writes the record and then the flags (flags exist only once the record does)."""
    flags_path = done_path(out)
    resumable = out.exists() and flags_path.exists() and config.resume and not overwrite
    old = _previous(record_path(out)) if resumable else None
    if old is not None:
        record = json.loads(json.dumps(make_record(old)))  # as it is stored (tuples become lists) to compare
        differs = [f"{k}: {json.dumps(old.get(k))} vs {json.dumps(v)}" for k, v in record.items()
                   if k not in fitted and old.get(k) != v]  # fmt: skip
        if differs:
            raise InvalidInputError(f"--resume: '{out}' was started with another plan, input or settings "
                                    f"({'; '.join(differs)}); write to a new output or pass --overwrite")  # fmt: skip
        flags = DoneFlags(flags_path, n_blocks)
        logger.info("resuming '%s': %d of %d blocks done", out, len(flags.done()), n_blocks)
        return record, flags
    if out.exists() or flags_path.exists():
        if not overwrite:
            raise OutputExistsError(f"-o: '{out}' exists and has no matching run record; pass --overwrite")
        for path in (out, flags_path, *side):  # folders (Zarr stores) and files (the stitch's table and record)
            remove_path(path)
        record_path(out).unlink(missing_ok=True)
    record = json.loads(json.dumps(make_record(None)))
    create(record)
    write_run_record(out, RunRecord(what, record, inputs=tuple(inputs)))
    return record, DoneFlags(flags_path, n_blocks, create=True)


@dataclass(frozen=True)
class BlockwiseRun:
    """How a blockwise command ended: its output, its run record, the plan and the runner's result."""

    output: Path
    record: Path
    plan: BlockPlan
    result: BlockwiseResult


def zarr_output(output: str | os.PathLike[str], what: str) -> Path:
    """The resolved ``-o`` of a blockwise command, refused unless a Zarr array (``OUT.zarr``)."""
    out = Path(output).resolve()
    if not out.name.endswith(".zarr"):
        raise InvalidInputError(f"-o: blockwise {what} writes a Zarr array (OUT.zarr), got '{out}'")
    return out


def run_plan(
    out: Path,
    config: BlockwiseConfig,
    plan: BlockPlan,
    make_record: Callable[[dict[str, Any] | None], dict[str, Any]],
    create: Callable[[dict[str, Any]], None],
    block_function: Callable[[dict[str, Any]], Callable[[Block], Any]],
    *,
    what: str,
    inputs: Sequence[str],
    fitted: Sequence[str] = (),
    side: Sequence[Path] = (),
    overwrite: bool = False,
    progress: ProgressCallback | bool | None = None,
    finish: Callable[[dict[str, Any], BlockwiseResult, Any], T] | None = None,
) -> tuple[dict[str, Any], BlockwiseResult, T | None]:
    """What every blockwise command does with its plan: on the cluster of ``config`` (or in this process), start or
    resume ``out`` (:func:`start_or_resume`), run ``block_function(record)`` over the blocks not done
    (:func:`~fmscope.inference.blockwise.run_blocks`), then ``finish(record, result, client)`` while the cluster is
    up (a stitch pass). Returns the record, the result and what ``finish`` returned."""
    with Cluster(config) as cluster:  # a scheduler that does not answer is refused before anything is written
        record, flags = start_or_resume(out, config, len(plan), make_record, create, fitted=fitted, side=side,
                                        what=what, inputs=inputs, overwrite=overwrite)  # fmt: skip
        result = run_blocks(plan, block_function(record), flags, client=cluster.client, retries=config.retries,
                            progress=progress)  # fmt: skip
        finished = finish(record, result, cluster.client) if finish is not None else None
    return record, result, finished


class Cluster:
    """The client of ``--scheduler`` or of a new LocalCluster of ``--workers`` (``client`` None: in this process),
    as a context manager that closes what it opened. A scheduler that does not answer is refused within the timeout,
    before anything is written."""

    def __init__(self, config: BlockwiseConfig) -> None:
        self.config = config
        self.client: Any = None
        self._cluster: Any = None

    def __enter__(self) -> Cluster:
        config = self.config
        if not config.distributed:
            return self
        from distributed import Client, LocalCluster

        if config.scheduler:
            try:
                self.client = Client(config.scheduler, timeout=config.timeout)
            except (OSError, TimeoutError) as exc:
                raise InvalidInputError(f"--scheduler: no Dask scheduler answered at {config.scheduler!r} within "
                                        f"{config.timeout:g} s ({exc})") from None  # fmt: skip
            return self
        self._cluster = LocalCluster(n_workers=config.workers, threads_per_worker=1, processes=True,
                                     dashboard_address=None, memory_limit=config.worker_memory)  # fmt: skip
        self.client = Client(self._cluster)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.client is not None:
            self.client.close()
        if self._cluster is not None:
            self._cluster.close()


def on_worker() -> bool:
    """Whether this code runs in a Dask worker (where torch should use one thread per worker thread)."""
    try:
        from distributed import get_worker

        get_worker()
        return True
    except (ImportError, ValueError):
        return False


_OPENED: dict[str, tuple[Any, Any]] = {}
_OPENED_LOCK = threading.Lock()


def per_process(slot: str, key: Any, make: Callable[[], T]) -> T:
    """What a block function opens once per process (a model, a lazily read input): ``make()`` on first use, kept
    in ``slot`` while ``key`` (paths, digests, fingerprints) stays the same, replaced when it changes."""
    with _OPENED_LOCK:
        held = _OPENED.get(slot)
        if held is None or held[0] != key:
            _OPENED.pop(slot, None)  # drop the old one before making the new one
            _OPENED[slot] = (key, make())
        return _OPENED[slot][1]


def open_input(source: dict[str, Any]) -> Any:
    """The lazily read input of a run record's ``input`` entry, opened once per process."""
    from fmscope.io import read_image

    key = (source["path"], source.get("dataset"), source["fingerprint"])
    return per_process("input", key, lambda: read_image(source["path"], lazy=True, dataset=source.get("dataset")).data)


def single_threaded_on_worker() -> None:
    """torch on one thread in a Dask worker (one block per worker thread); untouched in this process."""
    if on_worker():
        import torch

        torch.set_num_threads(1)
