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
) -> Iterator[Callable[[int], None]]:
    """Return an ``advance(n)`` function bound to the requested progress sink.

    ``progress`` is a callback (called with the running count), ``True`` for a tqdm bar, or ``None``/``False`` for
    silence.
    """
    if progress is True:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc=desc, leave=False)

        def update(n: int = 1) -> None:
            bar.update(n)

        try:
            yield update
        finally:
            bar.close()
        return
    done = 0
    callback = progress if callable(progress) else None

    def advance(n: int = 1) -> None:
        nonlocal done
        done += n
        if callback is not None:
            callback(done, total, desc)

    yield advance
