"""The one place model files are read: .safetensors headers and tensors, pickles, and the config
beside a checkpoint.  Checkpoints, VAEs, LoRAs, embeddings and the model listing all go through it.

* :func:`read_header` checks a .safetensors header (the 8-byte length, the JSON, every entry)
  against the file's size without loading tensors; :func:`read_safetensors` then loads them.
* :func:`load_pickle` is ``torch.load(weights_only=True)``: a pickle that would import or run code
  is refused with a message saying so (optionally after allowing named torch classes).
* :func:`read_sidecar`: ``name.json`` or A1111's ``name.yaml`` (an LDM config) beside a checkpoint.

Every way a file can be wrong is a :class:`FileReadError` (a ValueError) with a sentence for the
user, never another exception, so one bad file cannot stop the listing of the good ones.  Callers
put the file's name in front.
"""
from __future__ import annotations

import json
import pickle
import re
import zipfile
from pathlib import Path

MAX_HEADER_BYTES = 100 << 20   # real headers are kilobytes; safetensors itself refuses over 100 MB
_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8}


class FileReadError(ValueError):
    """The file cannot be read safely; the message says why (without the file's name)."""


class HeaderError(FileReadError):
    """The file is not a readable .safetensors file."""


class UnsafePickleError(FileReadError):
    """The pickle would import Python objects (run code) to load."""


def read_header(path: str | Path) -> tuple[dict, int]:
    """(header, header length in bytes) of a .safetensors file, checked against the file's size."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise HeaderError(f"the file is too short to be a .safetensors file ({size} bytes)")
        n = int.from_bytes(raw, "little")
        if n == 0 or n > min(size - 8, MAX_HEADER_BYTES):
            raise HeaderError(f"the .safetensors header is damaged (it says {n} bytes, the file has {size}); "
                              "the file is truncated or not a safetensors file")
        text = f.read(n)
    header = _parse(text)
    end = _data_end(header)
    if 8 + n + end > size:
        raise HeaderError(f"the file is truncated: it has {size} bytes, its header describes {8 + n + end}; "
                          "the download was probably interrupted")
    return header, n


def read_metadata(path: str | Path) -> dict[str, str]:
    """The header's ``__metadata__`` as strings ({} when there is none)."""
    meta = read_header(path)[0].get("__metadata__")
    return {str(k): str(v) for k, v in meta.items()} if isinstance(meta, dict) else {}


def _parse(text: bytes) -> dict:
    try:
        header = json.loads(text)
    except RecursionError:
        raise HeaderError("the .safetensors header is nested too deeply to be a real header") from None
    except ValueError:  # also UnicodeDecodeError
        raise HeaderError("the .safetensors header is not valid JSON") from None
    if not isinstance(header, dict):
        raise HeaderError(f"the .safetensors header is a JSON {type(header).__name__}, not an object")
    return header


def _data_end(header: dict) -> int:
    """The end of the tensor data the header describes; every entry checked."""
    end = 0
    for key, entry in header.items():
        if key == "__metadata__":
            if not isinstance(entry, dict):
                raise HeaderError("the .safetensors header's __metadata__ is not an object")
            continue
        if not isinstance(entry, dict):
            raise HeaderError(f"tensor {key!r}: its header entry is not an object")
        shape, offsets, dtype = entry.get("shape"), entry.get("data_offsets"), entry.get("dtype")
        if not isinstance(shape, list) or not all(_whole(d) and d >= 0 for d in shape):
            raise HeaderError(f"tensor {key!r}: shape {shape!r} is not a list of non-negative whole numbers")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(_whole(o) for o in offsets)
                and 0 <= offsets[0] <= offsets[1]):
            raise HeaderError(f"tensor {key!r}: data offsets {offsets!r} are not a valid [begin, end] pair")
        if dtype in _DTYPE_BYTES:
            count = 1
            for d in shape:
                count *= d
            if count * _DTYPE_BYTES[dtype] != offsets[1] - offsets[0]:
                raise HeaderError(f"tensor {key!r}: {dtype} {shape} does not fill its {offsets[1] - offsets[0]} bytes")
        end = max(end, offsets[1])
    return end


def _whole(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def read_safetensors(path: str | Path, device: str = "cpu") -> tuple[dict, dict[str, str]]:
    """(tensors, metadata) of a .safetensors file whose header passed :func:`read_header`."""
    from safetensors import safe_open

    read_header(path)
    try:
        with safe_open(str(path), framework="pt", device=device) as f:
            metadata = dict(f.metadata() or {})
            return {key: f.get_tensor(key) for key in f.keys()}, metadata
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
        raise FileReadError(f"cannot read the safetensors file: {e}") from None


def load_pickle(path: str | Path, allow: tuple = ()):
    """``torch.load(weights_only=True)`` on the CPU; `allow` names torch classes the file may rebuild."""
    import torch

    try:
        if allow:
            with torch.serialization.safe_globals(list(allow)):
                return torch.load(str(path), map_location="cpu", weights_only=True)
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        msg = str(e)
        if re.search(r"weights.only|unsupported global", msg, re.IGNORECASE):
            found = re.search(r"unsupported GLOBAL ([\w.]+)", msg, re.IGNORECASE)
            what = f" (it needs {found.group(1)})" if found else ""
            raise UnsafePickleError(
                f"this pickle file wants to import Python objects{what}; the web UI refuses to run code embedded "
                "in the file. Convert it to .safetensors with a trusted tool, or use a .safetensors version of "
                "the model.") from None
        raise FileReadError(f"corrupt checkpoint file: {msg}") from None
    except (EOFError, zipfile.BadZipFile) as e:
        raise FileReadError(f"file is truncated or corrupt ({type(e).__name__}: {e})") from None
    except RuntimeError as e:
        raise FileReadError(f"file is truncated or corrupt: {e}") from None
    except Exception as e:  # noqa: BLE001 - any other torch.load failure
        raise FileReadError(f"not a readable PyTorch checkpoint, or the file is corrupt "
                            f"({type(e).__name__}: {e})") from None


def read_sidecar(checkpoint_path: str | Path) -> dict | None:
    """Contents of ``<stem>.yaml``/``.yml``/``.json`` next to a checkpoint, or None."""
    p = Path(checkpoint_path)
    for ext in (".yaml", ".yml", ".json"):
        side = p.with_suffix(ext)
        if side.is_file() and side != p:
            try:
                text = side.read_text(encoding="utf-8")
                if ext == ".json":
                    data = json.loads(text)
                else:
                    import yaml

                    data = yaml.safe_load(text)
            except Exception as e:  # noqa: BLE001 - yaml/json/decoding errors alike
                raise FileReadError(f"{side.name}: cannot parse config next to the checkpoint: {e}") from None
            if not isinstance(data, dict):
                raise FileReadError(f"{side.name}: expected a mapping at top level")
            return data
    return None
