"""``fmscope segment IN -o OUT.zarr --method otsu|li|triangle|multiotsu|local|watershed --workers N | ...``: the
classical segmenters on volumes larger than memory, block by block (:mod:`fmscope.inference.blockwise`), in this
process or on a Dask cluster, resumable.

* Global thresholds (otsu, li, triangle, multiotsu, the otsu threshold under watershed) are computed once from a
  histogram of the whole (smoothed) volume streamed over its chunks
  (:func:`~fmscope.segment.threshold.streamed_histogram`), kept in the run record, and applied to every block: the
  mask equals the in-memory ``fmscope segment`` voxel for voxel.
* Smoothing and the local threshold are neighbourhood filters: each block is computed on its core + halo, and the
  default halo covers their Gaussian radii (4 sigma), so that cores equal the whole-volume result.
* Instances (``instances=True``: connected components; watershed) are labelled per block, then stitched across block
  faces (:mod:`fmscope.inference.stitch`): components merge every pair touching across a face (equal to labelling the
  whole mask); watershed, labelled over core + halo, merges the ids that are each other's largest overlap on the
  plane past each face (a watershed is not local: seeds near a face see only the halo, so it agrees with the
  whole-volume watershed up to the objects the halo cuts).

``li`` on integer voxels comes from the streamed histogram, as scikit-image computes it; on float voxels (after
``--smooth`` too) scikit-image iterates over the voxels, and so do we (:func:`~fmscope.segment.threshold.streamed_li`:
one streamed pass per iteration).

Not blockwise: ``per_slice`` global thresholds, ``min_size`` and ``fill_holes`` (they need whole objects).
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fmscope.errors import InvalidInputError
from fmscope.inference.blockwise import Block, BlockwiseResult, plan_blocks
from fmscope.inference.blockwise_output import (
    BlockwiseConfig,
    BlockwiseRun,
    geometry,
    input_record,
    open_input,
    run_plan,
    zarr_output,
)
from fmscope.inference.stitch import (
    create_instance_arrays,
    instance_side,
    stitch_blocks,
    write_block_labels,
    write_region_labels,
)
from fmscope.io import read_image
from fmscope.segment import ClassicalConfig, segment_classical
from fmscope.segment.classical import smooth_finite
from fmscope.segment.threshold import histogram_thresholds, streamed_histogram, streamed_li
from fmscope.utils.progress import ProgressCallback
from fmscope.utils.provenance import record_path

logger = logging.getLogger(__name__)

BLOCKWISE_METHODS = ("otsu", "li", "triangle", "multiotsu", "local", "watershed")
WATERSHED_CONTEXT = 16  # voxels of halo beyond the filters' radii for watershed seeds near a face


@dataclass(frozen=True)
class BlockwiseSegmentation(BlockwiseRun):
    thresholds: tuple[float, ...] = ()
    objects: int | None = None  # instances: the number of objects once stitched (None: not labelled, or not complete)


def check_blockwise(config: ClassicalConfig) -> None:
    """Refuse the settings that have no blockwise form (see the module doc), naming the flag."""
    if config.method not in BLOCKWISE_METHODS:
        raise InvalidInputError(f"--method: {config.method!r} is computed from every voxel at once; blockwise "
                                f"segmentation takes {', '.join(BLOCKWISE_METHODS)}")  # fmt: skip
    if config.watershed_threshold != "otsu" and config.method == "watershed":
        raise InvalidInputError("watershed_threshold: blockwise watershed thresholds by otsu")
    if config.per_slice and config.method != "local":
        raise InvalidInputError(f"--per-slice: a per-slice {config.method} threshold is not blockwise; use "
                                "--method local or drop --per-slice")  # fmt: skip
    if config.min_size or config.fill_holes:
        raise InvalidInputError("--min-size / --fill-holes: need whole objects, not applied block by block; "
                                "clean the stitched labels afterwards")  # fmt: skip
    if config.connectivity != 1:
        raise InvalidInputError(f"connectivity: blockwise labels are stitched across faces with connectivity 1, "
                                f"got {config.connectivity}")  # fmt: skip


def default_halo(config: ClassicalConfig, ndim: int) -> list[int]:
    """Enough context for a block's core to equal the whole-volume filters: the Gaussian radii (truncated at 4
    sigma, as scipy does) of the smoothing and of the local threshold, plus seed context for watershed."""
    radius = int(4 * config.smooth_sigma + 0.5) if config.smooth_sigma > 0 else 0
    if config.method == "local":
        radius += int(4 * (config.block_size - 1) / 6 + 0.5)
    if config.method == "watershed":
        radius += WATERSHED_CONTEXT
    halo = [radius] * ndim
    if config.per_slice:
        halo[0] = 0
    return halo


def _smoothed(data: Any, sigma: float) -> Any:
    """The volume as smoothed by :func:`segment_classical`, lazily (chunks overlapped by the Gaussian radius)."""
    import dask.array as da

    x = data if isinstance(data, da.Array) else da.from_array(data, chunks="auto")
    return x.map_overlap(smooth_finite, depth=int(4 * sigma + 0.5) + 1, boundary="reflect", dtype=np.float64,
                         sigma=sigma)  # fmt: skip


def volume_thresholds(data: Any, config: ClassicalConfig) -> tuple[float, ...]:
    """The global threshold(s) of the whole volume for ``config`` (none for "local"), from a streamed histogram."""
    if config.method == "local":
        return ()
    work = _smoothed(data, config.smooth_sigma) if config.smooth_sigma > 0 else data
    if config.method == "li" and np.dtype(work.dtype).kind == "f":  # iterated over the voxels, as scikit-image does
        return (streamed_li(work),)
    method = "otsu" if config.method == "watershed" else config.method
    return histogram_thresholds(streamed_histogram(work), method, config.classes)


class SegmentBlock:
    """The per-block function (picklable: the record and paths; the input is opened once per process)."""

    def __init__(self, record: dict[str, Any], output: str) -> None:
        self.record, self.output = record, output

    def __call__(self, block: Block) -> None:
        import zarr

        record = self.record
        config = ClassicalConfig(**record["classical"])
        raw = np.asarray(open_input(record["input"])[block.read])
        thresholds = tuple(record["thresholds"]) or None
        result = segment_classical(raw, config, instances=record["instances"], thresholds=thresholds)
        if result.labels is None:
            zarr.open_array(self.output, mode="r+")[block.core] = result.mask[block.inner].astype(np.uint8)
        elif config.method == "watershed":  # the region's labels: the overlap rule pairs them past the faces
            write_region_labels(self.output, block, result.labels)
        else:
            write_block_labels(self.output, block, result.labels[block.inner])


def segment_blockwise(
    input_path: str | os.PathLike[str],
    output: str | os.PathLike[str],
    classical: ClassicalConfig = ClassicalConfig(),
    config: BlockwiseConfig = BlockwiseConfig(),
    *,
    instances: bool = False,
    dataset: str | None = None,
    mask: Any = None,
    overwrite: bool = False,
    progress: ProgressCallback | bool | None = None,
) -> BlockwiseSegmentation:
    """Segment ``input_path`` into the Zarr ``output`` block by block (see the module doc): a uint8 mask, or
    uint32 instance labels (``instances``, or watershed) stitched across block faces; ``mask`` (any resolution)
    skips empty blocks."""
    input_path, out = Path(input_path).resolve(), zarr_output(output, "segmentation")
    check_blockwise(classical)
    data = read_image(input_path, lazy=True, dataset=dataset).data
    if data.ndim not in (2, 3) or (classical.per_slice and data.ndim != 3):
        raise InvalidInputError(f"image: expected a (Z, Y, X) volume or a (Y, X) image, got shape {data.shape}")
    labelled = instances or classical.method == "watershed"
    block, halo, chunks = geometry(data.shape, config, default_halo(classical, data.ndim))
    plan = plan_blocks(data.shape, block, halo, chunks, mask=mask)

    def make_record(previous: dict[str, Any] | None) -> dict[str, Any]:
        thresholds = previous["thresholds"] if previous is not None else list(volume_thresholds(data, classical))
        logger.info("blockwise %s: thresholds %s", classical.method, thresholds)
        return {"kind": "fmscope segment blockwise", "input": input_record(input_path, dataset, data),
                "classical": asdict(classical), "instances": labelled, "thresholds": thresholds,
                "plan": plan.to_dict()}  # fmt: skip

    def create(record: dict[str, Any]) -> None:
        import zarr

        if labelled:
            create_instance_arrays(out, plan)
        else:
            zarr.create_array(store=str(out), shape=plan.shape, chunks=plan.chunks, dtype=np.uint8, fill_value=0)

    def stitch(record: dict[str, Any], result: BlockwiseResult, client: Any) -> int | None:
        if not (labelled and result.complete):
            return None
        return stitch_blocks(plan, out, "overlap" if classical.method == "watershed" else "touching", client,
                             config.retries)  # fmt: skip

    # the thresholds are streamed on the cluster too (make_record runs while it is up)
    record, result, objects = run_plan(out, config, plan, make_record, create, lambda r: SegmentBlock(r, str(out)),
                                       what="segment (blockwise)", inputs=(str(input_path),), fitted=("thresholds",),
                                       side=instance_side(out), overwrite=overwrite, progress=progress,
                                       finish=stitch)  # fmt: skip
    return BlockwiseSegmentation(out, record_path(out), plan, result, tuple(record["thresholds"]), objects)
