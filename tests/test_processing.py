"""The generation engine: agreement with diffusers' pipelines, seeds, requests, bad input."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from modules import engine, infotext, rng, samplers
from modules.engine import GenerationRequest, JobContext, RequestError, job, prompts, vae
from modules.options import Options
from modules.sampling.schedules import alphas_cumprod_from_config
from modules.sd_models import CheckpointInfo, LoadedModel
from testing.tiny_models import build_tiny_components
from tests.diffusers_schedulers import diffusers_scheduler

TOL = 1e-3  # max abs difference of pixels in [0, 1]


@pytest.fixture(scope="module")
def models():
    return {arch: build_tiny_components(arch, seed=0) for arch in ("sd1", "sdxl", "sd1-inpaint")}


def loaded_for(comps, name="tiny.safetensors"):
    return LoadedModel(info=CheckpointInfo(Path("/nonexistent") / name, name, "ab" * 32), components=comps,
                       vae_name="None")


def run_engine(comps, req: GenerationRequest) -> torch.Tensor:
    """Our engine's decoded image, (B, 3, H, W) in [0, 1], before PNG quantisation."""
    ctx = JobContext.create(loaded_for(comps), req, Options().snapshot())
    engine.validate(req)
    ctx.prompts = prompts.prepare(ctx)
    seeds = [req.seed + i for i in range(req.batch_size)]
    with torch.inference_mode():
        lat, _ = job.run_batch(ctx, engine.Batch(0, seeds, seeds))
        return (vae.decode(ctx, lat) / 2 + 0.5).clamp(0, 1)


def stage_context(comps) -> JobContext:
    """A context for calling single stages (the VAE) on the tiny model."""
    return JobContext.create(loaded_for(comps), None, Options().snapshot())


def noise_for(comps, req):
    c = comps.vae.config.latent_channels
    return rng.ImageRNG((c, req.height // 8, req.width // 8), [req.seed + i for i in range(req.batch_size)]).first()


def sd_pipeline(comps, cls_name, scheduler):
    import diffusers

    cls = getattr(diffusers, cls_name)
    kw = dict(vae=comps.vae, text_encoder=comps.text_encoder, tokenizer=comps.tokenizer, unet=comps.unet,
              scheduler=scheduler)
    if cls_name.startswith("StableDiffusionXL"):
        kw.update(text_encoder_2=comps.text_encoder_2, tokenizer_2=comps.tokenizer_2)
    else:
        kw.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe = cls(**kw)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("sampler,schedule", [("Euler", "Automatic"), ("Heun", "Automatic")])
def test_txt2img_equals_diffusers_sd1(models, sampler, schedule):
    comps = models["sd1"]
    req = GenerationRequest(prompt="a red circle on a blue background", negative_prompt="ugly, blurry",
                            sampler_name=sampler, scheduler=schedule, steps=8, cfg_scale=6.5, width=64, height=64,
                            seed=1234, batch_size=2)
    ours = run_engine(comps, req)
    sched = diffusers_scheduler(sampler if schedule == "Automatic" else f"{sampler} {schedule}",
                                comps.spec.scheduler_config)
    pipe = sd_pipeline(comps, "StableDiffusionPipeline", sched)
    ref = pipe(prompt=req.prompt, negative_prompt=req.negative_prompt, num_inference_steps=8, guidance_scale=6.5,
               height=64, width=64, num_images_per_prompt=2, latents=noise_for(comps, req), output_type="pt").images
    assert ours.shape == ref.shape == (2, 3, 64, 64)
    assert (ours - ref).abs().max().item() < TOL


def test_txt2img_equals_diffusers_sdxl(models):
    comps = models["sdxl"]
    req = GenerationRequest(prompt="a small yellow triangle", negative_prompt="", sampler_name="Euler",
                            steps=6, cfg_scale=5.0, width=64, height=64, seed=77)
    ours = run_engine(comps, req)
    sched = diffusers_scheduler("Euler", comps.spec.scheduler_config)
    pipe = sd_pipeline(comps, "StableDiffusionXLPipeline", sched)
    # A1111 (and we) zero an empty SDXL negative prompt, which diffusers does for negative_prompt=None
    ref = pipe(prompt=req.prompt, negative_prompt=None, num_inference_steps=6, guidance_scale=5.0, height=64,
               width=64, latents=noise_for(comps, req), output_type="pt").images
    assert (ours - ref).abs().max().item() < TOL


def test_img2img_equals_diffusers(models):
    comps = models["sd1"]
    init = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    req = GenerationRequest(prompt="a green square", negative_prompt="", sampler_name="Euler", steps=10,
                            cfg_scale=7.0, width=64, height=64, seed=5, mode="img2img", init_images=[init],
                            denoising_strength=0.6)
    ours = run_engine(comps, req)
    ctx = stage_context(comps)
    with torch.inference_mode():
        init_latents = vae.encode(ctx, vae.pil_to_tensor(init))
    sched = diffusers_scheduler("Euler", comps.spec.scheduler_config)
    pipe = sd_pipeline(comps, "StableDiffusionImg2ImgPipeline", sched)
    # A1111 runs int(0.6 * 10) + 1 = 7 steps of a 10-step schedule: diffusers' strength 0.7 runs the same 7
    ref = pipe(prompt=req.prompt, negative_prompt="", image=init_latents, strength=0.7, num_inference_steps=10,
               guidance_scale=7.0, generator=[torch.Generator().manual_seed(5)], output_type="pt").images
    assert (ours - ref).abs().max().item() < TOL


def test_inpaint_9ch_equals_diffusers(models):
    comps = models["sd1-inpaint"]
    init = Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    req = GenerationRequest(prompt="a blue circle", sampler_name="Euler", steps=8, cfg_scale=7.0, width=64,
                            height=64, seed=9, mode="img2img", init_images=[init], mask=mask, mask_blur=0,
                            denoising_strength=1.0, inpainting_fill=1)
    ours = run_engine(comps, req)
    ctx = stage_context(comps)
    img_t = vae.pil_to_tensor(init)
    mbin = (torch.from_numpy(np.asarray(mask, dtype=np.float32) / 255)[None, None] >= 0.5).float()
    with torch.inference_mode():
        masked_latents = vae.encode(ctx, img_t * (1 - mbin))
        image_latents = vae.encode(ctx, img_t)
    sched = diffusers_scheduler("Euler", comps.spec.scheduler_config)
    pipe = sd_pipeline(comps, "StableDiffusionInpaintPipeline", sched)
    # A1111 (and we) start an inpainting model at strength 1 from the image latent plus noise at the largest sigma;
    # diffusers starts from `latents` * sigma_max, so it gets that start divided by sigma_max
    sched.set_timesteps(8)
    sigma_max = float(sched.init_noise_sigma)
    ref = pipe(prompt=req.prompt, negative_prompt="", image=init, mask_image=mask, masked_image_latents=masked_latents,
               num_inference_steps=8, guidance_scale=7.0, height=64, width=64, strength=1.0,
               latents=image_latents / sigma_max + noise_for(comps, req), output_type="pt").images
    assert (ours - ref).abs().max().item() < TOL


# ---------------------------------------------------------------------------------------------


def generate(comps, **kw):
    return generate_with(comps, {}, **kw)


def generate_with(comps, settings: dict, control=None, **kw):
    """One job on the tiny components with these settings over the defaults."""
    base = dict(prompt="a circle", steps=4, width=64, height=64, seed=3, sampler_name="Euler")
    base.update(kw)
    opts = Options().snapshot()
    opts.update(settings)
    return engine.generate(loaded_for(comps), GenerationRequest(**base), opts,
                           **({"control": control} if control is not None else {}))


def arr(im):
    return np.asarray(im, dtype=np.int16)


def test_seeds_batches_and_determinism(models):
    comps = models["sd1"]
    a = generate(comps, batch_size=2, n_iter=2, seed=100)
    assert a.seeds == [100, 101, 102, 103] and len(a.images) == 4
    b = generate(comps, seed=102)  # image 3 of the batch alone: same seed -> same picture
    assert np.abs(arr(a.images[2]) - arr(b.images[0])).max() <= 1
    c = generate(comps, seed=-1)
    assert 0 <= c.seeds[0] < 2**32
    assert f"Seed: {c.seeds[0]}," in c.infotexts[0]
    assert a.info["all_seeds"] == [100, 101, 102, 103]


def test_variation_seed_moves_between_seeds(models):
    comps = models["sd1"]
    base = arr(generate(comps, seed=10).images[0])
    other = arr(generate(comps, seed=20).images[0])
    zero = arr(generate(comps, seed=10, subseed=20, subseed_strength=0.0).images[0])
    full = arr(generate(comps, seed=10, subseed=20, subseed_strength=1.0).images[0])
    half = generate(comps, seed=10, subseed=20, subseed_strength=0.5)
    assert np.abs(zero - base).max() <= 1
    assert np.abs(full - other).max() <= 1
    assert "Variation seed: 20, Variation seed strength: 0.5" in half.infotexts[0]


def test_seed_resize_keeps_the_centre_of_the_noise():
    small = rng.ImageRNG((4, 8, 8), [42]).first()
    big = rng.ImageRNG((4, 12, 12), [42], seed_resize_from_h=64, seed_resize_from_w=64).first()
    assert torch.equal(big[0, :, 2:10, 2:10], small[0])


def test_prompt_editing_changes_the_image(models):
    comps = models["sd1"]
    plain = arr(generate(comps, prompt="a red circle", steps=6).images[0])
    edited = arr(generate(comps, prompt="a [red:blue:3] circle", steps=6).images[0])
    same_edit = arr(generate(comps, prompt="a [red:blue:3] circle", steps=6).images[0])
    assert np.abs(plain - edited).max() > 0
    assert np.array_equal(edited, same_edit)


def test_infotext_round_trip(models):
    comps = models["sd1"]
    res = generate(comps, prompt="a (red:1.2) circle", negative_prompt="blurry", sampler_name="DPM++ 2M",
                   scheduler="Karras", cfg_scale=6.5, seed=4242, steps=5)
    text = res.infotexts[0]
    assert text.splitlines()[0] == "a (red:1.2) circle"
    assert text.splitlines()[1] == "Negative prompt: blurry"
    assert text.splitlines()[2].startswith("Steps: 5, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, "
                                           "Seed: 4242, Size: 64x64, Model hash: abababab")
    p = infotext.parse_generation_parameters(text)
    assert (p["Prompt"], p["Negative prompt"], p["Steps"], p["Sampler"], p["Schedule type"], p["CFG scale"],
            p["Seed"], p["Size-1"], p["Size-2"]) == ("a (red:1.2) circle", "blurry", "5", "DPM++ 2M", "Karras",
                                                      "6.5", "4242", "64", "64")  # A1111's parser gives text


def test_hires_fix_and_inpaint_options_run(models):
    comps = models["sd1"]
    res = generate(comps, enable_hr=True, hr_scale=1.5, hr_upscaler="Latent", denoising_strength=0.5,
                   hr_second_pass_steps=3)
    assert res.images[0].size == (96, 96)
    assert "Hires upscale: 1.5, Hires steps: 3, Hires upscaler: Latent" in res.infotexts[0]
    res = generate(comps, enable_hr=True, hr_resize_x=128, hr_upscaler="Nearest", denoising_strength=0.5)
    assert res.images[0].size == (128, 128)
    init = Image.new("RGB", (80, 64), (200, 30, 30))
    mask = Image.new("L", (80, 64), 0)
    mask.paste(255, (30, 20, 50, 40))
    for fill in range(4):
        for full_res in (False, True):
            r = generate(comps, mode="img2img", init_images=[init], mask=mask, inpainting_fill=fill,
                         inpaint_full_res=full_res, denoising_strength=0.7)
            out = arr(r.images[0])
            # whole picture: the requested size; only masked: pasted back into the original (80x64)
            assert out.shape == ((64, 80, 3) if full_res else (64, 64, 3))
            # outside the (blurred) mask the original image is kept
            assert np.abs(out[0:8, 0:8] - np.array([200, 30, 30])).max() <= 2


def test_tiling_makes_the_image_wrap(models):
    comps = models["sd1"]
    plain = generate(comps, seed=8)
    tiled = generate(comps, seed=8, tiling=True)
    assert "Tiling: True" in tiled.infotexts[0]
    assert not np.array_equal(arr(plain.images[0]), arr(tiled.images[0]))
    again = generate(comps, seed=8)
    assert np.array_equal(arr(plain.images[0]), arr(again.images[0])), "tiling must be switched off after the job"


def test_interrupt_stops_between_steps(models):
    comps = models["sd1"]
    ctl = engine.JobControl()
    seen = []

    def on_progress(c):
        seen.append(c.step)
        if c.step == 2:
            c.interrupt()

    ctl.on_progress = on_progress
    res = engine.generate(loaded_for(comps), GenerationRequest(prompt="x", steps=20, width=64, height=64, seed=1,
                                                               n_iter=3, sampler_name="Euler"),
                          Options().snapshot(), control=ctl)
    assert seen == [1, 2]
    assert res.interrupted and len(res.images) == 1


@pytest.mark.parametrize("field,value,message", [
    ("width", 70, "width: must be a multiple of 8"),
    ("height", 4096, "height: must be at most 2048"),
    ("width", 32, "width: must be at least 64"),
    ("steps", 0, "steps: must be at least 1"),
    ("cfg_scale", float("nan"), "cfg_scale: must be a finite number"),
    ("cfg_scale", -1, "cfg_scale: must be at least 0"),
    ("sampler_name", "Euler b", "sampler_name: Unknown sampler 'Euler b'. Valid samplers: "),
    ("scheduler", "Wobbly", "scheduler: "),
])
def test_bad_requests_name_the_field(field, value, message):
    req = GenerationRequest(**{field: value})
    with pytest.raises(RequestError) as e:
        engine.validate(req)
    assert e.value.field == field
    assert str(e.value).startswith(message)


def test_bad_img2img_requests():
    with pytest.raises(RequestError, match="init_images: img2img needs an init image"):
        engine.validate(GenerationRequest(mode="img2img"))
    img = Image.new("RGB", (64, 64))
    with pytest.raises(RequestError, match="denoising_strength: must be at most 1"):
        engine.validate(GenerationRequest(mode="img2img", init_images=[img], denoising_strength=1.5))
    with pytest.raises(RequestError, match="mask: size 32x32 differs from the init image's 64x64"):
        engine.validate(GenerationRequest(mode="img2img", init_images=[img], mask=Image.new("L", (32, 32))))


def test_job_through_app_saves_images_and_grid(tmp_path):
    from modules import cmd_args, images
    from modules.app import App
    from testing.tiny_models import write_tiny_checkpoint

    write_tiny_checkpoint(tmp_path / "models" / "Stable-diffusion" / "tiny.safetensors", "sd1")
    app = App(cmd_args.parse_args(["--data-dir", str(tmp_path), "--use-cpu", "all"]))
    job = app.submit(GenerationRequest(prompt="a red circle", steps=3, width=64, height=64, seed=7, batch_size=2,
                                       sampler_name="Euler"))
    assert job.done_event.wait(300) and job.status == "done", job.error
    files = [Path(f) for f in job.result.saved_files]
    day = files[0].parent.name
    assert [f.name for f in files] == ["00000-7-a red circle.png", "00001-8-a red circle.png"]
    assert files[0].parent == tmp_path / "outputs" / "txt2img-images" / day
    text, _ = images.read_info_from_image(Image.open(files[1]))
    assert text == job.result.infotexts[1] and "Seed: 8," in text
    grid = Path(job.result.grid_file)
    assert grid.parent == tmp_path / "outputs" / "txt2img-grids" / day and grid.name == "grid-0000-7.png"
    assert Image.open(grid).size == (128, 64)
    assert not list((tmp_path / "outputs").rglob(".tmp-*")), "no temporary files are left behind"
    app.queue.stop()


# ---------------------------------------------------------------------------------------------
# settings the engine reads: RNG source, ENSD, exact img2img/hires steps, grid first, NaN check


def test_ensd_reseeds_the_sampler_noise_not_the_initial_noise():
    plain = rng.ImageRNG((4, 8, 8), [42, 43])
    delta = rng.ImageRNG((4, 8, 8), [42, 43], ensd=31337)
    assert torch.equal(plain.first(), delta.first())  # the picture's starting noise is the seed's
    later = delta.next()
    for i, seed in enumerate((42, 43)):
        expected = torch.randn((4, 8, 8), generator=torch.Generator().manual_seed(seed + 31337))
        assert torch.equal(later[i], expected)
    assert not torch.equal(plain.next(), later)


def test_ensd_changes_ancestral_samplers_only_and_is_written(models):
    comps = models["sd1"]
    base = arr(generate_with(comps, {}, sampler_name="Euler a").images[0])
    res = generate_with(comps, {"eta_noise_seed_delta": 31337}, sampler_name="Euler a")
    assert np.abs(arr(res.images[0]) - base).max() > 10  # a different picture
    assert "ENSD: 31337" in res.infotexts[0]
    p = infotext.parse_generation_parameters(res.infotexts[0])
    assert p["ENSD"] == "31337"
    euler = generate_with(comps, {}, sampler_name="Euler")
    euler_ensd = generate_with(comps, {"eta_noise_seed_delta": 31337}, sampler_name="Euler")
    assert np.array_equal(arr(euler.images[0]), arr(euler_ensd.images[0]))  # no noise after the first


def test_rng_source_is_written_and_gpu_means_the_job_device(models):
    comps = models["sd1"]
    cpu = generate_with(comps, {}, sampler_name="Euler a")
    assert ", RNG: CPU, " in cpu.infotexts[0]  # A1111 reads a missing RNG as GPU
    gpu = generate_with(comps, {"randn_source": "GPU"}, sampler_name="Euler a")
    assert "RNG" not in gpu.infotexts[0]
    assert infotext.parse_generation_parameters(gpu.infotexts[0])["RNG"] == "GPU"
    # on a CPU-only job the job's device is the CPU: the same picture
    assert np.array_equal(arr(cpu.images[0]), arr(gpu.images[0]))
    ctx = JobContext.create(loaded_for(comps), GenerationRequest(), {**Options().snapshot(), "randn_source": "GPU"})
    assert ctx.image_rng((4, 8, 8), [1], [1]).device == ctx.device


def count_steps(comps, settings, **kw):
    seen = []
    ctl = engine.JobControl(lambda c: seen.append(c.step))
    generate_with(comps, settings, control=ctl, **kw)
    return len(seen), ctl.total_steps


def test_img2img_exact_steps_setting(models):
    comps = models["sd1"]
    init = Image.new("RGB", (64, 64), (200, 30, 30))
    kw = dict(mode="img2img", init_images=[init], steps=10, denoising_strength=0.3)
    assert count_steps(comps, {}, **kw) == (4, 4)  # A1111: int(10 * 0.3) + 1
    assert count_steps(comps, {"img2img_fix_steps": True}, **kw) == (10, 10)  # the last 10 of 33
    info, sched = samplers.resolve_sampler("Euler")
    mp = samplers.ModelParams(alphas_cumprod_from_config(comps.spec.scheduler_config))
    exact = samplers.plan_pass(info, sched, 10, mp, strength=0.3, exact=True)
    full = samplers.plan_pass(info, sched, 33, mp)
    assert exact.steps == 10 and torch.equal(exact.sigmas, full.sigmas[23:])
    assert count_steps(comps, {"img2img_fix_steps": True}, **{**kw, "denoising_strength": 0.0}) == (0, 1)


def test_hires_steps_are_run_exactly(models):
    """A1111 runs exactly the hires steps asked for; without them, exactly the first pass's steps."""
    comps = models["sd1"]
    kw = dict(enable_hr=True, hr_scale=1.5, hr_upscaler="Latent", denoising_strength=0.5, steps=4)
    assert count_steps(comps, {}, hr_second_pass_steps=3, **kw) == (4 + 3, 7)
    assert count_steps(comps, {}, **kw) == (4 + 4, 8)


def test_grid_leads_the_results_unless_turned_off(models):
    comps = models["sd1"]
    res = generate_with(comps, {}, batch_size=2)
    assert res.grid is not None and res.grid_first and res.info["index_of_first_image"] == 1
    assert res.info["infotexts"] == [res.infotexts[0], *res.infotexts]
    off = generate_with(comps, {"return_grid": False}, batch_size=2)
    assert off.grid is not None and not off.grid_first and off.info["index_of_first_image"] == 0
    assert off.info["infotexts"] == off.infotexts
    one = generate_with(comps, {}, batch_size=1)
    assert one.grid is None and not one.grid_first and one.info["index_of_first_image"] == 0


@pytest.mark.parametrize("sampler", ["Euler", "UniPC", "DDIM", "DPM++ 2M"])
def test_nan_latents_fail_the_job_naming_the_sampler_in_float32(models, one_thread, tmp_path, sampler):
    """A UNet that returns NaN never gives a saved black picture: the job fails and says which sampler."""
    import copy

    comps = copy.deepcopy(models["sd1"])
    with torch.no_grad():
        comps.unet.conv_out.bias.fill_(float("nan"))
    saved = []
    req = GenerationRequest(prompt="x", steps=3, width=64, height=64, seed=1, sampler_name=sampler)
    with pytest.raises(engine.NansError, match=re.escape(f"sampler '{sampler}' produced NaN")) as e:
        engine.generate(loaded_for(comps), req, Options().snapshot(),
                        save=lambda *a, **k: saved.append(a) or tmp_path / "x.png")
    assert "--no-half" not in str(e.value) and saved == []


def test_unet_nans_in_half_precision_fail_the_job_with_a_way_out(models, one_thread):
    import copy

    comps = copy.deepcopy(models["sd1"])
    for m in (comps.unet, comps.text_encoder, comps.vae):
        m.to(torch.float16)
    with torch.no_grad():  # x1e6: far past float16's 65504
        comps.unet.conv_in.weight.mul_(1e6)
    with pytest.raises(engine.NansError, match="--no-half"):
        generate_with(comps, {}, steps=2)


def test_save_txt_writes_the_parameters_beside_each_file(tmp_path):
    import json

    from modules import cmd_args
    from modules.app import App
    from testing.tiny_models import write_tiny_checkpoint

    write_tiny_checkpoint(tmp_path / "models" / "Stable-diffusion" / "tiny.safetensors", "sd1")
    (tmp_path / "config.json").write_text(json.dumps({"save_txt": True, "enable_pnginfo": False}))
    app = App(cmd_args.parse_args(["--data-dir", str(tmp_path), "--use-cpu", "all"]))
    job = app.submit(GenerationRequest(prompt="a red circle", steps=2, width=64, height=64, seed=7, batch_size=2,
                                       sampler_name="Euler"))
    assert job.done_event.wait(300) and job.status == "done", job.error
    for f, text in zip(job.result.saved_files, job.result.infotexts):
        assert Path(f).with_suffix(".txt").read_text(encoding="utf-8") == text + "\n"
    assert Path(job.result.grid_file).with_suffix(".txt").read_text(encoding="utf-8") == job.result.infotexts[0] + "\n"
    assert "parameters" not in Image.open(job.result.saved_files[0]).info  # PNG info off, the text file still written
    app.opts.set("save_txt", False)
    job = app.submit(GenerationRequest(prompt="a red circle", steps=2, width=64, height=64, seed=9, sampler_name="Euler"))
    assert job.done_event.wait(300) and job.status == "done", job.error
    assert not Path(job.result.saved_files[0]).with_suffix(".txt").exists()
    assert not list((tmp_path / "outputs").rglob(".tmp-*"))
    app.queue.stop()


def test_a_tiny_strength_with_exact_steps_is_refused_not_stretched(models):
    """Exact-steps passes run steps / strength of a schedule: at 1e-300 that is no schedule to build."""
    with pytest.raises(RequestError, match="denoising_strength: 1e-300 is too small"):
        engine.validate(GenerationRequest(enable_hr=True, denoising_strength=1e-300))
    engine.validate(GenerationRequest(enable_hr=True, denoising_strength=0.0002, steps=20))  # 100,000: allowed
    init = Image.new("RGB", (64, 64), (20, 200, 30))
    with pytest.raises(RequestError, match="denoising_strength: 1e-300 is too small"):
        generate_with(models["sd1"], {"img2img_fix_steps": True}, mode="img2img", init_images=[init],
                      denoising_strength=1e-300)
