"""The upscalers a hires pass, the API and the UI offer, by A1111's names: latent modes (the latent is
resized) and image upscalers (the decoded image is resized, then encoded again)."""
from __future__ import annotations

from PIL import Image

# name -> (torch interpolation mode, antialias)
LATENT_UPSCALE_MODES = {
    "Latent": ("bilinear", False),
    "Latent (antialiased)": ("bilinear", True),
    "Latent (bicubic)": ("bicubic", False),
    "Latent (bicubic antialiased)": ("bicubic", True),
    "Latent (nearest)": ("nearest", False),
    "Latent (nearest-exact)": ("nearest-exact", False),
}
IMAGE_UPSCALERS = ("None", "Lanczos", "Nearest")


def names() -> list[str]:
    """Every upscaler a hires pass accepts, latent modes first (A1111's dropdown order)."""
    return [*LATENT_UPSCALE_MODES, *IMAGE_UPSCALERS]


def upscale_image(im: Image.Image, name: str, width: int, height: int) -> Image.Image:
    """``im`` resized to width x height by the image upscaler ``name`` ("None" keeps it as it is)."""
    if name == "None" or im.size == (width, height):
        return im
    return im.resize((width, height), Image.NEAREST if name == "Nearest" else Image.LANCZOS)
