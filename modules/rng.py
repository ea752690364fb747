"""Seeds and initial noise, A1111-compatible.

One generator per image, seeded with that image's seed, so a seed gives the same
picture at any batch size.  The generators live on the CPU by default (the
setting "Random number generator source": CPU), which also gives the same
picture on any device; "GPU" puts them on the device the job runs on, where
ancestral and SDE samplers then draw their per-step noise without a copy from
the host (and a wait for the GPU) at every step.

"NV" (A1111's name) computes on the CPU the numbers torch's CUDA generator gives for the seed
(:mod:`modules.sampling.philox`), so pictures made on an NVIDIA card with A1111's default GPU
source come out the same on any device.

The same generators feed the noise of ancestral/SDE samplers after the initial
noise; with an "Eta noise seed delta" (ENSD) they are first re-seeded with
seed + ENSD, as A1111 does for its sampler noise.
"""
from __future__ import annotations

import random

import torch

from modules.fields import SEED_MAX as MAX_SEED  # seeds are 32-bit, as in A1111
from modules.sampling.philox import PhiloxGenerator


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
                 device="cpu", ensd: int = 0, source: str = "CPU"):
        self.shape = tuple(shape)  # (C, H, W) of one latent
        self.seeds = list(seeds)
        self.subseeds = list(subseeds) if subseeds is not None else [0] * len(self.seeds)
        self.subseed_strength = float(subseed_strength or 0.0)
        self.seed_resize_from_h = int(seed_resize_from_h or 0)
        self.seed_resize_from_w = int(seed_resize_from_w or 0)
        self.device = torch.device(device)
        self.ensd = int(ensd or 0)
        self.nv = source == "NV"
        self.generators = [self._generator(s) for s in self.seeds]

    def _generator(self, seed: int):
        if self.nv:
            return PhiloxGenerator(int(seed))
        return torch.Generator(self.device).manual_seed(int(seed))

    def _randn(self, shape, gen) -> torch.Tensor:
        if self.nv:
            return gen.randn(shape).to(self.device)
        return torch.randn(shape, generator=gen, device=self.device)

    def first(self) -> torch.Tensor:
        c, h, w = self.shape
        resize = self.seed_resize_from_h > 0 and self.seed_resize_from_w > 0
        noise_shape = (c, self.seed_resize_from_h // 8, self.seed_resize_from_w // 8) if resize else self.shape
        xs = []
        for i, gen in enumerate(self.generators):
            sub = None
            if self.subseed_strength != 0:
                sub = self._randn(noise_shape, self._generator(self.subseeds[i]))
            # as A1111: noise drawn at another size comes from a fresh generator, and the image's own
            # generator draws the full-size base (so later sampler noise continues from the same state)
            noise = self._randn(noise_shape, gen if noise_shape == self.shape else self._generator(self.seeds[i]))
            if sub is not None:
                noise = slerp(self.subseed_strength, noise, sub)
            if noise_shape != self.shape:
                noise = _paste_center(self._randn(self.shape, gen), noise)
            xs.append(noise)
        if self.ensd:
            for gen, seed in zip(self.generators, self.seeds):
                gen.manual_seed(int(seed) + self.ensd)
        return torch.stack(xs)

    def next(self) -> torch.Tensor:
        return torch.stack([self._randn(self.shape, g) for g in self.generators])


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
