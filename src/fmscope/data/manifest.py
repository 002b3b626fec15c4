"""Pretraining manifests: which volumes, their captions and their source (for splitting by source volume).

Three inputs are accepted by :func:`load_manifest`:

* a folder of volumes (any format ``fmscope.io`` reads: files with a known extension and ``.zarr`` folders), with
  captions from ``captions.json`` in that folder (file name -> caption, the shared LSM format);
* a CSV file with columns ``path``, ``caption``, ``source`` and optionally ``dataset``;
* a JSON file holding a list of objects with the same keys.

Relative paths are resolved against the manifest file's folder (or the folder itself). The source id defaults to the
file stem without its format suffix (``01_aa1.nii.gz -> 01_aa1``). Entries keep absolute paths; :func:`save_manifest`
writes them relative to the output file.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fmscope.errors import FileFormatError, InvalidInputError
from fmscope.io import SUPPORTED_FORMATS
from fmscope.utils.atomic import atomic_output

logger = logging.getLogger(__name__)

CAPTIONS_FILE = "captions.json"
_COLUMNS = ("path", "caption", "source", "dataset")
_SUFFIXES = sorted((s for exts in SUPPORTED_FORMATS.values() for s in exts), key=len, reverse=True)


@dataclass(frozen=True)
class ManifestEntry:
    """One volume of a manifest.

    Attributes:
        path: absolute path of the volume (file or folder).
        caption: free-text description, ``None`` when missing (only with ``allow_missing_captions``).
        source: source/volume id; entries sharing it never land on both sides of a split.
        dataset: HDF5 dataset / OME-Zarr sub-group to read, or ``None``.
    """

    path: str
    caption: str | None
    source: str
    dataset: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.path, str) or not self.path:
            raise InvalidInputError(f"path: expected a non-empty string, got {self.path!r}")
        if not isinstance(self.source, str) or not self.source:
            raise InvalidInputError(f"source: expected a non-empty string for '{self.path}', got {self.source!r}")
        if self.caption is not None and not isinstance(self.caption, str):
            raise InvalidInputError(f"caption: expected a string or None for '{self.path}', got {self.caption!r}")


@dataclass(frozen=True)
class Manifest:
    """An ordered collection of volumes; ``root`` is the folder relative paths were resolved from."""

    entries: tuple[ManifestEntry, ...]
    root: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "entries", tuple(self.entries))
        bad = [e for e in self.entries if not isinstance(e, ManifestEntry)]
        if bad:
            raise InvalidInputError(f"entries: expected ManifestEntry objects, got {type(bad[0]).__name__}")

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def sources(self) -> tuple[str, ...]:
        """Distinct source ids in order of first appearance."""
        return tuple(dict.fromkeys(e.source for e in self.entries))

    def subset(self, indices: Sequence[int]) -> Manifest:
        """A manifest with the entries at ``indices`` (same root)."""
        return Manifest(tuple(self.entries[i] for i in indices), self.root)


def volume_stem(path: str | os.PathLike[str]) -> str:
    """File name without its format suffix (``a.nii.gz -> a``, ``b.ome.zarr -> b``, ``c.tif -> c``)."""
    name = Path(path).name
    low = name.lower()
    for suffix in _SUFFIXES:
        if low.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return Path(name).stem or name


def _is_volume(path: Path) -> bool:
    if path.name.startswith(".") or path.name == CAPTIONS_FILE:
        return False
    low = path.name.lower()
    if path.is_dir():
        return low.endswith(".zarr")
    return any(low.endswith(s) for s in _SUFFIXES)


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FileFormatError(f"{what} '{path}': cannot be read as JSON ({exc})") from exc


def _load_captions(captions: str | os.PathLike[str] | Mapping[str, str]) -> dict[str, str]:
    if isinstance(captions, Mapping):
        data: Any = dict(captions)
        where = "captions"
    else:
        data = _read_json(Path(captions), "captions file")
        where = f"captions file '{captions}'"
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise InvalidInputError(f"{where}: expected a JSON object mapping file name -> caption string")
    return {k: v for k, v in data.items()}


def _resolve(root: Path, path: str) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else (root / p)


def _from_folder(
    folder: Path, captions: str | os.PathLike[str] | Mapping[str, str] | None, allow_missing: bool
) -> list[dict[str, Any]]:
    volumes = sorted(p for p in folder.iterdir() if _is_volume(p))
    if captions is None:
        cap_path = folder / CAPTIONS_FILE
        if cap_path.is_file():
            cap_map = _load_captions(cap_path)
        elif allow_missing:
            logger.warning("no %s in '%s': captions are None", CAPTIONS_FILE, folder)
            cap_map = {}
        else:
            raise InvalidInputError(
                f"captions: expected '{cap_path}' (file name -> caption) in the manifest folder, found none; "
                "pass captions=... or allow_missing_captions=True"
            )
    else:
        cap_map = _load_captions(captions)
    unknown = sorted(set(cap_map) - {p.name for p in volumes})
    if unknown:  # a typo or a moved file: its caption would silently train nothing
        raise InvalidInputError(
            f"captions: {len(unknown)} caption(s) name files that are not volumes in '{folder}': {unknown[:5]}"
        )
    return [{"path": str(p), "caption": cap_map.get(p.name)} for p in volumes]


def _from_csv(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FileFormatError(f"manifest '{path}': cannot be read as CSV ({exc})") from exc
    reader = csv.DictReader(io.StringIO(text))
    fields = reader.fieldnames or []
    if "path" not in fields:
        raise FileFormatError(f"manifest '{path}': expected a CSV header with columns {_COLUMNS}, got {fields}")
    unknown = [f for f in fields if f not in _COLUMNS]
    if unknown:
        raise FileFormatError(f"manifest '{path}': unknown columns {unknown}; expected some of {_COLUMNS}")
    return [{k: (v if v != "" else None) for k, v in row.items()} for row in reader]


def _from_json(path: Path) -> list[dict[str, Any]]:
    data = _read_json(path, "manifest")
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise FileFormatError(
            f"manifest '{path}': expected a JSON list of objects with keys {_COLUMNS}, got {type(data).__name__}"
        )
    for i, row in enumerate(data):
        unknown = [k for k in row if k not in _COLUMNS]
        if unknown or "path" not in row:
            raise FileFormatError(f"manifest '{path}': item {i}: expected keys {_COLUMNS} with path, got {list(row)}")
    return list(data)


def _build(
    rows: list[dict[str, Any]],
    root: Path,
    where: str,
    captions: str | os.PathLike[str] | Mapping[str, str] | None,
    allow_missing: bool,
    sources: Mapping[str, str] | None,
) -> Manifest:
    if not rows:
        raise InvalidInputError(f"manifest '{where}': expected at least one volume, found none")
    extra = _load_captions(captions) if captions is not None else {}
    entries: list[ManifestEntry] = []
    missing_files: list[str] = []
    missing_captions: list[str] = []
    for row in rows:
        if not isinstance(row.get("path"), str) or not row["path"]:
            raise FileFormatError(f"manifest '{where}': expected a non-empty 'path' in every row, got {row!r}")
        p = _resolve(root, row["path"])
        if not p.exists():
            missing_files.append(str(p))
            continue
        caption = row.get("caption") or extra.get(p.name)
        if caption is None:
            missing_captions.append(p.name)
        source = row.get("source") or (sources or {}).get(p.name) or volume_stem(p)
        entries.append(ManifestEntry(str(p.resolve()), caption, str(source), row.get("dataset") or None))
    if missing_files:
        raise FileFormatError(f"manifest '{where}': {len(missing_files)} volume(s) do not exist: {missing_files[:5]}")
    if missing_captions and not allow_missing:
        raise InvalidInputError(
            f"captions: expected a caption for every volume of '{where}', missing for {len(missing_captions)}: "
            f"{missing_captions[:10]}; pass allow_missing_captions=True to keep them with caption None"
        )
    return Manifest(tuple(entries), str(root.resolve()))


def load_manifest(
    path: str | os.PathLike[str],
    *,
    captions: str | os.PathLike[str] | Mapping[str, str] | None = None,
    allow_missing_captions: bool = False,
    sources: Mapping[str, str] | None = None,
) -> Manifest:
    """Load a manifest from a folder of volumes, a CSV file or a JSON list (see the module doc).

    Args:
        path: folder, ``.csv`` or ``.json`` file.
        captions: file name -> caption (a mapping or a JSON file); for a folder it replaces ``captions.json``, for a
            CSV/JSON manifest it fills captions the manifest leaves empty.
        allow_missing_captions: keep volumes without a caption (caption ``None``) instead of raising.
        sources: file name -> source id, for volumes whose source is not given (default: the file stem).

    Raises:
        FileFormatError: missing path or volumes, unreadable or malformed manifest.
        InvalidInputError: no volume, missing captions (naming the files), bad captions mapping.
    """
    given = Path(path).expanduser()
    if not given.exists():
        raise FileFormatError(f"manifest '{given}' does not exist")
    p = given.resolve()  # entries are absolute, whatever the working directory
    if p.is_dir() and not _is_volume(p):
        rows = _from_folder(p, captions, allow_missing_captions)
        return _build(rows, p, str(p), None, allow_missing_captions, sources)
    suffix = p.suffix.lower()
    if suffix == ".csv":
        rows = _from_csv(p)
    elif suffix == ".json":
        rows = _from_json(p)
    else:
        raise FileFormatError(f"manifest '{p}': expected a folder, a .csv or a .json file, got '{p.suffix or p.name}'")
    return _build(rows, p.parent, str(p), captions, allow_missing_captions, sources)


def load_corpus(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], *, allow_missing_captions: bool = False
) -> Manifest:
    """Several manifests (folders, CSV or JSON files; see :func:`load_manifest`) as one, in the order given.

    With ``allow_missing_captions`` a source may be a folder without ``captions.json``: its volumes (caption ``None``)
    feed the image terms of pretraining only, in the same batches as the captioned ones. A volume listed twice (the
    same resolved path and dataset) is refused, naming both manifests, and so is a source id that two manifests use
    (two folders holding ``vol1.tif`` would otherwise count as one source volume when splitting).

    Raises:
        InvalidInputError: no path given, a volume listed twice; and what :func:`load_manifest` raises.
    """
    items = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
    if not items:
        raise InvalidInputError("data.path: expected at least one folder or manifest, got none")
    entries: list[ManifestEntry] = []
    seen: dict[tuple[str, str | None], str] = {}
    source_of: dict[str, str] = {}  # source id -> the manifest that named it
    for item in items:
        manifest = load_manifest(item, allow_missing_captions=allow_missing_captions)
        for entry in manifest.entries:
            key = (entry.path, entry.dataset)
            if key in seen:
                raise InvalidInputError(
                    f"data.path: volume '{entry.path}' is listed by both '{seen[key]}' and '{item}'; "
                    "list each volume once"
                )
            if source_of.setdefault(entry.source, str(item)) != str(item):
                raise InvalidInputError(
                    f"data.path: source id '{entry.source}' occurs in both '{source_of[entry.source]}' and '{item}' "
                    "(files of the same name?); give the volumes distinct sources with a CSV/JSON manifest's "
                    "'source' column"
                )
            seen[key] = str(item)
            entries.append(entry)
    return Manifest(tuple(entries), str(Path(items[0]).expanduser().resolve()))


def _relative(path: str, folder: Path) -> str:
    try:
        return os.path.relpath(path, folder)
    except ValueError:  # another drive (Windows)
        return path


def save_manifest(manifest: Manifest, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Write ``manifest`` as CSV or JSON (by extension), paths relative to the file's folder, atomically.

    Raises:
        InvalidInputError: unknown extension or empty manifest.
        OutputExistsError: ``path`` exists and ``overwrite`` is False.
    """
    out = Path(path)
    suffix = out.suffix.lower()
    if suffix not in (".csv", ".json"):
        raise InvalidInputError(f"path: expected a .csv or .json file name, got '{out.name}'")
    if not manifest.entries:
        raise InvalidInputError("manifest: expected at least one entry to save, got an empty manifest")
    folder = out.parent.resolve()
    rows = [
        {"path": _relative(e.path, folder), "caption": e.caption, "source": e.source, "dataset": e.dataset}
        for e in manifest.entries
    ]
    with atomic_output(out, overwrite=overwrite) as tmp:
        if suffix == ".json":
            tmp.write_text(json.dumps(rows, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        else:
            with tmp.open("w", encoding="utf-8", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=list(_COLUMNS))
                writer.writeheader()
                writer.writerows([{k: ("" if v is None else v) for k, v in r.items()} for r in rows])
    logger.info("wrote manifest of %d volumes to '%s'", len(rows), out)
    return out
