"""LoRA and LyCORIS network files: reading them, matching their layers to the
loaded model's modules, computing weight deltas, and merging them in place.

Formats read
    * kohya / A1111: ``lora_unet_*``, ``lora_te_*`` (SD1/SD2), ``lora_te1_*`` /
      ``lora_te2_*`` (SDXL) with ``.lora_down.weight``, ``.lora_up.weight``,
      optional ``.lora_mid.weight`` (LoCon Tucker) and ``.alpha``.  UNet names
      may follow diffusers' module tree (``down_blocks_0_attentions_0_...``,
      kohya's SD1/SD2 trainers) or the LDM tree (``input_blocks_4_1_...``,
      kohya's SDXL trainer and converted files).
    * LyCORIS LoHa (``hada_w1_a/b``, ``hada_w2_a/b``, optional ``hada_t1/t2``)
      and LoKr (``lokr_w1`` or ``lokr_w1_a/b``, ``lokr_w2`` or ``lokr_w2_a/b``,
      optional ``lokr_t2``), same layer names.
    * full differences (``.diff`` / ``.diff_b``).
    * diffusers / PEFT: ``unet.<module>.lora_A.weight`` / ``lora_B.weight``,
      ``text_encoder.`` / ``text_encoder_2.`` prefixes; the older diffusers
      spellings ``<module>.lora.down/up.weight``,
      ``<module>.lora_linear_layer.down/up.weight`` and the attention-processor
      one ``<attn>.processor.to_q_lora.down.weight``.

Delta rule (A1111's)
    ``delta = up @ down * (alpha / rank) * multiplier``; ``rank`` is the first
    dimension of ``down`` (LoHa: of ``hada_w1_b``; LoKr: of the factored
    ``w2_b`` or else ``w1_b``; none for full LoKr / diff), and without an
    ``alpha`` (or without a rank) the scale is 1.  A ``.scale`` tensor, where
    present, replaces ``alpha / rank``.  The text-encoder multiplier applies to
    text-encoder layers, the UNet multiplier to UNet layers.

Merging (:class:`MergedWeights`)
    The original tensors of the touched parameters are cloned, deltas are summed
    in float32 and added, the result is cast back to the parameter's dtype;
    :meth:`MergedWeights.restore` copies the clones back, so the weights are
    bit-for-bit what they were.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import torch

NETWORK_EXTS = (".safetensors", ".pt", ".ckpt", ".bin")


class NetworkError(Exception):
    """A network file cannot be read or used; the message is meant for the user."""


# --------------------------------------------------------------------------- reading


def read_network_file(path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a network file.  Pickles load with ``weights_only``
    (no code runs); anything else is a :class:`NetworkError`."""
    from modules.file_readers import FileReadError, load_pickle, read_safetensors

    path = Path(path)
    try:
        if path.suffix.lower() == ".safetensors":
            return read_safetensors(path)
        data = load_pickle(path)
    except (FileReadError, OSError) as e:
        raise NetworkError(f"cannot read {path.name}: {e}") from None
    if isinstance(data, dict) and "state_dict" in data and isinstance(data["state_dict"], dict):
        data = data["state_dict"]
    if not isinstance(data, dict):
        raise NetworkError(f"{path.name} holds no tensor dictionary")
    tensors = {str(k): v for k, v in data.items() if torch.is_tensor(v)}
    return tensors, {}


def read_metadata(path) -> dict[str, str]:
    """The ``__metadata__`` of a .safetensors file (no tensors are read); {} otherwise."""
    from modules.file_readers import HeaderError
    from modules.file_readers import read_metadata as header_metadata

    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        return {}
    try:
        return header_metadata(path)
    except (OSError, HeaderError):
        return {}


# --------------------------------------------------------------------------- parsing

# (suffix, role) tried in order; the first match wins
_ROLES: tuple[tuple[str, str], ...] = (
    (".lora_down.weight", "down"), (".lora_up.weight", "up"), (".lora_mid.weight", "mid"),
    (".lora_A.weight", "down"), (".lora_B.weight", "up"),
    (".lora_linear_layer.down.weight", "down"), (".lora_linear_layer.up.weight", "up"),
    (".lora.down.weight", "down"), (".lora.up.weight", "up"),
    (".hada_w1_a", "hada_w1_a"), (".hada_w1_b", "hada_w1_b"), (".hada_w2_a", "hada_w2_a"),
    (".hada_w2_b", "hada_w2_b"), (".hada_t1", "hada_t1"), (".hada_t2", "hada_t2"),
    (".lokr_w1_a", "lokr_w1_a"), (".lokr_w1_b", "lokr_w1_b"), (".lokr_w1", "lokr_w1"),
    (".lokr_w2_a", "lokr_w2_a"), (".lokr_w2_b", "lokr_w2_b"), (".lokr_w2", "lokr_w2"), (".lokr_t2", "lokr_t2"),
    (".diff_b", "diff_b"), (".diff", "diff"),
    (".alpha", "alpha"), (".scale", "scale"),
    (".dora_scale", "dora"), (".lora_magnitude_vector.weight", "dora"), (".lora_magnitude_vector", "dora"),
)
# diffusers' attention-processor LoRA: <attn>.processor.<proj>_lora.<down|up>.weight
_PROCESSOR = re.compile(r"^(?P<attn>.+)\.processor\.(?P<proj>to_q|to_k|to_v|to_out)_lora\.(?P<role>down|up)\.weight$")
_PROC_TARGET = {"to_q": "to_q", "to_k": "to_k", "to_v": "to_v", "to_out": "to_out.0"}


@dataclass
class NetworkLayer:
    """One layer of a network: the name it has in the file and its tensors by role."""

    name: str                                   # e.g. "lora_unet_down_blocks_0_..." or "unet.down_blocks.0...."
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        t = self.tensors
        if "down" in t or "up" in t:
            return "lora"
        if any(k.startswith("hada_") for k in t):
            return "loha"
        if any(k.startswith("lokr_") for k in t):
            return "lokr"
        if "diff" in t or "diff_b" in t:
            return "diff"
        return "unknown"

    @property
    def alpha(self) -> float | None:
        a = self.tensors.get("alpha")
        return None if a is None else float(a.reshape(-1)[0])

    @property
    def rank(self) -> int | None:
        t = self.tensors
        kind = self.kind
        if kind == "lora" and "down" in t:
            return int(t["down"].shape[0])
        if kind == "loha" and "hada_w1_b" in t:
            return int(t["hada_w1_b"].shape[0])
        if kind == "lokr":
            if "lokr_w2_b" in t:
                return int(t["lokr_w2_b"].shape[0])
            if "lokr_w1_b" in t:
                return int(t["lokr_w1_b"].shape[0])
        return None

    @property
    def scale(self) -> float:
        s = self.tensors.get("scale")
        if s is not None:
            return float(s.reshape(-1)[0])
        alpha, rank = self.alpha, self.rank
        if alpha is None or not rank:
            return 1.0
        return alpha / rank

    def problem(self) -> str | None:
        """Why this layer cannot be used, or None."""
        t = self.tensors
        kind = self.kind
        if "dora" in t:
            return "DoRA layers are not supported"
        if kind == "lora" and ("up" not in t or "down" not in t):
            return "LoRA layer without both up and down weights"
        if kind == "loha" and not all(k in t for k in ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b")):
            return "incomplete LoHa layer"
        if kind == "lokr":
            if "lokr_w1" not in t and not ("lokr_w1_a" in t and "lokr_w1_b" in t):
                return "incomplete LoKr layer (w1)"
            if "lokr_w2" not in t and not ("lokr_w2_a" in t and "lokr_w2_b" in t):
                return "incomplete LoKr layer (w2)"
        if kind == "unknown":
            return "no weights this program knows how to use"
        return None

    # ----------------------------------------------------------------- math

    def delta(self, shape: torch.Size | tuple, device=None) -> torch.Tensor | None:
        """The weight delta (float32, scaled by alpha/rank, not by the multiplier)
        for a weight of ``shape``; None for a bias-only layer.  NetworkError when
        the layer does not fit that shape."""
        t = {k: v.to(device=device, dtype=torch.float32) for k, v in self.tensors.items()
             if k not in ("alpha", "scale", "diff_b")}
        kind = self.kind
        if kind == "lora":
            up, down = t["up"], t["down"]
            if "mid" in t:
                d = torch.einsum("n m k l, i n, m j -> i j k l", t["mid"], up.reshape(up.shape[0], -1),
                                 down.reshape(down.shape[0], -1))
            else:
                d = up.reshape(up.shape[0], -1) @ down.reshape(down.shape[0], -1)
        elif kind == "loha":
            d = _product(t, "hada_w1_a", "hada_w1_b", "hada_t1") * _product(t, "hada_w2_a", "hada_w2_b", "hada_t2")
        elif kind == "lokr":
            w1 = t["lokr_w1"] if "lokr_w1" in t else t["lokr_w1_a"] @ t["lokr_w1_b"]
            if "lokr_w2" in t:
                w2 = t["lokr_w2"]
            elif "lokr_t2" in t:
                w2 = _cp(t["lokr_t2"], t["lokr_w2_a"], t["lokr_w2_b"])
            else:
                w2 = t["lokr_w2_a"].reshape(t["lokr_w2_a"].shape[0], -1) @ \
                    t["lokr_w2_b"].reshape(t["lokr_w2_b"].shape[0], -1)
            if w2.ndim == 4:
                w1 = w1.reshape(*w1.shape, 1, 1)
            d = torch.kron(w1, w2)
        elif kind == "diff":
            if "diff" not in t:
                return None
            d = t["diff"]
        else:
            raise NetworkError(f"{self.name}: {self.problem()}")
        return fit_shape(d, shape, self.name) * self.scale

    def update(self, shape, device=None) -> "torch.Tensor | LowRank | None":
        """What merging adds for a weight of ``shape`` (before the multiplier): a plain LoRA layer
        as its two float32 factors (:class:`LowRank`, ``up`` already scaled), so that merging is one
        ``addmm`` and no full-size delta is made; any other layer as its float32 delta."""
        t = self.tensors
        if self.kind == "lora" and "mid" not in t:
            up, down = t["up"], t["down"]
            up = up.reshape(up.shape[0], -1).to(device=device, dtype=torch.float32)
            down = down.reshape(down.shape[0], -1).to(device=device, dtype=torch.float32)
            if up.shape[1] != down.shape[0] or up.shape[0] * down.shape[1] != _numel(shape):
                raise NetworkError(f"{self.name}: delta of shape {(up.shape[0], down.shape[1])} does not fit a "
                                   f"weight of shape {tuple(shape)}")
            scale = self.scale
            return LowRank((up * scale).contiguous() if scale != 1.0 else up.contiguous(), down.contiguous())
        return self.delta(shape, device=device)

    def bias_delta(self, shape, device=None) -> torch.Tensor | None:
        b = self.tensors.get("diff_b")
        if b is None:
            return None
        return fit_shape(b.to(device=device, dtype=torch.float32), shape, self.name + " (bias)") * self.scale


@dataclass
class LowRank:
    """A delta kept as ``up @ down`` (float32; ``up`` is (out, r), ``down`` is (r, in * k * k))."""
    up: torch.Tensor
    down: torch.Tensor

    @property
    def nbytes(self) -> int:
        return (self.up.numel() + self.down.numel()) * 4

    def dense(self, shape) -> torch.Tensor:
        return (self.up @ self.down).reshape(tuple(shape))


def _cp(t: torch.Tensor, wa: torch.Tensor, wb: torch.Tensor) -> torch.Tensor:
    """Tucker (CP) rebuild: core ``t`` (r, r, k, k), ``wa`` (r, out), ``wb`` (r, in) -> (out, in, k, k)."""
    tmp = torch.einsum("i j k l, j r -> i r k l", t, wb)
    return torch.einsum("i j k l, i r -> r j k l", tmp, wa)


def _product(t: dict, a: str, b: str, core: str) -> torch.Tensor:
    if core in t:
        return _cp(t[core], t[a], t[b])
    wa, wb = t[a], t[b]
    d = wa.reshape(wa.shape[0], -1) @ wb.reshape(wb.shape[0], -1)
    return d


def fit_shape(d: torch.Tensor, shape, what: str = "layer") -> torch.Tensor:
    shape = tuple(shape)
    if tuple(d.shape) == shape:
        return d
    if d.numel() == _numel(shape):
        return d.reshape(shape)
    raise NetworkError(f"{what}: delta of shape {tuple(d.shape)} does not fit a weight of shape {shape}")


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


UNET_PREFIXES = ("lora_unet_", "unet.")   # kohya's and diffusers/PEFT's names of UNet layers


def _split_key(key: str) -> tuple[str, str] | None:
    m = _PROCESSOR.match(key)
    if m:
        return f"{m['attn']}.{_PROC_TARGET[m['proj']]}", m["role"]
    for suffix, role in _ROLES:
        if key.endswith(suffix):
            return key[: -len(suffix)], role
    return None


@dataclass
class ParsedNetwork:
    layers: dict[str, NetworkLayer]
    unknown_keys: list[str]


def parse_network(tensors: dict[str, torch.Tensor], metadata: dict | None = None) -> ParsedNetwork:
    """Group a network file's tensors by layer.  ``metadata``: the file's metadata, for the
    alphas diffusers keeps in ``lora_adapter_metadata`` (PEFT's ``lora_alpha``, ``alpha_pattern``,
    ``use_rslora``) for layers without an ``.alpha`` tensor."""
    layers: dict[str, NetworkLayer] = {}
    unknown: list[str] = []
    for key, value in tensors.items():
        if key.startswith("base_model.model."):  # PEFT's own save format
            key = key[len("base_model.model."):]
        split = _split_key(key)
        if split is None:
            unknown.append(key)
            continue
        name, role = split
        layers.setdefault(name, NetworkLayer(name)).tensors[role] = value
    # a layer of only alpha/scale (left over next to unknown keys) is not a layer
    for name in [n for n, layer in layers.items() if set(layer.tensors) <= {"alpha", "scale"}]:
        unknown.append(name + ".alpha")
        del layers[name]
    _apply_peft_alphas(layers, metadata)
    return ParsedNetwork(layers, unknown)


def _apply_peft_alphas(layers: dict[str, NetworkLayer], metadata: dict | None) -> None:
    import json
    import math

    raw = (metadata or {}).get("lora_adapter_metadata")
    if not raw:
        return
    try:
        cfg = json.loads(raw) if isinstance(raw, str) else dict(raw)
    except (ValueError, TypeError):
        return
    if not isinstance(cfg, dict):
        return
    from modules import families

    dotted = {UNET_PREFIXES[1], *(slot.lora_dotted for slot in families.all_text_slots())}
    for name, layer in layers.items():
        if layer.kind != "lora" or "alpha" in layer.tensors or "scale" in layer.tensors or "down" not in layer.tensors:
            continue
        prefix, _, path = name.partition(".")
        if prefix + "." not in dotted:
            continue
        alpha = cfg.get(f"{prefix}.lora_alpha")
        for pattern, value in (cfg.get(f"{prefix}.alpha_pattern") or {}).items():
            try:
                if re.match(rf"(.*\.)?{pattern}$", path):
                    alpha = value
                    break
            except re.error:
                continue
        if alpha is None:
            continue
        rank = int(layer.tensors["down"].shape[0])
        if cfg.get(f"{prefix}.use_rslora"):
            layer.tensors["scale"] = torch.tensor(float(alpha) / math.sqrt(rank))
        else:
            layer.tensors["alpha"] = torch.tensor(float(alpha))


# --------------------------------------------------------------------------- matching


_PATCHABLE = (torch.nn.Linear, torch.nn.Conv2d, torch.nn.LayerNorm, torch.nn.GroupNorm, torch.nn.Embedding)


def unwrap(model):
    """The module behind a ``torch.compile`` wrapper (its parameters are the same tensors)."""
    return getattr(model, "_orig_mod", model)


def storage_tensor(module: torch.nn.Module, name: str = "weight") -> torch.Tensor | None:
    """The tensor that holds ``module.<name>``: the parameter itself, or, when accelerate's
    sequential offload left it on the meta device, the CPU copy in the module's hook (which the
    hook copies to the GPU at every call, so changing it in place changes the model)."""
    t = getattr(module, name, None)
    if t is None or t.device.type != "meta":
        return t
    hook = getattr(module, "_hf_hook", None)
    for h in getattr(hook, "hooks", None) or [hook]:
        weights = getattr(h, "weights_map", None)
        if weights is None:
            continue
        try:
            real = weights[name]
        except KeyError:
            continue
        if torch.is_tensor(real) and real.device.type != "meta":
            return real
    return None


class LayerIndex:
    """Every name a network file may use for a module of ``components`` -> that module.

    Qualified names are ``"unet:<diffusers path>"`` and ``"<component>:<path>"`` for each text encoder,
    the component and the file prefixes being those of the model family's text-encoder slots
    (``te1``, ``te2``: kohya's ``lora_te_``/``lora_te1_``, ``lora_te2_``; PEFT's ``text_encoder.`` ...)."""

    def __init__(self, components):
        self.modules: dict[str, torch.nn.Module] = {}
        self.aliases: dict[str, str] = {}
        unet = getattr(components, "unet", None)
        if unet is not None:
            self._index_unet(unwrap(unet), components.spec.model_family)
        for slot in components.spec.text_slots:
            model = components.text_encoders.get(slot.attr)
            if model is not None:
                self._index_text_encoder(unwrap(model), slot)

    def _index_unet(self, unet, family) -> None:
        try:
            ldm = family.unet_key_map(dict(unet.config))
        except Exception:  # noqa: BLE001 - only the LDM spelling is lost
            ldm = None
        for path, mod in unet.named_modules():
            if not isinstance(mod, _PATCHABLE):
                continue
            q = "unet:" + path
            self.modules[q] = mod
            self._alias(q, UNET_PREFIXES[0] + path.replace(".", "_"), UNET_PREFIXES[1] + path)
            if ldm is not None:
                try:
                    lk = ldm(path + ".weight")
                except KeyError:
                    lk = None
                if lk is not None:
                    self._alias(q, UNET_PREFIXES[0] + lk[: -len(".weight")].replace(".", "_"))

    def _index_text_encoder(self, model, slot) -> None:
        for path, mod in model.named_modules():
            if not isinstance(mod, _PATCHABLE):
                continue
            q = f"{slot.lora_component}:{path}"
            self.modules[q] = mod
            # files name CLIP layers "text_model.encoder..."; transformers 5's CLIPTextModel has no
            # text_model level (CLIPTextModelWithProjection has): accept both spellings
            if path.startswith("text_model."):
                spellings = [path, path[len("text_model."):]]
            elif path == "text_projection":
                spellings = [path]
            else:
                spellings = ["text_model." + path, path]
            names = [p + s.replace(".", "_") for s in spellings for p in slot.lora_prefixes]
            names += [slot.lora_dotted + s for s in spellings]
            self._alias(q, *names)

    def _alias(self, qualified: str, *names: str) -> None:
        for n in names:
            self.aliases.setdefault(n, qualified)

    def find(self, layer_name: str) -> str | None:
        return self.aliases.get(layer_name)


@dataclass
class MatchedLayer:
    qualified: str            # "unet:down_blocks.0...."
    layer: NetworkLayer

    @property
    def component(self) -> str:
        return self.qualified.split(":", 1)[0]


@dataclass
class Match:
    matched: list[MatchedLayer]
    unmatched: list[str]           # layer names with no module in the model
    mismatched: list[str]          # "name: why" for layers whose shapes do not fit
    unusable: list[str]            # "name: why" for layers this program cannot use

    @property
    def fits(self) -> bool:
        return bool(self.matched) and not self.mismatched


def match_network(parsed: ParsedNetwork, index: LayerIndex) -> Match:
    """Pair each layer with a module and check that its delta fits the weight."""
    matched, unmatched, mismatched, unusable = [], [], [], []
    for name, layer in parsed.layers.items():
        why = layer.problem()
        if why:
            unusable.append(f"{name}: {why}")
            continue
        q = index.find(name)
        if q is None:
            unmatched.append(name)
            continue
        weight = index.modules[q].weight
        try:
            _check_shape(layer, tuple(weight.shape))
            bias = getattr(index.modules[q], "bias", None)
            if "diff_b" in layer.tensors:
                if bias is None:
                    raise NetworkError(f"{name}: the module has no bias")
                fit_shape(layer.tensors["diff_b"], tuple(bias.shape), name + " (bias)")
        except NetworkError as e:
            mismatched.append(str(e))
            continue
        matched.append(MatchedLayer(q, layer))
    return Match(matched, unmatched, mismatched, unusable)


def _check_shape(layer: NetworkLayer, shape: tuple) -> None:
    """Shape check without computing the delta (cheap; the numbers of elements must agree)."""
    t = layer.tensors
    kind = layer.kind
    if kind == "lora":
        up, down = t["up"], t["down"]
        out = up.shape[0]
        inner = down.shape[1:] if "mid" not in t else (down.shape[1],) + tuple(t["mid"].shape[2:])
        if up.shape[1] != down.shape[0] and "mid" not in t:
            raise NetworkError(f"{layer.name}: up {tuple(up.shape)} and down {tuple(down.shape)} disagree on the rank")
        n = out * _numel(inner)
    elif kind == "loha":
        n = _numel(_factor_shape(t, "hada_w1_a", "hada_w1_b", "hada_t1"))
        if n != _numel(_factor_shape(t, "hada_w2_a", "hada_w2_b", "hada_t2")):
            raise NetworkError(f"{layer.name}: the two LoHa products have different shapes")
    elif kind == "lokr":
        w1 = tuple(t["lokr_w1"].shape) if "lokr_w1" in t else (t["lokr_w1_a"].shape[0], t["lokr_w1_b"].shape[1])
        if "lokr_w2" in t:
            w2 = tuple(t["lokr_w2"].shape)
        elif "lokr_t2" in t:
            w2 = (t["lokr_w2_a"].shape[1], t["lokr_w2_b"].shape[1]) + tuple(t["lokr_t2"].shape[2:])
        else:
            w2 = (t["lokr_w2_a"].shape[0],) + tuple(t["lokr_w2_b"].shape[1:])
        n = _numel(w1) * _numel(w2)
    elif kind == "diff":
        if "diff" not in t:
            return
        n = t["diff"].numel()
    else:
        raise NetworkError(f"{layer.name}: {layer.problem()}")
    if n != _numel(shape) or (len(shape) >= 2 and shape[0] != _out_dim(layer)):
        raise NetworkError(f"{layer.name}: its delta has {n} values, the model's weight is {shape}")


def _out_dim(layer: NetworkLayer) -> int:
    t = layer.tensors
    if layer.kind == "lora":
        return int(t["up"].shape[0])
    if layer.kind == "loha":
        return int(t["hada_w1_a"].shape[1] if "hada_t1" in t else t["hada_w1_a"].shape[0])
    if layer.kind == "lokr":
        w1o = t["lokr_w1"].shape[0] if "lokr_w1" in t else t["lokr_w1_a"].shape[0]
        if "lokr_w2" in t:
            w2o = t["lokr_w2"].shape[0]
        elif "lokr_t2" in t:
            w2o = t["lokr_w2_a"].shape[1]
        else:
            w2o = t["lokr_w2_a"].shape[0]
        return int(w1o * w2o)
    if layer.kind == "diff" and "diff" in t:
        return int(t["diff"].shape[0])
    return -1


def _factor_shape(t: dict, a: str, b: str, core: str) -> tuple:
    if core in t:
        return (t[a].shape[1], t[b].shape[1]) + tuple(t[core].shape[2:])
    return (t[a].shape[0],) + tuple(t[b].shape[1:])


# --------------------------------------------------------------------------- merging


class BackupStore:
    """Originals of merged parameters, kept between jobs so that the next job with networks does not
    copy them again.  An entry is valid while its parameter is alive and unchanged since the last
    restore (tensor version counter); at most ``max_bytes`` are kept (more is cloned per job)."""

    def __init__(self, max_bytes: int):
        import threading

        self.max_bytes = int(max_bytes)
        self.bytes = 0
        self._items: dict[int, tuple] = {}     # id(param) -> (weakref, backup, version or None)
        self._lock = threading.Lock()

    def get(self, param: torch.Tensor) -> torch.Tensor | None:
        with self._lock:
            entry = self._items.get(id(param))
        if entry is None or entry[0]() is not param or entry[2] != param._version:
            return None
        return entry[1]

    def put(self, param: torch.Tensor, backup: torch.Tensor) -> bool:
        import weakref

        size = backup.numel() * backup.element_size()
        key = id(param)
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.bytes -= old[1].numel() * old[1].element_size()
            if self.bytes + size > self.max_bytes:
                return False
            ref = weakref.ref(param, lambda _r, k=key: self._drop(k, _r))
            self._items[key] = (ref, backup, None)
            self.bytes += size
            return True

    def _drop(self, key: int, ref) -> None:
        with self._lock:
            entry = self._items.get(key)
            if entry is not None and entry[0] is ref:
                del self._items[key]
                self.bytes -= entry[1].numel() * entry[1].element_size()

    def restored(self, param: torch.Tensor) -> None:
        """``param`` holds its original values again: remember its version."""
        with self._lock:
            entry = self._items.get(id(param))
            if entry is not None and entry[0]() is param:
                self._items[id(param)] = (entry[0], entry[1], param._version)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.bytes = 0


class MergedWeights:
    """Parameters changed in place, with their originals; :meth:`restore` undoes it exactly.

    The originals come from ``store`` when it has a valid copy, else are cloned (on the parameter's
    device; on the CPU when that device is out of memory) and offered to ``store``."""

    def __init__(self, store: BackupStore | None = None):
        self._saved: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.store = store
        self.cloned_bytes = 0

    def __len__(self) -> int:
        return len(self._saved)

    def _backup(self, param: torch.Tensor) -> torch.Tensor:
        if self.store is not None:
            kept = self.store.get(param)
            if kept is not None:
                return kept
        try:
            backup = param.detach().clone()
        except torch.OutOfMemoryError:
            backup = param.detach().to("cpu", copy=True)
        self.cloned_bytes += backup.numel() * backup.element_size()
        if self.store is not None:
            self.store.put(param, backup)
        return backup

    @torch.no_grad()
    def add(self, param: torch.Tensor, updates: Iterable[tuple["torch.Tensor | LowRank", float]]) -> None:
        """``param += sum(multiplier * update)`` in float32 (cast back to the parameter's dtype);
        the original is kept for :meth:`restore`."""
        updates = [(u, float(m)) for u, m in updates if u is not None and m != 0.0]
        if not updates:
            return
        if param.device.type == "meta":
            raise NetworkError("the model's weights are offloaded; networks cannot be merged")
        self._saved.append((param, self._backup(param)))
        in_place = param.dtype == torch.float32 and param.is_contiguous()
        target = param.detach() if in_place else param.detach().float().contiguous()
        flat = target.view(target.shape[0], -1)
        for u, m in updates:
            if isinstance(u, LowRank):
                flat.addmm_(u.up.to(target.device), u.down.to(target.device), alpha=m)
            else:
                target.add_(u.to(target.device), alpha=m)
        if not in_place:
            param.copy_(target)

    @torch.no_grad()
    def restore(self) -> None:
        while self._saved:
            param, original = self._saved.pop()
            param.copy_(original)
            if self.store is not None:
                self.store.restored(param)


# --------------------------------------------------------------------------- test / benchmark files


def default_targets(components, conv: bool = True) -> list[str]:
    """What kohya's LoRA trains: the UNet's transformer linears and proj_in/proj_out, the text
    encoders' attention and MLP linears; with ``conv`` (kohya's "LoCon") also the ResNet convs and
    time projections.  Qualified names ("unet:<path>", "te1:<path>", "te2:<path>")."""
    out = []
    unet = getattr(components, "unet", None)
    if unet is not None:
        for path, mod in unet.named_modules():
            if isinstance(mod, torch.nn.Linear) and ".transformer_blocks." in path:
                out.append("unet:" + path)
            elif path.endswith((".proj_in", ".proj_out")) or (conv and ".resnets." in path and path.endswith(
                    (".conv1", ".conv2", ".time_emb_proj", ".conv_shortcut"))):
                out.append("unet:" + path)
    for slot in components.spec.text_slots:
        model = components.text_encoders.get(slot.attr)
        if model is None:
            continue
        for path, mod in model.named_modules():
            if isinstance(mod, torch.nn.Linear) and (".self_attn." in path or ".mlp." in path):
                out.append(f"{slot.lora_component}:{path}")
    return out


def random_lora(components, targets: Iterable[str] | None = None, *, rank: int = 4, alpha: float | None = None,
                seed: int = 0, std: float = 0.1) -> dict[str, torch.Tensor]:
    """A kohya-format LoRA state dict with random ``down``/``up`` weights for ``targets``
    (qualified names, see :func:`default_targets`).  Conv weights get a (rank, in, k, k) down and a
    (out, rank, 1, 1) up.  Text encoders are named with their slot's first kohya prefix (``lora_te_``;
    SDXL: ``lora_te1_``/``lora_te2_``)."""
    gen = torch.Generator().manual_seed(seed)
    models = {"unet": components.unet}
    prefixes = {"unet": UNET_PREFIXES[0]}
    for slot in components.spec.text_slots:
        models[slot.lora_component] = components.text_encoders.get(slot.attr)
        prefixes[slot.lora_component] = slot.lora_prefixes[0]
    out: dict[str, torch.Tensor] = {}
    for q in (default_targets(components) if targets is None else targets):
        comp, path = q.split(":", 1)
        weight = models[comp].get_submodule(path).weight
        if comp == "unet":
            name = prefixes[comp] + path.replace(".", "_")
        else:
            full = path if path.startswith("text_model.") else "text_model." + path
            name = prefixes[comp] + full.replace(".", "_")
        if weight.ndim == 4:
            down = torch.randn(rank, *weight.shape[1:], generator=gen) * std
            up = torch.randn(weight.shape[0], rank, 1, 1, generator=gen) * std
        else:
            down = torch.randn(rank, weight.shape[1], generator=gen) * std
            up = torch.randn(weight.shape[0], rank, generator=gen) * std
        out[name + ".lora_down.weight"] = down.contiguous()
        out[name + ".lora_up.weight"] = up.contiguous()
        if alpha is not None:
            out[name + ".alpha"] = torch.tensor(float(alpha))
    return out


__all__ = [
    "default_targets", "random_lora",
    "NETWORK_EXTS", "NetworkError", "NetworkLayer", "LowRank", "ParsedNetwork", "LayerIndex", "Match", "MatchedLayer",
    "MergedWeights", "BackupStore", "read_network_file", "storage_tensor", "unwrap", "read_metadata", "parse_network", "match_network",
    "fit_shape",
]
