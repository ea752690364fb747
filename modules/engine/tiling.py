"""Tiling (seamless textures): the UNet's and VAE's convolutions pad circularly for the job.  A built-in
user of the job hook points: switched on before the job, always off again after it."""
from __future__ import annotations

import torch


def set_tiling(components, enabled: bool) -> None:
    mode = "circular" if enabled else "zeros"
    for m in (components.unet, components.vae):
        for layer in m.modules():
            if isinstance(layer, torch.nn.Conv2d):
                layer.padding_mode = mode


def _before_job(ctx) -> None:
    set_tiling(ctx.components, bool(ctx.request.tiling))


def _after_job(ctx, result) -> None:
    set_tiling(ctx.components, False)


def register_hooks(hooks) -> None:
    hooks.add("before_job", _before_job, "tiling")
    hooks.add("after_job", _after_job, "tiling")
