"""What goes to experiment trackers besides Lightning's own scalars: config, git commit, images."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf


@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    """The commit of the pmm checkout (``unknown`` for an installed wheel or without git)."""
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                                text=True, timeout=5)
        return result.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def run_config(cfg: DictConfig) -> dict:
    """The resolved config plus the git commit, as logged with every stage's hyper-parameters."""
    # Hydra's own node (present when the config was composed for tests) is not the run's config.
    config = OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True)
    return {"config": config, "git_commit": git_commit()}


def wandb_run(cfg: DictConfig):
    """The active wandb run when ``logger=wandb`` is configured, else None."""
    if not cfg.get("logger") or "wandb" not in cfg.logger:
        return None
    import wandb

    return wandb.run


def log_masks(cfg: DictConfig, key: str, images: list[np.ndarray], masks: dict[str, list[np.ndarray]],
              class_names: list[str], captions: list[str] | None = None) -> None:
    """Log images with class-labelled mask overlays (wandb's mask viewer) when wandb is active.

    Args:
        key: the panel name (``pseudo_masks/round_0``, ``predictions/val``...).
        images: HxWx3 uint8 images.
        masks: overlay name -> one HxW label map per image (``pseudo-mask``, ``ground truth``...).
    """
    run = wandb_run(cfg)
    if run is None:
        return
    import wandb

    labels = {index: name for index, name in enumerate(class_names)} | {255: "ignore"}
    logged = []
    for index, image in enumerate(images):
        overlays = {name: {"mask_data": np.asarray(values[index]), "class_labels": labels} for name, values in masks.items()}
        logged.append(wandb.Image(image, masks=overlays, caption=captions[index] if captions else None))
    run.log({key: logged})


def log_heatmaps(cfg: DictConfig, key: str, pictures: list[np.ndarray], captions: list[str] | None = None) -> None:
    """Log rendered RGB pictures (CAM overlays, figures) when wandb is active."""
    run = wandb_run(cfg)
    if run is None:
        return
    import wandb

    run.log({key: [wandb.Image(p, caption=captions[i] if captions else None) for i, p in enumerate(pictures)]})


def log_mask_panel(ctx, key: str, split_name: str, folder: Path, split=None) -> None:
    """The first images of a mask folder with ground truth, as wandb mask overlays (if wandb is on).

    ``split``: the ids to show (default: split ``split_name``, whose masks must all exist).
    """
    from pmm.io import load_mask

    if ctx.cfg.get("logger") is None or "wandb" not in ctx.cfg.logger:
        return
    split = split if split is not None else ctx.split(split_name)
    ids = split.ids[: ctx.cfg.pseudo.figures]
    masks = {"mask": [load_mask(folder / f"{i}.png") for i in ids]}
    if all(split.has_mask(i) for i in ids):  # a dataset without ground truth shows the masks alone
        masks["ground truth"] = [split.load_mask(i) for i in ids]
    log_masks(ctx.cfg, key, [split.load_image(i) for i in ids], masks, list(ctx.class_names), captions=list(ids))
