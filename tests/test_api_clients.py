"""An existing A1111 client, the `webuiapi` package from PyPI (unmodified), against a real uvicorn
server on 127.0.0.1: txt2img, img2img, png_info, models, samplers, progress, interrupt, options."""
from __future__ import annotations

import socket
import threading
import time

import pytest

from modules import cmd_args

webuiapi = pytest.importorskip("webuiapi")
uvicorn = pytest.importorskip("uvicorn")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    def __init__(self, data, *flags):
        import webui
        from modules.app import App

        self.app = App(cmd_args.parse_args(["--data-dir", str(data), "--api", *flags]))
        self.port = free_port()
        config = uvicorn.Config(webui.create_server(self.app, with_ui=False, with_api=True), host="127.0.0.1",
                                port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        t0 = time.time()
        while not self.server.started:
            if time.time() - t0 > 30 or not self.thread.is_alive():
                raise RuntimeError("the server did not start")
            time.sleep(0.02)

    def stop(self):
        self.server.should_exit = True
        self.thread.join(10)
        self.app.queue.stop()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from testing.tiny_models import write_tiny_checkpoint

    data = tmp_path_factory.mktemp("clients")
    write_tiny_checkpoint(data / "models" / "Stable-diffusion" / "tiny.safetensors", "sd1", seed=0)
    write_tiny_checkpoint(data / "models" / "Stable-diffusion" / "tiny2.safetensors", "sd1", seed=1)
    from testing.tiny_upscalers import write_rrdb
    write_rrdb(data / "models" / "RealESRGAN" / "RealESRGAN_x4plus.pth")
    s = Served(data)
    yield s, data
    s.stop()


@pytest.fixture
def api(served):
    s, _ = served
    return webuiapi.WebUIApi(host="127.0.0.1", port=s.port, sampler="Euler a", steps=2)


def test_txt2img_img2img_png_info(served, api):
    s, _ = served
    r = api.txt2img(prompt="a lighthouse", negative_prompt="fog", seed=42, width=64, height=64, batch_size=2,
                    cfg_scale=5)
    # as from A1111 with its default "Show grid in gallery": the grid first, then the batch
    assert [im.size for im in r.images] == [(128, 64), (64, 64), (64, 64)]
    assert r.info["index_of_first_image"] == 1
    assert r.info["all_seeds"] == [42, 43] and r.info["seed"] == 42
    text = r.info["infotexts"][0]
    assert text.startswith("a lighthouse\nNegative prompt: fog\nSteps: 2, Sampler: Euler a, "
                           "CFG scale: 5, Seed: 42, Size: 64x64, Model hash: ")
    assert r.image.info["parameters"] == text and r.images[1].info["parameters"] == text
    assert r.parameters["prompt"] == "a lighthouse" and r.parameters["sampler_name"] == "Euler a"
    no_grid = api.txt2img(prompt="a lighthouse", negative_prompt="fog", seed=42, width=64, height=64, batch_size=2,
                          cfg_scale=5, override_settings={"return_grid": False})
    assert [im.tobytes() for im in no_grid.images] == [im.tobytes() for im in r.images[1:]]
    assert no_grid.info["index_of_first_image"] == 0

    first = r.images[1]  # the first picture, after the grid
    r2 = api.img2img(images=[first], prompt="a lighthouse at night", denoising_strength=0.5, seed=7, width=64,
                     height=64, steps=4)
    assert r2.image.size == (64, 64)
    assert r2.info["all_seeds"] == [7]
    assert "Steps: 4, Sampler: Euler a" in r2.info["infotexts"][0]
    assert "Denoising strength: 0.5" in r2.info["infotexts"][0]
    assert r2.image.tobytes() != first.tobytes()

    info = api.png_info(first)
    assert info.info == text
    assert (info.parameters["Prompt"], info.parameters["Seed"], info.parameters["Sampler"]) == \
        ("a lighthouse", "42", "Euler a")


def test_models_samplers_options(served, api):
    s, data = served
    titles = api.util_get_model_names()
    assert titles == sorted(s.app.models.titles()) and len(titles) == 2
    assert [m["model_name"] for m in api.get_sd_models()] == ["tiny", "tiny2"]
    api.util_set_model(titles[1])
    assert api.util_get_current_model() == titles[1]
    assert s.app.models.loaded.info.title == titles[1]
    r = api.txt2img(prompt="x", seed=1, width=64, height=64)
    assert r.info["sd_model_name"] == "tiny2"
    names = api.util_get_sampler_names()
    assert {"Euler a", "Euler", "DPM++ 2M", "DDIM"} <= set(names)
    assert "karras" in [x["name"] for x in api.get_schedulers()]

    api.set_options({"CLIP_stop_at_last_layers": 2, "jpeg_quality": 90})
    assert api.get_options()["CLIP_stop_at_last_layers"] == 2
    r = api.txt2img(prompt="x", seed=1, width=64, height=64)
    assert r.info["clip_skip"] == 2 and "Clip skip: 2" in r.info["infotexts"][0]
    from modules.app import App
    other = App(cmd_args.parse_args(["--data-dir", str(data)]))  # what a restarted server would read
    try:
        assert (other.opts.get("CLIP_stop_at_last_layers"), other.opts.get("jpeg_quality"),
                other.opts.get("sd_model_checkpoint")) == (2, 90, titles[1])
    finally:
        other.queue.stop()
    api.set_options({"CLIP_stop_at_last_layers": 1, "sd_model_checkpoint": titles[0]})


def test_progress_and_interrupt(served, api):
    s, _ = served
    p = api.get_progress()
    assert set(p) == {"progress", "eta_relative", "state", "current_image", "textinfo"}
    assert p["progress"] == 0 and p["state"]["job_count"] == 0
    assert api.interrupt() == {}
    # interrupt a running job: it stops early and the client gets what was made (nothing here)
    s.app.load_model()
    results = {}
    with s.app.models.lock:
        t = threading.Thread(target=lambda: results.setdefault("r", api.txt2img(prompt="x", seed=3, width=64,
                                                                                 height=64, steps=50)))
        t.start()
        t0 = time.time()
        while api.get_progress()["state"]["job"] == "":
            assert time.time() - t0 < 30
            time.sleep(0.02)
        assert api.interrupt() == {}
    t.join(60)
    r = results["r"]
    assert r.images == [] and r.info["interrupted"] is True and r.info["all_seeds"] == []
    api.util_wait_for_ready(check_interval=0.05)


def test_auth_with_webuiapi(tmp_path):
    s = Served(tmp_path, "--api-auth", "user:pa:ss")
    try:
        good = webuiapi.WebUIApi(host="127.0.0.1", port=s.port, username="user", password="pa:ss")
        assert good.get_sd_models() == []
        bad = webuiapi.WebUIApi(host="127.0.0.1", port=s.port)
        assert bad.get_sd_models() == {"error": "HTTPException", "detail": "Not authenticated", "body": "",
                                       "errors": "Not authenticated"}
        with pytest.raises(RuntimeError) as e:
            bad.txt2img(prompt="x")
        assert e.value.args[0] == 401
    finally:
        s.stop()


# -- scripts, as a client program calls them --------------------------------------------------------------------
XYZ_ARGS = ["Sampler", "Euler a, DDIM", [], 6, "3, 7", [], 0, "", [],  # X: sampler, Y: CFG Scale (index 6)
            True, False, False, False, False, False, False, 0, False]


def test_scripts_listed_for_webuiapi(served, api):
    listed = api.get_scripts()
    assert {"x/y/z plot", "prompt matrix", "prompts from file or textbox", "vignette"} <= set(listed["txt2img"])
    assert {"x/y/z plot", "sd upscale", "loopback", "outpainting mk2", "poor man's outpainting"} \
        <= set(listed["img2img"])
    assert "sd upscale" not in listed["txt2img"]
    info = api.custom_get("script-info", baseurl=True)
    xyz = next(i for i in info if i["name"] == "x/y/z plot" and not i["is_img2img"])
    assert xyz["is_alwayson"] is False
    assert [a["label"] for a in xyz["args"][:3]] == ["X type", "X values", "X values"]
    assert "Sampler" in xyz["args"][0]["choices"] and xyz["args"][0]["value"] == "Seed"
    up = next(i for i in info if i["name"] == "sd upscale")
    assert up["is_img2img"] is True and [a["label"] for a in up["args"]][1:] == ["Tile overlap", "Upscaler",
                                                                                 "Scale Factor"]


def test_xyz_plot_from_webuiapi(served, api):
    r = api.txt2img(prompt="a red circle", seed=5, width=64, height=64, steps=3, script_name="x/y/z plot",
                    script_args=XYZ_ARGS)
    assert len(r.images) == 1  # as A1111 without "Include Sub Images": the grid only
    grid = r.images[0]
    assert grid.width > 128 and grid.height > 128  # two by two cells and the label bands
    text = r.info["infotexts"][0]
    assert "Script: X/Y/Z plot, X Type: Sampler, X Values: \"Euler a, DDIM\", Y Type: CFG Scale, " \
           "Y Values: \"3, 7\"" in text
    # each cell is the same job asked for alone
    for i, (sampler, cfg) in enumerate((s, c) for c in (3, 7) for s in ("Euler a", "DDIM")):
        alone = api.txt2img(prompt="a red circle", seed=5, width=64, height=64, steps=3, sampler_name=sampler,
                            cfg_scale=cfg, override_settings={"return_grid": False}).image
        left, top = grid.width - 128, grid.height - 128
        x, y = left + 64 * (i % 2), top + 64 * (i // 2)
        assert grid.crop((x, y, x + 64, y + 64)).tobytes() == alone.tobytes(), (sampler, cfg)


def test_sd_upscale_and_alwayson_from_webuiapi(served, api):
    from PIL import Image
    src = Image.new("RGB", (64, 64), (200, 60, 40))
    r = api.img2img(images=[src], prompt="a red square", seed=3, width=64, height=64, steps=2,
                    denoising_strength=0.3, script_name="sd upscale", script_args=["", 8, "Lanczos", 2.0])
    assert r.image.size == (128, 128)
    # A1111 reports the tile size (the request's width and height) as the job's size
    assert r.info["width"] == 64 and r.info["height"] == 64 and r.info["all_seeds"][0] == 3
    assert r.image.getpixel((64, 64)) != (0, 0, 0)
    plain = api.txt2img(prompt="x", seed=1, width=64, height=64, override_settings={"return_grid": False}).image
    dim = api.txt2img(prompt="x", seed=1, width=64, height=64, override_settings={"return_grid": False},
                      alwayson_scripts={"Vignette": {"args": [True, 1.0]}})
    assert ", Vignette: 1, " in dim.info["infotexts"][0]
    corner = dim.image.getpixel((0, 0))
    assert sum(corner) < sum(plain.getpixel((0, 0))) and dim.image.getpixel((32, 32)) == plain.getpixel((32, 32))
    with pytest.raises(RuntimeError) as e:
        api.txt2img(prompt="x", width=64, height=64, script_name="no such script")
    assert e.value.args[0] == 422 and "no such script" in str(e.value.args[1])


def test_extras_and_upscaler_lists_from_webuiapi(served, api):
    from PIL import Image

    assert [u["name"] for u in api.get_upscalers()] == ["None", "Lanczos", "Nearest", "R-ESRGAN 4x+"]
    assert [(m["name"], m["scale"]) for m in api.get_realesrgan_models()] == [("R-ESRGAN 4x+", 4)]
    src = Image.linear_gradient("L").resize((24, 16)).convert("RGB")
    r = api.extra_single_image(src, upscaler_1="R-ESRGAN 4x+", upscaling_resize=4)
    assert r.image.size == (96, 64)
    assert "Postprocess upscaler: R-ESRGAN 4x+" in r.info   # webuiapi keeps html_info as .info
    r = api.extra_batch_images([src, src.resize((16, 16))], upscaler_1="R-ESRGAN 4x+", upscaling_resize=2)
    assert [im.size for im in r.images] == [(48, 32), (32, 32)]
