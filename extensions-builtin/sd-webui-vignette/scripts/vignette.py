"""Vignette: darkens each picture towards its corners (an always-on script; the example extension).

Each channel value ``p`` of the pixel in column ``x`` and row ``y`` of a ``w`` x ``h`` picture becomes

    p * (1 - k/100 * r2 / R2), rounded to the nearest whole number (halves up)

with ``k`` the strength in hundredths, ``r2 = (2x + 1 - w)**2 + (2y + 1 - h)**2`` (twice the distance
from the centre, squared) and ``R2`` the same of a corner pixel: the centre keeps its colour, the
corners keep ``1 - strength`` of it.  The arithmetic is on integers, so the result is exact.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from modules.scripts import Arg, Script


def vignette(image: Image.Image, strength: float) -> Image.Image | None:
    """The darkened picture (RGB), or None where it would not change."""
    k = int(round(float(strength) * 100))
    w, h = image.size
    corner = (w - 1) ** 2 + (h - 1) ** 2
    if k == 0 or corner == 0:
        return None
    rgb = np.asarray(image.convert("RGB"), dtype=np.int64)
    u = np.arange(w, dtype=np.int64) * 2 + 1 - w
    v = np.arange(h, dtype=np.int64) * 2 + 1 - h
    r2 = v[:, None] ** 2 + u[None, :] ** 2
    den = 100 * corner
    out = (rgb * (den - k * r2)[..., None] + den // 2) // den
    return Image.fromarray(out.astype(np.uint8), "RGB")


class Vignette(Script):
    title = "Vignette"
    show = "both"
    alwayson = True

    def args(self, is_img2img):
        return [Arg("enabled", "Enable", "checkbox", False),
                Arg("strength", "Strength", "slider", 0.5, 0.0, 1.0, 0.05, infotext="Vignette",
                    info="How much the corners darken: 0 keeps the picture, 1 makes the corners black.")]

    def after_image(self, ctx, image, a):
        return vignette(image, a.strength)
