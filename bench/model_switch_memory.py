"""Switching checkpoints releases the previous one (issue: foundation).

Loads a full-size SD 1.5-shaped checkpoint (random weights, same size as a real
one), then switches to a tiny model, and prints resident memory at each point.
Target: after the switch, memory is within 10% of the level before the big
model was loaded (plus the tiny model's own size).

    python bench/model_switch_memory.py [--workdir /tmp/sdbench]
"""
from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from common import full_size_sd15_file, rss_mb


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", default="/tmp/sdbench")
    a = ap.parse_args()
    from modules import cmd_args, devices
    from modules.paths import Paths
    from modules.sd_models import ModelManager
    from testing.tiny_models import write_tiny_checkpoint

    work = Path(a.workdir)
    ck = work / "models" / "Stable-diffusion"
    ck.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    big = full_size_sd15_file(work / "sd15-random.safetensors")
    shutil.copy(big, ck / "sd15-random.safetensors") if not (ck / "sd15-random.safetensors").exists() else None
    write_tiny_checkpoint(ck / "tiny.safetensors", "sd1")
    print(f"files ready in {time.perf_counter() - t0:.1f}s ({big.stat().st_size / 2**30:.2f} GiB checkpoint)")
    mm = ModelManager(Paths.from_args(cmd_args.parse_args(["--data-dir", str(work)])), devices.cpu_policy())
    mm.refresh()
    devices.release_memory()
    base = rss_mb()
    mm.load("tiny")
    devices.release_memory()
    tiny_cost = rss_mb() - base
    t = time.perf_counter()
    mm.load("sd15-random")
    loaded = rss_mb()
    print(f"load full-size SD 1.5: {time.perf_counter() - t:.1f}s")
    t = time.perf_counter()
    mm.load("tiny")
    devices.release_memory()
    after = rss_mb()
    print(f"switch back to tiny: {time.perf_counter() - t:.1f}s")
    print(f"{'point':32s} {'RSS MiB':>10s}")
    print(f"{'before (tiny loaded)':32s} {base + tiny_cost:10.0f}")
    print(f"{'full-size SD 1.5 loaded':32s} {loaded:10.0f}")
    print(f"{'after switching to tiny':32s} {after:10.0f}")
    ratio = after / (base + tiny_cost)
    print(f"after / before = {ratio:.3f}  (target <= 1.10): {'OK' if ratio <= 1.10 else 'MISSED'}")


if __name__ == "__main__":
    main()
