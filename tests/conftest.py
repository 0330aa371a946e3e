"""Shared fixtures: the real VOC samples and a writable copy to break."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

VOC_SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "data" / "voc_samples"


@pytest.fixture(scope="session")
def voc_samples() -> Path:
    if not VOC_SAMPLES.is_dir():
        pytest.fail(f"{VOC_SAMPLES}: the shared VOC samples are missing; the checkout must sit beside shared/")
    return VOC_SAMPLES


@pytest.fixture
def voc_copy(tmp_path: Path, voc_samples: Path) -> Path:
    """A writable copy of the VOC samples, with a train list of the first 8 ids."""
    root = tmp_path / "voc"
    shutil.copytree(voc_samples, root)
    for path in root.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    ids = (root / "ImageSets/Segmentation/val.txt").read_text().split()
    (root / "ImageSets/Segmentation/train.txt").write_text("\n".join(ids[:8]) + "\n")
    return root
