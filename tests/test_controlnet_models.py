"""ControlNet / T2I-Adapter model files: every layout probes and loads offline to the right tensors, the original
layout loads through diffusers' own single-file converter to the same tensors and outputs, bad files are listed
with reasons, and a model for another base is refused."""
from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch

from modules import families, model_formats
from modules.controlnet import models as cn
from testing import tiny_controlnets as tc
from testing.tiny_models import build_tiny_components

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def sd1_unet():
    return build_tiny_components("sd1", seed=0).unet


@pytest.fixture(scope="module")
def sd1_net():
    return tc.build_tiny_controlnet("sd1", seed=3)


@pytest.fixture(scope="module")
def xl_net():
    return tc.build_tiny_controlnet("sdxl", seed=4)


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a model load tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def same_tensors(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    worst = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    assert worst == 0 and all(a[k].dtype == b[k].dtype and a[k].shape == b[k].shape for k in a)


def diffusers_single_file(path: Path, arch: str):
    """diffusers' own loader: the shipped config folder, the tiny sizes as keyword overrides, nothing fetched."""
    from diffusers import ControlNetModel

    sizes = {k: v for k, v in tc.tiny_controlnet_config(arch).items() if not k.startswith("_")}
    folder = cn.shipped_config(families.get(families.variant(arch).family))
    return ControlNetModel.from_single_file(str(path), config=str(folder), local_files_only=True, **sizes)


# ------------------------------------------------------------------ (a) the original layout, ours and diffusers'


@pytest.mark.parametrize("name,prefix", [("canny.safetensors", cn.LDM_PREFIX), ("canny.pth", cn.LDM_PREFIX),
                                         ("bare.safetensors", "")])
def test_original_layout_loads_like_diffusers_from_single_file(tmp_path, sd1_net, no_network, name, prefix):
    path = tc.write_tiny_controlnet(tmp_path / name, "sd1", model=sd1_net, prefix=prefix)
    info = cn.probe(path)
    assert (info.kind, info.base, info.layout, info.prefix, info.hint_channels) == (
        cn.CONTROLNET, "sd1", "ldm", prefix, 3)
    ours = cn.load(info).state_dict()
    same_tensors(ours, sd1_net.state_dict())
    if prefix:  # diffusers' converter takes the prefixed file (lllyasviel's layout)
        same_tensors(diffusers_single_file(path, "sd1").state_dict(), ours)


def test_shipped_configs_are_complete_controlnet_configs():
    import inspect

    from diffusers import ControlNetModel

    params = set(inspect.signature(ControlNetModel.__init__).parameters) - {"self"}
    for fam in families.all_families():
        cfg = cn._family_unet_config(cn.shipped_config(fam) / "config.json")
        assert set(cfg) - {"_class_name"} == params
        unet = cn._family_unet_config(fam.base.configs / "unet" / "config.json")
        for key in ("cross_attention_dim", "block_out_channels", "use_linear_projection", "addition_embed_type"):
            assert cfg[key] == unet[key], (fam.name, key)


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl"])
def test_real_sized_shapes_give_back_the_shipped_config(family):
    """Shapes of a full-size ControlNet (built on the meta device, named as the original files name them) are
    read back to the shipped config and to the family whose checkpoints they drive."""
    from diffusers import ControlNetModel

    fam = families.get(family)
    shipped = cn._family_unet_config(cn.shipped_config(fam) / "config.json")
    with torch.device("meta"):
        model = ControlNetModel.from_config(shipped)
    kmap = cn.key_map(dict(model.config))
    shapes = {kmap(k): cn._Meta(v.shape) for k, v in model.state_dict().items()}
    feats = cn._features(shapes)
    assert cn.base_family(feats["add_embed"], feats["context_dim"], feats["linear"]) is fam
    assert cn.infer_config(shapes, fam) == shipped


# ------------------------------------------------------------------ (b) the diff layout


def test_diff_layout_loads_to_base_plus_difference(tmp_path, sd1_net, sd1_unet):
    path = tc.write_tiny_controlnet(tmp_path / "diff_control_sd15_canny_fp16.safetensors", "sd1", layout="diff",
                                    base_unet=sd1_unet, model=sd1_net)
    info = cn.probe(path)
    assert (info.layout, info.base, info.prefix) == ("diff", "sd1", cn.LDM_PREFIX)
    base = tc.unet_original_layout(sd1_unet)
    stored = model_formats.read_state_dict(path)[0]
    kmap = cn.key_map(dict(sd1_net.config))
    with_prefix = {families.get("sd1").unet_prefix + k: v for k, v in base.items()}
    for given in (base, with_prefix):
        loaded = cn.load(info, base_unet_state=given).state_dict()
        expect = {}
        for key in loaded:
            diff, b = stored[cn.LDM_PREFIX + kmap(key)], base.get(kmap(key))
            expect[key] = diff if b is None else diff.float() + b.float()
        same_tensors(loaded, expect)
        assert (loaded["conv_in.weight"] - sd1_net.state_dict()["conv_in.weight"]).abs().max() < 1e-6
    with pytest.raises(cn.ControlNetError, match="stores differences to the base model's UNet"):
        cn.load(info)
    # the marker may sit under the prefix too (sd-webui-controlnet strips the prefix before looking for it)
    from safetensors.torch import save_file

    stored[cn.LDM_PREFIX + cn.DIFF_MARKER] = stored.pop(cn.DIFF_MARKER)
    save_file(stored, str(tmp_path / "prefixed.safetensors"))
    again = cn.probe(tmp_path / "prefixed.safetensors")
    assert again.layout == "diff"
    same_tensors(cn.load(again, base_unet_state=base).state_dict(), loaded)


# ------------------------------------------------------------------ (c) SDXL, diffusers names in one file; (d) a folder


def test_sdxl_diffusers_single_file(tmp_path, xl_net, no_network):
    path = tc.write_tiny_controlnet(tmp_path / "diffusers_xl_canny_mid.safetensors", "sdxl", layout="diffusers",
                                    model=xl_net)
    info = cn.probe(path)
    assert (info.kind, info.base, info.layout, info.context_dim) == (cn.CONTROLNET, "sdxl", "diffusers", 96)
    unet_cfg = build_tiny_components("sdxl").spec.unet_config
    model = cn.load(info, unet_config=unet_cfg)
    same_tensors(model.state_dict(), xl_net.state_dict())
    assert model.config.addition_time_embed_dim == unet_cfg["addition_time_embed_dim"]
    assert list(model.config.transformer_layers_per_block) == [1, 1, 2]
    same_tensors(diffusers_single_file(path, "sdxl").state_dict(), model.state_dict())
    # the same model in the original layout (label_emb for the add embedding) loads to the same tensors
    ldm = cn.probe(tc.write_tiny_controlnet(tmp_path / "xl_ldm.safetensors", "sdxl", model=xl_net))
    assert (ldm.layout, ldm.base) == ("ldm", "sdxl")
    same_tensors(cn.load(ldm, unet_config=unet_cfg).state_dict(), xl_net.state_dict())


def test_diffusers_folder(tmp_path, sd1_net, xl_net):
    for net, base in ((sd1_net, "sd1"), (xl_net, "sdxl")):
        folder = tc.write_tiny_controlnet(tmp_path / f"controlnet-{base}", model=net, layout="diffusers_dir")
        info = cn.probe(folder)
        assert (info.name, info.kind, info.base, info.layout) == (folder.name, cn.CONTROLNET, base, "diffusers_dir")
        same_tensors(cn.load(info).state_dict(), net.state_dict())
    half = cn.load(cn.probe(tmp_path / "controlnet-sd1"), dtype=torch.float16)
    assert {p.dtype for p in half.parameters()} == {torch.float16}


def test_t2i_adapters_original_and_diffusers(tmp_path):
    adapter = tc.build_tiny_t2i_adapter(seed=5)
    for name, layout in (("t2iadapter_canny_sd15v2.pth", "t2i_original"), ("t2i_diffusers.safetensors", "diffusers"),
                         ("t2i-folder", "diffusers_dir")):
        info = cn.probe(tc.write_tiny_t2i_adapter(tmp_path / name, layout, model=adapter))
        assert (info.kind, info.layout, info.base, info.hint_channels) == (cn.T2I_ADAPTER, layout, "sd1", 3)
        same_tensors(cn.load(info).state_dict(), adapter.state_dict())


# ------------------------------------------------------------------ (e) the listing and its bad files


def _evil(marker):
    Path(marker).write_text("ran", encoding="utf-8")


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return _evil, (self.marker,)


def test_listing_probes_every_layout_and_names_bad_files(tmp_path, sd1_net, xl_net, sd1_unet):
    root = tmp_path / "ControlNet"
    tc.write_tiny_controlnet(root / "control_v11p_sd15_canny.pth", model=sd1_net)
    tc.write_tiny_controlnet(root / "sub" / "control_v11e_sd15_shuffle.safetensors", model=sd1_net, prefix="")
    tc.write_tiny_controlnet(root / "sub" / "diff_canny.safetensors", layout="diff", base_unet=sd1_unet, model=sd1_net)
    tc.write_tiny_controlnet(root / "xl" / "diffusers_xl_depth.safetensors", "sdxl", layout="diffusers", model=xl_net)
    tc.write_tiny_controlnet(root / "xl" / "controlnet-depth-sdxl", "sdxl", layout="diffusers_dir", model=xl_net)
    full = tc.write_tiny_controlnet(root / "truncated.safetensors", model=sd1_net)
    full.write_bytes(full.read_bytes()[:-100])
    marker = tmp_path / "code-ran"
    torch.save({"x": _Evil(str(marker))}, str(root / "evil.pth"))
    tc.tiny_sd_checkpoint(root / "sd15.safetensors")
    (root / "not_a_file.safetensors").mkdir()
    (root / "notes.txt").write_text("ignored")

    good, bad = cn.list_models([root, tmp_path / "missing"])
    rows = {(i.name, i.kind, i.base, i.layout, i.prefix, i.hint_channels, i.global_pool) for i in good}
    assert rows == {("control_v11p_sd15_canny", "controlnet", "sd1", "ldm", cn.LDM_PREFIX, 3, False),
                    ("control_v11e_sd15_shuffle", "controlnet", "sd1", "ldm", "", 3, True),
                    ("diff_canny", "controlnet", "sd1", "diff", cn.LDM_PREFIX, 3, False),
                    ("diffusers_xl_depth", "controlnet", "sdxl", "diffusers", "", 3, False),
                    ("controlnet-depth-sdxl", "controlnet", "sdxl", "diffusers_dir", "", 3, False)}
    reasons = {p.name: why for p, why in bad}
    assert set(reasons) == {"truncated.safetensors", "evil.pth", "sd15.safetensors", "not_a_file.safetensors"}
    assert "truncated" in reasons["truncated.safetensors"]
    assert "refuses to run code" in reasons["evil.pth"] and not marker.exists()
    assert "Stable Diffusion checkpoint" in reasons["sd15.safetensors"]
    assert "is a folder" in reasons["not_a_file.safetensors"]
    assert all(why.startswith(name) for name, why in reasons.items())
    torch.load(str(root / "evil.pth"), weights_only=False)  # the file really would run code if unpickled freely
    assert marker.exists()


def test_refused_kinds_say_what_they_are(tmp_path):
    from safetensors.torch import save_file

    cases = {"control_lora.safetensors": {"lora_controlnet": torch.zeros(1), cn.HINT_KEY: torch.zeros(16, 3, 3, 3)},
             "lllite.safetensors": {"lllite_unet_input_blocks_4_1.down.0.weight": torch.zeros(2, 2)},
             "random.safetensors": {"foo": torch.zeros(2)}}
    for name, sd in cases.items():
        save_file(sd, str(tmp_path / name))
    torch.save([1, 2, 3], str(tmp_path / "list.pth"))
    reasons = {p.name: why for p, why in cn.list_models([tmp_path])[1]}
    assert "Control-LoRA" in reasons["control_lora.safetensors"]
    assert "ControlLLLite" in reasons["lllite.safetensors"]
    assert "not a ControlNet or T2I-Adapter model" in reasons["random.safetensors"]
    assert "does not hold a state dict" in reasons["list.pth"]


# ------------------------------------------------------------------ (f) another base


def test_a_model_for_another_base_is_refused(tmp_path, sd1_net, xl_net):
    xl = cn.probe(tc.write_tiny_controlnet(tmp_path / "xl_canny.safetensors", "sdxl", layout="diffusers", model=xl_net))
    sd1 = cn.probe(tc.write_tiny_controlnet(tmp_path / "canny.safetensors", model=sd1_net))
    tiny_sd1 = build_tiny_components("sd1").spec
    with pytest.raises(cn.ControlNetError) as e:
        cn.check_compatible(xl, tiny_sd1)
    assert str(e.value) == "ControlNet model xl_canny is for SDXL; the loaded checkpoint is SD 1.x"
    with pytest.raises(cn.ControlNetError, match="is for SD 1.x; the loaded checkpoint is SDXL"):
        cn.check_compatible(sd1, families.get("sdxl"))
    cn.check_compatible(sd1, tiny_sd1)
    cn.check_compatible(sd1, families.get("sd1"))
    with pytest.raises(cn.ControlNetError, match="cross-attention width 32; the loaded checkpoint's UNet has 768"):
        cn.check_compatible(sd1, model_formats.spec_for_arch("sd1"))


# ------------------------------------------------------------------ (g) one forward, ours and diffusers'


def test_residuals_equal_diffusers_and_drive_the_tiny_unet(tmp_path, sd1_net, sd1_unet, one_thread):
    path = tc.write_tiny_controlnet(tmp_path / "canny.safetensors", model=sd1_net)
    ours, theirs = cn.load(cn.probe(path)), diffusers_single_file(path, "sd1")
    gen = torch.Generator().manual_seed(0)
    sample, text = torch.randn(1, 4, 8, 8, generator=gen), torch.randn(1, 7, 32, generator=gen)
    hint = torch.rand(1, 3, 64, 64, generator=gen)
    with torch.no_grad():
        a = ours(sample, 10, encoder_hidden_states=text, controlnet_cond=hint, return_dict=False)
        b = theirs(sample, 10, encoder_hidden_states=text, controlnet_cond=hint, return_dict=False)
        plain = sd1_unet(sample, 10, encoder_hidden_states=text).sample
        steered = sd1_unet(sample, 10, encoder_hidden_states=text, down_block_additional_residuals=a[0],
                           mid_block_additional_residual=a[1]).sample
    assert len(a[0]) == len(b[0]) == 1 + 2 * 2 + 1
    assert all(torch.equal(x, y) for x, y in zip(a[0], b[0])) and torch.equal(a[1], b[1])
    assert a[1].abs().max() > 0 and (steered - plain).abs().max() > 1e-4
