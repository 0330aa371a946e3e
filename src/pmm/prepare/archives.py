"""Official dataset archives (``VOCtrainval_11-May-2012.tar``, ``benchmark.tgz``) unpacked inside the output tree."""

from __future__ import annotations

import json
import os
import shutil
import tarfile
import tempfile
import zlib
from pathlib import Path

from tqdm import tqdm

from pmm.errors import PmmError
from pmm.io import write_json

RAW_DIR = ".raw"
_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".tar")


def archive_stem(path: Path) -> str:
    """``VOCtrainval_11-May-2012.tar`` -> ``VOCtrainval_11-May-2012``, ``benchmark.tgz`` -> ``benchmark``."""
    name = path.name
    for suffix in _SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)] or name
    return path.stem or name


def is_archive(path: Path) -> bool:
    """True for a file that tarfile can open (any compression it knows)."""
    if not path.is_file():
        return False
    try:
        return tarfile.is_tarfile(path)
    except OSError:
        return False


def _check_compressed_stream(archive: Path) -> None:
    """Read a gzip/bzip2/xz archive to its end-of-stream marker: tarfile's stream mode stops at the
    tar end blocks and can miss a truncated compressed file whose cut falls in the padding."""
    import bz2
    import gzip
    import lzma

    with open(archive, "rb") as handle:
        magic = handle.read(6)
    opener = {b"\x1f\x8b": gzip.open, b"BZ": bz2.open}.get(magic[:2])
    if opener is None and magic == b"\xfd7zXZ\x00":
        opener = lzma.open
    if opener is None:
        return
    with opener(archive, "rb") as stream:
        while stream.read(1 << 24):
            pass


def extract_archive(archive: str | os.PathLike, out_root: str | os.PathLike, hint: str, progress: bool = True) -> Path:
    """Unpack ``archive`` into ``out_root/.raw/<archive stem>`` and return that folder.

    Rerunnable: a stamp ``out_root/.raw/<stem>.json`` (archive path, size, modification time) is
    written after a complete extraction, and a later call with the same archive returns at once.
    The members go to a temporary folder that is renamed into place only when all are out, so an
    interrupted or failed extraction leaves no partial tree (a leftover temporary folder is removed
    by the next call). Members that would land outside the folder (absolute paths, ``..``, links
    out) are refused (``tarfile``'s ``data`` filter).

    Raises:
        PmmError: the archive is unreadable or truncated (names it, ``hint`` says what was expected).
    """
    archive = Path(archive).expanduser().resolve()
    raw = Path(out_root).expanduser().resolve() / RAW_DIR
    stem = archive_stem(archive)
    target, stamp_path = raw / stem, raw / f"{stem}.json"
    info = archive.stat()
    stamp = {"archive": str(archive), "size": info.st_size, "mtime_ns": info.st_mtime_ns}
    try:
        if target.is_dir() and json.loads(stamp_path.read_text()) == stamp:
            return target
    except (OSError, ValueError):
        pass
    raw.mkdir(parents=True, exist_ok=True)
    for leftover in raw.glob(f".{stem}.partial-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    partial = Path(tempfile.mkdtemp(dir=raw, prefix=f".{stem}.partial-"))
    try:
        with open(archive, "rb") as handle, tqdm.wrapattr(
            handle, "read", total=info.st_size, desc=f"extract {archive.name}", disable=not progress,
            unit="B", unit_scale=True, unit_divisor=1024, dynamic_ncols=True,
        ) as reader:
            with tarfile.open(fileobj=reader, mode="r|*") as tar:
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(partial, filter="data")
                else:  # Python without extraction filters: check the member paths ourselves
                    for member in tar:
                        name = os.path.normpath(member.name)
                        if name.startswith(("/", "..")) or member.issym() or member.islnk():
                            continue
                        tar.extract(member, partial)
        _check_compressed_stream(archive)
        if stamp_path.exists():
            stamp_path.unlink()
        if target.exists():
            shutil.rmtree(target)
        os.replace(partial, target)
        write_json(stamp_path, stamp)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as error:
        detail = str(error) or type(error).__name__
        raise PmmError(f"{archive}: cannot be extracted ({detail}); {hint}") from None
    finally:
        if partial.exists():
            shutil.rmtree(partial, ignore_errors=True)
    return target
