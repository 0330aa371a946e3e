"""Write a small VOC-layout tree of 4 solid shape classes: a dataset pmm has never seen.

Used to check that the defaults generalise beyond the embedded synthetic data:
    python scripts/make_shapes_tree.py OUT_DIR [--train 400 --val 100 --size 128 --seed 7]
    python -m pmm.run stage=all data=voc data.root=OUT_DIR data.class_names=[background,circle,square,triangle,cross]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from pmm.io import save_image, save_mask

CLASS_NAMES = ("background", "circle", "square", "triangle", "cross")


def shape_polygon(cls: int, cx: float, cy: float, radius: float, angle: float) -> np.ndarray:
    if cls == 1:
        t = np.linspace(0, 2 * np.pi, 40, endpoint=False)
    elif cls == 2:
        t = np.arange(4) * np.pi / 2 + np.pi / 4
    elif cls == 3:
        t = np.arange(3) * 2 * np.pi / 3 - np.pi / 2
    else:
        arm = 0.35
        pts = np.array([[arm, 1], [arm, arm], [1, arm], [1, -arm], [arm, -arm], [arm, -1], [-arm, -1], [-arm, -arm],
                        [-1, -arm], [-1, arm], [-arm, arm], [-arm, 1]]) * radius
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        return pts @ rot.T + [cx, cy]
    pts = np.stack([np.cos(t + angle), np.sin(t + angle)], 1) * radius
    return pts + [cx, cy]


def render(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    image = np.zeros((size, size, 3), np.float32) + rng.uniform(0, 255, 3)
    image += rng.normal(0, 12, image.shape)
    mask = np.zeros((size, size), np.uint8)
    edges = np.zeros((size, size), np.uint8)
    classes = rng.choice(np.arange(1, 5), size=int(rng.integers(1, 3)), replace=False)
    for cls in classes:
        radius = rng.uniform(0.12, 0.28) * size
        cx, cy = rng.uniform(radius, size - radius, 2)
        poly = np.round(shape_polygon(int(cls), cx, cy, radius, rng.uniform(0, 2 * np.pi))).astype(np.int32)
        colour = tuple(float(c) for c in rng.uniform(0, 255, 3))
        cv2.fillPoly(image, [poly], colour)
        cv2.fillPoly(mask, [poly], int(cls))
        cv2.polylines(edges, [poly], True, 1, 2)
    mask[edges > 0] = 255
    return np.clip(image, 0, 255).astype(np.uint8), mask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--train", type=int, default=400)
    parser.add_argument("--val", type=int, default=100)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    lists = args.out / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True, exist_ok=True)
    for split, count in (("train", args.train), ("val", args.val)):
        ids = []
        for index in range(count):
            image, mask = render(np.random.default_rng([args.seed, len(split), index]), args.size)
            image_id = f"{split}_{index:04d}"
            save_image(args.out / "JPEGImages" / f"{image_id}.jpg", image)
            save_mask(args.out / "SegmentationClass" / f"{image_id}.png", mask)
            ids.append(image_id)
        (lists / f"{split}.txt").write_text("\n".join(ids) + "\n")
    print(f"wrote {args.train} train / {args.val} val images to {args.out}; classes: {list(CLASS_NAMES)}")


if __name__ == "__main__":
    main()
