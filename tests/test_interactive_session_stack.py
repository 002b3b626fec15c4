"""A session through its stack: propagation (the CLI's function), accepted slices, interpolation, per-slice stats,
edits made during a propagation, objects inside objects, strokes and painting, phases, ground-truth scores."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from skimage.draw import disk

from fmscope.errors import InvalidInputError
from fmscope.interactive import ObjectPrompt, StackConfig, segment_prompted
from fmscope.interactive.enhance import EnhanceConfig
from fmscope.interactive.rf_backend import RandomForestPrompter
from fmscope.interactive.session import Session
from fmscope.interactive.session_stack import compare_session, slice_stats
from fmscope.metrics import dice
from session_fakes import balls as make_balls


@pytest.fixture(scope="module")
def balls() -> tuple[np.ndarray, np.ndarray]:
    return make_balls()


def test_session_propagation_equals_segment_prompted(balls: tuple[np.ndarray, np.ndarray]) -> None:
    """Clicks made one at a time in a session, then propagated, give the labels of ``fmscope segment --propagate``
    with the same prompts: one library function behind both."""
    image, truth = balls
    prompts = [ObjectPrompt(1, positive=((5.0, 20.0, 20.0),)), ObjectPrompt(2, positive=((5.0, 44.0, 42.0),))]
    for enhancement in (None, EnhanceConfig()):
        cli = segment_prompted(RandomForestPrompter(), image, prompts, stack=StackConfig(True, enhancement=enhancement))
        s = Session(image, RandomForestPrompter())
        for p in prompts:
            s.new_object(p.id)
            s.add_point(p.id, 5, *p.positive[0][1:])
        done = s.propagate(enhancement=enhancement)
        np.testing.assert_array_equal(s.label_image(), cli.labels)
        assert done["objects"] == [1, 2] and 5 not in done["slices"]
        assert dice(s.labels == 1, truth == 1) > 0.8 and dice(s.labels == 2, truth == 2) > 0.8
        assert s.undo() and s.labelled_slices() == [5]  # one step


def test_accepted_slices_are_kept_and_start_propagation(balls: tuple[np.ndarray, np.ndarray]) -> None:
    image, truth = balls
    s = Session(image, RandomForestPrompter())
    oid = s.new_object()
    painted = truth[2] == 1
    s.set_mask(oid, 2, painted)  # a mask drawn by hand, no prompt on that slice
    s.accept_slice(oid, 2)
    s.add_point(oid, 7, 20.0, 20.0)
    s.propagate(z_range=(0, 8))
    assert np.array_equal(s.mask(oid, 2), painted)  # kept as drawn
    assert all(s.mask(oid, z).any() for z in range(2, 8))  # filled between the two key slices
    assert not s.mask(oid, 9).any() and not s.mask(oid, 10).any()  # outside the z range
    with pytest.raises(InvalidInputError, match="z_range"):
        s.propagate(z_range=(3, 11))
    with pytest.raises(InvalidInputError, match="no object has a key slice"):
        s.propagate([s.new_object()])


def test_edits_made_during_a_propagation_win(balls: tuple[np.ndarray, np.ndarray]) -> None:
    """The propagation runs without the session's lock; a slice painted meanwhile is left as painted."""
    image, _ = balls
    s = Session(image, RandomForestPrompter())
    oid = s.new_object()
    s.add_point(oid, 5, 20.0, 20.0)
    started, release = threading.Event(), threading.Event()
    painted = np.zeros(image.shape[1:], bool)
    painted[10:15, 10:15] = True

    def slow_progress(done: int, total: int | None, message: str = "") -> None:
        started.set()
        release.wait(10)

    worker = threading.Thread(target=lambda: s.propagate(progress=slow_progress))
    worker.start()
    assert started.wait(30)
    s.set_mask(oid, 3, painted)  # while the propagation is under way
    release.set()
    worker.join(60)
    assert np.array_equal(s.mask(oid, 3), painted) and s.mask(oid, 4).any()


def test_interpolation_and_slice_stats(balls: tuple[np.ndarray, np.ndarray]) -> None:
    image, truth = balls
    s = Session(image, RandomForestPrompter())
    oid = s.new_object()
    for z in (2, 8):
        s.set_mask(oid, z, truth[z] == 1)
        s.accept_slice(oid, z)
    filled = s.interpolate(oid, 2, 8)
    assert filled == [3, 4, 5, 6, 7]
    areas = [int(s.mask(oid, z).sum()) for z in range(2, 9)]
    assert areas[0] == areas[-1] and all(a > 0 for a in areas)
    s.set_mask(oid, 5, np.ones(image.shape[1:], bool))  # an outlier slice
    rows = slice_stats(s, oid)
    assert [r["z"] for r in rows] == list(range(2, 9))
    assert [r["z"] for r in rows if r["outlier"]] == [5] and rows[0]["accepted"] and rows[0]["key"]
    with pytest.raises(InvalidInputError, match="no slice between"):
        s.interpolate(oid, 2, 3)
    with pytest.raises(InvalidInputError, match="no mask on slice 0"):
        s.interpolate(oid, 0, 5)


def test_segment_inside_keeps_the_child_in_its_parent() -> None:
    image = np.full((1, 80, 80), 100, np.uint16)
    rr, cc = disk((40, 40), 30, shape=(80, 80))
    image[0, rr, cc] = 800
    rr, cc = disk((40, 40), 8, shape=(80, 80))
    image[0, rr, cc] = 2000  # a bright core inside the phase
    s = Session(image, RandomForestPrompter(split_touching=False))
    phase = s.new_object()
    s.add_point(phase, 0, 20.0, 40.0)
    region = s.mask(phase, 0).copy()
    core = s.new_object(parent=phase)
    s.add_point(core, 0, 40.0, 40.0)
    child = s.mask(core, 0)
    assert child.any() and not (child & ~region).any()  # inside the parent only
    assert np.array_equal(s.mask(phase, 0) | child, region)  # the parent gave up exactly those pixels
    s.delete_object(core)
    assert np.array_equal(s.mask(phase, 0), region)  # and gets them back
    assert s.parents == {}


def test_strokes_paint_and_erase() -> None:
    image = np.full((64, 64), 100, np.uint16)
    image[16:48, 16:48] = 900
    s = Session(image, RandomForestPrompter())
    oid = s.new_object()
    s.add_stroke(oid, 0, [(30, 20), (30, 44)], width=3)
    assert dice(s.mask(oid, 0), image > 500) > 0.9
    s.paint(oid, 0, [(5, 5), (5, 30)], width=3)
    assert s.mask(oid, 0)[5, 5:31].all()
    s.paint(oid, 0, [(32, 16), (32, 47)], width=5, erase=True)
    assert not s.mask(oid, 0)[30:35, 16:48].any() and s.mask(oid, 0)[20, 20]
    assert [h["action"] for h in s.history()[0]] == ["new_object", "add_stroke", "paint", "erase"]
    with pytest.raises(InvalidInputError, match=r"strokes\[0\].points\[0\]: point"):
        s.paint(oid, 0, [(70, 5)])


def test_semantic_mode_learns_every_phase_at_once() -> None:
    """Three intensity phases; one stroke in each: every pixel gets a phase, far from the strokes too, and
    propagation predicts the other slices with the same forest."""
    rng = np.random.default_rng(0)
    truth = np.zeros((3, 64, 96), np.uint8)
    truth[:, :, 32:64], truth[:, :, 64:] = 1, 2
    image = (np.array([200, 900, 1600])[truth] + rng.normal(0, 60, truth.shape)).astype(np.uint16)
    s = Session(image, RandomForestPrompter(split_touching=False), mode="semantic")
    ids = [s.new_object() for _ in range(3)]
    for oid, x in zip(ids, (10, 45, 80), strict=True):
        s.add_stroke(oid, 1, [(10, x), (50, x)], width=3)
    plane = s.plane(1)
    expected = np.array(ids, np.uint32)[truth[1]]
    assert (plane == expected).mean() > 0.97
    done = s.propagate()
    assert done["slices"] == [0, 2] and all((s.plane(z) == expected).mean() > 0.97 for z in (0, 2))
    two = (np.where(truth == 2, 1600, 200) + rng.normal(0, 60, truth.shape)).astype(np.uint16)
    single = Session(two, RandomForestPrompter(split_touching=False), mode="semantic")
    bright = single.new_object()
    single.add_stroke(bright, 0, [(10, 80), (50, 80)])  # one phase only, touching the border: "other" is what is
    first = dice(single.mask(bright, 0), truth[0] == 2)  # least like it, a guess
    single.add_stroke(bright, 0, [(10, 15), (50, 15)], positive=False)  # then what is not the phase
    assert first > 0.75 and dice(single.mask(bright, 0), truth[0] == 2) > 0.97


def test_compare_with_ground_truth(balls: tuple[np.ndarray, np.ndarray]) -> None:
    image, truth = balls
    s = Session(image, RandomForestPrompter())
    oid = s.new_object()
    for z in range(11):
        s.set_mask(oid, z, truth[z] == 1)
    scores = compare_session(s, truth, truth_values=[1])
    assert scores["dice"] == 1.0 and all(r["dice"] == 1.0 for r in scores["slices"])
    assert [r["z"] for r in scores["slices"]] == [z for z in range(11) if (truth[z] == 1).any()]
    assert compare_session(s, truth)["dice"] < 1.0  # both balls as truth
    with pytest.raises(InvalidInputError, match="truth: expected the image's shape"):
        compare_session(s, truth[:5])
