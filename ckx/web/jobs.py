"""The web API's contexts and jobs: a pool of reusable contexts for request threads, long actions on a thread pool."""
from __future__ import annotations

import concurrent.futures
import contextlib
import datetime as _dt
import logging
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Iterator

from ckx.api import Action, access
from ckx.core.home import Home
from ckx.core.report import Reporter
from ckx.store.context import Context
from ckx.web.policy import http_status

log = logging.getLogger(__name__)

JOBS_KEPT = 200
JOB_WORKERS = 2


# =========================================================================== contexts and jobs


class _Pooled:
    __slots__ = ("ctx", "generation", "checked")

    def __init__(self, ctx: Context, generation: int) -> None:
        self.ctx = ctx
        self.generation = generation
        self.checked = time.monotonic()


class ContextPool:
    """Contexts for request threads: each one is used by one thread at a time and reused afterwards.

    A reused context re-reads the registry and re-checks the disk when this server changed
    something (``invalidate``) or when it is older than ``refresh_interval`` seconds, so changes made
    by other processes show within that interval (0: on every request).
    """

    def __init__(self, home: Home, *, refresh_interval: float = 1.0, keep: int = 16) -> None:
        self.home = home
        self.refresh_interval = refresh_interval
        self.keep = keep
        self._idle: list[_Pooled] = []
        self._lock = threading.Lock()
        self._generation = 0

    def invalidate(self) -> None:
        """Something was written: every context re-reads the registry and index before its next use."""
        with self._lock:
            self._generation += 1

    def new_context(self) -> Context:
        """A fresh non-interactive context on this pool's home."""
        return Context(self.home, reporter=Reporter(), quiet=True, interactive=False)

    @contextlib.contextmanager
    def borrow(self) -> Iterator[Context]:
        """A context for one request, with a fresh reporter."""
        with self._lock:
            pooled = self._idle.pop() if self._idle else None
            generation = self._generation
        if pooled is None:
            pooled = _Pooled(self.new_context(), generation)
        elif pooled.generation != generation:
            pooled.ctx.forget_registry()  # this server wrote something: start from the registry
            pooled.generation = generation
            pooled.checked = time.monotonic()
        elif time.monotonic() - pooled.checked >= self.refresh_interval:
            pooled.ctx.expire()  # others may have written: re-check the disk, keep the connection
            pooled.checked = time.monotonic()
        pooled.ctx.reporter = Reporter()
        try:
            yield pooled.ctx
        except BaseException:
            pooled.ctx.close()
            raise
        with self._lock:
            if len(self._idle) < self.keep:
                self._idle.append(pooled)
                return
        pooled.ctx.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for pooled in idle:
            pooled.ctx.close()


@dataclass
class Job:
    """A long action run in the background. Mutable: the worker updates it under the manager's lock."""

    id: str
    action: str
    module: str | None
    created: str
    status: str = "queued"  # queued, running, done, failed
    started: str | None = None
    finished: str | None = None
    result: dict | None = None

    def to_dict(self) -> dict:
        data: dict[str, Any] = {"return": 0, "job": self.id, "action": self.action, "module": self.module,
                                "status": self.status, "created": self.created}
        for key in ("started", "finished"):
            if getattr(self, key):
                data[key] = getattr(self, key)
        if self.result is not None:
            data["result"] = self.result
            data["http_status"] = http_status(self.result)
        return data


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


class JobManager:
    """Runs long actions on a small thread pool; remembers the last ``keep`` jobs."""

    def __init__(self, pool: ContextPool, *, workers: int = JOB_WORKERS, keep: int = JOBS_KEPT) -> None:
        self.pool = pool
        self.keep = keep
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ckx-job")

    def submit(self, request: dict, action: Action) -> Job:
        """Queue ``request`` (already checked) and return its job."""
        job = Job(secrets.token_hex(8), action.name, action.module, _now())
        with self._lock:
            self._jobs[job.id] = job
            while len(self._jobs) > self.keep:
                oldest = next(iter(self._jobs))
                if self._jobs[oldest].status in ("queued", "running"):
                    break
                del self._jobs[oldest]
        self._executor.submit(self._run, job, dict(request))
        return job

    def _run(self, job: Job, request: dict) -> None:
        with self._lock:
            job.status, job.started = "running", _now()
        ctx = self.pool.new_context()
        try:
            result = call_action(ctx, request)
        finally:
            ctx.close()
            self.pool.invalidate()
        with self._lock:
            job.result = result
            job.finished = _now()
            job.status = "done" if result.get("return") == 0 else "failed"

    def get(self, job_id: str) -> dict | None:
        """A job's state as JSON, or None when this server does not know it."""
        with self._lock:
            job = self._jobs.get(job_id)
            return None if job is None else job.to_dict()

    def summaries(self) -> list[dict]:
        """Every remembered job, oldest first, without results."""
        with self._lock:
            return [{k: v for k, v in job.to_dict().items() if k != "result"} for job in self._jobs.values()]

    def shutdown(self, *, wait: bool = False) -> None:
        self._executor.shutdown(wait=wait, cancel_futures=True)


def call_action(ctx: Context, request: dict) -> dict:
    """access() on a borrowed context, with the reporter's messages; a bug becomes a 500 result."""
    try:
        result = access(request, context=ctx)
    except Exception as exc:  # a bug in an action: answer it, keep serving
        log.exception("action %s failed", request.get("action"))
        return {"return": 1, "error": f"internal error: {type(exc).__name__}: {exc}", "error_type": "InternalError"}
    if ctx.reporter.messages:
        result.setdefault("messages", list(ctx.reporter.messages))
    return result


__all__ = ["ContextPool", "JOBS_KEPT", "JOB_WORKERS", "Job", "JobManager", "call_action"]
