"""Noise levels of a discrete-time (DDPM) model and A1111's schedule types.

A model trained on 1000 timesteps has one noise level per timestep,
``sigma_t = sqrt((1 - alphabar_t) / alphabar_t)``.  :class:`ModelSigmas` converts between
sigma and a (fractional) timestep by interpolating log-sigma linearly, as k-diffusion's
``DiscreteSchedule`` does, and every schedule below spaces a sampler's steps over those
levels exactly as A1111 1.10 does (``modules/sd_schedulers.py`` and k-diffusion's
``get_sigmas_*``).  All schedules return float32 sigmas on the CPU, largest first; all but
"KL Optimal" end with 0 (A1111's KL Optimal ends at the model's smallest sigma).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch


def ldm_alphas_cumprod(beta_start: float = 0.00085, beta_end: float = 0.012, n: int = 1000,
                       schedule: str = "scaled_linear") -> torch.Tensor:
    """alphabar as the original LDM checkpoints hold it: computed in float64, stored as float32."""
    if schedule == "scaled_linear":
        betas = torch.linspace(beta_start ** 0.5, beta_end ** 0.5, n, dtype=torch.float64) ** 2
    elif schedule == "linear":
        betas = torch.linspace(beta_start, beta_end, n, dtype=torch.float64)
    else:
        raise ValueError(f"unsupported beta schedule {schedule!r}")
    return torch.cumprod(1.0 - betas, dim=0).to(torch.float32)


def alphas_cumprod_from_config(config: dict) -> torch.Tensor:
    """alphabar from a diffusers scheduler config (beta_start, beta_end, beta_schedule, trained_betas)."""
    trained = config.get("trained_betas")
    if trained:
        betas = torch.tensor(trained, dtype=torch.float64)
        return torch.cumprod(1.0 - betas, dim=0).to(torch.float32)
    return ldm_alphas_cumprod(float(config.get("beta_start", 0.00085)), float(config.get("beta_end", 0.012)),
                              int(config.get("num_train_timesteps", 1000)),
                              str(config.get("beta_schedule", "scaled_linear")))


class ModelSigmas:
    """The model's noise levels, ascending (index = timestep), and sigma <-> t conversion."""

    def __init__(self, alphas_cumprod: torch.Tensor):
        self.alphas_cumprod = alphas_cumprod.to(torch.float32).cpu()
        self.sigmas = ((1 - self.alphas_cumprod) / self.alphas_cumprod) ** 0.5
        self.log_sigmas = self.sigmas.log()

    @property
    def sigma_min(self) -> torch.Tensor:
        return self.sigmas[0]

    @property
    def sigma_max(self) -> torch.Tensor:
        return self.sigmas[-1]

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=torch.float32)
        log_sigma = sigma.log().cpu()
        table = self.log_sigmas
        # index of the last table entry at or below log_sigma, kept one short of the end
        below = (log_sigma.reshape(1, -1) - table[:, None]).ge(0).cumsum(dim=0).argmax(dim=0)
        lo = below.clamp(max=table.shape[0] - 2)
        hi = lo + 1
        frac = ((table[lo] - log_sigma.reshape(-1)) / (table[lo] - table[hi])).clamp(0, 1)
        t = (1 - frac) * lo + frac * hi
        return t.reshape(sigma.shape).to(sigma.device)

    def t_to_sigma(self, t: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t).float()
        lo, hi, frac = t.floor().long(), t.ceil().long(), t.frac()
        return ((1 - frac) * self.log_sigmas[lo] + frac * self.log_sigmas[hi]).exp()

    def get_sigmas(self, n: int) -> torch.Tensor:
        """k-diffusion's default spacing: t from the last timestep to 0 in n even steps."""
        t = torch.linspace(len(self.sigmas) - 1, 0, n)
        return _append_zero(self.t_to_sigma(t))


class LCMSigmas(ModelSigmas):
    """A1111's LCM denoiser: the 50 timesteps LCM was distilled on (every 20th, ending at 999),
    timesteps snapped to that grid."""

    original_steps = 50

    def __init__(self, alphas_cumprod: torch.Tensor):
        n = len(alphas_cumprod)
        self.skip = n // self.original_steps
        picked = [alphas_cumprod[n - 1 - k * self.skip] for k in range(self.original_steps)][::-1]
        super().__init__(torch.stack(picked))

    def sigma_to_t(self, sigma):
        sigma = torch.as_tensor(sigma, dtype=torch.float32)
        nearest = (sigma.log().reshape(1, -1) - self.log_sigmas[:, None]).abs().argmin(dim=0)
        return (nearest * self.skip + (self.skip - 1)).reshape(sigma.shape)

    def t_to_sigma(self, t):
        idx = ((torch.as_tensor(t) - (self.skip - 1)) / self.skip).float().clamp(0, len(self.sigmas) - 1)
        return super().t_to_sigma(idx)

    def get_sigmas(self, n: int) -> torch.Tensor:
        start, end = self.sigma_to_t(self.sigma_max), self.sigma_to_t(self.sigma_min)
        return _append_zero(self.t_to_sigma(torch.linspace(float(start), float(end), n)))


def _append_zero(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([x, x.new_zeros([1])])


# --------------------------------------------------------------------------------------
# schedule functions: (n, model sigmas, context) -> sigmas
# --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ScheduleContext:
    ays_sigmas: tuple[float, ...] | None = None   # Align Your Steps levels of the model family (None: SD 1.5's)
    rho: float | None = None          # A1111's "rho" setting (0/None: the schedule's default)
    beta_alpha: float = 0.6           # A1111's beta_dist_alpha / beta_dist_beta
    beta_beta: float = 0.6


def uniform(n, ms: ModelSigmas, ctx: ScheduleContext) -> torch.Tensor:
    return ms.get_sigmas(n)


def karras(n, ms: ModelSigmas, ctx: ScheduleContext) -> torch.Tensor:
    rho = ctx.rho or 7.0
    lo, hi = float(ms.sigma_min) ** (1 / rho), float(ms.sigma_max) ** (1 / rho)
    ramp = torch.linspace(0, 1, n)
    return _append_zero((hi + ramp * (lo - hi)) ** rho)


def exponential(n, ms: ModelSigmas, ctx: ScheduleContext) -> torch.Tensor:
    return _append_zero(torch.linspace(math.log(float(ms.sigma_max)), math.log(float(ms.sigma_min)), n).exp())


def polyexponential(n, ms: ModelSigmas, ctx: ScheduleContext) -> torch.Tensor:
    rho = ctx.rho or 1.0
    lo, hi = math.log(float(ms.sigma_min)), math.log(float(ms.sigma_max))
    ramp = torch.linspace(1, 0, n) ** rho
    return _append_zero(torch.exp(ramp * (hi - lo) + lo))


def _through_t(ms: ModelSigmas, ts) -> torch.Tensor:
    return torch.tensor([float(ms.t_to_sigma(t)) for t in ts] + [0.0], dtype=torch.float32)


def sgm_uniform(n, ms: ModelSigmas, ctx: ScheduleContext) -> torch.Tensor:
    start, end = ms.sigma_to_t(ms.sigma_max), ms.sigma_to_t(ms.sigma_min)
    return _through_t(ms, torch.linspace(float(start), float(end), n + 1)[:-1])


def normal(n, ms: ModelSigmas, ctx: ScheduleContext) -> torch.Tensor:
    start, end = ms.sigma_to_t(ms.sigma_max), ms.sigma_to_t(ms.sigma_min)
    return _through_t(ms, torch.linspace(float(start), float(end), n))


def kl_optimal(n, ms: ModelSigmas, ctx: ScheduleContext) -> torch.Tensor:
    a_min, a_max = torch.arctan(ms.sigma_min), torch.arctan(ms.sigma_max)
    k = torch.arange(n + 1) / n
    return torch.tan(k * a_min + (1.0 - k) * a_max).to(torch.float32)


# Align Your Steps: NVIDIA's published 10-step noise levels for SD 1.5 (a family may bring its own:
# modules.families, e.g. SDXL's)
AYS_SD15 = (14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029)


def align_your_steps(n, ms: ModelSigmas, ctx: ScheduleContext) -> torch.Tensor:
    table = list(ctx.ays_sigmas or AYS_SD15)
    if n == len(table):
        return torch.tensor(table + [0.0], dtype=torch.float32)
    # interpolate log-sigma over n points spread evenly over the table (ascending for np.interp)
    logs = np.log(np.array(table[::-1]))
    resampled = np.exp(np.interp(np.linspace(0, 1, n), np.linspace(0, 1, len(table)), logs))[::-1]
    return torch.tensor(np.append(resampled, 0.0), dtype=torch.float32)


def simple(n, ms: ModelSigmas, ctx: ScheduleContext) -> torch.Tensor:
    stride = len(ms.sigmas) / n
    return torch.tensor([float(ms.sigmas[-(1 + int(k * stride))]) for k in range(n)] + [0.0], dtype=torch.float32)


def ddim_spacing(n, ms: ModelSigmas, ctx: ScheduleContext) -> torch.Tensor:
    stride = max(len(ms.sigmas) // n, 1)
    picked = [float(ms.sigmas[i]) for i in range(1, len(ms.sigmas), stride)]
    return torch.tensor(picked[::-1] + [0.0], dtype=torch.float32)


def beta(n, ms: ModelSigmas, ctx: ScheduleContext) -> torch.Tensor:
    from scipy import stats

    lo, hi = float(ms.sigma_min), float(ms.sigma_max)
    qs = [stats.beta.ppf(q, ctx.beta_alpha, ctx.beta_beta) for q in 1 - np.linspace(0, 1, n)]
    return torch.tensor([lo + q * (hi - lo) for q in qs] + [0.0], dtype=torch.float32)


SCHEDULES: dict[str, Callable[[int, ModelSigmas, ScheduleContext], torch.Tensor]] = {
    "uniform": uniform,
    "karras": karras,
    "exponential": exponential,
    "polyexponential": polyexponential,
    "sgm_uniform": sgm_uniform,
    "kl_optimal": kl_optimal,
    "align_your_steps": align_your_steps,
    "simple": simple,
    "normal": normal,
    "ddim": ddim_spacing,
    "beta": beta,
}


def discard_penultimate(sigmas: torch.Tensor) -> torch.Tensor:
    """A1111's 'discard next to last sigma' (DPM2, DPM2 a, DPM++ 3M SDE): schedule made for one more
    step, then the second-to-last level dropped."""
    return torch.cat([sigmas[:-2], sigmas[-1:]])
