"""A1111's "Outpainting mk2" (img2img): the canvas grown by some pixels on the chosen sides, one side
at a time; the new strip is filled with noise shaped like the picture's spectrum and coloured like
it (``matched_noise``), then inpainted ("original" content) at most the job's size at a time."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
from PIL import Image, ImageDraw

from modules import images
from modules.engine import GenerationResult, RequestError
from modules.tiles import DIRECTIONS, sides
from modules.scripts import Arg, Script, finish_result

INFO = "Recommended settings: Sampling Steps: 80-100, Sampler: Euler a, Denoising strength: 0.8"


# -- the noise fill (g-diffuser's, as A1111 uses it) -------------------------------------------


def _fft2(a: np.ndarray) -> np.ndarray:
    """Orthonormal 2-D FFT of each channel, centred before and after."""
    ax = (0, 1)
    return np.fft.ifftshift(np.fft.fft2(np.fft.fftshift(a, axes=ax), axes=ax, norm="ortho"), axes=ax)


def _ifft2(a: np.ndarray) -> np.ndarray:
    ax = (0, 1)
    return np.fft.ifftshift(np.fft.ifft2(np.fft.fftshift(a, axes=ax), axes=ax, norm="ortho"), axes=ax)


def _falloff_window(rows: int, cols: int) -> np.ndarray:
    """1 / ((x^2 + 1)(y^2 + 1)) over [-1, 1) on each axis, the shorter side's scale on both."""
    short = min(rows, cols)
    x = (np.arange(rows) / rows * 2.0 - 1.0) * (rows / short)
    y = (np.arange(cols) / cols * 2.0 - 1.0) * (cols / short)
    return 1.0 / ((x[:, None] ** 2 + 1.0) * (y[None, :] ** 2 + 1.0))


def match_histograms(source: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Each column (channel) of ``source`` given the value distribution of ``reference``'s (the
    cumulative histograms matched, as scikit-image's ``exposure.match_histograms`` does)."""
    out = np.empty(source.shape, dtype=np.float64)
    for c in range(source.shape[1]):
        values, inverse, counts = np.unique(source[:, c], return_inverse=True, return_counts=True)
        ref_values, ref_counts = np.unique(reference[:, c], return_counts=True)
        quantiles = np.cumsum(counts) / source.shape[0]
        ref_quantiles = np.cumsum(ref_counts) / reference.shape[0]
        out[:, c] = np.interp(quantiles, ref_quantiles, ref_values)[inverse.reshape(-1)]
    return out


def matched_noise(src: np.ndarray, mask: np.ndarray, noise_q: float = 1.0, color_variation: float = 0.05) -> np.ndarray:
    """``src`` (H x W x 3 in [0, 1]) with its masked part (``mask`` H x W x 3, 1 = new) replaced by noise:
    greyish noise (``color_variation`` of it in colour) given the picture's spectrum to the power
    ``noise_q`` and its phases, then the histogram of the unmasked pixels.  Deterministic (seed 0)."""
    grey = mask.sum(axis=2) / 3.0
    new_px, ref_px = grey > 1e-6, grey < 1e-3
    windowed = src * (1.0 - grey[:, :, None])
    top = windowed.max()
    if top > 0:
        windowed = windowed / top
    windowed = windowed + np.average(src) * mask   # the masked area at the mean colour helps the FFT
    src_fft = _fft2(windowed)
    src_dist = np.absolute(src_fft)
    src_phase = np.divide(src_fft, src_dist, out=np.zeros_like(src_fft), where=src_dist > 0)

    gen = np.random.default_rng(0)
    noise = gen.random(src.shape)
    noise_grey = noise.sum(axis=2) / 3.0
    noise = noise * color_variation + (1.0 - color_variation) * noise_grey[:, :, None]
    noise_fft = _fft2(noise) * _falloff_window(src.shape[0], src.shape[1])[:, :, None]
    noise = np.real(_ifft2(noise_fft))
    shaped_fft = np.absolute(_fft2(noise)) ** 2 * (src_dist ** noise_q) * src_phase

    shaped = np.real(_ifft2(shaped_fft))
    shaped -= shaped.min()
    top = shaped.max()
    if top > 0:
        shaped /= top
    if new_px.any() and ref_px.any():
        shaped[new_px, :] = match_histograms(shaped[new_px, :], src[ref_px, :])
    shaped = src * (1.0 - mask) + shaped * mask
    return np.clip(shaped, 0.0, 1.0)


# -- the script ----------------------------------------------------------------------------------


class OutpaintingMk2(Script):
    title = "Outpainting mk2"
    show = "img2img"

    def args(self, is_img2img):
        return [
            Arg("info", "", "html", f"<p style=\"margin-bottom:0.75em\">{INFO}</p>"),
            Arg("pixels", "Pixels to expand", "slider", 128, 8, 256, 8, whole=True),
            Arg("mask_blur", "Mask blur", "slider", 8, 0, 64, 1, whole=True),
            Arg("direction", "Outpainting direction", "dropdown", list(DIRECTIONS), choices=DIRECTIONS,
                multiselect=True),
            Arg("noise_q", "Fall-off exponent (lower=higher detail)", "slider", 1.0, 0.0, 4.0, 0.01),
            Arg("color_variation", "Color variation", "slider", 0.05, 0.0, 1.0, 0.01),
        ]

    def run(self, job, a):
        req = job.request
        if not a.direction:
            raise RequestError("script_args", f"script '{self.title}', argument 'Outpainting direction': "
                                              "choose at least one side")
        init = req.init_images[0].convert("RGB")
        left, right, up, down = sides(init.width, init.height, a.pixels, a.direction)
        # A1111 blurs across (x) and along (y) by 4 x mask blur where the sides grow that way; the
        # engine blurs both ways alike, and the infotext has "Mask blur" only where the two agree
        blur = a.mask_blur * 4
        extra = {"Mask blur": blur if blur and (left or right) and (up or down) else None}
        steps = [(n, s) for n, s in zip((left, right, up, down), DIRECTIONS) if n > 0]
        job.set_total(req.n_iter * len(steps))
        pictures, seeds, subseeds, first = [], [], [], None
        for _ in range(req.n_iter):
            # A1111 passes the seed on as asked each time: a fixed seed repeats itself in every batch
            pics, round_first = [init] * req.batch_size, None
            for n, side in steps:
                if job.interrupted:
                    pics = None
                    break
                pics, r = self._expand(job, a, pics, n, side, extra)
                round_first = round_first or r
                if pics is None:
                    break
            if pics is None:
                break
            first = first or round_first
            pictures += pics
            seeds += round_first.seeds
            subseeds += round_first.subseeds
        return self._result(job, pictures, seeds, subseeds, first)

    def _expand(self, job, a, pics: list[Image.Image], px: int, side: str, extra: dict):
        """The pictures grown by ``px`` on ``side`` (None when the job made too few), and the job's result:
        the new strip filled with matched noise, then inpainted next to that side, at most the job's size
        across (a multiple of 8 for the engine)."""
        req = job.request
        is_left, is_right, is_top, is_bottom = (side == s for s in DIRECTIONS)
        horiz = is_left or is_right
        px_w, px_h = (px, 0) if horiz else (0, px)
        res_w, res_h = pics[0].width + px_w, pics[0].height + px_h
        canvas_w, canvas_h = math.ceil(res_w / 64) * 64, math.ceil(res_h / 64) * 64
        mb = a.mask_blur
        mask = Image.new("L", (canvas_w, canvas_h), 255)
        ImageDraw.Draw(mask).rectangle((px + mb if is_left else 0, px + mb if is_top else 0,
                                        canvas_w - px - mb if is_right else res_w,
                                        canvas_h - px - mb if is_bottom else res_h), fill=0)
        np_mask = np.repeat((np.asarray(mask) / 255.0)[:, :, None], 3, axis=2)
        noised = []
        for pic in pics:
            canvas = Image.new("RGB", (canvas_w, canvas_h))
            canvas.paste(pic, (px_w if is_left else 0, px_h if is_top else 0))
            filled = matched_noise(np.asarray(canvas) / 255.0, np_mask, a.noise_q, a.color_variation)
            noised.append(Image.fromarray(np.clip(filled * 255.0, 0, 255).astype(np.uint8), "RGB"))
        tw = min(req.width, res_w) // 8 * 8 if horiz else canvas_w
        th = min(req.height, res_h) // 8 * 8 if not horiz else canvas_h
        box = (0 if is_left else canvas_w - tw, 0 if is_top else canvas_h - th,
               tw if is_left else canvas_w, th if is_top else canvas_h)
        r = job.process(dataclasses.replace(
            req, init_images=[im.crop(box) for im in noised], mask=mask.crop(box), width=tw, height=th,
            mask_blur=mb * 4, inpainting_fill=1, inpaint_full_res=False, n_iter=1, batch_size=len(pics),
            save_images=False, do_not_save_grid=True), extra_params=extra)
        if len(r.images) < len(pics):
            return None, r
        out = []
        for im, done in zip(noised, r.images):
            im.paste(done, (box[0], box[1]))
            out.append(im.crop((0, 0, res_w, res_h)))
        return out, r

    def _result(self, job, pictures, seeds, subseeds, first) -> GenerationResult:
        """The pictures (each with the first job's infotext, as A1111), a grid first where there are
        several; each saved, and the grid where grids are saved."""
        req = job.request
        out = GenerationResult()
        if not pictures:
            return finish_result(job, out)
        n, info = len(pictures), first.infotexts[0]
        prompt, negative = first.prompts[0], first.negative_prompts[0]
        out.images, out.infotexts, out.seeds, out.subseeds = list(pictures), [info] * n, list(seeds), list(subseeds)
        out.prompts, out.negative_prompts = [prompt] * n, [negative] * n
        for pic in pictures:
            path = job.save_image(pic, info, seeds[0], req.prompt)
            if path:
                out.saved_files.append(path)
        out.info = dict(first.info, index_of_first_image=0)
        if n > 1 or not job.opts.get("grid_only_if_multiple", True):
            grid = images.image_grid(pictures)
            job.save_grid(grid, info, seeds[0], req.prompt)
            if job.opts.get("return_grid", True):
                for name, value in (("images", grid), ("infotexts", info), ("seeds", seeds[0]),
                                    ("subseeds", subseeds[0]), ("prompts", prompt),
                                    ("negative_prompts", negative)):
                    getattr(out, name).insert(0, value)
                out.info["index_of_first_image"] = 1
        return finish_result(job, out)
