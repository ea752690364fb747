"""Extensions: folders with scripts, localizations, javascript and a style sheet (A1111's layout).

They are found in ``extensions-builtin/`` of the program and in the user's extensions folder
(``<data dir>/extensions``), one folder each::

    extensions/<name>/
        scripts/*.py            Script classes (modules/scripts.py), loaded into the app's registry
        localizations/*.json    translations, merged with the bundled ones of the same name
        javascript/*.js         put into the page's <head>, in name order
        style.css               added to the page's style sheet
        install.py              run at start with the app's Python (see below)

An extension is enabled unless the setting ``disabled_extensions`` names it or
``disable_all_extensions`` is "all" ("extra": only the built-in ones load).  Changes take effect at
the next start (the Extensions tab's "Apply and restart UI").

``install.py`` runs at start for an enabled extension when it is new, or when install.py or a
``requirements*.txt`` beside it changed since its last successful run (their digest is kept in
``<data dir>/extensions-install.json``): a subprocess of the app's Python, cwd the extension folder,
``PYTHONPATH`` the program folder, a time limit, its output logged.  When it fails the extension is
reported and not loaded for that run; the app starts anyway.  ``--skip-install`` skips it.

A script file that fails to import, or a hook that raises, switches the extension off for the run
(modules/scripts.py); the error is shown in the Extensions tab.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable

from modules import paths as paths_mod
from modules import scripts as scripts_mod

log = logging.getLogger(__name__)

BUILTIN_DIR = paths_mod.ROOT / "extensions-builtin"
RECORD_FILE = "extensions-install.json"   # in the data dir: {name: {"digest": ...}} of successful runs
INSTALL_TIMEOUT = 600.0                   # seconds an install.py may run
MAX_ZIP_BYTES = 2 << 30                   # uncompressed size an uploaded zip may have
DISABLE_ALL = ("none", "extra", "all")    # the disable_all_extensions setting
OK, DISABLED, RESTART = "ok", "disabled", "restart needed"


class InstallError(Exception):
    """Why an extension could not be installed (shown as it is)."""


@dataclass
class Extension:
    name: str
    path: Path
    is_builtin: bool = False
    enabled: bool = True        # enabled by the settings when the app started
    active: bool = False        # loaded in this run (enabled, install.py fine)
    error: str | None = None
    new: bool = False           # installed while the app runs: loads at the next start
    scripts: list = field(default_factory=list)
    _git: dict | None = field(default=None, repr=False)

    def git(self) -> dict:
        """commit, branch, remote and date of a git checkout (``git -C``; no network); {} otherwise."""
        if self._git is None:
            self._git = read_git_info(self.path)
        return self._git

    @property
    def commit(self) -> str:
        return self.git().get("commit", "")

    @property
    def version(self) -> str:
        return self.commit[:8]


def _git(folder: Path, *args: str) -> str | None:
    try:
        res = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=10,
                             stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout.strip() if res.returncode == 0 else None


def read_git_info(folder: Path) -> dict:
    if not (folder / ".git").exists():   # a folder inside another checkout is not its own repository
        return {}
    head = _git(folder, "rev-parse", "HEAD", "--abbrev-ref", "HEAD")
    if not head:
        return {}
    commit, _, branch = head.partition("\n")
    date = _git(folder, "show", "-s", "--format=%ct", "HEAD")
    return {"commit": commit, "branch": branch if branch != "HEAD" else None,
            "remote": _git(folder, "config", "--get", "remote.origin.url"),
            "date": int(date) if date and date.isdigit() else None}


def _folders(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted((d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")),
                  key=lambda p: p.name.lower())


# ---------------------------------------------------------------------------
# install.py


def installer_digest(folder: Path) -> str | None:
    """The digest of install.py and the requirements files beside it; None without install.py."""
    if not (folder / "install.py").is_file():
        return None
    h = hashlib.sha256()
    for f in [folder / "install.py", *sorted(folder.glob("requirements*.txt"))]:
        h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def _kill(proc: subprocess.Popen) -> None:
    try:
        if os.name == "posix":
            os.killpg(proc.pid, signal.SIGKILL)   # pip and whatever else it started
        else:
            proc.kill()
    except OSError:
        pass


def run_installer(folder: Path, timeout: float = INSTALL_TIMEOUT) -> str | None:
    """Run ``folder``/install.py; None when it succeeded, else what went wrong (with its last output)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(paths_mod.ROOT), os.environ.get("PYTHONPATH"))
                                                       if p), PYTHONUNBUFFERED="1")
    log.info("running install.py of %s", folder.name)
    try:
        proc = subprocess.Popen([sys.executable, "install.py"], cwd=folder, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
                                start_new_session=os.name == "posix")
    except OSError as e:
        return f"install.py could not be started ({e})"
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill(proc)
        output, _ = proc.communicate()
        problem = f"install.py did not finish within {timeout:g} s"
    else:
        problem = f"install.py failed (exit code {proc.returncode})" if proc.returncode else None
    for line in (output or "").splitlines():
        log.info("[%s install.py] %s", folder.name, line)
    if problem is None:
        return None
    tail = [ln for ln in (output or "").strip().splitlines() if ln.strip()][-5:]
    return problem + (": " + " | ".join(tail) if tail else "")


# ---------------------------------------------------------------------------
# zip files


def _member_path(info: zipfile.ZipInfo) -> PurePosixPath | None:
    """The member's relative path; InstallError for one that would land outside the folder."""
    name = info.filename.replace("\\", "/")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        raise InstallError(f"The zip file has an absolute path: {info.filename}")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise InstallError(f"The zip file has a path outside its folder: {info.filename}")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise InstallError(f"The zip file has a symbolic link: {info.filename}")
    if not parts or parts[0] == "__MACOSX":
        return None
    return PurePosixPath(*parts)


def zip_members(zf: zipfile.ZipFile) -> list[tuple[zipfile.ZipInfo, PurePosixPath]]:
    """The members to extract with their paths, all checked first."""
    out = [(info, p) for info in zf.infolist() if (p := _member_path(info)) is not None]
    if not out:
        raise InstallError("The zip file is empty")
    if sum(info.file_size for info, _ in out) > MAX_ZIP_BYTES:
        raise InstallError(f"The zip file unpacks to more than {MAX_ZIP_BYTES >> 30} GiB")
    return out


def zip_layout(members, zip_name: str) -> tuple[str, int]:
    """(extension name, leading path parts to drop): one top-level folder is the extension, files at
    the top make one named like the zip file."""
    tops = {p.parts[0] for _, p in members}
    if len(tops) == 1:
        top = next(iter(tops))
        if any(len(p.parts) > 1 or info.is_dir() for info, p in members):
            return top, 1
    return Path(zip_name).stem, 0


def extract_zip(zf: zipfile.ZipFile, members, strip: int, dest: Path) -> None:
    for info, p in members:
        rel = p.parts[strip:]
        if not rel:
            continue
        target = dest.joinpath(*rel)
        if info.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        with zf.open(info) as src, open(target, "wb") as out:
            shutil.copyfileobj(src, out)


# ---------------------------------------------------------------------------
# the manager


class ExtensionManager:
    """The extensions of an app: found, installed, loaded, reported; installs and the restart request."""

    def __init__(self, app, builtin_dir: Path | str | None = None):
        self.app = app
        self.root = Path(app.paths.extensions_dir)
        self.builtin_root = Path(builtin_dir or BUILTIN_DIR)
        self.record_file = Path(app.paths.data_dir) / RECORD_FILE
        self.extensions: dict[str, Extension] = {}
        self.install_timeout = INSTALL_TIMEOUT
        self.restart_handler: Callable[[], None] | None = None   # set by the server (webui.py)
        self.restart_requested = False
        app.scripts.on_failure.append(self._failed)

    # -- finding ------------------------------------------------------------------------------
    def discover(self) -> list[Extension]:
        """The folders of both roots (built-in first); known ones keep their state, new ones are added."""
        found: dict[str, Extension] = {}
        for root, builtin in ((self.builtin_root, True), (self.root, False)):
            for d in _folders(root):
                if d.name in found:
                    log.warning("extension %s: a built-in extension has this name; %s is skipped", d.name, d)
                    continue
                old = self.extensions.get(d.name)
                found[d.name] = old if old is not None and old.path == d else Extension(d.name, d, builtin)
        self.extensions = found
        return list(found.values())

    def wanted(self, ext: Extension) -> bool:
        """Whether the settings enable ``ext`` now (for the next start)."""
        mode = self.app.opts.get("disable_all_extensions")
        if mode == "all" or (mode == "extra" and not ext.is_builtin):
            return False
        disabled = self.app.opts.get("disabled_extensions") or []
        return ext.name not in ([disabled] if isinstance(disabled, str) else disabled)

    def active(self) -> list[Extension]:
        return [e for e in self.extensions.values() if e.active]

    # -- loading ------------------------------------------------------------------------------
    def load(self) -> None:
        """At start: every enabled extension's install.py (when needed), then its scripts."""
        mode = self.app.opts.get("disable_all_extensions")
        if mode != "none":
            log.warning('"Disable all extensions" is set to %r: %s', mode,
                        "no extension is loaded" if mode == "all" else "only built-in extensions are loaded")
        for ext in self.discover():
            ext.enabled = self.wanted(ext)
            if not ext.enabled or ext.active:
                continue
            if ext.name == scripts_mod.BUILT_IN:
                ext.error = f"the name '{ext.name}' is reserved"
                continue
            if not self.install(ext):
                continue
            ext.active = True
            ext.scripts = self.app.scripts.load_dir(ext.path / "scripts", ext.name)
        self._publish_localizations()

    def _publish_localizations(self) -> None:
        from modules import localization

        localization.set_extension_folders(self.root, [e.path for e in self.active()])

    def _failed(self, source: str, message: str) -> None:
        ext = self.extensions.get(source)
        if ext is not None:
            ext.error = message

    # -- install.py ---------------------------------------------------------------------------
    def _record(self) -> dict:
        try:
            data = json.loads(self.record_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _remember(self, name: str, digest: str) -> None:
        data = self._record()
        data[name] = {"digest": digest}
        self.record_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.record_file.with_name(self.record_file.name + f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")
        os.replace(tmp, self.record_file)

    def install(self, ext: Extension) -> bool:
        """Run ext's install.py if it is new or changed since its last successful run; False if it failed."""
        digest = installer_digest(ext.path)
        if digest is None or (self._record().get(ext.name) or {}).get("digest") == digest:
            return True
        if getattr(self.app.args, "skip_install", False):
            log.info("extension %s: install.py not run (--skip-install)", ext.name)
            return True
        problem = run_installer(ext.path, self.install_timeout)
        if problem is not None:
            ext.error = problem
            log.error("extension %s is not loaded: %s", ext.name, problem)
            return False
        self._remember(ext.name, digest)
        return True

    # -- installing new ones --------------------------------------------------------------------
    def check_name(self, name: str) -> str:
        name = (name or "").strip()
        if not name or name in (".", "..") or name.startswith(".") or re.search(r"[/\\:\0]", name):
            raise InstallError(f"Not a usable folder name: '{name}'")
        if name == scripts_mod.BUILT_IN:
            raise InstallError(f"The name '{name}' is reserved")
        for root in (self.root, self.builtin_root):
            if (root / name).exists():
                raise InstallError(f"An extension named '{name}' already exists: {root / name}")
        return name

    def _staging(self) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        return self.root / f".tmp-install-{uuid.uuid4().hex}"

    def _add(self, staged: Path, name: str) -> Extension:
        """Move a staged folder into place and list it (it loads at the next start)."""
        target = self.root / name
        if target.exists():
            shutil.rmtree(staged, ignore_errors=True)
            raise InstallError(f"An extension named '{name}' already exists: {target}")
        os.replace(staged, target)
        ext = Extension(name, target, new=True, enabled=False)
        self.extensions[name] = ext
        log.info("extension %s installed into %s", name, target)
        if self.wanted(ext):
            problem = None if installer_digest(target) is None else self._install_now(ext)
            ext.error = problem
        return ext

    def _install_now(self, ext: Extension) -> str | None:
        problem = run_installer(ext.path, self.install_timeout)
        if problem is None:
            self._remember(ext.name, installer_digest(ext.path))
        return problem

    def install_from_folder(self, folder: str | Path, name: str | None = None) -> Extension:
        """Copy a folder of this machine into the extensions folder."""
        text = str(folder or "").strip()
        if not text:
            raise InstallError("No folder given")
        src = Path(text).expanduser()
        if not src.is_dir():
            raise InstallError(f"Folder not found: {src}" if not src.exists() else f"Not a folder: {src}")
        src, root = src.resolve(), self.root.resolve()
        if src == root or root in src.parents or src in root.parents:
            raise InstallError(f"The folder is the extensions folder or inside it: {src}")
        name = self.check_name(name or src.name)
        staged = self._staging()
        try:
            shutil.copytree(src, staged, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
        except OSError as e:
            shutil.rmtree(staged, ignore_errors=True)
            raise InstallError(f"Copying {src} failed: {e}") from None
        return self._add(staged, name)

    def install_from_zip(self, zip_path: str | Path, name: str | None = None, zip_name: str | None = None) -> Extension:
        """Unpack a zip file (one top-level folder, or files at the top) into the extensions folder."""
        if not zip_path or not Path(zip_path).is_file():
            raise InstallError("No zip file given")
        zip_path = Path(zip_path)
        try:
            with zipfile.ZipFile(zip_path) as zf:
                members = zip_members(zf)
                auto, strip = zip_layout(members, zip_name or zip_path.name)
                name = self.check_name(name or auto)
                staged = self._staging()
                try:
                    extract_zip(zf, members, strip, staged)
                except Exception as e:  # noqa: BLE001 - a damaged member: nothing is left behind
                    shutil.rmtree(staged, ignore_errors=True)
                    raise InstallError(f"Unpacking {zip_path.name} failed: {e}") from None
        except zipfile.BadZipFile as e:
            raise InstallError(f"Not a zip file: {zip_name or zip_path.name} ({e})") from None
        return self._add(staged, name)

    # -- what the tab shows and saves ------------------------------------------------------------
    def status(self, ext: Extension) -> str:
        """ok, disabled, restart needed (the settings changed, or it is new), or its error."""
        wanted = self.wanted(ext)
        if ext.new:
            return ext.error or (RESTART if wanted else DISABLED)
        if wanted != ext.enabled:
            return RESTART
        if ext.error:
            return ext.error
        return OK if ext.enabled else DISABLED

    def apply(self, states: dict[str, bool], disable_all: str = "none") -> list[str]:
        """Save what the next start loads (A1111's settings): ``states`` is name -> enabled for the listed
        extensions (the others keep their setting); the disabled names."""
        if disable_all not in DISABLE_ALL:
            raise ValueError(f"disable_all_extensions must be one of {', '.join(DISABLE_ALL)}, got {disable_all!r}")
        current = self.app.opts.get("disabled_extensions") or []
        current = [current] if isinstance(current, str) else list(current)
        disabled = sorted({n for n in current if n not in states}
                          | {n for n, on in states.items() if not on and n in self.extensions})
        self.app.opts.update({"disabled_extensions": disabled, "disable_all_extensions": disable_all})
        return disabled

    def request_restart(self) -> bool:
        """Ask the server to restart (False when it runs without a way to: restart it by hand)."""
        self.restart_requested = True
        if self.restart_handler is None:
            log.warning("restart requested, but this server cannot restart itself; restart it to apply the changes")
            return False
        self.restart_handler()
        return True

    def api_list(self) -> list[dict]:
        """A1111's /sdapi/v1/extensions items."""
        out = []
        for e in self.extensions.values():
            g = e.git()
            out.append({"name": e.name, "remote": g.get("remote") or "", "branch": g.get("branch") or "",
                        "commit_hash": e.commit, "version": e.version, "commit_date": g.get("date"),
                        "enabled": e.enabled})
        return out

    # -- the page ---------------------------------------------------------------------------------
    def javascript_files(self) -> list[Path]:
        return [f for e in self.active() for f in sorted((e.path / "javascript").glob("*.js"))
                if f.is_file()]

    def css_files(self) -> list[Path]:
        return [e.path / "style.css" for e in self.active() if (e.path / "style.css").is_file()]

    def head_html(self) -> str:
        """<script> tags with the active extensions' javascript, in extension and file order."""
        parts = []
        for f in self.javascript_files():
            code = _read(f).replace("</script", "<\\/script")
            parts.append(f'<script data-extension="{f.parent.parent.name}">\n{code}\n</script>')
        return "\n".join(parts)

    def css(self) -> str:
        return "\n".join(f"/* {f.parent.name} */\n{_read(f)}" for f in self.css_files())


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        log.warning("%s could not be read: %s", path, e)
        return ""
