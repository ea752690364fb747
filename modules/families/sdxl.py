"""Stable Diffusion XL: CLIP ViT-L and OpenCLIP ViT-bigG (both penultimate layers, concatenated),
bigG's pooled output and six size/crop "time ids" as extra UNet inputs, 1024 px.  The refiner is a
variant with only OpenCLIP-bigG and five time ids (an aesthetic score instead of the target size)."""
from __future__ import annotations

import torch

from modules.families.base import KeyView, ModelFamily, TextEncoderSlot, Variant


def clip_l_layer(layers: int, clip_skip: int, options) -> tuple[int, bool]:
    """SDXL's CLIP-L: the penultimate layer without the final norm; with A1111's sdxl_clip_l_skip
    option the clip skip picks the layer."""
    if options.get("sdxl_clip_l_skip"):
        return -min(max(clip_skip, 1), layers), False
    return -2, False


def penultimate(layers: int, clip_skip: int, options) -> tuple[int, bool]:
    return -2, False


def _bigg(prefix: str) -> TextEncoderSlot:
    return TextEncoderSlot(
        attr="text_encoder_2", tokenizer="tokenizer_2", layout="openclip", prefix=prefix, embedding_key="clip_g",
        lora_component="te2", lora_prefixes=("lora_te2_",), lora_dotted="text_encoder_2.", layer=penultimate,
        pooled=True, with_projection=True, pad_token="!")


CLIP_L = TextEncoderSlot(
    attr="text_encoder", tokenizer="tokenizer", layout="hf", prefix="conditioner.embedders.0.transformer.",
    embedding_key="clip_l", lora_component="te1", lora_prefixes=("lora_te1_", "lora_te_"),
    lora_dotted="text_encoder.", layer=clip_l_layer)
BIGG = _bigg("conditioner.embedders.1.model.")
REFINER_BIGG = _bigg("conditioner.embedders.0.model.")
# refiner: the aesthetic score in place of the target size (A1111's defaults for prompt and negative)
AESTHETIC_SCORE, NEGATIVE_AESTHETIC_SCORE = 6.0, 2.5


class SDXL(ModelFamily):
    name = "sdxl"
    label = "SDXL"
    variants = (Variant("sdxl", "sdxl"), Variant("sdxl-inpaint", "sdxl", inpaint=True),
                Variant("sdxl-refiner", "sdxl", refiner=True))
    zero_empty_negative = True  # A1111's force_zero_negative_prompt
    # NVIDIA's published 10-step levels for SDXL
    ays_sigmas = (14.615, 6.315, 3.771, 2.181, 1.342, 0.862, 0.555, 0.380, 0.234, 0.113, 0.029)

    def text_encoders(self, variant):
        return (REFINER_BIGG,) if variant.refiner else (CLIP_L, BIGG)

    def match(self, keys: KeyView):
        if self.unet_prefix + "label_emb.0.0.weight" not in keys:
            return None
        if keys.has(BIGG.prefix) and keys.has(CLIP_L.prefix):
            return self.base
        if keys.has(REFINER_BIGG.prefix):
            return self.variant("sdxl-refiner")
        from modules.model_formats import ModelFormatError

        raise ModelFormatError("not a complete Stable Diffusion XL checkpoint: it has an SDXL UNet but no text "
                               "encoders (conditioner.embedders.*)")

    def finish_unet_config(self, ucfg, unet, text_configs, variant):
        """SDXL's "text_time" input is the pooled text vector + N time ids of addition_time_embed_dim each."""
        from modules.model_formats import ModelFormatError

        total = int(unet["label_emb.0.0.weight"].shape[1])
        pooled = text_configs[-1]["projection_dim"]
        n_ids = 5 if variant.refiner else 6
        rest = total - pooled
        if rest <= 0 or rest % n_ids:
            raise ModelFormatError(f"SDXL UNet add-embedding input {total} does not match pooled text size "
                                   f"{pooled} + {n_ids} time ids")
        ucfg.update(addition_embed_type="text_time", projection_class_embeddings_input_dim=total,
                    addition_time_embed_dim=rest // n_ids)

    def variant_for(self, base, ucfg, hints):
        if ucfg.get("in_channels") == 9 and not base.refiner:
            return self.variant("sdxl-inpaint")
        return base

    def match_diffusers(self, unet_cfg, text_configs, names, scheduler_cfg):
        if unet_cfg.get("addition_embed_type") != "text_time":
            return None
        if "text_encoder" not in names:
            return self.variant("sdxl-refiner")
        return self.variant_for(self.base, unet_cfg, {})

    def denoiser_inputs(self, spec, conds, negative, size, batch, device, dtype, cache):
        pooled = torch.cat([c.pooled.expand(batch, -1) for c in conds]).to(device, dtype)
        ids = torch.cat([self._time_ids(spec, size, neg, device, cache).expand(batch, -1) for neg in negative])
        return {"added_cond_kwargs": {"text_embeds": pooled, "time_ids": ids.to(dtype)}}

    def _time_ids(self, spec, size, negative: bool, device, cache: dict) -> torch.Tensor:
        """The micro-conditioning ids, made on the device once per job, size and sign: a tensor built from
        host values inside the step loop would be a blocking host-to-device copy at every step."""
        key = ("sdxl time ids", tuple(size), negative)
        if key not in cache:
            h, w = size
            if self.variant(spec.arch).refiner:
                ids = [h, w, 0, 0, NEGATIVE_AESTHETIC_SCORE if negative else AESTHETIC_SCORE]
            else:
                ids = [h, w, 0, 0, h, w]
            cache[key] = torch.tensor([ids], dtype=torch.float32, device=device)
        return cache[key]

    def lora_made_for(self, metadata):
        return str(metadata.get("ss_base_model_version", "")).startswith("sdxl")


FAMILY = SDXL()
