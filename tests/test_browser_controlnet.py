"""The ControlNet section of txt2img in a real browser (Playwright + Debian's /usr/bin/chromium) against the real
server on a tiny SD 1.x checkpoint and a tiny ControlNet: open the accordion, upload a picture into unit 0,
Enable, Control Type "Canny" (the preprocessor and the model follow), the run-preprocessor button: the
preview shows cv2.Canny's edge map; Generate: the job finishes with the unit in its infotext; the same
section in Chinese. Screenshots: test-output/controlnet_en.png, test-output/controlnet_zh.png.
Skipped without /usr/bin/chromium."""
from __future__ import annotations

import io
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from modules.paths import ROOT
from tests.browser_support import open_page, require_chromium, serve

OUT = ROOT / "test-output"
ZH = json.loads((ROOT / "localizations" / "zh_CN.json").read_text(encoding="utf-8"))
SECTION = "#txt2img_script_controlnet"
U0 = "#txt2img_controlnet_ControlNet-0"

require_chromium("chromium fonts-noto-cjk")
cv2 = pytest.importorskip("cv2")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import webui
    from modules import cmd_args
    from modules.app import App
    from testing.tiny_controlnets import write_tiny_controlnet
    from testing.tiny_models import write_tiny_checkpoint
    from tests.test_controlnet_ui import hook_up

    data = tmp_path_factory.mktemp("controlnet-browser")
    write_tiny_checkpoint(data / "models" / "Stable-diffusion" / "tiny.safetensors", "sd1")
    write_tiny_controlnet(data / "models" / "ControlNet" / "control_v11p_sd15_canny.safetensors", "sd1")
    extra = os.environ.get("SDW_TEST_EXTRA_ZH")   # zh_CN strings not yet in localizations/zh_CN.json
    if extra:
        (data / "localizations").mkdir(exist_ok=True)
        shutil.copy(extra, data / "localizations" / "zh_CN.json")
        ZH.update(json.loads(open(extra, encoding="utf-8").read()))
    mp = pytest.MonkeyPatch()
    core = App(cmd_args.parse_args(["--data-dir", str(data), "--skip-install"]))
    script = core.scripts.find("ControlNet")
    if script is None:
        pytest.skip("scripts/controlnet.py is not there")
    hook_up(mp, type(script))
    core.opts.set("localization", "None")
    core.refresh_models()
    core.load_model()
    try:
        with serve(webui.create_server(core)) as url:
            yield url, core, data
    finally:
        core.opts.set("localization", "None")
        core.queue.stop()
        mp.undo()


def picture(path, w=96, h=64):
    a = np.full((h, w, 3), 250, np.uint8)
    a[12:52, 14:60] = (30, 90, 200)
    cv2.circle(a, (70, 32), 16, (200, 40, 40), -1)
    Image.fromarray(a).save(path)
    return a


def open_section(page):
    page.locator(f"{SECTION} button, {SECTION} .label-wrap").first.click()
    page.locator(f"{U0}_input_image").wait_for(state="visible")


def preview_pixels(page) -> np.ndarray:
    sel = f"{U0}_generated_image img"
    page.wait_for_function("""(sel) => { const i = document.querySelector(sel);
        return !!i && i.complete && i.naturalWidth > 0; }""", arg=sel, timeout=120_000)
    src = page.locator(sel).first.get_attribute("src")
    body = page.request.get(src).body()
    return np.asarray(Image.open(io.BytesIO(body)).convert("L"))


def canny_on_page(page, pic, texts):
    """Upload, Enable, Control Type Canny, 💥: the preview's pixels."""
    T = lambda s: texts.get(s, s)  # noqa: E731
    open_section(page)
    page.locator(f"{U0}_input_image input[type=file]").first.set_input_files(str(pic))
    page.locator(f"{U0}_input_image img").first.wait_for(state="visible")
    page.locator(f"{U0}_controlnet_enable_checkbox input[type=checkbox]").check()
    page.locator(f"{U0}_controlnet_type_filter_radio label").filter(has_text=T("Canny")).first.click()
    page.wait_for_function("(sel) => document.querySelector(sel + ' input[role=combobox]').value === 'canny'",
                           arg=f"{U0}_controlnet_preprocessor_dropdown")
    page.wait_for_function("(sel) => document.querySelector(sel + ' input[role=combobox]').value.startsWith("
                           "'control_v11p_sd15_canny')", arg=f"{U0}_controlnet_model_dropdown")
    page.locator(f"{U0}_controlnet_threshold_A_slider").wait_for(state="visible")
    page.locator(f"{U0}_controlnet_trigger_preprocessor").click()
    return preview_pixels(page)


def test_controlnet_preview_generate_and_chinese(server, browser, tmp_path):
    url, core, data = server
    OUT.mkdir(exist_ok=True)
    src = picture(tmp_path / "pic.png")
    ctx, page, errors = open_page(browser, url, height=1600)
    got = canny_on_page(page, tmp_path / "pic.png", {})
    # 512 px short side (the slider's default), as the preprocessor computes it
    from modules.controlnet import preprocessors
    want = preprocessors.canny(src, 512, 100, 200)
    assert got.shape == want.shape and np.array_equal(got, want) and want.any()
    labels = page.locator(f"{U0}_controlnet_threshold_A_slider").inner_text()
    assert "Canny Low Threshold" in labels
    assert page.locator(f"{U0}_controlnet_status .sdw-error").count() == 0
    page.wait_for_timeout(500)
    page.locator(SECTION).screenshot(path=str(OUT / "controlnet_en.png"))

    # unit 1, nothing uploaded: the run button gives a message under it, no traceback
    page.get_by_role("tab", name="ControlNet Unit 1", exact=True).click()
    page.locator("#txt2img_controlnet_ControlNet-1_controlnet_trigger_preprocessor").click()
    box = page.locator("#txt2img_controlnet_ControlNet-1_controlnet_status .sdw-error")
    box.wait_for(state="visible")
    assert "Upload a picture" in box.inner_text() and "Traceback" not in box.inner_text()
    page.get_by_role("tab", name="ControlNet Unit 0", exact=True).click()

    # Generate with the unit: the job finishes, its infotext names the unit
    for name, value in (("width", 64), ("height", 64), ("steps", 2)):
        box = page.locator(f"#txt2img_{name} input[type=number]")
        box.fill(str(value))
        box.press("Enter")
    page.wait_for_timeout(500)
    page.locator("#txt2img_generate").click()
    page.wait_for_function("() => (document.getElementById('txt2img_generation_info') || {innerText: ''})"
                           ".innerText.includes('ControlNet 0')", timeout=300_000)
    text = page.locator("#txt2img_generation_info").inner_text()
    assert "Module: canny" in text and "control_v11p_sd15_canny" in text
    assert page.locator("#txt2img_gallery img").count() >= 1
    assert errors == []
    ctx.close()

    # the same in Chinese
    core.opts.set("localization", "zh_CN")
    try:
        ctx, page, errors = open_page(browser, url, height=1600)
        got = canny_on_page(page, tmp_path / "pic.png", ZH)
        assert np.array_equal(got, want)
        section = page.locator(SECTION).inner_text()
        for english in ("Enable", "Low VRAM", "Pixel Perfect", "Control Type", "Preprocessor", "Control Weight",
                        "Control Mode", "Resize Mode", "Canny Low Threshold"):
            if english in ZH and ZH[english] != english:
                assert ZH[english] in section, english
        page.wait_for_timeout(800)
        page.locator(SECTION).screenshot(path=str(OUT / "controlnet_zh.png"))
        assert errors == []
        ctx.close()
    finally:
        core.opts.set("localization", "None")
