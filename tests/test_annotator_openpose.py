"""OpenPose annotator: the networks' layout (body_pose_model.pth, hand_pose_model.pth, facenet.pth), the
forward passes against a torch.nn.functional recomputation, the body decode (peaks, PAF association,
person rules) on crafted maps, the hand / face boxes and peaks, the drawing colours, and the five
preprocessors through preprocessors.run with random weights in the real layout."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from modules.controlnet import annotators
from modules.controlnet import preprocessors as pp
from modules.controlnet.annotators import AnnotatorError
from modules.controlnet.annotators import openpose as op

NAMES = ["openpose", "openpose_hand", "openpose_face", "openpose_faceonly", "openpose_full"]
FILES = ["body_pose_model.pth", "hand_pose_model.pth", "facenet.pth"]

# ---- the published layout, written out from the original definitions (CMU / pytorch-openpose) -------

_FRONT = [("conv1_1", 3, 64, 3), ("conv1_2", 64, 64, 3), "P", ("conv2_1", 64, 128, 3), ("conv2_2", 128, 128, 3),
          "P", ("conv3_1", 128, 256, 3), ("conv3_2", 256, 256, 3), ("conv3_3", 256, 256, 3),
          ("conv3_4", 256, 256, 3), "P", ("conv4_1", 256, 512, 3), ("conv4_2", 512, 512, 3)]


def _stage(t, suffix, cin, cout):
    return ([(f"Mconv1_stage{t}{suffix}", cin, 128, 7)] + [(f"Mconv{i}_stage{t}{suffix}", 128, 128, 7)
                                                          for i in (2, 3, 4, 5)]
            + [(f"Mconv6_stage{t}{suffix}", 128, 128, 1), (f"Mconv7_stage{t}{suffix}", 128, cout, 1)])


BODY_FRONT = _FRONT + [("conv4_3_CPM", 512, 256, 3), ("conv4_4_CPM", 256, 128, 3)]
BODY_BRANCHES = {b: [[(f"conv5_1_CPM_L{b}", 128, 128, 3), (f"conv5_2_CPM_L{b}", 128, 128, 3),
                      (f"conv5_3_CPM_L{b}", 128, 128, 3), (f"conv5_4_CPM_L{b}", 128, 512, 1),
                      (f"conv5_5_CPM_L{b}", 512, c, 1)]] + [_stage(t, f"_L{b}", 185, c) for t in range(2, 7)]
                 for b, c in ((1, 38), (2, 19))}
# the original's make_layers list of layers without ReLU (Mconv7_stage6_L1 twice, no Mconv7_stage6_L2)
BODY_NO_RELU = {"conv5_5_CPM_L1", "conv5_5_CPM_L2", "Mconv7_stage2_L1", "Mconv7_stage2_L2", "Mconv7_stage3_L1",
                "Mconv7_stage3_L2", "Mconv7_stage4_L1", "Mconv7_stage4_L2", "Mconv7_stage5_L1",
                "Mconv7_stage5_L2", "Mconv7_stage6_L1", "Mconv7_stage6_L1"}


def _cpm(parts):
    front = _FRONT + [("conv4_3", 512, 512, 3), ("conv4_4", 512, 512, 3), ("conv5_1", 512, 512, 3),
                      ("conv5_2", 512, 512, 3), ("conv5_3_CPM", 512, 128, 3)]
    stages = [[("conv6_1_CPM", 128, 512, 1), ("conv6_2_CPM", 512, parts, 1)]]
    stages += [_stage(t, "", 128 + parts, parts) for t in range(2, 7)]
    return front, stages


def _layers(file):
    if file == "body_pose_model.pth":
        return [layer for layer in BODY_FRONT if layer != "P"] + [
            layer for b in (1, 2) for stage in BODY_BRANCHES[b] for layer in stage]
    front, stages = _cpm(22 if file == "hand_pose_model.pth" else 71)
    return [layer for layer in front if layer != "P"] + [layer for stage in stages for layer in stage]


def layout(file) -> dict:
    out = {}
    for name, cin, cout, k in _layers(file):
        out[f"{name}.weight"] = (cout, cin, k, k)
        out[f"{name}.bias"] = (cout,)
    return out


def _random_sd(file, seed=0) -> dict:
    """Random tensors in the file's layout: weights He-scaled, biases small."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, shape in layout(file).items():
        s = math.sqrt(2.0 / (shape[1] * shape[2] * shape[3])) if key.endswith(".weight") else 0.01
        sd[key] = torch.randn(shape, generator=g) * s
    return sd


CHECKED = ["conv1_1.weight", "conv4_2.bias", "conv5_1.weight", "Mconv7_stage6_L2.weight", "Mconv7_stage6.weight",
           "Mconv1_stage2.weight"]


def _file_sd(file, seed=0) -> dict:
    """fp16 tensors in the file's layout: zeros (the networks then output zeros: no person is found),
    random where test_files_load_into_the_networks compares them."""
    g = torch.Generator().manual_seed(seed)
    return {k: (torch.randn(s, generator=g) if k in CHECKED else torch.zeros(s)).half()
            for k, s in layout(file).items()}


# the original module names of the body / hand keys (what the original code renames to at load)
def _original_module_keys(file, sd):
    block = {}
    if file == "body_pose_model.pth":
        for layer in BODY_FRONT:
            if layer != "P":
                block[layer[0]] = "model0"
        for b in (1, 2):
            for t, stage in enumerate(BODY_BRANCHES[b], start=1):
                for layer in stage:
                    block[layer[0]] = f"model{t}_{b}"
    else:
        front, stages = _cpm(22)
        for layer in front:
            if layer != "P":
                block[layer[0]] = "model1_0"
        for t, stage in enumerate(stages, start=1):
            for layer in stage:
                block[layer[0]] = "model1_1" if t == 1 else f"model{t}"
    return {f"{block[k.rsplit('.', 1)[0]]}.{k}": v for k, v in sd.items()}


@pytest.fixture(scope="module")
def weight_dir(tmp_path_factory, one_thread):
    """The three files (see _file_sd) in the extension's sub-folder."""
    root = tmp_path_factory.mktemp("annotators")
    (root / "openpose").mkdir()
    for i, f in enumerate(FILES):
        torch.save(_file_sd(f, seed=i), root / "openpose" / f)
    annotators.clear_cache()
    yield root
    annotators.clear_cache()


# ---- 1. layout ----------------------------------------------------------------------------------

SAMPLE = {
    "body_pose_model.pth": {
        "conv1_1.weight": (64, 3, 3, 3), "conv3_4.bias": (256,), "conv4_3_CPM.weight": (256, 512, 3, 3),
        "conv4_4_CPM.weight": (128, 256, 3, 3), "conv5_4_CPM_L1.weight": (512, 128, 1, 1),
        "conv5_5_CPM_L1.weight": (38, 512, 1, 1), "conv5_5_CPM_L2.weight": (19, 512, 1, 1),
        "Mconv1_stage2_L1.weight": (128, 185, 7, 7), "Mconv5_stage4_L2.weight": (128, 128, 7, 7),
        "Mconv6_stage5_L1.weight": (128, 128, 1, 1), "Mconv7_stage6_L1.weight": (38, 128, 1, 1),
        "Mconv7_stage6_L2.weight": (19, 128, 1, 1), "Mconv7_stage6_L2.bias": (19,)},
    "hand_pose_model.pth": {
        "conv4_4.weight": (512, 512, 3, 3), "conv5_3_CPM.weight": (128, 512, 3, 3),
        "conv6_1_CPM.weight": (512, 128, 1, 1), "conv6_2_CPM.weight": (22, 512, 1, 1),
        "Mconv1_stage2.weight": (128, 150, 7, 7), "Mconv7_stage6.weight": (22, 128, 1, 1)},
    "facenet.pth": {
        "conv5_2.bias": (512,), "conv6_2_CPM.weight": (71, 512, 1, 1), "Mconv1_stage3.weight": (128, 199, 7, 7),
        "Mconv7_stage6.weight": (71, 128, 1, 1), "Mconv7_stage6.bias": (71,)},
}
# key count, parameter count (x 4 bytes: the published files' 209 / 147 / 154 MB)
COUNTS = {"body_pose_model.pth": (184, 52_311_446), "hand_pose_model.pth": (104, 36_832_324),
          "facenet.pth": (104, 38_425_706)}


@pytest.mark.parametrize("file,build", [("body_pose_model.pth", op.BodyPoseNet), ("hand_pose_model.pth",
                                        lambda: op.CpmNet(22)), ("facenet.pth", lambda: op.CpmNet(71))])
def test_state_dict_matches_the_published_layout(file, build):
    with torch.device("meta"):
        own = {k: tuple(v.shape) for k, v in build().state_dict().items()}
    assert own == layout(file)
    assert (len(own), sum(math.prod(s) for s in own.values())) == COUNTS[file]
    for key, shape in SAMPLE[file].items():
        assert own[key] == shape, key


# ---- 2. availability and the preprocessors ---------------------------------------------------------

def test_unavailable_until_the_files_are_there_then_runs(tmp_path, weight_dir):
    for name in NAMES:
        ok, why = pp.get(name).available(tmp_path)
        assert not ok and all(f in why for f in FILES)
        with pytest.raises(pp.PreprocessorUnavailable, match="body_pose_model.pth"):
            pp.run(name, np.zeros((80, 64, 3), np.uint8), 64, annotator_dir=tmp_path)
    for name in NAMES:
        assert pp.get(name).available(weight_dir) == (True, "")
    got = []
    image = np.random.default_rng(0).integers(0, 256, (80, 64, 3), dtype=np.uint8)
    out = pp.run("openpose_full", image, 64, annotator_dir=weight_dir, json_pose_callback=got.append)
    # short side 64 already: 80 x 64, padded to 128 x 64 for the detector, cut back
    assert out.shape == (80, 64, 3) and out.dtype == np.uint8
    assert not out.any()  # zero weights: no person, a black map
    assert got == [{"people": [], "canvas_height": 128, "canvas_width": 64}]


def test_files_load_into_the_networks(weight_dir):
    paths = {f: weight_dir / "openpose" / f for f in FILES}
    nets = op.OpenPoseNets(paths)
    for net, f in ((nets.body, FILES[0]), (nets.hand(), FILES[1]), (nets.face(), FILES[2])):
        saved = torch.load(paths[f], weights_only=True)
        own = net.state_dict()
        for key in [k for k in CHECKED if k in saved]:
            assert saved[key].abs().sum() > 0 and torch.equal(own[key], saved[key].float()), (f, key)


# ---- 3. forward passes against torch.nn.functional ---------------------------------------------------

def _ref_run(sd, layers, x, no_relu):
    for layer in layers:
        if layer == "P":
            x = F.max_pool2d(x, 2, 2)
            continue
        name, _, _, k = layer
        x = F.conv2d(x, sd[f"{name}.weight"], sd[f"{name}.bias"], padding=k // 2)
        if name not in no_relu:
            x = F.relu(x)
    return x


def _ref_body(sd, x):
    feats = _ref_run(sd, BODY_FRONT, x, BODY_NO_RELU)
    h = feats
    for t in range(6):
        l1 = _ref_run(sd, BODY_BRANCHES[1][t], h, BODY_NO_RELU)
        l2 = _ref_run(sd, BODY_BRANCHES[2][t], h, BODY_NO_RELU)
        h = torch.cat([l1, l2, feats], 1)
    return l1, l2


def _ref_cpm(sd, parts, x):
    front, stages = _cpm(parts)
    no_relu = {"conv6_2_CPM"} | {f"Mconv7_stage{t}" for t in range(2, 7)}
    feats = _ref_run(sd, front, x, no_relu)
    h = _ref_run(sd, stages[0], feats, no_relu)
    for stage in stages[1:]:
        h = _ref_run(sd, stage, torch.cat([h, feats], 1), no_relu)
    return h


def test_forward_passes_match_a_functional_recomputation(one_thread):
    x = torch.randn(1, 3, 32, 40, generator=torch.Generator().manual_seed(1))
    sd = _random_sd("body_pose_model.pth", seed=3)
    net = op._empty(op.BodyPoseNet).eval()
    annotators.load_strict(net, sd, "body_pose_model.pth")
    with torch.no_grad():
        paf, heat = net(x)
        rpaf, rheat = _ref_body(sd, x)
    assert paf.shape == (1, 38, 4, 5) and heat.shape == (1, 19, 4, 5)
    assert (heat >= 0).all()  # the original's last heatmap layer has a ReLU
    for a, b in ((paf, rpaf), (heat, rheat)):
        assert (a - b).abs().max().item() <= 1e-4 * max(1.0, b.abs().max().item())
    del sd, net
    for file, parts in (("hand_pose_model.pth", 22), ("facenet.pth", 71)):
        sd = _random_sd(file, seed=4)
        net = op._empty(lambda: op.CpmNet(parts)).eval()
        annotators.load_strict(net, sd, file)
        with torch.no_grad():
            got, ref = net(x), _ref_cpm(sd, parts, x)
        assert got.shape == (1, parts, 4, 5)
        assert (got - ref).abs().max().item() <= 1e-4 * max(1.0, ref.abs().max().item())


# ---- 4. post-processing on crafted inputs ----------------------------------------------------------

def _blob(h, w, x, y, amp=1.0, sigma=2.0):
    yy, xx = np.mgrid[0:h, 0:w]
    return amp * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma ** 2))


def _limb_paf(paf, a, b, channels, width=3):
    """The unit vector a->b in a band around the segment, in the limb's two PAF channels."""
    h, w = paf.shape[:2]
    v = np.subtract(b, a).astype(float)
    v /= np.linalg.norm(v)
    yy, xx = np.mgrid[0:h, 0:w]
    t = (xx - a[0]) * v[0] + (yy - a[1]) * v[1]
    d = np.abs((xx - a[0]) * v[1] - (yy - a[1]) * v[0])
    band = (t >= -1) & (t <= np.linalg.norm(np.subtract(b, a)) + 1) & (d <= width)
    paf[band, channels[0]] = v[0]
    paf[band, channels[1]] = v[1]


def crafted_maps(h, w, parts: dict, skip=(), amp=1.0, sigma=2.0, paf_scale=1.0):
    """Heatmaps (one blob per part, value `amp` at its centre) and PAFs (unit vectors x `paf_scale`) along
    every limb whose ends are given (but the limbs numbered in `skip`)."""
    heat = np.zeros((h, w, 19))
    paf = np.zeros((h, w, 38))
    for part, (x, y) in parts.items():
        heat[:, :, part] = _blob(h, w, x, y, amp, sigma)
    for k, ((a, b), (ca, cb)) in enumerate(zip(op.LIMB_SEQ, op.MAP_IDX)):
        if a - 1 in parts and b - 1 in parts and k not in skip:
            _limb_paf(paf, parts[a - 1], parts[b - 1], (ca - 19, cb - 19))
    return heat, paf * paf_scale


# nose, neck, r-shoulder, r-elbow, r-wrist, l-shoulder (COCO order)
PERSON = {0: (40, 12), 1: (40, 30), 2: (20, 30), 3: (20, 50), 4: (20, 70), 5: (60, 30)}


def test_body_decode_finds_the_crafted_person():
    heat, paf = crafted_maps(96, 80, PERSON)
    candidate, subset = op.decode_body(heat, paf)
    # one peak per part, at the blob's centre, its score the unblurred value there, ids in part order
    assert candidate.tolist() == [[x, y, 1.0, i] for i, (x, y) in enumerate(PERSON.values())]
    assert subset.shape == (1, 20)
    assert subset[0, :18].tolist() == [0, 1, 2, 3, 4, 5] + [-1] * 12
    # 6 parts; score: 6 peak scores + 5 limbs (neck-r/l shoulder, r arm x2, neck-nose) of integral 1
    assert subset[0, 19] == 6 and subset[0, 18] == pytest.approx(11.0, abs=1e-9)
    bodies = op.body_results(candidate, subset)
    assert [(k.x, k.y) if k else None for k in bodies[0].keypoints] == list(PERSON.values()) + [None] * 12


def test_body_decode_drops_small_people_and_splits_two():
    # three parts only: fewer than 4 -> nobody
    heat, paf = crafted_maps(96, 80, {1: (40, 30), 2: (20, 30), 3: (20, 50)})
    assert op.decode_body(heat, paf)[1].shape == (0, 20)
    # two people side by side, each found whole
    left = {k: (x, y) for k, (x, y) in PERSON.items()}
    right = {k: (x + 80, y) for k, (x, y) in PERSON.items()}
    h1, p1 = crafted_maps(96, 160, left)
    h2, p2 = crafted_maps(96, 160, right)
    _, subset = op.decode_body(h1 + h2, p1 + p2)
    assert sorted(subset[:, 19].tolist()) == [6, 6]
    # a wrong-way PAF (pointing from the nose to the neck) cuts the nose off
    heat, paf = crafted_maps(96, 80, PERSON)
    paf[:, :, [47 - 19, 48 - 19]] *= -1
    _, subset = op.decode_body(heat, paf)
    assert subset.shape[0] == 1 and subset[0, 0] == -1 and subset[0, 19] == 5
    assert subset[0, 18] == pytest.approx(9.0, abs=1e-9)


def test_body_decode_merges_two_partial_people():
    # no PAF for neck -> r-shoulder (limb 0): the right arm starts a second row, which the later
    # r-shoulder -> r-ear limb (17) joins to the head's row
    parts = dict(PERSON)
    parts.update({14: (34, 8), 16: (26, 12)})
    heat, paf = crafted_maps(96, 80, parts, skip=(0,))
    candidate, subset = op.decode_body(heat, paf)
    assert subset.shape == (1, 20)
    expect = [0, 1, 2, 3, 4, 5] + [-1] * 8 + [6, -1, 7, -1]
    assert subset[0, :18].tolist() == expect
    # 8 parts; 8 peak scores + 7 limbs (neck-l-shoulder, r arm x2, neck-nose, nose-eye, eye-ear, shoulder-ear)
    assert subset[0, 19] == 8 and subset[0, 18] == pytest.approx(15.0, abs=1e-9)


def test_body_decode_person_and_limb_thresholds():
    arm = {1: (40, 30), 2: (20, 30), 3: (20, 50), 4: (20, 70)}
    # 4 parts of peak 0.3 and 3 limbs of integral 0.1: mean 1.5 / 4 < 0.4 -> dropped; at 0.35 -> 0.425 kept
    heat, paf = crafted_maps(96, 80, arm, amp=0.3, sigma=2.5, paf_scale=0.1)
    assert op.decode_body(heat, paf)[1].shape == (0, 20)
    heat, paf = crafted_maps(96, 80, arm, amp=0.35, sigma=2.5, paf_scale=0.1)
    _, subset = op.decode_body(heat, paf)
    assert subset.shape == (1, 20) and subset[0, 18] == pytest.approx(1.7, abs=1e-9)
    # a limb needs more than 8 of its 10 samples above 0.05: the neck -> r-shoulder samples sit at
    # x = 40, 38, 36, 33, 31, 29, 27, 24, 22, 20; without the field at x <= 23 only 8 remain
    heat, paf = crafted_maps(96, 80, PERSON)
    cut = paf.copy()
    cut[:, :24, 31 - 19:33 - 19] = 0
    assert op.decode_body(heat, cut)[1].shape == (0, 20)  # the person falls into two 3-part halves
    cut = paf.copy()
    cut[:, :22, 31 - 19:33 - 19] = 0
    _, subset = op.decode_body(heat, cut)
    assert subset[0, 19] == 6 and subset[0, 18] == pytest.approx(10.9, abs=1e-9)  # that limb's 0.9


def test_body_peaks_are_taken_on_the_sigma_3_blur():
    # two narrow blobs 6 pixels apart merge into one peak between them under the sigma-3 blur; the
    # score is read from the unblurred map there
    heat = np.zeros((64, 64, 19))
    heat[:, :, 3] = _blob(64, 64, 30, 40, sigma=1.0) + _blob(64, 64, 36, 40, sigma=1.0)
    heat[:, :, 7] = _blob(64, 64, 10, 10)
    candidate, subset = op.decode_body(heat, np.zeros((64, 64, 38)))
    assert candidate[:, [0, 1, 3]].tolist() == [[33, 40, 0], [10, 10, 1]]
    assert candidate[0, 2] == pytest.approx(2 * math.exp(-4.5), rel=1e-12) and candidate[1, 2] == 1.0
    assert subset.shape == (0, 20)


def test_drawn_map_has_the_limb_colours():
    h, w = 96, 80
    heat, paf = crafted_maps(h, w, PERSON)
    bodies = op.body_results(*op.decode_body(heat, paf))
    kps = [op.Keypoint(k.x / w, k.y / h) if k else None for k in bodies[0].keypoints]
    pose = op.PoseResult(op.BodyResult(kps), None, None, None)
    canvas = op.draw_poses([pose], h, w)
    assert canvas.shape == (h, w, 3) and canvas.dtype == np.uint8
    # limb 0 (neck -> r-shoulder) red, limb 1 (neck -> l-shoulder) orange, limb 3 (r elbow -> wrist)
    # yellow, limb 12 (neck -> nose) blue: the colours at 60%
    assert canvas[30, 30].tolist() == [153, 0, 0]
    assert canvas[30, 50].tolist() == [153, 51, 0]
    assert canvas[60, 20].tolist() == [153, 153, 0]
    assert canvas[21, 40].tolist() == [0, 0, 153]
    # the points at full colour (nose: part 0 red, r-wrist: part 4 (170, 255, 0)), radius 4
    assert canvas[12, 40].tolist() == [255, 0, 0] and canvas[12, 44].tolist() == [255, 0, 0]
    assert canvas[70, 20].tolist() == [170, 255, 0]
    assert canvas[90, 70].tolist() == [0, 0, 0]
    # the stick is 4 pixels either side of the limb's axis
    assert canvas[34, 30].tolist() == [153, 0, 0] and canvas[36, 30].tolist() == [0, 0, 0]
    # a second person dims the first one again
    twice = op.draw_poses([pose, op.PoseResult(op.BodyResult([None] * 18), None, None, None)], h, w)
    assert twice[30, 30].tolist() == [91, 0, 0]
    assert not op.draw_poses([pose], h, w, draw_body=False).any()


def test_body_maps_resize_and_channel_order(monkeypatch):
    seen = {}

    class Fake(torch.nn.Module):
        def forward(self, x):
            seen["x"] = x
            n, _, hh, ww = x.shape
            return torch.full((n, 38, hh // 8, ww // 8), -0.5), torch.full((n, 19, hh // 8, ww // 8), 0.25)

    rgb = np.zeros((128, 64, 3), np.uint8)
    rgb[:, :, 0] = 200  # red
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    heat, paf = op.body_maps(Fake(), bgr)
    x = seen["x"]
    # height 0.5 * 368, width in proportion (92), padded to multiples of 8 with 128 (-> 0.0)
    assert tuple(x.shape) == (1, 3, 184, 96)
    assert x[0, 2, 0, 0].item() == pytest.approx(200 / 256 - 0.5) and x[0, 0, 0, 0].item() == -0.5
    assert torch.all(x[:, :, :, 92:] == 0.0)
    assert heat.shape == (128, 64, 19) and paf.shape == (128, 64, 38)
    assert np.allclose(heat, 0.25, atol=1e-5) and np.allclose(paf, -0.5, atol=1e-5)


def test_hand_and_face_boxes():
    kp = [None] * 18
    kp[5], kp[6], kp[7] = op.Keypoint(10, 10), op.Keypoint(10, 40), op.Keypoint(10, 70)
    # centre (10, 79.9), side 1.5 * max(30, 27) = 45, top-left (-12.5 -> 0, 57.4)
    assert op.hand_boxes(kp, 200, 200) == [(0, 57, 45, True)]
    # clipped by the bottom: 90 - 57.4
    assert op.hand_boxes(kp, 90, 200) == [(0, 57, 32, True)]
    kp[2], kp[3], kp[4] = op.Keypoint(100, 10), op.Keypoint(100, 20), op.Keypoint(100, 30)
    # right arm: side 1.5 * max(10, 9) = 15 < 20 -> dropped
    assert op.hand_boxes(kp, 200, 200) == [(0, 57, 45, True)]
    kp[4] = op.Keypoint(100, 40)  # forearm 20: side 30, centre (100, 46.6)
    assert op.hand_boxes(kp, 200, 200) == [(0, 57, 45, True), (85, 31, 30, False)]

    face = [None] * 18
    face[0] = op.Keypoint(50, 50)
    assert op.face_box(face, 200, 200) is None  # no eye nor ear
    face[14] = op.Keypoint(45, 46)  # half-side 3 * 5 = 15
    assert op.face_box(face, 200, 200) == (35, 35, 30)
    face[17] = op.Keypoint(62, 50)  # ear: 1.5 * 12 = 18
    assert op.face_box(face, 200, 200) == (32, 32, 36)
    # the original clips only where the corner + half the side leaves the image: 32 + 18 <= 60 keeps 36
    assert op.face_box(face, 60, 200) == (32, 32, 36)
    assert op.face_box(face, 48, 200) is None  # 32 + 18 > 48: side 48 - 32 = 16 < 20
    face[17] = None
    face[14] = op.Keypoint(47, 47)  # 9 -> side 18 < 20
    assert op.face_box(face, 200, 200) is None


def test_hand_peaks_keep_the_heaviest_region():
    maps = np.zeros((128, 128, 22))
    maps[:, :, 0] = _blob(128, 128, 70, 40)
    # part 2: a sharp high spike and a broad, heavier hill: the hill's maximum wins
    maps[:, :, 2] = _blob(128, 128, 20, 20, amp=2.0, sigma=1.0) + _blob(128, 128, 90, 100, amp=1.0, sigma=5.0)
    maps[:, :, 3] = 0.01  # under the threshold everywhere
    peaks = op.hand_peaks(maps, 64, 96)
    assert peaks.shape == (21, 2)
    assert peaks[0].tolist() == [int(70 * 96 / 128), int(40 * 64 / 128)]
    assert peaks[1].tolist() == [0, 0] and peaks[3].tolist() == [0, 0]
    assert peaks[2].tolist() == [int(90 * 96 / 128), int(100 * 64 / 128)]


def test_face_peaks_skip_maps_under_the_threshold():
    maps = np.zeros((71, 20, 24), np.float32)
    maps[0, 3, 7] = 0.5
    maps[1] = 0.04
    maps[5, 10, 2] = 0.06
    assert op.face_peaks(maps).tolist() == [[7, 3], [2, 10]]
    assert op.face_peaks(np.zeros((71, 5, 5))).shape == (0,)


def test_hand_and_face_drawing():
    h, w = 64, 64
    kps = [op.Keypoint(-1 / w, -1 / h)] * 21
    kps[0], kps[1], kps[5] = op.Keypoint(10 / w, 10 / h), op.Keypoint(30 / w, 10 / h), op.Keypoint(10 / w, 40 / h)
    canvas = op.draw_handpose(np.zeros((h, w, 3), np.uint8), kps)
    assert canvas[10, 20].tolist() == [255, 0, 0]  # bone 0: hue 0
    assert canvas[25, 10].tolist() == [204, 255, 0]  # bone 4 (0 -> 5): hue 0.2
    assert canvas[10, 30].tolist() == [0, 0, 255] and canvas[13, 30].tolist() == [0, 0, 255]  # points
    assert canvas[1:5, 1:5].sum() == 0  # missing points (-1) are not drawn
    assert [op._hsv_color(i / 20) for i in (0, 5, 10)] == [(255, 0, 0), (127.5, 255, 0), (0, 255, 255)]
    face = op.draw_facepose(np.zeros((h, w, 3), np.uint8), [op.Keypoint(20 / w, 30 / h)])
    assert face[30, 23].tolist() == [255, 255, 255] and face[30, 24].tolist() == [0, 0, 0]


# a person in the 160 x 128 map of a 160 x 128 image at res 128 (padded canvas 192 x 128)
FULL = {0: (64, 30), 1: (64, 50), 2: (44, 50), 3: (44, 80), 4: (44, 110), 5: (84, 50), 6: (84, 80),
        7: (84, 110), 14: (58, 25), 15: (70, 25)}


def test_pipeline_with_crafted_network_maps(weight_dir, monkeypatch):
    heat, paf = crafted_maps(192, 128, FULL)
    calls = {"hand": [], "face": []}

    def body_maps(net, bgr):
        # the padded image (edge rows repeated), in BGR order
        assert isinstance(net, op.BodyPoseNet) and bgr.shape == (192, 128, 3)
        assert bgr[0, 0].tolist() == [30, 60, 90] and bgr[191, 127].tolist() == [30, 60, 90]
        return heat, paf

    def hand_maps(net, crop):
        assert isinstance(net, op.CpmNet) and net.parts == 22
        calls["hand"].append(crop.shape)
        maps = np.zeros((128, 128, 22))
        maps[:, :, 0] = _blob(128, 128, 64, 64)
        maps[:, :, 1] = _blob(128, 128, 100, 64)
        return maps

    def face_maps(net, crop):
        assert net.parts == 71
        calls["face"].append(crop.shape)
        maps = np.zeros((71,) + crop.shape[:2], np.float32)
        maps[0, 20, 10] = 1.0
        return maps

    monkeypatch.setattr(op, "body_maps", body_maps)
    monkeypatch.setattr(op, "hand_maps", hand_maps)
    monkeypatch.setattr(op, "face_maps", face_maps)
    image = np.zeros((160, 128, 3), np.uint8)
    image[:] = (90, 60, 30)
    got = []
    full = pp.run("openpose_full", image, 128, annotator_dir=weight_dir, json_pose_callback=got.append)
    assert full.shape == (160, 128, 3)
    # hands: boxes (61, 97, 45) left and (21, 97, 45) right; face box (46, 12, 36)
    assert calls["hand"] == [(45, 45, 3), (45, 45, 3)] and calls["face"] == [(36, 36, 3)]
    pose = got[0]
    assert (pose["canvas_height"], pose["canvas_width"], len(pose["people"])) == (192, 128, 1)
    person = pose["people"][0]
    assert person["pose_keypoints_2d"][:3] == [0.5, 30 / 192, 1.0] and len(person["pose_keypoints_2d"]) == 54
    assert person["pose_keypoints_2d"][8 * 3:9 * 3] == [0.0, 0.0, 0.0]
    left = person["hand_left_keypoints_2d"]
    assert len(left) == 63 and left[:2] == pytest.approx([(61 + 22) / 128, (97 + 22) / 192])
    assert left[6:8] == pytest.approx([-1 / 128, -1 / 192])  # point 2 not found: -1, still confidence 1
    assert person["face_keypoints_2d"] == pytest.approx([(46 + 10) / 128, (12 + 20) / 192, 1.0])

    y = int(float(np.float32(119 / 192)) * 192)
    assert full[50, 54].tolist() == [153, 0, 0]  # body limb 0
    assert full[y, 90].tolist() == [255, 0, 0]  # left hand bone 0 (83 -> 96)
    assert full[y, 83].tolist() == [0, 0, 255]  # its point
    assert full[32, 56].tolist() == [255, 255, 255]  # the face point

    body = pp.run("openpose", image, 128, annotator_dir=weight_dir)
    assert body[50, 54].tolist() == [153, 0, 0] and body[y, 90].tolist() != [255, 0, 0]
    assert body[32, 56].tolist() != [255, 255, 255]
    face_only = pp.run("openpose_faceonly", image, 128, annotator_dir=weight_dir)
    assert face_only[32, 56].tolist() == [255, 255, 255]
    assert face_only.sum() == 255 * 3 * np.count_nonzero(face_only[:, :, 0])  # only white face dots
    hand = pp.run("openpose_hand", image, 128, annotator_dir=weight_dir)
    assert hand[y, 90].tolist() == [255, 0, 0] and hand[32, 56].tolist() != [255, 255, 255]
    assert len(calls["face"]) == 2 and len(calls["hand"]) == 4


# ---- 5. unusable files ------------------------------------------------------------------------------

def test_bad_files_name_themselves_then_a_good_file_works(tmp_path, weight_dir, one_thread):
    sub = tmp_path / "openpose"
    sub.mkdir()
    good = {f: (weight_dir / "openpose" / f).read_bytes() for f in FILES}
    for f in FILES[1:]:
        (sub / f).write_bytes(good[f])
    body = sub / "body_pose_model.pth"
    image = np.zeros((80, 64, 3), np.uint8)

    body.write_bytes(good["body_pose_model.pth"][:5000])  # truncated
    with pytest.raises(AnnotatorError, match="body_pose_model.pth"):
        pp.run("openpose", image, 64, annotator_dir=tmp_path)
    body.write_bytes(good["hand_pose_model.pth"])  # the hand network's file
    with pytest.raises(AnnotatorError, match="body_pose_model.pth: not the expected weights"):
        pp.run("openpose", image, 64, annotator_dir=tmp_path)
    sd = torch.load(weight_dir / "openpose" / "body_pose_model.pth", weights_only=True)
    sd["Mconv1_stage2_L1.weight"] = sd["Mconv1_stage2_L1.weight"][:, :100]
    torch.save(sd, body)
    with pytest.raises(AnnotatorError, match=r"Mconv1_stage2_L1.weight is \(128, 100, 7, 7\)"):
        pp.run("openpose", image, 64, annotator_dir=tmp_path)

    # a good file, saved with the original modules' block names ("model0.conv1_1.weight", ...) and
    # wrapped in a "state_dict" entry, works on the next call
    sd = torch.load(weight_dir / "openpose" / "body_pose_model.pth", weights_only=True)
    torch.save({"state_dict": _original_module_keys("body_pose_model.pth", sd)}, body)
    assert pp.run("openpose", image, 64, annotator_dir=tmp_path).shape == (80, 64, 3)

    # a bad face file fails the face preprocessors (found people or not), not the body one
    (sub / "facenet.pth").write_bytes(b"not a pickle")
    with pytest.raises(AnnotatorError, match="facenet.pth"):
        pp.run("openpose_face", image, 64, annotator_dir=tmp_path)
    # the hand file with the original's block names ("model1_0.conv1_1.weight", "model2.Mconv1_stage2...")
    hsd = torch.load(weight_dir / "openpose" / "hand_pose_model.pth", weights_only=True)
    torch.save(_original_module_keys("hand_pose_model.pth", hsd), sub / "hand_pose_model.pth")
    hand = op._load(lambda: op.CpmNet(22), sub / "hand_pose_model.pth", keep_extra=True)
    assert torch.equal(hand.state_dict()["conv1_1.weight"], hsd["conv1_1.weight"].float())
