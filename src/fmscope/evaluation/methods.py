"""The compared methods of a benchmark, all fed the same normalised samples and scored by the same code.

:func:`run_method` trains a method on the training (and validation) units of one fold and returns its prediction
for every test unit: a boolean structure mask (segment), a class index (classify) or the restored image in the
degraded image's [0, 1] window (deblur). :func:`score` turns predictions into the report's metrics.

* ``otsu``: Otsu threshold + clean-up (:func:`fmscope.segment.segment_classical`), no training data.
* ``rf``: random forest on multi-scale filter features (ilastik-style), fitted on all ``train_size`` units (it has
  no model selection, so the validation units train it too).
* ``finetune``: :func:`fmscope.tasks.finetune.finetune` from scratch or from a pretrained model, early stopping on the
  validation units, then sliding-window prediction of the test units.
* ``pca-lr``, ``resnet18``: PCA + logistic regression and a 3D ResNet-18 from scratch on the centre crop.
* ``identity`` (the degraded input itself) and ``richardson-lucy`` (deconvolution with the known Gaussian blur).
* ``cellpose``: a Cellpose model from a local weights file (``options.model``), as is, with its own instances;
  a skipped row when Cellpose is not installed or the file is missing.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fmscope.config import from_dict
from fmscope.data.degradation import DegradationConfig
from fmscope.data.samples import Sample, centre_patch, load_samples
from fmscope.evaluation.baselines import (
    ResNetConfig,
    fit_pca_logistic,
    predict_pca_logistic,
    predict_resnet18,
    train_resnet18,
)
from fmscope.evaluation.bench_config import DatatypeConfig, MethodSpec
from fmscope.evaluation.units import Unit, labelled_set
from fmscope.inference.predict import WindowConfig, sliding_window_predict
from fmscope.io import read_image
from fmscope.metrics import binary_scores, classification_scores, count_ratio, instance_scores
from fmscope.metrics.binary import scores_from_counts
from fmscope.segment import ClassicalConfig, segment_classical
from fmscope.segment.pixel_classifier import PixelClassifier, PixelClassifierConfig
from fmscope.segment.postprocess import label_components, watershed_split
from fmscope.tasks.config import FinetuneConfig
from fmscope.tasks.finetune import finetune, resolve_device
from fmscope.tasks.model import load_task_model
from fmscope.tasks.restoration import restoration_metrics

logger = logging.getLogger(__name__)

UNTRAINED = ("otsu", "identity", "richardson-lucy", "cellpose")


@dataclass(frozen=True)
class Job:
    """One method on one fold of one datatype. ``init`` is the resolved model folder or ``'scratch'``."""

    datatype: DatatypeConfig
    method: MethodSpec
    classes: tuple[str, ...]
    train: list[Unit]
    val: list[Unit]
    seed: int
    workdir: Path
    finetune: dict[str, Any] = field(default_factory=dict)
    init: str = "scratch"
    keep_models: bool = False


def unavailable(method: MethodSpec, inits: dict[str, str]) -> str | None:
    """Why ``method`` cannot run here (a missing model folder, an external tool not installed), else None."""
    if method.kind == "finetune" and method.init != "scratch" and not inits.get(method.init):
        return f"model folder '{method.init}' not found"
    if method.kind == "cellpose":
        from fmscope.evaluation.external import cellpose_available

        weights = str(method.options.get("model", ""))
        if not weights or not Path(weights).is_file():
            return f"Cellpose weights file options.model={weights!r} not found (a local file; nothing is downloaded)"
        return cellpose_available()
    return None


def finetune_config(job: Job) -> FinetuneConfig:
    """The fine-tuning config of ``job``: the benchmark's ``finetune`` <- the datatype's <- the method's options <-
    task and seed."""
    data = {**job.finetune, **job.datatype.finetune, **job.method.options, "task": job.datatype.task, "seed": job.seed}
    if job.datatype.degradation:
        data["degradation"] = job.datatype.degradation
    return from_dict(FinetuneConfig, data)


def load_units(units: list[Unit], datatype: DatatypeConfig, classes: tuple[str, ...], seed: int = 0) -> list[Sample]:
    """Normalised samples of ``units`` (the fine-tuning data code: same percentiles, same synthesised blur)."""
    items = labelled_set(units, datatype.task, classes, ".").items
    degradation = from_dict(DegradationConfig, datatype.degradation)
    return load_samples(items, datatype.task, classes, degradation=degradation, seed=seed)


def _crop_size(samples: list[Sample]) -> tuple[int, ...]:
    return tuple(int(min(s.image.shape[a] for s in samples)) for a in range(samples[0].image.ndim))


def _gaussian_psf(sigma: tuple[float, ...]) -> np.ndarray:
    axes = [np.arange(-int(np.ceil(3 * s)), int(np.ceil(3 * s)) + 1) for s in sigma]
    grids = np.meshgrid(*axes, indexing="ij")
    psf = np.exp(-sum(g**2 / (2 * max(s, 1e-6) ** 2) for g, s in zip(grids, sigma, strict=True)))
    return (psf / psf.sum()).astype(np.float32)


def _finetuned(job: Job, test: list[Sample]) -> list[Any]:
    config = finetune_config(job)
    run = job.workdir / "run"
    job.workdir.mkdir(parents=True, exist_ok=True)
    # Train and validation share a source only when the protocol split by unit (one source volume; the report's
    # notes say so): the units are then the independent samples, and no leakage warning is due.
    by_unit = bool({u.source for u in job.train} & {u.source for u in job.val})
    task_set = {
        k: labelled_set(v, job.datatype.task, job.classes, job.workdir, by_unit=by_unit)
        for k, v in (("train", job.train), ("val", job.val))
    }
    result = finetune(config, task_set["train"], task_set["val"], run, init=job.init, overwrite=True)
    model = load_task_model(result.model_dir, task=job.datatype.task)
    device = resolve_device(config.device)
    model = model.to(device).eval()
    size = model.backbone.config.patch_size
    out: list[Any] = []
    with torch.no_grad():
        for s in test:
            if job.datatype.task == "classify":
                x = torch.from_numpy(centre_patch(s.image, size))[None, None].to(device)
                out.append(int(model(x).argmax(dim=1)))
                continue
            window = WindowConfig(window=size, overlap=config.overlap, batch_size=2)
            pred = sliding_window_predict(
                s.image, model.dense, window, out_channels=model.spec.n_outputs, device=device
            )
            out.append(pred.argmax(axis=0) == 1 if job.datatype.task == "segment" else pred[0])
    if not job.keep_models:
        shutil.rmtree(result.model_dir, ignore_errors=True)
    return out


def run_method(job: Job, train: list[Sample], test: list[Sample]) -> list[Any]:
    """Predictions of ``job.method`` for every test sample (``train`` holds the training + validation samples for
    methods without model selection; see the module doc)."""
    kind, options, dt = job.method.kind, dict(job.method.options), job.datatype
    if kind == "otsu":
        config = from_dict(ClassicalConfig, {"method": "otsu", **dt.otsu})
        return [segment_classical(s.image, config).mask for s in test]
    if kind == "identity":
        return [s.image for s in test]
    if kind == "richardson-lucy":
        from skimage.restoration import richardson_lucy

        sigma = from_dict(DegradationConfig, dt.degradation).sigma_for(test[0].image.ndim)
        psf = _gaussian_psf(sigma)
        return [richardson_lucy(s.image, psf, num_iter=int(options.get("iterations", 10))) for s in test]
    if kind == "cellpose":
        from fmscope.evaluation.external import cellpose_segment

        cp = {k: v for k, v in options.items() if k != "model"}
        return cellpose_segment([s.image for s in test], model=options["model"], do_3d=test[0].image.ndim == 3, **cp)
    if kind == "rf":
        classifier = PixelClassifier(from_dict(PixelClassifierConfig, {"seed": job.seed, **options}))
        classifier.fit([s.image for s in train], [s.label for s in train])  # type: ignore[misc]
        return [classifier.predict(s.image) == 1 for s in test]
    if kind == "finetune":
        return _finetuned(job, test)
    size = _crop_size(train + test)
    images = [centre_patch(s.image, size) for s in train]
    n_train = len(job.train)
    classes = [int(s.class_index) for s in train]  # type: ignore[arg-type]
    tests = [centre_patch(s.image, size) for s in test]
    if kind == "pca-lr":
        model = fit_pca_logistic(images, classes, n_components=int(options.get("n_components", 16)), seed=job.seed)
        return [int(c) for c in predict_pca_logistic(model, tests)]
    resnet = from_dict(ResNetConfig, {"seed": job.seed, **options})
    val = slice(n_train, None) if len(images) > n_train else slice(None)  # one unit: it selects the model too
    net = train_resnet18(images[:n_train], classes[:n_train], images[val], classes[val], len(job.classes), resnet)
    return [int(c) for c in predict_resnet18(net, tests, device=resnet.device)]


def _instances(mask: np.ndarray, how: str) -> np.ndarray:
    return watershed_split(mask, min_distance=3) if how == "watershed" else label_components(mask)


def score(
    datatype: DatatypeConfig,
    classes: tuple[str, ...],
    test_units: list[Unit],
    test: list[Sample],
    predictions: list[Any],
) -> dict[str, float]:
    """The report's metrics of ``predictions`` on the test samples: pooled over the test set (Dice, IoU, accuracy,
    matched instance F1 at IoU 0.5, count ratio), accuracy and macro-F1, or mean SSIM and PSNR."""
    if datatype.task == "classify":
        truth = [int(s.class_index) for s in test]  # type: ignore[arg-type]
        result = classification_scores(predictions, truth, labels=list(range(len(classes))))
        return {"accuracy": result.accuracy, "macro_f1": result.macro_f1}
    if datatype.task == "deblur":
        pairs = zip(predictions, test, strict=True)
        values = [restoration_metrics(np.asarray(p, np.float32), np.asarray(s.target)) for p, s in pairs]
        return {k: float(np.mean([v[k] for v in values])) for k in ("ssim", "psnr")}
    counts = np.zeros(4, dtype=np.int64)
    tp = fp = fn = n_pred = n_gt = 0
    for unit, s, prediction in zip(test_units, test, predictions, strict=True):
        mask = np.asarray(prediction) > 0
        c = binary_scores(mask, s.label == 1)
        counts += (c.tp, c.fp, c.fn, c.tn)
        if datatype.instances != "none" and unit.instances is not None:
            given = np.issubdtype(np.asarray(prediction).dtype, np.integer)  # a method's own instances (Cellpose)
            objects = np.asarray(prediction) if given else _instances(mask, datatype.split_instances)
            found = instance_scores(objects, read_image(unit.instances).numpy(), thresholds=(0.5,))
            tp, fp, fn = tp + found.tp[0], fp + found.fp[0], fn + found.fn[0]
            n_pred, n_gt = n_pred + found.n_pred, n_gt + found.n_gt
    pooled = scores_from_counts(*(int(v) for v in counts))
    out = {"dice": pooled.dice, "iou": pooled.iou, "accuracy": pooled.accuracy}
    if n_gt or n_pred:
        out["instance_f1"] = 2 * tp / max(2 * tp + fp + fn, 1)
        out["count_ratio"] = count_ratio(int(n_pred), int(n_gt))
    return out
