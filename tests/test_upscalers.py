"""Model upscalers: found in models/ESRGAN, models/RealESRGAN, ... by their weights, named as A1111 names them,
run in tiles, used by the hires pass, SD upscale, Extras and the API; bad files listed with their reason."""
from __future__ import annotations

import base64
import io
import pickle

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from modules import cmd_args, infotext, tiles, upscalers
from testing.tiny_upscalers import rrdb_state_dict, save, write_rrdb, write_srvgg

API = "/sdapi/v1"


def noise_image(w: int, h: int, seed: int = 0) -> Image.Image:
    rs = np.random.RandomState(seed)
    base = np.linspace(0, 255, w)[None, :, None] * 0.5 + rs.rand(h, w, 3) * 127
    return Image.fromarray(base.astype(np.uint8), "RGB")


def b64(im: Image.Image) -> str:
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def unb64(s: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(s.split(",", 1)[-1])))


class _Evil:
    def __reduce__(self):
        import pathlib
        return (pathlib.Path.touch, (pathlib.Path(MARKER[0]),))


MARKER: list = []


def write_zoo(models, tmp_path):
    """Good files of each kind and the bad ones, as a user's folders might hold them."""
    write_rrdb(models / "RealESRGAN" / "RealESRGAN_x4plus.pth")                       # BasicSR, params_ema
    write_rrdb(models / "RealESRGAN" / "RealESRGAN_x2plus.pth", scale=2, seed=1)       # pixel-unshuffle 2x
    write_srvgg(models / "RealESRGAN" / "realesr-general-x4v3.pth")                    # compact, params
    write_rrdb(models / "ESRGAN" / "4x-Tiny.safetensors", layout="old")                # community layout
    write_rrdb(models / "ESRGAN" / "2x_new.pth", layout="new", scale=2, seed=2)        # ESRGAN new arch
    bad = models / "ESRGAN"
    good = (models / "RealESRGAN" / "RealESRGAN_x4plus.pth").read_bytes()
    (bad / "truncated.pth").write_bytes(good[: len(good) // 2])
    (bad / "empty.pth").write_bytes(b"")
    torch.save({"encoder.conv_in.weight": torch.zeros(4, 3, 3, 3)}, bad / "not_an_upscaler.pth")
    MARKER[:] = [str(tmp_path / "pwned")]
    with open(bad / "evil.pth", "wb") as f:
        pickle.dump({"params": _Evil()}, f)
    torch.save({"params": _Evil()}, bad / "evil_zip.pth")
    (bad / "folder.pth").mkdir()


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    import webui
    from modules.app import App
    from testing.tiny_models import write_tiny_checkpoint

    data = tmp_path_factory.mktemp("up")
    write_tiny_checkpoint(data / "models" / "Stable-diffusion" / "tiny.safetensors", "sd1", seed=0)
    write_zoo(data / "models", data)
    app = App(cmd_args.parse_args(["--data-dir", str(data)]))
    app.refresh_models()
    client = TestClient(webui.create_server(app, with_ui=False, with_api=True))
    yield app, client, data
    app.queue.stop()


# ---------------------------------------------------------------------------
# listing and names


def test_listing_names_architectures_and_bad_files(env):
    app, client, data = env
    lib = app.upscalers
    got = {m.name: (m.arch, m.scale, m.folder) for m in lib.models.values()}
    assert got == {
        "R-ESRGAN 4x+": ("RealESRGAN", 4, "RealESRGAN"),
        "R-ESRGAN 2x+": ("RealESRGAN", 2, "RealESRGAN"),
        "R-ESRGAN General 4xV3": ("SRVGGNetCompact", 4, "RealESRGAN"),
        "4x-Tiny": ("ESRGAN", 4, "ESRGAN"),
        "2x_new": ("ESRGAN", 2, "ESRGAN"),
    }
    reasons = {b.filename.name: b.reason for b in lib.bad_files}
    assert set(reasons) == {"truncated.pth", "empty.pth", "not_an_upscaler.pth", "evil.pth", "evil_zip.pth",
                            "folder.pth"}
    assert "may be truncated" in reasons["truncated.pth"] and "may be truncated" in reasons["empty.pth"]
    assert "not an upscaler model" in reasons["not_an_upscaler.pth"]
    assert "bare pickle, which is refused" in reasons["evil.pth"]
    assert "refuses to run code" in reasons["evil_zip.pth"]
    assert reasons["folder.pth"] == "is a folder, not a model file"
    assert not (data / "pwned").exists()      # the pickles' code never ran
    assert lib.names()[:9] == [*upscalers.LATENT_UPSCALE_MODES, "None", "Lanczos", "Nearest"]
    assert lib.names(latent=False) == ["None", "Lanczos", "Nearest", "2x_new", "4x-Tiny", "R-ESRGAN 2x+",
                                       "R-ESRGAN 4x+", "R-ESRGAN General 4xV3"]

    items = client.get(f"{API}/upscalers").json()
    assert [u["name"] for u in items] == lib.names(latent=False)
    esr = next(u for u in items if u["name"] == "R-ESRGAN 4x+")
    assert esr["scale"] == 4 and esr["model_path"].endswith("RealESRGAN_x4plus.pth") and esr["model_url"] is None
    assert client.get(f"{API}/realesrgan-models").json() == [
        {"name": n, "path": str(lib.models[n].path), "scale": lib.models[n].scale}
        for n in ("R-ESRGAN 2x+", "R-ESRGAN 4x+", "R-ESRGAN General 4xV3")]
    assert client.post(f"{API}/refresh-checkpoints").status_code == 200   # the bad files stop nothing


def test_resolve_by_name_file_name_and_missing(env):
    lib = env[0].upscalers
    assert lib.resolve("R-ESRGAN 4x+").path.name == "RealESRGAN_x4plus.pth"
    assert lib.resolve("realesrgan_x4plus").name == "R-ESRGAN 4x+"      # the file's stem, any case
    assert lib.resolve("Lanczos") is None
    with pytest.raises(upscalers.UpscalerError, match=r"put realesr-animevideov3\.pth into models/RealESRGAN/"):
        lib.resolve("R-ESRGAN AnimeVideo")
    with pytest.raises(upscalers.UpscalerError, match="cannot be used: truncated.pth"):
        lib.resolve("truncated")
    with pytest.raises(upscalers.UpscalerError, match="installed models: 2x_new, 4x-Tiny"):
        lib.resolve("4x-UltraSharp")


# ---------------------------------------------------------------------------
# running: A1111's sizes, tiles


def test_upscale_runs_the_network_then_lanczos_to_size(env):
    lib = env[0].upscalers
    im = noise_image(24, 16)
    net, info = lib.network(lib.resolve("R-ESRGAN 4x+"))
    with torch.inference_mode():
        ref = net(torch.from_numpy(np.asarray(im, np.float32) / 255).permute(2, 0, 1)[None])
    ref = Image.fromarray((ref[0].clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    assert ref.size == (96, 64)
    # exactly 4x: the network's picture itself; 3x: the network, then Lanczos down
    assert np.array_equal(np.asarray(lib.upscale(im, "R-ESRGAN 4x+", 96, 64)), np.asarray(ref))
    assert np.array_equal(np.asarray(lib.upscale(im, "R-ESRGAN 4x+", 72, 48)),
                          np.asarray(ref.resize((72, 48), Image.LANCZOS)))
    # 8x: the 4x network twice (A1111 runs it again while the picture is smaller than the target)
    calls = []
    hook = net.register_forward_hook(lambda m, i, o: calls.append(tuple(o.shape[-2:])))
    try:
        assert lib.upscale(im, "R-ESRGAN 2x+", 192, 128).size == (192, 128)
        assert lib.upscale(im, "R-ESRGAN 4x+", 192, 128).size == (192, 128)
    finally:
        hook.remove()
    assert calls == [(64, 96), (256, 384)]


def _interior_mask(size: int, tile: int, overlap: int, scale: int, margin: int) -> np.ndarray:
    """True where an output pixel is at least ``margin`` input pixels from every tile edge inside the picture."""
    starts = tiles._starts(size, tile, overlap)
    edges = sorted({s for s in starts if s > 0} | {s + tile for s in starts if s + tile < size})
    pos = (np.arange(size * scale) + 0.5) / scale
    far = np.ones(size * scale, bool)
    for e in edges:
        far &= np.abs(pos - e) >= margin
    return far


def test_tiled_equals_whole_away_from_seams_on_512px():
    """A 4x RRDBNet on a 512x512 picture: 192-px tiles (A1111's default) give the whole-picture result
    within 1/255 wherever a pixel's receptive field lies inside one tile (the network sees 17 input pixels
    around a pixel: conv_first, 15 convs of one RRDB, conv_body; the upsampling convs add under 1)."""
    torch.manual_seed(0)
    from modules import upscaler_nets

    net, info = upscaler_nets.load(rrdb_state_dict("basicsr", nf=8, gc=4, nb=1, scale=4, seed=3))
    im = noise_image(512, 512, seed=5)
    whole = np.asarray(upscalers.run_tiled(net, im, 0, 0)).astype(int)
    done = []
    tiled = np.asarray(upscalers.run_tiled(net, im, 192, 8, progress=lambda d, t: done.append((d, t)))).astype(int)
    assert whole.shape == tiled.shape == (2048, 2048, 3)
    assert done[-1] == (9, 9)          # 3 x 3 tiles, each reported
    assert whole.std() > 10            # the picture is not flat: the comparison means something
    far = _interior_mask(512, 192, 8, 4, margin=19)
    mask = far[:, None] & far[None, :]
    assert mask.mean() > 0.5
    assert np.abs(whole - tiled)[mask].max() <= 1
    # at the seams the tiles do differ (the test would see a tiler that ignored its tiles)
    assert np.abs(whole - tiled)[~mask].max() > 1


# ---------------------------------------------------------------------------
# where upscalers are used


def _txt2img(client, **kw):
    body = {"prompt": "a red circle", "steps": 4, "width": 64, "height": 64, "seed": 7, "sampler_name": "Euler",
            "enable_hr": True, "hr_scale": 2, "denoising_strength": 0.5, "hr_second_pass_steps": 2}
    body.update(kw)
    return client.post(f"{API}/txt2img", json=body)


def test_hires_fix_with_a_model_upscaler_by_its_a1111_name(env):
    app, client, _ = env
    net, _ = app.upscalers.network(app.upscalers.resolve("R-ESRGAN 4x+"))
    calls = []
    hook = net.register_forward_hook(lambda m, i, o: calls.append(tuple(o.shape)))
    try:
        r = _txt2img(client, hr_upscaler="R-ESRGAN 4x+")
    finally:
        hook.remove()
    assert r.status_code == 200, r.text
    assert calls == [(1, 3, 256, 256)]   # the decoded 64 px picture through the 4x network, then Lanczos to 128
    out = unb64(r.json()["images"][0])
    assert out.size == (128, 128)
    params = infotext.parse_generation_parameters(r.json()["info"] and __import__("json").loads(
        r.json()["info"])["infotexts"][0])
    assert params["Hires upscaler"] == "R-ESRGAN 4x+"
    lanczos = unb64(_txt2img(client, hr_upscaler="Lanczos").json()["images"][0])
    assert not np.array_equal(np.asarray(out), np.asarray(lanczos))
    # a recipe naming an upscaler that is not installed is refused before it is queued, saying what to do
    r = _txt2img(client, hr_upscaler="R-ESRGAN AnimeVideo")
    assert r.status_code == 422 and "realesr-animevideov3.pth" in r.json()["detail"]


def test_pasted_recipe_selects_the_installed_upscaler(env):
    from types import SimpleNamespace

    from modules.ui import common

    app = env[0]
    tab = SimpleNamespace(c={"hr_upscaler": object()}, name="txt2img")
    params = infotext.parse_generation_parameters("a cat\nSteps: 20, Hires upscale: 2, Hires upscaler: R-ESRGAN 4x+")
    assert common._control_value("hr_upscaler", params["Hires upscaler"], app) == "R-ESRGAN 4x+"
    assert common._control_value("hr_upscaler", "RealESRGAN_x4plus", app) == "R-ESRGAN 4x+"
    assert common._control_value("hr_upscaler", "R-ESRGAN AnimeVideo", app) is None
    del tab


def test_sd_upscale_script_uses_the_model(env):
    app, client, _ = env
    src = noise_image(32, 32)
    net, _ = app.upscalers.network(app.upscalers.resolve("R-ESRGAN 2x+"))
    calls = []
    hook = net.register_forward_hook(lambda m, i, o: calls.append(tuple(o.shape)))
    try:
        r = client.post(f"{API}/img2img", json={
            "init_images": [b64(src)], "prompt": "x", "steps": 2, "width": 64, "height": 64, "seed": 3,
            "denoising_strength": 0.3, "script_name": "SD upscale", "script_args": ["", 16, "R-ESRGAN 2x+", 2.0]})
    finally:
        hook.remove()
    assert r.status_code == 200, r.text
    assert calls == [(1, 3, 64, 64)]
    assert unb64(r.json()["images"][0]).size == (64, 64)


def test_extras_api_single_and_batch(env):
    app, client, data = env
    src = noise_image(20, 12)
    r = client.post(f"{API}/extra-single-image", json={"image": b64(src), "upscaler_1": "4x-Tiny",
                                                       "upscaling_resize": 4})
    assert r.status_code == 200, r.text
    out = unb64(r.json()["image"])
    assert out.size == (80, 48)
    assert r.json()["html_info"] == "<p>Postprocess upscale by: 4, Postprocess upscaler: 4x-Tiny</p>"
    # the old-layout file and the BasicSR one hold the same weights (same seed): the same picture
    same = unb64(client.post(f"{API}/extra-single-image", json={
        "image": b64(src), "upscaler_1": "R-ESRGAN 4x+", "upscaling_resize": 4}).json()["image"])
    assert np.array_equal(np.asarray(out), np.asarray(same))
    # two upscalers blended
    r = client.post(f"{API}/extra-single-image", json={
        "image": b64(src), "upscaler_1": "R-ESRGAN 4x+", "upscaler_2": "Lanczos", "extras_upscaler_2_visibility": 0.5,
        "upscaling_resize": 4})
    lanczos = src.resize((80, 48), Image.LANCZOS)
    assert np.array_equal(np.asarray(unb64(r.json()["image"]).convert("RGB")),
                          np.asarray(Image.blend(same.convert("RGB"), lanczos, 0.5)))
    assert "Postprocess upscaler 2: Lanczos, Postprocess upscaler 2 visibility: 0.5" in r.json()["html_info"]

    r = client.post(f"{API}/extra-batch-images", json={
        "imageList": [{"data": b64(src), "name": "a.png"}, {"data": b64(noise_image(16, 16, 1)), "name": "b.png"}],
        "upscaler_1": "R-ESRGAN General 4xV3", "upscaling_resize": 2})
    assert r.status_code == 200, r.text
    assert [unb64(s).size for s in r.json()["images"]] == [(40, 24), (32, 32)]
    assert not (data / "outputs" / "extras-images").exists()   # A1111's API returns, it does not save
    r = client.post(f"{API}/extra-batch-images", json={"imageList": [{"data": b64(src), "name": "a.png"}],
                                                       "upscaler_1": "R-ESRGAN AnimeVideo"})
    assert r.status_code == 422 and "realesr-animevideov3.pth" in r.json()["detail"]
    assert client.post(f"{API}/extra-batch-images", json={"imageList": []}).status_code == 422


def test_a_file_that_breaks_after_listing_is_an_error_not_a_crash(env, tmp_path):
    app, client, data = env
    path = data / "models" / "ESRGAN" / "later.pth"
    write_rrdb(path, seed=9)
    app.upscalers.refresh()
    path.write_bytes(path.read_bytes()[:100])     # damaged after it was listed
    r = client.post(f"{API}/extra-single-image", json={"image": b64(noise_image(8, 8)), "upscaler_1": "later"})
    assert r.status_code == 500 and "later.pth" in r.json()["detail"]
    path.unlink()
    app.upscalers.refresh()
    r = client.post(f"{API}/extra-single-image", json={"image": b64(noise_image(8, 8)), "upscaler_1": "Lanczos"})
    assert r.status_code == 200


def test_weights_in_a_safetensors_file_and_in_a_bare_state_dict(tmp_path):
    """The same weights as .pth (BasicSR's params_ema wrapper), bare .pth and .safetensors: one picture."""
    class P:
        models_dir = tmp_path
    sd = rrdb_state_dict("basicsr", seed=4)
    save(sd, tmp_path / "ESRGAN" / "a.pth")
    save(sd, tmp_path / "ESRGAN" / "b.pth", wrap=None)
    save(sd, tmp_path / "ESRGAN" / "c.safetensors")
    lib = upscalers.UpscalerLibrary.from_paths(P)
    lib.refresh()
    im = noise_image(10, 10)
    outs = [np.asarray(lib.upscale(im, n, 40, 40)) for n in ("a", "b", "c")]
    assert np.array_equal(outs[0], outs[1]) and np.array_equal(outs[0], outs[2])


def test_swinir_and_dat_files_by_a1111_names_with_their_own_tile_settings(tmp_path):
    from tests.test_upscaler_transformers import DAT_CONFIGS, SWINIR_CONFIGS, dat_sd, swin_sd

    class P:
        models_dir = tmp_path
    save(swin_sd(SWINIR_CONFIGS["realworld_x4"]), tmp_path / "SwinIR" / "SwinIR_4x.pth", wrap="params_ema")
    save(dat_sd(DAT_CONFIGS["x2"]), tmp_path / "DAT" / "DAT_x2.pth", wrap="params")
    lib = upscalers.UpscalerLibrary.from_paths(P)
    lib.refresh()
    assert {m.name: (m.arch, m.scale, m.half) for m in lib.models.values()} == {
        "SwinIR 4x": ("SwinIR", 4, True), "DAT x2": ("DAT", 2, False)}
    im = noise_image(40, 24)
    counts = {}
    for name, opts in (("SwinIR 4x", {"SWIN_tile": 16, "SWIN_tile_overlap": 4, "ESRGAN_tile": 0}),
                       ("DAT x2", {"DAT_tile": 0, "SWIN_tile": 16})):
        seen = []
        out = lib.upscale(im, name, im.width * lib.models[name].scale, im.height * lib.models[name].scale,
                          opts=opts, progress=lambda d, t: seen.append(t))
        assert out.size == (im.width * lib.models[name].scale, im.height * lib.models[name].scale)
        assert np.asarray(out).std() > 1
        counts[name] = seen[-1]
    assert counts == {"SwinIR 4x": 6, "DAT x2": 1}   # SwinIR: 3 x 2 tiles of 16 px; DAT: whole (DAT_tile 0)


def test_img2img_enlarges_its_init_image_with_the_upscaler_for_img2img_setting(env):
    app, client, _ = env
    net, _ = app.upscalers.network(app.upscalers.resolve("R-ESRGAN 2x+"))
    calls = []
    hook = net.register_forward_hook(lambda m, i, o: calls.append(tuple(o.shape)))
    body = {"init_images": [b64(noise_image(32, 32))], "prompt": "x", "steps": 2, "width": 64, "height": 64,
            "seed": 3, "denoising_strength": 0.3}
    try:
        plain = client.post(f"{API}/img2img", json=body)
        assert calls == []                       # "None" (the default): Lanczos
        model = client.post(f"{API}/img2img", json={**body, "override_settings": {
            "upscaler_for_img2img": "R-ESRGAN 2x+"}})
    finally:
        hook.remove()
    assert plain.status_code == model.status_code == 200, model.text
    assert calls == [(1, 3, 64, 64)]
    assert unb64(plain.json()["images"][0]).tobytes() != unb64(model.json()["images"][0]).tobytes()


def test_the_page_names_the_skipped_upscaler_files(env):
    from modules import ui

    text = ui.model_status_html(env[0])
    assert "Skipped upscaler files: " in text and "empty.pth: not a PyTorch file" in text
    assert "(and 1 more)" in text     # six bad files, five named
