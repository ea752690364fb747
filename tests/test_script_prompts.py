"""The built-in scripts "Prompt matrix", "Prompts from file or textbox" and "Loopback" on the default model,
through A1111's positional script_args: the pictures each equal to the same job run alone, their seeds,
prompts and infotexts, the grids (size, labels band, what is saved), the errors a bad line gives."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from modules import cmd_args, images
from modules.engine import GenerationRequest, RequestError
from modules.infotext import parse_generation_parameters
from tests.script_support import arr, files, same, script_module, wired_ui

ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(steps=4, width=64, height=64, cfg_scale=7.0)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from modules.app import App

    data = tmp_path_factory.mktemp("script_prompts")
    app = App(cmd_args.parse_args(["--data-dir", str(data), "--ckpt-dir", str(ROOT / "models" / "Stable-diffusion")]))
    app.refresh_models()
    yield app, data
    app.queue.stop()


def submit(app, **kw):
    job = app.submit(GenerationRequest(**{**SMALL, **kw}))
    job.done_event.wait(120)
    return job


def run(app, **kw):
    job = submit(app, **kw)
    assert job.status == "done", job.error
    return job.result


def alone(app, **kw):
    """The same job without a script (saving nothing)."""
    return app.process(GenerationRequest(**{**SMALL, "save_images": False, **kw}))


# ---------------------------------------------------------------------------
# Prompt matrix


def test_prompt_matrix_pictures_grid_and_infotexts(env):
    from modules import grid_labels

    app, data = env
    before_grids, before_pics = files(data, "txt2img-grids"), files(data, "txt2img-images")
    # A1111's order: put_at_start, different_seeds, prompt_type, variations_delimiter, margin_size
    res = run(app, prompt="a red circle|blue background|small", seed=1, script_name="prompt matrix",
              script_args=[False, False, "positive", "comma", 0])
    prompts = ["a red circle", "a red circle, blue background", "a red circle, small",
               "a red circle, blue background, small"]
    assert len(res.images) == 5 and res.info["index_of_first_image"] == 1
    assert res.prompts == [prompts[0]] + prompts
    assert res.seeds == [1] * 5 and res.negative_prompts == [""] * 5
    solo = [alone(app, prompt=p, seed=1) for p in prompts]
    for i, r in enumerate(solo):
        assert same(res.images[i + 1], r.images[0]), prompts[i]
        assert res.infotexts[i + 1] == r.infotexts[0]
    assert not same(solo[0].images[0], solo[3].images[0])   # the parts change the picture
    assert res.infotexts[0] == res.infotexts[1]              # the grid has the first picture's, as A1111
    assert res.info["prompt"] == "a red circle|blue background|small"
    assert res.info["infotexts"] == res.infotexts and res.info["all_seeds"] == res.seeds

    grid = res.images[0]
    plain = images.image_grid([r.images[0] for r in solo], rows=2)   # 2x2: 2^((3-1)//2) rows
    assert grid.width == 128 + 64 * 3 // 4 and grid.height > 128     # A1111's label column, a band on top
    assert same(grid, grid_labels.draw_prompt_matrix(plain, 64, 64, ["a red circle", "blue background", "small"]))
    band = grid.height - 128
    assert same(grid.crop((48, band, 176, grid.height)), plain)
    assert arr(grid.crop((48, 0, 176, band))).min() < 128   # the labels are drawn

    new_grids = files(data, "txt2img-grids") - before_grids
    new_pics = files(data, "txt2img-images") - before_pics
    assert len(new_grids) == 1 and len(new_pics) == 4
    assert next(iter(new_grids)).name == "prompt_matrix-0000-1.png"   # A1111's name for it
    saved = Image.open(next(iter(new_grids)))
    assert saved.size == grid.size and "parameters" not in saved.info   # A1111 saves it without parameters
    assert sorted(Image.open(p).info["parameters"] for p in new_pics) == sorted(res.infotexts[1:])


def test_prompt_matrix_negative_prompt_different_seeds_and_margin(env):
    from modules import grid_labels

    app, _ = env
    res = run(app, prompt="a circle", negative_prompt="blurry|red", seed=20, subseed=3, subseed_strength=0.5,
              script_name="prompt matrix", script_args=[True, True, 1, "space", 4])   # prompt_type by index
    assert res.negative_prompts == ["blurry", "blurry", "red blurry"]
    assert res.prompts == ["a circle"] * 3
    assert res.seeds == [20, 20, 21] and res.subseeds == [3, 3, 4]   # A1111: subseed + i per picture
    solo = alone(app, prompt="a circle", negative_prompt="red blurry", seed=21, subseed=4, subseed_strength=0.5)
    assert same(res.images[2], solo.images[0]) and res.infotexts[2] == solo.infotexts[0]
    grid = res.images[0]
    assert grid.width == 2 * 64 + 4   # one row of two, the margin between, no label column
    plain = images.image_grid(res.images[1:], rows=1)
    assert same(grid, grid_labels.draw_prompt_matrix(plain, 64, 64, ["blurry", "red"], 4))


# ---------------------------------------------------------------------------
# Prompts from file or textbox

LINES = 'a red circle\n  --prompt "a blue square" --steps 3 --seed 7\n\n--negative_prompt "red" --cfg_scale 5\n'


def test_prompts_from_file_lines_are_the_jobs_alone(env):
    app, _ = env
    # checkbox_iterate, checkbox_iterate_batch, prompt_position, prompt_txt
    res = run(app, prompt="", seed=11, script_name="prompts from file or textbox",
              script_args=[False, False, "start", LINES])
    assert len(res.images) == 3 and res.info["index_of_first_image"] == 0
    assert res.seeds == [11, 7, 11]
    assert res.prompts == ["a red circle", "a blue square", ""]
    assert res.negative_prompts == ["", "", "red"]
    solo = [alone(app, prompt="a red circle", seed=11), alone(app, prompt="a blue square", steps=3, seed=7),
            alone(app, prompt="", negative_prompt="red", cfg_scale=5.0, seed=11)]
    for i, r in enumerate(solo):
        assert same(res.images[i], r.images[0]), i
        assert res.infotexts[i] == r.infotexts[0]
    assert "Steps: 3," in res.infotexts[1] and "Seed: 7," in res.infotexts[1]
    assert "CFG scale: 5," in res.infotexts[2] and "Negative prompt: red" in res.infotexts[2]


def test_prompts_from_file_iterates_seeds_and_joins_the_request_prompt(env):
    app, _ = env
    res = run(app, prompt="shape", seed=11, script_name="prompts from file or textbox",
              script_args=[True, False, "end", LINES])
    assert res.seeds == [11, 7, 13]   # the next seed every line; a line's --seed wins
    assert res.prompts == ["shape a red circle", "shape a blue square", "shape"]
    solo = alone(app, prompt="shape", negative_prompt="red", cfg_scale=5.0, seed=13)
    assert same(res.images[2], solo.images[0]) and res.infotexts[2] == solo.infotexts[0]
    res = run(app, prompt="", seed=-1, n_iter=2, script_name="prompts from file or textbox",
              script_args=[False, True, "start", "a\n--sd_model sd-shapes-64 --prompt b\n"])
    assert len(res.images) == 4 and res.seeds[:2] == res.seeds[2:] and res.seeds[1] == res.seeds[0] + 1
    assert res.prompts == ["a", "a", "b", "b"] and "Model: sd-shapes-64," in res.infotexts[3]
    res = run(app, prompt="", seed=5, n_iter=2, script_name="prompts from file or textbox",
              script_args=[True, False, "start", "a\nb\n"])
    assert res.seeds == [5, 6, 7, 8]   # a line's seeds, then the next line's: by batch count x batch size


@pytest.mark.parametrize("text, message", [
    ("a red circle\n--steps 3 --colour red", "line 2: unknown option --colour"),
    ("\n\n--steps three", "line 3: --steps: 'three' is not a whole number"),
    ("--steps 0", "line 1: --steps: must be at least 1"),
    ("--tiling yes", "line 1: --tiling: 'yes' is not true or false"),
    ("--prompt a --seed", "line 1: --seed needs a value"),
    ('--prompt "a cat', "line 1: cannot split the line into words"),
    ("--sampler_name Nope", "line 1: --sampler_name: Unknown sampler 'Nope'"),
    ("--sampler_index 99", "line 1: --sampler_index: index 99 is out of range"),
    ("ok\n--sd_model missing-model", "line 2: --sd_model:"),
])
def test_prompts_from_file_a_bad_line_fails_the_job(env, text, message):
    app, _ = env
    job = submit(app, prompt="x", seed=1, script_name="prompts from file or textbox",
                 script_args=[False, False, "start", text])
    assert job.status == "failed" and job.result is None
    assert job.error.startswith("prompt_txt: " + message), job.error


def test_prompts_from_file_line_options(env):
    # A1111's shlex parsing: a prompt takes the words up to the next option; values read by type
    mod = script_module(env[0], "prompts from file or textbox")
    assert mod.parse_line('--prompt a big "red cat" --cfg_scale 6.5 --styles "s1, s2" --tiling true '
                          '--sampler_index 6 --do_not_save_samples false') == {
        "prompt": "a big red cat", "cfg_scale": 6.5, "styles": ["s1", "s2"], "tiling": True,
        "sampler_index": "Euler a", "do_not_save_samples": False}
    assert [n for n, _ in mod.parse_text("a\n\n  \n--seed 2\nb")] == [1, 4, 5]


# ---------------------------------------------------------------------------
# Loopback


def test_prompts_from_file_upload_reads_the_lines_or_refuses_a_file_that_is_not_text(env):
    import gradio as gr

    app, _ = env
    mod = script_module(app, "prompts from file or textbox")
    assert mod.read_prompt_file("\ufeffa cat  \r\n --steps 4\nlast".encode()) == "a cat\n--steps 4\nlast"
    with pytest.raises(ValueError, match=r"not UTF-8 text \(byte 1: b'\\xff'\)"):
        mod.read_prompt_file(b"a\xff")
    with pytest.raises(ValueError, match="NUL bytes"):
        mod.read_prompt_file(b"a\x00b")
    with pytest.raises(ValueError, match="at most 4194304"):
        mod.read_prompt_file(b"a" * (4 * 1024 * 1024 + 1))

    script = app.scripts.find("prompts from file or textbox")
    demo, comps, extra = wired_ui(script, app, "img2img", True)
    assert list(script.defaults(True)) == ["checkbox_iterate", "checkbox_iterate_batch", "prompt_position",
                                           "prompt_txt"]   # the upload is no argument: A1111's four positions
    assert extra["file"].elem_id == "img2img_script_prompts_from_file_or_textbox_file"
    (load,) = demo.fns.values()
    assert load.outputs == [comps["file"], comps["prompt_txt"], comps["file_error"]]
    cleared, text, message = load.fn(b"one\ntwo\n")
    assert (cleared, text, message["visible"]) == (None, "one\ntwo\n", False)
    cleared, text, message = load.fn(b"\x89PNG")
    assert cleared is None and text == gr.update() and message["visible"] is True
    assert "the file is not UTF-8 text" in message["value"] and 'class="sdw-error"' in message["value"]


@pytest.fixture(scope="module")
def init_image():
    im = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(im).ellipse((16, 16, 48, 48), fill="red")
    return im


def strength_of(text: str) -> float:
    return float(parse_generation_parameters(text)["Denoising strength"])


def test_loopback_feeds_each_picture_back_with_the_curve(env, init_image):
    app, data = env
    before = files(data, "img2img-grids")
    # loops, final_denoising_strength, denoising_curve, append_interrogation
    res = run(app, prompt="a red circle", seed=3, mode="img2img", init_images=[init_image], denoising_strength=0.75,
              script_name="loopback", script_args=[3, 0.25, "Aggressive", "None"])
    # A1111's curve: initial + (final - initial) * sin(progress * pi / 2), progress = loop / (loops - 1)
    expected = [0.75 + (0.25 - 0.75) * math.sin(k / 2 * math.pi * 0.5) for k in range(3)]
    assert len(res.images) == 4 and res.info["index_of_first_image"] == 1
    assert res.seeds == [3, 3, 4, 5]   # the grid, then one seed up per loop
    assert [strength_of(t) for t in res.infotexts[1:]] == expected
    for t in res.infotexts[1:]:
        assert "Final denoising strength: 0.25, Denoising curve: Aggressive" in t
    assert res.infotexts[0] == res.infotexts[1]
    chain, init = [], init_image
    for i, s in enumerate(expected):
        r = alone(app, prompt="a red circle", seed=3 + i, mode="img2img", init_images=[init], denoising_strength=s)
        chain.append(r.images[0])
        init = r.images[0]
    for got, want in zip(res.images[1:], chain):
        assert same(got, want)
    assert not same(chain[0], chain[2])
    assert res.images[0].size == (192, 64) and same(res.images[0], images.image_grid(chain, rows=1))
    new = files(data, "img2img-grids") - before
    assert len(new) == 1 and "parameters" not in Image.open(next(iter(new))).info


def test_loopback_batch_count_keeps_the_last_picture_of_each_batch(env, init_image):
    app, _ = env
    res = run(app, prompt="a red circle", seed=30, n_iter=2, batch_size=2, mode="img2img",
              init_images=[init_image], denoising_strength=0.6, script_name="loopback",
              script_args=[2, 0.2, "Linear", "None"])
    assert len(res.images) == 3 and res.seeds == [30, 31, 33]   # seeds go on across batches
    assert [strength_of(t) for t in res.infotexts[1:]] == [0.6 + (0.2 - 0.6) * 1.0] * 2
    first = alone(app, prompt="a red circle", seed=32, mode="img2img", init_images=[init_image],
                  denoising_strength=0.6)   # the second batch starts again from the request's image
    last = alone(app, prompt="a red circle", seed=33, mode="img2img", init_images=first.images,
                 denoising_strength=0.2)
    assert same(res.images[2], last.images[0])


def test_loopback_is_img2img_only_and_refuses_interrogation(env, init_image):
    app, _ = env
    with pytest.raises(RequestError, match="script_name"):
        app.submit(GenerationRequest(**SMALL, prompt="x", script_name="loopback", script_args=[2, 0.5, "Linear"]))
    with pytest.raises(RequestError, match=r"script_args\[3\] \(append_interrogation\)"):
        app.submit(GenerationRequest(**SMALL, prompt="x", mode="img2img", init_images=[init_image],
                                     script_name="loopback", script_args=[2, 0.5, "Linear", "CLIP"]))
