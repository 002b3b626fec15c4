"""Routes for data: what the app offers, the file list, uploads, opening images and their slices as raw bytes."""

from __future__ import annotations

import os
import re
import uuid
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from fmscope import __version__
from fmscope.app.deps import body, client, workspace
from fmscope.app.errors import TooLarge
from fmscope.app.images import display_bytes, is_image_name, list_folder
from fmscope.app.paths import inside
from fmscope.errors import InvalidInputError, OutputExistsError
from fmscope.interactive.backends import backend_status
from fmscope.models.shipped import DEFAULT_INIT, shipped_names

router = APIRouter(prefix="/api")
UPLOAD_NAME = re.compile(r"^[\w][\w .+-]{0,200}$")
UPLOAD_QUOTA = 4  # a browser's uploads together: at most this many times the upload limit
CHUNK = 1 << 20


def raw(data: bytes, dtype: str, shape: tuple[int, ...], extra: dict[str, Any]) -> Response:
    """Raw little-endian pixels with their shape and dtype (and how they were sampled) in headers."""
    headers = {"X-Shape": ",".join(str(int(s)) for s in shape), "X-Dtype": dtype}
    for key, value in extra.items():
        headers[f"X-{key.title()}"] = ",".join(map(str, value)) if isinstance(value, list) else str(value)
    headers["Access-Control-Expose-Headers"] = ", ".join(headers)
    return Response(data, media_type="application/octet-stream", headers=headers)


def region_arg(region: str | None) -> tuple[int, int, int, int] | None:
    if region is None or region == "":
        return None
    try:
        y0, x0, y1, x1 = (int(v) for v in region.split(","))
    except ValueError:
        raise InvalidInputError(f"region: expected y0,x0,y1,x1 (integers), got {region!r}") from None
    return y0, x0, y1, x1


@router.get("/info")
def info(request: Request) -> dict[str, Any]:
    config = request.app.state.config
    grounding = (
        {"available": True, "reason": ""}
        if config.grounding is not None
        else {"available": False, "reason": "no grounding model: start the app with --grounding FOLDER (a local "
                                             "Grounding DINO folder) to find objects by a phrase"}
    )  # fmt: skip
    return {
        "version": __version__,
        "data_root": config.data_root.name,
        "open_path": config.open_path,
        "max_upload": config.max_upload,
        "backends": [vars(s) for s in backend_status(config.cache_dir)],
        "grounding": grounding,
        "shipped": list(shipped_names()),  # backbones a round of "train on accepted" can start from
        "default_init": DEFAULT_INIT,
        "client": client(request)[:8],
    }


@router.get("/files")
def files(request: Request, path: str = "", source: str = "data") -> dict[str, Any]:
    ws = workspace(request)
    c = client(request)
    root = ws.root(c, source)
    folder = ws.resolve(c, source, path) if path else root
    if not folder.is_dir():
        raise InvalidInputError(f"path: {path!r} is not a folder")
    return {"source": source, "path": path, "entries": list_folder(root, folder)}


@router.post("/uploads")
async def upload(request: Request, name: str) -> dict[str, Any]:
    """The request body (raw bytes) written to this browser's uploads folder as ``name``, streamed to disk and cut
    off at the size limit (nothing is kept of an upload that is too large); an existing upload of that name is never
    replaced (sessions made on it would read other data), and all of a browser's uploads together stay within
    :data:`UPLOAD_QUOTA` times the limit."""
    limit = request.app.state.config.max_upload
    if not UPLOAD_NAME.match(name) or not is_image_name(name) or name.startswith("."):
        raise InvalidInputError(f"name: expected an image file name (TIFF, NIfTI, HDF5, MRC, PNG...), got {name!r}")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"upload: {int(declared) / 2**20:.1f} MiB is over the limit of {limit / 2**20:.0f} MiB")
    folder = workspace(request).uploads(client(request))
    target = inside(folder, name, must_exist=False)
    if target.exists():
        raise OutputExistsError(f"upload: '{name}' exists among your uploads; rename the file to upload it again")
    used = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
    quota = UPLOAD_QUOTA * limit
    if used + int(declared or 0) > quota:
        raise TooLarge(f"upload: your uploads hold {used / 2**20:.0f} MiB of the {quota / 2**20:.0f} MiB allowed")
    partial = folder / f".{uuid.uuid4().hex}.part"
    size = 0
    try:
        with partial.open("wb") as fh:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit or used + size > quota:
                    raise TooLarge(f"upload: over the limit of {limit / 2**20:.0f} MiB; nothing was kept")
                await run_in_threadpool(fh.write, chunk)
        if size == 0:
            raise InvalidInputError("upload: the file is empty")
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return {"source": "upload", "path": name, "size": size}


@router.post("/images")
async def open_image(request: Request) -> dict[str, Any]:
    spec = await body(request, {"source", "path", "dataset", "channel"})
    if not isinstance(spec.get("path"), str):
        raise InvalidInputError("path: expected the path of an image inside the data folder")
    ws, c = workspace(request), client(request)

    def work() -> dict[str, Any]:
        image_id, handle = ws.open_image(c, spec.get("source", "data"), spec["path"], dataset=spec.get("dataset"),
                                         channel=spec.get("channel"))  # fmt: skip
        return {"id": image_id, **handle.info()}

    return await run_in_threadpool(work)  # reading and the histogram: off the event loop


@router.get("/images/{image_id}")
def image_info(request: Request, image_id: str) -> dict[str, Any]:
    return {"id": image_id, **workspace(request).image(client(request), image_id).info()}


@router.get("/images/{image_id}/slice/{z}")
def image_slice(request: Request, image_id: str, z: int, region: str | None = None, max_side: int = 2048) -> Response:
    handle = workspace(request).image(client(request), image_id)
    array, how = handle.read(z, region_arg(region), max_side)
    data, dtype = display_bytes(array)
    return raw(data, dtype, array.shape, how)
