"""What the browser test files share (not a test module): Debian's chromium with the project's flags,
and the real server run in a thread on a free port."""
from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--no-first-run"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve(asgi_app, start_timeout: float = 60, **options):
    """Run `asgi_app` (webui.create_server's result) with uvicorn in a daemon thread; yields its URL
    (https:// when ``options``, more uvicorn.Config arguments, hold TLS files)."""
    import uvicorn

    port = free_port()
    userver = uvicorn.Server(uvicorn.Config(asgi_app, host="127.0.0.1", port=port, log_level="warning", **options))
    thread = threading.Thread(target=userver.run, daemon=True)
    thread.start()
    deadline = time.time() + start_timeout
    while not userver.started:
        assert time.time() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield f"{'https' if options.get('ssl_certfile') else 'http'}://127.0.0.1:{port}/"
    finally:
        userver.should_exit = True
        thread.join(timeout=10)


@contextmanager
def tiny_model_server(data: Path):
    """The real app (UI, no API) on a tiny random-weight SD 1.x checkpoint written into ``data``'s models
    folder, loaded and served (:func:`serve`); yields (URL, the App)."""
    import webui
    from modules import cmd_args
    from modules.app import App
    from testing.tiny_models import write_tiny_checkpoint

    write_tiny_checkpoint(data / "models" / "Stable-diffusion" / "tiny.safetensors", "sd1")
    core = App(cmd_args.parse_args(["--data-dir", str(data), "--skip-install"]))
    core.refresh_models()
    core.load_model()
    try:
        with serve(webui.create_server(core)) as url:
            yield url, core
    finally:
        core.queue.stop()


@contextmanager
def chromium():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        try:
            yield b
        finally:
            b.close()


def open_page(browser, url: str, height: int = 1000, timeout_ms: int = 60_000):
    """A fresh page (in a context of its own, 1400 px wide) on the app, loaded: the page's load events (model
    list, current settings) have run.  Returns (the context, the page, the list its script errors go into)."""
    ctx = browser.new_context(viewport={"width": 1400, "height": height})
    page = ctx.new_page()
    page.set_default_timeout(timeout_ms)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    page.wait_for_function("() => document.body.dataset.webuiLoaded === 'true'")
    return ctx, page, errors


def require_chromium(packages: str = "chromium") -> None:
    """Skip the calling test module (at its import) without playwright or Debian's chromium."""
    import shutil

    import pytest

    pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if not CHROMIUM.exists() or shutil.which(str(CHROMIUM)) is None:
        pytest.skip(f"no /usr/bin/chromium (apt-get install {packages})", allow_module_level=True)
