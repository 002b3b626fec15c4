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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fmscope.config import from_dict
from fmscope.data.degradation import DegradationConfig
from fmscope.data.samples import Sample, centre_patch
from fmscope.errors import InvalidInputError
from fmscope.evaluation.baselines import (
    ResNetConfig,
    fit_pca_logistic,
    predict_pca_logistic,
    predict_resnet18,
    train_resnet18,
)
from fmscope.evaluation.bench_config import BenchmarkConfig, DatatypeConfig, MethodSpec
from fmscope.evaluation.units import Unit, labelled_set
from fmscope.io import read_image
from fmscope.segment import ClassicalConfig, segment_classical
from fmscope.segment.pixel_classifier import PixelClassifier, PixelClassifierConfig
from fmscope.tasks.config import FinetuneConfig
from fmscope.tasks.finetune import finetune
from fmscope.tasks.model import load_task_model
from fmscope.tasks.registry import get_task
from fmscope.utils.device import resolve_device

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    """One method on one fold of one datatype. ``init`` is the resolved model folder or ``'scratch'``; ``report``
    receives what a method says of its own run besides the predictions (a fine-tuning: its best validation score
    and epoch), written into the job's row."""

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
    report: dict[str, Any] = field(default_factory=dict)


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
    return get_task(datatype.task).load_samples(items, classes, degradation=degradation, seed=seed)


def _crop_size(samples: list[Sample]) -> tuple[int, ...]:
    return tuple(int(min(s.image.shape[a] for s in samples)) for a in range(samples[0].image.ndim))


def _gaussian_psf(sigma: tuple[float, ...]) -> np.ndarray:
    axes = [np.arange(-int(np.ceil(3 * s)), int(np.ceil(3 * s)) + 1) for s in sigma]
    grids = np.meshgrid(*axes, indexing="ij")
    psf = np.exp(-sum(g**2 / (2 * max(s, 1e-6) ** 2) for g, s in zip(grids, sigma, strict=True)))
    return (psf / psf.sum()).astype(np.float32)


def _finetuned(job: Job, train: list[Sample], test: list[Sample]) -> list[Any]:
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
    job.report.update(val_score=result.best_score, best_epoch=result.best_epoch)  # what a choice of settings may use
    model = load_task_model(result.model_dir, task=job.datatype.task)
    device = resolve_device(config.device)
    model = model.to(device).eval()
    with torch.no_grad():
        out = [model.task.predict(model, s.image, config.overlap, device) for s in test]
    if not job.keep_models:
        shutil.rmtree(result.model_dir, ignore_errors=True)
        shutil.rmtree(run / "checkpoints", ignore_errors=True)
    return out


def _otsu(job: Job, train: list[Sample], test: list[Sample]) -> list[Any]:
    config = from_dict(ClassicalConfig, {"method": "otsu", **job.datatype.otsu})
    return [segment_classical(s.image, config).mask for s in test]


def _identity(job: Job, train: list[Sample], test: list[Sample]) -> list[Any]:
    return [s.image for s in test]


def _richardson_lucy(job: Job, train: list[Sample], test: list[Sample]) -> list[Any]:
    from skimage.restoration import richardson_lucy

    sigma = from_dict(DegradationConfig, job.datatype.degradation).sigma_for(test[0].image.ndim)
    psf = _gaussian_psf(sigma)
    iterations = int(job.method.options.get("iterations", 10))
    return [richardson_lucy(s.image, psf, num_iter=iterations) for s in test]


def _cellpose(job: Job, train: list[Sample], test: list[Sample]) -> list[Any]:
    from fmscope.evaluation.external import cellpose_segment

    options = dict(job.method.options)
    cp = {k: v for k, v in options.items() if k != "model"}
    return cellpose_segment([s.image for s in test], model=options["model"], do_3d=test[0].image.ndim == 3, **cp)


def _rf(job: Job, train: list[Sample], test: list[Sample]) -> list[Any]:
    classifier = PixelClassifier(from_dict(PixelClassifierConfig, {"seed": job.seed, **job.method.options}))
    classifier.fit([s.image for s in train], [s.label for s in train])  # type: ignore[misc]
    return [classifier.predict(s.image) == 1 for s in test]


def _crops(train: list[Sample], test: list[Sample]) -> tuple[list[np.ndarray], list[int], list[np.ndarray]]:
    size = _crop_size(train + test)
    classes = [int(s.class_index) for s in train]  # type: ignore[arg-type]
    return [centre_patch(s.image, size) for s in train], classes, [centre_patch(s.image, size) for s in test]


def _pca_lr(job: Job, train: list[Sample], test: list[Sample]) -> list[Any]:
    images, classes, tests = _crops(train, test)
    n_components = int(job.method.options.get("n_components", 16))
    model = fit_pca_logistic(images, classes, n_components=n_components, seed=job.seed)
    return [int(c) for c in predict_pca_logistic(model, tests)]


def _resnet18(job: Job, train: list[Sample], test: list[Sample]) -> list[Any]:
    images, classes, tests = _crops(train, test)
    n_train = len(job.train)
    resnet = from_dict(ResNetConfig, {"seed": job.seed, **job.method.options})
    val = slice(n_train, None) if len(images) > n_train else slice(None)  # one unit: it selects the model too
    net = train_resnet18(images[:n_train], classes[:n_train], images[val], classes[val], len(job.classes), resnet)
    return [int(c) for c in predict_resnet18(net, tests, device=resnet.device)]


def _cellpose_unavailable(method: MethodSpec, inits: dict[str, str]) -> str | None:
    from fmscope.evaluation.external import cellpose_available

    weights = str(method.options.get("model", ""))
    if not weights or not Path(weights).is_file():
        return f"Cellpose weights file options.model={weights!r} not found (a local file; nothing is downloaded)"
    return cellpose_available()


def _init_unavailable(method: MethodSpec, inits: dict[str, str]) -> str | None:
    if method.init != "scratch" and not inits.get(method.init):
        return f"model folder '{method.init}' not found"
    return None


Runner = Callable[[Job, list[Sample], list[Sample]], list[Any]]


@dataclass(frozen=True)
class MethodKind:
    """One kind of compared method.

    Attributes:
        run: ``(job, train, test) -> predictions`` (see :func:`run_method`).
        tasks: the tasks it applies to (``()``: every registered task).
        trained: it learns from the training units (else one row per datatype, ``train_size`` 0).
        needs_samples: it is fed the training + validation samples (methods without their own model selection).
        fine_tunes: it is :func:`fmscope.tasks.finetune.finetune` (takes an ``init`` and the config's ``finetune``).
        own_instances: its segmentation predictions are instance labels already (scored as they are).
        unavailable: why it cannot run here (missing weights or package), else None.
        options: what ``options`` may hold: the typed config it builds (checked with ``seed`` added), the allowed
            keys, or None (anything: passed on to an external tool).
    """

    run: Runner
    tasks: tuple[str, ...]
    trained: bool = True
    needs_samples: bool = False
    fine_tunes: bool = False
    own_instances: bool = False
    unavailable: Callable[[MethodSpec, dict[str, str]], str | None] | None = None
    options: type | tuple[str, ...] | None = ()

    def applies_to(self, task: str) -> bool:
        return not self.tasks or task in self.tasks


METHODS: dict[str, MethodKind] = {
    "otsu": MethodKind(_otsu, ("segment",), trained=False),
    "rf": MethodKind(_rf, ("segment",), needs_samples=True, options=PixelClassifierConfig),
    "finetune": MethodKind(_finetuned, (), fine_tunes=True, unavailable=_init_unavailable, options=FinetuneConfig),
    "pca-lr": MethodKind(_pca_lr, ("classify",), needs_samples=True, options=("n_components",)),
    "resnet18": MethodKind(_resnet18, ("classify",), needs_samples=True, options=ResNetConfig),
    "identity": MethodKind(_identity, ("deblur",), trained=False),
    "richardson-lucy": MethodKind(_richardson_lucy, ("deblur",), trained=False, options=("iterations",)),
    "cellpose": MethodKind(
        _cellpose, ("segment",), trained=False, own_instances=True, unavailable=_cellpose_unavailable, options=None
    ),
}


def check_settings(config: BenchmarkConfig) -> None:
    """Every settings mapping of ``config`` against the typed config it feeds (unknown keys and bad values fail at
    load, naming the key and the allowed ones, not hours into a run). The mappings stay partial overrides, merged in
    order (the config's ``finetune`` <- the datatype's <- the method's ``options``), so they are checked merged."""
    for m in config.methods:
        kind, where = METHODS[m.kind], f"methods[{m.name}].options"
        if isinstance(kind.options, tuple):
            unknown = sorted(set(m.options) - set(kind.options))
            if unknown:
                raise InvalidInputError(f"{where}: unknown key(s) {unknown}; allowed: {list(kind.options)}")
        elif kind.options is not None and not kind.fine_tunes:
            from_dict(kind.options, {"seed": 0, **m.options}, where)
    for dt in config.datatypes:
        from_dict(ClassicalConfig, {"method": "otsu", **dt.otsu}, f"datatypes[{dt.name}].otsu")
        from_dict(DegradationConfig, dt.degradation, f"datatypes[{dt.name}].degradation")
        for m in (m for m in config.methods if METHODS[m.kind].fine_tunes and m.applies_to(dt.task)):
            merged = {**config.finetune, **dt.finetune, **m.options, "task": dt.task}
            try:
                from_dict(FinetuneConfig, merged)
            except InvalidInputError as exc:
                raise InvalidInputError(
                    f"finetune settings of methods[{m.name}] on datatypes[{dt.name}] (finetune <- "
                    f"datatypes[{dt.name}].finetune <- methods[{m.name}].options): {exc}"
                ) from None


def unavailable(method: MethodSpec, inits: dict[str, str]) -> str | None:
    """Why ``method`` cannot run here (a missing model folder, an external tool not installed), else None."""
    check = METHODS[method.kind].unavailable
    return None if check is None else check(method, inits)


def run_method(job: Job, train: list[Sample], test: list[Sample]) -> list[Any]:
    """Predictions of ``job.method`` for every test sample (``train`` holds the training + validation samples for
    methods without model selection; see the module doc)."""
    return METHODS[job.method.kind].run(job, train, test)


def score(
    datatype: DatatypeConfig,
    classes: tuple[str, ...],
    test_units: list[Unit],
    test: list[Sample],
    predictions: list[Any],
    *,
    own_instances: bool = False,
) -> dict[str, float]:
    """The report's metrics of ``predictions`` on the test samples, as the datatype's task scores them (segment:
    pooled Dice, IoU, accuracy, matched instance F1 at IoU 0.5 and count ratio where the units have instances)."""
    truth = [
        read_image(u.instances).numpy() if datatype.instances != "none" and u.instances is not None else None
        for u in test_units
    ]
    return get_task(datatype.task).score(
        predictions, test, classes, instances=truth, own_instances=own_instances, split=datatype.split_instances
    )
