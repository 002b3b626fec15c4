"""Prompts JSON: parsing, per-slice views, round trip, and the bad inputs the issue names."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fmscope.errors import FileFormatError, InvalidInputError
from fmscope.interactive import ObjectPrompt, load_prompts, parse_prompts, save_prompts

SHAPE = (30, 512, 512)


def test_parse_stack_prompts_and_views() -> None:
    data = {"objects": [
        {"id": 3, "positive": [[12, 200, 310], [14, 201.5, 300]], "negative": [[12, 240, 330]],
         "box": [12, 180, 290, 260, 360], "text": " mitochondrion "},
        {"text": "porous ionomer layer"},
    ]}  # fmt: skip
    first, second = parse_prompts(data, SHAPE)
    assert first.id == 3 and second.id == 2 and first.text == "mitochondrion"
    assert first.slices() == (12, 14) and second.slices() == ()
    on12 = first.on_slice(12)
    assert on12.positive == ((200.0, 310.0),) and on12.negative == ((240.0, 330.0),)
    assert on12.box == (180.0, 290.0, 260.0, 360.0)
    assert first.on_slice(14).box is None and first.on_slice(14).positive == ((201.5, 300.0),)
    assert parse_prompts([{"id": 1, "box": [0, 0, 512, 512]}], SHAPE[1:])[0].box == (0.0, 0.0, 512.0, 512.0)


COORDINATE = (st.integers(0, 29), st.floats(0, 511, allow_nan=False), st.floats(0, 511, allow_nan=False))


@settings(max_examples=40, deadline=None)
@given(points=st.lists(st.tuples(*COORDINATE), min_size=1, max_size=4), text=st.none() | st.just("a layer"))
def test_save_load_round_trip(tmp_path_factory: pytest.TempPathFactory, points: list[Any], text: str | None) -> None:
    prompts = [ObjectPrompt(1, tuple(tuple(float(c) for c in p) for p in points), (), None, text)]
    path = save_prompts(tmp_path_factory.mktemp("p") / "prompts.json", prompts)
    assert load_prompts(path, SHAPE) == prompts


@pytest.mark.parametrize(
    ("objects", "match"),
    [
        ([{"positive": [[12, 600, 10]]}], r"objects\[0\].positive\[0\]: point .* outside the image"),
        ([{"positive": [[-1, 10, 10]]}], "outside the image"),
        ([{"positive": [[10, 10]]}], r"\(z, y, x\) coordinates"),
        ([{"box": [3, 10, 10, 10, 50]}], r"objects\[0\].box: box .* zero area"),
        ([{"box": [3, 10, 10, 600, 50]}], "reaches outside"),
        ([{"box": [31, 10, 10, 20, 50]}], "outside the stack"),
        ([{"negative": [[3, 10, 10]]}], "needs a positive point, a positive stroke, a box or a text"),
        ([{"strokes": [{"points": [[3, 10, 10]], "positive": False}]}], "needs a positive point, a positive stroke"),
        ([{"strokes": [{"points": [[3, 10, 10], [4, 10, 20]]}]}], r"strokes\[0\]: a stroke lies on one slice"),
        ([{"strokes": [{"points": [[3, 10, 10]], "width": 0}]}], r"strokes\[0\].width"),
        ([{"strokes": [{"points": [[3, 10, 10]], "width": 300}]}], r"width in \(0, 256\]"),
        ([{"strokes": [{"points": [[3, 10, 600]]}]}], r"strokes\[0\].points\[0\]: point .* outside"),
        ([{"strokes": [{"points": []}]}], r"strokes\[0\].points: expected a non-empty list"),
        ([{"strokes": [{"points": [[3, 1, 1]], "positive": 1}]}], r"positive: expected true or false"),
        ([{"strokes": [{"points": [[3, 1, 1]], "colour": 1}]}], r"strokes\[0\]: unknown key"),
        ([{"strokes": {"points": [[3, 1, 1]]}}], r"strokes: expected a list"),
        ([{"id": 1, "text": "a"}, {"id": 1, "text": "b"}], "distinct"),
        ([{"id": 0, "text": "a"}], r"objects\[0\].id"),
        ([{"text": "  "}], "text"),
        ([{"positive": [[1, float("nan"), 2]]}], "finite"),
        ([{"points": [[1, 2, 3]]}], "unknown key"),
        ([], "non-empty list"),
    ],
)
def test_bad_prompts_name_the_problem(objects: list[Any], match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        parse_prompts({"objects": objects}, SHAPE)


def test_strokes_round_trip_and_lie_on_their_slice(tmp_path: Path) -> None:
    data = {"objects": [{"id": 2, "strokes": [
        {"points": [[3, 10, 10], [3, 10, 40]], "width": 5, "positive": True},
        {"points": [[7, 20, 20]], "width": 2, "positive": False},
    ]}]}  # fmt: skip
    (prompt,) = parse_prompts(data, SHAPE)
    assert prompt.slices() == (3, 7) and prompt.has_positive
    flat = prompt.on_slice(3)
    assert [s.points for s in flat.strokes] == [((10.0, 10.0), (10.0, 40.0))] and prompt.on_slice(5).strokes == ()
    assert not prompt.on_slice(7).has_positive
    path = save_prompts(tmp_path / "p.json", [prompt])
    assert load_prompts(path, SHAPE) == [prompt]


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(FileFormatError, match="does not exist"):
        load_prompts(tmp_path / "none.json", SHAPE)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(FileFormatError, match="not valid JSON"):
        load_prompts(tmp_path / "bad.json", SHAPE)
    (tmp_path / "ok.json").write_text(json.dumps([{"positive": [[5, 5]]}]))
    with pytest.raises(InvalidInputError, match=r"\(z, y, x\)"):
        load_prompts(tmp_path / "ok.json", SHAPE)
    with pytest.raises(InvalidInputError, match="shape"):
        parse_prompts([{"text": "a"}], (4,))
