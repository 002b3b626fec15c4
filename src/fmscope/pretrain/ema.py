"""The teacher: an exponential moving average of the student, updated once per optimiser step.

``update_teacher`` covers parameters *and* floating-point buffers (BatchNorm running statistics; the reference left
them at their initial values) and copies integer buffers (``num_batches_tracked``). ``cosine_momentum`` raises the
momentum from its base value to 1 over training, as in BYOL/DINO.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from fmscope.errors import InvalidInputError


def cosine_momentum(step: int, total_steps: int, base: float = 0.996, final: float = 1.0) -> float:
    """Momentum at ``step`` of ``total_steps``: ``final - (final - base) * (cos(pi * step / total) + 1) / 2``."""
    if total_steps <= 0 or step < 0:
        raise InvalidInputError(f"step/total_steps: expected 0 <= step and total_steps > 0, got {step}, {total_steps}")
    if not 0.0 <= base <= final <= 1.0:
        raise InvalidInputError(f"base/final: expected 0 <= base <= final <= 1, got {base}, {final}")
    progress = min(step, total_steps) / total_steps
    return final - (final - base) * (math.cos(math.pi * progress) + 1.0) / 2.0


@torch.no_grad()
def update_teacher(student: nn.Module, teacher: nn.Module, momentum: float) -> None:
    """``teacher = momentum * teacher + (1 - momentum) * student`` for parameters and float buffers; integer buffers
    are copied. Both modules must have the same structure."""
    if not 0.0 <= momentum <= 1.0:
        raise InvalidInputError(f"momentum: expected a value in [0, 1], got {momentum}")
    s_params = dict(student.named_parameters())
    t_params = dict(teacher.named_parameters())
    s_bufs = dict(student.named_buffers())
    t_bufs = dict(teacher.named_buffers())
    if s_params.keys() != t_params.keys() or s_bufs.keys() != t_bufs.keys():
        raise InvalidInputError("teacher: expected the same parameters and buffers as the student")
    for name, param in t_params.items():
        param.lerp_(s_params[name].detach(), 1.0 - momentum)
    for name, buf in t_bufs.items():
        if buf.is_floating_point():
            buf.lerp_(s_bufs[name], 1.0 - momentum)
        else:
            buf.copy_(s_bufs[name])


def make_teacher(student: nn.Module) -> nn.Module:
    """A deep copy of the student with gradients off (the teacher never receives gradient)."""
    import copy

    teacher = copy.deepcopy(student)
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher
