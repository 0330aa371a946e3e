"""Shared fixtures: the real VOC samples and a writable copy to break; the ``pydensecrf`` marker."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

VOC_SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "data" / "voc_samples"


def pytest_runtest_setup(item: pytest.Item) -> None:
    """``@pytest.mark.pydensecrf``: the test compares against the exact reference CRF (the optional
    extra ``pmm[pydensecrf]``). Without it the test is skipped, saying so; under CI (``CI`` set,
    where ``.[dev]`` installs the extra) it fails instead, so the reference checks cannot vanish."""
    if item.get_closest_marker("pydensecrf") is None:
        return
    from pmm.crf.pydensecrf_backend import unavailable_reason

    reason = unavailable_reason()
    if reason is None:
        return
    message = f"needs crf backend=pydensecrf: {reason}; pip install \"pmm[pydensecrf]\" (included in .[dev])"
    if os.environ.get("CI"):
        pytest.fail(f"{message}; CI must run the reference checks", pytrace=False)
    pytest.skip(message)


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


def make_voc_aug_tree(voc_samples: Path, root: Path, long_side: int = 160) -> Path:
    """A VOC2012-like tree as pmm.prepare writes it: SegmentationClassAug, train_aug/train/val lists, XML labels.

    The 14 shared photographs, shrunk to ``long_side`` px (160) on the long side to keep the smoke runs fast:
    train_aug = the first 10, train = the first 6 of them, val = the last 4.
    """
    import numpy as np
    from PIL import Image

    from pmm.data.voc import VOC_CLASS_NAMES
    from pmm.io import load_mask, save_mask

    ids = sorted(p.stem for p in (voc_samples / "JPEGImages").glob("*.jpg"))
    for folder in ("JPEGImages", "SegmentationClassAug", "SegmentationClass", "Annotations", "ImageSets/Segmentation"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for image_id in ids:
        with Image.open(voc_samples / "JPEGImages" / f"{image_id}.jpg") as image:
            width, height = image.size
            scale = long_side / max(width, height)
            size = (round(width * scale), round(height * scale))
            image.convert("RGB").resize(size, Image.BILINEAR).save(root / "JPEGImages" / f"{image_id}.jpg", quality=95)
        mask = load_mask(voc_samples / "SegmentationClass" / f"{image_id}.png")
        small = np.asarray(Image.fromarray(mask).resize(size, Image.NEAREST))
        save_mask(root / "SegmentationClassAug" / f"{image_id}.png", small)
        save_mask(root / "SegmentationClass" / f"{image_id}.png", small)
        objects = "".join(f"<object><name>{VOC_CLASS_NAMES[v]}</name><difficult>0</difficult></object>"
                          for v in np.unique(small) if 0 < v < 21)
        (root / "Annotations" / f"{image_id}.xml").write_text(
            f"<annotation><filename>{image_id}.jpg</filename>{objects}</annotation>")
    lists = root / "ImageSets/Segmentation"
    (lists / "train_aug.txt").write_text("\n".join(ids[:10]) + "\n")
    (lists / "train.txt").write_text("\n".join(ids[:6]) + "\n")
    (lists / "val.txt").write_text("\n".join(ids[10:]) + "\n")
    return root


@pytest.fixture(scope="session")
def voc_aug_tree(tmp_path_factory, voc_samples: Path) -> Path:
    return make_voc_aug_tree(voc_samples, tmp_path_factory.mktemp("voc_aug") / "VOC2012")


def load_script(relative: str, name: str):
    """Import a repository script (benchmarks/*.py) as a module, registered so its dataclasses resolve."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / relative)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
