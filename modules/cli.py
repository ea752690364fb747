"""Command-line generation: the same request object and queue as the UI and the API.

    python -m modules.cli "a red circle on a blue background" --steps 20 --seed 1
    python -m modules.cli "a cat" --init-image in.png --denoising-strength 0.6 --outdir out/

Prints the saved file paths and the infotext of each image.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m modules.cli", description=__doc__.splitlines()[0])
    p.add_argument("prompt", nargs="?", default="")
    p.add_argument("-n", "--negative-prompt", default="")
    p.add_argument("--sampler", default="DPM++ 2M", help="A1111 sampler name, e.g. 'Euler a', 'DPM++ 2M Karras'")
    p.add_argument("--schedule-type", default="Automatic")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--cfg-scale", type=float, default=7.0)
    p.add_argument("--width", type=int, default=0, help="0 = the model's native resolution")
    p.add_argument("--height", type=int, default=0)
    p.add_argument("--seed", type=int, default=-1)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--batch-count", type=int, default=1)
    p.add_argument("--clip-skip", type=int, default=None)
    p.add_argument("--init-image", default=None, help="img2img: the input image")
    p.add_argument("--mask", default=None, help="inpainting: white = repaint")
    p.add_argument("--denoising-strength", type=float, default=0.75)
    p.add_argument("--hires", action="store_true", help="enable hires. fix")
    p.add_argument("--hr-scale", type=float, default=2.0)
    p.add_argument("--hr-upscaler", default="Latent")
    p.add_argument("--model", default=None, help="checkpoint title, name or hash")
    p.add_argument("--outdir", default=None, help="also copy the images here")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--use-cpu", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    from PIL import Image

    from modules import cmd_args, processing
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
    native = app.native_resolution(title)
    req = processing.GenerationRequest(
        prompt=a.prompt, negative_prompt=a.negative_prompt, sampler_name=a.sampler, scheduler=a.schedule_type,
        steps=a.steps, cfg_scale=a.cfg_scale, width=a.width or native, height=a.height or native, seed=a.seed,
        batch_size=a.batch_size, n_iter=a.batch_count, clip_skip=a.clip_skip, enable_hr=a.hires, hr_scale=a.hr_scale,
        hr_upscaler=a.hr_upscaler, denoising_strength=a.denoising_strength)
    if a.init_image:
        req.mode = "img2img"
        req.init_images = [Image.open(a.init_image).convert("RGB")]
        if a.mask:
            req.mask = Image.open(a.mask).convert("L")
    try:
        job = app.submit(req, checkpoint=title, source="cli")
    except (processing.RequestError, ValueError) as e:
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
