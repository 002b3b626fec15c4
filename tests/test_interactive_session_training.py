"""From corrections to a model: the slices accepted in a session train a segmenter (`finetune seg --from-session`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import FINETUNE_TINY, run
from fmscope.config import from_dict
from fmscope.errors import InvalidInputError
from fmscope.interactive.session import Session
from fmscope.interactive.session_training import (
    ROUND_ACTION,
    accepted_masks,
    finetune_from_session,
    proposal_target,
    round_config,
    split_slices,
    train_round,
)
from fmscope.io import read_image, write_image
from fmscope.tasks.config import FinetuneConfig
from fmscope.tasks.predict import predict_file
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


# ---- a round of the loop (the app's "train on accepted") -------------------------------------------------------


def _round_config() -> FinetuneConfig:
    return round_config((96, 96), {**FINETUNE_TINY, "patch_size": [32, 32]})


def test_a_round_trains_on_the_accepted_slices_and_proposes_the_others(tmp_path: Path) -> None:
    image, truth = make_stack()
    s = Session(image, ThresholdBackend(), folder=tmp_path / "session")
    a, b = s.new_object(), s.new_object()
    for z in (0, 2):
        s.set_mask(a, z, truth[z] == 1)
        s.accept_slice(a, z)
    s.set_mask(b, 3, truth[3] == 2)  # another object's pixels on a proposed slice are kept
    before = s.labels.copy()
    seen: list[str] = []
    done = train_round(s, tmp_path / "round", _round_config(), init="scratch",
                       progress=lambda d, t, m="": seen.append(m))  # fmt: skip
    assert (done.trained_on, done.validated_on) == ((0,), (2,))
    assert done.object_id == a
    assert done.proposed == (1, 3) and (done.model_dir / "task.json").is_file()
    data = read_image(tmp_path / "round" / "data" / "image.tif").numpy()
    assert np.array_equal(data, image[[0, 2]])  # only the accepted slices are copied, raw
    assert np.array_equal(read_image(tmp_path / "round" / "data" / "labels.tif").numpy(), truth[[0, 2]] == 1)
    write_image(tmp_path / "stack.tif", image)
    predicted = read_image(predict_file(done.model_dir, tmp_path / "stack.tif", tmp_path / "p.tif").output).numpy() == 1
    labels = s.labels
    for z in (1, 3):  # the object's pixels there are the prediction, on pixels no other object holds
        assert np.array_equal(labels[z] == a, predicted[z] & (before[z] != b))
    assert np.array_equal(labels[[0, 2]], before[[0, 2]]) and np.array_equal(labels[3] == b, before[3] == b)
    assert any(m.startswith("training") for m in seen) and "proposals done" in seen
    assert s.history()[0][-1]["action"] == ROUND_ACTION
    s.undo()  # one step: undo brings back what was there
    assert np.array_equal(s.labels, before)


def test_a_cancelled_or_refused_round_leaves_nothing(tmp_path: Path) -> None:
    image, truth = make_stack()
    s = Session(image, ThresholdBackend())
    oid = s.new_object()
    with pytest.raises(InvalidInputError, match="no accepted mask"):
        train_round(s, tmp_path / "r0", _round_config(), init="scratch")
    s.set_mask(oid, 1, truth[1] == 3)
    s.accept_slice(oid, 1)
    revision = s.revision

    def cancel(done: int, total: int | None, message: str = "") -> None:
        if message.startswith("proposing"):
            raise KeyboardInterrupt  # the app's cancel raises from the progress callback, as here

    with pytest.raises(KeyboardInterrupt):
        train_round(s, tmp_path / "r1", _round_config(), init="scratch", progress=cancel)
    assert not (tmp_path / "r1").exists() and s.revision == revision

    def cancel_last(done: int, total: int | None, message: str = "") -> None:
        if message == "proposals done":  # the last moment a cancel can come: still nothing committed
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_round(s, tmp_path / "r1", _round_config(), init="scratch", progress=cancel_last)
    assert not (tmp_path / "r1").exists() and s.revision == revision

    def edit_meanwhile(done: int, total: int | None, message: str = "") -> None:
        if message == "proposing slice 0":  # the person edits slice 3 while the round runs
            s.set_mask(oid, 3, truth[3] == 2)

    done = train_round(s, tmp_path / "r3", _round_config(), init="scratch", progress=edit_meanwhile)
    assert done.proposed == (0, 2) and np.array_equal(s.plane(3) == oid, truth[3] == 2)  # the edit is kept
    s.undo()
    with pytest.raises(InvalidInputError, match="object: 9"):
        train_round(s, tmp_path / "r2", _round_config(), init="scratch", object_id=9)
    two = s.new_object()
    s.set_mask(two, 2, truth[2] == 1)
    s.accept_slice(two, 2)
    assert proposal_target(s) is None  # two accepted objects: proposals become a new object
    assert round_config((40, 300)).patch_size == (32, 32) and round_config((600, 900)).patch_size == (128, 128)
    with pytest.raises(InvalidInputError, match="unknown config key"):
        round_config((96, 96), {"epoch": 3})
