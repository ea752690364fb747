"""sd-webui-controlnet's routes: /controlnet/version, model_list, module_list, settings, detect — the answers its
clients read, errors as 422 naming the field."""
from __future__ import annotations

import base64
import io

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from modules import cmd_args
from modules.controlnet import preprocessors


def b64(im: Image.Image) -> str:
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def unb64(s: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(s))))


def shapes(w=96, h=64) -> Image.Image:
    a = np.zeros((h, w, 3), np.uint8)
    cv2.rectangle(a, (10, 10), (50, 40), (255, 255, 255), -1)
    cv2.circle(a, (70, 30), 15, (200, 80, 30), -1)
    return Image.fromarray(a)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    import webui
    from modules.app import App
    from testing.tiny_controlnets import write_tiny_controlnet

    data = tmp_path_factory.mktemp("cnapi")
    write_tiny_controlnet(data / "models" / "ControlNet" / "control_v11p_sd15_canny.safetensors", "sd1")
    (data / "models" / "ControlNet" / "broken.safetensors").write_bytes(b"\x00" * 10)
    app = App(cmd_args.parse_args(["--data-dir", str(data)]))
    app.refresh_models()
    client = TestClient(webui.create_server(app, with_ui=False, with_api=True))
    yield app, client
    app.queue.stop()


def test_version_settings_and_model_list(env):
    app, client = env
    assert client.get("/controlnet/version").json() == {"version": 2}
    assert client.get("/controlnet/settings").json()["control_net_unit_count"] == 3
    titles = client.get("/controlnet/model_list").json()["model_list"]
    assert len(titles) == 1 and titles[0].startswith("control_v11p_sd15_canny [") and titles[0].endswith("]")
    assert len(titles[0].split("[")[1].rstrip("]")) == 8          # A1111's legacy 8-digit hash, as the extension
    assert [p.name for p, _ in app.controlnets.bad_files] == ["broken.safetensors"]
    assert app.controlnets.find("control_v11p_sd15_canny").title == titles[0]
    assert app.controlnets.find(titles[0].split(" [")[0] + " [00000000]").title == titles[0]   # a stale hash


def test_module_list_shapes(env):
    _, client = env
    plain = client.get("/controlnet/module_list").json()
    assert plain == preprocessors.module_list(False)
    assert plain["module_list"][:2] == ["none", "canny"]
    detail = plain["module_detail"]["canny"]
    assert detail["model_free"] is False
    assert [(s["name"], s["value"]) for s in detail["sliders"]][1:] == [("Canny Low Threshold", 100),
                                                                        ("Canny High Threshold", 200)]
    aliased = client.get("/controlnet/module_list", params={"alias_names": True}).json()["module_list"]
    assert "invert (from white bg & black line)" in aliased


def test_detect_canny_is_opencvs_at_the_requested_thresholds(env):
    _, client = env
    im = shapes()
    r = client.post("/controlnet/detect", json={"controlnet_module": "canny", "controlnet_input_images": [b64(im)],
                                                "controlnet_processor_res": 64, "controlnet_threshold_a": 50,
                                                "controlnet_threshold_b": 150})
    assert r.status_code == 200, r.text
    assert r.json()["info"] == "Success"
    got = unb64(r.json()["images"][0])
    want = cv2.Canny(np.asarray(im), 50, 150)          # 64 px is the picture's short side: no resize
    assert got.shape[:2] == want.shape
    assert np.array_equal(got if got.ndim == 2 else got[..., 0], want)
    assert want.any()


def test_detect_errors_name_the_field(env):
    _, client = env
    im = b64(shapes())
    bad = client.post("/controlnet/detect", json={"controlnet_module": "nope", "controlnet_input_images": [im]})
    assert bad.status_code == 422 and "nope" in bad.json()["detail"]
    none = client.post("/controlnet/detect", json={"controlnet_module": "canny", "controlnet_input_images": []})
    assert none.status_code == 422 and none.json()["detail"].endswith("No image selected")
    weights = client.post("/controlnet/detect", json={"controlnet_module": "depth_midas",
                                                      "controlnet_input_images": [im]})
    assert weights.status_code == 422 and "dpt_hybrid-midas-501f0c75.pt" in weights.json()["detail"]
    junk = client.post("/controlnet/detect", json={"controlnet_module": "canny", "controlnet_input_images": ["@@"]})
    assert junk.status_code == 422
