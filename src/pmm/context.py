"""What every stage of one run shares: config, run directory, dataset splits, metrics.json."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from pmm.data.voc import VOCSplit, load_voc_split
from pmm.errors import PmmError
from pmm.io import update_json

log = logging.getLogger("pmm")


def global_rank() -> int:
    """This process's rank, also before Lightning has set up distributed (0 when not distributed)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    for key in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if key in os.environ:
            return int(os.environ[key])
    return 0


def world_size() -> int:
    """Number of processes of the run (1 when not distributed)."""
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def barrier() -> None:
    """Join the ranks when torch.distributed is up (DDP); a no-op in a single process."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


@dataclass
class RunContext:
    """The run directory and the dataset of one ``python -m pmm.run`` invocation."""

    cfg: DictConfig
    run_dir: Path
    _splits: dict[str, VOCSplit] = field(default_factory=dict)

    @property
    def metrics_path(self) -> Path:
        return self.run_dir / "metrics.json"

    @property
    def figures_dir(self) -> Path:
        path = self.run_dir / "figures"
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def is_main_process(self) -> bool:
        return global_rank() == 0

    @property
    def data_root(self) -> Path:
        return Path(self.cfg.data.root).expanduser().resolve()

    @property
    def class_names(self) -> tuple[str, ...]:
        names = self.cfg.data.class_names
        if names is None:
            from pmm.data.synthetic import SYNTHETIC_CLASS_NAMES

            return tuple(SYNTHETIC_CLASS_NAMES)
        return tuple(names)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def prepare_data(self) -> None:
        """Generate the embedded dataset if it is selected and missing (rank 0 first)."""
        if self.cfg.data.name == "synthetic":
            from pmm.data.synthetic import ensure_synthetic

            ensure_synthetic(self.data_root, **OmegaConf.to_container(self.cfg.data.generate))

    def split(self, name: str) -> VOCSplit:
        """The named split of the configured tree (indexed and checked once per run)."""
        if name not in self._splits:
            data = self.cfg.data
            self._splits[name] = load_voc_split(
                self.data_root,
                name,
                self.class_names,
                image_dir=data.image_dir,
                mask_dir=data.mask_dir,
                cache_dir=self.cfg.paths.cache_dir,
            )
        return self._splits[name]

    @property
    def train_split(self) -> VOCSplit:
        return self.split(self.cfg.data.train_split)

    @property
    def val_split(self) -> VOCSplit:
        return self.split(self.cfg.data.val_split)

    def crop_size(self) -> int:
        """``data.crop_size``, or min(448, median long side of the training images) rounded up to 32."""
        if self.cfg.data.crop_size is not None:
            return int(self.cfg.data.crop_size)
        long_sides = [max(size) for size in self.train_split.image_sizes.values()]
        median = int(np.median(long_sides))
        return int(min(448, -(-median // 32) * 32))

    def record(self, **metrics) -> None:
        """Merge figures into this run's metrics.json (main process only)."""
        if self.is_main_process:
            update_json(self.metrics_path, metrics)

    def read_metrics(self) -> dict:
        import json

        return json.loads(self.metrics_path.read_text()) if self.metrics_path.is_file() else {}

    def require_file(self, path: str | os.PathLike, key: str, hint: str) -> Path:
        path = Path(path).expanduser()
        if not path.is_file():
            raise PmmError(f"{key}={path}: file not found; {hint}")
        return path.resolve()
