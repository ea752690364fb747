"""What a job gives back: images, their infotexts and seeds, the saved files, A1111's info JSON."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from PIL import Image

VERSION = "0.1.0"


class NansError(RuntimeError):
    """The UNet's (or VAE's) output overflowed: no picture, and a way out in the message."""


@dataclass
class GenerationResult:
    images: list[Image.Image] = field(default_factory=list)
    infotexts: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    subseeds: list[int] = field(default_factory=list)
    prompts: list[str] = field(default_factory=list)
    negative_prompts: list[str] = field(default_factory=list)
    saved_files: list[str] = field(default_factory=list)
    grid: Image.Image | None = None
    grid_file: str | None = None
    grid_first: bool = False  # the "Show grid in gallery" setting: results (UI gallery, API images) lead with the grid
    info: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    interrupted: bool = False
    seconds: float = 0.0

    def js(self) -> dict:
        """A1111's `info` JSON object."""
        return self.info


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of the job: CUDA allocator peak on a GPU, else the process's peak resident size."""
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    import resource
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
