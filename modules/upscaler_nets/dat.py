"""DAT, the Dual Aggregation Transformer (DAT, DAT-S, DAT-2 and DAT-light; A1111's "DAT x2/x3/x4").

Residual groups of blocks that alternate a spatial window attention (even blocks: half the channels in
``split_size[0] x split_size[1]`` windows, the other half in the transposed windows, with a dynamic position
bias and, in some blocks, shifted windows) and a channel attention (odd blocks), each joined with a
depth-wise convolution branch (the adaptive interaction module), then a spatial-gate feed-forward network.

Key layout (as the original ``dat_arch.py``): ``conv_first``, ``before_RG.1`` (layer norm),
``layers.{i}.blocks.{j}.{norm1, attn.*, ffn.{fc1, sg.{norm, conv}, fc2}, norm2}``, ``layers.{i}.conv``
(or ``.conv.{0,2,4}``), ``norm``, ``conv_after_body``, then ``conv_before_upsample.0`` + ``upsample.{0,2,..}`` +
``conv_last`` ('pixelshuffle') or ``upsample.0`` alone ('pixelshuffledirect', DAT-light).  The buffers
``attns.{0,1}.rpe_biases`` / ``relative_position_index`` and ``attn_mask_{0,1}`` follow from the split size
(and the training size); files with or without them load, and they are recomputed here.

The network takes any picture size: each spatial attention pads its tokens (with zeros, after the qkv
projection, exactly as the original) to a multiple of the larger split size and crops back.
"""
from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn

from modules.upscaler_nets import ArchInfo, UnsupportedModel, with_keys_checked
from modules.upscaler_nets.swinir import (IMG_RANGE, MaskCache, block_layout, direct_scale, mean_buffer,
                                          pixelshuffle_scale, relative_position_index, resi_conv, resi_kind,
                                          shifted_window_mask, strip_derived, to_image, to_tokens, upsample,
                                          upsample_one_step, window_merge, window_partition, windowed_attention)

# What the weights cannot say: a file without the rpe_biases / relative_position_index / attn_mask buffers
# does not tell DAT-S ([8, 16]) from DAT-2 ([8, 32]); every other published variant uses [8, 32].
DEFAULT_SPLIT = (8, 32)


def shifted(rg_idx: int, b_idx: int) -> bool:
    """Whether block ``b_idx`` of group ``rg_idx`` shifts its windows: blocks 2, 6, 10, ... of even groups and
    0, 4, 8, ... of odd groups (always spatial blocks)."""
    if rg_idx % 2 == 0:
        return b_idx > 0 and (b_idx - 2) % 4 == 0
    return b_idx % 4 == 0


def _bn_conv(cin: int, cout: int, k: int = 1, groups: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, 1, k // 2, groups=groups), nn.BatchNorm2d(cout), nn.GELU()]


def add_interaction(m: nn.Module, dim: int) -> None:
    """The convolution branch and the two maps of the adaptive interaction module (module names as the
    original: ``dwconv``, ``channel_interaction``, ``spatial_interaction``)."""
    m.dwconv = nn.Sequential(*_bn_conv(dim, dim, 3, groups=dim))
    m.channel_interaction = nn.Sequential(nn.AdaptiveAvgPool2d(1), *_bn_conv(dim, dim // 8),
                                          nn.Conv2d(dim // 8, dim, 1))
    m.spatial_interaction = nn.Sequential(*_bn_conv(dim, dim // 16), nn.Conv2d(dim // 16, 1, 1))


def _tokens_to_image(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], h, w)


class DynamicPosBias(nn.Module):
    """The relative position bias of a window, computed by a small MLP from the (dy, dx) offsets."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.pos_dim = dim // 4
        self.pos_proj = nn.Linear(2, self.pos_dim)
        self.pos1 = self._stage(self.pos_dim)
        self.pos2 = self._stage(self.pos_dim)
        self.pos3 = self._stage(num_heads)

    def _stage(self, out: int) -> nn.Sequential:
        return nn.Sequential(nn.LayerNorm(self.pos_dim), nn.ReLU(inplace=True), nn.Linear(self.pos_dim, out))

    def forward(self, offsets):
        return self.pos3(self.pos2(self.pos1(self.pos_proj(offsets))))


def offset_table(wh: int, ww: int) -> torch.Tensor:
    """((2wh-1)*(2ww-1), 2) float (dy, dx) offsets, dy major (the original's ``rpe_biases``)."""
    dy, dx = torch.meshgrid(torch.arange(1 - wh, wh), torch.arange(1 - ww, ww), indexing="ij")
    return torch.stack([dy.flatten(), dx.flatten()], 1).float()


class SpatialAttention(nn.Module):
    """Attention inside (wh, ww) windows for one half of the channels (qkv computed outside)."""

    def __init__(self, dim: int, num_heads: int, wh: int, ww: int):
        super().__init__()
        self.num_heads, self.wh, self.ww = num_heads, wh, ww
        self.pos = DynamicPosBias(dim // 4, num_heads)
        self.register_buffer("rpe_biases", offset_table(wh, ww), persistent=False)
        self.register_buffer("relative_position_index", relative_position_index(wh, ww), persistent=False)

    def _windows(self, t: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """(B, L, C) tokens -> (B*nW, heads, N, C/heads)."""
        win = window_partition(t.reshape(t.shape[0], h, w, -1), self.wh, self.ww)
        return win.reshape(win.shape[0], win.shape[1], self.num_heads, -1).transpose(1, 2)

    def forward(self, qkv: torch.Tensor, h: int, w: int, mask: torch.Tensor | None = None) -> torch.Tensor:
        """qkv: (3, B, H*W, C) -> (B, H, W, C)."""
        q, k, v = (self._windows(t, h, w) for t in qkv)
        n = self.wh * self.ww
        bias = self.pos(self.rpe_biases)[self.relative_position_index.reshape(-1)]
        bias = bias.reshape(n, n, -1).permute(2, 0, 1)
        out = windowed_attention(q, k, v, bias, mask)
        out = out.transpose(1, 2).reshape(out.shape[0], n, -1)
        return window_merge(out, self.wh, self.ww, h, w)


class AxialSpatialAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, split_size, qkv_bias: bool, shift: bool):
        super().__init__()
        s0, s1 = split_size
        self.split, self.shift = (s0, s1), ((s0 // 2, s1 // 2) if shift else None)
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.attns = nn.ModuleList([SpatialAttention(dim // 2, num_heads // 2, s0, s1),
                                    SpatialAttention(dim // 2, num_heads // 2, s1, s0)])
        add_interaction(self, dim)
        if shift:
            h0, h1 = s0 // 2, s1 // 2
            self.masks = [MaskCache(lambda h, w: shifted_window_mask(h, w, s0, s1, h0, h1)),
                          MaskCache(lambda h, w: shifted_window_mask(h, w, s1, s0, h1, h0))]

    def _branch(self, i: int, qkv: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """Window attention of channel half ``i`` of the padded (3, B, H, W, C) qkv -> (B, H, W, C/2)."""
        c = qkv.shape[-1] // 2
        part = qkv[..., i * c:(i + 1) * c]
        if self.shift is None:
            return self.attns[i](part.reshape(3, part.shape[1], h * w, c), h, w)
        sy, sx = self.shift if i == 0 else self.shift[::-1]
        part = torch.roll(part, shifts=(-sy, -sx), dims=(2, 3)).reshape(3, part.shape[1], h * w, c)
        out = self.attns[i](part, h, w, self.masks[i].get(h, w, qkv))
        return torch.roll(out, shifts=(sy, sx), dims=(1, 2))

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, c).permute(2, 0, 1, 3)          # 3, B, L, C
        v = _tokens_to_image(qkv[2], h, w)
        m = max(self.split)
        ph, pw = -h % m, -w % m
        grid = F.pad(qkv.reshape(3, b, h, w, c), (0, 0, 0, pw, 0, ph))      # zeros after the projection
        hp, wp = h + ph, w + pw
        att = torch.cat([self._branch(i, grid, hp, wp)[:, :h, :w] for i in range(2)], -1).reshape(b, n, c)
        conv = self.dwconv(v)
        channel_map = self.channel_interaction(conv).reshape(b, 1, c)
        spatial_map = self.spatial_interaction(_tokens_to_image(att, h, w))
        att = att * torch.sigmoid(channel_map)
        conv = (torch.sigmoid(spatial_map) * conv).flatten(2).transpose(1, 2)
        return self.proj(att + conv)


class AxialChannelAttention(nn.Module):
    """Attention across channels (per head, over normalised token vectors, scaled by a learnt temperature)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool):
        super().__init__()
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        add_interaction(self, dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 4, 1)
        q, k, v = qkv[0], qkv[1], qkv[2]                                     # B, heads, C/heads, L
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        attn = ((q @ k.transpose(-2, -1)) * self.temperature).softmax(dim=-1)
        att = (attn @ v).permute(0, 3, 1, 2).reshape(b, n, c)
        conv = self.dwconv(v.reshape(b, c, h, w))
        spatial_map = self.spatial_interaction(conv).flatten(2).transpose(1, 2)     # B, L, 1
        channel_map = self.channel_interaction(_tokens_to_image(att, h, w))         # B, C, 1, 1
        att = att * torch.sigmoid(spatial_map)
        conv = (conv * torch.sigmoid(channel_map)).flatten(2).transpose(1, 2)
        return self.proj(att + conv)


class SpatialGate(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.conv = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)

    def forward(self, x, h, w):
        x1, x2 = x.chunk(2, dim=-1)
        return x1 * to_tokens(self.conv(_tokens_to_image(self.norm(x2), h, w)))


class SGFN(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.sg = SpatialGate(hidden // 2)
        self.fc2 = nn.Linear(hidden // 2, dim)

    def forward(self, x, h, w):
        return self.fc2(self.sg(self.act(self.fc1(x)), h, w))


class DATB(nn.Module):
    def __init__(self, dim, num_heads, split_size, hidden, qkv_bias, rg_idx, b_idx):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        if b_idx % 2 == 0:
            self.attn = AxialSpatialAttention(dim, num_heads, split_size, qkv_bias, shifted(rg_idx, b_idx))
        else:
            self.attn = AxialChannelAttention(dim, num_heads, qkv_bias)
        self.ffn = SGFN(dim, hidden)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x, size):
        x = x + self.attn(self.norm1(x), *size)
        return x + self.ffn(self.norm2(x), *size)


class ResidualGroup(nn.Module):
    def __init__(self, dim, depth, num_heads, split_size, hidden, qkv_bias, resi_connection, rg_idx):
        super().__init__()
        self.blocks = nn.ModuleList([DATB(dim, num_heads, split_size, hidden, qkv_bias, rg_idx, i)
                                     for i in range(depth)])
        self.conv = resi_conv(dim, resi_connection)

    def forward(self, x, size):
        res = x
        for blk in self.blocks:
            x = blk(x, size)
        return res + to_tokens(self.conv(to_image(x, *size)))


class ToTokens(nn.Module):
    def forward(self, x):
        return to_tokens(x)


class DAT(nn.Module):
    def __init__(self, *, in_chans=3, embed_dim=180, depth=(6,) * 6, num_heads=(6,) * 6, split_size=DEFAULT_SPLIT,
                 expansion_factor=4.0, qkv_bias=True, upscale=2, upsampler="pixelshuffle", resi_connection="1conv",
                 num_feat=64, img_range=IMG_RANGE):
        super().__init__()
        self.upscale, self.upsampler, self.img_range = upscale, upsampler, img_range
        self.register_buffer("mean", mean_buffer(in_chans), persistent=False)
        self.conv_first = nn.Conv2d(in_chans, embed_dim, 3, 1, 1)
        self.before_RG = nn.Sequential(ToTokens(), nn.LayerNorm(embed_dim))
        hidden = round(embed_dim * expansion_factor)
        self.layers = nn.ModuleList([
            ResidualGroup(embed_dim, d, h, tuple(split_size), hidden, qkv_bias, resi_connection, i)
            for i, (d, h) in enumerate(zip(depth, num_heads))])
        self.norm = nn.LayerNorm(embed_dim)
        self.conv_after_body = resi_conv(embed_dim, resi_connection)
        if upsampler == "pixelshuffle":
            self.conv_before_upsample = nn.Sequential(nn.Conv2d(embed_dim, num_feat, 3, 1, 1),
                                                      nn.LeakyReLU(inplace=True))
            self.upsample = upsample(upscale, num_feat)
            self.conv_last = nn.Conv2d(num_feat, in_chans, 3, 1, 1)
        else:
            self.upsample = upsample_one_step(upscale, embed_dim, in_chans)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        size = tuple(x.shape[-2:])
        x = self.before_RG(x)
        for layer in self.layers:
            x = layer(x, size)
        return to_image(self.norm(x), *size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = self.mean.to(x.dtype)
        x = self.conv_first((x - mean) * self.img_range)
        x = self.conv_after_body(self.forward_features(x)) + x
        if self.upsampler == "pixelshuffle":
            x = self.conv_last(self.upsample(self.conv_before_upsample(x)))
        else:
            x = self.upsample(x)
        return x / self.img_range + mean


# ---- reading the weights -----------------------------------------------------------------------------------

_BLOCK = re.compile(r"layers\.(\d+)\.blocks\.(\d+)\.(.+)$")
_DERIVED = (".rpe_biases", ".relative_position_index", ".attn_mask_0", ".attn_mask_1")
_ATTN0 = "layers.0.blocks.0.attn.attns.0."


def match(sd: dict) -> bool:
    return "before_RG.1.weight" in sd and any(k.startswith(_ATTN0) for k in sd)


def _heads(sd: dict, i: int) -> int:
    """Heads of group i: the channel attention's temperature rows, else twice the spatial half's heads."""
    t = sd.get(f"layers.{i}.blocks.1.attn.temperature")
    if t is not None:
        return int(t.shape[0])
    return 2 * int(sd[f"layers.{i}.blocks.0.attn.attns.0.pos.pos3.2.weight"].shape[0])


def split_size(sd: dict) -> tuple[int, int]:
    """From the rpe_biases buffer (its last row is (s0-1, s1-1)), else from the window's token count in
    relative_position_index / attn_mask_0 (s0 = 8 as in every published variant), else DEFAULT_SPLIT."""
    rpe = sd.get(_ATTN0 + "rpe_biases")
    if rpe is not None:
        return int(rpe[-1, 0]) + 1, int(rpe[-1, 1]) + 1
    index = sd.get(_ATTN0 + "relative_position_index")
    masks = [v for k, v in sd.items() if k.endswith(".attn_mask_0")]
    n = index.shape[0] if index is not None else (masks[0].shape[-1] if masks else None)
    if n is None:
        return DEFAULT_SPLIT
    if n % 8:
        raise UnsupportedModel(f"DAT windows of {n} tokens: the split size cannot be told from the weights")
    return 8, n // 8


def _check_blocks(sd: dict, depths: list[int]) -> None:
    for i, d in enumerate(depths):
        for j in range(d):
            want = "attns.0.pos.pos_proj.weight" if j % 2 == 0 else "temperature"
            if f"layers.{i}.blocks.{j}.attn.{want}" not in sd:
                raise UnsupportedModel(f"DAT block layers.{i}.blocks.{j} is not of the alternating kinds")


def reconstruction(sd: dict, in_ch: int) -> tuple[str, int, int]:
    if "conv_before_upsample.0.weight" in sd and "upsample.0.weight" in sd:
        return "pixelshuffle", pixelshuffle_scale(sd), int(sd["conv_before_upsample.0.weight"].shape[0])
    if "upsample.0.weight" in sd:
        return "pixelshuffledirect", direct_scale(sd, in_ch), 64
    raise UnsupportedModel("no upsampling layers of a known kind")


def describe(sd: dict) -> ArchInfo:
    return with_keys_checked("DAT", _describe, sd)


def _describe(sd: dict) -> ArchInfo:
    embed_dim, in_ch = (int(n) for n in sd["conv_first.weight"].shape[:2])
    depths = block_layout(sd, _BLOCK)
    _check_blocks(sd, depths)
    s0, s1 = split_size(sd)
    if max(s0, s1) % min(s0, s1):
        raise UnsupportedModel(f"DAT split size {[s0, s1]}: the smaller does not divide the larger")
    upsampler, scale, feat = reconstruction(sd, in_ch)
    hidden = sd["layers.0.blocks.0.ffn.fc1.weight"].shape[0]
    heads = [_heads(sd, i) for i in range(len(depths))]
    params = dict(in_chans=in_ch, embed_dim=embed_dim, depth=depths, num_heads=heads,
                  split_size=[s0, s1], expansion_factor=hidden / embed_dim,
                  qkv_bias="layers.0.blocks.0.attn.qkv.bias" in sd, upscale=scale, upsampler=upsampler,
                  resi_connection=resi_kind(sd, "conv_after_body"), num_feat=feat)
    # fp16 overflows in DAT's attention in practice: float32 or bfloat16 only
    return ArchInfo("DAT", scale, in_ch, in_ch, half=False, params=params)


def build(sd: dict, info: ArchInfo) -> nn.Module:
    net = DAT(**info.params)
    net.load_state_dict(strip_derived(sd, net, _DERIVED), strict=True)
    return net.float().eval()
