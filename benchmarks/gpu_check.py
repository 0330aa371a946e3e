"""The CUDA paths in one short script: ``bash benchmarks/gpu_check.sh`` on a machine with one GPU.

Prints one table (and writes it to ``--out``, markdown):

- the paper presets' smoke (``stage=all debug=smoke``) on CUDA in bf16, each a subprocess: exit
  code, wall seconds, val mIoU (smoke figures only say that every stage ran);
- one training step of each paper network at full size (SEAM on ResNet-38, Res2Net-101 and, with
  ``--scalenet-structure``, ScaleNet-101 at 448; PSPNet on Res2Net-101 at 512) under bf16 autocast:
  seconds a step and peak GPU memory;
- CAM inference (the paper's scales and flips) and cyclic relabelling (segmenter + CRF on the
  GPU) in images per second;
- the torch CRF on the GPU against the ``fast`` backend on the CPU on the same problems (PPMG's
  two-label ones and the segmentation stage's multi-label ones): arg-max agreement and images/s.

Everything runs on data it makes itself (the embedded synthetic generator, written in the VOC
layout with ``train_aug``), with random weights: nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

PRESETS = ("voc_paper", "coco_paper", "[voc_paper,seam_multicrop]")
# --dry-run: every section on the CPU at toy sizes, to check the script itself where there is no GPU.
DRY = {"on": False}


def device_and_sizes(size: int) -> tuple["object", int]:
    import torch

    return (torch.device("cpu"), 64) if DRY["on"] else (torch.device("cuda"), size)


def synchronize() -> None:
    import torch

    if not DRY["on"]:
        torch.cuda.synchronize()


def autocast():
    import torch

    return torch.autocast("cpu" if DRY["on"] else "cuda", dtype=torch.bfloat16)


def make_tree(folder: Path, num_train: int = 12, num_val: int = 6, size: int = 160) -> tuple[Path, list[str]]:
    """A synthetic tree in VOC2012's layout as pmm.prepare writes it (train_aug = train, ...Aug masks)."""
    from pmm.data.synthetic import SYNTHETIC_CLASS_NAMES, ensure_synthetic

    root = folder / "VOC2012"
    ensure_synthetic(root, seed=0, num_train=num_train, num_val=num_val, image_size=size)
    lists = root / "ImageSets/Segmentation"
    shutil.copyfile(lists / "train.txt", lists / "train_aug.txt")
    if not (root / "SegmentationClassAug").exists():
        shutil.copytree(root / "SegmentationClass", root / "SegmentationClassAug")
    (root / "class_names.txt").write_text("\n".join(SYNTHETIC_CLASS_NAMES) + "\n")  # the COCO preset's class list
    return root, list(SYNTHETIC_CLASS_NAMES)


def run_smokes(root: Path, names: list[str], work: Path, timeout: int, presets) -> list[dict]:
    rows = []
    classes = "[" + ",".join(names) + "]"
    for preset in presets:
        run_dir = work / f"smoke_{preset.strip('[]').replace(',', '+')}"
        command = [sys.executable, "-m", "pmm.run", "stage=all", f"experiment={preset}", "debug=smoke",
                   f"data.root={root}", f"data.class_names={classes}", "trainer.accelerator=gpu",
                   "trainer.devices=1", "trainer.precision=bf16-mixed", "logger=csv", f"hydra.run.dir={run_dir}"]
        start = time.perf_counter()
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                                  env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
            code, tail = done.returncode, (done.stderr or done.stdout).strip().splitlines()[-1:] or [""]
        except subprocess.TimeoutExpired:
            code, tail = "timeout", [f"over {timeout} s"]
        seconds = time.perf_counter() - start
        metrics = json.loads((run_dir / "metrics.json").read_text()) if (run_dir / "metrics.json").is_file() else {}
        rows.append({"check": f"smoke {preset} (CUDA, bf16)", "result": "ok" if code == 0 else f"exit {code}",
                     "figure": f"{seconds:.0f} s, val_miou {metrics.get('val_miou', float('nan')):.3f}",
                     "note": "" if code == 0 else tail[0][:120]})
    return rows


def _timed_steps(step, repeats: int = 3) -> float:
    step()  # warm-up: cuDNN autotuning, allocator
    synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def network_steps(batch: int, scalenet_structure: str | None) -> list[dict]:
    """One SGD step of each paper network at full size, bf16 autocast: seconds and peak memory."""
    import torch
    import torch.nn.functional as F

    from pmm.cam.seam import SEAMNet
    from pmm.seg.model import Segmenter

    device, _ = device_and_sizes(0)
    cases = [("SEAM ResNet-38 (448)", lambda: SEAMNet(backbone="resnet38d", num_classes=20, pretrained=False,
                                                       output_stride=8, out_index=-1, dropout=0.5), 448, "cam"),
             ("SEAM Res2Net-101 (448)", lambda: SEAMNet(backbone="res2net101_26w_4s", num_classes=20,
                                                         pretrained=False, output_stride=8, out_index=-1), 448, "cam")]
    if scalenet_structure:
        from pmm.nets.scalenet import read_structure

        structure = read_structure(scalenet_structure, config_key="--scalenet-structure")
        cases.append(("SEAM ScaleNet-101 (448)", lambda: SEAMNet(backbone="scalenet101", num_classes=20,
                                                                 pretrained=False, output_stride=8, out_index=-1,
                                                                 structure=structure), 448, "cam"))
    cases.append(("PSPNet Res2Net-101 (512)", lambda: Segmenter(arch="pspnet", encoder="tu-res2net101d", num_classes=21,
                                                                pretrained=False, aux=True), 512, "seg"))
    rows = []
    for name, build, size, kind in cases:
        size = device_and_sizes(size)[1]
        if not DRY["on"]:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        net = optimizer = None
        try:
            net = build().to(device).train()
            optimizer = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)
            images = torch.rand(batch, 3, size, size, device=device)
            labels = (torch.rand(batch, 20, device=device) > 0.8).float()
            labels[:, 0] = 1
            masks = torch.randint(0, 21, (batch, size, size), device=device)

            def step():
                optimizer.zero_grad(set_to_none=True)
                with autocast():
                    if kind == "cam":
                        loss = net.training_loss({"image": images, "label": labels})["total"]
                    else:
                        out = net(images)
                        loss = F.cross_entropy(out["out"], masks) + 0.4 * F.cross_entropy(out["aux"], masks)
                loss.backward()
                optimizer.step()

            seconds = _timed_steps(step, 1 if DRY["on"] else 3)
            peak = 0.0 if DRY["on"] else torch.cuda.max_memory_allocated() / 2**30
            rows.append({"check": f"train step {name}, batch {batch}", "result": "ok",
                         "figure": f"{seconds * 1000:.0f} ms/step, peak {peak:.1f} GiB", "note": ""})
        except Exception as error:  # noqa: BLE001 - the table reports every failure and goes on
            rows.append({"check": f"train step {name}, batch {batch}", "result": "failed", "figure": "",
                         "note": f"{type(error).__name__}: {str(error).splitlines()[0][:120]}"})
        finally:
            net = optimizer = None
    return rows


def inference_rates(count: int) -> list[dict]:
    """CAM inference (ResNet-38 SEAM, the paper's 4 scales + flips) and relabelling (PSPNet + torch CRF) images/s."""
    import dataclasses

    from pmm.cam.seam import SEAMNet
    from pmm.crf import SEG_CRF
    from pmm.nets.tta import TTAConfig, tta_over_images
    from pmm.seg.inference import segment_images
    from pmm.seg.model import Segmenter

    device, width = device_and_sizes(500)
    height = width * 366 // 500
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (height, width, 3), dtype=np.uint8) for _ in range(count)]
    rows = []
    cam = SEAMNet(backbone="resnet38d", num_classes=20, pretrained=False, output_stride=8, out_index=-1).to(device).eval()
    tta = TTAConfig(scales=(0.5, 1.0, 1.5, 2.0), flip=True)
    with autocast():
        tta_over_images(cam.cams, images[:1], tta, activation="relu", reduce="sum", batch_size=1, device=device)
        synchronize()
        start = time.perf_counter()
        tta_over_images(cam.cams, images, tta, activation="relu", reduce="sum", batch_size=1, device=device)
        synchronize()
    rate = count / (time.perf_counter() - start)
    rows.append({"check": "CAM inference, ResNet-38 SEAM, scales 0.5-2 + flip, 500x366", "result": "ok",
                 "figure": f"{rate:.1f} images/s", "note": ""})
    seg = Segmenter(arch="pspnet", encoder="tu-res2net101d", num_classes=21, pretrained=False, aux=True).to(device).eval()
    crf = dataclasses.replace(SEG_CRF, backend="torch")
    labels = [[1, 15] for _ in images]
    with autocast():
        segment_images(seg, images[:1], labels[:1], tta=TTAConfig(flip=True), crf=crf, batch_size=1, device=device)
        synchronize()
        start = time.perf_counter()
        segment_images(seg, images, labels, tta=TTAConfig(flip=True), crf=crf, batch_size=4, device=device)
        synchronize()
    rate = count / (time.perf_counter() - start)
    rows.append({"check": "relabelling, PSPNet Res2Net-101 + flip + torch CRF (GPU), 500x366", "result": "ok",
                 "figure": f"{rate:.1f} images/s", "note": ""})
    return rows


def crf_agreement(count: int) -> list[dict]:
    """The torch CRF on the GPU against ``fast`` on the CPU: PPMG's K two-label problems and seg's L-label ones."""
    import dataclasses

    from pmm.crf import PSEUDO_CRF, SEG_CRF, dense_crf_batch

    rng = np.random.default_rng(1)
    _, width = device_and_sizes(500)
    height, top, bottom, left, right = width * 366 // 500, width // 5, width // 2, width * 3 // 10, width * 7 // 10
    rows = []
    for label, params, pairs in (("PPMG (3 two-label problems)", PSEUDO_CRF, True),
                                 ("segmentation (one 4-label problem)", SEG_CRF, False)):
        agree = total = 0
        seconds = {"torch": 0.0, "fast": 0.0}
        for _ in range(count):
            image = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
            image[top:bottom, left:right] = (200, 40, 40)
            logits = rng.normal(size=(3 if pairs else 4, height, width)).astype(np.float32)
            logits[1:, top:bottom, left:right] += 1.5
            if pairs:
                fg = 1 / (1 + np.exp(-logits))
                probs = np.stack([np.stack([1 - f, f]) for f in fg])
            else:
                e = np.exp(logits - logits.max(0))
                probs = (e / e.sum(0))[None]
            out = {}
            for backend in ("torch", "fast"):
                start = time.perf_counter()
                out[backend] = dense_crf_batch(image, probs, dataclasses.replace(params, backend=backend))
                seconds[backend] += time.perf_counter() - start
            agree += int((out["torch"].argmax(1) == out["fast"].argmax(1)).sum())
            total += out["fast"].argmax(1).size
        rows.append({"check": f"CRF torch (GPU) vs fast (CPU), {label}", "result": "ok",
                     "figure": f"agreement {agree / total:.4%}; {count / seconds['torch']:.1f} vs "
                               f"{count / seconds['fast']:.1f} images/s", "note": "500x366 images"})
    return rows


def print_table(rows: list[dict], out: Path | None) -> None:
    lines = ["| check | result | figure | note |", "|---|---|---|---|"]
    lines += [f"| {r['check']} | {r['result']} | {r['figure']} | {r['note']} |" for r in rows]
    text = "\n".join(lines)
    print(text)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8, help="images a training step (the paper: 8 per GPU)")
    parser.add_argument("--images", type=int, default=8, help="images of each inference / CRF measurement")
    parser.add_argument("--smoke-timeout", type=int, default=150, help="seconds each preset smoke may take")
    parser.add_argument("--presets", default=",".join(PRESETS).replace("],", "];"),
                        help="';'-separated presets to smoke (default: all three)")
    parser.add_argument("--scalenet-structure", default=None, help="scalenet101.json (the official structure file) "
                        "for the ScaleNet-101 step; without it that row is skipped")
    parser.add_argument("--skip", default="", help="comma-separated sections to skip: smoke,steps,inference,crf")
    parser.add_argument("--out", type=Path, default=None, help="also write the table here (markdown)")
    parser.add_argument("--dry-run", action="store_true", help="every section but the smokes on the CPU at toy sizes "
                        "(checks the script where there is no GPU; its figures mean nothing)")
    args = parser.parse_args(argv)
    import torch

    DRY["on"] = args.dry_run
    if args.dry_run:
        args.skip += ",smoke"
        args.batch, args.images = 1, 1
    elif not torch.cuda.is_available():
        print("gpu_check: no CUDA device visible (torch.cuda.is_available() is False); run it on a GPU machine",
              file=sys.stderr)
        return 2
    skip = set(filter(None, args.skip.split(",")))
    if args.dry_run:
        rows = [{"check": "device", "result": "ok", "figure": "CPU (dry run)", "note": f"torch {torch.__version__}"}]
    else:
        properties = torch.cuda.get_device_properties(0)
        rows = [{"check": "device", "result": "ok",
                 "figure": f"{properties.name}, {properties.total_memory / 2**30:.0f} GiB",
                 "note": f"torch {torch.__version__}, CUDA {torch.version.cuda}, bf16 {torch.cuda.is_bf16_supported()}"}]
    with tempfile.TemporaryDirectory(prefix="pmm-gpu-check-") as work:
        work = Path(work)
        root, names = make_tree(work)
        sections = [("smoke", lambda: run_smokes(root, names, work, args.smoke_timeout, args.presets.split(";"))),
                    ("steps", lambda: network_steps(args.batch, args.scalenet_structure)),
                    ("inference", lambda: inference_rates(args.images)),
                    ("crf", lambda: crf_agreement(args.images))]
        for name, section in sections:
            if name in skip:
                continue
            start = time.perf_counter()
            try:
                rows += section()
            except Exception as error:  # noqa: BLE001 - one failed section must not hide the others
                rows.append({"check": name, "result": "failed", "figure": "",
                             "note": f"{type(error).__name__}: {str(error).splitlines()[0][:120]}"})
            print(f"gpu_check: {name} done in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    print_table(rows, args.out)
    return 0 if all(r["result"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
