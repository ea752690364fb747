"""The ControlNet section of txt2img / img2img without a browser: the blocks are built on an App with a tiny
checkpoint and a tiny ControlNet file, with the section hooked into the ControlNet script (ui_extra / ui_wire);
the extension's labels are there, and the section's event handlers are called as the page calls them (raw
values, preprocess=False): a unit's controls give the dict units.parse_unit takes, a preprocessor change gives
its sliders, Control Type filters the lists, the preview of canny is cv2.Canny's map, errors are messages."""
from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

gr = pytest.importorskip("gradio")
cv2 = pytest.importorskip("cv2")

from modules import cmd_args  # noqa: E402
from modules.controlnet import preprocessors, units  # noqa: E402
from modules.ui import controlnet_ui  # noqa: E402

UNITS = 3   # control_net_unit_count's default


def hook_up(monkeypatch, cls) -> None:
    """scripts/controlnet.py's ui_extra / ui_wire as they hook this section up (where it does not yet)."""
    from modules.scripts import Script
    if cls.ui_extra is not Script.ui_extra:
        return

    def ui_extra(self, tab, comps, is_img2img):
        return controlnet_ui.build(self.app, tab, is_img2img, self.unit_count())

    def ui_wire(self, tab, comps, is_img2img):
        holders = [comps[f"unit_{i}"] for i in range(self.unit_count())]
        controlnet_ui.wire(self.app, tab, comps, holders, is_img2img)
    monkeypatch.setattr(cls, "ui_extra", ui_extra)
    monkeypatch.setattr(cls, "ui_wire", ui_wire)


def _hook(monkeypatch, app):
    script = app.scripts.find("ControlNet")
    if script is None:
        pytest.skip("scripts/controlnet.py is not there")
    hook_up(monkeypatch, type(script))
    return script


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from modules.app import App
    from modules.ui import build_ui
    from testing.tiny_controlnets import write_tiny_controlnet
    from testing.tiny_models import write_tiny_checkpoint

    mp = pytest.MonkeyPatch()
    data = tmp_path_factory.mktemp("cnui")
    write_tiny_checkpoint(data / "models" / "Stable-diffusion" / "tiny.safetensors", "sd1")
    write_tiny_controlnet(data / "models" / "ControlNet" / "control_v11p_sd15_canny.safetensors", "sd1")
    write_tiny_controlnet(data / "models" / "ControlNet" / "control_sd15_depth.safetensors", "sd1", seed=1)
    app = App(cmd_args.parse_args(["--data-dir", str(data), "--skip-install"]))
    app.refresh_models()
    script = _hook(mp, app)
    ui = build_ui(app)
    yield app, ui, script
    mp.undo()
    app.queue.stop()


def comps_of(ui, tab: str) -> dict:
    t = ui.txt2img if tab == "txt2img" else ui.img2img
    return t.script_comps["ControlNet"]


def handler(blocks, comp, event: str = "change"):
    """The function the page calls for `event` of `comp`, with its inputs and outputs."""
    for f in blocks.fns.values():
        if (comp._id, event) in f.targets:
            return f
    raise AssertionError(f"no {event} handler on {comp}")


def call(blocks, comp, values: dict, event: str = "change", changes: dict | None = None):
    """Run comp's handler with the inputs' values (`values`, then `changes`, by component; the rest at their
    defaults), as the page sends them."""
    changes = changes or {}
    f = handler(blocks, comp, event)
    args = [changes.get(c, values.get(c, getattr(c, "value", None))) for c in f.inputs]
    out = f.fn(*args)
    if isinstance(out, dict) and out and not any(isinstance(k, str) for k in out):  # {component: update}
        return out
    out = out if isinstance(out, tuple) else (out,)
    return dict(zip(f.outputs, out))


def html(update) -> str:
    """The text a message box update shows ("" where it is hidden)."""
    return update["value"] if update.get("visible") else ""


def picture(w=96, h=64) -> Image.Image:
    a = np.zeros((h, w, 3), np.uint8)
    a[16:48, 20:70] = (255, 200, 40)
    cv2.circle(a, (70, 32), 14, (30, 60, 250), -1)
    return Image.fromarray(a)


def upload(tmp_path, im: Image.Image, comp) -> dict:
    """The page's raw value of an upload: a file in gradio's cache."""
    from pathlib import Path
    cache = Path(comp.GRADIO_CACHE) / "cnui-test"
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"{tmp_path.name}.png"
    im.save(path)
    return {"path": str(path), "orig_name": "pic.png", "meta": {"_type": "gradio.FileData"}}


# ---------------------------------------------------------------------------


def test_labels_order_and_defaults(env):
    app, ui, script = env
    c = comps_of(ui, "txt2img")
    for i in range(UNITS):
        p = f"cn{i}_"
        assert c[p + "enabled"].label == "Enable" and c[p + "enabled"].value is False
        assert c[p + "low_vram"].label == "Low VRAM" and c[p + "pixel_perfect"].label == "Pixel Perfect"
        assert c[p + "allow_preview"].label == "Allow Preview"
        assert c[p + "control_type"].label == "Control Type" and c[p + "control_type"].value == "All"
        assert [ch[0] for ch in c[p + "control_type"].choices][:4] == ["All", "Canny", "Depth", "NormalMap"]
        assert c[p + "module"].label == "Preprocessor" and c[p + "module"].value == "none"
        assert c[p + "trigger"].value == "\U0001f4a5"
        assert c[p + "model"].label == "Model" and c[p + "model"].value == "None"
        w = c[p + "weight"]
        assert (w.label, w.minimum, w.maximum, w.value) == ("Control Weight", 0, 2, 1)
        s, e = c[p + "guidance_start"], c[p + "guidance_end"]
        assert (s.label, s.minimum, s.maximum, s.value) == ("Starting Control Step", 0, 1, 0)
        assert (e.label, e.minimum, e.maximum, e.value) == ("Ending Control Step", 0, 1, 1)
        assert c[p + "processor_res"].label == "Preprocessor Resolution"
        assert [ch[0] for ch in c[p + "control_mode"].choices] == [
            "Balanced", "My prompt is more important", "ControlNet is more important"]
        assert [ch[0] for ch in c[p + "resize_mode"].choices] == ["Just Resize", "Crop and Resize", "Resize and Fill"]
        assert c[p + "resize_mode"].value == "Crop and Resize"
        assert c[p + "preview"].label == "Preprocessor Preview"
    titles = app.controlnets.titles()
    assert [ch[0] for ch in c["cn0_model"].choices] == ["None", *titles]
    tabs = [b.label for b in ui.blocks.blocks.values() if isinstance(b, gr.Tab)]
    assert "ControlNet Unit 0" in tabs and "ControlNet Unit 1" in tabs
    # img2img: the picture is img2img's unless "Upload independent control image"
    i = comps_of(ui, "img2img")
    assert i["cn0_independent"].label == "Upload independent control image"
    assert i["cn0_image_panel"].visible is False


def test_unit_values_give_the_dict_parse_unit_takes(env, tmp_path):
    app, ui, script = env
    c = comps_of(ui, "txt2img")
    holder = ui.txt2img.script_comps["ControlNet"]["unit_0"]
    raw = upload(tmp_path, picture(), c["cn0_image"])
    vals = {c["cn0_image"]: raw, c["cn0_enabled"]: True, c["cn0_module"]: "canny",
            c["cn0_model"]: app.controlnets.titles()[0], c["cn0_weight"]: 0.75, c["cn0_guidance_start"]: 0.1,
            c["cn0_guidance_end"]: 0.9, c["cn0_processor_res"]: 256, c["cn0_threshold_a"]: 50,
            c["cn0_threshold_b"]: 150, c["cn0_control_mode"]: "ControlNet is more important",
            c["cn0_resize_mode"]: "Just Resize", c["cn0_low_vram"]: True}
    out = call(ui.blocks, c["cn0_weight"], vals)
    u = out[holder]
    assert u["enabled"] is True and u["module"] == "canny" and u["model"] == app.controlnets.titles()[0]
    assert (u["weight"], u["guidance_start"], u["guidance_end"]) == (0.75, 0.1, 0.9)
    assert (u["processor_res"], u["threshold_a"], u["threshold_b"]) == (256, 50, 150)
    assert u["control_mode"] == "ControlNet is more important" and u["resize_mode"] == "Just Resize"
    assert u["low_vram"] is True and u["pixel_perfect"] is False and u["mask"] is None
    decoded = Image.open(io.BytesIO(base64.b64decode(u["image"])))
    assert decoded.format == "PNG" and np.array_equal(np.asarray(decoded.convert("RGB")), np.asarray(picture()))
    parsed = units.parse_unit(u)
    assert {k: parsed[k] for k in u} == u
    arg = next(a for a in script.args(False) if a.name == "unit_0")
    assert arg.coerce(u) == parsed
    assert units.is_active(parsed)
    # no picture: image None; a module without threshold sliders sends -1 for them
    out = call(ui.blocks, c["cn0_enabled"], vals, changes={c["cn0_image"]: None, c["cn0_module"]: "shuffle"})
    u = out[holder]
    assert u["image"] is None and u["module"] == "shuffle"
    assert (u["processor_res"], u["threshold_a"], u["threshold_b"]) == (256, -1, -1)
    assert units.parse_unit(u)["image"] is None
    # an alias label is sent as the API's module key
    u = call(ui.blocks, c["cn0_weight"], vals, changes={c["cn0_module"]: "depth_midas"})[holder]
    assert u["module"] == "depth"
    # something that is no upload of this server: a message, the unit kept
    out = call(ui.blocks, c["cn0_weight"], vals, changes={c["cn0_image"]: {"path": "/etc/passwd"}})
    assert "sdw-error" in html(out[c["cn0_status"]])


def test_default_unit_is_off(env):
    _app, ui, _ = env
    c = comps_of(ui, "txt2img")
    u = call(ui.blocks, c["cn0_weight"], {})[ui.txt2img.script_comps["ControlNet"]["unit_0"]]
    assert u["enabled"] is False and u["module"] == "none" and u["model"] == "None"
    assert not units.is_active(units.parse_unit(u))


def test_preprocessor_change_sets_the_sliders(env):
    _app, ui, _ = env
    c = comps_of(ui, "txt2img")
    holder = ui.txt2img.script_comps["ControlNet"]["unit_0"]
    res, a, b = c["cn0_processor_res"], c["cn0_threshold_a"], c["cn0_threshold_b"]
    out = call(ui.blocks, c["cn0_module"], {c["cn0_module"]: "canny"})
    assert (out[res]["label"], out[res]["minimum"], out[res]["maximum"], out[res]["value"], out[res]["visible"]) == (
        "Preprocessor Resolution", 64, 2048, 512, True)
    assert (out[a]["label"], out[a]["minimum"], out[a]["maximum"], out[a]["value"], out[a]["visible"]) == (
        "Canny Low Threshold", 1, 255, 100, True)
    assert (out[b]["label"], out[b]["value"]) == ("Canny High Threshold", 200)
    assert (out[holder]["threshold_a"], out[holder]["threshold_b"], out[holder]["processor_res"]) == (100, 200, 512)
    out = call(ui.blocks, c["cn0_module"], {c["cn0_module"]: "blur_gaussian"})
    assert (out[a]["label"], out[a]["minimum"], out[a]["maximum"], out[a]["value"]) == ("Sigma", 0.01, 64.0, 9.0)
    assert out[b]["visible"] is False
    out = call(ui.blocks, c["cn0_module"], {c["cn0_module"]: "tile_resample"})
    assert out[res]["visible"] is False and out[a]["label"] == "Down Sampling Rate" and out[a]["step"] == 0.01
    out = call(ui.blocks, c["cn0_module"], {c["cn0_module"]: "none"})
    assert [out[s]["visible"] for s in (res, a, b)] == [False, False, False]
    # Pixel Perfect hides the resolution slider
    out = call(ui.blocks, c["cn0_module"], {c["cn0_module"]: "canny", c["cn0_pixel_perfect"]: True})
    assert out[res]["visible"] is False and out[a]["visible"] is True
    out = call(ui.blocks, c["cn0_pixel_perfect"], {c["cn0_module"]: "canny", c["cn0_pixel_perfect"]: True})
    assert out[res]["visible"] is False and out[holder]["pixel_perfect"] is True
    # a model-free preprocessor hides the model; one that needs weights says which
    out = call(ui.blocks, c["cn0_module"], {c["cn0_module"]: "reference_only"})
    assert out[c["cn0_model"]]["visible"] is False and out[holder]["model"] == "None"
    out = call(ui.blocks, c["cn0_module"], {c["cn0_module"]: "depth_midas"})
    assert "dpt_hybrid-midas-501f0c75.pt" in html(out[c["cn0_status"]]) and out[c["cn0_model"]]["visible"] is True


def test_control_type_filters_the_lists(env):
    app, ui, _ = env
    c = comps_of(ui, "txt2img")
    out = call(ui.blocks, c["cn0_control_type"], {c["cn0_control_type"]: "Canny"})
    mods = out[c["cn0_module"]]
    assert mods["value"] == "canny" and mods["choices"] == ["none", "canny", "invert (from white bg & black line)"]
    model = out[c["cn0_model"]]
    canny = [t for t in app.controlnets.titles() if "canny" in t]
    assert model["choices"] == ["None", *canny] and model["value"] == canny[0]
    assert out[c["cn0_threshold_a"]]["label"] == "Canny Low Threshold"
    assert out[ui.txt2img.script_comps["ControlNet"]["unit_0"]]["model"] == canny[0]
    out = call(ui.blocks, c["cn0_control_type"], {c["cn0_control_type"]: "Depth"})
    assert out[c["cn0_module"]]["value"] == "depth_midas"
    assert all("depth" in m or m == "none" for m in out[c["cn0_module"]]["choices"])
    out = call(ui.blocks, c["cn0_control_type"], {c["cn0_control_type"]: "All"})
    assert out[c["cn0_module"]]["choices"] == preprocessors.ui_labels() and out[c["cn0_model"]]["value"] == "None"


def test_preview_of_canny_is_cv2_canny(env, tmp_path):
    _app, ui, _ = env
    c = comps_of(ui, "txt2img")
    im = picture(128, 96)
    raw = upload(tmp_path, im, c["cn0_image"])
    vals = {c["cn0_image"]: raw, c["cn0_module"]: "canny", c["cn0_processor_res"]: 96, c["cn0_threshold_a"]: 100,
            c["cn0_threshold_b"]: 200}
    out = call(ui.blocks, c["cn0_trigger"], vals, event="click")
    pic = out[c["cn0_preview"]]
    want = cv2.Canny(np.asarray(im), 100, 200)   # 96 is the short side already: no resizing, no padding cut
    assert pic.shape == (96, 128, 3) and np.array_equal(pic[:, :, 0], want) and want.any()
    assert out[c["cn0_allow_preview"]] is True and out[c["cn0_preview_group"]]["visible"] is True
    assert html(out[c["cn0_status"]]) == ""
    # errors are messages under the button, the preview left alone
    out = call(ui.blocks, c["cn0_trigger"], vals, event="click", changes={c["cn0_image"]: None})
    assert "sdw-error" in html(out[c["cn0_status"]]) and "Upload a picture" in html(out[c["cn0_status"]])
    assert isinstance(out[c["cn0_preview"]], type(gr.skip()))
    out = call(ui.blocks, c["cn0_trigger"], vals, event="click", changes={c["cn0_module"]: "depth_midas"})
    assert "sdw-error" in html(out[c["cn0_status"]]) and "Traceback" not in html(out[c["cn0_status"]])
    # a file that is no picture
    bad = tmp_path / "x"
    bad.mkdir()
    raw_bad = upload(bad, im, c["cn0_image"])
    from pathlib import Path
    Path(raw_bad["path"]).write_bytes(b"not a png")
    out = call(ui.blocks, c["cn0_trigger"], vals, event="click", changes={c["cn0_image"]: raw_bad})
    assert "not a picture" in html(out[c["cn0_status"]])


def test_refresh_lists_new_models(env, tmp_path):
    app, ui, _ = env
    from testing.tiny_controlnets import write_tiny_controlnet
    c = comps_of(ui, "txt2img")
    new = app.controlnets.dirs[0] / "control_v11f1p_sd15_depth.safetensors"
    write_tiny_controlnet(new, "sd1", seed=2)
    try:
        out = call(ui.blocks, c["cn0_refresh"], {c["cn0_control_type"]: "All", c["cn0_model"]: "None"}, event="click")
        assert any("control_v11f1p_sd15_depth" in t for t in out[c["cn0_model"]]["choices"])
        assert out[c["cn0_model"]]["value"] == "None"
    finally:
        new.unlink()
        app.controlnets.refresh()


def test_img2img_unit_without_its_own_picture_sends_none(env, tmp_path):
    _app, ui, _ = env
    c = comps_of(ui, "img2img")
    holder = ui.img2img.script_comps["ControlNet"]["unit_0"]
    raw = upload(tmp_path, picture(), c["cn0_image"])
    u = call(ui.blocks, c["cn0_enabled"], {c["cn0_image"]: raw, c["cn0_enabled"]: True})[holder]
    assert u["image"] is None and u["enabled"] is True
    out = call(ui.blocks, c["cn0_independent"], {c["cn0_image"]: raw, c["cn0_independent"]: True})
    assert out[holder]["image"] and out[c["cn0_image_panel"]]["visible"] is True
    assert out[c["cn0_trigger"]]["visible"] is True


def test_units_to_updates(env):
    app, ui, _ = env
    title = app.controlnets.titles()[0]
    name = units.model_name(title)
    ups = controlnet_ui.units_to_updates([{"module": "canny", "model": name, "weight": 0.5, "processor_res": 384,
                                           "threshold_a": 80, "threshold_b": 160, "guidance_end": 0.8,
                                           "control_mode": "My prompt is more important"},
                                          {"module": "depth", "enabled": False}], app=app)
    assert ups["cn0_enabled"] is True and ups["cn0_module"]["value"] == "canny" and ups["cn0_model"]["value"] == title
    assert ups["cn0_weight"] == 0.5 and ups["cn0_guidance_end"] == 0.8
    assert ups["cn0_control_mode"] == "My prompt is more important" and "cn0_control_type" not in ups
    assert (ups["cn0_threshold_a"]["label"], ups["cn0_threshold_a"]["value"]) == ("Canny Low Threshold", 80)
    assert ups["cn0_processor_res"]["value"] == 384
    assert ups["cn1_module"]["value"] == "depth_midas" and ups["cn1_enabled"] is False
    assert ups["cn1_threshold_a"]["visible"] is False
    c = comps_of(ui, "txt2img")
    mapped = controlnet_ui.updates_for_components(c, ups)
    assert mapped[c["cn0_weight"]] == 0.5 and len(mapped) == len(ups)
    # the module change the paste causes keeps the pasted slider values (not the module's defaults)
    holder = ui.txt2img.script_comps["ControlNet"]["unit_0"]
    out = call(ui.blocks, c["cn0_module"], {c["cn0_module"]: "canny", c["cn0_pasted"]: ups["cn0_pasted"]})
    assert (out[c["cn0_threshold_a"]]["value"], out[c["cn0_threshold_b"]]["value"]) == (80, 160)
    assert out[c["cn0_processor_res"]]["value"] == 384 and out[holder]["threshold_a"] == 80
    assert out[c["cn0_pasted"]] is None
    out = call(ui.blocks, c["cn0_module"], {c["cn0_module"]: "threshold", c["cn0_pasted"]: ups["cn0_pasted"]})
    assert out[c["cn0_threshold_a"]]["value"] == 127   # another module: its defaults


def test_paste_of_an_infotext_restores_the_units(env):
    """PNG Info's "Send to txt2img" with the extension's "ControlNet N" entries: the units' controls get the
    recipe (the unit after them is turned off); an infotext without ControlNet leaves the units alone."""
    from modules import infotext
    app, ui, script = env
    title = app.controlnets.titles()[0]
    unit = {"enabled": True, "module": "canny", "model": units.model_name(title), "weight": 0.65,
            "processor_res": 320, "threshold_a": 90, "threshold_b": 180, "guidance_start": 0.1,
            "guidance_end": 0.7, "control_mode": "ControlNet is more important", "resize_mode": "Just Resize",
            "pixel_perfect": False}
    second = {**unit, "module": "invert (from white bg & black line)", "weight": 0.3, "control_mode": "Balanced"}
    params = script.infotext({"unit_0": units.parse_unit(unit), "unit_1": units.parse_unit(second)})
    text = "a red circle\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 5, Size: 64x64, " + ", ".join(
        f"{k}: {infotext.quote(v)}" for k, v in params.items())
    c = comps_of(ui, "txt2img")
    out = call(ui.blocks, ui.pnginfo.to_txt2img, {ui.pnginfo.text: text}, event="click")
    assert out[ui.txt2img.c["prompt"]] == "a red circle" and out[ui.txt2img.c["steps"]] == 20
    assert out[c["cn0_enabled"]] is True and out[c["cn0_module"]]["value"] == "canny"
    assert out[c["cn0_model"]]["value"] == title
    assert (out[c["cn0_weight"]], out[c["cn0_guidance_start"]], out[c["cn0_guidance_end"]]) == (0.65, 0.1, 0.7)
    assert out[c["cn0_control_mode"]] == "ControlNet is more important"
    assert (out[c["cn0_processor_res"]]["value"], out[c["cn0_threshold_a"]]["value"],
            out[c["cn0_threshold_b"]]["value"]) == (320, 90, 180)
    assert out[c["cn1_enabled"]] is True and out[c["cn1_weight"]] == 0.3
    assert out[c["cn1_module"]]["value"] == "invert (from white bg & black line)"
    assert out[c["cn2_enabled"]] is False
    plain = call(ui.blocks, ui.pnginfo.to_txt2img, {ui.pnginfo.text: "x\nSteps: 9, Seed: 1, Size: 64x64"},
                 event="click")
    assert plain[ui.txt2img.c["steps"]] == 9 and not any(k in plain for k in c.values() if k is not None)


def test_strings_have_zh_cn(env):
    """Every English string of the section (and every preprocessor slider's label) has a zh_CN translation;
    module and model names are never UI strings."""
    import json
    from pathlib import Path

    from modules import localization
    _app, ui, _ = env
    strings = localization.collect_ui_strings(ui.blocks)
    mine = {localization.normalize(s) for s in (
        "Enable", "Low VRAM", "Pixel Perfect", "Allow Preview", "Control Type", "Preprocessor", "Model",
        "Control Weight", "Starting Control Step", "Ending Control Step", "Control Mode", "Resize Mode",
        "Preprocessor Resolution", "Threshold A", "Threshold B", "Preprocessor Preview",
        "Upload independent control image", "ControlNet Unit 0", controlnet_ui.INVERT_HINT,
        *controlnet_ui.CONTROL_TYPES,
        *units.CONTROL_MODES, *units.RESIZE_MODES)}
    assert mine <= strings
    names = {localization.normalize(n) for n in [*preprocessors.ui_labels()[1:], *_app.controlnets.titles()]}
    assert not names & strings   # module and model names stay untranslated
    zh = json.loads((Path(__file__).parents[1] / "localizations" / "zh_CN.json").read_text(encoding="utf-8"))
    sliders = {s.name for p in preprocessors.PREPROCESSORS.values() for s in p.ui_sliders() if s is not None}
    missing = localization.missing_keys(zh, sorted(mine | sliders))
    assert not missing, missing


def test_through_gradio_processing(env, tmp_path):
    """The handlers as the server runs them (gradio's pre/postprocessing): the unit reaches the JSON holder,
    the preprocessor's sliders and the preview come back as the page's updates."""
    import asyncio

    from gradio.state_holder import SessionState
    _app, ui, _ = env
    c = comps_of(ui, "txt2img")
    holder = ui.txt2img.script_comps["ControlNet"]["unit_0"]
    raw = upload(tmp_path, picture(), c["cn0_image"])
    vals = {c["cn0_image"]: raw, c["cn0_enabled"]: True, c["cn0_module"]: "canny", c["cn0_processor_res"]: 64,
            c["cn0_threshold_a"]: 100, c["cn0_threshold_b"]: 200}

    def process(comp, event="change"):
        f = handler(ui.blocks, comp, event)
        args = [vals.get(x, getattr(x, "value", None)) for x in f.inputs]
        out = asyncio.run(ui.blocks.process_api(block_fn=f, inputs=args, state=SessionState(ui.blocks)))
        return dict(zip(f.outputs, out["data"]))

    out = process(c["cn0_module"])
    assert out[c["cn0_threshold_a"]]["label"] == "Canny Low Threshold" and out[c["cn0_threshold_a"]]["visible"]
    unit = out[holder].model_dump() if hasattr(out[holder], "model_dump") else out[holder]
    unit = getattr(unit, "root", unit)
    assert unit["module"] == "canny" and unit["image"]
    assert units.parse_unit(unit)["threshold_a"] == 100
    out = process(c["cn0_trigger"], "click")
    shown = out[c["cn0_preview"]]
    with Image.open(shown["path"]) as im:
        got = np.asarray(im.convert("L"))
    assert got.shape == (64, 96) and got.any()


def test_generate_with_a_unit_made_by_the_controls(env, tmp_path):
    """The unit the controls write is what the txt2img job takes: the job finishes and its infotext has the
    extension's "ControlNet 0" entry."""
    from modules.ui import scripts_ui, txt2img
    app, ui, script = env
    c = comps_of(ui, "txt2img")
    t2i = ui.txt2img
    holder = t2i.script_comps["ControlNet"]["unit_0"]
    title = next(t for t in app.controlnets.titles() if "canny" in t)
    raw = upload(tmp_path, picture(64, 64), c["cn0_image"])
    vals = {c["cn0_image"]: raw, c["cn0_enabled"]: True, c["cn0_module"]: "canny", c["cn0_model"]: title,
            c["cn0_processor_res"]: 64, c["cn0_threshold_a"]: 100, c["cn0_threshold_b"]: 200}
    unit = call(ui.blocks, c["cn0_enabled"], vals)[holder]
    arg = next(a for a in script.args(False) if a.name == "unit_0")
    v = {k: getattr(comp, "value", None) for k, comp in t2i.fields.items()}
    v.update(prompt="a red cat", width=64, height=64, steps=2, seed=3)
    v[scripts_ui.key(script, arg)] = unit
    ups = list(txt2img.generate(app, v, app.selected_checkpoint(), "Automatic"))
    state = ups[-1].get("result") or {}
    assert state.get("infotexts"), ups[-1].get("info")
    text = state["infotexts"][0]
    assert "ControlNet 0: " in text and "Module: canny" in text and title.split(" [")[0] in text
