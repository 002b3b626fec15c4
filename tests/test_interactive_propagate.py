"""Propagation through stacks and the slice-to-slice enhancement steps, on synthetic stacks with known objects."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import ndimage as ndi

from fmscope.errors import InvalidInputError
from fmscope.intensity import IntensityProfile
from fmscope.interactive import ObjectPrompt
from fmscope.interactive.enhance import (
    EnhanceConfig,
    enhance,
    fill_gaps,
    filter_tracks,
    find_outliers,
    interpolate_masks,
    match_slices,
    resegment_outliers,
)
from fmscope.interactive.pipeline import propagate
from fmscope.interactive.propagate import (
    ObjectTrack,
    PropagationConfig,
    SliceEmbeddings,
    project_prompt,
    tracks_to_labels,
)
from fmscope.interactive.protocol import PromptMask
from fmscope.interactive.rf_backend import RandomForestPrompter
from fmscope.metrics import dice


class Threshold:
    """A fast stand-in backend: the bright component under the click (or the box centre), clipped to the box."""

    name = "threshold"

    def signature(self) -> dict[str, Any]:
        return {}

    def __init__(self) -> None:
        self.predicted: list[int] = []

    def embed(self, image: np.ndarray, profile: IntensityProfile | None = None) -> Any:
        return np.asarray(image)

    def predict(self, embedding: Any, prompt: ObjectPrompt, mask: np.ndarray | None = None) -> PromptMask:
        bright = embedding > 0.5
        if prompt.box is not None:
            y0, x0, y1, x1 = (round(v) for v in prompt.box)
            inside = np.zeros_like(bright)
            inside[y0:y1, x0:x1] = True
            bright &= inside
        y, x = (round(v) for v in (prompt.positive[0] if prompt.positive else embedding.shape))
        regions, _ = ndi.label(bright)
        self.predicted.append(1)
        out = regions == regions[y, x] if regions[y, x] else np.zeros_like(bright)
        return PromptMask(out, float(out.any()))


def _ball(shape: tuple[int, int, int] = (15, 64, 64), centre: tuple[float, ...] = (7, 32, 32), r: float = 12.0):
    zz, yy, xx = np.ogrid[: shape[0], : shape[1], : shape[2]]
    # anisotropic: slices 2 px apart, so the ball spans about 13 slices
    return (2.0 * (zz - centre[0])) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2 <= r**2


def test_propagation_from_one_slice_follows_a_ball_both_ways_and_stops() -> None:
    truth = _ball()
    backend = Threshold()
    labels, tracks = propagate(backend, truth.astype(np.float32), [ObjectPrompt(3, positive=((7, 32, 32),))])
    assert labels.dtype == np.uint32 and set(np.unique(labels)) == {0, 3}
    assert dice(labels == 3, truth) > 0.99 and not labels[[0, 14]].any()
    # the one-pixel caps (z = 1, 13) overlap their neighbours by IoU < 0.5: propagation stops before them
    assert tracks[0].slices() == list(range(2, 13))
    assert tracks[0].source[7] == "key" and tracks[0].source[3] == "propagated"


def test_propagation_stops_when_the_object_changes_abruptly() -> None:
    volume = np.zeros((6, 40, 40), np.float32)
    volume[:, 10:20, 10:20] = 1.0
    volume[4:] = 0.0
    volume[4:, 13:17, 13:17] = 1.0  # from z=4 the square shrinks to a 4 x 4 one: IoU 0.16 < 0.5
    _, tracks = propagate(Threshold(), volume, [ObjectPrompt(1, positive=((0, 15, 15),))])
    assert tracks[0].slices() == [0, 1, 2, 3]
    _, loose = propagate(
        Threshold(), volume, [ObjectPrompt(1, positive=((0, 15, 15),))], PropagationConfig(stop_iou=0.1)
    )
    assert loose[0].slices() == list(range(6))


def test_two_key_slices_fill_from_both_ends_and_embeddings_are_shared() -> None:
    truth = _ball()
    backend = Threshold()
    embeddings = SliceEmbeddings(backend, truth.astype(np.float32))
    prompts = [ObjectPrompt(1, positive=((3, 32, 32), (11, 32, 32))), ObjectPrompt(2, positive=((7, 32, 32),))]
    labels, tracks = propagate(backend, truth, prompts, embeddings=embeddings)
    assert tracks[0].source[3] == tracks[0].source[11] == "key"
    assert tracks[0].slices() == tracks[1].slices()
    assert embeddings.computed == 13  # slices 1..13 (1 and 13: where propagation stopped), once for both objects
    assert set(np.unique(labels)) == {0, 1}  # object 2 lies under object 1: the earlier track keeps the pixels


def test_projected_prompt_is_an_enlarged_box_around_the_interior_point() -> None:
    mask = np.zeros((50, 50), bool)
    mask[10:30, 20:24] = True
    prompt = project_prompt(5, mask, PropagationConfig(box_expand=0.1, box_margin=3))
    assert prompt.id == 5 and prompt.box == (7.0, 17.0, 33.0, 27.0)
    ((y, x),) = prompt.positive
    assert mask[int(y), int(x)] and 15 <= y <= 24


def test_rf_backend_propagates_through_a_noisy_stack() -> None:
    rng = np.random.default_rng(0)
    truth = _ball((9, 48, 48), centre=(4, 24, 24), r=10.0)
    volume = (1000 + 400 * truth + rng.normal(0, 60, truth.shape)).astype(np.uint16)
    labels, tracks = propagate(RandomForestPrompter(), volume, [ObjectPrompt(1, positive=((4, 24, 24),))])
    assert tracks[0].slices() == list(range(9))
    assert dice(labels == 1, truth) > 0.8  # the clicked superpixel leaks a little into this noise (one-click Dice 0.83)


def test_rf_propagation_from_the_float16_cache_matches_the_uncached_one(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    truth = _ball((9, 48, 48), centre=(4, 24, 24), r=10.0)
    volume = (1000 + 400 * truth + rng.normal(0, 60, truth.shape)).astype(np.uint16)
    prompts = [ObjectPrompt(1, positive=((4, 24, 24),))]
    backend = RandomForestPrompter()
    plain, _ = propagate(backend, volume, prompts)
    runs = []
    for _ in range(2):  # the first run fills the cache, the second reads every slice from it
        embeddings = SliceEmbeddings(backend, volume, cache_dir=tmp_path / "cache", cache_max_bytes=10 * 2**20)
        runs.append(propagate(backend, volume, prompts, embeddings=embeddings)[0])
    assert embeddings.reused == 9 and embeddings.computed == 0
    np.testing.assert_array_equal(runs[0], runs[1])
    assert dice(runs[1] == 1, plain == 1) > 0.99


def test_bad_propagation_input() -> None:
    with pytest.raises(InvalidInputError, match="volume"):
        SliceEmbeddings(Threshold(), np.zeros((8, 8)))
    with pytest.raises(InvalidInputError, match="at least one slice"):
        propagate(Threshold(), np.zeros((2, 8, 8)), [ObjectPrompt(1, text="a cell")])
    with pytest.raises(InvalidInputError, match="distinct"):
        propagate(Threshold(), np.zeros((2, 8, 8)), [ObjectPrompt(1, positive=((0, 1, 1),))] * 2)
    with pytest.raises(InvalidInputError, match="stop_iou"):
        PropagationConfig(stop_iou=1.0)
    with pytest.raises(InvalidInputError, match="window"):
        EnhanceConfig(window=2)


def test_matching_gives_consistent_ids_across_slices() -> None:
    labels = np.zeros((4, 30, 30), np.int32)
    for z in range(4):
        a, b = (1, 2) if z % 2 else (7, 3)  # ids change from slice to slice
        labels[z, 2:10, 2:10] = a
        labels[z, 15:25, 15:25] = b
    labels[3, 2:10, 2:10] = 0  # the first object ends at z = 2
    tracks = match_slices(labels)
    assert [t.slices() for t in tracks] == [[0, 1, 2, 3], [0, 1, 2]]  # ordered by the first slice's ids (3, 7)
    relabelled = tracks_to_labels(tracks, labels.shape)
    assert (relabelled[:, 20, 20] == 1).all() and (relabelled[:3, 5, 5] == 2).all()


def _disk(r: float, shape: tuple[int, int] = (64, 64)) -> np.ndarray:
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    return (yy - 32) ** 2 + (xx - 32) ** 2 <= r**2


def test_signed_distance_interpolation_and_gap_filling() -> None:
    middle = interpolate_masks(_disk(10), _disk(20), 0.5)
    assert abs(middle.sum() - np.pi * 15**2) / (np.pi * 15**2) < 0.05
    track = ObjectTrack(1, {0: _disk(10), 3: _disk(16), 7: _disk(10)})
    assert fill_gaps(track, max_gap=2) == [1, 2]  # the 3-slice gap 4..6 is too long
    assert track.source[1] == "filled" and _disk(11).sum() < track.masks[1].sum() < _disk(15).sum()


def test_outliers_are_found_and_resegmented_from_neighbours() -> None:
    volume = np.stack([_disk(12).astype(np.float32)] * 7)
    volume[3, :, 52:] = 1.0  # slice 3: a bright bar appears beside the disk, and its mask takes it in
    track = ObjectTrack(1, {z: _disk(12) for z in range(7)})
    track.masks[3] = volume[3] > 0.5
    assert find_outliers(track) == [3]
    embeddings = SliceEmbeddings(Threshold(), volume)
    assert resegment_outliers(embeddings, track, [3]) == [3]
    # the neighbours' box cuts the bar away: the re-segmented slice is the disk again
    assert track.source[3] == "resegmented" and dice(track.masks[3], _disk(12)) > 0.95


def test_unfixable_outliers_are_interpolated_and_small_things_filtered() -> None:
    volume = np.stack([_disk(12).astype(np.float32)] * 5)
    volume[2] = 0.0  # nothing to find on slice 2
    track = ObjectTrack(1, {z: _disk(12) for z in range(5)})
    track.masks[2] = _disk(3)
    kept, counts = enhance(SliceEmbeddings(Threshold(), volume), [track, ObjectTrack(2, {0: _disk(1)})])
    assert counts == {"outliers": 1, "filled": 0, "dropped": 1}  # object 2 is below min_area
    assert kept[0].source[2] == "interpolated" and dice(kept[0].masks[2], _disk(12)) > 0.95
    assert filter_tracks([ObjectTrack(3, {0: _disk(12)})], min_slices=2) == []


def test_bridging_skips_a_failed_slice_and_gap_filling_closes_it() -> None:
    volume = np.stack([_disk(10).astype(np.float32)] * 7)
    volume[3] = 0.0  # a blank section in the middle (a damaged slice)
    prompt = ObjectPrompt(1, positive=((0, 32, 32),))
    _, (stopped,) = propagate(Threshold(), volume, [prompt])
    assert stopped.slices() == [0, 1, 2]
    _, (bridged,) = propagate(Threshold(), volume, [prompt], PropagationConfig(bridge=1))
    assert bridged.slices() == [0, 1, 2, 4, 5, 6]
    assert fill_gaps(bridged) == [3] and dice(bridged.masks[3], _disk(10)) > 0.99
    with pytest.raises(InvalidInputError, match="bridge"):
        PropagationConfig(bridge=-1)
