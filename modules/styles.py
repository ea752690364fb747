"""Prompt styles kept in styles.csv (A1111's columns: name, prompt, negative_prompt)."""
from __future__ import annotations

import csv
import os
import threading
from pathlib import Path


class StyleDatabase:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._lock = threading.Lock()
        self.styles: dict[str, dict] = {}
        self.reload()

    def reload(self) -> None:
        styles: dict[str, dict] = {}
        if self.path.is_file():
            with open(self.path, encoding="utf-8-sig", newline="") as f:
                for row in csv.DictReader(f):
                    name = (row.get("name") or "").strip()
                    if name:
                        styles[name] = {"name": name, "prompt": row.get("prompt") or "",
                                        "negative_prompt": row.get("negative_prompt") or ""}
        self.styles = styles

    def names(self) -> list[str]:
        return list(self.styles)

    def save_style(self, name: str, prompt: str, negative_prompt: str) -> None:
        name = name.strip()
        if not name:
            raise ValueError("a style needs a name")
        with self._lock:
            self.styles[name] = {"name": name, "prompt": prompt, "negative_prompt": negative_prompt}
            self._write()

    def delete_style(self, name: str) -> None:
        with self._lock:
            self.styles.pop(name, None)
            self._write()

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8-sig", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["name", "prompt", "negative_prompt"])
            w.writeheader()
            for st in self.styles.values():
                w.writerow(st)
        os.replace(tmp, self.path)

    def apply(self, prompt: str, negative: str, names: list[str]) -> tuple[str, str]:
        from modules.engine.prompts import apply_styles
        return apply_styles(prompt, negative, names, self.styles)
