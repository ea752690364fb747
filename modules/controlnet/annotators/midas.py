"""MiDaS v3 DPT-Hybrid: the depth preprocessor ("depth" / depth_midas) and the normal map derived from its
prediction ("normal_map" / normal_midas), from ``dpt_hybrid-midas-501f0c75.pt`` (sub-folder ``midas``).

The network is DPT with timm's ``vit_base_resnet50_384`` backbone, written out here because timm does not
work in this build. Parameter names are those of the published file (a plain state dict):

* ``pretrained.model.*``: the ViT-B/16 hybrid. ``patch_embed.backbone`` is a BiT ResNetV2 without
  pre-activation (weight-standardised convs with TF "SAME" padding, GroupNorm(32); a 7x7/2 stem and
  3 + 4 + 9 bottlenecks), ``patch_embed.proj`` a 1x1 conv 1024 -> 768; then the class token, the
  position embedding of a 24x24 grid (384 px), 12 pre-norm blocks, ``norm`` and the 1000-class ``head``
  (the last two are unused by DPT but are in the file).
* ``pretrained.act_postprocess3/4``: the "project" readout (tokens concatenated with the class token,
  Linear 1536 -> 768, GELU) and the reassemble convs of the taps after blocks 8 and 11; the taps 1 and 2
  are the outputs of ResNet stages 0 and 1 as they are (no parameters).
* ``scratch.*``: the 3x3 convs to 256 channels, four fusion blocks and the depth head.

The extension (annotator/midas) runs the net on the image as ``resize_with_pad`` leaves it (short side
``res``, edge-padded to multiples of 64; no 384 px resize), scaled to [-1, 1], RGB. The position
embedding is resized to the input's grid (bilinear). From the prediction over the padded image it makes
the depth map (min-max normalised, x255, truncated to uint8, HxW) and the normal map (Sobel gradients of
the raw prediction as x and y, 2*pi as z, gradients zeroed where the normalised depth is under the
background threshold thr_a, unit length, x127.5+127.5 as uint8, HxWx3 in x, y, z order); both are then
cut back to the unpadded size.
"""
from __future__ import annotations

import math

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from modules.controlnet import preprocessors
from modules.controlnet.annotators import cached, device, load_state_dict, load_strict

FILE = "dpt_hybrid-midas-501f0c75.pt"
NORMAL_Z = np.pi * 2.0  # the extension's `a`: the z component before the normal is normalised
PATCH = 16  # ViT grid step of the hybrid (the ResNet's stride)
POS_GRID = 24  # 384 / 16: the grid the position embedding was trained for


# ---- the BiT ResNetV2 stem of the hybrid patch embedding --------------------------------------------------

def pad_same(x: torch.Tensor, kernel: int, stride: int, value: float = 0.0) -> torch.Tensor:
    """TF "SAME" padding for this input size: the total goes half before, the odd pixel after."""
    pads = []
    for size in (x.shape[-1], x.shape[-2]):  # F.pad takes the last dim first
        total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads, value=value) if any(pads) else x


class StdConv2dSame(nn.Conv2d):
    """Conv2d with weight standardisation (per output channel, eps 1e-8 as timm's hybrid ViT uses) and TF
    "SAME" padding; no bias."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, eps: float = 1e-8):
        super().__init__(cin, cout, kernel, stride=stride, padding=0, bias=False)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        flat = w.reshape(w.shape[0], -1)
        var, mean = torch.var_mean(flat, dim=1, unbiased=False, keepdim=True)
        w = ((flat - mean) / torch.sqrt(var + self.eps)).reshape_as(w)
        return F.conv2d(pad_same(x, self.kernel_size[0], self.stride[0]), w, None, self.stride)


class GroupNormAct(nn.GroupNorm):
    """GroupNorm(32, eps 1e-5) followed by ReLU unless ``act`` is False."""

    def __init__(self, channels: int, act: bool = True):
        super().__init__(32, channels, eps=1e-5)
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = super().forward(x)
        return F.relu(x) if self.act else x


class MaxPoolSame(nn.Module):
    """3x3/2 max pooling with "SAME" padding (padded with -inf, so the border never wins)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(pad_same(x, 3, 2, value=float("-inf")), 3, 2)


class Downsample(nn.Module):
    """The projection shortcut of a stage's first block: 1x1 std-conv + GroupNorm, no activation."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv = StdConv2dSame(cin, cout, 1, stride)
        self.norm = GroupNormAct(cout, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x))


class Bottleneck(nn.Module):
    """Non-pre-activation bottleneck (1x1, 3x3 with the stride, 1x1 to 4x), ReLU after the residual sum."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        mid = cout // 4
        self.downsample = Downsample(cin, cout, stride) if (stride != 1 or cin != cout) else None
        self.conv1 = StdConv2dSame(cin, mid, 1)
        self.norm1 = GroupNormAct(mid)
        self.conv2 = StdConv2dSame(mid, mid, 3, stride)
        self.norm2 = GroupNormAct(mid)
        self.conv3 = StdConv2dSame(mid, cout, 1)
        self.norm3 = GroupNormAct(cout, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        y = self.norm1(self.conv1(x))
        y = self.norm2(self.conv2(y))
        y = self.norm3(self.conv3(y))
        return F.relu(y + shortcut)


class ResNetStage(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, depth: int):
        super().__init__()
        self.blocks = nn.Sequential(*[Bottleneck(cin if i == 0 else cout, cout, stride if i == 0 else 1)
                                      for i in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


class ResNetV2(nn.Module):
    """The hybrid's backbone: stem (stride 4, 64 ch) and stages of 3, 4, 9 blocks (256, 512, 1024 ch at
    strides 4, 8, 16). ``forward`` returns every stage's output (DPT taps the first two)."""

    def __init__(self, layers=(3, 4, 9), channels=(256, 512, 1024)):
        super().__init__()
        self.stem = nn.Sequential()
        self.stem.add_module("conv", StdConv2dSame(3, 64, 7, 2))
        self.stem.add_module("norm", GroupNormAct(64))
        self.stem.add_module("pool", MaxPoolSame())
        self.stages = nn.Sequential()
        cin = 64
        for i, (depth, cout) in enumerate(zip(layers, channels)):
            self.stages.add_module(str(i), ResNetStage(cin, cout, 1 if i == 0 else 2, depth))
            cin = cout

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        out = []
        for stage in self.stages:
            x = stage(x)
            out.append(x)
        return out


class HybridEmbed(nn.Module):
    def __init__(self, dim: int = 768):
        super().__init__()
        self.backbone = ResNetV2()
        self.proj = nn.Conv2d(1024, dim, 1)


# ---- the ViT-B/16 ---------------------------------------------------------------------------------------

class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.proj(y.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block (LayerNorm eps 1e-6, exact GELU)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, dim * 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """timm's vit_base_resnet50_384 (``pretrained.model``). ``taps`` returns what DPT-Hybrid reads: the
    outputs of ResNet stages 0 and 1 and the token sequences after blocks 8 and 11 (before ``norm``)."""

    def __init__(self, dim: int = 768, depth: int = 12, heads: int = 12, num_classes: int = 1000):
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, POS_GRID * POS_GRID + 1, dim))
        self.patch_embed = HybridEmbed(dim)
        self.blocks = nn.ModuleList([Block(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)  # in the file; DPT reads the blocks before it
        self.head = nn.Linear(dim, num_classes)  # likewise unused

    def resized_pos_embed(self, gh: int, gw: int) -> torch.Tensor:
        """The 24x24 grid's embedding bilinearly resized to gh x gw (the class token's entry kept)."""
        tok, grid = self.pos_embed[:, :1], self.pos_embed[0, 1:]
        grid = grid.reshape(1, POS_GRID, POS_GRID, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(gh, gw), mode="bilinear", align_corners=False)
        return torch.cat([tok, grid.permute(0, 2, 3, 1).reshape(1, gh * gw, -1)], dim=1)

    def taps(self, x: torch.Tensor, hooks=(8, 11)) -> list[torch.Tensor]:
        h, w = x.shape[-2:]
        stages = self.patch_embed.backbone(x)
        tokens = self.patch_embed.proj(stages[-1]).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), tokens], dim=1)
        tokens = tokens + self.resized_pos_embed(h // PATCH, w // PATCH)
        out = [stages[0], stages[1]]
        for i, blk in enumerate(self.blocks[:max(hooks) + 1]):
            tokens = blk(tokens)
            if i in hooks:
                out.append(tokens)
        return out


class ProjectReadout(nn.Module):
    """Every patch token concatenated with the class token, projected back to 768 (Linear + GELU)."""

    def __init__(self, dim: int):
        super().__init__()
        self.project = nn.Sequential(nn.Linear(2 * dim, dim), nn.GELU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        patches = x[:, 1:]
        return self.project(torch.cat([patches, x[:, :1].expand_as(patches)], dim=-1))


class Reassemble(nn.Sequential):
    """``act_postprocess3/4``: readout (0), tokens to a (B, C, gh, gw) map (1, 2: no parameters), then the
    convs (3, and 4 for the stride-2 one), numbered as the original Sequential numbers them."""

    def __init__(self, dim: int, out: int, downsample: bool):
        layers = [ProjectReadout(dim), nn.Identity(), nn.Identity(), nn.Conv2d(dim, out, 1)]
        if downsample:
            layers.append(nn.Conv2d(out, out, 3, stride=2, padding=1))
        super().__init__(*layers)

    def forward(self, tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        x = self[0](tokens).transpose(1, 2)
        x = x.reshape(x.shape[0], x.shape[1], *grid)
        for conv in list(self)[3:]:
            x = conv(x)
        return x


class Pretrained(nn.Module):
    """``pretrained``: the ViT and the reassemble steps of its two token taps."""

    def __init__(self):
        super().__init__()
        self.model = VisionTransformer()
        self.act_postprocess3 = Reassemble(768, 768, downsample=False)
        self.act_postprocess4 = Reassemble(768, 768, downsample=True)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        grid = (x.shape[-2] // PATCH, x.shape[-1] // PATCH)
        l1, l2, t3, t4 = self.model.taps(x)
        return [l1, l2, self.act_postprocess3(t3, grid), self.act_postprocess4(t4, grid)]


# ---- the DPT decoder ------------------------------------------------------------------------------------

class ResidualConvUnit(nn.Module):
    """relu -> 3x3 -> relu -> 3x3, plus the input (no batch norm in the MiDaS models)."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.conv2 = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class FeatureFusionBlock(nn.Module):
    """Adds the refined skip (resConfUnit1) to the path, refines (resConfUnit2), doubles the size
    (bilinear, align_corners) and mixes with a 1x1 conv (out_conv)."""

    def __init__(self, ch: int):
        super().__init__()
        self.out_conv = nn.Conv2d(ch, ch, 1)
        self.resConfUnit1 = ResidualConvUnit(ch)
        self.resConfUnit2 = ResidualConvUnit(ch)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if skip is not None:
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        return self.out_conv(x)


class Upsample2x(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)


class Scratch(nn.Module):
    def __init__(self, features: int = 256, in_shapes=(256, 512, 768, 768)):
        super().__init__()
        for i, cin in enumerate(in_shapes, 1):
            self.add_module(f"layer{i}_rn", nn.Conv2d(cin, features, 3, padding=1, bias=False))
        for i in range(1, 5):
            self.add_module(f"refinenet{i}", FeatureFusionBlock(features))
        self.output_conv = nn.Sequential(
            nn.Conv2d(features, features // 2, 3, padding=1), Upsample2x(),
            nn.Conv2d(features // 2, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 1, 1), nn.ReLU(),  # non_negative
            nn.Identity())


class DPTHybrid(nn.Module):
    """DPT-Hybrid depth model: (B, 3, H, W) in [-1, 1], H and W multiples of 32 -> (B, H, W) relative
    inverse depth (larger is nearer)."""

    def __init__(self):
        super().__init__()
        self.pretrained = Pretrained()
        self.scratch = Scratch()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2] % 32 or x.shape[-1] % 32:
            raise ValueError(f"DPT needs sides that are multiples of 32, got {tuple(x.shape[-2:])}")
        s = self.scratch
        l1, l2, l3, l4 = self.pretrained(x)
        path = s.refinenet4(s.layer4_rn(l4))
        path = s.refinenet3(path, s.layer3_rn(l3))
        path = s.refinenet2(path, s.layer2_rn(l2))
        path = s.refinenet1(path, s.layer1_rn(l1))
        return s.output_conv(path).squeeze(1)


def new_net() -> DPTHybrid:
    """The network with uninitialised CPU parameters (built on the meta device, so no time is spent on
    an initialisation the weight file overwrites)."""
    with torch.device("meta"):
        net = DPTHybrid()
    return net.to_empty(device="cpu").eval()


def _load(path) -> DPTHybrid:
    sd = load_state_dict(path)
    net = new_net()
    load_strict(net, sd, path)
    return net.to(device())


def get_net(weights: dict) -> DPTHybrid:
    path = weights[FILE]
    return cached("midas", [path], lambda: _load(path))


# ---- the extension's apply_midas ------------------------------------------------------------------------

@torch.no_grad()
def predict(net: DPTHybrid, image: np.ndarray) -> torch.Tensor:
    """The raw (H, W) float32 prediction for an HxWx3 uint8 RGB image (sides multiples of 32)."""
    p = next(net.parameters())
    x = torch.from_numpy(np.ascontiguousarray(image)).to(p.device, torch.float32) / 127.5 - 1.0
    return net(x.permute(2, 0, 1)[None])[0].float()


def normalised(depth: torch.Tensor) -> np.ndarray:
    """(depth - min) / max of the result, float32, as the extension computes it (in torch). A constant
    prediction gives zeros (the extension divides 0 by 0 there; its NaNs become 0 in the uint8 map)."""
    d = depth.detach().float().clone()
    d -= torch.min(d)
    top = torch.max(d)
    if float(top) > 0:
        d /= top
    return d.cpu().numpy()


def depth_image(depth_pt: np.ndarray) -> np.ndarray:
    """The depth map: normalised depth x255, truncated to uint8 (HxW)."""
    return (depth_pt * 255.0).clip(0, 255).astype(np.uint8)


def normal_image(depth: np.ndarray, depth_pt: np.ndarray, a: float = NORMAL_Z, bg_th: float = 0.4) -> np.ndarray:
    """The normal map from the raw prediction: 3x3 Sobel d/dx and d/dy as x and y (zeroed where the
    normalised depth is under bg_th), ``a`` as z, unit length, x127.5+127.5 as uint8, HxWx3 (x, y, z)."""
    depth = np.ascontiguousarray(depth, dtype=np.float32)
    x = cv2.Sobel(depth, cv2.CV_32F, 1, 0, ksize=3)
    y = cv2.Sobel(depth, cv2.CV_32F, 0, 1, ksize=3)
    z = np.ones_like(x) * a
    background = depth_pt < bg_th
    x[background] = 0
    y[background] = 0
    normal = np.stack([x, y, z], axis=2)
    normal /= np.sum(normal ** 2.0, axis=2, keepdims=True) ** 0.5
    return (normal * 127.5 + 127.5).clip(0, 255).astype(np.uint8)


def _prediction(image, res, weights) -> tuple[torch.Tensor, tuple[int, int]]:
    padded, hw = preprocessors.resize_with_pad(image, res)
    return predict(get_net(weights), padded), hw


def run_depth(image, res=512, thr_a=None, thr_b=None, weights=None, **kw) -> np.ndarray:
    """depth (depth_midas): HxW uint8 at the preprocessing size (short side res)."""
    depth, hw = _prediction(image, res, weights)
    return preprocessors.unpad(depth_image(normalised(depth)), hw)


def run_normal(image, res=512, thr_a=0.4, thr_b=None, weights=None, **kw) -> np.ndarray:
    """normal_map (normal_midas): HxWx3 uint8 at the preprocessing size; thr_a is the background
    threshold on the normalised depth."""
    depth, hw = _prediction(image, res, weights)
    out = normal_image(depth.cpu().numpy(), normalised(depth), NORMAL_Z, float(thr_a))
    return preprocessors.unpad(out, hw)


preprocessors.register_network("depth", run_depth)
preprocessors.register_network("normal_map", run_normal)
