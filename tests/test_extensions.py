"""Extensions (modules/extensions.py, the Extensions tab): broken ones reported while the rest load and jobs
run, install.py run once until it changes and a failing one keeping its extension out, the settings that
disable extensions, installs from a folder and from a zip (unsafe zips refused), "Apply and restart UI"
and the server's restart, the example extension's exact change of the pictures."""
from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
import zipfile
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from modules import cmd_args, extensions, localization, scripts
from modules.engine import GenerationRequest, RequestError
from modules.paths import ROOT

MODEL_DIR = ROOT / "models" / "Stable-diffusion"    # the default model: 64x64 shapes
SMALL = dict(prompt="a red circle", steps=4, width=64, height=64, seed=3)
VIGNETTE = "sd-webui-vignette"

GOOD_SCRIPT = '''
from modules.scripts import Arg, Script

class Good(Script):
    title = "Good test"
    alwayson = True

    def args(self, is_img2img):
        return [Arg("enabled", "Enable", "checkbox", False)]
'''

BAD_HOOK_SCRIPT = '''
from modules.scripts import Arg, Script

class BadHook(Script):
    title = "Bad hook test"
    alwayson = True

    def args(self, is_img2img):
        return [Arg("enabled", "Enable", "checkbox", False)]

    def after_image(self, ctx, image, a):
        raise ValueError("hook went wrong")
'''

MARKER_INSTALL = '''
import os, sys
import modules.paths   # PYTHONPATH is the program's folder
with open("ran.txt", "a") as f:
    f.write(os.getcwd() + "\\n")
print("install ran")
'''

PIP_INSTALL = '''
import subprocess, sys
sys.exit(subprocess.call([sys.executable, "-m", "pip", "install", "--no-index", "--disable-pip-version-check",
                          "-r", "requirements.txt"]))
'''


def make_ext(root: Path, name: str, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = root / name / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text), encoding="utf-8")
    return root / name


def new_app(data: Path, config: dict | None = None, extra: tuple = ()):
    from modules.app import App

    data.mkdir(parents=True, exist_ok=True)
    if config is not None:
        (data / "config.json").write_text(json.dumps(config), encoding="utf-8")
    app = App(cmd_args.parse_args(["--data-dir", str(data), "--ckpt-dir", str(MODEL_DIR), *extra]))
    app.refresh_models()
    return app


def arr(im) -> np.ndarray:
    return np.asarray(im.convert("RGB"))


def run(app, req):
    job = app.submit(req)
    job.done_event.wait()
    assert job.status == "done", job.error
    return job.result


def status_of(app, name: str) -> str:
    from modules.ui import extensions_ui

    return {row[1]: row[4] for row in extensions_ui.table_rows(app)}[name]


@pytest.fixture(scope="module")
def env(tmp_path_factory, one_thread):
    data = tmp_path_factory.mktemp("ext-data")
    root = data / "extensions"
    make_ext(root, "aaa-broken-import", {"scripts/broken.py": "raise ImportError('needs a missing package')\n"})
    make_ext(root, "bad-hook", {"scripts/hook.py": BAD_HOOK_SCRIPT})
    make_ext(root, "good-ext", {"scripts/good.py": GOOD_SCRIPT, "javascript/b.js": "window.goodB = 2;\n",
                                "javascript/a.js": "window.goodA = '</script>';\n", "style.css": ".good-ext { color: red; }\n",
                                "localizations/xx.json": '{"Good test": "Bon test"}', "install.py": MARKER_INSTALL})
    make_ext(root, "failing-install", {"install.py": PIP_INSTALL, "requirements.txt": "sdwebui-no-such-package-for-tests==1.0\n",
                                       "scripts/never.py": GOOD_SCRIPT.replace("Good test", "Never loaded test")})
    make_ext(root, "off-ext", {"install.py": MARKER_INSTALL, "scripts/off.py": GOOD_SCRIPT.replace("Good test", "Off test"),
                               "javascript/off.js": "window.offExt = 1;\n", "style.css": ".off-ext {}\n",
                               "localizations/xx.json": '{"Off test": "Hors test"}'})
    app = new_app(data, {"disabled_extensions": ["off-ext"]})
    yield app, data
    app.queue.stop()


# ---------------------------------------------------------------------------
# broken extensions


def test_an_import_error_is_reported_while_the_others_load_and_jobs_run(env):
    app, _ = env
    m = app.extensions
    assert list(m.extensions) == [VIGNETTE, "aaa-broken-import", "bad-hook", "failing-install", "good-ext", "off-ext"]
    broken = m.extensions["aaa-broken-import"]
    assert broken.error == "loading broken.py: ImportError: needs a missing package"
    assert status_of(app, "aaa-broken-import") == broken.error
    assert any(e.source == "aaa-broken-import" and e.where == "loading broken.py" for e in app.scripts.errors)
    assert "aaa-broken-import" in app.scripts.disabled_sources
    assert [s.title for s in app.scripts.scripts if s.source != scripts.BUILT_IN] == ["Vignette", "Bad hook test", "Good test"]
    assert status_of(app, "good-ext") == "ok" and status_of(app, VIGNETTE) == "ok"
    assert len(run(app, GenerationRequest(**SMALL)).images) == 1


def test_a_failing_hook_warns_and_switches_its_extension_off_for_the_run(env):
    app, _ = env
    plain = app.process(GenerationRequest(**SMALL, n_iter=2))
    res = run(app, GenerationRequest(**SMALL, n_iter=2, alwayson_scripts={"bad hook test": {"args": [True]}}))
    assert len(res.images) == 2
    assert [w for w in res.warnings if "Bad hook test" in w] == [
        "script 'Bad hook test' failed in after_image (ValueError: hook went wrong); it is disabled for this run"]
    for a, b in zip(res.images, plain.images):   # the hook failed: the pictures are the job's own
        assert (arr(a) == arr(b)).all()
    ext = app.extensions.extensions["bad-hook"]
    assert ext.error == "script 'Bad hook test' after_image: ValueError: hook went wrong"
    assert status_of(app, "bad-hook") == ext.error
    assert app.scripts.find("bad hook test") is None
    with pytest.raises(RequestError):        # the next job: the script is gone for this run
        app.submit(GenerationRequest(**SMALL, alwayson_scripts={"bad hook test": {"args": [True]}}))
    again = run(app, GenerationRequest(**SMALL, n_iter=2))
    assert not again.warnings and (arr(again.images[1]) == arr(plain.images[1])).all()
    assert app.scripts.find("good test") is not None


# ---------------------------------------------------------------------------
# install.py


def test_a_failing_install_py_is_reported_and_its_extension_not_loaded(env):
    app, data = env
    ext = app.extensions.extensions["failing-install"]
    assert not ext.active and ext.enabled
    assert ext.error.startswith("install.py failed (exit code 1): ")
    assert "No matching distribution found for sdwebui-no-such-package-for-tests==1.0" in ext.error
    assert status_of(app, "failing-install") == ext.error
    assert app.scripts.find("never loaded test") is None
    record = json.loads((data / extensions.RECORD_FILE).read_text())
    assert set(record) == {"good-ext"}       # only successful runs are remembered
    ran = (data / "extensions" / "good-ext" / "ran.txt").read_text().splitlines()
    assert ran == [str(data / "extensions" / "good-ext")]   # cwd: the extension's folder


def test_install_py_runs_once_and_again_only_when_it_or_its_requirements_change(tmp_path, monkeypatch):
    ext = make_ext(tmp_path / "extensions", "setup-ext", {"install.py": MARKER_INSTALL, "requirements.txt": "pillow\n",
                                                         "scripts/s.py": GOOD_SCRIPT})
    marker = ext / "ran.txt"

    def start():
        app = new_app(tmp_path)
        app.queue.stop()
        assert app.extensions.extensions["setup-ext"].active and app.scripts.find("good test") is not None
        return len(marker.read_text().splitlines())

    assert start() == 1
    assert start() == 1                      # unchanged: not run again
    (ext / "requirements.txt").write_text("pillow\nnumpy\n")
    assert start() == 2
    (ext / "install.py").write_text(MARKER_INSTALL + "# changed\n")
    assert start() == 3
    assert start() == 3
    # --skip-install: not run, nothing remembered
    (ext / "install.py").write_text(MARKER_INSTALL + "# changed again\n")
    app = new_app(tmp_path, extra=("--skip-install",))
    app.queue.stop()
    assert len(marker.read_text().splitlines()) == 3 and app.extensions.extensions["setup-ext"].active
    # an install.py that does not finish in time is stopped and reported
    (ext / "install.py").write_text("import time\ntime.sleep(60)\n")
    monkeypatch.setattr(extensions, "INSTALL_TIMEOUT", 1.0)
    app = new_app(tmp_path)
    app.queue.stop()
    e = app.extensions.extensions["setup-ext"]
    assert e.error == "install.py did not finish within 1 s" and not e.active


# ---------------------------------------------------------------------------
# settings


def test_disabled_extensions_are_not_loaded_nor_their_files_used(env):
    app, data = env
    m = app.extensions
    off = m.extensions["off-ext"]
    assert (off.enabled, off.active, status_of(app, "off-ext")) == (False, False, "disabled")
    assert not (data / "extensions" / "off-ext" / "ran.txt").exists()     # its install.py did not run
    assert app.scripts.find("off test") is None
    head, css = m.head_html(), m.css()
    assert "offExt" not in head and ".off-ext" not in css
    assert head.index("window.goodA") < head.index("window.goodB")      # file order
    assert "window.goodA = '<\\/script>';" in head and ".good-ext { color: red; }" in css
    assert localization.load_localization("xx", app.paths) == {"Good test": "Bon test"}
    assert all("off-ext" not in str(f) for files in localization.list_localizations(app.paths).values() for f in files)


@pytest.mark.parametrize("mode, active", [("extra", [VIGNETTE]), ("all", [])])
def test_disable_all_extensions(tmp_path, mode, active):
    make_ext(tmp_path / "extensions", "user-ext", {"scripts/s.py": GOOD_SCRIPT})
    app = new_app(tmp_path, {"disable_all_extensions": mode})
    app.queue.stop()
    assert [e.name for e in app.extensions.active()] == active
    assert status_of(app, "user-ext") == "disabled"
    assert app.scripts.find("good test") is None


# ---------------------------------------------------------------------------
# installing


@pytest.fixture()
def fresh(tmp_path):
    app = new_app(tmp_path / "data")
    yield app, tmp_path
    app.queue.stop()


def test_install_from_a_folder(fresh):
    from modules.ui import extensions_ui

    app, tmp = fresh
    src = make_ext(tmp / "src", "my-ext", {"scripts/s.py": GOOD_SCRIPT, "style.css": ".x {}\n"})
    msg = extensions_ui.install_folder(app, str(src), "")
    target = app.paths.extensions_dir / "my-ext"
    assert msg == f'<div class="sdw-message">Installed into {target}. Use &quot;Apply and restart UI&quot; to load it.</div>'
    assert (target / "scripts" / "s.py").read_text() == (src / "scripts" / "s.py").read_text()
    assert status_of(app, "my-ext") == "restart needed" and app.scripts.find("good test") is None
    assert [p.name for p in app.paths.extensions_dir.iterdir()] == ["my-ext"]   # no staging folder left
    # under another name
    extensions_ui.install_folder(app, str(src), "other-name")
    assert (app.paths.extensions_dir / "other-name" / "style.css").is_file()
    errors = {
        str(tmp / "nowhere"): f"Folder not found: {tmp / 'nowhere'}",
        str(src / "style.css"): f"Not a folder: {src / 'style.css'}",
        str(src): f"An extension named 'my-ext' already exists: {target}",
        str(app.paths.extensions_dir): f"The folder is the extensions folder or inside it: {app.paths.extensions_dir}",
        "": "No folder given",
    }
    for path, why in errors.items():
        assert extensions_ui.install_folder(app, path, "") == \
            f'<div class="sdw-error" role="alert">Not installed: {why}</div>'.replace("'", "&#x27;")
    with pytest.raises(extensions.InstallError, match="already exists"):   # a built-in extension's name
        app.extensions.install_from_folder(src, VIGNETTE)
    # install.py runs at once; a failing one is reported
    with_setup = make_ext(tmp / "src", "setup-ext", {"install.py": MARKER_INSTALL, "scripts/s.py": GOOD_SCRIPT})
    assert "Installed into" in extensions_ui.install_folder(app, str(with_setup), "")
    marker = app.paths.extensions_dir / "setup-ext" / "ran.txt"
    assert marker.read_text().splitlines() == [str(app.paths.extensions_dir / "setup-ext")]
    failing = make_ext(tmp / "src", "fail-ext", {"install.py": "import sys\nprint('cannot')\nsys.exit(3)\n"})
    assert extensions_ui.install_folder(app, str(failing), "") == \
        '<div class="sdw-error" role="alert">Installed, but install.py failed: install.py failed (exit code 3): cannot</div>'
    assert status_of(app, "fail-ext") == "install.py failed (exit code 3): cannot"
    # the next start loads them; install.py that ran at install does not run again
    again = new_app(app.paths.data_dir)
    again.queue.stop()
    assert status_of(again, "my-ext") == status_of(again, "other-name") == status_of(again, "setup-ext") == "ok"
    assert again.scripts.find("good test").source in ("my-ext", "other-name", "setup-ext")
    assert len(marker.read_text().splitlines()) == 1
    assert status_of(again, "fail-ext") == "install.py failed (exit code 3): cannot"   # tried again, failed again


def write_zip(path: Path, members: dict[str, str], symlink: str | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in members.items():
            zf.writestr(zipfile.ZipInfo(name), text)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = (0o120777 << 16)
            zf.writestr(info, "/etc/passwd")
    return path


def test_install_from_a_zip(fresh):
    from modules.ui import extensions_ui

    app, tmp = fresh
    ext_dir = app.paths.extensions_dir
    one_folder = write_zip(tmp / "download.zip", {"zipped-ext/": "", "zipped-ext/scripts/z.py": GOOD_SCRIPT,
                                                  "__MACOSX/._z.py": "junk"})
    msg = extensions_ui.install_zip(app, str(one_folder), "")
    assert "Installed into" in msg and (ext_dir / "zipped-ext" / "scripts" / "z.py").read_text() == GOOD_SCRIPT
    flat = write_zip(tmp / "flat-ext.zip", {"scripts/f.py": GOOD_SCRIPT, "style.css": ".f {}"})
    extensions_ui.install_zip(app, str(flat), "")
    assert sorted(p.relative_to(ext_dir / "flat-ext").as_posix() for p in (ext_dir / "flat-ext").rglob("*")) == [
        "scripts", "scripts/f.py", "style.css"]
    extensions_ui.install_zip(app, str(flat), "renamed")
    assert (ext_dir / "renamed" / "style.css").read_text() == ".f {}"
    assert status_of(app, "flat-ext") == "restart needed"

    bad = tmp / "bad.zip"
    bad.write_bytes(b"this is not a zip file")
    cases = {
        write_zip(tmp / "evil.zip", {"ok.txt": "x", "../evil.py": "print('escaped')"}):
            "The zip file has a path outside its folder: ../evil.py",
        write_zip(tmp / "deep.zip", {"pkg/a/../../../evil.py": "x"}):
            "The zip file has a path outside its folder: pkg/a/../../../evil.py",
        write_zip(tmp / "abs.zip", {"/tmp/evil.py": "x"}): "The zip file has an absolute path: /tmp/evil.py",
        write_zip(tmp / "link.zip", {"l/a.txt": "x"}, symlink="l/passwd"): "The zip file has a symbolic link: l/passwd",
        write_zip(tmp / "empty.zip", {}): "The zip file is empty",
        bad: "Not a zip file: bad.zip (File is not a zip file)",
        one_folder: f"An extension named 'zipped-ext' already exists: {ext_dir / 'zipped-ext'}",
    }
    for path, why in cases.items():
        with pytest.raises(extensions.InstallError) as e:
            app.extensions.install_from_zip(path)
        assert str(e.value) == why
    assert "Not installed: The zip file has a path outside" in extensions_ui.install_zip(app, str(tmp / "evil.zip"), "")
    assert extensions_ui.install_zip(app, None, "").endswith("Not installed: No zip file given</div>")
    assert not (tmp / "evil.py").exists() and not Path("/tmp/evil.py").exists()
    assert sorted(p.name for p in ext_dir.iterdir()) == ["flat-ext", "renamed", "zipped-ext"]


# ---------------------------------------------------------------------------
# apply and restart


def test_apply_saves_the_settings_and_requests_the_restart(fresh):
    from modules.ui import extensions_ui

    app, tmp = fresh
    make_ext(app.paths.extensions_dir, "gone-later", {"scripts/s.py": GOOD_SCRIPT})
    app.extensions.discover()
    rows = extensions_ui.table_rows(app)
    assert rows == [[True, VIGNETTE, str(extensions.BUILTIN_DIR / VIGNETTE), "", "ok"],
                    [True, "gone-later", str(app.paths.extensions_dir / "gone-later"), "", "ok"]]
    rows[0][0] = False
    app.opts.set("disabled_extensions", ["not-listed-here"])    # kept: the table does not show it
    calls = []
    app.extensions.restart_handler = lambda: calls.append("restart")
    message, flag = extensions_ui.apply_and_restart(app, rows, "none")
    assert (calls, flag) == (["restart"], "restart") and "Restarting the server" in message
    saved = json.loads(app.paths.config_file.read_text())
    assert saved["disabled_extensions"] == ["not-listed-here", VIGNETTE]
    assert saved["disable_all_extensions"] == "none"
    assert status_of(app, VIGNETTE) == "restart needed" and status_of(app, "gone-later") == "ok"
    # the browser may send the checkbox as text; no server seam: the user is told to restart by hand
    app.extensions.restart_handler = None
    message, flag = extensions_ui.apply_and_restart(app, [["true", VIGNETTE, "", "", ""]], "extra")
    assert flag == "" and "cannot restart itself" in message and app.extensions.restart_requested
    assert app.opts.get("disabled_extensions") == ["not-listed-here"]
    assert status_of(app, "gone-later") == "restart needed"      # "extra": user extensions are off next time
    message, flag = extensions_ui.apply_and_restart(app, [], "some")
    assert flag == "" and "disable_all_extensions must be one of none, extra, all" in message


DRIVER = '''
import os, socket, sys, threading, time, urllib.request
from types import SimpleNamespace
sys.path.insert(0, {root!r})
import webui

port = int(sys.argv[1])
if os.environ.get("WEBUI_TEST_RESTARTED"):
    with socket.socket() as s:   # the first server gave its port back
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
    print("second start", sys.argv[1:], flush=True)
    sys.exit(0)
os.environ["WEBUI_TEST_RESTARTED"] = "1"
import uvicorn
from fastapi import FastAPI

core = SimpleNamespace(extensions=SimpleNamespace(restart_handler=None), queue=SimpleNamespace(stop=lambda: None))
server = FastAPI()

@server.post("/restart")
def restart():
    core.extensions.restart_handler()
    return {{"restarting": True}}

userver = uvicorn.Server(uvicorn.Config(server, host="127.0.0.1", port=port, log_level="warning"))

def client():
    while not userver.started:
        time.sleep(0.05)
    req = urllib.request.Request(f"http://127.0.0.1:{{port}}/restart", method="POST")
    print("answer", urllib.request.urlopen(req, timeout=20).read().decode(), flush=True)

threading.Thread(target=client, daemon=True).start()
webui.serve(core, userver)
print("served without a restart", flush=True)
'''


def test_the_server_restarts_itself_with_the_same_command_line(tmp_path):
    from tests.browser_support import free_port

    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER.format(root=str(ROOT)), encoding="utf-8")
    port = str(free_port())
    out = subprocess.run([sys.executable, "-u", str(driver), port, "--flag"], capture_output=True, text=True,
                         timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == 'answer {"restarting":true}'     # the answer went out before the stop
    assert lines[1].startswith("[restart] starting again: ") and lines[1].endswith(f"-u {driver} {port} --flag")
    assert lines[2:] == [f"second start ['{port}', '--flag']"]


def test_restart_argv_keeps_the_interpreter_options():
    import webui

    assert webui.restart_argv() == [sys.executable, *sys.orig_argv[1:]]


# ---------------------------------------------------------------------------
# the tab, git metadata


def test_the_tab_lists_the_extensions(env):
    import gradio as gr

    from modules.ui import extensions_ui

    app, _ = env
    with gr.Blocks() as demo:
        ex = extensions_ui.build(app)
    assert ex.table.headers == ["Enabled", "Extension", "Folder", "Commit", "Status"]
    names = [row[1] for row in ex.table.value["data"]]
    assert names == list(app.extensions.extensions)
    assert ex.disable_all.choices == [("none", "none"), ("extra", "extra"), ("all", "all")]
    assert ex.disable_all.value == "none" and ex.apply.value == "Apply and restart UI"
    assert extensions_ui.notice_html(app) == ""
    strings = localization.collect_ui_strings(demo)
    assert {"Installed", "Install from folder", "Install from zip", "Enabled", "Status", "Zip file"} <= strings


def test_the_commit_of_a_git_checkout(fresh):
    app, _ = fresh
    folder = make_ext(app.paths.extensions_dir, "git-ext", {"scripts/s.py": GOOD_SCRIPT})
    git = ["git", "-C", str(folder), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "first"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    app.extensions.discover()
    from modules.ui import extensions_ui

    row = next(r for r in extensions_ui.table_rows(app) if r[1] == "git-ext")
    assert row[3] == head[:8]
    item = next(i for i in app.extensions.api_list() if i["name"] == "git-ext")
    assert (item["commit_hash"], item["branch"], item["remote"]) == (head, "main", "")
    assert isinstance(item["commit_date"], int)
    assert next(i for i in app.extensions.api_list() if i["name"] == VIGNETTE)["commit_hash"] == ""

    import webui
    from fastapi.testclient import TestClient

    listed = TestClient(webui.create_server(app, with_ui=False, with_api=True)).get("/sdapi/v1/extensions")
    assert listed.status_code == 200
    by_name = {i["name"]: i for i in listed.json()}
    assert by_name["git-ext"] == {"name": "git-ext", "remote": "", "branch": "main", "commit_hash": head,
                                  "version": head[:8], "commit_date": item["commit_date"], "enabled": True}
    assert by_name[VIGNETTE]["enabled"] is True and by_name[VIGNETTE]["commit_hash"] == ""


# ---------------------------------------------------------------------------
# the example extension


def expected_vignette(im: Image.Image, strength: float) -> np.ndarray:
    """The documented transformation, computed with fractions: value * (1 - strength * d^2 / D^2), d the
    distance of the pixel's centre from the picture's centre, D that of a corner pixel; halves round up."""
    a = arr(im)
    h, w = a.shape[:2]
    s = Fraction(round(strength * 100), 100)
    corner = Fraction(w - 1, 2) ** 2 + Fraction(h - 1, 2) ** 2
    out = np.empty_like(a)
    for y in range(h):
        for x in range(w):
            d2 = (Fraction(2 * x + 1 - w, 2)) ** 2 + (Fraction(2 * y + 1 - h, 2)) ** 2
            f = 1 - s * d2 / corner
            for c in range(3):
                out[y, x, c] = math.floor(int(a[y, x, c]) * f + Fraction(1, 2))
    return out


def test_the_vignette_extension_darkens_each_picture_as_documented(env):
    app, data = env
    ext = app.extensions.extensions[VIGNETTE]
    assert ext.is_builtin and ext.active and app.scripts.find("vignette").source == VIGNETTE
    plain = app.process(GenerationRequest(**SMALL, n_iter=2))
    res = run(app, GenerationRequest(**SMALL, n_iter=2, alwayson_scripts={"vignette": {"args": [True, 0.5]}}))
    assert len(res.images) == 2
    for got, base, text, base_text in zip(res.images, plain.images, res.infotexts, plain.infotexts):
        want = expected_vignette(base, 0.5)
        assert (arr(got) == want).all()
        assert (want != arr(base)).any() and (want[32, 32] == arr(base)[32, 32]).all()
        assert "Vignette: 0.5" in text and text.replace(", Vignette: 0.5", "") == base_text
    saved = sorted((data / "outputs" / "txt2img-images").rglob("*.png"))
    with Image.open(saved[-1]) as im:                 # the saved file is the darkened picture
        assert (arr(im) == arr(res.images[1])).all() and "Vignette: 0.5" in im.info["parameters"]
    full = run(app, GenerationRequest(**SMALL, alwayson_scripts={"vignette": [True, 1.0]}))
    assert (arr(full.images[0]) == expected_vignette(plain.images[0], 1.0)).all()
    assert (arr(full.images[0])[[0, 0, -1, -1], [0, -1, 0, -1]] == 0).all()   # the corners are black
    off = run(app, GenerationRequest(**SMALL, alwayson_scripts={"vignette": {"args": [False, 0.5]}}))
    assert (arr(off.images[0]) == arr(plain.images[0])).all() and "Vignette" not in off.infotexts[0]
    # its files: the section's style, its translations
    assert "#txt2img_script_vignette" in app.extensions.css()
    zh = localization.read_localization_file(ext.path / "localizations" / "zh_CN.json")
    script = app.scripts.find("vignette")
    texts = {script.title} | {a.label for a in script.args(False)} | {a.info for a in script.args(False) if a.info}
    assert texts <= set(zh) and all(zh.values())


def test_the_vignette_extension_disabled_by_the_setting(env, tmp_path):
    app, _ = env
    plain = app.process(GenerationRequest(**SMALL))
    other = new_app(tmp_path, {"disabled_extensions": [VIGNETTE]})
    try:
        assert other.scripts.find("vignette") is None and status_of(other, VIGNETTE) == "disabled"
        with pytest.raises(RequestError):
            other.submit(GenerationRequest(**SMALL, alwayson_scripts={"vignette": {"args": [True, 0.5]}}))
        res = run(other, GenerationRequest(**SMALL))
        assert (arr(res.images[0]) == arr(plain.images[0])).all() and "Vignette" not in res.infotexts[0]
        assert "vignette" not in other.extensions.css()
        zh_files = localization.list_localizations(other.paths).get("zh_CN", [])
        assert all(VIGNETTE not in str(f) for f in zh_files)
    finally:
        other.queue.stop()
