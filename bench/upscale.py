"""Memory and time of a model upscaler on the CPU: a 4x RRDBNet of R-ESRGAN 4x+'s size (nf 64, gc 32, 23
blocks, random weights in the BasicSR layout) over a 512x512 picture, in A1111's 192-px tiles with 8 px
overlap, and whole (no tiles) for comparison. Each run is a fresh process so its peak RSS is its own.

    venv/bin/python bench/upscale.py [--size 512] [--tiles 192,0] [--threads N]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def child(size: int, tile: int, threads: int) -> None:
    sys.path.insert(0, str(ROOT))
    import numpy as np
    import torch
    from PIL import Image

    from modules import upscaler_nets, upscalers
    from testing.tiny_upscalers import rrdb_state_dict

    torch.set_num_threads(threads)
    net, _ = upscaler_nets.load(rrdb_state_dict("basicsr", nf=64, gc=32, nb=23, scale=4, seed=0))
    im = Image.fromarray((np.random.RandomState(0).rand(size, size, 3) * 255).astype(np.uint8))
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    out = upscalers.run_tiled(net, im, tile, 8)
    dt = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"tile": tile, "size": size, "out": out.size, "seconds": dt, "peak_rss_mb": peak / 1024,
                      "before_mb": base / 1024}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--tiles", default="192,0")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--child", type=int, default=None)
    a = ap.parse_args()
    if a.child is not None:
        child(a.size, a.child, a.threads)
        return
    with open("/proc/loadavg") as f:
        print(f"load average before: {f.read().split()[0]}, {a.threads} threads, {os.cpu_count()} cores")
    rows = []
    for tile in [int(t) for t in a.tiles.split(",")]:
        r = subprocess.run([sys.executable, __file__, "--size", str(a.size), "--threads", str(a.threads),
                            "--child", str(tile)], capture_output=True, text=True, check=True)
        row = json.loads(r.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"tile {tile or 'none':>4}: {row['size']}px -> {row['out'][0]}x{row['out'][1]} in {row['seconds']:.1f} s, "
              f"peak RSS {row['peak_rss_mb']:.0f} MB (model loaded: {row['before_mb']:.0f} MB)")
    if len(rows) == 2:
        print(f"tiled / whole: time {rows[0]['seconds'] / rows[1]['seconds']:.2f}, "
              f"peak RSS {rows[0]['peak_rss_mb'] / rows[1]['peak_rss_mb']:.2f}")


if __name__ == "__main__":
    main()
