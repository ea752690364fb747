"""Who may reach the server, and how: the UI login, TLS, the sub-path and the guard in front of every route.

* ``--gradio-auth user:pass[,user2:pass2]`` and ``--gradio-auth-path FILE`` (the same entries, one or more
  per line) turn on the login.  The page then shows gradio's login form; gradio keeps the session in its
  cookie.  :class:`AccessGuard`, an ASGI middleware on the whole server, lets through only the few routes the
  login form itself needs and answers every other route (gradio's config, queue, upload and file routes, the
  localization JSON, FastAPI's /docs, any route added later) with 401 — or, for a page a browser asks for, a
  redirect to the login form — until the request carries that session or HTTP Basic credentials of a UI user.
* ``/sdapi/v1`` keeps its own HTTP Basic check when ``--api-auth`` is given (modules/api.py); a browser
  logged in to the page is let in too (one login for the page and the API).  With only ``--gradio-auth``
  the API takes the UI's credentials (session or HTTP Basic), so nothing is left open.
* ``/healthz`` stays open for health checks, but without a login it says only ``{"ok": true}``.
* Whatever the flags, the gradio file route never fetches a URL for a client (the app makes no network
  requests), and gradio serves files only from its cache and upload folder (see ``gradio_file_paths``).
* ``--tls-keyfile``/``--tls-certfile`` are checked here at start (:func:`tls_options`), ``--subpath`` is
  normalized by :func:`normalize_subpath`, and :func:`open_warning` words the start-up warning for a server
  reachable from the network with no login.
"""
from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import re
import secrets
import ssl
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie
from pathlib import Path
from urllib.parse import unquote

SESSION_KEY = "sdwebui.session"   # ASGI scope key: the user name of a browser session logged in to the page
USER_KEY = "sdwebui.user"         # ASGI scope key: the user name of any accepted login (session or Basic)
API_PREFIX = "/sdapi/"

# What gradio's login form needs before anyone has logged in: the page itself (gradio answers it with the
# form while there is no session), the login and logout routes, its scripts, styles and icons.
PUBLIC_PATHS = {"/", "/login", "/login/", "/logout", "/healthz", "/favicon.ico", "/theme.css", "/robots.txt",
                "/manifest.json"}
PUBLIC_PREFIXES = ("/assets/", "/static/", "/svelte/", "/pwa_icon")
_SUBPATH_OK = re.compile(r"^[A-Za-z0-9._~\-/]*$")
_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


class AccessError(ValueError):
    """A problem with the access flags, said in one line at start."""


# -- credentials ------------------------------------------------------------------------------------------

def parse_credentials(text: str, where: str) -> dict[str, str]:
    """``user:pass[,user2:pass2]`` -> {user: pass}.  Empty entries are skipped; the password may hold ':'
    (not ','); an entry without ':' or without a user name raises AccessError naming ``where`` and the entry's
    place (never its text: it may be a password)."""
    users: dict[str, str] = {}
    for n, entry in enumerate((text or "").split(","), start=1):
        entry = entry.strip()
        if not entry:
            continue
        user, sep, password = entry.partition(":")
        if not sep or not user.strip():
            raise AccessError(f"{where}, entry {n}: expected user:password")
        users[user.strip()] = password
    return users


def read_credentials_file(path: str | Path) -> dict[str, str]:
    """The users of a ``--gradio-auth-path`` file: ``user:pass`` entries, comma separated, on any number of
    lines (blank lines are skipped)."""
    p = Path(path).expanduser()
    try:
        text = p.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise AccessError(f"--gradio-auth-path {p}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise AccessError(f"--gradio-auth-path {p}: cannot be read ({e})") from None
    users: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), start=1):
        users.update(parse_credentials(line, f"--gradio-auth-path {p}, line {n}"))
    if not users:
        raise AccessError(f"--gradio-auth-path {p}: no user:password entry in the file")
    return users


def ui_credentials(args) -> dict[str, str]:
    """The UI's users from --gradio-auth and --gradio-auth-path together ({} when neither is given)."""
    users = parse_credentials(getattr(args, "gradio_auth", None) or "", "--gradio-auth")
    if getattr(args, "gradio_auth", None) and not users:
        raise AccessError("--gradio-auth: expected user:password[,user2:password2]")
    if getattr(args, "gradio_auth_path", None):
        users.update(read_credentials_file(args.gradio_auth_path))
    return users


def api_credentials(args) -> dict[str, str]:
    return parse_credentials(getattr(args, "api_auth", None) or "", "--api-auth")


def check_password(users: dict[str, str], username: str, password: str) -> bool:
    """Whether the pair is one of ``users``; every entry is compared, so the time taken does not tell which
    user names exist."""
    ok = False
    for user, expected in users.items():
        u = secrets.compare_digest(username.encode("utf-8"), user.encode("utf-8"))
        p = secrets.compare_digest(password.encode("utf-8"), expected.encode("utf-8"))
        ok = ok or (u and p)
    return ok


# -- sub-path, TLS, the warning -----------------------------------------------------------------------------

def normalize_subpath(value: str | None) -> str:
    """``sd``, ``/sd`` or ``/sd/`` -> ``/sd``; nothing or ``/`` -> ``""``."""
    path = "/" + (value or "").strip().strip("/")
    if path == "/":
        return ""
    if not _SUBPATH_OK.match(path) or any(part in ("", ".", "..") for part in path[1:].split("/")):
        raise AccessError(f"--subpath {value!r}: expected a URL path such as /sd (letters, digits, - _ . ~ /)")
    return path


def tls_options(args) -> dict[str, str]:
    """uvicorn's ssl_keyfile/ssl_certfile for --tls-keyfile/--tls-certfile ({} without them), after loading
    the pair once so that a missing, unreadable or mismatched file stops the start with a clear message."""
    key, cert = getattr(args, "tls_keyfile", None), getattr(args, "tls_certfile", None)
    if not key and not cert:
        return {}
    if not key or not cert:
        raise AccessError("--tls-keyfile and --tls-certfile go together: give both")
    for flag, path in (("--tls-keyfile", key), ("--tls-certfile", cert)):
        if not Path(path).is_file():
            raise AccessError(f"{flag} {path}: no such file")
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key, password=lambda: b"")
    except (ssl.SSLError, OSError) as e:
        raise AccessError(f"--tls-certfile {cert} / --tls-keyfile {key}: not a usable certificate and "
                          f"unencrypted private key ({e})") from None
    return {"ssl_keyfile": str(key), "ssl_certfile": str(cert)}


def is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def open_warning(host: str, ui_open: bool, api_open: bool) -> str | None:
    """The start-up warning for a server others can reach with parts that need no login (None when none)."""
    if is_loopback(host) or not (ui_open or api_open):
        return None
    parts = " and ".join(p for p, is_open in (("the UI", ui_open), ("the API", api_open)) if is_open)
    fix = " / ".join(f for f, is_open in (("--gradio-auth user:pass", ui_open), ("--api-auth user:pass", api_open))
                     if is_open)
    return (f"WARNING: listening on {host} (reachable from the network) and {parts} need no login: anyone who "
            f"can reach this machine can use it. Add {fix}.")


# -- the guard --------------------------------------------------------------------------------------------

@dataclass
class Access:
    """The access rules of one server (from the flags)."""

    ui_users: dict[str, str] = field(default_factory=dict)
    api_users: dict[str, str] = field(default_factory=dict)
    subpath: str = ""           # "/sd": the URL path everything is served under ("" for none)
    gradio_app: object = None   # gradio's mounted app: its cookie name and session tokens

    @classmethod
    def from_args(cls, args) -> "Access":
        return cls(ui_credentials(args), api_credentials(args), normalize_subpath(getattr(args, "subpath", None)))

    @property
    def login_required(self) -> bool:
        return bool(self.ui_users)

    def check_ui(self, username: str, password: str) -> bool:
        return check_password(self.ui_users, username, password)

    def session_user(self, cookies: dict[str, str]) -> str | None:
        app = self.gradio_app
        if app is None:
            return None
        cookie_id = getattr(app, "cookie_id", "")
        tokens = getattr(app, "tokens", {})
        for name in (f"access-token-{cookie_id}", f"access-token-unsecure-{cookie_id}"):
            user = tokens.get(cookies.get(name)) if cookies.get(name) else None
            if user is not None:
                return user
        return None


def route_path(scope) -> str:
    """The request's path below the server's root path (the --subpath), as the router sees it."""
    path, root = scope.get("path", ""), scope.get("root_path", "")
    if root and path.startswith(root) and (len(path) == len(root) or path[len(root)] == "/"):
        path = path[len(root):]
    return path or "/"


def is_public(path: str) -> bool:
    if ".." in path or "\\" in path or "%" in path:   # no way round the list through a path that is cleaned up later
        return False
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


def _headers(scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or []}


def _cookies(headers: dict[str, str]) -> dict[str, str]:
    jar = SimpleCookie()
    try:
        jar.load(headers.get("cookie", ""))
    except CookieError:
        return {}
    return {k: m.value for k, m in jar.items()}


def basic_credentials(headers: dict[str, str]) -> tuple[str, str] | None:
    kind, _, value = headers.get("authorization", "").partition(" ")
    if kind.lower() != "basic":
        return None
    try:
        user, sep, password = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if sep else None


def fetches_url(path: str) -> bool:
    """Whether a gradio file route asks the server to fetch a URL (``/gradio_api/file=https://...``)."""
    if not path.startswith(("/gradio_api/file=", "/file=", "/gradio_api/proxy=", "/proxy=")):
        return False
    target = unquote(path.split("=", 1)[1]).lower()
    return "proxy=" in path or target.startswith(("http:", "https:", "//", "ftp:", "data:"))


class AccessGuard:
    """ASGI middleware: the login check in front of every route (see the module's docstring)."""

    def __init__(self, app, access: Access):
        self.app = app
        self.access = access

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        if self.access.subpath and not scope.get("root_path"):
            # the router, gradio and /docs build their URLs from the root path: the page's own requests go
            # under the prefix, and a request for /sd/x is routed as /x (one for /x, from a proxy that strips
            # the prefix, as well)
            scope["root_path"] = self.access.subpath
        path = route_path(scope)
        if fetches_url(path):
            return await _answer(scope, send, 403, {"detail": "This server does not fetch URLs."})
        if self.access.login_required or path.startswith(API_PREFIX):
            self._identify(scope)
        if self.access.login_required and not self._allowed(scope, path):
            return await self._refuse(scope, send, path)
        return await self.app(scope, receive, send)

    def _identify(self, scope) -> None:
        headers = _headers(scope)
        user = self.access.session_user(_cookies(headers))
        if user is not None:
            scope[SESSION_KEY] = scope[USER_KEY] = user
            return
        basic = basic_credentials(headers)
        if basic and self.access.check_ui(*basic):
            scope[USER_KEY] = basic[0]

    def _allowed(self, scope, path: str) -> bool:
        if USER_KEY in scope or is_public(path):
            return True
        # with --api-auth the API checks its own credentials (modules/api.py), the session included
        return path.startswith(API_PREFIX) and bool(self.access.api_users)

    async def _refuse(self, scope, send, path: str):
        headers = _headers(scope)
        if scope["type"] == "http" and scope.get("method") == "GET" and "text/html" in headers.get("accept", "") \
                and not path.startswith(API_PREFIX):
            root = scope.get("root_path", "")
            return await _answer(scope, send, 302, None, {"location": f"{root}/"})
        if path.startswith(API_PREFIX):
            body = {"error": "HTTPException", "detail": "Not authenticated", "body": "", "errors": "Not authenticated"}
            return await _answer(scope, send, 401, body, {"www-authenticate": "Basic"})
        return await _answer(scope, send, 401, {"detail": "Not authenticated: log in first"})


async def _answer(scope, send, status: int, body, headers: dict | None = None):
    if scope["type"] == "websocket":
        return await send({"type": "websocket.close", "code": 1008})
    data = json.dumps(body).encode("utf-8") if body is not None else b""
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    head += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": data})


# -- gradio's file serving --------------------------------------------------------------------------------

def gradio_file_paths(app_core) -> dict[str, list[str]]:
    """mount_gradio_app's allowed_paths/blocked_paths.  Nothing is added to what gradio serves by itself (its
    cache and upload folder, where every picture the UI shows is copied).  Refused even if some code were to
    return them to the page: the settings and styles files, the credentials file and the TLS key and
    certificate (model and output folders are not blocked: gradio copies previews and pictures from there)."""
    paths, args = getattr(app_core, "paths", None), getattr(app_core, "args", None)
    files = [getattr(paths, name, None) for name in ("config_file", "styles_file", "cache_file")]
    files += [getattr(args, name, None) for name in ("gradio_auth_path", "tls_keyfile", "tls_certfile")]
    return {"allowed_paths": [], "blocked_paths": [str(Path(f).resolve()) for f in files if f]}


def find_gradio_app(server):
    """The gradio app mounted on a FastAPI server (the one holding the login sessions), or None."""
    for route in getattr(server, "routes", []):
        sub = getattr(route, "app", None)
        if hasattr(sub, "tokens") and hasattr(sub, "cookie_id"):
            return sub
    return None
