"""Generation-parameter text ("infotext") in A1111's format: writing and parsing.

Layout (as A1111 writes it)::

    <prompt, possibly several lines>
    Negative prompt: <negative prompt, possibly several lines>     (only if non-empty)
    Steps: 20, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7, Seed: 1, Size: 512x512, ...

The last line is a comma-separated list of ``Key: value`` pairs.  Values that
contain a comma, colon, newline or double quote are written JSON-quoted
(``Lora hashes: "add_detail: 7c6bad76eb54"``).  A1111 itself only quotes on
comma/colon/newline; quoting on a double quote as well is read back the same
by A1111's parser and avoids a lossy round trip for values such as ``"x"``.
Pairs whose value is None are left out; a pair whose value equals its key is
written as the bare key (A1111 does the same).

:func:`create_infotext` takes an ordered mapping built by the caller;
:func:`generation_params` builds the standard pairs in A1111's order.
:func:`parse_generation_parameters` is the reverse, with A1111's conventions
(string values, ``Size-1``/``Size-2`` splitting, default values for absent
keys, old combined sampler names split into Sampler + Schedule type).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from modules import fields

__all__ = [
    "quote",
    "unquote",
    "format_value",
    "format_hashes",
    "generation_params",
    "create_infotext",
    "parse_generation_parameters",
    "parse_hashes",
    "old_hires_fix_first_pass_dimensions",
]

# A1111's pattern for one "Key: value" pair of the last line.
RE_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
RE_IMAGESIZE = re.compile(r"^(\d+)x(\d+)$")

# Infotext keys that stand for settings rather than request fields (A1111's infotext-to-setting mapping;
# the table's setting rows): pasting an infotext (UI, or the API's `infotext` field) turns them into
# override_settings.
SETTING_KEYS = fields.setting_keys()


def settings_from_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """The settings a pasted infotext names ({setting key: value as written}). A1111's rule for the random
    source: no "RNG" means the picture was made with A1111's default, the GPU; the "NV" source draws the
    same numbers on any device, so that is what a pasted recipe without "RNG" gets."""
    out = {setting: params[key] for key, setting in SETTING_KEYS.items() if key in params}
    if out.get("randn_source", "GPU") == "GPU":  # (A1111's parser fills a missing "RNG" in as "GPU")
        out["randn_source"] = "NV"
    return out


# --------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------

def quote(text: Any) -> str:
    """JSON-quote a value if it contains ``,`` ``:`` ``"`` or a newline."""
    s = str(text)
    if any(ch in s for ch in (",", ":", "\n", '"')):
        return json.dumps(s, ensure_ascii=False)
    return s


def unquote(text: str) -> str:
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        return text
    try:
        return json.loads(text)
    except Exception:
        return text


def format_value(value: Any) -> str:
    """How a Python value is written: bools as True/False, integral floats without '.0'."""
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, float):
        if math.isfinite(value) and value == int(value):
            return str(int(value))
        return repr(value)
    return str(value)


def format_hashes(hashes: Mapping[str, str] | str | None) -> str | None:
    """{'add_detail': '7c6bad76eb54'} -> 'add_detail: 7c6bad76eb54' (Lora hashes / TI hashes)."""
    if hashes is None:
        return None
    if isinstance(hashes, str):
        return hashes or None
    if not hashes:
        return None
    return ", ".join(f"{name.replace(':', '').replace(',', '')}: {h}" for name, h in hashes.items())


def parse_hashes(text: str | None) -> dict[str, str]:
    """'a: 123, b: 456' -> {'a': '123', 'b': '456'} (inverse of :func:`format_hashes`)."""
    out: dict[str, str] = {}
    if not text:
        return out
    for part in text.split(","):
        if ":" not in part:
            continue
        name, h = part.rsplit(":", 1)
        out[name.strip()] = h.strip()
    return out


def _size(w: int | None, h: int | None) -> str | None:
    if w is None or h is None or w <= 0 or h <= 0:
        return None
    return f"{int(w)}x{int(h)}"


def generation_params(
    *,
    steps: int,
    sampler: str,
    schedule_type: str | None = None,
    cfg_scale: float,
    seed: int,
    width: int,
    height: int,
    image_cfg_scale: float | None = None,
    face_restoration: str | None = None,
    model_hash: str | None = None,
    model: str | None = None,
    vae_hash: str | None = None,
    vae: str | None = None,
    variation_seed: int | None = None,
    variation_seed_strength: float | None = None,
    seed_resize_from: tuple[int, int] | None = None,
    denoising_strength: float | None = None,
    conditional_mask_weight: float | None = None,
    clip_skip: int | None = None,
    ensd: int | None = None,
    token_merging_ratio: float | None = None,
    token_merging_ratio_hr: float | None = None,
    init_image_hash: str | None = None,
    rng: str | None = None,
    tiling: bool = False,
    hires_checkpoint: str | None = None,
    hires_sampler: str | None = None,
    hires_prompt: str | None = None,
    hires_negative_prompt: str | None = None,
    hires_schedule_type: str | None = None,
    hires_upscale: float | None = None,
    hires_resize: tuple[int, int] | None = None,
    hires_steps: int | None = None,
    hires_upscaler: str | None = None,
    lora_hashes: Mapping[str, str] | str | None = None,
    ti_hashes: Mapping[str, str] | str | None = None,
    extra: Mapping[str, Any] | Iterable[tuple[str, Any]] | None = None,
    version: str | None = None,
    user: str | None = None,
) -> dict[str, Any]:
    """The standard ordered pairs of A1111's ``create_infotext`` (v1.10 order).

    Rules copied from A1111: variation seed/strength only when strength != 0,
    seed resize only when both sides > 0, clip skip only when > 1, tiling as
    "True" only when on, token merging ratios only when != 0, hires upscale is
    written only when no explicit hires resize is given.  ``extra`` pairs
    (the script/extension parameters A1111 keeps in ``extra_generation_params``)
    go after the hires and network-hash pairs, before Version.
    """
    has_variation = variation_seed_strength not in (None, 0)
    hires_resize_text = _size(*hires_resize) if hires_resize else None
    params: dict[str, Any] = {
        "Steps": steps,
        "Sampler": sampler,
        "Schedule type": schedule_type,
        "CFG scale": cfg_scale,
        "Image CFG scale": image_cfg_scale,
        "Seed": seed,
        "Face restoration": face_restoration,
        "Size": f"{int(width)}x{int(height)}",
        "Model hash": model_hash,
        "Model": model,
        "VAE hash": vae_hash,
        "VAE": vae,
        "Variation seed": variation_seed if has_variation else None,
        "Variation seed strength": variation_seed_strength if has_variation else None,
        "Seed resize from": _size(*seed_resize_from) if seed_resize_from else None,
        "Denoising strength": denoising_strength,
        "Conditional mask weight": conditional_mask_weight,
        "Clip skip": clip_skip if clip_skip is not None and clip_skip > 1 else None,
        "ENSD": ensd if ensd else None,
        "Token merging ratio": token_merging_ratio or None,
        "Token merging ratio hr": token_merging_ratio_hr or None,
        "Init image hash": init_image_hash,
        "RNG": rng if rng and rng != "GPU" else None,
        "Tiling": "True" if tiling else None,
        "Hires checkpoint": hires_checkpoint,
        "Hires sampler": hires_sampler,
        "Hires prompt": hires_prompt or None,
        "Hires negative prompt": hires_negative_prompt or None,
        "Hires schedule type": hires_schedule_type,
        "Hires upscale": hires_upscale if hires_resize_text is None else None,
        "Hires resize": hires_resize_text,
        "Hires steps": hires_steps or None,
        "Hires upscaler": hires_upscaler,
        "Lora hashes": format_hashes(lora_hashes),
        "TI hashes": format_hashes(ti_hashes),
    }
    if extra:
        items = extra.items() if isinstance(extra, Mapping) else extra
        for k, v in items:
            params[k] = v   # a standard key keeps its slot, as A1111's dict merge does
    params["Version"] = version
    params["User"] = user
    return {k: v for k, v in params.items() if v is not None}


def create_infotext(prompt: str, negative_prompt: str | None, params: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> str:
    """Assemble the infotext from the prompts and ordered (key, value) pairs."""
    items = params.items() if isinstance(params, Mapping) else params
    parts = []
    for k, v in items:
        if v is None:
            continue
        text = format_value(v)
        parts.append(k if k == text else f"{k}: {quote(text)}")
    neg = f"\nNegative prompt: {negative_prompt}" if negative_prompt else ""
    return f"{prompt}{neg}\n{', '.join(parts)}".strip()


# --------------------------------------------------------------------------------------
# parsing
# --------------------------------------------------------------------------------------

def old_hires_fix_first_pass_dimensions(width: int, height: int) -> tuple[int, int]:
    """A1111's old automatic first-pass size: about 512x512 pixels, multiples of 64."""
    desired_pixel_count = 512 * 512
    scale = math.sqrt(desired_pixel_count / (width * height))
    return math.ceil(scale * width / 64) * 64, math.ceil(scale * height / 64) * 64


def _restore_old_hires_fix_params(res: dict) -> None:
    fw, fh = res.get("First pass size-1"), res.get("First pass size-2")
    if fw is None or fh is None:
        return
    fw, fh = int(fw), int(fh)
    width = int(res.get("Size-1", 512))
    height = int(res.get("Size-2", 512))
    if fw == 0 or fh == 0:
        fw, fh = old_hires_fix_first_pass_dimensions(width, height)
    res["Size-1"], res["Size-2"] = fw, fh
    res["Hires resize-1"], res["Hires resize-2"] = width, height


def _split_sampler(res: dict, sampler_key: str, schedule_key: str) -> None:
    """'DPM++ 2M Karras' -> Sampler 'DPM++ 2M' + Schedule type 'Karras' (old A1111 names)."""
    value = res.get(sampler_key)
    if not isinstance(value, str):
        return
    from modules import samplers

    if samplers.find_sampler(value) is not None:
        return
    try:
        info, sched = samplers.resolve_sampler(value)
    except ValueError:
        return
    if sched.name == "automatic":
        return
    res[sampler_key] = info.name
    res[schedule_key] = sched.label


def _parse_version(text: str | None):
    if not text:
        return None
    from packaging import version

    m = re.match(r"([^-]+-[^-]+)-.*", text)
    if m:
        text = m.group(1)
    try:
        return version.parse(text)
    except Exception:
        return None


def _backcompat(res: dict) -> None:
    """Flags A1111 sets when pasting infotexts written by older versions."""
    ver = _parse_version(res.get("Version"))
    if ver is None:
        return
    from packaging import version

    if ver < version.parse("1.6.0") and "[" in res.get("Prompt", ""):
        res["Old prompt editing timelines"] = True
    if ver < version.parse("1.6.0") and res.get("Sampler", "") in ("DDIM", "PLMS"):
        res["Pad conds v0"] = True
    if ver < version.parse("v1.7.0-225"):
        res["Downcast alphas_cumprod"] = True
    if ver < version.parse("1.8.0") and res.get("Refiner"):
        res["Refiner switch by sampling steps"] = True


_DEFAULTS: tuple[tuple[str, Any], ...] = (
    ("Clip skip", "1"),
    ("Hires resize-1", 0),
    ("Hires resize-2", 0),
    ("Hires sampler", "Use same sampler"),
    ("Hires checkpoint", "Use same checkpoint"),
    ("Hires prompt", ""),
    ("Hires negative prompt", ""),
    # the inpainting fields' defaults, as the text writes them ("Masked content": "original", ...)
    *fields.infotext_defaults("Mask mode", "Masked content", "Inpaint area", "Masked area padding"),
)

_LATE_DEFAULTS: tuple[tuple[str, Any], ...] = (
    ("RNG", "GPU"),
    ("Schedule type", "Automatic"),
    ("Schedule max sigma", 0),
    ("Schedule min sigma", 0),
    ("Schedule rho", 0),
    ("VAE Encoder", "Full"),
    ("VAE Decoder", "Full"),
    ("FP8 weight", "Disable"),
)


def parse_generation_parameters(text: str, *, defaults: bool = True, backcompat: bool = True) -> dict[str, Any]:
    """Parse an infotext into A1111's field dict.

    Values are strings as in the text (``"Steps": "20"``), except the defaults
    A1111 fills in as numbers.  ``WxH`` values become ``<Key>-1`` / ``<Key>-2``.
    With ``defaults`` (A1111 behaviour) absent keys get A1111's defaults
    ("Clip skip": "1", "Schedule type": "Automatic", "RNG": "GPU", ...).
    Prompt styles are not extracted (no styles database here).
    """
    res: dict[str, Any] = {}
    prompt = ""
    negative_prompt = ""
    done_with_prompt = False

    *lines, lastline = (text or "").strip().split("\n")
    if len(RE_PARAM.findall(lastline)) < 3:
        lines.append(lastline)
        lastline = ""

    for line in lines:
        line = line.strip()
        if line.startswith("Negative prompt:"):
            done_with_prompt = True
            line = line[len("Negative prompt:"):].strip()
        if done_with_prompt:
            negative_prompt += ("" if negative_prompt == "" else "\n") + line
        else:
            prompt += ("" if prompt == "" else "\n") + line

    res["Prompt"] = prompt
    res["Negative prompt"] = negative_prompt

    for k, v in RE_PARAM.findall(lastline):
        if v and v[0] == '"' and v[-1] == '"':
            v = unquote(v)
        m = RE_IMAGESIZE.match(v)
        if m is not None:
            res[f"{k}-1"] = m.group(1)
            res[f"{k}-2"] = m.group(2)
        else:
            res[k] = v

    _split_sampler(res, "Sampler", "Schedule type")
    if "Hires sampler" in res:
        _split_sampler(res, "Hires sampler", "Hires schedule type")

    if not defaults:
        return res

    hypernet = res.get("Hypernet")
    if hypernet is not None:
        res["Prompt"] += f"<hypernet:{hypernet}:{res.get('Hypernet strength', '1.0')}>"

    for k, v in _DEFAULTS:
        res.setdefault(k, v)
    _restore_old_hires_fix_params(res)
    for k, v in _LATE_DEFAULTS:
        res.setdefault(k, v)
    if "Cache FP16 weight for LoRA" not in res and res["FP8 weight"] != "Disable":
        res["Cache FP16 weight for LoRA"] = False
    if backcompat:
        _backcompat(res)
    return res
