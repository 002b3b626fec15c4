"""A block function for runner tests, in a module of its own: Dask worker processes import it by name, and it
imports nothing heavy (a test module would pull torch into every worker)."""

from __future__ import annotations

from pathlib import Path

from fmscope.inference.blockwise import Block


class IndexWriter:
    """Writes ``index + 1`` over a block's core; on its first meeting with block ``victim`` it kills its own
    process (``kill -9`` of a worker) before writing anything."""

    def __init__(self, output: str, marker: str | None = None, victim: int = -1) -> None:
        self.output, self.marker, self.victim = output, marker, victim

    def __call__(self, block: Block) -> None:
        import os
        import signal

        import zarr

        if block.index == self.victim and self.marker is not None and not Path(self.marker).exists():
            Path(self.marker).touch()
            os.kill(os.getpid(), signal.SIGKILL)
        zarr.open_array(self.output, mode="r+")[block.core] = block.index + 1
