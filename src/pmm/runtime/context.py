"""What every stage of one run shares: config, run directory, dataset splits, metrics.json."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from omegaconf import DictConfig, OmegaConf

from pmm.data.folder import split_label
from pmm.io import update_json
from pmm.runtime.distributed import is_main

if TYPE_CHECKING:  # used in annotations only
    from pmm.data.voc import VOCSplit

log = logging.getLogger("pmm")


def shown_ids(ids, limit: int = 5) -> str:
    """``a, b, c and 4 more``: the first ids of a list, for a log line."""
    ids = list(ids)
    more = f" and {len(ids) - limit} more" if len(ids) > limit else ""
    return ", ".join(ids[:limit]) + more


@dataclass
class RunContext:
    """The run directory and the dataset of one ``python -m pmm.run`` invocation."""

    cfg: DictConfig
    run_dir: Path
    _dataset: object | None = field(default=None, repr=False)
    _eval_split: object | None = field(default=None, repr=False)
    trainers: dict = field(default_factory=dict, repr=False)  # stage -> its latest Trainer, "latest" -> the newest

    def track_trainer(self, stage: str, trainer) -> None:
        """Remember the Trainer a stage built (where a Ctrl-C stopped: :mod:`pmm.runtime.interrupt`)."""
        self.trainers[stage] = self.trainers["latest"] = trainer

    @property
    def dataset(self):
        """The ``data`` node's dataset object (:mod:`pmm.data.sources`), built once."""
        if self._dataset is None:
            from pmm.nets.build import DEFAULT_TARGETS, build_from_spec

            spec = OmegaConf.to_container(self.cfg.data, resolve=True)
            spec.setdefault("_target_", DEFAULT_TARGETS["data"])
            spec["cache_dir"] = self.cfg.paths.cache_dir
            self._dataset = build_from_spec(spec, "data")
        return self._dataset

    # ---- the run folder: every path a stage writes or reads, in one place
    @property
    def metrics_path(self) -> Path:
        return self.run_dir / "metrics.json"

    def report_path(self, stage: str) -> Path:
        """``cam_report.json``, ``pseudo_report.json``, ``eval_report.json``."""
        return self.run_dir / f"{stage}_report.json"

    def checkpoint_dir(self, stage: str) -> Path:
        """``checkpoints/cam`` or ``checkpoints/seg`` (Lightning's ``last.ckpt`` and best checkpoints)."""
        return self.run_dir / "checkpoints" / stage

    @property
    def cams_root(self) -> Path:
        return self.run_dir / "cams"

    def cams_dir(self, split: str) -> Path:
        """``cams/<split>/<id>.npz``: the normalised CAMs of a split (a list file's: ``cams/<its stem>``)."""
        return self.cams_root / split_label(split)

    @property
    def pseudo_masks_dir(self) -> Path:
        return self.run_dir / "pseudo_masks"

    def round_dir(self, index: int) -> Path:
        """``pseudo_masks/round_<index>/<id>.png``: round 0 from the CAMs, later rounds from the segmenter."""
        return self.pseudo_masks_dir / f"round_{index}"

    def predictions_dir(self, split: str) -> Path:
        """``predictions/<split>/<id>.png``: the segmenter's label maps."""
        return self.run_dir / "predictions" / split

    @property
    def multi_crop_dir(self) -> Path:
        """``multi_crop/``: the second CAM round's first-round CAMs and rough masks."""
        return self.run_dir / "multi_crop"

    @property
    def figures_dir(self) -> Path:
        path = self.run_dir / "figures"
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def data_root(self) -> Path:
        return self.dataset.root

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.dataset.class_names)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def prepare_data(self) -> None:
        """Make the dataset ready (the embedded one is generated when missing)."""
        self.dataset.prepare()

    def split(self, name: str, require_masks: bool = True) -> VOCSplit:
        """The named split of the configured tree (indexed and checked once per run)."""
        return self.dataset.split(name, require_masks=require_masks)

    @property
    def train_split(self) -> VOCSplit:
        return self.split(self.cfg.data.train_split)

    @property
    def val_split(self) -> VOCSplit:
        return self.split(self.cfg.data.val_split)

    @property
    def eval_split(self) -> VOCSplit:
        """``data.val_split`` for evaluation: masks required when they are all there, optional otherwise.

        A split without ground-truth masks (the VOC test set) is predicted but not scored; one where
        only some ids lack a mask is scored on the others, the missing ones named in a warning.
        """
        if self._eval_split is None:
            name = self.cfg.data.val_split
            missing = self.dataset.missing_mask_ids(name)
            self._eval_split = self.dataset.prediction_split(name)
            folder = self.dataset.mask_folder
            if missing and len(missing) == len(self._eval_split):
                log.info("split '%s' has no ground-truth masks in %s: predictions are written, not scored", name, folder)
            elif missing:
                log.warning("split '%s': %d of its %d images have no ground-truth mask in %s (%s): they are predicted "
                            "but not scored, the mIoU is over the other %d", name, len(missing), len(self._eval_split),
                            folder, shown_ids(missing), len(self._eval_split) - len(missing))
        return self._eval_split

    def crop_size(self, stage: str) -> int:
        """The training crop of a stage (``cam.crop_size`` or ``seg.crop_size``), or when null
        min(448, median long side of the training images) rounded up to 32."""
        value = self.cfg[stage].get("crop_size")
        if value is not None:
            return int(value)
        long_sides = [max(size) for size in self.train_split.image_sizes.values()]
        median = int(np.median(long_sides))
        return int(min(448, -(-median // 32) * 32))

    def record(self, remove: tuple[str, ...] = (), **metrics) -> None:
        """Merge figures into this run's metrics.json and drop the keys ``remove`` (main process only)."""
        if is_main():
            update_json(self.metrics_path, metrics, remove=remove)

    def read_metrics(self) -> dict:
        import json

        return json.loads(self.metrics_path.read_text()) if self.metrics_path.is_file() else {}
