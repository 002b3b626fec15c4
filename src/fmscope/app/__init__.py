"""The no-code web app (``fmscope app``): a local page that opens raw stacks, segments them by pointing, carries the
result through the stack, lets a person correct it and exports labels and measurements. It serves the library's
session (:mod:`fmscope.interactive`) and adds no algorithm of its own. Needs the ``app`` extra (FastAPI, uvicorn).
"""

from fmscope.app.config import AppConfig, default_sessions_dir, parse_size

__all__ = ["AppConfig", "default_sessions_dir", "parse_size", "create_app", "serve"]


def create_app(*args, **kwargs):  # type: ignore[no-untyped-def]
    """:func:`fmscope.app.server.create_app` (imported on first use: FastAPI is an optional extra)."""
    from fmscope.app.server import create_app as make

    return make(*args, **kwargs)


def serve(*args, **kwargs):  # type: ignore[no-untyped-def]
    """:func:`fmscope.app.server.serve`."""
    from fmscope.app.server import serve as run

    return run(*args, **kwargs)
