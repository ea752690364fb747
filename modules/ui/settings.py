"""The Settings tab: one component per visible option, grouped by section; Apply writes config.json."""
from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from modules import options, samplers
from modules.ui import common


def localization_choices(app) -> list[str]:
    try:
        from modules import localization
        return localization.localization_choices(app.paths)
    except ImportError:
        pass
    names = {"None"}
    for d in app.paths.localizations_dirs:
        if d.is_dir():
            names.update(p.stem for p in d.glob("*.json"))
    return ["None", *sorted(names - {"None"})]


# choices that come from the program rather than from the option's declaration
DYNAMIC_CHOICES = {
    "default_sampler": lambda app: samplers.sampler_names(),
    "default_scheduler": lambda app: samplers.schedule_type_labels(),
    "localization": localization_choices,
    "upscaler_for_img2img": lambda app: app.upscalers.names(latent=False),
}


def option_choices(app, info: options.OptionInfo) -> list | None:
    if info.key in DYNAMIC_CHOICES:
        return list(DYNAMIC_CHOICES[info.key](app))
    if callable(info.choices):
        return list(info.choices())
    if info.choices is not None:
        return list(info.choices)
    return None


def option_label(info: options.OptionInfo) -> str:
    return info.label + (" (requires restart)" if info.restart else "")


def component_for(app, info: options.OptionInfo, value):
    """The Gradio component for one option (label, description, choices, range from its declaration)."""
    kw = dict(label=option_label(info), info=info.description or None, elem_id=f"setting_{info.key}")
    d = info.default
    kind = info.component
    choices = option_choices(app, info)
    if kind == "checkbox" or (kind == "auto" and isinstance(d, bool)):
        return gr.Checkbox(value=bool(value), **kw)
    if choices is not None and kind in ("auto", "radio", "dropdown"):
        if value not in choices:
            choices = [*choices, value]
        if kind == "radio" or (kind == "auto" and len(choices) <= 3):
            return gr.Radio(choices=choices, value=value, **kw)
        return gr.Dropdown(choices=choices, value=value, allow_custom_value=info.key in DYNAMIC_CHOICES, **kw)
    if isinstance(d, (int, float)) and not isinstance(d, bool):
        step = info.step if info.step is not None else (1 if isinstance(d, int) else 0.01)
        if kind in ("auto", "slider") and info.minimum is not None and info.maximum is not None:
            return gr.Slider(minimum=info.minimum, maximum=info.maximum, step=step, value=value, **kw)
        return gr.Number(value=value, precision=0 if isinstance(d, int) else None, minimum=info.minimum,
                         maximum=info.maximum, step=step, **kw)
    return gr.Textbox(value="" if value is None else str(value), max_lines=1, **kw)


def visible_options(app) -> list[options.OptionInfo]:
    return [i for i in app.opts.infos.values() if not i.hidden]


def build(app) -> SimpleNamespace:
    comps: dict[str, object] = {}
    with gr.Row(elem_id="settings_buttons"):
        apply = gr.Button("Apply settings", variant="primary", elem_id="settings_submit")
        reload = gr.Button("Reload UI", elem_id="settings_reload")
    result = gr.HTML("", elem_id="settings_result", js_on_load=None)
    infos = visible_options(app)
    with gr.Tabs(elem_id="settings"):
        for section, title in options.SECTIONS.items():
            members = [i for i in infos if i.section == section]
            if not members:
                continue
            with gr.Tab(title, id=f"settings_{section}", elem_id=f"settings_{section}"):
                for info in members:
                    comps[info.key] = component_for(app, info, app.opts.get(info.key))
    return SimpleNamespace(apply=apply, reload=reload, result=result, comps=comps)


def apply_settings(app, values: dict) -> str:
    """Validate and store `values` (key -> value); a message listing what changed, or the error."""
    clean = {}
    for key, value in values.items():
        info = app.opts.infos.get(key)
        if info is not None and isinstance(info.default, str) and value is None:
            value = ""
        clean[key] = value
    try:
        changed = app.opts.update(clean)
    except ValueError as e:
        gr.Warning(str(e))
        return common.error_html(str(e))
    if not changed:
        return common.message_html("Nothing changed.")
    labels = ", ".join(app.opts.infos[k].label if k in app.opts.infos else k for k in changed)
    restart = [k for k in changed if k in app.opts.infos and app.opts.infos[k].restart]
    msg = f"{len(changed)} setting{'s' if len(changed) != 1 else ''} changed: {labels}."
    if restart:
        msg += " Some of them take effect after a restart."
    return common.message_html(msg)


def current_values(app, st: SimpleNamespace) -> list:
    """demo.load: the settings as they are now, for those changed since the page was built (others are
    left alone, so a page load never overwrites what the user is typing)."""
    out = []
    for key, comp in st.comps.items():
        value = app.opts.get(key)
        out.append(gr.skip() if value == comp.value else value)
    return out


def wire(app, st: SimpleNamespace) -> None:
    keys = list(st.comps)

    def on_apply(*values):
        return apply_settings(app, dict(zip(keys, values)))
    st.apply.click(on_apply, inputs=list(st.comps.values()), outputs=[st.result], show_progress="hidden",
                   api_visibility="private")
    st.reload.click(None, js="() => { location.reload() }")
