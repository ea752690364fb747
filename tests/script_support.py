"""What the built-in scripts' test files share (not a test module): pictures compared exactly, the PNGs
written under an output folder, and a loaded script's module."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np


def arr(im) -> np.ndarray:
    return np.asarray(im.convert("RGB"), dtype=np.int16)


def same(a, b) -> bool:
    """The same size and the same pixels."""
    return a.size == b.size and np.array_equal(arr(a), arr(b))


def files(data: Path, folder: str) -> set[Path]:
    """The PNGs under ``data``/outputs/``folder``."""
    return set((data / "outputs" / folder).rglob("*.png"))


def script_module(app, name: str):
    """The module a loaded script (found by name) came from."""
    return sys.modules[type(app.scripts.find(name)).__module__]
