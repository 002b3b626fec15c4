"""The pixel classifier trained on painted scribbles (issue 16): in memory, saved and loaded, and block by block
(equal to the whole-volume prediction of the same forest), resumable, on a cluster, from the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fmscope.errors import InvalidInputError
from fmscope.inference import classify_blockwise as classify_blockwise_module
from fmscope.inference.blockwise import done_path
from fmscope.inference.blockwise_output import BlockwiseConfig
from fmscope.inference.classify_blockwise import classify_blockwise, forest_path
from fmscope.io import ImageMetadata, read_image, write_image
from fmscope.segment.pixel_classifier import PixelClassifierConfig
from fmscope.segment.scribbles import ScribbleModel, fit_scribbles, scribble_classes, segment_scribbles

FAST = PixelClassifierConfig(sigmas=(1.0, 2.0), n_estimators=20)  # margin 10
BLOCKS = BlockwiseConfig(block_shape=(16, 32, 32), chunks=(16, 16, 16))


def blobs(shape: tuple[int, ...], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A noisy float volume of bright balls and its truth (1 background, 2 ball)."""
    rng = np.random.default_rng(seed)
    grid = np.indices(shape)
    fg = np.zeros(shape, bool)
    for _ in range(12):
        c = [rng.integers(0, s) for s in shape]
        fg |= sum((g - ci) ** 2 for g, ci in zip(grid, c, strict=True)) < rng.integers(4, 8) ** 2
    image = (fg * 1.0 + rng.normal(0, 0.35, shape)).astype(np.float32)
    return image, fg.astype(np.uint8) + 1


def paint(truth: np.ndarray, every: int = 9) -> np.ndarray:
    """Sparse scribbles: the truth on a few lines of a few slices, 0 elsewhere."""
    marks = np.zeros_like(truth)
    marks[::every, ::3, :] = truth[::every, ::3, :]
    return marks


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, np.ndarray, np.ndarray, Path, Path]:
    image, truth = blobs((32, 48, 64), 0)
    marks = paint(truth)
    folder = tmp_path_factory.mktemp("scribbles")
    write_image(folder / "in.zarr", image, ImageMetadata.for_array(image))
    write_image(folder / "marks.tif", marks, ImageMetadata.for_array(marks), labels=True)
    return image, truth, marks, folder / "in.zarr", folder / "marks.tif"


def test_scribbles_train_a_classifier_that_labels_the_volume_and_survives_a_save(
    data: tuple[np.ndarray, np.ndarray, np.ndarray, Path, Path], tmp_path: Path
) -> None:
    image, truth, marks, _, _ = data
    labels, model = segment_scribbles(image, scribbles=marks, config=FAST)
    assert labels.dtype == np.uint8 and set(np.unique(labels)) == {1, 2}
    assert np.mean(labels == truth) > 0.95  # painted on 4 % of the voxels
    folder = model.save(tmp_path / "forest")
    assert json.loads((folder / "config.json").read_text())["kind"] == "fmscope pixel classifier"
    again, _ = segment_scribbles(image, model=ScribbleModel.load(folder))
    np.testing.assert_array_equal(again, labels)
    sparse = np.where(marks == 2, 255, marks).astype(np.uint8)  # values 1 and 255: two classes, not 255 channels
    labels255, _ = segment_scribbles(image, scribbles=sparse, config=FAST)
    np.testing.assert_array_equal(labels255, np.where(labels == 2, 255, labels))
    per_slice, flat = segment_scribbles(image, scribbles=marks, config=FAST, per_slice=True)
    assert flat.per_slice and flat.classifier.ndim == 2 and np.mean(per_slice == truth) > 0.9
    with pytest.raises(InvalidInputError, match="--forest: .* is not a pixel-classifier folder"):
        ScribbleModel.load(tmp_path)


def test_bad_scribbles_are_refused_naming_the_flag(data: tuple[np.ndarray, np.ndarray, np.ndarray, Path, Path]) -> None:
    image, _, marks, _, _ = data
    for bad, message in ((marks.astype(np.float32), "integer scribbles"), (marks.astype(np.int16) - 1, "range -1"),
                         (marks[:-1], "the image's shape")):  # fmt: skip
        with pytest.raises(InvalidInputError, match=f"--labels: expected .*{message}"):
            scribble_classes(bad, image.shape)
    with pytest.raises(InvalidInputError, match="--labels: no painted pixels"):
        fit_scribbles([(image, np.zeros_like(marks))], FAST)
    with pytest.raises(InvalidInputError, match="--labels / --forest: give one"):
        segment_scribbles(image)
    with pytest.raises(InvalidInputError, match="at least 2 class"):
        fit_scribbles([(image, (marks > 0).astype(np.uint8))], FAST)


def _no_training(*args: object, **kwargs: object) -> None:
    raise AssertionError("a resumed run must apply its recorded forest, not train again")


def test_blockwise_rf_equals_the_whole_volume_prediction_of_its_forest_and_resumes(
    data: tuple[np.ndarray, np.ndarray, np.ndarray, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image, truth, _, source, marks_path = data
    out = tmp_path / "rf.zarr"
    done = classify_blockwise(source, out, scribbles=marks_path, classifier=FAST, config=BLOCKS)
    assert done.result.complete and len(done.plan) == 2 * 2 * 2 and done.plan.halo == (10, 10, 10)
    assert done.forest == forest_path(out) and (done.forest / "forest.joblib").is_file()
    got = read_image(out).numpy()
    np.testing.assert_array_equal(got, ScribbleModel.load(done.forest).label(image))  # block faces invisible
    assert np.mean(got == truth) > 0.95
    import zarr

    zarr.open_array(str(done_path(out)), mode="r+")[5] = 0  # as if the run had died before block 5 was flagged
    monkeypatch.setattr(classify_blockwise_module, "fit_scribbles", _no_training)
    again = classify_blockwise(source, out, scribbles=marks_path, classifier=FAST, config=BLOCKS)
    assert again.result.computed == (5,)  # the recorded forest is applied again, not retrained
    np.testing.assert_array_equal(read_image(out).numpy(), got)
    other = tmp_path / "other.tif"
    write_image(other, paint(truth, 7), ImageMetadata.for_array(truth), labels=True)
    with pytest.raises(InvalidInputError, match="another plan, input or settings .*scribbles"):
        classify_blockwise(source, out, scribbles=other, classifier=FAST, config=BLOCKS)
    flat = tmp_path / "flat.zarr"  # a 2D image for a 3D forest
    write_image(flat, image[0], ImageMetadata.for_array(image[0]))
    with pytest.raises(InvalidInputError, match="--forest: it classifies 3D images, the input has shape"):
        classify_blockwise(flat, tmp_path / "f.zarr", forest=done.forest, config=BlockwiseConfig(chunks=16))
    (done.forest / "forest.joblib").write_bytes(b"changed")
    with pytest.raises(InvalidInputError, match="--resume: the forest .* is gone or changed"):
        classify_blockwise(source, out, scribbles=marks_path, classifier=FAST, config=BLOCKS)


def test_cli_rf_in_memory_saves_a_forest_that_a_blockwise_run_on_a_cluster_applies(
    data: tuple[np.ndarray, np.ndarray, np.ndarray, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from conftest import run

    image, _, _, source, marks_path = data
    whole = tmp_path / "whole.tif"
    code, out, err = run(capsys, "segment", source, "-o", whole, "--method", "rf", "--labels", marks_path,
                         "--save-forest", tmp_path / "forest")  # fmt: skip
    assert code == 0, err
    assert "rf, fraction per class 1:" in out and "forest saved to" in out
    code, out, err = run(capsys, "segment", source, "-o", tmp_path / "b.zarr", "--method", "rf", "--forest",
                         tmp_path / "forest", "--workers", "1", "--block-shape", "32", "--chunks", "16")  # fmt: skip
    assert code == 0, err
    assert "4 blocks of (32, 32, 32) (halo (32, 32, 32))" in out and "4 computed" in out  # halo cut to the block
    np.testing.assert_array_equal(read_image(tmp_path / "b.zarr").numpy(), read_image(whole).numpy())
    code, _, err = run(capsys, "segment", source, "-o", tmp_path / "c.tif", "--labels", marks_path)
    assert code != 0 and "--labels / --forest / --save-forest: for --method rf" in err
    code, _, err = run(capsys, "segment", source, "-o", tmp_path / "d.tif", "--method", "rf", "--forest",
                       tmp_path / "forest", "--instances")  # fmt: skip
    assert code != 0 and "--instances: --method rf writes the painted class" in err
    assert not (tmp_path / "d.tif").exists()
