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

MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit (MAX_HEADER_SIZE); real headers are kilobytes
MAX_JSON_DEPTH = 32             # a real header nests 3 deep (header -> entry -> shape); checked before parsing
# bits per element of every dtype the safetensors library reads (F4/F6: packed sub-byte floats)
_DTYPE_BITS = {"BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8, "F8_E4M3FNUZ": 8,
               "F8_E5M2FNUZ": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6, "I16": 16, "U16": 16, "F16": 16,
               "BF16": 16, "I32": 32, "U32": 32, "F32": 32, "C64": 64, "F64": 64, "I64": 64, "U64": 64}
_INT64_MAX = 2**63 - 1


class FileReadError(ValueError):
    """The file cannot be read safely; the message says why (without the file's name)."""


class HeaderError(FileReadError):
    """The file is not a readable .safetensors file."""


class UnsafePickleError(FileReadError):
    """The pickle would import Python objects (run code) to load."""


def read_header(path: str | Path) -> tuple[dict, int]:
    """(header, header length in bytes) of a .safetensors file, checked as the safetensors library checks it
    (so a file that passes also opens) without loading tensors: the length, the JSON (its nesting depth
    first, without recursion), ``__metadata__`` (text to text), every tensor entry (a known dtype, a shape of
    non-negative whole numbers, data offsets that match dtype x shape) and that the tensors' data exactly
    covers the rest of the file."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise HeaderError(f"the file is too short to be a .safetensors file ({size} bytes)")
        n = int.from_bytes(raw, "little")
        if n > MAX_HEADER_BYTES:
            raise HeaderError(f"the .safetensors header is damaged: it says it is {n} bytes long, more than the "
                              f"{MAX_HEADER_BYTES} bytes the safetensors format allows")
        if n < 2 or n > size - 8:
            raise HeaderError(f"the .safetensors header is damaged (it says {n} bytes, the file has {size}); "
                              "the file is truncated or not a safetensors file")
        text = f.read(n)
    header = _parse(text)
    _check_metadata(header.get("__metadata__"))
    end = _data_end(header)
    if 8 + n + end > size:
        raise HeaderError(f"the file is truncated: it has {size} bytes, its header describes {8 + n + end}; "
                          "the download was probably interrupted")
    if 8 + n + end < size:
        raise HeaderError(f"the file has {size - 8 - n - end} bytes after the last tensor's data that its header "
                          "does not describe; the safetensors format does not allow that (a damaged file?)")
    return header, n


def read_metadata(path: str | Path) -> dict[str, str]:
    """The header's ``__metadata__`` ({} when there is none)."""
    meta = read_header(path)[0].get("__metadata__")
    return dict(meta) if isinstance(meta, dict) else {}


def json_depth(text: bytes, limit: int | None = None) -> int:
    """How deep the arrays and objects of a JSON text nest (strings skipped), counted without recursion or
    backtracking, in C-speed chunks (a hostile 100 MB header: a few seconds at most).  With ``limit``, counting
    stops as soon as the depth passes it."""
    import numpy as np

    step = np.zeros(256, dtype=np.int32)
    step[list(b"[{")], step[list(b"]}")] = 1, -1
    # drop escaped backslashes, then escaped quotes: every quote left opens or closes a string
    codes = np.frombuffer(text.replace(b"\\\\", b"").replace(b'\\"', b""), dtype=np.uint8)
    quotes = depth = deepest = 0
    for i in range(0, len(codes), 1 << 22):
        chunk = codes[i:i + (1 << 22)]
        is_quote = chunk == ord('"')
        inside = (np.cumsum(is_quote, dtype=np.int32) + quotes) & 1
        quotes = int(inside[-1])  # 1: the chunk ends inside a string
        levels = np.cumsum(step[chunk] * (1 - inside), dtype=np.int64) + depth
        deepest, depth = max(deepest, int(levels.max())), int(levels[-1])
        if limit is not None and deepest > limit:
            break
    return deepest


def _parse(text: bytes) -> dict:
    if json_depth(text, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise HeaderError(f"the .safetensors header is nested too deeply to be a real header "
                          f"(more than {MAX_JSON_DEPTH} levels)")
    try:
        header = json.loads(text)
    except RecursionError:  # not reached after the depth check; kept so no recursion error can escape
        raise HeaderError("the .safetensors header is nested too deeply to be a real header") from None
    except ValueError:  # also UnicodeDecodeError
        raise HeaderError("the .safetensors header is not valid JSON") from None
    if not isinstance(header, dict):
        raise HeaderError(f"the .safetensors header is a JSON {_json_type(header)}, not an object")
    return header


def _json_type(v) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(v), "number")


def _check_metadata(meta) -> None:
    if meta is None:
        return
    if not isinstance(meta, dict):
        raise HeaderError(f"the .safetensors header's __metadata__ is a JSON {_json_type(meta)}, not an object")
    for key, value in meta.items():
        if not isinstance(value, str):
            raise HeaderError(f"the .safetensors header's __metadata__ entry {key!r} is a JSON {_json_type(value)}; "
                              "the format allows only text values")


def _data_end(header: dict) -> int:
    """The end of the tensor data the header describes: every entry checked, and the entries' data laid end to
    end from offset 0 without gaps or overlaps (what the safetensors library demands)."""
    spans = sorted((_entry_span(key, entry), key) for key, entry in header.items() if key != "__metadata__")
    end = 0
    for (begin, stop), key in spans:
        if begin != end:
            what = "overlaps another tensor's data" if begin < end else "leaves a gap after the previous tensor"
            raise HeaderError(f"tensor {key!r}: its data offsets [{begin}, {stop}] {what}")
        end = stop
    return end


def _entry_span(key: str, entry) -> tuple[int, int]:
    """(begin, end) of one tensor entry, which must be {"dtype": known, "shape": [n, ...], "data_offsets": [b, e]}
    with e - b the bytes dtype x shape take."""
    if not isinstance(entry, dict):
        raise HeaderError(f"tensor {key!r}: its header entry is a JSON {_json_type(entry)}, not an object")
    shape, offsets, dtype = entry.get("shape"), entry.get("data_offsets"), entry.get("dtype")
    if not isinstance(dtype, str) or dtype not in _DTYPE_BITS:
        raise HeaderError(f"tensor {key!r}: unknown dtype {dtype!r} (known: {', '.join(sorted(_DTYPE_BITS))})")
    if not isinstance(shape, list) or not all(_whole(d) and 0 <= d <= _INT64_MAX for d in shape):
        raise HeaderError(f"tensor {key!r}: shape {_short(shape)} is not a list of non-negative whole numbers")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_whole(o) for o in offsets)
            and 0 <= offsets[0] <= offsets[1]):
        raise HeaderError(f"tensor {key!r}: data offsets {_short(offsets)} are not a valid [begin, end] pair")
    count = nonzero = 1
    for d in shape:
        count *= d
        nonzero *= max(d, 1)
    if nonzero > _INT64_MAX:
        raise HeaderError(f"tensor {key!r}: shape {_short(shape)} is too large for any tensor")
    bits = count * _DTYPE_BITS[dtype]
    if bits % 8 or bits // 8 != offsets[1] - offsets[0]:
        raise HeaderError(f"tensor {key!r}: {dtype} {_short(shape)} does not fill its "
                          f"{offsets[1] - offsets[0]} bytes (data offsets {offsets})")
    return offsets[0], offsets[1]


def _short(v) -> str:
    text = repr(v)
    return text if len(text) <= 80 else text[:77] + "..."


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


def load_pickle(path: str | Path, allow: tuple = (), mmap: bool = False):
    """``torch.load(weights_only=True)`` on the CPU; `allow` names torch classes the file may rebuild.
    ``mmap``: the tensors stay in the file, mapped (a zip-format file only; cheap for a multi-GB file): what
    listing uses to check a pickle and see its tensors' names and shapes without reading the weights."""
    import torch

    try:
        if allow:
            with torch.serialization.safe_globals(list(allow)):
                return torch.load(str(path), map_location="cpu", weights_only=True, mmap=mmap)
        return torch.load(str(path), map_location="cpu", weights_only=True, mmap=mmap)
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


# what torch.save writes first in its old (pre-1.6, not zip) format: its magic number, pickled
_LEGACY_TORCH_MAGIC = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)


def pickle_kind(path: str | Path) -> str:
    """"zip" (torch.save's format since torch 1.6), "legacy" (torch.save's older format) or "" (neither: not
    a PyTorch file at all, or a bare pickle that only Python could read -- by running whatever it asks for)."""
    if zipfile.is_zipfile(path):
        return "zip"
    with open(path, "rb") as f:
        return "legacy" if f.read(len(_LEGACY_TORCH_MAGIC)) == _LEGACY_TORCH_MAGIC else ""


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
