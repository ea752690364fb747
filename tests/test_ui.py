"""The Gradio UI without a browser: the blocks are built on an App with a tiny model, the labels
A1111 users (and A1111 localization files) expect are there, and the handlers' work is called
directly: generation, errors, interrupt, img2img / inpaint / batch, PNG Info paste, settings,
styles, the top bar."""
from __future__ import annotations

import json
import re
import time

import pytest
from PIL import Image

gr = pytest.importorskip("gradio")

from modules import cmd_args, images, infotext, options  # noqa: E402
from modules.engine import GenerationRequest  # noqa: E402

SMALL = dict(width=64, height=64, steps=3, seed=5, cfg_scale=7.0)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from modules.app import App
    from testing.tiny_models import write_tiny_checkpoint
    from modules.ui import build_ui

    data = tmp_path_factory.mktemp("ui")
    write_tiny_checkpoint(data / "models" / "Stable-diffusion" / "tiny.safetensors", "sd1")
    app = App(cmd_args.parse_args(["--data-dir", str(data), "--skip-install"]))
    app.refresh_models()
    ui = build_ui(app)
    yield app, ui, data
    app.queue.stop()


def values_of(tab, **changes) -> dict:
    """The tab's request fields at their defaults (what the page starts with), with changes."""
    v = {k: getattr(c, "value", None) for k, c in tab.fields.items()}
    v.update(changes)
    return v


def run(gen) -> list[dict]:
    return list(gen)


def sizes(gallery) -> list:
    """Sizes of gallery items (PIL images, or files the gallery serves as they are)."""
    out = []
    for item in gallery:
        if isinstance(item, str):
            with Image.open(item) as im:
                out.append(im.size)
        else:
            out.append(item.size)
    return out


def merged(updates: list[dict]) -> dict:
    out: dict = {}
    for u in updates:
        out.update(u)
    return out


# ---------------------------------------------------------------------------
# the page


def test_labels_and_ids(env):
    app, ui, _ = env
    labels, buttons, ids = set(), set(), set()
    for block in ui.blocks.blocks.values():
        label = getattr(block, "label", None)
        if isinstance(label, str):
            labels.add(label)
        if isinstance(block, gr.Button):
            buttons.add(block.value)
        if block.elem_id:
            ids.add(block.elem_id)
    for label in ["Stable Diffusion checkpoint", "SD VAE", "Prompt", "Negative prompt", "Styles",
                  "Sampling method", "Schedule type", "Sampling steps", "Hires. fix", "Upscaler", "Hires steps",
                  "Denoising strength", "Upscale by", "Resize width to", "Resize height to", "Width", "Height",
                  "Batch count", "Batch size", "CFG Scale", "Seed", "Extra", "Variation seed", "Variation strength",
                  "Resize seed from width", "Resize seed from height", "Resize mode", "Mask blur", "Mask mode",
                  "Masked content", "Inpaint area", "Only masked padding, pixels", "Input directory",
                  "Output directory", "txt2img", "img2img", "Sketch", "Inpaint", "Inpaint upload", "Batch",
                  "PNG Info", "Settings", "Saving images", "Clip skip"]:
        assert label in labels, label
    for b in ["Generate", "Interrupt", "Skip", "Save", "Send to img2img", "Send to inpaint", "Send to txt2img",
              "Apply settings", "Reload UI", "\U0001f504", "\U0001f4cb", "\U0001f4be", "\u21c5",
              "\U0001f3b2\ufe0f", "\u267b\ufe0f", "\U0001f4c2"]:
        assert b in buttons, b
    for i in ["txt2img_prompt", "txt2img_neg_prompt", "txt2img_generate", "txt2img_gallery",
              "txt2img_res_switch_btn", "refresh_sd_model_checkpoint", "language_toggle", "img2img_generate",
              "img2img_gallery", "img2maskimg", "pnginfo_image", "settings_submit", "tab_txt2img"]:
        assert i in ids, i
    assert ui.top["language"].choices == [("English", "English"), ("简体中文", "简体中文")]
    steps = ui.txt2img.c["steps"]
    assert (steps.minimum, steps.maximum, steps.value) == (1, 150, 20)
    cfg = ui.txt2img.c["cfg_scale"]
    assert (cfg.minimum, cfg.maximum, cfg.step, cfg.value) == (1.0, 30.0, 0.5, 7.0)
    width = ui.txt2img.c["width"]
    assert (width.minimum, width.maximum, width.step) == (64, 2048, 8)
    # every visible option has a component with its label, description and range
    st = ui.settings.comps
    assert set(st) == {i.key for i in app.opts.infos.values() if not i.hidden}
    jq = st["jpeg_quality"]
    assert (jq.label, jq.minimum, jq.maximum, jq.step, jq.value) == (
        "Quality for saved jpeg and webp images", 1, 100, 1, 80)
    assert st["samples_format"].choices == [("png", "png"), ("jpg", "jpg"), ("webp", "webp")]
    assert st["compile_unet"].label == "Compile the UNet with torch.compile (requires restart)"
    assert st["eta_ddim"].info == "Noise multiplier for DDIM; 0 is deterministic."


def test_create_ui_returns_head_and_css(env):
    app, _, _ = env
    from modules.ui import create_ui

    blocks, head, css = create_ui(app)
    assert isinstance(blocks, gr.Blocks)
    assert "`${tab}_generate`" in head  # the keyboard shortcuts script
    assert "window.localization = " in head  # the localization script
    assert ".sdw-progress-fill" in css


def test_token_counter(env):
    app, _, _ = env
    from modules.ui import common

    assert common.token_counter_text(app, "") == "0/75"
    assert common.token_counter_text(app, "a red cat") == "3/75"
    assert common.token_counter_text(app, "cat " * 80) == "80/150"


def test_progress_text():
    from modules.jobs import Job
    from modules.ui import common

    job = Job(id="x", request=GenerationRequest(), checkpoint=None, vae=None)
    assert common.progress_text(job, 2) == "Waiting..., queued: position 2"
    job.status = "running"
    job.control.total_steps, job.control.step = 20, 5
    job.control.started = time.time() - 5.0
    assert common.progress_text(job, None) == "Step 5/20, ETA 15s"
    assert 'style="width:25.0%"' in common.progress_html(job, None)


# ---------------------------------------------------------------------------
# txt2img


def test_txt2img_generate(env, monkeypatch):
    app, ui, data = env
    from modules.ui import common, txt2img

    t2i = ui.txt2img
    ups = run(txt2img.generate(app, values_of(t2i, prompt="a red cat", **SMALL), app.selected_checkpoint(),
                               "Automatic"))
    first, last = ups[0], ups[-1]
    assert first["job_id"] and first["browser_job"] == first["job_id"]
    state = last["result"]
    assert last["gallery"] == state["files"]     # the saved file itself (it lies under the temp dir)
    assert sizes(last["gallery"]) == [(64, 64)]
    assert state["seeds"] == [5]
    text = state["infotexts"][0]
    assert text.startswith("a red cat\nSteps: 3, Sampler: DPM++ 2M, ")
    assert "Seed: 5, Size: 64x64" in text
    assert "Seed: 5" in last["info"] and "Time taken:" in last["info"]
    assert re.search(r"Peak memory: \d+\.\d\d GiB RAM", last["info"]), last["info"]  # the CPU: process peak
    # the file on disk carries the same infotext
    (path,) = state["files"]
    with Image.open(path) as im:
        assert images.read_info_from_image(im)[0] == text
    # reuse seed, reconnect after a reload, Save
    assert common.reuse_seed(state) == 5
    again = merged(run(common.reconnect(app, first["job_id"])))
    assert again["result"]["infotexts"] == [text] and again["gallery"] == [path]
    # where gradio could not serve the saved file, the gallery gets the image carrying its parameters
    monkeypatch.setattr(common, "_servable", lambda path: False)
    (shown,) = common.gallery_images(app.queue.get(first["job_id"]))
    assert shown.size == (64, 64) and shown.info["parameters"] == text
    msg = common.save_selected(app, state, [(shown, None)])
    saved = data / "log" / "images" / path.split("/")[-1]
    assert f"Saved: {saved}" in msg and saved.is_file()
    assert "Output folder: " + str(data / "outputs" / "txt2img-images") in common.open_folder_message(app, "txt2img")


def test_batch_gallery_leads_with_the_grid_unless_turned_off(env):
    app, ui, _ = env
    from modules.ui import common, txt2img

    def gallery():
        last = run(txt2img.generate(app, values_of(ui.txt2img, prompt="a red cat", batch_size=2, **SMALL),
                                    app.selected_checkpoint(), "Automatic"))[-1]
        return last["gallery"], last["result"]

    shown, state = gallery()
    assert sizes(shown) == [(128, 64), (64, 64), (64, 64)] and state["grid"]
    assert [common.image_index(state, i) for i in (0, 1, 2)] == [0, 0, 1]
    app.opts.set("return_grid", False, save=False)
    try:
        shown, state = gallery()
    finally:
        app.opts.set("return_grid", True, save=False)
    assert sizes(shown) == [(64, 64), (64, 64)] and not state["grid"]
    assert [common.image_index(state, i) for i in (0, 1)] == [0, 1]


def test_txt2img_bad_input_is_an_error_message(env):
    app, ui, _ = env
    from modules.ui import txt2img

    before = len(app.queue.pending())
    with pytest.warns(UserWarning):
        ups = run(txt2img.generate(app, values_of(ui.txt2img, prompt="", **dict(SMALL, width=65)),
                                   app.selected_checkpoint(), None))
    assert len(ups) == 1
    assert 'class="sdw-error"' in ups[0]["progress"] and "width: must be a multiple of 8, got 65" in ups[0]["progress"]
    assert len(app.queue.pending()) == before
    with pytest.warns(UserWarning):
        ups = run(txt2img.generate(app, values_of(ui.txt2img, **SMALL), "no-such-model", None))
    assert "checkpoint &#x27;no-such-model&#x27; not found" in ups[0]["progress"]


def test_interrupt_stops_a_long_job(env):
    app, ui, _ = env
    from modules.ui import common, txt2img

    gen = txt2img.generate(app, values_of(ui.txt2img, prompt="long", n_iter=3, **dict(SMALL, steps=150)),
                           app.selected_checkpoint(), None)
    first = next(gen)
    job = app.queue.get(first["job_id"])
    deadline = time.time() + 30
    while job.control.step < 2 and time.time() < deadline:
        time.sleep(0.05)
    assert common.interrupt_job(app, first["job_id"]) is True
    last = merged(list(gen))
    assert job.status == "interrupted"
    assert len(job.result.images) == 1          # the first of 3 images, cut short; the others never started
    assert last["result"]["interrupted"] is True and "Interrupted." in last["info"]
    assert common.interrupt_job(app, "") is False


def test_hires_request_fields(env):
    app, ui, _ = env
    from modules.ui import txt2img

    req = txt2img.build_request(app, values_of(ui.txt2img, enable_hr=True, hr_upscaler="Latent (nearest)",
                                               hr_second_pass_steps=4, denoising_strength=0.5, hr_scale=1.5,
                                               hr_resize_x=0, hr_resize_y=0, seed_extra=True, subseed=9,
                                               subseed_strength=0.25, seed_resize_from_w=96, seed_resize_from_h=80,
                                               override_settings=["Clip skip: 2", "ENSD: 31337", "RNG: GPU"],
                                               **SMALL))
    assert (req.enable_hr, req.hr_upscaler, req.hr_second_pass_steps, req.denoising_strength, req.hr_scale) == (
        True, "Latent (nearest)", 4, 0.5, 1.5)
    assert (req.subseed, req.subseed_strength, req.seed_resize_from_w, req.seed_resize_from_h) == (9, 0.25, 96, 80)
    assert req.override_settings == {"CLIP_stop_at_last_layers": 2, "eta_noise_seed_delta": 31337,
                                     "randn_source": "GPU"}
    off = txt2img.build_request(app, values_of(ui.txt2img, subseed=9, subseed_strength=0.25, **SMALL))
    assert (off.enable_hr, off.subseed_strength, off.seed_resize_from_w) == (False, 0.0, 0)   # "Extra" unchecked


# ---------------------------------------------------------------------------
# img2img


def _square(color, size=64):
    return Image.new("RGB", (size, size), color)


def test_img2img_and_inpaint(env):
    app, ui, _ = env
    from modules.ui import img2img

    i2i = ui.img2img
    ckpt = app.selected_checkpoint()
    last = merged(run(img2img.generate(app, values_of(i2i, mode="img2img", init_img=_square("red"),
                                                      denoising_strength=0.5, **SMALL), ckpt, None)))
    assert sizes(last["gallery"]) == [(64, 64)]
    assert "Denoising strength: 0.5" in last["result"]["infotexts"][0]

    # inpaint: the painted layer becomes the white mask
    layer = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    layer.paste((255, 255, 255, 255), (16, 16, 32, 32))
    req = img2img.build_request(app, values_of(i2i, mode="inpaint", inpaint={"background": _square("blue"),
                                                                            "layers": [layer], "composite": None},
                                               **SMALL))
    assert req.mask.mode == "L" and req.mask.getbbox() == (16, 16, 32, 32)
    assert req.mask.getpixel((20, 20)) == 255 and req.mask.getpixel((5, 5)) == 0
    last = merged(run(img2img.generate(app, values_of(i2i, mode="inpaint", inpaint={
        "background": _square("blue"), "layers": [layer], "composite": None}, **SMALL), ckpt, None)))
    assert "Mask blur: 4" in last["result"]["infotexts"][0]


def test_inpaint_errors_are_messages(env):
    app, ui, _ = env
    from modules.ui import img2img

    i2i = ui.img2img
    cases = [
        (dict(mode="inpaint_upload", inpaint_base=_square("red"), inpaint_mask=Image.new("L", (32, 32), 255)),
         "mask: size 32x32 differs from the init image&#x27;s 64x64"),
        (dict(mode="inpaint", inpaint={"background": _square("red"), "layers": [], "composite": None}),
         "draw the area to repaint"),
        (dict(mode="img2img", init_img=None), "upload an image to the img2img tab first"),
    ]
    for fields, message in cases:
        with pytest.warns(UserWarning):
            ups = run(img2img.generate(app, values_of(i2i, **fields, **SMALL), app.selected_checkpoint(), None))
        assert message in ups[-1]["progress"], ups


def test_batch(env, tmp_path):
    app, ui, _ = env
    from modules.ui import img2img

    src, dst = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    _square("red").save(src / "a.png")
    _square("green").save(src / "b.jpg")
    (src / "notes.txt").write_text("not an image")
    last = merged(run(img2img.generate(app, values_of(ui.img2img, mode="batch", batch_input_dir=str(src),
                                                      batch_output_dir=str(dst), **SMALL),
                                       app.selected_checkpoint(), None)))
    assert sorted(p.name for p in dst.iterdir()) == ["a.png", "b.png"]
    with Image.open(dst / "b.png") as im:
        assert im.size == (64, 64) and "Seed: 5" in images.read_info_from_image(im)[0]
    assert len(last["gallery"]) == 2 and "Batch: 2 images written into" in last["progress"]
    with pytest.warns(UserWarning):
        ups = run(img2img.generate(app, values_of(ui.img2img, mode="batch", batch_input_dir=str(tmp_path / "nope")),
                                   None, None))
    assert "does not exist" in ups[0]["progress"]


# ---------------------------------------------------------------------------
# PNG Info and sending parameters


def test_pnginfo_round_trip(env, tmp_path):
    app, ui, _ = env
    from modules.ui import common, pnginfo

    text = ("a house\nNegative prompt: blurry\nSteps: 12, Sampler: Euler a, Schedule type: Karras, CFG scale: 4.5, "
            "Seed: 1234, Size: 96x128, Variation seed: 77, Variation seed strength: 0.3, Clip skip: 2, "
            "Denoising strength: 0.45, ENSD: 31337, Hires upscale: 1.5, Hires steps: 6, Hires upscaler: Latent (bicubic)")
    path = tmp_path / "x.png"
    common.save_png(_square("red"), path, text)
    html, got, image = pnginfo.read_info(str(path))
    assert got == text and image.size == (64, 64) and "Steps: 12" in html
    upd = common.paste_updates(app, ui.txt2img, infotext.parse_generation_parameters(got))
    assert upd == {
        "prompt": "a house", "negative_prompt": "blurry", "steps": 12, "cfg_scale": 4.5, "seed": 1234,
        "width": 96, "height": 128, "denoising_strength": 0.45, "sampler_name": "Euler a", "scheduler": "Karras",
        "subseed": 77, "subseed_strength": 0.3, "seed_extra": True, "enable_hr": True, "hr_scale": 1.5,
        "hr_second_pass_steps": 6, "hr_upscaler": "Latent (bicubic)", "hr_resize_x": 0, "hr_resize_y": 0,
        # settings named by the text (a missing RNG means A1111's GPU noise, which the NV source draws here)
        "override_settings": ["Clip skip: 2", "ENSD: 31337", "RNG: NV"],
    }
    comps = pnginfo.send_updates(app, ui.txt2img, got)
    c = ui.txt2img.c
    assert comps[c["prompt"]] == "a house" and comps[c["steps"]] == 12
    assert comps[c["hr_accordion"]] == {"__type__": "update", "open": True}
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"this is not a png")
    html, got, image = pnginfo.read_info(str(bad))
    assert 'class="sdw-error"' in html and got == "" and image is None


def test_send_to_inpaint(env):
    app, ui, _ = env
    from modules.ui import send_to_img2img

    text = "a cat\nSteps: 7, Sampler: Euler, CFG scale: 3, Seed: 42, Size: 64x64"
    state = {"infotexts": [text], "seeds": [42], "index": 0, "grid": False}
    im = _square("red")
    upd = send_to_img2img(app, ui.txt2img, ui.img2img, "inpaint", ui.tabs, state, [(im, None)])
    c = ui.img2img.c
    assert upd[c["inpaint"]].size == (64, 64)
    assert upd[c["prompt"]] == "a cat" and upd[c["steps"]] == 7 and upd[c["seed"]] == 42
    assert upd[c["mode"]] == "inpaint"
    assert upd[ui.tabs] == {"__type__": "update", "selected": "img2img"}
    assert upd[c["subtabs"]] == {"__type__": "update", "selected": "inpaint"}
    assert upd[c["mask_options"]] == {"__type__": "update", "visible": True}


# ---------------------------------------------------------------------------
# settings, styles, top bar


def test_settings_apply_and_persist(env):
    app, ui, data = env
    from modules.ui import settings

    vals = {k: app.opts.get(k) for k in ui.settings.comps}
    vals.update(jpeg_quality=55.0, samples_format="webp")
    msg = settings.apply_settings(app, vals)
    assert "2 settings changed: File format for images, Quality for saved jpeg and webp images." in msg
    saved = json.loads((data / "config.json").read_text(encoding="utf-8"))
    assert saved["jpeg_quality"] == 55 and saved["samples_format"] == "webp"
    assert options.Options(data / "config.json").get("jpeg_quality") == 55
    loaded = dict(zip(ui.settings.comps, settings.current_values(app, ui.settings)))
    assert loaded["jpeg_quality"] == 55 and loaded["samples_format"] == "webp"
    assert loaded["eta_ddim"] == {"__type__": "update"}    # unchanged since the page was built: left alone
    with pytest.warns(UserWarning):
        msg = settings.apply_settings(app, dict(vals, jpeg_quality=55, eta_ddim=3.0))
    assert "sdw-error" in msg and "above the maximum 1.0" in msg
    assert app.opts.get("eta_ddim") == 0.0
    assert "Nothing changed." in settings.apply_settings(app, dict(vals, jpeg_quality=55))
    settings.apply_settings(app, dict(vals, jpeg_quality=80, samples_format="png"))


def test_styles(env):
    app, ui, data = env
    from modules.ui import common

    assert "Saved style" in common.save_style(app, "warm", "{prompt}, warm light", "cold")
    assert (data / "styles.csv").read_text(encoding="utf-8-sig").splitlines()[1] == "warm,\"{prompt}, warm light\",cold"
    assert common.apply_styles(app, "a cat", "ugly", ["warm"]) == ("a cat, warm light", "ugly, cold", [])
    with pytest.warns(UserWarning):
        assert "sdw-error" in common.save_style(app, "  ", "x", "y")


def test_top_bar(env):
    app, ui, _ = env
    from modules import ui as ui_mod

    title = app.selected_checkpoint()
    values = ui_mod.top_bar_values(app)
    assert values[0]["choices"] == [title] and values[0]["value"] == title
    assert values[1]["choices"] == ["Automatic", "None"] and values[2] == "English"
    assert values[4:] == (512, 512, 512, 512)
    assert ui_mod.top_bar_values(app, 512)[4:] == ({"__type__": "update"},) * 4   # gr.skip(): no change
    with pytest.warns(UserWarning):
        shown, native, status = ui_mod.change_checkpoint(app, "missing-model")
    assert shown == title and native is None and "not found" in status
    assert ui_mod.change_checkpoint(app, title) == (title, 512, "")
    ui_mod.set_language(app, "简体中文")
    assert app.opts.get("localization") == "zh_CN" and ui_mod.language_of(app) == "简体中文"
    ui_mod.set_language(app, "English")
    assert app.opts.get("localization") == "None"
    assert ui_mod.set_vae(app, "None") == "" and app.opts.get("sd_vae") == "None"
    ui_mod.set_vae(app, "Automatic")
    # a model file that cannot be read: listed under the top bar after a refresh, the others stay usable
    broken = app.paths.ckpt_dirs[0] / "broken.safetensors"
    broken.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    try:
        choices, _vae, status = ui_mod.refresh_checkpoints(app)
        assert choices["choices"] == [title]
        assert 'class="sdw-error"' in status and "Skipped model files: broken.safetensors: " in status
    finally:
        broken.unlink()
        app.refresh_models()
    assert ui_mod.model_status_html(app) == ""
