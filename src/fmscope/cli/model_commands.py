"""Model commands: ``fmscope models [--json]`` (the pretrained backbones shipped inside the package, usable by name
offline, then the known SAM/SAM2 checkpoints and whether they are in the cache) and ``fmscope export bioimageio
MODEL_DIR -o PACKAGE.zip`` (a fine-tuned model as a bioimage.io package).

fmscope never downloads weights; for SAM/SAM2 this command says which file to fetch from where and where to put it.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fmscope.interactive.checkpoints import cache_dir, checkpoint_rows

if TYPE_CHECKING:
    from fmscope.models.shipped import ShippedModel


def _columns(header: tuple[str, ...], cells: list[tuple[Any, ...]]) -> list[str]:
    widths = [max(len(str(c[i])) for c in (header, *cells)) for i in range(len(header))]
    lines = ["  ".join(str(c[i]).ljust(widths[i]) for i in range(len(header))).rstrip() for c in (header, *cells)]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def format_shipped(models: list[ShippedModel]) -> str:
    """The shipped backbones as a text table (name, architecture, size, the card's summary line)."""
    if not models:
        return "shipped pretrained backbones: none in this installation"
    cells = [(m.name, m.architecture, f"{m.size_mb:.1f}", m.summary) for m in models]
    lines = ["shipped pretrained backbones (use the name as --init or --model-dir; card: MODEL_CARD.md in the folder):"]
    lines += _columns(("name", "architecture", "size MB", "summary"), cells)
    return "\n".join(lines)


def format_table(rows: list[dict[str, Any]], folder: Path) -> str:
    """The rows as a text table, followed by the cache folder and the download URLs."""
    header = ("name", "family", "file", "size MB", "sha256", "present")
    cells = [
        (
            r["name"],
            r["family"],
            r["file_name"],
            "unknown" if r["size_mb"] is None else f"{r['size_mb']:.1f}",
            r["sha256"] or "unknown",
            r["present"],
        )
        for r in rows
    ]
    lines = _columns(header, cells)
    lines += [
        "",
        f"cache folder: {folder} (set FMSCOPE_CACHE to change it; put the files there under the names above)",
        "fmscope never downloads weights; fetch them by hand:",
    ]
    lines += [f"  {r['name']}: {r['url']}" for r in rows]
    return "\n".join(lines)


def register(sub: Any) -> None:
    p = sub.add_parser(
        "models",
        help="list the shipped pretrained backbones and the known SAM/SAM2 checkpoints (cached or where to get them)",
        description="List the pretrained backbones shipped inside fmscope (usable by name: --init NAME, --model-dir "
        "NAME), then the SAM (vit_b/l/h) and SAM 2.1 (hiera tiny/small/base_plus/large) checkpoints fmscope "
        "knows: file name, size, SHA-256, whether the file is in the cache folder ($FMSCOPE_CACHE, default "
        "~/.cache/fmscope) and the official URL to fetch it from by hand. Nothing is downloaded.",
    )
    p.add_argument("--json", action="store_true", help="print the same information as JSON")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("export", help="export a fine-tuned model to another ecosystem (bioimage.io)")
    formats = p.add_subparsers(dest="format", required=True, metavar="FORMAT")
    e = formats.add_parser(
        "bioimageio",
        help="a bioimage.io model package (ilastik, deepImageJ, QuPath, Fiji, napari), checked by test_model",
    )
    e.add_argument("model", type=Path, help="a fine-tuned segment or deblur model folder (fmscope finetune: OUT/model)")
    e.add_argument("-o", "--output", type=Path, required=True, help="the package, PACKAGE.zip")
    e.add_argument("--sample", type=Path, default=None,
                   help="an image: its centred crop is the test input and cover (default: a phantom)")  # fmt: skip
    e.add_argument("--name", default=None, help="the model's name in the package")
    e.add_argument("--description", default=None, help="one or two sentences: what it segments or restores, on what")
    e.add_argument("--author", action="append", default=None, help="an author (repeat for several)")
    e.add_argument("--license", default="MIT", help="SPDX licence of the weights (default MIT)")
    e.add_argument("--no-torchscript", action="store_true", help="pytorch_state_dict weights only")
    e.add_argument("--overwrite", action="store_true", help="replace an existing package")
    e.set_defaults(func=cmd_export)


def cmd_models(args: argparse.Namespace) -> int:
    from fmscope.models.shipped import shipped_models

    folder = cache_dir()
    rows = checkpoint_rows(folder)
    shipped = shipped_models()
    if args.json:
        listed = [{**asdict(m), "folder": str(m.folder)} for m in shipped]
        print(json.dumps({"shipped": listed, "cache_dir": str(folder), "models": rows}, indent=1))
    else:
        print(format_shipped(shipped) + "\n\n" + format_table(rows, folder))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from fmscope.io import read_spatial
    from fmscope.tasks.bioimageio_export import export_bioimageio

    sample = read_spatial(args.sample).numpy() if args.sample is not None else None
    done = export_bioimageio(args.model, args.output, sample=sample, name=args.name, description=args.description,
                             authors=tuple(args.author or ("fmscope user",)), license=args.license,
                             torchscript=not args.no_torchscript, overwrite=args.overwrite)  # fmt: skip
    passed = sum(status == "passed" for _, status in done.checks)
    print(f"wrote {done.package} ({', '.join(done.weight_formats)}; {len(done.files)} files: {', '.join(done.files)})")
    print(f"bioimageio.core test_model: {passed} of {len(done.checks)} checks passed in {done.seconds:.1f} s")
    return 0
