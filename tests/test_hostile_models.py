"""One hostile model file must never hide the good ones.

A zoo of broken and malicious files (written here) sits beside a tiny good checkpoint in the checkpoint, VAE,
LoRA and embedding folders.  Each bad file is listed as unusable with its reason (API, the status line under
the checkpoint dropdown, the log), refresh and /sdapi/v1/sd-models answer 200 with the good model, a job on it
runs, loading a bad one is a clear ModelLoadError, and no pickle ever runs the code it carries."""
from __future__ import annotations

import io
import json
import logging
import pickle
import zipfile
from html import escape as html_escape
from pathlib import Path

import pytest
import torch

from modules import cmd_args, file_readers, sd_models
from testing.tiny_models import write_tiny_checkpoint

fastapi = pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

API = "/sdapi/v1"
SMALL = {"width": 64, "height": 64, "steps": 2, "cfg_scale": 7.0, "seed": 3}
pytestmark = pytest.mark.usefixtures("one_thread")


class _RunsCode:
    """A pickle whose loading would create the marker file (it must never be created)."""
    marker: Path

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _raw(path: Path, header: bytes, data: bytes = b"") -> None:
    path.write_bytes(len(header).to_bytes(8, "little") + header + data)


def _entry(dtype="F32", shape=(4,), offsets=(0, 16)) -> dict:
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}


def _header(**entries) -> bytes:
    return json.dumps(entries).encode()


def _evil_zip(marker: Path) -> bytes:
    """A zip-format .ckpt whose data.pkl would run code."""
    evil = _RunsCode()
    evil.marker = marker
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"state_dict": {"w": evil}}, protocol=2))
        z.writestr("archive/version", "3\n")
    return buf.getvalue()


# name -> words its reason must contain
ZOO = {
    "list.safetensors": "the .safetensors header is a JSON array, not an object",
    "deep.safetensors": "nested too deeply to be a real header (more than 32 levels)",
    "negative.safetensors": "tensor 'x': shape [-4] is not a list of non-negative whole numbers",
    "disagree.safetensors": "tensor 'x': F32 [8] does not fill its 16 bytes",
    "backwards.safetensors": "tensor 'x': data offsets [16, 0] are not a valid [begin, end] pair",
    "overlap.safetensors": "tensor 'y': its data offsets [0, 16] overlaps another tensor's data",
    "gap.safetensors": "tensor 'x': its data offsets [16, 32] leaves a gap after the previous tensor",
    "dtype.safetensors": "tensor 'x': unknown dtype ['F32']",
    "metadata.safetensors": "__metadata__ entry 'steps' is a JSON number; the format allows only text values",
    "hugedim.safetensors": "is too large for any tensor",
    "trailing.safetensors": "the file has 8 bytes after the last tensor's data",
    "len-2^63.safetensors": "it says it is 9223372036854775808 bytes long, more than the 100000000 bytes",
    "len-too-long.safetensors": "the .safetensors header is damaged (it says 5000 bytes, the file has 10)",
    "zero.safetensors": "the file is too short to be a .safetensors file (0 bytes)",
    "x.safetensors": "is a folder",
    "evil.ckpt": "this pickle file wants to import Python objects",
    "zip-evil.ckpt": "this pickle file wants to import Python objects",
    "bare-pickle.ckpt": "it is a bare pickle, which is refused",
    "..evil..safetensors": "the file is truncated",
}


def write_zoo(folder: Path, marker: Path, good: bytes, ckpt_ext: str = ".ckpt") -> dict[str, str]:
    """The hostile files in ``folder``; {file name: expected words of its reason}."""
    folder.mkdir(parents=True, exist_ok=True)
    _raw(folder / "list.safetensors", b"[1, 2, 3]")
    _raw(folder / "deep.safetensors", b"[" * 100_000 + b"]" * 100_000)
    _raw(folder / "negative.safetensors", _header(x=_entry(shape=[-4])), bytes(16))
    _raw(folder / "disagree.safetensors", _header(x=_entry(shape=[8])), bytes(16))
    _raw(folder / "backwards.safetensors", _header(x=_entry(offsets=[16, 0])), bytes(16))
    _raw(folder / "overlap.safetensors", _header(x=_entry(), y=_entry()), bytes(16))
    _raw(folder / "gap.safetensors", _header(x=_entry(offsets=[16, 32])), bytes(32))
    _raw(folder / "dtype.safetensors", _header(x=_entry(dtype=["F32"])), bytes(16))
    _raw(folder / "metadata.safetensors", _header(__metadata__={"steps": 1}, x=_entry()), bytes(16))
    _raw(folder / "hugedim.safetensors", _header(x=_entry(shape=[0, 2**62, 2**62], offsets=[0, 0])))
    _raw(folder / "trailing.safetensors", _header(x=_entry()), bytes(24))
    (folder / "len-2^63.safetensors").write_bytes((2**63).to_bytes(8, "little") + b"{}")
    (folder / "len-too-long.safetensors").write_bytes((5000).to_bytes(8, "little") + b"{}")
    (folder / "zero.safetensors").write_bytes(b"")
    (folder / "x.safetensors").mkdir(exist_ok=True)
    evil = _RunsCode()
    evil.marker = marker
    torch.save({"state_dict": {"w": torch.zeros(2)}, "evil": evil}, folder / f"evil{ckpt_ext}")
    (folder / f"zip-evil{ckpt_ext}").write_bytes(_evil_zip(marker))
    (folder / f"bare-pickle{ckpt_ext}").write_bytes(pickle.dumps(evil, protocol=2))
    (folder / "..evil..safetensors").write_bytes(good[: len(good) // 2])
    return {name.replace(".ckpt", ckpt_ext): why for name, why in ZOO.items()}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    import webui
    from modules.app import App

    data = tmp_path_factory.mktemp("hostile")
    marker = data / "code-ran"
    models = data / "models"
    good_path = write_tiny_checkpoint(models / "Stable-diffusion" / "good.safetensors", "sd1", seed=0)
    good = good_path.read_bytes()
    (models / "Stable-diffusion" / "模型 ü.safetensors").write_bytes(good)
    zoo = {sub: write_zoo(models / sub, marker, good, ".ckpt" if sub != "embeddings" else ".pt")
           for sub in ("Stable-diffusion", "VAE", "Lora", "embeddings")}
    app = App(cmd_args.parse_args(["--data-dir", str(data), "--skip-install"]))
    app.refresh_models()
    client = TestClient(webui.create_server(app, with_ui=False, with_api=True))
    yield app, client, zoo, marker
    app.queue.stop()


def _reasons(app, folder: str) -> dict[str, str]:
    return {b.filename.name: b.reason for b in app.models.bad_files if b.filename.parent.name == folder}


def test_every_bad_checkpoint_is_listed_with_its_reason_and_the_good_ones_stay(env):
    app, _, zoo, marker = env
    assert [i.name for i in app.models.checkpoints.values()] == ["good.safetensors", "模型 ü.safetensors"]
    reasons = _reasons(app, "Stable-diffusion")
    assert set(reasons) == set(zoo["Stable-diffusion"])
    for name, words in zoo["Stable-diffusion"].items():
        assert words in reasons[name], (name, reasons[name])
    assert not marker.exists(), "a pickle ran code while the models were listed"


def test_refresh_and_sd_models_answer_200_with_the_good_model(env, caplog):
    app, client, _, _ = env
    with caplog.at_level(logging.WARNING, logger="modules.sd_models"):
        assert client.post(f"{API}/refresh-checkpoints").status_code == 200
    assert any("list.safetensors" in r.getMessage() and "JSON array" in r.getMessage() for r in caplog.records)
    r = client.get(f"{API}/sd-models")
    assert r.status_code == 200
    assert [m["model_name"] for m in r.json()] == ["good", "模型 ü"]
    assert r.json()[0]["sha256"] == app.models.find("good").sha256


def test_the_status_line_under_the_dropdown_names_the_bad_files(env):
    from modules import ui

    app = env[0]
    html = ui.model_status_html(app)
    assert "Skipped model files: " in html
    first = app.models.bad_files[:5]  # the line names five, then counts the rest
    assert [b.filename.name for b in first] == ["..evil..safetensors", "backwards.safetensors", "bare-pickle.ckpt",
                                                "deep.safetensors", "disagree.safetensors"]
    for b in first:
        assert html_escape(f"{b.filename.name}: {b.reason}") in html
    assert "..evil..safetensors: the file is truncated" in html
    assert f"(and {len(app.models.bad_files) - 5} more)" in html
    assert app.models.titles()[0] == "good.safetensors [" + app.models.find("good").shorthash + "]"


def test_a_job_on_the_good_model_runs_and_bad_loras_are_warnings(env):
    _, client, zoo, marker = env
    tags = " ".join(f"<lora:{Path(n).stem}:1>" for n in ("list.safetensors", "deep.safetensors", "evil.ckpt",
                                                           "zip-evil.ckpt", "negative.safetensors"))
    r = client.post(f"{API}/txt2img", json={**SMALL, "prompt": f"a red circle {tags}"})
    assert r.status_code == 200, r.text
    info = json.loads(r.json()["info"])
    assert info["sd_model_name"] == "good" and len(r.json()["images"]) == 1
    warns = "\n".join(info.get("warnings") or [])
    assert "LoRA 'list' cannot be used: cannot read list.safetensors: the .safetensors header is a JSON array" in warns
    assert "LoRA 'deep' cannot be used" in warns and "nested too deeply" in warns
    assert "LoRA 'zip-evil' cannot be used" in warns and "wants to import Python objects" in warns
    assert "LoRA 'negative' cannot be used" in warns and "non-negative" in warns
    assert not marker.exists()


@pytest.mark.parametrize("name, words", [("list.safetensors", "JSON array"), ("evil.ckpt", "import Python objects"),
                                          ("zip-evil.ckpt", "import Python objects"),
                                          ("bare-pickle.ckpt", "import Python objects"),
                                          ("x.safetensors", "is a folder"), ("gap.safetensors", "leaves a gap")])
def test_loading_a_bad_file_is_a_clear_model_load_error_and_the_model_stays(env, name, words):
    app, _, _, marker = env
    good = app.load_model("good.safetensors")
    folder = app.paths.ckpt_dirs[0]
    info = sd_models.CheckpointInfo(folder / name, name, "0" * 64)
    with pytest.raises(sd_models.ModelLoadError, match=name.replace(".", r"\.")) as e:
        app.models.load(info)
    assert words in str(e.value)
    assert app.models.loaded is good and not marker.exists()


def test_bad_vaes_are_not_offered_and_choosing_one_says_why(env):
    app, client, zoo, marker = env
    assert app.models.vaes == {}
    reasons = _reasons(app, "VAE")
    assert set(reasons) == set(zoo["VAE"])
    for name, words in zoo["VAE"].items():
        assert words in reasons[name], (name, reasons[name])
    assert client.get(f"{API}/sd-vae").json() == []
    r = client.post(f"{API}/txt2img", json={**SMALL, "prompt": "x", "override_settings": {"sd_vae": "evil.ckpt"}})
    assert r.status_code == 422 and "VAE 'evil.ckpt' not found" in r.json()["detail"]
    with pytest.raises(sd_models.ModelLoadError, match="VAE 'zip-evil.ckpt' cannot be used: this pickle file wants"):
        app.models.resolve_vae(app.models.find("good"), "zip-evil.ckpt")
    # a bad name.vae.safetensors beside a checkpoint is not picked by "Automatic": the model loads with its own
    beside = app.paths.ckpt_dirs[0] / "good.vae.safetensors"
    _raw(beside, b"[1]")
    try:
        assert app.models.resolve_vae(app.models.find("good"), "Automatic") == ("None", None)
    finally:
        beside.unlink()
    assert not marker.exists()


def test_bad_embeddings_are_skipped_with_their_reason(env):
    _, client, zoo, marker = env
    r = client.get(f"{API}/embeddings")
    assert r.status_code == 200
    skipped = r.json()["skipped"]
    assert "list" in skipped and "JSON array" in skipped["list"]["reason"]
    assert "nested too deeply" in skipped["deep"]["reason"]
    assert "cannot be loaded safely" in skipped["evil"]["reason"]
    assert "cannot be loaded safely" in skipped["zip-evil"]["reason"]
    assert r.json()["loaded"] == {}
    assert not marker.exists()


# ---------------------------------------------------------------------------- the header rules themselves


def test_header_limits_match_the_safetensors_library():
    assert file_readers.MAX_HEADER_BYTES == 100_000_000  # safetensors' MAX_HEADER_SIZE
    assert file_readers.json_depth(b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}') == 3
    assert file_readers.json_depth(b'{"k": "[[[[\\"{{{{"}') == 1  # brackets inside strings do not count
    assert file_readers.json_depth(b"[" * 1_000_000, limit=32) > 32


def test_a_header_that_passes_opens_in_safetensors_and_one_it_refuses_does_not_pass(tmp_path):
    from safetensors import safe_open

    cases = {"ok": (_header(__metadata__={"a": "b"}, x=_entry(), y=_entry(dtype="F16", shape=[2, 1],
                                                                            offsets=[16, 20])), bytes(20)),
             "gap": (_header(x=_entry(offsets=[4, 20])), bytes(20)),
             "trailing": (_header(x=_entry()), bytes(17)),
             "metadata": (_header(__metadata__={"a": 1}, x=_entry()), bytes(16)),
             "dtype": (_header(x=_entry(dtype="Q4")), bytes(16))}
    for name, (head, data) in cases.items():
        path = tmp_path / f"{name}.safetensors"
        _raw(path, head, data)
        try:
            with safe_open(str(path), framework="pt") as f:
                opened = {k: tuple(f.get_tensor(k).shape) for k in f.keys()}
        except Exception:  # noqa: BLE001 - the library's own error types
            opened = None
        try:
            header, _ = file_readers.read_header(path)
        except file_readers.HeaderError:
            header = None
        assert (opened is None) == (header is None), name
    assert opened is None and header is None  # the last case ("dtype") is refused by both
    assert file_readers.read_safetensors(tmp_path / "ok.safetensors")[1] == {"a": "b"}
