"""A1111's "Prompt matrix": the ``|`` parts of the prompt (or the negative prompt) after the first, left
out or put in in every way: 2^(n-1) pictures, in a grid labelled with the parts."""
from __future__ import annotations

import dataclasses

from modules import images, rng
from modules.engine import GenerationResult
from modules.scripts import Arg, Script, finish_result

LISTS = ("images", "infotexts", "seeds", "subseeds", "prompts", "negative_prompts")


def matrix_prompts(text: str, put_at_start: bool, delimiter: str) -> tuple[list[str], list[str]]:
    """(the parts, every combination's prompt): combination k has the parts whose bit is set in k, after
    (or, put_at_start, before) the first part, which is always there (A1111's order and stripping)."""
    parts = text.split("|")
    prompts = []
    for k in range(2 ** (len(parts) - 1)):
        picked = [t.strip().strip(",") for i, t in enumerate(parts[1:]) if k & (1 << i)]
        prompts.append(delimiter.join(picked + [parts[0]] if put_at_start else [parts[0]] + picked))
    return parts, prompts


def add(out: GenerationResult, r: GenerationResult) -> None:
    for name in LISTS:
        getattr(out, name).extend(getattr(r, name))


class PromptMatrix(Script):
    title = "Prompt matrix"
    show = "both"

    def args(self, is_img2img):
        return [
            Arg("put_at_start", "Put variable parts at start of prompt", "checkbox", False),
            Arg("different_seeds", "Use different seed for each picture", "checkbox", False),
            Arg("prompt_type", "Select prompt", "radio", "positive", choices=("positive", "negative")),
            Arg("variations_delimiter", "Select joining char", "radio", "comma", choices=("comma", "space")),
            Arg("margin_size", "Grid margins (px)", "slider", 0, 0, 500, 2, whole=True),
        ]

    def run(self, job, a):
        req = job.request
        seed, subseed = rng.fix_seed(req.seed), rng.fix_seed(req.subseed)
        field = "negative_prompt" if a.prompt_type == "negative" else "prompt"
        source = getattr(req, field)
        parts, prompts = matrix_prompts(source, a.put_at_start, ", " if a.variations_delimiter == "comma" else " ")
        job.set_total(len(prompts))
        out = GenerationResult()
        first = None
        # A1111 runs the prompts as one job, batch_size at a time: image i has the seed (seed + i with
        # different seeds) and the variation seed subseed + i; one job per prompt draws the same pictures
        for i, text in enumerate(prompts):
            if job.interrupted:
                break
            r = job.process(dataclasses.replace(
                req, **{field: text}, seed=seed + (i if a.different_seeds else 0), subseed=subseed + i,
                n_iter=1, batch_size=1, do_not_save_grid=True))
            first = first or r
            add(out, r)
        if first is None:
            return finish_result(job, out)
        out.info = dict(first.info, prompt=req.prompt)   # A1111 shows the prompt as written, with its |
        if len(out.images) == len(prompts):
            self._grid(job, out, parts, a.margin_size, source)
        return finish_result(job, out)

    def _grid(self, job, out: GenerationResult, parts: list[str], margin: int, source: str) -> None:
        """The grid first in the results (the first picture's infotext, as A1111), saved as a grid."""
        from modules import grid_labels

        pics = list(out.images)
        grid = images.image_grid(pics, rows=1 << ((len(parts) - 1) // 2))
        grid = grid_labels.draw_prompt_matrix(grid, pics[0].width, pics[0].height, parts, margin)
        out.images.insert(0, grid)
        for name in LISTS[1:]:
            getattr(out, name).insert(0, getattr(out, name)[0])
        out.info["index_of_first_image"] = 1
        job.save_grid(grid, None, out.seeds[0], source, basename="prompt_matrix")   # A1111 saves it without parameters
