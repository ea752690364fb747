"""A1111's "Prompts from file or textbox": one job per line of the text.

A plain line is the prompt; a line starting with ``--`` is A1111's command-line style options
(``--prompt "a cat" --steps 20 --seed 5``, the names of A1111's ``prompt_tags``), each setting one
field of the line's job.  A line that does not parse fails the job, naming the line and the option.
"""
from __future__ import annotations

import dataclasses
import shlex
from typing import Any, Callable

from modules import rng, samplers
from modules.engine import GenerationResult, RequestError, validate
from modules.scripts import Arg, Script, finish_result

LISTS = ("images", "infotexts", "seeds", "subseeds", "prompts", "negative_prompts")


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a whole number") from None


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None


def _bool(text: str) -> bool:
    if text.lower() not in ("true", "false"):
        raise ValueError(f"{text!r} is not true or false")
    return text.lower() == "true"


def _sampler(text: str) -> str:
    samplers.resolve_sampler(text)   # ValueError naming the samplers
    return text


def _sampler_index(text: str) -> str:
    names = samplers.sampler_names(include_unavailable=True)
    i = _int(text)
    if not 0 <= i < len(names):
        raise ValueError(f"index {i} is out of range (0..{len(names) - 1})")
    return names[i]


def _styles(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


# A1111's prompt_tags: option -> (how its value is read, what it sets: a request field, or
# "checkpoint", "override:<setting>", "save_samples", "ignore", "restore_faces")
OPTIONS: dict[str, tuple[Callable[[str], Any], str]] = {
    "sd_model": (str, "checkpoint"),
    "outpath_samples": (str, "override:outdir_samples"),
    "outpath_grids": (str, "override:grids"),
    "prompt_for_display": (str, "ignore"),
    "prompt": (str, "prompt"),
    "negative_prompt": (str, "negative_prompt"),
    "styles": (_styles, "styles"),
    "seed": (_int, "seed"),
    "subseed_strength": (_float, "subseed_strength"),
    "subseed": (_int, "subseed"),
    "seed_resize_from_h": (_int, "seed_resize_from_h"),
    "seed_resize_from_w": (_int, "seed_resize_from_w"),
    "sampler_index": (_sampler_index, "sampler_name"),
    "sampler_name": (_sampler, "sampler_name"),
    "batch_size": (_int, "batch_size"),
    "n_iter": (_int, "n_iter"),
    "steps": (_int, "steps"),
    "cfg_scale": (_float, "cfg_scale"),
    "width": (_int, "width"),
    "height": (_int, "height"),
    "restore_faces": (_bool, "restore_faces"),
    "tiling": (_bool, "tiling"),
    "do_not_save_samples": (_bool, "save_samples"),
    "do_not_save_grid": (_bool, "do_not_save_grid"),
}


def parse_line(line: str) -> dict[str, Any]:
    """The options of a ``--`` line by name, values read (ValueError naming the option).  As A1111's
    shlex parsing: ``--prompt`` and ``--negative_prompt`` take every word up to the next ``--option``."""
    try:
        words = shlex.split(line)
    except ValueError as e:
        raise ValueError(f"cannot split the line into words: {e}") from None
    out: dict[str, Any] = {}
    pos = 0
    while pos < len(words):
        word = words[pos]
        if not word.startswith("--"):
            raise ValueError(f"expected an option (--name), got {word!r}")
        name = word[2:]
        if name not in OPTIONS:
            raise ValueError(f"unknown option {word}; the options are {', '.join('--' + k for k in OPTIONS)}")
        if pos + 1 >= len(words):
            raise ValueError(f"{word} needs a value")
        if name in ("prompt", "negative_prompt"):
            end = pos + 1
            while end + 1 < len(words) and not words[end + 1].startswith("--"):
                end += 1
            out[name] = " ".join(words[pos + 1:end + 1])
            pos = end + 1
            continue
        try:
            out[name] = OPTIONS[name][0](words[pos + 1])
        except ValueError as e:
            raise ValueError(f"{word}: {e}") from None
        pos += 2
    return out


def parse_text(text: str) -> list[tuple[int, dict[str, Any]]]:
    """(line number, options) of every non-empty line; a plain line is ``{"prompt": line}``."""
    out = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        if not line.startswith("--"):
            out.append((n, {"prompt": line}))
            continue
        try:
            out.append((n, parse_line(line)))
        except ValueError as e:
            raise RequestError("prompt_txt", f"line {n}: {e}") from None
    return out


def _join(line_text: str, base: str, position: str) -> str:
    """A line's prompt with the request's, the line's at the start or the end (A1111: with a space)."""
    if not line_text or not base:
        return line_text or base
    return f"{line_text} {base}" if position == "start" else f"{base} {line_text}"


MAX_FILE_BYTES = 4 * 1024 * 1024


def read_prompt_file(data: bytes) -> str:
    """The text of an uploaded prompt file, a line per job (lines stripped, as A1111 does); ValueError for
    a file that is not UTF-8 text."""
    if len(data) > MAX_FILE_BYTES:
        raise ValueError(f"Upload prompt inputs: the file has {len(data)} bytes; a prompt list has at most "
                         f"{MAX_FILE_BYTES} (4 MiB)")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(f"Upload prompt inputs: the file is not UTF-8 text (byte {e.start}: "
                         f"{data[e.start:e.start + 1]!r})") from None
    if "\x00" in text:
        raise ValueError("Upload prompt inputs: the file is not text (it holds NUL bytes)")
    return "\n".join(line.strip() for line in text.replace("\r\n", "\n").split("\n"))


class PromptsFromFile(Script):
    title = "Prompts from file or textbox"
    show = "both"

    def args(self, is_img2img):
        return [
            Arg("checkbox_iterate", "Iterate seed every line", "checkbox", False),
            Arg("checkbox_iterate_batch", "Use same random seed for all lines", "checkbox", False),
            Arg("prompt_position", "Insert prompts at the", "radio", "start", choices=("start", "end")),
            Arg("prompt_txt", "List of prompt inputs", "textarea", "",
                info="One job per line: a prompt, or options such as --prompt \"a cat\" --steps 20 --seed 5"),
        ]

    def ui_extra(self, tab, comps, is_img2img):
        """A1111's upload: a text file's lines go into the list (the file itself is not an argument); a file
        that is not text is refused in a message below it."""
        import gradio as gr

        from modules.ui.scripts_ui import elem_id

        return {"file": gr.File(label="Upload prompt inputs", type="binary", elem_id=elem_id(tab, self, "file")),
                "file_error": gr.HTML("", visible=False, elem_id=elem_id(tab, self, "file_error"))}

    def ui_wire(self, tab, comps, is_img2img):
        import html

        import gradio as gr

        def load(data):
            if data is None:
                return gr.update(), gr.update(), gr.update()
            try:
                text = read_prompt_file(data)
            except ValueError as e:   # the list keeps what it had
                return None, gr.update(), gr.update(visible=True, value=f'<div class="sdw-error">{html.escape(str(e))}</div>')
            return None, text, gr.update(visible=False, value="")

        if "file" in comps and "file_error" in comps:
            comps["file"].upload(load, inputs=[comps["file"]], outputs=[comps["file"], comps["prompt_txt"],
                                                                        comps["file_error"]],
                                 queue=False, show_progress="hidden")

    def line_job(self, job, options: dict, seed: int, position: str):
        """(request, checkpoint) of one line: the request with the line's options over it."""
        req = job.request
        changes: dict[str, Any] = {"seed": seed, "do_not_save_grid": True}
        override = dict(req.override_settings or {})
        checkpoint = None
        for name, value in options.items():
            target = OPTIONS[name][1]
            if target == "checkpoint":
                try:
                    checkpoint = job.find_checkpoint(value)
                except ValueError as e:
                    raise ValueError(f"--sd_model: {e}") from None
            elif target == "override:outdir_samples":
                override["outdir_samples"] = value
            elif target == "override:grids":
                override[f"outdir_{req.mode}_grids"] = value
            elif target == "save_samples":
                changes["save_images"] = req.save_images and not value
            elif target == "restore_faces":
                if value:
                    job.warn("--restore_faces: face restoration is not available here; ignored")
            elif target != "ignore":
                changes[target] = value
        changes["prompt"] = _join(options.get("prompt", ""), req.prompt, position)
        changes["negative_prompt"] = _join(options.get("negative_prompt", ""), req.negative_prompt, position)
        return dataclasses.replace(req, **changes, override_settings=override), checkpoint

    def run(self, job, a):
        req = job.request
        lines = parse_text(a.prompt_txt)
        seed = req.seed
        if (a.checkbox_iterate or a.checkbox_iterate_batch) and seed == -1:
            seed = rng.fix_seed(-1)
        jobs = []
        for n, options in lines:   # every line checked before the first picture
            try:
                r, ckpt = self.line_job(job, options, seed, a.prompt_position)
                validate(r)
            except RequestError as e:   # a field out of bounds: named by the line's option that set it
                opt = next((k for k in options if OPTIONS[k][1] == e.field), e.field)
                raise RequestError("prompt_txt", f"line {n}: --{opt}: {str(e).split(': ', 1)[-1]}") from None
            except ValueError as e:
                raise RequestError("prompt_txt", f"line {n}: {e}") from None
            jobs.append((r, ckpt))
            if a.checkbox_iterate:   # A1111 steps by the request's batch size and count, not the line's
                seed += req.batch_size * req.n_iter
        job.set_total(len(jobs))
        out = GenerationResult()
        for r, ckpt in jobs:
            if job.interrupted:
                break
            res = job.process(r, checkpoint=ckpt)
            if res.grid is not None and not r.do_not_save_grid and res.grid_first:  # a line's own grid
                for name in LISTS:
                    getattr(out, name).append(getattr(res, name)[0] if name != "images" else res.grid)
            for name in LISTS:
                getattr(out, name).extend(getattr(res, name))
            out.info = out.info or dict(res.info, prompt=req.prompt, negative_prompt=req.negative_prompt)
        return finish_result(job, out)
