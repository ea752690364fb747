"""One batch of txt2img: noise, the first pass, then hires. fix when asked."""
from __future__ import annotations

import torch

from modules.engine import hires, inpaint, prompts, sampling
from modules.engine.context import Batch, JobContext
from modules.engine.denoiser import CFGDenoiser


def latent_shape(ctx: JobContext, width: int, height: int) -> tuple[int, int, int]:
    return ctx.components.vae.config.latent_channels, height // 8, width // 8


def run_batch(ctx: JobContext, batch: Batch) -> torch.Tensor:
    """The batch's latents (after hires. fix, if enabled)."""
    req = ctx.request
    image_rng = ctx.image_rng(latent_shape(ctx, req.width, req.height), batch.seeds, batch.subseeds)
    encoded = prompts.encode(ctx, ctx.prompts.prompt_clean, ctx.prompts.negative_clean, req.steps)
    spass = ctx.plan(req.steps)
    latents = spass.start(image_rng.first().to(ctx.device))
    image_cond = inpaint.unmasked_conditioning(ctx, batch.size, req.height, req.width)
    denoiser = CFGDenoiser(ctx, encoded, req.cfg_scale, (req.height, req.width), image_cond)
    latents = sampling.sample(ctx, latents, spass, denoiser, image_rng)
    if req.enable_hr and not ctx.control.interrupted:
        latents = hires.run(ctx, latents, batch)
    return latents
