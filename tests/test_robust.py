"""Where researchers trip: config typos, trainer settings the machine cannot run, lossy or empty masks,
images that are not .jpg, two runs in one folder, Ctrl-C, partial ground truth, huge photos.

Each case ends in one line with the exit code pmm documents (2 for bad input, 130 for Ctrl-C) and
no traceback. The command-line cases run ``python -m pmm.run`` in a subprocess; those stop before
any training, except the Ctrl-C one (slow).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from PIL import Image

import pmm
from pmm.data.voc import load_voc_split
from pmm.errors import PmmError
from pmm.io import load_mask

CONF_DIR = str(Path(pmm.__file__).parent / "conf")
SRC = str(Path(pmm.__file__).resolve().parents[1])


def pmm_cli(args: list[str], tmp_path: Path, module: str = "pmm.run", env: dict | None = None,
            timeout: int = 300) -> subprocess.CompletedProcess:
    environment = {key: value for key, value in os.environ.items() if key != "HYDRA_FULL_ERROR"}
    environment.update({"PMM_DATA_DIR": str(tmp_path / "data"), "OMP_NUM_THREADS": "1",
                        "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), **(env or {})})
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, env=environment,
                          cwd=tmp_path, timeout=timeout)


def one_error_line(result: subprocess.CompletedProcess, code: int = 2) -> str:
    assert result.returncode == code, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("pmm: error:")]
    assert len(lines) == 1, result.stderr[-3000:]
    return lines[0]


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message, message
    return message


# ------------------------------------------------------------------------------------- config typos

@pytest.mark.parametrize(
    ("override", "words"),
    [
        ("pseudo.alpah=3", "pmm: error: pseudo.alpah=3: there is no key pseudo.alpah in the config; "
                           "did you mean pseudo.alpha?"),
        ("data=vco", "pmm: error: data=vco: config group data has no option 'vco' (options: coco, folder, synthetic, voc); "
                     "did you mean data=voc?"),
        ("+pseudo.alpah=3", "pmm: error: +pseudo.alpah=3: pmm never reads pseudo.alpah (not a key of its config); "
                            "did you mean pseudo.alpha?"),
        ("seg.loss.mode=[clamp", "pmm: error: seg.loss.mode=[clamp: not an override Hydra can read"),
    ],
)
def test_config_typo_is_one_line_with_the_closest_key(tmp_path, override, words):
    result = pmm_cli([override, f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert one_error_line(result).startswith(words)
    assert not (tmp_path / "run").exists()


def test_hydra_full_error_keeps_hydras_own_report(tmp_path):
    result = pmm_cli(["pseudo.alpah=3"], tmp_path, env={"HYDRA_FULL_ERROR": "1"})
    assert result.returncode == 1 and "Traceback" in result.stderr and "ConfigCompositionException" in result.stderr


def test_predict_typo_is_one_line(tmp_path):
    result = pmm_cli(["seg_ckpt=x.ckpt", "input=photos", "outptu=out"], tmp_path, module="pmm.predict")
    assert one_error_line(result) == "pmm: error: outptu=out: there is no key outptu in the config; did you mean output?"


@pytest.fixture
def compose_run():
    """Compose pmm.run's config as the command line does (hydra node and its task overrides included)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=CONF_DIR):
        yield lambda overrides: compose("config", overrides=overrides, return_hydra_config=True)
    GlobalHydra.instance().clear()


@pytest.mark.parametrize("overrides", [
    ["+trainer.gradient_clip_val=1.0"],                                     # a Lightning Trainer argument
    ["+cam_ckpt=runs/a/last.ckpt"],                                          # a key of the config (null)
    ["+logger.tb._target_=pytorch_lightning.loggers.TensorBoardLogger", "+logger.tb.save_dir=tb"],
    ["+callbacks.cam.stop._target_=pytorch_lightning.callbacks.EarlyStopping", "+callbacks.cam.stop.monitor=val/mAP"],
    ["+hydra.job.env_set.PMM_FLAG=1"],                                       # Hydra's own keys
    ["experiment=voc_paper", "+trainer.gradient_clip_val=0.5"],             # a preset, then an argument
])
def test_added_keys_that_something_reads_are_accepted(compose_run, overrides):
    from pmm.runtime.config_check import check_added_keys

    check_added_keys(compose_run(overrides), "config")


@pytest.mark.parametrize(("override", "message"), [
    ("+pseudo.alpah=3", "+pseudo.alpah=3: pmm never reads pseudo.alpah (not a key of its config); did you mean pseudo.alpha?"),
    ("+trainer.gradient_clip_vale=1", "+trainer.gradient_clip_vale=1: pytorch_lightning.Trainer takes no argument "
                                      "gradient_clip_vale; did you mean trainer.gradient_clip_val?"),
    ("+cam.optimizer.momentum=0.9", "+cam.optimizer.momentum=0.9: torch.optim.AdamW takes no argument momentum"),
    ("+data.crop=64", "+data.crop=64: pmm.data.sources.SyntheticDataset takes no argument crop"),
    ("+seg.extra.lr=1", "+seg.extra.lr=1: pmm never reads seg.extra.lr"),
])
def test_added_keys_pmm_never_reads_are_refused(compose_run, override, message):
    from pmm.runtime.config_check import check_added_keys

    with pytest.raises(PmmError) as error:
        check_added_keys(compose_run([override]), "config")
    assert one_line(error).startswith(message)


# ------------------------------------------------------------------------------------- devices

@pytest.fixture(scope="module")
def trainer_cfg():
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=CONF_DIR):
        yield lambda overrides: compose("config", overrides=overrides)
    GlobalHydra.instance().clear()


@pytest.mark.parametrize(("overrides", "cuda", "message"), [
    (["trainer=gpu"], 0, "trainer.accelerator=gpu but this machine has 0 CUDA devices; use trainer=cpu or run on a GPU machine"),
    (["trainer.accelerator=gpu", "trainer.devices=8"], 0,
     "trainer.devices=8 but this machine has 0 CUDA devices; use trainer=cpu or run on a GPU machine"),
    (["trainer=gpu", "trainer.devices=8"], 2, "trainer.devices=8 but this machine has 2 CUDA devices; use trainer.devices=2"),
    (["trainer=gpu", "trainer.devices=[0,3]"], 2, "trainer.devices=[0,3]: device 3 does not exist, this machine has 2 CUDA devices"),
    (["trainer=ddp"], 0, "trainer.devices=2 but this machine has 0 CUDA devices; use trainer=cpu or run on a GPU machine "
                         "(trainer.accelerator=cpu trainer.devices=2 runs 2 CPU processes)"),
    (["trainer.devices=0"], 0, "trainer.devices=0: expected a number of devices >= 1, -1 or auto"),
    (["trainer.accelerator=gpus"], 1, "trainer.accelerator=gpus: expected one of cpu, gpu (cuda), mps or auto"),
    (["trainer.precision=17"], 0, "trainer.precision=17: expected one of 32-true, 16-mixed"),
    (["trainer.precision=transformer-engine"], 0, "trainer.precision=transformer-engine needs an NVIDIA GPU"),
])
def test_trainer_settings_the_machine_cannot_run(trainer_cfg, overrides, cuda, message):
    from pmm.runtime.devices import check_devices

    with pytest.raises(PmmError) as error:
        check_devices(trainer_cfg(overrides), cuda_count=cuda)
    assert one_line(error).startswith(message)


@pytest.mark.parametrize(("overrides", "cuda"), [
    ([], 0), (["trainer=cpu"], 0), (["trainer=gpu"], 1), (["trainer=gpu", "trainer.devices=-1"], 4),
    (["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"], 0),   # CPU DDP (gloo)
    (["trainer=gpu", "debug=default"], 0),                                  # debug=default runs on the CPU
    (["trainer=gpu", "debug=smoke"], 0),                                    # the smoke forces the CPU
    (["trainer.precision=16-mixed"], 0),                                    # bf16 on the CPU (pmm.runtime.trainer)
])
def test_trainer_settings_the_machine_can_run(trainer_cfg, overrides, cuda):
    from pmm.runtime.devices import check_devices

    check_devices(trainer_cfg(overrides), cuda_count=cuda)


def test_gpu_trainer_on_a_cpu_machine_stops_before_the_run_folder(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    result = pmm_cli(["trainer.accelerator=gpu", "trainer.devices=8", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert one_error_line(result) == ("pmm: error: trainer.devices=8 but this machine has 0 CUDA devices; "
                                      "use trainer=cpu or run on a GPU machine")
    assert not (tmp_path / "run").exists()  # no metrics.json, no .hydra/, no run.log


# ------------------------------------------------------------------------------------- masks

def test_16_bit_masks_are_read_with_their_full_values(voc_copy, tmp_path):
    ids = (voc_copy / "ImageSets/Segmentation/train.txt").read_text().split()
    path = voc_copy / "SegmentationClass" / f"{ids[1]}.png"
    mask = load_mask(path)
    classes = sorted(set(np.unique(mask).tolist()) - {0, 255})
    Image.fromarray(mask.astype(np.uint16)).save(path)  # a 16-bit greyscale PNG, the same class ids
    with Image.open(path) as image:
        assert image.mode.startswith("I;16")
    np.testing.assert_array_equal(load_mask(path), mask)
    assert list(load_voc_split(voc_copy, "train", cache_dir=tmp_path / "c1").labels(ids[1])) == classes

    wide = mask.astype(np.uint16)
    wide[mask == classes[0]] = 256 + classes[0]  # wrapped to 8 bits this would read as class classes[0]
    Image.fromarray(wide).save(path)
    with pytest.raises(PmmError) as error:
        load_voc_split(voc_copy, "train", cache_dir=tmp_path / "c2")
    assert one_line(error) == (
        f"{path.resolve()}: 16-bit mask holds the value {256 + classes[0]}, which is no class id (pmm reads class ids "
        "0..254 and 255 = ignore); store the class ids as an 8-bit palette or greyscale PNG (VOC SegmentationClass format)")
    with pytest.raises(PmmError, match="16-bit mask holds the value"):
        load_mask(path)
    # 32-bit greyscale (what older Pillow makes of a 16-bit PNG): the same rule
    from pmm.io import label_map

    np.testing.assert_array_equal(label_map(Image.fromarray(mask.astype(np.int32), mode="I"))[0], mask)
    assert label_map(Image.fromarray(wide.astype(np.int32), mode="I"))[1].startswith("32-bit mask holds the value")


def binary_masks(root: Path) -> None:
    """Every mask as an object mask: 0 background, 255 object (what many annotation tools export)."""
    for path in (root / "SegmentationClass").glob("*.png"):
        mask = load_mask(path)
        Image.fromarray(np.where((mask > 0) & (mask < 255), 255, 0).astype(np.uint8), mode="L").save(path)


def test_binary_masks_are_refused_with_the_hint(voc_copy, tmp_path):
    binary_masks(voc_copy)
    with pytest.raises(PmmError) as error:
        load_voc_split(voc_copy, "train", cache_dir=tmp_path)
    message = one_line(error)
    assert message.startswith(f"split 'train' of {voc_copy.resolve()}: none of its 8 images has a foreground label "
                              "(their masks hold no class but 0 (background) and 255 (ignore)); binary 0/255 masks?")
    assert "data.class_names=[background,<name>]" in message and "data.labels=xml" in message


@pytest.mark.slow
def test_cam_stage_on_binary_masks_stops_before_training(voc_copy, tmp_path):
    """It used to train on no label at all and report cam_miou=1 (background alone)."""
    binary_masks(voc_copy)
    result = pmm_cli(["stage=cam", "data=voc", f"data.root={voc_copy}", "data.train_split=train", "trainer=cpu",
                      "logger=none", f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={tmp_path / 'run'}"],
                     tmp_path)
    assert "none of its 8 images has a foreground label" in one_error_line(result)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text()) if (tmp_path / "run" / "metrics.json").exists() else {}
    assert "cam_miou" not in metrics


# ------------------------------------------------------------------------------------- images by id

def test_images_are_found_whatever_their_extension(voc_copy, tmp_path):
    ids = (voc_copy / "ImageSets/Segmentation/train.txt").read_text().split()
    images = voc_copy / "JPEGImages"
    for image_id in ids[:3]:
        with Image.open(images / f"{image_id}.jpg") as image:
            image.save(images / f"{image_id}.png")
        (images / f"{image_id}.jpg").unlink()
    split = load_voc_split(voc_copy, "train", cache_dir=tmp_path)
    assert split.image_path(ids[0]).name == f"{ids[0]}.png" and split.image_path(ids[5]).name == f"{ids[5]}.jpg"
    assert split.load_image(ids[0]).shape[:2] == split.image_sizes[ids[0]]

    with Image.open(images / f"{ids[4]}.jpg") as image:
        image.save(images / f"{ids[4]}.webp")
    with pytest.raises(PmmError) as error:
        load_voc_split(voc_copy, "train", cache_dir=tmp_path)
    assert one_line(error) == (
        f"{(images / f'{ids[4]}.jpg').resolve()}: id {ids[4]} has 2 image files: {ids[4]}.jpg and {ids[4]}.webp; "
        "keep one image file per id (pmm finds an id's image whatever its extension)")


# ------------------------------------------------------------------------------------- one run per folder

def test_a_second_run_on_a_locked_folder_is_refused(tmp_path):
    from pmm.runtime.run_folder import LOCK_NAME, RunLock

    run = tmp_path / "run"
    lock = RunLock.acquire(run)  # held by this (live) process, as by a run in progress
    try:
        result = pmm_cli(["stage=cam", f"hydra.run.dir={run}"], tmp_path)
        line = one_error_line(result)
        assert line.startswith(f"pmm: error: hydra.run.dir={run}: another pmm run is writing this folder "
                               f"(pid {os.getpid()} on ")
        assert line.endswith("wait for it to finish or give another hydra.run.dir")
        assert sorted(p.name for p in run.iterdir()) == [LOCK_NAME]  # nothing of the second run written
    finally:
        lock.release()
    assert not (run / LOCK_NAME).exists()


def test_the_lock_of_a_dead_run_is_taken_over(tmp_path, capsys):
    from pmm.runtime.run_folder import LOCK_NAME, RunLock

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    run = tmp_path / "run"
    run.mkdir()
    import socket

    (run / LOCK_NAME).write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "started": "then"}))
    lock = RunLock.acquire(run)
    err = capsys.readouterr().err
    assert err.startswith(f"pmm: warning: hydra.run.dir={run}: the run that locked this folder is gone (pid {pid} on ")
    assert json.loads((run / LOCK_NAME).read_text())["pid"] == os.getpid()
    lock.release()
    assert not (run / LOCK_NAME).exists()


def test_time_stamped_folders_never_collide(tmp_path):
    from pmm.runtime.run_folder import _time_stamped, unique_folder
    from omegaconf import OmegaConf

    base = tmp_path / "outputs" / "cam" / "runs" / "2026-01-01_12-00-00"
    assert [unique_folder(base).name for _ in range(3)] == [base.name, f"{base.name}-2", f"{base.name}-3"]
    node = OmegaConf.load(Path(CONF_DIR) / "hydra" / "default.yaml").run
    assert _time_stamped(node, "dir") and not _time_stamped(OmegaConf.create({"dir": "runs/voc"}), "dir")


# ------------------------------------------------------------------------------------- Ctrl-C

def run_until(args: list[str], tmp_path: Path, marker: Path, timeout: float = 240) -> subprocess.Popen:
    """Start ``python -m pmm.run ARGS`` in its own session, and wait until ``marker`` exists (it is training)."""
    environment = {**os.environ, "PMM_DATA_DIR": str(tmp_path / "data"), "OMP_NUM_THREADS": "1",
                   "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    process = subprocess.Popen([sys.executable, "-m", "pmm.run", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=environment, cwd=tmp_path, start_new_session=True,
                               # a shell's background job ignores SIGINT; a terminal's foreground job does not
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    start = time.monotonic()
    while not marker.exists():
        if process.poll() is not None or time.monotonic() - start > timeout:
            process.kill()
            pytest.fail(f"the run ended or stalled before {marker} appeared: {process.communicate()[1][-3000:]}")
        time.sleep(0.2)
    return process


@pytest.mark.slow
def test_ctrl_c_during_training_says_how_to_resume(tmp_path):
    run = tmp_path / "run"
    args = ["stage=cam", "debug=default", "cam.max_epochs=40", "data.generate.num_train=8", "data.generate.num_val=4",
            "cam.scales=[1.0]", "logger=none"]
    process = run_until([*args, f"hydra.run.dir={run}"], tmp_path, run / "checkpoints" / "cam" / "last.ckpt")
    time.sleep(0.5)
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole process group
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    line = err.strip().splitlines()[-1]
    checkpoint = run.resolve() / "checkpoints" / "cam" / "last.ckpt"
    assert line.startswith("pmm: interrupted at cam, epoch "), line
    assert line.endswith(f"; resume with `ckpt_path={checkpoint} hydra.run.dir={run.resolve()}` "
                         "(the rest of the command unchanged)"), line
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["interrupted"] is True and metrics["interrupted_stage"] == "cam"
    assert f"epoch {metrics['interrupted_epoch']} " in line and "cam_miou" not in metrics
    assert line.removeprefix("pmm: ").split("; resume")[0] in (run / "report.html").read_text()  # the page says so too

    # The resume runs in the same folder (the lock went with the interrupted run) and finishes.
    # How far the run got before Ctrl-C depends on the machine's speed: resume to two epochs beyond it.
    stopped_at = metrics["interrupted_epoch"]
    resumed = pmm_cli([*args, f"cam.max_epochs={stopped_at + 2}", f"ckpt_path={checkpoint}", f"hydra.run.dir={run}"],
                      tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert "cam_miou" in metrics and "interrupted" not in metrics
    assert "finished: cam" in (run / "report.html").read_text()



@pytest.mark.slow
def test_resuming_past_the_planned_epochs_is_one_line(tmp_path):
    """A checkpoint of epoch 3 with cam.max_epochs=1 is refused before training, not with Lightning's traceback."""
    run = tmp_path / "run"
    args = ["stage=cam", "debug=default", "data.generate.num_train=8", "data.generate.num_val=4", "cam.scales=[1.0]",
            "logger=none", f"hydra.run.dir={run}"]
    trained = pmm_cli([*args, "cam.max_epochs=3"], tmp_path)
    assert trained.returncode == 0, trained.stderr[-3000:]
    checkpoint = run / "checkpoints" / "cam" / "last.ckpt"
    # last.ckpt is the last epoch's, whether or not that epoch had the best val/mAP (one step an epoch).
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    assert (saved["epoch"], saved["global_step"]) == (2, 3)
    line = one_error_line(pmm_cli([*args, "cam.max_epochs=1", f"ckpt_path={checkpoint}"], tmp_path))
    assert "has trained 3 epochs but this run plans 1" in line and "set cam.max_epochs to more than 3" in line, line
    # One epoch more than the checkpoint's trains on from it.
    resumed = pmm_cli([*args, "cam.max_epochs=4", f"ckpt_path={checkpoint}"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

def test_interrupt_lines_name_the_stage_and_the_resume(tmp_path):
    from types import SimpleNamespace

    from omegaconf import OmegaConf

    from pmm.runtime.context import RunContext
    from pmm.runtime.interrupt import interruption, is_user_interrupt

    ctx = RunContext(OmegaConf.create({}), tmp_path)
    line, record = interruption(ctx, "seg", "all")
    assert line == ("interrupted at seg, before training started; no checkpoint was saved yet (one is written at the "
                    "end of every epoch): rerun the command to start over")
    (tmp_path / "checkpoints" / "cam").mkdir(parents=True)
    (tmp_path / "checkpoints" / "cam" / "last.ckpt").write_bytes(b"x")
    (tmp_path / "pseudo_masks" / "round_0").mkdir(parents=True)
    (tmp_path / "pseudo_masks" / "round_0" / "a.png").write_bytes(b"x")
    line, record = interruption(ctx, "pseudo", "all")
    assert line == (f"interrupted at pseudo (mask generation, 1 masks written); resume with `ckpt_path="
                    f"{tmp_path / 'checkpoints/cam/last.ckpt'} pseudo.resume=true hydra.run.dir={tmp_path}` "
                    "(the rest of the command unchanged)")
    assert record == {"interrupted": True, "interrupted_stage": "pseudo"}
    fitting = SimpleNamespace(current_epoch=3, global_step=40, state=SimpleNamespace(finished=False),
                              checkpoint_callback=SimpleNamespace(last_model_path=""))
    ctx.track_trainer("cam", fitting)
    line, record = interruption(ctx, "cam", "cam")
    assert line.startswith("interrupted at cam, epoch 3 (step 40); resume with `ckpt_path=")
    assert record["interrupted_epoch"] == 3
    try:
        raise KeyboardInterrupt
    except KeyboardInterrupt:
        try:
            raise SystemExit(1)  # what Lightning's trainer raises after its graceful shutdown
        except SystemExit as stop:
            assert is_user_interrupt(stop)
    assert not is_user_interrupt(SystemExit(1))


# ------------------------------------------------------------------------------------- wrong hints

def test_data_root_above_the_tree_suggests_the_subfolder(voc_copy, tmp_path):
    parent = voc_copy.parent
    (voc_copy.parent / "VOC2012").mkdir()
    for name in ("JPEGImages", "SegmentationClass", "ImageSets"):
        (voc_copy / name).rename(parent / "VOC2012" / name)
    with pytest.raises(PmmError) as error:
        load_voc_split(parent, "train", cache_dir=tmp_path / "cache")
    assert one_line(error).endswith(f"; {parent.resolve() / 'VOC2012'} has that layout: did you mean "
                                    f"data.root={parent.resolve() / 'VOC2012'}?")


def test_predict_output_that_is_a_file(tmp_path):
    from pmm.io import check_writable

    (tmp_path / "out.png").write_bytes(b"x")
    with pytest.raises(PmmError) as error:
        check_writable(tmp_path / "out.png", "output")
    assert one_line(error) == (f"output={tmp_path / 'out.png'}: is a file, not a folder; give a folder "
                               "(output is created if missing)")


# ------------------------------------------------------------------------------------- large photos

def test_predict_batches_are_bounded_in_pixels():
    from pmm.predict import scaled_size, size_batches

    assert scaled_size(3000, 4000, 2048) == (1536, 2048) and scaled_size(300, 400, 2048) == (300, 400)
    assert scaled_size(3000, 4000, None) == (3000, 4000)
    sizes = [(100, 100)] * 5 + [(1536, 2048)] * 3 + [None]
    assert size_batches(sizes, 4, 2048 * 2048) == [[0, 1, 2, 3], [4, 5], [6], [7, 8]]
    assert size_batches(sizes, 16, None) == [list(range(9))]
