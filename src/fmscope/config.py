"""Typed configuration: frozen dataclasses with defaults, overridden by a YAML file, then by ``key=value`` pairs.

Resolved once at the entry point (a YAML path in place of ``None`` goes between the defaults and the overrides), then
saved beside the results with ``save_config(cfg, out_dir / "config.yaml")``:

>>> from fmscope.pretrain.config import PretrainConfig
>>> cfg = resolve_config(PretrainConfig, None, ["optim.lr=3e-4", "method.model=unet-cpu"])
>>> cfg.optim.lr, cfg.method.model
(0.0003, 'unet-cpu')
>>> resolve_config(PretrainConfig, None, ["model.name=unet-cpu"])
Traceback (most recent call last):
fmscope.errors.InvalidInputError: unknown config key(s): ['model']; known: ['augment', 'data', ..., 'train']

Nested dataclasses are addressed with dots. Values are parsed with YAML rules (``1e-4``, ``true``, ``[8, 8, 8]``) and
then checked against the field's type annotation; an unknown key or a wrong type raises an error naming the key.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml

from fmscope.errors import InvalidInputError
from fmscope.utils.atomic import atomic_output

T = TypeVar("T")


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Convert a YAML value to the annotated type (dataclass, tuple, list, Literal, Optional, scalars)."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, key)
            except InvalidInputError as exc:
                errors.append(str(exc))
        raise InvalidInputError(f"{key}: {value!r} matches none of {annotation} ({'; '.join(errors)})")
    if origin is typing.Literal:
        if value not in args:
            raise InvalidInputError(f"{key}: expected one of {list(args)}, got {value!r}")
        return value
    if dataclasses.is_dataclass(annotation) and isinstance(annotation, type):
        if isinstance(value, annotation):
            return value
        if not isinstance(value, dict):
            raise InvalidInputError(f"{key}: expected a mapping for {annotation.__name__}, got {value!r}")
        return from_dict(annotation, value, prefix=key)
    if origin in (tuple, list):
        if not isinstance(value, list | tuple):
            raise InvalidInputError(f"{key}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise InvalidInputError(f"{key}: expected {len(args)} values, got {len(value)} ({value!r})")
            items = [_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True))]
        else:
            item_type = args[0] if args else Any
            items = [_coerce(v, item_type, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise InvalidInputError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if annotation is bool:
        if not isinstance(value, bool):
            raise InvalidInputError(f"{key}: expected true or false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidInputError(f"{key}: expected an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                raise InvalidInputError(f"{key}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidInputError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise InvalidInputError(f"{key}: expected a string, got {value!r}")
        return value
    if annotation is Path:
        return Path(value)
    return value


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from a (nested) mapping; missing keys keep their defaults, unknown keys raise."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f" in '{prefix}'" if prefix else ""
        raise InvalidInputError(f"unknown config key(s){where}: {unknown}; known: {sorted(fields)}")
    kwargs = {name: _coerce(value, hints[name], f"{prefix}.{name}" if prefix else name) for name, value in data.items()}
    return cls(**kwargs)


def to_dict(config: Any) -> dict[str, Any]:
    """A plain, YAML-safe dict of a (nested) dataclass (tuples become lists, paths strings)."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, list | tuple):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, Path):
            return str(value)
        return value

    out = plain(config)
    if not isinstance(out, dict):
        raise InvalidInputError(f"config: expected a dataclass instance, got {type(config).__name__}")
    return out


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["a.b=1", "c=[2, 3]"]`` -> nested ``{"a": {"b": 1}, "c": [2, 3]}`` (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise InvalidInputError(f"override: expected key=value, got {pair!r}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise InvalidInputError(f"override {key}: cannot parse value {raw!r}: {exc}") from None
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise InvalidInputError(f"override: '{key}' conflicts with another override of '{part}'")
            node = child
        node[parts[-1]] = value
    return out


def merge_mappings(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``update`` merged into ``base`` recursively (nested mappings merged, anything else replaced)."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_mappings(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a YAML mapping (an empty file is an empty mapping)."""
    p = Path(path)
    if not p.is_file():
        raise InvalidInputError(f"config file '{p}' does not exist")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise InvalidInputError(f"config file '{p}': invalid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InvalidInputError(f"config file '{p}': expected a mapping at the top level, got {type(data).__name__}")
    return data


def nest(values: dict[str, Any]) -> dict[str, Any]:
    """``{"data.path": p}`` -> ``{"data": {"path": p}}``: dotted keys with values taken as they are (never parsed)."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        node = out
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return out


def resolve_config(
    cls: type[T],
    path: str | os.PathLike[str] | None = None,
    overrides: list[str] | None = None,
    values: dict[str, Any] | None = None,
) -> T:
    """Defaults of ``cls`` <- YAML file ``path`` <- ``overrides`` (``key=value``, parsed as YAML) <- ``values``
    (dotted key -> value, used as given: paths and free strings from the command line, which must never be parsed as
    YAML: ``"my data #2"`` is a path, not ``"my data"`` and a comment), validated into ``cls``."""
    data: dict[str, Any] = load_yaml(path) if path is not None else {}
    data = merge_mappings(data, parse_overrides(overrides or []))
    data = merge_mappings(data, nest(values or {}))
    return from_dict(cls, data)


def config_path(
    name_or_path: str, shipped: Sequence[str] | None = None, *, folder: str = "configs", option: str = "--config"
) -> Path:
    """The path of a config shipped with fmscope (``fmscope/FOLDER/NAME.yaml``) by name, or of a YAML file.

    One rule: an argument that looks like a path (a ``.yaml``/``.yml`` suffix, a path separator, or a leading ``.``
    or ``~``) is a file; any other argument is a shipped name first (``shipped`` lists the names allowed, default
    every YAML in the folder), so that a file or folder of the same name in the working directory never shadows a
    shipped config; a bare name that is not shipped may still be a file. Errors name ``option`` and say what was
    tried.
    """
    separators = [s for s in (os.sep, os.altsep) if s]
    looks_like_path = (
        Path(name_or_path).suffix.lower() in (".yaml", ".yml")
        or any(s in name_or_path for s in separators)
        or name_or_path.startswith((".", "~"))
    )
    path = Path(name_or_path).expanduser()
    if looks_like_path:
        if path.is_dir():
            raise InvalidInputError(f"{option}: '{path}' is a folder, not a YAML file")
        if not path.is_file():
            raise InvalidInputError(f"{option}: YAML file '{path}' does not exist")
        return path
    base = resources.files("fmscope").joinpath(*folder.split("/"))
    names = list(shipped) if shipped is not None else sorted(Path(str(p)).stem for p in base.iterdir()
                                                             if str(p).endswith(".yaml"))  # fmt: skip
    if name_or_path in names:
        return Path(str(base / f"{name_or_path}.yaml"))
    if path.is_file():
        return path
    what = "is a folder, not a YAML file" if path.is_dir() else "is not a YAML file"
    raise InvalidInputError(
        f"{option}: '{name_or_path}' is not a shipped config (known: {names}) and '{path}' {what}; "
        f"give a shipped name or a path such as './{name_or_path}.yaml'"
    )


def save_config(config: Any, path: str | os.PathLike[str], overwrite: bool = True) -> Path:
    """Write the resolved config as YAML, atomically."""
    with atomic_output(path, overwrite=overwrite) as tmp:
        tmp.write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
    return Path(path)
