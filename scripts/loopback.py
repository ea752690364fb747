"""A1111's "Loopback" (img2img): each picture is the init image of the next loop, the denoising strength
going from the request's to the final one along a curve, the seed one up per loop."""
from __future__ import annotations

import dataclasses
import math

from modules import images, rng
from modules.engine import GenerationResult
from modules.scripts import Arg, Script, finish_result

LISTS = ("images", "infotexts", "seeds", "subseeds", "prompts", "negative_prompts")
CURVES = ("Aggressive", "Linear", "Lazy")


def denoising_strength(loop: int, loops: int, initial: float, final: float, curve: str) -> float:
    """The strength of loop ``loop`` (0-based; loop 0 has the request's), as A1111 computes it."""
    if loops == 1 or loop == 0:
        return initial
    progress = loop / (loops - 1)
    if curve == "Aggressive":
        t = math.sin(progress * math.pi * 0.5)
    elif curve == "Lazy":
        t = 1 - math.cos(progress * math.pi * 0.5)
    else:
        t = progress
    return initial + (final - initial) * t


def add(out: GenerationResult, r: GenerationResult) -> None:
    """Append the picture of ``r`` (a one-picture job) with its lists to ``out``."""
    for name in LISTS:
        getattr(out, name).append(getattr(r, name)[0])


class Loopback(Script):
    title = "Loopback"
    show = "img2img"

    def args(self, is_img2img):
        return [
            Arg("loops", "Loops", "slider", 4, 1, 32, 1, whole=True),
            Arg("final_denoising_strength", "Final denoising strength", "slider", 0.5, 0.0, 1.0, 0.01),
            Arg("denoising_curve", "Denoising strength curve", "dropdown", "Linear", choices=CURVES),
            Arg("append_interrogation", "Append interrogated prompt at each iteration", "dropdown", "None",
                choices=("None",), info="Interrogation (CLIP, DeepBooru) is not available here"),
        ]

    def run(self, job, a):
        req = job.request
        seed, subseed = rng.fix_seed(req.seed), rng.fix_seed(req.subseed)
        batch_count, loops = req.n_iter, a.loops
        extra = {"Final denoising strength": a.final_denoising_strength, "Denoising curve": a.denoising_curve}
        job.set_total(loops * batch_count)
        out, history, first = GenerationResult(), [], None
        for _ in range(batch_count):   # each batch starts again from the request's image and strength
            init, fill, last = req.init_images, req.inpainting_fill, None
            for i in range(loops):
                strength = denoising_strength(i, loops, req.denoising_strength, a.final_denoising_strength,
                                              a.denoising_curve)
                r = job.process(dataclasses.replace(
                    req, init_images=init, inpainting_fill=fill, denoising_strength=strength, seed=seed,
                    subseed=subseed, n_iter=1, batch_size=1, do_not_save_grid=True), extra_params=extra)
                if job.interrupted or not r.images:
                    break
                first = first or r
                seed += 1
                if job.control.skipped:
                    break
                last = r
                init, fill = [r.images[0]], 1   # the next loop keeps the masked area's picture ("original")
                if batch_count == 1:
                    history.append(r)
            if batch_count > 1 and last is not None and not job.control.skipped and not job.interrupted:
                history.append(last)
            if job.interrupted:
                break
        for r in history:
            add(out, r)
        if first is not None:
            out.info = dict(first.info)
        if len(history) > 1:
            self._grid(job, out, first)
        return finish_result(job, out)

    def _grid(self, job, out: GenerationResult, first: GenerationResult) -> None:
        """A row of the pictures, saved as a grid (without parameters, as A1111) and first in the results
        where the settings show grids (with the first loop's infotext)."""
        grid = images.image_grid(list(out.images), rows=1)
        job.save_grid(grid, None, first.seeds[0], job.request.prompt)
        if job.opts.get("return_grid", True):
            out.images.insert(0, grid)
            for name in LISTS[1:]:
                getattr(out, name).insert(0, getattr(first, name)[0])
            out.info["index_of_first_image"] = 1
