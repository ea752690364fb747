"""ControlNet in a job, as sd-webui-controlnet applies it: the units prepared once per job, their residuals
added to every UNet call through the ``unet_call`` hook point.

Preparing (:func:`prepare`, before the first batch) takes each active unit: its model from the app's
ControlNet library (RequestError naming the unit and the models there are), checked against the loaded
checkpoint's family, its preprocessor (RequestError listing the modules), its input image (the unit's, else an
img2img job's init image with the job's resize mode, the extension's fallback), the preprocessor's map at the
unit's resolution (``pixel_perfect``: worked out from the image and the job's size as the extension does).
The hint is the map resized to the pass's size by the unit's resize mode (the extension's high-quality
resize: nearest for label maps, area down, cubic up, binary maps thresholded again and one-pixel edges thinned;
"Crop and Resize" covers then crops the centre, "Resize and Fill" fits inside and pads with the borders'
median colour), float in [0, 1], made again at the hires. fix size.

At every UNet call (:func:`wrap`) a unit acts where ``guidance_start <= step / steps <= guidance_end``
(the extension's schedule) and its hires. fix option allows; its ControlNet runs on the call's batch and its
13 (SDXL: 10) outputs are scaled by the control mode: Balanced ``weight``; "My prompt is more important"
``weight * 0.825 ** (12 - k)`` (also in the hires. fix pass for canny and mlsd units, as the extension forces);
"ControlNet is more important" the same scales and no control on the negative prompt's chunks.  The units'
residuals add up and reach the UNet as ``down_block_additional_residuals`` / ``mid_block_additional_residual``.
A T2I-Adapter's features (made once per size) go in as ``down_intrablock_additional_residuals``, scaled by the
weight (soft scales 0.25, 0.62, 0.825, 1).

:func:`infotext_params` writes the extension's ``ControlNet N: "Module: ..., Model: ..., ..."`` entries and
:func:`units_from_infotext` reads them back (units without images).
"""
from __future__ import annotations

import logging
import threading
import weakref
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image

from modules.controlnet import models, preprocessors, units
from modules.engine.request import RequestError

log = logging.getLogger(__name__)

STATE_KEY = "controlnet"          # ctx.state[STATE_KEY]: the job's JobControlNets
FIELD = "alwayson_scripts.controlnet.args"
SOFT_BASE = 0.825                  # "My prompt is more important": weight * 0.825 ** (12 - k)
T2I_SOFT = (0.25, 0.62, 0.825, 1.0)
HIRES_SOFT_MODULES = ("canny", "mlsd")  # the extension forces the soft scales for these in the hires. fix pass
HR_BOTH, HR_LOW, HR_HIGH = "both", "low res only", "high res only"
MAX_SIDE, MAX_PIXELS = 16384, 64 * 1024 * 1024


# ------------------------------------------------------------------ images


def decode_image(value: Any, where: str) -> Image.Image:
    """A base64 text (a ``data:image/...;base64,`` URL too) -> a loaded PIL image; RequestError naming ``where``."""
    from modules import images

    try:
        return images.decode_base64_image(value, MAX_SIDE, MAX_PIXELS)
    except images.ImageDecodeError as e:
        raise RequestError(where, str(e)) from None


def to_array(im: Image.Image) -> np.ndarray:
    """HxWx3 uint8 RGB (alpha composited over white, grey made RGB: the extension's HWC3)."""
    if im.mode not in ("RGB", "RGBA", "L"):
        im = im.convert("RGBA" if "A" in im.getbands() else "RGB")
    return preprocessors.hwc3(np.asarray(im, dtype=np.uint8))


def _mask_array(im: Image.Image) -> np.ndarray:
    return np.asarray(im.convert("RGB"), dtype=np.uint8)[:, :, 0]


def pixel_perfect_resolution(image: np.ndarray, target_h: int, target_w: int, resize_mode: str) -> int:
    """The preprocessor resolution that gives the job's size: the short side scaled by the larger factor
    (the smaller for "Resize and Fill"), as the extension's pixel_perfect_resolution."""
    raw_h, raw_w = image.shape[:2]
    k0, k1 = float(target_h) / raw_h, float(target_w) / raw_w
    k = min(k0, k1) if resize_mode == units.RESIZE_MODES[2] else max(k0, k1)
    return int(np.round(k * float(min(raw_h, raw_w))))


# ------------------------------------------------------------------ the extension's high-quality resize

def _rotations(raw: list) -> list:
    return [np.rot90(k, r, axes=(0, 1)) for r in range(4) for k in raw]


_THIN = _rotations([np.array([[-1, -1, -1], [0, 1, 0], [1, 1, 1]], dtype=np.int32),
                    np.array([[0, -1, -1], [1, 1, -1], [0, 1, 0]], dtype=np.int32)])
_PRUNE = _rotations([np.array([[-1, -1, -1], [-1, 1, -1], [0, 0, -1]], dtype=np.int32),
                     np.array([[-1, -1, -1], [-1, 1, -1], [-1, 0, 0]], dtype=np.int32)])
_LINES = [np.array(k, dtype=np.uint8) for k in ([[0, 0, 0], [1, 1, 1], [0, 0, 0]], [[0, 1, 0], [0, 1, 0], [0, 1, 0]],
                                               [[1, 0, 0], [0, 1, 0], [0, 0, 1]], [[0, 0, 1], [0, 1, 0], [1, 0, 0]])]


def _remove_patterns(x: np.ndarray, kernels: list) -> bool:
    """Clear (in place) the pixels each hit-or-miss kernel finds; whether any was cleared."""
    changed = False
    for k in kernels:
        hits = np.where(cv2.morphologyEx(x, cv2.MORPH_HITMISS, k) > 127)
        x[hits] = 0
        changed = changed or hits[0].shape[0] > 0
    return changed


def thin(x: np.ndarray, prune: bool = True) -> np.ndarray:
    """Lvmin's edge thinning of a 0/255 map: up to 32 rounds of the thinning kernels, then one of pruning."""
    y = x.copy()
    for _ in range(32):
        if not _remove_patterns(y, _THIN):
            break
    if prune:
        _remove_patterns(y, _PRUNE)
    return y


def line_nms(x: np.ndarray) -> np.ndarray:
    """Keep the pixels that are the maximum along one of four line directions."""
    y = np.zeros_like(x)
    for k in _LINES:
        np.putmask(y, cv2.dilate(x, kernel=k) == x, x)
    return y


def _one_pixel_edges(x: np.ndarray) -> bool:
    ones = np.ones((3, 3), dtype=np.uint8)
    opened = cv2.dilate(cv2.erode(x, ones, iterations=1), ones, iterations=1)
    return np.where(opened < x)[0].shape[0] * 2 > np.where(x > 127)[0].shape[0]


def _binarize(y: np.ndarray, one_pixel: bool, bigger: bool) -> np.ndarray:
    g = np.mean(y.astype(np.float32), axis=2).clip(0, 255).astype(np.uint8)
    if one_pixel:
        g = line_nms(g)
    _, g = cv2.threshold(g, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    if one_pixel:
        g = thin(g, prune=bigger)
    return np.stack([g] * 3, axis=2)


def _interpolation(colours: int, smaller: bool) -> int:
    if 2 < colours < 200:
        return cv2.INTER_NEAREST      # label maps (segmentation, colour grids) keep their colours
    return cv2.INTER_AREA if smaller else cv2.INTER_CUBIC


def high_quality_resize(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A control map (HxWx3, or HxWx4 with an inpaint mask) at ``size`` = (width, height)."""
    mask = None
    if x.ndim == 3 and x.shape[2] == 4:
        mask, x = x[:, :, 3], x[:, :, :3]
    y = x
    if x.shape[0] != size[1] or x.shape[1] != size[0]:
        area, new_area = x.shape[0] * x.shape[1], size[0] * size[1]
        colours = len(np.unique(x.reshape(-1, x.shape[2]), axis=0))
        binary = colours == 2 and bool(np.min(x) < 16 and np.max(x) > 240)
        one_pixel = binary and _one_pixel_edges(x)
        interp = _interpolation(colours, new_area < area)
        y = cv2.resize(x, size, interpolation=interp)
        if mask is not None:
            mask = cv2.resize(mask, size, interpolation=interp)
        if binary:
            y = _binarize(y, one_pixel, new_area > area)
    if mask is not None:
        alpha = ((mask > 127) * 255).astype(y.dtype)[:, :, None]
        y = np.concatenate([y, alpha], axis=2)
    return y


def resize_map(detected: np.ndarray, module: str, resize_mode: str, h: int, w: int) -> np.ndarray:
    """The preprocessor's map at h x w by the unit's resize mode (the extension's detectmap_proc)."""
    x = np.asarray(detected)
    if not ("inpaint" in preprocessors.basename(module) and x.ndim == 3 and x.shape[2] == 4):
        x = preprocessors.hwc3(x.astype(np.uint8))
    if resize_mode == units.RESIZE_MODES[0]:
        return high_quality_resize(x, (w, h))
    old_h, old_w = x.shape[:2]
    k0, k1 = float(h) / old_h, float(w) / old_w
    fill = resize_mode == units.RESIZE_MODES[2]
    k = min(k0, k1) if fill else max(k0, k1)
    y = high_quality_resize(x, (int(np.round(old_w * k)), int(np.round(old_h * k))))
    new_h, new_w = y.shape[:2]
    if not fill:   # Crop and Resize: cover, then the centre
        top, left = max(0, (new_h - h) // 2), max(0, (new_w - w) // 2)
        return np.ascontiguousarray(y[top:top + h, left:left + w])
    return _pad_into(x, y[:h, :w], h, w)


def _pad_into(x: np.ndarray, y: np.ndarray, h: int, w: int) -> np.ndarray:
    """Resize and Fill: ``y`` centred on the median colour of ``x``'s borders (an inpaint mask's border: kept)."""
    borders = np.concatenate([x[0, :, :], x[-1, :, :], x[:, 0, :], x[:, -1, :]], axis=0)
    colour = np.median(borders, axis=0).astype(x.dtype)
    if len(colour) == 4:
        colour[3] = 255
    out = np.tile(colour[None, None], [h, w, 1]).astype(y.dtype)
    top, left = max(0, (h - y.shape[0]) // 2), max(0, (w - y.shape[1]) // 2)
    out[top:top + y.shape[0], left:left + y.shape[1]] = y
    return out


def hint_tensor(module: str, detected: np.ndarray, resize_mode: str, h: int, w: int) -> torch.Tensor:
    """(1, C, h, w) float32: the resized map as the control model is fed it (preprocessors.control_hint)."""
    hint = preprocessors.control_hint(module, resize_map(detected, module, resize_mode, h, w))
    return torch.from_numpy(np.ascontiguousarray(hint)).permute(2, 0, 1)[None].float()


# ------------------------------------------------------------------ the prepared units


@dataclass
class PreparedUnit:
    index: int                  # the unit's place in the request's list
    title: str                  # the model's title
    net: Any                    # diffusers ControlNetModel or T2IAdapter
    is_adapter: bool
    module: str
    detected: np.ndarray        # the preprocessor's map, before resizing
    resize_mode: str
    weight: float
    start: float
    end: float
    soft: bool                  # "My prompt is more important" or "ControlNet is more important"
    cond_only: bool             # "ControlNet is more important" (and pooling "shuffle" models): no control on uncond
    hr_option: str = HR_BOTH
    hints: dict = field(default_factory=dict)      # (h, w) -> (1, C, h, w) on the job's device and dtype
    features: dict = field(default_factory=dict)   # T2I-Adapter: (h, w) -> its features
    embeddings: dict = field(default_factory=dict)  # ControlNet: (h, w) -> its conditioning embedding of the hint

    def acts(self, step: tuple[int, int] | None, hires: bool) -> bool:
        if (hires and self.hr_option == HR_LOW) or (not hires and self.hr_option == HR_HIGH):
            return False
        if self.weight == 0:
            return False    # zero residuals: the same picture, no ControlNet call
        if step is None or step[1] <= 0:
            return True
        done = step[0] / step[1]
        return not (done < self.start or done > self.end)

    def scales(self, n: int, hires: bool) -> list[float]:
        soft = self.soft or (hires and any(m in self.module for m in HIRES_SOFT_MODULES))
        if not soft:
            return [self.weight] * n
        if self.is_adapter:
            return [self.weight * s for s in T2I_SOFT][:n] + [self.weight] * max(0, n - len(T2I_SOFT))
        return [self.weight * SOFT_BASE ** float(12 - k) for k in range(n)]

    def hint(self, size: tuple[int, int], device, dtype) -> torch.Tensor:
        if size not in self.hints:
            t = hint_tensor(self.module, self.detected, self.resize_mode, int(size[0]), int(size[1]))
            self.hints[size] = t.to(device, dtype)
        return self.hints[size]


@dataclass
class JobControlNets:
    """A job's prepared units and the sampler step running now (before_step sets it)."""
    units: list[PreparedUnit]
    step: tuple[int, int] | None = None


def _unit_error(where: str, i: int, message: str) -> RequestError:
    return RequestError(where, f"ControlNet unit {i}: {message}")


def _check_module(u: dict, i: int, where: str) -> preprocessors.Preprocessor:
    pre = preprocessors.get(u["module"])
    if pre is None:
        raise _unit_error(f"{where}.module", i, f"unknown preprocessor (module) {u['module']!r}; the modules are: "
                                                f"{', '.join(preprocessors.get_modules())}")
    return pre


def _find_model(library, ctx, u: dict, i: int, where: str):
    try:
        entry = library.find(u["model"])
        models.check_compatible(entry.info, ctx.spec)
    except models.ControlNetError as e:
        raise _unit_error(f"{where}.model", i, str(e)) from None
    return entry


def _input_image(ctx, u: dict, i: int, where: str) -> tuple[np.ndarray, np.ndarray | None, str]:
    """(HxWx3 image, HxW mask or None, resize mode): the unit's image, else the img2img init image."""
    req = ctx.request
    if u.get("image"):
        image = to_array(decode_image(u["image"], f"{where}.image"))
        mask = _mask_array(decode_image(u["mask"], f"{where}.mask")) if u.get("mask") else None
        return image, mask, u["resize_mode"]
    if req.is_img2img and req.init_images:
        mode = int(req.resize_mode or 0)
        mode = units.RESIZE_MODES[mode if mode in (0, 1, 2) else 0]  # 3 (latent upscale) is Just Resize
        mask = _mask_array(req.mask) if req.mask is not None else None
        return to_array(req.init_images[0]), mask, mode
    raise _unit_error(f"{where}.image", i, "ControlNet is enabled but no input image is given")


def _preprocess(ctx, library, pre, u: dict, i: int, where: str) -> tuple[np.ndarray, str]:
    image, mask, mode = _input_image(ctx, u, i, where)
    if mask is not None and mask.shape != image.shape[:2]:
        mask = cv2.resize(mask, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_NEAREST)
    kw = {}
    if pre.accepts_mask:
        kw["mask"] = mask
    elif mask is not None and not ((mask <= 5).all() or (mask >= 250).all()):
        image = preprocessors.hwc3(mask)  # the extension's "canvas scribble": the drawn mask is the input
    if pre.name == "shuffle" and ctx.request.seed >= 0:
        kw["seed"] = int(ctx.request.seed)
    res = u["processor_res"]
    if u["pixel_perfect"]:
        res = pixel_perfect_resolution(image, ctx.request.height, ctx.request.width, mode)
    try:
        detected = pre(image, res, u["threshold_a"], u["threshold_b"], annotator_dir=library.annotator_dir, **kw)
    except preprocessors.PreprocessorUnavailable as e:
        raise _unit_error(f"{where}.module", i, str(e)) from None
    return detected, mode


_BASE_STATES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def base_unet_state(ctx) -> dict:
    """The loaded UNet's weights in the original layout (what a 'diff' ControlNet adds to), one per UNet."""
    unet = ctx.components.unet
    if unet not in _BASE_STATES:
        kmap = ctx.family.unet_key_map(dict(unet.config))
        _BASE_STATES[unet] = {kmap(k): v for k, v in unet.state_dict().items()}
    return _BASE_STATES[unet]


def _network(ctx, library, entry, i: int, where: str):
    base = base_unet_state(ctx) if entry.info.layout == "diff" else None
    try:
        return library.network(entry, dtype=ctx.dtype, device=ctx.device, base_unet_state=base,
                               unet_config=dict(ctx.components.unet.config),
                               cache_size=int(ctx.opts.get("control_net_model_cache_size", 2)))
    except models.ControlNetError as e:
        raise _unit_error(f"{where}.model", i, str(e)) from None


def _hr_option(ctx, u: dict) -> str:
    req = ctx.request
    if not (req.enable_hr and not req.is_img2img):
        return HR_BOTH    # the extension: the option counts in a hires. fix job only
    opt = str(u.get("hr_option") or "Both").strip().lower()
    return opt if opt in (HR_LOW, HR_HIGH) else HR_BOTH


def prepare_unit(ctx, library, u: dict, i: int, where: str) -> PreparedUnit:
    pre = _check_module(u, i, where)
    entry = _find_model(library, ctx, u, i, where)
    detected, mode = _preprocess(ctx, library, pre, u, i, where)
    net = _network(ctx, library, entry, i, where)
    is_adapter = entry.info.kind == models.T2I_ADAPTER
    pooled = bool(getattr(net.config, "global_pool_conditions", False)) if not is_adapter else False
    control = u["control_mode"]
    return PreparedUnit(index=i, title=entry.title, net=net, is_adapter=is_adapter, module=pre.name,
                        detected=detected, resize_mode=mode, weight=float(u["weight"]),
                        start=float(u["guidance_start"]), end=float(u["guidance_end"]),
                        soft=control != units.CONTROL_MODES[0],
                        cond_only=control == units.CONTROL_MODES[2] or pooled, hr_option=_hr_option(ctx, u))


def prepare(ctx, library, unit_list: list[dict], where: str = FIELD) -> JobControlNets | None:
    """The job's active units, prepared (RequestError naming the unit at fault); None when none acts."""
    prepared = [prepare_unit(ctx, library, u, i, f"{where}[{i}]") for i, u in enumerate(unit_list)
                if units.is_active(u)]
    return JobControlNets(prepared) if prepared else None


# ------------------------------------------------------------------ at each UNet call


def _in_hires(ctx, info) -> bool:
    req = ctx.request
    return bool(req.enable_hr) and not req.is_img2img and tuple(info.size) != (req.height, req.width)


def cond_mask(info, x: torch.Tensor) -> torch.Tensor:
    """(N, 1, 1, 1): 1 for the rows of the positive prompts' chunks, 0 for the negative prompt's."""
    rows = [0.0 if neg else 1.0 for neg in info.negative for _ in range(info.batch)]
    return torch.tensor(rows, device=x.device, dtype=x.dtype).view(-1, 1, 1, 1)


_EMBEDDING_LOCK = threading.Lock()


def hint_embedding(u: PreparedUnit, size: tuple[int, int], device, dtype) -> torch.Tensor:
    """(1, C, h/8, w/8): the ControlNet's conditioning embedding of the unit's hint at this size (with the
    model's channel order), computed once per job and size: the hint does not change between steps, and the
    embedding's convolutions at full picture resolution are a good part of a ControlNet call."""
    if size not in u.embeddings:
        hint = u.hint(size, device, dtype)
        if u.net.config.controlnet_conditioning_channel_order == "bgr":
            hint = torch.flip(hint, dims=[1])
        u.embeddings[size] = u.net.controlnet_cond_embedding(hint)
    return u.embeddings[size]


def _controlnet_outputs(u: PreparedUnit, x, t, context, extra: dict, info) -> list[torch.Tensor]:
    net = u.net
    n_in = int(net.config.in_channels)
    x_in = x[:, :n_in] if x.shape[1] > n_in else x   # an inpainting UNet's 9 channels: the latents only
    size = tuple(info.size)
    emb = hint_embedding(u, size, x.device, x.dtype).expand(x.shape[0], -1, -1, -1)
    hint = u.hint(size, x.device, x.dtype).expand(x.shape[0], -1, -1, -1)
    embedding = net.controlnet_cond_embedding
    with _EMBEDDING_LOCK:  # the network may be shared with a job on another thread
        # the network's forward embeds controlnet_cond itself; for this call it gets the embedding made once
        embedding.forward = lambda _cond: emb
        try:
            down, mid = net(x_in, t, encoder_hidden_states=context, controlnet_cond=hint, conditioning_scale=1.0,
                            added_cond_kwargs=extra.get("added_cond_kwargs"), return_dict=False)
        finally:
            del embedding.forward
    return [*down, mid]


def _adapter_features(u: PreparedUnit, x, info) -> list[torch.Tensor]:
    size = tuple(info.size)
    if size not in u.features:
        hint = u.hint(size, x.device, x.dtype)
        cin = int(getattr(u.net.config, "in_channels", hint.shape[1]))
        u.features[size] = list(u.net(hint[:, :cin]))
    return [f.expand(x.shape[0], *f.shape[1:]) for f in u.features[size]]


def _add(total: list | None, outs: list) -> list:
    return outs if total is None else [a + b for a, b in zip(total, outs)]


def residuals(job: JobControlNets, ctx, x, t, context, extra: dict, info) -> dict:
    """The UNet keyword arguments of the acting units for one call (empty when none acts)."""
    hires = _in_hires(ctx, info)
    control = adapter = mask = None
    for u in job.units:
        if not u.acts(job.step, hires):
            continue
        outs = _adapter_features(u, x, info) if u.is_adapter else _controlnet_outputs(u, x, t, context, extra, info)
        outs = [o * s for o, s in zip(outs, u.scales(len(outs), hires))]
        if u.cond_only:
            mask = cond_mask(info, x) if mask is None else mask
            outs = [o * mask for o in outs]
        if u.is_adapter:
            adapter = _add(adapter, outs)
        else:
            control = _add(control, outs)
    kw: dict = {}
    if control is not None:
        kw["down_block_additional_residuals"] = tuple(control[:-1])
        kw["mid_block_additional_residual"] = control[-1]
    if adapter is not None:
        kw["down_intrablock_additional_residuals"] = list(adapter)  # the UNet pops from this list
    return kw


def wrap(ctx, unet):
    """The ``unet_call`` wrapper of a job with prepared units (``unet`` itself when it has none)."""
    job = ctx.state.get(STATE_KEY)
    if not job:
        return unet

    def call(x, t, context, extra, info):
        kw = residuals(job, ctx, x, t, context, extra, info)
        return unet(x, t, context, {**extra, **kw} if kw else extra, info)
    return call


# ------------------------------------------------------------------ infotext

# the extension's ControlNetUnit fields in its order, less those it leaves out (image, enabled, advanced
# weighting, ...); the masks are images and stay out too
INFOTEXT_FIELDS = ("module", "model", "weight", "resize_mode", "low_vram", "processor_res", "threshold_a",
                   "threshold_b", "guidance_start", "guidance_end", "pixel_perfect", "control_mode", "hr_option",
                   "save_detected_map")
PREFIX = "ControlNet"


def _display(name: str) -> str:
    return " ".join(w.capitalize() for w in name.split("_"))


def _field_name(text: str) -> str:
    return "_".join(w.lower() for w in text.split(" "))


def _text(v: Any) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def _bounded(u: dict) -> dict:
    """The extension's bound check: a resolution or threshold outside its module's slider is the default."""
    pre = preprocessors.get(u.get("module"))
    out = dict(u)
    sliders = list(pre.sliders or ()) if pre is not None else []
    for key, slider in zip(("processor_res", "threshold_a", "threshold_b"), sliders + [None, None, None]):
        v = out.get(key)
        if slider is not None and v is not None and (v < slider.min or v > slider.max):
            out[key] = int(slider.value) if key == "processor_res" else slider.value
    return out


def serialize_unit(u: dict, title: str | None = None) -> str:
    """One unit as the extension writes it: "Module: canny, Model: ..., Weight: 1, ..." (values of -1 left out;
    "" when a value holds a comma or a colon, as the extension refuses those)."""
    u = _bounded(dict(u, model=title or u.get("model")))
    values = {_display(k): u.get(k) for k in INFOTEXT_FIELDS if u.get(k) != -1}
    texts = {k: _text(v) for k, v in values.items()}
    if any("," in t or ":" in t for t in texts.values()):
        log.error("ControlNet infotext: unexpected ',' or ':' in %s", texts)
        return ""
    return ", ".join(f"{k}: {t}" for k, t in texts.items())


def infotext_params(unit_list: list[dict], title_of=None) -> dict[str, str]:
    """``{"ControlNet 0": ..., ...}``: the active units, numbered in order (the extension numbers the units it
    uses); ``title_of(model)`` gives a model's title (with its hash)."""
    out = {}
    for u in [u for u in unit_list if units.is_active(u)]:
        title = None
        if title_of is not None:
            try:
                title = title_of(u["model"])
            except Exception:  # noqa: BLE001 - an unknown model is written as the request named it
                title = None
        text = serialize_unit(u, title)
        if text:
            out[f"{PREFIX} {len(out)}"] = text
    return out


def _parse_value(text: str) -> Any:
    if text in ("True", "False"):
        return text == "True"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_unit_text(text: str) -> dict:
    """One "Module: canny, Model: ..., ..." text -> a unit (units.parse_unit's form, enabled, no image)."""
    values = {}
    for item in str(text).split(","):
        key, sep, value = item.strip().partition(": ")
        if sep:
            values[_field_name(key)] = _parse_value(value.strip())
    known = set(units.DEFAULTS) - {"image", "mask", "enabled"}
    return units.parse_unit({k: v for k, v in values.items() if k in known} | {"enabled": True})


def units_from_infotext(params: dict) -> list[dict]:
    """The units an infotext's "ControlNet N" entries describe, in N's order (a unit that does not parse is
    skipped, as the extension skips it)."""
    found = []
    for key, text in params.items():
        head, _, num = str(key).partition(" ")
        if head != PREFIX or not num.isdigit():
            continue
        try:
            found.append((int(num), parse_unit_text(text)))
        except (units.UnitError, ValueError) as e:
            log.warning("ControlNet infotext %s=%r not understood: %s", key, text, e)
    return [u for _, u in sorted(found, key=lambda p: p[0])]
