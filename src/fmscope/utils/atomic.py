"""Outputs are never lost: write to a temporary name beside the target, then rename.

``atomic_output`` works for single files and for directory-like outputs (OME-Zarr stores). On any exception the
temporary is removed, so a failed write leaves nothing behind and an existing output is untouched.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from fmscope.errors import InvalidInputError, OutputExistsError


def check_output_path(path: str | os.PathLike[str], overwrite: bool) -> Path:
    """Validate an output path: refuse an existing one unless ``overwrite``; the parent folder must exist."""
    out = Path(path)
    if out.exists() and not overwrite:
        raise OutputExistsError(f"output '{out}' exists; pass overwrite=True (CLI: --overwrite) to replace it")
    if not out.parent.exists():
        raise InvalidInputError(f"output '{out}': parent folder '{out.parent}' does not exist")
    return out


def remove_path(path: Path) -> None:
    """Remove a file, a link or a folder (a Zarr store) if it is there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str], overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on failure it is removed.

    The temporary keeps the target's suffixes (``.ome.zarr``, ``.nii.gz``) so that format libraries that look at
    the extension behave the same.
    """
    out = check_output_path(path, overwrite)
    suffix = "".join(out.suffixes)
    stem = out.name[: len(out.name) - len(suffix)] if suffix else out.name
    tmp = out.with_name(f".{stem}.tmp-{uuid.uuid4().hex[:8]}{suffix}")
    try:
        yield tmp
        if not tmp.exists():
            raise RuntimeError(f"atomic_output: nothing was written to the temporary '{tmp}'")
        if out.exists():
            # Move the old output aside first so a directory can be replaced; restore it if the rename fails.
            backup = out.with_name(f".{stem}.old-{uuid.uuid4().hex[:8]}{suffix}")
            os.replace(out, backup)
            try:
                os.replace(tmp, out)
            except BaseException:
                os.replace(backup, out)
                raise
            remove_path(backup)
        else:
            os.replace(tmp, out)
    finally:
        remove_path(tmp)
