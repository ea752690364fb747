"""Localization files (A1111 format): discovery, merging, bad files, the head script,
collecting the UI's strings, the template export and zh_CN.json's coverage of the real UI."""
from __future__ import annotations

import dataclasses
import json
import logging
import re
import types

import gradio as gr
import pytest

from modules import cmd_args, localization
from modules.paths import ROOT, Paths


def make_paths(tmp_path, dirs=("a", "b")) -> Paths:
    base = Paths.from_args(cmd_args.parse_args(["--data-dir", str(tmp_path)]))
    loc_dirs = tuple(tmp_path / d for d in dirs)
    for d in loc_dirs:
        d.mkdir(parents=True, exist_ok=True)
    return dataclasses.replace(base, localizations_dirs=loc_dirs, extensions_dir=tmp_path / "extensions")


def write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


class FakeOpts:
    def __init__(self, **values):
        self.values = values

    def get(self, key):
        return self.values[key]


def fake_app(paths, name):
    return types.SimpleNamespace(paths=paths, opts=FakeOpts(localization=name))


# -- files ------------------------------------------------------------------------------------

def test_same_name_files_merge_across_dirs_and_extensions(tmp_path):
    p = make_paths(tmp_path)
    f1 = write(tmp_path / "a" / "xx.json", {"Prompt": "A-prompt", "Seed": "A-seed", "Steps": "A-steps"})
    f2 = write(tmp_path / "b" / "xx.json", {"Seed": "B-seed", "Width": "B-width"})
    f3 = write(tmp_path / "extensions" / "zeta" / "localizations" / "xx.json", {"Width": "Z-width"})
    f4 = write(tmp_path / "extensions" / "alpha" / "localizations" / "xx.json", {"Steps": "X-steps", "Width": "X-width"})
    write(tmp_path / "extensions" / "alpha" / "localizations" / "yy.json", {"Prompt": "Y"})
    write(tmp_path / "b" / "notes.txt", "not a localization")

    found = localization.list_localizations(p)
    assert list(found) == ["xx", "yy"]
    assert found["xx"] == [f1, f2, f4, f3]  # folders in order, then extensions by name

    assert localization.load_localization("xx", p) == {
        "Prompt": "A-prompt", "Seed": "B-seed", "Steps": "X-steps", "Width": "Z-width"}
    assert localization.load_localization("yy", p) == {"Prompt": "Y"}
    assert localization.load_localization("None", p) == {}
    assert localization.load_localization("missing", p) == {}
    assert localization.localization_choices(p) == ["None", "xx", "yy"]


def test_bad_files_are_skipped_with_a_warning_naming_them(tmp_path, caplog):
    p = make_paths(tmp_path)
    bad_json = write(tmp_path / "a" / "zz.json", '{"Prompt": "broken",')
    bad_value = write(tmp_path / "b" / "zz.json", {"Prompt": "ok", "Seed": 12})
    good = write(tmp_path / "extensions" / "e" / "localizations" / "zz.json", {"Steps": "步数"})
    not_object = write(tmp_path / "a" / "list.json", '["Prompt"]')
    localization.problems.clear()

    with caplog.at_level(logging.WARNING, logger="modules.localization"):
        assert localization.load_localization("zz", p) == {"Steps": "步数"}
        assert localization.load_localization("list", p) == {}
    text = caplog.text
    assert str(bad_json) in text and "invalid JSON" in text
    assert str(bad_value) in text and "'Seed'" in text and "int" in text
    assert str(not_object) in text
    assert str(good) not in text
    assert len(localization.problems) == 3
    assert any(str(bad_value) in m for m in localization.problems)
    # a bad file does not hide the name from the setting's choices
    assert localization.localization_choices(p) == ["None", "list", "zz"]


def test_bundled_zh_cn_is_valid_and_listed():
    p = Paths.from_args(cmd_args.parse_args([]))
    assert "zh_CN" in localization.localization_choices(p)
    data = localization.read_localization_file(ROOT / "localizations" / "zh_CN.json")
    assert data is not None
    assert data["Prompt"] == "提示词"
    assert data["Negative prompt"] == "负面提示词"
    assert data["Sampling method"] == "采样方法"
    assert data["Sampling steps"] == "迭代步数"
    assert data["CFG Scale"] == "提示词引导系数"
    assert data["Seed"] == "随机数种子"
    assert data["Hires. fix"] == "高分辨率修复"
    assert data["Denoising strength"] == "重绘幅度"
    assert data["txt2img"] == "文生图"
    assert data["img2img"] == "图生图"
    assert data["Generate"] == "生成"
    assert data["Batch count"] == "总批次数"
    assert data["Batch size"] == "单批数量"
    assert data["Schedule type"] == "调度类型"
    assert data["Inpaint"] == "局部重绘"
    assert data["Sketch"] == "涂鸦"
    assert data["PNG Info"] == "图片信息"
    assert all(v.strip() for v in data.values())


# -- head script ------------------------------------------------------------------------------

def test_head_html_embeds_the_chosen_dictionary_and_the_script(tmp_path):
    p = make_paths(tmp_path)
    write(tmp_path / "a" / "xx.json", {"Prompt": "提示词", "Tricky": "</script><b>&"})

    head = localization.head_html(fake_app(p, "xx"))
    m = re.search(r"window\.localization = (\{.*?\}); window\.localization_name = (\"[^\"]*\");", head)
    assert m, head[:300]
    assert json.loads(m.group(1)) == {"Prompt": "提示词", "Tricky": "</script><b>&"}
    assert json.loads(m.group(2)) == "xx"
    assert head.count("</script>") == 2  # the value's '</script>' is escaped
    assert "MutationObserver" in head and "no-translate" in head  # localization.js inline

    english = localization.head_html(fake_app(p, "None"))
    assert "window.localization = {};" in english
    assert 'window.localization_name = "None";' in english


# -- collecting strings -----------------------------------------------------------------------

def small_ui():
    with gr.Blocks() as demo:
        with gr.Tab("txt2img"):
            gr.Textbox(label="Prompt", placeholder="Type a prompt", info="What to **draw**\nline two", value="a cat, best quality")
            gr.Dropdown(label="Schedule type", choices=["Automatic", "Karras"], value="Automatic")
            gr.Dropdown(label="Stable Diffusion checkpoint", choices=["tiny.safetensors [0123456789]"],
                        elem_classes=["no-translate"])
            gr.Dropdown(label="SD VAE", choices=["Automatic", "vae-ft.safetensors", "sub/x.pt"])
            gr.Radio(label="Resize mode", choices=[("Just resize", 0), ("Crop and resize", 1)])
            with gr.Accordion("Hires. fix", open=False):
                gr.Slider(label="Denoising strength", minimum=0, maximum=1)
            gr.Button("Generate")
            gr.Markdown("Click **Generate** to start. Code like `--api` is not text.")
            gr.HTML('<div title="Tip text">Hello <b>there</b><style>.x { color: red; }</style></div>')
            with gr.Group(elem_classes=["no-translate"]):  # only labels/placeholders inside are UI
                gr.Textbox(label="Hidden from translation", info="not collected")
                gr.Radio(label="Hidden from translation", choices=["Not collected"])
            gr.Dataframe(headers=["Name", "Value"])
        with gr.Tab("img2img"):
            gr.Checkbox(label="Restore faces")
            gr.Button("Show/hide extra networks")
            gr.Number(label="123")  # no letters: not a UI word
    return demo


SMALL_UI_STRINGS = {
    "txt2img", "Prompt", "Type a prompt", "What to", "draw", "line two", "Schedule type", "Automatic", "Karras", "SD VAE",
    "Resize mode", "Just resize", "Crop and resize", "Hires. fix", "Denoising strength", "Generate",
    "Click", "to start. Code like", "is not text.", "Tip text", "Hello", "there", "Name", "Value",
    "img2img", "Restore faces", "Show/hide extra networks", "Stable Diffusion checkpoint", "Hidden from translation",
}


def test_collect_ui_strings_exact():
    assert localization.collect_ui_strings(small_ui()) == SMALL_UI_STRINGS


def test_markdown_texts_split_like_rendered_nodes():
    md = "# Title\n\nHello **bold** and [a link](http://x) `code` more\ntext\n\n- item one\n- item *two*\n\n```\nskip me\n```"
    texts = [localization.normalize(t) for t in localization.markdown_texts(md)]
    assert [t for t in texts if t] == ["Title", "Hello", "bold", "and", "a link", "more text", "item one", "item", "two"]


def test_export_template_has_every_string_and_empty_values():
    tpl = localization.export_template(small_ui())
    assert set(tpl.values()) == {""}
    assert SMALL_UI_STRINGS <= set(tpl)
    assert "Drop Image Here" in tpl  # Gradio's own widget texts are listed for translators
    assert list(tpl) == sorted(tpl, key=lambda s: (s.lower(), s))


def test_routes_current_list_and_template(tmp_path):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    p = make_paths(tmp_path)
    write(tmp_path / "a" / "xx.json", {"Prompt": "提示词"})
    app = fake_app(p, "xx")
    server = FastAPI()
    gr.mount_gradio_app(server, small_ui(), path="/")
    localization.register(server, app)  # after the mount at "/": the routes still answer
    client = TestClient(server)

    assert client.get("/localization/current.json").json() == {"name": "xx", "localization": {"Prompt": "提示词"}}
    app.opts.values["localization"] = "None"  # changed in the UI: the next page load gets English
    assert client.get("/localization/current.json").json() == {"name": "None", "localization": {}}
    assert client.get("/localization/list.json").json()["choices"] == ["None", "xx"]
    r = client.get("/localization/template.json")
    assert r.status_code == 200 and "attachment" in r.headers["content-disposition"]
    tpl = r.json()
    assert SMALL_UI_STRINGS <= set(tpl) and set(tpl.values()) == {""}


def test_missing_keys_compares_normalized():
    assert localization.missing_keys({"Hello  world": "你好", "Empty": ""}, ["Hello world", "Empty", "New"]) == [
        "Empty", "New"]


# -- the real UI --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def real_ui(tmp_path_factory):
    from modules.app import App
    from testing.tiny_models import write_tiny_checkpoint
    from modules.ui import create_ui

    data = tmp_path_factory.mktemp("l10n-data")
    ck = data / "models" / "Stable-diffusion"
    ck.mkdir(parents=True)
    write_tiny_checkpoint(ck / "tiny-sd1.safetensors", "sd1")
    app = App(cmd_args.parse_args(["--data-dir", str(data)]))
    app.refresh_models()
    blocks, head, _css = create_ui(app)
    return app, blocks, head


def test_real_ui_strings_are_collected(real_ui):
    app, blocks, _head = real_ui
    strings = localization.collect_ui_strings(blocks)
    for s in ("Prompt", "Negative prompt", "Generate", "txt2img", "img2img", "Sampling method", "Seed", "Width"):
        assert s in strings
    titles = app.models.titles()
    assert len(titles) == 1 and titles[0].startswith("tiny-sd1.safetensors [")
    assert not [s for s in strings if "tiny-sd1" in s]  # model names are never UI strings


def test_zh_cn_covers_every_ui_string(real_ui):
    _app, blocks, _head = real_ui
    strings = localization.ui_strings(blocks)
    zh = localization.read_localization_file(ROOT / "localizations" / "zh_CN.json")
    missing = localization.missing_keys(zh, strings)
    assert not missing, f"{len(missing)} UI strings missing from localizations/zh_CN.json:\n" + "\n".join(
        json.dumps(s, ensure_ascii=False) for s in missing)


def test_real_ui_head_has_the_localization_script(real_ui):
    _app, _blocks, head = real_ui
    assert "window.localization = " in head and "MutationObserver" in head


def test_command_line_export_matches_the_real_ui(real_ui, tmp_path, capsys):
    _app, blocks, _head = real_ui
    out = tmp_path / "template.json"
    assert localization.main(["--export-template", str(out)]) == 0
    assert "strings to" in capsys.readouterr().out
    tpl = json.loads(out.read_text(encoding="utf-8"))
    # built headlessly on an empty data folder, yet the same strings as the UI with a model:
    # model names never make it into the template
    assert tpl == localization.export_template(blocks)
    assert localization.main(["--missing", "zh_CN"]) == 0


def test_collect_source_messages(tmp_path):
    (tmp_path / "tab.py").write_text('''
import gradio as gr
def f(e, n, dirs):
    gr.Warning("Nothing to send: generate an image first.")
    gr.Info(f"Saved {n} files")              # run-time text: cannot be matched
    raise gr.Error(f"Error: {e}")            # the "Error:" label can
    common.error_html("No usable checkpoint: " + "; ".join(dirs))
    common.message_html("Interrupted.")
    other.Warning("not gradio")
    print("not a message")
    gr.Warning(str(e))
''', encoding="utf-8")
    assert localization.collect_source_messages(tmp_path) == {
        "Nothing to send: generate an image first.", "Error:", "No usable checkpoint:", "Interrupted."}
