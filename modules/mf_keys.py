"""Key-name maps between diffusers/transformers module layouts and the original
LDM (CompVis / Stability "single file") checkpoint layout.

Every map here goes one way: *diffusers key -> LDM key* (plus a small tensor
transform).  Loading walks the keys of a freshly built diffusers module and
asks where each one lives in the LDM file; writing walks the same keys and
puts each tensor where the map says.  One table therefore serves both
directions, and a key that one direction knows the other knows too.

Layout facts used (public, from the original Stable Diffusion code):

UNet (``model.diffusion_model.``)
  input_blocks.0.0           conv_in
  input_blocks.K.0           a ResBlock (in_layers.0 norm, in_layers.2 conv,
                             emb_layers.1 time proj, out_layers.0 norm,
                             out_layers.3 conv, skip_connection 1x1 conv)
  input_blocks.K.1           a SpatialTransformer (same inner names as diffusers)
  input_blocks.K.0.op        a Downsample conv (a level's last entry)
  middle_block.{0,1,2}       ResBlock, SpatialTransformer, ResBlock
  output_blocks.K.0/.1       ResBlock / SpatialTransformer, upsample conv at
                             .1.conv (no attention) or .2.conv (attention)
  time_embed.{0,2}, label_emb.0.{0,2} (SDXL), out.0 (norm), out.2 (conv)
VAE (``first_stage_model.``)
  encoder.down.I.block.J, encoder.down.I.downsample.conv, mid.block_1/attn_1/block_2,
  norm_out; decoder.up.I is stored in *resolution* order, i.e. diffusers
  up_blocks[i] == decoder.up[n-1-i]; attention q/k/v/proj_out are 1x1 convs;
  ResBlock shortcut is ``nin_shortcut``.
OpenCLIP text tower (SD2 / SDXL second encoder)
  token_embedding, positional_embedding (a bare tensor), transformer.resblocks.N
  {ln_1, attn.in_proj_weight/bias (q,k,v stacked on dim 0), attn.out_proj,
  ln_2, mlp.c_fc, mlp.c_proj}, ln_final, text_projection (x @ P, so the
  transformers Linear weight is P transposed).
"""
from __future__ import annotations

_RESNET_UNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
_RESNET_VAE = {"conv_shortcut": "nin_shortcut"}
_ATTN_VAE = {
    "group_norm": "norm",
    "to_q": "q",
    "to_k": "k",
    "to_v": "v",
    "to_out.0": "proj_out",
}


class PrefixMap:
    """diffusers-key -> ldm-key by module prefix, with optional inner renames."""

    def __init__(self) -> None:
        self._table: dict[str, tuple[str, dict[str, str] | None]] = {}

    def add(self, dprefix: str, lprefix: str, inner: dict[str, str] | None = None) -> None:
        self._table[dprefix] = (lprefix, inner)

    def __call__(self, key: str, identity_ok: bool = False) -> str:
        cut = len(key)
        while cut > 0:
            cut = key.rfind(".", 0, cut)
            if cut < 0:
                break
            hit = self._table.get(key[: cut + 1])
            if hit is not None:
                lprefix, inner = hit
                rest = key[cut + 1 :]
                if inner:
                    for dname, lname in inner.items():
                        if rest.startswith(dname + "."):
                            rest = lname + rest[len(dname) :]
                            break
                return lprefix + rest
        if identity_ok:
            return key
        raise KeyError(key)


def _as_list(value, n: int) -> list:
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value] * n


def unet_key_map(cfg: dict) -> PrefixMap:
    """Map for a UNet2DConditionModel built from ``cfg`` (keys without the
    ``model.diffusion_model.`` prefix on the LDM side)."""
    m = PrefixMap()
    m.add("time_embedding.linear_1.", "time_embed.0.")
    m.add("time_embedding.linear_2.", "time_embed.2.")
    m.add("add_embedding.linear_1.", "label_emb.0.0.")
    m.add("add_embedding.linear_2.", "label_emb.0.2.")
    m.add("conv_in.", "input_blocks.0.0.")
    m.add("conv_norm_out.", "out.0.")
    m.add("conv_out.", "out.2.")

    down = list(cfg["down_block_types"])
    up = list(cfg["up_block_types"])
    n = len(down)
    layers = _as_list(cfg["layers_per_block"], n)

    k = 1
    for i, btype in enumerate(down):
        attn = "CrossAttn" in btype
        for j in range(layers[i]):
            m.add(f"down_blocks.{i}.resnets.{j}.", f"input_blocks.{k}.0.", _RESNET_UNET)
            if attn:
                m.add(f"down_blocks.{i}.attentions.{j}.", f"input_blocks.{k}.1.")
            k += 1
        if i < n - 1:
            m.add(f"down_blocks.{i}.downsamplers.0.conv.", f"input_blocks.{k}.0.op.")
            k += 1

    m.add("mid_block.resnets.0.", "middle_block.0.", _RESNET_UNET)
    m.add("mid_block.attentions.0.", "middle_block.1.")
    m.add("mid_block.resnets.1.", "middle_block.2.", _RESNET_UNET)

    up_layers = list(reversed(layers))
    k = 0
    for i, btype in enumerate(up):
        attn = "CrossAttn" in btype
        count = up_layers[i] + 1
        for j in range(count):
            m.add(f"up_blocks.{i}.resnets.{j}.", f"output_blocks.{k}.0.", _RESNET_UNET)
            if attn:
                m.add(f"up_blocks.{i}.attentions.{j}.", f"output_blocks.{k}.1.")
            if j == count - 1 and i < n - 1:
                m.add(f"up_blocks.{i}.upsamplers.0.conv.", f"output_blocks.{k}.{2 if attn else 1}.conv.")
            k += 1
    return m


def vae_key_map(cfg: dict) -> PrefixMap:
    """Map for an AutoencoderKL (keys without ``first_stage_model.``)."""
    m = PrefixMap()
    n = len(cfg["block_out_channels"])
    layers = cfg["layers_per_block"]
    for i in range(n):
        for j in range(layers):
            m.add(f"encoder.down_blocks.{i}.resnets.{j}.", f"encoder.down.{i}.block.{j}.", _RESNET_VAE)
        m.add(f"encoder.down_blocks.{i}.downsamplers.0.conv.", f"encoder.down.{i}.downsample.conv.")
        for j in range(layers + 1):
            m.add(f"decoder.up_blocks.{i}.resnets.{j}.", f"decoder.up.{n - 1 - i}.block.{j}.", _RESNET_VAE)
        m.add(f"decoder.up_blocks.{i}.upsamplers.0.conv.", f"decoder.up.{n - 1 - i}.upsample.conv.")
    for side in ("encoder", "decoder"):
        m.add(f"{side}.mid_block.resnets.0.", f"{side}.mid.block_1.", _RESNET_VAE)
        m.add(f"{side}.mid_block.resnets.1.", f"{side}.mid.block_2.", _RESNET_VAE)
        m.add(f"{side}.mid_block.attentions.0.", f"{side}.mid.attn_1.", _ATTN_VAE)
        m.add(f"{side}.conv_norm_out.", f"{side}.norm_out.")
    return m


def is_vae_attention_matrix(ldm_key: str) -> bool:
    """True for VAE mid-attention q/k/v/proj_out weights (1x1 conv in LDM)."""
    return ".mid.attn_1." in ldm_key and ldm_key.endswith(("q.weight", "k.weight", "v.weight", "proj_out.weight"))


# Legacy diffusers VAE attention names (diffusers < 0.14 files).
LEGACY_VAE_ATTENTION = {
    ".query.": ".to_q.",
    ".key.": ".to_k.",
    ".value.": ".to_v.",
    ".proj_attn.": ".to_out.0.",
}


def hf_clip_ldm_key(key: str) -> str:
    """transformers CLIP text key (flattened or ``text_model.``-prefixed) ->
    the key below an LDM ``...transformer.`` prefix (always ``text_model.*``)."""
    if key.startswith("text_model.") or key == "text_projection.weight":
        return key
    return "text_model." + key


_OPENCLIP_LAYER = {
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
    "self_attn.out_proj": "attn.out_proj",
}
_QKV = {"q_proj": 0, "k_proj": 1, "v_proj": 2}


def openclip_ldm_key(key: str) -> tuple[str, int | None, bool]:
    """transformers CLIP text key -> (OpenCLIP key, qkv part or None, transpose).

    ``part`` is 0/1/2 when the tensor is the q/k/v third of a fused
    ``in_proj_weight``/``in_proj_bias``; ``transpose`` is True for
    ``text_projection``."""
    k = key[len("text_model.") :] if key.startswith("text_model.") else key
    if k == "text_projection.weight":
        return "text_projection", None, True
    if k == "embeddings.token_embedding.weight":
        return "token_embedding.weight", None, False
    if k == "embeddings.position_embedding.weight":
        return "positional_embedding", None, False
    if k.startswith("final_layer_norm."):
        return "ln_final." + k[len("final_layer_norm.") :], None, False
    if k.startswith("encoder.layers."):
        rest = k[len("encoder.layers.") :]
        idx, _, sub = rest.partition(".")
        base = f"transformer.resblocks.{idx}."
        for proj, part in _QKV.items():
            pre = f"self_attn.{proj}."
            if sub.startswith(pre):
                leaf = sub[len(pre) :]  # weight | bias
                return base + f"attn.in_proj_{leaf}", part, False
        for dname, lname in _OPENCLIP_LAYER.items():
            if sub.startswith(dname + "."):
                return base + lname + sub[len(dname) :], None, False
    raise KeyError(key)
