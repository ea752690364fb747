"""The request of a job: every field of an A1111 txt2img/img2img request, and its validation.

UI, API and command line all build a :class:`GenerationRequest`; :func:`validate` refuses a bad
one (a :class:`RequestError` naming the field) before it takes a place in the queue.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from PIL import Image

from modules import fields, samplers, upscalers

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
    """RequestError naming the first field at fault: the table's bounds, then the checks of their own."""
    for f in fields.request_fields():
        value = getattr(req, f.name)
        if f.bounded and f.applies(req.mode, req.enable_hr) and not (value is None and f.default is None):
            check_number(f, value)
    for name in ("seed_resize_from_w", "seed_resize_from_h"):
        v = getattr(req, name)
        if 0 < v < 64:
            raise RequestError(name, f"must be 0 (off) or between 64 and 2048, got {v}")
    for name in ("prompt", "negative_prompt"):
        if not isinstance(getattr(req, name), str):
            raise RequestError(name, "must be text")
    resolve_sampler_lenient(req)
    if req.enable_hr:
        _validate_hires(req)
    if req.is_img2img:
        _validate_images(req)


def _validate_hires(req: GenerationRequest) -> None:
    if req.hr_upscaler not in upscalers.names():
        valid = ", ".join(upscalers.names())
        raise RequestError("hr_upscaler", f"unknown upscaler {req.hr_upscaler!r}. Valid: {valid}")
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
