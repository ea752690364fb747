"""The CFG denoiser: what the sampler calls at every step.

``denoiser(x, t, cfg_mult=1.0) -> (guided output, unconditional output)`` runs the UNet on the
negative prompt and on each ``AND`` sub-prompt and combines them as A1111 does:
``u + sum(weight * scale * (c - u))`` with ``scale = cfg_scale * cfg_mult``.  Prompt schedules
advance with each call (A1111 counts denoiser calls, not sampler steps).  Conditionings of equal
length share one batched UNet call (A1111's default: prompts of different lengths are not padded,
they run separately).  The model family adds its extra UNet inputs (SDXL: pooled text and time ids).

The sampling stage passes the denoiser through the ``cfg_denoiser`` hook point, so a script can wrap
or replace it (anything with the same call signature). The UNet call itself goes through the ``unet_call``
hook point: ``fn(x, t, context, extra, call) -> output`` where ``extra`` holds the UNet's keyword arguments
beyond the text context and ``call`` (a :class:`UNetCall`) says which conditionings the batch holds; a
wrapper may add keyword arguments (ControlNet's ``down_block_additional_residuals``) and call on.
"""
from __future__ import annotations

import torch

from dataclasses import dataclass

from modules.engine.context import JobContext
from modules.engine.prompts import EncodedPrompts


@dataclass
class UNetCall:
    """What one UNet call holds: ``negative[i]`` whether the i-th of its equal chunks (each ``batch`` latents)
    is the negative prompt's; ``size`` (height, width) in pixels; ``calls``: the denoiser calls before it in
    this sampler pass; ``denoiser``: the CFGDenoiser making it."""
    negative: list
    batch: int
    size: tuple
    calls: int
    denoiser: "CFGDenoiser"


def plain_unet(ctx: JobContext):
    def call(x, t, context, extra: dict, info: UNetCall):
        return ctx.components.unet(x, t, encoder_hidden_states=context, return_dict=False, **extra)[0]
    return call


class CFGDenoiser:
    def __init__(self, ctx: JobContext, prompts: EncodedPrompts, cfg_scale: float, size: tuple[int, int],
                 image_cond: torch.Tensor | None = None):
        self.ctx = ctx
        self.prompts = prompts
        self.cfg_scale = float(cfg_scale)
        self.size = tuple(size)                # (height, width) in pixels
        self.image_cond = image_cond           # inpainting models: mask + masked-image latents
        self.calls = 0
        # CFG scale 1 with one plain prompt needs no unconditional pass
        self.needs_uncond = not (self.cfg_scale == 1.0 and prompts.plain)
        unet = plain_unet(ctx)
        self.unet = ctx.hooks.wrap("unet_call", ctx, unet) if ctx.hooks is not None else unet

    def __call__(self, x: torch.Tensor, t, cfg_mult: float = 1.0):
        conds = [s.at(self.calls) for s in self.prompts.positive]
        need_uncond = self.needs_uncond or cfg_mult != 1.0
        groups = ([self.prompts.negative.at(self.calls)] if need_uncond else []) + conds
        negative = ([True] if need_uncond else []) + [False] * len(conds)
        x_in = x if self.image_cond is None else torch.cat([x, self.image_cond], dim=1)
        # one level per batch; a CPU value is copied without waiting for the GPU
        t_in = torch.as_tensor(t).to(x.device, torch.float32, non_blocking=True).reshape(-1)[0]
        outs = self.unet_outputs(x_in, t_in, groups, negative, x.shape[0])
        self.calls += 1
        if not need_uncond:
            return outs[0], outs[0]
        u = outs[0]
        scale = self.cfg_scale * cfg_mult
        weights = [s.weight for s in self.prompts.positive]
        return u + sum(w * scale * (c - u) for w, c in zip(weights, outs[1:])), u

    def unet_outputs(self, x, t, conds, negative: list[bool], batch: int) -> list[torch.Tensor]:
        """The UNet's output for each conditioning; those of equal length share one batched call."""
        ctx = self.ctx
        by_len: dict[int, list[int]] = {}
        for gi, c in enumerate(conds):
            by_len.setdefault(c.context.shape[1], []).append(gi)
        outs: list[torch.Tensor | None] = [None] * len(conds)
        for idxs in by_len.values():
            n = len(idxs)
            context = torch.cat([conds[gi].context.expand(batch, -1, -1) for gi in idxs]).to(ctx.device, ctx.dtype)
            x_in = torch.cat([x] * n).to(ctx.dtype)
            extra = ctx.family.denoiser_inputs(ctx.spec, [conds[gi] for gi in idxs], [negative[gi] for gi in idxs],
                                               self.size, batch, ctx.device, ctx.dtype, ctx.cache)
            negs = [negative[gi] for gi in idxs]
            out = self.unet(x_in, t, context, extra, UNetCall(negs, batch, self.size, self.calls, self)).float()
            for gi, chunk in zip(idxs, out.chunk(n)):
                outs[gi] = chunk
        return outs
