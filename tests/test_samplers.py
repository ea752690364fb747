import importlib.util
import inspect

import pytest
import torch

from modules import samplers as S

# Stable Diffusion 1.x scheduler_config.json (as shipped with the model)
SD1_CONFIG = {
    "_class_name": "PNDMScheduler",
    "_diffusers_version": "0.6.0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
    "clip_sample": False,
}

HAS_SCIPY = importlib.util.find_spec("scipy") is not None
HAS_TORCHSDE = importlib.util.find_spec("torchsde") is not None

EXPECTED_ORDER = [
    "DPM++ 2M", "DPM++ SDE", "DPM++ 2M SDE", "DPM++ 2M SDE Heun", "DPM++ 2S a", "DPM++ 3M SDE",
    "Euler a", "Euler", "LMS", "Heun", "DPM2", "DPM2 a", "DDIM", "PLMS", "UniPC", "LCM",
]


def _run_steps(scheduler, n_steps=3):
    scheduler.set_timesteps(20)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 8, 8, generator=g) * scheduler.init_noise_sigma
    extra = {"generator": g} if "generator" in inspect.signature(scheduler.step).parameters else {}
    for t in scheduler.timesteps[:n_steps]:
        inp = scheduler.scale_model_input(x, t)
        eps = 0.5 * inp  # stand-in for a UNet prediction
        x = scheduler.step(eps, t, x, **extra).prev_sample
    return x


def test_table_order_and_names():
    assert S.sampler_names(include_unavailable=True) == EXPECTED_ORDER
    assert S.sampler_names() == [n for n in EXPECTED_ORDER if n != "LMS" or HAS_SCIPY]


def _combos():
    for info in S.SAMPLERS:
        if not info.available:
            continue
        for sched in S.schedule_types_for(info):
            if sched.label in ("Automatic", "Uniform", "Karras", "Exponential", "SGM Uniform", "DDIM"):
                yield info.name, sched.label


@pytest.mark.parametrize("sampler,schedule", list(_combos()))
def test_every_sampler_runs_without_nan(sampler, schedule):
    scheduler = S.create_scheduler(sampler, schedule, SD1_CONFIG)
    x = _run_steps(scheduler)
    assert x.shape == (1, 4, 8, 8)
    assert torch.isfinite(x).all()


def test_sampler_kwargs_reach_the_scheduler():
    s = S.create_scheduler("DPM++ 2M", "Automatic", SD1_CONFIG)
    assert type(s).__name__ == "DPMSolverMultistepScheduler"
    assert (s.config.algorithm_type, s.config.solver_order, s.config.use_karras_sigmas) == ("dpmsolver++", 2, True)
    s = S.create_scheduler("DPM++ 3M SDE", None, SD1_CONFIG)
    assert (s.config.algorithm_type, s.config.solver_order, s.config.use_exponential_sigmas) == ("sde-dpmsolver++", 3, True)
    s = S.create_scheduler("DPM++ 2M SDE Heun", "Karras", SD1_CONFIG)
    assert (s.config.solver_type, s.config.use_karras_sigmas, s.config.use_exponential_sigmas) == ("heun", True, False)
    s = S.create_scheduler("PLMS", None, SD1_CONFIG)
    assert type(s).__name__ == "PNDMScheduler" and s.config.skip_prk_steps is True
    s = S.create_scheduler("UniPC", None, SD1_CONFIG)
    assert (s.config.solver_order, s.config.solver_type, s.config.timestep_spacing) == (3, "bh1", "linspace")
    s = S.create_scheduler("DDIM", None, SD1_CONFIG)
    s.set_timesteps(20)
    # A1111 timestep samplers: t = 1 + k * (1000 // steps)
    assert s.timesteps.tolist()[:3] == [951, 901, 851] and s.timesteps.tolist()[-1] == 1
    s = S.create_scheduler("k_euler_a", None, SD1_CONFIG)
    assert type(s).__name__ == "EulerAncestralDiscreteScheduler"


def test_model_config_flags_are_overridden():
    cfg = dict(SD1_CONFIG, use_karras_sigmas=True, prediction_type="v_prediction")
    s = S.create_scheduler("Euler", "Uniform", cfg)
    assert s.config.use_karras_sigmas is False
    assert s.config.prediction_type == "v_prediction"


def test_dpmpp_sde_mapping_matches_installed_packages():
    info, _ = S.resolve_sampler("DPM++ SDE")
    if HAS_TORCHSDE:
        assert info.scheduler_cls.__name__ == "DPMSolverSDEScheduler"
    else:
        assert info.scheduler_cls.__name__ == "DPMSolverSinglestepScheduler"
        assert dict(info.kwargs) == {"solver_order": 2, "algorithm_type": "sde-dpmsolver++"}
        assert "torchsde" in info.note


def test_karras_changes_sigmas_vs_uniform():
    uni = S.create_scheduler("Euler", "Uniform", SD1_CONFIG)
    kar = S.create_scheduler("Euler", "Karras", SD1_CONFIG)
    exp = S.create_scheduler("Euler", "Exponential", SD1_CONFIG)
    for s in (uni, kar, exp):
        s.set_timesteps(20)
        # like A1111, every schedule spans the model's full sigma range
        assert s.sigmas[0].item() == pytest.approx(14.614647, abs=1e-5)
        assert s.sigmas[-2].item() == pytest.approx(0.029168, abs=1e-5)
        assert s.sigmas[-1].item() == 0.0
        assert len(s.sigmas) == 21
    assert uni.sigmas[1].item() == pytest.approx(10.746850, abs=1e-4)
    assert kar.sigmas[1].item() == pytest.approx(11.725373, abs=1e-4)
    assert exp.sigmas[1].item() == pytest.approx(10.536320, abs=1e-4)
    assert kar.sigmas[-3].item() == pytest.approx(0.048482, abs=1e-5)
    assert uni.sigmas[-3].item() == pytest.approx(0.232168, abs=1e-5)


def test_automatic_uses_a1111_defaults():
    def eff(name):
        info, sched = S.resolve_sampler(name, "Automatic")
        e = S.effective_schedule_type(info, sched)
        return e.label if e else None

    assert eff("DPM++ 2M") == "Karras"
    assert eff("DPM++ SDE") == "Karras"
    assert eff("DPM++ 2S a") == "Karras"
    assert eff("DPM2") == "Karras"
    assert eff("DPM2 a") == "Karras"
    assert eff("DPM++ 2M SDE") == "Exponential"
    assert eff("DPM++ 3M SDE") == "Exponential"
    assert eff("Euler a") == "Uniform"
    assert eff("Euler") == "Uniform"
    assert eff("DDIM") == "DDIM"
    assert eff("LCM") is None


@pytest.mark.parametrize(
    "given,sampler,schedule",
    [
        ("DPM++ 2M Karras", "DPM++ 2M", "Karras"),
        ("dpm++ 2m karras", "DPM++ 2M", "Karras"),
        ("Euler a", "Euler a", "Automatic"),
        ("DPM2 a Karras", "DPM2 a", "Karras"),
        ("DPM++ 2M SDE Exponential", "DPM++ 2M SDE", "Exponential"),
        ("DPM++ 2M SDE Heun Karras", "DPM++ 2M SDE Heun", "Karras"),
        ("DPM++ 2M SDE Heun", "DPM++ 2M SDE Heun", "Automatic"),
        ("DPM++ 3M SDE Karras", "DPM++ 3M SDE", "Karras"),
        ("DPM++ SDE Karras", "DPM++ SDE", "Karras"),
        ("Euler SGMUniform", "Euler", "SGM Uniform"),
        ("Euler sgm_uniform", "Euler", "SGM Uniform"),
        ("k_dpmpp_2m_ka", "DPM++ 2M", "Karras"),
        ("k_dpmpp_3m_sde_exp", "DPM++ 3M SDE", "Exponential"),
        ("k_euler_ancestral", "Euler a", "Automatic"),
        ("K_LMS", "LMS", "Automatic"),
        ("ddim", "DDIM", "Automatic"),
    ],
)
def test_combined_names(given, sampler, schedule):
    info, sched = S.resolve_sampler(given)
    assert (info.name, sched.label) == (sampler, schedule)


def test_combined_name_wins_over_schedule_argument():
    info, sched = S.resolve_sampler("DPM++ 2M Karras", "Exponential")
    assert (info.name, sched.label) == ("DPM++ 2M", "Karras")
    info, sched = S.resolve_sampler("Euler", "karras")
    assert (info.name, sched.label) == ("Euler", "Karras")


def test_unknown_sampler_lists_valid_names():
    with pytest.raises(ValueError) as e:
        S.resolve_sampler("Foo")
    msg = str(e.value)
    assert msg.startswith("Unknown sampler 'Foo'. Valid samplers: DPM++ 2M, DPM++ SDE, ")
    assert msg.endswith("PLMS, UniPC, LCM")
    with pytest.raises(ValueError, match="Unknown sampler 'Foo Karras'"):
        S.create_scheduler("Foo Karras", None, SD1_CONFIG)


def test_unknown_schedule_type_lists_valid_names():
    with pytest.raises(ValueError) as e:
        S.resolve_sampler("Euler", "Wavy")
    assert str(e.value).startswith(
        "Unknown schedule type 'Wavy'. Valid schedule types: Automatic, Uniform, Karras, Exponential, "
        "SGM Uniform, Simple, Normal, DDIM"
    )


def test_unsupported_combination_is_rejected():
    with pytest.raises(ValueError, match="'Karras' is not supported by sampler 'Euler a'"):
        S.resolve_sampler("Euler a", "Karras")
    with pytest.raises(ValueError, match="not supported by sampler 'LCM'"):
        S.resolve_sampler("LCM", "Uniform")


def test_missing_optional_packages_give_clear_errors():
    if not HAS_SCIPY:
        with pytest.raises(S.SamplerUnavailableError, match="scipy"):
            S.create_scheduler("LMS", None, SD1_CONFIG)
        with pytest.raises(S.SamplerUnavailableError, match="scipy"):
            S.create_scheduler("Euler", "Beta", SD1_CONFIG)
        assert "Beta" not in [x["label"] for x in S.api_schedulers()]
    else:
        assert torch.isfinite(_run_steps(S.create_scheduler("LMS", "Karras", SD1_CONFIG))).all()
        s = S.create_scheduler("Euler", "Beta", SD1_CONFIG)
        assert s.config.use_beta_sigmas is True


def test_api_shapes():
    samplers = S.api_samplers()
    first = samplers[0]
    assert first == {"name": "DPM++ 2M", "aliases": ["k_dpmpp_2m"], "options": {"scheduler": "karras"}}
    euler_a = next(x for x in samplers if x["name"] == "Euler a")
    assert euler_a == {"name": "Euler a", "aliases": ["k_euler_a", "k_euler_ancestral"], "options": {"uses_ensd": "True"}}
    scheds = S.api_schedulers()
    assert scheds[0] == {"name": "automatic", "label": "Automatic", "aliases": None, "default_rho": -1, "need_inner_model": False}
    karras = next(x for x in scheds if x["name"] == "karras")
    assert karras["default_rho"] == 7.0
    sgm = next(x for x in scheds if x["name"] == "sgm_uniform")
    assert sgm["aliases"] == ["SGMUniform"] and sgm["label"] == "SGM Uniform"
