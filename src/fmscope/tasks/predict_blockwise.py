"""``fmscope predict MODEL IN -o OUT.zarr --workers N | --scheduler ADDRESS | --block-shape ... | --resume``: a dense
task model applied block by block (:mod:`fmscope.inference.blockwise`), in this process or on a Dask cluster, and
resumable after a crash.

The input's intensity window is fitted once (streamed over chunks) and kept in the run record
(``OUT.zarr.fmscope.json``) with the plan, the model (digest of its weights), the input (path, shape, dtype) and the
window settings; every block is normalised with that one window, predicted by
:func:`~fmscope.inference.sliding_window_predict` on its core + halo and its core written into the output Zarr, then
flagged done. A rerun with the same record resumes (only blocks not flagged are computed; the result is bit-identical
to an uninterrupted run); a different record is refused, naming what differs. A block's result depends only on its
own read region, so the output does not depend on the order, the workers or the interruptions; it differs from the
whole-volume prediction only near block faces by less than the halo lets windows overlap (halo >= half a window
makes the blends agree up to the Gaussian weights of windows cut at the faces).

3D models only here (a 2D model windows each slice by its own percentiles: ``fmscope predict`` without these flags).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fmscope.errors import InvalidInputError, OutputExistsError
from fmscope.inference.blockwise import Block, BlockPlan, BlockwiseResult, DoneFlags, done_path, plan_blocks, run_blocks
from fmscope.inference.predict import WindowConfig, sliding_window_predict
from fmscope.intensity import IntensityProfile, apply_profile, fit_profile
from fmscope.io import read_image
from fmscope.tasks.model import TaskModel, load_task_model
from fmscope.utils.progress import ProgressCallback
from fmscope.utils.provenance import RunRecord, record_path, write_run_record

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BlockwiseConfig:
    """Blocks and where they run.

    Attributes:
        block_shape: voxels per block core (a multiple of ``chunks``); default 2 chunks per axis (cut to the volume).
        halo: context read around each core; default half the model's window.
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


@dataclass(frozen=True)
class BlockwisePrediction:
    output: Path
    record: Path
    plan: BlockPlan
    result: BlockwiseResult


class PredictBlock:
    """The per-block function (picklable: paths and numbers; the model and the input are opened once per process)."""

    def __init__(self, record: dict[str, Any], output: str) -> None:
        self.record, self.output = record, output

    def __call__(self, block: Block) -> None:
        import zarr

        model, data = _opened(self.record)
        profile = IntensityProfile.from_dict(self.record["profile"])
        raw = np.asarray(data[block.read])
        window = WindowConfig(tuple(model.backbone.config.patch_size), overlap=self.record["window"]["overlap"],
                              batch_size=self.record["window"]["batch_size"])  # fmt: skip
        scores = sliding_window_predict(np.asarray(apply_profile(raw, profile), np.float32), model.dense, window,
                                        out_channels=model.spec.n_outputs)  # fmt: skip
        result, _ = model.task.output_image(scores[(slice(None), *block.inner)])
        zarr.open_array(self.output, mode="r+")[block.core] = np.asarray(result)


_OPEN: dict[tuple[str, ...], tuple[TaskModel, Any]] = {}
_OPEN_LOCK = threading.Lock()


def _opened(record: dict[str, Any]) -> tuple[TaskModel, Any]:
    """The model (eval, CPU) and the lazily read input of this process for ``record``, opened on first use and kept
    while the record's model digest and input stay the same; torch single-threaded on a Dask worker (one block per
    worker thread), as many threads as it likes in this process."""
    model_dir, source = record["model"]["path"], record["input"]
    key = (model_dir, record["model"]["digest"], source["path"], str(source.get("dataset")), source["fingerprint"])
    with _OPEN_LOCK:
        if key not in _OPEN:
            _OPEN.clear()
            if _on_worker():
                import torch

                torch.set_num_threads(1)
            image = read_image(source["path"], lazy=True, dataset=source.get("dataset"))
            _OPEN[key] = (load_task_model(model_dir).eval(), image.data)
        return _OPEN[key]


def _on_worker() -> bool:
    try:
        from distributed import get_worker

        get_worker()
        return True
    except (ImportError, ValueError):
        return False


def _default(values: tuple[int, ...] | None, fallback: list[int], name: str, n: int) -> tuple[int, ...]:
    out = tuple(int(v) for v in (values if values is not None else fallback))
    if len(out) == 1 and n > 1:
        out = out * n
    if len(out) != n:
        raise InvalidInputError(f"{name}: expected 1 or {n} sizes, got {values}")
    return out


def model_digest(folder: Path) -> str:
    """sha256 of a model folder's weights and configuration (its top-level .safetensors and .json files)."""
    h = hashlib.sha256()
    for f in sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", ".json") and p.is_file()):
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def fingerprint(data: Any) -> str:
    """sha256 of the first, middle and last Z slices of a volume: a regenerated input of the same shape is told
    apart from the one an output was started on, without reading the volume."""
    h = hashlib.sha256()
    for z in sorted({0, data.shape[0] // 2, data.shape[0] - 1}):
        h.update(np.ascontiguousarray(np.asarray(data[z])).tobytes())
    return h.hexdigest()


def _record(model_dir: Path, input_path: Path, dataset: str | None, data: Any, model: TaskModel, plan: BlockPlan,
            profile: IntensityProfile, overlap: float, batch_size: int) -> dict[str, Any]:  # fmt: skip
    return {
        "kind": "fmscope predict blockwise",
        "model": {"path": str(model_dir), "digest": model_digest(model_dir), "task": model.spec.task},
        "input": {
            "path": str(input_path),
            "dataset": dataset,
            "shape": list(data.shape),
            "dtype": str(data.dtype),
            "fingerprint": fingerprint(data),
        },
        "window": {"overlap": overlap, "batch_size": batch_size},
        "profile": profile.to_dict(),
        "plan": plan.to_dict(),
    }


def _previous(path: Path) -> dict[str, Any] | None:
    """The parameters of a blockwise run record at ``path`` (None: none there, or not of a blockwise run)."""
    try:
        params = json.loads(path.read_text(encoding="utf-8")).get("parameters", {})
    except (OSError, ValueError):
        return None
    return params if isinstance(params, dict) and {"plan", "profile"} <= set(params) else None


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What a rerun's record changes (the profile is the one recorded: it follows from the input)."""
    return [f"{k}: {json.dumps(old.get(k))} vs {json.dumps(new[k])}" for k in ("model", "input", "window", "plan")
            if old.get(k) != new[k]]  # fmt: skip


def predict_blockwise(
    model_dir: str | os.PathLike[str],
    input_path: str | os.PathLike[str],
    output: str | os.PathLike[str],
    config: BlockwiseConfig = BlockwiseConfig(),
    *,
    dataset: str | None = None,
    mask: Any = None,
    overlap: float = 0.5,
    batch_size: int = 2,
    overwrite: bool = False,
    progress: ProgressCallback | bool | None = None,
) -> BlockwisePrediction:
    """Predict ``input_path`` into the Zarr ``output`` block by block (see the module doc); ``mask`` (any resolution)
    skips empty blocks (their output stays 0)."""
    model_dir, input_path, out = (Path(p).resolve() for p in (model_dir, input_path, output))
    if not out.name.endswith(".zarr"):
        raise InvalidInputError(f"-o: blockwise prediction writes a Zarr array (OUT.zarr), got '{out}'")
    model = load_task_model(model_dir)
    if not model.task.dense:
        raise InvalidInputError(f"model: a {model.spec.task} model has no dense output to write blockwise")
    image = read_image(input_path, lazy=True, dataset=dataset)
    data, nd = image.data, model.backbone.config.spatial_dims
    if data.ndim != nd or nd != 3:
        raise InvalidInputError(f"model: blockwise prediction takes a 3D model and a (Z, Y, X) volume; got a {nd}D "
                                f"model and shape {tuple(data.shape)} (fmscope predict without the block flags "
                                "predicts it)")  # fmt: skip
    shape = tuple(int(s) for s in data.shape)
    chunks = tuple(min(c, s) for c, s in zip(_default(config.chunks, [64] * nd, "chunks", nd), shape, strict=True))
    block = tuple(min(b, -(-s // c) * c) for b, s, c in
                  zip(_default(config.block_shape, [2 * c for c in chunks], "--block-shape", nd), shape, chunks,
                      strict=True))  # fmt: skip
    if config.halo is None:  # half a window, at most a block (a thin volume has thin blocks)
        halo = tuple(min(p // 2, b) for p, b in zip(model.backbone.config.patch_size, block, strict=True))
    else:
        halo = _default(config.halo, [], "--halo", nd)
    plan = plan_blocks(shape, block, halo, chunks, mask=mask)
    client, cluster = _client(config)  # a scheduler that does not answer is refused before anything is written
    try:
        record, flags = _start_or_resume(out, config, model, model_dir, input_path, dataset, data, plan, overlap,
                                         batch_size, overwrite)  # fmt: skip
        result = run_blocks(plan, PredictBlock(record, str(out)), flags, client=client, retries=config.retries,
                            progress=progress)  # fmt: skip
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
    if result.failed:
        logger.error("blocks %s failed; rerun the same command to retry them", sorted(result.failed))
    return BlockwisePrediction(out, record_path(out), plan, result)


def _start_or_resume(out: Path, config: BlockwiseConfig, model: TaskModel, model_dir: Path, input_path: Path,
                     dataset: str | None, data: Any, plan: BlockPlan, overlap: float, batch_size: int,
                     overwrite: bool) -> tuple[dict[str, Any], DoneFlags]:  # fmt: skip
    """The run's record and done flags: those of ``out`` when it resumes (its record must match), else new ones
    (an existing output is replaced only with ``overwrite``)."""
    import zarr

    flags_path = done_path(out)
    resumable = out.exists() and flags_path.exists() and config.resume and not overwrite
    old = _previous(record_path(out)) if resumable else None
    if old is not None:
        profile = IntensityProfile.from_dict(old["profile"])
        record = _record(model_dir, input_path, dataset, data, model, plan, profile, overlap, batch_size)
        differs = _differences(old, record)
        if differs:
            raise InvalidInputError(f"--resume: '{out}' was started with another plan or model ({'; '.join(differs)});"
                                    " write to a new output or pass --overwrite")  # fmt: skip
        flags = DoneFlags(flags_path, len(plan))
        logger.info("resuming '%s': %d of %d blocks done", out, len(flags.done()), len(plan))
        return record, flags
    if out.exists() or flags_path.exists():
        if not overwrite:
            raise OutputExistsError(f"-o: '{out}' exists and has no matching run record; pass --overwrite")
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(flags_path, ignore_errors=True)
        record_path(out).unlink(missing_ok=True)
    spec, nd = model.spec, len(plan.shape)
    profile = fit_profile(data, low_percentile=spec.low_percentile, high_percentile=spec.high_percentile)
    record = _record(model_dir, input_path, dataset, data, model, plan, profile, overlap, batch_size)
    probe, _ = model.task.output_image(np.zeros((spec.n_outputs, *(1,) * nd), np.float32))
    zarr.create_array(store=str(out), shape=plan.shape, chunks=plan.chunks, dtype=np.asarray(probe).dtype,
                      fill_value=0)  # fmt: skip
    write_run_record(out, RunRecord("predict (blockwise)", record, inputs=(str(input_path), str(model_dir))))
    return record, DoneFlags(flags_path, len(plan), create=True)  # flags exist only once the record does


def _client(config: BlockwiseConfig) -> tuple[Any, Any]:
    """A client of ``--scheduler`` or of a new LocalCluster of ``--workers`` (None, None: in this process)."""
    if not config.workers and not config.scheduler:
        return None, None
    from distributed import Client, LocalCluster

    if config.scheduler:
        try:
            return Client(config.scheduler, timeout=config.timeout), None
        except (OSError, TimeoutError) as exc:
            raise InvalidInputError(f"--scheduler: no Dask scheduler answered at {config.scheduler!r} within "
                                    f"{config.timeout:g} s ({exc})") from None  # fmt: skip
    cluster = LocalCluster(n_workers=config.workers, threads_per_worker=1, processes=True, dashboard_address=None,
                           memory_limit=config.worker_memory)  # fmt: skip
    return Client(cluster), cluster
