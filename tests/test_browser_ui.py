"""The web UI in a real browser (Playwright + Debian's /usr/bin/chromium) against the real server
with a tiny model: generate, interrupt, reload while a job runs, PNG Info -> txt2img, an upload
error, Settings persisting across a restart, two pages queueing at once.

Screenshots of each tab go to test-output/ (git-ignored).  Skipped without /usr/bin/chromium.
"""
from __future__ import annotations

import contextlib
import json
import time

import pytest
from PIL import Image

from modules.paths import ROOT
from tests.browser_support import open_page, require_chromium, tiny_model_server

OUT = ROOT / "test-output"
TIMEOUT_MS = 60_000

require_chromium()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("ui-browser")
    with tiny_model_server(data) as (url, core):
        yield url, core, data


def loaded_page(browser, url):
    _, page, _ = open_page(browser, url, timeout_ms=TIMEOUT_MS)
    assert page.locator("#txt2img_generate").is_visible()
    assert page.locator("#setting_sd_model_checkpoint input").input_value().startswith("tiny.safetensors [")
    return page


def screenshot(page, name):
    OUT.mkdir(exist_ok=True)
    page.screenshot(path=str(OUT / f"ui-{name}.png"), full_page=True)


def set_number(page, elem_id, value):
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")


def set_small(page, tab="txt2img", steps=4, seed=None):
    set_number(page, f"{tab}_width", 64)
    set_number(page, f"{tab}_height", 64)
    set_number(page, f"{tab}_steps", steps)
    if seed is not None:
        seed_box = page.locator(f"#{tab}_seed input")
        seed_box.fill(str(seed))
        seed_box.press("Tab")


def info_text(page, tab="txt2img"):
    return page.locator(f"#{tab}_generation_info").inner_text()


def wait_info(page, needle, tab="txt2img"):
    page.wait_for_function(
        "([id, needle]) => (document.getElementById(id) || {innerText: ''}).innerText.includes(needle)",
        arg=[f"{tab}_generation_info", needle])


def wait_text(page, elem_id, needle, timeout=60000):
    """Wait until the element's text contains `needle`; on timeout, fail showing the text it had."""
    try:
        page.wait_for_function(
            "([id, needle]) => (document.getElementById(id) || {innerText: ''}).innerText.includes(needle)",
            arg=[elem_id, needle], timeout=timeout)
    except Exception:  # noqa: BLE001 - playwright's TimeoutError; say what was there instead
        el = page.locator(f"#{elem_id}")
        shown = el.inner_text() if el.count() else "(no such element)"
        raise AssertionError(f"#{elem_id} never showed {needle!r}; it shows {shown!r}") from None


def outputs(data):
    return sorted((data / "outputs" / "txt2img-images").rglob("*.png"))


# ---------------------------------------------------------------------------


def test_generate_shows_image_and_writes_png(server, browser):
    url, core, data = server
    from modules import images

    before = set(outputs(data))
    page = loaded_page(browser, url)
    page.locator("#txt2img_prompt textarea").fill("a red cat")
    wait_text(page, "txt2img_token_counter", "3/75")
    set_small(page, seed=7)
    page.locator("#txt2img_generate").click()
    wait_info(page, "Seed: 7")
    assert page.locator("#txt2img_gallery img").count() == 1
    text = info_text(page)
    assert text.startswith("a red cat\nSteps: 4, Sampler: DPM++ 2M")
    assert "Size: 64x64" in text
    (new,) = set(outputs(data)) - before
    with Image.open(new) as im:
        assert im.size == (64, 64)
        assert images.read_info_from_image(im)[0].startswith("a red cat\nSteps: 4, Sampler: DPM++ 2M, ")
    screenshot(page, "txt2img")
    # reuse seed puts the seed of the result back into the box
    page.locator("#txt2img_seed input").fill("-1")
    page.locator("#txt2img_reuse_seed").click()
    page.wait_for_function("() => document.querySelector('#txt2img_seed input').value === '7'")
    page.context.close()


def test_send_to_inpaint_and_paint_a_mask(server, browser):
    url, core, data = server
    page = loaded_page(browser, url)
    page.locator("#txt2img_prompt textarea").fill("a boat")
    set_small(page, steps=3, seed=5)
    page.locator("#txt2img_generate").click()
    wait_info(page, "Seed: 5")
    page.locator("#txt2img_send_to_inpaint").click()
    page.wait_for_function("() => (document.querySelector('#img2img_prompt textarea') || {}).value === 'a boat'")
    assert page.locator("#tab_img2img-button").get_attribute("aria-selected") == "true"
    assert page.locator("#img2img_inpaint_tab-button").get_attribute("aria-selected") == "true"
    assert page.locator("#img2img_seed input").input_value() == "5"
    box = page.locator("#img2maskimg canvas").first.bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    # On a busy machine the editor may still be setting up the sent image and drop a stroke; the
    # page then says so ("draw the area to repaint") and the stroke is drawn again.
    for attempt in range(3):
        time.sleep(1.0 + attempt)
        page.mouse.move(cx - 40, cy - 30)
        page.mouse.down()
        for i in range(1, 11):
            page.mouse.move(cx - 40 + 8 * i, cy - 30 + 6 * i)
        page.mouse.up()
        page.locator("#img2img_generate").click()
        page.wait_for_function(
            "() => document.getElementById('img2img_generation_info').innerText.includes('Mask blur')"
            " || document.getElementById('img2img_progress').innerText.includes('draw the area')")
        if "Mask blur: 4" in info_text(page, "img2img"):   # only written when the job had a mask
            break
        screenshot(page, f"inpaint-stroke-lost-{attempt}")
    assert "Mask blur: 4" in info_text(page, "img2img")
    assert info_text(page, "img2img").startswith("a boat\nSteps: 3, ")
    screenshot(page, "inpaint")
    page.context.close()


def test_interrupt_stops_a_long_job(server, browser):
    url, core, data = server
    page = loaded_page(browser, url)
    page.locator("#txt2img_prompt textarea").fill("a very long job")
    set_small(page, steps=150, seed=3)
    set_number(page, "txt2img_batch_count", 3)
    t0 = time.time()
    page.locator("#txt2img_generate").click()
    wait_text(page, "txt2img_progress", "Step ")
    page.locator("#txt2img_interrupt").click()
    wait_info(page, "Interrupted.")
    assert time.time() - t0 < 60
    assert page.locator("#txt2img_gallery img").count() == 1     # the first of 3 images, cut short
    assert "a very long job" in info_text(page)
    page.context.close()


def test_reload_reconnects_to_the_running_job(server, browser):
    url, core, data = server
    page = loaded_page(browser, url)
    page.locator("#txt2img_prompt textarea").fill("survives a reload")
    set_small(page, steps=60, seed=11)
    page.locator("#txt2img_generate").click()
    wait_text(page, "txt2img_progress", "Step ")
    page.reload()
    page.wait_for_selector("#txt2img_generate")
    wait_info(page, "Seed: 11")
    assert info_text(page).startswith("survives a reload\nSteps: 60")
    assert page.locator("#txt2img_gallery img").count() == 1
    page.context.close()


def test_pnginfo_fills_txt2img(server, browser, tmp_path):
    url, core, data = server
    from modules.ui import common

    text = ("a house by the sea\nNegative prompt: blurry\nSteps: 12, Sampler: Euler a, Schedule type: Karras, "
            "CFG scale: 4.5, Seed: 1234, Size: 96x128, Clip skip: 2, Denoising strength: 0.45, "
            "Hires upscale: 1.5, Hires steps: 6, Hires upscaler: Latent (bicubic)")
    png = tmp_path / "params.png"
    common.save_png(Image.new("RGB", (64, 64), "teal"), png, text)
    bad = tmp_path / "not-an-image.png"
    bad.write_bytes(b"this is no PNG")

    page = loaded_page(browser, url)
    page.locator("#tab_pnginfo-button").click()
    # a file that is no image: a readable error, and the tab keeps working
    page.locator("#pnginfo_image input[type=file]").set_input_files(str(bad))
    wait_text(page, "pnginfo_html", "Not an image")
    assert page.locator("#pnginfo_html .sdw-error").count() == 1
    page.locator("#pnginfo_image button[aria-label='Remove Image']").first.click()
    page.locator("#pnginfo_image input[type=file]").set_input_files(str(png))
    wait_text(page, "pnginfo_html", "Hires upscaler: Latent (bicubic)")
    screenshot(page, "pnginfo")
    page.locator("#pnginfo_send_to_txt2img").click()
    page.wait_for_function("() => document.querySelector('#txt2img_prompt textarea').value === 'a house by the sea'")
    assert page.locator("#tab_txt2img-button").get_attribute("aria-selected") == "true"
    values = page.evaluate("""() => {
        const v = (sel) => document.querySelector(sel).value;
        return {
            neg: v('#txt2img_neg_prompt textarea'), steps: v('#txt2img_steps input[type=number]'),
            cfg: v('#txt2img_cfg_scale input[type=number]'), seed: v('#txt2img_seed input'),
            width: v('#txt2img_width input[type=number]'), height: v('#txt2img_height input[type=number]'),
            sampler: v('#txt2img_sampling input'), scheduler: v('#txt2img_scheduler input'),
            hr: document.querySelector('#txt2img_enable_hr input').checked,
            hr_scale: v('#txt2img_hr_scale input[type=number]'), hr_steps: v('#txt2img_hires_steps input[type=number]'),
            denoise: v('#txt2img_denoising_strength input[type=number]'), upscaler: v('#txt2img_hr_upscaler input'),
        };
    }""")
    assert values == {"neg": "blurry", "steps": "12", "cfg": "4.5", "seed": "1234", "width": "96", "height": "128",
                      "sampler": "Euler a", "scheduler": "Karras", "hr": True, "hr_scale": "1.5", "hr_steps": "6",
                      "denoise": "0.45", "upscaler": "Latent (bicubic)"}
    # clip skip differs from the setting: shown as an override
    assert "Clip skip: 2" in page.locator("#txt2img_override_settings").inner_text()
    page.context.close()


def test_inpaint_upload_wrong_mask_size_is_an_error(server, browser, tmp_path):
    url, core, data = server
    base, mask = tmp_path / "base.png", tmp_path / "mask.png"
    Image.new("RGB", (64, 64), "red").save(base)
    Image.new("L", (32, 32), 255).save(mask)
    page = loaded_page(browser, url)
    page.locator("#tab_img2img-button").click()
    screenshot(page, "img2img")
    page.locator("#img2img_inpaint_upload_tab-button").click()
    page.locator("#img_inpaint_base input[type=file]").set_input_files(str(base))
    page.locator("#img_inpaint_mask input[type=file]").set_input_files(str(mask))
    page.wait_for_selector("#img_inpaint_mask img")
    set_small(page, tab="img2img")
    page.locator("#img2img_generate").click()
    wait_text(page, "img2img_progress", "differs from the init image")
    assert "mask: size 32x32 differs from the init image's 64x64" in page.locator("#img2img_progress").inner_text()
    # the page still works: with a mask of the right size the job runs
    Image.new("L", (64, 64), 255).save(mask)
    page.locator("#img_inpaint_mask button[aria-label='Remove Image']").first.click()
    page.locator("#img_inpaint_mask input[type=file]").set_input_files(str(mask))
    page.wait_for_selector("#img_inpaint_mask img")
    page.locator("#img2img_generate").click()
    wait_info(page, "Mask blur: 4", tab="img2img")
    screenshot(page, "inpaint-upload")
    page.context.close()


def test_settings_persist_across_restart(server, browser):
    url, core, data = server
    from modules import cmd_args
    from modules.app import App

    page = loaded_page(browser, url)
    page.locator("#tab_settings-button").click()
    box = page.locator("#setting_jpeg_quality input[type=number]")
    box.wait_for(state="visible")
    page.wait_for_function("() => document.querySelector('#setting_jpeg_quality input[type=number]').value === '80'")
    set_number(page, "setting_jpeg_quality", 55)
    page.wait_for_function("() => document.querySelector('#setting_jpeg_quality input[type=number]').value === '55'")
    page.locator("#settings_submit").click()
    wait_text(page, "settings_result", "1 setting changed: Quality for saved jpeg and webp images.")
    screenshot(page, "settings")
    page.context.close()
    assert core.opts.get("jpeg_quality") == 55
    restarted = App(cmd_args.parse_args(["--data-dir", str(data), "--skip-install"]))
    try:
        assert restarted.opts.get("jpeg_quality") == 55
    finally:
        restarted.queue.stop()
    core.opts.set("jpeg_quality", 80)


def test_two_pages_each_get_their_own_result(server, browser):
    url, core, data = server
    first, second = loaded_page(browser, url), loaded_page(browser, url)
    for page, prompt, seed in ((first, "first page", 21), (second, "second page", 22)):
        page.locator("#txt2img_prompt textarea").fill(prompt)
        set_small(page, steps=30, seed=seed)
    first.locator("#txt2img_generate").click()
    second.locator("#txt2img_prompt textarea").press("Control+Enter")   # the keyboard shortcut (javascript/ui.js)
    wait_info(first, "Seed: 21")
    wait_info(second, "Seed: 22")
    assert info_text(first).startswith("first page\n")
    assert info_text(second).startswith("second page\n")
    first.context.close()
    second.context.close()
    # the queue served them one after the other (the job store: log/queue.sqlite3)
    import sqlite3

    with contextlib.closing(sqlite3.connect(data / "log" / "queue.sqlite3")) as db:
        rows = db.execute("SELECT started, finished, result FROM jobs").fetchall()
    records = [{"started": s, "finished": f, **json.loads(r)} for s, f, r in rows if r]
    runs = sorted((r["started"], r["finished"]) for r in records
                  if r.get("infotexts") and r["infotexts"][0].split("\n")[0] in ("first page", "second page"))
    assert len(runs) == 2 and runs[1][0] >= runs[0][1]
