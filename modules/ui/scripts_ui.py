"""The scripts in a generation tab: always-on scripts as collapsible sections, then A1111's "Script"
dropdown with each script's controls (shown while it is picked), all made from the scripts' Arg lists.

The controls are request fields of the tab (``tab.fields``) under the keys ``script_name`` and
``script::<title>::<arg>``; :func:`apply` puts their values into the request (App.submit checks them).
"""
from __future__ import annotations

import re
from typing import Any

import gradio as gr

from modules import scripts as scripts_mod

SEP = "::"


def key(script: scripts_mod.Script, arg: scripts_mod.Arg) -> str:
    return extra_key(script, arg.name)


def extra_key(script: scripts_mod.Script, name: str) -> str:
    """The tab's key of a script's ui_extra control."""
    return f"script{SEP}{script.title}{SEP}{name}"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def control(app, arg: scripts_mod.Arg, elem_id: str, is_img2img: bool):
    """The gradio component of one argument."""
    kw: dict[str, Any] = dict(label=arg.label, elem_id=elem_id, visible=arg.visible)
    if arg.info:
        kw["info"] = arg.info
    k = arg.kind
    if k == "slider":
        return gr.Slider(arg.minimum, arg.maximum, value=arg.default, step=arg.step or 1, **kw)
    if k == "number":
        return gr.Number(value=arg.default, precision=0 if arg.whole else None, minimum=arg.minimum,
                         maximum=arg.maximum, **kw)
    if k == "checkbox":
        return gr.Checkbox(value=bool(arg.default), **kw)
    if k in ("dropdown", "radio"):
        choices = arg.choice_list(app, is_img2img)
        if k == "radio" and not arg.multiselect:
            return gr.Radio(choices=choices, value=arg.default, **kw)
        return gr.Dropdown(choices=choices, value=arg.default, multiselect=arg.multiselect,
                           allow_custom_value=not choices, **kw)
    if k == "textarea":
        return gr.Textbox(value=arg.default or "", lines=4, max_lines=40, **kw)
    if k == "html":
        return gr.HTML(arg.default or "", elem_id=elem_id, visible=arg.visible, js_on_load=None)
    if k == "object":   # filled by the script's own controls (ui_extra / ui_wire)
        return gr.JSON(value=arg.default, elem_id=elem_id, visible=False, label=arg.label)
    return gr.Textbox(value=arg.default or "", lines=1, max_lines=1, **kw)


def elem_id(tab, script: scripts_mod.Script, name: str) -> str:
    """The HTML id of a script's control: ``<tab>_script_<title slug>_<name>``."""
    return f"{tab.name}_script_{_slug(script.title)}_{name}"


def _build_args(tab, app, script: scripts_mod.Script, is_img2img: bool) -> dict:
    comps = {}
    for arg in script.args(is_img2img):
        comp = control(app, arg, elem_id(tab, script, arg.name), is_img2img)
        comps[arg.name] = comp
        tab.add(key(script, arg), comp, field=arg.is_input)
    try:
        extra = script.ui_extra(tab, comps, is_img2img) or {}
    except Exception as e:  # noqa: BLE001 - a script's extra controls must not break the page
        app.scripts.report(script.source, f"script '{script.title}' ui_extra", e)
        extra = {}
    clash = set(extra) & set(comps)
    if clash:
        app.scripts.report(script.source, f"script '{script.title}' ui_extra",
                           ValueError(f"names already taken by arguments: {', '.join(sorted(clash))}"))
    for k, v in extra.items():
        if k not in clash:
            comps[k] = v
            tab.add(extra_key(script, k), v)  # a paste target (Script.ui_paste), not a job field
    return comps


def build(tab, app) -> None:
    """The scripts' controls of ``tab`` (a GenTab), at the bottom of its settings column as in A1111."""
    is_img2img = tab.name == "img2img"
    reg = app.scripts
    tab.script_comps = {}
    for script in reg.alwayson(is_img2img):
        with gr.Accordion(script.title, open=False, elem_id=f"{tab.name}_script_{_slug(script.title)}",
                          elem_classes=["sdw-alwayson-script"]):
            tab.script_comps[script.title] = _build_args(tab, app, script, is_img2img)
    selectable = reg.selectable(is_img2img)
    tab.add("script_name", gr.Dropdown(label="Script", choices=[scripts_mod.NONE_TITLE, *[s.title for s in selectable]],
                                       value=scripts_mod.NONE_TITLE, elem_id=f"{tab.name}_script_list"), field=True)
    tab.script_groups = {}
    for script in selectable:
        with gr.Group(visible=False, elem_id=f"{tab.name}_script_{_slug(script.title)}",
                      elem_classes=["sdw-script"]) as group:
            tab.script_comps[script.title] = _build_args(tab, app, script, is_img2img)
        tab.script_groups[script.title] = group


def wire(tab, app) -> None:
    """Picking a script shows its controls; each script's own events (Script.ui_wire)."""
    is_img2img = tab.name == "img2img"
    titles = list(tab.script_groups)
    groups = [tab.script_groups[t] for t in titles]

    def show(title):
        return [gr.update(visible=t == title) for t in titles]
    if groups:
        tab.c["script_name"].change(show, inputs=[tab.c["script_name"]], outputs=groups, queue=False,
                                    show_progress="hidden", api_visibility="private")
    for script in [*app.scripts.alwayson(is_img2img), *app.scripts.selectable(is_img2img)]:
        comps = tab.script_comps.get(script.title)
        if comps is None:
            continue
        try:
            script.ui_wire(tab, comps, is_img2img)
        except Exception as e:  # noqa: BLE001 - a script's UI events must not break the page
            app.scripts.report(script.source, f"script '{script.title}' ui_wire", e)


def apply(app, req, v: dict, is_img2img: bool) -> None:
    """Put the tab's script values (``v``: field key -> value) into ``req``."""
    reg = app.scripts
    name = v.get("script_name")
    script = reg.find(name) if name and name != scripts_mod.NONE_TITLE else None
    if script is not None:
        req.script_name = script.title
        req.script_args = {arg.name: v[key(script, arg)] for arg in script.args(is_img2img)
                           if arg.is_input and key(script, arg) in v}
    alwayson = {}
    for s in reg.alwayson(is_img2img):
        vals = {arg.name: v[key(s, arg)] for arg in s.args(is_img2img) if arg.is_input and key(s, arg) in v}
        if vals:
            alwayson[s.title] = vals
    req.alwayson_scripts = alwayson


def paste_updates(app, tab, params: dict) -> dict:
    """Field key -> value for the script controls an infotext restores (the Script dropdown too)."""
    is_img2img = tab.name == "img2img"
    found = app.scripts.from_infotext(params, is_img2img)
    out: dict[str, Any] = {}
    if found["script"] is not None and "script_name" in tab.c:
        out["script_name"] = found["script"]
    for title, vals in found["args"].items():
        script = app.scripts.find(title)
        for arg in script.args(is_img2img):
            k = key(script, arg)
            if arg.name in vals and k in tab.c:
                out[k] = vals[arg.name]
    for script in [*app.scripts.alwayson(is_img2img), *app.scripts.selectable(is_img2img)]:
        try:
            extra = script.ui_paste(params, is_img2img) or {}
        except Exception as e:  # noqa: BLE001 - a script's paste must not break the paste of the rest
            app.scripts.report(script.source, f"script '{script.title}' ui_paste", e)
            continue
        for name, value in extra.items():
            if extra_key(script, name) in tab.c:
                out[extra_key(script, name)] = value
    return out


def paste_targets(tab) -> list:
    """The components paste may update: the dropdown, the script groups and every script control."""
    out = [tab.c["script_name"], *tab.script_groups.values()] if "script_name" in tab.c else []
    return out + [c for k, c in tab.c.items() if k.startswith(f"script{SEP}")]


def paste_group_updates(tab, updates: dict) -> dict:
    """Show the group of the script a paste picked."""
    title = updates.get("script_name")
    if title is None:
        return {}
    return {g: gr.update(visible=t == title) for t, g in tab.script_groups.items()}
