"""Error types. Every error raised on user input names the parameter (or file), what was expected and what came."""

from __future__ import annotations


class FmscopeError(Exception):
    """Base class of all fmscope errors."""


class InvalidInputError(FmscopeError, ValueError):
    """A parameter or an input array is not acceptable (wrong shape, dtype, range, empty, NaN...)."""


class FileFormatError(FmscopeError, ValueError):
    """A file cannot be read: unknown extension, truncated or corrupt content, missing dataset."""


class OutputExistsError(FmscopeError, FileExistsError):
    """An output path exists and overwrite was not requested."""


class MissingDependencyError(FmscopeError, ImportError):
    """An optional dependency is missing; the message carries the pip install hint."""

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(f"this feature needs '{package}': pip install 'fmscope[{extra}]'")
        self.package = package
        self.extra = extra


class Terminated(KeyboardInterrupt):
    """SIGTERM (a cluster scheduler's time limit, ``kill``) raised as an interrupt, so that it unwinds like Ctrl-C:
    temporary outputs are removed on the way out and checkpoints are kept."""


class TrainingDivergedError(FmscopeError, RuntimeError):
    """A loss became NaN or infinite; training stops with the step and the terms."""


class Interrupted(KeyboardInterrupt):
    """A run stopped by Ctrl-C or SIGTERM; ``hint`` says what was kept and how to go on (e.g. how to resume)."""

    def __init__(self, hint: str, cause: BaseException | None = None) -> None:
        super().__init__(hint)
        self.hint = hint
        self.terminated = isinstance(cause, Terminated)
