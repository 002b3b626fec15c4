"""Training and validation data in the shape users have it: folders or CSVs, or one stack and its label stack with
slice ranges for training and validation, narrowed by a regular expression on the file paths.

``fmscope finetune --train A --val B [--include REGEX]`` and ``fmscope finetune --slices STACK LABELS --train-slices
0-19 --val-slices 20-24`` both end in :func:`load_train_val`, so nobody splits a stack into files or builds
per-structure symlink folders by hand.
"""

from __future__ import annotations

import os
import re
from dataclasses import replace
from pathlib import Path

from fmscope.data.labelled import LabelledSet, Task, load_labelled, stack_slices
from fmscope.errors import InvalidInputError


def parse_indices(text: str, option: str) -> list[int]:
    """``'0-9,15,20-22'`` -> ``[0, ..., 9, 15, 20, 21, 22]`` (ranges inclusive, in the order given)."""
    out: list[int] = []
    for part in (p.strip() for p in str(text).split(",")):
        first, sep, last = part.partition("-")
        try:
            lo, hi = (int(first), int(last)) if sep else (int(part), int(part))
        except ValueError:
            raise InvalidInputError(f"{option}: expected slice numbers like '0-19' or '0,4,8', got {text!r}") from None
        if lo < 0 or hi < lo:
            raise InvalidInputError(f"{option}: expected ranges FIRST-LAST with 0 <= FIRST <= LAST, got {part!r}")
        out.extend(range(lo, hi + 1))
    if len(set(out)) != len(out):
        raise InvalidInputError(f"{option}: a slice is listed twice in {text!r}")
    return out


def include_matching(data: LabelledSet, pattern: str | None, option: str = "--include") -> LabelledSet:
    """The items of ``data`` whose image path (relative to the set's root) matches ``pattern`` (``re.search``)."""
    if pattern is None:
        return data
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise InvalidInputError(f"{option}: {pattern!r} is not a regular expression ({exc})") from None

    def name(image: str) -> str:
        path = Path(image)
        return path.relative_to(data.root).as_posix() if path.is_relative_to(data.root) else path.as_posix()

    items = tuple(i for i in data.items if regex.search(name(i.image)))
    if not items:
        shown = ", ".join(name(i.image) for i in data.items[:3])
        raise InvalidInputError(f"{option}: {pattern!r} matches none of the {len(data.items)} images ({shown}, ...)")
    return replace(data, items=items)


def load_train_val(
    task: Task,
    train: str | os.PathLike[str] | None = None,
    val: str | os.PathLike[str] | None = None,
    *,
    slices: tuple[str | os.PathLike[str], str | os.PathLike[str]] | None = None,
    train_slices: str | None = None,
    val_slices: str | None = None,
    include: str | None = None,
    class_pattern: str | None = None,
) -> tuple[LabelledSet, LabelledSet]:
    """Training and validation sets from folders/CSVs (``train``, ``val``), or from one ``slices = (stack, labels)``
    pair whose Z slices are 2D samples (``train_slices`` / ``val_slices``: ``'0-19'``, ``'0,4,8'``); ``include``
    keeps the images whose path matches the regular expression. Errors name the option."""
    if slices is not None:
        if task != "segment":
            raise InvalidInputError(f"--slices: a stack and its label stack make segmentation data, not {task}")
        if train is not None or val is not None:
            raise InvalidInputError("--slices: give either --slices (+ --train-slices, --val-slices) or --train/--val")
        if train_slices is None or val_slices is None:
            raise InvalidInputError("--slices: needs --train-slices and --val-slices (e.g. 0-19 and 20-24)")
        zs_train, zs_val = parse_indices(train_slices, "--train-slices"), parse_indices(val_slices, "--val-slices")
        shared = sorted(set(zs_train) & set(zs_val))
        if shared:
            raise InvalidInputError(f"--train-slices, --val-slices: slices {shared[:10]} are in both")
        image, labels = slices
        out = []
        for option, zs in (("--train-slices", zs_train), ("--val-slices", zs_val)):
            try:
                out.append(stack_slices(image, labels, zs))
            except InvalidInputError as exc:
                raise InvalidInputError(f"{option}: {exc}") from None
        return out[0], out[1]
    if train is None or val is None:
        raise InvalidInputError("--train, --val: both are required (or --slices STACK LABELS)")
    if train_slices is not None or val_slices is not None:
        raise InvalidInputError("--train-slices, --val-slices: only with --slices STACK LABELS")
    extra = {"class_pattern": class_pattern} if class_pattern else {}
    sets = (load_labelled(train, task, **extra), load_labelled(val, task, **extra))
    return include_matching(sets[0], include), include_matching(sets[1], include)
