"""Mitochondria of the ISBI 2012 EM stack propagated from one annotated slice, with and without enhancement, vs Otsu.

    python benchmarks/interactive_propagation.py [--data ../shared/data] [--key-slices 5 15 25] [--objects 10]
        [--max-clicks 10] [--stop-iou 0.3] [--bridge 2] [--no-resegment] [--per-object]

Ground truth: the 3D connected components of the Cardona 2010 mitochondria mask (30 x 512 x 512). The ``--objects``
largest components cut by each key slice are annotated there by the simulated annotator (their box, then clicks until
IoU 0.9, at most ``--max-clicks`` interactions), then propagated through the stack
(:func:`fmscope.interactive.simulate.simulate_stack`).
Rows, Dice of each 3D object against its ground truth (mean and median over objects):

* Otsu (floor): the 3D component of the stack's Otsu mask (dark phase) under the object's interior point on the key
  slice;
* propagated: the prompts of the key slice carried slice by slice (the rf backend's ``transfer`` step), stopping when
  consecutive masks overlap by IoU < ``--stop-iou`` (0.3: at 50 nm per slice a mitochondrion's consecutive sections
  often overlap by less than 0.5);
* propagated + enhanced: propagated again bridging up to 2 failed slices, then outlier slices re-segmented from their
  neighbours, gaps filled, fragments < 20 px dropped;
* per-slice prompting (reference that costs more clicks): one click at the object's interior point on every slice.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from fmscope.interactive.enhance import EnhanceConfig
from fmscope.interactive.propagate import PropagationConfig, SliceEmbeddings, interior_point
from fmscope.interactive.rf_backend import RandomForestPrompter
from fmscope.interactive.simulate import simulate_stack, summarize_stack
from fmscope.io import read_image
from fmscope.metrics import dice
from fmscope.segment import ClassicalConfig, segment_classical

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--key-slices", type=int, nargs="+", default=[5, 15, 25])
    p.add_argument("--objects", type=int, default=10)
    p.add_argument("--max-clicks", type=int, default=10)
    p.add_argument("--stop-iou", type=float, default=0.3)
    p.add_argument("--bridge", type=int, default=2, help="enhancement: failed slices bridged (0 = none)")
    p.add_argument("--no-resegment", action="store_true", help="enhancement: keep outlier slices as they are")
    p.add_argument("--per-object", action="store_true", help="also print each object's Dice")
    args = p.parse_args()
    root = args.data / "isbi2012_em_membranes"
    volume = read_image(root / "raw.tif").numpy()
    objects, _ = ndi.label(read_image(root / "cardona2010_multiclass" / "mitochondria.tif").numpy() > 0)
    otsu_components, _ = ndi.label(segment_classical(volume, ClassicalConfig("otsu", dark_objects=True)).mask)
    t0 = time.perf_counter()
    results, otsu = [], []
    backend = RandomForestPrompter()
    embeddings = SliceEmbeddings(backend, volume)  # shared by the key slices
    enhancement = EnhanceConfig(min_area=20, bridge=args.bridge, resegment=not args.no_resegment)
    for key in args.key_slices:
        found = simulate_stack(
            backend, volume, objects, key, target_iou=0.9, max_clicks=args.max_clicks, max_objects=args.objects,
            box=True, propagation=PropagationConfig(stop_iou=args.stop_iou), enhancement=enhancement,
            embeddings=embeddings,
        )  # fmt: skip
        for r in found:
            y, x = (round(v) for v in interior_point(objects[key] == r.object_id))
            component = otsu_components[key, y, x]
            otsu.append(dice(otsu_components == component, objects == r.object_id) if component else 0.0)
        results += found
    seconds = time.perf_counter() - t0
    s = summarize_stack(results)
    n = len(results)
    print(
        f"ISBI mitochondria, {n} annotated objects of slices {args.key_slices}: key slice annotated with "
        f"{s['key_slice_clicks']:.1f} clicks (IoU {s['key_slice_iou']:.3f}); {seconds / 60:.1f} min\n"
    )
    print("| method | clicks per object | Dice mean | Dice median |\n|---|---|---|---|")
    print(f"| Otsu, 3D component under the interior point | 1 | {np.mean(otsu):.3f} | {np.median(otsu):.3f} |")
    rows = [
        ("propagated", "propagated", s["key_slice_clicks"]),
        ("propagated + enhanced", "enhanced", s["key_slice_clicks"]),
    ]
    for label, key, clicks in rows:
        print(f"| rf, {label} | {clicks:.1f} | {s[f'stack_dice_{key}']:.3f} | {s[f'median_stack_dice_{key}']:.3f} |")
    if args.per_object:
        for r, o in zip(results, otsu, strict=True):
            print(f"object {r.object_id}: Otsu {o:.2f}, propagated {r.dice_propagated:.2f}, enhanced "
                  f"{r.dice_enhanced:.2f}, per slice {r.dice_per_slice:.2f}")  # fmt: skip
    per_slice = [r.dice_per_slice for r in results]
    print(
        f"| rf, per-slice prompting | {s['per_slice_clicks']:.1f} | {np.mean(per_slice):.3f} | "
        f"{np.median(per_slice):.3f} |"
    )


if __name__ == "__main__":
    main()
