"""Run ``fmscope info``, ``fmscope segment --method otsu`` and ``fmscope evaluate`` on every shared dataset.

This is the floor every learned method must beat, measured through the CLI exactly as a user would run it.

    python benchmarks/real_data_otsu.py [--data ../shared/data] [--limit N] [--json out.json]

Prints the commands it runs (with -v) and a Markdown table: per dataset, the number of images, mean +/- std of Otsu
Dice (and instance F1 at IoU 0.5 where the ground truth has instances).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from fmscope.cli.main import main as fmscope_main

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@dataclass(frozen=True)
class Case:
    dataset: str
    image: Path
    gt: Path
    segment_args: tuple[str, ...] = ()
    evaluate_args: tuple[str, ...] = ()
    instances: bool = False


@dataclass
class Outcome:
    dataset: str
    dice: list[float] = field(default_factory=list)
    f1_50: list[float] = field(default_factory=list)
    info: dict[str, object] = field(default_factory=dict)
    seconds: float = 0.0


def cli(*argv: str | Path, verbose: bool = False) -> str:
    """Run one fmscope command in-process and return its stdout; raise if it fails."""
    args = [str(a) for a in argv]
    if verbose:
        print("$ fmscope " + " ".join(args))
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = fmscope_main(args)
    if code != 0:
        raise RuntimeError(f"fmscope {' '.join(args)} exited with {code}")
    return buf.getvalue()


def cases(data: Path, limit: int | None) -> list[Case]:
    out: list[Case] = []
    isbi = data / "isbi2012_em_membranes"
    if isbi.exists():
        out.append(
            Case(
                "isbi2012 membranes",
                isbi / "raw.tif",
                isbi / "membrane_labels_isbi.tif",
                ("--dark", "--per-slice"),
                ("--gt-foreground", "0"),
            )
        )
        out.append(
            Case(
                "isbi2012 mitochondria",
                isbi / "raw.tif",
                isbi / "cardona2010_multiclass" / "mitochondria.tif",
                ("--dark", "--per-slice", "--smooth", "2"),
            )
        )
    ves = data / "vesselnn_2pm_vasculature"
    if ves.exists():
        labels = sorted((ves / "labels").glob("*.tif"))
        for img in sorted((ves / "images").glob("*_BM4D_denoised.tif"))[:limit]:
            stem = img.name.replace("_BM4D_denoised.tif", "")
            gt = next(p for p in labels if p.name.startswith(stem + "_"))
            out.append(Case("vesselnn vessels", img, gt))
    dsb = data / "dsb2018_bbbc038_nuclei_subset"
    if dsb.exists():
        for img in sorted((dsb / "images").glob("*.png"))[:limit]:
            out.append(
                Case("dsb2018 nuclei", img, dsb / "labels" / (img.stem + ".tif"), ("--channel", "0"), instances=True)
            )
    tio2 = data / "tio2_sem_particles_bam"
    if tio2.exists():
        for img in sorted((tio2 / "images_sem").glob("*.tif"))[:limit]:
            out.append(
                Case(
                    "tio2 particles",
                    img,
                    tio2 / "masks_manual_4connected" / (img.stem + "_m.tif"),
                    (),
                    ("--roi", "0:704,:"),
                    instances=True,
                )
            )
    lsm = data / "lsm_selma3d_wu_patches" / "finetune"
    if lsm.exists():
        for split in ("train", "val"):
            for lab in sorted((lsm / split).glob("*_label.nii.gz")):
                structure = lab.name.split("_patch_")[0]
                img = lab.with_name(lab.name.replace("_label.nii.gz", ".nii.gz"))
                out.append(Case(f"lsm {structure}", img, lab))
    return out


def run(data: Path, limit: int | None, verbose: bool) -> list[Outcome]:
    outcomes: dict[str, Outcome] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, case in enumerate(cases(data, limit)):
            t0 = time.perf_counter()
            o = outcomes.setdefault(case.dataset, Outcome(case.dataset))
            if not o.info:
                o.info = json.loads(cli("info", case.image, "--json", verbose=verbose))
            pred = Path(tmp) / f"pred_{i}.tif"
            cli("segment", case.image, "-o", pred, "--method", "otsu", *case.segment_args, verbose=verbose)
            inst = ("--instances",) if case.instances else ()
            scores = json.loads(cli("evaluate", pred, case.gt, "--json", *inst, *case.evaluate_args, verbose=verbose))
            o.dice.append(scores["dice"])
            if case.instances:
                o.f1_50.append(scores["f1_50"])
            o.seconds += time.perf_counter() - t0
    pretrain = data / "lsm_selma3d_wu_patches" / "pretrain"
    if pretrain.exists():
        o = Outcome("lsm pretrain (unlabelled)")
        o.info = json.loads(cli("info", next(iter(sorted(pretrain.glob("*.nii.gz")))), "--json", verbose=verbose))
        outcomes[o.dataset] = o
    return list(outcomes.values())


def fmt(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} +/- {statistics.stdev(values):.3f}"


def table(outcomes: list[Outcome]) -> str:
    lines = [
        "| dataset | n | example shape | dtype | axes | Otsu Dice | Otsu instance F1@0.5 | time (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        shape = "x".join(str(s) for s in o.info.get("shape", []))  # type: ignore[union-attr]
        lines.append(
            f"| {o.dataset} | {len(o.dice) or '-'} | {shape} | {o.info.get('dtype')} | {o.info.get('axes')} | "
            f"{fmt(o.dice)} | {fmt(o.f1_50)} | {o.seconds:.1f} |"
        )
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder")
    p.add_argument("--limit", type=int, default=None, help="at most N images per multi-image dataset")
    p.add_argument("--json", type=Path, default=None, help="write the per-dataset scores here")
    p.add_argument("-v", "--verbose", action="store_true", help="print every fmscope command")
    return p.parse_args()


if __name__ == "__main__":
    args = parse_args()
    if not args.data.exists():
        raise SystemExit(f"shared data folder {args.data} does not exist")
    results = run(args.data, args.limit, args.verbose)
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps([o.__dict__ for o in results], indent=2, default=str))
