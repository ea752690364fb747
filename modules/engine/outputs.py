"""The output stage: A1111's infotext for each picture, the info JSON of the job, saving pictures and grids.

Saving goes through the context's ``save`` function (the app's: folders and file names from the
settings); every file written fires ``after_image_saved``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from PIL import Image

from modules import infotext as infotext_mod
from modules import rng, samplers
from modules.engine import prompts
from modules.engine.context import JobContext
from modules.engine.request import hires_target, resolve_sampler_lenient
from modules.engine.result import VERSION, GenerationResult


@dataclass
class SavedImage:
    """A file the job wrote, as ``after_image_saved`` sees it."""
    path: str
    image: Image.Image
    infotext: str | None
    grid: bool = False


def _hires_params(ctx: JobContext) -> dict:
    req = ctx.request
    if not req.enable_hr:
        return {}
    tw, th = hires_target(req)
    return {"hires_upscale": req.hr_scale, "hires_steps": req.hr_second_pass_steps or None,
            "hires_upscaler": req.hr_upscaler,
            "hires_resize": (tw, th) if (req.hr_resize_x or req.hr_resize_y) else None,
            "hires_prompt": req.hr_prompt if req.hr_prompt and req.hr_prompt != req.prompt else None,
            "hires_negative_prompt": req.hr_negative_prompt
            if req.hr_negative_prompt and req.hr_negative_prompt != req.negative_prompt else None}


def _extra_params(ctx: JobContext, sampler, cond_params: dict) -> dict:
    """Emphasis (a non-default mode that met brackets), an eta that differs from its sampler kind's default
    (A1111 writes it then), the mask blur of an inpainting job."""
    extra = {"Emphasis": cond_params.get("Emphasis")}
    eta = ctx.eta_for(sampler)
    if eta is not None and eta != sampler.eta_default:
        extra[samplers.ETA_SETTINGS[sampler.eta][2]] = eta
    if ctx.request.is_img2img and ctx.request.mask is not None:
        extra["Mask blur"] = ctx.request.mask_blur
    extra.update(ctx.extra_params)   # the scripts' (after the engine's own, as A1111 writes them)
    return extra


def vae_hash(ctx: JobContext) -> str | None:
    if "vae_hash" not in ctx.cache:
        lib = ctx.networks
        ctx.cache["vae_hash"] = lib.vae_shorthash(ctx.model.vae_name) if lib is not None else None
    return ctx.cache["vae_hash"]


def infotext(ctx: JobContext, seed: int, subseed: int) -> str:
    """The parameters text of one picture, in A1111's format and order."""
    req, info, p = ctx.request, ctx.model.info, ctx.prompts
    sampler, sched = resolve_sampler_lenient(req)[:2]
    eff = samplers.effective_schedule_type(sampler, sched)
    cond_params = prompts.conditioner(ctx).infotext_params([p.prompt, p.negative])  # Emphasis, TI hashes
    active = ctx.active_networks
    params = infotext_mod.generation_params(
        steps=req.steps, sampler=sampler.name, schedule_type=eff.label if eff is not None else None,
        cfg_scale=req.cfg_scale, seed=seed, width=req.width, height=req.height,
        model_hash=info.shorthash, model=info.model_name,
        vae=ctx.model.vae_name if ctx.model.vae_name != "None" else None, vae_hash=vae_hash(ctx),
        lora_hashes=(active.hashes if active is not None else None) or None, ti_hashes=cond_params.get("TI hashes"),
        variation_seed=subseed if req.subseed_strength else None,
        variation_seed_strength=req.subseed_strength or None,
        seed_resize_from=(req.seed_resize_from_w, req.seed_resize_from_h)
        if req.seed_resize_from_w > 0 and req.seed_resize_from_h > 0 else None,
        denoising_strength=req.denoising_strength if (req.is_img2img or req.enable_hr) else None,
        clip_skip=ctx.clip_skip, ensd=int(ctx.opts.get("eta_noise_seed_delta", 0)) or None,
        rng=ctx.opts.get("randn_source", "CPU"), tiling=req.tiling, extra=_extra_params(ctx, sampler, cond_params),
        version=VERSION, **_hires_params(ctx))
    return infotext_mod.create_infotext(p.prompt, p.negative, params)


def save_image(ctx: JobContext, image: Image.Image, text: str | None, seed: int, grid: bool = False) -> str | None:
    """Write ``image`` where the settings say (nothing without a save function or when saving is off)."""
    req, opts = ctx.request, ctx.opts
    if ctx.save is None or not req.save_images:
        return None
    if grid and (req.do_not_save_grid or not opts.get("grid_save", True)):
        return None
    if not grid and not opts.get("samples_save", True):
        return None
    path = str(ctx.save(image, text, seed, ctx.prompts.prompt, req, opts, grid=True) if grid
               else ctx.save(image, text, seed, ctx.prompts.prompt, req, opts))
    ctx.hooks.fire("after_image_saved", ctx, SavedImage(path, image, text, grid))
    return path


def add_grid(ctx: JobContext, result: GenerationResult) -> None:
    """A batch of several pictures gets a grid (saved, and first in the results when the setting says)."""
    from modules import images as images_mod

    if len(result.images) <= 1:
        return
    result.grid = images_mod.image_grid(result.images, batch_size=ctx.request.batch_size)
    result.grid_first = bool(ctx.opts.get("return_grid", True))
    text = result.infotexts[0] if result.infotexts else None
    result.grid_file = save_image(ctx, result.grid, text, result.seeds[0], grid=True)


def info_json(ctx: JobContext, result: GenerationResult) -> dict:
    """A1111's ``info`` object of a job."""
    req, info, p = ctx.request, ctx.model.info, ctx.prompts
    return {
        "prompt": p.prompt, "all_prompts": result.prompts,
        "negative_prompt": p.negative, "all_negative_prompts": result.negative_prompts,
        "seed": result.seeds[0] if result.seeds else rng.fix_seed(req.seed), "all_seeds": result.seeds,
        "subseed": result.subseeds[0] if result.subseeds else 0, "all_subseeds": result.subseeds,
        "subseed_strength": req.subseed_strength, "width": req.width, "height": req.height,
        "sampler_name": req.sampler_name, "scheduler": req.scheduler, "cfg_scale": req.cfg_scale,
        "steps": req.steps, "batch_size": req.batch_size, "restore_faces": False, "face_restoration_model": None,
        "sd_model_name": info.model_name, "sd_model_hash": info.shorthash,
        "sd_vae_name": ctx.model.vae_name if ctx.model.vae_name != "None" else None,
        "sd_vae_hash": ctx.cache.get("vae_hash"),
        "seed_resize_from_w": req.seed_resize_from_w, "seed_resize_from_h": req.seed_resize_from_h,
        "denoising_strength": req.denoising_strength if (req.is_img2img or req.enable_hr) else None,
        "extra_generation_params": dict(ctx.extra_params), "index_of_first_image": 1 if result.grid_first else 0,
        # A1111 lists the grid's infotext (the first image's) first when the grid leads the images
        "infotexts": ([result.infotexts[0]] if result.grid_first else []) + result.infotexts,
        "styles": list(req.styles), "job_timestamp": time.strftime("%Y%m%d%H%M%S"), "clip_skip": ctx.clip_skip,
        "is_using_inpainting_conditioning": ctx.spec.is_inpaint, "version": VERSION, "warnings": result.warnings,
    }
