"""HED (ControlNetHED.pth) and PiDiNet (table5_pidinet.pth) soft-edge annotators: the published key layouts,
availability and the map each preprocessor returns, the forward passes against references written here with
torch.nn.functional on the state-dict tensors (PiDiNet's with the pixel-difference convolutions applied
literally, as convolutions of pixel differences), and the extension's post-processing on crafted maps."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from modules.controlnet import preprocessors as pp
from modules.controlnet.annotators import AnnotatorError
from modules.controlnet.annotators import softedge as se

pytestmark = pytest.mark.usefixtures("one_thread")

# ---- the published layouts, from the original definitions (ControlNetHED_Apache2; pidinet() = carv4, dil 24,
# sa) ------------------------------------------------------------------------------------------------------------

HED_KEYS = [
    ("norm", (1, 3, 1, 1)),
    ("block1.convs.0.weight", (64, 3, 3, 3)), ("block1.convs.0.bias", (64,)),
    ("block1.convs.1.weight", (64, 64, 3, 3)), ("block1.convs.1.bias", (64,)),
    ("block1.projection.weight", (1, 64, 1, 1)), ("block1.projection.bias", (1,)),
    ("block2.convs.0.weight", (128, 64, 3, 3)), ("block2.convs.0.bias", (128,)),
    ("block2.convs.1.weight", (128, 128, 3, 3)), ("block2.convs.1.bias", (128,)),
    ("block2.projection.weight", (1, 128, 1, 1)), ("block2.projection.bias", (1,)),
    ("block3.convs.0.weight", (256, 128, 3, 3)), ("block3.convs.0.bias", (256,)),
    ("block3.convs.1.weight", (256, 256, 3, 3)), ("block3.convs.1.bias", (256,)),
    ("block3.convs.2.weight", (256, 256, 3, 3)), ("block3.convs.2.bias", (256,)),
    ("block3.projection.weight", (1, 256, 1, 1)), ("block3.projection.bias", (1,)),
    ("block4.convs.0.weight", (512, 256, 3, 3)), ("block4.convs.0.bias", (512,)),
    ("block4.convs.1.weight", (512, 512, 3, 3)), ("block4.convs.1.bias", (512,)),
    ("block4.convs.2.weight", (512, 512, 3, 3)), ("block4.convs.2.bias", (512,)),
    ("block4.projection.weight", (1, 512, 1, 1)), ("block4.projection.bias", (1,)),
    ("block5.convs.0.weight", (512, 512, 3, 3)), ("block5.convs.0.bias", (512,)),
    ("block5.convs.1.weight", (512, 512, 3, 3)), ("block5.convs.1.bias", (512,)),
    ("block5.convs.2.weight", (512, 512, 3, 3)), ("block5.convs.2.bias", (512,)),
    ("block5.projection.weight", (1, 512, 1, 1)), ("block5.projection.bias", (1,)),
]
HED_LAYERS = ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3))  # block, convs

PIDINET_KEYS = [  # as stored in the file, under "state_dict" with a "module." prefix
    ("init_block.weight", (60, 3, 3, 3)),
    ("block1_1.conv1.weight", (60, 1, 3, 3)), ("block1_1.conv2.weight", (60, 60, 1, 1)),
    ("block1_2.conv1.weight", (60, 1, 3, 3)), ("block1_2.conv2.weight", (60, 60, 1, 1)),
    ("block1_3.conv1.weight", (60, 1, 3, 3)), ("block1_3.conv2.weight", (60, 60, 1, 1)),
    ("block2_1.shortcut.weight", (120, 60, 1, 1)), ("block2_1.shortcut.bias", (120,)),
    ("block2_1.conv1.weight", (60, 1, 3, 3)), ("block2_1.conv2.weight", (120, 60, 1, 1)),
    ("block2_2.conv1.weight", (120, 1, 3, 3)), ("block2_2.conv2.weight", (120, 120, 1, 1)),
    ("block2_3.conv1.weight", (120, 1, 3, 3)), ("block2_3.conv2.weight", (120, 120, 1, 1)),
    ("block2_4.conv1.weight", (120, 1, 3, 3)), ("block2_4.conv2.weight", (120, 120, 1, 1)),
    ("block3_1.shortcut.weight", (240, 120, 1, 1)), ("block3_1.shortcut.bias", (240,)),
    ("block3_1.conv1.weight", (120, 1, 3, 3)), ("block3_1.conv2.weight", (240, 120, 1, 1)),
    ("block3_2.conv1.weight", (240, 1, 3, 3)), ("block3_2.conv2.weight", (240, 240, 1, 1)),
    ("block3_3.conv1.weight", (240, 1, 3, 3)), ("block3_3.conv2.weight", (240, 240, 1, 1)),
    ("block3_4.conv1.weight", (240, 1, 3, 3)), ("block3_4.conv2.weight", (240, 240, 1, 1)),
    ("block4_1.shortcut.weight", (240, 240, 1, 1)), ("block4_1.shortcut.bias", (240,)),
    ("block4_1.conv1.weight", (240, 1, 3, 3)), ("block4_1.conv2.weight", (240, 240, 1, 1)),
    ("block4_2.conv1.weight", (240, 1, 3, 3)), ("block4_2.conv2.weight", (240, 240, 1, 1)),
    ("block4_3.conv1.weight", (240, 1, 3, 3)), ("block4_3.conv2.weight", (240, 240, 1, 1)),
    ("block4_4.conv1.weight", (240, 1, 3, 3)), ("block4_4.conv2.weight", (240, 240, 1, 1)),
    ("conv_reduces.0.conv.weight", (1, 24, 1, 1)), ("conv_reduces.0.conv.bias", (1,)),
    ("conv_reduces.1.conv.weight", (1, 24, 1, 1)), ("conv_reduces.1.conv.bias", (1,)),
    ("conv_reduces.2.conv.weight", (1, 24, 1, 1)), ("conv_reduces.2.conv.bias", (1,)),
    ("conv_reduces.3.conv.weight", (1, 24, 1, 1)), ("conv_reduces.3.conv.bias", (1,)),
    ("attentions.0.conv1.weight", (4, 24, 1, 1)), ("attentions.0.conv1.bias", (4,)),
    ("attentions.0.conv2.weight", (1, 4, 3, 3)),
    ("attentions.1.conv1.weight", (4, 24, 1, 1)), ("attentions.1.conv1.bias", (4,)),
    ("attentions.1.conv2.weight", (1, 4, 3, 3)),
    ("attentions.2.conv1.weight", (4, 24, 1, 1)), ("attentions.2.conv1.bias", (4,)),
    ("attentions.2.conv2.weight", (1, 4, 3, 3)),
    ("attentions.3.conv1.weight", (4, 24, 1, 1)), ("attentions.3.conv1.bias", (4,)),
    ("attentions.3.conv2.weight", (1, 4, 3, 3)),
    ("dilations.0.conv1.weight", (24, 60, 1, 1)), ("dilations.0.conv1.bias", (24,)),
    ("dilations.0.conv2_1.weight", (24, 24, 3, 3)), ("dilations.0.conv2_2.weight", (24, 24, 3, 3)),
    ("dilations.0.conv2_3.weight", (24, 24, 3, 3)), ("dilations.0.conv2_4.weight", (24, 24, 3, 3)),
    ("dilations.1.conv1.weight", (24, 120, 1, 1)), ("dilations.1.conv1.bias", (24,)),
    ("dilations.1.conv2_1.weight", (24, 24, 3, 3)), ("dilations.1.conv2_2.weight", (24, 24, 3, 3)),
    ("dilations.1.conv2_3.weight", (24, 24, 3, 3)), ("dilations.1.conv2_4.weight", (24, 24, 3, 3)),
    ("dilations.2.conv1.weight", (24, 240, 1, 1)), ("dilations.2.conv1.bias", (24,)),
    ("dilations.2.conv2_1.weight", (24, 24, 3, 3)), ("dilations.2.conv2_2.weight", (24, 24, 3, 3)),
    ("dilations.2.conv2_3.weight", (24, 24, 3, 3)), ("dilations.2.conv2_4.weight", (24, 24, 3, 3)),
    ("dilations.3.conv1.weight", (24, 240, 1, 1)), ("dilations.3.conv1.bias", (24,)),
    ("dilations.3.conv2_1.weight", (24, 24, 3, 3)), ("dilations.3.conv2_2.weight", (24, 24, 3, 3)),
    ("dilations.3.conv2_3.weight", (24, 24, 3, 3)), ("dilations.3.conv2_4.weight", (24, 24, 3, 3)),
    ("classifier.weight", (1, 4, 1, 1)), ("classifier.bias", (1,)),
]
CARV4 = ["cd", "ad", "rd", "cv"] * 4  # the 16 pixel-difference layers: init_block, block1_1 ... block4_4
PDC_LAYERS = ["init_block"] + [f"block1_{i}" for i in (1, 2, 3)] + [f"block{s}_{i}" for s in (2, 3, 4)
                                                                     for i in (1, 2, 3, 4)]


def hed_sd(seed=0) -> dict:
    """Random HED weights in the published layout, scaled so the logits stay in a readable range."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, shape in HED_KEYS:
        if key == "norm":
            sd[key] = torch.tensor([122.0, 116.0, 104.0]).view(1, 3, 1, 1)
        elif key.endswith("bias"):
            sd[key] = torch.randn(shape, generator=g) * 0.05
        elif "projection" in key:
            sd[key] = torch.randn(shape, generator=g) * 0.02
        else:  # He scaling; the first conv also undoes the 0..255 input range
            gain = (2.0 / math.prod(shape[1:])) ** 0.5 / (60.0 if key == "block1.convs.0.weight" else 1.0)
            sd[key] = torch.randn(shape, generator=g) * gain
    return sd


def pidinet_sd(seed=0) -> dict:
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, shape in PIDINET_KEYS:
        fan_in = math.prod(shape[1:]) if len(shape) > 1 else 1
        sd[key] = torch.randn(shape, generator=g) * (0.05 if len(shape) == 1 else (1.0 / fan_in) ** 0.5)
    return sd


def save_pidinet(path, sd):
    """As the published file: {"state_dict": {"module.<key>": tensor}} (plus training bookkeeping)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": 14, "state_dict": {"module." + k: v for k, v in sd.items()}}, path)


def picture(h=64, w=64) -> np.ndarray:
    img = np.full((h, w, 3), 230, np.uint8)
    cv2.rectangle(img, (8, 10), (w // 2, h - 12), (200, 30, 40), -1)
    cv2.circle(img, (w - 20, h // 2), 12, (20, 90, 220), -1)
    cv2.line(img, (0, h - 5), (w - 1, 3), (10, 10, 10), 2)
    return img


@pytest.fixture(scope="module")
def hed_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("annotators")
    (root / "hed").mkdir()
    sd = hed_sd()
    torch.save(sd, root / "hed" / se.HED_FILE)
    return root, sd


@pytest.fixture(scope="module")
def pidinet_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("annotators")
    sd = pidinet_sd()
    save_pidinet(root / "pidinet" / se.PIDINET_FILE, sd)
    return root, sd


# ---- 1. the key layouts -------------------------------------------------------------------------------------

def test_hed_state_dict_is_the_published_layout():
    own = [(k, tuple(v.shape)) for k, v in se.ControlNetHED().state_dict().items()]
    assert own == HED_KEYS
    assert sum(math.prod(s) for _, s in HED_KEYS) == 14_716_168


def test_pidinet_loads_the_published_layout_and_converts_only_the_difference_kernels(pidinet_dir):
    root, _ = pidinet_dir
    net = se.pidinet_net(root / "pidinet" / se.PIDINET_FILE)
    own = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    published = dict(PIDINET_KEYS)
    assert len(PIDINET_KEYS) == 83 and sum(math.prod(s) for s in published.values()) == 710_149
    assert set(own) == set(published)
    radial = {f"{layer}.conv1.weight" for layer, op in zip(PDC_LAYERS, CARV4) if op == "rd"}
    assert radial == {"block1_2.conv1.weight", "block2_3.conv1.weight", "block3_3.conv1.weight",
                      "block4_3.conv1.weight"}
    for key, shape in published.items():
        assert own[key] == (shape[:2] + (5, 5) if key in radial else shape), key
    assert se.PDC_OPS == dict(zip(PDC_LAYERS, CARV4))


# ---- 2. availability and the maps ----------------------------------------------------------------------------

@pytest.mark.parametrize("name,label", [("hed", "softedge_hed"), ("hed_safe", "softedge_hedsafe"),
                                        ("scribble_hed", "scribble_hed")])
def test_hed_preprocessors_are_listed_until_the_file_is_there(tmp_path, hed_dir, name, label):
    ok, why = pp.get(name).available(tmp_path)
    assert not ok and se.HED_FILE in why
    root, _ = hed_dir
    assert pp.get(label).available(root) == (True, "")
    out = pp.run(label, picture(48, 60), 64, annotator_dir=root)  # short side 48 -> 64: 64 x 80, padded 64 x 128
    assert out.shape == (64, 80) and out.dtype == np.uint8
    values = set(np.unique(out).tolist())
    if name == "hed_safe":
        assert values <= {0, 127, 255}
    if name == "scribble_hed":
        assert values <= {0, 255}


@pytest.mark.parametrize("name,label", [("pidinet", "softedge_pidinet"), ("pidinet_safe", "softedge_pidisafe"),
                                        ("pidinet_sketch", "t2ia_sketch_pidi"),
                                        ("pidinet_scribble", "scribble_pidinet")])
def test_pidinet_preprocessors_are_listed_until_the_file_is_there(tmp_path, pidinet_dir, name, label):
    ok, why = pp.get(name).available(tmp_path)
    assert not ok and se.PIDINET_FILE in why
    root, _ = pidinet_dir
    assert pp.get(label).available(root) == (True, "")
    out = pp.run(name, picture(70, 50), 64, annotator_dir=root)  # 50 -> 64: 90 x 64, padded 128 x 64
    assert out.shape == (90, 64) and out.dtype == np.uint8
    values = set(np.unique(out).tolist())
    if name == "pidinet_safe":
        assert values <= {0, 127, 255}
    if name in ("pidinet_sketch", "pidinet_scribble"):
        assert values <= {0, 255}


def test_a_flat_file_is_found_too(tmp_path, hed_dir):
    root, sd = hed_dir
    (tmp_path / se.HED_FILE).symlink_to(root / "hed" / se.HED_FILE)
    assert pp.get("hed").available(tmp_path) == (True, "")
    assert pp.get("hed").weight_paths(tmp_path) == {se.HED_FILE: tmp_path / se.HED_FILE}


# ---- 3. forward passes against functional references --------------------------------------------------------

def hed_reference(sd: dict, x: torch.Tensor) -> torch.Tensor:
    """The edge probability (float64) recomputed from the state dict: VGG stages, projections, bilinear
    upsampling, mean, sigmoid."""
    h = x - sd["norm"]
    logits = []
    for block, convs in HED_LAYERS:
        if block > 1:
            h = F.max_pool2d(h, 2, 2)
        for j in range(convs):
            h = F.relu(F.conv2d(h, sd[f"block{block}.convs.{j}.weight"], sd[f"block{block}.convs.{j}.bias"],
                                padding=1))
        logits.append(F.conv2d(h, sd[f"block{block}.projection.weight"], sd[f"block{block}.projection.bias"]))
    size = x.shape[2:]
    mean = torch.stack([F.interpolate(p, size, mode="bilinear", align_corners=False) for p in logits]).mean(0)
    return torch.sigmoid(mean.double())[0, 0]


def test_hed_forward_matches_the_functional_reference(hed_dir):
    root, sd = hed_dir
    net = se.hed_net(root / "hed" / se.HED_FILE)
    padded, hw = pp.resize_with_pad(picture(64, 64), 64)
    got = se.hed_probability(net, padded)
    want = hed_reference(sd, torch.from_numpy(padded).float().permute(2, 0, 1)[None]).numpy()
    assert got.shape == (64, 64)
    assert 0.02 < want.std() and 0.05 < want.min() and want.max() < 0.95  # not saturated: a real comparison
    assert np.abs(got - want).max() < 1e-5
    out = pp.run("hed", picture(64, 64), 64, annotator_dir=root)
    assert np.abs(out.astype(int) - (want * 255).astype(int)).max() <= 1


# the 3x3 taps in raster order, as (dy, dx); the ring clockwise from the top-left corner
TAPS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
RING = [(-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1)]


def pdc_literal(x: torch.Tensor, w: torch.Tensor, op: str, groups: int = 1) -> torch.Tensor:
    """A pixel-difference convolution done literally: the differences of (zero-padded) neighbouring pixels
    stacked as channels, then a 1x1 F.conv2d with the 3x3 kernel's taps as its weights.

    cd: x(tap) - x(centre); ad: x(ring tap) - x(the next ring tap clockwise) (centre 0); rd: x(2d) - x(d)
    for the 8 directions d in raster order, weighted by taps 1..8 (tap 0 unused, as the original does)."""
    if op == "cv":
        return F.conv2d(x, w, padding=1, groups=groups)
    n, c, h, wd = x.shape
    pad = 2 if op == "rd" else 1
    xp = F.pad(x, (pad, pad, pad, pad))

    def at(dy, dx):
        return xp[:, :, pad + dy:pad + dy + h, pad + dx:pad + dx + wd]

    if op == "cd":
        diffs = [at(*t) - at(0, 0) for t in TAPS]
        taps = w.reshape(w.shape[0], w.shape[1], 9)
    elif op == "ad":
        nxt = {RING[i]: RING[(i + 1) % 8] for i in range(8)}
        diffs = [at(*t) - at(*nxt[t]) if t in nxt else torch.zeros_like(x) for t in TAPS]
        taps = w.reshape(w.shape[0], w.shape[1], 9)
    else:
        dirs = [t for t in TAPS if t != (0, 0)]
        diffs = [at(2 * dy, 2 * dx) - at(dy, dx) for dy, dx in dirs]
        taps = w.reshape(w.shape[0], w.shape[1], 9)[:, :, 1:]
    stacked = torch.stack(diffs, dim=2).reshape(n, c * len(diffs), h, wd)  # channel-major, then difference
    return F.conv2d(stacked, taps.reshape(w.shape[0], -1, 1, 1), groups=groups)


@pytest.mark.parametrize("op", ["cd", "ad", "rd", "cv"])
@pytest.mark.parametrize("cin,cout,groups", [(3, 5, 1), (4, 4, 4)])
def test_pixel_difference_conversion_equals_the_literal_difference_convolution(op, cin, cout, groups):
    g = torch.Generator().manual_seed(hash((op, groups)) % 1000)
    x = torch.randn(2, cin, 9, 11, generator=g)
    w = torch.randn(cout, cin // groups, 3, 3, generator=g)
    kernel = se.convert_pdc(op, w.clone())
    assert kernel.shape[2:] == ((5, 5) if op == "rd" else (3, 3))
    got = F.conv2d(x, kernel, padding=kernel.shape[2] // 2, groups=groups)
    want = pdc_literal(x, w, op, groups)
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()
    if op != "cv":  # the difference is really taken: a constant image gives 0 away from the zero padding
        flat = F.conv2d(torch.ones(1, cin, 9, 9), kernel, padding=kernel.shape[2] // 2, groups=groups)
        assert flat[:, :, 2:-2, 2:-2].abs().max() < 1e-5


def pidinet_reference(sd: dict, x: torch.Tensor) -> torch.Tensor:
    """The fused probability recomputed from the published (unconverted) weights."""
    h, w = x.shape[2:]
    y = pdc_literal(x, sd["init_block.weight"], "cd")
    stages, ops = [], dict(zip(PDC_LAYERS, CARV4))
    for stage, n in ((1, 3), (2, 4), (3, 4), (4, 4)):
        for i in range(1, n + 1):
            name = f"block{stage}_{i}"
            if stage > 1 and i == 1:
                y = F.max_pool2d(y, 2, 2)
            c = y.shape[1]
            z = F.conv2d(F.relu(pdc_literal(y, sd[f"{name}.conv1.weight"], ops[name], groups=c)),
                         sd[f"{name}.conv2.weight"])
            shortcut = (F.conv2d(y, sd[f"{name}.shortcut.weight"], sd[f"{name}.shortcut.bias"])
                        if f"{name}.shortcut.weight" in sd else y)
            y = z + shortcut
        stages.append(y)
    sides = []
    for i, xi in enumerate(stages):
        d = F.conv2d(F.relu(xi), sd[f"dilations.{i}.conv1.weight"], sd[f"dilations.{i}.conv1.bias"])
        d = sum(F.conv2d(d, sd[f"dilations.{i}.conv2_{j}.weight"], padding=r, dilation=r)
                for j, r in zip((1, 2, 3, 4), (5, 7, 9, 11)))
        a = F.conv2d(F.conv2d(F.relu(d), sd[f"attentions.{i}.conv1.weight"], sd[f"attentions.{i}.conv1.bias"]),
                     sd[f"attentions.{i}.conv2.weight"], padding=1)
        e = F.conv2d(d * torch.sigmoid(a), sd[f"conv_reduces.{i}.conv.weight"], sd[f"conv_reduces.{i}.conv.bias"])
        sides.append(F.interpolate(e, (h, w), mode="bilinear", align_corners=False))
    return torch.sigmoid(F.conv2d(torch.cat(sides, 1), sd["classifier.weight"], sd["classifier.bias"]))[0, 0]


def test_pidinet_forward_matches_the_literal_pixel_difference_reference(pidinet_dir):
    root, sd = pidinet_dir
    net = se.pidinet_net(root / "pidinet" / se.PIDINET_FILE)
    padded, _ = pp.resize_with_pad(picture(64, 64), 64)
    got = se.pidinet_probability(net, padded)
    bgr = torch.from_numpy(padded[:, :, ::-1].copy()).float().permute(2, 0, 1)[None] / 255.0
    with torch.no_grad():
        want = pidinet_reference(sd, bgr).numpy()
    assert want.std() > 0.01 and 0.02 < want.mean() < 0.98
    assert np.abs(got - want).max() < 1e-4


# ---- 4. post-processing on crafted maps ----------------------------------------------------------------------

def test_safe_step_quantises_to_halves():
    x = np.array([0.0, 0.2, 0.33, 0.34, 0.5, 0.66, 0.67, 0.9, 1.0])
    assert se.safe_step(x).tolist() == [0, 0, 0, 0.5, 0.5, 0.5, 1.0, 1.0, 1.5]
    assert se.to_uint8(se.safe_step(x)).tolist() == [0, 0, 0, 127, 127, 127, 255, 255, 255]


BANDS = np.array([0.1, 0.45, 0.55, 0.9])  # probabilities, one per 16-column band of a 64 x 64 map
BAND_MAP = [25] * 16 + [114] * 16 + [140] * 16 + [229] * 16  # x 255, truncated


def band_map(h=64, w=64) -> np.ndarray:
    return np.repeat(BANDS, w // 4)[None, :].repeat(h, 0)


def test_hed_maps_from_known_logits(hed_dir, monkeypatch):
    root, _ = hed_dir
    seen = {}

    def fake(self, x):
        seen["x"] = x
        h, w = x.shape[2:]
        p = torch.from_numpy(band_map(h, w)).float()
        full = (5 * torch.log(p / (1 - p)))[None, None]  # the five logits average to logit(p)
        return [full] + [torch.zeros(1, 1, h >> k, w >> k) for k in (1, 2, 3, 4)]

    monkeypatch.setattr(se.ControlNetHED, "forward", fake)
    img = picture(64, 64)
    assert pp.run("hed", img, 64, annotator_dir=root)[0].tolist() == BAND_MAP
    assert (seen["x"][0].permute(1, 2, 0).numpy() == img).all()  # RGB, 0..255, no scaling
    assert pp.run("hed_safe", img, 64, annotator_dir=root)[5].tolist() == [0] * 16 + [127] * 32 + [255] * 16
    scribbled = pp.run("scribble_hed", img, 64, annotator_dir=root)
    assert (scribbled == se.scribble(pp.run("hed", img, 64, annotator_dir=root))).all()


def test_pidinet_maps_from_a_known_probability(pidinet_dir, monkeypatch):
    root, _ = pidinet_dir
    seen = {}

    def fake(self, x):
        seen["x"] = x
        return torch.from_numpy(band_map(*x.shape[2:])).float()[None, None]

    monkeypatch.setattr(se.PiDiNet, "forward", fake)
    img = picture(64, 64)
    assert pp.run("pidinet", img, 64, annotator_dir=root)[0].tolist() == BAND_MAP
    x = seen["x"][0].permute(1, 2, 0).numpy()
    assert np.allclose(x, img[:, :, ::-1] / 255.0, atol=1e-7)  # BGR in [0, 1]
    assert pp.run("pidinet_safe", img, 64, annotator_dir=root)[9].tolist() == [0] * 16 + [127] * 32 + [255] * 16
    assert pp.run("pidinet_sketch", img, 64, annotator_dir=root)[9].tolist() == [0] * 32 + [255] * 32
    scribbled = pp.run("pidinet_scribble", img, 64, annotator_dir=root)
    assert (scribbled == se.scribble(pp.run("pidinet", img, 64, annotator_dir=root))).all()


def nms_reference(x: np.ndarray, t: float, s: float) -> np.ndarray:
    """Blur, then keep a pixel that is >= both neighbours along at least one of the four directions (pixels
    outside the image do not count), 255 where kept and above t."""
    b = cv2.GaussianBlur(x.astype(np.float32), (0, 0), s)
    p = np.pad(b, 1, constant_values=-np.inf)
    h, w = b.shape

    def nb(dy, dx):
        return p[1 + dy:1 + dy + h, 1 + dx:1 + dx + w]

    keep = np.zeros_like(b, dtype=bool)
    for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
        keep |= (b >= nb(dy, dx)) & (b >= nb(-dy, -dx))
    return np.where(keep & (b > t), 255, 0).astype(np.uint8)


def test_nms_and_scribble_on_crafted_edges():
    assert not se.scribble(np.zeros((64, 64), np.uint8)).any()
    thin = np.zeros((64, 64), np.uint8)
    thin[:, 32] = 255  # blurred by sigma 3 its ridge is ~34: below 127, nothing is kept
    assert not se.nms(thin, 127, 3.0).any() and not se.scribble(thin).any()
    bar = np.zeros((64, 64), np.uint8)
    bar[:, 20:40] = 255  # each column is a vertical maximum; the blur crosses 127 exactly at the bar's sides
    kept = se.nms(bar, 127, 3.0)
    assert (kept[:, 20:40] == 255).all() and not kept[:, :20].any() and not kept[:, 40:].any()
    out = se.scribble(bar)
    cols = np.flatnonzero(out.all(axis=0))
    assert set(np.unique(out).tolist()) == {0, 255} and (out == out[:1]).all()  # full-height white columns
    assert cols[0] < 20 and cols[-1] > 39 and cols[0] + cols[-1] == 59  # thickened, symmetric
    assert list(cols) == list(range(cols[0], cols[-1] + 1)) and cols[0] >= 20 - 9
    crafted = np.zeros((64, 80), np.uint8)
    cv2.circle(crafted, (50, 30), 15, 255, 6)
    cv2.line(crafted, (0, 60), (70, 5), 200, 5)
    crafted[40:60, 5:25] = 160
    assert (se.nms(crafted, 127, 3.0) == nms_reference(crafted, 127, 3.0)).all()
    assert se.nms(crafted, 127, 3.0).any()


# ---- 5. bad files --------------------------------------------------------------------------------------------

def test_bad_hed_files_name_the_file_and_a_good_one_works_next(tmp_path, hed_dir):
    root, sd = hed_dir
    good = (root / "hed" / se.HED_FILE).read_bytes()
    target = tmp_path / se.HED_FILE
    target.write_bytes(good[: len(good) // 3])
    with pytest.raises(AnnotatorError, match=se.HED_FILE):
        pp.run("hed", picture(), 64, annotator_dir=tmp_path)
    torch.save({k: v for k, v in sd.items() if k != "block3.convs.2.bias"}, target)
    with pytest.raises(AnnotatorError, match=f"{se.HED_FILE}.*block3.convs.2.bias"):
        pp.run("hed_safe", picture(), 64, annotator_dir=tmp_path)
    target.write_bytes(good)
    assert pp.run("hed", picture(), 64, annotator_dir=tmp_path).shape == (64, 64)


def test_bad_pidinet_files_name_the_file_and_a_good_one_works_next(tmp_path):
    target = tmp_path / "pidinet" / se.PIDINET_FILE
    sd = pidinet_sd(1)
    target.parent.mkdir()
    target.write_bytes(b"not a checkpoint")
    with pytest.raises(AnnotatorError, match=se.PIDINET_FILE):
        pp.run("pidinet", picture(), 64, annotator_dir=tmp_path)
    already = dict(sd, **{"block1_2.conv1.weight": torch.zeros(60, 1, 5, 5)})  # a converted file: not this layout
    save_pidinet(target, already)
    with pytest.raises(AnnotatorError, match=f"{se.PIDINET_FILE}.*block1_2.conv1.weight"):
        pp.run("pidinet", picture(), 64, annotator_dir=tmp_path)
    save_pidinet(target, {"norm": torch.zeros(1, 3, 1, 1)})  # another network's weights
    with pytest.raises(AnnotatorError, match=f"{se.PIDINET_FILE}.*missing"):
        pp.run("pidinet_sketch", picture(), 64, annotator_dir=tmp_path)
    save_pidinet(target, sd)
    assert pp.run("pidinet_safe", picture(), 64, annotator_dir=tmp_path).shape == (64, 64)
