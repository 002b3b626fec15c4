"""bioimage.io export and import (issue 17): an exported package passes bioimageio.core's test_model offline, and
``fmscope predict PACKAGE.zip`` gives what ``fmscope predict MODEL_DIR`` gives, in memory, streamed and blockwise."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from fmscope.data import lightsheet_phantom
from fmscope.errors import InvalidInputError
from fmscope.inference.blockwise_output import BlockwiseConfig
from fmscope.io import ImageMetadata, read_image, write_image
from fmscope.models import create_model, save_model
from fmscope.tasks.model import TaskModel, TaskSpec, save_task_model
from fmscope.tasks.predict import predict_file
from fmscope.tasks.predict_blockwise import predict_blockwise

pytest.importorskip("bioimageio.core", reason="bioimage.io needs the bioimageio extra (make setup installs it)")

from fmscope.tasks import bioimageio_export  # noqa: E402
from fmscope.tasks.bioimageio_export import export_bioimageio  # noqa: E402
from fmscope.tasks.bioimageio_package import load_package  # noqa: E402


def task_model(root: Path, task: str, classes: tuple[str, ...]) -> Path:
    torch.manual_seed(0)
    return save_task_model(TaskModel(create_model("unet-tiny"), TaskSpec(task, classes)).eval(), root / task)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("bioimageio")
    model = task_model(root, "segment", ("background", "nucleus"))
    done = export_bioimageio(model, root / "nuclei.zip", name="fmscope tiny nuclei", authors=("A. Tester",))
    x = lightsheet_phantom((40, 56, 64), seed=1).image
    write_image(root / "volume.zarr", x, ImageMetadata.for_array(x))
    assert done.package.is_file()
    return model, done.package, root / "volume.zarr"


def test_the_exported_package_passes_test_model_and_holds_what_the_spec_needs(
    exported: tuple[Path, Path, Path],
) -> None:
    _, package, _ = exported
    with zipfile.ZipFile(package) as z:
        names = set(z.namelist())
        rdf = yaml.safe_load(z.read("rdf.yaml"))
    assert names == {"rdf.yaml", "README.md", "cover.png", "fmscope_network.py", "test_input.npy",
                     "test_output.npy", "weights.pt", "weights_torchscript.pt"}  # fmt: skip
    assert set(rdf["weights"]) == {"pytorch_state_dict", "torchscript"}
    assert [c["url"] for c in rdf["cite"]][:2] == [
        "https://arxiv.org/abs/2506.24039",
        "https://arxiv.org/abs/2605.26026",
    ]
    pre = [p for p in rdf["inputs"][0]["preprocessing"] if p["id"] != "ensure_dtype"]  # the spec adds dtype steps
    assert [p["id"] for p in pre] == ["scale_range", "clip"]
    assert pre[0]["kwargs"]["min_percentile"] == 1.0 and pre[0]["kwargs"]["max_percentile"] == 99.8
    assert rdf["outputs"][0]["axes"][1]["channel_names"] == ["background", "nucleus"]
    checks = bioimageio_export.run_test_model(package)  # again, on the written zip
    assert len(checks) >= 10 and all(status == "passed" for _, status in checks)
    assert any("Reproduce test outputs" in name and "torchscript" in name for name, _ in checks)


def test_predict_with_the_package_equals_predict_with_the_model_folder(
    exported: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    model, package, volume = exported
    own = read_image(predict_file(model, volume, tmp_path / "own.tif", probabilities=True).output).numpy()
    zoo = read_image(predict_file(package, volume, tmp_path / "zoo.tif").output).numpy()  # streamed (lazy input)
    assert zoo.shape == own.shape == (2, 40, 56, 64)
    np.testing.assert_allclose(zoo, own, atol=1e-5)
    whole = BlockwiseConfig(block_shape=(40, 56, 64), chunks=(8, 56, 64), halo=(0, 0, 0))
    predict_blockwise(package, volume, tmp_path / "one.zarr", whole)  # one block: the same windows
    np.testing.assert_allclose(read_image(tmp_path / "one.zarr").numpy(), zoo, atol=1e-6)
    blocks = BlockwiseConfig(block_shape=(16, 56, 64), chunks=(8, 56, 64))
    done = predict_blockwise(package, volume, tmp_path / "blocks.zarr", blocks)
    assert done.result.complete and len(done.plan) == 3 and done.plan.halo == (16, 16, 16)
    got = read_image(tmp_path / "blocks.zarr").numpy()
    # each block tiles its own read region with windows: the blend differs a little from the whole-volume one
    assert float(np.abs(got - zoo).mean()) < 0.01 and got.min() >= 0 and np.allclose(got.sum(axis=0), 1, atol=1e-5)


def test_bad_models_and_packages_are_refused_naming_what_is_supported(
    exported: tuple[Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, package, _ = exported
    backbone = save_model(create_model("unet-tiny"), tmp_path / "backbone")
    with pytest.raises(InvalidInputError, match="a backbone without a task head.*takes fine-tuned segment or deblur"):
        export_bioimageio(backbone, tmp_path / "x.zip")
    classifier = task_model(tmp_path, "classify", ("a", "b"))
    with pytest.raises(InvalidInputError, match="a classify model; bioimage.io export takes segment or deblur"):
        export_bioimageio(classifier, tmp_path / "x.zip")
    with pytest.raises(InvalidInputError, match="weight_format: fmscope runs torchscript or pytorch_state_dict"):
        load_package(package, weight_format="onnx")
    real = bioimageio_export.predict_array
    monkeypatch.setattr(bioimageio_export, "predict_array", lambda m, raw: real(m, raw) + 0.5)  # a wrong test output
    with pytest.raises(InvalidInputError, match="test_model failed .*Reproduce test outputs"):
        export_bioimageio(model, tmp_path / "wrong.zip")
    assert not (tmp_path / "wrong.zip").exists()


def test_cli_exports_a_restoration_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from conftest import run

    model = task_model(tmp_path, "deblur", ())
    code, out, err = run(capsys, "export", "bioimageio", model, "-o", tmp_path / "deblur.zip", "--no-torchscript",
                         "--author", "B. Tester")  # fmt: skip
    assert code == 0, err
    assert "(pytorch_state_dict; 7 files" in out and "checks passed" in out
    passed, total = (int(n) for n in out.split("test_model: ")[1].split(" checks")[0].split(" of "))
    assert passed == total >= 5
    with pytest.raises(InvalidInputError, match="has weights pytorch_state_dict, not torchscript"):
        load_package(tmp_path / "deblur.zip", weight_format="torchscript")


@pytest.mark.parametrize("axes", [("batch", "channel", "z", "y", "x"), ("batch", "z", "y", "x", "channel"),
                                  ("channel", "y", "x"), ("batch", "y", "x")])  # fmt: skip
def test_windows_go_to_the_package_axis_order_and_back(axes: tuple[str, ...]) -> None:
    from fmscope.tasks.bioimageio_package import _from_axes, _to_axes

    spatial = tuple(a for a in ("z", "y", "x") if a in axes)
    x = torch.arange(float(np.prod((1, 1, *range(3, 3 + len(spatial)))))).reshape(1, 1, *range(3, 3 + len(spatial)))
    there = _to_axes(x, axes, spatial)
    assert there.ndim == len(axes) and there.shape[axes.index(spatial[-1])] == x.shape[-1]
    assert torch.equal(_from_axes(there, axes, spatial), x)


class _ZooStyleNet(torch.nn.Module):
    """A network that is not fmscope's: channel-last input (b, y, x, c) as its package declares, channel-first output;
    per-pixel (1 x 1 convolutions), so that a window's output equals the whole image's whatever the padding."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 1), torch.nn.Tanh(), torch.nn.Conv2d(4, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.permute(0, 3, 1, 2))


def _zoo_style_package(folder: Path) -> tuple[Path, torch.nn.Module]:
    """A 2D package written with bioimageio.spec alone, as other tools write theirs: channel-last input axes,
    zero-mean-unit-variance preprocessing, a sigmoid in the postprocessing, torchscript weights only."""
    import importlib

    from bioimageio.spec import save_bioimageio_package

    v: Any = importlib.import_module("bioimageio.spec.model.v0_5")
    torch.manual_seed(1)
    net = _ZooStyleNet().eval()
    x = np.random.default_rng(0).normal(300, 40, (1, 64, 48, 1)).astype(np.float32)  # b, y, x, c
    norm = (x - x.mean()) / (x.std() + 1e-6)
    with torch.no_grad():
        y = torch.sigmoid(net(torch.from_numpy(norm))).numpy()  # b, c, y, x
    np.save(folder / "in.npy", x)
    np.save(folder / "out.npy", y)
    torch.jit.script(net).save(str(folder / "net.pt"))
    (folder / "README.md").write_text("# zoo-style test model\n")
    raw = v.TensorId("image")
    space = [v.SpaceInputAxis(id=v.AxisId(a), size=v.ParameterizedSize(min=16, step=16)) for a in "yx"]
    descr = v.ModelDescr(
        name="zoo style", description="a package fmscope did not write", authors=[v.Author(name="Someone Else")],
        cite=[v.CiteEntry(text="a paper", url="https://example.org")], license="MIT",
        documentation=v.FileDescr(source=folder / "README.md"),
        inputs=[v.InputTensorDescr(
            id=raw, axes=[v.BatchAxis(), *space, v.ChannelAxis(channel_names=[v.Identifier("raw")])],
            test_tensor=v.FileDescr(source=folder / "in.npy"),
            preprocessing=[v.ZeroMeanUnitVarianceDescr(kwargs=v.ZeroMeanUnitVarianceKwargs(
                axes=[v.AxisId("y"), v.AxisId("x")], eps=1e-6))],
        )],
        outputs=[v.OutputTensorDescr(
            id=v.TensorId("mask"), axes=[v.BatchAxis(), v.ChannelAxis(channel_names=[v.Identifier("fg")]),
                                         *(v.SpaceOutputAxis(id=v.AxisId(a), size=v.SizeReference(
                                             tensor_id=raw, axis_id=v.AxisId(a))) for a in "yx")],
            test_tensor=v.FileDescr(source=folder / "out.npy"), postprocessing=[v.SigmoidDescr()],
        )],
        weights=v.WeightsDescr(torchscript=v.TorchscriptWeightsDescr(
            source=folder / "net.pt", pytorch_version=v.Version(torch.__version__.split("+")[0]))),
    )  # fmt: skip
    return Path(save_bioimageio_package(descr, output_path=folder / "zoo.zip")), net


def test_a_zoo_style_2d_package_runs_slice_by_slice_on_a_stack(tmp_path: Path) -> None:
    package, net = _zoo_style_package(tmp_path)
    checks = bioimageio_export.run_test_model(package)  # a valid package by bioimage.io's own test (raises otherwise)
    assert any("Reproduce test outputs" in name for name, _ in checks)
    loaded = load_package(package)
    assert loaded.weight_format == "torchscript" and loaded.spatial == ("y", "x")
    stack = np.random.default_rng(2).normal(500, 80, (5, 40, 72)).astype(np.float32)
    stack[:, 10:20, 30:50] += 300
    write_image(tmp_path / "stack.tif", stack, ImageMetadata.for_array(stack))
    got = read_image(predict_file(package, tmp_path / "stack.tif", tmp_path / "out.tif").output).numpy()
    norm = (stack - stack.mean()) / (stack.std() + 1e-6)  # the stack's statistics (module doc of bioimageio_package)
    with torch.no_grad():
        want = torch.sigmoid(net(torch.from_numpy(norm)[..., None])).numpy()[:, 0]
    assert got.shape == stack.shape
    np.testing.assert_allclose(got, want, atol=1e-4)
