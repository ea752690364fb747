"""The ControlNet section of txt2img and img2img, in sd-webui-controlnet's layout and with its English labels
(so that community localization files apply): one tab per unit ("ControlNet Unit 0", ...), each with the
control image and the preprocessor's preview, "Enable" / "Low VRAM" / "Pixel Perfect" / "Allow Preview",
"Control Type" (which filters the preprocessor and model lists), "Preprocessor" with the run-preprocessor
button, "Model" with its refresh button, the weight and step sliders, the preprocessor's own sliders (their
labels and ranges change with the preprocessor), "Control Mode" and "Resize Mode".

The controls are UI only: every change writes the unit's dict (modules.controlnet.units' fields, the image as
base64 PNG) into the unit's hidden JSON argument of the ControlNet script, which is what a job receives.

The event functions are plain functions of values (tests call them); the Gradio handlers only read the page's
raw values (uploads with preprocess=False, so a file that is no picture gets a message, not an exception).
"""
from __future__ import annotations

import base64
import io
import logging
import threading
from collections import OrderedDict
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image

from modules.controlnet import preprocessors, units
from modules.ui import common

log = logging.getLogger(__name__)

TRIGGER = "\U0001f4a5"   # 💥 the extension's "Run preprocessor" button
NONE_MODEL = "None"
INVERT_HINT = "Set the preprocessor to [invert] If your image has white background and black lines."

# the extension's "Control Type" filters: name -> the preprocessor picked with it (its processor.py)
CONTROL_TYPES: dict[str, str] = {
    "All": "none",
    "Canny": "canny",
    "Depth": "depth_midas",
    "NormalMap": "normal_bae",
    "OpenPose": "openpose_full",
    "MLSD": "mlsd",
    "Lineart": "lineart_standard (from white bg & black line)",
    "SoftEdge": "softedge_pidinet",
    "Scribble/Sketch": "scribble_pidinet",
    "Segmentation": "seg_ofade20k",
    "Shuffle": "shuffle",
    "Tile/Blur": "tile_resample",
    "Inpaint": "inpaint_only",
    "InstructP2P": "none",
    "Reference": "reference_only",
    "Recolor": "recolor_luminance",
    "Revision": "revision_clipvision",
    "T2I-Adapter": "none",
    "IP-Adapter": "ip-adapter_clip_sd15",
}
_TYPE_ALIASES = {
    "instructp2p": ["ip2p"], "segmentation": ["seg"], "normalmap": ["normal"],
    "t2i-adapter": ["t2i_adapter", "t2iadapter", "t2ia"], "ip-adapter": ["ip_adapter", "ipadapter"],
    "scribble/sketch": ["scribble", "sketch"], "tile/blur": ["tile", "blur"], "openpose": ["openpose", "densepose"],
}
_WITH_INVERT = ("canny", "lineart", "scribble/sketch", "mlsd")

# the unit's controls in the order the handlers take them
FIELDS = ("image", "independent", "enabled", "low_vram", "pixel_perfect", "control_type", "module", "model",
          "weight", "guidance_start", "guidance_end", "processor_res", "threshold_a", "threshold_b",
          "control_mode", "resize_mode")
SLIDER_FIELDS = ("processor_res", "threshold_a", "threshold_b")


# ---------------------------------------------------------------------------
# plain functions (tests call them)


def model_titles(app) -> list[str]:
    """"None" and the installed models' titles ("name [hash]"), as the extension's Model dropdown."""
    try:
        return [NONE_MODEL, *app.controlnets.titles()]
    except Exception:  # noqa: BLE001 - an unreadable model folder must not stop the page
        log.exception("listing ControlNet models failed")
        return [NONE_MODEL]


def _matches(name: str, pattern: str) -> bool:
    low = name.lower()
    return pattern in low or any(a in low for a in _TYPE_ALIASES.get(pattern, []))


def select_control_type(control_type: str, titles: list[str]) -> tuple[list[str], list[str], str, str]:
    """(preprocessor labels, model titles, default preprocessor, default model) of a "Control Type", as the
    extension's select_control_type: the names containing the type's name (or an alias), "none" and "None"
    kept, invert added to the line types; the model is the first match, a v1.1 ("11") one preferred."""
    labels = preprocessors.ui_labels()
    titles = [t for t in titles if t != NONE_MODEL]
    pattern = str(control_type or "All").lower()
    if pattern == "all" or control_type not in CONTROL_TYPES:
        return labels, [NONE_MODEL, *titles], "none", NONE_MODEL
    mods = [x for x in labels if x.lower() == "none" or _matches(x, pattern)]
    if pattern in _WITH_INVERT:
        mods += [x for x in labels if "invert" in x.lower() and x not in mods]
    models = [NONE_MODEL, *[t for t in titles if _matches(t, pattern)]]
    default = CONTROL_TYPES[control_type]
    if default not in mods:
        default = mods[0]
    model = NONE_MODEL
    if len(models) > 1:
        model = next((m for m in models[1:] if "11" in m.split("[")[0]), models[1])
    return mods, models, default, model


def slider_specs(module: str | None) -> list[preprocessors.Slider | None]:
    """The module's (resolution, threshold A, threshold B) sliders, None where the extension hides one."""
    pre = preprocessors.get(module)
    if pre is None:
        return [preprocessors.RES_SLIDER, None, None]
    return pre.ui_sliders()


def slider_updates(module: str | None, pixel_perfect: bool, pasted: dict | None = None) -> list[dict]:
    """Updates of the three preprocessor sliders: the module's label, range, step and default (visible), or
    hidden (the unit then sends -1, the API's "the module's default"); the resolution is hidden with Pixel
    Perfect. `pasted` (units_to_updates' "pasted" of the same module) gives values instead of the defaults."""
    out = []
    if not isinstance(pasted, dict) or pasted.get("module") != preprocessors.basename(module):
        pasted = {}
    for i, s in enumerate(slider_specs(module)):
        if s is None:
            out.append(gr.update(visible=False, interactive=False))
            continue
        visible = not (i == 0 and pixel_perfect)
        value = _num(pasted.get(SLIDER_FIELDS[i]), -1)
        value = value if s.min <= value <= s.max else s.value
        out.append(gr.update(label=s.name, minimum=s.min, maximum=s.max, value=value, step=s.ui_step,
                             visible=visible, interactive=visible))
    return out


def module_status(app, module: str | None) -> str:
    """An error box saying why a preprocessor cannot run here (missing weights), else ""."""
    pre = preprocessors.get(module)
    if pre is None:
        return common.error_html(f"Unknown preprocessor: {module}")
    ok, why = pre.available(_annotator_dir(app))
    return "" if ok else common.error_html(f"{pre.label}: {why}")


def _annotator_dir(app):
    lib = getattr(app, "controlnets", None)
    if lib is not None:
        return lib.annotator_dir
    return preprocessors.annotator_dir(app.paths.models_dir)


def is_model_free(module: str | None) -> bool:
    pre = preprocessors.get(module)
    return bool(pre is not None and pre.model_free)


_ENCODED: OrderedDict = OrderedDict()   # (path, mtime, size) -> base64 PNG: sliders re-send the same upload
_ENCODED_LOCK = threading.Lock()


def encode_png(im: Image.Image) -> str:
    buf = io.BytesIO()
    if im.mode not in ("RGB", "RGBA", "L"):
        im = im.convert("RGBA" if "A" in im.getbands() or "transparency" in im.info else "RGB")
    im.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def open_picture(image) -> Image.Image:
    """A PIL image of an upload (a PIL image, an array or a file path); ValueError with a readable message."""
    if isinstance(image, Image.Image):
        return image
    if isinstance(image, np.ndarray):
        return Image.fromarray(image.astype(np.uint8))
    try:
        with Image.open(image) as im:
            im.load()
            return im.copy()
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise ValueError(f"the upload is not a picture that can be read ({type(e).__name__})") from None


def image_base64(image) -> str | None:
    """The unit's "image": base64 PNG of the upload (None without one); a file path is encoded once."""
    if image is None:
        return None
    if not isinstance(image, (str, bytes)) and not hasattr(image, "__fspath__"):
        return encode_png(open_picture(image))
    import os
    try:
        st = os.stat(image)
        key = (str(image), st.st_mtime_ns, st.st_size)
    except OSError:
        raise ValueError("The upload could not be read.") from None
    with _ENCODED_LOCK:
        if key in _ENCODED:
            _ENCODED.move_to_end(key)
            return _ENCODED[key]
    text = encode_png(open_picture(image))
    with _ENCODED_LOCK:
        _ENCODED[key] = text
        while len(_ENCODED) > 16:
            _ENCODED.popitem(last=False)
    return text


def _num(value, default: float) -> float:
    try:
        return float(value) if value is not None else default
    except (TypeError, ValueError):
        return default


def unit_dict(values: dict) -> dict:
    """The unit (units.parse_unit's fields) of a unit's control values (FIELDS names; "image" a PIL image, an
    array, a file path or None; "independent" whether img2img's unit has its own picture). A slider the
    module hides sends -1 (its default), as the extension's UI does."""
    module = preprocessors.basename(values.get("module") or "none")
    specs = slider_specs(module)
    image = values.get("image")
    if values.get("independent") is False:   # img2img without its own picture: the img2img image is used
        image = None
    model = values.get("model") or NONE_MODEL
    if is_model_free(module):
        model = NONE_MODEL
    u = {
        "enabled": bool(values.get("enabled")),
        "module": module,
        "model": str(model),
        "weight": _num(values.get("weight"), 1.0),
        "image": image_base64(image),
        "mask": None,
        "resize_mode": values.get("resize_mode") or units.RESIZE_MODES[1],
        "low_vram": bool(values.get("low_vram")),
        "processor_res": int(_num(values.get("processor_res"), -1)) if specs[0] is not None else -1,
        "threshold_a": _num(values.get("threshold_a"), -1) if specs[1] is not None else -1.0,
        "threshold_b": _num(values.get("threshold_b"), -1) if specs[2] is not None else -1.0,
        "guidance_start": _num(values.get("guidance_start"), 0.0),
        "guidance_end": _num(values.get("guidance_end"), 1.0),
        "pixel_perfect": bool(values.get("pixel_perfect")),
        "control_mode": values.get("control_mode") or units.CONTROL_MODES[0],
    }
    if u["guidance_start"] > u["guidance_end"]:   # parse_unit refuses it; the extension's UI lets it be
        u["guidance_start"] = u["guidance_end"]
    return u


def run_preview(app, image, module: str, res=None, thr_a=None, thr_b=None, pixel_perfect: bool = False,
                resize_mode: str | None = None, width: int = 512, height: int = 512) -> np.ndarray:
    """The "Run preprocessor" button: the module's map of the unit's picture, as the picture the preview
    shows (RGB uint8). ValueError / PreprocessorUnavailable with a readable message."""
    if image is None:
        raise ValueError("Upload a picture into the ControlNet unit first.")
    pre = preprocessors.get(module)
    if pre is None:
        raise ValueError(f"unknown preprocessor {module!r}")
    im = open_picture(image)
    has_alpha = "A" in im.getbands() or "transparency" in im.info
    arr = np.asarray(im.convert("RGBA" if pre.accepts_mask and has_alpha else "RGB"), dtype=np.uint8)
    if pixel_perfect:
        from modules.controlnet.apply import pixel_perfect_resolution
        res = pixel_perfect_resolution(arr, int(_num(height, 512)), int(_num(width, 512)),
                                       resize_mode or units.RESIZE_MODES[1])
    specs = slider_specs(pre.name)
    res = int(_num(res, -1)) if specs[0] is not None or pixel_perfect else None
    thr_a = _num(thr_a, -1) if specs[1] is not None else None
    thr_b = _num(thr_b, -1) if specs[2] is not None else None
    detected = pre(arr, res, thr_a, thr_b, annotator_dir=_annotator_dir(app))
    return preprocessors.preview(detected)


def message(html: str) -> dict:
    """The unit's message box: shown only with something in it (an empty one would leave a gap)."""
    return gr.update(value=html, visible=bool(html))


def preview_result(app, image, module, res, thr_a, thr_b, pixel_perfect, resize_mode, width, height) -> tuple:
    """(preview picture update, Allow Preview, preview group update, message HTML) of the button; an error
    is a message under it (the preview keeps what it shows), never a traceback."""
    try:
        pic = run_preview(app, image, module, res, thr_a, thr_b, pixel_perfect, resize_mode, width, height)
    except (ValueError, RuntimeError, OSError) as e:
        return gr.skip(), gr.skip(), gr.skip(), message(common.error_html(f"Error: {e}"))
    except Exception as e:  # noqa: BLE001 - a message, never a traceback on the page
        log.exception("ControlNet preprocessor preview failed")
        return gr.skip(), gr.skip(), gr.skip(), message(common.error_html(f"Error: {type(e).__name__}: {e}"))
    return pic, True, gr.update(visible=True), message("")


def model_updates(app, control_type: str, current: str | None, refresh: bool = False) -> dict:
    """The Model dropdown after a refresh: the models of the control type, the current one kept if listed."""
    if refresh:
        try:
            app.controlnets.refresh()
        except Exception:  # noqa: BLE001
            log.exception("refreshing ControlNet models failed")
    _, models, _, _ = select_control_type(control_type, model_titles(app))
    return gr.update(choices=models, value=current if current in models else NONE_MODEL)


def _model_title(app, name) -> str:
    name = str(name or NONE_MODEL)
    if name.lower() == "none" or app is None:
        return NONE_MODEL if name.lower() == "none" else name
    try:
        return app.controlnets.find(name).title
    except Exception:  # noqa: BLE001 - a pasted model that is not installed: shown as written
        return name


def units_to_updates(unit_list: list[dict], app=None) -> dict:
    """Control name (f"cn{i}_{field}") -> value or update for pasting units (units.parse_unit's dicts, e.g.
    an infotext's "ControlNet N" entries) back into the controls. The pictures and the Control Type are left
    as they are (the lists offer every preprocessor and model); "cn{i}_pasted" holds the pasted slider values
    for the preprocessor change the paste causes (which would set the module's defaults otherwise)."""
    out: dict[str, Any] = {}
    titles = model_titles(app) if app is not None else None
    for i, raw in enumerate(unit_list):
        u = units.parse_unit(raw)
        pre = preprocessors.get(u["module"])
        label = pre.label if pre is not None else str(u["module"])
        model = _model_title(app, u["model"])
        p = f"cn{i}_"
        out[p + "enabled"] = u["enabled"]
        out[p + "low_vram"] = u["low_vram"]
        out[p + "pixel_perfect"] = u["pixel_perfect"]
        out[p + "module"] = gr.update(choices=preprocessors.ui_labels(), value=label)
        if titles is not None:
            out[p + "model"] = gr.update(choices=titles if model in titles else [*titles, model], value=model,
                                         visible=not is_model_free(u["module"]))
        else:
            out[p + "model"] = gr.update(value=model)
        out[p + "weight"] = u["weight"]
        out[p + "guidance_start"] = u["guidance_start"]
        out[p + "guidance_end"] = u["guidance_end"]
        out[p + "control_mode"] = u["control_mode"]
        out[p + "resize_mode"] = u["resize_mode"]
        specs = slider_specs(u["module"])
        for name, spec, upd, value in zip(SLIDER_FIELDS, specs, slider_updates(u["module"], u["pixel_perfect"]),
                                          (u["processor_res"], u["threshold_a"], u["threshold_b"])):
            if spec is not None and value is not None and value >= 0:
                upd["value"] = value
            out[p + name] = upd
        out[p + "pasted"] = {"module": preprocessors.basename(u["module"]), "processor_res": u["processor_res"],
                             "threshold_a": u["threshold_a"], "threshold_b": u["threshold_b"]}
    return out


def updates_for_components(comps: dict, updates: dict) -> dict:
    """units_to_updates() keyed by the components of build() (names it does not have are dropped)."""
    return {comps[k]: v for k, v in updates.items() if k in comps}


# ---------------------------------------------------------------------------
# the section


def _ids(tab_name: str, i: int) -> str:
    """The extension's element-id prefix of a unit: txt2img_controlnet_ControlNet-0_controlnet_..."""
    return f"{tab_name}_controlnet_ControlNet-{i}_controlnet"


def build(app, tab, is_img2img: bool, n_units: int) -> dict:
    """The units' controls (inside the script's accordion): name f"cn{i}_{field}" -> component."""
    comps: dict[str, Any] = {}
    titles = model_titles(app)
    labels = preprocessors.ui_labels()
    name = getattr(tab, "name", "img2img" if is_img2img else "txt2img")
    with gr.Tabs(elem_id=f"{name}_controlnet_tabs", elem_classes=["cnet-unit-tabs"]):
        for i in range(max(1, int(n_units))):
            with gr.Tab(f"ControlNet Unit {i}", id=f"cn{i}", elem_id=f"{name}_controlnet_ControlNet-{i}_tab"):
                comps.update(_build_unit(i, name, is_img2img, titles, labels))
    return comps


def _build_unit(i: int, tab_name: str, is_img2img: bool, titles: list[str], labels: list[str]) -> dict:
    e = _ids(tab_name, i)
    c: dict[str, Any] = {}
    p = f"cn{i}_"
    with gr.Group(visible=not is_img2img, elem_classes=["cnet-image-upload-panel"]) as c[p + "image_panel"]:
        with gr.Row(equal_height=True, elem_classes=["cnet-image-row"]):
            c[p + "image"] = gr.Image(label="Image", type="pil", image_mode=None, format="png",
                                      sources=["upload", "clipboard"], height=260, elem_classes=["cnet-image"],
                                      elem_id=f"{tab_name}_controlnet_ControlNet-{i}_input_image", min_width=160)
            with gr.Column(visible=False, min_width=160,
                           elem_classes=["cnet-generated-image-group"]) as c[p + "preview_group"]:
                c[p + "preview"] = gr.Image(label="Preprocessor Preview", type="numpy", format="png", height=260,
                                            interactive=False, elem_classes=["cnet-image"],
                                            elem_id=f"{tab_name}_controlnet_ControlNet-{i}_generated_image")
        c[p + "hint"] = gr.HTML(f"<p>{common.esc(INVERT_HINT)}</p>", elem_classes=["controlnet_invert_warning"],
                                js_on_load=None)
    with gr.Row(elem_classes=["controlnet_main_options"]):
        c[p + "enabled"] = gr.Checkbox(label="Enable", value=False, elem_id=f"{e}_enable_checkbox",
                                       elem_classes=["cnet-unit-enabled"], min_width=90)
        c[p + "low_vram"] = gr.Checkbox(label="Low VRAM", value=False, elem_id=f"{e}_low_vram_checkbox",
                                        min_width=90)
        c[p + "pixel_perfect"] = gr.Checkbox(label="Pixel Perfect", value=False,
                                             elem_id=f"{e}_pixel_perfect_checkbox", min_width=90)
        c[p + "allow_preview"] = gr.Checkbox(label="Allow Preview", value=False, visible=not is_img2img,
                                             elem_id=f"{e}_preprocessor_preview_checkbox", min_width=90)
    if is_img2img:
        c[p + "independent"] = gr.Checkbox(label="Upload independent control image", value=False,
                                           elem_id=f"{e}_same_img2img_checkbox",
                                           elem_classes=["cnet-unit-same_img2img"])
    c[p + "control_type"] = gr.Radio(list(CONTROL_TYPES), label="Control Type", value="All",
                                     elem_id=f"{e}_type_filter_radio",
                                     elem_classes=["controlnet_control_type", "controlnet_control_type_filter_group"])
    with gr.Row(equal_height=False, elem_classes=["controlnet_preprocessor_model", "controlnet_row",
                                                  "sdw-tool-row"]):
        # the choices are module and file names: never translated (the labels are)
        c[p + "module"] = gr.Dropdown(labels, label="Preprocessor", value="none", elem_id=f"{e}_preprocessor_dropdown",
                                      elem_classes=["no-translate"], scale=3, min_width=130)
        c[p + "trigger"] = gr.Button(TRIGGER, elem_id=f"{e}_trigger_preprocessor", visible=not is_img2img,
                                     elem_classes=["sdw-tool", "cnet-run-preprocessor"], variant="secondary",
                                     size="sm", scale=0, min_width=40)
        c[p + "model"] = gr.Dropdown(titles, label="Model", value=NONE_MODEL, elem_id=f"{e}_model_dropdown",
                                     elem_classes=["no-translate"], scale=4, min_width=130)
        c[p + "refresh"] = common.tool_button(common.REFRESH, f"{e}_refresh_models")
    c[p + "status"] = gr.HTML("", visible=False, elem_id=f"{e}_status", js_on_load=None, elem_classes=["cnet-status"])
    c[p + "pasted"] = gr.State(None)   # slider values of a paste, for the module change it causes
    # the weight on its own line and the steps side by side: the settings column is narrow for three sliders
    c[p + "weight"] = gr.Slider(0.0, 2.0, value=1.0, step=0.05, label="Control Weight",
                                elem_id=f"{e}_control_weight_slider", elem_classes=["controlnet_control_weight_slider"])
    with gr.Row(elem_classes=["controlnet_weight_steps", "controlnet_row"]):
        c[p + "guidance_start"] = gr.Slider(0.0, 1.0, value=0.0, step=0.01, label="Starting Control Step",
                                            elem_id=f"{e}_start_control_step_slider", min_width=160,
                                            elem_classes=["controlnet_start_control_step_slider"])
        c[p + "guidance_end"] = gr.Slider(0.0, 1.0, value=1.0, step=0.01, label="Ending Control Step",
                                          elem_id=f"{e}_ending_control_step_slider", min_width=160,
                                          elem_classes=["controlnet_ending_control_step_slider"])
    with gr.Column(elem_classes=["controlnet_advanced"]):
        # hidden until a preprocessor with sliders is picked ("none" has none)
        c[p + "processor_res"] = gr.Slider(64, 2048, value=512, step=1, label=preprocessors.RESOLUTION,
                                           visible=False, elem_id=f"{e}_preprocessor_resolution_slider")
        c[p + "threshold_a"] = gr.Slider(64, 1024, value=64, step=1, label="Threshold A", visible=False,
                                         elem_id=f"{e}_threshold_A_slider")
        c[p + "threshold_b"] = gr.Slider(64, 1024, value=64, step=1, label="Threshold B", visible=False,
                                         elem_id=f"{e}_threshold_B_slider")
    c[p + "control_mode"] = gr.Radio(list(units.CONTROL_MODES), value=units.CONTROL_MODES[0], label="Control Mode",
                                     elem_id=f"{e}_control_mode_radio", elem_classes=["controlnet_control_mode_radio"])
    c[p + "resize_mode"] = gr.Radio(list(units.RESIZE_MODES), value=units.RESIZE_MODES[1], label="Resize Mode",
                                    visible=not is_img2img, elem_id=f"{e}_resize_mode_radio",
                                    elem_classes=["controlnet_resize_mode_radio"])
    return c


# ---------------------------------------------------------------------------
# events


def _image_value(component, payload):
    """A raw (preprocess=False) image value -> a file path in gradio's cache, or None; ValueError when the
    page sent something that is not an upload of this server."""
    if not payload:
        return None
    from modules.ui import pnginfo
    path = pnginfo.uploaded_path(component, payload)
    if path is None:
        raise ValueError("The upload could not be read.")
    return path


def wire(app, tab, comps: dict, unit_json_components: list, is_img2img: bool) -> None:
    """Every unit's events: its controls -> its hidden JSON, the preprocessor -> its sliders, Control Type ->
    the lists, the run button -> the preview, refresh -> the models."""
    size = [tab.c[k] for k in ("width", "height") if k in getattr(tab, "c", {})]
    for i, holder in enumerate(unit_json_components):
        if f"cn{i}_enabled" in comps:
            _UnitEvents(app, comps, f"cn{i}_", holder, size).wire()


class _UnitEvents:
    """The handlers of one unit (the page sends raw values: preprocess=False)."""
    QUIET = {"show_progress": "hidden", "api_visibility": "private", "queue": False, "preprocess": False}

    def __init__(self, app, comps: dict, prefix: str, holder, size: list):
        self.app, self.holder, self.size = app, holder, size
        self.c = {k[len(prefix):]: v for k, v in comps.items() if k.startswith(prefix)}
        self.names = [f for f in FIELDS if f in self.c]
        self.inputs = [self.c[f] for f in self.names]
        self.sliders = [self.c[f] for f in SLIDER_FIELDS]

    def wire(self) -> None:
        self.wire_values()
        self.wire_module()
        self.wire_preview()
        if "independent" in self.c:
            self.wire_independent()

    def values_of(self, raw) -> dict:
        v = dict(zip(self.names, raw))
        v["image"] = _image_value(self.c["image"], v.get("image"))
        return v

    def write(self, *raw):
        try:
            v = self.values_of(raw)
            return unit_dict(v), message(module_status(self.app, v.get("module")))
        except ValueError as e:
            return gr.skip(), message(common.error_html(f"Error: {e}"))

    def wire_values(self) -> None:
        own = ("module", "control_type", "pixel_perfect", "independent")   # their handlers write the unit too
        for f in self.names:
            if f not in own:
                self.c[f].change(self.write, inputs=self.inputs, outputs=[self.holder, self.c["status"]], **self.QUIET)

    def with_module(self, raw: tuple, module: str, control_model=None, pasted=None) -> tuple:
        """The slider updates, the model's and refresh's visibility, the status and the unit for `module`."""
        v = self.values_of(raw)
        v["module"] = module
        ups = slider_updates(module, bool(v.get("pixel_perfect")), pasted)
        for f, upd in zip(SLIDER_FIELDS, ups):
            v[f] = upd.get("value")
        if control_model is not None:
            v["model"] = control_model
        free = is_model_free(module)
        model_up = gr.update(visible=False, value=NONE_MODEL) if free else gr.update(visible=True)
        status = message(module_status(self.app, module))
        return (*ups, model_up, gr.update(visible=not free), status, unit_dict(v))

    def on_module(self, *raw):
        *raw, pasted = raw
        try:
            return (*self.with_module(raw, dict(zip(self.names, raw)).get("module") or "none", pasted=pasted), None)
        except ValueError as e:
            return (*[gr.skip()] * 5, message(common.error_html(f"Error: {e}")), gr.skip(), None)

    def on_pixel_perfect(self, *raw):
        v = dict(zip(self.names, raw))
        try:
            unit = unit_dict(self.values_of(raw))
        except ValueError as e:
            return gr.skip(), gr.skip(), message(common.error_html(f"Error: {e}"))
        shown = slider_specs(v.get("module"))[0] is not None and not v.get("pixel_perfect")
        return gr.update(visible=shown, interactive=shown), unit, gr.skip()

    def on_control_type(self, *raw):
        v = dict(zip(self.names, raw))
        mods, models, module, default_model = select_control_type(v.get("control_type"), model_titles(self.app))
        try:
            ups = self.with_module(raw, module, control_model=default_model)
        except ValueError as e:
            return (*[gr.skip()] * 7, message(common.error_html(f"Error: {e}")), gr.skip())
        unit = ups[-1]
        model_up = gr.update(choices=models, value=unit["model"], visible=ups[3].get("visible", True))
        return (gr.update(choices=mods, value=module), *ups[:3], model_up, *ups[4:])

    def on_refresh(self, control_type, current):
        return model_updates(self.app, control_type, current, refresh=True)

    def wire_module(self) -> None:
        c = self.c
        outs = [*self.sliders, c["model"], c["refresh"], c["status"], self.holder]
        c["module"].change(self.on_module, inputs=[*self.inputs, c["pasted"]], outputs=[*outs, c["pasted"]],
                           **self.QUIET)
        c["pixel_perfect"].change(self.on_pixel_perfect, inputs=self.inputs,
                                  outputs=[self.sliders[0], self.holder, c["status"]], **self.QUIET)
        c["control_type"].change(self.on_control_type, inputs=self.inputs, outputs=[c["module"], *outs],
                                 **self.QUIET)
        c["refresh"].click(self.on_refresh, inputs=[c["control_type"], c["model"]], outputs=[c["model"]],
                           show_progress="hidden", api_visibility="private")

    @staticmethod
    def on_allow(on):
        return (gr.skip() if on else None), gr.update(visible=bool(on))

    def on_trigger(self, image, module, res, thr_a, thr_b, pp, rm, *wh):
        try:
            path = _image_value(self.c["image"], image)
        except ValueError as e:
            return gr.skip(), gr.skip(), gr.skip(), message(common.error_html(f"Error: {e}"))
        w, h = (list(wh) + [512, 512])[:2]
        return preview_result(self.app, path, module, res, thr_a, thr_b, pp, rm, w, h)

    def wire_preview(self) -> None:
        c = self.c
        c["allow_preview"].change(self.on_allow, inputs=[c["allow_preview"]],
                                  outputs=[c["preview"], c["preview_group"]],
                                  show_progress="hidden", api_visibility="private", queue=False)
        inputs = [c["image"], c["module"], *self.sliders, c["pixel_perfect"], c["resize_mode"], *self.size]
        c["trigger"].click(self.on_trigger, inputs=inputs,
                           outputs=[c["preview"], c["allow_preview"], c["preview_group"], c["status"]],
                           preprocess=False, show_progress="minimal", api_visibility="private",
                           concurrency_limit=1, concurrency_id="controlnet_preview")

    def on_independent(self, on, *raw):
        """img2img: the unit's own picture ("Upload independent control image"), or the img2img one."""
        on = bool(on)
        try:
            unit = unit_dict(self.values_of(raw))
        except ValueError:
            unit = gr.skip()
        return (gr.update(visible=on), gr.update(visible=on), gr.update(visible=on),
                gr.update(visible=on, value=False), unit)

    def wire_independent(self) -> None:
        c = self.c
        c["independent"].change(self.on_independent, inputs=[c["independent"], *self.inputs],
                                outputs=[c["image_panel"], c["trigger"], c["resize_mode"], c["allow_preview"],
                                         self.holder], **self.QUIET)
