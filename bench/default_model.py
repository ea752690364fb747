"""What the shipped default model (sd-shapes-64) draws, measured with the synthetic world's classifier.

Loads the checkpoint through the normal model library and generates with this program's engine
(modules.engine: the web UI's prompt syntax, samplers and img2img), 64x64, 20 steps, with the
UI's default sampler (DPM++ 2M) unless --sampler says otherwise:

- seconds per image;
- colour / shape accuracy over held-out caption/seed pairs, at CFG 7 and at CFG 1 (and
  position / size accuracy where the caption names them);
- negative prompt: red-pixel fraction of prompts asking for a red object, with and without
  the negative prompt "red";
- emphasis: red-pixel fraction with "(red:1.4)" against "(red:0.7)";
- img2img: mean absolute difference to the input at strength 0.3, and at strength 0.9
  with a prompt naming another colour and shape, how often the new ones are drawn.

    python bench/default_model.py               # n=120 (the issue's figures)
    python bench/default_model.py --n 20 --grids work/   # quicker; also writes picture grids
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from modules import synthetic_world as world  # noqa: E402

EVAL_SEED = 20240613  # held-out captions and seeds; training uses seed*1000+k streams
DEFAULT = ROOT / "models" / "Stable-diffusion" / "sd-shapes-64.safetensors"


def load(path: Path):
    """The checkpoint through the model library, as the app loads it."""
    from modules import cmd_args, devices, sd_models
    from modules.paths import Paths

    args = cmd_args.parse_args(["--ckpt-dir", str(path.parent), "--data-dir", str(ROOT / "work" / "bench-data")])
    mm = sd_models.ModelManager(Paths.from_args(args), devices.cpu_policy())
    mm.refresh()
    return mm.load(path.name)


class Generator:
    def __init__(self, loaded, sampler="DPM++ 2M", steps=20):
        from modules import engine
        from modules.options import Options

        self.loaded, self.p = loaded, engine
        self.opts = Options().snapshot()
        self.cache: dict = {}
        self.sampler, self.steps = sampler, steps
        self.seconds: list[float] = []

    def __call__(self, prompt, seed, cfg=7.0, negative="", init=None, strength=0.75) -> np.ndarray:
        req = self.p.GenerationRequest(prompt=prompt, negative_prompt=negative, steps=self.steps, cfg_scale=cfg,
                                       width=64, height=64, seed=int(seed), sampler_name=self.sampler,
                                       save_images=False)
        if init is not None:
            req.mode, req.init_images, req.denoising_strength = "img2img", [init], strength
        t = time.perf_counter()
        res = self.p.generate(self.loaded, req, self.opts, conditioners=self.cache)
        self.seconds.append(time.perf_counter() - t)
        assert not res.warnings, res.warnings
        return np.asarray(res.images[0])


def accuracy(images, scenes) -> tuple[float, float]:
    got = [world.classify(im) for im in images]
    return (sum(c == sc.colour for (c, _), sc in zip(got, scenes)) / len(scenes),
            sum(s == sc.shape for (_, s), sc in zip(got, scenes)) / len(scenes))


def placement(images, scenes) -> dict:
    """Position / size accuracy over the captions that name a position / a size."""
    got = [world.locate(im) for im in images]
    pos = [g[0] == sc.position for g, sc in zip(got, scenes) if world._position_phrase(sc.position) in sc.caption]
    size = [g[1] == sc.size for g, sc in zip(got, scenes) if f" {sc.size} " in f" {sc.caption} "]
    bg = [world.background_of(im) == sc.background for im, sc in zip(images, scenes)
          if f"{sc.background} background" in sc.caption]
    return {"position": sum(pos) / max(1, len(pos)), "n_position": len(pos),
            "background": sum(bg) / max(1, len(bg)), "n_background": len(bg),
            "size": sum(size) / max(1, len(size)), "n_size": len(size)}


def red_prompts(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        bgs = [b for b in world.BACKGROUNDS if b != "red"]
        out.append(world.make_caption(rng, world.SHAPES[int(rng.integers(3))], "red", bgs[int(rng.integers(len(bgs)))],
                                      world.POSITIONS[int(rng.integers(5))], world.SIZES[int(rng.integers(2))]))
    return out


def red(images) -> float:
    return float(np.mean([world.colour_fraction(im, "red") for im in images]))


def img2img_pairs(n: int, seed: int):
    """(input image, input scene, new scene): the new scene changes colour and shape, same background."""
    imgs, _, scenes = world.make_dataset(n, seed)
    rng = np.random.default_rng(seed + 1)
    out = []
    for im, sc in zip(imgs, scenes):
        colours = [c for c in world.COLOURS if c not in (sc.colour, sc.background)]
        colour = colours[int(rng.integers(len(colours)))]
        shapes = [s for s in world.SHAPES if s != sc.shape]
        shape = shapes[int(rng.integers(len(shapes)))]
        caption = f"a {sc.size} {colour} {shape} {world._position_phrase(sc.position)}, {sc.background} background"
        out.append((im, sc, world.Scene(shape, colour, sc.background, sc.position, sc.size, caption)))
    return out


def evaluate(gen: Generator, n: int, n_small: int, grids: Path | None = None) -> dict:
    from PIL import Image

    r: dict = {}
    _, captions, scenes = world.make_dataset(n, EVAL_SEED)
    seeds = [EVAL_SEED + i for i in range(n)]
    for cfg in (7.0, 1.0):
        gen.seconds.clear()
        imgs = [gen(c, s, cfg=cfg) for c, s in zip(captions, seeds)]
        acc_c, acc_s = accuracy(imgs, scenes)
        r[f"cfg{cfg:g}"] = {"colour": acc_c, "shape": acc_s, "seconds_per_image": statistics.median(gen.seconds),
                            **placement(imgs, scenes)}
        if grids is not None:
            save_grid(imgs[:40], grids / f"default_model_cfg{cfg:g}.png")
    prompts = red_prompts(n_small, EVAL_SEED + 1)
    rs = [EVAL_SEED + 5000 + i for i in range(n_small)]
    plain = [gen(p, s) for p, s in zip(prompts, rs)]
    negated = [gen(p, s, negative="red") for p, s in zip(prompts, rs)]
    r["negative"] = {"red_without": red(plain), "red_with_negative_red": red(negated)}
    strong = [gen(p.replace("red", "(red:1.4)", 1), s) for p, s in zip(prompts, rs)]
    weak = [gen(p.replace("red", "(red:0.7)", 1), s) for p, s in zip(prompts, rs)]
    r["emphasis"] = {"red_1.4": red(strong), "red_0.7": red(weak)}
    pairs = img2img_pairs(n_small, EVAL_SEED + 2)
    low = [gen(sc.caption, EVAL_SEED + 9000 + i, init=Image.fromarray(im), strength=0.3)
           for i, (im, sc, _) in enumerate(pairs)]
    high = [gen(new.caption, EVAL_SEED + 9000 + i, init=Image.fromarray(im), strength=0.9)
            for i, (im, _, new) in enumerate(pairs)]
    diff = lambda outs: float(np.mean([np.abs(a.astype(np.float32) - p[0]).mean() for a, p in zip(outs, pairs)]))  # noqa: E731
    r["img2img"] = {"diff_0.3": diff(low), "kept_0.3": accuracy(low, [p[1] for p in pairs]),
                    "diff_0.9": diff(high), "new_0.9": accuracy(high, [p[2] for p in pairs])}
    if grids is not None:
        save_grid(plain[:10] + negated[:10] + strong[:10] + weak[:10], grids / "default_model_prompts.png")
        save_grid([p[0] for p in pairs[:10]] + low[:10] + high[:10], grids / "default_model_img2img.png")
    return r


def save_grid(images, path: Path, cols: int = 10) -> None:
    from PIL import Image

    blank = np.zeros_like(images[0])
    rows = [np.concatenate(list(images[i:i + cols]) + [blank] * (cols - len(images[i:i + cols])), 1)
            for i in range(0, len(images), cols)]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(rows, 0)).save(path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=str(DEFAULT))
    ap.add_argument("--n", type=int, default=120, help="held-out caption/seed pairs for the accuracy figures")
    ap.add_argument("--n-small", type=int, default=20, help="pairs for the negative/emphasis/img2img figures")
    ap.add_argument("--sampler", default="DPM++ 2M", help="default: the UI's default sampler")
    ap.add_argument("--grids", default=None, help="folder for picture grids")
    ap.add_argument("--json", default=None, help="write the figures here too")
    a = ap.parse_args()
    t0 = time.perf_counter()
    loaded = load(Path(a.checkpoint))
    print(f"{loaded.info.title}: {loaded.spec.arch}, native {loaded.spec.native_resolution}px, loaded in "
          f"{time.perf_counter() - t0:.1f}s; torch threads {torch.get_num_threads()}; sampler {a.sampler}, 20 steps",
          flush=True)
    r = evaluate(Generator(loaded, a.sampler), a.n, a.n_small, Path(a.grids) if a.grids else None)
    c7, c1, ng, em, i2 = r["cfg7"], r["cfg1"], r["negative"], r["emphasis"], r["img2img"]
    rows = [
        ("seconds per image, 64x64, 20 steps, CFG 7 (median)", f"{c7['seconds_per_image']:.3f}", "< 2 s"),
        (f"colour recognised, CFG 7 (n={a.n})", f"{c7['colour']:.1%}", ">= 90%"),
        (f"shape recognised, CFG 7 (n={a.n})", f"{c7['shape']:.1%}", ">= 70%"),
        (f"colour / shape, CFG 1 (n={a.n})", f"{c1['colour']:.1%} / {c1['shape']:.1%}", "below CFG 7"),
        (f"position named in the prompt, CFG 7 (n={c7['n_position']})", f"{c7['position']:.1%}", ""),
        (f"size named in the prompt, CFG 7 (n={c7['n_size']})", f"{c7['size']:.1%}", ""),
        (f"background named in the prompt, CFG 7 (n={c7['n_background']})", f"{c7['background']:.1%}", ""),
        ("position / size / background, CFG 1",
         f"{c1['position']:.0%} / {c1['size']:.0%} / {c1['background']:.0%}", ""),
        (f"red fraction, red prompts (n={a.n_small})", f"{ng['red_without']:.3f}", ""),
        ("  ... with negative prompt 'red'", f"{ng['red_with_negative_red']:.3f}", "lower"),
        ("red fraction with (red:1.4)", f"{em['red_1.4']:.3f}", "above (red:0.7)"),
        ("red fraction with (red:0.7)", f"{em['red_0.7']:.3f}", ""),
        ("img2img 0.3: mean abs diff to the input (0-255)", f"{i2['diff_0.3']:.1f}", "small"),
        ("img2img 0.3: input colour / shape kept", f"{i2['kept_0.3'][0]:.0%} / {i2['kept_0.3'][1]:.0%}", ""),
        ("img2img 0.9: mean abs diff to the input", f"{i2['diff_0.9']:.1f}", "large"),
        ("img2img 0.9: new prompt's colour / shape drawn", f"{i2['new_0.9'][0]:.0%} / {i2['new_0.9'][1]:.0%}", ""),
    ]
    w = max(len(x[0]) for x in rows)
    print()
    for k, v, target in rows:
        print(f"  {k:<{w}}  {v:>14}   {target}")
    print(f"\n({time.perf_counter() - t0:.0f} s in all)")
    if a.json:
        Path(a.json).write_text(json.dumps(r, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
