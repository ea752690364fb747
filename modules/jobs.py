"""The job queue shared by the UI and the API.

One worker thread runs jobs in submission order.  Each job has an id, a
position in the queue, progress with ETA, an on-demand live preview, and can
be interrupted (also while it still waits) or skipped.  Finished jobs are kept
in memory for a while and recorded on disk (`log/jobs/<id>.json`) so a reloaded
page or a restarted server can still find what a job produced.
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
from typing import Any, Callable

from modules.engine import GenerationRequest, GenerationResult, JobControl, RequestError

log = logging.getLogger(__name__)


class QueueFull(Exception):
    pass


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

    @property
    def finished_ok(self) -> bool:
        return self.status == "done"

    def summary(self, position: int | None = None) -> dict:
        c = self.control
        return {
            "id": self.id, "status": self.status, "position": position, "source": self.source,
            "progress": 1.0 if self.status in ("done",) else c.progress,
            "step": c.step, "total_steps": c.total_steps, "eta": c.eta,
            "error": self.error, "created": self.created, "started": self.started, "finished": self.finished,
            "files": list(self.result.saved_files) if self.result else [],
        }


class JobQueue:
    def __init__(self, runner: Callable[[Job], GenerationResult], max_size: int = 64, history: int = 100,
                 record_dir: str | os.PathLike | None = None):
        self.runner = runner
        self.max_size = max_size
        self._pending: collections.deque[Job] = collections.deque()
        self._jobs: "collections.OrderedDict[str, Job]" = collections.OrderedDict()
        self._history = history
        self._cv = threading.Condition()
        self.current: Job | None = None
        self.record_dir = Path(record_dir) if record_dir else None
        self._stop = False
        self._worker = threading.Thread(target=self._work, name="job-worker", daemon=True)
        self._worker.start()

    # -- submission ---------------------------------------------------------
    def submit(self, request: GenerationRequest, checkpoint: str | None = None, vae: str | None = None,
               source: str = "ui") -> Job:
        job = Job(id=uuid.uuid4().hex[:16], request=request, checkpoint=checkpoint, vae=vae, source=source)
        with self._cv:
            if len(self._pending) >= self.max_size:
                raise QueueFull(f"the queue is full ({self.max_size} jobs waiting); try again later")
            self._pending.append(job)
            self._jobs[job.id] = job
            while len(self._jobs) > self._history + len(self._pending) + 1:
                oldest = next(iter(self._jobs))
                if self._jobs[oldest].status in ("queued", "running"):
                    break
                self._jobs.pop(oldest)
            self._cv.notify_all()
        return job

    def run_sync(self, request: GenerationRequest, checkpoint=None, vae=None, source="api",
                 timeout: float | None = None) -> Job:
        job = self.submit(request, checkpoint, vae, source)
        job.done_event.wait(timeout)
        return job

    # -- lookup / control -----------------------------------------------------
    def get(self, job_id: str) -> Job:
        with self._cv:
            job = self._jobs.get(job_id)
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
            job = self.current if job_id is None else self._jobs.get(job_id)
            if job is None:
                return False
            if job.status == "queued":
                self._pending.remove(job)
                job.status = "interrupted"
                job.finished = time.time()
                job.error = "interrupted before it started"
                job.done_event.set()
                return True
        job.control.interrupt()
        return True

    def skip(self, job_id: str | None = None) -> bool:
        job = self.current if job_id is None else self._jobs.get(job_id)
        if job is None or job.status != "running":
            return False
        job.control.skip()
        return True

    def stop(self):
        with self._cv:
            self._stop = True
            self._cv.notify_all()

    # -- the worker ---------------------------------------------------------------
    def _work(self):
        while True:
            with self._cv:
                while not self._pending and not self._stop:
                    self._cv.wait()
                if self._stop:
                    return
                job = self._pending.popleft()
                self.current = job
                job.status = "running"
                job.started = time.time()
                job.control.started = job.started
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
        if self.record_dir is None or not all(c in "0123456789abcdef" for c in job_id):
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
