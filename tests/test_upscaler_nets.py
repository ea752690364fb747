"""The ESRGAN / Real-ESRGAN RRDBNet and SRVGGNetCompact definitions (modules/upscaler_nets): random weights in
each real key layout are loaded through ``identify`` / ``load`` and compared with a reference forward pass
written here with torch.nn.functional calls straight on the state-dict tensors."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from modules import upscaler_nets as un
from modules.upscaler_nets import esrgan, srvgg

TOL = 1e-5
H, W = 12, 16   # small, not square


# ---- random state dicts in the published key layouts --------------------------------------------------------

def esrgan_names(layout: str, nb: int, n_up: int) -> dict:
    """Logical layer -> key prefix, as each published layout spells it."""
    if layout == "old":
        names = {"first": "model.0", "trunk": f"model.1.sub.{nb}", "hr": f"model.{3 * n_up + 2}",
                 "last": f"model.{3 * n_up + 4}"}
        names.update({("up", k): f"model.{3 * k + 3}" for k in range(n_up)})
        block = "model.1.sub.{i}.RDB{j}.conv{k}.0"
    elif layout == "new":
        names = {"first": "conv_first", "trunk": "trunk_conv", "hr": "HRconv", "last": "conv_last"}
        names.update({("up", k): f"upconv{k + 1}" for k in range(n_up)})
        block = "RRDB_trunk.{i}.RDB{j}.conv{k}"
    else:
        names = {"first": "conv_first", "trunk": "conv_body", "hr": "conv_hr", "last": "conv_last"}
        names.update({("up", k): f"conv_up{k + 1}" for k in range(n_up)})
        block = "body.{i}.rdb{j}.conv{k}"
    for i in range(nb):
        for j in (1, 2, 3):
            for k in range(1, 6):
                names[("block", i, j, k)] = block.format(i=i, j=j, k=k)
    return names


def rand_conv(sd: dict, prefix: str, cin: int, cout: int, g: torch.Generator):
    sd[prefix + ".weight"] = torch.randn(cout, cin, 3, 3, generator=g) / (cin * 9) ** 0.5
    sd[prefix + ".bias"] = torch.randn(cout, generator=g) * 0.05


def esrgan_sd(layout, *, in_ch=3, out_ch=3, nf=8, gc=4, nb=2, n_up=2, unshuffle=1, seed=0) -> dict:
    g = torch.Generator().manual_seed(seed)
    names = esrgan_names(layout, nb, n_up)
    sd = {}
    rand_conv(sd, names["first"], in_ch * unshuffle ** 2, nf, g)
    for i in range(nb):
        for j in (1, 2, 3):
            for k in range(1, 6):
                rand_conv(sd, names[("block", i, j, k)], nf + (k - 1) * gc, gc if k < 5 else nf, g)
    rand_conv(sd, names["trunk"], nf, nf, g)
    for k in range(n_up):
        rand_conv(sd, names[("up", k)], nf, nf, g)
    rand_conv(sd, names["hr"], nf, nf, g)
    rand_conv(sd, names["last"], nf, out_ch, g)
    return sd


def srvgg_sd(*, ch=3, nf=8, num_conv=3, up=4, seed=0) -> dict:
    g = torch.Generator().manual_seed(seed)
    sd = {}
    rand_conv(sd, "body.0", ch, nf, g)
    for m in range(num_conv + 1):
        sd[f"body.{2 * m + 1}.weight"] = torch.rand(nf, generator=g) * 0.3
        if m < num_conv:
            rand_conv(sd, f"body.{2 * m + 2}", nf, nf, g)
    rand_conv(sd, f"body.{2 * num_conv + 2}", nf, ch * up * up, g)
    return sd


# ---- reference forward passes ---------------------------------------------------------------------------

def ref_conv(sd, prefix, x):
    return F.conv2d(x, sd[prefix + ".weight"].float(), sd[prefix + ".bias"].float(), padding=1)


def lrelu(x):
    return F.leaky_relu(x, 0.2)


def ref_rdb(sd, names, i, j, x):
    c = lambda k, t: ref_conv(sd, names[("block", i, j, k)], t)  # noqa: E731
    x1 = lrelu(c(1, x))
    x2 = lrelu(c(2, torch.cat((x, x1), 1)))
    x3 = lrelu(c(3, torch.cat((x, x1, x2), 1)))
    x4 = lrelu(c(4, torch.cat((x, x1, x2, x3), 1)))
    x5 = c(5, torch.cat((x, x1, x2, x3, x4), 1))
    return x5 * 0.2 + x


def ref_rrdbnet(sd, layout, x, *, nb, n_up, unshuffle=1):
    names = esrgan_names(layout, nb, n_up)
    if unshuffle > 1:
        x = F.pixel_unshuffle(x, unshuffle)
    fea = ref_conv(sd, names["first"], x)
    t = fea
    for i in range(nb):
        t = ref_rdb(sd, names, i, 3, ref_rdb(sd, names, i, 2, ref_rdb(sd, names, i, 1, t))) * 0.2 + t
    fea = fea + ref_conv(sd, names["trunk"], t)
    for k in range(n_up):
        fea = lrelu(ref_conv(sd, names[("up", k)], F.interpolate(fea, scale_factor=2, mode="nearest")))
    return ref_conv(sd, names["last"], lrelu(ref_conv(sd, names["hr"], fea)))


def ref_srvgg(sd, x, *, num_conv, up):
    h = x
    for m in range(num_conv + 1):
        h = F.prelu(ref_conv(sd, f"body.{2 * m}", h), sd[f"body.{2 * m + 1}.weight"].float())
    h = ref_conv(sd, f"body.{2 * num_conv + 2}", h)
    return F.pixel_shuffle(h, up) + F.interpolate(x, scale_factor=up, mode="nearest")


def image(ch=3, h=H, w=W, n=1, seed=1):
    return torch.rand(n, ch, h, w, generator=torch.Generator().manual_seed(seed))


def run(net, x):
    with torch.no_grad():
        return net(x)


# ---- ESRGAN / Real-ESRGAN ---------------------------------------------------------------------------------

ESRGAN_CASES = {
    # id: (layout, sd kwargs, arch, scale)
    "old-4x": ("old", dict(n_up=2), "ESRGAN", 4),
    "old-2x": ("old", dict(n_up=1), "ESRGAN", 2),
    "old-1x": ("old", dict(n_up=0), "ESRGAN", 1),
    "old-8x": ("old", dict(n_up=3, nb=1), "ESRGAN", 8),
    "old-gray-2x": ("old", dict(n_up=1, in_ch=1, out_ch=1), "ESRGAN", 2),
    "new-4x": ("new", dict(n_up=2), "ESRGAN", 4),
    "basicsr-4x": ("basicsr", dict(n_up=2), "RealESRGAN", 4),
    "basicsr-4x-6b": ("basicsr", dict(n_up=2, nb=6, nf=6, gc=3), "RealESRGAN", 4),
    "basicsr-x2plus": ("basicsr", dict(n_up=2, unshuffle=2), "RealESRGAN", 2),
    "basicsr-x1": ("basicsr", dict(n_up=2, unshuffle=4), "RealESRGAN", 1),
}


@pytest.mark.parametrize("case", list(ESRGAN_CASES))
def test_esrgan_layouts_match_the_reference(case, one_thread):
    layout, kw, arch, scale = ESRGAN_CASES[case]
    sd = esrgan_sd(layout, **kw)
    params = {"nf": 8, "gc": 4, "nb": 2, "in_ch": 3, "out_ch": 3, **kw}
    info = un.identify(sd)
    assert (info.arch, info.scale) == (arch, scale)
    assert (info.in_channels, info.out_channels) == (params["in_ch"], params["out_ch"])
    assert {k: info.params[k] for k in ("nf", "gc", "nb")} == {k: params[k] for k in ("nf", "gc", "nb")}
    assert info.half is True
    net, info2 = un.load(sd)
    assert info2 == info
    assert not net.training
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in net.parameters())
    x = image(params["in_ch"], n=2)
    out = run(net, x)
    assert out.shape == (2, params["out_ch"], H * scale, W * scale)
    ref = ref_rrdbnet(sd, layout, x, nb=params["nb"], n_up=params["n_up"], unshuffle=kw.get("unshuffle", 1))
    assert (out - ref).abs().max().item() <= TOL
    assert out.std() > 0.01   # the comparison is not between two constant pictures


def test_the_reference_tells_layouts_apart():
    """A mislabelled layer would show: the HR conv and the last conv swapped (shape-compatible here) give a
    different picture than the reference."""
    sd = esrgan_sd("old", n_up=2, out_ch=8)
    swapped = {**sd, "model.8.weight": sd["model.10.weight"], "model.10.weight": sd["model.8.weight"],
               "model.8.bias": sd["model.10.bias"], "model.10.bias": sd["model.8.bias"]}
    x = image()
    out = run(un.load(swapped)[0], x)
    assert (out - ref_rrdbnet(sd, "old", x, nb=2, n_up=2)).abs().max().item() > 1e-3


def test_x2plus_takes_sizes_that_do_not_divide(one_thread):
    sd = esrgan_sd("basicsr", n_up=2, unshuffle=2)
    net, info = un.load(sd)
    x = image(h=13, w=17)
    out = run(net, x)
    assert out.shape == (1, 3, 26, 34)
    ref = ref_rrdbnet(sd, "basicsr", F.pad(x, (0, 1, 0, 1), mode="reflect"), nb=2, n_up=2, unshuffle=2)
    assert (out - ref[..., :26, :34]).abs().max().item() <= TOL


def test_params_ema_wrapper_and_half_weights_load(one_thread):
    sd = {k: v.half() for k, v in esrgan_sd("basicsr", n_up=2, seed=3).items()}
    net, info = un.load({"params_ema": sd, "params": {"junk.weight": torch.zeros(1)}})
    assert info.arch == "RealESRGAN" and info.scale == 4
    assert all(p.dtype == torch.float32 for p in net.parameters())
    x = image()
    assert (run(net, x) - ref_rrdbnet(sd, "basicsr", x, nb=2, n_up=2)).abs().max().item() <= TOL


def test_match_functions_keep_to_their_family():
    bsr, old, new, vgg = esrgan_sd("basicsr"), esrgan_sd("old"), esrgan_sd("new"), srvgg_sd()
    assert esrgan.match(bsr) and esrgan.match(old) and esrgan.match(new)
    assert not esrgan.match(vgg)
    assert srvgg.match(vgg)
    assert not any(srvgg.match(sd) for sd in (bsr, old, new))
    assert not esrgan.match({"foo.weight": torch.zeros(1)}) and not srvgg.match({"foo.weight": torch.zeros(1)})


def unsupported(sd) -> str:
    with pytest.raises(un.UnsupportedModel) as exc:
        un.load(sd)
    with pytest.raises(un.UnsupportedModel):
        un.identify(sd)
    assert str(exc.value)
    return str(exc.value)


def test_esrgan_plus_conv1x1_is_unsupported():
    sd = esrgan_sd("old")
    sd["model.1.sub.0.RDB1.conv1x1.weight"] = torch.zeros(4, 8, 1, 1)
    assert "conv1x1" in unsupported(sd)


def test_old_pixel_shuffle_is_unsupported():
    sd = esrgan_sd("old", n_up=0)   # then rebuild the tail as conv(nf -> 4 nf), shuffle, act at 2, 5
    for k in [k for k in sd if not k.startswith(("model.0.", "model.1."))]:
        del sd[k]
    g = torch.Generator().manual_seed(5)
    for prefix, cin, cout in (("model.2", 8, 32), ("model.5", 8, 32), ("model.8", 8, 8), ("model.10", 8, 3)):
        rand_conv(sd, prefix, cin, cout, g)
    assert "pixel-shuffle" in unsupported(sd).lower()


def test_sft_is_unsupported():
    sd = esrgan_sd("old")
    sd["model.1.sub.0.SFT_scale_conv0.weight"] = torch.zeros(8, 8, 1, 1)
    assert "SFT" in unsupported(sd)


def test_unexpected_layers_and_shapes_are_unsupported_not_a_crash():
    extra = {**esrgan_sd("new"), "upconv1.running_mean": torch.zeros(8)}
    assert "upconv1.running_mean" in unsupported(extra)
    wrong = esrgan_sd("basicsr")
    wrong["body.1.rdb2.conv3.weight"] = torch.zeros(4, 17, 3, 3)
    assert "body.1.rdb2.conv3" in unsupported(wrong)
    no_trunk = esrgan_sd("old")
    del no_trunk["model.1.sub.2.weight"], no_trunk["model.1.sub.2.bias"]
    assert unsupported(no_trunk)


def test_unrelated_weights_are_unsupported():
    assert "foo.weight" in unsupported({"foo.weight": torch.zeros(3)})
    with pytest.raises(un.UnsupportedModel):
        un.unwrap([1, 2])


# ---- SRVGGNetCompact ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("nf,num_conv,up", [(8, 3, 4), (6, 2, 2), (4, 1, 1)])
def test_srvgg_matches_the_reference(nf, num_conv, up, one_thread):
    sd = srvgg_sd(nf=nf, num_conv=num_conv, up=up)
    info = un.identify(sd)
    assert (info.arch, info.scale, info.in_channels, info.out_channels) == ("SRVGGNetCompact", up, 3, 3)
    assert info.params["num_conv"] == num_conv and info.params["num_feat"] == nf and info.half is True
    net, _ = un.load({"params": sd})
    assert not net.training and all(p.dtype == torch.float32 for p in net.parameters())
    x = image(n=2)
    out = run(net, x)
    assert out.shape == (2, 3, H * up, W * up)
    ref = ref_srvgg(sd, x, num_conv=num_conv, up=up)
    assert (out - ref).abs().max().item() <= TOL
    # the residual body matters: the output is not just the enlarged input
    assert (out - F.interpolate(x, scale_factor=up, mode="nearest")).abs().max() > 1e-3


def test_srvgg_variants_not_written_are_unsupported():
    no_prelu = {k: v for k, v in srvgg_sd().items() if v.dim() == 4 or k.endswith(".bias")}
    assert "PReLU" in unsupported(no_prelu)
    bad_scale = srvgg_sd()
    bad_scale["body.8.weight"] = torch.zeros(20, 8, 3, 3)
    bad_scale["body.8.bias"] = torch.zeros(20)
    assert unsupported(bad_scale)
