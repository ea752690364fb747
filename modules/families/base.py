"""What a model family is: the base class every family module fills in.

A family is one kind of Stable Diffusion model (SD 1.x, SD 2.x, SDXL, ...).  Its module
owns everything that differs between kinds, so that the loader, the conditioning, the
LoRA code and the engine ask the family instead of testing names:

* **detection** from the state dict's keys and shapes (:meth:`ModelFamily.match`,
  :meth:`ModelFamily.variant_for`, :meth:`ModelFamily.match_diffusers`);
* **key maps** of the single-file (LDM) layout: where the UNet, the VAE and each text
  encoder live (:attr:`unet_prefix`, :attr:`vae_prefix`, :class:`TextEncoderSlot`),
  :meth:`unet_key_map`, :meth:`normalize_keys` for old spellings;
* **configs**: each :class:`Variant` has a folder of diffusers configs and an
  ``arch.json`` (native size, prediction type, latent scale, default clip skip);
* **text conditioning**: which encoders, which hidden layer each one uses, which gives
  the pooled vector, whether an empty negative prompt is all zeros;
* **denoiser inputs** beyond the text context (SDXL's pooled vector and time ids):
  :meth:`denoiser_inputs`;
* **LoRA key prefixes** of its text encoders, and which LoRA files were made for it
  (:meth:`lora_made_for`);
* the **Align Your Steps** noise levels NVIDIA published for it.

Variants (inpainting, v-prediction, the SDXL refiner) are options of a family, not
families of their own.  ``modules/families/README.md`` says how to add a family.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Mapping

CONFIGS_DIR = Path(__file__).resolve().parent.parent.parent / "configs"

# (number of hidden layers, clip skip, options) -> (hidden_states index, or 0 for the last hidden
# state; whether the final layer norm is applied to it)
LayerRule = Callable[[int, int, Mapping[str, Any]], "tuple[int, bool]"]


def clip_skip_layer(layers: int, clip_skip: int, options: Mapping[str, Any]) -> tuple[int, bool]:
    """A1111's clip skip for a CLIP-L encoder: ``n`` -> ``final_layer_norm(hidden_states[-n])``."""
    k = min(max(clip_skip, 1), layers)
    return (0, False) if k == 1 else (-k, True)


@dataclass(frozen=True)
class TextEncoderSlot:
    """One text encoder of a family, and how it is stored, named and used."""
    attr: str                       # key in SDComponents.text_encoders (the diffusers folder name)
    tokenizer: str                  # key in SDComponents.tokenizers
    layout: str                     # LDM layout of its weights: "hf" (transformers CLIP) or "openclip"
    prefix: str                     # LDM key prefix of its weights
    embedding_key: str              # which vector set of a textual-inversion embedding it takes
    lora_component: str             # its name in LoRA layer indexes ("te1", "te2")
    lora_prefixes: tuple[str, ...]  # kohya-style prefixes of its LoRA layers; the first is what writers use
    lora_dotted: str                # diffusers/PEFT prefix of its LoRA layers
    layer: LayerRule = clip_skip_layer
    pooled: bool = False            # its projected output of the first chunk is the pooled vector
    with_projection: bool = False   # built as CLIPTextModelWithProjection
    pad_token: str = "<|endoftext|>"


@dataclass(frozen=True)
class Variant:
    """One loadable kind of a family (``ModelSpec.arch``): its configs and options."""
    name: str
    family: str
    inpaint: bool = False
    refiner: bool = False
    config_dir: Path | None = None  # default: configs/<name>

    @property
    def configs(self) -> Path:
        return self.config_dir if self.config_dir is not None else CONFIGS_DIR / self.name

    @cached_property
    def info(self) -> dict:
        """arch.json: native_resolution, prediction_type, scaling_factor, clip_skip, tokenizers."""
        path = self.configs / "arch.json"
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)

    @property
    def native_resolution(self) -> int:
        return int(self.info["native_resolution"])


class ModelFamily:
    """Base class: the defaults are those of the SD 1.x / 2.x / XL single-file layout."""

    name: str = ""
    label: str = ""
    variants: tuple[Variant, ...] = ()
    unet_prefix = "model.diffusion_model."
    vae_prefix = "first_stage_model."
    unet_heads: int | None = None           # attention heads per layer; None: channels // 64
    zero_empty_negative = False             # an all-empty negative prompt encodes to zeros
    ays_sigmas: tuple[float, ...] | None = None  # Align Your Steps levels (None: the SD 1.5 ones)

    # -- variants ---------------------------------------------------------------------------------
    def variant(self, name: str) -> Variant:
        for v in self.variants:
            if v.name == name:
                return v
        raise KeyError(f"{self.name} has no variant {name!r}")

    @property
    def base(self) -> Variant:
        """The plain variant (the first listed)."""
        return self.variants[0]

    def text_encoders(self, variant: Variant) -> tuple[TextEncoderSlot, ...]:
        raise NotImplementedError

    # -- detection --------------------------------------------------------------------------------
    def match(self, keys: "KeyView") -> Variant | None:
        """The variant whose text encoders and UNet these keys hold (before inpainting / prediction
        are known), or None when the file is not of this family.  May raise ModelFormatError for a
        file that is of this family but incomplete."""
        return None

    def normalize_keys(self, sd: dict) -> dict:
        """Old spellings of this family's keys -> the ones the key maps expect."""
        return sd

    def finish_unet_config(self, ucfg: dict, unet: Mapping, text_configs: list[dict], variant: Variant) -> None:
        """Add what the shapes alone do not say (extra embeddings of the UNet) to the inferred config."""
        ucfg["addition_embed_type"] = None
        ucfg["projection_class_embeddings_input_dim"] = None
        ucfg["addition_time_embed_dim"] = None

    def variant_for(self, base: Variant, ucfg: dict, hints: Mapping[str, Any]) -> Variant:
        """The final variant once the UNet config and the hints (sidecar, metadata) are known."""
        if ucfg.get("in_channels") == 9:
            for v in self.variants:
                if v.inpaint and v.refiner == base.refiner:
                    return v
        return base

    def match_diffusers(self, unet_cfg: dict, text_configs: list[dict], names: list[str],
                        scheduler_cfg: dict) -> Variant | None:
        """The variant of a diffusers folder with these configs, or None."""
        return None

    # -- layout -----------------------------------------------------------------------------------
    def unet_key_map(self, unet_config: dict):
        """diffusers UNet key -> LDM key (below :attr:`unet_prefix`)."""
        from modules import mf_keys

        return mf_keys.unet_key_map(unet_config)

    # -- sampling ---------------------------------------------------------------------------------
    def denoiser_inputs(self, spec, conds: list, negative: list[bool], size: tuple[int, int], batch: int,
                        device, dtype, cache: dict) -> dict:
        """Keyword arguments of the UNet call beyond the text context, for one batched call over
        ``conds`` (each repeated ``batch`` times); ``negative[i]`` tells whether conds[i] is the
        negative prompt.  ``cache``: a dict that lives as long as the job (for tensors made once)."""
        return {}

    # -- networks ---------------------------------------------------------------------------------
    def lora_made_for(self, metadata: Mapping[str, str]) -> bool:
        """Whether a LoRA file's training metadata says it was made for this family."""
        return False

    def __repr__(self) -> str:
        return f"<model family {self.name}>"


@dataclass
class KeyView:
    """The keys of a state dict, with the prefix tests detection makes."""
    keys: list[str]
    _prefixes: dict = field(default_factory=dict)

    def has(self, prefix: str) -> bool:
        hit = self._prefixes.get(prefix)
        if hit is None:
            hit = self._prefixes[prefix] = any(k.startswith(prefix) for k in self.keys)
        return hit

    def __contains__(self, key: str) -> bool:
        return key in self._set

    @cached_property
    def _set(self) -> set:
        return set(self.keys)
