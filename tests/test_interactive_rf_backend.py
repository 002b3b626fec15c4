"""The weight-free promptable backend: clicks and boxes on synthetic disks, feature caching, bad prompts."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from skimage.draw import disk

from fmscope.errors import InvalidInputError
from fmscope.interactive import ObjectPrompt, rf_backend
from fmscope.interactive.prompts import Stroke
from fmscope.interactive.rf_backend import RandomForestPrompter
from fmscope.metrics import dice

CENTRES = ((30, 30), (30, 90), (90, 60))


def _image(seed: int = 0, dtype: type = np.uint16) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = rng.normal(1000.0, 60.0, (128, 128))
    objects = np.zeros(image.shape, np.int32)
    for k, centre in enumerate(CENTRES, start=1):
        rr, cc = disk(centre, 12, shape=image.shape)
        image[rr, cc] += 600.0
        objects[rr, cc] = k
    return image.astype(dtype), objects


def test_one_click_segments_that_object_only() -> None:
    image, objects = _image()
    prompter = RandomForestPrompter()
    embedding = prompter.embed(image)
    result = prompter.predict(embedding, ObjectPrompt(1, positive=((30.0, 90.0),)))
    assert dice(result.mask, objects == 2) > 0.85  # the clicked disk, not its twins
    assert not (result.mask & (objects == 1)).any() and 0.5 < result.score <= 1.0


def test_box_and_negative_points() -> None:
    image, objects = _image(seed=1, dtype=np.float32)
    prompter = RandomForestPrompter()
    embedding = prompter.embed(image)
    boxed = prompter.predict(embedding, ObjectPrompt(1, box=(70.0, 40.0, 110.0, 80.0)))
    assert dice(boxed.mask, objects == 3) > 0.85
    clicked = prompter.predict(embedding, ObjectPrompt(2, positive=((90.0, 60.0),), negative=((60.0, 100.0),)))
    assert dice(clicked.mask, objects == 3) > 0.85


def test_features_are_computed_once_per_slice(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = rf_backend.pixel_features
    monkeypatch.setattr(rf_backend, "pixel_features", lambda *a, **k: calls.append(1) or real(*a, **k))
    prompter = RandomForestPrompter()
    embedding = prompter.embed(_image()[0])
    for centre in CENTRES:
        prompter.predict(embedding, ObjectPrompt(1, positive=(tuple(float(c) for c in centre),)))
    assert len(calls) == 1


def test_a_stroke_labels_the_pixels_it_covers() -> None:
    image, objects = _image(seed=2)
    prompter = RandomForestPrompter()
    embedding = prompter.embed(image)
    across = Stroke(((90.0, 52.0), (90.0, 68.0)), width=3.0)  # a short line inside disk 3
    result = prompter.predict(embedding, ObjectPrompt(1, strokes=(across,)))
    assert dice(result.mask, objects == 3) > 0.85
    outside = Stroke(((30.0, 15.0), (60.0, 15.0)), width=3.0, positive=False)  # "not this" left of disk 1
    both = prompter.predict(embedding, ObjectPrompt(1, positive=((30.0, 30.0),), strokes=(outside,)))
    assert dice(both.mask, objects == 1) > 0.85


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(0, 10_000), st.sampled_from([0, 1, 2]), st.booleans())
def test_classifying_a_window_gives_the_whole_slice_result(seed: int, k: int, negative: bool) -> None:
    """The window around the clicks grows until the object no longer reaches its edge: the same mask as classifying
    the whole slice, also for an object much larger than the first window."""
    rng = np.random.default_rng(seed)
    image = rng.normal(1000.0, 60.0, (200, 200))
    yy, xx = np.ogrid[:200, :200]
    big = (yy - 100) ** 2 + (xx - 100) ** 2 <= 70**2  # 140 px wide: far beyond the first window
    image[big] += 500.0
    small = [(30, 30), (170, 170), (100, 100)]
    for y, x in small[:2]:
        image[(yy - y) ** 2 + (xx - x) ** 2 <= 8**2] += 500.0
    y, x = small[k]
    prompt = ObjectPrompt(1, positive=((float(y + rng.integers(-2, 3)), float(x + rng.integers(-2, 3))),),
                          negative=((5.0, 100.0),) if negative else ())  # fmt: skip
    windowed = RandomForestPrompter()
    whole = RandomForestPrompter()
    whole.search_margin = 10_000  # the first window is the whole slice
    embedding = windowed.embed(image.astype(np.uint16))
    a, b = windowed.predict(embedding, prompt), whole.predict(embedding, prompt)
    np.testing.assert_array_equal(a.mask, b.mask)
    assert a.score == pytest.approx(b.score)
    if k == 2:
        assert dice(a.mask, big) > 0.9


def test_bad_prompts_and_inputs() -> None:
    prompter = RandomForestPrompter()
    embedding = prompter.embed(_image()[0])
    with pytest.raises(InvalidInputError, match="grounding model"):
        prompter.predict(embedding, ObjectPrompt(1, text="a disk"))
    with pytest.raises(InvalidInputError, match="positive point, a positive stroke, a box or a mask"):
        prompter.predict(embedding, ObjectPrompt(1, negative=((5.0, 5.0),)))
    with pytest.raises(InvalidInputError, match="2D slices"):
        prompter.embed(np.zeros((4, 32, 32)))
    with pytest.raises(InvalidInputError, match="point_radius"):
        RandomForestPrompter(point_radius=0)
