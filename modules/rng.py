"""Seeds and initial noise, A1111-compatible.

One generator per image, seeded with that image's seed, so a seed gives the same
picture at any batch size.  The generators live on the CPU by default (the
setting "Random number generator source": CPU), which also gives the same
picture on any device; "GPU" puts them on the device the job runs on, where
ancestral and SDE samplers then draw their per-step noise without a copy from
the host (and a wait for the GPU) at every step.

The same generators feed the noise of ancestral/SDE samplers after the initial
noise; with an "Eta noise seed delta" (ENSD) they are first re-seeded with
seed + ENSD, as A1111 does for its sampler noise.
"""
from __future__ import annotations

import random

import torch

MAX_SEED = 2**32 - 1


def fix_seed(seed) -> int:
    """-1 (or None, or '') means a random seed."""
    if seed is None or seed == "" or int(seed) == -1:
        return int(random.randrange(MAX_SEED))
    return int(seed)


def slerp(val: float, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between two noise tensors (variation seeds)."""
    low_norm = low / torch.norm(low, dim=1, keepdim=True)
    high_norm = high / torch.norm(high, dim=1, keepdim=True)
    dot = (low_norm * high_norm).sum(1)
    if dot.mean() > 0.9995:
        return low * (1 - val) + high * val
    omega = torch.acos(dot)
    so = torch.sin(omega)
    return (torch.sin((1.0 - val) * omega) / so).unsqueeze(1) * low + (torch.sin(val * omega) / so).unsqueeze(1) * high


class ImageRNG:
    """Per-image generators for a batch: first draw = initial noise, later draws = sampler noise."""

    def __init__(self, shape, seeds, subseeds=None, subseed_strength=0.0, seed_resize_from_h=0, seed_resize_from_w=0,
                 device="cpu", ensd: int = 0):
        self.shape = tuple(shape)  # (C, H, W) of one latent
        self.seeds = list(seeds)
        self.subseeds = list(subseeds) if subseeds is not None else [0] * len(self.seeds)
        self.subseed_strength = float(subseed_strength or 0.0)
        self.seed_resize_from_h = int(seed_resize_from_h or 0)
        self.seed_resize_from_w = int(seed_resize_from_w or 0)
        self.device = torch.device(device)
        self.ensd = int(ensd or 0)
        self.generators = [torch.Generator(self.device).manual_seed(int(s)) for s in self.seeds]

    def first(self) -> torch.Tensor:
        c, h, w = self.shape
        resize = self.seed_resize_from_h > 0 and self.seed_resize_from_w > 0
        noise_shape = (c, self.seed_resize_from_h // 8, self.seed_resize_from_w // 8) if resize else self.shape
        xs = []
        for i, gen in enumerate(self.generators):
            sub = None
            if self.subseed_strength != 0:
                sub_gen = torch.Generator(self.device).manual_seed(int(self.subseeds[i]))
                sub = torch.randn(noise_shape, generator=sub_gen, device=self.device)
            noise = torch.randn(noise_shape, generator=gen, device=self.device)
            if sub is not None:
                noise = slerp(self.subseed_strength, noise, sub)
            if noise_shape != self.shape:
                base = torch.randn(self.shape, generator=torch.Generator(self.device).manual_seed(int(self.seeds[i])),
                                   device=self.device)
                noise = _paste_center(base, noise)
            xs.append(noise)
        if self.ensd:
            for gen, seed in zip(self.generators, self.seeds):
                gen.manual_seed(int(seed) + self.ensd)
        return torch.stack(xs)

    def next(self) -> torch.Tensor:
        return torch.stack([torch.randn(self.shape, generator=g, device=self.device) for g in self.generators])


def _paste_center(base: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Put noise drawn at another size into the centre of `base` (A1111's 'resize seed from')."""
    _, h, w = base.shape
    _, nh, nw = noise.shape
    dy, dx = (h - nh) // 2, (w - nw) // 2
    ty, tx, sy, sx = max(dy, 0), max(dx, 0), max(-dy, 0), max(-dx, 0)
    hh, ww = min(h - ty, nh - sy), min(w - tx, nw - sx)
    out = base.clone()
    out[:, ty:ty + hh, tx:tx + ww] = noise[:, sy:sy + hh, sx:sx + ww]
    return out
