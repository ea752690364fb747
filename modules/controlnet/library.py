"""The app's ControlNet models: the files below ``models/ControlNet`` (and ``--controlnet-dir``), listed by
title as sd-webui-controlnet lists them (``name [hash]``, the hash A1111's legacy 8-digit model hash), found
again by title, name or hash, and kept loaded while used (``control_net_model_cache_size`` most recent)."""
from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from modules.controlnet import models
from modules.controlnet.units import model_name

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Entry:
    title: str                  # "control_v11p_sd15_canny [d14c016b]"
    info: models.ControlNetInfo


class ControlNetLibrary:
    def __init__(self, dirs: list[Path], annotator_dir: Path):
        self.dirs = [Path(d) for d in dirs]
        self.annotator_dir = Path(annotator_dir)
        self.entries: dict[str, Entry] = {}
        self.bad_files: list[tuple[Path, str]] = []
        self._loaded: OrderedDict = OrderedDict()
        self._lock = threading.RLock()
        self._listed = False

    @classmethod
    def from_paths(cls, paths, args=None) -> "ControlNetLibrary":
        root = Path(paths.models_dir) / "ControlNet"
        dirs = [root]
        extra = getattr(args, "controlnet_dir", None) if args is not None else None
        if extra:
            dirs.append(Path(extra).resolve())
        return cls(dirs, root / "annotators")

    def refresh(self) -> list[Entry]:
        from modules import hashes

        good, bad = models.list_models(self.dirs)
        # the annotators' weights live below models/ControlNet/annotators: not control models, not bad files
        good = [i for i in good if self.annotator_dir not in i.path.parents]
        bad = [(p, why) for p, why in bad if self.annotator_dir not in p.parents and p != self.annotator_dir]
        entries: dict[str, Entry] = {}
        for info in good:
            try:
                short = hashes.legacy_model_hash(info.path) if info.path.is_file() else "folder"
            except OSError as e:
                bad.append((info.path, f"cannot read the file: {e}"))
                continue
            title = f"{info.name} [{short}]"
            entries[title] = Entry(title, info)
        with self._lock:
            self.entries = dict(sorted(entries.items(), key=lambda kv: kv[0].lower()))
            self.bad_files = bad
            self._listed = True
            alive = {e.info.path for e in self.entries.values()}
            for key in [k for k in self._loaded if k[0] not in alive]:
                del self._loaded[key]
        for path, why in bad:
            log.warning("ControlNet model skipped: %s", why)
        return list(self.entries.values())

    def ensure_listed(self) -> None:
        if not self._listed:
            self.refresh()

    def titles(self) -> list[str]:
        self.ensure_listed()
        return list(self.entries)

    def find(self, name: str) -> Entry:
        """The model called ``name``: its title, its name without the hash, or its file's name; ControlNetError
        listing what there is otherwise."""
        self.ensure_listed()
        if name in self.entries:
            return self.entries[name]
        want = model_name(name).lower()
        for e in self.entries.values():
            if want in (e.info.name.lower(), e.info.path.name.lower(), e.info.path.stem.lower()):
                return e
        for path, why in self.bad_files:
            if want in (path.name.lower(), path.stem.lower()):
                raise models.ControlNetError(why)
        have = ", ".join(self.entries) or "none (put ControlNet models into models/ControlNet/)"
        raise models.ControlNetError(f"ControlNet model {name!r} not found; the models are: {have}")

    def network(self, entry: Entry, *, dtype, device, base_unet_state=None, unet_config=None, cache_size: int = 2):
        """The loaded module of ``entry`` (kept: the ``cache_size`` most recently used)."""
        key = (entry.info.path, str(dtype), str(device), id(base_unet_state) if entry.info.layout == "diff" else 0)
        with self._lock:
            if key in self._loaded:
                self._loaded.move_to_end(key)
                return self._loaded[key]
        net = models.load(entry.info, base_unet_state=base_unet_state, dtype=dtype, device=device,
                          unet_config=unet_config)
        net.eval().requires_grad_(False)
        with self._lock:
            self._loaded[key] = net
            while len(self._loaded) > max(1, int(cache_size)):
                self._loaded.popitem(last=False)
        return net

    def unload(self) -> None:
        with self._lock:
            self._loaded.clear()
