"""Tiny random ControlNets and T2I-Adapters written in the layouts real files use, for tests.

A tiny ControlNet has the shapes of the tiny UNet of ``testing.tiny_models`` for the same arch (so it can drive
that UNet): its channels, levels, attention placement, cross-attention width and head count, SDXL's add
embedding; the hint encoder keeps the original four stages (input_hint_block.0 ... .14) with small widths.

    model = build_tiny_controlnet("sd1")                          # a diffusers ControlNetModel
    write_tiny_controlnet(tmp_path / "cn.safetensors", "sd1")     # original layout, control_model. prefix
    write_tiny_controlnet(tmp_path / "diff.safetensors", "sd1", layout="diff", base_unet=comps.unet)
    write_tiny_controlnet(tmp_path / "xl.safetensors", "sdxl", layout="diffusers")

Test support, not part of the application: it names the families it builds.
"""
from __future__ import annotations

from pathlib import Path

import torch

from modules import families
from modules import model_formats as mf
from modules.controlnet import models as cn
from testing.tiny_models import tiny_spec

HINT_WIDTHS = [8, 16, 16, 32]  # conditioning_embedding_out_channels (real files: 16, 32, 96, 256)
_UNET_FIELDS = ("in_channels", "block_out_channels", "layers_per_block", "down_block_types", "cross_attention_dim",
                "use_linear_projection", "transformer_layers_per_block", "attention_head_dim", "addition_embed_type",
                "addition_time_embed_dim", "projection_class_embeddings_input_dim")


def tiny_controlnet_config(arch: str = "sd1", hint_channels: int = 3) -> dict:
    """The ControlNetModel config matching the tiny ``arch`` UNet (over the family's shipped config)."""
    spec = tiny_spec(arch)
    cfg = dict(cn._family_unet_config(cn.shipped_config(spec.model_family) / "config.json"))
    cfg.update({k: spec.unet_config[k] for k in _UNET_FIELDS})
    cfg.update(conditioning_channels=hint_channels, conditioning_embedding_out_channels=list(HINT_WIDTHS))
    return cfg


def build_tiny_controlnet(arch: str = "sd1", seed: int = 0, hint_channels: int = 3):
    """A random tiny diffusers ControlNetModel; every tensor perturbed (the zero convs too), the global RNG
    untouched."""
    from diffusers import ControlNetModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ControlNetModel.from_config(tiny_controlnet_config(arch, hint_channels))
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.05)
    return model.eval()


def to_original_layout(model, prefix: str = cn.LDM_PREFIX) -> dict[str, torch.Tensor]:
    """The ControlNet's weights under the original names (input_hint_block, zero_convs, ...)."""
    kmap = cn.key_map(dict(model.config))
    return {prefix + kmap(k): v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def unet_original_layout(unet, arch: str = "sd1") -> dict[str, torch.Tensor]:
    """A diffusers UNet's weights in the single-file layout, below the family's UNet prefix (keys without it)."""
    kmap = families.get(families.variant(arch).family).unet_key_map(dict(unet.config))
    return {kmap(k): v.detach().clone() for k, v in unet.state_dict().items()}


def to_diff_layout(model, base_unet_ldm: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The diff layout: tensors the base UNet also has (same name and shape) stored as the difference to it,
    plus the ``difference`` marker."""
    out = {}
    for key, v in to_original_layout(model, cn.LDM_PREFIX).items():
        b = base_unet_ldm.get(key[len(cn.LDM_PREFIX):])
        out[key] = (v - b) if b is not None and b.shape == v.shape else v
    out[cn.DIFF_MARKER] = torch.tensor(1.0)
    return out


def _save(sd: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in cn.SAFETENSORS_EXT:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    else:
        torch.save(sd, str(path))
    return path


def write_tiny_controlnet(path, arch: str = "sd1", layout: str = "ldm", seed: int = 0, base_unet=None,
                          prefix: str = cn.LDM_PREFIX, hint_channels: int = 3, model=None) -> Path:
    """Write a tiny ControlNet (``model``, or a new one) as ``layout``: "ldm" (original names, ``prefix``),
    "diff" (differences to ``base_unet``, a diffusers UNet of ``arch``), "diffusers" (one file, diffusers'
    names) or "diffusers_dir" (a folder: config.json + diffusion_pytorch_model.safetensors).  .safetensors,
    or a torch.save pickle for any other extension."""
    path = Path(path)
    model = model if model is not None else build_tiny_controlnet(arch, seed, hint_channels)
    if layout == "diffusers_dir":
        model.save_pretrained(str(path), safe_serialization=True)
        return path
    if layout == "diffusers":
        sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    elif layout == "diff":
        sd = to_diff_layout(model, unet_original_layout(base_unet, arch))
    else:
        sd = to_original_layout(model, prefix)
    return _save(sd, path)


# ------------------------------------------------------------------ T2I-Adapters


def build_tiny_t2i_adapter(seed: int = 0, channels=(32, 64, 64, 64), in_channels: int = 3):
    """A random tiny diffusers T2IAdapter (SD 1.x full adapter: PixelUnshuffle(8), 4 levels, 2 blocks each)."""
    from diffusers import T2IAdapter

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = T2IAdapter(in_channels=in_channels, channels=list(channels), num_res_blocks=2,
                           downscale_factor=8, adapter_type="full_adapter")
    return model.eval()


def t2i_original_layout(model) -> dict[str, torch.Tensor]:
    """TencentARC's names of a full adapter: conv_in, body.{level * blocks + j}.block1/2,
    body.{level * blocks}.in_conv."""
    per = model.config.num_res_blocks
    out = {}
    for key, v in model.state_dict().items():
        rest = key[len("adapter."):]
        parts = rest.split(".")
        if parts[0] == "body" and parts[2] == "resnets":
            rest = ".".join(["body", str(int(parts[1]) * per + int(parts[3])), *parts[4:]])
        elif parts[0] == "body":  # in_conv
            rest = ".".join(["body", str(int(parts[1]) * per), *parts[2:]])
        out[rest] = v.detach().clone()
    return out


def write_tiny_t2i_adapter(path, layout: str = "t2i_original", seed: int = 0, model=None) -> Path:
    path = Path(path)
    model = model if model is not None else build_tiny_t2i_adapter(seed)
    if layout == "diffusers_dir":
        model.save_pretrained(str(path), safe_serialization=True)
        return path
    sd = t2i_original_layout(model) if layout == "t2i_original" else dict(model.state_dict())
    return _save(sd, path)


def tiny_sd_checkpoint(path, arch: str = "sd1") -> Path:
    """A tiny SD checkpoint (not a ControlNet) for the listing's bad files."""
    from testing.tiny_models import build_tiny_components

    return mf.save_checkpoint(path, build_tiny_components(arch))


__all__ = ["build_tiny_controlnet", "build_tiny_t2i_adapter", "tiny_controlnet_config", "to_diff_layout",
           "to_original_layout", "unet_original_layout", "write_tiny_controlnet", "write_tiny_t2i_adapter"]
