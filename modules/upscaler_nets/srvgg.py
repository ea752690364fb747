"""SRVGGNetCompact: Real-ESRGAN's small VGG-style network (realesr-general-x4v3, realesr-general-wdn-x4v3,
realesr-animevideov3).

Keys ``body.{k}.weight/bias``: ``body.0`` conv (in -> num_feat), ``body.1`` activation, then one conv /
activation pair per middle conv, and the last index a conv (num_feat -> out * upscale^2).  The output is the
pixel-shuffled body plus the nearest-neighbour enlarged input.
"""
from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F
from torch import nn

from modules.upscaler_nets import ArchInfo, UnsupportedModel

_KEY = re.compile(r"body\.(\d+)\.(weight|bias)$")


class SRVGGNetCompact(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, num_feat: int, num_conv: int, upscale: int, prelu_params: int):
        super().__init__()
        self.upscale = upscale
        layers = [nn.Conv2d(in_ch, num_feat, 3, 1, 1), nn.PReLU(prelu_params)]
        for _ in range(num_conv):
            layers += [nn.Conv2d(num_feat, num_feat, 3, 1, 1), nn.PReLU(prelu_params)]
        layers.append(nn.Conv2d(num_feat, out_ch * upscale * upscale, 3, 1, 1))
        self.body = nn.Sequential(*layers)

    def forward(self, x):
        base = F.interpolate(x, scale_factor=self.upscale, mode="nearest")
        return F.pixel_shuffle(self.body(x), self.upscale) + base


def match(sd: dict) -> bool:
    """Only ``body.N.weight/bias`` keys (BasicSR's RRDBNet also has ``body.N.rdb...`` keys, and others)."""
    return bool(sd) and "body.0.weight" in sd and all(_KEY.match(k) for k in sd)


def _convs_and_acts(sd: dict) -> tuple[list[int], list[int]]:
    idx = sorted({int(_KEY.match(k).group(1)) for k in sd})
    if any(f"body.{i}.weight" not in sd for i in idx):
        raise UnsupportedModel("SRVGGNet-like model with a bias but no weight at some layer")
    convs = [i for i in idx if sd[f"body.{i}.weight"].dim() == 4]
    acts = [i for i in idx if i not in convs]
    return convs, acts


def _check_layout(convs: list[int], acts: list[int]):
    n = len(convs)
    if n < 2 or convs != list(range(0, 2 * n, 2)):
        raise UnsupportedModel(f"SRVGGNet-like model with convolutions at body.{convs} (expected every other index)")
    if not acts:
        raise UnsupportedModel("SRVGGNetCompact without PReLU weights (ReLU or LeakyReLU: the file does not say "
                               "which) is not supported")
    if acts != list(range(1, 2 * n - 1, 2)):
        raise UnsupportedModel(f"SRVGGNetCompact with activation weights at body.{acts} only")


def describe(sd: dict) -> ArchInfo:
    convs, acts = _convs_and_acts(sd)
    _check_layout(convs, acts)
    first, last = sd["body.0.weight"], sd[f"body.{convs[-1]}.weight"]
    in_ch, num_feat = first.shape[1], first.shape[0]
    up = round(math.sqrt(last.shape[0] / in_ch))
    if up < 1 or up * up * in_ch != last.shape[0]:
        raise UnsupportedModel(f"SRVGGNetCompact whose last conv gives {last.shape[0]} channels for {in_ch} "
                               f"input channels: not a whole scale")
    params = {"num_feat": num_feat, "num_conv": len(convs) - 2, "prelu_params": sd["body.1.weight"].shape[0]}
    info = ArchInfo(arch="SRVGGNetCompact", scale=up, in_channels=in_ch, out_channels=in_ch, half=True,
                    params=params)
    _check_shapes(sd, info)
    return info


def _net(info: ArchInfo) -> SRVGGNetCompact:
    return SRVGGNetCompact(info.in_channels, info.out_channels, upscale=info.scale, **info.params)


def _check_shapes(sd: dict, info: ArchInfo):
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in _net(info).state_dict().items()}
    got = {k: tuple(v.shape) for k, v in sd.items()}
    if got != expected:
        bad = sorted(k for k in set(got) | set(expected) if got.get(k) != expected.get(k))
        raise UnsupportedModel(f"SRVGGNetCompact with unexpected layers or shapes at {', '.join(bad[:4])}")


def build(sd: dict, info: ArchInfo) -> nn.Module:
    with torch.device("meta"):   # no random initialisation: every tensor comes from sd
        net = _net(info)
    net.load_state_dict({k: v.detach().to("cpu", torch.float32) for k, v in sd.items()}, strict=True, assign=True)
    return net.eval()
