#!/usr/bin/env bash
# The GPU checks of this project in one prepared run, for a machine that has CUDA and PyTorch but not
# this project's other packages and no network (the workplace's lent GPU machine, for instance).
#
#   bench/gpu_check.sh fetch      # here, with network to PyPI: the wheels the GPU machine lacks, into .whl/
#   bench/gpu_check.sh run        # there, from the repository root, with .whl/ beside it
#
# `run` installs the wheels into /tmp/site, runs the CUDA tests of tests/test_devices.py, then
# bench/device_speed.py's GPU part: SD 1.5-shaped at 512x512 with --compile, then SDXL-shaped at
# 1024x1024.  Each part has its own time limit, so a slow part still leaves the others' figures.
# Logs go to $OUT (or /tmp/gpu_check) and to the terminal.  Environment: TEST_S, SD1_S, SDXL_S
# (seconds for each part; defaults fit a 10-minute run), REPEATS (default 3).
# The wheels are about 23 MB; with the repository (about 36 MB, most of it the default model) that is
# under the 64 MiB a workplace device run may carry (carry: [".whl"]; .whl/ is git-ignored).
set -uo pipefail
cd "$(dirname "$0")/.."
WHEELS=(diffusers==0.42.1 transformers==5.24.0 tokenizers==0.23.3 torchsde==0.2.6 trampoline==0.1.2)

case "${1:-}" in
fetch)
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl "${WHEELS[@]}"
    ls -l .whl
    ;;
run)
    out=${OUT:-/tmp/gpu_check}
    mkdir -p "$out"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
    { nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
      python3 -c "import torch, diffusers, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'diffusers', diffusers.__version__, 'transformers', transformers.__version__)"; } 2>&1 | tee "$out/env.txt"
    timeout "${TEST_S:-60}" python3 -m pytest -q -p no:cacheprovider tests/test_devices.py 2>&1 | tee "$out/tests.log"
    timeout "${SD1_S:-230}" python3 bench/device_speed.py --gpu-only --no-sdxl --compile --repeats "${REPEATS:-3}" \
        2>&1 | grep -v -i "warning" | tee "$out/bench_sd1.log"
    timeout "${SDXL_S:-270}" python3 bench/device_speed.py --gpu-only --only-sdxl --repeats "${REPEATS:-3}" \
        2>&1 | grep -v -i "warning" | tee "$out/bench_sdxl.log"
    ;;
*)
    sed -n 2,13p "$0"
    exit 2
    ;;
esac
