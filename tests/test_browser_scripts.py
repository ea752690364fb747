"""The X/Y/Z plot as a user makes it, in a real browser, on the shipped default model (sd-shapes-64):
pick the script, samplers on X (from the values dropdown), CFG scale on Y (typed), Generate; the
gallery shows a labelled grid; the same in the Chinese UI.  Screenshots go to test-output/.

Needs Debian's /usr/bin/chromium (skipped without it)."""
from __future__ import annotations

import io
import json
import time

import numpy as np
import pytest
from PIL import Image

from modules.paths import ROOT
from tests.browser_support import open_page, require_chromium, serve

OUT = ROOT / "test-output"
MODEL = ROOT / "models" / "Stable-diffusion" / "sd-shapes-64.safetensors"
ZH = json.loads((ROOT / "localizations" / "zh_CN.json").read_text(encoding="utf-8"))
XYZ = "#txt2img_script_x_y_z_plot"

require_chromium("chromium fonts-noto-cjk")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import webui
    from modules import cmd_args
    from modules.app import App

    data = tmp_path_factory.mktemp("scripts-browser")
    core = App(cmd_args.parse_args(["--data-dir", str(data), "--ckpt-dir", str(MODEL.parent), "--skip-install"]))
    core.opts.set("localization", "None")
    core.refresh_models()
    core.load_model()
    assert core.models.loaded.info.title.startswith("sd-shapes-64")
    with serve(webui.create_server(core)) as url:
        yield url, core, data
    core.queue.stop()


def pick(pg, selector, option):
    box = pg.locator(f"{selector} input[role=combobox]").first
    box.click()
    pg.get_by_role("option", name=option, exact=True).first.click()
    pg.wait_for_timeout(300)


def set_number(pg, elem, value):
    box = pg.locator(f"#{elem} input[type=number]")
    box.fill(str(value))
    box.press("Enter")


def make_plot(pg, texts):
    """Script, axes and the job's size through the page, in the page's language ``texts``."""
    T = lambda s: texts.get(s, s)  # noqa: E731
    pick(pg, "#txt2img_script_list", T("X/Y/Z plot"))
    pg.locator(XYZ).first.wait_for(state="visible")  # (gradio repeats a group's id on its inner div)
    pick(pg, f"{XYZ}_x_type", T("Sampler"))
    dd = f"{XYZ}_x_values_dropdown"
    pg.locator(dd).wait_for(state="visible")
    assert not pg.locator(f"{XYZ}_x_values").is_visible()  # a sampler axis offers its choices
    for sampler in ("Euler a", "DDIM"):
        pg.locator(f"{dd} input[role=combobox]").click()
        pg.get_by_role("option", name=sampler, exact=True).first.click()
        pg.wait_for_timeout(200)
    pg.keyboard.press("Escape")
    pick(pg, f"{XYZ}_y_type", T("CFG Scale"))
    pg.locator(f"{XYZ}_y_values textarea, {XYZ}_y_values input").first.fill("3, 7")
    pg.locator("#txt2img_prompt textarea").fill("a large red circle in the center, white background")
    set_number(pg, "txt2img_steps", 10)
    set_number(pg, "txt2img_seed", 11)
    for dim in ("width", "height"):
        set_number(pg, f"txt2img_{dim}", 64)


def axis(pg, n):
    """(type, typed values or None when hidden, the dropdown's text or None when hidden) of an axis."""
    kind = pg.locator(f"{XYZ}_{n}_type input[role=combobox]").first.input_value()
    text = pg.locator(f"{XYZ}_{n}_values textarea, {XYZ}_{n}_values input").first
    dd = pg.locator(f"{XYZ}_{n}_values_dropdown")
    return (kind, text.input_value() if text.is_visible() else None,
            dd.inner_text() if dd.is_visible() else None)


def settled(check, timeout_s=30):
    """Poll ``check`` (which asserts) until it passes; the page's change events take a round trip each."""
    deadline = time.time() + timeout_s
    while True:
        try:
            return check()
        except AssertionError:
            if time.time() > deadline:
                raise
            time.sleep(0.2)


def swap_and_back(pg, texts):
    """Swap X/Y moves type, values and the dropdown's choices across; swapping again restores them."""
    T = lambda s: texts.get(s, s)  # noqa: E731

    def swapped():
        x, y = axis(pg, "x"), axis(pg, "y")
        assert (x[0], x[1], x[2]) == (T("CFG Scale"), "3, 7", None)
        assert y[0] == T("Sampler") and y[1] is None and "Euler a" in y[2] and "DDIM" in y[2]
        assert pg.locator(f"{XYZ}_fill_y").is_visible() and not pg.locator(f"{XYZ}_fill_x").is_visible()

    def back():
        x, y = axis(pg, "x"), axis(pg, "y")
        assert x[0] == T("Sampler") and x[1] is None and "Euler a" in x[2] and "DDIM" in x[2]
        assert (y[0], y[1], y[2]) == (T("CFG Scale"), "3, 7", None)
        assert pg.locator(f"{XYZ}_fill_x").is_visible() and not pg.locator(f"{XYZ}_fill_y").is_visible()

    pg.locator(f"{XYZ}_swap_xy").click()
    settled(swapped)
    pg.wait_for_timeout(500)   # and it stays so (no late event undoes it)
    swapped()
    pg.locator(f"{XYZ}_swap_xy").click()
    settled(back)
    pg.wait_for_timeout(500)
    back()


def wait_done(pg, timeout_s=240):
    pg.locator("#txt2img_gallery img").first.wait_for(state="visible", timeout=timeout_s * 1000)
    deadline = time.time() + timeout_s
    while "Script: X/Y/Z plot" not in pg.locator("#txt2img_generation_info").inner_text():
        assert time.time() < deadline
        time.sleep(0.2)


def grid_png(data):
    files = sorted((data / "outputs" / "txt2img-grids").rglob("*.png"), key=lambda p: p.stat().st_mtime)
    assert files, "no grid written"
    return files[-1]


def check_grid(core, path):
    from modules import engine

    im = Image.open(path)
    im.load()
    info = im.info["parameters"]
    # picked from the dropdown, the values are written as A1111's csv writer joins them (no space)
    assert 'X Type: Sampler, X Values: "Euler a,DDIM", Y Type: CFG Scale, Y Values: "3, 7"' in info
    left, top = im.width - 128, im.height - 128
    assert left > 0 and top > 0
    a = np.asarray(im.convert("L"))
    assert (a[:top, left:] < 128).any() and (a[top:, :left] < 128).any()  # label text in both bands
    # the bottom right cell is DDIM at CFG 7: the same as that job run alone
    req = engine.GenerationRequest(prompt="a large red circle in the center, white background", steps=10, seed=11,
                                   width=64, height=64, sampler_name="DDIM", cfg_scale=7, save_images=False)
    with core.models.lock:
        alone = core.process(req).images[0]
    assert np.array_equal(np.asarray(im.convert("RGB"))[top + 64:, left + 64:], np.asarray(alone.convert("RGB")))
    return im


def test_xyz_plot_in_english_and_chinese(server, browser):
    url, core, data = server
    OUT.mkdir(exist_ok=True)
    ctx, pg, errors = open_page(browser, url, height=1200)

    make_plot(pg, {})
    swap_and_back(pg, {})
    t0 = time.time()
    pg.locator("#txt2img_generate").click()
    wait_done(pg)
    print(f"X/Y/Z plot 2x2 cells, 10 steps, from the page: {time.time() - t0:.1f} s")
    pg.wait_for_timeout(500)
    pg.screenshot(path=str(OUT / "xyz_plot_en.png"), full_page=True)
    check_grid(core, grid_png(data))
    shown = pg.locator("#txt2img_gallery img").first
    src = shown.get_attribute("src")
    body = pg.request.get(src if src.startswith("http") else url.rstrip("/") + src).body()
    assert Image.open(io.BytesIO(body)).size == Image.open(grid_png(data)).size  # the gallery shows the grid
    # ... whole: the picture's box lies inside the gallery's (no scrolling to see the bottom row)
    assert pg.evaluate("""() => { const g = document.querySelector('#txt2img_gallery').getBoundingClientRect();
        const i = document.querySelector('#txt2img_gallery img').getBoundingClientRect();
        return i.top >= g.top && i.bottom <= g.bottom + 1 && i.right <= g.right + 1; }""")

    # the Chinese UI: same plot, translated labels on the page; the grid's labels are the values
    pg.locator("#language_toggle").get_by_text("简体中文", exact=True).click()
    pg.get_by_role("tab", name="文生图", exact=True).first.wait_for(state="visible", timeout=60_000)
    pg.wait_for_function("() => document.body.dataset.webuiLoaded === 'true'")
    pg.wait_for_timeout(800)
    before = len(list((data / "outputs" / "txt2img-grids").rglob("*.png")))
    make_plot(pg, ZH)
    swap_and_back(pg, ZH)
    assert pg.get_by_text(ZH["Script"], exact=True).count() > 0
    pg.locator("#txt2img_generate").click()
    deadline = time.time() + 240
    while len(list((data / "outputs" / "txt2img-grids").rglob("*.png"))) == before:
        assert time.time() < deadline, "no grid from the Chinese page"
        time.sleep(0.3)
    wait_done(pg)
    pg.wait_for_timeout(800)
    pg.screenshot(path=str(OUT / "xyz_plot_zh.png"), full_page=True)
    check_grid(core, grid_png(data))
    pg.locator("#language_toggle").get_by_text("English", exact=True).click()
    pg.get_by_role("tab", name="txt2img", exact=True).first.wait_for(state="visible", timeout=60_000)
    assert core.opts.get("localization") == "None"
    assert errors == []
    ctx.close()


def test_prompts_from_file_upload_fills_the_list(server, browser, tmp_path):
    """A1111's upload: the file's lines go into the list; a file that is not text is refused with a message
    and the list keeps what it had."""
    url, _, _ = server
    ctx, pg, errors = open_page(browser, url, height=1200)
    pick(pg, "#txt2img_script_list", "Prompts from file or textbox")
    prefix = "#txt2img_script_prompts_from_file_or_textbox"
    box = pg.locator(f"{prefix}_prompt_txt textarea")
    box.wait_for(state="visible")
    good = tmp_path / "prompts.txt"
    good.write_bytes(b'a red circle  \r\n--prompt "a blue square" --steps 4\r\n')
    pg.locator(f"{prefix}_file input[type=file]").set_input_files(str(good))
    pg.wait_for_function(f"() => document.querySelector('{prefix}_prompt_txt textarea').value.includes('blue')")
    assert box.input_value() == 'a red circle\n--prompt "a blue square" --steps 4\n'
    bad = tmp_path / "picture.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00")
    pg.locator(f"{prefix}_file input[type=file]").set_input_files(str(bad))
    message = pg.locator(f"{prefix}_file_error")
    message.wait_for(state="visible")
    assert message.inner_text().strip() == "Upload prompt inputs: the file is not UTF-8 text (byte 0: b'\\x89')"
    assert box.input_value() == 'a red circle\n--prompt "a blue square" --steps 4\n'
    pg.locator(f"{prefix}_file input[type=file]").set_input_files(str(good))   # a good file again clears it
    message.wait_for(state="hidden")
    assert errors == []
    ctx.close()
