"""``fmscope segment IN -o OUT.zarr --method rf --labels SCRIBBLES | --forest DIR`` with the blockwise flags: the
scribble-trained pixel classifier (:mod:`fmscope.segment.scribbles`) applied block by block
(:mod:`fmscope.inference.blockwise`), in this process or on a Dask cluster, resumable.

Training reads only the blocks whose core holds painted voxels (core + the features' halo; the painted voxels of the
halo belong to the neighbouring block, so none counts twice), in this process, blocks ``--mask`` skips included. The
forest is saved beside the output (``OUT.zarr.forest``, a model folder that ``--forest`` takes again) and named in
the run record with its digest: a resumed run applies that forest and never retrains; a given ``--forest`` is
applied as it is. Each block computes its features on core + halo (halo = the filters' radius), so the output equals
the whole-volume prediction of the same forest voxel for voxel. Skipped blocks (``--mask``) stay 0 (no class).
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fmscope.errors import InvalidInputError
from fmscope.inference.blockwise import Block, BlockPlan, plan_blocks
from fmscope.inference.blockwise_output import (
    BlockwiseConfig,
    BlockwiseRun,
    geometry,
    input_record,
    open_input,
    per_process,
    run_plan,
    zarr_output,
)
from fmscope.io import read_image
from fmscope.segment.pixel_classifier import PixelClassifierConfig
from fmscope.segment.scribbles import ScribbleModel, feature_halo, fit_scribbles, model_digest
from fmscope.utils.progress import ProgressCallback
from fmscope.utils.provenance import record_path

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BlockwiseClassification(BlockwiseRun):
    forest: Path = Path()  # the model folder applied


def forest_path(output: Path) -> Path:
    """Where a blockwise rf run keeps the forest it trained (``OUT.zarr.forest``)."""
    return output.with_name(output.name + ".forest")


class ClassifyBlock:
    """The per-block function (picklable: the record and paths; the forest and the input open once per process)."""

    def __init__(self, record: dict[str, Any], output: str) -> None:
        self.record, self.output = record, output

    def __call__(self, block: Block) -> None:
        import zarr

        forest = self.record["forest"]
        model = per_process("forest", (forest["path"], forest["digest"]), lambda: ScribbleModel.load(forest["path"]))
        raw = np.asarray(open_input(self.record["input"])[block.read])
        zarr.open_array(self.output, mode="r+")[block.core] = model.label(raw)[block.inner]


def _painted_regions(data: Any, scribbles: Any, plan: BlockPlan) -> Any:
    """``(image, scribbles)`` per block whose core holds painted voxels: core + halo of the image, the scribbles of
    the core only (0 in the halo)."""
    for block in (plan.block_at(i) for i in range(len(plan))):  # the mask's skipped blocks too: paint is paint
        core = np.asarray(scribbles[block.core])
        if not core.any():
            continue
        painted = np.zeros(tuple(s.stop - s.start for s in block.read), dtype=core.dtype)
        painted[block.inner] = core
        yield np.asarray(data[block.read]), painted


def classify_blockwise(
    input_path: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    scribbles: str | os.PathLike[str] | None = None,
    forest: str | os.PathLike[str] | None = None,
    classifier: PixelClassifierConfig | None = None,
    per_slice: bool = False,
    config: BlockwiseConfig = BlockwiseConfig(),
    dataset: str | None = None,
    mask: Any = None,
    overwrite: bool = False,
    progress: ProgressCallback | bool | None = None,
) -> BlockwiseClassification:
    """Classify ``input_path`` into the uint8 Zarr ``output`` (painted values 1..K) block by block, with a forest
    trained on ``scribbles`` (a label image of the input's shape) or the saved ``forest`` (see the module doc)."""
    input_path, out = Path(input_path).resolve(), zarr_output(output, "segmentation")
    if (scribbles is None) == (forest is None):
        raise InvalidInputError("--labels / --forest: give one (scribbles to train on, or a saved forest)")
    data = read_image(input_path, lazy=True, dataset=dataset).data
    given = ScribbleModel.load(forest) if forest is not None else None
    if given is not None:
        per_slice = given.per_slice
        if given.classifier.ndim != data.ndim - per_slice:
            what = "slices" if per_slice else "images"
            raise InvalidInputError(f"--forest: it classifies {given.classifier.ndim}D {what}, the input has shape "
                                    f"{data.shape}")  # fmt: skip
    if data.ndim not in (2, 3) or (per_slice and data.ndim != 3):
        raise InvalidInputError(f"--per-slice: expected a (Z, Y, X) volume (or a (Y, X) image without --per-slice), "
                                f"got shape {data.shape}")  # fmt: skip
    cfg = given.classifier.config if given is not None else classifier or PixelClassifierConfig()
    block, halo, chunks = geometry(data.shape, config, feature_halo(cfg, per_slice, data.ndim))
    plan = plan_blocks(data.shape, block, halo, chunks, mask=mask)
    trained = forest_path(out)
    marks_path = Path(scribbles).resolve() if scribbles is not None else None
    marks = read_image(marks_path, lazy=True).data if marks_path is not None else None
    if marks is not None and tuple(marks.shape) != tuple(data.shape):
        raise InvalidInputError(f"--labels: expected scribbles of the image's shape {tuple(data.shape)}, "
                                f"got {tuple(marks.shape)}")  # fmt: skip

    def make_record(previous: dict[str, Any] | None) -> dict[str, Any]:
        if given is not None:
            applied = {"path": str(Path(forest).resolve()), "digest": model_digest(forest)}  # type: ignore[arg-type]
        elif previous is not None:
            applied = previous["forest"]
            if not Path(applied["path"]).is_dir() or model_digest(applied["path"]) != applied["digest"]:
                raise InvalidInputError(f"--resume: the forest this output was started with, '{applied['path']}', "
                                        "is gone or changed; pass --overwrite to train again")  # fmt: skip
        else:
            model = fit_scribbles(_painted_regions(data, marks, plan), cfg, per_slice=per_slice)
            model.save(trained, overwrite=True)
            applied = {"path": str(trained), "digest": model_digest(trained)}
        return {"kind": "fmscope segment blockwise rf", "input": input_record(input_path, dataset, data),
                "scribbles": None if marks_path is None else input_record(marks_path, None, marks),
                "classifier": asdict(cfg), "per_slice": per_slice, "forest": applied,
                "plan": plan.to_dict()}  # fmt: skip

    def create(record: dict[str, Any]) -> None:
        import zarr

        zarr.create_array(store=str(out), shape=plan.shape, chunks=plan.chunks, dtype=np.uint8, fill_value=0)

    record, result, _ = run_plan(out, config, plan, make_record, create, lambda r: ClassifyBlock(r, str(out)),
                                 what="segment (blockwise rf)", inputs=(str(input_path),),
                                 fitted=("forest",) if given is None else (), side=(trained,) if given is None else (),
                                 overwrite=overwrite, progress=progress)  # fmt: skip
    return BlockwiseClassification(out, record_path(out), plan, result, Path(record["forest"]["path"]))
