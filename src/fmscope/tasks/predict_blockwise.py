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

A 2D model (e.g. one trained from a session's accepted slices) on a ``(Z, Y, X)`` stack predicts whole slices, each
windowed by its own percentiles as its training images were: the blocks split the stack along Z only (a block covers
every Y and X; halo 0), a block predicts one slice at a time (memory: one slice), and the output equals ``fmscope
predict`` without the block flags, voxel for voxel.

Instances (segmentation): ``components`` labels each block's core and merges every pair of ids touching across a face
(the result equals the components of the blockwise class labels); ``watershed`` splits the class labels of the whole
read region (core + halo: seeds and basins near a face see past it), keeps the core and the labels of the plane past
each far face, and merges the ids of two blocks that are each other's largest overlap on that plane
(:mod:`fmscope.inference.stitch`, rule ``overlap``), so that an object cut by a face keeps one id and two objects that
touch at a face stay two.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fmscope.errors import InvalidInputError
from fmscope.inference.blockwise import Block, BlockPlan, BlockwiseResult, plan_blocks
from fmscope.inference.blockwise_output import (
    BlockwiseConfig,
    BlockwiseRun,
    geometry,
    input_record,
    open_input,
    per_process,
    run_plan,
    single_threaded_on_worker,
    zarr_output,
)
from fmscope.inference.predict import WindowConfig, sliding_window_predict
from fmscope.inference.stitch import (
    create_instance_arrays,
    instance_side,
    stitch_blocks,
    write_block_labels,
    write_region_labels,
)
from fmscope.intensity import IntensityProfile, apply_profile, fit_profile
from fmscope.io import read_image
from fmscope.segment import label_components, watershed_split
from fmscope.tasks.model import TaskModel, load_task_model
from fmscope.tasks.predict import predict_array
from fmscope.utils.digest import files_sha256
from fmscope.utils.progress import ProgressCallback
from fmscope.utils.provenance import record_path

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BlockwisePrediction(BlockwiseRun):
    objects: int | None = None  # instances: the number of objects once stitched (None: not asked, or not complete)


class PredictBlock:
    """The per-block function (picklable: paths and numbers; the model and the input are opened once per process)."""

    def __init__(self, record: dict[str, Any], output: str) -> None:
        self.record, self.output = record, output

    def __call__(self, block: Block) -> None:
        import zarr

        model, data = _opened(self.record)
        overlap, batch = self.record["window"]["overlap"], self.record["window"]["batch_size"]
        split = self.record.get("instances")  # None, True (components; the older records' form) or "watershed"
        if self.record["profile"] is None:  # a 2D model: whole slices, each windowed by its own percentiles
            zs = range(block.core[0].start, block.core[0].stop)
            result = np.stack([model.task.output_image(predict_array(model, np.asarray(data[z]), overlap=overlap,
                                                                     batch_size=batch))[0] for z in zs])  # fmt: skip
            if split == "watershed":  # no halo: the region read is the block's slices
                write_region_labels(self.output, block, watershed_split(result > 0))
                return
        else:
            profile = IntensityProfile.from_dict(self.record["profile"])
            raw = np.asarray(data[block.read])
            window = WindowConfig(tuple(model.backbone.config.patch_size), overlap=overlap, batch_size=batch)
            scores = sliding_window_predict(np.asarray(apply_profile(raw, profile), np.float32), model.dense, window,
                                            out_channels=model.spec.n_outputs)  # fmt: skip
            if split == "watershed":  # split over core + halo, as in memory (fmscope predict --instances watershed)
                region, _ = model.task.output_image(scores, instances="watershed")
                write_region_labels(self.output, block, np.asarray(region))
                return
            result, _ = model.task.output_image(scores[(slice(None), *block.inner)])
        if split:  # components of the foreground classes, merged across faces after the last block
            write_block_labels(self.output, block, label_components(np.asarray(result) > 0))
        else:
            zarr.open_array(self.output, mode="r+")[block.core] = np.asarray(result)


def _opened(record: dict[str, Any]) -> tuple[TaskModel, Any]:
    """The model (eval, CPU) and the lazily read input of this process for ``record``, opened once per process;
    torch single-threaded on a Dask worker, as many threads as it likes in this process."""
    model_dir = record["model"]["path"]

    def load() -> TaskModel:
        single_threaded_on_worker()
        return load_task_model(model_dir).eval()

    return per_process("model", (model_dir, record["model"]["digest"]), load), open_input(record["input"])


def model_digest(folder: Path) -> str:
    """sha256 of a model folder's weights and configuration (its top-level .safetensors and .json files)."""
    names = sorted(p.name for p in folder.iterdir() if p.suffix in (".safetensors", ".json") and p.is_file())
    return files_sha256(folder, names)


def _slab_geometry(
    shape: tuple[int, ...], config: BlockwiseConfig
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """Blocks of a 2D model: whole slices (``--block-shape`` may set the slices per block; its Y and X, when given,
    must be the slices'), no halo, chunks of the config's Z size by whole slices."""
    z_chunk = min(config.chunks[0] if config.chunks else 8, shape[0])
    z_block = config.block_shape[0] if config.block_shape else 2 * z_chunk
    if config.block_shape is not None and tuple(config.block_shape[1:]) not in ((), tuple(shape[1:])):
        raise InvalidInputError(f"--block-shape: a 2D model predicts whole slices; give Z only or Y, X = {shape[1:]}, "
                                f"got {config.block_shape}")  # fmt: skip
    if config.halo is not None and any(config.halo):
        raise InvalidInputError(f"--halo: a 2D model predicts each slice alone; no halo is read, got {config.halo}")
    slab = BlockwiseConfig(block_shape=(z_block, *shape[1:]), halo=(0, 0, 0), chunks=(z_chunk, *shape[1:]))
    return geometry(shape, slab, (0, 0, 0))


def _record(model_dir: Path, input_path: Path, dataset: str | None, data: Any, model: TaskModel, plan: BlockPlan,
            profile: IntensityProfile | None, overlap: float, batch_size: int) -> dict[str, Any]:  # fmt: skip
    return {
        "kind": "fmscope predict blockwise",
        "model": {"path": str(model_dir), "digest": model_digest(model_dir), "task": model.spec.task},
        "input": input_record(input_path, dataset, data),
        "window": {"overlap": overlap, "batch_size": batch_size},
        "profile": None if profile is None else profile.to_dict(),
        "plan": plan.to_dict(),
    }


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
    instances: str | None = None,
    overwrite: bool = False,
    progress: ProgressCallback | bool | None = None,
) -> BlockwisePrediction:
    """Predict ``input_path`` into the Zarr ``output`` block by block (see the module doc); ``mask`` (any resolution)
    skips empty blocks (their output stays 0); ``instances`` (segmentation): ``"components"`` (uint32 connected
    components of the foreground classes, equal to the components of the blockwise class labels) or ``"watershed"``
    (touching objects split), stitched across block faces (see the module doc). A bioimage.io package as
    ``model_dir``:
    :func:`fmscope.tasks.bioimageio_blockwise.predict_package_blockwise`."""
    from fmscope.tasks.bioimageio_package import is_package

    if instances not in (None, "components", "watershed"):
        raise InvalidInputError(f"--instances: expected components or watershed, got {instances!r}")
    if is_package(model_dir):
        from fmscope.tasks.bioimageio_blockwise import predict_package_blockwise

        if instances:
            raise InvalidInputError("--instances: a bioimage.io package writes its output tensor as it is")

        return predict_package_blockwise(model_dir, input_path, output, config, dataset=dataset, mask=mask,
                                         overlap=overlap, batch_size=batch_size, overwrite=overwrite,
                                         progress=progress)  # fmt: skip
    model_dir, input_path, out = (
        Path(model_dir).resolve(),
        Path(input_path).resolve(),
        zarr_output(output, "prediction"),
    )
    model = load_task_model(model_dir)
    if not model.task.dense:
        raise InvalidInputError(f"model: a {model.spec.task} model has no dense output to write blockwise")
    if instances and not model.task.label_output:
        raise InvalidInputError(f"--instances: a {model.spec.task} model writes no labels to split into objects")
    image = read_image(input_path, lazy=True, dataset=dataset)
    data, nd = image.data, model.backbone.config.spatial_dims
    if data.ndim != 3:
        raise InvalidInputError(f"input: blockwise prediction takes a (Z, Y, X) volume, got shape {tuple(data.shape)} "
                                "(fmscope predict without the block flags predicts it)")  # fmt: skip
    if nd == 2:
        block, halo, chunks = _slab_geometry(data.shape, config)
    else:
        block, halo, chunks = geometry(data.shape, config, [p // 2 for p in model.backbone.config.patch_size])
    plan = plan_blocks(data.shape, block, halo, chunks, mask=mask)
    spec = model.spec

    def make_record(previous: dict[str, Any] | None) -> dict[str, Any]:
        profile = (
            None  # a 2D model windows each slice by its own percentiles
            if nd == 2
            else IntensityProfile.from_dict(previous["profile"])
            if previous is not None
            else fit_profile(data, low_percentile=spec.low_percentile, high_percentile=spec.high_percentile)
        )
        record = _record(model_dir, input_path, dataset, data, model, plan, profile, overlap, batch_size)
        if instances is None:  # absent: older outputs resume
            return record
        return record | {"instances": True if instances == "components" else instances}  # True: the older form

    def create(record: dict[str, Any]) -> None:
        import zarr

        if instances:
            create_instance_arrays(out, plan)
            return
        probe, _ = model.task.output_image(np.zeros((spec.n_outputs, *(1,) * nd), np.float32))
        zarr.create_array(store=str(out), shape=plan.shape, chunks=plan.chunks, dtype=np.asarray(probe).dtype,
                          fill_value=0)  # fmt: skip

    def stitch(record: dict[str, Any], result: BlockwiseResult, client: Any) -> int | None:
        if instances is None or not result.complete:
            return None
        return stitch_blocks(plan, out, "overlap" if instances == "watershed" else "touching", client, config.retries)

    _, result, objects = run_plan(out, config, plan, make_record, create, lambda r: PredictBlock(r, str(out)),
                                  what="predict (blockwise)", inputs=(str(input_path), str(model_dir)),
                                  fitted=("profile",), side=instance_side(out) if instances else (),
                                  overwrite=overwrite, progress=progress, finish=stitch)  # fmt: skip
    return BlockwisePrediction(out, record_path(out), plan, result, objects)
