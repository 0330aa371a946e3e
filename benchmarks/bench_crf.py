"""PPMG images/s per dense-CRF backend against the reference loop, with agreement and mIoU.

Data: the 14 real photos of ``shared/data/voc_samples`` with CAMs made from their ground truth
(blurred distance maps of random sharpness, as ``tests/test_pseudo.py`` makes them); alpha is
calibrated from the CAMs' best background threshold (docs/method.md). Every backend runs PPMG on the same
inputs in this one process; times are process CPU seconds (all threads counted: "per core") and
wall seconds. Torch and OpenCV are held to one thread unless ``--threads`` says otherwise.

Second section: the segmentation stage's multi-label CRF (pmm.crf.SEG_CRF, DeepLab's settings) run
as the stage runs it (``pmm.seg.inference.probs_to_mask``), on segmenter-like softmaxes made from the
photos' ground truth (:func:`segmenter_logits`) or, with ``--seg-run RUN_DIR``, on a pmm run's val
images with its trained segmenter's softmax: CPU seconds per image, arg-max agreement with
pydensecrf, mIoU before and after the CRF.

Third section (``--only rough``): the multi-crop round's rough masks (``crf.rough`` of the shipped
config, one CRF over ``[(1 - max S) ** 24, S]`` per photo) on the same photos and CAMs: agreement of
the arg-max maps and of the "marginal > 0.9" maps with pydensecrf, mIoU.

Every section measures against ``crf backend=pydensecrf``, the exact reference loop, so this script
needs the optional extra: ``pip install "pmm[pydensecrf]"`` (included in ``.[dev]``). Without it
the script stops with that line, and ``run_all.py`` leaves its sections out.

    python benchmarks/bench_crf.py                 # markdown to stdout
    python benchmarks/bench_crf.py --profile       # plus where pydensecrf spends its time
    python benchmarks/bench_crf.py --backends pydensecrf fast
    python benchmarks/bench_crf.py --only seg --repeats 3
    python benchmarks/bench_crf.py --only seg --seg-run outputs/my_run --seg-images 50
    python benchmarks/bench_crf.py --only rough --backends fast

``benchmarks/run_all.py`` calls :func:`section` and :func:`seg_section` for ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
VOC_SAMPLES = ROOT.parent / "shared" / "data" / "voc_samples"
REFERENCE = "pydensecrf"
DEFAULT_BACKENDS = ("pydensecrf", "fast", "torch")
NUM_CLASSES = 21
ROUGH_ALPHA = 24.0  # cam.multi_crop.rough_alpha
ROUGH_CONFIDENCE = 0.9  # cam.multi_crop.rough_confidence of the seam_multicrop preset


class ReferenceMissing(RuntimeError):
    """The exact reference (crf backend=pydensecrf) cannot run here; the message says what to install."""


def require_reference() -> None:
    """Raise :class:`ReferenceMissing` when pydensecrf2 (the ``pmm[pydensecrf]`` extra) is not importable."""
    from pmm.crf.pydensecrf_backend import unavailable_reason

    reason = unavailable_reason()
    if reason is not None:
        raise ReferenceMissing(f"bench_crf.py measures every backend against crf backend=pydensecrf, the exact "
                               f"reference loop: {reason}; pip install \"pmm[pydensecrf]\" (included in .[dev])")


def gt_cams(mask: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stride-16-like CAMs from a ground-truth mask (the recipe of tests/test_pseudo.py)."""
    import cv2

    rng = np.random.default_rng(seed)
    height, width = mask.shape
    small_size = ((width + 15) // 16, (height + 15) // 16)
    labels = np.array([c for c in np.unique(mask) if c not in (0, 255)], dtype=np.int64)
    cams = []
    for c in labels:
        dist = cv2.distanceTransform((mask == c).astype(np.uint8), cv2.DIST_L2, 5)
        sharpness = float(np.exp(rng.uniform(np.log(0.3), np.log(1.5))))
        soft = (dist / max(float(dist.max()), 1e-8)) ** sharpness
        small = cv2.GaussianBlur(cv2.resize(soft, small_size, interpolation=cv2.INTER_AREA), (0, 0), 1.0)
        noise = cv2.GaussianBlur(rng.standard_normal(small.shape).astype(np.float32), (0, 0), 1.0)
        cam = np.clip(cv2.resize(small + 0.15 * noise, (width, height), interpolation=cv2.INTER_LINEAR), 0, None)
        cams.append((cam - cam.min()) / max(float(cam.max() - cam.min()), 1e-8))
    return np.stack(cams).astype(np.float32), labels


def segmenter_logits(mask: np.ndarray, seed: int, num_classes: int = NUM_CLASSES, stride: int = 8) -> np.ndarray:
    """Segmenter-like L x H x W logits from a ground-truth mask, seeded: what a DeepLab at output stride 8 gets wrong.

    The one-hot ground truth (boundary pixels given their nearest class) is area-averaged to the
    stride-8 grid (logit 7 inside a class, 0 outside; classes absent from the image at -9), plus
    low-frequency noise (a 1/64-scale field per class, std 2.5 for the image's classes, 1 for the
    others), one or two wrong-class blobs (a Gaussian bump of logit 9, radius 24-56 px, of a present
    or a random class), a blur of one stride-8 cell, and bilinear upsampling (the blurred
    boundaries). The arg-max mIoU on the voc_samples photos is about 0.8, and the dense CRF mends
    the boundaries as it does on real predictions.
    """
    import cv2

    rng = np.random.default_rng(seed)
    height, width = mask.shape
    labels = mask.copy()
    unknown = labels == 255
    if unknown.any() and not unknown.all():
        _, nearest = cv2.distanceTransformWithLabels(unknown.astype(np.uint8), cv2.DIST_L2, 5,
                                                     labelType=cv2.DIST_LABEL_PIXEL)
        known_rows, known_cols = np.nonzero(~unknown)
        lookup = np.zeros(int(nearest.max()) + 1, dtype=np.uint8)
        lookup[nearest[known_rows, known_cols]] = labels[known_rows, known_cols]
        labels = lookup[nearest]
    small_h, small_w = (height + stride - 1) // stride, (width + stride - 1) // stride
    present = [int(c) for c in np.unique(labels) if c < num_classes]
    logits = np.full((num_classes, small_h, small_w), -9.0, dtype=np.float32)
    for c in present:
        logits[c] = 7.0 * cv2.resize((labels == c).astype(np.float32), (small_w, small_h), interpolation=cv2.INTER_AREA)
    for c in range(num_classes):
        field = rng.standard_normal((max(small_h // 8, 2), max(small_w // 8, 2))).astype(np.float32)
        logits[c] += (2.5 if c in present else 1.0) * cv2.resize(field, (small_w, small_h), interpolation=cv2.INTER_CUBIC)
    rows, cols = np.mgrid[0:small_h, 0:small_w]
    for _ in range(int(rng.integers(1, 3))):
        c = int(rng.choice(present)) if rng.random() < 0.5 else int(rng.integers(1, num_classes))
        y, x, radius = rng.uniform(0, small_h), rng.uniform(0, small_w), rng.uniform(3, 7)
        logits[c] += 9.0 * np.exp(-((rows - y) ** 2 + (cols - x) ** 2) / (2 * radius**2)).astype(np.float32)
    logits = cv2.GaussianBlur(logits.transpose(1, 2, 0), (0, 0), 1.0)
    full = cv2.resize(logits, (width, height), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(full.reshape(height, width, num_classes).transpose(2, 0, 1))


def segmenter_softmax(mask: np.ndarray, seed: int, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """:func:`segmenter_logits` through a softmax (float32 C x H x W)."""
    logits = segmenter_logits(mask, seed, num_classes)
    probs = np.exp(logits - logits.max(axis=0, keepdims=True))
    return probs / probs.sum(axis=0, keepdims=True)


@dataclass
class Sample:
    image: np.ndarray
    mask: np.ndarray
    cams: np.ndarray
    labels: np.ndarray


def load_samples(root: Path = VOC_SAMPLES) -> list[Sample]:
    from pmm.io import load_image, load_mask

    paths = sorted((root / "JPEGImages").glob("*.jpg"))
    if not paths:
        raise SystemExit(f"{root}: no voc_samples photos (the checkout must sit beside shared/)")
    samples = []
    for index, path in enumerate(paths):
        mask = load_mask(root / "SegmentationClass" / f"{path.stem}.png")
        cams, labels = gt_cams(mask, seed=index)
        samples.append(Sample(load_image(path), mask, cams, labels))
    return samples


def calibrated_alpha(samples: list[Sample]) -> tuple[float, float]:
    """(best background threshold of the CAMs' arg-max pseudo-masks, the alpha it implies)."""
    from pmm.scoring.metrics import confusion_matrix, mean_iou
    from pmm.pseudo.ppmg import alpha_from_threshold, cam_argmax

    best = (-1.0, 0.5)
    for t in np.round(np.arange(0.02, 0.90, 0.01), 2):
        cm = sum(confusion_matrix(cam_argmax(s.cams, s.labels, t), s.mask, NUM_CLASSES) for s in samples)
        best = max(best, (mean_iou(cm), float(t)))
    return best[1], alpha_from_threshold(best[1])


@dataclass
class Run:
    backend: str
    cpu_s: float
    wall_s: float
    maps: list = field(default_factory=list)


def _timed(fn):
    cpu, wall = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.process_time() - cpu, time.perf_counter() - wall


def run_ppmg(samples: list[Sample], backend: str, alpha: float, repeats: int = 1) -> Run:
    """PPMG over all samples with one backend; the fastest of ``repeats`` passes."""
    from pmm.crf import PSEUDO_CRF
    from pmm.pseudo.ppmg import ppmg

    params = PSEUDO_CRF.with_backend(backend)
    ppmg(samples[0].image, samples[0].cams, samples[0].labels, alpha=alpha, crf=params)  # warm-up: imports
    best = None
    for _ in range(max(1, repeats)):
        maps, cpu, wall = _timed(lambda: [ppmg(s.image, s.cams, s.labels, alpha=alpha, crf=params) for s in samples])
        if best is None or cpu < best.cpu_s:
            best = Run(backend, cpu, wall, maps)
    return best


def run_seg(images: list[np.ndarray], probs: list[np.ndarray], backend: str, repeats: int = 1) -> Run:
    """The segmentation stage's CRF (SEG_CRF) as the stage runs it (``probs_to_mask``: the classes with
    probability mass only); arg-max label maps, the fastest of ``repeats`` passes."""
    from pmm.crf import SEG_CRF
    from pmm.seg.inference import probs_to_mask

    params = SEG_CRF.with_backend(backend)
    probs_to_mask(images[0], probs[0], params)  # warm-up: imports, compiled code
    best = None
    for _ in range(max(1, repeats)):
        maps, cpu, wall = _timed(lambda: [probs_to_mask(image, p, params) for image, p in zip(images, probs)])
        if best is None or cpu < best.cpu_s:
            best = Run(backend, cpu, wall, maps)
    return best


def crf_labels(probs: np.ndarray) -> int:
    """Labels of the CRF problem ``probs_to_mask`` solves (the classes with probability mass)."""
    return int(np.count_nonzero(probs.reshape(probs.shape[0], -1).max(axis=1) > 1e-3))


def seg_section_lines(images: list[np.ndarray], masks: list[np.ndarray], probs: list[np.ndarray], backends,
                      repeats: int, source: str) -> list[str]:
    """The segmentation-stage table: CPU s per image, speed-up, agreement and mIoU before / after the CRF."""
    from pmm.scoring.metrics import confusion_matrix, mean_iou

    def miou(maps):
        return mean_iou(sum(confusion_matrix(m, mask, NUM_CLASSES) for m, mask in zip(maps, masks)))

    n = len(images)
    before = miou([p.argmax(axis=0).astype(np.uint8) for p in probs])
    labels = [crf_labels(p) for p in probs]
    runs = {b: run_seg(images, probs, b, repeats) for b in dict.fromkeys([REFERENCE, *backends])}
    reference = runs[REFERENCE]
    ref_miou = miou(reference.maps)
    lines = [
        "",
        f"Segmentation-stage CRF (`crf.seg`, DeepLab's settings: Gaussian 1/3, bilateral 67/3/4, 10 iterations) "
        f"on {n} images, {source}; run as the stage runs it (`probs_to_mask`: a CRF over the classes with "
        f"probability mass, {min(labels)}-{max(labels)} labels, mean {np.mean(labels):.1f}). mIoU before the CRF "
        f"(arg-max of the softmax): {before:.4f}. CPU s / image = process CPU seconds (fastest of {max(1, repeats)} "
        "passes); agreement = share of pixels whose label equals the reference loop's.",
        "",
        "| backend | CPU s / image | speed-up per core | agreement | mIoU before CRF | mIoU after CRF | ΔmIoU |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in runs.values():
        after = miou(run.maps)
        lines.append(f"| {run.backend} | {run.cpu_s / n:.3f} | {reference.cpu_s / run.cpu_s:.2f}x | "
                     f"{100 * agreement(run.maps, reference.maps):.3f} % | {before:.4f} | {after:.4f} | "
                     f"{after - ref_miou:+.4f} |")
    return lines


def rough_settings():
    """``crf.rough`` of the shipped config (``src/pmm/conf/crf/default.yaml``): what the multi-crop round runs."""
    from omegaconf import OmegaConf

    import pmm
    from pmm.crf import CRFParams

    node = OmegaConf.load(Path(pmm.__file__).parent / "conf" / "crf" / "default.yaml").rough
    return CRFParams.from_config(OmegaConf.to_container(node), "crf.rough")


def run_rough(samples: list[Sample], backend: str, alpha: float = ROUGH_ALPHA, confidence: float = ROUGH_CONFIDENCE,
              repeats: int = 1) -> tuple[Run, list[np.ndarray]]:
    """The multi-crop round's rough masks with one backend, as the stage makes them (one CRF over
    ``[(1 - max S) ** alpha, S]``, ``pmm.pseudo``'s): (arg-max maps with the fastest of ``repeats``
    passes' times, the "marginal > confidence" maps with 255 elsewhere)."""
    from pmm.pseudo.ppmg import _multi_label_crf

    params = rough_settings().with_backend(backend)

    def one(sample: Sample) -> tuple[np.ndarray, np.ndarray]:
        q, lut = _multi_label_crf(sample.image, sample.cams, sample.labels, alpha, params)
        best = q.argmax(axis=0)
        return lut[best], np.where(q.max(axis=0) > confidence, lut[best], np.uint8(255)).astype(np.uint8)

    one(samples[0])  # warm-up: imports, compiled code
    best = None
    for _ in range(max(1, repeats)):
        out, cpu, wall = _timed(lambda: [one(s) for s in samples])
        if best is None or cpu < best[0].cpu_s:
            best = (Run(backend, cpu, wall, [a for a, _ in out]), [b for _, b in out])
    return best


def rough_section(backends=("fast",), repeats: int = 1, threads: int = 1) -> str:
    """The markdown section "Dense CRF: rough masks" (the multi-crop round's ``crf.rough``)."""
    require_reference()
    _limit_threads(threads)
    samples = load_samples()
    n = len(samples)
    labels = [len(s.labels) + 1 for s in samples]
    before = score(samples, [np.concatenate([[0], s.labels]).astype(np.uint8)[
        np.concatenate([((1 - s.cams.max(axis=0)) ** ROUGH_ALPHA)[None], s.cams]).argmax(axis=0)] for s in samples])
    runs = {b: run_rough(samples, b, repeats=repeats) for b in dict.fromkeys([REFERENCE, *backends])}
    reference, reference_sure = runs[REFERENCE]
    ref_miou = score(samples, reference.maps)
    params = rough_settings()
    lines = [
        "## Dense CRF: rough masks",
        "",
        f"The multi-crop round's rough masks (`crf.rough`: Gaussian {params.gauss_sxy:g}/{params.gauss_compat:g}, "
        f"bilateral {params.bilateral_sxy:g}/{params.bilateral_srgb:g}/{params.bilateral_compat:g}, "
        f"{params.iterations} iterations) on the {n} voc_samples photos (513 x 513) with CAMs from the ground "
        f"truth: one CRF over `[(1 - max S) ** {ROUGH_ALPHA:g}, S]` per photo ({min(labels)}-{max(labels)} labels). "
        f"mIoU before the CRF (arg-max of those scores): {before:.4f}. agreement = share of pixels whose "
        f"arg-max label equals the reference loop's; sure-map agreement: the same for the maps of labels "
        f"whose marginal exceeds {ROUGH_CONFIDENCE:g}, 255 elsewhere. CPU s = process CPU seconds "
        f"(fastest of {max(1, repeats)} passes), threads: {threads}.",
        "",
        "| backend | CPU s / image | speed-up per core | agreement | mIoU | ΔmIoU | sure-map agreement | unsure pixels |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for run, sure in runs.values():
        miou = score(samples, run.maps)
        unsure = np.mean([(m == 255).mean() for m in sure])
        lines.append(f"| {run.backend} | {run.cpu_s / n:.3f} | {reference.cpu_s / run.cpu_s:.2f}x | "
                     f"{100 * agreement(run.maps, reference.maps):.3f} % | {miou:.4f} | {miou - ref_miou:+.4f} | "
                     f"{100 * agreement(sure, reference_sure):.3f} % | {100 * unsure:.2f} % |")
    return "\n".join(lines) + "\n"


def voc_sample_softmaxes(samples: list[Sample]) -> list[np.ndarray]:
    return [segmenter_softmax(s.mask, seed=i) for i, s in enumerate(samples)]


def score(samples: list[Sample], maps: list[np.ndarray]) -> float:
    from pmm.scoring.metrics import confusion_matrix, mean_iou

    return mean_iou(sum(confusion_matrix(m, s.mask, NUM_CLASSES) for s, m in zip(samples, maps)))


def agreement(maps: list[np.ndarray], reference: list[np.ndarray]) -> float:
    same = sum(int((a == b).sum()) for a, b in zip(maps, reference))
    return same / sum(r.size for r in reference)


def profile_reference(samples: list[Sample], alpha: float) -> dict[str, float]:
    """CPU seconds of pydensecrf's stages over PPMG's two-label problems."""
    import pydensecrf.densecrf as dcrf

    from pmm.crf import PSEUDO_CRF as P
    from pmm.crf import unary_from_probs
    from pmm.pseudo.cov import cov_smooth

    stages = dict.fromkeys(("setup + unary", "Gaussian lattice", "bilateral lattice", "10 iterations"), 0.0)
    problems = 0
    for s in samples:
        smoothed = cov_smooth(s.cams).astype(np.float64)
        unaries = unary_from_probs(np.stack([(1.0 - smoothed) ** alpha, smoothed], axis=1))
        height, width = s.image.shape[:2]
        for unary in unaries:
            problems += 1
            t0 = time.process_time()
            crf = dcrf.DenseCRF2D(width, height, 2)
            crf.setUnaryEnergy(np.ascontiguousarray(unary.reshape(2, -1)))
            t1 = time.process_time()
            crf.addPairwiseGaussian(sxy=P.gauss_sxy, compat=P.gauss_compat)
            t2 = time.process_time()
            crf.addPairwiseBilateral(sxy=P.bilateral_sxy, srgb=P.bilateral_srgb, rgbim=s.image, compat=P.bilateral_compat)
            t3 = time.process_time()
            crf.inference(P.iterations)
            t4 = time.process_time()
            for key, dt in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                stages[key] += dt
    return {"problems": problems, **stages}


def _limit_threads(threads: int) -> None:
    import cv2
    import numba
    import torch

    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))


def section(backends=DEFAULT_BACKENDS, repeats: int = 1, profile: bool = True, threads: int = 1) -> str:
    """The markdown section "Dense CRF / PPMG" of RESULTS.md."""
    import torch

    require_reference()
    _limit_threads(threads)
    samples = load_samples()
    best_t, alpha = calibrated_alpha(samples)
    n = len(samples)
    problems = sum(len(s.labels) for s in samples)
    torch_backend = None
    if "torch" in backends:
        from pmm.crf import get_crf_backend

        torch_backend = get_crf_backend("torch")
        torch_backend.device = "cpu"  # the table's rows are CPU rows; the GPU gets its own below
    runs = [run_ppmg(samples, b, alpha, repeats) for b in backends]
    gpu_run = None
    if torch_backend is not None and torch.cuda.is_available():
        torch_backend.device = "cuda"
        run_ppmg(samples[:2], "torch", alpha)  # warm-up: CUDA context, kernels
        torch.cuda.synchronize()
        gpu_run = run_ppmg(samples, "torch", alpha, repeats)
        gpu_run.backend = f"torch on {torch.cuda.get_device_name()}"
        torch_backend.device = "cpu"
    reference = next((r for r in runs if r.backend == REFERENCE), None)
    if reference is None:
        reference = run_ppmg(samples, REFERENCE, alpha, repeats)
    ref_miou = score(samples, reference.maps)

    lines = [
        "## Dense CRF: PPMG images/s per backend",
        "",
        f"{n} voc_samples photos (513 x 513), CAMs from the ground truth, alpha = {alpha:.2f} "
        f"(best arg-max threshold {best_t:.2f}); {problems} two-label CRF problems, pydensecrf's "
        f"pseudo-mask settings (10 iterations). Torch/OpenCV threads: {threads}. images/s per core = "
        "images / process CPU seconds; agreement = share of pixels whose PPMG label equals the reference "
        "loop's; mIoU over the 14 ground-truth masks (one confusion matrix).",
        "",
        "| backend | CPU s | wall s | images/s per core | speed-up per core | agreement | mIoU | ΔmIoU |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for run in runs + ([gpu_run] if gpu_run else []):
        miou = score(samples, run.maps)
        lines.append(
            f"| {run.backend} | {run.cpu_s:.2f} | {run.wall_s:.2f} | {n / run.cpu_s:.2f} | "
            f"{reference.cpu_s / run.cpu_s:.2f}x | {100 * agreement(run.maps, reference.maps):.3f} % | "
            f"{miou:.4f} | {miou - ref_miou:+.4f} |"
        )
    if gpu_run:
        lines += ["", f"GPU row: wall {gpu_run.wall_s:.2f} s = {n / gpu_run.wall_s:.1f} images/s (after a warm-up)."]
    if profile:
        stages = profile_reference(samples, alpha)
        count = stages.pop("problems")
        total = sum(stages.values())
        lines += [
            "",
            f"Where the reference loop spends its time ({count} problems, CPU ms per problem):",
            "",
            "| stage | ms / problem | share |",
            "|---|---|---|",
        ]
        lines += [f"| {k} | {1000 * v / count:.1f} | {100 * v / total:.0f} % |" for k, v in stages.items()]
    if torch_backend is not None:
        torch_backend.device = None
    return "\n".join(lines) + "\n"


def seg_section(backends=DEFAULT_BACKENDS, repeats: int = 1, images: int = 14, threads: int = 1,
                run_dir: str | Path | None = None) -> str:
    """The markdown section "Dense CRF: segmentation stage" of RESULTS.md.

    ``run_dir``: take the softmaxes of that pmm run's trained segmenter on its val images instead of
    the voc_samples photos' made-up ones (:func:`run_softmaxes`).
    """
    require_reference()
    _limit_threads(threads)
    torch_backend = None
    if "torch" in backends:
        from pmm.crf import get_crf_backend

        torch_backend = get_crf_backend("torch")
        torch_backend.device = "cpu"
    try:
        if run_dir is None:
            samples = load_samples()[:images]
            inputs = ([s.image for s in samples], [s.mask for s in samples], voc_sample_softmaxes(samples))
            source = ("the voc_samples photos (513 x 513) with segmenter-like softmaxes made from their ground "
                      "truth (`segmenter_logits`: stride-8 logits, low-frequency noise, one or two wrong-class "
                      "blobs, blurred boundaries; seeded)")
        else:
            inputs = run_softmaxes(Path(run_dir), images)
            source = f"the val images of the run `{Path(run_dir).name}` with its segmenter's softmax (one scale, no flip)"
        lines = ["## Dense CRF: segmentation stage", *seg_section_lines(*inputs, backends, repeats, source),
                 "", f"Torch/OpenCV/numba threads: {threads}."]
    finally:
        if torch_backend is not None:
            torch_backend.device = None
    return "\n".join(lines) + "\n"


def run_softmaxes(run_dir: Path, limit: int) -> tuple[list, list, list]:
    """(images, ground-truth masks, softmaxes) of up to ``limit`` val images of a pmm run.

    The run's segmenter (``checkpoints/seg/last.ckpt``) predicts its val split (the dataset of the
    run's ``.hydra/config.yaml``), at one scale without flipping; images without a ground-truth
    mask are skipped.
    """
    import torch
    from omegaconf import OmegaConf

    from pmm.errors import PmmError
    from pmm.nets.build import build_from_spec
    from pmm.seg.inference import predict_image_probs
    from pmm.seg.model import load_segmenter

    checkpoint = run_dir / "checkpoints" / "seg" / "last.ckpt"
    config_path = run_dir / ".hydra" / "config.yaml"
    for path, what in ((checkpoint, "a trained segmenter (stage=seg)"), (config_path, "the run's config")):
        if not path.is_file():
            raise PmmError(f"--seg-run {run_dir}: {path} is missing; give a run folder with {what}")
    from pmm.io import load_image, load_mask
    from pmm.nets.build import DEFAULT_TARGETS

    cfg = OmegaConf.load(config_path)
    # The run's paths name Hydra's runtime (${hydra:runtime.cwd}), which only exists inside a run: put
    # back the values that run had, from its .hydra/hydra.yaml.
    hydra_file = run_dir / ".hydra" / "hydra.yaml"
    if hydra_file.is_file():
        runtime = OmegaConf.select(OmegaConf.load(hydra_file), "hydra.runtime") or {}
        for key, value in (("root_dir", runtime.get("cwd")), ("output_dir", runtime.get("output_dir"))):
            if value and OmegaConf.select(cfg, "paths") is not None:
                cfg.paths[key] = str(value)
    try:
        spec = OmegaConf.to_container(cfg.data, resolve=True)
        cache_dir = OmegaConf.select(cfg, "paths.cache_dir")
    except Exception as error:  # noqa: BLE001 - any interpolation failure is the same user error
        raise PmmError(f"--seg-run {run_dir}: {config_path} cannot be resolved outside its run ({error})") from None
    spec.setdefault("_target_", DEFAULT_TARGETS["data"])
    spec["cache_dir"] = cache_dir
    dataset = build_from_spec(spec, "data")
    dataset.prepare()
    split = dataset.split(dataset.val_split_name)
    images, masks = [], []
    for image_id in split.ids[:limit]:
        images.append(load_image(split.image_path(image_id)))
        masks.append(load_mask(split.mask_path(image_id)))
    if not images:
        raise PmmError(f"--seg-run {run_dir}: the run's val split has no image with a ground-truth mask")
    net, _, _ = load_segmenter(checkpoint)
    with torch.inference_mode():
        probs = predict_image_probs(net.eval(), images, batch_size=4)
    return images, masks, [p.astype(np.float32) for p in probs]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backends", nargs="+", default=list(DEFAULT_BACKENDS))
    parser.add_argument("--repeats", type=int, default=1, help="timing passes per backend (the fastest is kept)")
    parser.add_argument("--profile", action="store_true", help="also split the reference's time into stages")
    parser.add_argument("--only", choices=("ppmg", "seg", "rough"), help="one section (default: all three)")
    parser.add_argument("--seg-images", type=int, default=14, help="images for the segmentation-stage section")
    parser.add_argument("--seg-run", metavar="RUN_DIR",
                        help="segmentation section on that run's val images and its segmenter's softmax")
    parser.add_argument("--threads", type=int, default=1, help="torch / OpenCV / numba threads")
    args = parser.parse_args(argv)
    try:
        require_reference()
    except ReferenceMissing as error:
        print(f"bench_crf: error: {error}", file=sys.stderr)
        return 2
    if args.only in (None, "ppmg"):
        print(section(args.backends, args.repeats, args.profile, args.threads))
    if args.only in (None, "seg"):
        print(seg_section(args.backends, args.repeats, args.seg_images, args.threads, args.seg_run))
    if args.only in (None, "rough"):
        print(rough_section([b for b in args.backends if b != REFERENCE], args.repeats, args.threads))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))
    raise SystemExit(main())
