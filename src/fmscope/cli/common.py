"""Helpers shared by the CLI commands: reading inputs, selecting channels, writing outputs with provenance."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fmscope.utils.provenance import RunRecord, write_run_record

if TYPE_CHECKING:
    from fmscope.io import Image


def add_input(parser: argparse.ArgumentParser, name: str = "input", help: str = "input image or volume") -> None:
    parser.add_argument(name, type=Path, help=f"{help} (TIFF, OME-Zarr, NIfTI, HDF5, MRC, PNG, or a folder of slices)")


def add_dataset_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", default=None, help="dataset inside an HDF5 file (default: the only one)")


def add_overwrite(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")


def add_overlay_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--overlay", type=Path, default=None, metavar="PNG",
        help="also write a PNG montage of a few slices with the labels outlined, a legend and a scale bar",
    )  # fmt: skip


def write_overlay(
    png: Path, image_path: Path, labels_path: Path, *, dataset: str | None = None, channel: int | None = None,
    overwrite: bool = False, title: str = "", class_names: dict[int, str] | None = None,
) -> Path:  # fmt: skip
    """The ``--overlay`` montage of a written label file on its input (both read lazily: a few slices are loaded)."""
    from fmscope.evaluation.figures import save_label_overlay
    from fmscope.io import read_spatial as read_image_spatial

    image = read_image_spatial(image_path, dataset=dataset, channel=channel)
    labels = read_image_spatial(labels_path)
    meta = image.meta
    known = meta.unit is not None and len(meta.spacing) == len(meta.spatial_axes)
    path = save_label_overlay(
        png, image.data, labels.data, spacing=meta.spacing if known else None, unit=meta.unit, title=title,
        overwrite=overwrite, class_names=class_names,
    )  # fmt: skip
    print(f"overlay: {path}")
    return path


def read_spatial(path: Path, dataset: str | None = None, channel: int | None = None) -> Image:
    """:func:`fmscope.io.read_spatial` with the CLI's argument order."""
    from fmscope.io import read_spatial as read_image_spatial

    return read_image_spatial(path, dataset=dataset, channel=channel)


def finish_output(
    output: Path, command: str, args: argparse.Namespace, inputs: tuple[Path, ...], seed: int | None = None
) -> Path:
    """Write the run record beside ``output`` (command, resolved parameters, versions)."""
    params = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in ("func",)}
    record = RunRecord(command=command, parameters=params, inputs=tuple(str(p) for p in inputs), seed=seed)
    return write_run_record(output, record, overwrite=True)


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))


def print_table(rows: list[tuple[str, str]]) -> None:
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


__all__ = [
    "add_input",
    "add_overlay_option",
    "write_overlay",
    "add_dataset_option",
    "add_overwrite",
    "read_spatial",
    "finish_output",
    "print_json",
    "print_table",
]


BLOCKWISE_FLAGS = ("workers", "scheduler", "block_shape", "halo", "chunks", "resume", "mask")


def add_blockwise_options(parser: argparse.ArgumentParser, halo_default: str) -> None:
    """The flags of a blockwise command (any of them: in blocks, resumable, in process or on Dask)."""
    g = parser.add_argument_group("blockwise (a Zarr output; any of these flags: in blocks, resumable, on Dask)")
    g.add_argument("--workers", type=int, default=None, help="a local cluster of N single-threaded worker processes")
    g.add_argument("--scheduler", default=None, metavar="ADDRESS", help="an existing Dask cluster (tcp://host:8786)")
    g.add_argument("--worker-memory", default="2GiB", help="memory limit per local worker (default 2GiB)")
    g.add_argument("--block-shape", type=int, nargs="+", default=None, metavar="N",
                   help="voxels per block (Z Y X, or one size), a multiple of --chunks (default 2 chunks)")  # fmt: skip
    g.add_argument("--halo", type=int, nargs="+", default=None, metavar="N",
                   help=f"context read around each block (default {halo_default})")  # fmt: skip
    g.add_argument("--chunks", type=int, nargs="+", default=None, metavar="N", help="output Zarr chunks (default 64)")
    g.add_argument("--retries", type=int, default=2, help="attempts after a block's first failure (default 2)")
    g.add_argument("--resume", action=argparse.BooleanOptionalAction, default=None,
                   help="continue an output whose run record matches (default on with the flags above)")  # fmt: skip
    g.add_argument(
        "--mask",
        type=Path,
        default=None,
        help="foreground mask at any resolution (an image file; nonzero = work): empty blocks skipped",
    )


def wants_blockwise(args: argparse.Namespace) -> bool:
    return any(getattr(args, f, None) is not None for f in BLOCKWISE_FLAGS)


def blockwise_config(args: argparse.Namespace) -> Any:
    from fmscope.inference.blockwise_output import BlockwiseConfig

    shape, halo, chunks = (None if v is None else tuple(v) for v in (args.block_shape, args.halo, args.chunks))
    return BlockwiseConfig(shape, halo, chunks, workers=args.workers or 0, scheduler=args.scheduler,
                           worker_memory=args.worker_memory, retries=args.retries,
                           resume=args.resume is not False)  # fmt: skip


def blockwise_mask(args: argparse.Namespace) -> Any:
    """The ``--mask`` image as a boolean array (None without the flag)."""
    if args.mask is None:
        return None
    from fmscope.io import read_image

    return read_image(args.mask).numpy() != 0


def report_blockwise(source: Any, plan: Any, result: Any, output: Path, extra: str = "") -> int:
    """Print how a blockwise run ended (and its failed blocks); exit code 1 when some failed."""
    r = result
    print(f"{source}: {len(plan)} blocks of {plan.block} (halo {plan.halo}): {len(r.computed)} computed, "
          f"{len(r.already_done)} done before, {len(r.skipped)} skipped, {len(r.failed)} failed in {r.seconds:.1f} s"
          f"{extra} -> {output}")  # fmt: skip
    if r.failed:
        for index, error in sorted(r.failed.items()):
            print(f"  block {index}: {error}")
        print("rerun the same command to retry the failed blocks (the others are kept)")
        return 1
    return 0
