"""The fmscope dock widget: interactive segmentation of an Image layer with the library's session (the same one the web
app drives), from napari's own layers.

Start a session on an Image layer: the widget adds four layers beside it, with its scale: ``NAME +`` and ``NAME -``
(Points: positive and negative clicks of the current object), ``NAME boxes`` (Shapes: draw a rectangle on a slice)
and ``NAME labels`` (Labels: the session's objects; painting into it with napari's brush is committed to the session
as a correction, a new label value becomes a new object). Then: *Segment slice* (the prompt layers become the current
object's prompts), *Propagate* (with the enhancement switches), *Accept slice* / *Accept object*, *Undo* / *Redo*,
*Export labels...* (TIFF / OME-Zarr), *Morphometry CSV...*, and *Fine-tune from accepted* (a round of the
human-in-the-loop: a 2D segmenter trained in the background with napari's progress bar, its proposals put into the
session). Every action is a call of :class:`~fmscope.napari.controller.SessionController`; a refused action leaves a
message in the widget and changes nothing. With a session folder every edit is on disk when it is made; starting
again on the same folder and image restores the work.

Imports napari and Qt: load it only through the plugin's widget command (``pip install "fmscope[napari]"``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import numpy as np
from napari.layers import Image
from napari.qt.threading import create_worker
from napari.utils import progress as napari_progress
from qtpy.QtCore import QObject, QTimer, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from fmscope.errors import FmscopeError
from fmscope.interactive.backends import backend_status
from fmscope.interactive.session_training import ROUND_SETTINGS
from fmscope.models.shipped import DEFAULT_INIT
from fmscope.napari.controller import ENHANCE_SWITCHES, LayerPrompts, SessionController

logger = logging.getLogger(__name__)


def make_widget(napari_viewer: Any) -> SegmentationWidget:
    """npe2's widget command."""
    return SegmentationWidget(napari_viewer)


class SegmentationWidget(QWidget):
    """The dock widget (see the module doc)."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.controller: SessionController | None = None
        self.image_layer: Any = None
        self._prompts_shown: Any = None  # (object, its prompt) the prompt layers show
        self.layers: dict[str, Any] = {}
        self._shown: dict[int, int] = {}  # slice -> the session's plane version the Labels layer shows
        self._worker: Any = None
        self._build()
        for event in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            event.connect(lambda _e=None: self._fill_images())
        self._fill_images()

    # ---- layout -------------------------------------------------------------------------------------------------

    def _build(self) -> None:
        self.image_box = QComboBox()
        self.backend_box = QComboBox()
        for status in backend_status():
            self.backend_box.addItem(status.name)
            item = cast(Any, self.backend_box.model()).item(self.backend_box.count() - 1)  # a QStandardItemModel
            item.setEnabled(status.available)
            item.setToolTip(status.summary if status.available else status.reason)
        self.model_dir = QLineEdit(DEFAULT_INIT)
        self.model_dir.setToolTip("fm: a model folder or a shipped name (fmscope models)")
        self.checkpoint = QLineEdit()
        self.checkpoint.setPlaceholderText("sam / sam2: checkpoint file (default: the cache)")
        self.folder = QLineEdit()
        self.folder.setPlaceholderText("session folder: every edit is kept there (empty: in memory)")
        form = QFormLayout()
        for label, field in (("image", self.image_box), ("backend", self.backend_box), ("model", self.model_dir),
                             ("checkpoint", self.checkpoint), ("folder", self.folder)):  # fmt: skip
            form.addRow(label, field)
        self.start_button = self._button("Start session", self.start)
        self.object_label = QLabel("no session")
        self.object_box = QSpinBox()
        self.object_box.setMinimum(1)
        self.object_box.setMaximum(2**31 - 1)
        self.object_box.valueChanged.connect(self._select)
        objects = QHBoxLayout()
        self.new_object_button = self._button("New object", self.new_object)
        for w in (self.object_label, self.object_box, self.new_object_button):
            objects.addWidget(w)
        self.switches = {name: QCheckBox(name) for name in ENHANCE_SWITCHES}
        for box in self.switches.values():
            box.setChecked(True)
        self.all_objects = QCheckBox("all objects")
        self.epochs = QSpinBox()
        self.epochs.setRange(1, 1000)
        self.epochs.setValue(int(ROUND_SETTINGS["epochs"]))
        grid = QGridLayout()
        actions: list[tuple[str, Callable[[], Any]]] = [
            ("Segment slice", self.segment), ("Propagate", self.propagate), ("Accept slice", self.accept_slice),
            ("Accept object", self.accept_object), ("Undo", self.undo), ("Redo", self.redo),
            ("Export labels...", self.export_labels), ("Morphometry CSV...", self.export_morphometry),
        ]  # fmt: skip
        self.buttons = {text: self._button(text, fn) for text, fn in actions}
        for k, button in enumerate(self.buttons.values()):
            grid.addWidget(button, k // 2, k % 2)
        self.train_button = self._button("Fine-tune from accepted", self.train)
        train = QHBoxLayout()
        for w in (QLabel("epochs"), self.epochs, self.train_button):
            train.addWidget(w)
        self.message = QLabel("")
        self.message.setWordWrap(True)
        layout = QVBoxLayout()
        layout.addLayout(form)
        layout.addWidget(self.start_button)
        layout.addLayout(objects)
        for box in (*self.switches.values(), self.all_objects):
            layout.addWidget(box)
        layout.addLayout(grid)
        layout.addLayout(train)
        layout.addWidget(self.message)
        layout.addStretch(1)
        self.setLayout(layout)
        self._enable()

    def _button(self, text: str, slot: Callable[[], Any]) -> QPushButton:
        button = QPushButton(text)
        button.clicked.connect(lambda _checked=False: self._run(slot))
        return button

    def _enable(self) -> None:
        idle = self._worker is None  # one long job at a time; no new session or object under it
        ready = self.controller is not None and idle
        for button in (*self.buttons.values(), self.train_button, self.new_object_button, self.object_box):
            button.setEnabled(ready)
        self.start_button.setEnabled(idle)

    def _fill_images(self) -> None:
        current = self.image_box.currentText()
        self.image_box.clear()
        names = [layer.name for layer in self.viewer.layers if isinstance(layer, Image)]
        self.image_box.addItems(names)
        if current in names:
            self.image_box.setCurrentText(current)

    def _run(self, slot: Callable[[], Any]) -> None:
        """Run an action; a refused one (bad layer, nothing to do) leaves its message and changes nothing."""
        try:
            slot()
        except FmscopeError as exc:
            self.say(str(exc))
            logger.info("napari widget: %s", exc)

    def say(self, text: str) -> None:
        self.message.setText(text)

    # ---- session ------------------------------------------------------------------------------------------------

    def start(self) -> None:
        name = self.image_box.currentText()
        if not name:
            raise FmscopeError("image: open an image first (File > Open, or File > Open Sample > fmscope)")
        layer = self.viewer.layers[name]
        if not isinstance(layer, Image):
            raise FmscopeError(f"layer '{name}': expected an Image layer, got {type(layer).__name__}")
        backend = self.backend_box.currentText()
        folder = self.folder.text().strip() or None
        controller = SessionController.start(
            layer.data, name, backend, folder=folder, rgb=bool(layer.rgb), multiscale=bool(layer.multiscale),
            model_dir=self.model_dir.text().strip() or None if backend == "fm" else None,
            checkpoint=self.checkpoint.text().strip() or None if backend in ("sam", "sam2") else None,
        )  # fmt: skip
        if self.layers:  # the previous session's layers stay, but no longer feed a session
            self.layers["labels"].events.paint.disconnect(self._on_paint)
        self.controller, self.image_layer, self._prompts_shown = controller, layer, None
        self._add_layers(layer)
        self.say(f"session on '{name}' with {backend}" + (f", kept in {folder}" if folder else " (in memory)"))

    def _add_layers(self, image: Any) -> None:
        c = self._need()
        name, ndim = c.name, c.ndim
        where = {"scale": image.scale, "translate": image.translate, "rotate": image.rotate, "shear": image.shear,
                 "affine": image.affine}  # the same data coordinates as the image  # fmt: skip
        for key in ("+", "-", "boxes", "labels"):
            old = f"{name} {key}"
            if old in self.viewer.layers:
                self.viewer.layers.remove(old)
        labels = c.labels()
        self.layers = {
            "labels": self.viewer.add_labels(labels, name=f"{name} labels", **where),
            "boxes": self.viewer.add_shapes(None, ndim=ndim, name=f"{name} boxes", shape_type="rectangle",
                                            edge_color="yellow", face_color="transparent", edge_width=1, **where),
            "+": self.viewer.add_points(None, ndim=ndim, name=f"{name} +", face_color="lime", size=4, **where),
            "-": self.viewer.add_points(None, ndim=ndim, name=f"{name} -", face_color="red", size=4, **where),
        }  # fmt: skip
        self._shown = {z: c.session.plane_version(z) for z in range(c.session.shape[0])}
        self.layers["labels"].events.paint.connect(self._on_paint)
        # napari's own labels undo would bypass the session (and its history): these keys go to the session
        for key, action in (("Control-Z", self.undo), ("Control-Shift-Z", self.redo)):
            self.layers["labels"].bind_key(key, lambda _layer, a=action: self._run(a), overwrite=True)
        for key, colour in (("+", "lime"), ("-", "red")):
            self.layers[key].current_face_color = colour  # an empty layer forgets face_color for the points to come
        self.layers["+"].mode = "add"
        self.viewer.layers.selection.active = self.layers["+"]  # clicks on the canvas add positive points
        self._show_object()
        self._enable()

    def _need(self) -> SessionController:
        if self.controller is None:
            raise FmscopeError("no session: press 'Start session' first")
        return self.controller

    # ---- objects and prompts ------------------------------------------------------------------------------------

    def _show_object(self) -> None:
        """Put the current object's prompts into the prompt layers."""
        c = self._need()
        stored = (c.current, c.session.prompts.get(c.current) if c.current is not None else None)
        if stored != self._prompts_shown:  # else leave the layers alone: clicks not segmented yet stay
            prompts = c.layer_prompts()
            self.layers["+"].data = prompts.positive
            self.layers["-"].data = prompts.negative
            self.layers["boxes"].data = list(prompts.boxes)
            if prompts.boxes:
                self.layers["boxes"].shape_type = ["rectangle"] * len(prompts.boxes)
            self._prompts_shown = stored
        new = c.current is None
        self.layers["labels"].selected_label = max(c.session.object_ids, default=0) + 1 if new else c.current
        self.object_label.setText(f"object {'(new)' if new else c.current} of {len(c.session.object_ids)}")
        self._set_object_box(c.current)

    def _set_object_box(self, value: int | None) -> None:
        self.object_box.blockSignals(True)
        self.object_box.setValue(value or 1)
        self.object_box.blockSignals(False)

    def new_object(self) -> None:
        self._need().new_object()
        self._show_object()

    def _select(self, value: int) -> None:
        if self.controller is None or value == self.controller.current:
            return
        try:
            self.controller.select(value)
        except FmscopeError as exc:
            self.say(str(exc))
            self._set_object_box(self.controller.current)
            return
        self._show_object()

    def segment(self) -> None:
        c = self._need()
        boxes = self.layers["boxes"]
        rects = tuple(d for d, kind in zip(boxes.data, boxes.shape_type, strict=True) if kind == "rectangle")
        layers = LayerPrompts(self.layers["+"].data, self.layers["-"].data, rects)
        zs = c.segment(layers, points_layer=c.name, boxes_layer=boxes.name)
        self._refresh()
        self.say(f"object {c.current}: on {len(zs)} slice(s)")

    def _on_paint(self, event: Any = None) -> None:
        # napari announces a single paint() call before it writes the pixels (a mouse stroke after): commit next turn
        slices = _touched_slices(getattr(event, "value", None)) if self._need().ndim == 3 else [0]
        QTimer.singleShot(0, lambda: self._run(lambda: self._painted(slices)))

    def _painted(self, slices: list[int] | None = None) -> None:
        c = self._need()
        layer = self.layers["labels"]
        with c.session.lock:
            zs, stale = c.apply_labels(layer.data, layer=layer.name, slices=slices, shown=self._shown)
            self._shown.update({z: c.session.plane_version(z) for z in zs})
        painted = int(layer.selected_label)
        if zs and painted in c.session.prompts:
            c.current = painted  # the object painted (a new label value is a new object) becomes current
        self._refresh()
        if stale:
            self.say(f"slice(s) {stale} changed in the session while you painted (a propagation or a training round): "
                     "reloaded, paint them again")  # fmt: skip
        elif zs:
            self.say(f"painted slice(s) {zs} committed")

    # ---- through the stack, review ------------------------------------------------------------------------------

    def propagate(self) -> None:
        c = self._need()
        switches = {name: box.isChecked() for name, box in self.switches.items()}
        everyone, oid = self.all_objects.isChecked(), c.current
        self._background("propagating",
                         lambda p: c.propagate(switches, all_objects=everyone, object_id=oid, progress=p),
                         lambda done: f"propagated {len(done['objects'])} object(s) into {len(done['slices'])} "
                                      f"slice(s); {len(done['skipped'])} edited meanwhile kept")  # fmt: skip

    def accept_slice(self) -> None:
        c = self._need()
        z = self._z()
        c.accept(z)
        self.say(f"object {c.current} accepted on slice {z}")

    def accept_object(self) -> None:
        c = self._need()
        c.accept()
        self.say(f"object {c.current} accepted")

    def undo(self) -> None:
        self.say("undone" if self._need().undo() else "nothing to undo")
        self._refresh()

    def redo(self) -> None:
        self.say("redone" if self._need().redo() else "nothing to redo")
        self._refresh()

    def _z(self) -> int:
        """The image's slice under the viewer's current position (its own data coordinates)."""
        if self._need().ndim == 2:
            return 0
        point = self.image_layer.world_to_data(self.viewer.dims.point[-self.image_layer.ndim :])
        return int(round(float(point[0])))

    def _refresh(self) -> None:
        """Show in the Labels layer every slice whose session plane changed, and the current object's prompts."""
        c = self._need()
        layer = self.layers["labels"]
        with c.session.lock:  # a worker's commit waits: no half-copied plane
            changed = [z for z in range(c.session.shape[0]) if c.session.plane_version(z) != self._shown.get(z)]
            for z in changed:
                self._shown[z] = c.session.plane_version(z)
                if c.ndim == 3:
                    layer.data[z] = c.session.plane(z)
                else:
                    layer.data[...] = c.session.plane(z)
            if c.current is not None and c.current not in c.session.prompts:  # undone away: never a new step here
                c.current = c.session.object_ids[-1] if c.session.object_ids else None
        if changed:
            layer.refresh()
        self._show_object()

    # ---- outputs ------------------------------------------------------------------------------------------------

    def ask_path(self, title: str, default: str, filters: str, *, folder: bool = False) -> str:
        """A file (or folder) chosen by the person; empty when cancelled."""
        if folder:
            return str(QFileDialog.getExistingDirectory(self, title, default))
        return str(QFileDialog.getSaveFileName(self, title, default, filters)[0])

    def _scale(self) -> list[float]:
        self._need()
        return [float(s) for s in self.image_layer.scale]

    def export_labels(self) -> None:
        c = self._need()
        path = self.ask_path("Export labels", f"{c.name}_labels.tif", "TIFF (*.tif *.tiff);;OME-Zarr (*.ome.zarr)")
        if path:
            self.say(f"labels written to {c.export_labels(path, scale=self._scale())}")

    def export_morphometry(self) -> None:
        c = self._need()
        path = self.ask_path("Morphometry CSV", f"{c.name}_objects.csv", "CSV (*.csv)")
        if path:
            self.say(f"{c.morphometry(path, scale=self._scale())} object(s) measured into {path}")

    def train(self) -> None:
        c = self._need()
        home = c.session.folder
        if home is not None:
            folder = str(home / "rounds" / time.strftime("round-%Y%m%d-%H%M%S"))
        else:
            base = self.ask_path("Folder for the training round (a new folder is made inside)", "", "", folder=True)
            if not base:
                return
            folder = str(Path(base) / time.strftime("fmscope-round-%Y%m%d-%H%M%S"))
        overrides = {"epochs": self.epochs.value()}
        self._background("fine-tuning", lambda p: c.train(folder, overrides=overrides, progress=p),
                         lambda r: f"trained on slices {list(r.trained_on)} (validation Dice {r.best_score:.3f}, "
                                   f"{r.seconds:.0f} s); proposals on {len(r.proposed)} slice(s); model in "
                                   f"{r.model_dir}")  # fmt: skip

    # ---- background work ----------------------------------------------------------------------------------------

    def _background(self, what: str, work: Callable[[Any], Any], report: Callable[[Any], str]) -> None:
        """Run ``work(progress)`` on a thread; its progress reaches napari's progress bar (made and updated on the
        main thread, through a queued signal); the layers follow when it returns."""
        bar = napari_progress(total=0, desc=what)
        ticks = _Ticks()
        ticks.tick.connect(lambda done, total, message: _show_tick(bar, what, done, total, message))
        worker = create_worker(work, lambda done, total=None, message="": ticks.tick.emit(
            int(done), -1 if total is None else int(total), str(message)))  # fmt: skip
        worker.returned.connect(lambda result: self._finished(bar, lambda: report(result)))
        worker.errored.connect(lambda exc: self._finished(bar, lambda: f"{what} failed: {exc}"))
        self._worker = worker
        self._enable()
        self.say(f"{what}...")
        worker.start()

    def _finished(self, bar: Any, text: Callable[[], str]) -> None:
        try:
            bar.close()
            self.say(text())
            self._refresh()
        finally:  # whatever happens, the widget is usable again
            self._worker = None
            self._enable()


class _Ticks(QObject):
    """Carries a worker thread's progress calls to the main thread."""

    tick = Signal(int, int, str)


def _show_tick(bar: Any, what: str, done: int, total: int, message: str) -> None:
    bar.total = max(total, 1) if total >= 0 else 0  # unknown total: a busy bar
    bar.n = done
    bar.set_description(f"{what}: {message}" if message else what)
    bar.refresh()


def _touched_slices(atoms: Any) -> list[int] | None:
    """The Z indices a Labels paint event's history atoms changed (None: unknown, check every slice)."""
    if not atoms:
        return None
    zs: set[int] = set()
    for atom in atoms:
        key = getattr(atom, "slice_key", None)  # a masked paint: its bounding box
        if key is not None and isinstance(key[0], slice):
            zs.update(range(key[0].start or 0, key[0].stop))
        elif isinstance(atom, tuple) and len(atom) == 3 and np.ndim(atom[0][0]) <= 1:  # (indices, old, new)
            zs.update(int(z) for z in np.unique(np.asarray(atom[0][0])))
        else:
            return None
    return sorted(zs)
