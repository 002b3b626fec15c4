"""SAM vit_b and SAM2.1 hiera_tiny with random weights, end to end on CPU, beside the weight-free rf backend.

    python benchmarks/sam_cpu.py [--data ../shared/data] [--slices 3] [--threads 2]

Each SAM model is built with random weights, saved in the official checkpoint format (SAM: a state dict; SAM2:
``{"model": state_dict}``) and loaded back through :func:`fmscope.interactive.make_backend`, the path a user's
checkpoint takes. On the ISBI EM stack (512 x 512 uint8 slices) it then embeds ``--slices`` slices, prompts one
mitochondrion with its box, and propagates it through them (:func:`fmscope.interactive.propagate`); SAM2 also through
its own video predictor. Random weights give meaningless masks: this measures that the code path works and what it
costs, not quality. Baseline in the same run: the rf backend on the same slices and prompt.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage as ndi

from fmscope.interactive import ObjectPrompt, make_backend, propagate
from fmscope.io import read_image

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _random_checkpoints(folder: Path) -> dict[str, Path]:
    from fmscope.interactive.sam2_backend import _import_sam2
    from fmscope.interactive.sam_backend import _import_segment_anything

    torch.manual_seed(0)
    sam = folder / "random_vit_b.pth"  # not the official file name: the size check is for real downloads
    torch.save(_import_segment_anything().sam_model_registry["vit_b"](checkpoint=None).state_dict(), sam)
    net = _import_sam2()["build"]("configs/sam2.1/sam2.1_hiera_t.yaml", ckpt_path=None, device="cpu")
    sam2 = folder / "random_sam2.1_hiera_tiny.pt"
    torch.save({"model": net.state_dict()}, sam2)
    return {"sam": sam, "sam2": sam2}


def _timed(fn, *args, **kwargs):  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--slices", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    root = args.data / "isbi2012_em_membranes"
    volume = read_image(root / "raw.tif").numpy()[14 : 14 + args.slices]
    mito, _ = ndi.label(read_image(root / "cardona2010_multiclass" / "mitochondria.tif").numpy()[14] > 0)
    ys, xs = np.nonzero(mito == np.argmax(np.bincount(mito.ravel())[1:]) + 1)
    box = (0, float(ys.min()), float(xs.min()), float(ys.max() + 1), float(xs.max() + 1))
    prompt = ObjectPrompt(1, box=box)
    print(
        f"ISBI slices 14..{13 + args.slices} (512 x 512 uint8), one box prompt, {args.threads} threads\n\n"
        "| backend | load s | embed s per slice (median) | prompt s | propagate: s | slices with a mask |\n"
        "|---|---|---|---|---|---|"
    )
    with tempfile.TemporaryDirectory() as tmp:
        checkpoints = _random_checkpoints(Path(tmp))
        for method in ("rf", "sam", "sam2"):
            backend, load = _timed(make_backend, method, checkpoint=checkpoints.get(method))
            embeds = [_timed(backend.embed, plane) for plane in volume]
            embed = float(np.median([t for _, t in embeds]))
            _, predict = _timed(backend.predict, embeds[0][0], ObjectPrompt(1, box=box[1:]))
            (labels, _), seconds = _timed(propagate, backend, volume, [prompt])
            reached = int(labels.any(axis=(1, 2)).sum())
            print(
                f"| {method} | {load:.1f} | {embed:.2f} | {predict:.2f} | {seconds:.1f} | {reached} of {args.slices} |"
            )
            if method == "sam2":
                video, seconds = _timed(backend.propagate_video, volume, 0, [prompt])  # type: ignore[attr-defined]
                reached = int(video.any(axis=(1, 2)).sum())
                print(f"| sam2, video predictor | | | | {seconds:.1f} | {reached} of {args.slices} |")


if __name__ == "__main__":
    main()
