"""Device policy and offload modes: the offloaded model gives the same image as the plain one."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from modules import cmd_args, devices, engine, sd_models
from modules.options import Options
from modules.paths import Paths
from testing.tiny_models import write_tiny_checkpoint


def test_policy_from_flags_on_cpu():
    pol = devices.policy_from_args(cmd_args.parse_args(["--use-cpu", "all", "--medvram"]))
    assert pol.device.type == "cpu" and pol.dtype == torch.float32 and pol.vae_dtype == torch.float32
    assert pol.offload == "none"  # offloading only means something with a GPU


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_policy_half_on_cuda():
    pol = devices.policy_from_args(cmd_args.parse_args([]))
    assert pol.dtype == torch.float16 and pol.vae_dtype == torch.float16
    pol = devices.policy_from_args(cmd_args.parse_args(["--no-half-vae"]))
    assert pol.vae_dtype == torch.float32
    pol = devices.policy_from_args(cmd_args.parse_args(["--precision", "full"]))
    assert pol.dtype == torch.float32


def load_tiny(tmp_path, offload: str = "none", dtype=torch.float32, vae_dtype=torch.float32):
    """The tiny SD1 checkpoint (written once per folder) loaded under the given CPU policy."""
    ck = tmp_path / "models" / "Stable-diffusion"
    if not (ck / "tiny.safetensors").is_file():
        write_tiny_checkpoint(ck / "tiny.safetensors", "sd1", seed=5)
    p = Paths.from_args(cmd_args.parse_args(["--data-dir", str(tmp_path)]))
    mm = sd_models.ModelManager(p, devices.DevicePolicy(device=torch.device("cpu"), dtype=dtype,
                                                         vae_dtype=vae_dtype, offload=offload))
    mm.refresh()
    return mm.load("tiny")


def generate(tmp_path, offload: str):
    loaded = load_tiny(tmp_path, offload)
    req = engine.GenerationRequest(prompt="a red circle", steps=4, width=64, height=64, seed=11,
                                       sampler_name="Euler a")
    res = engine.generate(loaded, req, Options().snapshot())
    assert res.info["peak_memory_mb"] > 0
    return np.asarray(res.images[0])


def test_offload_modes_give_the_same_image(tmp_path):
    """accelerate's offload hooks (--medvram / --lowvram), exercised with the CPU as execution device."""
    plain = generate(tmp_path, "none")
    assert np.array_equal(generate(tmp_path, "medvram"), plain)
    assert np.array_equal(generate(tmp_path, "lowvram"), plain)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def generate_in(tmp_path, dtype, vae_dtype, seed=11):
    loaded = load_tiny(tmp_path, dtype=dtype, vae_dtype=vae_dtype)
    assert loaded.components.unet.dtype == dtype and loaded.components.vae.dtype == vae_dtype
    req = engine.GenerationRequest(prompt="a red circle", steps=8, width=64, height=64, seed=seed,
                                       sampler_name="Euler a")
    res = engine.generate(loaded, req, Options().snapshot())
    return np.asarray(res.images[0]), res, loaded


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_matches_float32(tmp_path, one_thread, dtype):
    """The half-precision path (the default on CUDA) through the same code on the CPU: PSNR against
    float32 >= 30 dB (fp16 gives ~57 dB, bf16 ~43 dB on this model), and not identical (it really ran in half)."""
    full, _, _ = generate_in(tmp_path, torch.float32, torch.float32)
    half, res, _ = generate_in(tmp_path, dtype, dtype)
    assert not res.warnings
    value = psnr(full, half)
    assert 30 <= value < float("inf"), value


def test_half_vae_that_overflows_falls_back_to_float32(tmp_path, one_thread):
    """A VAE whose activations overflow float16 (A1111's black images) is retried in float32, says so,
    and stays in float32 for later jobs."""
    reference, _, _ = generate_in(tmp_path, torch.float16, torch.float32)
    loaded = load_tiny(tmp_path, dtype=torch.float16, vae_dtype=torch.float16)
    conv = loaded.components.vae.decoder.conv_in
    with torch.no_grad():  # x1e5: far past float16's 65504, harmless in float32 (GroupNorm follows)
        conv.weight.mul_(1e5)
        conv.bias.mul_(1e5)
    req = engine.GenerationRequest(prompt="a red circle", steps=8, width=64, height=64, seed=11,
                                       sampler_name="Euler a")
    res = engine.generate(loaded, req, Options().snapshot())
    assert any("NaN" in w and "float32" in w for w in res.warnings), res.warnings
    assert loaded.components.vae.dtype == torch.float32
    img = np.asarray(res.images[0])
    assert img.std() > 5  # a picture, not a black (or flat) square
    again = engine.generate(loaded, req, Options().snapshot())
    assert not again.warnings  # already float32: no second retry
    assert np.array_equal(np.asarray(again.images[0]), img)
    del reference


def test_compile_setting_wraps_the_unet(tmp_path):
    """The "Compile the UNet" setting works as --compile does: the loaded UNet is torch.compile's wrapper
    and the next job is marked as the one that pays for compiling (its time is logged and put in info)."""
    import json

    from modules.app import App

    write_tiny_checkpoint(tmp_path / "models" / "Stable-diffusion" / "tiny.safetensors", "sd1", seed=5)
    (tmp_path / "config.json").write_text(json.dumps({"compile_unet": True}))
    app = App(cmd_args.parse_args(["--data-dir", str(tmp_path), "--use-cpu", "all"]))
    assert app.policy.compile and not app.policy.channels_last
    app.models.refresh()
    loaded = app.models.load("tiny")
    assert isinstance(loaded.components.unet, torch._dynamo.eval_frame.OptimizedModule)
    assert loaded.components.compile_pending
    plain = App(cmd_args.parse_args(["--data-dir", str(tmp_path / "other"), "--use-cpu", "all"]))
    assert not plain.policy.compile


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("arch,sampler,scheduler,rng_source", [
    ("sd1", "Euler", "Automatic", "CPU"), ("sdxl", "Euler", "Automatic", "CPU"),
    ("sd1", "DPM++ 2M", "Karras", "CPU"),   # the UI's default sampler
    ("sd1", "Euler a", "Automatic", "GPU"),  # per-step noise drawn on the GPU: no copy from the host
    ("sd1", "UniPC", "Automatic", "CPU"), ("sd1", "DDIM", "Automatic", "CPU"), ("sd1", "Heun", "Karras", "CPU"),
])
def test_no_host_device_sync_inside_the_step_loop(tmp_path, arch, sampler, scheduler, rng_source):
    """From the end of step 1 to the start of the last step, nothing waits for the GPU: CUDA's sync debug
    mode turns any synchronising call in those steps into an error that fails the job.  (With the RNG
    source on the CPU, ancestral samplers copy each step's noise from the host: that is the setting's cost.)"""
    write_tiny_checkpoint(tmp_path / "models" / "Stable-diffusion" / "tiny.safetensors", arch, seed=5)
    p = Paths.from_args(cmd_args.parse_args(["--data-dir", str(tmp_path)]))
    mm = sd_models.ModelManager(p, devices.policy_from_args(cmd_args.parse_args([])))
    mm.refresh()
    loaded = mm.load("tiny")
    steps = 8

    def watch(ctl):
        torch.cuda.set_sync_debug_mode("error" if 1 <= ctl.step < steps - 1 else "default")

    req = engine.GenerationRequest(prompt="a red circle", negative_prompt="blue", steps=steps, width=64,
                                       height=64, seed=1, sampler_name=sampler, scheduler=scheduler)
    opts = {**Options().snapshot(), "randn_source": rng_source}
    try:
        res = engine.generate(loaded, req, opts, control=engine.JobControl(watch))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert len(res.images) == 1


def test_medvram_hooks_form_a_ring(tmp_path):
    """Under --medvram each model's hook sends the model used before it back to the CPU, and the text
    encoder (first in a job) sends the VAE (last in the job before): one model on the GPU at a time."""
    c = load_tiny(tmp_path, "medvram").components
    prev = {name: getattr(c, name)._hf_hook.prev_module_hook.model for name in ("text_encoder", "unet", "vae")}
    assert prev["text_encoder"] is c.vae and prev["unet"] is c.text_encoder and prev["vae"] is c.unet


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_medvram_keeps_one_model_on_the_gpu(tmp_path):
    write_tiny_checkpoint(tmp_path / "models" / "Stable-diffusion" / "tiny.safetensors", "sd1", seed=5)
    p = Paths.from_args(cmd_args.parse_args(["--data-dir", str(tmp_path)]))
    mm = sd_models.ModelManager(p, devices.policy_from_args(cmd_args.parse_args(["--medvram"])))
    mm.refresh()
    c = mm.load("tiny").components
    models = {"text_encoder": c.text_encoder, "unet": c.unet, "vae": c.vae}
    seen = []

    def record(name):
        def hook(*_):
            seen.append((name, sorted(n for n, m in models.items() if next(m.parameters()).is_cuda)))
        return hook

    for name, watched in (("text_encoder", c.text_encoder), ("unet", c.unet), ("vae", c.vae.decoder)):
        watched.register_forward_hook(record(name))
    req = engine.GenerationRequest(prompt="a red circle", steps=2, width=64, height=64, seed=1,
                                       sampler_name="Euler")
    for _ in range(2):  # the second job starts with the VAE of the first on the GPU
        engine.generate(mm.loaded, req, Options().snapshot())
    assert seen and all(on_gpu == [name] for name, on_gpu in seen), seen


@pytest.mark.parametrize("offload", ["medvram", "lowvram"])
def test_preview_map_is_fitted_on_the_execution_device_under_offload(tmp_path, offload):
    """The live-preview map is fitted in the job's thread on the components' execution device (under
    --lowvram the VAE's own weights sit on the meta device); the preview thread only reads it."""
    from modules import previews

    plain = load_tiny(tmp_path / "plain", "none").components
    expected = previews.fit_linear_map(plain.vae, plain.spec.scaling_factor)
    c = load_tiny(tmp_path / offload, offload).components
    lat = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    assert previews.approx_preview(lat, c.vae, c.spec.scaling_factor) is None  # not fitted: no VAE run
    got = previews.fit_linear_map(c.vae, c.spec.scaling_factor, device=c.execution_device)
    # the same fit: the tiny random VAE makes the least-squares problem ill-conditioned (entries up to ~75),
    # so float32 rounding in the encode moves the solution by ~1e-4 depending on kernels and threads
    assert torch.allclose(got, expected, rtol=1e-3, atol=1e-3), (got, expected)
    img = previews.approx_preview(lat, c.vae, c.spec.scaling_factor)
    assert img.size == (64, 64)
    ref = previews.approx_preview(lat, plain.vae, plain.spec.scaling_factor)
    assert np.abs(np.asarray(img, dtype=int) - np.asarray(ref, dtype=int)).max() <= 1


@pytest.mark.parametrize("enabled", [True, False])
def test_app_fits_the_preview_map_when_it_loads_a_model(tmp_path, enabled):
    import json

    from modules import previews
    from modules.app import App

    write_tiny_checkpoint(tmp_path / "models" / "Stable-diffusion" / "tiny.safetensors", "sd1", seed=5)
    (tmp_path / "config.json").write_text(json.dumps({"live_previews_enable": enabled}))
    pol = devices.DevicePolicy(device=torch.device("cpu"), dtype=torch.float32, vae_dtype=torch.float32,
                               offload="lowvram")
    app = App(cmd_args.parse_args(["--data-dir", str(tmp_path)]), policy=pol)
    loaded = app.load_model("tiny")
    assert (previews.fitted_map(loaded.components.vae) is not None) == enabled


def test_preview_is_the_fitted_map_and_runs_no_torch_kernel(tmp_path):
    """A preview is the fitted linear map applied to each latent pixel (clamped, rounded, 8x nearest), and
    computing it runs no torch kernel: torch's CPU kernels would start an OpenMP team in the preview thread
    that competes with sampling for the cores (bench/device_speed.py measures the cost)."""
    from modules import previews

    c = load_tiny(tmp_path).components
    w = previews.fit_linear_map(c.vae, c.spec.scaling_factor)
    lat = torch.randn(2, 4, 6, 10, generator=torch.Generator().manual_seed(3)) * 0.2
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        img = previews.approx_preview(lat, c.vae, c.spec.scaling_factor, index=1)
    ran = {e.name for e in prof.events()}
    views = {"aten::select", "aten::detach", "detach", "aten::as_strided", "aten::to", "aten::resolve_conj",
             "aten::resolve_neg", "aten::lift_fresh"}  # views and no-op casts of the float32 CPU latents
    assert ran <= views, ran - views
    flat = torch.cat([lat[1].reshape(4, -1).T, torch.ones(60, 1)], dim=1)
    ref = ((flat @ w).clamp(-1, 1) + 1).mul(127.5).round().to(torch.uint8).reshape(6, 10, 3).numpy()
    got = np.asarray(img)
    assert got.shape == (48, 80, 3)
    assert np.array_equal(got[::8, ::8], ref) and np.array_equal(got[7::8, 7::8], ref)
    assert len(np.unique(ref.reshape(-1, 3), axis=0)) > 10  # a picture of the latents, not one flat colour


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("seed", [0, 1, 1234, 3_000_000_000])
@pytest.mark.parametrize("shape", [(4, 8, 8), (4, 64, 64), (4, 128, 128)])
def test_nv_source_equals_cuda_randn(seed, shape):
    """A1111's "NV" numbers are torch's CUDA randn: the first draw of a seeded generator and the next ones."""
    from modules.sampling.philox import PhiloxGenerator

    gen = torch.Generator("cuda").manual_seed(seed)
    nv = PhiloxGenerator(seed)
    for _ in range(3):
        cuda = torch.randn(shape, generator=gen, device="cuda").cpu()
        assert torch.allclose(nv.randn(shape), cuda, atol=1e-5)
