"""The PNG Info tab: show the parameters stored in an image and send them to txt2img / img2img."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import gradio as gr
from PIL import Image, UnidentifiedImageError

from modules.ui import common


def read_info(path) -> tuple[str, str, Image.Image | None]:
    """(html to show, the infotext, the image) for an uploaded file; an error box when it is no image."""
    from modules import images

    if not path:
        return "", "", None
    try:
        with Image.open(path) as im:
            im.load()
            infotext, items = images.read_info_from_image(im)
            image = im.copy()
            image.info = dict(im.info)
    except (UnidentifiedImageError, OSError, ValueError) as e:
        return common.error_html(f"Not an image: {e}"), "", None
    items = dict(items or {})
    items.pop("parameters", None)
    rows = ""
    if infotext:
        rows += f'<div class="sdw-pnginfo-item"><p><b>parameters</b></p><p class="sdw-infotext">{common.esc(infotext)}</p></div>'
    for key, value in items.items():
        if isinstance(value, bytes):
            continue
        rows += (f'<div class="sdw-pnginfo-item"><p><b>{common.esc(key)}</b></p>'
                 f'<p class="sdw-infotext">{common.esc(value)}</p></div>')
    if not rows:
        rows = '<div class="sdw-message">Nothing found in the image.</div>'
    return f'<div class="sdw-pnginfo">{rows}</div>', infotext or "", image


def uploaded_path(component, payload) -> str | None:
    """The file behind an image component's raw value (events here use preprocess=False so that a
    file that is no image gets a readable message instead of gradio's preprocessing error).
    Only files in gradio's upload cache are accepted: the value comes from the browser."""
    if not payload:
        return None
    path = payload.get("path") if isinstance(payload, dict) else payload
    if not path:
        return None
    try:
        p = Path(path).resolve()
        cache = Path(component.GRADIO_CACHE).resolve()
    except (OSError, TypeError, AttributeError):
        return None
    return str(p) if p.is_relative_to(cache) and p.is_file() else None


def build(app) -> SimpleNamespace:
    with gr.Row(equal_height=False, elem_id="pnginfo_row"):
        with gr.Column(variant="panel"):
            image = gr.Image(label="Source", type="filepath", image_mode=None, sources=["upload", "clipboard"],
                             elem_id="pnginfo_image", height=480)
        with gr.Column(variant="panel"):
            info = gr.HTML("", elem_id="pnginfo_html", js_on_load=None, elem_classes=["no-translate"])
            text = gr.Textbox(label="Generation parameters", elem_id="pnginfo_generation_info", visible="hidden",
                              interactive=False)
            with gr.Row():
                to_txt2img = gr.Button("Send to txt2img", elem_id="pnginfo_send_to_txt2img")
                to_img2img = gr.Button("Send to img2img", elem_id="pnginfo_send_to_img2img")
                to_extras = gr.Button("Send to extras", elem_id="pnginfo_send_to_extras")
    return SimpleNamespace(image=image, info=info, text=text, to_txt2img=to_txt2img, to_img2img=to_img2img,
                           to_extras=to_extras)


def send_updates(app, tab: common.GenTab, infotext: str) -> dict:
    """Component updates that fill `tab` from an infotext."""
    from modules import infotext as infotext_mod

    if not infotext:
        gr.Warning("No generation parameters to send.")
        return {}
    params = infotext_mod.parse_generation_parameters(infotext)
    return common.paste_to_components(tab, common.paste_updates(app, tab, params))


def wire(app, png: SimpleNamespace, t2i: common.GenTab, i2i: common.GenTab, tabs) -> None:
    def on_image(payload):
        path = uploaded_path(png.image, payload)
        if payload and path is None:
            return common.error_html("The upload could not be read."), ""
        html, text, _ = read_info(path)
        return html, text
    png.image.change(on_image, inputs=[png.image], outputs=[png.info, png.text], show_progress="hidden",
                     api_visibility="private", preprocess=False)

    def to_txt2img(text):
        upd = send_updates(app, t2i, text)
        if upd:
            upd[tabs] = gr.update(selected="txt2img")
        return upd
    png.to_txt2img.click(to_txt2img, inputs=[png.text], outputs=[*common.paste_targets(t2i), tabs],
                         show_progress="hidden", api_visibility="private")

    def to_img2img(text, payload):
        from modules.ui import img2img

        upd = send_updates(app, i2i, text) if text else {}
        _, _, image = read_info(uploaded_path(png.image, payload))
        if image is None and not upd:
            gr.Warning("Nothing to send: drop an image first.")
            return {}
        if image is not None:
            upd[i2i.c["init_img"]] = image
        upd[i2i.c["subtabs"]] = gr.update(selected="img2img")
        upd.update(img2img.mode_updates(i2i, "img2img"))
        upd[tabs] = gr.update(selected="img2img")
        return upd
    png.to_img2img.click(to_img2img, inputs=[png.text, png.image],
                         outputs=[*common.paste_targets(i2i), i2i.c["init_img"], i2i.c["subtabs"], i2i.c["mode"],
                                  i2i.c["mask_options"], tabs],
                         show_progress="hidden", api_visibility="private", preprocess=False)
