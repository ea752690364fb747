"""The sampling stage: one pass of a sampler from a starting latent, with the step hook points.

The denoiser goes through the ``cfg_denoiser`` hook point first (scripts may wrap it).  Around every
sampler step the stage fires ``before_step`` (at the denoiser's first call of the step) and
``after_step`` (with the step's prediction; the live previews take it from there), counts progress,
and stops the pass when the job is interrupted or the image skipped: an interrupted pass ends on its
last prediction, as in A1111.  Latents that are not finite fail the job naming the sampler.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from modules import rng, samplers
from modules.engine.context import JobContext
from modules.engine.control import Interrupted
from modules.engine.result import NansError


@dataclass
class StepInfo:
    """One sampler step, as the step hooks see it."""
    index: int                        # 0-based within the pass
    steps: int                        # steps of the pass
    x: torch.Tensor                   # the latent the step starts from (before_step) or reached (after_step)
    denoised: torch.Tensor | None = None   # the model's prediction of the clean latent (after_step)


class _Steps:
    """Calls the denoiser for the sampler and fires the step hook points around each step."""

    def __init__(self, ctx: JobContext, denoiser, steps: int, start: torch.Tensor):
        self.ctx, self.denoiser, self.steps = ctx, denoiser, steps
        self.index = 0
        self.begun = False
        self.last = start
        hooks = ctx.hooks
        self.fire_before = "before_step" in hooks
        self.fire_after = "after_step" in hooks

    def model(self, x, t, cfg_mult: float = 1.0):
        ctl = self.ctx.control
        if ctl.interrupted or ctl.skipped:
            raise Interrupted()
        if not self.begun:
            self.begun = True
            if self.fire_before:
                self.ctx.hooks.fire("before_step", self.ctx, StepInfo(self.index, self.steps, x))
        return self.denoiser(x, t, cfg_mult)

    def done(self, i, x, denoised) -> None:
        ctl = self.ctx.control
        self.last = denoised
        if self.fire_after:
            self.ctx.hooks.fire("after_step", self.ctx, StepInfo(self.index, self.steps, x, denoised))
        self.index += 1
        self.begun = False
        ctl.step = min(ctl.step + 1, ctl.total_steps)
        ctl.report()


def sample(ctx: JobContext, latents: torch.Tensor, spass: samplers.SamplingPass, denoiser, image_rng: rng.ImageRNG,
           blend=None) -> torch.Tensor:
    """Run ``spass`` from ``latents`` with ``denoiser`` (a CFGDenoiser); ``blend`` = (image latents, keep mask)
    for inpainting with a normal model (the prediction keeps the image outside the mask at every step)."""
    denoiser = ctx.hooks.wrap("cfg_denoiser", ctx, denoiser)
    steps = _Steps(ctx, denoiser, spass.steps, latents)
    noise = spass.noise(latents, lambda: image_rng.next().to(latents.device), image_rng.seeds)
    try:
        latents = spass.run(steps.model, latents, noise, steps.done, blend=blend)
    except Interrupted:
        latents = steps.last  # A1111: an interrupted pass ends on its last denoised prediction
    if not torch.isfinite(latents).all():
        raise NansError(nan_message(ctx, spass.info.name))
    return latents


def nan_message(ctx: JobContext, sampler: str) -> str:
    msg = f"sampler '{sampler}' produced NaN or infinite latents (the picture would be black)"
    if ctx.dtype != torch.float32:
        msg += "; the UNet runs in half precision: start with --no-half (or --precision full) to run it in float32"
    return msg
