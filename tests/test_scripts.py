"""The script interface (modules/scripts.py): scripts loaded from files, arguments by name from A1111's
positional lists, always-on hooks acting on the pictures and the infotext, a script's run replacing the
job, a failing hook reported and switched off while the job goes on, the API's script routes and 422s,
the UI's script controls into the request and back from a pasted infotext."""
from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
from PIL import Image

from modules import cmd_args, scripts
from modules.engine import GenerationRequest, RequestError

SMALL = dict(prompt="a red circle", steps=3, width=64, height=64, seed=5, cfg_scale=7.0)

SCRIPT_FILE = '''
from PIL import ImageOps
from modules.engine import GenerationResult
from modules.scripts import Arg, Script, finish_result


class Invert(Script):
    title = "Invert test"
    alwayson = True

    def args(self, is_img2img):
        return [Arg("enabled", "Enable", "checkbox", False),
                Arg("mix", "Mix", "slider", 1.0, 0.0, 1.0, 0.5, infotext="Invert mix")]

    def before_batch(self, ctx, batch, a):
        ctx.state.setdefault("batches", []).append(list(batch.seeds))

    def after_image(self, ctx, image, a):
        return ImageOps.invert(image.convert("RGB"))


class CfgList(Script):
    title = "CFG list test"

    def args(self, is_img2img):
        return [Arg("info", "", "html", "<p>info</p>"),
                Arg("values", "CFG values", "textbox", "3, 9", infotext="CFG list"),
                Arg("order", "Order", "radio", "as given", choices=("as given", "reversed")),
                Arg("repeat", "Repeat", "slider", 1, 1, 4, 1, whole=True)]

    def run(self, job, a):
        import dataclasses
        values = [float(x) for x in a.values.split(",")] * a.repeat
        if a.order == "reversed":
            values.reverse()
        job.set_total(len(values))
        out = GenerationResult()
        for v in values:
            if job.interrupted:
                break
            r = job.process(dataclasses.replace(job.request, cfg_scale=v), extra_params={"CFG list": a.values})
            for name in ("images", "infotexts", "seeds", "subseeds", "prompts", "negative_prompts"):
                getattr(out, name).extend(getattr(r, name))
        return finish_result(job, out)
'''

BROKEN_FILE = '''
from modules.scripts import Arg, Script


class Broken(Script):
    title = "Broken test"
    alwayson = True

    def args(self, is_img2img):
        return [Arg("enabled", "Enable", "checkbox", False)]

    def after_image(self, ctx, image, a):
        raise ZeroDivisionError("boom")
'''


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from modules.app import App
    from testing.tiny_models import write_tiny_checkpoint

    data = tmp_path_factory.mktemp("scripts")
    write_tiny_checkpoint(data / "models" / "Stable-diffusion" / "tiny.safetensors", "sd1", seed=0)
    app = App(cmd_args.parse_args(["--data-dir", str(data)]))
    folder = data / "test_scripts"
    folder.mkdir()
    (folder / "test_file.py").write_text(SCRIPT_FILE, encoding="utf-8")
    loaded = app.scripts.load_dir(folder, "test-ext")
    assert [s.title for s in loaded] == ["Invert test", "CFG list test"]
    broken = data / "broken_scripts"
    broken.mkdir()
    (broken / "broken.py").write_text(BROKEN_FILE, encoding="utf-8")
    assert [s.title for s in app.scripts.load_dir(broken, "broken-ext")] == ["Broken test"]
    app.refresh_models()
    yield app, data
    app.queue.stop()


def run(app, req) -> object:
    job = app.submit(req)
    job.done_event.wait(120)
    assert job.status == "done", job.error
    return job


def arr(im) -> np.ndarray:
    return np.asarray(im.convert("RGB"), dtype=np.int16)


# ---------------------------------------------------------------------------
# arguments


def test_positional_arguments_map_onto_names_and_choices_take_an_index(env):
    app, _ = env
    s = app.scripts.find("cfg list test")   # any case, as A1111's API takes names
    a = app.scripts.map_args(s, ["ignored html", "2, 4", 1], False)
    assert dict(a) == {"values": "2, 4", "order": "reversed", "repeat": 1}
    assert dict(app.scripts.map_args(s, {"order": "REVERSED", "repeat": 3.0}, False)) == \
        {"values": "3, 9", "order": "reversed", "repeat": 3}
    assert isinstance(app.scripts.map_args(s, {"repeat": 3.0}, False)["repeat"], int)


@pytest.mark.parametrize("args, field, words", [
    (["", "1", 2], "script_args[2] (order)", ["CFG list test", "Order", "index 2 is out of range"]),
    (["", "1", "sideways"], "script_args[2] (order)", ["must be one of as given, reversed"]),
    (["", "1", 0, 9], "script_args[3] (repeat)", ["Repeat", "at most 4"]),
    (["", "1", 0, 1.5], "script_args[3] (repeat)", ["whole number"]),
    (["", "1", 0, 1, "extra"], "script_args", ["takes 4 arguments", "got 5"]),
    ({"nope": 1}, "script_args", ["has no argument 'nope'"]),
    ("text", "script_args", ["must be a list or an object"]),
])
def test_bad_arguments_name_the_script_and_the_argument(env, args, field, words):
    app, _ = env
    with pytest.raises(RequestError) as e:
        app.submit(GenerationRequest(**SMALL, script_name="CFG list test", script_args=args))
    assert e.value.field == field
    for w in words:
        assert w in str(e.value)


def test_unknown_script_names_the_available_ones(env):
    app, _ = env
    with pytest.raises(RequestError) as e:
        app.submit(GenerationRequest(**SMALL, script_name="no such script"))
    assert e.value.field == "script_name" and "'no such script' not found" in str(e.value)
    assert "cfg list test" in str(e.value)
    with pytest.raises(RequestError) as e:   # an always-on script is not a script_name
        app.submit(GenerationRequest(**SMALL, script_name="invert test"))
    with pytest.raises(RequestError) as e:
        app.submit(GenerationRequest(**SMALL, alwayson_scripts={"cfg list test": {"args": []}}))
    assert e.value.field == "alwayson_scripts.cfg list test"


# ---------------------------------------------------------------------------
# jobs


def test_always_on_hooks_change_the_pictures_and_write_the_infotext(env):
    app, _ = env
    plain = app.process(GenerationRequest(**SMALL, n_iter=2))
    job = run(app, GenerationRequest(**SMALL, n_iter=2, alwayson_scripts={"Invert test": {"args": [True, 0.5]}}))
    res = job.result
    assert len(res.images) == 2
    for a, b in zip(res.images, plain.images):
        assert (arr(a) == 255 - arr(b)).all()
    assert all("Invert mix: 0.5" in t for t in res.infotexts)
    assert all("Invert mix" not in t for t in plain.infotexts)
    assert res.infotexts[0].replace(", Invert mix: 0.5", "") == plain.infotexts[0]
    # not enabled (the default): the hooks do not run
    off = run(app, GenerationRequest(**SMALL, n_iter=2, alwayson_scripts={"Invert test": {"args": [False]}}))
    assert (arr(off.result.images[0]) == arr(plain.images[0])).all()


def test_a_scripts_run_processes_jobs_equal_to_the_same_jobs_alone(env):
    app, _ = env
    job = run(app, GenerationRequest(**SMALL, script_name="cfg list test", script_args=["", "3, 9", 1, 2]))
    res = job.result
    assert len(res.images) == 4
    cfgs = [9.0, 3.0, 9.0, 3.0]
    for im, text, cfg in zip(res.images, res.infotexts, cfgs):
        alone = app.process(GenerationRequest(**{**SMALL, "cfg_scale": cfg}))
        assert (arr(im) == arr(alone.images[0])).all()
        assert text == alone.infotexts[0].replace(", Version", ", CFG list: \"3, 9\", Version")
    assert job.control.script_jobs == (4, 4) and job.control.progress == 1.0
    assert res.info["infotexts"] == res.infotexts and res.info["all_seeds"] == [5, 5, 5, 5]


def test_a_failing_hook_is_reported_and_switched_off_while_the_job_goes_on(env):
    app, _ = env
    job = run(app, GenerationRequest(**SMALL, n_iter=2, alwayson_scripts={"Broken test": {"args": [True]}}))
    assert len(job.result.images) == 2
    assert any("Broken test" in w and "boom" in w and "disabled" in w for w in job.result.warnings)
    assert any(e.source == "broken-ext" and "boom" in e.message for e in app.scripts.errors)
    # the extension's scripts are off for this run: no longer listed, a request naming them is refused;
    # the other extension's stay
    assert app.scripts.find("broken test") is None and app.scripts.disabled_sources == {"broken-ext"}
    assert app.scripts.find("cfg list test") is not None
    with pytest.raises(RequestError):
        app.submit(GenerationRequest(**SMALL, alwayson_scripts={"Broken test": {"args": [True]}}))
    assert run(app, GenerationRequest(**SMALL)).result.images


def test_a_file_that_fails_to_import_is_reported_and_the_rest_load(tmp_path):
    reg = scripts.ScriptRegistry()
    (tmp_path / "a_bad.py").write_text("import no_such_module_here\n", encoding="utf-8")
    (tmp_path / "b_good.py").write_text(textwrap.dedent('''
        from modules.scripts import Script
        class Good(Script):
            title = "Good"
    '''), encoding="utf-8")
    reg.load_dir(tmp_path, scripts.BUILT_IN)
    assert [s.title for s in reg.scripts] == ["Good"]
    assert reg.errors[0].where == "loading a_bad.py" and "no_such_module_here" in reg.errors[0].message


# ---------------------------------------------------------------------------
# the API


@pytest.fixture(scope="module")
def client(env):
    import webui
    from fastapi.testclient import TestClient

    app, _ = env
    return TestClient(webui.create_server(app, with_ui=False, with_api=True))


def test_api_lists_and_describes_the_scripts(env, client):
    lists = client.get("/sdapi/v1/scripts").json()
    assert "cfg list test" in lists["txt2img"] and "cfg list test" in lists["img2img"]
    info = client.get("/sdapi/v1/script-info").json()
    entry = next(e for e in info if e["name"] == "cfg list test" and not e["is_img2img"])
    assert entry["is_alwayson"] is False
    assert entry["args"] == [
        {"label": "", "value": "<p>info</p>", "minimum": None, "maximum": None, "step": None, "choices": None},
        {"label": "CFG values", "value": "3, 9", "minimum": None, "maximum": None, "step": None, "choices": None},
        {"label": "Order", "value": "as given", "minimum": None, "maximum": None, "step": None,
         "choices": ["as given", "reversed"]},
        {"label": "Repeat", "value": 1, "minimum": 1, "maximum": 4, "step": 1, "choices": None}]


def test_api_runs_a_script_with_a1111_positional_args(env, client):
    r = client.post("/sdapi/v1/txt2img", json={**SMALL, "script_name": "CFG list test",
                                                "script_args": ["", "4, 6", 0, 1]})
    assert r.status_code == 200, r.text
    body = r.json()
    info = json.loads(body["info"])
    assert len(body["images"]) == 2 and len(info["infotexts"]) == 2
    assert "CFG scale: 4" in info["infotexts"][0] and "CFG scale: 6" in info["infotexts"][1]


@pytest.mark.parametrize("payload, field", [
    ({"script_name": "nope"}, "script_name"),
    ({"script_name": "cfg list test", "script_args": ["", "3", 0, 99]}, "script_args[3] (repeat)"),
    ({"alwayson_scripts": {"invert test": {"args": [True, "x"]}}}, "alwayson_scripts.invert test.args[1] (mix)"),
])
def test_api_refuses_bad_scripts_with_422_naming_them(env, client, payload, field):
    r = client.post("/sdapi/v1/txt2img", json={**SMALL, **payload})
    assert r.status_code == 422, r.text
    assert field in r.json()["detail"]


# ---------------------------------------------------------------------------
# the UI


def test_ui_values_become_the_request_and_a_pasted_infotext_restores_them(env):
    pytest.importorskip("gradio")
    from modules import infotext
    from modules.ui import build_ui, common, scripts_ui, txt2img

    app, _ = env
    ui = build_ui(app)
    tab = ui.txt2img
    choices = [c[0] for c in tab.c["script_name"].choices]
    assert choices[0] == "None" and "CFG list test" in choices and "Invert test" not in choices
    values = {"prompt": "a red circle", "script_name": "CFG list test",
              "script::CFG list test::values": "1, 2", "script::CFG list test::order": "reversed",
              "script::CFG list test::repeat": 2.0, "script::Invert test::enabled": True,
              "script::Invert test::mix": 0.5}
    req = txt2img.build_request(app, values)
    assert req.script_name == "CFG list test"
    assert req.script_args == {"values": "1, 2", "order": "reversed", "repeat": 2.0}
    assert req.alwayson_scripts["Invert test"] == {"enabled": True, "mix": 0.5}
    params = infotext.parse_generation_parameters(
        "a cat\nSteps: 3, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 64x64, Script: CFG list test, "
        "CFG list: \"5, 6\", Invert mix: 0.5")
    upd = common.paste_updates(app, tab, params)
    assert upd["script_name"] == "CFG list test"
    assert upd["script::CFG list test::values"] == "5, 6"
    assert upd["script::Invert test::mix"] == 0.5 and upd["script::Invert test::enabled"] is True
    comps = common.paste_to_components(tab, upd)
    assert comps[tab.script_groups["CFG list test"]]["visible"] is True
    assert set(scripts_ui.paste_targets(tab)) <= set(common.paste_targets(tab))
