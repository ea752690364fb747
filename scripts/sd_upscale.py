"""A1111's "SD upscale" (img2img): the init image enlarged by an upscaler, cut into tiles of the job's
size, each tile run through img2img, the tiles blended back together; one picture per batch count."""
from __future__ import annotations

import dataclasses
import math

from PIL import Image

from modules import rng, tiles, upscalers
from modules.engine import GenerationResult, RequestError
from modules.scripts import Arg, Script, finish_result

INFO = "Will upscale the image by the selected scale factor; use width and height sliders to set tile size"


def upscaler_names(app=None, is_img2img=True) -> list[str]:
    """None, Lanczos, Nearest and the installed model upscalers (read at call time: files added later are
    listed after a refresh)."""
    if app is not None and getattr(app, "upscalers", None) is not None:
        return app.upscalers.names(latent=False)
    return list(upscalers.IMAGE_UPSCALERS)


def flatten(im: Image.Image, color: str = "#ffffff") -> Image.Image:
    """A picture with transparency over a plain background (A1111's img2img background colour)."""
    if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, color)
        return Image.alpha_composite(bg, rgba).convert("RGB")
    return im.convert("RGB")


def upscale(im: Image.Image, name: str, scale: float, library=None, opts: dict | None = None,
            interrupted=None) -> Image.Image:
    """``im`` enlarged by ``scale`` as A1111's upscalers do: the upscaler (a model one through ``library``,
    the app's UpscalerLibrary) to the scaled size, then a Lanczos resize down to multiples of 8; "None" keeps
    the picture as it is."""
    if name == "None":
        return im
    dest = (int(im.width * scale // 8 * 8), int(im.height * scale // 8 * 8))
    if library is not None and not upscalers.is_builtin(name):
        try:
            return library.upscale(im, name, *dest, opts=opts, interrupted=interrupted)
        except upscalers.UpscalerError as e:
            raise RequestError("script_args", f"script 'SD upscale', argument 'Upscaler': {e}") from None
    out = upscalers.upscale_image(im, name, int(im.width * scale), int(im.height * scale))
    if out.size != dest:
        out = out.resize(dest, Image.LANCZOS)
    return out


def tile_batches(n_tiles: int, batch_size: int, seed: int) -> list[tuple[int, int, int]]:
    """(first tile, tile count, seed) of each img2img job of one round: ``batch_size`` tiles a job, the
    seed one up per job (A1111 takes the next job's seed from the previous job's first seed)."""
    return [(i * batch_size, min(batch_size, n_tiles - i * batch_size), seed + i)
            for i in range(math.ceil(n_tiles / batch_size))]


class SDUpscale(Script):
    title = "SD upscale"
    show = "img2img"

    def args(self, is_img2img):
        return [
            Arg("info", "", "html", f"<p style=\"margin-bottom:0.75em\">{INFO}</p>"),
            Arg("overlap", "Tile overlap", "slider", 64, 0, 256, 16, whole=True),
            Arg("upscaler_index", "Upscaler", "radio", "None", choices=upscaler_names),
            Arg("scale_factor", "Scale Factor", "slider", 2.0, 1.0, 4.0, 0.05),
        ]

    def run(self, job, a):
        req = job.request
        if a.overlap >= min(req.width, req.height):
            raise RequestError("script_args", f"script '{self.title}', argument 'Tile overlap': {a.overlap} must "
                                              f"be less than the tile size {req.width}x{req.height}")
        seed, subseed = rng.fix_seed(req.seed), rng.fix_seed(req.subseed)
        extra = {"SD upscale overlap": a.overlap, "SD upscale upscaler": a.upscaler_index}
        library = getattr(job.app, "upscalers", None)
        img = upscale(flatten(req.init_images[0]), a.upscaler_index, a.scale_factor, library, job.opts,
                      interrupted=lambda: job.interrupted)
        grid = tiles.split_grid(img, req.width, req.height, a.overlap)
        cells = [t for _, _, row in grid.tiles for t in row]
        work = [t[2] for t in cells]   # every round starts from the upscaled picture's tiles
        rounds = req.n_iter
        job.set_total(len(tile_batches(len(work), req.batch_size, seed)) * rounds)
        out, first = GenerationResult(), None
        for n in range(rounds):
            start_seed = seed + n
            results = []
            for at, count, batch_seed in tile_batches(len(work), req.batch_size, start_seed):
                if job.interrupted:
                    break
                r = job.process(dataclasses.replace(
                    req, init_images=work[at:at + count], mask=None, seed=batch_seed, subseed=subseed,
                    n_iter=1, batch_size=count, save_images=False, do_not_save_grid=True), extra_params=extra)
                first = first or r
                results.extend(r.images[:count])
            if len(results) < len(work):   # interrupted: no picture of this round
                break
            for t, pic in zip(cells, results):
                t[2] = pic
            combined = tiles.combine_grid(grid)
            # every picture has the first tile's infotext, as in A1111
            out.images.append(combined)
            out.infotexts.append(first.infotexts[0])
            out.seeds.append(start_seed)
            out.subseeds.append(first.subseeds[0])
            out.prompts.append(first.prompts[0])
            out.negative_prompts.append(first.negative_prompts[0])
            path = job.save_image(combined, first.infotexts[0], start_seed, req.prompt)
            if path:
                out.saved_files.append(path)
        if first is not None:
            out.info = dict(first.info, seed=seed)
        return finish_result(job, out)
