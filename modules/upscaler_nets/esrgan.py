"""RRDBNet: ESRGAN and Real-ESRGAN (the Residual-in-Residual Dense Block network).

Three key layouts are in circulation; all are renamed to one internal layout before loading:

- the original ESRGAN repository (``model.0`` first conv, ``model.1.sub.{i}.RDB{j}.conv{k}.0`` blocks,
  ``model.1.sub.{nb}`` trunk conv, then one ``Upsample, conv, LeakyReLU`` triple per 2x stage, the HR conv and
  its LeakyReLU, the last conv) -- most community "4x-..." models;
- ESRGAN's later "new arch" (``conv_first``, ``RRDB_trunk``, ``trunk_conv``, ``upconv{k}``, ``HRconv``,
  ``conv_last``);
- BasicSR / Real-ESRGAN (``conv_first``, ``body.{i}.rdb{j}``, ``conv_body``, ``conv_up{k}``, ``conv_hr``,
  ``conv_last``), which always upsamples 4x and reaches 2x / 1x by pixel-unshuffling the input first.

Internal layout: ``conv_first``, ``body.{i}.rdb{j}.conv{k}``, ``conv_body``, ``ups.{k}``, ``conv_hr``,
``conv_last``.
"""
from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F
from torch import nn

from modules.upscaler_nets import ArchInfo, UnsupportedModel

SLOPE = 0.2
RESIDUAL = 0.2


def _conv(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, 1, 1, bias=True)


class ResidualDenseBlock(nn.Module):
    def __init__(self, nf: int, gc: int):
        super().__init__()
        for k in range(1, 5):
            setattr(self, f"conv{k}", _conv(nf + (k - 1) * gc, gc))
        self.conv5 = _conv(nf + 4 * gc, nf)

    def forward(self, x):
        feats = [x]
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            feats.append(F.leaky_relu(conv(torch.cat(feats, 1)), SLOPE))
        return self.conv5(torch.cat(feats, 1)) * RESIDUAL + x


class RRDB(nn.Module):
    def __init__(self, nf: int, gc: int):
        super().__init__()
        self.rdb1 = ResidualDenseBlock(nf, gc)
        self.rdb2 = ResidualDenseBlock(nf, gc)
        self.rdb3 = ResidualDenseBlock(nf, gc)

    def forward(self, x):
        return self.rdb3(self.rdb2(self.rdb1(x))) * RESIDUAL + x


class RRDBNet(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, nf: int, gc: int, nb: int, n_up: int, unshuffle: int = 1):
        super().__init__()
        self.unshuffle = unshuffle
        self.scale = 2 ** n_up // unshuffle
        self.conv_first = _conv(in_ch * unshuffle * unshuffle, nf)
        self.body = nn.Sequential(*[RRDB(nf, gc) for _ in range(nb)])
        self.conv_body = _conv(nf, nf)
        self.ups = nn.ModuleList([_conv(nf, nf) for _ in range(n_up)])
        self.conv_hr = _conv(nf, nf)
        self.conv_last = _conv(nf, out_ch)

    def forward(self, x):
        h, w = x.shape[-2:]
        x = _pad_to(x, self.unshuffle)
        if self.unshuffle > 1:
            x = F.pixel_unshuffle(x, self.unshuffle)
        fea = self.conv_first(x)
        fea = fea + self.conv_body(self.body(fea))
        for conv in self.ups:
            fea = F.leaky_relu(conv(F.interpolate(fea, scale_factor=2, mode="nearest")), SLOPE)
        out = self.conv_last(F.leaky_relu(self.conv_hr(fea), SLOPE))
        return out[..., :h * self.scale, :w * self.scale]


def _pad_to(x, m: int):
    """``x`` padded at the bottom / right to a multiple of ``m`` (pixel-unshuffle needs it), as Real-ESRGAN
    does (reflection, or repetition where the picture is too small to reflect)."""
    ph, pw = -x.shape[-2] % m, -x.shape[-1] % m
    if not (ph or pw):
        return x
    mode = "reflect" if ph < x.shape[-2] and pw < x.shape[-1] else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


# ---- key layouts ------------------------------------------------------------------------------------------

_OLD_BLOCK = re.compile(r"model\.1\.sub\.(\d+)\.RDB([123])\.conv([1-5])\.0\.(weight|bias)$")
_NEW_BLOCK = re.compile(r"RRDB_trunk\.(\d+)\.RDB([123])\.conv([1-5])\.(weight|bias)$")
_BSR_BLOCK = re.compile(r"body\.(\d+)\.rdb([123])\.conv([1-5])\.(weight|bias)$")
_OLD_TOP = re.compile(r"model\.(\d+)\.(weight|bias)$")
_PLUS_KEY = re.compile(r"\.(RDB|rdb)[123]\.conv1x1\.")
_SFT_KEY = re.compile(r"SFT_(scale|shift)_conv")


def _layout(sd: dict) -> str | None:
    if "model.0.weight" in sd and any(k.startswith("model.1.sub.") for k in sd):
        return "old"
    if "conv_first.weight" in sd and any(k.startswith("RRDB_trunk.") for k in sd):
        return "new"
    if "conv_first.weight" in sd and any(_BSR_BLOCK.match(k) for k in sd):
        return "basicsr"
    return None


def _variant(sd: dict) -> str | None:
    """The name of a known RRDB-like variant not written here, from its tell-tale keys."""
    if any(_PLUS_KEY.search(k) for k in sd):
        return "ESRGAN+ (nESRGAN+, with conv1x1 layers inside the dense blocks)"
    if any(_SFT_KEY.search(k) or k.startswith("CondNet.") for k in sd):
        return "SFT-GAN (spatial feature transform layers)"
    return None


def match(sd: dict) -> bool:
    return _layout(sd) is not None or _variant(sd) is not None


def _block_indices(sd: dict, pattern: re.Pattern) -> list[int]:
    return sorted({int(m.group(1)) for m in map(pattern.match, sd) if m})


def _old_conv_indices(sd: dict) -> list[int]:
    """Indices of ``model.{i}`` convolutions after the shortcut block (upsample convs, HR conv, last conv)."""
    return sorted({int(m.group(1)) for m in map(_OLD_TOP.match, sd) if m and int(m.group(1)) >= 2})


def _old_upsamples(sd: dict, nf: int) -> int:
    idx = _old_conv_indices(sd)
    if len(idx) >= 3 and "model.2.weight" in sd and sd["model.2.weight"].shape[0] == 4 * nf:
        raise UnsupportedModel("old-architecture ESRGAN with pixel-shuffle upsampling is not supported "
                               "(only nearest-neighbour upsampling is)")
    n = len(idx) - 2
    expected = [3 * (k + 1) for k in range(n)] + [3 * n + 2, 3 * n + 4]
    if n < 0 or idx != expected:
        raise UnsupportedModel(f"old-architecture ESRGAN with an unknown layer layout (convolutions at "
                               f"model.{idx}; expected model.{expected})")
    return n


def _old_mapping(sd: dict, nb: int, n_up: int) -> dict[str, str]:
    """Old-layout key -> internal key, for the keys outside the dense blocks."""
    names = {0: "conv_first", 3 * n_up + 2: "conv_hr", 3 * n_up + 4: "conv_last"}
    names.update({3 * (k + 1): f"ups.{k}" for k in range(n_up)})
    out = {f"model.1.sub.{nb}.{p}": f"conv_body.{p}" for p in ("weight", "bias")}
    for i, name in names.items():
        out.update({f"model.{i}.{p}": f"{name}.{p}" for p in ("weight", "bias")})
    return out


def _rename_blocks(sd: dict, pattern: re.Pattern) -> dict[str, str]:
    out = {}
    for key in sd:
        m = pattern.match(key)
        if m:
            i, j, k, p = m.groups()
            out[key] = f"body.{i}.rdb{j}.conv{k}.{p}"
    return out


_NEW_NAMES = {"conv_first": "conv_first", "trunk_conv": "conv_body", "HRconv": "conv_hr",
              "conv_last": "conv_last"}
_BSR_NAMES = {"conv_first": "conv_first", "conv_body": "conv_body", "conv_hr": "conv_hr",
              "conv_last": "conv_last"}


def _named_mapping(names: dict[str, str], up_prefix: str, n_up: int) -> dict[str, str]:
    full = dict(names)
    full.update({f"{up_prefix}{k + 1}": f"ups.{k}" for k in range(n_up)})
    return {f"{src}.{p}": f"{dst}.{p}" for src, dst in full.items() for p in ("weight", "bias")}


def _count_ups(sd: dict, prefix: str) -> int:
    n = 0
    while f"{prefix}{n + 1}.weight" in sd:
        n += 1
    return n


def _unshuffle_factor(sd: dict, n_up: int) -> int:
    """BasicSR reaches scales below 4x by pixel-unshuffling first: conv_first sees ``r*r`` times the colour
    channels conv_last gives back."""
    ratio = sd["conv_first.weight"].shape[1] / sd["conv_last.weight"].shape[0]
    r = round(math.sqrt(ratio))
    if r < 1 or r * r != ratio or (2 ** n_up) % r:
        raise UnsupportedModel(f"Real-ESRGAN model with {sd['conv_first.weight'].shape[1]} input and "
                               f"{sd['conv_last.weight'].shape[0]} output channels: not a known pixel-unshuffle")
    return r


def _mapping(sd: dict, layout: str) -> tuple[dict[str, str], dict]:
    """(source key -> internal key, the layout's hyper-parameters besides nf / gc)."""
    if layout == "old":
        blocks = _block_indices(sd, _OLD_BLOCK)
        n_up = _old_upsamples(sd, sd["model.0.weight"].shape[0])
        mapping = {**_rename_blocks(sd, _OLD_BLOCK), **_old_mapping(sd, len(blocks), n_up)}
        return mapping, {"nb": len(blocks), "n_up": n_up, "unshuffle": 1}
    if layout == "new":
        n_up = _count_ups(sd, "upconv")
        mapping = {**_rename_blocks(sd, _NEW_BLOCK), **_named_mapping(_NEW_NAMES, "upconv", n_up)}
        return mapping, {"nb": len(_block_indices(sd, _NEW_BLOCK)), "n_up": n_up, "unshuffle": 1}
    n_up = _count_ups(sd, "conv_up")
    mapping = {**_rename_blocks(sd, _BSR_BLOCK), **_named_mapping(_BSR_NAMES, "conv_up", n_up)}
    params = {"nb": len(_block_indices(sd, _BSR_BLOCK)), "n_up": n_up, "unshuffle": _unshuffle_factor(sd, n_up)}
    return mapping, params


def _convert(sd: dict, layout: str) -> tuple[dict, dict]:
    """(``sd`` under the internal key names, the hyper-parameters besides nf / gc); every key must be
    accounted for."""
    mapping, params = _mapping(sd, layout)
    extra = sorted(k for k in sd if k not in mapping)
    if extra:
        raise UnsupportedModel(f"ESRGAN-like model with layers not written here: {', '.join(extra[:4])}"
                               + (f" and {len(extra) - 4} more" if len(extra) > 4 else ""))
    return {mapping[k]: v for k, v in sd.items()}, params


def _check_shapes(internal: dict, net_args: dict):
    """Every tensor has the shape the network built from ``net_args`` expects (on the meta device: free)."""
    with torch.device("meta"):
        expected = {k: v.shape for k, v in RRDBNet(**net_args).state_dict().items()}
    missing = sorted(set(expected) - set(internal))
    if missing:
        raise UnsupportedModel(f"ESRGAN-like model missing layers: {', '.join(missing[:4])}")
    wrong = [k for k in expected if tuple(internal[k].shape) != tuple(expected[k])]
    if wrong:
        raise UnsupportedModel(f"ESRGAN-like model with unexpected shapes at {', '.join(wrong[:4])} "
                               f"(e.g. {tuple(internal[wrong[0]].shape)} vs {tuple(expected[wrong[0]])})")


def describe(sd: dict) -> ArchInfo:
    variant = _variant(sd)
    if variant:
        raise UnsupportedModel(f"{variant} models are not supported")
    layout = _layout(sd)
    if layout is None:
        raise UnsupportedModel("not an ESRGAN model")
    internal, params = _convert(sd, layout)
    if "body.0.rdb1.conv1.weight" not in internal:
        raise UnsupportedModel("model without RRDB blocks (not ESRGAN, e.g. SRResNet)")
    first, last = internal["conv_first.weight"], internal["conv_last.weight"]
    r = params["unshuffle"]
    params.update(nf=first.shape[0], gc=internal["body.0.rdb1.conv1.weight"].shape[0], layout=layout)
    info = ArchInfo(arch="RealESRGAN" if layout == "basicsr" else "ESRGAN", scale=2 ** params["n_up"] // r,
                    in_channels=first.shape[1] // (r * r), out_channels=last.shape[0], half=True, params=params)
    _check_shapes(internal, _net_args(info))
    return info


def _net_args(info: ArchInfo) -> dict:
    p = info.params
    return dict(in_ch=info.in_channels, out_ch=info.out_channels, nf=p["nf"], gc=p["gc"], nb=p["nb"],
                n_up=p["n_up"], unshuffle=p["unshuffle"])


def build(sd: dict, info: ArchInfo) -> nn.Module:
    with torch.device("meta"):   # no random initialisation: every tensor comes from sd
        net = RRDBNet(**_net_args(info))
    internal, _ = _convert(sd, info.params["layout"])
    net.load_state_dict({k: v.detach().to("cpu", torch.float32) for k, v in internal.items()}, strict=True,
                        assign=True)
    return net.eval()
