"""Command-line generation: the same request object and queue as the UI and the API.

    python -m modules.cli "a red circle on a blue background" --steps 20 --seed 1
    python -m modules.cli "a cat" --init-image in.png --denoising-strength 0.6 --outdir out/

Prints the saved file paths and the infotext of each image.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from modules import fields


# request field -> what the CLI does with its flag's value: a path to an image, not the field itself
IMAGE_FLAGS = ("init_images", "mask")


def _dest(f: fields.Field) -> str:
    """The attribute argparse keeps field `f`'s flag under (`--batch-count` -> batch_count)."""
    names = f.cli.names
    return next((n for n in names if n.startswith("--")), names[0]).lstrip("-").replace("-", "_")


def _add_flag(p: argparse.ArgumentParser, f: fields.Field) -> None:
    """Add field `f`'s flag: type, default and help from the table."""
    flag = f.cli
    kw: dict = {"default": f.cli_default, "help": flag.help or f.description}
    if f.base_type is bool:
        kw["action"] = "store_true"
    elif f.base_type in (int, float):
        kw["type"] = f.base_type
    if not flag.names[0].startswith("-"):
        kw["nargs"] = "?"
    p.add_argument(*flag.names, **kw)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m modules.cli", description=__doc__.splitlines()[0])
    for f in fields.cli_fields():
        _add_flag(p, f)
    p.add_argument("--model", default=None, help="checkpoint title, name or hash")
    p.add_argument("--outdir", default=None, help="also copy the images here")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--use-cpu", action="store_true")
    return p


def build_request(a: argparse.Namespace, native: int):
    """The request the parsed flags describe (width/height 0: the model's native resolution)."""
    from PIL import Image

    from modules.engine.request import GenerationRequest

    values = {f.name: getattr(a, _dest(f)) for f in fields.cli_fields() if f.name not in IMAGE_FLAGS}
    values["width"] = values["width"] or native
    values["height"] = values["height"] or native
    req = GenerationRequest(**values)
    init, mask = (getattr(a, _dest(fields.FIELDS[name])) for name in IMAGE_FLAGS)
    if init:
        req.mode = "img2img"
        req.init_images = [Image.open(init).convert("RGB")]
        if mask:
            req.mask = Image.open(mask).convert("L")
    return req


def main(argv: list[str] | None = None) -> int:
    from modules import cmd_args
    from modules.app import App

    a = build_parser().parse_args(argv)
    flags = ["--data-dir", a.data_dir] if a.data_dir else []
    if a.use_cpu:
        flags.append("--use-cpu")
    app = App(cmd_args.parse_args(flags))
    app.refresh_models()
    title = app.models.find(a.model).title if a.model else app.selected_checkpoint()
    if title is None:
        print("no checkpoint found in", ", ".join(map(str, app.paths.ckpt_dirs)), file=sys.stderr)
        return 2
    req = build_request(a, app.native_resolution(title))
    try:
        job = app.submit(req, checkpoint=title, source="cli")
    except ValueError as e:   # a RequestError too
        print(f"error: {e}", file=sys.stderr)
        return 2
    job.done_event.wait()
    if job.status == "failed":
        print(f"error: {job.error}", file=sys.stderr)
        return 1
    for i, path in enumerate(job.result.saved_files):
        print(path)
        print(job.result.infotexts[i])
        if a.outdir:
            out = Path(a.outdir)
            out.mkdir(parents=True, exist_ok=True)
            job.result.images[i].save(out / Path(path).name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
