"""The /sdapi/v1 HTTP API with FastAPI's TestClient on an App with two tiny models: every route,
exact shapes, seeds and infotexts, model switching by override_settings, settings that persist,
the shared queue (full -> 503, a waiting request interrupted), HTTP Basic auth, JSON errors."""
from __future__ import annotations

import base64
import io
import json
import shutil
import threading
import time

import pytest
from PIL import Image

from modules import cmd_args, engine, images, samplers, upscalers
from modules.engine import GenerationRequest

fastapi = pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

SMALL = {"width": 64, "height": 64, "steps": 2, "cfg_scale": 7.0}
API = "/sdapi/v1"


def make_app(data, *extra):
    from modules.app import App

    return App(cmd_args.parse_args(["--data-dir", str(data), *extra]))


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    import webui
    from testing.tiny_models import write_tiny_checkpoint

    data = tmp_path_factory.mktemp("api")
    ckpts = data / "models" / "Stable-diffusion"
    write_tiny_checkpoint(ckpts / "tiny.safetensors", "sd1", seed=0)
    write_tiny_checkpoint(ckpts / "tiny2.safetensors", "sd1", seed=1)
    app = make_app(data, "--queue-size", "2")
    app.refresh_models()
    server = webui.create_server(app, with_ui=False, with_api=True)
    client = TestClient(server)
    titles = app.models.titles()
    yield app, client, data, titles
    app.queue.stop()


def b64png(im: Image.Image, prefix: bool = False, **info) -> str:
    buf = io.BytesIO()
    images.save_image_with_geninfo(im, info.get("parameters"), buf, "png")
    s = base64.b64encode(buf.getvalue()).decode()
    return "data:image/png;base64," + s if prefix else s


def decode(s: str) -> Image.Image:
    im = Image.open(io.BytesIO(base64.b64decode(s)))
    im.load()
    return im


def gradient(w=64, h=64) -> Image.Image:
    data = bytes((x * 4 + y) % 256 for y in range(h) for x in range(w) for _ in range(3))
    return Image.frombytes("RGB", (w, h), data)


def txt2img(client, **fields):
    r = client.post(f"{API}/txt2img", json={**SMALL, **fields})
    assert r.status_code == 200, r.text
    body = r.json()
    return body, json.loads(body["info"])


def assert_error(r, status, field):
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) >= {"error", "detail", "errors"}
    assert field in body["detail"], body
    return body


def wait_for(cond, timeout=30.0):
    t0 = time.time()
    while not cond():
        if time.time() - t0 > timeout:
            raise AssertionError("timed out")
        time.sleep(0.01)


# ---------------------------------------------------------------------------
# txt2img


def test_txt2img_shape_seeds_and_infotext(env):
    app, client, _, titles = env
    body, info = txt2img(client, prompt="a red cube", negative_prompt="blurry", seed=1234, batch_size=2,
                         sampler_name="Euler a", override_settings={"sd_model_checkpoint": titles[0]})
    assert set(body) == {"images", "parameters", "info"}
    assert len(body["images"]) == 3  # A1111's default "Show grid in gallery": the grid, then the batch
    grid, *pics = [decode(s) for s in body["images"]]
    assert [p.format for p in pics] == ["PNG", "PNG"] and [p.size for p in pics] == [(64, 64)] * 2
    assert grid.size == (128, 64) and info["index_of_first_image"] == 1
    assert info["all_seeds"] == [1234, 1235] and info["seed"] == 1234
    assert info["all_prompts"] == ["a red cube"] * 2 and info["all_negative_prompts"] == ["blurry"] * 2
    assert info["sd_model_name"] == "tiny" and info["interrupted"] is False and info["warnings"] == []
    assert len(info["infotexts"]) == 3  # one per returned image, the grid's (the first image's) first
    first = info["infotexts"][1]
    assert first == ("a red cube\nNegative prompt: blurry\nSteps: 2, Sampler: Euler a, "
                     f"CFG scale: 7, Seed: 1234, Size: 64x64, Model hash: {titles[0][-11:-1]}, Model: tiny, "
                     f"RNG: CPU, Version: {engine.VERSION}")
    assert info["infotexts"][0] == first and "Seed: 1235" in info["infotexts"][2]
    assert pics[0].info["parameters"] == first  # the PNG carries its infotext, as A1111's API images do
    assert grid.info["parameters"] == first
    p = body["parameters"]
    assert p["seed"] == 1234 and p["batch_size"] == 2 and p["sampler_name"] == "Euler a"
    assert p["sampler_index"] == "Euler" and p["send_images"] is True and p["save_images"] is False
    # the same job through the queue directly gives the same pixels (the API maps fields faithfully)
    job = app.queue.run_sync(GenerationRequest(prompt="a red cube", negative_prompt="blurry", seed=1234, batch_size=2,
                                               sampler_name="Euler a", save_images=False, **SMALL),
                             checkpoint=titles[0])
    assert job.status == "done"
    assert [im.tobytes() for im in job.result.images] == [p.convert("RGB").tobytes() for p in pics]
    # nothing was saved (save_images defaults to False, as in A1111)
    assert not (app.paths.data_dir / "outputs").exists()


def test_txt2img_request_defaults_are_a1111s(env):
    app, *_ = env
    from modules.api import SdApi, Txt2ImgRequest

    body = Txt2ImgRequest()
    assert (body.steps, body.width, body.height, body.cfg_scale, body.sampler_index, body.sampler_name) == \
        (50, 512, 512, 7.0, "Euler", None)
    assert (body.seed, body.subseed, body.seed_resize_from_h, body.denoising_strength, body.save_images,
            body.send_images, body.override_settings_restore_afterwards) == (-1, -1, -1, 0.75, False, True, True)
    req, warns, persist = SdApi(app).build_request(body, "txt2img")
    assert (req.sampler_name, req.scheduler, req.hr_upscaler, req.styles, req.save_images, req.do_not_save_grid) == \
        ("Euler", "Automatic", "Latent", [], False, True)
    assert warns == [] and persist == {}


def test_sampler_index_combined_names_and_styles(env):
    app, client, _, titles = env
    app.styles.save_style("red", "{prompt}, red", "green")
    _, info = txt2img(client, prompt="cube", seed=3, sampler_index="DDIM", styles=["red", "nope"])
    assert "Sampler: DDIM" in info["infotexts"][0]
    assert info["prompt"] == "cube, red" and info["negative_prompt"] == "green"
    assert info["warnings"] == ["unknown styles ignored: nope"]
    _, info = txt2img(client, prompt="cube", seed=3, sampler_name="DPM++ 2M Karras", scheduler="automatic")
    assert "Sampler: DPM++ 2M, Schedule type: Karras" in info["infotexts"][0]
    r = client.get(f"{API}/prompt-styles")
    assert r.json() == [{"name": "red", "prompt": "{prompt}, red", "negative_prompt": "green"}]
    app.styles.delete_style("red")


def test_send_images_false_sizes_rounded_and_warnings(env):
    _, client, _, _ = env
    body, info = txt2img(client, seed=9, send_images=False, width=100, restore_faces=True, not_a_field=1)
    assert body["images"] == []
    assert info["width"] == 96 and "Size: 96x64" in info["infotexts"][0]
    assert info["warnings"] == ["unknown fields ignored: not_a_field", "restore_faces is not supported; ignored",
                                "width 100 rounded down to 96 (a multiple of 8)"]


def test_save_images_writes_to_the_outputs_folder(env):
    app, client, data, _ = env
    _, info = txt2img(client, prompt="saved", seed=31, save_images=True)
    files = sorted((data / "outputs" / "txt2img-images").rglob("*.png"))
    assert len(files) == 1 and "31-saved" in files[0].name
    assert images.read_info_from_image(Image.open(files[0]))[0] == info["infotexts"][0]
    shutil.rmtree(data / "outputs")


def test_infotext_field_fills_unset_fields(env):
    _, client, _, _ = env
    r = client.post(f"{API}/txt2img", json={"infotext": "a dog\nNegative prompt: cat\nSteps: 3, Sampler: Euler, "
                                                        "Seed: 77, Size: 64x72", "steps": 2})
    info = json.loads(r.json()["info"])
    assert "Sampler: Euler," in info["infotexts"][0]
    assert (info["prompt"], info["negative_prompt"], info["seed"], info["steps"], info["height"]) == \
        ("a dog", "cat", 77, 2, 72)


def test_override_settings_switch_model_and_clip_skip(env):
    app, client, _, titles = env
    client.post(f"{API}/options", json={"sd_model_checkpoint": titles[0]})
    _, info = txt2img(client, seed=5, override_settings={"sd_model_checkpoint": "tiny2", "CLIP_stop_at_last_layers": 2})
    assert info["sd_model_name"] == "tiny2" and info["clip_skip"] == 2
    assert f"Model hash: {titles[1][-11:-1]}, Model: tiny2" in info["infotexts"][0]
    assert "Clip skip: 2" in info["infotexts"][0]
    _, info = txt2img(client, seed=5, override_settings={"eta_noise_seed_delta": 31337, "randn_source": "GPU"})
    assert "ENSD: 31337" in info["infotexts"][0] and "RNG" not in info["infotexts"][0]
    # restored afterwards: the next plain request uses the selected model and clip skip again
    _, info = txt2img(client, seed=5)
    assert info["sd_model_name"] == "tiny" and info["clip_skip"] == 1
    assert client.get(f"{API}/options").json()["CLIP_stop_at_last_layers"] == 1
    # ...unless asked not to restore
    _, info = txt2img(client, seed=5, override_settings={"CLIP_stop_at_last_layers": 2},
                      override_settings_restore_afterwards=False)
    assert info["clip_skip"] == 2 and client.get(f"{API}/options").json()["CLIP_stop_at_last_layers"] == 2
    client.post(f"{API}/options", json={"CLIP_stop_at_last_layers": 1})
    # bad overrides are refused before queueing, naming the key
    r = client.post(f"{API}/txt2img", json={**SMALL, "override_settings": {"CLIP_stop_at_last_layers": "two"}})
    assert_error(r, 422, "override_settings.CLIP_stop_at_last_layers")
    r = client.post(f"{API}/txt2img", json={**SMALL, "override_settings": {"sd_model_checkpoint": "qqqqzzzz"}})
    body = assert_error(r, 422, "override_settings.sd_model_checkpoint")
    assert "not found" in body["detail"] and titles[0] in body["detail"]
    r = client.post(f"{API}/txt2img", json={**SMALL, "override_settings": {"sd_model_checkpoint": "/"}})
    assert_error(r, 422, "override_settings.sd_model_checkpoint")  # no arbitrary paths on disk
    r = client.post(f"{API}/txt2img", json={**SMALL, "override_settings": {"sd_vae": "nope.safetensors"}})
    assert_error(r, 422, "override_settings.sd_vae")


# ---------------------------------------------------------------------------
# img2img


def test_img2img_with_and_without_data_url_and_mask(env):
    app, client, _, _ = env
    init = gradient()
    for prefix in (False, True):
        r = client.post(f"{API}/img2img", json={**SMALL, "init_images": [b64png(init, prefix)], "seed": 11,
                                                "denoising_strength": 0.5, "sampler_name": "Euler"})
        assert r.status_code == 200, r.text
        body = r.json()
        info = json.loads(body["info"])
        assert decode(body["images"][0]).size == (64, 64)
        assert info["all_seeds"] == [11] and info["denoising_strength"] == 0.5
        assert "Denoising strength: 0.5" in info["infotexts"][0]
        assert body["parameters"]["init_images"] is None and body["parameters"]["mask"] is None
    same = body["images"][0]
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    r = client.post(f"{API}/img2img", json={**SMALL, "init_images": [b64png(init)], "mask": b64png(mask), "seed": 11,
                                            "denoising_strength": 0.5, "sampler_name": "Euler", "mask_blur": 0,
                                            "inpaint_full_res": False, "inpainting_fill": 1,
                                            "include_init_images": True})
    assert r.status_code == 200, r.text
    body = r.json()
    out = decode(body["images"][0]).convert("RGB")
    # outside the mask the original pixels are kept exactly, inside they changed
    assert out.getpixel((2, 2)) == init.getpixel((2, 2)) and out.getpixel((60, 60)) == init.getpixel((60, 60))
    assert body["images"][0] != same
    assert body["parameters"]["init_images"] == [b64png(init)] and body["parameters"]["mask"] == b64png(mask)
    # a mask of another size is scaled to the init image, with a warning
    r = client.post(f"{API}/img2img", json={**SMALL, "init_images": [b64png(init)],
                                            "mask": b64png(mask.resize((32, 32))),
                                            "seed": 11})
    assert json.loads(r.json()["info"])["warnings"] == ["mask 32x32 resized to the init image's 64x64"]


def test_img2img_bad_images_are_422_naming_the_field(env):
    _, client, _, _ = env
    good = b64png(gradient())
    cases = [
        ({"init_images": []}, "init_images"),
        ({}, "init_images"),
        ({"init_images": [good, "not base64 !!"]}, "init_images[1]"),
        ({"init_images": [base64.b64encode(b"plain text, no image").decode()]}, "init_images[0]"),
        ({"init_images": ["data:image/png;base64"]}, "init_images[0]"),
        ({"init_images": ["http://example.com/a.png"]}, "init_images[0]"),
        ({"init_images": [good], "mask": "%%%"}, "mask"),
        ({"init_images": [good], "resize_mode": 9}, "resize_mode"),
        ({"init_images": [good], "denoising_strength": 2}, "denoising_strength"),
        ({"init_images": "abc"}, "init_images"),
    ]
    for fields, name in cases:
        r = client.post(f"{API}/img2img", json={**SMALL, **fields})
        assert_error(r, 422, name)


# ---------------------------------------------------------------------------
# errors


def test_errors_are_json_4xx_naming_the_field(env):
    _, client, _, _ = env
    r = client.post(f"{API}/txt2img", content=b'{"prompt": ', headers={"content-type": "application/json"})
    body = assert_error(r, 422, "malformed JSON")
    assert body["error"] == "RequestValidationError"
    assert_error(client.post(f"{API}/txt2img", json={"steps": "many"}), 422, "steps")
    assert_error(client.post(f"{API}/txt2img", json={"prompt": 5}), 422, "prompt")
    assert_error(client.post(f"{API}/txt2img", json={"width": 4096}), 422, "width")
    assert_error(client.post(f"{API}/txt2img", json={"steps": 501}), 422, "steps")
    assert_error(client.post(f"{API}/txt2img", json=[1, 2]), 422, "body")
    r = client.post(f"{API}/txt2img", json={**SMALL, "sampler_name": "Nonexistent sampler"})
    body = assert_error(r, 422, "sampler_name")
    assert body["error"] == "RequestError" and "Valid samplers" in body["detail"]
    assert_error(client.post(f"{API}/txt2img", json={**SMALL, "scheduler": "wobbly"}), 422, "scheduler")
    r = client.post(f"{API}/txt2img", json={**SMALL, "script_name": "No such script"})
    assert "'No such script' not found" in assert_error(r, 422, "script_name")["detail"]
    # an always-on script that is not installed: 422 as in A1111
    r = client.post(f"{API}/txt2img", json={**SMALL, "alwayson_scripts": {"ADetailer": {"args": []}}})
    assert "'ADetailer' not found" in assert_error(r, 422, "alwayson_scripts.ADetailer")["detail"]
    r = client.post(f"{API}/txt2img", json={**SMALL, "enable_hr": True, "hr_upscaler": "ESRGAN_4x"})
    assert_error(r, 422, "hr_upscaler")
    r = client.post(f"{API}/txt2img", content=b'{"seed": 1, "override_settings": {"x": NaN}}',
                    headers={"content-type": "application/json"})
    assert_error(r, 422, "override_settings.x")
    assert client.post(f"{API}/nope").status_code == 404


# ---------------------------------------------------------------------------
# png-info, extras


def test_png_info(env):
    _, client, _, _ = env
    body, info = txt2img(client, prompt="a (tree:1.2)", seed=42)
    r = client.post(f"{API}/png-info", json={"image": body["images"][0]})
    assert r.status_code == 200
    out = r.json()
    assert set(out) == {"info", "items", "parameters"}
    assert out["info"] == info["infotexts"][0] and out["items"] == {}
    p = out["parameters"]
    assert (p["Prompt"], p["Seed"], p["Steps"], p["Size-1"], p["Size-2"], p["Model"]) == \
        ("a (tree:1.2)", "42", "2", "64", "64", "tiny")
    # other text chunks are items; an image without parameters has an empty info
    im = gradient(8, 8)
    buf = io.BytesIO()
    from PIL import PngImagePlugin
    meta = PngImagePlugin.PngInfo()
    meta.add_text("Software", "test")
    im.save(buf, "PNG", pnginfo=meta)
    data_url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    r = client.post(f"{API}/png-info", json={"image": data_url})
    assert r.json()["info"] == "" and r.json()["items"] == {"Software": "test"}
    assert_error(client.post(f"{API}/png-info", json={"image": "@@@"}), 422, "image")
    assert_error(client.post(f"{API}/png-info", json={}), 422, "image")


def test_extra_single_image(env):
    _, client, _, _ = env
    src = gradient(40, 20)
    r = client.post(f"{API}/extra-single-image", json={"image": b64png(src), "upscaling_resize": 2,
                                                       "upscaler_1": "Lanczos"})
    assert r.status_code == 200, r.text
    out = r.json()
    assert set(out) == {"html_info", "image"}
    assert decode(out["image"]).size == (80, 40)
    assert decode(out["image"]).convert("RGB").tobytes() == src.resize((80, 40), Image.LANCZOS).tobytes()
    assert out["html_info"] == "<p>Postprocess upscale by: 2, Postprocess upscaler: Lanczos</p>"
    r = client.post(f"{API}/extra-single-image", json={"image": b64png(src), "resize_mode": 1, "upscaling_resize_w": 60,
                                                       "upscaling_resize_h": 60, "upscaler_1": "Nearest"})
    assert decode(r.json()["image"]).size == (60, 60)
    assert "Postprocess crop to: 60x60" in r.json()["html_info"]
    r = client.post(f"{API}/extra-single-image", json={"image": b64png(src), "resize_mode": 1, "upscaling_resize_w": 60,
                                                       "upscaling_resize_h": 60, "upscaler_1": "Nearest",
                                                       "upscaling_crop": False})
    # A1111's upscalers give int(side * scale) // 8 * 8 pixels: 20 * 3 = 60 -> 56
    assert decode(r.json()["image"]).size == (120, 56)
    r = client.post(f"{API}/extra-single-image", json={"image": b64png(src)})  # upscaler "None": unchanged
    assert decode(r.json()["image"]).tobytes() == src.tobytes()
    assert_error(client.post(f"{API}/extra-single-image", json={"image": b64png(src), "upscaler_1": "R-ESRGAN 4x+"}),
                 422, "upscaler_1")
    assert_error(client.post(f"{API}/extra-single-image", json={"image": b64png(src), "upscaling_resize": 1000}),
                 422, "upscaling_resize")
    assert_error(client.post(f"{API}/extra-single-image", json={"image": ""}), 422, "image")


# ---------------------------------------------------------------------------
# progress, queue, interrupt


def test_progress_idle_and_running(env):
    import torch

    app, client, _, titles = env
    idle = client.get(f"{API}/progress").json()
    assert idle == {"progress": 0.0, "eta_relative": 0.0, "current_image": None, "textinfo": None,
                    "state": {"skipped": False, "interrupted": False, "stopping_generation": False, "job": "",
                              "job_count": 0, "job_timestamp": "0", "job_no": 0, "sampling_step": 0,
                              "sampling_steps": 0, "queued": 0}}
    app.load_model(titles[0])
    with app.models.lock:  # the job takes the lock to run: it stays "running" at a known state
        job = app.submit(GenerationRequest(save_images=False, **SMALL), source="api")
        wait_for(lambda: job.status == "running")
        c = job.control
        c.total_steps, c.job_count, c.job_no, c.step = 6, 2, 1, 4
        c.started = time.time() - 4.0
        c.current_latents = torch.zeros(1, 4, 8, 8)
        r = client.get(f"{API}/progress").json()
        st = r["state"]
        assert r["progress"] == pytest.approx(4 / 6)
        assert r["eta_relative"] == pytest.approx(2.0, abs=0.5)
        assert (st["job"], st["job_count"], st["job_no"], st["sampling_step"], st["sampling_steps"], st["queued"]) == \
            (job.id, 2, 1, 1, 3, 0)
        assert len(st["job_timestamp"]) == 14
        assert decode(r["current_image"]).size == (64, 64)
        assert client.get(f"{API}/progress", params={"skip_current_image": True}).json()["current_image"] is None
        c.step, c.current_latents = 0, None
    assert job.done_event.wait(30) and job.status == "done"


def test_queue_full_is_503_and_waiting_request_can_be_interrupted(env):
    app, client, _, _ = env
    req = lambda: GenerationRequest(save_images=False, **SMALL)  # noqa: E731
    with app.models.lock:
        running = app.submit(req(), source="ui")
        wait_for(lambda: running.status == "running")
        # a waiting API request, interrupted by its force_task_id before it starts
        results = {}

        def call():
            results["r"] = client.post(f"{API}/txt2img", json={**SMALL, "seed": 8, "force_task_id": "mine"})

        t = threading.Thread(target=call)
        t.start()
        wait_for(lambda: len(app.queue.pending()) == 1)
        assert client.get(f"{API}/progress").json()["state"]["queued"] == 1
        waiting = app.submit(req(), source="ui")  # the queue (size 2) is now full
        r = client.post(f"{API}/txt2img", json={**SMALL})
        body = assert_error(r, 503, "queue is full")
        assert body["error"] == "QueueFull"
        assert client.post(f"{API}/interrupt", params={"id": "mine"}).json() == {}
        t.join(30)
        r = results["r"]
        assert r.status_code == 200, r.text
        info = json.loads(r.json()["info"])
        assert r.json()["images"] == [] and info["interrupted"] is True and info["all_seeds"] == []
        assert info["warnings"] == ["interrupted before it started"]
        assert_error(client.post(f"{API}/interrupt", params={"id": "unknown"}), 404, "id")
        # no id: the running job (A1111's interrupt)
        assert client.post(f"{API}/interrupt").json() == {}
        assert client.post(f"{API}/skip").json() is None
    assert running.done_event.wait(30) and waiting.done_event.wait(30)
    assert running.status == "interrupted" and waiting.status == "done"


# ---------------------------------------------------------------------------
# settings


def test_options_get_set_persist_and_validate(env):
    app, client, data, titles = env
    opts = client.get(f"{API}/options").json()
    assert set(opts) == set(app.opts.infos) | {"sd_checkpoint_hash"}
    assert opts["samples_format"] == "png" and opts["CLIP_stop_at_last_layers"] == 1
    r = client.post(f"{API}/options", json={"CLIP_stop_at_last_layers": 3, "samples_format": "jpg",
                                            "sd_model_checkpoint": titles[1], "some_extension_key": [1, "a"]})
    assert r.status_code == 200 and r.json() is None
    assert app.models.loaded.info.title == titles[1]
    got = client.get(f"{API}/options").json()
    assert (got["CLIP_stop_at_last_layers"], got["sd_model_checkpoint"], got["samples_format"]) == (3, titles[1], "jpg")
    assert got["sd_checkpoint_hash"] == app.models.checkpoints[titles[1]].sha256
    # a new app on the same data folder sees them
    other = make_app(data)
    assert (other.opts.get("CLIP_stop_at_last_layers"), other.opts.get("sd_model_checkpoint"),
            other.opts.get("some_extension_key")) == (3, titles[1], [1, "a"])
    other.queue.stop()
    # images come back in the samples format, with the infotext in EXIF
    body, info = txt2img(client, seed=21)
    jpg = decode(body["images"][0])
    assert jpg.format == "JPEG" and images.read_info_from_image(jpg)[0] == info["infotexts"][0]
    # validation: all keys are checked before anything changes; the error names the key
    r = client.post(f"{API}/options", json={"samples_format": "png", "CLIP_stop_at_last_layers": 99})
    assert_error(r, 422, "CLIP_stop_at_last_layers")
    assert client.get(f"{API}/options").json()["samples_format"] == "jpg"
    assert_error(client.post(f"{API}/options", json={"samples_format": "tiff"}), 422, "samples_format")
    assert_error(client.post(f"{API}/options", json={"sd_model_checkpoint": "nothing like it"}), 422,
                 "sd_model_checkpoint")
    assert_error(client.post(f"{API}/options", json={"sd_model_checkpoint": str(data)}), 422, "sd_model_checkpoint")
    assert_error(client.post(f"{API}/options", json=["x"]), 422, "body")
    r = client.post(f"{API}/options", json={"samples_format": "png", "CLIP_stop_at_last_layers": 1,
                                            "sd_model_checkpoint": titles[0]})
    assert r.status_code == 200 and app.models.loaded.info.title == titles[0]
    # clients that send back everything GET answered
    everything = client.get(f"{API}/options").json()
    assert client.post(f"{API}/options", json=everything).status_code == 200
    assert client.get(f"{API}/options").json() == everything


def test_cmd_flags(env):
    _, client, data, _ = env
    flags = client.get(f"{API}/cmd-flags").json()
    assert flags["data_dir"] == str(data) and flags["queue_size"] == 2 and flags["api_auth"] is None
    assert {"listen", "port", "api", "nowebui", "ckpt", "no_half"} <= set(flags)


# ---------------------------------------------------------------------------
# lists and models


def test_lists(env):
    app, client, _, titles = env
    get = lambda p: client.get(f"{API}/{p}").json()  # noqa: E731
    assert get("samplers") == samplers.api_samplers() and "Euler a" in [s["name"] for s in get("samplers")]
    assert get("schedulers") == samplers.api_schedulers()
    assert [u["name"] for u in get("upscalers")] == ["None", "Lanczos", "Nearest"]
    assert set(get("upscalers")[0]) == {"name", "model_name", "model_path", "model_url", "scale"}
    assert [m["name"] for m in get("latent-upscale-modes")] == list(upscalers.LATENT_UPSCALE_MODES)
    models = get("sd-models")
    assert [m["title"] for m in models] == titles
    assert models[0] == {"title": titles[0], "model_name": "tiny", "hash": titles[0][-11:-1],
                         "sha256": app.models.checkpoints[titles[0]].sha256,
                         "filename": str(app.models.checkpoints[titles[0]].filename), "config": None}
    assert get("sd-vae") == [] and get("loras") == [] and get("sd-modules") == []
    assert get("embeddings") == {"loaded": {}, "skipped": {}}
    assert get("scripts") == app.scripts.api_list()
    assert "prompt matrix" in get("scripts")["txt2img"] and "loopback" in get("scripts")["img2img"]
    assert "loopback" not in get("scripts")["txt2img"]
    assert get("face-restorers") == [] and get("realesrgan-models") == [] and get("hypernetworks") == []
    mem = get("memory")
    assert set(mem) == {"ram", "cuda"} and mem["ram"]["total"] > 0 and mem["cuda"] == {"error": "unavailable"}
    paths = client.get("/openapi.json").json()["paths"]
    assert {f"{API}/{p}" for p in ("txt2img", "img2img", "progress", "options", "png-info")} <= set(paths)
    assert client.get("/docs").status_code == 200


def test_refresh_reload_unload(env):
    app, client, data, titles = env
    ckpts = data / "models" / "Stable-diffusion"
    (ckpts / "sub").mkdir()
    shutil.copy(ckpts / "tiny.safetensors", ckpts / "sub" / "copy.safetensors")
    vae_dir = data / "models" / "VAE"
    vae_dir.mkdir(parents=True)
    assert client.post(f"{API}/refresh-checkpoints").json() is None
    assert len(client.get(f"{API}/sd-models").json()) == 3
    import torch
    from safetensors.torch import save_file

    save_file({"encoder.conv_in.weight": torch.zeros(1), "decoder.conv_in.weight": torch.zeros(1)},
              str(vae_dir / "my.vae.safetensors"))
    (vae_dir / "empty.vae.safetensors").write_bytes(b"")   # not a VAE: listed as unusable, not offered
    assert client.post(f"{API}/refresh-vae").json() is None
    assert client.get(f"{API}/sd-vae").json() == [{"model_name": "my.vae.safetensors",
                                                    "filename": str(vae_dir / "my.vae.safetensors")}]
    assert any(str(b.filename).endswith("empty.vae.safetensors") for b in app.models.bad_files)
    assert client.post(f"{API}/refresh-loras").json() is None
    shutil.rmtree(ckpts / "sub")
    shutil.rmtree(vae_dir)
    client.post(f"{API}/refresh-checkpoints")
    assert client.post(f"{API}/unload-checkpoint").json() == {}
    assert app.models.loaded is None
    assert client.post(f"{API}/reload-checkpoint").json() == {}
    assert app.models.loaded is not None and app.models.loaded.info.title == app.selected_checkpoint()


# ---------------------------------------------------------------------------
# auth


def test_api_auth(tmp_path):
    import webui
    from modules.api import parse_credentials

    app = make_app(tmp_path, "--api-auth", "alice:s3:cret, bob:pw")
    try:
        client = TestClient(webui.create_server(app, with_ui=False, with_api=True))
        r = client.get(f"{API}/sd-models")
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Basic"
        assert r.json()["detail"] == "Not authenticated"
        r = client.get(f"{API}/sd-models", auth=("alice", "wrong"))
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Basic"
        assert client.post(f"{API}/txt2img", json=SMALL, auth=("mallory", "s3:cret")).status_code == 401
        assert client.get(f"{API}/sd-models", auth=("alice", "s3:cret")).json() == []
        assert client.get(f"{API}/progress", auth=("bob", "pw")).status_code == 200
        assert client.get("/openapi.json").status_code == 200
    finally:
        app.queue.stop()
    assert parse_credentials("a:b,c:d:e") == {"a": "b", "c": "d:e"}
    with pytest.raises(ValueError):
        parse_credentials("nocolon")


def test_no_model_installed_is_503_with_message(tmp_path):
    import webui

    app = make_app(tmp_path)
    try:
        client = TestClient(webui.create_server(app, with_ui=False, with_api=True))
        r = client.post(f"{API}/txt2img", json=SMALL)
        body = assert_error(r, 503, "no Stable Diffusion checkpoint")
        assert body["error"] == "NoModel"
        assert client.get(f"{API}/sd-models").json() == []
        assert client.get(f"{API}/options").json()["sd_model_checkpoint"] == ""
        assert client.post(f"{API}/options", json=client.get(f"{API}/options").json()).status_code == 200
    finally:
        app.queue.stop()
