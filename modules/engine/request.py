"""The request of a job: every field of an A1111 txt2img/img2img request, and its validation.

UI, API and command line all build a :class:`GenerationRequest`; :func:`validate` refuses a bad
one (a :class:`RequestError` naming the field) before it takes a place in the queue: the table's bounds,
and the admission limits (:class:`Limits`: the settings "Request limits" and the device's free memory)
that App.submit attaches to it.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any, Callable

from PIL import Image

from modules import devices, fields, samplers, upscalers

_default = fields.dataclass_default   # each default is the table's (modules/fields.py)


class RequestError(ValueError):
    """A request field is invalid; `field` names it."""

    def __init__(self, field_name: str, message: str):
        super().__init__(f"{field_name}: {message}")
        self.field = field_name


@dataclass
class GenerationRequest:
    """Everything one job needs. UI, API and command line all build this."""
    prompt: str = _default("prompt")
    negative_prompt: str = _default("negative_prompt")
    styles: list[str] = _default("styles")
    sampler_name: str = _default("sampler_name")
    scheduler: str = _default("scheduler")
    steps: int = _default("steps")
    cfg_scale: float = _default("cfg_scale")
    width: int = _default("width")
    height: int = _default("height")
    seed: int = _default("seed")
    subseed: int = _default("subseed")
    subseed_strength: float = _default("subseed_strength")
    seed_resize_from_h: int = _default("seed_resize_from_h")
    seed_resize_from_w: int = _default("seed_resize_from_w")
    n_iter: int = _default("n_iter")
    batch_size: int = _default("batch_size")
    clip_skip: int | None = _default("clip_skip")              # None: the setting
    tiling: bool = _default("tiling")
    eta: float | None = _default("eta")                        # None: the setting for the sampler's kind
    # hires fix
    enable_hr: bool = _default("enable_hr")
    hr_scale: float = _default("hr_scale")
    hr_upscaler: str = _default("hr_upscaler")
    hr_second_pass_steps: int = _default("hr_second_pass_steps")
    hr_resize_x: int = _default("hr_resize_x")
    hr_resize_y: int = _default("hr_resize_y")
    hr_prompt: str = _default("hr_prompt")
    hr_negative_prompt: str = _default("hr_negative_prompt")
    # img2img / inpaint
    init_images: list[Any] = _default("init_images")           # PIL images
    mask: Any = _default("mask")                                # PIL image (white = repaint)
    denoising_strength: float = _default("denoising_strength")
    resize_mode: int = _default("resize_mode")                 # index into fields.RESIZE_MODES
    mask_blur: int = _default("mask_blur")
    inpainting_fill: int = _default("inpainting_fill")         # index into fields.INPAINTING_FILL
    inpaint_full_res: bool = _default("inpaint_full_res")
    inpaint_full_res_padding: int = _default("inpaint_full_res_padding")
    inpainting_mask_invert: bool = _default("inpainting_mask_invert")
    initial_noise_multiplier: float | None = _default("initial_noise_multiplier")  # None: the setting
    # job-level
    override_settings: dict[str, Any] = _default("override_settings")
    save_images: bool = _default("save_images")
    do_not_save_grid: bool = _default("do_not_save_grid")
    # scripts (modules.scripts): after App.submit, the title and the arguments by name
    script_name: str | None = _default("script_name")
    script_args: Any = _default("script_args")
    alwayson_scripts: dict[str, Any] = _default("alwayson_scripts")
    mode: str = "txt2img"   # "txt2img" | "img2img": the tab or endpoint, not a field of the table
    # the admission limits of the app that queued the request (App.submit; None: none); the copies
    # scripts make of it keep them, so their inner jobs are held to the same limits
    limits: "Limits | None" = field(default=None, repr=False, compare=False)

    @property
    def is_img2img(self) -> bool:
        return self.mode == "img2img"


def check_number(f: fields.Field, value: Any) -> None:
    """RequestError naming `f` unless `value` is a number within the table's bounds for it."""
    name = f.name
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RequestError(name, f"must be a number, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise RequestError(name, f"must be a finite number, got {value!r}")
    if f.whole and int(value) != value:
        raise RequestError(name, f"must be a whole number, got {value!r}")
    if f.minimum is not None and value < f.minimum:
        raise RequestError(name, f"must be at least {f.minimum}, got {value!r}")
    if f.maximum is not None and value > f.maximum:
        raise RequestError(name, f"must be at most {f.maximum}, got {value!r}")
    if f.multiple_of and int(value) % f.multiple_of:
        raise RequestError(name, f"must be a multiple of {f.multiple_of}, got {value}")


def validate(req: GenerationRequest) -> None:
    """RequestError naming the first field at fault: the table's bounds, then the checks of their own, and
    the admission limits the request carries (:class:`Limits`, set by App.submit)."""
    for f in fields.request_fields():
        value = getattr(req, f.name)
        if f.bounded and f.applies(req.mode, req.enable_hr) and not (value is None and f.default is None):
            check_number(f, value)
    for name in ("seed_resize_from_w", "seed_resize_from_h"):
        v = getattr(req, name)
        if 0 < v < 64:
            raise RequestError(name, f"must be 0 (off) or between 64 and 2048, got {v}")
    for name in ("prompt", "negative_prompt", "hr_prompt", "hr_negative_prompt"):
        text = getattr(req, name)
        if not isinstance(text, str):
            raise RequestError(name, "must be text")
        if not text.isascii() and not _is_unicode(text):   # JSON's "\ud800": no tokenizer takes it
            raise RequestError(name, "is not valid Unicode text (it has a lone surrogate)")
    limits = req.limits
    if limits is not None:
        check_limits(req, limits)   # before anything is tokenized or allocated
    resolve_sampler_lenient(req)
    if req.enable_hr:
        _validate_hires(req)
    if req.is_img2img:
        _validate_images(req)
    if limits is not None:
        check_prompt_tokens(req, limits)


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _validate_hires(req: GenerationRequest) -> None:
    # a built-in upscaler, or a model's name: the app checks that one is installed (UpscalerLibrary.check)
    if not isinstance(req.hr_upscaler, str) or not req.hr_upscaler.strip():
        valid = ", ".join(upscalers.names())
        raise RequestError("hr_upscaler", f"must name an upscaler: {valid} or an installed model's name")
    try:  # a hires pass always runs exactly its steps: a tiny strength stretches the schedule
        samplers.img2img_steps(req.hr_second_pass_steps or req.steps, req.denoising_strength, exact=True)
    except samplers.ScheduleTooLongError as e:
        raise RequestError("denoising_strength", str(e)) from None


def _validate_images(req: GenerationRequest) -> None:
    if not req.init_images:
        raise RequestError("init_images", "img2img needs an init image")
    for im in req.init_images:
        if not isinstance(im, Image.Image):
            raise RequestError("init_images", "is not an image")
    if req.mask is not None:
        if not isinstance(req.mask, Image.Image):
            raise RequestError("mask", "is not an image")
        if req.mask.size != req.init_images[0].size:
            raise RequestError("mask", f"size {req.mask.size[0]}x{req.mask.size[1]} differs from the init image's "
                                       f"{req.init_images[0].size[0]}x{req.init_images[0].size[1]}")


def resolve_sampler_lenient(req: GenerationRequest):
    """(sampler, schedule, warning): an unknown sampler is an error; a schedule type the sampler cannot
    use falls back to the sampler's automatic choice with a warning (pasted A1111 infotexts name such pairs)."""
    try:
        s, sch = samplers.resolve_sampler(req.sampler_name, req.scheduler)
        return s, sch, None
    except ValueError as e:
        try:
            s, sch = samplers.resolve_sampler(req.sampler_name, None)
        except ValueError:
            raise RequestError("sampler_name", str(e)) from None
        if req.scheduler and samplers.find_schedule_type(req.scheduler) is None:
            raise RequestError("scheduler", str(e)) from None
        return s, sch, f"{e}; used the automatic schedule instead"


def hires_target(req: GenerationRequest) -> tuple[int, int]:
    """Target (width, height) of the hires pass, as A1111: resize-to wins over scale; multiples of 8."""
    if req.hr_resize_x == 0 and req.hr_resize_y == 0:
        w, h = int(req.width * req.hr_scale), int(req.height * req.hr_scale)
    elif req.hr_resize_y == 0:
        w = req.hr_resize_x
        h = req.hr_resize_x * req.height // req.width
    elif req.hr_resize_x == 0:
        h = req.hr_resize_y
        w = req.hr_resize_y * req.width // req.height
    else:
        w, h = req.hr_resize_x, req.hr_resize_y
    return w // 8 * 8, h // 8 * 8


# ---------------------------------------------------------------------------
# admission limits: what one request may ask of this machine (the settings "Request limits"; 0: no limit).
# The table's bounds (modules/fields.py) are the same everywhere; these depend on the device and its memory.

LIMIT_KEYS = ("max_batch_count", "max_batch_size", "max_pixels", "max_steps", "max_hr_scale", "max_hr_size",
              "max_prompt_tokens", "max_megapixel_steps", "memory_check")
PROMPT_CHARS_PER_TOKEN = 16   # a prompt longer than this per allowed token is refused without tokenizing it
# The memory estimate per pixel of the largest pass, per picture of a batch. A lower bound, so that a request it
# refuses surely does not fit: the pictures a job keeps (the decoded float32 picture, its 8-bit copy, its share
# of the grid: a 2048x2048 batch of 64 grew the server by 9.3 GB, ~35 bytes a pixel) and the UNet's activations
# at the latent's size (1/64 of the pixels; 320 channels, the input and its skip connections alive at once,
# the batch doubled by CFG), in numbers of the model's dtype.
IMAGE_BYTES_PER_PIXEL = 36
UNET_VALUES_PER_PIXEL = 2 * 4 * 320 // 64


@dataclass(frozen=True)
class Limits:
    """The admission limits of an app: its settings (0: no limit) and the memory of the device jobs run on."""
    max_batch_count: int = 0
    max_batch_size: int = 0
    max_pixels: int = 0
    max_steps: int = 0
    max_hr_scale: float = 0
    max_hr_size: int = 0
    max_prompt_tokens: int = 0
    max_megapixel_steps: float = 0
    memory_check: bool = False
    memory: Callable[[], devices.MemoryInfo] | None = None   # the device's memory now
    element_size: int = 4                                     # bytes of one number of the model's dtype

    @classmethod
    def from_settings(cls, values, memory: Callable[[], devices.MemoryInfo] | None = None,
                      element_size: int = 4) -> "Limits":
        """The limits of a settings snapshot (a mapping; keys left out, and values that are not numbers, as
        a hand-edited config.json may hold: no limit)."""
        kw = {k: _limit_value(values.get(k, 0)) for k in LIMIT_KEYS}
        kw["memory_check"] = bool(values.get("memory_check", False))
        return cls(**kw, memory=memory, element_size=element_size)


def _limit_value(value) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return 0
    if not math.isfinite(value) or value <= 0:
        return 0
    return int(value) if value.is_integer() else value


def admission_limits(opts, policy: devices.DevicePolicy) -> Limits:
    """The limits of an app now: its settings and the free memory of the device of its policy."""
    return Limits.from_settings(opts.snapshot(), memory=functools.partial(devices.memory_info, policy.device),
                                element_size=policy.dtype.itemsize)


def limit_defaults(info: devices.MemoryInfo) -> dict[str, Any]:
    """Limit settings that fit a device: picture size and batch size by its memory, steps and work by its kind
    (a GPU does far more steps in a minute than a CPU)."""
    gpu = info.kind != "cpu"
    per_pixel = 1024 if gpu else 2048   # the memory a pixel of a picture may take, fp16 on a GPU, fp32 on a CPU
    side = max(512, min(4096, int(math.sqrt(info.total / per_pixel)) // 64 * 64))
    batch = int(info.total / 2**30 / (1 if gpu else 2))
    return {"max_batch_count": 100, "max_batch_size": max(1, min(int(fields.FIELDS["batch_size"].maximum), batch)),
            "max_pixels": side * side, "max_steps": int(fields.FIELDS["steps"].maximum) if gpu else 150,
            "max_hr_scale": 4.0, "max_hr_size": min(4096, 2 * side), "max_prompt_tokens": 1000,
            "max_megapixel_steps": 20000 if gpu else 1000, "memory_check": True}


def _over(limit, value, name: str, key: str, what: str = "") -> None:
    if limit and value > limit:
        raise RequestError(name, f"{what or _num(value)} is over the limit of {_num(limit)} (setting {key})")


def _num(x) -> str:
    return f"{x:g}" if isinstance(x, float) and not x.is_integer() else str(int(x))


def passes(req: GenerationRequest) -> list[tuple[str, int, int, int]]:
    """(field, width, height, steps) of each sampling pass of a picture: the first (or img2img) pass and
    txt2img's hires pass at its upscaled size."""
    out = [("width", int(req.width), int(req.height), int(req.steps))]
    if req.enable_hr and not req.is_img2img:
        w, h = hires_target(req)
        by = "hr_scale" if req.hr_resize_x == 0 and req.hr_resize_y == 0 else "hr_resize_x"
        out.append((by, w, h, int(req.hr_second_pass_steps or req.steps)))
    return out


def check_limits(req: GenerationRequest, limits: Limits) -> None:
    """RequestError naming the field and the limit where `req` asks for more than `limits` allow (cheap
    arithmetic only: the prompts by their length, not their tokens)."""
    for key in (req.override_settings or {}) if isinstance(req.override_settings, dict) else ():
        if key in LIMIT_KEYS:
            raise RequestError("override_settings", f"{key} is a limit of the server; a request cannot change it")
    _over(limits.max_batch_count, req.n_iter, "n_iter", "max_batch_count")
    _over(limits.max_batch_size, req.batch_size, "batch_size", "max_batch_size")
    _over(limits.max_steps, req.steps, "steps", "max_steps")
    if req.enable_hr and not req.is_img2img:
        _over(limits.max_steps, req.hr_second_pass_steps, "hr_second_pass_steps", "max_steps")
        if req.hr_resize_x == 0 and req.hr_resize_y == 0:
            _over(limits.max_hr_scale, req.hr_scale, "hr_scale", "max_hr_scale")
    for i, (name, w, h, _) in enumerate(passes(req)):
        kind = "the hires pass" if i else ("the img2img pass" if req.is_img2img else "the picture")
        _over(limits.max_pixels, w * h, name, "max_pixels", f"{kind} {w}x{h} ({w * h} pixels)")
        if i:
            _over(limits.max_hr_size, max(w, h), name, "max_hr_size", f"the hires pass {w}x{h}")
    for name in _prompt_fields(req):
        chars = len(getattr(req, name))
        if limits.max_prompt_tokens and chars > limits.max_prompt_tokens * PROMPT_CHARS_PER_TOKEN:
            raise RequestError(name, f"{chars} characters is too long for the limit of {limits.max_prompt_tokens} "
                                     f"tokens (at most {limits.max_prompt_tokens * PROMPT_CHARS_PER_TOKEN} "
                                     "characters; setting max_prompt_tokens)")
    _check_work(req, limits)
    _check_memory(req, limits)


def _prompt_fields(req: GenerationRequest) -> tuple[str, ...]:
    hires = req.enable_hr and not req.is_img2img
    return ("prompt", "negative_prompt") + (("hr_prompt", "hr_negative_prompt") if hires else ())


def megapixel_steps(req: GenerationRequest) -> float:
    """The work of a request: pixels x steps of each pass x pictures (batch size x batch count), in millions."""
    return sum(w * h * steps for _, w, h, steps in passes(req)) * req.batch_size * req.n_iter / 1e6


def _check_work(req: GenerationRequest, limits: Limits) -> None:
    work = megapixel_steps(req)
    if limits.max_megapixel_steps and work > limits.max_megapixel_steps:
        name = "n_iter" if req.n_iter > 1 else ("batch_size" if req.batch_size > 1 else "steps")
        _over(limits.max_megapixel_steps, work, name, "max_megapixel_steps",
              f"{work:.0f} megapixel-steps (width x height x steps of each pass x batch size {req.batch_size} "
              f"x batch count {req.n_iter})")


def memory_estimate(req: GenerationRequest, element_size: int = 4) -> int:
    """A lower bound of the bytes a job of `req` needs at once (see UNET_VALUES_PER_PIXEL)."""
    pixels = max(w * h for _, w, h, _ in passes(req))
    return int(pixels * req.batch_size * (IMAGE_BYTES_PER_PIXEL + UNET_VALUES_PER_PIXEL * element_size))


def _check_memory(req: GenerationRequest, limits: Limits) -> None:
    if not limits.memory_check or limits.memory is None:
        return
    need = memory_estimate(req, limits.element_size)
    if need < 2**28:   # below 256 MB: not worth asking the device
        return
    try:
        info = limits.memory()
    except (ImportError, OSError, RuntimeError):   # no way to ask (no psutil, a CUDA error): no check
        return
    if need > info.free:
        name, w, h, _ = max(passes(req), key=lambda p: p[1] * p[2])
        raise RequestError("batch_size" if req.batch_size > 1 else name,
                           f"{w}x{h} x {req.batch_size} pictures needs at least {need / 2**30:.1f} GB and the "
                           f"{info.kind.upper()} has {info.free / 2**30:.1f} GB free (setting memory_check)")


def check_prompt_tokens(req: GenerationRequest, limits: Limits) -> None:
    """RequestError where a prompt has more CLIP tokens than max_prompt_tokens (counted as written: both sides
    of a [from:to:when] edit and every AND part count; network tags do not)."""
    if not limits.max_prompt_tokens:
        return
    for name in _prompt_fields(req):
        text = getattr(req, name)
        if text.isascii() and len(text) <= limits.max_prompt_tokens:   # a token is at least one character
            continue
        n = _token_count(text)
        _over(limits.max_prompt_tokens, n, name, "max_prompt_tokens", f"{n} tokens")


@functools.lru_cache(maxsize=64)
def _token_count(text: str) -> int:
    from modules import conditioning

    return conditioning.count_tokens_without_model(text)[0]
