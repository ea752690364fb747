"""Stable Diffusion 2.x: OpenCLIP ViT-H/14 (its penultimate layer), heads of 64 channels; the 768 px
v-prediction and 512 px epsilon models share every shape, so hints decide (v-prediction by default)."""
from __future__ import annotations

from modules.families.base import KeyView, ModelFamily, TextEncoderSlot, Variant


def penultimate_normed(layers: int, clip_skip: int, options) -> tuple[int, bool]:
    """OpenCLIP-H's penultimate layer with the final layer norm, whatever the clip skip (A1111's OpenCLIP
    wrapper ignores the setting).  An encoder of exactly 23 layers is a diffusers conversion that already
    dropped the last one: its last layer is the one."""
    return (0, False) if layers == 23 or layers < 2 else (-2, True)


OPENCLIP_H = TextEncoderSlot(
    attr="text_encoder", tokenizer="tokenizer", layout="openclip", prefix="cond_stage_model.model.",
    embedding_key="clip_l", lora_component="te1", lora_prefixes=("lora_te_", "lora_te1_"),
    lora_dotted="text_encoder.", layer=penultimate_normed, pad_token="!")


class SD2(ModelFamily):
    name = "sd2"
    label = "SD 2.x"
    variants = (Variant("sd2", "sd2"), Variant("sd2-v", "sd2"), Variant("sd2-inpaint", "sd2", inpaint=True))

    def text_encoders(self, variant):
        return (OPENCLIP_H,)

    def match(self, keys: KeyView):
        if self.unet_prefix + "label_emb.0.0.weight" in keys or not keys.has(OPENCLIP_H.prefix):
            return None
        return self.base

    def variant_for(self, base, ucfg, hints):
        if ucfg.get("in_channels") == 9:
            return self.variant("sd2-inpaint")
        # most SD 2.x files are 2.1 768 v-prediction; a hint (sidecar, metadata) says otherwise
        return self.base if hints.get("prediction_type") == "epsilon" else self.variant("sd2-v")

    def match_diffusers(self, unet_cfg, text_configs, names, scheduler_cfg):
        if unet_cfg.get("addition_embed_type") or not text_configs or names != ["text_encoder"]:
            return None
        if text_configs[0].get("hidden_act") != "gelu":
            return None
        if unet_cfg.get("in_channels") == 9:
            return self.variant("sd2-inpaint")
        v = scheduler_cfg.get("prediction_type", "epsilon") == "v_prediction"
        return self.variant("sd2-v") if v else self.base

    def lora_made_for(self, metadata):
        base = str(metadata.get("ss_base_model_version", ""))
        return base.startswith("sd_v2") or str(metadata.get("ss_v2", "")) == "True"


FAMILY = SD2()
