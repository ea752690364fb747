"""Where things live. One `Paths` object per app instance, built from the flags.

Nothing here is global state: callers hold the object they were given.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIGS_DIR = ROOT / "configs"


@dataclass(frozen=True)
class Paths:
    data_dir: Path
    models_dir: Path
    ckpt_dirs: tuple[Path, ...]
    vae_dirs: tuple[Path, ...]
    lora_dirs: tuple[Path, ...]
    embeddings_dirs: tuple[Path, ...]
    outputs_dir: Path
    config_file: Path
    styles_file: Path
    cache_file: Path
    localizations_dirs: tuple[Path, ...]
    extensions_dir: Path

    @classmethod
    def from_args(cls, args: argparse.Namespace | None = None) -> "Paths":
        def opt(name):
            return getattr(args, name, None) if args is not None else None

        data = Path(opt("data_dir") or ROOT).resolve()
        models = Path(opt("models_dir") or data / "models").resolve()

        def dirs(default: Path, extra):
            out = [default]
            if extra:
                out.append(Path(extra).resolve())
            return tuple(out)

        loc_dirs = [ROOT / "localizations"]
        if data != ROOT:
            loc_dirs.append(data / "localizations")
        if opt("localizations_dir"):
            loc_dirs.append(Path(opt("localizations_dir")).resolve())
        return cls(
            data_dir=data,
            models_dir=models,
            ckpt_dirs=dirs(models / "Stable-diffusion", opt("ckpt_dir")),
            vae_dirs=dirs(models / "VAE", opt("vae_dir")),
            lora_dirs=dirs(models / "Lora", opt("lora_dir")),
            embeddings_dirs=dirs(models / "embeddings", opt("embeddings_dir")),
            outputs_dir=data / "outputs",
            config_file=Path(opt("ui_settings_file") or data / "config.json"),
            styles_file=Path(opt("styles_file") or data / "styles.csv"),
            cache_file=data / "cache.json",
            localizations_dirs=tuple(loc_dirs),
            extensions_dir=data / "extensions",
        )
