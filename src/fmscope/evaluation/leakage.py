"""Refuse a pretraining corpus that contains a benchmark's test units (checked by content digest).

The test set of every datatype is a choice of whole source volumes. Its digests are those of each source file's
voxels, of the array a unit was read as (one channel, one Z slice) and of every unit cut from it; a corpus volume with
any of these digests (``fmscope.data.digest``) is a test unit in the pretraining data, whatever its name, folder or
format. Only exact copies are caught: a corpus volume that is a different crop of a test volume is not.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fmscope.data.digest import array_digest, file_digest, overlaps
from fmscope.errors import InvalidInputError
from fmscope.evaluation.bench_config import DatatypeConfig
from fmscope.evaluation.protocol import Split
from fmscope.evaluation.units import Unit, held_out_arrays

logger = logging.getLogger(__name__)


def held_out_digests(
    datatypes: Sequence[DatatypeConfig], root: Path, units: Mapping[str, list[Unit]], splits: Mapping[str, Split]
) -> dict[str, str]:
    """digest -> ``'datatype: what'`` for everything of the test sets (see the module doc)."""
    out: dict[str, str] = {}
    files: set[str] = set()  # a stack's slices are items of one file: hash the file once
    for dt in datatypes:
        test = set(splits[dt.name].test)
        sources = {u.source for u in units[dt.name] if u.id in test}
        for image_path, arrays in held_out_arrays(dt, root, sources):
            if image_path not in files:
                files.add(image_path)
                out.setdefault(file_digest(image_path), f"{dt.name}: test volume '{image_path}'")
            for i, array in enumerate(arrays):
                out.setdefault(array_digest(array), f"{dt.name}: test unit {i} of '{image_path}'")
    return out


def check_corpus(corpus: Sequence[dict[str, Any]] | None, digests: Mapping[str, str], what: str) -> None:
    """Raise when ``corpus`` (a ``corpus.json`` record) holds a test unit; warn when there is no record to check."""
    if corpus is None:
        logger.warning(
            "%s: no corpus.json (a model made before corpora were recorded): its pretraining data is unchecked", what
        )
        return
    found = overlaps(corpus, dict(digests))
    if found:
        listed = "; ".join(f"'{path}' = {name}" for path, name in found[:5])
        raise InvalidInputError(
            f"{what}: the pretraining corpus contains {len(found)} of this benchmark's test units ({listed}); "
            "remove them from the pretraining data, or any gain reported would come from leakage"
        )
