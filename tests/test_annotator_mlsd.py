"""M-LSD (mlsd_large_512_fp32.pth): the published key layout, availability and the map, the forward pass
against a reference written here with torch.nn.functional on the state-dict tensors, and the line decode and
drawing on a crafted network output whose lines are known."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from modules.controlnet import preprocessors as pp
from modules.controlnet.annotators import AnnotatorError
from modules.controlnet.annotators import mlsd as ml

pytestmark = pytest.mark.usefixtures("one_thread")

# from the original MobileV2_MLSD_Large definition: 362 entries (57 of them BatchNorm batch counters)
KEY_COUNT, COUNTERS = 362, 57
TENSOR_ELEMENTS = 1_552_624  # all entries but the counters (running statistics included)
LEARNT = 1_533_680  # weights and biases only
SAMPLE = [
    ("backbone.features.0.0.weight", (32, 4, 3, 3)),
    ("backbone.features.0.1.running_mean", (32,)),
    ("backbone.features.1.conv.0.0.weight", (32, 1, 3, 3)),
    ("backbone.features.1.conv.1.weight", (16, 32, 1, 1)),
    ("backbone.features.1.conv.2.running_var", (16,)),
    ("backbone.features.2.conv.0.0.weight", (96, 16, 1, 1)),
    ("backbone.features.2.conv.1.0.weight", (96, 1, 3, 3)),
    ("backbone.features.2.conv.2.weight", (24, 96, 1, 1)),
    ("backbone.features.7.conv.1.0.weight", (192, 1, 3, 3)),
    ("backbone.features.10.conv.2.weight", (64, 384, 1, 1)),
    ("backbone.features.13.conv.0.0.weight", (576, 96, 1, 1)),
    ("backbone.features.13.conv.2.weight", (96, 576, 1, 1)),
    ("backbone.features.13.conv.3.num_batches_tracked", ()),
    ("block15.conv1.0.weight", (64, 96, 1, 1)),
    ("block15.conv2.0.weight", (64, 64, 1, 1)),
    ("block16.conv1.0.weight", (128, 128, 3, 3)),
    ("block16.conv2.0.weight", (64, 128, 3, 3)),
    ("block17.conv2.0.weight", (64, 32, 1, 1)),
    ("block19.conv2.0.weight", (64, 24, 1, 1)),
    ("block21.conv2.0.weight", (64, 16, 1, 1)),
    ("block22.conv2.1.bias", (64,)),
    ("block23.conv1.0.weight", (64, 64, 3, 3)),
    ("block23.conv2.1.running_mean", (64,)),
    ("block23.conv3.weight", (16, 64, 1, 1)),
    ("block23.conv3.bias", (16,)),
]
SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1))


def mlsd_sd(seed=0) -> dict:
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, value in ml.MobileV2_MLSD_Large().state_dict().items():
        shape = tuple(value.shape)
        if key.endswith("num_batches_tracked"):
            sd[key] = torch.tensor(1000)
        elif key.endswith("running_var"):
            sd[key] = torch.rand(shape, generator=g) + 0.5
        elif key.endswith("running_mean") or key.endswith("bias"):
            sd[key] = torch.randn(shape, generator=g) * 0.1
        elif len(shape) == 1:  # BatchNorm scale
            sd[key] = 1.0 + torch.randn(shape, generator=g) * 0.1
        else:
            sd[key] = torch.randn(shape, generator=g) * (1.0 / math.prod(shape[1:])) ** 0.5
    return sd


def picture(h=64, w=64) -> np.ndarray:
    img = np.full((h, w, 3), 220, np.uint8)
    cv2.rectangle(img, (6, 8), (w // 2, h - 10), (30, 60, 200), 2)
    cv2.line(img, (0, h - 4), (w - 1, 2), (0, 0, 0), 2)
    return img


@pytest.fixture(scope="module")
def mlsd_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("annotators")
    (root / "mlsd").mkdir()
    sd = mlsd_sd()
    torch.save(sd, root / "mlsd" / ml.MLSD_FILE)
    return root, sd


# ---- 1. the key layout -------------------------------------------------------------------------------------

def test_state_dict_is_the_published_layout():
    own = {k: tuple(v.shape) for k, v in ml.MobileV2_MLSD_Large().state_dict().items()}
    assert len(own) == KEY_COUNT and sum(k.endswith("num_batches_tracked") for k in own) == COUNTERS
    assert sum(math.prod(s) for k, s in own.items() if not k.endswith("num_batches_tracked")) == TENSOR_ELEMENTS
    assert sum(math.prod(s) for k, s in own.items() if k.endswith(("weight", "bias"))) == LEARNT
    for key, shape in SAMPLE:
        assert own.get(key) == shape, key
    assert not any(k.startswith("backbone.features.14") for k in own)  # cut after the 96-channel stage


# ---- 2. availability and the map ----------------------------------------------------------------------------

def test_listed_until_the_file_is_there_then_gives_a_binary_map(tmp_path, mlsd_dir):
    ok, why = pp.get("mlsd").available(tmp_path)
    assert not ok and ml.MLSD_FILE in why
    root, _ = mlsd_dir
    assert pp.get("mlsd").available(root) == (True, "")
    out = pp.run("mlsd", picture(48, 60), 64, 0.01, 0.01, annotator_dir=root)  # 64 x 80, padded 64 x 128
    assert out.shape == (64, 80) and out.dtype == np.uint8
    assert set(np.unique(out).tolist()) <= {0, 255}
    assert pp.get("mlsd").resolve(None, None, None) == {"res": 512, "thr_a": 0.1, "thr_b": 0.1}


def test_a_file_without_batch_counters_loads_the_same(tmp_path, mlsd_dir):
    _, sd = mlsd_dir
    torch.save({k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}, tmp_path / ml.MLSD_FILE)
    root, _ = mlsd_dir
    x = ml.network_input(picture())
    with torch.no_grad():
        got = ml.mlsd_net(tmp_path / ml.MLSD_FILE)(x)
        assert torch.equal(got, ml.mlsd_net(root / "mlsd" / ml.MLSD_FILE)(x))


# ---- 3. the forward pass against a functional reference ------------------------------------------------------

def reference_forward(sd: dict, x: torch.Tensor) -> torch.Tensor:
    def bn(y, p):
        return F.batch_norm(y, sd[p + ".running_mean"], sd[p + ".running_var"], sd[p + ".weight"], sd[p + ".bias"],
                            False, 0.0, 1e-5)

    def conv_bn_relu6(y, p, stride=1, groups=1):
        w = sd[p + ".0.weight"]
        if stride == 2:  # TFLite "same": one extra row / column at the bottom / right
            y, pad = F.pad(y, (0, 1, 0, 1)), 0
        else:
            pad = w.shape[2] // 2
        return bn(F.conv2d(y, w, None, stride, pad, 1, groups), p + ".1").clamp(0, 6)

    feats = []
    y = conv_bn_relu6(x, "backbone.features.0", stride=2)
    idx, cin = 1, 32
    for t, c, n, s in SETTING:
        for i in range(n):
            p = f"backbone.features.{idx}.conv"
            stride = s if i == 0 else 1
            hidden = cin * t
            z, j = y, 0
            if t != 1:
                z, j = conv_bn_relu6(z, f"{p}.0"), 1
            z = conv_bn_relu6(z, f"{p}.{j}", stride=stride, groups=hidden)
            z = bn(F.conv2d(z, sd[f"{p}.{j + 1}.weight"]), f"{p}.{j + 2}")
            y = y + z if stride == 1 and cin == c else z
            if idx in (1, 3, 6, 10, 13):
                feats.append(y)
            idx, cin = idx + 1, c

    def cbr(y, p, pad=0, dil=1):
        return F.relu(bn(F.conv2d(y, sd[p + ".0.weight"], sd[p + ".0.bias"], 1, pad, dil), p + ".1"))

    def block_a(a, b, p, up=True):
        b = cbr(b, p + ".conv1")
        if up:
            b = F.interpolate(b, scale_factor=2.0, mode="bilinear", align_corners=True)
        return torch.cat([cbr(a, p + ".conv2"), b], 1)

    def block_b(y, p):
        return cbr(cbr(y, p + ".conv1", 1) + y, p + ".conv2", 1)

    c1, c2, c3, c4, c5 = feats
    y = block_b(block_a(c4, c5, "block15", up=False), "block16")
    y = block_b(block_a(c3, y, "block17"), "block18")
    y = block_b(block_a(c2, y, "block19"), "block20")
    y = block_b(block_a(c1, y, "block21"), "block22")
    y = cbr(cbr(y, "block23.conv1", 5, 5), "block23.conv2", 1)
    return F.conv2d(y, sd["block23.conv3.weight"], sd["block23.conv3.bias"])[:, 7:]


def test_forward_matches_the_functional_reference(mlsd_dir):
    root, sd = mlsd_dir
    net = ml.mlsd_net(root / "mlsd" / ml.MLSD_FILE)
    padded, _ = pp.resize_with_pad(picture(48, 60), 64)
    x = ml.network_input(padded)
    with torch.no_grad():
        got, want = net(x), reference_forward(sd, x)
    assert got.shape == (1, 9, 32, 64) and want.std() > 0.1
    assert (got - want).abs().max() < 1e-4


# ---- 4. line decode on a crafted output ----------------------------------------------------------------------

def crafted_output(h2: int, w2: int) -> torch.Tensor:
    """Half-size output: background logit -10; a centre at (y 10, x 12) with a horizontal line -5 .. +5, a
    weaker neighbour the 3x3 peak test removes, a diagonal with fractional ends, a short one, a faint one, and
    one running into the padding."""
    out = torch.zeros(1, 9, h2, w2)
    out[0, 0] = -10.0

    def put(y, x, logit, dxs, dys, dxe, dye):
        out[0, 0, y, x] = logit
        out[0, 1:5, y, x] = torch.tensor([dxs, dys, dxe, dye])

    put(10, 12, 5.0, -5.0, 0.0, 5.0, 0.0)    # -> (14, 20) - (34, 20)
    put(10, 13, 4.0, 0.0, -8.0, 0.0, 8.0)    # beside a stronger centre: suppressed
    put(20, 20, 3.0, -2.7, -2.7, 3.2, 3.2)   # -> (34.6, 34.6) - (46.4, 46.4), drawn from (34, 34) to (46, 46)
    put(25, 5, 2.0, 0.1, 0.0, 0.14, 0.0)     # length 0.04 (at half size): below the distance threshold 0.1
    put(28, 30, -3.0, -6.0, 0.0, 6.0, 0.0)   # score 0.047: below the value threshold 0.1
    put(5, 38, 4.0, -3.0, 0.0, 10.0, 0.0)    # -> (70, 10) - (96, 10): cut at the image's width 80
    return out


def test_decode_and_draw_a_known_output(mlsd_dir, monkeypatch):
    root, _ = mlsd_dir
    seen = {}

    def fake(self, x):
        seen["x"] = x
        return crafted_output(x.shape[2] // 2, x.shape[3] // 2)

    monkeypatch.setattr(ml.MobileV2_MLSD_Large, "forward", fake)
    img = picture(48, 60)
    out = pp.run("mlsd", img, 64, annotator_dir=root)  # the slider defaults: 0.1, 0.1
    want = np.zeros((64, 80), np.uint8)
    want[20, 14:35] = 255
    want[np.arange(34, 47), np.arange(34, 47)] = 255
    want[10, 70:80] = 255
    assert out.shape == (64, 80) and (out == want).all()
    padded, _ = pp.resize_with_pad(img, 64)
    x = seen["x"][0].numpy()
    assert x.shape == (4, 64, 128)
    assert np.allclose(x[:3], padded.transpose(2, 0, 1) / 127.5 - 1.0, atol=1e-6)  # RGB order
    assert np.allclose(x[3], 1 / 127.5 - 1.0)
    faint = pp.run("mlsd", img, 64, 0.01, 0.1, annotator_dir=root)  # now the faint one is drawn too
    assert (faint[56, 48:73] == 255).all() and ((faint > 0) & (want == 0)).sum() == 25
    short = pp.run("mlsd", img, 64, 0.1, 0.01, annotator_dir=root)  # length 0.04 > 0.01: a dot at (50, 10)
    assert short[50, 10] == 255 and ((short > 0) & (want == 0)).sum() == 1
    long_only = pp.run("mlsd", img, 64, 0.1, 9.0, annotator_dir=root)  # the 8.3-long diagonal is dropped
    assert not long_only[40, 40] and long_only[20, 20] == 255


def test_decode_lines_values_and_nothing_found():
    out = crafted_output(32, 64)
    lines = ml.decode_lines(out, 0.1, 0.1)
    got = sorted(map(tuple, np.round(lines, 4).tolist()))
    assert got == [(14.0, 20.0, 34.0, 20.0), (34.6, 34.6, 46.4, 46.4), (70.0, 10.0, 96.0, 10.0)]
    none = ml.decode_lines(torch.full((1, 9, 32, 32), -10.0), 0.1, 0.1)
    assert none.shape == (0, 4) and not ml.draw_lines(none, (64, 64)).any()


# ---- 5. bad files --------------------------------------------------------------------------------------------

def test_bad_files_name_the_file_and_a_good_one_works_next(tmp_path, mlsd_dir):
    root, sd = mlsd_dir
    good = (root / "mlsd" / ml.MLSD_FILE).read_bytes()
    target = tmp_path / "mlsd" / ml.MLSD_FILE
    target.parent.mkdir()
    target.write_bytes(good[:-2000])
    with pytest.raises(AnnotatorError, match=ml.MLSD_FILE):
        pp.run("mlsd", picture(), 64, annotator_dir=tmp_path)
    torch.save(dict(sd, **{"block23.conv3.weight": torch.zeros(9, 64, 1, 1)}), target)
    with pytest.raises(AnnotatorError, match=f"{ml.MLSD_FILE}.*block23.conv3.weight"):
        pp.run("mlsd", picture(), 64, annotator_dir=tmp_path)
    torch.save({"norm": torch.zeros(1, 3, 1, 1)}, target)
    with pytest.raises(AnnotatorError, match=f"{ml.MLSD_FILE}.*missing"):
        pp.run("mlsd", picture(), 64, annotator_dir=tmp_path)
    target.write_bytes(good)
    assert pp.run("mlsd", picture(), 64, annotator_dir=tmp_path).shape == (64, 64)
