"""A picture cut into overlapping tiles and put back together (A1111's ``split_grid`` / ``combine_grid``).

Tiles are ``tile_w`` x ``tile_h``, spread evenly so that neighbours overlap by at least ``overlap``
pixels; the last one of a row (column) ends at the picture's edge.  Combining pastes them back in
order, each over the previous ones through a linear ramp across the first ``overlap`` pixels, so an
unchanged grid gives back the picture it was cut from.  Scripts replace ``tile[2]`` in place
(SD upscale, Poor man's outpainting).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image


@dataclass
class Grid:
    """``tiles``: rows ``[y, h, [[x, w, tile image], ...]]`` (A1111's layout)."""
    tiles: list = field(default_factory=list)
    tile_w: int = 512
    tile_h: int = 512
    image_w: int = 0
    image_h: int = 0
    overlap: int = 64

    def count(self) -> int:
        return sum(len(row) for _, _, row in self.tiles)

    def positions(self) -> list[tuple[int, int]]:
        """(x, y) of every tile, row by row."""
        return [(x, y) for y, _, row in self.tiles for x, _, _ in row]


def _starts(size: int, tile: int, overlap: int) -> list[int]:
    """Where the tiles along one side start: evenly spaced, the last one flush with the edge."""
    n = max(1, math.ceil((size - overlap) / (tile - overlap)))
    step = (size - tile) / (n - 1) if n > 1 else 0
    out = []
    for i in range(n):
        p = int(i * step)
        if p + tile >= size:
            p = size - tile
        out.append(p)
    return out


def split_grid(image: Image.Image, tile_w: int = 512, tile_h: int = 512, overlap: int = 64) -> Grid:
    """``image`` cut into tiles (see the module doc); a picture smaller than a tile gets one tile,
    padded with black on the left / top as A1111's crop pads it."""
    if overlap < 0 or overlap >= tile_w or overlap >= tile_h:
        raise ValueError(f"tile overlap {overlap} must be at least 0 and less than the tile size {tile_w}x{tile_h}")
    w, h = image.size
    grid = Grid([], tile_w, tile_h, w, h, overlap)
    xs = _starts(w, tile_w, overlap)
    for y in _starts(h, tile_h, overlap):
        grid.tiles.append([y, tile_h, [[x, tile_w, image.crop((x, y, x + tile_w, y + tile_h))] for x in xs]])
    return grid


def _ramp(overlap: int, size: int, vertical: bool) -> Image.Image:
    """The blending mask over an overlap: 0 at the previous tile's side up to just under 255."""
    r = (np.arange(overlap, dtype=np.float32) * 255 / overlap).astype(np.uint8)
    a = np.repeat(r[:, None], size, axis=1) if vertical else np.repeat(r[None, :], size, axis=0)
    return Image.fromarray(a, "L")


def combine_grid(grid: Grid) -> Image.Image:
    """The picture of ``grid``'s tiles: each row left to right, then the rows top to bottom, each piece
    blended over what is there across the overlap."""
    ov = grid.overlap
    ramp_w = _ramp(ov, grid.tile_h, vertical=False) if ov else None
    ramp_h = _ramp(ov, grid.image_w, vertical=True) if ov else None
    out = Image.new("RGB", (grid.image_w, grid.image_h))
    for y, h, row in grid.tiles:
        line = Image.new("RGB", (grid.image_w, h))
        for x, w, tile in row:
            if x == 0:
                line.paste(tile, (0, 0))
                continue
            if ov:
                line.paste(tile.crop((0, 0, ov, h)), (x, 0), mask=ramp_w)
            line.paste(tile.crop((ov, 0, w, h)), (x + ov, 0))
        if y == 0:
            out.paste(line, (0, 0))
            continue
        if ov:
            out.paste(line.crop((0, 0, line.width, ov)), (0, y), mask=ramp_h)
        out.paste(line.crop((0, ov, line.width, h)), (0, y + ov))
    return out


# the outpainting scripts' canvas growth
DIRECTIONS = ("left", "right", "up", "down")


def sides(width: int, height: int, pixels: int, direction) -> tuple[int, int, int, int]:
    """(left, right, up, down) growth: ``pixels`` on each chosen side, then shared out so that the new
    size is a multiple of 64 (A1111's rule)."""
    left, right, up, down = (pixels if d in direction else 0 for d in DIRECTIONS)
    target_w = math.ceil((width + left + right) / 64) * 64
    target_h = math.ceil((height + up + down) / 64) * 64
    if left > 0:
        left = left * (target_w - width) // (left + right)
    if right > 0:
        right = target_w - width - left
    if up > 0:
        up = up * (target_h - height) // (up + down)
    if down > 0:
        down = target_h - height - up
    return left, right, up, down
