"""SwinIR and DAT (modules.upscaler_nets.swinir / .dat): the key layout of the original definitions, what the
detectors read from a state dict, shapes and determinism of the forward pass, strict loading, and one Swin
block recomputed here with plain tensor operations."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from modules import upscaler_nets
from modules.upscaler_nets import UnsupportedModel, dat, swinir

pytestmark = pytest.mark.usefixtures("one_thread")

# ---- the original key layouts (network_swinir.py / dat_arch.py), in their state_dict order --------------------
# Buffers the originals save are listed too; BUFFERS marks them (they are recomputed here, so a file may
# have them or not).

SWIN_BLOCK = [
    "{b}.norm1.weight", "{b}.norm1.bias",
    "{b}.attn.relative_position_bias_table", "{b}.attn.relative_position_index",
    "{b}.attn.qkv.weight", "{b}.attn.qkv.bias", "{b}.attn.proj.weight", "{b}.attn.proj.bias",
    "{b}.norm2.weight", "{b}.norm2.bias",
    "{b}.mlp.fc1.weight", "{b}.mlp.fc1.bias", "{b}.mlp.fc2.weight", "{b}.mlp.fc2.bias",
]
SWIN_SHIFTED_BLOCK = ["{b}.attn_mask"] + SWIN_BLOCK      # odd blocks register attn_mask (an own buffer: first)

# the classical x2 model of depths [2, 2], '1conv', 'pixelshuffle'
SWINIR_CLASSICAL_KEYS = (
    ["conv_first.weight", "conv_first.bias", "patch_embed.norm.weight", "patch_embed.norm.bias"]
    + [k.format(b="layers.0.residual_group.blocks.0") for k in SWIN_BLOCK]
    + [k.format(b="layers.0.residual_group.blocks.1") for k in SWIN_SHIFTED_BLOCK]
    + ["layers.0.conv.weight", "layers.0.conv.bias"]
    + [k.format(b="layers.1.residual_group.blocks.0") for k in SWIN_BLOCK]
    + [k.format(b="layers.1.residual_group.blocks.1") for k in SWIN_SHIFTED_BLOCK]
    + ["layers.1.conv.weight", "layers.1.conv.bias",
       "norm.weight", "norm.bias", "conv_after_body.weight", "conv_after_body.bias",
       "conv_before_upsample.0.weight", "conv_before_upsample.0.bias",
       "upsample.0.weight", "upsample.0.bias", "conv_last.weight", "conv_last.bias"]
)
SWINIR_LIGHT_TAIL = ["upsample.0.weight", "upsample.0.bias"]
SWINIR_REAL_TAIL = ["conv_before_upsample.0.weight", "conv_before_upsample.0.bias", "conv_up1.weight",
                    "conv_up1.bias", "conv_up2.weight", "conv_up2.bias", "conv_hr.weight", "conv_hr.bias",
                    "conv_last.weight", "conv_last.bias"]
THREE_CONV = ["{p}.0.weight", "{p}.0.bias", "{p}.2.weight", "{p}.2.bias", "{p}.4.weight", "{p}.4.bias"]

BN = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
DAT_POS = [f"pos.{m}.{p}" for m in ("pos_proj", "pos1.0", "pos1.2", "pos2.0", "pos2.2", "pos3.0", "pos3.2")
           for p in ("weight", "bias")]
DAT_AIM = (["{b}.attn.dwconv.0.weight", "{b}.attn.dwconv.0.bias"] + ["{b}.attn.dwconv.1." + p for p in BN]
           + ["{b}.attn.channel_interaction.1.weight", "{b}.attn.channel_interaction.1.bias"]
           + ["{b}.attn.channel_interaction.2." + p for p in BN]
           + ["{b}.attn.channel_interaction.4.weight", "{b}.attn.channel_interaction.4.bias"]
           + ["{b}.attn.spatial_interaction.0.weight", "{b}.attn.spatial_interaction.0.bias"]
           + ["{b}.attn.spatial_interaction.1." + p for p in BN]
           + ["{b}.attn.spatial_interaction.3.weight", "{b}.attn.spatial_interaction.3.bias"])
DAT_FFN = ["{b}.ffn.fc1.weight", "{b}.ffn.fc1.bias", "{b}.ffn.sg.norm.weight", "{b}.ffn.sg.norm.bias",
           "{b}.ffn.sg.conv.weight", "{b}.ffn.sg.conv.bias", "{b}.ffn.fc2.weight", "{b}.ffn.fc2.bias",
           "{b}.norm2.weight", "{b}.norm2.bias"]
DAT_SPATIAL = (["{b}.norm1.weight", "{b}.norm1.bias", "{b}.attn.qkv.weight", "{b}.attn.qkv.bias",
                "{b}.attn.proj.weight", "{b}.attn.proj.bias"]
               + ["{b}.attn.attns.%d.%s" % (i, k) for i in (0, 1)
                  for k in ["rpe_biases", "relative_position_index"] + DAT_POS]
               + DAT_AIM + DAT_FFN)
DAT_SPATIAL_SHIFTED = DAT_SPATIAL[:2] + ["{b}.attn.attn_mask_0", "{b}.attn.attn_mask_1"] + DAT_SPATIAL[2:]
DAT_CHANNEL = (["{b}.norm1.weight", "{b}.norm1.bias", "{b}.attn.temperature", "{b}.attn.qkv.weight",
                "{b}.attn.qkv.bias", "{b}.attn.proj.weight", "{b}.attn.proj.bias"] + DAT_AIM + DAT_FFN)

# DAT x2, depth [2, 2] (block 0 of group 1 shifts its windows), '1conv', 'pixelshuffle'
DAT_X2_KEYS = (
    ["conv_first.weight", "conv_first.bias", "before_RG.1.weight", "before_RG.1.bias"]
    + [k.format(b="layers.0.blocks.0") for k in DAT_SPATIAL]
    + [k.format(b="layers.0.blocks.1") for k in DAT_CHANNEL]
    + ["layers.0.conv.weight", "layers.0.conv.bias"]
    + [k.format(b="layers.1.blocks.0") for k in DAT_SPATIAL_SHIFTED]
    + [k.format(b="layers.1.blocks.1") for k in DAT_CHANNEL]
    + ["layers.1.conv.weight", "layers.1.conv.bias", "norm.weight", "norm.bias",
       "conv_after_body.weight", "conv_after_body.bias", "conv_before_upsample.0.weight",
       "conv_before_upsample.0.bias", "upsample.0.weight", "upsample.0.bias", "conv_last.weight", "conv_last.bias"]
)
BUFFERS = ("relative_position_index", "attn_mask", "rpe_biases", "attn_mask_0", "attn_mask_1")


def without_buffers(keys):
    return [k for k in keys if k.rsplit(".", 1)[-1] not in BUFFERS]


# ---- configurations ------------------------------------------------------------------------------------------

SWIN_BASE = dict(in_chans=3, embed_dim=12, depths=[2, 2], num_heads=[2, 2], window_size=4, mlp_ratio=2.0,
                 qkv_bias=True, patch_norm=True, resi_connection="1conv", num_feat=64)
SWINIR_CONFIGS = {
    "classical_x2": dict(SWIN_BASE, upscale=2, upsampler="pixelshuffle"),
    "lightweight_x3": dict(SWIN_BASE, upscale=3, upsampler="pixelshuffledirect"),
    "realworld_x4": dict(SWIN_BASE, embed_dim=16, upscale=4, upsampler="nearest+conv", resi_connection="3conv"),
}
DAT_CONFIGS = {
    "x2": dict(in_chans=3, embed_dim=32, depth=[2, 2], num_heads=[2, 2], split_size=[2, 4], expansion_factor=2.0,
               qkv_bias=True, upscale=2, upsampler="pixelshuffle", resi_connection="1conv", num_feat=64),
    "x4": dict(in_chans=3, embed_dim=32, depth=[3, 1], num_heads=[2, 2], split_size=[2, 4], expansion_factor=2.0,
               qkv_bias=True, upscale=4, upsampler="pixelshuffle", resi_connection="3conv", num_feat=16),
    "light_x3": dict(in_chans=3, embed_dim=32, depth=[2], num_heads=[4], split_size=[4, 8], expansion_factor=2.0,
                     qkv_bias=True, upscale=3, upsampler="pixelshuffledirect", resi_connection="3conv",
                     num_feat=64),
}


def randomize(net: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():     # weights of about unit gain, so that every part counts
            std = (p[0].numel() ** -0.5) if p.dim() > 1 else 0.1
            one = p.dim() == 1 and name.endswith("weight")        # layer / batch norm scales
            p.copy_(torch.randn(p.shape, generator=g) * std + (1.0 if one else 0.0))
        for name, b in net.named_buffers():
            if name.endswith(("running_mean", "running_var")):
                b.copy_(torch.rand(b.shape, generator=g) * 0.5 + (0.75 if name.endswith("var") else -0.25))
    return net.eval()


def swin_sd(cfg: dict) -> dict:
    return randomize(swinir.SwinIR(**cfg)).state_dict()


def dat_sd(cfg: dict) -> dict:
    return randomize(dat.DAT(**cfg)).state_dict()


# the buffers a published file carries, computed here independently of the modules under test

def original_rel_index(wh: int, ww: int) -> torch.Tensor:
    coords = [(y, x) for y in range(wh) for x in range(ww)]
    return torch.tensor([[(a[0] - b[0] + wh - 1) * (2 * ww - 1) + (a[1] - b[1] + ww - 1) for b in coords]
                         for a in coords])


def with_swin_buffers(sd: dict, train_size: int = 16) -> dict:
    out = dict(sd)
    for k, v in sd.items():
        if k.endswith(".attn.relative_position_bias_table"):
            w = (math.isqrt(v.shape[0]) + 1) // 2
            out[k.replace("relative_position_bias_table", "relative_position_index")] = original_rel_index(w, w)
            block = int(k.split(".")[4])
            if block % 2:
                nw = (train_size // w) ** 2
                out[k.replace("attn.relative_position_bias_table", "attn_mask")] = torch.zeros(nw, w * w, w * w)
    return out


def with_dat_buffers(sd: dict, split, train_size: int = 16) -> dict:
    out = dict(sd)
    s0, s1 = split
    for k in sd:
        if k.endswith(".attns.0.pos.pos_proj.weight"):
            for i, (wh, ww) in enumerate([(s0, s1), (s1, s0)]):
                base = k.replace(".attns.0.pos.pos_proj.weight", f".attns.{i}.")
                out[base + "rpe_biases"] = torch.tensor(
                    [[dy, dx] for dy in range(1 - wh, wh) for dx in range(1 - ww, ww)], dtype=torch.float32)
                out[base + "relative_position_index"] = original_rel_index(wh, ww)
    for name in [n for n in out if n.endswith(".attn.attns.0.rpe_biases")]:
        rg, b = int(name.split(".")[1]), int(name.split(".")[3])    # layers.{rg}.blocks.{b}.
        if (rg % 2 == 0 and b > 0 and (b - 2) % 4 == 0) or (rg % 2 == 1 and b % 4 == 0):
            prefix = name[:-len("attns.0.rpe_biases")]
            nw = (train_size // s0) * (train_size // s1)
            out[prefix + "attn_mask_0"] = torch.zeros(nw, s0 * s1, s0 * s1)
            out[prefix + "attn_mask_1"] = torch.zeros(nw, s0 * s1, s0 * s1)
    return out


# ---- key layout ------------------------------------------------------------------------------------------

def test_swinir_keys_are_the_originals():
    assert list(swin_sd(SWINIR_CONFIGS["classical_x2"])) == without_buffers(SWINIR_CLASSICAL_KEYS)
    body = [k for k in without_buffers(SWINIR_CLASSICAL_KEYS)[:-10]]
    assert list(swin_sd(SWINIR_CONFIGS["lightweight_x3"])) == body + ["norm.weight", "norm.bias",
                                                                       "conv_after_body.weight",
                                                                       "conv_after_body.bias"] + SWINIR_LIGHT_TAIL
    real = [k for k in body if not k.startswith(("layers.0.conv.", "layers.1.conv."))]
    real = (real[:real.index("layers.1.residual_group.blocks.0.norm1.weight")]
            + [k.format(p="layers.0.conv") for k in THREE_CONV]
            + real[real.index("layers.1.residual_group.blocks.0.norm1.weight"):]
            + [k.format(p="layers.1.conv") for k in THREE_CONV])
    real += ["norm.weight", "norm.bias"] + [k.format(p="conv_after_body") for k in THREE_CONV] + SWINIR_REAL_TAIL
    assert list(swin_sd(SWINIR_CONFIGS["realworld_x4"])) == real


def test_dat_keys_are_the_originals():
    assert list(dat_sd(DAT_CONFIGS["x2"])) == without_buffers(DAT_X2_KEYS)
    keys = list(dat_sd(DAT_CONFIGS["x4"]))
    assert [k.format(b="layers.0.blocks.2") for k in without_buffers(DAT_SPATIAL_SHIFTED)] == \
        [k for k in keys if k.startswith("layers.0.blocks.2.")]
    assert keys[-14:] == ([k.format(p="conv_after_body") for k in THREE_CONV]
                          + ["conv_before_upsample.0.weight", "conv_before_upsample.0.bias", "upsample.0.weight",
                             "upsample.0.bias", "upsample.2.weight", "upsample.2.bias", "conv_last.weight",
                             "conv_last.bias"])
    assert list(dat_sd(DAT_CONFIGS["light_x3"]))[-2:] == ["upsample.0.weight", "upsample.0.bias"]


# ---- detection, loading, forward -------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(SWINIR_CONFIGS))
def test_swinir_detect_load_run(name):
    cfg = SWINIR_CONFIGS[name]
    sd = with_swin_buffers(swin_sd(cfg))
    assert swinir.match(sd) and not dat.match(sd)
    info = upscaler_nets.identify(sd)
    assert (info.arch, info.scale, info.in_channels, info.out_channels, info.half) == \
        ("SwinIR", cfg["upscale"], 3, 3, True)
    assert info.params == cfg
    net, info2 = upscaler_nets.load(sd)
    assert info2 == info and not net.training
    _check_forward(net, cfg["upscale"])
    plain, _ = upscaler_nets.load(swin_sd(cfg))          # the same weights without the buffers
    x = torch.rand(1, 3, 13, 10)
    with torch.no_grad():
        torch.testing.assert_close(plain(x), net(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", sorted(DAT_CONFIGS))
def test_dat_detect_load_run(name):
    cfg = DAT_CONFIGS[name]
    sd = with_dat_buffers(dat_sd(cfg), cfg["split_size"])
    assert dat.match(sd) and not swinir.match(sd)
    info = upscaler_nets.identify(sd)
    assert (info.arch, info.scale, info.in_channels, info.half) == ("DAT", cfg["upscale"], 3, False)
    expect = dict(cfg, num_feat=64 if cfg["upsampler"] == "pixelshuffledirect" else cfg["num_feat"])
    assert info.params == expect
    net, _ = upscaler_nets.load(sd)
    assert not net.training
    _check_forward(net, cfg["upscale"])


def _check_forward(net, scale):
    x = torch.rand(2, 3, 13, 10)
    with torch.no_grad():
        y1, y2 = net(x), net(x)
        single = net(x[1:])
    assert y1.shape == (2, 3, 13 * scale, 10 * scale) and y1.dtype == torch.float32
    assert torch.isfinite(y1).all()
    assert torch.equal(y1, y2)
    torch.testing.assert_close(single, y1[1:], rtol=1e-4, atol=1e-5)   # pictures in a batch do not mix


def test_a_missing_key_raises():
    cases = [(with_swin_buffers(swin_sd(SWINIR_CONFIGS["classical_x2"])),
              "layers.0.residual_group.blocks.0.mlp.fc1.weight"),     # one describe() reads
             (with_dat_buffers(dat_sd(DAT_CONFIGS["x2"]), [2, 4]), "layers.0.blocks.0.ffn.fc1.weight")]
    for sd, read_key in cases:
        for key in ("layers.1.conv.bias", "conv_last.weight", read_key):
            assert key in sd
            broken = {k: v for k, v in sd.items() if k != key}
            with pytest.raises((RuntimeError, UnsupportedModel)):
                upscaler_nets.load(broken)
        extra = dict(sd, **{"layers.0.extra.weight": torch.zeros(1)})
        with pytest.raises((RuntimeError, UnsupportedModel)):
            upscaler_nets.load(extra)


def test_buffers_of_another_window_are_refused():
    sd = with_swin_buffers(swin_sd(SWINIR_CONFIGS["classical_x2"]))
    sd["layers.0.residual_group.blocks.0.attn.relative_position_index"] = original_rel_index(8, 8)
    with pytest.raises(UnsupportedModel):
        upscaler_nets.load(sd)


def test_swinir_refusals():
    sd = swin_sd(dict(SWIN_BASE, upscale=2, upsampler="pixelshuffle"))
    denoise = {k: v for k, v in sd.items() if not k.startswith(("conv_before_upsample", "upsample"))}
    denoise["conv_last.weight"] = torch.zeros(3, 12, 3, 3)
    with pytest.raises(UnsupportedModel, match="scale 1"):
        upscaler_nets.identify(denoise)
    swin2sr = dict(sd, **{"layers.0.residual_group.blocks.0.attn.logit_scale": torch.zeros(2, 1, 1)})
    with pytest.raises(UnsupportedModel, match="Swin2SR"):
        upscaler_nets.identify(swin2sr)


def test_dat_split_size_from_buffers_or_default():
    assert dat.split_size({}) == dat.DEFAULT_SPLIT == (8, 32)
    idx = {"layers.0.blocks.0.attn.attns.0.relative_position_index": torch.zeros(128, 128, dtype=torch.long)}
    assert dat.split_size(idx) == (8, 16)        # DAT-S
    rpe = {"layers.0.blocks.0.attn.attns.0.rpe_biases": torch.tensor([[-7.0, -31.0], [7.0, 31.0]])}
    assert dat.split_size(rpe) == (8, 32)


def test_matchers_do_not_fire_on_the_cnn_families():
    esrgan_new = {"conv_first.weight": torch.zeros(64, 3, 3, 3), "body.0.rdb1.conv1.weight": torch.zeros(32, 64, 3, 3),
                  "conv_body.weight": torch.zeros(64, 64, 3, 3), "conv_up1.weight": torch.zeros(64, 64, 3, 3)}
    esrgan_old = {"model.0.weight": torch.zeros(64, 3, 3, 3), "model.1.sub.0.RDB1.conv1.0.weight": torch.zeros(1)}
    srvgg = {"body.0.weight": torch.zeros(64, 3, 3, 3), "body.0.bias": torch.zeros(64)}
    for sd in (esrgan_new, esrgan_old, srvgg):
        assert not swinir.match(sd) and not dat.match(sd)
    assert upscaler_nets.identify(swin_sd(SWINIR_CONFIGS["classical_x2"])).arch == "SwinIR"


# ---- one Swin block, recomputed with plain tensor operations --------------------------------------------

def plain_swin_block(blk, x, h, w, ws, shift, heads):
    """The original SwinTransformerBlock's forward, written out: norm, cyclic shift, window partition,
    multi-head attention with the relative position bias (and the shifted-window mask), merge, unshift, MLP."""
    sdict = {k: v for k, v in blk.state_dict().items()}
    b, _, c = x.shape
    t = F.layer_norm(x, (c,), sdict["norm1.weight"], sdict["norm1.bias"]).reshape(b, h, w, c)
    t = torch.roll(t, (-shift, -shift), (1, 2))
    windows = [t[:, i:i + ws, j:j + ws].reshape(b, ws * ws, c) for i in range(0, h, ws) for j in range(0, w, ws)]
    table = sdict["attn.relative_position_bias_table"]
    coords = [(y, z) for y in range(ws) for z in range(ws)]
    bias = torch.stack([torch.stack([table[(p[0] - q[0] + ws - 1) * (2 * ws - 1) + p[1] - q[1] + ws - 1]
                                     for q in coords]) for p in coords]).permute(2, 0, 1)     # heads, N, N

    def region(i, n):
        return 0 if i < n - ws else (1 if i < n - shift else 2)

    out = torch.zeros_like(t)
    for wi, win in enumerate(windows):
        i0, j0 = (wi // (w // ws)) * ws, (wi % (w // ws)) * ws
        labels = torch.tensor([region(i0 + y, h) * 3 + region(j0 + z, w) for y, z in coords])
        mask = torch.where(labels[:, None] == labels[None, :], 0.0, -100.0) if shift else 0.0
        qkv = win @ sdict["attn.qkv.weight"].T + sdict["attn.qkv.bias"]
        q, k, v = (qkv[..., n * c:(n + 1) * c].reshape(b, -1, heads, c // heads).transpose(1, 2) for n in range(3))
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(c // heads) + bias + mask, dim=-1)
        o = (att @ v).transpose(1, 2).reshape(b, -1, c) @ sdict["attn.proj.weight"].T + sdict["attn.proj.bias"]
        out[:, i0:i0 + ws, j0:j0 + ws] = o.reshape(b, ws, ws, c)
    x = x + torch.roll(out, (shift, shift), (1, 2)).reshape(b, h * w, c)
    t = F.layer_norm(x, (c,), sdict["norm2.weight"], sdict["norm2.bias"])
    t = F.gelu(t @ sdict["mlp.fc1.weight"].T + sdict["mlp.fc1.bias"]) @ sdict["mlp.fc2.weight"].T
    return x + t + sdict["mlp.fc2.bias"]


@pytest.mark.parametrize("shift", [0, 2])
def test_swin_block_equals_plain_computation(shift):
    torch.manual_seed(1)
    dim, heads, ws, h, w = 8, 2, 4, 8, 12
    blk = randomize(swinir.SwinTransformerBlock(dim, heads, ws, shift, 16), seed=3)
    with torch.no_grad():
        blk.attn.relative_position_bias_table.normal_(0, 1.0)   # a bias that matters
        x = torch.randn(2, h * w, dim)
        got = blk(x, (h, w))
        want = plain_swin_block(blk, x, h, w, ws, shift, heads)
    assert (got - want).abs().max().item() < 1e-5
