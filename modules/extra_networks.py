"""Extra networks: the LoRA and textual-inversion files on disk, applying
``<lora:...>`` tags to a job, and the data behind the "Extra networks" cards
and the /sdapi/v1/loras and /embeddings routes.

One :class:`Library` per app.  It lists files (no hashing while listing),
reads networks when a job asks for them, keeps small caches (parsed files,
per-model layer indexes, computed deltas) and hands :func:`activate` what it
needs.  A job's networks are merged into the weights for that job only:

    active = extra_networks.activate(library, components, networks, conditioners)
    try:
        ... sample ...
    finally:
        active.restore()          # the weights are bit-for-bit the originals again

Tag syntax (A1111): ``<lora:name>``, ``<lora:name:w>`` (both multipliers),
``<lora:name:te:unet>``, named ``te=``, ``unet=`` (``dyn=`` is accepted and
ignored).  ``<lyco:...>`` is the same as ``<lora:...>``.  Problems (unknown
name, unreadable file, a network for another architecture, a weight that is not
a number) leave that network out and are reported in the job's warnings.

Hashes (A1111): "Lora hashes" uses the first 12 hex digits of the file's
``sshs_model_hash`` metadata when it is a hex string, else of the sha256 of the
file *after its header* for .safetensors (kohya's "addnet" hash; metadata edits
do not change it) or of the whole file for other formats.  "TI hashes": 12 hex
digits of the whole embedding file's sha256.  "VAE hash": 10 hex digits of the
VAE file's sha256.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import torch

from modules import hashes, lora, textual_inversion

log = logging.getLogger(__name__)

LORA_KINDS = ("lora", "lyco")
PREVIEW_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".gif")
SORT_KEYS = ("Name", "Date modified")
_HEX = re.compile(r"^[0-9a-fA-F]{12,128}$")


# --------------------------------------------------------------------------- files


def find_preview(path: Path) -> Path | None:
    """``name.png`` / ``name.preview.png`` (or .jpg/.jpeg/.webp/.gif) beside ``path``."""
    base = path.with_suffix("")
    for stem in (base.name + ".preview", base.name):
        for ext in PREVIEW_EXTS:
            cand = base.parent / (stem + ext)
            if cand.is_file() and cand != path:
                return cand
    return None


def read_user_metadata(path: Path) -> dict:
    """A1111's per-network user metadata ``name.json`` beside the file ("description",
    "activation text", "preferred weight", "negative text"); {} when absent or unreadable."""
    js = path.with_suffix(".json")
    if not js.is_file():
        return {}
    try:
        data = json.loads(js.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def addnet_hash(path) -> str:
    """sha256 of a .safetensors file's bytes after its header (kohya / A1111 LoRA hash)."""
    from modules.file_readers import read_header

    h = hashlib.sha256()
    n = read_header(path)[1]
    with open(path, "rb") as f:
        f.seek(8 + n)
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _scan(dirs: Iterable[Path], exts: tuple[str, ...]) -> list[tuple[Path, Path]]:
    """(root, file) for files with one of ``exts`` under each dir, recursively, sorted per dir."""
    out, seen = [], set()
    for root in dirs:
        root = Path(root)
        if not root.is_dir():
            continue
        for p in sorted(root.rglob("*"), key=lambda q: q.as_posix().lower()):
            if p.suffix.lower() in exts and p.is_file() and p.resolve() not in seen:
                seen.add(p.resolve())
                out.append((root, p))
    return out


def _stat(path: Path) -> tuple[float, int]:
    st = path.stat()
    return st.st_mtime, st.st_size


@dataclass
class LoraOnDisk:
    name: str                  # file stem: what <lora:name:...> uses
    path: Path
    rel: str                   # path below its folder, '/' separators
    mtime: float
    size: int
    metadata: dict = field(default_factory=dict)
    user: dict = field(default_factory=dict)
    preview: Path | None = None

    @property
    def alias(self) -> str:
        return str(self.metadata.get("ss_output_name") or self.name)

    @property
    def sd_version(self) -> str:
        """The model family its training metadata names (modules.families), "unknown" without."""
        from modules import families

        fam = families.lora_family(self.metadata)
        return fam.name if fam is not None else "unknown"

    def api_dict(self) -> dict:
        return {"name": self.name, "alias": self.alias, "path": str(self.path), "metadata": dict(self.metadata)}


@dataclass
class EmbeddingOnDisk:
    name: str
    path: Path
    mtime: float
    data: textual_inversion.EmbeddingFile | None = None
    error: str | None = None
    preview: Path | None = None


@dataclass
class Card:
    """One card of the extra-networks browser."""
    kind: str                  # "checkpoint" | "lora" | "textual_inversion"
    name: str
    text: str                  # what a click inserts (a prompt fragment) or selects (a checkpoint title)
    preview: Path | None
    mtime: float
    description: str = ""
    search: str = ""           # lower-case text the search box looks in


# --------------------------------------------------------------------------- tags


def parse_lora_params(params) -> tuple[str, float, float]:
    """(name, te multiplier, unet multiplier) of one ``<lora:...>`` tag; ValueError naming the problem."""
    positional = list(getattr(params, "positional", None) or [])
    named = dict(getattr(params, "named", None) or {})
    if not positional or not positional[0].strip():
        raise ValueError("a <lora:...> tag without a name")
    name = positional[0].strip()

    def num(text, what):
        try:
            v = float(str(text).strip())
        except ValueError:
            raise ValueError(f"<lora:{name}:...>: {what} {text!r} is not a number") from None
        if not math.isfinite(v):
            raise ValueError(f"<lora:{name}:...>: {what} {text!r} is not a finite number")
        return v

    te = num(named["te"], "te weight") if "te" in named else (
        num(positional[1], "weight") if len(positional) > 1 else 1.0)
    unet = num(named["unet"], "unet weight") if "unet" in named else (
        num(positional[2], "unet weight") if len(positional) > 2 else te)
    return name, te, unet


# --------------------------------------------------------------------------- activation


@dataclass
class AppliedNetwork:
    name: str                  # the file's name
    mentioned: str             # as written in the prompt (the "Lora hashes" key)
    shorthash: str | None
    te_multiplier: float
    unet_multiplier: float
    layers: int


class ActiveNetworks:
    """The networks merged into the model for one job.  :meth:`restore` (idempotent) puts the
    original weights back and drops text-conditioning caches made with the merged encoders."""

    def __init__(self, merged: lora.MergedWeights | None = None, applied=None, warnings=None,
                 touches_text_encoder: bool = False, conditioners: dict | None = None):
        self.merged = merged or lora.MergedWeights()
        self.applied: list[AppliedNetwork] = list(applied or [])
        self.warnings: list[str] = list(warnings or [])
        self.touches_text_encoder = touches_text_encoder
        self._conditioners = conditioners
        if touches_text_encoder:
            self._clear_conditioning()

    @property
    def hashes(self) -> dict[str, str]:
        """{name as mentioned: 12-hex hash} for the "Lora hashes" infotext."""
        out = {}
        for a in self.applied:
            if a.shorthash:
                out[a.mentioned.replace(":", "").replace(",", "")] = a.shorthash
        return out

    def _clear_conditioning(self) -> None:
        for cond in list((self._conditioners or {}).values()):
            clear = getattr(cond, "clear_cache", None)
            if clear is not None:
                clear()

    def restore(self) -> None:
        if len(self.merged):
            self.merged.restore()
            if self.touches_text_encoder:
                self._clear_conditioning()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.restore()
        return False


def activate(library: "Library | None", components, networks: dict, conditioners: dict | None = None) -> ActiveNetworks:
    """Merge the networks of a prompt (``parse_extra_networks``' second value) into ``components``."""
    if not networks:
        return ActiveNetworks()
    if library is None:
        warnings = [f"extra network '{kind}' is not available here; its tags were ignored" for kind in networks]
        return ActiveNetworks(warnings=warnings)
    return library.activate(components, networks, conditioners)


def _merge_for_job(ctx) -> None:
    """before_job: merge the networks the job's prompt names (its <lora:...> tags) into the model."""
    ctx.active_networks = activate(ctx.networks, ctx.components, ctx.prompts.networks, ctx.conditioners)
    ctx.warnings.extend(ctx.active_networks.warnings)


def _restore_after_job(ctx, result) -> None:
    """after_job (also after a failure): the original weights, bit for bit."""
    if ctx.active_networks is not None:
        ctx.active_networks.restore()


def register_hooks(hooks) -> None:
    """Extra networks are a built-in user of the job hook points."""
    hooks.add("before_job", _merge_for_job, "extra networks")
    hooks.add("after_job", _restore_after_job, "extra networks")


# --------------------------------------------------------------------------- caches


class _DeltaCache:
    """LRU of merge updates (float32 deltas, or LoRA factors), bounded by bytes."""

    def __init__(self, max_bytes: int):
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self.bytes = 0

    def get(self, key):
        t = self._items.get(key)
        if t is not None:
            self._items.move_to_end(key)
        return t

    @staticmethod
    def _size(t) -> int:
        return t.nbytes if isinstance(t, lora.LowRank) else t.numel() * t.element_size()

    def put(self, key, t) -> None:
        size = self._size(t)
        if size > self.max_bytes:
            return
        old = self._items.pop(key, None)
        if old is not None:
            self.bytes -= self._size(old)
        self._items[key] = t
        self.bytes += size
        while self.bytes > self.max_bytes and self._items:
            _, dropped = self._items.popitem(last=False)
            self.bytes -= self._size(dropped)

    def clear(self) -> None:
        self._items.clear()
        self.bytes = 0


# --------------------------------------------------------------------------- the library


class Library:
    """LoRA and embedding files of the app (see module doc)."""

    def __init__(self, lora_dirs: Iterable[Path] = (), embeddings_dirs: Iterable[Path] = (), *, models=None,
                 hash_cache: hashes.HashCache | None = None, delta_cache_mb: float = 256, backup_cache_mb: float = 4096,
                 parsed_cache_size: int = 4):
        self.lora_dirs = tuple(Path(d) for d in lora_dirs)
        self.embeddings_dirs = tuple(Path(d) for d in embeddings_dirs)
        self.models = models
        self.hash_cache = hash_cache if hash_cache is not None else getattr(models, "hash_cache", None)
        self.loras: dict[str, LoraOnDisk] = {}
        self.duplicates: list[Path] = []
        self.embeddings: dict[str, EmbeddingOnDisk] = {}
        self._vectors: dict = {}
        self._emb_signature: tuple | None = None
        self._lock = threading.RLock()
        self._hashes: dict[tuple, str] = {}
        self._parsed: OrderedDict[tuple, lora.ParsedNetwork] = OrderedDict()
        self._parsed_size = int(parsed_cache_size)
        self._deltas = _DeltaCache(int(delta_cache_mb * 2**20))
        self._backups = lora.BackupStore(int(backup_cache_mb * 2**20))
        self._indexes: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._listed = False

    # ----------------------------------------------------------------- listing

    def refresh(self) -> None:
        self.refresh_loras()
        self.refresh_embeddings()

    def refresh_loras(self) -> dict[str, LoraOnDisk]:
        found: dict[str, LoraOnDisk] = {}
        dups: list[Path] = []
        for root, path in _scan(self.lora_dirs, lora.NETWORK_EXTS):
            try:
                mtime, size = _stat(path)
            except OSError:
                continue
            entry = LoraOnDisk(name=path.stem, path=path, rel=path.relative_to(root).as_posix(), mtime=mtime,
                               size=size, metadata=lora.read_metadata(path), user=read_user_metadata(path),
                               preview=find_preview(path))
            if entry.name in found:
                dups.append(path)
                continue
            found[entry.name] = entry
        with self._lock:
            self.loras = dict(sorted(found.items(), key=lambda kv: kv[0].lower()))
            self.duplicates = dups
            self._listed = True
        return self.loras

    def _emb_files(self) -> list[tuple[Path, Path]]:
        return _scan(self.embeddings_dirs, textual_inversion.EMBEDDING_EXTS)

    def _signature(self, files) -> tuple:
        sig = []
        for _, p in files:
            try:
                sig.append((str(p), *_stat(p)))
            except OSError:
                pass
        return tuple(sig)

    def refresh_embeddings(self, force: bool = True) -> dict[str, EmbeddingOnDisk]:
        """Read the embedding folders.  Without ``force`` nothing is read when no file was
        added, removed or changed since the last call."""
        files = self._emb_files()
        sig = self._signature(files)
        with self._lock:
            if not force and sig == self._emb_signature:
                return self.embeddings
        found: dict[str, EmbeddingOnDisk] = {}
        old = self.embeddings
        for _, path in files:
            try:
                mtime = path.stat().st_mtime
                if path.stat().st_size == 0:
                    continue
            except OSError:
                continue
            prev = next((e for e in old.values() if e.path == path and e.mtime == mtime), None)
            if prev is not None:
                found.setdefault(prev.name, prev)
                continue
            try:
                data = textual_inversion.load_embedding(path, self.hash_cache)
            except textual_inversion.EmbeddingError as e:
                found.setdefault(path.stem, EmbeddingOnDisk(path.stem, path, mtime, None, str(e)))
                log.warning("embedding %s: %s", path, e)
                continue
            if data is None:  # a preview picture
                continue
            found.setdefault(data.name, EmbeddingOnDisk(data.name, path, mtime, data, None, find_preview(path)))
        ordered = dict(sorted(found.items(), key=lambda kv: kv[0].lower()))
        vectors = {name: e.data.to_vectors() for name, e in ordered.items() if e.data is not None}
        with self._lock:
            self.embeddings = ordered
            if _vectors_differ(self._vectors, vectors):
                self._vectors = vectors  # a new object only when something changed (conditioner caches key on it)
            self._emb_signature = sig
        return self.embeddings

    def embedding_vectors(self, refresh_if_changed: bool = True) -> dict:
        """{name: EmbeddingVectors} of every readable embedding (the same dict object until a file changes)."""
        if refresh_if_changed:
            self.refresh_embeddings(force=False)
        return self._vectors

    def ensure_listed(self) -> None:
        if not self._listed:
            self.refresh_loras()

    # ----------------------------------------------------------------- lookup

    def find_lora(self, name: str, rescan: bool = True) -> LoraOnDisk | None:
        """By file stem, alias (``ss_output_name``), either case-insensitively, or path below the folder
        without extension.  An unknown name rescans the folders once (files added since the last listing)."""
        self.ensure_listed()
        hit = self._lookup(name)
        if hit is None and rescan:
            self.refresh_loras()
            hit = self._lookup(name)
        return hit

    def _lookup(self, name: str) -> LoraOnDisk | None:
        with self._lock:
            loras = list(self.loras.values())
        if name in self.loras:
            return self.loras[name]
        for e in loras:
            if e.alias == name:
                return e
        low = name.lower()
        for e in loras:
            if e.name.lower() == low or e.alias.lower() == low:
                return e
        for e in loras:
            if str(Path(e.rel).with_suffix("")).lower() == low:
                return e
        return None

    def lora_shorthash(self, entry: LoraOnDisk) -> str:
        """12 hex digits for "Lora hashes" (see module doc); computed once per file version."""
        meta = str(entry.metadata.get("sshs_model_hash") or "")
        if _HEX.match(meta):
            return meta[:12].lower()
        return self.lora_sha256(entry)[:12]

    def lora_sha256(self, entry: LoraOnDisk) -> str:
        key = (str(entry.path), *_stat(entry.path))
        with self._lock:
            hit = self._hashes.get(key)
        if hit is None:
            hit = addnet_hash(entry.path) if entry.path.suffix.lower() == ".safetensors" \
                else hashes.sha256_of_file(entry.path)
            with self._lock:
                self._hashes[key] = hit
        return hit

    def vae_shorthash(self, vae_name: str | None) -> str | None:
        """10 hex digits of the sha256 of the VAE file called ``vae_name`` (None for the checkpoint's own)."""
        if not vae_name or vae_name == "None" or self.models is None:
            return None
        vaes = getattr(self.models, "vaes", {}) or {}
        path = vaes.get(vae_name)
        if path is None:
            path = next((p for n, p in vaes.items() if Path(p).name == vae_name), None)
        if path is None:
            for root in getattr(self.models.paths, "ckpt_dirs", ()):  # name.vae.* beside a checkpoint
                cands = [p for p in Path(root).rglob(vae_name) if p.is_file()] if Path(root).is_dir() else []
                if cands:
                    path = cands[0]
                    break
        if path is None:
            return None
        try:
            if self.hash_cache is not None:
                return self.hash_cache.sha256("vae/" + vae_name, path)[:10]
            return hashes.sha256_of_file(path)[:10]
        except OSError:
            return None

    # ----------------------------------------------------------------- reading networks

    def parsed(self, entry: LoraOnDisk) -> lora.ParsedNetwork:
        key = (str(entry.path), *_stat(entry.path))
        with self._lock:
            hit = self._parsed.get(key)
            if hit is not None:
                self._parsed.move_to_end(key)
                return hit
        tensors, metadata = lora.read_network_file(entry.path)
        parsed = lora.parse_network(tensors, metadata)
        if not parsed.layers:
            raise lora.NetworkError(f"{entry.path.name} has no network layers this program knows "
                                    f"({len(parsed.unknown_keys)} unknown keys)")
        with self._lock:
            self._parsed[key] = parsed
            while len(self._parsed) > self._parsed_size:
                self._parsed.popitem(last=False)
        return parsed

    def layer_index(self, components) -> lora.LayerIndex:
        """The model's LoRA layer index, kept while its UNet and text encoders are the same objects (held
        weakly by the UNet: the text encoders are kept in the entry, never the UNet itself)."""
        holder = getattr(components, "unet", None)
        texts = list(components.text_encoders.values())
        with self._lock:
            entry = self._indexes.get(holder) if holder is not None else None
            if entry is not None and len(entry[1]) == len(texts) and all(a is b for a, b in zip(entry[1], texts)):
                return entry[0]
        index = lora.LayerIndex(components)
        if holder is not None:
            with self._lock:
                self._indexes[holder] = (index, texts)
        return index

    def _delta(self, file_key: tuple, ml: lora.MatchedLayer, weight: torch.Tensor):
        key = (file_key, ml.layer.name, tuple(weight.shape), str(weight.device))
        with self._lock:
            hit = self._deltas.get(key)
        if hit is not None:
            return hit
        d = ml.layer.update(tuple(weight.shape), device=weight.device)
        with self._lock:
            self._deltas.put(key, d)
        return d

    def clear_caches(self) -> None:
        with self._lock:
            self._parsed.clear()
            self._deltas.clear()
            self._backups.clear()
            self._indexes = weakref.WeakKeyDictionary()

    # ----------------------------------------------------------------- applying

    def activate(self, components, networks: dict, conditioners: dict | None = None) -> ActiveNetworks:
        warnings: list[str] = []
        applied: list[AppliedNetwork] = []
        pending: dict[int, tuple[torch.Tensor, list]] = {}
        touches_te = False
        index = None
        for kind, items in networks.items():
            if kind not in LORA_KINDS:
                warnings.append(f"extra network '{kind}' is not supported; its tags were ignored")
                continue
            for params in items:
                found = self._read_network(params, warnings)
                if found is None:
                    continue
                name, te, unet, entry, parsed, shorthash = found
                index = index or self.layer_index(components)
                match = lora.match_network(parsed, index)
                if not self._fits(name, entry, parsed, match, components, warnings):
                    continue
                try:
                    layer_deltas = self._layer_deltas(entry, index, match, te, unet)
                except (lora.NetworkError, OSError) as e:
                    warnings.append(f"LoRA '{name}' cannot be used: {e}")
                    continue
                for param, d, mult in layer_deltas:
                    pending.setdefault(id(param), (param, []))[1].append((d, mult))
                touches_te = touches_te or any(ml.component != "unet" for ml in match.matched) and te != 0
                applied.append(AppliedNetwork(entry.name, name, shorthash, te, unet, len(match.matched)))
        merged = lora.MergedWeights(self._backups)
        try:
            for param, deltas in pending.values():
                merged.add(param, deltas)
        except Exception as e:
            merged.restore()
            return ActiveNetworks(warnings=warnings + [f"networks could not be merged: {e}"])
        return ActiveNetworks(merged, applied, warnings, touches_te, conditioners)

    def _read_network(self, params, warnings: list[str]):
        """(name, te multiplier, unet multiplier, file entry, parsed network, hash) of one tag, or None (with a
        warning)."""
        try:
            name, te, unet = parse_lora_params(params)
        except ValueError as e:
            warnings.append(f"{e}; the network was left out")
            return None
        entry = self.find_lora(name)
        if entry is None:
            warnings.append(f"LoRA '{name}' not found; it was left out")
            return None
        try:
            return name, te, unet, entry, self.parsed(entry), self.lora_shorthash(entry)
        except (lora.NetworkError, OSError) as e:
            warnings.append(f"LoRA '{name}' cannot be used: {e}")
            return None

    @staticmethod
    def _fits(name: str, entry: LoraOnDisk, parsed, match, components, warnings: list[str]) -> bool:
        """Whether the network fits the model (else a warning says why); partial fits are warned about."""
        arch = getattr(getattr(components, "spec", None), "arch", "this model")
        if not match.matched or match.mismatched:
            why = match.mismatched[0] if match.mismatched else \
                f"none of its {len(parsed.layers)} layers exist in the model"
            hint = f" (made for {entry.sd_version})" if entry.sd_version not in ("unknown",) else ""
            warnings.append(f"LoRA '{name}'{hint} does not fit the loaded model ({arch}): {why}; it was left out")
            return False
        if match.unmatched:
            warnings.append(f"LoRA '{name}': {len(match.unmatched)} of its {len(parsed.layers)} layers have "
                            f"no counterpart in the loaded model and were skipped (first: {match.unmatched[0]})")
        if match.unusable:
            warnings.append(f"LoRA '{name}': {len(match.unusable)} layers were skipped ({match.unusable[0]})")
        return True

    def _layer_deltas(self, entry: LoraOnDisk, index: lora.LayerIndex, match, te: float, unet: float) -> list:
        """(parameter, update, multiplier) for every matched layer with a non-zero multiplier."""
        file_key = (str(entry.path), *_stat(entry.path))
        out = []
        for ml in match.matched:
            mult = te if ml.component != "unet" else unet
            if mult == 0:
                continue
            module = index.modules[ml.qualified]
            weight = lora.storage_tensor(module, "weight")
            if weight is None:
                raise lora.NetworkError("the model's weights are offloaded where they cannot be changed")
            d = self._delta(file_key, ml, weight)
            if d is not None:
                out.append((weight, d, mult))
            if "diff_b" in ml.layer.tensors:
                bias = lora.storage_tensor(module, "bias")
                if bias is not None:
                    out.append((bias, ml.layer.bias_delta(tuple(bias.shape), device=bias.device), mult))
        return out

    # ----------------------------------------------------------------- embeddings for a model

    def embedding_status(self, components=None) -> tuple[dict, dict]:
        """(loaded, skipped) as /sdapi/v1/embeddings shows them: {name: {step, sd_checkpoint,
        sd_checkpoint_name, shape, vectors}}; skipped entries also carry "reason".  Without a model every
        readable embedding counts as loaded."""
        self.refresh_embeddings(force=False)
        problems: dict[str, str] = {}
        if components is not None:
            from modules import conditioning

            try:
                cond = conditioning.TextConditioner(components, embeddings=self._vectors)
                problems = dict(cond.skipped_embeddings)
            except Exception as e:  # noqa: BLE001 - a model without text encoders: nothing fits
                problems = {name: str(e) for name in self._vectors}
        loaded, skipped = {}, {}
        for name, e in self.embeddings.items():
            if e.data is None:
                skipped[name] = {"step": None, "sd_checkpoint": None, "sd_checkpoint_name": None, "shape": None,
                                 "vectors": None, "reason": e.error}
            elif name in problems:
                skipped[name] = {**e.data.api_dict(), "reason": problems[name]}
            else:
                loaded[name] = e.data.api_dict()
        return loaded, skipped

    # ----------------------------------------------------------------- API / cards

    def api_loras(self) -> list[dict]:
        self.ensure_listed()
        return [e.api_dict() for e in self.loras.values()]

    def cards(self, kind: str, search: str = "", sort: str = "Name") -> list[Card]:
        """Cards of one tab ("checkpoint", "lora", "textual_inversion"), filtered by every word of
        ``search`` (case-insensitive; name, alias, folder, description) and sorted by name or by date
        (newest first)."""
        if kind == "lora":
            self.ensure_listed()
            cards = [self._lora_card(e) for e in self.loras.values()]
        elif kind == "textual_inversion":
            self.refresh_embeddings(force=False)
            cards = [Card("textual_inversion", e.name, e.name, e.preview, e.mtime,
                          e.error or (f"{e.data.num_vectors} vector(s), width {e.data.shape}" if e.data else ""),
                          f"{e.name} {e.path.parent.name}".lower())
                     for e in self.embeddings.values()]
        elif kind == "checkpoint":
            infos = list(getattr(self.models, "checkpoints", {}).values()) if self.models is not None else []
            cards = []
            for info in infos:
                path = Path(info.filename)
                try:
                    mtime = path.stat().st_mtime
                except OSError:
                    mtime = 0.0
                cards.append(Card("checkpoint", info.model_name, info.title, find_preview(path), mtime,
                                  getattr(info, "arch", None) or "", f"{info.title}".lower()))
        else:
            raise ValueError(f"unknown card kind {kind!r}")
        words = [w for w in str(search or "").lower().split() if w]
        if words:
            cards = [c for c in cards if all(w in c.search for w in words)]
        if sort == "Date modified":
            cards.sort(key=lambda c: (-c.mtime, c.name.lower()))
        else:
            cards.sort(key=lambda c: c.name.lower())
        return cards

    def _lora_card(self, e: LoraOnDisk) -> Card:
        weight = e.user.get("preferred weight")
        try:
            weight = float(weight) if weight not in (None, "", 0, "0") else 1.0
        except (TypeError, ValueError):
            weight = 1.0
        text = f"<lora:{e.name}:{_fmt(weight)}>"
        activation = str(e.user.get("activation text") or "").strip()
        if activation:
            text += " " + activation
        desc = str(e.user.get("description") or "")
        search = " ".join([e.name, e.alias, e.rel, desc]).lower()
        return Card("lora", e.name, text, e.preview, e.mtime, desc, search)


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def _vectors_differ(a: dict, b: dict) -> bool:
    if a.keys() != b.keys():
        return True
    for name in a:
        x, y = a[name], b[name]
        if x.shorthash != y.shorthash or x.vectors.keys() != y.vectors.keys():
            return True
        if any(not torch.equal(x.vectors[k], y.vectors[k]) for k in x.vectors):
            return True
    return False


__all__ = ["LORA_KINDS", "SORT_KEYS", "Library", "LoraOnDisk", "EmbeddingOnDisk", "Card", "ActiveNetworks",
           "AppliedNetwork", "activate", "parse_lora_params", "find_preview", "addnet_hash", "read_user_metadata"]
