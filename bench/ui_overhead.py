"""Cost of the web UI around a generation: the same txt2img job through the Gradio page's Generate
endpoint (gradio_client, i.e. the browser's protocol: queue, progress stream, live previews,
result images encoded and downloaded) versus the engine directly (App.queue.run_sync).

Prints both medians and their ratio; target: UI / engine < 1.10.

    python bench/ui_overhead.py [--size 256] [--steps 20] [--runs 3] [--ckpt FILE]

Without --ckpt a tiny random-weight SD1 checkpoint is used (fast; the ratio is then a harsh test,
since the fixed costs weigh more against a short job).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import free_port

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

TARGET = 1.10


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--ckpt", default=None, help="a checkpoint file to use instead of the tiny model")
    args = ap.parse_args()

    import uvicorn
    from gradio_client import Client

    import webui
    from modules import cmd_args
    from modules.app import App
    from modules.engine import GenerationRequest

    tmp = tempfile.TemporaryDirectory(prefix="sdwebui-uibench-")
    data = Path(tmp.name)
    ckdir = data / "models" / "Stable-diffusion"
    ckdir.mkdir(parents=True)
    if args.ckpt:
        os.symlink(Path(args.ckpt).resolve(), ckdir / Path(args.ckpt).name)
    else:
        from testing.tiny_models import write_tiny_checkpoint
        write_tiny_checkpoint(ckdir / "tiny.safetensors", "sd1")
    core = App(cmd_args.parse_args(["--data-dir", str(data), "--skip-install"]))
    core.refresh_models()
    title = core.selected_checkpoint()
    core.load_model(title)

    port = free_port()
    userver = uvicorn.Server(uvicorn.Config(webui.create_server(core), host="127.0.0.1", port=port,
                                            log_level="warning"))
    threading.Thread(target=userver.run, daemon=True).start()
    while not userver.started:
        time.sleep(0.05)
    client = Client(f"http://127.0.0.1:{port}/", verbose=False)
    params = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/txt2img"]["parameters"]

    prompt = "a lighthouse on a cliff at dusk, oil painting"
    job = dict(prompt=prompt, width=args.size, height=args.size, steps=args.steps, seed=1234,
               sampler_name="DPM++ 2M", scheduler="Automatic", cfg_scale=7.0)
    by_label = {"Stable Diffusion checkpoint": title, "SD VAE": "Automatic", "Prompt": prompt,
                "Negative prompt": "", "Sampling method": job["sampler_name"], "Schedule type": job["scheduler"],
                "Sampling steps": args.steps, "Width": args.size, "Height": args.size, "CFG Scale": 7.0,
                "Seed": 1234}
    ui_args = [by_label.get(p["label"], p.get("parameter_default")) for p in params]

    def direct() -> float:
        t0 = time.perf_counter()
        j = core.queue.run_sync(GenerationRequest(**job), checkpoint=title, vae="Automatic", source="bench")
        took = time.perf_counter() - t0
        assert j.status == "done", j.error
        return took

    def through_ui() -> float:
        t0 = time.perf_counter()
        out = client.predict(*ui_args, api_name="/txt2img")
        took = time.perf_counter() - t0
        gallery = out[0]
        assert gallery and len(gallery) == 1, out
        return took

    print(f"model: {title}; job: {args.size}x{args.size}, {args.steps} steps, DPM++ 2M; runs: {args.runs}")
    direct()
    through_ui()  # warm-up (conditioner cache, gradio caches)
    d_times, u_times = [], []
    for i in range(args.runs):
        d_times.append(direct())
        u_times.append(through_ui())
        print(f"run {i + 1}: engine {d_times[-1]:.3f} s, UI {u_times[-1]:.3f} s")
    d, u = statistics.median(d_times), statistics.median(u_times)
    ratio = u / d
    print(f"engine median {d:.3f} s, UI median {u:.3f} s, ratio {ratio:.3f} "
          f"(target < {TARGET:.2f}: {'OK' if ratio < TARGET else 'MISSED'})")
    userver.should_exit = True
    client.close() if hasattr(client, "close") else None
    core.queue.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
