"""Seeded splits of benchmark units: a fixed held-out test set, and k folds of the training pool.

* **Test**: whole source volumes (``split_by: source``; single units where a datatype has one source or asks for
  ``split_by: unit``), chosen by a seeded permutation (round-robin over classes for classification) until at least
  ``test_size`` units are held out, or named in ``test_sources``. The test set is never seen in training or model
  selection.
* **Folds**: the rest (the pool) is partitioned into ``folds`` parts by source (by unit when the pool has fewer
  sources than folds, or, for classification, fewer sources of some class than folds), each class spread over all
  parts. Fold ``f`` draws its validation units from part ``f`` and its training units from the other parts, so that
  training and validation never share a source where the sources allow it.
* **Sizes**: for ``n`` labelled units, ``round(val_fraction * n)`` (at least 1) validate and the rest train. Units are
  taken as prefixes of a fixed order (stratified by class for classification), so the sets of a larger size contain
  those of a smaller one.

:func:`load_or_plan` writes the splits to ``splits.json`` and reuses them when the file is there.
"""

from __future__ import annotations

import json
import logging
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from fmscope.errors import InvalidInputError
from fmscope.evaluation.bench_config import DatatypeConfig, ProtocolConfig
from fmscope.evaluation.units import Unit
from fmscope.utils.atomic import atomic_output

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Split:
    """Unit ids of the held-out test set and of each fold's part of the pool (each in its seeded order)."""

    test: tuple[str, ...]
    folds: tuple[tuple[str, ...], ...]
    notes: tuple[str, ...] = ()


def _stratified(ids: Sequence[str], class_of: Mapping[str, str | None]) -> list[str]:
    """Interleave ``ids`` class by class (round-robin in order of first appearance), keeping the order within a
    class; with no classes the order is unchanged."""
    queues: dict[str | None, list[str]] = {}
    for i in ids:
        queues.setdefault(class_of.get(i), []).append(i)
    if len(queues) <= 1:
        return list(ids)
    out: list[str] = []
    while any(queues.values()):
        for q in queues.values():
            if q:
                out.append(q.pop(0))
    return out


def _by_class(ids: Sequence[str], class_of: Mapping[str, str | None]) -> list[str]:
    """``ids`` grouped class by class (stable): dealt round-robin into folds, every class spreads over all folds."""
    order = {c: k for k, c in enumerate(dict.fromkeys(class_of.get(i) for i in ids))}
    return sorted(ids, key=lambda i: order[class_of.get(i)])


def plan_split(units: Sequence[Unit], datatype: DatatypeConfig, protocol: ProtocolConfig) -> Split:
    """The seeded test set and folds of one datatype (see the module doc)."""
    rng = np.random.default_rng([protocol.seed, zlib.crc32(datatype.name.encode())])
    notes: list[str] = []
    sources = list(dict.fromkeys(u.source for u in units))
    by_source = datatype.split_by == "source" and len(sources) >= 2
    if datatype.split_by == "source" and not by_source:
        notes.append(f"{datatype.name}: one source volume, so the test units are other slices/blocks of it")
    group_of = {u.id: (u.source if by_source else u.id) for u in units}
    class_of = {u.id: u.class_name for u in units}
    groups = list(dict.fromkeys(group_of[u.id] for u in units))
    groups = [groups[i] for i in rng.permutation(len(groups))]
    members = {g: [u.id for u in units if group_of[u.id] == g] for g in groups}
    group_class = {g: class_of[members[g][0]] for g in groups}
    if datatype.test_sources:
        unknown = sorted(set(datatype.test_sources) - set(sources))
        if unknown:
            raise InvalidInputError(f"datatypes[{datatype.name}].test_sources: {unknown} not among sources {sources}")
        test_groups = [g for g in groups if any(u.source in datatype.test_sources for u in units if u.id in members[g])]
    else:
        test_groups, n = [], 0
        test_size = datatype.test_size or protocol.test_size
        for g in _stratified(groups, group_class):
            if n >= test_size:
                break
            test_groups.append(g)
            n += len(members[g])
    pool_groups = [g for g in groups if g not in test_groups]
    if not pool_groups:
        raise InvalidInputError(
            f"protocol.test_size: {datatype.test_size or protocol.test_size} leaves no training units for "
            f"{datatype.name} ({len(units)} units in {len(groups)} groups)"
        )
    test = tuple(i for g in test_groups for i in members[g])
    per_class: dict[str | None, int] = {}
    for g in pool_groups:
        per_class[group_class[g]] = per_class.get(group_class[g], 0) + 1
    if min(per_class.values()) >= protocol.folds:  # every class in every part
        parts: list[list[str]] = [[] for _ in range(protocol.folds)]
        for k, g in enumerate(_by_class(pool_groups, group_class)):
            parts[k % protocol.folds].extend(members[g])
    else:
        if by_source:
            notes.append(
                f"{datatype.name}: too few training sources ({len(pool_groups)}, per class "
                f"{min(per_class.values())}) for {protocol.folds} folds by source, so training and validation "
                "units share source volumes"
            )
        pool = [i for g in pool_groups for i in members[g]]
        pool = _by_class([pool[i] for i in rng.permutation(len(pool))], class_of)
        parts = [pool[k :: protocol.folds] for k in range(protocol.folds)]
    return Split(test, tuple(tuple(_stratified(p, class_of)) for p in parts), tuple(notes))


def fold_sets(
    split: Split, fold: int, size: int, protocol: ProtocolConfig, class_of: Mapping[str, str | None], name: str = ""
) -> tuple[list[str], list[str]]:
    """Training and validation unit ids of ``fold`` for ``size`` labelled units (validation = training at size 1)."""
    if not 0 <= fold < len(split.folds):
        raise InvalidInputError(f"fold: expected 0..{len(split.folds) - 1}, got {fold}")
    n_val = 0 if size == 1 else max(1, round(protocol.val_fraction * size))
    n_train = size - n_val
    if len(split.folds) == 1:
        val_candidates = list(split.folds[0][:n_val])
        train_candidates = [i for i in split.folds[0] if i not in val_candidates]
    else:
        val_candidates = list(split.folds[fold])
        others = [list(p) for k, p in enumerate(split.folds) if k != fold]
        mixed = [i for row in _round_robin(others) for i in row]
        train_candidates = _stratified(mixed, class_of)
    if n_train > len(train_candidates) or n_val > len(val_candidates):
        raise InvalidInputError(
            f"protocol.train_sizes: {size} units need {n_train} for training + {n_val} for validation, but fold {fold} "
            f"of {name or 'this datatype'} offers {len(train_candidates)} + {len(val_candidates)}; lower the size or "
            "protocol.folds"
        )
    train = train_candidates[:n_train]
    return train, (val_candidates[:n_val] if n_val else list(train))


def _round_robin(parts: Sequence[Sequence[str]]) -> list[list[str]]:
    """Round-robin rows over ``parts`` (the k-th unit of every part, then the (k+1)-th...), ragged ends kept."""
    longest = max((len(p) for p in parts), default=0)
    return [[p[k] for p in parts if k < len(p)] for k in range(longest)]


def load_or_plan(
    path: str | Path, units: Mapping[str, Sequence[Unit]], datatypes: Sequence[DatatypeConfig], protocol: ProtocolConfig
) -> dict[str, Split]:
    """Splits of every datatype: read from ``path`` when it exists (checked against the units and the number of
    folds), else planned and written there."""
    path = Path(path)
    splits: dict[str, Split] = {}
    saved = json.loads(path.read_text()) if path.is_file() else {}
    for datatype in datatypes:
        ids = {u.id for u in units[datatype.name]}
        if datatype.name in saved:
            entry = saved[datatype.name]
            split = Split(tuple(entry["test"]), tuple(tuple(f) for f in entry["folds"]), tuple(entry.get("notes", ())))
            listed = set(split.test).union(*split.folds)
            if listed != ids or len(split.folds) != protocol.folds:
                raise InvalidInputError(
                    f"splits: '{path}' does not match the units or folds of {datatype.name}; "
                    "delete it to plan new splits"
                )
            logger.info("%s: reusing the splits in '%s'", datatype.name, path)
        else:
            split = plan_split(units[datatype.name], datatype, protocol)
        splits[datatype.name] = split
    with atomic_output(path, overwrite=True) as tmp:
        tmp.write_text(json.dumps({k: asdict(v) for k, v in splits.items()}, indent=1))
    return splits
