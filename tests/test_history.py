"""The picture history (modules/history.py): pictures written by real jobs on a tiny model and hand-made PNGs
with infotexts, listed newest first by file time, grouped by date, searched, paged; delete moves the file and
its .txt into outputs/.trash/ and nothing outside the listing is ever read or moved; the API routes
(TestClient) and the History tab's event functions."""
from __future__ import annotations

import datetime as dt
import io
import os
import time
from pathlib import Path

import pytest
from PIL import Image

from modules import cmd_args, history, images, options
from modules.engine import GenerationRequest

gr = pytest.importorskip("gradio")
from fastapi.testclient import TestClient  # noqa: E402

API = "/sdapi/v1"


def stamp(day: str, hour: int = 12, minute: int = 0) -> float:
    """A local time on `day` (YYYY-MM-DD) as a file time."""
    return dt.datetime.strptime(day, "%Y-%m-%d").replace(hour=hour, minute=minute).timestamp()


def make_png(path: Path, infotext: str | None, when: float | None = None, size=(8, 6), color=(10, 20, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    images.save_image_with_geninfo(Image.new("RGB", size, color), infotext, str(path), path.suffix.lstrip("."))
    if when is not None:
        os.utime(path, (when, when))
    return path


def info(prompt: str, seed: int = 1, steps: int = 20) -> str:
    return f"{prompt}\nNegative prompt: blue\nSteps: {steps}, Sampler: Euler a, CFG scale: 7, Seed: {seed}, Size: 8x6"


def hist_of(data: Path, **settings) -> history.History:
    opts = options.Options(None)
    for k, v in settings.items():
        opts.set(k, v, save=False)
    return history.History(data, opts)


@pytest.fixture
def folder(tmp_path):
    """A data dir with hand-made pictures on three days (folder names that do not match on purpose)."""
    out = tmp_path / "outputs"
    t2i, i2i, grids = out / "txt2img-images", out / "img2img-images", out / "txt2img-grids"
    files = {
        "a": make_png(t2i / "2020-01-01" / "00000-1-a red circle.png", info("a RED circle", 1), stamp("2026-03-04", 9)),
        "b": make_png(t2i / "2026-03-05" / "00001-2-blue square.png", info("blue square", 2, 30), stamp("2026-03-05", 10)),
        "c": make_png(i2i / "2026-03-05" / "00000-3-green.png", info("green triangle", 3), stamp("2026-03-05", 11)),
        "d": make_png(grids / "2026-03-06" / "grid-0000-4.png", info("a red square", 4), stamp("2026-03-06", 8)),
        "e": make_png(out / "save" / "plain.png", None, stamp("2026-03-01", 8)),
    }
    return tmp_path, files


def rel(data: Path, p: Path) -> str:
    return p.relative_to(data).as_posix()


# ---------------------------------------------------------------------------
# listing


def test_newest_first_by_file_time_with_dates_and_infotexts(folder):
    data, f = folder
    h = hist_of(data, outdir_save="outputs/save")
    items = h.items()
    assert [i.path for i in items] == [rel(data, f[k]) for k in "dcbae"]
    assert [i.date for i in items] == ["2026-03-06", "2026-03-05", "2026-03-05", "2026-03-04", "2026-03-01"]
    assert h.dates() == [("2026-03-06", 1), ("2026-03-05", 2), ("2026-03-04", 1), ("2026-03-01", 1)]
    b = items[2]
    assert (b.name, b.width, b.height, b.prompt) == ("00001-2-blue square.png", 8, 6, "blue square")
    assert b.infotext == info("blue square", 2, 30)
    assert b.mtime == pytest.approx(stamp("2026-03-05", 10))
    assert (items[4].infotext, items[4].prompt) == ("", "")


def test_search_date_and_paging_are_exact(folder):
    data, f = folder
    h = hist_of(data, outdir_save="outputs/save")
    assert [i.path for i in h.page(search="RED").items] == [rel(data, f["d"]), rel(data, f["a"])]  # any case
    assert [i.path for i in h.page(search="steps: 30").items] == [rel(data, f["b"])]      # parameters, not just prompt
    assert h.page(search="no such words").total == 0
    assert [i.path for i in h.page(date="2026-03-05").items] == [rel(data, f["c"]), rel(data, f["b"])]
    assert h.page(search="square", date="2026-03-05").total == 1
    p1, p2, p3 = (h.page(page=n, page_size=2) for n in (1, 2, 3))
    assert (p1.total, p1.pages, p2.pages) == (5, 3, 3)
    assert [i.name for i in p1.items + p2.items + p3.items] == [i.name for i in h.items()]
    assert len(p3.items) == 1 and h.page(page=4, page_size=2).items == []


def test_sidecar_jpeg_and_what_is_left_out(folder, tmp_path_factory):
    data, f = folder
    out = data / "outputs" / "txt2img-images" / "2026-03-07"
    jpg = out / "00002-5.jpg"
    make_png(jpg, info("jpeg exif prompt", 5), stamp("2026-03-07"))
    side = make_png(out / "00003-6.png", None, stamp("2026-03-07", 13))
    side.with_suffix(".txt").write_text(info("from the sidecar", 6) + "\n", encoding="utf-8")
    (out / "00004-broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not a png")
    (out / "notes.txt").write_text("not a picture")
    make_png(out / ".tmp-123-abc.png", info("half written"))
    make_png(out / ".hidden" / "x.png", info("in a dot folder"))
    outside = make_png(tmp_path_factory.mktemp("elsewhere") / "secret.png", info("outside"))
    (out / "link.png").symlink_to(outside)
    (out / "linkdir").symlink_to(outside.parent, target_is_directory=True)
    by_name = {i.name: i for i in hist_of(data).items()}
    assert set(by_name) == {"00002-5.jpg", "00003-6.png", *(p.name for k, p in f.items() if k != "e")}
    assert by_name["00002-5.jpg"].prompt == "jpeg exif prompt"
    assert by_name["00003-6.png"].infotext == info("from the sidecar", 6)


def test_infotexts_are_cached_by_path_time_and_size(tmp_path, monkeypatch):
    day = tmp_path / "outputs" / "txt2img-images" / "2026-03-05"
    one = io.BytesIO()
    images.save_image_with_geninfo(Image.new("RGB", (8, 8)), info("many"), one, "png")
    day.mkdir(parents=True)
    for n in range(1500):
        (day / f"{n:05}-{n}.png").write_bytes(one.getvalue())
    h = hist_of(tmp_path)
    reads = []
    real = history.read_meta
    monkeypatch.setattr(history, "read_meta", lambda p: reads.append(p) or real(p))
    assert len(h.items()) == 1500 and len(reads) == 1500
    t0 = time.perf_counter()
    page = h.page(page=2, page_size=50, search="MANY")
    took = time.perf_counter() - t0
    assert (page.total, len(page.items), len(reads)) == (1500, 50, 1500)   # nothing read again
    assert took < 1.5, f"listing 1500 cached pictures took {took:.2f}s"
    changed = day / "00007-7.png"
    make_png(changed, info("changed"), time.time() + 5)
    assert h.page(search="changed").items[0].path == rel(tmp_path, changed)
    assert len(reads) == 1501


# ---------------------------------------------------------------------------
# delete and refused paths


def test_delete_moves_file_and_sidecar_to_the_trash(folder):
    data, f = folder
    f["b"].with_suffix(".txt").write_text("params\n")
    h = hist_of(data, outdir_samples="outputs")   # one folder holding everything, the trash included
    path = rel(data, f["b"])
    target = h.delete(path)
    assert target == data / "outputs" / ".trash" / path
    assert target.is_file() and not f["b"].exists()
    assert target.with_suffix(".txt").read_text() == "params\n" and not f["b"].with_suffix(".txt").exists()
    assert path not in [i.path for i in h.items()]
    assert len(h.items()) == 4     # outputs/.trash is never listed, though it is inside the output folder
    with pytest.raises(history.NotInHistory):
        h.delete(path)
    make_png(f["b"], info("again"))                 # the same name deleted twice: both kept in the trash
    assert h.delete(path) == target.with_name("00001-2-blue square-1.png")
    assert target.is_file()


def test_paths_outside_the_listing_are_refused(folder):
    data, f = folder
    (data / "config.json").write_text("{}")
    model_png = make_png(data / "models" / "Stable-diffusion" / "card.png", info("not an output"))
    trashed = make_png(data / "outputs" / ".trash" / "outputs" / "old.png", info("trashed"))
    h = hist_of(data)
    good = rel(data, f["a"])
    for bad in ["", "../config.json", "config.json", "outputs/../config.json", good.replace("/", "/./", 1),
                "outputs/txt2img-images/../txt2img-images/2020-01-01/00000-1-a red circle.png", str(f["a"]),
                rel(data, model_png), rel(data, trashed), rel(data, f["e"]), "/etc/passwd", "a\x00b"]:
        with pytest.raises(history.NotInHistory):
            h.find(bad)
        with pytest.raises(history.NotInHistory):
            h.delete(bad)
    assert model_png.is_file() and trashed.is_file() and f["a"].is_file() and f["e"].is_file()
    assert h.find(good).file == f["a"]


def test_an_output_folder_outside_the_data_dir(tmp_path_factory):
    data, far = tmp_path_factory.mktemp("data"), tmp_path_factory.mktemp("far")
    pic = make_png(far / "2026-03-05" / "00000-9.png", info("far away", 9))
    h = hist_of(data, outdir_txt2img_samples=str(far))
    (item,) = h.items()
    assert item.path == pic.as_posix()
    target = h.delete(item.path)
    assert target.is_relative_to(data / "outputs" / ".trash") and target.is_file() and not pic.exists()


# ---------------------------------------------------------------------------
# real jobs, the API and the tab


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    import webui
    from modules.app import App
    from modules.ui import build_ui
    from testing.tiny_models import write_tiny_checkpoint

    data = tmp_path_factory.mktemp("history")
    write_tiny_checkpoint(data / "models" / "Stable-diffusion" / "tiny.safetensors", "sd1")
    app = App(cmd_args.parse_args(["--data-dir", str(data), "--skip-install"]))
    app.refresh_models()
    app.opts.set("save_txt", True)
    result = app.process(GenerationRequest(prompt="a red circle", negative_prompt="blue", width=64, height=64,
                                           steps=2, seed=7, batch_size=2))
    ui = build_ui(app)
    client = TestClient(webui.create_server(app, with_ui=False, with_api=True))
    yield app, ui, client, data, result
    app.queue.stop()


def test_pictures_of_a_real_job(env):
    app, _, _, data, result = env
    items = history.for_app(app).items()
    saved = [Path(p) for p in result.saved_files] + [Path(result.grid_file)]
    assert sorted(i.file for i in items) == sorted(saved)
    assert [i.mtime for i in items] == sorted((i.mtime for i in items), reverse=True)
    by_file = {i.file: i for i in items}
    for path, text in zip(result.saved_files, result.infotexts):
        item = by_file[Path(path)]
        assert (item.infotext, item.prompt, item.width, item.height) == (text, "a red circle", 64, 64)
        assert item.date == dt.date.fromtimestamp(Path(path).stat().st_mtime).isoformat()
        assert Path(path).with_suffix(".txt").is_file()
    assert "Seed: 8" in by_file[Path(result.saved_files[1])].infotext


def test_api_lists_serves_and_deletes(env, tmp_path):
    app, _, client, data, result = env
    extra = make_png(data / "outputs" / "txt2img-images" / "2026-03-05" / "00099-3-api test.png",
                     info("api test", 3), stamp("2026-03-05"))
    r = client.get(f"{API}/history", params={"page_size": 2})
    assert r.status_code == 200
    body = r.json()
    assert (body["total"], body["page"], body["page_size"], len(body["items"])) == (4, 1, 2, 2)
    assert set(body["items"][0]) == {"path", "name", "date", "mtime", "width", "height", "infotext", "prompt", "url"}
    last = client.get(f"{API}/history", params={"page": 2, "page_size": 3}).json()["items"]
    assert [i["path"] for i in last] == [rel(data, extra)]
    found = client.get(f"{API}/history", params={"search": "API TEST", "date": "2026-03-05"}).json()
    (item,) = found["items"]
    assert item == {"path": rel(data, extra), "name": extra.name, "date": "2026-03-05", "mtime": pytest.approx(stamp("2026-03-05")),
                    "width": 8, "height": 6, "infotext": info("api test", 3), "prompt": "api test",
                    "url": f"{API}/history/image?path=outputs%2Ftxt2img-images%2F2026-03-05%2F00099-3-api%20test.png"}
    got = client.get(item["url"])
    assert got.status_code == 200 and got.headers["content-type"] == "image/png"
    assert got.headers["content-disposition"].startswith("inline")   # shown by a browser, not downloaded
    assert got.content == extra.read_bytes()
    assert client.get(f"{API}/history", params={"date": "05.03.2026"}).status_code == 422
    assert client.get(f"{API}/history", params={"page": 0}).status_code == 422
    (data / "config.json").touch()
    for bad in ["../config.json", "config.json", "outputs/../config.json", str(extra), "/etc/passwd",
                "outputs/txt2img-images/2026-03-05/../2026-03-05/00099-3-api test.png"]:
        r = client.get(f"{API}/history/image", params={"path": bad})
        assert r.status_code == 404 and r.json()["error"] == "NotFound", bad
        assert client.delete(f"{API}/history", params={"path": bad}).status_code == 404
    assert client.get(f"{API}/history/image?path=%2e%2e%2fconfig.json").status_code == 404
    r = client.delete(f"{API}/history", params={"path": item["path"]})
    assert r.status_code == 200
    assert r.json() == {"path": item["path"], "trash": "outputs/.trash/" + item["path"]}
    assert (data / "outputs" / ".trash" / item["path"]).read_bytes() == got.content and not extra.exists()
    assert client.get(f"{API}/history").json()["total"] == 3
    assert client.get(item["url"]).status_code == 404


def test_api_history_needs_the_api_login(tmp_path):
    import webui
    from modules.app import App

    make_png(tmp_path / "outputs" / "txt2img-images" / "x" / "00000-1.png", info("locked"))
    app = App(cmd_args.parse_args(["--data-dir", str(tmp_path), "--skip-install", "--api-auth", "me:pw"]))
    try:
        client = TestClient(webui.create_server(app, with_ui=False, with_api=True))
        path = "outputs/txt2img-images/x/00000-1.png"
        assert client.get(f"{API}/history").status_code == 401
        assert client.get(f"{API}/history/image", params={"path": path}).status_code == 401
        assert client.delete(f"{API}/history", params={"path": path}).status_code == 401
        assert (tmp_path / path).is_file()
        assert client.get(f"{API}/history", auth=("me", "pw")).json()["total"] == 1
    finally:
        app.queue.stop()


def test_the_tab_is_there(env):
    _, ui, _, _, _ = env
    ids = {b.elem_id for b in ui.blocks.blocks.values() if getattr(b, "elem_id", None)}
    assert {"tab_history", "history_gallery", "history_date", "history_search", "history_prev", "history_next",
            "history_page_info", "history_info", "history_send_txt2img", "history_send_img2img", "history_delete",
            "history_refresh"} <= ids
    labels = [b.label for b in ui.blocks.blocks.values() if isinstance(b, gr.Tab)]
    assert labels.index("PNG Info") < labels.index("History") < labels.index("Settings")


def test_tab_functions_list_select_send_and_delete(env):
    from modules.ui import history_ui

    app, ui, _, data, result = env
    first = Path(result.saved_files[0])
    hist = history.for_app(app)
    gallery, page_html, dates, page, paths, selected, _ = history_ui.render(app, "All", "a RED circle", 1)
    expected = [i.path for i in hist.items() if "a red circle" in i.infotext]
    assert paths == expected and len(gallery) == len(expected) == 3 and page == 1 and selected == ""
    assert "<b>1</b> / <b>1</b>" in page_html and "<b>3</b>" in page_html
    assert dates["value"] == "All" and dates["choices"][0] == ("All", "All")
    index = paths.index(rel(data, first))
    path, html = history_ui.select(app, paths, index)
    assert path == rel(data, first) and "Seed: 7" in html and "a red circle" in html

    upd = history_ui.send_to_txt2img(app, ui.txt2img, ui.tabs, path)
    t2i = ui.txt2img.c
    assert (upd[t2i["prompt"]], upd[t2i["negative_prompt"]], upd[t2i["seed"]], upd[t2i["steps"]]) == (
        "a red circle", "blue", 7, 2)
    assert upd[ui.tabs]["selected"] == "txt2img"
    upd = history_ui.send_to_img2img(app, ui.img2img, ui.tabs, path)
    i2i = ui.img2img.c
    assert upd[i2i["init_img"]].size == (64, 64) and upd[i2i["prompt"]] == "a red circle"
    assert upd[ui.tabs]["selected"] == "img2img" and upd[i2i["subtabs"]]["selected"] == "img2img"
    assert history_ui.send_to_txt2img(app, ui.txt2img, ui.tabs, "../config.json") == {}

    gallery, _, _, _, paths_after, _, _ = history_ui.delete(app, path, "All", "", 1)
    assert path not in paths_after and len(gallery) == len(paths_after) == len(hist.items())
    assert (data / "outputs" / ".trash" / path).is_file() and (data / "outputs" / ".trash" / path).with_suffix(".txt").is_file()
    assert not first.exists() and not first.with_suffix(".txt").exists()


def test_tab_paging_clamps_and_unknown_dates_fall_back(env, monkeypatch):
    from modules.ui import history_ui

    app, _, _, data, _ = env
    monkeypatch.setattr(history_ui, "PAGE_SIZE", 1)
    total = len(history.for_app(app).items())
    _, html, _, page, paths, _, _ = history_ui.render(app, "All", "", 99)
    assert page == total and len(paths) == 1 and f"<b>{total}</b> / <b>{total}</b>" in html
    _, _, dates, page, _, _, _ = history_ui.render(app, "1999-01-01", "", 1)
    assert dates["value"] == "All" and page == 1
    assert history_ui.select(app, paths, 5) == ("", history_ui.info_html(None))
