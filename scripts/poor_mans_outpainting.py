"""A1111's "Poor man's outpainting" (img2img): the canvas grown by some pixels on the chosen sides (to a
multiple of 64), cut into tiles of the job's size overlapping by those pixels, every tile that reaches
into the new border inpainted, the tiles blended back together: one picture."""
from __future__ import annotations

import dataclasses
import math

from PIL import Image, ImageDraw

from modules import fields, tiles
from modules.engine import GenerationResult, RequestError
from modules.tiles import DIRECTIONS, sides
from modules.scripts import Arg, Script, finish_result



def border_mask(size: tuple[int, int], left: int, right: int, up: int, down: int, inset: int) -> Image.Image:
    """White (repaint) outside the original picture's box, the box shrunk by ``inset`` on the grown sides."""
    w, h = size
    mask = Image.new("L", size, 255)
    ImageDraw.Draw(mask).rectangle((left + (inset if left else 0), up + (inset if up else 0),
                                    w - right - (inset if right else 0), h - down - (inset if down else 0)), fill=0)
    return mask


class PoorMansOutpainting(Script):
    title = "Poor man's outpainting"
    show = "img2img"

    def args(self, is_img2img):
        return [
            Arg("pixels", "Pixels to expand", "slider", 128, 8, 256, 8, whole=True),
            Arg("mask_blur", "Mask blur", "slider", 4, 0, 64, 1, whole=True),
            Arg("inpainting_fill", "Masked content", "radio", "fill", choices=fields.INPAINTING_FILL),
            Arg("direction", "Outpainting direction", "dropdown", list(DIRECTIONS), choices=DIRECTIONS,
                multiselect=True),
        ]

    def run(self, job, a):
        req = job.request
        if a.pixels >= min(req.width, req.height):
            raise RequestError("script_args", f"script '{self.title}', argument 'Pixels to expand': {a.pixels} must "
                                              f"be less than the tile size {req.width}x{req.height}")
        if not a.direction:
            raise RequestError("script_args", f"script '{self.title}', argument 'Outpainting direction': "
                                              "choose at least one side")
        init = req.init_images[0].convert("RGB")
        left, right, up, down = sides(init.width, init.height, a.pixels, a.direction)
        # a multiple of 64 on both sides, also one that does not grow (A1111 pads it on the right / bottom)
        img = Image.new("RGB", (math.ceil((init.width + left + right) / 64) * 64,
                                math.ceil((init.height + up + down) / 64) * 64))
        img.paste(init, (left, up))
        mask = border_mask(img.size, left, right, up, down, a.mask_blur * 2)
        # (A1111 also draws a latent mask, inset by mask_blur // 2; the engine takes one mask for both)
        grid = tiles.split_grid(img, req.width, req.height, a.pixels)
        grid_mask = tiles.split_grid(mask, req.width, req.height, a.pixels)
        inner = (left, up, img.width - right, img.height - down)
        work = [(cell, mcell[2]) for (y, h, row), (_, _, mrow) in zip(grid.tiles, grid_mask.tiles)
                for cell, mcell in zip(row, mrow)
                if not (cell[0] >= inner[0] and cell[0] + cell[1] <= inner[2] and y >= inner[1] and y + h <= inner[3])]
        blur = a.mask_blur * 2
        extra = {"Mask blur": blur or None}
        fill = fields.INPAINTING_FILL.index(a.inpainting_fill)
        job.set_total(len(work))
        seed, first = req.seed, None   # A1111: the request's seed (random when -1), then one up per tile
        for cell, tile_mask in work:
            if job.interrupted:
                return finish_result(job, GenerationResult())
            r = job.process(dataclasses.replace(
                req, init_images=[cell[2]], mask=tile_mask, mask_blur=blur, inpainting_fill=fill,
                inpaint_full_res=False, seed=seed, n_iter=1, batch_size=1, save_images=False,
                do_not_save_grid=True), extra_params=extra)
            if not r.images:
                return finish_result(job, GenerationResult())
            first = first or r
            seed = r.seeds[0] + 1
            cell[2] = r.images[0]
        if first is None:
            return finish_result(job, GenerationResult())
        combined = tiles.combine_grid(grid)
        out = GenerationResult(images=[combined])
        out.infotexts, out.seeds, out.subseeds = [first.infotexts[0]], [first.seeds[0]], [first.subseeds[0]]
        out.prompts, out.negative_prompts = [first.prompts[0]], [first.negative_prompts[0]]
        out.info = dict(first.info)
        path = job.save_image(combined, first.infotexts[0], first.seeds[0], req.prompt)
        if path:
            out.saved_files.append(path)
        return finish_result(job, out)
