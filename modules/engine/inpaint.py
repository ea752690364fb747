"""The inpainting stage: masks, the images the model sees, and how the mask reaches the sampler.

Pictures (PIL): the mask is inverted and blurred as asked; with "Only masked" the padded bounding box
of the mask is cut out and scaled to the job's size; "fill" paints the masked area with the blurred
colours around it.  After sampling, the result is pasted back over the original through the
blurred mask (:class:`Overlay`).

Latents: an inpainting model (9 input channels, the family's inpaint variant) gets the mask and the
masked image's latents as extra channels (``image_cond``); a normal model gets ``blend``: at every
step its prediction keeps the image outside the mask, and so does the result (A1111's behaviour).
"latent noise" / "latent nothing" fill the masked latents with noise / zeros first.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter, ImageOps

from modules.engine import vae
from modules.engine.context import JobContext
from modules.engine.request import GenerationRequest

FILL, ORIGINAL, LATENT_NOISE, LATENT_NOTHING = range(4)   # inpainting_fill, A1111's "Masked content"


@dataclass
class Overlay:
    """How a generated picture goes back over its original: through the blurred mask, into the box."""
    originals: list[Image.Image]
    mask: Image.Image
    crop_box: tuple[int, int, int, int] | None

    def apply(self, pic: Image.Image, index: int) -> Image.Image:
        orig = self.originals[index % len(self.originals)].convert("RGB")
        mask = self.mask
        if self.crop_box is not None:
            x1, y1, x2, y2 = self.crop_box
            region = pic.resize((x2 - x1, y2 - y1), Image.LANCZOS)
            canvas = orig.copy()
            canvas.paste(region, (x1, y1))
            return Image.composite(canvas, orig, mask.convert("L"))
        if orig.size != pic.size:
            orig = orig.resize(pic.size, Image.LANCZOS)
            mask = mask.resize(pic.size, Image.LANCZOS)
        return Image.composite(pic, orig, mask.convert("L"))


@dataclass
class PreparedImages:
    init: list[Image.Image]              # what the VAE encodes, at the job's size
    mask: Image.Image | None             # the (blurred) mask at the job's size, white = repaint
    overlay: Overlay | None


@dataclass
class InpaintConditioning:
    image_latents: torch.Tensor          # the starting image's latents (masked content filled)
    image_cond: torch.Tensor | None = None   # inpainting models: mask + masked-image latents
    blend: tuple | None = None           # normal models: (image latents, keep mask)
    latent_mask: torch.Tensor | None = None


def prepare_images(req: GenerationRequest, upscaler=None) -> PreparedImages:
    """The init images and mask of an img2img request, resized (or cut out) to the job's size; ``upscaler``
    (a ``(im, w, h) -> image``, A1111's "Upscaler for img2img") enlarges the pictures, Lanczos otherwise."""
    up = upscaler or "Lanczos"
    from modules import images as images_mod

    init = [im.convert("RGB") for im in req.init_images]
    mask = req.mask.convert("L") if req.mask is not None else None
    if mask is None:
        return PreparedImages([images_mod.resize_image(req.resize_mode, im, req.width, req.height, up) for im in init],
                              None, None)
    if req.inpainting_mask_invert:
        mask = ImageOps.invert(mask)
    blurred = mask.filter(ImageFilter.GaussianBlur(req.mask_blur)) if req.mask_blur > 0 else mask
    originals = [im.copy() for im in init]
    crop_box = masked_region(mask, req.inpaint_full_res_padding, req.width, req.height) \
        if req.inpaint_full_res else None
    if crop_box is not None:
        init = [im.crop(crop_box).resize((req.width, req.height), Image.LANCZOS) for im in init]
        model_mask = blurred.crop(crop_box).resize((req.width, req.height), Image.LANCZOS)
    else:  # the whole picture (also "only masked" with an empty mask)
        init = [images_mod.resize_image(req.resize_mode, im, req.width, req.height, up) for im in init]
        model_mask = images_mod.resize_image(req.resize_mode, blurred, req.width, req.height)
    if req.inpainting_fill == FILL:
        init = [fill_masked(im, model_mask) for im in init]
    return PreparedImages(init, model_mask, Overlay(originals, blurred, crop_box))


def conditioning(ctx: JobContext, mask: Image.Image | None, image_t: torch.Tensor, image_latents: torch.Tensor,
                 noise: torch.Tensor) -> InpaintConditioning:
    """How the mask reaches the sampler (see the module doc); ``image_t`` are the init images in [-1, 1]."""
    B, _, h8, w8 = image_latents.shape
    out = InpaintConditioning(image_latents)
    if mask is not None:
        m = torch.from_numpy(np.asarray(mask, dtype=np.float32) / 255.0)[None, None]
        latent_mask = F.interpolate(m, size=(h8, w8), mode="nearest").to(ctx.device).expand(B, -1, -1, -1)
        out.latent_mask = latent_mask
        fill = ctx.request.inpainting_fill
        if fill == LATENT_NOISE:
            out.image_latents = image_latents * (1 - latent_mask) + noise * latent_mask
        elif fill == LATENT_NOTHING:
            out.image_latents = image_latents * (1 - latent_mask)
    if ctx.spec.is_inpaint:
        out.image_cond = _inpaint_model_input(ctx, mask, image_t, B, h8, w8)
    elif out.latent_mask is not None:
        out.blend = (out.image_latents, 1 - out.latent_mask)
    return out


def _inpaint_model_input(ctx: JobContext, mask, image_t: torch.Tensor, B: int, h8: int, w8: int) -> torch.Tensor:
    if mask is not None:
        mbin = (torch.from_numpy(np.asarray(mask, dtype=np.float32) / 255.0)[None, None] >= 0.5).float()
        masked_image = image_t * (1 - mbin)
        mask_lat = F.interpolate(mbin, size=(h8, w8)).expand(B, -1, -1, -1)
    else:
        # plain img2img with an inpainting model: everything is masked (A1111's default mask weight 1)
        masked_image = torch.zeros_like(image_t)
        mask_lat = torch.ones(B, 1, h8, w8)
    return torch.cat([mask_lat.to(ctx.device), vae.encode(ctx, masked_image).to(ctx.device)], 1).to(ctx.dtype)


def unmasked_conditioning(ctx: JobContext, B: int, height: int, width: int) -> torch.Tensor | None:
    """An inpainting model used without a mask (txt2img, hires): everything is masked, the image is gray."""
    if not ctx.spec.is_inpaint:
        return None
    gray = torch.zeros(B, 3, height, width)
    mask = torch.ones(B, 1, height // 8, width // 8, device=ctx.device)
    return torch.cat([mask, vae.encode(ctx, gray).to(ctx.device)], 1).to(ctx.dtype)


def masked_region(mask: Image.Image, pad: int, width: int, height: int):
    """Bounding box of the mask, padded, grown to the target aspect ratio, clipped to the image."""
    box = mask.point(lambda v: 255 if v > 0 else 0).getbbox()
    if box is None:
        return None
    x1, y1, x2, y2 = box
    W, H = mask.size
    x1, y1, x2, y2 = max(x1 - pad, 0), max(y1 - pad, 0), min(x2 + pad, W), min(y2 + pad, H)
    ratio = width / height
    bw, bh = x2 - x1, y2 - y1
    if bw / bh < ratio:
        x1, x2 = _grow(x1, x2, int(bh * ratio) - bw, W)
    else:
        y1, y2 = _grow(y1, y2, int(bw / ratio) - bh, H)
    return (x1, y1, x2, y2)


def _grow(lo: int, hi: int, grow: int, limit: int) -> tuple[int, int]:
    """Widen [lo, hi) by ``grow`` around its centre, shifted back inside [0, limit)."""
    lo, hi = lo - grow // 2, hi + grow - grow // 2
    if lo < 0:
        hi -= lo
        lo = 0
    if hi > limit:
        lo -= hi - limit
        hi = limit
    return max(lo, 0), hi


def fill_masked(image: Image.Image, mask: Image.Image) -> Image.Image:
    """'fill': paint the masked area with blurred colours of its surroundings."""
    im = image.convert("RGB")
    m = mask.convert("L").point(lambda v: 255 if v > 127 else 0)
    keep = ImageOps.invert(m)
    base = Image.new("RGB", im.size, (127, 127, 127))
    base.paste(im, mask=keep)
    for radius in (256, 64, 16, 4, 2, 1):
        blurred = base.filter(ImageFilter.GaussianBlur(radius))
        base = Image.composite(base, blurred, keep)
    return Image.composite(base, im, m)
