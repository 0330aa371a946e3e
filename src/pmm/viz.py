"""Pictures written into run directories: masks and CAMs over images, panels, curves, per-class IoU.

Figures are built with matplotlib's object API (``matplotlib.figure.Figure``, imported inside the
functions), never pyplot: no display, no global figure state, no backend switch for the caller, and
nothing left open. Every file is written atomically (temporary name, then rename).
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from pmm.io import VOC_PALETTE, atomic_path

_PALETTE = np.asarray(VOC_PALETTE, dtype=np.uint8).reshape(-1, 3)
_DPI = 100


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=_DPI)


def _save(fig, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=_DPI, format=tmp.suffix.lstrip(".") or "png")


def _as_float(value) -> float:
    return float("nan") if value is None else float(value)


def colorize_mask(mask: np.ndarray) -> np.ndarray:
    """HxW class ids (255 = ignore) -> HxWx3 uint8 RGB in the VOC palette (255 is near-white)."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"colorize_mask: expected an HxW label map, got shape {mask.shape}")
    return _PALETTE[mask.astype(np.uint8)]


def _check_same_size(image: np.ndarray, other: np.ndarray, what: str) -> None:
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{what}: expected an HxWx3 image, got shape {image.shape}")
    if other.shape[:2] != image.shape[:2]:
        raise ValueError(f"{what}: image {image.shape[:2]} and map {other.shape[:2]} differ in size: resize the map first")


def overlay_cam(image: np.ndarray, cam: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend an HxW heat map in [0, 1] (jet colours) over an HxWx3 uint8 image; returns HxWx3 uint8."""
    from matplotlib import colormaps

    image = np.asarray(image)
    cam = np.asarray(cam, dtype=np.float32)
    _check_same_size(image, cam, "overlay_cam")
    heat = colormaps["jet"](np.clip(np.nan_to_num(cam), 0.0, 1.0))[..., :3] * 255.0
    blended = (1.0 - alpha) * image.astype(np.float32) + alpha * heat
    return np.clip(blended + 0.5, 0, 255).astype(np.uint8)


def overlay_mask(image: np.ndarray, mask: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend VOC colours of an HxW mask over an HxWx3 uint8 image; background (0) pixels are left as is."""
    image = np.asarray(image)
    mask = np.asarray(mask)
    _check_same_size(image, mask, "overlay_mask")
    colours = colorize_mask(mask).astype(np.float32)
    blended = image.astype(np.float32)
    foreground = mask != 0
    blended[foreground] = (1.0 - alpha) * blended[foreground] + alpha * colours[foreground]
    return np.clip(blended + 0.5, 0, 255).astype(np.uint8)


def save_panel(
    path: str | os.PathLike,
    rows: Sequence[Sequence[tuple[str, np.ndarray]]],
    title: str | None = None,
    cell_width: float = 3.0,
) -> None:
    """Save a grid of images: one list of ``(column title, image)`` per row; titles shown on the first row.

    Images are HxWx3 uint8 RGB (HxW is shown in grey). Cells are ``cell_width`` inches wide and as
    tall as the first image's aspect ratio asks; rows shorter than the longest leave blank cells.
    """
    if not rows or not any(rows):
        raise ValueError("save_panel: no images to draw")
    n_rows = len(rows)
    n_cols = max(len(row) for row in rows)
    first = np.asarray(next(image for row in rows for _, image in row))
    cell_height = cell_width * first.shape[0] / first.shape[1]
    title_space = 0.35 * (title is not None) + 0.3  # inches: figure title, then column titles
    fig = _figure(n_cols * cell_width, n_rows * cell_height + title_space)
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    for row_index in range(n_rows):
        for col_index in range(n_cols):
            ax = axes[row_index][col_index]
            ax.axis("off")
            if col_index >= len(rows[row_index]):
                continue
            name, image = rows[row_index][col_index]
            image = np.asarray(image)
            ax.imshow(image, cmap="gray" if image.ndim == 2 else None, interpolation="nearest")
            if row_index == 0:
                ax.set_title(name, fontsize=9)
    total_height = n_rows * cell_height + title_space
    if title is not None:  # pinned to the top edge so it never runs into the column titles
        fig.suptitle(title, fontsize=10, y=1.0 - 0.05 / total_height, va="top")
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=1.0 - title_space / total_height, wspace=0.02, hspace=0.02)
    _save(fig, path)


def save_curve(
    path: str | os.PathLike,
    xs: Sequence[float],
    ys: Sequence[float],
    xlabel: str,
    ylabel: str,
    title: str | None = None,
    mark_best: bool = True,
    best: str = "max",
) -> None:
    """Save a line plot of ``ys`` against ``xs``; the best point (``best``: ``max`` or ``min``) marked and annotated."""
    if best not in ("max", "min"):
        raise ValueError(f"save_curve: best must be 'max' or 'min', got {best!r}")
    if len(xs) != len(ys):
        raise ValueError(f"save_curve: {len(xs)} xs but {len(ys)} ys")
    xs_arr = np.asarray(xs, dtype=np.float64)
    ys_arr = np.asarray([_as_float(y) for y in ys], dtype=np.float64)
    fig = _figure(6, 4)
    ax = fig.subplots()
    ax.plot(xs_arr, ys_arr, marker="o", markersize=3)
    if mark_best and np.any(~np.isnan(ys_arr)):
        index = int(np.nanargmax(ys_arr) if best == "max" else np.nanargmin(ys_arr))
        x_best, y_best = xs_arr[index], ys_arr[index]
        ax.plot([x_best], [y_best], marker="*", markersize=14, color="tab:red", linestyle="none")
        ax.annotate(
            f"{best} {y_best:.4g} at {x_best:.4g}",
            (x_best, y_best),
            textcoords="offset points",
            xytext=(8, -14 if best == "max" else 8),
            fontsize=9,
            color="tab:red",
        )
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title is not None:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, path)


def save_iou_bars(
    path: str | os.PathLike,
    class_names: Sequence[str],
    ious: Sequence[float | None],
    title: str | None = None,
) -> None:
    """Save a horizontal bar chart of per-class IoU (None/NaN drawn as ``n/a``) with mIoU as a dashed line.

    IoUs may be fractions or percentages; the axis follows (0-1 or 0-100).
    """
    if len(class_names) != len(ious):
        raise ValueError(f"save_iou_bars: {len(class_names)} class names but {len(ious)} IoUs")
    values = np.asarray([_as_float(v) for v in ious], dtype=np.float64)
    known = ~np.isnan(values)
    scale = 100.0 if known.any() and np.nanmax(values) > 1.0 else 1.0
    positions = np.arange(len(values))
    fig = _figure(6, 1.0 + 0.25 * len(values))
    ax = fig.subplots()
    ax.barh(positions, np.where(known, values, 0.0), color="tab:blue")
    for position, value, is_known in zip(positions, values, known):
        label = f"{value:.3g}" if is_known else "n/a"
        ax.text((value if is_known else 0.0) + 0.01 * scale, position, label, va="center", fontsize=7)
    if known.any():
        miou = float(values[known].mean())
        ax.axvline(miou, color="tab:red", linestyle="--", label=f"mIoU {miou:.3g}")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_yticks(positions, list(class_names), fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0.0, 1.1 * scale)
    ax.set_xlabel("IoU")
    if title is not None:
        ax.set_title(title)
    fig.tight_layout()
    _save(fig, path)


def save_rounds(
    path: str | os.PathLike,
    labels: Sequence[str],
    mious: Sequence[float | None],
    title: str | None = None,
) -> None:
    """Save mIoU per stage or round (e.g. ``["CAM", "round 0", "round 1", "val"]``) as annotated bars and a line."""
    if len(labels) != len(mious):
        raise ValueError(f"save_rounds: {len(labels)} labels but {len(mious)} mIoUs")
    values = np.asarray([_as_float(v) for v in mious], dtype=np.float64)
    known = ~np.isnan(values)
    scale = 100.0 if known.any() and np.nanmax(values) > 1.0 else 1.0
    positions = np.arange(len(values))
    fig = _figure(max(4.0, 1.1 * len(values) + 1.0), 4)
    ax = fig.subplots()
    ax.bar(positions, np.where(known, values, 0.0), color="tab:blue", alpha=0.6)
    if known.any():
        ax.plot(positions[known], values[known], color="tab:red", marker="o")
    for position, value, is_known in zip(positions, values, known):
        label = f"{value:.3g}" if is_known else "n/a"
        ax.text(position, (value if is_known else 0.0) + 0.01 * scale, label, ha="center", va="bottom", fontsize=8)
    ax.set_xticks(positions, list(labels), fontsize=8)
    ax.set_ylim(0.0, 1.1 * scale if not known.any() else max(1.1 * float(np.nanmax(values)), 0.1 * scale))
    ax.set_ylabel("mIoU")
    if title is not None:
        ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    _save(fig, path)


def save_raw_refined_panel(
    path: str | os.PathLike,
    images: Sequence[np.ndarray],
    raw: Sequence[np.ndarray],
    refined: Sequence[np.ndarray],
    masks: Sequence[np.ndarray] | None = None,
    title: str | None = "raw vs refined CAMs",
) -> list[np.ndarray]:
    """Save a panel of one row per image: image | raw CAM | refined CAM | ground truth.

    ``raw`` and ``refined`` are HxW maps in [0, 1] (e.g. SEAM's head CAM and its PCM-refined CAM,
    the max over the image's labelled classes), drawn over the image; ``masks`` (HxW label maps)
    adds the ground-truth column. Returns the raw | refined overlays side by side, one picture per
    row (for a tracker's image panel).
    """
    if not (len(images) == len(raw) == len(refined)) or (masks is not None and len(masks) != len(images)):
        raise ValueError("save_raw_refined_panel: images, raw, refined (and masks) must have one entry per row")
    rows, pictures = [], []
    for index, image in enumerate(images):
        raw_overlay, refined_overlay = overlay_cam(image, raw[index]), overlay_cam(image, refined[index])
        row = [("image", image), ("raw CAM", raw_overlay), ("refined CAM", refined_overlay)]
        if masks is not None:
            row.append(("ground truth", colorize_mask(masks[index])))
        rows.append(row)
        pictures.append(np.concatenate([raw_overlay, refined_overlay], axis=1))
    save_panel(path, rows, title=title)
    return pictures
