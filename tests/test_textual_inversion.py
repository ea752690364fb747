"""Textual-inversion embeddings: file layouts, refusing pickled code, agreement with diffusers'
load_textual_inversion, skipped embeddings, token counting, "TI hashes" in infotext."""
from __future__ import annotations

import base64
import copy
import hashlib
import json
import os
from pathlib import Path

import pytest
import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from modules import conditioning, engine, extra_networks, infotext, textual_inversion
from modules.engine import GenerationRequest
from modules.options import Options
from modules.sd_models import CheckpointInfo, LoadedModel
from modules.textual_inversion import EmbeddingError, load_embedding, save_embedding
from testing.tiny_models import build_tiny_components


pytestmark = pytest.mark.usefixtures("one_thread")


def vecs(n, dim, seed):
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))


def sha12(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


class Evil:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# --------------------------------------------------------------------------- files


def test_file_layouts(tmp_path):
    v3 = vecs(3, 32, 0)
    pt = save_embedding(tmp_path / "a1111.pt", v3, step=500)
    e = load_embedding(pt)
    assert (e.name, e.num_vectors, e.shape, e.step) == ("a1111", 3, 32, 500)
    assert torch.equal(e.vectors["clip_l"], v3) and e.shorthash == sha12(pt)

    st = save_embedding(tmp_path / "st.safetensors", v3)            # A1111 safetensors: emb_params
    assert torch.equal(load_embedding(st).vectors["clip_l"], v3)

    one = vecs(1, 32, 1)[0]
    torch.save({"<cat-toy>": one}, tmp_path / "learned_embeds.bin")  # diffusers: {token: (dim,)}
    e = load_embedding(tmp_path / "learned_embeds.bin")
    assert e.name == "learned_embeds" and e.vectors["clip_l"].shape == (1, 32)

    xl = save_embedding(tmp_path / "xl.safetensors", {"clip_l": vecs(2, 32, 2), "clip_g": vecs(2, 64, 3)})
    e = load_embedding(xl)
    assert (e.num_vectors, e.shape, sorted(e.vectors)) == (2, 96, ["clip_g", "clip_l"])

    # A1111's PNG embedding: the data as JSON (tensors as {"TORCHTENSOR": ...}) in the "sd-ti-embedding" chunk
    data = {"string_to_param": {"*": {"TORCHTENSOR": v3.tolist()}}, "name": "from-png", "step": 7}
    info = PngInfo()
    info.add_text("sd-ti-embedding", base64.b64encode(json.dumps(data).encode()).decode())
    Image.new("RGB", (8, 8)).save(tmp_path / "card.png", pnginfo=info)
    e = load_embedding(tmp_path / "card.png")
    assert (e.name, e.step) == ("from-png", 7) and torch.allclose(e.vectors["clip_l"], v3)
    Image.new("RGB", (8, 8)).save(tmp_path / "a1111.png")              # a plain preview picture
    assert load_embedding(tmp_path / "a1111.png") is None

    with pytest.raises(EmbeddingError, match="several terms"):
        torch.save({"string_to_param": {"*": v3, "+": v3}}, tmp_path / "two.pt")
        load_embedding(tmp_path / "two.pt")


def test_pickled_code_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "ran"
    evil = Evil()
    evil.marker = marker
    torch.save({"string_to_param": {"*": evil}}, tmp_path / "evil.pt")
    with pytest.raises(EmbeddingError, match="cannot be loaded safely"):
        load_embedding(tmp_path / "evil.pt")
    assert not marker.exists()
    # the original textual-inversion layout (a ParameterDict) is torch's own class and loads
    pd = torch.nn.ParameterDict({"*": torch.nn.Parameter(vecs(2, 32, 4))})
    torch.save({"string_to_param": pd, "name": "old"}, tmp_path / "old.pt")
    assert torch.equal(load_embedding(tmp_path / "old.pt").vectors["clip_l"], vecs(2, 32, 4))


# --------------------------------------------------------------------------- agreement with diffusers


def diffusers_context(arch, prompt, loads):
    import diffusers

    comps = build_tiny_components(arch, seed=0)
    kw = dict(vae=comps.vae, text_encoder=comps.text_encoder, tokenizer=copy.deepcopy(comps.tokenizer),
              unet=comps.unet, scheduler=diffusers.EulerDiscreteScheduler())
    if arch == "sdxl":
        pipe = diffusers.StableDiffusionXLPipeline(text_encoder_2=comps.text_encoder_2,
                                                   tokenizer_2=copy.deepcopy(comps.tokenizer_2), **kw)
    else:
        pipe = diffusers.StableDiffusionPipeline(safety_checker=None, feature_extractor=None,
                                                 requires_safety_checker=False, **kw)
    for value, token, which in loads:
        te = pipe.text_encoder_2 if which == 2 else pipe.text_encoder
        tok = pipe.tokenizer_2 if which == 2 else pipe.tokenizer
        pipe.load_textual_inversion(value, token=token, text_encoder=te, tokenizer=tok, local_files_only=True)
    with torch.no_grad():
        return pipe.encode_prompt(prompt=prompt, device=torch.device("cpu"), num_images_per_prompt=1,
                                  do_classifier_free_guidance=False)[0]


def test_sd1_embedding_equals_diffusers(sd1, tmp_path):
    path = save_embedding(tmp_path / "emb" / "mytoken.pt", vecs(3, 32, 5) * 0.05)
    lib = extra_networks.Library([], [tmp_path / "emb"])
    cond = conditioning.TextConditioner(sd1, embeddings=lib.embedding_vectors())
    prompt = "a photo of mytoken on a table"
    ours = cond.encode([prompt])[0].context
    plain = cond.encode(["a photo of on a table"])[0].context
    ref = diffusers_context("sd1", prompt, [(str(path), "mytoken", 1)])
    assert ours.shape == ref.shape == (1, 77, 32)
    assert (ours - ref).abs().max().item() < 1e-5
    assert (ours - plain).abs().max().item() > 0.1
    assert cond.token_count("a mytoken")[0] == 4  # "a" + 3 vectors


def test_sdxl_embedding_equals_diffusers(tmp_path):
    comps = build_tiny_components("sdxl", seed=0)
    l, g = vecs(2, 32, 6) * 0.05, vecs(2, 64, 7) * 0.05
    save_embedding(tmp_path / "emb" / "xltok.safetensors", {"clip_l": l, "clip_g": g})
    lib = extra_networks.Library([], [tmp_path / "emb"])
    cond = conditioning.TextConditioner(comps, embeddings=lib.embedding_vectors())
    ours = cond.encode(["xltok, a red car"])[0].context
    ref = diffusers_context("sdxl", "xltok, a red car", [(l, "xltok", 1), (g, "xltok", 2)])
    assert ours.shape == ref.shape == (1, 77, 96)
    assert (ours - ref).abs().max().item() < 1e-5


# --------------------------------------------------------------------------- library and jobs


def test_library_lists_loaded_and_skipped(sd1, tmp_path):
    emb = tmp_path / "embeddings"
    save_embedding(emb / "good.pt", vecs(2, 32, 8), step=100)
    save_embedding(emb / "sub" / "wide.safetensors", vecs(1, 64, 9))
    evil = Evil()
    evil.marker = tmp_path / "ran"
    torch.save({"string_to_param": {"*": evil}}, emb / "evil.pt")
    Image.new("RGB", (8, 8)).save(emb / "good.png")          # preview of good.pt
    lib = extra_networks.Library([], [emb])
    loaded, skipped = lib.embedding_status(sd1)
    assert loaded == {"good": {"step": 100, "sd_checkpoint": None, "sd_checkpoint_name": None, "shape": 32,
                               "vectors": 2}}
    assert sorted(skipped) == ["evil", "wide"]
    assert skipped["wide"]["reason"] == "clip_l vectors have shape (1, 64), the model needs (n, 32)"
    assert skipped["wide"]["shape"] == 64 and skipped["wide"]["vectors"] == 1
    assert skipped["evil"]["reason"].startswith("evil.pt cannot be loaded safely")
    assert lib.embeddings["good"].preview == emb / "good.png"
    assert not (tmp_path / "ran").exists()
    # without a model every readable embedding counts as loaded
    assert sorted(lib.embedding_status(None)[0]) == ["good", "wide"]
    # a new file is picked up without a restart; the vectors dict stays the same object while nothing changes
    first = lib.embedding_vectors()
    assert lib.embedding_vectors() is first
    save_embedding(emb / "later.pt", vecs(1, 32, 10))
    assert sorted(lib.embedding_vectors()) == ["good", "later", "wide"]


def test_job_with_embeddings_in_both_prompts(sd1, tmp_path):
    emb = tmp_path / "embeddings"
    pos = save_embedding(emb / "goodstyle.pt", vecs(2, 32, 11) * 0.1)
    neg = save_embedding(emb / "badhands.safetensors", vecs(3, 32, 12) * 0.1)
    save_embedding(emb / "unused.pt", vecs(1, 32, 13))
    lib = extra_networks.Library([], [emb])
    loaded = LoadedModel(info=CheckpointInfo(Path("/nonexistent/t.safetensors"), "t.safetensors", "cd" * 32),
                         components=sd1, vae_name="None")
    cache: dict = {}

    def run(prompt, negative):
        req = GenerationRequest(prompt=prompt, negative_prompt=negative, steps=2, width=64, height=64, seed=3,
                                sampler_name="Euler")
        return engine.generate(loaded, req, Options().snapshot(), embeddings=lib.embedding_vectors(),
                               conditioners=cache, networks=lib)

    res = run("a house, goodstyle", "badhands")
    params = infotext.parse_generation_parameters(res.infotexts[0])
    assert params["TI hashes"] == f"badhands: {sha12(neg)}, goodstyle: {sha12(pos)}"
    plain = run("a house, ", "")
    assert "TI hashes" not in plain.infotexts[0]   # the hashes of one job do not stick to the next
    assert plain.images[0].tobytes() != res.images[0].tobytes()
    only_neg = run("a house, ", "badhands")
    assert infotext.parse_generation_parameters(only_neg.infotexts[0])["TI hashes"] == f"badhands: {sha12(neg)}"
    assert only_neg.images[0].tobytes() not in (plain.images[0].tobytes(), res.images[0].tobytes())


def test_app_counts_embedding_vectors_in_the_token_counter(sd1, tmp_path):
    from modules import cmd_args
    from modules.app import App

    save_embedding(tmp_path / "models" / "embeddings" / "fourvec.pt", vecs(4, 32, 14))
    app = App(cmd_args.parse_args(["--data-dir", str(tmp_path)]))
    app.refresh_models()
    app.models.loaded = LoadedModel(info=CheckpointInfo(Path("/nonexistent/t.safetensors"), "t.safetensors",
                                                        "ef" * 32), components=sd1, vae_name="None")
    assert app.token_count("a fourvec") == (5, 75)
    assert app.token_count("a dog") == (2, 75)
    app.queue.stop()


def test_embedding_api_dict_matches_a1111():
    e = textual_inversion.embedding_from_data({"string_to_param": {"*": vecs(2, 32, 0)}, "step": 10,
                                               "sd_checkpoint": "abc", "sd_checkpoint_name": "model"}, "n")
    assert e.api_dict() == {"step": 10, "sd_checkpoint": "abc", "sd_checkpoint_name": "model", "shape": 32,
                            "vectors": 2}
