"""The interactive session: slice-local edits, overwrite rule, undo/redo, save/load, export, morphometry, bad input."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from skimage.draw import disk

from fmscope.errors import FileFormatError, InvalidInputError, OutputExistsError
from fmscope.interactive.prompts import ObjectPrompt
from fmscope.interactive.rf_backend import RandomForestPrompter
from fmscope.interactive.session import Session
from fmscope.io import read_image
from fmscope.metrics import dice
from session_fakes import CENTRES, OPS, SHAPE, ThresholdBackend, apply_op, make_stack, state_of


@pytest.fixture(scope="module")
def stack() -> tuple[np.ndarray, np.ndarray]:
    return make_stack()


def test_edit_changes_only_its_slice_and_embeds_lazily(stack: tuple[np.ndarray, np.ndarray]) -> None:
    image, truth = stack
    backend = ThresholdBackend()
    s = Session(image, backend)
    oid = s.new_object()
    assert oid == 1 and backend.embedded == []
    s.add_point(oid, 2, *CENTRES[0])
    assert len(backend.embedded) == 1  # only slice 2 embedded
    assert np.array_equal(s.labels[2] == 1, truth[2] == 1)
    assert not np.delete(s.labels, 2, axis=0).any()
    s.add_point(oid, 2, *CENTRES[0], positive=False)  # same slice: cached embedding
    assert len(backend.embedded) == 1
    assert (s.labels[2] == 1).sum() < (truth[2] == 1).sum()
    s.set_box(oid, 3, (15, 15, 46, 46))
    assert np.array_equal(s.labels[3] == 1, truth[3] == 1) and len(backend.embedded) == 2
    with pytest.raises(ValueError):
        s.labels[0, 0, 0] = 5  # read-only view


def test_overwrite_rule_and_replace_others(stack: tuple[np.ndarray, np.ndarray]) -> None:
    image, truth = stack
    s = Session(image, ThresholdBackend())
    a, b = s.new_object(), s.new_object()
    s.add_point(a, 0, *CENTRES[0])
    s.set_mask(b, 0, np.ones(SHAPE[1:], bool))  # takes background only
    assert np.array_equal(s.labels[0] == a, truth[0] == 1)
    assert np.array_equal(s.labels[0] == b, truth[0] != 1)
    painted = np.zeros(SHAPE[1:], np.uint8)
    painted[25:35, 25:35] = 1
    s.set_mask(b, 0, painted, replace_others=True)
    assert (s.labels[0][25:35, 25:35] == b).all() and (s.labels[0] == b).sum() == 100
    s.add_point(a, 0, *CENTRES[0])  # re-predicted object a does not take b's painted square back
    assert (s.labels[0][25:35, 25:35] == b).all()


def test_box_moves_between_slices_and_remove_point(stack: tuple[np.ndarray, np.ndarray]) -> None:
    image, truth = stack
    s = Session(image, ThresholdBackend())
    oid = s.new_object()
    s.set_box(oid, 1, (55, 35, 82, 62))
    assert np.array_equal(s.labels[1] == oid, truth[1] == 3)
    s.set_box(oid, 2, (55, 35, 82, 62))  # one box per object: slice 1 loses it
    assert not s.labels[1].any() and np.array_equal(s.labels[2] == oid, truth[2] == 3)
    s.set_box(oid, 2, None)
    assert not s.labels.any() and s.prompts[oid].box is None
    s.add_point(oid, 0, *CENTRES[1])
    s.add_point(oid, 0, *CENTRES[2])
    s.remove_point(oid, 0, 66.0, 47.0)  # nearest: the click on disk 3
    assert s.prompts[oid].positive == ((0.0, 30.0, 66.0),)
    assert np.array_equal(s.labels[0] == oid, truth[0] == 2)


def test_delete_accept_undo_redo_and_redo_cleared(stack: tuple[np.ndarray, np.ndarray]) -> None:
    image, _ = stack
    s = Session(image, ThresholdBackend())
    assert not s.undo() and not s.redo()
    a = s.new_object()
    s.add_point(a, 1, *CENTRES[0])
    s.accept(a)
    before = state_of(s)
    s.delete_object(a)
    assert not s.labels.any() and a not in s.prompts and not s.accepted
    assert s.undo() and state_of(s) == before
    assert s.redo() and not s.labels.any()
    assert s.undo() and s.undo()  # accept undone
    assert s.accepted == frozenset() and s.can_redo
    s.add_point(a, 2, *CENTRES[1])  # a new edit clears the redo list
    assert not s.can_redo and not s.redo()
    assert s.new_object() == 2


@settings(max_examples=60, deadline=None)
@given(ops=OPS)
def test_undo_redo_restore_exactly(ops: list[tuple[str, int, int, int, int]]) -> None:
    image, _ = make_stack()
    s = Session(image, ThresholdBackend())
    states = [state_of(s)]
    for op in ops:
        try:
            apply_op(s, op[0], *op[1:])
        except InvalidInputError:  # refused edits change nothing and are no step
            assert state_of(s) == states[-1]
            continue
        states.append(state_of(s))
    n = len(states) - 1
    for k in range(1, n + 1):
        assert s.undo()
        assert state_of(s) == states[n - k]
        _check_index(s)
    assert not s.undo()
    for k in range(1, n + 1):
        assert s.redo()
        assert state_of(s) == states[k]
    assert not s.redo()
    _check_index(s)


def _check_index(s: Session) -> None:
    """The index of ids per slice (what the app lists per object) is what the pixels say."""
    labels = s.labels
    expected = {oid: [z for z in range(labels.shape[0]) if (labels[z] == oid).any()] for oid in s.object_ids}
    assert s.object_slices() == expected
    assert s.labelled_slices() == [z for z in range(labels.shape[0]) if labels[z].any()]


@pytest.mark.parametrize("suffix", [".tif", ".ome.zarr"])
def test_export_round_trip(tmp_path: Path, stack: tuple[np.ndarray, np.ndarray], suffix: str) -> None:
    image, truth = stack
    s = Session(image, ThresholdBackend())
    for centre in CENTRES[:2]:
        oid = s.new_object()
        for z in range(SHAPE[0]):
            s.add_point(oid, z, *centre)
    s.accept(1)
    out = s.export_labels(tmp_path / f"vol_label{suffix}", spacing=(2.0, 0.5, 0.5), unit="micrometer")
    back = read_image(out, lazy=False)
    assert back.meta.axes == "ZYX" and back.meta.spacing == (2.0, 0.5, 0.5)
    assert back.numpy().dtype == np.uint32 and np.array_equal(back.numpy(), np.where(truth == 1, 1, 0))
    with pytest.raises(OutputExistsError):
        s.export_labels(out)
    both = read_image(s.export_labels(tmp_path / f"all{suffix}", accepted_only=False), lazy=False).numpy()
    assert np.array_equal(both, np.where(truth < 3, truth, 0))
    binary = read_image(s.export_labels(tmp_path / f"bin{suffix}", accepted_only=False, binary=True)).numpy()
    assert binary.dtype == np.uint8 and set(np.unique(binary)) == {0, 1}


def test_2d_image_session_exports_2d(tmp_path: Path, stack: tuple[np.ndarray, np.ndarray]) -> None:
    image, truth = stack
    s = Session(image[0], ThresholdBackend())
    s.set_prompt(ObjectPrompt(4, positive=(CENTRES[2],)))  # 2D prompt (y, x) on a 2D image
    assert s.object_ids == (4,) and s.labels.shape == (1, 96, 96) and s.prompts[4].positive == ((0.0, 68.0, 48.0),)
    s.accept()
    back = read_image(s.export_labels(tmp_path / "img_label.tif")).numpy()
    assert back.shape == (96, 96) and np.array_equal(back == 4, truth[0] == 3)


def test_save_load_round_trip_and_refusals(tmp_path: Path, stack: tuple[np.ndarray, np.ndarray]) -> None:
    image, _ = stack
    s = Session(image, ThresholdBackend())
    a, b, c = s.new_object(), s.new_object(), s.new_object()
    s.add_point(a, 1, *CENTRES[0])
    s.add_point(a, 1, 40, 40, positive=False)
    s.set_box(b, 3, (55, 35, 82, 62))
    s.add_point(c, 0, 5, 5, positive=False)  # negative clicks only: kept through save/load
    s.set_mask(c, 2, np.eye(96, dtype=bool))
    s.accept(b)
    folder = s.save(tmp_path / "sess")
    assert sorted(p.name for p in folder.iterdir()) == ["session.json", "snapshot.npz", "state.json", "steps"]
    with pytest.raises(OutputExistsError):
        s.save(folder)
    r = Session.open(folder, image.copy(), ThresholdBackend(), autosave=False)
    assert state_of(r) == state_of(s) and r.can_undo and r.history() == s.history()
    assert r.undo() and s.undo() and state_of(r) == state_of(s)  # the undo history came back too
    assert r.redo() and s.redo()
    assert r.new_object() == 4
    s.delete_object(a)
    s.save(folder, overwrite=True)
    assert Session.open(folder, image, ThresholdBackend(), autosave=False).object_ids == (b, c)
    other = image.copy()
    other[0, 0, 0] += 1
    with pytest.raises(InvalidInputError, match=r"^image: its content differs"):
        Session.open(folder, other, ThresholdBackend())
    with pytest.raises(InvalidInputError, match=r"^image: shape \(4, 96, 95\)"):
        Session.open(folder, image[..., :95], ThresholdBackend())
    with pytest.raises(FileFormatError, match="not a session folder"):
        Session.open(tmp_path, image, ThresholdBackend())
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "keep.txt").write_text("x")
    with pytest.raises(InvalidInputError, match="not a session folder"):
        s.save(tmp_path / "data", overwrite=True)


def test_morphometry_of_known_shapes(tmp_path: Path) -> None:
    r = 12
    image = np.full((96, 96), 100, np.uint16)
    rr, cc = disk((48, 40), r, shape=image.shape)
    image[rr, cc] = 1500
    s = Session(image, ThresholdBackend())
    oid = s.new_object()
    s.set_mask(oid, 0, image > 1000)
    (m,) = s.morphometry(spacing=(0.5, 0.25))
    assert abs(m.voxels - math.pi * r**2) / (math.pi * r**2) < 0.05
    assert m.centroid == (0.0, 48.0, 40.0) and m.mean_intensity == 1500.0
    assert m.bbox == (0, rr.min(), cc.min(), 1, rr.max() + 1, cc.max() + 1) == (0, 37, 29, 1, 60, 52)
    assert m.physical_size == pytest.approx(m.voxels * 0.125) and (m.first_slice, m.last_slice, m.n_slices) == (0, 0, 1)
    csv_path = s.morphometry(tmp_path / "m.csv")
    rows = list(csv.DictReader((tmp_path / "m.csv").open()))
    assert len(csv_path) == 1 and rows[0]["area_px"] == str(m.voxels) and rows[0]["area_physical"] == ""
    assert s.morphometry(accepted_only=True) == []

    volume = np.zeros((5, 40, 40), np.float32)
    ball = np.zeros(volume.shape, bool)
    zz, yy, xx = np.ogrid[:5, :40, :40]
    ball[1:4] = ((zz - 2) ** 2 + (yy - 20) ** 2 + (xx - 15) ** 2 <= 64)[1:4]
    volume[ball] = 7.0
    s3 = Session(volume, ThresholdBackend())
    oid = s3.new_object()
    for z in range(5):
        s3.set_mask(oid, z, ball[z])
    s3.accept()
    (m3,) = s3.morphometry(tmp_path / "m3.csv", spacing=(2.0, 1.0, 1.0), accepted_only=True)
    assert (m3.first_slice, m3.last_slice, m3.n_slices, m3.voxels) == (1, 3, 3, int(ball.sum()))
    assert m3.centroid == (2.0, 20.0, 15.0) and m3.physical_size == 2.0 * ball.sum() and m3.mean_intensity == 7.0
    assert next(csv.DictReader((tmp_path / "m3.csv").open()))["volume_voxels"] == str(int(ball.sum()))
    with pytest.raises(InvalidInputError, match="^spacing: expected 3"):
        s3.morphometry(spacing=(1.0, 1.0))


BAD_EDITS: list[tuple[str, tuple[Any, ...], str]] = [
    ("add_point", (9, 0, 10, 10), r"^object_id: unknown object 9"),
    ("add_point", (1, 4, 10, 10), r"^z: expected a slice index in 0\.\.3, got 4"),
    ("add_point", (1, -1, 10, 10), r"^z: "),
    ("add_point", (1, 0, 96, 10), r"^y: point coordinate 96 is outside"),
    ("add_point", (1, 0, 10, -0.5), r"^x: point coordinate -0.5 is outside"),
    ("add_point", (1, 0, float("nan"), 1), r"^y: expected a finite number"),
    ("remove_point", (1, 0, 10, 10), r"^z: object 1 has no point on slice 0"),
    ("set_box", (1, 0, (10, 10, 10, 30)), r"^box: .* has zero area"),
    ("set_box", (1, 0, (10, 10, 30, 97)), r"^box: .* reaches outside"),
    ("set_box", (1, 0, None), r"^box: object 1 has no box on slice 0"),
    ("set_mask", (1, 0, np.zeros((96, 95), bool)), r"^mask: expected a bool or integer mask of shape \(96, 96\)"),
    ("set_mask", (1, 0, np.zeros((96, 96), np.float32)), r"threshold probabilities first"),
    ("delete_object", (True,), r"^object_id: unknown object True"),
    ("accept", (2,), r"^object_id: unknown object 2"),
    ("new_object", (1,), r"^object_id: expected a new positive integer id, got 1"),
    ("mask", (1, 7), r"^z: "),
]


@pytest.mark.parametrize(("method", "args", "message"), BAD_EDITS)
def test_bad_edits_raise_and_change_nothing(
    stack: tuple[np.ndarray, np.ndarray], method: str, args: tuple[Any, ...], message: str
) -> None:
    s = Session(stack[0], ThresholdBackend())
    s.new_object()
    before = state_of(s)
    with pytest.raises(InvalidInputError, match=message):
        getattr(s, method)(*args)
    assert state_of(s) == before and len(s._undo) == 1


@pytest.mark.parametrize(
    ("image", "kwargs", "message"),
    [
        (np.zeros((2, 3, 4, 5)), {}, r"^image: expected a non-empty 2D"),
        (np.zeros((0, 4)), {}, r"^image: "),
        (np.zeros((4, 4), object), {}, r"^image: "),
        (np.zeros((4, 4)), {"cache_size": 0}, r"^cache_size: "),
        (np.zeros((4, 4)), {"backend": object()}, r"^backend: expected a PromptableModel"),
    ],
)
def test_bad_session_arguments(image: np.ndarray, kwargs: dict[str, Any], message: str) -> None:
    backend = kwargs.pop("backend", ThresholdBackend())
    with pytest.raises(InvalidInputError, match=message):
        Session(image, backend, **kwargs)


def test_embedding_cache_and_history_are_bounded(stack: tuple[np.ndarray, np.ndarray]) -> None:
    backend = ThresholdBackend()
    s = Session(stack[0], backend, cache_size=1, history_limit=2)
    oid = s.new_object()
    for z in (0, 0, 1, 0):
        s.add_point(oid, z, *CENTRES[0])
    assert len(backend.embedded) == 3  # 0, 1, then 0 again after eviction
    assert s.undo() and s.undo() and not s.undo()
    assert len(s.prompts[oid].positive) == 2


def test_random_forest_end_to_end(tmp_path: Path, stack: tuple[np.ndarray, np.ndarray]) -> None:
    image, truth = stack
    s = Session(image[:3], RandomForestPrompter())
    oid = s.new_object()
    s.add_point(oid, 1, *CENTRES[1])
    assert dice(s.mask(oid, 1), truth[1] == 2) > 0.85
    assert not s.labels[0].any() and not s.labels[2].any()
    s.set_mask(oid, 0, s.mask(oid, 1))  # e.g. a propagated mask
    s.accept()
    back = read_image(s.export_labels(tmp_path / "stack_label.tif", binary=True)).numpy()
    assert back.shape == (3, 96, 96) and dice(back[:2] == 1, truth[:2] == 2) > 0.85 and not back[2].any()
