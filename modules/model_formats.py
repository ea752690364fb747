"""Offline Stable Diffusion model formats: read checkpoints, tell what they
are from their tensors, build diffusers/transformers modules, write them back.

Nothing here touches the network: every config comes from ``configs/`` or is
inferred from tensor shapes, tokenizers come from ``configs/tokenizer``, and
``from_pretrained`` is only ever called with ``local_files_only=True``.

What differs between kinds of model (SD 1.x, 2.x, XL: key prefixes, text encoders,
head counts, extra UNet inputs) is asked of the registered model families
(:mod:`modules.families`); this module is the generic reader, builder and writer.

Public API
    ModelFormatError, read_state_dict, detect_architecture,
    ModelSpec, SDComponents, build_components, load_diffusers_folder,
    load_vae_state_dict, to_ldm_state_dict, save_checkpoint,
    load_tokenizer, load_arch_info, load_arch_configs, write_diffusers_config_folder

Detection notes
    * Only keys and shapes are used, never file names or sizes.
    * SD 2.x 768 v-prediction and 512 epsilon weights have identical shapes.
      Without a hint an SD2 file is taken as ``sd2-v`` (v_prediction, 768),
      which is what most SD 2.1 files are.  Hints, strongest first: the
      ``sidecar`` argument (a ``name.yaml``/``name.json`` next to the file), the
      safetensors metadata key ``sd_webui_config`` (JSON), then
      ``modelspec.prediction_type`` / ``modelspec.architecture`` /
      ``modelspec.resolution`` and kohya's ``ss_v_parameterization`` metadata,
      and a ``v_pred`` marker tensor in the state dict.
    * Attention head counts are not stored in weights.  Rule used: the family's
      ``unet_heads`` (SD 1.x: 8 everywhere), else channels // 64 (min 1); CLIP text
      encoders -> hidden // 64 (min 1).  All shipped and tiny models follow it.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from modules import families, heavy_imports, mf_keys

heavy_imports.ensure()  # whichever thread imports this module first takes diffusers/transformers in one go

CONFIGS_DIR = families.CONFIGS_DIR
TOKENIZER_DIR = CONFIGS_DIR / "tokenizer"

# the single-file layout's UNet and VAE prefixes (every registered family so far; a family may differ)
UNET_PREFIX = families.ModelFamily.unet_prefix
VAE_PREFIX = families.ModelFamily.vae_prefix

# Tensors under a text-encoder prefix that have no place in the transformers
# module; they are kept in SDComponents.extras and written back.
_TEXT_EXTRA_LEAVES = ("position_ids", "logit_scale", "text_projection", "attn_mask")


class ModelFormatError(Exception):
    """A model file cannot be used; the message says which file and why."""


# --------------------------------------------------------------------------- data


@dataclass
class ModelSpec:
    arch: str                # the variant (configs/<arch>/), e.g. "sd1-inpaint"
    prediction_type: str
    native_resolution: int
    scaling_factor: float
    unet_config: dict
    vae_config: dict
    text_encoder_configs: list[dict]
    scheduler_config: dict
    is_inpaint: bool
    # which SDComponents.text_encoders entry each entry of text_encoder_configs fills
    text_encoder_names: list[str] = field(default_factory=lambda: ["text_encoder"])
    family: str = families.DEFAULT  # the registered family (modules.families) the variant belongs to
    clip_skip: int = 1  # default: 1 = last layer, 2 = penultimate
    tokenizer_pad_tokens: dict[str, str] = field(default_factory=dict)

    @property
    def model_family(self) -> families.ModelFamily:
        return families.get(self.family)

    @property
    def variant(self) -> families.Variant:
        return self.model_family.variant(self.arch)

    @property
    def text_slots(self) -> tuple[families.TextEncoderSlot, ...]:
        return self.model_family.text_encoders(self.variant)


@dataclass
class SDComponents:
    spec: ModelSpec
    unet: Any  # diffusers.UNet2DConditionModel
    vae: Any  # diffusers.AutoencoderKL
    # transformers CLIP text models and their tokenizers, keyed as the family's text-encoder slots say
    text_encoders: dict[str, Any] = field(default_factory=dict)
    tokenizers: dict[str, Any] = field(default_factory=dict)
    # LDM tensors with no place in the modules (SD2's OpenCLIP text_projection,
    # logit_scale, position_ids ...), full LDM keys; written back on save.
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    execution_device: Any = None  # where the models run (set by ModelManager; offloaded weights live elsewhere)
    compile_pending: bool = False  # --compile: the UNet is wrapped and the next job pays for compiling it

    def named_models(self) -> list[tuple[str, Any]]:
        """(name, module) of every model, in the order a job uses them: text encoders, UNet, VAE."""
        out = [(name, m) for name, m in self.text_encoders.items() if m is not None]
        return out + [("unet", self.unet), ("vae", self.vae)]

    # diffusers' pipelines and the tests name the first two encoders and tokenizers as attributes
    text_encoder = property(lambda self: self.text_encoders.get("text_encoder"))
    text_encoder_2 = property(lambda self: self.text_encoders.get("text_encoder_2"))
    tokenizer = property(lambda self: self.tokenizers.get("tokenizer"))
    tokenizer_2 = property(lambda self: self.tokenizers.get("tokenizer_2"))


def _assemble(spec: ModelSpec, unet, vae, texts: dict, toks: dict, extras: dict | None = None) -> SDComponents:
    """SDComponents from the models and tokenizers keyed by their slot names."""
    return SDComponents(spec=spec, unet=unet, vae=vae, text_encoders=dict(texts), tokenizers=dict(toks),
                        extras=extras or {})


# ------------------------------------------------------------------- config files


def _read_json(path: Path) -> dict:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def _config_dir(arch: str) -> Path:
    try:
        return families.variant(arch).configs
    except KeyError as e:
        raise ModelFormatError(str(e.args[0])) from None


def load_arch_info(arch: str) -> dict:
    """configs/<arch>/arch.json: native_resolution, prediction_type, scaling_factor, clip_skip, tokenizers."""
    path = _config_dir(arch) / "arch.json"
    if not path.is_file():
        raise ModelFormatError(f"unknown architecture {arch!r} (no {path})")
    return _read_json(path)


def load_arch_configs(arch: str) -> dict[str, dict]:
    """The shipped diffusers-format configs of ``arch``: keys unet, vae,
    scheduler, model_index and one per text encoder (text_encoder, text_encoder_2) where present."""
    base = _config_dir(arch)
    out = {
        "unet": _read_json(base / "unet" / "config.json"),
        "vae": _read_json(base / "vae" / "config.json"),
        "scheduler": _read_json(base / "scheduler" / "scheduler_config.json"),
        "model_index": _read_json(base / "model_index.json"),
    }
    v = families.variant(arch)
    for slot in families.get(v.family).text_encoders(v):
        p = base / slot.attr / "config.json"
        if p.is_file():
            out[slot.attr] = _read_json(p)
    return out


def load_tokenizer(pad_token: str = "<|endoftext|>"):
    """The CLIP BPE tokenizer from configs/tokenizer.

    SD1 and SDXL's first encoder pad with ``<|endoftext|>`` (49407); SD2 and
    SDXL's OpenCLIP encoder pad with ``!`` (id 0)."""
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(TOKENIZER_DIR), local_files_only=True, pad_token=pad_token)


# ----------------------------------------------------------------- reading files


_SAFETENSORS_EXT = (".safetensors", ".sft")
_PICKLE_EXT = (".ckpt", ".pt", ".pth", ".bin")


def read_state_dict(path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a single-file checkpoint -> (tensors, metadata).

    .safetensors: tensors + the header's ``__metadata__``.  .ckpt/.pt/.pth/.bin:
    ``torch.load(weights_only=True)`` (never runs code from the file), the
    ``state_dict`` entry unwrapped, non-tensor entries dropped, metadata {}.
    """
    path = Path(path)
    name = path.name
    if path.is_dir():
        raise ModelFormatError(
            f"{name}: is a folder; a diffusers-format folder is opened with load_diffusers_folder()"
        )
    if not path.is_file():
        raise ModelFormatError(f"{name}: file not found ({path})")
    ext = path.suffix.lower()
    if ext in _SAFETENSORS_EXT:
        return _read_safetensors(path)
    if ext in _PICKLE_EXT:
        return _read_pickle(path), {}
    raise ModelFormatError(
        f"{name}: unsupported file type {ext!r}; expected .safetensors, .ckpt, .pt, .pth or .bin"
    )


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from modules.file_readers import FileReadError, read_safetensors

    try:
        return read_safetensors(path)
    except FileReadError as e:
        raise ModelFormatError(f"{path.name}: {e}") from None


def _read_pickle(path: Path) -> dict[str, torch.Tensor]:
    from modules.file_readers import FileReadError, load_pickle

    try:
        obj = load_pickle(path)
    except FileReadError as e:
        raise ModelFormatError(f"{path.name}: {e}") from None
    return state_dict_of(obj, path.name)


def state_dict_of(obj, name: str) -> dict[str, torch.Tensor]:
    """The tensors of what a checkpoint pickle held (its ``state_dict`` entry unwrapped, non-tensors dropped)."""
    for _ in range(3):
        if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
            obj = obj["state_dict"]
        else:
            break
    if not isinstance(obj, dict):
        raise ModelFormatError(f"{name}: does not contain a state dict (found {type(obj).__name__})")
    tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not tensors:
        raise ModelFormatError(f"{name}: contains no tensors")
    return tensors


# ------------------------------------------------------------------ inference


def _sub(sd: dict, prefix: str) -> dict[str, torch.Tensor]:
    n = len(prefix)
    return {k[n:]: v for k, v in sd.items() if k.startswith(prefix)}


def _count_index(keys, pattern: str) -> int:
    """Number of distinct integers N matching ``pattern`` (a regex with one group)."""
    rx = re.compile(pattern)
    found = {int(m.group(1)) for k in keys if (m := rx.match(k))}
    return max(found) + 1 if found else 0


def _heads(channels: int) -> int:
    return max(1, channels // 64)


def _infer_unet(u: dict[str, torch.Tensor], heads: int | None = None) -> dict:
    """diffusers UNet2DConditionModel config fields derived from LDM UNet shapes (``heads``: attention heads
    per layer, or None for channels // 64).  The family adds its extra embeddings (finish_unet_config)."""
    keys = list(u)
    try:
        conv_in = u["input_blocks.0.0.weight"]
        conv_out = u["out.2.weight"]
    except KeyError as exc:
        raise ModelFormatError(f"UNet weights incomplete: missing {exc.args[0]}") from exc
    levels = _unet_levels(u, keys)
    layers_per_block, down_types, depths = _down_path(levels)
    up_types = _up_path(keys, down_types, depths, layers_per_block)
    channels = [lv["channels"] for lv in levels]
    depths = _transformer_depths(keys, down_types, depths)
    cfg: dict[str, Any] = {
        "in_channels": int(conv_in.shape[1]),
        "out_channels": int(conv_out.shape[0]),
        "block_out_channels": channels,
        "layers_per_block": layers_per_block,
        "down_block_types": down_types,
        "up_block_types": up_types,
        **_cross_attention(u, keys),
        "transformer_layers_per_block": depths[0] if len(set(depths)) == 1 else depths,
    }
    cfg["attention_head_dim"] = heads if heads is not None else [_heads(c) for c in channels]
    temb = u["time_embed.0.weight"]
    if int(temb.shape[0]) != 4 * channels[0]:
        cfg["time_embedding_dim"] = int(temb.shape[0])
    return cfg


def _unet_levels(u: dict, keys: list[str]) -> list[dict]:
    """The down path's resolution levels: ResBlocks, their channels and transformer depths."""
    n_in = _count_index(keys, r"input_blocks\.(\d+)\.")
    levels: list[dict] = []
    cur = {"layers": 0, "attn": [], "channels": None}
    for k in range(1, n_in):
        if f"input_blocks.{k}.0.op.weight" in u:
            levels.append(cur)
            cur = {"layers": 0, "attn": [], "channels": None}
            continue
        w = u.get(f"input_blocks.{k}.0.in_layers.2.weight")
        if w is None:
            raise ModelFormatError(f"UNet input block {k} is neither a ResBlock nor a Downsample")
        cur["layers"] += 1
        cur["channels"] = int(w.shape[0])
        cur["attn"].append(_count_index(keys, rf"input_blocks\.{k}\.1\.transformer_blocks\.(\d+)\."))
    levels.append(cur)
    if any(lv["layers"] == 0 for lv in levels):
        raise ModelFormatError("UNet has an empty resolution level")
    return levels


def _down_path(levels: list[dict]) -> tuple[int, list[str], list[int]]:
    """(ResBlocks per level, down block types, transformer depth per level)."""
    layers = {lv["layers"] for lv in levels}
    if len(layers) != 1:
        raise ModelFormatError(f"UNet levels have different numbers of ResBlocks {sorted(layers)}; not supported")
    down_types, depths = [], []
    for lv in levels:
        found = set(lv["attn"])
        if len(found) != 1:
            raise ModelFormatError("UNet level mixes blocks with and without attention; not supported")
        d = found.pop()
        down_types.append("CrossAttnDownBlock2D" if d else "DownBlock2D")
        depths.append(d)
    return layers.pop(), down_types, depths


def _up_path(keys: list[str], down_types: list[str], depths: list[int], layers_per_block: int) -> list[str]:
    """The up block types, checked to mirror the down path."""
    n = len(down_types)
    n_out = _count_index(keys, r"output_blocks\.(\d+)\.")
    if n_out != n * (layers_per_block + 1):
        raise ModelFormatError(
            f"UNet has {n_out} output blocks, expected {n * (layers_per_block + 1)} for "
            f"{n} levels of {layers_per_block} ResBlocks"
        )
    up_types = []
    for i in range(n):
        blocks = range(i * (layers_per_block + 1), (i + 1) * (layers_per_block + 1))
        found = {_count_index(keys, rf"output_blocks\.{k}\.1\.transformer_blocks\.(\d+)\.") for k in blocks}
        if len(found) != 1:
            raise ModelFormatError("UNet up level mixes blocks with and without attention; not supported")
        d = found.pop()
        mirror = depths[n - 1 - i] if down_types[n - 1 - i].startswith("CrossAttn") else 0
        if d != mirror:
            raise ModelFormatError("UNet up path does not mirror the down path; not supported")
        up_types.append("CrossAttnUpBlock2D" if d else "UpBlock2D")
    return up_types


def _transformer_depths(keys: list[str], down_types: list[str], depths: list[int]) -> list[int]:
    """transformer_layers_per_block with placeholders for levels without attention.

    diffusers gives the middle block transformer_layers_per_block[-1] layers.  Levels without attention
    carry a placeholder depth: the common depth when all attention levels and the middle agree (SD1/2: 1,
    SDXL refiner: 4), else 1 (SDXL base: [1, 2, 10]); the last level must carry the middle's."""
    mid_depth = _count_index(keys, r"middle_block\.1\.transformer_blocks\.(\d+)\.")
    if mid_depth == 0:
        raise ModelFormatError("UNet middle block has no attention; not supported")
    used = {d for d in depths if d} | {mid_depth}
    fill = used.pop() if len(used) == 1 else 1
    out = [d if d else fill for d in depths]
    if not down_types[-1].startswith("CrossAttn"):
        out[-1] = mid_depth
    if mid_depth != out[-1]:
        raise ModelFormatError(
            f"UNet middle block has {mid_depth} transformer layers but the last level has {out[-1]}; not supported"
        )
    return out


def _cross_attention(u: dict, keys: list[str]) -> dict:
    """Cross-attention width and projection style, from the first transformer found."""
    attn_prefix = next((k[: -len("attn2.to_k.weight")] for k in keys if k.endswith("attn2.to_k.weight")), None)
    if attn_prefix is None:
        raise ModelFormatError("UNet has no cross-attention layers")
    tprefix = attn_prefix.split("transformer_blocks.")[0]
    return {"cross_attention_dim": int(u[attn_prefix + "attn2.to_k.weight"].shape[1]),
            "use_linear_projection": u[tprefix + "proj_in.weight"].ndim == 2}


def _infer_vae(v: dict[str, torch.Tensor]) -> dict:
    """AutoencoderKL config fields from LDM VAE shapes (keys without prefix)."""
    keys = list(v)
    try:
        n = _count_index(keys, r"encoder\.down\.(\d+)\.")
        layers = _count_index(keys, r"encoder\.down\.0\.block\.(\d+)\.")
        channels = [int(v[f"encoder.down.{i}.block.{layers - 1}.conv2.weight"].shape[0]) for i in range(n)]
        cfg = {
            "in_channels": int(v["encoder.conv_in.weight"].shape[1]),
            "out_channels": int(v["decoder.conv_out.weight"].shape[0]),
            "block_out_channels": channels,
            "layers_per_block": layers,
            "latent_channels": int(v["post_quant_conv.weight"].shape[0]),
            "down_block_types": ["DownEncoderBlock2D"] * n,
            "up_block_types": ["UpDecoderBlock2D"] * n,
            "mid_block_add_attention": "encoder.mid.attn_1.q.weight" in v,
        }
    except (KeyError, IndexError) as exc:
        raise ModelFormatError(f"VAE weights incomplete or unrecognised: missing {exc}") from exc
    if n == 0 or layers == 0:
        raise ModelFormatError("VAE weights incomplete: no encoder blocks found")
    return cfg


def _infer_clip(t: dict[str, torch.Tensor], layout: str) -> dict:
    """transformers CLIPTextConfig fields from an LDM text-encoder sub-dict."""
    try:
        if layout == "hf":
            tok = t["text_model.embeddings.token_embedding.weight"]
            pos = t["text_model.embeddings.position_embedding.weight"]
            layers = _count_index(t, r"text_model\.encoder\.layers\.(\d+)\.")
            inter = t["text_model.encoder.layers.0.mlp.fc1.weight"].shape[0]
            proj = t.get("text_projection.weight")
            proj_dim = int(proj.shape[0]) if proj is not None else int(tok.shape[1])
            act = "quick_gelu"
        else:
            tok = t["token_embedding.weight"]
            pos = t["positional_embedding"]
            layers = _count_index(t, r"transformer\.resblocks\.(\d+)\.")
            inter = t["transformer.resblocks.0.mlp.c_fc.weight"].shape[0]
            proj = t.get("text_projection")
            proj_dim = int(proj.shape[1]) if proj is not None else int(tok.shape[1])
            act = "gelu"
    except KeyError as exc:
        raise ModelFormatError(f"text encoder weights incomplete: missing {exc.args[0]}") from exc
    hidden = int(tok.shape[1])
    return {
        "hidden_size": hidden,
        "intermediate_size": int(inter),
        "num_hidden_layers": layers,
        "num_attention_heads": _heads(hidden),
        "max_position_embeddings": int(pos.shape[0]),
        "vocab_size": int(tok.shape[0]),
        "hidden_act": act,
        "projection_dim": proj_dim,
    }


def _describe_non_sd(sd: dict) -> str:
    keys = list(sd)
    sample = ", ".join(keys[:3])
    if any("lora_" in k or ".lora_down." in k or ".lora_A." in k or "lora_unet" in k for k in keys):
        return f"this looks like a LoRA (keys such as {sample}); put it in models/Lora"
    if any(k.startswith("unet.") or k.startswith("down_blocks.") for k in keys):
        return f"keys are in diffusers layout (e.g. {sample}); open the diffusers folder instead"
    vae_like = any(k.startswith(VAE_PREFIX + "encoder.") or k.startswith("encoder.conv_in") for k in keys)
    if vae_like:
        return "this looks like a VAE file; put it in models/VAE"
    if any("string_to_param" in k or k == "emb_params" for k in keys):
        return "this looks like a textual-inversion embedding; put it in embeddings/"
    return f"no UNet weights ({UNET_PREFIX}*) found; {len(keys)} tensors, e.g. {sample or 'none'}"


def _flatten_sidecar(sidecar: dict | None) -> dict:
    """Accept flat {prediction_type, native_resolution, scaling_factor, unet_config...}
    or an original LDM YAML ({model: {params: {parameterization, scale_factor ...}}})."""
    if not sidecar:
        return {}
    out: dict[str, Any] = {}
    params = (sidecar.get("model") or {}).get("params") if isinstance(sidecar.get("model"), dict) else None
    if isinstance(params, dict):
        # the original LatentDiffusion code defaults to "eps" when the key is absent
        out["prediction_type"] = "v_prediction" if params.get("parameterization", "eps") == "v" else "epsilon"
        if "scale_factor" in params:
            out["scaling_factor"] = float(params["scale_factor"])
    for k, v in sidecar.items():
        if k == "model":
            continue
        out[k] = v
    aliases = {"unet": "unet_config", "vae": "vae_config", "scheduler": "scheduler_config", "resolution": "native_resolution"}
    for a, b in aliases.items():
        if a in out and b not in out:
            out[b] = out.pop(a)
    if "prediction_type" in out:
        out["prediction_type"] = _norm_prediction(out["prediction_type"])
    return out


def _norm_prediction(value) -> str:
    v = str(value).strip().lower()
    if v in ("v", "v_prediction", "v-prediction", "vpred", "v_pred", "velocity", "true"):
        return "v_prediction"
    if v in ("eps", "epsilon", "noise", "false"):
        return "epsilon"
    raise ModelFormatError(f"unknown prediction_type {value!r} (expected epsilon or v_prediction)")


def _hints_from_metadata(metadata: dict | None, sd: dict) -> dict:
    out: dict[str, Any] = {}
    md = metadata or {}
    arch = str(md.get("modelspec.architecture", "")).lower()
    if arch:
        if arch.endswith("-v") or "768-v" in arch:
            out["prediction_type"] = "v_prediction"
        elif "v2-512" in arch:
            out["prediction_type"] = "epsilon"
            out["native_resolution"] = 512
    res = md.get("modelspec.resolution")
    if res:
        m = re.match(r"\s*(\d+)\s*[x,]\s*(\d+)", str(res))
        if m:
            out["native_resolution"] = int(m.group(1))
    if md.get("ss_v_parameterization") is not None:
        out["prediction_type"] = _norm_prediction(md["ss_v_parameterization"])
    if md.get("modelspec.prediction_type"):
        try:
            out["prediction_type"] = _norm_prediction(md["modelspec.prediction_type"])
        except ModelFormatError:
            pass
    if "v_pred" in sd:
        out["prediction_type"] = "v_prediction"
    cfg = md.get("sd_webui_config")
    if cfg:
        try:
            out.update(_flatten_sidecar(json.loads(cfg)))
        except (ValueError, TypeError) as exc:
            raise ModelFormatError(f"metadata sd_webui_config is not valid JSON: {exc}") from exc
    return out


def detect_architecture(state_dict, metadata: dict | None = None, sidecar: dict | None = None) -> ModelSpec:
    """Tell which Stable Diffusion model ``state_dict`` (LDM single-file layout)
    holds and infer every module config from tensor shapes.  The registered model
    families (:mod:`modules.families`) say which keys are theirs.

    Raises ModelFormatError("not a Stable Diffusion checkpoint: ...") for
    LoRAs, VAEs, embeddings, random tensors etc."""
    found = families.match_checkpoint(state_dict.keys())
    if found is None:
        if UNET_PREFIX + "input_blocks.0.0.weight" in state_dict:
            raise ModelFormatError("not a complete Stable Diffusion checkpoint: it has a UNet but no text encoder "
                                   "(cond_stage_model.*)")
        raise ModelFormatError("not a Stable Diffusion checkpoint: " + _describe_non_sd(state_dict))
    fam, base = found
    sd = fam.normalize_keys(state_dict)
    unet = _sub(sd, fam.unet_prefix)
    if not any(k.startswith(fam.vae_prefix) for k in sd):
        raise ModelFormatError(f"not a complete Stable Diffusion checkpoint: it has no VAE ({fam.vae_prefix}*)")
    ucfg = _infer_unet(unet, fam.unet_heads)
    vcfg = _infer_vae(_sub(sd, fam.vae_prefix))
    slots = fam.text_encoders(base)
    te_cfgs = [_infer_clip(_sub(sd, slot.prefix), slot.layout) for slot in slots]
    in_ch = ucfg["in_channels"]
    if in_ch not in (4, 9):
        raise ModelFormatError(
            f"unsupported Stable Diffusion variant: UNet takes {in_ch} input channels "
            "(4 = normal, 9 = inpainting; others such as depth or instruct-pix2pix are not supported)"
        )
    fam.finish_unet_config(ucfg, unet, te_cfgs, base)
    hints = _hints_from_metadata(metadata, sd)
    hints.update(_flatten_sidecar(sidecar))
    return _make_spec(fam.variant_for(base, ucfg, hints), ucfg, vcfg, te_cfgs, hints)


def _make_spec(variant: families.Variant, ucfg, vcfg, te_cfgs, hints) -> ModelSpec:
    info = variant.info
    shipped = load_arch_configs(variant.name)
    slots = families.get(variant.family).text_encoders(variant)
    prediction = hints.get("prediction_type", info["prediction_type"])
    resolution = int(hints.get("native_resolution", info["native_resolution"]))
    scaling = float(hints.get("scaling_factor", info["scaling_factor"]))

    unet_config = dict(shipped["unet"])
    unet_config.update(ucfg)
    down = 2 ** (len(vcfg["block_out_channels"]) - 1)
    unet_config["sample_size"] = resolution // down
    vae_config = dict(shipped["vae"])
    vae_config.update(vcfg)
    vae_config["sample_size"] = resolution
    vae_config["scaling_factor"] = scaling
    text_cfgs = []
    for slot, inferred in zip(slots, te_cfgs):
        c = dict(shipped[slot.attr])
        c.update(inferred)
        c["architectures"] = ["CLIPTextModelWithProjection" if slot.with_projection else "CLIPTextModel"]
        if c["vocab_size"] <= max(c.get("bos_token_id", 0), c.get("eos_token_id", 0)):
            c["bos_token_id"], c["eos_token_id"] = 0, 2  # vocab without SD's special ids
        text_cfgs.append(c)
    sched = dict(shipped["scheduler"])
    sched["prediction_type"] = prediction

    for key, target in (("unet_config", unet_config), ("vae_config", vae_config), ("scheduler_config", sched)):
        extra = hints.get(key)
        if isinstance(extra, dict):
            target.update(extra)
    if isinstance(hints.get("text_encoder_configs"), list):
        for c, extra in zip(text_cfgs, hints["text_encoder_configs"]):
            if isinstance(extra, dict):
                c.update(extra)
    if "scaling_factor" in hints:
        vae_config["scaling_factor"] = scaling

    pads = {k: v["pad_token"] for k, v in info.get("tokenizers", {}).items()}
    return ModelSpec(
        arch=variant.name,
        prediction_type=prediction,
        native_resolution=resolution,
        scaling_factor=float(vae_config["scaling_factor"]),
        unet_config=unet_config,
        vae_config=vae_config,
        text_encoder_configs=text_cfgs,
        scheduler_config=sched,
        is_inpaint=variant.inpaint,
        text_encoder_names=[slot.attr for slot in slots],
        family=variant.family,
        clip_skip=int(hints.get("clip_skip", info.get("clip_skip", 1))),
        tokenizer_pad_tokens=pads,
    )


# ------------------------------------------------------------- building modules


def _empty_models(spec: ModelSpec):
    """Instantiate all modules with parameters on the meta device (no init cost)."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(spec.unet_config)
        vae = AutoencoderKL.from_config(spec.vae_config)
        texts = {}
        for slot, cfg in zip(spec.text_slots, spec.text_encoder_configs):
            conf = CLIPTextConfig.from_dict(_clip_config_dict(cfg))
            cls = CLIPTextModelWithProjection if slot.with_projection else CLIPTextModel
            texts[slot.attr] = cls(conf)
    return unet, vae, texts


def _clip_config_dict(cfg: dict) -> dict:
    return {k: v for k, v in cfg.items() if k not in ("architectures", "model_type", "_name_or_path")}


def _tokenizers_for(spec: ModelSpec) -> dict[str, Any]:
    return {slot.tokenizer: load_tokenizer(spec.tokenizer_pad_tokens.get(slot.tokenizer, slot.pad_token))
            for slot in spec.text_slots}


def _cast(t: torch.Tensor, dtype) -> torch.Tensor:
    return t.to(dtype) if t.is_floating_point() else t


def _load_into(module, tensors: dict[str, torch.Tensor], what: str) -> None:
    try:
        module.load_state_dict(tensors, strict=True, assign=True)
    except RuntimeError as exc:
        raise ModelFormatError(f"{what}: weights do not fit the inferred model: {exc}") from exc


def _gather(model_keys, lookup, src: dict, used: set, what: str, expected_shapes: dict) -> dict:
    out, missing = {}, []
    for key in model_keys:
        try:
            t = lookup(key)
        except KeyError as exc:
            missing.append(str(exc.args[0]))
            continue
        want = tuple(expected_shapes[key])
        if tuple(t.shape) != want:
            # 1x1 conv <-> linear (VAE attention in LDM vs diffusers) is the only reshape allowed
            if tuple(t.shape) == want + (1, 1) or tuple(t.shape) + (1, 1) == want:
                t = t.reshape(want)
            else:
                raise ModelFormatError(
                    f"{what}: tensor for {key} has shape {tuple(t.shape)}, the model expects {tuple(want)}"
                )
        out[key] = t
    if missing:
        raise ModelFormatError(
            f"{what}: {len(missing)} tensors missing from the checkpoint, e.g. {', '.join(missing[:5])}"
        )
    return out


def _unet_sd_from_ldm(unet, sd: dict, spec: ModelSpec, dtype) -> dict:
    fam = spec.model_family
    kmap = fam.unet_key_map(spec.unet_config)
    prefix = fam.unet_prefix
    used: set[str] = set()
    shapes = {k: v.shape for k, v in unet.state_dict().items()}

    def lookup(k):
        lk = prefix + kmap(k)
        if lk not in sd:
            raise KeyError(lk)
        used.add(lk)
        return _cast(sd[lk], dtype)

    out = _gather(shapes, lookup, sd, used, "UNet", shapes)
    extra = [k for k in sd if k.startswith(prefix) and k not in used]
    if extra:
        raise ModelFormatError(
            f"UNet: {len(extra)} checkpoint tensors do not belong to the inferred model, e.g. {', '.join(extra[:5])}"
        )
    return out


def _vae_sd_from_ldm(vae_model, v: dict, vae_config: dict, dtype, what="VAE") -> dict:
    """v: LDM VAE tensors without prefix."""
    kmap = mf_keys.vae_key_map(vae_config)
    used: set[str] = set()
    shapes = {k: s.shape for k, s in vae_model.state_dict().items()}

    def lookup(k):
        lk = kmap(k, identity_ok=True)
        if lk not in v:
            raise KeyError(lk)
        used.add(lk)
        return _cast(v[lk], dtype)

    out = _gather(shapes, lookup, v, used, what, shapes)
    extra = [k for k in v if k not in used and not k.startswith("loss.")]
    if extra:
        raise ModelFormatError(
            f"{what}: {len(extra)} tensors do not belong to the inferred VAE, e.g. {', '.join(extra[:5])}"
        )
    return out


def _text_sd_from_ldm(model, sd: dict, layout: str, prefix: str, dtype, what: str, extras: dict) -> dict:
    shapes = {k: s.shape for k, s in model.state_dict().items()}
    used: set[str] = set()

    if layout == "hf":

        def lookup(k):
            lk = prefix + mf_keys.hf_clip_ldm_key(k)
            if lk not in sd:
                raise KeyError(lk)
            used.add(lk)
            return _cast(sd[lk], dtype)

    else:

        def lookup(k):
            name, part, transpose = mf_keys.openclip_ldm_key(k)
            lk = prefix + name
            if lk not in sd:
                raise KeyError(lk)
            used.add(lk)
            t = sd[lk]
            if part is not None:
                if t.shape[0] % 3:
                    raise ModelFormatError(f"{what}: {lk} first dimension {t.shape[0]} is not divisible by 3")
                t = t.chunk(3, dim=0)[part]
            if transpose:
                t = t.t()
            return _cast(t, dtype).contiguous()

    out = _gather(shapes, lookup, sd, used, what, shapes)
    extra = [k for k in sd if k.startswith(prefix) and k not in used]
    bad = [k for k in extra if k.rsplit(".", 1)[-1] not in _TEXT_EXTRA_LEAVES]
    if bad:
        raise ModelFormatError(
            f"{what}: {len(bad)} tensors do not belong to the inferred text encoder, e.g. {', '.join(bad[:5])}"
        )
    for k in extra:
        extras[k] = sd[k]
    return out


def build_components(state_dict, spec: ModelSpec, dtype=torch.float32, device="cpu") -> SDComponents:
    """Build diffusers/transformers modules for ``spec`` and fill them from the
    LDM-layout ``state_dict``.  Every module tensor must come from the file
    (strict); stray tensors under a module's prefix are an error too."""
    fam = spec.model_family
    sd = fam.normalize_keys(state_dict)
    unet, vae, texts = _empty_models(spec)
    _load_into(unet, _unet_sd_from_ldm(unet, sd, spec, dtype), "UNet")
    _load_into(vae, _vae_sd_from_ldm(vae, _sub(sd, fam.vae_prefix), spec.vae_config, dtype), "VAE")
    extras: dict[str, torch.Tensor] = {}
    for i, slot in enumerate(spec.text_slots):
        model = texts[slot.attr]
        what = "text encoder" if i == 0 else "second text encoder"
        _load_into(model, _text_sd_from_ldm(model, sd, slot.layout, slot.prefix, dtype, what, extras), what)
    toks = _tokenizers_for(spec)
    comps = _assemble(spec, unet, vae, texts, toks, extras)
    for _, m in comps.named_models():
        m.to(device)
        m.eval()
    return comps


# ----------------------------------------------------------------- LDM writer


def to_ldm_state_dict(components: SDComponents) -> dict[str, torch.Tensor]:
    """diffusers/transformers modules -> the original single-file key layout."""
    spec = components.spec
    fam = spec.model_family
    out: dict[str, torch.Tensor] = {}
    kmap = fam.unet_key_map(spec.unet_config)
    for k, t in components.unet.state_dict().items():
        out[fam.unet_prefix + kmap(k)] = t
    vmap = mf_keys.vae_key_map(spec.vae_config)
    for k, t in components.vae.state_dict().items():
        lk = vmap(k, identity_ok=True)
        if mf_keys.is_vae_attention_matrix(lk) and t.ndim == 2:
            t = t.reshape(*t.shape, 1, 1)
        out[fam.vae_prefix + lk] = t
    for slot in spec.text_slots:
        model, prefix = components.text_encoders.get(slot.attr), slot.prefix
        if model is None:
            raise ModelFormatError(f"{spec.arch} needs {slot.attr}, but the components have none")
        tsd = model.state_dict()
        if slot.layout == "hf":
            for k, t in tsd.items():
                out[prefix + mf_keys.hf_clip_ldm_key(k)] = t
        else:
            fused: dict[str, list] = {}
            for k, t in tsd.items():
                name, part, transpose = mf_keys.openclip_ldm_key(k)
                if part is not None:
                    fused.setdefault(prefix + name, [None, None, None])[part] = t
                else:
                    out[prefix + name] = t.t() if transpose else t
            for lk, parts in fused.items():
                if any(p is None for p in parts):
                    raise ModelFormatError(f"text encoder: incomplete q/k/v for {lk}")
                out[lk] = torch.cat(parts, dim=0)
    for k, t in components.extras.items():
        out.setdefault(k, t)
    return out


def save_checkpoint(path, components: SDComponents, metadata: dict[str, str] | None = None) -> Path:
    """Write ``components`` as a single .safetensors file in LDM layout."""
    from safetensors.torch import save_file

    path = Path(path)
    sd = to_ldm_state_dict(components)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in sd.items()}
    # safetensors refuses entries that share storage; give each its own.
    seen: set[int] = set()
    for k, v in tensors.items():
        ptr = v.untyped_storage().data_ptr()
        if ptr in seen:
            tensors[k] = v.clone()
        seen.add(ptr)
    md = {str(k): str(v) for k, v in (metadata or {}).items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        save_file(tensors, str(tmp), metadata=md)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


# ------------------------------------------------------------------ VAE files


def load_vae_state_dict(path) -> dict[str, torch.Tensor]:
    """A standalone VAE file -> state dict for diffusers AutoencoderKL.

    Accepts LDM keys (``first_stage_model.`` prefixed or bare ``encoder.``/
    ``decoder.``), or diffusers keys (also the pre-0.14 query/key/value names)."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL

    path = Path(path)
    sd, _ = read_state_dict(path)
    for prefix in (VAE_PREFIX, "vae."):
        if any(k.startswith(prefix) for k in sd):
            sd = _sub(sd, prefix)
            break
    sd = {k: v for k, v in sd.items() if not k.startswith(("loss.", "model_ema."))}
    if not any(k.startswith("encoder.") for k in sd) or not any(k.startswith("decoder.") for k in sd):
        raise ModelFormatError(f"{path.name}: not a VAE file (no encoder./decoder. weights)")
    if any(k.startswith("encoder.down_blocks.") for k in sd):  # diffusers layout
        out = {}
        for k, v in sd.items():
            for old, new in mf_keys.LEGACY_VAE_ATTENTION.items():
                k = k.replace(old, new)
            if ".attentions." in k and k.endswith(("to_q.weight", "to_k.weight", "to_v.weight", "to_out.0.weight")) and v.ndim == 4:
                v = v.reshape(v.shape[0], v.shape[1])
            out[k] = v
        return out
    cfg = dict(load_arch_configs(families.default().base.name)["vae"])
    cfg.update(_infer_vae(sd))
    with init_empty_weights():
        model = AutoencoderKL.from_config(cfg)
    return _vae_sd_from_ldm(model, sd, cfg, torch.float32, what=path.name)


# ----------------------------------------------------------- diffusers folders


def _spec_from_diffusers_configs(variant: families.Variant, unet_cfg, vae_cfg, te_cfgs, sched_cfg) -> ModelSpec:
    info = variant.info
    slots = families.get(variant.family).text_encoders(variant)
    pads = {k: v["pad_token"] for k, v in info.get("tokenizers", {}).items()}
    down = 2 ** (len(vae_cfg.get("block_out_channels", [1, 1, 1, 1])) - 1)
    return ModelSpec(
        arch=variant.name,
        prediction_type=sched_cfg.get("prediction_type", info["prediction_type"]),
        native_resolution=int(unet_cfg.get("sample_size", info["native_resolution"] // 8)) * down,
        scaling_factor=float(vae_cfg.get("scaling_factor", info["scaling_factor"])),
        unet_config=dict(unet_cfg),
        vae_config=dict(vae_cfg),
        text_encoder_configs=[dict(c) for c in te_cfgs],
        scheduler_config=dict(sched_cfg),
        is_inpaint=variant.inpaint,
        text_encoder_names=[slot.attr for slot in slots],
        family=variant.family,
        clip_skip=int(info.get("clip_skip", 1)),
        tokenizer_pad_tokens=pads,
    )


def _folder_text_encoders(path: Path, dtype) -> dict:
    """The text encoders of a diffusers folder, by folder name (every name a family's slot uses)."""
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    texts = {}
    for slot in families.text_slot_kinds():
        if (path / slot.attr).is_dir():
            cls = CLIPTextModelWithProjection if slot.with_projection else CLIPTextModel
            texts[slot.attr] = cls.from_pretrained(str(path), subfolder=slot.attr, dtype=dtype, local_files_only=True)
    return texts


def load_diffusers_folder(path, dtype=torch.float32) -> SDComponents:
    """A diffusers-format folder (model_index.json, unet/, vae/, text_encoder/ ...)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTokenizer

    path = Path(path)
    if not (path / "model_index.json").is_file() or not (path / "unet").is_dir():
        raise ModelFormatError(f"{path.name}: not a diffusers model folder (needs model_index.json and unet/)")
    try:
        unet = UNet2DConditionModel.from_pretrained(str(path), subfolder="unet", torch_dtype=dtype, local_files_only=True)
        vae = AutoencoderKL.from_pretrained(str(path), subfolder="vae", torch_dtype=dtype, local_files_only=True)
        texts = _folder_text_encoders(path, dtype)
        sched_file = path / "scheduler" / "scheduler_config.json"
        sched_cfg = _read_json(sched_file) if sched_file.is_file() else {}
    except ModelFormatError:
        raise
    except Exception as exc:
        raise ModelFormatError(f"{path.name}: cannot load diffusers folder: {type(exc).__name__}: {exc}") from exc
    if not texts:
        raise ModelFormatError(f"{path.name}: diffusers folder has no text_encoder/")
    names = list(texts)
    te_cfgs = [texts[n].config.to_dict() for n in names]
    found = families.match_diffusers(dict(unet.config), te_cfgs, names, sched_cfg)
    if found is None:
        raise ModelFormatError(f"{path.name}: a diffusers folder of a kind this program does not know "
                               f"(text encoders {', '.join(names)})")
    spec = _spec_from_diffusers_configs(found[1], dict(unet.config), dict(vae.config), te_cfgs, sched_cfg)
    if not sched_cfg:
        spec.scheduler_config = load_arch_configs(spec.arch)["scheduler"]
    toks = {}
    for slot in spec.text_slots:
        if (path / slot.tokenizer).is_dir():
            toks[slot.tokenizer] = CLIPTokenizer.from_pretrained(str(path), subfolder=slot.tokenizer,
                                                                 local_files_only=True)
        else:
            toks[slot.tokenizer] = load_tokenizer(spec.tokenizer_pad_tokens.get(slot.tokenizer, slot.pad_token))
    comps = _assemble(spec, unet, vae, texts, toks)
    for _, m in comps.named_models():
        m.eval()
    return comps


def write_diffusers_config_folder(spec: ModelSpec, dest) -> Path:
    """Write a weight-less diffusers config folder for ``spec`` (model_index.json,
    unet/vae/text_encoder*/scheduler configs, tokenizer* files).  Usable as
    ``config=`` for diffusers' ``from_single_file`` with local_files_only=True."""
    import shutil

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    index = dict(load_arch_configs(spec.arch)["model_index"])

    def dump(rel, data):
        p = dest / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")

    dump("model_index.json", index)
    dump("unet/config.json", dict(spec.unet_config, _class_name="UNet2DConditionModel"))
    dump("vae/config.json", dict(spec.vae_config, _class_name="AutoencoderKL"))
    dump("scheduler/scheduler_config.json", spec.scheduler_config)
    for slot, cfg in zip(spec.text_slots, spec.text_encoder_configs):
        c = dict(cfg)
        c["model_type"] = "clip_text_model"
        dump(f"{slot.attr}/config.json", c)
        tname = slot.tokenizer
        tdir = dest / tname
        tdir.mkdir(exist_ok=True)
        for f in ("vocab.json", "merges.txt"):
            shutil.copyfile(TOKENIZER_DIR / f, tdir / f)
        pad = spec.tokenizer_pad_tokens.get(tname, slot.pad_token)
        tcfg = _read_json(TOKENIZER_DIR / "tokenizer_config.json")
        tcfg["pad_token"] = pad
        smap = _read_json(TOKENIZER_DIR / "special_tokens_map.json")
        smap["pad_token"] = pad
        dump(f"{tname}/tokenizer_config.json", tcfg)
        dump(f"{tname}/special_tokens_map.json", smap)
    return dest


def empty_components(spec: ModelSpec, with_tokenizers: bool = False) -> SDComponents:
    """Components of ``spec`` with every parameter on the meta device (no memory,
    no init).  For key-set and shape work on full-size configs."""
    unet, vae, texts = _empty_models(spec)
    toks = _tokenizers_for(spec) if with_tokenizers else {}
    extras = {}
    for slot, cfg in zip(spec.text_slots, spec.text_encoder_configs):
        if slot.layout == "openclip" and not slot.with_projection:
            # OpenCLIP's projection has no place in CLIPTextModel; the files carry it (SD 2.x)
            extras[slot.prefix + "text_projection"] = torch.empty(
                cfg["hidden_size"], cfg["projection_dim"], device="meta"
            )
    return _assemble(spec, unet, vae, texts, toks, extras)


def spec_for_arch(arch: str) -> ModelSpec:
    """ModelSpec of the full-size shipped configs of ``arch`` (no weights involved)."""
    cfgs = load_arch_configs(arch)
    variant = families.variant(arch)
    slots = families.get(variant.family).text_encoders(variant)
    spec = _spec_from_diffusers_configs(variant, cfgs["unet"], cfgs["vae"], [cfgs[s.attr] for s in slots],
                                        cfgs["scheduler"])
    spec.native_resolution = variant.native_resolution
    return spec


__all__ = [
    "CONFIGS_DIR",
    "ModelFormatError",
    "ModelSpec",
    "SDComponents",
    "build_components",
    "detect_architecture",
    "empty_components",
    "load_arch_configs",
    "load_arch_info",
    "load_diffusers_folder",
    "load_tokenizer",
    "load_vae_state_dict",
    "read_state_dict",
    "save_checkpoint",
    "spec_for_arch",
    "to_ldm_state_dict",
    "write_diffusers_config_folder",
]
