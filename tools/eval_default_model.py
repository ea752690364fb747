"""Evaluate the shipped default model (sd-shapes-64) with the synthetic-world classifier.

Loads the single-file checkpoint through modules.model_formats (read_state_dict, detect_architecture,
build_components), samples with diffusers' StableDiffusionPipeline at 64x64, and measures:
  * seconds per image;
  * colour / shape accuracy over held-out caption+seed pairs, at CFG 7 and at CFG 1;
  * negative prompt "red": mean red-pixel fraction for prompts that ask for a red object, with and
    without the negative prompt;
  * img2img: mean absolute pixel difference to the input at strength 0.3, and whether a strength 0.9
    pass follows a different prompt.
Prompt emphasis such as "(red:1.4)" is not measured here: plain diffusers pipelines do not parse it,
the web UI's conditioning code does.

Usage: python tools/eval_default_model.py [--n 120] [--sampler euler|ddim] [--out work/eval.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from modules import synthetic_world as world  # noqa: E402

# The SD 1.x noise schedule the model was trained with (same values as tools/train_default_model.py).
SD1_SCHEDULER_CONFIG = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "timestep_spacing": "leading",
}

EVAL_SEED = 20240613  # held-out captions and sampling seeds; the training script uses seed*1000+k


def load_components(path: str):
    """(vae, text_encoder, tokenizer, unet, spec) from a single-file checkpoint, in float32."""
    from modules import model_formats as mf

    sd, metadata = mf.read_state_dict(path)
    spec = mf.detect_architecture(sd, metadata)
    comps = mf.build_components(sd, spec, dtype=torch.float32)
    return comps.vae.eval(), comps.text_encoder.eval(), comps.tokenizer, comps.unet.eval(), spec


def make_scheduler(name: str, config: dict | None = None):
    """Euler or DDIM from the checkpoint's scheduler config (SD 1.x values if none given)."""
    from diffusers import DDIMScheduler, EulerDiscreteScheduler

    cls = {"euler": EulerDiscreteScheduler, "ddim": DDIMScheduler}[name]
    return cls.from_config({**SD1_SCHEDULER_CONFIG, **(config or {})})


def generate(pipe, prompts, seeds, steps, cfg, negative=None, batch=20):
    images = []
    for i in range(0, len(prompts), batch):
        gens = [torch.Generator().manual_seed(int(s)) for s in seeds[i : i + batch]]
        out = pipe(
            prompt=list(prompts[i : i + batch]),
            negative_prompt=None if negative is None else [negative] * len(prompts[i : i + batch]),
            height=64, width=64, num_inference_steps=steps, guidance_scale=cfg,
            generator=gens, output_type="np",
        ).images
        images.extend((np.clip(out, 0, 1) * 255).round().astype(np.uint8))
    return images


def accuracy(images, scenes) -> tuple[float, float]:
    ok_c = ok_s = 0
    for im, sc in zip(images, scenes):
        c, s = world.classify(im)
        ok_c += c == sc.colour
        ok_s += s == sc.shape
    return ok_c / len(scenes), ok_s / len(scenes)


def save_grid(images, path: Path, cols: int = 10) -> None:
    from PIL import Image

    rows = [np.concatenate(list(images[i : i + cols]) + [np.zeros_like(images[0])] * (cols - len(images[i : i + cols])), 1)
            for i in range(0, len(images), cols)]
    Image.fromarray(np.concatenate(rows, 0)).save(path)


def main(argv=None) -> int:
    from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionPipeline

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=str(ROOT / "models" / "Stable-diffusion" / "sd-shapes-64.safetensors"))
    p.add_argument("--n", type=int, default=120, help="held-out caption/seed pairs")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--sampler", choices=("euler", "ddim"), default="euler")
    p.add_argument("--n-negative", type=int, default=20)
    p.add_argument("--n-img2img", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(ROOT / "work" / "eval.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    out_dir = Path(args.out).parent
    out_dir.mkdir(parents=True, exist_ok=True)

    t0 = time.time()
    vae, te, tok, unet, spec = load_components(args.checkpoint)
    load_s = time.time() - t0
    common = dict(vae=vae, text_encoder=te, tokenizer=tok, unet=unet, scheduler=make_scheduler(args.sampler, spec.scheduler_config),
                  safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe = StableDiffusionPipeline(**common)
    pipe.set_progress_bar_config(disable=True)
    results: dict = {"checkpoint": args.checkpoint, "arch": spec.arch, "prediction_type": spec.prediction_type,
                     "scaling_factor": spec.scaling_factor, "native_resolution": spec.native_resolution,
                     "sampler": args.sampler, "steps": args.steps, "load_seconds": load_s}

    # Held-out prompts: captions from a seed the training never used, one sampling seed each.
    _, captions, scenes = world.make_dataset(args.n, EVAL_SEED)
    seeds = [EVAL_SEED + i for i in range(args.n)]
    for gs in (7.0, 1.0):
        t = time.time()
        imgs = generate(pipe, captions, seeds, args.steps, gs)
        per_image = (time.time() - t) / len(imgs)
        acc_c, acc_s = accuracy(imgs, scenes)
        key = f"cfg{gs:g}"
        results[key] = {"colour_acc": acc_c, "shape_acc": acc_s, "seconds_per_image": per_image, "n": len(imgs)}
        save_grid(imgs[:40], out_dir / f"eval_{key}.png")
        print(f"{key}: colour {acc_c:.1%} shape {acc_s:.1%} ({per_image:.3f} s/image)", flush=True)

    # Negative prompt: prompts that ask for a red object, with and without negative "red".
    rng = np.random.default_rng(EVAL_SEED + 1)
    red_prompts = []
    for _ in range(args.n_negative):
        shape = world.SHAPES[int(rng.integers(3))]
        bg = [b for b in world.BACKGROUNDS if b != "red"][int(rng.integers(len(world.BACKGROUNDS)))]
        red_prompts.append(world.make_caption(rng, shape, "red", bg, world.POSITIONS[int(rng.integers(5))],
                                              world.SIZES[int(rng.integers(2))]))
    red_seeds = [EVAL_SEED + 5000 + i for i in range(args.n_negative)]
    plain = generate(pipe, red_prompts, red_seeds, args.steps, 7.0)
    negated = generate(pipe, red_prompts, red_seeds, args.steps, 7.0, negative="red")
    red_plain = float(np.mean([world.colour_fraction(im, "red") for im in plain]))
    red_neg = float(np.mean([world.colour_fraction(im, "red") for im in negated]))
    results["negative_red"] = {"red_fraction_without": red_plain, "red_fraction_with_negative": red_neg,
                               "n": args.n_negative}
    save_grid(plain[:10] + negated[:10], out_dir / "eval_negative.png")
    print(f"negative 'red': red fraction {red_plain:.3f} -> {red_neg:.3f}", flush=True)
    results["emphasis"] = "skipped: (red:1.4) needs the web UI's prompt-weighting conditioning, not plain diffusers"

    # img2img
    i2i = StableDiffusionImg2ImgPipeline(**{**common, "scheduler": make_scheduler(args.sampler, spec.scheduler_config)})
    i2i.set_progress_bar_config(disable=True)
    init_imgs, init_caps, init_scenes = world.make_dataset(args.n_img2img, EVAL_SEED + 2)
    rng = np.random.default_rng(EVAL_SEED + 3)
    new_scenes = []
    for sc in init_scenes:  # a different colour and a different shape, on the same background
        colour = [c for c in world.COLOURS if c not in (sc.colour, sc.background)][int(rng.integers(6))]
        shape = [s for s in world.SHAPES if s != sc.shape][int(rng.integers(2))]
        new_scenes.append(world.Scene(shape, colour, sc.background, sc.position, sc.size,
                                      f"a {sc.size} {colour} {shape} {world._position_phrase(sc.position)}, "
                                      f"{sc.background} background"))
    from PIL import Image

    def run_i2i(prompts, strength):
        outs = []
        for k in range(0, len(prompts), 10):
            gens = [torch.Generator().manual_seed(EVAL_SEED + 9000 + k + j) for j in range(len(prompts[k : k + 10]))]
            res = i2i(prompt=list(prompts[k : k + 10]), image=[Image.fromarray(a) for a in init_imgs[k : k + 10]],
                      strength=strength, num_inference_steps=args.steps, guidance_scale=7.0, generator=gens,
                      output_type="np").images
            outs.extend((np.clip(res, 0, 1) * 255).round().astype(np.uint8))
        return outs

    low = run_i2i(init_caps, 0.3)
    high = run_i2i([s.caption for s in new_scenes], 0.9)
    diff = lambda outs: float(np.mean([np.abs(a.astype(np.float32) - b).mean() for a, b in zip(outs, init_imgs)]))  # noqa: E731
    hc, hs = accuracy(high, new_scenes)
    lc, ls = accuracy(low, init_scenes)
    results["img2img"] = {"strength0.3_mean_abs_diff": diff(low), "strength0.3_keeps_colour": lc,
                          "strength0.3_keeps_shape": ls, "strength0.9_mean_abs_diff": diff(high),
                          "strength0.9_new_colour_acc": hc, "strength0.9_new_shape_acc": hs, "n": args.n_img2img}
    save_grid(list(init_imgs[:10]) + low[:10] + high[:10], out_dir / "eval_img2img.png")
    results["total_seconds"] = time.time() - t0

    rows = [
        ("seconds per image (CFG 7, 20 steps, 64x64)", f"{results['cfg7']['seconds_per_image']:.3f}"),
        (f"colour accuracy, CFG 7 (n={args.n})", f"{results['cfg7']['colour_acc']:.1%}"),
        (f"shape accuracy, CFG 7 (n={args.n})", f"{results['cfg7']['shape_acc']:.1%}"),
        (f"colour accuracy, CFG 1 (n={args.n})", f"{results['cfg1']['colour_acc']:.1%}"),
        (f"shape accuracy, CFG 1 (n={args.n})", f"{results['cfg1']['shape_acc']:.1%}"),
        ("red fraction, red prompts, no negative", f"{red_plain:.3f}"),
        ("red fraction, red prompts, negative 'red'", f"{red_neg:.3f}"),
        ("img2img 0.3: mean abs diff to input (0-255)", f"{results['img2img']['strength0.3_mean_abs_diff']:.1f}"),
        ("img2img 0.3: input colour / shape kept", f"{lc:.0%} / {ls:.0%}"),
        ("img2img 0.9: mean abs diff to input (0-255)", f"{results['img2img']['strength0.9_mean_abs_diff']:.1f}"),
        ("img2img 0.9: new prompt colour / shape", f"{hc:.0%} / {hs:.0%}"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"\nsd-shapes-64, sampler {args.sampler}, {args.steps} steps")
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")
    Path(args.out).write_text(json.dumps(results, indent=1))
    print(f"wrote {args.out} ({results['total_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
