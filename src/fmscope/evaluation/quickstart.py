"""``fmscope quickstart``: phantoms -> intensity profile -> classical segmentation -> evaluation -> report.

Everything runs on synthetic phantoms with exact ground truth, so it needs no data and no weights. The report folder is
written under a temporary name and renamed at the end: an interrupted run leaves nothing half-written.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from fmscope.data import Phantom, em_stack_phantom, lightsheet_phantom
from fmscope.errors import InvalidInputError
from fmscope.evaluation import quickstart_finetune, quickstart_pretrain
from fmscope.evaluation.figures import save_label_overlay, save_overlay
from fmscope.evaluation.masks import evaluate_segmentation
from fmscope.evaluation.quickstart_finetune import finetune_markdown, finetune_on_phantoms
from fmscope.evaluation.quickstart_pretrain import pretrain_markdown, pretrain_on_phantoms
from fmscope.intensity import apply_profile, fit_profile
from fmscope.io import ImageMetadata, write_image
from fmscope.metrics import instance_scores
from fmscope.models.shipped import resolve_model_dir
from fmscope.segment import ClassicalConfig, segment_classical
from fmscope.utils.atomic import atomic_output
from fmscope.utils.progress import ProgressCallback, make_progress, sub_progress
from fmscope.utils.provenance import RunRecord

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class QuickstartRow:
    """One method on one phantom target."""

    phantom: str
    target: str
    method: str
    dice: float
    iou: float
    precision: float
    recall: float
    f1_50: float | None
    seconds: float


@dataclass(frozen=True)
class QuickstartBudget:
    """How much the quickstart computes: the two phantoms of the classical part, the model, the pretraining run (none
    by default: the 3-shot fine-tuning starts from the shipped backbone ``init``; with ``pretrain_steps`` > 0 from a
    run on captioned phantoms) and the fine-tuning. The pretraining and fine-tuning phantoms are at least 32^3 (their
    patch size)."""

    lightsheet_shape: tuple[int, int, int] = (48, 96, 96)
    em_shape: tuple[int, int, int] = (24, 128, 128)
    model: str = "unet-cpu"
    init: str | None = "lsm-unet-cpu"  # the shipped backbone fine-tuned from when no pretraining is run here
    pretrain_shape: tuple[int, int, int] = quickstart_pretrain.SHAPE
    pretrain_steps: int = 0
    finetune_shape: tuple[int, int, int] = quickstart_finetune.SHAPE
    finetune_epochs: int = quickstart_finetune.EPOCHS
    finetune_steps_per_epoch: int = quickstart_finetune.STEPS_PER_EPOCH

    def __post_init__(self) -> None:
        for name in ("pretrain_shape", "finetune_shape"):
            shape = getattr(self, name)
            if len(shape) != 3 or min(shape) < 32:
                raise InvalidInputError(f"{name}: expected 3 sizes >= 32 (the patch size), got {shape!r}")
        if self.pretrain_steps < 0:
            raise InvalidInputError(f"pretrain_steps: expected an integer >= 0, got {self.pretrain_steps!r}")
        for name in ("finetune_epochs", "finetune_steps_per_epoch"):
            if getattr(self, name) < 1:
                raise InvalidInputError(f"{name}: expected an integer >= 1, got {getattr(self, name)!r}")


#: ``full`` (the default) makes the report the README shows; ``tiny`` runs every stage on the smallest inputs and the
#: smallest model in a fraction of the time, to check that the quickstart works (its scores mean nothing).
BUDGETS: dict[str, QuickstartBudget] = {
    "full": QuickstartBudget(),
    "tiny": QuickstartBudget(
        lightsheet_shape=(16, 48, 48),
        em_shape=(8, 48, 48),
        model="unet-tiny",
        init=None,
        pretrain_shape=(32, 48, 48),
        pretrain_steps=2,
        finetune_shape=(32, 32, 32),
        finetune_epochs=2,
        finetune_steps_per_epoch=1,
    ),
}


def quickstart_budget(budget: str | QuickstartBudget) -> QuickstartBudget:
    """A budget by name (:data:`BUDGETS`), or the budget given."""
    if isinstance(budget, QuickstartBudget):
        return budget
    if budget not in BUDGETS:
        raise InvalidInputError(f"budget: expected one of {list(BUDGETS)}, got {budget!r}")
    return BUDGETS[budget]


@dataclass(frozen=True)
class QuickstartResult:
    out_dir: Path
    report_path: Path
    rows: tuple[QuickstartRow, ...]
    summary_markdown: str


@dataclass(frozen=True)
class _Case:
    phantom: str
    target: str
    method: str
    config: ClassicalConfig


def _cases() -> tuple[_Case, ...]:
    ls = "lightsheet"
    em = "em"
    return (
        _Case(ls, "all structures", "otsu", ClassicalConfig("otsu", smooth_sigma=1.0)),
        _Case(ls, "all structures", "li", ClassicalConfig("li", smooth_sigma=1.0)),
        _Case(ls, "all structures", "triangle", ClassicalConfig("triangle", smooth_sigma=1.0)),
        _Case(ls, "all structures", "local", ClassicalConfig("local", per_slice=True, block_size=31, smooth_sigma=1.0)),
        _Case(ls, "all structures", "watershed", ClassicalConfig("watershed", smooth_sigma=1.0, min_size=20)),
        _Case(em, "particle", "otsu", ClassicalConfig("otsu", per_slice=True, smooth_sigma=1.0)),
        _Case(em, "particle", "li", ClassicalConfig("li", per_slice=True, smooth_sigma=1.0)),
        _Case(em, "particle", "triangle", ClassicalConfig("triangle", per_slice=True, smooth_sigma=1.0)),
        _Case(em, "particle", "multiotsu (4 phases)", ClassicalConfig("multiotsu", classes=4, smooth_sigma=1.0)),
        _Case(em, "layer + particle", "otsu", ClassicalConfig("otsu", per_slice=True, smooth_sigma=1.0)),
    )


_UNION_TARGETS = ("all structures", "layer + particle")


def _target(phantom: Phantom, target: str) -> tuple[np.ndarray, np.ndarray]:
    """Ground-truth (mask, instances) for a target name."""
    mask = phantom.semantic > 0 if target in _UNION_TARGETS else phantom.mask(target)
    return mask, np.where(mask, phantom.instances, 0)


def _markdown_table(rows: tuple[QuickstartRow, ...]) -> str:
    lines = [
        "| phantom | target | method | Dice | IoU | precision | recall | instance F1@0.5 | time (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        f1 = "-" if r.f1_50 is None else f"{r.f1_50:.3f}"
        lines.append(
            f"| {r.phantom} | {r.target} | {r.method} | {r.dice:.3f} | {r.iou:.3f} | {r.precision:.3f} | "
            f"{r.recall:.3f} | {f1} | {r.seconds:.2f} |"
        )
    return "\n".join(lines)


def run_quickstart(
    out_dir: str | os.PathLike[str],
    *,
    seed: int = 0,
    overwrite: bool = False,
    budget: str | QuickstartBudget = "full",
    pretrain_steps: int | None = None,
    finetune: bool = True,
    progress: ProgressCallback | bool | None = None,
) -> QuickstartResult:
    """Make two phantoms, adapt their intensities, segment them classically, evaluate, optionally pretrain briefly on
    captioned phantoms (``pretrain_steps``, default the budget's, 0 = skip), fine-tune 3-shot segmentation from that
    model (else from the budget's shipped backbone) and from scratch, predict an unseen phantom (``finetune``) and
    write a report folder. ``budget``: how much is computed, a name of :data:`BUDGETS` or a QuickstartBudget."""
    start = time.perf_counter()
    plan = quickstart_budget(budget)
    if pretrain_steps is None:
        pretrain_steps = plan.pretrain_steps
    elif pretrain_steps < 0:
        raise InvalidInputError(f"pretrain_steps: expected an integer >= 0 (0 = skip), got {pretrain_steps!r}")
    phantoms = {
        "lightsheet": lightsheet_phantom(plan.lightsheet_shape, seed=seed),
        "em": em_stack_phantom(plan.em_shape, seed=seed),
    }
    cases = _cases()
    rows: list[QuickstartRow] = []
    best: dict[str, tuple[float, str, str, np.ndarray]] = {}  # phantom -> (dice, method, target, mask)
    out = Path(out_dir)
    stages = len(cases) + 2 + (pretrain_steps > 0) + finetune
    with atomic_output(out, overwrite=overwrite) as tmp, make_progress(progress, stages, "quickstart") as step:
        tmp.mkdir()
        adapted: dict[str, np.ndarray] = {}
        for name, ph in phantoms.items():
            meta = ImageMetadata.for_array(ph.image, spacing=ph.spacing, unit=ph.unit, source=f"phantom:{ph.kind}")
            write_image(tmp / f"{name}_raw.ome.tif", ph.image, meta)
            gt_meta = meta.replace(dtype=str(ph.semantic.dtype))
            write_image(tmp / f"{name}_gt_semantic.tif", ph.semantic, gt_meta, labels=True)
            profile = fit_profile(ph.image, low_percentile=1.0, high_percentile=99.8, spacing=ph.spacing)
            profile.save(tmp / f"{name}_intensity_profile.json")
            adapted[name] = np.asarray(apply_profile(ph.image, profile))
        step(1)
        for case in cases:
            ph = phantoms[case.phantom]
            gt_mask, gt_inst = _target(ph, case.target)
            t0 = time.perf_counter()
            result = segment_classical(adapted[case.phantom], case.config, instances=True)
            seconds = time.perf_counter() - t0
            s = evaluate_segmentation(result.mask, gt_mask).semantic
            f1 = None
            # Instance scores only where the whole target is made of instances (not for a phase like "layer").
            if result.labels is not None and gt_mask.any() and (gt_inst[gt_mask] > 0).all():
                f1 = float(instance_scores(result.labels, gt_inst).to_dict()["f1_50"])
            rows.append(
                QuickstartRow(case.phantom, case.target, case.method, s.dice, s.iou, s.precision, s.recall, f1, seconds)
            )
            if case.phantom not in best or s.dice > best[case.phantom][0]:
                best[case.phantom] = (s.dice, case.method, case.target, result.mask)
            logger.info("%s / %s / %s: Dice %.3f", case.phantom, case.target, case.method, s.dice)
            step(1, f"{case.phantom}: {case.method}")
        figures = []
        for name, ph in phantoms.items():
            dice, method, target, mask = best[name]
            gt_mask, _ = _target(ph, target)
            z = int(np.argmax(gt_mask.sum(axis=(1, 2))))
            fig = save_overlay(
                tmp / f"{name}_overlay.png",
                ph.image[z],
                {f"ground truth: {target}": gt_mask[z], f"{method} (Dice {dice:.3f})": mask[z]},
                title=f"{name} phantom, slice z={z}",
            )
            figures.append(fig.name)
            classes = save_label_overlay(
                tmp / f"{name}_classes.png", ph.image, ph.semantic, spacing=ph.spacing, unit=ph.unit,
                class_names=dict(enumerate(ph.class_names, 1)), title=f"{name} phantom: ground-truth classes",
            )  # fmt: skip
            figures.append(classes.name)
            write_image(
                tmp / f"{name}_best_{method.split()[0]}.tif",
                mask.astype(np.uint8),
                ImageMetadata.for_array(mask, spacing=ph.spacing, unit=ph.unit),
                labels=True,
            )
        step(1)
        pretrain_section, finetune_section = "", ""
        pretrained, label = (
            (resolve_model_dir(plan.init), f"fine-tuned from the shipped {plan.init}") if plan.init else (None, "")
        )
        if pretrain_steps > 0:
            step(0, f"pretraining {plan.model} for {pretrain_steps} steps")
            stage = sub_progress(progress, "pretraining")
            summary = pretrain_on_phantoms(
                tmp / "pretrain", seed=seed, steps=pretrain_steps, model=plan.model, shape=plan.pretrain_shape,
                progress=stage,
            )  # fmt: skip
            pretrain_section = pretrain_markdown(summary, "pretrain/run/loss_curves.png")
            pretrained, label = summary.model_dir, f"fine-tuned from the {pretrain_steps}-step phantom pretraining"
            step(1)
        if finetune:
            step(0, "3-shot fine-tuning (pretrained and scratch) and prediction")
            tuned = finetune_on_phantoms(
                tmp / "finetune", pretrained, pretrained_label=label, seed=seed, model=plan.model,
                shape=plan.finetune_shape, epochs=plan.finetune_epochs,
                steps_per_epoch=plan.finetune_steps_per_epoch, progress=progress,
            )  # fmt: skip
            finetune_section = finetune_markdown(tuned, "finetune/finetune_overlay.png")
            step(1)
        table = _markdown_table(tuple(rows))
        elapsed = time.perf_counter() - start
        report = _report_markdown(phantoms, table, figures, seed, elapsed, pretrain_section, finetune_section)
        (tmp / "report.md").write_text(report)
        (tmp / "metrics.json").write_text(json.dumps([asdict(r) for r in rows], indent=2) + "\n")
        record = RunRecord(
            command="quickstart",
            parameters={
                "budget": budget if isinstance(budget, str) else "custom",
                **asdict(plan),
                "pretrain_steps": pretrain_steps,
                "finetune": finetune,
                "cases": [str(c) for c in cases],
            },
            seed=seed,
        )
        (tmp / "run.fmscope.json").write_text(record.to_json() + "\n")
    return QuickstartResult(out, out / "report.md", tuple(rows), table)


def _report_markdown(
    phantoms: dict[str, Phantom],
    table: str,
    figures: list[str],
    seed: int,
    elapsed: float,
    pretrain_section: str,
    finetune_section: str,
) -> str:
    lines = ["# fmscope quickstart report", ""]
    lines.append(
        "Synthetic phantoms with exact ground truth, adapted with a recorded intensity profile (1st-99.8th "
        "percentile to [0, 1]) and segmented with the classical baselines (global thresholds, local threshold, "
        "seeded watershed). These are the numbers every learned method in fmscope has to beat."
    )
    lines.append("")
    for name, ph in phantoms.items():
        lines.append(
            f"- **{name}**: {ph.image.shape} {ph.image.dtype}, classes {', '.join(ph.class_names)}. {ph.caption}"
        )
    lines += ["", "## Scores", "", table, "", "## Overlays (best Dice per phantom)", ""]
    lines += [f"![{f}]({f})" for f in figures]
    if pretrain_section:
        lines += ["", "## Pretraining (image + text)", "", pretrain_section]
    if finetune_section:
        lines += ["", "## Few-shot fine-tuning and prediction", "", finetune_section]
    lines += ["", f"Seed {seed}; total time {elapsed:.1f} s. Run record: `run.fmscope.json`.", ""]
    return "\n".join(lines)
