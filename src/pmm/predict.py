"""``python -m pmm.predict seg_ckpt=PATH input=DIR_OR_FILES output=DIR``: segment new images.

No dataset is needed: the checkpoint carries its network spec and class names, the masks use VOC's
palette. For every readable image (any size, any format Pillow reads; greyscale, palette, 16-bit
and RGBA images are converted to RGB, EXIF rotation applied) it writes, under ``output``:

- ``masks/<name>.png``: the label map at the image's size, a VOC-palette PNG (pixel = class id);
- ``overlays/<name>.jpg``: the mask's colours over the image;
- ``shares/<name>.json``: the share of the image's pixels of each class present, by class name;

and ``summary.json`` (settings, per-image sizes and shares, the files that could not be read).

Memory is bounded by ``max_long`` (default 2048): an image whose long side is longer is decoded
at reduced size (JPEG's own draft mode, then a resize), segmented at that size, and its mask
enlarged (nearest neighbour) to the image's full size; its overlay stays at the reduced size. A
forward pass holds at most ``max_long`` x ``max_long`` pixels (fewer images per batch when they
are large). ``max_long=null`` segments every image at its full size.
``<name>`` is the file's path below the input folder without its extension (the file name for
files given one by one; the extension is kept where two inputs would share a name).

Test-time settings are stage=eval's (``eval.scales``, ``eval.flip``, ``eval.mode``, ``eval.crf`` with
``crf.seg``...). Equal-size images run as one batch. A file that cannot be read is one warning
line naming it; the others go on. Exit code 2 with one ``pmm: error:`` line for a bad checkpoint, a
missing input or when no input could be read.
"""

from __future__ import annotations

import glob
import logging
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "offline")

import hydra  # noqa: E402
import numpy as np  # noqa: E402
from omegaconf import DictConfig, ListConfig, OmegaConf  # noqa: E402
from PIL import Image, ImageOps  # noqa: E402

from pmm.errors import PmmError  # noqa: E402

log = logging.getLogger("pmm")

HINT_INPUT = "give a folder, an image file, a glob or a list of them: input=photos/ or input=[a.jpg,b.png]"


# ------------------------------------------------------------------------------------------- inputs

def image_extensions() -> set[str]:
    """File extensions Pillow can open (``.jpg``, ``.png``, ``.webp``, ``.tif``...), lower case."""
    return {ext.lower() for ext in Image.registered_extensions()}


def _as_list(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (ListConfig, list, tuple)):
        return [str(item) for item in value]
    return [str(value)]


def collect_inputs(value) -> list[tuple[Path, str]]:
    """(file, name) of every input: a folder's image files (recursively, by extension), files, globs.

    Names are the files' paths below their folder without extension (a file given alone: its stem);
    where two inputs would share a name, the extension is kept, then ``-2``, ``-3``... added.
    """
    entries = _as_list(value)
    if not entries:
        raise PmmError(f"input is not set; {HINT_INPUT}")
    extensions = image_extensions()
    found: list[tuple[Path, str]] = []
    for entry in entries:
        path = Path(entry).expanduser()
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in extensions
                           and not any(part.startswith(".") for part in p.relative_to(path).parts))
            if not files:
                raise PmmError(f"input={entry}: no image files in this folder (looked for "
                               f"{', '.join(sorted(e for e in extensions if e in ('.jpg', '.png', '.webp', '.bmp', '.tif')))}... "
                               "recursively); " + HINT_INPUT)
            found += [(p, p.relative_to(path).with_suffix("").as_posix()) for p in files]
        elif path.is_file():
            found.append((path, path.stem))
        elif glob.has_magic(entry):
            files = sorted(Path(p) for p in glob.glob(os.path.expanduser(entry), recursive=True) if Path(p).is_file())
            if not files:
                raise PmmError(f"input={entry}: no file matches this pattern; {HINT_INPUT}")
            found += [(p, p.stem) for p in files]
        elif path.exists():
            raise PmmError(f"input={entry}: not a regular file or folder; {HINT_INPUT}")
        else:
            raise PmmError(f"input={entry}: no such file or folder; {HINT_INPUT}")
    seen: set[Path] = set()
    unique = []
    for path, name in found:  # the same file listed twice is predicted once
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            unique.append((path, name))
    return _distinct_names(unique)


def _distinct_names(items: list[tuple[Path, str]]) -> list[tuple[Path, str]]:
    counts: dict[str, int] = {}
    for _, name in items:
        counts[name] = counts.get(name, 0) + 1
    named = [(path, name if counts[name] == 1 else name + path.suffix.lower()) for path, name in items]
    used: set[str] = set()
    result = []
    for path, name in named:
        candidate, number = name, 1
        while candidate in used:
            number += 1
            candidate = f"{name}-{number}"
        used.add(candidate)
        result.append((path, candidate))
    return result


def read_size(path: Path) -> tuple[int, int] | None:
    """(height, width) after EXIF rotation from the file's header, None when Pillow cannot identify it."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            try:
                orientation = image.getexif().get(0x0112)
            except Exception:  # noqa: BLE001 - a broken EXIF block only loses the rotation
                orientation = None
            return (width, height) if orientation in (5, 6, 7, 8) else (height, width)
    except Exception:  # noqa: BLE001 - reported when the file is decoded
        return None


def to_rgb(image: Image.Image) -> np.ndarray:
    """Any Pillow image as H x W x 3 uint8 RGB: EXIF rotation applied, 16/32-bit and float greyscale rescaled."""
    try:
        image = ImageOps.exif_transpose(image)
    except Exception:  # noqa: BLE001 - a broken EXIF block only loses the rotation
        pass
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        values = np.asarray(image, dtype=np.float32) / 257.0
        return np.repeat(np.clip(values + 0.5, 0, 255).astype(np.uint8)[..., None], 3, axis=2)
    if image.mode in ("I", "F"):
        values = np.asarray(image, dtype=np.float32)
        low, high = float(np.nanmin(values)), float(np.nanmax(values))
        scaled = (values - low) / (high - low) * 255.0 if high > low else np.zeros_like(values)
        return np.repeat(np.clip(np.nan_to_num(scaled) + 0.5, 0, 255).astype(np.uint8)[..., None], 3, axis=2)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA").convert("RGB")  # the colours under the alpha channel, as the image is
    return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()


def scaled_size(height: int, width: int, max_long: int | None) -> tuple[int, int]:
    """(height, width) with the long side brought down to ``max_long`` (aspect kept); unchanged when shorter or None."""
    long_side = max(height, width)
    if not max_long or long_side <= max_long:
        return height, width
    scale = max_long / long_side
    return max(1, round(height * scale)), max(1, round(width * scale))


def read_image(path: Path, max_long: int | None = None) -> tuple[np.ndarray | None, str | None, tuple[int, int] | None]:
    """(H x W x 3 uint8, None, full size), or (None, why the file cannot be read, None).

    With ``max_long`` an image with a longer side comes back at :func:`scaled_size`; ``full size``
    is always the (height, width) of the whole image after EXIF rotation. A JPEG is decoded at
    reduced scale directly (Pillow's draft mode), so its full-size pixels are never in memory.
    """
    from pmm.io import DECODE_ERRORS, describe_decode_error

    try:
        with Image.open(path) as image:
            width, height = image.size
            try:
                turned = image.getexif().get(0x0112) in (5, 6, 7, 8)  # EXIF rotation by 90 degrees
            except Exception:  # noqa: BLE001 - a broken EXIF block only loses the rotation
                turned = False
            full = (width, height) if turned else (height, width)
            target = scaled_size(*full, max_long)
            if target != full and image.format == "JPEG":
                stored = (target[0], target[1]) if turned else (target[1], target[0])
                image.draft("RGB", stored)  # at least that size: a 1/2, 1/4 or 1/8 scale decode
            image.load()
            rgb = to_rgb(image)
        if rgb.shape[:2] != target:
            rgb = np.asarray(Image.fromarray(rgb).resize((target[1], target[0]), Image.BILINEAR))
        return rgb, None, full
    except DECODE_ERRORS as error:
        return None, describe_decode_error(path, error), None
    except Exception as error:  # noqa: BLE001 - any plugin failure: this file is skipped, the others go on
        return None, f"does not decode ({type(error).__name__}: {' '.join(str(error).split())})", None


def size_batches(sizes: Sequence[tuple[int, int] | None], batch_size: int, max_pixels: int | None) -> list[list[int]]:
    """Consecutive indices in batches of at most ``batch_size`` images and ``max_pixels`` pixels (>= 1 image).

    ``sizes`` are the sizes the images are segmented at (None: unknown, counted as one pixel).
    """
    batches: list[list[int]] = []
    current: list[int] = []
    pixels = 0
    for index, size in enumerate(sizes):
        area = size[0] * size[1] if size else 1
        if current and (len(current) >= batch_size or (max_pixels and pixels + area > max_pixels)):
            batches.append(current)
            current, pixels = [], 0
        current.append(index)
        pixels += area
    if current:
        batches.append(current)
    return batches


class ImageFiles:
    """A map-style dataset of image files for a DataLoader: decoding runs in its worker processes."""

    def __init__(self, paths: Sequence[Path], max_long: int | None = None) -> None:
        self.paths = list(paths)
        self.max_long = max_long

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        image, error, full = read_image(self.paths[index], self.max_long)
        return {"index": index, "image": image, "error": error, "full_size": full}


# ------------------------------------------------------------------------------------------- outputs

def class_shares(mask: np.ndarray, class_names: Sequence[str]) -> dict[str, float]:
    """Share of the pixels of each class present in ``mask``, by name, largest first (they sum to 1)."""
    counts = np.bincount(mask.ravel(), minlength=len(class_names))[: len(class_names)]
    total = max(int(counts.sum()), 1)
    order = sorted(np.flatnonzero(counts), key=lambda c: (-counts[c], c))
    return {class_names[c]: round(float(counts[c]) / total, 6) for c in order}


def resolve_device(value) -> str:
    import torch

    value = str(value or "auto")
    if value == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(value)
    except (RuntimeError, ValueError):
        raise PmmError(f"device={value}: not a torch device; use auto, cpu, cuda or cuda:<index>") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise PmmError(f"device={value}: CUDA is not available on this machine; use device=cpu or device=auto")
    return value


def _check_settings(cfg: DictConfig) -> None:
    from pmm.settings import PredictSettings, Settings

    Settings.from_config(cfg)  # eval.* and crf.* as for pmm.run (the nodes a predict config lacks keep their defaults)
    PredictSettings.from_config(cfg)  # num_workers, overlay_alpha
    if cfg.get("output") in (None, ""):
        raise PmmError("output is not set; give the folder to write masks, overlays and shares to: output=DIR")


# ------------------------------------------------------------------------------------------- the run

def predict(cfg: DictConfig) -> dict:
    """Segment the ``input`` images into ``output``; returns the summary (also ``output/summary.json``)."""
    import torch
    from torch.utils.data import DataLoader
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    from pmm.io import check_writable
    from pmm.data.datasets import list_collate
    from pmm.crf import CRFParams
    from pmm.io import save_image, save_mask, write_json
    from pmm.seg.inference import segment_images
    from pmm.seg.model import load_segmenter
    from pmm.nets.tta import TTAConfig
    from pmm.viz import overlay_mask

    _check_settings(cfg)
    inputs = collect_inputs(cfg.input)
    output = Path(str(cfg.output)).expanduser()
    check_writable(output, "output")
    net, class_names, spec = load_segmenter(cfg.seg_ckpt)
    settings = OmegaConf.to_container(cfg.eval, resolve=True)
    try:
        tta = TTAConfig.from_config(settings)
    except ValueError as error:
        raise PmmError(f"eval: {error}") from None
    crf = CRFParams.from_config(OmegaConf.to_container(cfg.crf.seg, resolve=True), "crf.seg") if settings.get("crf") else None
    device = resolve_device(cfg.get("device"))
    batch_size = int(settings.get("batch_size") or 16)
    max_long = cfg.get("max_long")
    max_long = int(max_long) if max_long else None

    # Equal sizes next to each other, so a batch of files holds few sizes (each size is one forward pass).
    sizes = {path: read_size(path) for path, _ in inputs}
    ordered = sorted(range(len(inputs)), key=lambda i: (sizes[inputs[i][0]] is None, sizes[inputs[i][0]] or (0, 0), i))
    paths = [inputs[i][0] for i in ordered]
    names = [inputs[i][1] for i in ordered]
    segmented = [scaled_size(*sizes[path], max_long) if sizes[path] else None for path in paths]
    batches = size_batches(segmented, batch_size, max_long * max_long if max_long else None)

    net = net.to(device).eval()
    workers = int(cfg.get("num_workers") or 0)
    workers = min(workers, max(0, len(paths) // max(batch_size, 1)))  # worker start-up is wasted on a few images
    files = DataLoader(ImageFiles(paths, max_long), batch_sampler=batches, num_workers=workers,
                       collate_fn=list_collate)
    alpha = float(cfg.get("overlay_alpha", 0.5))
    records: dict[int, dict] = {}
    failed: list[dict] = []
    pixel_counts = np.zeros(len(class_names), dtype=np.int64)
    image_counts = np.zeros(len(class_names), dtype=np.int64)
    with logging_redirect_tqdm(loggers=[logging.getLogger()]), \
            tqdm(total=len(paths), desc="predicting", unit="img", dynamic_ncols=True) as bar:
        for batch in files:
            good = []
            for item in batch:
                if item["error"] is not None:
                    path = paths[item["index"]]
                    log.warning("%s: cannot be read (%s); skipped", path, item["error"])
                    failed.append({"input": str(path), "reason": item["error"]})
                else:
                    good.append(item)
            if good:
                images = [item["image"] for item in good]
                with torch.inference_mode():
                    masks = segment_images(net, images, None, tta=tta, crf=crf, batch_size=len(images), device=device)
                for item, image, small in zip(good, images, masks):
                    index, name = item["index"], names[item["index"]]
                    save_image(output / "overlays" / f"{name}.jpg", overlay_mask(image, small, alpha), quality=90)
                    full = item["full_size"] or small.shape
                    mask = small if tuple(full) == small.shape else np.asarray(
                        Image.fromarray(small).resize((full[1], full[0]), Image.NEAREST))
                    save_mask(output / "masks" / f"{name}.png", mask)
                    shares = class_shares(mask, class_names)
                    write_json(output / "shares" / f"{name}.json", shares)
                    counts = np.bincount(mask.ravel(), minlength=len(class_names))[: len(class_names)]
                    pixel_counts += counts
                    image_counts += counts > 0
                    records[index] = {"name": name, "input": str(paths[index]), "width": int(mask.shape[1]),
                                      "height": int(mask.shape[0]), "mask": f"masks/{name}.png",
                                      "overlay": f"overlays/{name}.jpg", "shares": shares}
                    if small.shape != mask.shape:
                        records[index]["segmented_at"] = {"width": int(small.shape[1]), "height": int(small.shape[0])}
            bar.update(len(batch))

    if not records:
        first = failed[0] if failed else {"input": str(cfg.input), "reason": "nothing to read"}
        raise PmmError(f"input={_show_input(cfg.input)}: none of the {len(paths)} file(s) could be read "
                       f"(e.g. {first['input']}: {first['reason']}); give images Pillow can open (jpg, png, webp, bmp, tif...)")
    total = max(int(pixel_counts.sum()), 1)
    summary = {
        "checkpoint": str(Path(str(cfg.seg_ckpt)).expanduser().resolve()),
        "network": spec.get("_target_"),
        "class_names": list(class_names),
        "palette": "VOC",
        "device": device,
        "eval": settings,
        "max_long": max_long,
        "crf": asdict(crf) if crf is not None else None,
        "num_inputs": len(paths),
        "num_images": len(records),
        "num_unreadable": len(failed),
        "unreadable": failed,
        "pixel_shares": {class_names[c]: round(float(pixel_counts[c]) / total, 6)
                         for c in sorted(np.flatnonzero(pixel_counts), key=lambda c: (-pixel_counts[c], c))},
        "images_with_class": {class_names[c]: int(image_counts[c]) for c in np.flatnonzero(image_counts)},
        "images": [records[i] for i in sorted(records, key=lambda i: ordered[i])],
    }
    write_json(output / "summary.json", summary)
    skipped = f"; {len(failed)} unreadable file(s) skipped" if failed else ""
    log.info("pmm.predict: %d image(s) -> %s (masks/, overlays/, shares/, summary.json)%s",
             len(records), output, skipped)
    return summary


def _show_input(value) -> str:
    entries = _as_list(value)
    return entries[0] if len(entries) == 1 else "[" + ",".join(entries) + "]"


@hydra.main(version_base="1.3", config_path="conf", config_name="predict")
def main(cfg: DictConfig) -> float | None:
    from pmm.runtime.config_check import restore_hydra_error_reporting

    restore_hydra_error_reporting()
    try:
        summary = predict(cfg)
    except PmmError as error:
        print(f"pmm: error: {error}", file=sys.stderr)
        sys.exit(2)
    return float(summary["num_images"]) if summary else math.nan


def cli() -> None:
    """``python -m pmm.predict``: a command line Hydra refuses is one ``pmm: error:`` line."""
    from pmm.runtime.config_check import run_hydra_main

    run_hydra_main(main, "predict")


if __name__ == "__main__":
    cli()
