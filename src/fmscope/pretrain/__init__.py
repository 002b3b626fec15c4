"""Self-supervised multimodal pretraining: student-teacher distillation, masked reconstruction, image-text alignment."""

from fmscope.pretrain.ema import cosine_momentum, make_teacher, update_teacher
from fmscope.pretrain.losses import (
    EmbeddingQueue,
    LogitScale,
    TeacherCenter,
    alignment_loss,
    clip_chance_level,
    clip_loss,
    distillation_loss,
    masked_tokens,
    sample_masked,
    token_distillation_loss,
    tokens_at,
)

__all__ = [
    "EmbeddingQueue",
    "LogitScale",
    "TeacherCenter",
    "alignment_loss",
    "clip_chance_level",
    "clip_loss",
    "cosine_momentum",
    "make_teacher",
    "distillation_loss",
    "masked_tokens",
    "sample_masked",
    "token_distillation_loss",
    "tokens_at",
    "update_teacher",
]
