"""The fine-tuning part of ``fmscope quickstart``: 3-shot nucleus segmentation from the pretrained backbone and from
scratch, prediction of an unseen phantom volume, Dice against its ground truth beside Otsu, and an overlay."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fmscope.config import from_dict
from fmscope.data import lightsheet_phantom
from fmscope.data.labelled import load_labelled
from fmscope.data.samples import normalise
from fmscope.evaluation.figures import save_overlay
from fmscope.io import ImageMetadata, read_image, write_image
from fmscope.metrics import dice
from fmscope.segment import ClassicalConfig, segment_classical
from fmscope.tasks.config import FinetuneConfig
from fmscope.tasks.finetune import finetune
from fmscope.tasks.predict import predict_file
from fmscope.utils.progress import ProgressCallback, sub_progress

SHAPE = (32, 64, 64)
EPOCHS, STEPS_PER_EPOCH, FREEZE_EPOCHS = 30, 8, 3
QUICK = {"batch_size": 2, "patience": 10, "patch_size": [32, 32, 32]}


@dataclass(frozen=True)
class FinetuneSummary:
    dice: dict[str, float]  # method -> Dice of the nuclei on the unseen test volume
    seconds: dict[str, float]
    overlay: Path
    model: str = "unet-cpu"
    shape: tuple[int, int, int] = SHAPE


def _write(folder: Path, name: str, seed: int, shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    ph = lightsheet_phantom(shape, structures=("nuclei",), seed=seed)
    label = (ph.semantic > 0).astype(np.uint8)
    write_image(folder / f"{name}.tif", ph.image, ImageMetadata.for_array(ph.image, spacing=ph.spacing))
    write_image(folder / f"{name}_label.tif", label, ImageMetadata.for_array(label, spacing=ph.spacing), labels=True)
    return ph.image, label


def finetune_on_phantoms(
    folder: Path,
    pretrained: Path | None,
    *,
    pretrained_label: str = "fine-tuned from the pretrained model",
    seed: int = 0,
    model: str = "unet-cpu",
    shape: tuple[int, int, int] = SHAPE,
    epochs: int = EPOCHS,
    steps_per_epoch: int = STEPS_PER_EPOCH,
    progress: ProgressCallback | bool | None = None,
) -> FinetuneSummary:
    """Three labelled phantom volumes of ``shape`` train, one validates, one unseen volume tests; pretrained vs
    scratch vs Otsu. Fine-tuning: ``model`` from scratch (a pretrained folder brings its own), ``epochs`` epochs of
    ``steps_per_epoch`` steps, a pretrained encoder frozen for the first 3 (at most ``epochs - 1``). ``progress``: one
    stage per fine-tuning, its epochs, then its prediction."""
    for split in ("train", "val", "test"):
        (folder / split).mkdir(parents=True)
    for i in range(3):
        _write(folder / "train", f"nuclei_{i}", seed + 100 + i, shape)
    _write(folder / "val", "nuclei_val", seed + 200, shape)
    image, truth = _write(folder / "test", "nuclei_test", seed + 300, shape)
    train, val = load_labelled(folder / "train", "segment"), load_labelled(folder / "val", "segment")
    loop = {"epochs": epochs, "steps_per_epoch": steps_per_epoch, "freeze_epochs": min(FREEZE_EPOCHS, epochs - 1)}
    config = from_dict(FinetuneConfig, {**QUICK, **loop, "model": model, "seed": seed})
    inits = {pretrained_label: str(pretrained)} if pretrained is not None else {}
    inits["fine-tuned from scratch"] = "scratch"
    scores, seconds, masks = {}, {}, {}
    for name, init in inits.items():
        t0 = time.perf_counter()
        stage = sub_progress(progress, name)
        run = "scratch" if init == "scratch" else "pretrained"
        result = finetune(config, train, val, folder / f"run_{run}", init=init, progress=stage)
        test, output = folder / "test" / "nuclei_test.tif", folder / f"predicted_{run}.tif"
        out = predict_file(result.model_dir, test, output, progress=sub_progress(progress, f"predicting ({name})"))
        masks[name] = read_image(out.output).numpy() == 1
        scores[name], seconds[name] = dice(masks[name], truth == 1), time.perf_counter() - t0
    otsu = segment_classical(normalise(image, 1.0, 99.8)[0], ClassicalConfig(method="otsu", min_size=10)).mask
    masks["Otsu"], scores["Otsu"] = otsu, dice(otsu, truth == 1)
    z = int(np.argmax(truth.sum(axis=(1, 2))))
    overlay = save_overlay(
        folder / "finetune_overlay.png",
        image[z],
        {"ground truth": truth[z] == 1, **{f"{k} (Dice {scores[k]:.3f})": m[z] for k, m in masks.items()}},
        title=f"unseen test phantom, slice z={z}",
    )
    return FinetuneSummary(scores, seconds, overlay, model, shape)


def finetune_markdown(summary: FinetuneSummary, relative_overlay: str) -> str:
    lines = [
        f"3-shot segmentation of nuclei: `{summary.model}` fine-tuned on three labelled {summary.shape} phantom "
        "volumes (one more validates for early stopping), then `fmscope predict` on an unseen volume, scored against "
        "its ground truth.",
        "",
        "| method | Dice on the unseen volume | seconds (fine-tune + predict) |",
        "|---|---|---|",
    ]
    for name, value in summary.dice.items():
        secs = f"{summary.seconds[name]:.0f}" if name in summary.seconds else "-"
        lines.append(f"| {name} | {value:.3f} | {secs} |")
    lines += ["", f"![fine-tuning overlay]({relative_overlay})"]
    return "\n".join(lines)
