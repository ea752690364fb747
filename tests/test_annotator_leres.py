"""LeReS depth (depth_leres, depth_leres++): the networks have res101.pth's and latest_net_G.pth's key layout,
the forward passes equal a torch.nn.functional recomputation on the state dict (BatchNorm on the image's own
statistics, as the extension's never-evaluated model does), the input is the extension's (BGR, 0..255 minus
the ImageNet mean over its std), the map post-processing and the boost's steps give known answers on
crafted inputs, and unusable files are reported by name."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from modules.controlnet import annotators
from modules.controlnet import preprocessors as pp
from modules.controlnet.annotators import AnnotatorError
from modules.controlnet.annotators import leres as L

pytestmark = pytest.mark.usefixtures("one_thread")  # big convolutions on small maps: threads only contend

# ---- the published key layouts (from AdelaiDepth's RelDepthModel('resnext101') and pix2pix's
# UnetGenerator(2, 1, 10, 64, norm 'none')) --------------------------------------------------------

LERES_KEYS = 712  # parameters and BatchNorm buffers (running stats, num_batches_tracked)
LERES_ELEMENTS = 115_568_177
LERES_SAMPLE = {
    "depth_model.encoder_modules.encoder.conv1.weight": (64, 3, 7, 7),
    "depth_model.encoder_modules.encoder.bn1.running_var": (64,),
    "depth_model.encoder_modules.encoder.layer1.0.downsample.0.weight": (256, 64, 1, 1),
    "depth_model.encoder_modules.encoder.layer1.1.bn1.bias": (256,),
    "depth_model.encoder_modules.encoder.layer1.2.bn3.running_var": (256,),
    "depth_model.encoder_modules.encoder.layer2.1.conv2.weight": (512, 16, 3, 3),
    "depth_model.encoder_modules.encoder.layer2.3.bn1.bias": (512,),
    "depth_model.encoder_modules.encoder.layer3.0.bn3.running_var": (1024,),
    "depth_model.encoder_modules.encoder.layer3.2.conv2.weight": (1024, 32, 3, 3),
    "depth_model.encoder_modules.encoder.layer3.7.conv3.weight": (1024, 1024, 1, 1),
    "depth_model.encoder_modules.encoder.layer3.13.conv1.weight": (1024, 1024, 1, 1),
    "depth_model.encoder_modules.encoder.layer3.18.conv2.weight": (1024, 32, 3, 3),
    "depth_model.encoder_modules.encoder.layer3.22.bn3.num_batches_tracked": (),
    "depth_model.encoder_modules.encoder.layer4.0.conv3.weight": (2048, 2048, 1, 1),
    "depth_model.encoder_modules.encoder.layer4.0.downsample.0.weight": (2048, 1024, 1, 1),
    "depth_model.encoder_modules.encoder.layer4.2.bn1.bias": (2048,),
    "depth_model.decoder_modules.conv.conv1.weight": (512, 2048, 3, 3),
    "depth_model.decoder_modules.conv.conv_branch.2.running_mean": (512,),
    "depth_model.decoder_modules.conv1.bias": (256,),
    "depth_model.decoder_modules.ffm2.ftb1.conv_branch.1.bias": (256,),
    "depth_model.decoder_modules.ffm1.ftb2.conv_branch.1.weight": (256, 256, 3, 3),
    "depth_model.decoder_modules.ffm0.ftb1.conv1.weight": (256, 256, 3, 3),
    "depth_model.decoder_modules.outconv.adapt_conv.0.bias": (128,),
    "depth_model.decoder_modules.outconv.adapt_conv.1.weight": (128,),
    "depth_model.decoder_modules.outconv.adapt_conv.3.weight": (1, 128, 3, 3),
    "depth_model.decoder_modules.outconv.adapt_conv.3.bias": (1,),
}


def _unet_keys() -> dict:
    """latest_net_G.pth: every level's down conv (no bias), up conv (bias only at the outermost)."""
    p = "model.model.1."
    mids = [(128, 64), (256, 128), (512, 256)] + [(512, 512)] * 5
    keys = {"model.model.0.weight": (64, 2, 4, 4)}
    for inner, outer in mids:
        keys[p + "model.1.weight"] = (inner, outer, 4, 4)
        p += "model.3."
    keys[p + "model.1.weight"] = (512, 512, 4, 4)  # innermost
    keys[p + "model.3.weight"] = (512, 512, 4, 4)
    for inner, outer in reversed(mids):
        p = p[:-len("model.3.")]
        keys[p + "model.5.weight"] = (inner * 2, outer, 4, 4)
    keys["model.model.3.weight"] = (128, 1, 4, 4)
    keys["model.model.3.bias"] = (1,)
    return keys


UNET_SAMPLE = {  # literal, spelled out, to check _unet_keys' walk
    "model.model.1.model.3.model.3.model.1.weight": (512, 256, 4, 4),
    "model.model.1.model.3.model.3.model.5.weight": (1024, 256, 4, 4),
    "model.model.1.model.5.weight": (256, 64, 4, 4),
    "model.model.1.model.3.model.3.model.3.model.3.model.3.model.3.model.3.model.3.model.3.weight": (512, 512, 4, 4),
}
UNET_ELEMENTS = 79_564_801


def _shapes(net) -> dict:
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def test_leres_has_the_res101_layout():
    with torch.device("meta"):
        shapes = _shapes(L.LeReS())
    assert len(shapes) == LERES_KEYS
    assert sum(int(np.prod(s)) for s in shapes.values()) == LERES_ELEMENTS
    for k, s in LERES_SAMPLE.items():
        assert shapes[k] == s, k


def test_merge_net_has_the_latest_net_g_layout():
    with torch.device("meta"):
        shapes = _shapes(L.MergeNet())
    want = _unet_keys()
    assert all(want[k] == s for k, s in UNET_SAMPLE.items())
    assert shapes == want and len(want) == 21
    assert sum(int(np.prod(s)) for s in shapes.values()) == UNET_ELEMENTS


# ---- random weights in the real layouts, saved as the published files ----------------------------

def _random_state(net_cls, seed: int) -> dict:
    with torch.device("meta"):
        template = net_cls().state_dict()
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in template.items():
        if not v.is_floating_point():
            out[k] = torch.zeros(v.shape, dtype=v.dtype)
        elif k.endswith("running_var"):
            out[k] = torch.empty(v.shape).uniform_(0.5, 2.0, generator=g)
        elif v.ndim == 1 and k.endswith("weight"):
            out[k] = torch.empty(v.shape).normal_(1.0, 0.1, generator=g)
        elif v.ndim == 1:
            out[k] = torch.empty(v.shape).normal_(0.0, 0.1, generator=g)
        else:  # conv weights: ~unit-variance outputs
            out[k] = torch.empty(v.shape).normal_(0.0, (1.0 / v[0].numel()) ** 0.5, generator=g)
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """annotators/leres/res101.pth ({"depth_model": {"module.depth_model...": fp16}}) and latest_net_G.pth
    (a plain fp16 state dict); yields (dir, LeReS state as float32, merge state as float32)."""
    root = tmp_path_factory.mktemp("annotators")
    (root / "leres").mkdir()
    sd = {k: v.half() if v.is_floating_point() else v for k, v in _random_state(L.LeReS, 0).items()}
    torch.save({"depth_model": {f"module.{k}": v for k, v in sd.items()}}, root / "leres" / L.LERES_FILE)
    msd = {k: v.half() for k, v in _random_state(L.MergeNet, 1).items()}
    torch.save(msd, root / "leres" / L.MERGE_FILE)
    yield root, {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}, \
        {k: v.float() for k, v in msd.items()}
    annotators.clear_cache()


def _image(h=64, w=96, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.uniform(0, 255, (h, w, 3)).astype(np.float32), (0, 0), 2)
    return ((img - img.min()) / (img.max() - img.min()) * 255).astype(np.uint8)


# ---- availability and the run through the registry ------------------------------------------------

def test_unavailable_until_the_files_are_there_then_runs(files, tmp_path):
    root, _, _ = files
    for name, need in (("depth_leres", [L.LERES_FILE]), ("depth_leres++", [L.LERES_FILE, L.MERGE_FILE])):
        ok, why = pp.get(name).available(tmp_path)
        assert not ok and all(f in why for f in need)
        with pytest.raises(pp.PreprocessorUnavailable, match="res101"):
            pp.run(name, _image(), 64, annotator_dir=tmp_path)
    (tmp_path / L.LERES_FILE).symlink_to(root / "leres" / L.LERES_FILE)  # flat layout works as well
    assert pp.get("depth_leres").available(tmp_path) == (True, "")
    ok, why = pp.get("depth_leres++").available(tmp_path)
    assert not ok and L.MERGE_FILE in why and L.LERES_FILE not in why
    assert pp.get("depth_leres++").available(root) == (True, "")

    root_sd = files[1]
    out = pp.run("depth_leres", _image(64, 96), 64, annotator_dir=root)  # the real network, padded 64x128
    assert out.shape == (64, 96) and out.dtype == np.uint8
    padded = np.pad(_image(64, 96), ((0, 0), (0, 32), (0, 0)), mode="edge")
    x = (padded[:, :, ::-1].astype(np.float32) - np.array(L.MEAN, np.float32)) / np.array(L.STD, np.float32)
    with torch.no_grad():
        depth = reference_leres(torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None], root_sd)
    want = L.depth_to_map(depth[0, 0].numpy())[:, :96]
    assert np.abs(out.astype(int) - want).max() <= 1 and np.mean(out == want) > 0.99
    out = pp.run("depth_leres", _image(100, 80), 64, 10, 20, annotator_dir=root)
    assert out.shape == (80, 64) and out.dtype == np.uint8


def test_leres_plus_plus_runs_through_the_registry(files, monkeypatch):
    """The merge net really loads; its 1024 px forward and LeReS at 448 px are replaced by cheap stand-ins
    (tested apart below) to keep this fast."""
    root, _, _ = files
    seen = []

    def fake_estimate(img, net, w, h):
        seen.append((w, h, type(net).__name__))
        return cv2.resize(img.astype(np.float32).mean(2), (img.shape[1], img.shape[0]))

    def fake_merge(net, outer, inner):
        seen.append(type(net).__name__)
        return ((outer - outer.min()) / (outer.max() - outer.min())).astype(np.float32)

    monkeypatch.setattr(L, "estimate", fake_estimate)
    monkeypatch.setattr(L, "merge", fake_merge)
    out = pp.run("depth_leres++", _image(64, 96), 64, annotator_dir=root)
    assert out.shape == (64, 96) and out.dtype == np.uint8
    # under ~160 px the R20 search range is empty: 448 both times (the extension fails there, see the module)
    assert seen == [(448, 448, "LeReS"), (448, 448, "LeReS"), "MergeNet"]


# ---- forward passes against torch.nn.functional on the state dict -----------------------------------

def _bn(x, sd, p):
    return F.batch_norm(x, None, None, sd[p + ".weight"], sd[p + ".bias"], True, 0.0, 1e-5)


def _conv(x, sd, p, stride=1, padding=0, groups=1):
    return F.conv2d(x, sd[p + ".weight"], sd.get(p + ".bias"), stride, padding, 1, groups)


def _up(x):
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)


def reference_leres(x, sd):
    """RelDepthModel.depth_model in training mode (batch statistics), with the original's in-place ReLU
    in FTB: the residual is added to relu(conv1(x))."""
    e = "depth_model.encoder_modules.encoder."
    x = F.max_pool2d(F.relu(_bn(_conv(x, sd, e + "conv1", 2, 3), sd, e + "bn1")), 3, 2, 1)
    feats = []
    for i, n in enumerate((3, 4, 23, 3)):
        for b in range(n):
            p = f"{e}layer{i + 1}.{b}."
            s = 2 if b == 0 and i > 0 else 1
            out = F.relu(_bn(_conv(x, sd, p + "conv1"), sd, p + "bn1"))
            out = F.relu(_bn(_conv(out, sd, p + "conv2", s, 1, 32), sd, p + "bn2"))
            out = _bn(_conv(out, sd, p + "conv3"), sd, p + "bn3")
            skip = _bn(_conv(x, sd, p + "downsample.0", s), sd, p + "downsample.1") if b == 0 else x
            x = F.relu(out + skip)
        feats.append(x)

    def ftb(x, p):
        y = F.relu(_conv(x, sd, p + ".conv1", 1, 1))
        br = F.relu(_bn(_conv(y, sd, p + ".conv_branch.1", 1, 1), sd, p + ".conv_branch.2"))
        return F.relu(y + _conv(br, sd, p + ".conv_branch.4", 1, 1))

    d = "depth_model.decoder_modules."
    x = _up(_conv(ftb(feats[3], d + "conv"), sd, d + "conv1", 1, 1))
    for name, f in (("ffm2", feats[2]), ("ffm1", feats[1]), ("ffm0", feats[0])):
        x = _up(ftb(ftb(f, d + name + ".ftb1") + x, d + name + ".ftb2"))
    a = d + "outconv.adapt_conv."
    x = F.relu(_bn(_conv(x, sd, a + "0", 1, 1), sd, a + "1"))
    return _up(_conv(x, sd, a + "3", 1, 1))


def test_estimate_is_the_extensions_input_and_forward(files, monkeypatch):
    root, sd, _ = files
    net = L.load_leres(root / "leres" / L.LERES_FILE)
    img = _image(64, 96, seed=3)
    got = L.estimate(img, net, 96, 64)
    # BGR, float 0..255 (no /255), minus the ImageNet mean over its std, channel by channel
    x = (img[:, :, ::-1].astype(np.float32) - np.array(L.MEAN, np.float32)) / np.array(L.STD, np.float32)
    x = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]
    with torch.no_grad():
        want = reference_leres(x, sd)[0, 0].numpy()
    assert got.shape == (64, 96) and got.dtype == np.float32
    assert np.abs(got - want).max() < 1e-4 * max(1.0, np.abs(want).max())
    # the stored running statistics play no part ...
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.fill_(3.0)
                m.running_var.fill_(9.0)
    assert np.abs(L.estimate(img, net, 96, 64) - got).max() < 1e-5
    # ... while normalising with them (eval mode) would change the result
    monkeypatch.setattr(L, "BATCH_STATISTICS", False)
    assert np.abs(L.estimate(img, net, 96, 64) - got).max() > 1e-2


def reference_unet(x, sd, num_downs):
    """pix2pix's UnetGenerator, norm 'none', written out; its in-place LeakyReLU makes each skip carry
    LeakyReLU(x) (the enclosing ReLU then makes that x)."""
    def level(x, p, depth):
        if depth == 0:  # outermost: conv, inner levels, ReLU, transposed conv (with bias), tanh
            u = level(_conv(x, sd, p + "model.0", 2, 1), p + "model.1.", 1)
            return torch.tanh(F.conv_transpose2d(F.relu(u), sd[p + "model.3.weight"], sd[p + "model.3.bias"], 2, 1))
        h = F.leaky_relu(x, 0.2)
        d = _conv(h, sd, p + "model.1", 2, 1)
        if depth == num_downs - 1:  # innermost
            return torch.cat([h, F.conv_transpose2d(F.relu(d), sd[p + "model.3.weight"], None, 2, 1)], 1)
        u = level(d, p + "model.3.", depth + 1)
        return torch.cat([h, F.conv_transpose2d(F.relu(u), sd[p + "model.5.weight"], None, 2, 1)], 1)

    return level(x, "model.", 0)


def test_merge_net_forward_and_input_scaling(files):
    """A 6-level (and a 5-level) U-Net: the published 10 levels need a 1024 px input (seconds per pass)."""
    net = L.MergeNet(num_downs=6).eval()
    sd = {k: v for k, v in _random_state(lambda: L.MergeNet(num_downs=6), 2).items()}
    net.load_state_dict(sd)
    x = torch.rand(1, 2, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        got, want = net(x), reference_unet(x, sd, 6)
    assert got.shape == (1, 1, 64, 64) and (got - want).abs().max() < 1e-5 and want.std() > 1e-2

    small = L.MergeNet(num_downs=5).eval()
    ssd = _random_state(lambda: L.MergeNet(num_downs=5), 3)
    small.load_state_dict(ssd)
    rng = np.random.default_rng(0)
    outer = rng.uniform(3, 7, (32, 32)).astype(np.float32)
    inner = rng.uniform(-2, 9, (32, 32)).astype(np.float32)
    unit = [torch.from_numpy((a - a.min()) / (a.max() - a.min())) * 2 - 1 for a in (outer, inner)]
    with torch.no_grad():
        want = ((reference_unet(torch.stack(unit)[None], ssd, 5) + 1) / 2)[0, 0].numpy()
    got = L.merge(small, outer, inner)
    assert got.shape == (32, 32) and np.abs(got - want).max() < 1e-5


# ---- post-processing: exact maps ---------------------------------------------------------------

V = np.array([0, 1, 50, 127, 128, 129, 200, 254, 255])


def _depth() -> np.ndarray:
    return (V / 255.0).astype(np.float32)[None, :]  # 8-bit values v after the 16-bit step: 257 * v


@pytest.mark.parametrize("thr_a,thr_b,want", [
    (0, 0, 255 - V),
    (50, 0, np.where(V > 127, 255 - V, 255)),  # near removal: v <= 127.5 -> 0, then inverted to 255
    (0, 50, np.where(255 - V > 127, 255 - V, 0)),  # background removal after the inversion
    (10, 90, np.where(np.where(V > 25, 255 - V, 255) > 229, np.where(V > 25, 255 - V, 255), 0)),
])
def test_depth_to_map_exact(thr_a, thr_b, want):
    got = L.depth_to_map(_depth(), thr_a, thr_b)
    assert got.dtype == np.uint8 and got.tolist() == [want.tolist()]


def test_depth_to_map_truncates_to_16_bit_before_rounding_to_8():
    d = np.array([[0.0, 128.6 / 65535, 642.6 / 65535, 1.0]], np.float32)  # 16 bit: 0, 128, 642, 65535
    # 128 / 257 -> 0 and 642 / 257 -> 2 (rounded to 129 and 643 they would give 1 and 3), then inverted
    assert L.depth_to_map(d).tolist() == [[255, 255, 253, 0]]


def test_depth_to_map_scales_by_range_and_flat_depth_is_white():
    assert L.depth_to_map(_depth() * 7.5 - 3.0).tolist() == [(255 - V).tolist()]
    assert (L.depth_to_map(np.full((4, 5), 2.5, np.float32)) == 255).all()


def test_map_through_the_registry_is_cut_from_the_padded_estimate(files, monkeypatch):
    root, _, _ = files
    grid = {}

    def fake_estimate(img, net, w, h):
        grid["hw"] = (h, w)
        cols = np.resize(V, w)  # 0 and 255 both inside the kept part
        return np.tile((cols / 255.0).astype(np.float32), (h, 1))

    monkeypatch.setattr(L, "estimate", fake_estimate)
    out = pp.run("depth_leres", _image(80, 100), 64, 50, 0, annotator_dir=root)
    assert grid["hw"] == (64, 128) and out.shape == (64, 80)  # 80x100 -> 64x80, padded to 64x128
    cols = np.resize(V, 128)[:80]
    assert (out == np.where(cols > 127, 255 - cols, 255)[None, :]).all()


# ---- the boost's steps ---------------------------------------------------------------------------

def test_processing_res_known_answers():
    # flat: the edge map is all ones, every size passes: the last p of range(14, min(1600, 3 * side) // 32, 7)
    assert L.processing_res(np.zeros((512, 512, 3), np.uint8)) == (42 * 32, 1.0)
    assert L.processing_res(np.zeros((1024, 1024, 3), np.uint8)) == (49 * 32, 1.0)
    assert L.processing_res(np.zeros((128, 128, 3), np.uint8)) == (448, None)  # empty range
    corner = np.zeros((512, 512, 3), np.uint8)
    corner[:20, :20] = 255  # context only in one corner: fails at the first size
    assert L.processing_res(corner)[0] == 448


def test_select_patches_known_answers():
    flat = np.zeros((1300, 1300, 3), np.uint8)  # no edges: every grid square qualifies and grows by 32
    assert L.select_patches(flat, 896, 1.0) == [[272, 272, 1024, 1024], [0, 0, 896, 896], [0, 336, 896, 896],
                                                [336, 0, 896, 896]]
    wide = np.zeros((1200, 1600, 3), np.uint8)
    assert L.select_patches(wide, 896, 0.5) == [[0, 0, 896, 896], [336, 0, 896, 896], [672, 0, 896, 896]]
    wide[:, 1000:] = np.random.default_rng(0).integers(0, 255, (1200, 600, 3), dtype=np.uint8)
    assert L.select_patches(wide, 896, 0.5) == [[672, 0, 896, 896]]  # the only one denser than the image


def test_gaussian_box_is_the_blurred_box():
    size = 320
    box = np.zeros((size, size), np.float32)
    box[48:272, 48:272] = 1
    k = int(2 * np.ceil(2 * (size // 16)) + 1)
    want = cv2.GaussianBlur(box, (k, k), size // 16)
    want = (want - want.min()) / (want.max() - want.min())
    assert np.abs(L.gaussian_box(size) - want).max() < 1e-5
    assert L.blend_mask().shape == (3000, 3000)


def _fake_estimate(img, net, w, h):
    small = cv2.resize(img, (w, h)).astype(np.float32).mean(2)
    return cv2.resize(small, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_CUBIC)


def _standardised(a):
    return ((a - a.mean()) / a.std()).astype(np.float32)


BOOST_IMAGE = np.full((448, 448, 3), 90, np.uint8)  # flat, with one textured block: R20 = 448, some patches
BOOST_IMAGE[250:400, 260:420] = np.random.default_rng(0).integers(0, 255, (150, 160, 3), dtype=np.uint8)


def test_boost_fits_each_patch_to_the_base(monkeypatch):
    """With a merge that returns its first input standardised (zero mean: polyfit's float32 rcond keeps both
    singular values), every patch's linear fit gives back the base estimate, so the blended result stays the
    double estimate (up to the cubic resizes)."""
    calls = []
    monkeypatch.setattr(L, "estimate", _fake_estimate)
    monkeypatch.setattr(L, "merge", lambda net, outer, inner: calls.append(1) or _standardised(outer))
    assert L.processing_res(BOOST_IMAGE)[0] == 448
    whole = L.double_estimate(BOOST_IMAGE, 448, 448, None, None)  # 1024 x 1024
    whole = cv2.resize(whole, (448, 448), interpolation=cv2.INTER_CUBIC)
    calls.clear()
    out = L.boost(BOOST_IMAGE, None, None, 448)
    assert len(calls) > 1 and len(calls) % 2 == 1  # the whole image, then 2 per patch
    assert out.shape == (448, 448) and np.abs(out - whole).max() < 0.05 * (whole.max() - whole.min())
    calls.clear()
    L.boost(BOOST_IMAGE, None, None, 447)  # max_res under R20: the double estimate only
    assert len(calls) == 1


def test_boost_blends_patches_with_the_gaussian_mask(monkeypatch):
    """A patch merge that comes back flat is fitted to its base's mean; the result is then each patch's
    mean blended in through the resized 3000 px mask, patch after patch, biggest first."""
    calls = []

    def fake_merge(net, outer, inner):
        calls.append(1)
        if len(calls) > 1 and len(calls) % 2 == 1:  # a patch's merge (after its own double estimate)
            return np.full(outer.shape, 0.5, np.float32)
        return _standardised(outer)

    monkeypatch.setattr(L, "estimate", _fake_estimate)
    monkeypatch.setattr(L, "merge", fake_merge)
    r20, patch_scale = L.processing_res(BOOST_IMAGE)
    base = cv2.resize(L.double_estimate(BOOST_IMAGE, 448, r20, None, None), (448, 448),
                      interpolation=cv2.INTER_CUBIC)
    factor = max(min(1, 4 * patch_scale * r20 / 1600), 0.2)
    side = int(round(2 * r20 / factor))
    patches = L.select_patches(cv2.resize(BOOST_IMAGE, (side, side), interpolation=cv2.INTER_CUBIC), 896, factor)
    want = base.copy()
    for rect in patches:
        x, y, w, h = np.round(np.array(rect) * 448 / side).astype(int)
        region = base[y:y + h, x:x + w]
        mean = cv2.resize(region, (1024, 1024), interpolation=cv2.INTER_CUBIC).mean()
        mask = cv2.resize(L.blend_mask(), (region.shape[1], region.shape[0]), interpolation=cv2.INTER_LINEAR)
        want[y:y + h, x:x + w] = want[y:y + h, x:x + w] * (1 - mask) + mean * mask
    calls.clear()
    out = L.boost(BOOST_IMAGE, None, None, 448)
    assert len(calls) == 1 + 2 * len(patches) and len(patches) > 3
    assert np.abs(out - base).max() > 0.1 and np.abs(out - want).max() < 1e-4


# ---- unusable files --------------------------------------------------------------------------------

def test_bad_files_name_the_file_and_a_good_one_works_after(files, tmp_path):
    root, _, _ = files
    bad = tmp_path / "bad"
    bad.mkdir()
    with open(root / "leres" / L.LERES_FILE, "rb") as f:
        (bad / L.LERES_FILE).write_bytes(f.read(4096))  # truncated
    with pytest.raises(AnnotatorError, match="res101.pth"):
        pp.run("depth_leres", _image(), 64, annotator_dir=bad)
    torch.save({"depth_model": {"module.depth_model.conv.weight": torch.zeros(3)}}, bad / L.LERES_FILE)
    with pytest.raises(AnnotatorError, match="res101.pth: not the expected weights"):
        pp.run("depth_leres", _image(), 64, annotator_dir=bad)
    torch.save({"model.model.0.weight": torch.zeros(64, 3, 4, 4)}, bad / L.MERGE_FILE)
    with pytest.raises(AnnotatorError, match="latest_net_G.pth: not the expected weights.*missing"):
        L.load_merge(bad / L.MERGE_FILE)
    (bad / L.MERGE_FILE).write_bytes(b"not a checkpoint")
    with pytest.raises(AnnotatorError, match="latest_net_G.pth"):
        L.load_merge(bad / L.MERGE_FILE)
    assert pp.run("depth_leres", _image(), 64, annotator_dir=root).shape == (64, 96)
