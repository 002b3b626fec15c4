"""Classification baselines (PCA + logistic regression, ResNet-18 from scratch) on separable synthetic classes."""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch

from fmscope.errors import InvalidInputError
from fmscope.evaluation import baselines
from fmscope.evaluation.baselines import (
    ResNetConfig,
    fit_pca_logistic,
    predict_pca_logistic,
    predict_resnet18,
    train_resnet18,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _blobs(n: int, size: int, seed: int, *, by_size: bool = False) -> tuple[list[np.ndarray], list[int]]:
    """Noisy cubes with one bright ball; the class sets its position (near the origin or the far corner) or size."""
    rng = np.random.default_rng(seed)
    grid = np.indices((size,) * 3)
    images, classes = [], []
    for i in range(n):
        c = i % 2
        if by_size:
            centre = size / 2 - 0.5 + rng.uniform(-0.5, 0.5, 3)
            radius = (1.2, 2.8)[c]
        else:
            centre = (size * (0.25 if c == 0 else 0.7)) + rng.integers(-1, 2, 3)
            radius = rng.uniform(2.0, 3.0)
        ball = sum((g - x) ** 2 for g, x in zip(grid, centre, strict=True)) <= radius**2
        images.append(np.clip(np.where(ball, 0.8, 0.2) + rng.normal(0, 0.1, ball.shape), 0, 1).astype(np.float32))
        classes.append(c)
    return images, classes


def test_pca_logistic_separates_held_out_images() -> None:
    train_x, train_y = _blobs(20, 16, seed=0)
    test_x, test_y = _blobs(10, 16, seed=1)
    model = fit_pca_logistic(train_x, train_y, n_components=8)
    pred = predict_pca_logistic(model, test_x)
    assert pred.dtype == np.int64
    assert (pred == np.asarray(test_y)).mean() == 1.0
    assert model.named_steps["pca"].n_components_ == 8


def test_pca_logistic_caps_components_and_works_in_2d() -> None:
    images, classes = _blobs(4, 16, seed=2)
    model = fit_pca_logistic([img[8] for img in images], classes, n_components=50)
    assert model.named_steps["pca"].n_components_ == 3  # n_samples - 1
    assert predict_pca_logistic(model, [img[8] for img in images]).shape == (4,)


def test_pca_logistic_errors() -> None:
    images, classes = _blobs(4, 8, seed=3)
    with pytest.raises(InvalidInputError, match="classes"):
        fit_pca_logistic(images, [0, 0, 0, 0])
    with pytest.raises(InvalidInputError, match="classes"):
        fit_pca_logistic(images, [0, 1, 0])
    with pytest.raises(InvalidInputError, match="classes"):
        fit_pca_logistic(images, [0, 1, -1, 1])
    with pytest.raises(InvalidInputError, match="images"):
        fit_pca_logistic([*images[:3], images[3][:-1]], classes)
    with pytest.raises(InvalidInputError, match="images"):
        fit_pca_logistic([], [])
    nan = [img.copy() for img in images]
    nan[0][0, 0, 0] = np.nan
    with pytest.raises(InvalidInputError, match="images"):
        fit_pca_logistic(nan, classes)
    with pytest.raises(InvalidInputError, match="n_components"):
        fit_pca_logistic(images, classes, n_components=0)
    model = fit_pca_logistic(images, classes)
    with pytest.raises(InvalidInputError, match="images"):
        predict_pca_logistic(model, [img[:4] for img in images])


def test_resnet18_learns_separable_classes(caplog: pytest.LogCaptureFixture) -> None:
    train_x, train_y = _blobs(12, 8, seed=4, by_size=True)
    val_x, val_y = _blobs(6, 8, seed=5, by_size=True)
    calls: list[int] = []
    config = ResNetConfig(epochs=3, batch_size=4, patience=3)
    with caplog.at_level(logging.INFO, logger="fmscope.evaluation.baselines"):
        model = train_resnet18(train_x, train_y, val_x, val_y, 2, config, progress=calls.append)
    scores = [r.args[-1] for r in caplog.records if r.msg.startswith("resnet18 epoch")]  # type: ignore[index]
    assert calls == [1] * len(scores) and len(scores) >= 1
    assert not model.training
    pred = predict_resnet18(model, val_x, batch_size=4)
    accuracy = float(np.mean([np.mean(pred[np.asarray(val_y) == c] == c) for c in (0, 1)]))
    assert accuracy == pytest.approx(max(scores))  # the best epoch's weights were restored
    assert accuracy >= 0.9


class _Tiny(torch.nn.Module):
    """Stand-in for ResNet-18 with a BatchNorm layer, so the training loop can be tested in milliseconds."""

    def __init__(self, spatial_dims: int, n_input_channels: int, num_classes: int) -> None:
        super().__init__()
        conv = torch.nn.Conv3d if spatial_dims == 3 else torch.nn.Conv2d
        norm = torch.nn.BatchNorm3d if spatial_dims == 3 else torch.nn.BatchNorm2d
        self.body = torch.nn.Sequential(conv(n_input_channels, 4, 3, padding=1), norm(4), torch.nn.ReLU())
        self.head = torch.nn.Linear(4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).flatten(2).mean(-1))


def test_training_loop_early_stops_and_restores_best(monkeypatch: pytest.MonkeyPatch) -> None:
    created: list[torch.nn.Module] = []
    snapshots: list[dict[str, Any]] = []

    def factory(**kwargs: Any) -> torch.nn.Module:
        created.append(_Tiny(**kwargs))
        return created[-1]

    scores: Iterator[float] = iter([0.5, 0.9, 0.6, 0.4, 1.0, 1.0])
    monkeypatch.setattr(baselines, "resnet18", factory)
    monkeypatch.setattr(baselines, "_macro_accuracy", lambda pred, true: next(scores))
    train_x, train_y = _blobs(5, 8, seed=6)  # 5 images, batch 2: the last single image joins the previous batch
    model = train_resnet18(
        train_x,
        train_y,
        train_x[:2],
        train_y[:2],
        3,
        ResNetConfig(epochs=6, batch_size=2, patience=2),
        progress=lambda n: snapshots.append(copy.deepcopy(created[0].state_dict())),
    )
    assert model is created[0]
    assert len(snapshots) == 4  # best at epoch 2, then 2 epochs without improvement
    assert not model.training
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, snapshots[1][key])
    assert not all(torch.equal(v, snapshots[3][k]) for k, v in model.state_dict().items())
    images_2d = [img[4] for img in train_x]
    model_2d = train_resnet18(images_2d, train_y, images_2d, train_y, 2, ResNetConfig(epochs=1, augment=False))
    assert predict_resnet18(model_2d, images_2d).shape == (5,)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("epochs", 0),
        ("batch_size", 1),
        ("lr", 0.0),
        ("lr", float("nan")),
        ("weight_decay", -1.0),
        ("patience", 0),
        ("seed", -1),
        ("device", "not-a-device"),
        ("augment", "yes"),
    ],
)
def test_resnet_config_errors(field: str, value: object) -> None:
    with pytest.raises(InvalidInputError, match=field):
        ResNetConfig(**{field: value})  # type: ignore[arg-type]


def test_train_resnet18_input_errors() -> None:
    x, y = _blobs(4, 8, seed=7)
    cfg = ResNetConfig(epochs=1)
    with pytest.raises(InvalidInputError, match="n_classes"):
        train_resnet18(x, y, x, y, 1, cfg)
    with pytest.raises(InvalidInputError, match="train_classes"):
        train_resnet18(x, [0, 1, 2, 0], x, y, 2, cfg)
    with pytest.raises(InvalidInputError, match="val_classes"):
        train_resnet18(x, y, x, y[:3], 2, cfg)
    with pytest.raises(InvalidInputError, match="val_images"):
        train_resnet18(x, y, [img[:4] for img in x], y, 2, cfg)
    with pytest.raises(InvalidInputError, match="train_images"):
        train_resnet18(x[:1], y[:1], x, y, 2, cfg)
    with pytest.raises(InvalidInputError, match="batch_size"):
        predict_resnet18(torch.nn.Identity(), x, batch_size=0)
