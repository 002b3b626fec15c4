"""Task models: a backbone plus the head of one registered task (:mod:`fmscope.tasks.registry`), initialised from a
pretrained model folder or at random, saved as a folder.

The built-in heads: a 1x1(x1) convolution to one logit per class (``segment``), a linear layer on the pooled encoder
features (``classify``: the deepest level, as in the reference, or all levels), a 1x1(x1) convolution to an additive
residual (``deblur``: output ``clamp(input + residual, 0, 1)``).

A saved task model is the backbone's self-describing folder (``fmscope.models``) plus ``task.json`` (task, classes,
pooling, how input intensities are normalised) and ``head.safetensors``. Loading checks the task, so that a
classification model is never run as a segmenter.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from fmscope.config import from_dict, to_dict
from fmscope.errors import FileFormatError, InvalidInputError
from fmscope.models import Backbone, KeyReport, compare_state_dict, get_config, load_model, save_model
from fmscope.tasks.registry import check_task_name, get_task
from fmscope.utils.atomic import atomic_output

logger = logging.getLogger(__name__)

TASK_FILE = "task.json"
HEAD_FILE = "head.safetensors"


@dataclass(frozen=True)
class TaskSpec:
    """What a task model predicts and how its input is prepared.

    Attributes:
        task: a registered task name (``'segment'``, ``'classify'``, ``'deblur'``, ...).
        classes: class names (segmentation: background first; classification: sorted names; deblurring: empty).
        pooling: classification features: ``'deepest'`` (global average of the bottleneck, the reference) or
            ``'all'`` (every encoder level pooled and concatenated, :func:`fmscope.models.pool_levels`).
        low_percentile, high_percentile: each input volume is windowed by its own percentiles to [0, 1].
    """

    task: str
    classes: tuple[str, ...] = ()
    pooling: Literal["deepest", "all"] = "deepest"
    low_percentile: float = 1.0
    high_percentile: float = 99.8

    def __post_init__(self) -> None:
        check_task_name(self.task)
        object.__setattr__(self, "classes", tuple(str(c) for c in self.classes))
        get_task(self.task).check_classes(self.classes)
        if len(set(self.classes)) != len(self.classes):
            raise InvalidInputError(f"classes: expected distinct names, got {self.classes}")
        if self.pooling not in ("deepest", "all"):
            raise InvalidInputError(f"pooling: expected 'deepest' or 'all', got {self.pooling!r}")
        if not 0.0 <= self.low_percentile < self.high_percentile <= 100.0:
            raise InvalidInputError(
                f"low_percentile, high_percentile: expected 0 <= low < high <= 100, got {self.low_percentile}, "
                f"{self.high_percentile}"
            )

    @property
    def n_outputs(self) -> int:
        return get_task(self.task).n_outputs(self.classes)


class TaskModel(nn.Module):
    """A backbone and the head of one task; ``forward`` returns the task's output (logits, the restored image)."""

    def __init__(self, backbone: Backbone, spec: TaskSpec) -> None:
        super().__init__()
        self.backbone = backbone
        self.spec = spec
        self.task = get_task(spec.task)
        self.head = self.task.build_head(backbone, spec)

    def forward(self, x: Tensor) -> Tensor:
        return self.task.forward(self, x)

    def dense(self, x: Tensor) -> Tensor:
        """What dense prediction blends: class probabilities (segment), the restored image (deblur)."""
        return self.task.dense_output(self, x)

    def encoder_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.backbone.named_parameters() if self.backbone.is_encoder_key(n)]

    def other_parameters(self) -> list[nn.Parameter]:
        """Decoder and head: everything trained at the full learning rate."""
        encoder = {id(p) for p in self.encoder_parameters()}
        return [p for p in self.parameters() if id(p) not in encoder]


def collapse_depth(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """3D weights as 2D ones: every 3D (transposed) convolution kernel summed over its depth axis.

    A 2D network with the summed kernels computes exactly what the 3D network computes on a volume that is constant
    along Z (away from the Z borders; instance normalisation sees the same statistics), which is how a 2D image looks
    to a volumetric model. Other tensors (biases, norms) are kept.
    """
    return {k: v.sum(dim=2) if v.ndim == 5 else v for k, v in state.items()}


def init_backbone(
    model: str,
    init: str | os.PathLike[str],
    *,
    parts: Literal["encoder", "backbone"] = "encoder",
    spatial_dims: int | None = None,
    patch_size: tuple[int, ...] | None = None,
) -> tuple[Backbone, KeyReport | None]:
    """A backbone of the registered architecture ``model``, random (``init='scratch'``) or from a model folder.

    From a folder the architecture is the folder's (``model`` applies to scratch only). ``spatial_dims=2`` with a 3D
    folder builds the 2D twin of its UNet and copies the weights through :func:`collapse_depth`. ``parts='encoder'``
    copies the encoder tensors only (the decoder starts random, as in the reference), ``'backbone'`` everything. The
    copy is strict: a missing or mis-shaped tensor of the copied part raises :class:`FileFormatError` with the key
    report. ``patch_size`` overrides the training patch size recorded in the config. Returns the backbone and the
    report (``None`` for scratch).
    """
    if parts not in ("encoder", "backbone"):
        raise InvalidInputError(f"parts: expected 'encoder' or 'backbone', got {parts!r}")
    if str(init) == "scratch":
        base = get_config(model)
    else:
        source = load_model(init).model
        base = source.config
    dims = spatial_dims or base.spatial_dims
    size = patch_size or (
        base.patch_size if dims == base.spatial_dims else tuple(2 * p for p in base.patch_size[-dims:])
    )
    try:
        config = replace(base, spatial_dims=dims, patch_size=tuple(size))
    except InvalidInputError as exc:
        raise InvalidInputError(f"init '{init}': cannot build a {dims}D {base.architecture}: {exc}") from None
    backbone = Backbone(config)
    if str(init) == "scratch":
        return backbone, None
    state = {k: v for k, v in source.state_dict().items() if parts == "backbone" or source.is_encoder_key(k)}
    if dims == 2 and base.spatial_dims == 3:
        state = collapse_depth(state)
    report = compare_state_dict(backbone, state)
    copied_missing = [k for k in report.missing if parts == "backbone" or backbone.is_encoder_key(k)]
    if report.unexpected or report.mismatched_shapes or copied_missing:
        raise FileFormatError(f"init '{init}': the {parts} weights do not fit: {report.summary()}")
    backbone.load_state_dict(state, strict=False)
    logger.info("initialised the %s from %s: %s", parts, init, report.summary())
    return backbone, report


def describe_init(report: KeyReport | None, init: str | os.PathLike[str], parts: str) -> str:
    """The initialisation in words: what came from ``init`` and what starts random (and that this is intended)."""
    if report is None:
        return "random weights (scratch)"
    copied = len(report.loaded)
    if not report.missing:
        return f"all {copied} tensors from '{init}'"
    new = "the decoder and head are new" if parts == "encoder" else "the task head is new"
    return (
        f"the {parts} from '{init}' ({copied} tensors); {len(report.missing)} tensors start random, as intended: "
        f"{new} (-v lists the keys)"
    )


def save_task_model(
    model: TaskModel, folder: str | os.PathLike[str], *, extra: dict[str, Any] | None = None, overwrite: bool = False
) -> Path:
    """Write ``model`` as a folder (atomically): the backbone's model folder plus ``task.json`` and the head."""
    with atomic_output(folder, overwrite) as tmp:
        save_model(model.backbone, tmp, extra=extra, overwrite=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in model.head.state_dict().items()}, str(tmp / HEAD_FILE))
        (tmp / TASK_FILE).write_text(json.dumps(to_dict(model.spec), indent=2) + "\n", encoding="utf-8")
    return Path(folder)


def load_task_model(
    folder: str | os.PathLike[str], *, task: str | None = None, map_location: str | torch.device = "cpu"
) -> TaskModel:
    """Load a task model folder strictly (eval mode); ``task`` given: refuse a folder trained for another task."""
    root = Path(folder)
    if not (root / TASK_FILE).is_file():
        if (root / "config.json").is_file():
            raise FileFormatError(
                f"model folder '{root}': a backbone without a task head ({TASK_FILE} missing); fine-tune it first "
                "(fmscope finetune seg|cls|deblur --init MODEL_DIR)"
            )
        raise FileFormatError(f"model folder '{root}' does not exist or holds no fmscope model")
    try:
        spec = from_dict(TaskSpec, json.loads((root / TASK_FILE).read_text(encoding="utf-8")))
    except (json.JSONDecodeError, InvalidInputError, TypeError) as exc:
        raise FileFormatError(f"model folder '{root}': invalid {TASK_FILE}: {exc}") from None
    if task is not None and spec.task != task:
        raise FileFormatError(f"model folder '{root}' was trained for the '{spec.task}' task, not '{task}'")
    model = TaskModel(load_model(root, map_location=map_location).model, spec)
    head_state = load_file(str(root / HEAD_FILE), device=str(map_location))
    report = compare_state_dict(model.head, head_state)
    if not report.ok:
        raise FileFormatError(f"model folder '{root}': {HEAD_FILE} does not fit {TASK_FILE}: {report.summary()}")
    model.head.load_state_dict(head_state)
    return model.to(map_location).eval()
