"""The Gradio web UI: top bar (checkpoint, VAE, language), txt2img, img2img, Extras, PNG Info, History, Settings and
Extensions tabs.

`create_ui(app)` returns `(blocks, head_html, css)`; webui.py mounts the blocks
on its FastAPI server.  Everything the page does goes through the
:class:`modules.app.App` it is given (its job queue, models, settings, styles).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import gradio as gr

from modules.ui import (common, extensions_ui, extra_networks_ui, extras_ui, history_ui, img2img, pnginfo, settings,
                        txt2img)
from modules.ui.common import GenTab

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
JS_FILE = HERE.parent.parent / "javascript" / "ui.js"
LANGUAGES = {"English": "None", "简体中文": "zh_CN"}
RELOAD_JS = "() => { setTimeout(() => location.reload(), 300) }"
LOADED_JS = "() => { document.body.dataset.webuiLoaded = 'true' }"


@dataclass
class UI:
    blocks: gr.Blocks
    top: dict
    txt2img: GenTab
    img2img: GenTab
    pnginfo: SimpleNamespace
    settings: SimpleNamespace
    tabs: gr.Tabs
    extensions: SimpleNamespace | None = None
    history: SimpleNamespace | None = None
    extras: SimpleNamespace | None = None


# ---------------------------------------------------------------------------
# top bar


def language_of(app) -> str:
    loc = app.opts.get("localization")
    for label, value in LANGUAGES.items():
        if value == loc:
            return label
    return "English"


def _current_checkpoint(app) -> str | None:
    """The checkpoint to show, without scanning the model folders (that may hash files)."""
    titles = app.models.titles()
    loaded = app.models.loaded
    if loaded is not None and loaded.info.title in titles:
        return loaded.info.title
    want = app.opts.get("sd_model_checkpoint")
    if want in titles:
        return want
    return titles[0] if titles else None


def model_status_html(app) -> str:
    """Problems with the model files, for the line under the top bar ('' when there are none)."""
    parts = []
    if app.model_error:
        parts.append(f"Model: {app.model_error}")
    bad = getattr(app.models, "bad_files", None) or []
    if bad:
        parts.append("Skipped model files: " + "; ".join(f"{b.filename.name}: {b.reason}" for b in bad[:5])
                     + (f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""))
    bad_up = getattr(getattr(app, "upscalers", None), "bad_files", None) or []
    if bad_up:
        parts.append("Skipped upscaler files: " + "; ".join(f"{b.filename.name}: {b.reason}" for b in bad_up[:5])
                     + (f" (and {len(bad_up) - 5} more)" if len(bad_up) > 5 else ""))
    if not app.models.titles():
        dirs = ", ".join(str(d) for d in app.paths.ckpt_dirs)
        parts.append(f"No checkpoint found; put a model file in {dirs} and press the refresh button.")
    return common.error_html("\n".join(parts)) if parts else ""


def build_top_bar(app) -> dict:
    titles = app.models.titles()
    with gr.Row(elem_id="quicksettings", equal_height=True):
        checkpoint = gr.Dropdown(label="Stable Diffusion checkpoint", choices=titles, value=_current_checkpoint(app),
                                 elem_id="setting_sd_model_checkpoint", scale=4, min_width=240,
                                 elem_classes=["no-translate"])
        refresh = common.tool_button(common.REFRESH, "refresh_sd_model_checkpoint")
        vae_choices = app.models.vae_choices()
        vae_value = app.opts.get("sd_vae") or "Automatic"
        if vae_value not in vae_choices:
            vae_choices = [*vae_choices, vae_value]
        vae = gr.Dropdown(label="SD VAE", choices=vae_choices, value=vae_value, elem_id="setting_sd_vae", scale=2,
                          min_width=160, elem_classes=["no-translate"])
        language = gr.Radio(choices=list(LANGUAGES), value=language_of(app), label="Language", show_label=False,
                            elem_id="language_toggle", scale=0, min_width=240, container=False)
    status = gr.HTML("", elem_id="sd_model_status", js_on_load=None, visible=False)
    return {"checkpoint": checkpoint, "refresh": refresh, "vae": vae, "language": language, "status": status}


def top_bar_values(app, built_native: int | None = None) -> tuple:
    """demo.load: the model list (scanning the folders once), the selected checkpoint and VAE, the language,
    and the checkpoint's native size for the txt2img / img2img width and height (when it differs from
    `built_native`, the size the page was built with)."""
    try:
        app.ensure_listed()
        selected = app.selected_checkpoint()
    except Exception as e:  # noqa: BLE001 - the page must open even when the model folder is unreadable
        log.exception("listing models failed")
        return (gr.skip(), gr.skip(), language_of(app), common.error_html(f"Model list: {e}"),
                *([gr.skip()] * 4))
    titles = app.models.titles()
    vae_choices = app.models.vae_choices()
    vae_value = app.opts.get("sd_vae") or "Automatic"
    if vae_value not in vae_choices:
        vae_choices = [*vae_choices, vae_value]
    native = app.native_resolution(selected) if selected else 512
    sizes = [gr.skip() if native == built_native else native] * 4   # don't reset what the user typed meanwhile
    return (gr.update(choices=titles, value=selected if selected in titles else None),
            gr.update(choices=vae_choices, value=vae_value), language_of(app), model_status_html(app), *sizes)


def change_checkpoint(app, title: str):
    """(checkpoint shown, native size or None, status html) after the user picked `title`."""
    from modules import sd_models

    if not title:
        return _current_checkpoint(app), None, ""
    try:
        loaded = app.set_checkpoint(title)
    except sd_models.ModelLoadError as e:
        gr.Warning(str(e))
        return _current_checkpoint(app), None, common.error_html(f"Model: {e}")
    return loaded.info.title, app.native_resolution(loaded.info.title), ""


def refresh_checkpoints(app):
    app.refresh_models()
    titles = app.models.titles()
    current = _current_checkpoint(app)
    return (gr.update(choices=titles, value=current if current in titles else None),
            gr.update(choices=app.models.vae_choices()), model_status_html(app))


def set_vae(app, value: str) -> str:
    try:
        app.opts.set("sd_vae", value or "Automatic")
    except ValueError as e:
        gr.Warning(str(e))
        return common.error_html(str(e))
    return ""


def set_language(app, label: str) -> None:
    app.opts.set("localization", LANGUAGES.get(label, "None"))


def status_update(html: str):
    """The line under the top bar: shown only when it has something to say."""
    return gr.update(value=html, visible=bool(html))


def wire_top_bar(app, top: dict, t2i: GenTab, i2i: GenTab) -> None:
    sizes = [t2i.c["width"], t2i.c["height"], i2i.c["width"], i2i.c["height"]]

    def on_checkpoint(title):
        shown, native, status = change_checkpoint(app, title)
        if native is None:
            return [shown, *([gr.skip()] * 4), status_update(status)]
        return [shown, *([native] * 4), status_update(status)]
    top["checkpoint"].input(on_checkpoint, inputs=[top["checkpoint"]], outputs=[top["checkpoint"], *sizes, top["status"]],
                            api_visibility="private")
    def on_refresh():
        ckpt, vae, status = refresh_checkpoints(app)   # also lists the upscaler models again
        return ckpt, vae, status_update(status), gr.update(choices=app.upscalers.names())
    # the Extras tab chains its upscaler dropdowns' new choices to this (top["refresh_event"].then)
    top["refresh_event"] = top["refresh"].click(
        on_refresh, outputs=[top["checkpoint"], top["vae"], top["status"], t2i.c["hr_upscaler"]],
        api_visibility="private")
    top["vae"].input(lambda v: status_update(set_vae(app, v)), inputs=[top["vae"]], outputs=[top["status"]],
                     show_progress="hidden", api_visibility="private")
    top["language"].input(lambda v: set_language(app, v), inputs=[top["language"]], show_progress="hidden",
                          api_visibility="private").then(None, js=RELOAD_JS)


# ---------------------------------------------------------------------------
# sending images between tabs


def send_to_img2img(app, src: GenTab, dst: GenTab, mode: str, tabs, state: dict, gallery) -> dict:
    """Put the selected result image into img2img (`mode` "img2img") or Inpaint, paste its parameters, switch tab."""
    from modules import infotext

    image = common.selected_image(state, gallery)
    if image is None:
        gr.Warning("Nothing to send: generate an image first.")
        return {}
    upd = {}
    text = common.selected_infotext(state)
    if text:
        params = infotext.parse_generation_parameters(text)
        fields = common.paste_updates(app, dst, params, send_seed=bool(app.opts.get("send_seed")))
        fields.pop("denoising_strength", None)   # a hires-fix strength is no img2img strength
        fields.pop("batch_size", None)
        upd.update(common.paste_to_components(dst, fields))
    image = image.copy()
    image.info.pop("parameters", None)
    upd[dst.c["init_img" if mode == "img2img" else "inpaint"]] = image
    upd[dst.c["subtabs"]] = gr.update(selected=mode)
    upd.update(img2img.mode_updates(dst, mode))
    upd[tabs] = gr.update(selected="img2img")
    return upd


def wire_send(app, src: GenTab, dst: GenTab, tabs) -> None:
    outs = [*common.paste_targets(dst), dst.c["init_img"], dst.c["inpaint"], dst.c["subtabs"], dst.c["mode"],
            dst.c["mask_options"], tabs]
    def sender(mode):
        return lambda st, gal: send_to_img2img(app, src, dst, mode, tabs, st, gal)

    for button, mode in (("send_img2img", "img2img"), ("send_inpaint", "inpaint")):
        if button in src.c:
            src.c[button].click(sender(mode),
                                inputs=[src.c["result"], src.c["gallery"]], outputs=outs, show_progress="hidden",
                                api_visibility="private")


# ---------------------------------------------------------------------------
# the page


def head_html(app) -> str:
    parts = []
    try:
        from modules import localization
    except ImportError:
        localization = None
    if localization is not None:
        try:
            parts.append(localization.head_html(app))
        except Exception:  # noqa: BLE001 - an untranslated page is better than none
            log.exception("localization script failed")
    if JS_FILE.is_file():
        parts.append(f"<script>\n{JS_FILE.read_text(encoding='utf-8')}\n</script>")
    parts.append(app.extensions.head_html())   # the enabled extensions' javascript/*.js
    return "\n".join(p for p in parts if p)


def native_size(app) -> int:
    title = _current_checkpoint(app)
    if title is None:
        return 512
    try:
        return int(app.native_resolution(title))
    except Exception:  # noqa: BLE001
        return 512


def build_ui(app) -> UI:
    native = native_size(app)
    extra_networks_ui.register_hooks(app.hooks)   # the cards panel plugs into the generation tabs
    with gr.Blocks(title="Stable Diffusion", analytics_enabled=False, fill_width=True) as demo:
        top = build_top_bar(app)
        with gr.Tabs(elem_id="tabs", selected="txt2img") as tabs:
            with gr.Tab("txt2img", id="txt2img", elem_id="tab_txt2img"):
                t2i = txt2img.build(app, native)
            with gr.Tab("img2img", id="img2img", elem_id="tab_img2img"):
                i2i = img2img.build(app, native)
            with gr.Tab("Extras", id="extras", elem_id="tab_extras"):
                ext = extras_ui.build(app)
            with gr.Tab("PNG Info", id="pnginfo", elem_id="tab_pnginfo"):
                png = pnginfo.build(app)
            with gr.Tab("History", id="history", elem_id="tab_history") as history_tab:
                hist = history_ui.build(app)
            with gr.Tab("Settings", id="settings", elem_id="tab_settings"):
                st = settings.build(app)
            with gr.Tab("Extensions", id="extensions", elem_id="tab_extensions") as ext_tab:
                ex = extensions_ui.build(app)
        txt2img.wire(app, t2i, top)
        img2img.wire(app, i2i, top)
        pnginfo.wire(app, png, t2i, i2i, tabs)
        history_ui.wire(app, hist, history_tab, t2i, i2i, tabs)
        settings.wire(app, st)
        extensions_ui.wire(app, ex, ext_tab)
        wire_top_bar(app, top, t2i, i2i)
        extras_ui.wire(app, ext, top, tabs, t2i, i2i, png)
        wire_send(app, t2i, i2i, tabs)
        wire_send(app, i2i, i2i, tabs)

        def on_load():
            values = list(top_bar_values(app, native))
            values[3] = status_update(values[3]) if isinstance(values[3], str) else values[3]
            return values
        loaded = demo.load(on_load,
                           outputs=[top["checkpoint"], top["vae"], top["language"], top["status"], t2i.c["width"],
                                    t2i.c["height"], i2i.c["width"], i2i.c["height"]],
                           show_progress="hidden", api_visibility="private")
        loaded = loaded.then(lambda: settings.current_values(app, st), outputs=list(st.comps.values()),
                             show_progress="hidden", api_visibility="private", queue=False)
        # a mark for scripts and tests: the page has its model list and current settings
        loaded.then(None, js=LOADED_JS)
        demo.load(**t2i.reconnect_args)
        demo.load(**i2i.reconnect_args)
        demo.load(lambda: extras_ui.upscaler_updates(app), outputs=[ext.upscaler_1, ext.upscaler_2],
                  show_progress="hidden", api_visibility="private", queue=False)
    demo.queue(default_concurrency_limit=16)
    return UI(blocks=demo, top=top, txt2img=t2i, img2img=i2i, pnginfo=png, settings=st, tabs=tabs, extensions=ex,
              history=hist, extras=ext)


def create_ui(app) -> tuple[gr.Blocks, str, str]:
    """(blocks, head html, css) for webui.py's gr.mount_gradio_app."""
    ui = build_ui(app)
    css = (HERE / "style.css").read_text(encoding="utf-8")
    css += "\n" + app.extensions.css()   # the enabled extensions' style.css
    return ui.blocks, head_html(app), css
