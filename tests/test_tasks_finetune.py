"""Fine-tuning: task models save/load by task, pretrained-encoder init with a key report, the loop for all three
tasks on tiny phantoms, prediction of any-size inputs, and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import FINETUNE_TINY, write_pairs
from fmscope.cli.main import main
from fmscope.data import lightsheet_phantom
from fmscope.data.labelled import load_labelled
from fmscope.errors import FileFormatError, InvalidInputError
from fmscope.io import ImageMetadata, read_image, write_image
from fmscope.models import create_model, save_model
from fmscope.segment import label_components
from fmscope.tasks.config import FinetuneConfig
from fmscope.tasks.finetune import finetune
from fmscope.tasks.model import (
    TaskModel,
    TaskSpec,
    collapse_depth,
    init_backbone,
    load_task_model,
    save_task_model,
)
from fmscope.tasks.predict import predict_array, predict_file

TINY = FINETUNE_TINY


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("labelled")
    return write_pairs(root / "train", [0]), write_pairs(root / "val", [1])


def test_task_model_round_trip_and_task_check(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = TaskModel(create_model("unet-tiny"), TaskSpec("segment", ("background", "nuclei"))).eval()
    folder = save_task_model(model, tmp_path / "m")
    loaded = load_task_model(folder, task="segment")
    x = torch.rand(1, 1, 32, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    with pytest.raises(FileFormatError, match="trained for the 'segment' task, not 'classify'"):
        load_task_model(folder, task="classify")
    save_model(create_model("unet-tiny"), tmp_path / "backbone")
    with pytest.raises(FileFormatError, match="without a task head"):
        load_task_model(tmp_path / "backbone")


def test_heads_and_outputs() -> None:
    torch.manual_seed(0)
    x = torch.rand(2, 1, 32, 32, 32)
    seg = TaskModel(create_model("unet-tiny"), TaskSpec("segment", ("bg", "a", "b")))
    assert seg(x).shape == (2, 3, 32, 32, 32)
    for pooling in ("deepest", "all"):
        cls = TaskModel(create_model("unet-tiny"), TaskSpec("classify", ("a", "b"), pooling=pooling))  # type: ignore[arg-type]
        assert cls(x).shape == (2, 2)
    deblur = TaskModel(create_model("unet-tiny"), TaskSpec("deblur"))
    torch.testing.assert_close(deblur(x), x)  # zero-initialised residual: identity until trained
    with pytest.raises(InvalidInputError, match="classes"):
        TaskSpec("segment", ("only",))


def test_init_copies_the_encoder_only_and_reports(tmp_path: Path) -> None:
    torch.manual_seed(1)
    source = create_model("unet-tiny")
    save_model(source, tmp_path / "pre")
    backbone, report = init_backbone("unet-tiny", tmp_path / "pre", parts="encoder")
    assert report is not None and report.missing and not report.unexpected
    state, origin = backbone.state_dict(), source.state_dict()
    assert all(torch.equal(state[k], origin[k]) for k in origin if source.is_encoder_key(k))
    assert not all(torch.equal(state[k], origin[k]) for k in origin if not source.is_encoder_key(k))
    assert report.missing and not any(backbone.is_encoder_key(k) for k in report.missing)
    full, report_all = init_backbone("unet-tiny", tmp_path / "pre", parts="backbone")
    assert report_all is not None and report_all.ok
    scratch, none = init_backbone("unet-tiny", "scratch")
    assert none is None


@pytest.mark.parametrize("task", ["segment", "deblur"])
def test_finetune_dense_tasks_write_a_model_that_predicts(task: str, data: tuple[Path, Path], tmp_path: Path) -> None:
    train, val = (load_labelled(p, "segment") for p in data)
    config = FinetuneConfig(task=task, **TINY)  # type: ignore[arg-type]
    result = finetune(config, train, val, tmp_path / "run")
    assert result.epochs_run == 2 and 0 <= result.best_epoch < 2
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3 and "val_score" in rows[0]
    model = load_task_model(result.model_dir, task=task)
    volume = read_image(data[1] / "nuclei_patch_001_vol001.tif").numpy()[:20, :37, :45]  # odd size, thinner than Z
    out = predict_array(model, volume)
    assert out.shape == (model.spec.n_outputs, *volume.shape)
    if task == "segment":
        np.testing.assert_allclose(out.sum(axis=0), 1.0, atol=1e-5)
    else:
        assert out.min() >= 0.0 and out.max() <= 1.0


def test_finetune_from_pretrained_freezes_then_trains_the_encoder(data: tuple[Path, Path], tmp_path: Path) -> None:
    torch.manual_seed(2)
    save_model(create_model("unet-tiny"), tmp_path / "pre")
    train, val = (load_labelled(p, "segment") for p in data)
    config = FinetuneConfig(task="segment", **{**TINY, "epochs": 2, "patience": 5})  # type: ignore[arg-type]
    result = finetune(config, train, val, tmp_path / "run", init=tmp_path / "pre")
    assert "start random, as intended" in result.init_report and "net." not in result.init_report
    header, *rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    frozen = [float(r.split(",")[header.split(",").index("encoder_frozen")]) for r in rows]
    assert frozen == [1.0, 0.0]


def test_classification_from_file_names(tmp_path: Path) -> None:
    for split, seeds in (("train", (0, 1)), ("val", (2, 3))):
        folder = tmp_path / split
        folder.mkdir()
        for seed in seeds:
            for kind in ("nuclei", "vessels"):
                ph = lightsheet_phantom((32, 32, 32), seed=seed, structures=(kind,))
                write_image(folder / f"{kind}_patch_{seed}_vol{seed}.tif", ph.image, ImageMetadata.for_array(ph.image))
    train, val = load_labelled(tmp_path / "train", "classify"), load_labelled(tmp_path / "val", "classify")
    result = finetune(FinetuneConfig(task="classify", **TINY), train, val, tmp_path / "run")  # type: ignore[arg-type]
    assert 0.0 <= result.best_score <= 1.0
    out = predict_file(result.model_dir, tmp_path / "val" / "vessels_patch_2_vol2.tif", tmp_path / "c.json")
    doc = json.loads((tmp_path / "c.json").read_text())
    assert out.class_name in ("nuclei", "vessels") and doc["class"] == out.class_name


def test_cli_finetune_and_predict(data: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    overrides = [f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in TINY.items()]
    args = ["finetune", "seg", "--train", str(data[0]), "--val", str(data[1]), "--out", str(tmp_path / "run")]
    assert main([*args, *overrides]) == 0
    assert "best validation Dice" in capsys.readouterr().out
    src = data[1] / "nuclei_patch_001_vol001.tif"
    for output in ("pred.tif", "pred.ome.zarr"):
        assert main(["predict", str(tmp_path / "run" / "model"), str(src), "-o", str(tmp_path / output)]) == 0
        labels = read_image(tmp_path / output).numpy()
        assert labels.shape == read_image(src).numpy().shape and set(np.unique(labels)) <= {0, 1}
        record = json.loads((tmp_path / f"{output}.fmscope.json").read_text())  # provenance like every command
        assert record["command"] == "predict" and record["inputs"] == [str(src), str(tmp_path / "run" / "model")]
    model = str(tmp_path / "run" / "model")
    overlay = ["--overlay", str(tmp_path / "inst.png")]
    assert (
        main(["predict", model, str(src), "-o", str(tmp_path / "inst.tif"), "--instances", "components", *overlay]) == 0
    )
    assert (tmp_path / "inst.png").stat().st_size > 1000
    semantic, instances = read_image(tmp_path / "pred.tif").numpy(), read_image(tmp_path / "inst.tif").numpy()
    assert np.array_equal(instances > 0, semantic > 0)
    assert instances.max() == label_components(semantic > 0).max()
    assert main(["predict", str(tmp_path / "run" / "model"), str(src), "-o", str(tmp_path / "pred.tif")]) == 1
    assert "exists" in capsys.readouterr().err
    assert main([*args[:-1], str(tmp_path / "other"), "--init", str(tmp_path / "missing")]) == 1
    assert "missing" in capsys.readouterr().err


def test_collapse_depth_matches_a_z_constant_volume() -> None:
    """A 3D kernel summed over depth gives, on a 2D image, what the 3D convolution gives on that image repeated in Z."""
    torch.manual_seed(3)
    conv3, conv2 = torch.nn.Conv3d(2, 3, 3, padding=1), torch.nn.Conv2d(2, 3, 3, padding=1)
    conv2.load_state_dict(collapse_depth(conv3.state_dict()))
    image = torch.rand(1, 2, 20, 24)
    volume = image[:, :, None].expand(1, 2, 7, 20, 24)
    torch.testing.assert_close(conv3(volume)[:, :, 3], conv2(image), atol=1e-5, rtol=1e-5)


def test_2d_images_train_from_scratch_and_from_a_3d_model(tmp_path: Path) -> None:
    for split, seeds in (("train", (0,)), ("val", (1,))):
        folder = tmp_path / split
        folder.mkdir()
        for seed in seeds:
            ph = lightsheet_phantom((8, 64, 72), seed=seed, structures=("nuclei",))
            image, label = ph.image[4].astype(np.float32), (ph.semantic[4] > 0).astype(np.uint8)
            write_image(folder / f"s{seed}.tif", image, ImageMetadata.for_array(image))
            write_image(folder / f"s{seed}_label.tif", label, ImageMetadata.for_array(label))
    train, val = load_labelled(tmp_path / "train", "segment"), load_labelled(tmp_path / "val", "segment")
    torch.manual_seed(4)
    save_model(create_model("unet-tiny"), tmp_path / "pre3d")
    deblur = finetune(FinetuneConfig(task="deblur", **TINY), train, val, tmp_path / "deblur")  # type: ignore[arg-type]
    assert 0 < deblur.best_score <= 1  # SSIM; no NAME_blurred twins: degraded inputs synthesised (default sigma 2.5)
    for init in ("scratch", tmp_path / "pre3d"):
        result = finetune(
            FinetuneConfig(task="segment", **TINY), train, val, tmp_path / f"run_{init == 'scratch'}", init=init
        )  # type: ignore[arg-type]
        model = load_task_model(result.model_dir)
        assert model.backbone.config.spatial_dims == 2 and model.backbone.config.patch_size == (64, 64)
        assert predict_array(model, read_image(tmp_path / "val" / "s1.tif").numpy()).shape == (2, 64, 72)
