"""Fine-tuning and prediction: ``fmscope finetune seg|cls|deblur ...``, ``fmscope predict MODEL_DIR INPUT -o OUT``."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from fmscope.cli.common import (
    add_blockwise_options,
    add_overlay_option,
    blockwise_config,
    blockwise_mask,
    report_blockwise,
    wants_blockwise,
)
from fmscope.config import config_path
from fmscope.errors import InvalidInputError
from fmscope.tasks.registry import get_task, short_names

logger = logging.getLogger(__name__)

SHIPPED = ("finetune-unet-cpu", "finetune-unet", "finetune-swinunetr")


def finetune_config_path(name_or_path: str) -> Path:
    """A shipped fine-tuning config name or a YAML path."""
    return config_path(name_or_path, SHIPPED)


def parse_mapping(text: str | None) -> Any:
    """``'2=1,other=0'`` -> LabelMapping({2: 1}, other=0); None stays None."""
    from fmscope.data.labelled import LabelMapping

    if text is None:
        return None
    values: dict[int, int] = {}
    other = None
    for part in text.split(","):
        key, sep, value = part.partition("=")
        try:
            if not sep:
                raise ValueError(part)
            if key.strip() == "other":
                other = int(value)
            else:
                values[int(key)] = int(value)
        except ValueError:
            raise InvalidInputError(f"--map-labels: expected 'RAW=CLASS,...[,other=CLASS]', got {text!r}") from None
    return LabelMapping(values, other)


def register(sub: Any) -> None:
    p = sub.add_parser(
        "finetune",
        help="few-shot fine-tuning for segmentation, classification or deblurring",
        description="Fine-tune a pretrained model folder (or a random one: --init scratch) on a few labelled images. "
        "Data: a folder of NAME.EXT + NAME_label.EXT (+ NAME_blurred.EXT for deblur), images/ + labels/ folders, or "
        "a CSV. Shipped configs: " + ", ".join(SHIPPED) + ". Override any key as key=value, e.g. epochs=50.",
    )
    names = short_names()
    p.add_argument("task", choices=sorted(names), help=", ".join(f"{k} ({v})" for k, v in names.items()))
    p.add_argument(
        "--config", default="finetune-unet-cpu", help="shipped config name or YAML (default finetune-unet-cpu)"
    )
    p.add_argument(
        "--init",
        default=None,
        help="a shipped pretrained model (e.g. lsm-unet-cpu; `fmscope models` lists them), a model folder (e.g. "
        "from fmscope pretrain: OUT/model) or 'scratch' (default; with --from-session the shipped lsm-unet-cpu)",
    )
    p.add_argument("--train", default=None, help="labelled training data (folder or CSV)")
    p.add_argument("--val", default=None, help="labelled validation data (folder or CSV)")
    p.add_argument(
        "--slices", nargs=2, type=Path, default=None, metavar=("STACK", "LABELS"),
        help="seg: a (Z, Y, X) stack and its label stack; its slices are the 2D training and validation images",
    )  # fmt: skip
    p.add_argument("--train-slices", default=None, help="with --slices: training slices, e.g. 0-19 or 0,4,8")
    p.add_argument("--val-slices", default=None, help="with --slices: validation slices, e.g. 20-24")
    p.add_argument("--include", default=None, help="keep the images whose path matches this regex, e.g. 'mito'")
    p.add_argument(
        "--from-session", type=Path, default=None, metavar="SESSION_DIR",
        help="seg: train on the slices accepted in an interactive session (web app or API) of --image",
    )  # fmt: skip
    p.add_argument("--image", type=Path, default=None, help="with --from-session: the stack the session was made on")
    p.add_argument("--out", type=Path, default=None, help="new run folder (missing parent folders are created)")
    p.add_argument(
        "--show-config", action="store_true", help="print the resolved config (defaults <- --config <- key=value), exit"
    )
    p.add_argument("--class-pattern", default=None, help="cls: regex with a (?P<class>...) group on file names")
    p.add_argument("--map-labels", default=None, help="seg: raw label values to classes, e.g. '2=1,other=0'")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    p.add_argument(
        "--resume", action="store_true", help="continue a stopped or killed run in --out from its last checkpoint"
    )
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("predict", help="apply a fine-tuned model to an image or volume of any size")
    p.add_argument("model", type=Path,
                   help="task model folder (fmscope finetune: OUT/model), or a bioimage.io package (.zip)")  # fmt: skip
    p.add_argument("input", help="image or volume in any readable format")
    p.add_argument(
        "-o", "--output", type=Path, required=True, help="output file (.tif, .ome.zarr, .nii.gz...; .json for cls)"
    )
    p.add_argument("--probabilities", action="store_true", help="seg: write per-class probabilities, not labels")
    p.add_argument(
        "--instances", choices=("components", "watershed"), default=None, help="seg: write instance labels instead"
    )
    p.add_argument("--overlap", type=float, default=0.5, help="sliding-window overlap in [0, 1) (default 0.5)")
    p.add_argument("--flips", action="store_true", help="average over flips (test-time augmentation)")
    p.add_argument("--batch-size", type=int, default=2, help="windows per forward pass (default 2)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    add_overlay_option(p)
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    add_blockwise_options(p, "half the model's window")
    p.set_defaults(func=cmd_predict)


def cmd_finetune(args: argparse.Namespace) -> int:
    from fmscope.config import resolve_config
    from fmscope.tasks.config import FinetuneConfig
    from fmscope.tasks.finetune import finetune
    from fmscope.tasks.training_data import load_train_val

    task = get_task(short_names()[args.task])
    config = resolve_config(FinetuneConfig, finetune_config_path(args.config), args.overrides, {"task": task.name})
    if args.show_config:
        import yaml

        from fmscope.config import to_dict

        print(yaml.safe_dump(to_dict(config), sort_keys=False), end="")
        return 0
    if args.out is None:
        raise InvalidInputError("--out: required (unless --show-config)")
    if args.from_session is not None:
        from fmscope.interactive.session_training import finetune_from_session

        others = ("train", "val", "slices", "train_slices", "val_slices", "include", "map_labels", "class_pattern")
        given = [f"--{o.replace('_', '-')}" for o in others if getattr(args, o)]
        if args.image is None or given:
            raise InvalidInputError(
                "--from-session: needs --image (the session's stack) and takes its data from the session alone; "
                f"drop {', '.join(given) or 'nothing'}"
            )
        result = finetune_from_session(
            config, args.from_session, args.image, args.out, **({"init": args.init} if args.init else {}),
            overwrite=args.overwrite, resume=args.resume, progress=True,
        )  # fmt: skip
    else:
        if args.image is not None:
            raise InvalidInputError("--image: only with --from-session (the stack the session was made on)")
        train, val = load_train_val(
            task.layout, args.train, args.val, slices=args.slices, train_slices=args.train_slices,
            val_slices=args.val_slices, include=args.include, class_pattern=args.class_pattern,
        )  # fmt: skip
        result = finetune(
            config, train, val, args.out, init=args.init or "scratch", mapping=parse_mapping(args.map_labels),
            overwrite=args.overwrite, resume=args.resume, progress=True,
        )  # fmt: skip
    print(
        f"fine-tuned {task.name} for {result.epochs_run} epochs: best validation {task.score_name} "
        f"{result.best_score:.4f} "
        f"(epoch {result.best_epoch})"
    )
    if result.init_report:
        print(f"init: {result.init_report}")
    print(f"model: {result.model_dir}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from fmscope.cli.common import finish_output, write_overlay
    from fmscope.tasks.predict import predict_file
    from fmscope.utils.atomic import check_output_path

    if args.overlay is not None:
        check_output_path(args.overlay, args.overwrite)
    if wants_blockwise(args):
        return _predict_blockwise(args)

    result = predict_file(
        args.model, args.input, args.output, probabilities=args.probabilities, instances=args.instances,
        overlap=args.overlap,
        flips=args.flips, batch_size=args.batch_size, device=args.device, overwrite=args.overwrite, progress=True,
    )  # fmt: skip
    finish_output(result.output, "predict", args, (Path(args.input), args.model))
    what = f"class {result.class_name}" if result.class_name else f"{result.task} output"
    print(f"{args.input} {result.shape}: {what} -> {result.output}")
    labelled = result.task != "bioimage.io" and get_task(result.task).label_output  # a package: its raw output
    if args.overlay is not None and labelled and not args.probabilities:
        names = None if args.instances else dict(enumerate(result.classes[1:], 1))  # instances: objects, not classes
        write_overlay(args.overlay, Path(args.input), result.output, overwrite=args.overwrite, class_names=names,
                      title=f"{Path(args.input).name}: {args.model.parent.name or args.model.name}")  # fmt: skip
    elif args.overlay is not None:
        logger.warning("--overlay: drawn for label outputs only (this is a %s output); none written", result.task)
    return 0


def _predict_blockwise(args: argparse.Namespace) -> int:
    from fmscope.tasks.predict_blockwise import predict_blockwise

    given = [f for f in ("probabilities", "flips", "overlay") if getattr(args, f)]
    if given or args.device != "cpu":
        raise InvalidInputError(f"blockwise prediction (--workers, --scheduler, --block-shape ...): drop "
                                f"{', '.join('--' + g for g in given) or '--device'} (labels, --instances "
                                "or the restored image, on CPU workers)")  # fmt: skip
    done = predict_blockwise(args.model, args.input, args.output, blockwise_config(args), mask=blockwise_mask(args),
                             overlap=args.overlap, batch_size=args.batch_size, instances=args.instances,
                             overwrite=args.overwrite, progress=True)  # fmt: skip
    extra = f", {done.objects} objects" if done.objects is not None else ""
    return report_blockwise(args.input, done.plan, done.result, done.output, extra)
