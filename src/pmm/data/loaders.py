"""DataLoaders as every stage builds them."""

from __future__ import annotations

from torch.utils.data import DataLoader


def loader(dataset, batch_size: int, num_workers: int, shuffle: bool = False, drop_last: bool = False, collate_fn=None,
           persistent_workers: bool | None = None) -> DataLoader:
    """A DataLoader; workers persist across epochs unless told not to (a loader rebuilt every epoch)."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        num_workers=num_workers,
        persistent_workers=(num_workers > 0) if persistent_workers is None else (persistent_workers and num_workers > 0),
        collate_fn=collate_fn,
    )
