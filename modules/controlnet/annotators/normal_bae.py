"""normal_bae: surface normals by Bae et al. ("Estimating and Exploiting the Aleatoric Uncertainty in
Surface Normal Estimation"), the network of the extension's ``annotator/normalbae`` with ``scannet.pt``.

The network (NNET) is an EfficientNet-B5 encoder -- rwightman's ``tf_efficientnet_b5_ap`` (TF "same"
padding, BatchNorm eps 1e-3, Swish, squeeze-excite), written out here since torch.hub/geffnet are not
available -- and a U-Net-like decoder: four bilinear-upsample + conv/BN/LeakyReLU blocks, a 1/8-resolution
prediction, and three per-pixel MLP heads (1x1 Conv1d) that refine it to 1/4, 1/2 and full resolution.
Every prediction has four channels: a unit normal (x, y, z) and a concentration kappa.

In training the heads only see the points drawn by uncertainty-guided sampling (sampling ratio 0.4,
importance ratio 0.7); in the extension's use (``mode='test'``, the default of the forward) there is no
sampling: every pixel of each scale is refined, which is what is implemented here.

The published ``scannet.pt`` is ``{"model": state_dict}`` with DataParallel's ``module.`` prefix, keys
such as ``encoder.original_model.blocks.0.0.conv_dw.weight`` and ``decoder.up1._net.0.weight``;
``load_state_dict`` unwraps and strips both. The encoder's classifier was replaced by an identity before
training, so the file has no ``classifier`` weights.

The map is the extension's: the image resized with edge padding to a multiple of 64 (short side ``res``),
normalised with the ImageNet mean/std, the full-resolution normal's (x, y, z) put as they are into
(R, G, B) as ``((n + 1) / 2).clip(0, 1) * 255`` truncated to uint8 (no renormalisation, no flips), and
the padding cut off again.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from modules.controlnet import preprocessors
from modules.controlnet.annotators import cached, device, load_state_dict, load_strict

WEIGHTS = "scannet.pt"
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)

# tf_efficientnet_b5_ap after the B5 scaling (channels x1.6 rounded to multiples of 8, repeats ceil(x2.2)):
# (block type, repeats, kernel, first stride, expansion, output channels) per stage
B5_STAGES = (
    ("ds", 3, 3, 1, 1, 24),
    ("ir", 5, 3, 2, 6, 40),
    ("ir", 5, 5, 2, 6, 64),
    ("ir", 7, 3, 2, 6, 128),
    ("ir", 7, 5, 1, 6, 176),
    ("ir", 9, 5, 2, 6, 304),
    ("ir", 3, 3, 1, 6, 512),
)
B5_STEM = 48
B5_HEAD = 2048
TF_BN_EPS = 1e-3
SE_RATIO = 0.25


# ---- EfficientNet-B5 (tf_ variant) ---------------------------------------------------------------

class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow's "SAME" padding computed from the input size: for a stride-2 conv on an
    even size the extra row/column goes at the bottom/right, unlike PyTorch's symmetric padding."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s, d in zip(x.shape[-2:], self.kernel_size, self.stride, self.dilation):
            total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
            pads.append((total // 2, total - total // 2))
        (top, bottom), (left, right) = pads
        if top or bottom or left or right:
            x = F.pad(x, [left, right, top, bottom])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def tf_conv(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    """geffnet's ``padding='same'`` conv: static symmetric padding where that equals TF's (stride 1, odd
    kernel), the dynamic SameConv2d otherwise. No bias (a BatchNorm follows)."""
    if stride == 1 and (k - 1) % 2 == 0:
        return nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False)
    return SameConv2d(cin, cout, k, stride, 0, groups=groups, bias=False)


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=TF_BN_EPS)


class SqueezeExcite(nn.Module):
    """Channel gate: global mean -> 1x1 reduce -> Swish -> 1x1 expand -> sigmoid, times the input."""

    def __init__(self, channels: int, reduced: int):
        super().__init__()
        self.conv_reduce = nn.Conv2d(channels, reduced, 1, bias=True)
        self.conv_expand = nn.Conv2d(reduced, channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.silu(self.conv_reduce(x.mean((2, 3), keepdim=True)))
        return x * torch.sigmoid(self.conv_expand(s))


def _se_reduced(in_chs: int) -> int:
    # geffnet reduces from the block's *input* channels, rounded to an integer (divisor 1)
    return max(1, int(in_chs * SE_RATIO + 0.5))


class DepthwiseSeparable(nn.Module):
    """Stage-0 block: depthwise conv, BN, Swish, SE, pointwise conv, BN (no activation); residual when
    the shape is kept."""

    def __init__(self, cin: int, cout: int, k: int, stride: int):
        super().__init__()
        self.residual = stride == 1 and cin == cout
        self.conv_dw = tf_conv(cin, cin, k, stride, groups=cin)
        self.bn1 = _bn(cin)
        self.se = SqueezeExcite(cin, _se_reduced(cin))
        self.conv_pw = tf_conv(cin, cout, 1)
        self.bn2 = _bn(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.se(F.silu(self.bn1(self.conv_dw(x))))
        y = self.bn2(self.conv_pw(y))
        return y + x if self.residual else y


class InvertedResidual(nn.Module):
    """MBConv: 1x1 expansion, BN, Swish, depthwise conv, BN, Swish, SE, 1x1 projection, BN; residual when
    the shape is kept (drop-connect is a no-op at inference)."""

    def __init__(self, cin: int, cout: int, k: int, stride: int, expand: int):
        super().__init__()
        mid = cin * expand  # already a multiple of 8 for every B5 block
        self.residual = stride == 1 and cin == cout
        self.conv_pw = tf_conv(cin, mid, 1)
        self.bn1 = _bn(mid)
        self.conv_dw = tf_conv(mid, mid, k, stride, groups=mid)
        self.bn2 = _bn(mid)
        self.se = SqueezeExcite(mid, _se_reduced(cin))
        self.conv_pwl = tf_conv(mid, cout, 1)
        self.bn3 = _bn(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.silu(self.bn1(self.conv_pw(x)))
        y = F.silu(self.bn2(self.conv_dw(y)))
        y = self.bn3(self.conv_pwl(self.se(y)))
        return y + x if self.residual else y


class EfficientNetB5(nn.Module):
    """tf_efficientnet_b5_ap without its classifier (parameter names as geffnet's GenEfficientNet)."""

    def __init__(self):
        super().__init__()
        self.conv_stem = tf_conv(3, B5_STEM, 3, 2)
        self.bn1 = _bn(B5_STEM)
        stages, cin = [], B5_STEM
        for kind, repeats, k, stride, expand, cout in B5_STAGES:
            blocks = []
            for i in range(repeats):
                s = stride if i == 0 else 1
                blocks.append(DepthwiseSeparable(cin, cout, k, s) if kind == "ds"
                              else InvertedResidual(cin, cout, k, s, expand))
                cin = cout
            stages.append(nn.Sequential(*blocks))
        self.blocks = nn.Sequential(*stages)
        self.conv_head = tf_conv(cin, B5_HEAD, 1)
        self.bn2 = _bn(B5_HEAD)  # in the file; its output is not used by the decoder

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The output of every stage (1/2 ... 1/32 resolution) and of conv_head (before bn2), which is what
        the decoder takes as features 4..10 and 11 of the original encoder's list."""
        x = F.silu(self.bn1(self.conv_stem(x)))
        outs = []
        for stage in self.blocks:
            x = stage(x)
            outs.append(x)
        outs.append(self.conv_head(x))
        return outs


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.original_model = EfficientNetB5()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.original_model(x)


# ---- decoder -------------------------------------------------------------------------------------

class UpSampleBN(nn.Module):
    """Bilinear (align_corners) upsampling to the skip feature's size, concatenation, and two 3x3
    conv + BN + LeakyReLU."""

    def __init__(self, skip_input: int, output_features: int):
        super().__init__()
        self._net = nn.Sequential(
            nn.Conv2d(skip_input, output_features, 3, 1, 1), nn.BatchNorm2d(output_features), nn.LeakyReLU(),
            nn.Conv2d(output_features, output_features, 3, 1, 1), nn.BatchNorm2d(output_features), nn.LeakyReLU())

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=True)
        return self._net(torch.cat([up, skip], dim=1))


def _head(cin: int) -> nn.Sequential:
    """A per-pixel MLP (1x1 Conv1d 128-128-128-4 with ReLUs)."""
    return nn.Sequential(nn.Conv1d(cin, 128, 1), nn.ReLU(), nn.Conv1d(128, 128, 1), nn.ReLU(),
                         nn.Conv1d(128, 128, 1), nn.ReLU(), nn.Conv1d(128, 4, 1))


def norm_normalize(out: torch.Tensor) -> torch.Tensor:
    """(x, y, z) divided by their length (+1e-10), kappa -> elu(kappa) + 1.01 (channel dim 1)."""
    xyz, kappa = out[:, :3], out[:, 3:4]
    norm = torch.sqrt((xyz ** 2.0).sum(dim=1, keepdim=True)) + 1e-10
    return torch.cat([xyz / norm, F.elu(kappa) + 1.0 + 0.01], dim=1)


class Decoder(nn.Module):
    """Feature pyramid -> normals at 1/8, then refined by the MLP heads at 1/4, 1/2 and 1/1."""

    def __init__(self):
        super().__init__()
        self.conv2 = nn.Conv2d(2048, 2048, 1, 1, 0)
        self.up1 = UpSampleBN(2048 + 176, 1024)
        self.up2 = UpSampleBN(1024 + 64, 512)
        self.up3 = UpSampleBN(512 + 40, 256)
        self.up4 = UpSampleBN(256 + 24, 128)
        self.out_conv_res8 = nn.Conv2d(512, 4, 3, 1, 1)
        self.out_conv_res4 = _head(512 + 4)
        self.out_conv_res2 = _head(256 + 4)
        self.out_conv_res1 = _head(128 + 4)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        """[out_res8, out_res4, out_res2, out_res1], each (B, 4, h, w) normalised."""
        block0, block1, block2, block3, head = feats[0], feats[1], feats[2], feats[4], feats[7]
        d0 = self.conv2(head)
        d1 = self.up1(d0, block3)
        d2 = self.up2(d1, block2)
        d3 = self.up3(d2, block1)
        d4 = self.up4(d3, block0)
        pred = norm_normalize(self.out_conv_res8(d2))
        outs = [pred]
        # eval: every pixel is refined (training refines only the sampled points)
        for feat, mlp in ((d2, self.out_conv_res4), (d3, self.out_conv_res2), (d4, self.out_conv_res1)):
            f = F.interpolate(feat, scale_factor=2, mode="bilinear", align_corners=True)
            p = F.interpolate(pred, scale_factor=2, mode="bilinear", align_corners=True)
            x = torch.cat([f, p], dim=1)
            b, c, h, w = x.shape
            pred = norm_normalize(mlp(x.view(b, c, h * w))).view(b, 4, h, w)
            outs.append(pred)
        return outs


class NNET(nn.Module):
    """The whole normal_bae network (architecture 'BN'), parameter names as in scannet.pt."""

    def __init__(self):
        super().__init__()
        self.encoder = Encoder()
        self.decoder = Decoder()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.decoder(self.encoder(x))


# ---- the preprocessor ----------------------------------------------------------------------------

def load(path) -> NNET:
    """NNET with the file's weights, in eval mode on the annotator device. BatchNorm's
    ``num_batches_tracked`` counters (unused at inference) are filled in where a file lacks them."""
    sd = load_state_dict(path)
    net = NNET()
    for k, v in net.state_dict().items():
        if k.endswith(".num_batches_tracked") and k not in sd and k.replace("num_batches_tracked", "weight") in sd:
            sd[k] = v
    load_strict(net, sd, path)
    return net.eval().to(device())


def to_network_input(padded: np.ndarray, dev=None) -> torch.Tensor:
    """HxWx3 uint8 RGB -> (1, 3, H, W) float: /255, then ImageNet mean/std."""
    x = torch.from_numpy(np.ascontiguousarray(padded)).float().to(dev or torch.device("cpu")) / 255.0
    x = x.permute(2, 0, 1)[None]
    mean = torch.tensor(MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def to_map(normal: torch.Tensor) -> np.ndarray:
    """(1, >=3, H, W) normals -> HxWx3 uint8: ((n + 1) / 2).clip(0, 1) * 255, truncated; x->R, y->G, z->B."""
    n = ((normal[0, :3].float() + 1.0) * 0.5).clamp(0.0, 1.0)
    n = n.permute(1, 2, 0).cpu().numpy()
    return (n * 255.0).clip(0, 255).astype(np.uint8)


def normal_bae(image, res=512, thr_a=None, thr_b=None, weights=None, **kw) -> np.ndarray:
    """The extension's normal_bae map: HxWx3 uint8 at the resized (short side ``res``) size."""
    path = weights[WEIGHTS]
    net = cached("normal_bae", [path], lambda: load(path))
    padded, hw = preprocessors.resize_with_pad(image, int(res))
    dev = next(net.parameters()).device
    with torch.inference_mode():
        outs = net(to_network_input(padded, dev))
    return preprocessors.unpad(to_map(outs[-1]), hw)


preprocessors.register_network("normal_bae", normal_bae)
