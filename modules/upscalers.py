"""The upscalers a hires pass, SD upscale, the Extras tab and the API offer, by A1111's names.

- latent modes: the hires pass resizes the latent itself;
- "None", "Lanczos", "Nearest": PIL resizes;
- model upscalers: the ESRGAN / Real-ESRGAN / SRVGGNet / SwinIR / DAT files the user put into
  ``models/ESRGAN``, ``models/RealESRGAN``, ``models/SwinIR``, ``models/DAT`` (and the ``--*-models-path``
  folders). The architecture and the scale come from the weights (modules.upscaler_nets), never from the
  file's name; the *name* is the file's stem, except for the files A1111 downloads itself, which keep the
  name A1111 gives them ("R-ESRGAN 4x+" is ``RealESRGAN_x4plus.pth``), so a recipe's "Hires upscaler:
  R-ESRGAN 4x+" finds the file. Nothing is ever downloaded: a known name whose file is missing is an
  error that says which file to put where.

A model upscaler enlarges as A1111's ``Upscaler.upscale`` does: the network runs (at most three times)
until the picture reaches the target size, then Lanczos brings it to the exact size. The network runs
over tiles (``ESRGAN_tile`` / ``ESRGAN_tile_overlap`` settings, A1111's; SwinIR and DAT have their own)
cut and blended back by modules.tiles, so any picture fits in memory; on a CUDA device it runs in float16
where the architecture allows.
"""
from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from PIL import Image

log = logging.getLogger(__name__)

# name -> (torch interpolation mode, antialias)
LATENT_UPSCALE_MODES = {
    "Latent": ("bilinear", False),
    "Latent (antialiased)": ("bilinear", True),
    "Latent (bicubic)": ("bicubic", False),
    "Latent (bicubic antialiased)": ("bicubic", True),
    "Latent (nearest)": ("nearest", False),
    "Latent (nearest-exact)": ("nearest-exact", False),
}
IMAGE_UPSCALERS = ("None", "Lanczos", "Nearest")
MODEL_EXTENSIONS = (".pth", ".pt", ".safetensors", ".ckpt")

# folders under models/ (A1111's) and the flag that adds one more of each
FOLDERS = {"ESRGAN": "esrgan_models_path", "RealESRGAN": "realesrgan_models_path",
           "SwinIR": "swinir_models_path", "DAT": "dat_models_path"}

# the files A1111 downloads (by its URLs' file names, and the names it saves them under) -> its names
KNOWN_FILES = {
    "RealESRGAN_x4plus": "R-ESRGAN 4x+",
    "RealESRGAN_x4plus_anime_6B": "R-ESRGAN 4x+ Anime6B",
    "realesr-general-x4v3": "R-ESRGAN General 4xV3",
    "realesr-general-wdn-x4v3": "R-ESRGAN General WDN 4xV3",
    "realesr-animevideov3": "R-ESRGAN AnimeVideo",
    "RealESRGAN_x2plus": "R-ESRGAN 2x+",
    "003_realSR_BSRGAN_DFOWMFC_s64w8_SwinIR-L_x4_GAN": "SwinIR 4x",
    "SwinIR_4x": "SwinIR 4x",
    "DAT_x2": "DAT x2",
    "DAT_x3": "DAT x3",
    "DAT_x4": "DAT x4",
}
# where each known name's file goes (for the "not installed" message)
_KNOWN_FOLDER = {"R-": "RealESRGAN", "SwinIR": "SwinIR", "DAT": "DAT"}

# A1111's tile settings per family: (tile size key, overlap key)
TILE_KEYS = {"ESRGAN": ("ESRGAN_tile", "ESRGAN_tile_overlap"), "RealESRGAN": ("ESRGAN_tile", "ESRGAN_tile_overlap"),
             "SRVGGNetCompact": ("ESRGAN_tile", "ESRGAN_tile_overlap"),
             "SwinIR": ("SWIN_tile", "SWIN_tile_overlap"), "DAT": ("DAT_tile", "DAT_tile_overlap")}
DEFAULT_TILE, DEFAULT_OVERLAP = 192, 8


class UpscalerError(ValueError):
    """An upscaler that cannot be used: unknown name, file missing or unreadable. The message is for the user."""


def names() -> list[str]:
    """The built-in upscalers, latent modes first (A1111's dropdown order); see UpscalerLibrary.names()."""
    return [*LATENT_UPSCALE_MODES, *IMAGE_UPSCALERS]


def is_builtin(name: str) -> bool:
    return name in LATENT_UPSCALE_MODES or name in IMAGE_UPSCALERS


def upscale_image(im: Image.Image, name: str, width: int, height: int) -> Image.Image:
    """``im`` resized to width x height by the built-in image upscaler ``name`` ("None" keeps it as it is)."""
    if name == "None" or im.size == (width, height):
        return im
    return im.resize((width, height), Image.NEAREST if name == "Nearest" else Image.LANCZOS)


def known_file_for(name: str) -> tuple[str, str] | None:
    """(file name, folder) A1111 uses for one of its downloadable upscalers, or None."""
    for stem, known in KNOWN_FILES.items():
        if known == name:
            folder = next(f for prefix, f in _KNOWN_FOLDER.items() if name.startswith(prefix))
            return f"{stem}.pth", folder
    return None


# ---------------------------------------------------------------------------
# reading files


def read_weights(path: Path, *, shapes_only: bool = False) -> dict:
    """The state dict of an upscaler file, read without running pickled code (``weights_only``); with
    ``shapes_only`` a .safetensors file gives shape-only tensors (its header) and a zip pickle stays mapped.
    Raises UpscalerError with the reason."""
    import torch

    from modules import file_readers, sd_models, upscaler_nets

    if path.is_dir():
        raise UpscalerError("is a folder, not a model file")
    try:
        if path.suffix.lower() == ".safetensors":
            if shapes_only:
                return sd_models._meta_tensors(sd_models._safetensors_header(path))
            return file_readers.read_safetensors(path)[0]
        kind = file_readers.pickle_kind(path)
        if not kind:
            raise UpscalerError("not a PyTorch file (neither a zip archive nor a pickle torch.save wrote); it may be "
                                "truncated, or it is a bare pickle, which is refused because loading it would run "
                                "whatever code it carries")
        obj = file_readers.load_pickle(path, mmap=kind == "zip")
    except (file_readers.FileReadError, sd_models.ModelLoadError) as e:
        raise UpscalerError(str(e)) from None
    except OSError as e:
        raise UpscalerError(f"cannot read the file: {e.strerror or e}") from None
    try:
        sd = upscaler_nets.unwrap(obj)
    except upscaler_nets.UnsupportedModel as e:
        raise UpscalerError(str(e)) from None
    tensors = {k: v for k, v in sd.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not tensors:
        raise UpscalerError("the file holds no tensors")
    return tensors


def probe(path: Path):
    """The ArchInfo of an upscaler file (names and shapes only), or UpscalerError saying what is wrong."""
    from modules import upscaler_nets

    sd = read_weights(path, shapes_only=True)
    try:
        return upscaler_nets.identify(sd)
    except upscaler_nets.UnsupportedModel as e:
        raise UpscalerError(str(e)) from None
    except Exception as e:  # noqa: BLE001 - odd shapes in a hostile file must not stop the listing
        raise UpscalerError(f"cannot be used: {type(e).__name__}: {e}") from None


# ---------------------------------------------------------------------------
# the library of installed upscalers


@dataclass
class UpscalerModel:
    name: str
    path: Path
    folder: str                 # "ESRGAN", "RealESRGAN", "SwinIR", "DAT" (where it was found)
    arch: str
    scale: int
    half: bool = True

    def api_dict(self) -> dict:
        return {"name": self.name, "model_name": self.arch, "model_path": str(self.path), "model_url": None,
                "scale": self.scale}


@dataclass
class BadUpscaler:
    filename: Path
    reason: str


@dataclass
class UpscalerLibrary:
    """The upscaler files in ``dirs`` (folder kind -> list of folders), listed on refresh(); the networks
    loaded on first use and kept (the ``cache_size`` most recent)."""
    dirs: dict[str, list[Path]]
    device: str = "cpu"
    cache_size: int = 2
    models: dict[str, UpscalerModel] = field(default_factory=dict)
    bad_files: list[BadUpscaler] = field(default_factory=list)

    def __post_init__(self):
        self._lock = threading.RLock()
        self._loaded: OrderedDict = OrderedDict()   # (path, mtime) -> (module, info)
        self._listed = False

    @classmethod
    def from_paths(cls, paths, args=None, device: str = "cpu") -> "UpscalerLibrary":
        dirs: dict[str, list[Path]] = {}
        for folder, flag in FOLDERS.items():
            dirs[folder] = [Path(paths.models_dir) / folder]
            extra = getattr(args, flag, None) if args is not None else None
            if extra:
                dirs[folder].append(Path(extra).resolve())
        return cls(dirs, device=device)

    # -- listing ---------------------------------------------------------------------------------
    def refresh(self) -> list[UpscalerModel]:
        models: dict[str, UpscalerModel] = {}
        bad: list[BadUpscaler] = []
        seen: set[Path] = set()
        for folder, roots in self.dirs.items():
            for root in roots:
                if not root.is_dir():
                    continue
                for path in sorted(root.rglob("*"), key=lambda p: str(p).lower()):
                    if path.suffix.lower() not in MODEL_EXTENSIONS or path.resolve() in seen:
                        continue
                    seen.add(path.resolve())
                    try:
                        info = probe(path)
                    except UpscalerError as e:
                        bad.append(BadUpscaler(path, str(e)))
                        log.warning("upscaler %s skipped: %s", path, e)
                        continue
                    name = KNOWN_FILES.get(path.stem, path.stem)
                    if name in models or is_builtin(name):
                        name = f"{name} ({folder})"
                        if name in models:
                            bad.append(BadUpscaler(path, f"another file already has the name {name!r}"))
                            continue
                    models[name] = UpscalerModel(name, path, folder, info.arch, info.scale, info.half)
        with self._lock:
            self.models = models
            self.bad_files = bad
            self._listed = True
            alive = {(str(m.path), _mtime(m.path)) for m in models.values()}
            for key in [k for k in self._loaded if k not in alive]:
                del self._loaded[key]
        return list(models.values())

    def ensure_listed(self) -> None:
        if not self._listed:
            self.refresh()

    def model_names(self) -> list[str]:
        self.ensure_listed()
        return sorted(self.models, key=str.lower)

    def names(self, latent: bool = True) -> list[str]:
        """What an upscaler dropdown offers: (latent modes,) None, Lanczos, Nearest, then the installed models."""
        return [*(LATENT_UPSCALE_MODES if latent else ()), *IMAGE_UPSCALERS, *self.model_names()]

    def resolve(self, name: str) -> UpscalerModel | None:
        """The model called ``name`` (also by its file's stem, case-insensitively); None for a built-in upscaler;
        UpscalerError for anything else, saying what is installed and, for A1111's own names, which file to add."""
        if is_builtin(name):
            return None
        self.ensure_listed()
        if name in self.models:
            return self.models[name]
        low = name.lower()
        for m in self.models.values():
            if m.name.lower() == low or m.path.stem.lower() == low or m.path.name.lower() == low:
                return m
        known = known_file_for(name)
        if known:
            raise UpscalerError(f"upscaler {name!r} is not installed: put {known[0]} into models/{known[1]}/ and "
                                "press refresh (this program never downloads models)")
        installed = ", ".join(self.model_names()) or "none"
        bad = next((b for b in self.bad_files if b.filename.stem.lower() == low), None)
        if bad is not None:
            raise UpscalerError(f"upscaler {name!r} cannot be used: {bad.filename.name}: {bad.reason}")
        raise UpscalerError(f"unknown upscaler {name!r}. Built in: {', '.join(IMAGE_UPSCALERS)} and the latent modes; "
                            f"installed models: {installed}")

    def check(self, name: str, latent: bool = True) -> None:
        """UpscalerError unless ``name`` can be used (a latent mode only where ``latent``)."""
        if name in LATENT_UPSCALE_MODES and not latent:
            raise UpscalerError(f"{name!r} is a latent mode; it only works in a hires pass")
        self.resolve(name)

    # -- running ---------------------------------------------------------------------------------
    def network(self, model: UpscalerModel):
        """(module, info) of ``model`` on this library's device, loaded once and kept while recently used."""
        import torch

        from modules import upscaler_nets

        key = (str(model.path), _mtime(model.path))
        with self._lock:
            if key in self._loaded:
                self._loaded.move_to_end(key)
                return self._loaded[key]
        try:
            sd = read_weights(model.path)
        except UpscalerError as e:
            raise UpscalerError(f"{model.path.name}: {e}") from None
        try:
            net, info = upscaler_nets.load(sd)
        except upscaler_nets.UnsupportedModel as e:
            raise UpscalerError(f"{model.path.name}: {e}") from None
        except (RuntimeError, ValueError, KeyError) as e:
            raise UpscalerError(f"{model.path.name}: the weights do not fit the {model.arch} network ({e})") from None
        dtype = torch.float32
        if str(self.device).startswith("cuda"):
            dtype = torch.float16 if info.half else torch.bfloat16
        net = net.to(device=self.device, dtype=dtype).eval()
        for p in net.parameters():
            p.requires_grad_(False)
        with self._lock:
            self._loaded[key] = (net, info)
            while len(self._loaded) > max(1, self.cache_size):
                self._loaded.popitem(last=False)
        return net, info

    def unload(self) -> None:
        with self._lock:
            self._loaded.clear()

    def upscale(self, im: Image.Image, name: str, width: int, height: int, *, opts: dict | None = None,
                progress: Callable[[int, int], None] | None = None, interrupted: Callable[[], bool] | None = None
                ) -> Image.Image:
        """``im`` at width x height by the upscaler ``name`` (a built-in one or an installed model)."""
        model = self.resolve(name)
        if model is None:
            if name in LATENT_UPSCALE_MODES:
                raise UpscalerError(f"{name!r} is a latent mode; it cannot enlarge a picture")
            return upscale_image(im, name, width, height)
        net, info = self.network(model)
        tile_key, overlap_key = TILE_KEYS.get(info.arch, TILE_KEYS["ESRGAN"])
        opts = opts or {}
        tile = int(opts.get(tile_key, DEFAULT_TILE))
        overlap = int(opts.get(overlap_key, DEFAULT_OVERLAP))
        mode = im.mode
        img = im.convert("RGB")
        same = (width, height) == im.size   # A1111: a scale of 1 still runs the network once (1x models)
        for i in range(3):   # A1111: the network again while the picture is still smaller than the target
            if img.width >= width and img.height >= height and (i > 0 or not same):
                break
            if interrupted is not None and interrupted():
                break
            before = img.size
            try:
                img = run_tiled(net, img, tile, overlap, progress=progress, interrupted=interrupted)
            except InterruptedError:   # the job was interrupted: Lanczos finishes the picture, the job stops
                break
            if img.size == before:
                break
        if img.size != (width, height):
            img = img.resize((width, height), Image.LANCZOS)
        if mode == "RGBA":   # the alpha channel is resized, not invented
            img.putalpha(im.getchannel("A").resize((width, height), Image.LANCZOS))
        return img

    def resizer(self, name: str, opts: dict | None = None, **kw) -> Callable[[Image.Image, int, int], Image.Image]:
        """A ``(im, w, h) -> image`` for modules.images.resize_image, as A1111's ``resize_image`` uses an
        upscaler: the network only when enlarging, then Lanczos to the exact size. The name is resolved here,
        once: an upscaler that is not installed is an UpscalerError before any picture is worked on."""
        model = self.resolve(name)

        def resize(im: Image.Image, w: int, h: int) -> Image.Image:
            if model is None:
                return upscale_image(im, "Lanczos" if name == "None" else name, w, h)
            s = max(w / im.width, h / im.height)
            if s > 1.0:
                im = self.upscale(im, name, round(im.width * s), round(im.height * s), opts=opts, **kw)
            return im if im.size == (w, h) else im.resize((w, h), Image.LANCZOS)
        return resize


def _mtime(path: Path) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return 0.0


# ---------------------------------------------------------------------------
# running a network over tiles


def _forward(net, img: Image.Image) -> Image.Image:
    import numpy as np
    import torch

    p = next(net.parameters())
    arr = np.asarray(img, dtype=np.float32) / 255.0
    x = torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0).to(device=p.device, dtype=p.dtype)
    with torch.inference_mode():
        y = net(x).squeeze(0).float().clamp_(0, 1).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray((y * 255.0).round().astype(np.uint8), "RGB")


def run_tiled(net, img: Image.Image, tile: int, overlap: int, *, progress=None, interrupted=None) -> Image.Image:
    """The network over ``img`` in tiles of ``tile`` pixels overlapping by ``overlap`` (modules.tiles' grid,
    A1111's layout), blended back at the network's scale; ``tile`` 0 (or a picture within one tile): whole."""
    from modules import tiles

    tw, th = min(tile, img.width), min(tile, img.height)
    if tile <= 0 or (tw == img.width and th == img.height):
        out = _forward(net, img)
        if progress is not None:
            progress(1, 1)
        return out
    overlap = max(0, min(overlap, min(tw, th) - 1))
    grid = tiles.split_grid(img, tw, th, overlap)
    total, done, scale = grid.count(), 0, None
    rows = []
    for y, h, row in grid.tiles:
        new_row = []
        for x, w, piece in row:
            if interrupted is not None and interrupted():
                raise InterruptedError("upscaling was interrupted")
            out = _forward(net, piece)
            scale = out.width // piece.width
            new_row.append([x * scale, w * scale, out])
            done += 1
            if progress is not None:
                progress(done, total)
        rows.append([y * scale, h * scale, new_row])
    big = tiles.Grid(rows, tw * scale, th * scale, img.width * scale, img.height * scale, overlap * scale)
    return tiles.combine_grid(big)
