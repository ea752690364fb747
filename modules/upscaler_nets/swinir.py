"""SwinIR (image restoration with a Swin Transformer), the network of the published SwinIR upscalers:
classical SR ('pixelshuffle'), lightweight SR ('pixelshuffledirect') and real-world SR ('nearest+conv', e.g.
``003_realSR_BSRGAN_DFOWMFC_s64w8_SwinIR-L_x4_GAN.pth``, A1111's "SwinIR 4x").

Key layout (as the original ``network_swinir.py``): ``conv_first``, ``patch_embed.norm``,
``layers.{i}.residual_group.blocks.{j}.{norm1, attn.{relative_position_bias_table, qkv, proj}, norm2,
mlp.{fc1, fc2}}``, ``layers.{i}.conv`` ('1conv') or ``layers.{i}.conv.{0,2,4}`` ('3conv'), ``norm``,
``conv_after_body``, then the reconstruction: ``conv_before_upsample.0``, ``upsample.{0,2,..}``,
``conv_last`` / ``upsample.0`` alone / ``conv_up1``, ``conv_up2``, ``conv_hr``, ``conv_last``.

The buffers ``attn.relative_position_index`` and ``attn_mask`` follow from the window size (and, for the
mask, from the training picture size); files with or without them load, and they are recomputed here for
the size of each input.  Stochastic depth and dropout only act in training and are left out.
"""
from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F
from torch import nn

from modules.upscaler_nets import ArchInfo, UnsupportedModel, with_keys_checked

RGB_MEAN = (0.4488, 0.4371, 0.4040)   # DIV2K mean the published models subtract (3-channel models only)
IMG_RANGE = 1.0                       # every published SwinIR / DAT model uses 1.0 (not in the weights)
MASK_VALUE = -100.0                   # the shifted-window mask adds this between tokens of different regions


# ---- windows -----------------------------------------------------------------------------------------------

def window_partition(x: torch.Tensor, wh: int, ww: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * H/wh * W/ww, wh * ww, C), windows in row-major order of the picture."""
    b, h, w, c = x.shape
    x = x.reshape(b, h // wh, wh, w // ww, ww, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, wh * ww, c)


def window_merge(windows: torch.Tensor, wh: int, ww: int, h: int, w: int) -> torch.Tensor:
    """The inverse of ``window_partition``: (B * nW, wh * ww, C) -> (B, H, W, C)."""
    c = windows.shape[-1]
    x = windows.reshape(-1, h // wh, w // ww, wh, ww, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, h, w, c)


def relative_position_index(wh: int, ww: int) -> torch.Tensor:
    """(wh*ww, wh*ww) index into the (2wh-1)*(2ww-1) bias table of the offset between two window tokens."""
    ys, xs = torch.meshgrid(torch.arange(wh), torch.arange(ww), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    dy = ys[:, None] - ys[None, :] + (wh - 1)
    dx = xs[:, None] - xs[None, :] + (ww - 1)
    return dy * (2 * ww - 1) + dx


def _region_labels(n: int, win: int, shift: int) -> torch.Tensor:
    """Along one axis of the shifted picture: 0 / 1 / 2 for the rows before the last window, the last
    window's part that stays, and the part rolled in from the other side."""
    lab = torch.zeros(n)
    lab[n - win:n - shift] = 1
    lab[n - shift:] = 2
    return lab


def shifted_window_mask(h: int, w: int, wh: int, ww: int, sh: int, sw: int) -> torch.Tensor:
    """(nW, N, N) additive mask of the shifted windows: 0 inside a region, MASK_VALUE across regions."""
    lab = _region_labels(h, wh, sh)[:, None] * 3 + _region_labels(w, ww, sw)[None, :]
    win = window_partition(lab[None, :, :, None], wh, ww).squeeze(-1)   # nW, N
    diff = win[:, None, :] - win[:, :, None]
    return torch.where(diff != 0, torch.tensor(MASK_VALUE), torch.tensor(0.0))


class MaskCache:
    """The last shifted-window mask, per picture size / device / dtype (tiles mostly share a size)."""

    def __init__(self, make):
        self.make, self.key, self.value = make, None, None

    def get(self, h: int, w: int, like: torch.Tensor) -> torch.Tensor:
        key = (h, w, like.device, like.dtype)
        if key != self.key:
            self.key, self.value = key, self.make(h, w).to(device=like.device, dtype=like.dtype)
        return self.value


def windowed_attention(q, k, v, bias, mask=None):
    """Attention of (B*nW, heads, N, d) windows with a (heads, N, N) position bias and an optional (nW, N, N)
    window mask; q is not yet scaled."""
    bw, heads, n, d = q.shape
    if mask is None:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias.unsqueeze(0).to(q.dtype))
    nw = mask.shape[0]
    full = (bias.unsqueeze(0) + mask.unsqueeze(1)).reshape(1, nw * heads, n, n).to(q.dtype)
    q, k, v = (t.reshape(bw // nw, nw * heads, n, d) for t in (q, k, v))
    return F.scaled_dot_product_attention(q, k, v, attn_mask=full).reshape(bw, heads, n, d)


# ---- the Swin blocks ---------------------------------------------------------------------------------------

class WindowAttention(nn.Module):
    def __init__(self, dim: int, window_size: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        self.window_size, self.num_heads = window_size, num_heads
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(window_size, window_size),
                             persistent=False)
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def position_bias(self) -> torch.Tensor:
        n = self.window_size ** 2
        bias = self.relative_position_bias_table[self.relative_position_index.reshape(-1)]
        return bias.reshape(n, n, -1).permute(2, 0, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B*nW, N, C) windows."""
        bw, n, c = x.shape
        qkv = self.qkv(x).reshape(bw, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        out = windowed_attention(qkv[0], qkv[1], qkv[2], self.position_bias(), mask)
        return self.proj(out.transpose(1, 2).reshape(bw, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class SwinTransformerBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, window_size: int, shift: int, mlp_hidden: int,
                 qkv_bias: bool = True):
        super().__init__()
        self.window_size, self.shift = window_size, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window_size, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, mlp_hidden)
        ws = window_size
        self.masks = MaskCache(lambda h, w: shifted_window_mask(h, w, ws, ws, shift, shift))

    def attention(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """The (shifted) window attention of the normalised tokens x: (B, H*W, C)."""
        b, _, c = x.shape
        ws, s = self.window_size, self.shift
        x = x.reshape(b, h, w, c)
        if s:
            x = torch.roll(x, shifts=(-s, -s), dims=(1, 2))
        mask = self.masks.get(h, w, x) if s else None
        x = window_merge(self.attn(window_partition(x, ws, ws), mask), ws, ws, h, w)
        if s:
            x = torch.roll(x, shifts=(s, s), dims=(1, 2))
        return x.reshape(b, h * w, c)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        x = x + self.attention(self.norm1(x), *size)
        return x + self.mlp(self.norm2(x))


class ResidualGroup(nn.Module):
    """The original's BasicLayer without a downsampling layer: the blocks only."""

    def __init__(self, dim, depth, num_heads, window_size, mlp_hidden, qkv_bias):
        super().__init__()
        self.blocks = nn.ModuleList([
            SwinTransformerBlock(dim, num_heads, window_size, 0 if i % 2 == 0 else window_size // 2,
                                 mlp_hidden, qkv_bias)
            for i in range(depth)])

    def forward(self, x, size):
        for blk in self.blocks:
            x = blk(x, size)
        return x


def resi_conv(dim: int, kind: str) -> nn.Module:
    """The convolution at the end of a residual group / of the body: one 3x3 conv, or 3x3-1x1-3x3 narrowed
    to dim/4 ('3conv', the large real-world models)."""
    if kind == "1conv":
        return nn.Conv2d(dim, dim, 3, 1, 1)
    return nn.Sequential(nn.Conv2d(dim, dim // 4, 3, 1, 1), nn.LeakyReLU(0.2, inplace=True),
                         nn.Conv2d(dim // 4, dim // 4, 1, 1, 0), nn.LeakyReLU(0.2, inplace=True),
                         nn.Conv2d(dim // 4, dim, 3, 1, 1))


def to_tokens(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(2).transpose(1, 2)


def to_image(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], h, w)


class RSTB(nn.Module):
    """Residual Swin Transformer Block: the group, a conv on the picture, and the skip connection."""

    def __init__(self, dim, depth, num_heads, window_size, mlp_hidden, qkv_bias, resi_connection):
        super().__init__()
        self.residual_group = ResidualGroup(dim, depth, num_heads, window_size, mlp_hidden, qkv_bias)
        self.conv = resi_conv(dim, resi_connection)

    def forward(self, x, size):
        return to_tokens(self.conv(to_image(self.residual_group(x, size), *size))) + x


class PatchEmbed(nn.Module):
    """Patch size 1: the picture as tokens, layer-normalised where the model has ``patch_embed.norm``."""

    def __init__(self, dim: int, norm: bool):
        super().__init__()
        self.norm = nn.LayerNorm(dim) if norm else None

    def forward(self, x):
        x = to_tokens(x)
        return self.norm(x) if self.norm is not None else x


# ---- reconstruction ----------------------------------------------------------------------------------------

def upsample(scale: int, num_feat: int) -> nn.Sequential:
    """conv + pixel shuffle per factor 2 (scale 2^n), or one conv + pixel shuffle 3 (scale 3)."""
    layers: list[nn.Module] = []
    if scale == 3:
        return nn.Sequential(nn.Conv2d(num_feat, 9 * num_feat, 3, 1, 1), nn.PixelShuffle(3))
    for _ in range(int(math.log2(scale))):
        layers += [nn.Conv2d(num_feat, 4 * num_feat, 3, 1, 1), nn.PixelShuffle(2)]
    return nn.Sequential(*layers)


def upsample_one_step(scale: int, num_feat: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(num_feat, scale * scale * out_ch, 3, 1, 1), nn.PixelShuffle(scale))


def add_reconstruction(net: nn.Module, kind: str, dim: int, num_feat: int, scale: int, out_ch: int):
    """The upsampling tail under the original names ('pixelshuffle', 'pixelshuffledirect', 'nearest+conv')."""
    if kind == "pixelshuffledirect":
        net.upsample = upsample_one_step(scale, dim, out_ch)
        return
    net.conv_before_upsample = nn.Sequential(nn.Conv2d(dim, num_feat, 3, 1, 1), nn.LeakyReLU(inplace=True))
    if kind == "pixelshuffle":
        net.upsample = upsample(scale, num_feat)
    else:
        for k in range(1, int(math.log2(scale)) + 1):
            setattr(net, f"conv_up{k}", nn.Conv2d(num_feat, num_feat, 3, 1, 1))
        net.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
    net.conv_last = nn.Conv2d(num_feat, out_ch, 3, 1, 1)


def reconstruct(net: nn.Module, kind: str, scale: int, x: torch.Tensor) -> torch.Tensor:
    if kind == "pixelshuffledirect":
        return net.upsample(x)
    x = net.conv_before_upsample(x)
    if kind == "pixelshuffle":
        return net.conv_last(net.upsample(x))
    for k in range(1, int(math.log2(scale)) + 1):
        conv = getattr(net, f"conv_up{k}")
        x = F.leaky_relu(conv(F.interpolate(x, scale_factor=2, mode="nearest")), 0.2)
    return net.conv_last(F.leaky_relu(net.conv_hr(x), 0.2))


def mean_buffer(in_chans: int) -> torch.Tensor:
    return torch.tensor(RGB_MEAN).view(1, 3, 1, 1) if in_chans == 3 else torch.zeros(1, 1, 1, 1)


def pad_to_multiple(x: torch.Tensor, m: int) -> torch.Tensor:
    """Bottom / right padding to a multiple of ``m``, by reflection as the original (repetition where the
    picture is too small to reflect)."""
    ph, pw = -x.shape[-2] % m, -x.shape[-1] % m
    if not (ph or pw):
        return x
    mode = "reflect" if ph < x.shape[-2] and pw < x.shape[-1] else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


# ---- the network -------------------------------------------------------------------------------------------

class SwinIR(nn.Module):
    def __init__(self, *, in_chans=3, embed_dim=96, depths=(6, 6, 6, 6), num_heads=(6, 6, 6, 6), window_size=8,
                 mlp_ratio=2.0, qkv_bias=True, patch_norm=True, upscale=2, upsampler="pixelshuffle",
                 resi_connection="1conv", num_feat=64, img_range=IMG_RANGE):
        super().__init__()
        self.window_size, self.upscale, self.upsampler, self.img_range = window_size, upscale, upsampler, img_range
        self.register_buffer("mean", mean_buffer(in_chans), persistent=False)
        self.conv_first = nn.Conv2d(in_chans, embed_dim, 3, 1, 1)
        self.patch_embed = PatchEmbed(embed_dim, patch_norm)
        hidden = round(embed_dim * mlp_ratio)
        self.layers = nn.ModuleList([RSTB(embed_dim, d, h, window_size, hidden, qkv_bias, resi_connection)
                                     for d, h in zip(depths, num_heads)])
        self.norm = nn.LayerNorm(embed_dim)
        self.conv_after_body = resi_conv(embed_dim, resi_connection)
        add_reconstruction(self, upsampler, embed_dim, num_feat, upscale, in_chans)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x, size)
        return to_image(self.norm(x), *size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        x = pad_to_multiple(x, self.window_size)
        mean = self.mean.to(x.dtype)
        x = (x - mean) * self.img_range
        x = self.conv_first(x)
        x = self.conv_after_body(self.forward_features(x)) + x
        x = reconstruct(self, self.upsampler, self.upscale, x)
        x = x / self.img_range + mean
        return x[..., :h * self.upscale, :w * self.upscale]


# ---- reading the weights -----------------------------------------------------------------------------------

_BLOCK = re.compile(r"layers\.(\d+)\.residual_group\.blocks\.(\d+)\.(.+)$")
_BLOCK_PARTS = {"norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias", "attn.relative_position_bias_table",
                "attn.relative_position_index", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight",
                "attn.proj.bias", "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias", "attn_mask"}
_DERIVED = (".attn.relative_position_index", ".attn_mask")   # buffers recomputed here
_FIRST_TABLE = "layers.0.residual_group.blocks.0.attn.relative_position_bias_table"


def match(sd: dict) -> bool:
    """SwinIR's key layout (also Swin2SR's and HAT's, which share it and are refused by describe)."""
    return "conv_first.weight" in sd and any(
        k.startswith("layers.0.residual_group.blocks.0.attn.") for k in sd)


def _refuse_relatives(sd: dict) -> None:
    if any(".attn.cpb_mlp." in k or k.endswith(".attn.logit_scale") for k in sd):
        raise UnsupportedModel("a Swin2SR model (SwinV2 attention); only SwinIR is written here")
    if any(".conv_block.cab." in k or ".overlap_attn." in k for k in sd):
        raise UnsupportedModel("a HAT model (hybrid attention); only SwinIR is written here")
    odd = sorted({m.group(3) for m in map(_BLOCK.match, sd) if m} - _BLOCK_PARTS)
    if odd:
        raise UnsupportedModel(f"a SwinIR-like model with blocks this SwinIR has not ({', '.join(odd[:3])})")
    if "absolute_pos_embed" in sd:
        raise UnsupportedModel("SwinIR with an absolute position embedding (works at its training size only)")


def block_layout(sd: dict, pattern: re.Pattern = _BLOCK) -> list[int]:
    """Blocks per layer (``layers.{i}...blocks.{j}``), checked to be numbered without gaps."""
    found: dict[int, set[int]] = {}
    for m in map(pattern.match, sd):
        if m:
            found.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    if not found or sorted(found) != list(range(len(found))):
        raise UnsupportedModel("the residual groups are not numbered 0, 1, 2, ...")
    if any(sorted(b) != list(range(len(b))) for b in found.values()):
        raise UnsupportedModel("the blocks of a residual group are not numbered 0, 1, 2, ...")
    return [len(found[i]) for i in range(len(found))]


def window_from_table(n: int) -> int:
    """w from the bias table's (2w-1)^2 rows."""
    side = math.isqrt(n)
    if side * side != n or side % 2 == 0:
        raise UnsupportedModel(f"a relative position table of {n} rows is not of a square window")
    return (side + 1) // 2


def resi_kind(sd: dict, prefix: str) -> str:
    if f"{prefix}.weight" in sd:
        return "1conv"
    if f"{prefix}.0.weight" in sd and f"{prefix}.4.weight" in sd:
        return "3conv"
    raise UnsupportedModel(f"no {prefix} convolution of a known kind")


def pixelshuffle_scale(sd: dict) -> int:
    """Scale of ``upsample.{0,2,..}``: conv to 4x the channels per 2x, or 9x the channels for 3x."""
    scale, i = 1, 0
    while f"upsample.{i}.weight" in sd:
        w = sd[f"upsample.{i}.weight"]
        ratio = w.shape[0] // w.shape[1]
        if ratio not in (4, 9) or w.shape[0] != ratio * w.shape[1]:
            raise UnsupportedModel(f"upsample.{i} maps {w.shape[1]} to {w.shape[0]} channels (not a pixel shuffle)")
        scale, i = scale * (2 if ratio == 4 else 3), i + 2
    if scale == 1 or (scale % 3 == 0 and scale != 3):
        raise UnsupportedModel("the upsampling layers give no supported scale (2^n or 3)")
    return scale


def direct_scale(sd: dict, out_ch: int) -> int:
    n = sd["upsample.0.weight"].shape[0] // out_ch
    s = math.isqrt(n)
    if s * s != n or s * s * out_ch != sd["upsample.0.weight"].shape[0] or s < 2:
        raise UnsupportedModel("upsample.0 has no scale^2 * channels outputs")
    return s


def reconstruction(sd: dict, in_ch: int) -> tuple[str, int, int]:
    """(upsampler, scale, num_feat) from the tail's keys and shapes."""
    feat = sd["conv_before_upsample.0.weight"].shape[0] if "conv_before_upsample.0.weight" in sd else 64
    if "conv_before_upsample.0.weight" in sd and "upsample.0.weight" in sd:
        return "pixelshuffle", pixelshuffle_scale(sd), feat
    if "conv_before_upsample.0.weight" in sd and "conv_up1.weight" in sd:
        n = 1
        while f"conv_up{n + 1}.weight" in sd:
            n += 1
        return "nearest+conv", 2 ** n, feat
    if "upsample.0.weight" in sd:
        return "pixelshuffledirect", direct_scale(sd, in_ch), feat
    if "conv_last.weight" in sd:
        raise UnsupportedModel("not an upscaler (scale 1 restoration model: denoising / JPEG artifacts)")
    raise UnsupportedModel("no upsampling layers of a known kind")


def describe(sd: dict) -> ArchInfo:
    return with_keys_checked("SwinIR", _describe, sd)


def _describe(sd: dict) -> ArchInfo:
    _refuse_relatives(sd)
    if _FIRST_TABLE not in sd:
        raise UnsupportedModel("SwinIR without a relative position bias table")
    embed_dim, in_ch = sd["conv_first.weight"].shape[:2]
    depths = block_layout(sd)
    heads = [sd[f"layers.{i}.residual_group.blocks.0.attn.relative_position_bias_table"].shape[1]
             for i in range(len(depths))]
    window = window_from_table(sd[_FIRST_TABLE].shape[0])
    hidden = sd["layers.0.residual_group.blocks.0.mlp.fc1.weight"].shape[0]
    upsampler, scale, feat = reconstruction(sd, in_ch)
    params = dict(in_chans=int(in_ch), embed_dim=int(embed_dim), depths=depths, num_heads=[int(h) for h in heads],
                  window_size=window, mlp_ratio=hidden / embed_dim,
                  qkv_bias="layers.0.residual_group.blocks.0.attn.qkv.bias" in sd,
                  patch_norm="patch_embed.norm.weight" in sd, upscale=scale, upsampler=upsampler,
                  resi_connection=resi_kind(sd, "conv_after_body"), num_feat=int(feat))
    return ArchInfo("SwinIR", scale, int(in_ch), int(in_ch), half=True, params=params)


def strip_derived(sd: dict, net: nn.Module, derived: tuple[str, ...]) -> dict:
    """``sd`` without the buffers the network recomputes, after checking those of fixed shape agree."""
    own = dict(net.named_buffers())
    out = {}
    for k, v in sd.items():
        if not k.endswith(derived):
            out[k] = v
        elif k in own and tuple(own[k].shape) != tuple(v.shape):
            raise UnsupportedModel(f"{k} has shape {tuple(v.shape)}, the network's {tuple(own[k].shape)}")
    return out


def build(sd: dict, info: ArchInfo) -> nn.Module:
    net = SwinIR(**info.params)
    net.load_state_dict(strip_derived(sd, net, _DERIVED), strict=True)
    return net.float().eval()
