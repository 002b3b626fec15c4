"""Few-shot fine-tuning: one loop for segmentation, classification and deblurring, pretrained or from scratch.

Pretrained and scratch runs share this code path; only the initial weights differ (and a pretrained encoder is frozen
for ``freeze_epochs`` and then trained at ``encoder_lr_factor`` times the learning rate). Each epoch is
``steps_per_epoch`` AdamW steps on random (augmented) patches, then a validation on the whole validation volumes
(sliding window for dense tasks); the best model by the validation score is kept and training stops after
``patience`` epochs without improvement. The run folder holds ``config.yaml``, ``metrics.csv`` (per epoch),
``curves.png`` (loss and validation score per epoch), the best ``model/`` (a task model folder) and ``summary.json``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fmscope.config import save_config
from fmscope.data.labelled import LabelledSet, LabelMapping, check_train_val
from fmscope.engine import MetricLogger
from fmscope.engine.logs import read_metrics
from fmscope.engine.plots import plot_training_curves
from fmscope.engine.run_folder import run_folder
from fmscope.errors import InvalidInputError
from fmscope.models.serialization import read_model_config
from fmscope.pretrain.train import TrainingDivergedError
from fmscope.tasks.base import validate
from fmscope.tasks.config import FinetuneConfig
from fmscope.tasks.model import TaskModel, TaskSpec, describe_init, init_backbone, save_task_model
from fmscope.tasks.registry import get_task
from fmscope.utils.progress import ProgressCallback, make_progress

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


def resolve_device(name: str) -> torch.device:
    """``'auto'`` (CUDA when available), ``'cpu'`` or ``'cuda'`` (an error without a CUDA device)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError("device: 'cuda' requested but no CUDA device is available")
    return torch.device(name)


def finetune(
    config: FinetuneConfig,
    train: LabelledSet,
    val: LabelledSet,
    out: str | Path,
    *,
    init: str | Path = "scratch",
    mapping: LabelMapping | None = None,
    overwrite: bool = False,
    progress: ProgressCallback | bool | None = None,
) -> FinetuneResult:
    """Fine-tune a task model on ``train`` (early stopping on ``val``) and write the run folder ``out``."""
    check_train_val(train, val)
    task = get_task(config.task)
    if train.task != task.layout:
        raise InvalidInputError(f"train: a {train.task} set cannot train the {task.name} task")
    device = resolve_device(config.device)
    with run_folder(Path(out), overwrite=overwrite, results=RESULTS, interrupted=_kept) as out_dir:
        return _finetune(config, train, val, out_dir, init, mapping, device, progress)


RESULTS = ("model",)


def _kept(out: Path) -> str:
    """What an interrupted fine-tuning kept: the best model so far, or nothing (the folder is then removed)."""
    if not (out / "model" / "config.json").is_file():
        return "no model was saved yet; rerun to start over"
    epoch = read_model_config(out / "model")[1]["provenance"]["extra"]["finetune"]["epoch"]
    return f"the best model so far (epoch {epoch}) is in '{out / 'model'}'; rerun with --overwrite to start over"


def _finetune(
    config: FinetuneConfig,
    train: LabelledSet,
    val: LabelledSet,
    out_dir: Path,
    init: str | Path,
    mapping: LabelMapping | None,
    device: torch.device,
    progress: ProgressCallback | bool | None,
) -> FinetuneResult:
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
    augment = task.augmentation(config, backbone.config.spatial_dims)
    rng = np.random.default_rng(config.seed)
    save_config(config, out_dir / "config.yaml")
    metrics = MetricLogger(out_dir, tensorboard=False)
    best, best_epoch, stale, epoch = -np.inf, -1, 0, 0
    model_dir = out_dir / "model"
    with make_progress(progress, config.epochs, f"finetune {task.name}") as advance:
        for epoch in range(config.epochs):
            frozen = pretrained and epoch < config.freeze_epochs
            for p in encoder:
                p.requires_grad_(not frozen)
            model.train()
            t0, losses = time.perf_counter(), []
            for _ in range(config.steps_per_epoch):
                batch = {k: v.to(device) for k, v in task.make_batch(train_samples, config, size, rng, augment).items()}
                loss = loss_fn(model(batch["image"]), batch)
                if not torch.isfinite(loss):
                    raise TrainingDivergedError(f"epoch {epoch}: the loss became {float(loss)} (try a lower lr)")
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                losses.append(float(loss.detach()))
            scores = validate(task, model, val_samples, config.overlap, device)
            row = {"epoch": epoch, "loss": float(np.mean(losses)), "encoder_frozen": float(frozen),
                   "seconds": time.perf_counter() - t0, **{f"val_{k}": v for k, v in scores.items()}}  # fmt: skip
            metrics.log(epoch, row)
            if scores["score"] > best:
                best, best_epoch, stale = scores["score"], epoch, 0
                save_task_model(
                    model, model_dir, extra={"finetune": {"epoch": epoch, "init": str(init)}}, overwrite=True
                )
            elif not frozen:  # patience counts from the unfreezing: a frozen encoder is not the model being selected
                stale += 1
            advance(1)
            if stale >= config.patience:
                logger.info("early stop at epoch %d: no better validation score for %d epochs", epoch, stale)
                break
    metrics.close()
    plot_training_curves(
        read_metrics(metrics.path), out_dir / "curves.png", keys=("loss",), extra=("val_score",), smooth=1,
        xlabel="epoch", names={"val_score": f"validation {task.score_name}"},
        title=f"fine-tuning {task.name} ({out_dir.name})",
    )  # fmt: skip
    summary = {"best_score": best, "best_epoch": best_epoch, "epochs_run": epoch + 1, "init": str(init),
               "init_report": describe_init(report, init, config.init_parts),
               "init_keys": "" if report is None else report.summary()}  # fmt: skip
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return FinetuneResult(out_dir, model_dir, float(best), best_epoch, epoch + 1, summary["init_report"])  # type: ignore[arg-type]
