"""Routes for sessions: create and list them, their state and label planes, edits, long jobs, exports."""

from __future__ import annotations

import contextlib
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import FileResponse, Response

from fmscope.app.deps import body, client, jobs, workspace
from fmscope.app.edits import apply_edit
from fmscope.app.errors import Conflict, NotFound
from fmscope.app.images import display_bytes, label_bytes, sampling
from fmscope.app.jobs import Job
from fmscope.app.paths import inside
from fmscope.app.routes_data import raw, region_arg
from fmscope.app.workspace import AppSession, image_spec
from fmscope.errors import InvalidInputError, OutputExistsError
from fmscope.interactive.enhance import EnhanceConfig
from fmscope.interactive.propagate import PropagationConfig
from fmscope.interactive.protocol import SupportsAutomatic
from fmscope.models.shipped import DEFAULT_INIT, shipped_names
from fmscope.utils.atomic import atomic_output

router = APIRouter(prefix="/api")
HISTORY_SHOWN = 50
EXPORTS = ("labels", "morphometry", "prompts", "record")
ENHANCE_KEYS = ("bridge", "resegment", "window", "max_change", "fill", "max_gap", "min_area", "min_slices", "min_size")


def state(opened: AppSession) -> dict[str, Any]:
    """What the page shows of a session: objects with their prompts and slices, mode, history, revision."""
    s = opened.session
    with s.lock:
        accepted_slices = s.accepted_slices
        parents = s.parents
        slices = s.object_slices()
        undo, redo = s.history()
        objects = []
        for oid, prompt in sorted(s.prompts.items()):
            objects.append({
                "id": oid, "parent": parents.get(oid), "accepted": oid in s.accepted, "prompts": prompt.to_dict(),
                "slices": slices.get(oid, []),
                "accepted_slices": sorted(z for o, z in accepted_slices if o == oid),
            })  # fmt: skip
        return {
            "id": opened.id, "name": opened.settings.get("name"), "revision": s.revision, "mode": s.mode,
            "backend": {**opened.settings.get("backend", {}), "name": s.backend.name},
            "image": {"id": None, **opened.image.info()}, "objects": objects,
            "can_undo": s.can_undo, "can_redo": s.can_redo,
            "undo": undo[-HISTORY_SHOWN:], "redo": redo[:HISTORY_SHOWN],
            "window": [s.profile.low, s.profile.high],
        }  # fmt: skip


def _session(request: Request, session_id: str) -> AppSession:
    return workspace(request).session(client(request), session_id)


async def _opened(request: Request, session_id: str) -> AppSession:
    """:func:`_session` off the event loop (reopening a session reads its folder and checks its image)."""
    return await run_in_threadpool(_session, request, session_id)


def _check_revision(opened: AppSession, data: dict[str, Any]) -> None:
    seen = data.get("revision")
    if seen is not None and seen != opened.session.revision:
        raise Conflict(
            f"the session was changed in another tab or window (revision {opened.session.revision}, this page had "
            f"{seen}); the page now shows the current state; nothing of yours was applied",
            opened.session.revision,
        )


def _job(request: Request, kind: str, label: str, work: Any) -> dict[str, Any]:
    runner = jobs(request)
    running = runner.busy(client(request), kind, label)
    job = running or runner.submit(client(request), kind, label, work)
    return job.status()


# ---- sessions ------------------------------------------------------------------------------------------------


@router.get("/sessions")
def list_sessions(request: Request) -> dict[str, Any]:
    return {"sessions": workspace(request).list_sessions(client(request))}


@router.post("/sessions")
async def new_session(request: Request) -> dict[str, Any]:
    """Create a session as a job (fitting the volume's intensity window reads it once); the job's result is the
    session id."""
    data = await body(request, {"image", "backend", "mode", "name"})
    mode = data.get("mode", "instance")
    ws, c = workspace(request), client(request)
    image_spec(data.get("image") or {})  # refused at once when malformed, not in the job

    def work(job: Job) -> dict[str, Any]:
        job.message = "reading the volume's intensity range"
        opened = ws.new_session(c, data.get("image") or {}, data.get("backend", "rf"), mode=mode,
                                name=data.get("name"), progress=job.progress)  # fmt: skip
        return {"session": opened.id}

    return jobs(request).submit(c, "new_session", str(time.time()), work).status()


@router.get("/sessions/{session_id}")
def session_state(request: Request, session_id: str) -> dict[str, Any]:
    return state(_session(request, session_id))


@router.get("/sessions/{session_id}/slice/{z}")
def session_slice(
    request: Request, session_id: str, z: int, region: str | None = None, max_side: int = 2048
) -> Response:
    """Slice ``z`` of the session's image as raw pixels (like ``/api/images/{id}/slice/{z}``)."""
    array, how = _session(request, session_id).image.read(z, region_arg(region), max_side)
    data, dtype = display_bytes(array)
    return raw(data, dtype, array.shape, how)


@router.get("/sessions/{session_id}/labels/{z}")
def labels(request: Request, session_id: str, z: int, region: str | None = None, max_side: int = 2048) -> Response:
    """Slice ``z`` of the label planes, sampled like the image's slices (same region and step), read under the
    session's lock with the revision it belongs to."""
    s = _session(request, session_id).session
    (y0, x0, y1, x1), step = sampling(s.shape[1:], region_arg(region), max_side)
    with s.lock:
        plane = s.plane(z)[y0:y1:step, x0:x1:step].copy()
        revision = s.revision
    data, dtype = label_bytes(plane)
    return raw(data, dtype, plane.shape, {"step": step, "region": [y0, x0, y1, x1], "revision": revision})


@router.post("/sessions/{session_id}/edit")
async def edit(request: Request, session_id: str) -> dict[str, Any]:
    """One edit (``{"op": ..., "revision": N, ...}``); refused with 409 when the page's revision is stale. The work
    (a forest fit, waiting for a propagation to commit) runs off the event loop: other requests go on meanwhile."""
    data = await body(request)
    opened = await _opened(request, session_id)

    def work() -> dict[str, Any]:
        with opened.session.lock:
            _check_revision(opened, data)
            before = opened.session.revision
            result = apply_edit(opened.session, data)
            out = state(opened)
        out["result"] = result if isinstance(result, int | bool | list) else None
        out["changed"] = out["revision"] != before
        return out

    return await run_in_threadpool(work)


@router.post("/sessions/{session_id}/backend")
async def set_backend(request: Request, session_id: str) -> dict[str, Any]:
    data = await body(request, {"method", "model", "model_dir"})
    ws, c = workspace(request), client(request)

    def work() -> dict[str, Any]:  # building SAM reads a checkpoint of hundreds of MB
        ws.set_backend(c, session_id, data)
        return state(ws.session(c, session_id))

    return await run_in_threadpool(work)


@router.get("/sessions/{session_id}/stats/{object_id}")
def stats(
    request: Request, session_id: str, object_id: int, window: int = 5, max_change: float = 0.5
) -> dict[str, Any]:
    from fmscope.interactive.session_stack import slice_stats

    rows = slice_stats(_session(request, session_id).session, object_id, window=window, max_change=max_change)
    return {"object": object_id, "slices": rows}


# ---- long work -----------------------------------------------------------------------------------------------


def _enhancement(spec: Any) -> EnhanceConfig | None:
    if spec in (None, False):
        return None
    if spec is True:
        return EnhanceConfig()
    if not isinstance(spec, dict):
        raise InvalidInputError(f"enhance: expected true, false or a mapping of steps, got {spec!r}")
    unknown = sorted(set(spec) - set(ENHANCE_KEYS))
    if unknown:
        raise InvalidInputError(f"enhance: unknown step(s) {unknown}; known: {list(ENHANCE_KEYS)}")
    return EnhanceConfig(**spec)


@router.post("/sessions/{session_id}/propagate")
async def propagate(request: Request, session_id: str) -> dict[str, Any]:
    """Propagate objects through the stack as a job (``objects``, ``z_range``, ``stop_iou``, ``enhance``)."""
    data = await body(request, {"objects", "z_range", "stop_iou", "enhance", "revision"})
    opened = await _opened(request, session_id)
    _check_revision(opened, data)  # propagating what a stale tab showed would surprise
    enhancement = _enhancement(data.get("enhance"))
    propagation = PropagationConfig(stop_iou=float(data.get("stop_iou", 0.5)))
    z_range = data.get("z_range")

    def work(job: Job) -> dict[str, Any]:
        job.message = "propagating"
        done = opened.session.propagate(data.get("objects"), z_range=z_range, propagation=propagation,
                                        enhancement=enhancement, progress=job.progress)  # fmt: skip
        return {"slices": done["slices"], "objects": done["objects"], "counts": done["counts"],
                "skipped": [list(p) for p in done["skipped"]]}  # fmt: skip

    return _job(request, "propagate", session_id, work)


@router.post("/sessions/{session_id}/train")
async def train(request: Request, session_id: str) -> dict[str, Any]:
    """Train on the accepted slices and propose the others, as a job (``init``: a shipped backbone, default
    lsm-unet-cpu, 'scratch' or a model folder of the data root; ``object``: the object proposed; ``propose``;
    ``finetune``: fine-tuning keys over the round's defaults). Each round is a new folder ``rounds/round-NNN`` of
    the session, its model usable by ``fmscope predict``; a cancelled or failed round leaves none."""
    from fmscope.interactive.session_training import round_config, train_round

    data = await body(request, {"init", "object", "propose", "finetune", "revision"})
    opened = await _opened(request, session_id)
    _check_revision(opened, data)
    s = opened.session
    overrides = data.get("finetune") or {}
    if not isinstance(overrides, dict):
        raise InvalidInputError(f"finetune: expected a mapping of fine-tuning keys, got {overrides!r}")
    propose, object_id = data.get("propose", True), data.get("object")
    if not isinstance(propose, bool):
        raise InvalidInputError(f"propose: expected true or false, got {propose!r}")
    if object_id is not None and (isinstance(object_id, bool) or not isinstance(object_id, int)):
        raise InvalidInputError(f"object: expected an object id, got {object_id!r}")
    config = round_config(s.shape[1:], overrides)
    init = _init(request, data.get("init"), DEFAULT_INIT)
    rounds = opened.folder / "rounds"

    def work(job: Job) -> dict[str, Any]:
        job.message = "training on the accepted slices"
        n = 1 + max((int(f.name[6:]) for f in rounds.glob("round-[0-9][0-9][0-9]")), default=0)
        done = train_round(s, rounds / f"round-{n:03d}", config, init=init, object_id=object_id, propose=propose,
                           progress=job.progress)  # fmt: skip
        return {**done.to_dict(), "round": n, "revision": s.revision}

    return _job(request, "train", session_id, work)


def _init(request: Request, spec: Any, default: str) -> str | Path:
    """A round's starting point: a shipped backbone name (None: ``default``), 'scratch', or a model folder inside
    the data root (never a path elsewhere)."""
    if spec is None:
        return default
    if not isinstance(spec, str) or not spec:
        raise InvalidInputError(f"init: expected a shipped model name, 'scratch' or a folder, got {spec!r}")
    if spec == "scratch" or spec in shipped_names():
        return spec
    folder = inside(workspace(request).config.data_root, spec, must_exist=False)
    if not folder.is_dir():
        raise InvalidInputError(f"init: {spec!r} is neither a shipped model ({', '.join(shipped_names())}), 'scratch', "
                                "nor a model folder of the data folder")  # fmt: skip
    return folder


@router.post("/sessions/{session_id}/embed")
async def embed(request: Request, session_id: str) -> dict[str, Any]:
    """Compute slice features ahead of clicks as a job: ``slices`` (a list), default every slice. A request for
    slices already computed, or made while another embedding job of this session waits, adds no job. More slices
    than a session keeps in memory (:data:`EMBEDDINGS_IN_MEMORY`, and a memory budget, known once one slice is
    embedded) are refused: they would be computed and dropped; propagation computes what it needs as it goes."""
    data = await body(request, {"slices"})
    s = (await _opened(request, session_id)).session
    zs = data.get("slices", list(range(s.shape[0])))
    if not isinstance(zs, list) or not zs:
        raise InvalidInputError(f"slices: expected a non-empty list of slice indices, got {zs!r}")
    zs = sorted({s.check_z(z) for z in zs})
    room = s.embeddings.capacity()
    if room is not None and len(zs) > room:
        each = s.embeddings.nbytes / max(1, len([z for z in range(s.shape[0]) if z in s.embeddings]))
        raise InvalidInputError(
            f"slices: the features of {len(zs)} slices ({len(zs) * each / 2**30:.1f} GiB) do not fit the {room} "
            "slices kept in memory; propagation computes the features it needs as it goes"
        )
    todo = [z for z in zs if z not in s.embeddings]
    waiting = jobs(request).busy(client(request), "embed", session_id)
    if not todo or waiting is not None:
        return (waiting.status() if waiting else {"id": None, "kind": "embed", "state": "done", "done": 0,
                                                  "total": 0, "result": {"slices": zs}})  # fmt: skip

    def work(job: Job) -> dict[str, Any]:
        for k, z in enumerate(todo):
            job.progress(k, len(todo), f"features of slice {z}")
            s.embedding(z)
        job.progress(len(todo), len(todo))
        return {"slices": zs}

    return _job(request, "embed", session_id, work)


@router.post("/sessions/{session_id}/automatic")
async def automatic(request: Request, session_id: str) -> dict[str, Any]:
    """Segment everything (a backend with an automatic mode: sam) on slice ``z`` or, with ``stack``, on every slice
    linked into 3D objects, as a job; the objects found become new objects of the session (one undoable step)."""
    data = await body(request, {"z", "stack", "min_slices"})
    opened = await _opened(request, session_id)
    s = opened.session
    if not isinstance(s.backend, SupportsAutomatic):
        raise InvalidInputError(f"automatic: the {s.backend.name} backend has no automatic mode (sam has)")
    z = s.check_z(data.get("z", 0))

    def work(job: Job) -> dict[str, Any]:
        from fmscope.interactive.modes import automatic_stack

        job.message = "segmenting everything"
        if data.get("stack"):
            labels = automatic_stack(s.backend, s.embeddings.volume, profile=s.profile, progress=job.progress,
                                     min_slices=int(data.get("min_slices", 1)), embeddings=s.embeddings)  # fmt: skip
            planes = {k: labels[k] for k in range(labels.shape[0]) if labels[k].any()}
        else:
            planes = {z: np.asarray(s.backend.automatic(s.embedding(z)))}  # type: ignore[attr-defined]
        return {"objects": s.add_objects("automatic", planes)}

    return _job(request, "automatic", session_id, work)


def _detector(request: Request, box_threshold: float) -> Any:
    """The grounding detector of the app (loaded once per threshold)."""
    from fmscope.interactive.grounding import GroundingDetector

    cache = request.app.state.__dict__.setdefault("detectors", {})
    if box_threshold not in cache:
        cache[box_threshold] = GroundingDetector(request.app.state.config.grounding, box_threshold=box_threshold)
    return cache[box_threshold]


@router.post("/sessions/{session_id}/text")
async def text(request: Request, session_id: str) -> dict[str, Any]:
    """Find a phrase on slice ``z`` with the grounding model (one new object per box) as a job."""
    data = await body(request, {"phrase", "z", "box_threshold"})
    config = request.app.state.config
    if config.grounding is None:
        raise InvalidInputError("text: no grounding model; start the app with --grounding FOLDER")
    opened = await _opened(request, session_id)
    phrase, z = data.get("phrase"), data.get("z", 0)
    if not isinstance(phrase, str) or not phrase.strip():
        raise InvalidInputError("phrase: expected a non-empty phrase")

    def work(job: Job) -> dict[str, Any]:
        from fmscope.interactive.grounding import prompts_from_text

        s = opened.session
        job.message = f"finding '{phrase}'"
        found = prompts_from_text(_detector(request, float(data.get("box_threshold", 0.35))), s.image_slice(z), phrase,
                                  profile=s.profile)  # fmt: skip
        with s.lock:  # the boxes found, as objects, together
            ids = []
            for p in found:
                oid = s.new_object()
                s.set_box(oid, z, p.box)
                ids.append(oid)
        return {"objects": ids}

    return _job(request, "text", session_id, work)


@router.post("/sessions/{session_id}/compare")
async def compare(request: Request, session_id: str) -> dict[str, Any]:
    """Per-slice IoU and Dice against a ground-truth file of the data root (``path``, ``values``) as a job."""
    data = await body(request, {"source", "path", "values", "dataset", "channel"})
    ws, c = workspace(request), client(request)
    opened = await _opened(request, session_id)

    def work(job: Job) -> dict[str, Any]:
        from fmscope.interactive.session_stack import compare_session

        if not isinstance(data.get("path"), str):
            raise InvalidInputError("path: expected a ground-truth label file inside the data folder")
        truth = ws.load(c, image_spec({k: data.get(k) for k in ("source", "path", "dataset", "channel")}))
        return compare_session(opened.session, truth.volume(), truth_values=data.get("values"), progress=job.progress)

    return _job(request, "compare", session_id, work)


@router.post("/sessions/{session_id}/export")
async def export(request: Request, session_id: str) -> dict[str, Any]:
    """Write one export into the session's ``exports`` folder: ``labels`` (``format`` tif | ome.zarr,
    ``accepted_only``, ``binary``), ``morphometry`` (CSV), ``prompts`` (JSON) or ``record`` (JSON)."""
    data = await body(request, {"what", "format", "accepted_only", "binary"})
    from fmscope.app.exports import write_export

    what = data.get("what")
    if what not in EXPORTS:
        raise InvalidInputError(f"what: expected one of {', '.join(EXPORTS)}, got {what!r}")
    opened = await _opened(request, session_id)
    name = await run_in_threadpool(write_export, opened, what, data)  # a whole volume may be written
    return {"name": name, "url": f"/api/sessions/{session_id}/exports/{name}"}


@router.get("/sessions/{session_id}/exports/{name}")
def download(request: Request, session_id: str, name: str) -> Response:
    path = workspace(request).export_file(client(request), session_id, name)
    if path.is_dir():  # an OME-Zarr folder: sent as a zip, made once, atomically
        if not path.name.endswith(".ome.zarr") or path.parent.name != "exports":
            raise NotFound(f"export: {name!r} does not exist")
        archive = path.with_name(path.name + ".zip")
        if not archive.exists():
            with contextlib.suppress(OutputExistsError), atomic_output(archive) as tmp:
                shutil.make_archive(str(tmp.with_suffix("")), "zip", root_dir=path.parent, base_dir=path.name)
        path = archive
    return FileResponse(path, filename=path.name)


# ---- jobs ----------------------------------------------------------------------------------------------------


@router.get("/jobs")
def list_jobs(request: Request) -> dict[str, Any]:
    return {"jobs": [j.status() for j in jobs(request).list(client(request))]}


@router.get("/jobs/{job_id}")
def job_status(request: Request, job_id: str) -> dict[str, Any]:
    job = jobs(request).get(client(request), job_id)
    if job is None:
        raise NotFound(f"job: {job_id!r} does not exist")
    return job.status()


@router.post("/jobs/{job_id}/cancel")
def cancel(request: Request, job_id: str) -> dict[str, Any]:
    job = jobs(request).get(client(request), job_id)
    if job is None:
        raise NotFound(f"job: {job_id!r} does not exist")
    job.cancel()
    return job.status()
