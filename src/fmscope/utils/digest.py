"""SHA-256 of files on disk, read in chunks: one file, or a set of files under a folder with their names."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path


def file_sha256(path: str | os.PathLike[str], chunk_size: int = 1 << 22) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def files_sha256(root: str | os.PathLike[str], names: Iterable[str], chunk_size: int = 1 << 22) -> str:
    """Hex SHA-256 over ``names`` (paths relative to ``root``, in the given order): each name, a NUL byte, then the
    file's bytes, so that a renamed or moved file changes the digest too."""
    digest = hashlib.sha256()
    for name in names:
        digest.update(name.encode() + b"\0")
        with open(Path(root) / name, "rb") as f:
            while chunk := f.read(chunk_size):
                digest.update(chunk)
    return digest.hexdigest()
