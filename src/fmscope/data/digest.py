"""Content digests of volumes: the same voxels give the same digest whatever the file format, name or folder.

Used to record what a pretraining corpus held (``corpus.json`` beside a pretrained model) and by the benchmark to
refuse a corpus that contains one of its test units (a reported gain must not come from pretraining on the test set).
The digest is SHA-256 over the dtype, the shape without singleton axes, and the C-order bytes; lazy arrays (zarr, dask,
HDF5) are streamed slab by slab along their first axis, so a volume larger than memory is hashed in bounded memory.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from fmscope.data.manifest import Manifest
from fmscope.data.patches import to_numpy
from fmscope.io import read_image

SLAB_BYTES = 64 * 2**20  # bytes read per slab while hashing a lazy array


def array_digest(data: Any) -> str:
    """SHA-256 hex digest of an array-like's dtype, squeezed shape and voxels (see the module doc)."""
    while len(data.shape) > 1 and int(data.shape[0]) == 1:  # leading singleton axes (OME-Zarr T, C): slab the rest
        data = data[0]
    shape = tuple(int(s) for s in data.shape)
    squeezed = tuple(s for s in shape if s != 1)
    dtype = np.dtype(data.dtype).newbyteorder("<")  # a big-endian copy of the same voxels has the same digest
    h = hashlib.sha256(f"{dtype.str}|{squeezed}|".encode())
    if isinstance(data, np.ndarray) or not shape:
        h.update(np.ascontiguousarray(np.asarray(data), dtype=dtype).tobytes())
        return h.hexdigest()
    per_row = max(1, math.prod(shape[1:]) * dtype.itemsize)
    step = max(1, SLAB_BYTES // per_row)
    for start in range(0, shape[0], step):
        h.update(np.ascontiguousarray(to_numpy(data[start : start + step]), dtype=dtype).tobytes())
    return h.hexdigest()


def file_digest(path: str | os.PathLike[str], dataset: str | None = None) -> str:
    """:func:`array_digest` of an image file's voxels (any format fmscope reads; lazily where the format allows)."""
    return array_digest(read_image(path, dataset=dataset).data)


@dataclass(frozen=True)
class CorpusEntry:
    """What a pretraining corpus held: one volume, its source id, whether it had a caption, and its digest."""

    path: str
    source: str
    captioned: bool
    shape: tuple[int, ...]
    dtype: str
    digest: str


def corpus_record(manifest: Manifest) -> list[dict[str, Any]]:
    """One :class:`CorpusEntry` (as a dict) per manifest entry, for ``corpus.json``."""
    out = []
    for entry in manifest.entries:
        data = read_image(entry.path, dataset=entry.dataset).data
        out.append(
            asdict(
                CorpusEntry(
                    entry.path,
                    entry.source,
                    entry.caption is not None,
                    tuple(int(s) for s in data.shape),
                    np.dtype(data.dtype).str,
                    array_digest(data),
                )
            )
        )
    return out


def overlaps(corpus: Sequence[dict[str, Any]], digests: dict[str, str]) -> list[tuple[str, str]]:
    """``(corpus path, what it equals)`` for every corpus entry whose digest is among ``digests`` (digest -> name)."""
    return [(str(e["path"]), digests[str(e["digest"])]) for e in corpus if str(e.get("digest")) in digests]
