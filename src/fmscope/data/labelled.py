"""Labelled data for few-shot fine-tuning: which images, their masks or classes, their source volumes.

Layouts read by :func:`load_labelled` (paths come back absolute):

* one folder of pairs ``NAME.EXT`` + ``NAME_label.EXT`` (also ``_labels``, ``_mask``, ``_seg``); ``NAME_blurred.EXT``
  is the degraded twin of ``NAME`` for deblurring, never an image of its own (the shared LSM fine-tuning layout);
* two folders ``images/`` + ``labels/`` (or ``image/`` + ``label/``, ``images/`` + ``masks/``) with the same file
  names, extensions aside (``a.tif`` matches ``a.tiff``, ``a_label.png`` matches ``a.png``);
* a CSV with columns ``image`` and ``label`` (segment) or ``class`` (classify), optional ``source`` and ``degraded``,
  paths relative to the CSV.

Classes for ``classify`` come from the CSV or from the file name (without extension) through ``class_pattern``, a regex
with a named group ``class``. 2D images (PNG/TIFF) use the same layouts; :func:`stack_slices` makes each Z slice of
a 3D stack one 2D sample. The source id (for splits and leakage checks) is the CSV's, else the ``volNNN`` part of the
name, else the file stem. :func:`check_label` turns the raw values of a mask into class indices.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from fmscope.data.labels import LabelMapping, check_label, is_int
from fmscope.data.manifest import volume_stem
from fmscope.errors import FileFormatError, InvalidInputError
from fmscope.io import SUPPORTED_FORMATS, read_image

logger = logging.getLogger(__name__)

Task = Literal["segment", "classify"]
DEFAULT_CLASS_PATTERN = r"^(?P<class>.+?)_patch"
DEFAULT_LABEL_SUFFIXES = ("_label", "_labels", "_mask", "_seg")
DEGRADED_SUFFIX = "_blurred"
BINARY_CLASSES = ("background", "foreground")
EXPECTED_LAYOUTS = "expected NAME.nii.gz + NAME_label.nii.gz pairs, images/ + labels/, or a CSV"
FOLDER_PAIRS = (("images", "labels"), ("image", "label"), ("images", "masks"))
_CSV_COLUMNS = ("image", "label", "class", "source", "degraded")
IMAGE_EXTENSIONS = tuple(s for exts in SUPPORTED_FORMATS.values() for s in exts)
_VOLUME_ID = re.compile(r"(?:^|[_.-])(vol\d+)(?=$|[_.-])")


__all__ = [
    "LabelMapping",
    "LabelledItem",
    "LabelledSet",
    "check_label",
    "check_train_val",
    "load_labelled",
    "stack_slices",
]


@dataclass(frozen=True)
class LabelledItem:
    """One labelled sample.

    Attributes:
        image: absolute path of the image.
        label: absolute path of the mask (segmentation), ``None`` for classification.
        class_name: class of the image (classification); for segmentation the structure named by the file name or
            CSV when there is one (informative only), else ``None``.
        source: source volume id; items sharing it should not be on both sides of a split.
        degraded: absolute path of the ``_blurred`` twin (deblurring input), ``None`` when absent.
        z_index: for one slice of a 3D stack (:func:`stack_slices`), the Z index of this 2D sample.
    """

    image: str
    label: str | None
    class_name: str | None
    source: str
    degraded: str | None
    z_index: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.image, str) or not self.image:
            raise InvalidInputError(f"image: expected a non-empty path string, got {self.image!r}")
        if not isinstance(self.source, str) or not self.source:
            raise InvalidInputError(f"source: expected a non-empty string for '{self.image}', got {self.source!r}")
        if self.z_index is not None:
            if not (is_int(self.z_index) and self.z_index >= 0):
                raise InvalidInputError(f"z_index: expected None or an integer >= 0, got {self.z_index!r}")
            object.__setattr__(self, "z_index", int(self.z_index))


@dataclass(frozen=True)
class LabelledSet:
    """Labelled items of one task; ``classes`` are the class names in class-index order; ``root`` the folder read."""

    items: tuple[LabelledItem, ...]
    task: Task
    classes: tuple[str, ...]
    root: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "items", tuple(self.items))
        object.__setattr__(self, "classes", tuple(self.classes))
        _check_task(self.task)
        if any(not isinstance(i, LabelledItem) for i in self.items):
            raise InvalidInputError("items: expected LabelledItem objects")
        if len(set(self.classes)) != len(self.classes):
            raise InvalidInputError(f"classes: expected distinct names, got {self.classes}")
        if self.task == "segment" and any(i.label is None for i in self.items):
            raise InvalidInputError(f"items: every segmentation item needs a label, missing in '{self.root}'")
        unknown = sorted({str(i.class_name) for i in self.items if i.class_name not in self.classes})
        if self.task == "classify" and unknown:
            raise InvalidInputError(f"items: classes {unknown} are not in classes {self.classes}")

    def __len__(self) -> int:
        return len(self.items)

    @property
    def sources(self) -> tuple[str, ...]:
        """Distinct source ids in order of first appearance."""
        return tuple(dict.fromkeys(i.source for i in self.items))

    def subset(self, indices: Sequence[int]) -> LabelledSet:
        """The set of the items at ``indices`` (same task, classes and root)."""
        return LabelledSet(tuple(self.items[i] for i in indices), self.task, self.classes, self.root)


def _check_task(task: str) -> None:
    if task not in get_args(Task):
        raise InvalidInputError(f"task: expected one of {get_args(Task)}, got {task!r}")


def _source_id(stem: str) -> str:
    match = _VOLUME_ID.search(stem)
    return match.group(1) if match else stem


def _scan(folder: Path) -> list[Path]:
    """Image files (and ``.zarr`` folders) of ``folder``, sorted; hidden files and other files are skipped."""
    names = [(p, p.name.lower()) for p in folder.iterdir() if not p.name.startswith(".")]
    return sorted(p for p, low in names if low.endswith(IMAGE_EXTENSIONS) and (p.is_file() or low.endswith(".zarr")))


def strip_suffix(stem: str, suffixes: Sequence[str]) -> str | None:
    """``stem`` without the longest of ``suffixes`` it ends with (and is longer than), else None."""
    for suffix in sorted(suffixes, key=len, reverse=True):
        if stem.endswith(suffix) and len(stem) > len(suffix):
            return stem[: -len(suffix)]
    return None


def _by_stem(files: Sequence[Path], where: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for f in files:
        stem = volume_stem(f)
        if stem in out:
            raise InvalidInputError(f"'{where}': two files share the name '{stem}': {out[stem].name}, {f.name}")
        out[stem] = f
    return out


def _unpaired(where: Path, what: str, names: Sequence[str]) -> None:
    if names:
        raise InvalidInputError(f"'{where}': {len(names)} {what}: {sorted(names)[:5]}; {EXPECTED_LAYOUTS}")


@dataclass(frozen=True)
class _Row:
    image: Path
    label: Path | None = None
    class_name: str | None = None
    source: str | None = None
    degraded: Path | None = None


def _from_folder(folder: Path, task: Task, suffixes: Sequence[str]) -> list[_Row]:
    files = _by_stem(_scan(folder), folder)
    label_of = {s: b for s in files if (b := strip_suffix(s, suffixes)) is not None}
    label_of = {s: b for s, b in label_of.items() if s not in label_of.values()}  # 'x_seg' with 'x_seg_label': image
    twin_of = {s: b for s in files if s not in label_of and (b := strip_suffix(s, [DEGRADED_SUFFIX])) is not None}
    images = {s: p for s, p in files.items() if s not in label_of and s not in twin_of}
    labels = {b: files[s] for s, b in label_of.items()}
    _unpaired(folder, "mask(s) without an image", [files[s].name for s, b in label_of.items() if b not in images])
    lone = [files[s].name for s, b in twin_of.items() if b not in images]
    if lone:
        logger.warning(
            "'%s': %d %s file(s) without an image, ignored: %s", folder, len(lone), DEGRADED_SUFFIX, lone[:5]
        )
    if task == "segment":
        _unpaired(folder, "image(s) without a mask", [p.name for s, p in images.items() if s not in labels])
    degraded = {b: files[s] for s, b in twin_of.items()}
    return [_Row(p, labels.get(s) if task == "segment" else None, degraded=degraded.get(s)) for s, p in images.items()]


def _twin(image: Path) -> Path | None:
    stem = volume_stem(image)
    twin = image.with_name(stem + DEGRADED_SUFFIX + image.name[len(stem) :])
    return twin if twin.exists() else None


def _from_two_folders(img_dir: Path, lab_dir: Path, task: Task, suffixes: Sequence[str]) -> list[_Row]:
    files = _by_stem(_scan(img_dir), img_dir)
    images = {s: p for s, p in files.items() if strip_suffix(s, [DEGRADED_SUFFIX]) is None}
    if task == "classify":
        return [_Row(p, degraded=_twin(p)) for p in images.values()]
    labels: dict[str, Path] = {}
    orphans: list[str] = []
    for stem, path in _by_stem(_scan(lab_dir), lab_dir).items():
        base = stem if stem in images else strip_suffix(stem, suffixes)
        if base is None or base not in images:
            orphans.append(path.name)
        elif base in labels:
            raise InvalidInputError(f"'{lab_dir}': two masks for '{base}': {labels[base].name}, {path.name}")
        else:
            labels[base] = path
    _unpaired(lab_dir, "mask(s) without an image", orphans)
    _unpaired(img_dir, "image(s) without a mask", [p.name for s, p in images.items() if s not in labels])
    return [_Row(p, labels[s], degraded=_twin(p)) for s, p in images.items()]


def _from_csv(path: Path, task: Task) -> list[_Row]:
    try:
        reader = csv.DictReader(io.StringIO(path.read_text(encoding="utf-8")))
        fields = [f.strip() for f in (reader.fieldnames or [])]
        rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise FileFormatError(f"'{path}': cannot be read as CSV ({exc})") from exc
    unknown = [f for f in fields if f not in _CSV_COLUMNS]
    if unknown:
        raise FileFormatError(f"'{path}': unknown columns {unknown}; expected some of {_CSV_COLUMNS}")
    for column in ("image", "label" if task == "segment" else "class"):
        if column not in fields:
            raise FileFormatError(f"'{path}': missing column '{column}' for task '{task}'; header has {fields}")
    out: list[_Row] = []
    missing: list[str] = []
    for line, raw in enumerate(rows, start=2):
        row = {(k or "").strip(): (v or "").strip() for k, v in raw.items()}
        needed = ("image", "label") if task == "segment" else ("image", "class")
        empty = [c for c in needed if not row.get(c)]
        if empty:
            raise FileFormatError(f"'{path}': line {line}: empty {empty}")
        paths = {c: (path.parent / Path(row[c]).expanduser()) for c in ("image", "label", "degraded") if row.get(c)}
        missing += [str(p) for c, p in paths.items() if not p.exists() and (c != "label" or task == "segment")]
        image = paths["image"]
        degraded = paths.get("degraded") or _twin(image)
        label = paths.get("label") if task == "segment" else None
        out.append(_Row(image, label, row.get("class") or None, row.get("source") or None, degraded))
    if missing:
        raise FileFormatError(f"'{path}': {len(missing)} listed file(s) do not exist: {missing[:5]}")
    return out


def _compile_pattern(class_pattern: str) -> re.Pattern[str]:
    try:
        pattern = re.compile(class_pattern)
    except (re.error, TypeError) as exc:
        raise InvalidInputError(f"class_pattern: expected a regular expression, got {class_pattern!r} ({exc})") from exc
    if "class" not in pattern.groupindex:
        raise InvalidInputError(f"class_pattern: expected a named group (?P<class>...), got {class_pattern!r}")
    return pattern


def _class_names(task: Task, class_names: Sequence[str] | None) -> tuple[str, ...] | None:
    if class_names is None:
        return BINARY_CLASSES if task == "segment" else None
    names = tuple(class_names)
    if task != "segment":
        raise InvalidInputError("class_names: only for task='segment'; classification classes come from the data")
    if len(names) < 2 or len(set(names)) != len(names) or not all(isinstance(n, str) and n for n in names):
        raise InvalidInputError(f"class_names: expected at least 2 distinct non-empty names, got {class_names!r}")
    return names


def load_labelled(
    path: str | os.PathLike[str],
    task: Task,
    *,
    class_pattern: str = DEFAULT_CLASS_PATTERN,
    label_suffixes: Sequence[str] = DEFAULT_LABEL_SUFFIXES,
    class_names: Sequence[str] | None = None,
) -> LabelledSet:
    """Load labelled images from a folder or a CSV (see the module doc); an empty folder gives an empty set.

    Args:
        path: folder of pairs, folder holding ``images/`` + ``labels/``, or a ``.csv`` file.
        task: ``"segment"`` (every image needs a mask) or ``"classify"`` (every image needs a class).
        class_pattern: regex with a group ``class``, searched in file names without extension, for classes not given
            by a CSV (required for ``classify``; for ``segment`` it only fills ``class_name`` where it matches).
        label_suffixes: suffixes that mark a mask in the one-folder layout (and optionally in ``labels/``).
        class_names: segmentation class names in index order (default ``("background", "foreground")``).

    Raises:
        FileFormatError: missing path, unreadable CSV, a missing column, listed files that do not exist.
        InvalidInputError: masks without an image, images without a mask (segment), a class pattern that is not a
            regex with a ``class`` group or does not match a file, bad ``task``/``label_suffixes``/``class_names``.
    """
    _check_task(task)
    pattern = _compile_pattern(class_pattern)
    suffixes = tuple(label_suffixes) if not isinstance(label_suffixes, str) else ()
    if not suffixes or not all(isinstance(s, str) and s and s != DEGRADED_SUFFIX for s in suffixes):
        raise InvalidInputError(
            f"label_suffixes: expected non-empty suffix strings like '_label', got {label_suffixes!r}"
        )
    names = _class_names(task, class_names)
    given = Path(path).expanduser()
    if not given.exists():
        raise FileFormatError(f"path: '{given}' does not exist")
    p = given.resolve()
    if p.is_dir() and not p.name.lower().endswith(".zarr"):
        root = p
        pair = next(((p / i, p / lab) for i, lab in FOLDER_PAIRS if (p / i).is_dir() and (p / lab).is_dir()), None)
        if pair is None and task == "classify" and (p / "images").is_dir():
            pair = (p / "images", p / "labels")
        rows = _from_two_folders(*pair, task, suffixes) if pair else _from_folder(p, task, suffixes)
    elif p.suffix.lower() == ".csv":
        root = p.parent
        rows = _from_csv(p, task)
    else:
        raise FileFormatError(f"path: expected a folder or a .csv file, got '{p}'")
    items: list[LabelledItem] = []
    for row in rows:
        stem = volume_stem(row.image)
        class_name = row.class_name
        if class_name is None:
            match = pattern.search(stem)
            class_name = match.group("class") if match and match.group("class") else None
            if class_name is None and task == "classify":
                raise InvalidInputError(
                    f"class_pattern: {pattern.pattern!r} does not match the file name '{stem}' ({row.image}); give a "
                    "regex whose group 'class' captures the class, or a CSV with a 'class' column"
                )
        label = str(row.label.resolve()) if row.label is not None else None
        degraded = str(row.degraded.resolve()) if row.degraded is not None else None
        source = row.source or _source_id(stem)
        items.append(LabelledItem(str(row.image.resolve()), label, class_name, source, degraded))
    if not items:
        logger.warning("no labelled images found in '%s'; %s", p, EXPECTED_LAYOUTS)
    classes = names if names is not None else tuple(sorted({str(i.class_name) for i in items}))
    logger.info("loaded %d labelled item(s) for %s from '%s'", len(items), task, p)
    return LabelledSet(tuple(items), task, classes, str(root))


def stack_slices(
    image_path: str | os.PathLike[str],
    label_path: str | os.PathLike[str],
    z_indices: Sequence[int] | None = None,
    *,
    class_names: Sequence[str] | None = None,
) -> LabelledSet:
    """Segmentation set where each Z slice of a 3D stack (and of its 3D label stack) is one 2D sample.

    All items share the image and label paths and the stack's source id; ``z_index`` says which slice. Only the
    metadata is read here; check each slice's content with :func:`check_label`.

    Raises:
        FileFormatError: a missing or unreadable file.
        InvalidInputError: a stack that is not (Z, Y, X), label/image shape mismatch, bad ``z_indices``.
    """
    paths = [Path(p).expanduser().resolve() for p in (image_path, label_path)]
    metas = [read_image(p, lazy=True).meta for p in paths]
    (image, label), (shape, label_shape) = (str(p) for p in paths), (m.shape for m in metas)
    if metas[0].axes != "ZYX":
        raise InvalidInputError(f"image_path: expected a 3D (Z, Y, X) stack, got axes '{metas[0].axes}' in '{image}'")
    if label_shape != shape:
        raise InvalidInputError(f"label_path: '{label}' shape {label_shape} does not match '{image}' shape {shape}")
    n = shape[0]
    zs = list(range(n)) if z_indices is None else list(z_indices)
    bad = [z for z in zs if not (is_int(z) and 0 <= z < n)]
    if bad or len(set(zs)) != len(zs) or not zs:
        raise InvalidInputError(f"z_indices: expected distinct integers in 0..{n - 1}, got {z_indices!r}")
    source = _source_id(volume_stem(paths[0]))
    items = tuple(LabelledItem(image, label, None, source, None, int(z)) for z in zs)
    return LabelledSet(items, "segment", _class_names("segment", class_names) or BINARY_CLASSES, str(paths[0].parent))


def check_train_val(train: LabelledSet, val: LabelledSet) -> None:
    """Check that a training and a validation set fit together; warn when they share a source volume (leakage).

    Raises:
        InvalidInputError: an empty set, different tasks, a validation class absent from training (classification).
    """
    for name, s in (("train", train), ("val", val)):
        if not isinstance(s, LabelledSet):
            raise InvalidInputError(f"{name}: expected a LabelledSet, got {type(s).__name__}")
        if not s.items:
            raise InvalidInputError(f"{name}: no labelled images found in {s.root}; {EXPECTED_LAYOUTS}")
    if train.task != val.task:
        raise InvalidInputError(f"val: task '{val.task}' does not match the training task '{train.task}'")
    if train.task == "classify":
        seen = {i.class_name for i in train.items}
        unseen = sorted({str(i.class_name) for i in val.items if i.class_name not in seen})
        if unseen:
            raise InvalidInputError(
                f"val: class(es) {unseen} have no training example (training classes: {sorted(map(str, seen))})"
            )
    shared = [s for s in train.sources if s in set(val.sources)]
    if shared:
        logger.warning("source volume(s) %s are in both train and val: validation may be optimistic (leakage)", shared)
