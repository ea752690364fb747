"""A tiny synthetic world of coloured shapes, used to train and test the shipped default model.

Each scene is one flat-coloured shape (circle, square or triangle) of one of eight colours, drawn on a
plain background of a different colour, at one of five positions and in one of two sizes, together
with an English caption that names some of those attributes. ``classify`` reads the colour and shape of
the main object back from pixel statistics alone (no learned weights), which is enough to score
generated pictures.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

# Object colours: chosen to be far apart in RGB so that blurry or noisy reconstructions still map
# back to the right name by nearest-colour lookup.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 70, 230),
    "yellow": (245, 225, 40),
    "purple": (150, 40, 190),
    "orange": (250, 140, 20),
    "white": (250, 250, 250),
    "black": (15, 15, 15),
}

# Background colours. "gray" only ever appears as a background; the others share the RGB value of
# the object colour of the same name.
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": COLOURS["white"],
    "black": COLOURS["black"],
    "gray": (128, 128, 128),
    "blue": COLOURS["blue"],
    "green": COLOURS["green"],
    "yellow": COLOURS["yellow"],
}

SHAPES = ("circle", "square", "triangle")
SIZES = ("small", "large")
POSITIONS = ("top left", "top right", "bottom left", "bottom right", "center")

# Object centre in units of the image side, and object half-extent (radius) likewise.
_POSITION_CENTRES = {
    "top left": (0.25, 0.25),
    "top right": (0.75, 0.25),
    "bottom left": (0.25, 0.75),
    "bottom right": (0.75, 0.75),
    "center": (0.5, 0.5),
}
_SIZE_RADII = {"small": 0.14, "large": 0.22}

# All named colours the classifier may see (objects and backgrounds).
_PALETTE_NAMES = tuple(COLOURS) + ("gray",)
_PALETTE = np.array([COLOURS[n] if n in COLOURS else BACKGROUNDS[n] for n in _PALETTE_NAMES], dtype=np.float32)


@dataclass(frozen=True)
class Scene:
    shape: str
    colour: str
    background: str
    position: str
    size: str
    caption: str
    # Small offsets (fractions of the image side) and a size factor, so that scenes with the same
    # caption are not pixel-identical.
    dx: float = 0.0
    dy: float = 0.0
    scale: float = 1.0


def _position_phrase(position: str) -> str:
    return "in the center" if position == "center" else f"at the {position}"


def make_caption(rng: np.random.Generator, shape: str, colour: str, background: str, position: str, size: str) -> str:
    """One caption for the given attributes; the template (which attributes are named) is drawn from rng.

    The colour and shape are always named; size, position and background each appear in some templates.
    """
    pos = _position_phrase(position)
    a = "an" if colour[0] in "aeiou" else "a"
    templates = (
        f"{a} {colour} {shape}",
        f"{a} {colour} {shape} on a {background} background",
        f"a {size} {colour} {shape}",
        f"a {size} {colour} {shape} {pos}",
        f"{a} {colour} {shape} {pos}",
        f"{a} {colour} {shape} {pos} on a {background} background",
        f"a {size} {colour} {shape} on a {background} background",
        f"a {size} {colour} {shape} {pos}, {background} background",
    )
    return templates[int(rng.integers(len(templates)))]


def sample_scene(rng: np.random.Generator) -> Scene:
    """Draw a random scene (attributes, jitter and caption) from a numpy Generator."""
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    colour = tuple(COLOURS)[int(rng.integers(len(COLOURS)))]
    backgrounds = [b for b in BACKGROUNDS if b != colour]
    background = backgrounds[int(rng.integers(len(backgrounds)))]
    position = POSITIONS[int(rng.integers(len(POSITIONS)))]
    size = SIZES[int(rng.integers(len(SIZES)))]
    dx, dy = (float(v) for v in rng.uniform(-0.04, 0.04, size=2))
    scale = float(rng.uniform(0.9, 1.1))
    caption = make_caption(rng, shape, colour, background, position, size)
    return Scene(shape, colour, background, position, size, caption, dx, dy, scale)


def render(scene: Scene, size: int = 64) -> Image.Image:
    """Draw the scene as a size x size RGB image (hard edges, flat colours)."""
    img = Image.new("RGB", (size, size), BACKGROUNDS[scene.background])
    draw = ImageDraw.Draw(img)
    cx, cy = _POSITION_CENTRES[scene.position]
    cx, cy = (cx + scene.dx) * size, (cy + scene.dy) * size
    r = _SIZE_RADII[scene.size] * scene.scale * size
    fill = COLOURS[scene.colour]
    if scene.shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif scene.shape == "square":
        s = r * 0.9  # a square of the same "radius" looks bigger than a circle; shrink it a little
        draw.rectangle([cx - s, cy - s, cx + s, cy + s], fill=fill)
    elif scene.shape == "triangle":
        draw.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=fill)
    else:
        raise ValueError(f"unknown shape {scene.shape!r}")
    return img


def make_dataset(n: int, seed: int) -> tuple[np.ndarray, list[str], list[Scene]]:
    """n random scenes from ``seed``: (uint8 images of shape (n, 64, 64, 3), captions, scenes)."""
    rng = np.random.default_rng(seed)
    scenes = [sample_scene(rng) for _ in range(n)]
    images = np.stack([np.asarray(render(s, 64), dtype=np.uint8) for s in scenes]) if n else np.zeros((0, 64, 64, 3), np.uint8)
    return images, [s.caption for s in scenes], scenes


def _as_array(image) -> np.ndarray:
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        arr = np.clip(np.rint(arr.astype(np.float64)), 0, 255)
    return arr.astype(np.float32)


def _nearest_palette(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel: index into _PALETTE of the nearest named colour, and the distance to it."""
    d = np.linalg.norm(arr[..., None, :] - _PALETTE, axis=-1)
    idx = d.argmin(-1)
    return idx, np.take_along_axis(d, idx[..., None], -1)[..., 0]


def colour_fraction(image, colour: str, max_distance: float = 90.0) -> float:
    """Fraction of pixels whose nearest named colour is ``colour`` and that lie within max_distance of it."""
    arr = _as_array(image)
    names = list(_PALETTE_NAMES)
    if colour not in names:
        raise ValueError(f"unknown colour {colour!r}")
    idx, dist = _nearest_palette(arr)
    return float(((idx == names.index(colour)) & (dist <= max_distance)).mean())


def _shape_from_mask(mask: np.ndarray) -> str:
    ys, xs = np.nonzero(mask)
    if len(xs) < 4:
        return "circle"  # nothing found; an arbitrary answer that will mostly be scored wrong
    # Robust bounding box (ignores a few stray pixels).
    x0, x1 = np.percentile(xs, [1, 99])
    y0, y1 = np.percentile(ys, [1, 99])
    w, h = x1 - x0 + 1, y1 - y0 + 1
    inside = (xs >= x0) & (xs <= x1) & (ys >= y0) & (ys <= y1)
    fill = inside.sum() / (w * h)
    # How wide the object is near its top compared with near its bottom: about 0.3 for a triangle
    # (apex up), 1 for a square, about 1 for a circle.
    band = max(1.0, h * 0.25)
    top = xs[inside & (ys <= y0 + band)]
    bottom = xs[inside & (ys >= y1 - band)]
    top_w = (np.ptp(top) + 1) if len(top) else 0.0
    bottom_w = (np.ptp(bottom) + 1) if len(bottom) else 1.0
    taper = top_w / max(bottom_w, 1.0)
    if taper < 0.62 and fill < 0.72:
        return "triangle"
    if fill >= 0.885:
        return "square"
    if fill >= 0.62:
        return "circle"
    return "triangle"


def background_of(image) -> str:
    """The named colour most common along the image border."""
    idx, _ = _nearest_palette(_as_array(image))
    border = np.concatenate([idx[0], idx[-1], idx[:, 0], idx[:, -1]])
    return _PALETTE_NAMES[int(np.bincount(border, minlength=len(_PALETTE_NAMES)).argmax())]


def _object(image, background: str | None = None) -> tuple[str, np.ndarray]:
    """(colour name, boolean mask) of the main object; see ``classify``."""
    arr = _as_array(image)
    idx, _ = _nearest_palette(arr)
    names = list(_PALETTE_NAMES)
    if background is None:
        border = np.concatenate([idx[0], idx[-1], idx[:, 0], idx[:, -1]])
        bg = int(np.bincount(border, minlength=len(names)).argmax())
    else:
        bg = names.index(background)
    counts = np.bincount(idx.ravel(), minlength=len(names)).astype(np.int64)
    counts[bg] = 0
    counts[names.index("gray")] = 0  # never an object colour
    obj = int(counts.argmax())
    # The object mask: pixels of the object colour, cleaned of isolated specks (edge pixels that
    # happen to map to that colour) by requiring a same-coloured 4-neighbour majority.
    mask = idx == obj
    padded = np.pad(mask, 1)
    neighbours = padded[:-2, 1:-1].astype(int) + padded[2:, 1:-1] + padded[1:-1, :-2] + padded[1:-1, 2:]
    cleaned = mask & (neighbours >= 2)
    if cleaned.sum() >= 4:
        mask = cleaned
    return names[obj], mask


def classify(image, background: str | None = None) -> tuple[str, str]:
    """Name the (colour, shape) of the main object in a 64x64-ish RGB image.

    Every pixel is mapped to the nearest named colour. The background is ``background`` if given,
    otherwise the most common named colour along the image border. The object colour is the most
    common named colour among the remaining pixels, and the shape is read from the fill ratio and
    top/bottom width ratio of the pixels of that colour.
    """
    colour, mask = _object(image, background)
    return colour, _shape_from_mask(mask)


def locate(image, background: str | None = None) -> tuple[str, str]:
    """(position, size) of the main object: the named position nearest to the centre of its bounding
    box, and "small" or "large" from the box's side (small objects span about 15-20 pixels of 64,
    large ones 23-31)."""
    _, mask = _object(image, background)
    ys, xs = np.nonzero(mask)
    side = mask.shape[0]
    if len(xs) < 4:
        return "center", "small"
    x0, x1 = np.percentile(xs, [1, 99])
    y0, y1 = np.percentile(ys, [1, 99])
    cx, cy = (x0 + x1 + 1) / 2 / side, (y0 + y1 + 1) / 2 / side
    position = min(_POSITION_CENTRES, key=lambda p: (_POSITION_CENTRES[p][0] - cx) ** 2 + (_POSITION_CENTRES[p][1] - cy) ** 2)
    extent = max(x1 - x0 + 1, y1 - y0 + 1) / side * 64
    return position, ("large" if extent >= 21.5 else "small")
