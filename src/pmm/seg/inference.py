"""Segmenter inference: class probabilities through the TTA module, optional dense-CRF refinement,
label maps of images and of a split written to a folder (cyclic relabelling, evaluation, pmm.predict)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from pmm.crf import SEG_CRF, CRFParams
from pmm.io import save_mask
from pmm.nets.tta import TTAConfig, tta_maps, tta_over_images, tta_over_images_and_single


def logits_fn(net):
    """The segmenter as a maps function for the TTA module (its main head's logits)."""
    return lambda x: net(x)["out"]


def size_multiple(net) -> int:
    """SMP models need inputs divisible by 2**depth (the encoder's total stride)."""
    depth = getattr(getattr(net, "model", None), "encoder", None)
    depth = getattr(depth, "_depth", None)
    return 2 ** int(depth) if depth else 32


@torch.no_grad()
def predict_probs(net, images: torch.Tensor, tta: TTAConfig = TTAConfig()) -> torch.Tensor:
    """Softmax probabilities averaged over the TTA variants: N x C x H x W for N x 3 x H x W images in [0, 1]."""
    from dataclasses import replace

    return tta_maps(logits_fn(net), images, replace(tta, size_multiple=size_multiple(net)), activation="softmax",
                    reduce="mean")


def predict_image_probs(net, images: Sequence[np.ndarray], tta: TTAConfig = TTAConfig(), batch_size: int = 16,
                        device: torch.device | str = "cpu") -> list[np.ndarray]:
    """C x H x W probabilities for H x W x 3 uint8 images of any sizes (equal sizes batched)."""
    from dataclasses import replace

    maps = tta_over_images(logits_fn(net), images, replace(tta, size_multiple=size_multiple(net)),
                           activation="softmax", reduce="mean", batch_size=batch_size, device=device)
    return [m.numpy() for m in maps]


def restrict_to_labels(probs: np.ndarray, labels: Sequence[int]) -> np.ndarray:
    """Zero every class but background and the image-level ``labels``, then renormalise.

    The training images' labels are the weak supervision itself, so predictions for them may use it.
    """
    keep = np.zeros(probs.shape[0], dtype=bool)
    keep[0] = True
    keep[list(labels)] = True
    restricted = np.where(keep[:, None, None], probs, 0.0)
    return restricted / np.clip(restricted.sum(axis=0, keepdims=True), 1e-8, None)


# The CRF backends whose solver releases the GIL (numba nogil kernels): the images of a batch are
# refined on several threads at once, each independently, so the masks do not depend on the count.
THREADED_CRF_BACKENDS = ("fast",)


def crf_threads(crf: CRFParams | bool | None, count: int) -> int:
    """Threads for refining ``count`` images: torch's intra-op thread count (the cores the forward
    passes use, idle while the CRF runs) for a GIL-free backend, else 1."""
    if crf is None or crf is False or count < 2:
        return 1
    backend = SEG_CRF.backend if crf is True else crf.backend
    if backend not in THREADED_CRF_BACKENDS:
        return 1
    return max(1, min(count, torch.get_num_threads()))


def map_images(job, count: int, threads: int) -> list:
    """``[job(i) for i in range(count)]``, on ``threads`` threads when more than one (order kept)."""
    if threads <= 1:
        return [job(i) for i in range(count)]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(job, range(count)))


def probs_to_mask(image: np.ndarray, probs: np.ndarray, crf: CRFParams | None = None) -> np.ndarray:
    """Label map from C x H x W probabilities, optionally refined by a dense CRF (``crf.seg``) over the classes in play."""
    if crf is None or crf is False:
        return probs.argmax(axis=0).astype(np.uint8)
    if crf is True:
        crf = SEG_CRF
    from pmm.crf import dense_crf

    # The CRF runs on the classes that have any probability mass: fewer labels, same result.
    active = np.flatnonzero(probs.reshape(probs.shape[0], -1).max(axis=1) > 1e-3)
    if active.size == 1:
        return np.full(probs.shape[1:], active[0], dtype=np.uint8)
    refined = dense_crf(image, probs[active], crf)
    return active[refined.argmax(axis=0)].astype(np.uint8)


def segment_images(
    net,
    images: list[np.ndarray],
    labels: Sequence[Sequence[int]] | None = None,
    tta: TTAConfig = TTAConfig(),
    crf: CRFParams | None = None,
    batch_size: int = 16,
    device: torch.device | str = "cpu",
) -> list[np.ndarray]:
    """Label maps for H x W x 3 uint8 images through the TTA module; equal-size images run as one batch.

    ``labels`` (the image-level labels) restricts each prediction to background + those classes;
    ``crf`` (``crf.seg``) refines each averaged softmax with a dense CRF.
    """
    probs = predict_image_probs(net, images, tta, batch_size=batch_size, device=device)

    def mask(position: int) -> np.ndarray:
        image_probs = probs[position]
        if labels is not None:
            image_probs = restrict_to_labels(image_probs, labels[position])
        return probs_to_mask(images[position], image_probs, crf=crf)

    return map_images(mask, len(probs), crf_threads(crf, len(probs)))


def protocol_masks(image: np.ndarray, wanted: Sequence[str], ss_probs: np.ndarray | None,
                   ms_probs: np.ndarray | None, crf: CRFParams | None, custom_probs: np.ndarray | None = None,
                   custom_crf: bool = False) -> dict[str, np.ndarray]:
    """Label maps of one image under each ``wanted`` protocol, from its C x H x W softmaxes.

    ``ss_probs`` / ``ms_probs`` are the single- and multi-scale probabilities (None when no protocol
    needs them); ``custom_probs`` is a custom headline's.
    """
    masks = {}
    for name in wanted:
        if name == "ss":
            masks[name] = probs_to_mask(image, ss_probs)
        elif name == "ms":
            masks[name] = probs_to_mask(image, ms_probs)
        elif name == "ms_crf":
            masks[name] = probs_to_mask(image, ms_probs, crf=crf)
        else:
            masks[name] = probs_to_mask(image, custom_probs, crf=crf if custom_crf else None)
    return masks


def segment_images_protocols(net, images: list[np.ndarray], plan, batch_size: int = 16,
                             device: torch.device | str = "cpu") -> list[dict[str, np.ndarray]]:
    """Label maps of H x W x 3 uint8 images under every protocol of ``plan`` (:mod:`pmm.seg.protocols`).

    One multi-scale + flip pass gives the ``ms`` softmax and, from its scale-1 unflipped variant,
    the ``ss`` one; ``ms_crf`` refines the ``ms`` softmax. Only a protocol the multi-scale pass does
    not cover (no scale 1 among ``eval.ms_scales``, multi-crop mode, a custom headline) runs its own pass.
    """
    from dataclasses import replace

    from pmm.seg.protocols import CUSTOM

    fn, multiple = logits_fn(net), size_multiple(net)
    count = len(images)
    ss: list = [None] * count
    ms: list = [None] * count
    custom: list = [None] * count
    if plan.needs_ms:
        pairs = tta_over_images_and_single(fn, images, replace(plan.ms_tta, size_multiple=multiple),
                                           activation="softmax", reduce="mean", batch_size=batch_size, device=device,
                                           keep_single=plan.shares_ss and "ss" in plan.wanted)
        ms = [combined.numpy() for combined, _ in pairs]
        if plan.shares_ss:
            ss = [None if single is None else single.numpy() for _, single in pairs]
    if "ss" in plan.wanted and not plan.shares_ss:
        ss = predict_image_probs(net, images, plan.ss_tta, batch_size=batch_size, device=device)
    if plan.headline == CUSTOM:
        custom = predict_image_probs(net, images, plan.headline_tta, batch_size=batch_size, device=device)
    with_crf = "ms_crf" in plan.wanted or (plan.headline == CUSTOM and plan.headline_crf)
    return map_images(lambda i: protocol_masks(images[i], plan.wanted, ss[i], ms[i], plan.crf, custom[i],
                                               plan.headline_crf),
                      count, crf_threads(plan.crf if with_crf else None, count))


def predict_split_to_folder(
    net,
    split,
    ids: Sequence[str],
    folder: Path,
    batch_size: int = 16,
    use_labels: bool = True,
    progress: bool = True,
    **options,
) -> None:
    """Write ``folder/<id>.png`` for ``ids`` (this rank's shard) with :func:`segment_images`."""
    was_training = net.training
    net.eval()
    try:
        for start in tqdm(range(0, len(ids), batch_size), desc=f"predicting {folder.name}", disable=not progress, leave=False):
            chunk = ids[start : start + batch_size]
            images = [split.load_image(i) for i in chunk]
            labels = [split.labels(i) for i in chunk] if use_labels else None
            for image_id, mask in zip(chunk, segment_images(net, images, labels, batch_size=batch_size, **options)):
                save_mask(folder / f"{image_id}.png", mask)
    finally:
        net.train(was_training)
