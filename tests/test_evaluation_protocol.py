"""Benchmark splits: held-out test never trained on, folds by source, nested sizes, stratification, reuse."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fmscope.errors import InvalidInputError
from fmscope.evaluation.bench_config import DatatypeConfig, ProtocolConfig
from fmscope.evaluation.protocol import fold_sets, load_or_plan, plan_split
from fmscope.evaluation.units import Unit


def _units(per_source: list[int], classes: list[str | None] | None = None) -> list[Unit]:
    units = []
    for s, n in enumerate(per_source):
        cls = classes[s % len(classes)] if classes else None
        units += [Unit(f"s{s}_u{k}", f"src{s}", cls, f"/x/s{s}_{k}.tif", None, None, None) for k in range(n)]
    return units


def _datatype(task: str = "segment", **kw: object) -> DatatypeConfig:
    return DatatypeConfig(name="d", task=task, folders=("f",), **kw)  # type: ignore[arg-type]


@settings(max_examples=60, deadline=None)
@given(
    per_source=st.lists(st.integers(1, 5), min_size=1, max_size=8),
    folds=st.integers(1, 4),
    test_size=st.integers(1, 6),
    sizes=st.lists(st.integers(1, 8), min_size=1, max_size=3, unique=True),
    split_by=st.sampled_from(["source", "unit"]),
    seed=st.integers(0, 3),
)
def test_splits_never_leak_the_test_set_and_are_nested(
    per_source: list[int], folds: int, test_size: int, sizes: list[int], split_by: str, seed: int
) -> None:
    units = _units(per_source)
    protocol = ProtocolConfig(folds=folds, train_sizes=tuple(sorted(sizes)), test_size=test_size, seed=seed)
    datatype = _datatype(split_by=split_by)
    try:
        split = plan_split(units, datatype, protocol)
    except InvalidInputError as exc:  # only when the test set would take every unit
        assert "protocol.test_size" in str(exc)
        return
    source = {u.id: u.source for u in units}
    pool = [i for part in split.folds for i in part]
    assert set(split.test).isdisjoint(pool) and len(pool) == len(set(pool))
    assert set(split.test) | set(pool) == {u.id for u in units} and split.test
    if split_by == "source" and len(set(source.values())) >= 2:  # whole sources are held out
        test_sources = {source[i] for i in split.test}
        assert all(source[i] not in test_sources for part in split.folds for i in part)
    previous: set[str] | None = None
    for size in protocol.train_sizes:
        for fold in range(folds):
            try:
                train, val = fold_sets(split, fold, size, protocol, {}, "d")
            except InvalidInputError as exc:
                assert "protocol.train_sizes" in str(exc)
                continue
            assert set(train).isdisjoint(split.test) and set(val).isdisjoint(split.test)
            assert len(set(train) | set(val)) == size
            assert (val == train) if size == 1 else set(train).isdisjoint(val)
            if fold == 0 and previous is not None:  # a larger size contains the smaller one's units
                assert previous <= set(train) | set(val)
            if fold == 0:
                previous = set(train) | set(val)
            if split_by == "source" and not split.notes and folds > 1 and size > 1:  # folds by source
                assert {source[i] for i in train}.isdisjoint(source[i] for i in val)


def test_same_seed_same_split_other_seed_other_split() -> None:
    units = _units([3] * 8)
    a = plan_split(units, _datatype(), ProtocolConfig(seed=0))
    assert a == plan_split(units, _datatype(), ProtocolConfig(seed=0))
    assert a != plan_split(units, _datatype(), ProtocolConfig(seed=1))


def test_classification_folds_train_on_every_class() -> None:
    # The light-sheet layout: 2 patches per class, 8 octants each; one patch per class is held out.
    units = _units([8] * 6, ["plaque", "nucleus", "vessels"])
    protocol = ProtocolConfig(folds=3, train_sizes=(6, 15), test_size=24)
    split = plan_split(units, _datatype("classify"), protocol)
    class_of = {u.id: u.class_name for u in units}
    assert sorted(class_of[i] for i in split.test).count("plaque") == 8  # one whole patch per class
    assert any("share source volumes" in n for n in split.notes)  # one training patch per class: folds by unit
    for size in (6, 15):
        for fold in range(3):
            train, val = fold_sets(split, fold, size, protocol, class_of, "d")
            assert {class_of[i] for i in train} == {"plaque", "nucleus", "vessels"}
            assert len(val) == round(0.2 * size)


def test_explicit_test_sources_and_errors() -> None:
    units = _units([4, 4, 4])
    split = plan_split(units, _datatype(test_sources=("src1",)), ProtocolConfig(folds=2, test_size=1))
    assert {i.split("_")[0] for i in split.test} == {"s1"}
    with pytest.raises(InvalidInputError, match="test_sources"):
        plan_split(units, _datatype(test_sources=("nope",)), ProtocolConfig())
    with pytest.raises(InvalidInputError, match="protocol.train_sizes"):
        fold_sets(split, 0, 8, ProtocolConfig(folds=2, train_sizes=(8,)), {}, "d")
    with pytest.raises(InvalidInputError, match="fold"):
        fold_sets(split, 5, 2, ProtocolConfig(folds=2), {}, "d")
    with pytest.raises(InvalidInputError, match="protocol.train_sizes"):
        ProtocolConfig(train_sizes=(5, 2))
    with pytest.raises(InvalidInputError, match="protocol.val_fraction"):
        ProtocolConfig(val_fraction=1.0)


def test_splits_file_is_reused_and_checked(tmp_path: Path) -> None:
    units = {"d": _units([2] * 6)}
    datatypes = [_datatype()]
    first = load_or_plan(tmp_path / "splits.json", units, datatypes, ProtocolConfig(seed=0))
    # a different seed does not replan: the written splits are the ones of the report
    assert load_or_plan(tmp_path / "splits.json", units, datatypes, ProtocolConfig(seed=5)) == first
    with pytest.raises(InvalidInputError, match="splits"):
        load_or_plan(tmp_path / "splits.json", {"d": _units([2] * 7)}, datatypes, ProtocolConfig())
