"""Start-up time of the web UI: `python launch.py --skip-install --port <free>` until the page answers.

Measures from starting the process to GET / returning 200 (the Gradio page), and prints the
"[startup]" phases the server reports.  Target: < 10 s.

    python bench/startup.py [--runs 3] [--data-dir DIR] [--tiny]

--tiny starts on a temporary data folder holding one tiny checkpoint (the default is the
repository's own data folder, i.e. what a user's `python launch.py` does).
"""
from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, free_port, wait_http

TARGET_S = 10.0


def one_start(extra: list[str], timeout: float) -> tuple[float | None, list[str]]:
    port = free_port()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("COMMANDLINE_ARGS", None)
    cmd = [sys.executable, str(ROOT / "launch.py"), "--skip-install", "--port", str(port), *extra]
    with tempfile.TemporaryFile("w+") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            took = wait_http(f"http://127.0.0.1:{port}/", timeout, proc)
            took = None if took is None else time.perf_counter() - t0
        finally:
            os.killpg(proc.pid, signal.SIGTERM)   # the process group this script started
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.seek(0)
        lines = [ln.rstrip() for ln in log if "[startup]" in ln or "[launch]" in ln or "Error" in ln]
    return took, lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--tiny", action="store_true", help="use a temporary data folder with one tiny checkpoint")
    ap.add_argument("--timeout", type=float, default=120.0)
    args = ap.parse_args()

    extra: list[str] = []
    tmp = None
    if args.tiny:
        tmp = tempfile.TemporaryDirectory(prefix="sdwebui-startup-")
        from testing.tiny_models import write_tiny_checkpoint
        write_tiny_checkpoint(Path(tmp.name) / "models" / "Stable-diffusion" / "tiny.safetensors", "sd1")
        extra += ["--data-dir", tmp.name]
    elif args.data_dir:
        extra += ["--data-dir", args.data_dir]

    times = []
    for i in range(args.runs):
        took, lines = one_start(extra, args.timeout)
        for ln in lines:
            print("   ", ln)
        if took is None:
            print(f"run {i + 1}: the page did not answer within {args.timeout:.0f}s")
            return 1
        times.append(took)
        print(f"run {i + 1}: page answering after {took:.2f} s")
    med = statistics.median(times)
    print(f"startup: median {med:.2f} s over {len(times)} runs (min {min(times):.2f}, max {max(times):.2f}); "
          f"target < {TARGET_S:.0f} s: {'OK' if med < TARGET_S else 'MISSED'}")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
