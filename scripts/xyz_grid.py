"""A1111's "X/Y/Z plot": one job per combination of the values of up to three axes (a field, a setting, a
prompt change), drawn as a grid per Z value with the values as labels, and the grid of those grids.

The axes are A1111's, in its order for each tab (the API's type indices are A1111's); the ones this web
UI cannot act on keep their place and are refused when picked.  One axis of ours comes last: "Settings",
values ``key=value`` (several joined by ``;``) with a setting of modules/options.py, for each cell's
override_settings.  Values are A1111's: a comma list (csv quoting), int and float ranges ``1-5``,
``1-10 (+2)``, ``10-20 [5]`` (a count), all checked before the first picture is made.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import itertools
import os
import random
import re
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from PIL import Image

from modules import grid_labels, images, infotext, rng, samplers, upscalers
from modules.engine import GenerationResult, RequestError, validate
from modules.grid_labels import Label
from modules.scripts import Arg, Script, finish_result

TITLE = "X/Y/Z plot"
MAX_GRID_MP = 200          # A1111's "Maximum grid size" (img_max_size_mp) default, in megapixels
SEED_AXES = ("Seed", "Var. seed")
HIRES_AXES = ("Hires steps", "Hires upscaler")


def permutations(values):
    """The type of "Prompt order": every order of the values."""
    return values


# ---------------------------------------------------------------------------
# values


def csv_values(text: str) -> list[str]:
    """A1111's value list: csv (quoted entries may hold commas), one row per line, each entry stripped."""
    rows = csv.reader(io.StringIO(text or ""), skipinitialspace=True)
    return [v.strip() for v in itertools.chain.from_iterable(rows)]


def csv_string(values: list) -> str:
    with io.StringIO() as out:
        csv.writer(out).writerow(values)
        return out.getvalue().strip()


_INT = r"([+-]?\s*\d+)"
_FLOAT = r"([+-]?\s*\d+(?:\.\d*)?)"
RE_INT_STEP = re.compile(rf"\s*{_INT}\s*-\s*{_INT}(?:\s*\(([+-]\d+)\s*\))?\s*")
RE_INT_COUNT = re.compile(rf"\s*{_INT}\s*-\s*{_INT}(?:\s*\[(\d+)\s*\])?\s*")
RE_FLOAT_STEP = re.compile(rf"\s*{_FLOAT}\s*-\s*{_FLOAT}(?:\s*\(([+-]\d+(?:\.\d*)?)\s*\))?\s*")
RE_FLOAT_COUNT = re.compile(rf"\s*{_FLOAT}\s*-\s*{_FLOAT}(?:\s*\[(\d+)\s*\])?\s*")


def _n(text: str) -> str:
    return text.replace(" ", "")


def _int_range(value: str) -> list | None:
    m = RE_INT_STEP.fullmatch(value)
    if m is not None:
        step = int(m[3]) if m[3] is not None else 1
        if step == 0:
            raise ValueError(f"the range {value!r} has a step of 0")
        return list(range(int(_n(m[1])), int(_n(m[2])) + 1, step))
    m = RE_INT_COUNT.fullmatch(value)
    if m is not None:
        num = int(m[3]) if m[3] is not None else 1
        return [int(x) for x in np.linspace(int(_n(m[1])), int(_n(m[2])), num).tolist()]
    return None


def _float_range(value: str) -> list | None:
    m = RE_FLOAT_STEP.fullmatch(value)
    if m is not None:
        start, end = float(_n(m[1])), float(_n(m[2]))
        step = float(m[3]) if m[3] is not None else 1.0
        if step == 0:
            raise ValueError(f"the range {value!r} has a step of 0")
        return np.arange(start, end + step, step).tolist()
    m = RE_FLOAT_COUNT.fullmatch(value)
    if m is not None:
        num = int(m[3]) if m[3] is not None else 1
        return np.linspace(float(_n(m[1])), float(_n(m[2])), num).tolist()
    return None


def parse_values(kind, values: list[str]) -> list:
    """An axis's values from its list as written: ranges expanded (int, float), each value converted,
    or every order of them (Prompt order). ValueError naming the value that is not of the kind."""
    if kind is permutations:
        return list(itertools.permutations(values))
    expand = {int: _int_range, float: _float_range}.get(kind)
    out: list = []
    for v in values:
        got = expand(v) if expand is not None and isinstance(v, str) else None
        out.extend(got if got is not None else [v])
    try:
        return [kind(v) for v in out]
    except ValueError:
        bad = next(v for v in out if not _converts(kind, v))
        raise ValueError(f"{bad!r} is not {'a whole number' if kind is int else 'a number'}") from None


def _converts(kind, v) -> bool:
    try:
        kind(v)
        return True
    except ValueError:
        return False


# ---------------------------------------------------------------------------
# axes


@dataclass
class Cell:
    """One cell's job as the axes build it: its request, and the checkpoint and VAE it runs on."""
    job: Any
    req: Any
    checkpoint: str | None = None
    vae: str | None = None


def apply_field(name: str):
    def apply(cell: Cell, x, xs):
        setattr(cell.req, name, x)
    return apply


def apply_override(key: str):
    def apply(cell: Cell, x, xs):
        cell.req.override_settings[key] = x
    return apply


def apply_prompt(cell: Cell, x, xs):
    cell.req.prompt = cell.req.prompt.replace(xs[0], x)
    cell.req.negative_prompt = cell.req.negative_prompt.replace(xs[0], x)


def confirm_prompt(job, xs):
    req = job.request
    if xs and xs[0] not in req.prompt and xs[0] not in req.negative_prompt:
        raise ValueError(f"Prompt S/R did not find {xs[0]} in prompt or negative prompt.")


def apply_order(cell: Cell, x, xs):
    """The tokens ``x`` put into the prompt's places of those tokens, in the order of ``x``."""
    prompt = cell.req.prompt
    found = sorted((prompt.find(token), token) for token in x)
    parts = []
    for _, token in found:
        n = prompt.find(token)
        parts.append(prompt[:n])
        prompt = prompt[n + len(token):]
    cell.req.prompt = "".join(part + token for part, token in zip(parts, x)) + prompt


def confirm_order(job, xs):
    for token in (xs[0] if xs else ()):
        if token not in job.request.prompt:
            raise ValueError(f"Prompt order did not find {token} in the prompt")


def confirm_samplers(job, xs):
    for x in xs:
        try:
            samplers.resolve_sampler(x)
        except ValueError:
            raise ValueError(f"Unknown sampler: {x}") from None


def confirm_schedules(job, xs):
    for x in xs:
        if samplers.find_schedule_type(x) is None:
            raise ValueError(f"Unknown schedule type: {x}; they are {', '.join(samplers.schedule_type_labels())}")


def confirm_upscalers(job, xs):
    for x in xs:
        if x not in upscalers.names():
            raise ValueError(f"Unknown upscaler: {x}; they are {', '.join(upscalers.names())}")


def apply_checkpoint(cell: Cell, x, xs):
    cell.checkpoint = cell.job.find_checkpoint(x)


def confirm_checkpoints(job, xs):
    for x in xs:
        job.find_checkpoint(x)


def find_vae(job, name: str) -> str:
    """A1111's VAE by name: auto/automatic, none, or a listed VAE (case-insensitive)."""
    low = name.strip().lower()
    if low in ("auto", "automatic"):
        return "Automatic"
    for v in job.vaes():
        if v.lower() == low:
            return v
    raise ValueError(f"Unknown VAE: {name}; they are {', '.join(job.vaes())}")


def apply_vae(cell: Cell, x, xs):
    cell.vae = find_vae(cell.job, x)


def confirm_vaes(job, xs):
    for x in xs:
        find_vae(job, x)


def _style_names(x: str) -> list[str]:
    return [s.strip() for s in x.split(",") if s.strip()]


def apply_styles(cell: Cell, x, xs):
    cell.req.styles = [*cell.req.styles, *_style_names(x)]


def confirm_styles(job, xs):
    known = job.app.styles.styles if job.app is not None else {}
    for x in xs:
        for name in _style_names(x):
            if name not in known:
                raise ValueError(f"Unknown style: {name}; the styles are {', '.join(known) or 'none'}")


def parse_size(x: str) -> tuple[int, int]:
    w, sep, h = x.lower().partition("x")
    try:
        return int(w.strip()), int(h.strip())
    except ValueError:
        raise ValueError(f"Invalid size {x!r}: write it as WIDTHxHEIGHT, e.g. 512x768") from None


def apply_size(cell: Cell, x, xs):
    cell.req.width, cell.req.height = parse_size(x)


def confirm_sizes(job, xs):
    for x in xs:
        parse_size(x)


def confirm_option(key: str):
    def confirm(job, xs):
        for x in xs:
            job.app.opts.validate(key, x)
    return confirm


def parse_settings(job, x: str) -> dict:
    """``key=value; key=value`` -> {setting: value of the setting's type} (ValueError naming a bad one)."""
    out = {}
    for part in x.split(";"):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in job.app.opts.infos:
            raise ValueError(f"{part.strip()!r} is not key=value with a setting key (e.g. eta_ddim=0.5; the keys "
                             f"are those of the settings, as in config.json)")
        out[key] = job.app.opts.validate(key, value.strip())
    return out


def apply_settings(cell: Cell, x, xs):
    values = parse_settings(cell.job, x)
    cell.req.override_settings.update(values)
    if values.get("sd_model_checkpoint"):
        cell.checkpoint = cell.job.find_checkpoint(values["sd_model_checkpoint"])
    if values.get("sd_vae"):
        cell.vae = find_vae(cell.job, values["sd_vae"])


def confirm_settings(job, xs):
    for x in xs:
        values = parse_settings(job, x)
        if values.get("sd_model_checkpoint"):
            job.find_checkpoint(values["sd_model_checkpoint"])
        if values.get("sd_vae"):
            find_vae(job, values["sd_vae"])


def _checkpoint_choices(app):
    return sorted(app.models.checkpoints, key=str.casefold) if app is not None else []


@dataclass(frozen=True)
class Axis:
    """One axis type (A1111's AxisOption): how a value is read, checked, applied and labelled.

    ``fmt``: the label of a value: "label" (``Steps: 20``), "value", "join" (a list), "path" (the file
    name), "nothing".  ``tab``: only on txt2img or img2img.  ``refused``: why this web UI cannot act on it.
    """
    label: str
    kind: Any = str
    apply: Callable | None = None
    fmt: str = "label"
    confirm: Callable | None = None
    cost: float = 0.0
    choices: Callable | None = None
    tab: str | None = None
    refused: str = ""

    def format(self, x) -> str:
        if isinstance(x, float):
            x = round(x, 8)
        if self.fmt == "nothing":
            return ""
        if self.fmt == "value":
            return str(x)
        if self.fmt == "join":
            return ", ".join(x)
        if self.fmt == "path":
            return os.path.basename(x)
        return f"{self.label}: {x}"


def _no(label: str, kind, why: str, tab: str | None = None) -> Axis:
    return Axis(label, kind, refused=why, tab=tab)


_SIGMAS = "the samplers here have no such parameter"
_SCHEDULE = "the schedules here use the model's own sigmas"

AXES = [
    Axis("Nothing", str, lambda cell, x, xs: None, fmt="nothing"),
    Axis("Seed", int, apply_field("seed")),
    Axis("Var. seed", int, apply_field("subseed")),
    Axis("Var. strength", float, apply_field("subseed_strength")),
    Axis("Steps", int, apply_field("steps")),
    Axis("Hires steps", int, apply_field("hr_second_pass_steps"), tab="txt2img"),
    Axis("CFG Scale", float, apply_field("cfg_scale")),
    _no("Image CFG Scale", float, "there are no instruct-pix2pix models here", tab="img2img"),
    Axis("Prompt S/R", str, apply_prompt, fmt="value", confirm=confirm_prompt),
    Axis("Prompt order", permutations, apply_order, fmt="join", confirm=confirm_order),
    Axis("Sampler", str, apply_field("sampler_name"), fmt="value", confirm=confirm_samplers,
         choices=lambda app: samplers.sampler_names(), tab="txt2img"),
    _no("Hires sampler", str, "the hires pass uses the sampler of the first pass", tab="txt2img"),
    Axis("Sampler", str, apply_field("sampler_name"), fmt="value", confirm=confirm_samplers,
         choices=lambda app: samplers.sampler_names(), tab="img2img"),
    Axis("Checkpoint name", str, apply_checkpoint, fmt="path", confirm=confirm_checkpoints, cost=1.0,
         choices=_checkpoint_choices),
    _no("Negative Guidance minimum sigma", float, _SIGMAS),
    _no("Sigma Churn", float, _SIGMAS),
    _no("Sigma min", float, _SIGMAS),
    _no("Sigma max", float, _SIGMAS),
    _no("Sigma noise", float, _SIGMAS),
    Axis("Schedule type", str, apply_field("scheduler"), confirm=confirm_schedules,
         choices=lambda app: samplers.schedule_type_labels()),
    _no("Schedule min sigma", float, _SCHEDULE),
    _no("Schedule max sigma", float, _SCHEDULE),
    _no("Schedule rho", float, _SCHEDULE),
    _no("Beta schedule alpha", float, _SCHEDULE),
    _no("Beta schedule beta", float, _SCHEDULE),
    Axis("Eta", float, apply_field("eta")),
    Axis("Clip skip", int, apply_field("clip_skip")),
    Axis("Denoising", float, apply_field("denoising_strength")),
    Axis("Initial noise multiplier", float, apply_field("initial_noise_multiplier")),
    _no("Extra noise", float, "there is no img2img extra noise setting here"),
    Axis("Hires upscaler", str, apply_field("hr_upscaler"), confirm=confirm_upscalers,
         choices=lambda app: upscalers.names(), tab="txt2img"),
    _no("Cond. Image Mask Weight", float, "there is no conditioning mask weight here", tab="img2img"),
    Axis("VAE", str, apply_vae, confirm=confirm_vaes, cost=0.7,
         choices=lambda app: app.models.vae_choices() if app is not None else ["Automatic", "None"]),
    Axis("Styles", str, apply_styles, confirm=confirm_styles,
         choices=lambda app: app.styles.names() if app is not None else []),
    _no("UniPC Order", int, "UniPC's order is fixed at 3 here"),
    _no("Face restore", str, "there is no face restoration here"),
    _no("Token merging ratio", float, "there is no token merging here"),
    _no("Token merging ratio high-res", float, "there is no token merging here"),
    _no("Always discard next-to-last sigma", str, "each sampler discards it as A1111's defaults do; no setting"),
    _no("SGM noise multiplier", str, "there is no SGM noise multiplier setting here"),
    _no("Refiner checkpoint", str, "there is no refiner here"),
    _no("Refiner switch at", float, "there is no refiner here"),
    Axis("RNG source", str, apply_override("randn_source"), confirm=confirm_option("randn_source"),
         choices=lambda app: ["GPU", "CPU", "NV"]),
    _no("FP8 mode", str, "weights are not stored in FP8 here"),
    Axis("Size", str, apply_size, confirm=confirm_sizes),
    # ours: any setting by name
    Axis("Settings", str, apply_settings, fmt="value", confirm=confirm_settings, cost=0.5),
]


def axes_for(is_img2img: bool) -> list[Axis]:
    """The axis types of a tab, in A1111's order (the type dropdown's indices)."""
    tab = "img2img" if is_img2img else "txt2img"
    return [a for a in AXES if a.tab in (None, tab)]


def find_axis(label: str, is_img2img: bool) -> Axis:
    for a in axes_for(is_img2img):
        if a.label == label:
            return a
    raise ValueError(f"unknown axis type {label!r}")


def axis_choices(axis: Axis, app) -> list | None:
    """The values a dropdown offers for an axis (None: the axis takes typed values)."""
    return list(axis.choices(app)) if axis.choices is not None else None


def fill_values(app, is_img2img: bool, label: str, csv_mode: bool) -> tuple[str | None, list | None]:
    """A1111's fill button: every choice of an axis, as text in csv mode or as the dropdown's values
    otherwise; (None, None) for an axis without choices (nothing changes)."""
    try:
        choices = axis_choices(find_axis(label, is_img2img), app)
    except ValueError:
        choices = None
    if not choices:
        return None, None
    return (csv_string(choices), None) if csv_mode else (None, choices)


def select_axis(app, is_img2img: bool, label: str, text: str, picked: list, csv_mode: bool):
    """A1111's switch between the text box and the dropdown of an axis's values: (text shown, text,
    choices or None, dropdown shown, picked); values move across, kept where they are choices."""
    try:
        choices = axis_choices(find_axis(label, is_img2img), app)
    except ValueError:
        choices = None
    if choices is None:
        return True, text, None, False, picked
    if csv_mode and picked:
        text, picked = csv_string([p for p in picked if p in choices]), []
    elif not csv_mode and text:
        text, picked = "", [v for v in csv_values(text) if v in choices]
    return csv_mode, text, choices, not csv_mode, picked


# ---------------------------------------------------------------------------
# the script


@dataclass
class Plan:
    """One axis of a run: its type, the values, the text written into the grid's infotext, the labels."""
    letter: str
    axis: Axis
    values: list
    text: str
    labels: list[str] = field(default_factory=list)


SWAPS = (("x", "y"), ("y", "z"), ("x", "z"))   # A1111's swap buttons, in its order


class XYZPlot(Script):
    title = TITLE
    show = "both"

    def args(self, is_img2img):
        def types(app, img):
            return [a.label for a in axes_for(img)]

        out = []
        for n, default in (("x", "Seed"), ("y", "Nothing"), ("z", "Nothing")):
            u = n.upper()
            out += [Arg(f"{n}_type", f"{u} type", "dropdown", default, choices=types, infotext=f"{u} Type"),
                    Arg(f"{n}_values", f"{u} values", "textbox", "", infotext=f"{u} Values"),
                    Arg(f"{n}_values_dropdown", f"{u} values", "dropdown", [], multiselect=True, visible=False)]
        out += [Arg("draw_legend", "Draw legend", "checkbox", True),
                Arg("include_lone_images", "Include Sub Images", "checkbox", False),
                Arg("include_sub_grids", "Include Sub Grids", "checkbox", False),
                Arg("no_fixed_seeds", "Keep -1 for seeds", "checkbox", False)]
        out += [Arg(f"vary_seeds_{n}", f"Vary seeds for {n.upper()}", "checkbox", False,
                    info=f"Use different seeds for images along {n.upper()} axis.") for n in "xyz"]
        out += [Arg("margin_size", "Grid margins (px)", "slider", 0, 0, 500, 2, whole=True),
                Arg("csv_mode", "Use text inputs instead of dropdowns", "checkbox", False)]
        return out

    def ui_extra(self, tab, comps, is_img2img):
        """A1111's buttons: fill an axis with all its choices (shown for axes that have them), swap axes."""
        import gradio as gr

        from modules.ui.scripts_ui import elem_id

        out = {}
        with gr.Row():
            for n in "xyz":
                out[f"fill_{n}"] = gr.Button(f"Fill {n.upper()} values", size="sm", visible=False,
                                             elem_id=elem_id(tab, self, f"fill_{n}"))
        with gr.Row():
            for a, b in SWAPS:
                out[f"swap_{a}{b}"] = gr.Button(f"Swap {a.upper()}/{b.upper()} axes", size="sm",
                                                elem_id=elem_id(tab, self, f"swap_{a}{b}"))
        return out

    def ui_wire(self, tab, comps, is_img2img):
        import gradio as gr

        app = getattr(tab, "app", None)

        def updates(label, text, picked, csv_mode):
            shown, text, choices, dd_shown, picked = select_axis(app, is_img2img, label, text, picked or [], csv_mode)
            dd = gr.update(visible=dd_shown, value=picked) if choices is None else \
                gr.update(choices=choices, visible=dd_shown, value=picked)
            return gr.update(visible=shown, value=text), dd, gr.update(visible=choices is not None)

        def change(label, text, picked, csv_mode):
            return updates(label, text, picked, csv_mode)[:2]

        def change_with_fill(label, text, picked, csv_mode):
            return updates(label, text, picked, csv_mode)

        def fill(label, csv_mode):
            text, picked = fill_values(app, is_img2img, label, csv_mode)
            return (gr.update() if text is None else gr.update(value=text),
                    gr.update() if picked is None else gr.update(value=picked))

        def swap_values(t1, v1, d1, t2, v2, d2, csv_mode):
            return (*updates(t2, v2, d2, csv_mode)[:2], *updates(t1, v1, d1, csv_mode)[:2])

        def swap_types(t1, t2):
            return t2, t1

        for n in "xyz":
            ins = [comps[f"{n}_type"], comps[f"{n}_values"], comps[f"{n}_values_dropdown"], comps["csv_mode"]]
            fill_button = comps.get(f"fill_{n}")
            outs = ins[1:3] + ([fill_button] if fill_button is not None else [])
            for source in (comps[f"{n}_type"], comps["csv_mode"]):
                source.change(change_with_fill if fill_button is not None else change, inputs=ins, outputs=outs,
                              queue=False, show_progress="hidden")
            if fill_button is not None:
                fill_button.click(fill, inputs=[comps[f"{n}_type"], comps["csv_mode"]], outputs=ins[1:3],
                                  queue=False, show_progress="hidden")
        for a, b in SWAPS:
            button = comps.get(f"swap_{a}{b}")
            if button is None:
                continue
            axes = [comps[f"{n}_{part}"] for n in (a, b) for part in ("type", "values", "values_dropdown")]
            values = [comps[f"{n}_{part}"] for n in (a, b) for part in ("values", "values_dropdown")]
            types = [comps[f"{a}_type"], comps[f"{b}_type"]]
            # the values first, then (a round trip later) the types: setting a type fires its change event,
            # which reads the values and must find them swapped already
            button.click(swap_values, inputs=[*axes, comps["csv_mode"]], outputs=values, queue=False,
                         show_progress="hidden").then(swap_types, inputs=types, outputs=types, queue=False,
                                                      show_progress="hidden")

    # -- run ------------------------------------------------------------------------------------
    def run(self, job, a):
        req = self._copy(job.request)
        if not a.no_fixed_seeds:
            req.seed, req.subseed = rng.fix_seed(req.seed), rng.fix_seed(req.subseed)
        if not job.opts.get("return_grid", True):
            req.batch_size = 1
        try:   # a bad axis value is the request's fault: a RequestError (the API's 422), before any picture
            plans = [self._plan(job, req, n, a) for n in "xyz"]
        except RequestError:
            raise
        except ValueError as e:
            raise RequestError("script_args", str(e)) from None
        xs, ys, zs = (p.values for p in plans)
        mp = round(len(xs) * len(ys) * len(zs) * req.width * req.height / 1_000_000)
        if mp >= MAX_GRID_MP:
            raise RequestError("script_args", f"X/Y/Z plot: the grid would be too large ({mp} megapixels; "
                                              f"at most {MAX_GRID_MP})")
        cells = self._cells(job, req, plans, a)
        job.set_total(len(cells))
        done: dict[int, GenerationResult] = {}
        errors: list[str] = []
        for index, cell in cells:
            if job.interrupted:
                break
            try:
                done[index] = job.process(cell.req, checkpoint=cell.checkpoint, vae=cell.vae)
            except Exception as e:  # noqa: BLE001 - as A1111: the cell stays empty, the plot goes on
                errors.append(f"X/Y/Z plot: the cell {self._where(plans, index)} failed: {type(e).__name__}: {e}")
                job.warn(errors[-1])
        if not any(r.images for r in done.values()):
            if errors and not job.interrupted:
                raise RuntimeError(errors[0])
            return finish_result(job, GenerationResult())
        return finish_result(job, self._result(job, plans, done, a))

    def _plan(self, job, req, n: str, a) -> Plan:
        """An axis's values, parsed and checked (ValueError naming the axis and the value)."""
        u = n.upper()
        axis = find_axis(a[f"{n}_type"], req.is_img2img)
        if axis.label == "Nothing":
            return Plan(u, axis, [0], "", [""])
        if axis.refused:
            raise ValueError(f"X/Y/Z plot: the {u} axis '{axis.label}' is not supported here ({axis.refused})")
        text = a[f"{n}_values"] or ""
        picked = [v for v in a[f"{n}_values_dropdown"] or [] if str(v).strip()]
        if axis.choices is not None and not a.csv_mode and picked:
            text = csv_string(picked)
        try:
            values = parse_values(axis.kind, csv_values(text))
            if not values:
                raise ValueError("no values given")
            if axis.confirm is not None:
                axis.confirm(job, values)
        except ValueError as e:
            raise ValueError(f"X/Y/Z plot: {u} axis '{axis.label}', values {text!r}: {e}") from None
        if axis.label in SEED_AXES and not a.no_fixed_seeds:
            values = [int(random.randrange(4294967294)) if v == -1 else v for v in values]
        if axis.label in HIRES_AXES and not req.enable_hr:
            job.warn(f"X/Y/Z plot: the {u} axis '{axis.label}' does nothing while Hires. fix is off")
        plan = Plan(u, axis, values, text, [axis.format(v) for v in values])
        for v in values:
            self._check(job, req, plan, v)
        return plan

    def _check(self, job, req, plan: Plan, value) -> None:
        """A value applied alone to the request must make a valid request."""
        cell = Cell(job, self._copy(req))
        try:
            plan.axis.apply(cell, value, plan.values)
            validate(cell.req)
        except (RequestError, ValueError) as e:
            raise ValueError(f"X/Y/Z plot: {plan.letter} axis '{plan.axis.label}', value {value!r}: {e}") from None

    @staticmethod
    def _copy(req):
        return dataclasses.replace(req, styles=list(req.styles), override_settings=dict(req.override_settings or {}))

    def _cells(self, job, req, plans: list[Plan], a) -> list[tuple[int, Cell]]:
        """Every cell (index: x fastest, then y, then z), in the order that changes the costly axes least."""
        xs, ys, zs = (p.values for p in plans)
        nx, ny = len(xs), len(ys)
        outer_first = sorted((2, 1, 0), key=lambda i: -plans[i].axis.cost)   # ties: z outermost, as A1111
        out = []
        for combo in itertools.product(*(range(len(plans[i].values)) for i in outer_first)):
            pos = dict(zip(outer_first, combo))
            ix, iy, iz = pos[0], pos[1], pos[2]
            cell = Cell(job, self._copy(req))
            for p, i in zip(plans, (ix, iy, iz)):
                p.axis.apply(cell, p.values[i], p.values)
            self._vary(cell.req, a, ix, iy, iz, nx, ny)
            index = ix + iy * nx + iz * nx * ny
            try:
                validate(cell.req)
            except RequestError as e:
                raise ValueError(f"X/Y/Z plot: the cell {self._where(plans, index)} is not a valid job: {e}") from None
            out.append((index, cell))
        return out

    @staticmethod
    def _vary(req, a, ix, iy, iz, nx, ny) -> None:
        """A1111's "Vary seeds": the seed plus the cell's place along the axes picked (a -1 seed, random in
        every cell already, is kept)."""
        if req.seed == -1:
            return
        xdim = nx if a.vary_seeds_x else 1
        ydim = ny if a.vary_seeds_y else 1
        req.seed += (ix if a.vary_seeds_x else 0) + (iy * xdim if a.vary_seeds_y else 0) \
            + (iz * xdim * ydim if a.vary_seeds_z else 0)

    @staticmethod
    def _where(plans: list[Plan], index: int) -> str:
        nx, ny = len(plans[0].values), len(plans[1].values)
        at = (index % nx, index // nx % ny, index // (nx * ny))
        named = [f"{p.letter}={p.labels[i] or p.values[i]}" for p, i in zip(plans, at) if p.axis.label != "Nothing"]
        return ", ".join(named) or "1"

    # -- the grids --------------------------------------------------------------------------------
    def _result(self, job, plans: list[Plan], done: dict, a) -> GenerationResult:
        xs, ys, zs = (p.values for p in plans)
        per_z = len(xs) * len(ys)
        n = per_z * len(zs)
        first = next(done[i] for i in sorted(done) if done[i].images)
        pics = [_picture(done[i]) if i in done and done[i].images else None for i in range(n)]
        size = next(p.size for p in pics if p is not None)
        cells = [p if p is not None else Image.new("RGB", size) for p in pics]
        subs = [self._sub_grid(cells[iz * per_z:(iz + 1) * per_z], plans, a) for iz in range(len(zs))]
        main = images.image_grid(subs, rows=1)
        if a.draw_legend:
            w, h = (max(s) for s in zip(*(g.size for g in subs)))
            main = grid_labels.annotate(main, w, h, [[Label(t)] for t in plans[2].labels], [[Label("")]])
        refs = [self._reference(done, iz * per_z, per_z) or first for iz in range(len(zs))]
        texts = [_with_params(r.infotexts[0], grid_params(plans, a, False)) for r in refs]
        out = GenerationResult()
        _add(out, main, _with_params(first.infotexts[0], grid_params(plans, a, True)), first)
        saved = [job.save_grid(main, out.infotexts[0], first.seeds[0], first.prompts[0], basename="xyz_grid")]
        if a.include_sub_grids:
            for g, text, r in zip(subs, texts, refs):
                _add(out, g, text, r)
                if len(zs) > 1:
                    saved.append(job.save_grid(g, text, r.seeds[0], r.prompts[0], basename="xyz_grid"))
        grids = len(out.images)
        if a.include_lone_images:
            for i in range(n):
                if pics[i] is not None:
                    _add(out, pics[i], done[i].infotexts[0], done[i])
        out.saved_files = [p for p in saved if p] + [f for i in sorted(done) for f in done[i].saved_files]
        out.info = dict(first.info, index_of_first_image=grids)
        out.interrupted = any(r.interrupted for r in done.values()) or len(done) < n
        return out

    def _sub_grid(self, cells: list[Image.Image], plans: list[Plan], a) -> Image.Image:
        grid = images.image_grid(cells, rows=len(plans[1].values))
        if not a.draw_legend:
            return grid
        w, h = (max(s) for s in zip(*(c.size for c in cells)))
        return grid_labels.annotate(grid, w, h, [[Label(t)] for t in plans[0].labels],
                                    [[Label(t)] for t in plans[1].labels], int(a.margin_size))

    @staticmethod
    def _reference(done: dict, start: int, count: int) -> GenerationResult | None:
        """The cell whose infotext a grid takes: its first (x and y at their first values), else the first made."""
        for i in range(start, start + count):
            if i in done and done[i].images:
                return done[i]
        return None


def _picture(r: GenerationResult) -> Image.Image:
    """What a cell shows: its job's grid where a batch made one that leads the results (A1111's
    Processed.images[0]), else its picture."""
    return r.grid if r.grid is not None and r.grid_first else r.images[0]


def _add(out: GenerationResult, image, text: str, r: GenerationResult) -> None:
    out.images.append(image)
    out.infotexts.append(text)
    out.seeds.append(r.seeds[0])
    out.subseeds.append(r.subseeds[0])
    out.prompts.append(r.prompts[0])
    out.negative_prompts.append(r.negative_prompts[0])


def grid_params(plans: list[Plan], a, with_z: bool) -> dict:
    """A1111's parameters of a grid's infotext: the script, each axis's type and values (and the seeds
    picked for -1 seeds); the Z axis's on the main grid only."""
    out: dict[str, Any] = {"Script": TITLE}
    for p in plans if with_z else plans[:2]:
        if p.axis.label == "Nothing":
            continue
        out[f"{p.letter} Type"] = p.axis.label
        out[f"{p.letter} Values"] = p.text
        if p.axis.label in SEED_AXES and not a.no_fixed_seeds:
            out[f"Fixed {p.letter} Values"] = ", ".join(str(v) for v in p.values)
    return out


def _with_params(text: str, params: dict) -> str:
    """``text`` (a picture's infotext) with ``params`` added to its last line, before Version as A1111
    writes a script's parameters."""
    head, nl, last = text.rpartition("\n")
    add = ", ".join(f"{k}: {infotext.quote(infotext.format_value(v))}" for k, v in params.items())
    at = last.rfind(", Version: ")
    last = f"{last[:at]}, {add}{last[at:]}" if at >= 0 else (f"{last}, {add}" if last else add)
    return f"{head}{nl}{last}"
