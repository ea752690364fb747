"""A whole job: the stages in order, batch by batch.

    prompts.prepare -> before_job hooks -> for each batch: before_batch hooks, txt2img/img2img (conditioning, sampling,
    hires / inpainting) -> decode -> overlay -> after_image_decoded -> infotext -> save
    -> grid -> info JSON -> after_job hooks (always, also when the job fails: result None)
"""
from __future__ import annotations

import logging
import time

import torch
from PIL import Image

from modules import rng
from modules.engine import img2img, outputs, prompts, txt2img, vae
from modules.engine.context import Batch, JobContext
from modules.engine.request import validate
from modules.engine.result import GenerationResult, peak_memory_mb

log = logging.getLogger(__name__)


def run(ctx: JobContext) -> GenerationResult:
    """Run the job of ``ctx`` and return its pictures, infotexts and info."""
    validate(ctx.request)
    t0 = time.perf_counter()
    ctx.prompts = prompts.prepare(ctx)
    seeds, subseeds = job_seeds(ctx)
    _start_progress(ctx)
    result = GenerationResult()
    finished = None
    try:
        ctx.hooks.fire("before_job", ctx)
        prompts.conditioner(ctx).used_embeddings = set()  # "TI hashes": this job's embeddings only
        with torch.inference_mode():
            _run_batches(ctx, result, seeds, subseeds)
        outputs.add_grid(ctx, result)
        _finish(ctx, result, time.perf_counter() - t0)
        finished = result
    finally:
        ctx.hooks.fire_all("after_job", ctx, finished)
    return result


def job_seeds(ctx: JobContext) -> tuple[list[int], list[int]]:
    """Every image's seed and variation seed: consecutive from the request's (random when -1)."""
    req = ctx.request
    seed, subseed = rng.fix_seed(req.seed), rng.fix_seed(req.subseed)
    n = req.n_iter * req.batch_size
    seeds = [seed + i for i in range(n)]
    return seeds, [subseed + i for i in range(n)] if req.subseed_strength > 0 else [subseed] * n


def _start_progress(ctx: JobContext) -> None:
    ctl, req = ctx.control, ctx.request
    ctl.total_steps = ctx.steps_per_image() * req.n_iter
    ctl.job_count = req.n_iter
    ctl.step = 0
    ctl.started = time.time()
    if ctx.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(ctx.device)


def _run_batches(ctx: JobContext, result: GenerationResult, seeds: list[int], subseeds: list[int]) -> None:
    req, ctl = ctx.request, ctx.control
    per_image = ctl.total_steps // max(req.n_iter, 1)
    for it in range(req.n_iter):
        if ctl.interrupted:
            break
        ctl.job_no = it
        ctl.skipped = False
        span = slice(it * req.batch_size, (it + 1) * req.batch_size)
        batch = Batch(it, seeds[span], subseeds[span])
        ctx.hooks.fire("before_batch", ctx, batch)
        latents, overlay = run_batch(ctx, batch)
        if ctl.interrupted and ctl.step == 0:
            break
        for j, pic in enumerate(vae.tensor_to_pil(vae.decode(ctx, latents))):
            if overlay is not None:
                pic = overlay.apply(pic, j)
            _add_image(ctx, result, pic, seeds[span][j], subseeds[span][j])
        if not ctl.interrupted:
            ctl.step = per_image * (it + 1)


def run_batch(ctx: JobContext, batch: Batch):
    """(latents, overlay or None) of one batch: txt2img, or img2img / inpainting."""
    if ctx.request.is_img2img:
        return img2img.run_batch(ctx, batch)
    return txt2img.run_batch(ctx, batch), None


def _add_image(ctx: JobContext, result: GenerationResult, pic: Image.Image, seed: int, subseed: int) -> None:
    pic = ctx.hooks.wrap("after_image_decoded", ctx, pic)
    text = outputs.infotext(ctx, seed, subseed)
    result.images.append(pic)
    result.infotexts.append(text)
    result.seeds.append(seed)
    result.subseeds.append(subseed)
    path = outputs.save_image(ctx, pic, text, seed)
    if path is not None:
        result.saved_files.append(path)


def _finish(ctx: JobContext, result: GenerationResult, seconds: float) -> None:
    p = ctx.prompts
    result.prompts = [p.prompt] * len(result.images)
    result.negative_prompts = [p.negative] * len(result.images)
    result.interrupted = ctx.control.interrupted
    result.warnings = list(ctx.warnings)
    result.seconds = seconds
    result.info = outputs.info_json(ctx, result)
    result.info["peak_memory_mb"] = peak_memory_mb(ctx.device)
    result.info["peak_memory_device"] = ctx.device.type
    result.info["seconds"] = round(seconds, 3)
    comps = ctx.components
    if getattr(comps, "compile_pending", False) and result.images:
        comps.compile_pending = False  # --compile: this first job paid for compiling the UNet
        result.info["compile_first_run_seconds"] = round(seconds, 3)
        log.info("first generation with the compiled UNet took %.1fs (includes the compile)", seconds)


def generate(model, request, opts: dict | None = None, **kw) -> GenerationResult:
    """Run one job on ``model`` (a loaded model): the context is made here (keyword arguments: those of
    :meth:`JobContext.create`: control, hooks, networks, embeddings, styles, conditioners, save)."""
    return run(JobContext.create(model, request, opts, **kw))
