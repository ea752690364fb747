"""Wires the app: FastAPI server + Gradio UI + /sdapi/v1 API + the job queue.

`python launch.py` prepares the environment and calls :func:`main`; this file
can also be run directly (`python webui.py`) in a ready environment.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")          # never reach the model hub
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("DO_NOT_TRACK", "1")

log = logging.getLogger("webui")
RESTART_DELAY = 1.0   # seconds from a restart request to the server's stop: the answer goes out first


def create_server(app_core, with_ui: bool = True, with_api: bool = False):
    """Build the FastAPI application for an :class:`modules.app.App`: under ``--subpath`` if given, behind the
    login of ``--gradio-auth``/``--gradio-auth-path`` if given (modules/auth.py)."""
    from fastapi import FastAPI, Request

    from modules import auth

    args = app_core.args
    access = auth.Access.from_args(args)
    server = FastAPI(title="Stable Diffusion web UI", docs_url="/docs", openapi_url="/openapi.json")
    server.state.core = app_core
    server.state.access = access

    def healthz(request):
        if access.login_required and auth.USER_KEY not in request.scope:
            return {"ok": True}   # open for health checks; what is loaded is for those logged in
        loaded = app_core.models.loaded
        return {"ok": True, "model": loaded.info.title if loaded else None, "model_error": app_core.model_error}

    healthz.__annotations__ = {"request": Request}   # (this file's annotations are strings; fastapi is imported here)
    server.get("/healthz", include_in_schema=False)(healthz)

    if with_api:
        from modules import api
        api.register(server, app_core)
    if with_ui:
        _mount_ui(server, app_core, with_api, access)
    server.add_middleware(auth.AccessGuard, access=access)
    return server


def _mount_ui(server, app_core, with_api: bool, access) -> None:
    import gradio as gr

    from modules import auth, localization
    from modules.ui import create_ui

    blocks, head, css = create_ui(app_core)
    gr.mount_gradio_app(server, blocks, path="/", head=head, css=css, show_error=True,
                        footer_links=["api", "settings"] if with_api else ["settings"],
                        auth=access.check_ui if access.login_required else None,
                        **auth.gradio_file_paths(app_core))
    access.gradio_app = auth.find_gradio_app(server)
    localization.register(server, app_core)


def restart_argv() -> list[str]:
    """The command line this process started with (interpreter options included)."""
    orig = list(getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv])
    return [sys.executable, *orig[1:]]


def serve(core, userver, execv=os.execv) -> None:
    """Run the server until it stops; after a restart request (the Extensions tab's "Apply and restart UI")
    it stops and this process starts the program again with the same command line."""
    restart = threading.Event()

    def request():
        restart.set()
        threading.Timer(RESTART_DELAY, lambda: setattr(userver, "should_exit", True)).start()

    core.extensions.restart_handler = request
    userver.run()
    if restart.is_set():
        core.queue.stop()
        print("[restart] starting again: " + " ".join(restart_argv()), flush=True)
        logging.shutdown()
        sys.stderr.flush()
        execv(sys.executable, restart_argv())


def check_access_flags(args) -> dict:
    """Check the login, TLS and sub-path flags before anything is built: a bad one stops the start with one
    line naming it.  Returns uvicorn's TLS options ({} without TLS)."""
    from modules import auth

    try:
        auth.ui_credentials(args)
        auth.api_credentials(args)
        auth.normalize_subpath(args.subpath)
        return auth.tls_options(args)
    except auth.AccessError as e:
        raise SystemExit(f"error: {e}") from None


def warn_if_open(args, host: str) -> str | None:
    """Print (and return) the warning for a server reachable from the network with parts that need no login."""
    from modules import auth

    with_ui, with_api = not args.nowebui, args.api or args.nowebui
    ui_login = bool(auth.ui_credentials(args))
    msg = auth.open_warning(host, ui_open=with_ui and not ui_login,
                            api_open=with_api and not ui_login and not auth.api_credentials(args))
    if msg:
        print(msg, file=sys.stderr, flush=True)
    return msg


def local_url(args, host: str, port: int, tls: bool) -> str:
    from modules import auth

    subpath = auth.normalize_subpath(args.subpath)
    return f"{'https' if tls else 'http'}://{host}:{port}" + (subpath + "/" if subpath else "")


def main(argv: list[str] | None = None, started_at: float | None = None) -> None:
    from modules import cmd_args

    t0 = started_at or time.perf_counter()
    args = cmd_args.parse_args(argv if argv is not None else sys.argv[1:])
    tls = check_access_flags(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "httpcore", "urllib3", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    import uvicorn

    from modules.app import App

    core = App(args)
    t_core = time.perf_counter()
    print(f"[startup] app core: {t_core - t0:.2f}s since launch", flush=True)
    core.hooks.fire("app_started", core)  # the model loads in the background from here: the page answers meanwhile
    server = create_server(core, with_ui=not args.nowebui, with_api=args.api or args.nowebui)
    t_ui = time.perf_counter()
    print(f"[startup] UI built: {t_ui - t_core:.2f}s", flush=True)
    host = cmd_args.server_name(args)
    port = args.port or 7860
    config = uvicorn.Config(server, host=host, port=port, log_level="warning", timeout_graceful_shutdown=2, **tls)
    userver = uvicorn.Server(config)
    warn_if_open(args, host)

    def announce():
        while not userver.started:
            time.sleep(0.05)
        print(f"Running on local URL:  {local_url(args, host, port, bool(tls))}", flush=True)
        print(f"[startup] ready: {time.perf_counter() - t0:.2f}s since launch", flush=True)
        if args.autolaunch:
            import webbrowser
            webbrowser.open(local_url(args, "127.0.0.1", port, bool(tls)))

    threading.Thread(target=announce, daemon=True).start()
    serve(core, userver)


if __name__ == "__main__":
    main()
