"""Pieces shared by the dataset preparers: placing files (link or copy) and a worker pool with a bar."""

from __future__ import annotations

import json
import os
import shutil
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any, Callable, Sequence

from tqdm import tqdm

from pmm.errors import PmmError
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


CLASS_NAMES_JSON = "class_names.json"
CLASS_NAMES_TXT = "class_names.txt"
MAX_NAMES = 255  # uint8 masks, 255 = ignore: background + at most 254 classes


def write_class_names(root: str | os.PathLike, names: Sequence[str]) -> None:
    """Write ``root/class_names.json`` (a JSON list) and ``root/class_names.txt`` (one name a line), atomically."""
    root = Path(root)
    for path, text in (
        (root / CLASS_NAMES_JSON, json.dumps(list(names), indent=2) + "\n"),
        (root / CLASS_NAMES_TXT, "".join(f"{name}\n" for name in names)),
    ):
        with atomic_path(path) as tmp:
            tmp.write_text(text, encoding="utf-8")


def read_class_names(root: str | os.PathLike) -> list[str]:
    """The class names of a prepared tree, background first: ``root/class_names.txt`` (one name a
    line), or ``root/class_names.json`` (a JSON list of strings) when there is no ``.txt``.

    Raises:
        PmmError: one line naming the file when neither exists, it cannot be read, or it is malformed
            (blank line, not a list of strings, fewer than 2 names, duplicates, first name not
            ``background``, more than 255 names).
    """
    root = Path(root).expanduser()
    txt, jsn = root / CLASS_NAMES_TXT, root / CLASS_NAMES_JSON
    fix = "one name a line, background first (python -m pmm.prepare writes it)"
    if txt.is_file():
        source = txt
        try:
            lines = txt.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as error:
            raise PmmError(f"{txt}: cannot be read ({error}); expected a UTF-8 text file, {fix}") from None
        while lines and not lines[-1].strip():
            lines.pop()
        names = [line.strip() for line in lines]
        blank = [number for number, name in enumerate(names, start=1) if not name]
        if blank:
            raise PmmError(f"{txt}: line {blank[0]} is blank; expected {fix}")
    elif jsn.is_file():
        source = jsn
        try:
            names = json.loads(jsn.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise PmmError(f"{jsn}: not valid JSON ({error}); expected a list of class names, background first") from None
        if not isinstance(names, list) or not all(isinstance(name, str) and name.strip() for name in names):
            raise PmmError(f"{jsn}: expected a JSON list of non-empty class names (strings), background first")
    else:
        raise PmmError(
            f"{txt}: class names file not found (nor {CLASS_NAMES_JSON}); prepare the tree with "
            "python -m pmm.prepare, or write it yourself: one name a line, background first"
        )
    if len(names) < 2:
        raise PmmError(f"{source}: holds {len(names)} class name(s); expected background and at least one class")
    if names[0] != "background":
        raise PmmError(f"{source}: the first class is {names[0]!r}; it must be 'background' (class id 0), add it first")
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise PmmError(f"{source}: class {duplicates[0]!r} is listed more than once; class names must be unique")
    if len(names) > MAX_NAMES:
        raise PmmError(f"{source}: {len(names)} class names, but uint8 masks (255 = ignore) hold at most {MAX_NAMES}")
    return list(names)
