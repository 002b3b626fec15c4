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
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from fmscope.config import save_config
from fmscope.data.augment import AugmentConfig, build_paired_augmentation
from fmscope.data.labelled import LabelledSet, LabelMapping, check_train_val
from fmscope.data.samples import Sample, centre_patch, load_samples, sample_patch
from fmscope.engine import MetricLogger
from fmscope.engine.logs import read_metrics
from fmscope.engine.plots import plot_training_curves
from fmscope.engine.run_folder import run_folder
from fmscope.errors import InvalidInputError
from fmscope.inference.predict import WindowConfig, sliding_window_predict
from fmscope.metrics import classification_scores, dice
from fmscope.models.serialization import read_model_config
from fmscope.pretrain.train import TrainingDivergedError
from fmscope.tasks.config import FinetuneConfig
from fmscope.tasks.model import TaskModel, TaskSpec, describe_init, init_backbone, save_task_model
from fmscope.tasks.restoration import deblur_loss, restoration_metrics
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


def _seg_loss(name: str, architecture: str) -> Any:
    from monai.losses import DiceCELoss, DiceFocalLoss

    if name == "auto":
        name = "dicefocal" if architecture == "unet" else "dicece"
    common: dict[str, Any] = {"to_onehot_y": True, "softmax": True, "include_background": False}
    if name == "dicefocal":
        return DiceFocalLoss(lambda_dice=0.5, lambda_focal=0.5, alpha=0.25, gamma=2.0, **common)
    if name == "dicece":
        return DiceCELoss(**common)
    return lambda logits, target: F.cross_entropy(logits, target[:, 0].long())


def _class_weights(samples: list[Sample], n_classes: int) -> Tensor:
    counts = np.bincount([int(s.class_index) for s in samples if s.class_index is not None], minlength=n_classes)
    weights = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / n_classes, 0.0)
    return torch.tensor(weights, dtype=torch.float32)


def _batch(
    samples: list[Sample], config: FinetuneConfig, size: tuple[int, ...], rng: np.random.Generator, augment: Any
) -> dict[str, Tensor]:
    images, labels, targets, classes = [], [], [], []
    for _ in range(config.batch_size):
        sample = samples[int(rng.integers(len(samples)))]
        patch = sample_patch(sample, size, rng, config.foreground_fraction)
        image = torch.from_numpy(np.ascontiguousarray(patch.image))[None]
        second = patch.label if patch.label is not None else patch.target
        other = None if second is None else torch.from_numpy(np.ascontiguousarray(second).astype(np.float32))[None]
        if augment is not None:
            if other is not None:
                out = augment({"image": image, "label": other})
                image, other = torch.as_tensor(out["image"]), torch.as_tensor(out["label"])
            else:
                image = torch.as_tensor(augment({"image": image, "label": image.clone()})["image"])
        images.append(image.float())
        if patch.label is not None and other is not None:
            labels.append(other.round().long())
        elif other is not None:
            targets.append(other.float())
        if patch.class_index is not None:
            classes.append(patch.class_index)
    batch = {"image": torch.stack(images)}
    if labels:
        batch["label"] = torch.stack(labels)
    if targets:
        batch["target"] = torch.stack(targets)
    if classes:
        batch["class"] = torch.tensor(classes)
    return batch


@torch.no_grad()
def validate(
    model: TaskModel, samples: list[Sample], size: tuple[int, ...], overlap: float, device: torch.device
) -> dict[str, float]:
    """Validation scores on whole samples: ``score`` is mean foreground Dice, macro accuracy or mean SSIM."""
    model.eval()
    task = model.spec.task
    if task == "classify":
        n = model.spec.n_outputs
        predicted, truth = [], []
        for s in samples:
            x = torch.from_numpy(centre_patch(s.image, size))[None, None].to(device)
            predicted.append(int(model(x).argmax(dim=1)))
            truth.append(int(s.class_index))  # type: ignore[arg-type]
        result = classification_scores(predicted, truth, labels=list(range(n)))
        recall = [row[c] / sum(row) for c, row in enumerate(result.confusion) if sum(row)]  # classes in validation
        return {"score": float(np.mean(recall)), "accuracy": result.accuracy}
    scores: dict[str, list[float]] = {}
    for s in samples:
        window = WindowConfig(window=size, overlap=overlap, batch_size=2)
        pred = sliding_window_predict(s.image, model.dense, window, out_channels=model.spec.n_outputs, device=device)
        if task == "segment":
            labels = pred.argmax(axis=0)
            for c in range(1, model.spec.n_outputs):
                scores.setdefault(f"dice_{model.spec.classes[c]}", []).append(dice(labels == c, s.label == c))
        else:
            for k, v in restoration_metrics(pred[0], s.target).items():  # type: ignore[arg-type]
                scores.setdefault(k, []).append(v)
    out = {k: float(np.mean(v)) for k, v in scores.items()}
    if task == "segment":
        out["score"] = float(np.mean([v for k, v in out.items() if k.startswith("dice_")]))
    else:
        out["score"] = out["ssim"]
    return out


def _augmentation(config: FinetuneConfig, spatial_dims: int) -> Any:
    """Paired augmentation for 3D patches; deblurring keeps flips and rotations only (an intensity change of the
    input alone, or nearest-neighbour resampling of the target, would corrupt the residual it learns)."""
    if not config.augment or spatial_dims != 3:
        return None
    if config.task == "deblur":
        still = AugmentConfig(affine_prob=0.0, noise_prob=0.0, smooth_prob=0.0, scale_prob=0.0, shift_prob=0.0)
        return build_paired_augmentation(still, seed=config.seed)
    return build_paired_augmentation(seed=config.seed)


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
    task = config.task
    if (task == "classify") != (train.task == "classify"):
        raise InvalidInputError(f"train: a {train.task} set cannot train the {task} task")
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
    task = config.task
    torch.manual_seed(config.seed)
    classes = () if task == "deblur" else train.classes
    load = {"low_percentile": config.low_percentile, "high_percentile": config.high_percentile, "mapping": mapping,
            "degradation": config.degradation, "seed": config.seed}  # fmt: skip
    train_samples = load_samples(train.items, task, classes, **load)  # type: ignore[arg-type]
    val_samples = load_samples(val.items, task, classes, **{**load, "seed": config.seed + 1})  # type: ignore[arg-type]
    dims = {s.image.ndim for s in train_samples + val_samples}
    if len(dims) != 1:
        raise InvalidInputError(f"train, val: expected all 2D or all 3D images, got a mix ({sorted(dims)} dimensions)")
    backbone, report = init_backbone(
        config.model, init, parts=config.init_parts, spatial_dims=dims.pop(), patch_size=config.patch_size
    )
    spec = TaskSpec(task, classes, config.pooling, config.low_percentile, config.high_percentile)
    model = TaskModel(backbone, spec).to(device)
    size = backbone.config.patch_size
    pretrained = report is not None
    encoder, other = model.encoder_parameters(), model.other_parameters()
    encoder_lr = config.lr * (config.encoder_lr_factor if pretrained else 1.0)
    optimiser = torch.optim.AdamW(
        [{"params": other, "lr": config.lr}, {"params": encoder, "lr": encoder_lr}], weight_decay=config.weight_decay
    )
    if task == "segment":
        loss_fn = _seg_loss(config.loss, backbone.config.architecture)
    elif task == "classify":
        class_weights = _class_weights(train_samples, len(classes)).to(device)
    augment = _augmentation(config, backbone.config.spatial_dims)
    rng = np.random.default_rng(config.seed)
    save_config(config, out_dir / "config.yaml")
    metrics = MetricLogger(out_dir, tensorboard=False)
    best, best_epoch, stale, epoch = -np.inf, -1, 0, 0
    model_dir = out_dir / "model"
    with make_progress(progress, config.epochs, f"finetune {task}") as advance:
        for epoch in range(config.epochs):
            frozen = pretrained and epoch < config.freeze_epochs
            for p in encoder:
                p.requires_grad_(not frozen)
            model.train()
            t0, losses = time.perf_counter(), []
            for _ in range(config.steps_per_epoch):
                batch = {k: v.to(device) for k, v in _batch(train_samples, config, size, rng, augment).items()}
                output = model(batch["image"])
                if task == "segment":
                    loss = loss_fn(output, batch["label"])
                elif task == "classify":
                    loss = F.cross_entropy(output, batch["class"], weight=class_weights)
                else:
                    loss = deblur_loss(output, batch["target"])[0]
                if not torch.isfinite(loss):
                    raise TrainingDivergedError(f"epoch {epoch}: the loss became {float(loss)} (try a lower lr)")
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                losses.append(float(loss.detach()))
            scores = validate(model, val_samples, size, config.overlap, device)
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
    score_name = {"segment": "mean Dice", "classify": "macro accuracy", "deblur": "SSIM"}[task]
    plot_training_curves(
        read_metrics(metrics.path), out_dir / "curves.png", keys=("loss",), extra=("val_score",), smooth=1,
        xlabel="epoch", names={"val_score": f"validation {score_name}"}, title=f"fine-tuning {task} ({out_dir.name})",
    )  # fmt: skip
    summary = {"best_score": best, "best_epoch": best_epoch, "epochs_run": epoch + 1, "init": str(init),
               "init_report": describe_init(report, init, config.init_parts),
               "init_keys": "" if report is None else report.summary()}  # fmt: skip
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return FinetuneResult(out_dir, model_dir, float(best), best_epoch, epoch + 1, summary["init_report"])  # type: ignore[arg-type]
