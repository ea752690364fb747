"""LeReS depth (``depth_leres``) and its Boosting Monocular Depth variant (``depth_leres++``).

LeReS (AdelaiDepth) is a ResNeXt-101 (32x8d) encoder with the decoder of Xian et al. (FTB / FFM / AO
blocks); ``res101.pth`` holds it under ``depth_model`` with DataParallel's ``module.`` prefix, the keys
being ``depth_model.encoder_modules.encoder.*`` and ``depth_model.decoder_modules.*`` once that prefix is
gone. ``latest_net_G.pth`` is the pix2pix merge network of Boosting Monocular Depth (a 10-level U-Net on
1024x1024, 2 depth maps in, 1 out, no normalisation layers), a plain state dict (``model.model.*``).

The inference is sd-webui-controlnet's, quirks included, so the maps match it:

* the padded RGB image is fed in BGR order, as float 0..255 minus the ImageNet mean over its std (the
  extension's ``ToTensor`` gets a float array and so does not divide by 255);
* the network is never put in eval mode there, so every BatchNorm normalises with the statistics of the
  image itself (:data:`BATCH_STATISTICS`); the running averages in the file are not used;
* FTB's first branch ReLU works in place in the original, so its residual adds the rectified conv output;
  that is written out here (the U-Net's in-place LeakyReLU likewise changes its skips, but a ReLU follows
  each of them, so it has no effect);
* depth_leres++ runs the boost of Miangoleh et al.: a double estimate (448 px and the R20 size) merged by
  the pix2pix net, then, where the image is at least R20 wide, patches refined and blended in;
* the depth is scaled to 16 bit, to 8 bit, "Remove Near %" zeroes values at or below thr_a% before the
  inversion, "Remove Background %" those at or below thr_b% after it. The map is HxW uint8, as the
  extension's preprocessor returns it (its HWC3 comes later, when the map is used).
"""
from __future__ import annotations

import logging
import warnings

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from modules.controlnet import preprocessors
from modules.controlnet.annotators import cached, device, load_state_dict, load_strict

log = logging.getLogger(__name__)

LERES_FILE = "res101.pth"
MERGE_FILE = "latest_net_G.pth"

MEAN = (0.485, 0.456, 0.406)  # applied to the BGR channels in this order, as the extension does
STD = (0.229, 0.224, 0.225)

# The extension never calls .eval() on the LeReS model: its BatchNorms use each image's own statistics.
BATCH_STATISTICS = True

RECEPTIVE_FIELD = 448  # LeReS's receptive field: the low-resolution size of the double estimate
PATCH_SIZE = 2 * RECEPTIVE_FIELD  # the high-resolution size used for patches
MERGE_SIZE = 1024  # the pix2pix merge network's input size
R_MAX = 1600  # whole_size_threshold: the largest whole-image processing size
R_CONFIDENCE = 0.2  # the x of R_x: share of pixels allowed without context
SCALE_THRESHOLD = 3  # at most 3x upscaling of the image for the whole estimate
SPEED_SCALE = 32  # the R_x search runs on the gradient map scaled down by this


# ---- LeReS: ResNeXt-101 32x8d encoder + decoder ---------------------------------------------------

class _BatchNorm(nn.BatchNorm2d):
    """BatchNorm2d that, like the extension's model left in training mode, normalises with the batch's own
    statistics (without updating the stored running averages, which nothing reads)."""

    def forward(self, x):
        if not BATCH_STATISTICS:
            return super().forward(x)
        return F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)


class _Bottleneck(nn.Module):
    """torchvision's ResNeXt bottleneck (stride on the grouped 3x3)."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, groups: int = 32, base_width: int = 8):
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = _BatchNorm(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, groups=groups, bias=False)
        self.bn2 = _BatchNorm(width)
        self.conv3 = nn.Conv2d(width, planes * 4, 1, bias=False)
        self.bn3 = _BatchNorm(planes * 4)
        self.downsample = None
        if stride != 1 or inplanes != planes * 4:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes * 4, 1, stride, bias=False),
                                            _BatchNorm(planes * 4))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNeXt101(nn.Module):
    """ResNeXt-101 32x8d without its classifier; returns the four stage outputs (1/4 .. 1/32)."""

    def __init__(self, layers=(3, 4, 23, 3)):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = _BatchNorm(64)
        inplanes = 64
        for i, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers)):
            stage = []
            for b in range(blocks):
                stage.append(_Bottleneck(inplanes, planes, stride=2 if b == 0 and i > 0 else 1))
                inplanes = planes * 4
            setattr(self, f"layer{i + 1}", nn.Sequential(*stage))

    def forward(self, x) -> list:
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        features = []
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
            features.append(x)
        return features


class _Encoder(nn.Module):
    """AdelaiDepth's DepthNet: only holds the backbone (hence ``encoder_modules.encoder.*``)."""

    def __init__(self):
        super().__init__()
        self.encoder = ResNeXt101()

    def forward(self, x):
        return self.encoder(x)


class _FTB(nn.Module):
    """Feature transfer block: conv, then a residual conv-BN-conv branch. The original's first branch
    ReLU is in place, so the residual adds the rectified conv output; written out here."""

    def __init__(self, inchannels: int, midchannels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(inchannels, midchannels, 3, 1, 1)
        self.conv_branch = nn.Sequential(nn.ReLU(), nn.Conv2d(midchannels, midchannels, 3, 1, 1),
                                         _BatchNorm(midchannels), nn.ReLU(),
                                         nn.Conv2d(midchannels, midchannels, 3, 1, 1))

    def forward(self, x):
        x = F.relu(self.conv1(x))
        return F.relu(x + self.conv_branch(x))


def _up2(x):
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)


class _FFM(nn.Module):
    """Feature fusion: FTB on the skip features, add the coarser path, FTB, upsample x2."""

    def __init__(self, inchannels: int, midchannels: int, outchannels: int):
        super().__init__()
        self.ftb1 = _FTB(inchannels, midchannels)
        self.ftb2 = _FTB(midchannels, outchannels)

    def forward(self, low_x, high_x):
        return _up2(self.ftb2(self.ftb1(low_x) + high_x))


class _AO(nn.Module):
    """Adaptive output: conv-BN-ReLU-conv to one channel, upsample x2."""

    def __init__(self, inchannels: int, outchannels: int):
        super().__init__()
        self.adapt_conv = nn.Sequential(nn.Conv2d(inchannels, inchannels // 2, 3, 1, 1), _BatchNorm(inchannels // 2),
                                        nn.ReLU(), nn.Conv2d(inchannels // 2, outchannels, 3, 1, 1))

    def forward(self, x):
        return _up2(self.adapt_conv(x))


class _Decoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = _FTB(2048, 512)
        self.conv1 = nn.Conv2d(512, 256, 3, 1, 1)
        self.ffm2 = _FFM(1024, 256, 256)
        self.ffm1 = _FFM(512, 256, 256)
        self.ffm0 = _FFM(256, 256, 256)
        self.outconv = _AO(256, 1)

    def forward(self, features):
        x = _up2(self.conv1(self.conv(features[3])))  # 1/32 -> 1/16
        x = self.ffm2(features[2], x)  # -> 1/8
        x = self.ffm1(features[1], x)  # -> 1/4
        x = self.ffm0(features[0], x)  # -> 1/2
        return self.outconv(x)  # -> full size


class DepthModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder_modules = _Encoder()
        self.decoder_modules = _Decoder()

    def forward(self, x):
        return self.decoder_modules(self.encoder_modules(x))


class LeReS(nn.Module):
    """RelDepthModel: the depth model under ``depth_model`` (the key layout of res101.pth). Input
    (N, 3, H, W) with H, W multiples of 32; output (N, 1, H, W) relative depth (larger is farther)."""

    def __init__(self):
        super().__init__()
        self.depth_model = DepthModel()

    def forward(self, x):
        return self.depth_model(x)


# ---- the pix2pix merge network (UnetGenerator "unet_1024", norm "none") ------------------------------

class _UnetBlock(nn.Module):
    """One U-Net level. The Sequential keeps pix2pix's indices (identity "norm" layers included) so the
    keys match. (The original's in-place LeakyReLU turns the skip into LeakyReLU(x); the enclosing level's
    ReLU makes that the same as x.)"""

    def __init__(self, outer_nc: int, inner_nc: int, input_nc: int | None = None, sub: nn.Module | None = None,
                 outermost: bool = False, innermost: bool = False):
        super().__init__()
        self.outermost = outermost
        down = nn.Conv2d(input_nc or outer_nc, inner_nc, 4, 2, 1, bias=False)
        if outermost:
            layers = [down, sub, nn.ReLU(), nn.ConvTranspose2d(inner_nc * 2, outer_nc, 4, 2, 1), nn.Tanh()]
        elif innermost:
            layers = [nn.LeakyReLU(0.2), down, nn.ReLU(), nn.ConvTranspose2d(inner_nc, outer_nc, 4, 2, 1, bias=False),
                      nn.Identity()]
        else:
            layers = [nn.LeakyReLU(0.2), down, nn.Identity(), sub, nn.ReLU(),
                      nn.ConvTranspose2d(inner_nc * 2, outer_nc, 4, 2, 1, bias=False), nn.Identity()]
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        if self.outermost:
            return self.model(x)
        return torch.cat([x, self.model(x)], 1)


class MergeNet(nn.Module):
    """The merge U-Net: (N, 2, S, S) in [-1, 1] (low-res estimate, high-res estimate) -> (N, 1, S, S) in
    [-1, 1]; S must be a multiple of 2**num_downs (1024 for the published 10 levels)."""

    def __init__(self, num_downs: int = 10, input_nc: int = 2, output_nc: int = 1, ngf: int = 64):
        super().__init__()
        block = _UnetBlock(ngf * 8, ngf * 8, innermost=True)
        for _ in range(num_downs - 5):
            block = _UnetBlock(ngf * 8, ngf * 8, sub=block)
        block = _UnetBlock(ngf * 4, ngf * 8, sub=block)
        block = _UnetBlock(ngf * 2, ngf * 4, sub=block)
        block = _UnetBlock(ngf, ngf * 2, sub=block)
        self.model = _UnetBlock(output_nc, ngf, input_nc=input_nc, sub=block, outermost=True)

    def forward(self, x):
        return self.model(x)


# ---- loading ---------------------------------------------------------------------------------------

def _unfilled(cls) -> nn.Module:
    """The network with uninitialised tensors on the annotator device: every one is overwritten by the strict
    load, so the 115M-parameter random init is skipped."""
    with torch.device("meta"):
        net = cls()
    return net.to_empty(device=device())


def load_leres(path) -> LeReS:
    """res101.pth: its ``depth_model`` entry, ``module.`` stripped (a bare state dict, with or without the
    ``depth_model.`` level, is accepted too)."""
    sd = load_state_dict(path, unwrap=("depth_model", "state_dict", "model"))
    if sd and not any(k.startswith("depth_model.") for k in sd):
        sd = {f"depth_model.{k}": v for k, v in sd.items()}
    net = _unfilled(LeReS)
    load_strict(net, sd, path)
    return net.eval()


def load_merge(path) -> MergeNet:
    """latest_net_G.pth: the generator's plain state dict."""
    net = _unfilled(MergeNet)
    load_strict(net, load_state_dict(path), path)
    return net.eval()


# ---- single and double estimates ---------------------------------------------------------------------

def estimate(img: np.ndarray, net: LeReS, w: int, h: int) -> np.ndarray:
    """The extension's estimateleres: the RGB image as BGR resized (bilinear) to w x h, normalised, the
    network's depth brought back to the image's size (cubic). float32 HxW."""
    bgr = cv2.resize(np.ascontiguousarray(img[:, :, ::-1]), (w, h)).astype(np.float32)
    x = (bgr - np.array(MEAN, np.float32)) / np.array(STD, np.float32)
    x = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]
    dev = next(net.parameters()).device
    with torch.no_grad():
        pred = net(x.to(dev)).squeeze().float().cpu().numpy()
    return cv2.resize(pred, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_CUBIC)


def _to_unit(x: torch.Tensor) -> torch.Tensor:
    return (x - torch.min(x)) / (torch.max(x) - torch.min(x))


def merge(merge_net: MergeNet, outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """Pix2Pix4DepthModel.set_input + test: both maps scaled to [-1, 1] by their own range, stacked
    (outer first), through the net; returns (fake_B + 1) / 2 as float32 HxW."""
    a = _to_unit(torch.from_numpy(np.ascontiguousarray(outer, np.float32))[None, None]) * 2 - 1
    b = _to_unit(torch.from_numpy(np.ascontiguousarray(inner, np.float32))[None, None]) * 2 - 1
    dev = next(merge_net.parameters()).device
    with torch.no_grad():
        fake = merge_net(torch.cat((a, b), 1).to(dev)).float().cpu()
    return ((fake + 1) / 2).squeeze().numpy()


def double_estimate(img, size1: int, size2: int, net, merge_net) -> np.ndarray:
    """Estimates at size1 and size2 (square), both cubic to MERGE_SIZE, merged, scaled to [0, 1]."""
    low = cv2.resize(estimate(img, net, size1, size1), (MERGE_SIZE, MERGE_SIZE), interpolation=cv2.INTER_CUBIC)
    high = cv2.resize(estimate(img, net, size2, size2), (MERGE_SIZE, MERGE_SIZE), interpolation=cv2.INTER_CUBIC)
    mapped = torch.from_numpy(merge(merge_net, low, high))
    return _to_unit(mapped).numpy()


# ---- the boost: R_x search, patch selection, merging ---------------------------------------------------

def _gray(rgb: np.ndarray) -> np.ndarray:
    return np.dot(rgb[..., :3], [0.2989, 0.5870, 0.1140])


def _gradient(rgb: np.ndarray) -> np.ndarray:
    g = _gray(rgb)
    return np.abs(cv2.Sobel(g, cv2.CV_64F, 0, 1, ksize=3)) + np.abs(cv2.Sobel(g, cv2.CV_64F, 1, 0, ksize=3))


def _max_pool(x: np.ndarray, n: int) -> np.ndarray:
    """skimage's block_reduce(x, (n, n), np.max): zero-padded at the end to whole blocks."""
    h, w = x.shape
    padded = np.zeros((-(-h // n) * n, -(-w // n) * n), x.dtype)
    padded[:h, :w] = x
    return padded.reshape(padded.shape[0] // n, n, padded.shape[1] // n, n).max(axis=(1, 3))


def processing_res(img: np.ndarray, basesize: int = RECEPTIVE_FIELD, confidence: float = R_CONFIDENCE,
                   scale_threshold: float = SCALE_THRESHOLD, whole_size_threshold: float = R_MAX
                   ) -> tuple[int, float | None]:
    """(R_x, patch_scale): the largest size at which at most `confidence` of the (dilated) edge map has
    no context, searched on a 1/32 grid; patch_scale is the edge density of a quarter-field dilation.

    The extension resizes with ``cv2.resize(x, size, cv2.INTER_*)``, whose third argument is the output
    array, so both resizes are bilinear; that is kept. Where the search range is empty (images under
    ~160 px) the extension fails on the undefined patch map; here R_x is then 448 and patch_scale None
    (it is only read when the image is at least R_x wide, which such an image never is)."""
    image_dim = int(min(img.shape[:2]))
    grad = cv2.resize(_gradient(img), (image_dim, image_dim))
    m, big = grad.min(), grad.max()
    middle = m + 0.4 * (big - m)
    grad = np.where(grad < middle, 0.0, 1.0)
    kernel = np.ones((int(basesize / SPEED_SCALE),) * 2, float)
    kernel2 = np.ones((int(basesize / (4 * SPEED_SCALE)),) * 2, float)
    threshold = min(whole_size_threshold, scale_threshold * max(img.shape[:2]))
    best = basesize / SPEED_SCALE
    resized = None
    for p_size in range(int(basesize / SPEED_SCALE), int(threshold / SPEED_SCALE), int(basesize / (2 * SPEED_SCALE))):
        resized = cv2.resize(_max_pool(grad, int(np.floor(image_dim / p_size))), (p_size, p_size))
        resized = np.where(resized >= 0.5, 1.0, 0.0)
        if (1 - cv2.dilate(resized, kernel, iterations=1)).mean() > confidence:
            break
        best = p_size
    patch_scale = None if resized is None else float(cv2.dilate(resized, kernel2, iterations=1).mean())
    return int(best * SPEED_SCALE), patch_scale


def _grid_patches(blsize: int, stride: int, img: np.ndarray) -> list[list[int]]:
    """Squares of 2*blsize ([x, y, w, h]) every `stride` px, columns outer, rows inner."""
    rects = []
    for k in range(blsize, img.shape[1] - blsize, stride):
        for j in range(blsize, img.shape[0] - blsize, stride):
            rects.append([k - blsize, j - blsize, 2 * blsize, 2 * blsize])
    return rects


def _density(integral: np.ndarray, rect) -> float:
    x, y, w, h = rect
    return (integral[y + h, x + w] - integral[y, x + w] - integral[y + h, x] + integral[y, x]) / (w * h)


def select_patches(img: np.ndarray, base_size: int, factor: float) -> list[list[int]]:
    """generatepatchs + adaptiveselection: grid squares of base_size whose edge density reaches the
    image's, each grown by int(32/factor) while it stays inside and dense enough; biggest first."""
    grad = _gradient(img)
    positive = grad[grad > 0]
    if positive.size:
        grad[grad < positive.mean()] = 0
    gf = grad.sum() / grad.size
    integral = cv2.integral(grad)
    height, width = integral.shape
    blsize = int(round(base_size / 2))
    step = int(32 / factor)
    chosen = []
    for rect in _grid_patches(blsize, int(round(blsize * 0.75)), img):
        if _density(integral, rect) < gf:
            continue
        test = list(rect)
        while True:
            test = [test[0] - step // 2, test[1] - step // 2, test[2] + step, test[3] + step]
            if test[0] < 0 or test[1] < 0 or test[1] + test[3] >= height or test[0] + test[2] >= width:
                break
            if _density(integral, test) < gf:
                break
            rect = list(test)
        chosen.append(rect)
    return sorted(chosen, key=lambda r: r[2], reverse=True)  # stable, as the extension's sort


def gaussian_box(size: int) -> np.ndarray:
    """generatemask((size, size)): a box with 15% margins, cv2.GaussianBlur'ed (kernel 2*ceil(size/8)+1,
    sigma size/16, reflect-101 border), scaled to [0, 1]. Box and blur are separable, so this is the outer
    product of the blurred 1-D box: for the 3000 px mask 0.2 s instead of half a minute."""
    margin = int(0.15 * size)
    k = int(2 * np.ceil(2 * int(size / 16)) + 1)
    line = np.zeros(size, np.float64)
    line[margin:size - margin] = 1
    kernel = cv2.getGaussianKernel(k, int(size / 16))[:, 0]
    line = np.convolve(np.pad(line, k // 2, mode="reflect"), kernel, "valid")
    mask = np.outer(line, line)
    return ((mask - mask.min()) / (mask.max() - mask.min())).astype(np.float32)


_MASK: np.ndarray | None = None


def blend_mask() -> np.ndarray:
    """The 3000x3000 mask patches are blended with (built once)."""
    global _MASK
    if _MASK is None:
        _MASK = gaussian_box(3000)
    return _MASK


def _linear_fit(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """np.polyfit(x, y, 1) on the float32 maps, as the extension calls it, without its RankWarning. With
    float32 input polyfit's default rcond is len(x) * float32 eps (0.125 for a 1024x1024 map), so where the
    merged map is far from zero-mean the smaller singular value is dropped and the fit is not the least
    squares one; that is what the extension blends, so it is kept."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", getattr(np, "exceptions", np).RankWarning)
        return np.polyfit(x, y, deg=1)


def boost(img: np.ndarray, net, merge_net, max_res: int) -> np.ndarray:
    """estimateboost (LeReS): the double estimate at (448, R20); if max_res reaches R20, the image is
    enlarged, detailed patches get their own double estimate merged into the base one (linear fit to the
    base, Gaussian-masked blend), and the result comes back at the image's size. float HxW."""
    h_in, w_in = img.shape[:2]
    r20, patch_scale = processing_res(img)
    whole = double_estimate(img, RECEPTIVE_FIELD, r20, net, merge_net)
    if max_res < r20 or patch_scale is None:
        return cv2.resize(whole, (w_in, h_in), interpolation=cv2.INTER_CUBIC)
    factor = max(min(1, 4 * patch_scale * r20 / R_MAX), 0.2)
    if h_in > w_in:
        a, b = 2 * r20, round(2 * r20 * w_in / h_in)
    else:
        a, b = round(2 * r20 * h_in / w_in), 2 * r20
    a, b = int(round(a / factor)), int(round(b / factor))
    big = cv2.resize(img, (b, a), interpolation=cv2.INTER_CUBIC)
    patches = select_patches(big, 2 * RECEPTIVE_FIELD, factor)
    scale = h_in / big.shape[0]
    size = (round(big.shape[1] * scale), round(big.shape[0] * scale))
    rgb = cv2.resize(big, size, interpolation=cv2.INTER_CUBIC)
    base = cv2.resize(whole, size, interpolation=cv2.INTER_CUBIC)
    updated = base.copy()
    log.debug("depth_leres++: %d patches on a %s estimate", len(patches), base.shape)
    for rect in patches:
        x, y, w, h = np.round(np.array(rect) * scale).astype(int)
        patch_rgb = rgb[y:y + h, x:x + w]
        patch_base = base[y:y + h, x:x + w]
        org = patch_base.shape
        patch_est = double_estimate(patch_rgb, RECEPTIVE_FIELD, PATCH_SIZE, net, merge_net)
        patch_est = cv2.resize(patch_est, (MERGE_SIZE, MERGE_SIZE), interpolation=cv2.INTER_CUBIC)
        patch_base = cv2.resize(patch_base, (MERGE_SIZE, MERGE_SIZE), interpolation=cv2.INTER_CUBIC)
        mapped = merge(merge_net, patch_base, patch_est)
        coef = _linear_fit(mapped.reshape(-1), patch_base.reshape(-1))
        merged = np.polyval(coef, mapped.reshape(-1)).reshape(mapped.shape)
        merged = cv2.resize(merged, (org[1], org[0]), interpolation=cv2.INTER_CUBIC)
        mask = cv2.resize(blend_mask(), (org[1], org[0]), interpolation=cv2.INTER_LINEAR)
        region = updated[y:y + h, x:x + w]
        updated[y:y + h, x:x + w] = np.multiply(region, 1 - mask) + np.multiply(merged, mask)
    return cv2.resize(updated, (w_in, h_in), interpolation=cv2.INTER_CUBIC)


# ---- the map ---------------------------------------------------------------------------------------

def depth_to_map(depth: np.ndarray, thr_a: float = 0, thr_b: float = 0) -> np.ndarray:
    """The extension's post-processing: min-max to 16 bit (truncated), to 8 bit, "Remove Near %" (values
    <= thr_a% of 255 set to 0), inversion, "Remove Background %" (values <= thr_b% set to 0). HxW uint8."""
    lo, hi = depth.min(), depth.max()
    if hi - lo > np.finfo("float").eps:
        out = 65535 * (depth - lo) / (hi - lo)
    else:
        out = np.zeros(depth.shape)
    image = cv2.convertScaleAbs(out.astype("uint16"), alpha=255.0 / 65535.0)
    if thr_a != 0:
        image = cv2.threshold(image, (thr_a / 100) * 255, 255, cv2.THRESH_TOZERO)[1]
    image = cv2.bitwise_not(image)
    if thr_b != 0:
        image = cv2.threshold(image, (thr_b / 100) * 255, 255, cv2.THRESH_TOZERO)[1]
    return image


def leres_map(image, res=512, thr_a=0, thr_b=0, weights=None, boost_depth: bool = False, **kw) -> np.ndarray:
    """depth_leres / depth_leres++: resize-with-pad to `res`, estimate (boosted for ++), post-process,
    cut the padding off. HxW uint8."""
    weights = weights or {}
    net = cached("leres", [weights[LERES_FILE]], lambda: load_leres(weights[LERES_FILE]))
    padded, hw = preprocessors.resize_with_pad(image, res)
    height, width = padded.shape[:2]
    if boost_depth:
        merge_net = cached("leres_merge", [weights[MERGE_FILE]], lambda: load_merge(weights[MERGE_FILE]))
        depth = boost(padded, net, merge_net, max(width, height))
    else:
        depth = estimate(padded, net, width, height)
    return preprocessors.unpad(depth_to_map(depth, thr_a, thr_b), hw)


def depth_leres(image, res=512, thr_a=0, thr_b=0, weights=None, **kw):
    return leres_map(image, res, thr_a, thr_b, weights)


def depth_leres_boost(image, res=512, thr_a=0, thr_b=0, weights=None, **kw):
    return leres_map(image, res, thr_a, thr_b, weights, boost_depth=True)


preprocessors.register_network("depth_leres", depth_leres)
preprocessors.register_network("depth_leres++", depth_leres_boost)
