"""Device and dtype policy: cuda > mps > cpu, half precision on GPUs unless told otherwise."""
from __future__ import annotations

import gc
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DevicePolicy:
    device: torch.device
    dtype: torch.dtype          # UNet and text encoders
    vae_dtype: torch.dtype
    offload: str = "none"       # "none" | "medvram" | "lowvram"
    compile: bool = False
    channels_last: bool = False

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"


def pick_device(use_cpu=None, device_id=None) -> torch.device:
    if use_cpu is not None:  # flag given (with or without module names)
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device(f"cuda:{device_id}" if device_id is not None else "cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def policy_from_args(args) -> DevicePolicy:
    device = pick_device(getattr(args, "use_cpu", None), getattr(args, "device_id", None))
    full = getattr(args, "no_half", False) or getattr(args, "precision", "autocast") == "full"
    if device.type == "cpu" or full:
        dtype = torch.float32
    else:  # fp16: the dtype the SD 1.x/2.x/SDXL weights are published in; the VAE's NaN case is handled at decode
        dtype = torch.float16
    vae_dtype = torch.float32 if (dtype == torch.float32 or getattr(args, "no_half_vae", False)) else dtype
    offload = "lowvram" if getattr(args, "lowvram", False) else ("medvram" if getattr(args, "medvram", False) else "none")
    if device.type != "cuda":
        offload = "none"
    return DevicePolicy(device=device, dtype=dtype, vae_dtype=vae_dtype, offload=offload,
                        compile=bool(getattr(args, "compile", False)),
                        channels_last=bool(getattr(args, "opt_channelslast", False)) and device.type == "cuda")


@dataclass(frozen=True)
class MemoryInfo:
    """The memory of the device jobs run on, in bytes: a CUDA GPU's own, else the machine's RAM (an MPS
    GPU shares it)."""
    kind: str       # "cpu" | "cuda" | "mps"
    total: int
    free: int


def memory_info(device=None) -> MemoryInfo:
    """Total and free memory of `device` (default: the one pick_device() picks) now; for CUDA, the blocks
    PyTorch has cached but not used count as free."""
    device = torch.device(device) if device is not None else pick_device()
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return MemoryInfo("cuda", int(total), int(free + max(cached, 0)))
    import psutil

    vm = psutil.virtual_memory()
    return MemoryInfo(device.type, int(vm.total), int(vm.available))


def cpu_policy() -> DevicePolicy:
    return DevicePolicy(device=torch.device("cpu"), dtype=torch.float32, vae_dtype=torch.float32)


def release_memory() -> None:
    """Give freed tensors back: Python garbage, CUDA cache, glibc arenas."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.ipc_collect()
    try:  # return freed heap pages to the OS on glibc systems
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
