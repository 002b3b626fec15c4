"""Few-shot 2D segmentation of the ISBI 2012 EM stack: membranes and mitochondria from 1, 3 and 10 labelled slices.

    python benchmarks/finetune_isbi.py [PRETRAINED_MODEL_DIR] [--data ../shared/data/isbi2012_em_membranes]
        [--shots 1 3 10] [--epochs 30] [--json out.json]

For each target and number of training slices n: the first n slices of a fixed seeded permutation train, the next 2
validate (early stopping), and the remaining 30 - n - 2 are the test slices, never seen in training or model
selection. Reported: mean Dice over the test slices for a 2D UNet from scratch, the same UNet initialised from a 3D
pretrained model (its kernels summed over depth, ``fmscope.tasks.model.collapse_depth``) when a model folder is
given, and Otsu per slice (dark objects; smoothed for mitochondria, as in ``real_data_otsu.py``).
Targets: membranes = ISBI labels (0 = membrane), mitochondria = class 2 of the Cardona 2010 semantic labels.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from fmscope.config import from_dict
from fmscope.io import read_image
from fmscope.metrics import dice
from fmscope.segment import ClassicalConfig, segment_classical
from fmscope.tasks.config import FinetuneConfig
from fmscope.tasks.finetune import finetune
from fmscope.tasks.labelled import LabelMapping, check_label, stack_slices
from fmscope.tasks.model import load_task_model
from fmscope.tasks.predict import predict_array
from fmscope.tasks.samples import normalise

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "isbi2012_em_membranes"
# target -> (label file, mapping, Otsu settings as in benchmarks/real_data_otsu.py: both structures are dark)
TARGETS = {
    "membranes": ("membrane_labels_isbi.tif", LabelMapping({0: 1, 255: 0}), ClassicalConfig("otsu", dark_objects=True)),
    "mitochondria": (
        "cardona2010_multiclass/semantic_classes.tif",
        LabelMapping.foreground(2),
        ClassicalConfig("otsu", dark_objects=True, smooth_sigma=2.0),
    ),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("pretrained", type=Path, nargs="?", default=None)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--shots", type=int, nargs="+", default=[1, 3, 10])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("runs/finetune_isbi"))
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    raw = read_image(args.data / "raw.tif").numpy()
    order = [int(i) for i in np.random.default_rng(args.seed).permutation(raw.shape[0])]
    inits: dict[str, Any] = {"scratch": "scratch"}
    if args.pretrained is not None:
        inits["pretrained 3D -> 2D"] = str(args.pretrained)
    config = from_dict(FinetuneConfig, {"epochs": args.epochs, "patience": 10, "patch_size": [128, 128]})
    rows: list[dict[str, Any]] = []
    for target, (label_file, mapping, otsu) in TARGETS.items():
        labels = read_image(args.data / label_file).numpy()
        truth = [check_label(labels[z], raw.shape[1:], path=label_file, mapping=mapping) for z in range(len(raw))]
        for n in args.shots:
            train_z, val_z, test_z = order[:n], order[n : n + 2], order[n + 2 :]
            train = stack_slices(args.data / "raw.tif", args.data / label_file, train_z)
            val = stack_slices(args.data / "raw.tif", args.data / label_file, val_z)
            images = {z: normalise(raw[z], 1.0, 99.8)[0] for z in test_z}
            scores = {"Otsu": float(np.mean([dice(segment_classical(images[z], otsu).mask, truth[z]) for z in test_z]))}
            for name, init in inits.items():
                t0 = time.perf_counter()
                run = args.out / f"{target}_{n}_{name.split()[0]}"
                result = finetune(config, train, val, run, init=init, mapping=mapping, overwrite=True, progress=True)
                model = load_task_model(result.model_dir)
                per_slice = [dice(predict_array(model, raw[z]).argmax(axis=0) == 1, truth[z] == 1) for z in test_z]
                scores[name] = float(np.mean(per_slice))
                scores[f"{name} seconds"] = time.perf_counter() - t0
            rows.append({"target": target, "train slices": n, "test slices": len(test_z), **scores})
            print(json.dumps(rows[-1]))
    names = ["Otsu", *inits]
    print("\nMean Dice on the held-out test slices\n")
    print("| target | train slices | test slices | " + " | ".join(names) + " |")
    print("|---|---|---|" + "---|" * len(names))
    for r in rows:
        cells = " | ".join(f"{r[k]:.3f}" for k in names)
        print(f"| {r['target']} | {r['train slices']} | {r['test slices']} | {cells} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
