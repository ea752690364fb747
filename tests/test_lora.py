"""LoRA / LyCORIS networks: delta math, layer names (kohya diffusers- and LDM-style, PEFT, old diffusers),
images equal to diffusers' LoRA loading, bit-exact restore, bad networks reported, "Lora hashes" infotext."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from modules import engine, extra_networks, infotext, lora, rng
from modules.engine import GenerationRequest, JobContext, job, prompts, vae
from tests.diffusers_schedulers import diffusers_scheduler
from modules.options import Options
from modules.prompt_parser import parse_extra_networks
from modules.sd_models import CheckpointInfo, LoadedModel
from testing.tiny_models import build_tiny_components

TOL = 1e-3
ATTN = "down_blocks.0.attentions.0.transformer_blocks.0"
TARGETS = [  # UNet attention, feed-forward, 1x1 proj conv, 3x3 resnet convs, time projection; TE MLP
    f"unet:{ATTN}.attn1.to_q", f"unet:{ATTN}.attn2.to_k", f"unet:{ATTN}.ff.net.0.proj",
    "unet:up_blocks.1.attentions.2.transformer_blocks.0.attn1.to_out.0", "unet:down_blocks.0.attentions.1.proj_in",
    "unet:down_blocks.0.resnets.0.conv1", "unet:up_blocks.1.resnets.0.conv_shortcut",
    "unet:mid_block.resnets.0.time_emb_proj", "unet:up_blocks.0.resnets.1.conv2",
    "te1:encoder.layers.1.mlp.fc1", "te1:encoder.layers.0.mlp.fc2",
]


pytestmark = pytest.mark.usefixtures("one_thread")


def loaded_for(comps):
    return LoadedModel(info=CheckpointInfo(Path("/nonexistent/tiny.safetensors"), "tiny.safetensors", "ab" * 32),
                       components=comps, vae_name="None")


def library(tmp_path, files: dict[str, dict], metadata: dict | None = None) -> extra_networks.Library:
    root = tmp_path / "Lora"
    root.mkdir(exist_ok=True)
    for name, sd in files.items():
        save_file(sd, str(root / f"{name}.safetensors"), metadata=(metadata or {}).get(name))
    return extra_networks.Library([root], [])


def image(comps, lib, prompt, seed=11, steps=4, negative="ugly"):
    """Our engine's image for `prompt` (with its <lora:...> tags), (1, 3, 64, 64) in [0, 1]; weights restored."""
    req = GenerationRequest(prompt=prompt, negative_prompt=negative, sampler_name="Euler", steps=steps,
                            cfg_scale=6.0, width=64, height=64, seed=seed)
    ctx = JobContext.create(loaded_for(comps), req, Options().snapshot())
    ctx.prompts = prompts.prepare(ctx)
    assert ctx.prompts.networks == parse_extra_networks(prompt)[1]
    with extra_networks.activate(lib, comps, ctx.prompts.networks, ctx.conditioners) as active:
        assert active.warnings == []
        with torch.inference_mode():
            lat, _ = job.run_batch(ctx, engine.Batch(0, [seed], [seed]))
            return (vae.decode(ctx, lat) / 2 + 0.5).clamp(0, 1)


def diffusers_image(lora_file, prompt, scale, seed=11, steps=4, negative="ugly", fuse=False):
    import diffusers

    comps = build_tiny_components("sd1", seed=0)  # a fresh copy: diffusers wraps the modules it patches
    sched = diffusers_scheduler("Euler", comps.spec.scheduler_config)
    pipe = diffusers.StableDiffusionPipeline(vae=comps.vae, text_encoder=comps.text_encoder, tokenizer=comps.tokenizer,
                                             unet=comps.unet, scheduler=sched, safety_checker=None,
                                             feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    pipe.load_lora_weights(str(lora_file))
    kw = {}
    if fuse:
        pipe.fuse_lora(lora_scale=scale)
    else:
        kw["cross_attention_kwargs"] = {"scale": scale}
    noise = rng.ImageRNG((4, 8, 8), [seed]).first()
    return pipe(prompt=prompt, negative_prompt=negative, num_inference_steps=steps, guidance_scale=6.0, height=64,
                width=64, latents=noise, output_type="pt", **kw).images


# --------------------------------------------------------------------------- delta math


def layer(**tensors):
    return lora.NetworkLayer("lora_unet_x", {k: v for k, v in tensors.items()})


def test_lora_delta_is_up_down_alpha_over_rank():
    g = torch.Generator().manual_seed(0)
    down, up = torch.randn(4, 6, generator=g), torch.randn(5, 4, generator=g)
    d = layer(down=down, up=up, alpha=torch.tensor(2.0)).delta((5, 6))
    torch.testing.assert_close(d, up @ down * 0.5, rtol=0, atol=1e-6)
    assert layer(down=down, up=up).scale == 1.0               # no alpha: scale 1
    assert layer(down=down, up=up, alpha=torch.tensor(8.0)).scale == 2.0
    assert layer(down=down, up=up, alpha=torch.tensor(8.0), scale=torch.tensor(0.25)).scale == 0.25
    with pytest.raises(lora.NetworkError, match=r"does not fit a weight of shape \(6, 6\)"):
        layer(down=down, up=up).delta((6, 6))


def test_conv_lora_delta_acts_like_the_two_convolutions():
    """3x3 down + 1x1 up: the merged kernel gives the same output as running down then up."""
    g = torch.Generator().manual_seed(1)
    down, up = torch.randn(3, 5, 3, 3, generator=g), torch.randn(7, 3, 1, 1, generator=g)
    x = torch.randn(2, 5, 9, 9, generator=g)
    d = layer(down=down, up=up, alpha=torch.tensor(1.5)).delta((7, 5, 3, 3))
    expected = F.conv2d(F.conv2d(x, down, padding=1), up) * 0.5
    torch.testing.assert_close(F.conv2d(x, d, padding=1), expected, rtol=1e-5, atol=1e-5)
    u = layer(down=down, up=up, alpha=torch.tensor(1.5)).update((7, 5, 3, 3))  # what merging uses: the factors
    assert isinstance(u, lora.LowRank) and u.up.shape == (7, 3) and u.down.shape == (3, 45)
    torch.testing.assert_close(u.dense((7, 5, 3, 3)), d, rtol=1e-6, atol=1e-6)
    # a LoRA trained on a linear layer fits a 1x1 conv of the same size (SD1 proj_in) and vice versa
    lin = layer(down=torch.randn(2, 5, generator=g), up=torch.randn(7, 2, generator=g))
    assert lin.delta((7, 5, 1, 1)).shape == (7, 5, 1, 1)


def test_loha_and_lokr_deltas():
    g = torch.Generator().manual_seed(2)
    w1a, w1b, w2a, w2b = (torch.randn(s, generator=g) for s in ((6, 2), (2, 4), (6, 2), (2, 4)))
    loha = layer(hada_w1_a=w1a, hada_w1_b=w1b, hada_w2_a=w2a, hada_w2_b=w2b, alpha=torch.tensor(1.0))
    assert loha.kind == "loha" and loha.rank == 2
    torch.testing.assert_close(loha.delta((6, 4)), (w1a @ w1b) * (w2a @ w2b) * 0.5, rtol=0, atol=1e-6)

    # Tucker LoHa: LyCORIS' rebuild einsum('i j k l, j r, i p -> p r k l', t, w_b, w_a)
    t1, t2 = torch.randn(2, 2, 3, 3, generator=g), torch.randn(2, 2, 3, 3, generator=g)
    a1, b1, a2, b2 = (torch.randn(s, generator=g) for s in ((2, 6), (2, 4), (2, 6), (2, 4)))
    cp = layer(hada_w1_a=a1, hada_w1_b=b1, hada_t1=t1, hada_w2_a=a2, hada_w2_b=b2, hada_t2=t2)
    ref = torch.einsum("i j k l, j r, i p -> p r k l", t1, b1, a1) * torch.einsum("i j k l, j r, i p -> p r k l",
                                                                                   t2, b2, a2)
    torch.testing.assert_close(cp.delta((6, 4, 3, 3)), ref, rtol=1e-5, atol=1e-5)

    w1 = torch.randn(2, 3, generator=g)
    w2a, w2b = torch.randn(4, 2, generator=g), torch.randn(2, 5, generator=g)
    lokr = layer(lokr_w1=w1, lokr_w2_a=w2a, lokr_w2_b=w2b, alpha=torch.tensor(4.0))
    assert lokr.kind == "lokr" and lokr.rank == 2
    torch.testing.assert_close(lokr.delta((8, 15)), torch.kron(w1, w2a @ w2b) * 2.0, rtol=0, atol=1e-6)
    full = layer(lokr_w1=w1, lokr_w2=torch.randn(4, 5, generator=g), alpha=torch.tensor(4.0))
    assert full.rank is None and full.scale == 1.0          # no factored part: alpha is not used
    conv_w2 = torch.randn(4, 5, 3, 3, generator=g)
    conv = layer(lokr_w1=w1, lokr_w2=conv_w2).delta((8, 15, 3, 3))
    assert torch.equal(conv[0:4, 5:10], w1[0, 1] * conv_w2)  # block (0, 1) of the Kronecker product


def test_layer_problems_are_reported():
    assert layer(down=torch.zeros(2, 3)).problem() == "LoRA layer without both up and down weights"
    assert layer(down=torch.zeros(2, 3), up=torch.zeros(3, 2), dora=torch.zeros(3)).problem() == \
        "DoRA layers are not supported"
    assert layer(hada_w1_a=torch.zeros(2, 2)).problem() == "incomplete LoHa layer"


# --------------------------------------------------------------------------- names


def test_layer_names_resolve_for_every_spelling(sd1):
    index = lora.LayerIndex(sd1)
    q = f"unet:{ATTN}.attn1.to_q"
    for name in (f"lora_unet_{ATTN.replace('.', '_')}_attn1_to_q",                 # kohya SD1 (diffusers tree)
                 "lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q",      # LDM tree
                 f"unet.{ATTN}.attn1.to_q"):                                       # diffusers / PEFT
        assert index.find(name) == q
    assert index.find("lora_unet_input_blocks_1_0_in_layers_2") == "unet:down_blocks.0.resnets.0.conv1"
    assert index.find("lora_unet_output_blocks_5_1_transformer_blocks_0_attn2_to_k") == \
        "unet:up_blocks.1.attentions.2.transformer_blocks.0.attn2.to_k"
    assert index.find("lora_unet_output_blocks_2_0_skip_connection") == "unet:up_blocks.0.resnets.2.conv_shortcut"
    assert index.find("lora_unet_middle_block_1_proj_in") == "unet:mid_block.attentions.0.proj_in"
    te = "te1:encoder.layers.0.self_attn.q_proj"
    for name in ("lora_te_text_model_encoder_layers_0_self_attn_q_proj", "lora_te1_text_model_encoder_layers_0_self_attn_q_proj",
                 "text_encoder.text_model.encoder.layers.0.self_attn.q_proj", "text_encoder.encoder.layers.0.self_attn.q_proj"):
        assert index.find(name) == te
    assert index.find("lora_te2_text_model_encoder_layers_0_self_attn_q_proj") is None  # SD1 has one encoder


def test_sdxl_names_resolve():
    comps = build_tiny_components("sdxl", seed=0)
    index = lora.LayerIndex(comps)
    assert index.find("lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q") == \
        "unet:down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"
    assert index.find("lora_te1_text_model_encoder_layers_1_mlp_fc2") == "te1:encoder.layers.1.mlp.fc2"
    assert index.find("lora_te2_text_model_encoder_layers_1_mlp_fc2") == "te2:text_model.encoder.layers.1.mlp.fc2"
    assert index.find("text_encoder_2.text_model.encoder.layers.0.self_attn.out_proj") == \
        "te2:text_model.encoder.layers.0.self_attn.out_proj"


def test_file_key_spellings_group_into_layers():
    z = torch.zeros(2, 2)
    parsed = lora.parse_network({
        "lora_unet_a.lora_down.weight": z, "lora_unet_a.lora_up.weight": z, "lora_unet_a.alpha": torch.tensor(1.0),
        "unet.b.lora_A.weight": z, "unet.b.lora_B.weight": z,
        "unet.c.lora.down.weight": z, "unet.c.lora.up.weight": z,
        "text_encoder.d.lora_linear_layer.down.weight": z, "text_encoder.d.lora_linear_layer.up.weight": z,
        "unet.e.attn1.processor.to_out_lora.down.weight": z, "unet.e.attn1.processor.to_out_lora.up.weight": z,
        "lora_unet_f.hada_w1_a": z, "lora_unet_g.lokr_w1": z, "lora_unet_h.diff": z,
        "something.else": z,
    })
    assert sorted(parsed.layers) == ["lora_unet_a", "lora_unet_f", "lora_unet_g", "lora_unet_h", "text_encoder.d",
                                     "unet.b", "unet.c", "unet.e.attn1.to_out.0"]
    assert sorted(parsed.layers["lora_unet_a"].tensors) == ["alpha", "down", "up"]
    assert [parsed.layers[n].kind for n in ("lora_unet_f", "lora_unet_g", "lora_unet_h")] == ["loha", "lokr", "diff"]
    assert parsed.unknown_keys == ["something.else"]


# --------------------------------------------------------------------------- agreement with diffusers


def test_kohya_lora_image_equals_diffusers(sd1, tmp_path):
    sd = lora.random_lora(sd1, TARGETS, rank=4, alpha=2.0, seed=3, std=0.3)
    lib = library(tmp_path, {"mylora": sd})
    ours = image(sd1, lib, "a red circle <lora:mylora:0.7>")
    plain = image(sd1, lib, "a red circle")
    ref = diffusers_image(tmp_path / "Lora" / "mylora.safetensors", "a red circle", 0.7)
    assert (ours - plain).abs().max().item() > 0.05           # the LoRA matters
    assert (ours - ref).abs().max().item() < TOL


def test_ldm_named_and_diffusers_format_files_give_the_same_image(sd1, tmp_path):
    """The same weights as a kohya file with LDM names, and as a diffusers/PEFT file (alpha in its
    lora_adapter_metadata) including text-encoder attention, which diffusers loads too."""
    targets = TARGETS[:6] + ["te1:encoder.layers.0.self_attn.q_proj", "te1:encoder.layers.1.self_attn.v_proj"]
    sd = lora.random_lora(sd1, targets, rank=4, alpha=2.0, seed=5, std=0.3)
    ldm_names = {f"lora_unet_{ATTN.replace('.', '_')}": "lora_unet_input_blocks_1_1_transformer_blocks_0",
                 "lora_unet_down_blocks_0_attentions_1_proj_in": "lora_unet_input_blocks_2_1_proj_in",
                 "lora_unet_down_blocks_0_resnets_0_conv1": "lora_unet_input_blocks_1_0_in_layers_2",
                 "lora_unet_up_blocks_1_attentions_2": "lora_unet_output_blocks_5_1"}
    ldm = {}
    for k, v in sd.items():
        for old, new in ldm_names.items():
            if k.startswith(old):
                k = new + k[len(old):]
        ldm[k] = v
    peft = {}
    for k, v in sd.items():
        name, _, suffix = k.partition(".")
        q = next(t for t in targets if name.endswith(t.split(":")[1].replace(".", "_")))
        comp, path = q.split(":")
        prefix = "unet." if comp == "unet" else "text_encoder."
        if suffix == "lora_down.weight":
            peft[prefix + path + ".lora_A.weight"] = v
        elif suffix == "lora_up.weight":
            peft[prefix + path + ".lora_B.weight"] = v
    config = {"unet.r": 4, "unet.lora_alpha": 2, "text_encoder.r": 4, "text_encoder.lora_alpha": 2,
              "unet.target_modules": [t[5:] for t in targets if t.startswith("unet:")],
              "text_encoder.target_modules": [t[4:] for t in targets if t.startswith("te1:")]}
    meta = {"format": "pt", "lora_adapter_metadata": json.dumps(config)}
    lib = library(tmp_path, {"kohya": sd, "ldm": ldm, "peft": peft}, metadata={"peft": meta})
    a = image(sd1, lib, "a green square <lora:kohya:0.8>")
    b = image(sd1, lib, "a green square <lora:ldm:0.8>")
    c = image(sd1, lib, "a green square <lora:peft:0.8>")
    assert torch.equal(a, b)
    assert (a - c).abs().max().item() < 1e-5
    ref = diffusers_image(tmp_path / "Lora" / "peft.safetensors", "a green square", 0.8, fuse=True)  # fuse_lora
    assert (c - ref).abs().max().item() < TOL


# --------------------------------------------------------------------------- merging


def test_weights_restored_bit_for_bit_after_100_cycles(tmp_path):
    comps = build_tiny_components("sd1", seed=4)
    comps.text_encoder.half()  # a half-precision part: the float32 sum is cast back and forth
    lib = library(tmp_path, {f"n{i}": lora.random_lora(comps, rank=2 + i, alpha=1.0, seed=i, std=0.5)
                             for i in range(3)})
    before = {f"{i}.{name}": p.detach().clone() for i, m in enumerate((comps.unet, comps.text_encoder))
              for name, p in m.named_parameters()}
    g = torch.Generator().manual_seed(0)
    changed = 0
    for cycle in range(100):
        w = torch.rand(3, generator=g) * 4 - 2
        prompt = " ".join(f"<lora:n{i}:{w[i].item():.4f}:{-w[i].item() / 2:.4f}>" for i in range(cycle % 3 + 1))
        active = extra_networks.activate(lib, comps, parse_extra_networks(prompt)[1])
        assert active.warnings == [] and len(active.applied) == cycle % 3 + 1
        changed += not torch.equal(comps.unet.down_blocks[0].resnets[0].conv1.weight,
                                   before["0.down_blocks.0.resnets.0.conv1.weight"])
        active.restore()
        active.restore()  # a second restore does nothing
    after = {f"{i}.{name}": p for i, m in enumerate((comps.unet, comps.text_encoder))
             for name, p in m.named_parameters()}
    assert changed == 100
    assert all(torch.equal(before[k], after[k]) and before[k].dtype == after[k].dtype for k in before)


def test_multipliers_split_text_encoder_and_unet(sd1, tmp_path):
    q_te, q_unet = "te1:encoder.layers.1.mlp.fc1", f"unet:{ATTN}.attn1.to_q"
    sd = lora.random_lora(sd1, [q_te, q_unet], rank=2, alpha=1.0, seed=7)
    lib = library(tmp_path, {"split": sd})
    te_w = sd1.text_encoder.get_submodule("encoder.layers.1.mlp.fc1").weight
    un_w = sd1.unet.get_submodule(f"{ATTN}.attn1.to_q").weight
    te0, un0 = te_w.clone(), un_w.clone()
    te_delta = sd["lora_te_text_model_encoder_layers_1_mlp_fc1.lora_up.weight"] @ \
        sd["lora_te_text_model_encoder_layers_1_mlp_fc1.lora_down.weight"] * 0.5
    un_name = f"lora_unet_{ATTN.replace('.', '_')}_attn1_to_q"
    un_delta = sd[un_name + ".lora_up.weight"] @ sd[un_name + ".lora_down.weight"] * 0.5
    for tag, te, un in (("<lora:split:0.25:2>", 0.25, 2.0), ("<lora:split:te=0:unet=-1>", 0.0, -1.0),
                        ("<lora:split:0.5>", 0.5, 0.5), ("<lora:split>", 1.0, 1.0), ("<lyco:split:3:0>", 3.0, 0.0)):
        with extra_networks.activate(lib, sd1, parse_extra_networks(tag)[1]) as active:
            assert active.warnings == []
            torch.testing.assert_close(te_w - te0, te_delta * te, rtol=0, atol=1e-5)
            torch.testing.assert_close(un_w - un0, un_delta * un, rtol=0, atol=1e-5)
            assert active.touches_text_encoder == (te != 0)
        assert torch.equal(te_w, te0) and torch.equal(un_w, un0)


def test_deltas_are_cached_across_jobs_and_weights(sd1, tmp_path, monkeypatch):
    lib = library(tmp_path, {"c": lora.random_lora(sd1, TARGETS, rank=2, seed=8)})
    calls = []
    real = lora.NetworkLayer.update

    def counting(self, *a, **k):
        calls.append(self.name)
        return real(self, *a, **k)

    monkeypatch.setattr(lora.NetworkLayer, "update", counting)
    for w in (1.0, 0.3, -0.7):
        with extra_networks.activate(lib, sd1, parse_extra_networks(f"<lora:c:{w}>")[1]):
            pass
    assert len(calls) == len(TARGETS)   # computed in the first job only


def test_loha_and_lokr_files_merge_into_the_model(sd1, tmp_path):
    g = torch.Generator().manual_seed(9)
    name = f"lora_unet_{ATTN.replace('.', '_')}_attn2_to_v"   # (32, 32)
    conv = "lora_unet_down_blocks_0_resnets_1_conv2"        # (32, 32, 3, 3)
    loha = {f"{name}.hada_w1_a": torch.randn(32, 2, generator=g), f"{name}.hada_w1_b": torch.randn(2, 32, generator=g),
            f"{name}.hada_w2_a": torch.randn(32, 2, generator=g), f"{name}.hada_w2_b": torch.randn(2, 32, generator=g),
            f"{name}.alpha": torch.tensor(1.0)}
    lokr = {f"{conv}.lokr_w1": torch.randn(4, 4, generator=g), f"{conv}.lokr_w2": torch.randn(8, 8, 3, 3, generator=g)}
    lib = library(tmp_path, {"loha": loha, "lokr": lokr})
    v = sd1.unet.get_submodule(f"{ATTN}.attn2.to_v").weight
    c = sd1.unet.get_submodule("down_blocks.0.resnets.1.conv2").weight
    v0, c0 = v.clone(), c.clone()
    with extra_networks.activate(lib, sd1, parse_extra_networks("<lora:loha:0.5> <lora:lokr:2>")[1]) as active:
        assert active.warnings == [] and [a.name for a in active.applied] == ["loha", "lokr"]
        expected_v = (loha[f"{name}.hada_w1_a"] @ loha[f"{name}.hada_w1_b"]) * \
            (loha[f"{name}.hada_w2_a"] @ loha[f"{name}.hada_w2_b"]) * 0.5 * 0.5
        torch.testing.assert_close(v - v0, expected_v, rtol=0, atol=1e-4)
        k = torch.kron(lokr[f"{conv}.lokr_w1"][:, :, None, None], lokr[f"{conv}.lokr_w2"])
        torch.testing.assert_close(c - c0, k * 2, rtol=0, atol=1e-4)
    assert torch.equal(v, v0) and torch.equal(c, c0)


# --------------------------------------------------------------------------- whole jobs


def test_job_reports_bad_networks_and_records_hashes(sd1, tmp_path):
    good = lora.random_lora(sd1, TARGETS, rank=4, alpha=4.0, seed=10, std=0.3)
    xl = build_tiny_components("sdxl", seed=0)
    xl_lora = lora.random_lora(xl, ["unet:down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"], seed=1)
    # SDXL's input_blocks.4.1 is 64 wide here; named as SD1's input_blocks.1.1 (32 wide) it exists but does not fit
    xl_lora = {k.replace("down_blocks_1_attentions_0", "input_blocks_1_1"): v for k, v in xl_lora.items()}
    lib = library(tmp_path, {"good": good, "xl": xl_lora},
                  metadata={"xl": {"ss_base_model_version": "sdxl_base_v1-0"}})
    (tmp_path / "Lora" / "broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    comps = sd1
    prompt = "a cat <lora:good:0.6> <lora:missing:1> <lora:xl:1> <lora:broken> <lora:good:abc>, <hypernet:h:1>"
    before = {k: v.clone() for k, v in comps.unet.state_dict().items()}
    res = engine.generate(loaded_for(comps), GenerationRequest(prompt=prompt, negative_prompt="<lora:good:1>", steps=3,
                                                               width=64, height=64, seed=5, sampler_name="Euler"),
                          Options().snapshot(), networks=lib)
    assert all(torch.equal(before[k], v) for k, v in comps.unet.state_dict().items())
    w = res.warnings
    assert "extra-network tags in the negative prompt have no effect; they were ignored" in w
    assert "LoRA 'missing' not found; it was left out" in w
    assert "<lora:good:...>: weight 'abc' is not a number; the network was left out" in w
    assert "extra network 'hypernet' is not supported; its tags were ignored" in w
    assert "LoRA 'xl' (made for sdxl) does not fit the loaded model (sd1): lora_unet_input_blocks_1_1_transformer_" \
           "blocks_0_attn1_to_q: its delta has 4096 values, the model's weight is (32, 32); it was left out" in w
    assert any(x.startswith("LoRA 'broken' cannot be used: cannot read broken.safetensors") for x in w), w
    assert len(w) == 6
    # the image is the one with only the good network
    alone = proc_image(comps, lib, "a cat <lora:good:0.6>, ", seed=5)
    assert res.images[0].tobytes() == alone.tobytes()
    # infotext: the prompt keeps its tags; the hash is kohya's: sha256 of the bytes after the header
    data = (tmp_path / "Lora" / "good.safetensors").read_bytes()
    n = int.from_bytes(data[:8], "little")
    h = hashlib.sha256(data[8 + n:]).hexdigest()[:12]
    params = infotext.parse_generation_parameters(res.infotexts[0])
    assert params["Prompt"] == prompt
    assert params["Lora hashes"] == f"good: {h}"
    assert f'Lora hashes: "good: {h}"' in res.infotexts[0]


def proc_image(comps, lib, prompt, seed):
    req = GenerationRequest(prompt=prompt, steps=3, width=64, height=64, seed=seed, sampler_name="Euler",
                            negative_prompt="")
    return engine.generate(loaded_for(comps), req, Options().snapshot(), networks=lib).images[0]


def test_text_encoder_lora_does_not_leak_through_the_conditioning_cache(sd1, tmp_path):
    lib = library(tmp_path, {"te": lora.random_lora(sd1, ["te1:encoder.layers.1.mlp.fc1"], seed=12, std=0.5)})
    conditioners: dict = {}

    def run(prompt):
        req = GenerationRequest(prompt=prompt, steps=2, width=64, height=64, seed=1, sampler_name="Euler")
        return engine.generate(loaded_for(sd1), req, Options().snapshot(), conditioners=conditioners,
                               networks=lib).images[0].tobytes()

    plain = run("a dog")
    with_lora = run("a dog <lora:te:1>")
    assert with_lora != plain
    assert run("a dog") == plain
    assert run("a dog <lora:te:1>") == with_lora


def test_lora_reaches_weights_offloaded_module_by_module(tmp_path):
    """--lowvram: accelerate keeps the weights in its hooks (the parameters are on the meta device)."""
    from accelerate import cpu_offload

    plain, offloaded = build_tiny_components("sd1", seed=6), build_tiny_components("sd1", seed=6)
    cpu_offload(offloaded.unet, execution_device=torch.device("cpu"))
    assert offloaded.unet.conv_in.weight.device.type == "meta"
    lib = library(tmp_path, {"o": lora.random_lora(plain, TARGETS[:6], rank=2, seed=13, std=0.5)})
    g = torch.Generator().manual_seed(0)
    x, ctx = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 77, 32, generator=g)

    def out(comps):
        with torch.no_grad():
            return comps.unet(x, 10, encoder_hidden_states=ctx).sample

    base = out(offloaded)
    nets = parse_extra_networks("<lora:o:0.9>")[1]
    with extra_networks.activate(lib, plain, nets) as a, extra_networks.activate(lib, offloaded, nets) as b:
        assert a.warnings == b.warnings == [] and len(b.merged) == 6
        merged = out(offloaded)
        assert torch.equal(merged, out(plain))
    assert (merged - base).abs().max().item() > 1e-3
    assert torch.equal(out(offloaded), base)


def test_originals_are_kept_between_jobs_until_the_weights_change(tmp_path):
    comps = build_tiny_components("sd1", seed=14)
    lib = library(tmp_path, {"k": lora.random_lora(comps, TARGETS, rank=2, seed=15, std=0.5)})
    nets = parse_extra_networks("<lora:k:1>")[1]
    w = comps.unet.get_submodule(f"{ATTN}.attn1.to_q").weight
    first = extra_networks.activate(lib, comps, nets)
    assert first.merged.cloned_bytes > 0
    first.restore()
    second = extra_networks.activate(lib, comps, nets)
    assert second.merged.cloned_bytes == 0        # the originals of the last job are still valid
    second.restore()
    with torch.no_grad():                          # the model changes between jobs (e.g. weights reloaded)
        w.add_(1.0)
    changed = w.clone()
    third = extra_networks.activate(lib, comps, nets)
    assert third.merged.cloned_bytes == w.numel() * 4  # only the changed weight is copied again
    assert not torch.equal(w, changed)
    third.restore()
    assert torch.equal(w, changed)                 # restored to the new values, not the stale ones
    small = extra_networks.Library([tmp_path / "Lora"], [], backup_cache_mb=0)   # nothing kept: clone each job
    for _ in range(2):
        with extra_networks.activate(small, comps, nets) as a:
            assert a.merged.cloned_bytes > 0
    assert torch.equal(w, changed)
