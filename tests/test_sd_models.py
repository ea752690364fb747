"""The checkpoint library: discovery, titles and hashes, lookup, refresh, loading, switching, bad files."""
from __future__ import annotations

import gc
import hashlib
import shutil
import socket
import weakref
from pathlib import Path

import pytest
import torch

from modules import cmd_args, hashes, sd_models
from modules.paths import Paths
from testing.tiny_models import write_tiny_checkpoint


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    return {
        "sd1": write_tiny_checkpoint(d / "sd1.safetensors", "sd1", seed=1),
        "sd1b": write_tiny_checkpoint(d / "sd1b.safetensors", "sd1", seed=2),
        "sd2": write_tiny_checkpoint(d / "sd2v.safetensors", "sd2-v", seed=3),
    }


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("network access attempted")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def make_paths(tmp_path, *extra):
    args = cmd_args.parse_args(["--data-dir", str(tmp_path), *extra])
    p = Paths.from_args(args)
    p.ckpt_dirs[0].mkdir(parents=True, exist_ok=True)
    p.vae_dirs[0].mkdir(parents=True, exist_ok=True)
    return p


def sha(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_discovery_titles_and_hashes(tmp_path, tiny_files):
    p = make_paths(tmp_path)
    ck = p.ckpt_dirs[0]
    shutil.copy(tiny_files["sd1"], ck / "a.safetensors")
    (ck / "sub").mkdir()
    shutil.copy(tiny_files["sd2"], ck / "sub" / "b.safetensors")
    mm = sd_models.ModelManager(p)
    infos = mm.refresh()
    titles = [i.title for i in infos]
    assert titles == [f"a.safetensors [{sha(ck / 'a.safetensors')[:10]}]",
                      f"sub/b.safetensors [{sha(ck / 'sub' / 'b.safetensors')[:10]}]"]
    a, b = infos
    assert a.sha256 == sha(ck / "a.safetensors") and len(a.shorthash) == 10
    assert a.arch == "sd1" and b.arch == "sd2-v"
    assert b.model_name == "sub_b"
    data = (ck / "a.safetensors").read_bytes()
    assert a.legacy_hash == hashlib.sha256(data[0x100000:0x110000]).hexdigest()[:8]
    assert mm.hash_cache.computed == 2


def test_hash_cache_survives_restart_and_notices_changes(tmp_path, tiny_files):
    p = make_paths(tmp_path)
    target = p.ckpt_dirs[0] / "m.safetensors"
    shutil.copy(tiny_files["sd1"], target)
    first = sd_models.ModelManager(p)
    first.refresh()
    assert first.hash_cache.computed == 1
    second = sd_models.ModelManager(p)  # a restart: new objects, same cache file
    second.refresh()
    assert second.hash_cache.computed == 0
    assert p.cache_file.is_file()
    shutil.copy(tiny_files["sd1b"], target)  # new content, new mtime
    third = sd_models.ModelManager(p)
    (info,) = third.refresh()
    assert third.hash_cache.computed == 1
    assert info.sha256 == sha(tiny_files["sd1b"])


def test_lookup_by_title_name_hash_and_closest(tmp_path, tiny_files):
    p = make_paths(tmp_path)
    ck = p.ckpt_dirs[0]
    (ck / "styles").mkdir()
    shutil.copy(tiny_files["sd1"], ck / "styles" / "dreamy-v2.safetensors")
    shutil.copy(tiny_files["sd2"], ck / "realistic.safetensors")
    mm = sd_models.ModelManager(p)
    mm.refresh()
    dreamy = [i for i in mm.checkpoints.values() if "dreamy" in i.name][0]
    assert mm.find(dreamy.title) is dreamy
    assert mm.find("styles/dreamy-v2.safetensors") is dreamy
    assert mm.find("styles_dreamy-v2") is dreamy
    assert mm.find(dreamy.shorthash) is dreamy
    assert mm.find(dreamy.sha256) is dreamy
    assert mm.find(dreamy.legacy_hash) is dreamy
    assert mm.find("dreamy") is dreamy          # closest: substring
    assert mm.find("realistc").name == "realistic.safetensors"  # closest: fuzzy
    with pytest.raises(sd_models.ModelLoadError, match="not found. Available: .*realistic.safetensors"):
        mm.find("zzzzzz-nothing")


def test_refresh_picks_up_new_files(tmp_path, tiny_files):
    p = make_paths(tmp_path)
    mm = sd_models.ModelManager(p)
    assert mm.refresh() == []
    shutil.copy(tiny_files["sd1"], p.ckpt_dirs[0] / "new.safetensors")
    assert [i.name for i in mm.refresh()] == ["new.safetensors"]


def test_extra_ckpt_dir(tmp_path, tiny_files):
    extra = tmp_path / "elsewhere"
    extra.mkdir()
    shutil.copy(tiny_files["sd1"], extra / "far.safetensors")
    p = make_paths(tmp_path / "data", "--ckpt-dir", str(extra))
    mm = sd_models.ModelManager(p)
    assert [i.name for i in mm.refresh()] == ["far.safetensors"]


def test_bad_files_are_reported_and_good_ones_listed(tmp_path, tiny_files):
    from safetensors.torch import save_file

    p = make_paths(tmp_path)
    ck = p.ckpt_dirs[0]
    shutil.copy(tiny_files["sd1"], ck / "good.safetensors")
    data = tiny_files["sd1"].read_bytes()
    (ck / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    save_file({"lora_unet_down.lora_up.weight": torch.zeros(4, 4)}, str(ck / "notamodel.safetensors"))
    (ck / "garbage.ckpt").write_bytes(b"this is not a checkpoint at all")
    (ck / "empty-folder").mkdir()
    mm = sd_models.ModelManager(p)
    infos = mm.refresh()
    assert [i.name for i in infos] == ["good.safetensors"]
    reasons = {b.filename.name: b.reason for b in mm.bad_files}
    assert set(reasons) == {"truncated.safetensors", "notamodel.safetensors", "garbage.ckpt"}
    assert "truncated" in reasons["truncated.safetensors"]
    assert "not a Stable Diffusion checkpoint" in reasons["notamodel.safetensors"]
    assert "not a PyTorch checkpoint" in reasons["garbage.ckpt"]


def test_load_switch_and_failed_switch_keeps_previous(tmp_path, tiny_files, no_network):
    p = make_paths(tmp_path)
    ck = p.ckpt_dirs[0]
    shutil.copy(tiny_files["sd1"], ck / "one.safetensors")
    shutil.copy(tiny_files["sd2"], ck / "two.safetensors")
    mm = sd_models.ModelManager(p)
    mm.refresh()
    one = mm.load("one")
    assert one.spec.arch == "sd1" and one.info.name == "one.safetensors"
    ref = weakref.ref(one.components.unet)
    del one
    two = mm.load("two.safetensors")
    assert two.spec.arch == "sd2-v" and mm.loaded is two
    gc.collect()
    assert ref() is None, "the previous model must be released on switch"
    # a file that breaks after listing: the error names it, the loaded model stays
    data = (ck / "one.safetensors").read_bytes()
    (ck / "one.safetensors").write_bytes(data[: len(data) // 3])
    with pytest.raises(sd_models.ModelLoadError, match="one.safetensors"):
        mm.load(mm.find("one.safetensors"))
    assert mm.loaded is two
    with pytest.raises(sd_models.ModelLoadError, match="not found"):
        mm.load("does-not-exist-anywhere-xyz")
    assert mm.loaded is two


def test_ckpt_pickle_loads_and_code_is_refused(tmp_path, tiny_files):
    from modules import model_formats

    p = make_paths(tmp_path)
    ck = p.ckpt_dirs[0]
    sd, _ = model_formats.read_state_dict(tiny_files["sd1"])
    torch.save({"state_dict": sd, "global_step": 1}, ck / "plain.ckpt")
    mm = sd_models.ModelManager(p)
    mm.refresh()
    loaded = mm.load("plain.ckpt")
    assert loaded.spec.arch == "sd1"
    torch.save({"state_dict": sd, "evil": _Evil()}, ck / "evil.ckpt")
    mm.refresh()
    with pytest.raises(sd_models.ModelLoadError, match="evil.ckpt"):
        mm.load("evil.ckpt")
    assert mm.loaded is loaded


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_vae_choices_automatic_none_and_file(tmp_path, tiny_files):
    from modules import model_formats
    from testing.tiny_models import build_tiny_components
    from safetensors.torch import save_file

    p = make_paths(tmp_path)
    ck = p.ckpt_dirs[0]
    shutil.copy(tiny_files["sd1"], ck / "base.safetensors")
    other = build_tiny_components("sd1", seed=9).vae
    ldm = {"first_stage_model." + k: v for k, v in model_formats.to_ldm_state_dict(
        build_tiny_components("sd1", seed=9)).items() if k.startswith("first_stage_model.")}
    assert ldm
    vae_sd = {k[len("first_stage_model."):]: v.contiguous() for k, v in ldm.items()}
    vae_sd = {k.replace("first_stage_model.", ""): v for k, v in vae_sd.items()}
    save_file(vae_sd, str(p.vae_dirs[0] / "fancy.safetensors"))
    mm = sd_models.ModelManager(p)
    mm.refresh()
    assert mm.vae_choices() == ["Automatic", "None", "fancy.safetensors"]
    own = mm.load("base", vae="None")
    own_w = own.components.vae.decoder.conv_out.weight.clone()
    mm.load("base", vae="fancy.safetensors")
    assert mm.loaded.vae_name == "fancy.safetensors"
    assert torch.equal(mm.loaded.components.vae.decoder.conv_out.weight, other.decoder.conv_out.weight)
    mm.load("base", vae="None")
    assert torch.equal(mm.loaded.components.vae.decoder.conv_out.weight, own_w)
    # Automatic: base.vae.safetensors beside the checkpoint wins
    shutil.copy(p.vae_dirs[0] / "fancy.safetensors", ck / "base.vae.safetensors")
    mm.refresh()
    assert mm.resolve_vae(mm.find("base"), "Automatic")[0] == "base.vae.safetensors"
    assert [i.name for i in mm.checkpoints.values()] == ["base.safetensors"]  # a .vae. file is no checkpoint
    with pytest.raises(sd_models.ModelLoadError, match="VAE 'nope' not found"):
        mm.load("base", vae="nope")


def test_diffusers_folder_is_listed_and_loads(tmp_path, tiny_files):
    from testing.tiny_models import build_tiny_components

    p = make_paths(tmp_path)
    comps = build_tiny_components("sd1", seed=4)
    folder = p.ckpt_dirs[0] / "my-diffusers-model"
    from diffusers import StableDiffusionPipeline
    from diffusers.schedulers import DDIMScheduler
    pipe = StableDiffusionPipeline(vae=comps.vae, text_encoder=comps.text_encoder, tokenizer=comps.tokenizer,
                                   unet=comps.unet, scheduler=DDIMScheduler.from_config(comps.spec.scheduler_config),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(folder)
    mm = sd_models.ModelManager(p)
    (info,) = mm.refresh()
    assert info.is_folder and info.name == "my-diffusers-model"
    loaded = mm.load(info)
    assert torch.equal(loaded.components.unet.conv_in.weight, comps.unet.conv_in.weight)


def test_legacy_hash_function(tmp_path):
    f = tmp_path / "x.bin"
    data = bytes(range(256)) * 5000
    f.write_bytes(data)
    assert hashes.legacy_model_hash(f) == hashlib.sha256(data[0x100000:0x110000]).hexdigest()[:8]


def test_a1111_yaml_beside_an_sd2_checkpoint_decides_v_prediction(tmp_path, tiny_files):
    """A1111's `<name>.yaml` next to a checkpoint: an LDM config without `parameterization` is an epsilon
    (SD 2.x 512) model, with `parameterization: "v"` a v model; a broken one is ignored."""
    p = make_paths(tmp_path)
    ck = p.ckpt_dirs[0]
    for name in ("eps", "v", "broken"):
        shutil.copy(tiny_files["sd2"], ck / f"{name}.safetensors")
    (ck / "eps.yaml").write_text("model:\n  target: ldm.models.diffusion.ddpm.LatentDiffusion\n"
                                 "  params:\n    linear_start: 0.00085\n")
    (ck / "v.yaml").write_text('model:\n  params:\n    parameterization: "v"\n')
    (ck / "broken.yaml").write_text("model: [unclosed\n")
    mm = sd_models.ModelManager(p)
    archs = {i.model_name: i.arch for i in mm.refresh()}
    assert archs == {"eps": "sd2", "v": "sd2-v", "broken": "sd2-v"}
    assert mm.load("eps").spec.prediction_type == "epsilon"


def _raw_safetensors(path: Path, header: bytes, data: bytes = b"") -> None:
    path.write_bytes(len(header).to_bytes(8, "little") + header + data)


def test_hostile_safetensors_headers_are_listed_as_unusable_and_hide_nothing(tmp_path, tiny_files):
    """One bad file must never hide the good ones: each is a bad file with a reason (the listing and the
    sd-models API used to fail as a whole on these, with AttributeError, RecursionError or RuntimeError)."""
    p = make_paths(tmp_path)
    ck = p.ckpt_dirs[0]
    shutil.copy(tiny_files["sd1"], ck / "good.safetensors")
    _raw_safetensors(ck / "list.safetensors", b"[1, 2, 3]")
    _raw_safetensors(ck / "deep.safetensors", b"[" * 100_000 + b"]" * 100_000)
    _raw_safetensors(ck / "negative.safetensors",
                     b'{"x": {"dtype": "F32", "shape": [-4], "data_offsets": [0, 16]}}', bytes(16))
    _raw_safetensors(ck / "offsets.safetensors",
                     b'{"x": {"dtype": "F32", "shape": [4], "data_offsets": [16, 0]}}', bytes(16))
    _raw_safetensors(ck / "entry.safetensors", b'{"x": "not an entry"}')
    _raw_safetensors(ck / "binary.safetensors", b"\xff\xfe\x00garbage")
    (ck / "huge-length.safetensors").write_bytes((2**63).to_bytes(8, "little") + b"{}")
    (ck / "zero.safetensors").write_bytes(b"")
    (ck / "dir.safetensors").mkdir()
    mm = sd_models.ModelManager(p)
    assert [i.name for i in mm.refresh()] == ["good.safetensors"]
    reasons = {b.filename.name: b.reason for b in mm.bad_files}
    assert set(reasons) == {"list.safetensors", "deep.safetensors", "negative.safetensors", "offsets.safetensors",
                            "entry.safetensors", "binary.safetensors", "huge-length.safetensors", "zero.safetensors",
                            "dir.safetensors"}
    assert "not an object" in reasons["list.safetensors"]
    assert "nested too deeply" in reasons["deep.safetensors"]
    assert "non-negative" in reasons["negative.safetensors"]
    assert "data offsets" in reasons["offsets.safetensors"]
    assert "not valid JSON" in reasons["binary.safetensors"]
    assert "damaged" in reasons["huge-length.safetensors"] and "too short" in reasons["zero.safetensors"]
    assert "is a folder" in reasons["dir.safetensors"]
    assert mm.load("good").spec.arch == "sd1"  # and the good model still loads
