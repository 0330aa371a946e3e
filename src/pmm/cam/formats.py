"""CAM files written by other WSSS code bases, read as pmm's own (KxHxW float32 in [0, 1], 1-based labels).

Pure functions: one file in, arrays out (no folder listing, no writing). The formats, each
recognised from the file itself (:func:`detect_cam_format`):

- ``pmm``: ``<id>.npz`` with ``cams`` (KxHxW) and ``labels`` (K class ids, 1-based as the masks).
- ``seam`` (SEAM, PMM's reference code): ``np.save("<id>.npy", {class_index: HxW map})``, a pickled
  dict whose keys are all integers: 0-based foreground indices (0 = the first class after background).
- ``irn`` (IRN, AMN, ReCAM...): a pickled dict with ``keys`` (0-based foreground indices) and
  ``high_res`` (KxHxW) and/or ``cam`` (Kxhxw, at a stride of the image).
- ``clip_es`` (CLIP-ES, WeCLIP...): a pickled dict with ``keys`` and ``attn_highres`` (KxHxW, float16).

A dict with ``keys`` holding several maps gives ``high_res``, then ``attn_highres``, then ``cam``
(the first present) unless ``cam_key`` names one. Pickled files can run code when they are loaded:
read only CAM folders you trust.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from pmm.errors import PmmError

CAM_FORMATS = ("pmm", "seam", "irn", "clip_es")
CAM_SUFFIXES = (".npy", ".npz")
# The maps a dict with "keys" may hold, in the order cam_key=null picks them: full resolution first.
KEYED_ARRAYS = ("high_res", "attn_highres", "cam")
STRIDED_KEYS = ("cam",)  # maps at a stride of the image (IRN's): upsampled to the image size
STRIDES = (2, 4, 8, 16, 32)
NORMALIZE_MODES = ("none", "minmax")
# float16 files round values just below 1 up to 1 + a few ulp: within this, values are clipped to [0, 1]
TOLERANCE = 1e-3
MINMAX_HINT = "set pseudo.normalize=minmax (each map: ReLU, then divided by its max, as SEAM and IRN do)"


class ExternalCams(NamedTuple):
    """One image's CAMs read from another code base's file, as pmm holds them."""

    cams: np.ndarray    # KxHxW float32 in [0, 1]
    labels: np.ndarray  # K int64 class ids, 1-based, ascending
    format: str         # one of CAM_FORMATS
    key: str | None     # the array read (``cams``, ``high_res``, ...); None for seam's per-class dict


def _as_array(value: Any) -> np.ndarray:
    """A numpy array of a value from a pickled file (IRN saves torch tensors inside its dicts)."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def load_cam_file(path: str | os.PathLike) -> dict | np.lib.npyio.NpzFile:
    """The raw contents of a CAM file: the pickled dict of a ``.npy``, the arrays of a ``.npz``.

    Raises:
        PmmError: one line naming the file when it is unreadable or a ``.npy`` holds no dict.
    """
    path = Path(path)
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                return {name: data[name] for name in data.files}
        data = np.load(path, allow_pickle=True)
    except FileNotFoundError:
        raise PmmError(f"{path}: CAM file not found") from None
    except Exception as error:  # noqa: BLE001 - numpy, pickle and zip raise many kinds on a damaged file
        reason = " ".join(str(error).split()) or type(error).__name__
        raise PmmError(f"{path}: CAM file cannot be read ({type(error).__name__}: {reason}); replace the file") from None
    if isinstance(data, np.ndarray) and data.dtype == object and data.shape == () and isinstance(data.item(), dict):
        return data.item()
    shape = getattr(data, "shape", None)
    raise PmmError(f"{path}: a plain array{f' of shape {shape}' if shape is not None else ''}, not a dict of CAMs; "
                   "expected np.save('<id>.npy', {class_index: HxW map}) (SEAM) or {'keys': ..., 'high_res': ...} "
                   "(IRN), or a pmm .npz with cams and labels")


def detect_cam_format(contents: dict, path: str | os.PathLike) -> str:
    """The format of a file's contents (:func:`load_cam_file`); the rule is the module's docstring."""
    names = list(contents)
    if Path(path).suffix == ".npz":
        if "cams" in contents and "labels" in contents:
            return "pmm"
        raise PmmError(f"{path}: a .npz with arrays {', '.join(map(str, names)) or '(none)'}; expected pmm's "
                       "cams (KxHxW) and labels (1-based class ids)")
    if "keys" in contents:
        if "high_res" in contents or "cam" in contents:
            return "irn"
        if "attn_highres" in contents:
            return "clip_es"
        others = [str(n) for n in names if n != "keys"]
        return "irn" if others else _no_maps(path)
    if names and all(isinstance(n, (int, np.integer)) and not isinstance(n, bool) for n in names):
        return "seam"
    if not names:
        return "seam"  # SEAM's dict of an image without classes
    raise PmmError(f"{path}: a dict with keys {', '.join(map(str, names[:6]))}: not a CAM format pmm reads; expected "
                   "{class_index: map} (SEAM), {'keys', 'high_res' / 'cam'} (IRN) or {'keys', 'attn_highres'} (CLIP-ES)")


def _no_maps(path) -> str:
    raise PmmError(f"{path}: a dict with 'keys' but no maps; expected 'high_res', 'cam' or 'attn_highres' beside them")


def _foreground_indices(value: Any, path, key: str, num_foreground: int) -> np.ndarray:
    indices = _as_array(value).reshape(-1)
    if indices.size and not np.issubdtype(indices.dtype, np.integer):
        if not np.all(np.mod(indices, 1) == 0):
            raise PmmError(f"{path}: '{key}' holds {indices.tolist()[:6]}, not integer class indices")
        indices = indices.astype(np.int64)
    indices = indices.astype(np.int64)
    outside = indices[(indices < 0) | (indices >= num_foreground)]
    if outside.size:
        raise PmmError(f"{path}: class index {int(outside[0])} in '{key}' is outside the {num_foreground} foreground "
                       f"classes (0-based: 0..{num_foreground - 1}, 0 = the first class after background); check "
                       "data.class_names is the class list the CAMs were made with")
    if len(set(indices.tolist())) != len(indices):
        raise PmmError(f"{path}: '{key}' repeats a class index ({indices.tolist()})")
    return indices


def _pick_key(contents: dict, path, cam_key: str | None) -> str:
    if cam_key is not None:
        if cam_key not in contents:
            arrays = [str(n) for n in contents if n != "keys"]
            raise PmmError(f"{path}: pseudo.cam_key={cam_key} but the file holds {', '.join(arrays)}; "
                           "name one of them (or pseudo.cam_key=null to pick automatically)")
        return cam_key
    for name in KEYED_ARRAYS:
        if name in contents:
            return name
    arrays = [str(n) for n in contents if n != "keys"]
    if len(arrays) == 1:
        return arrays[0]
    raise PmmError(f"{path}: the file holds {', '.join(arrays)} beside 'keys'; set pseudo.cam_key to the one to read")


def strided_to_image(cams: np.ndarray, image_size: tuple[int, int], path, key: str) -> np.ndarray:
    """Kxhxw maps at a stride of the image -> KxHxW: bilinear x stride, then the top-left HxW kept.

    IRN's ``cam`` is the network output resized to ceil(H/4) x ceil(W/4): each cell covers 4x4
    pixels from the top-left corner, the last row and column reaching past the image. The stride
    is the smallest of 2, 4, 8, 16, 32 with h = ceil(H/stride) and w = ceil(W/stride).
    """
    import torch
    import torch.nn.functional as F

    height, width = image_size
    h, w = cams.shape[1:]
    for stride in STRIDES:
        if h == -(-height // stride) and w == -(-width // stride):
            break
    else:
        raise PmmError(f"{path}: '{key}' is {h}x{w} (HxW) but the image is {height}x{width}: not the image at a stride "
                       f"of {', '.join(map(str, STRIDES))}; use the full-size maps (pseudo.cam_key=high_res) if the "
                       "file has them, or CAMs of these images")
    if not len(cams):
        return np.zeros((0, height, width), np.float32)
    up = F.interpolate(torch.from_numpy(np.ascontiguousarray(cams, np.float32))[None], size=(h * stride, w * stride),
                       mode="bilinear", align_corners=False)[0]
    return up[:, :height, :width].numpy()


def normalize_cams(cams: np.ndarray, mode: str) -> np.ndarray:
    """``pseudo.normalize``: ``none`` (unchanged) or ``minmax``: each map max(cam, 0) / (its max + 1e-5).

    ``minmax`` is SEAM's and IRN's normalisation of their raw maps: negatives to 0, the peak to just
    under 1; an all-zero map stays zero.
    """
    if mode == "none":
        return cams
    if mode != "minmax":
        raise PmmError(f"pseudo.normalize={mode}: expected one of {'|'.join(NORMALIZE_MODES)}")
    positive = np.maximum(cams, 0)
    peak = positive.reshape(len(cams), -1).max(axis=1) if positive.size else np.zeros(len(cams), cams.dtype)
    return (positive / (peak[:, None, None] + 1e-5)).astype(np.float32)


def check_values(cams: np.ndarray, path) -> np.ndarray:
    """Finite maps in [0, 1] (float16 rounding within :data:`TOLERANCE` is clipped); a one-line error otherwise."""
    if not cams.size:
        return cams
    finite = np.isfinite(cams)
    if not finite.all():
        bad = cams[~finite]
        what = "NaN" if np.isnan(bad).any() else "inf"
        raise PmmError(f"{path}: CAMs hold {what} at {bad.size} pixel(s); the code that wrote them failed on this "
                       "image: rewrite the file")
    low, high = float(cams.min()), float(cams.max())
    if low < -TOLERANCE:
        raise PmmError(f"{path}: CAM values go down to {low:.4g} (expected [0, 1]: raw, unnormalised maps?); {MINMAX_HINT}")
    if high > 1 + TOLERANCE:
        raise PmmError(f"{path}: CAM values reach {high:.4g} (expected [0, 1]: raw, unnormalised maps?); {MINMAX_HINT}")
    return np.clip(cams, 0.0, 1.0)


def read_external_cams(path: str | os.PathLike, num_classes: int, cam_key: str | None = None,
                       normalize: str = "none", image_size: tuple[int, int] | None = None) -> ExternalCams:
    """One CAM file of any :data:`CAM_FORMATS` as pmm's CAMs (the format detected from the file).

    Args:
        path: ``<id>.npy`` (SEAM, IRN, CLIP-ES) or ``<id>.npz`` (pmm).
        num_classes: classes of the dataset, background included (foreground indices are 0..num_classes-2).
        cam_key: the array of a dict with ``keys`` (``high_res``, ``cam``, ``attn_highres``...); None: auto.
        normalize: ``none`` | ``minmax`` (:func:`normalize_cams`), applied before the value checks.
        image_size: (H, W) of the image: the maps must have it (strided ``cam`` maps are upsampled to it).

    Raises:
        PmmError: one line naming the file: unreadable, unknown layout, class indices outside the
            class list, a map count or size that is not the image's, NaN/inf, values outside [0, 1].
    """
    path = Path(path)
    contents = load_cam_file(path)
    fmt = detect_cam_format(contents, path)
    num_foreground = num_classes - 1
    key: str | None
    if fmt == "pmm":
        if cam_key not in (None, "cams"):
            raise PmmError(f"{path}: pseudo.cam_key={cam_key} but a pmm .npz holds 'cams'; set pseudo.cam_key=null")
        key = "cams"
        labels = _as_array(contents["labels"]).reshape(-1).astype(np.int64)
        outside = labels[(labels < 1) | (labels >= num_classes)]
        if outside.size:
            raise PmmError(f"{path}: labels hold class id {int(outside[0])}, outside the foreground classes "
                           f"1..{num_classes - 1} (pmm's labels are 1-based; 0 is background)")
        indices = _foreground_indices(labels - 1, path, "labels", num_foreground)
        cams = _as_array(contents["cams"])
    elif fmt == "seam":
        if cam_key is not None:
            raise PmmError(f"{path}: pseudo.cam_key={cam_key} but this SEAM-style file is a dict of per-class maps; "
                           "set pseudo.cam_key=null")
        key = None
        indices = _foreground_indices(list(contents), path, "class index", num_foreground)
        maps = [_as_array(contents[k]) for k in contents]
        for k, cam in zip(contents, maps):
            if cam.ndim != 2:
                raise PmmError(f"{path}: the map of class index {k} has shape {cam.shape}; expected HxW")
        if len({m.shape for m in maps}) > 1:
            raise PmmError(f"{path}: the per-class maps differ in size ({', '.join(str(m.shape) for m in maps)})")
        cams = np.stack(maps) if maps else np.zeros((0, *(image_size or (0, 0))), np.float32)
    else:
        key = _pick_key(contents, path, cam_key)
        indices = _foreground_indices(contents["keys"], path, "keys", num_foreground)
        cams = _as_array(contents[key])
    if not np.issubdtype(cams.dtype, np.number) or np.issubdtype(cams.dtype, np.complexfloating):
        raise PmmError(f"{path}: '{key}' holds {cams.dtype} values; expected float maps")
    cams = cams.astype(np.float32)
    if cams.ndim == 2 and len(indices) == 1:
        cams = cams[None]
    if cams.ndim != 3 or len(cams) != len(indices):
        raise PmmError(f"{path}: '{key}' has shape {cams.shape} for {len(indices)} class(es) "
                       f"({indices.tolist()}); expected {len(indices)}xHxW, one map per class index")
    if image_size is not None and tuple(cams.shape[1:]) != tuple(image_size):
        if key in STRIDED_KEYS:
            cams = strided_to_image(cams, image_size, path, key)
        elif len(cams):
            raise PmmError(f"{path}: maps are {cams.shape[1]}x{cams.shape[2]} (HxW) but the image is "
                           f"{image_size[0]}x{image_size[1]}; CAMs must have their image's size (CAMs of other images, "
                           "or of resized ones?)")
        else:
            cams = np.zeros((0, *image_size), np.float32)
    cams = check_values(normalize_cams(cams, normalize), path)
    order = np.argsort(indices, kind="stable")
    return ExternalCams(np.ascontiguousarray(cams[order], np.float32), (indices[order] + 1).astype(np.int64), fmt, key)


def match_labels(cams: np.ndarray, labels: np.ndarray, image_labels, path) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Keep the maps of the image's labelled classes, in their order; (cams, labels, dropped class ids).

    A labelled class without a map is an error (PPMG needs one map per labelled class); maps of
    classes the image is not labelled with are dropped and returned, for the caller to report.
    """
    have = {int(label): k for k, label in enumerate(labels)}
    wanted = [int(label) for label in image_labels]
    missing = [label for label in wanted if label not in have]
    if missing:
        raise PmmError(f"{path}: no map for class id(s) {missing} (1-based) of the image's labels {wanted}; the file "
                       f"has {sorted(have)}; CAMs must cover every labelled class (were they made with other labels? "
                       "see data.labels)")
    dropped = sorted(set(have) - set(wanted))
    keep = [have[label] for label in wanted]
    return cams[keep], np.asarray(wanted, np.int64), dropped
