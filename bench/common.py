"""Helpers shared by the benchmark scripts (not a test module)."""
from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def rss_mb() -> float:
    """Resident memory of this process in MiB (Linux)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_http(url: str, timeout: float, proc=None) -> float | None:
    """Seconds until `url` answers 200, or None on timeout / process exit."""
    import urllib.request
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if proc is not None and proc.poll() is not None:
            return None
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return time.perf_counter() - t0
        except OSError:
            pass
        time.sleep(0.1)
    return None


def random_components(arch: str, device="cpu", dtype=None, seed: int = 0):
    """Full-size components of `arch` ("sd1", "sdxl", ...) with random weights: the same cost as real
    weights, no download.  With tokenizers, ready for the engine or diffusers.

    The weights are what a freshly built torch module holds (each layer's own `reset_parameters`:
    fan-in scaled linear/conv weights, norms at weight 1 / bias 0), drawn under `seed`.  That keeps
    activations at a realistic scale through the depth of the network, so the decoded image has real
    contrast (a precision comparison on it means something) and no layer's output decays into
    denormal floats (which would make the CPU timings meaningless)."""
    import torch

    from modules import model_formats
    spec = model_formats.spec_for_arch(arch)
    comps = model_formats.empty_components(spec, with_tokenizers=True)
    devices_rng = [torch.device(device)] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices_rng):
        torch.manual_seed(seed)
        for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
            m = getattr(comps, name)
            if m is None:
                continue
            m.to_empty(device=device)
            with torch.no_grad():
                for mod in m.modules():
                    reset = getattr(mod, "reset_parameters", None)
                    if callable(reset) and any(True for _ in mod.parameters(recurse=False)):
                        reset()
                for pname, prm in m.named_parameters():  # parameters no layer resets (class/position embeddings)
                    if not _reset_by_a_layer(m, pname):
                        prm.copy_(torch.randn(prm.shape, device=device) * 0.02)
                for bname, b in m.named_buffers():
                    if "position_ids" in bname:
                        b.copy_(torch.arange(b.shape[-1], device=device).expand_as(b))
            if dtype is not None:
                torch.nn.Module.to(m, dtype=dtype)
            m.eval().requires_grad_(False)
    return comps


def _reset_by_a_layer(model, param_name: str) -> bool:
    owner = model.get_submodule(param_name.rpartition(".")[0]) if "." in param_name else model
    return callable(getattr(owner, "reset_parameters", None))


def full_size_sd15_file(path: Path) -> Path:
    """A full-size SD 1.5-shaped checkpoint with random weights (fp16, LDM layout), made once."""
    import torch

    from modules import model_formats
    if path.is_file():
        return path
    comps = random_components("sd1", dtype=torch.float16)
    path.parent.mkdir(parents=True, exist_ok=True)
    model_formats.save_checkpoint(path, comps)
    return path
