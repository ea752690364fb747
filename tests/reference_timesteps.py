"""Test-side reference for AUTOMATIC1111 stable-diffusion-webui v1.10's "timestep" samplers.

This module re-implements, from their published definitions, the four samplers that
A1111 runs on the discrete DDPM timestep grid instead of on k-diffusion sigmas:
DDIM, DDIM CFG++, PLMS and UniPC.  It reproduces A1111's behaviour exactly (its
timestep list, its step counts, where it stops), not the textbook algorithms, so that
tests can compare the engine's pictures against it.  Pure torch; nothing here imports
the engine.  Clarity is preferred to speed.

Sources read (A1111 v1.10): modules/sd_samplers_timesteps.py, modules/sd_samplers_timesteps_impl.py,
modules/models/diffusion/uni_pc/uni_pc.py, modules/sd_samplers_cfg_denoiser.py,
modules/sd_samplers_common.py (setup_img2img_steps) and modules/shared_options.py (defaults).

Conventions
-----------
* ``alphas_cumprod`` is the model's float32 ``alphas_cumprod`` buffer (1000 entries);
  ``alphas_cumprod_sd()`` builds the Stable Diffusion 1.x/2.x one.
* ``eps_model(x, t)`` returns the *guided* noise prediction (classifier-free guidance is
  done inside it, as A1111's CFGDenoiserTimesteps does).  ``t`` is a float tensor of
  shape [batch] in the dtype of ``x``.  For DDIM and PLMS its values are whole numbers;
  UniPC passes fractional values.  A v-prediction model must convert v to eps before
  guidance is combined (see ``v_to_eps``).
* A1111's output is the final latent; it is decoded by the VAE unchanged.

A1111 facts worth knowing (all reproduced here)
-----------------------------------------------
* Timesteps: ``range(0, 1000, 1000 // steps) + 1`` clipped to [0, 999].  The list is
  ascending, starts at 1, and has ``ceil(1000 / (1000 // steps))`` entries, which is more
  than ``steps`` whenever ``1000 // steps`` does not divide 1000 (3 steps -> 4 entries
  [1, 334, 667, 999], 30 steps -> 31 entries, 150 steps -> 167 entries).  Sampling starts at the *largest* entry (951 for 20 steps),
  not at 999, with the unscaled unit-variance noise as x.
* DDIM / DDIM CFG++ / PLMS walk the list from its last entry down and stop at the
  *first* entry: the result is the latent at noise level ``alphas_cumprod[timesteps[0]]``
  (t = 1, alpha_bar = 0.99829...), not a fully denoised x0.  The model is never evaluated
  at ``timesteps[0]``.  Hence DDIM makes ``len(timesteps) - 1`` model calls (19 for 20
  steps) and with 1 step it makes none and returns the input noise unchanged.
* PLMS makes one extra call in its first step (a Heun-like look-ahead), so
  ``len(timesteps)`` calls in all (20 for 20 steps).
* UniPC ignores the timestep values in txt2img: it only uses ``N = len(timesteps)`` and
  lays its own uniform grid in continuous time from 1.0 to 0.001, calling the model at
  fractional times ``(t - 0.001) * 1000`` (999, 949.05, ..., 49.95 for 20 steps).  It makes
  N calls.  A1111 asserts ``N >= order`` (default order 3): UniPC with 1 or 2 steps raises
  ``AssertionError: UniPC order must be < sampling steps`` in A1111; this reference raises
  too unless the caller lowers ``order``.
* img2img noises the init latent to ``timesteps[t_enc]`` but then samples over
  ``timesteps[:t_enc]``: the first model call is at ``timesteps[t_enc - 1]`` (DDIM/PLMS)
  or at the continuous time of ``timesteps[t_enc - 1]`` (UniPC).  A1111's own comment
  calls the UniPC one "likely off by a bit".  DDIM img2img makes ``t_enc - 1`` calls.
* DDIM draws one sampler noise per step even with eta = 0 (multiplied by 0).
* 1000 // steps == 0 for steps > 1000 (range() then raises); steps in 501..1000 all give
  step 1 and a list ending [..., 999, 999] (1000 entries; the clip makes the last two
  equal, so the first DDIM step is a no-op).
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple, Optional

import torch

NUM_TRAIN_TIMESTEPS = 1000

# A1111 defaults (modules/shared_options.py)
DEFAULT_ETA_DDIM = 0.0
DEFAULT_UNIPC_VARIANT = "bh1"
DEFAULT_UNIPC_SKIP_TYPE = "time_uniform"  # the only skip type implemented here
DEFAULT_UNIPC_ORDER = 3
DEFAULT_UNIPC_LOWER_ORDER_FINAL = True

# DDIM CFG++ maps the UI CFG scale range [0, 12.5] onto [0, 1].
CFGPP_SCALE_MULTIPLIER = 1 / 12.5


# ---------------------------------------------------------------------------
# Schedule and timestep list
# ---------------------------------------------------------------------------

def alphas_cumprod_sd() -> torch.Tensor:
    """The LDM "linear" (= diffusers "scaled_linear") alpha-bar table of SD 1.x/2.x.

    betas = linspace(sqrt(0.00085), sqrt(0.012), 1000) ** 2 and the cumulative product of
    (1 - betas), both in float64, then stored as float32 like the LDM model's buffer.
    """
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, NUM_TRAIN_TIMESTEPS, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0).to(torch.float32)


def a1111_timesteps(steps: int, discard_penultimate: bool = False) -> torch.Tensor:
    """A1111's CompVisSampler.get_timesteps: int64 tensor, ascending.

    ``discard_penultimate`` is the "Always discard next-to-last sigma" setting: for these
    samplers it simply asks for one more step.  steps > 1000 raises (step size 0).
    """
    if discard_penultimate:
        steps += 1
    stride = NUM_TRAIN_TIMESTEPS // steps
    if stride == 0:
        raise ValueError(f"A1111 cannot build a timestep list for {steps} steps (range() step 0)")
    return torch.clip(torch.tensor(list(range(0, NUM_TRAIN_TIMESTEPS, stride)), dtype=torch.int64) + 1, 0, 999)


# ---------------------------------------------------------------------------
# Starting latents
# ---------------------------------------------------------------------------

def txt2img_start(noise: torch.Tensor) -> torch.Tensor:
    """txt2img start latent for the timestep samplers: the unit noise, unscaled.

    (k-diffusion samplers multiply by sigma_max; CompVisSampler.sample does not.)  The
    timestep list is ``a1111_timesteps(steps)`` and the whole list is handed to the sampler.
    """
    return noise


class Img2ImgStart(NamedTuple):
    x: torch.Tensor            # noised latent handed to the sampler
    timesteps: torch.Tensor    # timesteps_sched = full_list[:t_enc], handed to the sampler
    steps: int                 # number of steps the full list was built for
    t_enc: int                 # len(timesteps); also A1111's progress-bar total is t_enc + 1
    t_noise: int               # full_list[t_enc], the timestep the init latent is noised to


def img2img_steps(steps: int, denoising_strength: float, exact_steps: bool = False) -> tuple[int, int]:
    """A1111's setup_img2img_steps -> (steps for the full list, t_enc).

    exact_steps=False (default settings): full list for ``steps``,
        t_enc = int(min(strength, 0.999) * steps)   (Python float product, truncated).
    exact_steps=True (setting "img2img_fix_steps", and always for the hires-fix pass,
        which passes its step count explicitly):
        full list for int(steps / min(strength, 0.999)) steps (0 if strength == 0),
        t_enc = steps - 1.
    """
    if exact_steps:
        full = int(steps / min(denoising_strength, 0.999)) if denoising_strength > 0 else 0
        return full, steps - 1
    return steps, int(min(denoising_strength, 0.999) * steps)


def img2img_start(x0: torch.Tensor, noise: torch.Tensor, steps: int, denoising_strength: float,
                  alphas_cumprod: torch.Tensor, exact_steps: bool = False,
                  discard_penultimate: bool = False) -> Img2ImgStart:
    """A1111's CompVisSampler.sample_img2img preparation (img2img_extra_noise = 0, the default).

    full = a1111_timesteps(full_steps); the init latent is noised to full[t_enc]:
        x = x0 * sqrt(a) + noise * sqrt(1 - a),  a = alphas_cumprod[full[t_enc]]  (float32)
    and the sampler receives full[:t_enc] (UniPC also gets is_img2img=True).
    Note the off-by-one: the first model call is at full[t_enc - 1], one grid step below
    the level the latent was noised to.  t_enc == 0 gives an empty list (DDIM/PLMS then
    return x unchanged; UniPC fails in A1111).
    """
    full_steps, t_enc = img2img_steps(steps, denoising_strength, exact_steps)
    full = a1111_timesteps(full_steps, discard_penultimate)
    t_noise = int(full[t_enc])
    a = alphas_cumprod[t_noise].to(torch.float32)
    x = x0 * torch.sqrt(a) + noise * torch.sqrt(1 - a)
    return Img2ImgStart(x=x, timesteps=full[:t_enc], steps=full_steps, t_enc=t_enc, t_noise=t_noise)


# ---------------------------------------------------------------------------
# v-prediction
# ---------------------------------------------------------------------------

def v_to_eps(v: torch.Tensor, x: torch.Tensor, t: torch.Tensor, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """How A1111's CompVisTimestepsVDenoiser turns a v prediction into eps.

    For a model with parameterization "v" the CFG denoiser's inner model is
    CompVisTimestepsVDenoiser, which converts each UNet output (cond and uncond alike)
    before guidance is combined:
        eps = sqrt(alpha_bar[i]) * v + sqrt(1 - alpha_bar[i]) * x,   i = t.to(int)
    The index is the timestep *truncated* to an integer, so under UniPC (fractional t)
    the conversion uses alpha_bar at floor(t) while UniPC's own update uses its
    interpolated schedule.  The square roots are the LDM buffers (computed in float64 from
    the float64 table, stored float32); here they come from the float32 table through
    float64, which differs by at most a rounding step.
    """
    idx = t.to(torch.int).long()
    ac = alphas_cumprod.to(torch.float64)
    sqrt_a = ac.sqrt().to(torch.float32)[idx].to(x.device, x.dtype)
    sqrt_1ma = (1.0 - ac).sqrt().to(torch.float32)[idx].to(x.device, x.dtype)
    shape = (-1,) + (1,) * (x.dim() - 1)
    return sqrt_a.view(shape) * v + sqrt_1ma.view(shape) * x


# ---------------------------------------------------------------------------
# DDIM, DDIM CFG++ and PLMS: shared per-step coefficients
# ---------------------------------------------------------------------------

def _ddim_coefficients(timesteps: torch.Tensor, alphas_cumprod: torch.Tensor, eta: float):
    """Per index i of ``timesteps``: (a_t, a_prev, sqrt(1 - a_t), sigma) as Python floats.

    a_t = alpha_bar[timesteps[i]];  a_prev = alpha_bar[timesteps[i - 1]] (alpha_bar[0] for i = 0,
    never used); sigma = eta * sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)).
    sqrt(1 - a_t) is computed in float32 like A1111; sigma in float64.
    """
    ts = timesteps.long().cpu()
    ac = alphas_cumprod.detach().cpu().to(torch.float32)
    prev_ts = torch.cat([torch.zeros(1, dtype=torch.int64), ts[:-1]])
    a_t = ac[ts]
    a_prev = ac[prev_ts]
    sqrt_1m_a_t = torch.sqrt(1 - a_t)
    coeffs = []
    for i in range(len(ts)):
        at, ap = float(a_t[i]), float(a_prev[i])
        sigma = eta * math.sqrt((1 - ap) / (1 - at) * (1 - at / ap))
        coeffs.append((at, ap, float(sqrt_1m_a_t[i]), sigma))
    return coeffs


def _bcast(value: float, x: torch.Tensor) -> torch.Tensor:
    """A Python scalar as a [batch, 1, 1, 1] tensor in x's dtype (A1111's ``item() * s_x``)."""
    return x.new_full((x.shape[0],) + (1,) * (x.dim() - 1), value)


def _t_vec(t: float, x: torch.Tensor) -> torch.Tensor:
    """The timestep as a [batch] tensor in x's dtype (A1111's ``item() * s_in``)."""
    return x.new_full((x.shape[0],), float(t))


def _ddim_update(x, eps_for_x0, eps_for_dir, at, ap, sqrt_1m_at, sigma, noise):
    a_t, a_prev, s_1m, sig = (_bcast(v, x) for v in (at, ap, sqrt_1m_at, sigma))
    pred_x0 = (x - s_1m * eps_for_x0) / a_t.sqrt()
    dir_xt = (1.0 - a_prev - sig ** 2).sqrt() * eps_for_dir
    out = a_prev.sqrt() * pred_x0 + dir_xt
    if noise is not None:
        out = out + sig * noise
    return out


def _step_noise(x, eta, randn_like):
    """DDIM's per-step noise draw.  A1111 draws it every step, even with eta = 0."""
    if randn_like is not None:
        return randn_like(x)
    if eta != 0:
        return torch.randn_like(x)
    return None  # eta = 0 and no generator given: the term is zero anyway


@torch.no_grad()
def ddim(eps_model: Callable, x: torch.Tensor, timesteps: torch.Tensor, alphas_cumprod: torch.Tensor,
         eta: float = DEFAULT_ETA_DDIM, randn_like: Optional[Callable] = None) -> torch.Tensor:
    """A1111 DDIM.

    For i = n-1, n-2, ..., 1 (n = len(timesteps)):
        eps     = eps_model(x, timesteps[i])
        x0      = (x - sqrt(1 - a_t) eps) / sqrt(a_t)
        x       = sqrt(a_prev) x0 + sqrt(1 - a_prev - sigma^2) eps + sigma * randn_like(x)
    with a_t = alpha_bar[timesteps[i]], a_prev = alpha_bar[timesteps[i-1]].

    Model calls: n - 1, at timesteps[n-1], ..., timesteps[1] (whole numbers; 951, 901, ...,
    51 for 20 steps).  Never at timesteps[0]; the result is the latent at alpha_bar[timesteps[0]].
    randn_like(x) is called once per step (A1111: p.rng.next(), the per-image sampler noise).
    """
    coeffs = _ddim_coefficients(timesteps, alphas_cumprod, eta)
    n = len(timesteps)
    for i in range(n - 1, 0, -1):
        e_t = eps_model(x, _t_vec(timesteps[i], x))
        at, ap, s1m, sigma = coeffs[i]
        x = _ddim_update(x, e_t, e_t, at, ap, s1m, sigma, _step_noise(x, eta, randn_like))
    return x


@torch.no_grad()
def ddim_cfgpp(eps_and_uncond_model: Callable, x: torch.Tensor, timesteps: torch.Tensor,
               alphas_cumprod: torch.Tensor, eta: float = DEFAULT_ETA_DDIM,
               randn_like: Optional[Callable] = None) -> torch.Tensor:
    """A1111 DDIM CFG++ (manifold-constrained CFG, Chung et al. 2024).

    ``eps_and_uncond_model(x, t, cfg_multiplier)`` must return (guided, uncond) where
        guided = uncond + cfg_scale * cfg_multiplier * (cond - uncond)
    and uncond is the unconditional eps (after v->eps for v models).  A1111 sets the CFG
    denoiser's cond_scale_miltiplier = 1/12.5 and need_last_noise_uncond = True; this
    reference always passes cfg_multiplier = 1/12.5.

    Same loop and calls as ``ddim`` (n - 1 calls at timesteps[n-1] .. timesteps[1]), except
    that x0 uses the guided eps and the direction term uses the unconditional eps:
        x = sqrt(a_prev) x0(guided) + sqrt(1 - a_prev - sigma^2) uncond + sigma * noise
    """
    coeffs = _ddim_coefficients(timesteps, alphas_cumprod, eta)
    n = len(timesteps)
    for i in range(n - 1, 0, -1):
        e_t, e_uncond = eps_and_uncond_model(x, _t_vec(timesteps[i], x), CFGPP_SCALE_MULTIPLIER)
        at, ap, s1m, sigma = coeffs[i]
        x = _ddim_update(x, e_t, e_uncond, at, ap, s1m, sigma, _step_noise(x, eta, randn_like))
    return x


@torch.no_grad()
def plms(eps_model: Callable, x: torch.Tensor, timesteps: torch.Tensor,
         alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """A1111 PLMS (pseudo linear multistep, Liu et al. 2022), deterministic.

    For i = n-1, ..., 1 with the DDIM eta=0 update D(x, eps) from timesteps[i] to timesteps[i-1]:
      first step:   e = eps(x, t_i);  e' = eps(D(x, e), t_{i-1});  use (e + e') / 2
      second step:  (3 e - e_1) / 2
      third step:   (23 e - 16 e_1 + 5 e_2) / 12
      later:        (55 e - 59 e_1 + 37 e_2 - 9 e_3) / 24
    where e_k is the plain eps of k steps earlier (the look-ahead eps is not kept).

    Model calls: n in all (n = len(timesteps) >= 2; 0 for n = 1): timesteps[n-1], then the
    look-ahead at timesteps[n-2] on the trial latent, then timesteps[n-2], ..., timesteps[1].
    For 20 steps: 951, 901 (look-ahead), 901, 851, ..., 51.  Ends at alpha_bar[timesteps[0]].
    """
    coeffs = _ddim_coefficients(timesteps, alphas_cumprod, 0.0)
    n = len(timesteps)
    history: list[torch.Tensor] = []  # plain eps of previous steps, newest last, at most 3
    for i in range(n - 1, 0, -1):
        at, ap, s1m, _ = coeffs[i]
        e_t = eps_model(x, _t_vec(timesteps[i], x))
        if not history:
            x_trial = _ddim_update(x, e_t, e_t, at, ap, s1m, 0.0, None)
            e_next = eps_model(x_trial, _t_vec(timesteps[i - 1], x))
            e_use = (e_t + e_next) / 2
        elif len(history) == 1:
            e_use = (3 * e_t - history[-1]) / 2
        elif len(history) == 2:
            e_use = (23 * e_t - 16 * history[-1] + 5 * history[-2]) / 12
        else:
            e_use = (55 * e_t - 59 * history[-1] + 37 * history[-2] - 9 * history[-3]) / 24
        x = _ddim_update(x, e_use, e_use, at, ap, s1m, 0.0, None)
        history.append(e_t)
        if len(history) > 3:
            history.pop(0)
    return x


# ---------------------------------------------------------------------------
# UniPC (Zhao et al. 2023), as A1111 runs it: data prediction, multistep, B(h) variants
# ---------------------------------------------------------------------------

class DiscreteVPSchedule:
    """UniPC's NoiseScheduleVP('discrete') built from alphas_cumprod.

    Discrete step k (0..999) sits at continuous time (k + 1) / 1000; log(alpha_t) =
    0.5 * log(alpha_bar) is linearly interpolated in t between those knots (and linearly
    extended beyond them).  alpha_t = exp(log_alpha), sigma_t = sqrt(1 - alpha_t^2),
    lambda_t = log(alpha_t) - log(sigma_t).  Everything in float32 like A1111.
    """

    def __init__(self, alphas_cumprod: torch.Tensor):
        self.total_n = len(alphas_cumprod)
        self.t_knots = torch.linspace(0.0, 1.0, self.total_n + 1)[1:]
        self.log_alpha_knots = 0.5 * torch.log(alphas_cumprod.detach().cpu().to(torch.float32))
        self.t_end = 1.0                  # T
        self.t_min = 1.0 / self.total_n   # t_0 = 0.001

    def log_alpha(self, t: torch.Tensor) -> torch.Tensor:
        xp = self.t_knots.to(t.device)
        yp = self.log_alpha_knots.to(t.device)
        k = torch.clamp(torch.searchsorted(xp, t.contiguous()) - 1, 0, len(xp) - 2)
        x0, x1, y0, y1 = xp[k], xp[k + 1], yp[k], yp[k + 1]
        return y0 + (t - x0) * (y1 - y0) / (x1 - x0)

    def alpha(self, t):
        return torch.exp(self.log_alpha(t))

    def sigma(self, t):
        return torch.sqrt(1.0 - torch.exp(2.0 * self.log_alpha(t)))

    def lam(self, t):
        la = self.log_alpha(t)
        return la - 0.5 * torch.log(1.0 - torch.exp(2.0 * la))

    def model_input_time(self, t: torch.Tensor) -> torch.Tensor:
        """Continuous t in [0.001, 1] -> the model's timestep (t - 0.001) * 1000 in [0, 999]."""
        return (t - 1.0 / self.total_n) * 1000.0


def _unipc_time_grid(ns: DiscreteVPSchedule, n_steps: int, timesteps: torch.Tensor, is_img2img: bool):
    """The 'time_uniform' grid: n_steps + 1 points from t_start down to 0.001 (float32).

    txt2img: t_start = 1.  img2img: t_start = timesteps[-1] / 1000 + 1 / 1000 (float32),
    i.e. the continuous time of the last scheduled discrete step.
    """
    if is_img2img:
        t_start = float(timesteps[-1].to(torch.int64) / 1000 + 1 / 1000)
    else:
        t_start = ns.t_end
    return torch.linspace(t_start, ns.t_min, n_steps + 1)


def unipc_model_input_times(timesteps: torch.Tensor, is_img2img: bool = False,
                            alphas_cumprod: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The model timesteps UniPC evaluates, in order (one call each): grid points 0..N-1."""
    ns = DiscreteVPSchedule(alphas_cumprod if alphas_cumprod is not None else alphas_cumprod_sd())
    grid = _unipc_time_grid(ns, len(timesteps), timesteps, is_img2img)
    return ns.model_input_time(grid[:-1])


class _UniPC:
    def __init__(self, eps_model, ns: DiscreteVPSchedule, variant: str):
        if variant not in ("bh1", "bh2"):
            raise ValueError(f"reference implements UniPC variants bh1 and bh2, not {variant!r}")
        self.eps_model = eps_model
        self.ns = ns
        self.variant = variant
        self.calls = 0

    def data_pred(self, x, t):
        """x0 = (x - sigma_t * eps(x, (t - 0.001) * 1000)) / alpha_t  (no thresholding)."""
        eps = self.eps_model(x, self.ns.model_input_time(t).to(x.dtype))
        self.calls += 1
        a = self.ns.alpha(t).view(-1, 1, 1, 1)
        s = self.ns.sigma(t).view(-1, 1, 1, 1)
        return (x - s * eps) / a

    def update(self, x, x0_hist, t_hist, t, order, use_corrector):
        """One multistep UniPC-B(h) step from t_hist[-1] to t (data prediction).

        Predictor UniP-p with the last ``order`` x0 values, then (optionally) corrector
        UniC-p using x0 at the predicted point.  Returns (x_t, x0 at t or None).
        """
        ns = self.ns
        t_prev = t_hist[-1]
        x0_prev = x0_hist[-1]
        lam_prev, lam_t = ns.lam(t_prev), ns.lam(t)
        sig_prev, sig_t = ns.sigma(t_prev), ns.sigma(t)
        alpha_t = ns.alpha(t)
        h = lam_t - lam_prev

        # ratios r_k of the older steps' lambda offsets to h, and scaled differences
        rks, diffs = [], []
        for k in range(1, order):
            r = ((ns.lam(t_hist[-(k + 1)]) - lam_prev) / h)[0]
            rks.append(r)
            diffs.append((x0_hist[-(k + 1)] - x0_prev) / r)
        rks.append(torch.tensor(1.0))
        rks = torch.stack([torch.as_tensor(r, dtype=torch.float32) for r in rks]).to(x.device)

        hh = -h[0]                      # data prediction integrates in -h
        h_phi_1 = torch.expm1(hh)       # e^{hh} - 1
        B_h = hh if self.variant == "bh1" else torch.expm1(hh)

        # R[i, k] = r_k ** i ;  b[i] = (i+1)! * h_phi_{i+2} / B(h), with
        # h_phi_{k+1} = h_phi_k / hh - 1 / k!
        rows, b = [], []
        h_phi_k = h_phi_1 / hh - 1
        fact = 1
        for i in range(1, order + 1):
            rows.append(torch.pow(rks, i - 1))
            b.append(h_phi_k * fact / B_h)
            fact *= i + 1
            h_phi_k = h_phi_k / hh - 1 / fact
        R = torch.stack(rows)
        b = torch.stack([torch.as_tensor(v, dtype=torch.float32) for v in b]).to(x.device)

        D = torch.stack(diffs, dim=1) if diffs else None   # [B, order-1, C, H, W]

        view = (-1,) + (1,) * (x.dim() - 1)
        base = (sig_t / sig_prev).view(view) * x - (alpha_t * h_phi_1).view(view) * x0_prev

        # predictor
        if D is not None:
            rhos_p = torch.tensor([0.5], device=x.device) if order == 2 else torch.linalg.solve(R[:-1, :-1], b[:-1])
            pred_res = torch.einsum("k,bkchw->bchw", rhos_p, D)
        else:
            pred_res = 0
        x_t = base - (alpha_t * B_h).view(view) * pred_res
        if not use_corrector:
            return x_t, None

        # corrector: evaluate at the predicted point and redo the step with it
        rhos_c = torch.tensor([0.5], device=x.device) if order == 1 else torch.linalg.solve(R, b)
        x0_t = self.data_pred(x_t, t)
        corr_res = torch.einsum("k,bkchw->bchw", rhos_c[:-1], D) if D is not None else 0
        x_t = base - (alpha_t * B_h).view(view) * (corr_res + rhos_c[-1] * (x0_t - x0_prev))
        return x_t, x0_t


@torch.no_grad()
def unipc(eps_model: Callable, x: torch.Tensor, timesteps: torch.Tensor, alphas_cumprod: torch.Tensor,
          variant: str = DEFAULT_UNIPC_VARIANT, order: int = DEFAULT_UNIPC_ORDER,
          lower_order_final: bool = DEFAULT_UNIPC_LOWER_ORDER_FINAL, is_img2img: bool = False,
          return_calls: bool = False):
    """A1111 UniPC: multistep, data prediction (predict_x0=True), no thresholding,
    skip type 'time_uniform', variant bh1 (default) or bh2.

    N = len(timesteps) steps on the grid t_0 > t_1 > ... > t_N, t_j = linspace(t_start, 0.001, N+1)
    (t_start = 1 for txt2img; see _unipc_time_grid for img2img).  Only N and, for img2img,
    timesteps[-1] are used.
      * x0 at t_0 from one model call;
      * warm-up steps j = 1 .. order-1 at orders 1, 2, ... with the corrector;
      * steps j = order .. N at order min(order, N + 1 - j) when lower_order_final
        (so the last two steps are orders 2 and 1 for order 3), corrector on every step
        except the last.
    The corrector's model call at t_j is reused as the next step's x0 history, so the model
    is called exactly N times, at model times (t_j - 0.001) * 1000 for j = 0 .. N-1:
    999, 949.05, 899.1, ..., 49.95 for 20 steps (fractional; eps_model must accept that).
    The result is the latent at t_N = 0.001, i.e. discrete step 0 (not denoised further).

    A1111 raises AssertionError("UniPC order must be < sampling steps") when N < order;
    so does this function.  Pass order=min(order, N) to get a result anyway (that equals
    A1111 with its "UniPC order" setting lowered).
    """
    n_steps = len(timesteps)
    if n_steps < order:
        raise AssertionError("UniPC order must be < sampling steps")
    ns = DiscreteVPSchedule(alphas_cumprod)
    solver = _UniPC(eps_model, ns, variant)
    grid = _unipc_time_grid(ns, n_steps, timesteps, is_img2img).to(x.device)

    batch = x.shape[0]
    t0 = grid[0].expand(batch)
    x0_hist = [solver.data_pred(x, t0)]
    t_hist = [t0]

    for j in range(1, order):                        # warm-up, growing order
        t = grid[j].expand(batch)
        x, x0_t = solver.update(x, x0_hist, t_hist, t, j, use_corrector=True)
        if x0_t is None:
            x0_t = solver.data_pred(x, t)
        x0_hist.append(x0_t)
        t_hist.append(t)

    for j in range(order, n_steps + 1):
        t = grid[j].expand(batch)
        step_order = min(order, n_steps + 1 - j) if lower_order_final else order
        last = j == n_steps
        x, x0_t = solver.update(x, x0_hist, t_hist, t, step_order, use_corrector=not last)
        # slide the history window (length `order`)
        x0_hist = x0_hist[1:] + [x0_hist[-1]] if order > 1 else x0_hist
        t_hist = t_hist[1:] + [t] if order > 1 else [t]
        if not last:
            if x0_t is None:
                x0_t = solver.data_pred(x, t)
            x0_hist[-1] = x0_t

    return (x, solver.calls) if return_calls else x


# ---------------------------------------------------------------------------
# Bookkeeping helpers for tests
# ---------------------------------------------------------------------------

def expected_model_calls(sampler: str, n_timesteps: int) -> int:
    """Model (guided-eps) evaluations A1111 makes for a timestep list of this length.

    One evaluation = one guided eps, i.e. one cond + one uncond UNet pass under CFG.
    """
    n = n_timesteps
    if sampler in ("DDIM", "DDIM CFG++"):
        return max(n - 1, 0)
    if sampler == "PLMS":
        return n if n >= 2 else 0
    if sampler == "UniPC":
        return n
    raise ValueError(sampler)
