"""Hook points: where they fire in a job and with what, that a handler can change the picture, that the
built-in features (LoRA, tiling, previews, the model load at start) run through them."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from modules import engine, extra_networks, hooks, lora
from modules.engine import GenerationRequest
from modules.options import Options
from modules.sd_models import CheckpointInfo, LoadedModel
from testing.tiny_models import build_tiny_components


@pytest.fixture(scope="module")
def loaded():
    comps = build_tiny_components("sd1", seed=0)
    return LoadedModel(info=CheckpointInfo(Path("/nonexistent/t.safetensors"), "t.safetensors", "ab" * 32),
                       components=comps, vae_name="None")


def request(**kw):
    base = dict(prompt="a circle", negative_prompt="blue", steps=4, width=64, height=64, seed=3, sampler_name="Euler")
    base.update(kw)
    return GenerationRequest(**base)


def recorder(h: hooks.Hooks, events: list):
    """Record every job hook point's calls (with what each point is given)."""
    h.add("before_job", lambda ctx: events.append(("before_job", ctx.prompts.prompt_clean)), "rec")
    h.add("after_conditioning", lambda ctx, enc: events.append(("after_conditioning", len(enc.positive))), "rec")
    h.add("cfg_denoiser", lambda ctx, d: events.append(("cfg_denoiser", type(d).__name__)), "rec")
    h.add("before_step", lambda ctx, s: events.append(("before_step", s.index, s.steps, s.denoised is None)), "rec")
    h.add("after_step", lambda ctx, s: events.append(("after_step", s.index, tuple(s.denoised.shape))), "rec")
    h.add("after_image_decoded", lambda ctx, im: events.append(("after_image_decoded", im.size)), "rec")
    h.add("after_image_saved", lambda ctx, s: events.append(("after_image_saved", s.path, s.grid)), "rec")
    h.add("after_job", lambda ctx, r: events.append(("after_job", None if r is None else len(r.images))), "rec")


def test_every_job_hook_point_fires_in_order_with_its_arguments(loaded, one_thread):
    events: list = []
    h = hooks.default_hooks()
    recorder(h, events)
    saved = []

    def save(image, text, seed, prompt, req, opts, grid=False):
        saved.append(grid)
        return f"/out/{'grid' if grid else seed}.png"

    req = request(n_iter=2, enable_hr=True, hr_scale=1.5, hr_second_pass_steps=2, denoising_strength=0.5,
                  hr_upscaler="Latent")
    res = engine.generate(loaded, req, Options().snapshot(), hooks=h, save=save)
    assert len(res.images) == 2 and saved == [False, False, True]
    one_pass = lambda steps: [x for i in range(steps) for x in (("before_step", i, steps, True),  # noqa: E731
                                                                ("after_step", i, (1, 4, 8, 8)))]
    hires_pass = [x for i in range(2) for x in (("before_step", i, 2, True), ("after_step", i, (1, 4, 12, 12)))]
    batch = lambda seed: [("after_conditioning", 1), ("cfg_denoiser", "CFGDenoiser"), *one_pass(4),  # noqa: E731
                          ("after_conditioning", 1), ("cfg_denoiser", "CFGDenoiser"), *hires_pass,
                          ("after_image_decoded", (96, 96)), ("after_image_saved", f"/out/{seed}.png", False)]
    assert events == [("before_job", "a circle"), *batch(3), *batch(4), ("after_image_saved", "/out/grid.png", True),
                      ("after_job", 2)]


def test_a_wrapped_denoiser_changes_the_picture(loaded, one_thread):
    """cfg_denoiser: a script's denoiser that answers the unconditional output draws what CFG scale 0 draws."""
    h = hooks.default_hooks()
    h.add("cfg_denoiser", lambda ctx, d: (lambda x, t, cfg_mult=1.0: (d(x, t, cfg_mult)[1],) * 2), "uncond only")
    wrapped = engine.generate(loaded, request(cfg_scale=7.0), Options().snapshot(), hooks=h)
    zero = engine.generate(loaded, request(cfg_scale=0.0), Options().snapshot())
    seven = engine.generate(loaded, request(cfg_scale=7.0), Options().snapshot())
    assert wrapped.images[0].tobytes() == zero.images[0].tobytes() != seven.images[0].tobytes()


def test_unet_call_sees_every_call_and_its_extra_inputs_reach_the_unet(loaded, one_thread):
    """unet_call: a wrapper sees each UNet call (which chunks are the negative prompt's, the call count) and
    what it adds to the keyword arguments reaches the UNet: the residuals of a ControlNet made from the UNet
    (diffusers' from_unet: zero convolutions, so zero residuals) leave the picture as it is; one added to the
    middle block's residual changes it."""
    from diffusers import ControlNetModel

    cn = ControlNetModel.from_unet(loaded.components.unet).eval()
    seen = []

    def wrap(ctx, unet, shift=0.0):
        def call(x, t, context, extra, info):
            seen.append((tuple(x.shape), tuple(info.negative), info.batch, info.calls))
            with torch.no_grad():
                down, mid = cn(x, t, encoder_hidden_states=context, controlnet_cond=torch.zeros(x.shape[0], 3, 64, 64),
                               return_dict=False)
            extra = {**extra, "down_block_additional_residuals": down, "mid_block_additional_residual": mid + shift}
            return unet(x, t, context, extra, info)
        return call
    h = hooks.default_hooks()
    h.add("unet_call", wrap, "rec")
    plain = engine.generate(loaded, request(), Options().snapshot())
    zero = engine.generate(loaded, request(), Options().snapshot(), hooks=h)
    assert seen == [((2, 4, 8, 8), (True, False), 1, i) for i in range(4)]   # Euler: one call a step
    h.add("unet_call", lambda ctx, unet: wrap(ctx, unet, 1.0), "rec")
    moved = engine.generate(loaded, request(), Options().snapshot(), hooks=h)
    assert zero.images[0].tobytes() == plain.images[0].tobytes() != moved.images[0].tobytes()


def test_after_job_runs_when_the_job_fails_and_a_failing_hook_fails_the_job(loaded, one_thread):
    comps = copy.deepcopy(loaded.components)
    with torch.no_grad():
        comps.unet.conv_out.bias.fill_(float("nan"))
    broken = LoadedModel(info=loaded.info, components=comps, vae_name="None")
    events: list = []
    h = hooks.default_hooks()
    recorder(h, events)
    with pytest.raises(engine.NansError):
        engine.generate(broken, request(tiling=True), Options().snapshot(), hooks=h)
    assert events[-1] == ("after_job", None)
    assert all(m.padding_mode == "zeros" for m in comps.unet.modules() if isinstance(m, torch.nn.Conv2d))

    def refuse(ctx):
        raise RuntimeError("the script refuses this prompt")
    h = hooks.default_hooks()
    h.add("before_job", refuse, "refuse")
    with pytest.raises(RuntimeError, match="refuses this prompt"):
        engine.generate(loaded, request(), Options().snapshot(), hooks=h)


def test_lora_tiling_and_previews_are_handlers_of_the_hook_points(loaded, tmp_path, one_thread):
    h = hooks.default_hooks()
    assert h.names("before_job") == ["extra networks", "tiling"] and h.names("after_job") == ["extra networks",
                                                                                              "tiling"]
    assert h.names("after_step") == ["live previews"]
    (tmp_path / "Lora").mkdir()
    targets = lora.default_targets(loaded.components)[:8]
    save_file(lora.random_lora(loaded.components, targets, seed=4, std=0.5), str(tmp_path / "Lora" / "l.safetensors"))
    lib = extra_networks.Library([tmp_path / "Lora"], [])

    def picture(prompt, hook_set, **kw):
        ctl = engine.JobControl()
        res = engine.generate(loaded, request(prompt=prompt, **kw), Options().snapshot(), hooks=hook_set,
                              networks=lib, control=ctl)
        return res.images[0].tobytes(), ctl.current_latents

    plain, plain_latents = picture("a circle", h)
    with_lora, _ = picture("a circle <lora:l:1>", h)
    assert with_lora != plain and plain_latents is not None and plain_latents.shape == (1, 4, 8, 8)
    bare = hooks.default_hooks()
    bare.remove("before_job", "extra networks")   # without its handler the tag does nothing
    bare.remove("after_step", "live previews")    # and nothing keeps the latents for a preview
    no_lora, no_latents = picture("a circle <lora:l:1>", bare)
    assert no_lora == plain and no_latents is None
    tiled, _ = picture("a circle", h, tiling=True)
    bare.remove("before_job", "tiling")
    assert tiled != plain and picture("a circle", bare, tiling=True)[0] == plain


def test_hooks_registry_replaces_by_name_and_knows_its_points():
    h = hooks.Hooks()
    calls = []
    h.add("before_job", lambda ctx: calls.append(1), "a")
    h.add("before_job", lambda ctx: calls.append(2), "a")
    h.add("before_job", lambda ctx: calls.append(3), "b", first=True)
    h.fire("before_job", None)
    assert calls == [3, 2] and h.names("before_job") == ["b", "a"]
    with pytest.raises(KeyError, match="unknown hook point 'before_jobs'"):
        h.add("before_jobs", print)
    h.add("after_job", lambda ctx, r: 1 / 0, "broken")
    h.add("after_job", lambda ctx, r: calls.append(4), "restore")
    h.fire_all("after_job", None, None)   # a failing handler does not stop the others
    assert calls[-1] == 4


def test_the_model_loads_from_the_app_started_hook(tmp_path):
    from modules import cmd_args
    from modules.app import App
    from testing.tiny_models import write_tiny_checkpoint

    app = App(cmd_args.parse_args(["--data-dir", str(tmp_path)]))
    app.paths.ckpt_dirs[0].mkdir(parents=True, exist_ok=True)
    write_tiny_checkpoint(app.paths.ckpt_dirs[0] / "t.safetensors", "sd1")
    assert app.hooks.names("app_started") == ["model library"] and app.models.loaded is None
    app.hooks.fire("app_started", app)
    app.loader.join(60)
    assert app.models.loaded is not None and app.models.loaded.info.name == "t.safetensors"


def test_the_generation_tabs_build_what_the_ui_hooks_add(tmp_path):
    """ui_tab_build / ui_tab_wire: the extra-networks panel is added through them, and so is anything else."""
    import gradio as gr

    from modules import cmd_args
    from modules.app import App
    from modules.ui import build_ui

    app = App(cmd_args.parse_args(["--data-dir", str(tmp_path), "--skip-install"]))
    wired = []

    def add_panel(tab):
        tab.c["plugged"] = gr.Markdown("plugged in", elem_id=f"{tab.name}_plugged")

    app.hooks.add("ui_tab_build", add_panel, "test panel")
    app.hooks.add("ui_tab_wire", lambda tab, top: wired.append((tab.name, top["checkpoint"].elem_id)), "test panel")
    ui = build_ui(app)
    assert app.hooks.names("ui_tab_build") == ["test panel", "extra networks"]
    for tab in (ui.txt2img, ui.img2img):
        assert tab.c["plugged"].elem_id == f"{tab.name}_plugged"
        assert tab.c["en_accordion"].elem_id == f"{tab.name}_extra_networks"  # the built-in panel
    assert wired == [("txt2img", "setting_sd_model_checkpoint"), ("img2img", "setting_sd_model_checkpoint")]
