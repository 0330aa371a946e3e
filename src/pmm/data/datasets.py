"""Torch datasets over a :class:`~pmm.data.voc.VOCSplit`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from pmm.data.voc import VOCSplit
from pmm.errors import PmmError
from pmm.io import load_mask


class ClassificationDataset(Dataset):
    """Images with their multi-hot image-level labels: the only supervision of the CAM stage."""

    def __init__(self, split: VOCSplit, transform) -> None:
        self.split, self.transform = split, transform

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> dict:
        image_id = self.split.ids[index]
        image = self.transform(image=self.split.load_image(image_id))["image"]
        return {"image": image, "label": torch.from_numpy(self.split.label_vector(image_id)), "index": index}


class SegmentationDataset(Dataset):
    """Images with a mask per image: ground truth, or pseudo-masks from ``mask_dir``."""

    def __init__(self, split: VOCSplit, transform, mask_dir: str | Path | None = None) -> None:
        self.split, self.transform = split, transform
        self.mask_dir = Path(mask_dir) if mask_dir is not None else None
        if self.mask_dir is not None:
            missing = [i for i in split.ids if not (self.mask_dir / f"{i}.png").is_file()]
            if missing:
                raise PmmError(
                    f"{self.mask_dir}: {len(missing)} of {len(split)} training masks are missing (first: {missing[0]}.png); "
                    "run stage=pseudo first or point pseudo.source at a complete folder"
                )

    def __len__(self) -> int:
        return len(self.split)

    def mask(self, image_id: str) -> np.ndarray:
        if self.mask_dir is None:
            return self.split.load_mask(image_id)
        return load_mask(self.mask_dir / f"{image_id}.png")

    def __getitem__(self, index: int) -> dict:
        image_id = self.split.ids[index]
        out = self.transform(image=self.split.load_image(image_id), mask=self.mask(image_id))
        return {"image": out["image"], "mask": out["mask"].long(), "index": index}


class InferenceDataset(Dataset):
    """Whole images (uint8, own size) with their id, labels and (if any) ground truth, for inference."""

    def __init__(self, split: VOCSplit, with_mask: bool = True) -> None:
        self.split, self.with_mask = split, with_mask

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> dict:
        image_id = self.split.ids[index]
        item = {
            "id": image_id,
            "index": index,
            "image": torch.from_numpy(self.split.load_image(image_id)),
            "labels": torch.tensor(self.split.labels(image_id), dtype=torch.long),
        }
        return item


def list_collate(batch: list[dict]) -> list[dict]:
    """Keep inference samples as a list: images differ in size, the model groups equal sizes."""
    return batch


class EvalDataset(Dataset):
    """Whole uint8 images with their ground-truth masks (validation of the segmenter)."""

    def __init__(self, split: VOCSplit) -> None:
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> dict:
        image_id = self.split.ids[index]
        return {
            "image_uint8": torch.from_numpy(self.split.load_image(image_id)),
            "mask": torch.from_numpy(self.split.load_mask(image_id)).long(),
            "index": index,
        }
