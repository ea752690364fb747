"""The one reader of .safetensors headers: the 8-byte length, the JSON header, and its checks.

Used wherever a header is read without loading tensors (model listing, LoRA metadata and hashes,
checkpoint loading).  Every way a file can be wrong — too short, a length past the end, JSON that
is not an object or nests too deep, an entry with a negative shape or offsets outside the data,
a file cut short — is a :class:`HeaderError` with a sentence for the user, never another
exception, so one bad file cannot stop the listing of the good ones.
"""
from __future__ import annotations

import json
from pathlib import Path

MAX_HEADER_BYTES = 100 << 20   # real headers are kilobytes; safetensors itself refuses over 100 MB
_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8}


class HeaderError(ValueError):
    """The file is not a readable .safetensors file; the message says why."""


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
