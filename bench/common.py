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


def full_size_sd15_file(path: Path) -> Path:
    """A full-size SD 1.5-shaped checkpoint with random weights (fp16, LDM layout), made once."""
    import torch

    from modules import model_formats
    if path.is_file():
        return path
    spec = model_formats.spec_for_arch("sd1")
    comps = model_formats.empty_components(spec)
    g = torch.Generator().manual_seed(0)
    for m in (comps.unet, comps.vae, comps.text_encoder):
        m.to_empty(device="cpu")
        with torch.no_grad():
            for p in m.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
            for name, b in m.named_buffers():
                if "position_ids" in name:
                    b.copy_(torch.arange(b.shape[-1]).expand_as(b))
    for m in (comps.unet, comps.vae, comps.text_encoder):
        m.half()
    path.parent.mkdir(parents=True, exist_ok=True)
    model_formats.save_checkpoint(path, comps)
    return path
