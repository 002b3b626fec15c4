"""Provenance: the resolved configuration, package versions and seed written next to every output."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from fmscope.utils.atomic import atomic_output

_PACKAGES = (
    "fmscope",
    "numpy",
    "scipy",
    "scikit-image",
    "tifffile",
    "zarr",
    "dask",
    "nibabel",
    "h5py",
    "torch",
    "monai",
)


def package_versions(packages: tuple[str, ...] = _PACKAGES) -> dict[str, str]:
    """Installed versions of the packages that shape results (``'not installed'`` where absent)."""
    out: dict[str, str] = {}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


@dataclass(frozen=True)
class RunRecord:
    """What produced an output: the command, its resolved parameters, the seed, versions, time and machine."""

    command: str
    parameters: dict[str, Any]
    inputs: tuple[str, ...] = ()
    seed: int | None = None
    versions: dict[str, str] = field(default_factory=package_versions)
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    python: str = field(default_factory=lambda: sys.version.split()[0])
    platform: str = field(default_factory=platform.platform)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, default=str)


def record_path(output: str | os.PathLike[str]) -> Path:
    """Where the run record of ``output`` lives: ``<output>.fmscope.json`` beside it."""
    out = Path(output)
    return out.with_name(out.name + ".fmscope.json")


def write_run_record(output: str | os.PathLike[str], record: RunRecord, overwrite: bool = True) -> Path:
    """Write ``record`` beside ``output`` atomically and return its path."""
    path = record_path(output)
    with atomic_output(path, overwrite=overwrite) as tmp:
        tmp.write_text(record.to_json() + "\n")
    return path
