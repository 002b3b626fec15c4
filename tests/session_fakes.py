"""A deterministic promptable backend and a small stack for session tests (shared by the session test files)."""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import strategies as st
from skimage.draw import disk

from fmscope.interactive.prompts import ObjectPrompt
from fmscope.interactive.protocol import PromptMask
from fmscope.interactive.session import Session

SHAPE = (4, 96, 96)
CENTRES = ((30, 30), (30, 66), (68, 48))  # (y, x) of the disks, radius 10 on every slice


def balls() -> tuple[np.ndarray, np.ndarray]:
    """(11, 64, 64) uint16: two bright balls (ids 1, 2) spanning slices 1..9 and 3..7, and their labels."""
    rng = np.random.default_rng(3)
    zz, yy, xx = np.ogrid[:11, :64, :64]
    labels = np.zeros((11, 64, 64), np.uint8)
    labels[(2.2 * (zz - 5)) ** 2 + (yy - 20) ** 2 + (xx - 20) ** 2 <= 12**2] = 1
    labels[(4.0 * (zz - 5)) ** 2 + (yy - 44) ** 2 + (xx - 42) ** 2 <= 10**2] = 2
    image = (1000 + 700 * (labels > 0) + rng.normal(0, 60, labels.shape)).astype(np.uint16)
    return image, labels


def make_stack(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = rng.normal(1000.0, 40.0, SHAPE)
    truth = np.zeros(SHAPE, np.uint32)
    for k, centre in enumerate(CENTRES, start=1):
        rr, cc = disk(centre, 10, shape=SHAPE[1:])
        image[:, rr, cc] += 800.0
        truth[:, rr, cc] = k
    return image.astype(np.uint16), truth


class ThresholdBackend:
    """Deterministic fake: bright pixels within 16 px of a positive click (or inside the box), minus 4 px around
    negative clicks. Counts embed calls."""

    name = "threshold"

    def signature(self) -> dict[str, Any]:
        return {}

    def __init__(self) -> None:
        self.embedded: list[int] = []

    def embed(self, image: np.ndarray, profile: Any = None) -> np.ndarray:
        self.embedded.append(int(np.asarray(image).sum()) % 997)
        arr = np.asarray(image, np.float64)
        return arr > (arr.min() + arr.max()) / 2

    def predict(self, embedding: np.ndarray, prompt: ObjectPrompt, mask: Any = None) -> PromptMask:
        yy, xx = np.ogrid[: embedding.shape[0], : embedding.shape[1]]
        near = np.zeros(embedding.shape, bool)
        for y, x in prompt.positive:
            near |= (yy - y) ** 2 + (xx - x) ** 2 <= 16**2
        if prompt.box is not None:
            y0, x0, y1, x1 = prompt.box
            near |= (yy >= y0) & (yy < y1) & (xx >= x0) & (xx < x1)
        for y, x in prompt.negative:
            near &= (yy - y) ** 2 + (xx - x) ** 2 > 4**2
        out = near & embedding
        return PromptMask(out, float(out.any()))


def state_of(s: Session) -> tuple[bytes, dict[int, ObjectPrompt], frozenset[int], tuple[int, ...]]:
    return s.labels.tobytes(), s.prompts, s.accepted, s.object_ids


OPS = st.lists(
    st.tuples(
        st.sampled_from(["new", "add", "add", "neg", "remove", "box", "nobox", "mask", "delete", "accept", "prompt"]),
        st.integers(0, 3),  # object index among current ids
        st.integers(0, SHAPE[0] - 1),
        st.integers(0, SHAPE[1] - 1),
        st.integers(0, SHAPE[2] - 1),
    ),
    min_size=6,
    max_size=20,
).map(lambda ops: [("new", 0, 0, 0, 0), ("new", 0, 0, 0, 0), *ops])


def apply_op(s: Session, op: str, k: int, z: int, y: int, x: int) -> None:
    ids = s.object_ids
    oid = ids[k % len(ids)] if ids else 1
    if op == "new":
        s.new_object()
    elif op in ("add", "neg"):
        if op == "add" and x % 2 == 0:  # half of the clicks on a disk
            y, x = CENTRES[y % len(CENTRES)]
        s.add_point(oid, z, y, x, positive=op == "add")
    elif op == "remove":
        s.remove_point(oid, z, y, x)
    elif op == "box":
        s.set_box(oid, z, (y % 50, x % 50, y % 50 + 40, x % 50 + 46))
    elif op == "nobox":
        s.set_box(oid, z, None)
    elif op == "mask":
        m = np.zeros(SHAPE[1:], bool)
        m[y // 2 : y // 2 + 30, x // 2 : x // 2 + 30] = True
        s.set_mask(oid, z, m, replace_others=bool(k % 2))
    elif op == "delete":
        s.delete_object(oid)
    elif op == "accept":
        s.accept(None if k % 2 else oid)
    else:
        s.set_prompt(ObjectPrompt(oid, positive=((z, y, x),), negative=((z, 95 - y, 95 - x),)))
