"""Textual-inversion embedding files -> :class:`modules.conditioning.EmbeddingVectors`.

File layouts read (the facts are A1111's ``textual_inversion.py``):

* A1111 ``.pt``: ``{"string_to_param": {"*": (n, dim)}, "name", "step",
  "sd_checkpoint", "sd_checkpoint_name", ...}``;
* A1111 ``.safetensors``: ``{"emb_params": (n, dim)}``;
* diffusers ``.bin`` / ``.safetensors``: ``{"<token>": (dim,) or (n, dim)}``;
* SDXL: ``{"clip_l": (n, 768), "clip_g": (n, 1280)}``;
* a PNG whose text chunk ``sd-ti-embedding`` holds the A1111 data as JSON
  (tensors as ``{"TORCHTENSOR": [[...]]}``).  Other PNGs are previews.

Pickles are loaded with ``torch.load(weights_only=True)``: a file that needs
code to load is refused.  The name is the file's stem (a PNG's ``name`` field
wins, as in A1111); the hash is the sha256 of the whole file, 12 hex digits in
"TI hashes".
"""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from modules import conditioning, hashes

EMBEDDING_EXTS = (".pt", ".bin", ".safetensors", ".png", ".webp")


class EmbeddingError(Exception):
    """An embedding file cannot be used; the message is meant for the user."""


@dataclass
class EmbeddingFile:
    name: str
    vectors: dict[str, torch.Tensor]       # "clip_l" / "clip_g" -> (n, dim) float32
    filename: Path | None = None
    sha256: str | None = None
    step: int | None = None
    sd_checkpoint: str | None = None
    sd_checkpoint_name: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def num_vectors(self) -> int:
        for v in self.vectors.values():
            return int(v.shape[0])
        return 0

    @property
    def shape(self) -> int:
        """A1111's ``shape``: the vector width (SDXL: both widths added)."""
        return sum(int(v.shape[-1]) for v in self.vectors.values())

    @property
    def shorthash(self) -> str | None:
        return self.sha256[:12] if self.sha256 else None

    def to_vectors(self) -> conditioning.EmbeddingVectors:
        return conditioning.EmbeddingVectors(self.name, dict(self.vectors), self.shorthash)

    def api_dict(self) -> dict:
        """A1111's /sdapi/v1/embeddings entry."""
        return {"step": self.step, "sd_checkpoint": self.sd_checkpoint,
                "sd_checkpoint_name": self.sd_checkpoint_name, "shape": self.shape, "vectors": self.num_vectors}


def _read(path: Path):
    ext = path.suffix.lower()
    from modules.file_readers import FileReadError, load_pickle, read_safetensors

    if ext == ".safetensors":
        try:
            return read_safetensors(path)[0]
        except FileReadError as e:
            raise EmbeddingError(f"{path.name}: {e}") from None
    if ext in (".pt", ".bin"):
        try:
            return load_pickle(path)
        except FileReadError as first:
            e = first
        # the original textual-inversion code saved string_to_param as a torch.nn.ParameterDict:
        # allow that one torch class (it restores its attributes; no code from the file runs)
        try:
            return load_pickle(path, allow=(torch.nn.ParameterDict,))
        except FileReadError:
            raise EmbeddingError(f"{path.name} cannot be loaded safely (only plain tensors are accepted): "
                                 f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    if ext in (".png", ".webp"):
        from PIL import Image

        with Image.open(path) as im:
            text = getattr(im, "text", {}) or {}
            raw = text.get("sd-ti-embedding")
        if raw is None:
            return None  # a preview picture, not an embedding
        return _from_b64_json(raw)
    raise EmbeddingError(f"{path.name}: unsupported file type")


def _from_b64_json(raw: str):
    def hook(d):
        if "TORCHTENSOR" in d:
            return torch.tensor(d["TORCHTENSOR"], dtype=torch.float32)
        return d

    try:
        return json.loads(base64.b64decode(raw), object_hook=hook)
    except ValueError as e:
        raise EmbeddingError(f"the embedded data is damaged: {e}") from None


def _as_2d(t) -> torch.Tensor:
    if not torch.is_tensor(t):
        raise EmbeddingError("the embedding holds no tensor")
    t = t.detach().to(torch.float32)
    if t.ndim == 1:
        t = t.unsqueeze(0)
    if t.ndim != 2:
        raise EmbeddingError(f"embedding vectors have shape {tuple(t.shape)}, expected (n, dim)")
    return t.contiguous()


def embedding_from_data(data, name: str) -> EmbeddingFile:
    """Interpret loaded file data (see module doc)."""
    if not isinstance(data, dict) or not data:
        raise EmbeddingError("not a textual-inversion embedding (no tensor dictionary)")
    meta = {}
    if "string_to_param" in data:
        params = data["string_to_param"]
        params = getattr(params, "_parameters", params)
        if not isinstance(params, dict) or len(params) != 1:
            raise EmbeddingError("the embedding file has several terms in it (or none)")
        vectors = {"clip_l": _as_2d(next(iter(params.values())))}
        meta = data
    elif "clip_l" in data and "clip_g" in data:
        vectors = {"clip_l": _as_2d(data["clip_l"]), "clip_g": _as_2d(data["clip_g"])}
        if vectors["clip_l"].shape[0] != vectors["clip_g"].shape[0]:
            raise EmbeddingError("clip_l and clip_g have different numbers of vectors")
    else:
        tensors = {k: v for k, v in data.items() if torch.is_tensor(v)}
        if len(tensors) != 1:
            raise EmbeddingError(f"not a textual-inversion embedding ({len(tensors)} tensors, expected 1)")
        vectors = {"clip_l": _as_2d(next(iter(tensors.values())))}
        meta = data

    def opt(key, cast):
        v = meta.get(key) if isinstance(meta, dict) else None
        try:
            return cast(v) if v is not None else None
        except (TypeError, ValueError):
            return None

    return EmbeddingFile(name=name, vectors=vectors, step=opt("step", int),
                         sd_checkpoint=opt("sd_checkpoint", str), sd_checkpoint_name=opt("sd_checkpoint_name", str))


def load_embedding(path, hash_cache: hashes.HashCache | None = None) -> EmbeddingFile | None:
    """Read one embedding file; None for a PNG that carries no embedding (a preview)."""
    path = Path(path)
    name = path.stem
    if path.suffix.lower() in (".png", ".webp") and name.lower().endswith(".preview"):
        return None
    try:
        data = _read(path)
    except EmbeddingError:
        raise
    except Exception as e:  # noqa: BLE001 - damaged files of any kind
        raise EmbeddingError(f"cannot read {path.name}: {e}") from None
    if data is None:
        return None
    if path.suffix.lower() in (".png", ".webp") and isinstance(data, dict) and data.get("name"):
        name = str(data["name"])
    emb = embedding_from_data(data, name)
    emb.filename = path
    if hash_cache is not None:
        emb.sha256 = hash_cache.sha256("textual_inversion/" + name, path)
    else:
        emb.sha256 = hashes.sha256_of_file(path)
    return emb


def save_embedding(path, vectors: torch.Tensor | dict[str, torch.Tensor], name: str | None = None,
                   step: int | None = None) -> Path:
    """Write an embedding in A1111's layout (.pt: string_to_param; .safetensors: emb_params or clip_l/clip_g).
    Used by tests and tools."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(vectors, dict):
        tensors = {k: v.contiguous() for k, v in vectors.items()}
    else:
        tensors = None
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import save_file

        save_file(tensors if tensors is not None else {"emb_params": vectors.contiguous()}, str(path))
    elif tensors is not None:
        torch.save(tensors, str(path))
    else:
        torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": vectors}, "name": name or path.stem,
                    "step": step, "sd_checkpoint": None, "sd_checkpoint_name": None}, str(path))
    return path


__all__ = ["EMBEDDING_EXTS", "EmbeddingError", "EmbeddingFile", "embedding_from_data", "load_embedding",
           "save_embedding"]
