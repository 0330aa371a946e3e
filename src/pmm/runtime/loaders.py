"""DataLoaders as every stage builds them: seeded shuffling, albumentations seeded per worker.

albumentations 2.x draws from its *own* generators (``Compose(seed=...)``, ``set_random_seed``),
not from numpy's or Python's global state, so ``pl.seed_everything`` alone leaves the
augmentation unseeded (a Compose built with ``seed=None`` takes fresh OS entropy), and a seeded
Compose copied into forked workers would make every worker draw the same numbers. Here:

- :func:`pmm.data.transforms.seed_transform` seeds a Compose so that it and all its steps share *one* generator pair
  (albumentations' own ``set_random_seed`` gives every step its own generator with the same seed,
  so e.g. a flip and a crop would draw the same first numbers);
- :func:`worker_init_fn` runs Lightning's ``pl_worker_init_function`` (numpy / torch / random
  per worker) and re-seeds the worker's copy of the dataset's transform(s) from the worker's
  torch seed (itself ``base_seed + worker_id``, ``base_seed`` drawn from the loader's generator
  each time workers start) and the process rank;
- :func:`seeded_loader` builds a DataLoader with a seeded ``torch.Generator`` (shuffle order and
  worker base seeds) and that ``worker_init_fn``; with ``num_workers=0`` it seeds the transform
  in the main process from the seed (and rank).

Two runs with the same seed, ``num_workers`` and call sequence then see identical batches.
Different ``num_workers`` give different (equally valid) augmentation streams.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from pmm.data.transforms import seed_transform
from pmm.runtime.distributed import rank

__all__ = ["derive_seed", "global_seed", "iter_transforms", "loader", "seed_dataset", "seeded_loader",
           "worker_init_fn"]

_SALT = 0x504D4D  # "PMM": keeps the transform's stream apart from Lightning's numpy/torch/random seeds


def derive_seed(*keys: int) -> int:
    """A 32-bit seed mixed from integer keys (``np.random.SeedSequence``): e.g. (seed, epoch)."""
    return int(np.random.SeedSequence([int(k) % (1 << 64) for k in keys] + [_SALT]).generate_state(1)[0])


def global_seed() -> int | None:
    """The seed ``pl.seed_everything`` recorded (``PL_GLOBAL_SEED``), None when it was not called."""
    value = os.environ.get("PL_GLOBAL_SEED")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def iter_transforms(dataset: Any, _seen: set[int] | None = None) -> Iterator[Any]:
    """The albumentations transforms a dataset holds: its ``transform`` attribute, also through
    ``Subset`` (``.dataset``) and ``ConcatDataset`` (``.datasets``) wrappers."""
    seen = _seen if _seen is not None else set()
    if dataset is None or id(dataset) in seen:
        return
    seen.add(id(dataset))
    transform = getattr(dataset, "transform", None)
    if transform is not None and hasattr(transform, "set_random_seed"):
        yield transform
    inner = getattr(dataset, "dataset", None)
    if inner is not None:
        yield from iter_transforms(inner, seen)
    for inner in getattr(dataset, "datasets", None) or ():
        yield from iter_transforms(inner, seen)


def seed_dataset(dataset: Any, seed: int) -> None:
    """Seed every transform of ``dataset`` (:func:`iter_transforms`) with streams derived from ``seed``."""
    for i, transform in enumerate(iter_transforms(dataset)):
        seed_transform(transform, derive_seed(seed, i))


def worker_init_fn(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: Lightning's per-worker seeding, then the dataset's transforms.

    The transform seed mixes the worker's torch seed (``base_seed + worker_id``, so it changes
    whenever workers restart with a new base seed, e.g. every epoch without persistent workers)
    with the global rank, so DDP processes augment differently.
    """
    from lightning_fabric.utilities.seed import pl_worker_init_function

    pl_worker_init_function(worker_id)
    info = torch.utils.data.get_worker_info()
    if info is None:
        return
    seed_dataset(info.dataset, derive_seed(info.seed, rank()))


def seeded_loader(dataset: Dataset, batch_size: int, num_workers: int, shuffle: bool = False,
                  drop_last: bool = False, collate_fn: Callable | None = None, seed: int | None = None,
                  persistent_workers: bool | None = None, **kwargs: Any) -> DataLoader:
    """A DataLoader whose shuffling and augmentation are reproducible from ``seed``.

    ``seed=None`` takes Lightning's seed (``PL_GLOBAL_SEED``, set by ``pl.seed_everything``); if
    there is none either, the loader is unseeded (as :func:`loader`) apart from
    per-worker re-seeding, which keeps workers from repeating each other.
    ``persistent_workers=None`` means "when there are workers". A loader that is *rebuilt* every
    epoch must be given a seed that changes with the epoch (e.g. ``derive_seed(seed, epoch)``),
    or every epoch repeats the first one's order and augmentations.
    Extra keyword arguments go to ``DataLoader`` (e.g. ``pin_memory``).
    """
    if seed is None:
        seed = global_seed()
    if persistent_workers is None:
        persistent_workers = num_workers > 0
    generator = None
    if seed is not None:
        generator = torch.Generator()
        generator.manual_seed(derive_seed(seed, 1))
        if num_workers == 0:
            # No worker to re-seed: the main process's transform continues one seeded stream.
            seed_dataset(dataset, derive_seed(seed, rank(), 2))
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        num_workers=num_workers,
        persistent_workers=bool(persistent_workers) and num_workers > 0,
        collate_fn=collate_fn,
        generator=generator,
        worker_init_fn=worker_init_fn if num_workers > 0 else None,
        **kwargs,
    )


def loader(dataset, batch_size: int, num_workers: int, shuffle: bool = False, drop_last: bool = False, collate_fn=None,
           persistent_workers: bool | None = None, seed: int | None = None) -> DataLoader:
    """A seeded DataLoader as every stage builds one (``seed=None``: Lightning's seed); workers persist across epochs unless told not to."""
    return seeded_loader(dataset, batch_size, num_workers, shuffle=shuffle, drop_last=drop_last, collate_fn=collate_fn,
                         seed=seed, persistent_workers=persistent_workers)
