"""Data commands: ``info``, ``convert``, ``normalize``."""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fmscope.cli.common import (
    add_dataset_option,
    add_input,
    add_overwrite,
    finish_output,
    print_json,
    print_table,
    read_spatial,
)
from fmscope.errors import InvalidInputError
from fmscope.utils.atomic import check_output_path

if TYPE_CHECKING:
    from fmscope.io import ImageMetadata

logger = logging.getLogger(__name__)


def register(sub: Any) -> None:
    p = sub.add_parser("info", help="shape, dtype, axes, spacing and value range of an image")
    add_input(p, "path")
    add_dataset_option(p)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--no-stats", action="store_true", help="skip the value-range pass (streams the whole volume)")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("convert", help="convert between formats (format chosen by the output extension)")
    add_input(p)
    p.add_argument("output", type=Path, help="output path (.tif, .ome.tif, .ome.zarr, .nii.gz, .h5, .mrc, folder/)")
    add_dataset_option(p)
    p.add_argument("--out-dataset", default=None, help="dataset name inside an HDF5 output (default 'data')")
    p.add_argument("--labels", action="store_true", help="the image is a label map (nearest-neighbour pyramid)")
    p.add_argument(
        "--spacing", default=None, help="set the voxel size, one value per spatial axis in file order (Z,Y,X or Y,X)"
    )
    p.add_argument("--unit", default=None, help="unit of --spacing: nm, um, mm, angstrom... (default: keep)")
    add_overwrite(p)
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser(
        "normalize", help="robust percentile normalisation to [0, 1] (or 8-bit), with a replayable profile"
    )
    add_input(p)
    p.add_argument("output", type=Path, help="output path; the profile is written beside it as OUTPUT.profile.json")
    add_dataset_option(p)
    p.add_argument("--channel", type=int, default=None, help="channel to use for a multi-channel image")
    p.add_argument("--low", type=float, default=1.0, help="low percentile mapped to 0 (default 1)")
    p.add_argument("--high", type=float, default=99.8, help="high percentile mapped to 1 (default 99.8)")
    p.add_argument("--gamma", type=float, default=1.0, help="gamma applied after normalisation (default 1)")
    p.add_argument("--clahe", action="store_true", help="contrast-limited adaptive histogram equalisation per slice")
    p.add_argument("--denoise", choices=("none", "gaussian", "median"), default="none", help="denoise before windowing")
    p.add_argument("--sigma", type=float, default=1.0, help="Gaussian denoise sigma in voxels")
    p.add_argument("--target-spacing", type=float, nargs="+", default=None, help="resample to this spacing (Z Y X)")
    p.add_argument("--uint8", action="store_true", help="write 8-bit (0-255) instead of float32 in [0, 1]")
    add_overwrite(p)
    p.set_defaults(func=cmd_normalize)


def cmd_info(args: argparse.Namespace) -> int:
    from fmscope.intensity import compute_stats
    from fmscope.io import read_image

    image = read_image(args.path, dataset=args.dataset)
    meta = image.meta
    stats = None if args.no_stats else compute_stats(image.data, progress=image.is_lazy)
    if args.json:
        out: dict[str, Any] = {"path": str(args.path), **meta.to_dict(), "lazy": image.is_lazy}
        if stats is not None:
            out["stats"] = stats.to_dict()
        print_json(out)
        return 0
    unit = meta.unit or "unknown unit"
    rows = [
        ("path", str(args.path)),
        ("format", meta.format + (f" (dataset {meta.dataset})" if meta.dataset else "")),
        ("shape", str(meta.shape)),
        ("axes", meta.axes),
        ("dtype", meta.dtype),
        ("spacing", f"{meta.spacing} {unit}"),
        ("lazy", "yes (dask)" if image.is_lazy else "no (in memory)"),
    ]
    if stats is not None:
        rows += [
            ("value range", f"{stats.min:g} .. {stats.max:g}"),
            ("percentiles", ", ".join(f"p{q:g}={v:g}" for q, v in stats.percentiles)),
            ("mean +/- std", f"{stats.mean:.4g} +/- {stats.std:.4g}"),
            ("non-finite", str(stats.n_nonfinite)),
        ]
    if meta.notes:
        rows.append(("notes", "; ".join(meta.notes)))
    print_table(rows)
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from fmscope.io import read_image, write_image

    check_output_path(args.output, args.overwrite)
    image = read_image(args.input, dataset=args.dataset)
    meta = with_physical_size(image.meta, args.spacing, args.unit)
    written = write_image(
        args.output,
        image.data,
        meta,
        overwrite=args.overwrite,
        dataset=args.out_dataset,
        labels=args.labels,
        progress=image.is_lazy,
    )
    finish_output(written, "convert", args, (args.input,))
    size = f", voxel {' x '.join(f'{v:g}' for v in meta.spacing)} {meta.unit}" if meta.unit else ""
    print(f"wrote {written} ({meta.axes} {meta.shape} {meta.dtype}{size})")
    return 0


def with_physical_size(meta: ImageMetadata, spacing: str | None, unit: str | None) -> ImageMetadata:
    """``meta`` with the voxel size ``'Z,Y,X'`` (one value per spatial axis) and/or unit set from the command line."""
    from fmscope.io import ANGSTROM_PER_UNIT, normalize_unit

    changes: dict[str, Any] = {}
    if spacing is not None:
        try:
            values = tuple(float(v) for v in spacing.replace(" ", ",").split(",") if v)
        except ValueError:
            raise InvalidInputError(f"--spacing: expected numbers like 40,4,4, got {spacing!r}") from None
        n = len(meta.spatial_axes)
        if len(values) != n or not all(math.isfinite(v) and v > 0 for v in values):
            raise InvalidInputError(
                f"--spacing: expected {n} positive values (axes {meta.spatial_axes}), got {spacing!r}"
            )
        changes["spacing"] = values
    if unit is not None:
        canonical = normalize_unit(unit)
        if canonical not in ANGSTROM_PER_UNIT:
            raise InvalidInputError(f"--unit: expected a length unit ({', '.join(ANGSTROM_PER_UNIT)}), got {unit!r}")
        changes["unit"] = canonical
    elif spacing is not None and meta.unit is None:
        raise InvalidInputError("--spacing: the file has no unit; give --unit too (e.g. --unit nm)")
    return meta.replace(**changes) if changes else meta


def cmd_normalize(args: argparse.Namespace) -> int:
    from fmscope.intensity import apply_profile, fit_profile
    from fmscope.io import write_image

    check_output_path(args.output, args.overwrite)
    image = read_spatial(args.input, args.dataset, args.channel)
    profile = fit_profile(
        image.data,
        low_percentile=args.low,
        high_percentile=args.high,
        gamma=args.gamma,
        clahe=args.clahe,
        denoise=args.denoise,
        denoise_sigma=args.sigma,
        spacing=image.meta.spacing,
        target_spacing=tuple(args.target_spacing) if args.target_spacing else None,
        output="uint8" if args.uint8 else "float32",
    )
    adapted = apply_profile(image.data, profile)
    spacing = profile.target_spacing or image.meta.spacing
    meta = image.meta.replace(shape=tuple(adapted.shape), dtype=str(adapted.dtype), spacing=spacing)
    written = write_image(args.output, adapted, meta, overwrite=args.overwrite)
    profile_path = written.with_name(written.name + ".profile.json")
    profile.save(profile_path)
    finish_output(written, "normalize", args, (args.input,))
    print(f"wrote {written} ({meta.dtype} {meta.shape}); profile {profile_path}")
    return 0
