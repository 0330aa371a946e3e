"""The embedded default dataset: textured shapes on cluttered backgrounds, in the VOC devkit layout.

It is written as ``JPEGImages/<id>.jpg``, ``SegmentationClass/<id>.png`` and
``ImageSets/Segmentation/{train,val}.txt`` so that it goes through the same reader as real VOC, plus a
``meta.json`` that records how it was made (and marks the folder as ours, see :func:`ensure_synthetic`).

What makes it a weakly-supervised problem rather than a toy:

- the six classes differ by shape *and* texture family, but every object's colours are random, so no
  single colour identifies a class;
- backgrounds are coloured gradients with low-frequency noise, and carry distractors (curves, irregular
  blobs, irregular polygon patches, half of them wearing a class texture) that are background in the mask,
  so a classifier cannot succeed from texture statistics alone and CAMs get plausible false positives;
- 1-3 objects of 1-2 classes, 18%-60% of the image side, that often touch or occlude each other;
- a 2-3 px band of 255 ("ignore") along every object contour, as in VOC.

Every image is drawn from its own generator seeded by ``(seed, split, index)``, so an image does not
depend on how many others are generated, and the whole tree is reproducible from its parameters.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from numbers import Integral
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from pmm.errors import PmmError
from pmm.io import FOLDER_MODE, save_image, save_mask, write_json

SYNTHETIC_CLASS_NAMES: tuple[str, ...] = ("background", "disk", "square", "triangle", "star", "ring", "cross")

GENERATOR = "pmm.data.synthetic"
# Bump whenever render_sample's output changes, so that ensure_synthetic regenerates old trees.
FORMAT_VERSION = 4

_SPLIT_CODES = {"train": 0, "val": 1}
_MIN_IMAGE_SIZE = 64
_MIN_SIZE_FRAC, _MAX_SIZE_FRAC = 0.18, 0.60
_TOUCH_PROB = 0.45  # chance that a second/third object is placed against an earlier one
_PLACE_TRIES = 24
_MIN_VISIBLE_FRAC = 0.5  # an object may lose at most half of its area to later objects or the border
_SUBPIXEL_BITS = 4  # cv2 fixed-point coordinates: shapes move and rotate smoothly, not in whole pixels
_K3 = np.ones((3, 3), np.uint8)


# --------------------------------------------------------------------------------------------------
# Shapes: unit outlines (circumradius 1), one per foreground class.


def _regular(n: int, radius: float = 1.0, phase: float = 0.0) -> np.ndarray:
    angles = phase + np.arange(n) * (2 * np.pi / n)
    return radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _outline_disk(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None]:
    return _regular(48), None


def _outline_square(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None]:
    return _regular(4, phase=np.pi / 4), None


def _outline_triangle(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None]:
    return _regular(3, phase=-np.pi / 2), None


def _outline_star(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None]:
    points = _regular(10, phase=-np.pi / 2)
    points[1::2] *= rng.uniform(0.38, 0.5)
    return points, None


def _outline_ring(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None]:
    return _regular(48), _regular(48, radius=rng.uniform(0.45, 0.62))


def _outline_cross(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None]:
    w = rng.uniform(0.22, 0.32)
    arm = np.sqrt(1.0 - w * w)  # the arm corners, not the arm axis, sit on the unit circle
    quarter = np.array([[w, arm], [w, w], [arm, w]])
    turns = [np.array([[c, -s], [s, c]]) for c, s in ((1, 0), (0, -1), (-1, 0), (0, 1))]
    return np.concatenate([quarter @ t.T for t in turns]), None


_OUTLINES: dict[int, Callable[[np.random.Generator], tuple[np.ndarray, np.ndarray | None]]] = {
    1: _outline_disk,
    2: _outline_square,
    3: _outline_triangle,
    4: _outline_star,
    5: _outline_ring,
    6: _outline_cross,
}


# --------------------------------------------------------------------------------------------------
# Textures: each returns a float32 HxW field t in [0, 1] that mixes an object's two random colours.


@dataclass(frozen=True)
class _Grid:
    x: np.ndarray
    y: np.ndarray

    @staticmethod
    def of(size: int) -> "_Grid":
        y, x = np.mgrid[0:size, 0:size].astype(np.float32)
        return _Grid(x, y)

    def rotated(self, cx: float, cy: float, angle: float) -> tuple[np.ndarray, np.ndarray]:
        dx, dy = self.x - cx, self.y - cy
        c, s = np.float32(np.cos(angle)), np.float32(np.sin(angle))
        return dx * c + dy * s, -dx * s + dy * c


def _soft_square(wave: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    # A clipped, steepened sine: crisp pattern edges without the aliasing of a hard threshold.
    return np.clip(0.5 + 0.5 * rng.uniform(1.5, 3.0) * wave, 0.0, 1.0)


def _oriented_stripes(rng: np.random.Generator, g: _Grid, cx: float, cy: float, degrees: float) -> np.ndarray:
    # The orientation is the class's look, fixed in the image frame (it does not turn with the shape):
    # local orientation is what a CNN trained from scratch picks up within minutes.
    theta = np.deg2rad(degrees + rng.uniform(-8, 8))
    u, _ = g.rotated(cx, cy, theta)
    period = rng.uniform(5.0, 8.0)
    return _soft_square(np.sin(u * np.float32(2 * np.pi / period) + rng.uniform(0, 2 * np.pi)), rng)


def _tex_horizontal(rng: np.random.Generator, g: _Grid, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    return _oriented_stripes(rng, g, cx, cy, 90.0)


def _tex_vertical(rng: np.random.Generator, g: _Grid, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    return _oriented_stripes(rng, g, cx, cy, 0.0)


def _tex_checker(rng: np.random.Generator, g: _Grid, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    cell = rng.uniform(4.0, 6.0)
    u, v = g.rotated(cx, cy, np.deg2rad(rng.uniform(-8, 8)))
    k = np.float32(np.pi / cell)
    return _soft_square(np.sin(u * k) * np.sin(v * k), rng)


def _tex_diamonds(rng: np.random.Generator, g: _Grid, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    # A checkerboard turned 45 degrees: mirror images of it are alike, so flips keep the class's look.
    cell = rng.uniform(4.0, 6.0)
    u, v = g.rotated(cx, cy, np.deg2rad(45 + rng.uniform(-5, 5)))
    k = np.float32(np.pi / cell)
    return _soft_square(np.sin(u * k) * np.sin(v * k), rng)


def _tex_grid(rng: np.random.Generator, g: _Grid, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    period = rng.uniform(7.0, 10.0)
    width = rng.uniform(1.5, 2.5)
    u, v = g.rotated(cx, cy, np.deg2rad(rng.uniform(-5, 5)))
    du = np.abs((u / period + 0.25) % 1.0 - 0.5) * np.float32(period)
    dv = np.abs((v / period + 0.25) % 1.0 - 0.5) * np.float32(period)
    return np.clip(width - np.minimum(du, dv) + 0.5, 0.0, 1.0)


def _tex_dots(rng: np.random.Generator, g: _Grid, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    period = rng.uniform(6.0, 9.0)
    u, v = g.rotated(cx, cy, rng.uniform(0, np.pi / 2))
    du = (u / period + rng.uniform()) % 1.0 - 0.5
    dv = (v / period + rng.uniform()) % 1.0 - 0.5
    dist = np.hypot(du, dv) * np.float32(period)
    return np.clip(period * rng.uniform(0.22, 0.32) - dist + 0.5, 0.0, 1.0)


def _tex_speckle(rng: np.random.Generator, g: _Grid, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    noise = cv2.GaussianBlur(rng.random(g.x.shape, dtype=np.float32), (0, 0), 0.8)
    return np.clip((noise - noise.mean()) / np.float32(4 * noise.std() + 1e-6) + 0.5, 0.0, 1.0)


def _tex_blotch(rng: np.random.Generator, g: _Grid, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    # Camouflage-like blotches; used by distractors only, never by a class.
    coarse = rng.normal(size=(6, 6)).astype(np.float32)
    field = cv2.resize(coarse, g.x.shape[::-1], interpolation=cv2.INTER_CUBIC)
    return np.clip(0.5 + 1.5 * field, 0.0, 1.0)


_Texture = Callable[[np.random.Generator, _Grid, float, float, float, float], np.ndarray]
_CLASS_TEXTURES: dict[int, _Texture] = {
    # Every texture looks alike in a mirror, so horizontal flips keep labels true.
    1: _tex_horizontal,  # disk
    2: _tex_vertical,  # square
    3: _tex_checker,  # triangle
    4: _tex_dots,  # star
    5: _tex_diamonds,  # ring
    6: _tex_grid,  # cross
}


def _colour_pair(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    first = rng.uniform(0, 255, 3)
    second = rng.uniform(0, 255, 3)
    luma = np.array([0.299, 0.587, 0.114])
    for _ in range(32):  # the texture must be visible: its two colours differ in brightness
        if np.linalg.norm(first - second) >= 90 and abs(luma @ (first - second)) >= 60:
            break
        second = rng.uniform(0, 255, 3)
    return first.astype(np.float32), second.astype(np.float32)


def _paint(
    rng: np.random.Generator, texture: _Texture, g: _Grid, cx: float, cy: float, r: float, angle: float
) -> np.ndarray:
    """HxWx3 float32 colours of a textured, lit surface centred at (cx, cy)."""
    t = texture(rng, g, cx, cy, r, angle)
    first, second = _colour_pair(rng)
    colour = first + (second - first) * t[..., None]
    u, _ = g.rotated(cx, cy, rng.uniform(0, 2 * np.pi))
    shade = np.clip(1.0 + rng.uniform(-0.2, 0.2) * u / np.float32(max(r, 1.0)), 0.6, 1.4)
    return colour * shade[..., None]


def _blend(image: np.ndarray, colour: np.ndarray | tuple, alpha: np.ndarray) -> None:
    a = (alpha.astype(np.float32) / 255.0)[..., None]
    image *= 1.0 - a
    image += np.asarray(colour, np.float32) * a


def _paint_over(
    rng: np.random.Generator, image: np.ndarray, alpha: np.ndarray, texture: _Texture, g: _Grid,
    cx: float, cy: float, r: float, angle: float,
) -> None:
    """Paint a textured surface through the coverage ``alpha``, working only on its bounding box."""
    x, y, w, h = cv2.boundingRect(alpha)
    if w == 0 or h == 0:
        return
    box = (slice(y, y + h), slice(x, x + w))
    colour = _paint(rng, texture, _Grid(g.x[box], g.y[box]), cx, cy, r, angle)
    _blend(image[box], colour, alpha[box])


def _fill(size: int, *polygons: tuple[np.ndarray, int]) -> np.ndarray:
    """Antialiased uint8 coverage of polygons (HxW, 0..255), each drawn with its value in order."""
    canvas = np.zeros((size, size), np.uint8)
    for points, value in polygons:
        fixed = np.round(points * (1 << _SUBPIXEL_BITS)).astype(np.int32)
        cv2.fillPoly(canvas, [fixed], int(value), cv2.LINE_AA, _SUBPIXEL_BITS)
    return canvas


# --------------------------------------------------------------------------------------------------
# Background and distractors.


def _background(rng: np.random.Generator, g: _Grid) -> np.ndarray:
    size = g.x.shape[0]
    first, second = rng.uniform(0, 255, (2, 3)).astype(np.float32)
    u, _ = g.rotated(size / 2, size / 2, rng.uniform(0, 2 * np.pi))
    ramp = np.clip(0.5 + u / np.float32(size), 0.0, 1.0)[..., None]
    image = first + (second - first) * ramp
    coarse = rng.normal(size=(5, 5, 3)).astype(np.float32)
    image += cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC) * np.float32(rng.uniform(10, 30))
    return image


def _irregular_polygon(rng: np.random.Generator, vertices: int, wobble: float) -> np.ndarray:
    """A star-shaped polygon with uneven radii and angles, so that it never reads as a class shape."""
    while True:
        angles = np.sort(rng.uniform(0, 2 * np.pi, vertices))
        radii = rng.uniform(1.0 - wobble, 1.0, vertices)
        # Near-equal radii with spread angles can look like a disk or a regular polygon: redraw those.
        gaps = np.diff(np.append(angles, angles[0] + 2 * np.pi))
        if radii.min() < 1.0 - 0.6 * wobble and gaps.max() < np.pi:
            return radii[:, None] * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _draw_distractors(rng: np.random.Generator, image: np.ndarray, g: _Grid) -> None:
    size = g.x.shape[0]
    for _ in range(int(rng.integers(0, 4))):  # polygon patches in a texture no class wears
        radius = rng.uniform(0.05, 0.11) * size
        centre = rng.uniform(0, size, 2)
        points = _irregular_polygon(rng, int(rng.integers(5, 9)), 0.55) * radius + centre
        texture = _tex_blotch
        alpha = _fill(size, (points, 255))
        cx, cy = float(centre[0]), float(centre[1])
        _paint_over(rng, image, alpha, texture, g, cx, cy, radius, rng.uniform(0, 2 * np.pi))
    for _ in range(int(rng.integers(1, 6))):  # small irregular blobs
        radius = rng.uniform(0.025, 0.06) * size
        points = _irregular_polygon(rng, 12, 0.45) * radius + rng.uniform(0, size, 2)
        alpha = _fill(size, (points, 255))
        x, y, w, h = cv2.boundingRect(alpha)
        _blend(image[y : y + h, x : x + w], rng.uniform(0, 255, 3), alpha[y : y + h, x : x + w])
    for _ in range(int(rng.integers(2, 6))):  # curves: quadratic Beziers, some crossing the frame
        control = rng.uniform(-0.1 * size, 1.1 * size, (3, 2))
        t = np.linspace(0.0, 1.0, 24)[:, None]
        curve = (1 - t) ** 2 * control[0] + 2 * (1 - t) * t * control[1] + t**2 * control[2]
        alpha = np.zeros((size, size), np.uint8)
        fixed = np.round(curve * (1 << _SUBPIXEL_BITS)).astype(np.int32)
        cv2.polylines(alpha, [fixed], False, 255, int(rng.integers(1, 4)), cv2.LINE_AA, _SUBPIXEL_BITS)
        x, y, w, h = cv2.boundingRect(alpha)
        _blend(image[y : y + h, x : x + w], rng.uniform(0, 255, 3), alpha[y : y + h, x : x + w])


# --------------------------------------------------------------------------------------------------
# Objects: layout (shapes only), then painting and the label mask.


@dataclass
class _Object:
    cls: int
    cx: float
    cy: float
    radius: float
    angle: float
    alpha: np.ndarray  # uint8 HxW antialiased coverage
    area: int  # pixels covered (alpha >= 128) when placed


def _place(rng: np.random.Generator, cls: int, placed: list[_Object], owner: np.ndarray) -> _Object | None:
    """Draw one object that keeps itself and every earlier object at least half visible."""
    size = owner.shape[0]
    for attempt in range(_PLACE_TRIES):
        radius = rng.uniform(_MIN_SIZE_FRAC, _MAX_SIZE_FRAC) * size / 2
        if attempt >= _PLACE_TRIES // 2:
            radius = max(radius * 0.6, _MIN_SIZE_FRAC * size / 2)  # a crowded image: try smaller
        outer, hole = _OUTLINES[cls](rng)
        angle = rng.uniform(0, 2 * np.pi)
        aspect = np.exp(rng.uniform(-0.18, 0.18))
        stretch = np.array([aspect, 1.0 / aspect]) / max(aspect, 1.0 / aspect)
        if placed and rng.random() < _TOUCH_PROB:
            anchor = placed[int(rng.integers(len(placed)))]
            direction = rng.uniform(0, 2 * np.pi)
            dist = (anchor.radius + radius) * rng.uniform(0.45, 0.9)
            cx, cy = anchor.cx + dist * np.cos(direction), anchor.cy + dist * np.sin(direction)
        else:
            cx, cy = rng.uniform(0.75 * radius, size - 0.75 * radius, 2)
        c, s = np.cos(angle), np.sin(angle)
        rotation = np.array([[c, -s], [s, c]])

        def to_image(points: np.ndarray) -> np.ndarray:
            return (points * stretch) @ rotation.T * radius + (cx, cy)

        polygons = [(to_image(outer), 255)] + ([(to_image(hole), 0)] if hole is not None else [])
        full_area = sum(cv2.contourArea(p.astype(np.float32)) * (1 if v else -1) for p, v in polygons)
        alpha = _fill(size, *polygons)
        body = alpha >= 128
        area = int(body.sum())
        if area < 0.7 * full_area:
            continue  # mostly outside the frame
        trial = owner.copy()
        trial[body] = len(placed) + 1
        if all((trial == k + 1).sum() >= _MIN_VISIBLE_FRAC * obj.area for k, obj in enumerate(placed)):
            return _Object(cls, float(cx), float(cy), float(radius), float(angle), alpha, area)
    return None  # no room left: the image simply has one object fewer


def _label_mask(objects: list[_Object], size: int) -> np.ndarray:
    """Class ids of the visible objects, 255 on a 2-3 px band along every object contour."""
    owner = np.zeros((size, size), np.uint8)
    soft = np.zeros((size, size), bool)
    for k, obj in enumerate(objects):
        owner[obj.alpha >= 128] = k + 1
        # Pixels the image shows as a colour mix (antialiased edges still visible on top) are ambiguous.
        soft[obj.alpha == 255] = False
        soft |= (obj.alpha > 0) & (obj.alpha < 255)
    # Instances, not classes, so that two touching objects of one class are also separated by the band.
    edges = cv2.dilate(owner, _K3) != cv2.erode(owner, _K3)
    classes = np.array([0] + [obj.cls for obj in objects], np.uint8)
    mask = classes[owner]
    mask[edges | soft] = 255
    return mask


def render_sample(
    rng: np.random.Generator,
    image_size: int = 160,
    num_classes: int = len(SYNTHETIC_CLASS_NAMES),
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one synthetic image and its VOC-style label mask.

    Args:
        rng: the generator that decides everything about this image (seed it per image for
            reproducibility, e.g. ``np.random.default_rng([seed, split_code, index])``).
        image_size: side of the square image in pixels (at least 64).
        num_classes: number of classes, background included (2..7); foreground classes are drawn from
            the first ``num_classes - 1`` entries after background in :data:`SYNTHETIC_CLASS_NAMES`.

    Returns:
        ``(image, mask)``: HxWx3 uint8 RGB and HxW uint8 labels (0 background, 1..K classes,
        255 contour band).

    Raises:
        PmmError: for an rng that is not a numpy Generator or out-of-range sizes.
    """
    if not isinstance(rng, np.random.Generator):
        raise PmmError(
            f"render_sample: rng is a {type(rng).__name__}; expected a numpy Generator, "
            "e.g. np.random.default_rng([seed, split_code, index])"
        )
    size = _check_int("image_size", image_size, _MIN_IMAGE_SIZE)
    num_classes = _check_int("num_classes", num_classes, 2)
    if num_classes > len(SYNTHETIC_CLASS_NAMES):
        raise PmmError(
            f"num_classes={num_classes}: the synthetic dataset has at most {len(SYNTHETIC_CLASS_NAMES)} classes "
            f"(background included); use 2..{len(SYNTHETIC_CLASS_NAMES)}"
        )
    grid = _Grid.of(size)
    image = _background(rng, grid)
    _draw_distractors(rng, image, grid)

    foreground = np.arange(1, num_classes)
    num_present = 1 if foreground.size == 1 else int(rng.integers(1, 3))
    present = [int(c) for c in rng.choice(foreground, size=num_present, replace=False)]
    num_objects = int(rng.integers(num_present, 4))
    # Every chosen class gets an object; extra objects repeat one of them.
    classes = present + [int(c) for c in rng.choice(present, size=num_objects - num_present)]
    rng.shuffle(classes)

    objects: list[_Object] = []
    owner = np.zeros((size, size), np.uint8)
    for cls in classes:
        obj = _place(rng, cls, objects, owner)
        if obj is not None:
            objects.append(obj)
            owner[obj.alpha >= 128] = len(objects)
    for obj in objects:
        _paint_over(rng, image, obj.alpha, _CLASS_TEXTURES[obj.cls], grid, obj.cx, obj.cy, obj.radius, obj.angle)

    image += rng.normal(0.0, rng.uniform(2.0, 6.0), image.shape).astype(np.float32)
    return np.clip(np.round(image), 0, 255).astype(np.uint8), _label_mask(objects, size)


# --------------------------------------------------------------------------------------------------
# The tree on disk.


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise PmmError(f"{name}={value!r}: expected an integer >= {minimum}; set {name} to such a value")
    return int(value)


def _expected_meta(seed: int, num_train: int, num_val: int, image_size: int) -> dict:
    return {
        "generator": GENERATOR,
        "format_version": FORMAT_VERSION,
        "seed": _check_int("seed", seed, 0),
        "num_train": _check_int("num_train", num_train, 1),
        "num_val": _check_int("num_val", num_val, 1),
        "image_size": _check_int("image_size", image_size, _MIN_IMAGE_SIZE),
        "class_names": list(SYNTHETIC_CLASS_NAMES),
    }


def _read_meta(root: Path) -> dict | None:
    try:
        meta = json.loads((root / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def _split_ids(split: str, count: int) -> list[str]:
    return [f"{split}_{index:05d}" for index in range(count)]


def _is_complete(root: Path, meta: dict) -> bool:
    """Whether every list and file of the tree described by ``meta`` is present (cheap: stats only)."""
    for split in _SPLIT_CODES:
        ids = _split_ids(split, meta[f"num_{split}"])
        try:
            listed = (root / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split()
        except OSError:
            return False
        if listed != ids:
            return False
        for image_id in ids:
            if not (root / "JPEGImages" / f"{image_id}.jpg").is_file():
                return False
            if not (root / "SegmentationClass" / f"{image_id}.png").is_file():
                return False
    return True


def _check_replaceable(root: Path) -> None:
    """Refuse to replace anything but a free path, an empty folder or a tree this module wrote."""
    if not root.exists() and not root.is_symlink():
        return
    if not root.is_dir():
        raise PmmError(
            f"{root}: exists and is not a folder; expected a free path or a pmm synthetic dataset; "
            "choose another data root or remove it"
        )
    if not any(root.iterdir()):
        return
    meta = _read_meta(root)
    if meta is None or meta.get("generator") != GENERATOR:
        raise PmmError(
            f"{root}: folder exists but is not a pmm synthetic dataset (no meta.json written by {GENERATOR}); "
            "refusing to replace it: choose another data root, or move the folder away yourself"
        )


def _write_tree(folder: Path, meta: dict) -> None:
    list_dir = folder / "ImageSets" / "Segmentation"
    for sub in (folder / "JPEGImages", folder / "SegmentationClass", list_dir):
        sub.mkdir(parents=True, exist_ok=True)
    for split, code in _SPLIT_CODES.items():
        ids = _split_ids(split, meta[f"num_{split}"])
        for index, image_id in enumerate(ids):
            rng = np.random.default_rng([meta["seed"], code, index])
            image, mask = render_sample(rng, meta["image_size"])
            save_image(folder / "JPEGImages" / f"{image_id}.jpg", image, quality=95)
            save_mask(folder / "SegmentationClass" / f"{image_id}.png", mask)
        (list_dir / f"{split}.txt").write_text("".join(f"{image_id}\n" for image_id in ids))
    write_json(folder / "meta.json", meta)  # last: its presence means the tree is whole


def generate_synthetic(
    root: str | os.PathLike,
    seed: int = 0,
    num_train: int = 600,
    num_val: int = 150,
    image_size: int = 160,
) -> Path:
    """Write the synthetic dataset to ``root`` atomically.

    The tree is built in a hidden temporary sibling of ``root`` and renamed into place, so ``root`` is
    never seen half-written. An existing ``root`` is replaced only if it is empty or a tree written by
    this module.

    Args:
        root: the folder to create (its parent is created if needed).
        seed: base seed; image ``i`` of split ``s`` uses ``default_rng([seed, s, i])`` (train 0, val 1).
        num_train, num_val: number of images in ``train.txt`` and ``val.txt`` (at least 1 each).
        image_size: side of the square images in pixels (at least 64).

    Returns:
        ``root`` as a Path.

    Raises:
        PmmError: for bad parameters, or when ``root`` holds something this module did not write.
    """
    root = Path(root).expanduser()
    meta = _expected_meta(seed, num_train, num_val, image_size)
    _check_replaceable(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}.", suffix=".building"))
    trash: Path | None = None
    try:
        building.chmod(FOLDER_MODE)  # mkdtemp makes a private (0700) folder
        _write_tree(building, meta)
        if root.exists() or root.is_symlink():
            trash = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}.", suffix=".old"))
            os.replace(root, trash / "old")
        try:
            os.replace(building, root)
        except OSError:
            if trash is not None and not root.exists():
                os.replace(trash / "old", root)  # put the previous tree back rather than lose it
            raise
    finally:
        if building.exists():
            shutil.rmtree(building, ignore_errors=True)
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)
    return root


def ensure_synthetic(
    root: str | os.PathLike,
    seed: int = 0,
    num_train: int = 600,
    num_val: int = 150,
    image_size: int = 160,
) -> Path:
    """Return ``root`` if it already holds the synthetic dataset with these parameters, else write it.

    ``root/meta.json`` must match the parameters (and this module's format version) and every listed
    file must exist; otherwise the tree is regenerated with :func:`generate_synthetic`. A folder that
    this module did not write is never deleted.

    Args:
        root: the dataset folder.
        seed, num_train, num_val, image_size: as in :func:`generate_synthetic`.

    Returns:
        ``root`` as a Path.

    Raises:
        PmmError: for bad parameters, or when ``root`` exists, is not empty and is not ours.
    """
    root = Path(root).expanduser()
    meta = _expected_meta(seed, num_train, num_val, image_size)
    if _read_meta(root) == meta and _is_complete(root, meta):
        return root
    return generate_synthetic(root, seed, num_train, num_val, image_size)
