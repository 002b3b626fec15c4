"""A session kept on disk at every change: reopening restores state and history, a kill loses at most one change."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fmscope.errors import FileFormatError, InvalidInputError
from fmscope.interactive import session_core
from fmscope.interactive.session import Session
from fmscope.interactive.session_store import SessionStore
from session_fakes import CENTRES, OPS, SHAPE, ThresholdBackend, apply_op, make_stack, state_of


def _chain(s: Session) -> tuple[list[object], list[object]]:
    return s.history()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS, undos=st.integers(0, 6), limit=st.sampled_from([None, 3]))
def test_reopened_session_equals_the_live_one(
    tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[str, int, int, int, int]], undos: int, limit: int | None
) -> None:
    """Random edits, some undos, then a fresh process would reopen the folder: same labels, prompts, accepted ids,
    and the same undo and redo lists (undoing both sides step by step stays equal)."""
    image, _ = make_stack()
    folder = tmp_path_factory.mktemp("s") / "session"
    live = Session(image, ThresholdBackend(), folder=folder, history_limit=limit)
    for op in ops:
        with contextlib.suppress(InvalidInputError):
            apply_op(live, op[0], *op[1:])
    for _ in range(undos):
        live.undo()
    back = Session.open(folder, image, ThresholdBackend(), history_limit=limit)
    assert state_of(back) == state_of(live) and _chain(back) == _chain(live) and back.revision == live.revision
    while live.can_undo:
        assert back.undo() and live.undo() and state_of(back) == state_of(live)
    assert not back.can_undo
    while live.can_redo:
        assert back.redo() and live.redo() and state_of(back) == state_of(live)
    again = Session.open(folder, image, ThresholdBackend())  # the undos and redos above were written too
    assert state_of(again) == state_of(live)


def test_a_kill_between_the_step_and_the_state_loses_only_that_edit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image, _ = make_stack()
    s = Session(image, ThresholdBackend(), folder=tmp_path / "s")
    oid = s.new_object()
    s.add_point(oid, 1, *CENTRES[0])
    saved = state_of(s)
    real = SessionStore._write_state

    def killed(self: SessionStore, state: object = None) -> None:
        if getattr(state, "head", None) == 3:
            raise KeyboardInterrupt("killed")  # the step file is on disk, the state not yet
        real(self, state)  # type: ignore[arg-type]

    monkeypatch.setattr(SessionStore, "_write_state", killed)
    with pytest.raises(KeyboardInterrupt):
        s.add_point(oid, 2, *CENTRES[1])
    monkeypatch.setattr(SessionStore, "_write_state", real)
    assert state_of(s) == saved  # the live session did not take the edit either, and goes on
    s.add_point(oid, 2, *CENTRES[1])
    assert state_of(Session.open(tmp_path / "s", image, ThresholdBackend())) == state_of(s)
    s.undo()
    back = Session.open(tmp_path / "s", image, ThresholdBackend())
    assert state_of(back) == saved and len(back.history()[0]) == 2 and len(back.history()[1]) == 1
    back.add_point(oid, 3, *CENTRES[2])  # the stray step file is replaced, the journal goes on
    assert len(Session.open(tmp_path / "s", image, ThresholdBackend()).history()[0]) == 3


def test_a_new_edit_after_undo_never_mixes_two_futures(tmp_path: Path) -> None:
    image, _ = make_stack()
    s = Session(image, ThresholdBackend(), folder=tmp_path / "s")
    oid = s.new_object()
    for z in range(3):
        s.add_point(oid, z, *CENTRES[0])
    s.undo()
    s.undo()
    s.add_point(oid, 3, *CENTRES[1])
    state = json.loads((tmp_path / "s" / "state.json").read_text())
    assert state["head"] == state["count"] == 3 and len(list((tmp_path / "s" / "steps").iterdir())) == 3
    back = Session.open(tmp_path / "s", image, ThresholdBackend())
    assert state_of(back) == state_of(s) and not back.can_redo


def test_snapshots_bound_the_replay(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(session_core, "SNAPSHOT_EVERY", 4)
    image, _ = make_stack()
    s = Session(image, ThresholdBackend(), folder=tmp_path / "s")
    oid = s.new_object()
    for k in range(9):
        s.add_point(oid, k % SHAPE[0], *CENTRES[k % 3])
    snapshot = np.load(tmp_path / "s" / "snapshot.npz")
    assert json.loads(str(snapshot["meta"]))["at"] == 8
    for _ in range(7):
        s.undo()  # back past the snapshot: replayed backwards on reopening
    back = Session.open(tmp_path / "s", image, ThresholdBackend())
    assert state_of(back) == state_of(s) and len(back.history()[1]) == 7


def test_refusals(tmp_path: Path) -> None:
    image, _ = make_stack()
    Session(image, ThresholdBackend(), folder=tmp_path / "s")
    with pytest.raises(InvalidInputError, match="not empty"):
        Session(image, ThresholdBackend(), folder=tmp_path / "s")
    other = image.copy()
    other[2, 5, 5] += 3
    with pytest.raises(InvalidInputError, match="content differs"):
        Session.open(tmp_path / "s", other, ThresholdBackend())
    (tmp_path / "s" / "state.json").write_text('{"head": 5, "count": 2, "first": 1, "revision": 0}')
    with pytest.raises(FileFormatError, match="inconsistent state"):
        Session.open(tmp_path / "s", image, ThresholdBackend())
    (tmp_path / "s" / "session.json").write_text('{"format": "other"}')
    with pytest.raises(FileFormatError, match="is not an fmscope-session version 2"):
        Session.open(tmp_path / "s", image, ThresholdBackend())
    with pytest.raises(FileFormatError, match="not a session folder"):
        Session.open(tmp_path, image, ThresholdBackend())
