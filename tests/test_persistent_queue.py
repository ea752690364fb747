"""The persistent job queue (modules/job_store.py, modules/jobs.py): the real server SIGKILLed while its 2nd of
6 jobs runs finishes all 6 after a restart, with the same pictures; and the store's rules, in process: order and
ids kept, a job whose checkpoint is gone failed naming it, an img2img job's images kept, interrupted jobs stay
interrupted, a live queue's jobs are left alone, bounded history, temp files of killed saves deleted."""
from __future__ import annotations

import base64
import io
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from modules import cmd_args, job_store, jobs
from modules.engine import GenerationRequest, GenerationResult

ROOT = Path(__file__).resolve().parents[1]
API = "/sdapi/v1"
STEPS = 30          # ~1 s a job on the tiny model: long enough to be killed mid-run
SMALL = {"width": 64, "height": 64, "steps": STEPS, "cfg_scale": 7.0}

httpx = pytest.importorskip("httpx")


def make_app(data):
    from modules.app import App

    return App(cmd_args.parse_args(["--data-dir", str(data), "--skip-install"]))


def tiny_data(path: Path, *names: str) -> Path:
    from testing.tiny_models import write_tiny_checkpoint

    for i, name in enumerate(names or ("tiny",)):
        write_tiny_checkpoint(path / "models" / "Stable-diffusion" / f"{name}.safetensors", "sd1", seed=i)
    return path


def pixels(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def output_files(data: Path) -> list[Path]:
    return sorted(p for p in (data / "outputs").rglob("*") if p.is_file())


# ---------------------------------------------------------------------------
# the real server, killed and started again


def payload(i: int) -> dict:
    return {"prompt": f"job number {i}", "seed": 100 + i, **SMALL, "save_images": True, "force_task_id": f"task-{i}"}


def start_server(data: Path, port: int, meanwhile=lambda: None) -> subprocess.Popen:
    """The real server (API only, one torch thread) on `data`, answering; `meanwhile()` runs while it starts."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-u", "webui.py", "--nowebui", "--skip-install", "--data-dir", str(data), "--port", str(port)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        meanwhile()
    except BaseException:
        proc.kill()
        raise
    deadline = time.time() + 90
    while time.time() < deadline:
        assert proc.poll() is None, proc.stderr.read()
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("the server did not start")


def job_state(url: str, key: str) -> dict | None:
    r = httpx.get(f"{url}{API}/jobs/{key}", timeout=5)
    return r.json() if r.status_code == 200 else None


def wait_for(what, timeout: float = 60, every: float = 0.02):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = what()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def post_quietly(url: str, body: dict, timeout: float = 120) -> None:
    try:
        httpx.post(f"{url}{API}/txt2img", json=body, timeout=timeout)
    except httpx.HTTPError:
        pass   # the server was killed under it, or the client gave up: the job goes on


def reference_pictures(tmp_path: Path, data: Path) -> list[np.ndarray]:
    """The same 6 requests in one uninterrupted run (in process, on a copy of the checkpoint)."""
    import torch
    from fastapi.testclient import TestClient

    import webui

    ref = tmp_path / "reference"
    shutil.copytree(data / "models", ref / "models")
    app = make_app(ref)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        client = TestClient(webui.create_server(app, with_ui=False, with_api=True))
        out = []
        for i in range(6):
            r = client.post(f"{API}/txt2img", json=payload(i))
            assert r.status_code == 200, r.text
            out.append(np.asarray(Image.open(io.BytesIO(base64.b64decode(r.json()["images"][0]))).convert("RGB")))
        return out
    finally:
        torch.set_num_threads(threads)
        app.queue.stop()


def test_a_killed_server_finishes_every_accepted_job_after_a_restart(tmp_path):
    from tests.browser_support import free_port

    data = tiny_data(tmp_path / "data")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    reference: list[np.ndarray] = []
    proc = start_server(data, port, meanwhile=lambda: reference.extend(reference_pictures(tmp_path, data)))
    try:
        posters = []
        for i in range(6):   # one after the other, so the queue's order is known: each is accepted first
            t = threading.Thread(target=post_quietly, args=(url, payload(i)), daemon=True)
            t.start()
            posters.append(t)
            wait_for(lambda i=i: job_state(url, f"task-{i}"))
        ids = [job_state(url, f"task-{i}")["id"] for i in range(6)]
        wait_for(lambda: (s := job_state(url, "task-1")) and s["status"] == "running" and s["step"] >= 3,
                 every=0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    db = sqlite3.connect(data / "log" / "queue.sqlite3")
    before = dict(db.execute("SELECT id, status FROM jobs"))
    db.close()
    assert [before[i] for i in ids] == ["done", "running", "queued", "queued", "queued", "queued"]
    assert len([p for p in output_files(data) if p.suffix == ".png"]) == 1
    # what a kill in the middle of a save leaves: a temp file of the dead process beside the pictures
    day = next((data / "outputs" / "txt2img-images").iterdir())
    (day / f".tmp-{proc.pid}-0123456789abcdef0123456789abcdef.png").write_bytes(b"\x89PNG half")

    proc = start_server(data, port)
    try:
        lost = threading.Thread(target=post_quietly, daemon=True,
                                args=(url, {**payload(6), "force_task_id": "lost"}, 0.3))
        lost.start()   # a synchronous call whose client gives up at once: its job still runs
        states = [wait_for(lambda i=i: (s := job_state(url, f"task-{i}")) and s["status"] == "done" and s)
                  for i in range(6)]
        late = wait_for(lambda: (s := job_state(url, "lost")) and s["status"] == "done" and s)
        assert httpx.get(f"{url}{API}/jobs/no-such-job", timeout=5).status_code == 404
    finally:
        proc.kill()
        proc.wait(10)
    assert [s["id"] for s in states] == ids                       # resumed with their ids
    assert [s["seeds"] for s in states] == [[100 + i] for i in range(6)]
    starts = [s["started"] for s in states]
    assert starts == sorted(starts) and late["started"] >= states[-1]["finished"]   # in order, ahead of new ones
    files = [Path(f) for s in states for f in s["files"]]
    assert len(files) == 6 and all(f.is_file() for f in files)
    assert Path(late["files"][0]).is_file()
    on_disk = output_files(data)
    assert sorted(on_disk) == sorted([*files, Path(late["files"][0])])   # nothing else: no temp, no half file
    assert not [p for p in (data / "outputs").rglob(".tmp-*")]
    assert len(reference) == 6
    for got, want in zip(files, reference):
        assert np.array_equal(pixels(got), want), got


# ---------------------------------------------------------------------------
# the store and the resume, in process


def plant(data: Path, *planned: jobs.Job, running: tuple = ()) -> None:
    """Write jobs into the data dir's store as a server that then died would have left them."""
    store = job_store.JobStore(data / "log")
    for job in planned:
        store.add(job)
        if job.id in running:
            job.started = time.time()
            store.started(job)
    store.close()


def a_job(job_id: str, checkpoint=None, **kw) -> jobs.Job:
    return jobs.Job(id=job_id, request=GenerationRequest(**{"prompt": f"prompt {job_id}", **SMALL, "steps": 3, **kw}),
                    checkpoint=checkpoint, vae=None, source="api")


def wait_done(app, job_id: str) -> jobs.Job:
    job = app.queue.get(job_id)
    assert job.done_event.wait(60)
    return job


def test_jobs_resume_in_order_with_their_ids_and_pictures(tmp_path, one_thread):
    from modules.ui import common

    data = tiny_data(tmp_path)
    planned = [a_job("aaaa000000000001", seed=11), a_job("aaaa000000000002", seed=12), a_job("aaaa000000000003", seed=13)]
    plant(data, *planned, running=("aaaa000000000001",))
    app = make_app(data)
    try:
        done = [wait_done(app, j.id) for j in planned]
        assert [j.status for j in done] == ["done"] * 3 and [j.result.seeds for j in done] == [[11], [12], [13]]
        assert done[0].started < done[1].started < done[2].started
        again = app.process(GenerationRequest(prompt="prompt aaaa000000000001", **{**SMALL, "steps": 3}, seed=11))
        assert np.array_equal(pixels(done[0].result.saved_files[0]), np.asarray(again.images[0].convert("RGB")))
        attempts = sqlite3.connect(data / "log" / "queue.sqlite3").execute(
            "SELECT attempts FROM jobs ORDER BY seq").fetchall()
        assert attempts == [(2,), (1,), (1,)]   # the one that ran when the server died ran again
    finally:
        app.queue.stop(30)
    restarted = make_app(data)   # nothing left to run; the page still finds the results by id
    try:
        assert restarted.queue.pending() == []
        job = restarted.queue.get("aaaa000000000002")
        assert job.status == "done" and job.result.infotexts[0].startswith("prompt aaaa000000000002\n")
        updates = list(common.reconnect(restarted, "aaaa000000000002"))
        assert updates[0] == {"job_id": "aaaa000000000002"}
        (shown,) = updates[-1]["gallery"]   # the saved file, read back
        assert np.array_equal(np.asarray(shown.convert("RGB")), pixels(job.result.saved_files[0]))
    finally:
        restarted.queue.stop()


def test_a_job_whose_checkpoint_is_gone_fails_naming_it(tmp_path, one_thread):
    data = tiny_data(tmp_path, "tiny", "gone")
    app = make_app(data)
    app.refresh_models()
    title = next(t for t in app.models.titles() if t.startswith("gone"))
    app.queue.stop(10)
    plant(data, a_job("bbbb000000000001", checkpoint=title), a_job("bbbb000000000002", steps=0))
    (data / "models" / "Stable-diffusion" / "gone.safetensors").unlink()
    app = make_app(data)
    try:
        job = app.queue.get("bbbb000000000001")
        assert job.status == "failed" and job.done_event.is_set()
        assert job.error == f"not run again after the restart: its checkpoint '{title}' is no longer available"
        bad = app.queue.get("bbbb000000000002")
        assert bad.status == "failed" and "its request is no longer valid: steps: must be at least 1" in bad.error
        assert app.queue.pending() == []
    finally:
        app.queue.stop()
    again = make_app(data)   # recorded as failed: not tried again
    try:
        assert again.queue.get("bbbb000000000001").status == "failed" and again.queue.pending() == []
    finally:
        again.queue.stop()


def test_an_img2img_job_keeps_its_init_image_and_mask(tmp_path, one_thread):
    data = tiny_data(tmp_path)
    rs = np.random.RandomState(3)
    init = Image.fromarray(rs.randint(0, 255, (64, 64, 3), dtype=np.uint8))
    mask = Image.fromarray(((np.arange(64)[None, :] > 31) * 255).astype(np.uint8).repeat(64, 0), "L")
    kw = dict(mode="img2img", init_images=[init], mask=mask, denoising_strength=0.6, seed=7)
    plant(data, a_job("cccc000000000001", **kw))
    kept = sorted(p.name for p in (data / "log" / "queue-images" / "cccc000000000001").iterdir())
    assert kept == ["00-init_images_0_.png", "01-mask.png"]
    app = make_app(data)
    try:
        job = wait_done(app, "cccc000000000001")
        assert job.status == "done", job.error
        assert np.array_equal(np.asarray(job.request.init_images[0]), np.asarray(init))
        assert np.array_equal(np.asarray(job.request.mask), np.asarray(mask))
        want = app.process(GenerationRequest(prompt="prompt cccc000000000001", **{**SMALL, "steps": 3}, **kw))
        assert np.array_equal(pixels(job.result.saved_files[0]), np.asarray(want.images[0].convert("RGB")))
        assert "img2img-images" in job.result.saved_files[0]
        assert not (data / "log" / "queue-images" / "cccc000000000001").exists()   # no longer needed
    finally:
        app.queue.stop()


class Gate:
    """A runner that holds each job until released."""

    def __init__(self):
        self.go = threading.Event()
        self.ran: list[str] = []

    def __call__(self, job):
        self.ran.append(job.id)
        assert self.go.wait(30)
        return GenerationResult(seeds=[job.request.seed])


def test_interrupted_jobs_stay_interrupted_and_stopped_queues_hand_over(tmp_path, one_thread):
    data = tiny_data(tmp_path)
    gate = Gate()
    q = jobs.JobQueue(gate, store=job_store.JobStore(data / "log"))
    first = q.submit(GenerationRequest(prompt="first", **SMALL, seed=1))
    wait_for(lambda: gate.ran)
    waiting = q.submit(GenerationRequest(prompt="waiting", **SMALL, seed=2))
    kept = q.submit(GenerationRequest(prompt="kept", **SMALL, seed=-1))
    assert 0 <= kept.request.seed < 2**32      # a random seed is drawn when the job is accepted
    assert q.interrupt(waiting.id) is True
    other = make_app(data)    # another server on the data dir while this queue lives: it takes nothing
    try:
        assert other.queue.pending() == [] and other.queue.get(kept.id).status == "queued"
    finally:
        other.queue.stop(10)
    q.stop()
    gate.go.set()
    q.stop(10)
    assert first.status == "done" and gate.ran == [first.id]
    app = make_app(data)
    try:
        assert app.queue.get(waiting.id).status == "interrupted"
        assert app.queue.get(waiting.id).error == "interrupted before it started"
        job = wait_done(app, kept.id)
        assert job.status == "done" and job.result.seeds == [kept.request.seed]
        assert app.queue.get(first.id).started == first.started    # a finished job is not run again
    finally:
        app.queue.stop()


def test_a_job_the_server_died_in_three_times_is_not_started_again(tmp_path):
    data = tiny_data(tmp_path)
    store = job_store.JobStore(data / "log")
    job = a_job("dddd000000000001")
    store.add(job)
    for _ in range(3):
        store.started(job)
    store.close()
    owners = data / "log" / "queue-owners"
    stale = owners / "1-0123456789ab.lock"   # what a killed server leaves
    stale.write_text("")
    os.utime(stale, (time.time() - 120, time.time() - 120))
    app = make_app(data)
    try:
        assert [p.name for p in owners.iterdir()] == [f"{app.queue.store.owner.token}.lock"]
        got = app.queue.get(job.id)
        assert got.status == "failed"
        assert got.error == ("not run again after the restart: the server stopped 3 times while it ran, "
                             "so it is not started again")
    finally:
        app.queue.stop()


def test_a_request_value_that_cannot_be_stored_is_named(tmp_path):
    req = GenerationRequest(prompt="x", override_settings={"odd": object()})
    data, problem = job_store.encode_request(req, tmp_path, "id")
    assert problem == "override_settings.odd holds a value of type object, which cannot be stored"
    assert data["prompt"] == "x" and "override_settings" not in data
    back = job_store.decode_request({"prompt": "y", "steps": 4, "from_a_newer_version": 1,
                                     "override_settings": {"$dict": {"$odd": 1}}}, tmp_path)
    assert (back.prompt, back.steps, back.override_settings) == ("y", 4, {"$odd": 1})


def test_finished_rows_are_bounded(tmp_path):
    store = job_store.JobStore(tmp_path, history=3)
    for i in range(8):
        job = a_job(f"eeee00000000000{i}")
        store.add(job)
        job.status, job.finished = "done", time.time()
        store.finished(job)
    store.add(a_job("eeee0000000000ff"))   # still waiting: never pruned
    store.prune()
    ids = [r[0] for r in store._rows("SELECT id FROM jobs ORDER BY seq")]
    assert ids == ["eeee000000000005", "eeee000000000006", "eeee000000000007", "eeee0000000000ff"]
    assert store.load("eeee000000000001") is None and store.load("eeee000000000006")["status"] == "done"
    mode = store._rows("PRAGMA journal_mode")[0][0]
    assert mode == "wal"
    store.close()


def test_temp_files_of_killed_saves_are_deleted(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    folder = tmp_path / "outputs" / "2026-01-01"
    folder.mkdir(parents=True)
    left = folder / f".tmp-{dead.pid}-{'a' * 32}.png"
    mine = folder / f".tmp-{os.getpid()}-{'b' * 32}.png"
    old_mine = folder / f".tmp-{os.getpid()}-{'c' * 32}.png"
    picture = folder / "00000-1-x.png"
    for p in (left, mine, old_mine, picture):
        p.write_bytes(b"x")
    os.utime(old_mine, (time.time() - 7200, time.time() - 7200))
    assert sorted(job_store.sweep_temp_files([tmp_path / "outputs", tmp_path / "missing"])) == sorted([left, old_mine])
    assert sorted(p.name for p in folder.iterdir()) == sorted([mine.name, picture.name])
