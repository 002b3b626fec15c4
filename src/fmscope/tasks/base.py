"""The task protocol: everything fine-tuning, prediction, the benchmark and the report need to know about one task.

A task (segment, classify, deblur, ...) is an object with the members of :class:`Task`; one module per task
(``tasks/segment.py`` ...) and one line in :mod:`fmscope.tasks.registry`. Callers ask the task instead of branching
on its name: its head and forward pass, its loss, how its training samples are read and batched (with its
augmentation rules), how it predicts one sample (dense sliding window or a patch), how predictions are scored, the
names of its metrics and how a whole-image prediction is written. :class:`TaskBase` holds what most tasks share,
:class:`DenseTask` what dense tasks add.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from fmscope.data.augment import build_paired_augmentation
from fmscope.data.samples import Sample, load_samples, sample_patch
from fmscope.errors import InvalidInputError
from fmscope.inference.predict import WindowConfig, sliding_window_predict

if TYPE_CHECKING:
    from fmscope.data.degradation import DegradationConfig
    from fmscope.data.labelled import LabelledItem, LabelMapping
    from fmscope.models import Backbone
    from fmscope.tasks.config import FinetuneConfig
    from fmscope.tasks.model import TaskModel, TaskSpec

Batch = dict[str, Tensor]
LossFn = Callable[[Tensor, Batch], Tensor]


class Task(Protocol):
    """What a task supplies (see the module doc).

    Attributes:
        name: the registered name (``'segment'``), stored in ``task.json`` and configs.
        layout: the labelled-data layout it trains from (:func:`fmscope.data.labelled.load_labelled`): ``'segment'``
            (images with masks, or with degraded twins) or ``'classify'`` (images with class names).
        target: what a training sample holds besides the image (:func:`fmscope.data.samples.load_samples`).
        dense: predictions are images (sliding window), not one value per input.
        label_output: predictions are label images (overlays, instances).
        score_name: the validation score in words (model selection, console output).
        metrics: the benchmark's metrics of this task, in report order; ``table_metrics`` the ones tabulated;
            ``main_metric`` the one plotted against the training-set size.
    """

    @property
    def name(self) -> str: ...

    @property
    def layout(self) -> Literal["segment", "classify"]: ...

    @property
    def target(self) -> Literal["mask", "class", "restore"]: ...

    @property
    def dense(self) -> bool: ...

    @property
    def label_output(self) -> bool: ...

    @property
    def score_name(self) -> str: ...

    @property
    def metrics(self) -> tuple[str, ...]: ...

    @property
    def table_metrics(self) -> tuple[str, ...]: ...

    @property
    def main_metric(self) -> str: ...

    def model_classes(self, classes: tuple[str, ...]) -> tuple[str, ...]:
        """The class names a model of this task outputs, from the labelled set's classes."""
        ...

    def benchmark_classes(self, found: Sequence[str], structure: str) -> tuple[str, ...]:
        """The class names of a benchmark datatype (``structure``: its name) whose units carry ``found``."""
        ...

    def check_classes(self, classes: tuple[str, ...]) -> None: ...

    def n_outputs(self, classes: tuple[str, ...]) -> int: ...

    def build_head(self, backbone: Backbone, spec: TaskSpec) -> nn.Module: ...

    def forward(self, model: TaskModel, x: Tensor) -> Tensor: ...

    def dense_output(self, model: TaskModel, x: Tensor) -> Tensor:
        """What sliding-window prediction blends (probabilities, a restored image); an error if not dense."""
        ...

    def load_samples(
        self,
        items: tuple[LabelledItem, ...],
        classes: tuple[str, ...],
        *,
        low_percentile: float = 1.0,
        high_percentile: float = 99.8,
        mapping: LabelMapping | None = None,
        degradation: DegradationConfig | None = None,
        seed: int = 0,
    ) -> list[Sample]: ...

    def augmentation(self, config: FinetuneConfig, spatial_dims: int) -> Any: ...

    def make_batch(
        self,
        samples: list[Sample],
        config: FinetuneConfig,
        size: tuple[int, ...],
        rng: np.random.Generator,
        augment: Any,
    ) -> Batch: ...

    def make_loss(self, config: FinetuneConfig, model: TaskModel, samples: list[Sample]) -> LossFn:
        """The training loss on the model's output and a batch (``samples``: the training set, e.g. for weights)."""
        ...

    def predict(self, model: TaskModel, image: np.ndarray, overlap: float, device: torch.device) -> Any:
        """The prediction for one normalised sample image (a label image, a class index, a restored image)."""
        ...

    def validation_scores(
        self, predictions: list[Any], samples: list[Sample], classes: tuple[str, ...]
    ) -> dict[str, float]:
        """Validation scores of ``predictions``; ``'score'`` is the one model selection maximises."""
        ...

    def score(
        self,
        predictions: list[Any],
        samples: list[Sample],
        classes: tuple[str, ...],
        *,
        instances: Sequence[np.ndarray | None] | None = None,
        own_instances: bool = False,
        split: str = "watershed",
    ) -> dict[str, float]:
        """The benchmark's metrics (``metrics``) of ``predictions`` on the test samples (``instances``: the true
        instance labels per sample where known; ``own_instances``: the predictions are instance labels already)."""
        ...

    def output_image(
        self, scores: Any, *, probabilities: bool = False, instances: str | None = None
    ) -> tuple[Any, bool]:
        """Dense tasks: what ``fmscope predict`` writes from the blended ``(C, *spatial)`` outputs, and whether it
        is a label image."""
        ...


@torch.no_grad()
def validate(
    task: Task, model: TaskModel, samples: list[Sample], overlap: float, device: torch.device
) -> dict[str, float]:
    """Validation scores of ``model`` on whole samples (``score``: what model selection maximises)."""
    model.eval()
    predictions = [task.predict(model, s.image, overlap, device) for s in samples]
    return task.validation_scores(predictions, samples, model.spec.classes)


def make_batch(
    samples: list[Sample], config: FinetuneConfig, size: tuple[int, ...], rng: np.random.Generator, augment: Any
) -> Batch:
    """``config.batch_size`` random patches (``foreground_fraction`` of them on a mask's foreground) with their
    targets, the image and its mask or target augmented with the same draw (a class only: the image alone)."""
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


class TaskBase:
    """What most tasks share: the labelled set's classes (at least 2) as outputs, samples read by ``target``, paired
    3D augmentation and :func:`make_batch`."""

    name: str
    target: Literal["mask", "class", "restore"]
    label_output = False

    def model_classes(self, classes: tuple[str, ...]) -> tuple[str, ...]:
        return classes

    def check_classes(self, classes: tuple[str, ...]) -> None:
        if len(classes) < 2:
            raise InvalidInputError(f"classes: a {self.name} model needs at least 2 classes, got {classes}")

    def n_outputs(self, classes: tuple[str, ...]) -> int:
        return len(classes)

    def load_samples(self, items: tuple[LabelledItem, ...], classes: tuple[str, ...], **options: Any) -> list[Sample]:
        return load_samples(items, self.target, classes, **options)

    def augmentation(self, config: FinetuneConfig, spatial_dims: int) -> Any:
        """Paired augmentation of 3D patches (flips, rotations, small affine, intensity changes)."""
        if not config.augment or spatial_dims != 3:
            return None
        return build_paired_augmentation(seed=config.seed)

    def make_batch(
        self, samples: list[Sample], config: FinetuneConfig, size: tuple[int, ...], rng: np.random.Generator,
        augment: Any,
    ) -> Batch:  # fmt: skip
        return make_batch(samples, config, size, rng, augment)


class DenseTask(TaskBase):
    """Shared parts of tasks whose model outputs an image: a 1x1(x1) convolution head on the dense features and
    sliding-window prediction."""

    layout: Literal["segment", "classify"] = "segment"
    dense = True

    def build_head(self, backbone: Backbone, spec: TaskSpec) -> nn.Module:
        conv = nn.Conv3d if backbone.config.spatial_dims == 3 else nn.Conv2d
        return conv(backbone.dense_dim, spec.n_outputs, 1)

    def forward(self, model: TaskModel, x: Tensor) -> Tensor:
        return model.head(model.backbone(x).dense)

    def dense_output(self, model: TaskModel, x: Tensor) -> Tensor:
        return model(x)

    def predict_dense(self, model: TaskModel, image: np.ndarray, overlap: float, device: torch.device) -> np.ndarray:
        """``(C, *spatial)`` blended dense outputs of one normalised image."""
        window = WindowConfig(window=model.backbone.config.patch_size, overlap=overlap, batch_size=2)
        return sliding_window_predict(image, model.dense, window, out_channels=model.spec.n_outputs, device=device)
