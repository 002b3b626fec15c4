"""Simulated clicks with the weight-free rf backend on real 2D instances, beside a one-click Otsu baseline, and with
``--model-dir`` (a model folder or a shipped name such as ``lsm-unet-cpu``) the fm backend on the same clicks protocol.

    python benchmarks/interactive_clicks.py [--data ../shared/data] [--dsb-images 2] [--tio2-images 1]
        [--objects 15] [--max-clicks 10] [--forest random|extra] [--trees N] [--samples N] [--model-dir NAME]

Per image, the largest ``--objects`` ground-truth objects are clicked one at a time by
:func:`fmscope.interactive.simulate.simulate_object` (first click at the object's interior point, then at the
largest error, target IoU 0.9). Baseline, same first click: the Otsu connected component under it (no training).
``--forest/--trees/--samples`` set the backend's forest (default: the backend's own settings); the table gives the
median seconds per click beside the mean.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from fmscope.interactive.rf_backend import RandomForestPrompter
from fmscope.interactive.simulate import next_click, simulate_object, summarize
from fmscope.io import read_image
from fmscope.metrics import iou
from fmscope.segment import ClassicalConfig, segment_classical

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _pairs(data: Path, n_dsb: int, n_tio2: int) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    root = data / "dsb2018_bbbc038_nuclei_subset"
    images = sorted((root / "images").glob("*.png"))[:n_dsb]
    dsb = [(read_image(f).numpy()[0], read_image(root / "labels" / f"{f.stem}.tif").numpy()) for f in images]
    tio2 = []
    for f in sorted((data / "tio2_sem_particles_bam/images_sem").glob("*.tif"))[:n_tio2]:
        mask = read_image(data / "tio2_sem_particles_bam/masks_manual_4connected" / f"{f.stem}_m.tif").numpy()[:704]
        tio2.append((read_image(f).numpy()[:704], ndi.label(mask > 0)[0]))  # rows 704+: the SEM info bar
    return {"DSB nuclei": dsb, "TiO2 particles": tio2}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--dsb-images", type=int, default=2)
    p.add_argument("--tio2-images", type=int, default=1)
    p.add_argument("--objects", type=int, default=15)
    p.add_argument("--max-clicks", type=int, default=10)
    p.add_argument("--forest", choices=("random", "extra"), default=None)
    p.add_argument("--trees", type=int, default=None)
    p.add_argument("--samples", type=int, default=None, help="labelled pixels sampled per class")
    p.add_argument("--model-dir", default=None, help="also run the fm backend on this model (folder or shipped name)")
    args = p.parse_args()
    prompter = RandomForestPrompter()
    changes = {k: v for k, v in (("forest", args.forest), ("n_estimators", args.trees),
                                 ("max_samples_per_class", args.samples)) if v is not None}  # fmt: skip
    prompter = RandomForestPrompter(replace(prompter.config, **changes)) if changes else prompter
    cfg = prompter.config
    print(f"forest {cfg.forest}, {cfg.n_estimators} trees, {cfg.max_samples_per_class} pixels per class\n")
    backends = {"rf": prompter}
    if args.model_dir:
        from fmscope.interactive.fm_backend import FoundationPrompter

        backends["fm"] = FoundationPrompter(args.model_dir, config=cfg)  # the same forest on the model's features too
    print("| data | backend | objects | Otsu component, 1 click | IoU after 1 / 3 / 5 | median after 5 "
          "| mean clicks to 85 / 90 | median clicks to 90 | s per click (mean / median) |\n"
          "|---|---|---|---|---|---|---|---|---|")  # fmt: skip
    for name, pairs in _pairs(args.data, args.dsb_images, args.tio2_images).items():
        for label, backend in backends.items():
            _run(name, label, backend, pairs, args.objects, args.max_clicks)


def _run(name: str, label: str, prompter: RandomForestPrompter, pairs: list[tuple[np.ndarray, np.ndarray]],
         n_objects: int, max_clicks: int) -> None:  # fmt: skip
    traces, otsu, seconds = [], [], []
    for image, objects in pairs:
        embedding = prompter.embed(image)
        components = ndi.label(segment_classical(image, ClassicalConfig("otsu")).mask)[0]
        ids, sizes = np.unique(objects[objects > 0], return_counts=True)
        for k in ids[np.argsort(-sizes)][:n_objects]:
            truth = objects == k
            (y, x), _ = next_click(np.zeros_like(truth), truth)  # type: ignore[misc]
            region = components[int(y), int(x)]
            otsu.append(iou(components == region, truth) if region else 0.0)
            t0 = time.perf_counter()
            trace = simulate_object(prompter, embedding, truth, object_id=int(k), max_clicks=max_clicks)
            traces.append(trace)
            seconds += [(time.perf_counter() - t0) / len(trace.ious)] * len(trace.ious)
    s = summarize(traces, max_clicks=max_clicks)
    print(f"| {name} | {label} | {len(traces)} | {np.mean(otsu):.3f} | {s['iou_after_1']:.3f} / "
          f"{s['iou_after_3']:.3f} / {s['iou_after_5']:.3f} | {s['median_iou_after_5']:.3f} | "
          f"{s['mean_clicks_to_85']:.1f} / {s['mean_clicks_to_90']:.1f} | {s['median_clicks_to_90']:.1f} | "
          f"{np.mean(seconds):.3f} / {np.median(seconds):.3f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
