"""What pretraining learned, on captioned volumes: image-text retrieval and a linear probe, against random init.

    python benchmarks/pretrain_eval.py MODEL_DIR [--data ../shared/data/lsm_selma3d_wu_patches/pretrain] [--json F]

* Retrieval: every caption is embedded and the volumes are ranked by cosine similarity; top-1 accuracy = fraction of
  captions whose own volume ranks first (held-in data: the captions were seen in pretraining). Chance = 1 / n.
* Linear probe: each volume is cut into its 8 octants (non-overlapping crops); frozen embeddings are classified by
  source volume with logistic regression, leave-one-out. Chance = 1 / n. Three embeddings: the average-pooled
  bottleneck, the average-pooled encoder levels concatenated (all scales), and the image-text embedding.
Both are run for the pretrained model and for a randomly initialised model of the same configuration (same seed rules,
same text tower before its projection), in the same run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import LeaveOneOut, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from fmscope.data import load_manifest
from fmscope.inference import embed_manifest, load_normalized
from fmscope.pretrain.export import load_pretrained
from fmscope.pretrain.method import MultimodalPretrainer

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "lsm_selma3d_wu_patches" / "pretrain"


def retrieval_top1(method: MultimodalPretrainer, data: Path) -> float:
    table = embed_manifest(method, load_manifest(data))
    if table.text is None:
        raise SystemExit("retrieval needs an image+text model")
    sims = table.text @ table.image.T  # captions x volumes
    return float(np.mean(np.argmax(sims, axis=1) == np.arange(len(sims))))


@torch.no_grad()
def octant_embeddings(method: MultimodalPretrainer, data: Path) -> tuple[dict[str, np.ndarray], np.ndarray]:
    manifest = load_manifest(data, allow_missing_captions=True)
    feats: dict[str, list[np.ndarray]] = {"bottleneck": [], "all levels": [], "image-text": []}
    labels = []
    for label, entry in enumerate(manifest.entries):
        x = load_normalized(entry.path)
        half = [s // 2 // method.student.config.divisor * method.student.config.divisor for s in x.shape]
        for oz in (0, 1):
            for oy in (0, 1):
                for ox in (0, 1):
                    crop = x[
                        oz * half[0] : (oz + 1) * half[0],
                        oy * half[1] : (oy + 1) * half[1],
                        ox * half[2] : (ox + 1) * half[2],
                    ]
                    t = torch.from_numpy(np.ascontiguousarray(crop))[None, None]
                    pooled = method.student.pooled(t)[0]
                    feats["bottleneck"].append(pooled[-method.student.bottleneck_dim :].numpy())
                    feats["all levels"].append(pooled.numpy())
                    if method.text_encoder is not None:
                        feats["image-text"].append(method.image_embedding(t)[0].numpy())
                    labels.append(label)
    return {k: np.stack(v) for k, v in feats.items() if v}, np.array(labels)


def probe_accuracy(x: np.ndarray, y: np.ndarray) -> float:
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0))
    return float(cross_val_score(clf, x, y, cv=LeaveOneOut()).mean())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", type=Path)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    pretrained = load_pretrained(args.model)
    torch.manual_seed(args.seed)
    random_init = MultimodalPretrainer(pretrained.config).eval()
    n = len(load_manifest(args.data, allow_missing_captions=True).entries)
    rows = []
    for name, method in (("pretrained", pretrained), ("random init", random_init)):
        top1 = retrieval_top1(method, args.data) if method.text_encoder is not None else float("nan")
        feats, y = octant_embeddings(method, args.data)
        probes = {f"probe {k}": probe_accuracy(x, y) for k, x in feats.items()}
        rows.append({"model": name, "retrieval_top1": top1, **probes})
    names = [k for k in rows[0] if k.startswith("probe ")]
    print(f"caption->volume top-1: n={n}, chance {1 / n:.2f}; linear probes: {8 * n} octants, {n} classes, LOO\n")
    print("| model | retrieval top-1 | " + " | ".join(names) + " |")
    print("|---|---|" + "---|" * len(names))
    for r in rows:
        print(f"| {r['model']} | {r['retrieval_top1']:.2f} | " + " | ".join(f"{r[k]:.3f}" for k in names) + " |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
