"""MiDaS DPT-Hybrid (modules/controlnet/annotators/midas.py): the network has the published file's keys and
shapes (dpt_hybrid-midas-501f0c75.pt: timm's vit_base_resnet50_384 under pretrained.model, the readout /
reassemble layers, scratch.*), its forward pass agrees with one written here in torch.nn.functional calls
straight on the state dict, and the depth / normal maps are the extension's apply_midas post-processing
(checked on crafted predictions) at resize_with_pad's size."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from modules.controlnet import annotators
from modules.controlnet import preprocessors as pp
from modules.controlnet.annotators import AnnotatorError
from modules.controlnet.annotators import midas as m

FILE = "dpt_hybrid-midas-501f0c75.pt"

# keys and shapes of the published file, from the original definition (timm's ResNetV2 / ViT, MiDaS'
# vit.py / blocks.py / dpt_depth.py)
KEY_COUNT = 368
PARAM_COUNT = 123_146_985
SAMPLE = {
    "pretrained.model.cls_token": (1, 1, 768),
    "pretrained.model.pos_embed": (1, 577, 768),
    "pretrained.model.patch_embed.backbone.stem.conv.weight": (64, 3, 7, 7),
    "pretrained.model.patch_embed.backbone.stem.norm.bias": (64,),
    "pretrained.model.patch_embed.backbone.stages.0.blocks.0.downsample.conv.weight": (256, 64, 1, 1),
    "pretrained.model.patch_embed.backbone.stages.0.blocks.2.conv2.weight": (64, 64, 3, 3),
    "pretrained.model.patch_embed.backbone.stages.1.blocks.0.downsample.norm.weight": (512,),
    "pretrained.model.patch_embed.backbone.stages.1.blocks.3.conv3.weight": (512, 128, 1, 1),
    "pretrained.model.patch_embed.backbone.stages.2.blocks.0.conv1.weight": (256, 512, 1, 1),
    "pretrained.model.patch_embed.backbone.stages.2.blocks.8.norm3.weight": (1024,),
    "pretrained.model.patch_embed.proj.weight": (768, 1024, 1, 1),
    "pretrained.model.blocks.0.attn.qkv.weight": (2304, 768),
    "pretrained.model.blocks.5.attn.proj.bias": (768,),
    "pretrained.model.blocks.11.mlp.fc1.weight": (3072, 768),
    "pretrained.model.blocks.11.mlp.fc2.weight": (768, 3072),
    "pretrained.model.blocks.7.norm2.weight": (768,),
    "pretrained.model.norm.weight": (768,),
    "pretrained.model.head.weight": (1000, 768),
    "pretrained.act_postprocess3.0.project.0.weight": (768, 1536),
    "pretrained.act_postprocess3.3.weight": (768, 768, 1, 1),
    "pretrained.act_postprocess4.4.weight": (768, 768, 3, 3),
    "scratch.layer1_rn.weight": (256, 256, 3, 3),
    "scratch.layer2_rn.weight": (256, 512, 3, 3),
    "scratch.layer4_rn.weight": (256, 768, 3, 3),
    "scratch.refinenet4.resConfUnit1.conv1.weight": (256, 256, 3, 3),
    "scratch.refinenet1.out_conv.weight": (256, 256, 1, 1),
    "scratch.output_conv.0.weight": (128, 256, 3, 3),
    "scratch.output_conv.2.weight": (32, 128, 3, 3),
    "scratch.output_conv.4.weight": (1, 32, 1, 1),
    "scratch.output_conv.4.bias": (1,),
}
ABSENT = ["pretrained.act_postprocess1.0.project.0.weight", "pretrained.act_postprocess2.3.weight",
          "pretrained.model.patch_embed.backbone.stages.3.blocks.0.conv1.weight",
          "pretrained.model.patch_embed.backbone.norm.weight", "scratch.refinenet1.resConfUnit1.bn1.weight"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    yield
    annotators.clear_cache()


@pytest.fixture(scope="module")
def net():
    """The real architecture with random weights scaled so the activations stay of order one."""
    net = m.new_net()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if p.ndim == 1 and "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            elif p.ndim == 1:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
            elif name.endswith(("cls_token", "pos_embed")):
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p[0].numel()))
        net.scratch.output_conv[4].bias.fill_(3.0)  # centres the head (about -3 here) so ReLU keeps half
    return net


def cheap_file(path, seed=1, drop=None, reshape=None):
    """A file in the real layout whose tensors all view one random buffer (torch.save stores it once:
    ~21 MB instead of 490)."""
    shapes = {k: v.shape for k, v in m.new_net().state_dict().items()}
    g = torch.Generator().manual_seed(seed)
    buf = torch.randn(max(math.prod(s) for s in shapes.values()), generator=g) * 0.02
    sd = {k: buf[:math.prod(s)].view(s) for k, s in shapes.items()}
    if drop:
        sd.pop(drop)
    if reshape:
        sd[reshape[0]] = torch.zeros(reshape[1])
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(sd, path)
    return path


def image(h, w, seed=0):
    return np.random.RandomState(seed).randint(0, 256, (h, w, 3)).astype(np.uint8)


# ---- 1. the published layout ----------------------------------------------------------------------------

def test_state_dict_has_the_published_keys_and_shapes():
    sd = m.new_net().state_dict()
    assert len(sd) == KEY_COUNT
    assert sum(v.numel() for v in sd.values()) == PARAM_COUNT
    assert {k: tuple(sd[k].shape) for k in SAMPLE if k in sd} == SAMPLE
    assert not [k for k in ABSENT if k in sd]
    blocks = {k.split(".")[3] for k in sd if k.startswith("pretrained.model.blocks.")}
    assert blocks == {str(i) for i in range(12)}
    stages = [len({k.split(".")[7] for k in sd if f"backbone.stages.{s}.blocks." in k}) for s in range(3)]
    assert stages == [3, 4, 9]
    assert len(list(m.new_net().buffers())) == 0  # every entry is a parameter


# ---- 2. availability and the run through the registry ---------------------------------------------------

def test_unavailable_without_the_file_then_runs_with_the_extensions_map_sizes(tmp_path):
    for name in ("depth", "normal_map", "depth_midas", "normal_midas"):
        ok, why = pp.get(name).available(tmp_path)
        assert not ok and FILE in why
    with pytest.raises(pp.PreprocessorUnavailable, match=FILE):
        pp.run("depth_midas", image(40, 64), 64, annotator_dir=tmp_path)

    cheap_file(tmp_path / "midas" / FILE)
    for name in ("depth", "normal_map"):
        assert pp.get(name).available(tmp_path) == (True, "")
    depth = pp.run("depth_midas", image(40, 64), 64, annotator_dir=tmp_path)  # 64 x 102, padded 64 x 128
    assert depth.shape == (64, 102) and depth.dtype == np.uint8
    normal = pp.run("normal_map", image(64, 64), 64, 0.4, annotator_dir=tmp_path)
    assert normal.shape == (64, 64, 3) and normal.dtype == np.uint8


# ---- 3. the forward pass against a functional reference -------------------------------------------------

def _same(x, k, s, value=0.0):
    pads = []
    for n in (x.shape[3], x.shape[2]):
        out = -(-n // s)
        total = max((out - 1) * s + k - n, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads, value=value)


def _std_conv(x, w, stride):
    std, mean = torch.std_mean(w, dim=(1, 2, 3), keepdim=True, unbiased=False)
    return F.conv2d(_same(x, w.shape[-1], stride), (w - mean) / torch.sqrt(std * std + 1e-8), stride=stride)


def _ln(x, sd, pre):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + 1e-6) * sd[pre + ".weight"] + sd[pre + ".bias"]


def _gelu(x):
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


def _lin(x, sd, pre):
    return x @ sd[pre + ".weight"].t() + sd[pre + ".bias"]


def reference(sd, x):
    """DPT-Hybrid written out again: returns the output and the four reassembled taps."""
    bb = "pretrained.model.patch_embed.backbone."

    def gn(y, pre, relu=True):
        y = F.group_norm(y, 32, sd[pre + ".weight"], sd[pre + ".bias"], 1e-5)
        return y.clamp_min(0) if relu else y

    y = gn(_std_conv(x, sd[bb + "stem.conv.weight"], 2), bb + "stem.norm")
    y = F.max_pool2d(_same(y, 3, 2, float("-inf")), 3, 2)
    stage_out = []
    for s, depth in enumerate((3, 4, 9)):
        for b in range(depth):
            pre = f"{bb}stages.{s}.blocks.{b}."
            stride = 2 if s > 0 and b == 0 else 1
            short = y
            if b == 0:
                short = gn(_std_conv(y, sd[pre + "downsample.conv.weight"], stride), pre + "downsample.norm", False)
            r = gn(_std_conv(y, sd[pre + "conv1.weight"], 1), pre + "norm1")
            r = gn(_std_conv(r, sd[pre + "conv2.weight"], stride), pre + "norm2")
            r = gn(_std_conv(r, sd[pre + "conv3.weight"], 1), pre + "norm3", False)
            y = (r + short).clamp_min(0)
        stage_out.append(y)

    vit = "pretrained.model."
    gh, gw = x.shape[2] // 16, x.shape[3] // 16
    t = F.conv2d(y, sd[vit + "patch_embed.proj.weight"], sd[vit + "patch_embed.proj.bias"])
    t = t.reshape(1, 768, gh * gw).permute(0, 2, 1)
    t = torch.cat([sd[vit + "cls_token"], t], 1)
    pe = sd[vit + "pos_embed"]
    grid = F.interpolate(pe[:, 1:].reshape(1, 24, 24, 768).permute(0, 3, 1, 2), size=(gh, gw), mode="bilinear")
    t = t + torch.cat([pe[:, :1], grid.reshape(1, 768, gh * gw).permute(0, 2, 1)], 1)
    taps = {}
    for i in range(12):
        pre = f"{vit}blocks.{i}."
        qkv = _lin(_ln(t, sd, pre + "norm1"), sd, pre + "attn.qkv")
        q, k, v = (qkv[..., j * 768:(j + 1) * 768].reshape(1, -1, 12, 64).transpose(1, 2) for j in range(3))
        att = torch.softmax(q @ k.transpose(-1, -2) / 8.0, dim=-1)
        t = t + _lin((att @ v).transpose(1, 2).reshape(1, -1, 768), sd, pre + "attn.proj")
        t = t + _lin(_gelu(_lin(_ln(t, sd, pre + "norm2"), sd, pre + "mlp.fc1")), sd, pre + "mlp.fc2")
        taps[i] = t

    def reassemble(tok, n):
        pre = f"pretrained.act_postprocess{n}."
        feat = torch.cat([tok[:, 1:], tok[:, :1].expand(-1, tok.shape[1] - 1, -1)], -1)
        r = _gelu(_lin(feat, sd, pre + "0.project.0")).permute(0, 2, 1).reshape(1, 768, gh, gw)
        r = F.conv2d(r, sd[pre + "3.weight"], sd[pre + "3.bias"])
        if n == 4:
            r = F.conv2d(r, sd[pre + "4.weight"], sd[pre + "4.bias"], stride=2, padding=1)
        return r

    layers = [stage_out[0], stage_out[1], reassemble(taps[8], 3), reassemble(taps[11], 4)]

    def conv(z, pre, **kw):
        return F.conv2d(z, sd[pre + ".weight"], sd.get(pre + ".bias"), **kw)

    def up(z):
        return F.interpolate(z, scale_factor=2, mode="bilinear", align_corners=True)

    def rcu(z, pre):
        return z + conv(conv(z.clamp_min(0), pre + ".conv1", padding=1).clamp_min(0), pre + ".conv2", padding=1)

    rn = [conv(layers[i], f"scratch.layer{i + 1}_rn", padding=1) for i in range(4)]
    path = None
    for n in (4, 3, 2, 1):
        pre = f"scratch.refinenet{n}"
        z = rn[n - 1] if path is None else path + rcu(rn[n - 1], pre + ".resConfUnit1")
        path = conv(up(rcu(z, pre + ".resConfUnit2")), pre + ".out_conv")
    out = up(conv(path, "scratch.output_conv.0", padding=1))
    out = conv(conv(out, "scratch.output_conv.2", padding=1).clamp_min(0), "scratch.output_conv.4").clamp_min(0)
    return out[:, 0], layers


def test_forward_matches_a_functional_reference(net):
    sd = {k: v.detach() for k, v in net.state_dict().items()}
    x = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(3)) * 2 - 1
    with torch.no_grad():
        got, got_layers = net(x), net.pretrained(x)
        want, want_layers = reference(sd, x)
    assert [tuple(t.shape) for t in got_layers] == [(1, 256, 16, 24), (1, 512, 8, 12), (1, 768, 4, 6), (1, 768, 2, 3)]
    for a, b in zip(got_layers, want_layers):
        assert (a - b).abs().max() <= 1e-4 * max(1.0, b.abs().max().item())
    assert got.shape == want.shape == (1, 64, 96)
    assert want.abs().max() > 0 and (want > 0).float().mean() > 0.1  # not a dead output
    assert (got - want).abs().max() <= 1e-4 * max(1.0, want.abs().max().item())


def test_pos_embed_is_resized_bilinearly_and_kept_at_24x24(net):
    pe = net.pretrained.model.pos_embed
    assert torch.equal(net.pretrained.model.resized_pos_embed(24, 24), pe)
    r = net.pretrained.model.resized_pos_embed(4, 6)
    assert r.shape == (1, 25, 768) and torch.equal(r[:, 0], pe[:, 0])
    # 24 -> 4 rows (align_corners False): output row 0 samples input row 2.5, column 0 of 6 samples 1.5
    grid = pe[0, 1:].reshape(24, 24, 768)
    want = (grid[2, 1] + grid[2, 2] + grid[3, 1] + grid[3, 2]) / 4
    assert torch.allclose(r[0, 1], want, atol=1e-6)


# ---- 4. post-processing on crafted predictions ----------------------------------------------------------

class FakeNet(torch.nn.Module):
    """Returns a set prediction, recording what it was fed."""

    def __init__(self, depth: np.ndarray):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.depth = torch.from_numpy(depth)
        self.seen = []

    def forward(self, x):
        self.seen.append(x.clone())
        return self.depth[None]


def crafted() -> np.ndarray:
    """64 x 128 (the padded size of a 40 x 64 image at res 64): 200 + x + 2y, max 453 in the padding,
    a zero (background) block at the top left."""
    yy, xx = np.mgrid[0:64, 0:128].astype(np.float32)
    d = 200 + xx + 2 * yy
    d[:16, :32] = 0
    return d


def numpy_sobel(d):
    p = np.pad(d, 1, mode="reflect")  # OpenCV's default border (reflect 101)
    dx = (p[:-2, 2:] - p[:-2, :-2]) + 2 * (p[1:-1, 2:] - p[1:-1, :-2]) + (p[2:, 2:] - p[2:, :-2])
    dy = (p[2:, :-2] - p[:-2, :-2]) + 2 * (p[2:, 1:-1] - p[:-2, 1:-1]) + (p[2:, 2:] - p[:-2, 2:])
    return dx, dy


def expected_maps(d, bg_th):
    dp = (d - d.min()) / (d - d.min()).max()
    depth = (dp * 255.0).clip(0, 255).astype(np.uint8)
    x, y = numpy_sobel(d)
    x[dp < bg_th] = 0
    y[dp < bg_th] = 0
    n = np.stack([x, y, np.full_like(x, 2 * np.pi)], axis=2)
    n /= np.sqrt((n ** 2).sum(axis=2, keepdims=True))
    return depth, (n * 127.5 + 127.5).clip(0, 255).astype(np.uint8)


@pytest.fixture
def fake(monkeypatch):
    net = FakeNet(crafted())
    monkeypatch.setattr(m, "get_net", lambda weights: net)
    return net


def test_depth_map_is_normalised_over_the_padded_prediction(fake):
    img = image(40, 64)
    out = m.run_depth(img, res=64, weights={FILE: None})
    assert out.shape == (64, 102) and out.dtype == np.uint8
    want, _ = expected_maps(crafted(), 0.4)
    assert np.array_equal(out, want[:64, :102])
    assert out[0, 0] == 0 and out[10, 50] == 151 and out[40, 60] == 191  # 270 / 453 * 255 = 151.99
    assert out.max() < 255  # the maximum lies in the padding
    # what the net was fed: the padded image scaled to [-1, 1], RGB, not resized to 384
    padded, hw = pp.resize_with_pad(img, 64)
    (x,) = fake.seen
    assert hw == (64, 102) and x.shape == (1, 3, 64, 128)
    assert torch.equal(x[0], torch.from_numpy(padded).float().permute(2, 0, 1) / 127.5 - 1.0)


def test_normal_map_gradients_threshold_and_channel_order(fake):
    out = m.run_normal(image(40, 64), res=64, thr_a=0.4, weights={FILE: None})
    assert out.shape == (64, 102, 3) and out.dtype == np.uint8
    _, want = expected_maps(crafted(), 0.4)
    assert np.array_equal(out, want[:64, :102])
    # d/dx = 8, d/dy = 16 inside the ramp: (8, 16, 2 pi) / |.| -> x in channel 0, y in 1, z in 2
    assert out[40, 60].tolist() == [181, 235, 169]
    assert out[5, 10].tolist() == [127, 127, 255]  # background block: gradients dropped
    assert out[5, 31].tolist() == [127, 127, 255]  # its edge is background too (depth 0 < 0.4)
    high = m.run_normal(image(40, 64), res=64, thr_a=0.7, weights={FILE: None})
    _, want = expected_maps(crafted(), 0.7)
    assert np.array_equal(high, want[:64, :102])
    assert out[20, 50].tolist() == [181, 235, 169] and high[20, 50].tolist() == [127, 127, 255]  # 290/453=0.64
    assert high[40, 60].tolist() == [181, 235, 169]  # 340 / 453 = 0.75: still foreground


def test_constant_prediction_gives_black_depth_and_flat_normals(monkeypatch):
    net = FakeNet(np.full((64, 64), 3.0, np.float32))
    monkeypatch.setattr(m, "get_net", lambda weights: net)
    depth = m.run_depth(image(64, 64), res=64, weights={FILE: None})
    assert depth.shape == (64, 64) and not depth.any()
    normal = m.run_normal(image(64, 64), res=64, thr_a=0.0, weights={FILE: None})
    assert (normal == np.array([127, 127, 255], np.uint8)).all()


# ---- 5. unusable files ----------------------------------------------------------------------------------

def test_bad_files_name_the_file_and_a_good_one_works_next(tmp_path):
    good = cheap_file(tmp_path / "good" / FILE)
    target = tmp_path / "ann" / FILE
    target.parent.mkdir()
    target.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(AnnotatorError, match=FILE):
        pp.run("depth", image(64, 64), 64, annotator_dir=tmp_path / "ann")
    cheap_file(target, drop="scratch.output_conv.4.bias")
    with pytest.raises(AnnotatorError, match=f"{FILE}.*missing.*scratch.output_conv.4.bias"):
        pp.run("depth", image(64, 64), 64, annotator_dir=tmp_path / "ann")
    cheap_file(target, reshape=("pretrained.model.pos_embed", (1, 577, 1024)))  # DPT-Large's width
    with pytest.raises(AnnotatorError, match=f"{FILE}.*pos_embed"):
        pp.run("normal_map", image(64, 64), 64, annotator_dir=tmp_path / "ann")
    target.write_bytes(good.read_bytes())
    assert pp.run("depth", image(64, 64), 64, annotator_dir=tmp_path / "ann").shape == (64, 64)
