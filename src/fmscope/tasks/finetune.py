"""Few-shot fine-tuning: a registered task (:mod:`fmscope.tasks.registry`) plus a backbone, stepped by the training
engine (:class:`fmscope.engine.trainer.Trainer`), pretrained or from scratch.

Pretrained and scratch runs share this code path; only the initial weights differ (and a pretrained encoder is frozen
for ``freeze_epochs`` and then trained at ``encoder_lr_factor`` times the learning rate). Each epoch is
``steps_per_epoch`` AdamW steps on random (augmented) patches drawn as the task says, then a validation on the whole
validation volumes (sliding window for dense tasks); the best model by the validation score is kept and training
stops after ``patience`` epochs without improvement. The run folder holds ``config.yaml``, ``metrics.csv`` (per
epoch), ``curves.png`` (loss and validation score per epoch), ``checkpoints/`` (to resume), the best ``model/`` (a
task model folder) and ``summary.json``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from fmscope.config import save_config, to_dict
from fmscope.data.labelled import LabelledSet, LabelMapping, check_train_val
from fmscope.engine import MetricLogger, latest_checkpoint
from fmscope.engine.distributed import rank_and_world
from fmscope.engine.logs import read_metrics
from fmscope.engine.plots import plot_training_curves
from fmscope.engine.run_folder import run_folder
from fmscope.engine.trainer import Held, Hooks, LoopConfig, Trainer
from fmscope.errors import InvalidInputError
from fmscope.models.serialization import read_model_config
from fmscope.models.shipped import resolve_model_dir
from fmscope.tasks.base import validate
from fmscope.tasks.config import FinetuneConfig
from fmscope.tasks.model import TaskModel, TaskSpec, describe_init, init_backbone, save_task_model
from fmscope.tasks.registry import get_task
from fmscope.utils.atomic import atomic_output
from fmscope.utils.device import resolve_device
from fmscope.utils.progress import ProgressCallback

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FinetuneResult:
    """Where the run went and how it ended: best validation score (Dice, macro accuracy or SSIM) and its epoch."""

    out_dir: Path
    model_dir: Path
    best_score: float
    best_epoch: int
    epochs_run: int
    init_report: str


def finetune(
    config: FinetuneConfig,
    train: LabelledSet,
    val: LabelledSet,
    out: str | Path,
    *,
    init: str | Path = "scratch",
    mapping: LabelMapping | None = None,
    overwrite: bool = False,
    resume: bool = False,
    progress: ProgressCallback | bool | None = None,
) -> FinetuneResult:
    """Fine-tune a task model on ``train`` (early stopping on ``val``) and write the run folder ``out``.

    A checkpoint is written after every epoch (``checkpoints/``, the newest two kept); ``resume=True`` continues a run
    that was stopped or killed from its last checkpoint, and ends with the weights and metrics of the uninterrupted
    run. A resume with another task, model, initialisation, data or setting (``epochs``, ``patience`` and ``device``
    aside) is refused, naming what differs.
    """
    check_train_val(train, val)
    task = get_task(config.task)
    if train.task != task.layout:
        raise InvalidInputError(f"train: a {train.task} set cannot train the {task.name} task")
    device = resolve_device(config.device)
    if resume and latest_checkpoint(Path(out) / "checkpoints") is None:
        raise InvalidInputError(f"--resume: no checkpoint found in '{Path(out) / 'checkpoints'}'")
    rank, world = rank_and_world()
    if rank != 0:  # under torchrun rank 0 alone owns the run folder and writes
        return _finetune(config, train, val, Path(out), init, mapping, device, resume, progress, rank, world)
    with run_folder(Path(out), overwrite=overwrite, results=RESULTS, interrupted=_kept, resume=resume,
                    hint="--overwrite or --resume") as out_dir:  # fmt: skip
        return _finetune(config, train, val, out_dir, init, mapping, device, resume, progress, rank, world)


RESULTS = ("checkpoints", "model")
#: settings that may change on --resume (the others must match the checkpoint's)
RESUMABLE_CHANGES = ("epochs", "patience", "device")


def _kept(out: Path) -> str:
    """What an interrupted fine-tuning kept: the best model so far and the checkpoint to resume from, or nothing
    (the folder is then removed)."""
    if not (out / "model" / "config.json").is_file():
        return "no model was saved yet; rerun to start over"
    epoch = read_model_config(out / "model")[1]["provenance"]["extra"]["finetune"]["epoch"]
    latest = latest_checkpoint(out / "checkpoints")
    again = "" if latest is None else f"resume with --resume (from {latest.name}) or "
    return f"the best model so far (epoch {epoch}) is in '{out / 'model'}'; {again}rerun with --overwrite to start over"


def _digest(labelled: LabelledSet) -> str:
    """A short description of a labelled set that changes with its files or classes (for --resume; the paths, not
    the contents, are hashed)."""
    names = json.dumps([[i.image, i.label, i.class_name, i.degraded, i.z_index] for i in labelled.items])
    return f"{len(labelled.items)} items, sha256 {hashlib.sha256(names.encode()).hexdigest()[:12]}"


def _signature(config: FinetuneConfig, train: LabelledSet, val: LabelledSet, init: str | Path) -> dict[str, Any]:
    settings = {k: v for k, v in to_dict(config).items() if k not in RESUMABLE_CHANGES}
    where = "scratch" if str(init) == "scratch" else str(resolve_model_dir(init).resolve())
    return {"init": where, **settings, "train": _digest(train), "val": _digest(val)}


def _finetune(
    config: FinetuneConfig,
    train: LabelledSet,
    val: LabelledSet,
    out_dir: Path,
    init: str | Path,
    mapping: LabelMapping | None,
    device: torch.device,
    resume: bool,
    progress: ProgressCallback | bool | None,
    rank: int = 0,
    world: int = 1,
) -> FinetuneResult:
    """The run in ``out_dir``; under torchrun every rank draws the whole batch of ``world * batch_size`` patches from
    the same seeded sampler and trains on its slice (gradients averaged by the trainer), and only rank 0 writes."""
    task = get_task(config.task)
    torch.manual_seed(config.seed)
    classes = task.model_classes(train.classes)
    train_samples, val_samples = (
        task.load_samples(
            labelled.items,
            classes,
            low_percentile=config.low_percentile,
            high_percentile=config.high_percentile,
            mapping=mapping,
            degradation=config.degradation,
            seed=config.seed + offset,
        )  # fmt: skip
        for labelled, offset in ((train, 0), (val, 1))
    )
    dims = {s.image.ndim for s in train_samples + val_samples}
    if len(dims) != 1:
        raise InvalidInputError(f"train, val: expected all 2D or all 3D images, got a mix ({sorted(dims)} dimensions)")
    backbone, report = init_backbone(
        config.model, init, parts=config.init_parts, spatial_dims=dims.pop(), patch_size=config.patch_size
    )
    spec = TaskSpec(task.name, classes, config.pooling, config.low_percentile, config.high_percentile)
    model = TaskModel(backbone, spec).to(device)
    size = backbone.config.patch_size
    pretrained = report is not None
    encoder, other = model.encoder_parameters(), model.other_parameters()
    encoder_lr = config.lr * (config.encoder_lr_factor if pretrained else 1.0)
    optimiser = torch.optim.AdamW(
        [{"params": other, "lr": config.lr}, {"params": encoder, "lr": encoder_lr}], weight_decay=config.weight_decay
    )
    loss_fn = task.make_loss(config, model, train_samples)
    sampler = Held(np.random.default_rng(config.seed))
    augment = Held(task.augmentation(config, backbone.config.spatial_dims))
    spe, model_dir = config.steps_per_epoch, out_dir / "model"
    loop = LoopConfig(steps=config.epochs * spe, eval_every=spe, patience=config.patience, keep_last=2)
    trainer = Trainer(
        model, optimiser, loop, folder=out_dir / "checkpoints", state={"sampler": sampler, "augment": augment},
        signature=_signature(config, train, val, init), device=device, world=world, rank=rank,
    )  # fmt: skip
    if resume:
        trainer.resume()
    metrics = None
    if rank == 0:
        save_config(config, out_dir / "config.yaml")
        metrics = MetricLogger(out_dir, resume_step=trainer.loop.step // spe if resume else None, tensorboard=False)
    whole = replace(config, batch_size=config.batch_size * world)
    mine = slice(rank * config.batch_size, (rank + 1) * config.batch_size)
    started = [time.perf_counter()]

    def frozen(step: int) -> bool:
        return pretrained and step // spe < config.freeze_epochs

    def before_step(step: int) -> None:
        if step % spe == 0:
            started[0] = time.perf_counter()
        if encoder and encoder[0].requires_grad == frozen(step):  # an epoch that (un)freezes the encoder
            for p in encoder:
                p.requires_grad_(not frozen(step))

    def loss_step(step: int) -> tuple[Tensor, dict[str, float]]:
        batch = task.make_batch(train_samples, whole, size, sampler.obj, augment.obj)
        batch = {k: v[mine].to(device) for k, v in batch.items()}
        return loss_fn(model(batch["image"]), batch), {}

    def on_eval(step: int, scores: dict[str, float], window: list[dict[str, float]], improved: bool) -> None:
        epoch = step // spe
        row = {"epoch": epoch, "loss": float(np.mean([w["loss"] for w in window])),
               "encoder_frozen": float(frozen(step)), "seconds": time.perf_counter() - started[0],
               **{f"val_{k}": v for k, v in scores.items()}}  # fmt: skip
        if metrics is None:
            return
        metrics.log(epoch, row)
        if improved:
            save_task_model(model, model_dir, extra={"finetune": {"epoch": epoch, "init": str(init)}}, overwrite=True)

    hooks = Hooks(
        before_step=before_step, on_eval=on_eval,
        counts_for_patience=lambda step: not frozen(step),  # patience counts from the unfreezing of the encoder
    )  # fmt: skip
    state = trainer.fit(
        loss_step, evaluate=lambda step: validate(task, model, val_samples, config.overlap, device), hooks=hooks,
        progress=progress, description=f"finetune {task.name}",
    )  # fmt: skip
    best, best_epoch, epochs_run = state.best, state.best_step // spe, -(-state.step // spe)
    init_report = describe_init(report, init, config.init_parts)
    if metrics is None:
        return FinetuneResult(out_dir, model_dir, float(best), best_epoch, epochs_run, init_report)
    metrics.close()
    plot_training_curves(
        read_metrics(metrics.path), out_dir / "curves.png", keys=("loss",), extra=("val_score",), smooth=1,
        xlabel="epoch", names={"val_score": f"validation {task.score_name}"},
        title=f"fine-tuning {task.name} ({out_dir.name})",
    )  # fmt: skip
    summary = {"best_score": best, "best_epoch": best_epoch, "epochs_run": epochs_run, "init": str(init),
               "init_report": init_report,
               "init_keys": "" if report is None else report.summary()}  # fmt: skip
    with atomic_output(out_dir / "summary.json", overwrite=True) as tmp:
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
    return FinetuneResult(out_dir, model_dir, float(best), best_epoch, epochs_run, init_report)
