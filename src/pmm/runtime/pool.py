"""The process pool of the CPU-bound per-image work (pseudo-masks, rough masks): one loop, one place."""

from __future__ import annotations

import multiprocessing
import signal
from collections.abc import Callable, Sequence
from typing import Any

from tqdm import tqdm


def _ignore_ctrl_c() -> None:
    """Pool workers leave Ctrl-C to the main process, which ends the pool (no traceback per worker)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def run_pool(job: Callable[[Any], Any], tasks: Sequence[Any], workers: int, desc: str | None = None,
             show_progress: bool = True, chunksize: int = 4) -> None:
    """Run ``job(task)`` for every task, in this process (one worker or fewer than two tasks) or a fork pool.

    ``job`` must pickle (a module-level function or a ``functools.partial`` of one) and write its own
    output; results are not collected. fork: the children only run numpy and the CRF, and skip
    re-importing torch and Lightning.
    """
    workers = max(1, int(workers))
    with tqdm(total=len(tasks), desc=desc, disable=not show_progress or desc is None, leave=False) as progress:
        if workers == 1 or len(tasks) < 2:
            for task in tasks:
                job(task)
                progress.update()
            return
        with multiprocessing.get_context("fork").Pool(workers, initializer=_ignore_ctrl_c) as pool:
            for _ in pool.imap_unordered(job, tasks, chunksize=chunksize):
                progress.update()
