"""Scores of a classification (one label per sample): accuracy, macro F1, per-class F1, confusion matrix."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fmscope.errors import InvalidInputError
from fmscope.metrics._arrays import safe_ratio


@dataclass(frozen=True)
class ClassificationScores:
    """``confusion[i][j]``: number of samples of true class ``labels[i]`` predicted as ``labels[j]``.

    ``per_class_f1`` runs parallel to ``labels``; ``macro_f1`` is their unweighted mean. A label absent from both
    ``y_true`` and ``y_pred`` (possible only when ``labels`` is given) has F1 1.0 (nothing to find, nothing found).
    """

    accuracy: float
    macro_f1: float
    per_class_f1: tuple[float, ...]
    confusion: tuple[tuple[int, ...], ...]
    labels: tuple[Any, ...]

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (labels as given, confusion as nested lists)."""
        return {
            "accuracy": self.accuracy,
            "macro_f1": self.macro_f1,
            "per_class_f1": {str(lab): f for lab, f in zip(self.labels, self.per_class_f1, strict=True)},
            "confusion": [list(row) for row in self.confusion],
            "labels": list(self.labels),
        }


def _as_1d(values: Any, name: str) -> np.ndarray:
    if hasattr(values, "compute") and callable(values.compute):
        values = values.compute()
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise InvalidInputError(f"{name}: expected a 1D sequence of class labels, got shape {arr.shape}")
    if arr.size == 0:
        raise InvalidInputError(f"{name}: expected at least one sample, got an empty sequence")
    if arr.dtype.kind == "f" and bool(np.isnan(arr).any()):
        raise InvalidInputError(f"{name}: expected no NaN labels, got {int(np.isnan(arr).sum())}")
    return arr


def classification_scores(y_pred: Any, y_true: Any, *, labels: Sequence[Any] | None = None) -> ClassificationScores:
    """Accuracy, macro F1, per-class F1 and confusion matrix of predicted vs true class labels.

    Args:
        y_pred, y_true: 1D sequences of the same length (ints or strings).
        labels: the classes, in the order of the outputs; by default the sorted union of both inputs. Samples whose
            true or predicted label is not in ``labels`` raise InvalidInputError.
    """
    p = _as_1d(y_pred, "y_pred")
    t = _as_1d(y_true, "y_true")
    if p.shape != t.shape:
        raise InvalidInputError(f"y_pred and y_true: expected the same length, got {p.shape[0]} and {t.shape[0]}")
    both = np.concatenate([t, p])
    if labels is None:
        labs = np.unique(both)
    else:
        labs = np.asarray(list(labels))
        if labs.size == 0 or np.unique(labs).size != labs.size:
            raise InvalidInputError(f"labels: expected a non-empty sequence of distinct labels, got {list(labels)!r}")
    order = np.argsort(labs, kind="stable")
    pos = np.searchsorted(labs[order], both)
    pos = np.clip(pos, 0, labs.size - 1)
    found = labs[order][pos] == both
    if not bool(found.all()):
        missing = sorted({str(v) for v in both[~found].tolist()})
        raise InvalidInputError(f"labels: expected every y_true/y_pred value among {labs.tolist()}, got {missing}")
    idx = order[pos]
    k = labs.size
    n = t.size
    matrix = np.bincount(idx[:n] * k + idx[n:], minlength=k * k).reshape(k, k)
    tp = np.diag(matrix)
    f1 = []
    for i in range(k):
        fp = int(matrix[:, i].sum()) - int(tp[i])
        fn = int(matrix[i, :].sum()) - int(tp[i])
        f1.append(safe_ratio(2 * int(tp[i]), 2 * int(tp[i]) + fp + fn, empty=1.0))
    return ClassificationScores(
        accuracy=float(tp.sum()) / n,
        macro_f1=float(np.mean(f1)),
        per_class_f1=tuple(f1),
        confusion=tuple(tuple(int(v) for v in row) for row in matrix),
        labels=tuple(labs.tolist()),
    )
