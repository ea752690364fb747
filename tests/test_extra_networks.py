"""Extra networks in the app: finding LoRA files, tag arguments, the card browser's data and its panel,
the /sdapi/v1 loras / embeddings / refresh-loras routes, and Lora / TI / VAE hashes in a real job."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from modules import cmd_args, extra_networks, infotext, lora
from modules.extra_networks import Library, parse_lora_params
from modules.prompt_parser import ExtraNetworkParams
from modules.textual_inversion import save_embedding
from testing.tiny_models import build_tiny_components, write_tiny_checkpoint


pytestmark = pytest.mark.usefixtures("one_thread")


def write_lora(path: Path, comps, seed=0, metadata=None, targets=None, mtime=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    targets = targets or ["unet:down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q",
                          "te1:encoder.layers.0.mlp.fc1"]
    save_file(lora.random_lora(comps, targets, rank=2, alpha=1.0, seed=seed, std=0.3), str(path), metadata=metadata)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def addnet12(path: Path) -> str:
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    return hashlib.sha256(data[8 + n:]).hexdigest()[:12]


# --------------------------------------------------------------------------- tags


@pytest.mark.parametrize("items,expected", [
    (["name"], ("name", 1.0, 1.0)),
    (["name", "0.8"], ("name", 0.8, 0.8)),
    (["name", "0.5", "1.25"], ("name", 0.5, 1.25)),
    (["name", "te=0.3"], ("name", 0.3, 0.3)),
    (["name", "unet=0.2"], ("name", 1.0, 0.2)),
    (["name", "0.7", "unet=0"], ("name", 0.7, 0.0)),
    (["name", "1", "1", "dyn=8"], ("name", 1.0, 1.0)),
    ([" spaced ", " 2 "], ("spaced", 2.0, 2.0)),
])
def test_lora_tag_arguments(items, expected):
    assert parse_lora_params(ExtraNetworkParams(items)) == expected


@pytest.mark.parametrize("items,message", [
    (["name", "x"], "<lora:name:...>: weight 'x' is not a number"),
    (["name", "1", "nan"], "<lora:name:...>: unet weight 'nan' is not a finite number"),
    (["name", "te=?"], "<lora:name:...>: te weight '?' is not a number"),
    ([""], "a <lora:...> tag without a name"),
])
def test_bad_lora_tag_arguments(items, message):
    with pytest.raises(ValueError) as e:
        parse_lora_params(ExtraNetworkParams(items))
    assert str(e.value) == message


# --------------------------------------------------------------------------- files and cards


def test_discovery_lookup_previews_and_cards(sd1, tmp_path):
    main, extra = tmp_path / "Lora", tmp_path / "more"
    write_lora(main / "style" / "Ink.safetensors", sd1, 1, {"ss_output_name": "inkStyleV2"}, mtime=1_000_000)
    write_lora(main / "detail.safetensors", sd1, 2, mtime=3_000_000)
    write_lora(extra / "zeta.safetensors", sd1, 3, mtime=2_000_000)
    write_lora(extra / "detail.safetensors", sd1, 4)                       # same name: the first folder wins
    (main / "notes.txt").write_text("not a network")
    Image.new("RGB", (4, 4), (255, 0, 0)).save(main / "style" / "Ink.preview.png")
    Image.new("RGB", (4, 4), (0, 255, 0)).save(extra / "zeta.png")
    (main / "detail.json").write_text(json.dumps({"activation text": "intricate", "preferred weight": 0.6,
                                                  "description": "adds detail"}))
    lib = Library([main, extra], [])
    assert list(lib.api_loras()[i]["name"] for i in range(3)) == ["detail", "Ink", "zeta"]
    assert lib.duplicates == [extra / "detail.safetensors"]
    assert lib.api_loras()[1] == {"name": "Ink", "alias": "inkStyleV2", "path": str(main / "style" / "Ink.safetensors"),
                                  "metadata": {"ss_output_name": "inkStyleV2"}}
    assert lib.find_lora("inkStyleV2").name == "Ink"
    assert lib.find_lora("ink").name == "Ink"
    assert lib.find_lora("style/Ink").name == "Ink"
    assert lib.find_lora("nothing") is None
    assert lib.loras["Ink"].preview == main / "style" / "Ink.preview.png"
    assert lib.loras["zeta"].preview == extra / "zeta.png"
    assert lib.loras["detail"].preview is None

    cards = lib.cards("lora")
    assert [(c.name, c.text) for c in cards] == [("detail", "<lora:detail:0.6> intricate"), ("Ink", "<lora:Ink:1>"),
                                                 ("zeta", "<lora:zeta:1>")]
    assert [c.name for c in lib.cards("lora", sort="Date modified")] == ["detail", "zeta", "Ink"]
    assert [c.name for c in lib.cards("lora", search="INK")] == ["Ink"]
    assert [c.name for c in lib.cards("lora", search="style v2")] == ["Ink"]   # every word, anywhere
    assert [c.name for c in lib.cards("lora", search="style zeta")] == []
    assert [c.name for c in lib.cards("lora", search="inkstyle")] == ["Ink"]
    assert [c.name for c in lib.cards("lora", search="adds")] == ["detail"]
    # a file added later is found by name without an explicit refresh (one rescan on a miss)
    write_lora(extra / "late.safetensors", sd1, 5)
    assert lib.find_lora("late").path == extra / "late.safetensors"


def test_lora_hash_is_kohyas_and_metadata_hash_wins(sd1, tmp_path):
    a = write_lora(tmp_path / "a.safetensors", sd1, 1, {"note": "x"})
    b = write_lora(tmp_path / "b.safetensors", sd1, 1, {"note": "a much longer note that changes the header"})
    c = write_lora(tmp_path / "c.safetensors", sd1, 1, {"sshs_model_hash": "ABCDEF0123456789" * 4})
    d = write_lora(tmp_path / "d.safetensors", sd1, 1, {"sshs_model_hash": "<img src=x onerror=alert(1)>"})
    torch.save(lora.random_lora(sd1, ["te1:encoder.layers.0.mlp.fc1"], seed=2), tmp_path / "e.pt")
    lib = Library([tmp_path], [])
    h = {n: lib.lora_shorthash(lib.find_lora(n)) for n in "abcde"}
    assert h["a"] == h["b"] == addnet12(a) != hashlib.sha256(a.read_bytes()).hexdigest()[:12]
    assert h["c"] == "abcdef012345"
    assert h["d"] == addnet12(d)                      # a metadata "hash" that is not hex is ignored
    assert h["e"] == hashlib.sha256((tmp_path / "e.pt").read_bytes()).hexdigest()[:12]
    assert b.stat().st_size != a.stat().st_size


def test_card_tabs_include_checkpoints_and_embeddings(sd1, tmp_path):
    from modules.app import App

    write_tiny_checkpoint(tmp_path / "models" / "Stable-diffusion" / "tiny.safetensors", "sd1", seed=0)
    Image.new("RGB", (4, 4)).save(tmp_path / "models" / "Stable-diffusion" / "tiny.png")
    save_embedding(tmp_path / "models" / "embeddings" / "myemb.pt", torch.zeros(2, 32))
    app = App(cmd_args.parse_args(["--data-dir", str(tmp_path)]))
    app.refresh_models()
    title = app.models.titles()[0]
    ck = app.extra_networks.cards("checkpoint")
    assert [(c.name, c.text, c.preview) for c in ck] == [
        ("tiny", title, tmp_path / "models" / "Stable-diffusion" / "tiny.png")]
    ti = app.extra_networks.cards("textual_inversion")
    assert [(c.name, c.text, c.description) for c in ti] == [("myemb", "myemb", "2 vector(s), width 32")]
    app.queue.stop()


# --------------------------------------------------------------------------- the panel


def test_prompt_toggling():
    from modules.ui.extra_networks_ui import toggle_in_prompt

    assert toggle_in_prompt("", "<lora:a:1>", "lora") == "<lora:a:1>"
    assert toggle_in_prompt("a cat", "<lora:a:1>", "lora") == "a cat <lora:a:1>"
    assert toggle_in_prompt("a cat <lora:a:0.4>, blue", "<lora:a:1>", "lora") == "a cat, blue"
    assert toggle_in_prompt("a cat <lora:ab:1>", "<lora:a:1>", "lora") == "a cat <lora:ab:1> <lora:a:1>"
    assert toggle_in_prompt("a cat", "myemb", "textual_inversion") == "a cat myemb"
    assert toggle_in_prompt("a cat myemb, blue", "myemb", "textual_inversion") == "a cat, blue"
    assert toggle_in_prompt("a cat, myembx", "myemb", "textual_inversion") == "a cat, myembx myemb"
    assert toggle_in_prompt("myemb, a cat", "myemb", "textual_inversion") == "a cat"


def test_panel_renders_cards_and_builds(sd1, tmp_path, monkeypatch):
    import gradio as gr

    from modules.app import App
    from modules.ui import build_ui
    from modules.ui.extra_networks_ui import placeholder_file, render

    monkeypatch.chdir(tmp_path)  # previews under the working folder are served as files
    write_lora(tmp_path / "models" / "Lora" / "b.safetensors", sd1, 1)
    write_lora(tmp_path / "models" / "Lora" / "a.safetensors", sd1, 2)
    Image.new("RGB", (300, 200), (10, 20, 30)).save(tmp_path / "models" / "Lora" / "a.png")
    app = App(cmd_args.parse_args(["--data-dir", str(tmp_path)]))
    app.refresh_models()
    items, cards = render(app, "", "Name")
    assert [c.name for c in cards[1]] == ["a", "b"]
    assert items[1] == [(str(tmp_path / "models" / "Lora" / "a.png"), "a"), (placeholder_file(), "b")]
    assert items[0] == [] and items[2] == []
    with Image.open(placeholder_file()) as im:
        assert im.size == (256, 256) and im.getpixel((0, 0)) == (96, 96, 104)
    ui = build_ui(app)
    assert isinstance(ui.txt2img.c["en_gallery_lora"], gr.Gallery)
    assert isinstance(ui.img2img.c["en_gallery_textual_inversion"], gr.Gallery)
    app.queue.stop()


def test_preview_outside_served_folders_becomes_a_thumbnail(tmp_path, monkeypatch):
    import tempfile

    from modules.ui.extra_networks_ui import card_picture

    big = tmp_path / "models" / "x.png"
    big.parent.mkdir()
    Image.new("RGB", (1024, 512), (1, 2, 3)).save(big)
    card = extra_networks.Card("lora", "x", "<lora:x:1>", big, 0.0)
    (tmp_path / "cwd").mkdir()
    (tmp_path / "tmp").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # gradio serves neither folder's parent
    pic = card_picture(card, {})
    assert isinstance(pic, Image.Image) and pic.size == (256, 128) and pic.getpixel((5, 5)) == (1, 2, 3)


# --------------------------------------------------------------------------- through the API


def test_api_routes_and_hashes_in_a_real_job(sd1, tmp_path):
    fastapi = pytest.importorskip("fastapi")  # noqa: F841
    from fastapi.testclient import TestClient

    import webui
    from modules.app import App

    models = tmp_path / "models"
    write_tiny_checkpoint(models / "Stable-diffusion" / "tiny.safetensors", "sd1", seed=0)
    vae = models / "VAE" / "myvae.safetensors"
    vae.parent.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in build_tiny_components("sd1", seed=7).vae.state_dict().items()}, str(vae))
    first = write_lora(models / "Lora" / "first.safetensors", sd1, 1, {"ss_output_name": "firstAlias"})
    save_embedding(models / "embeddings" / "emb1.pt", torch.randn(2, 32) * 0.1, step=3)
    save_embedding(models / "embeddings" / "wide.pt", torch.randn(1, 48))
    app = App(cmd_args.parse_args(["--data-dir", str(tmp_path)]))
    app.refresh_models()
    client = TestClient(webui.create_server(app, with_ui=False, with_api=True))
    try:
        r = client.get("/sdapi/v1/loras")
        assert r.status_code == 200
        assert r.json() == [{"name": "first", "alias": "firstAlias", "path": str(first),
                             "metadata": {"ss_output_name": "firstAlias"}}]
        # embeddings before any model is loaded: all readable ones
        assert sorted(client.get("/sdapi/v1/embeddings").json()["loaded"]) == ["emb1", "wide"]

        body = {"prompt": "a boat emb1 <lora:firstAlias:0.5>", "negative_prompt": "", "steps": 2, "width": 64,
                "height": 64, "seed": 9, "sampler_name": "Euler", "override_settings": {"sd_vae": "myvae.safetensors"}}
        r = client.post("/sdapi/v1/txt2img", json=body)
        assert r.status_code == 200, r.text
        info = json.loads(r.json()["info"])
        params = infotext.parse_generation_parameters(info["infotexts"][0])
        assert params["Prompt"] == "a boat emb1 <lora:firstAlias:0.5>"
        assert params["Lora hashes"] == f"firstAlias: {addnet12(first)}"
        emb_sha = hashlib.sha256((models / "embeddings" / "emb1.pt").read_bytes()).hexdigest()
        assert params["TI hashes"] == f"emb1: {emb_sha[:12]}"
        assert params["VAE"] == "myvae.safetensors"
        assert params["VAE hash"] == hashlib.sha256(vae.read_bytes()).hexdigest()[:10]
        assert info["warnings"] == []

        r = client.get("/sdapi/v1/embeddings").json()
        assert r["loaded"] == {"emb1": {"step": 3, "sd_checkpoint": None, "sd_checkpoint_name": None, "shape": 32,
                                        "vectors": 2}}
        assert r["skipped"]["wide"]["reason"] == "clip_l vectors have shape (1, 48), the model needs (n, 32)"

        write_lora(models / "Lora" / "sub" / "second.safetensors", sd1, 2)
        assert [x["name"] for x in client.get("/sdapi/v1/loras").json()] == ["first"]
        assert client.post("/sdapi/v1/refresh-loras").status_code == 200
        assert [x["name"] for x in client.get("/sdapi/v1/loras").json()] == ["first", "second"]
    finally:
        app.queue.stop()
