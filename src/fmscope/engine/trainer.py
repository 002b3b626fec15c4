"""The one training loop: pretraining, fine-tuning and the ResNet-18 baseline all step through :class:`Trainer`.

Each optimiser step runs ``accumulation`` micro-steps (the caller's ``loss_step`` returns the loss of one micro-batch
and the terms to log), under bf16 autocast on CUDA when asked, with a NaN/Inf guard (:class:`TrainingDivergedError`
naming the step and the terms), gradient averaging across ``torchrun`` processes, clipping, the optimiser and
learning-rate schedule. Every ``eval_every`` steps the caller's ``evaluate`` gives validation scores: the best one so
far is kept (``on_best``, e.g. to save the model), training stops after ``patience`` evaluations without improvement.

Checkpoints (``folder/step_XXXXXXXX.pt``, the newest ``keep_last`` kept, the best-scoring one also as ``best.pt``,
written atomically) hold the model,
optimiser, scheduler, every RNG state, the loop's own state (step, best score, patience counter, the step logs since
the last evaluation) and the caller's ``state`` objects (data order, sampler generators, augmentation states), so a
resumed run continues exactly where the checkpoint was taken and ends with the weights and metrics of the
uninterrupted run. A checkpoint that cannot be read is skipped for the previous one; one written by another
configuration (``signature``) is refused, naming what differs.
"""

from __future__ import annotations

import logging
import math
import pickle
import time
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from fmscope.engine.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from fmscope.errors import FileFormatError, InvalidInputError, TrainingDivergedError
from fmscope.utils.progress import ProgressCallback, make_progress

logger = logging.getLogger(__name__)

#: ``(step) -> (loss, terms)`` of one micro-batch of optimiser step ``step`` (called ``accumulation`` times per step)
LossStep = Callable[[int], tuple[Tensor, Mapping[str, float]]]


class Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> Any: ...


class Held:
    """An object checkpointed whole (pickled): for random generators and augmentation pipelines whose state is not
    exposed as a dict (a numpy ``Generator``, MONAI transforms with their own ``RandomState``). Use ``.obj``."""

    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def state_dict(self) -> dict[str, Any]:
        return {"pickle": pickle.dumps(self.obj)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.obj = pickle.loads(state["pickle"])  # noqa: S301  (our own checkpoint, as torch.load of it)


@dataclass(frozen=True)
class LoopConfig:
    """How :class:`Trainer` steps.

    Attributes:
        steps: optimiser steps in all.
        accumulation: micro-batches per optimiser step (their losses are averaged).
        grad_clip: clip the global gradient norm to this and log the norm (None: no clipping, no norm logged).
        bf16: autocast to bfloat16 on CUDA (ignored on CPU).
        eval_every: evaluate every this many steps (0: never; the last step is always evaluated when > 0).
        patience: stop after this many evaluations without a better score (None: never).
        checkpoint_every: also checkpoint every this many steps (0: at evaluations and at the end only).
        keep_last: step checkpoints kept (0: all).
        divergence_hint: appended to the NaN/Inf error (what to try).
        loss_key: the name the micro-batch loss is logged under (None: not logged; the terms say it).
    """

    steps: int
    accumulation: int = 1
    grad_clip: float | None = None
    bf16: bool = False
    eval_every: int = 0
    patience: int | None = None
    checkpoint_every: int = 0
    keep_last: int = 1
    divergence_hint: str = "lower the learning rate or check the data for NaN/Inf"
    loss_key: str | None = "loss"

    def __post_init__(self) -> None:
        for name in ("steps", "accumulation"):
            if int(getattr(self, name)) < 1:
                raise InvalidInputError(f"{name}: expected an integer >= 1, got {getattr(self, name)!r}")
        for name in ("eval_every", "checkpoint_every", "keep_last"):
            if int(getattr(self, name)) < 0:
                raise InvalidInputError(f"{name}: expected an integer >= 0, got {getattr(self, name)!r}")
        if self.patience is not None and self.patience < 1:
            raise InvalidInputError(f"patience: expected None or an integer >= 1, got {self.patience!r}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise InvalidInputError(f"grad_clip: expected None or a value > 0, got {self.grad_clip!r}")


def loop_config(names: Mapping[str, str], **settings: Any) -> LoopConfig:
    """``LoopConfig(**settings)`` whose errors name the caller's config keys (``names``: loop field -> key)."""
    try:
        return LoopConfig(**settings)
    except InvalidInputError as exc:
        field_name, sep, rest = str(exc).partition(":")
        raise InvalidInputError(f"{names.get(field_name, field_name)}{sep}{rest}") from None


@dataclass
class LoopState:
    """The loop's own state, saved in every checkpoint."""

    step: int = 0
    best: float = -math.inf
    best_step: int = -1
    stale: int = 0
    stopped: bool = False
    window: list[dict[str, float]] = field(default_factory=list)  # step logs since the last evaluation


@dataclass
class Hooks:
    """Optional callbacks of :meth:`Trainer.fit` (``step`` is the 0-based optimiser step).

    Attributes:
        before_step: before the micro-steps (e.g. freeze or unfreeze an encoder, a text warm-up stage).
        after_step: after the optimiser step, returns extra values to log (e.g. an EMA teacher update).
        on_step: every step's log (terms averaged over micro-steps, lr, grad_norm, seconds), e.g. a metric log.
        on_eval: after an evaluation: the step, the scores, the step logs since the previous evaluation and whether
            the score improved; e.g. a metric row per epoch and saving the best model.
        counts_for_patience: whether a step's evaluation without improvement counts toward ``patience``.
    """

    before_step: Callable[[int], None] | None = None
    after_step: Callable[[int], Mapping[str, float]] | None = None
    on_step: Callable[[int, dict[str, float]], None] | None = None
    on_eval: Callable[[int, dict[str, float], list[dict[str, float]], bool], None] | None = None
    counts_for_patience: Callable[[int], bool] | None = None


class Trainer:
    """Steps ``model`` with ``optimizer`` (and ``scheduler``) as ``config`` says; see the module doc.

    Args:
        model: what is trained and checkpointed (e.g. a task model, the pretraining method with its teacher).
        optimizer, scheduler: the optimiser and an optional learning-rate scheduler stepped once per step.
        config: the loop settings.
        folder: where checkpoints go (None: no checkpoints, no resume).
        parameters: the parameters clipped and averaged across processes (default: the optimiser's).
        state: other objects checkpointed by name (``state_dict`` / ``load_state_dict``).
        signature: what a checkpoint must have been written with to be resumed (task, model, config...).
        world: number of ``torchrun`` processes (gradients are averaged when > 1); only ``rank`` 0 checkpoints.
        device: where the model is (autocast device type).
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        config: LoopConfig,
        *,
        scheduler: Any = None,
        folder: Path | None = None,
        parameters: list[nn.Parameter] | None = None,
        state: Mapping[str, Stateful] | None = None,
        signature: Mapping[str, Any] | None = None,
        world: int = 1,
        rank: int = 0,
        device: torch.device | None = None,
    ) -> None:
        self.model, self.optimizer, self.scheduler, self.config = model, optimizer, scheduler, config
        self.folder = folder
        self.parameters = (
            parameters if parameters is not None else [p for g in optimizer.param_groups for p in g["params"]]
        )
        self.state = dict(state or {})
        self.signature = dict(signature or {})
        self.world, self.rank = world, rank
        self.device = device or next(model.parameters()).device
        self.loop = LoopState()

    # --- checkpoints ---------------------------------------------------------------------------------------------

    def checkpoint(self, *, best: bool = False) -> Path | None:
        """Write a checkpoint of the current step (rank 0 with a folder only); ``best``: it is also ``best.pt``
        (a hard link, kept whatever the rotation deletes)."""
        if self.folder is None or self.rank != 0:
            return None
        payload: dict[str, Any] = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "rng": rng_state(),
            "loop": asdict(self.loop),
            "state": {name: obj.state_dict() for name, obj in self.state.items()},
            "signature": self.signature,
        }
        return save_checkpoint(self.folder, self.loop.step, payload, keep_last=self.config.keep_last, best=best)

    def resume(self) -> int:
        """Restore the newest readable checkpoint of ``folder``; returns its step. A corrupt or partial checkpoint is
        skipped (with a warning) for the previous one; a checkpoint of another configuration is refused."""
        if self.folder is None:
            raise InvalidInputError("--resume: this run has no checkpoint folder")
        candidates = sorted(self.folder.glob("step_*.pt"), reverse=True) if self.folder.is_dir() else []
        if not candidates:
            raise InvalidInputError(f"--resume: no checkpoint found in '{self.folder}'")
        errors = []
        for path in candidates:
            try:
                ckpt = load_checkpoint(path, map_location=self.device)
                if "method" in ckpt.payload and "loop" not in ckpt.payload:
                    raise InvalidInputError(
                        f"--resume: checkpoint '{path}' was written by an fmscope release before the training engine "
                        "and cannot be resumed; start over with --overwrite"
                    )
                if not {"model", "optimizer", "loop", "rng"} <= set(ckpt.payload):
                    raise FileFormatError(f"checkpoint '{path}': incomplete (keys {sorted(ckpt.payload)})")
            except FileFormatError as exc:
                logger.warning("skipping an unreadable checkpoint: %s", exc)
                errors.append(str(exc))
                continue
            self._check_signature(path, ckpt.payload.get("signature", {}))
            self._restore(path, ckpt.payload)
            return self.loop.step
        raise InvalidInputError(f"--resume: no readable checkpoint in '{self.folder}': {'; '.join(errors)}")

    def _check_signature(self, path: Path, saved: Mapping[str, Any]) -> None:
        differs = [
            f"{key}: checkpoint {saved.get(key)!r}, now {value!r}"
            for key, value in self.signature.items()
            if saved.get(key) != value
        ]
        if differs:
            raise InvalidInputError(
                f"--resume: checkpoint '{path}' was written by another run; {'; '.join(differs)} (start a new run "
                "folder, or --overwrite)"
            )

    def _restore(self, path: Path, payload: dict[str, Any]) -> None:
        from fmscope.models import compare_state_dict

        report = compare_state_dict(self.model, payload["model"])
        if not report.ok:
            raise InvalidInputError(f"--resume: checkpoint '{path}' does not fit this model: {report.summary()}")
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        if self.scheduler is not None and payload.get("scheduler") is not None:
            self.scheduler.load_state_dict(payload["scheduler"])
        for name, obj in self.state.items():
            obj.load_state_dict(payload["state"][name])
        set_rng_state(payload["rng"])
        self.loop = LoopState(**payload["loop"])
        logger.info("resumed from %s at step %d", path, self.loop.step)

    # --- the loop ------------------------------------------------------------------------------------------------

    def fit(
        self,
        loss_step: LossStep,
        *,
        evaluate: Callable[[int], dict[str, float]] | None = None,
        hooks: Hooks | None = None,
        stop_after: int | None = None,
        progress: ProgressCallback | bool | None = None,
        description: str = "train",
    ) -> LoopState:
        """Train from the current step (0, or where :meth:`resume` left) to ``config.steps``, early stopping, or
        ``stop_after`` more steps; returns the loop state."""
        cfg, h = self.config, hooks or Hooks()
        end = cfg.steps if stop_after is None else min(cfg.steps, self.loop.step + stop_after)
        with make_progress(progress if self.rank == 0 else None, end - self.loop.step, description) as advance:
            while self.loop.step < end and not self.loop.stopped:
                step = self.loop.step
                logs = self._one_step(step, loss_step, h)
                evaluating = evaluate is not None and cfg.eval_every > 0
                if evaluating:  # kept (and checkpointed) only until the next evaluation
                    self.loop.window.append(logs)
                self.loop.step = done = step + 1
                if h.on_step is not None:
                    h.on_step(step, logs)
                # the last step is evaluated; a call stopped early by stop_after is not (a resumed run goes on as the
                # uninterrupted one would)
                evaluated = evaluating and (done % cfg.eval_every == 0 or done == cfg.steps)
                improved = evaluated and self._evaluate(step, evaluate, h)  # type: ignore[arg-type]
                periodic = cfg.checkpoint_every > 0 and done % cfg.checkpoint_every == 0
                if evaluated or periodic or done == end or self.loop.stopped:
                    self.checkpoint(best=improved)
                advance(1)
        return self.loop

    def _one_step(self, step: int, loss_step: LossStep, h: Hooks) -> dict[str, float]:
        cfg = self.config
        t0 = time.perf_counter()
        if h.before_step is not None:
            h.before_step(step)
        self.model.train()
        sums: dict[str, float] = {}
        autocast = (
            torch.autocast(self.device.type, dtype=torch.bfloat16)
            if cfg.bf16 and self.device.type == "cuda"
            else nullcontext()
        )
        for _ in range(cfg.accumulation):
            with autocast:
                loss, terms = loss_step(step)
            if not torch.isfinite(loss):
                shown = {k: round(float(v), 6) for k, v in terms.items()}
                raise TrainingDivergedError(
                    f"loss is {float(loss.detach())} at step {step} (terms {shown}); {cfg.divergence_hint}"
                )
            (loss / cfg.accumulation if cfg.accumulation > 1 else loss).backward()
            logged = {cfg.loss_key: float(loss.detach()), **terms} if cfg.loss_key else terms
            for key, value in logged.items():
                sums[key] = sums.get(key, 0.0) + float(value) / cfg.accumulation
        if self.world > 1:
            for p in self.parameters:
                if p.grad is not None:
                    torch.distributed.all_reduce(p.grad)
                    p.grad /= self.world
        sums["lr"] = float(self.optimizer.param_groups[0]["lr"])
        if cfg.grad_clip is not None:
            grads = [p for p in self.parameters if p.grad is not None]
            sums["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(grads, cfg.grad_clip)) if grads else 0.0
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if h.after_step is not None:
            sums.update(h.after_step(step))
        sums["seconds"] = time.perf_counter() - t0
        return sums

    def _evaluate(self, step: int, evaluate: Callable[[int], dict[str, float]], h: Hooks) -> bool:
        scores = evaluate(step)
        improved = scores["score"] > self.loop.best
        if improved:
            self.loop.best, self.loop.best_step, self.loop.stale = float(scores["score"]), step, 0
        elif h.counts_for_patience is None or h.counts_for_patience(step):
            self.loop.stale += 1
        if h.on_eval is not None:
            h.on_eval(step, scores, self.loop.window, improved)
        self.loop.window = []
        if self.config.patience is not None and self.loop.stale >= self.config.patience:
            logger.info("early stop at step %d: no better validation score for %d evaluations", step, self.loop.stale)
            self.loop.stopped = True
        return improved
