"""The decoding stage (and its inverse): images <-> latents through the model's VAE, and PIL <-> tensors.

Large images decode in tiles; a half-precision VAE that overflows (NaN, A1111's black images) is
retried in float32 and stays there.  Pictures are made 8-bit as A1111 makes them: 255 * x truncated.
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from modules.engine.context import JobContext
from modules.engine.result import NansError

TILED_DECODE_PIXELS = 1536 * 1536


def pil_to_tensor(im: Image.Image) -> torch.Tensor:
    """PIL RGB -> (1, 3, H, W) in [-1, 1]."""
    a = np.asarray(im.convert("RGB"), dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(a).permute(2, 0, 1).unsqueeze(0)


def tensor_to_pil(x: torch.Tensor) -> list[Image.Image]:
    """(B, 3, H, W) in [-1, 1] -> PIL images, 8 bits as A1111 makes them: 255 * x truncated (not rounded)."""
    x = torch.clamp((x.float() + 1.0) / 2.0, min=0.0, max=1.0).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray((np.float32(255.0) * a).astype(np.uint8)) for a in x]


def scaling_factor(ctx: JobContext) -> float:
    return float(ctx.spec.scaling_factor)


def encode(ctx: JobContext, images: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] (B, 3, H, W) -> latents (the distribution's mode, scaled), float32 on the job's device."""
    vae = ctx.components.vae
    x = images.to(ctx.device, vae.dtype)
    lat = vae.encode(x).latent_dist.mode()
    return lat.float() * scaling_factor(ctx)


def decode(ctx: JobContext, latents: torch.Tensor) -> torch.Tensor:
    """Latents -> images in [-1, 1], one at a time (memory)."""
    vae = ctx.components.vae
    h, w = latents.shape[-2] * 8, latents.shape[-1] * 8
    use_tiling = h * w > TILED_DECODE_PIXELS and hasattr(vae, "enable_tiling")
    if use_tiling:
        vae.enable_tiling()
    try:
        return torch.cat([_decode_one(ctx, latents[i:i + 1]) for i in range(latents.shape[0])])
    finally:
        if use_tiling:
            vae.disable_tiling()


def _decode_one(ctx: JobContext, latent: torch.Tensor) -> torch.Tensor:
    vae = ctx.components.vae
    z = (latent / scaling_factor(ctx)).to(ctx.device, vae.dtype)
    x = vae.decode(z, return_dict=False)[0].float()
    if vae.dtype != torch.float32 and torch.isnan(x).any():
        ctx.warnings.append("the VAE produced NaNs in half precision; it now runs in float32 "
                            "(use --no-half-vae to start that way)")
        vae.to(torch.float32)
        z = (latent / scaling_factor(ctx)).to(ctx.device, torch.float32)
        x = vae.decode(z, return_dict=False)[0].float()
    if not torch.isfinite(x).all():
        raise NansError("the VAE produced NaN or infinite values (the picture would be black)")
    return x
