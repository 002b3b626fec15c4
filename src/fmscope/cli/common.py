"""Helpers shared by the CLI commands: reading inputs, selecting channels, writing outputs with provenance."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from fmscope.errors import InvalidInputError
from fmscope.io import Image, read_image
from fmscope.utils.provenance import RunRecord, write_run_record


def add_input(parser: argparse.ArgumentParser, name: str = "input", help: str = "input image or volume") -> None:
    parser.add_argument(name, type=Path, help=f"{help} (TIFF, OME-Zarr, NIfTI, HDF5, MRC, PNG, or a folder of slices)")


def add_dataset_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", default=None, help="dataset inside an HDF5 file (default: the only one)")


def add_overwrite(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")


def read_spatial(path: Path, dataset: str | None = None, channel: int | None = None) -> Image:
    """Read an image and reduce it to a single-channel 2D (YX) or 3D (ZYX) image.

    A multi-channel input needs ``channel``; a time axis or anything beyond 3 spatial axes is refused.
    """
    image = read_image(path, dataset=dataset)
    if "C" in image.meta.axes:
        if channel is None and image.meta.n_channels > 1:
            raise InvalidInputError(
                f"{path}: has {image.meta.n_channels} channels (axes {image.meta.axes}); choose one with --channel"
            )
        image = image.channel(channel or 0)
    elif channel not in (None, 0):
        raise InvalidInputError(f"{path}: --channel {channel} given but the image has no channel axis")
    if image.meta.axes not in ("YX", "ZYX"):
        raise InvalidInputError(
            f"{path}: expected a 2D (Y, X) or 3D (Z, Y, X) image, got axes {image.meta.axes} with shape {image.shape}"
        )
    return image


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
    "add_dataset_option",
    "add_overwrite",
    "read_spatial",
    "finish_output",
    "print_json",
    "print_table",
]
