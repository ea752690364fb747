"""What one LoRA adds to a job: the same txt2img job with and without ``<lora:bench:0.8>``.

Two networks (kohya format, random weights): "LoRA" covers what kohya's LoRA
trains by default (every transformer linear and proj_in/out of the UNet, the
text encoder's attention and MLP layers), "LoCon" adds the ResNet convs and
time projections (nearly every UNet weight).  Jobs alternate (with, without) so
machine load affects both alike; the medians are compared (target: ratio < 1.05).
The first job with the LoRA also reads and hashes the file ("first use").  Merge
and restore alone are timed too, and their sum is printed as a share of a job:
the direct overhead, which stays readable when a busy machine makes whole-job
times noisy.

    python bench/lora_overhead.py              # tiny model (64px, 20 steps) + SD 1.5-sized random model
    python bench/lora_overhead.py --tiny-only
    python bench/lora_overhead.py --size 512 --steps 20 --kinds lora   # a realistic SD 1.5 job (minutes on a CPU)
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from common import peak_rss_mb  # noqa: F401  (also puts the repository on sys.path)


def bench(comps, size: int, steps: int, repeats: int, rank: int, label: str, workdir: Path,
          conv: bool = False) -> float:
    from safetensors.torch import save_file

    from modules import extra_networks, lora
    from modules.options import Options
    from modules.engine import GenerationRequest, generate
    from modules.prompt_parser import parse_extra_networks
    from modules.sd_models import CheckpointInfo, LoadedModel

    folder = workdir / f"lora-{label.split()[0]}-{'locon' if conv else 'lora'}"
    folder.mkdir(parents=True, exist_ok=True)
    sd = lora.random_lora(comps, lora.default_targets(comps, conv=conv), rank=rank, alpha=rank / 2, seed=0,
                          std=0.01)
    save_file(sd, str(folder / "bench.safetensors"))
    n_layers = sum(k.endswith(".lora_down.weight") for k in sd)
    mib = (folder / "bench.safetensors").stat().st_size / 2**20
    lib = extra_networks.Library([folder], [])
    loaded = LoadedModel(info=CheckpointInfo(Path("/x"), "bench", "0" * 64), components=comps, vae_name="None")
    opts = Options().snapshot()
    cache: dict = {}

    def job(prompt: str) -> float:
        req = GenerationRequest(prompt=prompt, negative_prompt="blurry", steps=steps, width=size, height=size, seed=1,
                                sampler_name="Euler", cfg_scale=7.0, save_images=False)
        t = time.perf_counter()
        res = generate(loaded, req, opts, conditioners=cache, networks=lib)
        dt = time.perf_counter() - t
        assert not res.warnings, res.warnings
        return dt

    plain_prompt = "a red circle on a blue background"
    lora_prompt = plain_prompt + " <lora:bench:0.8>"
    job(plain_prompt)                      # warm-up (allocator, kernels)
    cold = job(lora_prompt)                # reads, hashes and prepares the file
    with_l, without = [], []
    for _ in range(repeats):
        without.append(job(plain_prompt))
        with_l.append(job(lora_prompt))
    nets = parse_extra_networks(lora_prompt)[1]
    merge, restore = [], []
    for _ in range(3):
        t = time.perf_counter()
        active = extra_networks.activate(lib, comps, nets)
        merge.append(time.perf_counter() - t)
        t = time.perf_counter()
        active.restore()
        restore.append(time.perf_counter() - t)
    mw, mo = statistics.median(with_l), statistics.median(without)
    ratio = mw / mo
    kind = "LoCon" if conv else "LoRA"
    print(f"{label:26s} {size:4d}px {steps:3d} steps | {kind:5s} {n_layers} layers rank {rank} ({mib:.1f} MiB) | "
          f"without {mo:7.3f}s  with {mw:7.3f}s  ratio {ratio:5.3f} (target < 1.05) | first use {cold:7.3f}s | "
          f"merge {statistics.median(merge) * 1000:7.1f} ms  restore {statistics.median(restore) * 1000:6.1f} ms "
          f"(= {(statistics.median(merge) + statistics.median(restore)) / mo * 100:.1f}% of a job without)")
    return ratio


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny-only", action="store_true")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--size", type=int, default=256, help="image size for the SD 1.5-sized model")
    ap.add_argument("--steps", type=int, default=4, help="steps for the SD 1.5-sized model")
    ap.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "sdbench"))
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--kinds", default="lora,locon", help="which networks: lora, locon or both (comma-separated)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    work = Path(a.workdir)
    from testing.tiny_models import build_tiny_components

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device cpu, float32")
    convs = [k == "locon" for k in a.kinds.split(",")]
    tiny = build_tiny_components("sd1")
    for conv in convs:
        bench(tiny, 64, 20, a.repeats, 4, "tiny SD1", work, conv)
    if not a.tiny_only:
        from common import full_size_sd15_file

        from modules import model_formats
        f = full_size_sd15_file(work / "sd15-random.safetensors")
        sd, meta = model_formats.read_state_dict(f)
        comps = model_formats.build_components(sd, model_formats.detect_architecture(sd, meta))
        del sd
        for conv in convs:
            bench(comps, a.size, a.steps, max(2, a.repeats // 2), 16, "full-size SD 1.5 (random)", work, conv)


if __name__ == "__main__":
    main()
