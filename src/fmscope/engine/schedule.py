"""Learning-rate schedule: linear warmup then cosine decay to a floor, as a multiplier of the base rate."""

from __future__ import annotations

import math

from fmscope.errors import InvalidInputError


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, min_factor: float = 0.0) -> float:
    """Multiplier at ``step``: ``(step + 1) / warmup`` during warmup, then cosine from 1 to ``min_factor``."""
    if total_steps <= 0 or warmup_steps < 0 or step < 0:
        raise InvalidInputError(
            "schedule: expected total_steps > 0, warmup_steps >= 0, step >= 0, "
            f"got {total_steps}, {warmup_steps}, {step}"
        )
    if not 0.0 <= min_factor <= 1.0:
        raise InvalidInputError(f"min_factor: expected a value in [0, 1], got {min_factor}")
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))
