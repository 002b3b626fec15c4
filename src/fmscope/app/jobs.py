"""Long work off the request path: one worker thread runs jobs in turn, each with progress and a cancel flag.

Propagating through a stack, segmenting everything or embedding a whole stack takes seconds to minutes on a CPU; the
page must stay usable meanwhile (viewing, clicking on another slice). A :class:`JobRunner` runs such work on a single
worker thread, so two jobs never fight over the cores or a model; the page polls :meth:`Job.status`. The work gets a
progress callback (the library's ``(done, total, message)``) that raises :class:`JobCancelled` once cancel was asked
for, so a library function stops at its next step and commits nothing. An error is kept as the library's one-line
message.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from fmscope.errors import FmscopeError

logger = logging.getLogger(__name__)

KEEP_FINISHED = 200  # finished jobs remembered (per runner) for the page to read their outcome


class JobCancelled(Exception):
    """Raised inside a job's work by its progress callback after cancel was asked for."""


ProgressFn = Callable[..., None]


@dataclass
class Job:
    """One piece of long work and what the page sees of it."""

    id: str
    owner: str
    kind: str
    label: str
    state: str = "queued"  # queued, running, done, failed, cancelled
    done: int = 0
    total: int | None = None
    message: str = ""
    error: str | None = None
    result: Any = None
    created: float = field(default_factory=time.time)
    finished: float | None = None
    _cancel: threading.Event = field(default_factory=threading.Event)

    def progress(self, done: int, total: int | None = None, message: str = "") -> None:
        """The library's progress callback; raises :class:`JobCancelled` after :meth:`cancel`."""
        if self._cancel.is_set():
            raise JobCancelled(self.id)
        self.done, self.total = int(done), total
        if message:
            self.message = message

    def cancel(self) -> bool:
        """Ask the job to stop (a queued job never starts); False when it has already finished."""
        if self.state in ("done", "failed", "cancelled"):
            return False
        self._cancel.set()
        return True

    def status(self) -> dict[str, Any]:
        return {
            "id": self.id, "kind": self.kind, "label": self.label, "state": self.state, "done": self.done,
            "total": self.total, "message": self.message, "error": self.error,
            "result": self.result if self.state == "done" else None,
            "seconds": round((self.finished or time.time()) - self.created, 2),
        }  # fmt: skip


class JobRunner:
    """Jobs of every browser, run one at a time on one worker thread (see the module doc)."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fmscope-job")
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def submit(self, owner: str, kind: str, label: str, work: Callable[[Job], Any]) -> Job:
        """Queue ``work(job)``; its return value becomes ``job.result`` (JSON-ready)."""
        job = Job(uuid.uuid4().hex[:16], owner, kind, label)
        with self._lock:
            self._jobs[job.id] = job
            self._trim()
        self._pool.submit(self._run, job, work)
        return job

    def _run(self, job: Job, work: Callable[[Job], Any]) -> None:
        if job._cancel.is_set():
            job.state, job.finished = "cancelled", time.time()
            return
        job.state = "running"
        try:
            job.result = work(job)
            job.state = "done"
        except JobCancelled:
            job.state = "cancelled"
        except (FmscopeError, ValueError, OSError) as exc:  # the library's one-line messages
            job.state, job.error = "failed", str(exc)
            logger.info("job %s (%s) failed: %s", job.id, job.kind, exc)
        except Exception as exc:  # an unexpected failure still ends as a message, the server goes on
            job.state, job.error = "failed", f"internal error: {type(exc).__name__}: {exc}"
            logger.exception("job %s (%s) failed", job.id, job.kind)
        finally:
            job.finished = time.time()

    def get(self, owner: str, job_id: str) -> Job | None:
        """The job, if it belongs to ``owner``."""
        with self._lock:
            job = self._jobs.get(job_id)
        return job if job is not None and job.owner == owner else None

    def list(self, owner: str) -> list[Job]:
        with self._lock:
            return [j for j in self._jobs.values() if j.owner == owner]

    def busy(self, owner: str, kind: str, label: str) -> Job | None:
        """A queued or running job of the same kind and label (the page asked twice)."""
        return next(
            (j for j in self.list(owner) if j.kind == kind and j.label == label and j.state in ("queued", "running")),
            None,
        )

    def _trim(self) -> None:
        finished = sorted((j for j in self._jobs.values() if j.finished), key=lambda j: j.finished or 0)
        for job in finished[: max(0, len(finished) - KEEP_FINISHED)]:
            self._jobs.pop(job.id, None)

    def shutdown(self) -> None:
        for job in list(self._jobs.values()):
            job.cancel()
        self._pool.shutdown(wait=True, cancel_futures=True)
