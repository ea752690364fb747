"""The img2img scripts "SD upscale", "Outpainting mk2" and "Poor man's outpainting" on the default model,
through A1111's positional script_args, and the tile split / combine they use: tile positions, the
identity of an unchanged grid, the blend across an overlap; every picture equal to its jobs run by
hand (the same tiles, seeds and masks), sizes, seeds, infotexts, saved files, argument errors."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from modules import cmd_args, tiles, upscalers
from modules.engine import GenerationRequest, RequestError
from modules.infotext import parse_generation_parameters
from tests.script_support import arr, files, same, script_module

ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(steps=4, width=64, height=64, cfg_scale=7.0, prompt="a red circle", mode="img2img",
             denoising_strength=0.5)


def picture(w: int = 64, h: int = 64) -> Image.Image:
    im = Image.new("RGB", (w, h), (40, 90, 200))
    d = ImageDraw.Draw(im)
    d.ellipse((w // 6, h // 6, w * 5 // 6, h * 5 // 6), fill=(220, 30, 30))
    d.rectangle((0, h - 12, w // 2, h - 1), fill=(30, 160, 60))
    return im


INIT = picture()


@pytest.fixture(scope="module")
def env(tmp_path_factory, one_thread):
    from modules.app import App

    data = tmp_path_factory.mktemp("script_img2img")
    app = App(cmd_args.parse_args(["--data-dir", str(data), "--ckpt-dir", str(ROOT / "models" / "Stable-diffusion")]))
    app.refresh_models()
    yield app, data
    app.queue.stop()


def request(**kw) -> GenerationRequest:
    return GenerationRequest(**{**SMALL, "init_images": [INIT], "seed": 1, **kw})


def submit(app, **kw):
    job = app.submit(request(**kw))
    job.done_event.wait(300)
    return job


def run(app, **kw):
    job = submit(app, **kw)
    assert job.status == "done", job.error
    return job


def alone(app, extra_params=None, **kw):
    """One job without a script, saving nothing."""
    return app.process(request(**{"save_images": False, **kw}), extra_params=extra_params)


def params(text: str) -> dict:
    return parse_generation_parameters(text)


# ---------------------------------------------------------------------------
# tiles


def test_split_positions_and_identity():
    rng = np.random.default_rng(3)
    im = Image.fromarray(rng.integers(0, 256, (100, 150, 3), dtype=np.uint8), "RGB")
    grid = tiles.split_grid(im, 64, 64, 16)
    # A1111: ceil((150 - 16) / 48) = 3 columns 43 apart, ceil((100 - 16) / 48) = 2 rows 36 apart
    assert grid.positions() == [(0, 0), (43, 0), (86, 0), (0, 36), (43, 36), (86, 36)]
    assert (grid.tile_w, grid.tile_h, grid.image_w, grid.image_h, grid.overlap) == (64, 64, 150, 100, 16)
    assert [(y, h, [(x, w) for x, w, _ in row]) for y, h, row in grid.tiles] == \
        [(0, 64, [(0, 64), (43, 64), (86, 64)]), (36, 64, [(0, 64), (43, 64), (86, 64)])]
    for y, _, row in grid.tiles:
        for x, _, tile in row:
            assert same(tile, im.crop((x, y, x + 64, y + 64)))
    assert same(tiles.combine_grid(grid), im)
    # no overlap, and a picture no bigger than a tile: still the identity
    for ov, size in ((0, (150, 100)), (16, (64, 64)), (32, (128, 64))):
        pic = im.crop((0, 0, *size))
        assert same(tiles.combine_grid(tiles.split_grid(pic, 64, 64, ov)), pic)
    assert tiles.split_grid(im.crop((0, 0, 128, 64)), 64, 64, 32).positions() == [(0, 0), (32, 0), (64, 0)]
    with pytest.raises(ValueError, match="overlap 64"):
        tiles.split_grid(im, 64, 64, 64)


def test_combine_blends_linearly_across_the_overlap():
    grid = tiles.split_grid(Image.new("RGB", (150, 100)), 64, 64, 16)
    for r, (_, _, row) in enumerate(grid.tiles):
        for c, cell in enumerate(row):
            cell[2] = Image.new("RGB", (64, 64), (255 * (c % 2), 255 * r, 0))
    out = arr(tiles.combine_grid(grid))
    ramp = [int(i * 255 / 16) for i in range(16)]   # A1111's mask: i * 255 / overlap, as uint8
    # row 0: tile 1 (red 255) over tile 0 (red 0) from x=43, then tile 2 (0) over tile 1 from x=86
    assert out[10, 43:59, 0].tolist() == ramp
    assert out[10, 59:86, 0].tolist() == [255] * 27 and out[10, :43, 0].tolist() == [0] * 43
    assert out[10, 86:102, 0].tolist() == [255 - v for v in ramp]
    # rows: the second row (green 255) over the first from y=36
    assert out[36:52, 10, 1].tolist() == ramp and out[52:, 10, 1].tolist() == [255] * 48


# ---------------------------------------------------------------------------
# SD upscale


def test_upscale_sizes_and_batches(env, monkeypatch):
    app, _ = env
    mod = script_module(app, "sd upscale")
    im = picture(100, 60)
    # A1111: the upscaler to the scaled size, then Lanczos down to multiples of 8
    want = im.resize((150, 90), Image.LANCZOS).resize((144, 88), Image.LANCZOS)
    assert same(mod.upscale(im, "Lanczos", 1.5), want)
    assert same(mod.upscale(im, "Nearest", 2.0), im.resize((200, 120), Image.NEAREST))
    assert mod.upscale(im, "None", 3.0) is im
    # one img2img job per batch_size tiles, the seed one up per job
    assert mod.tile_batches(9, 2, 10) == [(0, 2, 10), (2, 2, 11), (4, 2, 12), (6, 2, 13), (8, 1, 14)]
    assert mod.tile_batches(4, 1, 5) == [(0, 1, 5), (1, 1, 6), (2, 1, 7), (3, 1, 8)]
    # the upscaler choices are read when asked: one added later is listed and accepted
    arg = [a for a in app.scripts.find("sd upscale").args(True) if a.name == "upscaler_index"][0]
    assert arg.choice_list(app, True) == ["None", "Lanczos", "Nearest"]
    monkeypatch.setattr(upscalers, "IMAGE_UPSCALERS", ("None", "Lanczos", "Nearest", "ESRGAN_4x"))
    assert arg.choice_list(app, True)[-1] == "ESRGAN_4x" and arg.coerce(3, app, True) == "ESRGAN_4x"


def test_sd_upscale_tiles_each_equal_their_job_alone(env):
    app, data = env
    before = files(data, "img2img-images")
    job = run(app, script_name="SD upscale", script_args=["", 16, "Lanczos", 2.0])
    res = job.result
    assert [im.size for im in res.images] == [(128, 128)] and res.info["index_of_first_image"] == 0
    # 128 = 64 + 2 x 32: 3 x 3 tiles of 64x64, one job each
    assert job.control.script_jobs == (9, 9)
    # by hand: the same upscale, the same tiles, each tile alone with seed 1 + its index
    grid = tiles.split_grid(INIT.resize((128, 128), Image.LANCZOS), 64, 64, 16)
    assert len(grid.positions()) == 9
    extra = {"SD upscale overlap": 16, "SD upscale upscaler": "Lanczos"}
    k = 0
    first = None
    for _, _, row in grid.tiles:
        for cell in row:
            r = alone(app, extra, init_images=[cell[2]], seed=1 + k)
            first = first or r
            cell[2] = r.images[0]
            k += 1
    assert same(res.images[0], tiles.combine_grid(grid))
    # the first tile's infotext (A1111's), with the script's two parameters
    assert res.infotexts == [first.infotexts[0]] and res.seeds == [1]
    p = params(res.infotexts[0])
    assert (p["SD upscale overlap"], p["SD upscale upscaler"]) == ("16", "Lanczos")
    assert (p["Size-1"], p["Size-2"], p["Seed"], p["Denoising strength"]) == ("64", "64", "1", "0.5")
    new = files(data, "img2img-images") - before
    assert len(new) == 1 and res.saved_files == [str(next(iter(new)))]
    saved = Image.open(next(iter(new)))
    assert same(saved, res.images[0]) and saved.info["parameters"] == res.infotexts[0]


def test_sd_upscale_a1111_request_batches_and_rounds(env):
    """A1111 clients' ["", 8, "Lanczos", 2.0], the upscaler also by index: the same arguments; two
    rounds of tiles two at a time, round n from seed + n."""
    app, data = env
    for given in ("Lanczos", 1, "lanczos"):
        req = request(script_name="sd upscale", script_args=["", 8, given, 2.0])
        app.scripts.prepare(req)
        assert req.script_name == "SD upscale"
        assert dict(req.script_args) == {"overlap": 8, "upscaler_index": "Lanczos", "scale_factor": 2.0}
    before = files(data, "img2img-images")
    job = run(app, script_name="sd upscale", script_args=["", 8, 1, 2.0], seed=5, n_iter=2, batch_size=2)
    res = job.result
    assert [im.size for im in res.images] == [(128, 128)] * 2 and res.seeds == [5, 6]
    # ceil((128 - 8) / 56) = 3 columns and rows: 9 tiles, 5 jobs of two a round
    assert job.control.script_jobs == (10, 10)
    assert len(set(res.infotexts)) == 1 and params(res.infotexts[0])["Seed"] == "5"
    assert len(files(data, "img2img-images") - before) == 2
    # round 1 by hand: tiles 2i, 2i+1 in one job of seed 6 + i
    grid = tiles.split_grid(INIT.resize((128, 128), Image.LANCZOS), 64, 64, 8)
    cells = [cell for _, _, row in grid.tiles for cell in row]
    extra = {"SD upscale overlap": 8, "SD upscale upscaler": "Lanczos"}
    for i in range(5):
        batch = cells[2 * i:2 * i + 2]
        r = alone(app, extra, init_images=[c[2] for c in batch], seed=6 + i, batch_size=len(batch),
                  do_not_save_grid=True)
        for c, pic in zip(batch, r.images):
            c[2] = pic
    assert same(res.images[1], tiles.combine_grid(grid))
    assert not same(res.images[0], res.images[1])


def test_sd_upscale_none_keeps_the_size(env):
    app, _ = env
    res = run(app, script_name="sd upscale", script_args=["", 16, "None", 3.0], save_images=False).result
    want = alone(app, extra_params={"SD upscale overlap": 16, "SD upscale upscaler": "None"})
    assert [im.size for im in res.images] == [(64, 64)]
    assert same(res.images[0], want.images[0]) and res.infotexts == want.infotexts


# ---------------------------------------------------------------------------
# Outpainting mk2


def test_matched_noise(env):
    app, _ = env
    mod = script_module(app, "outpainting mk2")
    a = mod.match_histograms(np.array([[3.0], [1.0], [2.0], [2.0]]), np.array([[10.0], [20.0], [30.0], [40.0]]))
    assert a[:, 0].tolist() == [40.0, 10.0, 30.0, 30.0]
    src = np.zeros((64, 96, 3))
    src[:, 32:] = np.random.default_rng(1).random((64, 64, 3)) * [0.5, 0.8, 0.3] + [0.4, 0.1, 0.2]
    mask = np.zeros_like(src)
    mask[:, :32] = 1.0
    out = mod.matched_noise(src.copy(), mask, 1.0, 0.05)
    assert np.array_equal(out, mod.matched_noise(src.copy(), mask, 1.0, 0.05))   # seed 0: always the same
    assert np.array_equal(out[:, 32:], src[:, 32:])
    new, ref = out[:, :32].reshape(-1, 3), src[:, 32:].reshape(-1, 3)
    assert new.std(axis=0).min() > 0.05   # noise, not a flat colour
    for c in range(3):   # coloured like the picture: its histogram (range, quantiles)
        assert ref[:, c].min() <= new[:, c].min() and new[:, c].max() <= ref[:, c].max()
        assert np.abs(np.quantile(new[:, c], [0.1, 0.5, 0.9]) - np.quantile(ref[:, c], [0.1, 0.5, 0.9])).max() < 0.02


def test_outpainting_mk2_left_right(env):
    app, data = env
    before = files(data, "img2img-images")
    # A1111's order: info, pixels, mask_blur, direction, noise_q, color_variation
    job = run(app, script_name="outpainting mk2", script_args=["", 32, 1, ["left", "right"], 1.0, 0.05])
    res = job.result
    mod = script_module(app, "outpainting mk2")
    assert [im.size for im in res.images] == [(128, 64)] and job.control.script_jobs == (2, 2)
    out, orig = arr(res.images[0]), arr(INIT)
    # the original keeps its place where the mask (blurred 4 px) leaves it alone
    assert np.abs(out[:, 48:80] - orig[:, 16:48]).max() <= 1
    assert np.abs(out[:, :24] - orig[:, :1]).mean() > 10   # the new strips are painted
    # the first job by hand: the canvas grown 32 px left, matched noise, the left 64 px inpainted
    canvas = Image.new("RGB", (128, 64))
    canvas.paste(INIT, (32, 0))
    mask = Image.new("L", (128, 64), 255)
    ImageDraw.Draw(mask).rectangle((33, 0, 96, 64), fill=0)
    np_mask = np.repeat((np.asarray(mask) / 255.0)[:, :, None], 3, axis=2)
    noised = mod.matched_noise(np.asarray(canvas) / 255.0, np_mask, 1.0, 0.05)
    noised = Image.fromarray(np.clip(noised * 255.0, 0, 255).astype(np.uint8), "RGB")
    r = alone(app, {"Mask blur": None}, init_images=[noised.crop((0, 0, 64, 64))], mask=mask.crop((0, 0, 64, 64)),
              mask_blur=4, inpainting_fill=1)
    assert same(res.images[0].crop((0, 0, 64, 64)), r.images[0])
    # every picture has the first job's infotext; with one axis A1111 writes no "Mask blur"
    assert res.infotexts == r.infotexts and res.seeds == [1]
    p = params(res.infotexts[0])
    assert "Mask blur" not in p and (p["Size-1"], p["Size-2"], p["Seed"]) == ("64", "64", "1")
    assert len(files(data, "img2img-images") - before) == 1


def test_outpainting_mk2_all_sides_batch(env):
    app, data = env
    before = files(data, "img2img-images")
    job = run(app, script_name="outpainting mk2", script_args=["", 32, 1, ["left", "right", "up", "down"], 1.0, 0.05],
              batch_size=2, seed=3)
    res = job.result
    # a grid of the two pictures first (index_of_first_image 1), each grown to 128x128
    assert [im.size for im in res.images] == [(256, 128), (128, 128), (128, 128)]
    assert res.info["index_of_first_image"] == 1 and res.seeds == [3, 3, 4]
    assert same(res.images[0].crop((0, 0, 128, 128)), res.images[1])
    assert not same(res.images[1], res.images[2])
    assert job.control.script_jobs == (4, 4)
    assert len(set(res.infotexts)) == 1 and params(res.infotexts[0])["Mask blur"] == "4"
    assert np.abs(arr(res.images[1])[48:80, 48:80] - arr(INIT)[16:48, 16:48]).max() <= 1
    grids = set((data / "outputs" / "img2img-grids").rglob("*.png"))
    assert len(files(data, "img2img-images") - before) == 2 and len(grids) == 1


# ---------------------------------------------------------------------------
# Poor man's outpainting


def test_poor_mans_outpainting_left_right(env):
    app, data = env
    before = files(data, "img2img-images")
    # A1111's order: pixels, mask_blur, inpainting_fill (index), direction
    job = run(app, script_name="poor man's outpainting", script_args=[32, 2, 0, ["left", "right"]], seed=7)
    res = job.result
    assert [im.size for im in res.images] == [(128, 64)]
    # tiles at x = 0, 32, 64: the middle one lies inside the original and is not run
    assert job.control.script_jobs == (2, 2)
    assert np.abs(arr(res.images[0])[:, 48:80] - arr(INIT)[:, 16:48]).max() <= 1
    # by hand: the canvas and mask cut the same way, the border tiles run with seeds 7, 8
    canvas = Image.new("RGB", (128, 64))
    canvas.paste(INIT, (32, 0))
    mask = Image.new("L", (128, 64), 255)
    ImageDraw.Draw(mask).rectangle((36, 0, 92, 64), fill=0)
    grid, grid_mask = tiles.split_grid(canvas, 64, 64, 32), tiles.split_grid(mask, 64, 64, 32)
    row, mrow = grid.tiles[0][2], grid_mask.tiles[0][2]
    first = None
    for i, k in enumerate((0, 2)):
        r = alone(app, init_images=[row[k][2]], mask=mrow[k][2], mask_blur=4, inpainting_fill=0, seed=7 + i)
        first = first or r
        row[k][2] = r.images[0]
    assert same(res.images[0], tiles.combine_grid(grid))
    assert res.infotexts == [first.infotexts[0]] and res.seeds == [7]
    p = params(res.infotexts[0])
    assert (p["Mask blur"], p["Seed"], p["Size-1"]) == ("4", "7", "64")
    assert len(files(data, "img2img-images") - before) == 1


def test_poor_mans_arguments(env):
    app, _ = env
    req = request(script_name="Poor man's outpainting", script_args=[32, 2, 1, "up"])
    app.scripts.prepare(req)
    assert dict(req.script_args) == {"pixels": 32, "mask_blur": 2, "inpainting_fill": "original", "direction": ["up"]}
    req = request(script_name="poor man's outpainting", script_args=[])
    app.scripts.prepare(req)
    assert dict(req.script_args) == {"pixels": 128, "mask_blur": 4, "inpainting_fill": "fill",
                                     "direction": ["left", "right", "up", "down"]}


# ---------------------------------------------------------------------------
# listing and errors


def test_listed_for_img2img_only(env):
    app, _ = env
    names = app.scripts.api_list()
    for name in ("sd upscale", "outpainting mk2", "poor man's outpainting"):
        assert name in names["img2img"] and name not in names["txt2img"]
    with pytest.raises(RequestError, match="script 'sd upscale' not found for txt2img"):
        app.submit(GenerationRequest(**{**SMALL, "mode": "txt2img"}, script_name="sd upscale"))
    info = {(s["name"], s["is_img2img"]): s for s in app.scripts.api_info()}
    up = info[("sd upscale", True)]["args"]
    assert [a["label"] for a in up] == ["", "Tile overlap", "Upscaler", "Scale Factor"]
    assert up[2]["choices"] == ["None", "Lanczos", "Nearest"]
    assert [a["label"] for a in info[("outpainting mk2", True)]["args"]] == \
        ["", "Pixels to expand", "Mask blur", "Outpainting direction", "Fall-off exponent (lower=higher detail)",
         "Color variation"]


@pytest.mark.parametrize("name,args,field,words", [
    ("sd upscale", ["", 16, "ESRGAN_4x", 2.0], "script_args[2] (upscaler_index)",
     ("SD upscale", "Upscaler", "ESRGAN_4x")),
    ("sd upscale", ["", 16, 7, 2.0], "script_args[2] (upscaler_index)", ("SD upscale", "Upscaler", "index 7")),
    ("sd upscale", ["", 16, "Lanczos", 5.0], "script_args[3] (scale_factor)",
     ("SD upscale", "Scale Factor", "at most 4")),
    ("sd upscale", ["", 300, "Lanczos", 2.0], "script_args[1] (overlap)",
     ("SD upscale", "Tile overlap", "at most 256")),
    ("outpainting mk2", ["", 300, 8, ["left"], 1.0, 0.05], "script_args[1] (pixels)",
     ("Outpainting mk2", "Pixels to expand", "at most 256")),
    ("outpainting mk2", ["", 32, 8, ["sideways"], 1.0, 0.05], "script_args[3] (direction)",
     ("Outpainting mk2", "Outpainting direction", "sideways")),
    ("poor man's outpainting", [4, 4, 0, ["left"]], "script_args[0] (pixels)",
     ("Poor man's outpainting", "Pixels to expand", "at least 8")),
    ("poor man's outpainting", [32, 4, "blur", ["left"]], "script_args[2] (inpainting_fill)",
     ("Poor man's outpainting", "Masked content", "blur")),
])
def test_bad_arguments_refused_at_submit(env, name, args, field, words):
    app, _ = env
    with pytest.raises(RequestError) as e:
        app.submit(request(script_name=name, script_args=args))
    assert e.value.field == field
    for w in words:
        assert w in str(e.value)


def test_tiles_larger_than_the_overlap_needed(env):
    """An overlap (pixels) that leaves no room between tiles fails the job, naming the argument."""
    app, _ = env
    job = submit(app, script_name="sd upscale", script_args=["", 64, "Lanczos", 2.0])
    assert job.status == "failed" and "Tile overlap" in job.error and "64x64" in job.error
    job = submit(app, script_name="poor man's outpainting", script_args=[64, 4, 0, ["left"]])
    assert job.status == "failed" and "Pixels to expand" in job.error
    job = submit(app, script_name="outpainting mk2", script_args=["", 32, 8, [], 1.0, 0.05])
    assert job.status == "failed" and "Outpainting direction" in job.error
