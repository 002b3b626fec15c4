"""An on-disk (zarr) cache of slice embeddings, keyed by a signature that refuses a stale cache, bounded in size.

Encoding a slice is the expensive step of every backend (SAM vit_b: ~16 s per slice on a CPU), so a stack is encoded
once and reused across sessions and commands. The cache folder is a zarr group:

* its attributes hold the format version and the **signature**: the backend's :func:`backend_signature` (name, class
  and :meth:`~fmscope.interactive.protocol.PromptableModel.signature`: model, weights file size and time, settings)
  and the intensity window. Opening a cache whose signature differs from the current one raises
  :class:`~fmscope.errors.FileFormatError` naming the differing keys (delete the folder or use another one): an
  embedding of another model, checkpoint or window would give silently wrong masks. A cache of an older format
  version (1: float32, unbounded) is rebuilt (emptied) with a warning; one of a newer version is refused;
* one sub-group per slice (``z00012``) holds the embedding's fields: numpy arrays and torch tensors as arrays, other
  fields (sizes, scales, dicts) as JSON attributes, plus the SHA-256 of the raw slice it was computed from, checked on
  every read (the same folder used with another volume is refused).

**Compact storage.** Floating arrays are stored as float16 (``float16=True``, the default; an array whose values do
not fit float16's range stays as it is) and read back in their own dtype; every array is compressed with Blosc/zstd
(bit-shuffled floats, byte-shuffled integers). :meth:`EmbeddingCache.put` returns the embedding as it will be read
back, so a slice gives the same masks whether it was just computed or read from the cache. A backend may also name
fields it recomputes more cheaply than the disk holds them (:class:`RecomputesFields`: the rf backend's filter bank is
~95% of its embedding's bytes and ~20% of its time); those are not stored but recomputed from the slice on read.

**Bounded size.** The folder holds at most ``max_bytes`` (default :data:`DEFAULT_MAX_BYTES`, 2 GiB; 0 or None:
unbounded): writing a slice past the bound evicts whole slices, least recently used first (use is the slice's
``zarr.json`` time, touched on every read, so the order carries over to the next run); a slice larger than the bound
is not stored. The bound counts the bytes this process knows of (the slices there when it opened the cache and those
it wrote).

Embeddings are dataclasses defined in :mod:`fmscope.interactive` (rf/fm ``SliceEmbedding``, ``SamEmbedding``,
``Sam2Embedding``); any other type is refused rather than pickled.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib
import json
import logging
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from fmscope.errors import FileFormatError, InvalidInputError
from fmscope.intensity import IntensityProfile
from fmscope.interactive.protocol import PromptableModel

logger = logging.getLogger(__name__)

FORMAT = "fmscope-embedding-cache"
VERSION = 2  # 1: float32 arrays, unbounded; 2: float16 + Blosc/zstd, bounded with LRU eviction, recomputed fields
DEFAULT_MAX_BYTES = 2 * 2**30
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


@runtime_checkable
class RecomputesFields(Protocol):
    """A backend that recomputes some fields of its embeddings from the slice rather than reading them from a cache
    (fields large on disk and cheap to compute)."""

    def recomputed_fields(self, embedding: Any) -> tuple[str, ...]:
        """The fields of ``embedding`` not to store (empty for an embedding it does not recompute)."""
        ...

    def complete_embedding(self, image: np.ndarray, profile: IntensityProfile | None, embedding: Any) -> Any:
        """``embedding`` (as read, those fields None) with its recomputed fields filled in from the raw ``image``."""
        ...


def _bytes(path: str | os.PathLike[str]) -> int:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return 0
    return max(st.st_size, getattr(st, "st_blocks", 0) * 512)


def _tree_bytes(path: Path, *, recursive: bool = True) -> int:
    """Disk use of a folder and what it holds, as ``du`` counts it (allocated blocks, at least the size); with
    ``recursive=False`` of the folder and its files only (a group's own metadata)."""
    total = _bytes(path)
    for root, dirs, files in os.walk(path):
        total += sum(_bytes(os.path.join(root, name)) for name in ([*files, *dirs] if recursive else files))
        if not recursive:
            break
    return total


def _codec(dtype: np.dtype[Any]) -> Any:
    from zarr.codecs import BloscCodec

    shuffle: Literal["bitshuffle", "shuffle"] = "bitshuffle" if dtype.kind == "f" else "shuffle"
    return BloscCodec(cname="zstd", clevel=3, shuffle=shuffle)


class EmbeddingCache:
    """Slice embeddings of one backend and intensity window, on disk, compact and bounded (see the module doc)."""

    def __init__(
        self,
        folder: str | os.PathLike[str],
        backend: PromptableModel,
        profile: IntensityProfile | None = None,
        *,
        max_bytes: int | None = DEFAULT_MAX_BYTES,
        float16: bool = True,
    ) -> None:
        import zarr

        if max_bytes is not None and (isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0):
            raise InvalidInputError(f"max_bytes: expected None or an integer >= 0 (0: unbounded), got {max_bytes!r}")
        self.folder = Path(folder)
        self.backend, self.profile = backend, profile
        self.max_bytes = max_bytes or None
        self.float16 = bool(float16)
        self.signature = json.loads(
            json.dumps({"model": backend_signature(backend), "profile": profile.to_dict() if profile else None})
        )
        self._lock = threading.RLock()
        group = self._open(zarr) if self.folder.exists() and any(self.folder.iterdir()) else None
        if group is None:
            group = zarr.open_group(str(self.folder), mode="w")
            group.attrs.update({"format": FORMAT, "version": VERSION, "signature": self.signature})
        self._group = group
        self._used = self._scan()  # slice key -> bytes on disk, least recently used first
        with self._lock:
            self._evict()

    def _open(self, zarr: Any) -> Any | None:
        """The existing cache group (None: an older version, to be rebuilt); refuses a foreign or stale one."""
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
        version = attrs.get("version")
        if not isinstance(version, int) or version > VERSION:
            raise FileFormatError(
                f"cache: '{self.folder}' has format version {version!r}, newer than this fmscope reads ({VERSION}); "
                "upgrade fmscope, delete the folder or choose another one"
            )
        if version < VERSION:
            logger.warning(
                "cache: '%s' has the old format version %d (this fmscope writes %d): rebuilding it (its slices are "
                "recomputed as they are needed)",
                self.folder,
                version,
                VERSION,
            )
            return None
        return group

    def _scan(self) -> OrderedDict[str, int]:
        def used(key: str) -> float:
            try:
                return (self.folder / key / "zarr.json").stat().st_mtime
            except FileNotFoundError:
                return 0.0

        keys = sorted(self._group.group_keys(), key=lambda k: (used(k), k))
        return OrderedDict((k, _tree_bytes(self.folder / k)) for k in keys)

    @property
    def nbytes(self) -> int:
        """Disk use of the slices this cache knows of (see the module doc)."""
        return sum(self._used.values())

    def _evict(self, keep: str | None = None) -> None:
        """Delete least recently used slices (never ``keep``) until the folder fits ``max_bytes``."""
        if self.max_bytes is None:
            return
        budget = self.max_bytes - _tree_bytes(self.folder, recursive=False)  # less the group's own metadata
        while self._used and self.nbytes > budget:
            older = [k for k in self._used if k != keep]
            if not older:  # only the slice just written is left, and it alone is too large
                size, limit = self.nbytes, self.max_bytes
                logger.warning("cache: slice %s needs %d bytes, over max_bytes=%d; not cached", keep, size, limit)
                self._delete(next(iter(self._used)))
                return
            self._delete(older[0])

    def _delete(self, key: str) -> None:
        self._used.pop(key, None)
        if key in self._group:
            del self._group[key]

    def _key(self, z: int) -> str:
        return f"z{z:05d}"

    def __contains__(self, z: int) -> bool:
        return self._key(z) in self._group

    def get(self, z: int, image: np.ndarray) -> Any | None:
        """The cached embedding of slice ``z`` (checked against the raw ``image`` slice), or None."""
        key = self._key(z)
        with self._lock:
            if key not in self._group:
                self._used.pop(key, None)
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
            recomputed = False
            for field in dataclasses.fields(cls):
                kind = attrs["kinds"][field.name]
                if kind in ("none", "recomputed"):
                    values[field.name] = None
                    recomputed |= kind == "recomputed"
                elif kind in _ARRAY_KINDS:
                    values[field.name] = self._read_arrays(node, field.name, kind, attrs)
                else:
                    value = attrs["values"][field.name]
                    values[field.name] = tuple(value) if kind == "tuple" else value
            self._touch(key)
        embedding = cls(**values)
        if not recomputed:
            return embedding
        if not isinstance(self.backend, RecomputesFields):
            logger.info("cache: slice %d lacks fields this backend does not recompute; embedding it again", z)
            return None
        return self.backend.complete_embedding(image, self.profile, embedding)

    def _touch(self, key: str) -> None:
        """Mark a slice as just used (in memory and, for the next run, on disk)."""
        if key not in self._used:
            self._used[key] = _tree_bytes(self.folder / key)
        self._used.move_to_end(key)
        with contextlib.suppress(OSError):  # a read-only cache is still readable, in the order it had
            os.utime(self.folder / key / "zarr.json")

    def _compact(self, arr: np.ndarray) -> np.ndarray:
        """The array as stored: float16 where it holds floats within float16's range (see the module doc)."""
        if not self.float16 or arr.dtype.kind != "f" or arr.dtype.itemsize <= 2:
            return arr
        with np.errstate(over="ignore"):
            half = arr.astype(np.float16)
        return half if np.array_equal(np.isfinite(half), np.isfinite(arr)) else arr

    def put(self, z: int, image: np.ndarray, embedding: Any) -> Any:
        """Store the embedding of slice ``z`` computed from the raw ``image`` slice; return it as it will be read
        back (floats rounded to float16 where stored so), for the caller to use in its place."""
        cls = type(embedding)
        if not dataclasses.is_dataclass(embedding) or not cls.__module__.startswith(_MODULE_PREFIX):
            raise InvalidInputError(f"embedding: the cache stores fmscope embedding dataclasses, got {cls.__name__}")
        skip = set(self.backend.recomputed_fields(embedding)) if isinstance(self.backend, RecomputesFields) else set()
        key = self._key(z)
        with self._lock:
            self._delete(key)
            try:
                readback = self._write(key, embedding, skip, image_hash(image))
            except BaseException:
                self._delete(key)  # no half-written slice left behind
                raise
            self._used[key] = _tree_bytes(self.folder / key)
            self._evict(keep=key)
        instance: Any = embedding
        return dataclasses.replace(instance, **readback) if readback else embedding

    def _write(self, key: str, embedding: Any, skip: set[str], sha256: str) -> dict[str, Any]:
        """Write one slice's sub-group; returns the fields whose values read back differently (float16)."""
        cls = type(embedding)
        kinds: dict[str, str] = {}
        values: dict[str, Any] = {}
        dtypes: dict[str, str] = {}
        readback: dict[str, Any] = {}
        node = self._group.create_group(key)
        for field in dataclasses.fields(embedding):
            value = getattr(embedding, field.name)
            if value is None:
                kinds[field.name] = "none"
            elif field.name in skip:
                kinds[field.name] = "recomputed"
            elif _is_array(value) or (isinstance(value, tuple) and value and all(map(_is_array, value))):
                kinds[field.name], back = self._write_arrays(node, field.name, value, dtypes)
                if back is not None:
                    readback[field.name] = back
            else:
                kinds[field.name] = "tuple" if isinstance(value, tuple) else "json"
                values[field.name] = value
        node.attrs.update(
            {
                "type": f"{cls.__module__}.{cls.__qualname__}",
                "kinds": kinds,
                "dtypes": dtypes,
                "values": json.loads(json.dumps(values)),
                "slice_sha256": sha256,
            }
        )
        return readback

    def _write_arrays(self, node: Any, name: str, value: Any, dtypes: dict[str, str]) -> tuple[str, Any | None]:
        """Store an array field (an array or tensor, or a tuple of them as ``name.0``, ``name.1``, ...); returns its
        kind and its value as read back (None: the same)."""
        items = value if isinstance(value, tuple) else (value,)
        torch_kind = not isinstance(items[0], np.ndarray)
        names = [f"{name}.{i}" for i in range(len(items))] if isinstance(value, tuple) else [name]
        back: list[Any] = []
        for array_name, item in zip(names, items, strict=True):
            arr = np.asarray(item if isinstance(item, np.ndarray) else item.detach().cpu().numpy())
            stored = self._compact(arr)
            chunks: tuple[int, ...] | Literal["auto"] = tuple(int(n) for n in stored.shape) or "auto"
            node.create_array(array_name, data=stored, chunks=chunks, compressors=_codec(stored.dtype))
            if stored.dtype != arr.dtype:
                dtypes[array_name] = arr.dtype.str
                rounded = stored.astype(arr.dtype)
                back.append(rounded if isinstance(item, np.ndarray) else _like(item, rounded))
            else:
                back.append(item)
        kind = ("torch" if torch_kind else "numpy") + ("_tuple" if isinstance(value, tuple) else "")
        changed = any(b is not i for b, i in zip(back, items, strict=True))
        return kind, (tuple(back) if isinstance(value, tuple) else back[0]) if changed else None

    def _read_arrays(self, node: Any, name: str, kind: str, attrs: dict[str, Any]) -> Any:
        """An array field as :meth:`_write_arrays` stored it, in its own dtype."""
        names = [name]
        if kind.endswith("_tuple"):
            parts = [k for k in node.array_keys() if k.rpartition(".")[0] == name]
            names = sorted(parts, key=lambda k: int(k.rpartition(".")[2]))
        out: list[Any] = []
        for array_name in names:
            arr = np.asarray(node[array_name][...])
            dtype = attrs.get("dtypes", {}).get(array_name)
            arr = arr.astype(dtype) if dtype is not None else arr
            if kind.startswith("torch"):
                import torch

                out.append(torch.from_numpy(arr))
            else:
                out.append(arr)
        return tuple(out) if kind.endswith("_tuple") else out[0]

    def __len__(self) -> int:
        return sum(1 for _ in self._group.group_keys())


_ARRAY_KINDS = ("numpy", "torch", "numpy_tuple", "torch_tuple")


def _is_array(value: Any) -> bool:
    """A numpy array or a torch tensor."""
    return isinstance(value, np.ndarray) or type(value).__module__.startswith("torch")


def _like(tensor: Any, arr: np.ndarray) -> Any:
    """``arr`` as a tensor on ``tensor``'s device."""
    import torch

    return torch.from_numpy(arr).to(tensor.device)
