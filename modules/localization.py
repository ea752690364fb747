"""Interface translations: A1111-format localization files and the page script that applies them.

A localization is a flat JSON object that maps the exact English text shown in the
UI to its translation, e.g. ``{"Prompt": "提示词"}``.  Files are found in every folder
of ``Paths.localizations_dirs`` and in ``localizations/`` of each extension the app loaded
(built-in ones first; without an app, of every folder in ``<extensions>/``); files with
the same name (``zh_CN.json``) are merged in that order, later ones overriding
earlier ones, so an extension can extend or correct a bundled translation.
A1111's community files work unchanged.

The translation itself happens in the browser (``javascript/localization.js``),
which rewrites the page's text nodes and a few attributes; user content (prompts,
file and model names, infotext) is never touched.  This module finds and loads
the files, builds the ``<head>`` script, and collects the UI's strings from the
Gradio blocks so translators get a complete template::

    python -m modules.localization --export-template template.json
    python -m modules.localization --missing zh_CN      # keys zh_CN.json lacks
"""
from __future__ import annotations

import ast
import contextlib
import html
import html.parser
import json
import logging
import re
from pathlib import Path
from typing import Iterable

from modules.paths import ROOT

log = logging.getLogger(__name__)

JS_FILE = ROOT / "javascript" / "localization.js"
UI_SOURCE_DIR = ROOT / "modules" / "ui"
NO_TRANSLATE_CLASS = "no-translate"

# Messages from the most recent loads that skipped a file (one line per bad file).
problems: list[str] = []

# English strings of Gradio's own widgets that show on the page of this UI (buttons of
# image/gallery/file components, toasts, footer).  Gradio translates them itself only
# for a browser set to that language; listing them lets a localization cover them too.
GRADIO_STRINGS = (
    # common, footer, toasts, connection
    "Loading...", "Loading", "Error", "Warning", "Info", "Close", "Copy", "Copied!", "Clear", "Download",
    "Download All", "Share", "Fullscreen", "Exit fullscreen mode", "Undo", "Redo", "Remove", "Edit", "Empty",
    "Empty value", "Stop", "Submit", "Use via API", "Built with Gradio", "Built with Gradio logo", "Settings",
    "Runs", "View runs saved in this browser", "Return to the app", "Display Theme", "Language",
    "Progressive Web App", "Gradio footer navigation", "Connection errored out.",
    "Connection to the server was lost. Attempting reconnection...", "Could not connect to the server.",
    "Lost connection due to leaving page. Rejoining queue...", "Uploading...",
    "Waiting for file(s) to finish uploading, please retry.",
    # uploads, image, gallery
    "Drop Image Here", "Drop File Here", "Click to Upload", "- or -", "or", "Paste from Clipboard",
    "Paste from clipboard", "Upload", "Upload file", "Upload Image", "Upload image", "Click to upload or drop files",
    "Drop an image file here to upload", "Remove Image", "Image", "Gallery", "File", "Thumbnail", "Webcam",
    "Click to Access Webcam", "Please allow access to the webcam for recording.", "Select an option",
    "Reset to default value",
    # image editor (sketch / inpaint canvas)
    "Upload an image", "select the draw tool to start", "Brush", "Brush color", "Brush radius", "Brush Size",
    "Select brush color", "Start drawing", "Use brush", "Eraser", "Eraser Size", "Erase", "Draw", "Color",
    "Clear canvas", "Crop", "Confirm crop", "Fit to screen", "Layer", "Layers", "Add Layer", "Show Layers",
    "Pan", "Paste", "Resize", "Save changes", "Zoom in", "Zoom out", "Zoom", "Size",
)

_BUTTON_TYPES = ("Button", "UploadButton", "DownloadButton", "ClearButton", "DuplicateButton", "LoginButton")
_CHOICE_TYPES = ("Dropdown", "Radio", "CheckboxGroup")
_MARKUP_TYPES = ("Markdown", "HTML")
_LABELLED_CONTAINERS = ("Tab", "TabItem", "Accordion")
_WS = re.compile(r"\s+")
_HAS_LETTER = re.compile(r"[^\W\d_]")
# Choices that are not UI words even when a component offers them: file names and
# "name [hash]" model titles.
_FILE_LIKE = re.compile(r"\.(safetensors|ckpt|pt|pth|bin|sft|gguf|png|jpe?g|webp|json|csv|txt|ya?ml)$|\[[0-9a-f]{8,10}\]$",
                        re.IGNORECASE)


def normalize(text: str) -> str:
    """The key form used for matching: whitespace runs collapsed, ends trimmed (the browser does the same)."""
    return _WS.sub(" ", text).strip()


# -- files ----------------------------------------------------------------------------

# The folders of the extensions an app loaded, by its extensions folder (set by modules.extensions, so a
# disabled extension's files are not used; without an entry every folder of the extensions folder is).
_extension_folders: dict[str, list[Path]] = {}


def set_extension_folders(extensions_dir, folders) -> None:
    _extension_folders[str(Path(extensions_dir).resolve())] = [Path(f) for f in folders]


def _search_dirs(paths) -> list[Path]:
    dirs = [Path(d) for d in paths.localizations_dirs]
    ext_root = Path(paths.extensions_dir)
    loaded = _extension_folders.get(str(ext_root.resolve()))
    if loaded is not None:
        dirs += [e / "localizations" for e in loaded]
    elif ext_root.is_dir():
        dirs += [e / "localizations" for e in sorted(ext_root.iterdir(), key=lambda p: p.name.lower())
                 if e.is_dir() and not e.name.startswith(".")]
    return dirs


def list_localizations(paths) -> dict[str, list[Path]]:
    """{name: [files in merge order]} for every ``<name>.json`` found; names sorted."""
    found: dict[str, list[Path]] = {}
    seen: set[Path] = set()
    for d in _search_dirs(paths):
        if not d.is_dir():
            continue
        for f in sorted(d.iterdir(), key=lambda p: p.name.lower()):
            if f.suffix.lower() != ".json" or not f.is_file():
                continue
            rf = f.resolve()
            if rf in seen:  # the same folder listed twice (data dir == repo root)
                continue
            seen.add(rf)
            found.setdefault(f.stem, []).append(f)
    return dict(sorted(found.items(), key=lambda kv: kv[0].lower()))


def localization_choices(paths) -> list[str]:
    """Choices for the "localization" setting: "None" (English) and every file name found."""
    return ["None", *[n for n in list_localizations(paths) if n != "None"]]


def _problem(path: Path, why: str) -> None:
    msg = f"localization file {path} skipped: {why}"
    log.warning("%s", msg)
    if msg not in problems:
        problems.append(msg)


def read_localization_file(path: Path) -> dict[str, str] | None:
    """One file's mapping, or None (with a warning naming the file) when it is not valid."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError) as e:
        _problem(path, f"cannot be read ({e})")
        return None
    except ValueError as e:
        _problem(path, f"invalid JSON ({e})")
        return None
    if not isinstance(data, dict):
        _problem(path, f"expected a JSON object, found {type(data).__name__}")
        return None
    for k, v in data.items():
        if not isinstance(v, str):
            _problem(path, f"the value for {k!r} is a {type(v).__name__}, not a string")
            return None
    return data


def load_localization(name: str, paths) -> dict[str, str]:
    """The merged mapping for ``name``; {} for "None"/"" or a name with no files."""
    if not name or name == "None":
        return {}
    files = list_localizations(paths).get(name)
    if not files:
        log.warning("localization %r not found in %s", name, ", ".join(str(d) for d in _search_dirs(paths)))
        return {}
    merged: dict[str, str] = {}
    for f in files:
        data = read_localization_file(f)
        if data:
            merged.update(data)
    return merged


def current_name(app) -> str:
    name = app.opts.get("localization") or "None"
    return str(name)


# -- page script -------------------------------------------------------------------------

def _js_literal(obj) -> str:
    """JSON that is safe inside an inline <script> (no '</script>' or U+2028 surprises)."""
    s = json.dumps(obj, ensure_ascii=False, sort_keys=True)
    return (s.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def head_html(app) -> str:
    """<script> tags for the page head: ``window.localization`` (the chosen language's mapping,
    {} for English) and the translator script.  The script also asks
    ``/localization/current.json`` (see :func:`register`) so a language picked after the
    server started applies on the next page load."""
    name = current_name(app)
    mapping = load_localization(name, app.paths)
    code = JS_FILE.read_text(encoding="utf-8")
    return (f"<script>window.localization = {_js_literal(mapping)}; "
            f"window.localization_name = {_js_literal(name if mapping else 'None')};</script>\n"
            f"<script>\n{code}\n</script>\n")


# -- collecting the UI's strings -------------------------------------------------------------

class _TextCollector(html.parser.HTMLParser):
    """Text segments and translatable attributes of an HTML fragment, split like the DOM's text nodes."""

    SKIP = ("script", "style", "textarea", "code", "pre")

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self._skip = 0
        self._no_translate: list[int] = []  # depth markers of no-translate subtrees
        self._depth = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        void = tag in ("br", "hr", "img", "input", "meta", "link", "wbr", "source")
        if not void:
            self._depth += 1
        if NO_TRANSLATE_CLASS in (a.get("class") or "").split() and not void:
            self._no_translate.append(self._depth)
        if tag in self.SKIP and not void:
            self._skip += 1
        if self._skip or self._no_translate:
            return
        for attr in ("title", "placeholder", "aria-label", "alt"):
            if a.get(attr):
                self.out.append(a[attr])
        if tag == "input" and (a.get("type") or "").lower() in ("button", "submit", "reset") and a.get("value"):
            self.out.append(a["value"])

    def handle_endtag(self, tag):
        if tag in self.SKIP and self._skip:
            self._skip -= 1
        if self._no_translate and self._no_translate[-1] == self._depth:
            self._no_translate.pop()
        self._depth = max(0, self._depth - 1)

    def handle_data(self, data):
        if not self._skip and not self._no_translate:
            self.out.append(data)


def html_texts(fragment: str) -> list[str]:
    p = _TextCollector()
    p.feed(fragment)
    p.close()
    return p.out


_MD_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_MD_AUTOLINK = re.compile(r"<(https?://[^>]+)>")
_MD_SPLIT = re.compile(r"\*\*|__|(?<!\w)\*(?!\s)|(?<!\s)\*(?!\w)|(?<!\w)_(?!\s)|(?<!\s)_(?!\w)|~~")
_MD_BLOCK = re.compile(r"^\s{0,3}(#{1,6}\s+|>\s?|[-*+]\s+|\d+[.)]\s+)")


def markdown_texts(md: str) -> list[str]:
    """Approximate text nodes of rendered Markdown: inline code is skipped (code is not
    translated), emphasis and links split the text like the rendered DOM does."""
    out: list[str] = []
    in_fence = False
    paragraphs: list[list[str]] = [[]]
    for line in md.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            in_fence = not in_fence
            paragraphs.append([])
            continue
        if in_fence:
            continue
        if not line.strip() or _MD_BLOCK.match(line) or set(line.strip()) <= set("-=*_|: "):
            paragraphs.append([])
            line = _MD_BLOCK.sub("", line) if line.strip() and not set(line.strip()) <= set("-=*_|: ") else ""
        if line.strip():
            paragraphs[-1].append(line.strip())
    for para in paragraphs:
        if not para:
            continue
        text = " ".join(para)
        if "<" in text and re.search(r"<[a-zA-Z/]", text):
            out += html_texts(_MD_LINK.sub(r"\1", text))
            continue
        out += _inline_texts(_MD_AUTOLINK.sub(r"\1", text))
    return [html.unescape(t) for t in out]


def _inline_texts(text: str) -> list[str]:
    """Text nodes of one line of inline Markdown: code spans are skipped (never translated),
    links, bold and italic make separate nodes."""
    out: list[str] = []
    for piece in re.split(r"`[^`]*`", text):
        pos = 0
        for m in _MD_LINK.finditer(piece):
            out += _MD_SPLIT.split(piece[pos:m.start()])
            out += _MD_SPLIT.split(m.group(1))
            pos = m.end()
        out += _MD_SPLIT.split(piece[pos:])
    return out


def info_texts(info: str) -> list[str]:
    """Text nodes of a component's info text (Gradio renders it as inline Markdown, one line per line)."""
    out: list[str] = []
    for line in info.split("\n"):
        out += _inline_texts(line)
    return out


def _is_ui_word(text: str) -> bool:
    return bool(text) and bool(_HAS_LETTER.search(text))


def _classes(block) -> list[str]:
    c = getattr(block, "elem_classes", None) or []
    return [c] if isinstance(c, str) else list(c)


def _iter_blocks(blocks):
    """Every block under ``blocks`` (a gr.Blocks or any container), parents before children."""
    stack = [blocks]
    while stack:
        b = stack.pop()
        yield b
        children = getattr(b, "children", None) or []
        stack.extend(reversed(children))


def _choice_labels(choices) -> list[str]:
    out = []
    for c in choices or []:
        if isinstance(c, (tuple, list)) and c:
            c = c[0]
        if isinstance(c, str):
            out.append(c)
    return out


def collect_ui_strings(blocks) -> set[str]:
    """Every user-visible English string of a Gradio UI, in :func:`normalize` form.

    Labels, info texts, placeholders, button texts, tab and accordion titles, choices of
    dropdowns/radios/checkbox groups (not file or model names), headers of dataframes, and
    the static text of Markdown/HTML components.  Inside a block with the class
    ``no-translate`` only the components' labels and placeholders are UI text (the page
    script translates those and leaves the rest alone).
    """
    found: set[str] = set()

    def add(text):
        if isinstance(text, str):
            t = normalize(text)
            if _is_ui_word(t):
                found.add(t)

    protected: set[int] = set()  # ids of blocks inside a no-translate block
    for b in _iter_blocks(blocks):
        kind = type(b).__name__
        shielded = id(b) in protected or NO_TRANSLATE_CLASS in _classes(b)
        if shielded:
            protected.update(id(c) for c in getattr(b, "children", None) or [])
        if kind in _LABELLED_CONTAINERS:
            if not shielded:
                add(getattr(b, "label", None))
            continue
        if kind not in _BUTTON_TYPES:
            add(getattr(b, "label", None))
        add(getattr(b, "placeholder", None))
        if shielded:
            continue
        info = getattr(b, "info", None)
        if isinstance(info, str):
            for t in info_texts(info):
                add(t)
        if kind in _BUTTON_TYPES:
            add(getattr(b, "value", None))
            add(getattr(b, "label", None))
        if kind in _CHOICE_TYPES:
            for c in _choice_labels(getattr(b, "choices", None)):
                if not _FILE_LIKE.search(c.strip()):
                    add(c)
        if kind in _MARKUP_TYPES:
            value = getattr(b, "value", None)
            if isinstance(value, str) and value.strip():
                texts = markdown_texts(value) if kind == "Markdown" else html_texts(value)
                for t in texts:
                    add(t)
        if kind == "Dataframe":
            headers = getattr(b, "headers", None)
            if isinstance(headers, (list, tuple)):
                for h in headers:
                    add(h)
    return found


# Messages shown at run time: gr.Info("..."), gr.Warning("..."), raise gr.Error("...") and the UI's
# own message helpers (functions named *_html, e.g. error_html("...")) with a literal message.
_TOAST_CALLS = {"Info", "Warning", "Error"}


def _message_strings(arg) -> list[str]:
    """A literal message, or the "Label:" that starts an f-string message (the page script
    translates such a prefix when the rest is not a key, e.g. "Error: <details>")."""
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return [arg.value]
    if isinstance(arg, ast.BinOp) and isinstance(arg.op, ast.Add):  # "Label: " + details
        left = arg.left
        while isinstance(left, ast.BinOp) and isinstance(left.op, ast.Add):
            left = left.left
        if isinstance(left, ast.Constant) and isinstance(left.value, str) and left.value.strip().endswith(":"):
            return [left.value.strip()]
        return []
    if isinstance(arg, ast.JoinedStr) and arg.values:
        first = arg.values[0]
        if isinstance(first, ast.Constant) and isinstance(first.value, str):
            head = first.value.strip()
            if head.endswith(":") and len(arg.values) > 1:
                return [head]
    return []


def collect_source_messages(source_dir: Path | None = None) -> set[str]:
    """Messages the UI's source shows to the user at run time (see _message_strings).

    Messages built entirely at run time (exception texts) cannot be matched by exact text
    and are not listed."""
    source_dir = Path(source_dir or UI_SOURCE_DIR)
    files = sorted(source_dir.rglob("*.py")) if source_dir.is_dir() else []
    found: set[str] = set()
    for f in files:
        try:
            tree = ast.parse(f.read_text(encoding="utf-8"), filename=str(f))
        except (OSError, SyntaxError, ValueError):
            continue
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            fn = node.func
            name = fn.attr if isinstance(fn, ast.Attribute) else fn.id if isinstance(fn, ast.Name) else None
            if not name:
                continue
            if name in _TOAST_CALLS:
                if isinstance(fn, ast.Attribute) and not (isinstance(fn.value, ast.Name) and fn.value.id in ("gr", "gradio")):
                    continue
            elif not name.endswith("_html"):
                continue
            for text in _message_strings(node.args[0]):
                t = normalize(text)
                if _is_ui_word(t):
                    found.add(t)
    return found


def ui_strings(blocks, with_gradio: bool = True) -> set[str]:
    """What a complete translation of this UI needs: the blocks' strings, toast messages
    from the UI source, and (optionally) Gradio's own widget texts."""
    out = collect_ui_strings(blocks) | collect_source_messages()
    if with_gradio:
        out |= {normalize(s) for s in GRADIO_STRINGS}
    return out


def export_template(blocks) -> dict[str, str]:
    """{english: ""} for every string of the UI, sorted: the starting point for a new translation."""
    return template_of(ui_strings(blocks))


def template_of(strings: Iterable[str]) -> dict[str, str]:
    return {s: "" for s in sorted(set(strings), key=lambda s: (s.lower(), s))}


def missing_keys(mapping: dict[str, str], strings: Iterable[str]) -> list[str]:
    """The strings a mapping does not translate (keys compared in normalized form)."""
    have = {normalize(k) for k, v in mapping.items() if isinstance(v, str) and v.strip()}
    return sorted({s for s in strings if normalize(s) not in have}, key=str.lower)


# -- building the UI headlessly (template export without a running server) --------------------

@contextlib.contextmanager
def headless_ui(data_dir: Path | None = None):
    """Build the real UI with a throwaway App on a temporary data folder; yields the blocks."""
    import tempfile

    from modules import cmd_args
    from modules.app import App
    from modules.ui import create_ui

    with tempfile.TemporaryDirectory(prefix="sdwebui-l10n-") as tmp:
        app = App(cmd_args.parse_args(["--data-dir", str(data_dir or tmp)]))
        blocks, _head, _css = create_ui(app)
        yield blocks


# -- HTTP routes ------------------------------------------------------------------------------

def _mounted_blocks(server):
    """The gr.Blocks mounted on a FastAPI server by gr.mount_gradio_app, if any."""
    for route in getattr(server, "routes", []):
        sub = getattr(route, "app", None)
        get = getattr(sub, "get_blocks", None)
        if callable(get):
            try:
                return get()
            except Exception:  # noqa: BLE001 - not a gradio app after all
                continue
    return None


def register(server, app) -> None:
    """Add GET /localization/template.json, /localization/current.json and /localization/list.json."""
    from fastapi.responses import JSONResponse

    cache: dict = {}

    @server.get("/localization/template.json", include_in_schema=False)
    def localization_template():
        if "template" not in cache:
            blocks = _mounted_blocks(server)
            if blocks is not None:
                cache["template"] = export_template(blocks)
            else:
                with headless_ui() as built:
                    cache["template"] = export_template(built)
        return JSONResponse(cache["template"], headers={
            "Content-Disposition": 'attachment; filename="localization-template.json"'})

    @server.get("/localization/current.json", include_in_schema=False)
    def localization_current():
        name = current_name(app)
        mapping = load_localization(name, app.paths)
        return JSONResponse({"name": name if mapping else "None", "localization": mapping},
                            headers={"Cache-Control": "no-store"})

    @server.get("/localization/list.json", include_in_schema=False)
    def localization_list():
        return {"choices": localization_choices(app.paths), "problems": list(problems)}

    # A UI mounted at "/" answers every path: keep these routes ahead of it whatever the call order.
    routes = server.router.routes
    ours = [r for r in routes if getattr(r, "path", "").startswith("/localization/")]
    rest = [r for r in routes if r not in ours]
    routes[:] = ours + rest


# -- command line ---------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m modules.localization", description=__doc__.split("\n")[0])
    p.add_argument("--export-template", metavar="OUT.json", help="write {english: ''} for every UI string")
    p.add_argument("--missing", metavar="NAME", help="list the UI strings localization NAME does not translate")
    p.add_argument("--list", action="store_true", help="list the localizations found")
    p.add_argument("--data-dir", default=None, help="data folder (for extensions' localizations)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from modules import cmd_args, paths as paths_mod

    paths = paths_mod.Paths.from_args(cmd_args.parse_args(["--data-dir", a.data_dir] if a.data_dir else []))
    if a.list:
        for name, files in list_localizations(paths).items():
            print(name, *files, sep="\n  ")
    if a.export_template or a.missing:
        with headless_ui() as blocks:
            strings = ui_strings(blocks)
        if a.export_template:
            tpl = template_of(strings)
            Path(a.export_template).write_text(json.dumps(tpl, ensure_ascii=False, indent=4) + "\n", encoding="utf-8")
            print(f"wrote {len(tpl)} strings to {a.export_template}")
        if a.missing:
            miss = missing_keys(load_localization(a.missing, paths), strings)
            for s in miss:
                print(json.dumps(s, ensure_ascii=False))
            print(f"{len(miss)} missing from {a.missing}")
            return 1 if miss else 0
    if not (a.list or a.export_template or a.missing):
        p.print_help()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
