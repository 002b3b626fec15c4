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
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fmscope.config import save_config, to_dict
from fmscope.data import PatchDataset, load_manifest, split_by_source
from fmscope.data.augment import build_augmentation
from fmscope.data.masking import MaskingCollate
from fmscope.engine import MetricLogger, latest_checkpoint, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from fmscope.engine.run_folder import run_folder
from fmscope.engine.schedule import warmup_cosine
from fmscope.errors import FmscopeError, InvalidInputError
from fmscope.models import compare_state_dict
from fmscope.pretrain.config import PretrainConfig
from fmscope.pretrain.ema import cosine_momentum
from fmscope.pretrain.export import export_pretrained
from fmscope.pretrain.method import MultimodalPretrainer
from fmscope.utils.progress import ProgressCallback, make_progress

logger = logging.getLogger(__name__)


class TrainingDivergedError(FmscopeError, RuntimeError):
    """A loss became NaN or infinite; training stops with the step and the terms."""


@dataclass(frozen=True)
class PretrainResult:
    out_dir: Path
    model_dir: Path | None
    steps_done: int
    last: dict[str, float]


def _distributed() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend=backend)
    rank = torch.distributed.get_rank() if world > 1 else 0
    return rank, world


def _device(name: str, rank: int) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            local = int(os.environ.get("LOCAL_RANK", rank))
            torch.cuda.set_device(local)
            return torch.device("cuda", local)
        return torch.device("cpu")
    return torch.device(name)


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
    manifest = load_manifest(config.data.path, allow_missing_captions=config.data.allow_missing_captions)
    if config.method.weights.uses_text:
        missing = [Path(e.path).name for e in manifest.entries if e.caption is None]
        if missing:
            raise InvalidInputError(
                f"{len(missing)} volume(s) have no caption but a text loss term is on: {missing[:5]}; "
                "set method.weights.align=0 and method.weights.clip=0 for image-only pretraining"
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
    rank, world = _distributed()
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
    device = _device(config.train.device, rank)
    _seed_everything(config.train.seed)
    dataset = build_dataset(config)
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
    start = 0
    if resume:
        ckpt = load_checkpoint(latest_checkpoint(out / "checkpoints") or out, map_location=device)
        saved_model = ckpt.payload.get("config", {}).get("method", {}).get("model")
        if saved_model != config.method.model:
            raise InvalidInputError(
                f"--resume: checkpoint '{ckpt.path}' is for model '{saved_model}', the config asks for "
                f"'{config.method.model}'"
            )
        report = compare_state_dict(method, ckpt.payload["method"])
        if not report.ok:
            raise InvalidInputError(f"--resume: checkpoint '{ckpt.path}' does not fit this config: {report.summary()}")
        method.load_state_dict(ckpt.payload["method"])
        optimizer.load_state_dict(ckpt.payload["optimizer"])
        scheduler.load_state_dict(ckpt.payload["scheduler"])
        set_rng_state(ckpt.payload["rng"])
        order.consumed = int(ckpt.payload["consumed"])
        start = ckpt.step
        logger.info("resumed from %s at step %d", ckpt.path, start)
    if rank == 0:
        save_config(config, out / "config.yaml")
    metrics = MetricLogger(out, resume_step=start) if rank == 0 else None
    use_bf16 = device.type == "cuda" and config.train.precision in ("auto", "bf16")
    end = total if stop_after is None else min(total, start + stop_after)
    last: dict[str, float] = {}
    per_rank = config.train.batch_size
    with make_progress(progress if rank == 0 else None, end - start, "pretrain") as advance:
        for step in range(start, end):
            t0 = time.perf_counter()
            if method.text_encoder is not None:
                method.text_encoder.set_stage("top" if step >= config.train.text_warmup_steps else "frozen")  # type: ignore[operator]
            method.train()
            sums: dict[str, float] = {}
            for _ in range(opt_cfg.accumulation):
                indices = order.take(per_rank * world)[rank * per_rank : (rank + 1) * per_rank]
                collate.set_step(step)
                batch = collate([dataset[i] for i in indices])
                images = batch.images.to(device)
                masks = (
                    batch.masks.to(device) if batch.masks is not None else torch.zeros_like(images, dtype=torch.bool)
                )
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                    terms = method(images, masks, batch.captions)
                if not torch.isfinite(terms.total):
                    raise TrainingDivergedError(
                        f"loss is {float(terms.total.detach())} at step {step} (terms {terms.as_dict()}); "
                        "lower optim.lr or check the data for NaN/Inf"
                    )
                (terms.total / opt_cfg.accumulation).backward()
                for key, value in terms.as_dict().items():
                    sums[key] = sums.get(key, 0.0) + value / opt_cfg.accumulation
            if world > 1:
                for p in params:
                    if p.grad is not None:
                        torch.distributed.all_reduce(p.grad)
                        p.grad /= world
            grads = [p for p in params if p.grad is not None]
            grad_norm = float(torch.nn.utils.clip_grad_norm_(grads, opt_cfg.grad_clip)) if grads else 0.0
            lr = optimizer.param_groups[0]["lr"]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            momentum = cosine_momentum(step, total, config.train.ema_base)
            method.update_teacher(momentum)
            seconds = time.perf_counter() - t0
            last = {**sums, "lr": lr, "grad_norm": grad_norm, "ema_momentum": momentum, "seconds": seconds}
            last["patches_per_s"] = per_rank * world * opt_cfg.accumulation / seconds
            if metrics is not None and (step % config.train.log_every == 0 or step + 1 == end):
                metrics.log(step, last)
            done = step + 1
            if rank == 0 and (done % config.train.checkpoint_every == 0 or done == end):
                payload: dict[str, Any] = {
                    "method": method.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "rng": rng_state(),
                    "consumed": order.consumed,
                    "config": to_dict(config),
                }
                save_checkpoint(out / "checkpoints", done, payload, keep_last=config.train.keep_checkpoints)
            advance(1)
    if metrics is not None:
        metrics.close()
        from fmscope.engine.logs import read_metrics
        from fmscope.engine.plots import plot_training_curves

        plot_training_curves(read_metrics(metrics.path), out / "loss_curves.png", title=f"pretraining {out.name}")
    model_dir = None
    if rank == 0 and end == total:
        model_dir = export_pretrained(method, out / "model", config, steps=total)
    return PretrainResult(out, model_dir, end, last)
