"""The fmscope dock widget in a real napari viewer (issue 17), driven as a person would: clicks in Points layers, a
stroke of napari's brush, the widget's buttons, propagation and fine-tuning on napari's worker threads.

Behind the ``napari`` marker, run by ``make test`` in its own pytest pass under ``xvfb-run`` with napari's and
pytest-qt's plugins (the main pass blocks them: they import Qt into every test). By hand::

    xvfb-run -a .venv/bin/python -m pytest -m napari -p napari -p pytest-qt tests/test_napari_widget.py

``FMSCOPE_DOCS_SHOTS=1`` refreshes ``docs/napari_widget.png``.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fmscope.io import read_image
from fmscope.metrics import dice
from session_fakes import balls

NO_NAPARI = importlib.util.find_spec("napari") is None or importlib.util.find_spec("pytestqt") is None
pytestmark = [
    pytest.mark.napari,
    pytest.mark.skipif(NO_NAPARI, reason="napari and pytest-qt are not installed (pip install -e '.[napari]')"),
    pytest.mark.skipif(not os.environ.get("DISPLAY"), reason="napari draws through OpenGL: needs an X display (run "
                       "under xvfb-run, as make test does)"),
]  # fmt: skip


@pytest.fixture(autouse=True)
def _plugins(request: pytest.FixtureRequest) -> None:
    for name in ("napari", "pytest-qt"):  # blocked by the default options: a plain -m selecting these tests
        if not request.config.pluginmanager.has_plugin(name):
            pytest.skip(f"run with -p napari -p pytest-qt (the {name} pytest plugin is blocked by default)")


DOCS = Path(__file__).parents[1] / "docs"


def _wait_idle(qtbot: Any, widget: Any, seconds: float = 120) -> None:
    qtbot.waitUntil(lambda: widget._worker is None, timeout=int(seconds * 1000))


def _button(widget: Any, text: str) -> Any:
    return widget.buttons[text]


@pytest.fixture
def viewer_and_widget(make_napari_viewer: Any, qtbot: Any, tmp_path: Path) -> tuple[Any, Any, np.ndarray]:
    from npe2 import PluginManager

    pm = PluginManager.instance()
    pm.discover()
    make_widget = pm.commands.get("fmscope.segmentation_widget")  # as napari loads it from the manifest
    image, truth = balls()
    viewer = make_napari_viewer(show=True)
    viewer.add_image(image, name="balls", scale=(2.0, 1.0, 1.0))
    widget = make_widget(viewer)
    viewer.window.add_dock_widget(widget, name="fmscope")
    widget.folder.setText(str(tmp_path / "session"))
    return viewer, widget, truth


def test_click_segment_paint_propagate_undo_export_in_napari(
    viewer_and_widget: tuple[Any, Any, np.ndarray], qtbot: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    viewer, widget, truth = viewer_and_widget
    assert widget.image_box.currentText() == "balls"
    assert not _button(widget, "Segment slice").isEnabled()  # nothing to segment before a session
    widget.start_button.click()
    assert {"balls +", "balls -", "balls boxes", "balls labels"} <= {layer.name for layer in viewer.layers}
    labels = widget.layers["labels"]
    assert tuple(labels.scale) == (2.0, 1.0, 1.0)

    viewer.dims.set_current_step(0, 5)
    widget.layers["+"].add([5, 20, 20])  # a click in the + layer
    _button(widget, "Segment slice").click()
    oid = widget.controller.current
    assert oid == 1 and widget.layers["+"].data.shape == (1, 3)
    assert dice(labels.data[5] == oid, truth[5] == 1) > 0.9
    assert "object 1: on 1 slice(s)" in widget.message.text()

    labels.selected_label = 9  # napari's brush, a stroke with a new label on slice 2: a new object
    labels.brush_size = 5
    viewer.dims.set_current_step(0, 2)
    labels.paint((2, 50, 50), 9)
    qtbot.waitUntil(lambda: 9 in widget.controller.session.object_ids, timeout=5000)
    assert widget.controller.current == 9 and labels.selected_label == 9  # the painted object is current
    labels.paint((2, 56, 56), labels.selected_label)  # a second stroke extends it
    qtbot.waitUntil(lambda: widget.controller.session.revision == 3, timeout=5000)
    assert (widget.controller.labels()[2, 56, 56]) == 9
    np.testing.assert_array_equal(labels.data, widget.controller.labels())
    widget.undo()
    widget.undo()  # both strokes: object 9 is gone and object 1 is current again
    assert widget.controller.current == oid
    assert not (labels.data == 9).any() and 9 not in widget.controller.session.object_ids

    viewer.dims.set_current_step(0, 5)
    _button(widget, "Propagate").click()
    assert not _button(widget, "Propagate").isEnabled()  # one long job at a time
    _wait_idle(qtbot, widget)
    assert "propagated 1 object(s)" in widget.message.text(), widget.message.text()
    np.testing.assert_array_equal(labels.data, widget.controller.labels())
    assert dice(labels.data == oid, truth == 1) > 0.8
    _shot(viewer)

    _button(widget, "Undo").click()
    assert (labels.data > 0).sum() == (labels.data[5] > 0).sum()  # back to the one segmented slice
    _button(widget, "Redo").click()
    assert dice(labels.data == oid, truth == 1) > 0.8
    from app_model.types import KeyBinding

    labels.keymap[KeyBinding.from_str("Control-Z")](labels)  # napari's undo key on the layer undoes the session's step
    assert widget.message.text() == "undone" and (labels.data > 0).sum() == (labels.data[5] > 0).sum()
    labels.keymap[KeyBinding.from_str("Control-Shift-Z")](labels)
    assert widget.message.text() == "redone" and dice(labels.data == oid, truth == 1) > 0.8

    out, csv = tmp_path / "balls_labels.tif", tmp_path / "objects.csv"
    monkeypatch.setattr(widget, "ask_path", lambda title, *a, **k: str(csv if "Morphometry" in title else out))
    _button(widget, "Export labels...").click()
    np.testing.assert_array_equal(read_image(out).data, labels.data)
    assert read_image(out).meta.spacing == (2.0, 1.0, 1.0)
    _button(widget, "Morphometry CSV...").click()
    assert csv.read_text().count("\n") == 2  # a header and one object


def test_wrong_layers_leave_a_message_and_lose_nothing(viewer_and_widget: tuple[Any, Any, np.ndarray]) -> None:
    viewer, widget, _ = viewer_and_widget
    widget.start_button.click()
    viewer.dims.set_current_step(0, 5)
    widget.layers["+"].add([5, 20, 20])
    _button(widget, "Segment slice").click()
    before = widget.controller.labels()
    session = widget.controller

    viewer.add_image(np.zeros((2, 3, 16, 16), np.float32), name="movie")
    widget.image_box.setCurrentText("movie")
    widget.start_button.click()
    assert "layer 'movie': expected a 2D (Y, X) or 3D (Z, Y, X) image, got 4D" in widget.message.text()
    assert widget.controller is session  # the session on 'balls' goes on
    widget.layers["+"].add([6, 200, 20])  # a click outside the image
    _button(widget, "Segment slice").click()
    assert "is outside the image" in widget.message.text()
    np.testing.assert_array_equal(widget.controller.labels(), before)


def test_fine_tune_from_accepted_slices_runs_in_the_background(
    viewer_and_widget: tuple[Any, Any, np.ndarray], qtbot: Any
) -> None:
    viewer, widget, _ = viewer_and_widget
    widget.start_button.click()
    viewer.dims.set_current_step(0, 5)
    widget.layers["+"].add([5, 20, 20])
    _button(widget, "Segment slice").click()
    _button(widget, "Propagate").click()
    _wait_idle(qtbot, widget)
    for z in (3, 4, 5, 6, 7):
        viewer.dims.set_current_step(0, z)
        _button(widget, "Accept slice").click()
    widget.epochs.setValue(1)
    widget.train_button.click()
    _wait_idle(qtbot, widget, 300)
    text = widget.message.text()
    assert text.startswith("trained on slices"), text
    (round_folder,) = (widget.controller.session.folder / "rounds").iterdir()  # inside the session folder
    model_dir = Path(text.split("model in ")[-1])
    assert round_folder in model_dir.parents and (model_dir / "config.json").is_file()
    assert widget.controller.session.history()[0][-1]["action"] == "train_proposals"
    np.testing.assert_array_equal(widget.layers["labels"].data, widget.controller.labels())


def _shot(viewer: Any) -> None:
    if os.environ.get("FMSCOPE_DOCS_SHOTS") != "1":
        return
    from PIL import Image

    viewer.dims.ndisplay = 2
    viewer.dims.set_current_step(0, 5)
    raw = DOCS / "napari_widget.raw.png"
    viewer.screenshot(str(raw), canvas_only=False, flash=False)
    img = Image.open(raw).convert("RGB")
    img.thumbnail((900, 900))
    img.quantize(colors=64).save(DOCS / "napari_widget.png", optimize=True)
    raw.unlink()


def test_a_2d_sem_image_is_segmented_painted_and_undone(make_napari_viewer: Any, qtbot: Any) -> None:
    """A single 2D image (an SEM micrograph): (y, x) clicks, a 2D Labels layer, the brush and undo."""
    from fmscope.napari.widget import make_widget

    image, truth = balls()
    viewer = make_napari_viewer(show=True)
    viewer.add_image(image[5], name="sem", scale=(0.5, 0.5))
    widget = make_widget(viewer)
    viewer.window.add_dock_widget(widget, name="fmscope")
    widget.start_button.click()
    labels = widget.layers["labels"]
    assert labels.data.shape == (64, 64) and tuple(labels.scale) == (0.5, 0.5)
    widget.layers["+"].add([20, 20])
    _button(widget, "Segment slice").click()
    assert dice(labels.data == widget.controller.current, truth[5] == 1) > 0.9
    labels.selected_label = 4
    labels.paint((55, 55), 4)
    qtbot.waitUntil(lambda: 4 in widget.controller.session.object_ids, timeout=5000)
    np.testing.assert_array_equal(labels.data, widget.controller.labels())
    _button(widget, "Accept slice").click()
    assert (4, 0) in widget.controller.session.accepted_slices
    _button(widget, "Undo").click()
    _button(widget, "Undo").click()
    assert not (labels.data == 4).any() and (labels.data > 0).any()
