"""Few-shot fine-tuning on the shared light-sheet patches: pretrained vs scratch vs Otsu, deblurring, classification.

    python benchmarks/finetune_lsm.py PRETRAINED_MODEL_DIR [--data ../shared/data/lsm_selma3d_wu_patches/finetune]
        [--epochs 30] [--tasks seg deblur cls] [--json out.json] [--out runs/finetune_lsm]

* Segmentation, per structure (plaque, nucleus, vessels): train on the one training patch of that structure,
  validate (early stopping) and report on the one validation patch; Dice of the best epoch for the pretrained encoder
  and for the same network from scratch (same seed, same code path), and Otsu (+ clean-up) on the same patch.
* Deblurring: train on the three blurred/sharp training pairs, report SSIM and PSNR on the three validation pairs,
  beside the blurred input itself.
* Classification of the structure from a whole patch (3 training patches, 3 validation patches): macro accuracy.
Honest caveat printed with the table: one validation patch per structure, no folds (the cross-validated protocol is
``fmscope benchmark``), and the validation plaque patch has (almost) no plaque voxels.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from fmscope.config import from_dict, to_dict
from fmscope.engine.logs import read_metrics
from fmscope.metrics import dice
from fmscope.segment import ClassicalConfig, segment_classical
from fmscope.tasks.config import FinetuneConfig
from fmscope.tasks.finetune import finetune
from fmscope.tasks.labelled import LabelledSet, load_labelled
from fmscope.tasks.restoration import restoration_metrics
from fmscope.tasks.samples import load_samples

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "lsm_selma3d_wu_patches" / "finetune"


def subset(labelled: LabelledSet, structure: str) -> LabelledSet:
    return labelled.subset([i for i, item in enumerate(labelled.items) if item.class_name == structure])


def otsu_dice(val: LabelledSet) -> float:
    sample = load_samples(val.items, "segment", val.classes)[0]
    mask = segment_classical(sample.image, ClassicalConfig(method="otsu", min_size=10)).mask
    return dice(mask, sample.label == 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("pretrained", type=Path)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--out", type=Path, default=Path("runs/finetune_lsm"))
    p.add_argument("--tasks", nargs="+", choices=("seg", "deblur", "cls"), default=["seg", "deblur", "cls"])
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    base = from_dict(FinetuneConfig, {"epochs": args.epochs, "patience": 10})
    train_seg, val_seg = load_labelled(args.data / "train", "segment"), load_labelled(args.data / "val", "segment")
    inits = {"pretrained": str(args.pretrained), "scratch": "scratch"}
    rows: list[dict[str, Any]] = []

    def run(name: str, config: FinetuneConfig, train: LabelledSet, val: LabelledSet, init: str) -> float:
        t0 = time.perf_counter()
        result = finetune(config, train, val, args.out / name, init=init, overwrite=True, progress=True)
        best = read_metrics(result.out_dir / "metrics.csv")[result.best_epoch]
        rows.append({"run": name, "init": init, "score": result.best_score, "best_epoch": result.best_epoch,
                     "epochs": result.epochs_run, "seconds": time.perf_counter() - t0,
                     **{k: v for k, v in best.items() if k.startswith("val_")}})  # fmt: skip
        return result.best_score

    seg: dict[str, dict[str, float]] = {}
    deblur: dict[str, float] = {}
    cls: dict[str, float] = {}
    if "seg" in args.tasks:
        for structure in sorted({item.class_name for item in train_seg.items if item.class_name}):
            train, val = subset(train_seg, structure), subset(val_seg, structure)
            cfg = from_dict(FinetuneConfig, {**to_dict(base), "task": "segment"})
            seg[structure] = {k: run(f"seg_{structure}_{k}", cfg, train, val, v) for k, v in inits.items()}
            seg[structure]["otsu"] = otsu_dice(val)
        print("Segmentation Dice on the validation patch (best epoch), one training patch per structure\n")
        print("| structure | pretrained | scratch | Otsu |\n|---|---|---|---|")
        for structure, r in seg.items():
            print(f"| {structure} | {r['pretrained']:.3f} | {r['scratch']:.3f} | {r['otsu']:.3f} |")
    if "deblur" in args.tasks:
        deblur_cfg = from_dict(FinetuneConfig, {**to_dict(base), "task": "deblur"})
        deblur = {k: run(f"deblur_{k}", deblur_cfg, train_seg, val_seg, v) for k, v in inits.items()}
        blurred = [restoration_metrics(s.image, s.target) for s in load_samples(val_seg.items, "deblur", ())]  # type: ignore[arg-type]
        deblur["blurred input"] = float(np.mean([m["ssim"] for m in blurred]))
        psnr_in = float(np.mean([m["psnr"] for m in blurred]))
        psnr = {r["run"]: r.get("val_psnr", float("nan")) for r in rows}
        print("\nDeblurring on 3 validation patches (mean SSIM / PSNR in dB, [0, 1] window of the blurred patch)\n")
        print("| | pretrained | scratch | blurred input |\n|---|---|---|---|")
        print(f"| SSIM | {deblur['pretrained']:.4f} | {deblur['scratch']:.4f} | {deblur['blurred input']:.4f} |")
        print(f"| PSNR | {psnr['deblur_pretrained']:.2f} | {psnr['deblur_scratch']:.2f} | {psnr_in:.2f} |")
    if "cls" in args.tasks:
        train_cls = load_labelled(args.data / "train", "classify")
        val_cls = load_labelled(args.data / "val", "classify")
        cls_cfg = from_dict(FinetuneConfig, {**to_dict(base), "task": "classify"})
        cls = {k: run(f"cls_{k}", cls_cfg, train_cls, val_cls, v) for k, v in inits.items()}
        print("\nClassification macro accuracy on 3 validation patches (3 classes, chance 0.33)\n")
        print(f"| pretrained | scratch |\n|---|---|\n| {cls['pretrained']:.3f} | {cls['scratch']:.3f} |")
    print("\n| run | best epoch | epochs | seconds |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['run']} | {r['best_epoch']} | {r['epochs']} | {float(r['seconds']):.0f} |")
    if args.json:
        args.json.write_text(json.dumps({"segment": seg, "deblur": deblur, "classify": cls, "runs": rows}, indent=2))


if __name__ == "__main__":
    main()
