import pytest

from modules.infotext import (
    create_infotext,
    format_hashes,
    generation_params,
    parse_generation_parameters,
    parse_hashes,
    quote,
    unquote,
)

A1111_V110 = (
    "masterpiece, best quality, 1girl, solo, long hair, looking at viewer, smile, <lora:add_detail:0.6>\n"
    "Negative prompt: (worst quality, low quality:1.4), easynegative, bad-hands-5\n"
    "Steps: 25, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1234567890, Size: 512x768, "
    "Model hash: 7f96a1a9ca, Model: anything-v5-PrtRE, VAE hash: 735e4c3a44, "
    "VAE: vae-ft-mse-840000-ema-pruned.safetensors, Denoising strength: 0.45, Clip skip: 2, "
    "Hires upscale: 2, Hires steps: 15, Hires upscaler: R-ESRGAN 4x+ Anime6B, "
    'Lora hashes: "add_detail: 7c6bad76eb54", TI hashes: "easynegative: c74b4e810b03, bad-hands-5: aa7651be154c", '
    "Version: v1.10.1"
)

A1111_V151_COMBINED = (
    "a photo of an astronaut riding a horse on mars\n"
    "Steps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7.5, Seed: 3298719383, Size: 512x512, "
    "Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Version: v1.5.1"
)

A1111_MULTILINE = (
    "portrait of a knight,\n"
    "  dramatic lighting, [oil painting:photo:0.5]\n"
    "Negative prompt: blurry,\n"
    "lowres\n"
    "Steps: 30, Sampler: Euler a, Schedule type: Automatic, CFG scale: 6.5, Seed: 42, Size: 640x448, "
    "Model hash: e6e99610c4, Model: realisticVision, Variation seed: 7, Variation seed strength: 0.25, "
    "Seed resize from: 512x512, ENSD: 31337, Hires resize: 1280x896, Hires upscaler: Latent, "
    "Emphasis: Original, Version: v1.7.0-375-gf92d6149"
)


def test_parse_a1111_v1_10_infotext():
    r = parse_generation_parameters(A1111_V110)
    assert r["Prompt"] == (
        "masterpiece, best quality, 1girl, solo, long hair, looking at viewer, smile, <lora:add_detail:0.6>"
    )
    assert r["Negative prompt"] == "(worst quality, low quality:1.4), easynegative, bad-hands-5"
    assert r["Steps"] == "25"
    assert r["Sampler"] == "DPM++ 2M"
    assert r["Schedule type"] == "Karras"
    assert r["CFG scale"] == "7"
    assert r["Seed"] == "1234567890"
    assert (r["Size-1"], r["Size-2"]) == ("512", "768")
    assert r["Model hash"] == "7f96a1a9ca"
    assert r["Model"] == "anything-v5-PrtRE"
    assert r["VAE"] == "vae-ft-mse-840000-ema-pruned.safetensors"
    assert r["Denoising strength"] == "0.45"
    assert r["Clip skip"] == "2"
    assert r["Hires upscale"] == "2"
    assert r["Hires steps"] == "15"
    assert r["Hires upscaler"] == "R-ESRGAN 4x+ Anime6B"
    assert r["Lora hashes"] == "add_detail: 7c6bad76eb54"
    assert parse_hashes(r["TI hashes"]) == {"easynegative": "c74b4e810b03", "bad-hands-5": "aa7651be154c"}
    assert r["Version"] == "v1.10.1"
    # A1111 defaults for absent keys
    assert (r["Hires resize-1"], r["Hires resize-2"]) == (0, 0)
    assert r["Hires sampler"] == "Use same sampler"
    assert r["RNG"] == "GPU"
    assert r["Masked area padding"] == 32
    assert "Downcast alphas_cumprod" not in r


def test_parse_old_combined_sampler_name():
    r = parse_generation_parameters(A1111_V151_COMBINED)
    assert r["Prompt"] == "a photo of an astronaut riding a horse on mars"
    assert r["Negative prompt"] == ""
    assert (r["Sampler"], r["Schedule type"]) == ("DPM++ 2M", "Karras")
    assert r["CFG scale"] == "7.5"
    assert r["Clip skip"] == "1"  # absent means 1
    assert r["Downcast alphas_cumprod"] is True  # written before v1.7.0-225
    r = parse_generation_parameters("x\nSteps: 20, Sampler: DPM++ 2M SDE Exponential, Seed: 1")
    assert (r["Sampler"], r["Schedule type"]) == ("DPM++ 2M SDE", "Exponential")
    r = parse_generation_parameters("x\nSteps: 20, Sampler: Euler a, Seed: 1")
    assert (r["Sampler"], r["Schedule type"]) == ("Euler a", "Automatic")
    # unknown samplers are kept verbatim
    r = parse_generation_parameters("x\nSteps: 20, Sampler: Restart, Seed: 1")
    assert r["Sampler"] == "Restart"


def test_parse_multiline_prompts_and_wxh_fields():
    r = parse_generation_parameters(A1111_MULTILINE)
    assert r["Prompt"] == "portrait of a knight,\ndramatic lighting, [oil painting:photo:0.5]"
    assert r["Negative prompt"] == "blurry,\nlowres"
    assert r["Variation seed"] == "7"
    assert r["Variation seed strength"] == "0.25"
    assert (r["Seed resize from-1"], r["Seed resize from-2"]) == ("512", "512")
    assert (r["Hires resize-1"], r["Hires resize-2"]) == ("1280", "896")
    assert r["ENSD"] == "31337"
    assert r["Emphasis"] == "Original"
    assert "Downcast alphas_cumprod" not in r  # v1.7.0-375 is after v1.7.0-225
    assert "Old prompt editing timelines" not in r


def test_last_line_needs_three_pairs():
    text = "a cat: cute, style: photo\nNegative prompt: dog"
    r = parse_generation_parameters(text)
    assert r["Prompt"] == "a cat: cute, style: photo"
    assert r["Negative prompt"] == "dog"
    assert "style" not in r
    r = parse_generation_parameters("only prompt")
    assert r["Prompt"] == "only prompt" and r["Negative prompt"] == ""
    raw = parse_generation_parameters("p\nSteps: 20, Sampler: Euler, Seed: 5", defaults=False)
    assert raw == {"Prompt": "p", "Negative prompt": "", "Steps": "20", "Sampler": "Euler", "Seed": "5"}


def test_old_hires_first_pass_size():
    r = parse_generation_parameters("p\nSteps: 20, Sampler: Euler a, Size: 1024x768, First pass size: 0x0, Denoising strength: 0.7")
    assert (r["Size-1"], r["Size-2"]) == (640, 448)  # ceil(1024*0.577/64)*64, ceil(768*0.577/64)*64
    assert (r["Hires resize-1"], r["Hires resize-2"]) == (1024, 768)
    r = parse_generation_parameters("p\nSteps: 20, Sampler: Euler a, Size: 1024x1024, First pass size: 384x384")
    assert (r["Size-1"], r["Size-2"], r["Hires resize-1"]) == (384, 384, 1024)


def test_quote_rules():
    assert quote("Euler a") == "Euler a"
    assert quote("a, b") == '"a, b"'
    assert quote("a: b") == '"a: b"'
    assert quote("line1\nline2") == '"line1\\nline2"'
    assert quote('say "hi"') == '"say \\"hi\\""'
    assert quote("日本語, テスト") == '"日本語, テスト"'
    assert unquote('"a, b"') == "a, b"
    assert unquote('"broken') == '"broken'


def test_create_infotext_exact_layout():
    params = generation_params(
        steps=20, sampler="Euler a", schedule_type="Karras", cfg_scale=7.0, seed=1,
        width=512, height=512, model_hash="abcdef1234", model="name",
    )
    text = create_infotext("a cat", "ugly", params)
    assert text == (
        "a cat\nNegative prompt: ugly\n"
        "Steps: 20, Sampler: Euler a, Schedule type: Karras, CFG scale: 7, Seed: 1, Size: 512x512, "
        "Model hash: abcdef1234, Model: name"
    )
    assert create_infotext("a cat", "", params).startswith("a cat\nSteps: 20, ")


def test_generation_params_order_and_omissions():
    params = generation_params(
        steps=25, sampler="DPM++ 2M", schedule_type="Karras", cfg_scale=7, seed=1234567890,
        width=512, height=768, model_hash="7f96a1a9ca", model="anything-v5-PrtRE",
        vae_hash="735e4c3a44", vae="vae-ft-mse-840000-ema-pruned.safetensors",
        denoising_strength=0.45, clip_skip=2, hires_upscale=2.0, hires_steps=15,
        hires_upscaler="R-ESRGAN 4x+ Anime6B", lora_hashes={"add_detail": "7c6bad76eb54"},
        ti_hashes={"easynegative": "c74b4e810b03", "bad-hands-5": "aa7651be154c"},
        variation_seed=99, variation_seed_strength=0, seed_resize_from=(0, 0), tiling=False,
        version="v1.10.1",
    )
    text = create_infotext(
        "masterpiece, best quality, 1girl, solo, long hair, looking at viewer, smile, <lora:add_detail:0.6>",
        "(worst quality, low quality:1.4), easynegative, bad-hands-5",
        params,
    )
    assert text == A1111_V110  # byte-identical to what A1111 wrote


def test_extra_pairs_keep_standard_slot():
    params = generation_params(
        steps=20, sampler="Euler", cfg_scale=5.5, seed=3, width=64, height=64,
        extra={"Denoising strength": 0.5, "My script": "x, y", "Flag": "Flag"}, version="v0.1",
    )
    assert list(params) == ["Steps", "Sampler", "CFG scale", "Seed", "Size", "Denoising strength",
                            "My script", "Flag", "Version"]
    text = create_infotext("p", None, params)
    assert text.endswith('Denoising strength: 0.5, My script: "x, y", Flag, Version: v0.1')


def test_round_trip_every_field():
    params = generation_params(
        steps=31, sampler="DPM++ SDE", schedule_type="Exponential", cfg_scale=4.5,
        image_cfg_scale=1.5, seed=4294967295, width=768, height=1344, face_restoration="CodeFormer",
        model_hash="31e35c80fc", model="sd_xl_base_1.0", vae_hash="63aeecb90f", vae="sdxl_vae.safetensors",
        variation_seed=123, variation_seed_strength=0.3, seed_resize_from=(512, 640),
        denoising_strength=0.55, conditional_mask_weight=0.8, clip_skip=2, ensd=31337,
        token_merging_ratio=0.2, token_merging_ratio_hr=0.4, init_image_hash="deadbeef", rng="CPU",
        tiling=True, hires_checkpoint="other.safetensors [abc]", hires_sampler="Euler",
        hires_prompt='sharp, "detailed": yes', hires_negative_prompt="blur\nnoise",
        hires_schedule_type="Karras", hires_resize=(1536, 2688), hires_upscale=2, hires_steps=12,
        hires_upscaler="4x-UltraSharp", lora_hashes={"a": "111", "b": "222"}, ti_hashes="neg: 333",
        extra={"Eta": 0.67}, version="v1.10.1", user="alice",
    )
    prompt = "line one, (a:1.2)\nline two: with colon"
    negative = "bad, worse\nworst"
    r = parse_generation_parameters(create_infotext(prompt, negative, params))
    expected = {
        "Prompt": prompt, "Negative prompt": negative,
        "Steps": "31", "Sampler": "DPM++ SDE", "Schedule type": "Exponential", "CFG scale": "4.5",
        "Image CFG scale": "1.5", "Seed": "4294967295", "Face restoration": "CodeFormer",
        "Size-1": "768", "Size-2": "1344", "Model hash": "31e35c80fc", "Model": "sd_xl_base_1.0",
        "VAE hash": "63aeecb90f", "VAE": "sdxl_vae.safetensors", "Variation seed": "123",
        "Variation seed strength": "0.3", "Seed resize from-1": "512", "Seed resize from-2": "640",
        "Denoising strength": "0.55", "Conditional mask weight": "0.8", "Clip skip": "2", "ENSD": "31337",
        "Token merging ratio": "0.2", "Token merging ratio hr": "0.4", "Init image hash": "deadbeef",
        "RNG": "CPU", "Tiling": "True", "Hires checkpoint": "other.safetensors [abc]",
        "Hires sampler": "Euler", "Hires prompt": 'sharp, "detailed": yes',
        "Hires negative prompt": "blur\nnoise", "Hires schedule type": "Karras",
        "Hires resize-1": "1536", "Hires resize-2": "2688", "Hires steps": "12",
        "Hires upscaler": "4x-UltraSharp", "Lora hashes": "a: 111, b: 222", "TI hashes": "neg: 333",
        "Eta": "0.67", "Version": "v1.10.1", "User": "alice",
    }
    for k, v in expected.items():
        assert r[k] == v, k
    assert "Hires upscale" not in r  # explicit resize wins, as in A1111


def test_format_hashes():
    assert format_hashes({"x": "1", "y": "2"}) == "x: 1, y: 2"
    assert format_hashes({}) is None
    assert format_hashes(None) is None


@pytest.mark.parametrize("value,written", [(7.0, "7"), (7.5, "7.5"), (0.45, "0.45"), (True, "True"), (20, "20")])
def test_number_formatting(value, written):
    text = create_infotext("p", "", {"Steps": 1, "Sampler": "Euler", "X": value})
    assert text == f"p\nSteps: 1, Sampler: Euler, X: {written}"
