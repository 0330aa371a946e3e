"""PPMG images/s per dense-CRF backend against the reference loop, with agreement and mIoU.

Data: the 14 real photos of ``shared/data/voc_samples`` with CAMs made from their ground truth
(blurred distance maps of random sharpness, as ``tests/test_pseudo.py`` makes them); alpha is
calibrated from the CAMs' best background threshold (docs/method.md). Every backend runs PPMG on the same
inputs in this one process; times are process CPU seconds (all threads counted: "per core") and
wall seconds. Torch and OpenCV are held to one thread unless ``--threads`` says otherwise.

Also checked: the segmentation stage's multi-label CRF (pmm.crf.SEG_CRF, DeepLab's settings) on a
21-label softmax made from the ground truth, arg-max agreement with pydensecrf and mIoU.

    python benchmarks/bench_crf.py                 # markdown to stdout
    python benchmarks/bench_crf.py --profile       # plus where pydensecrf spends its time
    python benchmarks/bench_crf.py --backends pydensecrf fast

``benchmarks/run_all.py`` calls :func:`section` for ``benchmarks/RESULTS.md``.
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


def gt_softmax(mask: np.ndarray, seed: int, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """A segmenter-like L x H x W softmax from the ground truth: blurred one-hot logits plus smooth noise."""
    import cv2

    rng = np.random.default_rng(seed)
    height, width = mask.shape
    logits = np.zeros((num_classes, height, width), dtype=np.float32)
    noise = rng.standard_normal((num_classes, (height + 15) // 16, (width + 15) // 16)).astype(np.float32)
    for c in range(num_classes):
        onehot = (mask == c).astype(np.float32)
        logits[c] = 4.0 * cv2.GaussianBlur(onehot, (0, 0), 6.0) + 1.5 * cv2.resize(noise[c], (width, height))
    logits -= logits.max(axis=0, keepdims=True)
    probs = np.exp(logits)
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


def run_seg(samples: list[Sample], backend: str) -> Run:
    """The segmentation stage's multi-label CRF (SEG_CRF) on ground-truth softmaxes; arg-max label maps."""
    from pmm.crf import SEG_CRF, dense_crf

    params = SEG_CRF.with_backend(backend)
    probs = [gt_softmax(s.mask, seed=i) for i, s in enumerate(samples)]
    maps, cpu, wall = _timed(lambda: [dense_crf(s.image, p, params).argmax(axis=0).astype(np.uint8)
                                      for s, p in zip(samples, probs)])
    return Run(backend, cpu, wall, maps)


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
    import torch

    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)


def section(backends=DEFAULT_BACKENDS, repeats: int = 1, profile: bool = True, seg_images: int = 4,
            threads: int = 1) -> str:
    """The markdown section "Dense CRF / PPMG" of RESULTS.md."""
    import torch

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
    if seg_images:
        seg_samples = samples[:seg_images]
        seg_backends = [b for b in backends if b != REFERENCE]
        seg_ref = run_seg(seg_samples, REFERENCE)
        seg_ref_miou = score(seg_samples, seg_ref.maps)
        lines += [
            "",
            f"Segmentation-stage CRF (SEG_CRF, DeepLab's settings) on the first {len(seg_samples)} photos, a "
            "21-label softmax made from the ground truth (blurred one-hot logits + smooth noise), arg-max maps "
            "(the fast backend hands multi-label problems to pydensecrf):",
            "",
            "| backend | CPU s | images/s per core | agreement | mIoU | ΔmIoU |",
            "|---|---|---|---|---|---|",
            f"| {REFERENCE} | {seg_ref.cpu_s:.2f} | {len(seg_samples) / seg_ref.cpu_s:.2f} | 100 % | {seg_ref_miou:.4f} | +0.0000 |",
        ]
        for b in seg_backends:
            run = run_seg(seg_samples, b)
            miou = score(seg_samples, run.maps)
            lines.append(f"| {b} | {run.cpu_s:.2f} | {len(seg_samples) / run.cpu_s:.2f} | "
                         f"{100 * agreement(run.maps, seg_ref.maps):.3f} % | {miou:.4f} | {miou - seg_ref_miou:+.4f} |")
    if torch_backend is not None:
        torch_backend.device = None
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backends", nargs="+", default=list(DEFAULT_BACKENDS))
    parser.add_argument("--repeats", type=int, default=1, help="timing passes per backend (the fastest is kept)")
    parser.add_argument("--profile", action="store_true", help="also split the reference's time into stages")
    parser.add_argument("--seg-images", type=int, default=4, help="photos for the segmentation-settings check (0: skip)")
    parser.add_argument("--threads", type=int, default=1, help="torch / OpenCV threads")
    args = parser.parse_args(argv)
    print(section(args.backends, args.repeats, args.profile, args.seg_images, args.threads))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))
    raise SystemExit(main())
