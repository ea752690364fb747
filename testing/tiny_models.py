"""Tiny random-weight Stable Diffusion models for tests.

Same block structure as the real models (attention placement, SDXL text_time
embedding, two text encoders, 9-channel inpainting UNet, a 4-level VAE so the
latent is 1/8 of the image like the real ones), but a few hundred thousand
parameters each, built in well under a second.  Head counts follow the rules
in modules.model_formats, so a written file reloads to the identical spec.

    comps = build_tiny_components("sdxl", seed=0)
    path = write_tiny_checkpoint(tmp_path / "tiny.safetensors", "sd1")

Test support, not part of the application: it names the families it builds.
"""
from __future__ import annotations

from pathlib import Path

import torch

from modules import families
from modules import model_formats as mf

TINY_ARCHES = ("sd1", "sd1-inpaint", "sd2", "sd2-v", "sdxl", "sdxl-refiner")

_TEXT_HIDDEN = 32  # CLIP-L stand-in (SD1, SDXL first encoder) and SD2's OpenCLIP-H stand-in
# SDXL's OpenCLIP-bigG stand-in.  It must differ from _TEXT_HIDDEN: diffusers'
# single-file loader tells SDXL's two encoders apart by embedding width.
_BIGG_HIDDEN = 64
_TIME_ID_DIM = 8


def _clip_cfg(act: str, hidden: int = _TEXT_HIDDEN) -> dict:
    return {
        "hidden_size": hidden,
        "intermediate_size": 2 * hidden,
        "num_hidden_layers": 2,
        "num_attention_heads": max(1, hidden // 64),
        "max_position_embeddings": 77,
        "vocab_size": 49408,
        "hidden_act": act,
        "projection_dim": hidden,
    }


def _vae_cfg() -> dict:
    ch = [32, 32, 64, 64]
    return {
        "in_channels": 3,
        "out_channels": 3,
        "block_out_channels": ch,
        "layers_per_block": 1,
        "latent_channels": 4,
        "down_block_types": ["DownEncoderBlock2D"] * len(ch),
        "up_block_types": ["UpDecoderBlock2D"] * len(ch),
        "mid_block_add_attention": True,
    }


def _unet_cfg(family: str, in_channels: int) -> dict:
    if family in ("sd1", "sd2"):
        ch = [32, 64]
        cfg = {
            "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
            "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
            "layers_per_block": 2 if family == "sd1" else 1,
            "cross_attention_dim": _TEXT_HIDDEN,
            "use_linear_projection": family != "sd1",
            "transformer_layers_per_block": 1,
            "addition_embed_type": None,
            "projection_class_embeddings_input_dim": None,
            "addition_time_embed_dim": None,
        }
    elif family == "sdxl":
        ch = [32, 64, 64]
        cfg = {
            "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
            "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
            "layers_per_block": 2,
            "cross_attention_dim": _TEXT_HIDDEN + _BIGG_HIDDEN,  # both encoders' hidden states concatenated
            "use_linear_projection": True,
            "transformer_layers_per_block": [1, 1, 2],  # like SDXL's [1, 2, 10]
            "addition_embed_type": "text_time",
            "projection_class_embeddings_input_dim": _BIGG_HIDDEN + 6 * _TIME_ID_DIM,
            "addition_time_embed_dim": _TIME_ID_DIM,
        }
    else:  # sdxl-refiner
        ch = [32, 64, 64]
        cfg = {
            "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
            "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
            "layers_per_block": 1,
            "cross_attention_dim": _BIGG_HIDDEN,
            "use_linear_projection": True,
            "transformer_layers_per_block": 1,
            "addition_embed_type": "text_time",
            "projection_class_embeddings_input_dim": _BIGG_HIDDEN + 5 * _TIME_ID_DIM,
            "addition_time_embed_dim": _TIME_ID_DIM,
        }
    cfg.update(
        in_channels=in_channels,
        out_channels=4,
        block_out_channels=ch,
        attention_head_dim=8 if family == "sd1" else [max(1, c // 64) for c in ch],
    )
    return cfg


_FAMILY = {
    "sd1": "sd1",
    "sd1-inpaint": "sd1",
    "sd2": "sd2",
    "sd2-v": "sd2",
    "sd2-inpaint": "sd2",
    "sdxl": "sdxl",
    "sdxl-inpaint": "sdxl",
    "sdxl-refiner": "sdxl-refiner",
}


def tiny_spec(arch: str) -> mf.ModelSpec:
    """The ModelSpec of the tiny model of ``arch`` (shipped configs + tiny shapes)."""
    if arch not in _FAMILY:
        raise ValueError(f"no tiny model for {arch!r}; choose from {sorted(_FAMILY)}")
    family = _FAMILY[arch]
    inpaint = arch.endswith("-inpaint")
    unet = _unet_cfg(family, 9 if inpaint else 4)
    variant = families.variant(arch)
    # the CLIP-L / OpenCLIP-H stand-ins are 32 wide, SDXL's OpenCLIP-bigG stand-in 64
    tes = [_clip_cfg("gelu" if slot.layout == "openclip" else "quick_gelu",
                     _BIGG_HIDDEN if slot.with_projection else _TEXT_HIDDEN)
           for slot in families.get(variant.family).text_encoders(variant)]
    return mf._make_spec(variant, unet, _vae_cfg(), tes, {})


def build_tiny_components(arch: str, seed: int = 0) -> mf.SDComponents:
    """Random-weight tiny components of ``arch`` ("sd1", "sd1-inpaint", "sd2",
    "sd2-v", "sdxl", "sdxl-refiner").  Deterministic for a given seed; does not
    touch the global RNG state."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    spec = tiny_spec(arch)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel.from_config(spec.unet_config)
        vae = AutoencoderKL.from_config(spec.vae_config)
        texts = {}
        for slot, cfg in zip(spec.text_slots, spec.text_encoder_configs):
            conf = CLIPTextConfig.from_dict(mf._clip_config_dict(cfg))
            cls = CLIPTextModelWithProjection if slot.with_projection else CLIPTextModel
            texts[slot.attr] = cls(conf)
        # Default init leaves norms at 1/0 and some convs at 0: perturb every
        # parameter so that each tensor is distinct (a swapped key cannot hide).
        gen = torch.Generator().manual_seed(seed + 1)
        extras = {}
        with torch.no_grad():
            for module in [unet, vae, *texts.values()]:
                for p in module.parameters():
                    p.add_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.02)
            if spec.family == "sd2":
                # OpenCLIP's text_projection has no place in CLIPTextModel; real SD2 files carry it.
                extras["cond_stage_model.model.text_projection"] = torch.randn(
                    _TEXT_HIDDEN, _TEXT_HIDDEN, generator=gen
                ) * (_TEXT_HIDDEN**-0.5)
    toks = mf._tokenizers_for(spec)
    comps = mf.SDComponents(spec=spec, unet=unet.eval(), vae=vae.eval(), text_encoders=texts, tokenizers=toks,
                            extras=extras)
    for m in texts.values():
        m.eval()
    return comps


def write_tiny_checkpoint(path, arch: str, seed: int = 0, metadata: dict | None = None) -> Path:
    """Write a tiny random ``arch`` model as an LDM-layout .safetensors file.

    For "sd2" (512 epsilon) the metadata gets modelspec hints so that it is not
    detected as the default sd2-v."""
    md = dict(metadata or {})
    if arch in ("sd2", "sd2-inpaint"):
        md.setdefault("modelspec.architecture", "stable-diffusion-v2-512")
        md.setdefault("modelspec.prediction_type", "epsilon")
    return mf.save_checkpoint(path, build_tiny_components(arch, seed), md)


__all__ = ["TINY_ARCHES", "build_tiny_components", "tiny_spec", "write_tiny_checkpoint"]
