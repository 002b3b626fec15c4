"""Benchmark units: the labelled images (or slices, or blocks of volumes) that splits are made of.

:func:`prepare_units` turns one datatype of a benchmark config into units written under ``REPORT/units/NAME/``: the
raw image (raw dtype kept, channel chosen, cropped, cut into blocks), a binary structure mask, the true instances and
the degraded twin where there is one. Every method then reads the same files through the same data code
(:func:`fmscope.data.samples.load_samples`). ``units.json`` records the units and a signature of the datatype
settings; it is reused when the signature matches.

A unit is named after its image file without the format suffix (``img3``, ``raw_z012`` for slice 12 of a stack,
``img3_b5`` for block 5). Where two different files would give the same name (``train/images/slice_0000.png`` and
``test/images/slice_0000.png``), every unit of the datatype is named by its path relative to the data root instead
(``train/images/slice_0000``), and so is every source that is the file itself (``source: file``, or ``auto`` without
a ``volNNN`` id; ``test_sources`` then use these names): two files never merge into one unit or one source volume.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fmscope.config import to_dict
from fmscope.data.labelled import (
    BINARY_CLASSES,
    IMAGE_EXTENSIONS,
    LabelledItem,
    LabelledSet,
    load_labelled,
    stack_slices,
    strip_suffix,
)
from fmscope.data.manifest import volume_stem
from fmscope.errors import InvalidInputError
from fmscope.evaluation.bench_config import DatatypeConfig
from fmscope.io import ImageMetadata, read_image, write_image
from fmscope.segment.postprocess import label_components
from fmscope.tasks.registry import get_task
from fmscope.utils.atomic import atomic_output

logger = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
_VOLUME_ONLY = re.compile(r"vol\d+")  # a file named just ``volNNN``: its source is that volume id, not the file


@dataclass(frozen=True)
class Unit:
    """One labelled unit; paths are absolute. ``label`` holds 0/1 (structure), ``instances`` object ids."""

    id: str
    source: str
    class_name: str | None
    image: str
    label: str | None
    instances: str | None
    degraded: str | None


def _signature(datatype: DatatypeConfig, root: Path) -> str:
    text = json.dumps({"datatype": to_dict(datatype), "root": str(root), "version": 1}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _folder_parts(image: str, root: Path, common: Path) -> list[str]:
    """Folders of ``image`` relative to the data root (else to the common folder of the datatype's images)."""
    path = Path(image)  # absolute and normalised (no '..': a unit never lands outside its folder)
    for base in (Path(os.path.normpath(root.absolute())), root.resolve(), common):
        if path.is_relative_to(base):
            return [_UNSAFE.sub("_", part) for part in path.relative_to(base).parent.parts]
    return []


def _distinct(names: list[str], files: list[str], rename: list[str]) -> list[str]:
    """``names``, or ``rename`` (all of them, for names of one style) where two different ``files`` share a name."""
    files_of: dict[str, set[str]] = {}
    for name, file in zip(names, files, strict=True):
        files_of.setdefault(name, set()).add(file)
    return rename if any(len(f) > 1 for f in files_of.values()) else names


def _names_and_sources(items: tuple[LabelledItem, ...], datatype: DatatypeConfig, root: Path) -> list[tuple[str, str]]:
    """Per item: the unit name (before any block index) and the source id (see the module doc)."""
    files = [os.path.normpath(Path(it.image).absolute()) for it in items]
    common = Path(os.path.commonpath([str(Path(f).parent) for f in files])) if files else root
    folders = ["/".join(_folder_parts(f, root, common)) for f in files]

    def under(folder: str, name: str) -> str:
        return f"{folder}/{name}" if folder else name

    stems = [_UNSAFE.sub("_", Path(it.image).name.split(".")[0]) for it in items]
    stems = _distinct(stems, files, [under(d, s) for d, s in zip(folders, stems, strict=True)])
    names = [s if it.z_index is None else f"{s}_z{it.z_index:03d}" for s, it in zip(stems, items, strict=True)]
    file_stems = [volume_stem(it.image) for it in items]
    sources = file_stems if datatype.source == "file" else [it.source for it in items]
    of_file = [
        s == f and (datatype.source == "file" or not _VOLUME_ONLY.fullmatch(s))
        for s, f in zip(sources, file_stems, strict=True)
    ]
    # only sources that are the file itself are told apart by folder; a shared volume id stays one source
    keys = [f if own else "" for f, own in zip(files, of_file, strict=True)]
    renamed = [under(d, s) if own else s for d, s, own in zip(folders, sources, of_file, strict=True)]
    sources = _distinct(sources, keys, renamed)
    return list(zip(names, sources, strict=True))


def _read(path: str, z_index: int | None, channel: int | None) -> np.ndarray:
    image = read_image(path)
    if "C" in image.meta.axes:
        if channel is None and image.meta.n_channels > 1:
            raise InvalidInputError(
                f"channel: '{path}' has {image.meta.n_channels} channels; set the datatype's channel"
            )
        image = image.channel(channel or 0)
    array = image.numpy()
    return array if z_index is None else np.asarray(array[z_index])


def _pieces(array: np.ndarray, datatype: DatatypeConfig) -> list[np.ndarray]:
    """Crop, then cut into blocks (C order); the same for image, mask, instances and twin."""
    if datatype.crop is not None:
        if len(datatype.crop) != array.ndim:
            raise InvalidInputError(
                f"datatypes[{datatype.name}].crop: {len(datatype.crop)} ranges for a {array.ndim}D image"
            )
        array = array[tuple(slice(a, b) for a, b in datatype.crop)]
    if datatype.blocks is None:
        return [array]
    if len(datatype.blocks) != array.ndim:
        raise InvalidInputError(
            f"datatypes[{datatype.name}].blocks: {len(datatype.blocks)} values for a {array.ndim}D image"
        )
    edges = [np.linspace(0, n, b + 1).astype(int) for n, b in zip(array.shape, datatype.blocks, strict=True)]
    out = []
    for index in itertools.product(*(range(b) for b in datatype.blocks)):
        out.append(array[tuple(slice(e[i], e[i + 1]) for e, i in zip(edges, index, strict=True))])
    return out


def _paired(datatype: DatatypeConfig, root: Path) -> list[LabelledItem]:
    """Image and mask folders paired by name (mask suffixes stripped) or by sorted order."""
    folders = [root / str(f) for f in (datatype.images, datatype.labels)]
    for f in folders:
        if not f.is_dir():
            raise InvalidInputError(f"datatypes[{datatype.name}]: '{f}' is not a folder")
    images, labels = ([p for p in sorted(f.iterdir()) if p.name.lower().endswith(IMAGE_EXTENSIONS)] for f in folders)
    if datatype.pair_by == "order":
        if len(images) != len(labels):
            raise InvalidInputError(
                f"datatypes[{datatype.name}].pair_by: 'order' needs as many masks as images, got "
                f"{len(labels)} and {len(images)}"
            )
        pairs = list(zip(images, labels, strict=True))
    else:
        by_stem = {}
        for label in labels:
            stem = volume_stem(label)
            by_stem[strip_suffix(stem, datatype.label_suffixes) or stem] = label
        missing = [p.name for p in images if volume_stem(p) not in by_stem]
        if missing:
            raise InvalidInputError(
                f"datatypes[{datatype.name}]: no mask for {missing[:5]} in '{folders[1]}' "
                f"(label_suffixes {list(datatype.label_suffixes)}; or pair_by: order)"
            )
        pairs = [(p, by_stem[volume_stem(p)]) for p in images]
    return [LabelledItem(str(i), str(lab), None, volume_stem(i), None) for i, lab in pairs]


def _items(datatype: DatatypeConfig, root: Path) -> LabelledSet:
    if datatype.stack is not None:
        return stack_slices(root / datatype.stack, root / str(datatype.label_stack))
    if datatype.images is not None:
        return LabelledSet(tuple(_paired(datatype, root)), "segment", BINARY_CLASSES, str(root))
    task = get_task(datatype.task).layout
    sets = [
        load_labelled(root / f, task, class_pattern=datatype.class_pattern, label_suffixes=datatype.label_suffixes)
        for f in datatype.folders
    ]
    items = [it for s in sets for it in s.items]
    if datatype.include:
        pattern = re.compile(datatype.include)
        items = [it for it in items if pattern.search(Path(it.image).name)]
    classes = tuple(sorted({str(it.class_name) for it in items})) if task == "classify" else BINARY_CLASSES
    labelled = LabelledSet(tuple(items), task, classes, str(root))
    if not labelled.items:
        raise InvalidInputError(
            f"datatypes[{datatype.name}]: no labelled images in {list(datatype.folders)} under '{root}'"
        )
    return labelled


def _write(path: Path, array: np.ndarray) -> str:
    write_image(path, array, ImageMetadata.for_array(array, axes="ZYX"[-array.ndim :]), overwrite=True)
    return str(path)


def _unit_arrays(item: LabelledItem, datatype: DatatypeConfig) -> dict[str, list[np.ndarray]]:
    image = _read(item.image, item.z_index, datatype.channel)
    if image.ndim not in (2, 3):
        raise InvalidInputError(f"{item.image}: expected a 2D or 3D image, got shape {image.shape}")
    arrays = {"image": _pieces(image, datatype)}
    if item.label is not None and get_task(datatype.task).layout == "segment":
        raw = _read(item.label, item.z_index, None)
        if raw.shape != image.shape:
            raise InvalidInputError(f"{item.label}: label shape {raw.shape} does not match the image's {image.shape}")
        mask = raw != 0 if datatype.foreground is None else np.isin(raw, datatype.foreground)
        arrays["label"] = _pieces(mask.astype(np.uint8), datatype)
        if datatype.instances == "labels":
            arrays["instances"] = _pieces(np.where(mask, raw, 0).astype(np.uint32), datatype)
        elif datatype.instances == "components":  # per piece, so that a cut object is two objects like in the image
            arrays["instances"] = [label_components(m > 0).astype(np.uint32) for m in arrays["label"]]
    if item.degraded is not None:
        arrays["degraded"] = _pieces(_read(item.degraded, item.z_index, datatype.channel), datatype)
    return arrays


def held_out_arrays(
    datatype: DatatypeConfig, root: str | Path, sources: set[str]
) -> list[tuple[str, list[np.ndarray]]]:
    """For each image of the given sources: its path, the array it is read as, and the unit images cut from it."""
    labelled = _items(datatype, Path(root))
    out = []
    for item, (_, source) in zip(labelled.items, _names_and_sources(labelled.items, datatype, Path(root)), strict=True):
        if source in sources:
            image = _read(item.image, item.z_index, datatype.channel)
            out.append((item.image, [image, *_pieces(image, datatype)]))
    return out


def prepare_units(datatype: DatatypeConfig, root: str | Path, folder: str | Path) -> list[Unit]:
    """Write (or reuse) the units of ``datatype`` under ``folder`` and return them in a stable order."""
    root, folder = Path(root), Path(folder)
    manifest = folder / "units.json"
    signature = _signature(datatype, root)
    if manifest.is_file():
        saved = json.loads(manifest.read_text())
        reused = [
            Unit(
                **{
                    k: (str(folder / v) if k in ("image", "label", "instances", "degraded") and v else v)
                    for k, v in u.items()
                }
            )
            for u in saved["units"]
        ]
        if saved.get("signature") == signature and all(Path(u.image).is_file() for u in reused):
            return reused
        logger.info("units of %s changed or are incomplete: rebuilding '%s'", datatype.name, folder)
    folder.mkdir(parents=True, exist_ok=True)
    labelled = _items(datatype, root)
    units: list[Unit] = []
    for item, (stem, source) in zip(labelled.items, _names_and_sources(labelled.items, datatype, root), strict=True):
        arrays = _unit_arrays(item, datatype)
        n = len(arrays["image"])
        for b in range(n):
            uid = stem if n == 1 else f"{stem}_b{b}"
            (folder / uid).parent.mkdir(parents=True, exist_ok=True)
            paths: dict[str, Any] = {k: None for k in ("label", "instances", "degraded")}
            paths["image"] = _write(folder / f"{uid}.tif", arrays["image"][b])
            for key in ("label", "instances", "degraded"):
                if key in arrays:
                    paths[key] = _write(folder / f"{uid}_{key}.tif", arrays[key][b])
            units.append(Unit(uid, source, item.class_name, **paths))
    ids = [u.id for u in units]
    if len(set(ids)) != len(ids):
        same = sorted({i for i in ids if ids.count(i) > 1})
        raise InvalidInputError(
            f"datatypes[{datatype.name}]: different images give the same unit name(s) {same[:5]}; rename the files"
        )
    relative = [
        {
            k: (Path(v).relative_to(folder).as_posix() if k in ("image", "label", "instances", "degraded") and v else v)
            for k, v in asdict(u).items()
        }
        for u in units
    ]
    with atomic_output(manifest, overwrite=True) as tmp:
        tmp.write_text(json.dumps({"signature": signature, "units": relative}, indent=1))
    logger.info("%s: %d units from %d images in '%s'", datatype.name, len(units), len(labelled.items), folder)
    return units


def labelled_set(
    units: list[Unit], task: str, classes: tuple[str, ...], root: str | Path, *, by_unit: bool = False
) -> LabelledSet:
    """The units as a :class:`LabelledSet` for fine-tuning (deblurring sets are segmentation sets with twins);
    ``by_unit``: each unit is its own source (the protocol's folds are by unit, as the report says)."""
    items = tuple(
        LabelledItem(u.image, u.label, u.class_name, u.id if by_unit else u.source, u.degraded) for u in units
    )
    return LabelledSet(items, get_task(task).layout, classes, str(root))


def class_names(units: list[Unit], datatype: DatatypeConfig) -> tuple[str, ...]:
    """Class names in index order: background + the structure (segment), the sorted classes, or none (deblur)."""
    return get_task(datatype.task).benchmark_classes([str(u.class_name) for u in units], datatype.name)
