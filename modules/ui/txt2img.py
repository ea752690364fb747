"""The txt2img tab."""
from __future__ import annotations

from typing import Iterator

import gradio as gr

from modules import processing
from modules.processing import GenerationRequest, RequestError
from modules.ui import common, extra_networks_ui
from modules.ui.common import GenTab

HR_UPSCALERS = [*processing.LATENT_UPSCALE_MODES, *processing.IMAGE_UPSCALERS]


def build_request(app, v: dict) -> GenerationRequest:
    """The request the txt2img tab's fields describe (`v`: field name -> value)."""
    req = common.common_request(app, v, "txt2img")
    if v.get("enable_hr"):
        req.enable_hr = True
        req.hr_upscaler = v.get("hr_upscaler") or "Latent"
        req.hr_second_pass_steps = common._as_int(v.get("hr_second_pass_steps"), 0)
        req.denoising_strength = common._as_float(v.get("denoising_strength"), 0.7)
        req.hr_scale = common._as_float(v.get("hr_scale"), 2.0)
        req.hr_resize_x = common._as_int(v.get("hr_resize_x"), 0)
        req.hr_resize_y = common._as_int(v.get("hr_resize_y"), 0)
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
    extra_networks_ui.build(tab)  # [extra networks] the cards panel under the prompt
    with gr.Row(elem_id="txt2img_extra_row", equal_height=False):
        with gr.Column(scale=1, min_width=380, elem_id="txt2img_settings"):
            tab.build_sampler()
            with gr.Accordion("Hires. fix", open=False, elem_id="txt2img_hr") as acc:
                tab.c["hr_accordion"] = acc
                tab.add("enable_hr", gr.Checkbox(label="Hires. fix", value=False, elem_id="txt2img_enable_hr"),
                        field=True)
                with gr.Row():
                    tab.add("hr_upscaler", gr.Dropdown(label="Upscaler", choices=HR_UPSCALERS, value="Latent",
                                                       elem_id="txt2img_hr_upscaler"), field=True)
                    tab.add("hr_second_pass_steps", gr.Slider(0, 150, value=0, step=1, label="Hires steps",
                                                              elem_id="txt2img_hires_steps"), field=True)
                    tab.add("denoising_strength", gr.Slider(0.0, 1.0, value=0.7, step=0.01, label="Denoising strength",
                                                            elem_id="txt2img_denoising_strength"), field=True)
                with gr.Row():
                    tab.add("hr_scale", gr.Slider(1.0, 4.0, value=2.0, step=0.05, label="Upscale by",
                                                  elem_id="txt2img_hr_scale"), field=True)
                    tab.add("hr_resize_x", gr.Slider(0, 2048, value=0, step=8, label="Resize width to",
                                                     elem_id="txt2img_hr_resize_x"), field=True)
                    tab.add("hr_resize_y", gr.Slider(0, 2048, value=0, step=8, label="Resize height to",
                                                     elem_id="txt2img_hr_resize_y"), field=True)
            with gr.Row(elem_id="txt2img_size_row"):
                tab.build_size(native)
                tab.build_batch()
            tab.build_cfg()
            tab.build_seed()
        tab.build_results()
    return tab


def wire(app, tab: GenTab, top) -> None:
    c = tab.c
    tab.wire_common(top)
    extra_networks_ui.wire(tab, top)  # [extra networks]
    # opening the accordion turns hires fix on, closing it turns it off (the checkbox inside can too)
    c["hr_accordion"].expand(lambda: True, outputs=[c["enable_hr"]], queue=False, show_progress="hidden",
                             api_visibility="private")
    c["hr_accordion"].collapse(lambda: False, outputs=[c["enable_hr"]], queue=False, show_progress="hidden",
                               api_visibility="private")
    tab.wire_generate(top, lambda values, ckpt, vae: generate(app, values, ckpt, vae))
