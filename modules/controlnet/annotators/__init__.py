"""Networks of the preprocessors that need an annotator's weights (depth, pose, line art, normals,
segmentation, soft edges), written here: the packages that ship them (controlnet_aux, timm, mmcv) need
torchvision or do not install with this project's torch.

Each module of this package defines its network(s) as plain ``torch.nn`` code whose parameter names
are those of the published weight files, and registers a preprocessor function with
``preprocessors.register_network(name, fn)`` at import. The function is called as

    fn(image, res=..., thr_a=..., thr_b=..., weights={file name: Path}, **kw) -> map

(``image`` HxWx3 uint8 RGB, the map as the extension's preprocessor returns it, uint8) once every file
the preprocessor needs was found in ``models/ControlNet/annotators/`` (or its sub-folder).

:func:`load_state_dict` reads a weight file without running pickled code; :func:`cached` keeps the
built networks of the last few files so a second job does not read the file again.
"""
from __future__ import annotations

import importlib
import logging
import pkgutil
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Callable

from modules import file_readers
from modules.controlnet.preprocessors import PreprocessorUnavailable


class AnnotatorError(PreprocessorUnavailable):
    """An annotator weight file that cannot be used; the message names the file and why (the unit fails
    as bad input, like a missing file)."""


def device():
    """Where annotators run: the first CUDA device when there is one, else the CPU."""
    import torch

    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def load_state_dict(path, strip=("module.",), unwrap=("state_dict", "model", "net", "params")) -> dict:
    """The tensors of an annotator file (.pth/.pt/.ckpt with ``weights_only``, or .safetensors), unwrapped
    from a ``state_dict``/``model``/... entry, with DataParallel's ``module.`` prefix removed."""
    path = Path(path)
    try:
        if path.suffix.lower() == ".safetensors":
            obj, _ = file_readers.read_safetensors(path)
        else:
            obj = file_readers.load_pickle(path)
    except file_readers.FileReadError as e:
        raise AnnotatorError(f"{path.name}: {e}") from None
    except Exception as e:  # noqa: BLE001 - a truncated zip, a wrong format: all shown to the user
        raise AnnotatorError(f"{path.name}: cannot read the file ({type(e).__name__}: {e})") from None
    for key in unwrap:
        inner = obj.get(key) if isinstance(obj, dict) else None
        if isinstance(inner, dict) and inner and all(isinstance(k, str) for k in inner):
            obj = inner
            break
    if not isinstance(obj, dict):
        raise AnnotatorError(f"{path.name}: holds a {type(obj).__name__}, not a dictionary of weights")
    out = {}
    for k, v in obj.items():
        for prefix in strip:
            if k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v
    return out


def load_strict(net, sd: dict, path) -> None:
    """``net.load_state_dict(sd, strict=True)``, a mismatch being an AnnotatorError that names the file and
    a few of the missing / unexpected keys or the first wrong shape."""
    own = net.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    wrong = [k for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        if wrong:
            k = wrong[0]
            parts.append(f"{k} is {tuple(sd[k].shape)}, expected {tuple(own[k].shape)}")
        raise AnnotatorError(f"{Path(path).name}: not the expected weights: " + "; ".join(parts))
    net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in sd.items()}, strict=True)


_CACHE: "OrderedDict[tuple, object]" = OrderedDict()
_LOCK = threading.Lock()
CACHE_SIZE = 2


def cached(key: str, paths, build: Callable[[], object]):
    """The network built by ``build()`` for these files, kept (by name, paths, sizes and mtimes) for the
    next call; the least recently used is dropped beyond CACHE_SIZE."""
    stamp = (key,) + tuple((str(p), Path(p).stat().st_size, Path(p).stat().st_mtime_ns) for p in paths)
    with _LOCK:
        if stamp in _CACHE:
            _CACHE.move_to_end(stamp)
            return _CACHE[stamp]
    net = build()
    with _LOCK:
        _CACHE[stamp] = net
        while len(_CACHE) > CACHE_SIZE:
            _CACHE.popitem(last=False)
    return net


def clear_cache() -> None:
    with _LOCK:
        _CACHE.clear()


def _import_all() -> None:
    """Import every annotator module; one that fails to import is logged and left out (its preprocessors stay
    listed as having no network) so it cannot take the others, or the app, down with it."""
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            try:
                importlib.import_module(f"{__name__}.{info.name}")
            except Exception:  # noqa: BLE001 - a broken module must not stop the app
                logging.getLogger(__name__).exception("ControlNet annotator module %r failed to import", info.name)


_import_all()
