"""pmm.predict on a folder of mixed images, and the VOC test-server export of stage=eval."""

from __future__ import annotations

import json
import os
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pmm.data.voc import VOC_CLASS_NAMES

CONF_DIR = Path(__file__).resolve().parents[1] / "src" / "pmm" / "conf"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Two shared cores: one torch thread is several times faster than two fighting for them."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> Path:
    """A segmenter checkpoint as stage=seg writes it (21 VOC classes, untrained tiny network)."""
    from pmm.seg.model import Segmenter
    from pmm.seg.module import SegModule

    torch.manual_seed(0)
    spec = {"_target_": "pmm.seg.model.Segmenter", "arch": "deeplabv3plus", "encoder": "tu-regnetx_002",
            "num_classes": 21, "decoder_channels": 8}
    net = Segmenter(**{k: v for k, v in spec.items() if k != "_target_"})
    with torch.no_grad():  # make the untrained network pick a few classes, not noise
        net.model.segmentation_head[0].bias.copy_(torch.linspace(0, 1, 21)[torch.randperm(21)] * 3)
    module = SegModule(net, optimizer=None, class_names=list(VOC_CLASS_NAMES), net_config=spec)
    path = tmp_path_factory.mktemp("ckpt") / "last.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams), "epoch": 0}, path)
    return path


def run_predict(argv: list[str]) -> int:
    """``python -m pmm.predict ARGV`` in this process (its config composed, its body run); the exit code."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    import pmm.predict as predict

    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        cfg = compose("predict", overrides=argv)
    GlobalHydra.instance().clear()
    try:
        predict.main.__wrapped__(cfg)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0


def mixed_folder(root: Path) -> dict[str, tuple[int, int]]:
    """Images of several sizes and modes (+ a corrupt one and a text file); name -> (height, width)."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    (root / "sub").mkdir()
    Image.fromarray(rng.integers(0, 255, (150, 200, 3), dtype=np.uint8)).save(root / "photo.jpg", quality=90)
    Image.fromarray(rng.integers(0, 255, (150, 200, 3), dtype=np.uint8)).save(root / "same_size.png")
    Image.fromarray(rng.integers(0, 255, (61, 97), dtype=np.uint8)).save(root / "grey.png")
    Image.fromarray(rng.integers(0, 255, (48, 64, 4), dtype=np.uint8)).save(root / "rgba.png")
    Image.fromarray(rng.integers(0, 255, (33, 40, 3), dtype=np.uint8)).save(root / "sub" / "small.bmp")
    (root / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    (root / "notes.txt").write_text("not an image, not looked at")
    return {"photo": (150, 200), "same_size": (150, 200), "grey": (61, 97), "rgba": (48, 64), "sub/small": (33, 40)}


def test_predict_writes_masks_overlays_and_shares(tiny_ckpt, tmp_path, caplog):
    import logging

    import pmm.predict as predict

    sizes = mixed_folder(tmp_path / "photos")
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO, logger="pmm"):
        code = run_predict([f"seg_ckpt={tiny_ckpt}", f"input={tmp_path / 'photos'}", f"output={out}", "num_workers=0",
                            "eval.flip=true"])
    assert code == 0, caplog.text
    warnings = [r for r in caplog.records if "corrupt.jpg" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelname == "WARNING", caplog.text
    assert "cannot be read" in warnings[0].getMessage() and "\n" not in warnings[0].getMessage()
    assert "pmm.predict: 5 image(s) ->" in caplog.text and "1 unreadable file(s) skipped" in caplog.text

    for name, size in sizes.items():
        with Image.open(out / "masks" / f"{name}.png") as mask:
            assert mask.mode == "P" and (mask.height, mask.width) == size, name
            assert mask.getpalette()[:6] == [0, 0, 0, 128, 0, 0]  # VOC colours
            values = np.asarray(mask)
        with Image.open(out / "overlays" / f"{name}.jpg") as overlay:
            assert overlay.mode == "RGB" and (overlay.height, overlay.width) == size
        shares = json.loads((out / "shares" / f"{name}.json").read_text())
        assert abs(sum(shares.values()) - 1) < 1e-4 and set(shares) <= set(VOC_CLASS_NAMES)

        expected = {VOC_CLASS_NAMES[c]: n / values.size for c, n in zip(*np.unique(values, return_counts=True))}
        assert shares == pytest.approx(expected, abs=1e-5)
    assert not (out / "masks" / "corrupt.png").exists() and not (out / "masks" / "notes.png").exists()

    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_images"] == 5 and summary["num_unreadable"] == 1
    assert summary["unreadable"][0]["input"].endswith("corrupt.jpg")
    assert [record["name"] for record in summary["images"]] == ["grey", "photo", "rgba", "same_size", "sub/small"]
    assert summary["class_names"][0] == "background" and summary["eval"]["flip"] is True
    assert abs(sum(summary["pixel_shares"].values()) - 1) < 1e-4


def test_predict_errors_are_one_line(tiny_ckpt, tmp_path, capfd):
    def error_of(*argv: str) -> str:
        code = run_predict([*argv, "num_workers=0"])
        err = capfd.readouterr().err
        lines = [line for line in err.splitlines() if line.startswith("pmm: error:")]
        assert code == 2 and len(lines) == 1, err
        return lines[0]

    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.png").write_bytes(b"")
    (tmp_path / "bad" / "b.jpg").write_bytes(b"garbage")
    (tmp_path / "text.ckpt").write_text("hello")
    out = f"output={tmp_path / 'out'}"
    assert "input=" in error_of(f"seg_ckpt={tiny_ckpt}", f"input={tmp_path / 'nowhere'}", out)
    assert "no such file or folder" in error_of(f"seg_ckpt={tiny_ckpt}", f"input={tmp_path / 'nowhere'}", out)
    assert "seg_ckpt=" in error_of(f"seg_ckpt={tmp_path / 'text.ckpt'}", f"input={tmp_path / 'bad'}", out)
    assert "seg_ckpt is not set" in error_of(f"input={tmp_path / 'bad'}", out)
    assert "output is not set" in error_of(f"seg_ckpt={tiny_ckpt}", f"input={tmp_path / 'bad'}")
    line = error_of(f"seg_ckpt={tiny_ckpt}", f"input={tmp_path / 'bad'}", out)
    assert "none of the 2 file(s) could be read" in line
    assert "eval.mode=diagonal" in error_of(f"seg_ckpt={tiny_ckpt}", f"input={tmp_path / 'bad'}", out, "eval.mode=diagonal")


def test_input_names_stay_distinct(tmp_path):
    from pmm.predict import collect_inputs

    for name in ("a.jpg", "a.png", "b.jpg"):
        Image.new("RGB", (4, 4)).save(tmp_path / name)
    (tmp_path / "other").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "other" / "b.jpg")
    found = collect_inputs([str(tmp_path / "a.jpg"), str(tmp_path / "a.png"), str(tmp_path / "b.jpg"),
                            str(tmp_path / "other" / "b.jpg"), str(tmp_path / "a.jpg")])
    assert [name for _, name in found] == ["a.jpg", "a.png", "b.jpg", "b.jpg-2"]
    assert [name for _, name in collect_inputs(str(tmp_path / "*.jpg"))] == ["a", "b"]


# ------------------------------------------------------------------------------------- VOC test export

def voc_test_tree(voc_copy: Path) -> list[str]:
    """A test split of 3 ids whose masks are absent (the VOC test set has none)."""
    ids = (voc_copy / "ImageSets/Segmentation/val.txt").read_text().split()[-3:]
    (voc_copy / "ImageSets/Segmentation/test.txt").write_text("\n".join(ids) + "\n")
    for image_id in ids:
        (voc_copy / "SegmentationClass" / f"{image_id}.png").unlink()
    return ids


def eval_context(voc_copy: Path, tmp_path: Path, tiny_ckpt: Path, *overrides: str):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from pmm.runtime.context import RunContext

    run_dir = tmp_path / "run"
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        cfg = compose("config", overrides=[
            "stage=eval", "data=voc", f"data.root={voc_copy}", "data.num_workers=0", "trainer=cpu", "logger=none",
            f"seg_ckpt={tiny_ckpt}", f"paths.root_dir={tmp_path}", f"paths.output_dir={run_dir}",
            f"paths.cache_dir={tmp_path / 'cache'}", *overrides])
    GlobalHydra.instance().clear()
    run_dir.mkdir(parents=True)
    return RunContext(cfg, run_dir), run_dir


def test_voc_test_export_without_ground_truth(voc_copy, tmp_path, tiny_ckpt, caplog):
    import logging

    from pmm.stages import eval as evaluate

    ids = voc_test_tree(voc_copy)
    ctx, run_dir = eval_context(voc_copy, tmp_path, tiny_ckpt, "data.val_split=test", "eval.export=voc_test")
    with caplog.at_level(logging.INFO, logger="pmm"):
        result = evaluate.run(ctx)
    assert result["val_scored"] is False and "val_miou" not in result
    assert "not scored" in caplog.text
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["val_scored"] is False and "val_miou" not in metrics
    assert not (run_dir / "eval_report.json").exists()

    folder = run_dir / "results/VOC2012/Segmentation/comp6_test_cls"
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{i}.png" for i in ids)
    for image_id in ids:
        with Image.open(voc_copy / "JPEGImages" / f"{image_id}.jpg") as image, Image.open(folder / f"{image_id}.png") as mask:
            assert mask.mode == "P" and mask.size == image.size
            assert int(np.asarray(mask).max()) < 21
    archive = run_dir / "results/voc2012_test_comp6.tar.gz"
    assert metrics["export_archive"] == str(archive)
    with tarfile.open(archive) as tar:
        files = sorted(m.name for m in tar.getmembers() if m.isfile())
        assert files == sorted(f"results/VOC2012/Segmentation/comp6_test_cls/{i}.png" for i in ids)
        data = tar.extractfile(files[0]).read()
    assert data == (folder / Path(files[0]).name).read_bytes()
    assert not [p for p in (run_dir / "results").rglob(".*")], "temporary files left behind"

    # A second export replaces the first one whole.
    (folder / "stale.png").write_bytes(b"old")
    evaluate.run(ctx)
    assert not (folder / "stale.png").exists()


def test_eval_with_masks_still_scores(voc_copy, tmp_path, tiny_ckpt):
    from pmm.errors import PmmError
    from pmm.stages import eval as evaluate

    (voc_copy / "ImageSets/Segmentation/val.txt").write_text(
        "\n".join((voc_copy / "ImageSets/Segmentation/val.txt").read_text().split()[:2]) + "\n")
    ctx, run_dir = eval_context(voc_copy, tmp_path, tiny_ckpt, "eval.figures=1")
    result = evaluate.run(ctx)
    assert result["val_scored"] is True and 0 <= result["val_miou"] <= 1
    assert json.loads((run_dir / "metrics.json").read_text())["val_scored"] is True
    assert not (run_dir / "results").exists()

    ctx, _ = eval_context(voc_copy, tmp_path / "x", tiny_ckpt, "eval.export=kitti")
    with pytest.raises(PmmError, match="eval.export=kitti: unknown export"):
        evaluate.run(ctx)


def test_stage_eval_command_exports(voc_copy, tmp_path, tiny_ckpt):
    import subprocess

    voc_test_tree(voc_copy)
    run_dir = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "pmm.run", "stage=eval", "data=voc", f"data.root={voc_copy}", "data.num_workers=0",
         "trainer=cpu", "logger=none", f"seg_ckpt={tiny_ckpt}", "data.val_split=test", "eval.export=voc_test",
         f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={run_dir}"],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "not scored" in done.stdout + done.stderr
    assert (run_dir / "results/voc2012_test_comp6.tar.gz").is_file()
    assert json.loads((run_dir / "metrics.json").read_text())["val_scored"] is False


def test_eval_with_some_masks_missing_scores_the_rest(voc_copy, tmp_path, tiny_ckpt, caplog):
    """One val mask missing: the others are scored, the missing id is named and counted (never silently unscored)."""
    import logging

    from pmm.stages import eval as evaluate

    ids = (voc_copy / "ImageSets/Segmentation/val.txt").read_text().split()[:4]
    (voc_copy / "ImageSets/Segmentation/val.txt").write_text("\n".join(ids) + "\n")
    (voc_copy / "SegmentationClass" / f"{ids[2]}.png").unlink()
    ctx, run_dir = eval_context(voc_copy, tmp_path, tiny_ckpt, "eval.figures=1")
    with caplog.at_level(logging.INFO, logger="pmm"):
        result = evaluate.run(ctx)
    assert result["val_scored"] is True and result["val_num_scored"] == 3 and result["val_unscored_ids"] == [ids[2]]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["val_num_scored"] == 3 and metrics["val_unscored_ids"] == [ids[2]] and 0 <= metrics["val_miou"] <= 1
    report = json.loads((run_dir / "eval_report.json").read_text())
    assert report["num_images"] == 3 and report["unscored_ids"] == [ids[2]]
    assert sorted(p.stem for p in (run_dir / "predictions" / "val").glob("*.png")) == sorted(ids)  # all predicted
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(f"1 of its 4 images have no ground-truth mask" in m and ids[2] in m for m in warned), caplog.text


def test_predict_large_photo_is_segmented_at_max_long(tiny_ckpt, tmp_path, voc_samples):
    """A photo longer than max_long: decoded and segmented small, its mask at the full size."""
    import pmm.predict as predict

    photos = tmp_path / "photos"
    photos.mkdir()
    with Image.open(voc_samples / "JPEGImages" / "voc_sample_00.jpg") as image:
        image.convert("RGB").resize((1200, 900)).save(photos / "big.jpg", quality=90)
    image, error, full = predict.read_image(photos / "big.jpg", max_long=300)
    assert error is None and full == (900, 1200) and image.shape == (225, 300, 3)
    out = tmp_path / "out"
    assert run_predict([f"seg_ckpt={tiny_ckpt}", f"input={photos}", f"output={out}", "num_workers=0", "max_long=300"]) == 0
    with Image.open(out / "masks" / "big.png") as mask, Image.open(out / "overlays" / "big.jpg") as overlay:
        assert mask.size == (1200, 900) and overlay.size == (300, 225)
    summary = json.loads((out / "summary.json").read_text())
    record = summary["images"][0]
    assert summary["max_long"] == 300 and (record["width"], record["height"]) == (1200, 900)
    assert record["segmented_at"] == {"width": 300, "height": 225}
