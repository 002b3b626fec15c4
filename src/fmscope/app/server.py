"""``fmscope app``: the FastAPI application, its guards, and :func:`serve` (uvicorn).

Guards on every request, before any route runs:

* ``Host`` must be one the server listens as (``127.0.0.1:PORT``, ``localhost:PORT``, ...): a page of another site
  that re-points its DNS name at this machine (DNS rebinding) is refused;
* a state-changing request whose ``Origin`` is another site is refused (with the ``SameSite=Strict`` cookie, a page
  of another site can neither read nor change a session);
* each browser gets a random cookie (``HttpOnly``, ``SameSite=Strict``); its sessions live in a folder named by a
  hash of it, so a browser sees only its own sessions.

Errors come back as ``{"error": message}`` with the library's one-line message (400 bad input, 403 a path outside
the data folder, 404 an unknown id, 409 a stale revision or an existing output, 413 an upload over the limit, 500 an
unexpected failure); the server keeps running.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import webbrowser
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib.resources import files
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fmscope.app.config import AppConfig
from fmscope.app.errors import Conflict, NotFound, TooLarge
from fmscope.app.jobs import JobRunner
from fmscope.app.paths import PathRefused
from fmscope.app.workspace import Workspace, client_key
from fmscope.errors import FmscopeError, MissingDependencyError, OutputExistsError

logger = logging.getLogger(__name__)

COOKIE = "fmscope_client"
STATIC = "static"


def _import_fastapi() -> Any:
    try:
        import fastapi
    except ImportError:
        raise MissingDependencyError("fastapi", "app") from None
    return fastapi


def create_app(config: AppConfig, *, port: int | None = None) -> Any:
    """The FastAPI application of ``config`` (``port``: the one it will be reached on, for the Host check)."""
    fastapi = _import_fastapi()
    from fastapi.responses import FileResponse, JSONResponse
    from fastapi.staticfiles import StaticFiles
    from starlette.requests import Request
    from starlette.responses import Response

    from fmscope.app import routes_data, routes_sessions

    runner = JobRunner()

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        yield
        runner.shutdown()  # cancel what is queued or running: nothing half-done is committed

    app = fastapi.FastAPI(
        title="fmscope", docs_url=None, redoc_url=None, openapi_url="/api/openapi.json", lifespan=lifespan
    )
    app.state.config = config
    app.state.workspace = Workspace(config)
    app.state.jobs = runner
    hosts = config.host_names(port if port is not None else config.port)

    @app.middleware("http")
    async def guard(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        host = request.headers.get("host", "")
        if host not in hosts:
            return JSONResponse({"error": f"host {host!r} is not served here"}, status_code=400)
        origin = request.headers.get("origin")
        if request.method not in ("GET", "HEAD", "OPTIONS") and origin and urlsplit(origin).netloc not in hosts:
            return JSONResponse({"error": f"requests from {origin} are not accepted"}, status_code=403)
        token = request.cookies.get(COOKIE) or ""
        fresh = len(token) < 32
        if fresh:
            token = secrets.token_urlsafe(32)
        request.state.client = client_key(token)
        response = await call_next(request)
        if fresh:
            response.set_cookie(COOKIE, token, httponly=True, samesite="strict", max_age=10 * 365 * 24 * 3600)
        response.headers.setdefault("Cache-Control", "no-store")
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    def private(message: str) -> str:
        """A message without the absolute places of the data and sessions folders (an OSError names full paths)."""
        for folder, name in ((config.sessions, "<sessions>"), (config.data_root, "<data>")):
            message = message.replace(str(folder), name)
        return message

    def error(status: int) -> Callable[[Request, Exception], JSONResponse]:
        def handler(request: Request, exc: Exception) -> JSONResponse:
            body: dict[str, Any] = {"error": private(str(exc))}
            if isinstance(exc, Conflict):
                body["revision"] = exc.revision
            return JSONResponse(body, status_code=status)

        return handler

    for exc_type, status in ((PathRefused, 403), (NotFound, 404), (Conflict, 409), (OutputExistsError, 409),
                             (TooLarge, 413), (FmscopeError, 400), (ValueError, 400), (OSError, 400)):  # fmt: skip
        app.add_exception_handler(exc_type, error(status))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unexpected error on %s", request.url.path)
        return JSONResponse({"error": private(f"internal error: {type(exc).__name__}: {exc}")}, status_code=500)

    app.include_router(routes_data.router)
    app.include_router(routes_sessions.router)
    static = Path(str(files("fmscope.app") / STATIC))

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(static / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=static), name="static")
    return app


def app_url(config: AppConfig) -> str:
    """The address to open in a browser."""
    host = f"[{config.host}]" if ":" in config.host else config.host
    return f"http://{'127.0.0.1' if config.host in ('0.0.0.0', '::') else host}:{config.port}/"


def serve(config: AppConfig, *, open_browser: bool = False) -> None:
    """Run the app with uvicorn until interrupted (and open a browser at :func:`app_url` with ``open_browser``)."""
    _import_fastapi()
    import uvicorn

    if not config.is_local:
        logger.warning(
            "listening on %s: anyone who can reach this machine on port %d can use the app and read the data "
            "folder; use 127.0.0.1 unless you know the network", config.host, config.port,
        )  # fmt: skip
    app = create_app(config)
    logger.info("fmscope app: %s (data: %s; sessions: %s)", app_url(config), config.data_root, config.sessions)
    if open_browser:
        webbrowser.open(app_url(config))
    uvicorn.run(app, host=config.host, port=config.port, log_level="warning")
