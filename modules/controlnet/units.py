"""A ControlNet unit as sd-webui-controlnet's API and its clients (webuiapi's ControlNetUnit) send it.

``parse_unit(value) -> dict`` checks and normalises one unit of ``alwayson_scripts.controlnet.args``: the
extension's field names and defaults, its aliases (``input_image`` for ``image``, an image given as
``{"image": ..., "mask": ...}``), control and resize modes by name or by number. The result is plain JSON
(the image stays the base64 text it came as), so a queued job keeps it; :func:`unit_image` decodes it.
"""
from __future__ import annotations

import math
from typing import Any

CONTROL_MODES = ("Balanced", "My prompt is more important", "ControlNet is more important")
RESIZE_MODES = ("Just Resize", "Crop and Resize", "Resize and Fill")
# the extension also takes its enum's member names and a few older spellings
_CONTROL_ALIASES = {"balanced": 0, "my prompt is more important": 1, "prompt": 1, "controlnet is more important": 2,
                    "control": 2}
_RESIZE_ALIASES = {"just resize": 0, "resize": 0, "envelope": 0, "crop and resize": 1, "inner_fit": 1,
                   "scale to fit (inner fit)": 1, "resize and fill": 2, "outer_fit": 2,
                   "envelope (outer fit)": 2}

DEFAULTS: dict[str, Any] = {
    "enabled": True,
    "module": "none",
    "model": "None",
    "weight": 1.0,
    "image": None,
    "mask": None,
    "resize_mode": RESIZE_MODES[1],
    "low_vram": False,
    "processor_res": -1,          # -1: the preprocessor's default (512)
    "threshold_a": -1.0,          # -1: the preprocessor's default
    "threshold_b": -1.0,
    "guidance_start": 0.0,
    "guidance_end": 1.0,
    "pixel_perfect": False,
    "control_mode": CONTROL_MODES[0],
    "save_detected_map": True,
    "hr_option": "Both",
}
# fields the extension's API knows that change nothing here (kept so that requests pass unchanged)
_IGNORED = {"guessmode", "guess_mode", "is_ui", "input_mode", "batch_images", "output_dir", "loopback",
            "use_preview_as_input", "generated_image", "mask_image", "inpaint_crop_input_image", "effective_region_mask",
            "ipadapter_input", "pulid_mode", "union_control_type", "advanced_weighting", "animatediff_batch",
            "batch_mask_dir", "batch_input_gallery", "batch_mask_gallery", "preprocessor_res", "image_fidelity"}


class UnitError(ValueError):
    """A unit field that cannot be used; ``field`` names it."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


def _number(name: str, v, lo: float | None = None, hi: float | None = None) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        raise UnitError(name, f"must be a number, got {v!r}")
    try:
        x = float(v)
    except ValueError:
        raise UnitError(name, f"must be a number, got {v!r}") from None
    if not math.isfinite(x):
        raise UnitError(name, f"must be a finite number, got {v!r}")
    if (lo is not None and x < lo) or (hi is not None and x > hi):
        raise UnitError(name, f"must be between {lo:g} and {hi:g}, got {x:g}")
    return x


def _mode(name: str, v, names: tuple, aliases: dict) -> str:
    if isinstance(v, bool):
        raise UnitError(name, f"must be one of {', '.join(names)}, got {v!r}")
    if isinstance(v, (int, float)) and int(v) == v and 0 <= int(v) < len(names):
        return names[int(v)]
    if isinstance(v, str):
        key = v.strip().lower()
        if key.startswith("controlmode.") or key.startswith("resizemode."):
            key = key.split(".", 1)[1]
        if key in aliases:
            return names[aliases[key]]
    raise UnitError(name, f"must be one of {', '.join(names)} (or 0-{len(names) - 1}), got {v!r}")


def _image_fields(d: dict) -> tuple[Any, Any]:
    """(image, mask) of a unit: ``image`` or ``input_image``, either a base64 text or {"image", "mask"}."""
    image = d.get("image", d.get("input_image"))
    mask = d.get("mask", d.get("mask_image"))
    if isinstance(image, dict):
        mask = image.get("mask", mask)
        image = image.get("image")
    for name, v in (("image", image), ("mask", mask)):
        if v is not None and not isinstance(v, str):
            raise UnitError(name, f"must be a base64-encoded image, got {type(v).__name__}")
    return image or None, mask or None


def parse_unit(value: Any) -> dict:
    """One unit, normalised (see the module doc). UnitError names the field that is wrong."""
    if value is None:
        return dict(DEFAULTS, enabled=False)
    if not isinstance(value, dict):
        raise UnitError("unit", f"must be an object with the ControlNet unit's fields, got {type(value).__name__}")
    known = set(DEFAULTS) | {"input_image", "mask_image"} | _IGNORED
    unknown = sorted(k for k in value if k not in known)
    if unknown:
        raise UnitError(unknown[0], f"is not a ControlNet unit field; the fields are {', '.join(DEFAULTS)}")
    u = dict(DEFAULTS)
    u["image"], u["mask"] = _image_fields(value)
    for key in ("enabled", "low_vram", "pixel_perfect", "save_detected_map"):
        if key in value:
            if not isinstance(value[key], (bool, int)):
                raise UnitError(key, f"must be true or false, got {value[key]!r}")
            u[key] = bool(value[key])
    for key in ("module", "model", "hr_option"):
        if key in value and value[key] is not None:
            if not isinstance(value[key], str):
                raise UnitError(key, f"must be text, got {value[key]!r}")
            u[key] = value[key]
    if "weight" in value:
        u["weight"] = _number("weight", value["weight"], 0.0, 2.0)
    for key in ("guidance_start", "guidance_end"):
        if key in value:
            u[key] = _number(key, value[key], 0.0, 1.0)
    if u["guidance_start"] > u["guidance_end"]:
        raise UnitError("guidance_start", f"{u['guidance_start']:g} is after guidance_end {u['guidance_end']:g}")
    if "processor_res" in value:
        res = _number("processor_res", value["processor_res"], -1, 8192)
        u["processor_res"] = int(res)
    for key in ("threshold_a", "threshold_b"):
        if key in value:
            u[key] = _number(key, value[key])
    if "control_mode" in value:
        u["control_mode"] = _mode("control_mode", value["control_mode"], CONTROL_MODES, _CONTROL_ALIASES)
    if "resize_mode" in value:
        u["resize_mode"] = _mode("resize_mode", value["resize_mode"], RESIZE_MODES, _RESIZE_ALIASES)
    return u


def is_active(u: dict) -> bool:
    """A unit that acts: enabled, with a model (the extension skips a unit whose model is None)."""
    return bool(u.get("enabled")) and str(u.get("model") or "None").lower() not in ("none", "")


def model_name(title: str) -> str:
    """A model's name without the extension's ``[hash]`` suffix: "control_v11p_sd15_canny [d14c016b]"."""
    title = (title or "").strip()
    if title.endswith("]") and " [" in title:
        return title[: title.rindex(" [")]
    return title
