"""Segmentation commands: ``segment``, ``evaluate``, ``quickstart``."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from fmscope.cli.common import (
    add_blockwise_options,
    add_dataset_option,
    add_input,
    add_overlay_option,
    add_overwrite,
    blockwise_config,
    blockwise_mask,
    finish_output,
    print_json,
    print_table,
    read_spatial,
    report_blockwise,
    wants_blockwise,
    write_overlay,
)
from fmscope.cli.interactive_commands import add_prompted_options, cmd_segment_prompted
from fmscope.errors import InvalidInputError
from fmscope.interactive.backends import BACKENDS, backends_help
from fmscope.utils.atomic import check_output_path

logger = logging.getLogger(__name__)

CLASSICAL_METHODS = ("otsu", "li", "triangle", "multiotsu", "local", "watershed")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "segment",
        help=f"segment an image or volume: classical thresholds and watershed, or prompted ({', '.join(BACKENDS)})",
    )
    add_input(p)
    p.add_argument("-o", "--output", type=Path, required=True, help="output label image (format from extension)")
    p.add_argument(
        "--method",
        choices=(*CLASSICAL_METHODS, *BACKENDS),
        default="otsu",
        help=f"segmentation method (default otsu); promptable ones: {backends_help()}",
    )
    add_dataset_option(p)
    p.add_argument("--channel", type=int, default=None, help="channel to use for a multi-channel image")
    p.add_argument("--per-slice", action="store_true", help="2D per Z slice instead of 3D")
    p.add_argument("--dark", action="store_true", help="segment dark structures (e.g. EM membranes)")
    p.add_argument("--smooth", type=float, default=0.0, help="Gaussian pre-smoothing sigma in voxels")
    p.add_argument("--block-size", type=int, default=51, help="local threshold: neighbourhood size (odd)")
    p.add_argument("--offset", type=float, default=0.0, help="local threshold: offset subtracted from the local mean")
    p.add_argument("--min-size", type=int, default=0, help="remove objects smaller than this many voxels")
    p.add_argument("--fill-holes", action="store_true", help="fill holes inside objects")
    p.add_argument("--min-distance", type=int, default=3, help="watershed: minimum distance between seeds")
    p.add_argument("--classes", type=int, default=3, help="multiotsu: number of intensity phases (default 3)")
    p.add_argument("--phase", type=int, default=-1, help="multiotsu: phase to keep, 0 = darkest, -1 = brightest")
    p.add_argument("--instances", action="store_true", help="write instance labels (connected components)")
    add_prompted_options(p)
    g = p.add_argument_group("pixel classifier (--method rf trained on painted scribbles, as ilastik)")
    g.add_argument("--labels", type=Path, default=None,
                   help="scribbles: 0 = unpainted, 1..K = class; the output holds the painted values")  # fmt: skip
    g.add_argument("--forest", type=Path, default=None, help="apply a saved forest folder instead of training")
    g.add_argument("--save-forest", type=Path, default=None, help="save the trained forest folder (in memory)")
    add_overlay_option(p)
    add_overwrite(p)
    add_blockwise_options(p, "the smoothing and local-threshold radii, + 16 for watershed; rf: the features' radius")
    p.set_defaults(func=cmd_segment)

    p = sub.add_parser("evaluate", help="score a prediction against ground truth (Dice, IoU, ...; matched instances)")
    add_input(p, "pred", "predicted labels")
    add_input(p, "gt", "ground-truth labels")
    p.add_argument("--instances", action="store_true", help="also match objects by IoU (F1/AP at 0.5 and 0.75)")
    p.add_argument("--multiclass", action="store_true", help="score every class value separately (macro mean)")
    p.add_argument("--gt-foreground", type=float, nargs="+", default=None, help="GT values that are foreground")
    p.add_argument("--pred-foreground", type=float, nargs="+", default=None, help="prediction foreground values")
    p.add_argument("--roi", default=None, help="evaluate inside a region, numpy slice syntax, e.g. '0:704,:'")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "quickstart",
        help="phantoms -> classical baselines -> 3-shot fine-tuning from the shipped backbone -> prediction -> report",
    )
    p.add_argument("--out", type=Path, default=Path("quickstart_out"), help="report folder (default quickstart_out)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the phantoms")
    p.add_argument(
        "--pretrain-steps",
        type=int,
        default=None,
        help="pretrain on captioned phantoms for N steps and fine-tune from that model (default 0: fine-tune from "
        "the shipped lsm-unet-cpu backbone; with --budget tiny 2 steps of unet-tiny)",
    )
    p.add_argument("--no-finetune", action="store_true", help="skip the 3-shot fine-tuning and prediction part")
    # the names of fmscope.evaluation.quickstart.BUDGETS (not imported here: that module imports torch)
    p.add_argument(
        "--budget",
        choices=("full", "tiny"),
        default="full",
        help="full (default): the report the README shows; tiny: every stage on the smallest phantoms "
        "and model in a fraction of the time, a check that it works (its scores mean nothing)",
    )
    add_overwrite(p)
    p.set_defaults(func=cmd_quickstart)


def cmd_segment(args: argparse.Namespace) -> int:
    if args.overlay is not None:
        check_output_path(args.overlay, args.overwrite)
    scribbles = args.method == "rf" and (args.labels is not None or args.forest is not None)
    if scribbles and args.instances:  # said, not silently ignored
        raise InvalidInputError("--instances: --method rf writes the painted class of each voxel (1..K), not objects; "
                                "drop --instances")  # fmt: skip
    if scribbles:
        code = _segment_scribbles_blockwise(args) if wants_blockwise(args) else _segment_scribbles(args)
    elif args.labels is not None or args.forest is not None or args.save_forest is not None:
        raise InvalidInputError("--labels / --forest / --save-forest: for --method rf (the pixel classifier)")
    elif wants_blockwise(args):
        code = _segment_blockwise(args)
    else:
        code = cmd_segment_prompted(args) if args.method in BACKENDS else _segment_classical(args)
    if args.overlay is not None:
        write_overlay(args.overlay, args.input, args.output, dataset=args.dataset, channel=args.channel,
                      overwrite=args.overwrite, title=f"{Path(args.input).name}: {args.method}")  # fmt: skip
    return code


def _classical_config(args: argparse.Namespace) -> Any:
    from fmscope.segment import ClassicalConfig

    return ClassicalConfig(
        method=args.method,
        per_slice=args.per_slice,
        dark_objects=args.dark,
        smooth_sigma=args.smooth,
        block_size=args.block_size,
        offset=args.offset,
        min_size=args.min_size,
        fill_holes=args.fill_holes,
        min_distance=args.min_distance,
        classes=args.classes,
        phase=args.phase,
    )


def _segment_blockwise(args: argparse.Namespace) -> int:
    from fmscope.inference.segment_blockwise import segment_blockwise

    if args.method in BACKENDS or args.channel is not None or args.overlay is not None:
        raise InvalidInputError("blockwise segmentation (--workers, --scheduler, --block-shape ...): classical "
                                "methods on a single-channel volume, without --channel and --overlay")  # fmt: skip
    done = segment_blockwise(args.input, args.output, _classical_config(args), blockwise_config(args),
                             instances=args.instances, dataset=args.dataset, mask=blockwise_mask(args),
                             overwrite=args.overwrite, progress=True)  # fmt: skip
    thresholds = ", ".join(f"{t:g}" for t in done.thresholds)
    extra = (f", threshold {thresholds}" if thresholds else "") + (
        f", {done.objects} objects" if done.objects is not None else "")  # fmt: skip
    return report_blockwise(args.input, done.plan, done.result, done.output, extra)


def _segment_scribbles_blockwise(args: argparse.Namespace) -> int:
    from fmscope.inference.classify_blockwise import classify_blockwise

    if args.channel is not None or args.overlay is not None or args.save_forest is not None:
        raise InvalidInputError("blockwise rf: a single-channel volume without --channel and --overlay; the "
                                "forest it trains is kept as OUT.zarr.forest (not --save-forest)")  # fmt: skip
    done = classify_blockwise(args.input, args.output, scribbles=args.labels, forest=args.forest,
                              per_slice=args.per_slice, config=blockwise_config(args), dataset=args.dataset,
                              mask=blockwise_mask(args), overwrite=args.overwrite, progress=True)  # fmt: skip
    return report_blockwise(args.input, done.plan, done.result, done.output, f", forest {done.forest}")


def _segment_scribbles(args: argparse.Namespace) -> int:
    import numpy as np

    from fmscope.io import read_image, write_image
    from fmscope.segment.scribbles import ScribbleModel, segment_scribbles

    check_output_path(args.output, args.overwrite)
    if args.save_forest is not None:
        check_output_path(args.save_forest, args.overwrite)
    image = read_spatial(args.input, args.dataset, args.channel)
    scribbles = read_image(args.labels).numpy() if args.labels is not None else None
    model = ScribbleModel.load(args.forest) if args.forest is not None else None
    labels, model = segment_scribbles(image.numpy(), scribbles=scribbles, model=model, per_slice=args.per_slice)
    meta = image.meta.replace(dtype="uint8", format="array", notes=())
    written = write_image(args.output, labels, meta, overwrite=args.overwrite, labels=True)
    finish_output(written, "segment", args, (args.input,))
    if args.save_forest is not None:
        model.save(args.save_forest, overwrite=args.overwrite)
    values = ", ".join(f"{v}: {np.mean(labels == v):.4f}" for v in np.unique(labels))
    saved = f"; forest saved to {args.save_forest}" if args.save_forest is not None else ""
    print(f"wrote {written}: rf, fraction per class {values}{saved}")
    return 0


def _segment_classical(args: argparse.Namespace) -> int:
    import numpy as np

    from fmscope.io import write_image
    from fmscope.segment import narrow_labels, segment_classical

    check_output_path(args.output, args.overwrite)
    image = read_spatial(args.input, args.dataset, args.channel)
    config = _classical_config(args)
    result = segment_classical(image.numpy(), config, instances=args.instances)
    if result.labels is not None:
        out = narrow_labels(result.labels)
        what = f"{int(result.labels.max())} objects"
    else:
        out = result.mask.astype(np.uint8)
        what = f"foreground fraction {result.mask.mean():.4f}"
    meta = image.meta.replace(dtype=str(out.dtype), format="array", notes=())
    written = write_image(args.output, out, meta, overwrite=args.overwrite, labels=True)
    finish_output(written, "segment", args, (args.input,))
    thr = ", ".join(f"{t:g}" for t in result.thresholds[:5]) + (" ..." if len(result.thresholds) > 5 else "")
    print(f"wrote {written}: {args.method}, threshold(s) {thr}; {what}")
    return 0


def parse_roi(text: str, ndim: int) -> tuple[slice, ...]:
    """Parse numpy slice syntax such as ``'0:704,:'`` into slices (missing trailing axes are full)."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) > ndim:
        raise InvalidInputError(f"--roi: '{text}' has {len(parts)} axes, the image has {ndim}")
    slices = []
    for part in parts:
        try:
            bounds = [int(b) if b.strip() else None for b in part.split(":")]
        except ValueError:
            raise InvalidInputError(f"--roi: cannot parse '{part}' in '{text}' (expected start:stop)") from None
        if len(bounds) != 2:
            raise InvalidInputError(f"--roi: expected start:stop per axis, got '{part}' in '{text}'")
        slices.append(slice(bounds[0], bounds[1]))
    return tuple(slices)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from fmscope.evaluation import evaluate_segmentation

    pred = read_spatial(args.pred).numpy()
    gt = read_spatial(args.gt).numpy()
    if pred.shape != gt.shape:
        raise InvalidInputError(f"{args.pred} has shape {pred.shape} but {args.gt} has shape {gt.shape}")
    if args.roi:
        roi = parse_roi(args.roi, pred.ndim)
        pred, gt = pred[roi], gt[roi]
    result = evaluate_segmentation(
        pred,
        gt,
        instances=args.instances,
        multiclass=args.multiclass,
        pred_foreground=args.pred_foreground,
        gt_foreground=args.gt_foreground,
    )
    for text in result.warnings:
        logger.warning("%s", text)
    scores = result.to_dict()
    if args.json:
        print_json(scores)
        return 0
    rows = [
        (k, f"{v:.4f}" if isinstance(v, float) else str(v)) for k, v in scores.items() if not isinstance(v, dict | list)
    ]
    print_table(rows)
    return 0


def cmd_quickstart(args: argparse.Namespace) -> int:
    from fmscope.evaluation.quickstart import run_quickstart

    result = run_quickstart(
        args.out,
        seed=args.seed,
        overwrite=args.overwrite,
        budget=args.budget,
        pretrain_steps=args.pretrain_steps,
        finetune=not args.no_finetune,
        progress=True,
    )
    print(result.summary_markdown)
    print(f"\nreport: {result.report_path}")
    return 0
