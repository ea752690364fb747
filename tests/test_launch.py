"""The launcher and the flags: requirement stamps, venv re-exec rule, a real start."""
from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from modules import cmd_args

ROOT = Path(__file__).resolve().parent.parent


def load_launch():
    spec = importlib.util.spec_from_file_location("launch_under_test", ROOT / "launch.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_requirements_installed_only_when_changed(tmp_path, monkeypatch):
    launch = load_launch()
    calls = []
    monkeypatch.setattr(launch, "pip_install", lambda args, desc: calls.append(args))
    monkeypatch.setattr(launch.sys, "prefix", str(tmp_path))
    req = tmp_path / "requirements.txt"
    req.write_text("numpy==2.4.6\n")
    launch.install_requirements([req], ".stamp")
    assert calls == [["-r", str(req)]]
    launch.install_requirements([req], ".stamp")
    assert len(calls) == 1, "unchanged requirements must not be installed again"
    req.write_text("numpy==2.4.6\npillow==12.3.0\n")
    launch.install_requirements([req], ".stamp")
    assert len(calls) == 2


def test_torch_command_override(monkeypatch):
    launch = load_launch()
    ran = []
    monkeypatch.setattr(launch, "torch_importable", lambda: False)
    monkeypatch.setattr(launch, "run", lambda cmd, desc: ran.append(cmd))
    monkeypatch.setattr(launch, "install_requirements", lambda files, stamp: None)
    monkeypatch.setenv("TORCH_COMMAND", "pip install torch==9.9.9 --index-url file:///nowhere")
    launch.prepare_environment([], tests=False)
    assert ran == ["pip install torch==9.9.9 --index-url file:///nowhere"]
    ran.clear()
    launch.prepare_environment(["--skip-install"], tests=False)
    assert ran == []


def test_venv_is_not_created_inside_a_virtual_environment(monkeypatch):
    launch = load_launch()
    monkeypatch.setattr(launch, "in_venv", lambda: True)
    monkeypatch.setattr(launch.os, "execv", lambda *a: pytest.fail("must not re-exec inside a venv"))
    launch.ensure_venv([])  # returns without doing anything


def test_flags_parse_in_one_place(monkeypatch):
    monkeypatch.setenv("COMMANDLINE_ARGS", "--listen --port 7000")
    a = cmd_args.parse_args(["--api", "--ckpt", "m.safetensors", "--ckpt-dir", "/x", "--data-dir", "/d", "--use-cpu",
                             "all", "--no-half", "--nowebui", "--skip-install"])
    assert (a.listen, a.port, a.api, a.ckpt, a.ckpt_dir, a.data_dir, a.use_cpu, a.no_half, a.nowebui,
            a.skip_install) == (True, 7000, True, "m.safetensors", "/x", "/d", ["all"], True, True, True)
    assert cmd_args.server_name(a) == "0.0.0.0"
    monkeypatch.delenv("COMMANDLINE_ARGS")
    assert cmd_args.server_name(cmd_args.parse_args([])) == "127.0.0.1"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def test_launch_starts_the_server_and_prints_phase_times(tmp_path):
    from testing.tiny_models import write_tiny_checkpoint

    write_tiny_checkpoint(tmp_path / "models" / "Stable-diffusion" / "tiny.safetensors", "sd1")
    port = free_port()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("COMMANDLINE_ARGS", None)
    proc = subprocess.Popen([sys.executable, "launch.py", "--skip-install", "--port", str(port), "--data-dir",
                             str(tmp_path), "--api"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.time() + 120
        body = None
        while time.time() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    body = r.read().decode()
                if '"model":"tiny.safetensors' in body:
                    break
            except OSError:
                pass
            time.sleep(0.3)
        assert body is not None, "server did not answer"
        assert '"model":"tiny.safetensors [' in body, body
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        out = proc.communicate(timeout=30)[0]
    assert "[launch] import:" in out
    assert f"Running on local URL:  http://127.0.0.1:{port}" in out
    assert "[startup] ready:" in out


def test_model_libraries_are_imported_in_one_go_by_whoever_needs_them_first():
    """The model loads in a background thread while a request may reach the same libraries: both go through
    model_formats, whose import takes diffusers' and transformers' lazily imported classes under one lock
    (two threads importing them at once made the model fail with "cannot import name 'AutoModel'")."""
    import subprocess
    import sys

    code = ("import sys, threading\n"
            "from modules import conditioning\n"
            "errors = []\n"
            "def load():\n"
            "    try:\n"
            "        from modules import model_formats\n"
            "        from diffusers import AutoencoderKL\n"
            "    except Exception as e:\n"
            "        errors.append(repr(e))\n"
            "t = threading.Thread(target=load); t.start()\n"
            "used, limit = conditioning.count_tokens_without_model('a red circle')\n"
            "t.join()\n"
            "assert not errors, errors\n"
            "assert (used, limit) == (3, 75)\n"
            "assert 'diffusers.loaders.peft' in sys.modules and 'transformers.models.clip' in sys.modules\n")
    res = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1], capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
