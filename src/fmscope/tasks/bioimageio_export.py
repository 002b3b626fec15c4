"""``fmscope export bioimageio MODEL_DIR -o PACKAGE.zip``: a fine-tuned segmentation or restoration model as a
bioimage.io model package (format 0.5), which ilastik, deepImageJ, QuPath, Fiji and napari run alike.

The package holds ``rdf.yaml`` and the files it names: weights as ``pytorch_state_dict`` (the architecture is
:mod:`fmscope.tasks.bioimageio_network`, rebuilt from the saved configuration) and as ``torchscript`` (traced: needs
only torch), a test input (a centred crop of ``sample``, or of a light-sheet phantom) with the output fmscope's own
:func:`~fmscope.tasks.predict.predict_array` computes from it, a cover (the input beside the prediction) and a README.
The intensity window of the model (each volume scaled by its own ``low_percentile`` / ``high_percentile`` to [0, 1])
becomes the spec's preprocessing: ``scale_range`` over the spatial axes, then ``clip`` to [0, 1]. Input sizes are
``min + n * step`` with ``step`` the network's total downsampling.

The package is written only if ``bioimageio.core.test_model`` passes on it, offline (format validation, the test
output reproduced from the test input by each weight format, inference at other sizes); otherwise the export fails
naming the checks that failed. Needs the ``bioimageio`` extra (``pip install "fmscope[bioimageio]"``).
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fmscope.config import to_dict
from fmscope.data.samples import centre_patch
from fmscope.errors import FileFormatError, InvalidInputError, MissingDependencyError
from fmscope.tasks.model import TaskModel, load_task_model
from fmscope.tasks.predict import predict_array
from fmscope.utils.atomic import atomic_output, check_output_path

logger = logging.getLogger(__name__)

SUPPORTED_TASKS = ("segment", "deblur")
SPATIAL_AXES = ("z", "y", "x")
CITATIONS = (
    ("Mukherjee et al. (2025): Foundation Models for Zero-Shot Segmentation of Scientific Images without AI-Ready "
     "Data (Zenesis). ICPP 2025 DRAI workshop.", "https://arxiv.org/abs/2506.24039"),
    ("Scheinfeld et al. (2026): A Multimodal 3D Foundation Model for Light Sheet Fluorescence Microscopy Enables "
     "Few-Shot Segmentation, Classification, and Deblurring.", "https://arxiv.org/abs/2605.26026"),
    ("Cardoso et al. (2022): MONAI: An open-source framework for deep learning in healthcare.",
     "https://arxiv.org/abs/2211.02701"),
)  # fmt: skip


@dataclass(frozen=True)
class BioimageioExport:
    """The written package, the files inside it, the weight formats and each test_model check (name, status)."""

    package: Path
    files: tuple[str, ...]
    weight_formats: tuple[str, ...]
    checks: tuple[tuple[str, str], ...]
    seconds: float


def _require() -> None:
    try:
        import bioimageio.core  # noqa: F401
        import bioimageio.spec  # noqa: F401
    except ImportError:
        raise MissingDependencyError("bioimageio.core", "bioimageio") from None


def load_exportable(model_dir: str | os.PathLike[str]) -> TaskModel:
    """The task model of ``model_dir``, refused (naming what is supported) unless a dense segment/deblur model."""
    try:
        model = load_task_model(model_dir)
    except FileFormatError as exc:
        raise InvalidInputError(f"MODEL_DIR: {exc}; bioimage.io export takes fine-tuned {' or '.join(SUPPORTED_TASKS)}"
                                " models") from None  # fmt: skip
    if model.spec.task not in SUPPORTED_TASKS:
        raise InvalidInputError(f"MODEL_DIR: a {model.spec.task} model; bioimage.io export takes "
                                f"{' or '.join(SUPPORTED_TASKS)} models (a dense output per voxel)")  # fmt: skip
    return model


def _test_input(model: TaskModel, sample: np.ndarray | None) -> np.ndarray:
    """The raw test input: the centred patch-size crop of ``sample`` (default: a light-sheet phantom)."""
    patch = tuple(model.backbone.config.patch_size)
    if sample is None:
        from fmscope.data import lightsheet_phantom

        shape = tuple(max(p, m) for p, m in zip((1,) * (3 - len(patch)) + patch, (8, 16, 16), strict=True))
        image = lightsheet_phantom(shape, seed=0).image.astype(np.float32)  # type: ignore[arg-type]
        sample = image[image.shape[0] // 2] if len(patch) == 2 else image
    arr = np.asarray(sample, dtype=np.float32)
    if arr.ndim != len(patch):
        raise InvalidInputError(f"--sample: the model is {len(patch)}D, got an image of shape {arr.shape}")
    return centre_patch(arr, patch)


def _cover(path: Path, raw: np.ndarray, result: np.ndarray, task: str) -> None:
    """The input's middle slice beside the prediction (labels in colour, or the restored image): a 2:1 PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plane = raw[raw.shape[0] // 2] if raw.ndim == 3 else raw
    out = result[:, result.shape[1] // 2] if result.ndim == 4 else result
    fig, axes = plt.subplots(1, 2, figsize=(6, 3), dpi=100)
    low, high = np.percentile(plane, (1, 99.8))
    axes[0].imshow(plane, cmap="gray", vmin=low, vmax=high)
    axes[0].set_title("input", fontsize=9)
    if task == "segment":
        axes[1].imshow(plane, cmap="gray", vmin=low, vmax=high)
        labels = np.argmax(out, axis=0)
        axes[1].imshow(np.ma.masked_equal(labels, 0), cmap="tab10", alpha=0.5, vmin=0, vmax=9, interpolation="nearest")
        axes[1].set_title("fmscope segmentation", fontsize=9)
    else:
        axes[1].imshow(out[0], cmap="gray", vmin=0, vmax=1)
        axes[1].set_title("fmscope restoration", fontsize=9)
    for ax in axes:
        ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _readme(path: Path, name: str, model: TaskModel, model_dir: Path, description: str) -> None:
    spec, config = model.spec, model.backbone.config
    classes = ", ".join(spec.classes) if spec.classes else "(one restored channel)"
    path.write_text(
        f"# {name}\n\n{description}\n\n"
        f"- Exported by fmscope from `{model_dir.name}`: task `{spec.task}`, outputs {classes}.\n"
        f"- Network: {config.architecture}, {config.spatial_dims}D, patch {tuple(config.patch_size)}; trained with "
        f"fmscope (see its README: fine-tuning from the shipped backbone).\n"
        f"- Input: one channel, any intensity range; each input is scaled by its own {spec.low_percentile} and "
        f"{spec.high_percentile} percentiles to [0, 1] (preprocessing `scale_range` + `clip`).\n"
        f"- Output: {'per-class probabilities (softmax)' if spec.task == 'segment' else 'the restored image in [0, 1]'}"
        ".\n- For volumes larger than memory, run the package with fmscope, which windows it blockwise: "
        "`fmscope predict PACKAGE.zip IN.zarr -o OUT.zarr --workers 2`.\n",
        encoding="utf-8",
    )


def export_bioimageio(
    model_dir: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    sample: np.ndarray | None = None,
    name: str | None = None,
    description: str | None = None,
    authors: tuple[str, ...] = ("fmscope user",),
    license: str = "MIT",
    torchscript: bool = True,
    overwrite: bool = False,
) -> BioimageioExport:
    """Export ``model_dir`` to the bioimage.io package ``output`` (a ``.zip``; see the module doc)."""
    t0 = time.perf_counter()
    out = Path(output)
    if out.suffix != ".zip":
        raise InvalidInputError(f"-o: a bioimage.io package is a .zip, got '{out}'")
    check_output_path(out, overwrite)
    _require()
    root = Path(model_dir)
    model = load_exportable(root)
    raw = _test_input(model, sample)
    expected = np.asarray(predict_array(model, raw), dtype=np.float32)
    with tempfile.TemporaryDirectory(prefix="fmscope-bioimageio-") as tmp:
        work = Path(tmp)
        descr = _describe(model, root, raw, expected, work, name or f"fmscope {model.spec.task} {root.name}",
                          description or f"An fmscope {model.spec.task} model ({root.name}).", authors, license,
                          torchscript)  # fmt: skip
        from bioimageio.spec import save_bioimageio_package

        built = save_bioimageio_package(descr, output_path=work / "package.zip")
        checks = run_test_model(built)
        with atomic_output(out, overwrite=overwrite) as target:
            shutil.copyfile(built, target)
    import zipfile

    with zipfile.ZipFile(out) as z:
        files = tuple(sorted(z.namelist()))
    formats = ("pytorch_state_dict", "torchscript") if torchscript else ("pytorch_state_dict",)
    logger.info("bioimage.io package %s: %d files, test_model passed", out, len(files))
    return BioimageioExport(out, files, formats, checks, time.perf_counter() - t0)


def run_test_model(package: str | os.PathLike[str]) -> tuple[tuple[str, str], ...]:
    """``bioimageio.core.test_model`` on ``package``: every check's (name, status); raises naming those that failed."""
    from bioimageio.core import test_model

    summary = test_model(Path(package))
    checks = tuple((str(d.name), str(d.status)) for d in summary.details)
    if summary.status != "passed":
        failed = [f"{d.name}: {'; '.join(str(e.msg) for e in d.errors) or d.status}" for d in summary.details
                  if d.status == "failed"]  # fmt: skip
        raise InvalidInputError(f"bioimage.io test_model failed ({len(failed)} checks): " + " | ".join(failed))
    return checks


def _describe(
    model: TaskModel, root: Path, raw: np.ndarray, expected: np.ndarray, work: Path, name: str, description: str,
    authors: tuple[str, ...], license: str, torchscript: bool,
) -> Any:  # fmt: skip
    import importlib

    from fmscope import __version__
    from fmscope.tasks import bioimageio_network

    v: Any = importlib.import_module("bioimageio.spec.model.v0_5")  # pydantic types, validated at run time
    spec, config = model.spec, model.backbone.config
    ndim = config.spatial_dims
    axes = SPATIAL_AXES[-ndim:]
    step = 32 if config.architecture == "swinunetr" else math.prod(config.strides)  # SwinUNETR: 5 halvings
    np.save(work / "test_input.npy", raw[None, None])
    np.save(work / "test_output.npy", expected[None])
    network = bioimageio_network.FmscopeDense(to_dict(config), to_dict(spec)).eval()
    network.model.load_state_dict(model.state_dict())
    torch.save(network.state_dict(), work / "weights.pt")
    shutil.copyfile(bioimageio_network.__file__, work / "fmscope_network.py")
    _cover(work / "cover.png", raw, expected, spec.task)
    _readme(work / "README.md", name, model, root, description)

    raw_id, out_id = v.TensorId("raw"), v.TensorId("prediction")
    space_in = [v.SpaceInputAxis(id=v.AxisId(a), size=v.ParameterizedSize(min=2 * step, step=step)) for a in axes]
    space_out = [v.SpaceOutputAxis(id=v.AxisId(a), size=v.SizeReference(tensor_id=raw_id, axis_id=v.AxisId(a)))
                 for a in axes]  # fmt: skip
    channels = list(spec.classes) if spec.task == "segment" else ["restored"]
    inputs = [v.InputTensorDescr(
        id=raw_id, description="one-channel raw image, any intensity range",
        axes=[v.BatchAxis(), v.ChannelAxis(channel_names=[v.Identifier("raw")]), *space_in],
        test_tensor=v.FileDescr(source=work / "test_input.npy"),
        preprocessing=[
            v.ScaleRangeDescr(kwargs=v.ScaleRangeKwargs(axes=[v.AxisId(a) for a in axes],
                                                        min_percentile=spec.low_percentile,
                                                        max_percentile=spec.high_percentile)),
            v.ClipDescr(kwargs=v.ClipKwargs(min=0.0, max=1.0)),
        ],
    )]  # fmt: skip
    outputs = [v.OutputTensorDescr(
        id=out_id, description="class probabilities" if spec.task == "segment" else "restored image in [0, 1]",
        axes=[v.BatchAxis(), v.ChannelAxis(channel_names=[v.Identifier(_identifier(c)) for c in channels]),
              *space_out],
        test_tensor=v.FileDescr(source=work / "test_output.npy"),
    )]  # fmt: skip
    version = v.Version(torch.__version__.split("+")[0])
    weights: dict[str, Any] = {"pytorch_state_dict": v.PytorchStateDictWeightsDescr(
        source=work / "weights.pt", pytorch_version=version,
        architecture=v.ArchitectureFromFileDescr(source=work / "fmscope_network.py", callable=v.Identifier(
            "FmscopeDense"), kwargs={"backbone": to_dict(config), "task": to_dict(spec)}),
    )}  # fmt: skip
    if torchscript:
        example = torch.from_numpy(np.clip(raw, 0, None)[None, None] / max(float(raw.max()), 1e-6)).float()
        with torch.no_grad():
            traced = torch.jit.trace(network, example, check_trace=False)
        traced.save(str(work / "weights_torchscript.pt"))
        weights["torchscript"] = v.TorchscriptWeightsDescr(source=work / "weights_torchscript.pt",
                                                           pytorch_version=version,
                                                           parent="pytorch_state_dict")  # fmt: skip
    import pydantic

    try:
        return _model_descr(v, name, description, authors, license, work, ndim, config, spec, inputs, outputs,
                            weights, __version__, root)  # fmt: skip
    except pydantic.ValidationError as exc:
        flags = {"name": "--name", "description": "--description", "license": "--license", "authors": "--author"}
        fields = sorted({str(e["loc"][0]) for e in exc.errors() if e.get("loc")})
        named = ", ".join(flags.get(f, f) for f in fields)
        raise InvalidInputError(f"{named}: not accepted by the bioimage.io spec: "
                                f"{'; '.join(e['msg'] for e in exc.errors())}") from None  # fmt: skip


def _model_descr(
    v: Any, name: str, description: str, authors: tuple[str, ...], license: str, work: Path, ndim: int, config: Any,
    spec: Any, inputs: Any, outputs: Any, weights: dict[str, Any], version: str, root: Path,
) -> Any:  # fmt: skip
    return v.ModelDescr(
        name=name, description=description, authors=[v.Author(name=a) for a in authors],
        cite=[v.CiteEntry(text=text, url=url) for text, url in CITATIONS], license=license,
        documentation=v.FileDescr(source=work / "README.md"), covers=[v.FileDescr(source=work / "cover.png")],
        tags=["fmscope", f"{ndim}d", "pytorch", config.architecture,
              "semantic-segmentation" if spec.task == "segment" else "restoration"],
        inputs=inputs, outputs=outputs, weights=v.WeightsDescr(**weights),
        config={"fmscope": {"version": version, "task": spec.task, "classes": list(spec.classes),
                            "model_dir": root.name, "patch_size": list(config.patch_size)}},
    )  # fmt: skip


def _identifier(name: str) -> str:
    """A channel name as a bioimage.io identifier (letters, digits, underscores; not starting with a digit)."""
    clean = "".join(c if c.isalnum() or c == "_" else "_" for c in name) or "channel"
    return clean if not clean[0].isdigit() else f"c_{clean}"
