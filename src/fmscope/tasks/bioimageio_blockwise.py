"""``fmscope predict PACKAGE.zip IN.zarr -o OUT.zarr --workers N | --scheduler ... | --block-shape ...``: a bioimage.io
package (:mod:`fmscope.tasks.bioimageio_package`) applied block by block on the runner of
:mod:`fmscope.inference.blockwise`, in this process or on a Dask cluster, resumable.

As for fmscope's own models (:mod:`fmscope.tasks.predict_blockwise`): the preprocessing statistics are fitted once
over the whole input (streamed) and kept in the run record with the plan, the package (its path and sha256) and the
input; every block is normalised with them, windowed on its core + halo (default half a window) and its core written
(float32; a channel axis first when the package has several output channels), then flagged done.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from fmscope.errors import InvalidInputError
from fmscope.inference.blockwise import Block, plan_blocks
from fmscope.inference.blockwise_output import (
    BlockwiseConfig,
    geometry,
    input_record,
    open_input,
    per_process,
    run_plan,
    single_threaded_on_worker,
    zarr_output,
)
from fmscope.inference.predict import WindowConfig, sliding_window_predict
from fmscope.io import read_image
from fmscope.tasks.bioimageio_package import PackageModel, load_package
from fmscope.tasks.predict_blockwise import BlockwisePrediction
from fmscope.utils.digest import file_sha256, files_sha256
from fmscope.utils.progress import ProgressCallback
from fmscope.utils.provenance import record_path

logger = logging.getLogger(__name__)


def _sha256(path: Path) -> str:
    """sha256 of a package: the zip file, or every file of an unzipped package folder (names included)."""
    if not path.is_dir():
        return file_sha256(path)
    return files_sha256(path, sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()))


def _package(record: dict[str, Any]) -> PackageModel:
    source = record["package"]

    def load() -> PackageModel:
        single_threaded_on_worker()
        return load_package(source["path"], weight_format=source["weight_format"])

    return per_process("package", (source["path"], source["sha256"]), load)


class PackageBlock:
    """The per-block function (picklable: the record and the output path)."""

    def __init__(self, record: dict[str, Any], output: str) -> None:
        self.record, self.output = record, output

    def __call__(self, block: Block) -> None:
        import torch
        import zarr

        package = _package(self.record)
        raw = np.asarray(open_input(self.record["input"])[block.read])
        window = WindowConfig(package.window, overlap=self.record["window"]["overlap"],
                              batch_size=self.record["window"]["batch_size"])  # fmt: skip
        with torch.inference_mode():
            scores = sliding_window_predict(package.normalise(raw, self.record["statistics"]), package.predictor,
                                            window, out_channels=package.out_channels)  # fmt: skip
        core = scores[(slice(None), *block.inner)]
        target = zarr.open_array(self.output, mode="r+")
        if package.out_channels == 1:
            target[block.core] = core[0]
        else:
            target[(slice(None), *block.core)] = core


def predict_package_blockwise(
    source: str | os.PathLike[str],
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
    """Apply the package ``source`` to ``input_path`` into the Zarr ``output`` block by block (see the module doc)."""
    source, input_path, out = Path(source).resolve(), Path(input_path).resolve(), zarr_output(output, "prediction")
    package = load_package(source)
    data = read_image(input_path, lazy=True, dataset=dataset).data
    if data.ndim != 3 or len(package.spatial) != 3:
        raise InvalidInputError(f"model: blockwise prediction takes a 3D package and a (Z, Y, X) volume; got a "
                                f"{len(package.spatial)}D package and shape {tuple(data.shape)}")  # fmt: skip
    block, halo, chunks = geometry(data.shape, config, [w // 2 for w in package.window])
    plan = plan_blocks(data.shape, block, halo, chunks, mask=mask)

    def make_record(previous: dict[str, Any] | None) -> dict[str, Any]:
        statistics = previous["statistics"] if previous is not None else package.fit_statistics(data)
        weights = {"path": str(source), "sha256": _sha256(source), "weight_format": package.weight_format}
        return {"kind": "fmscope predict blockwise (bioimage.io)", "package": weights,
                "input": input_record(input_path, dataset, data), "statistics": statistics,
                "window": {"overlap": overlap, "batch_size": batch_size}, "plan": plan.to_dict()}  # fmt: skip

    def create(record: dict[str, Any]) -> None:
        import zarr

        many = package.out_channels > 1
        shape = (package.out_channels, *plan.shape) if many else plan.shape
        chunk = (package.out_channels, *plan.chunks) if many else plan.chunks
        zarr.create_array(store=str(out), shape=shape, chunks=chunk, dtype=np.float32, fill_value=0)

    _, result, _ = run_plan(out, config, plan, make_record, create, lambda r: PackageBlock(r, str(out)),
                            what="predict (blockwise, bioimage.io)", inputs=(str(input_path), str(source)),
                            fitted=("statistics",), overwrite=overwrite, progress=progress)  # fmt: skip
    return BlockwisePrediction(out, record_path(out), plan, result)
