"""Loading state dicts with a readable key report, and mapping names between networks (pretrained encoder -> new net).

``load_state_dict_report`` never raises on a key mismatch: it loads what matches (same name after the prefix map,
same shape) and returns a :class:`KeyReport`; the caller decides whether a mismatch is fatal (``load_model`` with
``strict=True`` does).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from torch import Tensor, nn

from fmscope.errors import InvalidInputError

logger = logging.getLogger(__name__)

_SHOW = 5


@dataclass(frozen=True)
class KeyReport:
    """How a state dict matched a model.

    Attributes:
        loaded: model keys that received a tensor.
        missing: model keys with no tensor in the state dict.
        unexpected: state-dict keys (after the prefix map) the model does not have.
        mismatched_shapes: ``(key, model shape, state-dict shape)`` for keys present on both sides with other shapes.
    """

    loaded: tuple[str, ...]
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    mismatched_shapes: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...]

    @property
    def ok(self) -> bool:
        """True when every model key was loaded and nothing was left over."""
        return not (self.missing or self.unexpected or self.mismatched_shapes)

    def summary(self) -> str:
        total = len(self.loaded) + len(self.missing) + len(self.mismatched_shapes)
        parts = [f"loaded {len(self.loaded)} of {total} model tensors"]
        if self.missing:
            parts.append(f"missing {len(self.missing)}: {_first(self.missing)}")
        if self.unexpected:
            parts.append(f"unexpected {len(self.unexpected)}: {_first(self.unexpected)}")
        if self.mismatched_shapes:
            shown = [f"{k} (model {tuple(m)} vs file {tuple(f)})" for k, m, f in self.mismatched_shapes[:_SHOW]]
            more = len(self.mismatched_shapes) - _SHOW
            parts.append(
                f"shape mismatch {len(self.mismatched_shapes)}: {', '.join(shown)}"
                + (f", ... (+{more})" if more > 0 else "")
            )
        return "; ".join(parts)


def _first(keys: tuple[str, ...]) -> str:
    more = len(keys) - _SHOW
    return ", ".join(keys[:_SHOW]) + (f", ... (+{more})" if more > 0 else "")


def map_prefixes(state_dict: Mapping[str, Tensor], prefix_map: Mapping[str, str] | None) -> dict[str, Tensor]:
    """Rename keys: a key starting with a ``prefix_map`` key gets that prefix replaced by its value (the longest
    matching prefix wins; ``""`` as value strips it). Keys matching no prefix pass through unchanged.
    """
    if not prefix_map:
        return dict(state_dict)
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in prefix_map.items()):
        raise InvalidInputError(f"prefix_map: expected a mapping of str to str, got {dict(prefix_map)!r}")
    order = sorted(prefix_map, key=len, reverse=True)
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        new = key
        for prefix in order:
            if key.startswith(prefix):
                new = prefix_map[prefix] + key[len(prefix) :]
                break
        if new in out:
            raise InvalidInputError(f"prefix_map: two keys map to '{new}' (one of them is '{key}')")
        out[new] = value
    return out


def compare_state_dict(
    model: nn.Module, state_dict: Mapping[str, Tensor], *, prefix_map: Mapping[str, str] | None = None
) -> KeyReport:
    """The :class:`KeyReport` of loading ``state_dict`` into ``model``, without loading anything."""
    target = model.state_dict()
    source = map_prefixes(state_dict, prefix_map)
    loaded: list[str] = []
    missing: list[str] = []
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = []
    for key, tensor in target.items():
        if key not in source:
            missing.append(key)
        elif tuple(source[key].shape) != tuple(tensor.shape):
            mismatched.append((key, tuple(tensor.shape), tuple(source[key].shape)))
        else:
            loaded.append(key)
    unexpected = [k for k in source if k not in target]
    return KeyReport(tuple(loaded), tuple(missing), tuple(unexpected), tuple(mismatched))


def load_state_dict_report(
    model: nn.Module, state_dict: Mapping[str, Tensor], *, prefix_map: Mapping[str, str] | None = None
) -> KeyReport:
    """Load into ``model`` every tensor of ``state_dict`` whose (mapped) name and shape match; return the report.

    Example, pretrained encoder into a new network whose backbone sits under ``backbone.``::

        report = load_state_dict_report(seg_net, pretrained.encoder_state_dict(), prefix_map={"": "backbone."})
    """
    report = compare_state_dict(model, state_dict, prefix_map=prefix_map)
    source = map_prefixes(state_dict, prefix_map)
    subset = {k: source[k] for k in report.loaded}
    result = model.load_state_dict(subset, strict=False)
    if result.unexpected_keys:  # cannot happen: subset keys come from model.state_dict()
        raise RuntimeError(f"unexpected keys while loading: {result.unexpected_keys[:_SHOW]}")
    logger.debug("state dict load: %s", report.summary())
    return report
