"""The hires. fix stage: the first pass's latents upscaled (in latent space, or decoded, resized by an
image upscaler and encoded again), then a second img2img-style pass at the target size that always runs
exactly its steps (A1111)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from modules import prompt_parser, upscalers
from modules.engine import inpaint, prompts, sampling, vae
from modules.engine.context import Batch, JobContext
from modules.engine.denoiser import CFGDenoiser
from modules.engine.request import RequestError, hires_target


def image_resizer(ctx: JobContext, name: str):
    """``(im, w, h) -> image`` by the image upscaler ``name`` as A1111's ``resize_image`` uses it: a model
    upscaler enlarges, Lanczos gives the exact size ("None": Lanczos alone)."""
    if ctx.upscalers is None:
        return lambda im, w, h: upscalers.upscale_image(im, "Lanczos" if name == "None" else name, w, h)
    try:
        def progress(done, total):   # shown by the progress API and the page while the tiles run
            ctx.control.textinfo = f"{name}: tile {done}/{total}"
        return ctx.upscalers.resizer(name, ctx.opts, interrupted=lambda: ctx.control.interrupted, progress=progress)
    except upscalers.UpscalerError as e:
        raise RequestError("hr_upscaler", str(e)) from None


def upscale(ctx: JobContext, latents: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """The first pass's latents at width x height by the request's hires upscaler."""
    name = ctx.request.hr_upscaler
    if name in upscalers.LATENT_UPSCALE_MODES:
        mode, antialias = upscalers.LATENT_UPSCALE_MODES[name]
        kw = {"antialias": antialias, "align_corners": False} if mode in ("bilinear", "bicubic") else {}
        return F.interpolate(latents.float(), size=(height // 8, width // 8), mode=mode, **kw).to(ctx.device)
    resize = image_resizer(ctx, name)
    imgs = [resize(im, width, height) for im in vae.tensor_to_pil(vae.decode(ctx, latents))]
    return vae.encode(ctx, torch.cat([vae.pil_to_tensor(im) for im in imgs])).to(ctx.device)


def run(ctx: JobContext, latents: torch.Tensor, batch: Batch) -> torch.Tensor:
    req = ctx.request
    tw, th = hires_target(req)
    steps = req.hr_second_pass_steps or req.steps
    latents = upscale(ctx, latents, tw, th)
    image_rng = ctx.image_rng((latents.shape[1], th // 8, tw // 8), batch.seeds, batch.subseeds)
    if req.denoising_strength <= 0:
        return latents
    # a separate hires prompt: its <lora:...> tags are removed (the first pass's networks stay applied)
    p = ctx.prompts
    hr_prompt = prompt_parser.parse_extra_networks(req.hr_prompt)[0] if req.hr_prompt else p.prompt_clean
    hr_neg = prompt_parser.parse_extra_networks(req.hr_negative_prompt)[0] if req.hr_negative_prompt \
        else p.negative_clean
    encoded = prompts.encode(ctx, hr_prompt, hr_neg, req.steps, steps)
    spass = ctx.plan(steps, req.denoising_strength, exact=True)
    x = spass.start(image_rng.first().to(ctx.device), x0=latents)
    image_cond = inpaint.unmasked_conditioning(ctx, latents.shape[0], th, tw)
    return sampling.sample(ctx, x, spass, CFGDenoiser(ctx, encoded, req.cfg_scale, (th, tw), image_cond), image_rng)
