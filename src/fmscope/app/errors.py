"""The app's own errors (besides the library's), each answered with its HTTP status by the server."""

from __future__ import annotations

from fmscope.errors import FmscopeError


class NotFound(FmscopeError, LookupError):
    """An id that does not exist for this browser (404; the page shows the message)."""


class Conflict(FmscopeError):
    """The page's revision is not the session's: another tab or window changed it (409)."""

    def __init__(self, message: str, revision: int) -> None:
        super().__init__(message)
        self.revision = revision


class TooLarge(FmscopeError):
    """A request or upload over its size limit (413)."""
