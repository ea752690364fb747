"""Network definitions of the upscaler models people download (ESRGAN / Real-ESRGAN RRDBNet, the compact
SRVGGNet, SwinIR, DAT), written here: the packages that ship them (spandrel, basicsr, realesrgan) need
torchvision, whose compiled ops do not load with the CPU torch this project installs.

Each architecture module offers three functions over a plain state dict (``name -> tensor``, already
unwrapped from ``params_ema`` / ``params``):

- ``match(sd) -> bool``: the keys say the weights are of this family (cheap: key names only);
- ``describe(sd) -> ArchInfo``: scale, channels and the hyper-parameters, read from key names and tensor
  shapes; raises ``UnsupportedModel`` with the reason when the weights are of the family but of a variant
  not written here;
- ``build(sd, info) -> torch.nn.Module``: the network with the weights loaded strictly, in eval mode,
  float32 on the CPU.  Its forward takes ``(N, C, H, W)`` in [0, 1] and returns ``(N, C, H*s, W*s)``
  (not clamped).

``identify`` and ``load`` below try the families in order.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class UnsupportedModel(ValueError):
    """The weights are not of an upscaler written here; the message says why (shown to the user)."""


@dataclass
class ArchInfo:
    arch: str                    # "ESRGAN", "RealESRGAN", "SRVGGNetCompact", "SwinIR", "DAT"
    scale: int                   # output size / input size
    in_channels: int = 3
    out_channels: int = 3
    half: bool = True            # float16 on a GPU gives the same picture (False: keep float32 / use bfloat16)
    params: dict[str, Any] = field(default_factory=dict)   # hyper-parameters build() needs

    def describe(self) -> str:
        return f"{self.arch} {self.scale}x"


def with_keys_checked(family: str, describe, sd: dict) -> ArchInfo:
    """``describe(sd)``, a key it looks for and does not find being an UnsupportedModel naming it."""
    try:
        return describe(sd)
    except KeyError as e:
        raise UnsupportedModel(f"{family}-like weights without {e}") from None


def unwrap(obj) -> dict:
    """The state dict inside what a ``.pth`` holds: BasicSR's ``params_ema`` / ``params``, a ``state_dict``
    or ``model`` entry, or the dict itself."""
    if isinstance(obj, dict):
        for key in ("params_ema", "params", "state_dict", "model"):
            inner = obj.get(key)
            if isinstance(inner, dict) and inner and all(isinstance(k, str) for k in inner):
                return inner
    if not isinstance(obj, dict):
        raise UnsupportedModel(f"the file holds a {type(obj).__name__}, not a dictionary of weights")
    return obj


def _families():
    from modules.upscaler_nets import dat, esrgan, srvgg, swinir
    return [esrgan, srvgg, swinir, dat]


def identify(sd: dict) -> ArchInfo:
    """The architecture of ``sd`` (key names and shapes only; nothing is computed)."""
    sd = unwrap(sd)
    for fam in _families():
        if fam.match(sd):
            return fam.describe(sd)
    sample = ", ".join(sorted(sd)[:4])
    raise UnsupportedModel(f"not an upscaler model this program knows (ESRGAN, Real-ESRGAN, SRVGGNet, SwinIR, DAT); "
                           f"its first keys are: {sample or 'none'}")


def load(sd: dict):
    """``(module, info)`` for the weights ``sd``."""
    sd = unwrap(sd)
    for fam in _families():
        if fam.match(sd):
            info = fam.describe(sd)
            return fam.build(sd, info), info
    identify(sd)   # raises with the reason
