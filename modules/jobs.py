"""The job queue shared by the UI and the API.

One worker thread runs jobs in submission order.  Each job has an id, a
position in the queue, progress with ETA, an on-demand live preview, and can
be interrupted (also while it still waits) or skipped.

With a :class:`~modules.job_store.JobStore` (the app always has one) every accepted job is written to
disk before :meth:`JobQueue.submit` returns, and each change of its state as it happens; at the next start
:meth:`JobQueue.resume` runs again the jobs that were waiting or running (a running one from its first
step, with the same seeds), in their order and with their ids, and a reloaded page or an API client finds
any job by id in the store.  Recent jobs are also kept in memory.
"""
from __future__ import annotations

import collections
import json
import logging
import os
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from modules import rng
from modules.engine import GenerationRequest, GenerationResult, JobControl, RequestError
from modules.job_store import JobStore, StoreError

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3   # a job during which the server died this often is not started again (it may be the cause)


class QueueFull(Exception):
    pass


class NotRecorded(QueueFull):
    """The store could not write the job down, so it was not accepted."""


class JobNotFound(KeyError):
    pass


@dataclass
class Job:
    id: str
    request: GenerationRequest
    checkpoint: str | None
    vae: str | None
    source: str = "ui"
    status: str = "queued"            # queued | running | done | failed | interrupted
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    control: JobControl = field(default_factory=JobControl)
    result: GenerationResult | None = None
    error: str | None = None
    error_field: str | None = None
    done_event: threading.Event = field(default_factory=threading.Event)
    task_id: str | None = None        # the API's force_task_id

    @property
    def finished_ok(self) -> bool:
        return self.status == "done"

    def summary(self, position: int | None = None) -> dict:
        c = self.control
        return {
            "id": self.id, "task_id": self.task_id, "status": self.status, "position": position,
            "source": self.source, "progress": 1.0 if self.status in ("done",) else c.progress,
            "step": c.step, "total_steps": c.total_steps, "eta": c.eta,
            "error": self.error, "created": self.created, "started": self.started, "finished": self.finished,
            "files": list(self.result.saved_files) if self.result else [],
        }


def fix_seeds(req: GenerationRequest) -> None:
    """Draw a plain job's random seed (-1) now, so a job run again after a restart makes the same picture.
    A script's job keeps its -1: some scripts give every inner job a random seed of its own."""
    if req.script_name:
        return
    if req.seed == -1:
        req.seed = rng.fix_seed(-1)
    if req.subseed == -1 and req.subseed_strength:
        req.subseed = rng.fix_seed(-1)


def job_from_row(row: dict) -> Job:
    """A job as the store has it (the request is an empty one where it could not be read back)."""
    job = Job(id=row["id"], request=row["request"] or GenerationRequest(), checkpoint=row["checkpoint"],
              vae=row["vae"], source=row["source"], status=row["status"], created=row["created"],
              started=row["started"], finished=row["finished"], error=row["error"], error_field=row["error_field"],
              task_id=row["task_id"])
    res = row["result"]
    if res is not None:
        job.result = GenerationResult(
            infotexts=res.get("infotexts", []), seeds=res.get("seeds", []), subseeds=res.get("subseeds", []),
            saved_files=res.get("files", []), grid_file=res.get("grid_file"), warnings=res.get("warnings", []),
            interrupted=bool(res.get("interrupted")), seconds=float(res.get("seconds") or 0.0))
    return job


class JobQueue:
    def __init__(self, runner: Callable[[Job], GenerationResult], max_size: int = 64, history: int = 100,
                 record_dir: str | os.PathLike | None = None, store: JobStore | None = None):
        self.runner = runner
        self.max_size = max_size
        self._pending: collections.deque[Job] = collections.deque()
        self._jobs: "collections.OrderedDict[str, Job]" = collections.OrderedDict()
        self._history = history
        self._cv = threading.Condition()
        self._submit_lock = threading.Lock()   # one submission at a time: the store's order is the queue's
        self.current: Job | None = None
        self.record_dir = Path(record_dir) if record_dir else None   # JSON records of older versions (read)
        self.store = store
        self._stop = False
        self._worker = threading.Thread(target=self._work, name="job-worker", daemon=True)
        self._worker.start()

    # -- submission ---------------------------------------------------------
    def submit(self, request: GenerationRequest, checkpoint: str | None = None, vae: str | None = None,
               source: str = "ui", task_id: str | None = None) -> Job:
        """Queue a job; with a store it is on disk when this returns (NotRecorded where it cannot be)."""
        fix_seeds(request)
        job = Job(id=uuid.uuid4().hex[:16], request=request, checkpoint=checkpoint, vae=vae, source=source,
                  task_id=task_id)
        with self._submit_lock:
            with self._cv:
                if len(self._pending) >= self.max_size:
                    raise QueueFull(f"the queue is full ({self.max_size} jobs waiting); try again later")
            if self.store is not None:
                try:
                    self.store.add(job)
                except StoreError as e:
                    raise NotRecorded(f"the job could not be written down, so it was not queued: {e}") from None
            with self._cv:
                self._pending.append(job)
                self._remember(job)
                self._cv.notify_all()
        return job

    def _remember(self, job: Job) -> None:
        """Keep `job` in memory (called with the lock held); the oldest finished ones are let go."""
        self._jobs[job.id] = job
        while len(self._jobs) > self._history + len(self._pending) + 1:
            oldest = next(iter(self._jobs))
            if self._jobs[oldest].status in ("queued", "running"):
                break
            self._jobs.pop(oldest)

    def run_sync(self, request: GenerationRequest, checkpoint=None, vae=None, source="api",
                 timeout: float | None = None) -> Job:
        job = self.submit(request, checkpoint, vae, source)
        job.done_event.wait(timeout)
        return job

    # -- after a restart ----------------------------------------------------------
    def resume(self, check: Callable[[Job], str | None] = lambda job: None) -> list[Job]:
        """Queue again the jobs a stopped or crashed server left waiting or running, in their order and with
        their ids, ahead of new ones.  `check(job)` says why one cannot run any more (None: it can); such a
        job, and one whose request could not be read back, is failed with the reason.  Returns the queued."""
        if self.store is None:
            return []
        try:
            rows = self.store.take_over()
        except StoreError as e:
            log.error("could not read the queue of the last run: %s", e)
            return []
        again = []
        for row in rows:
            job = job_from_row(row)
            reason = self._why_not(job, row, check)
            if reason:
                self._fail_resumed(job, reason)
            else:
                again.append(job)
        self._queue_first(again)
        if rows:
            log.info("jobs from the last run: %d queued again, %d failed", len(again), len(rows) - len(again))
        return again

    @staticmethod
    def _why_not(job: Job, row: dict, check: Callable[[Job], str | None]) -> str | None:
        if row["problem"]:
            return row["problem"]
        if row["status"] == "running" and row["attempts"] >= MAX_ATTEMPTS:
            return f"the server stopped {row['attempts']} times while it ran, so it is not started again"
        try:
            return check(job)
        except Exception as e:  # noqa: BLE001 - whatever the check meets is the reason
            return str(e) or e.__class__.__name__

    def _fail_resumed(self, job: Job, reason: str) -> None:
        job.status, job.finished = "failed", time.time()
        job.error = f"not run again after the restart: {reason}"
        log.warning("job %s: %s", job.id, job.error)
        self._record(job)
        job.done_event.set()
        with self._cv:
            self._remember(job)

    def _queue_first(self, again: list[Job]) -> None:
        with self._submit_lock:
            for job in again:
                job.status, job.started, job.finished = "queued", None, None
                try:
                    self.store.requeued(job)
                except StoreError as e:
                    log.warning("job %s: %s", job.id, e)
            with self._cv:
                self._pending.extendleft(reversed(again))
                for job in again:
                    self._remember(job)
                self._cv.notify_all()

    # -- lookup / control -----------------------------------------------------
    def _live(self, key: str | None) -> Job | None:
        """The job in memory with id `key`, else the newest with that task id (called with the lock held)."""
        job = self._jobs.get(key)
        if job is None and key:
            job = next((j for j in reversed(self._jobs.values()) if j.task_id == key), None)
        return job

    def get(self, job_id: str) -> Job:
        """A job by id (or the API's task id): the live one, else the store's record of it."""
        with self._cv:
            job = self._live(job_id)
        if job is None and self.store is not None:
            try:
                row = self.store.load(job_id)
            except StoreError as e:
                log.warning("%s", e)
                row = None
            if row is not None:
                job = job_from_row(row)
                job.done_event.set()   # a record, not a job that runs here: nothing more will happen to it
        if job is None:
            job = self._load_record(job_id)
        if job is None:
            raise JobNotFound(job_id)
        return job

    def position(self, job: Job) -> int | None:
        with self._cv:
            try:
                return list(self._pending).index(job) + 1
            except ValueError:
                return None

    def pending(self) -> list[Job]:
        with self._cv:
            return list(self._pending)

    def interrupt(self, job_id: str | None = None) -> bool:
        """Interrupt one job (running or waiting), or the running one when no id is given."""
        with self._cv:
            job = self.current if job_id is None else self._live(job_id)
            if job is None:
                return False
            waiting = job.status == "queued"
            if waiting:
                self._pending.remove(job)
                job.status = "interrupted"
                job.finished = time.time()
                job.error = "interrupted before it started"
        if waiting:
            self._record(job)
            job.done_event.set()
            return True
        job.control.interrupt()
        return True

    def skip(self, job_id: str | None = None) -> bool:
        with self._cv:
            job = self.current if job_id is None else self._live(job_id)
        if job is None or job.status != "running":
            return False
        job.control.skip()
        return True

    def stop(self, timeout: float = 0.0):
        """Stop after the running job (waiting up to `timeout` seconds for it); the waiting ones stay queued in
        the store for the next start."""
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        if timeout > 0 and self._worker is not threading.current_thread():
            self._worker.join(timeout)

    # -- the worker ---------------------------------------------------------------
    def _work(self):
        while True:
            job = self._next()
            if job is None:
                break
            self._run(job)
        if self.store is not None:
            self.store.owner.release()   # another queue on this data dir may now take the waiting jobs over

    def _next(self) -> Job | None:
        with self._cv:
            while not self._pending and not self._stop:
                self._cv.wait()
            if self._stop:
                return None
            job = self._pending.popleft()
            self.current = job
            job.status = "running"
            job.started = time.time()
            job.control.started = job.started
        if self.store is not None:
            try:
                self.store.started(job)
            except StoreError as e:
                log.warning("job %s: %s", job.id, e)
        return job

    def _run(self, job: Job) -> None:
        try:
            job.result = self.runner(job)
            job.status = "interrupted" if job.result.interrupted else "done"
        except RequestError as e:
            job.status, job.error, job.error_field = "failed", str(e), e.field
        except Exception as e:  # noqa: BLE001 - a failed job must not stop the queue
            log.error("job %s failed: %s\n%s", job.id, e, traceback.format_exc())
            job.status, job.error = "failed", str(e) or e.__class__.__name__
        finally:
            job.finished = time.time()
            with self._cv:
                self.current = None
            self._record(job)
            job.done_event.set()

    # -- records on disk ------------------------------------------------------------
    def _record(self, job: Job) -> None:
        """The end of a job, in the store (or, for a queue without one, as `record_dir/<id>.json`)."""
        if self.store is not None:
            try:
                self.store.finished(job)
            except StoreError as e:
                log.warning("could not record job %s: %s", job.id, e)
            return
        if self.record_dir is None:
            return
        try:
            self.record_dir.mkdir(parents=True, exist_ok=True)
            data = job.summary()
            if job.result is not None:
                data["infotexts"] = job.result.infotexts
                data["seeds"] = job.result.seeds
            tmp = self.record_dir / f".{job.id}.tmp"
            tmp.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
            os.replace(tmp, self.record_dir / f"{job.id}.json")
        except OSError as e:
            log.warning("could not record job %s: %s", job.id, e)

    def _load_record(self, job_id: str) -> Job | None:
        """A job from a JSON record (what versions before the store wrote to log/jobs/)."""
        if self.record_dir is None or not job_id or not all(c in "0123456789abcdef" for c in job_id):
            return None
        path = self.record_dir / f"{job_id}.json"
        if not path.is_file():
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
        job = Job(id=job_id, request=GenerationRequest(), checkpoint=None, vae=None, source=data.get("source", "ui"))
        job.status, job.error = data["status"], data.get("error")
        job.created, job.started, job.finished = data.get("created", 0), data.get("started"), data.get("finished")
        job.result = GenerationResult(images=[], infotexts=data.get("infotexts", []), seeds=data.get("seeds", []),
                                      subseeds=[], prompts=[], negative_prompts=[], saved_files=data.get("files", []))
        job.done_event.set()
        return job
