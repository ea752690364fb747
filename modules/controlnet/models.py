"""ControlNet and T2I-Adapter model files: what a file is (:func:`probe`), the listing of a folder tree
(:func:`list_models`), loading one offline into a diffusers module (:func:`load`), and whether it fits the
loaded checkpoint (:func:`check_compatible`).

Layouts of a ControlNet (``ControlNetInfo.layout``):

* ``"ldm"`` — the original single file (lllyasviel's ``control_v11p_sd15_canny.pth`` and its
  ``.safetensors`` copies, SDXL ControlNets in the same layout): ``input_hint_block.*``,
  ``input_blocks.*``, ``middle_block.*``, ``zero_convs.N.0``, ``middle_block_out.0``, ``time_embed.*``
  (``label_emb.*`` for SDXL), with or without the ``control_model.`` prefix.  A file that also holds a
  whole SD model (ControlNet 1.0's ``control_sd15_*.pth``) gives its ``control_model.`` part.
* ``"diff"`` — the same keys plus a ``difference`` marker: every tensor that the base model's UNet also
  has is stored as the difference to it (the fp16 ``diff_control_sd15_*`` files); loading adds the loaded
  checkpoint's UNet, as sd-webui-controlnet does.
* ``"diffusers"`` — one file in diffusers' names (``controlnet_cond_embedding.*``, ``down_blocks.*``,
  ``controlnet_down_blocks.N``, ``controlnet_mid_block``), e.g. the SDXL ``diffusers_xl_*`` files.
* ``"diffusers_dir"`` — a diffusers folder: ``config.json`` + ``diffusion_pytorch_model.safetensors``.

T2I-Adapters: TencentARC's original full adapter (``conv_in``, ``body.N.block1/2``, ``body.N.in_conv``)
and diffusers' layout (``adapter.*``, a single file or a folder).  Light and style adapters, Control-LoRAs
and ControlLLLite files are refused with a sentence saying so.

The base model family is read from shapes (the add-embedding, the attention projection, the
cross-attention width) and compared with each registered family's shipped UNet config: no family is
named here.  Configs come from ``configs/controlnet/<family>/config.json`` with every size the weights
tell put over it.  Files are read by :mod:`modules.file_readers` only (pickles with ``weights_only``).
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from modules import families, file_readers, mf_keys

CONFIGS = families.CONFIGS_DIR / "controlnet"
LDM_PREFIX = "control_model."
HINT_KEY = "input_hint_block.0.weight"
DIFF_MARKER = "difference"
DIFFUSERS_HINT_KEY = "controlnet_cond_embedding.conv_in.weight"
SAFETENSORS_EXT = (".safetensors", ".sft")
PICKLE_EXT = (".pth", ".pt", ".ckpt", ".bin")
MODEL_EXT = SAFETENSORS_EXT + PICKLE_EXT
FOLDER_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
CONTROLNET, T2I_ADAPTER = "controlnet", "t2i_adapter"
_KIND_LABEL = {CONTROLNET: "ControlNet model", T2I_ADAPTER: "T2I-Adapter"}
_T2I_DOWNSCALE_XL = 16  # diffusers' full_adapter_xl: PixelUnshuffle(16); the SD 1.x full adapter: 8
_T2I_XL_INPUTS = (256, 768)  # conv_in inputs of SDXL adapters (1 or 3 channels x 16 x 16), sd-webui-controlnet


class ControlNetError(ValueError):
    """A control model file cannot be used; the message says why (the file's name in front)."""


@dataclass(frozen=True)
class ControlNetInfo:
    name: str
    path: Path
    kind: str            # CONTROLNET | T2I_ADAPTER
    base: str            # the registered family's name (families.get(base))
    layout: str          # "ldm" | "diff" | "diffusers" | "diffusers_dir" | "t2i_original"
    hint_channels: int
    prefix: str = ""     # "control_model." when the original layout keeps it
    context_dim: int | None = None  # cross-attention width (ControlNets)
    global_pool: bool = False       # "shuffle" ControlNets pool their output (a file-name fact, as A1111's)

    @property
    def family(self) -> families.ModelFamily:
        return families.get(self.base)

    @property
    def label(self) -> str:
        return f"{_KIND_LABEL[self.kind]} {self.name}"


class _Meta:
    """A tensor's shape without its data (what a header says), for the shape-reading helpers."""
    __slots__ = ("shape",)

    def __init__(self, shape):
        self.shape = tuple(int(d) for d in shape)

    @property
    def ndim(self) -> int:
        return len(self.shape)


# ------------------------------------------------------------------ reading


def _fail(path: Path, why: str) -> ControlNetError:
    return ControlNetError(f"{path.name}: {why}")


def _unwrap(obj, path: Path) -> dict:
    for _ in range(3):
        if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
            obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise _fail(path, f"does not hold a state dict (found {type(obj).__name__})")
    out = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not out:
        raise _fail(path, "holds no tensors")
    return out


def _read(path: Path, shapes_only: bool) -> dict:
    """{key: tensor} (or {key: _Meta} with ``shapes_only``, cheap: the header or a mapped pickle)."""
    ext = path.suffix.lower()
    try:
        if ext in SAFETENSORS_EXT:
            if shapes_only:
                header, _ = file_readers.read_header(path)
                return {k: _Meta(e["shape"]) for k, e in header.items() if k != "__metadata__"}
            return file_readers.read_safetensors(path)[0]
        if ext in PICKLE_EXT:
            mmap = shapes_only and file_readers.pickle_kind(path) == "zip"
            return _unwrap(file_readers.load_pickle(path, mmap=mmap), path)
    except file_readers.FileReadError as e:
        raise _fail(path, str(e)) from None
    raise _fail(path, f"unsupported file type {ext!r}; expected {', '.join(MODEL_EXT)}")


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise _fail(path, f"cannot read the config: {e}") from None
    if not isinstance(data, dict):
        raise _fail(path, "the config is not a JSON object")
    return data


def _folder_weights(folder: Path) -> Path:
    for name in FOLDER_WEIGHTS:
        if (folder / name).is_file():
            return folder / name
    raise _fail(folder, f"diffusers folder without weights ({' or '.join(FOLDER_WEIGHTS)})")


# ------------------------------------------------------------------ what a file is


def _has(keys, prefix: str) -> bool:
    return any(k.startswith(prefix) for k in keys)


def _refusal(keys) -> str | None:
    """Why a control-model file of a kind this loader does not take is refused, or None."""
    if "lora_controlnet" in keys:
        return "a Control-LoRA (Stability's ControlNet LoRA layout) is not supported yet"
    if any("lllite" in k for k in keys):
        return "a ControlLLLite model (kohya's layout) is not supported"
    if "style_embedding" in keys:
        return "a T2I style adapter is not supported"
    if "body.0.in_conv.weight" in keys and "conv_in.weight" not in keys:
        return "a light T2I-Adapter is not supported"
    if _has(keys, "down_blocks.0.motion_modules."):
        return "a SparseCtrl (AnimateDiff) model is not supported"
    return None


def _not_control(keys) -> str:
    sample = ", ".join(list(keys)[:3]) or "none"
    if _has(keys, families.ModelFamily.unet_prefix):
        return "not a ControlNet: this is a Stable Diffusion checkpoint; put it in models/Stable-diffusion"
    if any("lora_" in k for k in keys):
        return "not a ControlNet: this looks like a LoRA; put it in models/Lora"
    return f"not a ControlNet or T2I-Adapter model ({len(keys)} tensors, e.g. {sample})"


def _layout(keys) -> tuple[str, str, str]:
    """(kind, layout, prefix) of a single file's keys; ControlNetError(reason) when unusable."""
    why = _refusal(keys)
    if why:
        raise ControlNetError(why)
    if DIFFUSERS_HINT_KEY in keys:
        return CONTROLNET, "diffusers", ""
    for prefix in (LDM_PREFIX, ""):
        if prefix + HINT_KEY in keys:
            diff = DIFF_MARKER in keys or prefix + DIFF_MARKER in keys
            return CONTROLNET, ("diff" if diff else "ldm"), prefix
    if "adapter.conv_in.weight" in keys:
        return T2I_ADAPTER, "diffusers", "adapter."
    if "conv_in.weight" in keys and "body.0.block1.weight" in keys:
        return T2I_ADAPTER, "t2i_original", ""
    raise ControlNetError(_not_control(keys))


# ------------------------------------------------------------------ key maps


def _count(keys, pattern: str) -> int:
    rx = re.compile(pattern)
    found = {int(m.group(1)) for k in keys if (m := rx.match(k))}
    return max(found) + 1 if found else 0


def _input_blocks(cfg: dict) -> int:
    n = len(cfg["down_block_types"])
    layers = cfg["layers_per_block"]
    return 1 + (sum(layers) if isinstance(layers, (list, tuple)) else n * layers) + n - 1


def key_map(cfg: dict) -> mf_keys.PrefixMap:
    """diffusers ControlNetModel key -> original (LDM) key, for a model built from ``cfg``: the UNet's
    input and middle blocks as in :func:`modules.mf_keys.unet_key_map`, plus the hint encoder
    (``input_hint_block`` convs at even indices), the zero convs and the middle block's output conv."""
    m = mf_keys.unet_key_map({**cfg, "up_block_types": []})
    blocks = 2 * (len(cfg["conditioning_embedding_out_channels"]) - 1)
    m.add("controlnet_cond_embedding.conv_in.", "input_hint_block.0.")
    for i in range(blocks):
        m.add(f"controlnet_cond_embedding.blocks.{i}.", f"input_hint_block.{2 * (i + 1)}.")
    m.add("controlnet_cond_embedding.conv_out.", f"input_hint_block.{2 * (blocks + 1)}.")
    for i in range(_input_blocks(cfg)):
        m.add(f"controlnet_down_blocks.{i}.", f"zero_convs.{i}.0.")
    m.add("controlnet_mid_block.", "middle_block_out.0.")
    return m


def _outline_from_diffusers(keys) -> dict:
    """Enough of a config to name a diffusers-layout ControlNet's keys: levels, attention, hint blocks."""
    n = _count(keys, r"down_blocks\.(\d+)\.")
    types = ["CrossAttnDownBlock2D" if _has(keys, f"down_blocks.{i}.attentions.") else "DownBlock2D"
             for i in range(n)]
    hint = _count(keys, r"controlnet_cond_embedding\.blocks\.(\d+)\.")
    return {"down_block_types": types, "layers_per_block": _count(keys, r"down_blocks\.0\.resnets\.(\d+)\."),
            "conditioning_embedding_out_channels": [0] * (hint // 2 + 1)}


def _to_ldm_names(sd: dict, layout: str, prefix: str) -> dict:
    """The ControlNet's tensors (or shapes) under their original names, without the prefix."""
    if layout != "diffusers":
        n = len(prefix)
        out = {k[n:]: v for k, v in sd.items() if k.startswith(prefix)}
        out.pop(DIFF_MARKER, None)
        return out
    kmap = key_map(_outline_from_diffusers(sd))
    try:
        return {kmap(k): v for k, v in sd.items()}
    except KeyError as e:
        raise ControlNetError(f"tensor {e.args[0]} has no place in a ControlNet") from None


# ------------------------------------------------------------------ the base family and the config


@lru_cache(maxsize=None)
def _family_unet_config(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _features(u: dict) -> dict:
    """What tells the base model: the add-embedding, the projection style, the cross-attention width."""
    key = next((k for k in u if k.endswith("attn2.to_k.weight")), None)
    proj = next((k for k in u if k.endswith(".proj_in.weight")), None)
    return {"add_embed": "label_emb.0.0.weight" in u,
            "context_dim": int(u[key].shape[1]) if key else None,
            "linear": u[proj].ndim == 2 if proj else None}


def base_family(add_embed: bool, context_dim: int | None = None, linear: bool | None = None) -> families.ModelFamily:
    """The registered family whose shipped UNet config agrees with these features: the add-embedding and the
    projection style must agree, the cross-attention width decides between the rest (tiny test models have
    their own widths: then the first agreeing family)."""
    agree = []
    for fam in families.all_families():
        cfg = _family_unet_config(fam.base.configs / "unet" / "config.json")
        if not cfg or bool(cfg.get("addition_embed_type")) != add_embed:
            continue
        if linear is not None and bool(cfg.get("use_linear_projection")) != linear:
            continue
        agree.append((cfg.get("cross_attention_dim") == context_dim, fam))
    exact = [fam for hit, fam in agree if hit]
    if not (exact or agree):
        raise ControlNetError("its shapes match no registered model family")
    return (exact or [fam for _, fam in agree])[0]


def shipped_config(fam: families.ModelFamily) -> Path:
    """configs/controlnet/<family>/: the ControlNet config folder of a family."""
    folder = CONFIGS / fam.name
    if not (folder / "config.json").is_file():
        raise ControlNetError(f"no ControlNet config ships for {fam.label} ({folder / 'config.json'})")
    return folder


def _hint_channels(u: dict) -> list[int]:
    """conditioning_embedding_out_channels: the widths of conv_in and of every second block (the last conv,
    input_hint_block.14 for four widths, gives the UNet's width)."""
    n = _count(u, r"input_hint_block\.(\d+)\.weight")
    outs = [int(u[f"input_hint_block.{i}.weight"].shape[0]) for i in range(0, n, 2)
            if f"input_hint_block.{i}.weight" in u]
    return outs[:-1:2]


def _structure(u: dict, heads: int | None) -> dict:
    """The sizes of the UNet part (levels, depths, attention), read from shapes as for checkpoints."""
    from modules import model_formats as mf

    keys = list(u)
    levels = mf._unet_levels(u, keys)
    layers, down_types, depths = mf._down_path(levels)
    depths = mf._transformer_depths(keys, down_types, depths)
    channels = [lv["channels"] for lv in levels]
    return {"in_channels": int(u["input_blocks.0.0.weight"].shape[1]), "block_out_channels": channels,
            "layers_per_block": layers, "down_block_types": down_types,
            "transformer_layers_per_block": depths[0] if len(set(depths)) == 1 else depths,
            **mf._cross_attention(u, keys),
            "attention_head_dim": heads if heads is not None else [mf._heads(c) for c in channels]}


def _add_embedding(cfg: dict, u: dict, unet_config: dict | None) -> None:
    if "label_emb.0.0.weight" not in u:
        cfg.update(addition_embed_type=None, addition_time_embed_dim=None, projection_class_embeddings_input_dim=None)
        return
    width = int(u["label_emb.0.0.weight"].shape[1])
    cfg.update(addition_embed_type="text_time", projection_class_embeddings_input_dim=width)
    if unet_config and unet_config.get("addition_time_embed_dim"):  # the UNet it drives says how wide a time id is
        cfg["addition_time_embed_dim"] = unet_config["addition_time_embed_dim"]


def infer_config(u: dict, fam: families.ModelFamily, unet_config: dict | None = None,
                 global_pool: bool = False) -> dict:
    """The ControlNetModel config of original-layout tensors (or shapes) ``u``: the family's shipped config with
    every size the weights tell put over it.  ``unet_config``: the UNet it will drive (SDXL's time-id width)."""
    from modules.model_formats import ModelFormatError

    cfg = _family_unet_config(shipped_config(fam) / "config.json").copy()
    try:
        cfg.update(_structure(u, fam.unet_heads))
    except (ModelFormatError, KeyError) as e:
        raise ControlNetError(f"not a ControlNet this loader understands: {e}") from None
    hint = _hint_channels(u)
    if len(hint) < 2:
        raise ControlNetError("its hint encoder (input_hint_block) is incomplete")
    cfg.update(conditioning_channels=int(u[HINT_KEY].shape[1]), conditioning_embedding_out_channels=hint,
               global_pool_conditions=global_pool)
    _add_embedding(cfg, u, unet_config)
    return cfg


# ------------------------------------------------------------------ T2I-Adapters


def _t2i_from_original(sd: dict) -> dict:
    """TencentARC's full adapter (body.{level * blocks + j}) -> diffusers' names (adapter.body.{level}.resnets.{j})."""
    blocks = _count(sd, r"body\.(\d+)\.")
    per = max(1, blocks // 4)
    if any(".down_opt." in k or ".skep." in k for k in sd) or sd["body.0.block2.weight"].shape[-1] != 1:
        raise ControlNetError("this T2I-Adapter variant (convolution downsampling, skip convs or 3x3 block2) "
                              "has no diffusers equivalent; not supported")
    out = {}
    for k, v in sd.items():
        m = re.match(r"body\.(\d+)\.(in_conv\.|)(.*)", k)
        if m is None:
            out["adapter." + k] = v
            continue
        level, j = divmod(int(m.group(1)), per)
        out[f"adapter.body.{level}.in_conv.{m.group(3)}" if m.group(2) else
            f"adapter.body.{level}.resnets.{j}.{m.group(3)}"] = v
    return out


def _t2i_config(sd: dict) -> dict:
    cin = int(sd["adapter.conv_in.weight"].shape[1])
    xl = cin in _T2I_XL_INPUTS
    down = _T2I_DOWNSCALE_XL if xl else 8
    levels = _count(sd, r"adapter\.body\.(\d+)\.")
    return {"in_channels": cin // (down * down), "downscale_factor": down,
            "adapter_type": "full_adapter_xl" if xl else "full_adapter",
            "channels": [int(sd[f"adapter.body.{i}.resnets.0.block1.weight"].shape[0]) for i in range(levels)],
            "num_res_blocks": _count(sd, r"adapter\.body\.0\.resnets\.(\d+)\.")}


def _t2i_info(path: Path, name: str, cfg: dict, layout: str) -> ControlNetInfo:
    fam = base_family(cfg.get("adapter_type") == "full_adapter_xl")
    return ControlNetInfo(name=name, path=path, kind=T2I_ADAPTER, base=fam.name, layout=layout,
                          hint_channels=int(cfg.get("in_channels", 3)))


# ------------------------------------------------------------------ probe


def _global_pool(path: Path) -> bool:
    # the original "shuffle" ControlNet pools its output; only its yaml (and its name) says so
    return "shuffle" in path.stem.lower()


def _probe_controlnet(path: Path, sd: dict, layout: str, prefix: str) -> ControlNetInfo:
    u = _to_ldm_names(sd, layout, prefix)
    feats = _features(u)
    fam = base_family(feats["add_embed"], feats["context_dim"], feats["linear"])
    infer_config(u, fam)  # every structure check loading makes, on shapes only
    return ControlNetInfo(name=path.stem, path=path, kind=CONTROLNET, base=fam.name, layout=layout,
                          hint_channels=int(u[HINT_KEY].shape[1]), prefix=prefix,
                          context_dim=feats["context_dim"], global_pool=_global_pool(path))


def _probe_file(path: Path) -> ControlNetInfo:
    sd = _read(path, shapes_only=True)
    try:
        kind, layout, prefix = _layout(sd)
        if kind == CONTROLNET:
            return _probe_controlnet(path, sd, layout, prefix)
        names = _t2i_from_original(sd) if layout == "t2i_original" else sd
        return _t2i_info(path, path.stem, _t2i_config(names), layout)
    except (ControlNetError, KeyError, IndexError) as e:
        why = e.args[0] if isinstance(e, ControlNetError) else f"tensor {e.args[0]} is missing"
        raise _fail(path, why) from None


def _probe_folder(folder: Path) -> ControlNetInfo:
    if not (folder / "config.json").is_file():
        raise _fail(folder, "is a folder, not a model file (a diffusers ControlNet folder has a config.json)")
    cfg = _read_json(folder / "config.json")
    weights = _folder_weights(folder)
    _read(weights, shapes_only=True)  # a truncated or unsafe weights file is found now
    cls = cfg.get("_class_name")
    if cls == "T2IAdapter":
        return _t2i_info(folder, folder.name, cfg, "diffusers_dir")
    if cls != "ControlNetModel":
        raise _fail(folder, f"config.json describes a {cls or 'model without _class_name'}, not a ControlNetModel")
    try:
        fam = base_family(bool(cfg.get("addition_embed_type")), cfg.get("cross_attention_dim"),
                          bool(cfg.get("use_linear_projection")))
    except ControlNetError as e:
        raise _fail(folder, str(e)) from None
    return ControlNetInfo(name=folder.name, path=folder, kind=CONTROLNET, base=fam.name, layout="diffusers_dir",
                          hint_channels=int(cfg.get("conditioning_channels", 3)),
                          context_dim=cfg.get("cross_attention_dim"))


def probe(path) -> ControlNetInfo:
    """What a ControlNet / T2I-Adapter file or diffusers folder is, from its header (or mapped pickle) and
    config only.  ControlNetError (the file's name, then why) when it cannot be used."""
    path = Path(path)
    if path.is_dir():
        return _probe_folder(path)
    if not path.is_file():
        raise _fail(path, "file not found")
    return _probe_file(path)


def list_models(dirs) -> tuple[list[ControlNetInfo], list[tuple[Path, str]]]:
    """(usable models, [(path, reason)] of unusable ones) found below ``dirs``, recursively, sorted by path."""
    good, bad = [], []
    for path in _candidates(dirs):
        try:
            good.append(probe(path))
        except ControlNetError as e:
            bad.append((path, str(e)))
    return good, bad


def _candidates(dirs) -> list[Path]:
    found: list[Path] = []
    for d in dirs:
        if Path(d).is_dir():
            _walk(Path(d), found, top=True)
    return sorted(set(found))


def _walk(folder: Path, found: list, top: bool = False) -> None:
    if not top and ((folder / "config.json").is_file() or folder.suffix.lower() in MODEL_EXT):
        found.append(folder)  # a diffusers folder (or a folder misnamed as a model file): not searched further
        return
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        p = Path(entry.path)
        if entry.is_dir():
            _walk(p, found)
        elif p.suffix.lower() in MODEL_EXT:
            found.append(p)


# ------------------------------------------------------------------ compatibility


def check_compatible(info: ControlNetInfo, target) -> None:
    """Raise ControlNetError unless ``info`` can drive the loaded checkpoint.  ``target``: a ModelFamily, or a
    ModelSpec (then the cross-attention width is checked against its UNet too)."""
    fam = target if isinstance(target, families.ModelFamily) else families.family_of(target)
    if info.base != fam.name:
        raise ControlNetError(f"{info.label} is for {info.family.label}; the loaded checkpoint is {fam.label}")
    ucfg = getattr(target, "unet_config", None) or {}
    want = ucfg.get("cross_attention_dim")
    if info.context_dim and want and int(want) != int(info.context_dim):
        raise ControlNetError(f"{info.label} has cross-attention width {info.context_dim}; the loaded "
                              f"checkpoint's UNet has {want}")


# ------------------------------------------------------------------ loading


def _add_base(u: dict, base_unet_state: dict | None, info: ControlNetInfo) -> dict:
    """The diff layout: every tensor the base UNet also has is stored as the difference to it."""
    if base_unet_state is None:
        raise ControlNetError(f"{info.label} stores differences to the base model's UNet ('diff' layout); "
                              "loading it needs the loaded checkpoint's UNet")
    prefix = info.family.unet_prefix
    base = {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in base_unet_state.items()}
    out = {}
    for k, v in u.items():
        b = base.get(k)
        if b is not None and tuple(b.shape) != tuple(v.shape):
            raise ControlNetError(f"{info.label}: {k} has shape {tuple(v.shape)}, the loaded UNet's {tuple(b.shape)}")
        out[k] = v if b is None else v.float() + b.to(v.device).float()
    return out


def _gather(model_sd: dict, u: dict, kmap, info: ControlNetInfo, dtype) -> dict:
    out, used, missing = {}, set(), []
    for key, want in model_sd.items():
        lk = kmap(key)
        if lk not in u:
            missing.append(lk)
            continue
        if tuple(u[lk].shape) != tuple(want.shape):
            raise ControlNetError(f"{info.label}: {lk} has shape {tuple(u[lk].shape)}, the model expects "
                                  f"{tuple(want.shape)}")
        used.add(lk)
        out[key] = u[lk].to(dtype) if u[lk].is_floating_point() else u[lk]
    extra = sorted(set(u) - used)
    if missing or extra:
        raise ControlNetError(f"{info.label}: {len(missing)} tensors missing (e.g. {', '.join(missing[:3])}), "
                              f"{len(extra)} left over (e.g. {', '.join(extra[:3])})")
    return out


def _build(cls, cfg: dict, weights: dict, info: ControlNetInfo, device):
    from accelerate import init_empty_weights

    with init_empty_weights():
        model = cls.from_config(cfg)
    try:
        model.load_state_dict(weights, strict=True, assign=True)
    except RuntimeError as e:
        raise ControlNetError(f"{info.label}: weights do not fit the model: {e}") from None
    return model.to(device).eval()  # the weights are in dtype already


def _load_controlnet(info: ControlNetInfo, base_unet_state, dtype, device, unet_config):
    from diffusers import ControlNetModel

    u = _to_ldm_names(_read(info.path, shapes_only=False), info.layout, info.prefix)
    if info.layout == "diff":
        u = _add_base(u, base_unet_state, info)
    cfg = infer_config(u, info.family, unet_config, info.global_pool)
    with torch.device("meta"):
        shapes = ControlNetModel.from_config(cfg).state_dict()
    return _build(ControlNetModel, cfg, _gather(shapes, u, key_map(cfg), info, dtype), info, device)


def _load_folder(info: ControlNetInfo, dtype, device):
    from diffusers import ControlNetModel, T2IAdapter

    cfg = _read_json(info.path / "config.json")
    sd = _read(_folder_weights(info.path), shapes_only=False)
    cls = T2IAdapter if info.kind == T2I_ADAPTER else ControlNetModel
    return _build(cls, cfg, {k: v.to(dtype) for k, v in sd.items()}, info, device)


def _load_t2i(info: ControlNetInfo, dtype, device):
    from diffusers import T2IAdapter

    sd = _read(info.path, shapes_only=False)
    sd = _t2i_from_original(sd) if info.layout == "t2i_original" else sd
    return _build(T2IAdapter, _t2i_config(sd), {k: v.to(dtype) for k, v in sd.items()}, info, device)


def load(info: ControlNetInfo, base_unet_state: dict | None = None, dtype=torch.float32, device="cpu",
         unet_config: dict | None = None) -> Any:
    """A ``diffusers.ControlNetModel`` (or ``T2IAdapter``) of ``info``, offline, strictly loaded.
    ``base_unet_state``: the loaded checkpoint's UNet in the original layout (with or without the family's
    UNet prefix), needed by the diff layout; ``unet_config``: the loaded UNet's config (SDXL time-id width)."""
    try:
        if info.layout == "diffusers_dir":
            return _load_folder(info, dtype, device)
        if info.kind == T2I_ADAPTER:
            return _load_t2i(info, dtype, device)
        return _load_controlnet(info, base_unet_state, dtype, device, unet_config)
    except ControlNetError as e:
        msg = str(e)
        raise ControlNetError(msg if msg.startswith((info.label, info.path.name)) else f"{info.label}: {msg}") from None
