"""What one ControlNet unit adds to a job on the CPU: the same txt2img job with and without a unit.

The ControlNet is made from the model's own UNet (diffusers' ``ControlNetModel.from_unet``: the encoder and
middle block, the size a real ControlNet of that model has) with random zero convolutions, written as a
diffusers single file into a temp models/ControlNet and used through the app as an API request would
(``alwayson_scripts.controlnet``, preprocessor "canny" on a 512x512 picture, Balanced, weight 1). Jobs
alternate (with, without) so machine load affects both alike; medians are compared (target: < 1.6).

    python bench/controlnet_overhead.py                     # the shipped default model, 64 px, 20 steps
    python bench/controlnet_overhead.py --sd15 --size 256 --steps 8   # an SD 1.5-shaped random model (slow)
"""
from __future__ import annotations

import argparse
import base64
import io
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from common import ROOT  # noqa: F401  (also puts the repository on sys.path)


def picture(size: int = 512) -> str:
    from PIL import Image, ImageDraw

    im = Image.new("RGB", (size, size), "white")
    d = ImageDraw.Draw(im)
    d.ellipse((size // 4, size // 4, 3 * size // 4, 3 * size // 4), outline="black", width=8)
    d.rectangle((size // 8, size // 2, size // 2, 7 * size // 8), fill="gray")
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sd15", action="store_true", help="an SD 1.5-shaped random model instead of the default one")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=6)
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    from diffusers import ControlNetModel
    from safetensors.torch import save_file

    from modules import cmd_args
    from modules.app import App
    from modules.engine import GenerationRequest

    work = Path(tempfile.mkdtemp(prefix="cn-bench-"))
    try:
        ckpts = work / "models" / "Stable-diffusion"
        ckpts.mkdir(parents=True)
        if a.sd15:
            from common import full_size_sd15_file
            full_size_sd15_file(ckpts / "sd15-random.safetensors")
        else:
            shutil.copy(ROOT / "models" / "Stable-diffusion" / "sd-shapes-64.safetensors", ckpts / "default.safetensors")
        app = App(cmd_args.parse_args(["--data-dir", str(work)]))
        app.refresh_models()
        loaded = app.load_model()
        cn = ControlNetModel.from_unet(loaded.components.unet.float())
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for m in [*cn.controlnet_down_blocks, cn.controlnet_mid_block]:
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * 0.01)
        (work / "models" / "ControlNet").mkdir(parents=True)
        save_file({k: v.contiguous() for k, v in cn.state_dict().items()},
                  str(work / "models" / "ControlNet" / "bench_canny.safetensors"))
        app.refresh_models()
        title = app.controlnets.titles()[0]
        unit = {"enabled": True, "module": "canny", "model": title, "image": picture(), "weight": 1.0}

        def job(with_cn: bool) -> float:
            req = GenerationRequest(prompt="a red circle", steps=a.steps, width=a.size, height=a.size, seed=1,
                                    sampler_name="DPM++ 2M", cfg_scale=7,
                                    alwayson_scripts={"controlnet": {"args": [unit]}} if with_cn else {})
            app.scripts.prepare(req)
            t = time.perf_counter()
            app.process(req)
            return time.perf_counter() - t

        job(True), job(False)   # warm up (loads, first-call costs)
        on, off = [], []
        for _ in range(a.repeats):
            on.append(job(True))
            off.append(job(False))
        with open("/proc/loadavg") as f:
            load = f.read().split()[0]
        m_on, m_off = statistics.median(on), statistics.median(off)
        print(f"{'SD 1.5-shaped' if a.sd15 else 'default model'}, {a.size} px, {a.steps} steps, "
              f"{torch.get_num_threads()} threads, load {load}: with ControlNet {m_on:.3f} s, without {m_off:.3f} s "
              f"(medians of {a.repeats}); ratio {m_on / m_off:.3f}")
        print("all with:", " ".join(f"{x:.3f}" for x in on))
        print("all without:", " ".join(f"{x:.3f}" for x in off))
        app.queue.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
