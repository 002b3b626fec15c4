"""Prompted segmentation (``fmscope segment --method rf|fm|sam|sam2``) and the simulated annotator (``simulate``)."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fmscope.cli.common import add_dataset_option, add_input, finish_output, print_json, print_table, read_spatial
from fmscope.errors import InvalidInputError
from fmscope.interactive.backends import BACKENDS, backends_help

if TYPE_CHECKING:
    import numpy as np

    from fmscope.interactive.protocol import PromptableModel

logger = logging.getLogger(__name__)


def add_prompted_options(p: argparse.ArgumentParser) -> None:
    """Options of ``segment`` for the promptable methods (the backends of :data:`BACKENDS`)."""
    g = p.add_argument_group(f"promptable methods ({', '.join(BACKENDS)})")
    g.add_argument("--prompts", type=Path, default=None, help="prompts JSON: points (z, y, x), boxes, text per object")
    g.add_argument("--text", default=None, help="a phrase to find (needs --grounding)")
    g.add_argument("--auto", action="store_true", help="sam: segment everything (stacks: per slice, then linked)")
    g.add_argument("--text-slice", type=int, default=None, help="slice searched for --text (default: the middle)")
    g.add_argument("--grounding", type=Path, default=None, help="local Grounding DINO folder (transformers)")
    g.add_argument("--box-threshold", type=float, default=0.35, help="--text: detection score threshold (0.35)")
    add_backend_options(g)
    g.add_argument("--propagate", action="store_true", help="carry the prompts through the stack from their slices")
    g.add_argument("--video", action="store_true", help="sam2 --propagate: use SAM2's video predictor (memory)")
    g.add_argument("--cache", type=Path, default=None, help="embedding cache folder (zarr), reused by later runs")
    g.add_argument("--stop-iou", type=float, default=0.5, help="stop when consecutive slices overlap less (0.5)")
    g.add_argument("--enhance", action="store_true", help="re-segment outlier slices, fill gaps, drop small bits")
    g.add_argument("--min-slices", type=int, default=1, help="with --enhance: drop objects on fewer slices")
    g.add_argument("--semantic", action="store_true", help="rf/fm: one phase, touching regions are not split")
    g.add_argument("--morphometry", type=Path, default=None, help="also write per-object measurements (CSV)")


def add_backend_options(g: Any) -> None:
    g.add_argument("--checkpoint", type=Path, default=None, help="sam/sam2: checkpoint file (default: cache folder)")
    g.add_argument("--model", default=None, help="sam: vit_b|vit_l|vit_h; sam2: sam2.1_hiera_tiny|... (fmscope models)")
    g.add_argument(
        "--model-dir", default=None, help="fm: an fmscope model folder or a shipped model (e.g. lsm-unet-cpu)"
    )
    g.add_argument("--device", default="cpu", help="torch device for sam, sam2, fm (default cpu)")


def _backend(args: argparse.Namespace) -> PromptableModel:
    from fmscope.interactive.backends import make_backend

    return make_backend(
        args.method, checkpoint=args.checkpoint, model=args.model, model_dir=args.model_dir, device=args.device,
        semantic=getattr(args, "semantic", False),
    )  # fmt: skip


def cmd_segment_prompted(args: argparse.Namespace) -> int:
    from fmscope.interactive.enhance import EnhanceConfig
    from fmscope.interactive.grounding import GroundingDetector
    from fmscope.interactive.morphometry import measure_image, write_morphometry
    from fmscope.interactive.pipeline import StackConfig, segment_automatic, segment_prompted
    from fmscope.interactive.prompts import load_prompts
    from fmscope.interactive.propagate import PropagationConfig
    from fmscope.io import write_image
    from fmscope.segment import narrow_labels
    from fmscope.utils.atomic import check_output_path

    check_output_path(args.output, args.overwrite)
    if args.prompts is None and args.text is None and not args.auto:
        raise InvalidInputError(f"--method {args.method}: needs --prompts FILE, --text PHRASE or --auto")
    if args.auto and (args.prompts is not None or args.text is not None):
        raise InvalidInputError("--auto: segments everything; give it without --prompts and --text")
    image = read_spatial(args.input, args.dataset, args.channel)
    data = image.numpy()
    prompts = load_prompts(args.prompts, data.shape) if args.prompts is not None else []
    backend = _backend(args)
    if args.auto:
        result = segment_automatic(backend, data, min_slices=args.min_slices, progress=True)
        what = f"{args.method} automatic"
    else:
        enhancement = EnhanceConfig(min_slices=args.min_slices) if args.enhance else None
        stack = StackConfig(args.propagate, args.video, PropagationConfig(stop_iou=args.stop_iou), enhancement)
        detector = GroundingDetector(args.grounding, box_threshold=args.box_threshold) if args.grounding else None
        result = segment_prompted(
            backend, data, prompts, stack=stack, cache_dir=args.cache, detector=detector,
            phrases=[args.text] if args.text else [], text_slice=args.text_slice, progress=True,
        )  # fmt: skip
        what = f"{args.method}, {result.found} of {len(result.prompts)} object(s)"
        if result.reused:
            logger.info("%d slice embedding(s) reused from %s", result.reused, args.cache)
    extra = "".join(f", {v} {k}" for k, v in result.counts.items() if v)
    out = narrow_labels(result.labels)
    meta = image.meta.replace(dtype=str(out.dtype), format="array", notes=())
    written = write_image(args.output, out, meta, overwrite=args.overwrite, labels=True)
    finish_output(written, "segment", args, (args.input,))
    if args.morphometry is not None:
        known = image.meta.unit is not None and len(image.meta.spacing) == data.ndim  # else sizes in pixels only
        measured = measure_image(result.labels, data, spacing=image.meta.spacing if known else None)
        write_morphometry(measured, args.morphometry, is_2d=data.ndim == 2, overwrite=args.overwrite)
    print(f"wrote {written}: {what}, {result.seconds:.1f} s{extra}")
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser(
        "simulate", help="simulated annotator: clicks to 85/90 %% IoU, IoU after 1/3/5 clicks, stack Dice"
    )
    add_input(p, "image", "image (2D) or stack")
    add_input(p, "labels", "ground-truth labels: instances, or a binary mask (split into connected components)")
    p.add_argument("--method", choices=BACKENDS, default="rf", help=f"backend (default rf): {backends_help()}")
    add_backend_options(p)
    add_dataset_option(p)
    p.add_argument("--channel", type=int, default=None, help="channel of a multi-channel image")
    p.add_argument("--box", action="store_true", help="start each object with its bounding box, then click")
    p.add_argument("--target-iou", type=float, default=0.9, help="stop clicking an object at this IoU (0.9)")
    p.add_argument("--max-clicks", type=int, default=20, help="clicks per object at most (20)")
    p.add_argument("--objects", type=int, default=None, help="only the N largest objects (default all)")
    p.add_argument("--propagate-from", type=int, default=None, metavar="SLICE", help="stacks: annotate this slice")
    p.add_argument("--enhance", action="store_true", help="with --propagate-from: also the enhancement steps")
    g = p.add_argument_group("phases (--semantic)")
    g.add_argument("--semantic", action="store_true", help="annotate a phase with strokes or clicks (rf, fm) beside "
                   "Otsu and multi-Otsu")  # fmt: skip
    g.add_argument("--phase-values", type=int, nargs="+", default=None, help="label values of the phase (default > 0)")
    g.add_argument("--slice", type=int, default=None, help="the slice of a stack to annotate (default the middle)")
    g.add_argument("--interactions", type=int, default=5, help="strokes or clicks (default 5)")
    g.add_argument("--mode", choices=("strokes", "clicks"), default="strokes", help="how the phase is marked")
    g.add_argument("--width", type=float, default=3.0, help="stroke width in pixels (default 3)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_simulate)


def _simulate_phase(args: argparse.Namespace, image: np.ndarray, labels: np.ndarray) -> int:
    import numpy as np

    from fmscope.intensity import fit_profile
    from fmscope.interactive.simulate_phases import simulate_phase_image

    if image.ndim == 3:
        z = image.shape[0] // 2 if args.slice is None else args.slice
        if not 0 <= z < image.shape[0]:
            raise InvalidInputError(f"--slice: expected a slice in 0..{image.shape[0] - 1}, got {z}")
        profile = fit_profile(image)
        image, labels = image[z], labels[z]
    else:
        profile = fit_profile(image)
    truth = labels > 0 if args.phase_values is None else np.isin(labels, args.phase_values)
    t0 = time.perf_counter()
    result = {"method": args.method, "semantic": True, **simulate_phase_image(
        _backend(args), image, truth, profile=profile, mode=args.mode, interactions=args.interactions, width=args.width,
    )}  # fmt: skip
    result["seconds"] = round(time.perf_counter() - t0, 2)
    if args.json:
        print_json(result)
    else:
        print_table([(k, f"{v:.3f}" if isinstance(v, float) else str(v)) for k, v in result.items()])
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from scipy import ndimage as ndi

    from fmscope.intensity import fit_profile
    from fmscope.interactive.enhance import EnhanceConfig
    from fmscope.interactive.simulate import simulate_image, simulate_stack, summarize, summarize_stack

    image = read_spatial(args.image, args.dataset, args.channel).numpy()
    labels = read_spatial(args.labels, args.dataset).numpy()
    if labels.shape != image.shape:
        raise InvalidInputError(f"{args.labels}: shape {labels.shape} differs from the image's {image.shape}")
    if args.semantic:
        return _simulate_phase(args, image, labels)
    if labels.max() <= 1:  # a binary mask: objects are its connected components
        labels = ndi.label(labels > 0)[0]
    backend = _backend(args)
    profile = fit_profile(image)
    t0 = time.perf_counter()
    if image.ndim == 3:
        if args.propagate_from is None:
            raise InvalidInputError(
                f"{args.image}: a stack; the {args.method} backend is 2D: give --propagate-from SLICE to annotate one "
                "slice and propagate"
            )
        enhancement = EnhanceConfig() if args.enhance else None
        results = simulate_stack(
            backend, image, labels, args.propagate_from, target_iou=args.target_iou, max_clicks=args.max_clicks,
            max_objects=args.objects, box=args.box, enhancement=enhancement, profile=profile,
        )  # fmt: skip
        summary = {**summarize([r.key_trace for r in results], max_clicks=args.max_clicks), **summarize_stack(results)}
        objects = [r.report() for r in results]
    else:
        if args.propagate_from is not None:
            raise InvalidInputError(f"--propagate-from: {args.image} is a 2D image, not a stack")
        traces = simulate_image(backend, image, labels, profile=profile, target_iou=args.target_iou,
                                max_clicks=args.max_clicks, max_objects=args.objects, box=args.box)  # fmt: skip
        summary = summarize(traces, max_clicks=args.max_clicks)
        objects = [t.report() for t in traces]
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    result: dict[str, Any] = {"method": args.method, "box": args.box, "target_iou": args.target_iou,
                              "max_clicks": args.max_clicks}  # fmt: skip
    result.update(summary)
    if args.json:
        print_json({**result, "per_object": objects})
        return 0
    print_table([(k, f"{v:.3f}" if isinstance(v, float) else str(v)) for k, v in result.items()])
    worse = [o for o in objects if o["iou_drops"]]
    if worse:  # more clicks made these masks worse: say so beside the means
        print(f"\n{len(worse)} of {len(objects)} object(s) lost IoU at some click (id: best -> final, largest fall):")
        print_table(
            [(str(o["id"]), f"{o['best_iou']:.3f} -> {o['final_iou']:.3f}, {o['max_drop']:.3f}") for o in worse]
        )
    return 0
