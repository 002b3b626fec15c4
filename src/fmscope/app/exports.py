"""What a user takes away from a session, written into its ``exports`` folder by the library's own writers.

Names carry the image's name, what the file is and a time stamp, so exports never overwrite each other. Labels are
written as ``NAME_label.tif`` / ``NAME_label.ome.zarr`` (the layout ``fmscope finetune`` reads), with the image's
spacing and unit; each export gets its run record (``.fmscope.json``: what session, image, backend and revision).
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

from fmscope.app.workspace import AppSession
from fmscope.data.manifest import volume_stem
from fmscope.errors import InvalidInputError
from fmscope.interactive.session_files import export_prompts
from fmscope.utils.provenance import RunRecord, write_run_record

LABEL_FORMATS = {"tif": ".tif", "ome.zarr": ".ome.zarr"}


def _stem(opened: AppSession) -> str:
    """The image's name without its format suffix, for file names, with a time stamp and a short random tag (two
    exports in the same second never collide)."""
    name = volume_stem(str(opened.settings.get("image", {}).get("path", "image")))
    tag = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"
    safe = re.sub(r"[^\w.-]+", "_", name)[:80] or "image"
    return f"{safe}-{tag}"


def _flag(data: dict[str, Any], key: str, default: bool) -> bool:
    value = data.get(key, default)
    if not isinstance(value, bool):
        raise InvalidInputError(f"{key}: expected true or false, got {value!r}")
    return value


def write_export(opened: AppSession, what: str, data: dict[str, Any]) -> str:
    """Write one export (see :mod:`fmscope.app.routes_sessions` ``export``) and its run record; returns the file
    name inside the exports folder."""
    s = opened.session
    stem = _stem(opened)
    meta = opened.image.image.meta
    folder = opened.exports
    spacing = tuple(meta.spacing) if meta.unit is not None else None
    params: dict[str, Any] = {"session": opened.id, "revision": s.revision, "what": what}
    if what == "labels":
        fmt = data.get("format", "tif")
        if fmt not in LABEL_FORMATS:
            raise InvalidInputError(f"format: expected one of {', '.join(LABEL_FORMATS)}, got {fmt!r}")
        accepted_only, binary = _flag(data, "accepted_only", False), _flag(data, "binary", False)
        path = folder / f"{stem}_label{LABEL_FORMATS[fmt]}"
        s.export_labels(path, accepted_only=accepted_only, binary=binary, spacing=spacing, unit=meta.unit)
        params.update({"format": fmt, "accepted_only": accepted_only, "binary": binary})
    elif what == "morphometry":
        path = folder / f"{stem}_morphometry.csv"
        s.morphometry(path, spacing=spacing, accepted_only=_flag(data, "accepted_only", False))
    elif what == "prompts":
        path = folder / f"{stem}_prompts.json"
        export_prompts(s, path)
    else:
        path = folder / f"{stem}_session"
        record = RunRecord("app", {**params, "settings": opened.settings, "mode": s.mode,
                                   "objects": list(s.object_ids), "history": s.history()[0],
                                   "window": s.profile.to_dict()}, inputs=(opened.image.source,))  # fmt: skip
        return write_run_record(path, record).name
    record = RunRecord("app", {**params, "settings": opened.settings}, inputs=(opened.image.source,))
    write_run_record(path, record)
    return path.name
