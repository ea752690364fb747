"""What the built-in scripts' test files share (not a test module): pictures compared exactly, the PNGs
written under an output folder, and a loaded script's module."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np


def arr(im) -> np.ndarray:
    return np.asarray(im.convert("RGB"), dtype=np.int16)


def same(a, b) -> bool:
    """The same size and the same pixels."""
    return a.size == b.size and np.array_equal(arr(a), arr(b))


def files(data: Path, folder: str) -> set[Path]:
    """The PNGs under ``data``/outputs/``folder``."""
    return set((data / "outputs" / folder).rglob("*.png"))


def script_module(app, name: str):
    """The module a loaded script (found by name) came from."""
    return sys.modules[type(app.scripts.find(name)).__module__]


def wired_ui(script, app, tab_name: str, is_img2img: bool):
    """A script's controls, its ui_extra controls and its events in a gr.Blocks of their own, the way the tab
    makes them (elem ids ``t_<name>``): (the Blocks, every component by name, the ui_extra ones)."""
    import types

    import gradio as gr

    from modules.ui import scripts_ui

    tab = types.SimpleNamespace(app=app, name=tab_name)
    with gr.Blocks() as demo:
        comps = {a.name: scripts_ui.control(app, a, f"t_{a.name}", is_img2img) for a in script.args(is_img2img)}
        extra = script.ui_extra(tab, comps, is_img2img)
        comps.update(extra)
        script.ui_wire(tab, comps, is_img2img)
    return demo, comps, extra
