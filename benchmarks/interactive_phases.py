"""Phases with strokes or clicks (semantic mode of the rf backend) beside Otsu and multi-Otsu, on real and phantom data.

    python benchmarks/interactive_phases.py [--data ../shared/data] [--interactions 5] [--mode strokes|clicks|both]

Targets (each a binary phase of one 2D image; the simulated annotator of
:mod:`fmscope.interactive.simulate_phases` marks the largest error region at each interaction):

* TiO2 particles as a phase: 4 SEM images (rows 0-703, without the info bar), manual masks; the masks separate
  touching particles by one-pixel lines, which belong to the particle phase: the phase is the mask closed by a
  3 x 3 square;
* ISBI 2012 membranes as a phase: slices 0, 7, 15, 22 and 29 of the EM stack (ISBI labels, membrane = 0);
* the EM phantom's phases (``fmscope.data.phantoms.em_stack_phantom``, 32 x 256 x 256, seed 0): the porous layer
  (class 1) and the particles (class 2), on slices 8, 16 and 24.

Baselines on the same image: global Otsu and 3-class multi-Otsu, each at its best class or complement.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from fmscope.data.phantoms import em_stack_phantom
from fmscope.interactive.rf_backend import RandomForestPrompter
from fmscope.interactive.simulate_phases import simulate_phase_image
from fmscope.io import read_image

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def targets(data: Path) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    tio2 = data / "tio2_sem_particles_bam"
    out: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {"TiO2 particles": [], "ISBI membranes": []}
    for f in sorted((tio2 / "images_sem").glob("*.tif"))[:4]:
        mask = read_image(tio2 / "masks_manual_4connected" / f"{f.stem}_m.tif").numpy()[:704] > 0
        out["TiO2 particles"].append((read_image(f).numpy()[:704], ndi.binary_closing(mask, np.ones((3, 3)))))
    raw = read_image(data / "isbi2012_em_membranes" / "raw.tif").numpy()
    membranes = read_image(data / "isbi2012_em_membranes" / "membrane_labels_isbi.tif").numpy() == 0
    out["ISBI membranes"] = [(raw[z], membranes[z]) for z in (0, 7, 15, 22, 29)]
    phantom = em_stack_phantom((32, 256, 256), seed=0)
    out["EM phantom: porous layer"] = [(phantom.image[z], phantom.semantic[z] == 1) for z in (8, 16, 24)]
    out["EM phantom: particles"] = [(phantom.image[z], phantom.semantic[z] == 2) for z in (8, 16, 24)]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--interactions", type=int, default=5)
    p.add_argument("--mode", choices=("strokes", "clicks", "both"), default="both")
    p.add_argument("--width", type=float, default=3.0, help="stroke width in pixels")
    args = p.parse_args()
    backend = RandomForestPrompter(split_touching=False)
    modes = ("strokes", "clicks") if args.mode == "both" else (args.mode,)
    print("| phase | images | Otsu | multi-Otsu | " + " | ".join(f"{m}: IoU after 1 / 3 / 5" for m in modes)
          + " | s per interaction |\n|---|---|---|---|" + "---|" * len(modes) + "---|")  # fmt: skip
    for name, pairs in targets(args.data).items():
        cells, seconds, count = [], 0.0, 0
        base = {"otsu": [], "multiotsu": []}
        for mode in modes:
            after = {1: [], 3: [], 5: []}
            for image, truth in pairs:
                t0 = time.perf_counter()
                r = simulate_phase_image(backend, image, truth, mode=mode, interactions=args.interactions,
                                         width=args.width)  # fmt: skip
                seconds += time.perf_counter() - t0
                count += args.interactions
                for n in after:
                    after[n].append(r["ious"][min(n, len(r["ious"])) - 1])
                if mode == modes[0]:
                    base["otsu"].append(r["otsu"])
                    base["multiotsu"].append(r["multiotsu"])
            cells.append(" / ".join(f"{np.mean(after[n]):.3f}" for n in (1, 3, 5)))
        print(f"| {name} | {len(pairs)} | {np.mean(base['otsu']):.3f} | {np.mean(base['multiotsu']):.3f} | "
              + " | ".join(cells) + f" | {seconds / count:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
