"""Paths from the page, kept inside their root: no ``..``, no absolute path, no link that leads out, in any spelling.

A page sends paths relative to the data root (or to the browser's uploads folder). :func:`inside` is the only way
the server turns one into a file: it refuses absolute paths, drive letters, ``..`` parts, NUL and backslashes before
touching the disk, then resolves symbolic links and checks that the result is still under the root. The framework
decodes the URL once; a path that still looks encoded (``%2e%2e``) is a file name like any other, which the checks
above cover in its decoded spelling too.
"""

from __future__ import annotations

import os
import urllib.parse
from pathlib import Path, PurePosixPath

from fmscope.errors import FmscopeError


class PathRefused(FmscopeError, PermissionError):
    """A path outside the allowed root (or malformed): the message names it without revealing the root."""


def _parts(relative: str) -> list[str]:
    if not isinstance(relative, str) or "\x00" in relative or "\\" in relative:
        raise PathRefused(f"path: {relative!r} is not a plain relative path")
    decoded = urllib.parse.unquote(relative)
    for spelling in (relative, decoded):
        pure = PurePosixPath(spelling)
        if pure.is_absolute() or (len(spelling) > 1 and spelling[1] == ":") or ".." in pure.parts:
            raise PathRefused(f"path: {relative!r} leaves the data folder")
    return [p for p in PurePosixPath(relative).parts if p not in ("", ".")]


def is_under(base: Path, path: Path) -> bool:
    """Whether resolved ``path`` is resolved ``base`` itself or lies below it."""
    return path == base or base in path.parents


def inside(root: Path, relative: str, *, must_exist: bool = True) -> Path:
    """``root / relative`` after the checks of the module doc; a symbolic link is followed only when its target is
    under ``root`` too."""
    base = root.resolve()
    target = base.joinpath(*_parts(relative))
    resolved = Path(os.path.realpath(target))
    if not is_under(base, resolved):
        raise PathRefused(f"path: {relative!r} leads outside the data folder")
    if must_exist and not resolved.exists():
        raise PathRefused(f"path: {relative!r} does not exist")
    return resolved


def relative_to(root: Path, path: Path) -> str:
    """``path`` as the page names it: relative to ``root``, with ``/``."""
    return PurePosixPath(Path(os.path.realpath(path)).relative_to(root.resolve())).as_posix()
