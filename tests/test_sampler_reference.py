"""Every sampler x schedule type draws A1111's picture.

The engine (modules/sampling, through modules.engine) is compared with an independent
reference written in the tests from k-diffusion's and A1111's published definitions
(tests/reference_kdiffusion.py, tests/reference_timesteps.py; neither imports the engine's
samplers nor diffusers' schedulers).  Both run the shipped default model, a real denoiser, through
all 20 steps, from the same seed's noise; the reference decodes with the same VAE and converts to
8 bits as A1111 does.  The agreement is a PSNR over the 64x64 picture (>= 40 dB required; the
README's table lists the figures, printed by `bench/sampler_agreement.py`).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from modules import cmd_args, devices, engine, samplers, sd_models
from modules.engine import prompts, vae
from modules.options import Options
from modules.paths import Paths
from tests import reference_kdiffusion as RK
from tests import reference_timesteps as RT

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "Stable-diffusion" / "sd-shapes-64.safetensors"
PROMPT = "a large red circle in the center, gray background"
NEGATIVE = "blue"
CFG = 7.0
SEED = 1234
MIN_PSNR = 40.0

K_SAMPLERS = [s.name for s in samplers.SAMPLERS if s.kind == "sigmas" and s.available]
OWN_STEP_SAMPLERS = [s.name for s in samplers.SAMPLERS if s.kind != "sigmas" and s.available]
SCHEDULES = [s.label for s in samplers.SCHEDULE_TYPES if s.available]


def all_combinations():
    return [(s, sch) for s in K_SAMPLERS for sch in SCHEDULES] + [(s, "Automatic") for s in OWN_STEP_SAMPLERS]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    args = cmd_args.parse_args(["--data-dir", str(tmp_path_factory.mktemp("data")), "--ckpt-dir", str(MODEL.parent),
                                "--use-cpu", "all"])
    mm = sd_models.ModelManager(Paths.from_args(args), devices.cpu_policy())
    mm.refresh()
    return mm.load("sd-shapes-64")


@pytest.fixture(scope="module")
def threads():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # the 64x64 model runs fastest on one thread
    yield
    torch.set_num_threads(n)


def engine_picture(loaded, sampler, schedule, steps, seed=SEED, settings=None) -> np.ndarray:
    req = engine.GenerationRequest(prompt=PROMPT, negative_prompt=NEGATIVE, steps=steps, cfg_scale=CFG, width=64,
                                   height=64, seed=seed, sampler_name=sampler, scheduler=schedule, save_images=False)
    res = engine.generate(loaded, req, {**Options().snapshot(), **(settings or {})})
    assert not res.warnings, res.warnings
    return np.asarray(res.images[0])


class Reference:
    """The test side: its own CFG around the model's UNet, its own samplers, A1111's 8-bit conversion."""

    def __init__(self, loaded):
        self.ctx = engine.JobContext.create(loaded, None, Options().snapshot())  # the model's text encoder and VAE
        c = loaded.components
        self.unet = c.unet
        enc = prompts.conditioner(self.ctx)
        self.cond = enc.encode([PROMPT], joint=True)[0].context
        self.uncond = enc.encode([NEGATIVE], joint=True, is_negative=True)[0].context
        self.ac = RK.alphas_cumprod_sd()
        self.calls = 0

    def unet_pair(self, x, t):
        """(unconditional, conditional) noise predictions at timestep t (a float)."""
        self.calls += 1
        t = torch.as_tensor(t, dtype=torch.float32).reshape(-1)[0]
        out = self.unet(torch.cat([x, x]), t, encoder_hidden_states=torch.cat([self.uncond, self.cond]),
                        return_dict=False)[0].float()
        return out.chunk(2)

    def eps(self, x, t):
        u, c = self.unet_pair(x, t)
        return u + CFG * (c - u)

    def eps_cfgpp(self, x, t, mult):
        u, c = self.unet_pair(x, t)
        return u + CFG * mult * (c - u), u

    def picture(self, sampler, schedule, steps, seed=SEED) -> np.ndarray:
        gen = torch.Generator().manual_seed(seed)
        noise = torch.randn((4, 8, 8), generator=gen)[None]

        def randn_like(*_):
            return torch.randn((4, 8, 8), generator=gen)[None]

        with torch.inference_mode():
            lat = self._sample(sampler, schedule, steps, noise, randn_like, seed)
            img = vae.decode(self.ctx, lat)
        x = torch.clamp((img + 1.0) / 2.0, min=0.0, max=1.0)[0].permute(1, 2, 0).numpy()
        return (255.0 * x).astype(np.uint8)

    def _sample(self, sampler, schedule, steps, noise, randn_like, seed):
        if sampler in ("DDIM", "DDIM CFG++", "PLMS", "UniPC"):
            ts = RT.a1111_timesteps(steps)
            x = RT.txt2img_start(noise)
            if sampler == "DDIM":
                return RT.ddim(self.eps, x, ts, self.ac, eta=0.0, randn_like=randn_like)
            if sampler == "DDIM CFG++":
                return RT.ddim_cfgpp(self.eps_cfgpp, x, ts, self.ac, eta=0.0, randn_like=randn_like)
            if sampler == "PLMS":
                return RT.plms(self.eps, x, ts, self.ac)
            return RT.unipc(self.eps, x, ts, self.ac, order=min(3, len(ts)))
        spec = RK.A1111_SAMPLERS[sampler]
        if sampler == "LCM":
            model = RK.lcm_denoiser(self.eps, self.ac)
            sched_obj = model
        else:
            sched_obj = RK.DiscreteSchedule(self.ac)
            model = RK.denoiser(self.eps, sched_obj)
        name = schedule.lower().replace(" ", "_") if schedule != "Automatic" else (spec["scheduler"] or "automatic")
        sigmas = RK.a1111_sigmas(name, steps, sched_obj, discard_next_to_last_sigma=spec["discard"])
        x = noise * sigmas[0]
        noise_sampler = RK.BrownianNoise.for_sigmas(x, sigmas, [seed]) if spec["brownian"] else None
        if sampler in ("DPM fast", "DPM adaptive"):
            lo, hi = sched_obj.sigma_min, sched_obj.sigma_max
            if sampler == "DPM fast":
                return spec["fn"](model, x, lo, hi, steps, randn_like, noise_sampler, **spec["kwargs"])
            return spec["fn"](model, x, lo, hi, randn_like, noise_sampler, **spec["kwargs"])
        return spec["fn"](model, x, sigmas, randn_like, noise_sampler, **spec["kwargs"])


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


@pytest.fixture(scope="module")
def reference(shapes):
    return Reference(shapes)


@pytest.mark.parametrize("sampler,schedule", all_combinations())
def test_sampler_and_schedule_draw_a1111s_picture(shapes, reference, threads, sampler, schedule):
    ours = engine_picture(shapes, sampler, schedule, 20)
    ref = reference.picture(sampler, schedule, 20)
    assert ours.shape == ref.shape == (64, 64, 3)
    assert ref.std() > 10, "the reference picture is flat: the comparison would prove nothing"
    assert psnr(ours, ref) >= MIN_PSNR, f"{sampler} / {schedule}: {psnr(ours, ref):.1f} dB"


@pytest.mark.parametrize("steps", [4, 5, 8, 13, 37])
@pytest.mark.parametrize("sampler", [s.name for s in samplers.SAMPLERS if s.available])
def test_step_counts_agree_with_the_reference(shapes, reference, threads, sampler, steps):
    """Each sampler with its automatic schedule at other step counts the UI offers (odd grids, warm-up and
    lower-order ends, Restart's two restart rounds from 36 steps)."""
    if steps == 37 and sampler in ("DPM adaptive",):
        pytest.skip("DPM adaptive chooses its own steps: the step count does not reach it")
    ours = engine_picture(shapes, sampler, "Automatic", steps)
    ref = reference.picture(sampler, "Automatic", steps)
    assert psnr(ours, ref) >= MIN_PSNR, f"{sampler} at {steps} steps: {psnr(ours, ref):.1f} dB"


def test_the_reference_is_sensitive_to_what_differs_from_diffusers(shapes, reference, threads):
    """The comparison can fail: the schedules diffusers uses for DPM++ 2M (linspace spacing) and DDIM (a last step
    to alpha 1) draw visibly different pictures on the default model."""
    a1111 = reference.picture("DPM++ 2M", "Uniform", 8)
    # diffusers' 'linspace' DPM-Solver grid: t = linspace(0, 999, 9)[::-1][:-1], then sigma 0
    sched = RK.DiscreteSchedule(reference.ac)
    t = torch.linspace(0, 999, 9).flip(0)[:-1]
    sigmas = torch.cat([sched.t_to_sigma(t), torch.zeros(1)])
    gen = torch.Generator().manual_seed(SEED)
    noise = torch.randn((4, 8, 8), generator=gen)[None]
    with torch.inference_mode():
        lat = RK.sample_dpmpp_2m(RK.denoiser(reference.eps, sched), noise * sigmas[0], sigmas)
        img = vae.decode(reference.ctx, lat)
    x = torch.clamp((img + 1.0) / 2.0, min=0.0, max=1.0)[0].permute(1, 2, 0).numpy()
    other = (255.0 * x).astype(np.uint8)
    assert psnr(a1111, other) < 35


def test_pictures_are_8_bit_truncations_as_a1111_stores_them():
    x = torch.tensor([[[[-1.0, -0.99, 0.5]], [[0.0, 0.999, 1.0]], [[0.3, -0.3, 2.0]]]])
    (pic,) = vae.tensor_to_pil(x)
    v = (torch.clamp((x + 1.0) / 2.0, 0, 1) * 255.0)[0].permute(1, 2, 0).numpy()
    assert np.array_equal(np.asarray(pic), v.astype(np.uint8))
    assert np.asarray(pic)[0, 2, 0] == 191  # 191.25 truncated; rounding would give 191, 0.999 -> 254.87 -> 254
    assert np.asarray(pic)[0, 1, 1] == 254
