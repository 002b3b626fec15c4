"""What each browser has: its folder of sessions, uploads and exports; the images and sessions it opened.

A browser is known by a random cookie; its folder under the sessions root is named by a hash of that cookie, so one
browser never lists, opens or downloads another's sessions. A session's folder holds the
:class:`~fmscope.interactive.session.Session` journal plus ``exports/``; its header keeps what is needed to open it
again after a restart: the image (data root or upload, path, dataset, channel), the backend options and the mode.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fmscope.app.config import AppConfig
from fmscope.app.errors import NotFound
from fmscope.app.images import ImageHandle, open_image
from fmscope.app.paths import PathRefused, inside
from fmscope.errors import FmscopeError, InvalidInputError
from fmscope.interactive.backends import BACKENDS, make_backend
from fmscope.interactive.session import Session
from fmscope.interactive.session_store import SessionStore, is_session_folder

logger = logging.getLogger(__name__)

SESSION_ID = re.compile(r"^s-[0-9a-f]{12}$")
IMAGE_ID = re.compile(r"^i-[0-9a-f]{12}$")
SOURCES = ("data", "upload")
OPEN_IMAGES = 8  # images kept open per browser (least recently used closed first)
OPEN_SESSIONS = 8  # sessions kept in memory per server (each holds up to EMBEDDINGS_IN_MEMORY slice embeddings)
EMBEDDINGS_IN_MEMORY = 32  # slice embeddings kept per session at most ...


def embedding_budget() -> int:
    """... and at most this many bytes of them: a quarter of this machine's memory, at most 4 GiB."""
    import psutil

    return int(min(4 * 2**30, psutil.virtual_memory().total // 4))


def client_key(token: str) -> str:
    """The folder name of a browser: a hash of its cookie (the cookie itself is never written to disk)."""
    return hashlib.sha256(token.encode()).hexdigest()[:24]


@dataclass
class AppSession:
    """An open session and what it was made from."""

    id: str
    folder: Path
    session: Session
    image: ImageHandle
    settings: dict[str, Any]

    @property
    def exports(self) -> Path:
        path = self.folder / "exports"
        path.mkdir(exist_ok=True)
        return path


def image_spec(spec: Any) -> dict[str, Any]:
    """A checked image spec from the page: ``source`` (data | upload), ``path``, ``dataset``, ``channel``."""
    if not isinstance(spec, dict):
        raise InvalidInputError("image: expected {source, path, dataset?, channel?}")
    unknown = sorted(set(spec) - {"source", "path", "dataset", "channel"})
    if unknown:
        raise InvalidInputError(f"image: unknown key(s) {unknown}")
    out = {"source": spec.get("source") or "data", "path": spec.get("path"), "dataset": spec.get("dataset"),
           "channel": spec.get("channel")}  # fmt: skip
    if not isinstance(out["path"], str) or not out["path"]:
        raise InvalidInputError("image.path: expected a path inside the data folder")
    if out["dataset"] is not None and not isinstance(out["dataset"], str):
        raise InvalidInputError(f"image.dataset: expected a dataset name, got {out['dataset']!r}")
    channel = out["channel"]
    if channel is not None and (isinstance(channel, bool) or not isinstance(channel, int) or channel < 0):
        raise InvalidInputError(f"image.channel: expected an index >= 0, got {channel!r}")
    return out


def backend_options(spec: Any, config: AppConfig) -> dict[str, Any]:
    """Checked backend options from the page: ``method``, ``model`` (sam/sam2: a known model name, looked up in the
    checkpoint folder), ``model_dir`` (fm: a folder inside the data root). No path outside the data root is taken."""
    if not isinstance(spec, dict):
        spec = {"method": spec}
    unknown = sorted(set(spec) - {"method", "model", "model_dir"})
    if unknown:
        raise InvalidInputError(f"backend: unknown key(s) {unknown}; known: method, model, model_dir")
    method = spec.get("method", "rf")
    if method not in BACKENDS:
        raise InvalidInputError(f"backend.method: expected one of {', '.join(BACKENDS)}, got {method!r}")
    model = spec.get("model")
    if model is not None and not isinstance(model, str):
        raise InvalidInputError(f"backend.model: expected a model name, got {model!r}")
    model_dir = spec.get("model_dir")
    if model_dir is not None:
        inside(config.data_root, str(model_dir))  # refused when outside the data root
    return {"method": method, "model": model, "model_dir": model_dir}


def build_backend(options: dict[str, Any], config: AppConfig) -> Any:
    """The backend of checked ``options`` (semantic mode needs no other backend: phases are an ability of it)."""
    model_dir = None if options.get("model_dir") is None else inside(config.data_root, options["model_dir"])
    checkpoint = None
    if options["method"] in ("sam", "sam2") and config.cache_dir is not None:
        from fmscope.interactive.checkpoints import known_checkpoint

        name = options.get("model") or BACKENDS[options["method"]].default_model or ""
        checkpoint = config.cache_dir / known_checkpoint(name, options["method"]).file_name
    return make_backend(options["method"], checkpoint=checkpoint, model=options.get("model"), model_dir=model_dir)


class Workspace:
    """Folders, images and sessions of every browser (see the module doc)."""

    def __init__(self, config: AppConfig) -> None:
        self.config = config
        self._images: dict[str, OrderedDict[str, ImageHandle]] = {}  # per browser, least recently used first
        self._sessions: OrderedDict[tuple[str, str], AppSession] = OrderedDict()
        self._opening: dict[tuple[str, str], threading.Lock] = {}
        self._lock = threading.RLock()

    # ---- folders ---------------------------------------------------------------------------------------------

    def client_dir(self, client: str) -> Path:
        path = self.config.sessions / client
        path.mkdir(exist_ok=True)
        return path

    def uploads(self, client: str) -> Path:
        path = self.client_dir(client) / "uploads"
        path.mkdir(exist_ok=True)
        return path

    def root(self, client: str, source: str) -> Path:
        """The folder a source names: ``data`` (the data root) or ``upload`` (this browser's uploads)."""
        if source not in SOURCES:
            raise InvalidInputError(f"source: expected one of {', '.join(SOURCES)}, got {source!r}")
        return self.config.data_root if source == "data" else self.uploads(client)

    def resolve(self, client: str, source: str, path: str) -> Path:
        """A file the page named inside the folder of ``source`` (see :func:`fmscope.app.paths.inside`)."""
        return inside(self.root(client, source), path)

    # ---- images ----------------------------------------------------------------------------------------------

    def load(self, client: str, spec: dict[str, Any]) -> ImageHandle:
        """An image of a checked spec (:func:`image_spec`), refused when it would read files outside its root; not
        kept among the open images."""
        source, path = spec["source"], spec["path"]
        return open_image(self.resolve(client, source, path), f"{source}:{path}", dataset=spec.get("dataset"),
                          channel=spec.get("channel"), root=self.root(client, source))  # fmt: skip

    def open_image(
        self, client: str, source: str, path: str, *, dataset: str | None = None, channel: int | None = None
    ) -> tuple[str, ImageHandle]:
        spec = image_spec({"source": source, "path": path, "dataset": dataset, "channel": channel})
        handle = self.load(client, spec)
        image_id = f"i-{uuid.uuid4().hex[:12]}"
        with self._lock:
            mine = self._images.setdefault(client, OrderedDict())
            mine[image_id] = handle
            while len(mine) > OPEN_IMAGES:
                mine.popitem(last=False)
        return image_id, handle

    def image(self, client: str, image_id: str) -> ImageHandle:
        with self._lock:
            mine = self._images.get(client, OrderedDict())
            handle = mine.get(image_id) if IMAGE_ID.match(image_id or "") else None
            if handle is None:
                raise NotFound(f"image: {image_id!r} is not open (open it again from the file list)")
            mine.move_to_end(image_id)
            return handle

    # ---- sessions --------------------------------------------------------------------------------------------

    def _keep(self, key: tuple[str, str], opened: AppSession) -> None:
        with self._lock:
            self._sessions[key] = opened
            self._sessions.move_to_end(key)
            while len(self._sessions) > OPEN_SESSIONS:  # the least recently used is reopened from disk when asked
                self._sessions.popitem(last=False)

    def new_session(
        self,
        client: str,
        image: dict[str, Any],
        backend: Any,
        *,
        mode: str = "instance",
        name: str | None = None,
        progress: Any = None,
    ) -> AppSession:
        """Create a session folder on an image (the slow part, fitting the volume's window, reports ``progress``)."""
        spec = image_spec(image)
        options = backend_options(backend, self.config)
        handle = self.load(client, spec)
        session_id = f"s-{uuid.uuid4().hex[:12]}"
        folder = self.client_dir(client) / session_id
        settings = {
            "name": str(name or Path(spec["path"]).name)[:200], "image": spec, "backend": options,
            "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        }  # fmt: skip
        from fmscope.intensity import fit_profile

        profile = fit_profile(handle.volume(), progress=progress)
        session = Session(
            handle.volume(), build_backend(options, self.config), profile=profile,
            cache_size=EMBEDDINGS_IN_MEMORY, folder=folder, mode=mode, settings=settings,
        )  # fmt: skip
        session.embeddings.max_bytes = embedding_budget()
        opened = AppSession(session_id, folder, session, handle, settings)
        self._keep((client, session_id), opened)
        logger.info("new session %s on %s (%s)", session_id, spec["path"], options["method"])
        return opened

    def session(self, client: str, session_id: str) -> AppSession:
        """An open session of this browser, reopened from its folder when the server restarted (or had closed it);
        reopening one session does not hold up the requests of others."""
        if not SESSION_ID.match(session_id or ""):
            raise NotFound(f"session: {session_id!r} is not a session id")
        key = (client, session_id)
        with self._lock:
            found = self._sessions.get(key)
            if found is not None:
                self._sessions.move_to_end(key)
                return found
            opening = self._opening.setdefault(key, threading.Lock())
        with opening:
            with self._lock:
                found = self._sessions.get(key)
            if found is not None:
                return found
            folder = self.config.sessions / client / session_id
            if not is_session_folder(folder):
                raise NotFound(f"session: {session_id} does not exist (or belongs to another browser)")
            settings = SessionStore.open(folder).header.get("settings", {})
            handle = self.load(client, image_spec(settings["image"]))
            backend = build_backend(settings["backend"], self.config)
            session = Session.open(folder, handle.volume(), backend, cache_size=EMBEDDINGS_IN_MEMORY)
            session.embeddings.max_bytes = embedding_budget()
            opened = AppSession(session_id, folder, session, handle, settings)
            self._keep(key, opened)
            logger.info("reopened session %s", session_id)
            return opened

    def set_backend(self, client: str, session_id: str, backend: Any) -> None:
        opened = self.session(client, session_id)
        options = backend_options(backend, self.config)
        opened.session.set_backend(build_backend(options, self.config))
        opened.settings["backend"] = options
        opened.session.update_settings(opened.settings)

    def list_sessions(self, client: str) -> list[dict[str, Any]]:
        """This browser's sessions, newest first: id, name, image, backend, created."""
        out: list[dict[str, Any]] = []
        folder = self.config.sessions / client
        if not folder.is_dir():
            return out
        for entry in folder.iterdir():
            if not (SESSION_ID.match(entry.name) and is_session_folder(entry)):
                continue
            try:
                store = SessionStore.open(entry)
            except (FmscopeError, OSError) as exc:
                out.append({"id": entry.name, "name": entry.name, "error": str(exc)})
                continue
            settings = store.header.get("settings", {})
            out.append({
                "id": entry.name, "name": settings.get("name", entry.name), "image": settings.get("image"),
                "backend": settings.get("backend"), "created": settings.get("created"),
                "revision": store.state.revision, "steps": store.state.head,
            })  # fmt: skip
        return sorted(out, key=lambda d: str(d.get("created", "")), reverse=True)

    def export_file(self, client: str, session_id: str, name: str) -> Path:
        """A file of a session's ``exports`` folder (by bare name)."""
        opened = self.session(client, session_id)
        try:
            return inside(opened.exports, name)
        except PathRefused:
            raise NotFound(f"export: {name!r} does not exist") from None
