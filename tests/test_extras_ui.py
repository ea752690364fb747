"""The Extras tab without a browser: the blocks are built on an App on a temp data folder (no checkpoint is
needed), A1111's labels and ids are there, and the tab's event functions are called directly: Scale by / Scale
to with Lanczos (the very pixels PIL's Lanczos gives), a batch of uploads saved with the "extras" PNG chunk and
the source's "parameters" kept, a folder into an output folder, every bad input an error box (no exception,
the gallery left alone), a tiny random-weight Real-ESRGAN file listed as "R-ESRGAN 4x+" and upscaling, and the
"Send to ..." buttons' updates."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

gr = pytest.importorskip("gradio")
torch = pytest.importorskip("torch")

from modules import cmd_args  # noqa: E402

PARAMS = "a red fox\nSteps: 9, Sampler: Euler a, CFG scale: 5, Seed: 42, Size: 37x23"


def write_tiny_realesrgan(path: Path, nf: int = 8, gc: int = 4, nb: int = 1, seed: int = 0) -> Path:
    """A random-weight 4x RRDBNet in the BasicSR / Real-ESRGAN key layout (RealESRGAN_x4plus.pth's)."""
    g = torch.Generator().manual_seed(seed)
    sd = {}

    def conv(name, cin, cout, bias=0.0):
        sd[f"{name}.weight"] = torch.randn(cout, cin, 3, 3, generator=g) / (cin * 9) ** 0.5
        sd[f"{name}.bias"] = torch.randn(cout, generator=g) * 0.01 + bias

    conv("conv_first", 3, nf)
    for i in range(nb):
        for j in (1, 2, 3):
            for k in range(1, 6):
                conv(f"body.{i}.rdb{j}.conv{k}", nf + (k - 1) * gc, nf if k == 5 else gc)
    for name in ("conv_body", "conv_up1", "conv_up2", "conv_hr"):
        conv(name, nf, nf)
    conv("conv_last", nf, 3, bias=0.5)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"params_ema": sd}, path)
    return path


def noise(size, seed=0, mode="RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    ch = len(mode)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], ch), dtype=np.uint8), mode)


def png_with_params(path: Path, im: Image.Image, text: str = PARAMS) -> Path:
    meta = PngInfo()
    meta.add_text("parameters", text)
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, pnginfo=meta)
    return path


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from modules.app import App
    from modules.ui import build_ui

    data = tmp_path_factory.mktemp("extras-ui")
    write_tiny_realesrgan(data / "models" / "RealESRGAN" / "RealESRGAN_x4plus.pth")
    app = App(cmd_args.parse_args(["--data-dir", str(data), "--skip-install"]))
    app.refresh_models()
    ui = build_ui(app)
    yield app, ui, data
    app.queue.stop()


def values(**changes) -> dict:
    """The tab's values at A1111's defaults (Scale by 4, 512x512 crop, no upscaler), with changes."""
    v = {"resize_mode": 0, "upscaling_resize": 4, "upscaling_resize_w": 512, "upscaling_resize_h": 512,
         "upscaling_crop": True, "upscaler_1": "None", "upscaler_2": "None", "extras_upscaler_2_visibility": 0.0,
         "image": None, "image_batch": [], "input_dir": "", "output_dir": "", "show_results": True}
    v.update(changes)
    return v


def extras_files(data: Path) -> list[Path]:
    return sorted((data / "outputs" / "extras-images").glob("*.png"))


def opened(item) -> Image.Image:
    if isinstance(item, Image.Image):
        return item
    with Image.open(item) as im:
        im.load()
        return im.copy()


def is_error(out: dict) -> bool:
    return 'class="sdw-error"' in out["info"] and out["gallery"] == gr.skip() and out["result"] == gr.skip()


# ---------------------------------------------------------------------------
# the page


def test_layout_labels_and_ids(env):
    app, ui, _ = env
    ex = ui.extras
    labels, buttons, ids = set(), set(), set()
    for block in ui.blocks.blocks.values():
        if isinstance(getattr(block, "label", None), str):
            labels.add(block.label)
        if isinstance(block, gr.Button):
            buttons.add(block.value)
        if block.elem_id:
            ids.add(block.elem_id)
    for label in ("Extras", "Single Image", "Batch Process", "Batch from Directory", "Input directory",
                  "Output directory", "Show result images", "Upscale", "Scale by", "Scale to", "Resize", "Width",
                  "Height", "Crop to fit", "Upscaler 1", "Upscaler 2", "Upscaler 2 visibility", "Source"):
        assert label in labels, label
    assert {"Generate", "Send to img2img", "Send to inpaint", "Send to extras"} <= buttons
    for i in ("tab_extras", "extras_image", "extras_image_batch", "extras_generate", "extras_gallery",
              "extras_html_info", "extras_send_to_img2img", "extras_send_to_inpaint", "txt2img_send_to_extras",
              "img2img_send_to_extras", "pnginfo_send_to_extras", "extras_upscaler_1", "extras_upscaler_2"):
        assert i in ids, i
    # the tab right after img2img
    tab_ids = [b.id for b in ui.tabs.children if isinstance(b, gr.Tab)]
    assert tab_ids[:3] == ["txt2img", "img2img", "extras"]
    r = ex.upscaling_resize
    assert (r.minimum, r.maximum, r.step, r.value) == (1.0, 8.0, 0.05, 4)
    vis = ex.extras_upscaler_2_visibility
    assert (vis.minimum, vis.maximum, vis.step, vis.value) == (0.0, 1.0, 0.001, 0.0)
    assert (ex.upscaling_resize_w.value, ex.upscaling_resize_h.value, ex.upscaling_crop.value) == (512, 512, True)
    assert ex.show_results.value is True and ex.generate.variant == "primary"
    choices = [c[0] for c in ex.upscaler_1.choices]
    assert choices[:3] == ["None", "Lanczos", "Nearest"] and "R-ESRGAN 4x+" in choices
    assert not any(c.startswith("Latent") for c in choices)
    assert [c[0] for c in ex.upscaler_2.choices] == choices


# ---------------------------------------------------------------------------
# the work


def test_single_image_scale_by_lanczos_is_pils_lanczos(env):
    app, _, data = env
    from modules.ui import extras_ui

    before = set(extras_files(data))
    src = noise((37, 23), seed=1)
    out = extras_ui.generate(app, "single_image", values(image=src, upscaling_resize=2, upscaler_1="Lanczos"))
    assert 'sdw-error' not in out["info"], out["info"]
    (item,) = out["gallery"]
    got = opened(item)
    # A1111's size: int(side * scale) // 8 * 8
    assert got.size == (72, 40)
    want = src.resize((72, 40), Image.LANCZOS)
    assert np.array_equal(np.asarray(got.convert("RGB")), np.asarray(want))
    (new,) = set(extras_files(data)) - before
    assert new.name == "00000.png" or new.name[:5].isdigit()
    with Image.open(new) as saved:
        assert saved.text["extras"] == "Postprocess upscale by: 2, Postprocess upscaler: Lanczos"
        assert np.array_equal(np.asarray(saved.convert("RGB")), np.asarray(want))
    assert "Postprocess upscale by: 2" in out["info"] and "Time taken" in out["info"]
    assert out["result"]["files"] == [str(new)]


def test_single_image_from_a_file_keeps_its_parameters(env, tmp_path):
    app, _, data = env
    from modules.ui import extras_ui

    before = set(extras_files(data))
    path = png_with_params(tmp_path / "src.png", noise((16, 16), seed=2))
    out = extras_ui.generate(app, "single_image", values(image=str(path), upscaling_resize=1.5, upscaler_1="Nearest"))
    assert opened(out["gallery"][0]).size == (24, 24)
    (new,) = set(extras_files(data)) - before
    with Image.open(new) as saved:
        assert saved.text["parameters"] == PARAMS
        assert saved.text["extras"] == "Postprocess upscale by: 1.5, Postprocess upscaler: Nearest"


def test_scale_to_with_crop(env):
    app, _, _ = env
    from modules.ui import extras_ui

    src = noise((64, 32), seed=3)
    out = extras_ui.generate(app, "single_image", values(image=src, resize_mode=1, upscaling_resize_w=128,
                                                           upscaling_resize_h=128, upscaling_crop=True,
                                                           upscaler_1="Lanczos"))
    got = opened(out["gallery"][0])
    assert got.size == (128, 128)
    big = src.resize((256, 128), Image.LANCZOS)      # by max(128/64, 128/32) = 4, then the middle
    assert np.array_equal(np.asarray(got.convert("RGB")), np.asarray(big.crop((64, 0, 192, 128))))
    assert "Postprocess upscale to: 128x128" in out["info"] and "Postprocess crop to: 128x128" in out["info"]
    # without the crop: the whole picture at the larger scale
    out = extras_ui.generate(app, "single_image", values(image=src, resize_mode=1, upscaling_resize_w=128,
                                                           upscaling_resize_h=128, upscaling_crop=False,
                                                           upscaler_1="Lanczos"))
    assert opened(out["gallery"][0]).size == (256, 128)


def test_batch_of_two_uploads(env, tmp_path):
    app, _, data = env
    from modules.ui import extras_ui

    before = set(extras_files(data))
    a = png_with_params(tmp_path / "upload1" / "image.png", noise((20, 12), seed=4))
    b = png_with_params(tmp_path / "upload2" / "image.png", noise((12, 20), seed=5), "another\nSteps: 3, Seed: 7")
    batch = [{"path": str(a), "orig_name": "first.png"}, {"path": str(b), "orig_name": "second.png"}]
    out = extras_ui.generate(app, "batch_process", values(image_batch=batch, upscaling_resize=2, upscaler_1="Lanczos"))
    assert [opened(i).size for i in out["gallery"]] == [(40, 24), (24, 40)]
    new = sorted(set(extras_files(data)) - before)
    assert [p.name for p in new] == ["first.png", "second.png"]   # use_original_name_batch (A1111's default)
    for path, params in zip(new, (PARAMS, "another\nSteps: 3, Seed: 7")):
        with Image.open(path) as saved:
            assert saved.text["extras"] == "Postprocess upscale by: 2, Postprocess upscaler: Lanczos"
            assert saved.text["parameters"] == params
    assert "Pictures written: 2" in out["info"] and f"Output directory: {new[0].parent}" in out["info"]
    assert len(out["result"]["infotexts"]) == 2


def test_batch_from_directory_into_an_output_directory(env, tmp_path):
    app, _, data = env
    from modules.ui import extras_ui

    src = tmp_path / "in"
    png_with_params(src / "b.png", noise((10, 10), seed=6))
    noise((8, 6), seed=7).save(src / "a.jpg", quality=95)
    (src / "notes.txt").write_text("not a picture")
    (src / "broken.png").write_bytes(b"this is no png")
    dst = tmp_path / "out"
    before = set(extras_files(data))
    out = extras_ui.generate(app, "batch_from_directory", values(input_dir=str(src), output_dir=str(dst),
                                                                   upscaling_resize=2, upscaler_1="Lanczos"))
    assert "sdw-error" not in out["info"]
    assert sorted(p.name for p in dst.iterdir()) == ["a.png", "b.png"]
    assert set(extras_files(data)) == before              # nothing in the default folder
    with Image.open(dst / "a.png") as im:
        assert im.size == (16, 8)                          # int(6 * 2) // 8 * 8
    with Image.open(dst / "b.png") as im:
        assert im.size == (16, 16) and im.text["parameters"] == PARAMS
    assert [opened(i).size for i in out["gallery"]] == [(16, 8), (16, 16)]
    assert "broken.png" in out["info"]                     # the file that is no picture: skipped, said
    # "Show result images" off: written, not shown
    out = extras_ui.generate(app, "batch_from_directory", values(input_dir=str(src), output_dir=str(dst),
                                                                   show_results=False, upscaler_1="Lanczos",
                                                                   upscaling_resize=1))
    assert out["gallery"] == [] and "Pictures written: 2" in out["info"] and f"Output directory: {dst}" in out["info"]


@pytest.mark.parametrize("mode, changes, needle", [
    ("single_image", {}, "Upload a picture"),
    ("single_image", {"image": "__missing__"}, "not a picture"),
    ("single_image", {"image": "__text__"}, "not a picture"),
    ("single_image", {"image": "__pic__", "upscaler_1": "No such upscaler"}, "unknown upscaler"),
    ("single_image", {"image": "__pic__", "upscaler_1": "R-ESRGAN 4x+ Anime6B"}, "RealESRGAN_x4plus_anime_6B.pth"),
    ("single_image", {"image": "__pic__", "upscaler_1": "Latent"}, "latent"),
    ("single_image", {"image": "__pic__", "upscaler_1": "Lanczos", "upscaling_resize": 8000}, "larger than allowed"),
    ("single_image", {"image": "__pic__", "upscaling_resize": "abc"}, "not a number"),
    ("batch_process", {}, "Upload pictures"),
    ("batch_process", {"image_batch": ["__text__"]}, "not a picture"),
    ("batch_from_directory", {}, "enter an input directory"),
    ("batch_from_directory", {"input_dir": "__nowhere__"}, "is not a folder"),
    ("batch_from_directory", {"input_dir": "__empty__"}, "No pictures"),
])
def test_bad_input_is_an_error_box(env, tmp_path, mode, changes, needle):
    app, _, _ = env
    from modules.ui import extras_ui

    text = tmp_path / "notes.png"
    text.write_text("not a picture")
    (tmp_path / "empty").mkdir()
    subst = {"__missing__": str(tmp_path / "gone.png"), "__text__": str(text), "__pic__": noise((8, 8)),
             "__nowhere__": str(tmp_path / "nowhere"), "__empty__": str(tmp_path / "empty")}
    v = {k: ([subst.get(x, x) for x in val] if isinstance(val, list) else subst.get(val, val) if isinstance(val, str)
             else val) for k, val in changes.items()}
    out = extras_ui.generate(app, mode, values(**v))
    assert is_error(out), out
    assert needle.lower() in out["info"].lower(), out["info"]
    assert "Traceback" not in out["info"]


# ---------------------------------------------------------------------------
# a model upscaler


def test_real_esrgan_file_is_listed_and_upscales(env, one_thread):
    app, _, data = env
    from modules.ui import extras_ui

    assert "R-ESRGAN 4x+" in extras_ui.upscaler_choices(app)
    src = noise((12, 10), seed=8)
    out = extras_ui.generate(app, "single_image", values(image=src, upscaling_resize=4, upscaler_1="R-ESRGAN 4x+"))
    assert "sdw-error" not in out["info"], out["info"]
    got = opened(out["gallery"][0]).convert("RGB")
    assert got.size == (48, 40)
    arr = np.asarray(got)
    assert arr.std() > 1.0                                   # a picture, not a flat fill
    assert not np.array_equal(arr, np.asarray(src.resize((48, 40), Image.LANCZOS)))
    with Image.open(Path(out["result"]["files"][0])) as saved:
        assert saved.text["extras"] == "Postprocess upscale by: 4, Postprocess upscaler: R-ESRGAN 4x+"
    # and blended with a second upscaler
    out = extras_ui.generate(app, "single_image", values(image=src, upscaling_resize=2, upscaler_1="R-ESRGAN 4x+",
                                                           upscaler_2="Lanczos", extras_upscaler_2_visibility=0.5))
    assert opened(out["gallery"][0]).size == (24, 16)
    assert "Postprocess upscaler 2: Lanczos" in out["info"]
    # tile progress reaches the callback (the page's gr.Progress)
    seen = []
    extras_ui.generate(app, "single_image", values(image=noise((8, 8)), upscaling_resize=4, upscaler_1="R-ESRGAN 4x+"),
                       progress=lambda p, desc=None, unit=None: seen.append((p, desc, unit)))
    assert ((1, 1), "Upscaling", "tiles") in seen


def test_refresh_lists_a_new_file(env, tmp_path):
    app, _, data = env
    from modules.ui import extras_ui

    new = write_tiny_realesrgan(data / "models" / "ESRGAN" / "4x_tiny_test.pth", seed=3)
    try:
        app.refresh_models()
        one, two = extras_ui.upscaler_updates(app)
        assert "4x_tiny_test" in one["choices"] and one["choices"] == two["choices"]
    finally:
        new.unlink()
        app.refresh_models()
    assert "4x_tiny_test" not in extras_ui.upscaler_choices(app)


# ---------------------------------------------------------------------------
# sending pictures


def test_send_results_to_img2img_and_inpaint(env):
    _, ui, _ = env
    from modules.ui import extras_ui

    pic = noise((16, 8))
    pic.info["parameters"] = PARAMS
    state = {"infotexts": ["Postprocess upscale by: 2"], "index": 0, "grid": False}
    c = ui.img2img.c
    upd = extras_ui.send_to_img2img(ui.img2img, ui.tabs, "img2img", state, [(pic, None)])
    assert upd[c["init_img"]].size == (16, 8) and "parameters" not in upd[c["init_img"]].info
    assert upd[ui.tabs] == {"__type__": "update", "selected": "img2img"}
    assert upd[c["subtabs"]] == {"__type__": "update", "selected": "img2img"} and upd[c["mode"]] == "img2img"
    assert c["prompt"] not in upd                          # only the picture, as A1111's Extras sends
    upd = extras_ui.send_to_img2img(ui.img2img, ui.tabs, "inpaint", state, [(pic, None)])
    assert upd[c["inpaint"]].size == (16, 8) and upd[c["mode"]] == "inpaint"
    assert upd[c["mask_options"]] == {"__type__": "update", "visible": True}
    assert extras_ui.send_to_img2img(ui.img2img, ui.tabs, "img2img", {}, []) == {}


def test_send_to_extras(env):
    _, ui, _ = env
    from modules.ui import common, extras_ui

    ex = ui.extras
    pic = noise((16, 8))
    image = common.selected_image({"index": 0}, [(pic, None)])
    upd = extras_ui.send_image_updates(ex, ui.tabs, image)
    assert upd[ex.image] is pic and upd[ex.mode] == "single_image"
    assert upd[ex.subtabs] == {"__type__": "update", "selected": "single_image"}
    assert upd[ui.tabs] == {"__type__": "update", "selected": "extras"}
    assert extras_ui.send_image_updates(ex, ui.tabs, None) == {}
    for tab in (ui.txt2img, ui.img2img):
        assert tab.c["send_extras"].value == "Send to extras"
        assert tab.c["send_extras"].elem_id == f"{tab.name}_send_to_extras"
    assert ui.pnginfo.to_extras.elem_id == "pnginfo_send_to_extras"


def test_gallery_select_shows_that_pictures_infotext(env):
    from modules.ui import extras_ui

    state = {"infotexts": ["Postprocess upscale by: 2, first", "Postprocess upscale by: 2, second"], "index": 0,
             "grid": False}
    new, html = extras_ui.select(state, 1)
    assert new["index"] == 1 and "second" in html and "first" not in html
