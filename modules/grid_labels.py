"""Labelled grids: the bands of column and row labels A1111 draws around a grid of pictures
(``images.draw_grid_annotations``: X/Y/Z plot, Prompt matrix), black on white, in the font of
``modules/fonts`` (Latin and Simplified Chinese).

The font size follows the cell size as A1111's does: ``(width + height) // 25``, lines ``size // 2``
apart.  A label is wrapped at spaces to the cell's width (the row band is ``width * 3 // 4`` wide; a
line of Chinese, which has no spaces, is also broken between characters); a word still too wide is
drawn in a smaller size.  An inactive label (a left-out part of a prompt matrix) is grey and struck
through.
"""
from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

FONT_FILE = Path(__file__).resolve().parent / "fonts" / "NotoSansCJKsc-Subset.otf"
ACTIVE = (0, 0, 0)
INACTIVE = (153, 153, 153)
BACKGROUND = (255, 255, 255)
STRIKE_WIDTH = 4

_WIDE = re.compile(r"[\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef]")   # CJK: breaks anywhere


@dataclass
class Label:
    """One label of a column or a row (a cell's axis value, a part of a prompt)."""
    text: str
    active: bool = True


@dataclass
class _Line:
    text: str
    active: bool
    width: int
    height: int


@functools.lru_cache(maxsize=32)
def font(size: int) -> ImageFont.FreeTypeFont:
    """The shipped font at ``size`` pixels (at least 1)."""
    return ImageFont.truetype(str(FONT_FILE), max(int(size), 1))


def font_size(width: int, height: int) -> int:
    """A1111's label size for cells of width x height."""
    return (width + height) // 25


def _wrap(draw: ImageDraw.ImageDraw, text: str, fnt, limit: float) -> list[str]:
    """A1111's wrapping: words onto a line while it fits; then lines of CJK broken between characters."""
    lines = [""]
    for word in text.split():
        joined = f"{lines[-1]} {word}".strip()
        if draw.textlength(joined, font=fnt) <= limit:
            lines[-1] = joined
        else:
            lines.append(word)
    return [part for line in lines for part in _break_wide(draw, line, fnt, limit)]


def _break_wide(draw: ImageDraw.ImageDraw, line: str, fnt, limit: float) -> list[str]:
    if not _WIDE.search(line) or draw.textlength(line, font=fnt) <= limit:
        return [line]
    out = [""]
    for ch in line:
        breaks = _WIDE.match(ch) or (out[-1] and _WIDE.match(out[-1][-1]))
        if out[-1] and breaks and draw.textlength(out[-1] + ch, font=fnt) > limit:
            out.append(ch.lstrip())
        else:
            out[-1] += ch
    return [s.strip() for s in out if s.strip()] or [line]


def _lines(draw: ImageDraw.ImageDraw, labels: list[Label], fnt, limit: float) -> list[_Line]:
    out = []
    for label in labels:
        for text in _wrap(draw, label.text, fnt, limit):
            box = draw.multiline_textbbox((0, 0), text, font=fnt)
            out.append(_Line(text, label.active, box[2] - box[0], box[3] - box[1]))
    return out


def _layout(width: int, height: int, hor: list[list[Label]], ver: list[list[Label]]):
    """(size, spacing, pad_left, pad_top, column lines, row lines)."""
    size = font_size(width, height)
    spacing = size // 2
    fnt = font(size)
    pad_left = 0 if not any(label.text for labels in ver for label in labels) else width * 3 // 4
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1), BACKGROUND))
    cols = [_lines(draw, labels, fnt, width) for labels in hor]
    rows = [_lines(draw, labels, fnt, pad_left) for labels in ver]
    heights = [_block_height(lines, spacing) for lines in cols]
    pad_top = 0 if sum(heights) == 0 else max(heights) + spacing * 2
    return size, spacing, pad_left, pad_top, cols, rows


def _block_height(lines: list[_Line], spacing: int) -> int:
    return sum(line.height + spacing for line in lines) - spacing


def bands(width: int, height: int, hor: list[list[Label]], ver: list[list[Label]]) -> tuple[int, int]:
    """(left band width, top band height) that :func:`annotate` adds for these labels."""
    return _layout(width, height, hor, ver)[2:4]


def _draw_lines(draw: ImageDraw.ImageDraw, x: float, y: float, lines: list[_Line], size: int, spacing: int,
                limit: float) -> None:
    for line in lines:
        s = size
        while s > 1 and draw.textbbox((0, 0), line.text, font=font(s))[2] > limit:
            s -= 1
        fill = ACTIVE if line.active else INACTIVE
        draw.text((x, y + line.height / 2), line.text, font=font(s), fill=fill, anchor="mm")
        if not line.active:
            mid = y + line.height // 2
            draw.line((x - line.width // 2, mid, x + line.width // 2, mid), fill=INACTIVE, width=STRIKE_WIDTH)
        y += line.height + spacing


def annotate(grid: Image.Image, width: int, height: int, hor: list[list[Label]], ver: list[list[Label]],
             margin: int = 0) -> Image.Image:
    """``grid`` (cells of width x height side by side) with ``margin`` pixels between its cells, a band of
    the column labels ``hor`` (one list per column) on top and of the row labels ``ver`` on the left."""
    cols, rows = grid.width // width, grid.height // height
    if len(hor) != cols:
        raise ValueError(f"bad number of column labels: {len(hor)}; the grid has {cols} columns")
    if len(ver) != rows:
        raise ValueError(f"bad number of row labels: {len(ver)}; the grid has {rows} rows")
    size, spacing, pad_left, pad_top, col_lines, row_lines = _layout(width, height, hor, ver)
    out = Image.new("RGB", (grid.width + pad_left + margin * (cols - 1), grid.height + pad_top + margin * (rows - 1)),
                    BACKGROUND)
    for r in range(rows):
        for c in range(cols):
            cell = grid.crop((width * c, height * r, width * (c + 1), height * (r + 1)))
            out.paste(cell, (pad_left + (width + margin) * c, pad_top + (height + margin) * r))
    draw = ImageDraw.Draw(out)
    for c, lines in enumerate(col_lines):
        x = pad_left + (width + margin) * c + width / 2
        _draw_lines(draw, x, pad_top / 2 - _block_height(lines, spacing) / 2, lines, size, spacing, width)
    for r, lines in enumerate(row_lines):
        y = pad_top + (height + margin) * r + height / 2 - sum(line.height for line in lines) / 2
        _draw_lines(draw, pad_left / 2, y, lines, size, spacing, pad_left)
    return out


def matrix_labels(parts: list[str]) -> tuple[list[list[Label]], list[list[Label]]]:
    """A1111's prompt-matrix labels: the first half of the parts across, the rest down, each column (row)
    showing the parts its combination has as active, the others struck through."""
    boundary = math.ceil(len(parts) / 2)
    across, down = parts[:boundary], parts[boundary:]
    hor = [[Label(t, bool(k & (1 << i))) for i, t in enumerate(across)] for k in range(1 << len(across))]
    ver = [[Label(t, bool(k & (1 << i))) for i, t in enumerate(down)] for k in range(1 << len(down))]
    return hor, ver


def draw_prompt_matrix(grid: Image.Image, width: int, height: int, all_prompts: list[str],
                       margin: int = 0) -> Image.Image:
    """A1111's ``draw_prompt_matrix``: the labels of a prompt matrix grid (``all_prompts``: the prompt split
    at ``|``; the first part, in every picture, is not drawn)."""
    hor, ver = matrix_labels(list(all_prompts[1:]))
    return annotate(grid, width, height, hor, ver, margin)
