"""Global batch sizes: each process's share derived from the world size at start-up."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from pmm.errors import PmmError
from pmm.runtime.batch import describe, per_process_batch, resolve_batches


def config(cam=None, seg=None, multi_crop=None, accumulate=1):
    return OmegaConf.create({
        "trainer": {"accumulate_grad_batches": accumulate},
        "cam": {"batch_size": 4, "global_batch_size": cam,
                "multi_crop": {"batch_size": None, "global_batch_size": multi_crop}},
        "seg": {"batch_size": 4, "global_batch_size": seg},
    })


def test_the_reference_batches_on_eight_one_and_four_gpus():
    for world, cam, seg in ((8, 3, 2), (1, 24, 16), (4, 6, 4)):
        cfg = config(cam=24, seg=16, multi_crop=16)
        batches = resolve_batches(cfg, world)
        assert (cfg.cam.batch_size, cfg.seg.batch_size, cfg.cam.multi_crop.batch_size) == (cam, seg, 16 // world)
        assert batches["cam"] == {"global_batch_size": 24, "world_size": world, "accumulate_grad_batches": 1,
                                  "per_process_batch_size": cam}
        assert batches["seg"]["global_batch_size"] == 16


def test_without_a_global_batch_the_batch_is_per_process():
    cfg = config()
    batches = resolve_batches(cfg, 2)
    assert cfg.cam.batch_size == 4 and cfg.cam.multi_crop.batch_size is None  # the round takes cam's
    assert batches["cam"]["global_batch_size"] == 8 and batches["cam.multi_crop"]["per_process_batch_size"] == 4
    assert describe(batches).startswith("global batch: cam 8 = 4 x 2 processes")


def test_accumulation_counts_towards_the_global_batch():
    cfg = config(seg=16, accumulate=2)
    resolve_batches(cfg, 4)
    assert cfg.seg.batch_size == 2


def test_a_global_batch_the_processes_do_not_divide_is_one_line_naming_both():
    with pytest.raises(PmmError) as error:
        resolve_batches(config(seg=16), 3)
    message = str(error.value)
    assert message.startswith("seg.global_batch_size=16 is not divisible by the 3 processes")
    assert "trainer.accumulate_grad_batches" in message and "\n" not in message
    assert per_process_batch(32, 8, 1, "seg") == 4
