"""Admission limits (settings "Request limits", modules/engine/request.py): a request over a limit is a 422
naming the field and the limit, answered at once (measured), and nothing is queued; a request at the limit is
taken; the settings move the limits; their defaults fit the device (a small-RAM CPU, a big GPU: faked)."""
from __future__ import annotations

import time

import pytest

from modules import cmd_args, devices, engine, options
from modules.engine import GenerationRequest, RequestError, validate
from modules.engine import request as admission

API = "/sdapi/v1"
GiB = 2**30
SMALL = {"width": 64, "height": 64, "steps": 2}
# the limits of an 8 GB CPU, as the settings' declared defaults are
CPU8 = devices.MemoryInfo("cpu", 8 * GiB, 6 * GiB)
MEMORY_INFO = devices.memory_info   # the real one (the app fixture fakes it)


def fake_memory(info: devices.MemoryInfo):
    return lambda device=None: info


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    import webui
    from fastapi.testclient import TestClient
    from modules import conditioning
    from modules.app import App
    from testing.tiny_models import write_tiny_checkpoint

    data = tmp_path_factory.mktemp("admission")
    write_tiny_checkpoint(data / "models" / "Stable-diffusion" / "tiny.safetensors", "sd1")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(devices, "memory_info", fake_memory(CPU8))
        app = App(cmd_args.parse_args(["--data-dir", str(data), "--skip-install"]))
        app.refresh_models()
        client = TestClient(webui.create_server(app, with_ui=False, with_api=True))
        queued = []
        submit = app.queue.submit
        app.queue.submit = lambda *a, **kw: queued.append(a[0]) or submit(*a, **kw)
        r = client.post(f"{API}/txt2img", json={**SMALL, "prompt": "warm up"})   # the model, the tokenizer
        assert r.status_code == 200, r.text
        conditioning.count_tokens_without_model("warm up")
        yield app, client, queued
    app.queue.stop()


@pytest.fixture
def limits_restored(env):
    app = env[0]
    yield app
    for key in admission.LIMIT_KEYS:
        app.opts.data.pop(key, None)


OVER = [  # (route, body, field, setting): the requests, each over one default of an 8 GB CPU
    ("txt2img", {**SMALL, "n_iter": 1000}, "n_iter", "max_batch_count"),
    ("txt2img", {"width": 2048, "height": 2048, "batch_size": 64, "steps": 2}, "batch_size", "max_batch_size"),
    ("txt2img", {**SMALL, "steps": 500}, "steps", "max_steps"),
    ("txt2img", {**SMALL, "enable_hr": True, "hr_second_pass_steps": 500}, "hr_second_pass_steps", "max_steps"),
    ("txt2img", {"width": 2048, "height": 2048, "steps": 2, "enable_hr": True, "hr_scale": 8}, "hr_scale",
     "max_hr_scale"),
    ("txt2img", {"width": 2048, "height": 2048, "steps": 2, "enable_hr": True, "hr_scale": 2}, "hr_scale",
     "max_pixels"),
    ("txt2img", {**SMALL, "enable_hr": True, "hr_resize_x": 4096, "hr_resize_y": 4096}, "hr_resize_x",
     "max_pixels"),
    ("txt2img", {"width": 2048, "height": 64, "steps": 2, "enable_hr": True, "hr_scale": 4}, "hr_scale",
     "max_hr_size"),
    ("txt2img", {**SMALL, "prompt": "x" * 2**20}, "prompt", "max_prompt_tokens"),
    ("txt2img", {**SMALL, "negative_prompt": "a cat, " * 1000}, "negative_prompt", "max_prompt_tokens"),
    ("txt2img", {**SMALL, "enable_hr": True, "hr_prompt": "tree " * 1200}, "hr_prompt", "max_prompt_tokens"),
    ("txt2img", {"width": 512, "height": 512, "steps": 150, "n_iter": 100, "batch_size": 4}, "n_iter",
     "max_megapixel_steps"),
    ("txt2img", {**SMALL, "override_settings": {"max_steps": 0}}, "override_settings", "max_steps"),
    ("img2img", {**SMALL, "width": 2048, "height": 2048, "batch_size": 64}, "batch_size", "max_batch_size"),
    ("img2img", {**SMALL, "n_iter": 101}, "n_iter", "max_batch_count"),
]


@pytest.mark.parametrize("route,body,field,setting", OVER, ids=[f"{r}-{f}-{s}" for r, _, f, s in OVER])
def test_an_oversized_request_is_a_422_at_once_and_nothing_is_queued(env, route, body, field, setting):
    from tests.test_api_fuzz import small_png

    app, client, queued = env
    if route == "img2img":
        body = {**body, "init_images": [small_png()]}
    before = len(queued)
    t0 = time.perf_counter()
    r = client.post(f"{API}/{route}", json=body)
    elapsed = time.perf_counter() - t0
    assert r.status_code == 422, r.text
    got = r.json()
    assert got["error"] == "RequestError" and got["errors"][0]["field"] == field, got
    assert got["detail"].startswith(f"{field}: ") and setting in got["detail"], got
    assert elapsed < 1.0, f"{elapsed:.2f}s"
    assert len(queued) == before


def test_the_messages_name_the_value_and_the_limit(env):
    app, client, _ = env
    detail = client.post(f"{API}/txt2img", json={**SMALL, "n_iter": 1000}).json()["detail"]
    assert detail == "n_iter: 1000 is over the limit of 100 (setting max_batch_count)"
    detail = client.post(f"{API}/txt2img", json={**SMALL, "prompt": "x" * 2**20}).json()["detail"]
    assert detail == ("prompt: 1048576 characters is too long for the limit of 1000 tokens (at most 16000 "
                      "characters; setting max_prompt_tokens)")
    body = {"width": 2048, "height": 2048, "steps": 2, "enable_hr": True, "hr_scale": 2}
    detail = client.post(f"{API}/txt2img", json=body).json()["detail"]
    assert detail == ("hr_scale: the hires pass 4096x4096 (16777216 pixels) is over the limit of 4194304 "
                      "(setting max_pixels)")


def test_the_memory_estimate_against_the_free_memory(env, monkeypatch):
    app, client, queued = env
    body = {"width": 2048, "height": 2048, "steps": 2, "batch_size": 4}
    need = admission.memory_estimate(GenerationRequest(**body, mode="txt2img"), element_size=4)
    assert need == 2048 * 2048 * 4 * (36 + 40 * 4)   # pixels x pictures x (pictures kept + UNet activations)
    monkeypatch.setattr(devices, "memory_info", fake_memory(devices.MemoryInfo("cpu", 8 * GiB, GiB)))
    before = len(queued)
    t0 = time.perf_counter()
    r = client.post(f"{API}/txt2img", json=body)
    assert time.perf_counter() - t0 < 1.0
    assert r.status_code == 422, r.text
    assert r.json()["detail"] == ("batch_size: 2048x2048 x 4 pictures needs at least 3.1 GB and the CPU has "
                                  "1.0 GB free (setting memory_check)")
    assert len(queued) == before
    # the same request where it fits: memory is asked of the device when the request comes
    limits = app.opts.snapshot()
    req = GenerationRequest(**body, limits=admission.Limits.from_settings(
        limits, memory=fake_memory(devices.MemoryInfo("cpu", 8 * GiB, need))))
    validate(req)
    req.limits = admission.Limits.from_settings(limits, memory=fake_memory(devices.MemoryInfo("cpu", 8 * GiB,
                                                                                              need - 1)))
    with pytest.raises(RequestError, match="setting memory_check") as e:
        validate(req)
    assert e.value.field == "batch_size"


def test_requests_at_the_limits_are_taken(env):
    lim = admission.Limits.from_settings(admission.limit_defaults(CPU8), memory=fake_memory(CPU8))

    def ok(**kw):
        validate(GenerationRequest(**kw, limits=lim))

    def refused(field, setting, **kw):
        with pytest.raises(RequestError, match=f"setting {setting}") as e:
            validate(GenerationRequest(**kw, limits=lim))
        assert e.value.field == field

    ok(n_iter=100, steps=1, width=64, height=64)
    refused("n_iter", "max_batch_count", n_iter=101, steps=1, width=64, height=64)
    ok(batch_size=4)
    refused("batch_size", "max_batch_size", batch_size=5)
    ok(steps=150)
    refused("steps", "max_steps", steps=151)
    ok(width=2048, height=2048, steps=20)
    ok(width=1024, height=1024, enable_hr=True, hr_scale=2.0, steps=20)              # hires 2048x2048
    refused("hr_scale", "max_pixels", width=1024, height=1032, enable_hr=True, hr_scale=2.0, steps=20)
    ok(width=1024, height=64, enable_hr=True, hr_scale=4.0, steps=20)                 # hires 4096x256
    refused("hr_scale", "max_hr_scale", width=64, height=64, enable_hr=True, hr_scale=4.05)
    ok(width=2048, height=2048, steps=20, mode="img2img", init_images=[_image()])
    ok(prompt="a " * 1000, negative_prompt="b " * 1000)                              # 1000 tokens each
    refused("prompt", "max_prompt_tokens", prompt="a " * 1001)
    refused("negative_prompt", "max_prompt_tokens", negative_prompt="猫" * 600)      # few characters, many tokens
    refused("prompt", "max_prompt_tokens", prompt=" " * 16001)                       # by its length alone
    work = GenerationRequest(width=512, height=512, steps=100, n_iter=38)            # 996 megapixel-steps
    assert admission.megapixel_steps(work) == pytest.approx(512 * 512 * 100 * 38 / 1e6)
    ok(width=512, height=512, steps=100, n_iter=38)
    refused("n_iter", "max_megapixel_steps", width=512, height=512, steps=100, n_iter=39)
    ok(width=2048, height=2048, steps=150)                                           # 629 megapixel-steps
    refused("batch_size", "max_megapixel_steps", width=2048, height=2048, steps=150, batch_size=2)


def _image(w=64, h=64):
    from PIL import Image
    return Image.new("RGB", (w, h), (10, 20, 30))


def test_the_settings_change_the_limits(env, limits_restored):
    from tests.test_api_fuzz import small_png

    app, client, queued = env
    app.opts.update({"max_batch_count": 2, "max_batch_size": 2, "max_steps": 3, "max_pixels": 64 * 128,
                     "max_prompt_tokens": 5}, save=False)
    r = client.post(f"{API}/txt2img", json={**SMALL, "steps": 3, "n_iter": 2, "batch_size": 2,
                                            "prompt": "a red circle"})
    assert r.status_code == 200, r.text                          # at the limits: taken and run
    assert len(r.json()["images"]) == 5                          # 4 pictures and the grid
    for body, field, setting in (({"n_iter": 3}, "n_iter", "max_batch_count"),
                                 ({"steps": 4}, "steps", "max_steps"),
                                 ({"width": 128, "height": 128}, "width", "max_pixels"),
                                 ({"prompt": "one two three four five six"}, "prompt", "max_prompt_tokens")):
        r = client.post(f"{API}/txt2img", json={**SMALL, **body})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == field, r.text
        assert setting in r.json()["detail"]
    r = client.post(f"{API}/img2img", json={**SMALL, "width": 128, "height": 128, "init_images": [small_png()]})
    assert r.status_code == 422 and "the img2img pass 128x128 (16384 pixels) is over the limit of 8192" \
        in r.json()["detail"], r.text
    # 0: no limit (the table's bounds still hold)
    app.opts.update({"max_batch_count": 0}, save=False)
    req = GenerationRequest(**SMALL, n_iter=1000, limits=admission.admission_limits(app.opts, app.policy))
    validate(req)
    r = client.post(f"{API}/options", json={"max_steps": -1})
    assert r.status_code == 422 and "max_steps" in r.json()["detail"]


def test_the_ui_shows_the_same_message(env):
    from modules.ui import common

    app, client, queued = env
    before = len(queued)
    with pytest.warns(UserWarning, match=r"^n_iter: 1000 is over the limit of 100 \(setting max_batch_count\)$"):
        out = list(common.submit_and_follow(app, GenerationRequest(**SMALL, n_iter=1000), None, None))
    assert len(out) == 1 and "Error: n_iter: 1000 is over the limit of 100 (setting max_batch_count)" \
        in out[0]["progress"]
    assert len(queued) == before


def test_xyz_cells_are_held_to_the_limits(env):
    app, client, _ = env
    args = ["Steps", "2, 200", [], "Nothing", "", [], "Nothing", "", [], True, False, False, False,
            False, False, False, 0, False]
    job = app.submit(GenerationRequest(**SMALL, prompt="a", script_name="x/y/z plot", script_args=args))
    job.done_event.wait(120)
    assert job.status == "failed", job.status
    assert "value 200: steps: 200 is over the limit of 150 (setting max_steps)" in job.error, job.error
    assert job.result is None


def test_defaults_fit_the_device(tmp_path, monkeypatch):
    from modules.app import App

    small = admission.limit_defaults(devices.MemoryInfo("cpu", 4 * GiB, 3 * GiB))
    big = admission.limit_defaults(devices.MemoryInfo("cuda", 80 * GiB, 79 * GiB))
    assert small == {"max_batch_count": 100, "max_batch_size": 2, "max_pixels": 1408 * 1408, "max_steps": 150,
                     "max_hr_scale": 4.0, "max_hr_size": 2816, "max_prompt_tokens": 1000,
                     "max_megapixel_steps": 1000, "memory_check": True}
    assert big == {"max_batch_count": 100, "max_batch_size": 64, "max_pixels": 4096 * 4096, "max_steps": 500,
                   "max_hr_scale": 4.0, "max_hr_size": 4096, "max_prompt_tokens": 1000,
                   "max_megapixel_steps": 20000, "memory_check": True}
    # the declared defaults are an 8 GB CPU's; an app takes its device's
    declared = {k: options.Options().infos[k].default for k in admission.LIMIT_KEYS}
    assert declared == admission.limit_defaults(CPU8)
    for info, expected in ((devices.MemoryInfo("cpu", 4 * GiB, 3 * GiB), small),
                           (devices.MemoryInfo("cuda", 80 * GiB, 79 * GiB), big)):
        monkeypatch.setattr(devices, "memory_info", fake_memory(info))
        app = App(cmd_args.parse_args(["--data-dir", str(tmp_path / info.kind), "--skip-install"]))
        try:
            assert {k: app.opts.get(k) for k in admission.LIMIT_KEYS} == expected
            req = GenerationRequest(width=1536, height=1536, batch_size=2)
            req.limits = admission.admission_limits(app.opts, app.policy)
            if info.kind == "cpu":
                with pytest.raises(RequestError, match="over the limit of 1982464 .setting max_pixels"):
                    validate(req)
            else:
                validate(req)
        finally:
            app.queue.stop()


def test_memory_info_of_this_machine():
    info = MEMORY_INFO(devices.pick_device())
    assert info.kind in ("cpu", "cuda", "mps") and 0 < info.free <= info.total
    cpu = MEMORY_INFO("cpu")
    import psutil
    assert cpu.kind == "cpu" and cpu.total == psutil.virtual_memory().total


def test_a_request_without_limits_keeps_only_the_tables_bounds():
    validate(GenerationRequest(n_iter=1000, steps=500, batch_size=64, width=2048, height=2048))
    with pytest.raises(RequestError, match="n_iter: must be at most 1000"):
        validate(GenerationRequest(n_iter=1001))
    assert engine.GenerationRequest().limits is None


def test_a_limit_that_is_not_a_number_is_no_limit():
    """A hand-edited config.json may hold anything: such a limit does not break validation."""
    lim = admission.Limits.from_settings({"max_steps": "many", "max_pixels": float("nan"), "max_batch_size": -3,
                                          "max_hr_scale": 2.5, "memory_check": 1})
    assert (lim.max_steps, lim.max_pixels, lim.max_batch_size, lim.max_hr_scale, lim.memory_check) == \
        (0, 0, 0, 2.5, True)
    validate(GenerationRequest(steps=500, batch_size=64, limits=lim))
    with pytest.raises(RequestError, match="hr_scale: 3 is over the limit of 2.5 .setting max_hr_scale."):
        validate(GenerationRequest(enable_hr=True, hr_scale=3.0, limits=lim))
