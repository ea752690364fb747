"""Sampler table: A1111's sampler and schedule-type names, and how a pass is sampled.

A1111 (v1.10) splits what users call a "sampler" into the sampler proper ("Euler a",
"DPM++ 2M", ...) and the schedule type ("Automatic", "Karras", ...), i.e. how the noise
levels are spaced over the steps.  Old infotexts and API clients still send combined
names such as "DPM++ 2M Karras"; :func:`resolve_sampler` splits those.

Every sampler here is the algorithm A1111 runs, written in :mod:`modules.sampling` from the
published definitions (not diffusers' schedulers, whose step grids and last steps differ
from A1111's):

* k-diffusion samplers (Euler ... Restart, LCM) walk a sigma schedule; every schedule type
  applies to every one of them, as in A1111.  "Automatic" means the sampler's A1111 default
  (Karras for DPM++ 2M, DPM++ SDE, DPM++ 2S a, DPM2, DPM2 a, Restart; Exponential for the
  DPM++ 2M/3M SDE family; otherwise the model's own spacing, k-diffusion's ``get_sigmas``).
  DPM fast and DPM adaptive choose their own steps between the model's smallest and largest
  sigma (A1111 passes them no schedule).
* A1111's timestep samplers (DDIM, DDIM CFG++, PLMS, UniPC) walk its
  ``1 + k * (1000 // steps)`` grid; schedule types do not apply to them.

:func:`plan_pass` turns (sampler, schedule type, steps, model, img2img strength) into a
:class:`SamplingPass` that prepares the starting latent and runs the sampler on a
classifier-free-guidance callable.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch

from modules.sampling import kdiffusion as K
from modules.sampling import schedules as S
from modules.sampling import timesteps as T

__all__ = [
    "SamplerInfo", "ScheduleType", "SamplerUnavailableError", "SAMPLERS", "SCHEDULE_TYPES",
    "sampler_names", "schedule_type_labels", "find_sampler", "find_schedule_type", "resolve_sampler",
    "effective_schedule_type", "schedule_types_for", "api_samplers", "api_schedulers",
    "SamplingPass", "plan_pass", "img2img_steps",
]


class SamplerUnavailableError(ValueError):
    """The sampler/schedule exists in the table but needs a package that is not installed."""


class ScheduleTooLongError(ValueError):
    """An exact-steps pass at a tiny denoising strength would stretch its schedule past MAX_SCHEDULE."""


MAX_SCHEDULE = 100_000   # the longest schedule an exact-steps pass may stretch to (steps / strength)


# --------------------------------------------------------------------------------------
# schedule types
# --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ScheduleType:
    name: str                      # A1111 internal name ("karras")
    label: str                     # A1111 label shown in UI / infotext ("Karras")
    aliases: tuple[str, ...] = ()
    default_rho: float = -1
    need_inner_model: bool = False
    requires: str | None = None   # python package needed at runtime (e.g. "scipy")

    @property
    def available(self) -> bool:
        return self.requires is None or importlib.util.find_spec(self.requires) is not None


SCHEDULE_TYPES: list[ScheduleType] = [
    ScheduleType("automatic", "Automatic"),
    ScheduleType("uniform", "Uniform", need_inner_model=True),
    ScheduleType("karras", "Karras", default_rho=7.0),
    ScheduleType("exponential", "Exponential"),
    ScheduleType("polyexponential", "Polyexponential", default_rho=1.0),
    ScheduleType("sgm_uniform", "SGM Uniform", aliases=("SGMUniform",), need_inner_model=True),
    ScheduleType("kl_optimal", "KL Optimal"),
    ScheduleType("align_your_steps", "Align Your Steps"),
    ScheduleType("simple", "Simple", need_inner_model=True),
    ScheduleType("normal", "Normal", need_inner_model=True),
    ScheduleType("ddim", "DDIM", need_inner_model=True),
    ScheduleType("beta", "Beta", need_inner_model=True, requires="scipy"),
]

_SCHEDULE_BY_NAME = {s.name: s for s in SCHEDULE_TYPES}
AUTOMATIC = _SCHEDULE_BY_NAME["automatic"]


# --------------------------------------------------------------------------------------
# samplers
# --------------------------------------------------------------------------------------

# A1111's two eta settings: (setting key, default, infotext key written when the eta differs from the default)
ETA_SETTINGS = {"ancestral": ("eta_ancestral", 1.0, "Eta"), "ddim": ("eta_ddim", 0.0, "Eta DDIM")}


@dataclass(frozen=True)
class SamplerInfo:
    name: str
    aliases: tuple[str, ...]
    fn: Callable
    kind: str = "sigmas"            # "sigmas" (k-diffusion), "range" (DPM fast/adaptive), "timesteps"
    options: Mapping[str, Any] = field(default_factory=dict)   # A1111's sampler options (API shape)
    kwargs: Mapping[str, Any] = field(default_factory=dict)    # passed to fn
    eta: str | None = None           # which of A1111's eta settings applies: a key of ETA_SETTINGS
    brownian: bool = False           # noise from a Brownian tree per image seed
    requires: tuple[str, ...] = ()
    note: str = ""

    @property
    def default_schedule(self) -> str | None:
        """What "Automatic" means: A1111's `scheduler` option; None = the model's own spacing."""
        return self.options.get("scheduler")

    @property
    def missing_packages(self) -> tuple[str, ...]:
        return tuple(p for p in self.requires if importlib.util.find_spec(p) is None)

    @property
    def available(self) -> bool:
        return not self.missing_packages

    @property
    def eta_default(self) -> float | None:
        return ETA_SETTINGS[self.eta][1] if self.eta is not None else None

    @property
    def discard_penultimate(self) -> bool:
        return bool(self.options.get("discard_next_to_last_sigma"))


def _k(name, aliases, fn, options=None, **kw) -> SamplerInfo:
    return SamplerInfo(name, tuple(aliases), fn, "sigmas", options or {}, **kw)


SAMPLERS: list[SamplerInfo] = [
    _k("DPM++ 2M", ["k_dpmpp_2m"], K.dpmpp_2m, {"scheduler": "karras"}),
    _k("DPM++ SDE", ["k_dpmpp_sde"], K.dpmpp_sde,
       {"scheduler": "karras", "second_order": True, "brownian_noise": True},
       eta="ancestral", brownian=True, requires=("torchsde",)),
    _k("DPM++ 2M SDE", ["k_dpmpp_2m_sde"], K.dpmpp_2m_sde, {"scheduler": "exponential", "brownian_noise": True},
       eta="ancestral", brownian=True, requires=("torchsde",)),
    _k("DPM++ 2M SDE Heun", ["k_dpmpp_2m_sde_heun"], K.dpmpp_2m_sde,
       {"scheduler": "exponential", "brownian_noise": True, "solver_type": "heun"},
       kwargs={"solver_type": "heun"}, eta="ancestral", brownian=True, requires=("torchsde",)),
    _k("DPM++ 2S a", ["k_dpmpp_2s_a"], K.dpmpp_2s_ancestral,
       {"scheduler": "karras", "uses_ensd": True, "second_order": True}, eta="ancestral"),
    _k("DPM++ 3M SDE", ["k_dpmpp_3m_sde"], K.dpmpp_3m_sde,
       {"scheduler": "exponential", "discard_next_to_last_sigma": True, "brownian_noise": True},
       eta="ancestral", brownian=True, requires=("torchsde",)),
    _k("Euler a", ["k_euler_a", "k_euler_ancestral"], K.euler_ancestral, {"uses_ensd": True}, eta="ancestral"),
    _k("Euler", ["k_euler"], K.euler),
    _k("LMS", ["k_lms"], K.lms, requires=("scipy",)),
    _k("Heun", ["k_heun"], K.heun, {"second_order": True}),
    _k("DPM2", ["k_dpm_2"], K.dpm_2, {"scheduler": "karras", "discard_next_to_last_sigma": True, "second_order": True}),
    _k("DPM2 a", ["k_dpm_2_a"], K.dpm_2_ancestral,
       {"scheduler": "karras", "discard_next_to_last_sigma": True, "uses_ensd": True, "second_order": True},
       eta="ancestral"),
    SamplerInfo("DPM fast", ("k_dpm_fast",), K.dpm_fast, "range", {"uses_ensd": True}, eta="ancestral"),
    SamplerInfo("DPM adaptive", ("k_dpm_ad",), K.dpm_adaptive, "range", {"uses_ensd": True}, eta="ancestral"),
    _k("Restart", ["restart"], K.restart, {"scheduler": "karras", "second_order": True}),
    SamplerInfo("DDIM", ("ddim",), T.ddim, "timesteps", eta="ddim"),
    SamplerInfo("DDIM CFG++", ("ddim_cfgpp",), T.ddim, "timesteps", kwargs={"cfgpp": True}, eta="ddim"),
    SamplerInfo("PLMS", ("plms",), T.plms, "timesteps"),
    SamplerInfo("UniPC", ("unipc",), T.unipc, "timesteps",
                kwargs={"variant": "bh1", "order": 3, "lower_order_final": True},
                note="A1111 defaults: order 3, variant bh1, lower order final; below 3 steps the order is "
                     "lowered to the step count (A1111 refuses such runs)."),
    _k("LCM", ["k_lcm"], K.lcm),
]

# Old A1111 aliases of the pre-1.8 combined "<sampler> <schedule>" entries.
_LEGACY_ALIASES: dict[str, tuple[str, str]] = {
    "k_lms_ka": ("LMS", "karras"),
    "k_dpm_2_ka": ("DPM2", "karras"),
    "k_dpm_2_a_ka": ("DPM2 a", "karras"),
    "k_dpmpp_2s_a_ka": ("DPM++ 2S a", "karras"),
    "k_dpmpp_2m_ka": ("DPM++ 2M", "karras"),
    "k_dpmpp_sde_ka": ("DPM++ SDE", "karras"),
    "k_dpmpp_2m_sde_ka": ("DPM++ 2M SDE", "karras"),
    "k_dpmpp_2m_sde_exp": ("DPM++ 2M SDE", "exponential"),
    "k_dpmpp_2m_sde_heun_ka": ("DPM++ 2M SDE Heun", "karras"),
    "k_dpmpp_2m_sde_heun_exp": ("DPM++ 2M SDE Heun", "exponential"),
    "k_dpmpp_3m_sde_ka": ("DPM++ 3M SDE", "karras"),
    "k_dpmpp_3m_sde_exp": ("DPM++ 3M SDE", "exponential"),
}


# --------------------------------------------------------------------------------------
# lookups
# --------------------------------------------------------------------------------------

def sampler_names(include_unavailable: bool = False) -> list[str]:
    """Sampler names in A1111's order (only those usable here unless asked otherwise)."""
    return [s.name for s in SAMPLERS if include_unavailable or s.available]


def schedule_type_labels(include_unavailable: bool = False) -> list[str]:
    return [s.label for s in SCHEDULE_TYPES if include_unavailable or s.available]


def find_sampler(name: str) -> SamplerInfo | None:
    """Exact lookup by name or alias, case-insensitive; None when unknown."""
    key = name.strip().lower()
    for s in SAMPLERS:
        if s.name.lower() == key or key in (a.lower() for a in s.aliases):
            return s
    return None


def find_schedule_type(name: str | None) -> ScheduleType | None:
    """Lookup by label, name or alias, case-insensitive; None/'' -> Automatic."""
    if name is None or not str(name).strip():
        return AUTOMATIC
    key = str(name).strip().lower()
    for s in SCHEDULE_TYPES:
        if key in (s.name.lower(), s.label.lower(), *(a.lower() for a in s.aliases)):
            return s
    return None


def _split_combined(name: str) -> tuple[SamplerInfo, ScheduleType] | None:
    """'DPM++ 2M Karras' -> (DPM++ 2M, Karras); None if it is not such a name."""
    stripped = name.strip()
    lower = stripped.lower()
    for sched in SCHEDULE_TYPES:
        if sched is AUTOMATIC:
            continue
        for option in (sched.label, sched.name, *sched.aliases):
            suffix = " " + option.lower()
            if lower.endswith(suffix):
                sampler = find_sampler(stripped[: -len(suffix)])
                if sampler is not None:
                    return sampler, sched
    return None


def schedule_types_for(sampler: SamplerInfo | str, include_unavailable: bool = False) -> list[ScheduleType]:
    """Schedule types that change this sampler's steps (Automatic first): all of them for the
    k-diffusion samplers, only Automatic for the timestep samplers and DPM fast/adaptive."""
    info = sampler if isinstance(sampler, SamplerInfo) else _resolve_name(sampler)[0]
    if info.kind != "sigmas":
        return [AUTOMATIC]
    return [s for s in SCHEDULE_TYPES if include_unavailable or s.available]


def _unknown_sampler(name: str) -> ValueError:
    return ValueError(f"Unknown sampler '{name}'. Valid samplers: {', '.join(sampler_names())}")


def _resolve_name(name: str) -> tuple[SamplerInfo, ScheduleType | None]:
    if name is None or not str(name).strip():
        raise _unknown_sampler(name)
    exact = find_sampler(name)
    if exact is not None:
        return exact, None
    legacy = _LEGACY_ALIASES.get(name.strip().lower())
    if legacy is not None:
        return find_sampler(legacy[0]), _SCHEDULE_BY_NAME[legacy[1]]
    combined = _split_combined(name)
    if combined is not None:
        return combined
    raise _unknown_sampler(name)


def resolve_sampler(name: str, schedule_type: str | None = None) -> tuple[SamplerInfo, ScheduleType]:
    """Resolve a sampler name/alias (case-insensitive) plus optional schedule type.

    Combined names ("DPM++ 2M Karras", "k_dpmpp_2m_ka") carry their own schedule type, which
    wins over ``schedule_type`` (as in A1111).  The schedule type is returned as named
    (Automatic stays Automatic; see :func:`effective_schedule_type`).  Raises ValueError for
    unknown names and for a schedule type the sampler does not use.
    """
    info, from_name = _resolve_name(name)
    if from_name is not None:
        sched = from_name
    else:
        sched = find_schedule_type(schedule_type)
        if sched is None:
            raise ValueError(f"Unknown schedule type '{schedule_type}'. Valid schedule types: "
                             f"{', '.join(schedule_type_labels())}")
    allowed = schedule_types_for(info, include_unavailable=True)
    if sched not in allowed:
        raise ValueError(f"Schedule type '{sched.label}' is not used by sampler '{info.name}', which sets its own "
                         f"steps. Valid schedule types for it: {', '.join(s.label for s in allowed)}")
    return info, sched


def effective_schedule_type(sampler: SamplerInfo, schedule: ScheduleType) -> ScheduleType | None:
    """Automatic -> the sampler's A1111 default; None means the model's own spacing (A1111 then
    writes no "Schedule type") or a sampler that sets its own steps."""
    if sampler.kind != "sigmas":
        return None
    if schedule is not AUTOMATIC:
        return schedule
    return _SCHEDULE_BY_NAME[sampler.default_schedule] if sampler.default_schedule else None


# --------------------------------------------------------------------------------------
# running a pass
# --------------------------------------------------------------------------------------

def img2img_steps(steps: int, strength: float, exact: bool) -> tuple[int, int]:
    """A1111's (schedule length, t_enc) of an img2img pass: it runs the last t_enc + 1 steps of a
    `steps`-step schedule; `exact` (the img2img_fix_steps setting, and every hires pass) stretches
    the schedule so exactly `steps` steps run."""
    if exact:
        if strength > 0 and steps > MAX_SCHEDULE * min(strength, 0.999):
            raise ScheduleTooLongError(f"{strength!r} is too small: {steps} steps at this strength would stretch "
                                       f"the schedule over more than {MAX_SCHEDULE} steps")
        total = int(steps / min(strength, 0.999)) if strength > 0 else 0
        return total, steps - 1
    return steps, int(min(strength, 0.999) * steps)


@dataclass
class ModelParams:
    """What a pass needs to know of the model: its noise levels and what its UNet predicts."""
    alphas_cumprod: torch.Tensor
    prediction: str = "epsilon"     # or "v_prediction"
    ays_sigmas: tuple[float, ...] | None = None   # the model family's Align Your Steps levels (None: SD 1.5)


@dataclass
class SamplingPass:
    info: SamplerInfo
    model: ModelParams
    sigmas: torch.Tensor | None = None       # the levels this pass walks (k-diffusion, DPM fast/adaptive)
    timesteps: torch.Tensor | None = None    # the grid this pass walks (timestep samplers)
    start_level: float = 0.0                 # sigma (or timestep) the starting latent is noised to
    img2img: bool = False
    eta: float | None = None                 # for samplers with an eta (SamplerInfo.eta)
    empty: bool = False                      # img2img at strength 0 with exact steps: no step at all

    @property
    def steps(self) -> int:
        """Sampler steps (progress callbacks) this pass makes; DPM adaptive: an estimate."""
        if self.empty:
            return 0
        if self.info.kind == "timesteps":
            n = len(self.timesteps)
            return n if self.info.fn is T.unipc else max(n - 1, 0)
        if self.info.fn is K.restart:
            return len(K.restart_plan(self.sigmas))
        return len(self.sigmas) - 1

    def noise(self, x: torch.Tensor, fresh: Callable[[], torch.Tensor], seeds: list[int]) -> K.Noise:
        """Where the sampler's extra noise comes from: `fresh()` (the per-image generators, after the initial
        noise), or for the SDE samplers a Brownian tree per image seed over this pass's sigma range."""
        if not self.info.brownian:
            return K.Noise(fresh)
        sig = self.sigmas
        return K.Noise(fresh, K.BrownianNoise(x, sig[sig > 0].min(), sig.max(), seeds))

    def start(self, noise: torch.Tensor, x0: torch.Tensor | None = None) -> torch.Tensor:
        """The starting latent: noise scaled to the first level (txt2img) or the image latent noised to it."""
        if self.empty and x0 is not None:
            return x0
        if self.info.kind == "timesteps":
            if x0 is None:
                return noise
            a = self.model.alphas_cumprod[int(self.start_level)]
            return x0 * a.sqrt() + noise * (1 - a).sqrt()
        return noise * self.start_level if x0 is None else x0 + noise * self.start_level

    def run(self, guided: Callable, x: torch.Tensor, noise: K.Noise, step: Callable,
            blend: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Run the sampler. `guided(x_in, t, cfg_mult)` returns (CFG-combined model output, unconditional
        output) for the UNet input x_in at timestep t; `blend` = (image latent, keep mask) for inpainting."""
        if self.empty:
            return x
        kw = dict(self.info.kwargs)
        if self.info.eta is not None:
            kw["eta"] = self.eta
        if self.info.kind == "timesteps":
            model = _eps_model(guided, self.model, blend, cfgpp=bool(kw.get("cfgpp")))
            if len(self.timesteps) == 0:
                return x
            if self.info.fn is T.unipc:
                kw["is_img2img"] = self.img2img
            # the coefficient tables stay on the CPU: the samplers read them as numbers, never from the device
            return self.info.fn(model, x, self.timesteps, self.model.alphas_cumprod, noise=noise, step=step, **kw)
        ms = model_sigmas(self.info, self.model)
        model = _denoiser(guided, ms, self.model.prediction, blend, lcm=self.info.fn is K.lcm)
        if self.info.kind == "range":
            lo, hi = (self.sigmas[-2], self.sigmas[0]) if self.img2img else (ms.sigma_min, ms.sigma_max)
            if self.info.fn is K.dpm_fast:
                return K.dpm_fast(model, x, lo, hi, len(self.sigmas) - 1, noise=noise, step=step, **kw)
            return K.dpm_adaptive(model, x, lo, hi, noise=noise, step=step, **kw)
        return self.info.fn(model, x, self.sigmas, noise=noise, step=step, **kw)


def _denoiser(guided: Callable, ms: S.ModelSigmas, prediction: str, blend, lcm: bool = False):
    """k-diffusion's CompVis(V)Denoiser around the guided UNet: model(x, sigma) -> denoised latent.
    Sigma and t stay CPU scalars (no wait for the GPU); t reaches the UNet by a non-blocking copy."""
    def model(x, sigma):
        sig = torch.as_tensor(sigma, dtype=torch.float32).cpu()
        t = ms.sigma_to_t(sig)
        scale = (sig ** 2 + 1) ** 0.5  # the UNet sees x / scale (k-diffusion's c_in, sigma_data 1)
        out = guided(x / scale, t)[0]
        if prediction == "v_prediction" and not lcm:
            denoised = x / (sig ** 2 + 1) + out * (-sig / scale)
        else:
            denoised = x - out * sig
            if lcm:  # LCM's boundary condition, in its 10x timestep units (sigma_data 0.5)
                st = t.float() * 10.0
                denoised = st / (st ** 2 + 0.25) ** 0.5 * denoised + 0.25 / (st ** 2 + 0.25) * x
        if blend is not None:
            image, keep = blend
            denoised = image * keep + (1 - keep) * denoised
        return denoised
    return model


def _eps_model(guided: Callable, mp: ModelParams, blend, cfgpp: bool):
    """A1111's timestep denoiser: the guided UNet's noise prediction (v turned into noise); the
    inpainting blend happens before the model sees x."""
    on_device: dict = {}

    def to_eps(out, x, t):
        if mp.prediction != "v_prediction":
            return out
        if x.device not in on_device:
            on_device[x.device] = mp.alphas_cumprod.to(x.device)
        a = on_device[x.device][t.to(torch.int64)].reshape(-1, 1, 1, 1)
        return a.sqrt() * out + (1 - a).sqrt() * x

    def model(x, t):
        if blend is not None:
            image, keep = blend
            x = image * keep + (1 - keep) * x
        if cfgpp:
            out, uncond = guided(x, t, 1 / 12.5)
            return to_eps(out, x, t), to_eps(uncond, x, t)
        return to_eps(guided(x, t)[0], x, t)
    return model


def plan_pass(sampler: SamplerInfo, schedule: ScheduleType, steps: int, model: ModelParams, *,
              strength: float | None = None, exact: bool = False, eta: float | None = None,
              rho: float | None = None) -> SamplingPass:
    """The pass A1111 runs: txt2img when `strength` is None, else img2img (A1111's step rules)."""
    if not sampler.available:
        raise SamplerUnavailableError(f"Sampler '{sampler.name}' needs the python package(s) "
                                      f"{', '.join(sampler.missing_packages)}, which are not installed.")
    total, t_enc = (steps, None) if strength is None else img2img_steps(steps, strength, exact)
    if t_enc is not None and total <= 0:  # nothing to denoise: the image as it is
        return SamplingPass(sampler, model, sigmas=torch.zeros(1), timesteps=torch.zeros(0, dtype=torch.int64),
                            img2img=True, empty=True)
    eta_v = sampler.eta_default if eta is None else float(eta)
    if sampler.kind == "timesteps":
        ts = T.a1111_timesteps(max(total, 1))
        if t_enc is None:
            return SamplingPass(sampler, model, timesteps=ts, start_level=float(ts[-1]), eta=eta_v)
        return SamplingPass(sampler, model, timesteps=ts[:t_enc], start_level=float(ts[t_enc]), img2img=True,
                            eta=eta_v)
    sigmas = make_sigmas(sampler, schedule, max(total, 1), model, rho=rho)
    if t_enc is not None:
        sigmas = sigmas[total - t_enc - 1:]
    return SamplingPass(sampler, model, sigmas=sigmas, start_level=float(sigmas[0]), img2img=t_enc is not None,
                        eta=eta_v)


def model_sigmas(sampler: SamplerInfo, model: ModelParams) -> S.ModelSigmas:
    """The model's noise levels as the sampler sees them (A1111's LCM denoiser keeps its own 50)."""
    cls = S.LCMSigmas if sampler.fn is K.lcm else S.ModelSigmas
    return cls(model.alphas_cumprod)


def make_sigmas(sampler: SamplerInfo, schedule: ScheduleType, steps: int, model: ModelParams,
                rho: float | None = None) -> torch.Tensor:
    """A1111's get_sigmas: the schedule type (Automatic: the sampler's default, else the model's own
    spacing) over the model's sigma range, one step longer and the penultimate level dropped for
    DPM2, DPM2 a and DPM++ 3M SDE."""
    eff = effective_schedule_type(sampler, schedule)
    if eff is not None and not eff.available:
        raise SamplerUnavailableError(f"Schedule type '{eff.label}' needs the python package '{eff.requires}', "
                                      f"which is not installed.")
    n = steps + 1 if sampler.discard_penultimate else steps
    ms = model_sigmas(sampler, model)
    if eff is None:
        sigmas = ms.get_sigmas(n)
    else:
        sigmas = S.SCHEDULES[eff.name](n, ms, S.ScheduleContext(ays_sigmas=model.ays_sigmas, rho=rho or None))
    return S.discard_penultimate(sigmas) if sampler.discard_penultimate else sigmas


# --------------------------------------------------------------------------------------
# A1111 API shapes
# --------------------------------------------------------------------------------------

def api_samplers() -> list[dict]:
    """/sdapi/v1/samplers: [{"name", "aliases", "options"}] (option values as strings, like A1111's API)."""
    return [
        {"name": s.name, "aliases": list(s.aliases), "options": {k: str(v) for k, v in s.options.items()}}
        for s in SAMPLERS
        if s.available
    ]


def api_schedulers() -> list[dict]:
    """/sdapi/v1/schedulers: [{"name", "label", "aliases", "default_rho", "need_inner_model"}]."""
    return [
        {
            "name": s.name,
            "label": s.label,
            "aliases": list(s.aliases) if s.aliases else None,
            "default_rho": s.default_rho,
            "need_inner_model": s.need_inner_model,
        }
        for s in SCHEDULE_TYPES
        if s.available
    ]
