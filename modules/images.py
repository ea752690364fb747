"""Image files: A1111-compatible names, embedded infotext, grids and resizing.

* :func:`save_image` writes ``<outdir>/<YYYY-MM-DD>/<NNNNN>-<seed>.png`` by
  default, as A1111 v1.10 does with its default settings ("Save images to a
  subdirectory" on, directory pattern ``[date]``, empty file name pattern,
  which means ``[seed]`` inside such subdirectories and
  ``[seed]-[prompt_spaces]`` otherwise).  NNNNN is the next free 5-digit
  number in the target folder.  Files are written to a temp file in the same
  folder and moved into place with ``os.replace``, so a crash never leaves a
  half-written image under the final name.
* Infotext goes into a PNG ``parameters`` text chunk, or for JPEG/WebP into
  the EXIF UserComment (tag 0x9286 in the Exif IFD 0x8769) as
  ``b"UNICODE\\0"`` + UTF-16-BE text, which is what A1111 writes through piexif.
* :func:`read_info_from_image` reads either back.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import math
import os
import re
import string
import threading
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from PIL import Image, ImageColor, PngImagePlugin

from modules import fields

__all__ = [
    "FilenameGenerator",
    "sanitize_filename_part",
    "get_next_sequence_number",
    "save_image",
    "save_image_with_geninfo",
    "read_info_from_image",
    "encode_user_comment",
    "decode_user_comment",
    "image_grid",
    "resize_image",
    "RESIZE_MODES",
]

LANCZOS = Image.Resampling.LANCZOS
NEAREST = Image.Resampling.NEAREST

INVALID_FILENAME_CHARS = '#<>:"/\\|?*\n\r\t'
INVALID_FILENAME_PREFIX = " "
INVALID_FILENAME_POSTFIX = " ."
MAX_FILENAME_PART_LENGTH = 128
RE_NONLETTERS = re.compile(r"[\s" + re.escape(string.punctuation) + "]+")
RE_PATTERN = re.compile(r"(.*?)(?:\[([^\[\]]+)\]|$)")
RE_PATTERN_ARG = re.compile(r"(.*)<([^>]*)>$")
DEFAULT_TIME_FORMAT = "%Y%m%d%H%M%S"

EXIF_IFD = 0x8769
EXIF_USER_COMMENT = 0x9286
_UC_UNICODE = b"UNICODE\x00"
_UC_ASCII = b"ASCII\x00\x00\x00"
_UC_JIS = b"JIS\x00\x00\x00\x00\x00"
_UC_UNDEFINED = b"\x00" * 8

# keys of Image.info that are file-format details rather than user metadata (as A1111)
IGNORED_INFO_KEYS = {
    "jfif", "jfif_version", "jfif_unit", "jfif_density", "dpi", "exif", "loop", "background",
    "timestamp", "duration", "progressive", "progression", "icc_profile", "chromaticity", "photoshop",
}

RESIZE_MODES = list(fields.RESIZE_MODES)   # img2img's resize modes by index (the table's choice list)


class _Skip:
    """Replacement result meaning: drop this tag and the literal text before it."""


NOTHING_AND_SKIP_PREVIOUS_TEXT = _Skip()


# --------------------------------------------------------------------------------------
# file names
# --------------------------------------------------------------------------------------

def sanitize_filename_part(text: str | None, replace_spaces: bool = True) -> str | None:
    """Make text safe as part of a file name (A1111 rules, 128 characters max)."""
    if text is None:
        return None
    if replace_spaces:
        text = text.replace(" ", "_")
    text = text.translate({ord(x): "_" for x in INVALID_FILENAME_CHARS})
    text = text.lstrip(INVALID_FILENAME_PREFIX)[:MAX_FILENAME_PART_LENGTH]
    return text.rstrip(INVALID_FILENAME_POSTFIX)


class FilenameGenerator:
    """Expands A1111 file name pattern tags such as ``[seed]-[prompt_spaces]``.

    ``params`` carries generation values by plain names: steps, cfg_scale,
    sampler, scheduler, width, height, model_name, model_hash, styles (list),
    job_timestamp, clip_skip, denoising_strength, vae_filename, user,
    batch_size, batch_index, n_iter, iteration, all_seeds.  A tag whose value
    is not known is left in the name as written (A1111 does the same).
    Tags may take arguments: ``[datetime<%Y%m%d_%H%M%S><Europe/Paris>]``,
    ``[prompt_hash<12>]``, ``[image_hash<8>]``, ``[hasprompt<cat|dog><night>]``.
    """

    def __init__(self, seed: int | None = None, prompt: str | None = None, image: Image.Image | None = None,
                 params: Mapping[str, Any] | None = None, *, now: _dt.datetime | None = None,
                 max_prompt_words: int = 8):
        self.seed = seed
        self.prompt = prompt
        self.image = image
        self.params = dict(params or {})
        self.now = now or _dt.datetime.now()
        self.max_prompt_words = max_prompt_words

    # -- individual tags ------------------------------------------------------------
    def _p(self, key):
        return self.params.get(key)

    def _image_size(self, index):
        if self.image is not None:
            return self.image.size[index]
        return self._p("width" if index == 0 else "height")

    def _prompt_words(self):
        words = [x for x in RE_NONLETTERS.split(self.prompt or "") if x]
        if not words:
            words = ["empty"]
        return sanitize_filename_part(" ".join(words[: self.max_prompt_words]), replace_spaces=False)

    def _prompt_no_styles(self):
        if self.prompt is None:
            return None
        text = self.prompt
        for style in self._p("style_prompts") or []:
            if not style:
                continue
            for part in style.split("{prompt}"):
                if part:
                    text = text.replace(part, "").replace(", ,", ",").strip().strip(",")
            text = text.replace(style, "").strip().strip(",").strip()
        return sanitize_filename_part(text, replace_spaces=False)

    def _datetime(self, *args):
        fmt = args[0] if args and args[0] else DEFAULT_TIME_FORMAT
        tz = None
        if len(args) > 1 and args[1]:
            try:
                from zoneinfo import ZoneInfo

                tz = ZoneInfo(args[1])
            except Exception:
                tz = None
        t = self.now.astimezone(tz) if tz is not None else self.now
        try:
            text = t.strftime(fmt)
        except (ValueError, TypeError):
            text = t.strftime(DEFAULT_TIME_FORMAT)
        return sanitize_filename_part(text, replace_spaces=False)

    def _hasprompt(self, *args):
        if self.prompt is None:
            return None
        lower = self.prompt.lower()
        out = ""
        for arg in args:
            if arg == "":
                continue
            division = arg.split("|")
            expected = division[0].lower()
            default = division[1] if len(division) > 1 else ""
            if lower.find(expected) >= 0:
                out = f"{out} {expected}"
            else:
                out = out if default == "" else f"{out} {default}"
        return sanitize_filename_part(out)

    def _hash(self, text: bytes, *args):
        length = int(args[0]) if args and args[0] else None
        digest = hashlib.sha256(text).hexdigest()
        return digest[:length] if length else digest

    def _batch_number(self):
        if (self._p("batch_size") or 1) == 1:
            return NOTHING_AND_SKIP_PREVIOUS_TEXT
        return int(self._p("batch_index") or 0) + 1

    def _generation_number(self):
        bs = self._p("batch_size") or 1
        n_iter = self._p("n_iter") or 1
        if n_iter == 1 and bs == 1:
            return NOTHING_AND_SKIP_PREVIOUS_TEXT
        return int(self._p("iteration") or 0) * bs + int(self._p("batch_index") or 0) + 1

    def _replacement(self, tag: str, args: list[str]):
        p = self._p
        table: dict[str, Callable[[], Any]] = {
            "seed": lambda: self.seed if self.seed is not None else "",
            "seed_first": lambda: (p("all_seeds") or [self.seed])[0],
            "seed_last": lambda: NOTHING_AND_SKIP_PREVIOUS_TEXT if (p("batch_size") or 1) == 1
            else (p("all_seeds") or [self.seed])[-1],
            "steps": lambda: p("steps"),
            "cfg": lambda: p("cfg_scale"),
            "width": lambda: self._image_size(0),
            "height": lambda: self._image_size(1),
            "styles": lambda: None if p("styles") is None else sanitize_filename_part(
                ", ".join(s for s in p("styles") if s != "None") or "None", replace_spaces=False),
            "sampler": lambda: None if p("sampler") is None else sanitize_filename_part(p("sampler"), replace_spaces=False),
            "scheduler": lambda: None if p("scheduler") is None else sanitize_filename_part(p("scheduler"), replace_spaces=False),
            "model_hash": lambda: p("model_hash"),
            "model_name": lambda: None if p("model_name") is None else sanitize_filename_part(p("model_name"), replace_spaces=False),
            "date": lambda: self.now.strftime("%Y-%m-%d"),
            "datetime": lambda: self._datetime(*args),
            "job_timestamp": lambda: p("job_timestamp") or self.now.strftime(DEFAULT_TIME_FORMAT),
            "prompt_hash": lambda: self._hash((self.prompt or "").encode(), *(args or ["8"])),
            "negative_prompt_hash": lambda: self._hash((p("negative_prompt") or "").encode(), *(args or ["8"])),
            "full_prompt_hash": lambda: self._hash(
                f"{self.prompt or ''} {p('negative_prompt') or ''}".encode(), *(args or ["8"])),
            "prompt": lambda: sanitize_filename_part(self.prompt),
            "prompt_no_styles": self._prompt_no_styles,
            "prompt_spaces": lambda: sanitize_filename_part(self.prompt, replace_spaces=False),
            "prompt_words": lambda: self._prompt_words() if self.prompt is not None else None,
            "batch_number": self._batch_number,
            "batch_size": lambda: p("batch_size"),
            "generation_number": self._generation_number,
            "hasprompt": lambda: self._hasprompt(*args),
            "clip_skip": lambda: p("clip_skip"),
            "denoising": lambda: p("denoising_strength") or NOTHING_AND_SKIP_PREVIOUS_TEXT,
            "user": lambda: p("user"),
            "vae_filename": lambda: p("vae_filename"),
            "none": lambda: "",
            "image_hash": lambda: None if self.image is None else self._hash(self.image.tobytes(), *args),
        }
        fn = table.get(tag.lower())
        if fn is None:
            return None
        return fn()

    def apply(self, pattern: str) -> str:
        res = ""
        for m in RE_PATTERN.finditer(pattern):
            text, tag = m.groups()
            if tag is None:
                res += text
                continue
            args: list[str] = []
            while True:
                am = RE_PATTERN_ARG.match(tag)
                if am is None:
                    break
                tag, arg = am.groups()
                args.insert(0, arg)
            try:
                replacement = self._replacement(tag, args)
            except Exception:
                replacement = None
            if replacement is NOTHING_AND_SKIP_PREVIOUS_TEXT:
                continue
            if replacement is not None:
                res += text + str(replacement)
                continue
            res += f"{text}[{tag}]"
        return res


def get_next_sequence_number(path: str | os.PathLike, basename: str = "") -> int:
    """Next free leading number among files in ``path`` (starts at 0), as A1111."""
    result = -1
    prefix = f"{basename}-" if basename != "" else ""
    try:
        names = os.listdir(path)
    except FileNotFoundError:
        return 0
    for name in names:
        if name.startswith(".") or not name.startswith(prefix):
            continue
        first = os.path.splitext(name[len(prefix):])[0].split("-")[0]
        try:
            result = max(int(first), result)
        except ValueError:
            pass
    return result + 1


# --------------------------------------------------------------------------------------
# embedded infotext
# --------------------------------------------------------------------------------------

def encode_user_comment(text: str) -> bytes:
    """EXIF UserComment value as A1111 writes it (piexif 'unicode' encoding)."""
    return _UC_UNICODE + text.encode("utf-16-be")


def decode_user_comment(data: bytes | str | None) -> str | None:
    """Decode an EXIF UserComment (UNICODE, ASCII, JIS or undefined prefix)."""
    if data is None:
        return None
    if isinstance(data, str):
        return data
    data = bytes(data)
    prefix, body = data[:8], data[8:]
    if prefix == _UC_UNICODE:
        if body[:2] == b"\xff\xfe":
            return body[2:].decode("utf-16-le", errors="ignore")
        if body[:2] == b"\xfe\xff":
            return body[2:].decode("utf-16-be", errors="ignore")
        # piexif/A1111 write big-endian; some tools write little-endian: ASCII-range
        # characters then have their zero byte second.
        even_zeros = body[0::2].count(0)
        odd_zeros = body[1::2].count(0)
        encoding = "utf-16-le" if odd_zeros > even_zeros else "utf-16-be"
        return body.decode(encoding, errors="ignore")
    if prefix == _UC_ASCII:
        return body.decode("ascii", errors="ignore").rstrip("\x00")
    if prefix == _UC_JIS:
        return body.decode("shift_jis", errors="ignore").rstrip("\x00")
    if prefix == _UC_UNDEFINED:
        return body.decode("utf-8", errors="ignore").rstrip("\x00")
    return data.decode("utf-8", errors="ignore").rstrip("\x00")


def _exif_with_comment(text: str) -> Image.Exif:
    exif = Image.Exif()
    exif.get_ifd(EXIF_IFD)[EXIF_USER_COMMENT] = encode_user_comment(text)
    return exif


def _format_for_extension(extension: str) -> str:
    ext = "." + extension.lower().lstrip(".")
    fmt = Image.registered_extensions().get(ext)
    if fmt is None:
        raise ValueError(f"Unsupported image extension '{extension}'")
    return fmt


def save_image_with_geninfo(image: Image.Image, geninfo: str | None, fp, extension: str, *,
                            existing_pnginfo: Mapping[str, Any] | None = None,
                            pnginfo_section_name: str = "parameters",
                            jpeg_quality: int = 80, webp_lossless: bool = False) -> None:
    """Write ``image`` to ``fp`` (path or file object) with the infotext embedded."""
    ext = extension.lower().lstrip(".")
    fmt = _format_for_extension(ext)
    if ext == "png":
        info = PngImagePlugin.PngInfo()
        items = dict(existing_pnginfo or {})
        if geninfo is not None:
            items[pnginfo_section_name] = geninfo
        for k, v in items.items():
            info.add_text(k, str(v))
        image.save(fp, format=fmt, pnginfo=info)
    elif ext in ("jpg", "jpeg", "webp"):
        if image.mode in ("RGBA", "LA", "P"):
            image = image.convert("RGB")
        elif image.mode == "I;16":
            image = image.point(lambda p: p * 0.0038910505836576).convert("RGB" if ext == "webp" else "L")
        kwargs: dict[str, Any] = {"quality": jpeg_quality}
        if ext == "webp":
            kwargs["lossless"] = webp_lossless
        if geninfo is not None:
            kwargs["exif"] = _exif_with_comment(geninfo)
        image.save(fp, format=fmt, **kwargs)
    elif ext == "gif":
        kwargs = {"comment": geninfo} if geninfo else {}
        image.save(fp, format=fmt, **kwargs)
    else:
        image.save(fp, format=fmt)


def read_info_from_image(image: Image.Image) -> tuple[str | None, dict]:
    """Return (infotext or None, other metadata items) as A1111 does."""
    items = dict(image.info or {})
    geninfo = items.pop("parameters", None)
    if "exif" in items:
        exif = Image.Exif()
        try:
            exif.load(items["exif"])
            comment = exif.get_ifd(EXIF_IFD).get(EXIF_USER_COMMENT)
        except Exception:
            comment = None
        text = decode_user_comment(comment)
        if text:
            geninfo = text
    elif "comment" in items:  # GIF
        comment = items["comment"]
        geninfo = comment.decode("utf-8", errors="ignore") if isinstance(comment, bytes) else comment
    for key in IGNORED_INFO_KEYS:
        items.pop(key, None)
    return geninfo, items


# --------------------------------------------------------------------------------------
# saving
# --------------------------------------------------------------------------------------

_SAVE_LOCK = threading.Lock()   # serialises "pick a free number + move into place" within the process


def _max_name_bytes(folder: str) -> int:
    try:
        return os.statvfs(folder).f_namemax
    except (AttributeError, OSError):
        return 255


def _fit_name(stem: str, ext: str, limit: int) -> str:
    """Shorten ``stem`` so ``stem.ext`` fits into ``limit`` bytes (UTF-8)."""
    tail = f".{ext}"
    while stem and len((stem + tail).encode("utf-8")) > limit:
        stem = stem[:-1]
    return stem + tail


def save_image(
    image: Image.Image,
    outdir: str | os.PathLike,
    basename: str = "",
    *,
    seed: int | None = None,
    prompt: str | None = None,
    infotext: str | None = None,
    extension: str = "png",
    number: bool = True,
    pattern: str | None = None,
    save_to_dirs: bool = True,
    dir_pattern: str = "[date]",
    params: Mapping[str, Any] | None = None,
    suffix: str = "",
    forced_filename: str | None = None,
    short_filename: bool = False,
    existing_pnginfo: Mapping[str, Any] | None = None,
    pnginfo_section_name: str = "parameters",
    jpeg_quality: int = 80,
    webp_lossless: bool = False,
    max_prompt_words: int = 8,
    now: _dt.datetime | None = None,
    txt: str | None = None,
) -> Path:
    """Save ``image`` the way A1111 names and writes it; returns the final path.

    ``pattern`` is A1111's "Images filename pattern"; None means its default
    ("[seed]" inside a subdirectory, "[seed]-[prompt_spaces]" otherwise).
    ``number`` adds the NNNNN sequence prefix (always added when the decorated
    name would otherwise be empty).  ``basename`` (e.g. "grid") prefixes the
    number as ``grid-NNNN``.  ``params`` feeds tags like [steps] [cfg]
    [sampler] [model_name] [model_hash] (see :class:`FilenameGenerator`).
    ``txt``: text for a sidecar ``.txt`` file of the same name (A1111's "Create a text file next to
    every image with generation parameters"), written after the image.
    """
    extension = extension.lower().lstrip(".")
    if (extension in ("jpg", "jpeg") and max(image.size) > 65535) or (extension == "webp" and max(image.size) > 16383):
        extension = "png"  # format size limits, as A1111

    namegen = FilenameGenerator(seed, prompt, image, params, now=now, max_prompt_words=max_prompt_words)
    path = str(outdir)
    if save_to_dirs:
        dirname = namegen.apply(dir_pattern or "[prompt_words]").lstrip(" ").rstrip("\\ /")
        path = os.path.join(path, dirname)
    os.makedirs(path, exist_ok=True)
    limit = _max_name_bytes(path)

    if forced_filename is None:
        if short_filename or seed is None:
            decoration = ""
        elif pattern:
            decoration = pattern
        else:
            decoration = "[seed]" if save_to_dirs else "[seed]-[prompt_spaces]"
        decoration = namegen.apply(decoration) + suffix
        add_number = number or decoration == ""
        if decoration and add_number:
            decoration = f"-{decoration}"
    else:
        add_number = False
        decoration = forced_filename

    # encode into a temp file next to the target, then move it into place
    tmp = os.path.join(path, f".tmp-{os.getpid()}-{uuid.uuid4().hex}.{extension}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            save_image_with_geninfo(image, infotext, fh, extension, existing_pnginfo=existing_pnginfo,
                                    pnginfo_section_name=pnginfo_section_name,
                                    jpeg_quality=jpeg_quality, webp_lossless=webp_lossless)
            fh.flush()
            os.fsync(fh.fileno())
        with _SAVE_LOCK:
            if add_number:
                base = get_next_sequence_number(path, basename)
                for i in range(500):
                    fn = f"{base + i:05}" if basename == "" else f"{basename}-{base + i:04}"
                    fullfn = os.path.join(path, _fit_name(f"{fn}{decoration}", extension, limit))
                    if not os.path.exists(fullfn):
                        break
            else:
                fullfn = os.path.join(path, _fit_name(decoration, extension, limit))
            os.replace(tmp, fullfn)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if txt is not None:
        txt_path = os.path.splitext(fullfn)[0] + ".txt"
        tmp = os.path.join(path, f".tmp-{os.getpid()}-{uuid.uuid4().hex}.txt")
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(f"{txt}\n")
        os.replace(tmp, txt_path)
    return Path(fullfn)


# --------------------------------------------------------------------------------------
# grids and resizing
# --------------------------------------------------------------------------------------

def image_grid(images: list[Image.Image], rows: int | None = None, *, batch_size: int = 1, n_rows: int = -1,
               prevent_empty_spots: bool = False, background: str = "#ffffff") -> Image.Image:
    """Paste images into a grid (A1111 rules).

    rows=None follows A1111's "Grid row count" setting ``n_rows``: > 0 fixed,
    0 = batch size, -1 (default) = round(sqrt(n)), or with
    ``prevent_empty_spots`` the largest divisor of n not above floor(sqrt(n)).
    Cells are the size of the largest image; smaller ones are centred.
    """
    if not images:
        raise ValueError("image_grid needs at least one image")
    n = len(images)
    if rows is None:
        if n_rows > 0:
            rows = n_rows
        elif n_rows == 0:
            rows = batch_size
        elif prevent_empty_spots:
            rows = math.floor(math.sqrt(n))
            while n % rows != 0:
                rows -= 1
        else:
            rows = round(math.sqrt(n))
    rows = max(1, min(rows, n))
    cols = math.ceil(n / rows)
    w = max(im.width for im in images)
    h = max(im.height for im in images)
    grid = Image.new("RGB", size=(cols * w, rows * h), color=ImageColor.getcolor(background, "RGB"))
    for i, im in enumerate(images):
        dx = (w - im.width) // 2
        dy = (h - im.height) // 2
        grid.paste(im, box=(i % cols * w + dx, i // cols * h + dy))
    return grid


Upscaler = Callable[[Image.Image, int, int], Image.Image]


def _resize(im: Image.Image, w: int, h: int, upscaler: str | Upscaler | None) -> Image.Image:
    if callable(upscaler):
        if im.mode != "L" and (w > im.width or h > im.height):
            im = upscaler(im, w, h)
        return im if im.size == (w, h) else im.resize((w, h), resample=LANCZOS)
    key = str(upscaler or "None").lower()
    if key in ("none", "lanczos") or im.mode == "L":
        return im.resize((w, h), resample=LANCZOS)
    if key == "nearest":
        return im.resize((w, h), resample=NEAREST)
    raise ValueError(f"Unknown upscaler '{upscaler}' (pass a callable for model upscalers)")


def resize_image(resize_mode: int | str, im: Image.Image, width: int, height: int,
                 upscaler: str | Upscaler | None = "Lanczos") -> Image.Image:
    """A1111's img2img resize modes.

    0 "Just resize": stretch to width x height.
    1 "Crop and resize": scale to cover, centre, crop the excess.
    2 "Resize and fill": scale to fit, centre, fill the bars by stretching the
      image's edge rows/columns.
    3 "Just resize (latent upscale)": same as 0 for pixels (the latent path is
      the caller's business).
    ``upscaler``: "Lanczos"/"None", "Nearest", or a callable (im, w, h) -> image
    used when enlarging (then finished with Lanczos to the exact size).
    """
    if isinstance(resize_mode, str):
        resize_mode = RESIZE_MODES.index(resize_mode)
    if resize_mode in (0, 3):
        return _resize(im, width, height, upscaler)

    ratio = width / height
    src_ratio = im.width / im.height
    if resize_mode == 1:
        src_w = width if ratio > src_ratio else im.width * height // im.height
        src_h = height if ratio <= src_ratio else im.height * width // im.width
        resized = _resize(im, src_w, src_h, upscaler)
        res = Image.new("RGB", (width, height))
        res.paste(resized, box=(width // 2 - src_w // 2, height // 2 - src_h // 2))
        return res

    if resize_mode != 2:
        raise ValueError(f"Unknown resize mode {resize_mode}")
    src_w = width if ratio < src_ratio else im.width * height // im.height
    src_h = height if ratio >= src_ratio else im.height * width // im.width
    resized = _resize(im, src_w, src_h, upscaler)
    res = Image.new("RGB", (width, height))
    res.paste(resized, box=(width // 2 - src_w // 2, height // 2 - src_h // 2))
    if ratio < src_ratio:
        fill_height = height // 2 - src_h // 2
        if fill_height > 0:
            res.paste(resized.resize((width, fill_height), box=(0, 0, width, 0)), box=(0, 0))
            res.paste(resized.resize((width, fill_height), box=(0, resized.height, width, resized.height)),
                      box=(0, fill_height + src_h))
    elif ratio > src_ratio:
        fill_width = width // 2 - src_w // 2
        if fill_width > 0:
            res.paste(resized.resize((fill_width, height), box=(0, 0, 0, height)), box=(0, 0))
            res.paste(resized.resize((fill_width, height), box=(resized.width, 0, resized.width, height)),
                      box=(fill_width + src_w, 0))
    return res


# --------------------------------------------------------------------------------------
# images sent as text (the API, ControlNet units)
# --------------------------------------------------------------------------------------

class ImageDecodeError(ValueError):
    """A base64 image that cannot be used; the message says why (callers add the field's name)."""


def decode_base64_image(value, max_side: int = 16384, max_pixels: int = 64 * 1024 * 1024) -> Image.Image:
    """A base64 text (a ``data:image/...;base64,`` URL too; URL-safe base64 accepted) -> a loaded PIL image.
    Nothing is fetched; a picture over ``max_side`` / ``max_pixels`` is refused before it is decoded."""
    import base64
    import binascii
    import io
    import warnings

    if not isinstance(value, str) or not value.strip():
        raise ImageDecodeError("is empty; expected a base64-encoded image")
    s = value.strip()
    if s.startswith(("http://", "https://")):
        raise ImageDecodeError("image URLs are not fetched; send the image as base64")
    if s.startswith("data:"):
        head, sep, s = s.partition(",")
        if not sep or ";base64" not in head:
            raise ImageDecodeError("is a data: URL without base64 data")
    s = "".join(s.split())
    s += "=" * (-len(s) % 4)
    try:
        raw = base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError):
        try:
            raw = base64.b64decode(s.encode("ascii"), altchars=b"-_", validate=True)
        except (binascii.Error, ValueError, UnicodeEncodeError):
            raise ImageDecodeError("is not valid base64") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(raw))
            if im.width > max_side or im.height > max_side or im.width * im.height > max_pixels:
                raise ImageDecodeError(f"image is too large ({im.width}x{im.height})")
            im.load()
    except ImageDecodeError:
        raise
    except Exception as e:  # noqa: BLE001 - whatever PIL raises for bad data is bad input
        raise ImageDecodeError(f"is not an image that can be read ({e.__class__.__name__}: {e})") from None
    if im.width < 1 or im.height < 1:
        raise ImageDecodeError("image is empty")
    return im
