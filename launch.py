#!/usr/bin/env python3
"""One-command start: prepare the environment, then run the web UI.

    python launch.py            # venv/ + torch + requirements, then the UI on 127.0.0.1:7860
    python launch.py --tests    # the same environment + test requirements, then the whole test suite

Environment variables (as in A1111): TORCH_COMMAND overrides how torch is
installed; COMMANDLINE_ARGS adds flags; PYTHON picks the interpreter for venv/.
"""
from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("VENV_DIR", ROOT / "venv"))
DEFAULT_TORCH_COMMAND = "pip install torch==2.13.0"
_T0 = time.perf_counter()
_phase_start = _T0


def phase(name: str) -> None:
    """Print how long the phase that just ended took."""
    global _phase_start
    now = time.perf_counter()
    print(f"[launch] {name}: {now - _phase_start:.2f}s (total {now - _T0:.2f}s)", flush=True)
    _phase_start = now


def in_venv() -> bool:
    return sys.prefix != getattr(sys, "base_prefix", sys.prefix) or bool(os.environ.get("VIRTUAL_ENV"))


def venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def run(cmd: str | list[str], desc: str) -> None:
    print(f"[launch] {desc}", flush=True)
    args = shlex.split(cmd) if isinstance(cmd, str) else cmd
    if args and args[0] == "pip":
        args = [sys.executable, "-m", "pip", *args[1:]]
    res = subprocess.run(args, cwd=ROOT)
    if res.returncode != 0:
        sys.exit(f"[launch] failed ({res.returncode}): {' '.join(args)}")


def pip_install(args: list[str], desc: str) -> None:
    run([sys.executable, "-m", "pip", "install", "--disable-pip-version-check", *args], desc)


def ensure_venv(argv: list[str]) -> None:
    if in_venv() or "--skip-venv" in argv:
        return
    py = venv_python()
    if not py.exists():
        base = os.environ.get("PYTHON", sys.executable)
        run([base, "-m", "venv", str(VENV)], f"creating virtual environment in {VENV}")
    phase("virtual environment")
    os.execv(str(py), [str(py), str(Path(__file__).resolve()), *argv])


def torch_importable() -> bool:
    """Cheap check (no import): is a torch package installed in this environment?"""
    import importlib.util
    return importlib.util.find_spec("torch") is not None


def file_digest(*paths: Path) -> str:
    h = hashlib.sha256(sys.version.encode())
    for p in paths:
        h.update(p.read_bytes() if p.exists() else b"")
    return h.hexdigest()


def install_requirements(files: list[Path], stamp_name: str) -> None:
    stamp = Path(sys.prefix) / stamp_name
    digest = file_digest(*files)
    if stamp.exists() and stamp.read_text().strip() == digest:
        return
    for f in files:
        pip_install(["-r", str(f)], f"installing {f.name}")
    stamp.write_text(digest)


def prepare_environment(argv: list[str], tests: bool) -> None:
    if "--skip-install" in argv:
        return
    if "--skip-torch-install" not in argv and not torch_importable():
        cmd = os.environ.get("TORCH_COMMAND", DEFAULT_TORCH_COMMAND)
        run(cmd, f"installing torch: {cmd}")
    phase("torch")
    install_requirements([ROOT / "requirements.txt"], ".webui-requirements")
    if tests:
        install_requirements([ROOT / "requirements.txt", ROOT / "requirements-test.txt"], ".webui-test-requirements")
        ensure_chromium()
    phase("requirements")


def ensure_chromium() -> None:
    """Browser tests drive Debian's Chromium; install it when missing and we are allowed to."""
    if Path("/usr/bin/chromium").exists() or os.environ.get("WEBUI_SKIP_CHROMIUM"):
        return
    apt = shutil.which("apt-get")
    if apt is None:
        print("[launch] /usr/bin/chromium not found and no apt-get: browser tests will be skipped", flush=True)
        return
    sudo = [] if os.geteuid() == 0 else (["sudo", "-n"] if shutil.which("sudo") else None)
    if sudo is None:
        print("[launch] /usr/bin/chromium not found and not root: browser tests will be skipped", flush=True)
        return
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run([*sudo, apt, "-qq", "update"], env=env)
    subprocess.run([*sudo, apt, "-y", "-qq", "install", "--no-install-recommends", "chromium", "fonts-noto-cjk", "fonts-noto-color-emoji"], env=env)


def run_tests(extra: list[str]) -> int:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    # one test process per core (pytest-xdist): the tests run single-threaded models (tests/conftest.py)
    cmd = [sys.executable, "-m", "pytest", "-q", "-n", "auto", "tests", *extra]
    print(f"[launch] {' '.join(cmd)}", flush=True)
    return subprocess.run(cmd, cwd=ROOT, env=env).returncode


def main() -> None:
    argv = sys.argv[1:]
    tests = "--tests" in argv
    if tests:
        i = argv.index("--tests")
        argv, extra = argv[:i], argv[i + 1:]
    ensure_venv(argv + (["--tests", *extra] if tests else []))
    prepare_environment(argv, tests)
    if tests:
        sys.exit(run_tests(extra))
    sys.path.insert(0, str(ROOT))
    import webui  # noqa: E402 - imported after the environment is ready

    phase("import")
    webui.main(argv, started_at=_T0)


if __name__ == "__main__":
    main()
