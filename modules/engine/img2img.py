"""One batch of img2img (and inpainting): the init images encoded, noised to the strength's level,
denoised for the last part of the schedule (A1111's step rule), the mask applied as the model needs."""
from __future__ import annotations

import torch

from modules.engine import hires, inpaint, prompts, sampling, vae
from modules.engine.context import Batch, JobContext
from modules.engine.denoiser import CFGDenoiser
from modules.engine.txt2img import latent_shape


def run_batch(ctx: JobContext, batch: Batch) -> tuple[torch.Tensor, inpaint.Overlay | None]:
    """The batch's latents, and how to paste the pictures back over the originals (inpainting)."""
    req = ctx.request
    name = ctx.opts.get("upscaler_for_img2img") or "None"
    resize = None if name in ("None", "Lanczos") or ctx.upscalers is None else hires.image_resizer(ctx, name)
    prepared = inpaint.prepare_images(req, resize)
    image_rng = ctx.image_rng(latent_shape(ctx, req.width, req.height), batch.seeds, batch.subseeds)
    image_t = torch.cat([vae.pil_to_tensor(prepared.init[i % len(prepared.init)]) for i in range(batch.size)])
    image_latents = vae.encode(ctx, image_t).to(ctx.device)
    spass = ctx.plan(req.steps, req.denoising_strength, exact=ctx.exact_steps())
    noise = image_rng.first().to(ctx.device)
    cond = inpaint.conditioning(ctx, prepared.mask, image_t, image_latents, noise)
    mult = ctx.opts.get("initial_noise_multiplier", 1.0) if req.initial_noise_multiplier is None \
        else req.initial_noise_multiplier
    latents = spass.start(noise * mult, x0=cond.image_latents)
    encoded = prompts.encode(ctx, ctx.prompts.prompt_clean, ctx.prompts.negative_clean, req.steps)
    denoiser = CFGDenoiser(ctx, encoded, req.cfg_scale, (req.height, req.width), cond.image_cond)
    latents = sampling.sample(ctx, latents, spass, denoiser, image_rng, blend=cond.blend)
    if cond.blend is not None:  # A1111: the result keeps the image outside the mask too
        latents = latents * cond.latent_mask + cond.image_latents * (1 - cond.latent_mask)
    return latents, prepared.overlay
