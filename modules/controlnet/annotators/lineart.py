"""Line art annotators: lineart (lineart_realistic), lineart_coarse, lineart_anime, lineart_anime_denoise.

Three networks, written with the parameter names of the published files (lllyasviel/Annotators):

* :class:`SketchGenerator` -- ``sk_model.pth`` (realistic) and ``sk_model2.pth`` (coarse): a ResNet-style
  image-to-image generator (7x7 stem, two stride-2 convs, three residual blocks, two transposed convs,
  7x7 head, sigmoid), instance norm without affine parameters, reflection padding. Input RGB in [0, 1].
* :class:`AnimeUnet` -- ``netG.pth``: the pix2pix U-Net with 8 down-samplings (4x4 convs, instance norm
  without parameters, so every conv has a bias), tanh output. Input RGB in [-1, 1], sides multiple of 256.
* :class:`MangaLineNet` -- ``erika.pth``: the residual U-Net of MangaLineExtraction (BatchNorm, eps 1e-3 ->
  LeakyReLU 0.2 -> conv units, nearest up-sampling). Input: the grey picture in 0..255, output 0..255.

The maps are the extension's (scripts/processor.py around annotator/lineart, lineart_anime, manga_line):
the image is resized so its short side is ``res`` and edge-padded to multiples of 64, the network's line
picture is inverted (white lines on black) and the padding cut off again; each map is HxW uint8.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn as nn

from modules.controlnet import preprocessors as pp
from modules.controlnet.annotators import cached, device, load_state_dict, load_strict

REALISTIC, COARSE, ANIME, MANGA = "sk_model.pth", "sk_model2.pth", "netG.pth", "erika.pth"


# ---- sk_model.pth / sk_model2.pth -----------------------------------------------------------------

class _SketchResBlock(nn.Module):
    """x + (pad, 3x3 conv, norm, ReLU, pad, 3x3 conv, norm)."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3), nn.InstanceNorm2d(ch), nn.ReLU(inplace=True),
            nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3), nn.InstanceNorm2d(ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


class SketchGenerator(nn.Module):
    """The informative-drawings generator of sk_model(2).pth: 3 -> 1 channel, 3 residual blocks at 1/4
    size with 256 channels; the output is a line picture in [0, 1] (1 = paper)."""

    def __init__(self, in_ch: int = 3, out_ch: int = 1, n_blocks: int = 3):
        super().__init__()
        self.model0 = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(in_ch, 64, 7), nn.InstanceNorm2d(64),
                                    nn.ReLU(inplace=True))
        down: list[nn.Module] = []
        for c in (64, 128):
            down += [nn.Conv2d(c, 2 * c, 3, stride=2, padding=1), nn.InstanceNorm2d(2 * c), nn.ReLU(inplace=True)]
        self.model1 = nn.Sequential(*down)
        self.model2 = nn.Sequential(*[_SketchResBlock(256) for _ in range(n_blocks)])
        up: list[nn.Module] = []
        for c in (256, 128):
            up += [nn.ConvTranspose2d(c, c // 2, 3, stride=2, padding=1, output_padding=1),
                   nn.InstanceNorm2d(c // 2), nn.ReLU(inplace=True)]
        self.model3 = nn.Sequential(*up)
        self.model4 = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(64, out_ch, 7), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage in (self.model0, self.model1, self.model2, self.model3, self.model4):
            x = stage(x)
        return x


# ---- netG.pth -------------------------------------------------------------------------------------

class _UnetLevel(nn.Module):
    """One level of the pix2pix U-Net: down-conv, the inner levels, up-conv; every level but the outermost
    returns its input concatenated with that result (the skip connection)."""

    def __init__(self, outer: int, inner: int, in_ch: int | None = None, sub: nn.Module | None = None,
                 outermost: bool = False):
        super().__init__()
        self.outermost = outermost
        in_ch = outer if in_ch is None else in_ch
        downconv = nn.Conv2d(in_ch, inner, 4, stride=2, padding=1)
        if outermost:
            layers = [downconv, sub, nn.ReLU(True), nn.ConvTranspose2d(2 * inner, outer, 4, stride=2, padding=1),
                      nn.Tanh()]
        elif sub is None:  # the innermost level: no norm after its down-conv, no skip input to its up-conv
            layers = [nn.LeakyReLU(0.2, True), downconv, nn.ReLU(True),
                      nn.ConvTranspose2d(inner, outer, 4, stride=2, padding=1), nn.InstanceNorm2d(outer)]
        else:
            layers = [nn.LeakyReLU(0.2, True), downconv, nn.InstanceNorm2d(inner), sub, nn.ReLU(True),
                      nn.ConvTranspose2d(2 * inner, outer, 4, stride=2, padding=1), nn.InstanceNorm2d(outer)]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) if self.outermost else torch.cat([x, self.model(x)], 1)


class AnimeUnet(nn.Module):
    """netG.pth: UnetGenerator(3, 1, num_downs=8, ngf=64) with parameter-free instance norm; tanh output
    in [-1, 1] (1 = paper)."""

    def __init__(self, in_ch: int = 3, out_ch: int = 1, num_downs: int = 8, ngf: int = 64):
        super().__init__()
        level = _UnetLevel(8 * ngf, 8 * ngf)
        for _ in range(num_downs - 5):
            level = _UnetLevel(8 * ngf, 8 * ngf, sub=level)
        for mult in (4, 2, 1):
            level = _UnetLevel(mult * ngf, 2 * mult * ngf, sub=level)
        self.model = _UnetLevel(out_ch, ngf, in_ch=in_ch, sub=level, outermost=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


# ---- erika.pth ------------------------------------------------------------------------------------

class _Unit(nn.Module):
    """BatchNorm (eps 1e-3) -> LeakyReLU 0.2 -> conv (zero padding k // 2), then x2 nearest if `up`."""

    def __init__(self, cin: int, cout: int, k: int = 3, stride: int = 1, up: bool = False):
        super().__init__()
        layers = [nn.BatchNorm2d(cin, eps=1e-3), nn.LeakyReLU(0.2), nn.Conv2d(cin, cout, k, stride=stride,
                                                                                padding=k // 2)]
        if up:
            layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class _Shortcut(nn.Module):
    """The block's input, through a 1x1 conv (and x2 nearest) where channels or scale change."""

    def __init__(self, cin: int, cout: int, stride: int = 1, up: bool = False):
        super().__init__()
        self.model = None
        if cin != cout or stride != 1:
            layers: list[nn.Module] = [nn.Conv2d(cin, cout, 1, stride=stride)]
            if up:
                layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
            self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.model is None else self.model(x)


class _MangaBlock(nn.Module):
    """shortcut(x) + residual(conv1(x)); conv1 strides by 2 (down) or is followed by x2 (up)."""

    def __init__(self, cin: int, cout: int, stride: int = 1, up: bool = False):
        super().__init__()
        self.conv1 = _Unit(cin, cout, stride=stride, up=up)
        self.residual = _Unit(cout, cout)
        self.shortcut = _Shortcut(cin, cout, stride=stride, up=up)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.residual(self.conv1(x))


class _MangaStage(nn.Module):
    """`reps` blocks cin -> cout; a down stage halves the size in its last block, an up stage doubles it
    in its first."""

    def __init__(self, cin: int, cout: int, reps: int, mode: str = "down"):
        super().__init__()
        blocks = []
        for i in range(reps):
            stride = 2 if mode == "down" and i == reps - 1 else 1
            blocks.append(_MangaBlock(cin if i == 0 else cout, cout, stride=stride, up=mode == "up" and i == 0))
        self.model = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class MangaLineNet(nn.Module):
    """erika.pth (res_skip): 1 -> 1 channel, 4 halvings (sides must be multiples of 16), the encoder's
    outputs added to the decoder's at each scale."""

    def __init__(self):
        super().__init__()
        self.block0 = _MangaStage(1, 24, 2, "same")
        self.block1 = _MangaStage(24, 48, 3)
        self.block2 = _MangaStage(48, 96, 5)
        self.block3 = _MangaStage(96, 192, 7)
        self.block4 = _MangaStage(192, 384, 12)
        self.block5 = _MangaStage(384, 192, 7, "up")
        self.block6 = _MangaStage(192, 96, 5, "up")
        self.block7 = _MangaStage(96, 48, 3, "up")
        self.block8 = _MangaStage(48, 24, 2, "up")
        self.block9 = _MangaStage(24, 16, 2, "same")
        self.conv15 = _Unit(16, 1, k=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x0 = self.block0(x)
        x1 = self.block1(x0)
        x2 = self.block2(x1)
        x3 = self.block3(x2)
        y = self.block5(self.block4(x3)) + x3
        y = self.block6(y) + x2
        y = self.block7(y) + x1
        y = self.block8(y) + x0
        return self.conv15(self.block9(y))


# ---- loading --------------------------------------------------------------------------------------

_BUILDERS = {REALISTIC: SketchGenerator, COARSE: SketchGenerator, ANIME: AnimeUnet, MANGA: MangaLineNet}


def _fill_batch_counters(net: nn.Module, sd: dict) -> dict:
    """BatchNorm's num_batches_tracked where a file leaves it out (torch itself accepts such files; the
    counter plays no part in eval)."""
    out = dict(sd)
    for k, v in net.state_dict().items():
        if k.endswith(".num_batches_tracked") and k not in out and k[:-len("num_batches_tracked")] + "running_mean" in out:
            out[k] = torch.zeros_like(v)
    return out


def build(filename: str, path) -> nn.Module:
    """The network of one of the four files, loaded strictly (an AnnotatorError naming the file when it
    does not fit), in eval mode on the annotator device."""
    sd = load_state_dict(path)
    with torch.device("meta"):  # no random init of tens of millions of weights about to be overwritten
        net = _BUILDERS[filename]()
    net = net.to_empty(device=device())
    load_strict(net, _fill_batch_counters(net, sd), path)  # strict: every parameter and buffer is set
    return net.eval()


def network(filename: str, path) -> nn.Module:
    return cached(f"lineart:{filename}", [Path(path)], lambda: build(filename, path))


def _run(net: nn.Module, x: np.ndarray) -> np.ndarray:
    """net(x) on the annotator device for a float32 NCHW array; the first channel of the first image."""
    with torch.inference_mode():
        y = net(torch.from_numpy(np.ascontiguousarray(x)).to(device()))
    return y[0, 0].float().cpu().numpy()


# ---- the extension's wrappers ---------------------------------------------------------------------

def sketch_map(line: np.ndarray) -> np.ndarray:
    """sk_model output (0..1, 1 = paper) -> the map: x255, clipped, truncated to uint8, inverted."""
    return 255 - (line * 255.0).clip(0, 255).astype(np.uint8)


def anime_map(line: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """netG output (-1..1 at the 256-multiple size) -> *127.5 + 127.5, cubic back to `hw` (the padded
    size), clipped, uint8, inverted."""
    line = line * 127.5 + 127.5
    line = cv2.resize(line, (hw[1], hw[0]), interpolation=cv2.INTER_CUBIC)
    return 255 - line.clip(0, 255).astype(np.uint8)


def manga_map(line: np.ndarray) -> np.ndarray:
    """erika output (0..255, 255 = paper) -> 255 - x, clipped, uint8."""
    return (255 - line).clip(0, 255).astype(np.uint8)


def _sketch(filename: str):
    def run(image, res=pp.DEFAULT_RES, thr_a=None, thr_b=None, weights=None, **kw):
        padded, hw = pp.resize_with_pad(image, res)
        x = (torch.from_numpy(padded).float() / 255.0).permute(2, 0, 1)[None].numpy()
        return pp.unpad(sketch_map(_run(network(filename, weights[filename]), x)), hw)

    run.__doc__ = f"lineart with {filename}: the padded RGB / 255 through the generator, inverted."
    return run


lineart_realistic = _sketch(REALISTIC)
lineart_coarse = _sketch(COARSE)


def lineart_anime(image, res=pp.DEFAULT_RES, thr_a=None, thr_b=None, weights=None, **kw):
    """The padded image cubic-resized up to multiples of 256, RGB / 127.5 - 1 through netG, the result
    cubic-resized back, inverted."""
    padded, hw = pp.resize_with_pad(image, res)
    h, w = padded.shape[:2]
    hn, wn = 256 * int(np.ceil(h / 256.0)), 256 * int(np.ceil(w / 256.0))
    big = cv2.resize(padded, (wn, hn), interpolation=cv2.INTER_CUBIC)
    x = (torch.from_numpy(big).float() / 127.5 - 1.0).permute(2, 0, 1)[None].numpy()
    return pp.unpad(anime_map(_run(network(ANIME, weights[ANIME]), x), (h, w)), hw)


def lineart_anime_denoise(image, res=pp.DEFAULT_RES, thr_a=None, thr_b=None, weights=None, **kw):
    """The padded image's grey (cv2 RGB2GRAY, 0..255, not rescaled) through erika, 255 - the result."""
    padded, hw = pp.resize_with_pad(image, res)
    grey = cv2.cvtColor(padded, cv2.COLOR_RGB2GRAY).astype(np.float32)[None, None]
    return pp.unpad(manga_map(_run(network(MANGA, weights[MANGA]), grey)), hw)


pp.register_network("lineart", lineart_realistic)
pp.register_network("lineart_coarse", lineart_coarse)
pp.register_network("lineart_anime", lineart_anime)
pp.register_network("lineart_anime_denoise", lineart_anime_denoise)
