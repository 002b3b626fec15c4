"""Self-describing model folders: ``config.json`` + ``model.safetensors`` (+ ``intensity_profile.json``).

``config.json`` holds the format version, the architecture (:class:`BackboneConfig`), the input contract (channels,
spatial dims, patch size, axes, divisor), the intensity profile (embedded; also written to ``intensity_profile.json``,
which wins on load), the weights file and its tied names, and provenance (fmscope/torch/monai versions, creation time,
caller's ``extra``). The folder is written under a temporary name and renamed, so a failed save leaves nothing.

Tied tensors (several state-dict names sharing one storage) are written once; ``config.json`` records the aliases and
loading restores them.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from fmscope import __version__
from fmscope.errors import FileFormatError, InvalidInputError
from fmscope.intensity import IntensityProfile
from fmscope.models.backbone import Backbone
from fmscope.models.config import BackboneConfig
from fmscope.models.shipped import resolve_model_dir
from fmscope.models.state import KeyReport, compare_state_dict, load_state_dict_report
from fmscope.utils import atomic_output

logger = logging.getLogger(__name__)

FORMAT = "fmscope.model"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
PROFILE_FILE = "intensity_profile.json"


@dataclass(frozen=True)
class InputContract:
    """What a saved model expects: ``(B, in_channels, *spatial)``, spatial sizes multiples of ``divisor``."""

    in_channels: int
    spatial_dims: int
    patch_size: tuple[int, ...]
    axes: str
    divisor: int

    @classmethod
    def of(cls, config: BackboneConfig) -> InputContract:
        return cls(config.in_channels, config.spatial_dims, config.patch_size, config.axes, config.divisor)


@dataclass(frozen=True)
class ModelMetadata:
    """Provenance of a saved model."""

    format_version: int
    fmscope_version: str
    torch_version: str
    monai_version: str
    created: str
    input: InputContract
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LoadedModel:
    """Result of :func:`load_model`: the model (in eval mode), its config, profile, metadata and key report."""

    model: Backbone
    config: BackboneConfig
    profile: IntensityProfile | None
    metadata: ModelMetadata
    report: KeyReport


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def split_shared(state_dict: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, str]]:
    """(tensors to write, ``{alias: kept name}``): identical views of one storage are written once; tensors that
    overlap another's storage differently are cloned (safetensors refuses shared memory)."""
    groups: dict[tuple[Any, ...], str] = {}
    storages: dict[int, int] = {}
    tensors: dict[str, Tensor] = {}
    aliases: dict[str, str] = {}
    for key, t in state_dict.items():
        ptr = t.untyped_storage().data_ptr() if t.device.type != "meta" else id(t)
        view = (ptr, t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype)
        if ptr != 0 and view in groups:
            aliases[key] = groups[view]
            continue
        groups[view] = key
        storages[ptr] = storages.get(ptr, 0) + 1
        tensors[key] = t
    out: dict[str, Tensor] = {}
    for key, t in tensors.items():
        ptr = t.untyped_storage().data_ptr()
        shared = ptr != 0 and storages.get(ptr, 0) > 1
        t = t.detach().cpu()
        out[key] = t.clone().contiguous() if shared or not t.is_contiguous() else t
    return out, aliases


def save_model(
    model: Backbone,
    folder: str | os.PathLike[str],
    *,
    profile: IntensityProfile | None = None,
    extra: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``model`` as a self-describing folder (atomically) and return its path.

    ``extra``: JSON-serialisable provenance (training step, data manifest...), stored under ``provenance.extra``.
    """
    if not isinstance(model, Backbone):
        raise InvalidInputError(f"model: expected an fmscope Backbone (from create_model), got {type(model).__name__}")
    if profile is not None and not isinstance(profile, IntensityProfile):
        raise InvalidInputError(f"profile: expected an IntensityProfile or None, got {type(profile).__name__}")
    extra = dict(extra or {})
    try:
        json.dumps(extra, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"extra: expected a JSON-serialisable dict, got {extra!r} ({exc})") from None
    tensors, aliases = split_shared(model.state_dict())
    config = model.config
    doc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": config.to_dict(),
        "input": {
            "in_channels": config.in_channels,
            "spatial_dims": config.spatial_dims,
            "patch_size": list(config.patch_size),
            "axes": config.axes,
            "divisor": config.divisor,
        },
        "intensity_profile": None if profile is None else {"file": PROFILE_FILE, "profile": profile.to_dict()},
        "weights": {
            "file": WEIGHTS_FILE,
            "tensors": len(tensors),
            "parameters": model.num_parameters(),
            "tied": aliases,
        },
        "provenance": {
            "fmscope_version": __version__,
            "torch_version": torch.__version__,
            "monai_version": _version("monai"),
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "extra": extra,
        },
    }
    with atomic_output(folder, overwrite) as tmp:
        tmp.mkdir()
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": FORMAT})
        if profile is not None:
            (tmp / PROFILE_FILE).write_text(profile.to_json(), encoding="utf-8")
        (tmp / CONFIG_FILE).write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    logger.info("saved %s model (%d tensors) to %s", config.architecture, len(tensors), folder)
    return Path(folder)


def read_model_config(folder: str | os.PathLike[str]) -> tuple[BackboneConfig, dict[str, Any]]:
    """(architecture config, whole ``config.json`` document) of a saved model folder (or a shipped model's name,
    :mod:`fmscope.models.shipped`), without loading weights."""
    root = resolve_model_dir(folder)
    path = root / CONFIG_FILE
    if not path.is_file():
        raise FileFormatError(f"model folder '{root}': expected a {CONFIG_FILE}, found none")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FileFormatError(f"model folder '{root}': {CONFIG_FILE} is not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        got = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise FileFormatError(f"model folder '{root}': expected {CONFIG_FILE} of format '{FORMAT}', got {got!r}")
    version = doc.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise FileFormatError(
            f"model folder '{root}': expected format_version <= {FORMAT_VERSION}, got {version!r} "
            "(saved by a newer fmscope?)"
        )
    try:
        config = BackboneConfig.from_dict(doc.get("architecture"))  # type: ignore[arg-type]
    except (InvalidInputError, TypeError) as exc:
        raise FileFormatError(f"model folder '{root}': invalid architecture in {CONFIG_FILE}: {exc}") from None
    return config, doc


def _read_profile(root: Path, doc: dict[str, Any]) -> IntensityProfile | None:
    entry = doc.get("intensity_profile")
    if entry is None:
        return None
    file = root / str(entry.get("file", PROFILE_FILE))
    if file.is_file():
        profile = IntensityProfile.load(file)
        embedded = entry.get("profile")
        if embedded is not None and embedded != profile.to_dict():
            logger.warning(
                "%s: %s differs from the profile embedded in %s; using the file", root, file.name, CONFIG_FILE
            )
        return profile
    if entry.get("profile") is None:
        raise FileFormatError(f"model folder '{root}': intensity profile '{file.name}' is referenced but missing")
    return IntensityProfile.from_dict(entry["profile"])


def _metadata(root: Path, doc: dict[str, Any], config: BackboneConfig) -> ModelMetadata:
    prov = doc.get("provenance") or {}
    return ModelMetadata(
        format_version=int(doc["format_version"]),
        fmscope_version=str(prov.get("fmscope_version", "unknown")),
        torch_version=str(prov.get("torch_version", "unknown")),
        monai_version=str(prov.get("monai_version", "unknown")),
        created=str(prov.get("created", "unknown")),
        input=InputContract.of(config),
        extra=dict(prov.get("extra") or {}),
    )


def load_model(
    folder: str | os.PathLike[str], *, strict: bool = True, map_location: str | torch.device = "cpu"
) -> LoadedModel:
    """Rebuild the model saved in ``folder`` and load its weights (eval mode).

    ``strict=True`` raises :class:`FileFormatError` with a key report on any missing, unexpected or
    shape-mismatched tensor; ``strict=False`` loads what matches and logs the same report as a warning.
    """
    root = resolve_model_dir(folder)
    config, doc = read_model_config(root)
    weights = root / str((doc.get("weights") or {}).get("file", WEIGHTS_FILE))
    if not weights.is_file():
        raise FileFormatError(f"model folder '{root}': expected weights '{weights.name}', found none")
    device = str(map_location)
    try:
        state = load_file(str(weights), device=device)
    except Exception as exc:  # safetensors raises its own SafetensorError, OSError, ...
        raise FileFormatError(
            f"model folder '{root}': cannot read '{weights.name}' ({type(exc).__name__}: {exc})"
        ) from None
    for alias, kept in ((doc.get("weights") or {}).get("tied") or {}).items():
        if kept in state:
            state[alias] = state[kept]
    profile = _read_profile(root, doc)
    model = Backbone(config)
    report = compare_state_dict(model, state)
    if not report.ok:
        if strict:
            raise FileFormatError(
                f"model folder '{root}': weights do not match the {config.architecture} architecture in "
                f"{CONFIG_FILE}: {report.summary()}. Pass strict=False to load the matching tensors only."
            )
        logger.warning("%s: partial load: %s", root, report.summary())
    report = load_state_dict_report(model, state)
    model.to(map_location).eval()
    return LoadedModel(
        model=model, config=config, profile=profile, metadata=_metadata(root, doc, config), report=report
    )
