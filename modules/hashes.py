"""File hashes for models: sha256 (cached by path + mtime) and A1111's old 8-digit hash.

The cache is a JSON file (`cache.json` in the data folder) so a restart does not
re-hash multi-gigabyte files. Layout: {"hashes": {"<kind>/<name>": {"mtime": float,
"size": int, "sha256": "<64 hex>"}}}.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

_BLOCK = 1 << 20


def sha256_of_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_BLOCK), b""):
            h.update(chunk)
    return h.hexdigest()


def legacy_model_hash(path: str | os.PathLike) -> str:
    """A1111's old 'model hash': sha256 of the 64 KiB at offset 1 MiB, first 8 hex digits."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        f.seek(0x100000)
        h.update(f.read(0x10000))
    return h.hexdigest()[:8]


def sha256_of_folder(path: str | os.PathLike) -> str:
    """Hash of a diffusers-format folder: every file's relative path and bytes, in sorted order."""
    h = hashlib.sha256()
    root = Path(path)
    for p in sorted(q for q in root.rglob("*") if q.is_file()):
        h.update(str(p.relative_to(root)).replace(os.sep, "/").encode())
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(_BLOCK), b""):
                h.update(chunk)
    return h.hexdigest()


class HashCache:
    """sha256 values keyed by a title, valid while the file's mtime and size are unchanged."""

    def __init__(self, cache_file: str | os.PathLike):
        self.cache_file = Path(cache_file)
        self._lock = threading.Lock()
        self._data: dict | None = None
        self.computed = 0  # how many hashes were computed (not served from cache)

    def _load(self) -> dict:
        if self._data is None:
            try:
                self._data = json.loads(self.cache_file.read_text(encoding="utf-8"))
                if not isinstance(self._data, dict):
                    self._data = {}
            except (OSError, ValueError):
                self._data = {}
        return self._data

    def _save(self) -> None:
        self.cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.cache_file.with_name(self.cache_file.name + f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(self._data, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, self.cache_file)

    def cached(self, key: str, path: str | os.PathLike) -> str | None:
        with self._lock:
            entry = self._load().get("hashes", {}).get(key)
            if not entry:
                return None
            st = _stat(path)
            if entry.get("mtime") == st[0] and entry.get("size") == st[1]:
                return entry.get("sha256")
            return None

    def sha256(self, key: str, path: str | os.PathLike) -> str:
        hit = self.cached(key, path)
        if hit:
            return hit
        p = Path(path)
        value = sha256_of_folder(p) if p.is_dir() else sha256_of_file(p)
        with self._lock:
            self.computed += 1
            data = self._load()
            st = _stat(path)
            data.setdefault("hashes", {})[key] = {"mtime": st[0], "size": st[1], "sha256": value}
            self._save()
        return value


def _stat(path) -> tuple[float, int]:
    p = Path(path)
    if p.is_dir():
        files = [q for q in p.rglob("*") if q.is_file()]
        return (max((q.stat().st_mtime for q in files), default=0.0), sum(q.stat().st_size for q in files))
    st = p.stat()
    return (st.st_mtime, st.st_size)
