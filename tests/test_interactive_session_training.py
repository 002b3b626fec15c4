"""From corrections to a model: the slices accepted in a session train a segmenter (`finetune seg --from-session`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import FINETUNE_TINY, run
from fmscope.config import from_dict
from fmscope.errors import InvalidInputError
from fmscope.interactive.session import Session
from fmscope.interactive.session_training import accepted_masks, finetune_from_session, split_slices
from fmscope.io import read_image, write_image
from fmscope.tasks.config import FinetuneConfig
from session_fakes import ThresholdBackend, make_stack


@pytest.fixture()
def session_dir(tmp_path: Path) -> tuple[Path, Path, np.ndarray]:
    image, truth = make_stack()
    write_image(tmp_path / "stack.tif", image)
    s = Session(image, ThresholdBackend(), folder=tmp_path / "session")
    a, b = s.new_object(), s.new_object()
    for z in (0, 2):
        s.set_mask(a, z, truth[z] == 1)
        s.accept_slice(a, z)
    s.set_mask(b, 2, truth[2] == 2)  # on an accepted slice but not accepted itself: background there
    s.set_mask(b, 3, truth[3] == 2)  # never accepted: not training data
    return tmp_path / "session", tmp_path / "stack.tif", truth


def test_accepted_slices_become_masks_and_the_rest_is_left_out(session_dir: tuple[Path, Path, np.ndarray]) -> None:
    folder, stack, truth = session_dir
    s = Session.open(folder, read_image(stack).numpy(), ThresholdBackend(), autosave=False)
    masks = accepted_masks(s)
    assert sorted(masks) == [0, 2]
    assert all(np.array_equal(m, (truth[z] == 1).astype(np.uint8)) for z, m in masks.items())
    s.accept(2)  # accepting the object whole adds every slice it has pixels on
    assert sorted(accepted_masks(s)) == [0, 2, 3] and accepted_masks(s)[2].sum() == np.isin(truth[2], [1, 2]).sum()
    assert split_slices([0, 2, 3, 5, 7], 0.2) == ([0, 2, 3, 5], [7])
    assert split_slices([4], 0.2) == ([4], [4])


def test_finetune_from_session_trains_on_the_accepted_slices(
    session_dir: tuple[Path, Path, np.ndarray], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder, stack, truth = session_dir
    config = from_dict(FinetuneConfig, {**FINETUNE_TINY, "patch_size": [32, 32]})
    result = finetune_from_session(config, folder, stack, tmp_path / "run", init="scratch", progress=False)
    assert (result.model_dir / "task.json").is_file()
    labels = read_image(tmp_path / "run.accepted.tif").numpy()
    assert labels.shape == truth.shape and sorted(np.flatnonzero(labels.reshape(len(labels), -1).any(1))) == [0, 2]
    before = sorted(p.name for p in folder.rglob("*"))
    code, out, err = run(capsys, "finetune", "seg", "--from-session", folder, "--image", stack,
                         "--out", tmp_path / "cli", "epochs=1", "steps_per_epoch=1", "patch_size=[32, 32]",
                         "freeze_epochs=0")  # fmt: skip
    assert code == 0, err
    assert "init: the encoder from 'lsm-unet-cpu'" in out  # by default from the shipped backbone (its 2D twin)
    assert "model:" in out and sorted(p.name for p in folder.rglob("*")) == before  # the session is left as it was


def test_bad_sessions_are_refused_with_the_reason(session_dir: tuple[Path, Path, np.ndarray], tmp_path: Path) -> None:
    folder, stack, _ = session_dir
    config = from_dict(FinetuneConfig, {**FINETUNE_TINY, "patch_size": [32, 32]})
    other = read_image(stack).numpy().copy()
    other[0, 0, 0] += 1
    write_image(tmp_path / "other.tif", other)
    with pytest.raises(InvalidInputError, match="content differs"):
        finetune_from_session(config, folder, tmp_path / "other.tif", tmp_path / "r1", init="scratch")
    image, _ = make_stack()
    Session(image, ThresholdBackend(), folder=tmp_path / "empty").new_object()
    with pytest.raises(InvalidInputError, match="no accepted mask"):
        finetune_from_session(config, tmp_path / "empty", stack, tmp_path / "r2", init="scratch")
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r2").exists()


def test_an_occupied_out_is_refused_before_anything_is_written(
    session_dir: tuple[Path, Path, np.ndarray], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fmscope.errors import OutputExistsError

    folder, stack, _ = session_dir
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "mine.txt").write_text("keep")
    config = from_dict(FinetuneConfig, {**FINETUNE_TINY, "patch_size": [32, 32]})
    with pytest.raises(OutputExistsError, match="not empty"):
        finetune_from_session(config, folder, stack, tmp_path / "taken", init="scratch")
    assert not (tmp_path / "taken.accepted.tif").exists()
    code, _, err = run(capsys, "finetune", "seg", "--from-session", folder, "--image", stack, "--include", "x",
                       "--out", tmp_path / "o")  # fmt: skip
    assert code == 1 and "drop --include" in err
    code, _, err = run(capsys, "finetune", "seg", "--image", stack, "--train", folder, "--val", folder,
                       "--out", tmp_path / "o")  # fmt: skip
    assert code == 1 and "--image: only with --from-session" in err
