"""Stable Diffusion 1.x: one CLIP ViT-L/14 text encoder, 8 attention heads everywhere, 512 px."""
from __future__ import annotations

from modules.families.base import KeyView, ModelFamily, TextEncoderSlot, Variant, clip_skip_layer

_OLD_CLIP = "cond_stage_model.transformer."

CLIP_L = TextEncoderSlot(
    attr="text_encoder", tokenizer="tokenizer", layout="hf", prefix=_OLD_CLIP, embedding_key="clip_l",
    lora_component="te1", lora_prefixes=("lora_te_", "lora_te1_"), lora_dotted="text_encoder.",
    layer=clip_skip_layer)


class SD1(ModelFamily):
    name = "sd1"
    label = "SD 1.x"
    variants = (Variant("sd1", "sd1"), Variant("sd1-inpaint", "sd1", inpaint=True))
    unet_heads = 8

    def text_encoders(self, variant):
        return (CLIP_L,)

    def match(self, keys: KeyView):
        if self.unet_prefix + "label_emb.0.0.weight" in keys or not keys.has(_OLD_CLIP):
            return None
        return self.base

    def normalize_keys(self, sd):
        """Old SD 1.x files store CLIP as cond_stage_model.transformer.embeddings... (no text_model.)."""
        if any(k.startswith(_OLD_CLIP + "embeddings.") for k in sd) and \
                not any(k.startswith(_OLD_CLIP + "text_model.") for k in sd):
            return {(_OLD_CLIP + "text_model." + k[len(_OLD_CLIP):] if k.startswith(_OLD_CLIP) else k): v
                    for k, v in sd.items()}
        return sd

    def match_diffusers(self, unet_cfg, text_configs, names, scheduler_cfg):
        if unet_cfg.get("addition_embed_type") or not text_configs or names != ["text_encoder"]:
            return None
        if text_configs[0].get("hidden_act") == "gelu":  # OpenCLIP: SD 2.x
            return None
        return self.variant_for(self.base, unet_cfg, {})

    def lora_made_for(self, metadata):
        base = str(metadata.get("ss_base_model_version", ""))
        if base:
            return base.startswith("sd_v1")
        # kohya's files before ss_base_model_version: ss_v2 tells SD 2.x from SD 1.x
        return any(k.startswith("ss_") for k in metadata) and str(metadata.get("ss_v2", "")) != "True"


FAMILY = SD1()
