"""Access to the server (modules/auth.py, webui.py): the UI login of --gradio-auth / --gradio-auth-path in
front of every route, the API's rules with and without --api-auth, --subpath, TLS, the --listen warning and
path traversal through the file routes.

One real server (uvicorn in a thread) with the UI under /sd behind a login serves most tests; the browser
tests (the login form in Chromium) are skipped without /usr/bin/chromium.
"""
from __future__ import annotations

import base64
import io
import shutil
import socket
import ssl
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

import webui
from modules import auth, cmd_args
from modules.paths import ROOT
from tests.browser_support import require_chromium, serve

OUT = ROOT / "test-output"
UI_LOGIN = "alice:wonder,bob:build:er"
API_LOGIN = "robot:key"


def basic(user: str, password: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def app_for(tmp, *flags):
    from modules.app import App

    return App(cmd_args.parse_args(["--data-dir", str(tmp), "--skip-install", *flags]))


# ---------------------------------------------------------------------------------------------------------
# flags, without a server


def test_gradio_auth_takes_several_users_and_passwords_with_colons():
    users = auth.ui_credentials(cmd_args.parse_args(["--gradio-auth", " alice:wonder , bob:build:er,"]))
    assert users == {"alice": "wonder", "bob": "build:er"}
    with pytest.raises(auth.AccessError, match=r"^--gradio-auth, entry 2: expected user:password$"):
        auth.ui_credentials(cmd_args.parse_args(["--gradio-auth", "alice:wonder,bobsecret"]))
    with pytest.raises(auth.AccessError, match="entry 1"):
        auth.ui_credentials(cmd_args.parse_args(["--gradio-auth", ":nouser"]))


def test_gradio_auth_path_reads_users_on_several_lines_with_the_flag(tmp_path):
    f = tmp_path / "logins.txt"
    f.write_text("alice:wonder,bob:builder\n\n  carol:c:3  \ndave:d,\n", encoding="utf-8")
    args = cmd_args.parse_args(["--gradio-auth", "erin:e", "--gradio-auth-path", str(f)])
    assert auth.ui_credentials(args) == {"erin": "e", "alice": "wonder", "bob": "builder", "carol": "c:3", "dave": "d"}


def test_a_bad_line_of_the_auth_file_stops_the_start_naming_file_and_line_not_the_secret(tmp_path, capsys):
    f = tmp_path / "logins.txt"
    f.write_text("alice:wonder\nbob:builder,topsecretwithoutcolon\n", encoding="utf-8")
    with pytest.raises(SystemExit) as e:
        webui.main(["--data-dir", str(tmp_path), "--skip-install", "--gradio-auth-path", str(f)])
    msg = str(e.value.code)
    assert msg == f"error: --gradio-auth-path {f}, line 2, entry 2: expected user:password"
    assert "topsecret" not in msg
    with pytest.raises(SystemExit, match="no such file"):
        webui.main(["--skip-install", "--gradio-auth-path", str(tmp_path / "missing.txt")])
    (tmp_path / "empty.txt").write_text("\n\n", encoding="utf-8")
    with pytest.raises(SystemExit, match="no user:password entry"):
        webui.main(["--skip-install", "--gradio-auth-path", str(tmp_path / "empty.txt")])


def test_subpath_is_normalized_and_a_bad_one_refused():
    assert [auth.normalize_subpath(v) for v in (None, "", "/", "sd", "/sd/", "/a/b")] == ["", "", "", "/sd", "/sd", "/a/b"]
    for bad in ("/../etc", "/a//b", "/sd?x=1", "/s d"):
        with pytest.raises(auth.AccessError, match="--subpath"):
            auth.normalize_subpath(bad)
    with pytest.raises(SystemExit, match="^error: --subpath"):
        webui.main(["--skip-install", "--subpath", "/a/../b"])


def test_listen_without_any_login_warns(capsys):
    def warning(*flags):
        args = cmd_args.parse_args(list(flags))
        return webui.warn_if_open(args, cmd_args.server_name(args))

    msg = warning("--listen")
    assert msg == ("WARNING: listening on 0.0.0.0 (reachable from the network) and the UI need no login: anyone "
                   "who can reach this machine can use it. Add --gradio-auth user:pass.")
    assert msg in capsys.readouterr().err
    assert "the UI and the API need no login" in warning("--listen", "--api")
    assert "Add --gradio-auth user:pass / --api-auth user:pass." in warning("--server-name", "192.168.1.5", "--api")
    assert "the UI need no login" in warning("--listen", "--api", "--api-auth", "a:b")
    capsys.readouterr()
    assert warning("--listen", "--api", "--gradio-auth", "a:b") is None      # the UI login guards the API too
    assert warning("--listen", "--nowebui", "--api-auth", "a:b") is None
    assert warning("--api") is None and warning("--server-name", "localhost") is None
    assert warning("--server-name", "::1") is None
    assert capsys.readouterr().err == ""


# ---------------------------------------------------------------------------------------------------------
# TLS

def make_cert(folder: Path, name: str = "server") -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("no openssl command to make a self-signed certificate (and no 'cryptography' package)")
    key, cert = folder / f"{name}.key", folder / f"{name}.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    return key, cert


def test_tls_serves_https_with_a_self_signed_certificate(tmp_path):
    key, cert = make_cert(tmp_path)
    args = cmd_args.parse_args(["--tls-keyfile", str(key), "--tls-certfile", str(cert), "--subpath", "sd"])
    tls = auth.tls_options(args)
    assert tls == {"ssl_keyfile": str(key), "ssl_certfile": str(cert)}
    assert webui.local_url(args, "127.0.0.1", 7860, bool(tls)) == "https://127.0.0.1:7860/sd/"
    assert webui.local_url(cmd_args.parse_args([]), "127.0.0.1", 7860, False) == "http://127.0.0.1:7860"
    core = app_for(tmp_path / "data", "--api-auth", API_LOGIN)
    try:
        with serve(webui.create_server(core, with_ui=False, with_api=True), **tls) as url:
            url = url.rstrip("/")
            r = httpx.get(f"{url}/sdapi/v1/samplers", headers=basic("robot", "key"),
                          verify=ssl.create_default_context(cafile=str(cert)))
            assert r.status_code == 200 and "Euler a" in [s["name"] for s in r.json()]
            assert r.url.scheme == "https"
            with pytest.raises((httpx.RemoteProtocolError, httpx.ConnectError)):     # not plain HTTP any more
                httpx.get(url.replace("https:", "http:") + "/healthz", timeout=5)
    finally:
        core.queue.stop()


def test_tls_files_missing_mismatched_or_garbage_stop_the_start(tmp_path):
    key, cert = make_cert(tmp_path)
    other_key, _ = make_cert(tmp_path, "other")
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")

    def options(*flags):
        return auth.tls_options(cmd_args.parse_args(list(flags)))

    with pytest.raises(auth.AccessError, match="go together"):
        options("--tls-keyfile", str(key))
    with pytest.raises(auth.AccessError, match=r"^--tls-certfile .*nope.crt: no such file$"):
        options("--tls-keyfile", str(key), "--tls-certfile", str(tmp_path / "nope.crt"))
    with pytest.raises(auth.AccessError, match="not a usable certificate"):
        options("--tls-keyfile", str(other_key), "--tls-certfile", str(cert))
    with pytest.raises(auth.AccessError, match="not a usable certificate"):
        options("--tls-keyfile", str(key), "--tls-certfile", str(junk))
    with pytest.raises(SystemExit, match="^error: --tls-keyfile"):
        webui.main(["--skip-install", "--tls-keyfile", str(tmp_path / "nope.key"), "--tls-certfile", str(cert)])


# ---------------------------------------------------------------------------------------------------------
# the API with only --gradio-auth (no UI needed for these)

def test_only_gradio_auth_guards_the_api_with_the_ui_logins(tmp_path):
    from fastapi.testclient import TestClient

    core = app_for(tmp_path, "--gradio-auth", UI_LOGIN)
    try:
        client = TestClient(webui.create_server(core, with_ui=False, with_api=True))
        r = client.get("/sdapi/v1/samplers")
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Basic"
        assert r.json()["detail"] == "Not authenticated"
        assert client.get("/sdapi/v1/samplers", headers=basic("alice", "nope")).status_code == 401
        assert client.get("/sdapi/v1/samplers", headers=basic("bob", "build:er")).status_code == 200
        assert client.get("/docs").status_code == 401
        assert client.get("/openapi.json", headers=basic("alice", "wonder")).status_code == 200
        assert client.get("/healthz").json() == {"ok": True}
        assert "model" in client.get("/healthz", headers=basic("alice", "wonder")).json()
        flags = client.get("/sdapi/v1/cmd-flags", headers=basic("alice", "wonder")).json()
        assert flags["gradio_auth"] == "<hidden>"                        # passwords are not handed out
    finally:
        core.queue.stop()


def test_api_auth_alone_leaves_the_api_as_before(tmp_path):
    from fastapi.testclient import TestClient

    core = app_for(tmp_path, "--api-auth", API_LOGIN)
    try:
        client = TestClient(webui.create_server(core, with_ui=False, with_api=True))
        assert client.get("/sdapi/v1/samplers").status_code == 401
        assert client.get("/sdapi/v1/samplers", headers=basic("robot", "key")).status_code == 200
        assert "model" in client.get("/healthz").json()
    finally:
        core.queue.stop()


# ---------------------------------------------------------------------------------------------------------
# the real server: UI + API under /sd, UI login and API login


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    data = tmp_path_factory.mktemp("access")
    core = app_for(data, "--gradio-auth", UI_LOGIN, "--api-auth", API_LOGIN, "--subpath", "/sd")
    server = webui.create_server(core, with_api=True)
    with serve(server) as url:
        yield {"base": url.rstrip("/") + "/sd", "server": server, "core": core, "data": data}
    core.queue.stop()


def logged_in(site, user="alice", password="wonder") -> httpx.Client:
    client = httpx.Client(base_url=site["base"], timeout=30)
    r = client.post("/login", data={"username": user, "password": password})
    assert r.status_code == 200 and r.json() == {"success": True}
    return client


def test_the_page_is_the_login_form_until_one_logs_in(site):
    anon = httpx.Client(base_url=site["base"], timeout=30)
    page = anon.get("/")
    assert page.status_code == 200
    assert '"auth_required":true' in page.text.replace(" ", "") and "txt2img_prompt" not in page.text
    bad = anon.post("/login", data={"username": "alice", "password": "wrong"})
    assert bad.status_code == 400 and not anon.cookies
    client = logged_in(site)
    page = client.get("/")
    assert page.status_code == 200 and "txt2img_prompt" in page.text and '"auth_required":true' not in page.text
    assert logged_in(site, "bob", "build:er").get("/config").status_code == 200   # the second user


def test_gradio_and_app_routes_answer_401_without_a_login_and_200_with_it(site):
    anon = httpx.Client(base_url=site["base"], timeout=30)
    client = logged_in(site)
    join = {"data": [], "fn_index": 0, "session_hash": "abc123", "event_data": None, "trigger_id": None}
    checks = [("GET", "/config", {}), ("GET", "/gradio_api/info", {}), ("GET", "/localization/current.json", {}),
              ("GET", "/localization/list.json", {}), ("POST", "/gradio_api/queue/join", {"json": join}),
              ("POST", "/gradio_api/run/predict", {"json": {"data": []}}),
              ("GET", "/gradio_api/upload_progress?upload_id=x", {}),
              ("GET", "/gradio_api/run-history/buckets", {}), ("POST", "/gradio_api/cancel", {"json": {}}),
              ("GET", "/openapi.json", {}), ("GET", "/gradio_api/heartbeat/abc123", {})]
    for method, path, kw in checks:
        r = anon.request(method, path, **kw)
        assert r.status_code == 401, (path, r.status_code, r.text)
        assert r.json() == {"detail": "Not authenticated: log in first"}
    assert client.get("/config").json()["components"]
    assert client.get("/localization/current.json").json()["name"] == "None"
    assert client.get("/gradio_api/info").status_code == 200
    assert client.post("/gradio_api/queue/join", json=join).status_code == 200
    # a page a browser asks for is sent to the login form instead
    r = anon.get("/docs", headers={"accept": "text/html"})
    assert r.status_code == 302 and r.headers["location"] == "/sd/"
    assert client.get("/docs", headers={"accept": "text/html"}).status_code == 200
    assert anon.get("/healthz").json() == {"ok": True}
    assert client.get("/healthz").json()["model"] is None and "model_error" in client.get("/healthz").json()


def test_queue_data_stream_needs_the_login(site):
    anon = httpx.Client(base_url=site["base"], timeout=30)
    assert anon.get("/gradio_api/queue/data?session_hash=abc123").status_code == 401
    with logged_in(site).stream("GET", "/gradio_api/queue/data?session_hash=abc123") as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")


def test_uploads_and_files_need_the_login(site):
    anon = httpx.Client(base_url=site["base"], timeout=30)
    client = logged_in(site)
    files = {"files": ("note.txt", b"hello upload", "text/plain")}
    assert anon.post("/gradio_api/upload", files=files).status_code == 401
    r = client.post("/gradio_api/upload", files=files)
    assert r.status_code == 200
    path = r.json()[0]
    assert anon.get(f"/gradio_api/file={path}").status_code == 401
    got = client.get(f"/gradio_api/file={path}")
    assert got.status_code == 200 and got.content == b"hello upload"


def test_logout_ends_the_session(site):
    client = logged_in(site)
    assert client.get("/config").status_code == 200
    client.get("/logout")
    client.cookies.clear()
    assert client.get("/config").status_code == 401


def test_api_takes_its_own_login_or_the_page_session(site):
    anon = httpx.Client(base_url=site["base"], timeout=30)
    r = anon.get("/sdapi/v1/samplers")
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Basic"
    assert anon.get("/sdapi/v1/samplers", headers=basic("alice", "wonder")).status_code == 401  # a UI login: no
    assert anon.get("/sdapi/v1/samplers", headers=basic("robot", "wrong")).status_code == 401
    ok = anon.get("/sdapi/v1/samplers", headers=basic("robot", "key"))
    assert ok.status_code == 200 and "Euler a" in [s["name"] for s in ok.json()]
    assert logged_in(site).get("/sdapi/v1/samplers").status_code == 200             # one login for page and API
    flags = anon.get("/sdapi/v1/cmd-flags", headers=basic("robot", "key")).json()
    assert flags["api_auth"] == "<hidden>" and flags["gradio_auth"] == "<hidden>" and flags["subpath"] == "/sd"


def test_everything_is_under_the_subpath(site):
    client = logged_in(site)
    page = client.get("/")
    assert '"root":"http://127.0.0.1:' in page.text.replace(" ", "") and "/sd" in page.text
    config = client.get("/config").json()
    assert urlsplit(config["root"]).path == "/sd"
    assert client.get("/openapi.json").json()["servers"] == [{"url": "/sd"}]
    assert client.get(site["base"] + "/").status_code == 200
    # a history picture's link keeps the prefix, and it serves the picture
    from PIL import Image

    from modules import images

    day = site["data"] / "outputs" / "txt2img-images" / "2026-01-02"
    images.save_image(Image.new("RGB", (8, 8), "red"), day.parent, infotext="a subpath test", seed=1,
                      prompt="a subpath test", dir_pattern="2026-01-02")
    listed = client.get("/sdapi/v1/history", params={"search": "subpath test"}).json()["items"]
    assert len(listed) == 1 and listed[0]["url"].startswith("/sd/sdapi/v1/history/image?path=")
    picture = client.get(site["base"].rsplit("/sd", 1)[0] + listed[0]["url"])
    assert picture.status_code == 200 and Image.open(io.BytesIO(picture.content)).size == (8, 8)


# ---------------------------------------------------------------------------------------------------------
# path traversal


def raw_get(base: str, target: str, headers: dict | None = None) -> tuple[int, bytes]:
    """A GET with the target sent exactly as written (no client-side clean-up of '..')."""
    u = urlsplit(base)
    head = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    with socket.create_connection((u.hostname, u.port), timeout=30) as s:
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: {u.netloc}\r\nConnection: close\r\n{head}\r\n".encode("latin-1"))
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data.split(b"\r\n\r\n", 1)[-1]


def session_header(client: httpx.Client) -> dict:
    return {"Cookie": "; ".join(f"{c.name}={c.value}" for c in client.cookies.jar)}


def test_file_routes_refuse_traversal_absolute_paths_symlinks_and_urls(site, tmp_path):
    client = logged_in(site)
    cookie = session_header(client)
    secret = tmp_path / "secret.txt"
    secret.write_text("the secret\n")
    upload_dir = Path(site["server"].state.access.gradio_app.uploaded_file_dir)
    (upload_dir / "evil").mkdir(parents=True, exist_ok=True)
    link = upload_dir / "evil" / "link.txt"
    link.unlink(missing_ok=True)
    link.symlink_to(secret)
    config = site["core"].paths.config_file
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text('{"secret_setting": 1}')
    base = site["base"]
    ups = "/".join([".."] * 12)
    attempts = [
        "/sd/gradio_api/file=/etc/passwd", f"/sd/gradio_api/file={secret}", f"/sd/gradio_api/file={link}",
        f"/sd/gradio_api/file={config}", f"/sd/gradio_api/file={upload_dir}/{ups}/etc/passwd",
        f"/sd/gradio_api/file={upload_dir}/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/sd/gradio_api/file=%2Fetc%2Fpasswd", f"/sd/gradio_api/file={ROOT / 'webui.py'}",
        "/sd/gradio_api/file=../../../../../../etc/passwd", "/sd/gradio_api/file=%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/sd/assets/../../../../webui.py", "/sd/assets/..%2f..%2f..%2f..%2fwebui.py", "/sd/static/..%2f..%2f..%2fwebui.py",
        "/sd/svelte/..%2f..%2f..%2f..%2fwebui.py", "/sd/localization/..%2f..%2fwebui.py",
        "/sd/localization/../../webui.py", "/sd/gradio_api/file=https://example.com/x.png",
        "/sd/gradio_api/file=http%3A%2F%2F127.0.0.1%2Fhealthz", "/sd/gradio_api/file=//example.com/x",
        "/sd/gradio_api/proxy=https://example.com/x",
    ]
    try:
        for target in attempts:
            status, body = raw_get(base, target, cookie)
            assert status in (403, 404), (target, status, body[:200])
            assert b"the secret" not in body and b"root:" not in body and b"secret_setting" not in body
            assert b"def create_server" not in body, target
            assert raw_get(base, target)[0] in (401, 403, 404), target      # and without a login
    finally:
        link.unlink(missing_ok=True)
    status, body = raw_get(base, "/sd/gradio_api/file=https://example.com/x.png", cookie)
    assert status == 403 and b"does not fetch URLs" in body


# ---------------------------------------------------------------------------------------------------------
# in Chromium


@pytest.fixture(scope="module")
def has_chromium():
    require_chromium()


def test_login_form_in_chromium_refuses_a_wrong_password_then_opens_txt2img(has_chromium, browser, site):
    ctx = browser.new_context(viewport={"width": 1400, "height": 900})
    page = ctx.new_page()
    page.set_default_timeout(60_000)
    errors, urls, failed = [], [], []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: urls.append(r.url))
    page.on("response", lambda r: failed.append((r.status, r.url)) if r.status >= 400 else None)
    page.goto(site["base"] + "/")
    password = page.locator("input[type=password]")
    password.wait_for()
    assert page.locator("#txt2img_generate").count() == 0
    OUT.mkdir(exist_ok=True)
    page.screenshot(path=str(OUT / "login-form.png"))
    page.locator("input[type=text]").first.fill("alice")
    password.fill("not-it")
    page.get_by_role("button", name="Login").click()
    page.get_by_text("Incorrect Credentials").wait_for()
    page.screenshot(path=str(OUT / "login-refused.png"))
    assert page.locator("#txt2img_generate").count() == 0 and not ctx.cookies()
    failed.clear()
    page.locator("input[type=text]").first.fill("alice")   # the form empties its fields after a refusal
    password.fill("wonder")
    page.get_by_role("button", name="Login").click()
    page.wait_for_function("() => document.body.dataset.webuiLoaded === 'true'")
    assert page.locator("#txt2img_generate").is_visible()
    assert page.locator("#tab_txt2img, #txt2img_prompt").first.is_visible()
    page.screenshot(path=str(OUT / "login.png"))
    own = [u for u in urls if u.startswith("http://127.0.0.1")]
    assert own and all(urlsplit(u).path.startswith("/sd/") for u in own), [u for u in own if "/sd/" not in u]
    assert failed == [] and errors == []
    ctx.close()
