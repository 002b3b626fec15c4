"""Image-classification baselines for the benchmark: PCA + logistic regression, and a 3D/2D ResNet-18 from scratch.

Images are intensity-normalised (about [0, 1]) 2D (Y, X) or 3D (Z, Y, X) arrays, all of the same shape (the caller
crops); classes are integer indices >= 0.
"""

from __future__ import annotations

import copy
import logging
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from monai.networks.nets import resnet18
from numpy.typing import NDArray
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from torch.optim.swa_utils import update_bn

from fmscope.engine.trainer import Hooks, LoopConfig, Trainer
from fmscope.errors import InvalidInputError
from fmscope.utils.device import resolve_device

logger = logging.getLogger(__name__)


def _stack(images: Sequence[np.ndarray], name: str) -> NDArray[np.float32]:
    """(N, *spatial) float32 stack of same-shape, finite 2D/3D images."""
    if isinstance(images, np.ndarray) or not isinstance(images, Sequence) or len(images) == 0:
        raise InvalidInputError(f"{name}: expected a non-empty sequence of arrays, got {type(images).__name__}")
    arrays = [np.asarray(img) for img in images]
    shapes = sorted({a.shape for a in arrays})
    if len(shapes) != 1 or len(shapes[0]) not in (2, 3) or 0 in shapes[0]:
        raise InvalidInputError(f"{name}: expected non-empty 2D or 3D arrays all of the same shape, got {shapes}")
    if any(a.dtype.kind not in "biuf" for a in arrays):
        raise InvalidInputError(f"{name}: expected numeric arrays, got dtypes {sorted({str(a.dtype) for a in arrays})}")
    out = np.stack(arrays).astype(np.float32)
    if not bool(np.isfinite(out).all()):
        raise InvalidInputError(
            f"{name}: expected finite values, got {int(np.count_nonzero(~np.isfinite(out)))} NaN/inf"
        )
    return out


def _classes(classes: Sequence[int], n: int, name: str, n_classes: int | None = None) -> NDArray[np.int64]:
    arr = np.asarray(classes)
    if arr.shape != (n,) or (n and arr.dtype.kind not in "iu") or (n and int(arr.min()) < 0):
        raise InvalidInputError(f"{name}: expected {n} integer class indices >= 0 (one per image), got {classes!r}")
    if n_classes is not None and n and int(arr.max()) >= n_classes:
        raise InvalidInputError(f"{name}: expected class indices < n_classes={n_classes}, got max {int(arr.max())}")
    return arr.astype(np.int64)


def fit_pca_logistic(
    images: Sequence[np.ndarray], classes: Sequence[int], *, n_components: int = 16, seed: int = 0
) -> Any:
    """Fit standardisation + PCA + class-balanced logistic regression on flattened voxels.

    Args:
        images: same-shape 2D or 3D images.
        classes: class index per image; at least two distinct classes.
        n_components: PCA components, capped at ``n_samples - 1`` and the number of voxels.
        seed: PCA random state.

    Returns:
        The fitted :class:`sklearn.pipeline.Pipeline`, for :func:`predict_pca_logistic`.

    Raises:
        InvalidInputError: images of different shapes, NaN, bad classes, fewer than two classes, bad n_components.
    """
    x = _stack(images, "images")
    y = _classes(classes, len(x), "classes")
    if np.unique(y).size < 2:
        raise InvalidInputError(f"classes: expected at least 2 distinct classes, got {np.unique(y).tolist()}")
    if isinstance(n_components, bool) or not isinstance(n_components, int) or n_components < 1:
        raise InvalidInputError(f"n_components: expected an integer >= 1, got {n_components!r}")
    flat = x.reshape(len(x), -1)
    k = min(n_components, len(flat) - 1, flat.shape[1])
    model = Pipeline(
        [
            ("scale", StandardScaler()),
            ("pca", PCA(n_components=k, random_state=seed)),
            ("classify", LogisticRegression(max_iter=2000, class_weight="balanced")),
        ]
    )
    model.fit(flat, y)
    logger.info("PCA + logistic regression: %d images, %d voxels, %d components", len(flat), flat.shape[1], k)
    return model


def predict_pca_logistic(model: Any, images: Sequence[np.ndarray]) -> NDArray[np.int64]:
    """Class index per image from a model of :func:`fit_pca_logistic` (images of the training shape)."""
    x = _stack(images, "images").reshape(len(images), -1)
    if x.shape[1] != model.n_features_in_:
        raise InvalidInputError(
            f"images: expected {model.n_features_in_} voxels like the training images, got {x.shape[1]}"
        )
    return np.asarray(model.predict(x), dtype=np.int64)


@dataclass(frozen=True)
class ResNetConfig:
    """Training settings of :func:`train_resnet18`.

    Attributes:
        epochs: maximum passes over the training images. batch_size: images per step (>= 2 for BatchNorm).
        lr, weight_decay: AdamW settings. patience: stop after this many epochs without a better validation score.
        seed: seed of initialisation, shuffling and augmentation. device: torch device ("cpu", "cuda", "cuda:1").
        augment: random flips along each spatial axis.
    """

    epochs: int = 30
    batch_size: int = 4
    lr: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = 10
    seed: int = 0
    device: str = "cpu"
    augment: bool = True

    def __post_init__(self) -> None:
        for name, lo in (("epochs", 1), ("batch_size", 2), ("patience", 1), ("seed", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < lo:
                raise InvalidInputError(f"{name}: expected an integer >= {lo}, got {value!r}")
        for name, positive in (("lr", True), ("weight_decay", False)):
            value = getattr(self, name)
            ok = not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)
            if not ok or value < 0 or (positive and value == 0):
                raise InvalidInputError(
                    f"{name}: expected a finite number {'> 0' if positive else '>= 0'}, got {value!r}"
                )
        try:
            torch.device(self.device)
        except (RuntimeError, TypeError) as exc:
            raise InvalidInputError(
                f"device: expected a torch device such as 'cpu' or 'cuda', got {self.device!r}"
            ) from exc
        if not isinstance(self.augment, bool):
            raise InvalidInputError(f"augment: expected a bool, got {self.augment!r}")


def _macro_accuracy(pred: NDArray[np.int64], true: NDArray[np.int64]) -> float:
    """Mean per-class recall over the classes present in ``true``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # predicted classes absent from ``true``
        return float(balanced_accuracy_score(true, pred))


def _flip(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Flip each sample along each spatial axis with probability 1/2."""
    out = batch.clone()
    for axis in range(2, batch.ndim):
        chosen = torch.rand(len(batch), generator=generator) < 0.5
        if chosen.any():
            out[chosen] = torch.flip(out[chosen], dims=(axis,))
    return out


def train_resnet18(
    train_images: Sequence[np.ndarray],
    train_classes: Sequence[int],
    val_images: Sequence[np.ndarray],
    val_classes: Sequence[int],
    n_classes: int,
    config: ResNetConfig,
    *,
    progress: Callable[[int], None] | None = None,
) -> torch.nn.Module:
    """Train MONAI's ResNet-18 from scratch, keeping the weights with the best validation macro accuracy.

    Inverse-frequency weighted cross-entropy, AdamW, shuffled batches (a last batch of one image joins the previous
    batch: BatchNorm needs two), optional random flips. After each epoch the macro accuracy (mean per-class recall
    over the classes present in ``val_classes``) is computed; training stops after ``config.patience`` epochs
    without improvement.

    Args:
        train_images, val_images: same-shape 2D or 3D images (channel added here).
        train_classes, val_classes: class index per image, in [0, n_classes).
        n_classes: outputs of the classifier (>= 2).
        config: training settings.
        progress: called with 1 after each epoch.

    Returns:
        The network with the best weights, in eval mode, on ``config.device``.

    Raises:
        InvalidInputError: bad images or classes, train/val shapes differ, unavailable CUDA device.
    """
    if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 2:
        raise InvalidInputError(f"n_classes: expected an integer >= 2, got {n_classes!r}")
    x_train = _stack(train_images, "train_images")
    x_val = _stack(val_images, "val_images")
    if x_val.shape[1:] != x_train.shape[1:]:
        raise InvalidInputError(
            f"val_images: expected shape {x_train.shape[1:]} like train_images, got {x_val.shape[1:]}"
        )
    y_train = _classes(train_classes, len(x_train), "train_classes", n_classes)
    y_val = _classes(val_classes, len(x_val), "val_classes", n_classes)
    if len(x_train) < 2:
        raise InvalidInputError(f"train_images: expected at least 2 images (BatchNorm), got {len(x_train)}")
    device = resolve_device(config.device)

    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    spatial_dims = x_train.ndim - 1
    model = resnet18(spatial_dims=spatial_dims, n_input_channels=1, num_classes=n_classes).to(device)
    counts = np.bincount(y_train, minlength=n_classes).astype(np.float64)
    weights = np.where(counts > 0, counts.sum() / (np.count_nonzero(counts) * np.maximum(counts, 1)), 0.0)
    loss_fn = torch.nn.CrossEntropyLoss(weight=torch.as_tensor(weights, dtype=torch.float32, device=device))
    fused = device.type in ("cpu", "cuda")  # much faster than the per-tensor loop on CPU
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay, fused=fused)
    inputs = torch.from_numpy(x_train).unsqueeze(1)
    targets = torch.from_numpy(y_train)

    def epoch_batches() -> list[torch.Tensor]:
        """A shuffled pass over the training images (a last batch of one joins the previous one: BatchNorm)."""
        batches = list(torch.split(torch.randperm(len(inputs), generator=generator), config.batch_size))
        if len(batches) > 1 and len(batches[-1]) == 1:
            batches[-2:] = [torch.cat(batches[-2:])]
        return batches

    per_epoch = _n_batches(len(inputs), config.batch_size)
    current: list[torch.Tensor] = []
    best_state: dict[str, torch.Tensor] = {}

    def before_step(step: int) -> None:
        if step % per_epoch == 0:
            current[:] = epoch_batches()

    def loss_step(step: int) -> tuple[torch.Tensor, dict[str, float]]:
        idx = current[step % per_epoch]
        batch = _flip(inputs[idx], generator) if config.augment else inputs[idx]
        return loss_fn(model(batch.to(device)), targets[idx].to(device)), {"images": float(len(idx))}

    def evaluate(step: int) -> dict[str, float]:
        # Few steps leave BatchNorm running statistics far from the data: re-estimate them (no gradient) before eval.
        with torch.no_grad():
            update_bn((inputs[idx] for idx in current), model, device=device)
        return {"score": _macro_accuracy(predict_resnet18(model, list(x_val), str(device)), y_val)}

    def on_eval(step: int, scores: dict[str, float], window: list[dict[str, float]], improved: bool) -> None:
        epoch = (step + 1) // per_epoch
        loss = sum(w["loss"] * w["images"] for w in window) / len(inputs)
        logger.info("resnet18 epoch %d/%d: loss %.4f, val macro accuracy %.4f", epoch, config.epochs, loss,
                    scores["score"])  # fmt: skip
        if progress is not None:
            progress(1)
        if improved:
            best_state.update(copy.deepcopy(model.state_dict()))

    loop = LoopConfig(steps=config.epochs * per_epoch, eval_every=per_epoch, patience=config.patience)
    trainer = Trainer(model, optimizer, loop, device=device)
    state = trainer.fit(loss_step, evaluate=evaluate, hooks=Hooks(before_step=before_step, on_eval=on_eval))
    if state.stopped:
        logger.info("resnet18: early stop after epoch %d (%d epochs without improvement)", state.step // per_epoch,
                    config.patience)  # fmt: skip
    model.load_state_dict(best_state)
    logger.info("resnet18: restored epoch %d (val macro accuracy %.4f)", state.best_step // per_epoch + 1, state.best)
    return model.eval()


def _n_batches(n: int, batch_size: int) -> int:
    """Batches of one pass over ``n`` images (a last batch of one joins the previous one)."""
    full, rest = divmod(n, batch_size)
    return full + (1 if rest > 1 or (rest == 1 and full == 0) else 0)


def predict_resnet18(
    model: torch.nn.Module, images: Sequence[np.ndarray], device: str = "cpu", *, batch_size: int = 8
) -> NDArray[np.int64]:
    """Class index per image (argmax of the logits), in eval mode without gradients, ``batch_size`` at a time."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidInputError(f"batch_size: expected an integer >= 1, got {batch_size!r}")
    x = torch.from_numpy(_stack(images, "images")).unsqueeze(1)
    model.eval()
    out: list[torch.Tensor] = []
    with torch.no_grad():
        for batch in torch.split(x, batch_size):
            out.append(model(batch.to(device)).argmax(dim=1).cpu())
    return torch.cat(out).numpy().astype(np.int64)
