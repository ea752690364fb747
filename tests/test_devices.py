"""Device policy and offload modes: the offloaded model gives the same image as the plain one."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from modules import cmd_args, devices, processing, sd_models
from modules.options import Options
from modules.paths import Paths
from modules.tiny_models import write_tiny_checkpoint


def test_policy_from_flags_on_cpu():
    pol = devices.policy_from_args(cmd_args.parse_args(["--use-cpu", "all", "--medvram"]))
    assert pol.device.type == "cpu" and pol.dtype == torch.float32 and pol.vae_dtype == torch.float32
    assert pol.offload == "none"  # offloading only means something with a GPU


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_policy_half_on_cuda():
    pol = devices.policy_from_args(cmd_args.parse_args([]))
    assert pol.dtype == torch.float16 and pol.vae_dtype == torch.float16
    pol = devices.policy_from_args(cmd_args.parse_args(["--no-half-vae"]))
    assert pol.vae_dtype == torch.float32
    pol = devices.policy_from_args(cmd_args.parse_args(["--precision", "full"]))
    assert pol.dtype == torch.float32


def generate(tmp_path, offload: str):
    p = Paths.from_args(cmd_args.parse_args(["--data-dir", str(tmp_path)]))
    pol = devices.DevicePolicy(device=torch.device("cpu"), dtype=torch.float32, vae_dtype=torch.float32,
                               offload=offload)
    mm = sd_models.ModelManager(p, pol)
    mm.refresh()
    loaded = mm.load("tiny")
    req = processing.GenerationRequest(prompt="a red circle", steps=4, width=64, height=64, seed=11,
                                       sampler_name="Euler a")
    res = processing.Processor(loaded, Options().snapshot()).run(req)
    assert res.info["peak_memory_mb"] > 0
    return np.asarray(res.images[0])


def test_offload_modes_give_the_same_image(tmp_path):
    """accelerate's offload hooks (--medvram / --lowvram), exercised with the CPU as execution device."""
    ck = tmp_path / "models" / "Stable-diffusion"
    write_tiny_checkpoint(ck / "tiny.safetensors", "sd1", seed=5)
    plain = generate(tmp_path, "none")
    assert np.array_equal(generate(tmp_path, "medvram"), plain)
    assert np.array_equal(generate(tmp_path, "lowvram"), plain)
