"""Two versions of the engine side by side: the same default-model job timed in each, alternately.

Each revision is checked out into a temporary git worktree and runs the job in its own process
(so the two never share imports), A-B-B-A, several rounds; the script prints the medians, the ratio
and whether both drew the same bytes.  For refactors that must not change the picture or the speed.

    python bench/engine_versions.py b60384d HEAD           # the shipped model, 20 steps, DPM++ 2M
    python bench/engine_versions.py b60384d HEAD --rounds 4 --threads 2
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# run inside a worktree: times `repeats` jobs after a warm-up, prints JSON; either engine API
JOB = r'''
import json, sys, time
sys.path.insert(0, sys.argv[1])
import torch
torch.set_num_threads(int(sys.argv[2]))
from pathlib import Path
from modules import cmd_args, devices, sd_models
from modules.options import Options
from modules.paths import Paths
model = Path(sys.argv[1]) / "models/Stable-diffusion/sd-shapes-64.safetensors"
args = cmd_args.parse_args(["--ckpt-dir", str(model.parent), "--data-dir", sys.argv[4]])
mm = sd_models.ModelManager(Paths.from_args(args), devices.cpu_policy())
mm.refresh()
loaded = mm.load(model.name)
try:
    from modules import engine
    make, run = engine.GenerationRequest, lambda req: engine.generate(loaded, req, Options().snapshot())
except ImportError:  # before the engine was split into stages
    from modules import processing
    make, run = processing.GenerationRequest, lambda req: processing.Processor(loaded, Options().snapshot()).run(req)
req = make(prompt="a large red circle in the center, gray background", negative_prompt="blue", steps=20,
           width=64, height=64, seed=1, save_images=False)
run(req)
times = []
for _ in range(int(sys.argv[3])):
    t = time.perf_counter()
    res = run(req)
    times.append(time.perf_counter() - t)
print(json.dumps({"times": times, "bytes": res.images[0].tobytes().hex()}))
'''


def worktree(rev: str, base: Path) -> Path:
    path = base / rev.replace("/", "_")
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(path), rev], check=True)
    return path


def timed(tree: Path, threads: int, repeats: int, data: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", JOB, str(tree), str(threads), str(repeats), str(data)],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        trees = {rev: worktree(rev, base) for rev in (a.a, a.b)}
        try:
            times = {rev: [] for rev in trees}
            pictures = {}
            for r in range(a.rounds):
                order = (a.a, a.b) if r % 2 == 0 else (a.b, a.a)
                for rev in order:
                    res = timed(trees[rev], a.threads, a.repeats, base / "data")
                    times[rev] += res["times"]
                    pictures[rev] = res["bytes"]
        finally:
            for tree in trees.values():
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)
    ma, mb = statistics.median(times[a.a]), statistics.median(times[a.b])
    print(f"default model, 64x64, 20 steps, DPM++ 2M, {a.threads} torch thread(s), "
          f"{a.rounds} rounds x {a.repeats} jobs, alternating")
    print(f"{a.a:>12}: median {ma:.3f} s")
    print(f"{a.b:>12}: median {mb:.3f} s   ratio {mb / ma:.3f}   same picture: {pictures[a.a] == pictures[a.b]}")


if __name__ == "__main__":
    main()
