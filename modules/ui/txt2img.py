"""The txt2img tab."""
from __future__ import annotations

from typing import Iterator

import gradio as gr

from modules import fields
from modules.engine.request import GenerationRequest, RequestError
from modules.ui import common, scripts_ui
from modules.ui.common import GenTab

HIRES_FIELDS = ("hr_upscaler", "hr_second_pass_steps", "denoising_strength", "hr_scale", "hr_resize_x", "hr_resize_y")


def build_request(app, v: dict) -> GenerationRequest:
    """The request the txt2img tab's fields describe (`v`: field name -> value)."""
    req = common.common_request(app, v, "txt2img")
    if v.get("enable_hr"):
        req.enable_hr = True
        common.set_form_values(app, req, v, HIRES_FIELDS)
    return req


def generate(app, values: dict, checkpoint: str | None, vae: str | None) -> Iterator[dict]:
    """Generate: build the request, queue it, stream progress, then the images (dicts keyed by field name)."""
    try:
        req = build_request(app, values)
    except (RequestError, ValueError) as e:
        gr.Warning(str(e))
        yield {"progress": common.error_html(f"Error: {e}")}
        return
    yield from common.submit_and_follow(app, req, checkpoint, vae)


def build(app, native: int) -> GenTab:
    tab = GenTab(app, "txt2img")
    tab.build_prompts()
    app.hooks.fire("ui_tab_build", tab)  # what plugs in under the prompts (extra networks' cards)
    with gr.Row(elem_id="txt2img_extra_row", equal_height=False):
        with gr.Column(scale=1, min_width=380, elem_id="txt2img_settings"):
            tab.build_sampler()
            with gr.Accordion(fields.label("enable_hr"), open=False, elem_id="txt2img_hr") as acc:
                tab.c["hr_accordion"] = acc
                tab.add("enable_hr", gr.Checkbox(label=fields.label("enable_hr"), elem_id="txt2img_enable_hr",
                                                 value=fields.FIELDS["enable_hr"].default), field=True)
                with gr.Row():
                    tab.add("hr_upscaler", gr.Dropdown(label=fields.label("hr_upscaler"),
                                                       choices=app.upscalers.names(),
                                                       value=fields.FIELDS["hr_upscaler"].default,
                                                       elem_id="txt2img_hr_upscaler"), field=True)
                    tab.slider("hr_second_pass_steps", "txt2img_hires_steps")
                    tab.slider("denoising_strength", "txt2img_denoising_strength")
                with gr.Row():
                    tab.slider("hr_scale", "txt2img_hr_scale")
                    tab.slider("hr_resize_x", "txt2img_hr_resize_x")
                    tab.slider("hr_resize_y", "txt2img_hr_resize_y")
            with gr.Row(elem_id="txt2img_size_row"):
                tab.build_size(native)
                tab.build_batch()
            tab.build_cfg()
            tab.build_seed()
            scripts_ui.build(tab, app)   # always-on sections and the Script dropdown (A1111's place)
        tab.build_results()
    return tab


def wire(app, tab: GenTab, top) -> None:
    c = tab.c
    tab.wire_common(top)
    app.hooks.fire("ui_tab_wire", tab, top)
    # opening the accordion turns hires fix on, closing it turns it off (the checkbox inside can too)
    c["hr_accordion"].expand(lambda: True, outputs=[c["enable_hr"]], queue=False, show_progress="hidden",
                             api_visibility="private")
    c["hr_accordion"].collapse(lambda: False, outputs=[c["enable_hr"]], queue=False, show_progress="hidden",
                               api_visibility="private")
    scripts_ui.wire(tab, app)
    tab.wire_generate(top, lambda values, ckpt, vae: generate(app, values, ckpt, vae))
