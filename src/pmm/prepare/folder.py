"""``python -m pmm.prepare folder``: a VOC-layout tree as a ``data=folder`` dataset (images + a labels file).

For trying ``data=folder`` on images whose answer is known, or for handing a VOC-like tree to a tool
that wants image-level labels only: ``OUT/images/<id>.<ext>``, ``OUT/labels.csv`` (``image_id,labels``,
the class names of each image separated by spaces) and, with ``--masks``, ``OUT/masks/<id>.png``
with the class ids renumbered to the labels file's order (background, then the names sorted), the
order ``data=folder`` reads them in.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from pmm.data.voc import VOC_CLASS_NAMES, image_index
from pmm.errors import PmmError
from pmm.io import atomic_path, load_mask, save_mask


@dataclass(frozen=True)
class FolderExport:
    out: Path
    num_images: int
    class_names: tuple[str, ...]
    masks: bool

    def command(self) -> str:
        masks = f" data.masks={self.out / 'masks'}" if self.masks else ""
        return (f"pmm stage=all data=folder data.images={self.out / 'images'} "
                f"data.labels_file={self.out / 'labels.csv'}{masks} pseudo.alpha=11")


def export_folder(root: str | os.PathLike, out: str | os.PathLike, class_names=VOC_CLASS_NAMES,
                  mask_dir: str = "SegmentationClass", long_side: int | None = None, masks: bool = False,
                  progress: bool = True) -> FolderExport:
    """Write the images of ``root/JPEGImages`` that have a mask in ``root/<mask_dir>`` as a folder dataset.

    The labels are the classes of each mask (0 and 255 left out); ``long_side`` shrinks every image
    (and mask, nearest) to that many pixels on its long side first.
    """
    root, out = Path(root), Path(out)
    images = image_index(root / "JPEGImages")
    ids = sorted(i for i in images if (root / mask_dir / f"{i}.png").is_file())
    if not ids:
        raise PmmError(f"{root}: no image of JPEGImages/ has a mask in {mask_dir}/; expected a VOC-layout tree "
                       "(JPEGImages/<id>.jpg and SegmentationClass/<id>.png)")
    (out / "images").mkdir(parents=True, exist_ok=True)
    labels, small = {}, {}
    for image_id in tqdm(ids, desc="folder dataset", disable=not progress, leave=False):
        name = images[image_id][0]
        mask = load_mask(root / mask_dir / f"{image_id}.png")
        with Image.open(root / "JPEGImages" / name) as image:
            image = image.convert("RGB")
            if long_side:
                scale = long_side / max(image.size)
                size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
                image = image.resize(size, Image.BILINEAR)
                mask = np.asarray(Image.fromarray(mask).resize(size, Image.NEAREST))
            with atomic_path(out / "images" / name) as tmp:
                image.save(tmp, format="JPEG" if name.lower().endswith((".jpg", ".jpeg")) else None, quality=92)
        present = [int(v) for v in np.unique(mask) if 0 < v < 255]
        unknown = [v for v in present if v >= len(class_names)]
        if unknown:
            raise PmmError(f"{root / mask_dir / f'{image_id}.png'}: class id {unknown[0]} is beyond the "
                           f"{len(class_names)} class names; give the tree's names (--class-names)")
        labels[image_id] = [class_names[v] for v in present]
        small[image_id] = mask
    names = ("background", *sorted({n for found in labels.values() for n in found}))
    with atomic_path(out / "labels.csv") as tmp:
        tmp.write_text("image_id,labels\n" + "".join(f"{i},{' '.join(found)}\n" for i, found in labels.items()))
    if masks:
        renumber = np.full(256, 255, np.uint8)
        for name in names:
            renumber[list(class_names).index(name)] = names.index(name)
        (out / "masks").mkdir(exist_ok=True)
        for image_id, mask in small.items():
            save_mask(out / "masks" / f"{image_id}.png", renumber[mask])
    return FolderExport(out, len(ids), names, masks)
