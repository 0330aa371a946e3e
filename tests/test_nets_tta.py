"""The test-time-augmentation module: sliding windows, multi-crop and flips reassemble known maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pmm.nets.tta import TTAConfig, group_by_size, rescaled_size, sliding_windows, tile_grid, tta_maps, tta_over_images


def identity_maps(x: torch.Tensor) -> torch.Tensor:
    """A 'network' whose output is its input: every TTA path must give the image back."""
    return x.clone()


def position_maps(x: torch.Tensor) -> torch.Tensor:
    """A map that depends on where the network sees a pixel within its window: stitching must average it."""
    height, width = x.shape[-2:]
    rows = torch.arange(height, dtype=x.dtype).view(1, 1, height, 1).expand(x.shape[0], 1, height, width)
    return rows / 100.0


def test_sliding_windows_cover_the_image_and_end_flush():
    windows = sliding_windows(100, 70, window=40, stride=30)
    tops = sorted({w[0] for w in windows})
    lefts = sorted({w[1] for w in windows})
    assert tops == [0, 30, 60] and lefts == [0, 30]
    covered = np.zeros((100, 70), int)
    for top, left, h, w in windows:
        assert top + h <= 100 and left + w <= 70
        covered[top : top + h, left : left + w] += 1
    assert covered.min() >= 1
    assert sliding_windows(20, 30, 40, 30) == [(0, 0, 20, 30)]  # smaller than a window: one whole view


@pytest.mark.parametrize("mode", ["whole", "slide"])
@pytest.mark.parametrize("flip", [False, True])
def test_identity_network_gives_the_image_back(mode, flip):
    torch.manual_seed(0)
    images = torch.rand(2, 3, 50, 70)
    cfg = TTAConfig(scales=(1.0,), flip=flip, mode=mode, window=32, stride=20)
    out = tta_maps(identity_maps, images, cfg, activation="none", reduce="mean")
    torch.testing.assert_close(out, images)


def test_sliding_window_averages_overlaps_by_hand():
    image = torch.zeros(1, 1, 5, 1)
    cfg = TTAConfig(mode="slide", window=3, stride=2)
    # Windows at rows 0-2 and 2-4: row r sees r (first window) and r - 2 (second); row 2 is seen twice.
    out = tta_maps(position_maps, image, cfg, activation="none")
    expected = torch.tensor([0.0, 0.01, (0.02 + 0.0) / 2, 0.01, 0.02]).view(1, 1, 5, 1)
    torch.testing.assert_close(out, expected)


def test_tile_grid_of_an_image_smaller_than_a_crop_is_the_whole_image():
    assert tile_grid(300, 200, [1.0]) == [[(0, 0, 300, 200)]]
    assert tile_grid(448, 448, [1.0]) == [[(0, 0, 448, 448)]]


def test_tile_grid_inner_tiles_are_a_stride_wide_and_the_last_is_flush():
    # 700 px: 1 + ceil(252 / 300) = 2 columns, [0, 300) and the last 448 flush with the edge.
    assert tile_grid(700, 448, [1.0]) == [[(0, 0, 300, 448), (252, 0, 700, 448)]]


def test_tile_grid_maps_scaled_tiles_back_columns_outer_rows_inner():
    # Scale 2 of 350 x 250 is 700 x 500: columns [0, 300), [252, 700); rows [0, 300), [52, 500).
    assert tile_grid(350, 250, [2.0]) == [[(0, 0, 150, 150), (0, 26, 150, 250), (126, 0, 350, 150), (126, 26, 350, 250)]]
    # int(333 * 0.75) = 249 px, mapped back with truncation: 249 / 0.75 = 332.
    assert tile_grid(333, 100, [0.75, 1.0]) == [[(0, 0, 332, 100)], [(0, 0, 333, 100)]]


def test_multi_crop_stretches_every_tile_to_the_crop_without_padding():
    seen = []

    def record(x):
        seen.append(tuple(x.shape))
        return x.clone()

    images = torch.full((1, 3, 20, 30), 0.25)
    out = tta_maps(record, images, TTAConfig(mode="multi_crop", scales=(1.0,), window=32, stride=24), activation="none")
    assert seen == [(1, 3, 32, 32)]  # stretched, not padded: a padded crop would hold zeros
    torch.testing.assert_close(out, images)


def test_multi_crop_averages_over_every_covering_tile_and_flip():
    # The network answers with the tile's own index (constant map): pixel values are the mean of
    # the indices of the tiles that cover them (flip on: each tile twice).
    calls = []

    def index_maps(x):
        maps = []
        for _ in range(x.shape[0]):
            maps.append(torch.full((1, 1, 8, 8), float(len(calls))))
            calls.append(1)
        return torch.cat(maps)

    images = torch.zeros(1, 3, 10, 40)
    cfg = TTAConfig(mode="multi_crop", scales=(1.0,), flip=True, window=24, stride=16)
    out = tta_maps(index_maps, images, cfg, activation="none")
    # Columns of 40 px: [0, 16) and the last [16, 40); tile 0 -> runs 0, 1; tile 1 -> runs 2, 3.
    assert len(calls) == 4
    torch.testing.assert_close(out[0, 0, :, :16], torch.full((10, 16), 0.5))
    torch.testing.assert_close(out[0, 0, :, 16:], torch.full((10, 24), 2.5))


def test_flip_of_a_mirrored_image_is_the_mirrored_map():
    torch.manual_seed(1)
    conv = torch.nn.Conv2d(3, 4, 3, padding=1)
    images = torch.rand(2, 3, 24, 36)
    cfg = TTAConfig(scales=(0.5, 1.0), flip=True)
    with torch.no_grad():
        out = tta_maps(conv, images, cfg, activation="relu", reduce="sum")
        mirrored = tta_maps(conv, images.flip(-1), cfg, activation="relu", reduce="sum")
    assert out.shape == (2, 4, 24, 36) and torch.all(out >= 0)
    torch.testing.assert_close(mirrored, out.flip(-1), atol=1e-5, rtol=1e-5)


def test_softmax_reduce_mean_gives_probabilities():
    conv = torch.nn.Conv2d(3, 5, 1)
    with torch.no_grad():
        probs = tta_maps(conv, torch.rand(1, 3, 16, 16), TTAConfig(scales=(0.75, 1.0), flip=True))
    torch.testing.assert_close(probs.sum(1), torch.ones(1, 16, 16))


def test_short_side_rescale_and_size_multiple():
    assert rescaled_size(375, 500, 512, 2048) == (512, 683)
    assert rescaled_size(100, 3000, 512, 2048) == (68, 2048)
    assert rescaled_size(10, 20, None, None) == (10, 20)
    seen = []

    def record(x):
        seen.append(tuple(x.shape[-2:]))
        return x[:, :1]

    out = tta_maps(record, torch.rand(1, 3, 30, 40), TTAConfig(short_side=60, size_multiple=32), activation="none")
    assert seen == [(64, 96)] and out.shape == (1, 1, 30, 40)


def test_images_of_mixed_sizes_are_grouped_and_returned_in_order():
    assert group_by_size([(2, 2), (3, 3), (2, 2), (2, 2)], batch_size=2) == [[0, 2], [3], [1]]
    images = [np.full((h, w, 3), v, np.uint8) for h, w, v in [(8, 8, 10), (6, 9, 20), (8, 8, 30)]]
    maps = tta_over_images(identity_maps, images, TTAConfig(), activation="none")
    assert [tuple(m.shape) for m in maps] == [(3, 8, 8), (3, 6, 9), (3, 8, 8)]
    assert [round(float(m.mean()) * 255) for m in maps] == [10, 20, 30]


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError, match="inference mode"):
        TTAConfig(mode="tiles")
    with pytest.raises(ValueError, match="positive"):
        TTAConfig(scales=(0.0,))
