"""The registry of model families (as ComfyUI's list of supported models): SD 1.x, SD 2.x, SDXL.

Everything that differs between kinds of Stable Diffusion model is asked of the family of the
loaded model (see :mod:`modules.families.base`); no code outside this package tests a family's
name (``tests/test_families.py`` enforces it).  A family is added by one module that defines a
:class:`ModelFamily` and :func:`register` s it, plus its config folders: see ``README.md`` here.

    fam = families.family_of(spec)           # the ModelFamily of a loaded model
    slots = fam.text_encoders(fam.variant(spec.arch))
"""
from __future__ import annotations

from typing import Iterable, Mapping

from modules.families import sd1, sd2, sdxl
from modules.families.base import (CONFIGS_DIR, KeyView, ModelFamily, TextEncoderSlot, Variant,  # noqa: F401
                                   clip_skip_layer)

_REGISTRY: dict[str, ModelFamily] = {}
DEFAULT = sd1.FAMILY.name   # standalone VAE files' config, the prompt counter before a model is loaded


def register(family: ModelFamily, *, first: bool = False) -> ModelFamily:
    """Add ``family`` (``first``: ask it before the others when detecting)."""
    if not family.name or not family.variants:
        raise ValueError("a model family needs a name and at least one variant")
    taken = {v.name for f in _REGISTRY.values() if f.name != family.name for v in f.variants}
    clash = taken & {v.name for v in family.variants}
    if clash:
        raise ValueError(f"variant names already registered: {', '.join(sorted(clash))}")
    _REGISTRY.pop(family.name, None)
    items = list(_REGISTRY.items())
    entry = (family.name, family)
    _REGISTRY.clear()
    _REGISTRY.update([entry, *items] if first else [*items, entry])
    return family


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)


def all_families() -> list[ModelFamily]:
    return list(_REGISTRY.values())


def get(name: str) -> ModelFamily:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown model family {name!r}; known: {', '.join(_REGISTRY)}") from None


def default() -> ModelFamily:
    return get(DEFAULT)


def variant(arch: str) -> Variant:
    """The variant called ``arch`` (a ModelSpec.arch) in any family."""
    for fam in _REGISTRY.values():
        for v in fam.variants:
            if v.name == arch:
                return v
    raise KeyError(f"unknown architecture {arch!r}; known: {', '.join(arch_names())}")


def arch_names() -> list[str]:
    return [v.name for fam in _REGISTRY.values() for v in fam.variants]


def names() -> list[str]:
    """Every family and variant name (what no code outside this package may compare against)."""
    return sorted({*_REGISTRY, *arch_names()})


def family_of(spec) -> ModelFamily:
    """The family of a ModelSpec (or anything with a ``family`` name)."""
    return get(spec.family)


def variant_of(spec) -> Variant:
    return get(spec.family).variant(spec.arch)


def text_encoders_of(spec) -> tuple[TextEncoderSlot, ...]:
    fam = family_of(spec)
    return fam.text_encoders(fam.variant(spec.arch))


def all_text_slots() -> list[TextEncoderSlot]:
    """Every text-encoder slot of every family (the names LoRA files may use for text-encoder layers)."""
    out: list[TextEncoderSlot] = []
    for fam in _REGISTRY.values():
        for v in fam.variants:
            out.extend(slot for slot in fam.text_encoders(v) if slot not in out)
    return out


def text_slot_kinds() -> list[TextEncoderSlot]:
    """One text-encoder slot per name any family uses (how a diffusers folder's encoders are built)."""
    seen: dict[str, TextEncoderSlot] = {}
    for fam in _REGISTRY.values():
        for v in fam.variants:
            for slot in fam.text_encoders(v):
                seen.setdefault(slot.attr, slot)
    return list(seen.values())


def match_checkpoint(keys: Iterable[str]) -> tuple[ModelFamily, Variant] | None:
    """(family, variant before inpainting/prediction are known) of a single-file checkpoint's keys, or None.
    A file that one family recognises as its own but incomplete raises that family's error, unless
    another family claims the file."""
    from modules.model_formats import ModelFormatError

    view = KeyView(list(keys))
    problem = None
    for fam in _REGISTRY.values():
        try:
            found = fam.match(view)
        except ModelFormatError as e:
            problem = problem or e
            continue
        if found is not None:
            return fam, found
    if problem is not None:
        raise problem
    return None


def match_diffusers(unet_cfg: dict, text_configs: list[dict], names_: list[str],
                    scheduler_cfg: dict) -> tuple[ModelFamily, Variant] | None:
    for fam in _REGISTRY.values():
        found = fam.match_diffusers(unet_cfg, text_configs, names_, scheduler_cfg)
        if found is not None:
            return fam, found
    return None


def lora_family(metadata: Mapping[str, str]) -> ModelFamily | None:
    """The family a LoRA file's training metadata names, or None when it does not tell."""
    for fam in _REGISTRY.values():
        if metadata and fam.lora_made_for(metadata):
            return fam
    return None


def native_resolution(arch: str | None, fallback: int = 512) -> int:
    try:
        return variant(arch).native_resolution if arch else fallback
    except (KeyError, OSError):
        return fallback


for _fam in (sd1.FAMILY, sd2.FAMILY, sdxl.FAMILY):
    register(_fam)
