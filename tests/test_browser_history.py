"""The History tab in a real browser (Playwright + Debian's /usr/bin/chromium) against the real server with a
tiny model: a picture generated from the page is in the History tab with its infotext; the search filters;
Send to txt2img fills the prompt, seed and steps; Delete moves the picture to the trash and out of the list.
Screenshot: test-output/history.png.  Skipped without /usr/bin/chromium."""
from __future__ import annotations

import os

import pytest
from PIL import Image

from modules import images
from modules.paths import ROOT
from tests.browser_support import open_page, require_chromium, tiny_model_server

OUT = ROOT / "test-output"
GREEN = "a green square\nSteps: 9, Sampler: Euler a, CFG scale: 5, Seed: 42, Size: 8x8"

require_chromium()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("history-browser")
    old = data / "outputs" / "txt2img-images" / "2026-01-02" / "00000-42-a green square.png"
    old.parent.mkdir(parents=True)
    images.save_image_with_geninfo(Image.new("RGB", (8, 8), (0, 160, 0)), GREEN, str(old), "png")
    os.utime(old, (1767355200, 1767355200))   # 2026-01-02, older than anything the test generates
    with tiny_model_server(data) as (url, core):
        yield url, core, data


def wait_text(page, selector, needle, present=True):
    page.wait_for_function(
        "([sel, needle, present]) => { const el = document.querySelector(sel);"
        " return !!el && el.innerText.includes(needle) === present; }", arg=[selector, needle, present])


def thumbs(page):
    """The pictures of the gallery's grid (a listing closes the preview)."""
    return page.locator("#history_gallery .gallery-item .thumbnail-item")


def pick(page, n: int):
    """Click the n-th picture of the History gallery's grid (it opens the preview and selects it)."""
    thumbs(page).nth(n).click()
    page.locator("#history_gallery .thumbnails .thumbnail-item.selected").wait_for(state="visible")


def search(page, text):
    box = page.locator("#history_search textarea, #history_search input").first
    box.fill(text)
    box.press("Enter")


def test_history_tab_shows_searches_sends_and_deletes(server, browser):
    url, core, data = server
    _, page, errors = open_page(browser, url)
    page.locator("#txt2img_prompt textarea").fill("a red cat")
    for dim in ("width", "height"):
        box = page.locator(f"#txt2img_{dim} input[type=number]")
        box.fill("64")
        box.press("Enter")
    steps = page.locator("#txt2img_steps input[type=number]")
    steps.fill("3")
    steps.press("Enter")
    seed = page.locator("#txt2img_seed input")
    seed.fill("7")
    seed.press("Tab")
    page.locator("#txt2img_generate").click()
    wait_text(page, "#txt2img_generation_info", "Seed: 7")
    (made,) = (data / "outputs" / "txt2img-images").rglob("00000-7-*.png")

    page.locator("#tab_history-button").click()
    wait_text(page, "#history_page_info", "(2 pictures)")
    assert thumbs(page).count() == 2
    pick(page, 0)                                    # newest first: the picture just generated
    wait_text(page, "#history_info", "Seed: 7")
    shown = page.locator("#history_info").inner_text()
    assert "a red cat" in shown and "Steps: 3" in shown and made.name in shown
    OUT.mkdir(exist_ok=True)
    page.screenshot(path=str(OUT / "history.png"), full_page=True)

    search(page, "GREEN")
    wait_text(page, "#history_page_info", "(1 pictures)")
    assert thumbs(page).count() == 1
    page.locator("#history_gallery .thumbnails").wait_for(state="detached")   # the new listing closed the preview
    assert "Select a picture" in page.locator("#history_info").inner_text()
    pick(page, 0)
    wait_text(page, "#history_info", "Seed: 42")
    page.locator("#history_send_txt2img").click()
    page.wait_for_function("() => document.querySelector('#txt2img_prompt textarea').value === 'a green square'")
    assert page.locator("#tab_txt2img-button").get_attribute("aria-selected") == "true"
    assert page.locator("#txt2img_seed input").input_value() == "42"
    assert page.locator("#txt2img_steps input[type=number]").input_value() == "9"

    page.locator("#tab_history-button").click()
    search(page, "red cat")
    wait_text(page, "#history_page_info", "(1 pictures)")
    pick(page, 0)
    wait_text(page, "#history_info", "Seed: 7")
    page.locator("#history_delete").click()
    wait_text(page, "#history_page_info", "(0 pictures)")
    assert thumbs(page).count() == 0
    assert not made.exists()
    assert (data / "outputs" / ".trash" / made.relative_to(data)).is_file()
    search(page, "")
    wait_text(page, "#history_page_info", "(1 pictures)")
    assert errors == []
