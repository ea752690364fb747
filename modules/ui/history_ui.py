"""The History tab: earlier pictures from the output folders (modules/history.py), a page at a time.

A date filter, a search over the infotexts, paging, the selected picture's parameters, and buttons that send
them to txt2img / img2img (the PNG Info tab's paste), move the picture to the trash, or list again.
The event functions are plain functions of the app and the tab's values (tests call them).
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
from PIL import Image

from modules import history
from modules.ui import common

PAGE_SIZE = 36
ALL = "All"
HINT = "Select a picture to see its generation parameters."
EMPTY = "No pictures here yet: the pictures you generate show up in this tab."
# after a new listing: close the gallery's preview (its close button is the last of the preview's buttons), so
# that no picture looks selected while the parameters panel says none is
CLOSE_PREVIEW_JS = """() => {
    const b = document.querySelectorAll('#history_gallery .preview .icon-button-wrapper button');
    if (b.length) { b[b.length - 1].click(); }
}"""


# ---------------------------------------------------------------------------
# plain functions (tests call them)


def page_html(page: int, pages: int, total: int) -> str:
    return (f'<div class="sdw-history-page"><span>Page</span> <b>{page}</b> / <b>{pages}</b> '
            f'<span class="sdw-history-count">(<b>{total}</b> <span>pictures</span>)</span></div>')


def info_html(item: history.Item | None) -> str:
    """The selected picture: its file, date and size, then its infotext (user content: never translated)."""
    if item is None:
        return f'<div class="sdw-message">{common.esc(HINT)}</div>'
    meta = f"{item.name} · {item.date} · {item.width}x{item.height}"
    text = item.infotext or ""
    body = (f'<p class="sdw-infotext no-translate">{common.esc(text)}</p>' if text
            else '<div class="sdw-message">No generation parameters in this picture.</div>')
    return f'<div class="sdw-history-info"><p class="sdw-history-file no-translate">{common.esc(meta)}</p>{body}</div>'


def _servable(file: Path) -> bool:
    """Whether gradio serves the file as it is (the working directory and the temp folder)."""
    import os

    try:
        return any(file.resolve().is_relative_to(Path(d).resolve()) for d in (os.getcwd(), tempfile.gettempdir()))
    except (OSError, ValueError):
        return False


def gallery_picture(item: history.Item):
    """The file where gradio may serve it, else the picture itself (gradio then serves a copy)."""
    if _servable(item.file):
        return str(item.file)
    try:
        with Image.open(item.file) as im:
            im.load()
            return im.copy()
    except OSError:
        return None


def date_choices(dates: list[tuple[str, int]]) -> list[tuple[str, str]]:
    return [(ALL, ALL), *((f"{d} ({n})", d) for d, n in dates)]


def render(app, date: str | None, search: str, page: int) -> tuple:
    """(gallery items, page html, date dropdown update, page shown, paths of the page, selected path, info html)."""
    hist = history.for_app(app)
    everything = hist.items()
    dates = hist.dates(everything)
    if date not in {d for d, _ in dates}:
        date = ALL
    chosen = history.filter_items(everything, search, None if date == ALL else date)
    found = history.paginate(chosen, max(1, int(page or 1)), PAGE_SIZE)
    if found.page > found.pages:
        found = history.paginate(chosen, found.pages, PAGE_SIZE)
    pictures = [(gallery_picture(i), i.name) for i in found.items]
    shown = [(p, c) for p, c in pictures if p is not None]
    paths = [i.path for (p, _), i in zip(pictures, found.items) if p is not None]
    info = info_html(None) if everything else f'<div class="sdw-message">{common.esc(EMPTY)}</div>'
    return (shown, page_html(found.page, found.pages, found.total), gr.update(choices=date_choices(dates), value=date),
            found.page, paths, "", info)


def select(app, paths: list[str], index) -> tuple[str, str]:
    """(the selected picture's path, its info html) for a click on gallery position `index`."""
    try:
        path = paths[int(index)]
        return path, info_html(history.for_app(app).find(path))
    except (IndexError, TypeError, ValueError, history.NotInHistory):
        return "", info_html(None)


def _selected(app, path: str) -> history.Item | None:
    if not path:
        gr.Warning("Select a picture first.")
        return None
    try:
        return history.for_app(app).find(path)
    except history.NotInHistory:
        gr.Warning("The picture is no longer there; press Refresh.")
        return None


def send_to_txt2img(app, t2i: common.GenTab, tabs, path: str) -> dict:
    """Fill txt2img from the selected picture's infotext and switch to it."""
    from modules.ui import pnginfo

    item = _selected(app, path)
    if item is None:
        return {}
    upd = pnginfo.send_updates(app, t2i, item.infotext)
    if upd:
        upd[tabs] = gr.update(selected="txt2img")
    return upd


def send_to_img2img(app, i2i: common.GenTab, tabs, path: str) -> dict:
    """The picture as img2img's init image, its parameters pasted, the img2img sub-tab selected."""
    from modules.ui import img2img, pnginfo

    item = _selected(app, path)
    if item is None:
        return {}
    upd = pnginfo.send_updates(app, i2i, item.infotext) if item.infotext else {}
    try:
        with Image.open(item.file) as im:
            im.load()
            image = im.copy()
    except OSError as e:
        gr.Warning(f"The picture could not be read: {e}")
        return upd
    image.info.pop("parameters", None)
    upd[i2i.c["init_img"]] = image
    upd[i2i.c["subtabs"]] = gr.update(selected="img2img")
    upd.update(img2img.mode_updates(i2i, "img2img"))
    upd[tabs] = gr.update(selected="img2img")
    return upd


def delete(app, path: str, date: str | None, search: str, page: int) -> tuple:
    """Move the selected picture to the trash, then list again (render()'s values)."""
    item = _selected(app, path)
    if item is not None:
        try:
            history.for_app(app).delete(item.path)
            gr.Info(f"Moved to the trash: {item.name}")
        except (history.NotInHistory, OSError) as e:
            gr.Warning(f"Could not delete: {e}")
    return render(app, date, search, page)


# ---------------------------------------------------------------------------
# the tab


def build(app) -> SimpleNamespace:
    with gr.Row(elem_id="history_toolbar", equal_height=True):
        date = gr.Dropdown(label="Date", choices=date_choices([]), value=ALL, elem_id="history_date", scale=1,
                           min_width=160)
        search = gr.Textbox(label="Search", placeholder="Search the prompts and parameters", elem_id="history_search",
                            scale=3, max_lines=1)
        refresh = gr.Button("Refresh", elem_id="history_refresh", scale=0, min_width=100)
    with gr.Row(equal_height=False, elem_id="history_row"):
        with gr.Column(scale=3):
            gallery = gr.Gallery(show_label=False, elem_id="history_gallery", columns=6, height=560,
                                 object_fit="contain", allow_preview=True, interactive=False, format="png",
                                 buttons=["download", "fullscreen"], elem_classes=["no-translate"])
            with gr.Row(elem_id="history_paging", equal_height=True):
                prev = gr.Button("Previous page", elem_id="history_prev", size="sm")
                page_info = gr.HTML(page_html(1, 1, 0), elem_id="history_page_info", js_on_load=None)
                nxt = gr.Button("Next page", elem_id="history_next", size="sm")
        with gr.Column(scale=2, variant="panel"):
            info = gr.HTML(info_html(None), elem_id="history_info", js_on_load=None)
            with gr.Row(elem_classes=["sdw-image-buttons"]):
                to_txt2img = gr.Button("Send to txt2img", elem_id="history_send_txt2img")
                to_img2img = gr.Button("Send to img2img", elem_id="history_send_img2img")
                remove = gr.Button("Delete", variant="stop", elem_id="history_delete")
    return SimpleNamespace(date=date, search=search, refresh=refresh, gallery=gallery, prev=prev, next=nxt,
                           page_info=page_info, info=info, to_txt2img=to_txt2img, to_img2img=to_img2img,
                           delete=remove, page=gr.State(1), paths=gr.State([]), selected=gr.State(""))


def wire(app, h: SimpleNamespace, tab, t2i: common.GenTab, i2i: common.GenTab, tabs) -> None:
    """`tab`: the History gr.Tab (listing again when it is opened)."""
    listing = [h.gallery, h.page_info, h.date, h.page, h.paths, h.selected, h.info]
    quiet = {"show_progress": "hidden", "api_visibility": "private"}

    def lister(step=None):
        def go(date, search, page):
            page = 1 if step is None else max(1, int(page or 1) + step)
            return render(app, date, search, page)
        return go
    inputs = [h.date, h.search, h.page]
    for event, step, extra in ((tab.select, 0, {}), (h.refresh.click, 0, {}), (h.date.input, None, {}),
                               (h.search.change, None, {"trigger_mode": "always_last"}), (h.prev.click, -1, {}),
                               (h.next.click, 1, {})):
        event(lister(step), inputs=inputs, outputs=listing, **quiet, **extra).then(None, js=CLOSE_PREVIEW_JS)

    def on_select(paths, evt: gr.SelectData):
        return select(app, paths, evt.index)
    h.gallery.select(on_select, inputs=[h.paths], outputs=[h.selected, h.info], **quiet)
    h.to_txt2img.click(lambda p: send_to_txt2img(app, t2i, tabs, p), inputs=[h.selected],
                       outputs=[*common.paste_targets(t2i), tabs], **quiet)
    h.to_img2img.click(lambda p: send_to_img2img(app, i2i, tabs, p), inputs=[h.selected],
                       outputs=[*common.paste_targets(i2i), i2i.c["init_img"], i2i.c["subtabs"], i2i.c["mode"],
                                i2i.c["mask_options"], tabs], **quiet)
    h.delete.click(lambda p, d, s, pg: delete(app, p, d, s, pg), inputs=[h.selected, h.date, h.search, h.page],
                   outputs=listing, **quiet).then(None, js=CLOSE_PREVIEW_JS)
