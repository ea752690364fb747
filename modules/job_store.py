"""The job queue on disk: one SQLite database, so accepted jobs outlive a crash or a restart.

``<data-dir>/log/queue.sqlite3`` holds one row per job: its whole request (every
:class:`~modules.engine.GenerationRequest` field as JSON, override settings and scripts included), the
checkpoint and VAE it asked for, where it came from, and its state as it changes (queued -> running ->
done | failed | interrupted, the times, the error, the files it saved, their infotexts and seeds).  Init
images and masks are PNG files in ``log/queue-images/<job id>/`` (written to a temp file, synced and moved
into place), referenced from the request by a path relative to that folder; they are deleted when the
job ends.

The database runs in WAL mode with ``synchronous=FULL``: in WAL mode NORMAL already survives a killed
process, but after a power loss it may lose the last commits, and a job the API or the page has been told
is accepted must not vanish.  A job makes a handful of commits, so the extra fsync costs nothing that
matters next to generating a picture.

Several servers may share a data dir (one per GPU, as with A1111): every queue is an *owner* with a lock
file (``log/queue-owners/<token>.lock``, held with ``flock`` while the queue lives).  At start a queue
takes over the unfinished jobs of owners whose lock is free (they crashed or stopped), never those of a
live one.

One connection serves all threads (the worker and the request threads), behind a lock.  Finished rows are
kept up to :data:`HISTORY_ROWS`; older ones are deleted.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from PIL import Image

from modules.engine import GenerationRequest
from modules.scripts import Args

try:
    import fcntl
except ImportError:  # Windows: no owner locks; every earlier owner counts as gone
    fcntl = None

log = logging.getLogger(__name__)

DB_NAME = "queue.sqlite3"
IMAGES_DIR = "queue-images"
OWNERS_DIR = "queue-owners"
HISTORY_ROWS = 5000            # finished jobs kept in the store (the newest); older rows are deleted
PRUNE_EVERY = 50               # finished jobs between two prunings
UNFINISHED = ("queued", "running")
PNG_MODES = {"1", "L", "LA", "P", "RGB", "RGBA", "I", "I;16"}

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- submission order
    id TEXT NOT NULL UNIQUE,
    task_id TEXT,                           -- the API's force_task_id, if any
    owner TEXT NOT NULL,
    status TEXT NOT NULL,
    source TEXT NOT NULL,
    checkpoint TEXT,
    vae TEXT,
    request TEXT NOT NULL,                  -- JSON of every GenerationRequest field
    problem TEXT,                           -- why the request could not be stored whole (it cannot be resumed)
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    attempts INTEGER NOT NULL DEFAULT 0,    -- how often it started running
    error TEXT,
    error_field TEXT,
    result TEXT                             -- JSON: files, infotexts, seeds, ...
);
CREATE INDEX IF NOT EXISTS jobs_task ON jobs(task_id);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status, seq);
"""


class StoreError(Exception):
    """The store could not record or read a job."""


class NotStorable(StoreError):
    """A request value that has no form on disk."""


# ---------------------------------------------------------------------------------------------
# requests <-> JSON (images as files beside the database)


class _Encoder:
    def __init__(self, folder: Path, rel: str):
        self.folder, self.rel = folder, rel
        self.count = 0

    def value(self, v: Any, where: str) -> Any:
        if v is None or isinstance(v, (bool, int, float, str)):
            return v
        if isinstance(v, Image.Image):
            return {"$image": self.image(v, where)}
        if isinstance(v, (list, tuple)):
            return [self.value(x, f"{where}[{i}]") for i, x in enumerate(v)]
        if isinstance(v, dict):
            return self.mapping(v, where)
        raise NotStorable(f"{where} holds a value of type {type(v).__name__}, which cannot be stored")

    def mapping(self, v: dict, where: str) -> dict:
        if not all(isinstance(k, str) for k in v):
            raise NotStorable(f"{where} has keys that are not text")
        out = {k: self.value(x, f"{where}.{k}") for k, x in v.items()}
        if isinstance(v, Args):   # a script's arguments by name: rebuilt as such
            return {"$args": out}
        return {"$dict": out} if any(k.startswith("$") for k in v) else out

    def image(self, im: Image.Image, where: str) -> str:
        name = f"{self.count:02d}-{''.join(c if c.isalnum() else '_' for c in where)}.png"
        self.count += 1
        self.folder.mkdir(parents=True, exist_ok=True)
        if im.mode not in PNG_MODES:
            im = im.convert("RGBA" if "A" in im.getbands() else "RGB")
        write_atomic(self.folder / name, lambda fh: im.save(fh, "PNG", compress_level=1))
        return f"{self.rel}/{name}"


def write_atomic(path: Path, write) -> None:
    """`write(fh)` into a temp file beside `path`, synced, then moved to `path` (never a half file there)."""
    tmp = path.with_name(f".tmp-{os.getpid()}-{uuid.uuid4().hex}{path.suffix}")
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    sync_dir(path.parent)


def sync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def encode_request(req: GenerationRequest, folder: Path, rel: str) -> tuple[dict, str | None]:
    """(the request as JSON values, None) or, where a value cannot be stored, (what could be, the reason)."""
    enc = _Encoder(folder, rel)
    out: dict[str, Any] = {}
    problem = None
    for f in dataclasses.fields(req):
        if not f.compare:   # not part of what the request asks (e.g. the limits the app attaches at admission)
            continue
        try:
            out[f.name] = enc.value(getattr(req, f.name), f.name)
        except NotStorable as e:
            problem = problem or str(e)
    return out, problem


def _decode(v: Any, root: Path) -> Any:
    if isinstance(v, list):
        return [_decode(x, root) for x in v]
    if not isinstance(v, dict):
        return v
    if set(v) == {"$image"}:
        return _load_image(root / v["$image"])
    if set(v) == {"$args"}:
        return Args({k: _decode(x, root) for k, x in v["$args"].items()})
    if set(v) == {"$dict"}:
        v = v["$dict"]
    return {k: _decode(x, root) for k, x in v.items()}


def _load_image(path: Path) -> Image.Image:
    try:
        with Image.open(path) as im:
            im.load()
            return im.copy()
    except OSError as e:
        raise StoreError(f"its image {path.name} could not be read back ({e})") from None


def decode_request(data: dict, root: Path) -> GenerationRequest:
    """The request again (fields unknown to this version are dropped; missing ones take their defaults)."""
    names = {f.name for f in dataclasses.fields(GenerationRequest)}
    return GenerationRequest(**{k: _decode(v, root) for k, v in data.items() if k in names})


# ---------------------------------------------------------------------------------------------
# owners: which queue (process) a job belongs to


class Owner:
    """This queue's lock file, held while it lives; the token written into its jobs' rows."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.token = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"{self.token}.lock"
        self._fh = open(self.path, "w")   # not inherited by children or an exec'd restart (PEP 446)
        if fcntl is not None:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)

    def release(self) -> None:
        if self._fh is not None:
            self.path.unlink(missing_ok=True)
            self._fh.close()
            self._fh = None


def owner_is_alive(folder: Path, token: str) -> bool:
    """Whether another live queue holds `token`'s lock (a crashed or stopped one has released it)."""
    path = folder / f"{token}.lock"
    if fcntl is None or not path.exists():
        return False
    try:
        with open(path, "a") as fh:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return True
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
    except OSError:
        return False
    return False


# ---------------------------------------------------------------------------------------------
# the store


class JobStore:
    """The rows of the jobs of one data dir (see the module docstring)."""

    def __init__(self, folder: str | os.PathLike, history: int = HISTORY_ROWS):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / DB_NAME
        self.images = self.folder / IMAGES_DIR
        self.history = history
        self._lock = threading.Lock()
        self._finished_since_prune = 0
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        self.owner = Owner(self.folder / OWNERS_DIR)
        self.prune()

    def _exec(self, sql: str, args: tuple = ()) -> sqlite3.Cursor:
        with self._lock:
            try:
                return self._db.execute(sql, args)
            except sqlite3.Error as e:
                raise StoreError(f"the job store ({self.path}): {e}") from e

    def _rows(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        with self._lock:
            try:
                return self._db.execute(sql, args).fetchall()
            except sqlite3.Error as e:
                raise StoreError(f"the job store ({self.path}): {e}") from e

    # -- writing -------------------------------------------------------------------------------
    def add(self, job) -> None:
        """Record a new job (its request whole, images as files) before the queue acknowledges it."""
        folder = self.images / job.id
        try:
            data, problem = encode_request(job.request, folder, job.id)
            text = json.dumps(data, ensure_ascii=False)
        except (OSError, ValueError) as e:
            shutil.rmtree(folder, ignore_errors=True)
            raise StoreError(f"the job's request could not be written: {e}") from e
        if problem:
            log.warning("job %s cannot be resumed after a restart: %s", job.id, problem)
        self._exec("INSERT INTO jobs (id, task_id, owner, status, source, checkpoint, vae, request, problem, created)"
                   " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   (job.id, job.task_id, self.owner.token, job.status, job.source, job.checkpoint, job.vae, text,
                    problem, job.created))

    def started(self, job) -> None:
        self._exec("UPDATE jobs SET status = 'running', started = ?, attempts = attempts + 1 WHERE id = ?",
                   (job.started, job.id))

    def finished(self, job) -> None:
        """The end of a job: its state, error and result; its images are no longer needed."""
        self._exec("UPDATE jobs SET status = ?, started = ?, finished = ?, error = ?, error_field = ?, result = ?"
                   " WHERE id = ?", (job.status, job.started, job.finished, job.error, job.error_field,
                                     json.dumps(result_data(job.result), ensure_ascii=False, default=str), job.id))
        shutil.rmtree(self.images / job.id, ignore_errors=True)
        self._finished_since_prune += 1
        if self._finished_since_prune >= PRUNE_EVERY:
            self.prune()

    def requeued(self, job) -> None:
        """A job taken over after a restart waits again (it starts from its first step)."""
        self._exec("UPDATE jobs SET status = 'queued', started = NULL, owner = ? WHERE id = ?",
                   (self.owner.token, job.id))

    def prune(self) -> None:
        """Delete the finished rows beyond the newest `history` ones (and any images they left)."""
        self._finished_since_prune = 0
        rows = self._rows("SELECT id FROM jobs WHERE status NOT IN ('queued', 'running') ORDER BY seq DESC"
                          " LIMIT -1 OFFSET ?", (self.history,))
        for row in rows:
            shutil.rmtree(self.images / row["id"], ignore_errors=True)
        if rows:
            self._exec("DELETE FROM jobs WHERE seq <= (SELECT seq FROM jobs WHERE status NOT IN ('queued', 'running')"
                       " ORDER BY seq DESC LIMIT 1 OFFSET ?) AND status NOT IN ('queued', 'running')", (self.history,))

    # -- reading -------------------------------------------------------------------------------
    def load(self, key: str) -> dict | None:
        """The row of a job by its id, else by the task id it was submitted with (the newest such job)."""
        rows = self._rows("SELECT * FROM jobs WHERE id = ?", (key,)) or \
            self._rows("SELECT * FROM jobs WHERE task_id = ? ORDER BY seq DESC LIMIT 1", (key,))
        return self.row_data(rows[0]) if rows else None

    def take_over(self) -> list[dict]:
        """The unfinished jobs of every owner that is gone, in submission order, now this queue's."""
        rows = self._rows("SELECT * FROM jobs WHERE status IN ('queued', 'running') AND owner != ? ORDER BY seq",
                          (self.owner.token,))
        alive: dict[str, bool] = {}
        mine = []
        for row in rows:
            token = row["owner"]
            if token not in alive:
                alive[token] = owner_is_alive(self.folder / OWNERS_DIR, token)
            if alive[token]:
                continue
            claimed = self._exec("UPDATE jobs SET owner = ? WHERE id = ? AND owner = ?",
                                 (self.owner.token, row["id"], token)).rowcount
            if claimed:
                mine.append(self.row_data(row))
        for token, live in alive.items():
            if not live:
                (self.folder / OWNERS_DIR / f"{token}.lock").unlink(missing_ok=True)
        self._sweep_owners()
        return mine

    def _sweep_owners(self) -> None:
        """Delete the lock files of owners that are gone (a killed server leaves its file; a live owner locks its
        file as it creates it, so one older than a minute and unlocked is a dead one's)."""
        folder = self.folder / OWNERS_DIR
        now = time.time()
        for path in folder.glob("*.lock"):
            token = path.stem
            if token != self.owner.token and _age(path, now) > 60 and not owner_is_alive(folder, token):
                path.unlink(missing_ok=True)

    def row_data(self, row: sqlite3.Row) -> dict:
        """A row as a dict; `request` decoded (None, with `problem` saying why, where it cannot be)."""
        data = dict(row)
        data["result"] = json.loads(data["result"]) if data["result"] else None
        try:
            data["request"] = decode_request(json.loads(data["request"]), self.images)
        except (StoreError, TypeError, ValueError) as e:
            data["request"], data["problem"] = None, data["problem"] or str(e)
        return data

    def close(self) -> None:
        self.owner.release()
        with self._lock:
            self._db.close()


def result_data(result) -> dict | None:
    if result is None:
        return None
    return {"files": list(result.saved_files), "grid_file": result.grid_file, "infotexts": list(result.infotexts),
            "seeds": list(result.seeds), "subseeds": list(result.subseeds), "warnings": list(result.warnings),
            "interrupted": bool(result.interrupted), "seconds": result.seconds}


# ---------------------------------------------------------------------------------------------
# outputs: what a killed save leaves behind

TEMP_PREFIX = ".tmp-"   # modules.images.save_image's temp files: .tmp-<pid>-<hex>.<ext>
TEMP_MAX_AGE = 3600.0   # seconds


def sweep_temp_files(folders) -> list[Path]:
    """Delete the temp files a killed save left in `folders` (and below): files named ``.tmp-<pid>-...`` whose
    process is gone (or that are older than :data:`TEMP_MAX_AGE`: a save never takes that long, and the pid
    may have been reused).  Returns what was deleted."""
    gone = []
    now = time.time()
    for folder in {Path(f) for f in folders}:
        if not folder.is_dir():
            continue
        for dirpath, _dirs, files in os.walk(folder):
            for name in files:
                path = Path(dirpath) / name
                if name.startswith(TEMP_PREFIX) and (not _pid_alive(name) or _age(path, now) > TEMP_MAX_AGE):
                    try:
                        path.unlink()
                        gone.append(path)
                    except OSError as e:
                        log.warning("could not delete %s: %s", path, e)
    return gone


def _age(path: Path, now: float) -> float:
    try:
        return now - path.stat().st_mtime
    except OSError:
        return 0.0


def _pid_alive(name: str) -> bool:
    """Whether the process named in a temp file's name is running (this one counts as alive)."""
    pid = name[len(TEMP_PREFIX):].split("-", 1)[0]
    if not pid.isdigit():
        return False
    if int(pid) == os.getpid():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True
