"""Known Segment Anything checkpoints (SAM v1, SAM 2.1), where to find them locally, and safe loading.

fmscope never downloads weights. A user fetches the official file by hand (the URL is in the registry and in
``fmscope models``) and either passes its path or puts it, under its official file name, in the cache folder
(:func:`cache_dir`: ``$FMSCOPE_CACHE``, default ``~/.cache/fmscope``).

Loading is strict and explains itself: a missing file names the file, the URL and the folder; a truncated download is
refused by its size (:func:`verify_checkpoint`, the SHA-256 only on request: hashing 2.5 GB takes a while); a file
that ``torch.load`` cannot read, or whose tensors do not fit the requested architecture (a vit_b file given as vit_l,
a SAM2 file given to SAM), raises :class:`~fmscope.errors.FileFormatError` naming the file and what it looks like.

Sizes and SHA-256 values: Meta publishes no checksums. The values below are those of the files served at the official
URLs as recorded independently by several public projects (micro-sam's model registry for the SAM v1 hashes, and
download manifests of other projects for the rest); every value was found in at least two independent sources.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from fmscope.errors import FileFormatError, FmscopeError, InvalidInputError
from fmscope.utils.digest import file_sha256

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

Family = Literal["sam", "sam2"]

_SAM_URL = "https://dl.fbaipublicfiles.com/segment_anything/"
_SAM2_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/092824/"


@dataclass(frozen=True)
class KnownCheckpoint:
    """One official checkpoint.

    Attributes:
        name: the model name fmscope uses (``vit_b``, ``sam2.1_hiera_tiny``...).
        family: ``sam`` (segment-anything) or ``sam2``.
        architecture: the ``sam_model_registry`` key (SAM) or the package-relative Hydra config (SAM2).
        file_name: the official file name (looked up in the cache folder).
        size: file size in bytes (None: unknown).
        sha256: hex digest (None: unknown).
        url: the official download URL, for the user to fetch by hand.
    """

    name: str
    family: Family
    architecture: str
    file_name: str
    size: int | None
    sha256: str | None
    url: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping of the fields."""
        return asdict(self)


KNOWN_CHECKPOINTS: dict[str, KnownCheckpoint] = {
    c.name: c
    for c in (
        KnownCheckpoint(
            "vit_b", "sam", "vit_b", "sam_vit_b_01ec64.pth", 375042383,
            "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912", _SAM_URL + "sam_vit_b_01ec64.pth",
        ),
        KnownCheckpoint(
            "vit_l", "sam", "vit_l", "sam_vit_l_0b3195.pth", 1249524607,
            "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622", _SAM_URL + "sam_vit_l_0b3195.pth",
        ),
        KnownCheckpoint(
            "vit_h", "sam", "vit_h", "sam_vit_h_4b8939.pth", 2564550879,
            "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e", _SAM_URL + "sam_vit_h_4b8939.pth",
        ),
        KnownCheckpoint(
            "sam2.1_hiera_tiny", "sam2", "configs/sam2.1/sam2.1_hiera_t.yaml", "sam2.1_hiera_tiny.pt", 156008466,
            "7402e0d864fa82708a20fbd15bc84245c2f26dff0eb43a4b5b93452deb34be69", _SAM2_URL + "sam2.1_hiera_tiny.pt",
        ),
        KnownCheckpoint(
            "sam2.1_hiera_small", "sam2", "configs/sam2.1/sam2.1_hiera_s.yaml", "sam2.1_hiera_small.pt", 184416285,
            "6d1aa6f30de5c92224f8172114de081d104bbd23dd9dc5c58996f0cad5dc4d38", _SAM2_URL + "sam2.1_hiera_small.pt",
        ),
        KnownCheckpoint(
            "sam2.1_hiera_base_plus", "sam2", "configs/sam2.1/sam2.1_hiera_b+.yaml", "sam2.1_hiera_base_plus.pt",
            323606802, "a2345aede8715ab1d5d31b4a509fb160c5a4af1970f199d9054ccfb746c004c5",
            _SAM2_URL + "sam2.1_hiera_base_plus.pt",
        ),
        KnownCheckpoint(
            "sam2.1_hiera_large", "sam2", "configs/sam2.1/sam2.1_hiera_l.yaml", "sam2.1_hiera_large.pt", 898083611,
            "2647878d5dfa5098f2f8649825738a9345572bae2d4350a2468587ece47dd318", _SAM2_URL + "sam2.1_hiera_large.pt",
        ),
    )
}  # fmt: skip


class CheckpointNotFoundError(FmscopeError, FileNotFoundError):
    """A checkpoint file is not where it was looked for (the message says where to get it and where to put it)."""


def cache_dir() -> Path:
    """The folder searched for checkpoints by official file name: ``$FMSCOPE_CACHE`` or ``~/.cache/fmscope``."""
    env = os.environ.get("FMSCOPE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "fmscope"


def checkpoint_rows(folder: Path | None = None) -> list[dict[str, Any]]:
    """One mapping per known checkpoint: its registry fields, ``size_mb``, ``path`` in the cache folder and
    ``present`` (``'yes'``, ``'no'`` or ``'wrong size'``: a file of another size, e.g. an interrupted download)."""
    folder = cache_dir() if folder is None else folder
    rows = []
    for known in KNOWN_CHECKPOINTS.values():
        path = folder / known.file_name
        if not path.is_file():
            present = "no"
        elif known.size is not None and path.stat().st_size != known.size:
            present = "wrong size"
        else:
            present = "yes"
        size_mb = None if known.size is None else round(known.size / 1e6, 1)
        rows.append({**known.to_dict(), "size_mb": size_mb, "path": str(path), "present": present})
    return rows


def known_checkpoint(model_name: str, family: Family | None = None) -> KnownCheckpoint:
    """The registry entry of ``model_name`` (optionally required to be of ``family``)."""
    names = [n for n, c in KNOWN_CHECKPOINTS.items() if family is None or c.family == family]
    known = KNOWN_CHECKPOINTS.get(model_name)
    if known is None or known.name not in names:
        raise InvalidInputError(f"model: unknown {family or 'SAM/SAM2'} model {model_name!r}; known: {names}")
    return known


def resolve_checkpoint(model_name: str, path: str | os.PathLike[str] | None = None) -> Path:
    """The checkpoint file of ``model_name``: ``path`` when given, else its official file name in :func:`cache_dir`.

    Raises :class:`CheckpointNotFoundError` naming the file, the folder and the URL to fetch it from.
    """
    known = known_checkpoint(model_name)
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise CheckpointNotFoundError(
                f"checkpoint: '{p}' does not exist (the {model_name} weights are {known.file_name}, from {known.url})"
            )
        return p
    folder = cache_dir()
    p = folder / known.file_name
    if not p.is_file():
        raise CheckpointNotFoundError(
            f"checkpoint: {known.file_name} for model {model_name!r} not found in {folder}. fmscope never downloads "
            f"weights: fetch it by hand from {known.url} and put it in that folder (set FMSCOPE_CACHE to use another "
            "folder), or pass the file's path"
        )
    return p


def verify_checkpoint(path: str | os.PathLike[str], known: KnownCheckpoint, *, sha256: bool = False) -> None:
    """Refuse a file whose size (and, with ``sha256=True``, hash) differs from the official ``known`` file.

    Unknown reference values are skipped (logged). Raises :class:`~fmscope.errors.FileFormatError`.
    """
    p = Path(path)
    actual = p.stat().st_size
    if known.size is None:
        logger.info("checkpoint %s: the official size of %s is unknown; not checked", p, known.file_name)
    elif actual != known.size:
        why = "truncated: the download is incomplete" if actual < known.size else "larger than the official file"
        raise FileFormatError(
            f"checkpoint '{p}': {actual} bytes, expected {known.size} bytes for {known.file_name} ({why}); "
            f"download it again from {known.url}"
        )
    if not sha256:
        return
    if known.sha256 is None:
        logger.warning("checkpoint %s: the SHA-256 of %s is unknown; not checked", p, known.file_name)
        return
    digest = file_sha256(p)
    if digest != known.sha256:
        raise FileFormatError(
            f"checkpoint '{p}': SHA-256 {digest} differs from the official {known.sha256} of {known.file_name}; "
            f"download it again from {known.url}"
        )


def _torch_load(path: Path) -> Any:
    import torch

    try:  # memory-mapped: a 2.5 GB file is not copied into memory before the model takes its tensors
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as first:
        try:  # files written with the legacy (non-zip) serialization cannot be memory-mapped
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise FileFormatError(
                f"checkpoint '{path}': torch.load cannot read it ({type(exc).__name__}: {detail[:200]}); the file is "
                "truncated or corrupt, or not a PyTorch checkpoint"
            ) from first


def _is_state_dict(obj: Any) -> bool:
    import torch

    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def describe_state_dict(state: Mapping[str, Any]) -> str | None:
    """What a Segment Anything state dict looks like (``'SAM vit_l'``, ``'SAM2.1 hiera_tiny'``...), or None."""
    patch = state.get("image_encoder.patch_embed.proj.weight")
    if patch is not None and hasattr(patch, "shape"):
        vit = {768: "vit_b", 1024: "vit_l", 1280: "vit_h"}.get(int(patch.shape[0]))
        return f"SAM {vit}" if vit else f"SAM ViT (embedding width {int(patch.shape[0])})"
    trunk = state.get("image_encoder.trunk.patch_embed.proj.weight")
    if trunk is not None and hasattr(trunk, "shape"):
        prefix = "image_encoder.trunk.blocks."
        blocks = {k[len(prefix) :].split(".", 1)[0] for k in state if k.startswith(prefix)}
        width, depth = int(trunk.shape[0]), len(blocks)
        size = {(96, 12): "tiny", (96, 16): "small", (112, 24): "base_plus", (144, 48): "large"}.get((width, depth))
        version = "SAM2.1" if "no_obj_embed_spatial" in state else "SAM2"
        return f"{version} hiera_{size}" if size else f"{version} hiera (width {width}, {depth} blocks)"
    return None


def load_checkpoint_state(path: str | os.PathLike[str], family: Family) -> dict[str, torch.Tensor]:
    """The state dict inside an official checkpoint file: SAM files are a plain state dict, SAM2 files hold it under
    ``'model'``. A file of the other family, or no state dict at all, raises :class:`FileFormatError`."""
    p = Path(path)
    obj = _torch_load(p)
    if family == "sam2" and isinstance(obj, Mapping) and "model" in obj:
        obj = obj["model"]
    if not _is_state_dict(obj):
        nested = isinstance(obj, Mapping) and "model" in obj and _is_state_dict(obj["model"])
        what = describe_state_dict(obj["model"]) if nested else None
        hint = f" (it holds a {what} state dict under 'model': use the SAM2 backend)" if what else ""
        form = "SAM state dict (a mapping of tensors)" if family == "sam" else "SAM2 checkpoint {'model': state_dict}"
        raise FileFormatError(f"checkpoint '{p}': expected a {form}, got {type(obj).__name__}{hint}")
    return dict(obj)


def expected_description(known: KnownCheckpoint) -> str:
    """What :func:`describe_state_dict` says about the official weights of ``known`` (e.g. ``'SAM2.1 hiera_tiny'``)."""
    if known.family == "sam":
        return f"SAM {known.architecture}"
    return "SAM2.1 " + known.name.split("_", 1)[1]


def check_state_matches(state: Mapping[str, Any], known: KnownCheckpoint, path: str | os.PathLike[str]) -> None:
    """Refuse, before any model is built, a state dict that is recognisably another model than ``known``
    (e.g. vit_b weights requested as vit_l). Unrecognised layouts pass here and meet :func:`load_weights`."""
    what = describe_state_dict(state)
    if what is not None and what != expected_description(known):
        match = next((c for c in KNOWN_CHECKPOINTS.values() if expected_description(c) == what), None)
        if match is None:
            hint = ""
        elif match.family == known.family:
            hint = f"; pass model={match.name!r}"
        else:
            hint = f"; use the {'SAM2' if match.family == 'sam2' else 'SAM'} backend with model={match.name!r}"
        raise FileFormatError(
            f"checkpoint '{path}': holds {what} weights, not {expected_description(known)} (model {known.name!r}){hint}"
        )


def locate_checkpoint(
    model_name: str, path: str | os.PathLike[str] | None, family: Family, *, verify: bool = True
) -> tuple[KnownCheckpoint, Path]:
    """The known entry of ``model_name`` and its file (``path`` or the cache folder); with ``verify``, a file named
    like the official one must have its size (an interrupted download is refused before torch reads it)."""
    known = known_checkpoint(model_name, family=family)
    file = resolve_checkpoint(model_name, path)
    if verify and file.name == known.file_name:
        verify_checkpoint(file, known)
    return known, file


def read_checkpoint(path: Path, known: KnownCheckpoint) -> dict[str, torch.Tensor]:
    """The state dict of ``path``, refused when it is recognisably another model than ``known``."""
    state = load_checkpoint_state(path, known.family)
    check_state_matches(state, known, path)
    return state


def load_weights(
    model: torch.nn.Module, state: Mapping[str, torch.Tensor], path: str | os.PathLike[str], model_name: str
) -> None:
    """Load ``state`` into ``model`` strictly; a state dict of another architecture raises :class:`FileFormatError`
    naming the file, the differences and what the file looks like."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or shapes:
        problems = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatches", shapes)):
            if items:
                problems.append(f"{len(items)} {label} (e.g. {'; '.join(items[:2])})")
        what = describe_state_dict(state)
        looks = f"; the file looks like {what}" if what else ""
        raise FileFormatError(f"checkpoint '{path}': does not fit model {model_name!r}: {', '.join(problems)}{looks}")
    model.load_state_dict(state, strict=True)
    logger.info("loaded %s weights from %s (%d tensors)", model_name, path, len(state))
