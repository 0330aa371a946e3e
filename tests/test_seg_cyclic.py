"""The Cyclic Pseudo-mask callback on a tiny fit: new rounds are written, scored and trained on."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import pytest
import torch

from pmm.data.synthetic import SYNTHETIC_CLASS_NAMES, generate_synthetic
from pmm.data.voc import load_voc_split
from pmm.io import save_mask
from pmm.seg.cyclic import CyclicPseudoMask
from pmm.seg.datamodule import PseudoMaskDataModule
from pmm.seg.model import Segmenter
from pmm.seg.module import SegModule


@pytest.fixture(scope="module")
def tiny_tree(tmp_path_factory) -> Path:
    return generate_synthetic(tmp_path_factory.mktemp("tiny") / "data", seed=1, num_train=8, num_val=4, image_size=96)


def make_fit(tree: Path, tmp_path: Path, rounds: int, epochs: int, **callback_options):
    train = load_voc_split(tree, "train", SYNTHETIC_CLASS_NAMES, cache_dir=tmp_path)
    val = load_voc_split(tree, "val", SYNTHETIC_CLASS_NAMES, cache_dir=tmp_path)
    round_zero = tmp_path / "pseudo_masks" / "round_0"
    for image_id in train.ids:  # a deliberately poor round 0: every labelled pixel is the first label
        mask = train.load_mask(image_id)
        save_mask(round_zero / f"{image_id}.png", np.where(mask == 0, 0, train.labels(image_id)[0]).astype(np.uint8))
    datamodule = PseudoMaskDataModule(train, val, round_zero, crop_size=96, batch_size=4, num_workers=0)
    torch.manual_seed(0)
    module = SegModule(Segmenter("deeplabv3plus", "resnet18", num_classes=7), partial(torch.optim.SGD, momentum=0.9),
                       lr=0.01, loss={"mode": "clamp", "beta": 10.0, "k": 0.5})
    scored: list[tuple[int, Path]] = []
    callback = CyclicPseudoMask(train, datamodule, tmp_path / "pseudo_masks", rounds=rounds, every_n_epochs=1,
                                on_round=lambda index, folder: scored.append((index, folder)), crf=True,
                                **callback_options)
    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, reload_dataloaders_every_n_epochs=1, num_sanity_val_steps=0,
                         callbacks=[callback])
    return trainer, module, datamodule, callback, scored, train


@pytest.mark.slow
def test_rounds_are_written_scored_and_trained_on(tiny_tree, tmp_path):
    trainer, module, datamodule, callback, scored, train = make_fit(tiny_tree, tmp_path, rounds=2, epochs=3)
    seen_dirs: list[Path] = []
    original = datamodule.train_dataloader

    def recording_loader():
        seen_dirs.append(datamodule.mask_dir)
        return original()

    datamodule.train_dataloader = recording_loader
    trainer.fit(module, datamodule=datamodule)
    assert [index for index, _ in scored] == [1, 2] and callback.round == 2
    for index in (1, 2):
        folder = tmp_path / "pseudo_masks" / f"round_{index}"
        assert sorted(p.stem for p in folder.glob("*.png")) == sorted(train.ids)
        for image_id in train.ids:  # restricted to background + the image's own labels
            values = set(np.unique(np.array(__import__("PIL.Image", fromlist=["Image"]).open(folder / f"{image_id}.png"))))
            assert values <= {0, *train.labels(image_id)}
    # Epoch 0 trained on round 0, epoch 1 on round 1, epoch 2 on round 2.
    assert [d.name for d in seen_dirs] == ["round_0", "round_1", "round_2"]
    assert module.criterion.mode == "none"  # PUF in the first round only


def test_resume_state_points_the_datamodule_at_the_last_complete_round(tiny_tree, tmp_path):
    _, _, datamodule, callback, _, _ = make_fit(tiny_tree, tmp_path, rounds=3, epochs=1)
    assert callback.state_dict() == {"round": 0}
    callback.load_state_dict({"round": 2})
    assert callback.round == 2 and datamodule.mask_dir == tmp_path / "pseudo_masks" / "round_2"
