"""Pretraining command: ``fmscope pretrain --config NAME|FILE [--data PATH] [--out DIR] [--resume] [key=value ...]``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fmscope.config import config_path
from fmscope.errors import InvalidInputError

SHIPPED = ("unet-cpu", "image-only", "unet", "swinunetr")


def shipped_config_path(name_or_path: str) -> Path:
    """A shipped config name (``unet-cpu``...) or a YAML path."""
    return config_path(name_or_path, SHIPPED)


def register(sub: Any) -> None:
    p = sub.add_parser(
        "pretrain",
        help="self-supervised image(+text) pretraining of a 3D backbone",
        description="Pretrain a backbone on unlabelled volumes (and their captions). Shipped configs: "
        + ", ".join(SHIPPED)
        + ". Any config key can be overridden as key=value, e.g. train.steps=500 optim.lr=1e-4.",
    )
    p.add_argument("--config", default="unet-cpu", help="shipped config name or YAML file (default unet-cpu)")
    p.add_argument(
        "--data",
        action="append",
        default=None,
        metavar="PATH",
        help="folder of volumes (+ captions.json) or CSV/JSON manifest; repeat --data to train on several together",
    )
    p.add_argument("--out", type=Path, default=Path("pretrain_out"), help="run folder (default pretrain_out)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    p.add_argument("--overwrite", action="store_true", help="start over in a non-empty --out")
    p.add_argument(
        "--allow-missing-captions",
        action="store_true",
        help="volumes without a caption (e.g. a folder with no captions.json) train the image terms only",
    )
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("embed", help="per-volume embeddings of a pretrained model, with a 2D map coloured by source")
    p.add_argument("model", type=Path, help="model folder written by fmscope pretrain (OUT/model)")
    p.add_argument("data", help="folder of volumes (+ captions.json), or a CSV/JSON manifest")
    p.add_argument("-o", "--output", type=Path, required=True, help="new folder for embeddings.npz/.csv and map.png")
    p.add_argument("--allow-missing-captions", action="store_true", help="volumes without a caption are allowed")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("retrieve", help="rank volumes by similarity to a sentence (image+text models)")
    p.add_argument("model", type=Path, help="model folder written by fmscope pretrain (OUT/model)")
    p.add_argument("data", help="folder of volumes, or a CSV/JSON manifest")
    p.add_argument("sentence", help="a caption-like sentence, e.g. 'tubular vessels in cleared mouse brain'")
    p.add_argument("--top", type=int, default=5, help="how many volumes to list (default 5)")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    p.set_defaults(func=cmd_retrieve)


def cmd_pretrain(args: argparse.Namespace) -> int:
    from fmscope.config import resolve_config
    from fmscope.pretrain.config import PretrainConfig
    from fmscope.pretrain.train import pretrain

    values: dict[str, Any] = {}
    if args.data is not None:
        values["data.path"] = args.data[0] if len(args.data) == 1 else tuple(args.data)
    if args.allow_missing_captions:
        values["data.allow_missing_captions"] = True
    config = resolve_config(PretrainConfig, shipped_config_path(args.config), args.overrides, values)
    result = pretrain(config, args.out, resume=args.resume, overwrite=args.overwrite, progress=True)
    terms = ", ".join(
        f"{k} {result.last[k]:.4f}" for k in ("loss", "distill", "recon", "align", "clip") if k in result.last
    )
    print(f"pretrained {result.steps_done} steps into {result.out_dir}: {terms}")
    if result.model_dir is not None:
        print(f"model: {result.model_dir}")
    return 0


def _embed(model: Path, data: str, allow_missing_captions: bool) -> Any:
    from fmscope.data import load_manifest
    from fmscope.inference import embed_manifest
    from fmscope.pretrain.export import load_pretrained

    method = load_pretrained(model)
    manifest = load_manifest(data, allow_missing_captions=allow_missing_captions)
    return method, embed_manifest(method, manifest, progress=True)


def cmd_embed(args: argparse.Namespace) -> int:
    from fmscope.inference import save_embeddings
    from fmscope.utils.atomic import check_output_path

    check_output_path(args.output, args.overwrite)
    _, table = _embed(args.model, args.data, args.allow_missing_captions)
    out = save_embeddings(table, args.output, overwrite=args.overwrite)
    text = "and caption " if table.text is not None else ""
    print(f"wrote {len(table.paths)} image {text}embeddings ({table.space}, dim {table.image.shape[1]}) to {out}")
    return 0


def cmd_retrieve(args: argparse.Namespace) -> int:
    import json

    from fmscope.inference import rank_by_text

    if args.top < 1:
        raise InvalidInputError(f"--top: expected a positive integer, got {args.top}")
    method, table = _embed(args.model, args.data, allow_missing_captions=True)  # ranking needs no captions
    ranking = rank_by_text(method, table, args.sentence)[: args.top]
    rows = [
        {"rank": r + 1, "score": score, "path": table.paths[i], "source": table.sources[i]}
        for r, (i, score) in enumerate(ranking)
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        print(f"{row['rank']:>3}  {row['score']:+.4f}  {Path(str(row['path'])).name}")
    return 0
