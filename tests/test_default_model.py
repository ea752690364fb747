"""The shipped default model (sd-shapes-64): an ordinary SD 1.x single file that loads through the model
library, is selected when no other model is present, and draws what the prompt asks.

A few cases per property; `bench/default_model.py` prints the full figures over 120 held-out pairs.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from modules import cmd_args, devices, engine, model_formats, sd_models
from modules import synthetic_world as world
from modules.options import Options
from modules.paths import Paths

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "Stable-diffusion" / "sd-shapes-64.safetensors"


def app_args(tmp_path):
    """The repository's checkpoint folder with a throw-away data folder (settings, hash cache)."""
    return cmd_args.parse_args(["--data-dir", str(tmp_path), "--ckpt-dir", str(MODEL.parent), "--use-cpu", "all"])


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    mm = sd_models.ModelManager(Paths.from_args(app_args(tmp_path_factory.mktemp("data"))), devices.cpu_policy())
    mm.refresh()
    return mm.load("sd-shapes-64")


def draw(loaded, prompt, seed, negative="", init=None, strength=0.75, cfg=7.0) -> np.ndarray:
    req = engine.GenerationRequest(prompt=prompt, negative_prompt=negative, steps=20, cfg_scale=cfg, width=64,
                                       height=64, seed=seed, sampler_name="Euler a", save_images=False)
    if init is not None:
        req.mode, req.init_images, req.denoising_strength = "img2img", [init], strength
    res = engine.generate(loaded, req, Options().snapshot())
    assert not res.warnings, res.warnings
    return np.asarray(res.images[0])


def test_file_is_a_small_sd1_checkpoint_in_the_ldm_layout():
    assert MODEL.is_file(), "the default model must ship with the repository"
    assert MODEL.stat().st_size < 40 * 2**20
    sd, meta = model_formats.read_state_dict(MODEL)
    assert any(k.startswith("model.diffusion_model.input_blocks.") for k in sd)
    assert any(k.startswith("first_stage_model.encoder.") for k in sd)
    assert any(k.startswith("cond_stage_model.transformer.text_model.") for k in sd)
    spec = model_formats.detect_architecture(sd, meta)
    cfg = json.loads(meta["sd_webui_config"])
    assert (spec.arch, spec.prediction_type, spec.native_resolution) == ("sd1", "epsilon", 64)
    assert spec.scaling_factor == pytest.approx(cfg["scaling_factor"]) and spec.scaling_factor != 0.18215
    assert spec.unet_config["cross_attention_dim"] == 128 and spec.vae_config["latent_channels"] == 4


def test_selected_when_no_other_model_is_present_and_ui_size_follows_it(tmp_path):
    from modules.app import App
    from modules.ui import native_size

    app = App(app_args(tmp_path))
    assert app.selected_checkpoint().startswith("sd-shapes-64.safetensors [")
    assert app.native_resolution() == 64
    app.load_model()
    assert native_size(app) == 64


COLOUR_CASES = [("red", "circle", "gray"), ("green", "square", "white"), ("blue", "triangle", "yellow"),
                ("yellow", "circle", "black"), ("purple", "square", "gray"), ("orange", "triangle", "blue")]


def test_draws_the_colour_and_shape_asked(shapes):
    got = [world.classify(draw(shapes, f"a large {c} {s} in the center, {bg} background", 100 + i))
           for i, (c, s, bg) in enumerate(COLOUR_CASES)]
    colours = sum(g[0] == c for g, (c, _, _) in zip(got, COLOUR_CASES))
    shapes_ok = sum(g[1] == s for g, (_, s, _) in zip(got, COLOUR_CASES))
    assert colours >= 5 and shapes_ok >= 4, got


RED_PROMPTS = ["a large red circle in the center, gray background", "a red square at the top left, white background",
               "a large red triangle, blue background"]


def red(images) -> float:
    return float(np.mean([world.colour_fraction(im, "red") for im in images]))


def test_negative_prompt_and_emphasis_move_the_red(shapes):
    plain = [draw(shapes, p, 200 + i) for i, p in enumerate(RED_PROMPTS)]
    negated = [draw(shapes, p, 200 + i, negative="red") for i, p in enumerate(RED_PROMPTS)]
    strong = [draw(shapes, p.replace("red", "(red:1.4)"), 200 + i) for i, p in enumerate(RED_PROMPTS)]
    weak = [draw(shapes, p.replace("red", "(red:0.7)"), 200 + i) for i, p in enumerate(RED_PROMPTS)]
    assert red(plain) > 0.05
    assert red(negated) < red(plain) * 0.85, (red(negated), red(plain))
    assert red(strong) > red(weak), (red(strong), red(weak))


def test_img2img_low_strength_stays_close_high_strength_follows_the_prompt(shapes):
    scene = world.Scene("square", "green", "white", "center", "large", "")
    init = world.render(scene)
    low = draw(shapes, "a large green square in the center, white background", 300, init=init, strength=0.3)
    high = draw(shapes, "a large red circle in the center, white background", 300, init=init, strength=0.9)
    src = np.asarray(init, dtype=np.float32)
    assert np.abs(low - src).mean() < 16
    assert world.classify(low) == ("green", "square")
    assert np.abs(high - src).mean() > 3 * np.abs(low - src).mean()
    assert world.classify(high)[0] == "red"
    assert isinstance(init, Image.Image)
