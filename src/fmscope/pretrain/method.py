"""The multimodal student-teacher method: one module holding everything that trains, and its four loss terms.

Student and teacher are the same backbone; the teacher is an EMA of the student (parameters and buffers) and sees
the unmasked volume, the student the masked one (the image-text terms run the student's encoder once more on the
unmasked volume, as retrieval does later). Heads:

* a distillation head (per-voxel MLP to ``n_prototypes`` channels) on the dense features at masked voxels, EMA-copied
  for the teacher;
* a light reconstruction decoder (per-voxel MLP to one channel, i.e. two 1x1x1 convolutions) on the student's dense
  features at masked voxels;
* an image projection of the pooled encoder levels (all scales, standardised) into the shared image-text space;
* the text encoder (``fmscope.text``) with its own projection, built only when a text term has a non-zero weight.

A weight of 0 switches a term off (and image-only pretraining builds no text tower at all). Volumes without a caption
train the image terms only (the text terms average over the captioned samples of the batch).

Both per-voxel heads see a uniform sample of at most ``max_tokens`` masked voxels per batch (the same voxels for
student, teacher and decoder). Before, they ran on every masked voxel (157 k per batch of two 64^3 patches at ratio
0.3) and with a 3^3 conv decoder on the whole volume: 12x the time of a plain forward/backward on CPU, 85 % of it in
these heads; the UNet's own features already carry the spatial context the 3^3 conv added.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fmscope.errors import InvalidInputError
from fmscope.models import Backbone, create_model, pool_levels
from fmscope.models.backbone import BackboneOutput
from fmscope.pretrain.ema import make_teacher, update_teacher
from fmscope.pretrain.losses import (
    EmbeddingQueue,
    LogitScale,
    TeacherCenter,
    alignment_loss,
    clip_chance_level,
    clip_loss,
    sample_masked,
    token_distillation_loss,
    tokens_at,
)

logger = logging.getLogger(__name__)

#: the method's module layout, in the checkpoint signature: 2 = per-voxel MLP decoder and sampled-token heads (a
#: checkpoint of version 1, the 3^3 conv decoder, is refused on --resume instead of failing on a state-dict key)
METHOD_VERSION = 2


@dataclass(frozen=True)
class LossWeights:
    """Weight of each term (reference UNet values); 0 turns a term off."""

    distill: float = 0.29
    recon: float = 0.20
    align: float = 0.06
    clip: float = 0.36

    def __post_init__(self) -> None:
        for name in ("distill", "recon", "align", "clip"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise InvalidInputError(f"weights.{name}: expected a number >= 0, got {value!r}")
        if self.distill + self.recon + self.align + self.clip <= 0:
            raise InvalidInputError("weights: at least one loss term must have a positive weight")

    @property
    def uses_text(self) -> bool:
        return self.align > 0 or self.clip > 0


@dataclass(frozen=True)
class MethodConfig:
    """Architecture of the pretraining method (the training schedule lives in the engine config)."""

    model: str = "unet-cpu"
    weights: LossWeights = field(default_factory=LossWeights)
    n_prototypes: int = 256
    head_hidden: int = 128
    max_tokens: int = 8192  # masked voxels per batch seen by the distillation and reconstruction heads (0: all)
    embed_dim: int = 256
    student_temperature: float = 0.1
    teacher_temperature: float = 0.1
    center_momentum: float = 0.9
    clip_init_scale: float = 10.0
    standardize_momentum: float = 0.3
    queue_size: int = 64
    text_source: str = "minilm"
    text_max_length: int = 128
    text_trainable_top_layers: int = 2
    text_lr_factor: float = 0.1

    def __post_init__(self) -> None:
        for name in ("n_prototypes", "head_hidden", "embed_dim"):
            if getattr(self, name) < 1:
                raise InvalidInputError(f"{name}: expected a positive integer, got {getattr(self, name)!r}")
        if isinstance(self.max_tokens, bool) or not isinstance(self.max_tokens, int) or self.max_tokens < 0:
            raise InvalidInputError(
                f"max_tokens: expected an integer >= 0 (0: every masked voxel), got {self.max_tokens!r}"
            )
        if self.queue_size < 0:
            raise InvalidInputError(f"queue_size: expected >= 0, got {self.queue_size}")
        if not 0.0 < self.standardize_momentum <= 1.0:
            raise InvalidInputError(
                f"standardize_momentum: expected a value in (0, 1], got {self.standardize_momentum}"
            )
        if not 0.0 <= self.text_lr_factor <= 1.0:
            raise InvalidInputError(f"text_lr_factor: expected a value in [0, 1], got {self.text_lr_factor}")


@dataclass
class LossTerms:
    """The weighted total (with graph) and each raw term (detached floats for logging)."""

    total: Tensor
    distill: float
    recon: float
    align: float
    clip: float
    clip_scale: float
    mask_fraction: float
    clip_chance: float = 0.0
    embed_similarity: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {
            "loss": float(self.total.detach()),
            "distill": self.distill,
            "recon": self.recon,
            "align": self.align,
            "clip": self.clip,
            "clip_chance": self.clip_chance,
            "embed_similarity": self.embed_similarity,
            "clip_scale": self.clip_scale,
            "mask_fraction": self.mask_fraction,
        }


def caption_ids(captions: Sequence[str | None]) -> Tensor:
    """Stable integer id per caption text (CRC32), equal for equal captions in any process and any step."""
    ids = []
    for i, caption in enumerate(captions):
        if caption is None:
            raise InvalidInputError(f"captions[{i}]: missing caption, but a text loss term is switched on")
        ids.append(zlib.crc32(caption.encode("utf-8")))
    return torch.tensor(ids, dtype=torch.long)


class RunningStandardize(nn.Module):
    """Standardise features per channel with running mean/variance (updated in training, used always).

    Pooled backbone features share a large component common to every volume (measured on the LSM patches: projected
    embeddings of 10 different stains had cosine 0.999 at initialisation, while the centred features were nearly
    orthogonal). Removing it before the projection gives CLIP something to contrast. Unlike BatchNorm it works at
    batch size 1 and 2; the first batch initialises the statistics. The variance is the spread around the running mean
    (a batch of two crops of one volume has almost none of its own), and the default momentum is high (0.3: a window
    of ~3 steps) so that the statistics keep up with the backbone, which changes under them while it trains.
    """

    running_mean: Tensor
    running_var: Tensor
    initialised: Tensor

    def __init__(self, dim: int, momentum: float = 0.3, eps: float = 1e-5) -> None:
        super().__init__()
        self.momentum, self.eps = momentum, eps
        self.register_buffer("running_mean", torch.zeros(dim))
        self.register_buffer("running_var", torch.ones(dim))
        self.register_buffer("initialised", torch.zeros((), dtype=torch.bool))

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            with torch.no_grad():
                flat = x.detach().float().reshape(-1, x.shape[-1])
                mean = flat.mean(dim=0)
                if not bool(self.initialised):
                    self.running_mean.copy_(mean)
                    var = flat.var(dim=0, unbiased=False)
                    self.running_var.copy_(var.clamp(min=self.eps) if flat.shape[0] > 1 else torch.ones_like(var))
                    self.initialised.fill_(True)
                else:
                    self.running_mean.lerp_(mean, self.momentum)
                    # spread around the running mean, not the batch mean: a batch of 2 crops of one volume has almost
                    # no spread of its own, and the between-step movement is part of what must be scaled away
                    self.running_var.lerp_((flat - self.running_mean).square().mean(dim=0), self.momentum)
        return (x - self.running_mean.to(x.dtype)) / torch.sqrt(self.running_var.to(x.dtype) + self.eps)


def _cross_caption_similarity(image_emb: Tensor, ids: Tensor, queue: EmbeddingQueue) -> float:
    """Mean cosine between this batch's image embeddings and stored ones of other captions: near 1 = collapsed space."""
    q_emb, q_ids = queue.contents()
    keys = torch.cat([image_emb, q_emb.to(image_emb.dtype)])
    key_ids = torch.cat([ids, q_ids])
    other = ids[:, None] != key_ids[None, :]
    if not other.any():
        return 0.0
    return float((image_emb @ keys.T)[other].mean())


def _head(in_dim: int, hidden: int, out_dim: int) -> nn.Module:
    """Per-voxel MLP applied to (N, C) tokens of masked voxels (equivalent to 1x1x1 convolutions)."""
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim))


class MultimodalPretrainer(nn.Module):
    """Everything that pretraining trains (student side) plus the EMA teacher side; call it on a masked batch."""

    def __init__(self, config: MethodConfig = MethodConfig(), backbone: Backbone | None = None) -> None:
        super().__init__()
        self.config = config
        self.student = backbone if backbone is not None else create_model(config.model)
        dense = self.student.dense_dim
        self.student_head = _head(dense, config.head_hidden, config.n_prototypes)
        self.decoder = _head(dense, dense, 1)
        self.teacher = make_teacher(self.student)
        self.teacher_head = make_teacher(self.student_head)
        self.center = TeacherCenter(config.n_prototypes, config.center_momentum)
        self.text_encoder: nn.Module | None = None
        if config.weights.uses_text:
            from fmscope.text import TextEncoder, TextEncoderConfig

            # The image embedding: every encoder level average-pooled (models.pool_levels), standardised, then a
            # bias-free linear map.
            # * No learned layer before the standardisation: the pooled features vary across volumes by ~1 % of their
            #   size, so the standardisation has a gain of ~100 and any layer in front of it moves the embeddings 100x
            #   faster than its learning rate suggests (measured: CLIP went back to chance with a 1x1 conv there, with
            #   the backbone frozen).
            pooled_dim = self.student.pooled_dim
            self.image_standardize = RunningStandardize(pooled_dim, momentum=config.standardize_momentum)
            # bias-free (as in CLIP): a projection with a bias can map every input to one constant embedding
            self.image_projection = nn.Linear(pooled_dim, config.embed_dim, bias=False)
            self.text_encoder = TextEncoder(
                TextEncoderConfig(
                    source=config.text_source if config.text_source == "minilm" else Path(config.text_source),
                    max_length=config.text_max_length,
                    embed_dim=config.embed_dim,
                    trainable_top_layers=config.text_trainable_top_layers,
                )
            )
            self.logit_scale = LogitScale(config.clip_init_scale)
            self.text_queue = EmbeddingQueue(config.queue_size, config.embed_dim)
            self.image_queue = EmbeddingQueue(config.queue_size, config.embed_dim)

    # -- what the optimiser sees --------------------------------------------------------------------------------
    def _own_parameters(self) -> list[nn.Parameter]:
        """Everything trained here except the text encoder: student, heads, decoder, image side, temperature."""
        params: list[nn.Parameter] = [
            *self.student.parameters(),
            *self.student_head.parameters(),
            *self.decoder.parameters(),
        ]
        if self.text_encoder is not None:
            params += [
                *self.image_projection.parameters(),
                *self.logit_scale.parameters(),
            ]
        return params

    def parameters_to_optimise(self) -> list[nn.Parameter]:
        """Student, heads, decoder, projections, temperature and the text encoder's trainable set (fixed for the run;
        staged freezing toggles ``requires_grad`` inside it). The teacher side is never optimised."""
        params = self._own_parameters()
        if self.text_encoder is not None:
            params += list(self.text_encoder.parameters_to_optimise())  # type: ignore[operator]
        return params

    def optimiser_groups(self, lr: float, weight_decay: float) -> list[dict[str, object]]:
        """AdamW parameter groups covering :meth:`parameters_to_optimise` exactly: weight decay only on weight
        matrices and kernels (not on biases, norms or the CLIP temperature, whose decay would pull the scale to 1);
        the text backbone's unfrozen layers at ``text_lr_factor * lr`` (a pretrained BERT is easily destroyed)."""
        own = self._own_parameters()
        groups: list[dict[str, object]] = [
            {"name": "decay", "params": [p for p in own if p.ndim >= 2], "lr": lr, "weight_decay": weight_decay},
            {"name": "no_decay", "params": [p for p in own if p.ndim < 2], "lr": lr, "weight_decay": 0.0},
        ]
        if self.text_encoder is not None:
            groups += self.text_encoder.trainable_parameter_groups(  # type: ignore[operator]
                lr, backbone_lr=lr * self.config.text_lr_factor, weight_decay=weight_decay
            )
        return [g for g in groups if g["params"]]

    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        """EMA step of the teacher backbone and head (call once per optimiser step)."""
        update_teacher(self.student, self.teacher, momentum)
        update_teacher(self.student_head, self.teacher_head, momentum)

    def image_embedding(self, images: Tensor) -> Tensor:
        """L2-normalised image embedding in the shared image-text space (needs a text-enabled config)."""
        if self.text_encoder is None:
            raise InvalidInputError("image_embedding: this method was built image-only (no image-text space)")
        return self._project_image(self.student.encode(images))

    def _project_image(self, features: Sequence[Tensor]) -> Tensor:
        return F.normalize(self.image_projection(self.image_standardize(pool_levels(features))), dim=-1)

    # -- one training forward --------------------------------------------------------------------------------------
    def forward(self, images: Tensor, masks: Tensor, captions: Sequence[str | None] | None = None) -> LossTerms:
        """Loss terms of one batch: ``images`` (B, 1, *spatial) in [0, 1], ``masks`` bool of the same shape."""
        if masks.shape != images.shape or masks.dtype != torch.bool:
            raise InvalidInputError(
                f"masks: expected a bool tensor of the images' shape {tuple(images.shape)}, got "
                f"{masks.dtype} {tuple(masks.shape)}"
            )
        w = self.config.weights
        zero = images.new_zeros(())
        student_out = self.student(images * (~masks).to(images.dtype))
        total = zero
        terms = {"distill": 0.0, "recon": 0.0, "align": 0.0, "clip": 0.0, "clip_chance": 0.0, "embed_similarity": 0.0}
        # heads, KL and L1 only at (a sample of) the masked voxels: the cost is bounded by max_tokens, not the volume
        index = sample_masked(masks, self.config.max_tokens)
        if w.distill > 0:
            with torch.no_grad():
                teacher_logits = self.teacher_head(tokens_at(self.teacher(images).dense, index))
            student_logits = self.student_head(tokens_at(student_out.dense, index))
            distill = token_distillation_loss(
                student_logits,
                teacher_logits,
                student_temperature=self.config.student_temperature,
                teacher_temperature=self.config.teacher_temperature,
                center=self.center.center,
            )
            if self.training:
                self.center.update(teacher_logits)
            total = total + w.distill * distill
            terms["distill"] = float(distill.detach())
        if w.recon > 0:
            predicted = self.decoder(tokens_at(student_out.dense, index))
            recon = (predicted - tokens_at(images, index)).abs().mean() if index.numel() else predicted.sum() * 0.0
            total = total + w.recon * recon
            terms["recon"] = float(recon.detach())
        scale_value = 0.0
        if w.uses_text:
            if captions is None or self.text_encoder is None:
                raise InvalidInputError("captions: a text loss term is switched on but no captions were given")
            if len(captions) != images.shape[0]:
                raise InvalidInputError(f"captions: expected {images.shape[0]} (one per image), got {len(captions)}")
            # volumes without a caption (a corpus mixing captioned and uncaptioned sources) train the image terms only
            have = [i for i, c in enumerate(captions) if c is not None]
            if have:
                total, scale_value = self._text_terms(images, masks, student_out, captions, have, total, terms)
        return LossTerms(total=total, clip_scale=scale_value, mask_fraction=float(masks.float().mean()), **terms)

    def _text_terms(
        self,
        images: Tensor,
        masks: Tensor,
        student_out: BackboneOutput,
        captions: Sequence[str | None],
        have: list[int],
        total: Tensor,
        terms: dict[str, float],
    ) -> tuple[Tensor, float]:
        """Alignment and CLIP over the captioned images ``have`` of the batch; returns the new total and the scale."""
        if self.text_encoder is None:
            raise InvalidInputError("text_encoder: the image-text terms need a text encoder; this model was built "
                                    "image-only")  # fmt: skip
        w = self.config.weights
        texts = [str(captions[i]) for i in have]
        ids = caption_ids(texts).to(images.device)
        # the image-text terms see the whole patch (encoder only): zeroed blocks at mask ratio 0.3 swamp the pooled
        # statistics with mask noise, and retrieval later embeds unmasked volumes
        features = self.student.encode(images[have]) if masks.any() else [f[have] for f in student_out.encoder_features]
        image_emb = self._project_image(features)
        text_emb = self.text_encoder(texts)
        scale_value = 0.0
        if w.align > 0:
            align = alignment_loss(image_emb, text_emb)
            total = total + w.align * align
            terms["align"] = float(align.detach())
        if w.clip > 0:
            scale = self.logit_scale()
            clip = clip_loss(image_emb, text_emb, scale, ids, text_queue=self.text_queue, image_queue=self.image_queue)
            total = total + w.clip * clip
            terms["clip"] = float(clip.detach())
            terms["clip_chance"] = clip_chance_level(ids, text_queue=self.text_queue, image_queue=self.image_queue)
            scale_value = float(scale.detach())
        terms["embed_similarity"] = _cross_caption_similarity(image_emb.detach(), ids, self.image_queue)
        if self.training:
            self.text_queue.push(text_emb.detach(), ids)
            self.image_queue.push(image_emb.detach(), ids)
        return total, scale_value
