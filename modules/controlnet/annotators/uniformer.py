"""segmentation (seg_ufade20k): ADE20K semantic segmentation by UniFormer-Small + UPerNet, the network of
sd-webui-controlnet's uniformer annotator (``upernet_global_small.pth``), in plain torch.

The extension runs it through mmsegmentation; what that does at inference is written out here:

* the image (already resized so its short side is ``res`` and edge-padded to multiples of 64) is rescaled
  with its aspect ratio kept so it fits the test pipeline's ``img_scale`` (2048, 512): long side <= 2048 and
  short side <= 512, bilinear, on the uint8 pixels -- which grows the usual 512-ish image very little and a
  small one a lot;
* it is normalised with mmseg's ImageNet mean/std after ``to_rgb`` swapped its channels. The extension
  hands mmseg an RGB array where mmseg expects BGR, so the network in fact sees BGR order; kept, since
  that is what the published weights are run on there;
* "whole" inference: backbone, UPerHead, logits resized bilinearly to the rescaled image and then to the
  padded image, softmax, argmax;
* the class map drawn with the ADE20K palette at full opacity (so the picture is the palette colours
  alone), cut back to the unpadded size.

The published file is mmcv's checkpoint: ``{"meta": {...}, "state_dict": {...}}`` with the keys of
mmseg's EncoderDecoder (``backbone.*``, ``decode_head.*``, ``auxiliary_head.*``). The auxiliary FCN head
only helps training; it is built so the file loads strictly, and not run.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from modules.controlnet import preprocessors
from modules.controlnet.annotators import AnnotatorError, cached, device, load_state_dict, load_strict
from modules.upscaler_nets.swinir import Mlp  # the SABlock's token MLP is the same fc1-GELU-fc2

WEIGHTS = "upernet_global_small.pth"
IMG_SCALE = (2048, 512)  # the ADE20K test pipeline's Resize(img_scale, keep_ratio=True)
MEAN = (123.675, 116.28, 103.53)  # mmseg's img_norm_cfg, applied after the to_rgb channel swap
STD = (58.395, 57.12, 57.375)
NUM_CLASSES = 150

# mmseg's ade_palette(): the RGB colour of each of the 150 ADE20K classes, in class order
ADE_PALETTE = np.array([
    [120, 120, 120], [180, 120, 120], [6, 230, 230], [80, 50, 50], [4, 200, 3], [120, 120, 80],
    [140, 140, 140], [204, 5, 255], [230, 230, 230], [4, 250, 7], [224, 5, 255], [235, 255, 7],
    [150, 5, 61], [120, 120, 70], [8, 255, 51], [255, 6, 82], [143, 255, 140], [204, 255, 4],
    [255, 51, 7], [204, 70, 3], [0, 102, 200], [61, 230, 250], [255, 6, 51], [11, 102, 255],
    [255, 7, 71], [255, 9, 224], [9, 7, 230], [220, 220, 220], [255, 9, 92], [112, 9, 255],
    [8, 255, 214], [7, 255, 224], [255, 184, 6], [10, 255, 71], [255, 41, 10], [7, 255, 255],
    [224, 255, 8], [102, 8, 255], [255, 61, 6], [255, 194, 7], [255, 122, 8], [0, 255, 20],
    [255, 8, 41], [255, 5, 153], [6, 51, 255], [235, 12, 255], [160, 150, 20], [0, 163, 255],
    [140, 140, 140], [250, 10, 15], [20, 255, 0], [31, 255, 0], [255, 31, 0], [255, 224, 0],
    [153, 255, 0], [0, 0, 255], [255, 71, 0], [0, 235, 255], [0, 173, 255], [31, 0, 255],
    [11, 200, 200], [255, 82, 0], [0, 255, 245], [0, 61, 255], [0, 255, 112], [0, 255, 133],
    [255, 0, 0], [255, 163, 0], [255, 102, 0], [194, 255, 0], [0, 143, 255], [51, 255, 0],
    [0, 82, 255], [0, 255, 41], [0, 255, 173], [10, 0, 255], [173, 255, 0], [0, 255, 153],
    [255, 92, 0], [255, 0, 255], [255, 0, 245], [255, 0, 102], [255, 173, 0], [255, 0, 20],
    [255, 184, 184], [0, 31, 255], [0, 255, 61], [0, 71, 255], [255, 0, 204], [0, 255, 194],
    [0, 255, 82], [0, 10, 255], [0, 112, 255], [51, 0, 255], [0, 194, 255], [0, 122, 255],
    [0, 255, 163], [255, 153, 0], [0, 255, 10], [255, 112, 0], [143, 255, 0], [82, 0, 255],
    [163, 255, 0], [255, 235, 0], [8, 184, 170], [133, 0, 255], [0, 255, 92], [184, 0, 255],
    [255, 0, 31], [0, 184, 255], [0, 214, 255], [255, 0, 112], [92, 255, 0], [0, 224, 255],
    [112, 224, 255], [70, 184, 160], [163, 0, 255], [153, 0, 255], [71, 255, 0], [255, 0, 163],
    [255, 204, 0], [255, 0, 143], [0, 255, 235], [133, 255, 0], [255, 0, 235], [245, 0, 255],
    [255, 0, 122], [255, 245, 0], [10, 190, 212], [214, 255, 0], [0, 204, 255], [20, 0, 255],
    [255, 255, 0], [0, 153, 255], [0, 41, 255], [0, 255, 204], [41, 0, 255], [41, 255, 0],
    [173, 0, 255], [0, 245, 255], [71, 0, 255], [122, 0, 255], [0, 255, 184], [0, 92, 255],
    [184, 255, 0], [0, 133, 255], [255, 214, 0], [25, 194, 194], [102, 255, 0], [92, 0, 255],
], dtype=np.uint8)


# ---- the UniFormer-Small backbone ------------------------------------------------------------------

class PatchEmbed(nn.Module):
    """Strided convolution (kernel = stride = patch) then a LayerNorm over the channels."""

    def __init__(self, in_ch: int, dim: int, patch: int):
        super().__init__()
        self.proj = nn.Conv2d(in_ch, dim, kernel_size=patch, stride=patch)
        self.norm = nn.LayerNorm(dim)  # eps 1e-5 here, unlike the blocks' 1e-6

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2).contiguous()


class ConvMlp(nn.Module):
    """The CBlock's MLP: 1x1 convolutions with GELU between."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class CBlock(nn.Module):
    """Local relation block of stages 1-2: depthwise position conv, BN, 1x1 / depthwise 5x5 / 1x1
    "attention", BN, conv MLP -- each a residual."""

    def __init__(self, dim: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.pos_embed = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm1 = nn.BatchNorm2d(dim)
        self.conv1 = nn.Conv2d(dim, dim, 1)
        self.conv2 = nn.Conv2d(dim, dim, 1)
        self.attn = nn.Conv2d(dim, dim, 5, padding=2, groups=dim)
        self.norm2 = nn.BatchNorm2d(dim)
        self.mlp = ConvMlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.pos_embed(x)
        x = x + self.conv2(self.attn(self.conv1(self.norm1(x))))
        return x + self.mlp(self.norm2(x))


class Attention(nn.Module):
    """Multi-head self-attention over all tokens (the "global" setting: no windows)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class SABlock(nn.Module):
    """Global relation block of stages 3-4: depthwise position conv, then a pre-norm transformer layer."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.pos_embed = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.pos_embed(x)
        b, c, h, w = x.shape
        t = x.flatten(2).transpose(1, 2)
        t = t + self.attn(self.norm1(t))
        t = t + self.mlp(self.norm2(t))
        return t.transpose(1, 2).reshape(b, c, h, w)


class UniFormer(nn.Module):
    """UniFormer-Small as upernet_global_small configures it: depths 3/4/8/3, widths 64/128/320/512,
    head dim 64, MLP ratio 4, global attention in stage 3; returns the four stage outputs (strides
    4, 8, 16, 32), each LayerNorm'ed."""

    def __init__(self, layers=(3, 4, 8, 3), dims=(64, 128, 320, 512), head_dim: int = 64,
                 mlp_ratio: float = 4.0):
        super().__init__()
        self.patch_embed1 = PatchEmbed(3, dims[0], 4)
        self.patch_embed2 = PatchEmbed(dims[0], dims[1], 2)
        self.patch_embed3 = PatchEmbed(dims[1], dims[2], 2)
        self.patch_embed4 = PatchEmbed(dims[2], dims[3], 2)
        self.blocks1 = nn.ModuleList([CBlock(dims[0], mlp_ratio) for _ in range(layers[0])])
        self.norm1 = nn.LayerNorm(dims[0], eps=1e-6)
        self.blocks2 = nn.ModuleList([CBlock(dims[1], mlp_ratio) for _ in range(layers[1])])
        self.norm2 = nn.LayerNorm(dims[1], eps=1e-6)
        self.blocks3 = nn.ModuleList([SABlock(dims[2], dims[2] // head_dim, mlp_ratio) for _ in range(layers[2])])
        self.norm3 = nn.LayerNorm(dims[2], eps=1e-6)
        self.blocks4 = nn.ModuleList([SABlock(dims[3], dims[3] // head_dim, mlp_ratio) for _ in range(layers[3])])
        self.norm4 = nn.LayerNorm(dims[3], eps=1e-6)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for i in range(1, 5):
            x = getattr(self, f"patch_embed{i}")(x)
            for blk in getattr(self, f"blocks{i}"):
                x = blk(x)
            norm = getattr(self, f"norm{i}")
            outs.append(norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2).contiguous())
        return outs


# ---- the UPerNet head (mmcv's ConvModule, PPM) ----------------------------------------------------

class ConvModule(nn.Module):
    """mmcv's ConvModule with a BN norm: conv (no bias) -> BatchNorm -> ReLU."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, padding: int = 0):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)
        self.activate = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activate(self.bn(self.conv(x)))


def _resize(x: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class PPM(nn.ModuleList):
    """Pyramid pooling: adaptive average pools (1, 2, 3, 6), a 1x1 ConvModule each, upsampled back."""

    def __init__(self, scales, in_ch: int, ch: int):
        super().__init__([nn.Sequential(nn.AdaptiveAvgPool2d(s), ConvModule(in_ch, ch, 1)) for s in scales])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [_resize(m(x), x.shape[2:]) for m in self]


class UPerHead(nn.Module):
    """UPerNet decoder: PPM on the last level, FPN top-down sum, 3x3 convs, all levels upsampled to the
    stride-4 one, concatenated, fused, classified (1x1 conv to the 150 classes)."""

    def __init__(self, in_channels=(64, 128, 320, 512), channels: int = 512, pool_scales=(1, 2, 3, 6),
                 num_classes: int = NUM_CLASSES):
        super().__init__()
        self.psp_modules = PPM(pool_scales, in_channels[-1], channels)
        self.bottleneck = ConvModule(in_channels[-1] + len(pool_scales) * channels, channels, 3, padding=1)
        self.lateral_convs = nn.ModuleList([ConvModule(c, channels, 1) for c in in_channels[:-1]])
        self.fpn_convs = nn.ModuleList([ConvModule(channels, channels, 3, padding=1) for _ in in_channels[:-1]])
        self.fpn_bottleneck = ConvModule(len(in_channels) * channels, channels, 3, padding=1)
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        laterals = [conv(feats[i]) for i, conv in enumerate(self.lateral_convs)]
        top = feats[-1]
        laterals.append(self.bottleneck(torch.cat([top] + self.psp_modules(top), dim=1)))
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + _resize(laterals[i], laterals[i - 1].shape[2:])
        outs = [conv(laterals[i]) for i, conv in enumerate(self.fpn_convs)] + [laterals[-1]]
        outs = [outs[0]] + [_resize(o, outs[0].shape[2:]) for o in outs[1:]]
        return self.conv_seg(self.fpn_bottleneck(torch.cat(outs, dim=1)))


class FCNHead(nn.Module):
    """The auxiliary head on stage 3 (one 3x3 ConvModule, then the classifier): in the file, used only in
    training."""

    def __init__(self, in_ch: int = 320, channels: int = 256, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.convs = nn.Sequential(ConvModule(in_ch, channels, 3, padding=1))
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        return self.conv_seg(self.convs(feats[2]))


class UperNetUniFormer(nn.Module):
    """mmseg's EncoderDecoder of upernet_global_small: ``forward`` gives the class logits at the input's
    size (the decoder's stride-4 logits resized bilinearly, as encode_decode does)."""

    def __init__(self):
        super().__init__()
        self.backbone = UniFormer()
        self.decode_head = UPerHead()
        self.auxiliary_head = FCNHead()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _resize(self.decode_head(self.backbone(x)), x.shape[2:])


# ---- inference as the extension runs it -----------------------------------------------------------

def rescaled_size(h: int, w: int, img_scale=None) -> tuple[int, int]:
    """(H, W) of mmcv's imrescale to `img_scale` keeping the ratio: the largest factor with long side <=
    max(img_scale) and short side <= min(img_scale), sizes rounded half up."""
    long_edge, short_edge = max(img_scale or IMG_SCALE), min(img_scale or IMG_SCALE)
    k = min(long_edge / max(h, w), short_edge / min(h, w))
    return int(h * float(k) + 0.5), int(w * float(k) + 0.5)


def preprocess(image: np.ndarray) -> torch.Tensor:
    """The test pipeline on an RGB uint8 image: bilinear rescale to the test scale, channel swap (mmseg's
    to_rgb on an array that already was RGB), (x - mean) / std; a 1x3xHxW float tensor."""
    h, w = rescaled_size(*image.shape[:2])
    img = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
    x = img[:, :, ::-1].astype(np.float32)
    x = (x - np.array(MEAN, np.float32)) * (1.0 / np.array(STD, np.float32))
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]


def segment(net: UperNetUniFormer, image: np.ndarray) -> np.ndarray:
    """Class index per pixel (HxW int64) of an RGB uint8 image: whole-image inference, logits resized
    back to the image's size, softmax, argmax."""
    dev = next(net.parameters()).device
    with torch.inference_mode():
        logits = net(preprocess(image).to(dev))
        logits = _resize(logits, image.shape[:2])
        labels = F.softmax(logits, dim=1).argmax(dim=1)[0]
    return labels.cpu().numpy()


def colorize(labels: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 RGB picture of a class map: each class in its ADE20K palette colour (black for an
    index outside it, as mmseg's drawing leaves such pixels)."""
    out = np.zeros(labels.shape + (3,), np.uint8)
    ok = (labels >= 0) & (labels < len(ADE_PALETTE))
    out[ok] = ADE_PALETTE[labels[ok]]
    return out


def build(path) -> UperNetUniFormer:
    """The network with the weights of `path` (mmcv checkpoint or a bare state dict), in eval mode on the
    annotator device; AnnotatorError naming the file when it is not these weights."""
    sd = load_state_dict(path)
    bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise AnnotatorError(f"{Path(path).name}: not a state dict of tensors (e.g. {bad[0]!r})")
    net = UperNetUniFormer()
    own = net.state_dict()
    for k, v in own.items():
        # BN batch counters are never read at inference; a file saved without them still loads
        if k.endswith("num_batches_tracked") and k not in sd:
            sd[k] = v
    load_strict(net, sd, path)
    return net.eval().to(device())


def uniformer(image, res=512, thr_a=None, thr_b=None, weights=None, **kw) -> np.ndarray:
    """The extension's segmentation preprocessor: resize with pad to `res`, segment, colour, unpad."""
    path = (weights or {}).get(WEIGHTS)
    if path is None:
        raise AnnotatorError(f"{WEIGHTS} is missing")
    net = cached("uniformer", [path], lambda: build(path))
    padded, hw = preprocessors.resize_with_pad(image, res)
    return preprocessors.unpad(colorize(segment(net, padded)), hw)


preprocessors.register_network("segmentation", uniformer)
