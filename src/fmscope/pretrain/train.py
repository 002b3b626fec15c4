"""The pretraining loop: data order, accumulation, precision, clipping, NaN guard, EMA, logs, checkpoints, resume.

Resuming restores the method (student, teacher, heads, queues, centre, temperature), the optimiser, the scheduler,
the step, all RNG states and the data position, so a resumed run reproduces the uninterrupted one exactly (tested).
Under ``torchrun`` (WORLD_SIZE > 1) every process takes its own slice of each batch and gradients are averaged with
``all_reduce`` before the optimiser step; only rank 0 writes logs, checkpoints and the model.
"""

from __future__ import annotations

import logging
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fmscope.config import save_config
from fmscope.data import PatchDataset, load_corpus, split_by_source
from fmscope.data.augment import build_augmentation
from fmscope.data.masking import MaskingCollate
from fmscope.engine import MetricLogger, latest_checkpoint
from fmscope.engine.distributed import rank_and_world
from fmscope.engine.run_folder import run_folder
from fmscope.engine.schedule import warmup_cosine
from fmscope.engine.trainer import Hooks, Trainer, loop_config
from fmscope.errors import InvalidInputError
from fmscope.pretrain.config import PretrainConfig
from fmscope.pretrain.ema import cosine_momentum
from fmscope.pretrain.export import export_pretrained
from fmscope.pretrain.method import METHOD_VERSION, MultimodalPretrainer
from fmscope.utils.device import resolve_device
from fmscope.utils.progress import ProgressCallback

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PretrainResult:
    out_dir: Path
    model_dir: Path | None
    steps_done: int
    last: dict[str, float]


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class _DataOrder:
    """A seeded permutation per epoch and a position counter (saved in checkpoints)."""

    def __init__(self, dataset: PatchDataset, seed: int, consumed: int = 0) -> None:
        self.dataset, self.seed, self.consumed = dataset, seed, consumed
        self._epoch = -1
        self._order: list[int] = []

    def state_dict(self) -> dict[str, Any]:
        return {"consumed": self.consumed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.consumed = int(state["consumed"])

    def take(self, n: int) -> list[int]:
        out = []
        for _ in range(n):
            epoch, offset = divmod(self.consumed, len(self.dataset))
            if epoch != self._epoch:
                self.dataset.set_epoch(epoch)
                g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
                self._order = torch.randperm(len(self.dataset), generator=g).tolist()
                self._epoch = epoch
            out.append(self._order[offset])
            self.consumed += 1
        return out


RESULTS = ("checkpoints", "model")
#: the pretraining config keys behind the loop settings (errors name these)
LOOP_NAMES = {"steps": "train.steps", "accumulation": "optim.accumulation", "grad_clip": "optim.grad_clip",
              "checkpoint_every": "train.checkpoint_every", "keep_last": "train.keep_checkpoints"}  # fmt: skip


def _resume_hint(out: Path, every: int) -> str:
    """What to tell after Ctrl-C / SIGTERM: the step to resume from, or that nothing was saved yet."""
    latest = latest_checkpoint(out / "checkpoints")
    if latest is None:
        return f"no checkpoint was saved yet (one every train.checkpoint_every={every} steps); rerun to start over"
    return f"resume with --resume (from step {int(latest.stem.split('_')[1])}, {latest})"


def build_dataset(config: PretrainConfig) -> PatchDataset:
    """The training patch dataset of ``config`` (captions required when a text term is on)."""
    if not config.data.path:
        raise InvalidInputError("data.path: no training data given (set data.path or pass --data)")
    manifest = load_corpus(config.data.path, allow_missing_captions=config.data.allow_missing_captions)
    if config.method.weights.uses_text and all(e.caption is None for e in manifest.entries):
        raise InvalidInputError(
            f"data.path: none of the {len(manifest)} volume(s) has a caption but a text loss term is on; add a "
            "captions.json, or set method.weights.align=0 and method.weights.clip=0 for image-only pretraining"
        )
    if config.data.val_fraction > 0:
        manifest, _ = split_by_source(manifest, config.data.val_fraction, seed=config.train.seed)
    transform = build_augmentation(config.augment, seed=config.train.seed) if config.data.augment else None
    return PatchDataset(
        manifest,
        config.data.patch_size,
        config.data.patches_per_volume,
        seed=config.train.seed,
        min_foreground=config.data.min_foreground,
        low_percentile=config.data.low_percentile,
        high_percentile=config.data.high_percentile,
        transform=transform,
    )


def pretrain(
    config: PretrainConfig,
    out_dir: str | os.PathLike[str],
    *,
    resume: bool = False,
    overwrite: bool = False,
    stop_after: int | None = None,
    progress: ProgressCallback | bool | None = True,
) -> PretrainResult:
    """Run (or resume) pretraining into ``out_dir``; ``stop_after`` ends after that many steps of this call."""
    out = Path(out_dir)
    rank, world = rank_and_world()
    if rank != 0:
        return _pretrain(config, out, rank, world, resume, stop_after, progress)
    if resume and latest_checkpoint(out / "checkpoints") is None:
        raise InvalidInputError(f"--resume: no checkpoint found in '{out / 'checkpoints'}'")
    every = config.train.checkpoint_every
    with run_folder(out, overwrite=overwrite, results=RESULTS, resume=resume, hint="--overwrite or --resume",
                    interrupted=lambda o: _resume_hint(o, every)):  # fmt: skip
        return _pretrain(config, out, rank, world, resume, stop_after, progress)


def _pretrain(
    config: PretrainConfig,
    out: Path,
    rank: int,
    world: int,
    resume: bool,
    stop_after: int | None,
    progress: ProgressCallback | bool | None,
) -> PretrainResult:
    device = resolve_device(config.train.device)
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)
    _seed_everything(config.train.seed)
    dataset = build_dataset(config)
    if world > 1 and config.method.weights.uses_text and any(e.caption is None for e in dataset.manifest.entries):
        # CLIP gathers every rank's image-text pairs: ranks with different numbers of captioned samples cannot
        raise InvalidInputError(
            "data.allow_missing_captions: a corpus with uncaptioned volumes trains the text terms in one process "
            "only; under torchrun caption every volume, or pretrain image-only (method.weights.align=0, clip=0)"
        )
    method = MultimodalPretrainer(config.method).to(device)
    opt_cfg = config.optim
    groups = method.optimiser_groups(opt_cfg.lr, opt_cfg.weight_decay)
    params = [p for g in groups for p in g["params"]]  # type: ignore[attr-defined]
    optimizer = torch.optim.AdamW(groups, lr=opt_cfg.lr, betas=opt_cfg.betas)
    total = config.train.steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, total, opt_cfg.warmup_steps, opt_cfg.min_lr_factor)
    )
    collate = MaskingCollate(config.masking)
    order = _DataOrder(dataset, config.train.seed)
    loop = loop_config(
        LOOP_NAMES, steps=total, accumulation=opt_cfg.accumulation, grad_clip=opt_cfg.grad_clip,
        bf16=device.type == "cuda" and config.train.precision in ("auto", "bf16"),
        checkpoint_every=config.train.checkpoint_every, keep_last=config.train.keep_checkpoints, loss_key=None,
        divergence_hint="lower optim.lr or check the data for NaN/Inf",
    )  # fmt: skip
    signature = {"model": config.method.model, "method": METHOD_VERSION}
    trainer = Trainer(
        method, optimizer, loop, scheduler=scheduler, folder=out / "checkpoints", parameters=params,
        state={"order": order}, signature=signature, world=world, rank=rank, device=device,
    )  # fmt: skip
    start = trainer.resume() if resume else 0
    if rank == 0:
        save_config(config, out / "config.yaml")
    metrics = MetricLogger(out, resume_step=start) if rank == 0 else None
    end = total if stop_after is None else min(total, start + stop_after)
    last: dict[str, float] = {}
    per_rank = config.train.batch_size

    def before_step(step: int) -> None:
        if method.text_encoder is not None:
            method.text_encoder.set_stage("top" if step >= config.train.text_warmup_steps else "frozen")  # type: ignore[operator]

    def loss_step(step: int) -> tuple[torch.Tensor, dict[str, float]]:
        indices = order.take(per_rank * world)[rank * per_rank : (rank + 1) * per_rank]
        collate.set_step(step)
        batch = collate([dataset[i] for i in indices])
        images = batch.images.to(device)
        masks = batch.masks.to(device) if batch.masks is not None else torch.zeros_like(images, dtype=torch.bool)
        terms = method(images, masks, batch.captions)
        return terms.total, terms.as_dict()

    def after_step(step: int) -> dict[str, float]:
        momentum = cosine_momentum(step, total, config.train.ema_base)
        method.update_teacher(momentum)
        return {"ema_momentum": momentum}

    def on_step(step: int, logs: dict[str, float]) -> None:
        logs["patches_per_s"] = per_rank * world * opt_cfg.accumulation / logs["seconds"]
        last.clear()
        last.update(logs)
        if metrics is not None and (step % config.train.log_every == 0 or step + 1 == end):
            metrics.log(step, logs)

    hooks = Hooks(before_step=before_step, after_step=after_step, on_step=on_step)
    trainer.fit(loss_step, hooks=hooks, stop_after=end - start, progress=progress, description="pretrain")
    if metrics is not None:
        metrics.close()
        from fmscope.engine.logs import read_metrics
        from fmscope.engine.plots import plot_training_curves

        plot_training_curves(read_metrics(metrics.path), out / "loss_curves.png", title=f"pretraining {out.name}")
    model_dir = None
    if rank == 0 and end == total:
        model_dir = export_pretrained(method, out / "model", config, steps=total, corpus=dataset.manifest)
    return PretrainResult(out, model_dir, end, last)
