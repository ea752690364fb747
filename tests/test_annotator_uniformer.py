"""segmentation (seg_ufade20k): the UniFormer-Small + UPerNet network has upernet_global_small.pth's keys
and shapes, its forward pass equals one recomputed here from the state dict with plain tensor maths, and
the preprocessor does what the extension's mmseg pipeline does (rescale to the test scale, BGR-swapped
normalisation, two bilinear resizes of the logits, argmax, ADE20K palette, unpad). Random weights in
the real layout stand in for the published file."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch
import torch.nn as nn

from modules.controlnet import annotators
from modules.controlnet import preprocessors as pp
from modules.controlnet.annotators import AnnotatorError
from modules.controlnet.annotators import uniformer as uf

FILE = "upernet_global_small.pth"


def random_state_dict(seed: int = 0) -> dict:
    """The network's own init, with BN statistics and norm affines moved off their identity values."""
    torch.manual_seed(seed)
    net = uf.UperNetUniFormer()
    g = torch.Generator().manual_seed(seed + 1)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)
            m.num_batches_tracked.fill_(1000)
        elif isinstance(m, nn.LayerNorm):
            n = m.normalized_shape[0]
            m.weight.data.copy_(1 + torch.randn(n, generator=g) * 0.1)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)
    return {k: v.clone() for k, v in net.state_dict().items()}


@pytest.fixture(scope="module")
def weights(tmp_path_factory, one_thread):
    """(annotator dir holding uniformer/upernet_global_small.pth as mmcv saves it, its state dict)."""
    root = tmp_path_factory.mktemp("annotators")
    (root / "uniformer").mkdir()
    sd = random_state_dict()
    meta = {"CLASSES": tuple(f"class{i}" for i in range(150)), "PALETTE": uf.ADE_PALETTE.tolist(),
            "mmseg_version": "0.x", "iter": 160000}
    torch.save({"meta": meta, "state_dict": sd}, root / "uniformer" / FILE)
    yield root, sd
    annotators.clear_cache()


@pytest.fixture(scope="module")
def net(weights):
    _, sd = weights
    m = uf.UperNetUniFormer()
    m.load_state_dict(sd)
    return m.eval()


def scene(h: int, w: int) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    img[:] = (40, 90, 200)
    cv2.rectangle(img, (w // 6, h // 5), (w // 2, h // 2), (230, 40, 30), -1)
    cv2.circle(img, (2 * w // 3, 2 * h // 3), min(h, w) // 4, (30, 200, 60), -1)
    return img


# ---- 1. the published file's layout ----------------------------------------------------------------

# from the original definitions (UniFormer backbone, mmseg UPerHead/PPM/FCNHead, mmcv ConvModule with BN)
# and upernet_global_small's config: widths 64/128/320/512, depths 3/4/8/3, channels 512, aux 320->256
SAMPLE = {
    "backbone.patch_embed1.proj.weight": (64, 3, 4, 4),
    "backbone.patch_embed1.norm.bias": (64,),
    "backbone.blocks1.0.pos_embed.weight": (64, 1, 3, 3),
    "backbone.blocks1.0.norm1.running_var": (64,),
    "backbone.blocks1.0.norm1.num_batches_tracked": (),
    "backbone.blocks1.2.attn.weight": (64, 1, 5, 5),
    "backbone.blocks1.2.mlp.fc1.weight": (256, 64, 1, 1),
    "backbone.norm1.weight": (64,),
    "backbone.patch_embed2.proj.weight": (128, 64, 2, 2),
    "backbone.blocks2.3.conv2.weight": (128, 128, 1, 1),
    "backbone.blocks2.3.mlp.fc2.weight": (128, 512, 1, 1),
    "backbone.patch_embed3.proj.weight": (320, 128, 2, 2),
    "backbone.blocks3.0.attn.qkv.weight": (960, 320),
    "backbone.blocks3.0.attn.qkv.bias": (960,),
    "backbone.blocks3.7.mlp.fc1.weight": (1280, 320),
    "backbone.blocks3.7.norm2.weight": (320,),
    "backbone.patch_embed4.proj.weight": (512, 320, 2, 2),
    "backbone.blocks4.2.attn.proj.weight": (512, 512),
    "backbone.blocks4.2.pos_embed.bias": (512,),
    "backbone.norm4.bias": (512,),
    "decode_head.psp_modules.0.1.conv.weight": (512, 512, 1, 1),
    "decode_head.psp_modules.3.1.bn.running_mean": (512,),
    "decode_head.bottleneck.conv.weight": (512, 2560, 3, 3),
    "decode_head.lateral_convs.0.conv.weight": (512, 64, 1, 1),
    "decode_head.lateral_convs.2.conv.weight": (512, 320, 1, 1),
    "decode_head.fpn_convs.1.conv.weight": (512, 512, 3, 3),
    "decode_head.fpn_bottleneck.conv.weight": (512, 2048, 3, 3),
    "decode_head.fpn_bottleneck.bn.num_batches_tracked": (),
    "decode_head.conv_seg.weight": (150, 512, 1, 1),
    "decode_head.conv_seg.bias": (150,),
    "auxiliary_head.convs.0.conv.weight": (256, 320, 3, 3),
    "auxiliary_head.convs.0.bn.weight": (256,),
    "auxiliary_head.conv_seg.weight": (150, 256, 1, 1),
}


def test_keys_and_shapes_are_the_published_files(net):
    sd = net.state_dict()
    # backbone: 4 patch embeds x 4 + 7 CBlocks x 22 + 11 SABlocks x 14 + 4 norms x 2 = 332; decode head:
    # 12 ConvModules (4 PPM, bottleneck, 3 lateral, 3 fpn, fpn_bottleneck) x 6 + conv_seg 2 = 74;
    # auxiliary head: 1 ConvModule x 6 + conv_seg 2 = 8. Parameters (buffers aside) counted by hand.
    counts = {p: sum(k.startswith(p + ".") for k in sd) for p in ("backbone", "decode_head", "auxiliary_head")}
    assert counts == {"backbone": 332, "decode_head": 74, "auxiliary_head": 8}
    assert len(sd) == 414
    assert sum(p.numel() for p in net.parameters()) == 51_521_132
    assert {k: tuple(sd[k].shape) for k in SAMPLE} == SAMPLE
    # no conv bias where a BN follows (mmcv's bias="auto"), none of the training-only extras
    assert "decode_head.bottleneck.conv.bias" not in sd
    assert not [k for k in sd if "conv_cat" in k or "head.weight" in k or "pre_logits" in k]


# ---- 2. availability and the map the extension returns ----------------------------------------------

def test_unavailable_until_the_file_is_there_then_gives_the_extensions_map(weights, tmp_path, monkeypatch):
    root, _ = weights
    for name in ("segmentation", "seg_ufade20k"):
        ok, why = pp.get(name).available(tmp_path)
        assert not ok and FILE in why
    with pytest.raises(pp.PreprocessorUnavailable, match=FILE):
        pp.run("segmentation", scene(80, 120), 64, annotator_dir=tmp_path)

    assert pp.get("segmentation").available(root) == (True, "")
    # a small test scale keeps the network input at the padded size (64x128), so this stays fast
    monkeypatch.setattr(uf, "IMG_SCALE", (128, 64))
    for name in ("segmentation", "seg_ufade20k"):
        out = pp.run(name, scene(80, 120), 64, annotator_dir=root)
        assert out.dtype == np.uint8 and out.shape == (64, 96, 3)  # short side 64, padding cut off
        colours = {tuple(c) for c in out.reshape(-1, 3)}
        assert colours <= {tuple(c) for c in uf.ADE_PALETTE.tolist()}
    # RGBA input goes through the extension's HWC3 (over white), like any other preprocessor
    rgba = np.dstack([scene(64, 64), np.full((64, 64), 255, np.uint8)])
    assert pp.run("segmentation", rgba, 64, annotator_dir=root).shape == (64, 64, 3)


# ---- 3. the forward pass against a functional recomputation ---------------------------------------

def _bn(x, sd, k, eps=1e-5):
    shape = (1, -1, 1, 1)
    inv = (sd[k + ".running_var"] + eps).rsqrt()
    return (x - sd[k + ".running_mean"].view(shape)) * (inv * sd[k + ".weight"]).view(shape) + sd[k + ".bias"].view(shape)


def _ln(t, sd, k, eps):
    mu = t.mean(-1, keepdim=True)
    var = ((t - mu) ** 2).mean(-1, keepdim=True)
    return (t - mu) / torch.sqrt(var + eps) * sd[k + ".weight"] + sd[k + ".bias"]


def _ln_chw(x, sd, k, eps):
    return _ln(x.permute(0, 2, 3, 1), sd, k, eps).permute(0, 3, 1, 2)


def _gelu(x):
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


def _conv(x, sd, k, **kw):
    return torch.nn.functional.conv2d(x, sd[k + ".weight"], sd.get(k + ".bias"), **kw)


def _linear(t, sd, k):
    return t @ sd[k + ".weight"].T + sd[k + ".bias"]


def _up(x, size):
    return torch.nn.functional.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def reference_features(sd, x):
    """UniFormer-Small's four stage outputs, from the state dict's tensors."""
    outs = []
    for stage, patch in zip(range(1, 5), (4, 2, 2, 2)):
        p = f"backbone.patch_embed{stage}"
        x = _ln_chw(_conv(x, sd, p + ".proj", stride=patch), sd, p + ".norm", 1e-5)
        c = x.shape[1]
        i = 0
        while f"backbone.blocks{stage}.{i}.pos_embed.weight" in sd:
            b = f"backbone.blocks{stage}.{i}"
            x = x + _conv(x, sd, b + ".pos_embed", padding=1, groups=c)
            if stage <= 2:
                y = _conv(_bn(x, sd, b + ".norm1"), sd, b + ".conv1")
                y = _conv(_conv(y, sd, b + ".attn", padding=2, groups=c), sd, b + ".conv2")
                x = x + y
                y = _conv(_gelu(_conv(_bn(x, sd, b + ".norm2"), sd, b + ".mlp.fc1")), sd, b + ".mlp.fc2")
                x = x + y
            else:
                n, _, h, w = x.shape
                t = x.reshape(n, c, h * w).transpose(1, 2)
                heads = c // 64
                qkv = _linear(_ln(t, sd, b + ".norm1", 1e-6), sd, b + ".attn.qkv")
                q, k, v = qkv.reshape(n, h * w, 3, heads, 64).permute(2, 0, 3, 1, 4)
                a = q @ k.transpose(-1, -2) / 8.0
                a = torch.exp(a - a.amax(-1, keepdim=True))
                a = a / a.sum(-1, keepdim=True)
                y = (a @ v).transpose(1, 2).reshape(n, h * w, c)
                t = t + _linear(y, sd, b + ".attn.proj")
                y = _linear(_gelu(_linear(_ln(t, sd, b + ".norm2", 1e-6), sd, b + ".mlp.fc1")), sd, b + ".mlp.fc2")
                t = t + y
                x = t.transpose(1, 2).reshape(n, c, h, w)
            i += 1
        outs.append(_ln_chw(x, sd, f"backbone.norm{stage}", 1e-6))
    return outs


def _cm(x, sd, k, pad=0):
    return torch.relu(_bn(_conv(x, sd, k + ".conv", padding=pad), sd, k + ".bn"))


def reference_logits(sd, x):
    """encode_decode: backbone, UPerHead, logits resized to the input."""
    f = reference_features(sd, x)
    top = f[3]
    pooled = [_up(_cm(torch.nn.functional.adaptive_avg_pool2d(top, s), sd, f"decode_head.psp_modules.{i}.1"),
                  top.shape[2:]) for i, s in enumerate((1, 2, 3, 6))]
    lat = [_cm(f[i], sd, f"decode_head.lateral_convs.{i}") for i in range(3)]
    lat.append(_cm(torch.cat([top] + pooled, 1), sd, "decode_head.bottleneck", 1))
    for i in (3, 2, 1):
        lat[i - 1] = lat[i - 1] + _up(lat[i], lat[i - 1].shape[2:])
    outs = [_cm(lat[i], sd, f"decode_head.fpn_convs.{i}", 1) for i in range(3)] + [lat[3]]
    outs = [outs[0]] + [_up(o, outs[0].shape[2:]) for o in outs[1:]]
    y = _conv(_cm(torch.cat(outs, 1), sd, "decode_head.fpn_bottleneck", 1), sd, "decode_head.conv_seg")
    return _up(y, x.shape[2:])


def test_forward_matches_a_functional_recomputation(net, weights):
    _, sd = weights
    torch.manual_seed(3)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        feats = net.backbone(x)
        want_feats = reference_features(sd, x)
        got, want = net(x), reference_logits(sd, x)
    assert [tuple(t.shape) for t in feats] == [(1, 64, 16, 24), (1, 128, 8, 12), (1, 320, 4, 6), (1, 512, 2, 3)]
    for a, b in zip(feats, want_feats):
        assert (a - b).abs().max().item() < 1e-4 * max(1.0, b.abs().max().item())
    assert got.shape == (1, 150, 64, 96)
    scale = max(1.0, want.abs().max().item())
    assert (got - want).abs().max().item() < 1e-4 * scale
    assert want.std().item() > 1e-3  # a map worth comparing, not a constant


def test_segment_is_the_mmseg_pipeline_written_out(net, weights, monkeypatch):
    """Rescale (bilinear on uint8), channels swapped, (x - mean) / std, logits back to the image, argmax."""
    _, sd = weights
    monkeypatch.setattr(uf, "IMG_SCALE", (192, 48))  # 64x128 -> 48x96: the rescale really runs
    img = scene(64, 128)
    got = uf.segment(net, img)
    small = cv2.resize(img, (96, 48), interpolation=cv2.INTER_LINEAR)
    bgr = small[:, :, ::-1].astype(np.float32)
    x = (bgr - np.array([123.675, 116.28, 103.53], np.float32)) / np.array([58.395, 57.12, 57.375], np.float32)
    with torch.no_grad():
        logits = _up(reference_logits(sd, torch.from_numpy(x.transpose(2, 0, 1).copy())[None]), (64, 128))[0]
    top2 = logits.topk(2, dim=0).values
    clear = (top2[0] - top2[1] > 1e-3).numpy()
    want = logits.argmax(0).numpy()
    assert got.shape == (64, 128) and got.dtype == np.int64
    assert clear.mean() > 0.9 and (got[clear] == want[clear]).all()
    assert len(np.unique(want)) > 1


# ---- 4. pre- and post-processing on crafted inputs -------------------------------------------------

def test_rescale_to_the_test_scale():
    assert uf.IMG_SCALE == (2048, 512)
    assert uf.rescaled_size(512, 512) == (512, 512)
    assert uf.rescaled_size(64, 128) == (512, 1024)  # small images grow: short side to 512
    assert uf.rescaled_size(576, 768) == (512, 683)  # 768 * 512 / 576 = 682.67, rounded half up
    assert uf.rescaled_size(512, 4096) == (256, 2048)  # the long side caps it
    assert uf.rescaled_size(1024, 1025) == (512, 513)  # 512.5: mmcv rounds half up, not to even
    assert uf.rescaled_size(768, 512) == (768, 512)  # portrait: the short side is the width
    assert uf.rescaled_size(900, 600) == (768, 512)
    assert uf.preprocess(np.zeros((64, 128, 3), np.uint8)).shape == (1, 3, 512, 1024)


def test_palette_is_mmsegs_ade20k_palette():
    p = uf.ADE_PALETTE
    assert p.shape == (150, 3) and p.dtype == np.uint8
    # wall, building, sky, floor, tree ... person (12) ... clock (148), flag (149)
    assert p[:5].tolist() == [[120, 120, 120], [180, 120, 120], [6, 230, 230], [80, 50, 50], [4, 200, 3]]
    assert p[12].tolist() == [150, 5, 61] and p[20].tolist() == [0, 102, 200]
    assert p[148:].tolist() == [[102, 255, 0], [92, 0, 255]]
    assert int(p.astype(np.int64).sum()) == 58427  # the sum over all 150 colours of mmseg's list
    labels = np.arange(150).reshape(10, 15)
    assert (uf.colorize(labels) == p.reshape(10, 15, 3)).all()
    assert uf.colorize(np.array([[150, -1]])).tolist() == [[[0, 0, 0], [0, 0, 0]]]


class FakeNet(nn.Module):
    """Stands in for the network: records its input, returns the logits a function of the grid gives."""

    def __init__(self, labels_for):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))
        self.labels_for = labels_for
        self.seen = []

    def forward(self, x):
        self.seen.append(x.clone())
        labels = torch.as_tensor(self.labels_for(x.shape[2], x.shape[3]))
        return torch.nn.functional.one_hot(labels, 150).permute(2, 0, 1)[None].float() * 5.0


def _with_fake(monkeypatch, fake):
    annotators.clear_cache()
    monkeypatch.setattr(uf, "build", lambda path: fake)


def test_map_is_the_palette_of_the_argmax_cut_to_the_unpadded_size(weights, monkeypatch):
    root, _ = weights
    fake = FakeNet(lambda h, w: (np.arange(h)[:, None] // 4 * 7 + np.arange(w)[None, :] // 4) % 150)
    _with_fake(monkeypatch, fake)
    monkeypatch.setattr(uf, "IMG_SCALE", (1024, 64))  # no rescale: labels land pixel for pixel
    img = scene(70, 100)
    out = pp.run("segmentation", img, 64, annotator_dir=root)
    padded, (h, w) = pp.resize_with_pad(img, 64)
    assert (h, w) == (64, 91) and padded.shape == (64, 128, 3) and out.shape == (64, 91, 3)
    labels = (np.arange(64)[:, None] // 4 * 7 + np.arange(128)[None, :] // 4) % 150
    assert (out == uf.ADE_PALETTE[labels[:h, :w]]).all()
    # what the network was fed: the padded RGB image read as BGR, normalised with mmseg's mean / std
    x = fake.seen[-1][0].numpy().transpose(1, 2, 0)
    want = (padded[:, :, ::-1].astype(np.float32) - [123.675, 116.28, 103.53]) / [58.395, 57.12, 57.375]
    assert np.abs(x - want).max() < 1e-5
    annotators.clear_cache()


def test_logits_are_resized_back_from_the_test_scale(weights, monkeypatch):
    root, _ = weights
    fake = FakeNet(lambda h, w: np.where(np.arange(w)[None, :] < w // 2, 3, 5).repeat(h, 0))
    _with_fake(monkeypatch, fake)
    out = pp.run("seg_ufade20k", np.full((64, 64, 3), 128, np.uint8), 64, annotator_dir=root)
    assert tuple(fake.seen[-1].shape) == (1, 3, 512, 512)  # the real test scale: short side to 512
    assert out.shape == (64, 64, 3)
    assert (out[:, :32] == uf.ADE_PALETTE[3]).all() and (out[:, 32:] == uf.ADE_PALETTE[5]).all()
    annotators.clear_cache()


# ---- 5. unusable files -----------------------------------------------------------------------------

def test_bad_files_name_the_file_and_a_good_one_then_works(weights, net, tmp_path, monkeypatch):
    root, sd = weights
    annotators.clear_cache()
    monkeypatch.setattr(uf, "IMG_SCALE", (128, 64))
    target = tmp_path / FILE
    good = root / "uniformer" / FILE
    img = scene(64, 64)

    target.write_bytes(good.read_bytes()[: 1 << 20])  # truncated download
    with pytest.raises(AnnotatorError, match=FILE):
        pp.run("segmentation", img, 64, annotator_dir=tmp_path)

    wrong = dict(sd)
    wrong["decode_head.conv_seg.weight"] = torch.zeros(19, 512, 1, 1)  # a Cityscapes head
    del wrong["auxiliary_head.conv_seg.bias"]
    torch.save({"state_dict": {k: wrong[k] for k in list(wrong)[:40] + list(wrong)[-40:]}}, target)
    with pytest.raises(AnnotatorError, match=FILE) as e:
        pp.run("segmentation", img, 64, annotator_dir=tmp_path)
    assert "missing" in str(e.value)

    torch.save({"state_dict": {"backbone.patch_embed1.proj.weight": [1, 2, 3]}}, target)
    with pytest.raises(AnnotatorError, match=FILE):
        pp.run("segmentation", img, 64, annotator_dir=tmp_path)

    # the user drops in a good file at the same place (a bare state dict, saved without BN counters)
    torch.save({k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}, target)
    out = pp.run("segmentation", img, 64, annotator_dir=tmp_path)
    padded, hw = pp.resize_with_pad(img, 64)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    assert (out == pp.unpad(uf.colorize(uf.segment(net, padded)), hw)).all()
    annotators.clear_cache()
