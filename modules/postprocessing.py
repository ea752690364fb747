"""The Extras tab's work (A1111's "postprocessing"): enlarge pictures by one or two upscalers and save them
with their own infotext. The Extras tab and ``/sdapi/v1/extra-single-image`` / ``extra-batch-images`` call
:func:`run`; nothing here knows about gradio or HTTP.

What A1111 does, and so this:
- "Scale by" (``resize_mode`` 0) enlarges by ``upscaling_resize``; "Scale to" (1) by the larger of
  width / picture width and height / picture height, then, with ``upscaling_crop``, the middle is cut out
  at exactly width x height. An upscaler's result is ``int(size * scale) // 8 * 8`` pixels per side (A1111's
  ``Upscaler.upscale``; a crop then pads any shortfall with black, as A1111's does).
- Upscaler 1 "None" leaves the picture as it is (no upscale entry in the infotext); a second upscaler is
  blended over the first by ``extras_upscaler_2_visibility``.
- Saved into ``outdir_extras_samples`` (outputs/extras-images) as NNNNN.png, or under the source's own name
  in a batch when ``use_original_name_batch`` is on; a PNG keeps the source's text chunks ("parameters"
  stays the generation's recipe) and gets an "extras" chunk with this step's infotext.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable

from PIL import Image, ImageOps, UnidentifiedImageError

from modules import images
from modules.upscalers import UpscalerError, UpscalerLibrary

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
MAX_SIDE = 8192                  # the largest result side, and pixels (the API's limits too)
MAX_PIXELS = 8192 * 8192 // 2

_RUN_LOCK = threading.Lock()     # one Extras job at a time: a model upscaler uses every core / the GPU


class ExtrasError(ValueError):
    """A request Extras cannot do; ``field`` names the parameter (for the API's 422)."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


@dataclass
class ExtrasParams:
    """A1111's postprocessing fields (the API's names)."""
    resize_mode: int = 0                       # 0: scale by upscaling_resize; 1: to upscaling_resize_w x _h
    upscaling_resize: float = 2.0
    upscaling_resize_w: int = 512
    upscaling_resize_h: int = 512
    upscaling_crop: bool = True
    upscaler_1: str = "None"
    upscaler_2: str = "None"
    extras_upscaler_2_visibility: float = 0.0
    upscale_first: bool = False                # order against face restoration, which is not built in
    gfpgan_visibility: float = 0.0
    codeformer_visibility: float = 0.0
    codeformer_weight: float = 0.0

    @classmethod
    def from_dict(cls, d: dict) -> "ExtrasParams":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class ExtrasResult:
    image: Image.Image
    infotext: str             # this step's text ("Postprocess upscale by: 2, Postprocess upscaler: ...")
    geninfo: str | None       # the source picture's own parameters, kept
    name: str | None = None   # the source's file name (batch), if known
    path: Path | None = None  # where it was saved


def _quote(v) -> str:
    text = f"{v:g}" if isinstance(v, float) else str(v)
    return f'"{text}"' if ("," in text or ":" in text or '"' in text) else text


def infotext(info: dict) -> str:
    return ", ".join(f"{k}: {_quote(v)}" for k, v in info.items() if v is not None)


def target_scale(im: Image.Image, p: ExtrasParams) -> float:
    if p.resize_mode == 1:
        return max(p.upscaling_resize_w / im.width, p.upscaling_resize_h / im.height)
    return float(p.upscaling_resize)


def upscaled_size(im: Image.Image, scale: float) -> tuple[int, int]:
    """A1111's size of an upscaler's result: ``int(side * scale) // 8 * 8`` (at least 8)."""
    return max(8, int(im.width * scale) // 8 * 8), max(8, int(im.height * scale) // 8 * 8)


def check(library: UpscalerLibrary, p: ExtrasParams, size: tuple[int, int] | None = None) -> None:
    """ExtrasError for a request that cannot run (unknown upscaler, a result too large), before any work."""
    if p.resize_mode not in (0, 1):
        raise ExtrasError("resize_mode", "must be 0 (scale by) or 1 (scale to)")
    for name in ("upscaler_1", "upscaler_2"):
        try:
            library.check(getattr(p, name), latent=False)
        except UpscalerError as e:
            raise ExtrasError(name, str(e)) from None
    if p.resize_mode == 0 and not p.upscaling_resize > 0:
        raise ExtrasError("upscaling_resize", "must be more than 0")
    if p.resize_mode == 1 and (p.upscaling_resize_w < 1 or p.upscaling_resize_h < 1):
        raise ExtrasError("upscaling_resize_w", "width and height must be at least 1")
    if size is not None and p.upscaler_1 != "None":
        w, h = upscaled_size(Image.new("1", size), target_scale(Image.new("1", size), p))
        if p.resize_mode == 1 and p.upscaling_crop:
            w, h = max(w, p.upscaling_resize_w), max(h, p.upscaling_resize_h)
        if w > MAX_SIDE or h > MAX_SIDE or w * h > MAX_PIXELS:
            raise ExtrasError("upscaling_resize" if p.resize_mode == 0 else "upscaling_resize_w",
                              f"the result would be {w}x{h}, larger than allowed ({MAX_SIDE} per side, "
                              f"{MAX_PIXELS} pixels)")


def process(library: UpscalerLibrary, im: Image.Image, p: ExtrasParams, opts: dict | None = None,
            progress: Callable[[int, int], None] | None = None, interrupted: Callable[[], bool] | None = None
            ) -> tuple[Image.Image, dict]:
    """(picture, infotext items) of one source picture."""
    check(library, p, im.size)
    return _enlarge(library, im, p, opts, progress, interrupted)


def _enlarge(library, im, p: ExtrasParams, opts, progress, interrupted) -> tuple[Image.Image, dict]:
    """:func:`process` after its check."""
    base = im.convert("RGBA" if im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info else "RGB")
    info: dict = {}
    if p.upscaler_1 == "None":
        return base, info
    scale = target_scale(base, p)
    if p.resize_mode == 1:
        info["Postprocess upscale to"] = f"{p.upscaling_resize_w}x{p.upscaling_resize_h}"
    else:
        info["Postprocess upscale by"] = float(scale)
    w, h = upscaled_size(base, scale)

    def up(name):
        return library.upscale(base, name, w, h, opts=opts, progress=progress, interrupted=interrupted)

    out = up(p.upscaler_1)
    info["Postprocess upscaler"] = p.upscaler_1
    if p.upscaler_2 != "None" and p.extras_upscaler_2_visibility > 0:
        second = up(p.upscaler_2)
        if second.mode != out.mode:
            second = second.convert(out.mode)
        out = Image.blend(out, second, float(p.extras_upscaler_2_visibility))
        info["Postprocess upscaler 2"] = p.upscaler_2
        info["Postprocess upscaler 2 visibility"] = float(p.extras_upscaler_2_visibility)
    if p.resize_mode == 1 and p.upscaling_crop and out.size != (p.upscaling_resize_w, p.upscaling_resize_h):
        tw, th = p.upscaling_resize_w, p.upscaling_resize_h
        crop = Image.new(out.mode, (tw, th))
        crop.paste(out, (tw // 2 - out.width // 2, th // 2 - out.height // 2))
        out = crop
        info["Postprocess crop to"] = f"{tw}x{th}"
    return out, info


def open_image(path: str | Path) -> Image.Image:
    """A picture file for Extras (EXIF rotation applied, text chunks kept); ExtrasError when it is none."""
    try:
        with Image.open(path) as im:
            im.load()
            out = ImageOps.exif_transpose(im) or im
            out.info = dict(im.info)
            return out.copy() if out is im else out
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise ExtrasError("image", f"{Path(path).name}: not a picture ({e})") from None


def images_in_dir(folder: str | Path) -> list[Path]:
    """The picture files of a folder (not its sub-folders), sorted by name; ExtrasError when it is no folder."""
    d = Path(str(folder).strip()).expanduser()
    if not str(folder).strip():
        raise ExtrasError("input_dir", "enter an input directory")
    if not d.is_dir():
        raise ExtrasError("input_dir", f"{d} is not a folder")
    return sorted((f for f in d.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES),
                  key=lambda f: f.name.lower())


def save(app, result: ExtrasResult, source: Image.Image, opts: dict, output_dir: str | Path | None = None) -> Path:
    """Write one result where A1111 writes it (see the module doc)."""
    outdir = Path(output_dir) if output_dir else Path(opts.get("outdir_extras_samples") or "outputs/extras-images")
    if not outdir.is_absolute():
        outdir = app.paths.data_dir / outdir
    existing = {k: v for k, v in (source.info or {}).items() if isinstance(v, str) and k not in ("extras",)}
    forced = None
    if result.name and opts.get("use_original_name_batch", True):
        forced = Path(result.name).stem
    return images.save_image(
        result.image, outdir, "", infotext=result.infotext or None, extension=opts.get("samples_format", "png"),
        short_filename=True, save_to_dirs=False, forced_filename=forced, existing_pnginfo=existing,
        pnginfo_section_name="extras", jpeg_quality=int(opts.get("jpeg_quality", 80)))


def run(app, sources: list[tuple[Image.Image, str | None]], p: ExtrasParams, *, save_output: bool = True,
        output_dir: str | Path | None = None, progress: Callable[[int, int], None] | None = None,
        interrupted: Callable[[], bool] | None = None) -> list[ExtrasResult]:
    """Every source picture through :func:`process`, saved (``save_output``); ``progress(done, total)`` counts
    the network's tiles of the current picture. One run at a time (a model upscaler takes the machine)."""
    opts = app.opts.snapshot()
    library = app.upscalers
    check(library, p)
    for im, _ in sources:       # every size is checked before the first picture is worked on
        check(library, p, im.size)
    out = []
    with _RUN_LOCK:
        for im, name in sources:
            geninfo, _ = images.read_info_from_image(im)
            picture, info = _enlarge(library, im, p, opts, progress, interrupted)   # checked above
            result = ExtrasResult(picture, infotext(info), geninfo, name)
            if save_output:
                result.path = save(app, result, im, opts, output_dir)
            out.append(result)
    return out
