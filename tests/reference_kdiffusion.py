"""Test-side reference for k-diffusion's samplers and AUTOMATIC1111 (v1.10) schedules.

This module re-implements, from their published definitions, the sigma machinery of
k-diffusion (``k_diffusion/external.py``: DiscreteSchedule, CompVisDenoiser,
CompVisVDenoiser), its samplers (``k_diffusion/sampling.py``, the revision A1111 v1.10
uses), A1111's schedule functions (``modules/sd_schedulers.py``), A1111's sigma
selection (``modules/sd_samplers_kdiffusion.py``: get_sigmas / create_noise_sampler),
the Restart sampler (``modules/sd_samplers_extra.py``) and the LCM denoiser + sampler
(``modules/sd_samplers_lcm.py``).  Nothing here imports the engine; pure torch (plus
scipy for LMS / Beta and torchsde for the Brownian noise).  Clarity is preferred to speed.

Conventions
-----------
* ``eps_model(x_in, t)`` is supplied by the tests: it returns the guided (CFG already
  applied) model output for the scaled input ``x_in = x * c_in``; ``t`` is a float tensor
  of shape [batch] holding the (fractional) DDPM timestep.
* A *model* in the sampler signatures is the denoiser ``model(x, sigma) -> x0`` with
  ``sigma`` of shape [batch] (see ``denoiser`` and ``lcm_denoiser``).
* ``randn_like()`` is a zero-argument callable returning fresh noise shaped like x.  Each
  sampler calls it exactly where k-diffusion calls ``torch.randn_like`` (which A1111
  redirects to its per-image generators), so the number and order of draws match.
  ``noise_sampler(sigma, sigma_next)`` overrides the noise of the samplers that take one
  (k-diffusion's ``default_noise_sampler`` is ``randn_like`` ignoring the sigmas).
* Samplers return the final x.  The initial x is the caller's job (A1111:
  ``noise * sigmas[0]``; dpm_fast / dpm_adaptive get the same x, scaled by sigmas[0]).
* Everything is float32 like the originals; float64 only where the originals use it.

Facts worth knowing (all reproduced here)
-----------------------------------------
* sample_euler / sample_heun / sample_dpm_2 draw one ``randn_like`` every step even with
  s_churn = 0 (the draw is only *used* when gamma > 0).
* Ancestral samplers (euler_ancestral, dpmpp_2s_ancestral) draw noise only when
  sigma_next > 0; dpm_2_ancestral only when sigma_down != 0 (same thing for eta > 0).
* dpm_fast draws one noise per (super)step and dpm_adaptive one per accepted step, even
  when eta = 0 (the noise is then multiplied by 0).  A1111 passes eta = 1.0
  (opts.eta_ancestral) to every sampler with an ``eta`` parameter, including dpm_fast and
  dpm_adaptive, whose k-diffusion default is eta = 0.
* A1111's kl_optimal schedule ends with sigma_min, not 0; ddim gives
  ``len(range(1, 1000, 1000 // n))`` sigmas (more than n for e.g. n = 7); align_your_steps
  ignores the model's sigma range and with n = 1 returns [0.029, 0].
* Restart (steps >= 20) throws the given schedule away except its first and
  second-to-last sigma and builds a Karras schedule of ``steps - restart_steps *
  restart_times`` steps, then inserts the restart segments.
* LMS integrates its coefficients with scipy quad; the sigmas are float32 but (as with the
  numpy 1.x that A1111 ran on) the integrand is evaluated in float64.  Under numpy 2 the
  original evaluates it in float32; outputs then differ by ~1e-6.
* k-diffusion's dpmpp_2m_sde / dpmpp_3m_sde raise UnboundLocalError when their *first*
  step goes to sigma = 0 (1 step; also 3M SDE at 1 step despite discard_penultimate).
  Here that step simply returns the prediction, as their final step does.
"""
from __future__ import annotations

import math

import numpy as np
import torch


# --------------------------------------------------------------------------------------
# Noise schedule of the model
# --------------------------------------------------------------------------------------

def alphas_cumprod_sd(beta_start=0.00085, beta_end=0.012, n=1000):
    """LDM's "linear" (a.k.a. scaled_linear) alphas_cumprod, as the original LDM code builds it.

    betas = linspace(sqrt(start), sqrt(end), n) ** 2 in float64, cumulative product of
    1 - betas in float64 (numpy), stored as float32.
    """
    betas = torch.linspace(beta_start ** 0.5, beta_end ** 0.5, n, dtype=torch.float64) ** 2
    alphas = 1.0 - betas.numpy()
    return torch.tensor(np.cumprod(alphas, axis=0), dtype=torch.float32)


def _append_zero(sigmas):
    return torch.cat([sigmas, sigmas.new_zeros([1])])


def _broadcast(sigma, x):
    """Give a [batch] (or 0-d) sigma trailing singleton dims so it broadcasts against x."""
    sigma = torch.as_tensor(sigma)
    return sigma.reshape(sigma.shape + (1,) * (x.ndim - sigma.ndim))


class DiscreteSchedule:
    """k-diffusion's DiscreteSchedule for a DDPM model (non-quantized).

    ``sigmas[t] = sqrt((1 - alphas_cumprod[t]) / alphas_cumprod[t])`` for t = 0..N-1
    (ascending).  Continuous timesteps interpolate linearly in log-sigma.
    """

    def __init__(self, alphas_cumprod):
        alphas_cumprod = torch.as_tensor(alphas_cumprod, dtype=torch.float32)
        self.sigmas = ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5
        self.log_sigmas = self.sigmas.log()

    @property
    def sigma_min(self):
        return self.sigmas[0]

    @property
    def sigma_max(self):
        return self.sigmas[-1]

    def sigma_to_t(self, sigma):
        """Fractional timestep of each sigma (tensor of any shape), log-sigma interpolation."""
        sigma = torch.as_tensor(sigma, dtype=self.sigmas.dtype)
        log_sigma = sigma.log()
        flat = log_sigma.reshape(1, -1)
        n = self.log_sigmas.shape[0]
        # index of the last table entry at or below log_sigma, kept inside [0, n - 2]
        count_below = (flat - self.log_sigmas[:, None]).ge(0).sum(dim=0)
        low_idx = (count_below - 1).clamp(min=0, max=n - 2)
        high_idx = low_idx + 1
        low, high = self.log_sigmas[low_idx], self.log_sigmas[high_idx]
        w = ((low - flat[0]) / (low - high)).clamp(0, 1)
        t = (1 - w) * low_idx + w * high_idx
        return t.view(sigma.shape)

    def t_to_sigma(self, t):
        t = torch.as_tensor(t).float()
        low_idx, high_idx, w = t.floor().long(), t.ceil().long(), t.frac()
        log_sigma = (1 - w) * self.log_sigmas[low_idx] + w * self.log_sigmas[high_idx]
        return log_sigma.exp()

    def get_sigmas(self, n):
        """n sigmas at t = linspace(N-1, 0, n), then a final 0 (k-diffusion / A1111 "Uniform")."""
        t = torch.linspace(len(self.sigmas) - 1, 0, n)
        return _append_zero(self.t_to_sigma(t))


class Denoiser:
    """k-diffusion's CompVisDenoiser (prediction='eps') / CompVisVDenoiser (prediction='v')."""

    def __init__(self, eps_model, schedule, prediction="eps"):
        if prediction not in ("eps", "v"):
            raise ValueError(f"unknown prediction type {prediction!r}")
        self.eps_model = eps_model
        self.schedule = schedule
        self.prediction = prediction

    @property
    def sigmas(self):
        return self.schedule.sigmas

    def __call__(self, x, sigma):
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        if sigma.ndim == 0:
            sigma = sigma.expand(x.shape[0])
        s = _broadcast(sigma, x)
        c_in = 1 / (s ** 2 + 1) ** 0.5
        t = self.schedule.sigma_to_t(sigma)
        out = self.eps_model(x * c_in, t)
        if self.prediction == "eps":
            return x + out * (-s)
        c_skip = 1 / (s ** 2 + 1)
        c_out = -s / (s ** 2 + 1) ** 0.5
        return out * c_out + x * c_skip


def denoiser(eps_model, schedule, prediction="eps"):
    """Wrap ``eps_model(x_in, t)`` into a k-diffusion denoiser ``model(x, sigma) -> x0``."""
    return Denoiser(eps_model, schedule, prediction)


# --------------------------------------------------------------------------------------
# LCM (A1111 sd_samplers_lcm.py)
# --------------------------------------------------------------------------------------

class LCMDenoiser(DiscreteSchedule):
    """A1111's LCMCompVisDenoiser.

    The schedule keeps only LCM's 50 "original" timesteps 19, 39, ..., 999 (every 20th).
    ``sigma_to_t`` is *quantized*: nearest of the 50 log-sigmas, mapped back to the DDPM
    timestep ``20 * k + 19``.  ``t_to_sigma`` maps a DDPM timestep to the 50-entry table
    and interpolates there.  The output goes through the consistency-model boundary
    scalings with sigma_data = 0.5 and timestep scaling 10.
    """

    total_timesteps = 1000
    original_timesteps = 50

    def __init__(self, eps_model, alphas_cumprod):
        alphas_cumprod = torch.as_tensor(alphas_cumprod, dtype=torch.float32)
        self.skip_steps = self.total_timesteps // self.original_timesteps
        kept = torch.zeros(self.original_timesteps, dtype=torch.float32)
        for k in range(self.original_timesteps):
            kept[k] = alphas_cumprod[self.skip_steps - 1 + k * self.skip_steps]
        super().__init__(kept)
        self.eps_model = eps_model

    def sigma_to_t(self, sigma):
        sigma = torch.as_tensor(sigma, dtype=self.sigmas.dtype)
        distance = (sigma.log().reshape(1, -1) - self.log_sigmas[:, None]).abs()
        nearest = distance.argmin(dim=0).view(sigma.shape)
        return nearest * self.skip_steps + (self.skip_steps - 1)   # int64

    def t_to_sigma(self, t):
        t = torch.as_tensor(t)
        index = ((t - (self.skip_steps - 1)) / self.skip_steps).float()
        index = torch.clamp(index, min=0, max=len(self.sigmas) - 1)
        return super().t_to_sigma(index)

    def get_sigmas(self, n):
        start = self.sigma_to_t(self.sigma_max)
        end = self.sigma_to_t(self.sigma_min)
        t = torch.linspace(start, end, n)
        return _append_zero(self.t_to_sigma(t))

    def __call__(self, x, sigma):
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        if sigma.ndim == 0:
            sigma = sigma.expand(x.shape[0])
        s = _broadcast(sigma, x)
        c_in = 1 / (s ** 2 + 1) ** 0.5
        timestep = self.sigma_to_t(sigma)
        eps = self.eps_model(x * c_in, timestep.float())   # whole-number timesteps
        denoised = x + eps * (-s)
        # consistency-model boundary condition
        sigma_data = 0.5
        scaled_t = _broadcast(timestep, x) * 10.0
        c_skip = sigma_data ** 2 / (scaled_t ** 2 + sigma_data ** 2)
        c_out = scaled_t / (scaled_t ** 2 + sigma_data ** 2) ** 0.5
        return c_out * denoised + c_skip * x


def lcm_denoiser(eps_model, alphas_cumprod):
    """A1111's LCM denoiser; it is also the schedule (``.get_sigmas(n)``, sigma_min/max)."""
    return LCMDenoiser(eps_model, alphas_cumprod)


# --------------------------------------------------------------------------------------
# Schedules (A1111 modules/sd_schedulers.py + k-diffusion get_sigmas_*)
# Each takes (n, schedule) and uses the model's sigma range the way A1111's get_sigmas
# passes it: sigma_min = schedule.sigmas[0].item(), sigma_max = schedule.sigmas[-1].item().
# --------------------------------------------------------------------------------------

def _model_range(schedule):
    return schedule.sigmas[0].item(), schedule.sigmas[-1].item()


def _float_list_to_sigmas(values):
    return torch.tensor([float(v) for v in values], dtype=torch.float32)


def schedule_uniform(n, schedule):
    return schedule.get_sigmas(n)


def schedule_karras(n, schedule, rho=7.0):
    sigma_min, sigma_max = _model_range(schedule)
    ramp = torch.linspace(0, 1, n)
    min_inv_rho = sigma_min ** (1 / rho)
    max_inv_rho = sigma_max ** (1 / rho)
    return _append_zero((max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho)


def get_sigmas_karras(n, sigma_min, sigma_max, rho=7.0):
    """k-diffusion's Karras schedule for explicit float endpoints (used by Restart)."""
    ramp = torch.linspace(0, 1, n)
    min_inv_rho = sigma_min ** (1 / rho)
    max_inv_rho = sigma_max ** (1 / rho)
    return _append_zero((max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho)


def schedule_exponential(n, schedule):
    sigma_min, sigma_max = _model_range(schedule)
    return _append_zero(torch.linspace(math.log(sigma_max), math.log(sigma_min), n).exp())


def schedule_polyexponential(n, schedule, rho=1.0):
    sigma_min, sigma_max = _model_range(schedule)
    ramp = torch.linspace(1, 0, n) ** rho
    log_min, log_max = math.log(sigma_min), math.log(sigma_max)
    return _append_zero(torch.exp(ramp * (log_max - log_min) + log_min))


def schedule_sgm_uniform(n, schedule):
    sigma_min, sigma_max = _model_range(schedule)
    t_start = schedule.sigma_to_t(torch.tensor(sigma_max))
    t_end = schedule.sigma_to_t(torch.tensor(sigma_min))
    ts = torch.linspace(t_start, t_end, n + 1)[:-1]
    return _float_list_to_sigmas([schedule.t_to_sigma(t) for t in ts] + [0.0])


def schedule_kl_optimal(n, schedule):
    """A1111's KL-optimal schedule: n + 1 sigmas, the last one is sigma_min (no 0)."""
    sigma_min, sigma_max = _model_range(schedule)
    angle_min = torch.arctan(torch.tensor(sigma_min))
    angle_max = torch.arctan(torch.tensor(sigma_max))
    frac = torch.arange(n + 1) / n
    return torch.tan(frac * angle_min + (1.0 - frac) * angle_max)


AYS_SIGMAS_SD15 = [14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029]
AYS_SIGMAS_SDXL = [14.615, 6.315, 3.771, 2.181, 1.342, 0.862, 0.555, 0.380, 0.234, 0.113, 0.029]


def schedule_align_your_steps(n, schedule=None, sdxl=False):
    """NVIDIA's Align Your Steps tables (the model's own sigma range is not used).

    With n equal to the table length (11) the table is used as is; otherwise it is
    resampled to n points by linear interpolation of log-sigma over an even grid, in
    float64.  A final 0 is appended.
    """
    table = list(AYS_SIGMAS_SDXL if sdxl else AYS_SIGMAS_SD15)
    if n == len(table):
        return _float_list_to_sigmas(table + [0.0])
    grid = np.linspace(0, 1, len(table))
    log_ascending = np.log(table[::-1])
    resampled = np.exp(np.interp(np.linspace(0, 1, n), grid, log_ascending))[::-1]
    return _float_list_to_sigmas(list(resampled) + [0.0])


def schedule_simple(n, schedule):
    stride = len(schedule.sigmas) / n
    values = [float(schedule.sigmas[-(1 + int(k * stride))]) for k in range(n)]
    return _float_list_to_sigmas(values + [0.0])


def schedule_normal(n, schedule):
    sigma_min, sigma_max = _model_range(schedule)
    t_start = schedule.sigma_to_t(torch.tensor(sigma_max))
    t_end = schedule.sigma_to_t(torch.tensor(sigma_min))
    ts = torch.linspace(t_start, t_end, n)
    return _float_list_to_sigmas([schedule.t_to_sigma(t) for t in ts] + [0.0])


def schedule_ddim(n, schedule):
    """Every (N // n)-th table sigma starting at index 1, descending, then 0.

    The count is len(range(1, N, N // n)), which exceeds n when N // n does not divide N
    evenly enough (n = 7 -> 8 sigmas + 0).
    """
    stride = max(len(schedule.sigmas) // n, 1)
    values = [float(schedule.sigmas[i]) for i in range(1, len(schedule.sigmas), stride)]
    return _float_list_to_sigmas(values[::-1] + [0.0])


def schedule_beta(n, schedule, alpha=0.6, beta=0.6):
    """Beta-distribution schedule (A1111 defaults alpha = beta = 0.6), float64 then float32."""
    from scipy import stats

    sigma_min, sigma_max = _model_range(schedule)
    quantiles = [stats.beta.ppf(q, alpha, beta) for q in 1 - np.linspace(0, 1, n)]
    values = [sigma_min + q * (sigma_max - sigma_min) for q in quantiles]
    return _float_list_to_sigmas(values + [0.0])


SCHEDULES = {
    "uniform": schedule_uniform,
    "karras": schedule_karras,
    "exponential": schedule_exponential,
    "polyexponential": schedule_polyexponential,
    "sgm_uniform": schedule_sgm_uniform,
    "kl_optimal": schedule_kl_optimal,
    "align_your_steps": schedule_align_your_steps,
    "simple": schedule_simple,
    "normal": schedule_normal,
    "ddim": schedule_ddim,
    "beta": schedule_beta,
}


def discard_penultimate(sigmas):
    """Drop the second-to-last sigma (A1111's discard_next_to_last_sigma).

    A1111 computes the schedule for steps + 1 and then drops it, so call this on
    ``schedule_X(steps + 1, ...)``.
    """
    return torch.cat([sigmas[:-2], sigmas[-1:]])


def a1111_sigmas(name, steps, schedule, discard_next_to_last_sigma=False, **kwargs):
    """A1111's KDiffusionSampler.get_sigmas for a scheduler name ('automatic' = uniform).

    ``schedule`` is the model wrapper A1111 passes as inner_model (a DiscreteSchedule, or
    the LCMDenoiser for the LCM sampler).  Extra kwargs go to the schedule function
    (e.g. ``sdxl=True`` for align_your_steps).
    """
    if discard_next_to_last_sigma:
        steps += 1
    function = schedule_uniform if name in (None, "automatic", "Automatic") else SCHEDULES[name]
    sigmas = function(steps, schedule, **kwargs)
    if discard_next_to_last_sigma:
        sigmas = discard_penultimate(sigmas)
    return sigmas


# --------------------------------------------------------------------------------------
# Sampler helpers
# --------------------------------------------------------------------------------------

def to_d(x, sigma, denoised):
    """Karras ODE derivative dx/dsigma."""
    return (x - denoised) / _broadcast(sigma, x)


def get_ancestral_step(sigma_from, sigma_to, eta=1.0):
    """(sigma_down, sigma_up) of an ancestral step; sigma_up is capped at sigma_to."""
    if not eta:
        return sigma_to, 0.0
    sigma_up = min(sigma_to, eta * (sigma_to ** 2 * (sigma_from ** 2 - sigma_to ** 2) / sigma_from ** 2) ** 0.5)
    sigma_down = (sigma_to ** 2 - sigma_up ** 2) ** 0.5
    return sigma_down, sigma_up


def _noise_sources(x, randn_like, noise_sampler):
    """(randn(), noise_sampler(sigma, sigma_next)) with k-diffusion's defaults."""
    if randn_like is None:
        def randn_like():
            return torch.randn_like(x)
    if noise_sampler is None:
        def noise_sampler(sigma, sigma_next):
            return randn_like()
    return randn_like, noise_sampler


def _churn(x, sigma, steps, randn, s_churn, s_tmin, s_tmax, s_noise):
    """Karras "churn": optionally raise the noise level to sigma_hat.  Always draws noise."""
    gamma = min(s_churn / steps, 2 ** 0.5 - 1) if s_tmin <= sigma <= s_tmax else 0.0
    eps = randn() * s_noise
    sigma_hat = sigma * (gamma + 1)
    if gamma > 0:
        x = x + eps * (sigma_hat ** 2 - sigma ** 2) ** 0.5
    return x, sigma_hat


def _report(callback, x, i, sigma, sigma_hat, denoised):
    if callback is not None:
        callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma_hat, "denoised": denoised})


class BrownianNoise:
    """k-diffusion's BrownianTreeNoiseSampler as A1111's create_noise_sampler builds it.

    One torchsde.BrownianTree per image (entropy = that image's seed), built on the CPU
    over [sigma_min, sigma_max].  A1111 passes sigma_min = smallest non-zero sigma of the
    schedule and sigma_max = its largest (see ``for_sigmas``).  With a single int seed one
    tree covers the whole batch.  Calling it with (sigma, sigma_next) returns the Brownian
    increment between them divided by sqrt(|sigma_next - sigma|): unit-variance noise.
    """

    def __init__(self, x, sigma_min, sigma_max, seeds):
        import torchsde

        self.device = x.device
        t0, t1 = torch.as_tensor(sigma_min), torch.as_tensor(sigma_max)
        t0, t1, self.sign = self._ordered(t0, t1)
        w0 = torch.zeros_like(x)
        try:
            count = len(seeds)
        except TypeError:
            seeds, self.batched = [seeds], False
        else:
            assert count == x.shape[0], "one seed per image"
            w0, self.batched = w0[0], True
        self.trees = [torchsde.BrownianTree(t0.cpu(), w0.cpu(), t1.cpu(), entropy=seed) for seed in seeds]

    @classmethod
    def for_sigmas(cls, x, sigmas, seeds):
        return cls(x, sigmas[sigmas > 0].min(), sigmas.max(), seeds)

    @staticmethod
    def _ordered(a, b):
        return (a, b, 1) if a < b else (b, a, -1)

    def __call__(self, sigma, sigma_next):
        a, b = torch.as_tensor(sigma), torch.as_tensor(sigma_next)
        lo, hi, sign = self._ordered(a, b)
        increments = [tree(lo.cpu().float(), hi.cpu().float()).to(lo.dtype) for tree in self.trees]
        w = torch.stack(increments) * (self.sign * sign)
        if not self.batched:
            w = w[0]
        return w.to(self.device) / (b - a).abs().sqrt().to(self.device)


def _brownian_default(x, sigmas, noise_sampler):
    """k-diffusion's fallback for the SDE samplers: one tree with a seed from torch's RNG."""
    if noise_sampler is not None:
        return noise_sampler
    seed = torch.randint(0, 2 ** 63 - 1, []).item()
    return BrownianNoise.for_sigmas(x, sigmas, seed)


# --------------------------------------------------------------------------------------
# Samplers (k-diffusion k_diffusion/sampling.py)
# --------------------------------------------------------------------------------------

@torch.no_grad()
def sample_euler(model, x, sigmas, randn_like=None, noise_sampler=None, *, s_churn=0.0, s_tmin=0.0,
                 s_tmax=float("inf"), s_noise=1.0, callback=None):
    """Karras et al. (2022) Algorithm 2 with Euler steps."""
    randn, _ = _noise_sources(x, randn_like, noise_sampler)
    ones = x.new_ones([x.shape[0]])
    steps = len(sigmas) - 1
    for i in range(steps):
        x, sigma_hat = _churn(x, sigmas[i], steps, randn, s_churn, s_tmin, s_tmax, s_noise)
        denoised = model(x, sigma_hat * ones)
        d = to_d(x, sigma_hat, denoised)
        _report(callback, x, i, sigmas[i], sigma_hat, denoised)
        x = x + d * (sigmas[i + 1] - sigma_hat)
    return x


@torch.no_grad()
def sample_euler_ancestral(model, x, sigmas, randn_like=None, noise_sampler=None, *, eta=1.0, s_noise=1.0,
                           callback=None):
    """Euler step down to sigma_down, then fresh noise of size sigma_up (if sigma_next > 0)."""
    _, noise_sampler = _noise_sources(x, randn_like, noise_sampler)
    ones = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma * ones)
        sigma_down, sigma_up = get_ancestral_step(sigma, sigma_next, eta)
        _report(callback, x, i, sigma, sigma, denoised)
        d = to_d(x, sigma, denoised)
        x = x + d * (sigma_down - sigma)
        if sigma_next > 0:
            x = x + noise_sampler(sigma, sigma_next) * s_noise * sigma_up
    return x


@torch.no_grad()
def sample_heun(model, x, sigmas, randn_like=None, noise_sampler=None, *, s_churn=0.0, s_tmin=0.0,
                s_tmax=float("inf"), s_noise=1.0, callback=None):
    """Karras et al. (2022) Algorithm 2: Heun steps, a plain Euler step onto sigma = 0."""
    randn, _ = _noise_sources(x, randn_like, noise_sampler)
    ones = x.new_ones([x.shape[0]])
    steps = len(sigmas) - 1
    for i in range(steps):
        sigma_next = sigmas[i + 1]
        x, sigma_hat = _churn(x, sigmas[i], steps, randn, s_churn, s_tmin, s_tmax, s_noise)
        denoised = model(x, sigma_hat * ones)
        d = to_d(x, sigma_hat, denoised)
        _report(callback, x, i, sigmas[i], sigma_hat, denoised)
        dt = sigma_next - sigma_hat
        if sigma_next == 0:
            x = x + d * dt
        else:
            x_euler = x + d * dt
            denoised_2 = model(x_euler, sigma_next * ones)
            d_2 = to_d(x_euler, sigma_next, denoised_2)
            x = x + (d + d_2) / 2 * dt
    return x


@torch.no_grad()
def sample_dpm_2(model, x, sigmas, randn_like=None, noise_sampler=None, *, s_churn=0.0, s_tmin=0.0,
                 s_tmax=float("inf"), s_noise=1.0, callback=None):
    """DPM-Solver-2 style midpoint steps (midpoint = geometric mean of the two sigmas)."""
    randn, _ = _noise_sources(x, randn_like, noise_sampler)
    ones = x.new_ones([x.shape[0]])
    steps = len(sigmas) - 1
    for i in range(steps):
        sigma_next = sigmas[i + 1]
        x, sigma_hat = _churn(x, sigmas[i], steps, randn, s_churn, s_tmin, s_tmax, s_noise)
        denoised = model(x, sigma_hat * ones)
        d = to_d(x, sigma_hat, denoised)
        _report(callback, x, i, sigmas[i], sigma_hat, denoised)
        if sigma_next == 0:
            x = x + d * (sigma_next - sigma_hat)
        else:
            sigma_mid = sigma_hat.log().lerp(sigma_next.log(), 0.5).exp()
            x_mid = x + d * (sigma_mid - sigma_hat)
            denoised_mid = model(x_mid, sigma_mid * ones)
            d_mid = to_d(x_mid, sigma_mid, denoised_mid)
            x = x + d_mid * (sigma_next - sigma_hat)
    return x


@torch.no_grad()
def sample_dpm_2_ancestral(model, x, sigmas, randn_like=None, noise_sampler=None, *, eta=1.0, s_noise=1.0,
                           callback=None):
    """DPM-Solver-2 step down to sigma_down, then noise sigma_up (only if sigma_down != 0)."""
    _, noise_sampler = _noise_sources(x, randn_like, noise_sampler)
    ones = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma * ones)
        sigma_down, sigma_up = get_ancestral_step(sigma, sigma_next, eta)
        _report(callback, x, i, sigma, sigma, denoised)
        d = to_d(x, sigma, denoised)
        if sigma_down == 0:
            x = x + d * (sigma_down - sigma)
        else:
            sigma_mid = sigma.log().lerp(sigma_down.log(), 0.5).exp()
            x_mid = x + d * (sigma_mid - sigma)
            denoised_mid = model(x_mid, sigma_mid * ones)
            d_mid = to_d(x_mid, sigma_mid, denoised_mid)
            x = x + d_mid * (sigma_down - sigma)
            x = x + noise_sampler(sigma, sigma_next) * s_noise * sigma_up
    return x


def linear_multistep_coeff(order, t, i, j):
    """Integral over [t[i], t[i+1]] of the Lagrange basis polynomial of node t[i-j]."""
    from scipy import integrate

    if order - 1 > i:
        raise ValueError(f"Order {order} too high for step {i}")

    def basis(tau):
        product = 1.0
        for k in range(order):
            if k != j:
                product *= (tau - t[i - k]) / (t[i - j] - t[i - k])
        return product

    return integrate.quad(basis, t[i], t[i + 1], epsrel=1e-4)[0]


@torch.no_grad()
def sample_lms(model, x, sigmas, randn_like=None, noise_sampler=None, *, order=4, callback=None):
    """Linear multistep (Adams-Bashforth in sigma) of up to `order` past derivatives."""
    ones = x.new_ones([x.shape[0]])
    # float32 sigmas, float64 arithmetic in the integrand (numpy 1.x promotion)
    nodes = sigmas.detach().cpu().numpy().astype(np.float64)
    history = []
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * ones)
        history.append(to_d(x, sigmas[i], denoised))
        if len(history) > order:
            history.pop(0)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        current_order = min(i + 1, order)
        coeffs = [linear_multistep_coeff(current_order, nodes, i, j) for j in range(current_order)]
        x = x + sum(c * d for c, d in zip(coeffs, reversed(history)))
    return x


class _DPMSolver:
    """k-diffusion's DPMSolver (Lu et al. 2022) in t = -log(sigma), with an eps cache per step."""

    def __init__(self, model, callback=None):
        self.model = model
        self.callback = callback
        self.nfe = 0

    @staticmethod
    def t(sigma):
        return -sigma.log()

    @staticmethod
    def sigma(t):
        return t.neg().exp()

    def eps(self, cache, key, x, t):
        if key not in cache:
            sigma = self.sigma(t) * x.new_ones([x.shape[0]])
            cache[key] = (x - self.model(x, sigma)) / self.sigma(t)
            self.nfe += 1
        return cache[key]

    def step_1(self, x, t, t_next, cache):
        h = t_next - t
        eps = self.eps(cache, "eps", x, t)
        return x - self.sigma(t_next) * h.expm1() * eps

    def step_2(self, x, t, t_next, cache, r1=1 / 2):
        h = t_next - t
        eps = self.eps(cache, "eps", x, t)
        s1 = t + r1 * h
        u1 = x - self.sigma(s1) * (r1 * h).expm1() * eps
        eps_r1 = self.eps(cache, "eps_r1", u1, s1)
        return (x - self.sigma(t_next) * h.expm1() * eps
                - self.sigma(t_next) / (2 * r1) * h.expm1() * (eps_r1 - eps))

    def step_3(self, x, t, t_next, cache, r1=1 / 3, r2=2 / 3):
        h = t_next - t
        eps = self.eps(cache, "eps", x, t)
        s1 = t + r1 * h
        s2 = t + r2 * h
        u1 = x - self.sigma(s1) * (r1 * h).expm1() * eps
        eps_r1 = self.eps(cache, "eps_r1", u1, s1)
        u2 = (x - self.sigma(s2) * (r2 * h).expm1() * eps
              - self.sigma(s2) * (r2 / r1) * ((r2 * h).expm1() / (r2 * h) - 1) * (eps_r1 - eps))
        eps_r2 = self.eps(cache, "eps_r2", u2, s2)
        return (x - self.sigma(t_next) * h.expm1() * eps
                - self.sigma(t_next) / r2 * (h.expm1() / h - 1) * (eps_r2 - eps))

    def ancestral_target(self, t, t_next, t_end, eta):
        """(t to solve to, noise std to add afterwards) for an ancestral step t -> t_next."""
        if not eta:
            return t_next, 0.0
        sigma_down, _ = get_ancestral_step(self.sigma(t), self.sigma(t_next), eta)
        t_target = torch.minimum(t_end, self.t(sigma_down))
        sigma_up = (self.sigma(t_next) ** 2 - self.sigma(t_target) ** 2) ** 0.5
        return t_target, sigma_up

    def fast(self, x, t_start, t_end, nfe, eta, s_noise, noise_sampler):
        """Fixed steps: floor(nfe / 3) + 1 equal steps in t, third order except the tail."""
        if not t_end > t_start and eta:
            raise ValueError("eta must be 0 for reverse sampling")
        m = math.floor(nfe / 3) + 1
        ts = torch.linspace(t_start, t_end, m + 1, device=x.device)
        if nfe % 3 == 0:
            orders = [3] * (m - 2) + [2, 1]
        else:
            orders = [3] * (m - 1) + [nfe % 3]
        for i, order in enumerate(orders):
            cache = {}
            t, t_next = ts[i], ts[i + 1]
            t_target, sigma_up = self.ancestral_target(t, t_next, t_end, eta)
            eps = self.eps(cache, "eps", x, t)
            if self.callback is not None:
                self.callback({"x": x, "i": i, "sigma": self.sigma(t), "sigma_hat": self.sigma(t),
                               "denoised": x - self.sigma(t) * eps})
            step = {1: self.step_1, 2: self.step_2, 3: self.step_3}[order]
            x = step(x, t, t_target, cache)
            x = x + sigma_up * s_noise * noise_sampler(self.sigma(t), self.sigma(t_next))
        return x

    def adaptive(self, x, t_start, t_end, order, rtol, atol, h_init, pcoeff, icoeff, dcoeff, accept_safety,
                 eta, s_noise, noise_sampler):
        """Embedded 1/2 or 2/3 pair with a PID step-size controller on the mixed error norm."""
        if order not in {2, 3}:
            raise ValueError("order should be 2 or 3")
        forward = t_end > t_start
        if not forward and eta:
            raise ValueError("eta must be 0 for reverse sampling")
        h_init = abs(h_init) * (1 if forward else -1)
        atol = torch.tensor(atol)
        rtol = torch.tensor(rtol)
        s = t_start
        x_prev = x
        pid = PIDStepSizeController(h_init, pcoeff, icoeff, dcoeff, 1.5 if eta else order, accept_safety)
        info = {"steps": 0, "nfe": 0, "n_accept": 0, "n_reject": 0}

        def unfinished():
            return s < t_end - 1e-5 if forward else s > t_end + 1e-5

        while unfinished():
            cache = {}
            t = torch.minimum(t_end, s + pid.h) if forward else torch.maximum(t_end, s + pid.h)
            t_target, sigma_up = self.ancestral_target(s, t, t_end, eta)
            eps = self.eps(cache, "eps", x, s)
            denoised = x - self.sigma(s) * eps
            if order == 2:
                x_low = self.step_1(x, s, t_target, cache)
                x_high = self.step_2(x, s, t_target, cache)
            else:
                x_low = self.step_2(x, s, t_target, cache, r1=1 / 3)
                x_high = self.step_3(x, s, t_target, cache)
            delta = torch.maximum(atol, rtol * torch.maximum(x_low.abs(), x_prev.abs()))
            error = torch.linalg.norm((x_low - x_high) / delta) / x.numel() ** 0.5
            accept = pid.propose_step(error)
            if accept:
                x_prev = x_low
                x = x_high + sigma_up * s_noise * noise_sampler(self.sigma(s), self.sigma(t))
                s = t
                info["n_accept"] += 1
            else:
                info["n_reject"] += 1
            info["nfe"] += order
            info["steps"] += 1
            if self.callback is not None:
                self.callback({"x": x, "i": info["steps"] - 1, "sigma": self.sigma(s), "sigma_hat": self.sigma(s),
                               "denoised": denoised, "error": error, "h": pid.h, **info})
        return x, info


class PIDStepSizeController:
    """k-diffusion's PID controller on the inverse error, with an arctan limiter."""

    def __init__(self, h, pcoeff, icoeff, dcoeff, order=1, accept_safety=0.81, eps=1e-8):
        self.h = h
        self.b1 = (pcoeff + icoeff + dcoeff) / order
        self.b2 = -(pcoeff + 2 * dcoeff) / order
        self.b3 = dcoeff / order
        self.accept_safety = accept_safety
        self.eps = eps
        self.errs = []

    @staticmethod
    def limiter(factor):
        return 1 + math.atan(factor - 1)

    def propose_step(self, error):
        inv_error = 1 / (float(error) + self.eps)
        if not self.errs:
            self.errs = [inv_error, inv_error, inv_error]
        self.errs[0] = inv_error
        factor = self.errs[0] ** self.b1 * self.errs[1] ** self.b2 * self.errs[2] ** self.b3
        factor = self.limiter(factor)
        accept = factor >= self.accept_safety
        if accept:
            self.errs[2] = self.errs[1]
            self.errs[1] = self.errs[0]
        self.h *= factor
        return accept


@torch.no_grad()
def sample_dpm_fast(model, x, sigma_min, sigma_max, n, randn_like=None, noise_sampler=None, *, eta=0.0,
                    s_noise=1.0, callback=None):
    """DPM-Solver-fast: n model evaluations from sigma_max to sigma_min (no final denoise to 0)."""
    if sigma_min <= 0 or sigma_max <= 0:
        raise ValueError("sigma_min and sigma_max must not be 0")
    _, noise_sampler = _noise_sources(x, randn_like, noise_sampler)
    solver = _DPMSolver(model, callback)
    t_start, t_end = solver.t(torch.as_tensor(sigma_max)), solver.t(torch.as_tensor(sigma_min))
    return solver.fast(x, t_start, t_end, n, eta, s_noise, noise_sampler)


@torch.no_grad()
def sample_dpm_adaptive(model, x, sigma_min, sigma_max, randn_like=None, noise_sampler=None, *, order=3,
                        rtol=0.05, atol=0.0078, h_init=0.05, pcoeff=0.0, icoeff=1.0, dcoeff=0.0,
                        accept_safety=0.81, eta=0.0, s_noise=1.0, return_info=False, callback=None):
    """DPM-Solver-12 / 23 with adaptive step size from sigma_max to sigma_min."""
    if sigma_min <= 0 or sigma_max <= 0:
        raise ValueError("sigma_min and sigma_max must not be 0")
    _, noise_sampler = _noise_sources(x, randn_like, noise_sampler)
    solver = _DPMSolver(model, callback)
    t_start, t_end = solver.t(torch.as_tensor(sigma_max)), solver.t(torch.as_tensor(sigma_min))
    x, info = solver.adaptive(x, t_start, t_end, order, rtol, atol, h_init, pcoeff, icoeff, dcoeff,
                              accept_safety, eta, s_noise, noise_sampler)
    return (x, info) if return_info else x


def _t_of(sigma):
    return sigma.log().neg()


def _sigma_of(t):
    return t.neg().exp()


@torch.no_grad()
def sample_dpmpp_2s_ancestral(model, x, sigmas, randn_like=None, noise_sampler=None, *, eta=1.0, s_noise=1.0,
                              callback=None):
    """DPM-Solver++(2S) single-step second order down to sigma_down, then ancestral noise."""
    _, noise_sampler = _noise_sources(x, randn_like, noise_sampler)
    ones = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma * ones)
        sigma_down, sigma_up = get_ancestral_step(sigma, sigma_next, eta)
        _report(callback, x, i, sigma, sigma, denoised)
        if sigma_down == 0:
            d = to_d(x, sigma, denoised)
            x = x + d * (sigma_down - sigma)
        else:
            t, t_next = _t_of(sigma), _t_of(sigma_down)
            r = 1 / 2
            h = t_next - t
            s = t + r * h
            x_mid = (_sigma_of(s) / _sigma_of(t)) * x - (-h * r).expm1() * denoised
            denoised_mid = model(x_mid, _sigma_of(s) * ones)
            x = (_sigma_of(t_next) / _sigma_of(t)) * x - (-h).expm1() * denoised_mid
        if sigma_next > 0:
            x = x + noise_sampler(sigma, sigma_next) * s_noise * sigma_up
    return x


@torch.no_grad()
def sample_dpmpp_sde(model, x, sigmas, randn_like=None, noise_sampler=None, *, eta=1.0, s_noise=1.0, r=1 / 2,
                     callback=None):
    """DPM-Solver++ stochastic: two ancestral sub-steps (to the r-point, then to sigma_next).

    Noise comes from ``noise_sampler`` (Brownian in A1111); without one, a Brownian tree
    seeded from torch's global RNG, as in k-diffusion.  Last step onto 0 is plain Euler.
    """
    noise_sampler = _brownian_default(x, sigmas, noise_sampler)
    ones = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * ones)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            d = to_d(x, sigmas[i], denoised)
            x = x + d * (sigmas[i + 1] - sigmas[i])
            continue
        t, t_next = _t_of(sigmas[i]), _t_of(sigmas[i + 1])
        h = t_next - t
        s = t + h * r
        fac = 1 / (2 * r)
        # sub-step 1: to the intermediate time s
        sd, su = get_ancestral_step(_sigma_of(t), _sigma_of(s), eta)
        s_down = _t_of(sd)
        x_2 = (_sigma_of(s_down) / _sigma_of(t)) * x - (t - s_down).expm1() * denoised
        x_2 = x_2 + noise_sampler(_sigma_of(t), _sigma_of(s)) * s_noise * su
        denoised_2 = model(x_2, _sigma_of(s) * ones)
        # sub-step 2: the full step with the blended prediction
        sd, su = get_ancestral_step(_sigma_of(t), _sigma_of(t_next), eta)
        t_next_down = _t_of(sd)
        denoised_d = (1 - fac) * denoised + fac * denoised_2
        x = (_sigma_of(t_next_down) / _sigma_of(t)) * x - (t - t_next_down).expm1() * denoised_d
        x = x + noise_sampler(_sigma_of(t), _sigma_of(t_next)) * s_noise * su
    return x


@torch.no_grad()
def sample_dpmpp_2m(model, x, sigmas, randn_like=None, noise_sampler=None, *, callback=None):
    """DPM-Solver++(2M): first order on the first step and on the step onto sigma = 0."""
    ones = x.new_ones([x.shape[0]])
    old_denoised = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * ones)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        t, t_next = _t_of(sigmas[i]), _t_of(sigmas[i + 1])
        h = t_next - t
        if old_denoised is None or sigmas[i + 1] == 0:
            x = (_sigma_of(t_next) / _sigma_of(t)) * x - (-h).expm1() * denoised
        else:
            h_last = t - _t_of(sigmas[i - 1])
            r = h_last / h
            denoised_d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
            x = (_sigma_of(t_next) / _sigma_of(t)) * x - (-h).expm1() * denoised_d
        old_denoised = denoised
    return x


@torch.no_grad()
def sample_dpmpp_2m_sde(model, x, sigmas, randn_like=None, noise_sampler=None, *, eta=1.0, s_noise=1.0,
                        solver_type="midpoint", callback=None):
    """DPM-Solver++(2M) SDE ('midpoint' or 'heun' correction); x = denoised on the step onto 0."""
    if solver_type not in {"heun", "midpoint"}:
        raise ValueError("solver_type must be 'heun' or 'midpoint'")
    noise_sampler = _brownian_default(x, sigmas, noise_sampler)
    ones = x.new_ones([x.shape[0]])
    old_denoised, h_last, h = None, None, None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * ones)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            t, s = -sigmas[i].log(), -sigmas[i + 1].log()
            h = s - t
            eta_h = eta * h
            x = sigmas[i + 1] / sigmas[i] * (-eta_h).exp() * x + (-h - eta_h).expm1().neg() * denoised
            if old_denoised is not None:
                r = h_last / h
                if solver_type == "heun":
                    x = x + ((-h - eta_h).expm1().neg() / (-h - eta_h) + 1) * (1 / r) * (denoised - old_denoised)
                else:
                    x = x + 0.5 * (-h - eta_h).expm1().neg() * (1 / r) * (denoised - old_denoised)
            if eta:
                noise = noise_sampler(sigmas[i], sigmas[i + 1])
                x = x + noise * sigmas[i + 1] * (-2 * eta_h).expm1().neg().sqrt() * s_noise
        old_denoised = denoised
        h_last = h   # note: on the step onto 0, h keeps the previous step's value
    return x


@torch.no_grad()
def sample_dpmpp_3m_sde(model, x, sigmas, randn_like=None, noise_sampler=None, *, eta=1.0, s_noise=1.0,
                        callback=None):
    """DPM-Solver++(3M) SDE; x = denoised on the step onto 0."""
    noise_sampler = _brownian_default(x, sigmas, noise_sampler)
    ones = x.new_ones([x.shape[0]])
    denoised_1, denoised_2 = None, None
    h, h_1, h_2 = None, None, None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * ones)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            t, s = -sigmas[i].log(), -sigmas[i + 1].log()
            h = s - t
            h_eta = h * (eta + 1)
            x = torch.exp(-h_eta) * x + (-h_eta).expm1().neg() * denoised
            if h_2 is not None:
                r0 = h_1 / h
                r1 = h_2 / h
                d1_0 = (denoised - denoised_1) / r0
                d1_1 = (denoised_1 - denoised_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                phi_2 = h_eta.neg().expm1() / h_eta + 1
                phi_3 = phi_2 / h_eta - 0.5
                x = x + phi_2 * d1 - phi_3 * d2
            elif h_1 is not None:
                r = h_1 / h
                d = (denoised - denoised_1) / r
                phi_2 = h_eta.neg().expm1() / h_eta + 1
                x = x + phi_2 * d
            if eta:
                noise = noise_sampler(sigmas[i], sigmas[i + 1])
                x = x + noise * sigmas[i + 1] * (-2 * h * eta).expm1().neg().sqrt() * s_noise
        denoised_1, denoised_2 = denoised, denoised_1
        h_1, h_2 = h, h_1
    return x


@torch.no_grad()
def sample_lcm(model, x, sigmas, randn_like=None, noise_sampler=None, *, callback=None):
    """LCM: jump to the prediction, then re-noise to sigma_next (VE form) if sigma_next > 0."""
    _, noise_sampler = _noise_sources(x, randn_like, noise_sampler)
    ones = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * ones)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        x = denoised
        if sigmas[i + 1] > 0:
            x = x + sigmas[i + 1] * noise_sampler(sigmas[i], sigmas[i + 1])
    return x


# --------------------------------------------------------------------------------------
# Restart (A1111 modules/sd_samplers_extra.py)
# --------------------------------------------------------------------------------------

def restart_plan(sigmas, restart_list=None):
    """The list of (sigma_from, sigma_to) Heun steps the Restart sampler walks.

    restart_list maps {sigma_min_of_restart: [restart_steps, restart_times, restart_sigma_max]}.
    Automatic (None): below 20 steps no restarts and the schedule is used as given; from 20
    steps the schedule is *replaced* by Karras(steps - restart_steps * restart_times,
    sigmas[-2], sigmas[0]) with restart_steps = 9, restart_times = 1 (36+ steps:
    steps // 4 and 2), restarting from the sigma nearest 0.1 up to the one nearest 2.
    """
    steps = sigmas.shape[0] - 1
    if restart_list is None:
        restart_list = {}
        if steps >= 20:
            restart_steps, restart_times = 9, 1
            if steps >= 36:
                restart_steps, restart_times = steps // 4, 2
            sigmas = get_sigmas_karras(steps - restart_steps * restart_times, sigmas[-2].item(), sigmas[0].item())
            restart_list = {0.1: [restart_steps + 1, restart_times, 2]}

    # keys become the index of the schedule sigma nearest to them
    by_index = {int(torch.argmin(abs(sigmas - key), dim=0)): value for key, value in restart_list.items()}

    plan = []
    for i in range(len(sigmas) - 1):
        plan.append((sigmas[i], sigmas[i + 1]))
        if i + 1 in by_index:
            restart_steps, restart_times, restart_max = by_index[i + 1]
            low_idx = i + 1
            high_idx = int(torch.argmin(abs(sigmas - restart_max), dim=0))
            if high_idx < low_idx:
                segment = get_sigmas_karras(restart_steps, sigmas[low_idx].item(), sigmas[high_idx].item())[:-1]
                for _ in range(restart_times):
                    plan.extend(zip(segment[:-1], segment[1:]))
    return plan


@torch.no_grad()
def sample_restart(model, x, sigmas, randn_like=None, noise_sampler=None, *, s_noise=1.0, restart_list=None,
                   callback=None):
    """A1111's restart_sampler: Heun steps; when a step starts above where the last one ended,
    first add noise of std sqrt(sigma_from^2 - last^2) (drawn with randn_like)."""
    randn, _ = _noise_sources(x, randn_like, noise_sampler)
    ones = x.new_ones([x.shape[0]])
    last_sigma = None
    for step_id, (old_sigma, new_sigma) in enumerate(restart_plan(sigmas, restart_list)):
        if last_sigma is None:
            last_sigma = old_sigma
        elif last_sigma < old_sigma:
            x = x + randn() * s_noise * (old_sigma ** 2 - last_sigma ** 2) ** 0.5
        denoised = model(x, old_sigma * ones)
        d = to_d(x, old_sigma, denoised)
        _report(callback, x, step_id, new_sigma, old_sigma, denoised)
        dt = new_sigma - old_sigma
        if new_sigma == 0:
            x = x + d * dt
        else:
            x_euler = x + d * dt
            denoised_2 = model(x_euler, new_sigma * ones)
            d_2 = to_d(x_euler, new_sigma, denoised_2)
            x = x + (d + d_2) / 2 * dt
        last_sigma = new_sigma
    return x


restart_sampler = sample_restart


SAMPLERS = {
    "euler": sample_euler,
    "euler_ancestral": sample_euler_ancestral,
    "heun": sample_heun,
    "dpm_2": sample_dpm_2,
    "dpm_2_ancestral": sample_dpm_2_ancestral,
    "lms": sample_lms,
    "dpm_fast": sample_dpm_fast,
    "dpm_adaptive": sample_dpm_adaptive,
    "dpmpp_2s_ancestral": sample_dpmpp_2s_ancestral,
    "dpmpp_sde": sample_dpmpp_sde,
    "dpmpp_2m": sample_dpmpp_2m,
    "dpmpp_2m_sde": sample_dpmpp_2m_sde,
    "dpmpp_3m_sde": sample_dpmpp_3m_sde,
    "lcm": sample_lcm,
    "restart": sample_restart,
}


# A1111 v1.10 sampler table (modules/sd_samplers_kdiffusion.py, sd_samplers_lcm.py):
# label -> sampler, scheduler used for 'Automatic' (None = uniform), discard_next_to_last_sigma,
# Brownian noise, and the keyword arguments A1111 passes with default settings
# (eta = opts.eta_ancestral = 1.0 to every function that has an eta parameter).
A1111_SAMPLERS = {
    "DPM++ 2M": dict(fn=sample_dpmpp_2m, scheduler="karras", discard=False, brownian=False, kwargs={}),
    "DPM++ SDE": dict(fn=sample_dpmpp_sde, scheduler="karras", discard=False, brownian=True, kwargs={"eta": 1.0}),
    "DPM++ 2M SDE": dict(fn=sample_dpmpp_2m_sde, scheduler="exponential", discard=False, brownian=True,
                         kwargs={"eta": 1.0}),
    "DPM++ 2M SDE Heun": dict(fn=sample_dpmpp_2m_sde, scheduler="exponential", discard=False, brownian=True,
                              kwargs={"eta": 1.0, "solver_type": "heun"}),
    "DPM++ 2S a": dict(fn=sample_dpmpp_2s_ancestral, scheduler="karras", discard=False, brownian=False,
                       kwargs={"eta": 1.0}),
    "DPM++ 3M SDE": dict(fn=sample_dpmpp_3m_sde, scheduler="exponential", discard=True, brownian=True,
                         kwargs={"eta": 1.0}),
    "Euler a": dict(fn=sample_euler_ancestral, scheduler=None, discard=False, brownian=False, kwargs={"eta": 1.0}),
    "Euler": dict(fn=sample_euler, scheduler=None, discard=False, brownian=False, kwargs={}),
    "LMS": dict(fn=sample_lms, scheduler=None, discard=False, brownian=False, kwargs={}),
    "Heun": dict(fn=sample_heun, scheduler=None, discard=False, brownian=False, kwargs={}),
    "DPM2": dict(fn=sample_dpm_2, scheduler="karras", discard=True, brownian=False, kwargs={}),
    "DPM2 a": dict(fn=sample_dpm_2_ancestral, scheduler="karras", discard=True, brownian=False, kwargs={"eta": 1.0}),
    "DPM fast": dict(fn=sample_dpm_fast, scheduler=None, discard=False, brownian=False, kwargs={"eta": 1.0}),
    "DPM adaptive": dict(fn=sample_dpm_adaptive, scheduler=None, discard=False, brownian=False,
                         kwargs={"eta": 1.0}),
    "Restart": dict(fn=sample_restart, scheduler="karras", discard=False, brownian=False, kwargs={}),
    "LCM": dict(fn=sample_lcm, scheduler=None, discard=False, brownian=False, kwargs={}),
}
