"""The Extras tab (A1111's layout): enlarge one picture, a batch of uploaded pictures or a folder's pictures by
one or two upscalers (modules/postprocessing.py does the work and saves into outputs/extras-images), and the
"Send to extras" buttons of the txt2img / img2img results and of PNG Info.

The event functions are plain functions of the app and the tab's values (tests call them); the Gradio
handlers only turn the page's raw values (uploads are read with preprocess=False, so that a file that is no
picture gets a readable message) into those values.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import gradio as gr
from PIL import Image

from modules import postprocessing
from modules.postprocessing import ExtrasError, ExtrasParams
from modules.ui import common

log = logging.getLogger(__name__)

SINGLE, BATCH, DIRECTORY = "single_image", "batch_process", "batch_from_directory"
MODES = (SINGLE, BATCH, DIRECTORY)
PARAM_NAMES = ("upscaling_resize", "upscaling_resize_w", "upscaling_resize_h", "upscaling_crop", "upscaler_1",
               "upscaler_2", "extras_upscaler_2_visibility")


# ---------------------------------------------------------------------------
# plain functions (tests call them)


def upscaler_choices(app) -> list[str]:
    """What the Upscaler 1 / 2 dropdowns offer: None, Lanczos, Nearest, then the installed models."""
    try:
        return app.upscalers.names(latent=False)
    except Exception:  # noqa: BLE001 - an unreadable model folder must not stop the page
        log.exception("listing upscalers failed")
        return ["None", "Lanczos", "Nearest"]


def params_of(v: dict) -> ExtrasParams:
    """The ExtrasParams of the tab's values (sliders give floats; sizes are whole pixels)."""
    def num(name, cast, default):
        try:
            value = v.get(name)
            return default if value is None or value == "" else cast(float(value)) if cast is int else cast(value)
        except (TypeError, ValueError):
            raise ExtrasError(name, f"{name}: not a number ({v.get(name)!r})") from None
    d = ExtrasParams()
    return ExtrasParams(
        resize_mode=num("resize_mode", int, d.resize_mode),
        upscaling_resize=num("upscaling_resize", float, d.upscaling_resize),
        upscaling_resize_w=num("upscaling_resize_w", int, d.upscaling_resize_w),
        upscaling_resize_h=num("upscaling_resize_h", int, d.upscaling_resize_h),
        upscaling_crop=bool(v.get("upscaling_crop", d.upscaling_crop)),
        upscaler_1=str(v.get("upscaler_1") or "None"),
        upscaler_2=str(v.get("upscaler_2") or "None"),
        extras_upscaler_2_visibility=num("extras_upscaler_2_visibility", float, d.extras_upscaler_2_visibility))


def _file_path_and_name(item) -> tuple[str | None, str | None]:
    """(path, the name the user gave it) of an uploaded batch file (a path, or gradio's file dict)."""
    if isinstance(item, dict):
        path = item.get("path")
        return path, item.get("orig_name") or (Path(path).name if path else None)
    if isinstance(item, (str, Path)):
        return str(item), Path(item).name
    path = getattr(item, "path", None) or getattr(item, "name", None)
    return path, getattr(item, "orig_name", None) or (Path(path).name if path else None)


def _open(item, name: str | None = None) -> Image.Image:
    if isinstance(item, Image.Image):
        return item
    if not item:
        raise ExtrasError("image", f"{name or 'the upload'}: the file could not be read")
    return postprocessing.open_image(item)


def sources(mode: str, v: dict) -> tuple[list[tuple[Callable[[], Image.Image], str | None]], list[str]]:
    """The pictures to work on, as (loader, name) pairs, and warnings; ExtrasError when there is none.
    Single Image and Batch Process pictures are read here (a bad file is an error before any work); the
    pictures of a folder one at a time while working (a file that is no picture is skipped, as A1111 does)."""
    if mode == SINGLE:
        im = v.get("image")
        if im is None:
            raise ExtrasError("image", "Upload a picture to the Single Image tab first.")
        im = _open(im)
        return [(lambda im=im: im, None)], []
    if mode == BATCH:
        files = [f for f in (v.get("image_batch") or []) if f]
        if not files:
            raise ExtrasError("imageList", "Upload pictures to the Batch Process tab first.")
        out = []
        for f in files:
            path, name = _file_path_and_name(f)
            im = _open(path, name)
            out.append((lambda im=im: im, name))
        return out, []
    if mode == DIRECTORY:
        folder = postprocessing.images_in_dir(v.get("input_dir") or "")
        if not folder:
            raise ExtrasError("input_dir", f"No pictures in {str(v.get('input_dir')).strip()}.")
        return [(lambda f=f: postprocessing.open_image(f), f.name) for f in folder], []
    raise ExtrasError("mode", f"unknown Extras mode {mode!r}")


def _gallery_item(result: postprocessing.ExtrasResult):
    """The saved file where gradio may serve it as it is, else the picture."""
    if result.path is not None and common._servable(str(result.path)):
        return str(result.path)
    return result.image


def fail(message: str) -> dict:
    """An error box in the info panel; the gallery keeps what it shows."""
    return {"gallery": gr.skip(), "result": gr.skip(), "info": common.error_html(f"Error: {message}")}


def _tile_progress(progress: Callable, desc: str) -> Callable[[int, int], None]:
    def tiles(done: int, count: int) -> None:
        progress((done, count), desc=desc, unit="tiles")
    return tiles


def generate(app, mode: str, v: dict, progress: Callable | None = None) -> dict:
    """Generate: every source picture through postprocessing.run (saved), as {"gallery", "info", "result"}.
    Bad input: an error box in "info", the gallery left as it is (gr.skip()); never an exception."""
    t0 = time.time()
    mode = mode if mode in MODES else SINGLE
    if mode == DIRECTORY:   # relative folders are under the data folder, as img2img's batch ones
        v = dict(v)
        for key in ("input_dir", "output_dir"):
            text = str(v.get(key) or "").strip()
            v[key] = str(common.resolve_dir(app, str(Path(text).expanduser()))) if text else ""
    try:
        p = params_of(v)
        postprocessing.check(app.upscalers, p)
        todo, warnings = sources(mode, v)
    except ExtrasError as e:
        return fail(str(e))
    outdir = (v.get("output_dir") or "").strip() if mode == DIRECTORY else ""
    show = mode != DIRECTORY or bool(v.get("show_results", True))
    gallery, texts, files = [], [], []
    total = len(todo)
    for i, (load, name) in enumerate(todo):
        desc = f"Image {i + 1}/{total}" if total > 1 else "Upscaling"
        if progress is not None:
            progress((i, total), desc=desc, unit="images")
        try:
            im = load()
        except ExtrasError as e:      # a folder's file that is no picture
            warnings.append(str(e))
            continue
        tiles = _tile_progress(progress, desc) if progress is not None else None
        try:
            results = postprocessing.run(app, [(im, name)], p, save_output=True, output_dir=outdir or None,
                                         progress=tiles)
        except (ExtrasError, ValueError, OSError, InterruptedError) as e:
            done = f" ({len(files)} of {total} pictures were done before)" if files else ""
            return fail(f"{name or 'the picture'}: {e}{done}")
        except Exception as e:  # noqa: BLE001 - a message, never a traceback on the page
            log.exception("Extras failed")
            return fail(f"{type(e).__name__}: {e}")
        for r in results:
            texts.append(r.infotext)
            files.append(str(r.path) if r.path else "")
            if show:
                gallery.append(_gallery_item(r))
    if not files:
        return fail("; ".join(warnings) or "nothing was done")
    state = {"infotexts": texts if show else [], "files": files, "grid": False, "index": 0,
             "seconds": time.time() - t0, "warnings": warnings}
    info = info_html(state)
    if mode != SINGLE:
        where = common.message_html(f"Output directory: {Path(files[0]).parent}") if files[0] else ""
        info = common.message_html(f"Pictures written: {len(files)}") + where + info
    return {"gallery": gallery, "result": state, "info": info}


def info_html(state: dict) -> str:
    """The selected result's infotext (left untranslated, as every infotext), warnings and the time taken."""
    return common.result_info_html(state).replace('<p class="sdw-infotext">', '<p class="sdw-infotext no-translate">')


def select(state: dict, index) -> tuple[dict, str]:
    state = dict(state or {})
    state["index"] = int(index) if isinstance(index, int) else 0
    return state, info_html(state)


def send_to_img2img(i2i: common.GenTab, tabs, mode: str, state: dict, gallery) -> dict:
    """The selected result picture as img2img's (`mode` "img2img") or Inpaint's image, and that tab shown
    (only the picture: as in A1111, Extras sends no generation parameters)."""
    from modules.ui import img2img

    image = common.selected_image(state, gallery)
    if image is None:
        gr.Warning("Nothing to send: generate an image first.")
        return {}
    image = image.copy()
    image.info.pop("parameters", None)
    upd: dict[Any, Any] = {i2i.c["init_img" if mode == "img2img" else "inpaint"]: image,
                           i2i.c["subtabs"]: gr.update(selected=mode), tabs: gr.update(selected="img2img")}
    upd.update(img2img.mode_updates(i2i, mode))
    return upd


def send_image_updates(ex: SimpleNamespace, tabs, image) -> dict:
    """A picture (a PIL image or a file) into the Extras tab's Single Image input, that sub-tab and the tab shown."""
    if image is None:
        gr.Warning("Nothing to send: generate an image first.")
        return {}
    return {ex.image: image, ex.subtabs: gr.update(selected=SINGLE), ex.mode: SINGLE,
            tabs: gr.update(selected="extras")}


# ---------------------------------------------------------------------------
# the tab


def build(app) -> SimpleNamespace:
    choices = upscaler_choices(app)
    d = ExtrasParams()
    ns = SimpleNamespace()
    with gr.Row(equal_height=False, elem_id="extras_row"):
        with gr.Column(scale=1, min_width=380, variant="panel", elem_id="extras_settings"):
            with gr.Tabs(elem_id="mode_extras", selected=SINGLE) as ns.subtabs:
                with gr.Tab("Single Image", id=SINGLE, elem_id="extras_single_tab") as ns.tab_single:
                    ns.image = gr.Image(label="Source", type="pil", image_mode=None, format="png",
                                        sources=["upload", "clipboard"], elem_id="extras_image", height=420)
                with gr.Tab("Batch Process", id=BATCH, elem_id="extras_batch_process_tab") as ns.tab_batch:
                    ns.image_batch = gr.File(label="Batch Process", file_count="multiple", interactive=True,
                                             type="filepath", elem_id="extras_image_batch")
                with gr.Tab("Batch from Directory", id=DIRECTORY, elem_id="extras_batch_directory_tab") as ns.tab_dir:
                    ns.input_dir = gr.Textbox(label="Input directory", elem_id="extras_batch_input_dir", max_lines=1,
                                              placeholder="A directory on the same machine where the server is running.")
                    ns.output_dir = gr.Textbox(label="Output directory", elem_id="extras_batch_output_dir", max_lines=1,
                                               placeholder="Leave blank to save images to the default path.")
                    ns.show_results = gr.Checkbox(label="Show result images", value=True,
                                                  elem_id="extras_show_extras_results")
            ns.mode = gr.State(SINGLE)
            with gr.Accordion("Upscale", open=True, elem_id="extras_upscale"):
                with gr.Tabs(elem_id="extras_resize_mode", selected="scale_by") as ns.resize_tabs:
                    with gr.Tab("Scale by", id="scale_by", elem_id="extras_scale_by_tab") as ns.tab_scale_by:
                        ns.upscaling_resize = gr.Slider(1.0, 8.0, step=0.05, value=4, label="Resize",
                                                        elem_id="extras_upscaling_resize")
                    with gr.Tab("Scale to", id="scale_to", elem_id="extras_scale_to_tab") as ns.tab_scale_to:
                        with gr.Row(equal_height=True):
                            with gr.Column(scale=4, elem_id="upscaling_column_size"):
                                ns.upscaling_resize_w = gr.Slider(64, 8192, step=8, value=d.upscaling_resize_w,
                                                                  label="Width", elem_id="extras_upscaling_resize_w")
                                ns.upscaling_resize_h = gr.Slider(64, 8192, step=8, value=d.upscaling_resize_h,
                                                                  label="Height", elem_id="extras_upscaling_resize_h")
                            with gr.Column(scale=0, min_width=48, elem_classes=["sdw-tool-col"],
                                           elem_id="upscaling_dimensions_row"):
                                ns.swap = common.tool_button(common.SWAP, "upscaling_res_switch_btn")
                        ns.upscaling_crop = gr.Checkbox(label="Crop to fit", value=True,
                                                        elem_id="extras_upscaling_crop")
                ns.resize_mode = gr.State(0)
                with gr.Row(equal_height=False, elem_classes=["sdw-tool-row"]):
                    ns.upscaler_1 = gr.Dropdown(label="Upscaler 1", choices=choices, value="None",
                                                elem_id="extras_upscaler_1", scale=4, min_width=160)
                    ns.refresh = common.tool_button(common.REFRESH, "extras_refresh_upscalers")
                with gr.Row(equal_height=True):
                    ns.upscaler_2 = gr.Dropdown(label="Upscaler 2", choices=choices, value="None",
                                                elem_id="extras_upscaler_2", scale=2, min_width=160)
                    ns.extras_upscaler_2_visibility = gr.Slider(0.0, 1.0, step=0.001, value=0.0,
                                                                label="Upscaler 2 visibility",
                                                                elem_id="extras_upscaler_2_visibility", scale=2)
        with gr.Column(scale=1, min_width=360, elem_id="extras_results"):
            ns.generate = gr.Button("Generate", variant="primary", elem_id="extras_generate")
            ns.gallery = gr.Gallery(label="Output", show_label=False, elem_id="extras_gallery", columns=4, height=520,
                                    format="png", type="pil", object_fit="contain", interactive=False,
                                    buttons=["download", "fullscreen"],
                                    elem_classes=["no-translate", "sdw-output-gallery"])
            with gr.Row(elem_id="extras_image_buttons", elem_classes=["sdw-image-buttons"]):
                ns.send_img2img = gr.Button("Send to img2img", elem_id="extras_send_to_img2img", size="sm",
                                            min_width=100)
                ns.send_inpaint = gr.Button("Send to inpaint", elem_id="extras_send_to_inpaint", size="sm",
                                            min_width=100)
            ns.info = gr.HTML("", elem_id="extras_html_info", elem_classes=["sdw-generation-info"], js_on_load=None)
    ns.result = gr.State({})
    return ns


def upscaler_updates(app) -> tuple:
    """New choices for both upscaler dropdowns (after a refresh), keeping each selection still offered."""
    choices = upscaler_choices(app)
    return gr.update(choices=choices), gr.update(choices=choices)


def wire(app, ex: SimpleNamespace, top: dict, tabs, t2i: common.GenTab, i2i: common.GenTab,
         png: SimpleNamespace) -> None:
    from modules.ui import pnginfo

    quiet = {"show_progress": "hidden", "api_visibility": "private"}
    for tab, mode in ((ex.tab_single, SINGLE), (ex.tab_batch, BATCH), (ex.tab_dir, DIRECTORY)):
        tab.select(lambda mode=mode: mode, outputs=[ex.mode], queue=False, **quiet)
    for tab, mode in ((ex.tab_scale_by, 0), (ex.tab_scale_to, 1)):
        tab.select(lambda mode=mode: mode, outputs=[ex.resize_mode], queue=False, **quiet)
    ex.swap.click(lambda w, h: (h, w), inputs=[ex.upscaling_resize_w, ex.upscaling_resize_h],
                  outputs=[ex.upscaling_resize_w, ex.upscaling_resize_h], queue=False, **quiet)

    def refresh():
        app.upscalers.refresh()
        return upscaler_updates(app)
    ex.refresh.click(refresh, outputs=[ex.upscaler_1, ex.upscaler_2], **quiet)
    if top.get("refresh_event") is not None:   # the top bar's refresh lists the upscalers again too
        top["refresh_event"].then(lambda: upscaler_updates(app), outputs=[ex.upscaler_1, ex.upscaler_2], **quiet)

    inputs = [ex.mode, ex.resize_mode, ex.image, ex.image_batch, ex.input_dir, ex.output_dir, ex.show_results,
              *(getattr(ex, n) for n in PARAM_NAMES)]

    def handler(mode, resize_mode, image, batch, input_dir, output_dir, show_results, *values,
                progress=gr.Progress()):
        v = dict(zip(PARAM_NAMES, values), resize_mode=resize_mode, input_dir=input_dir, output_dir=output_dir,
                 show_results=show_results)
        if mode == SINGLE:
            path = pnginfo.uploaded_path(ex.image, image)
            if image and path is None:
                return _to_components(ex, fail("The upload could not be read."))
            v["image"] = path
        elif mode == BATCH:
            items = batch if isinstance(batch, list) else [batch] if batch else []
            v["image_batch"] = []
            for item in items:
                path = pnginfo.uploaded_path(ex.image_batch, item)
                if path is None:
                    return _to_components(ex, fail("An upload could not be read."))
                v["image_batch"].append({"path": path, "orig_name": _file_path_and_name(item)[1]})
        return _to_components(ex, generate(app, mode, v, progress=progress))
    ex.generate.click(handler, inputs=inputs, outputs=[ex.gallery, ex.info, ex.result], preprocess=False,
                      api_visibility="private", concurrency_limit=1, concurrency_id="extras")

    def on_select(state, evt: gr.SelectData):
        return select(state, evt.index)
    ex.gallery.select(on_select, inputs=[ex.result], outputs=[ex.result, ex.info], queue=False, **quiet)

    i2i_outs = [i2i.c["init_img"], i2i.c["inpaint"], i2i.c["subtabs"], i2i.c["mode"], i2i.c["mask_options"], tabs]
    for button, mode in ((ex.send_img2img, "img2img"), (ex.send_inpaint, "inpaint")):
        button.click(lambda st, gal, mode=mode: send_to_img2img(i2i, tabs, mode, st, gal),
                     inputs=[ex.result, ex.gallery], outputs=i2i_outs, **quiet)

    ex_outs = [ex.image, ex.subtabs, ex.mode, tabs]
    for tab in (t2i, i2i):
        if "send_extras" in tab.c:
            tab.c["send_extras"].click(lambda st, gal: send_image_updates(ex, tabs, common.selected_image(st, gal)),
                                       inputs=[tab.c["result"], tab.c["gallery"]], outputs=ex_outs, **quiet)

    def from_pnginfo(payload):
        path = pnginfo.uploaded_path(png.image, payload)
        if path is None or pnginfo.read_info(path)[2] is None:
            gr.Warning("Nothing to send: drop an image first.")
            return {}
        return send_image_updates(ex, tabs, path)   # the uploaded file itself: every chunk of it kept
    png.to_extras.click(from_pnginfo, inputs=[png.image], outputs=ex_outs, preprocess=False, **quiet)


def _to_components(ex: SimpleNamespace, upd: dict) -> tuple:
    return upd.get("gallery", gr.skip()), upd.get("info", gr.skip()), upd.get("result", gr.skip())
