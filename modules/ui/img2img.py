"""The img2img tab: img2img, Sketch, Inpaint, Inpaint upload and Batch."""
from __future__ import annotations

import time
from typing import Iterator

import gradio as gr
from PIL import Image, ImageChops

from modules.engine.request import GenerationRequest, RequestError
from modules.ui import common, scripts_ui
from modules.ui.common import GenTab

MODES = {  # sub-tab id -> label (A1111's wording)
    "img2img": "img2img",
    "sketch": "Sketch",
    "inpaint": "Inpaint",
    "inpaint_upload": "Inpaint upload",
    "batch": "Batch",
}
INPAINT_MODES = ("inpaint", "inpaint_upload")
MASK_FIELDS = ("mask_blur", "inpainting_mask_invert", "inpainting_fill", "inpaint_full_res", "inpaint_full_res_padding")
IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"}


# ---------------------------------------------------------------------------
# images from the editors


def _rgb(im: Image.Image, background=(255, 255, 255)) -> Image.Image:
    """RGB version; transparent parts over `background`."""
    if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        base = Image.new("RGBA", im.size, background + (255,))
        return Image.alpha_composite(base, im).convert("RGB")
    return im.convert("RGB")


def mask_from_layers(background: Image.Image, layers) -> Image.Image:
    """White (255) wherever any editor layer was painted, black elsewhere; the background's size."""
    mask = Image.new("L", background.size, 0)
    for layer in layers or []:
        if layer is None:
            continue
        if not isinstance(layer, Image.Image):
            layer = Image.open(layer)
        alpha = layer.convert("RGBA").getchannel("A")
        if alpha.size != background.size:
            alpha = alpha.resize(background.size, Image.NEAREST)
        mask = ImageChops.lighter(mask, alpha.point(lambda a: 255 if a > 0 else 0))
    return mask


def mask_from_upload(mask: Image.Image) -> Image.Image:
    """An uploaded mask image -> L; transparent parts count as black (keep)."""
    if mask.mode in ("RGBA", "LA") or (mask.mode == "P" and "transparency" in mask.info):
        return _rgb(mask, background=(0, 0, 0)).convert("L")
    return mask.convert("L")


def _editor_image(value, what: str):
    if value is None:
        return None, []
    if isinstance(value, Image.Image):
        return value, []
    bg = value.get("background")
    comp = value.get("composite")
    layers = value.get("layers") or []
    if what == "composite":
        return comp if comp is not None else bg, []
    return bg, layers


def init_and_mask(v: dict, mode: str) -> tuple[Image.Image, Image.Image | None]:
    """(init image, mask or None) for a sub-tab; RequestError naming the missing piece."""
    if mode == "img2img":
        im = v.get("init_img")
        if im is None:
            raise RequestError("init_images", "upload an image to the img2img tab first")
        return _rgb(im), None
    if mode == "sketch":
        im, _ = _editor_image(v.get("sketch"), "composite")
        if im is None:
            raise RequestError("init_images", "upload an image to the Sketch tab first")
        return _rgb(im), None
    if mode == "inpaint":
        bg, layers = _editor_image(v.get("inpaint"), "layers")
        if bg is None:
            raise RequestError("init_images", "upload an image to the Inpaint tab first")
        mask = mask_from_layers(bg, layers)
        if mask.getbbox() is None:
            raise RequestError("mask", "draw the area to repaint on the image (the white brush) first")
        return _rgb(bg), mask
    if mode == "inpaint_upload":
        im, mask = v.get("inpaint_base"), v.get("inpaint_mask")
        if im is None:
            raise RequestError("init_images", "upload an image to the Inpaint upload tab first")
        if mask is None:
            raise RequestError("mask", "upload a mask image (white = repaint) to the Inpaint upload tab first")
        return _rgb(im), mask_from_upload(mask)
    raise RequestError("mode", f"unknown img2img mode {mode!r}")


def build_request(app, v: dict, mode: str | None = None) -> GenerationRequest:
    mode = mode or v.get("mode") or "img2img"
    req = common.common_request(app, v, "img2img")
    common.set_form_values(app, req, v, ("denoising_strength", "resize_mode"))
    image, mask = init_and_mask(v, mode)
    req.init_images = [image]
    req.mask = mask
    if mask is not None:
        common.set_form_values(app, req, v, MASK_FIELDS)
    return req


# ---------------------------------------------------------------------------
# Generate


def generate(app, values: dict, checkpoint: str | None, vae: str | None) -> Iterator[dict]:
    mode = values.get("mode") or "img2img"
    if mode == "batch":
        yield from run_batch(app, values, checkpoint, vae)
        return
    try:
        req = build_request(app, values, mode)
    except (RequestError, ValueError, OSError) as e:
        gr.Warning(str(e))
        yield {"progress": common.error_html(f"Error: {e}")}
        return
    yield from common.submit_and_follow(app, req, checkpoint, vae)


def _fail(message: str) -> dict:
    gr.Warning(message)
    return {"progress": common.error_html(f"Error: {message}")}


def run_batch(app, values: dict, checkpoint, vae) -> Iterator[dict]:
    """Batch: img2img every image of the input directory; results go to the output directory."""
    from modules import sd_models

    indir = (values.get("batch_input_dir") or "").strip()
    outdir = (values.get("batch_output_dir") or "").strip()
    if not indir:
        yield _fail("Batch: enter an input directory")
        return
    inp = common.resolve_dir(app, indir)
    if not inp.is_dir():
        yield _fail(f"Batch: input directory {inp} does not exist")
        return
    files = sorted(p for p in inp.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)
    if not files:
        yield _fail(f"Batch: no images in {inp}")
        return
    out = common.resolve_dir(app, outdir) if outdir else None
    gallery, texts, seeds, subseeds, written, warnings = [], [], [], [], [], []
    t0 = time.time()
    last_job = None
    interrupted = False
    for i, path in enumerate(files):
        try:
            with Image.open(path) as im:
                im.load()
                image = _rgb(im)
        except OSError as e:
            warnings.append(f"{path.name}: not an image ({e})")
            continue
        v = dict(values, init_img=image)
        try:
            req = build_request(app, v, "img2img")
            if out is not None:
                req.save_images = False
            job = app.submit(req, checkpoint=checkpoint or None, vae=vae or None, source="ui")
        except (RequestError, sd_models.ModelLoadError, ValueError) as e:
            yield _fail(str(e))
            return
        except Exception as e:  # noqa: BLE001 - the queue is full, ...
            yield _fail(str(e))
            return
        last_job = job
        yield {"job_id": job.id, "browser_job": job.id}
        yield from common.follow_job(app, job, prefix=f"Image {i + 1}/{len(files)}: ", final=False)
        if job.status == "failed":
            yield _fail(f"{path.name}: {job.error}")
            return
        r = job.result
        for k, pic in enumerate(r.images if r else []):
            text = r.infotexts[k] if k < len(r.infotexts) else ""
            gallery.append(common._with_info(pic, text))
            texts.append(text)
            seeds.append(r.seeds[k] if k < len(r.seeds) else -1)
            subseeds.append(r.subseeds[k] if k < len(r.subseeds) else -1)
            if out is not None:
                name = f"{path.stem}-{k}.png" if len(r.images) > 1 else f"{path.stem}.png"
                try:
                    written.append(str(common.save_png(pic, out / name, text)))
                except OSError as e:
                    yield _fail(f"Batch: cannot write to {out}: {e}")
                    return
            else:
                written.extend(r.saved_files[k:k + 1])
        if job.status == "interrupted":
            interrupted = True
            break
    state = {"job": last_job.id if last_job else "", "infotexts": texts, "seeds": seeds, "subseeds": subseeds,
             "files": written, "grid": False, "index": 0, "seconds": time.time() - t0,
             "warnings": warnings, "interrupted": interrupted}
    where = f" into {out}" if out is not None else ""
    done = common.message_html(f"Batch: {len(written) if out is not None else len(gallery)} images written{where}.")
    yield {"gallery": gallery, "result": state, "info": common.result_info_html(state), "progress": done}


# ---------------------------------------------------------------------------
# layout


def _image_input(label: str, elem_id: str, mode: str = "RGBA") -> gr.Image:
    return gr.Image(label=label, type="pil", image_mode=mode, sources=["upload", "clipboard"], elem_id=elem_id,
                    height=420)


def build(app, native: int) -> GenTab:
    tab = GenTab(app, "img2img")
    tab.build_prompts()
    app.hooks.fire("ui_tab_build", tab)  # what plugs in under the prompts (extra networks' cards)
    with gr.Row(elem_id="img2img_extra_row", equal_height=False):
        with gr.Column(scale=1, min_width=380, elem_id="img2img_settings"):
            with gr.Tabs(elem_id="mode_img2img", selected="img2img") as subtabs:
                tab.c["subtabs"] = subtabs
                with gr.Tab("img2img", id="img2img", elem_id="img2img_img2img_tab") as t:
                    tab.c["tab_img2img"] = t
                    tab.add("init_img", _image_input("Image for img2img", "img2img_image"), field=True)
                with gr.Tab("Sketch", id="sketch", elem_id="img2img_img2img_sketch_tab") as t:
                    tab.c["tab_sketch"] = t
                    tab.add("sketch", gr.ImageEditor(
                        label="Image for img2img", type="pil", elem_id="img2img_sketch", height=420,
                        sources=["upload", "clipboard"], layers=False, transforms=(),
                        brush=gr.Brush(colors=["#000000", "#ffffff", "#ff0000", "#00a000", "#0000ff"],
                                       default_color="#000000")), field=True)
                with gr.Tab("Inpaint", id="inpaint", elem_id="img2img_inpaint_tab") as t:
                    tab.c["tab_inpaint"] = t
                    tab.add("inpaint", gr.ImageMask(
                        label="Image for inpainting with mask", type="pil", elem_id="img2maskimg", height=420,
                        sources=["upload", "clipboard"], layers=False,
                        brush=gr.Brush(colors=["#ffffff"], default_color="#ffffff", color_mode="fixed")), field=True)
                with gr.Tab("Inpaint upload", id="inpaint_upload", elem_id="img2img_inpaint_upload_tab") as t:
                    tab.c["tab_inpaint_upload"] = t
                    with gr.Row():
                        tab.add("inpaint_base", _image_input("Image for img2img", "img_inpaint_base"), field=True)
                        tab.add("inpaint_mask", _image_input("Mask", "img_inpaint_mask"), field=True)
                with gr.Tab("Batch", id="batch", elem_id="img2img_batch_tab") as t:
                    tab.c["tab_batch"] = t
                    gr.HTML("<p class='sdw-hint'>Process images in a directory on the same machine where the server "
                            "is running. Use an empty output directory to save pictures normally instead of "
                            "writing to the output directory.</p>", js_on_load=None)
                    tab.add("batch_input_dir", gr.Textbox(label="Input directory", elem_id="img2img_batch_input_dir",
                                                          max_lines=1), field=True)
                    tab.add("batch_output_dir", gr.Textbox(label="Output directory",
                                                           elem_id="img2img_batch_output_dir", max_lines=1),
                            field=True)
            tab.add("mode", gr.State("img2img"), field=True)
            tab.radio("resize_mode", "resize_mode")
            with gr.Group(visible=False, elem_id="img2img_mask_options") as mask_group:
                tab.c["mask_options"] = mask_group
                with gr.Row():
                    tab.slider("mask_blur", "img2img_mask_blur")
                    tab.radio("inpainting_mask_invert", "img2img_mask_mode")
                with gr.Row():
                    tab.radio("inpainting_fill", "img2img_inpainting_fill")
                with gr.Row():
                    tab.radio("inpaint_full_res", "img2img_inpaint_full_res")
                    tab.slider("inpaint_full_res_padding", "img2img_inpaint_full_res_padding")
            tab.build_sampler()
            with gr.Row(elem_id="img2img_size_row"):
                tab.build_size(native)
                tab.build_batch()
            with gr.Row():
                tab.build_cfg()
                tab.slider("denoising_strength", "img2img_denoising_strength")
            tab.build_seed()
            scripts_ui.build(tab, app)   # always-on sections and the Script dropdown (A1111's place)
        tab.build_results()
    return tab


def mode_updates(tab: GenTab, mode: str) -> dict:
    """Switch to a sub-tab: the mode state, the mask options' visibility."""
    return {tab.c["mode"]: mode, tab.c["mask_options"]: gr.update(visible=mode in INPAINT_MODES)}


def wire(app, tab: GenTab, top) -> None:
    c = tab.c
    tab.wire_common(top)
    app.hooks.fire("ui_tab_wire", tab, top)
    def selector(mode):
        return lambda: mode_updates(tab, mode)

    for mode in MODES:
        c[f"tab_{mode}"].select(selector(mode), outputs=[c["mode"], c["mask_options"]],
                                queue=False, show_progress="hidden", api_visibility="private")
    scripts_ui.wire(tab, app)
    tab.wire_generate(top, lambda values, ckpt, vae: generate(app, values, ckpt, vae))
