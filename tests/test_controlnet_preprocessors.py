"""ControlNet preprocessors: canny is OpenCV's Canny pixel for pixel (through the extension's resize-and-pad
pipeline, written out again here), the other weight-free maps have the extension's size and their
defining property, weight-needing ones say which file they need, and the listing has the extension's
names, order and slider defaults."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from modules.controlnet import preprocessors as pp


# ---- test images ----------------------------------------------------------------------------------

def shapes(h=512, w=512):
    img = np.full((h, w, 3), 255, np.uint8)
    cv2.rectangle(img, (w // 8, h // 8), (w // 2, h // 2), (200, 30, 30), -1)
    cv2.circle(img, (2 * w // 3, 2 * h // 3), min(h, w) // 5, (20, 160, 60), -1)
    cv2.line(img, (0, h - 1), (w - 1, h // 3), (0, 0, 0), 3)
    return img


def gradients(h=448, w=640):
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r = np.hypot(yy - h / 2, xx - w / 2)
    img = np.stack([xx / w * 255, yy / h * 255, (np.sin(r / 9) * 0.5 + 0.5) * 255], axis=2)
    return img.clip(0, 255).astype(np.uint8)


def photo_noise(h=384, w=576, seed=0):
    rng = np.random.default_rng(seed)
    base = cv2.GaussianBlur(rng.uniform(0, 255, (h, w, 3)).astype(np.float32), (0, 0), 6)
    base = (base - base.min()) / (base.max() - base.min()) * 200 + 20
    return (base + rng.normal(0, 12, (h, w, 3))).clip(0, 255).astype(np.uint8)


IMAGES = {"shapes": shapes(), "gradients": gradients(), "noise": photo_noise()}


def reference_canny(img, res, low, high):
    """The extension's canny written out: short side to res, edge-pad to 64, cv2.Canny, crop."""
    h_raw, w_raw = img.shape[:2]
    k = res / min(h_raw, w_raw)
    h, w = int(np.round(h_raw * k)), int(np.round(w_raw * k))
    small = cv2.resize(img, (w, h), interpolation=cv2.INTER_CUBIC if k > 1 else cv2.INTER_AREA)
    padded = np.pad(small, ((0, (-h) % 64), (0, (-w) % 64), (0, 0)), mode="edge")
    return cv2.Canny(padded, low, high)[:h, :w]


# ---- canny ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(IMAGES))
@pytest.mark.parametrize("res", [512, 256, 300, 700])
@pytest.mark.parametrize("low,high", [(100, 200), (50, 150), (1, 255), (150.5, 220.0)])
def test_canny_is_opencv_canny_pixel_for_pixel(name, res, low, high):
    img = IMAGES[name]
    got = pp.run("canny", img, res, low, high)
    want = reference_canny(img, res, low, high)
    assert got.dtype == np.uint8 and got.shape == want.shape
    assert np.array_equal(got, want)
    assert set(np.unique(got)) <= {0, 255}


@pytest.mark.parametrize("name", ["shapes", "noise"])
@pytest.mark.parametrize("low,high", [(100, 200), (30, 90)])
def test_canny_at_the_image_own_size_is_plain_cv2_canny(name, low, high):
    img = IMAGES[name]  # sides already multiples of 64: no resize, no padding
    res = min(img.shape[:2])
    assert np.array_equal(pp.run("canny", img, res, low, high), cv2.Canny(img, low, high))


def test_canny_map_size_follows_the_short_side_and_defaults():
    img = gradients(300, 450)
    assert pp.run("canny", img, 512).shape == (512, 768)
    assert pp.run("canny", img, 200).shape == (200, 300)
    # -1 / None: the sliders' defaults (512, 100, 200), as the extension's bound check does
    assert np.array_equal(pp.run("canny", img, -1, -1, -1), reference_canny(img, 512, 100, 200))
    assert np.array_equal(pp.run("canny", img), reference_canny(img, 512, 100, 200))


# ---- the other weight-free preprocessors ---------------------------------------------------------

def test_none_returns_the_image():
    img = IMAGES["noise"]
    assert pp.run("none", img, 512) is img


def test_invert_is_255_minus_x_without_resizing():
    img = IMAGES["gradients"]
    for module in ("invert", "invert (from white bg & black line)"):
        out = pp.run(module, img, 256)
        assert out.shape == img.shape and out.dtype == np.uint8
        assert np.array_equal(out, 255 - img)
    grey = img[:, :, 0]
    assert np.array_equal(pp.run("invert", grey), np.repeat(255 - grey[:, :, None], 3, axis=2))
    rgba = np.concatenate([img, np.zeros_like(img[:, :, :1])], axis=2)  # transparent: white, inverted black
    assert not pp.run("invert", rgba).any()


@pytest.mark.parametrize("thr", [0, 64, 127, 200])
def test_threshold_is_binary_and_respects_the_threshold(thr):
    img = IMAGES["noise"]
    out = pp.run("threshold", img, min(img.shape[:2]), thr)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert set(np.unique(out)) <= {0, 255}
    assert np.array_equal(out[:, :, 0] == 255, img.min(axis=2) > thr)
    assert np.array_equal(out[:, :, 0], out[:, :, 2])
    small = pp.run("threshold", img, 192, thr)
    assert small.shape == (192, 288, 3)


def test_threshold_default_is_127():
    img = IMAGES["shapes"]
    assert np.array_equal(pp.run("threshold", img, 512), pp.run("threshold", img, 512, 127))


def test_scribble_xdog_marks_dark_lines():
    img = np.full((256, 256, 3), 255, np.uint8)
    cv2.line(img, (20, 128), (236, 128), (0, 0, 0), 2)
    out = pp.run("scribble_xdog", img, 256)
    assert out.shape == (256, 256, 3) and set(np.unique(out)) <= {0, 255}
    assert out[127:130, 30:226].all() and not out[:100].any() and not out[160:].any()
    assert not pp.run("scribble_xdog", np.full((128, 128, 3), 90, np.uint8), 128).any()  # flat: nothing
    assert pp.run("scribble_xdog", IMAGES["noise"], 64, 32).shape == (64, 96, 3)


def test_blur_gaussian_lowers_the_spread():
    img = IMAGES["noise"]
    res = min(img.shape[:2])
    sharp = img.astype(np.float64).std()
    soft = pp.run("blur_gaussian", img, res, 1.0)
    softer = pp.run("blur_gaussian", img, res, 9.0)
    assert soft.shape == img.shape and soft.dtype == np.uint8
    assert sharp > soft.std() > softer.std()
    assert np.array_equal(softer, cv2.GaussianBlur(img, (0, 0), 9.0))
    assert np.array_equal(pp.run("blur_gaussian", img, res), softer)  # default sigma 9
    assert pp.run("blur_gaussian", img, 128, 2.0).shape == (128, 192, 3)


@pytest.mark.parametrize("rate,size", [(1.0, (448, 640)), (1.05, (448, 640)), (2.0, (224, 320)),
                                       (3.3, (135, 193)), (8.0, (56, 80))])
def test_tile_resample_divides_the_size_by_threshold_a(rate, size):
    img = IMAGES["gradients"]
    out = pp.run("tile_resample", img, 512, rate)
    assert out.shape == (*size, 3) and out.dtype == np.uint8
    assert out.shape[:2] == (int(448 / rate), int(640 / rate)) or rate < 1.1
    if rate < 1.1:
        assert np.array_equal(out, img)


def test_tile_colorfix_maps_are_the_image():
    img = IMAGES["shapes"]
    assert pp.run("tile_colorfix", img, 512, 8) is img
    assert pp.run("tile_colorfix+sharp", img, 512, 8, 1.0) is img
    assert pp.get("tile_colorfix+sharp").resolve(-1, -1, -1) == {"thr_a": 8.0, "thr_b": 1.0}


def test_shuffle_is_a_reproducible_remap_with_a_seed():
    img = IMAGES["shapes"]
    a = pp.run("shuffle", img, 256, seed=1)
    b = pp.run("shuffle", img, 256, seed=1)
    c = pp.run("shuffle", img, 256, seed=2)
    assert a.shape == (256, 256, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    small = pp.resized(img, 256)
    lo, hi = small.reshape(-1, 3).min(0), small.reshape(-1, 3).max(0)
    assert (a.reshape(-1, 3) >= lo).all() and (a.reshape(-1, 3) <= hi).all()  # colours come from the image


def test_shuffle_without_seed_draws_like_the_extension_from_numpy_global_generator():
    img = IMAGES["noise"]
    np.random.seed(5)
    global_draw = pp.run("shuffle", img, 192)
    assert np.array_equal(global_draw, pp.run("shuffle", img, 192, seed=5))
    assert not np.array_equal(pp.run("shuffle", img, 192), pp.run("shuffle", img, 192))
    assert global_draw.shape == (192, 288, 3)


def test_color_grid_is_a_square_of_64_pixel_cells():
    out = pp.run("t2ia_color_grid", IMAGES["gradients"], 512)
    assert out.shape == (512, 512, 3) and out.dtype == np.uint8
    cells = out.reshape(8, 64, 8, 64, 3)
    assert (cells == cells[:, :1, :, :1]).all()
    assert pp.run("color", IMAGES["gradients"], 256).shape == (256, 256, 3)


def test_lineart_standard_and_recolor():
    white = np.full((128, 192, 3), 255, np.uint8)
    assert not pp.run("lineart_standard", white, 128).any()
    lines = pp.run("lineart_standard (from white bg & black line)", shapes(256, 256), 256)
    assert lines.shape == (256, 256) and lines.max() > 100
    for module in ("recolor_luminance", "recolor_intensity"):
        grey = pp.run(module, IMAGES["noise"], 512, 1.0)
        assert grey.shape == IMAGES["noise"].shape
        assert np.array_equal(grey[:, :, 0], grey[:, :, 1]) and np.array_equal(grey[:, :, 1], grey[:, :, 2])
        assert pp.run(module, IMAGES["noise"], 512, 0.5).mean() > grey.mean()  # gamma < 1 brightens


# ---- inpaint ------------------------------------------------------------------------------------

def test_inpaint_marks_the_masked_region_with_minus_one():
    img = IMAGES["noise"]
    mask = np.zeros(img.shape[:2], np.uint8)
    mask[100:200, 150:300] = 255
    rgba = np.concatenate([img, mask[:, :, None]], axis=2)
    for module in ("inpaint_only", "inpaint", "inpaint_global_harmonious"):
        by_arg = pp.run(module, img, 512, mask=mask)
        assert np.array_equal(by_arg, rgba) and by_arg.dtype == np.uint8
        assert np.array_equal(pp.run(module, rgba, 512), rgba)  # the mask as alpha
        hint = pp.control_hint(module, by_arg)
        assert hint.dtype == np.float32 and hint.shape == img.shape
        assert (hint[100:200, 150:300] == -1).all()
        outside = mask == 0
        assert np.allclose(hint[outside], img[outside] / 255.0) and hint[outside].min() >= 0
    assert np.array_equal(pp.run("inpaint_only", img, 512, mask=mask > 0), rgba)  # a bool mask
    assert np.array_equal(pp.run("inpaint_only", img, 512, mask=np.repeat(mask[:, :, None], 3, 2)), rgba)


def test_inpaint_without_mask_and_wrong_mask():
    img = IMAGES["shapes"]
    out = pp.run("inpaint_only", img)
    assert out.shape == (512, 512, 4) and not out[:, :, 3].any()
    assert np.allclose(pp.control_hint("inpaint_only", out), img / 255.0)
    with pytest.raises(ValueError):
        pp.run("inpaint_only", img, mask=np.zeros((10, 10), np.uint8))
    assert pp.control_hint("canny", pp.run("canny", img)).shape == (512, 512, 3)
    assert pp.preview(out).shape == (512, 512, 3)


# ---- weights, availability, listing ---------------------------------------------------------------

@pytest.mark.parametrize("module,files", [
    ("depth_midas", ["dpt_hybrid-midas-501f0c75.pt"]),
    ("openpose", ["body_pose_model.pth", "hand_pose_model.pth", "facenet.pth"]),
    ("lineart_realistic", ["sk_model.pth"]),
    ("normal_bae", ["scannet.pt"]),
    ("seg_ofade20k", ["250_16_swin_l_oneformer_ade20k_160k.pth"]),
    ("softedge_hed", ["ControlNetHED.pth"]),
])
def test_weight_needing_preprocessors_are_unavailable_and_name_their_files(tmp_path, module, files):
    p = pp.get(module)
    assert p.needs_weights == files and p.fn is None
    ok, why = p.available(tmp_path)
    assert not ok and all(f in why for f in files)
    with pytest.raises(pp.PreprocessorUnavailable, match=files[0]):
        p(IMAGES["shapes"], 512, annotator_dir=tmp_path)
    assert pp.availability(tmp_path)[p.name] == {"label": p.label, "available": False, "reason": why,
                                                  "needs_weights": files}


def test_found_weights_need_a_registered_network(tmp_path, monkeypatch):
    monkeypatch.delitem(pp._NETWORKS, "depth", raising=False)   # the MiDaS annotator registers one
    (tmp_path / "midas").mkdir()
    weight = tmp_path / "midas" / "dpt_hybrid-midas-501f0c75.pt"
    weight.write_bytes(b"x")
    p = pp.get("depth")
    ok, why = p.available(tmp_path)
    assert not ok and "network" in why
    seen = {}

    def fake_depth(image, res=512, thr_a=None, thr_b=None, weights=None, **kw):
        seen.update(res=res, weights=weights)
        return pp.resized(image, res)[:, :, 0]

    monkeypatch.setitem(pp._NETWORKS, "depth", fake_depth)
    assert p.available(tmp_path) == (True, "")
    assert pp.run("depth_midas", IMAGES["shapes"], -1, annotator_dir=tmp_path).shape == (512, 512)
    assert seen == {"res": 512, "weights": {"dpt_hybrid-midas-501f0c75.pt": weight}}


def test_weight_free_ones_are_available_and_unsupported_ones_say_why(tmp_path):
    table = pp.availability(tmp_path)
    for name in ("none", "invert", "canny", "threshold", "scribble_xdog", "blur_gaussian", "tile_resample",
                 "tile_colorfix", "tile_colorfix+sharp", "shuffle", "inpaint", "inpaint_only", "color",
                 "lineart_standard", "recolor_luminance", "recolor_intensity"):
        assert table[name]["available"], name
        assert table[name]["needs_weights"] == []
    assert "not supported" in table["reference_only"]["reason"]
    assert "ControlNetLama.pth" in table["inpaint_only+lama"]["reason"]
    assert table["ip-adapter_clip_sd15"]["needs_weights"] == ["clip_h.pth"]


EXTENSION_ORDER = [
    "none", "canny", "depth", "depth_leres", "depth_leres++", "hed", "hed_safe", "mediapipe_face", "mlsd",
    "normal_map", "openpose", "openpose_hand", "openpose_face", "openpose_faceonly", "openpose_full",
    "dw_openpose_full", "clip_vision", "revision_clipvision", "revision_ignore_prompt", "ip-adapter_clip_sd15",
    "ip-adapter_clip_sdxl", "color", "pidinet", "pidinet_safe", "pidinet_sketch", "pidinet_scribble",
    "scribble_xdog", "scribble_hed", "segmentation", "threshold", "depth_zoe", "normal_bae", "oneformer_coco",
    "oneformer_ade20k", "lineart", "lineart_coarse", "lineart_anime", "lineart_standard", "shuffle",
    "tile_resample", "invert", "lineart_anime_denoise", "reference_only", "reference_adain",
    "reference_adain+attn", "inpaint", "inpaint_only", "inpaint_only+lama", "tile_colorfix",
    "tile_colorfix+sharp", "recolor_luminance", "recolor_intensity", "blur_gaussian",
]


def test_module_list_has_the_extension_names_order_and_shape():
    keys = pp.module_list()
    assert keys["module_list"] == EXTENSION_ORDER
    assert list(keys["module_detail"]) == EXTENSION_ORDER
    aliases = pp.module_list(alias_names=True)
    assert aliases["module_list"][:3] == ["none", "canny", "depth_midas"]
    for label in ("invert (from white bg & black line)", "lineart_realistic", "t2ia_color_grid",
                  "inpaint_global_harmonious", "seg_ofade20k", "softedge_hed", "normal_midas"):
        assert label in aliases["module_list"] and label in aliases["module_detail"]
    assert keys["module_detail"]["canny"] == {"model_free": False, "sliders": [
        {"name": "Preprocessor Resolution", "value": 512, "min": 64, "max": 2048},
        {"name": "Canny Low Threshold", "value": 100, "min": 1, "max": 255},
        {"name": "Canny High Threshold", "value": 200, "min": 1, "max": 255}]}
    assert keys["module_detail"]["tile_resample"]["sliders"] == [
        None, {"name": "Down Sampling Rate", "value": 1.0, "min": 1.0, "max": 8.0, "step": 0.01}]
    assert keys["module_detail"]["lineart"] == {"model_free": False, "sliders": []}
    assert keys["module_detail"]["reference_only"]["model_free"] is True
    assert aliases["module_detail"]["inpaint_global_harmonious"] == {"model_free": False, "sliders": []}


def test_names_and_aliases_resolve_to_the_same_preprocessor_and_ui_order():
    assert pp.get("depth_midas") is pp.get("depth") and pp.basename("depth_midas") == "depth"
    assert pp.get(None) is pp.get("none") and pp.get("no such thing") is None
    with pytest.raises(KeyError):
        pp.run("no such thing", IMAGES["shapes"])
    labels = pp.ui_labels()
    assert labels[:2] == ["none", "invert (from white bg & black line)"]
    assert labels[2:] == sorted(labels[2:]) and len(labels) == len(EXTENSION_ORDER)


def test_slider_defaults_per_module():
    assert pp.get("canny").resolve(-1, -1, -1) == {"res": 512, "thr_a": 100, "thr_b": 200}
    assert pp.get("threshold").resolve() == {"res": 512, "thr_a": 127}
    assert pp.get("scribble_xdog").resolve() == {"res": 512, "thr_a": 32}
    assert pp.get("blur_gaussian").resolve() == {"res": 512, "thr_a": 9.0}
    assert pp.get("tile_resample").resolve(-1, -1) == {"thr_a": 1.0}
    assert pp.get("shuffle").resolve(-1) == {"res": 512}  # no slider config: the resolution slider's 512
    assert pp.get("inpaint_only").resolve(-1, -1, -1) == {}
    assert pp.get("canny").resolve(640.0, 20, 80) == {"res": 640, "thr_a": 20, "thr_b": 80}
    ui = pp.get("shuffle").ui_sliders()
    assert ui[0].value == 512 and ui[1:] == [None, None]
