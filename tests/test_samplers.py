import importlib.util

import pytest
import torch

from modules import samplers as S
from modules.sampling import kdiffusion as K
from modules.sampling.schedules import alphas_cumprod_from_config
from tests import reference_kdiffusion as RK
from tests import reference_timesteps as RT

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

# A1111 1.10's sampler list, in its order (k-diffusion samplers, then timestep samplers, then LCM)
EXPECTED_ORDER = [
    "DPM++ 2M", "DPM++ SDE", "DPM++ 2M SDE", "DPM++ 2M SDE Heun", "DPM++ 2S a", "DPM++ 3M SDE",
    "Euler a", "Euler", "LMS", "Heun", "DPM2", "DPM2 a", "DPM fast", "DPM adaptive", "Restart",
    "DDIM", "DDIM CFG++", "PLMS", "UniPC", "LCM",
]
AC = RK.alphas_cumprod_sd()
MODEL = S.ModelParams(alphas_cumprod_from_config(SD1_CONFIG))


def toy_guided(x, t, cfg_mult=1.0):
    """A cheap stand-in for the guided UNet: finite, depends on x and t, like a noise prediction."""
    out = 0.4 * x + 0.1 * torch.sin(torch.as_tensor(t, dtype=torch.float32) / 97.0)
    return out, 0.9 * out


def run_toy(sampler: str, schedule: str, steps: int, strength=None) -> torch.Tensor:
    info, sched = S.resolve_sampler(sampler, schedule)
    spass = S.plan_pass(info, sched, steps, MODEL, strength=strength)
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(1, 4, 2, 2, generator=g)
    x = spass.start(noise, x0=None if strength is None else torch.zeros_like(noise))
    source = spass.noise(x, lambda: torch.randn(1, 4, 2, 2, generator=g), [1])
    return spass.run(toy_guided, x, source, lambda i, x, d: None)


def test_table_order_and_names():
    assert S.sampler_names(include_unavailable=True) == EXPECTED_ORDER
    assert S.sampler_names() == [n for n in EXPECTED_ORDER
                                 if (n != "LMS" or HAS_SCIPY) and ("SDE" not in n or HAS_TORCHSDE)]


@pytest.mark.parametrize("sampler", EXPECTED_ORDER)
def test_no_sampler_gives_nan_at_any_step_count_from_1_to_150(sampler):
    """Every sampler with its automatic schedule, every step count the UI offers, to the last step."""
    if not S.find_sampler(sampler).available:
        pytest.skip("optional package missing")
    for steps in range(1, 151):
        assert torch.isfinite(run_toy(sampler, "Automatic", steps)).all(), (sampler, steps)


@pytest.mark.parametrize("schedule", [s.label for s in S.SCHEDULE_TYPES])
def test_every_schedule_with_every_sampler_stays_finite(schedule):
    for info in S.SAMPLERS:
        if not info.available or S.find_schedule_type(schedule) not in S.schedule_types_for(info):
            continue
        for steps in (1, 2, 3, 4, 5, 7, 11, 20, 36, 50):
            assert torch.isfinite(run_toy(info.name, schedule, steps)).all(), (info.name, schedule, steps)
            assert torch.isfinite(run_toy(info.name, schedule, steps, strength=0.5)).all(), (info.name, schedule)


@pytest.mark.parametrize("schedule", [s.name for s in S.SCHEDULE_TYPES if s.name != "automatic"])
@pytest.mark.parametrize("steps", [1, 2, 3, 4, 7, 10, 11, 20, 33, 150])
def test_schedules_equal_the_reference(schedule, steps):
    """Our sigma grids against the test-side reference of A1111's schedule functions, to the bit."""
    info = S.find_sampler("Euler")
    ours = S.make_sigmas(info, S.find_schedule_type(schedule), steps, S.ModelParams(AC))
    ref = RK.a1111_sigmas(schedule, steps, RK.DiscreteSchedule(AC))
    assert torch.equal(ours, ref.to(ours.dtype)), (ours, ref)


def test_discarded_penultimate_sigma_and_timestep_grids():
    info = S.find_sampler("DPM2")
    ours = S.make_sigmas(info, S.AUTOMATIC, 10, S.ModelParams(AC))
    ref = RK.a1111_sigmas("karras", 10, RK.DiscreteSchedule(AC), discard_next_to_last_sigma=True)
    assert len(ours) == 11 and torch.equal(ours, ref)
    for steps in (1, 3, 7, 20, 150):
        ddim = S.plan_pass(S.find_sampler("DDIM"), S.AUTOMATIC, steps, S.ModelParams(AC))
        assert torch.equal(ddim.timesteps, RT.a1111_timesteps(steps))
    assert len(RT.a1111_timesteps(150)) == 167  # A1111's grid: 166 DDIM steps for "150"


def test_v_prediction_models_get_the_v_denoiser():
    """A v model's output becomes x0 through k-diffusion's CompVisVDenoiser scalings."""
    mp = S.ModelParams(AC, prediction="v_prediction")
    spass = S.plan_pass(S.find_sampler("Euler"), S.AUTOMATIC, 3, mp)
    v = torch.full((1, 4, 2, 2), 0.25)
    got = []
    spass.run(lambda x, t, m=1.0: (v, v), torch.ones(1, 4, 2, 2) * spass.start_level, K.Noise(lambda: 0 * v),
              lambda i, x, d: got.append((x, d)))
    x, d = got[0]
    s = spass.sigmas[0]
    assert torch.allclose(d, x / (s ** 2 + 1) - v * s / (s ** 2 + 1) ** 0.5)


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
    assert eff("Restart") == "Karras"
    assert eff("DPM++ 2M SDE") == "Exponential"
    assert eff("DPM++ 3M SDE") == "Exponential"
    # the model's own spacing: A1111 writes no "Schedule type" for these
    assert eff("Euler a") is None and eff("Euler") is None and eff("LCM") is None
    assert eff("DDIM") is None and eff("UniPC") is None and eff("DPM fast") is None


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
        S.resolve_sampler("Foo Karras")


def test_unknown_schedule_type_lists_valid_names():
    with pytest.raises(ValueError) as e:
        S.resolve_sampler("Euler", "Wavy")
    assert str(e.value).startswith(
        "Unknown schedule type 'Wavy'. Valid schedule types: Automatic, Uniform, Karras, Exponential, "
        "Polyexponential, SGM Uniform, KL Optimal, Align Your Steps, Simple, Normal, DDIM"
    )


def test_schedule_types_apply_to_k_samplers_only():
    info, sched = S.resolve_sampler("Euler a", "Karras")  # any schedule with any k-diffusion sampler, as A1111
    assert (info.name, sched.label) == ("Euler a", "Karras")
    with pytest.raises(ValueError, match="'Karras' is not used by sampler 'DDIM'"):
        S.resolve_sampler("DDIM", "Karras")
    with pytest.raises(ValueError, match="not used by sampler 'DPM adaptive'"):
        S.resolve_sampler("DPM adaptive", "Exponential")


def test_api_shapes():
    samplers = S.api_samplers()
    first = samplers[0]
    assert first == {"name": "DPM++ 2M", "aliases": ["k_dpmpp_2m"], "options": {"scheduler": "karras"}}
    euler_a = next(x for x in samplers if x["name"] == "Euler a")
    assert euler_a == {"name": "Euler a", "aliases": ["k_euler_a", "k_euler_ancestral"], "options": {"uses_ensd": "True"}}
    three_m = next(x for x in samplers if x["name"] == "DPM++ 3M SDE")
    assert three_m["options"] == {"scheduler": "exponential", "discard_next_to_last_sigma": "True",
                                  "brownian_noise": "True"}
    scheds = S.api_schedulers()
    assert scheds[0] == {"name": "automatic", "label": "Automatic", "aliases": None, "default_rho": -1, "need_inner_model": False}
    karras = next(x for x in scheds if x["name"] == "karras")
    assert karras["default_rho"] == 7.0
    sgm = next(x for x in scheds if x["name"] == "sgm_uniform")
    assert sgm["aliases"] == ["SGMUniform"] and sgm["label"] == "SGM Uniform"
    assert [x["label"] for x in scheds][-1] == "Beta"
