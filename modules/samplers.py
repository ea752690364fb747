"""Sampler table: A1111 sampler names -> diffusers scheduler classes.

A1111 (v1.10) splits what users call a "sampler" into two parts:

* the sampler proper ("Euler a", "DPM++ 2M", ...), and
* the schedule type ("Automatic", "Karras", "Exponential", ...), i.e. how the
  noise levels are spaced over the steps.

Old infotexts and API clients still send combined names such as
"DPM++ 2M Karras"; :func:`resolve_sampler` splits those.

Everything here is plain data plus a few pure functions.  The only code that
touches diffusers is :func:`create_scheduler`, which builds a scheduler with
``from_config`` from the model's own scheduler config (never from the hub).

Mapping notes (what is exact and what is approximate):

* Euler, Euler a, Heun, DPM2, DPM2 a, LMS, DPM++ 2M, DPM++ 2M SDE,
  DPM++ 2M SDE Heun, DDIM, PLMS, UniPC, LCM map to the diffusers port of the
  same algorithm.
* DPM++ 3M SDE -> DPMSolverMultistepScheduler(solver_order=3,
  algorithm_type="sde-dpmsolver++").  A1111 additionally drops the
  penultimate sigma for this sampler (and for DPM2 / DPM2 a); diffusers'
  schedulers have no such switch, so the step schedule differs slightly.
* DPM++ 2S a: diffusers has no ancestral single-step DPM-Solver++.  The closest
  available solver is the single-step, second-order, *stochastic*
  DPMSolverSinglestepScheduler(solver_order=2, algorithm_type="sde-dpmsolver++"):
  same step structure (two model calls per step, second order), and like the
  ancestral original it injects fresh noise at each step.  The noise formula
  is the SDE one, not the ancestral one, so images differ from A1111.
* DPM++ SDE -> DPMSolverSDEScheduler, the direct port of k-diffusion's
  sample_dpmpp_sde.  It needs the optional ``torchsde`` package; when that is
  not installed the table falls back to the same single-step second-order SDE
  solver used for DPM++ 2S a (documented in ``SamplerInfo.note``).
* LMS needs ``scipy`` (diffusers integrates the LMS coefficients with it);
  without scipy the sampler is listed in SAMPLERS but marked unavailable and
  left out of :func:`sampler_names` / :func:`api_samplers`, just as A1111
  hides samplers whose k-diffusion function is missing.
* A1111 samplers with no diffusers counterpart are not offered:
  DPM fast, DPM adaptive, Restart, DDIM CFG++.

Schedule types map to scheduler config options (only offered for a sampler
when its scheduler class accepts that option, checked on the class signature):

* Uniform / Normal -> timestep_spacing="linspace" (k-diffusion's
  ``get_sigmas(n)``: t from 999 down to 0, so sigma_max/sigma_min equal the
  model's extremes, as in A1111).
* Karras / Exponential / Beta -> use_karras_sigmas / use_exponential_sigmas /
  use_beta_sigmas (plus linspace spacing where the class has it, so that the
  sigma range is the model's full range, as A1111 uses).  Beta needs scipy.
* SGM Uniform / Simple -> timestep_spacing="trailing" (both A1111 schedules
  start at t=999 and step down by 1000/n).
* DDIM -> timestep_spacing="leading", steps_offset=1 (t = 1, 1+1000//n, ...).
* Polyexponential, KL Optimal, Align Your Steps have no diffusers config
  switch and are not offered.
* Automatic -> the sampler's A1111 default (Karras for DPM++ 2M, DPM++ SDE,
  DPM++ 2S a, DPM2, DPM2 a; Exponential for DPM++ 2M SDE (Heun) and
  DPM++ 3M SDE; Uniform for Euler, Euler a, LMS, Heun, UniPC; DDIM spacing for
  DDIM and PLMS (A1111's timestep samplers use t = 1 + k*(1000//n)); LCM keeps
  its own native schedule).
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import inspect
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import diffusers
from diffusers.utils import DummyObject

__all__ = [
    "SamplerInfo",
    "ScheduleType",
    "SamplerUnavailableError",
    "SAMPLERS",
    "SCHEDULE_TYPES",
    "sampler_names",
    "schedule_type_labels",
    "find_sampler",
    "find_schedule_type",
    "resolve_sampler",
    "effective_schedule_type",
    "schedule_types_for",
    "create_scheduler",
    "api_samplers",
    "api_schedulers",
]

_SIGMA_FLAGS = ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas")


class SamplerUnavailableError(ValueError):
    """The sampler/schedule exists in the table but needs a package that is not installed."""


# --------------------------------------------------------------------------------------
# class introspection (what config options a scheduler class accepts)
# --------------------------------------------------------------------------------------

def _is_dummy(cls: type) -> bool:
    """diffusers replaces classes whose optional backend is missing with dummies."""
    return isinstance(cls, DummyObject)


def _missing_backends(cls: type) -> tuple[str, ...]:
    if not _is_dummy(cls):
        return ()
    backends = getattr(cls, "_backends", ())
    return tuple(b for b in backends if b != "torch" and importlib.util.find_spec(b) is None)


def _init_params_from_source(cls_name: str) -> frozenset[str]:
    """Read ``__init__`` parameter names of a diffusers scheduler class from its source.

    Used for classes that diffusers swapped for a dummy (missing optional backend):
    their real module cannot be imported, but its source can still be parsed.
    """
    spec = importlib.util.find_spec("diffusers.schedulers")
    if spec is None or not spec.submodule_search_locations:
        return frozenset()
    for folder in spec.submodule_search_locations:
        for fname in sorted(os.listdir(folder)):
            if not fname.startswith("scheduling_") or not fname.endswith(".py"):
                continue
            path = os.path.join(folder, fname)
            with open(path, encoding="utf-8") as fh:
                src = fh.read()
            if f"class {cls_name}(" not in src:
                continue
            tree = ast.parse(src)
            for node in tree.body:
                if isinstance(node, ast.ClassDef) and node.name == cls_name:
                    for item in node.body:
                        if isinstance(item, ast.FunctionDef) and item.name == "__init__":
                            args = item.args
                            names = [a.arg for a in args.args + args.kwonlyargs]
                            return frozenset(n for n in names if n != "self")
    return frozenset()


@functools.lru_cache(maxsize=None)
def _accepted_options(cls: type) -> frozenset[str]:
    if _is_dummy(cls):
        return _init_params_from_source(cls.__name__)
    params = inspect.signature(cls.__init__).parameters
    return frozenset(k for k in params if k != "self")


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
    kwargs: Mapping[str, Any] = field(default_factory=dict)   # scheduler config overrides
    option: str | None = None     # config option the scheduler class must accept to offer this type
    requires: str | None = None   # python package needed at runtime (e.g. "scipy")

    @property
    def available(self) -> bool:
        return self.requires is None or importlib.util.find_spec(self.requires) is not None


SCHEDULE_TYPES: list[ScheduleType] = [
    ScheduleType("automatic", "Automatic"),
    ScheduleType("uniform", "Uniform", need_inner_model=True,
                 kwargs={"timestep_spacing": "linspace"}, option="timestep_spacing"),
    ScheduleType("karras", "Karras", default_rho=7.0,
                 kwargs={"use_karras_sigmas": True, "timestep_spacing": "linspace"},
                 option="use_karras_sigmas"),
    ScheduleType("exponential", "Exponential",
                 kwargs={"use_exponential_sigmas": True, "timestep_spacing": "linspace"},
                 option="use_exponential_sigmas"),
    ScheduleType("sgm_uniform", "SGM Uniform", aliases=("SGMUniform",), need_inner_model=True,
                 kwargs={"timestep_spacing": "trailing"}, option="timestep_spacing"),
    ScheduleType("simple", "Simple", need_inner_model=True,
                 kwargs={"timestep_spacing": "trailing"}, option="timestep_spacing"),
    ScheduleType("normal", "Normal", need_inner_model=True,
                 kwargs={"timestep_spacing": "linspace"}, option="timestep_spacing"),
    ScheduleType("ddim", "DDIM", need_inner_model=True,
                 kwargs={"timestep_spacing": "leading", "steps_offset": 1}, option="timestep_spacing"),
    ScheduleType("beta", "Beta", need_inner_model=True,
                 kwargs={"use_beta_sigmas": True, "timestep_spacing": "linspace"},
                 option="use_beta_sigmas", requires="scipy"),
]

_SCHEDULE_BY_NAME = {s.name: s for s in SCHEDULE_TYPES}
AUTOMATIC = _SCHEDULE_BY_NAME["automatic"]


# --------------------------------------------------------------------------------------
# samplers
# --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SamplerInfo:
    name: str
    aliases: tuple[str, ...]
    scheduler_cls: type
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)   # A1111 sampler options
    default_schedule: str | None = "uniform"   # what "Automatic" means; None = class's own schedule
    native_uniform: bool = False   # class has no timestep_spacing but already spaces uniformly
    ignored_options: frozenset[str] = frozenset()   # accepted by __init__ but not used by set_timesteps
    note: str = ""

    @property
    def accepted_options(self) -> frozenset[str]:
        return _accepted_options(self.scheduler_cls) - self.ignored_options

    @property
    def missing_packages(self) -> tuple[str, ...]:
        return _missing_backends(self.scheduler_cls)

    @property
    def available(self) -> bool:
        return not self.missing_packages


def _sde_class() -> tuple[type, dict, str]:
    cls = diffusers.DPMSolverSDEScheduler
    if not _missing_backends(cls):
        return cls, {}, "DPMSolverSDEScheduler (port of k-diffusion sample_dpmpp_sde)."
    return (
        diffusers.DPMSolverSinglestepScheduler,
        {"solver_order": 2, "algorithm_type": "sde-dpmsolver++"},
        "torchsde is not installed: using DPMSolverSinglestepScheduler(solver_order=2, "
        "algorithm_type='sde-dpmsolver++'), a single-step second-order SDE solver, "
        "instead of DPMSolverSDEScheduler.",
    )


def _build_samplers() -> list[SamplerInfo]:
    sde_cls, sde_kwargs, sde_note = _sde_class()
    singlestep_sde = {"solver_order": 2, "algorithm_type": "sde-dpmsolver++"}
    d = diffusers
    return [
        SamplerInfo("DPM++ 2M", ("k_dpmpp_2m",), d.DPMSolverMultistepScheduler,
                    {"algorithm_type": "dpmsolver++", "solver_order": 2},
                    {"scheduler": "karras"}, default_schedule="karras"),
        SamplerInfo("DPM++ SDE", ("k_dpmpp_sde",), sde_cls, sde_kwargs,
                    {"scheduler": "karras", "second_order": True, "brownian_noise": True},
                    default_schedule="karras",
                    native_uniform=sde_cls is d.DPMSolverSinglestepScheduler, note=sde_note),
        SamplerInfo("DPM++ 2M SDE", ("k_dpmpp_2m_sde",), d.DPMSolverMultistepScheduler,
                    {"algorithm_type": "sde-dpmsolver++", "solver_order": 2},
                    {"scheduler": "exponential", "brownian_noise": True},
                    default_schedule="exponential"),
        SamplerInfo("DPM++ 2M SDE Heun", ("k_dpmpp_2m_sde_heun",), d.DPMSolverMultistepScheduler,
                    {"algorithm_type": "sde-dpmsolver++", "solver_order": 2, "solver_type": "heun"},
                    {"scheduler": "exponential", "brownian_noise": True, "solver_type": "heun"},
                    default_schedule="exponential"),
        SamplerInfo("DPM++ 2S a", ("k_dpmpp_2s_a",), d.DPMSolverSinglestepScheduler, singlestep_sde,
                    {"scheduler": "karras", "uses_ensd": True, "second_order": True},
                    default_schedule="karras", native_uniform=True,
                    note="No ancestral single-step DPM-Solver++ in diffusers: uses the stochastic "
                         "single-step second-order DPMSolverSinglestepScheduler (sde-dpmsolver++)."),
        SamplerInfo("DPM++ 3M SDE", ("k_dpmpp_3m_sde",), d.DPMSolverMultistepScheduler,
                    {"algorithm_type": "sde-dpmsolver++", "solver_order": 3},
                    {"scheduler": "exponential", "discard_next_to_last_sigma": True, "brownian_noise": True},
                    default_schedule="exponential",
                    note="A1111 also discards the penultimate sigma; not reproduced."),
        SamplerInfo("Euler a", ("k_euler_a", "k_euler_ancestral"), d.EulerAncestralDiscreteScheduler, {},
                    {"uses_ensd": True}),
        SamplerInfo("Euler", ("k_euler",), d.EulerDiscreteScheduler, {}, {}),
        SamplerInfo("LMS", ("k_lms",), d.LMSDiscreteScheduler, {}, {}),
        SamplerInfo("Heun", ("k_heun",), d.HeunDiscreteScheduler, {}, {"second_order": True}),
        SamplerInfo("DPM2", ("k_dpm_2",), d.KDPM2DiscreteScheduler, {},
                    {"scheduler": "karras", "discard_next_to_last_sigma": True, "second_order": True},
                    default_schedule="karras"),
        SamplerInfo("DPM2 a", ("k_dpm_2_a",), d.KDPM2AncestralDiscreteScheduler, {},
                    {"scheduler": "karras", "discard_next_to_last_sigma": True, "uses_ensd": True,
                     "second_order": True},
                    default_schedule="karras"),
        # no x0 clipping: A1111's DDIM does not clip, and diffusers' pipelines switch it off too
        SamplerInfo("DDIM", ("ddim",), d.DDIMScheduler, {"clip_sample": False}, {}, default_schedule="ddim"),
        SamplerInfo("PLMS", ("plms",), d.PNDMScheduler, {"skip_prk_steps": True}, {},
                    default_schedule="ddim"),
        SamplerInfo("UniPC", ("unipc",), d.UniPCMultistepScheduler,
                    {"solver_order": 3, "solver_type": "bh1", "lower_order_final": True}, {},
                    note="A1111 defaults: order 3, variant bh1, lower order final."),
        SamplerInfo("LCM", ("k_lcm",), d.LCMScheduler, {}, {}, default_schedule=None,
                    ignored_options=frozenset({"timestep_spacing"})),
    ]


SAMPLERS: list[SamplerInfo] = _build_samplers()

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
    """Schedule types this sampler's scheduler class can honour (Automatic first)."""
    info = sampler if isinstance(sampler, SamplerInfo) else _resolve_name(sampler)[0]
    accepted = info.accepted_options
    out = []
    for sched in SCHEDULE_TYPES:
        if sched is AUTOMATIC:
            ok = True
        elif sched.option in accepted:
            ok = True
        elif sched.name == "uniform" and info.native_uniform:
            ok = True
        else:
            ok = False
        if ok and (include_unavailable or sched.available):
            out.append(sched)
    return out


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

    Combined names ("DPM++ 2M Karras", "k_dpmpp_2m_ka") carry their own schedule
    type, which wins over ``schedule_type`` (as in A1111).  The schedule type is
    returned as named (Automatic stays Automatic; see :func:`effective_schedule_type`).
    Raises ValueError for unknown names and for combinations the scheduler class
    cannot honour.
    """
    info, from_name = _resolve_name(name)
    if from_name is not None:
        sched = from_name
    else:
        sched = find_schedule_type(schedule_type)
        if sched is None:
            raise ValueError(
                f"Unknown schedule type '{schedule_type}'. Valid schedule types: "
                f"{', '.join(schedule_type_labels())}"
            )
    allowed = schedule_types_for(info, include_unavailable=True)
    if sched not in allowed:
        raise ValueError(
            f"Schedule type '{sched.label}' is not supported by sampler '{info.name}' "
            f"({info.scheduler_cls.__name__}). Valid schedule types for it: "
            f"{', '.join(s.label for s in allowed if s.available)}"
        )
    return info, sched


def effective_schedule_type(sampler: SamplerInfo, schedule: ScheduleType) -> ScheduleType | None:
    """Automatic -> the sampler's default; None means 'the class's own schedule'."""
    if schedule is not AUTOMATIC:
        return schedule
    if sampler.default_schedule is None:
        return None
    return _SCHEDULE_BY_NAME[sampler.default_schedule]


def create_scheduler(sampler_name: str, schedule_type: str | None, base_config: Mapping[str, Any]):
    """Build the diffusers scheduler for an A1111 sampler + schedule type.

    ``base_config`` is the model's scheduler config (num_train_timesteps, beta_*,
    prediction_type, ...).  Works offline: only ``from_config`` is used.
    """
    info, sched = resolve_sampler(sampler_name, schedule_type)
    if not info.available:
        raise SamplerUnavailableError(
            f"Sampler '{info.name}' needs the python package(s) {', '.join(info.missing_packages)}, "
            f"which are not installed."
        )
    effective = effective_schedule_type(info, sched)
    if effective is not None and not effective.available:
        raise SamplerUnavailableError(
            f"Schedule type '{effective.label}' needs the python package '{effective.requires}', "
            f"which is not installed."
        )

    accepted = info.accepted_options
    config = {k: v for k, v in dict(base_config).items() if k in accepted and not k.startswith("_")}
    for flag in _SIGMA_FLAGS:
        if flag in accepted:
            config[flag] = False
    if effective is not None:
        config.update({k: v for k, v in effective.kwargs.items() if k in accepted})
    config.update(info.kwargs)
    return info.scheduler_cls.from_config(config)


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
