"""Pieces shared by the txt2img and img2img tabs.

A :class:`GenTab` builds the controls both tabs have (prompts, sampler, size,
batch, CFG, seed, results gallery) and keeps its components by name in
``tab.c``; the request fields (the inputs of Generate) are in ``tab.fields``.

The work behind the buttons is plain Python that yields dicts keyed by those
names (:func:`run_generation`, :func:`follow_job`, ...), so tests call it
without a browser; the Gradio handlers only translate names into components.
"""
from __future__ import annotations

import html
import logging
import math
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import gradio as gr
from PIL import Image

from modules import fields, infotext, samplers, upscalers
from modules.engine.request import GenerationRequest, RequestError

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5
JOB_SECRET = "sd-webui-job-id"  # BrowserState encryption key: a job id is no secret, and it survives restarts

RANDOM = "\U0001f3b2\ufe0f"      # 🎲
REUSE = "\u267b\ufe0f"           # ♻️
SWAP = "\u21c5"                  # ⇅
APPLY_STYLE = "\U0001f4cb"       # 📋
SAVE_STYLE = "\U0001f4be"        # 💾
FOLDER = "\U0001f4c2"            # 📂
REFRESH = "\U0001f504"           # 🔄



def tool_button(value: str, elem_id: str, **kw) -> gr.Button:
    return gr.Button(value, elem_id=elem_id, elem_classes=["sdw-tool"], variant="secondary", size="sm", scale=0,
                     min_width=40, **kw)


# ---------------------------------------------------------------------------
# small HTML pieces


def esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def error_html(message: str) -> str:
    return f'<div class="sdw-error" role="alert">{esc(message)}</div>'


def message_html(message: str) -> str:
    return f'<div class="sdw-message">{esc(message)}</div>'


def format_seconds(s: float | None) -> str:
    if s is None or not math.isfinite(s):
        return "?"
    s = max(0, int(round(s)))
    if s >= 3600:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s}s"


def progress_text(job, position: int | None) -> str:
    """'Step 5/20, ETA 3s' while running; 'Waiting..., queued: position 2' while queued."""
    c = job.control
    if job.status == "queued":
        return "Waiting..." + (f", queued: position {position}" if position else "")
    if job.status == "running":
        if c.total_steps <= 0:
            return "Preparing..."
        parts = [f"Step {min(c.step, c.total_steps)}/{c.total_steps}"]
        if c.job_count > 1:
            parts.insert(0, f"Batch {min(c.job_no + 1, c.job_count)}/{c.job_count}")
        if c.script_jobs:  # a script's run (X/Y/Z plot ...): which of its jobs
            done, total = c.script_jobs
            parts.insert(0, f"Job {min(done + 1, total)}/{total}")
        eta = c.eta
        if eta is not None:
            parts.append(f"ETA {format_seconds(eta)}")
        return ", ".join(parts)
    return job.status


def progress_html(job, position: int | None, prefix: str = "") -> str:
    pct = 0.0 if job.status == "queued" else job.control.progress * 100
    text = (prefix + progress_text(job, position)).strip()
    return (f'<div class="sdw-progress" data-status="{esc(job.status)}">'
            f'<div class="sdw-progress-bar"><div class="sdw-progress-fill" style="width:{pct:.1f}%"></div></div>'
            f'<div class="sdw-progress-text">{esc(text)}</div></div>')


def info_html(infotext: str, extra: str = "") -> str:
    if not infotext and not extra:
        return ""
    body = f'<p class="sdw-infotext">{esc(infotext)}</p>' if infotext else ""
    return f'<div class="sdw-info">{body}{extra}</div>'


# ---------------------------------------------------------------------------
# token counter


def token_counter_text(app, text: str) -> str:
    """'12/75': tokens used / current chunk limit (a cheap tokenizer call, no model call)."""
    try:
        used, limit = app.token_count(text or "")
    except Exception:  # noqa: BLE001 - a counter must never break the page
        log.debug("token count failed", exc_info=True)
        words = re.findall(r"\w+|[^\w\s]", text or "")
        used = len(words)
        limit = max(1, math.ceil(used / 75)) * 75
    return f"{used}/{limit}"


def token_counter_html(app, text: str) -> str:
    value = token_counter_text(app, text)
    used, limit = value.split("/")
    cls = "sdw-token-counter sdw-over" if int(used) > int(limit) else "sdw-token-counter"
    return f'<span class="{cls}">{esc(value)}</span>'


# ---------------------------------------------------------------------------
# request building


def _as_int(value, default):
    if value is None or value == "":
        return default
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return value  # validation names the field
    return value


def _as_float(value, default):
    if value is None or value == "":
        return default
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


def parse_overrides(app, items) -> dict:
    """["Clip skip: 2", ...] -> {"CLIP_stop_at_last_layers": 2} (validated)."""
    out = {}
    for item in items or []:
        key, _, value = str(item).partition(":")
        setting = infotext.SETTING_KEYS.get(key.strip())
        if setting is None:
            continue
        try:
            out[setting] = app.opts.validate(setting, _as_int(value.strip(), value.strip()))
        except ValueError as e:
            raise RequestError("override_settings", str(e)) from None
    return out


def ui_default(app, name: str, mode: str) -> Any:
    """What the control of field `name` starts with on `mode`'s tab (and falls back to when empty): the
    setting that supplies it (the sampler: default_sampler), else the table's UI value or default."""
    f = fields.FIELDS[name]
    if f.setting and f.ui is not None:
        return app.opts.get(f.setting) or f.default
    return f.ui_default(mode)


def _choice(value, f: fields.Field, default):
    """A radio's value as the field's value (gradio gives the index; a label is accepted too)."""
    if value is None or value == "":
        return default
    if isinstance(value, str) and value in f.choices:
        return f.value_of(value)
    index = _as_int(value, default)
    return bool(index) if f.base_type is bool and isinstance(index, int) else index


def form_value(app, v: dict, name: str, mode: str) -> Any:
    """The request value of field `name` from a tab's values `v`, by the field's type; empty: the UI default."""
    f = fields.FIELDS[name]
    default = ui_default(app, name, mode)
    raw = v.get(name)
    if f.choices is not None:
        return _choice(raw, f, default)
    if f.base_type is int:
        return _as_int(raw, default)
    if f.base_type is float:
        return _as_float(raw, default)
    if isinstance(default, list):
        return list(raw or default)
    return raw or default


COMMON_FIELDS = ("prompt", "negative_prompt", "styles", "sampler_name", "scheduler", "steps", "cfg_scale", "width",
                 "height", "seed", "n_iter", "batch_size")
SEED_EXTRA_FIELDS = ("subseed", "subseed_strength", "seed_resize_from_w", "seed_resize_from_h")


def set_form_values(app, req: GenerationRequest, v: dict, names) -> None:
    for name in names:
        setattr(req, name, form_value(app, v, name, req.mode))


def common_request(app, v: dict, mode: str) -> GenerationRequest:
    """The request fields both tabs have (the variation seed's only with "Extra" checked)."""
    req = GenerationRequest(mode=mode)
    set_form_values(app, req, v, COMMON_FIELDS)
    if v.get("seed_extra"):
        set_form_values(app, req, v, SEED_EXTRA_FIELDS)
    req.override_settings = parse_overrides(app, v.get("override_settings"))
    from modules.ui import scripts_ui
    scripts_ui.apply(app, req, v, mode == "img2img")
    return req


# ---------------------------------------------------------------------------
# following a job


def _with_info(im: Image.Image, infotext: str) -> Image.Image:
    """A copy carrying its parameters, so the gallery's PNG (and a download of it) keeps them."""
    im = im.copy()
    im.info["parameters"] = infotext
    return im


def result_state(job) -> dict:
    r = job.result
    return {
        "job": job.id,
        "infotexts": list(r.infotexts) if r else [],
        "seeds": list(r.seeds) if r else [],
        "subseeds": list(r.subseeds) if r else [],
        "files": list(r.saved_files) if r else [],
        "grid": bool(r is not None and r.grid_first),
        "index": 0,
        "seconds": (job.finished - job.started) if job.finished and job.started else (r.seconds if r else 0.0),
        "warnings": list(r.warnings) if r else [],
        "peak_memory_mb": r.info.get("peak_memory_mb") if r else None,
        "peak_memory_device": r.info.get("peak_memory_device") if r else None,
    }


def _servable(path: str) -> bool:
    """Whether gradio serves this file from where it is (under the working or the temp directory)."""
    try:
        p = Path(path).resolve()
        return p.is_file() and any(p.is_relative_to(Path(d).resolve()) for d in (os.getcwd(), tempfile.gettempdir()))
    except (OSError, ValueError):
        return False


def gallery_images(job) -> list:
    """The gallery items of a finished job: the grid first (where the job shows it), then each image with
    its infotext.

    Where the job saved its images somewhere gradio may serve, the saved files are shown (no second
    PNG encoding, and a download is the very file with its parameters); otherwise the images."""
    r = job.result
    if r is None:
        return []
    out = []
    if r.grid_first:
        out.append(r.grid)
    if r.images:
        files = list(r.saved_files) if len(r.saved_files) == len(r.images) else []
        for i, im in enumerate(r.images):
            if files and _servable(files[i]):
                out.append(files[i])
            else:
                out.append(_with_info(im, r.infotexts[i]) if i < len(r.infotexts) else im)
        return out
    for f in r.saved_files:  # a job recorded on disk (the server restarted): its files
        try:
            with Image.open(f) as im:
                im.load()
                out.append(im.copy())
        except OSError:
            log.warning("result file %s is gone", f)
    return out


def image_index(state: dict, gallery_index: int) -> int:
    """Gallery position -> position in the job's image list (the grid, first, counts as image 0)."""
    if not state:
        return 0
    return max(0, gallery_index - 1) if state.get("grid") else max(0, gallery_index)


def selected_infotext(state: dict, gallery_index: int | None = None) -> str:
    if not state or not state.get("infotexts"):
        return ""
    i = image_index(state, state.get("index", 0) if gallery_index is None else gallery_index)
    texts = state["infotexts"]
    return texts[min(i, len(texts) - 1)]


def result_info_html(state: dict, gallery_index: int | None = None) -> str:
    if not state:
        return ""
    extra = ""
    for w in state.get("warnings") or []:
        extra += f'<p class="sdw-warning">{esc(w)}</p>'
    if state.get("interrupted"):
        extra += '<p class="sdw-warning">Interrupted.</p>'
    if state.get("seconds"):
        extra += f'<p class="sdw-time">Time taken: {state["seconds"]:.1f} sec.</p>'
    if state.get("peak_memory_mb"):
        where = "GPU" if state.get("peak_memory_device") == "cuda" else "RAM"
        extra += f'<p class="sdw-time">Peak memory: {state["peak_memory_mb"] / 1024:.2f} GiB {where}</p>'
    return info_html(selected_infotext(state, gallery_index), extra)


def final_updates(job, toast: bool = True) -> dict:
    """What the page shows once `job` has ended (a failure also as a toast when `toast`)."""
    if job.status == "failed":
        if toast:
            gr.Warning(job.error or "the job failed")
        return {"progress": error_html(f"Error: {job.error}"), "gallery": [], "info": "", "result": {}}
    state = result_state(job)
    state["interrupted"] = job.status == "interrupted"
    out = {"gallery": gallery_images(job), "result": state, "info": result_info_html(state), "progress": ""}
    if job.status == "interrupted" and not out["gallery"]:
        out["progress"] = message_html("Interrupted.")
    return out


def follow_job(app, job, prefix: str = "", poll: float = POLL_SECONDS, final: bool = True) -> Iterator[dict]:
    """Progress updates until the job ends (preview image every ~poll seconds), then the result."""
    last_text = None
    last_preview_step = -10**9
    every = int(app.opts.get("show_progress_every_n_steps"))
    while not job.done_event.wait(poll):
        upd = {}
        text = progress_html(job, app.queue.position(job), prefix)
        if text != last_text:
            upd["progress"] = last_text = text
        step = job.control.step
        if job.status == "running" and every > 0 and step > 0 and step - last_preview_step >= every:
            img = app.preview_image(job)
            if img is not None:
                upd["gallery"] = [img]
                last_preview_step = step
        if upd:
            yield upd
    if final:
        yield final_updates(job)


# ---------------------------------------------------------------------------
# the controls shared by txt2img and img2img


class GenTab:
    """The controls of one generation tab, by name (`c`) and the request fields (`fields`)."""

    def __init__(self, app, name: str):
        self.app = app
        self.name = name
        self.c: dict[str, Any] = {}
        self.fields: dict[str, Any] = {}

    def _id(self, suffix: str) -> str:
        return f"{self.name}_{suffix}"

    def add(self, key: str, comp, field: bool = False):
        self.c[key] = comp
        if field:
            self.fields[key] = comp
        return comp

    # -- prompt area -----------------------------------------------------------
    def build_prompts(self) -> None:
        app = self.app
        with gr.Row(elem_id=self._id("toprow"), elem_classes=["sdw-toprow"]):
            with gr.Column(scale=6, elem_classes=["sdw-prompts"]):
                with gr.Group(elem_classes=["sdw-prompt-wrap"]):
                    self.add("prompt", gr.Textbox(
                        label=fields.label("prompt"), elem_id=self._id("prompt"), lines=3, max_lines=20,
                        show_label=False,
                        placeholder="Prompt\n(Press Ctrl+Enter to generate, Alt+Enter to skip, Esc to interrupt)"),
                        field=True)
                    self.add("prompt_counter", gr.HTML(token_counter_html(app, ""), elem_id=self._id("token_counter"),
                                                       elem_classes=["sdw-counter"], js_on_load=None))
                with gr.Group(elem_classes=["sdw-prompt-wrap"]):
                    self.add("negative_prompt", gr.Textbox(
                        label=fields.label("negative_prompt"), elem_id=self._id("neg_prompt"), lines=2, max_lines=20,
                        show_label=False,
                        placeholder="Negative prompt\n(Press Ctrl+Enter to generate, Alt+Enter to skip, Esc to interrupt)"),
                        field=True)
                    self.add("negative_counter", gr.HTML(token_counter_html(app, ""),
                                                         elem_id=self._id("negative_token_counter"),
                                                         elem_classes=["sdw-counter"], js_on_load=None))
            with gr.Column(scale=2, min_width=260, elem_classes=["sdw-actions"]):
                with gr.Row(elem_classes=["sdw-generate-row"]):
                    self.add("interrupt", gr.Button("Interrupt", elem_id=self._id("interrupt"), variant="stop",
                                                    size="sm", scale=1, min_width=80))
                    self.add("skip", gr.Button("Skip", elem_id=self._id("skip"), size="sm", scale=1, min_width=80))
                self.add("generate", gr.Button("Generate", elem_id=self._id("generate"), variant="primary"))
                with gr.Row(elem_classes=["sdw-styles-row"]):
                    self.add("styles", gr.Dropdown(
                        label=fields.label("styles"), choices=app.styles.names(), value=[], multiselect=True,
                        elem_id=self._id("styles"), scale=4, min_width=120, elem_classes=["no-translate"]), field=True)
                    self.add("apply_styles", tool_button(APPLY_STYLE, self._id("style_apply")))
                with gr.Row(elem_classes=["sdw-styles-row"]):
                    self.add("style_name", gr.Textbox(label="Style name", placeholder="Style name", show_label=False,
                                                      container=False, elem_id=self._id("style_name"), scale=4,
                                                      min_width=120, max_lines=1))
                    self.add("save_style", tool_button(SAVE_STYLE, self._id("style_create")))
                self.add("override_settings", gr.Dropdown(
                    label=fields.label("override_settings"), choices=[], value=[], multiselect=True,
                    allow_custom_value=True,
                    elem_id=self._id("override_settings"), visible=False), field=True)

    # -- sampler / size / batch / cfg / seed -----------------------------------------
    def slider(self, name: str, elem_id: str, **kw) -> gr.Slider:
        """The table's slider for field `name` (label, range, step, this tab's start value), a request field."""
        f = fields.FIELDS[name]
        kw.setdefault("value", f.ui_default(self.name))
        return self.add(name, gr.Slider(f.ui.minimum, f.ui.maximum, step=f.ui.step, label=f.ui.label,
                                        elem_id=elem_id, **kw), field=True)

    def radio(self, name: str, elem_id: str) -> gr.Radio:
        """The table's radio buttons for choice field `name` (the value is the index)."""
        f = fields.FIELDS[name]
        return self.add(name, gr.Radio(label=f.ui.label, choices=list(f.choices), value=f.label_of(f.default),
                                       type="index", elem_id=elem_id), field=True)

    def number(self, name: str, elem_id: str, **kw) -> gr.Number:
        """A whole-number box for field `name` (the seeds)."""
        return self.add(name, gr.Number(label=fields.label(name), value=fields.FIELDS[name].default, precision=0,
                                        elem_id=elem_id, **kw), field=True)

    def build_sampler(self) -> None:
        names = samplers.sampler_names()
        default = ui_default(self.app, "sampler_name", self.name)
        default = default if default in names else (names[0] if names else None)
        sched = samplers.schedule_type_labels()
        default_sched = ui_default(self.app, "scheduler", self.name)
        default_sched = default_sched if default_sched in sched else fields.FIELDS["scheduler"].default
        with gr.Row(elem_id=self._id("sampler_row")):
            self.add("sampler_name", gr.Dropdown(label=fields.label("sampler_name"), choices=names, value=default,
                                                 elem_id=self._id("sampling")), field=True)
            self.add("scheduler", gr.Dropdown(label=fields.label("scheduler"), choices=sched, value=default_sched,
                                              elem_id=self._id("scheduler")), field=True)
            self.slider("steps", self._id("steps"))

    def build_size(self, native: int) -> None:
        with gr.Column(elem_id=self._id("dimensions_col"), scale=4):
            self.slider("width", self._id("width"), value=native)
            self.slider("height", self._id("height"), value=native)
        with gr.Column(elem_id=self._id("dimensions_row"), scale=0, min_width=48, elem_classes=["sdw-tool-col"]):
            self.add("swap_size", tool_button(SWAP, self._id("res_switch_btn")))

    def build_batch(self) -> None:
        with gr.Column(elem_id=self._id("column_batch"), scale=2, min_width=160):
            self.slider("n_iter", self._id("batch_count"))
            self.slider("batch_size", self._id("batch_size"))

    def build_cfg(self) -> None:
        self.slider("cfg_scale", self._id("cfg_scale"))

    def build_seed(self) -> None:
        with gr.Row(elem_id=self._id("seed_row")):
            self.number("seed", self._id("seed"), scale=4, min_width=100)
            self.add("random_seed", tool_button(RANDOM, self._id("random_seed")))
            self.add("reuse_seed", tool_button(REUSE, self._id("reuse_seed")))
            self.add("seed_extra", gr.Checkbox(label="Extra", value=False, elem_id=self._id("subseed_show"),
                                               scale=0, min_width=80), field=True)
        with gr.Group(visible=False, elem_id=self._id("seed_extras")) as extras:
            with gr.Row():
                self.number("subseed", self._id("subseed"), scale=4, min_width=100)
                self.add("random_subseed", tool_button(RANDOM, self._id("random_subseed")))
                self.add("reuse_subseed", tool_button(REUSE, self._id("reuse_subseed")))
                self.slider("subseed_strength", self._id("subseed_strength"), scale=4)
            with gr.Row():
                self.slider("seed_resize_from_w", self._id("seed_resize_from_w"))
                self.slider("seed_resize_from_h", self._id("seed_resize_from_h"))
        self.c["seed_extras"] = extras

    # -- results -----------------------------------------------------------------------
    def build_results(self, send_buttons: bool = True) -> None:
        with gr.Column(elem_id=self._id("results"), scale=1, min_width=360):
            self.add("progress", gr.HTML("", elem_id=self._id("progress"), elem_classes=["sdw-progress-box"],
                                         js_on_load=None))
            self.add("gallery", gr.Gallery(label="Output", show_label=False, elem_id=self._id("gallery"), columns=4,
                                           height=520, format="png", type="pil", object_fit="contain", elem_classes=["no-translate", "sdw-output-gallery"],
                                           interactive=False, buttons=["download", "fullscreen"]))
            with gr.Row(elem_id=self._id("image_buttons"), elem_classes=["sdw-image-buttons"]):
                self.add("open_folder", tool_button(FOLDER, self._id("open_folder")))
                self.add("save", gr.Button("Save", elem_id=self._id("save"), size="sm", min_width=60))
                if send_buttons:
                    self.add("send_img2img", gr.Button("Send to img2img", elem_id=self._id("send_to_img2img"),
                                                       size="sm", min_width=100))
                    self.add("send_inpaint", gr.Button("Send to inpaint", elem_id=self._id("send_to_inpaint"),
                                                       size="sm", min_width=100))
                    self.add("send_extras", gr.Button("Send to extras", elem_id=self._id("send_to_extras"),
                                                      size="sm", min_width=100))
            self.add("save_result", gr.HTML("", elem_id=self._id("save_result"), js_on_load=None,
                                            elem_classes=["no-translate"]))
            self.add("info", gr.HTML("", elem_id=self._id("generation_info"), elem_classes=["sdw-generation-info", "no-translate"],
                                     js_on_load=None))
        self.add("job_id", gr.State(""))
        self.add("result", gr.State({}))
        self.add("browser_job", gr.BrowserState("", storage_key=f"sdwebui_{self.name}_job", secret=JOB_SECRET))

    # -- wiring ------------------------------------------------------------------------
    def outputs(self, *names: str) -> list:
        return [self.c[n] for n in names]

    def to_components(self, upd: dict) -> dict:
        out = {self.c[k]: v for k, v in upd.items() if k in self.c}
        return out or {self.c["progress"]: gr.skip()}  # gradio wants at least one output in a dict

    def wire_common(self, top) -> None:
        """Events inside this tab (the ones that reach other tabs are wired in modules.ui)."""
        app, c = self.app, self.c
        for box, counter in (("prompt", "prompt_counter"), ("negative_prompt", "negative_counter")):
            c[box].change(lambda text: token_counter_html(app, text), inputs=[c[box]], outputs=[c[counter]],
                          queue=False, show_progress="hidden", trigger_mode="always_last", api_visibility="private")

        c["apply_styles"].click(lambda p, n, s: apply_styles(app, p, n, s), inputs=self.outputs(
            "prompt", "negative_prompt", "styles"), outputs=self.outputs("prompt", "negative_prompt", "styles"),
            queue=False, show_progress="hidden", api_visibility="private")

        def save_style_fn(name, prompt, negative):
            msg = save_style(app, name, prompt, negative)
            names = app.styles.names()
            return gr.update(choices=names), msg
        c["save_style"].click(save_style_fn, inputs=self.outputs("style_name", "prompt", "negative_prompt"),
                              outputs=[c["styles"], c["save_result"]], queue=False, show_progress="hidden",
                              api_visibility="private")

        c["swap_size"].click(lambda w, h: (h, w), inputs=self.outputs("width", "height"),
                             outputs=self.outputs("width", "height"), queue=False, show_progress="hidden",
                             api_visibility="private")
        c["random_seed"].click(lambda: -1, outputs=[c["seed"]], queue=False, show_progress="hidden",
                               api_visibility="private")
        c["random_subseed"].click(lambda: -1, outputs=[c["subseed"]], queue=False, show_progress="hidden",
                                  api_visibility="private")
        c["reuse_seed"].click(lambda st: reuse_seed(st, "seeds"), inputs=[c["result"]], outputs=[c["seed"]],
                              queue=False, show_progress="hidden", api_visibility="private")
        c["reuse_subseed"].click(lambda st: reuse_seed(st, "subseeds"), inputs=[c["result"]],
                                 outputs=[c["subseed"]], queue=False, show_progress="hidden", api_visibility="private")
        c["seed_extra"].change(lambda on: gr.update(visible=bool(on)), inputs=[c["seed_extra"]],
                               outputs=[c["seed_extras"]], queue=False, show_progress="hidden",
                               api_visibility="private")
        c["override_settings"].change(lambda v: gr.update(visible=bool(v)), inputs=[c["override_settings"]],
                                      outputs=[c["override_settings"]], queue=False, show_progress="hidden",
                                      api_visibility="private")

        def on_select(state, evt: gr.SelectData):
            state = dict(state or {})
            state["index"] = int(evt.index) if isinstance(evt.index, int) else 0
            return state, result_info_html(state)
        c["gallery"].select(on_select, inputs=[c["result"]], outputs=[c["result"], c["info"]], queue=False,
                            show_progress="hidden", api_visibility="private")

        c["interrupt"].click(lambda jid: None if interrupt_job(app, jid) else None, inputs=[c["job_id"]],
                             queue=False, show_progress="hidden", api_visibility="private")
        c["skip"].click(lambda jid: None if skip_job(app, jid) else None, inputs=[c["job_id"]], queue=False,
                        show_progress="hidden", api_visibility="private")
        c["save"].click(lambda st, gal: save_selected(app, st, gal), inputs=[c["result"], c["gallery"]],
                        outputs=[c["save_result"]], show_progress="hidden", api_visibility="private")
        c["open_folder"].click(lambda: open_folder_message(app, self.name), outputs=[c["save_result"]],
                               queue=False, show_progress="hidden", api_visibility="private")

    def wire_generate(self, top, generator: Callable[..., Iterator[dict]]) -> None:
        """Generate: run `generator(values, checkpoint, vae)` and stream its updates into the page."""
        c = self.c
        names = list(self.fields)
        outs = self.outputs("gallery", "progress", "info", "job_id", "browser_job", "result", "save_result")

        def handler(checkpoint, vae, *values):
            for upd in generator(dict(zip(names, values)), checkpoint, vae):
                yield self.to_components(upd)

        c["generate"].click(handler, inputs=[top["checkpoint"], top["vae"], *self.fields.values()], outputs=outs,
                            api_name=self.name, show_progress="hidden", concurrency_limit=None)

        def reconnect_handler(job_id):
            for upd in reconnect(self.app, job_id):
                yield self.to_components(upd)
        self.reconnect_args = dict(fn=reconnect_handler, inputs=[c["browser_job"]], outputs=outs,
                                   show_progress="hidden", api_visibility="private", concurrency_limit=None)


# ---------------------------------------------------------------------------
# the handlers' work (plain functions: tests call them)


def submit_and_follow(app, req: GenerationRequest, checkpoint, vae) -> Iterator[dict]:
    from modules import sd_models

    try:
        job = app.submit(req, checkpoint=checkpoint or None, vae=vae or None, source="ui")
    except (RequestError, sd_models.ModelLoadError, ValueError) as e:
        gr.Warning(str(e))
        yield {"progress": error_html(f"Error: {e}")}
        return
    except Exception as e:  # noqa: BLE001 - e.g. the queue is full
        gr.Warning(str(e))
        yield {"progress": error_html(f"Error: {e}")}
        return
    yield {"job_id": job.id, "browser_job": job.id, "progress": progress_html(job, app.queue.position(job)),
           "save_result": ""}
    yield from follow_job(app, job)


def reconnect(app, job_id: str | None) -> Iterator[dict]:
    """After a page reload: follow the job this browser started last (or show its result)."""
    from modules.jobs import JobNotFound

    if not job_id:
        yield {}
        return
    try:
        job = app.queue.get(str(job_id))
    except (JobNotFound, ValueError, OSError):
        yield {"browser_job": ""}
        return
    yield {"job_id": job.id}
    if job.done_event.is_set():
        yield final_updates(job, toast=False)   # shown again on every reload: no toast for an old failure
    else:
        yield from follow_job(app, job)


def interrupt_job(app, job_id: str) -> bool:
    return bool(job_id) and app.queue.interrupt(job_id)


def skip_job(app, job_id: str) -> bool:
    return bool(job_id) and app.queue.skip(job_id)


def reuse_seed(state: dict, key: str = "seeds"):
    if not state or not state.get(key):
        return gr.skip()
    seeds = state[key]
    return int(seeds[min(image_index(state, state.get("index", 0)), len(seeds) - 1)])


def apply_styles(app, prompt: str, negative: str, names: list[str]):
    """Merge the selected styles into the prompt boxes and clear the selection."""
    p, n = app.styles.apply(prompt or "", negative or "", list(names or []))
    return p, n, []


def save_style(app, name: str, prompt: str, negative: str) -> str:
    try:
        app.styles.save_style(name or "", prompt or "", negative or "")
    except ValueError as e:
        gr.Warning(str(e))
        return error_html(str(e))
    return message_html(f"Saved style '{name.strip()}'.")


def resolve_dir(app, path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() else app.paths.data_dir / p


def output_folder(app, tabname: str) -> Path:
    opts = app.opts
    if opts.get("outdir_samples"):
        return resolve_dir(app, opts.get("outdir_samples"))
    key = "outdir_img2img_samples" if tabname == "img2img" else "outdir_txt2img_samples"
    return resolve_dir(app, opts.get(key))


def open_folder_message(app, tabname: str) -> str:
    folder = output_folder(app, tabname)
    return message_html(f"Output folder: {folder}")


def _unique(path: Path) -> Path:
    if not path.exists():
        return path
    for i in range(1, 100000):
        cand = path.with_name(f"{path.stem}-{i}{path.suffix}")
        if not cand.exists():
            return cand
    raise OSError(f"no free file name for {path}")


def save_png(im: Image.Image, path: Path, infotext: str | None) -> Path:
    from PIL.PngImagePlugin import PngInfo

    path.parent.mkdir(parents=True, exist_ok=True)
    meta = None
    if infotext:
        meta = PngInfo()
        meta.add_text("parameters", infotext)
    im.save(path, format="PNG", pnginfo=meta)
    return path


def save_selected(app, state: dict, gallery) -> str:
    """The Save button: copy the selected image into opts outdir_save; returns a message with the path."""
    if not state or not (state.get("files") or gallery):
        return error_html("Nothing to save: generate an image first.")
    outdir = resolve_dir(app, app.opts.get("outdir_save"))
    gi = int(state.get("index", 0))
    idx = image_index(state, gi)
    files = state.get("files") or []
    try:
        if not (state.get("grid") and gi == 0) and idx < len(files) and Path(files[idx]).is_file():
            src = Path(files[idx])
            dst = _unique(outdir / src.name)
            outdir.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
        else:
            items = gallery or []
            if gi >= len(items):
                return error_html("Nothing to save: generate an image first.")
            im = items[gi][0] if isinstance(items[gi], (tuple, list)) else items[gi]
            if not isinstance(im, Image.Image):
                im = Image.open(im)
            seeds = state.get("seeds") or [0]
            dst = save_png(im, _unique(outdir / f"{time.strftime('%Y%m%d-%H%M%S')}-{seeds[min(idx, len(seeds) - 1)]}.png"),
                           selected_infotext(state))
    except OSError as e:
        return error_html(f"Could not save: {e}")
    return message_html(f"Saved: {dst}")


def selected_image(state: dict, gallery) -> Image.Image | None:
    """The image selected in a result gallery (a PIL image), or None."""
    items = gallery or []
    if not items:
        return None
    gi = int((state or {}).get("index", 0))
    gi = min(max(gi, 0), len(items) - 1)
    item = items[gi]
    im = item[0] if isinstance(item, (tuple, list)) else item
    if isinstance(im, (str, Path)):
        im = Image.open(im)
    return im


# ---------------------------------------------------------------------------
# pasting parameters (PNG Info, Send to ...)


def _num(value, cast):
    try:
        return cast(float(value)) if cast is int else cast(value)
    except (TypeError, ValueError):
        return None


def _control_value(name: str, value: Any, app=None) -> Any:
    """A pasted field value as its control shows it (None: the control has no such choice)."""
    f = fields.FIELDS[name]
    if f.choices is not None:
        return f.label_of(value)
    if name == "sampler_name":
        found = samplers.find_sampler(value)
        return found.name if found is not None else None
    if name == "scheduler":
        found = samplers.find_schedule_type(value)
        return found.label if found is not None else None
    if name == "hr_upscaler":   # an installed model by its name (or its file's name, as A1111's recipes write it)
        if value in upscalers.names():
            return value
        library = getattr(app, "upscalers", None)
        try:
            found = library.resolve(value) if library is not None else None
        except upscalers.UpscalerError:
            return None
        return found.name if found is not None else None
    return value


def paste_updates(app, tab: GenTab, params: dict, send_seed: bool = True) -> dict:
    """Field name -> new value for every field of `tab` that the parsed infotext names (the table's paste,
    then each control's own form of the value), and the settings it names as "Override settings"."""
    values = fields.from_infotext(params)
    if not send_seed:
        for name in ("seed", *SEED_EXTRA_FIELDS):
            values.pop(name, None)
    out: dict[str, Any] = {}
    for name, value in values.items():
        shown = _control_value(name, value, app) if name in tab.c else None
        if shown is not None:
            out[name] = shown
    if any(name in out for name in SEED_EXTRA_FIELDS):
        out["seed_extra"] = True
    out["override_settings"] = pasted_overrides(app, params)
    if "script_name" in tab.c:  # the script an infotext names ("Script: X/Y/Z plot") and script arguments
        from modules.ui import scripts_ui
        out.update(scripts_ui.paste_updates(app, tab, params))
    return out


def pasted_overrides(app, params: dict) -> list[str]:
    """The settings an infotext names that differ from the current ones, as "Override settings" items."""
    overrides = []
    keys = {setting: key for key, setting in infotext.SETTING_KEYS.items()}
    for setting, raw in infotext.settings_from_params(params).items():
        try:
            value = app.opts.validate(setting, _num(raw, int) if isinstance(app.opts.get(setting), int) else raw)
        except ValueError:
            continue
        if value != app.opts.get(setting):
            overrides.append(f"{keys[setting]}: {value}")
    return overrides


def paste_to_components(tab: GenTab, updates: dict) -> dict:
    """Gradio updates for paste_updates(): dropdown choices kept in sync, hidden groups shown."""
    res = {}
    for k, v in updates.items():
        comp = tab.c.get(k)
        if comp is None:
            continue
        if k == "override_settings":
            res[comp] = gr.update(choices=v, value=v, visible=bool(v))
        else:
            res[comp] = v
    if updates.get("seed_extra"):
        res[tab.c["seed_extras"]] = gr.update(visible=True)
    if "enable_hr" in updates and "hr_accordion" in tab.c:
        res[tab.c["hr_accordion"]] = gr.update(open=bool(updates["enable_hr"]))
    if "script_name" in tab.c:
        from modules.ui import scripts_ui
        res.update(scripts_ui.paste_group_updates(tab, updates))
    return res


def paste_targets(tab: GenTab) -> list:
    """Every component paste_to_components() may update."""
    names = ["prompt", "negative_prompt", "steps", "cfg_scale", "seed", "width", "height", "batch_size",
             "denoising_strength", "sampler_name", "scheduler", "subseed", "subseed_strength", "seed_resize_from_w",
             "seed_resize_from_h", "seed_extra", "seed_extras", "enable_hr", "hr_scale", "hr_second_pass_steps",
             "hr_upscaler", "hr_resize_x", "hr_resize_y", "hr_accordion", "mask_blur", "inpainting_mask_invert",
             "inpainting_fill", "inpaint_full_res", "inpaint_full_res_padding", "override_settings"]
    from modules.ui import scripts_ui
    return [tab.c[n] for n in names if n in tab.c] + (scripts_ui.paste_targets(tab) if "script_name" in tab.c else [])
