"""normal_bae (Bae et al. surface normals, scannet.pt): the network has the published file's keys and
shapes (EfficientNet-B5 tf_ variant + the NNET decoder), loads through the extension's wrapping
(``{"model": ...}``, ``module.`` prefixes), computes what a from-scratch functional forward on the state
dict computes (TF "same" padding, eval-mode per-pixel refinement), and the map is the extension's
post-processing of the full-resolution normal at the resized size."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from modules.controlnet import preprocessors as pp
from modules.controlnet.annotators import AnnotatorError, clear_cache
from modules.controlnet.annotators import normal_bae as nb

P = "encoder.original_model."


def _random_weights(seed: int = 0) -> dict:
    """A random NNET state dict in the real layout; BatchNorm statistics and affines are randomised so
    that eps, mean and variance all matter, the prediction heads' biases are zero."""
    torch.manual_seed(seed)
    net = nb.NNET()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.8, 1.2)
                m.bias.normal_(0, 0.1)
        for k, v in net.decoder.named_parameters():
            if k.startswith("out_conv") and k.endswith("bias"):
                v.zero_()  # default-init biases would swamp the random features: a near-constant map
    return {k: v.clone() for k, v in net.state_dict().items()}


@pytest.fixture(scope="module")
def weights(tmp_path_factory, one_thread):
    """(state dict, annotator dir holding normal_bae/scannet.pt saved as the published file is)."""
    sd = _random_weights()
    root = tmp_path_factory.mktemp("annotators")
    (root / "normal_bae").mkdir()
    torch.save({"model": {"module." + k: v for k, v in sd.items()}}, root / "normal_bae" / nb.WEIGHTS)
    clear_cache()
    yield sd, root
    clear_cache()


# ---- 1. the published layout ---------------------------------------------------------------------

# from geffnet's tf_efficientnet_b5_ap (channel x1.6, depth x2.2, SE from the block input) and
# sd-webui-controlnet's annotator/normalbae decoder ('BN' architecture)
SAMPLE = {
    P + "conv_stem.weight": (48, 3, 3, 3),
    P + "bn1.running_var": (48,),
    P + "blocks.0.0.conv_dw.weight": (48, 1, 3, 3),
    P + "blocks.0.0.se.conv_reduce.weight": (12, 48, 1, 1),
    P + "blocks.0.0.conv_pw.weight": (24, 48, 1, 1),
    P + "blocks.0.2.bn2.weight": (24,),
    P + "blocks.1.0.conv_pw.weight": (144, 24, 1, 1),
    P + "blocks.1.0.conv_dw.weight": (144, 1, 3, 3),
    P + "blocks.1.0.se.conv_reduce.weight": (6, 144, 1, 1),
    P + "blocks.1.0.se.conv_expand.bias": (144,),
    P + "blocks.1.4.conv_pwl.weight": (40, 240, 1, 1),
    P + "blocks.2.0.conv_dw.weight": (240, 1, 5, 5),
    P + "blocks.3.6.bn3.running_mean": (128,),
    P + "blocks.4.0.conv_pwl.weight": (176, 768, 1, 1),
    P + "blocks.5.0.se.conv_reduce.weight": (44, 1056, 1, 1),
    P + "blocks.5.8.conv_dw.weight": (1824, 1, 5, 5),
    P + "blocks.6.2.se.conv_reduce.weight": (128, 3072, 1, 1),
    P + "blocks.6.2.conv_pwl.weight": (512, 3072, 1, 1),
    P + "conv_head.weight": (2048, 512, 1, 1),
    P + "bn2.num_batches_tracked": (),
    "decoder.conv2.weight": (2048, 2048, 1, 1),
    "decoder.up1._net.0.weight": (1024, 2224, 3, 3),
    "decoder.up1._net.4.running_var": (1024,),
    "decoder.up4._net.3.weight": (128, 128, 3, 3),
    "decoder.out_conv_res8.weight": (4, 512, 3, 3),
    "decoder.out_conv_res4.0.weight": (128, 516, 1),
    "decoder.out_conv_res2.0.weight": (128, 260, 1),
    "decoder.out_conv_res1.6.weight": (4, 128, 1),
    "decoder.out_conv_res1.6.bias": (4,),
}


def test_state_dict_has_the_published_keys_and_shapes():
    sd = nb.NNET().state_dict()
    assert len(sd) == 936  # 812 tensors + 124 BatchNorm num_batches_tracked counters
    assert sum(k.endswith("num_batches_tracked") for k in sd) == 124
    for k, shape in SAMPLE.items():
        assert tuple(sd[k].shape) == shape, k
    params = {k: v for k, v in sd.items() if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))}
    assert sum(v.numel() for v in params.values()) == 72_422_336
    encoder = sum(v.numel() for k, v in params.items() if k.startswith("encoder."))
    # tf_efficientnet_b5's 30,389,784 parameters less its 2048x1000 classifier, dropped by the encoder
    assert encoder == 30_389_784 - (2048 * 1000 + 1000)
    stages = [len({k.split(".")[4] for k in sd if k.startswith(P + f"blocks.{i}.")}) for i in range(7)]
    assert stages == [3, 5, 5, 7, 7, 9, 3]
    for absent in (P + "classifier.weight", P + "blocks.7.0.conv_pw.weight", P + "blocks.0.0.conv_pwl.weight"):
        assert absent not in sd


def test_stride_two_convs_pad_like_tensorflow_same():
    torch.manual_seed(1)
    net = nb.EfficientNetB5()
    x = torch.randn(1, 3, 10, 14)
    w = net.conv_stem.weight
    with torch.no_grad():
        got = net.conv_stem(x)
        want = F.conv2d(F.pad(x, [0, 1, 0, 1]), w, stride=2)  # even size, k3 s2: one extra row/col at the end
        symmetric = F.conv2d(x, w, stride=2, padding=1)
    assert got.shape == (1, 48, 5, 7)
    assert torch.allclose(got, want, atol=1e-6)
    assert not torch.allclose(got, symmetric, atol=1e-3)
    dw = net.blocks[2][0].conv_dw  # k5 s2: total 3 -> 1 before, 2 after
    y = torch.randn(1, 240, 8, 8)
    with torch.no_grad():
        assert torch.allclose(dw(y), F.conv2d(F.pad(y, [1, 2, 1, 2]), dw.weight, stride=2, groups=240), atol=1e-6)
    net.eval()
    with torch.no_grad():
        feats = net(torch.randn(1, 3, 64, 64))
    assert [tuple(f.shape[1:]) for f in feats] == [(24, 32, 32), (40, 16, 16), (64, 8, 8), (128, 4, 4),
                                                   (176, 4, 4), (304, 2, 2), (512, 2, 2), (2048, 2, 2)]


# ---- 2. availability and the map through the registry ---------------------------------------------

def test_unavailable_without_the_file_then_runs(weights, tmp_path):
    sd, root = weights
    ok, why = pp.get("normal_bae").available(tmp_path)
    assert not ok and nb.WEIGHTS in why
    with pytest.raises(pp.PreprocessorUnavailable, match="scannet.pt"):
        pp.run("normal_bae", np.zeros((64, 64, 3), np.uint8), 64, annotator_dir=tmp_path)
    assert pp.get("normal_bae").available(root) == (True, "")

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (48, 80, 3), dtype=np.uint8)
    out = pp.run("normal_bae", img, 64, annotator_dir=root)
    assert out.dtype == np.uint8 and out.shape == (64, 107, 3)  # short side 64, width round(80 * 64 / 48)
    # each pixel is a unit normal, (n + 1) / 2 * 255 truncated: each decoded component is off by < 2/255
    n = out.astype(np.float64) / 255.0 * 2.0 - 1.0
    length = np.linalg.norm(n, axis=2)
    assert np.abs(length - 1.0).max() < 2.0 * math.sqrt(3) / 255.0
    assert out.reshape(-1, 3).std(axis=0).min() > 1.0  # not a constant map


# ---- 3. the forward against a functional recomputation on the state dict ------------------------

def _same_pad(x, k: int, s: int):
    """TensorFlow SAME: output ceil(n / s); total padding split with the smaller half first."""
    pads = []
    for n in (x.shape[3], x.shape[2]):
        total = max((-(-n // s) - 1) * s + k - n, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)


def _bn(x, sd, key, eps):
    shape = (1, -1, 1, 1)
    mean, var = sd[key + ".running_mean"].view(shape), sd[key + ".running_var"].view(shape)
    return (x - mean) / torch.sqrt(var + eps) * sd[key + ".weight"].view(shape) + sd[key + ".bias"].view(shape)


def _swish(x):
    return x * torch.sigmoid(x)


def _conv(x, sd, key, stride=1, groups=1):
    w = sd[key + ".weight"]
    return F.conv2d(_same_pad(x, w.shape[-1], stride), w, sd.get(key + ".bias"), stride, 0, 1, groups)


def _se(x, sd, key):
    s = x.mean(dim=(2, 3), keepdim=True)
    s = _swish(F.conv2d(s, sd[key + ".conv_reduce.weight"], sd[key + ".conv_reduce.bias"]))
    return x * torch.sigmoid(F.conv2d(s, sd[key + ".conv_expand.weight"], sd[key + ".conv_expand.bias"]))


def _encoder(x, sd):
    eps = 1e-3
    x = _swish(_bn(_conv(x, sd, P + "conv_stem", 2), sd, P + "bn1", eps))
    outs = []
    for stage, first_stride in enumerate((1, 2, 2, 2, 1, 2, 1)):
        i = 0
        while P + f"blocks.{stage}.{i}.conv_dw.weight" in sd:
            b, s = P + f"blocks.{stage}.{i}", first_stride if i == 0 else 1
            y = x
            if b + ".conv_pwl.weight" in sd:  # inverted residual
                y = _swish(_bn(_conv(y, sd, b + ".conv_pw"), sd, b + ".bn1", eps))
                y = _swish(_bn(_conv(y, sd, b + ".conv_dw", s, y.shape[1]), sd, b + ".bn2", eps))
                y = _bn(_conv(_se(y, sd, b + ".se"), sd, b + ".conv_pwl"), sd, b + ".bn3", eps)
            else:  # depthwise separable
                y = _swish(_bn(_conv(y, sd, b + ".conv_dw", s, y.shape[1]), sd, b + ".bn1", eps))
                y = _bn(_conv(_se(y, sd, b + ".se"), sd, b + ".conv_pw"), sd, b + ".bn2", eps)
            x = y + x if (s == 1 and y.shape == x.shape) else y
            i += 1
        outs.append(x)
    outs.append(_conv(x, sd, P + "conv_head"))
    return outs


def _interp_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """Linear interpolation with the end points aligned (align_corners=True), as an (n_out, n_in) matrix."""
    a = torch.zeros(n_out, n_in)
    for i in range(n_out):
        pos = i * (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
        lo = min(int(math.floor(pos)), n_in - 1)
        hi = min(lo + 1, n_in - 1)
        a[i, lo] += 1.0 - (pos - lo)
        a[i, hi] += pos - lo
    return a


def _resize(x, h, w):
    return torch.einsum("hi,bcij,wj->bchw", _interp_matrix(x.shape[2], h), x, _interp_matrix(x.shape[3], w))


def _leaky(x):
    return torch.where(x > 0, x, 0.01 * x)


def _normalize(p):
    length = torch.sqrt(p[:, 0:1] ** 2 + p[:, 1:2] ** 2 + p[:, 2:3] ** 2) + 1e-10
    k = p[:, 3:4]
    return torch.cat([p[:, :3] / length, torch.where(k > 0, k, torch.exp(k) - 1) + 1.01], dim=1)


def _decoder(feats, sd):
    d = "decoder."

    def up(x, skip, name):
        y = torch.cat([_resize(x, skip.shape[2], skip.shape[3]), skip], dim=1)
        for conv, bn in ((0, 1), (3, 4)):
            y = _leaky(_bn(F.conv2d(y, sd[f"{d}{name}._net.{conv}.weight"], sd[f"{d}{name}._net.{conv}.bias"],
                                    padding=1), sd, f"{d}{name}._net.{bn}", 1e-5))
        return y

    d0 = F.conv2d(feats[7], sd[d + "conv2.weight"], sd[d + "conv2.bias"])
    d1 = up(d0, feats[4], "up1")
    d2 = up(d1, feats[2], "up2")
    d3 = up(d2, feats[1], "up3")
    d4 = up(d3, feats[0], "up4")
    pred = _normalize(F.conv2d(d2, sd[d + "out_conv_res8.weight"], sd[d + "out_conv_res8.bias"], padding=1))
    outs = [pred]
    for feat, head in ((d2, "out_conv_res4"), (d3, "out_conv_res2"), (d4, "out_conv_res1")):
        h, w = 2 * feat.shape[2], 2 * feat.shape[3]
        x = torch.cat([_resize(feat, h, w), _resize(pred, h, w)], dim=1)
        for j in (0, 2, 4, 6):  # per-pixel MLP as matrix products over channels
            x = torch.einsum("oc,bchw->bohw", sd[f"{d}{head}.{j}.weight"][:, :, 0], x)
            x = x + sd[f"{d}{head}.{j}.bias"].view(1, -1, 1, 1)
            x = torch.relu(x) if j < 6 else x
        pred = _normalize(x)
        outs.append(pred)
    return outs


def test_forward_matches_a_functional_recomputation(weights):
    sd, root = weights
    net = nb.load(root / "normal_bae" / nb.WEIGHTS).cpu()  # through the file's {"model"}/"module." wrapping
    assert not net.training
    torch.manual_seed(2)
    x = torch.randn(1, 3, 64, 128)
    with torch.no_grad():
        got = net(x)
        want = _decoder(_encoder(x, sd), sd)
    assert [tuple(o.shape) for o in got] == [(1, 4, 8, 16), (1, 4, 16, 32), (1, 4, 32, 64), (1, 4, 64, 128)]
    for g, w in zip(got, want):
        assert (g - w).abs().max().item() < 1e-4
    assert got[-1][:, :3].std() > 0.05  # a real, varying prediction


# ---- 4. post-processing on a known network output ----------------------------------------------

class _Fixed(torch.nn.Module):
    """Stands in for NNET: records its input, returns a crafted full-resolution prediction."""

    def __init__(self, make):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.make = make
        self.seen = None

    def forward(self, x):
        self.seen = x.clone()
        return [None, None, None, self.make(x.shape[2], x.shape[3])]


VALUES = [-3.0, -1.0, -0.5, 0.0, 0.5, 0.999, 1.0, 2.0]
EXPECTED = [0, 0, 63, 127, 191, 254, 255, 255]  # ((v + 1) / 2).clip(0, 1) * 255, truncated


def test_map_is_the_extensions_post_processing(weights, monkeypatch):
    sd, root = weights

    def make(h, w):
        out = torch.zeros(1, 4, h, w)
        out[0, 0] = torch.tensor(VALUES).repeat(w // len(VALUES) + 1)[:w].view(1, w)
        out[0, 1] = torch.linspace(-1.0, 1.0, h).view(h, 1)
        out[0, 2] = 1.0
        out[0, 3] = 5.0  # kappa: not part of the map
        return out

    fake = _Fixed(make)
    monkeypatch.setattr(nb, "cached", lambda key, paths, build: fake)
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)
    out = pp.run("normal_bae", img, 64, annotator_dir=root)

    # the input: padded to 64 x 128 by repeating the edge, RGB order, /255, ImageNet mean/std
    assert tuple(fake.seen.shape) == (1, 3, 64, 128)
    padded = np.pad(img, ((0, 0), (0, 32), (0, 0)), mode="edge").astype(np.float32) / 255.0
    want = (padded - np.array(nb.MEAN, np.float32)) / np.array(nb.STD, np.float32)
    assert np.abs(fake.seen[0].permute(1, 2, 0).numpy() - want).max() < 1e-5

    # the map: x -> R, y -> G, z -> B, no flips, padding cut off
    assert out.dtype == np.uint8 and out.shape == (64, 96, 3)
    assert out[:, :, 0].tolist() == [[EXPECTED[j % len(VALUES)] for j in range(96)]] * 64
    ys = torch.linspace(-1.0, 1.0, 64).numpy()
    rows = (((ys + np.float32(1.0)) * np.float32(0.5)).clip(0, 1) * np.float32(255.0)).astype(np.uint8)
    assert (out[:, :, 1] == rows[:, None]).all()
    assert out[0, 0, 1] == 0 and out[-1, 0, 1] == 255
    assert (out[:, :, 2] == 255).all()


# ---- 5. unusable files ---------------------------------------------------------------------------

def test_bad_files_name_the_file_and_a_good_one_then_works(weights, tmp_path):
    sd, root = weights
    good = root / "normal_bae" / nb.WEIGHTS
    path = tmp_path / nb.WEIGHTS
    img = np.full((64, 64, 3), 128, np.uint8)
    clear_cache()

    with open(good, "rb") as f:
        path.write_bytes(f.read(1 << 20))  # truncated
    with pytest.raises(AnnotatorError, match="scannet.pt"):
        pp.run("normal_bae", img, 64, annotator_dir=tmp_path)

    # the bare ImageNet backbone dropped in by mistake: a wrong layout
    torch.save({"conv_stem.weight": torch.zeros(48, 3, 3, 3), "bn1.weight": torch.ones(48)}, path)
    with pytest.raises(AnnotatorError, match=r"scannet\.pt: not the expected weights: .*missing"):
        pp.run("normal_bae", img, 64, annotator_dir=tmp_path)

    # right keys, one wrong shape
    wrong = dict(sd)
    wrong["decoder.out_conv_res8.weight"] = torch.zeros(3, 512, 3, 3)
    torch.save({"model": wrong}, path)
    with pytest.raises(AnnotatorError, match=r"scannet\.pt: .*decoder\.out_conv_res8\.weight is \(3, 512, 3, 3\)"):
        pp.run("normal_bae", img, 64, annotator_dir=tmp_path)

    # a good file then works at the same path (this one bare and without the BatchNorm counters, which
    # are filled in), the network it built holding the file's weights
    torch.save({k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}, path)
    out = pp.run("normal_bae", img, 64, annotator_dir=tmp_path)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    net = nb.cached("normal_bae", [path], lambda: None)
    assert net is not None and not net.training
    loaded = net.state_dict()
    assert all(torch.equal(loaded[k].cpu(), v) for k, v in sd.items() if not k.endswith("num_batches_tracked"))
