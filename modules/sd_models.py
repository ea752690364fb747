"""The checkpoint library: discovery, hashes and titles, lookup, loading and switching.

A checkpoint is listed as ``"sub/name.safetensors [abcdef1234]"``: its path
relative to the folder it was found in, and the first 10 hex digits of its
sha256.  Loading goes through :mod:`modules.model_formats` (architecture from
keys and shapes, local configs only, no network).  One :class:`ModelManager`
per app owns the loaded model; it is passed to whoever needs it.
"""
from __future__ import annotations

import difflib
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from modules import devices, hashes
from modules.devices import DevicePolicy

log = logging.getLogger(__name__)

CHECKPOINT_EXTS = (".safetensors", ".ckpt")
VAE_EXTS = (".safetensors", ".ckpt", ".pt", ".bin")


class ModelLoadError(Exception):
    """A model could not be found or loaded; the message is meant for the user."""


@dataclass
class CheckpointInfo:
    filename: Path          # absolute path (file or diffusers folder)
    name: str               # path relative to its scan root, '/' separators
    sha256: str
    is_folder: bool = False
    arch: str | None = None  # detected at listing time where cheap (safetensors header)
    native_resolution: int | None = None

    @property
    def shorthash(self) -> str:
        return self.sha256[:10]

    @property
    def title(self) -> str:
        return f"{self.name} [{self.shorthash}]"

    @property
    def model_name(self) -> str:
        """Name without extension, folders joined by '_' (A1111's 'Model:' infotext value)."""
        stem = self.name[: -len(Path(self.name).suffix)] if Path(self.name).suffix in CHECKPOINT_EXTS else self.name
        return stem.replace("/", "_").replace("\\", "_")

    @property
    def legacy_hash(self) -> str:
        return "" if self.is_folder else hashes.legacy_model_hash(self.filename)

    def api_dict(self) -> dict:
        return {"title": self.title, "model_name": self.model_name, "hash": self.shorthash,
                "sha256": self.sha256, "filename": str(self.filename), "config": None}


@dataclass
class BadFile:
    filename: Path
    reason: str


# ---------------------------------------------------------------------------
# cheap checks made while listing


def _safetensors_header(path: Path) -> dict:
    from modules.file_readers import HeaderError, read_header

    try:
        return read_header(path)[0]
    except HeaderError as e:
        raise ModelLoadError(str(e)) from None


_DTYPES = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32, "F64": torch.float64,
           "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
           "BOOL": torch.bool}


def _meta_tensors(header: dict) -> dict[str, torch.Tensor]:
    """Shape-only (meta device) tensors for the entries of a checked .safetensors header."""
    try:
        return {k: torch.empty(v["shape"], dtype=_DTYPES.get(v["dtype"], torch.float32), device="meta")
                for k, v in header.items() if k != "__metadata__"}
    except (RuntimeError, TypeError, ValueError, OverflowError) as e:
        raise ModelLoadError(f"a tensor's shape cannot be used ({e})") from None


def _pickle_tensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a .ckpt/.pt file, read as listing reads them: with ``torch.load(weights_only=True)`` (a
    pickle that would run code is refused, never run) and, for the zip format, memory-mapped (no weights
    read; the old format, which torch cannot map, is read whole)."""
    from modules import model_formats
    from modules.file_readers import FileReadError, load_pickle, pickle_kind

    kind = pickle_kind(path)
    if not kind:
        raise ModelLoadError("not a PyTorch checkpoint (neither a zip archive nor a pickle torch.save wrote); "
                             "the file may be truncated, or it is a bare pickle, which is refused because "
                             "loading one would run whatever code it carries")
    try:
        obj = load_pickle(path, mmap=kind == "zip")
        return model_formats.state_dict_of(obj, path.name)
    except FileReadError as e:
        raise ModelLoadError(str(e)) from None
    except model_formats.ModelFormatError as e:
        raise ModelLoadError(str(e).removeprefix(f"{path.name}: ")) from None


def _detect(path: Path, tensors: dict, metadata: dict):
    """The ModelSpec of a file's tensors; any failure (however odd the shapes) is a ModelLoadError."""
    from modules import model_formats

    try:
        return model_formats.detect_architecture(tensors, metadata=metadata, sidecar=_config_beside(path))
    except model_formats.ModelFormatError as e:
        raise ModelLoadError(str(e)) from None
    except Exception as e:  # noqa: BLE001 - hostile shapes can break detection anywhere
        raise ModelLoadError(f"not a usable checkpoint: its tensors do not have the shapes of any model this "
                             f"program knows ({type(e).__name__}: {e})") from None


def probe_checkpoint(path: Path):
    """Check a file without loading its weights; return its ModelSpec (None if unknown yet) or raise ModelLoadError."""
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise ModelLoadError("is a folder, not a model file, and not a diffusers model folder either "
                                 "(it has no model_index.json)")
        return None
    if path.suffix == ".safetensors":
        header = _safetensors_header(path)
        meta = header.get("__metadata__") or {}
        return _detect(path, _meta_tensors(header), meta)
    if path.suffix == ".ckpt":
        return _detect(path, _pickle_tensors(path), {})
    raise ModelLoadError(f"unsupported file type {path.suffix}")


def probe_vae(path: Path) -> None:
    """Check a VAE file as listing does (its header or weights_only pickle, and that it has encoder and
    decoder weights); raise ModelLoadError saying what is wrong."""
    if path.is_dir():
        raise ModelLoadError("is a folder, not a VAE file")
    if path.suffix == ".safetensors":
        keys = [k for k in _safetensors_header(path) if k != "__metadata__"]
    else:
        keys = list(_pickle_tensors(path))
    for prefix in ("first_stage_model.", "vae."):
        if any(k.startswith(prefix) for k in keys):
            keys = [k[len(prefix):] for k in keys if k.startswith(prefix)]
            break
    if not any(k.startswith("encoder.") for k in keys) or not any(k.startswith("decoder.") for k in keys):
        raise ModelLoadError(f"not a VAE file (no encoder./decoder. weights; {len(keys)} tensors)")


def _checked(bad: list[BadFile], path: Path, probe):
    """probe(), or None with ``BadFile(path, reason)`` added to ``bad`` and a log line, whatever goes wrong."""
    try:
        return probe()
    except ModelLoadError as e:
        reason = str(e)
    except OSError as e:
        reason = f"cannot read the file: {e.strerror or e}"
    except Exception as e:  # noqa: BLE001 - one hostile file must never stop the listing of the others
        log.exception("unexpected error while checking %s", path)
        reason = f"cannot be used: {type(e).__name__}: {e}"
    bad.append(BadFile(path, reason))
    log.warning("skipping %s: %s", path, reason)
    return None


def _usable_vae(path: Path) -> bool:
    """Whether a VAE file not seen by the last listing passes probe_vae (if not: logged, not used)."""
    bad: list[BadFile] = []
    return bool(_checked(bad, path, lambda: probe_vae(path) or True))


def _config_beside(path: Path) -> dict | None:
    """`name.json`, or A1111's `name.yaml` (an LDM config: its `parameterization: "v"`, or its absence, decides
    v-prediction), next to a checkpoint overrides detection (:func:`modules.file_readers.read_sidecar`).  Listing
    and loading use this one: a config that cannot be read is ignored with a warning, the model still loads."""
    from modules.file_readers import FileReadError
    from modules.file_readers import read_sidecar as read

    try:
        return read(path)
    except (FileReadError, OSError) as e:
        log.warning("ignoring the config next to %s: %s", path.name, e)
        return None


# ---------------------------------------------------------------------------


@dataclass
class LoadedModel:
    info: CheckpointInfo
    components: object           # model_formats.SDComponents
    vae_name: str                # "None" (checkpoint's own), or a VAE file's name
    own_vae_state: dict = field(repr=False, default_factory=dict)
    load_seconds: float = 0.0

    @property
    def spec(self):
        return self.components.spec


class ModelManager:
    """Lists checkpoints and VAEs, loads one model at a time, switches safely."""

    def __init__(self, paths, policy: DevicePolicy | None = None):
        self.paths = paths
        self.policy = policy or devices.cpu_policy()
        self.hash_cache = hashes.HashCache(paths.cache_file)
        self.checkpoints: dict[str, CheckpointInfo] = {}
        self.bad_files: list[BadFile] = []
        self.vaes: dict[str, Path] = {}
        self.loaded: LoadedModel | None = None
        self.lock = threading.RLock()
        self._list_lock = threading.Lock()

    # -- listing -----------------------------------------------------------
    def refresh(self) -> list[CheckpointInfo]:
        """List the checkpoint and VAE folders.  A file that cannot be used, however it is broken, is kept in
        ``bad_files`` with the reason (and logged); it never stops the listing of the others."""
        with self._list_lock:
            found: dict[str, CheckpointInfo] = {}
            bad: list[BadFile] = []
            for root in self.paths.ckpt_dirs:
                if not root.is_dir():
                    continue
                for path in _scan(root):
                    info = _checked(bad, path, lambda p=path, r=root: self._checkpoint_info(p, r))
                    if info is not None:
                        found.setdefault(info.title, info)
            self.checkpoints = dict(sorted(found.items(), key=lambda kv: kv[0].lower()))
            self.vaes = self._scan_vaes(bad)
            self.bad_files = bad
            return list(self.checkpoints.values())

    def _checkpoint_info(self, path: Path, root: Path) -> CheckpointInfo:
        name = path.relative_to(root).as_posix()
        spec = probe_checkpoint(path)
        sha = self.hash_cache.sha256("checkpoint/" + name, path)
        return CheckpointInfo(path, name, sha, is_folder=path.is_dir(), arch=spec.arch if spec else None,
                              native_resolution=int(spec.native_resolution) if spec else None)

    def _scan_vaes(self, bad: list[BadFile] | None = None) -> dict[str, Path]:
        out: dict[str, Path] = {}
        found = []
        for root in self.paths.vae_dirs:
            if root.is_dir():
                found += [(root, p) for p in sorted(root.rglob("*")) if p.suffix in VAE_EXTS]
        for root in self.paths.ckpt_dirs:  # name.vae.safetensors beside checkpoints
            if root.is_dir():
                found += [(root, p) for p in sorted(root.rglob("*.vae.*")) if p.suffix in VAE_EXTS]
        for root, p in found:
            name = p.relative_to(root).as_posix()
            if name not in out and _checked(bad if bad is not None else [], p, lambda q=p: probe_vae(q) or True):
                out[name] = p
        return out
    def titles(self) -> list[str]:
        return list(self.checkpoints)

    def vae_choices(self) -> list[str]:
        return ["Automatic", "None", *self.vaes]

    # -- lookup ------------------------------------------------------------
    def find(self, query: str) -> CheckpointInfo:
        """By title, name, name without extension, short/legacy hash, sha256, then closest match."""
        if not self.checkpoints:
            self.refresh()
        q = (query or "").strip()
        if not q:
            raise ModelLoadError("no checkpoint name given")
        infos = list(self.checkpoints.values())
        for info in infos:
            if q in (info.title, info.name, info.model_name, str(info.filename)):
                return info
        ql = q.lower().strip("[]")
        if len(ql) >= 8 and all(c in "0123456789abcdef" for c in ql):
            for info in infos:
                if info.sha256.startswith(ql):
                    return info
            if len(ql) == 8:
                for info in infos:
                    if not info.is_folder and info.legacy_hash == ql:
                        return info
        p = Path(q)
        inside = any(root.resolve() in p.resolve().parents for root in self.paths.ckpt_dirs if root.is_dir()) \
            if p.is_absolute() else False
        if inside and ((p.is_file() and p.suffix in CHECKPOINT_EXTS) or (p / "model_index.json").is_file()):
            sha = self.hash_cache.sha256("checkpoint/" + p.name, p)
            return CheckpointInfo(p.resolve(), p.name, sha, is_folder=p.is_dir())
        # closest: a title containing the query (shortest first), then fuzzy
        contains = sorted((i for i in infos if ql in i.title.lower()), key=lambda i: len(i.title))
        if contains:
            return contains[0]
        by_stem = {Path(i.name).stem.lower(): i for i in infos}
        close = difflib.get_close_matches(Path(ql).stem, list(by_stem), n=1, cutoff=0.6)
        if close:
            return by_stem[close[0]]
        names = ", ".join(self.checkpoints) or "(none found)"
        raise ModelLoadError(f"checkpoint '{query}' not found. Available: {names}")

    def default_checkpoint(self) -> CheckpointInfo | None:
        if not self.checkpoints:
            self.refresh()
        infos = list(self.checkpoints.values())
        return infos[0] if infos else None

    # -- loading -----------------------------------------------------------
    def resolve_vae(self, info: CheckpointInfo, choice: str | None) -> tuple[str, Path | None]:
        choice = choice or "Automatic"
        if choice == "None":
            return "None", None
        if choice == "Automatic":
            base = info.filename.with_suffix("") if not info.is_folder else info.filename
            for ext in VAE_EXTS:
                cand = base.parent / f"{base.name}.vae{ext}"
                if cand.is_file() and (cand in self.vaes.values() or _usable_vae(cand)):
                    return cand.name, cand
            stem = Path(info.name).stem
            for name, p in self.vaes.items():
                if Path(name).stem in (stem, stem + ".vae") and ".vae." not in p.name:
                    return name, p
            return "None", None
        if choice in self.vaes:
            return choice, self.vaes[choice]
        for name, p in self.vaes.items():
            if Path(name).stem == choice or p.name == choice:
                return name, p
        for b in self.bad_files:
            if choice in (b.filename.name, b.filename.stem):
                raise ModelLoadError(f"VAE '{choice}' cannot be used: {b.reason}")
        raise ModelLoadError(f"VAE '{choice}' not found. Available: {', '.join(self.vae_choices())}")

    def load(self, query: str | CheckpointInfo | None = None, vae: str | None = None) -> LoadedModel:
        """Make `query` the loaded model (no-op if it already is). On failure the previous model stays."""
        from modules import model_formats

        with self.lock:
            info = query if isinstance(query, CheckpointInfo) else (
                self.find(query) if query else (self.loaded.info if self.loaded else self.default_checkpoint()))
            if info is None:
                raise ModelLoadError("no checkpoint found in " + ", ".join(str(d) for d in self.paths.ckpt_dirs))
            vae_name, vae_path = self.resolve_vae(info, vae)
            if self.loaded is not None and self.loaded.info.sha256 == info.sha256:
                if self.loaded.vae_name != vae_name:
                    self._apply_vae(self.loaded, vae_name, vae_path)
                return self.loaded
            t0 = time.perf_counter()
            previous = self.loaded
            try:
                if info.is_folder:
                    state_dict = None
                else:
                    state_dict, meta = model_formats.read_state_dict(info.filename)
                    spec = model_formats.detect_architecture(state_dict, metadata=meta, sidecar=_config_beside(info.filename))
            except model_formats.ModelFormatError as e:
                raise ModelLoadError(f"{info.name}: {e}") from None
            except OSError as e:
                raise ModelLoadError(f"{info.name}: cannot read the file ({e.strerror or e})") from None
            except Exception as e:  # noqa: BLE001 - a hostile file can fail anywhere; the old model stays
                raise ModelLoadError(f"{info.name}: cannot be used ({type(e).__name__}: {e})") from None
            # the new file is readable and recognised: release the old model before building the new one
            self.unload()
            try:
                if info.is_folder:
                    comps = model_formats.load_diffusers_folder(info.filename, dtype=torch.float32)
                else:
                    comps = model_formats.build_components(state_dict, spec, dtype=torch.float32, device="cpu")
                    del state_dict
                loaded = LoadedModel(info=info, components=comps, vae_name="None")
                loaded.own_vae_state = {k: v.detach().clone() for k, v in comps.vae.state_dict().items()} if vae_path else {}
                if vae_path is not None:
                    self._apply_vae(loaded, vae_name, vae_path)
                place_components(comps, self.policy)
            except Exception as e:  # noqa: BLE001 - any failure: report, restore the previous model
                self.loaded = None
                devices.release_memory()
                if previous is not None:
                    try:
                        self.load(previous.info, previous.vae_name)
                    except ModelLoadError:
                        log.exception("could not restore the previous model")
                if isinstance(e, ModelLoadError):
                    raise
                raise ModelLoadError(f"{info.name}: {e}") from e
            loaded.load_seconds = time.perf_counter() - t0
            self.loaded = loaded
            log.info("loaded %s (%s) in %.1fs", info.title, comps.spec.arch, loaded.load_seconds)
            return loaded

    def _apply_vae(self, loaded: LoadedModel, vae_name: str, vae_path: Path | None) -> None:
        from modules import model_formats

        vae = loaded.components.vae
        if not loaded.own_vae_state:
            loaded.own_vae_state = {k: v.detach().to("cpu", copy=True) for k, v in vae.state_dict().items()}
        if vae_path is None:
            sd = loaded.own_vae_state
        else:
            try:
                sd = model_formats.load_vae_state_dict(vae_path)
            except model_formats.ModelFormatError as e:
                raise ModelLoadError(f"VAE {vae_name}: {e}") from None
            except Exception as e:  # noqa: BLE001 - a hostile VAE file can fail anywhere
                raise ModelLoadError(f"VAE {vae_name}: cannot be used ({type(e).__name__}: {e})") from None
        try:
            missing, unexpected = vae.load_state_dict(sd, strict=False)
        except RuntimeError as e:  # tensors of the wrong shapes: the model's own VAE is put back
            vae.load_state_dict(loaded.own_vae_state)
            raise ModelLoadError(f"VAE {vae_name} does not fit this model: "
                                 f"{str(e).splitlines()[-1].strip() if str(e) else e}") from None
        if missing or unexpected:
            vae.load_state_dict(loaded.own_vae_state)
            raise ModelLoadError(f"VAE {vae_name} does not fit this model ({len(missing)} missing, {len(unexpected)} unexpected keys)")
        loaded.vae_name = vae_name

    def unload(self) -> None:
        with self.lock:
            if self.loaded is None:
                return
            self.loaded = None
            devices.release_memory()


def place_components(comps, pol: DevicePolicy) -> None:
    """Place the models per the device policy: all on the device, or offloaded with accelerate's hooks
    (--medvram: whole models move to the GPU only while they run; --lowvram: module by module)."""
    models = comps.named_models()
    for name, m in models:
        # torch's own .to: diffusers' override only adds a warning about fp32-kept modules, which these
        # models do not have
        torch.nn.Module.to(m, dtype=pol.vae_dtype if name == "vae" else pol.dtype).eval().requires_grad_(False)
    if pol.channels_last:
        comps.unet.to(memory_format=torch.channels_last)
    if pol.offload == "none":
        for _, m in models:
            m.to(device=pol.device)
    elif pol.offload == "medvram":
        from accelerate import cpu_offload_with_hook

        hooks = []
        for _, m in models:
            _, hook = cpu_offload_with_hook(m, execution_device=pol.device,
                                            prev_module_hook=hooks[-1] if hooks else None)
            hooks.append(hook)
        # a ring: the text encoder, first in a job, sends the VAE (last in the job before) back to the CPU,
        # so one model at a time sits on the GPU, between jobs too
        hooks[0].hook.prev_module_hook = hooks[-1]
    else:  # lowvram
        from accelerate import cpu_offload

        for _, m in models:
            cpu_offload(m, execution_device=pol.device)
    comps.execution_device = pol.device
    if pol.compile:
        # mode "default": kernel fusion without CUDA graphs, so offload hooks and in-place LoRA merges
        # keep working; the first generation pays the compile cost (the engine logs it: engine/job.py)
        comps.unet = torch.compile(comps.unet)
        comps.compile_pending = True
        log.info("UNet wrapped with torch.compile; the first generation compiles it")


def native_resolution_of(info: CheckpointInfo) -> int:
    """The checkpoint's own size (metadata), else its variant's (configs/<arch>/arch.json), else 512."""
    if info.native_resolution:
        return info.native_resolution
    from modules import families

    return families.native_resolution(info.arch)


def _scan(root: Path):
    """Checkpoint files and diffusers folders under root, recursively, sorted."""
    out = []
    for p in sorted(root.rglob("*")):
        if p.is_dir():
            if (p / "model_index.json").is_file() or p.suffix in CHECKPOINT_EXTS:  # a folder named x.ckpt: bad
                out.append(p)
        elif p.suffix in CHECKPOINT_EXTS and ".vae." not in p.name:
            if any((q / "model_index.json").is_file() for q in p.parents if root in q.parents or q == root):
                continue  # weights inside a diffusers folder
            out.append(p)
    return out
