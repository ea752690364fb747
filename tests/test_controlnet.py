"""ControlNet in the engine, against diffusers' ControlNet pipelines and sd-webui-controlnet's rules: one unit
equals StableDiffusion(XL)ControlNetPipeline at the same seed, the weight scales the residuals, the guidance
range gates the steps, the control modes scale the 13 residuals and leave the negative prompt's chunk alone,
incompatible / unknown models and modules are refused before sampling, the infotext is the extension's and
parses back, and the extension's API bodies (its README's, webuiapi's ControlNetUnit) work through the app."""
from __future__ import annotations

import base64
import io
import json
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from modules import hooks as hooks_mod
from modules import infotext
from modules.controlnet import apply, units
from modules.controlnet.library import ControlNetLibrary
from modules.engine import Batch, GenerationRequest, JobContext, RequestError, job, outputs, prompts, vae
from modules.options import Options
from modules.scripts import ScriptRegistry
from testing.tiny_controlnets import (build_tiny_controlnet, build_tiny_t2i_adapter, write_tiny_controlnet,
                                      write_tiny_t2i_adapter)
from testing.tiny_models import build_tiny_components
from tests.diffusers_schedulers import diffusers_scheduler
from tests.test_processing import loaded_for, noise_for, run_engine

ROOT = Path(__file__).resolve().parents[1]
TOL = 1e-3


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Tiny SD 1.x and SDXL models, their tiny ControlNets (original layout and diffusers' single file) in a
    library, and the ControlNet script in a registry of its own."""
    folder = tmp_path_factory.mktemp("controlnet")
    nets = {"sd1": build_tiny_controlnet("sd1", seed=3), "sdxl": build_tiny_controlnet("sdxl", seed=4)}
    write_tiny_controlnet(folder / "cn_sd1.safetensors", "sd1", model=nets["sd1"])
    write_tiny_controlnet(folder / "cn_xl.safetensors", "sdxl", layout="diffusers", model=nets["sdxl"])
    nets["t2i"] = build_tiny_t2i_adapter(seed=5, channels=(32, 64))   # the tiny SD 1.x UNet's two levels
    write_tiny_t2i_adapter(folder / "t2i_sd1.safetensors", layout="diffusers", model=nets["t2i"])
    lib = ControlNetLibrary([folder], folder / "annotators")
    app = types.SimpleNamespace(controlnets=lib, opts=Options())
    reg = ScriptRegistry(app)
    reg.load_file(ROOT / "scripts" / "controlnet.py")
    comps = {arch: build_tiny_components(arch, seed=0) for arch in ("sd1", "sdxl")}
    return types.SimpleNamespace(lib=lib, reg=reg, nets=nets, comps=comps, app=app)


def picture(seed=5, w=64, h=64) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8))


def b64(im: Image.Image, prefix: bool = False) -> str:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    s = base64.b64encode(buf.getvalue()).decode()
    return "data:image/png;base64," + s if prefix else s


def request(**kw) -> GenerationRequest:
    base = dict(prompt="a red circle", negative_prompt="blurry", sampler_name="Euler", steps=4, cfg_scale=6.0,
                width=64, height=64, seed=1234)
    return GenerationRequest(**{**base, **kw})


def cn_request(model="cn_sd1", image=None, **unit) -> GenerationRequest:
    u = {"image": b64(image or picture()), "module": "none", "model": model, **unit}
    return request(alwayson_scripts={"controlnet": {"args": [u]}})


def context(world, comps, req: GenerationRequest, extra_hooks=()) -> JobContext:
    world.reg.prepare(req)
    h = world.reg.job_hooks(hooks_mod.default_hooks(), req)
    h = h.copy()
    for point, fn in extra_hooks:
        h.add(point, fn, f"test:{point}")
    ctx = JobContext.create(loaded_for(comps), req, Options().snapshot(), hooks=h)
    ctx.prompts = prompts.prepare(ctx)
    return ctx


def run_cn(world, comps, req: GenerationRequest, extra_hooks=()) -> torch.Tensor:
    """Our decoded image (B, 3, H, W) in [0, 1] with the request's ControlNet units, and its context."""
    ctx = context(world, comps, req, extra_hooks)
    with torch.inference_mode():
        ctx.hooks.fire("before_job", ctx)
        seeds = [req.seed + i for i in range(req.batch_size)]
        lat, _ = job.run_batch(ctx, Batch(0, seeds, seeds))
        return (vae.decode(ctx, lat) / 2 + 0.5).clamp(0, 1), ctx


def cn_pipeline(comps, cls_name: str, controlnet):
    import diffusers

    kw = dict(vae=comps.vae, text_encoder=comps.text_encoder, tokenizer=comps.tokenizer, unet=comps.unet,
              controlnet=controlnet, scheduler=diffusers_scheduler("Euler", comps.spec.scheduler_config))
    if "XL" in cls_name:
        kw.update(text_encoder_2=comps.text_encoder_2, tokenizer_2=comps.tokenizer_2)
    else:
        kw.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe = getattr(diffusers, cls_name)(**kw)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def reference(world, arch: str, req: GenerationRequest, image: Image.Image, scale: float = 1.0, **kw):
    comps = world.comps[arch]
    cls = "StableDiffusionXLControlNetPipeline" if arch == "sdxl" else "StableDiffusionControlNetPipeline"
    pipe = cn_pipeline(comps, cls, world.nets[arch])
    return pipe(prompt=req.prompt, negative_prompt=req.negative_prompt or None, image=image,
                num_inference_steps=req.steps, guidance_scale=req.cfg_scale, height=req.height, width=req.width,
                latents=noise_for(comps, req), output_type="pt", controlnet_conditioning_scale=scale, **kw).images


def cn_net(world, name="cn_sd1"):
    """The loaded ControlNet the jobs use (the library keeps it)."""
    return world.lib.network(world.lib.find(name), dtype=torch.float32, device=torch.device("cpu"))


# ------------------------------------------------------------------ (a) equal to diffusers


def test_one_unit_equals_diffusers_controlnet_pipeline_sd1(world):
    image = picture()
    req = cn_request(image=image)
    ours, _ = run_cn(world, world.comps["sd1"], req)
    ref = reference(world, "sd1", req, image)
    plain = run_engine(world.comps["sd1"], request())
    assert ours.shape == ref.shape == (1, 3, 64, 64)
    assert (ours - ref).abs().max().item() < TOL
    assert (ours - plain).abs().max().item() > 10 * TOL     # the control matters


def test_one_unit_equals_diffusers_controlnet_pipeline_sdxl(world):
    image = picture(seed=8)
    req = cn_request(model="cn_xl", image=image)
    req.negative_prompt = ""
    req.cfg_scale = 5.0
    ours, _ = run_cn(world, world.comps["sdxl"], req)
    ref = reference(world, "sdxl", req, image)
    assert (ours - ref).abs().max().item() < TOL


def test_a_t2i_adapter_equals_diffusers_adapter_pipeline(world):
    """A T2I-Adapter's features go in as down_intrablock_additional_residuals, at every step, scaled by the
    weight, as diffusers' StableDiffusionAdapterPipeline does (adapter_conditioning_scale)."""
    import diffusers

    comps, image = world.comps["sd1"], picture(seed=11)
    req = cn_request(model="t2i_sd1", image=image, weight=0.7)
    ours, _ = run_cn(world, comps, req)
    pipe = diffusers.StableDiffusionAdapterPipeline(
        vae=comps.vae, text_encoder=comps.text_encoder, tokenizer=comps.tokenizer, unet=comps.unet,
        adapter=world.nets["t2i"], scheduler=diffusers_scheduler("Euler", comps.spec.scheduler_config),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    ref = pipe(prompt=req.prompt, negative_prompt=req.negative_prompt, image=image, num_inference_steps=req.steps,
               guidance_scale=req.cfg_scale, height=64, width=64, latents=noise_for(comps, req), output_type="pt",
               adapter_conditioning_scale=0.7).images
    ref = torch.as_tensor(np.asarray(ref))
    ref = ref.permute(0, 3, 1, 2) if ref.shape[-1] == 3 else ref     # this pipeline answers NHWC
    assert (ours - ref).abs().max().item() < TOL
    assert (ours - run_engine(comps, request())).abs().max().item() > 10 * TOL


# ------------------------------------------------------------------ (b) weight, steps, control modes


def test_weight_zero_is_no_controlnet_and_half_is_diffusers_half_scale(world):
    comps = world.comps["sd1"]
    zero, _ = run_cn(world, comps, cn_request(weight=0))
    assert torch.equal(zero, run_engine(comps, request()))
    image = picture()
    req = cn_request(image=image, weight=0.5)
    half, _ = run_cn(world, comps, req)
    assert (half - reference(world, "sd1", req, image, scale=0.5)).abs().max().item() < TOL


@pytest.mark.parametrize("start,end,acting", [(0.0, 0.5, [0, 1, 2]), (0.5, 1.0, [2, 3]), (0.3, 0.6, [2])])
def test_guidance_range_gates_the_steps_as_the_extension(world, start, end, acting):
    """The unit acts at step i of n where start <= i/n <= end (4 Euler steps: one UNet call each)."""
    net = cn_net(world)
    step, ran = [], []
    handle = net.register_forward_hook(lambda *a: ran.append(step[-1]))
    try:
        run_cn(world, world.comps["sd1"], cn_request(guidance_start=start, guidance_end=end),
               [("before_step", lambda ctx, s: step.append(s.index))])
    finally:
        handle.remove()
    assert step == [0, 1, 2, 3]
    assert ran == acting


def residual_record(world, req):
    """(ControlNet outputs, residuals the UNet got) of the first UNet call."""
    net, unet = cn_net(world), world.comps["sd1"].unet
    outs, got = [], []
    h1 = net.register_forward_hook(lambda m, a, kw, out: outs.append(out), with_kwargs=True)
    h2 = unet.register_forward_pre_hook(lambda m, a, kw: got.append(kw), with_kwargs=True)
    try:
        run_cn(world, world.comps["sd1"], req)
    finally:
        h1.remove()
        h2.remove()
    down, mid = outs[0]
    kw = got[0]
    return [*down, mid], [*kw["down_block_additional_residuals"], kw["mid_block_additional_residual"]]


def test_my_prompt_is_more_important_scales_the_13_residuals(world):
    """weight * 0.825 ** (12 - k) for the k-th output, as the extension's 13 scales zipped with the outputs (the
    tiny UNet has 7: 6 down, then the middle block)."""
    raw, got = residual_record(world, cn_request(control_mode="My prompt is more important", weight=0.8))
    assert len(raw) == len(got) == 7
    for k, (r, g) in enumerate(zip(raw, got)):
        torch.testing.assert_close(g, r * (0.8 * 0.825 ** (12 - k)))
    raw, got = residual_record(world, cn_request(weight=0.8))    # Balanced: the weight on every one
    for r, g in zip(raw, got):
        torch.testing.assert_close(g, r * 0.8)


def test_controlnet_is_more_important_leaves_the_negative_prompt_chunk_alone(world):
    raw, got = residual_record(world, cn_request(control_mode=2))
    for k, (r, g) in enumerate(zip(raw, got)):
        assert g.shape[0] == 2                                  # [negative, positive]
        assert torch.count_nonzero(g[0]) == 0
        torch.testing.assert_close(g[1], r[1] * 0.825 ** (12 - k))


def test_two_units_add_their_residuals(world):
    u = {"image": b64(picture()), "module": "none", "model": "cn_sd1"}
    req = request(alwayson_scripts={"controlnet": {"args": [u, dict(u, weight=0.5)]}})
    raw, got = residual_record(world, req)
    for r, g in zip(raw, got):      # the same model and image twice: 1.0 + 0.5 of its outputs
        torch.testing.assert_close(g, r * 1.5)


# ------------------------------------------------------------------ (c) refusals before sampling


def refusal(world, comps, req) -> RequestError:
    calls = []
    h = comps.unet.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        with pytest.raises(RequestError) as e:
            run_cn(world, comps, req)
    finally:
        h.remove()
    assert calls == []      # nothing sampled
    return e.value


def test_an_sdxl_model_with_an_sd1_checkpoint_is_refused_naming_the_unit(world):
    e = refusal(world, world.comps["sd1"], cn_request(model="cn_xl"))
    assert e.field == "alwayson_scripts.controlnet.args[0].model"
    assert "ControlNet unit 0" in str(e) and "is for SDXL" in str(e) and "SD 1.x" in str(e)


def test_unknown_model_and_module_name_what_there_is(world):
    e = refusal(world, world.comps["sd1"], cn_request(model="nope"))
    assert "'nope' not found" in str(e) and "cn_sd1 [" in str(e) and "cn_xl [" in str(e)
    e = refusal(world, world.comps["sd1"], cn_request(module="no_such_module"))
    assert e.field.endswith(".module") and "canny" in str(e) and "none" in str(e)
    e = refusal(world, world.comps["sd1"], request(alwayson_scripts={"controlnet": {"args": [
        {"module": "none", "model": "cn_sd1"}]}}))
    assert "no input image" in str(e)


def test_more_units_than_the_setting_is_an_error_fewer_are_off(world):
    unit = {"image": b64(picture()), "module": "none", "model": "cn_sd1"}
    with pytest.raises(RequestError) as e:
        world.reg.prepare(request(alwayson_scripts={"controlnet": {"args": [unit] * 4}}))
    assert "takes 3 arguments" in str(e.value)
    req = request(alwayson_scripts={"controlnet": {"args": [unit]}})
    world.reg.prepare(req)
    a = req.alwayson_scripts["ControlNet"]
    assert a["unit_0"]["enabled"] and not a["unit_1"]["enabled"] and not a["unit_2"]["enabled"]


# ------------------------------------------------------------------ (d) infotext


def test_infotext_is_the_extensions_and_parses_back(world):
    req = cn_request(module="canny", weight=0.75, guidance_end=0.9)
    _, ctx = run_cn(world, world.comps["sd1"], req)
    title = world.lib.find("cn_sd1").title
    text = outputs.infotext(ctx, 1234, 0)
    expected = (f'ControlNet 0: "Module: canny, Model: {title}, Weight: 0.75, Resize Mode: Crop and Resize, '
                f'Low Vram: False, Processor Res: 512, Threshold A: 100, Threshold B: 200, Guidance Start: 0, '
                f'Guidance End: 0.9, Pixel Perfect: False, Control Mode: Balanced, Hr Option: Both, '
                f'Save Detected Map: True"')
    assert expected in text
    params = infotext.parse_generation_parameters(text, defaults=False)
    (unit,) = apply.units_from_infotext(params)
    want = dict(units.parse_unit({"module": "canny", "model": title, "weight": 0.75, "guidance_end": 0.9,
                                  "processor_res": 512, "threshold_a": 100, "threshold_b": 200}))
    assert unit == want and unit["image"] is None
    none_unit = units.parse_unit({"module": "none", "model": "x"})
    assert apply.serialize_unit(none_unit).startswith("Module: none, Model: x, Weight: 1, Resize Mode: Crop and "
                                                      "Resize, Low Vram: False, Guidance Start: 0")  # -1s left out


# ------------------------------------------------------------------ hints


def test_resize_modes_cover_crop_and_fit_pad():
    m = np.zeros((32, 64, 3), dtype=np.uint8)
    m[:, :32] = 255                         # left half white, right half black
    crop = apply.resize_map(m, "none", "Crop and Resize", 64, 64)
    assert crop.shape == (64, 64, 3)        # covered: 64x128, the centre 64 columns (half white, half black)
    assert crop[:, :32].mean() > 200 and crop[:, 32:].mean() < 50
    fill = apply.resize_map(m, "none", "Resize and Fill", 64, 64)
    assert fill.shape == (64, 64, 3)        # fitted 32x64 in the middle, padded above and below
    assert (fill[16:48, :30] > 200).all() and (fill[16:48, 34:] < 50).all()
    just = apply.resize_map(m, "none", "Just Resize", 16, 16)
    assert just.shape == (16, 16, 3)
    assert apply.pixel_perfect_resolution(np.zeros((100, 100, 3)), 50, 100, "Resize and Fill") == 50
    assert apply.pixel_perfect_resolution(np.zeros((100, 100, 3)), 50, 100, "Crop and Resize") == 100


def test_img2img_without_a_unit_image_uses_the_init_image(world):
    init = picture(seed=9)
    u = {"module": "none", "model": "cn_sd1"}
    req = request(mode="img2img", init_images=[init], denoising_strength=0.6,
                  alwayson_scripts={"controlnet": {"args": [u]}})
    _, ctx = run_cn(world, world.comps["sd1"], req)
    (unit,) = ctx.state[apply.STATE_KEY].units
    assert np.array_equal(unit.detected, np.asarray(init))


def test_hires_pass_gets_the_hint_at_its_size(world):
    req = cn_request(module="canny")
    req.enable_hr, req.hr_scale, req.denoising_strength, req.hr_upscaler = True, 2.0, 0.5, "Latent"
    _, ctx = run_cn(world, world.comps["sd1"], req)
    (unit,) = ctx.state[apply.STATE_KEY].units
    assert set(unit.hints) == {(64, 64), (128, 128)}
    assert unit.scales(13, hires=True)[0] == pytest.approx(0.825 ** 12)   # canny: soft scales in hires. fix
    assert unit.scales(13, hires=False) == [1.0] * 13


# ------------------------------------------------------------------ (e) the extension's API bodies


@pytest.fixture(scope="module")
def api(tmp_path_factory, world):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    import webui
    from modules import cmd_args
    from modules.app import App
    from testing.tiny_models import write_tiny_checkpoint

    data = tmp_path_factory.mktemp("cnapi")
    write_tiny_checkpoint(data / "models" / "Stable-diffusion" / "tiny.safetensors", "sd1", seed=0)
    write_tiny_controlnet(data / "models" / "ControlNet" / "cn_sd1.safetensors", "sd1", model=world.nets["sd1"])
    write_tiny_controlnet(data / "models" / "ControlNet" / "cn_xl.safetensors", "sdxl", layout="diffusers",
                          model=world.nets["sdxl"])
    app = App(cmd_args.parse_args(["--data-dir", str(data)]))
    app.refresh_models()
    client = TestClient(webui.create_server(app, with_ui=False, with_api=True))
    yield app, client
    app.queue.stop()


SMALL = {"prompt": "a cat", "width": 64, "height": 64, "steps": 2, "cfg_scale": 7.0, "seed": 3}


def post(client, units_list, status=200):
    r = client.post("/sdapi/v1/txt2img", json={**SMALL, "alwayson_scripts": {"controlnet": {"args": units_list}}})
    assert r.status_code == status, r.text
    return r.json()


def test_api_takes_the_extensions_readme_body_and_webuiapis(api):
    app, client = api
    title = app.controlnets.find("cn_sd1").title
    readme = {"input_image": b64(picture()), "module": "canny", "model": title}
    body = post(client, [readme])
    assert 'ControlNet 0: "Module: canny, Model: ' + title in json.loads(body["info"])["infotexts"][0]
    webuiapi = pytest.importorskip("webuiapi")
    unit = webuiapi.ControlNetUnit(image=picture(), module="none", model=title, weight=0.5)
    body = post(client, [unit.to_dict()])
    assert "Weight: 0.5" in json.loads(body["info"])["infotexts"][0]
    plain = client.post("/sdapi/v1/txt2img", json=SMALL).json()
    assert plain["images"][0] != body["images"][0]


def test_api_refuses_a_mismatched_model_and_too_many_units(api):
    app, client = api
    body = post(client, [{"input_image": b64(picture()), "module": "none", "model": "cn_xl"}], status=422)
    assert "ControlNet unit 0" in json.dumps(body) and "SDXL" in json.dumps(body)
    body = post(client, [{"input_image": b64(picture()), "module": "none", "model": "cn_sd1"}] * 4, status=422)
    assert "3" in json.dumps(body)
