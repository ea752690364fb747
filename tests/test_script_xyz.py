"""The built-in "X/Y/Z plot" script and the labelled grids of modules/grid_labels.py: A1111's positional
script_args (type indices per tab), value parsing (ranges, csv quoting, -1 seeds), the grid (size from the
label bands, every cell equal to the same job run alone), sub-grids of a Z axis, the infotexts of grids and
cells (pasting one restores the plot), the files written, checkpoint switching, bad values, interrupting."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from modules import cmd_args, engine, grid_labels, images, scripts
from modules.engine import GenerationRequest
from modules.grid_labels import Label
from modules.infotext import parse_generation_parameters
from tests.script_support import arr, files, same, wired_ui

ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(prompt="a red circle", steps=4, width=64, height=64, seed=1)
TINY = dict(prompt="a red circle", steps=2, width=64, height=64, seed=1)
SAMPLERS = ["Euler a", "DDIM"]
CFGS = [3.0, 7.0]


def xyz(x=("Nothing", "", []), y=("Nothing", "", []), z=("Nothing", "", []), legend=True, lone=False, subs=False,
        keep=False, vary=(False, False, False), margin=0, csv_mode=False) -> list:
    """A1111's positional script_args of the X/Y/Z plot (its ui() order)."""
    return [*x, *y, *z, legend, lone, subs, keep, *vary, margin, csv_mode]


def make_app(data: Path, ckpt_dir: Path):
    from modules.app import App

    app = App(cmd_args.parse_args(["--data-dir", str(data), "--ckpt-dir", str(ckpt_dir)]))
    app.refresh_models()
    return app


def submit(app, base: dict, **kw):
    job = app.submit(GenerationRequest(**{**base, **kw}))
    job.done_event.wait(300)
    return job


def run(app, base: dict, **kw):
    job = submit(app, base, **kw)
    assert job.status == "done", job.error
    assert job.result.warnings == []
    return job.result


def with_params(text: str, params: str) -> str:
    assert ", Version: " in text
    return text.replace(", Version: ", f", {params}, Version: ")


def top_band(labels: list[str], size: int) -> int:
    """The top band's height, worked out here: the tallest label line plus a line spacing above and below."""
    fnt = ImageFont.truetype(str(grid_labels.FONT_FILE), size)
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    return max(draw.textbbox((0, 0), t, font=fnt)[3] - draw.textbbox((0, 0), t, font=fnt)[1] for t in labels) \
        + 2 * (size // 2)


# ---------------------------------------------------------------------------
# labelled grids


def test_annotate_size_margins_and_colours():
    cells = [Image.new("RGB", (100, 80), c) for c in ("red", "green", "blue", "yellow", "cyan", "magenta")]
    grid = images.image_grid(cells, rows=2)
    hor = [[Label("first")], [Label("second")], [Label("third", active=False)]]
    ver = [[Label("top row")], [Label("bottom")]]
    out = grid_labels.annotate(grid, 100, 80, hor, ver, margin=10)
    left, top = grid_labels.bands(100, 80, hor, ver)
    assert left == 75 and top == top_band(["first", "second", "third"], (100 + 80) // 25)
    assert out.size == (75 + 300 + 2 * 10, top + 160 + 10)
    for i, c in enumerate(cells):   # each cell in its place, margins white
        x, y = 75 + (100 + 10) * (i % 3), top + (80 + 10) * (i // 3)
        assert same(out.crop((x, y, x + 100, y + 80)), c)
    assert (arr(out.crop((75 + 100, top, 75 + 110, top + 80))) == 255).all()
    band = arr(out.crop((0, 0, out.width, top)))
    assert (band < 80).all(axis=2).any()                           # black text of the active labels
    assert (band[:, 75 + 220:] == 153).all(axis=2).any()           # the inactive label: grey, struck through
    assert not (band[:, 75 + 220:] == 0).all(axis=2).any()
    # no labels: no bands; a wrong label count is refused
    assert grid_labels.annotate(grid, 100, 80, [[Label("")]] * 3, [[Label("")]] * 2).size == grid.size
    with pytest.raises(ValueError, match="column labels"):
        grid_labels.annotate(grid, 100, 80, hor[:2], ver)


def test_long_labels_wrap_and_chinese_labels_render():
    fnt = grid_labels.font(40)

    def glyph(ch):
        im = Image.new("L", (60, 60), 0)
        ImageDraw.Draw(im).text((5, 5), ch, font=fnt, fill=255)
        return im.tobytes()

    red, circle, blank = glyph("红"), glyph("圆"), Image.new("L", (60, 60), 0).tobytes()
    assert red != circle and red != blank and glyph("a") != glyph("b")
    notdef = glyph("\U00020000")   # a character the font lacks: the .notdef box
    assert red != notdef and circle != notdef
    grid = Image.new("RGB", (128, 64), "white")
    one = grid_labels.bands(64, 64, [[Label("红色")], [Label("圆")]], [[Label("")]])[1]
    long_label = "一个红色的圆圈和一个蓝色的方块在白色背景上"
    many = grid_labels.bands(64, 64, [[Label(long_label)], [Label("圆")]], [[Label("")]])[1]
    assert many > one   # CJK without spaces is broken onto several lines
    out = grid_labels.annotate(grid, 64, 64, [[Label("采样器")], [Label("提示词")]], [[Label("")]])
    left, right = arr(out.crop((0, 0, 64, one))), arr(out.crop((64, 0, 128, one)))
    assert (left < 128).any() and not np.array_equal(left, right)


def test_prompt_matrix_labels():
    hor, ver = grid_labels.matrix_labels(["blue", "small", "shiny"])
    assert [[(lb.text, lb.active) for lb in col] for col in hor] == [
        [("blue", False), ("small", False)], [("blue", True), ("small", False)],
        [("blue", False), ("small", True)], [("blue", True), ("small", True)]]
    assert [[(lb.text, lb.active) for lb in row] for row in ver] == [[("shiny", False)], [("shiny", True)]]
    grid = images.image_grid([Image.new("RGB", (64, 64), "gray")] * 8, rows=2)
    out = grid_labels.draw_prompt_matrix(grid, 64, 64, ["a cat", "blue", "small", "shiny"], margin=4)
    left, top = grid_labels.bands(64, 64, hor, ver)
    assert out.size == (left + 4 * 64 + 3 * 4, top + 2 * 64 + 4) and left == 48


# ---------------------------------------------------------------------------
# values and axes (no jobs)


@pytest.fixture(scope="module")
def xyz_mod():
    import importlib.util

    spec = importlib.util.spec_from_file_location("xyz_grid_under_test", ROOT / "scripts" / "xyz_grid.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("kind, text, want", [
    ("int", "1-5", [1, 2, 3, 4, 5]),
    ("int", "1-10 (+2)", [1, 3, 5, 7, 9]),
    ("int", "10-20 [5]", [10, 12, 15, 17, 20]),
    ("int", "5-1 (-2)", [5, 3]),
    ("int", "-1, 3, 1-2", [-1, 3, 1, 2]),
    ("float", "1.0-2.0 [3]", [1.0, 1.5, 2.0]),
    ("float", "1-2 (+0.5)", [1.0, 1.5, 2.0]),
    ("float", "7, 3.5", [7.0, 3.5]),
    ("str", 'Euler a, "DPM++ 2M, Karras", DDIM', ["Euler a", "DPM++ 2M, Karras", "DDIM"]),
    ("str", "one\ntwo,three", ["one", "two", "three"]),
])
def test_value_parsing(xyz_mod, kind, text, want):
    got = xyz_mod.parse_values({"int": int, "float": float, "str": str}[kind], xyz_mod.csv_values(text))
    assert got == want and [type(v) for v in got] == [type(v) for v in want]


def test_bad_values_and_permutations(xyz_mod):
    for kind, text, msg in ((int, "4, abc", "'abc' is not a whole number"), (int, "1.5", "'1.5' is not a whole"),
                            (float, "x", "'x' is not a number"), (int, "1-5 (+0)", "step of 0")):
        with pytest.raises(ValueError, match=msg):
            xyz_mod.parse_values(kind, xyz_mod.csv_values(text))
    perms = xyz_mod.parse_values(xyz_mod.permutations, ["a", "b", "c"])
    assert len(perms) == 6 and perms[0] == ("a", "b", "c") and perms[-1] == ("c", "b", "a")
    cell = xyz_mod.Cell(None, GenerationRequest(prompt="a red circle, blue square, small"))
    xyz_mod.apply_order(cell, ("small", "red circle", "blue square"), perms)
    assert cell.req.prompt == "a small, red circle, blue square"


def test_axis_lists_keep_a1111_indices_per_tab(xyz_mod):
    t2i = [a.label for a in xyz_mod.axes_for(False)]
    i2i = [a.label for a in xyz_mod.axes_for(True)]
    assert len(t2i) == 43 and len(i2i) == 42 and t2i[-1] == i2i[-1] == "Settings"
    assert {i: t2i[i] for i in (0, 1, 4, 5, 6, 7, 9, 10, 11, 17, 23, 24, 29, 30, 39, 41)} == {
        0: "Nothing", 1: "Seed", 4: "Steps", 5: "Hires steps", 6: "CFG Scale", 7: "Prompt S/R", 9: "Sampler",
        10: "Hires sampler", 11: "Checkpoint name", 17: "Schedule type", 23: "Eta", 24: "Clip skip", 29: "VAE",
        30: "Styles", 39: "RNG source", 41: "Size"}
    assert {i: i2i[i] for i in (5, 6, 9, 10, 27, 28)} == {5: "CFG Scale", 6: "Image CFG Scale", 9: "Sampler",
                                                          10: "Checkpoint name", 27: "Cond. Image Mask Weight",
                                                          28: "VAE"}
    arg = next(a for a in xyz_mod.XYZPlot().args(False) if a.name == "x_type")
    assert arg.coerce(6, None, False) == "CFG Scale" and arg.coerce(6, None, True) == "Image CFG Scale"
    assert arg.default == "Seed" and arg.infotext == "X Type"


def test_values_move_between_text_and_dropdown(xyz_mod):
    sel = xyz_mod.select_axis
    shown, text, choices, dd, picked = sel(None, False, "Sampler", 'Euler a, Nope, DDIM', [], False)
    assert (shown, text, dd, picked) == (False, "", True, ["Euler a", "DDIM"]) and "DPM++ 2M" in choices
    assert sel(None, False, "Sampler", "", ["Euler a", "DDIM"], True) == (True, "Euler a,DDIM", choices, False, [])
    assert sel(None, False, "Steps", "1-3", [], False) == (True, "1-3", None, False, [])


def test_ui_wire_switches_values_controls_fills_and_swaps(xyz_mod):
    import gradio as gr

    demo, comps, extra = wired_ui(xyz_mod.XYZPlot(), None, "txt2img", False)
    assert sorted(extra) == ["fill_x", "fill_y", "fill_z", "swap_xy", "swap_xz", "swap_yz"]
    assert [extra[f"swap_{p}"].value for p in ("xy", "yz", "xz")] == ["Swap X/Y axes", "Swap Y/Z axes",
                                                                       "Swap X/Z axes"]
    assert extra["swap_xy"].elem_id == "txt2img_script_x_y_z_plot_swap_xy"
    events = list(demo.fns.values())
    # each type dropdown and the csv checkbox for the three axes, the three fill buttons, and each swap
    # button's two steps
    assert len(events) == 6 + 3 + 3 * 2
    text, dd, fill = events[0].fn("Sampler", "Euler a, DDIM", [], False)
    assert (text["visible"], text["value"], dd["visible"], dd["value"]) == (False, "", True, ["Euler a", "DDIM"])
    assert fill["visible"] is True   # a sampler axis can be filled
    text, dd, fill = events[0].fn("Steps", "1-3", [], False)
    assert (text["visible"], text["value"], dd["visible"], fill["visible"]) == (True, "1-3", False, False)

    fill_x = next(e for e in events if e.inputs and e.inputs[0] is comps["x_type"] and len(e.inputs) == 2)
    samplers = xyz_mod.axis_choices(xyz_mod.find_axis("Sampler", False), None)
    text, dd = fill_x.fn("Sampler", False)
    assert dd["value"] == samplers and "value" not in text
    text, dd = fill_x.fn("Sampler", True)   # csv mode: the text box, as A1111's csv writer joins them
    assert text["value"] == xyz_mod.csv_string(samplers) and "value" not in dd
    assert fill_x.fn("Steps", False) == (gr.update(), gr.update())

    # swapping X and Y: first the values (with the choices of the type each axis gets), then the types,
    # whose change events then read the values already swapped
    swap_values, swap_types = events[-6], events[-5]
    assert [c.elem_id for c in swap_values.inputs] == [f"t_{n}_{p}" for n in "xy" for p in
                                                        ("type", "values", "values_dropdown")] + ["t_csv_mode"]
    assert [c.elem_id for c in swap_values.outputs] == ["t_x_values", "t_x_values_dropdown", "t_y_values",
                                                         "t_y_values_dropdown"]
    out = swap_values.fn("Sampler", "", ["Euler a", "DDIM"], "CFG Scale", "3, 7", [], False)
    assert out[0]["value"] == "3, 7" and out[0]["visible"] is True and out[1]["visible"] is False
    assert out[2]["visible"] is False
    assert out[3]["value"] == ["Euler a", "DDIM"] and out[3]["visible"] is True and out[3]["choices"] == samplers
    assert [c.elem_id for c in swap_types.outputs] == ["t_x_type", "t_y_type"]
    assert swap_types.fn("Sampler", "CFG Scale") == ("CFG Scale", "Sampler")
    assert [c.elem_id for c in events[-4].outputs] == ["t_y_values", "t_y_values_dropdown", "t_z_values",
                                                        "t_z_values_dropdown"]   # Y/Z, then X/Z
    assert [c.elem_id for c in events[-1].outputs] == ["t_x_type", "t_z_type"]


def test_fill_values(xyz_mod):
    samplers = xyz_mod.axis_choices(xyz_mod.find_axis("Sampler", False), None)
    assert xyz_mod.fill_values(None, False, "Sampler", False) == (None, samplers)
    assert xyz_mod.fill_values(None, False, "Sampler", True) == (xyz_mod.csv_string(samplers), None)
    assert xyz_mod.fill_values(None, False, "CFG Scale", False) == (None, None)
    assert xyz_mod.fill_values(None, False, "no such axis", True) == (None, None)


# ---------------------------------------------------------------------------
# the default model: samplers x CFG scale


@pytest.fixture(scope="module")
def env(tmp_path_factory, one_thread):
    data = tmp_path_factory.mktemp("xyz")
    app = make_app(data, ROOT / "models" / "Stable-diffusion")
    yield app, data
    app.queue.stop()


@pytest.fixture(scope="module")
def plot(env):
    """A1111's request: X type 9 (Sampler) from its dropdown, Y type 6 (CFG Scale) as text, lone images on;
    then each cell's job alone."""
    app, data = env
    before = files(data, "txt2img-images"), files(data, "txt2img-grids")
    res = run(app, SMALL, script_name="x/y/z plot",
              script_args=xyz(x=(9, "", SAMPLERS), y=(6, "3, 7", []), lone=True))
    written = files(data, "txt2img-images") - before[0], files(data, "txt2img-grids") - before[1]
    alone = {(s, c): app.process(GenerationRequest(**SMALL, sampler_name=s, cfg_scale=c))
             for c in CFGS for s in SAMPLERS}
    return res, alone, written


def test_grid_size_cells_and_lone_images(plot):
    res, alone, _ = plot
    assert len(res.images) == 5 and res.info["index_of_first_image"] == 1
    grid = res.images[0]
    left, top = 64 * 3 // 4, top_band(SAMPLERS, 128 // 25)
    assert grid.size == (left + 128, top + 128)
    assert (left, top) == grid_labels.bands(64, 64, [[Label(s)] for s in SAMPLERS],
                                            [[Label(f"CFG Scale: {c}")] for c in CFGS])
    assert (arr(grid.crop((0, 0, left, top))) == 255).all()          # the corner stays white
    assert (arr(grid.crop((left, 0, grid.width, top))) < 200).any()  # X labels drawn
    assert (arr(grid.crop((0, top, left, grid.height))) < 200).any()  # Y labels drawn
    for i, key in enumerate((s, c) for c in CFGS for s in SAMPLERS):   # x fastest
        x, y = left + 64 * (i % 2), top + 64 * (i // 2)
        assert same(grid.crop((x, y, x + 64, y + 64)), alone[key].images[0]), key
        assert same(res.images[1 + i], alone[key].images[0]), key
        assert res.infotexts[1 + i] == alone[key].infotexts[0]
    assert not same(alone[("Euler a", 3.0)].images[0], alone[("DDIM", 3.0)].images[0])
    assert not same(alone[("Euler a", 3.0)].images[0], alone[("Euler a", 7.0)].images[0])
    assert res.seeds == [1] * 5 and res.prompts == ["a red circle"] * 5
    assert len(res.infotexts) == len(res.subseeds) == len(res.negative_prompts) == 5


def test_grid_infotext_and_paste(plot, env):
    app, _ = env
    res, alone, _ = plot
    assert res.infotexts[0] == with_params(
        alone[("Euler a", 3.0)].infotexts[0],
        'Script: X/Y/Z plot, X Type: Sampler, X Values: "Euler a,DDIM", Y Type: CFG Scale, Y Values: "3, 7"')
    assert res.info["infotexts"] == res.infotexts
    params = parse_generation_parameters(res.infotexts[0])
    assert app.scripts.from_infotext(params, False) == {"script": "X/Y/Z plot", "args": {"X/Y/Z plot": {
        "x_type": "Sampler", "x_values": "Euler a,DDIM", "y_type": "CFG Scale", "y_values": "3, 7"}}}
    assert app.scripts.from_infotext(parse_generation_parameters(res.infotexts[1]), False)["script"] is None


def test_files_written(plot):
    res, _, (pics, grids) = plot
    assert len(pics) == 4 and len(grids) == 1
    assert sorted(images.read_info_from_image(Image.open(p))[0] for p in pics) == sorted(res.infotexts[1:])
    for p in pics:
        assert any(same(Image.open(p), im) for im in res.images[1:])
    grid_file = next(iter(grids))
    assert re.fullmatch(r"xyz_grid-\d{4}-%d\.png" % res.seeds[0], grid_file.name)   # A1111's name for it
    assert images.read_info_from_image(Image.open(grid_file))[0] == res.infotexts[0]
    assert same(Image.open(grid_file), res.images[0])


def test_z_axis_sub_grids(env, plot):
    app, data = env
    _, alone, _ = plot
    before = files(data, "txt2img-grids")
    res = run(app, SMALL, script_name="x/y/z plot",
              script_args=xyz(x=("Sampler", "Euler a", []), z=("CFG Scale", "3,7", []), subs=True, csv_mode=True))
    assert len(res.images) == 3 and res.info["index_of_first_image"] == 3
    top = top_band(["Euler a"], 128 // 25)
    subs = res.images[1:]
    for sub, c in zip(subs, CFGS):
        assert sub.size == (64, top + 64)   # no row labels: no left band
        assert same(sub.crop((0, top, 64, top + 64)), alone[("Euler a", c)].images[0])
    z_labels = [[Label(f"CFG Scale: {c}")] for c in CFGS]
    assert same(res.images[0], grid_labels.annotate(images.image_grid(subs, rows=1), 64, top + 64, z_labels,
                                                    [[Label("")]]))
    assert res.images[0].size == (128, top + 64 + grid_labels.bands(64, top + 64, z_labels, [[Label("")]])[1])
    xy = "Script: X/Y/Z plot, X Type: Sampler, X Values: Euler a"
    z = ', Z Type: CFG Scale, Z Values: "3,7"'
    assert res.infotexts[0] == with_params(alone[("Euler a", 3.0)].infotexts[0], xy + z)
    assert res.infotexts[1:] == [with_params(alone[("Euler a", c)].infotexts[0], xy) for c in CFGS]
    assert len(files(data, "txt2img-grids") - before) == 3   # the main grid and each sub-grid


# ---------------------------------------------------------------------------
# tiny models: checkpoints, seeds, errors, interrupting


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, one_thread):
    from testing.tiny_models import write_tiny_checkpoint

    data = tmp_path_factory.mktemp("xyz_tiny")
    ck = data / "ckpt"
    ck.mkdir()
    write_tiny_checkpoint(ck / "tiny-a.safetensors", "sd1", seed=0)
    write_tiny_checkpoint(ck / "tiny-b.safetensors", "sd1", seed=1)
    app = make_app(data, ck)
    yield app, data
    app.queue.stop()


def test_checkpoint_axis_switches_models(tiny):
    app, data = tiny
    res = run(app, TINY, script_name="x/y/z plot",
              script_args=xyz(x=("Checkpoint name", "tiny-b, tiny-a", []), csv_mode=True, lone=True))
    assert len(res.images) == 3
    for i, name in enumerate(["tiny-b", "tiny-a"]):
        alone = app.process(GenerationRequest(**TINY), checkpoint=name)
        assert f"Model: {name}," in res.infotexts[1 + i] and res.infotexts[1 + i] == alone.infotexts[0]
        assert same(res.images[1 + i], alone.images[0])
    assert not same(res.images[1], res.images[2])
    assert "X Type: Checkpoint name, X Values: \"tiny-b, tiny-a\"" in res.infotexts[0]


def test_seeds_fixed_kept_and_varied(tiny):
    app, _ = tiny
    res = run(app, TINY, script_name="x/y/z plot", script_args=xyz(x=("Seed", "-1, 5", []), lone=True))
    picked = res.seeds[1]
    assert res.seeds[2] == 5 and 0 <= picked < 2**32 - 1 and res.seeds[0] == picked
    assert f'X Values: "-1, 5", Fixed X Values: "{picked}, 5"' in res.infotexts[0]
    kept = run(app, TINY, script_name="x/y/z plot", script_args=xyz(x=("Seed", "-1, -1", []), keep=True, lone=True))
    assert kept.seeds[1] != kept.seeds[2] and "Fixed X Values" not in kept.infotexts[0]
    varied = run(app, {**TINY, "seed": 10}, script_name="x/y/z plot",
                 script_args=xyz(x=("Steps", "1-2", []), lone=True, vary=(True, False, False)))
    assert varied.seeds[1:] == [10, 11] and "Steps: 1," in varied.infotexts[1] and "Steps: 2," in varied.infotexts[2]


def test_batch_cells_show_their_batch_grid(tiny):
    app, _ = tiny
    res = run(app, {**TINY, "batch_size": 2}, script_name="x/y/z plot",
              script_args=xyz(x=("Steps", "1, 2", []), lone=True))
    alone = app.process(GenerationRequest(**{**TINY, "batch_size": 2, "steps": 1}))
    assert alone.grid.size == (128, 64) and len(res.images) == 3
    left, top = grid_labels.bands(128, 64, [[Label("Steps: 1")], [Label("Steps: 2")]], [[Label("")]])
    assert left == 0 and res.images[0].size == (256, top + 64)
    assert same(res.images[0].crop((0, top, 128, top + 64)), alone.grid) and same(res.images[1], alone.grid)
    assert res.infotexts[1] == alone.infotexts[0] and res.seeds[1:] == [1, 1]
    single = run(app, {**TINY, "batch_size": 2, "override_settings": {"return_grid": False}},
                 script_name="x/y/z plot", script_args=xyz(x=("Steps", "1, 2", []), lone=True))
    assert [im.size for im in single.images[1:]] == [(64, 64)] * 2   # A1111: no grids shown, batches of 1
    assert same(single.images[1], app.process(GenerationRequest(**{**TINY, "steps": 1})).images[0])


def test_a_bad_axis_value_is_a_422_of_the_api(tiny):
    import webui
    from fastapi.testclient import TestClient

    app, _ = tiny
    client = TestClient(webui.create_server(app, with_ui=False, with_api=True))
    r = client.post("/sdapi/v1/txt2img", json={**TINY, "script_name": "x/y/z plot",
                                                "script_args": xyz(x=("Steps", "2, abc", []))})
    assert r.status_code == 422, r.text
    assert "X axis 'Steps', values '2, abc': 'abc' is not a whole number" in r.text and "script_args" in r.text


@pytest.mark.parametrize("args, message", [
    (xyz(x=("Steps", "2, abc", [])), "X axis 'Steps', values '2, abc': 'abc' is not a whole number"),
    (xyz(y=("CFG Scale", "7, 1e9", [])), "Y axis 'CFG Scale', value 1000000000.0: cfg_scale"),
    (xyz(z=("Prompt S/R", "blue, green", [])), "Prompt S/R did not find blue in prompt or negative prompt"),
    (xyz(x=("Sampler", "Euler a, Nope", []), csv_mode=True), "Unknown sampler: Nope"),
    (xyz(x=("Checkpoint name", "tiny-a, zzzz", []), csv_mode=True), "checkpoint 'zzzz' not found"),
    (xyz(x=(13, "1", [])), "the X axis 'Sigma Churn' is not supported here"),
    (xyz(x=("Settings", "eta_ddim=0.5; nope=1", [])), "'nope=1' is not key=value with a setting key"),
    (xyz(x=("Size", "64x64, 64 by 64", [])), "Invalid size '64 by 64'"),
])
def test_bad_values_fail_the_job_before_any_picture(tiny, args, message):
    app, data = tiny
    before = files(data, "txt2img-images")
    job = submit(app, TINY, script_name="x/y/z plot", script_args=args)
    assert job.status == "failed" and message in job.error, job.error
    assert job.error_field == "script_args"   # the request's fault: the API answers 422, not 500
    assert files(data, "txt2img-images") == before


def test_settings_axis(tiny):
    app, _ = tiny
    res = run(app, {**TINY, "sampler_name": "DDIM"}, script_name="x/y/z plot",
              script_args=xyz(x=("Settings", "eta_ddim=0, eta_ddim=0.5; randn_source=NV", []), lone=True))
    for i, ov in enumerate([{"eta_ddim": 0.0}, {"eta_ddim": 0.5, "randn_source": "NV"}]):
        alone = app.process(GenerationRequest(**TINY, sampler_name="DDIM", override_settings=ov))
        assert same(res.images[1 + i], alone.images[0]) and res.infotexts[1 + i] == alone.infotexts[0]
    assert "Eta DDIM: 0.5" in res.infotexts[2] and not same(res.images[1], res.images[2])
    assert 'X Type: Settings, X Values: "eta_ddim=0, eta_ddim=0.5; randn_source=NV"' in res.infotexts[0]


def test_interrupt_stops_between_cells(tiny):
    app, _ = tiny
    script = app.scripts.find("x/y/z plot")
    req = GenerationRequest(**TINY, script_name="x/y/z plot",
                            script_args=xyz(x=("Steps", "1, 2", []), y=("Seed", "1, 2", []), lone=True))
    app.scripts.prepare(req)
    control = engine.JobControl()

    def process(r, checkpoint, vae, extra, run_job):
        out = app._script_process(r, checkpoint, vae, extra, run_job)
        control.interrupt()   # after the first cell
        return out

    job = scripts.ScriptJob(script, req, app.opts.snapshot(), control, process, app.save_output, app=app)
    job.checkpoint = job.vae = None
    res = script.run(job, scripts.Args(req.script_args))
    assert res.interrupted and len(res.images) == 2 and job.done == 1 and control.script_jobs == (1, 4)
    alone = app.process(GenerationRequest(**{**TINY, "steps": 1}))
    assert same(res.images[1], alone.images[0]) and res.infotexts[1] == alone.infotexts[0]
    grid = res.images[0]
    left, top = grid.width - 128, grid.height - 128
    assert same(grid.crop((left, top, left + 64, top + 64)), alone.images[0])
    assert (arr(grid)[top:, left + 64:] == 0).all() and (arr(grid)[top + 64:, left:] == 0).all()  # not made: black
