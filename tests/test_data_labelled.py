"""Labelled fine-tuning data: folder/CSV layouts, class patterns, label checks, train/val checks, stack slices."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fmscope.data.labelled import (
    LabelledItem,
    LabelledSet,
    LabelMapping,
    check_label,
    check_train_val,
    load_labelled,
    stack_slices,
)
from fmscope.errors import FileFormatError, InvalidInputError
from fmscope.io import read_image, write_image

VOL = np.zeros((4, 5, 6), dtype=np.float32)
MASK = (np.arange(120).reshape(4, 5, 6) % 3 == 0).astype(np.uint8)


def _write(folder: Path, *names: str, data: np.ndarray | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        arr = data if data is not None else (MASK if any(s in name for s in ("_label", "_mask", "_seg")) else VOL)
        write_image(folder / name, arr)


def _names(s: LabelledSet, attr: str = "image") -> list[str | None]:
    return [None if getattr(i, attr) is None else Path(getattr(i, attr)).name for i in s.items]


# --- layouts ----------------------------------------------------------------------------------------------------------


def test_one_folder_pairs_twins_and_sources(tmp_path: Path) -> None:
    _write(tmp_path, "a.nii.gz", "a_label.nii.gz", "a_blurred.nii.gz", "b_vol002_x.tif", "b_vol002_x_mask.tif")
    _write(tmp_path, "c.tif", "c_labels.tif", "d_seg.tif", "d_seg_label.tif")
    (tmp_path / "notes.txt").write_text("not an image")
    s = load_labelled(tmp_path, "segment")
    assert (s.task, s.classes, s.root) == ("segment", ("background", "foreground"), str(tmp_path.resolve()))
    assert _names(s) == ["a.nii.gz", "b_vol002_x.tif", "c.tif", "d_seg.tif"]
    assert _names(s, "label") == ["a_label.nii.gz", "b_vol002_x_mask.tif", "c_labels.tif", "d_seg_label.tif"]
    assert _names(s, "degraded") == ["a_blurred.nii.gz", None, None, None]
    assert [i.source for i in s.items] == ["a", "vol002", "c", "d_seg"]
    assert all(Path(i.image).is_absolute() and i.z_index is None for i in s.items)
    c = load_labelled(tmp_path, "classify", class_pattern=r"^(?P<class>[a-z])")
    assert c.classes == ("a", "b", "c", "d") and all(i.label is None for i in c.items)


def test_empty_folder_gives_empty_set(tmp_path: Path) -> None:
    s = load_labelled(tmp_path, "segment")
    assert len(s) == 0 and s.root == str(tmp_path.resolve())


@pytest.mark.parametrize(
    ("names", "task", "error", "match"),
    [
        (
            ["a.tif", "a_label.tif", "b_label.tif"],
            "segment",
            InvalidInputError,
            r"1 mask\(s\) without an image.*b_label",
        ),
        (
            ["a.tif", "b.tif", "b_mask.tif", "c.tif"],
            "segment",
            InvalidInputError,
            r"2 image\(s\) without a mask.*a\.tif",
        ),
        (["a.tif", "a.nii.gz", "a_label.tif"], "segment", InvalidInputError, "two files share the name 'a'"),
        (["x_vol1.tif"], "classify", InvalidInputError, r"class_pattern: .*_patch.* 'x_vol1'"),
    ],
)
def test_one_folder_errors(tmp_path: Path, names: list[str], task: Any, error: type, match: str) -> None:
    _write(tmp_path, *names)
    with pytest.raises(error, match=match):
        load_labelled(tmp_path, task)


def test_two_folders_2d(tmp_path: Path) -> None:
    img = np.arange(30, dtype=np.uint8).reshape(5, 6)
    _write(tmp_path / "images", "cat_patch_1.tif", "dog_patch_2.png", "dog_patch_2_blurred.png", data=img)
    _write(tmp_path / "labels", "cat_patch_1.tiff", "dog_patch_2_label.png", data=(img > 10).astype(np.uint8))
    s = load_labelled(tmp_path, "segment")
    assert _names(s) == ["cat_patch_1.tif", "dog_patch_2.png"]
    assert _names(s, "label") == ["cat_patch_1.tiff", "dog_patch_2_label.png"]
    assert _names(s, "degraded") == [None, "dog_patch_2_blurred.png"]
    assert [i.class_name for i in s.items] == ["cat", "dog"]  # informative only for segmentation
    c = load_labelled(tmp_path, "classify")
    assert c.classes == ("cat", "dog") and [i.class_name for i in c.items] == ["cat", "dog"]
    _write(tmp_path / "labels", "bird.tif", data=img)
    with pytest.raises(InvalidInputError, match=r"mask\(s\) without an image.*bird\.tif"):
        load_labelled(tmp_path, "segment")


def test_csv_layout(tmp_path: Path) -> None:
    _write(tmp_path / "d", "a.tif", "a_label.tif", "a_blurred.tif", "b.tif", "b_label.tif")
    csv = tmp_path / "set.csv"
    csv.write_text("image,label,class,source\nd/a.tif,d/a_label.tif,plaque,brain1\nd/b.tif,d/b_label.tif,cell,\n")
    s = load_labelled(csv, "segment")
    assert _names(s, "label") == ["a_label.tif", "b_label.tif"] and s.root == str(tmp_path.resolve())
    assert [i.source for i in s.items] == ["brain1", "b"] and _names(s, "degraded") == ["a_blurred.tif", None]
    c = load_labelled(csv, "classify")
    assert c.classes == ("cell", "plaque") and [i.class_name for i in c.items] == ["plaque", "cell"]


@pytest.mark.parametrize(
    ("text", "task", "match"),
    [
        ("image,class\nd/a.tif,x\n", "segment", "missing column 'label'"),
        ("image,label\nd/a.tif,d/a_label.tif\n", "classify", "missing column 'class'"),
        ("path,label\nd/a.tif,d/a_label.tif\n", "segment", r"unknown columns \['path'\]"),
        ("image,label\nd/a.tif,\n", "segment", r"line 2: empty \['label'\]"),
        ("image,label\nd/zzz.tif,d/a_label.tif\n", "segment", r"1 listed file\(s\) do not exist.*zzz\.tif"),
    ],
)
def test_csv_errors(tmp_path: Path, text: str, task: Any, match: str) -> None:
    _write(tmp_path / "d", "a.tif", "a_label.tif")
    (tmp_path / "set.csv").write_text(text)
    with pytest.raises(FileFormatError, match=match):
        load_labelled(tmp_path / "set.csv", task)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"task": "detect"}, "task: expected one of"),
        ({"class_pattern": r"^(.+)_patch"}, r"class_pattern: expected a named group \(\?P<class>"),
        ({"class_pattern": r"^(?P<class>"}, "class_pattern: expected a regular expression"),
        ({"label_suffixes": ()}, "label_suffixes"),
        ({"class_names": ("only",)}, "class_names: expected at least 2"),
    ],
)
def test_argument_errors(tmp_path: Path, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        load_labelled(tmp_path, **{"task": "segment", **kwargs})


def test_missing_path_and_wrong_file(tmp_path: Path) -> None:
    with pytest.raises(FileFormatError, match="nowhere' does not exist"):
        load_labelled(tmp_path / "nowhere", "segment")
    (tmp_path / "x.txt").write_text("")
    with pytest.raises(FileFormatError, match="expected a folder or a .csv file"):
        load_labelled(tmp_path / "x.txt", "segment")


# --- label values -----------------------------------------------------------------------------------------------------

LABEL_CASES = [
    (np.array([[0, 1], [1, 0]], np.uint8), None, [[0, 1], [1, 0]], np.uint8),
    (np.array([[True, False]]), None, [[1, 0]], np.uint8),
    (np.array([[0.0, 2.0], [1.0, 3.0]], np.float32), None, [[0, 2], [1, 3]], np.uint8),
    (np.array([[0, 300]], np.int32), LabelMapping({0: 0, 300: 299}), [[0, 299]], np.int64),
    (np.array([[0, 1, 2, 3]], np.uint8), LabelMapping.foreground(2), [[0, 0, 1, 0]], np.uint8),
    (np.array([[-1, 5]], np.int16), LabelMapping({-1: 0, 5: 1}), [[0, 1]], np.uint8),
    (np.array([[0, 255]], np.uint8), LabelMapping({0: 1, 255: 0}), [[1, 0]], np.uint8),
]


@pytest.mark.parametrize(("label", "mapping", "expected", "dtype"), LABEL_CASES)
def test_check_label_values(label: np.ndarray, mapping: LabelMapping | None, expected: Any, dtype: type) -> None:
    before = label.copy()
    out = check_label(label, label.shape, path="l.tif", mapping=mapping)
    np.testing.assert_array_equal(out, np.asarray(expected))
    assert out.dtype == dtype
    np.testing.assert_array_equal(label, before)


def test_check_label_0_255_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="fmscope.data.labelled"):
        out = check_label(np.array([[0, 255], [255, 0]], np.uint8), (2, 2), path="m.png")
    np.testing.assert_array_equal(out, [[0, 1], [1, 0]])
    assert "label 'm.png': values {0, 255} read as background/foreground" in caplog.text


@pytest.mark.parametrize(
    ("label", "shape", "mapping", "match"),
    [
        (
            np.zeros((4, 5), np.uint8),
            (4, 6),
            None,
            r"label 'l.tif': shape \(4, 5\) does not match the image shape \(4, 6\)",
        ),
        (np.array([[0.0, 0.5]]), (1, 2), None, r"non-integral floats \(e\.g\. 0\.5\)"),
        (np.array([[0.0, np.nan]]), (1, 2), None, "NaN or inf"),
        (np.array([[0, 1, 3]], np.uint8), (1, 3), None, r"values \{0, 1, 3\} are neither.*--map-labels"),
        (np.array([[1, 2]], np.uint8), (1, 2), None, r"values \{1, 2\}"),
        (
            np.array([[0, 1, 7, 9]], np.uint8),
            (1, 4),
            LabelMapping({0: 0, 1: 1}),
            r"unexpected values \{7, 9\}.*\{0, 1\}",
        ),
        (np.array([["a"]]), (1, 1), None, "expected integer, bool or integral float"),
    ],
)
def test_check_label_errors(
    label: np.ndarray, shape: tuple[int, ...], mapping: LabelMapping | None, match: str
) -> None:
    with pytest.raises(InvalidInputError, match=match):
        check_label(label, shape, path="l.tif", mapping=mapping)


@pytest.mark.parametrize(
    ("values", "other", "match"),
    [
        ({}, None, "non-empty dict"),
        ({0: -1}, None, "class indices >= 0"),
        ({0.5: 1}, None, "integer"),
        ({0: 1}, -2, "other"),
    ],
)
def test_label_mapping_errors(values: Any, other: Any, match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        LabelMapping(values, other)


# --- train / val ------------------------------------------------------------------------------------------------------


def _set(task: Any, *specs: tuple[str, str], root: str = "/data/train") -> LabelledSet:
    items = tuple(
        LabelledItem(f"/d/{c}_{src}.tif", None if task == "classify" else "/d/l.tif", c, src, None) for c, src in specs
    )
    classes = tuple(sorted({c for c, _ in specs})) if task == "classify" else ("background", "foreground")
    return LabelledSet(items, task, classes, root)


def test_check_train_val(caplog: pytest.LogCaptureFixture) -> None:
    train = _set("classify", ("a", "v1"), ("b", "v2"))
    check_train_val(train, _set("classify", ("a", "v3")))
    with pytest.raises(InvalidInputError, match=r"train: no labelled images found in /data/empty; expected NAME\.nii"):
        check_train_val(LabelledSet((), "segment", ("background", "foreground"), "/data/empty"), train)
    with pytest.raises(InvalidInputError, match="val: no labelled images"):
        check_train_val(train, LabelledSet((), "classify", (), "/v"))
    with pytest.raises(InvalidInputError, match=r"val: class\(es\) \['c'\] have no training example"):
        check_train_val(train, _set("classify", ("a", "v3"), ("c", "v4")))
    with pytest.raises(InvalidInputError, match="task 'segment' does not match the training task 'classify'"):
        check_train_val(train, _set("segment", ("a", "v3")))
    with caplog.at_level(logging.WARNING, logger="fmscope.data.labelled"):
        check_train_val(_set("segment", ("a", "v1")), _set("segment", ("c", "v1")))
    assert "['v1'] are in both train and val" in caplog.text


# --- stack slices -----------------------------------------------------------------------------------------------------


def test_stack_slices_synthetic(tmp_path: Path) -> None:
    _write(tmp_path, "stack.tif", "stack_label.tif")
    s = stack_slices(tmp_path / "stack.tif", tmp_path / "stack_label.tif")
    assert len(s) == 4 and [i.z_index for i in s.items] == [0, 1, 2, 3] and s.sources == ("stack",)
    sub = stack_slices(tmp_path / "stack.tif", tmp_path / "stack_label.tif", [3, 1], class_names=["bg", "a", "b"])
    assert [i.z_index for i in sub.items] == [3, 1] and sub.classes == ("bg", "a", "b")
    with pytest.raises(InvalidInputError, match=r"z_indices: expected distinct integers in 0\.\.3"):
        stack_slices(tmp_path / "stack.tif", tmp_path / "stack_label.tif", [4])
    write_image(tmp_path / "bad.tif", np.zeros((4, 5, 7), np.uint8))
    with pytest.raises(InvalidInputError, match=r"shape \(4, 5, 7\) does not match .* shape \(4, 5, 6\)"):
        stack_slices(tmp_path / "stack.tif", tmp_path / "bad.tif")
    write_image(tmp_path / "flat.tif", np.zeros((5, 6), np.uint8))
    with pytest.raises(InvalidInputError, match="expected a 3D"):
        stack_slices(tmp_path / "flat.tif", tmp_path / "flat.tif")


# --- real data --------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lsm(shared_data: Path) -> Path:
    folder = shared_data / "lsm_selma3d_wu_patches" / "finetune"
    if not folder.is_dir():
        pytest.skip(f"LSM fine-tuning patches not found at {folder}")
    return folder


def test_real_lsm_finetune(lsm: Path, caplog: pytest.LogCaptureFixture) -> None:
    train = load_labelled(lsm / "train", "segment")
    assert len(train) == 3 and train.sources == ("vol000", "vol007", "vol013")
    assert all(i.label and i.label.endswith("_label.nii.gz") for i in train.items)
    assert all(i.degraded and i.degraded.endswith("_blurred.nii.gz") for i in train.items)
    assert [i.class_name for i in train.items] == ["amyloid_plaque", "cell_nucleus", "vessels"]
    for task in ("segment", "classify"):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="fmscope.data.labelled"):
            check_train_val(load_labelled(lsm / "train", task), load_labelled(lsm / "val", task))
        assert "['vol000'] are in both" in caplog.text  # cell_nucleus val patch comes from vol000
    assert load_labelled(lsm / "train", "classify").classes == ("amyloid_plaque", "cell_nucleus", "vessels")
    item = train.items[2]
    label = check_label(read_image(item.label).numpy(), read_image(item.image, lazy=True).meta.shape, path=item.label)
    assert label.dtype == np.uint8 and set(np.unique(label).tolist()) == {0, 1}


@pytest.fixture(scope="module")
def isbi(shared_data: Path) -> Path:
    folder = shared_data / "isbi2012_em_membranes"
    if not (folder / "raw.tif").is_file():
        pytest.skip(f"ISBI 2012 EM stack not found at {folder}")
    return folder


def test_real_isbi_stack_slices(isbi: Path) -> None:
    s = stack_slices(isbi / "raw.tif", isbi / "membrane_labels_isbi.tif")
    assert len(s) == 30 and [i.z_index for i in s.items] == list(range(30)) and s.sources == ("raw",)
    raw_label = read_image(s.items[0].label).numpy()[0]
    membranes = check_label(raw_label, (512, 512), path=s.items[0].label, mapping=LabelMapping({0: 1, 255: 0}))
    assert 0.15 < membranes.mean() < 0.3  # ISBI: 0 = membrane
    semantic = read_image(isbi / "cardona2010_multiclass" / "semantic_classes.tif").numpy()
    mito = check_label(semantic, (30, 512, 512), path="semantic_classes.tif", mapping=LabelMapping.foreground(2))
    assert set(np.unique(mito).tolist()) == {0, 1} and 0.03 < mito.mean() < 0.07  # README: mitochondria 0.0482
    with pytest.raises(InvalidInputError, match=r"unexpected values \{3\}"):
        check_label(semantic, (30, 512, 512), path="semantic_classes.tif", mapping=LabelMapping({0: 0, 1: 1, 2: 2}))
    png = load_labelled(isbi / "original_png", "segment")
    assert len(png) == 30 and _names(png)[:2] == ["00.png", "01.png"] and _names(png, "label")[0] == "00.png"
