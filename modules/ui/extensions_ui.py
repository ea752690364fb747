"""The Extensions tab: the installed extensions (enable, folder, commit, status), "Apply and restart UI",
and installing an extension from a folder of this machine or from an uploaded zip file.

The work is plain functions of the app (tests call them without a browser); modules.extensions does it.
"""
from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from modules import extensions
from modules.ui import common

HEADERS = ["Enabled", "Extension", "Folder", "Commit", "Status"]
DATATYPES = ["bool", "str", "str", "str", "str"]
# after "Apply and restart UI": wait for the server to go away and come back, then reload the page
RESTART_JS = """(flag) => {
    if (!flag) return;
    const wait = (ms) => new Promise((r) => setTimeout(r, ms));
    const up = async () => { try { return (await fetch("./healthz", {cache: "no-store"})).ok } catch (e) { return false } };
    (async () => {
        for (let i = 0; i < 40 && await up(); i++) await wait(250);
        for (let i = 0; i < 600; i++) { if (await up()) { location.reload(); return } await wait(1000) }
    })();
}"""


def table_rows(app) -> list[list]:
    """One row per extension: enabled (the setting, for the next start), name, folder, commit, status."""
    m = app.extensions
    return [[m.wanted(e), e.name, str(e.path), e.version, m.status(e)] for e in m.extensions.values()]


def table_update(app):
    return gr.update(value=table_rows(app))


def notice_html(app) -> str:
    if app.opts.get("disable_all_extensions") == "none":
        return ""
    return common.message_html('"Disable all extensions" is set: change it to "none" to load all extensions again.')


def _checked(value) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes", "on")
    return bool(value)


def row_states(rows) -> dict[str, bool]:
    """name -> checked from the table's value (a list of rows, or a pandas DataFrame)."""
    if hasattr(rows, "values") and hasattr(rows, "columns"):
        rows = rows.values.tolist()
    return {str(r[1]): _checked(r[0]) for r in rows or [] if len(r) > 1 and r[1]}


def apply_and_restart(app, rows, disable_all: str) -> tuple[str, str]:
    """Save which extensions load (disabled_extensions, disable_all_extensions) and ask for a restart;
    (message html, "restart" when the server restarts, else "")."""
    try:
        app.extensions.apply(row_states(rows), disable_all or "none")
    except ValueError as e:
        return common.error_html(str(e)), ""
    if app.extensions.request_restart():
        return common.message_html("Saved. Restarting the server: the page reloads when it is back."), "restart"
    return common.message_html("Saved. This server cannot restart itself: restart it to apply the changes."), ""


def _installed_html(ext) -> str:
    if ext.error:
        return common.error_html(f"Installed, but install.py failed: {ext.error}")
    return common.message_html(f'Installed into {ext.path}. Use "Apply and restart UI" to load it.')


def install_folder(app, folder: str, name: str) -> str:
    try:
        ext = app.extensions.install_from_folder(folder, (name or "").strip() or None)
    except extensions.InstallError as e:
        return common.error_html(f"Not installed: {e}")
    return _installed_html(ext)


def install_zip(app, file, name: str) -> str:
    path = getattr(file, "name", file) if file is not None else None
    try:
        ext = app.extensions.install_from_zip(path, (name or "").strip() or None)
    except extensions.InstallError as e:
        return common.error_html(f"Not installed: {e}")
    return _installed_html(ext)


def build(app) -> SimpleNamespace:
    rows = table_rows(app)
    with gr.Tabs(elem_id="tabs_extensions"):
        with gr.Tab("Installed", id="installed", elem_id="extensions_installed_tab"):
            with gr.Row(elem_id="extensions_installed_top"):
                apply = gr.Button("Apply and restart UI", variant="primary", elem_id="extensions_apply")
                disable_all = gr.Radio(label="Disable all extensions", choices=list(extensions.DISABLE_ALL),
                                       value=app.opts.get("disable_all_extensions"), elem_id="extensions_disable_all")
            notice = gr.HTML(notice_html(app), elem_id="extensions_notice", js_on_load=None)
            table = gr.Dataframe(value=rows, headers=HEADERS, datatype=DATATYPES, type="array", interactive=True,
                                 static_columns=[1, 2, 3, 4], wrap=True,
                                 show_label=False, label="Extensions", elem_id="extensions_table")
            result = gr.HTML("", elem_id="extensions_result", js_on_load=None)
            restart_flag = gr.Textbox("", visible=False, elem_id="extensions_restart_flag")
        with gr.Tab("Install from folder", id="install_from_folder", elem_id="extensions_folder_tab"):
            folder = gr.Textbox(label="Folder on this machine", placeholder="/path/to/extension", max_lines=1,
                                info="It is copied into the extensions folder.", elem_id="extensions_folder_path")
            folder_name = gr.Textbox(label="Local directory name", placeholder="Leave empty for auto", max_lines=1,
                                     elem_id="extensions_folder_name")
            folder_button = gr.Button("Install", variant="primary", elem_id="extensions_folder_install")
            folder_result = gr.HTML("", elem_id="extensions_folder_result", js_on_load=None)
        with gr.Tab("Install from zip", id="install_from_zip", elem_id="extensions_zip_tab"):
            zip_file = gr.File(label="Zip file", file_types=[".zip"], type="filepath", elem_id="extensions_zip_file")
            zip_name = gr.Textbox(label="Local directory name", placeholder="Leave empty for auto", max_lines=1,
                                  elem_id="extensions_zip_name")
            zip_button = gr.Button("Install", variant="primary", elem_id="extensions_zip_install")
            zip_result = gr.HTML("", elem_id="extensions_zip_result", js_on_load=None)
    return SimpleNamespace(apply=apply, disable_all=disable_all, notice=notice, table=table, result=result,
                           restart_flag=restart_flag, folder=folder, folder_name=folder_name,
                           folder_button=folder_button, folder_result=folder_result, zip_file=zip_file,
                           zip_name=zip_name, zip_button=zip_button, zip_result=zip_result)


def wire(app, ex: SimpleNamespace, tab=None) -> None:
    """The tab's events; ``tab`` (the gr.Tab it is in): its table is refreshed when it is opened."""
    def on_apply(rows, disable_all):
        message, flag = apply_and_restart(app, rows, disable_all)
        return message, flag, table_update(app), notice_html(app)
    ex.apply.click(on_apply, inputs=[ex.table, ex.disable_all],
                   outputs=[ex.result, ex.restart_flag, ex.table, ex.notice], show_progress="hidden",
                   api_visibility="private").then(None, inputs=[ex.restart_flag], js=RESTART_JS)

    def on_folder(folder, name):
        return install_folder(app, folder, name), table_update(app)
    ex.folder_button.click(on_folder, inputs=[ex.folder, ex.folder_name], outputs=[ex.folder_result, ex.table],
                           api_visibility="private")

    def on_zip(file, name):
        return install_zip(app, file, name), table_update(app)
    ex.zip_button.click(on_zip, inputs=[ex.zip_file, ex.zip_name], outputs=[ex.zip_result, ex.table],
                        api_visibility="private")
    if tab is not None:
        tab.select(lambda: (table_update(app), notice_html(app)), outputs=[ex.table, ex.notice],
                   show_progress="hidden", api_visibility="private", queue=False)
