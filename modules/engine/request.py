"""The request of a job: every field of an A1111 txt2img/img2img request, and its validation.

UI, API and command line all build a :class:`GenerationRequest`; :func:`validate` refuses a bad
one (a :class:`RequestError` naming the field) before it takes a place in the queue.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from modules import rng, samplers
from modules.upscalers import IMAGE_UPSCALERS, LATENT_UPSCALE_MODES

RESIZE_MODES = ("Just resize", "Crop and resize", "Resize and fill", "Just resize (latent upscale)")
INPAINTING_FILL = ("fill", "original", "latent noise", "latent nothing")


class RequestError(ValueError):
    """A request field is invalid; `field` names it."""

    def __init__(self, field_name: str, message: str):
        super().__init__(f"{field_name}: {message}")
        self.field = field_name


@dataclass
class GenerationRequest:
    """Everything one job needs. UI, API and command line all build this."""
    prompt: str = ""
    negative_prompt: str = ""
    styles: list[str] = field(default_factory=list)
    sampler_name: str = "DPM++ 2M"
    scheduler: str = "Automatic"
    steps: int = 20
    cfg_scale: float = 7.0
    width: int = 512
    height: int = 512
    seed: int = -1
    subseed: int = -1
    subseed_strength: float = 0.0
    seed_resize_from_h: int = 0
    seed_resize_from_w: int = 0
    n_iter: int = 1
    batch_size: int = 1
    clip_skip: int | None = None       # None: the setting
    tiling: bool = False
    eta: float | None = None
    # hires fix
    enable_hr: bool = False
    hr_scale: float = 2.0
    hr_upscaler: str = "Latent"
    hr_second_pass_steps: int = 0
    hr_resize_x: int = 0
    hr_resize_y: int = 0
    hr_prompt: str = ""
    hr_negative_prompt: str = ""
    # img2img / inpaint
    init_images: list[Any] = field(default_factory=list)   # PIL images
    mask: Any = None                                        # PIL image (white = repaint)
    denoising_strength: float = 0.75
    resize_mode: int = 0
    mask_blur: int = 4
    inpainting_fill: int = 1
    inpaint_full_res: bool = False
    inpaint_full_res_padding: int = 32
    inpainting_mask_invert: bool = False
    initial_noise_multiplier: float | None = None
    # job-level
    override_settings: dict = field(default_factory=dict)
    save_images: bool = True
    do_not_save_grid: bool = False
    mode: str = "txt2img"   # "txt2img" | "img2img"

    @property
    def is_img2img(self) -> bool:
        return self.mode == "img2img"


def validate(req: GenerationRequest) -> None:
    def num(name, value, lo=None, hi=None, integer=False):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RequestError(name, f"must be a number, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise RequestError(name, f"must be a finite number, got {value!r}")
        if integer and int(value) != value:
            raise RequestError(name, f"must be a whole number, got {value!r}")
        if lo is not None and value < lo:
            raise RequestError(name, f"must be at least {lo}, got {value!r}")
        if hi is not None and value > hi:
            raise RequestError(name, f"must be at most {hi}, got {value!r}")

    for name in ("width", "height"):
        v = getattr(req, name)
        num(name, v, 64, 2048, integer=True)
        if int(v) % 8:
            raise RequestError(name, f"must be a multiple of 8, got {v}")
    num("steps", req.steps, 1, 500, integer=True)
    num("cfg_scale", req.cfg_scale, 0, 100)
    num("batch_size", req.batch_size, 1, 64, integer=True)
    num("n_iter", req.n_iter, 1, 1000, integer=True)
    num("subseed_strength", req.subseed_strength, 0, 1)
    num("seed", req.seed, -1, rng.MAX_SEED, integer=True)
    num("subseed", req.subseed, -1, rng.MAX_SEED, integer=True)
    for name in ("seed_resize_from_w", "seed_resize_from_h"):
        v = getattr(req, name)
        num(name, v, -1, 2048, integer=True)
        if 0 < v < 64:
            raise RequestError(name, f"must be 0 (off) or between 64 and 2048, got {v}")
    if req.clip_skip is not None:
        num("clip_skip", req.clip_skip, 1, 12, integer=True)
    if not isinstance(req.prompt, str):
        raise RequestError("prompt", "must be text")
    if not isinstance(req.negative_prompt, str):
        raise RequestError("negative_prompt", "must be text")
    resolve_sampler_lenient(req)
    if req.enable_hr or req.is_img2img:
        num("denoising_strength", req.denoising_strength, 0, 1)
    if req.enable_hr:
        num("hr_scale", req.hr_scale, 1, 8)
        num("hr_second_pass_steps", req.hr_second_pass_steps, 0, 500, integer=True)
        num("hr_resize_x", req.hr_resize_x, 0, 4096, integer=True)
        num("hr_resize_y", req.hr_resize_y, 0, 4096, integer=True)
        if req.hr_upscaler not in LATENT_UPSCALE_MODES and req.hr_upscaler not in IMAGE_UPSCALERS:
            valid = ", ".join([*LATENT_UPSCALE_MODES, *IMAGE_UPSCALERS])
            raise RequestError("hr_upscaler", f"unknown upscaler {req.hr_upscaler!r}. Valid: {valid}")
    if req.is_img2img:
        if not req.init_images:
            raise RequestError("init_images", "img2img needs an init image")
        for im in req.init_images:
            if not isinstance(im, Image.Image):
                raise RequestError("init_images", "is not an image")
        num("resize_mode", req.resize_mode, 0, 3, integer=True)
        num("mask_blur", req.mask_blur, 0, 256, integer=True)
        num("inpainting_fill", req.inpainting_fill, 0, 3, integer=True)
        num("inpaint_full_res_padding", req.inpaint_full_res_padding, 0, 1024, integer=True)
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
