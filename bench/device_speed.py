"""Speed, memory and half-precision quality of this program against plain diffusers, side by side.

GPU part (runs where CUDA is available): full-size SD 1.5-shaped model at 512x512 and
SDXL-shaped model at 1024x1024 (random weights: the same cost as real ones), batch 1,
CFG 7, Euler, 20 steps, fp16:

- it/s of the sampling loop and seconds per image, for this program and for diffusers'
  StableDiffusionPipeline / StableDiffusionXLPipeline (fp16, SDPA: diffusers' default
  attention on torch 2), and the ratio ours/diffusers in it/s (target >= 1.0);
- the same with --opt-channelslast, and with --compile (first-run cost printed);
- peak GPU memory in the normal, --medvram and --lowvram modes (diffusers' model and
  sequential CPU offload beside them);
- the cost of live previews (a thread asking for a preview as the UI does);
- PSNR of the fp16 image against the fp32 image (target >= 30 dB).

CPU part (runs everywhere): the SD 1.5-shaped model at 256x256, float32, a few steps,
ours against diffusers, and the preview cost; then the PSNR against float32 of the same
model in bfloat16 (256x256) and in float16 (128x128, 2 steps: the CPU's float16 convolutions
are slow).  The random weights are those of freshly built torch layers, so the float32 image
has real contrast (its pixel spread is printed beside the PSNR).

    python bench/device_speed.py                 # GPU part if CUDA is present, then the CPU part
    python bench/device_speed.py --cpu-only
    python bench/device_speed.py --tiny          # the whole procedure on the tiny model (checks the script)
    bench/gpu_check.sh run                       # on a GPU machine without network: tests + GPU part, logged
"""
from __future__ import annotations

import argparse
import copy
import statistics
import threading
import time
from pathlib import Path

import numpy as np
import torch

from common import random_components  # also puts the repository on sys.path

PROMPT = "a photograph of an astronaut riding a horse on the moon, highly detailed"
NEGATIVE = "blurry, low quality"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class LoopClock:
    """Times the sampling loop from the end of step 1 to the end of the last step (two syncs in all),
    so it/s leaves out text encoding, the first step's warm-up and the VAE decode."""

    def __init__(self, device, steps):
        self.device, self.steps = device, steps
        self.t1 = self.t_end = None

    def at_step(self, step: int) -> None:  # step counted from 1
        if step == 1:
            sync(self.device)
            self.t1 = time.perf_counter()
        elif step == self.steps:
            sync(self.device)
            self.t_end = time.perf_counter()

    @property
    def its(self) -> float:
        return (self.steps - 1) / (self.t_end - self.t1)


def peak_reset(device):
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_mib(device) -> float | None:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return None


def fmt_mib(v) -> str:
    return "n/a (CPU)" if v is None else f"{v:8.0f} MiB"


class Ours:
    def __init__(self, comps, policy, size, steps, preview_every: float = 0.0):
        from modules import engine, sd_models
        from modules.options import Options
        from modules.sd_models import CheckpointInfo, LoadedModel

        sd_models.place_components(comps, policy)
        self.comps, self.device = comps, policy.device
        self.loaded = LoadedModel(info=CheckpointInfo(Path("/bench"), "bench", "0" * 64), components=comps,
                                  vae_name="None")
        self.opts = Options().snapshot()
        self.cache: dict = {}
        self.size, self.steps = size, steps
        self.preview_every = preview_every
        self.engine = engine

    def run(self, seed=1):
        from modules import previews

        p = self.engine
        req = p.GenerationRequest(prompt=PROMPT, negative_prompt=NEGATIVE, steps=self.steps, width=self.size,
                                  height=self.size, seed=seed, sampler_name="Euler", cfg_scale=7.0,
                                  save_images=False)
        clock = LoopClock(self.device, self.steps)
        ctl = p.JobControl(on_progress=lambda c: clock.at_step(c.step))
        stop = threading.Event()
        previews_made = []

        def preview_loop():  # what the UI's progress poll does: a preview of the current latents
            while not stop.wait(self.preview_every):
                lat = ctl.current_latents
                if lat is not None:
                    t0 = time.perf_counter()
                    previews.approx_preview(lat, self.comps.vae, self.comps.spec.scaling_factor)
                    previews_made.append(time.perf_counter() - t0)

        th = None
        if self.preview_every > 0:
            th = threading.Thread(target=preview_loop, daemon=True)
            th.start()
        peak_reset(self.device)
        t = time.perf_counter()
        res = p.generate(self.loaded, req, self.opts, control=ctl, conditioners=self.cache)
        sync(self.device)
        seconds = time.perf_counter() - t
        stop.set()
        if th is not None:
            th.join()
        return {"seconds": seconds, "its": clock.its, "peak": peak_mib(self.device), "image": res.images[0],
                "warnings": res.warnings, "previews": previews_made, "info": res.info}


class Theirs:
    def __init__(self, comps, device, size, steps, offload: str = "none"):
        from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline

        sched = EulerDiscreteScheduler.from_config(comps.spec.scheduler_config, timestep_spacing="linspace")
        if comps.text_encoder_2 is not None:
            pipe = StableDiffusionXLPipeline(vae=comps.vae, text_encoder=comps.text_encoder,
                                             text_encoder_2=comps.text_encoder_2, tokenizer=comps.tokenizer,
                                             tokenizer_2=comps.tokenizer_2, unet=comps.unet, scheduler=sched)
        else:
            pipe = StableDiffusionPipeline(vae=comps.vae, text_encoder=comps.text_encoder, tokenizer=comps.tokenizer,
                                           unet=comps.unet, scheduler=sched, safety_checker=None,
                                           feature_extractor=None, requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
        if offload == "model":
            pipe.enable_model_cpu_offload(device=device)
        elif offload == "sequential":
            pipe.enable_sequential_cpu_offload(device=device)
        else:
            pipe.to(device)
        self.pipe, self.device, self.size, self.steps = pipe, device, size, steps

    def run(self, seed=1):
        clock = LoopClock(self.device, self.steps)

        def on_step(pipe, i, t, kw):
            clock.at_step(i + 1)
            return kw

        gen = torch.Generator(device="cpu").manual_seed(seed)
        peak_reset(self.device)
        t = time.perf_counter()
        with torch.inference_mode():
            img = self.pipe(prompt=PROMPT, negative_prompt=NEGATIVE, num_inference_steps=self.steps,
                            guidance_scale=7.0, height=self.size, width=self.size, generator=gen,
                            callback_on_step_end=on_step, output_type="pil").images[0]
        sync(self.device)
        return {"seconds": time.perf_counter() - t, "its": clock.its, "peak": peak_mib(self.device), "image": img}


def summarise(runs) -> dict:
    """Median seconds and it/s of several runs, their highest peak memory (None on the CPU), the last run."""
    return {"seconds": statistics.median(r["seconds"] for r in runs), "its": statistics.median(r["its"] for r in runs),
            "peak": max((r["peak"] or 0) for r in runs) if runs[0]["peak"] is not None else None, "last": runs[-1]}


def median_runs(runner, repeats):
    return summarise([runner.run() for _ in range(repeats)])


def psnr(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    mse = ((a - b) ** 2).mean()
    return float("inf") if mse == 0 else float(10 * np.log10(255.0 ** 2 / mse))


def line(label, r, extra=""):
    print(f"  {label:34s} {r['its']:7.2f} it/s  {r['seconds']:7.3f} s/image  peak {fmt_mib(r['peak'])}{extra}",
          flush=True)


def policy(device, dtype, **kw):
    from modules.devices import DevicePolicy
    return DevicePolicy(device=device, dtype=dtype, vae_dtype=dtype, **kw)


def bench_model(arch, size, steps, device, dtype, repeats, *, tiny=False, memory_modes=True, compile_too=False,
                channels_last_too=False, psnr_too=True):
    from modules import devices

    t = time.perf_counter()
    if tiny:
        from testing.tiny_models import build_tiny_components
        base = build_tiny_components(arch)
        for n in ("unet", "vae", "text_encoder", "text_encoder_2"):
            if getattr(base, n) is not None:
                torch.nn.Module.to(getattr(base, n), dtype=dtype)
    else:
        base = random_components(arch, device="cpu", dtype=dtype)
    n_unet = sum(p.numel() for p in base.unet.parameters()) / 1e6
    print(f"\n{'tiny ' if tiny else ''}{arch} ({n_unet:.0f}M UNet parameters), {size}x{size}, {steps} steps, CFG 7, "
          f"Euler, batch 1, {str(dtype).replace('torch.', '')}, {device} (built in {time.perf_counter() - t:.0f}s)",
          flush=True)

    # ours and diffusers on the same weights, runs interleaved so machine load affects both alike
    comps = copy.deepcopy(base)
    ours = Ours(comps, policy(device, dtype), size, steps)
    theirs = Theirs(comps, device, size, steps)
    ours.run(); theirs.run()  # warm-up (kernels, allocator, cuDNN autotuning)
    o_runs, t_runs = [], []
    for _ in range(repeats):
        o_runs.append(ours.run())
        t_runs.append(theirs.run())
    o, th = summarise(o_runs), summarise(t_runs)
    line("this program", o, f"  {'; '.join(o_runs[-1]['warnings'])}")
    line("diffusers pipeline (SDPA)", th)
    print(f"  ratio ours/diffusers: {o['its'] / th['its']:.3f} in it/s, {th['seconds'] / o['seconds']:.3f} in "
          f"images/s (target >= 1.0)", flush=True)
    del theirs

    # live previews: a thread asking for one every 0.5 s (the UI's polling period, an upper bound: the UI
    # also waits for 5 steps between previews) and every 0.1 s; target: < 2% slower than none.
    # The latent->RGB map is fitted once per VAE (timed here), then each preview is one small matrix product.
    from modules import previews
    t = time.perf_counter()
    previews.fit_linear_map(ours.comps.vae, ours.comps.spec.scaling_factor)
    print(f"  preview map fitted once per VAE in {time.perf_counter() - t:.3f}s", flush=True)
    periods = (0.0, 0.5, 0.1)
    runs = {every: [] for every in periods}
    for i in range(2 * repeats):  # the order rotates, so no kind always runs first
        for every in periods[i % 3:] + periods[:i % 3]:
            ours.preview_every = every
            runs[every].append(ours.run())
    n_s = statistics.median(r["seconds"] for r in runs[0.0])
    for every in periods[1:]:
        w_s = statistics.median(r["seconds"] for r in runs[every])
        made = [d for r in runs[every] for d in r["previews"]]
        print(f"  live previews every {every}s: {w_s:.3f} s/image vs {n_s:.3f} without ({(w_s / n_s - 1) * 100:+.1f}%, "
              f"target < +2%; {len(made) / len(runs[every]):.0f} previews a job, "
              f"{statistics.median(made or [0]) * 1000:.1f} ms each)", flush=True)
    ours.preview_every = 0.0
    fp_image = o_runs[-1]["image"]
    del ours, comps
    devices.release_memory()

    if channels_last_too and device.type == "cuda":
        comps = copy.deepcopy(base)
        r = median_runs(Ours(comps, policy(device, dtype, channels_last=True), size, steps), repeats + 1)
        line("this program --opt-channelslast", r)
        del comps
        devices.release_memory()

    if compile_too:
        comps = copy.deepcopy(base)
        runner = Ours(comps, policy(device, dtype, compile=True), size, steps)
        first = runner.run()
        print(f"  --compile: first generation {first['seconds']:.1f}s (includes the compile)", flush=True)
        line("this program --compile", median_runs(runner, repeats))
        del comps, runner
        devices.release_memory()

    if memory_modes:
        mem_steps = min(steps, 4)  # peak memory does not depend on the number of steps
        for mode, their_mode in (("medvram", "model"), ("lowvram", "sequential")):
            comps = copy.deepcopy(base)
            r = median_runs(Ours(comps, policy(device, dtype, offload=mode), size, mem_steps), 1)
            line(f"this program --{mode} ({mem_steps} steps)", r)
            del comps
            devices.release_memory()
            if device.type == "cuda":  # diffusers' offload needs an accelerator to offload to
                comps = copy.deepcopy(base)
                r = median_runs(Theirs(comps, device, size, mem_steps, offload=their_mode), 1)
                line(f"diffusers {their_mode} CPU offload", r)
                del comps
                devices.release_memory()

    if psnr_too and dtype != torch.float32:
        comps = copy.deepcopy(base)
        r32 = Ours(comps, policy(device, torch.float32), size, steps).run()
        print(f"  PSNR {str(dtype).replace('torch.', '')} vs float32 image: {psnr(fp_image, r32['image']):.1f} dB "
              f"(target >= 30)", flush=True)
        del comps
        devices.release_memory()
    del base
    devices.release_memory()


def half_psnr(arch, size, steps, device, dtype):
    """The fp16 path against float32 on the same random full-size weights: one image each, PSNR."""
    from modules import devices

    base = random_components(arch, device="cpu", dtype=torch.float32)
    t = time.perf_counter()
    r32 = Ours(copy.deepcopy(base), policy(device, torch.float32), size, steps).run()
    t32 = time.perf_counter() - t
    t = time.perf_counter()
    r16 = Ours(base, policy(device, dtype), size, steps).run()
    t16 = time.perf_counter() - t
    name = str(dtype).replace("torch.", "")
    ref = np.asarray(r32["image"], dtype=np.float64)
    print(f"\n{arch} full size, {size}x{size}, {steps} steps, {device}: PSNR {name} vs float32 image "
          f"{psnr(r16['image'], r32['image']):.1f} dB (target >= 30; the float32 image's pixel std is "
          f"{ref.std():.1f}/255, range {ref.min():.0f}..{ref.max():.0f}); {t16:.1f}s in {name}, {t32:.1f}s in float32"
          f"{'; ' + '; '.join(r16['warnings']) if r16['warnings'] else ''}", flush=True)
    del base
    devices.release_memory()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu-only", action="store_true")
    ap.add_argument("--gpu-only", action="store_true")
    ap.add_argument("--tiny", action="store_true", help="tiny models instead of full-size ones")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--cpu-steps", type=int, default=4)
    ap.add_argument("--no-sdxl", action="store_true", help="GPU part: SD 1.5 only")
    ap.add_argument("--only-sdxl", action="store_true", help="GPU part: SDXL only")
    ap.add_argument("--compile", action="store_true", help="also measure --compile (slow first run)")
    a = ap.parse_args()
    print(f"torch {torch.__version__}, CPU threads {torch.get_num_threads()}", flush=True)
    if not a.cpu_only:
        if torch.cuda.is_available():
            dev = torch.device("cuda")
            print(f"GPU: {torch.cuda.get_device_name(dev)}, "
                  f"{torch.cuda.get_device_properties(dev).total_memory / 2**30:.0f} GiB", flush=True)
            torch.backends.cudnn.benchmark = True
            if not a.only_sdxl:
                bench_model("sd1", 64 if a.tiny else 512, a.steps, dev, torch.float16, a.repeats, tiny=a.tiny,
                            compile_too=a.compile, channels_last_too=True)
            if not a.no_sdxl:
                bench_model("sdxl", 64 if a.tiny else 1024, a.steps, dev, torch.float16, a.repeats, tiny=a.tiny,
                            compile_too=a.compile, channels_last_too=True)
        else:
            print("no CUDA device: the GPU part is not measured here")
    if not a.gpu_only:
        cpu = torch.device("cpu")
        bench_model("sd1", 64 if a.tiny else 256, a.cpu_steps if not a.tiny else 20, cpu, torch.float32, a.repeats,
                    tiny=a.tiny, memory_modes=a.tiny, psnr_too=False)
        if a.tiny:  # the half-precision path through the same code, on the CPU
            bench_model("sd1", 64, 20, cpu, torch.float16, 1, tiny=True, memory_modes=False)
        else:  # the SD 1.5-shaped half-precision PSNR figures, through the same code as on a GPU; the
            # CPU's float16 convolutions are slow (about 7 minutes for one 128 px image on 2 cores)
            half_psnr("sd1", 256, a.cpu_steps, cpu, torch.bfloat16)
            half_psnr("sd1", 128, 2, cpu, torch.float16)


if __name__ == "__main__":
    main()
