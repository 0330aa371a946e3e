"""Pieces shared by the dataset preparers: placing files (link or copy) and a worker pool with a bar."""

from __future__ import annotations

import os
import shutil
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any, Callable, Sequence

from tqdm import tqdm

from pmm.io import atomic_path


def default_workers() -> int:
    """Worker processes used when ``--workers`` is not given: the CPUs this process may use, at most 8."""
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        available = os.cpu_count() or 1
    return max(1, min(8, available))


def place_file(source: str | os.PathLike, target: str | os.PathLike, link: bool) -> bool:
    """Put ``source`` at ``target`` (absolute symlink or copy), atomically.

    Returns False, doing nothing, when an earlier run already placed it: a link that resolves to
    ``source``, or (copies) a regular file of the same size and modification time (``copy2`` keeps it).
    """
    source, target = Path(source).resolve(), Path(target)
    if target.exists() and target.resolve() == source:
        if link or not target.is_symlink():
            return False  # already linked, or the source folder is the output folder
    elif not link and target.is_file() and not target.is_symlink():
        src_stat, dst_stat = source.stat(), target.stat()
        if src_stat.st_size == dst_stat.st_size and src_stat.st_mtime_ns == dst_stat.st_mtime_ns:
            return False
    with atomic_path(target) as tmp:
        if link:
            tmp.unlink()
            os.symlink(source, tmp)
        else:
            shutil.copy2(source, tmp)
    return True


def _apply_chunk(func: Callable[[Any, Any], Any], shared: Any, chunk: Sequence[Any]) -> list[Any]:
    return [func(item, shared) for item in chunk]


def run_jobs(
    func: Callable[[Any, Any], Any],
    items: Sequence[Any],
    *,
    shared: Any = None,
    workers: int = 1,
    desc: str = "",
    unit: str = "it",
    progress: bool = True,
) -> list[Any]:
    """``[func(item, shared) for item in items]`` over ``workers`` processes, with a tqdm bar.

    ``func`` must be a module-level function (it is pickled). Results come back in no particular
    order. The first exception (a :class:`~pmm.errors.PmmError` naming the bad input) cancels the
    chunks not yet started, lets the running ones finish (every file is written atomically, so
    nothing is left half-written) and is raised here.
    """
    items = list(items)
    results: list[Any] = []
    with tqdm(total=len(items), desc=desc, unit=unit, disable=not progress, dynamic_ncols=True) as bar:
        if workers <= 1 or len(items) <= 1:
            for item in items:
                results.append(func(item, shared))
                bar.update(1)
            return results
        size = max(1, min(64, len(items) // (workers * 8)))
        chunks = [items[start : start + size] for start in range(0, len(items), size)]
        with ProcessPoolExecutor(max_workers=min(workers, len(chunks))) as pool:
            pending = {pool.submit(_apply_chunk, func, shared, chunk): len(chunk) for chunk in chunks}
            try:
                while pending:
                    done, _ = wait(pending, return_when=FIRST_EXCEPTION)
                    for future in done:
                        count = pending.pop(future)
                        results.extend(future.result())  # raises the worker's exception
                        bar.update(count)
            except BaseException:
                for future in pending:
                    future.cancel()
                raise
    return results
