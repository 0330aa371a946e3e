"""``stage=pseudo``: CAMs -> (CoV) -> PPMG / CRF / argmax pseudo-masks, written and scored.

Writes ``pseudo_masks/round_0/<id>.png`` (VOC palette) for every image of ``pseudo.split``;
the CRF work runs in a process pool, and under DDP each rank takes its own shard of ids.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
from functools import partial
from pathlib import Path

import numpy as np

from pmm.runtime.context import RunContext
from pmm.crf import CRFParams
from pmm.runtime.distributed import barrier, is_main, run_sharded
from pmm.runtime.pool import run_pool
from pmm.runtime.tracking import log_mask_panel
from pmm.errors import PmmError
from pmm.scoring.masks import score_mask_folder
from pmm.scoring.metrics import confusion_matrix, mean_iou
from pmm.io import load_cams, load_image, save_mask, write_json
from pmm.pseudo import alpha_from_threshold, cov_smooth, make_pseudo_mask
from pmm.stages.cam_import import import_cams
from pmm.stages.cam_inference import can_score, infer_cams, load_cam_module, score_cams

log = logging.getLogger("pmm")


def _make_one(image_id: str, image_path: str, cams_path: str, output_path: str, settings: dict) -> str:
    """Pool task: one image's pseudo-mask, written atomically. Module-level so it pickles."""
    cams, labels = load_cams(cams_path)
    mask = make_pseudo_mask(settings["method"], load_image(image_path), cams, labels, **settings["options"])
    save_mask(output_path, mask)
    return image_id


def search_sample(ids: list[str], count: int) -> list[str]:
    """``count`` ids spread evenly over the split (all of them when it is smaller): the same on every run."""
    if len(ids) <= count:
        return list(ids)
    return [ids[int(i * len(ids) / count)] for i in range(count)]


def search_alpha(ctx: RunContext, split_name: str, options: dict) -> tuple[float, dict[str, float]]:
    """``pseudo.alpha=search``: the candidate whose pseudo-masks score best on a sample of the split.

    The sample is scored against its ground truth, as the CAM stage's t* is: alpha is a calibration
    of the CAMs to the images (textured objects need a stronger background than solid ones), which
    t* alone does not capture. Ties go to the smaller alpha. Returns the alpha and each candidate's mIoU.
    """
    cfg = ctx.cfg.pseudo
    split = ctx.split(split_name).with_masks()
    candidates = sorted({float(a) for a in cfg.alpha_candidates})
    sample = search_sample(list(split.ids), int(cfg.alpha_search_images))
    num_classes = len(ctx.class_names)
    matrices = {a: np.zeros((num_classes, num_classes), np.int64) for a in candidates}
    from tqdm.auto import tqdm

    for image_id in tqdm(sample, desc="alpha search", leave=False, disable=not is_main()):
        image = split.load_image(image_id)
        target = split.load_mask(image_id)
        cams, labels = load_cams(ctx.cams_dir(split_name) / f"{image_id}.npz")
        for alpha in candidates:
            mask = make_pseudo_mask(cfg.method, image, cams, labels, **dict(options, alpha=alpha))
            matrices[alpha] += confusion_matrix(mask, target, num_classes)
    scores = {a: mean_iou(m) for a, m in matrices.items()}
    best = max(candidates, key=lambda a: (scores[a], -a))
    log.info("alpha search on %d '%s' images: %s -> alpha %.2f", len(sample), split_name,
             ", ".join(f"{a:g}: {scores[a]:.3f}" for a in candidates), best)
    return best, {f"{a:g}": round(scores[a], 6) for a in candidates}


def resolve_alpha(ctx: RunContext, threshold: float | None) -> float:
    """``pseudo.alpha``: a number, or ``auto`` = ln(t*)/ln(1-t*) of the CAM stage's best threshold
    (``search`` is resolved by :func:`search_alpha`, which needs the CAMs and masks).

    ``threshold``: t*, or without ground truth ``pseudo.bg_threshold`` (None when that is ``auto`` too).
    """
    alpha = ctx.cfg.pseudo.alpha
    if alpha == "auto":
        if threshold is None:
            raise PmmError("pseudo.alpha=auto derives alpha from the CAM threshold t*, which needs ground-truth masks "
                           "(none here); set pseudo.bg_threshold=T (e.g. 0.3) to stand for t*, or pseudo.alpha to a number")
        low, high = ctx.cfg.pseudo.alpha_range
        return alpha_from_threshold(threshold, low=low, high=high)
    try:
        return float(alpha)
    except (TypeError, ValueError):
        raise PmmError(f"pseudo.alpha={alpha}: expected a number, 'auto' or 'search'") from None


def reuse_cams(ctx: RunContext, split_name: str) -> None:
    """Link the CAMs another split of this run already holds (VOC train is part of train_aug)."""
    folder = ctx.cams_dir(split_name)
    others = [p for p in ctx.cams_root.glob("*") if p.is_dir() and p != folder]
    for image_id in ctx.split(split_name).ids:
        target = folder / f"{image_id}.npz"
        if target.is_file():
            continue
        for other in others:
            source = other / f"{image_id}.npz"
            if source.is_file():
                folder.mkdir(parents=True, exist_ok=True)
                try:
                    os.link(source, target)
                except OSError:
                    shutil.copyfile(source, target)
                break


def ensure_cams(ctx: RunContext, split_name: str) -> None:
    """CAMs of the split: this run's own files (of any split), or inferred now with ``cam_ckpt``."""
    folder = ctx.cams_dir(split_name)
    split = ctx.split(split_name)
    if not ctx.cfg.cam_ckpt and is_main():
        reuse_cams(ctx, split_name)
    barrier()
    complete = folder.is_dir() and all((folder / f"{i}.npz").is_file() for i in split.ids)
    if complete and not ctx.cfg.cam_ckpt:
        return
    checkpoint = ctx.cfg.cam_ckpt or ctx.checkpoint_dir("cam") / "last.ckpt"
    log.info("inferring CAMs of '%s' with %s", split_name, checkpoint)
    infer_cams(ctx, load_cam_module(ctx, checkpoint), split_name)


def already_written(path: Path) -> bool:
    """A finished mask of an earlier run (``pseudo.resume``): present and decodable."""
    from pmm.io import mask_decodes

    return path.is_file() and mask_decodes(path)


def pseudo_splits(ctx: RunContext) -> list[str]:
    """``pseudo.split``: one split name or a list (masks for all, each scored; the first is the headline)."""
    value = ctx.cfg.pseudo.split
    names = [value] if isinstance(value, str) else list(value)
    if not names:
        raise PmmError("pseudo.split=[]: expected a split name or a list of them, e.g. [train_aug, train]")
    return list(dict.fromkeys(str(n) for n in names))


def write_round_zero(ctx: RunContext, split_names: list[str], ids: list[str], settings: dict) -> None:
    """Write the round-0 pseudo-masks of ``ids`` (this rank's shard) with a process pool."""
    owner = {}
    for name in split_names:  # an id's image and CAMs are read through the first split that lists it
        for image_id in ctx.split(name).ids:
            owner.setdefault(image_id, name)
    output = ctx.round_dir(0)
    output.mkdir(parents=True, exist_ok=True)
    todo = [i for i in ids if not (ctx.cfg.pseudo.resume and already_written(output / f"{i}.png"))]
    tasks = [(i, str(ctx.split(owner[i]).image_path(i)), str(ctx.cams_dir(owner[i]) / f"{i}.npz"),
              str(output / f"{i}.png")) for i in todo]
    run_pool(partial(_star_make_one, settings=settings), tasks, int(ctx.cfg.pseudo.workers),
             desc=f"pseudo-masks ({settings['method']})", show_progress=is_main())


def _star_make_one(task: tuple, settings: dict) -> str:
    return _make_one(*task, settings=settings)


def save_pseudo_figures(ctx: RunContext, split_name: str, folder: Path, settings: dict) -> None:
    from pmm import viz
    from pmm.io import load_mask

    split = ctx.split(split_name)
    rows = []
    for image_id in split.ids[: ctx.cfg.pseudo.figures]:
        image = split.load_image(image_id)
        cams, labels = load_cams(ctx.cams_dir(split_name) / f"{image_id}.npz")
        if len(labels):
            peak = cams.max(axis=0)
            smooth = cov_smooth(cams, ctx.cfg.pseudo.cov_scale, ctx.cfg.pseudo.cov_threshold).max(axis=0)
        else:
            peak = smooth = np.zeros(image.shape[:2], np.float32)
        rows.append([
            ("image", image),
            ("CAM (max over classes)", viz.overlay_cam(image, peak)),
            ("CoV", viz.overlay_cam(image, smooth)),
            (f"pseudo-mask ({settings['method']})", viz.colorize_mask(load_mask(folder / f"{image_id}.png"))),
            *([("ground truth", viz.colorize_mask(split.load_mask(image_id)))] if split.has_mask(image_id) else []),
        ])
    viz.save_panel(ctx.figures_dir / "pseudo_panel.png", rows, title=f"pseudo-masks, round 0 ({split_name})")
    log_mask_panel(ctx, "pseudo_masks/round_0", split_name, folder)


def check_without_truth(ctx: RunContext, t_star_known: bool) -> None:
    """One-line errors, before any work, for the settings that need ground truth when ``pseudo.split`` has none.

    ``pseudo.alpha=search`` scores candidates against masks; ``pseudo.alpha=auto`` and the argmax
    method's ``pseudo.bg_threshold=auto`` take the CAM stage's t*, found against masks too (unless
    ``t_star_known``: an earlier CAM stage of this run found it). ``pseudo.bg_threshold=T`` stands for t*.
    """
    cfg = ctx.cfg.pseudo
    split = ctx.split(pseudo_splits(ctx)[0])
    if split.with_masks().ids:
        return
    if cfg.alpha == "search" and cfg.method != "argmax":
        raise PmmError(f"pseudo.alpha=search scores each candidate against ground-truth masks, and split "
                       f"'{split.split}' has none; set pseudo.alpha to a number (the paper: 11), or pseudo.alpha=auto "
                       "with pseudo.bg_threshold=T (e.g. 0.3)")
    if t_star_known or cfg.bg_threshold != "auto":
        return
    if cfg.alpha == "auto" and cfg.method != "argmax":
        raise PmmError(f"pseudo.alpha=auto derives alpha from the CAM threshold t*, which needs ground-truth masks "
                       f"and split '{split.split}' has none; set pseudo.bg_threshold=T (e.g. 0.3) to stand for t*, or "
                       "pseudo.alpha to a number")
    if cfg.method == "argmax":
        raise PmmError(f"pseudo.method=argmax: pseudo.bg_threshold=auto takes the CAM threshold t*, which needs "
                       f"ground-truth masks and split '{split.split}' has none; set pseudo.bg_threshold=T (e.g. 0.3)")


def run(ctx: RunContext) -> dict:
    cfg = ctx.cfg.pseudo
    split_names = pseudo_splits(ctx)
    split_name = split_names[0]
    metrics = ctx.read_metrics()
    check_without_truth(ctx, "cam_bg_threshold" in metrics and not ctx.cfg.cam_ckpt and not cfg.get("cams"))
    cams_source = import_cams(ctx, split_names)  # pseudo.cams: another code base's CAMs, as this run's own
    metrics = ctx.read_metrics()  # the import's threshold sweep, when the split has masks
    for name in split_names:
        ensure_cams(ctx, name)
    if ("cam_bg_threshold" not in metrics or ctx.cfg.cam_ckpt) and can_score(ctx, split_name, "CAM threshold sweep (t*)"):
        scores = score_cams(ctx, split_name)
        ctx.record(**{k: v for k, v in scores.items() if k != "cam_per_class_iou"})
        metrics.update(scores)
    # t*: the CAM stage's best threshold; without ground truth there is none and pseudo.bg_threshold stands for it.
    threshold = float(metrics["cam_bg_threshold"]) if "cam_bg_threshold" in metrics else None
    bg_threshold = threshold if cfg.bg_threshold == "auto" else float(cfg.bg_threshold)
    crf = CRFParams.from_config(ctx.cfg.crf.pseudo, "crf.pseudo")
    options = dict(cov=bool(cfg.cov), cov_scale=float(cfg.cov_scale), threshold=float(cfg.cov_threshold),
                   crf=crf, **({"bg_threshold": bg_threshold} if bg_threshold is not None else {}))
    alpha_scores = None
    if cfg.alpha == "search" and cfg.method != "argmax":
        # Every rank searches the same sample (deterministic), so no broadcast is needed.
        alpha, alpha_scores = search_alpha(ctx, split_name, options)
    else:
        t_star = threshold if threshold is not None else bg_threshold
        alpha = resolve_alpha(ctx, t_star) if cfg.alpha != "search" else 1.0  # argmax ignores alpha
    settings = {"method": cfg.method, "options": dict(options, alpha=alpha)}
    log.info("pseudo-masks: method=%s cov=%s alpha=%.2f (CAM threshold t*=%s) on split(s) %s, CRF backend %s",
             cfg.method, cfg.cov, alpha, "none" if threshold is None else f"{threshold:.2f}", ", ".join(split_names),
             crf.backend)
    folder = ctx.round_dir(0)
    all_ids = list(dict.fromkeys(i for name in split_names for i in ctx.split(name).ids))

    def score() -> dict:
        if not can_score(ctx, split_name, "pseudo-mask scores (pseudo_miou)"):
            return unscored()
        reports = {}
        for name in split_names:
            if not ctx.split(name).with_masks().ids:
                continue
            reports[name] = score_mask_folder(ctx.split(name).with_masks(), folder,
                                              desc=f"scoring pseudo-masks ({name})")
            log.info("pseudo-mask mIoU on '%s' (%d images, round 0): %.4f", name, reports[name]["num_images"],
                     reports[name]["miou"])
        report = dict(reports[split_name])
        report.update(method=cfg.method, cov=bool(cfg.cov), alpha=alpha, round=0, folder=str(folder),
                      by_split={name: r for name, r in reports.items()}, **cams_source)
        write_json(ctx.report_path("pseudo"), report)
        save_pseudo_figures(ctx, split_name, folder, settings)
        from pmm import viz

        viz.save_iou_bars(ctx.figures_dir / "pseudo_iou.png", list(ctx.class_names),
                          [report["per_class_iou"][n] for n in ctx.class_names], title=f"pseudo-mask IoU ({split_name})")
        result = {
            "pseudo_miou": report["miou"],
            "pseudo_miou_rounds": [report["miou"]],
            "pseudo_split": split_name,
            "pseudo_miou_by_split": {name: r["miou"] for name, r in reports.items()},
            "pseudo_method": cfg.method,
            "pseudo_cov": bool(cfg.cov),
            "pseudo_alpha": alpha,
            "pseudo_scored": True,
        }
        if alpha_scores is not None:
            result["pseudo_alpha_search"] = alpha_scores
        ctx.record(**result)
        log.info("pseudo-mask mIoU on '%s' (round 0): %.4f  [CAM argmax: %.4f]", split_name, report["miou"],
                 metrics.get("cam_miou", math.nan))
        return result

    def unscored() -> dict:
        """No ground truth: the masks are written and drawn, not scored."""
        write_json(ctx.report_path("pseudo"), {"scored": False, "method": cfg.method, "cov": bool(cfg.cov),
                                               "alpha": alpha, "round": 0, "folder": str(folder)})
        save_pseudo_figures(ctx, split_name, folder, settings)
        result = {"pseudo_scored": False, "pseudo_split": split_name, "pseudo_method": cfg.method,
                  "pseudo_cov": bool(cfg.cov), "pseudo_alpha": alpha}
        ctx.record(remove=("pseudo_miou", "pseudo_miou_rounds", "pseudo_miou_by_split", "pseudo_alpha_search"), **result)
        return result

    return run_sharded(all_ids, lambda ids: write_round_zero(ctx, split_names, ids, settings), score) or {}
