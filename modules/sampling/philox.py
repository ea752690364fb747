"""A1111's "NV" random source: the normal numbers ``torch.randn(..., device="cuda")`` gives for a
seed, computed with numpy on any device.

torch's CUDA generator runs cuRAND's Philox4x32-10 with the seed as key; for tensors of the
sizes used for latents each element ``i`` comes from its own counter ``(offset, 0, i, 0)`` (one
thread per element), and the first output pair becomes a normal number through Box-Muller
(``sqrt(-2 log u) * sin(2 pi v)``, cuRAND's float arithmetic).  Each call moves the generator's
offset on by one counter block, as torch does.
"""
from __future__ import annotations

import numpy as np
import torch

_M0, _M1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
_W0, _W1 = np.uint32(0x9E3779B9), np.uint32(0xBB67AE85)
_TWO_POW32_INV = np.float32(2.3283064e-10)
_TWO_POW32_INV_2PI = np.float32(2.3283064e-10 * 6.2831855)


def _mulhilo(a: np.ndarray, m: np.uint64) -> tuple[np.ndarray, np.ndarray]:
    prod = a.astype(np.uint64) * m
    return (prod >> np.uint64(32)).astype(np.uint32), (prod & np.uint64(0xFFFFFFFF)).astype(np.uint32)


def philox4x32_10(counter: np.ndarray, key: tuple[int, int]) -> np.ndarray:
    """Philox4x32 with 10 rounds over a (4, N) uint32 counter array; returns the (4, N) outputs."""
    c0, c1, c2, c3 = (counter[i].copy() for i in range(4))
    k0 = np.full(c0.shape, key[0], dtype=np.uint32)
    k1 = np.full(c0.shape, key[1], dtype=np.uint32)
    with np.errstate(over="ignore"):
        for r in range(10):
            hi0, lo0 = _mulhilo(c0, _M0)
            hi1, lo1 = _mulhilo(c2, _M1)
            c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
            if r < 9:
                k0 = k0 + _W0
                k1 = k1 + _W1
    return np.stack([c0, c1, c2, c3])


def _box_muller_first(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    u = x.astype(np.float32) * _TWO_POW32_INV + _TWO_POW32_INV / np.float32(2)
    v = y.astype(np.float32) * _TWO_POW32_INV_2PI + _TWO_POW32_INV_2PI / np.float32(2)
    return (np.sqrt(np.float32(-2.0) * np.log(u)) * np.sin(v)).astype(np.float32)


class PhiloxGenerator:
    """Per-seed generator with torch.Generator's use here: ``randn(shape)`` draws the next tensor."""

    def __init__(self, seed: int):
        self.seed = int(seed) & 0xFFFFFFFFFFFFFFFF
        self.offset = 0

    def manual_seed(self, seed: int) -> "PhiloxGenerator":
        self.seed = int(seed) & 0xFFFFFFFFFFFFFFFF
        self.offset = 0
        return self

    def randn(self, shape) -> torch.Tensor:
        n = int(np.prod(shape))
        counter = np.zeros((4, n), dtype=np.uint32)
        counter[0] = np.uint32(self.offset & 0xFFFFFFFF)
        counter[2] = np.arange(n, dtype=np.uint32)
        self.offset += 1
        out = philox4x32_10(counter, (self.seed & 0xFFFFFFFF, self.seed >> 32))
        return torch.from_numpy(_box_muller_first(out[0], out[1]).reshape(tuple(shape)))
