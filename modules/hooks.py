"""Hook points: the named places where built-in features, scripts and extensions plug into a job and the app.

One :class:`Hooks` object per app (``App.hooks``); a job gets it in its context.  A handler is a plain
function registered for a point by name; a name registered again replaces the earlier handler.  The
built-in features use the same points (see :func:`default_hooks`), so every seam is exercised by the
program itself:

============================  ==============================  ==========================================
point                         arguments                       built-in users
============================  ==============================  ==========================================
``app_started``               app                             the model library lists and loads the model
``ui_tab_build``              tab                             extra networks' card panel under the prompts
``ui_tab_wire``               tab, top bar                    extra networks' card clicks and refresh
``before_job``                ctx                             LoRA merge (extra networks), tiling
``before_batch``              ctx, batch                      (for scripts: each batch, before its noise)
``after_conditioning``        ctx, encoded prompts            textual inversion: the embeddings a job used
``cfg_denoiser`` (wrap)       ctx, denoiser -> denoiser       (for scripts: the object the sampler calls)
``unet_call`` (wrap)          ctx, unet fn -> unet fn         (for scripts: ControlNet adds its residuals)
``before_step``               ctx, step                       (for scripts)
``after_step``                ctx, step                       live previews take the step's prediction
``after_image_decoded`` (wrap) ctx, image -> image            (for scripts: the picture before saving)
``after_image_saved``         ctx, saved image                (for scripts: the file on disk)
``after_job``                 ctx, result (None on failure)   LoRA restore, tiling off
============================  ==============================  ==========================================

``fire`` calls the handlers in order and lets an exception through (a job hook that fails fails the
job with its message); ``fire_all`` runs every handler and logs failures (``after_job``: every
restore must run); ``wrap`` (``cfg_denoiser``, ``unet_call``, ``after_image_decoded``) passes an object through the handlers, each returning it or a replacement.
"""
from __future__ import annotations

import logging
from typing import Any, Callable

log = logging.getLogger(__name__)

POINTS = ("app_started", "ui_tab_build", "ui_tab_wire", "before_job", "before_batch", "after_conditioning", "cfg_denoiser",
          "unet_call", "before_step", "after_step", "after_image_decoded", "after_image_saved", "after_job")


class Hooks:
    def __init__(self):
        self._handlers: dict[str, list[tuple[str, Callable]]] = {p: [] for p in POINTS}

    def copy(self) -> "Hooks":
        """A Hooks object with the same handlers (a job's: scripts add theirs there, not to the app's)."""
        other = Hooks()
        other._handlers = {p: list(h) for p, h in self._handlers.items()}
        return other

    def add(self, point: str, fn: Callable, name: str | None = None, *, first: bool = False) -> Callable:
        """Register ``fn`` at ``point``; a handler already registered under ``name`` is replaced."""
        handlers = self._list(point)
        name = name or f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"
        handlers[:] = [(n, f) for n, f in handlers if n != name]
        handlers.insert(0 if first else len(handlers), (name, fn))
        return fn

    def remove(self, point: str, name: str) -> None:
        handlers = self._list(point)
        handlers[:] = [(n, f) for n, f in handlers if n != name]

    def names(self, point: str) -> list[str]:
        return [n for n, _ in self._list(point)]

    def __contains__(self, point: str) -> bool:
        return bool(self._handlers.get(point))

    def fire(self, point: str, *args: Any) -> None:
        for _, fn in self._list(point):
            fn(*args)

    def fire_all(self, point: str, *args: Any) -> None:
        for name, fn in self._list(point):
            try:
                fn(*args)
            except Exception:  # noqa: BLE001 - the other handlers (restores) must still run
                log.exception("hook %s at %s failed", name, point)

    def wrap(self, point: str, ctx: Any, obj: Any) -> Any:
        for _, fn in self._list(point):
            out = fn(ctx, obj)
            obj = obj if out is None else out
        return obj

    def _list(self, point: str) -> list:
        try:
            return self._handlers[point]
        except KeyError:
            raise KeyError(f"unknown hook point {point!r}; the points are {', '.join(POINTS)}") from None


def default_hooks() -> Hooks:
    """A Hooks object with the built-in features' handlers (what every job has unless told otherwise)."""
    from modules import extra_networks, previews
    from modules.engine import tiling

    hooks = Hooks()
    extra_networks.register_hooks(hooks)
    tiling.register_hooks(hooks)
    previews.register_hooks(hooks)
    return hooks
