"""What a first-time user meets: messages that say what happened in words, physical units set at conversion, and
scores that warn when they measure the files' coding rather than the segmentation."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fmscope.cli.main import main
from fmscope.data import lightsheet_phantom
from fmscope.data.labelled import check_train_val, load_labelled
from fmscope.data.samples import load_samples
from fmscope.errors import InvalidInputError
from fmscope.evaluation import evaluate_segmentation
from fmscope.evaluation.benchmark import time_left
from fmscope.evaluation.figures import nice_length, pick_slices, save_label_overlay
from fmscope.evaluation.units import Unit, labelled_set
from fmscope.inference.embed import pca_2d
from fmscope.io import ImageMetadata, read_image, write_image
from fmscope.tasks.training_data import load_train_val


def test_convert_sets_the_voxel_size(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stack = np.random.default_rng(0).integers(0, 255, (6, 16, 16), dtype=np.uint8)
    write_image(tmp_path / "raw.tif", stack, ImageMetadata.for_array(stack))
    out = tmp_path / "nm.ome.tif"
    assert main(["convert", str(tmp_path / "raw.tif"), str(out), "--spacing", "40,4,4", "--unit", "nm"]) == 0
    assert "voxel 40 x 4 x 4 nanometer" in capsys.readouterr().out
    meta = read_image(out).meta
    assert (meta.spacing, meta.unit) == ((40.0, 4.0, 4.0), "nanometer")
    assert json.loads((tmp_path / "nm.ome.tif.fmscope.json").read_text())["parameters"]["spacing"] == "40,4,4"
    for bad, needle in ((["--spacing", "40,4", "--unit", "nm"], "expected 3 positive values (axes ZYX)"),
                        (["--spacing", "40,4,4"], "give --unit too"),
                        (["--spacing", "1,1,1", "--unit", "parsec"], "--unit: expected a length unit"),
                        (["--spacing", "a,b,c", "--unit", "nm"], "--spacing: expected numbers")):  # fmt: skip
        assert main(["convert", str(tmp_path / "raw.tif"), str(tmp_path / "x.tif"), *bad]) == 1
        assert needle in capsys.readouterr().err


def test_evaluate_warns_on_a_mis_coded_mask(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    truth = np.zeros((64, 64), np.uint8)
    truth[20:40, 20:40] = 1
    inverted = np.where(truth > 0, 0, 255).astype(np.uint8)  # 255 marks the background: Dice 0 silently before
    result = evaluate_segmentation(inverted, truth)
    assert result.semantic.dice == 0.0
    assert any("differ from the ground truth's [0, 1]" in w for w in result.warnings)
    assert any("inverted" in w for w in result.warnings)
    assert evaluate_segmentation(truth * 255, truth).warnings[0].startswith("the prediction's values [0, 255]")
    assert evaluate_segmentation(truth, truth).warnings == ()
    assert evaluate_segmentation(inverted, truth, pred_foreground=[0]).warnings == ()  # the coding was given
    write_image(tmp_path / "p.tif", inverted, ImageMetadata.for_array(inverted))
    write_image(tmp_path / "t.tif", truth, ImageMetadata.for_array(truth))
    assert main(["evaluate", str(tmp_path / "p.tif"), str(tmp_path / "t.tif"), "--json"]) == 0
    captured = capsys.readouterr()
    assert "inverted" in captured.err and json.loads(captured.out)["warnings"]
    assert main(["evaluate", str(tmp_path / "p.tif"), str(tmp_path / "t.tif"), "--pred-foreground", "0"]) == 0
    assert "inverted" not in capsys.readouterr().err


def test_too_many_label_values_names_them_and_points_to_map_labels(tmp_path: Path) -> None:
    image = np.random.default_rng(1).random((24, 24)).astype(np.float32)
    label = np.zeros((24, 24), np.uint8)
    label[5:10, 5:10], label[12:20, 12:20] = 1, 2  # three classes for a binary task
    write_image(tmp_path / "a.tif", image, ImageMetadata.for_array(image))
    write_image(tmp_path / "a_label.tif", label, ImageMetadata.for_array(label))
    items = load_labelled(tmp_path, "segment").items
    with pytest.raises(InvalidInputError, match=r"label values \[0, 1, 2\].*--map-labels"):
        load_samples(items, "mask", ("background", "foreground"))
    label[12:20, 12:20] = 3
    write_image(tmp_path / "a_label.tif", label, ImageMetadata.for_array(label), overwrite=True)
    with pytest.raises(InvalidInputError, match=r"values \{0, 1, 3\}.*--map-labels"):
        load_samples(items, "mask", ("background", "foreground"))


def test_pca_map_axes_say_how_much_variance_they_hold() -> None:
    x = np.random.default_rng(2).normal(size=(20, 6)) * np.array([10.0, 3.0, 1.0, 0.1, 0.1, 0.1])
    coords, (r1, r2) = pca_2d(x)
    assert coords.shape == (20, 2) and 0.8 < r1 < 1.0 and 0.0 < r2 < r1 and r1 + r2 <= 1.0
    assert pca_2d(np.ones((3, 4)))[1] == (0.0, 0.0)


def test_benchmark_time_left_uses_each_methods_own_time() -> None:
    timed = {"otsu": [1.0, 1.0]}
    assert time_left(timed, ["otsu"] * 3 + ["finetune-scratch"] * 4).startswith("at least 0.1 min left (1 method(s)")
    timed["finetune-scratch"] = [600.0]
    assert time_left(timed, ["otsu"] * 3 + ["finetune-scratch"] * 4) == "about 40.0 min left"
    assert time_left(timed, []) == "done"


def test_finetune_from_one_stack_by_slice_ranges(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ph = lightsheet_phantom((12, 40, 40), seed=0, structures=("nuclei",))
    label = (ph.semantic > 0).astype(np.uint8)
    write_image(tmp_path / "stack.tif", ph.image, ImageMetadata.for_array(ph.image))
    write_image(tmp_path / "labels.tif", label, ImageMetadata.for_array(label))
    out = tmp_path / "runs" / "em" / "first"  # missing parents are created
    tiny = ["model=unet-tiny", "epochs=1", "steps_per_epoch=1", "batch_size=2", "augment=false"]
    args = ["finetune", "seg", "--slices", str(tmp_path / "stack.tif"), str(tmp_path / "labels.tif"),
            "--train-slices", "0-7", "--val-slices", "9,11", "--out", str(out), *tiny]  # fmt: skip
    assert main(args) == 0, capsys.readouterr().err
    assert (out / "model" / "config.json").is_file() and (out / "curves.png").is_file()
    assert json.loads((out / "model" / "config.json").read_text())["architecture"]["spatial_dims"] == 2
    train, val = load_train_val("segment", slices=(tmp_path / "stack.tif", tmp_path / "labels.tif"),
                                train_slices="0-7", val_slices="9,11")  # fmt: skip
    assert [i.z_index for i in train.items] == list(range(8)) and [i.z_index for i in val.items] == [9, 11]
    cases = [
        (["--train-slices", "0-7", "--val-slices", "7-9"], "slices [7] are in both"),
        (["--train-slices", "0-7"], "needs --train-slices and --val-slices"),
        (["--train-slices", "0-x", "--val-slices", "9"], "--train-slices: expected slice numbers"),
        (["--train-slices", "0-7", "--val-slices", "50"], "--val-slices: z_indices: expected distinct integers"),
    ]
    for bad, needle in cases:
        assert main([*args[:5], *bad, "--out", str(tmp_path / "bad"), *tiny]) == 1
        assert needle in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_include_keeps_matching_images(tmp_path: Path) -> None:
    image = np.random.default_rng(3).random((16, 16)).astype(np.float32)
    label = (image > 0.5).astype(np.uint8)
    (tmp_path / "train").mkdir()
    for name in ("mito_a", "mito_b", "er_a"):
        write_image(tmp_path / "train" / f"{name}.tif", image, ImageMetadata.for_array(image))
        write_image(tmp_path / "train" / f"{name}_label.tif", label, ImageMetadata.for_array(label))
    train, _ = load_train_val("segment", tmp_path / "train", tmp_path / "train", include="^mito")
    assert sorted(Path(i.image).stem for i in train.items) == ["mito_a", "mito_b"]
    with pytest.raises(InvalidInputError, match="--include: 'golgi' matches none of the 3 images"):
        load_train_val("segment", tmp_path / "train", tmp_path / "train", include="golgi")
    with pytest.raises(InvalidInputError, match="--include: '\\(' is not a regular expression"):
        load_train_val("segment", tmp_path / "train", tmp_path / "train", include="(")


def test_segment_overlay_shows_the_labels_with_a_legend_and_scale_bar(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from matplotlib.image import imread

    ph = lightsheet_phantom((12, 64, 64), seed=1, structures=("nuclei",))
    write_image(tmp_path / "v.ome.tif", ph.image, ImageMetadata.for_array(ph.image, spacing=ph.spacing, unit=ph.unit))
    args = ["segment", str(tmp_path / "v.ome.tif"), "-o", str(tmp_path / "v_labels.tif"), "--method", "watershed",
            "--instances", "--overlay", str(tmp_path / "v.png")]  # fmt: skip
    assert main(args) == 0
    assert f"overlay: {tmp_path / 'v.png'}" in capsys.readouterr().out
    png = imread(tmp_path / "v.png")[..., :3]
    green = np.all(np.abs(png - np.array([0x00, 0xE6, 0x76]) / 255) < 0.05, axis=-1)  # the outline colour
    assert png.shape[1] > 2 * png.shape[0] and green.sum() > 100  # a montage of several slices, outlines drawn
    assert main(args) == 1 and "exists" in capsys.readouterr().err  # an existing overlay is never replaced silently


def test_overlay_picks_slices_with_foreground_and_round_scale_bars() -> None:
    labels = np.zeros((30, 8, 8), np.uint8)
    labels[10:20, 2:4, 2:4] = 1
    assert pick_slices(labels, 4) == [10, 13, 16, 19]
    assert pick_slices(np.zeros((3, 4, 4)), 4) == [0, 1, 2]
    assert [nice_length(e) for e in (96.0, 1000.0, 7.0, 0.3)] == [10.0, 200.0, 1.0, 0.05]
    with pytest.raises(InvalidInputError, match="labels: shape"):
        save_label_overlay(Path("x.png"), np.zeros((4, 4)), np.zeros((4, 5)))


def test_benchmark_folds_by_unit_raise_no_leakage_warning(caplog: pytest.LogCaptureFixture) -> None:
    units = [Unit(f"raw_z{z:03d}", "raw", None, f"/d/raw_z{z:03d}.tif", f"/d/lab_z{z:03d}.tif", None, None)
             for z in range(4)]  # fmt: skip
    classes = ("background", "membranes")
    with caplog.at_level("WARNING"):
        check_train_val(
            labelled_set(units[:2], "segment", classes, "/d"), labelled_set(units[2:], "segment", classes, "/d")
        )
    assert "leakage" in caplog.text  # one stack, same source: the warning is right for user data
    caplog.clear()
    with caplog.at_level("WARNING"):
        train, val = (labelled_set(u, "segment", classes, "/d", by_unit=True) for u in (units[:2], units[2:]))
        check_train_val(train, val)
    assert "leakage" not in caplog.text and train.sources == ("raw_z000", "raw_z001")


def test_help_and_version_answer_without_the_heavy_libraries() -> None:
    code = (
        "import sys; from fmscope.cli.main import build_parser; build_parser(); "
        "print(sorted(m for m in ('torch', 'dask', 'scipy', 'skimage', 'numpy', 'zarr', 'monai') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    version = subprocess.run([sys.executable, "-m", "fmscope.cli.main", "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.startswith("fmscope ")
