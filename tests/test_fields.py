"""The one table of A1111's generation fields (modules/fields.py) and what is derived from it: the request
dataclass's defaults, validation's bounds, the API models, pasting an infotext (API and UI), the UI's
controls, the CLI's flags, the settings' infotext keys, the choice lists and the upscaler names."""
from __future__ import annotations

import typing

import pytest
from PIL import Image

from modules import cli, cmd_args, fields, images, infotext, rng, upscalers
from modules.engine.request import GenerationRequest, RequestError, validate

gr = pytest.importorskip("gradio")


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    from modules.app import App

    app = App(cmd_args.parse_args(["--data-dir", str(tmp_path_factory.mktemp("fields")), "--skip-install"]))
    yield app
    app.queue.stop()


@pytest.fixture(scope="module")
def ui(app):
    from modules.ui import build_ui

    return build_ui(app)


def values_of(tab, **changes) -> dict:
    v = {k: getattr(c, "value", None) for k, c in tab.fields.items()}
    v.update(changes)
    return v


# ---------------------------------------------------------------------------
# the request dataclass


def test_generation_request_defaults_and_types_are_the_tables():
    req = GenerationRequest()
    hints = typing.get_type_hints(GenerationRequest)
    rows = fields.request_fields()
    assert set(hints) == {f.name for f in rows} | {"mode", "limits"}   # the tab and the app's admission limits
    for f in rows:
        assert getattr(req, f.name) == f.default, f.name
        assert hints[f.name] == f.type, f.name
    assert (req.steps, req.sampler_name, req.width, req.inpainting_fill, req.inpaint_full_res_padding,
            req.save_images, req.styles) == (20, "DPM++ 2M", 512, 1, 32, True, [])
    assert GenerationRequest().styles is not GenerationRequest().styles   # a fresh list each time


def test_validate_rejects_one_past_each_bound_naming_the_field():
    def request(f, value):
        req = GenerationRequest(steps=2, width=64, height=64, enable_hr=fields.HIRES in f.modes)
        if fields.TXT2IMG not in f.modes and fields.HIRES not in f.modes:
            req.mode = "img2img"
            req.init_images = [Image.new("RGB", (64, 64))]
        setattr(req, f.name, value)
        return req

    checked = []
    for f in fields.request_fields():
        if not f.bounded:
            continue
        validate(request(f, f.minimum))          # the bounds themselves are allowed
        validate(request(f, f.maximum))
        for value in (f.minimum - 1, f.maximum + 1):
            with pytest.raises(RequestError) as e:
                validate(request(f, value))
            assert e.value.field == f.name, (f.name, value, e.value)
        checked.append(f.name)
    assert checked == ["seed", "subseed", "subseed_strength", "seed_resize_from_h", "seed_resize_from_w",
                       "batch_size", "n_iter", "steps", "cfg_scale", "width", "height", "denoising_strength",
                       "hr_scale", "hr_second_pass_steps", "hr_resize_x", "hr_resize_y", "resize_mode", "mask_blur",
                       "inpainting_fill", "inpaint_full_res_padding", "clip_skip"]
    with pytest.raises(RequestError, match="width: must be a multiple of 8, got 516"):
        validate(GenerationRequest(width=516))
    with pytest.raises(RequestError, match="steps: must be a whole number, got 2.5"):
        validate(GenerationRequest(steps=2.5))
    with pytest.raises(RequestError, match="seed: must be at most 4294967295"):
        validate(GenerationRequest(seed=fields.SEED_MAX + 1))
    validate(GenerationRequest(clip_skip=None, eta=None))   # None: the setting
    assert fields.SEED_MAX == rng.MAX_SEED


def test_ui_ranges_lie_within_the_bounds():
    for f in fields.TABLE:
        if f.ui is not None and f.ui.minimum is not None:
            assert f.minimum <= f.ui.minimum < f.ui.maximum <= f.maximum, f.name
            for mode in (fields.TXT2IMG, fields.IMG2IMG):
                assert f.ui.minimum <= f.ui_default(mode) <= f.ui.maximum, f.name


# ---------------------------------------------------------------------------
# the API models


def test_api_models_have_every_api_field_with_the_tables_api_default():
    from modules.api import Img2ImgRequest, Txt2ImgRequest

    models = {fields.TXT2IMG: Txt2ImgRequest, fields.IMG2IMG: Img2ImgRequest}
    for mode, model in models.items():
        rows = [*fields.api_fields(None), *fields.api_fields(mode)]
        assert list(model.model_fields) == [f.api for f in rows]
        body = model()
        for f in rows:
            assert getattr(body, f.api) == f.api_default_value, (mode, f.api)
    for f in fields.request_fields():
        if f.api is not None:
            in_models = [m for m, model in models.items() if f.api in model.model_fields]
            assert in_models, f.name
    t, i = Txt2ImgRequest(), Img2ImgRequest()
    assert (t.steps, t.sampler_name, t.sampler_index, t.seed_resize_from_w, t.save_images, t.hr_upscaler) == \
        (50, None, "Euler", -1, False, None)
    assert (i.inpainting_fill, i.inpaint_full_res, i.inpaint_full_res_padding, i.mask_blur, i.mask_blur_x) == \
        (0, True, 0, None, 4)
    steps = Txt2ImgRequest.model_fields["steps"]
    assert [m.ge for m in steps.metadata if hasattr(m, "ge")] == [1]
    assert [m.le for m in steps.metadata if hasattr(m, "le")] == [500]
    assert Txt2ImgRequest.model_fields["width"].description == "image width in pixels; rounded down to a multiple of 8"
    assert "clip_skip" not in Txt2ImgRequest.model_fields


def test_default_sampler_is_euler_in_the_api_and_the_setting_in_the_ui(app):
    from modules.api import ApiError, Img2ImgRequest, SdApi, Txt2ImgRequest
    from modules.ui import common

    api = SdApi(app)
    req, _, _ = api.build_request(Txt2ImgRequest(), "txt2img")
    assert (req.sampler_name, req.steps, req.scheduler, req.hr_upscaler) == ("Euler", 50, "Automatic", "Latent")
    req, _, _ = api.build_request(Txt2ImgRequest(sampler_index="DDIM"), "txt2img")
    assert req.sampler_name == "DDIM"
    assert app.opts.get("default_sampler") == "DPM++ 2M"
    ui_req = common.common_request(app, {}, "txt2img")
    assert (ui_req.sampler_name, ui_req.steps, ui_req.scheduler, ui_req.width) == ("DPM++ 2M", 20, "Automatic", 512)
    app.opts.set("default_sampler", "Euler a")
    try:
        assert common.common_request(app, {}, "img2img").sampler_name == "Euler a"
    finally:
        app.opts.set("default_sampler", "DPM++ 2M")
    assert cli.build_parser().parse_args([]).sampler == "DPM++ 2M"
    with pytest.raises(ApiError, match="img2img needs at least one init image"):
        api.build_request(Img2ImgRequest(), "img2img")


# ---------------------------------------------------------------------------
# pasting an infotext


def _written_infotext(**extra) -> str:
    params = infotext.generation_params(
        steps=12, sampler="Euler a", schedule_type="Karras", cfg_scale=4.5, seed=1234, width=96, height=128,
        variation_seed=77, variation_seed_strength=0.25, seed_resize_from=(64, 80), denoising_strength=0.45,
        clip_skip=2, ensd=31337, hires_upscale=1.5, hires_steps=6, hires_upscaler="Latent (bicubic)",
        hires_prompt="a big house", extra=extra)
    return infotext.create_infotext("a house", "blurry", params)


PASTED = {"prompt": "a house", "negative_prompt": "blurry", "steps": 12, "sampler_name": "Euler a",
          "scheduler": "Karras", "cfg_scale": 4.5, "seed": 1234, "width": 96, "height": 128, "subseed": 77,
          "subseed_strength": 0.25, "seed_resize_from_w": 64, "seed_resize_from_h": 80, "denoising_strength": 0.45,
          "hr_scale": 1.5, "hr_second_pass_steps": 6, "hr_upscaler": "Latent (bicubic)", "hr_prompt": "a big house",
          "enable_hr": True}


def test_a_written_infotext_pastes_back_through_the_table():
    text = _written_infotext()
    assert fields.from_infotext(infotext.parse_generation_parameters(text, defaults=False)) == PASTED
    assert infotext.settings_from_params(infotext.parse_generation_parameters(text)) == {
        "CLIP_stop_at_last_layers": "2", "eta_noise_seed_delta": "31337", "randn_source": "NV"}
    masked = _written_infotext(**{"Mask blur": 3, "Mask mode": "Inpaint not masked", "Masked content": "latent noise",
                                  "Inpaint area": "Only masked", "Masked area padding": 16})
    got = fields.from_infotext(infotext.parse_generation_parameters(masked, defaults=False))
    assert got == {**PASTED, "mask_blur": 3, "inpainting_mask_invert": True, "inpainting_fill": 2,
                   "inpaint_full_res": True, "inpaint_full_res_padding": 16}
    plain = fields.from_infotext({"Steps": "7", "Hires prompt": "x", "Hires resize-1": 0})
    assert plain == {"steps": 7, "enable_hr": False}       # no hires pass: its fields are not pasted
    assert fields.from_infotext({"Hires resize-1": "640", "Hires resize-2": "0"}) == \
        {"hr_resize_x": 640, "hr_resize_y": 0, "enable_hr": True}
    assert fields.from_infotext({"Steps": "x", "Seed": "2.0"}) == {"seed": 2, "enable_hr": False}
    with pytest.raises(fields.InfotextValueError, match="'Steps: x' is not a valid int") as e:
        fields.from_infotext({"Steps": "x"}, strict=True)
    assert (e.value.key, e.value.field) == ("Steps", "steps")
    with pytest.raises(fields.InfotextValueError, match="'CFG scale: nan' is not a valid float"):
        fields.from_infotext({"CFG scale": "nan"}, strict=True)


def test_the_api_pastes_an_infotext_into_the_fields_not_given(app):
    from modules.api import SdApi, Txt2ImgRequest

    api = SdApi(app)
    req, _, _ = api.build_request(Txt2ImgRequest(infotext=_written_infotext(), steps=3), "txt2img")
    got = {name: getattr(req, name) for name in PASTED}
    assert got == {**PASTED, "steps": 3}
    assert req.override_settings == {"CLIP_stop_at_last_layers": 2, "eta_noise_seed_delta": 31337,
                                     "randn_source": "NV"}


def test_the_ui_pastes_an_infotext_into_its_controls(app, ui):
    from modules.ui import common, img2img, txt2img

    params = infotext.parse_generation_parameters(_written_infotext())
    upd = common.paste_updates(app, ui.txt2img, params)
    assert upd == {**{k: v for k, v in PASTED.items() if k != "hr_prompt"}, "hr_resize_x": 0, "hr_resize_y": 0,
                   "seed_extra": True, "override_settings": ["Clip skip: 2", "ENSD: 31337", "RNG: NV"]}
    req = txt2img.build_request(app, values_of(ui.txt2img, **upd))
    assert {name: getattr(req, name) for name in PASTED if name != "hr_prompt"} == \
        {k: v for k, v in PASTED.items() if k != "hr_prompt"}
    masked = _written_infotext(**{"Mask blur": 3, "Mask mode": "Inpaint not masked", "Masked content": "latent noise",
                                  "Inpaint area": "Only masked", "Masked area padding": 16})
    upd = common.paste_updates(app, ui.img2img, infotext.parse_generation_parameters(masked), send_seed=False)
    assert {k: upd[k] for k in ("mask_blur", "inpainting_mask_invert", "inpainting_fill", "inpaint_full_res",
                                "inpaint_full_res_padding")} == {
        "mask_blur": 3, "inpainting_mask_invert": "Inpaint not masked", "inpainting_fill": "latent noise",
        "inpaint_full_res": "Only masked", "inpaint_full_res_padding": 16}
    assert not {"seed", "subseed", "seed_extra", "enable_hr", "hr_scale"} & set(upd)
    square = Image.new("RGB", (64, 64))
    req = img2img.build_request(app, values_of(ui.img2img, **upd, inpaint_base=square, inpaint_mask=square),
                                "inpaint_upload")
    assert (req.mask_blur, req.inpainting_mask_invert, req.inpainting_fill, req.inpaint_full_res,
            req.inpaint_full_res_padding, req.steps, req.denoising_strength) == (3, True, 2, True, 16, 12, 0.45)


# ---------------------------------------------------------------------------
# UI, CLI, settings, choices, upscalers


def test_ui_controls_come_from_the_table(app, ui):
    for tab in (ui.txt2img, ui.img2img):
        for name, comp in tab.fields.items():
            f = fields.FIELDS.get(name)
            if f is None or f.ui is None:
                continue
            assert comp.label == f.ui.label, name
            if f.ui.minimum is not None:
                assert (comp.minimum, comp.maximum, comp.step) == (f.ui.minimum, f.ui.maximum, f.ui.step), name
                if name not in ("width", "height"):    # these start at the model's native size
                    assert comp.value == f.ui_default(tab.name), name
            if f.choices is not None:
                assert [c[0] for c in comp.choices] == list(f.choices) and comp.value == f.label_of(f.default)
    assert ui.txt2img.c["denoising_strength"].value == 0.7 and ui.img2img.c["denoising_strength"].value == 0.75
    assert ui.txt2img.c["sampler_name"].value == "DPM++ 2M"
    assert [c[0] for c in ui.txt2img.c["hr_upscaler"].choices] == upscalers.names()


def test_cli_flags_and_defaults_are_the_tables():
    parser = cli.build_parser()
    a = parser.parse_args([])
    for f in fields.cli_fields():
        assert getattr(a, cli._dest(f)) == f.cli_default, f.name
    assert (a.prompt, a.negative_prompt, a.sampler, a.schedule_type, a.steps, a.cfg_scale, a.width, a.height,
            a.seed, a.batch_size, a.batch_count, a.clip_skip, a.init_image, a.mask, a.denoising_strength, a.hires,
            a.hr_scale, a.hr_upscaler, a.model, a.outdir, a.data_dir, a.use_cpu) == \
        ("", "", "DPM++ 2M", "Automatic", 20, 7.0, 0, 0, -1, 1, 1, None, None, None, 0.75, False, 2.0, "Latent",
         None, None, None, False)
    req = cli.build_request(parser.parse_args(["a cat", "--steps", "7", "--batch-count", "3", "--hires"]), 768)
    assert (req.prompt, req.steps, req.n_iter, req.enable_hr, req.width, req.height, req.mode, req.sampler_name) == \
        ("a cat", 7, 3, True, 768, 768, "txt2img", "DPM++ 2M")


def test_setting_keys_choices_and_upscalers(app):
    from modules import api

    assert infotext.SETTING_KEYS == {"Clip skip": "CLIP_stop_at_last_layers", "ENSD": "eta_noise_seed_delta",
                                     "RNG": "randn_source", "Emphasis": "emphasis", "Eta DDIM": "eta_ddim",
                                     "Eta": "eta_ancestral"}
    assert images.RESIZE_MODES == list(fields.RESIZE_MODES)
    fill, area = fields.FIELDS["inpainting_fill"], fields.FIELDS["inpaint_full_res"]
    assert (fill.value_of("original"), fill.label_of(2), area.value_of("Only masked"), area.label_of(False)) == \
        (1, "latent noise", True, "Whole picture")
    with pytest.raises(ValueError):
        fill.value_of("nothing like it")
    assert not hasattr(api, "IMAGE_UPSCALERS") and not hasattr(api, "_upscale")
    sd = api.SdApi(app)
    assert [u["name"] for u in sd.get_upscalers()] == list(upscalers.IMAGE_UPSCALERS)
    assert [m["name"] for m in sd.get_latent_upscale_modes()] == list(upscalers.LATENT_UPSCALE_MODES)
