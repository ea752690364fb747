"""Scripts: A1111's "Script" dropdown and always-on sections, on the engine's hook points.

A script is a class in a Python file of ``scripts/`` (the built-in ones) or of
``extensions/<name>/scripts/``::

    from modules.scripts import Arg, Script

    class Vignette(Script):
        title = "Vignette"
        show = "both"              # "txt2img", "img2img" or "both"
        alwayson = True            # a collapsible section, runs with every job while enabled

        def args(self, is_img2img):
            return [Arg("enabled", "Enable", "checkbox", False, infotext="Vignette"),
                    Arg("strength", "Strength", "slider", 0.5, 0.0, 1.0, 0.05, infotext="Vignette strength")]

        def after_image(self, ctx, image, a):      # a: the arguments by name (a.strength, a["strength"])
            return darken_edges(image, a.strength)  # a replacement picture, or None to keep it

A script has its arguments (:class:`Arg`: the UI control, the API's argument, the infotext key) and
hooks by name, each called with the job context and the arguments:

=================================  ================================================================
``before_job(ctx, a)``             after the prompts are prepared, before the first batch
``before_batch(ctx, batch, a)``    before each batch (``batch.index``, ``batch.seeds``)
``before_step(ctx, step, a)``      before each sampler step (:class:`modules.engine.sampling.StepInfo`)
``after_step(ctx, step, a)``       after each sampler step
``cfg_denoiser(ctx, denoiser, a)`` the denoiser the sampler calls: return a replacement or None
``after_image(ctx, image, a)``     each decoded picture, before its infotext and saving: return a
                                   replacement or None
``after_job(ctx, result, a)``      after the job (``result`` None when it failed)
=================================  ================================================================

A script that is not always-on is picked in the "Script" dropdown and has a ``run(job, a)`` that
replaces the job: it calls ``job.process(request)`` for every picture it needs (X/Y/Z plot, SD
upscale) and returns a :class:`~modules.engine.result.GenerationResult`.  Its hooks (if any) run in
every job it processes.  Always-on scripts' hooks run in every job where ``enabled(a)`` is true.

Arguments reach a script by name.  The API's A1111 forms are mapped onto the names here: the
positional ``script_args`` list of ``script_name`` and ``alwayson_scripts: {"name": {"args": [...]}}``
(positions in the order of :meth:`Script.args`), or a dict by name.  A bad value is a
:class:`~modules.engine.request.RequestError` naming the script and the argument (the API's 422).

A hook that raises is reported (a warning of the job, :attr:`ScriptRegistry.errors`) and its script
is disabled for this run of the app (every script of an extension, for an extension's); the job goes
on.  A ``run`` that raises fails its job, as any job failure does.

In the UI, each argument is a control; ``ui_extra(tab, comps, is_img2img)`` may add controls that are
not arguments (buttons, a file upload: X/Y/Z's swap buttons, Prompts from file's upload) below them,
and ``ui_wire(tab, comps, is_img2img)`` connects their events (``comps``: name -> gradio component).
"""
from __future__ import annotations

import copy
import importlib.util
import logging
import sys
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from modules.engine.request import RequestError

log = logging.getLogger(__name__)

TXT2IMG, IMG2IMG, BOTH = "txt2img", "img2img", "both"
BUILT_IN = "built-in"
NONE_TITLE = "None"   # the Script dropdown's first choice

KINDS = ("slider", "number", "checkbox", "dropdown", "radio", "textbox", "textarea", "html", "object")

# hook method -> (hook point, kind): "fire" passes through, "wrap" may return a replacement
HOOKS = {
    "before_job": ("before_job", "fire"),
    "before_batch": ("before_batch", "fire"),
    "before_step": ("before_step", "fire"),
    "after_step": ("after_step", "fire"),
    "cfg_denoiser": ("cfg_denoiser", "wrap"),
    "unet_call": ("unet_call", "wrap"),
    "after_image": ("after_image_decoded", "wrap"),
    "after_job": ("after_job", "fire"),
}


# ---------------------------------------------------------------------------
# arguments


@dataclass(frozen=True)
class Arg:
    """One argument of a script: its UI control, its API argument, its infotext key.

    ``kind``: slider, number, checkbox, dropdown, radio, textbox, textarea, or html (a text shown in the
    UI that still takes a position in the API's list, as A1111's info boxes do; its value is ignored).
    ``choices`` of a dropdown or radio: labels, or a function of ``(app, is_img2img)`` giving them; the
    value is the label (the API also takes the index, as A1111's ``type="index"`` controls do).
    ``object``: a JSON value (e.g. a ControlNet unit) checked and normalised by ``parse`` (ValueError saying
    what is wrong); its UI control is a hidden JSON holder the script's ``ui_extra`` controls fill.
    """
    name: str
    label: str
    kind: str = "textbox"
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    choices: Any = None
    multiselect: bool = False
    whole: bool = False            # a number that must be whole (int)
    infotext: str | None = None    # the key of the generation parameters text
    info: str = ""                 # help text under the control
    visible: bool = True           # shown in the UI (hidden ones still take their API position)
    parse: Callable[[Any], Any] | None = None   # kind "object": value -> normalised value

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"argument {self.name!r}: unknown kind {self.kind!r}; one of {', '.join(KINDS)}")

    @property
    def is_input(self) -> bool:
        return self.kind != "html"

    def choice_list(self, app=None, is_img2img: bool = False) -> list:
        c = self.choices
        if callable(c):
            c = c(app, is_img2img)
        return list(c or [])

    def coerce(self, value: Any, app=None, is_img2img: bool = False) -> Any:
        """The argument's value from a UI or API value; ValueError saying what is wrong."""
        k = self.kind
        if k == "html":
            return self.default
        if k == "object":
            return self.parse(value) if self.parse is not None else value
        if k == "checkbox":
            if isinstance(value, str) and value.strip().lower() in ("true", "false"):
                return value.strip().lower() == "true"
            if not isinstance(value, (bool, int)):
                raise ValueError(f"must be true or false, got {value!r}")
            return bool(value)
        if k in ("slider", "number"):
            return self._number(value)
        if k in ("dropdown", "radio"):
            choices = self.choice_list(app, is_img2img)
            if self.multiselect:
                if value is None:
                    return []
                if isinstance(value, str):
                    value = [value]
                if not isinstance(value, (list, tuple)):
                    raise ValueError(f"must be a list of choices, got {value!r}")
                return [self._choice(v, choices) for v in value]
            return self._choice(value, choices)
        if value is None:
            return ""
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ValueError(f"must be text, got {value!r}")
        return str(value)

    def _number(self, value: Any) -> int | float:
        import math

        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise ValueError(f"must be a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"must be a finite number, got {value!r}")
        if self.whole:
            if int(value) != value:
                raise ValueError(f"must be a whole number, got {value!r}")
            value = int(value)
        if self.minimum is not None and value < self.minimum:
            raise ValueError(f"must be at least {self.minimum}, got {value!r}")
        if self.maximum is not None and value > self.maximum:
            raise ValueError(f"must be at most {self.maximum}, got {value!r}")
        return value

    def _choice(self, value: Any, choices: list) -> Any:
        if not choices:  # choices only the UI knows (e.g. files): any text
            return value if value is None else str(value)
        if isinstance(value, bool):
            raise ValueError(f"must be one of {', '.join(map(str, choices))}, got {value!r}")
        if isinstance(value, (int, float)) and int(value) == value and value not in choices:
            i = int(value)
            if 0 <= i < len(choices):
                return choices[i]
            raise ValueError(f"index {i} is out of range (0..{len(choices) - 1})")
        if value in choices:
            return value
        low = {str(c).lower(): c for c in choices}
        if isinstance(value, str) and value.strip().lower() in low:
            return low[value.strip().lower()]
        raise ValueError(f"must be one of {', '.join(map(str, choices))}, got {value!r}")

    def describe(self, app=None, is_img2img: bool = False) -> dict:
        """A1111's ScriptArg of /sdapi/v1/script-info."""
        choices = self.choice_list(app, is_img2img) if self.kind in ("dropdown", "radio") else None
        return {"label": self.label, "value": self.default, "minimum": self.minimum, "maximum": self.maximum,
                "step": self.step, "choices": choices}


class Args(dict):
    """A script's arguments by name; also readable as attributes (``a.strength``; an argument named
    like a dict method, ``a.values``, is the argument)."""

    def __getattribute__(self, name: str) -> Any:
        if not name.startswith("_") and dict.__contains__(self, name):
            return dict.__getitem__(self, name)
        return super().__getattribute__(name)

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(name)


# ---------------------------------------------------------------------------
# scripts


class Script:
    """The base of every script (see the module docstring)."""
    title: str = ""
    show: str = BOTH
    alwayson: bool = False
    source: str = BUILT_IN       # "built-in", or the extension's folder name (set when loaded)
    path: str = ""               # the file it came from
    app: Any = None              # the app of the registry it was added to (its settings, its libraries)

    def args(self, is_img2img: bool) -> list[Arg]:
        return []

    def shows(self, is_img2img: bool) -> bool:
        return self.show == BOTH or self.show == (IMG2IMG if is_img2img else TXT2IMG)

    @property
    def name(self) -> str:
        """The API's name: the title in lower case (A1111's)."""
        return self.title.lower()

    def enabled(self, a: Args) -> bool:
        """Whether an always-on script acts in a job (its "enabled" checkbox where it has one)."""
        return bool(a.get("enabled", True))

    def infotext(self, a: Args) -> dict[str, Any]:
        """The generation parameters this script writes into each picture's infotext (always-on scripts,
        while enabled): the arguments that name an infotext key."""
        return {arg.infotext: a[arg.name] for arg in self.args(False) + self.args(True)
                if arg.infotext and arg.name in a}

    def ui_extra(self, tab, comps: dict, is_img2img: bool) -> dict:
        """Controls of the UI only (no argument, no API position), made inside the script's section below
        its arguments' controls; a dict name -> component, added to ``comps`` for :meth:`ui_wire`."""
        return {}

    def ui_wire(self, tab, comps: dict, is_img2img: bool) -> None:
        """Events of the script's own controls (``comps``: argument or ui_extra name -> gradio component)."""

    def ui_paste(self, params: dict, is_img2img: bool) -> dict:
        """What pasting an infotext (``params``: its parsed fields) puts into the script's ui_extra controls:
        name -> value or gradio update. Arguments named in the infotext are pasted without it."""
        return {}

    def run(self, job: "ScriptJob", a: Args):
        raise NotImplementedError(f"script {self.title!r} has no run()")

    def defaults(self, is_img2img: bool) -> Args:
        return Args({arg.name: copy.deepcopy(arg.default) for arg in self.args(is_img2img) if arg.is_input})

    def hook_methods(self) -> list[str]:
        return [m for m in HOOKS if getattr(type(self), m, None) is not getattr(Script, m, None)]


@dataclass
class ScriptError:
    """A script or extension that failed: where, and what it said."""
    source: str
    where: str
    message: str
    traceback: str = ""


# ---------------------------------------------------------------------------
# the registry


class ScriptRegistry:
    """The scripts of an app: the built-in ones and the enabled extensions'."""

    def __init__(self, app=None):
        self.app = app
        self.scripts: list[Script] = []
        self.errors: list[ScriptError] = []
        self.disabled_sources: set[str] = set()     # extensions switched off for this run (they failed)
        self.on_failure: list[Callable[[str, str], None]] = []   # (source, message): the extensions' list
        self._lock = threading.Lock()

    # -- loading ------------------------------------------------------------------------------
    def load_dir(self, folder: Path | str, source: str = BUILT_IN) -> list[Script]:
        """Load every ``*.py`` of ``folder`` (in name order); a file that fails to import is reported."""
        folder = Path(folder)
        found: list[Script] = []
        if not folder.is_dir():
            return found
        for path in sorted(folder.glob("*.py")):
            if path.name.startswith("_"):
                continue
            try:
                found.extend(self.load_file(path, source))
            except Exception as e:  # noqa: BLE001 - a broken file must not stop the app
                self.report(source, f"loading {path.name}", e)
                if source != BUILT_IN:   # the extension is off for this run: none of its scripts
                    return []
        return found

    def load_file(self, path: Path, source: str = BUILT_IN) -> list[Script]:
        safe = "".join(c if c.isalnum() else "_" for c in f"{source}_{path.stem}")
        mod_name = f"sdwebui_scripts.{safe}"
        spec = importlib.util.spec_from_file_location(mod_name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[mod_name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(mod_name, None)
            raise
        found = []
        for obj in list(vars(module).values()):
            if isinstance(obj, type) and issubclass(obj, Script) and obj is not Script \
                    and obj.__module__ == mod_name and obj.title:
                script = obj()
                script.source, script.path = source, str(path)
                self.add(script)
                found.append(script)
        return found

    def add(self, script: Script) -> Script:
        if script.app is None:
            script.app = self.app
        with self._lock:
            self.scripts = [s for s in self.scripts if s.name != script.name] + [script]
        return script

    def remove_source(self, source: str) -> None:
        with self._lock:
            self.scripts = [s for s in self.scripts if s.source != source]

    # -- failures -------------------------------------------------------------------------------
    def report(self, source: str, where: str, exc: BaseException) -> ScriptError:
        """Record a failure; an extension's scripts are switched off for this run, a built-in script's
        failing script only (``where`` names it)."""
        err = ScriptError(source, where, f"{type(exc).__name__}: {exc}", traceback.format_exc())
        log.error("%s failed (%s): %s", source, where, err.message)
        with self._lock:
            self.errors.append(err)
        if source != BUILT_IN:
            self.disabled_sources.add(source)
            self.remove_source(source)
        for fn in list(self.on_failure):
            try:
                fn(source, f"{where}: {err.message}")
            except Exception:  # noqa: BLE001
                log.exception("failure listener")
        return err

    def _disable_script(self, script: Script, where: str, exc: BaseException) -> None:
        self.report(script.source, where, exc)
        if script.source == BUILT_IN:
            with self._lock:
                self.scripts = [s for s in self.scripts if s is not script]

    # -- lookup ---------------------------------------------------------------------------------
    def find(self, name: str | None) -> Script | None:
        if not name or not isinstance(name, str):
            return None
        low = name.strip().lower()
        for s in self.scripts:
            if s.name == low:
                return s
        return None

    def selectable(self, is_img2img: bool) -> list[Script]:
        return [s for s in self.scripts if not s.alwayson and s.shows(is_img2img)]

    def alwayson(self, is_img2img: bool) -> list[Script]:
        return [s for s in self.scripts if s.alwayson and s.shows(is_img2img)]

    # -- requests -------------------------------------------------------------------------------
    def prepare(self, req) -> None:
        """Check and normalize a request's scripts in place: ``script_name`` -> the script's title,
        ``script_args`` and each ``alwayson_scripts`` entry -> their arguments by name, every value
        checked (RequestError naming the script and the argument)."""
        img = req.is_img2img
        name = req.script_name
        if name in (None, "", NONE_TITLE) or (isinstance(name, str) and name.lower() == "none"):
            req.script_name, req.script_args = None, {}
        else:
            script = self.find(name)
            if script is None or script.alwayson or not script.shows(img):
                names = ", ".join(s.name for s in self.selectable(img)) or "none"
                raise RequestError("script_name", f"script '{name}' not found for {req.mode}; the scripts are: {names}")
            req.script_name = script.title
            req.script_args = self.map_args(script, req.script_args, img, "script_args")
        out: dict[str, dict] = {}
        for key, entry in (req.alwayson_scripts or {}).items():
            script = self.find(key)
            field = f"alwayson_scripts.{key}"
            if script is None or not script.alwayson or not script.shows(img):
                names = ", ".join(s.name for s in self.alwayson(img)) or "none"
                raise RequestError(field, f"always-on script '{key}' not found for {req.mode}; they are: {names}")
            values = entry.get("args", entry) if isinstance(entry, dict) and "args" in entry else entry
            out[script.title] = self.map_args(script, values, img, field + ".args")
        req.alwayson_scripts = out

    def map_args(self, script: Script, values: Any, is_img2img: bool, field: str = "script_args") -> Args:
        """A script's arguments by name from a positional list (A1111's API) or a dict by name; missing
        ones take their defaults."""
        specs = script.args(is_img2img)
        a = script.defaults(is_img2img)
        if values is None:
            return a
        if isinstance(values, Args):
            values = dict(values)
        if isinstance(values, (list, tuple)):
            if len(values) > len(specs):
                raise RequestError(field, f"script '{script.title}' takes {len(specs)} arguments "
                                          f"({', '.join(s.name for s in specs)}), got {len(values)}")
            pairs = [(spec, v, f"{field}[{i}] ({spec.name})") for i, (spec, v) in enumerate(zip(specs, values))]
        elif isinstance(values, dict):
            by_name = {s.name: s for s in specs}
            unknown = [k for k in values if k not in by_name]
            if unknown:
                raise RequestError(field, f"script '{script.title}' has no argument {unknown[0]!r}; its arguments "
                                          f"are {', '.join(by_name)}")
            pairs = [(by_name[k], v, f"{field}.{k}") for k, v in values.items()]
        else:
            raise RequestError(field, f"script '{script.title}': arguments must be a list or an object, "
                                      f"got {type(values).__name__}")
        for spec, v, where in pairs:
            if not spec.is_input:
                continue
            try:
                a[spec.name] = spec.coerce(v, self.app, is_img2img)
            except ValueError as e:
                raise RequestError(where, f"script '{script.title}', argument '{spec.label}': {e}") from None
        return a

    def selected(self, req) -> Script | None:
        return self.find(req.script_name) if req.script_name else None

    def active_alwayson(self, req) -> list[tuple[Script, Args]]:
        """The always-on scripts acting in a job of ``req``: the ones the request names, with its arguments,
        and the others with their defaults, each where ``enabled``."""
        img = req.is_img2img
        given = {self.find(k): v for k, v in (req.alwayson_scripts or {}).items()}
        out = []
        for s in self.alwayson(img):
            a = given.get(s)
            a = Args(a) if a is not None else s.defaults(img)
            if s.enabled(a):
                out.append((s, a))
        return out

    # -- jobs -----------------------------------------------------------------------------------
    def job_hooks(self, base, req, extra: Iterable[tuple[Script, Args]] = ()):
        """A copy of the app's hooks with the handlers of the scripts acting in a job of ``req`` (the
        always-on ones, and ``extra``: the selected script while its run processes jobs)."""
        active = [*self.active_alwayson(req), *extra]
        if not active:
            return base
        hooks = base.copy()
        for script, a in active:
            for method in script.hook_methods():
                point, kind = HOOKS[method]
                hooks.add(point, self._handler(script, method, kind, a), f"script:{script.title}:{method}")
            if script.alwayson:
                hooks.add("before_job", self._infotext_handler(script, a), f"script:{script.title}:infotext",
                          first=True)
        return hooks

    def _handler(self, script: Script, method: str, kind: str, a: Args):
        fn = getattr(script, method)
        registry = self
        state = {"off": False}

        def call(ctx, *args):
            if state["off"]:
                return None
            try:
                return fn(ctx, *args, a)
            except Exception as e:  # noqa: BLE001 - a failing script is switched off; the job goes on
                if type(e).__name__ == "Interrupted" or isinstance(e, RequestError):
                    raise   # a RequestError fails the job as bad input (the API's 422), the script stays on
                state["off"] = True
                registry._disable_script(script, f"script '{script.title}' {method}", e)
                ctx.warn(f"script '{script.title}' failed in {method} ({type(e).__name__}: {e}); "
                         f"it is disabled for this run")
                return None
        return call

    def _infotext_handler(self, script: Script, a: Args):
        def add(ctx):
            try:
                params = script.infotext(a)
            except Exception as e:  # noqa: BLE001
                self._disable_script(script, f"script '{script.title}' infotext", e)
                return
            ctx.extra_params.update({k: v for k, v in params.items() if v not in (None, "")})
        return add

    # -- the API's descriptions -------------------------------------------------------------------
    def api_list(self) -> dict:
        """/sdapi/v1/scripts: the selectable scripts' names per tab (A1111 lists them in lower case)."""
        return {"txt2img": [s.name for s in self.selectable(False)] + [s.name for s in self.alwayson(False)],
                "img2img": [s.name for s in self.selectable(True)] + [s.name for s in self.alwayson(True)]}

    def api_info(self) -> list[dict]:
        """/sdapi/v1/script-info: every script per tab with its arguments."""
        out = []
        for img in (False, True):
            for s in self.scripts:
                if s.shows(img):
                    out.append({"name": s.name, "is_alwayson": bool(s.alwayson), "is_img2img": img,
                                "args": [arg.describe(self.app, img) for arg in s.args(img)]})
        return out

    # -- pasting an infotext ----------------------------------------------------------------------
    def from_infotext(self, params: dict, is_img2img: bool) -> dict:
        """What an infotext restores: ``{"script": title or None, "args": {title: {arg: value}}}`` (the
        selected script from its "Script" key, each argument whose infotext key is there)."""
        out: dict[str, Any] = {"script": None, "args": {}}
        named = self.find(str(params.get("Script", "")))
        if named is not None and not named.alwayson and named.shows(is_img2img):
            out["script"] = named.title
        for s in self.scripts:
            if not s.shows(is_img2img) or (not s.alwayson and s is not named):
                continue
            vals = {}
            for arg in s.args(is_img2img):
                if arg.infotext and arg.infotext in params and arg.is_input:
                    try:
                        vals[arg.name] = arg.coerce(params[arg.infotext], self.app, is_img2img)
                    except ValueError:
                        log.info("infotext %s=%r does not fit %s's %s", arg.infotext, params[arg.infotext],
                                 s.title, arg.name)
            if vals:
                if s.alwayson and "enabled" in {a.name for a in s.args(is_img2img)} and "enabled" not in vals:
                    vals["enabled"] = True
                out["args"][s.title] = vals
        return out


# ---------------------------------------------------------------------------
# what a script's run() gets


class ScriptJob:
    """A running script's view of its job: the request and settings, and ``process`` to run jobs.

    ``process(request)`` runs one job (the always-on scripts and this script's own hooks apply) on the
    current checkpoint or the one named; progress across them is the job's: call ``set_total(n)``
    with the number of jobs the script will run.  An interrupt stops at the next job (``interrupted``).
    """

    def __init__(self, script: Script, request, opts: dict, control, process: Callable, save: Callable | None,
                 app=None):
        self.script = script
        self.request = request
        self.opts = opts
        self.control = control
        self.app = app
        self._process = process
        self._save = save
        self.warnings: list[str] = []
        self.done = 0

    @property
    def interrupted(self) -> bool:
        return bool(self.control.interrupted)

    def set_total(self, n: int) -> None:
        self.control.script_jobs = (self.done, max(int(n), 1))

    def warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)

    def process(self, request, checkpoint: str | None = None, vae: str | None = None,
                extra_params: dict | None = None):
        """Run one job of ``request`` (a GenerationRequest; its script_name is ignored) and return its
        GenerationResult; ``extra_params`` go into its pictures' infotexts."""
        from modules.engine import validate

        req = copy.copy(request)
        req.script_name, req.script_args = None, {}
        validate(req)
        result = self._process(req, checkpoint, vae, extra_params or {}, self)
        self.done += 1
        total = (getattr(self.control, "script_jobs", None) or (0, 0))[1]
        self.control.script_jobs = (self.done, max(total, self.done))
        for w in result.warnings:
            self.warn(w)
        return result

    def save_grid(self, image, infotext: str | None, seed: int, prompt: str, request=None,
                  basename: str = "grid") -> str | None:
        """Save a grid the script drew (where the settings save grids) as ``<basename>-NNNN-<seed>``, the
        way A1111 names its scripts' grids (``xyz_grid``, ``prompt_matrix``); the path or None."""
        req = request or self.request
        if self._save is None or not req.save_images or req.do_not_save_grid or not self.opts.get("grid_save", True):
            return None
        return str(self._save(image, infotext, seed, prompt, req, self.opts, grid=True, basename=basename))

    def save_image(self, image, infotext: str | None, seed: int, prompt: str, request=None) -> str | None:
        """Save a picture the script made itself (not through ``process``), where samples are saved."""
        req = request or self.request
        if self._save is None or not req.save_images or not self.opts.get("samples_save", True):
            return None
        return str(self._save(image, infotext, seed, prompt, req, self.opts))

    # -- what the app has (for axes and choices) --------------------------------------------------
    def checkpoints(self) -> list[str]:
        return sorted(self.app.models.checkpoints) if self.app is not None else []

    def find_checkpoint(self, name: str) -> str:
        """A listed checkpoint's title by title, name or hash (ValueError naming the available ones)."""
        from modules import sd_models

        try:
            return self.app.models.find(name).title
        except sd_models.ModelLoadError as e:
            raise ValueError(str(e)) from None

    def vaes(self) -> list[str]:
        return list(self.app.models.vae_choices()) if self.app is not None else ["Automatic", "None"]


def finish_result(job: ScriptJob, result, seconds: float | None = None):
    """The job-level fields of a script's result: its warnings, the info's infotexts and counts."""
    result.warnings = list(dict.fromkeys([*job.warnings, *result.warnings]))
    result.interrupted = result.interrupted or job.interrupted
    info = dict(result.info or {})
    info["infotexts"] = list(result.infotexts)
    info["all_seeds"] = list(result.seeds)
    info["all_subseeds"] = list(result.subseeds)
    info["all_prompts"] = list(result.prompts)
    info["all_negative_prompts"] = list(result.negative_prompts)
    info["warnings"] = result.warnings
    info.setdefault("index_of_first_image", 0)
    if seconds is not None:
        result.seconds = seconds
        info["seconds"] = round(seconds, 3)
    result.info = info
    return result
