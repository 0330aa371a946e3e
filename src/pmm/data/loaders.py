"""DataLoaders as every stage builds them: reproducible from the run's seed (:mod:`pmm.data.seeding`)."""

from __future__ import annotations

from torch.utils.data import DataLoader

from pmm.data.seeding import seeded_loader


def loader(dataset, batch_size: int, num_workers: int, shuffle: bool = False, drop_last: bool = False, collate_fn=None,
           persistent_workers: bool | None = None, seed: int | None = None) -> DataLoader:
    """A seeded DataLoader (``seed=None``: Lightning's seed); workers persist across epochs unless told not to."""
    return seeded_loader(dataset, batch_size, num_workers, shuffle=shuffle, drop_last=drop_last, collate_fn=collate_fn,
                         seed=seed, persistent_workers=persistent_workers)
