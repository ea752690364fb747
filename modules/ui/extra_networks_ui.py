"""The "Extra networks" panel under the prompt of txt2img and img2img.

Tabs Checkpoints / Lora / Textual Inversion, each a gallery of cards (the
preview picture beside the file, a neutral placeholder otherwise, the name as
caption), with one search box, a sort choice and a refresh button for all
three.  Clicking a Lora card adds ``<lora:name:1>`` to the prompt (clicking it
again takes it out), an embedding card adds its name the same way, a
checkpoint card loads that checkpoint.  Plain Gradio components only.

The panel is a built-in user of the UI hook points (``register_hooks``): the txt2img and img2img tabs
fire ``ui_tab_build`` under their prompts (``build`` adds the panel there) and ``ui_tab_wire`` once
every tab exists (``wire`` connects it).
"""
from __future__ import annotations

import logging
import re
import tempfile
from pathlib import Path

import gradio as gr
from PIL import Image

from modules.extra_networks import SORT_KEYS, Card

log = logging.getLogger(__name__)

TABS = (("checkpoint", "Checkpoints"), ("lora", "Lora"), ("textual_inversion", "Textual Inversion"))
THUMB = 256


# ---------------------------------------------------------------------------
# plain functions (tests call them)


def placeholder_file() -> str:
    """A neutral grey card picture in the temp folder (gradio serves files from there)."""
    path = Path(tempfile.gettempdir()) / "sdwebui-extra-network-placeholder.png"
    if not path.is_file():
        Image.new("RGB", (THUMB, THUMB), (96, 96, 104)).save(path)
    return str(path)


def _servable(path: Path) -> bool:
    import os

    try:
        p = path.resolve()
        return any(p.is_relative_to(Path(d).resolve()) for d in (os.getcwd(), tempfile.gettempdir()))
    except (OSError, ValueError):
        return False


def card_picture(card: Card, thumbs: dict | None = None):
    """The card's preview: a path gradio may serve as is, else a small PIL copy; the placeholder without one."""
    if card.preview is None:
        return placeholder_file()
    if _servable(card.preview):
        return str(card.preview)
    try:
        key = (str(card.preview), card.preview.stat().st_mtime)
        if thumbs is not None and key in thumbs:
            return thumbs[key]
        with Image.open(card.preview) as im:
            im.thumbnail((THUMB, THUMB))
            small = im.convert("RGB")
        if thumbs is not None:
            thumbs[key] = small
        return small
    except OSError:
        return placeholder_file()


def gallery_items(cards: list[Card], thumbs: dict | None = None) -> list[tuple]:
    return [(card_picture(c, thumbs), c.name) for c in cards]


def toggle_in_prompt(prompt: str, text: str, kind: str) -> str:
    """Append ``text`` to the prompt (", "-free, A1111 uses a space), or remove it when the prompt has it.

    For a LoRA any weight counts as "has it": ``<lora:name:0.5>`` is removed by the ``<lora:name:1>`` card."""
    prompt = prompt or ""
    if kind == "lora":
        m = re.match(r"<lora:([^:>]+)", text)
        if m:
            pattern = re.compile(r"\s*<lora:" + re.escape(m.group(1)) + r"(:[^>]*)?>")
            if pattern.search(prompt):
                return pattern.sub("", prompt, count=1).strip()
    else:
        pattern = re.compile(r"\s*(?<![^\s,])" + re.escape(text) + r"(?![^\s,])")
        if pattern.search(prompt):
            return pattern.sub("", prompt, count=1).strip().lstrip(",").strip()
    if not prompt.strip():
        return text
    return prompt.rstrip() + " " + text


def render(app, search: str, sort: str, thumbs: dict | None = None) -> tuple[list, list]:
    """(gallery items per tab, cards per tab) in TABS order."""
    items, cards = [], []
    for kind, _ in TABS:
        try:
            cs = app.extra_networks.cards(kind, search, sort)
        except Exception:  # noqa: BLE001 - a broken folder must not break the page
            log.exception("listing %s failed", kind)
            cs = []
        cards.append(cs)
        items.append(gallery_items(cs, thumbs))
    return items, cards


# ---------------------------------------------------------------------------
# building and wiring


def build(tab) -> None:
    """The panel (closed accordion) into ``tab`` (a modules.ui.common.GenTab); its parts go into ``tab.c``."""
    name = tab.name
    with gr.Accordion("Extra networks", open=False, elem_id=f"{name}_extra_networks") as acc:
        tab.c["en_accordion"] = acc
        with gr.Row(elem_id=f"{name}_extra_networks_controls"):
            tab.c["en_search"] = gr.Textbox(label="Search", placeholder="Search...", show_label=False, scale=4,
                                            min_width=160, max_lines=1, elem_id=f"{name}_extra_search")
            tab.c["en_sort"] = gr.Dropdown(label="Sort by", choices=list(SORT_KEYS), value=SORT_KEYS[0],
                                           show_label=False, scale=1, min_width=140, elem_id=f"{name}_extra_sort")
            tab.c["en_refresh"] = gr.Button("Refresh", size="sm", scale=0, min_width=90,
                                            elem_id=f"{name}_extra_refresh")
        with gr.Tabs(elem_id=f"{name}_extra_tabs"):
            for kind, label in TABS:
                with gr.Tab(label, id=f"{name}_extra_{kind}", elem_id=f"{name}_extra_tab_{kind}"):
                    tab.c[f"en_gallery_{kind}"] = gr.Gallery(
                        value=[], show_label=False, columns=6, height=360, allow_preview=False, object_fit="cover",
                        interactive=False, elem_id=f"{name}_{kind}_cards", elem_classes=["no-translate"])
        tab.c["en_cards"] = gr.State([[] for _ in TABS])


def wire(tab, top) -> None:
    app, c = tab.app, tab.c
    thumbs: dict = {}
    galleries = [c[f"en_gallery_{kind}"] for kind, _ in TABS]

    def show(search, sort):
        items, cards = render(app, search, sort, thumbs)
        return [*items, [[_card_state(x) for x in cs] for cs in cards]]

    def refresh(search, sort):
        app.refresh_models()
        thumbs.clear()
        return show(search, sort)

    outs = [*galleries, c["en_cards"]]
    common = dict(show_progress="hidden", api_visibility="private")
    c["en_accordion"].expand(show, inputs=[c["en_search"], c["en_sort"]], outputs=outs, queue=False, **common)
    c["en_search"].change(show, inputs=[c["en_search"], c["en_sort"]], outputs=outs, queue=False,
                          trigger_mode="always_last", **common)
    c["en_sort"].change(show, inputs=[c["en_search"], c["en_sort"]], outputs=outs, queue=False, **common)
    c["en_refresh"].click(refresh, inputs=[c["en_search"], c["en_sort"]], outputs=outs, **common)

    for i, (kind, _) in enumerate(TABS):
        if kind == "checkpoint":
            def pick_checkpoint(cards, evt: gr.SelectData, i=i):
                card = _selected(cards, i, evt)
                if card is None:
                    return gr.skip(), gr.skip()
                from modules.ui import change_checkpoint

                shown, _, status = change_checkpoint(app, card["text"])
                return shown, status
            galleries[i].select(pick_checkpoint, inputs=[c["en_cards"]], outputs=[top["checkpoint"], top["status"]],
                                **common)
        else:
            def pick_text(cards, prompt, evt: gr.SelectData, i=i, kind=kind):
                card = _selected(cards, i, evt)
                if card is None:
                    return gr.skip()
                return toggle_in_prompt(prompt, card["text"], kind)
            galleries[i].select(pick_text, inputs=[c["en_cards"], c["prompt"]], outputs=[c["prompt"]], queue=False,
                                **common)


def register_hooks(hooks) -> None:
    hooks.add("ui_tab_build", build, "extra networks")
    hooks.add("ui_tab_wire", wire, "extra networks")


def _card_state(card: Card) -> dict:
    return {"kind": card.kind, "name": card.name, "text": card.text}


def _selected(cards, i: int, evt) -> dict | None:
    index = evt.index if isinstance(evt.index, int) else (evt.index[0] if evt.index else None)
    try:
        return cards[i][index]
    except (IndexError, TypeError, KeyError):
        return None


__all__ = ["TABS", "build", "wire", "render", "gallery_items", "toggle_in_prompt", "card_picture", "placeholder_file"]
