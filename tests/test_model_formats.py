"""Offline model-format layer: tokenizer, detection, LDM read/write, tiny models."""
from __future__ import annotations

import json
import os
import socket

import pytest
import torch
from safetensors.torch import save_file

from modules import file_readers
from modules import model_formats as mf
from testing import tiny_models as tm


# ---------------------------------------------------------------- fixtures


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test."""

    def refuse(self, *args, **kwargs):
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    yield


_TINY_CACHE: dict[str, mf.SDComponents] = {}


def tiny(arch: str) -> mf.SDComponents:
    if arch not in _TINY_CACHE:
        _TINY_CACHE[arch] = tm.build_tiny_components(arch, seed=0)
    return _TINY_CACHE[arch]


def module_tensors(comps: mf.SDComponents) -> dict[str, torch.Tensor]:
    out = {}
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        mod = getattr(comps, name)
        if mod is not None:
            out.update({f"{name}.{k}": v for k, v in mod.state_dict().items()})
    return out


def assert_same_tensors(a: dict, b: dict):
    assert a.keys() == b.keys()
    diff = [k for k in a if a[k].dtype != b[k].dtype or not torch.equal(a[k], b[k])]
    assert diff == []


# ---------------------------------------------------------------- tokenizer


def test_tokenizer_known_ids():
    tok = mf.load_tokenizer()
    assert len(tok) == 49408
    assert tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert tok("Hello, World!").input_ids == [49406, 3306, 267, 1002, 256, 49407]
    assert tok("(masterpiece:1.2)").input_ids == [49406, 263, 12066, 281, 272, 269, 273, 264, 49407]
    assert tok.convert_ids_to_tokens([0, 256, 320, 49406, 49407]) == [
        "!",
        "!</w>",
        "a</w>",
        "<|startoftext|>",
        "<|endoftext|>",
    ]


def test_padding_sd1_vs_sd2():
    sd1 = mf.load_tokenizer()
    sd2 = mf.load_tokenizer("!")
    kw = dict(padding="max_length", max_length=9)
    assert sd1("a cat", **kw).input_ids == [49406, 320, 2368, 49407, 49407, 49407, 49407, 49407, 49407]
    assert sd2("a cat", **kw).input_ids == [49406, 320, 2368, 49407, 0, 0, 0, 0, 0]
    assert sd1.model_max_length == 77
    # the tokenizers handed out with components follow the architecture
    assert tiny("sd1").tokenizer.pad_token_id == 49407
    assert tiny("sd2-v").tokenizer.pad_token_id == 0
    assert tiny("sdxl").tokenizer.pad_token_id == 49407
    assert tiny("sdxl").tokenizer_2.pad_token_id == 0
    assert tiny("sdxl-refiner").tokenizer is None
    assert tiny("sdxl-refiner").tokenizer_2.pad_token_id == 0


# ---------------------------------------------------------- tiny round trip

ROUND_TRIP = [
    # arch, expected arch, prediction, inpaint, resolution
    ("sd1", "sd1", "epsilon", False, 512),
    ("sd1-inpaint", "sd1-inpaint", "epsilon", True, 512),
    ("sd2", "sd2", "epsilon", False, 512),
    ("sd2-v", "sd2-v", "v_prediction", False, 768),
    ("sdxl", "sdxl", "epsilon", False, 1024),
    ("sdxl-refiner", "sdxl-refiner", "epsilon", False, 1024),
]


@pytest.mark.parametrize("arch,want,pred,inpaint,res", ROUND_TRIP)
def test_tiny_round_trip(tmp_path, no_network, arch, want, pred, inpaint, res):
    path = tm.write_tiny_checkpoint(tmp_path / f"{arch}.safetensors", arch, seed=0)
    sd, metadata = mf.read_state_dict(path)
    spec = mf.detect_architecture(sd, metadata)
    assert (spec.arch, spec.prediction_type, spec.is_inpaint, spec.native_resolution) == (want, pred, inpaint, res)
    assert spec.scheduler_config["prediction_type"] == pred
    # head counts follow the rules, so the inferred configs are the tiny ones exactly
    ref = tiny(arch)
    assert spec.unet_config == ref.spec.unet_config
    assert spec.vae_config == ref.spec.vae_config
    assert spec.text_encoder_configs == ref.spec.text_encoder_configs
    assert spec.text_encoder_names == ref.spec.text_encoder_names

    comps = mf.build_components(sd, spec)
    assert_same_tensors(module_tensors(ref), module_tensors(comps))
    assert comps.extras.keys() == ref.extras.keys()
    for k in ref.extras:
        assert torch.equal(ref.extras[k], comps.extras[k])
    # written again, the file holds the same tensors under the same keys
    again = mf.to_ldm_state_dict(comps)
    assert_same_tensors(sd, {k: v.contiguous() for k, v in again.items()})


def test_tiny_models_are_deterministic_and_seeded():
    a = module_tensors(tm.build_tiny_components("sd1", seed=3))
    b = module_tensors(tm.build_tiny_components("sd1", seed=3))
    assert_same_tensors(a, b)
    c = module_tensors(tm.build_tiny_components("sd1", seed=4))
    assert not torch.equal(a["unet.conv_in.weight"], c["unet.conv_in.weight"])
    # every tensor distinct from its neighbours (no all-ones norms that could hide a swap)
    assert not torch.equal(a["unet.down_blocks.0.resnets.0.norm1.weight"], a["unet.down_blocks.0.resnets.0.norm2.weight"])


def test_ldm_key_layout_of_tiny_files():
    sd1 = mf.to_ldm_state_dict(tiny("sd1"))
    assert sd1["model.diffusion_model.input_blocks.0.0.weight"].shape == (32, 4, 3, 3)
    assert sd1["model.diffusion_model.input_blocks.1.1.proj_in.weight"].ndim == 4  # SD1: conv proj_in
    assert "model.diffusion_model.input_blocks.3.0.op.weight" in sd1  # level 0 downsample after 2 ResBlocks
    assert "model.diffusion_model.output_blocks.2.1.conv.weight" in sd1  # upsample of a level without attention
    assert sd1["first_stage_model.encoder.mid.attn_1.q.weight"].shape == (64, 64, 1, 1)
    assert "cond_stage_model.transformer.text_model.final_layer_norm.weight" in sd1
    sd2 = mf.to_ldm_state_dict(tiny("sd2-v"))
    assert sd2["model.diffusion_model.input_blocks.1.1.proj_in.weight"].ndim == 2  # linear proj_in
    assert sd2["cond_stage_model.model.transformer.resblocks.1.attn.in_proj_weight"].shape == (96, 32)
    assert sd2["cond_stage_model.model.positional_embedding"].shape == (77, 32)
    te = tiny("sd2-v").text_encoder.state_dict()
    fused = sd2["cond_stage_model.model.transformer.resblocks.0.attn.in_proj_bias"]
    assert torch.equal(fused[32:64], te["encoder.layers.0.self_attn.k_proj.bias"])
    xl = mf.to_ldm_state_dict(tiny("sdxl"))
    proj = tiny("sdxl").text_encoder_2.state_dict()["text_projection.weight"]
    assert torch.equal(xl["conditioner.embedders.1.model.text_projection"], proj.t())
    assert "conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight" in xl
    assert xl["model.diffusion_model.label_emb.0.0.weight"].shape == (4 * 32, 64 + 6 * 8)  # pooled 64 + 6 time ids
    ref = mf.to_ldm_state_dict(tiny("sdxl-refiner"))
    assert "conditioner.embedders.0.model.ln_final.weight" in ref
    assert not any(k.startswith("conditioner.embedders.1.") for k in ref)


# --------------------------------------------- diffusers' own loader agrees


def _diffusers_pipeline_class(arch):
    import diffusers

    return {"sd1": diffusers.StableDiffusionPipeline, "sd2-v": diffusers.StableDiffusionPipeline,
            "sdxl": diffusers.StableDiffusionXLPipeline}[arch]


@pytest.mark.parametrize("arch", ["sd1", "sd2-v", "sdxl"])
def test_written_file_loads_in_diffusers_from_single_file(tmp_path, no_network, arch):
    comps = tiny(arch)
    path = mf.save_checkpoint(tmp_path / "model.safetensors", comps)
    config = mf.write_diffusers_config_folder(comps.spec, tmp_path / "config")
    pipe = _diffusers_pipeline_class(arch).from_single_file(str(path), config=str(config), local_files_only=True)
    ours = module_tensors(comps)
    theirs = {}
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        if getattr(comps, name) is not None:
            theirs.update({f"{name}.{k}": v for k, v in getattr(pipe, name).state_dict().items()})
    assert_same_tensors(ours, theirs)
    assert pipe.tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert pipe.tokenizer.pad_token_id == (0 if arch == "sd2-v" else 49407)
    assert pipe.scheduler.config.prediction_type == comps.spec.prediction_type


def test_diffusers_folder_round_trip(tmp_path, no_network):
    comps = tiny("sdxl")
    folder = mf.write_diffusers_config_folder(comps.spec, tmp_path / "xl")
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        getattr(comps, name).save_pretrained(folder / name)
    loaded = mf.load_diffusers_folder(folder)
    assert (loaded.spec.arch, loaded.spec.prediction_type, loaded.spec.native_resolution) == ("sdxl", "epsilon", 1024)
    assert loaded.spec.scaling_factor == 0.13025
    assert loaded.tokenizer.pad_token_id == 49407 and loaded.tokenizer_2.pad_token_id == 0
    assert_same_tensors(module_tensors(comps), module_tensors(loaded))


def test_vae_files_in_three_layouts(tmp_path):
    comps = tiny("sd1")
    ref = comps.vae.state_dict()
    ldm = {k[len("first_stage_model."):]: v.contiguous() for k, v in mf.to_ldm_state_dict(comps).items()
           if k.startswith("first_stage_model.")}
    save_file(ldm, str(tmp_path / "bare.safetensors"))
    save_file({"first_stage_model." + k: v for k, v in ldm.items()}, str(tmp_path / "prefixed.safetensors"))
    torch.save({"state_dict": dict(ldm, **{"loss.logvar": torch.zeros(())})}, str(tmp_path / "vae.ckpt"))
    legacy = {}
    for k, v in ref.items():
        k = k.replace(".to_q.", ".query.").replace(".to_k.", ".key.").replace(".to_v.", ".value.")
        legacy[k.replace(".to_out.0.", ".proj_attn.")] = v.contiguous()
    save_file(legacy, str(tmp_path / "diffusers_legacy.safetensors"))
    for name in ("bare.safetensors", "prefixed.safetensors", "vae.ckpt", "diffusers_legacy.safetensors"):
        assert_same_tensors(ref, mf.load_vae_state_dict(tmp_path / name))
    with pytest.raises(mf.ModelFormatError, match="not a VAE"):
        save_file({"a": torch.zeros(2)}, str(tmp_path / "x.safetensors"))
        mf.load_vae_state_dict(tmp_path / "x.safetensors")


# ------------------------------------------------- real-size key sets (meta)

REAL_KEYS = {
    "sd1": {
        "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (320, 768),
        "model.diffusion_model.input_blocks.1.1.proj_in.weight": (320, 320, 1, 1),
        "model.diffusion_model.output_blocks.2.1.conv.weight": (1280, 1280, 3, 3),
        "model.diffusion_model.output_blocks.5.2.conv.weight": (1280, 1280, 3, 3),
        "model.diffusion_model.output_blocks.8.2.conv.weight": (640, 640, 3, 3),
        "model.diffusion_model.middle_block.1.proj_out.weight": (1280, 1280, 1, 1),
        "model.diffusion_model.out.2.weight": (4, 320, 3, 3),
        "first_stage_model.encoder.mid.attn_1.q.weight": (512, 512, 1, 1),
        "first_stage_model.decoder.up.0.block.0.nin_shortcut.weight": (128, 256, 1, 1),
        "first_stage_model.quant_conv.weight": (8, 8, 1, 1),
        "cond_stage_model.transformer.text_model.encoder.layers.11.mlp.fc1.weight": (3072, 768),
    },
    "sd2-v": {
        "model.diffusion_model.input_blocks.1.1.proj_in.weight": (320, 320),
        "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (320, 1024),
        "cond_stage_model.model.transformer.resblocks.23.attn.in_proj_weight": (3072, 1024),
        "cond_stage_model.model.positional_embedding": (77, 1024),
        "cond_stage_model.model.text_projection": (1024, 1024),
    },
    "sdxl": {
        "model.diffusion_model.label_emb.0.0.weight": (1280, 2816),
        "model.diffusion_model.input_blocks.4.1.transformer_blocks.1.attn2.to_k.weight": (640, 2048),
        "model.diffusion_model.input_blocks.7.1.transformer_blocks.9.ff.net.2.weight": (1280, 5120),
        "model.diffusion_model.middle_block.1.transformer_blocks.9.norm3.weight": (1280,),
        "model.diffusion_model.output_blocks.2.2.conv.weight": (1280, 1280, 3, 3),
        "conditioner.embedders.0.transformer.text_model.encoder.layers.11.self_attn.q_proj.weight": (768, 768),
        "conditioner.embedders.1.model.transformer.resblocks.31.attn.in_proj_weight": (3840, 1280),
        "conditioner.embedders.1.model.text_projection": (1280, 1280),
    },
    "sdxl-refiner": {
        "model.diffusion_model.label_emb.0.0.weight": (1536, 2560),
        "model.diffusion_model.input_blocks.4.1.transformer_blocks.3.attn2.to_k.weight": (768, 1280),
        "model.diffusion_model.middle_block.1.transformer_blocks.3.attn1.to_q.weight": (1536, 1536),
        "conditioner.embedders.0.model.transformer.resblocks.31.mlp.c_fc.weight": (5120, 1280),
    },
}
CONFIG_FIELDS = {
    "unet": ["block_out_channels", "layers_per_block", "cross_attention_dim", "attention_head_dim",
             "transformer_layers_per_block", "down_block_types", "up_block_types", "in_channels", "out_channels",
             "use_linear_projection", "addition_embed_type", "addition_time_embed_dim",
             "projection_class_embeddings_input_dim", "sample_size", "upcast_attention"],
    "vae": ["block_out_channels", "layers_per_block", "latent_channels", "scaling_factor", "sample_size"],
    "text": ["hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "hidden_act",
             "projection_dim", "vocab_size", "max_position_embeddings"],
}


@pytest.mark.parametrize("arch", ["sd1", "sd2-v", "sdxl", "sdxl-refiner"])
def test_real_size_key_sets_detect(arch):
    spec = mf.spec_for_arch(arch)
    sd = mf.to_ldm_state_dict(mf.empty_components(spec))
    assert all(t.device.type == "meta" for t in sd.values())
    for key, shape in REAL_KEYS[arch].items():
        assert tuple(sd[key].shape) == shape, key
    det = mf.detect_architecture(sd)
    info = mf.load_arch_info(arch)
    assert (det.arch, det.prediction_type, det.native_resolution, det.scaling_factor) == (
        arch, info["prediction_type"], info["native_resolution"], info["scaling_factor"])
    shipped = mf.load_arch_configs(arch)
    for f in CONFIG_FIELDS["unet"]:
        assert det.unet_config[f] == shipped["unet"][f], f
    for f in CONFIG_FIELDS["vae"]:
        assert det.vae_config[f] == shipped["vae"][f], f
    for name, cfg in zip(det.text_encoder_names, det.text_encoder_configs):
        for f in CONFIG_FIELDS["text"]:
            assert cfg[f] == shipped[name][f], (name, f)
    assert det.unet_config == shipped["unet"]  # nothing else drifts either


def test_shipped_head_counts_are_the_public_ones():
    assert mf.load_arch_configs("sd1")["unet"]["attention_head_dim"] == 8
    assert mf.load_arch_configs("sd2-v")["unet"]["attention_head_dim"] == [5, 10, 20, 20]
    assert mf.load_arch_configs("sdxl")["unet"]["attention_head_dim"] == [5, 10, 20]
    assert mf.load_arch_configs("sdxl-refiner")["unet"]["attention_head_dim"] == [6, 12, 24, 24]
    assert mf.load_arch_configs("sdxl")["text_encoder_2"]["num_attention_heads"] == 20
    assert mf.load_arch_configs("sd2")["text_encoder"]["num_attention_heads"] == 16


# ------------------------------------------------- hints: metadata, sidecar


@pytest.fixture(scope="module")
def sd2_ldm():
    return mf.to_ldm_state_dict(tiny("sd2-v"))


def test_sd2_defaults_to_v_and_hints_override(sd2_ldm, tmp_path):
    spec = mf.detect_architecture(sd2_ldm)
    assert (spec.arch, spec.prediction_type, spec.native_resolution) == ("sd2-v", "v_prediction", 768)
    spec = mf.detect_architecture(sd2_ldm, {"modelspec.architecture": "stable-diffusion-v2-512"})
    assert (spec.arch, spec.prediction_type, spec.native_resolution) == ("sd2", "epsilon", 512)
    spec = mf.detect_architecture(sd2_ldm, {"ss_v_parameterization": "False"})
    assert (spec.arch, spec.prediction_type) == ("sd2", "epsilon")
    spec = mf.detect_architecture(sd2_ldm, sidecar={"prediction_type": "epsilon", "native_resolution": 640})
    assert (spec.arch, spec.prediction_type, spec.native_resolution) == ("sd2", "epsilon", 640)
    assert spec.scheduler_config["prediction_type"] == "epsilon"
    # the sidecar wins over metadata
    spec = mf.detect_architecture(sd2_ldm, {"modelspec.prediction_type": "epsilon"},
                                  sidecar={"model": {"params": {"parameterization": "v"}}})
    assert spec.prediction_type == "v_prediction"
    # an LDM yaml without "parameterization" means eps (the LatentDiffusion default)
    spec = mf.detect_architecture(sd2_ldm, sidecar={"model": {"target": "ldm.models.diffusion.ddpm.LatentDiffusion",
                                                               "params": {"scale_factor": 0.18215}}})
    assert (spec.arch, spec.prediction_type, spec.native_resolution) == ("sd2", "epsilon", 512)
    # an original LDM yaml next to the file
    ckpt = tmp_path / "m.safetensors"
    (tmp_path / "m.yaml").write_text("model:\n  params:\n    parameterization: v\n    scale_factor: 0.2\n")
    side = file_readers.read_sidecar(ckpt)
    spec = mf.detect_architecture(mf.to_ldm_state_dict(tiny("sd1")), sidecar=side)
    assert (spec.arch, spec.prediction_type, spec.scaling_factor) == ("sd1", "v_prediction", 0.2)
    assert spec.vae_config["scaling_factor"] == 0.2
    assert file_readers.read_sidecar(tmp_path / "other.safetensors") is None


def test_sd_webui_config_metadata_overrides_config_entries():
    sd = mf.to_ldm_state_dict(tiny("sd1"))
    md = {"sd_webui_config": json.dumps({"scaling_factor": 0.3, "unet_config": {"upcast_attention": True},
                                         "clip_skip": 2})}
    spec = mf.detect_architecture(sd, md)
    assert spec.scaling_factor == 0.3 and spec.vae_config["scaling_factor"] == 0.3
    assert spec.unet_config["upcast_attention"] is True
    assert spec.clip_skip == 2
    assert mf.detect_architecture(sd).clip_skip == 1
    assert mf.detect_architecture(sd, {"v_pred": ""}).prediction_type == "epsilon"  # metadata key is not the marker
    marked = dict(sd, v_pred=torch.zeros(0))
    assert mf.detect_architecture(marked).prediction_type == "v_prediction"


def test_metadata_survives_save(tmp_path):
    path = tm.write_tiny_checkpoint(tmp_path / "a.safetensors", "sd1", metadata={"note": "hi", "n": 3})
    _, md = mf.read_state_dict(path)
    assert md == {"note": "hi", "n": "3"}


# --------------------------------------------------------------- bad input


@pytest.fixture(scope="module")
def sd1_file(tmp_path_factory):
    return tm.write_tiny_checkpoint(tmp_path_factory.mktemp("sd1") / "sd1.safetensors", "sd1")


def test_truncated_safetensors(sd1_file, tmp_path):
    data = sd1_file.read_bytes()
    half = tmp_path / "half.safetensors"
    half.write_bytes(data[: len(data) // 2])
    with pytest.raises(mf.ModelFormatError, match=r"half\.safetensors: the file is truncated"):
        mf.read_state_dict(half)
    tiny_piece = tmp_path / "piece.safetensors"
    tiny_piece.write_bytes(data[:100])
    with pytest.raises(mf.ModelFormatError, match="truncated"):
        mf.read_state_dict(tiny_piece)


def test_not_sd_checkpoints(tmp_path):
    save_file({"a": torch.randn(3, 4), "b.weight": torch.randn(5)}, str(tmp_path / "r.safetensors"))
    sd, md = mf.read_state_dict(tmp_path / "r.safetensors")
    with pytest.raises(mf.ModelFormatError, match="not a Stable Diffusion checkpoint: no UNet weights"):
        mf.detect_architecture(sd, md)
    lora = {
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 32),
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.zeros(32, 4),
        "lora_unet_down_blocks_0_attentions_0_proj_in.alpha": torch.tensor(4.0),
    }
    with pytest.raises(mf.ModelFormatError, match="not a Stable Diffusion checkpoint: this looks like a LoRA"):
        mf.detect_architecture(lora)
    vae_only = {k: v for k, v in mf.to_ldm_state_dict(tiny("sd1")).items() if k.startswith("first_stage_model.")}
    with pytest.raises(mf.ModelFormatError, match="looks like a VAE"):
        mf.detect_architecture(vae_only)
    unet_only = {k: v for k, v in mf.to_ldm_state_dict(tiny("sd1")).items() if k.startswith("model.")}
    with pytest.raises(mf.ModelFormatError, match="no text encoder"):
        mf.detect_architecture(unet_only)


class NeedsCode:  # pickled by reference: loading it needs this module's code
    def __init__(self):
        self.x = 1


class RunsCode:
    def __reduce__(self):
        return (os.system, ("echo pwned > pwned.txt",))


def test_pickles_that_need_code_are_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"state_dict": {"x": torch.zeros(1)}, "cfg": NeedsCode()}, str(tmp_path / "custom.ckpt"))
    with pytest.raises(mf.ModelFormatError, match=r"custom\.ckpt: .*refuses to run code embedded in the file"):
        mf.read_state_dict(tmp_path / "custom.ckpt")
    torch.save({"state_dict": {"x": torch.zeros(1)}, "evil": RunsCode()}, str(tmp_path / "evil.ckpt"))
    with pytest.raises(mf.ModelFormatError, match="refuses to run code"):
        mf.read_state_dict(tmp_path / "evil.ckpt")
    assert not (tmp_path / "pwned.txt").exists()


def test_plain_ckpt_loads(tmp_path, sd1_file):
    sd, _ = mf.read_state_dict(sd1_file)
    torch.save({"state_dict": sd, "global_step": 10, "epoch": 1}, str(tmp_path / "plain.ckpt"))
    got, md = mf.read_state_dict(tmp_path / "plain.ckpt")
    assert md == {}
    assert_same_tensors(sd, got)
    assert mf.detect_architecture(got).arch == "sd1"
    data = (tmp_path / "plain.ckpt").read_bytes()
    (tmp_path / "cut.ckpt").write_bytes(data[: len(data) // 2])
    with pytest.raises(mf.ModelFormatError, match=r"cut\.ckpt: file is truncated or corrupt"):
        mf.read_state_dict(tmp_path / "cut.ckpt")
    (tmp_path / "x.gguf").write_bytes(b"0")
    with pytest.raises(mf.ModelFormatError, match="unsupported file type"):
        mf.read_state_dict(tmp_path / "x.gguf")


def test_missing_or_stray_tensors_are_reported(sd1_file):
    sd, md = mf.read_state_dict(sd1_file)
    spec = mf.detect_architecture(sd, md)
    broken = dict(sd)
    del broken["model.diffusion_model.output_blocks.1.0.emb_layers.1.bias"]
    with pytest.raises(mf.ModelFormatError, match=r"UNet: 1 tensors missing .*output_blocks\.1\.0\.emb_layers\.1\.bias"):
        mf.build_components(broken, spec)
    stray = dict(sd, **{"model.diffusion_model.input_blocks.1.1.extra.weight": torch.zeros(2)})
    with pytest.raises(mf.ModelFormatError, match=r"UNet: 1 checkpoint tensors do not belong"):
        mf.build_components(stray, spec)
    wrong = dict(sd, **{"first_stage_model.decoder.conv_out.weight": torch.zeros(3, 32, 5, 5)})
    with pytest.raises(mf.ModelFormatError, match=r"VAE: tensor for decoder\.conv_out\.weight has shape"):
        mf.build_components(wrong, spec)
    # EMA copies and schedule buffers in real files are ignored, not errors
    extra = dict(sd, **{"model_ema.decay": torch.tensor(0.9999), "alphas_cumprod": torch.ones(1000)})
    assert mf.build_components(extra, spec).spec.arch == "sd1"


def test_old_sd1_text_encoder_layout_loads():
    # early SD1 files store CLIP without the "text_model." level
    sd = mf.to_ldm_state_dict(tiny("sd1"))
    old = {k.replace("cond_stage_model.transformer.text_model.", "cond_stage_model.transformer."): v
           for k, v in sd.items()}
    assert "cond_stage_model.transformer.embeddings.token_embedding.weight" in old
    comps = mf.build_components(old, mf.detect_architecture(old))
    assert_same_tensors(module_tensors(tiny("sd1")), module_tensors(comps))


def test_half_precision_file_builds_in_requested_dtype(tmp_path):
    sd = {k: (v.half() if v.is_floating_point() else v) for k, v in mf.to_ldm_state_dict(tiny("sd1")).items()}
    spec = mf.detect_architecture(sd)
    comps = mf.build_components(sd, spec, dtype=torch.float32)
    assert comps.unet.conv_in.weight.dtype == torch.float32
    assert torch.equal(comps.unet.conv_in.weight, sd["model.diffusion_model.input_blocks.0.0.weight"].float())
    comps16 = mf.build_components(sd, spec, dtype=torch.float16)
    assert comps16.text_encoder.final_layer_norm.weight.dtype == torch.float16
