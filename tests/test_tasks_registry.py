"""Tasks as plug-ins: the registry refuses unknown names (listing the registered ones), a fourth task defined here in
one class plus one registration trains, saves, loads, predicts and reports through the shared code, and a 2D model
predicts a stack slice by slice."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from fmscope.data import lightsheet_phantom
from fmscope.data.labelled import load_labelled
from fmscope.data.samples import Sample
from fmscope.errors import InvalidInputError
from fmscope.evaluation.bench_config import DatatypeConfig
from fmscope.evaluation.benchmark import columns
from fmscope.evaluation.report import summary_markdown
from fmscope.io import ImageMetadata, read_image, write_image
from fmscope.metrics import dice
from fmscope.models import create_model
from fmscope.tasks import get_task, register_task, task_names, unregister_task
from fmscope.tasks.base import DenseTask, LossFn
from fmscope.tasks.config import FinetuneConfig
from fmscope.tasks.finetune import finetune
from fmscope.tasks.model import TaskModel, TaskSpec, load_task_model
from fmscope.tasks.predict import predict_array, predict_file

TINY = {"model": "unet-tiny", "epochs": 2, "steps_per_epoch": 2, "batch_size": 2, "freeze_epochs": 0, "augment": False}


class ForegroundTask(DenseTask):
    """Foreground probability by regression (one sigmoid output, MSE to the mask): a task the package does not ship."""

    name = "foreground"
    target = "mask"
    score_name = "foreground Dice"
    metrics = ("fg_dice", "mse")
    table_metrics = ("fg_dice",)
    main_metric = "fg_dice"

    def benchmark_classes(self, found: Sequence[str], structure: str) -> tuple[str, ...]:
        return ("background", structure)

    def n_outputs(self, classes: tuple[str, ...]) -> int:
        return 1

    def dense_output(self, model: TaskModel, x: Tensor) -> Tensor:
        return torch.sigmoid(model(x))

    def make_loss(self, config: FinetuneConfig, model: TaskModel, samples: list[Sample]) -> LossFn:
        return lambda output, batch: F.mse_loss(torch.sigmoid(output), (batch["label"] > 0).float())

    def predict(self, model: TaskModel, image: np.ndarray, overlap: float, device: torch.device) -> np.ndarray:
        return self.predict_dense(model, image, overlap, device)[0]

    def validation_scores(
        self, predictions: list[Any], samples: list[Sample], classes: tuple[str, ...]
    ) -> dict[str, float]:
        values = [dice(p > 0.5, s.label > 0) for p, s in zip(predictions, samples, strict=True)]  # type: ignore[operator]
        return {"score": float(np.mean(values))}

    def score(
        self, predictions: list[Any], samples: list[Sample], classes: tuple[str, ...], **_: Any
    ) -> dict[str, float]:
        pairs = list(zip(predictions, samples, strict=True))
        return {
            "fg_dice": float(np.mean([dice(p > 0.5, s.label > 0) for p, s in pairs])),  # type: ignore[operator]
            "mse": float(np.mean([np.mean((p - (s.label > 0)) ** 2) for p, s in pairs])),  # type: ignore[operator]
        }

    def output_image(
        self, scores: Any, *, probabilities: bool = False, instances: str | None = None
    ) -> tuple[Any, bool]:
        return (scores[0] if probabilities else (scores[0] > 0.5).astype(np.uint8)), not probabilities


@pytest.fixture
def foreground() -> Iterator[ForegroundTask]:
    task = register_task(ForegroundTask(), short="fg")
    yield task
    unregister_task("foreground")


def write_slices(folder: Path, seeds: Sequence[int]) -> Path:
    folder.mkdir(parents=True)
    for seed in seeds:
        ph = lightsheet_phantom((8, 48, 48), seed=seed, structures=("nuclei",))
        image, label = ph.image[4].astype(np.float32), (ph.semantic[4] > 0).astype(np.uint8)
        write_image(folder / f"s{seed}.tif", image, ImageMetadata.for_array(image))
        write_image(folder / f"s{seed}_label.tif", label, ImageMetadata.for_array(label))
    return folder


def test_unknown_task_names_list_the_registered_ones() -> None:
    assert task_names()[:3] == ("segment", "classify", "deblur")
    for make in (
        lambda: get_task("denoise"),
        lambda: FinetuneConfig(task="denoise"),
        lambda: TaskSpec("denoise", ("a", "b")),
        lambda: DatatypeConfig("x", "denoise", folders=("f",)),
    ):
        with pytest.raises(InvalidInputError, match=r"unknown task 'denoise'.*'segment', 'classify', 'deblur'"):
            make()
    with pytest.raises(InvalidInputError, match="built-in"):
        unregister_task("segment")


def test_a_fourth_task_is_one_class_and_one_registration(foreground: ForegroundTask, tmp_path: Path) -> None:
    train = load_labelled(write_slices(tmp_path / "train", [0]), "segment")
    val = load_labelled(write_slices(tmp_path / "val", [1]), "segment")
    result = finetune(FinetuneConfig(task="foreground", **TINY), train, val, tmp_path / "run")  # type: ignore[arg-type]
    assert 0.0 <= result.best_score <= 1.0
    model = load_task_model(result.model_dir, task="foreground")
    assert model.spec.n_outputs == 1 and model.task is foreground
    out = predict_file(result.model_dir, tmp_path / "val" / "s1.tif", tmp_path / "pred.tif")
    written = read_image(out.output).numpy()
    assert written.shape == (48, 48) and set(np.unique(written)) <= {0, 1}
    # the benchmark's columns and the report's metrics follow from the registered tasks
    assert {"fg_dice", "mse"} <= set(columns()) and get_task("foreground").metrics == ("fg_dice", "mse")
    rows = [{"method": "m", "datatype": "d", "task": "foreground", "train_size": 2, "fold": 0, "fg_dice": 0.5}]
    text = summary_markdown(rows, title="t")
    assert "## foreground" in text and "### fg_dice" in text


def test_a_2d_model_predicts_a_stack_slice_by_slice(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = TaskModel(create_model("unet-tiny", spatial_dims=2, patch_size=(32, 32)), TaskSpec("segment", ("b", "f")))
    rng = np.random.default_rng(0)
    stack = (rng.random((3, 40, 44)) * 1000).astype(np.float32)
    stack[1] *= 7.0  # each slice is windowed by its own percentiles, as the 2D training images were
    scores = predict_array(model, stack)
    assert scores.shape == (2, 3, 40, 44)
    for z in range(3):
        np.testing.assert_allclose(scores[:, z], predict_array(model, stack[z]), atol=1e-6)
    with pytest.raises(InvalidInputError, match="the model is 2D"):
        predict_array(model, stack[None])
    from fmscope.tasks.model import save_task_model

    save_task_model(model, tmp_path / "m")
    write_image(tmp_path / "stack.tif", stack, ImageMetadata.for_array(stack))
    result = predict_file(tmp_path / "m", tmp_path / "stack.tif", tmp_path / "labels.tif")
    np.testing.assert_array_equal(read_image(result.output).numpy(), scores.argmax(axis=0))
