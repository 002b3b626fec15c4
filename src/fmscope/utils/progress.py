"""Progress reporting through a callback, so the CLI shows tqdm and the web app can plug in its own."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol


class ProgressCallback(Protocol):
    """Called with (done, total, message) after each unit of work; total may be None when unknown."""

    def __call__(self, done: int, total: int | None, message: str = "") -> None: ...


def null_progress(done: int, total: int | None, message: str = "") -> None:
    """A progress callback that does nothing."""


@contextmanager
def make_progress(
    progress: ProgressCallback | bool | None, total: int | None, desc: str
) -> Iterator[Callable[..., None]]:
    """Return an ``advance(n=1, message=None)`` function bound to the requested progress sink.

    ``progress`` is a callback (called with the running count and ``desc``, or the latest ``message``), ``True`` for a
    tqdm bar (``message`` becomes its description: the stage being worked on), or ``None``/``False`` for silence.
    """
    if progress is True:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc=desc, leave=False)

        def update(n: int = 1, message: str | None = None) -> None:
            if message is not None:
                bar.set_description_str(f"{desc}: {message}")
            bar.update(n)

        try:
            yield update
        finally:
            bar.close()
        return
    done = 0
    callback = progress if callable(progress) else None
    label = desc

    def advance(n: int = 1, message: str | None = None) -> None:
        nonlocal done, label
        done += n
        if message is not None:
            label = f"{desc}: {message}"
        if callback is not None:
            callback(done, total, label)

    yield advance


def sub_progress(progress: ProgressCallback | bool | None, stage: str) -> ProgressCallback | bool | None:
    """The progress sink for one stage of a longer job: its own bar under the job's bar (``True``), or the job's
    callback with ``stage`` in front of every message, so that the app and napari show what is being done."""
    if callable(progress):
        outer = progress

        def inner(done: int, total: int | None, message: str = "") -> None:
            outer(done, total, f"{stage}: {message}" if message else stage)

        return inner
    return progress
