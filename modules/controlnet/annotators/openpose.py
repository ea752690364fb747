"""OpenPose (CMU's body / hand / face CNNs) for the openpose, openpose_hand, openpose_face,
openpose_faceonly and openpose_full preprocessors, as sd-webui-controlnet runs them.

The image is resized so its short side is `res` and edge-padded to multiples of 64; the networks see it
in BGR order (the extension flips the RGB array, the weights were converted from Caffe). The body network
(body_pose_model.pth) gives 19 part heatmaps and 38 part-affinity fields at a 184-pixel-high copy;
peaks of the heatmaps are joined into people by the PAF line integral. Hands are boxed from the wrist,
elbow and shoulder of each person and run through hand_pose_model.pth (four scales); the face is boxed
from the nose, eyes and ears and run through facenet.pth. The skeleton is drawn on a black canvas of the
padded size with the original colours, limb sequence and sizes, and the padding is cut off again.

The published body and hand files hold the convolutions under their Caffe layer names ("conv1_1.weight",
"Mconv7_stage6_L2.bias", ...): the original code builds nn.Sequential blocks ("model0.conv1_1") and
renames the keys at load. Here the layers carry the file's names directly; a file saved from the
original modules (with the "model0." / "model1_1." block prefix) is accepted too.
"""
from __future__ import annotations

import math
import re
import threading
from pathlib import Path
from typing import Callable, NamedTuple, Optional

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from modules.controlnet import preprocessors
from modules.controlnet.annotators import AnnotatorError, cached, device, load_state_dict, load_strict

BODY_FILE = "body_pose_model.pth"
HAND_FILE = "hand_pose_model.pth"
FACE_FILE = "facenet.pth"

# ---- networks ------------------------------------------------------------------------------------

_POOL = "pool"

# (name, in, out, kernel) of the VGG front shared by the hand and face networks, pools in between
_VGG_FRONT = [
    ("conv1_1", 3, 64, 3), ("conv1_2", 64, 64, 3), _POOL,
    ("conv2_1", 64, 128, 3), ("conv2_2", 128, 128, 3), _POOL,
    ("conv3_1", 128, 256, 3), ("conv3_2", 256, 256, 3), ("conv3_3", 256, 256, 3), ("conv3_4", 256, 256, 3), _POOL,
]
_BODY_FRONT = _VGG_FRONT + [
    ("conv4_1", 256, 512, 3), ("conv4_2", 512, 512, 3), ("conv4_3_CPM", 512, 256, 3), ("conv4_4_CPM", 256, 128, 3),
]
_CPM_FRONT = _VGG_FRONT + [
    ("conv4_1", 256, 512, 3), ("conv4_2", 512, 512, 3), ("conv4_3", 512, 512, 3), ("conv4_4", 512, 512, 3),
    ("conv5_1", 512, 512, 3), ("conv5_2", 512, 512, 3), ("conv5_3_CPM", 512, 128, 3),
]


def _refine(prefix: str, suffix: str, cin: int, cout: int) -> list:
    """One refinement stage (Mconv1..7): five 7x7, then two 1x1 convolutions."""
    return ([(f"Mconv1_{prefix}{suffix}", cin, 128, 7)]
            + [(f"Mconv{i}_{prefix}{suffix}", 128, 128, 7) for i in range(2, 6)]
            + [(f"Mconv6_{prefix}{suffix}", 128, 128, 1), (f"Mconv7_{prefix}{suffix}", 128, cout, 1)])


class _Convs(nn.Module):
    """Convolutions registered under the weight file's own layer names ("same" padding)."""

    def _add(self, layers: list) -> list:
        for layer in layers:
            if layer != _POOL:
                name, cin, cout, k = layer
                self.add_module(name, nn.Conv2d(cin, cout, k, 1, k // 2))
        return layers

    def _run(self, layers: list, x: torch.Tensor, relu_last: bool = True) -> torch.Tensor:
        for i, layer in enumerate(layers):
            if layer == _POOL:
                x = F.max_pool2d(x, 2, 2)
                continue
            x = getattr(self, layer[0])(x)
            if relu_last or i < len(layers) - 1:
                x = F.relu(x)
        return x


class BodyPoseNet(_Convs):
    """The 6-stage two-branch body network: L1 the 38 PAF channels, L2 the 19 heatmaps (18 parts and the
    background). Each stage after the first sees both branches' output and the 128-channel features.

    The original's list of layers without a ReLU names Mconv7_stage6_L1 twice and misses Mconv7_stage6_L2,
    so the final heatmaps go through a ReLU; kept, the published weights were used that way."""

    def __init__(self):
        super().__init__()
        self.front = self._add(_BODY_FRONT)
        self.stages = []
        for t in range(1, 7):
            branches = []
            for b, cout in ((1, 38), (2, 19)):
                if t == 1:
                    layers = [(f"conv5_{i}_CPM_L{b}", 128, 128, 3) for i in (1, 2, 3)]
                    layers += [(f"conv5_4_CPM_L{b}", 128, 512, 1), (f"conv5_5_CPM_L{b}", 512, cout, 1)]
                else:
                    layers = _refine(f"stage{t}", f"_L{b}", 185, cout)
                branches.append(self._add(layers))
            self.stages.append(branches)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(PAFs N x 38 x H/8 x W/8, heatmaps N x 19 x H/8 x W/8)."""
        features = self._run(self.front, x)
        h = features
        for t, (l1, l2) in enumerate(self.stages, start=1):
            paf = self._run(l1, h, relu_last=False)
            heat = self._run(l2, h, relu_last=(t == 6))
            h = torch.cat([paf, heat, features], 1)
        return paf, heat


class CpmNet(_Convs):
    """The 6-stage single-branch network of the hand (22 maps: 21 points and the background) and of the
    face (71 maps: 70 points and the background): a VGG front to 128 features at 1/8, a first stage
    (conv6_1/6_2_CPM) and five refinement stages that see the last maps and the features."""

    def __init__(self, parts: int):
        super().__init__()
        self.parts = parts
        self.front = self._add(_CPM_FRONT)
        first = self._add([("conv6_1_CPM", 128, 512, 1), ("conv6_2_CPM", 512, parts, 1)])
        self.stages = [first] + [self._add(_refine(f"stage{t}", "", 128 + parts, parts)) for t in range(2, 7)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's maps, N x parts x H/8 x W/8."""
        features = self._run(self.front, x)
        h = self._run(self.stages[0], features, relu_last=False)
        for stage in self.stages[1:]:
            h = self._run(stage, torch.cat([h, features], 1), relu_last=False)
        return h


_BLOCK_PREFIX = re.compile(r"^model\d+(?:_\d+)?\.")


def _empty(build: Callable[[], nn.Module]) -> nn.Module:
    """The network with uninitialised parameters (its random init is wasted work before a load)."""
    with torch.device("meta"):
        net = build()
    return net.to_empty(device="cpu")


def _load(build: Callable[[], nn.Module], path: Path, keep_extra: bool) -> nn.Module:
    """The network with the file's weights (an AnnotatorError naming the file when they do not fit).
    Block prefixes of the original modules are dropped; for body/hand, keys the net does not use are
    ignored as the original's renaming at load does (the face file is loaded strictly there too)."""
    sd = {_BLOCK_PREFIX.sub("", k): v for k, v in load_state_dict(path).items()}
    net = _empty(build)
    if not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise AnnotatorError(f"{Path(path).name}: not a dictionary of tensors")
    if keep_extra:
        own = net.state_dict()
        sd = {k: v for k, v in sd.items() if k in own}
    load_strict(net, sd, path)
    return net.eval().to(device())


class OpenPoseNets:
    """The three networks of one set of files; the body is read at once, hand and face on first use."""

    def __init__(self, paths: dict):
        self.paths = paths
        self.body = _load(BodyPoseNet, paths[BODY_FILE], keep_extra=True)
        self._hand: Optional[CpmNet] = None
        self._face: Optional[CpmNet] = None
        self._lock = threading.Lock()

    def hand(self) -> CpmNet:
        with self._lock:
            if self._hand is None:
                self._hand = _load(lambda: CpmNet(22), self.paths[HAND_FILE], keep_extra=True)
            return self._hand

    def face(self) -> CpmNet:
        with self._lock:
            if self._face is None:
                self._face = _load(lambda: CpmNet(71), self.paths[FACE_FILE], keep_extra=False)
            return self._face


# ---- results (the extension's types) ---------------------------------------------------------------

class Keypoint(NamedTuple):
    x: float
    y: float
    score: float = 1.0
    id: int = -1


class BodyResult(NamedTuple):
    keypoints: list  # 18 Keypoint or None, COCO order (nose, neck, r-shoulder, ...)
    total_score: float = 0.0
    total_parts: int = 0


class PoseResult(NamedTuple):
    body: BodyResult
    left_hand: Optional[list]
    right_hand: Optional[list]
    face: Optional[list]


# ---- image helpers of the original ----------------------------------------------------------------

def smart_resize(x: np.ndarray, h: float, w: float) -> np.ndarray:
    """cv2 resize to int(w) x int(h): area when the sides shrink (in sum), Lanczos-4 when they grow;
    arrays of other than 1 or 3 channels channel by channel, as the original does."""
    ho, wo = x.shape[:2]
    c = 1 if x.ndim == 2 else x.shape[2]
    if c in (1, 3):
        k = float(h + w) / float(ho + wo)
        return cv2.resize(x, (int(w), int(h)), interpolation=cv2.INTER_AREA if k < 1 else cv2.INTER_LANCZOS4)
    return np.stack([smart_resize(x[:, :, i], h, w) for i in range(c)], axis=2)


def _pad_right_down(img: np.ndarray, stride: int = 8, value: int = 128) -> tuple[np.ndarray, int, int]:
    """Padded with `value` below and to the right to multiples of `stride`; (image, pad down, pad right)."""
    h, w = img.shape[:2]
    down = 0 if h % stride == 0 else stride - h % stride
    right = 0 if w % stride == 0 else stride - w % stride
    return np.pad(img, [[0, down], [0, right], [0, 0]], mode="constant", constant_values=value), down, right


def _to_input(img: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 -> 1x3xHxW float on the annotator device, x / 256 - 0.5."""
    x = np.ascontiguousarray(np.float32(img).transpose(2, 0, 1)[None]) / 256 - 0.5
    return torch.from_numpy(x).to(device())


def _net_maps(out: torch.Tensor, padded: np.ndarray, down: int, right: int, h: float, w: float) -> np.ndarray:
    """A network's 1/8 maps as HxWxC: up by 8 (Lanczos), the padding cut, resized to h x w."""
    maps = out[0].float().cpu().numpy().transpose(1, 2, 0)
    ph, pw = maps.shape[:2]
    maps = smart_resize(maps, ph * 8, pw * 8)
    maps = maps[:padded.shape[0] - down, :padded.shape[1] - right, :]
    return smart_resize(maps, h, w)


# ---- body -----------------------------------------------------------------------------------------

# the extension's scale_search (the original's 0.5, 1.0, 1.5, 2.0 cut to one); with several scales this
# takes the plain mean (the original's "heatmap_avg += heatmap_avg + ..." only agrees for one scale)
BODY_SCALES = (0.5,)
BOXSIZE = 368

# limbs (1-based part numbers) and the PAF channel pair of each, in the original's order
LIMB_SEQ = [[2, 3], [2, 6], [3, 4], [4, 5], [6, 7], [7, 8], [2, 9], [9, 10], [10, 11], [2, 12], [12, 13],
            [13, 14], [2, 1], [1, 15], [15, 17], [1, 16], [16, 18], [3, 17], [6, 18]]
MAP_IDX = [[31, 32], [39, 40], [33, 34], [35, 36], [41, 42], [43, 44], [19, 20], [21, 22], [23, 24], [25, 26],
           [27, 28], [29, 30], [47, 48], [49, 50], [53, 54], [51, 52], [55, 56], [37, 38], [45, 46]]


def body_maps(net: BodyPoseNet, bgr: np.ndarray, scales=BODY_SCALES) -> tuple[np.ndarray, np.ndarray]:
    """The heatmaps (HxWx19) and PAFs (HxWx38) at the image's size, averaged over the scales (each scale
    sets the network input's height to scale * 368)."""
    h, w = bgr.shape[:2]
    heat_avg = np.zeros((h, w, 19))
    paf_avg = np.zeros((h, w, 38))
    for scale in scales:
        k = scale * BOXSIZE / h
        img = smart_resize(bgr, h * k, w * k)
        padded, down, right = _pad_right_down(img)
        with torch.no_grad():
            paf, heat = net(_to_input(padded))
        heat_avg += _net_maps(heat, padded, down, right, h, w) / len(scales)
        paf_avg += _net_maps(paf, padded, down, right, h, w) / len(scales)
    return heat_avg, paf_avg


def _peaks(heatmaps: np.ndarray, thre: float) -> list[list[tuple]]:
    """Per part: (x, y, score, id) of the local maxima of the sigma-3 blurred map above `thre` (4-
    neighbourhood, ties kept), the score read from the unblurred map, ids counted over all parts."""
    from scipy.ndimage import gaussian_filter

    out, counter = [], 0
    for part in range(18):
        raw = heatmaps[:, :, part]
        m = gaussian_filter(raw, sigma=3)
        p = np.pad(m, 1)
        peak = ((m >= p[:-2, 1:-1]) & (m >= p[2:, 1:-1]) & (m >= p[1:-1, :-2]) & (m >= p[1:-1, 2:]) & (m > thre))
        ys, xs = np.nonzero(peak)
        out.append([(int(x), int(y), raw[y, x], counter + i) for i, (x, y) in enumerate(zip(xs, ys))])
        counter += len(xs)
    return out


def _connections(peaks: list, paf: np.ndarray, height: int, thre: float) -> list:
    """Per limb: rows (id A, id B, score, index A, index B) chosen greedily by the PAF line integral over
    10 points, with the distance prior; None where one end has no candidate."""
    mid_num = 10
    out = []
    for (a, b), (ca, cb) in zip(LIMB_SEQ, MAP_IDX):
        score_mid = paf[:, :, [ca - 19, cb - 19]]
        cand_a, cand_b = peaks[a - 1], peaks[b - 1]
        if not cand_a or not cand_b:
            out.append(None)
            continue
        found = []
        for i, pa in enumerate(cand_a):
            for j, pb in enumerate(cand_b):
                vec = np.subtract(pb[:2], pa[:2])
                norm = max(0.001, math.sqrt(vec[0] * vec[0] + vec[1] * vec[1]))
                vec = np.divide(vec, norm)
                xs = np.linspace(pa[0], pb[0], num=mid_num)
                ys = np.linspace(pa[1], pb[1], num=mid_num)
                vx = np.array([score_mid[int(round(y)), int(round(x)), 0] for x, y in zip(xs, ys)])
                vy = np.array([score_mid[int(round(y)), int(round(x)), 1] for x, y in zip(xs, ys)])
                s = vx * vec[0] + vy * vec[1]
                with_prior = sum(s) / len(s) + min(0.5 * height / norm - 1, 0)
                if len(np.nonzero(s > thre)[0]) > 0.8 * len(s) and with_prior > 0:
                    found.append([i, j, with_prior, with_prior + pa[2] + pb[2]])
        found.sort(key=lambda c: c[2], reverse=True)
        conn = np.zeros((0, 5))
        for i, j, s, _ in found:
            if i not in conn[:, 3] and j not in conn[:, 4]:
                conn = np.vstack([conn, [cand_a[i][3], cand_b[j][3], s, i, j]])
                if len(conn) >= min(len(cand_a), len(cand_b)):
                    break
        out.append(conn)
    return out


def decode_body(heatmaps: np.ndarray, pafs: np.ndarray, thre1: float = 0.1,
                thre2: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """People from full-size heatmaps (HxWx19) and PAFs (HxWx38), the original's rules.

    Returns (candidate, subset): candidate N x 4 (x, y, score, id) of every peak; subset M x 20, per person
    the candidate index of each of the 18 parts (-1 if absent), the total score and the part count.
    People with fewer than 4 parts or a mean score under 0.4 are dropped."""
    peaks = _peaks(heatmaps, thre1)
    conns = _connections(peaks, pafs, heatmaps.shape[0], thre2)
    candidate = np.array([p for part in peaks for p in part])
    subset = -1 * np.ones((0, 20))
    for k, conn in enumerate(conns):
        if conn is None:
            continue
        part_as, part_bs = conn[:, 0], conn[:, 1]
        index_a, index_b = np.array(LIMB_SEQ[k]) - 1
        for i in range(len(conn)):
            rows = [j for j in range(len(subset))
                    if subset[j][index_a] == part_as[i] or subset[j][index_b] == part_bs[i]][:2]
            if len(rows) == 1:
                j = rows[0]
                if subset[j][index_b] != part_bs[i]:
                    subset[j][index_b] = part_bs[i]
                    subset[j][-1] += 1
                    subset[j][-2] += candidate[part_bs[i].astype(int), 2] + conn[i][2]
            elif len(rows) == 2:
                j1, j2 = rows
                membership = ((subset[j1] >= 0).astype(int) + (subset[j2] >= 0).astype(int))[:-2]
                if len(np.nonzero(membership == 2)[0]) == 0:  # disjoint: merge the two
                    subset[j1][:-2] += subset[j2][:-2] + 1
                    subset[j1][-2:] += subset[j2][-2:]
                    subset[j1][-2] += conn[i][2]
                    subset = np.delete(subset, j2, 0)
                else:
                    subset[j1][index_b] = part_bs[i]
                    subset[j1][-1] += 1
                    subset[j1][-2] += candidate[part_bs[i].astype(int), 2] + conn[i][2]
            elif k < 17:  # a new person from this limb
                row = -1 * np.ones(20)
                row[index_a], row[index_b] = part_as[i], part_bs[i]
                row[-1] = 2
                row[-2] = sum(candidate[conn[i, :2].astype(int), 2]) + conn[i][2]
                subset = np.vstack([subset, row])
    keep = [i for i in range(len(subset)) if not (subset[i][-1] < 4 or subset[i][-2] / subset[i][-1] < 0.4)]
    return candidate, subset[keep]


def body_results(candidate: np.ndarray, subset: np.ndarray) -> list[BodyResult]:
    """The people of `decode_body` as keypoint lists (pixels)."""
    out = []
    for person in subset:
        kps = [Keypoint(candidate[i][0], candidate[i][1], candidate[i][2], candidate[i][3]) if i != -1 else None
               for i in person[:18].astype(int)]
        out.append(BodyResult(kps, person[18], person[19]))
    return out


# ---- hands and face ------------------------------------------------------------------------------

def hand_boxes(keypoints: list, height: int, width: int) -> list[tuple[int, int, int, bool]]:
    """(x, y, side, is_left) of each hand's square box, from OpenPose's hand detector rule: centred a third
    of the forearm beyond the wrist, side 1.5 x max(forearm, 0.9 x upper arm), clipped to the image;
    boxes under 20 pixels are dropped. Left hand first (parts 5-7), then the right (2-4)."""
    out = []
    for (s, e, w), is_left in (((5, 6, 7), True), ((2, 3, 4), False)):
        sh, el, wr = keypoints[s], keypoints[e], keypoints[w]
        if sh is None or el is None or wr is None:
            continue
        x = wr.x + 0.33 * (wr.x - el.x)
        y = wr.y + 0.33 * (wr.y - el.y)
        forearm = math.sqrt((wr.x - el.x) ** 2 + (wr.y - el.y) ** 2)
        upper = math.sqrt((el.x - sh.x) ** 2 + (el.y - sh.y) ** 2)
        side = 1.5 * max(forearm, 0.9 * upper)
        x -= side / 2
        y -= side / 2
        x, y = max(x, 0), max(y, 0)
        w1 = width - x if x + side > width else side
        w2 = height - y if y + side > height else side
        side = min(w1, w2)
        if side >= 20:
            out.append((int(x), int(y), int(side), is_left))
    return out


def face_box(keypoints: list, height: int, width: int) -> Optional[tuple[int, int, int]]:
    """(x, y, side) of the face's square box around the nose: half-side 3x the largest nose-eye offset or
    1.5x the nose-ear one (per axis, the larger), clipped as the original does; None under 20 pixels or
    without a nose and one of the eyes / ears."""
    head = keypoints[0]
    others = [(keypoints[14], 3.0), (keypoints[15], 3.0), (keypoints[16], 1.5), (keypoints[17], 1.5)]
    if head is None or all(k is None for k, _ in others):
        return None
    half = 0.0
    for k, f in others:
        if k is not None:
            half = max(half, max(abs(head.x - k.x), abs(head.y - k.y)) * f)
    x, y = max(head.x - half, 0), max(head.y - half, 0)
    # the original compares x + half (not the side) with the image size; kept
    w1 = width - x if x + half > width else half * 2
    w2 = height - y if y + half > height else half * 2
    side = min(w1, w2)
    return (int(x), int(y), int(side)) if side >= 20 else None


HAND_SCALES = (0.5, 1.0, 1.5, 2.0)
HAND_MAP = 128  # the hand maps are averaged at 128 x 128


def hand_maps(net: CpmNet, bgr_crop: np.ndarray, scales=HAND_SCALES) -> np.ndarray:
    """The 22 hand maps of a square crop at 128 x 128, averaged over the input sizes scale * 368 of the
    crop blurred with sigma 0.8."""
    img = cv2.GaussianBlur(bgr_crop, (0, 0), 0.8)
    avg = np.zeros((HAND_MAP, HAND_MAP, 22))
    for scale in scales:
        side = scale * BOXSIZE
        padded, down, right = _pad_right_down(smart_resize(img, side, side))
        with torch.no_grad():
            out = net(_to_input(padded))
        avg += _net_maps(out, padded, down, right, HAND_MAP, HAND_MAP) / len(scales)
    return avg


def hand_peaks(maps: np.ndarray, height: int, width: int, thre: float = 0.05) -> np.ndarray:
    """21 x 2 int (x, y) in crop pixels: per point, the maximum of the map inside the heaviest 8-connected
    region where the sigma-3 blurred map is above `thre`; (0, 0) where there is none."""
    from scipy.ndimage import gaussian_filter, label

    out = []
    for part in range(21):
        raw = maps[:, :, part].copy()
        binary = gaussian_filter(raw, sigma=3) > thre
        if not binary.any():
            out.append([0, 0])
            continue
        labels, n = label(binary, structure=np.ones((3, 3)))
        best = int(np.argmax([np.sum(raw[labels == i]) for i in range(1, n + 1)])) + 1
        raw[labels != best] = 0
        row_best = raw.max(1)
        y = int(row_best.argmax())
        x = int(raw.argmax(1)[y])
        out.append([int(float(x) * float(width) / float(HAND_MAP)), int(float(y) * float(height) / float(HAND_MAP))])
    return np.array(out)


FACE_SIZE = 384


def face_maps(net: CpmNet, bgr_crop: np.ndarray) -> np.ndarray:
    """The 71 face maps of a square crop (run at 384 x 384) at the crop's size (bilinear, corners aligned)."""
    h, w = bgr_crop.shape[:2]
    x = torch.from_numpy(smart_resize(bgr_crop, FACE_SIZE, FACE_SIZE)).permute(2, 0, 1) / 256.0 - 0.5
    with torch.no_grad():
        out = net(x[None].to(device()))
        out = F.interpolate(out, (h, w), mode="bilinear", align_corners=True)
    return out.float().cpu().numpy()[0]


def face_peaks(maps: np.ndarray, thre: float = 0.05) -> np.ndarray:
    """(x, y) of the maximum of each of the maps (the background's included, as the original loops over
    all 71) that rises above `thre`; maps that do not are skipped, so there may be fewer rows."""
    out = []
    for m in maps:
        if not (m > thre).any():
            continue
        y, x = np.unravel_index(int(np.argmax(m)), m.shape)
        out.append([int(x), int(y)])
    return np.array(out)


def _normalized(peaks: np.ndarray, x0: int, y0: int, height: int, width: int) -> Optional[list]:
    """Crop peaks to image-relative keypoints (float32 like the original); a zero coordinate becomes -1."""
    peaks = peaks.astype(np.float32)
    if peaks.ndim != 2 or peaks.shape[1] != 2:
        return None
    xs = np.where(peaks[:, 0] < 1e-6, -1, peaks[:, 0] + x0) / float(width)
    ys = np.where(peaks[:, 1] < 1e-6, -1, peaks[:, 1] + y0) / float(height)
    return [Keypoint(x, y) for x, y in zip(xs, ys)]


def detect_poses(nets: OpenPoseNets, rgb: np.ndarray, include_hand: bool = False,
                 include_face: bool = False) -> list[PoseResult]:
    """Every person of the image, keypoints normalized by its width / height."""
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    h, w = bgr.shape[:2]
    # the files a job needs are read before detecting, so a bad one fails every job, found people or not
    hand_net = nets.hand() if include_hand else None
    face_net = nets.face() if include_face else None
    bodies = body_results(*decode_body(*body_maps(nets.body, bgr)))
    out = []
    for body in bodies:
        left = right = face = None
        if include_hand:
            for x, y, side, is_left in hand_boxes(body.keypoints, h, w):
                crop = bgr[y:y + side, x:x + side, :]
                kps = _normalized(hand_peaks(hand_maps(hand_net, crop), *crop.shape[:2]), x, y, h, w)
                if is_left:
                    left = kps
                else:
                    right = kps
        if include_face:
            box = face_box(body.keypoints, h, w)
            if box is not None:
                x, y, side = box
                crop = bgr[y:y + side, x:x + side, :]
                face = _normalized(face_peaks(face_maps(face_net, crop)), x, y, h, w)
        kps = [Keypoint(k.x / float(w), k.y / float(h)) if k is not None else None for k in body.keypoints]
        out.append(PoseResult(BodyResult(kps, body.total_score, body.total_parts), left, right, face))
    return out


# ---- drawing --------------------------------------------------------------------------------------

BODY_COLORS = [[255, 0, 0], [255, 85, 0], [255, 170, 0], [255, 255, 0], [170, 255, 0], [85, 255, 0], [0, 255, 0],
               [0, 255, 85], [0, 255, 170], [0, 255, 255], [0, 170, 255], [0, 85, 255], [0, 0, 255], [85, 0, 255],
               [170, 0, 255], [255, 0, 255], [255, 0, 170], [255, 0, 85]]
HAND_EDGES = [[0, 1], [1, 2], [2, 3], [3, 4], [0, 5], [5, 6], [6, 7], [7, 8], [0, 9], [9, 10], [10, 11], [11, 12],
              [0, 13], [13, 14], [14, 15], [15, 16], [0, 17], [17, 18], [18, 19], [19, 20]]
STICK_WIDTH = 4
_EPS = 0.01


def _hsv_color(h: float) -> tuple[float, float, float]:
    """matplotlib's hsv_to_rgb([h, 1, 1]) * 255."""
    s = v = 1.0
    i = int(h * 6.0)
    f = h * 6.0 - i
    p, q, t = v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f))
    rgb = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i % 6]
    return tuple(c * 255 for c in rgb)


def draw_bodypose(canvas: np.ndarray, keypoints: list) -> np.ndarray:
    """The first 17 limbs as filled ellipses (half-width 4), the canvas dimmed to 60%, then the 18 points
    as radius-4 dots, each in its colour."""
    h, w = canvas.shape[:2]
    for (a, b), color in zip(LIMB_SEQ[:17], BODY_COLORS):
        k1, k2 = keypoints[a - 1], keypoints[b - 1]
        if k1 is None or k2 is None:
            continue
        xs = np.array([k1.x, k2.x]) * float(w)
        ys = np.array([k1.y, k2.y]) * float(h)
        length = ((ys[0] - ys[1]) ** 2 + (xs[0] - xs[1]) ** 2) ** 0.5
        angle = math.degrees(math.atan2(ys[0] - ys[1], xs[0] - xs[1]))
        poly = cv2.ellipse2Poly((int(np.mean(xs)), int(np.mean(ys))), (int(length / 2), STICK_WIDTH),
                                int(angle), 0, 360, 1)
        cv2.fillConvexPoly(canvas, poly, color)
    canvas = (canvas * 0.6).astype(np.uint8)
    for k, color in zip(keypoints, BODY_COLORS):
        if k is not None:
            cv2.circle(canvas, (int(float(k.x) * w), int(float(k.y) * h)), 4, color, thickness=-1)
    return canvas


def draw_handpose(canvas: np.ndarray, keypoints: Optional[list]) -> np.ndarray:
    """20 bones as 2-pixel lines in hues around the colour wheel, the 21 points as blue radius-4 dots;
    points at coordinate 0 or below (missing) are left out."""
    if not keypoints:
        return canvas
    h, w = canvas.shape[:2]
    for ie, (e1, e2) in enumerate(HAND_EDGES):
        k1, k2 = keypoints[e1], keypoints[e2]
        if k1 is None or k2 is None:
            continue
        x1, y1 = int(float(k1.x) * w), int(float(k1.y) * h)
        x2, y2 = int(float(k2.x) * w), int(float(k2.y) * h)
        if x1 > _EPS and y1 > _EPS and x2 > _EPS and y2 > _EPS:
            cv2.line(canvas, (x1, y1), (x2, y2), _hsv_color(ie / float(len(HAND_EDGES))), thickness=2)
    for k in keypoints:
        if k is None:
            continue
        x, y = int(float(k.x) * w), int(float(k.y) * h)
        if x > _EPS and y > _EPS:
            cv2.circle(canvas, (x, y), 4, (0, 0, 255), thickness=-1)
    return canvas


def draw_facepose(canvas: np.ndarray, keypoints: Optional[list]) -> np.ndarray:
    """The face points as white radius-3 dots."""
    if not keypoints:
        return canvas
    h, w = canvas.shape[:2]
    for k in keypoints:
        if k is None:
            continue
        x, y = int(float(k.x) * w), int(float(k.y) * h)
        if x > _EPS and y > _EPS:
            cv2.circle(canvas, (x, y), 3, (255, 255, 255), thickness=-1)
    return canvas


def draw_poses(poses: list[PoseResult], height: int, width: int, draw_body: bool = True,
               draw_hand: bool = True, draw_face: bool = True) -> np.ndarray:
    """The people on a black RGB canvas, one after the other (each body dims what was drawn before)."""
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    for pose in poses:
        if draw_body:
            canvas = draw_bodypose(canvas, pose.body.keypoints)
        if draw_hand:
            canvas = draw_handpose(canvas, pose.left_hand)
            canvas = draw_handpose(canvas, pose.right_hand)
        if draw_face:
            canvas = draw_facepose(canvas, pose.face)
    return canvas


def encode_poses_as_dict(poses: list[PoseResult], height: int, width: int) -> dict:
    """The extension's "openpose" JSON: people -> pose_keypoints_2d / face / hands as flat [x, y, 1.0]
    lists in normalized coordinates ([0, 0, 0] for a missing point, None for a missing list), and the
    canvas size."""
    def flat(kps):
        if not kps:
            return None
        return [v for k in kps for v in ([float(k.x), float(k.y), 1.0] if k is not None else [0.0, 0.0, 0.0])]

    return {
        "people": [{"pose_keypoints_2d": flat(p.body.keypoints), "face_keypoints_2d": flat(p.face),
                    "hand_left_keypoints_2d": flat(p.left_hand), "hand_right_keypoints_2d": flat(p.right_hand)}
                   for p in poses],
        "canvas_height": height,
        "canvas_width": width,
    }


# ---- preprocessors ------------------------------------------------------------------------------

def _nets(weights: dict) -> OpenPoseNets:
    paths = {f: Path(weights[f]) for f in (BODY_FILE, HAND_FILE, FACE_FILE)}
    return cached("openpose", list(paths.values()), lambda: OpenPoseNets(paths))


def detect(image: np.ndarray, res: int, weights: dict, include_body: bool = True, include_hand: bool = False,
           include_face: bool = False) -> tuple[np.ndarray, dict]:
    """(map, pose dict): the drawing at the preprocessing size (padding cut off, HxWx3 uint8) and the
    JSON structure of the padded canvas the extension reports."""
    padded, hw = preprocessors.resize_with_pad(image, res)
    h, w = padded.shape[:2]
    poses = detect_poses(_nets(weights), padded, include_hand, include_face)
    drawn = draw_poses(poses, h, w, draw_body=include_body, draw_hand=include_hand, draw_face=include_face)
    return preprocessors.unpad(drawn, hw), encode_poses_as_dict(poses, h, w)


def _preprocessor(include_body: bool, include_hand: bool, include_face: bool) -> Callable:
    def run(image, res=512, thr_a=None, thr_b=None, weights=None, json_pose_callback=None, **kw):
        detected, pose = detect(image, res, weights or {}, include_body, include_hand, include_face)
        if json_pose_callback is not None:
            json_pose_callback(pose)
        return detected

    run.__doc__ = (f"OpenPose map: body {include_body}, hands {include_hand}, face {include_face}; "
                   "json_pose_callback, if given, receives the pose dict.")
    return run


for _name, _flags in {"openpose": (True, False, False), "openpose_hand": (True, True, False),
                      "openpose_face": (True, False, True), "openpose_faceonly": (False, False, True),
                      "openpose_full": (True, True, True)}.items():
    preprocessors.register_network(_name, _preprocessor(*_flags))
