"""The picture history: the images in the output folders, newest first, for the History tab and the API.

The folders are the settings ``outdir_*`` (txt2img / img2img samples and grids, the Save button's folder,
``outdir_samples`` when set, and any other output folder a setting names), relative to the data dir as
:meth:`modules.app.App.save_output` reads them.  Each picture comes with its date (from the file's
modification time, whatever the folder is called), size and infotext (read from the file's metadata, or from
its ``.txt`` sidecar; pixels are never decoded).  What a file says is cached by path, modification time and
size, so listing thousands of pictures costs a walk of the folders and a ``stat`` per file.

Deleting moves a picture (and its ``.txt``) into ``outputs/.trash/`` of the data dir, keeping its relative
path; folders whose name starts with a dot (the trash, temp files) are never listed.  Only a path exactly as
the listing gave it is accepted for reading or deleting: anything else (``..``, other files, links) is
:class:`NotInHistory`.
"""
from __future__ import annotations

import datetime as _dt
import logging
import math
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".avif")
NOT_OUTPUTS = ("outdir_init_images",)      # folder settings that hold inputs, not results
TRASH_NAME = ".trash"
MAX_PAGE_SIZE = 500
MAX_FILES = 200_000                        # a walk stops here (an output folder set to "/" must not hang)


class NotInHistory(LookupError):
    """A path that is not a picture of the listing (unknown, outside the output folders, in the trash)."""


@dataclass(frozen=True)
class Item:
    path: str              # relative to the data dir (absolute for an output folder outside it), "/"-separated
    file: Path             # the file on disk
    name: str
    date: str              # YYYY-MM-DD of the modification time (local time)
    mtime: float
    width: int
    height: int
    infotext: str
    prompt: str

    def api(self) -> dict:
        return {"path": self.path, "name": self.name, "date": self.date, "mtime": self.mtime,
                "width": self.width, "height": self.height, "infotext": self.infotext, "prompt": self.prompt}


@dataclass(frozen=True)
class Page:
    total: int             # pictures that match the search and date
    page: int              # 1-based
    page_size: int
    items: list

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.total / self.page_size))


@dataclass(frozen=True)
class _Meta:
    width: int
    height: int
    infotext: str
    prompt: str


def read_meta(file: Path) -> _Meta | None:
    """Size and infotext of an image file from its header and metadata (None when it is no readable image)."""
    from PIL import Image

    from modules import images

    try:
        with Image.open(file) as im:
            width, height = im.size
            text, _ = images.read_info_from_image(im)
    except Exception as e:  # noqa: BLE001 - a broken file in the folder is left out, never breaks the list
        log.info("history: %s is not a readable image (%s)", file, e)
        return None
    if not text:
        text = _sidecar_text(file)
    return _Meta(width, height, text or "", prompt_of(text or ""))


def _sidecar_text(file: Path) -> str:
    try:
        return file.with_suffix(".txt").read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return ""


def prompt_of(text: str) -> str:
    from modules import infotext

    if not text:
        return ""
    return str(infotext.parse_generation_parameters(text, defaults=False).get("Prompt", ""))


def date_of(mtime: float) -> str:
    return _dt.datetime.fromtimestamp(mtime).strftime("%Y-%m-%d")


class History:
    """The pictures of one app's output folders (settings read at every listing)."""

    def __init__(self, data_dir: Path, opts, trash_dir: Path | None = None):
        self.data_dir = Path(data_dir).resolve()
        self.opts = opts
        self.trash_dir = Path(trash_dir or self.data_dir / "outputs" / TRASH_NAME).resolve()
        self._cache: dict[str, tuple[int, int, _Meta | None]] = {}
        self._lock = threading.Lock()

    # -- folders ---------------------------------------------------------------
    def roots(self) -> list[Path]:
        """The output folders that exist, resolved, each once."""
        snap = self.opts.snapshot()
        out: list[Path] = []
        for key in sorted(k for k in snap if k.startswith("outdir_") and k not in NOT_OUTPUTS):
            value = snap.get(key)
            if not isinstance(value, str) or not value.strip():
                continue
            folder = Path(value.strip())
            folder = (folder if folder.is_absolute() else self.data_dir / folder).resolve()
            if folder.is_dir() and folder not in out and not self._in_trash(folder):
                out.append(folder)
        return out

    def _in_trash(self, p: Path) -> bool:
        return p == self.trash_dir or p.is_relative_to(self.trash_dir)

    def _walk(self, root: Path):
        """Image files under `root`: no links, nothing in folders whose name starts with a dot."""
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in filenames:
                if name.startswith(".") or not name.lower().endswith(IMAGE_EXTENSIONS):
                    continue
                yield Path(dirpath) / name

    def relative(self, file: Path) -> str:
        return file.relative_to(self.data_dir).as_posix() if file.is_relative_to(self.data_dir) else file.as_posix()

    # -- listing -----------------------------------------------------------------
    def items(self) -> list[Item]:
        """Every picture, newest first (ties: the later name first)."""
        with self._lock:
            found: dict[str, Item] = {}
            for root in self.roots():
                for file in self._walk(root):
                    if len(found) >= MAX_FILES:
                        break
                    item = self._item(file)
                    if item is not None:
                        found.setdefault(item.path, item)
            for key in set(self._cache) - {str(i.file) for i in found.values()}:
                del self._cache[key]
        return sorted(found.values(), key=lambda i: (i.mtime, i.path), reverse=True)

    def _item(self, file: Path) -> Item | None:
        try:
            st = file.lstat()
        except OSError:
            return None
        if not os.path.isfile(file) or os.path.islink(file):
            return None
        key = str(file)
        cached = self._cache.get(key)
        if cached is not None and cached[:2] == (st.st_mtime_ns, st.st_size):
            meta = cached[2]
        else:
            meta = read_meta(file)
            self._cache[key] = (st.st_mtime_ns, st.st_size, meta)
        if meta is None:
            return None
        return Item(path=self.relative(file), file=file, name=file.name, date=date_of(st.st_mtime),
                    mtime=st.st_mtime, width=meta.width, height=meta.height, infotext=meta.infotext,
                    prompt=meta.prompt)

    def page(self, page: int = 1, page_size: int = 50, search: str = "", date: str | None = None) -> Page:
        """One page of the pictures whose infotext contains `search` (any case) from `date` (YYYY-MM-DD)."""
        return paginate(filter_items(self.items(), search, date), page, page_size)

    def dates(self, items: list[Item] | None = None) -> list[tuple[str, int]]:
        """(date, number of pictures) of each day with pictures, newest first."""
        counts: dict[str, int] = {}
        for item in self.items() if items is None else items:
            counts[item.date] = counts.get(item.date, 0) + 1
        return sorted(counts.items(), reverse=True)

    # -- one picture ---------------------------------------------------------------
    def find(self, path: str) -> Item:
        """The picture the listing calls `path` (exactly), checked again against the output folders."""
        if not isinstance(path, str) or not path or "\x00" in path:
            raise NotInHistory(f"{path!r} is not a picture of the history")
        for item in self.items():
            if item.path == path:
                real = item.file.resolve()
                if any(real.is_relative_to(r) for r in self.roots()) and not self._in_trash(real):
                    return item
        raise NotInHistory(f"{path!r} is not a picture of the history")

    def delete(self, path: str) -> Path:
        """Move the picture `path` (and its .txt sidecar) into the trash; returns where the picture went."""
        item = self.find(path)
        rel = item.path.lstrip("/")
        target = _free_name(self.trash_dir / rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(item.file), str(target))
        sidecar = item.file.with_suffix(".txt")
        if sidecar.is_file() and not sidecar.is_symlink():
            shutil.move(str(sidecar), str(_free_name(target.with_suffix(".txt"))))
        with self._lock:
            self._cache.pop(str(item.file), None)
        log.info("history: moved %s to %s", item.file, target)
        return target


def filter_items(items: list[Item], search: str = "", date: str | None = None) -> list[Item]:
    needle = (search or "").strip().lower()
    return [i for i in items if (not date or i.date == date) and (not needle or needle in i.infotext.lower())]


def paginate(items: list[Item], page: int = 1, page_size: int = 50) -> Page:
    page_size = max(1, min(int(page_size), MAX_PAGE_SIZE))
    page = max(1, int(page))
    start = (page - 1) * page_size
    return Page(total=len(items), page=page, page_size=page_size, items=items[start:start + page_size])


def _free_name(target: Path) -> Path:
    """`target`, or `name-1.ext`, `name-2.ext`, ... when a file of that name is already there."""
    n = 0
    candidate = target
    while candidate.exists() or candidate.with_suffix(".txt").exists():
        n += 1
        candidate = target.with_name(f"{target.stem}-{n}{target.suffix}")
    return candidate


_APPS_LOCK = threading.Lock()


def for_app(app) -> History:
    """The app's History (one per app, shared by the UI and the API)."""
    with _APPS_LOCK:
        hist = getattr(app, "_picture_history", None)
        if hist is None:
            hist = History(app.paths.data_dir, app.opts, app.paths.outputs_dir / TRASH_NAME)
            app._picture_history = hist
        return hist
