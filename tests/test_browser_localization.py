"""The page in Simplified Chinese, in a real browser: the language toggle, every visible label
translated, user content left alone, a generation in that mode, and back to English.

Needs Debian's /usr/bin/chromium (skipped without it).  Screenshots go to test-output/.
"""
from __future__ import annotations

import json
import re

import pytest

from modules.paths import ROOT
from tests.browser_support import require_chromium, serve

OUT = ROOT / "test-output"

require_chromium("chromium fonts-noto-cjk")

ZH = json.loads((ROOT / "localizations" / "zh_CN.json").read_text(encoding="utf-8"))

# Visible text nodes of the page (normalized), as a user would read them: hidden elements and
# user-content containers (no-translate, text fields) are left out.
VISIBLE_TEXTS_JS = """
() => {
    const out = [];
    const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
    let n;
    while ((n = walker.nextNode())) {
        const t = n.nodeValue.replace(/\\s+/g, ' ').trim();
        const el = n.parentElement;
        if (!t || !el || el.closest('.no-translate, textarea, script, style, code, pre')) continue;
        if (!el.checkVisibility({opacityProperty: true, visibilityProperty: true})) continue;
        const r = el.getBoundingClientRect();
        if (r.width === 0 || r.height === 0) continue;
        out.push(t);
    }
    return out;
}
"""


@pytest.fixture(scope="module")
def server_url(tmp_path_factory):
    import webui
    from modules import cmd_args, localization
    from modules.app import App
    from testing.tiny_models import write_tiny_checkpoint

    data = tmp_path_factory.mktemp("l10n-browser")
    ck = data / "models" / "Stable-diffusion"
    ck.mkdir(parents=True)
    write_tiny_checkpoint(ck / "tiny-sd1.safetensors", "sd1")
    core = App(cmd_args.parse_args(["--data-dir", str(data)]))
    core.opts.set("localization", "None")
    core.refresh_models()
    server = webui.create_server(core)
    if not any(getattr(r, "path", "") == "/localization/current.json" for r in server.router.routes):
        localization.register(server, core)
    with serve(server) as url:
        yield url, core


@pytest.fixture
def page(browser):
    pg = browser.new_page(viewport={"width": 1400, "height": 1000}, locale="en-US")
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.errors = errors
    yield pg
    pg.close()


def untranslated(texts: list[str]) -> list[str]:
    """Visible texts that are English keys of zh_CN.json with a different translation."""
    return sorted({t for t in texts if t in ZH and ZH[t] != t and re.search(r"[A-Za-z]", t)})


def english_looking(texts: list[str]) -> list[str]:
    return sorted({t for t in texts if re.search(r"[A-Za-z]{3}", t) and not re.search(r"[\u4e00-\u9fff]", t)})


def wait_for_tab(pg, name: str, timeout=30_000):
    pg.get_by_role("tab", name=name, exact=True).first.wait_for(state="visible", timeout=timeout)


def test_chinese_page_generation_and_back_to_english(server_url, page):
    url, core = server_url
    OUT.mkdir(exist_ok=True)
    pg = page
    pg.goto(url)
    wait_for_tab(pg, "txt2img")
    assert pg.evaluate("document.documentElement.getAttribute('data-localization')") == "None"

    # the toggle: 简体中文 sets the setting and reloads the page
    pg.locator("#language_toggle").get_by_text("简体中文", exact=True).click()
    wait_for_tab(pg, "文生图")
    assert core.opts.get("localization") == "zh_CN"
    pg.wait_for_timeout(800)  # the observer's passes over late-rendered parts
    assert pg.evaluate("document.documentElement.getAttribute('data-localization')") == "zh_CN"
    pg.screenshot(path=str(OUT / "l10n_zh_txt2img.png"), full_page=True)

    texts = pg.evaluate(VISIBLE_TEXTS_JS)
    for word in ("文生图", "图生图", "生成", "采样方法", "迭代步数", "提示词引导系数", "随机数种子", "宽度", "高度",
                 "总批次数", "单批数量", "高分辨率修复"):
        assert word in texts, word
    assert untranslated(texts) == [], untranslated(texts)
    print("English-looking visible texts (txt2img):", english_looking(texts))
    # placeholders are translated; the checkpoint (a model name) is not
    assert pg.locator("#txt2img_neg_prompt textarea").get_attribute("placeholder") == ZH["Negative prompt"] or \
        pg.get_by_text("负面提示词").count() > 0
    ckpt = pg.locator("#setting_sd_model_checkpoint input").first.input_value()
    assert ckpt.startswith("tiny-sd1.safetensors")

    # img2img tab
    pg.get_by_role("tab", name="图生图", exact=True).first.click()
    pg.wait_for_timeout(800)
    pg.screenshot(path=str(OUT / "l10n_zh_img2img.png"), full_page=True)
    texts = pg.evaluate(VISIBLE_TEXTS_JS)
    for word in ("重绘幅度", "缩放模式", "局部重绘", "涂鸦", "生成"):
        assert word in texts, word
    assert untranslated(texts) == [], untranslated(texts)
    print("English-looking visible texts (img2img):", english_looking(texts))

    # the other tabs: every visible label translated too
    for tab, shot in (("图片信息", "l10n_zh_pnginfo.png"), ("设置", "l10n_zh_settings.png")):
        pg.get_by_role("tab", name=tab, exact=True).first.click()
        pg.wait_for_timeout(800)
        pg.screenshot(path=str(OUT / shot), full_page=True)
        texts = pg.evaluate(VISIBLE_TEXTS_JS)
        assert untranslated(texts) == [], (tab, untranslated(texts))
        print(f"English-looking visible texts ({tab}):", english_looking(texts))

    # generate in Chinese mode: the prompt is user text and stays as typed
    pg.get_by_role("tab", name="文生图", exact=True).first.click()
    # a dropdown's list shows translated choices, its closed box the translated value
    sched = pg.locator("#txt2img_scheduler input[role=combobox]")
    assert sched.input_value() == ZH["Automatic"]
    sched.click()
    options = pg.get_by_role("option")
    options.first.wait_for(state="visible")
    labels = [t.strip().lstrip("✓").strip() for t in options.all_inner_texts()]
    assert ZH["Automatic"] in labels and "Karras" in labels and "Automatic" not in labels
    pg.get_by_role("option", name="Karras").click()
    pg.wait_for_timeout(500)
    assert sched.input_value() == "Karras"
    prompt = pg.locator("#txt2img_prompt textarea")
    prompt.fill("Generate a red ball")  # contains a dictionary word: never translated inside a textarea
    steps = pg.locator("#txt2img_steps input[type=number]")
    steps.fill("3")
    steps.press("Enter")
    for dim in ("width", "height"):
        box = pg.locator(f"#txt2img_{dim} input[type=number]")
        box.fill("64")
        box.press("Enter")
    pg.locator("#txt2img_generate").click()
    pg.locator("#txt2img_gallery img").first.wait_for(state="visible", timeout=90_000)
    pg.wait_for_timeout(500)
    pg.screenshot(path=str(OUT / "l10n_zh_generated.png"), full_page=True)
    assert prompt.input_value() == "Generate a red ball"
    info = pg.locator("#txt2img_generation_info").inner_text()
    assert "Schedule type: Karras" in info and "Steps: 3" in info  # infotext: English, user content
    texts = pg.evaluate(VISIBLE_TEXTS_JS)
    assert untranslated(texts) == [], untranslated(texts)

    # back to English
    pg.locator("#language_toggle").get_by_text("English", exact=True).click()
    wait_for_tab(pg, "txt2img")
    pg.wait_for_timeout(800)
    assert core.opts.get("localization") == "None"
    texts = pg.evaluate(VISIBLE_TEXTS_JS)
    for word in ("txt2img", "img2img", "Generate", "Sampling method", "Seed"):
        assert word in texts, word
    assert not [t for t in texts if re.search(r"[\u4e00-\u9fff]", t) and t != "简体中文"]
    pg.screenshot(path=str(OUT / "l10n_en_txt2img.png"), full_page=True)
    assert pg.errors == []


def test_script_rules_on_a_static_page(page):
    """The translator's rules, exactly, on a hand-made page (no server, no framework)."""
    from modules import localization

    mapping = {"Prompt": "提示词", "Generate": "生成", "Seed": "随机数种子", "Error:": "错误：", "Automatic": "自动",
               "Type here": "在此输入", "Clear": "清除", "Later": "稍后", "Changed": "已更改", "Euler a": "Euler a"}
    head = ("<script>window.localization = " + json.dumps(mapping, ensure_ascii=False) +
            "; window.localization_name = 'xx';</script><script>" + localization.JS_FILE.read_text(encoding="utf-8") +
            "</script>")
    body = """
      <div id="a">  Prompt  </div>
      <button id="b">Generate</button>
      <span id="c">Generate more</span>
      <textarea id="d" placeholder="Type here">Generate</textarea>
      <input id="e" value="Seed" placeholder="Type here">
      <div class="no-translate" id="f">
        <span data-testid="block-info" id="f1">Seed</span>
        <span id="f2">Seed</span>
        <button id="f3" title="Clear" aria-label="Clear">x</button>
        <img id="f4" alt="Seed">
      </div>
      <div id="g">Error: disk full</div>
      <div id="h">Error: Seed</div>
      <pre id="i">Seed</pre>
      <input id="j" role="combobox" value="Automatic">
      <input id="k" type="button" value="Generate">
      <div id="l">Euler a</div>
    """
    page.set_content(f"<html><head>{head}</head><body>{body}</body></html>")
    page.wait_for_function("document.documentElement.getAttribute('data-localization') === 'xx'")

    def text(sel):
        return page.locator(sel).evaluate("e => e.textContent")

    assert text("#a") == "  提示词  "              # whitespace around the text is kept
    assert text("#b") == "生成"
    assert text("#c") == "Generate more"           # only whole texts that are keys
    assert page.locator("#d").input_value() == "Generate"           # textarea content: user text
    assert page.locator("#d").get_attribute("placeholder") == "在此输入"
    assert page.locator("#e").input_value() == "Seed"               # input value: user text
    assert page.locator("#e").get_attribute("placeholder") == "在此输入"
    assert text("#f1") == "随机数种子"            # a no-translate component's label is UI
    assert text("#f2") == "Seed"                   # ... its content is not
    assert page.locator("#f3").get_attribute("title") == "清除"     # ... nor are its buttons' tooltips
    assert page.locator("#f4").get_attribute("alt") == "Seed"
    assert text("#g") == "错误： disk full"        # "Label:" prefix of a run-time message
    assert text("#h") == "错误： 随机数种子"
    assert text("#i") == "Seed"                    # code is never translated
    page.wait_for_function("document.querySelector('#j').value === '自动'")  # closed dropdown shows the translation
    assert page.locator("#k").input_value() == "生成"
    assert text("#l") == "Euler a"

    # nodes added later and text rewritten in place are translated by the observer
    page.evaluate("""() => {
        const d = document.createElement('div'); d.id = 'm'; d.textContent = 'Later'; document.body.appendChild(d);
        document.querySelector('#b').firstChild.nodeValue = 'Changed';
        document.querySelector('#e').setAttribute('placeholder', 'Prompt');
    }""")
    page.wait_for_function("document.querySelector('#m') && document.querySelector('#m').textContent === '稍后'")
    page.wait_for_function("document.querySelector('#b').textContent === '已更改'")
    page.wait_for_function("document.querySelector('#e').getAttribute('placeholder') === '提示词'")
    assert page.evaluate("window.localizationLookup('Seed')") == "随机数种子"
    assert page.evaluate("window.localizationLookup('unknown')") == "unknown"
    assert page.errors == []
