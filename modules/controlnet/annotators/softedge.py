"""Soft edges: HED (ControlNet 1.1's Apache-2 ``ControlNetHED.pth``) and PiDiNet (``table5_pidinet.pth``), with
the extension's post-processing of their edge maps.

Preprocessors: ``hed`` / ``hed_safe`` / ``scribble_hed`` and ``pidinet`` / ``pidinet_safe`` /
``pidinet_sketch`` (t2ia_sketch_pidi) / ``pidinet_scribble``. Each resizes the image so its short side is
``res``, pads it to multiples of 64, runs the network, and cuts the padding off again; the map is HxW uint8
like the extension's. "safe" quantises the edge probability to the steps 0, 1/2, 1 (``safe_step``); the
sketch variant thresholds PiDiNet at 0.5; the scribble variants thin and thicken the map (``scribble``).

PiDiNet's published weights are the pixel-difference convolutions' 3x3 kernels (the "carv4" layout: central,
angular, radial differences and vanilla convolutions in turn); ``convert_pidinet`` turns them into the
equivalent vanilla kernels (5x5 for the radial ones) at load, so the network here is plain convolutions.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from modules.controlnet import preprocessors as pp
from modules.controlnet.annotators import AnnotatorError, cached, device, load_state_dict, load_strict

HED_FILE = "ControlNetHED.pth"
PIDINET_FILE = "table5_pidinet.pth"


# ---- the extension's post-processing --------------------------------------------------------------------------

def safe_step(x: np.ndarray, step: int = 2) -> np.ndarray:
    """Quantise a [0, 1] edge map to multiples of 1/step (float32): floor(x * (step + 1)) / step. Removes the
    faint gradients a control model could read hidden content from (the "safe" preprocessors)."""
    y = x.astype(np.float32) * float(step + 1)
    return y.astype(np.int32).astype(np.float32) / float(step)


# straight 3-pixel lines through the centre: horizontal, vertical and the two diagonals
_NMS_KERNELS = tuple(np.array(k, dtype=np.uint8) for k in (
    [[0, 0, 0], [1, 1, 1], [0, 0, 0]],
    [[0, 1, 0], [0, 1, 0], [0, 1, 0]],
    [[1, 0, 0], [0, 1, 0], [0, 0, 1]],
    [[0, 0, 1], [0, 1, 0], [1, 0, 0]],
))


def nms(x: np.ndarray, threshold: float, sigma: float) -> np.ndarray:
    """The extension's non-maximum suppression: blur by `sigma`, keep the pixels that are a maximum of their
    3-pixel line in at least one of four directions, then 255 where the kept value exceeds `threshold`."""
    blurred = cv2.GaussianBlur(x.astype(np.float32), (0, 0), sigma)
    kept = np.zeros_like(blurred)
    for kernel in _NMS_KERNELS:
        np.putmask(kept, cv2.dilate(blurred, kernel=kernel) == blurred, blurred)
    out = np.zeros(blurred.shape, dtype=np.uint8)
    out[kept > threshold] = 255
    return out


def scribble(edge: np.ndarray) -> np.ndarray:
    """scribble_hed / scribble_pidinet: NMS at 127 (sigma 3), a sigma-3 blur, and 255 wherever it is above 4
    (a thick binary scribble)."""
    thick = cv2.GaussianBlur(nms(edge, 127, 3.0), (0, 0), 3.0)
    return np.where(thick > 4, 255, 0).astype(np.uint8)


def to_uint8(edge: np.ndarray) -> np.ndarray:
    return (edge * 255.0).clip(0, 255).astype(np.uint8)


# ---- HED (ControlNetHED_Apache2) --------------------------------------------------------------------------------

class DoubleConvBlock(nn.Module):
    """`layers` 3x3 conv + ReLU (after an optional 2x2 max-pool), and a 1x1 projection to one edge logit."""

    def __init__(self, cin: int, cout: int, layers: int):
        super().__init__()
        self.convs = nn.Sequential(*[nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=1) for i in range(layers)])
        self.projection = nn.Conv2d(cout, 1, 1)

    def forward(self, x: torch.Tensor, down_sampling: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        h = F.max_pool2d(x, 2, 2) if down_sampling else x
        for conv in self.convs:
            h = F.relu(conv(h))
        return h, self.projection(h)


class ControlNetHED(nn.Module):
    """The VGG-16-shaped HED of ControlNet 1.1 (RGB input in 0..255 minus a learnt mean): the five edge
    logits, at full, 1/2, ... 1/16 size."""

    WIDTHS = ((3, 64, 2), (64, 128, 2), (128, 256, 3), (256, 512, 3), (512, 512, 3))

    def __init__(self):
        super().__init__()
        self.norm = nn.Parameter(torch.zeros(1, 3, 1, 1))
        for i, (cin, cout, layers) in enumerate(self.WIDTHS, 1):
            setattr(self, f"block{i}", DoubleConvBlock(cin, cout, layers))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = x - self.norm
        logits = []
        for i in range(1, len(self.WIDTHS) + 1):
            h, p = getattr(self, f"block{i}")(h, down_sampling=i > 1)
            logits.append(p)
        return logits


def hed_probability(net: ControlNetHED, image: np.ndarray) -> np.ndarray:
    """The float64 HxW edge probability of an RGB uint8 image: each logit map resized to the image (cv2
    bilinear), averaged, sigmoid."""
    h, w = image.shape[:2]
    dev = next(net.parameters()).device
    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(image)).float().to(dev).permute(2, 0, 1)[None]
        logits = net(x)
    maps = [cv2.resize(p[0, 0].float().cpu().numpy(), (w, h), interpolation=cv2.INTER_LINEAR) for p in logits]
    mean = np.mean(np.stack(maps, axis=2), axis=2).astype(np.float64)
    return 1.0 / (1.0 + np.exp(-mean))


def hed_net(path: Path) -> ControlNetHED:
    def build():
        net = ControlNetHED()
        load_strict(net, load_state_dict(path), path)
        return net.to(device()).eval()

    return cached("hed", [path], build)


def _hed_map(image, res: int, weights: dict, safe: bool = False) -> np.ndarray:
    padded, hw = pp.resize_with_pad(image, res)
    edge = hed_probability(hed_net(weights[HED_FILE]), padded)
    return pp.unpad(to_uint8(safe_step(edge) if safe else edge), hw)


def hed(image, res=512, thr_a=None, thr_b=None, weights=None, **kw):
    """softedge_hed: the HED edge probability x 255 (HxW)."""
    return _hed_map(image, res, weights)


def hed_safe(image, res=512, thr_a=None, thr_b=None, weights=None, **kw):
    """softedge_hedsafe: the probability quantised by safe_step (0, 127 or 255)."""
    return _hed_map(image, res, weights, safe=True)


def scribble_hed(image, res=512, thr_a=None, thr_b=None, weights=None, **kw):
    """scribble_hed: the HED map (without padding) through the scribble rule."""
    return scribble(_hed_map(image, res, weights))


# ---- PiDiNet (table5: carv4, CDCM dilation 24, CSAM attention) ------------------------------------------------

# the 16 pixel-difference layers in order, and their operation in the carv4 configuration
PDC_LAYERS = ("init_block", "block1_1", "block1_2", "block1_3") + tuple(
    f"block{s}_{i}" for s in (2, 3, 4) for i in (1, 2, 3, 4))
PDC_OPS = dict(zip(PDC_LAYERS, ("cd", "ad", "rd", "cv") * 4))

# angular difference: each ring tap minus the next one clockwise; as a kernel, w - w[_AD_SOURCE]
_AD_SOURCE = [3, 0, 1, 6, 4, 2, 7, 8, 5]
# radial difference: the 8 outer taps of a 5x5 kernel (distance 2) and the inner ones (distance 1) they pair with
_RD_OUTER = [0, 2, 4, 10, 14, 20, 22, 24]
_RD_INNER = [6, 7, 8, 11, 13, 16, 17, 18]


def pdc_key(layer: str) -> str:
    return "init_block.weight" if layer == "init_block" else f"{layer}.conv1.weight"


def convert_pdc(op: str, weight: torch.Tensor) -> torch.Tensor:
    """The vanilla convolution kernel equal to pixel-difference convolution `op` with 3x3 kernel `weight`.

    cd (central): sum_i w_i (x_i - x_centre) -> the centre tap loses the kernel's sum. ad (angular):
    sum_i w_i (x_i - x_next clockwise) -> w - w permuted. rd (radial, 5x5): w_1..w_8 on the ring at distance
    2 minus the same on the ring at distance 1 (the original uses taps 1..8 and drops tap 0)."""
    if op == "cv":
        return weight
    cout, cin = weight.shape[:2]
    flat = weight.reshape(cout, cin, 9)
    if op == "cd":
        kernel = flat.clone()
        kernel[:, :, 4] = flat[:, :, 4] - flat.sum(dim=2)
        return kernel.reshape(weight.shape)
    if op == "ad":
        return (flat - flat[:, :, _AD_SOURCE]).reshape(weight.shape)
    if op == "rd":
        kernel = weight.new_zeros(cout, cin, 25)
        kernel[:, :, _RD_OUTER] = flat[:, :, 1:]
        kernel[:, :, _RD_INNER] = -flat[:, :, 1:]
        return kernel.reshape(cout, cin, 5, 5)
    raise ValueError(f"unknown pixel-difference operation {op!r}")


def convert_pidinet(sd: dict, path) -> dict:
    """The published (pixel-difference, all 3x3) state dict with every difference kernel replaced by its
    vanilla equivalent; other entries as they are."""
    out = dict(sd)
    for layer, op in PDC_OPS.items():
        key = pdc_key(layer)
        w = sd.get(key)
        if w is None:
            continue  # load_strict names the missing key
        if not isinstance(w, torch.Tensor) or w.ndim != 4 or tuple(w.shape[2:]) != (3, 3):
            shape = tuple(w.shape) if isinstance(w, torch.Tensor) else type(w).__name__
            raise AnnotatorError(f"{Path(path).name}: not the expected weights: {key} is {shape}, expected a "
                                 "3x3 pixel-difference kernel")
        out[key] = convert_pdc(op, w.float())
    return out


class PDCBlock(nn.Module):
    """Depthwise (converted) pixel-difference conv, ReLU, 1x1 conv, plus the input; stride 2 max-pools first
    and maps the shortcut with a 1x1 conv."""

    def __init__(self, op: str, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.stride = stride
        if stride > 1:
            self.shortcut = nn.Conv2d(cin, cout, 1)
        k = 5 if op == "rd" else 3
        self.conv1 = nn.Conv2d(cin, cin, k, padding=k // 2, groups=cin, bias=False)
        self.conv2 = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = F.max_pool2d(x, 2, 2)
        y = self.conv2(F.relu(self.conv1(x)))
        return y + (self.shortcut(x) if self.stride > 1 else x)


class CSAM(nn.Module):
    """Compact spatial attention: x times a sigmoid mask from ReLU, 1x1 (to 4) and 3x3 (to 1) convs."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, 4, 1)
        self.conv2 = nn.Conv2d(4, 1, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.conv2(self.conv1(F.relu(x))))


class CDCM(nn.Module):
    """Compact dilation convolutions: ReLU, 1x1 conv, then the sum of four 3x3 convs dilated 5, 7, 9, 11."""

    DILATIONS = (5, 7, 9, 11)

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 1)
        for i, d in enumerate(self.DILATIONS, 1):
            setattr(self, f"conv2_{i}", nn.Conv2d(cout, cout, 3, dilation=d, padding=d, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(F.relu(x))
        return sum(getattr(self, f"conv2_{i}")(x) for i in range(1, len(self.DILATIONS) + 1))


class MapReduce(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class PiDiNet(nn.Module):
    """table5_pidinet with its difference convolutions converted: four stages (60, 120, 240, 240 channels),
    each side output through CDCM + CSAM + a 1x1 reduction, upsampled and fused; returns the fused edge
    probability (1x1xHxW) of a BGR image in [0, 1]."""

    def __init__(self, width: int = 60, dil: int = 24):
        super().__init__()
        ops = [PDC_OPS[name] for name in PDC_LAYERS]
        self.init_block = nn.Conv2d(3, width, 5 if ops[0] == "rd" else 3, padding=2 if ops[0] == "rd" else 1,
                                    bias=False)
        planes = [width, 2 * width, 4 * width, 4 * width]
        cin = width
        for stage, n in zip((1, 2, 3, 4), (3, 4, 4, 4)):
            for i in range(1, n + 1):
                layer = f"block{stage}_{i}"
                stride = 2 if stage > 1 and i == 1 else 1
                setattr(self, layer, PDCBlock(PDC_OPS[layer], cin, planes[stage - 1], stride))
                cin = planes[stage - 1]
        self.conv_reduces = nn.ModuleList([MapReduce(dil) for _ in planes])
        self.attentions = nn.ModuleList([CSAM(dil) for _ in planes])
        self.dilations = nn.ModuleList([CDCM(p, dil) for p in planes])
        self.classifier = nn.Conv2d(4, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2:]
        x = self.init_block(x)
        stages = []
        for stage, n in zip((1, 2, 3, 4), (3, 4, 4, 4)):
            for i in range(1, n + 1):
                x = getattr(self, f"block{stage}_{i}")(x)
            stages.append(x)
        sides = []
        for i, xi in enumerate(stages):
            e = self.conv_reduces[i](self.attentions[i](self.dilations[i](xi)))
            sides.append(F.interpolate(e, (h, w), mode="bilinear", align_corners=False))
        return torch.sigmoid(self.classifier(torch.cat(sides, dim=1)))


def pidinet_probability(net: PiDiNet, image: np.ndarray) -> np.ndarray:
    """The float32 HxW fused edge probability of an RGB uint8 image (fed as BGR / 255, as the extension)."""
    dev = next(net.parameters()).device
    with torch.no_grad():
        x = torch.from_numpy(image[:, :, ::-1].copy()).float().to(dev) / 255.0
        return net(x.permute(2, 0, 1)[None])[0, 0].float().cpu().numpy()


def pidinet_net(path: Path) -> PiDiNet:
    def build():
        net = PiDiNet()
        load_strict(net, convert_pidinet(load_state_dict(path), path), path)
        return net.to(device()).eval()

    return cached("pidinet", [path], build)


def _pidinet_map(image, res: int, weights: dict, safe: bool = False, sketch: bool = False) -> np.ndarray:
    padded, hw = pp.resize_with_pad(image, res)
    edge = pidinet_probability(pidinet_net(weights[PIDINET_FILE]), padded)
    if sketch:
        edge = edge > 0.5
    if safe:
        edge = safe_step(edge)
    return pp.unpad(to_uint8(edge), hw)


def pidinet(image, res=512, thr_a=None, thr_b=None, weights=None, **kw):
    """softedge_pidinet: the PiDiNet edge probability x 255 (HxW)."""
    return _pidinet_map(image, res, weights)


def pidinet_safe(image, res=512, thr_a=None, thr_b=None, weights=None, **kw):
    """softedge_pidisafe: the probability quantised by safe_step."""
    return _pidinet_map(image, res, weights, safe=True)


def pidinet_sketch(image, res=512, thr_a=None, thr_b=None, weights=None, **kw):
    """t2ia_sketch_pidi: 255 where the probability is above 0.5."""
    return _pidinet_map(image, res, weights, sketch=True)


def pidinet_scribble(image, res=512, thr_a=None, thr_b=None, weights=None, **kw):
    """scribble_pidinet: the PiDiNet map (without padding) through the scribble rule."""
    return scribble(_pidinet_map(image, res, weights))


for _name, _fn in (("hed", hed), ("hed_safe", hed_safe), ("scribble_hed", scribble_hed), ("pidinet", pidinet),
                   ("pidinet_safe", pidinet_safe), ("pidinet_sketch", pidinet_sketch),
                   ("pidinet_scribble", pidinet_scribble)):
    pp.register_network(_name, _fn)
