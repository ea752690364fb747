"""Extensions: folders under ``extensions/`` with scripts, localizations, javascript and a style sheet.

(Minimal loader: every extension folder's ``scripts/`` is loaded into the app's script registry; a
failure is reported and switches that extension off for this run.)
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass
class Extension:
    name: str
    path: Path
    enabled: bool = True
    error: str | None = None
    scripts: list = field(default_factory=list)


class ExtensionManager:
    def __init__(self, app):
        self.app = app
        self.root = Path(app.paths.extensions_dir)
        self.extensions: dict[str, Extension] = {}
        app.scripts.on_failure.append(self._failed)

    def discover(self) -> list[Extension]:
        found = {}
        if self.root.is_dir():
            for d in sorted(self.root.iterdir()):
                if d.is_dir() and not d.name.startswith("."):
                    found[d.name] = self.extensions.get(d.name) or Extension(d.name, d)
        self.extensions = found
        return list(found.values())

    def load(self) -> None:
        for ext in self.discover():
            if ext.enabled:
                ext.scripts = self.app.scripts.load_dir(ext.path / "scripts", ext.name)

    def _failed(self, source: str, message: str) -> None:
        ext = self.extensions.get(source)
        if ext is not None:
            ext.error = message
