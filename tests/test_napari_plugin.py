"""The napari plugin without napari (issue 17): the npe2 manifest validates, npe2 finds the reader, the writer and the
sample data, and they turn fmscope's formats into layers (lazy, multiscale, scaled, labels) and back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fmscope.errors import InvalidInputError
from fmscope.io import ImageMetadata, read_image, write_image
from fmscope.napari.reader import get_reader, read_layers
from fmscope.napari.sample import em_stack
from fmscope.napari.writer import write_labels

npe2 = pytest.importorskip("npe2", reason="npe2 is in the dev extra (pip install -e '.[dev]')")

MANIFEST = Path(__file__).parents[1] / "src" / "fmscope" / "napari" / "napari.yaml"


def test_the_manifest_validates_and_npe2_finds_every_contribution() -> None:
    manifest = npe2.PluginManifest.from_file(MANIFEST)
    assert manifest.name == "fmscope"
    pm = npe2.PluginManager.instance()
    pm.discover()  # through the installed package's entry point
    assert pm.get_manifest("fmscope").name == "fmscope"
    assert "fmscope" in {r.command.split(".")[0] for r in pm.iter_compatible_readers(["stack.ome.zarr"])}
    assert {s.key for plugin, samples in pm.iter_sample_data() if plugin == "fmscope" for s in samples} == {
        "lightsheet", "em"}  # fmt: skip
    writers = {w.command for w in pm.iter_compatible_writers(["labels"])}
    assert "fmscope.write_labels" in writers
    commands = {c.id for c in manifest.contributions.commands or []}
    assert commands == {"fmscope.get_reader", "fmscope.write_labels", "fmscope.sample_lightsheet", "fmscope.sample_em",
                        "fmscope.segmentation_widget"}  # fmt: skip
    widgets = {w.command: w.display_name for w in pm.iter_widgets() if w.plugin_name == "fmscope"}
    assert widgets == {"fmscope.segmentation_widget": "Interactive segmentation"}  # listed without importing Qt
    for command in manifest.contributions.commands or []:  # every python_name resolves
        module, name = command.python_name.split(":")
        if module == "fmscope.napari.widget":
            continue  # imports napari and Qt: loaded by its own pass (tests/test_napari_widget.py)
        assert callable(getattr(__import__(module, fromlist=[name]), name))


def test_an_ome_zarr_pyramid_opens_lazily_as_a_multiscale_image_with_its_spacing(tmp_path: Path) -> None:
    x = np.random.default_rng(0).integers(0, 4000, (16, 64, 64)).astype(np.uint16)
    meta = ImageMetadata("ZYX", x.shape, "uint16", spacing=(2.0, 0.5, 0.5), unit="micrometer")
    path = write_image(tmp_path / "brain.ome.zarr", x, meta, pyramid_levels=3)
    [(data, attrs, kind)] = npe2.read([str(path)], stack=False, plugin_name="fmscope")
    assert kind == "image" and isinstance(data, list) and len(data) == 3
    assert not isinstance(data[0], np.ndarray) and data[0].shape == x.shape  # dask: nothing read yet
    np.testing.assert_array_equal(np.asarray(data[0]), x)
    assert data[1].shape[1:] == (32, 32)
    assert attrs["scale"] == (2.0, 0.5, 0.5) and attrs["metadata"]["fmscope"]["unit"] == "micrometer"


def test_labels_open_as_labels_and_the_writer_round_trips_them(tmp_path: Path) -> None:
    layers = em_stack()
    assert [kind for *_, kind in layers] == ["image", "labels"]
    labels, attrs, _ = layers[1]
    for name in ("objects.tif", "objects.ome.zarr"):
        [written] = write_labels(str(tmp_path / name), labels, attrs)
        [(data, back, kind)] = read_layers(written)
        assert kind == "labels", name
        np.testing.assert_array_equal(np.asarray(data[0] if isinstance(data, list) else data), labels)
        assert back["scale"] == tuple(attrs["scale"])
    x = np.zeros((8, 8), np.uint8)
    write_image(tmp_path / "raw.tif", x, ImageMetadata.for_array(x))
    assert read_layers(str(tmp_path / "raw.tif"))[0][2] == "image"  # an integer image not named as labels
    with pytest.raises(InvalidInputError, match="labels: expected a 2D or 3D integer Labels layer"):
        write_labels(str(tmp_path / "bad.tif"), np.zeros((2, 3, 4, 5), np.uint8), {})
    with pytest.raises(InvalidInputError, match="labels: expected values >= 0"):
        write_labels(str(tmp_path / "bad.tif"), -np.ones((4, 4), np.int32), {})


def test_the_reader_declines_what_fmscope_cannot_read(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not an image")
    assert get_reader(str(tmp_path / "notes.txt")) is None
    assert get_reader([str(tmp_path / "a.tif"), str(tmp_path / "notes.txt")]) is None
    channels = np.zeros((2, 4, 8, 8), np.float32)
    write_image(tmp_path / "two.ome.tif", channels, ImageMetadata("CZYX", channels.shape, "float32"))
    [(_, attrs, kind)] = read_layers(str(tmp_path / "two.ome.tif"))
    assert kind == "image" and attrs["channel_axis"] == 0 and attrs["scale"] == (1.0, 1.0, 1.0)
    assert read_image(tmp_path / "two.ome.tif").meta.axes == "CZYX"
