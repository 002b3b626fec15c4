"""Semantic (phase) segmentation with the forest backends: every phase learnt at once, ilastik style.

Zenesis' targets are phases and layers (a porous ionomer layer, a support, pores), not countable objects. In
semantic mode the prompts of every phase label pixels of their class: a positive click labels a disk (and its
superpixel), a stroke every pixel it covers, a box the centre of the box (its surrounding band is "other"), and
negative prompts label "other" (class 0). One forest is fitted on the labelled pixels of all phases and all prompted
slices and gives the class of every pixel of a slice; nothing is restricted to the regions under the clicks, since a
phase is wherever it occurs. Before anything is labelled "other" and only one phase is known, the pixels least like
that phase count as "other", so a single stroke already gives a guess.

:func:`phase_labels`, :func:`fit_phases` and :func:`predict_phases` are the forest backends'
:class:`~fmscope.interactive.protocol.SupportsPhases` methods; :func:`fit_session_phases` and :func:`phase_plane`
apply them to a :class:`~fmscope.interactive.session.Session`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from fmscope.errors import InvalidInputError
from fmscope.interactive import raster
from fmscope.interactive.prompts import ObjectPrompt
from fmscope.interactive.protocol import SupportsPhases
from fmscope.interactive.superpixels import label_superpixels
from fmscope.segment.pixel_classifier import PixelClassifier, PixelClassifierConfig

if TYPE_CHECKING:
    from fmscope.interactive.rf_backend import RandomForestPrompter, SliceEmbedding
    from fmscope.interactive.session import Session

logger = logging.getLogger(__name__)

# a smaller forest than for one object: it classifies whole slices at every edit
PHASE_FOREST = PixelClassifierConfig(forest="extra", n_estimators=24, max_depth=16, max_samples_per_class=4000)


def phase_labels(
    backend: RandomForestPrompter, embedding: SliceEmbedding, prompts: Sequence[ObjectPrompt], classes: Sequence[int]
) -> NDArray[np.int64]:
    """Pixel labels of one slice from the 2D prompts of each phase: ``classes[k]`` (>= 1) where ``prompts[k]``
    marks its phase, 0 ("other") where a negative prompt or a box's band is, -1 unlabelled."""
    if len(prompts) != len(classes) or any(c < 1 for c in classes):
        raise InvalidInputError(f"classes: expected one class >= 1 per prompt, got {list(classes)}")
    shape = embedding.shape
    labels = np.full(shape, -1, np.int64)
    m = backend.box_margin
    for prompt, c in zip(prompts, classes, strict=True):
        if prompt.box is not None:
            y0, x0, y1, x1 = prompt.box
            inner = raster.clip_window(y0, x0, y1, x1, shape)
            kept = labels[inner].copy()
            labels[raster.clip_window(y0 - m, x0 - m, y1 + m, x1 + m, shape)] = 0
            labels[inner] = kept
            win, centre = raster.disk((y0 + y1 - 1) / 2, (x0 + x1 - 1) / 2, max(1.0, min(y1 - y0, x1 - x0) / 4), shape)
            labels[win][centre] = c
        one = ObjectPrompt(prompt.id, prompt.positive, prompt.negative)
        if embedding.superpixels is not None:
            part = np.full(shape, -1, np.int64)
            label_superpixels(part, one, embedding, backend.max_superpixel, backend.point_radius)
            labels[part == 1], labels[part == 0] = c, 0
        for stroke in sorted(prompt.strokes, key=lambda s: s.positive):
            win, pixels = raster.stroke_pixels(stroke, shape)
            labels[win][pixels] = c if stroke.positive else 0
        for points, value in ((prompt.negative, 0), (prompt.positive, c)):
            for y, x in points:
                win, pixels = raster.disk(y, x, backend.point_radius, shape)
                labels[win][pixels] = value
    present = set(np.unique(labels[labels >= 0]).tolist())
    if len(present) == 1 and 0 not in present:  # one phase and no "other" yet
        _unlike(labels, embedding.features)
    return labels


UNLIKE_FRACTION = 0.3  # of the unlabelled pixels sampled: the least like the one labelled phase become "other"
UNLIKE_SAMPLES = 20000


def _unlike(labels: NDArray[np.int64], features: NDArray[np.float32]) -> None:
    """Label as "other" (0) the unlabelled pixels least like the labelled ones: of up to :data:`UNLIKE_SAMPLES`
    unlabelled pixels (seeded), the :data:`UNLIKE_FRACTION` farthest from the labelled pixels' mean feature vector
    (each feature scaled by its spread over the slice). A phase that touches the border, or fills most of the slice,
    is not taught as "other" the way a border band would teach it."""
    flat = features.reshape(-1, features.shape[-1])
    free = np.flatnonzero(labels.ravel() < 0)
    if free.size == 0:
        return
    rng = np.random.default_rng(0)
    sample = free if free.size <= UNLIKE_SAMPLES else rng.choice(free, UNLIKE_SAMPLES, replace=False)
    scale = flat[sample].std(axis=0) + 1e-6
    centre = flat[np.flatnonzero(labels.ravel() >= 0)].mean(axis=0)
    distance = np.linalg.norm((flat[sample] - centre) / scale, axis=1)
    far = sample[distance >= np.quantile(distance, 1.0 - UNLIKE_FRACTION)]
    labels.ravel()[far] = 0


def fit_phases(
    backend: RandomForestPrompter, samples: Sequence[tuple[SliceEmbedding, NDArray[np.integer]]]
) -> PixelClassifier:
    """One forest on the labelled pixels of every ``(embedding, labels)`` pair (labels from :func:`phase_labels`)."""
    if not samples:
        raise InvalidInputError("samples: expected at least one labelled slice")
    labelled = [(e, lab) for e, lab in samples if (np.asarray(lab) >= 0).any()]
    present = set()
    for _, lab in labelled:
        present |= set(np.unique(lab[lab >= 0]).tolist())
    if len(present) < 2:
        raise InvalidInputError(
            "prompts: semantic mode needs two kinds of labelled pixels: prompt a second phase, or mark what is not "
            "this phase with a negative click or stroke"
        )
    config = replace(PHASE_FOREST, seed=backend.config.seed)
    return PixelClassifier(config).fit_features([e.features for e, _ in labelled], [lab for _, lab in labelled])


def predict_phases(model: PixelClassifier, embedding: SliceEmbedding) -> NDArray[np.int64]:
    """The class of every pixel of a slice (the most probable one)."""
    proba = model.predict_proba_features(embedding.features)
    return np.argmax(proba, axis=0).astype(np.int64)


def _phase_backend(session: Session) -> SupportsPhases:
    backend = session.backend
    if not isinstance(backend, SupportsPhases):
        raise InvalidInputError(f"mode: the {backend.name} backend does not learn phases (rf and fm do)")
    return backend


def fit_session_phases(session: Session, phases: Mapping[int, ObjectPrompt]) -> tuple[Any, list[int]]:
    """The phase model of a session from the prompts of its phases on every prompted slice, and the phase ids in
    class order (class k + 1 is ``ids[k]``)."""
    backend = _phase_backend(session)
    ids = sorted(phases)
    slices = sorted({z for p in phases.values() for z in p.slices()})
    if not slices:
        raise InvalidInputError("prompts: no phase has a prompt on any slice yet")
    samples = []
    for z in slices:
        on = [phases[oid].on_slice(z) for oid in ids]
        embedding = session.embedding(z)
        samples.append((embedding, backend.phase_labels(embedding, on, [k + 1 for k in range(len(ids))])))
    return backend.fit_phases(samples), ids


def phase_plane(
    session: Session, model: Any, ids: Sequence[int], z: int, old: NDArray[np.uint32], keep: Mapping[int, int]
) -> NDArray[np.uint32]:
    """Slice ``z`` with its phase ids from the model; pixels of the objects in ``keep`` (children) stay as in
    ``old``."""
    backend = _phase_backend(session)
    classes = np.asarray(backend.predict_phases(model, session.embedding(z)))
    lut = np.array([0, *ids], np.uint32)
    new = lut[np.clip(classes, 0, len(ids))]
    fixed = np.isin(old, list(keep))
    return np.where(fixed, old, new).astype(np.uint32)
