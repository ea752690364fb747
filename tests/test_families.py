"""Model families: the registry, the rule that only family modules test family names, and the proof that a
new family is one module plus its configs (a test-only family, defined here, loads and generates)."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from modules import engine, families, lora, mf_keys, model_formats, sd_models
from modules.families import ModelFamily, TextEncoderSlot, Variant
from modules.options import Options
from testing.tiny_models import build_tiny_components

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ the registry


def test_registry_lists_sd1_sd2_sdxl_and_their_variants():
    assert [f.name for f in families.all_families()] == ["sd1", "sd2", "sdxl"]
    assert families.arch_names() == ["sd1", "sd1-inpaint", "sd2", "sd2-v", "sd2-inpaint", "sdxl", "sdxl-inpaint",
                                     "sdxl-refiner"]
    sizes = {arch: families.native_resolution(arch) for arch in families.arch_names()}
    assert sizes == {"sd1": 512, "sd1-inpaint": 512, "sd2": 512, "sd2-v": 768, "sd2-inpaint": 512, "sdxl": 1024,
                     "sdxl-inpaint": 1024, "sdxl-refiner": 1024}
    assert families.native_resolution(None) == 512 and families.native_resolution("no-such-arch") == 512
    assert [v.name for f in families.all_families() for v in f.variants if v.inpaint] == [
        "sd1-inpaint", "sd2-inpaint", "sdxl-inpaint"]
    assert families.variant("sdxl-refiner").refiner and families.variant("sdxl-refiner").family == "sdxl"


@pytest.mark.parametrize("arch,family", [("sd1", "sd1"), ("sd1-inpaint", "sd1"), ("sd2-v", "sd2"), ("sdxl", "sdxl"),
                                         ("sdxl-refiner", "sdxl")])
def test_detection_asks_the_families(arch, family):
    sd = model_formats.to_ldm_state_dict(build_tiny_components(arch))
    fam, base = families.match_checkpoint(sd)
    assert fam.name == family
    spec = model_formats.detect_architecture(sd)
    assert (spec.family, spec.arch, spec.variant.name) == (family, arch, arch)


def test_text_encoder_slots_say_what_differs():
    sd1 = families.get("sd1").text_encoders(families.variant("sd1"))
    xl = families.get("sdxl").text_encoders(families.variant("sdxl"))
    refiner = families.get("sdxl").text_encoders(families.variant("sdxl-refiner"))
    assert [(s.attr, s.prefix, s.embedding_key, s.pooled) for s in sd1] == [
        ("text_encoder", "cond_stage_model.transformer.", "clip_l", False)]
    assert [(s.attr, s.prefix, s.embedding_key, s.pooled, s.lora_prefixes[0]) for s in xl] == [
        ("text_encoder", "conditioner.embedders.0.transformer.", "clip_l", False, "lora_te1_"),
        ("text_encoder_2", "conditioner.embedders.1.model.", "clip_g", True, "lora_te2_")]
    assert [s.prefix for s in refiner] == ["conditioner.embedders.0.model."]
    # the layer each encoder gives: (hidden_states index, final norm) for 12 layers, clip skip 2
    assert sd1[0].layer(12, 2, {}) == (-2, True)
    assert families.get("sd2").text_encoders(families.variant("sd2"))[0].layer(24, 1, {}) == (-2, True)
    assert xl[0].layer(12, 3, {}) == (-2, False) and xl[0].layer(12, 3, {"sdxl_clip_l_skip": True}) == (-3, False)


@pytest.mark.parametrize("metadata,family", [
    ({"ss_base_model_version": "sdxl_base_v1-0"}, "sdxl"), ({"ss_base_model_version": "sd_v2_768_v"}, "sd2"),
    ({"ss_base_model_version": "sd_v1"}, "sd1"), ({"ss_v2": "True", "ss_network_dim": "4"}, "sd2"),
    ({"ss_v2": "False", "ss_network_dim": "4"}, "sd1"), ({"ss_base_model_version": "sd3"}, None),
    ({"lora_adapter_metadata": "{}"}, None), ({}, None)])
def test_lora_files_name_their_family(metadata, family):
    found = families.lora_family(metadata)
    assert (found.name if found else None) == family


# ------------------------------------------------------------------ no family names outside the families


def family_name_uses(source: str, names: set[str]) -> list[str]:
    """Places in ``source`` that name a family or variant (a string constant equal to one) or test
    ``in_channels`` against a number (the inpainting variant by shape)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names:
            found.append((node.lineno, repr(node.value)))
        elif isinstance(node, ast.Compare) and "in_channels" in ast.unparse(node) and any(
                isinstance(c, ast.Constant) and isinstance(c.value, int) for c in [node.left, *node.comparators]):
            found.append((node.lineno, ast.unparse(node)))
    return [f"line {line}: {what}" for line, what in sorted(found)]


def test_the_scan_finds_family_tests():
    names = set(families.names())
    code = ('if spec.arch == "sdxl-refiner":\n    pass\nx = {"sd2-v": 768}\n'
            'y = comps.unet.config.in_channels == 9\nz = family in ("sd1", "other")\n')
    assert family_name_uses(code, names) == ["line 1: 'sdxl-refiner'", "line 3: 'sd2-v'",
                                             "line 4: comps.unet.config.in_channels == 9", "line 5: 'sd1'"]
    assert family_name_uses('x = spec.model_family.zero_empty_negative\n"""sd1 docs"""\n', names) == []


def test_no_code_outside_the_family_modules_tests_a_family_name():
    names = set(families.names())
    files = [p for p in (ROOT / "modules").rglob("*.py") if "families" not in p.relative_to(ROOT).parts]
    files += [ROOT / "webui.py", ROOT / "launch.py"]
    offenders = {str(p.relative_to(ROOT)): hits for p in files
                 if (hits := family_name_uses(p.read_text(encoding="utf-8"), names))}
    assert offenders == {}


# ------------------------------------------------------------------ a new family: one module plus its configs


def last_layer(layers: int, clip_skip: int, options) -> tuple[int, bool]:
    return 0, False


CLIP = TextEncoderSlot(attr="text_encoder", tokenizer="tokenizer", layout="hf", prefix="text_encoders.clip.transformer.",
                       embedding_key="clip_l", lora_component="te1", lora_prefixes=("lora_clip_",),
                       lora_dotted="clip.", layer=last_layer, pooled=True, with_projection=True)


class TinyFamily(ModelFamily):
    """A made-up kind of model: its own key layout (no LDM prefixes), one CLIP whose pooled output is the
    UNet's class input (diffusers' class_embed_type "projection"), 128 px, its own LoRA prefix."""
    name = "tinyfam"
    label = "Tiny test family"
    unet_prefix = "diffusion_model."
    vae_prefix = "vae."

    def __init__(self, config_dir: Path):
        self.variants = (Variant("tinyfam-128", "tinyfam", config_dir=config_dir),)
        self.denoiser_calls = 0

    def text_encoders(self, variant):
        return (CLIP,)

    def match(self, keys):
        if self.unet_prefix + "input_blocks.0.0.weight" in keys and keys.has(CLIP.prefix):
            return self.base
        return None

    def finish_unet_config(self, ucfg, unet, text_configs, variant):
        super().finish_unet_config(ucfg, unet, text_configs, variant)
        ucfg.update(class_embed_type="projection",
                    projection_class_embeddings_input_dim=int(unet["label_emb.0.0.weight"].shape[1]))

    def unet_key_map(self, unet_config):
        m = mf_keys.unet_key_map(unet_config)
        m.add("class_embedding.linear_1.", "label_emb.0.0.")
        m.add("class_embedding.linear_2.", "label_emb.0.2.")
        return m

    def denoiser_inputs(self, spec, conds, negative, size, batch, device, dtype, cache):
        self.denoiser_calls += 1
        return {"class_labels": torch.cat([c.pooled.expand(batch, -1) for c in conds]).to(device, dtype)}


def write_configs(folder: Path) -> None:
    """The family's configs: diffusers-format config files and arch.json, as configs/<arch>/ holds them."""
    unet = {"_class_name": "UNet2DConditionModel", "in_channels": 4, "out_channels": 4,
            "block_out_channels": [32, 64], "layers_per_block": 1, "cross_attention_dim": 32,
            "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
            "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"], "attention_head_dim": [1, 1],
            "use_linear_projection": True, "class_embed_type": "projection",
            "projection_class_embeddings_input_dim": 32, "sample_size": 16}
    vae = {"_class_name": "AutoencoderKL", "in_channels": 3, "out_channels": 3, "latent_channels": 4,
           "block_out_channels": [32, 32, 64, 64], "layers_per_block": 1,
           "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
           "scaling_factor": 0.5, "sample_size": 128}
    clip = {"architectures": ["CLIPTextModelWithProjection"], "model_type": "clip_text_model", "hidden_size": 32,
            "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 1, "max_position_embeddings": 77,
            "vocab_size": 49408, "hidden_act": "quick_gelu", "projection_dim": 32, "bos_token_id": 49406,
            "eos_token_id": 49407, "pad_token_id": 49407}
    sched = json.loads((ROOT / "configs" / "sd1" / "scheduler" / "scheduler_config.json").read_text())
    arch = {"native_resolution": 128, "prediction_type": "epsilon", "scaling_factor": 0.5, "clip_skip": 1,
            "tokenizers": {"tokenizer": {"pad_token": "<|endoftext|>"}}}
    files = {"unet/config.json": unet, "vae/config.json": vae, "text_encoder/config.json": clip,
             "scheduler/scheduler_config.json": sched, "arch.json": arch,
             "model_index.json": {"_class_name": "StableDiffusionPipeline"}}
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(json.dumps(data), encoding="utf-8")


def tiny_family_checkpoint(path: Path) -> Path:
    """Random weights of the family's shipped configs, written in its own single-file layout."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    spec = model_formats.spec_for_arch("tinyfam-128")
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(spec.unet_config)
    vae = AutoencoderKL.from_config(spec.vae_config)
    clip = CLIPTextModelWithProjection(CLIPTextConfig.from_dict(model_formats._clip_config_dict(
        spec.text_encoder_configs[0])))
    with torch.no_grad():
        for p in [*unet.parameters(), *vae.parameters(), *clip.parameters()]:
            p.add_(torch.randn_like(p) * 0.02)
    comps = model_formats.SDComponents(spec=spec, unet=unet, vae=vae, text_encoders={"text_encoder": clip})
    return model_formats.save_checkpoint(path, comps)


@pytest.fixture
def tinyfam(tmp_path):
    write_configs(tmp_path / "configs" / "tinyfam-128")
    fam = families.register(TinyFamily(tmp_path / "configs" / "tinyfam-128"))
    try:
        yield fam
    finally:
        families.unregister(fam.name)


def manager(tmp_path) -> sd_models.ModelManager:
    from modules import cmd_args
    from modules.paths import Paths

    paths = Paths.from_args(cmd_args.parse_args(["--data-dir", str(tmp_path / "data")]))
    paths.ckpt_dirs[0].mkdir(parents=True, exist_ok=True)
    return sd_models.ModelManager(paths)


def test_a_file_of_an_unregistered_family_is_listed_as_unusable(tmp_path, tinyfam):
    mm = manager(tmp_path)
    tiny_family_checkpoint(mm.paths.ckpt_dirs[0] / "tiny.safetensors")
    families.unregister(tinyfam.name)
    mm.refresh()
    assert mm.titles() == [] and "not a Stable Diffusion checkpoint" in mm.bad_files[0].reason
    families.register(tinyfam)
    assert [i.arch for i in mm.refresh()] == ["tinyfam-128"] and mm.bad_files == []


def test_a_family_registered_from_a_test_module_loads_and_generates(tmp_path, tinyfam, one_thread):
    mm = manager(tmp_path)
    path = tiny_family_checkpoint(mm.paths.ckpt_dirs[0] / "tiny.safetensors")
    with safe_open(str(path), "pt") as f:  # written in the family's own layout
        keys = set(f.keys())
    assert {"diffusion_model.label_emb.0.0.weight", "vae.encoder.conv_in.weight",
            "text_encoders.clip.transformer.text_model.embeddings.token_embedding.weight",
            "text_encoders.clip.transformer.text_projection.weight"} <= keys
    assert not any(k.startswith(("model.diffusion_model.", "first_stage_model.", "cond_stage_model.")) for k in keys)
    (info,) = mm.refresh()
    assert (info.arch, sd_models.native_resolution_of(info)) == ("tinyfam-128", 128)
    loaded = mm.load(info.title)
    spec = loaded.spec
    assert (spec.family, spec.arch, spec.native_resolution, spec.scaling_factor) == ("tinyfam", "tinyfam-128", 128,
                                                                                     0.5)
    assert spec.unet_config["class_embed_type"] == "projection"
    req = engine.GenerationRequest(prompt="a red circle", negative_prompt="blue", steps=4, width=128, height=128,
                                   seed=7, sampler_name="Euler")
    a = engine.generate(loaded, req, Options().snapshot())
    assert a.images[0].size == (128, 128) and a.warnings == []
    assert tinyfam.denoiser_calls > 0  # the pooled vector reached the UNet through the family
    assert "Size: 128x128" in a.infotexts[0]
    b = engine.generate(loaded, req, Options().snapshot())
    assert a.images[0].tobytes() == b.images[0].tobytes()
    other = engine.generate(loaded, engine.GenerationRequest(**{**req.__dict__, "prompt": "a blue square"}),
                            Options().snapshot())
    assert np.abs(np.asarray(a.images[0], float) - np.asarray(other.images[0], float)).mean() > 0.01


def test_a_lora_with_the_familys_own_prefix_applies_and_restores(tmp_path, tinyfam, one_thread):
    from safetensors.torch import save_file

    from modules import extra_networks

    mm = manager(tmp_path)
    tiny_family_checkpoint(mm.paths.ckpt_dirs[0] / "tiny.safetensors")
    loaded = mm.load(mm.refresh()[0].title)
    comps = loaded.components
    sd = lora.random_lora(comps, ["te1:text_model.encoder.layers.0.mlp.fc1",
                                  "unet:down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k"], seed=3, std=0.5)
    assert sorted(k.split(".")[0] for k in sd)[::2] == [
        "lora_clip_text_model_encoder_layers_0_mlp_fc1", "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"]
    (tmp_path / "Lora").mkdir()
    save_file(sd, str(tmp_path / "Lora" / "fam.safetensors"))
    lib = extra_networks.Library([tmp_path / "Lora"], [])
    before = {k: v.clone() for k, v in comps.text_encoder.state_dict().items()}

    def picture(prompt):
        req = engine.GenerationRequest(prompt=prompt, steps=3, width=128, height=128, seed=2, sampler_name="Euler")
        return engine.generate(loaded, req, Options().snapshot(), networks=lib)

    plain, with_lora = picture("a cat"), picture("a cat <lora:fam:1>")
    assert with_lora.warnings == [] and plain.images[0].tobytes() != with_lora.images[0].tobytes()
    assert all(torch.equal(before[k], v) for k, v in comps.text_encoder.state_dict().items())
    assert picture("a cat").images[0].tobytes() == plain.images[0].tobytes()
