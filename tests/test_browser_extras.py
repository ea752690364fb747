"""The Extras tab in a real browser (Playwright + Debian's /usr/bin/chromium) against the real server: Generate
without a picture is an error box; a picture uploaded, "R-ESRGAN 4x+" (a tiny random-weight file written
before the server starts) as Upscaler 1, Generate: the gallery shows the 4x picture and the file is in
outputs/extras-images; Send to img2img and PNG Info's Send to extras move pictures between the tabs; the
same upscale in Chinese with the tab and its buttons translated.
Screenshots: test-output/extras_en.png, test-output/extras_zh.png.  Skipped without /usr/bin/chromium."""
from __future__ import annotations

import json
import time

import pytest
from PIL import Image

from modules.paths import ROOT
from tests.browser_support import open_page, require_chromium, tiny_model_server
from tests.test_extras_ui import noise, png_with_params, write_tiny_realesrgan

OUT = ROOT / "test-output"
ZH = json.loads((ROOT / "localizations" / "zh_CN.json").read_text(encoding="utf-8"))

require_chromium()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("extras-browser")
    write_tiny_realesrgan(data / "models" / "RealESRGAN" / "RealESRGAN_x4plus.pth")
    with tiny_model_server(data) as (url, core):
        core.opts.set("localization", "None")
        yield url, core, data
        core.opts.set("localization", "None")


def extras_files(data) -> list:
    # not the temp file a save writes before it renames it into place
    return sorted(p for p in (data / "outputs" / "extras-images").glob("*.png") if not p.name.startswith("."))


def pick(page, selector, option):
    page.locator(f"{selector} input[role=combobox]").first.click()
    page.get_by_role("option", name=option, exact=True).first.click()
    page.wait_for_function("([sel, v]) => document.querySelector(sel + ' input[role=combobox]').value === v",
                           arg=[selector, option])


def upload(page, selector, path):
    page.locator(f"{selector} input[type=file]").first.set_input_files(str(path))
    page.locator(f"{selector} img").first.wait_for(state="visible")


def output_size(page) -> tuple[int, int]:
    """The natural size of the gallery's (first) picture, once it has loaded."""
    page.wait_for_function("""() => { const i = document.querySelector('#extras_gallery img');
        return !!i && i.complete && i.naturalWidth > 0; }""", timeout=180_000)
    return tuple(page.evaluate("""() => { const i = document.querySelector('#extras_gallery img');
        return [i.naturalWidth, i.naturalHeight]; }"""))


def wait_for_new_file(data, before: list, timeout: float = 180):
    """The file that appeared in outputs/extras-images since `before` (extras_files' list then)."""
    deadline = time.time() + timeout
    while not (new := sorted(set(extras_files(data)) - set(before))):
        assert time.time() < deadline, "no file in outputs/extras-images"
        time.sleep(0.3)
    assert len(new) == 1, new
    return new[0]


def upscale_on_page(page, data, src):
    """Upload `src`, R-ESRGAN 4x+ (Scale by 4, the default), Generate; returns the new file."""
    before = extras_files(data)
    upload(page, "#extras_image", src)
    pick(page, "#extras_upscaler_1", "R-ESRGAN 4x+")
    page.locator("#extras_generate").click()
    made = wait_for_new_file(data, before)
    assert output_size(page) == (64, 48)
    page.wait_for_function("() => document.querySelector('#extras_html_info').innerText.includes('R-ESRGAN 4x+')",
                           timeout=60_000)
    return made


def test_extras_upscale_send_and_chinese(server, browser, tmp_path):
    url, core, data = server
    OUT.mkdir(exist_ok=True)
    src = png_with_params(tmp_path / "source.png", noise((16, 12), seed=3))
    ctx, page, errors = open_page(browser, url, height=1100)
    page.locator("#tab_extras-button").click()
    page.locator("#extras_generate").wait_for(state="visible")

    # nothing uploaded: an error box, no traceback
    page.locator("#extras_generate").click()
    page.locator("#extras_html_info .sdw-error").wait_for(state="visible", timeout=60_000)
    assert "Upload a picture" in page.locator("#extras_html_info").inner_text()

    made = upscale_on_page(page, data, src)
    with Image.open(made) as im:
        assert im.size == (64, 48)
        assert im.text["extras"] == "Postprocess upscale by: 4, Postprocess upscaler: R-ESRGAN 4x+"
        assert im.text["parameters"].startswith("a red fox")
    assert page.locator("#extras_html_info .sdw-error").count() == 0
    page.wait_for_timeout(500)
    page.screenshot(path=str(OUT / "extras_en.png"), full_page=True)

    # the result to img2img
    page.locator("#extras_send_to_img2img").click()
    page.wait_for_function("() => document.querySelector('#tab_img2img-button').getAttribute('aria-selected') === 'true'")
    page.locator("#img2img_image img").first.wait_for(state="visible")
    size = page.evaluate("""() => { const i = document.querySelector('#img2img_image img');
        return [i.naturalWidth, i.naturalHeight]; }""")
    assert size == [64, 48]

    # PNG Info -> Send to extras: the picture in the Single Image input, the Extras tab shown
    page.locator("#tab_pnginfo-button").click()
    upload(page, "#pnginfo_image", tmp_path / "source.png")
    page.locator("#pnginfo_send_to_extras").click()
    page.wait_for_function("() => document.querySelector('#tab_extras-button').getAttribute('aria-selected') === 'true'")
    page.wait_for_function("""() => { const i = document.querySelector('#extras_image img');
        return !!i && i.complete && i.naturalWidth === 16 && i.naturalHeight === 12; }""")
    assert errors == []
    ctx.close()

    # the same in Chinese
    core.opts.set("localization", "zh_CN")
    try:
        ctx, page, errors = open_page(browser, url, height=1100)
        tab = page.get_by_role("tab", name=ZH["Extras"], exact=True).first
        tab.wait_for(state="visible")
        tab.click()
        generate = page.locator("#extras_generate")
        generate.wait_for(state="visible")
        page.wait_for_function("([t]) => document.querySelector('#extras_generate').innerText.trim() === t",
                               arg=[ZH["Generate"]])
        for english in ("Single Image", "Batch Process", "Batch from Directory", "Scale by", "Scale to",
                        "Upscaler 1", "Upscaler 2", "Send to img2img"):
            assert page.get_by_text(ZH[english], exact=True).count() > 0, english
        upscale_on_page(page, data, src)
        page.wait_for_timeout(800)
        page.screenshot(path=str(OUT / "extras_zh.png"), full_page=True)
        assert errors == []
        ctx.close()
    finally:
        core.opts.set("localization", "None")


def set_number(page, elem, value):
    box = page.locator(f"#{elem} input[type=number]")
    box.fill(str(value))
    box.press("Enter")


def test_scale_to_and_batch_from_directory(server, browser, tmp_path):
    """The sub-tabs pick what Generate does: Scale to 96x96 with the crop (Lanczos), then a folder into an
    output folder, with the result pictures not shown."""
    url, core, data = server
    src = png_with_params(tmp_path / "wide.png", noise((20, 10), seed=4))
    ctx, page, errors = open_page(browser, url, height=1100)
    page.locator("#tab_extras-button").click()
    upload(page, "#extras_image", src)
    page.locator("#extras_scale_to_tab-button").click()
    set_number(page, "extras_upscaling_resize_w", 96)
    set_number(page, "extras_upscaling_resize_h", 96)
    pick(page, "#extras_upscaler_1", "Lanczos")
    before = extras_files(data)
    page.locator("#extras_generate").click()
    wait_for_new_file(data, before)
    assert output_size(page) == (96, 96)
    page.wait_for_function("() => document.querySelector('#extras_html_info').innerText.includes('crop to: 96x96')")

    # Batch Process: two uploads, saved under their own names
    a = png_with_params(tmp_path / "first.png", noise((8, 16), seed=5))
    b = png_with_params(tmp_path / "second.png", noise((16, 8), seed=6))
    page.locator("#extras_batch_process_tab-button").click()
    page.locator("#extras_image_batch input[type=file]").first.set_input_files([str(a), str(b)])
    page.wait_for_function("() => document.querySelectorAll('#extras_image_batch tr.file').length === 2")
    page.locator("#extras_generate").click()
    page.wait_for_function("() => document.querySelector('#extras_html_info').innerText.includes('Pictures written: 2')",
                           timeout=120_000)
    for name in ("first.png", "second.png"):
        with Image.open(data / "outputs" / "extras-images" / name) as im:
            assert im.size == (96, 96) and im.text["parameters"].startswith("a red fox")
    page.locator("#extras_gallery img").nth(1).wait_for(state="attached")

    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    for i in range(2):
        noise((8, 8), seed=i).save(folder / f"p{i}.png")
    page.locator("#extras_batch_directory_tab-button").click()
    page.locator("#extras_batch_input_dir textarea, #extras_batch_input_dir input").first.fill(str(folder))
    page.locator("#extras_batch_output_dir textarea, #extras_batch_output_dir input").first.fill(str(out))
    page.locator("#extras_show_extras_results input[type=checkbox]").uncheck()
    page.locator("#extras_scale_by_tab-button").click()
    set_number(page, "extras_upscaling_resize", 2)
    page.locator("#extras_generate").click()
    page.wait_for_function("([o]) => document.querySelector('#extras_html_info').innerText.includes(o)", arg=[str(out)],
                           timeout=120_000)
    assert "Pictures written: 2" in page.locator("#extras_html_info").inner_text()
    assert page.locator("#extras_gallery img").count() == 0      # "Show result images" off
    assert sorted(p.name for p in out.iterdir()) == ["p0.png", "p1.png"]
    for p in out.iterdir():
        with Image.open(p) as im:
            assert im.size == (16, 16)
    page.wait_for_timeout(500)
    page.screenshot(path=str(OUT / "extras_batch_dir.png"), full_page=True)
    assert errors == []
    ctx.close()


def test_txt2img_send_to_extras_keeps_the_parameters(server, browser):
    """A generated picture sent to Extras and enlarged there: the saved file still has the txt2img recipe."""
    url, core, data = server
    ctx, page, errors = open_page(browser, url, height=1100)
    page.locator("#txt2img_prompt textarea").fill("a blue bird")
    for dim in ("width", "height"):
        set_number(page, f"txt2img_{dim}", 64)
    set_number(page, "txt2img_steps", 3)
    page.locator("#txt2img_generate").click()
    page.wait_for_function("() => document.querySelector('#txt2img_generation_info').innerText.includes('Steps: 3')",
                           timeout=180_000)
    page.locator("#txt2img_send_to_extras").click()
    page.wait_for_function("() => document.querySelector('#tab_extras-button').getAttribute('aria-selected') === 'true'")
    page.wait_for_function("""() => { const i = document.querySelector('#extras_image img');
        return !!i && i.complete && i.naturalWidth === 64; }""")
    page.locator("#extras_single_tab-button").wait_for(state="visible")
    pick(page, "#extras_upscaler_1", "Nearest")
    page.locator("#extras_scale_by_tab-button").click()
    set_number(page, "extras_upscaling_resize", 1.5)
    before = extras_files(data)
    page.locator("#extras_generate").click()
    made = wait_for_new_file(data, before)
    assert output_size(page) == (96, 96)
    with Image.open(made) as im:
        assert im.text["parameters"].startswith("a blue bird\n") and "Steps: 3" in im.text["parameters"]
        assert im.text["extras"] == "Postprocess upscale by: 1.5, Postprocess upscaler: Nearest"
    assert errors == []
    ctx.close()
