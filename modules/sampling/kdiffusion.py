"""The k-diffusion samplers A1111 offers, written from their published definitions
(Karras et al. 2022; DPM-Solver / DPM-Solver++ by Lu et al.; Restart sampling by Xu et al.
2023; A1111's ``restart_sampler`` and ``sample_lcm``) so that the same sigmas, model and noise
give A1111's latent.

Every sampler is ``fn(model, x, sigmas, *, noise, step, **options) -> x`` where

* ``model(x, sigma)`` returns the denoised latent for a scalar sigma tensor,
* ``noise`` is a :class:`Noise`: ``noise.fresh()`` draws the next per-image ancestral noise
  (A1111 takes it from the job's per-image generators in the order k-diffusion asks for it),
  ``noise.between(sigma, sigma_next)`` the Brownian-tree noise of the SDE samplers,
* ``step(i, x, denoised)`` is called once per sampler step (progress, previews, interrupt).
"""
from __future__ import annotations

import math
import warnings
from typing import Callable

import torch

# torchsde warns when a query lands a float32 rounding outside the tree's interval (the interval ends are
# the schedule's own sigmas); the increment it returns is the right one
warnings.filterwarnings("ignore", message=r"Should have (ta|tb)", category=UserWarning)

Model = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
StepCallback = Callable[[int, torch.Tensor, torch.Tensor], None]


class Noise:
    """Where a sampler's extra noise comes from."""

    def __init__(self, fresh: Callable[[], torch.Tensor], between: Callable | None = None):
        self.fresh = fresh
        self._between = between

    def between(self, sigma, sigma_next) -> torch.Tensor:
        return self._between(sigma, sigma_next) if self._between is not None else self.fresh()


class BrownianNoise:
    """Brownian-tree noise (torchsde), one tree per image seed, kept on the CPU, scaled to unit
    variance for the interval [sigma_next, sigma] (k-diffusion's BrownianTreeNoiseSampler as A1111
    builds it: the same picture at any batch size)."""

    def __init__(self, x: torch.Tensor, sigma_min, sigma_max, seeds: list[int]):
        import torchsde

        lo, hi = torch.as_tensor(sigma_min).float().cpu(), torch.as_tensor(sigma_max).float().cpu()
        self.flip = 1
        if hi < lo:
            lo, hi, self.flip = hi, lo, -1
        w0 = torch.zeros_like(x[0], device="cpu", dtype=torch.float32)
        self.trees = [torchsde.BrownianTree(lo, w0, hi, entropy=int(s)) for s in seeds]
        self.device, self.dtype = x.device, x.dtype

    def __call__(self, sigma, sigma_next) -> torch.Tensor:
        a = torch.as_tensor(sigma).float().cpu()
        b = torch.as_tensor(sigma_next).float().cpu()
        sign = self.flip
        if b < a:
            a, b, sign = b, a, -sign
        w = torch.stack([tree(a, b) for tree in self.trees]) * sign
        return (w / (b - a).abs().sqrt()).to(self.device, self.dtype, non_blocking=True)


def to_d(x, sigma, denoised):
    return (x - denoised) / sigma


def ancestral_step(sigma_from, sigma_to, eta: float = 1.0):
    """Split a step to sigma_to into a deterministic step down to sigma_down and fresh noise sigma_up."""
    if not eta:
        return sigma_to, torch.zeros_like(torch.as_tensor(sigma_to))
    sigma_up = torch.minimum(torch.as_tensor(sigma_to),
                             eta * (sigma_to ** 2 * (sigma_from ** 2 - sigma_to ** 2) / sigma_from ** 2) ** 0.5)
    sigma_down = (sigma_to ** 2 - sigma_up ** 2) ** 0.5
    return sigma_down, sigma_up


def _t(sigma):
    return sigma.log().neg()


def _sigma(t):
    return t.neg().exp()


def _churn(x, sigma, n_steps, noise, s_churn, s_tmin, s_tmax, s_noise):
    gamma = min(s_churn / n_steps, 2 ** 0.5 - 1) if s_tmin <= sigma <= s_tmax else 0.0
    sigma_hat = sigma * (gamma + 1)
    if gamma > 0:
        x = x + noise.fresh() * s_noise * (sigma_hat ** 2 - sigma ** 2) ** 0.5
    return x, sigma_hat


def _karras_loop(model, x, sigmas, noise, step, churn, second_stage=None):
    """Karras et al.'s Algorithm 2 (optional churn), an Euler step onto sigma 0, and `second_stage`
    (x, d, sigma_hat, sigma_next) -> x for the other steps (None: Euler everywhere)."""
    for i in range(len(sigmas) - 1):
        x, sigma_hat = _churn(x, sigmas[i], len(sigmas) - 1, noise, *churn)
        denoised = model(x, sigma_hat)
        d = to_d(x, sigma_hat, denoised)
        step(i, x, denoised)
        if second_stage is None or sigmas[i + 1] == 0:
            x = x + d * (sigmas[i + 1] - sigma_hat)
        else:
            x = second_stage(x, d, sigma_hat, sigmas[i + 1])
    return x


def euler(model, x, sigmas, *, noise, step, s_churn=0.0, s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0):
    return _karras_loop(model, x, sigmas, noise, step, (s_churn, s_tmin, s_tmax, s_noise))


def euler_ancestral(model, x, sigmas, *, noise, step, eta=1.0, s_noise=1.0):
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        step(i, x, denoised)
        x = x + to_d(x, sigmas[i], denoised) * (sigma_down - sigmas[i])
        if sigmas[i + 1] > 0:
            x = x + noise.fresh() * s_noise * sigma_up
    return x


def heun(model, x, sigmas, *, noise, step, s_churn=0.0, s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0):
    def trapezoid(x, d, sigma, sigma_next):
        x_2 = x + d * (sigma_next - sigma)
        d_2 = to_d(x_2, sigma_next, model(x_2, sigma_next))
        return x + (d + d_2) / 2 * (sigma_next - sigma)

    return _karras_loop(model, x, sigmas, noise, step, (s_churn, s_tmin, s_tmax, s_noise), trapezoid)


def dpm_2(model, x, sigmas, *, noise, step, s_churn=0.0, s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0):
    def midpoint(x, d, sigma, sigma_next):  # at the geometric mean of the two levels
        sigma_mid = sigma.log().lerp(sigma_next.log(), 0.5).exp()
        x_2 = x + d * (sigma_mid - sigma)
        return x + to_d(x_2, sigma_mid, model(x_2, sigma_mid)) * (sigma_next - sigma)

    return _karras_loop(model, x, sigmas, noise, step, (s_churn, s_tmin, s_tmax, s_noise), midpoint)


def dpm_2_ancestral(model, x, sigmas, *, noise, step, eta=1.0, s_noise=1.0):
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        step(i, x, denoised)
        d = to_d(x, sigmas[i], denoised)
        if sigma_down == 0:
            x = x + d * (sigma_down - sigmas[i])
        else:
            sigma_mid = sigmas[i].log().lerp(sigma_down.log(), 0.5).exp()
            x_2 = x + d * (sigma_mid - sigmas[i])
            d_2 = to_d(x_2, sigma_mid, model(x_2, sigma_mid))
            x = x + d_2 * (sigma_down - sigmas[i])
            x = x + noise.fresh() * s_noise * sigma_up
    return x


def _lms_coefficient(order: int, ts, i: int, j: int) -> float:
    """Integral over [t_i, t_{i+1}] of the Lagrange basis polynomial for point i-j."""
    from scipy import integrate

    def basis(tau):
        prod = 1.0
        for k in range(order):
            if k != j:
                prod *= (tau - ts[i - k]) / (ts[i - j] - ts[i - k])
        return prod

    return integrate.quad(basis, ts[i], ts[i + 1], epsrel=1e-4)[0]


def lms(model, x, sigmas, *, noise, step, order=4):
    ts = sigmas.detach().cpu().numpy()
    history = []
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        history.append(to_d(x, sigmas[i], denoised))
        if len(history) > order:
            history.pop(0)
        step(i, x, denoised)
        cur = min(i + 1, order)
        coeffs = [_lms_coefficient(cur, ts, i, j) for j in range(cur)]
        x = x + sum(c * d for c, d in zip(coeffs, reversed(history)))
    return x


def dpmpp_2s_ancestral(model, x, sigmas, *, noise, step, eta=1.0, s_noise=1.0):
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        step(i, x, denoised)
        if sigma_down == 0:
            x = x + to_d(x, sigmas[i], denoised) * (sigma_down - sigmas[i])
        else:
            t, t_next = _t(sigmas[i]), _t(sigma_down)
            h = t_next - t
            s = t + h / 2
            x_2 = (_sigma(s) / _sigma(t)) * x - (-h / 2).expm1() * denoised
            denoised_2 = model(x_2, _sigma(s))
            x = (_sigma(t_next) / _sigma(t)) * x - (-h).expm1() * denoised_2
        if sigmas[i + 1] > 0:
            x = x + noise.fresh() * s_noise * sigma_up
    return x


def dpmpp_sde(model, x, sigmas, *, noise, step, eta=1.0, s_noise=1.0, r=0.5):
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        step(i, x, denoised)
        if sigmas[i + 1] == 0:
            x = x + to_d(x, sigmas[i], denoised) * (sigmas[i + 1] - sigmas[i])
            continue
        t, t_next = _t(sigmas[i]), _t(sigmas[i + 1])
        h = t_next - t
        s = t + h * r
        fac = 1 / (2 * r)
        # first stage: to the intermediate level s
        sd, su = ancestral_step(_sigma(t), _sigma(s), eta)
        s_ = _t(sd)
        x_2 = (_sigma(s_) / _sigma(t)) * x - (t - s_).expm1() * denoised
        x_2 = x_2 + noise.between(_sigma(t), _sigma(s)) * s_noise * su
        denoised_2 = model(x_2, _sigma(s))
        # second stage: the whole step with the blended prediction
        sd, su = ancestral_step(_sigma(t), _sigma(t_next), eta)
        t_next_ = _t(sd)
        blended = (1 - fac) * denoised + fac * denoised_2
        x = (_sigma(t_next_) / _sigma(t)) * x - (t - t_next_).expm1() * blended
        x = x + noise.between(_sigma(t), _sigma(t_next)) * s_noise * su
    return x


def dpmpp_2m(model, x, sigmas, *, noise, step):
    old = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        step(i, x, denoised)
        t, t_next = _t(sigmas[i]), _t(sigmas[i + 1])
        h = t_next - t
        if old is None or sigmas[i + 1] == 0:
            x = (_sigma(t_next) / _sigma(t)) * x - (-h).expm1() * denoised
        else:
            r = (t - _t(sigmas[i - 1])) / h
            corrected = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old
            x = (_sigma(t_next) / _sigma(t)) * x - (-h).expm1() * corrected
        old = denoised
    return x


def _sde_noise(noise, sigma, sigma_next, eta_h, s_noise):
    """The fresh noise of a DPM++ 2M/3M SDE step: sigma_next * sqrt(1 - exp(-2 eta h)) of Brownian noise."""
    return noise.between(sigma, sigma_next) * sigma_next * (-2 * eta_h).expm1().neg().sqrt() * s_noise


def dpmpp_2m_sde(model, x, sigmas, *, noise, step, eta=1.0, s_noise=1.0, solver_type="midpoint"):
    old, h_last, h = None, None, None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        step(i, x, denoised)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            t, s = -sigmas[i].log(), -sigmas[i + 1].log()
            h = s - t
            eta_h = eta * h
            x = sigmas[i + 1] / sigmas[i] * (-eta_h).exp() * x + (-h - eta_h).expm1().neg() * denoised
            if old is not None:
                r = h_last / h
                if solver_type == "heun":
                    x = x + ((-h - eta_h).expm1().neg() / (-h - eta_h) + 1) * (1 / r) * (denoised - old)
                else:
                    x = x + 0.5 * (-h - eta_h).expm1().neg() * (1 / r) * (denoised - old)
            if eta:
                x = x + _sde_noise(noise, sigmas[i], sigmas[i + 1], eta_h, s_noise)
        old, h_last = denoised, h
    return x


def dpmpp_3m_sde(model, x, sigmas, *, noise, step, eta=1.0, s_noise=1.0):
    d_1 = d_2 = None
    h = h_1 = h_2 = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        step(i, x, denoised)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            t, s = -sigmas[i].log(), -sigmas[i + 1].log()
            h = s - t
            h_eta = h * (eta + 1)
            x = torch.exp(-h_eta) * x + (-h_eta).expm1().neg() * denoised
            phi_2 = h_eta.neg().expm1() / h_eta + 1
            if h_2 is not None:
                r0, r1 = h_1 / h, h_2 / h
                d1_0 = (denoised - d_1) / r0
                d1_1 = (d_1 - d_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                x = x + phi_2 * d1 - (phi_2 / h_eta - 0.5) * d2
            elif h_1 is not None:
                x = x + phi_2 * (denoised - d_1) / (h_1 / h)
            if eta:
                x = x + _sde_noise(noise, sigmas[i], sigmas[i + 1], h * eta, s_noise)
        d_1, d_2 = denoised, d_1
        h_1, h_2 = h, h_1
    return x


def lcm(model, x, sigmas, *, noise, step):
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        step(i, x, denoised)
        x = denoised
        if sigmas[i + 1] > 0:
            x = x + sigmas[i + 1] * noise.between(sigmas[i], sigmas[i + 1])
    return x


# --------------------------------------------------------------------------------------
# Restart (A1111's restart_sampler)
# --------------------------------------------------------------------------------------

def _karras(n, sigma_min, sigma_max, rho=7.0):
    ramp = torch.linspace(0, 1, n)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return torch.cat([(hi + ramp * (lo - hi)) ** rho, torch.zeros(1)])


def restart_plan(sigmas: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(sigma, sigma_next) pairs of a Restart run: the Karras schedule of the steps not spent on
    restarts, plus, at the level nearest 0.1, jumps back up to 2 that are walked down again."""
    steps = len(sigmas) - 1
    restarts = {}
    if steps >= 20:
        r_steps, r_times = (steps // 4, 2) if steps >= 36 else (9, 1)
        sigmas = _karras(steps - r_steps * r_times, sigmas[-2].item(), sigmas[0].item())
        restarts = {int(torch.argmin(abs(sigmas - 0.1), dim=0)): (r_steps + 1, r_times, 2.0)}
    pairs = []
    for i in range(len(sigmas) - 1):
        pairs.append((sigmas[i], sigmas[i + 1]))
        if i + 1 in restarts:
            r_steps, r_times, r_max = restarts[i + 1]
            lo_idx, hi_idx = i + 1, int(torch.argmin(abs(sigmas - r_max), dim=0))
            if hi_idx < lo_idx:
                ladder = _karras(r_steps, sigmas[lo_idx].item(), sigmas[hi_idx].item())[:-1]
                for _ in range(r_times):
                    pairs.extend(zip(ladder[:-1], ladder[1:]))
    return pairs


def restart(model, x, sigmas, *, noise, step, s_noise=1.0):
    last = None
    for i, (old, new) in enumerate(restart_plan(sigmas)):
        if last is not None and last < old:  # a restart: noise back up to `old`
            x = x + noise.fresh() * s_noise * (old ** 2 - last ** 2) ** 0.5
        denoised = model(x, old)
        d = to_d(x, old, denoised)
        step(i, x, denoised)
        dt = new - old
        if new == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            d_2 = to_d(x_2, new, model(x_2, new))
            x = x + (d + d_2) / 2 * dt
        last = new
    return x


# --------------------------------------------------------------------------------------
# DPM fast / DPM adaptive (DPM-Solver in log-sigma time, k-diffusion's DPMSolver)
# --------------------------------------------------------------------------------------

class _DPMSolver:
    def __init__(self, model: Model, noise: Noise, s_noise: float):
        self.model, self.noise, self.s_noise = model, noise, s_noise

    def eps(self, cache: dict, key: str, x, t):
        if key not in cache:
            cache[key] = (x - self.model(x, _sigma(t))) / _sigma(t)
        return cache[key]

    def order1(self, x, t, t_next, cache):
        h = t_next - t
        return x - _sigma(t_next) * h.expm1() * self.eps(cache, "eps", x, t)

    def order2(self, x, t, t_next, cache, r1=0.5):
        h = t_next - t
        e = self.eps(cache, "eps", x, t)
        s1 = t + r1 * h
        u1 = x - _sigma(s1) * (r1 * h).expm1() * e
        e1 = self.eps(cache, "eps_r1", u1, s1)
        return x - _sigma(t_next) * h.expm1() * e - _sigma(t_next) / (2 * r1) * h.expm1() * (e1 - e)

    def order3(self, x, t, t_next, cache, r1=1 / 3, r2=2 / 3):
        h = t_next - t
        e = self.eps(cache, "eps", x, t)
        s1, s2 = t + r1 * h, t + r2 * h
        u1 = x - _sigma(s1) * (r1 * h).expm1() * e
        e1 = self.eps(cache, "eps_r1", u1, s1)
        u2 = x - _sigma(s2) * (r2 * h).expm1() * e - _sigma(s2) * (r2 / r1) * ((r2 * h).expm1() / (r2 * h) - 1) * (e1 - e)
        e2 = self.eps(cache, "eps_r2", u2, s2)
        return x - _sigma(t_next) * h.expm1() * e - _sigma(t_next) / r2 * (h.expm1() / h - 1) * (e2 - e)

    def ancestral_target(self, t, t_next, t_end, eta):
        if not eta:
            return t_next, 0.0
        sd, _ = ancestral_step(_sigma(t), _sigma(t_next), eta)
        t_next_ = torch.minimum(t_end, _t(sd))
        return t_next_, (_sigma(t_next) ** 2 - _sigma(t_next_) ** 2) ** 0.5


def dpm_fast(model, x, sigma_min, sigma_max, n, *, noise, step, eta=0.0, s_noise=1.0):
    solver = _DPMSolver(model, noise, s_noise)
    t_start, t_end = _t(torch.as_tensor(sigma_max)), _t(torch.as_tensor(sigma_min))
    m = math.floor(n / 3) + 1
    ts = torch.linspace(float(t_start), float(t_end), m + 1)
    orders = [3] * (m - 2) + [2, 1] if n % 3 == 0 else [3] * (m - 1) + [n % 3]
    for i, order in enumerate(orders):
        cache = {}
        t, t_next = ts[i], ts[i + 1]
        t_next_, su = solver.ancestral_target(t, t_next, t_end, eta)
        e = solver.eps(cache, "eps", x, t)
        step(i, x, x - _sigma(t) * e)
        x = (solver.order1, solver.order2, solver.order3)[order - 1](x, t, t_next_, cache)
        x = x + su * s_noise * noise.between(_sigma(t), _sigma(t_next))
    return x


class _PID:
    """Step size control of DPM adaptive (proportional-integral-derivative on the inverse error)."""

    def __init__(self, h, pcoeff, icoeff, dcoeff, order, accept_safety, eps=1e-8):
        self.h = h
        self.b1 = (pcoeff + icoeff + dcoeff) / order
        self.b2 = -(pcoeff + 2 * dcoeff) / order
        self.b3 = dcoeff / order
        self.accept_safety, self.eps = accept_safety, eps
        self.errs: list[float] = []

    def propose(self, error) -> bool:
        inv = 1 / (float(error) + self.eps)
        if not self.errs:
            self.errs = [inv, inv, inv]
        self.errs[0] = inv
        factor = self.errs[0] ** self.b1 * self.errs[1] ** self.b2 * self.errs[2] ** self.b3
        factor = 1 + math.atan(factor - 1)
        accept = factor >= self.accept_safety
        if accept:
            self.errs[2], self.errs[1] = self.errs[1], self.errs[0]
        self.h *= factor
        return accept


def dpm_adaptive(model, x, sigma_min, sigma_max, *, noise, step, order=3, rtol=0.05, atol=0.0078, h_init=0.05,
                 pcoeff=0.0, icoeff=1.0, dcoeff=0.0, accept_safety=0.81, eta=0.0, s_noise=1.0, max_evals=10000):
    solver = _DPMSolver(model, noise, s_noise)
    t_start, t_end = _t(torch.as_tensor(sigma_max)), _t(torch.as_tensor(sigma_min))
    atol_t, rtol_t = torch.tensor(atol), torch.tensor(rtol)
    s, x_prev = t_start, x
    pid = _PID(abs(h_init), pcoeff, icoeff, dcoeff, 1.5 if eta else order, accept_safety)
    n_steps = 0
    while s < t_end - 1e-5:
        cache = {}
        t = torch.minimum(t_end, s + pid.h)
        t_, su = solver.ancestral_target(s, t, t_end, eta)
        e = solver.eps(cache, "eps", x, s)
        denoised = x - _sigma(s) * e
        if order == 2:
            x_low = solver.order1(x, s, t_, cache)
            x_high = solver.order2(x, s, t_, cache)
        else:
            x_low = solver.order2(x, s, t_, cache, r1=1 / 3)
            x_high = solver.order3(x, s, t_, cache)
        delta = torch.maximum(atol_t, rtol_t * torch.maximum(x_low.abs(), x_prev.abs()))
        error = torch.linalg.norm((x_low - x_high) / delta) / x.numel() ** 0.5
        if pid.propose(error):
            x_prev = x_low
            x = x_high + su * s_noise * noise.between(_sigma(s), _sigma(t))
            s = t
        step(n_steps, x, denoised)
        n_steps += 1
        if n_steps * order > max_evals:
            raise RuntimeError(f"DPM adaptive did not converge in {max_evals} model evaluations")
    return x
