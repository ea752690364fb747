"""M-LSD straight lines (``mlsd_large_512_fp32.pth``): MobileV2_MLSD_Large, a MobileNetV2 backbone (cut after
its 96-channel stage) with the M-LSD decoder, and the extension's line decode and drawing.

The network sees the padded RGB image with a constant fourth channel, all scaled to [-1, 1], and returns a
half-size map of a line-centre logit and the displacements (dx, dy) from each centre to the line's two ends.
Centres are the 3x3 local maxima of the sigmoid among the 200 best; a line is kept when its score is above
thr_a ("MLSD Value Threshold") and its length (in half-size pixels) above thr_b ("MLSD Distance
Threshold"). Lines are drawn 1 pixel wide, white on black, on the padded image, which is then cut back: the
map is HxW uint8 (0 / 255), as the extension's.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from modules.controlnet import preprocessors as pp
from modules.controlnet.annotators import cached, device, load_state_dict, load_strict

MLSD_FILE = "mlsd_large_512_fp32.pth"
TOP_K = 200  # candidate line centres
NMS_KERNEL = 3


# ---- MobileNetV2 backbone -------------------------------------------------------------------------------------

class ConvBNReLU(nn.Sequential):
    """Conv (no bias) + BatchNorm + ReLU6; stride 2 pads right/bottom by one instead of symmetrically, as the
    TFLite-trained weights expect."""

    def __init__(self, cin: int, cout: int, kernel_size: int = 3, stride: int = 1, groups: int = 1):
        padding = 0 if stride == 2 else (kernel_size - 1) // 2
        super().__init__(nn.Conv2d(cin, cout, kernel_size, stride, padding, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU6())
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 2:
            x = F.pad(x, (0, 1, 0, 1))
        return super().forward(x)


class InvertedResidual(nn.Module):
    """1x1 expansion (unless the ratio is 1), 3x3 depthwise, 1x1 linear projection; residual when the shape
    is kept."""

    def __init__(self, cin: int, cout: int, stride: int, expand_ratio: int):
        super().__init__()
        hidden = int(round(cin * expand_ratio))
        self.use_res_connect = stride == 1 and cin == cout
        layers = [ConvBNReLU(cin, hidden, kernel_size=1)] if expand_ratio != 1 else []
        layers += [ConvBNReLU(hidden, hidden, stride=stride, groups=hidden),
                   nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 (width 1.0) on a 4-channel input, up to the 96-channel stage; returns the features after
    layers 1, 3, 6, 10, 13 (16, 24, 32, 64, 96 channels at 1/2, 1/4, 1/8, 1/16, 1/16)."""

    SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1))  # t, c, n, s
    FPN = (1, 3, 6, 10, 13)

    def __init__(self):
        super().__init__()
        features = [ConvBNReLU(4, 32, stride=2)]
        cin = 32
        for t, c, n, s in self.SETTING:
            for i in range(n):
                features.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        self.features = nn.Sequential(*features)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.FPN:
                out.append(x)
        return out


# ---- M-LSD decoder --------------------------------------------------------------------------------------------

def _conv_bn_relu(cin: int, cout: int, kernel_size: int, padding: int = 0, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel_size, padding=padding, dilation=dilation),
                         nn.BatchNorm2d(cout), nn.ReLU())


class BlockTypeA(nn.Module):
    """Fuse a skip feature `a` (1x1 conv) with the coarser decoder feature `b` (1x1 conv, 2x bilinear
    upsampling with aligned corners unless `upscale` is off): their concatenation."""

    def __init__(self, in_c1: int, in_c2: int, out_c1: int, out_c2: int, upscale: bool = True):
        super().__init__()
        self.conv1 = _conv_bn_relu(in_c2, out_c2, 1)
        self.conv2 = _conv_bn_relu(in_c1, out_c1, 1)
        self.upscale = upscale

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        b = self.conv1(b)
        a = self.conv2(a)
        if self.upscale:
            b = F.interpolate(b, scale_factor=2.0, mode="bilinear", align_corners=True)
        return torch.cat((a, b), dim=1)


class BlockTypeB(nn.Module):
    """A residual 3x3 conv, then a 3x3 conv to `out_c`."""

    def __init__(self, in_c: int, out_c: int):
        super().__init__()
        self.conv1 = _conv_bn_relu(in_c, in_c, 3, padding=1)
        self.conv2 = _conv_bn_relu(in_c, out_c, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x) + x)


class BlockTypeC(nn.Module):
    """The head: a 3x3 conv dilated 5, a 3x3 conv, a 1x1 conv to `out_c`."""

    def __init__(self, in_c: int, out_c: int):
        super().__init__()
        self.conv1 = _conv_bn_relu(in_c, in_c, 3, padding=5, dilation=5)
        self.conv2 = _conv_bn_relu(in_c, in_c, 3, padding=1)
        self.conv3 = nn.Conv2d(in_c, out_c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(self.conv2(self.conv1(x)))


class MobileV2_MLSD_Large(nn.Module):
    """M-LSD large: (1, 4, H, W) in [-1, 1] -> (1, 9, H/2, W/2); channel 0 the centre logit, 1..4 the
    displacements (start dx, dy, end dx, dy), the rest unused here."""

    def __init__(self):
        super().__init__()
        self.backbone = MobileNetV2()
        self.block15 = BlockTypeA(64, 96, 64, 64, upscale=False)
        self.block16 = BlockTypeB(128, 64)
        self.block17 = BlockTypeA(32, 64, 64, 64)
        self.block18 = BlockTypeB(128, 64)
        self.block19 = BlockTypeA(24, 64, 64, 64)
        self.block20 = BlockTypeB(128, 64)
        self.block21 = BlockTypeA(16, 64, 64, 64)
        self.block22 = BlockTypeB(128, 64)
        self.block23 = BlockTypeC(64, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c1, c2, c3, c4, c5 = self.backbone(x)
        x = self.block16(self.block15(c4, c5))
        x = self.block18(self.block17(c3, x))
        x = self.block20(self.block19(c2, x))
        x = self.block22(self.block21(c1, x))
        return self.block23(x)[:, 7:, :, :]


# ---- loading, input, decode -------------------------------------------------------------------------------------

def mlsd_net(path: Path) -> MobileV2_MLSD_Large:
    def build():
        net = MobileV2_MLSD_Large()
        sd = load_state_dict(path)
        # a file saved without BatchNorm's batch counters (older torch) loads like one with them
        for key, value in net.state_dict().items():
            if key.endswith("num_batches_tracked") and key not in sd:
                sd[key] = value
        load_strict(net, sd, path)
        return net.to(device()).eval()

    return cached("mlsd", [path], build)


def network_input(image: np.ndarray) -> torch.Tensor:
    """(1, 4, H, W) float32: the RGB image and a channel of ones, / 127.5 - 1."""
    x = np.concatenate([image.astype(np.float32), np.ones(image.shape[:2] + (1,), np.float32)], axis=2)
    x = x.transpose(2, 0, 1)[None] / 127.5 - 1.0
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


def decode_lines(output: torch.Tensor, score_thr: float, dist_thr: float, top_k: int = TOP_K,
                 ksize: int = NMS_KERNEL) -> np.ndarray:
    """Lines (N x 4: x0, y0, x1, y1 in input-image pixels, float64) from the network's output: the `top_k`
    best centres that are a ksize x ksize maximum of the sigmoid score, kept where the score is above
    `score_thr` and the length at half size above `dist_thr`; coordinates doubled to the input's size."""
    out = output.detach().float().cpu()
    if out.shape[0] != 1:
        raise ValueError("one image at a time")
    w = out.shape[3]
    heat = torch.sigmoid(out[:, 0])
    peak = F.max_pool2d(heat, ksize, stride=1, padding=(ksize - 1) // 2)
    heat = (heat * (peak == heat).float()).reshape(-1)
    scores, index = torch.topk(heat, top_k, dim=-1, largest=True)
    scores, index = scores.numpy(), index.numpy()
    ys, xs = index // w, index % w
    disp = out[0, 1:5].numpy().transpose(1, 2, 0)  # h x w x (start dx, start dy, end dx, end dy)
    length = np.sqrt(np.sum((disp[:, :, :2] - disp[:, :, 2:]) ** 2, axis=-1))
    keep = (scores > score_thr) & (length[ys, xs] > dist_thr)
    ys, xs = ys[keep], xs[keep]
    d = disp[ys, xs]
    lines = np.stack([xs + d[:, 0], ys + d[:, 1], xs + d[:, 2], ys + d[:, 3]], axis=1)
    return 2 * lines.reshape(-1, 4)


def draw_lines(lines: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """White 1-pixel lines (cv2.line, 8-connected) on a black HxW uint8 canvas; end points truncated to int."""
    canvas = np.zeros(shape, dtype=np.uint8)
    for x0, y0, x1, y1 in lines:
        cv2.line(canvas, (int(x0), int(y0)), (int(x1), int(y1)), 255, 1)
    return canvas


def mlsd(image, res=512, thr_a=0.1, thr_b=0.1, weights=None, **kw):
    """mlsd: the lines of the padded image at `res`, drawn white on black, padding cut off (HxW)."""
    padded, hw = pp.resize_with_pad(image, res)
    net = mlsd_net(weights[MLSD_FILE])
    with torch.no_grad():
        out = net(network_input(padded).to(next(net.parameters()).device))
    lines = decode_lines(out, float(thr_a), float(thr_b))
    return pp.unpad(draw_lines(lines, padded.shape[:2]), hw)


pp.register_network("mlsd", mlsd)
