"""What every route needs from a request: the browser's key, the workspace, the job runner, a checked JSON body."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from starlette.requests import Request

from fmscope.app.errors import TooLarge
from fmscope.app.jobs import JobRunner
from fmscope.app.workspace import Workspace
from fmscope.errors import InvalidInputError

MAX_BODY = 16 * 2**20  # JSON bodies (prompts, strokes) are small; uploads have their own route


def client(request: Request) -> str:
    """The browser's key (set by the server's guard from its cookie)."""
    return str(request.state.client)


def workspace(request: Request) -> Workspace:
    ws: Workspace = request.app.state.workspace
    return ws


def jobs(request: Request) -> JobRunner:
    runner: JobRunner = request.app.state.jobs
    return runner


async def body(request: Request, allowed: Iterable[str] | None = None) -> dict[str, Any]:
    """The request's JSON object (read in chunks and cut off at :data:`MAX_BODY`, never buffered whole beyond it);
    keys outside ``allowed`` are refused, naming them."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        raise TooLarge(f"request: {int(declared)} bytes of JSON is more than the {MAX_BODY} accepted")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise TooLarge(f"request: more than the {MAX_BODY} bytes of JSON accepted")
        chunks.append(chunk)
    raw = b"".join(chunks)
    try:
        data = json.loads(raw or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"request: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise InvalidInputError(f"request: expected a JSON object, got {type(data).__name__}")
    if allowed is not None:
        unknown = sorted(set(data) - set(allowed))
        if unknown:
            raise InvalidInputError(f"request: unknown key(s) {unknown}; known: {sorted(allowed)}")
    return data
