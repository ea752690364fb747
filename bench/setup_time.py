"""Set-up and start-up times of the README's first command.

1. First-time setup: a fresh clone in a temp folder, `python3 launch.py` with no venv yet
   (creates venv/, installs torch and the requirements), until the page answers.
2. Second start: `python3 launch.py` again in the same clone, until the page answers.
Targets: first < 180 s on a 2-core machine, second < 10 s.

    python3 bench/setup_time.py [--keep]
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, free_port, wait_http


def start(clone: Path, extra=()) -> tuple[float | None, str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "COMMANDLINE_ARGS")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if "venv" not in p)
    log = clone / f"launch-{port}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(["python3", "launch.py", "--port", str(port), *extra], cwd=clone, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        t0 = time.perf_counter()
        took = wait_http(f"http://127.0.0.1:{port}/healthz", 600, proc)
        took = None if took is None else time.perf_counter() - t0
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    return took, log.read_text()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--keep", action="store_true", help="keep the temporary clone")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="sdwebui-setup-"))
    clone = tmp / "webui"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    first, log1 = start(clone)
    second, log2 = start(clone)
    phases = [line for line in log2.splitlines() if line.startswith(("[launch]", "[startup]"))]
    print(f"first-time setup to page answering: {first if first is None else round(first, 1)} s (target < 180)")
    print(f"second start to page answering:     {second if second is None else round(second, 1)} s (target < 10)")
    print("second start phases:\n  " + "\n  ".join(phases))
    if first is None or second is None:
        print("--- log of the failed start ---\n" + (log1 if first is None else log2)[-3000:])
    if not a.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        print("clone kept at", clone)


if __name__ == "__main__":
    sys.exit(main())
