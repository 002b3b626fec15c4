"""An on-disk (zarr) cache of slice embeddings, keyed by a signature that refuses a stale cache.

Encoding a slice is the expensive step of every backend (SAM vit_b: ~16 s per slice on a CPU), so a stack is encoded
once and reused across sessions and commands. The cache folder is a zarr group:

* its attributes hold the format version and the **signature**: the backend's :func:`backend_signature` (name, class
  and :meth:`~fmscope.interactive.protocol.PromptableModel.signature`: model, weights file size and time, settings)
  and the intensity window. Opening a cache whose signature differs from the current one raises
  :class:`~fmscope.errors.FileFormatError` naming the differing keys (delete the folder or use another one): an
  embedding of another model, checkpoint or window would give silently wrong masks;
* one sub-group per slice (``z00012``) holds the embedding's fields: numpy arrays and torch tensors as arrays, other
  fields (sizes, scales, dicts) as JSON attributes, plus the SHA-256 of the raw slice it was computed from, checked on
  every read (the same folder used with another volume is refused).

Embeddings are dataclasses defined in :mod:`fmscope.interactive` (rf/fm ``SliceEmbedding``, ``SamEmbedding``,
``Sam2Embedding``); any other type is refused rather than pickled.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from fmscope.errors import FileFormatError, InvalidInputError
from fmscope.intensity import IntensityProfile
from fmscope.interactive.protocol import PromptableModel

logger = logging.getLogger(__name__)

FORMAT = "fmscope-embedding-cache"
VERSION = 1
_MODULE_PREFIX = "fmscope.interactive."


def backend_signature(backend: PromptableModel) -> dict[str, Any]:
    """What an embedding depends on: the backend's name and class and its own :meth:`PromptableModel.signature`
    (model name, weights file or model folder, embedding settings)."""
    sig: dict[str, Any] = {"backend": backend.name, "class": type(backend).__qualname__}
    sig.update(backend.signature())
    return sig


def image_hash(image: np.ndarray) -> str:
    """SHA-256 of an array's shape, dtype and bytes (slice by slice, no full copy)."""
    arr = np.asarray(image)
    h = hashlib.sha256(f"{arr.shape}|{arr.dtype.str}|".encode())
    for plane in arr.reshape((-1, *arr.shape[-2:])):
        h.update(np.ascontiguousarray(plane).tobytes())
    return h.hexdigest()


FULL_HASH_BYTES = 256 * 2**20
SAMPLED_SLICES = 16


def image_fingerprint(image: Any) -> str:
    """An identity of an image for a session: the SHA-256 of all its bytes (:func:`image_hash`) up to
    :data:`FULL_HASH_BYTES`; for a larger (lazily read) stack, of its shape, dtype and :data:`SAMPLED_SLICES` evenly
    spaced slices, prefixed ``sampled:`` (reading a terabyte stack whole to reopen a session is not an option)."""
    shape, dtype = tuple(int(s) for s in np.shape(image)), np.dtype(image.dtype)
    if int(np.prod(shape)) * dtype.itemsize <= FULL_HASH_BYTES or len(shape) != 3:
        return image_hash(np.asarray(image))
    h = hashlib.sha256(f"{shape}|{dtype.str}|sampled{SAMPLED_SLICES}|".encode())
    for z in np.unique(np.linspace(0, shape[0] - 1, SAMPLED_SLICES).round().astype(int)):
        h.update(np.ascontiguousarray(np.asarray(image[int(z)])).tobytes())
    return "sampled:" + h.hexdigest()


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            out += _differences(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [prefix.rstrip(".")]


class EmbeddingCache:
    """Slice embeddings of one backend and intensity window, on disk (see the module doc)."""

    def __init__(
        self, folder: str | os.PathLike[str], backend: PromptableModel, profile: IntensityProfile | None = None
    ) -> None:
        import zarr

        self.folder = Path(folder)
        self.signature = json.loads(
            json.dumps({"model": backend_signature(backend), "profile": profile.to_dict() if profile else None})
        )
        if self.folder.exists() and any(self.folder.iterdir()):
            try:
                group = zarr.open_group(str(self.folder), mode="r+")
            except Exception as exc:  # zarr raises several types for a folder that is not a group
                raise FileFormatError(f"cache: '{self.folder}' is not an embedding cache ({exc})") from None
            attrs = dict(group.attrs)
            if attrs.get("format") != FORMAT:
                raise FileFormatError(f"cache: '{self.folder}' is not an embedding cache (no '{FORMAT}' marker)")
            changed = _differences(attrs.get("signature"), self.signature)
            if changed:
                raise FileFormatError(
                    f"cache: '{self.folder}' holds embeddings of another model or window (differs in: "
                    f"{', '.join(changed[:6])}); delete it or choose another folder"
                )
        else:
            group = zarr.open_group(str(self.folder), mode="w")
            group.attrs.update({"format": FORMAT, "version": VERSION, "signature": self.signature})
        self._group = group

    def _key(self, z: int) -> str:
        return f"z{z:05d}"

    def __contains__(self, z: int) -> bool:
        return self._key(z) in self._group

    def get(self, z: int, image: np.ndarray) -> Any | None:
        """The cached embedding of slice ``z`` (checked against the raw ``image`` slice), or None."""
        key = self._key(z)
        if key not in self._group:
            return None
        node: Any = self._group[key]
        attrs = dict(node.attrs)
        if attrs.get("slice_sha256") != image_hash(image):
            raise FileFormatError(
                f"cache: slice {z} in '{self.folder}' was computed from other data; delete the cache or choose "
                "another folder"
            )
        module, _, name = attrs["type"].rpartition(".")
        if not module.startswith(_MODULE_PREFIX):
            raise FileFormatError(f"cache: slice {z} holds an unsupported type {attrs['type']!r}")
        cls = getattr(importlib.import_module(module), name)
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            kind = attrs["kinds"][field.name]
            if kind == "none":
                values[field.name] = None
            elif kind in ("numpy", "torch"):
                arr = np.asarray(node[field.name][...])
                if kind == "torch":
                    import torch

                    values[field.name] = torch.from_numpy(arr)
                else:
                    values[field.name] = arr
            else:
                value = attrs["values"][field.name]
                values[field.name] = tuple(value) if kind == "tuple" else value
        return cls(**values)

    def put(self, z: int, image: np.ndarray, embedding: Any) -> None:
        """Store the embedding of slice ``z`` computed from the raw ``image`` slice."""
        cls = type(embedding)
        if not dataclasses.is_dataclass(embedding) or not cls.__module__.startswith(_MODULE_PREFIX):
            raise InvalidInputError(f"embedding: the cache stores fmscope embedding dataclasses, got {cls.__name__}")
        key = self._key(z)
        if key in self._group:
            del self._group[key]
        node = self._group.create_group(key)
        kinds: dict[str, str] = {}
        values: dict[str, Any] = {}
        for field in dataclasses.fields(embedding):
            value = getattr(embedding, field.name)
            if value is None:
                kinds[field.name] = "none"
            elif isinstance(value, np.ndarray) or type(value).__module__.startswith("torch"):
                kinds[field.name] = "numpy" if isinstance(value, np.ndarray) else "torch"
                arr = np.asarray(value if isinstance(value, np.ndarray) else value.detach().cpu().numpy())
                node.create_array(field.name, data=arr, chunks=tuple(int(n) for n in arr.shape) if arr.ndim else "auto")
            else:
                kinds[field.name] = "tuple" if isinstance(value, tuple) else "json"
                values[field.name] = value
        node.attrs.update(
            {
                "type": f"{cls.__module__}.{cls.__qualname__}",
                "kinds": kinds,
                "values": json.loads(json.dumps(values)),
                "slice_sha256": image_hash(image),
            }
        )

    def __len__(self) -> int:
        return sum(1 for _ in self._group.group_keys())
