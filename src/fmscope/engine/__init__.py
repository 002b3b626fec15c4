"""Training engine pieces shared by pretraining and fine-tuning: schedules, checkpoints, metric logs, distribution."""

from fmscope.engine.checkpoint import latest_checkpoint, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from fmscope.engine.logs import MetricLogger
from fmscope.engine.schedule import warmup_cosine

__all__ = [
    "MetricLogger",
    "latest_checkpoint",
    "load_checkpoint",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
    "warmup_cosine",
]
