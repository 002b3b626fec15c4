"""Human in the loop on the ISBI EM stack: the slices a person accepted train a model that proposes the others.

    python benchmarks/session_loop.py [--data ../shared/data] [--rounds 1 2 4 8] [--init lsm-unet-cpu]
        [--epochs 20] [--steps-per-epoch 10] [--json out.json] [--plot docs/session_loop.png]

For each target (ISBI membranes, Cardona 2010 mitochondria) and each round with k accepted slices (a nested order
that spreads them through the stack: 15, 0, 29, 7, 22, ...), the simulated annotator corrects those slices to the
ground truth and accepts them in a real :class:`~fmscope.interactive.session.Session` kept on disk; then:

* fine-tuned: :func:`~fmscope.interactive.session_training.finetune_from_session` (the path of ``fmscope finetune seg
  --from-session``) from ``--init``, then ``fmscope predict`` on the stack;
* random forest: :class:`~fmscope.segment.PixelClassifier` (the benchmark's rf) fitted on the same accepted slices;
* nearest accepted slice: each other slice gets the mask of the nearest accepted one (what carrying the accepted
  masks through the stack gives without any model: the floor of propagation).

Dice pooled over the slices not accepted in that round. The forest fits every accepted slice; the fine-tuning keeps
every fifth for validation (early stopping), as ``--from-session`` does (with one or two accepted slices it trains on
one). Prints a table; ``--plot`` writes Dice vs accepted slices.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from fmscope.intensity import fit_profile, normalize
from fmscope.interactive.rf_backend import RandomForestPrompter
from fmscope.interactive.session import Session
from fmscope.interactive.session_training import finetune_from_session, round_config
from fmscope.io import read_image
from fmscope.metrics import dice
from fmscope.segment.pixel_classifier import PixelClassifier, PixelClassifierConfig
from fmscope.tasks.config import FinetuneConfig
from fmscope.tasks.predict import predict_file

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TARGETS = {  # name -> (label file below the ISBI folder, foreground values)
    "membranes": ("membrane_labels_isbi.tif", (0,)),
    "mitochondria": ("cardona2010_multiclass/semantic_classes.tif", (2,)),
}


def spread_order(n: int) -> list[int]:
    """Slice indices, each next one the farthest from those already taken (ties: the lowest), from the middle."""
    order = [n // 2]
    while len(order) < n:
        rest = [z for z in range(n) if z not in order]
        order.append(max(rest, key=lambda z: (min(abs(z - o) for o in order), -z)))
    return order


def nearest_copy(truth: np.ndarray, accepted: list[int]) -> np.ndarray:
    out = np.empty_like(truth)
    for z in range(len(truth)):
        out[z] = truth[min(accepted, key=lambda a: (abs(a - z), a))]
    return out


def one_round(raw: Path, volume: np.ndarray, truth: np.ndarray, accepted: list[int], config: FinetuneConfig,
              init: str, work: Path) -> tuple[np.ndarray, float]:  # fmt: skip
    """The fine-tuned model's prediction of the stack after the person accepted ``accepted``, and its seconds."""
    session = Session(volume, RandomForestPrompter(), folder=work / "session")
    for z in accepted:
        oid = session.new_object()
        session.set_mask(oid, z, truth[z])
        session.accept_slice(oid, z)
    t0 = time.perf_counter()
    result = finetune_from_session(config, work / "session", raw, work / "run", init=init)
    out = predict_file(result.model_dir, raw, work / "predicted.tif")
    return read_image(out.output).numpy() == 1, time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--rounds", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--init", default="lsm-unet-cpu")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--steps-per-epoch", type=int, default=10)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--plot", type=Path, default=None)
    args = p.parse_args()
    root = args.data / "isbi2012_em_membranes"
    raw = root / "raw.tif"
    volume = read_image(raw).numpy()
    profile = fit_profile(volume, low_percentile=1.0, high_percentile=99.8)
    norm = np.asarray(normalize(volume, profile.low, profile.high), np.float32)
    order = spread_order(len(volume))
    config = round_config(volume.shape[1:], {"epochs": args.epochs, "steps_per_epoch": args.steps_per_epoch})
    rows = []
    for target, (label_file, foreground) in TARGETS.items():
        truth = np.isin(read_image(root / label_file).numpy(), foreground)
        for k in args.rounds:
            accepted = sorted(order[:k])
            rest = np.array([z for z in range(len(volume)) if z not in accepted])
            with tempfile.TemporaryDirectory() as tmp:
                tuned, seconds = one_round(raw, volume, truth, accepted, config, args.init, Path(tmp))
            t0 = time.perf_counter()
            forest = PixelClassifier(PixelClassifierConfig(n_estimators=50, n_jobs=2))
            forest.fit([norm[z] for z in accepted], [truth[z].astype(np.int64) for z in accepted])
            rf = np.stack([forest.predict(norm[z]) == 1 for z in rest])
            rf_seconds = time.perf_counter() - t0
            row = {
                "target": target, "accepted": k, "slices": accepted,
                "fine-tuned": dice(tuned[rest], truth[rest]), "fine-tuned seconds": seconds,
                "random forest": dice(rf, truth[rest]), "random forest seconds": rf_seconds,
                "nearest accepted slice": dice(nearest_copy(truth, accepted)[rest], truth[rest]),
            }  # fmt: skip
            rows.append(row)
            print(f"{target} k={k}: " + ", ".join(f"{m} {row[m]:.3f}" for m in METHODS), flush=True)
    print(f"\nISBI stack (30 x 512 x 512), Dice on the slices not accepted; fine-tuned from {args.init}, "
          f"{args.epochs} x {args.steps_per_epoch} steps\n")  # fmt: skip
    print("| target | accepted slices | " + " | ".join(METHODS) + " | s (fine-tune + predict) |")
    print("|---|---|" + "---|" * (len(METHODS) + 1))
    for r in rows:
        best = max(r[m] for m in METHODS)
        cells = [f"**{r[m]:.3f}**" if r[m] == best else f"{r[m]:.3f}" for m in METHODS]
        print(f"| {r['target']} | {r['accepted']} | " + " | ".join(cells) + f" | {r['fine-tuned seconds']:.0f} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    if args.plot:
        plot(rows, args.plot, args.init)


METHODS = ("fine-tuned", "random forest", "nearest accepted slice")


def plot(rows: list[dict[str, object]], path: Path, init: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(TARGETS), figsize=(8, 3.2), sharey=True)
    for ax, target in zip(axes, TARGETS, strict=True):
        mine = [r for r in rows if r["target"] == target]
        ks = [r["accepted"] for r in mine]
        for method, style in zip(METHODS, ("o-", "s--", "^:"), strict=True):
            label = f"fine-tuned from {init}" if method == "fine-tuned" else method
            ax.plot(ks, [r[method] for r in mine], style, label=label)
        ax.set_xscale("log", base=2)
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.set_title(f"ISBI {target}")
        ax.set_xlabel("accepted slices")
    axes[0].set_ylabel("Dice, slices not accepted")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


if __name__ == "__main__":
    main()
