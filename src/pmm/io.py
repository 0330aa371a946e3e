"""The on-disk formats of pmm, all written atomically (temporary name, then rename).

- Masks (ground truth, pseudo-masks, predictions): palette PNG with the VOC palette, values are
  class ids, 255 = ignore. Any viewer shows them in VOC colours.
- Images: RGB JPEG/PNG read as HxWx3 uint8.
- CAMs: ``.npz`` with ``cams`` (KxHxW float16 in [0, 1], the K labelled classes) and
  ``labels`` (K int class ids, 1-based like the masks).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
import zlib
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError

from pmm.errors import PmmError


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


# mkstemp / mkdtemp create owner-only files and folders; outputs get the permissions a plain
# open() / mkdir() would give.
FILE_MODE = 0o666 & ~_umask()
FOLDER_MODE = 0o777 & ~_umask()


def os_error_line(path: str | os.PathLike, error: OSError, writing: str = "a checkpoint",
                  key: str = "hydra.run.dir") -> str:
    """One line for an OSError met while writing ``path``: the cause in words and the fix.

    ``key`` is the setting that chose the folder (``hydra.run.dir`` for a run, ``output`` for pmm.predict).
    """
    code = error.errno
    if code in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        what = "no space left on device" if code == errno.ENOSPC else "disk quota exceeded"
        return f"{path}: {what} while writing {writing}; free space or set {key} to a folder on a disk with room"
    if code == errno.EROFS:
        return f"{path}: read-only file system while writing {writing}; set {key} to a writable folder"
    if code in (errno.EACCES, errno.EPERM):
        return f"{path}: permission denied while writing {writing}; set {key} to a folder you can write to"
    reason = error.strerror or str(error) or type(error).__name__
    name = errno.errorcode.get(code, "") if code is not None else ""
    return f"{path}: {reason}{f' ({name})' if name else ''} while writing {writing}; check the folder {key} names"


def check_writable(folder: str | os.PathLike, key: str = "hydra.run.dir") -> None:
    """Create ``folder`` if needed and write/delete a probe file in it; a one-line PmmError otherwise."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise PmmError(f"{key}={folder}: is a file, not a folder; give a folder ({key} is created if missing)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(dir=folder, prefix=".pmm-write-probe.")
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        raise PmmError(f"{key}={folder}: " + os_error_line(folder, error, "a probe file", key).split(": ", 1)[1]) from None


def voc_palette(num_colors: int = 256) -> list[int]:
    """The standard PASCAL VOC colour map, flattened ``[r0, g0, b0, r1, ...]``."""
    palette = []
    for index in range(num_colors):
        red = green = blue = 0
        code = index
        for bit in range(8):
            red |= ((code >> 0) & 1) << (7 - bit)
            green |= ((code >> 1) & 1) << (7 - bit)
            blue |= ((code >> 2) & 1) << (7 - bit)
            code >>= 3
        palette += [red, green, blue]
    return palette


VOC_PALETTE = voc_palette()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}")
    os.close(handle)
    os.chmod(tmp_name, FILE_MODE)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_mask(path: str | os.PathLike, mask: np.ndarray) -> None:
    """Write an HxW uint8 label map as a VOC-palette PNG, atomically."""
    if mask.ndim != 2:
        raise ValueError(f"save_mask({path}): expected an HxW label map, got shape {mask.shape}")
    image = Image.fromarray(mask.astype(np.uint8), mode="P")
    image.putpalette(VOC_PALETTE)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


def describe_decode_error(path: str | os.PathLike, error: BaseException) -> str:
    """Why ``path`` did not decode, in a few words (no newline): empty, truncated, not an image..."""
    try:
        size = os.path.getsize(path)
    except OSError:
        size = None
    if size == 0:
        return "empty file (0 bytes)"
    if isinstance(error, UnidentifiedImageError):
        return f"not an image format PIL can read ({size} bytes)"
    text = " ".join(str(error).split()) or type(error).__name__
    if "truncated" in text:
        return f"truncated file ({size} bytes, the data stops early)"
    if isinstance(error, PermissionError):
        return "permission denied"
    return f"does not decode ({type(error).__name__}: {text})"


# What PIL raises on a damaged file: OSError (truncated, unidentified), SyntaxError (broken PNG
# chunks), ValueError/EOFError/zlib.error (corrupt streams), DecompressionBombError (absurd sizes).
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, zlib.error, Image.DecompressionBombError)


MASK_MODES = ("P", "L", "I;16", "I;16L", "I;16B", "I;16N", "I")  # palette, 8-bit, 16-bit and 32-bit greyscale
MASK_FORMAT = ("expected a palette (P) or greyscale (L) PNG whose pixel values are class ids "
               "(VOC SegmentationClass format)")


def label_map(image: Image.Image) -> tuple[np.ndarray | None, str | None]:
    """(HxW uint8 class ids, None) of a decoded mask, or (None, what is wrong with it).

    8-bit masks are read as they are. 16-bit and 32-bit greyscale masks are read with their full
    values (never wrapped to 8 bits: 260 is not class 4); they are accepted when every value fits a
    class id (0..254, 255 = ignore) and refused, saying which value was found, otherwise.
    """
    if image.mode not in MASK_MODES:
        return None, f"mask is an {image.mode} image"
    if image.mode in ("P", "L"):
        return np.asarray(image, dtype=np.uint8), None
    values = np.asarray(image)
    low, high = int(values.min()), int(values.max())
    if low < 0 or high > 255:
        bits = 32 if image.mode == "I" else 16
        shown = high if high > 255 else low
        return None, (f"{bits}-bit mask holds the value {shown}, which is no class id "
                      "(pmm reads class ids 0..254 and 255 = ignore)")
    return values.astype(np.uint8), None


def load_mask(path: str | os.PathLike) -> np.ndarray:
    """Read a label PNG as HxW uint8 class ids. Palette PNGs give indices; greyscale gives values.

    16-/32-bit greyscale masks are read losslessly (:func:`label_map`).

    Raises:
        PmmError: one line naming the file when it is missing, empty, truncated, undecodable,
            not a palette/greyscale image, or holds a value beyond 255.
    """
    try:
        with Image.open(path) as image:
            if image.mode not in MASK_MODES:
                raise PmmError(f"{path}: mask is an {image.mode} image; {MASK_FORMAT}")
            image.load()  # decode the whole file now: a truncated PNG fails here, not later
            mask, problem = label_map(image)
            if problem:
                raise PmmError(f"{path}: {problem}; store the class ids as an 8-bit palette or greyscale PNG")
            return mask.copy()
    except FileNotFoundError:
        raise PmmError(f"{path}: mask file not found") from None
    except PmmError:
        raise
    except DECODE_ERRORS as error:
        raise PmmError(
            f"{path}: mask cannot be read: {describe_decode_error(path, error)}; replace the file "
            "(or delete it if pmm wrote it, and rerun with pseudo.resume=true)"
        ) from None


def mask_decodes(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a complete, decodable mask (what ``pseudo.resume`` keeps)."""
    try:
        load_mask(path)
    except (PmmError, OSError):
        return False
    return True


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image as HxWx3 uint8 RGB.

    Raises:
        PmmError: one line naming the file when it is missing, empty, truncated or undecodable.
    """
    try:
        with Image.open(path) as image:
            image.load()  # decode the whole file: a truncated JPEG with an intact header fails here
            return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
    except FileNotFoundError:
        raise PmmError(f"{path}: image file not found") from None
    except DECODE_ERRORS as error:
        raise PmmError(f"{path}: image cannot be read: {describe_decode_error(path, error)}; replace the file") from None


def save_image(path: str | os.PathLike, image: np.ndarray, quality: int = 95) -> None:
    """Write an HxWx3 uint8 RGB image (JPEG or PNG by suffix), atomically."""
    path = Path(path)
    fmt = "JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG"
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format=fmt, **({"quality": quality} if fmt == "JPEG" else {}))


def save_cams(path: str | os.PathLike, cams: np.ndarray, labels: np.ndarray) -> None:
    """Write the KxHxW CAMs of one image and their 1-based class ids, atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, cams=cams.astype(np.float16), labels=np.asarray(labels, dtype=np.int64))


def load_cams(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read CAMs written by :func:`save_cams` as (KxHxW float32, K int64 labels)."""
    with np.load(path) as data:
        return data["cams"].astype(np.float32), data["labels"]


def write_json(path: str | os.PathLike, payload: dict) -> None:
    """Write JSON atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")


def update_json(path: str | os.PathLike, updates: dict, remove: tuple[str, ...] = ()) -> dict:
    """Merge ``updates`` into the JSON object at ``path`` (created if missing), drop the keys ``remove``; return the result."""
    path = Path(path)
    payload = json.loads(path.read_text()) if path.exists() else {}
    payload.update(updates)
    for key in remove:
        payload.pop(key, None)
    write_json(path, payload)
    return payload
