"""ControlNet preprocessors under sd-webui-controlnet's module names, with its sliders and map sizes.

Every preprocessor is registered under the extension's internal key (what its API's `module` takes, e.g.
"depth") and its UI alias (e.g. "depth_midas"); `get()` accepts either. A preprocessor is called as

    pre(image, res, thr_a, thr_b, **kw) -> map

with `image` an HxWx3 uint8 RGB array (HxW, HxWx1 and HxWx4 are accepted: the extension's HWC3 rule turns
grey into RGB and composites RGBA over white). `res`, `thr_a`, `thr_b` are the API's `processor_res`,
`threshold_a`, `threshold_b`; None or a negative value takes the module's slider default, as the
extension's bound check does. The map is what the extension's preprocessor returns, at its size: most
resize the image so its short side is `res` (cubic up, area down), pad it to a multiple of 64 by
repeating the edge, run, and cut the padding off again; canny's map is HxW, the others HxWx3 (HxWx4 for
inpaint; the edge, line-art and depth annotators' maps are HxW too, as the extension's). `control_hint()` turns a map into the float HxWxC array a control model is fed, `preview()`
into the RGB picture the "preview" button shows.

Built here, without downloads: none, invert, canny, threshold, scribble_xdog, blur_gaussian,
tile_resample, tile_colorfix(+sharp), shuffle, color (t2ia_color_grid), lineart_standard,
recolor_luminance/intensity, inpaint / inpaint_only. The others need an annotator's weights, dropped into
`models/ControlNet/annotators/` (flat, or in the extension's sub-folder such as `midas/`), and a network
registered with `register_network()`; until both are there they are listed unavailable with the reason
(the files they need).
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

RESOLUTION = "Preprocessor Resolution"  # the extension's name for the resolution slider
DEFAULT_RES = 512  # its preprocessors' own default, used where a module has no resolution slider


class PreprocessorUnavailable(RuntimeError):
    """Raised when a preprocessor that cannot run here (missing weights, no network) is called."""


# ---- the extension's image conventions -------------------------------------------------------------

def hwc3(x: np.ndarray) -> np.ndarray:
    """HxW / HxWx1 -> HxWx3; HxWx4 is composited over white (the extension's HWC3)."""
    if x.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {x.dtype}")
    x = x[:, :, None] if x.ndim == 2 else x
    if x.ndim != 3 or x.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected HxW, HxWx1, HxWx3 or HxWx4, got shape {x.shape}")
    if x.shape[2] == 3:
        return x
    if x.shape[2] == 1:
        return np.concatenate([x, x, x], axis=2)
    alpha = x[:, :, 3:4].astype(np.float32) / 255.0
    y = x[:, :, :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
    return y.clip(0, 255).astype(np.uint8)


def pad64(n: int) -> int:
    """How much to add to n to reach the next multiple of 64."""
    return int(np.ceil(float(n) / 64.0) * 64 - n)


def resize_with_pad(image: np.ndarray, res: int, skip_hwc3: bool = False) -> tuple[np.ndarray, tuple[int, int]]:
    """Short side to `res` (cubic when growing, area when shrinking), then edge-padded to multiples of 64.

    Returns the padded image and the (H, W) to cut the result back to with `unpad()`."""
    img = image if skip_hwc3 else hwc3(image)
    h_raw, w_raw = img.shape[:2]
    k = float(res) / float(min(h_raw, w_raw))
    h, w = int(np.round(float(h_raw) * k)), int(np.round(float(w_raw) * k))
    img = cv2.resize(img, (w, h), interpolation=cv2.INTER_CUBIC if k > 1 else cv2.INTER_AREA)
    img = img[:, :, None] if img.ndim == 2 else img
    padded = np.pad(img, [[0, pad64(h)], [0, pad64(w)], [0, 0]], mode="edge")
    return np.ascontiguousarray(padded), (h, w)


def unpad(x: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    return np.ascontiguousarray(x[:hw[0], :hw[1]]).copy()


def resized(image: np.ndarray, res: int) -> np.ndarray:
    """The image at the extension's preprocessing size, without the padding."""
    padded, hw = resize_with_pad(image, res)
    return unpad(padded, hw)


# ---- preprocessors that need no weights ----------------------------------------------------------

def identity(image, res=DEFAULT_RES, thr_a=None, thr_b=None, **kw):
    """none, tile_colorfix(+sharp), reference_*: the image itself (the colour fix acts while sampling)."""
    return image


def invert(image, res=DEFAULT_RES, thr_a=None, thr_b=None, **kw):
    """White background & black lines -> black background & white lines; no resizing."""
    return 255 - hwc3(image)


def canny(image, res=512, thr_a=100, thr_b=200, **kw):
    """cv2.Canny(low=thr_a, high=thr_b) on the padded RGB image; the map is HxW uint8 (0/255)."""
    padded, hw = resize_with_pad(image, res)
    return unpad(cv2.Canny(padded, thr_a, thr_b), hw)


def threshold(image, res=512, thr_a=127, thr_b=None, **kw):
    """White where every channel is above thr_a, black elsewhere."""
    padded, hw = resize_with_pad(image, res)
    out = np.zeros_like(padded, dtype=np.uint8)
    out[np.min(padded, axis=2) > thr_a] = 255
    return unpad(out, hw)


def scribble_xdog(image, res=512, thr_a=32, thr_b=None, **kw):
    """Difference of Gaussians (sigma 0.5 and 5), white where 2 * darkening exceeds thr_a."""
    padded, hw = resize_with_pad(image, res)
    x = padded.astype(np.float32)
    dog = cv2.GaussianBlur(x, (0, 0), 5.0) - cv2.GaussianBlur(x, (0, 0), 0.5)
    dog = (255 - np.min(dog, axis=2)).clip(0, 255).astype(np.uint8)
    out = np.zeros_like(padded, dtype=np.uint8)
    out[2 * (255 - dog) > thr_a] = 255
    return unpad(out, hw)


def blur_gaussian(image, res=512, thr_a=1.0, thr_b=None, **kw):
    """Gaussian blur of sigma thr_a at the preprocessing size."""
    return cv2.GaussianBlur(resized(image, res), (0, 0), float(thr_a))


def tile_resample(image, res=DEFAULT_RES, thr_a=1.0, thr_b=None, **kw):
    """Down-sampled by thr_a (area); below 1.1 the image is kept. `res` is not used."""
    img = hwc3(image)
    if thr_a < 1.1:
        return img
    h, w = int(float(img.shape[0]) / float(thr_a)), int(float(img.shape[1]) / float(thr_a))
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)


def _noise_disk(rng, h: int, w: int, f: int) -> np.ndarray:
    noise = rng.uniform(low=0, high=1, size=((h // f) + 2, (w // f) + 2, 1))
    noise = cv2.resize(noise, (w + 2 * f, h + 2 * f), interpolation=cv2.INTER_CUBIC)[f:f + h, f:f + w]
    noise = noise - np.min(noise)
    return (noise / np.max(noise))[:, :, None]


def shuffle(image, res=DEFAULT_RES, thr_a=None, thr_b=None, seed=None, **kw):
    """Content shuffle: the image remapped through a smooth random flow (noise disks of period 256).

    The extension draws from numpy's global generator, so each call differs; seed=None does the same,
    an int seed uses RandomState(seed) (the numbers the extension draws after np.random.seed(seed))."""
    img = resized(image, res)
    rng = np.random if seed is None else np.random.RandomState(int(seed))
    h, w = img.shape[:2]
    x = _noise_disk(rng, h, w, 256) * float(w - 1)
    y = _noise_disk(rng, h, w, 256) * float(h - 1)
    flow = np.concatenate([x, y], axis=2).astype(np.float32)
    return cv2.remap(img, flow, None, cv2.INTER_LINEAR)


def color(image, res=512, thr_a=None, thr_b=None, **kw):
    """t2ia_color_grid: cubic down to (res//64)^2 cells, nearest back up to res x res (square)."""
    cells = cv2.resize(hwc3(image), (res // 64, res // 64), interpolation=cv2.INTER_CUBIC)
    return cv2.resize(cells, (res, res), interpolation=cv2.INTER_NEAREST)


def lineart_standard(image, res=DEFAULT_RES, thr_a=None, thr_b=None, **kw):
    """Lines from a white-background drawing: darkening against a sigma-6 blur, scaled by its median."""
    padded, hw = resize_with_pad(image, res)
    x = padded.astype(np.float32)
    intensity = np.min(cv2.GaussianBlur(x, (0, 0), 6.0) - x, axis=2).clip(0, 255)
    strong = intensity[intensity > 8]
    intensity /= max(16, float(np.median(strong)) if strong.size else 16)
    return unpad((intensity * 127).clip(0, 255).astype(np.uint8), hw)


def _recolor(image, code: int, channel: int, gamma: float) -> np.ndarray:
    # the extension converts its RGB array with the BGR codes; kept so the maps match it
    y = cv2.cvtColor(hwc3(image), code)[:, :, channel].astype(np.float32) / 255.0
    return cv2.cvtColor(((y ** gamma) * 255.0).clip(0, 255).astype(np.uint8), cv2.COLOR_GRAY2RGB)


def recolor_luminance(image, res=DEFAULT_RES, thr_a=1.0, thr_b=None, **kw):
    """Grey picture of the L of Lab, gamma thr_a."""
    return _recolor(image, cv2.COLOR_BGR2LAB, 0, thr_a)


def recolor_intensity(image, res=DEFAULT_RES, thr_a=1.0, thr_b=None, **kw):
    """Grey picture of the V of HSV, gamma thr_a."""
    return _recolor(image, cv2.COLOR_BGR2HSV, 2, thr_a)


def _mask_alpha(mask: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    m = np.asarray(mask)
    m = m[:, :, 0] if m.ndim == 3 else m
    if m.shape != hw:
        raise ValueError(f"mask is {m.shape}, image is {hw}")
    m = m.astype(np.uint8) * 255 if m.dtype == bool else m.astype(np.uint8)
    return m[:, :, None]


def inpaint_input(image: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """RGBA uint8 with the mask (255 = repaint) as alpha: from `mask` (HxW, or its first channel, bool or
    uint8), else the image's own alpha, else no mask at all (alpha 0, as the extension does)."""
    rgb = np.asarray(image)
    if mask is None and rgb.ndim == 3 and rgb.shape[2] == 4:
        return rgb.astype(np.uint8).copy()
    rgb = hwc3(rgb[:, :, :3] if rgb.ndim == 3 and rgb.shape[2] == 4 else rgb)
    alpha = np.zeros_like(rgb[:, :, :1]) if mask is None else _mask_alpha(mask, rgb.shape[:2])
    return np.concatenate([rgb, alpha], axis=2)


def inpaint(image, res=DEFAULT_RES, thr_a=None, thr_b=None, mask=None, **kw):
    """inpaint_global_harmonious / inpaint_only: the RGBA of `inpaint_input` (no resizing). The control
    model sees it through `control_hint`: colour in [0, 1], pixels whose alpha is over half set to -1."""
    return inpaint_input(image, mask)


def control_hint(module: str, detected_map: np.ndarray) -> np.ndarray:
    """The float32 HxWxC map a control model is fed: /255, and for a 4-channel (inpaint) map the
    extension's inpaint protocol c * (1 - m) - m with m = alpha > 0.5."""
    x = np.asarray(detected_map)
    if "inpaint" not in basename(module) or x.ndim != 3 or x.shape[2] != 4:
        x = hwc3(x.astype(np.uint8))
    x = x.astype(np.float32) / 255.0
    if x.shape[2] != 4:
        return x
    m = (x[:, :, 3:4] > 0.5).astype(np.float32)
    return x[:, :, :3] * (1.0 - m) - m


def preview(detected_map: np.ndarray) -> np.ndarray:
    """The RGB uint8 picture of a map (HWC3: grey to RGB, an inpaint mask shows white)."""
    return hwc3(np.asarray(detected_map).astype(np.uint8))


# ---- the registry -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Slider:
    name: str
    min: float
    max: float
    value: float
    step: float | None = None

    def api_json(self) -> dict:
        out = {"name": self.name, "value": self.value, "min": self.min, "max": self.max}
        if self.step is not None:
            out["step"] = self.step
        return out

    @property
    def ui_step(self) -> float:
        return self.step if self.step is not None else 1  # the extension's UI default


RES_SLIDER = Slider(RESOLUTION, 64, 2048, 512)


@dataclass
class Preprocessor:
    name: str  # the extension's internal key
    label: str  # its UI alias (the name where it has none)
    fn: Callable | None = None  # built-in implementation; None: needs a registered network
    sliders: tuple | None = None  # the extension's slider config (resolution, thr_a, thr_b); None: none
    needs_weights: list[str] = field(default_factory=list)
    weights_subdir: str = ""  # the extension's annotator sub-folder for those files
    model_free: bool = False
    accepts_mask: bool = False
    needs_package: str = ""
    unsupported: str = ""  # why this build cannot run it at all

    def __call__(self, image, res=None, thr_a=None, thr_b=None, annotator_dir=None, **kw):
        fn = self.fn or _NETWORKS.get(self.name)
        ok, why = self.available(annotator_dir)
        if not ok or fn is None:
            raise PreprocessorUnavailable(f"{self.label}: {why}")
        if fn is not self.fn:
            kw["weights"] = self.weight_paths(annotator_dir)
        return fn(image, **self.resolve(res, thr_a, thr_b), **kw)

    def resolve(self, res=None, thr_a=None, thr_b=None) -> dict:
        """The extension's bound check: None / negative -> the slider's default; where a module has no
        slider the function's own default is used (512 for the resolution)."""
        out = {}
        for key, value, slider in zip(("res", "thr_a", "thr_b"), (res, thr_a, thr_b), self.ui_sliders()):
            invalid = value is None or value < 0 or (key == "res" and value == 0)
            if not invalid:
                out[key] = int(value) if key == "res" else value
            elif slider is not None:
                out[key] = int(slider.value) if key == "res" else slider.value
        return out

    def ui_sliders(self) -> list:
        """Three entries (resolution, thr_a, thr_b), None where hidden; a module without a slider config
        gets the extension's default resolution slider (512)."""
        if self.sliders is None:
            return [RES_SLIDER, None, None]
        return (list(self.sliders) + [None, None, None])[:3]

    def api_sliders(self) -> list:
        """`module_detail[...]["sliders"]` as the extension answers it (null for a hidden slot)."""
        return [s.api_json() if s is not None else None for s in (self.sliders or ())]

    def weight_paths(self, annotator_dir) -> dict[str, Path | None]:
        return {f: _find_weight(annotator_dir, self.weights_subdir, f) for f in self.needs_weights}

    def available(self, annotator_dir=None) -> tuple[bool, str]:
        if self.unsupported:
            return False, self.unsupported
        missing = [f for f, p in self.weight_paths(annotator_dir).items() if p is None]
        if missing:
            where = Path(annotator_dir or "models/ControlNet/annotators")
            return False, f"needs {', '.join(missing)} in {where} (or {where / self.weights_subdir})"
        if self.needs_package and importlib.util.find_spec(self.needs_package) is None:
            return False, f"needs the {self.needs_package} package"
        if self.fn is None and self.name not in _NETWORKS:
            return False, "weights found, but this build has no network for it yet"
        return True, ""


def _find_weight(annotator_dir, subdir: str, filename: str) -> Path | None:
    if annotator_dir is None:
        return None
    root = Path(annotator_dir)
    for p in (root / filename, root / subdir / filename):
        if p.is_file():
            return p
    return None


_NETWORKS: dict[str, Callable] = {}


def register_network(name: str, fn: Callable) -> None:
    """Plug in the network of a weights-needing preprocessor: fn(image, res, thr_a, thr_b, weights=
    {file: path}, **kw) -> map, called once the files are found."""
    _NETWORKS[get(name).name] = fn


def _s(name, lo, hi, value, step=None) -> Slider:
    return Slider(name, lo, hi, value, step)


_LERES = (RES_SLIDER, _s("Remove Near %", 0, 100, 0, 0.1), _s("Remove Background %", 0, 100, 0, 0.1))
_REVISION = (None, _s("Noise Augmentation", 0.0, 1.0, 0.0))
_FIDELITY = (None, _s('Style Fidelity (only for "Balanced" mode)', 0.0, 1.0, 0.5, 0.01))
_VARIATION = _s("Variation", 3.0, 32.0, 8.0, 1.0)
_GAMMA = (None, _s("Gamma Correction", 0.1, 2.0, 1.0, 0.001))
_OPENPOSE = ["body_pose_model.pth", "hand_pose_model.pth", "facenet.pth"]
_PIDINET = ["table5_pidinet.pth"]
_EMBEDDING = "gives a CLIP image embedding, not a map: not supported by this build"
_REFERENCE = "reference attention injection is not supported by this build"

# name, label, fn, sliders, weights, sub-folder, extras -- in the extension's registry order
_TABLE = [
    ("none", "none", identity, (), [], "", {}),
    ("canny", "canny", canny, (RES_SLIDER, _s("Canny Low Threshold", 1, 255, 100),
                               _s("Canny High Threshold", 1, 255, 200)), [], "", {}),
    ("depth", "depth_midas", None, (RES_SLIDER,), ["dpt_hybrid-midas-501f0c75.pt"], "midas", {}),
    ("depth_leres", "depth_leres", None, _LERES, ["res101.pth"], "leres", {}),
    ("depth_leres++", "depth_leres++", None, _LERES, ["res101.pth", "latest_net_G.pth"], "leres", {}),
    ("hed", "softedge_hed", None, (RES_SLIDER,), ["ControlNetHED.pth"], "hed", {}),
    ("hed_safe", "softedge_hedsafe", None, (RES_SLIDER,), ["ControlNetHED.pth"], "hed", {}),
    ("mediapipe_face", "mediapipe_face", None, (RES_SLIDER, _s("Max Faces", 1, 10, 1, 1),
                                                _s("Min Face Confidence", 0.01, 1.0, 0.5, 0.01)),
     [], "", {"needs_package": "mediapipe"}),
    ("mlsd", "mlsd", None, (RES_SLIDER, _s("MLSD Value Threshold", 0.01, 2.0, 0.1, 0.01),
                            _s("MLSD Distance Threshold", 0.01, 20.0, 0.1, 0.01)),
     ["mlsd_large_512_fp32.pth"], "mlsd", {}),
    ("normal_map", "normal_midas", None, (RES_SLIDER, _s("Normal Background Threshold", 0.0, 1.0, 0.4, 0.01)),
     ["dpt_hybrid-midas-501f0c75.pt"], "midas", {}),
    ("openpose", "openpose", None, (RES_SLIDER,), _OPENPOSE, "openpose", {}),
    ("openpose_hand", "openpose_hand", None, None, _OPENPOSE, "openpose", {}),
    ("openpose_face", "openpose_face", None, None, _OPENPOSE, "openpose", {}),
    ("openpose_faceonly", "openpose_faceonly", None, None, _OPENPOSE, "openpose", {}),
    ("openpose_full", "openpose_full", None, (RES_SLIDER,), _OPENPOSE, "openpose", {}),
    ("dw_openpose_full", "dw_openpose_full", None, (RES_SLIDER,), ["yolox_l.onnx", "dw-ll_ucoco_384.onnx"],
     "openpose", {}),
    ("clip_vision", "t2ia_style_clipvision", None, None, ["clip_vitl.pth"], "clip_vision",
     {"unsupported": _EMBEDDING}),
    ("revision_clipvision", "revision_clipvision", None, _REVISION, ["clip_g.pth"], "clip_vision",
     {"unsupported": _EMBEDDING, "model_free": True}),
    ("revision_ignore_prompt", "revision_ignore_prompt", None, _REVISION, ["clip_g.pth"], "clip_vision",
     {"unsupported": _EMBEDDING, "model_free": True}),
    ("ip-adapter_clip_sd15", "ip-adapter_clip_sd15", None, None, ["clip_h.pth"], "clip_vision",
     {"unsupported": _EMBEDDING}),
    ("ip-adapter_clip_sdxl", "ip-adapter_clip_sdxl", None, None, ["clip_g.pth"], "clip_vision",
     {"unsupported": _EMBEDDING}),
    ("color", "t2ia_color_grid", color, (RES_SLIDER,), [], "", {}),
    ("pidinet", "softedge_pidinet", None, None, _PIDINET, "pidinet", {}),
    ("pidinet_safe", "softedge_pidisafe", None, None, _PIDINET, "pidinet", {}),
    ("pidinet_sketch", "t2ia_sketch_pidi", None, None, _PIDINET, "pidinet", {}),
    ("pidinet_scribble", "scribble_pidinet", None, None, _PIDINET, "pidinet", {}),
    ("scribble_xdog", "scribble_xdog", scribble_xdog, (RES_SLIDER, _s("XDoG Threshold", 1, 64, 32)), [], "", {}),
    ("scribble_hed", "scribble_hed", None, (RES_SLIDER,), ["ControlNetHED.pth"], "hed", {}),
    ("segmentation", "seg_ufade20k", None, (RES_SLIDER,), ["upernet_global_small.pth"], "uniformer", {}),
    ("threshold", "threshold", threshold, (RES_SLIDER, _s("Binarization Threshold", 0, 255, 127)), [], "", {}),
    ("depth_zoe", "depth_zoe", None, None, ["ZoeD_M12_N.pt"], "zoedepth", {}),
    ("normal_bae", "normal_bae", None, None, ["scannet.pt"], "normal_bae", {}),
    ("oneformer_coco", "seg_ofcoco", None, None, ["150_16_swin_l_oneformer_coco_100ep.pth"], "oneformer", {}),
    ("oneformer_ade20k", "seg_ofade20k", None, None, ["250_16_swin_l_oneformer_ade20k_160k.pth"], "oneformer", {}),
    ("lineart", "lineart_realistic", None, None, ["sk_model.pth"], "lineart", {}),
    ("lineart_coarse", "lineart_coarse", None, None, ["sk_model2.pth"], "lineart", {}),
    ("lineart_anime", "lineart_anime", None, None, ["netG.pth"], "lineart_anime", {}),
    ("lineart_standard", "lineart_standard (from white bg & black line)", lineart_standard, None, [], "", {}),
    ("shuffle", "shuffle", shuffle, None, [], "", {}),
    ("tile_resample", "tile_resample", tile_resample, (None, _s("Down Sampling Rate", 1.0, 8.0, 1.0, 0.01)),
     [], "", {}),
    ("invert", "invert (from white bg & black line)", invert, None, [], "", {}),
    ("lineart_anime_denoise", "lineart_anime_denoise", None, None, ["erika.pth"], "manga_line", {}),
    ("reference_only", "reference_only", identity, _FIDELITY, [], "",
     {"model_free": True, "unsupported": _REFERENCE}),
    ("reference_adain", "reference_adain", identity, _FIDELITY, [], "",
     {"model_free": True, "unsupported": _REFERENCE}),
    ("reference_adain+attn", "reference_adain+attn", identity, _FIDELITY, [], "",
     {"model_free": True, "unsupported": _REFERENCE}),
    ("inpaint", "inpaint_global_harmonious", inpaint, (), [], "", {"accepts_mask": True}),
    ("inpaint_only", "inpaint_only", inpaint, (), [], "", {"accepts_mask": True}),
    ("inpaint_only+lama", "inpaint_only+lama", None, (), ["ControlNetLama.pth"], "lama", {"accepts_mask": True}),
    ("tile_colorfix", "tile_colorfix", identity, (None, _VARIATION), [], "", {}),
    ("tile_colorfix+sharp", "tile_colorfix+sharp", identity,
     (None, _VARIATION, _s("Sharpness", 0.0, 2.0, 1.0, 0.01)), [], "", {}),
    ("recolor_luminance", "recolor_luminance", recolor_luminance, _GAMMA, [], "", {}),
    ("recolor_intensity", "recolor_intensity", recolor_intensity, _GAMMA, [], "", {}),
    ("blur_gaussian", "blur_gaussian", blur_gaussian, (RES_SLIDER, _s("Sigma", 0.01, 64.0, 9.0)), [], "", {}),
]

PREPROCESSORS: dict[str, Preprocessor] = {
    name: Preprocessor(name, label, fn, sliders, list(weights), subdir, **extra)
    for name, label, fn, sliders, weights, subdir, extra in _TABLE
}
_BY_LABEL = {p.label: p for p in PREPROCESSORS.values()}


def get(module: str | None) -> Preprocessor | None:
    """By the extension's internal key or its UI alias; None (no module) is "none"."""
    module = "none" if module is None else module
    return PREPROCESSORS.get(module) or _BY_LABEL.get(module)


def basename(module: str | None) -> str:
    """The internal key for a key or an alias (unknown names come back as they are)."""
    p = get(module)
    return p.name if p is not None else str(module)


def get_modules(alias_names: bool = False) -> list[str]:
    """`module_list` in the extension's registry order: keys, or UI aliases."""
    return [p.label if alias_names else p.name for p in PREPROCESSORS.values()]


def get_modules_detail(alias_names: bool = False) -> dict[str, dict]:
    return {(p.label if alias_names else p.name): {"model_free": p.model_free, "sliders": p.api_sliders()}
            for p in PREPROCESSORS.values()}


def module_list(alias_names: bool = False) -> dict:
    """The answer of GET /controlnet/module_list?alias_names=..."""
    return {"module_list": get_modules(alias_names), "module_detail": get_modules_detail(alias_names)}


def ui_labels() -> list[str]:
    """The UI dropdown: "none", the invert alias, then every other alias sorted."""
    first = ["none", PREPROCESSORS["invert"].label]
    return first + sorted(p.label for p in PREPROCESSORS.values() if p.label not in first)


def availability(annotator_dir=None) -> dict[str, dict]:
    """Per key: whether it runs here, why not, and the weight files it needs."""
    out = {}
    for p in PREPROCESSORS.values():
        ok, why = p.available(annotator_dir)
        out[p.name] = {"label": p.label, "available": ok, "reason": why, "needs_weights": list(p.needs_weights)}
    return out


def annotator_dir(models_dir) -> Path:
    """Where the annotators' weights go: models/ControlNet/annotators."""
    return Path(models_dir) / "ControlNet" / "annotators"


def run(module: str, image: np.ndarray, res=None, thr_a=None, thr_b=None, **kw) -> np.ndarray:
    """Look the module up and run it (raises KeyError for an unknown name)."""
    p = get(module)
    if p is None:
        raise KeyError(f"unknown ControlNet preprocessor {module!r}")
    return p(image, res, thr_a, thr_b, **kw)


# the annotator networks register themselves with register_network() when their package is imported
importlib.import_module("modules.controlnet.annotators")
