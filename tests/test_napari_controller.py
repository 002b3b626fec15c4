"""What the napari dock widget does, without Qt (issue 17): layer contents (points, rectangles, painted labels) become
session edits with the rf backend, propagation follows the enhancement switches, work survives a restart through the
session folder, and layers of the wrong kind or dimensionality are refused naming the layer, changing nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fmscope.errors import InvalidInputError
from fmscope.io import read_image
from fmscope.metrics import dice
from fmscope.napari.controller import ENHANCE_SWITCHES, LayerPrompts, SessionController, check_image
from session_fakes import balls as make_balls


def _points(*rows: tuple[float, ...]) -> np.ndarray:
    return np.array(rows, float).reshape(len(rows), -1)


NONE = np.zeros((0, 3))


def test_points_segment_propagate_undo_and_a_restart_keeps_everything(tmp_path: Path) -> None:
    image, truth = make_balls()
    folder = tmp_path / "session"
    c = SessionController.start(image, "balls", "rf", folder=folder)
    assert c.current is None and c.session.revision == 0  # no object (and no step) before the first segment
    zs = c.segment(LayerPrompts(_points((5, 20, 20)), NONE))
    first = c.current
    assert zs == [5] and first == 1 and c.session.revision == 1  # one step creates and segments it
    assert dice(c.labels()[5] == first, truth[5] == 1) > 0.9
    done = c.propagate()
    assert done["objects"] == [first] and len(done["slices"]) >= 6
    assert dice(c.labels() == first, truth == 1) > 0.8
    mine = c.labels()[5] == first
    second = c.new_object()
    c.segment(LayerPrompts(_points((5, 44, 42)), _points((5, 20, 20))))
    assert dice(c.labels()[5] == second, truth[5] == 2) > 0.8
    assert (c.labels()[5][mine] == first).all()  # the other object's pixels are never taken
    c.accept(5)
    before = c.labels()

    again = SessionController.start(image, "balls", "rf", folder=folder)  # napari closed and reopened
    np.testing.assert_array_equal(again.labels(), before)
    assert again.current == second and (second, 5) in again.session.accepted_slices
    prompts = again.layer_prompts(second)
    np.testing.assert_array_equal(prompts.positive, [[5, 44, 42]])
    np.testing.assert_array_equal(prompts.negative, [[5, 20, 20]])
    assert again.undo() and again.undo()  # the accept, then the second object's prompts
    assert not (again.labels() == second).any()
    assert again.redo() and (again.labels()[5] == second).any()


def test_the_switches_reach_the_enhancement_and_unknown_ones_are_refused() -> None:
    image, _ = make_balls()
    image[6] = image[4]  # an ordinary stack; then a dark slice that stops propagation without bridging
    image[7] = 1000
    c = SessionController.start(image, "balls", "rf")
    c.segment(LayerPrompts(_points((5, 20, 20)), NONE))
    off = dict.fromkeys(ENHANCE_SWITCHES, False)
    plain = c.propagate(off)
    assert 8 not in plain["slices"]
    c.undo()
    bridged = c.propagate({**off, "bridge gaps": True})
    assert 8 in bridged["slices"]  # the gap at slice 7 is bridged
    with pytest.raises(InvalidInputError, match="unknown step"):
        c.propagate({"smooth": True})


def test_a_box_becomes_the_prompt_and_comes_back_as_a_rectangle() -> None:
    image, truth = make_balls()
    c = SessionController.start(image, "balls", "rf")
    rect = np.array([[4, 6, 6], [4, 6, 34], [4, 34, 34], [4, 34, 6]], float)
    old = np.array([[2, 40, 40], [2, 40, 50], [2, 50, 50], [2, 50, 40]], float)
    c.segment(LayerPrompts(NONE, NONE, (old, rect)))  # the last rectangle drawn is the box
    assert c.session.prompts[c.current].box == (4.0, 6.0, 6.0, 34.0, 34.0)
    assert dice(c.labels()[4] == c.current, truth[4] == 1) > 0.8
    (back,) = c.layer_prompts().boxes
    assert {tuple(v) for v in back} == {tuple(v) for v in rect}


def test_the_brush_commits_painted_slices_and_a_new_value_is_a_new_object() -> None:
    image, _ = make_balls()
    c = SessionController.start(image, "balls", "rf")
    c.segment(LayerPrompts(_points((5, 20, 20)), NONE))
    painted = c.labels()
    assert c.apply_labels(painted) == ([], [])  # nothing painted: no step
    revision = c.session.revision
    painted[3, 50:56, 5:11] = 7  # a new object painted by hand
    painted[5, 20, 20] = 0  # an eraser touch on the first object
    assert c.apply_labels(painted, slices=[3, 5]) == ([3, 5], [])  # the slices the stroke touched
    np.testing.assert_array_equal(c.labels(), painted)
    assert 7 in c.session.object_ids and c.session.revision == revision + 1
    assert c.undo()  # one step, the new object included
    assert c.labels()[3].max() == 0 and c.labels()[5, 20, 20] == c.current and 7 not in c.session.object_ids
    assert c.redo() and 7 in c.session.object_ids
    np.testing.assert_array_equal(c.labels(), painted)


def test_a_stale_labels_layer_never_overwrites_what_the_session_did_meanwhile() -> None:
    """The layer showed version v of a slice; a propagation changed the slice in the session before the stroke was
    committed: the stroke's slice is refused as stale (the widget reloads it), the other slices go in."""
    image, _ = make_balls()
    c = SessionController.start(image, "balls", "rf")
    c.segment(LayerPrompts(_points((5, 20, 20)), NONE))
    layer = c.labels()
    shown = {z: c.session.plane_version(z) for z in range(11)}
    c.propagate()  # committed while the layer still shows the one segmented slice
    layer[4, 60:63, 60:63] = 1  # a stroke on slice 4, which propagation changed, and on slice 10, which it did not
    layer[10, 60:63, 60:63] = 1
    propagated = c.labels()
    committed, stale = c.apply_labels(layer, slices=[4, 10], shown=shown)
    assert committed == [10] and stale == [4]
    np.testing.assert_array_equal(c.labels()[4], propagated[4])


def test_undo_back_to_no_object_keeps_the_redo_history(tmp_path: Path) -> None:
    image, _ = make_balls()
    c = SessionController.start(image, "balls", "rf", folder=tmp_path / "s")
    c.segment(LayerPrompts(_points((5, 20, 20)), NONE))
    assert c.undo() and not c.session.object_ids
    assert c.layer_prompts().positive.shape == (0, 3)  # the current object was undone away: empty layers
    assert c.session.can_redo and c.redo() and c.labels()[5].any()


def test_a_2d_image_takes_yx_points_and_gives_2d_labels(tmp_path: Path) -> None:
    image, truth = make_balls()
    c = SessionController.start(image[5], "slice", "rf")
    c.segment(LayerPrompts(_points((20, 20)), np.zeros((0, 2))))
    labels = c.labels()
    assert labels.shape == (64, 64) and dice(labels == c.current, truth[5] == 1) > 0.9
    np.testing.assert_array_equal(c.layer_prompts().positive, [[20, 20]])
    out = c.export_labels(tmp_path / "slice_labels.tif", scale=(0.5, 0.5))
    np.testing.assert_array_equal(read_image(out).data, labels)
    assert c.morphometry(tmp_path / "objects.csv", scale=(0.5, 0.5)) == 1
    assert (tmp_path / "objects.csv").read_text().count("\n") == 2


def test_layers_of_the_wrong_kind_or_dimensionality_are_refused_naming_them() -> None:
    image, _ = make_balls()
    with pytest.raises(InvalidInputError, match="layer 'rgb': an RGB image"):
        check_image(np.zeros((8, 8, 3), np.uint8), "rgb", rgb=True)
    with pytest.raises(InvalidInputError, match=r"layer 'movie': expected a 2D .* got 4D"):
        SessionController.start(np.zeros((2, 3, 8, 8)), "movie")
    with pytest.raises(InvalidInputError, match="layer 'text'"):
        check_image(np.array([["a"]]), "text")
    pyramid = [image, image[:, ::2, ::2]]
    assert check_image(pyramid, "pyramid", multiscale=True) is image  # full resolution of a pyramid

    c = SessionController.start(image, "balls", "rf")
    c.segment(LayerPrompts(_points((5, 20, 20)), NONE))
    labels, revision = c.labels(), c.session.revision
    bad = [
        (LayerPrompts(_points((20, 20)), NONE), "layer 'balls \\+': expected points with 3 coordinates"),
        (LayerPrompts(_points((5, 20, 20)), _points((1, 2, 3, 4))), "layer 'balls -'"),
        (LayerPrompts(NONE, NONE, (np.array([[2, 0, 0], [2, 0, 9], [4, 9, 9], [4, 9, 0]], float),)),
         "spans several slices"),
        (LayerPrompts(_points((5, 200, 20)), NONE), "layers 'balls \\+', .* is outside the image"),
    ]  # fmt: skip
    for prompts, message in bad:
        with pytest.raises(InvalidInputError, match=message):
            c.segment(prompts, points_layer="balls", boxes_layer="boxes")
    for data, message in ((labels[0], "labels of shape"), (labels.astype(float), "integer labels"),
                          (labels.astype(np.int32) - 1, "non-negative")):  # fmt: skip
        with pytest.raises(InvalidInputError, match=message):
            c.apply_labels(data)
    with pytest.raises(InvalidInputError, match="not an object"):
        c.select(99)
    assert c.session.revision == revision  # nothing changed
    np.testing.assert_array_equal(c.labels(), labels)


def test_a_round_of_fine_tuning_from_accepted_slices_proposes_the_others(tmp_path: Path) -> None:
    image, truth = make_balls()
    c = SessionController.start(image, "balls", "rf", folder=tmp_path / "session")
    c.segment(LayerPrompts(_points((5, 20, 20)), NONE))
    c.propagate()
    for z in (3, 4, 5, 6, 7):
        c.accept(z)
    calls: list[tuple[int, int]] = []
    tiny = {"model": "unet-tiny", "epochs": 1, "steps_per_epoch": 2, "freeze_epochs": 0}
    result = c.train(
        tmp_path / "round", init="scratch", overrides=tiny, progress=lambda k, n, m="": calls.append((k, n))
    )
    assert result.trained_on and result.validated_on and calls
    assert (result.model_dir / "config.json").is_file()
    assert set(result.proposed) == set(range(11)) - {3, 4, 5, 6, 7}  # every slice not accepted, into the object
    assert c.session.history()[0][-1]["action"] == "train_proposals"
