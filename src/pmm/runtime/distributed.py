"""Rank, world size and the "shard the ids, write, barrier, score on rank 0" routine of every stage.

Rank and world size come from torch.distributed once a process group is up, and before that from
Lightning's own view of the launch (``rank_zero_only.rank``, set from the launcher's environment,
and ``WORLD_SIZE``, which Lightning's launcher and torchrun both set): the two agree under
torchrun, Lightning's DDP launcher and a single process.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import TypeVar

log = logging.getLogger("pmm")
T = TypeVar("T")


def _dist():
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def rank() -> int:
    """This process's global rank (0 in a single process)."""
    dist = _dist()
    if dist is not None:
        return dist.get_rank()
    from pytorch_lightning.utilities.rank_zero import rank_zero_only

    return int(getattr(rank_zero_only, "rank", 0) or 0)


def world_size() -> int:
    """Number of processes of the run (1 in a single process)."""
    dist = _dist()
    if dist is not None:
        return dist.get_world_size()
    return max(1, int(os.environ.get("WORLD_SIZE", "1")))


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    """Join the ranks when a process group is up; a no-op in a single process."""
    dist = _dist()
    if dist is not None:
        dist.barrier()


def shard(items: Sequence[T]) -> list[T]:
    """This rank's share of ``items`` (every ``world_size``-th item from ``rank``)."""
    return list(items[rank() :: world_size()])


def run_sharded(ids: Sequence[str], write: Callable[[list[str]], None], score: Callable[[], T] | None = None) -> T | None:
    """Each rank writes its shard of ``ids``; after a barrier rank 0 scores; the others wait for it.

    The second barrier keeps the other ranks from reading files (metrics.json) rank 0 is still writing.

    Returns:
        ``score()`` on rank 0, ``None`` on the other ranks (and when ``score`` is None).
    """
    write(shard(ids))
    barrier()
    result = score() if (score is not None and is_main()) else None
    barrier()
    return result
