"""Our txt2img against diffusers' StableDiffusionPipeline, side by side in one process.

Same model, same sampler (Euler), same steps, same starting latents.  Prints
both times, the ratio (target: ours / diffusers <= 1.05) and peak memory.

    python bench/txt2img_vs_diffusers.py            # tiny model + full-size SD 1.5 shape at 256x256
    python bench/txt2img_vs_diffusers.py --tiny-only
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from common import peak_rss_mb


def run_pair(comps, size, steps, repeats, label):
    from diffusers import StableDiffusionPipeline

    from modules import rng
    from modules.options import Options
    from modules.engine import GenerationRequest, generate
    from modules.sd_models import CheckpointInfo, LoadedModel
    from pathlib import Path

    loaded = LoadedModel(info=CheckpointInfo(Path("/x"), "bench", "0" * 64), components=comps, vae_name="None")
    opts = Options().snapshot()
    req = GenerationRequest(prompt="a red circle on a blue background", negative_prompt="blurry", steps=steps,
                            width=size, height=size, seed=1, sampler_name="Euler", cfg_scale=7.0)
    from tests.diffusers_schedulers import diffusers_scheduler  # diffusers' Euler on A1111's sigma grid

    sched = diffusers_scheduler("Euler", comps.spec.scheduler_config)
    pipe = StableDiffusionPipeline(vae=comps.vae, text_encoder=comps.text_encoder, tokenizer=comps.tokenizer,
                                   unet=comps.unet, scheduler=sched, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    lat = rng.ImageRNG((4, size // 8, size // 8), [1]).first()

    cache: dict = {}  # the App keeps one conditioner cache across jobs; so does the bench

    def ours():
        generate(loaded, req, opts, conditioners=cache)

    def theirs():
        with torch.inference_mode():
            pipe(prompt=req.prompt, negative_prompt=req.negative_prompt, num_inference_steps=steps, guidance_scale=7.0,
                 height=size, width=size, latents=lat.clone(), output_type="pil")

    ours(); theirs()  # warm-up
    t_ours, t_theirs = [], []
    for _ in range(repeats):  # interleaved so that machine load affects both alike
        t = time.perf_counter(); ours(); t_ours.append(time.perf_counter() - t)
        t = time.perf_counter(); theirs(); t_theirs.append(time.perf_counter() - t)
    mo, mt = statistics.median(t_ours), statistics.median(t_theirs)
    print(f"{label:28s} {size:4d}px {steps:3d} steps | ours {mo:7.3f}s  diffusers {mt:7.3f}s  "
          f"ratio {mo / mt:5.3f} (target <= 1.05) | peak RSS {peak_rss_mb():.0f} MiB")
    return mo / mt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tiny-only", action="store_true")
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    torch.manual_seed(0)
    from testing.tiny_models import build_tiny_components

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device cpu, float32")
    run_pair(build_tiny_components("sd1"), 64, 20, a.repeats, "tiny SD1")
    if not a.tiny_only:
        from common import full_size_sd15_file
        from pathlib import Path
        from modules import model_formats
        f = full_size_sd15_file(Path("/tmp/sdbench/sd15-random.safetensors"))
        sd, meta = model_formats.read_state_dict(f)
        comps = model_formats.build_components(sd, model_formats.detect_architecture(sd, meta))
        del sd
        run_pair(comps, 256, 4, max(2, a.repeats // 2), "full-size SD 1.5 (random)")


if __name__ == "__main__":
    main()
