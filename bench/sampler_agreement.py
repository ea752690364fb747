"""Sampler x schedule type -> PSNR of our picture against the test-side reference of A1111's samplers.

    venv/bin/python bench/sampler_agreement.py [--steps 20] [--nan-sweep 150]

Runs the shipped default model (64x64, CFG 7, seed 1234) through the engine and through the
independent reference in tests/ (k-diffusion's and A1111's published algorithms), converts both
to 8 bits as A1111 does and prints a markdown table of PSNR in dB ("inf" = the same bytes).
`--nan-sweep N` also runs every sampler with its automatic schedule on the default model at every
step count from 1 to 40 and every tenth one up to N, and prints any count whose latents are not
finite (tests/test_samplers.py runs every count from 1 to 150 on a stand-in model).
"""
from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import common  # noqa: F401  (puts the repository on sys.path)
import torch

from modules import engine, samplers
from modules.options import Options
from tests import test_sampler_reference as T


def load():
    from modules import cmd_args, devices, sd_models
    from modules.paths import Paths

    args = cmd_args.parse_args(["--data-dir", tempfile.mkdtemp(), "--ckpt-dir", str(T.MODEL.parent),
                                "--use-cpu", "all"])
    mm = sd_models.ModelManager(Paths.from_args(args), devices.cpu_policy())
    mm.refresh()
    return mm.load("sd-shapes-64")


def table(loaded, steps: int) -> None:
    ref = T.Reference(loaded)
    rows: dict[str, dict[str, float]] = {}
    worst = math.inf
    for sampler, schedule in T.all_combinations():
        value = T.psnr(T.engine_picture(loaded, sampler, schedule, steps), ref.picture(sampler, schedule, steps))
        rows.setdefault(sampler, {})[schedule] = value
        worst = min(worst, value)
    print(f"| sampler | {' | '.join(T.SCHEDULES)} |")
    print("|---|" + "---|" * len(T.SCHEDULES))
    for sampler, by_sched in rows.items():
        cells = [("inf" if math.isinf(v) else f"{v:.1f}") if (v := by_sched.get(s)) is not None else "–"
                 for s in T.SCHEDULES]
        print(f"| {sampler} | {' | '.join(cells)} |")
    print(f"\nworst: {worst:.1f} dB over {sum(len(r) for r in rows.values())} combinations at {steps} steps")


def nan_sweep(loaded, top: int) -> None:
    bad = []
    t0 = time.perf_counter()
    counts = sorted(set(range(1, min(top, 40) + 1)) | set(range(50, top + 1, 10)))
    for info in samplers.SAMPLERS:
        if not info.available:
            continue
        for steps in counts:
            req = engine.GenerationRequest(prompt=T.PROMPT, negative_prompt=T.NEGATIVE, steps=steps,
                                           cfg_scale=T.CFG, width=64, height=64, seed=T.SEED,
                                           sampler_name=info.name, save_images=False)
            try:
                engine.generate(loaded, req, Options().snapshot())
            except engine.NansError as e:
                bad.append((info.name, steps, str(e)))
        print(f"{info.name}: {len(counts)} step counts from 1 to {top} done ({time.perf_counter() - t0:.0f} s)",
              flush=True)
    print(f"non-finite results: {len(bad)}")
    for row in bad:
        print("  ", row)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--nan-sweep", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    loaded = load()
    with torch.inference_mode():
        if args.steps:
            table(loaded, args.steps)
        if args.nan_sweep:
            nan_sweep(loaded, args.nan_sweep)


if __name__ == "__main__":
    main()
