"""Line art annotators (lineart, lineart_coarse, lineart_anime, lineart_anime_denoise): the networks have the
published files' key layout, run as the extension's preprocessors (map size, channels, dtype), agree with
a functional recomputation from the state dict, post-process as scripts/processor.py does (inversion,
scaling, the anime net's 256-multiple resize), and bad files are refused by name."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from modules.controlnet import preprocessors as pp
from modules.controlnet.annotators import AnnotatorError, clear_cache
from modules.controlnet.annotators import lineart as la

pytestmark = pytest.mark.usefixtures("one_thread")


def picture(h=48, w=80):
    img = np.full((h, w, 3), 250, np.uint8)
    cv2.rectangle(img, (w // 6, h // 6), (w // 2, h // 2), (200, 40, 30), -1)
    cv2.line(img, (0, h - 1), (w - 1, h // 3), (10, 10, 10), 2)
    cv2.circle(img, (2 * w // 3, 2 * h // 3), h // 5, (30, 150, 70), 1)
    return img


IMAGE = picture()


def random_sd(cls, seed=0, counters=True) -> dict:
    """Random weights in the real layout (BatchNorm statistics made non-trivial)."""
    torch.manual_seed(seed)
    sd = {k: v.clone() for k, v in cls().state_dict().items()}
    for k, v in sd.items():
        if k.endswith("running_var"):
            v.uniform_(0.5, 1.5)
        elif k.endswith("running_mean"):
            v.normal_(0.0, 0.1)
        elif k.endswith("num_batches_tracked"):
            v.fill_(1000)
    if not counters:
        sd = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    return sd


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """All four files in the extension's sub-folders; netG.pth with DataParallel's "module." prefix and
    erika.pth without BatchNorm counters, both layouts the loader must take."""
    root = tmp_path_factory.mktemp("annotators")
    sds = {la.REALISTIC: random_sd(la.SketchGenerator, 1), la.COARSE: random_sd(la.SketchGenerator, 2),
           la.ANIME: random_sd(la.AnimeUnet, 3), la.MANGA: random_sd(la.MangaLineNet, 4, counters=False)}
    for sub in ("lineart", "lineart_anime", "manga_line"):
        (root / sub).mkdir()
    torch.save(sds[la.REALISTIC], root / "lineart" / la.REALISTIC)
    torch.save(sds[la.COARSE], root / "lineart" / la.COARSE)
    torch.save({"module." + k: v for k, v in sds[la.ANIME].items()}, root / "lineart_anime" / la.ANIME)
    torch.save(sds[la.MANGA], root / "manga_line" / la.MANGA)
    clear_cache()
    yield root, sds
    clear_cache()


# ---- 1. key layouts of the published files -----------------------------------------------------------

SKETCH_KEYS = [  # informative-drawings Generator(3, 1, 3): sk_model.pth and sk_model2.pth
    ("model0.1.weight", (64, 3, 7, 7)), ("model0.1.bias", (64,)),
    ("model1.0.weight", (128, 64, 3, 3)), ("model1.0.bias", (128,)),
    ("model1.3.weight", (256, 128, 3, 3)), ("model1.3.bias", (256,)),
    ("model2.0.conv_block.1.weight", (256, 256, 3, 3)), ("model2.0.conv_block.1.bias", (256,)),
    ("model2.0.conv_block.5.weight", (256, 256, 3, 3)), ("model2.0.conv_block.5.bias", (256,)),
    ("model2.1.conv_block.1.weight", (256, 256, 3, 3)), ("model2.1.conv_block.1.bias", (256,)),
    ("model2.1.conv_block.5.weight", (256, 256, 3, 3)), ("model2.1.conv_block.5.bias", (256,)),
    ("model2.2.conv_block.1.weight", (256, 256, 3, 3)), ("model2.2.conv_block.1.bias", (256,)),
    ("model2.2.conv_block.5.weight", (256, 256, 3, 3)), ("model2.2.conv_block.5.bias", (256,)),
    ("model3.0.weight", (256, 128, 3, 3)), ("model3.0.bias", (128,)),
    ("model3.3.weight", (128, 64, 3, 3)), ("model3.3.bias", (64,)),
    ("model4.1.weight", (1, 64, 7, 7)), ("model4.1.bias", (1,)),
]

_M = "model.model.1.model.3.model.3."  # the fourth level's prefix
UNET_KEYS = [  # UnetGenerator(3, 1, 8, ngf=64, parameter-free InstanceNorm): netG.pth
    ("model.model.0.weight", (64, 3, 4, 4)), ("model.model.0.bias", (64,)),
    ("model.model.1.model.1.weight", (128, 64, 4, 4)), ("model.model.1.model.1.bias", (128,)),
    ("model.model.1.model.3.model.1.weight", (256, 128, 4, 4)), ("model.model.1.model.3.model.1.bias", (256,)),
    (_M + "model.1.weight", (512, 256, 4, 4)), (_M + "model.1.bias", (512,)),
    (_M + "model.3.model.1.weight", (512, 512, 4, 4)), (_M + "model.3.model.1.bias", (512,)),
    (_M + "model.3.model.3.model.1.weight", (512, 512, 4, 4)), (_M + "model.3.model.3.model.1.bias", (512,)),
    (_M + "model.3.model.3.model.3.model.1.weight", (512, 512, 4, 4)),
    (_M + "model.3.model.3.model.3.model.1.bias", (512,)),
    (_M + "model.3.model.3.model.3.model.3.model.1.weight", (512, 512, 4, 4)),
    (_M + "model.3.model.3.model.3.model.3.model.1.bias", (512,)),
    (_M + "model.3.model.3.model.3.model.3.model.3.weight", (512, 512, 4, 4)),
    (_M + "model.3.model.3.model.3.model.3.model.3.bias", (512,)),
    (_M + "model.3.model.3.model.3.model.5.weight", (1024, 512, 4, 4)),
    (_M + "model.3.model.3.model.3.model.5.bias", (512,)),
    (_M + "model.3.model.3.model.5.weight", (1024, 512, 4, 4)), (_M + "model.3.model.3.model.5.bias", (512,)),
    (_M + "model.3.model.5.weight", (1024, 512, 4, 4)), (_M + "model.3.model.5.bias", (512,)),
    (_M + "model.5.weight", (1024, 256, 4, 4)), (_M + "model.5.bias", (256,)),
    ("model.model.1.model.3.model.5.weight", (512, 128, 4, 4)), ("model.model.1.model.3.model.5.bias", (128,)),
    ("model.model.1.model.5.weight", (256, 64, 4, 4)), ("model.model.1.model.5.bias", (64,)),
    ("model.model.3.weight", (128, 1, 4, 4)), ("model.model.3.bias", (1,)),
]

MANGA_SAMPLE = [  # res_skip of erika.pth: 707 entries (97 BatchNorms), 43,100,147 parameters
    ("block0.model.0.conv1.model.0.weight", (1,)), ("block0.model.0.conv1.model.0.running_var", (1,)),
    ("block0.model.0.conv1.model.0.num_batches_tracked", ()),
    ("block0.model.0.conv1.model.2.weight", (24, 1, 3, 3)),
    ("block1.model.2.conv1.model.2.weight", (48, 48, 3, 3)),
    ("block1.model.2.shortcut.model.0.weight", (48, 48, 1, 1)),
    ("block4.model.11.conv1.model.0.running_mean", (384,)),
    ("block4.model.11.conv1.model.2.weight", (384, 384, 3, 3)),
    ("block4.model.11.residual.model.2.bias", (384,)),
    ("block4.model.11.shortcut.model.0.weight", (384, 384, 1, 1)),
    ("block5.model.0.conv1.model.2.weight", (192, 384, 3, 3)),
    ("block5.model.0.shortcut.model.0.weight", (192, 384, 1, 1)),
    ("block5.model.6.residual.model.2.weight", (192, 192, 3, 3)),
    ("block8.model.0.shortcut.model.0.weight", (24, 48, 1, 1)),
    ("block9.model.0.shortcut.model.0.weight", (16, 24, 1, 1)),
    ("block9.model.1.residual.model.0.running_var", (16,)),
    ("conv15.model.0.weight", (16,)), ("conv15.model.0.num_batches_tracked", ()),
    ("conv15.model.2.weight", (1, 16, 1, 1)), ("conv15.model.2.bias", (1,)),
]
MANGA_BLOCK_KEYS = {"block0": 30, "block1": 46, "block2": 74, "block3": 102, "block4": 172, "block5": 100,
                    "block6": 72, "block7": 44, "block8": 30, "block9": 30, "conv15": 7}


def shapes(net):
    return [(k, tuple(v.shape)) for k, v in net.state_dict().items()]


def test_sketch_and_unet_have_the_published_keys_and_shapes():
    assert shapes(la.SketchGenerator()) == SKETCH_KEYS
    assert shapes(la.AnimeUnet()) == UNET_KEYS


def test_manga_net_has_the_published_layout():
    net = la.MangaLineNet()
    sd = net.state_dict()
    assert len(sd) == 707 and sum(k.endswith("num_batches_tracked") for k in sd) == 97
    assert sum(p.numel() for p in net.parameters()) == 43_100_147
    got = dict(shapes(net))
    assert [(k, got.get(k)) for k, _ in MANGA_SAMPLE] == MANGA_SAMPLE
    counts = {}
    for k in sd:
        counts[k.split(".")[0]] = counts.get(k.split(".")[0], 0) + 1
    assert counts == MANGA_BLOCK_KEYS
    # the encoder stages that keep channels and scale have no shortcut conv
    assert "block0.model.1.shortcut.model.0.weight" not in sd and "block1.model.1.shortcut.model.0.weight" not in sd


# ---- 2. availability and map shapes ---------------------------------------------------------------

NAMES = [("lineart_realistic", la.REALISTIC), ("lineart_coarse", la.COARSE), ("lineart_anime", la.ANIME),
         ("lineart_anime_denoise", la.MANGA)]


@pytest.mark.parametrize("name,file", NAMES)
def test_unavailable_without_the_file(tmp_path, name, file):
    ok, why = pp.get(name).available(tmp_path)
    assert not ok and file in why
    with pytest.raises(pp.PreprocessorUnavailable, match=file):
        pp.run(name, IMAGE, 64, annotator_dir=tmp_path)


@pytest.mark.parametrize("name,file", NAMES)
def test_runs_with_the_file_and_gives_the_extensions_map_size(weights, name, file):
    root, _ = weights
    assert pp.get(name).available(root) == (True, "")
    out = pp.run(name, IMAGE, 64, -1, -1, annotator_dir=root)
    # short side 48 -> 64, long side round(80 * 4 / 3) = 107; HxW uint8 like the extension's maps
    assert out.shape == (64, 107) and out.dtype == np.uint8 and out.flags["C_CONTIGUOUS"]


def test_flat_folder_works_too(tmp_path, weights):
    _, sds = weights
    torch.save(sds[la.REALISTIC], tmp_path / la.REALISTIC)
    out = pp.run("lineart", IMAGE[:40, :40], 64, annotator_dir=tmp_path)
    assert out.shape == (64, 64) and out.dtype == np.uint8


# ---- 3. the forward passes against a functional recomputation -----------------------------------------

def sketch_reference(sd, x):
    def conv(x, p, **kw):
        return F.conv2d(x, sd[p + ".weight"], sd[p + ".bias"], **kw)

    x = F.relu(F.instance_norm(conv(F.pad(x, (3,) * 4, mode="reflect"), "model0.1"), eps=1e-5))
    for p in ("model1.0", "model1.3"):
        x = F.relu(F.instance_norm(conv(x, p, stride=2, padding=1)))
    for i in range(3):
        p = f"model2.{i}.conv_block."
        y = F.relu(F.instance_norm(conv(F.pad(x, (1,) * 4, mode="reflect"), p + "1")))
        x = x + F.instance_norm(conv(F.pad(y, (1,) * 4, mode="reflect"), p + "5"))
    for p in ("model3.0", "model3.3"):
        x = F.conv_transpose2d(x, sd[p + ".weight"], sd[p + ".bias"], stride=2, padding=1, output_padding=1)
        x = F.relu(F.instance_norm(x))
    return torch.sigmoid(conv(F.pad(x, (3,) * 4, mode="reflect"), "model4.1"))


def unet_reference(sd, x):
    def down(x, p):
        return F.conv2d(x, sd[p + ".weight"], sd[p + ".bias"], stride=2, padding=1)

    def up(x, p):
        return F.conv_transpose2d(F.relu(x), sd[p + ".weight"], sd[p + ".bias"], stride=2, padding=1)

    def level(x, p, depth):  # depth 1..7 below the outermost; 7 is the innermost
        d = down(F.leaky_relu(x, 0.2), p + "1")
        if depth == 7:
            return torch.cat([x, F.instance_norm(up(d, p + "3"))], 1)
        inner = level(F.instance_norm(d), p + "3.model.", depth + 1)
        return torch.cat([x, F.instance_norm(up(inner, p + "5"))], 1)

    p = "model.model."
    return torch.tanh(up(level(down(x, p + "0"), p + "1.model.", 1), p + "3"))


def manga_reference(sd, x):
    def unit(x, p, stride=1, up=False):
        x = F.batch_norm(x, sd[p + "0.running_mean"], sd[p + "0.running_var"], sd[p + "0.weight"],
                         sd[p + "0.bias"], False, 0.0, 1e-3)
        w = sd[p + "2.weight"]
        x = F.conv2d(F.leaky_relu(x, 0.2), w, sd[p + "2.bias"], stride=stride, padding=w.shape[-1] // 2)
        return F.interpolate(x, scale_factor=2, mode="nearest") if up else x

    def stage(x, name, reps, mode):
        for i in range(reps):
            p = f"{name}.model.{i}."
            stride = 2 if mode == "down" and i == reps - 1 else 1
            up = mode == "up" and i == 0
            y = unit(unit(x, p + "conv1.model.", stride, up), p + "residual.model.")
            if p + "shortcut.model.0.weight" in sd:
                x = F.conv2d(x, sd[p + "shortcut.model.0.weight"], sd[p + "shortcut.model.0.bias"], stride=stride)
                x = F.interpolate(x, scale_factor=2, mode="nearest") if up else x
            x = x + y
        return x

    x0 = stage(x, "block0", 2, "same")
    x1 = stage(x0, "block1", 3, "down")
    x2 = stage(x1, "block2", 5, "down")
    x3 = stage(x2, "block3", 7, "down")
    y = stage(stage(x3, "block4", 12, "down"), "block5", 7, "up") + x3
    y = stage(y, "block6", 5, "up") + x2
    y = stage(y, "block7", 3, "up") + x1
    y = stage(y, "block8", 2, "up") + x0
    return unit(stage(y, "block9", 2, "same"), "conv15.model.")


@pytest.fixture
def on_cpu(monkeypatch):
    """The numeric comparisons run on the CPU (a GPU's TF32 convolutions would need a looser bound)."""
    monkeypatch.setattr(la, "device", lambda: torch.device("cpu"))
    clear_cache()
    yield
    clear_cache()


def close(got, want, tol=1e-4):
    scale = max(1.0, float(want.abs().max()))
    assert got.shape == want.shape
    assert float((got - want).abs().max()) <= tol * scale


@pytest.mark.parametrize("file,sub", [(la.REALISTIC, "lineart"), (la.ANIME, "lineart_anime"),
                                      (la.MANGA, "manga_line")])
def test_forward_matches_the_functional_reference(weights, on_cpu, file, sub):
    root, sds = weights
    net = la.build(file, root / sub / file)
    torch.manual_seed(5)
    x = {la.REALISTIC: lambda: torch.rand(1, 3, 64, 128), la.ANIME: lambda: torch.rand(1, 3, 256, 256) * 2 - 1,
         la.MANGA: lambda: torch.rand(1, 1, 64, 64) * 255}[file]()
    ref = {la.REALISTIC: sketch_reference, la.ANIME: unet_reference, la.MANGA: manga_reference}[file]
    with torch.no_grad():
        want = ref(sds[file], x)
    got = torch.from_numpy(la._run(net, x.numpy()))
    assert float(want.std()) > 1e-3  # a non-trivial output
    close(got, want[0, 0])


def test_lineart_map_end_to_end_matches_the_reference(weights, on_cpu):
    """lineart_coarse on a picture: resize-with-pad, /255, the reference net, x255 -> uint8, 255 - x, crop."""
    root, sds = weights
    padded, hw = pp.resize_with_pad(IMAGE, 64)
    x = torch.from_numpy(padded).float().permute(2, 0, 1)[None] / 255.0
    with torch.no_grad():
        line = sketch_reference(sds[la.COARSE], x)[0, 0].numpy()
    want = (255 - (line * 255.0).clip(0, 255).astype(np.uint8))[:hw[0], :hw[1]]
    got = pp.run("lineart_coarse", IMAGE, 64, annotator_dir=root)
    diff = np.abs(got.astype(int) - want.astype(int))
    assert diff.max() <= 1 and (diff == 0).mean() > 0.99
    assert got.std() > 0  # random weights still draw something


# ---- 4. post-processing on known network outputs --------------------------------------------------------

class FakeNet:
    """Stands in for a network: records its input, returns `make(input)`."""

    def __init__(self, make):
        self.make, self.seen = make, None

    def __call__(self, x):
        self.seen = x.detach().cpu().clone()
        return self.make(x)


def dummy_files(root):
    for sub, f in (("lineart", la.REALISTIC), ("lineart", la.COARSE), ("lineart_anime", la.ANIME),
                   ("manga_line", la.MANGA)):
        (root / sub).mkdir(exist_ok=True)
        (root / sub / f).write_bytes(b"not used")


def test_sketch_map_values():
    line = np.array([-0.5, 0.0, 0.1, 0.5, 0.999, 1.0, 2.0], np.float32)
    assert la.sketch_map(line).tolist() == [255, 255, 230, 128, 1, 0, 0]
    assert la.sketch_map(line).dtype == np.uint8


def test_manga_map_values():
    line = np.array([-10.0, 0.0, 100.7, 254.2, 255.0, 300.0], np.float32)
    assert la.manga_map(line).tolist() == [255, 255, 154, 0, 0, 0]


def test_anime_map_values():
    assert (la.anime_map(np.full((256, 256), 0.5, np.float32), (64, 128)) == 64).all()  # 191.25 -> 191 -> 64
    assert (la.anime_map(np.full((256, 512), 0.9, np.float32), (64, 448)) == 13).all()  # 242.25 -> 242
    # cubic resampling of a constant 255 gives 254.99997 in places: truncated to 254, inverted to 1 (as in
    # the extension, which resizes the same way)
    assert set(np.unique(la.anime_map(np.full((256, 512), 1.0, np.float32), (64, 448)))) <= {0, 1}
    assert (la.anime_map(np.full((256, 256), -1.0, np.float32), (192, 64)) == 255).all()
    assert la.anime_map(np.zeros((256, 256), np.float32), (64, 128)).shape == (64, 128)


@pytest.mark.parametrize("name", ["lineart", "lineart_coarse"])
def test_lineart_wrapper_scales_inverts_and_crops(tmp_path, monkeypatch, name):
    dummy_files(tmp_path)
    values = torch.tensor([-0.2, 0.0, 0.1, 0.5, 0.999, 1.0, 1.3])
    fake = FakeNet(lambda x: values[torch.arange(x.shape[2] * x.shape[3]) % 7].reshape(1, 1, *x.shape[2:]))
    files = []
    monkeypatch.setattr(la, "network", lambda f, p: files.append((f, p.name)) or fake)
    out = pp.run(name, IMAGE, 64, annotator_dir=tmp_path)
    padded, hw = pp.resize_with_pad(IMAGE, 64)
    assert files == [(la.REALISTIC if name == "lineart" else la.COARSE,) * 2]
    assert fake.seen.shape == (1, 3, 64, 128)
    assert torch.equal(fake.seen[0], torch.from_numpy(padded).float().permute(2, 0, 1) / 255.0)
    # x255, clip, truncate, invert: 255 - [0, 0, 25, 127, 254, 255, 255]
    lut = np.array([255, 255, 230, 128, 1, 0, 0], np.uint8)
    want = lut[np.arange(64 * 128).reshape(64, 128) % 7][:hw[0], :hw[1]]
    assert out.shape == (64, 107) and np.array_equal(out, want)


def test_lineart_anime_wrapper_resizes_to_256_multiples_and_back(tmp_path, monkeypatch):
    dummy_files(tmp_path)
    rng = np.random.default_rng(0)
    noise = None

    def make(x):
        nonlocal noise
        noise = torch.from_numpy(rng.uniform(-1.2, 1.2, (1, 1) + tuple(x.shape[2:])).astype(np.float32))
        return noise

    fake = FakeNet(make)
    monkeypatch.setattr(la, "network", lambda f, p: fake)
    img = picture(48, 300)  # -> 64 x 400, padded 64 x 448, fed at 256 x 512
    out = pp.run("lineart_anime", img, 64, annotator_dir=tmp_path)
    padded, hw = pp.resize_with_pad(img, 64)
    assert padded.shape[:2] == (64, 448) and fake.seen.shape == (1, 3, 256, 512)
    big = cv2.resize(padded, (512, 256), interpolation=cv2.INTER_CUBIC)
    assert torch.allclose(fake.seen[0], torch.from_numpy(big).float().permute(2, 0, 1) / 127.5 - 1.0, atol=1e-6)
    back = cv2.resize(noise[0, 0].numpy() * 127.5 + 127.5, (448, 64), interpolation=cv2.INTER_CUBIC)
    want = (255 - back.clip(0, 255).astype(np.uint8))[:64, :400]
    assert out.shape == (64, 400) and np.array_equal(out, want)
    assert (out == 0).any() and (out == 255).any()  # the clip acted on both ends

    fake.make = lambda x: torch.full((1, 1) + tuple(x.shape[2:]), 0.5)
    assert (pp.run("lineart_anime", IMAGE, 64, annotator_dir=tmp_path) == 64).all()


def test_lineart_anime_denoise_wrapper_feeds_unscaled_grey(tmp_path, monkeypatch):
    dummy_files(tmp_path)
    fake = FakeNet(lambda x: 300.0 - x)  # 255 - (300 - g) = g - 45, clipped at 0
    monkeypatch.setattr(la, "network", lambda f, p: fake)
    out = pp.run("lineart_anime_denoise", IMAGE, 64, annotator_dir=tmp_path)
    padded, hw = pp.resize_with_pad(IMAGE, 64)
    grey = cv2.cvtColor(padded, cv2.COLOR_RGB2GRAY)
    assert fake.seen.shape == (1, 1, 64, 128) and fake.seen.dtype == torch.float32
    assert torch.equal(fake.seen[0, 0], torch.from_numpy(grey).float())
    want = (grey.astype(np.int32) - 45).clip(0, 255).astype(np.uint8)[:hw[0], :hw[1]]
    assert np.array_equal(out, want) and (out == 0).any() and out.max() >= 250 - 45


# ---- 5. bad files ------------------------------------------------------------------------------------

def test_bad_files_name_the_file_and_a_good_one_then_works(tmp_path, weights):
    _, sds = weights
    path = tmp_path / la.REALISTIC
    good = tmp_path / "good.pth"
    torch.save(sds[la.REALISTIC], good)
    data = good.read_bytes()

    path.write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(AnnotatorError, match=la.REALISTIC):
        pp.run("lineart", IMAGE, 64, annotator_dir=tmp_path)

    torch.save({k: v for k, v in sds[la.REALISTIC].items() if k != "model4.1.bias"}, path)  # a key missing
    with pytest.raises(AnnotatorError, match=r"sk_model\.pth: not the expected weights: 1 missing"):
        pp.run("lineart", IMAGE, 64, annotator_dir=tmp_path)

    wrong = dict(sds[la.REALISTIC], **{"model4.1.weight": torch.zeros(3, 64, 7, 7)})  # the colour variant
    torch.save(wrong, path)
    with pytest.raises(AnnotatorError, match=r"sk_model\.pth: .*model4\.1\.weight is \(3, 64, 7, 7\)"):
        pp.run("lineart", IMAGE, 64, annotator_dir=tmp_path)

    torch.save(sds[la.COARSE], tmp_path / la.ANIME)  # sketch weights under netG's name
    with pytest.raises(AnnotatorError, match=r"netG\.pth: not the expected weights"):
        pp.run("lineart_anime", IMAGE, 64, annotator_dir=tmp_path)

    torch.save({"state_dict": sds[la.REALISTIC]}, path)  # a wrapped dict is accepted
    out = pp.run("lineart", IMAGE, 64, annotator_dir=tmp_path)
    assert out.shape == (64, 107) and out.dtype == np.uint8
    assert np.array_equal(out, pp.run("lineart", IMAGE, 64, annotator_dir=weights[0]))


def test_manga_file_with_or_without_batch_counters(tmp_path, weights, on_cpu):
    _, sds = weights
    full = dict(sds[la.MANGA])
    for k in list(full):
        if k.endswith("running_mean"):
            full[k[:-len("running_mean")] + "num_batches_tracked"] = torch.tensor(7)
    torch.save(full, tmp_path / la.MANGA)
    net = la.build(la.MANGA, tmp_path / la.MANGA)
    assert int(net.state_dict()["conv15.model.0.num_batches_tracked"]) == 7
    x = torch.rand(1, 1, 32, 32) * 255
    with torch.no_grad():
        close(torch.from_numpy(la._run(net, x.numpy())), manga_reference(sds[la.MANGA], x)[0, 0])
    broken = {k: v for k, v in full.items() if not k.startswith("conv15.")}
    torch.save(broken, tmp_path / la.MANGA)
    with pytest.raises(AnnotatorError, match=r"erika\.pth: not the expected weights: 7 missing"):
        la.build(la.MANGA, tmp_path / la.MANGA)
