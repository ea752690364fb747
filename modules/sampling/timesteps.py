"""A1111's timestep samplers: DDIM, DDIM CFG++, PLMS and UniPC.

They run on A1111's grid ``t = 1 + k * (1000 // steps)`` (clipped to 999), walking it from the
top down; the model is called with a timestep and returns the predicted noise (CFG applied).
The grid can hold more entries than the steps asked for (150 steps -> 167 timesteps, 166 model
steps), and the last DDIM/PLMS step lands on ``alphabar[1]``: both as in A1111.  UniPC is the
multistep UniPC of Zhao et al. 2023 over A1111's continuous-time view of the discrete model
(time-uniform from t=1 to 1/N, B(h) variant bh1 or bh2, order 3, lower order at the end).
"""
from __future__ import annotations

from typing import Callable

import torch

EpsModel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def a1111_timesteps(steps: int, discard_penultimate: bool = False) -> torch.Tensor:
    if discard_penultimate:
        steps += 1
    return torch.clip(torch.arange(0, 1000, 1000 // steps) + 1, 0, 999)


def _tables(timesteps, alphas_cumprod):
    alphas = alphas_cumprod[timesteps]
    alphas_prev = alphas_cumprod[torch.nn.functional.pad(timesteps[:-1], pad=(1, 0))].to(torch.float64)
    return alphas, alphas_prev


def ddim(model: EpsModel, x, timesteps, alphas_cumprod, *, noise, step, eta=0.0, cfgpp=False):
    """DDIM; with ``cfgpp`` the direction term uses the unconditional noise (CFG++; the model then
    returns (guided eps, unconditional eps) with the CFG scale divided by 12.5)."""
    alphas, alphas_prev = _tables(timesteps, alphas_cumprod)
    sigmas = eta * ((1 - alphas_prev) / (1 - alphas.double()) * (1 - alphas.double() / alphas_prev)).sqrt()
    ones = x.new_ones([x.shape[0]])
    for i in range(len(timesteps) - 1):
        k = len(timesteps) - 1 - i
        out = model(x, float(timesteps[k]) * ones)
        e_t, e_dir = out if cfgpp else (out, out)
        a_t, a_prev, sigma_t = alphas[k].item(), alphas_prev[k].item(), sigmas[k].item()
        pred_x0 = (x - (1 - a_t) ** 0.5 * e_t) / a_t ** 0.5
        x = a_prev ** 0.5 * pred_x0 + (1.0 - a_prev - sigma_t ** 2) ** 0.5 * e_dir
        if sigma_t:
            x = x + sigma_t * noise.fresh()
        step(i, x, pred_x0)
    return x


def plms(model: EpsModel, x, timesteps, alphas_cumprod, *, noise, step):
    alphas, alphas_prev = _tables(timesteps, alphas_cumprod)
    ones = x.new_ones([x.shape[0]])
    history: list[torch.Tensor] = []

    def ddim_step(x, e, k):
        a_t, a_prev = alphas[k].item(), alphas_prev[k].item()
        pred_x0 = (x - (1 - a_t) ** 0.5 * e) / a_t ** 0.5
        return a_prev ** 0.5 * pred_x0 + (1.0 - a_prev) ** 0.5 * e, pred_x0

    for i in range(len(timesteps) - 1):
        k = len(timesteps) - 1 - i
        e_t = model(x, float(timesteps[k]) * ones)
        if not history:  # the first step: improved Euler (two model calls)
            x_next, _ = ddim_step(x, e_t, k)
            e_next = model(x_next, float(timesteps[max(k - 1, 0)]) * ones)
            e_used = (e_t + e_next) / 2
        elif len(history) == 1:
            e_used = (3 * e_t - history[-1]) / 2
        elif len(history) == 2:
            e_used = (23 * e_t - 16 * history[-1] + 5 * history[-2]) / 12
        else:
            e_used = (55 * e_t - 59 * history[-1] + 37 * history[-2] - 9 * history[-3]) / 24
        x, pred_x0 = ddim_step(x, e_used, k)
        history = (history + [e_t])[-3:]
        step(i, x, pred_x0)
    return x


# --------------------------------------------------------------------------------------
# UniPC
# --------------------------------------------------------------------------------------

class _VPSchedule:
    """Continuous-time view of a discrete model: t_n = (n + 1) / N, log alpha(t) piecewise linear."""

    def __init__(self, alphas_cumprod: torch.Tensor):
        self.n = len(alphas_cumprod)
        self.t_grid = torch.linspace(0.0, 1.0, self.n + 1)[1:]
        self.log_alpha_grid = 0.5 * torch.log(alphas_cumprod.float().cpu())

    @staticmethod
    def _interp(x, xp, fp):
        # piecewise linear, extended linearly beyond the ends (xp ascending)
        idx = torch.searchsorted(xp, x.reshape(-1)).clamp(1, len(xp) - 1)
        x0, x1, y0, y1 = xp[idx - 1], xp[idx], fp[idx - 1], fp[idx]
        return (y0 + (x.reshape(-1) - x0) * (y1 - y0) / (x1 - x0)).reshape(x.shape)

    def log_alpha(self, t):
        return self._interp(t.cpu().float(), self.t_grid, self.log_alpha_grid).to(t.device)

    def alpha(self, t):
        return self.log_alpha(t).exp()

    def std(self, t):
        return (1.0 - torch.exp(2.0 * self.log_alpha(t))).sqrt()

    def lam(self, t):
        la = self.log_alpha(t)
        return la - 0.5 * torch.log(1.0 - torch.exp(2.0 * la))


def unipc(model: EpsModel, x, timesteps, alphas_cumprod, *, noise, step, variant="bh1", order=3,
          lower_order_final=True, is_img2img=False):
    """A1111's UniPC: ``len(timesteps)`` steps from t=1 (img2img: from the first timestep) to t=1/N.
    The order is lowered to the number of steps where A1111 would refuse (fewer steps than order)."""
    vp = _VPSchedule(alphas_cumprod)
    steps = len(timesteps)
    order = max(1, min(order, steps))
    t_T = float(timesteps[-1]) / 1000 + 1 / 1000 if is_img2img else 1.0
    grid = torch.linspace(t_T, 1.0 / vp.n, steps + 1)
    ones = x.new_ones([x.shape[0]])

    def data_pred(x, t):
        e = model(x, (t - 1.0 / vp.n) * 1000.0 * ones)
        return (x - vp.std(t) * e) / vp.alpha(t)

    def update(x, prev_models, prev_ts, t, ord_, corrector):
        return _unipc_bh_update(vp, data_pred, x, prev_models, prev_ts, t, ord_, variant, corrector)

    t0 = grid[0]
    models, ts = [data_pred(x, t0)], [t0]
    n_step = 0
    for k in range(1, order):  # warm-up with increasing order
        t = grid[k]
        x, m = update(x, models, ts, t, k, True)
        step(n_step, x, m)
        n_step += 1
        models.append(m)
        ts.append(t)
    for k in range(order, steps + 1):
        t = grid[k]
        ord_ = min(order, steps + 1 - k) if lower_order_final else order
        last = k == steps
        x, m = update(x, models, ts, t, ord_, not last)
        step(n_step, x, m if m is not None else x)
        n_step += 1
        models, ts = models[1:] + [models[-1]], ts[1:] + [t]
        if not last:
            models[-1] = m
    return x


def _unipc_bh_update(vp, data_pred, x, prev_models, prev_ts, t, order, variant, use_corrector):
    """One UniPC step in data-prediction form: predictor from the last `order` model values,
    then (unless at the end) a corrector that uses the model at the new point."""
    t_prev = prev_ts[-1]
    m_prev = prev_models[-1]
    lam_prev, lam_t = vp.lam(t_prev.reshape(1)), vp.lam(t.reshape(1))
    h = (lam_t - lam_prev)[0]
    rks, diffs = [], []
    for i in range(1, order):
        r = ((vp.lam(prev_ts[-(i + 1)].reshape(1)) - lam_prev) / h)[0]
        rks.append(r)
        diffs.append((prev_models[-(i + 1)] - m_prev) / r)
    rks = torch.tensor([float(r) for r in rks] + [1.0])
    hh = -h
    h_phi_1 = torch.expm1(hh)
    b_h = hh if variant == "bh1" else torch.expm1(hh)
    rows, b = [], []
    h_phi_k = h_phi_1 / hh - 1
    fact = 1
    for i in range(1, order + 1):
        rows.append(rks ** (i - 1))
        b.append(float(h_phi_k * fact / b_h))
        fact *= i + 1
        h_phi_k = h_phi_k / hh - 1 / fact
    R, b = torch.stack(rows), torch.tensor(b)
    alpha_t = vp.alpha(t.reshape(1))[0]
    sigma_ratio = vp.std(t.reshape(1))[0] / vp.std(t_prev.reshape(1))[0]
    base = sigma_ratio * x - alpha_t * h_phi_1 * m_prev
    D = torch.stack(diffs, dim=1) if diffs else None
    if D is not None:
        rhos_p = torch.tensor([0.5]) if order == 2 else torch.linalg.solve(R[:-1, :-1], b[:-1])
        x_t = base - alpha_t * b_h * torch.einsum("k,bkchw->bchw", rhos_p.to(x.device, x.dtype, non_blocking=True), D)
    else:
        x_t = base
    if not use_corrector:
        return x_t, None
    rhos_c = torch.tensor([0.5]) if order == 1 else torch.linalg.solve(R, b)
    m_t = data_pred(x_t, t)
    corr = torch.einsum("k,bkchw->bchw", rhos_c[:-1].to(x.device, x.dtype, non_blocking=True), D) \
        if D is not None else 0
    x_t = base - alpha_t * b_h * (corr + rhos_c[-1] * (m_t - m_prev))
    return x_t, m_t
