"""Random-weight upscaler files in the key layouts the published models use, for tests and benches.

    write_rrdb(path, layout="basicsr", nf=8, gc=4, nb=1, scale=4)   # RealESRGAN_x4plus.pth's layout
    write_rrdb(path, layout="old")                                 # original ESRGAN ("4x-..." community files)
    write_srvgg(path, nf=8, num_conv=2, scale=4)                   # realesr-general-x4v3.pth's layout

Weights are drawn from a seeded generator with a fan-in scale, so the network's output is neither flat nor
saturated. Test support, not part of the application.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch


def _conv(g: torch.Generator, cout: int, cin: int, gain: float = 1.0, bias: float = 0.0
          ) -> tuple[torch.Tensor, torch.Tensor]:
    w = torch.randn(cout, cin, 3, 3, generator=g) * (gain / math.sqrt(cin * 9))
    b = torch.randn(cout, generator=g) * 0.01 + bias
    return w, b


def rrdb_state_dict(layout: str = "basicsr", nf: int = 8, gc: int = 4, nb: int = 1, scale: int = 4,
                    in_ch: int = 3, out_ch: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    """An RRDBNet's weights. ``layout``: "basicsr" (Real-ESRGAN; scale 4, 2 or 1 via pixel-unshuffle), "new"
    (ESRGAN's later names, scale 2**k) or "old" (the original ESRGAN's ``model.N`` names, scale 2**k)."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    names = {"basicsr": ("conv_first", "body.{i}.rdb{j}.conv{k}", "conv_body", "conv_up{u}", "conv_hr", "conv_last"),
             "new": ("conv_first", "RRDB_trunk.{i}.RDB{j}.conv{k}", "trunk_conv", "upconv{u}", "HRconv", "conv_last")}

    def put(name, w_b, old=False):
        w, b = w_b
        suffix = ".0" if old else ""
        sd[f"{name}{suffix}.weight"], sd[f"{name}{suffix}.bias"] = w, b

    if layout == "basicsr":
        if scale not in (1, 2, 4):
            raise ValueError("the BasicSR layout has scales 1, 2 and 4")
        ups, unshuffle = 2, {4: 1, 2: 2, 1: 4}[scale]
    else:
        ups, unshuffle = int(math.log2(scale)), 1
        if 2 ** ups != scale:
            raise ValueError("ESRGAN scales are powers of 2")
    first_in = in_ch * unshuffle * unshuffle
    if layout in names:
        first, block, trunk, up, hr, last = names[layout]
        put(first, _conv(g, nf, first_in))
        for i in range(nb):
            for j in range(1, 4):
                for k in range(1, 6):
                    cout = nf if k == 5 else gc
                    put(block.format(i=i, j=j, k=k), _conv(g, cout, nf + (k - 1) * gc))
        put(trunk, _conv(g, nf, nf))
        for u in range(1, ups + 1):
            put(up.format(u=u), _conv(g, nf, nf))
        put(hr, _conv(g, nf, nf))
        put(last, _conv(g, out_ch, nf, bias=0.5))
        return sd
    if layout != "old":
        raise ValueError(f"unknown layout {layout!r}")
    put("model.0", _conv(g, nf, first_in))
    for i in range(nb):
        for j in range(1, 4):
            for k in range(1, 6):
                cout = nf if k == 5 else gc
                put(f"model.1.sub.{i}.RDB{j}.conv{k}", _conv(g, cout, nf + (k - 1) * gc), old=True)
    put(f"model.1.sub.{nb}", _conv(g, nf, nf))
    for u in range(ups):
        put(f"model.{3 + 3 * u}", _conv(g, nf, nf))
    put(f"model.{2 + 3 * ups}", _conv(g, nf, nf))
    put(f"model.{4 + 3 * ups}", _conv(g, out_ch, nf, bias=0.5))
    return sd


def srvgg_state_dict(nf: int = 8, num_conv: int = 2, scale: int = 4, in_ch: int = 3, out_ch: int = 3,
                     seed: int = 0) -> dict[str, torch.Tensor]:
    """SRVGGNetCompact's weights with PReLU activations (as realesr-general-x4v3.pth / realesr-animevideov3.pth)."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    idx = 0

    def conv(cout, cin):
        nonlocal idx
        sd[f"body.{idx}.weight"], sd[f"body.{idx}.bias"] = _conv(g, cout, cin)
        idx += 1

    def prelu():
        nonlocal idx
        sd[f"body.{idx}.weight"] = torch.full((nf,), 0.25) + torch.randn(nf, generator=g) * 0.01
        idx += 1

    conv(nf, in_ch)
    prelu()
    for _ in range(num_conv):
        conv(nf, nf)
        prelu()
    conv(out_ch * scale * scale, nf)
    return sd


def save(sd: dict, path: Path, wrap: str | None = "params_ema") -> Path:
    """``sd`` written to ``path``: .safetensors as it is, .pth/.pt through torch.save (inside ``{wrap: sd}``
    as BasicSR saves, unless ``wrap`` is None)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    else:
        torch.save({wrap: sd} if wrap else sd, path)
    return path


def write_rrdb(path, layout: str = "basicsr", wrap: str | None = "params_ema", **kw) -> Path:
    return save(rrdb_state_dict(layout, **kw), path, wrap if layout == "basicsr" else None)


def write_srvgg(path, wrap: str | None = "params", **kw) -> Path:
    return save(srvgg_state_dict(**kw), path, wrap)
