"""Reference augmentation pipelines (CAM: SEAM's; segmentation: mmseg's) and deterministic loaders."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pmm.data.datasets import SegmentationDataset
from pmm.data.transforms import seed_transform
from pmm.runtime.loaders import derive_seed, seeded_loader
from pmm.data.transforms import (
    CatMaxRandomCrop,
    PhotoMetricDistortion,
    ShortSideRescale,
    cam_train_transform,
    eval_transform,
    rescale_short_side,
    rescaled_size,
    seg_train_transform,
    train_transform,
)


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# ----------------------------------------------------------------------------- sizes

@pytest.mark.parametrize(
    ("hw", "short", "long", "ratio", "expected"),
    [
        ((375, 500), 512, 2048, 1.0, (512, 683)),  # VOC landscape: short side to 512
        ((500, 375), 512, 2048, 1.0, (683, 512)),
        ((100, 5000), 512, 2048, 1.0, (41, 2048)),  # long side bound wins
        ((375, 500), 512, 2048, 0.5, (256, 341)),  # ratio applied to the targets (mmseg's Resize)
        ((375, 500), 512, 2048, 1.75, (896, 1195)),
        ((375, 500), 512, None, 1.0, (512, 683)),
        ((375, 500), None, None, 1.0, (375, 500)),  # None keeps the size
        ((375, 500), None, None, 2.0, (750, 1000)),
    ],
)
def test_rescaled_size_follows_mmcv_imrescale(hw, short, long, ratio, expected):
    assert rescaled_size(*hw, short, long, ratio) == expected
    image = _image(*hw)
    out = rescale_short_side(image, short, long, ratio=ratio)
    assert out.shape == (*expected, 3) and out.dtype == np.uint8
    if expected == hw:
        assert out is image


def test_short_side_rescale_draws_ratio_and_resizes_mask_nearest():
    image, mask = _image(60, 90), np.random.default_rng(1).integers(0, 3, (60, 90)).astype(np.uint8)
    t = seed_transform(ShortSideRescale(short_side=40, max_long=1000, ratio_range=(0.5, 2.0)), 0)
    seen = set()
    for _ in range(30):
        params = t.get_params_dependent_on_data({"shape": image.shape}, {"image": image})
        assert 0.5 <= params["ratio"] <= 2.0
        assert params["size"] == rescaled_size(60, 90, 40, 1000, params["ratio"])
        seen.add(params["size"])
        out_img, out_mask = t.apply(image, **params), t.apply_to_mask(mask, **params)
        assert out_img.shape[:2] == out_mask.shape == params["size"]
        assert set(np.unique(out_mask)) <= {0, 1, 2}
    assert len(seen) > 10


@pytest.mark.parametrize("hw", [(40, 50), (300, 200), (700, 900)])
def test_seg_pipeline_output_sizes_and_types(hw):
    mask = np.zeros(hw, np.uint8)
    mask[:, hw[1] // 2:] = 1
    t = seg_train_transform(crop=96, short_side=64, max_long=256, seed=0)
    for _ in range(5):
        out = t(image=_image(*hw), mask=mask)
        assert out["image"].shape == (3, 96, 96) and out["image"].dtype == torch.float32
        assert 0.0 <= out["image"].min() and out["image"].max() <= 1.0
        assert out["mask"].shape == (96, 96)
        assert set(out["mask"].unique().tolist()) <= {0, 1, 255}


def test_seg_pipeline_pads_bottom_right_with_ignore_and_black():
    image = np.full((50, 70, 3), 200, np.uint8)
    mask = np.ones((50, 70), np.uint8)
    mask[:, :35] = 2
    t = seg_train_transform(crop=64, short_side=None, ratio_range=None, photometric=False, seed=0)
    for _ in range(4):
        out = t(image=image, mask=mask)
        img, m = out["image"], out["mask"]
        assert img.shape == (3, 64, 64) and m.shape == (64, 64)
        assert (m[50:] == 255).all() and (img[:, 50:] == 0).all()  # rows padded at the bottom
        assert (m[:50] != 255).all() and torch.allclose(img[:, :50], torch.tensor(200 / 255))
        assert set(m[:50].unique().tolist()) == {1, 2}
    fill = seg_train_transform(crop=64, short_side=None, ratio_range=None, photometric=False,
                               image_fill=(124, 116, 104), seed=0)(image=image, mask=mask)["image"]
    assert torch.allclose(fill[:, 60, 0], torch.tensor([124, 116, 104]) / 255.0)


def test_seg_pipeline_without_mask_and_eval_transform():
    out = seg_train_transform(crop=32, short_side=40, seed=0)(image=_image(30, 45))
    assert out["image"].shape == (3, 32, 32)
    image = _image(17, 23)
    ev = eval_transform(seed=0)(image=image)["image"]
    assert ev.shape == (3, 17, 23) and torch.allclose(ev, torch.from_numpy(image).permute(2, 0, 1) / 255.0)
    assert train_transform(24, seed=0)(image=image)["image"].shape == (3, 24, 24)


# ----------------------------------------------------------------------------- cat-max crop

def _fraction_ok(window: np.ndarray, ratio: float = 0.75, ignore: int = 255) -> bool:
    labels, counts = np.unique(window, return_counts=True)
    counts = counts[labels != ignore]
    return len(counts) > 1 and counts.max() / counts.sum() < ratio


def test_cat_max_crop_redraws_crops_dominated_by_one_class():
    # 100 x 200, class 1 in the left half, class 2 in the right: a 100 x 100 crop at offset L
    # holds (100 - L) % of class 1, so only 25 < L < 75 passes the 75 % rule.
    mask = np.ones((100, 200), np.uint8)
    mask[:, 100:] = 2
    image = _image(100, 200)
    crop = seed_transform(CatMaxRandomCrop(100, 100, cat_max_ratio=0.75), 0)
    plain = seed_transform(CatMaxRandomCrop(100, 100, cat_max_ratio=1.0), 0)
    lefts, redraws, plain_lefts = [], [], []
    for _ in range(300):
        params = crop.get_params_dependent_on_data({"shape": image.shape}, {"image": image, "mask": mask})
        y1, y2, x1, x2 = params["box"]
        assert (y2 - y1, x2 - x1) == (100, 100)
        if params["redraws"] < 10:
            assert 25 < x1 < 75 and _fraction_ok(mask[y1:y2, x1:x2])
        lefts.append(x1)
        redraws.append(params["redraws"])
        plain_lefts.append(plain.get_params_dependent_on_data({"shape": image.shape}, {"mask": mask})["box"][2])
    assert max(redraws) >= 1  # a dominated first draw was redrawn
    assert np.mean([25 < x < 75 for x in lefts]) > 0.98
    assert np.mean([25 < x < 75 for x in plain_lefts]) < 0.7  # without the rule: uniform offsets


def test_cat_max_crop_ignores_255_and_keeps_last_draw_when_unavoidable():
    # Columns 0-59 ignored, 60-99 class 1, 100-199 class 3. A crop at offset L <= 60 holds 40
    # columns of class 1 and L of class 3: L = 10 is 80 % class 1 once 255 is left out (rejected),
    # but would pass (50 % ignore, 40 % class 1) if 255 counted as a class.
    mask = np.full((100, 200), 3, np.uint8)
    mask[:, :60] = 255
    mask[:, 60:100] = 1
    crop = seed_transform(CatMaxRandomCrop(100, 100, cat_max_ratio=0.75, ignore_index=255), 1)
    lefts = []
    for _ in range(200):
        params = crop.get_params_dependent_on_data({"shape": (100, 200, 3)}, {"mask": mask})
        y1, y2, x1, x2 = params["box"]
        if params["redraws"] < 10:
            assert _fraction_ok(mask[y1:y2, x1:x2])
            lefts.append(x1)
    assert min(lefts) > 13  # 40 / (40 + L) < 0.75 needs L >= 14
    # One class everywhere: every draw fails, 10 re-draws, the last kept (a valid in-bounds crop).
    single = np.zeros((100, 200), np.uint8)
    params = crop.get_params_dependent_on_data({"shape": (100, 200, 3)}, {"mask": single})
    assert params["redraws"] == 10 and 0 <= params["box"][2] <= 100 and params["box"][3] - params["box"][2] == 100


def test_cat_max_rule_inside_the_seg_pipeline():
    mask = np.ones((100, 200), np.uint8)
    mask[:, 100:] = 2
    t = seg_train_transform(crop=100, short_side=None, ratio_range=None, photometric=False, seed=3)
    ok = [_fraction_ok(t(image=_image(100, 200), mask=mask)["mask"].numpy()) for _ in range(100)]
    assert np.mean(ok) > 0.98


def test_photometric_distortion_steps():
    image = _image(20, 30)
    t = PhotoMetricDistortion()
    assert np.array_equal(t.apply(image), image)  # no step drawn: unchanged
    bright = t.apply(image, beta=40.0)
    assert np.array_equal(bright, np.clip(image.astype(np.float32) + 40, 0, 255).astype(np.uint8))
    contrast = t.apply(image, alpha_contrast=0.5, contrast_first=False)
    assert np.array_equal(contrast, (image.astype(np.float32) * 0.5).astype(np.uint8))
    gray = np.full((4, 4, 3), 128, np.uint8)
    assert np.array_equal(t.apply(gray, hue_shift=10, alpha_saturation=1.5), gray)  # no chroma: unchanged
    seed_transform(t, 0)
    draws = [t.get_params() for _ in range(400)]
    for key in ("beta", "alpha_contrast", "alpha_saturation", "hue_shift"):
        applied = np.mean([d[key] is not None for d in draws])
        assert 0.4 < applied < 0.6, key
    assert all(-32 <= d["beta"] <= 32 for d in draws if d["beta"] is not None)
    assert all(0.5 <= d["alpha_contrast"] <= 1.5 for d in draws if d["alpha_contrast"] is not None)
    assert all(-18 <= d["hue_shift"] <= 18 for d in draws if d["hue_shift"] is not None)
    assert 0.4 < np.mean([d["contrast_first"] for d in draws]) < 0.6


# ----------------------------------------------------------------------------- CAM pipeline

@pytest.mark.parametrize("hw", [(80, 100), (375, 500), (1000, 600)])
def test_cam_pipeline_sizes_and_long_side_range(hw):
    out = cam_train_transform(seed=0)(image=_image(*hw))
    assert out["image"].shape == (3, 448, 448)
    # With a crop larger than any resize, the non-padded region is the resized image.
    t = cam_train_transform(crop=800, jitter=None, seed=1)
    longs = []
    for _ in range(6):
        m = t(image=_image(*hw), mask=np.zeros(hw, np.uint8))["mask"].numpy()
        rows, cols = np.nonzero(m != 255)
        h, w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert len(rows) == h * w  # one rectangle, placed anywhere in the padded crop
        assert 448 <= max(h, w) <= 768
        assert abs(h / w - hw[0] / hw[1]) < 0.02
        longs.append(max(h, w))
    assert len(set(longs)) > 1


# ----------------------------------------------------------------------------- seeded loaders

class _FakeSplit:
    """The part of VOCSplit SegmentationDataset uses."""

    def __init__(self, n: int, same_image: bool = False) -> None:
        self.ids = [f"img{i}" for i in range(n)]
        self.same_image = same_image

    def __len__(self) -> int:
        return len(self.ids)

    def load_image(self, image_id: str) -> np.ndarray:
        return _image(48, 64, 0 if self.same_image else int(image_id[3:]))

    def load_mask(self, image_id: str) -> np.ndarray:
        mask = np.zeros((48, 64), np.uint8)
        mask[:, 20 + (0 if self.same_image else int(image_id[3:]) % 20):] = 1
        return mask


def _batches(seed: int | None, workers: int, epochs: int = 2, same_image: bool = False, shuffle: bool = True):
    transform = seg_train_transform(crop=32, short_side=40, max_long=200, ratio_range=(0.5, 1.5))
    dataset = SegmentationDataset(_FakeSplit(12, same_image), transform)
    loader = seeded_loader(dataset, batch_size=3, num_workers=workers, shuffle=shuffle, seed=seed)
    out = [[(b["image"].clone(), b["mask"].clone(), b["index"].clone()) for b in loader] for _ in range(epochs)]
    del loader
    return out


def _equal(a, b) -> bool:
    return all(torch.equal(x, y) for ea, eb in zip(a, b, strict=True) for ba, bb in zip(ea, eb, strict=True)
               for x, y in zip(ba, bb, strict=True))


@pytest.mark.parametrize("workers", [0, 2])
def test_same_seed_same_batches_other_seed_other_batches(workers):
    first, second, other = _batches(7, workers), _batches(7, workers), _batches(8, workers)
    assert _equal(first, second)  # bit for bit, both epochs
    assert not _equal(first, other)
    epoch0, epoch1 = first
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(epoch0, epoch1))  # epochs differ


def test_workers_do_not_repeat_each_other():
    # Every item is the same image and mask: worker 0's and worker 1's first batches must still
    # differ (a seeded Compose copied into forked workers would repeat itself in each).
    (epoch,) = _batches(3, 2, epochs=1, same_image=True, shuffle=False)
    assert not torch.equal(epoch[0][0], epoch[1][0])


def test_seed_defaults_to_lightnings(monkeypatch):
    monkeypatch.setenv("PL_GLOBAL_SEED", "11")
    assert _equal(_batches(None, 0), _batches(11, 0))
    assert derive_seed(11, 1) != derive_seed(11, 2)
