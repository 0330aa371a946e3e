"""Checkpoint files, in one place: written atomically, read with one loader, networks rebuilt from them.

- :class:`AtomicCheckpointIO` is the Lightning ``CheckpointIO`` of every pmm trainer
  (``Trainer(plugins=[AtomicCheckpointIO()])``): a checkpoint is serialised in memory, written to a
  temporary name beside its target, flushed and renamed, so a full disk or a kill never leaves a
  half-written ``.ckpt``. Out of space, a read-only or a forbidden folder is a :class:`PmmError` line.
- :func:`read_pmm_checkpoint` is the one loader of ``cam_ckpt`` / ``seg_ckpt`` / ``ckpt_path``: a
  missing file, a folder, a text file, an empty or truncated file, a foreign torch file or a
  checkpoint of the other stage is one line saying what the file is, what was expected and how to
  get one.
- Every checkpoint carries its network's spec (``hyper_parameters.net_config``: ``_target_`` plus the
  constructor arguments), so :func:`load_network` rebuilds any network class with ``instantiate``.
  Checkpoints whose spec has no ``_target_`` hold the plain CAM head's or the segmenter's arguments:
  they get that class.
"""

from __future__ import annotations

import io
import os
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.plugins.io import TorchCheckpointIO

from pmm.errors import PmmError
from pmm.io import FILE_MODE, os_error_line

STAGES = ("cam", "seg")
ANY_STAGE = "any"  # read_pmm_checkpoint(..., stage="any"): a pmm checkpoint of either stage (stage=all resume)
STAGE_NAMES = {"cam": "CAM-stage", "seg": "segmentation-stage", ANY_STAGE: "CAM- or segmentation-stage"}
HOW_TO_GET = {
    "cam": "stage=cam writes RUN/checkpoints/cam/last.ckpt",
    "seg": "stage=seg writes RUN/checkpoints/seg/last.ckpt",
    ANY_STAGE: "stage=cam writes RUN/checkpoints/cam/last.ckpt, stage=seg RUN/checkpoints/seg/last.ckpt",
}




# ------------------------------------------------------------------------------------------- writing

def _write_all(stream, data: bytes) -> None:
    """Write ``data`` to ``stream`` and push it to the disk (a seam for the disk-full tests)."""
    stream.write(data)
    stream.flush()
    os.fsync(stream.fileno())


def atomic_write_bytes(path: str | os.PathLike, data: bytes, writing: str = "a checkpoint") -> None:
    """Write ``data`` to ``path`` through a temporary file beside it; nothing is left behind on failure."""
    path = Path(path)
    tmp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        tmp = Path(tmp_name)
        with os.fdopen(handle, "wb") as stream:
            _write_all(stream, data)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
        tmp = None
    except OSError as error:
        raise PmmError(os_error_line(path, error, writing)) from None
    finally:
        if tmp is not None:
            try:
                tmp.unlink()
            except OSError:
                pass


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint I/O that never leaves a half-written file.

    The checkpoint is serialised in memory (as Lightning's own writer does), written to
    ``.<name>.<random>.tmp`` beside the target, fsynced and renamed onto the target. An OSError
    (no space left, read-only file system, permission denied...) becomes a one-line
    :class:`PmmError` naming the file, with no temporary file left behind.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} does not take storage_options")
        buffer = io.BytesIO()
        try:
            torch.save(checkpoint, buffer)
        except OSError as error:
            raise PmmError(os_error_line(path, error)) from None
        atomic_write_bytes(path, buffer.getbuffer(), "a checkpoint")


# ------------------------------------------------------------------------------------------- reading

def _expected(key: str, stage: str) -> str:
    return f"{key} expects a pmm {STAGE_NAMES[stage]} checkpoint (.ckpt); {HOW_TO_GET[stage]}"


def _fail(key: str, path: Path | str, what: str, stage: str) -> PmmError:
    return PmmError(f"{key}={path}: {what}; {_expected(key, stage)}")


def _sniff(head: bytes) -> str | None:
    """What a file that is not a torch checkpoint is, from its first bytes (None: could be one)."""
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return None  # zip (torch >= 1.6) or pickle (legacy torch.save)
    if head.startswith(b"\x89PNG") or head.startswith(b"\xff\xd8\xff"):
        return "an image, not a checkpoint"
    if head.startswith(b"\x93NUMPY"):
        return "a NumPy .npy array, not a checkpoint"
    if head.startswith(b"\x89HDF"):
        return "an HDF5 file, not a checkpoint"
    if len(head) >= 10 and head[8:10] == b'{"':
        return "a safetensors weights file (weights without pmm's network spec), not a Lightning checkpoint"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return "not a PyTorch file (unknown binary format)"
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    shown = first[:40] + ("..." if len(first) > 40 else "")
    return f"a text file (it starts with {shown!r}), not a checkpoint"


def _load_error(error: Exception, size: int) -> str:
    message = str(error)
    signs = ("truncated", "EOF", "corrupted", "central directory", "zip archive")
    truncated = (any(sign in message for sign in signs)
                 or isinstance(error, (EOFError, zipfile.BadZipFile)))
    if truncated:
        return f"a truncated or corrupt checkpoint ({size} bytes; an interrupted write or a full disk leaves such files)"
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", message)
    if found or "Weights only load failed" in message:
        holds = f" ({found.group(1)})" if found else ""
        return f"a torch file holding Python objects{holds} that a safe weights-only load refuses, so not a file pmm wrote"
    first = message.strip().splitlines()[0][:120] if message.strip() else ""
    return f"an unreadable torch file ({type(error).__name__}{': ' + first if first else ''})"


def checkpoint_stage(checkpoint: dict) -> str | None:
    """``cam``/``seg`` for a pmm checkpoint (by ``hyper_parameters.stage``, else by its keys), else None."""
    hparams = checkpoint.get("hyper_parameters") or {}
    stage = hparams.get("stage") if isinstance(hparams, dict) else None
    if stage in STAGES:
        return stage
    state = checkpoint.get("state_dict") or {}
    if "net.classifier.weight" in state or "new_layer_lr_mult" in hparams:
        return "cam"
    if "class_names" in hparams or "head_lr_mult" in hparams:
        return "seg"
    return None


def _describe_foreign(checkpoint: Any) -> str:
    if not isinstance(checkpoint, dict):
        return f"a torch file holding a {type(checkpoint).__name__}, not a Lightning checkpoint"
    if checkpoint and all(isinstance(value, torch.Tensor) for value in checkpoint.values()):
        return (f"a bare state dict ({len(checkpoint)} tensor{'s' * (len(checkpoint) != 1)}, no network spec), not a pmm checkpoint "
                "(backbone weights go to cam_net.weights / segmenter.weights)")
    if "state_dict" not in checkpoint:
        keys = ", ".join(sorted(map(str, checkpoint))[:5]) or "none"
        return f"a torch file without a state_dict (keys: {keys}), not a Lightning checkpoint"
    return "a Lightning checkpoint that pmm did not write (no network spec in its hyper_parameters)"


def read_pmm_checkpoint(path: str | os.PathLike | None, key: str, stage: str, *, resume: bool = False) -> dict:
    """Load a checkpoint pmm wrote for ``stage`` (``cam``, ``seg`` or ``any``), on the CPU, weights-only.

    Args:
        path: the file (a config value: ``cam_ckpt``, ``seg_ckpt`` or ``ckpt_path``).
        key: the config key that named it, for the message.
        stage: the stage whose checkpoint is expected; ``any`` accepts a pmm checkpoint of either
            stage (then :func:`checkpoint_stage` tells which, e.g. to route a ``stage=all`` resume).
        resume: the file resumes training (``ckpt_path``): it must also hold the optimiser and loop
            state (a weights-only checkpoint cannot resume).

    Returns:
        The checkpoint dict (``state_dict``, ``hyper_parameters``...).

    Raises:
        PmmError: one line: what the file is, what was expected, how to get one.
    """
    if stage not in STAGE_NAMES:
        raise ValueError(f"read_pmm_checkpoint: stage={stage!r}, expected one of {tuple(STAGE_NAMES)}")
    if path is None or str(path).strip() == "":
        raise PmmError(f"{key} is not set; {_expected(key, stage)}")
    path = Path(path).expanduser()
    if path.is_dir():
        stages = STAGES if stage == ANY_STAGE else (stage,)
        for candidate in [path / "checkpoints" / name / "last.ckpt" for name in stages] + [path / "last.ckpt"]:
            if candidate.is_file():
                raise _fail(key, path, f"a folder, not a file (did you mean {key}={candidate}?)", stage)
        raise _fail(key, path, "a folder, not a checkpoint file", stage)
    if not path.is_file():
        if path.exists():
            raise _fail(key, path, "not a regular file", stage)
        nearby = sorted(p.name for p in path.parent.glob("*.ckpt"))[:3] if path.parent.is_dir() else []
        hint = f" (its folder holds {', '.join(nearby)})" if nearby else ""
        raise _fail(key, path, f"file not found{hint}", stage)
    try:
        size = path.stat().st_size
        with open(path, "rb") as stream:
            head = stream.read(64)
    except OSError as error:
        raise _fail(key, path, f"cannot be read ({error.strerror or error})", stage) from None
    if size == 0:
        raise _fail(key, path, "an empty file (0 bytes; an interrupted write or a full disk leaves such files)", stage)
    what = _sniff(head)
    if what is not None:
        raise _fail(key, path, what, stage)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - whatever torch raises, the file is unusable: say what it is
        raise _fail(key, path, _load_error(error, size), stage) from None

    hparams = checkpoint.get("hyper_parameters") if isinstance(checkpoint, dict) else None
    if (
        not isinstance(checkpoint, dict)
        or not isinstance(checkpoint.get("state_dict"), dict)
        or not isinstance(hparams, dict)
        or not (hparams.get("net_config") or hparams.get("net"))
    ):
        raise _fail(key, path, _describe_foreign(checkpoint), stage)
    found = checkpoint_stage(checkpoint)
    if found is not None and stage != ANY_STAGE and found != stage:
        raise _fail(key, path, f"a pmm {STAGE_NAMES[found]} checkpoint, not a {STAGE_NAMES[stage]} one", stage)
    if resume and not ("optimizer_states" in checkpoint and "loops" in checkpoint):
        raise _fail(key, path, "a weights-only checkpoint (no optimiser or loop state), so training cannot resume from it", stage)
    return checkpoint


# ------------------------------------------------------------------------------------------- networks

def read_checkpoint(path: str | Path, key: str, stage: str = "cam") -> tuple[dict, dict]:
    """The checkpoint at ``path`` and its network spec, checked to be a pmm checkpoint of ``stage``.

    ``key`` is the config key that named the file (``cam_ckpt``, ``seg_ckpt``), for the error message.
    The spec has ``pretrained``/``weights``/``head_weights`` cleared (the checkpoint carries the weights) and always
    a ``_target_`` and ``num_classes``.
    """
    checkpoint = read_pmm_checkpoint(Path(path), key, stage)
    hparams = checkpoint.get("hyper_parameters", {}) if isinstance(checkpoint, dict) else {}
    spec = dict(hparams.get("net_config") or {})
    if not spec or "state_dict" not in checkpoint:
        raise PmmError(f"{key}={path}: not a pmm {stage} checkpoint (no network spec in it); {HOW_TO_GET[stage]}")
    from pmm.nets.build import DEFAULT_TARGETS

    spec.setdefault("_target_", DEFAULT_TARGETS[stage])
    if "num_classes" not in spec:
        if stage == "cam":
            weight = checkpoint["state_dict"].get("net.classifier.weight")
            if weight is None:
                raise PmmError(f"{key}={path}: not a pmm CAM checkpoint (no classifier weights); {HOW_TO_GET[stage]}")
            spec["num_classes"] = int(weight.shape[0])
        else:
            spec["num_classes"] = len(hparams.get("class_names") or [])
    for name in ("pretrained", "weights", "head_weights"):
        if name in spec:
            spec[name] = None if name == "weights" else False
    return checkpoint, spec


def load_network(path: str | Path, key: str, stage: str) -> tuple[torch.nn.Module, dict, dict]:
    """(network with the checkpoint's weights, its spec, the checkpoint) for a ``stage`` checkpoint."""
    from pmm.nets.build import build_from_spec

    checkpoint, spec = read_checkpoint(path, key, stage)
    net = build_from_spec(spec, key)
    state = {k[len("net."):]: v for k, v in checkpoint["state_dict"].items() if k.startswith("net.")}
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        names = (list(missing) + list(unexpected))[:3]
        raise PmmError(f"{key}={path}: weights do not fit {spec['_target_']} ({len(missing)} missing, "
                       f"{len(unexpected)} unexpected, e.g. {', '.join(names)}); was it written by another pmm version?")
    return net, spec, checkpoint


def resume_checkpoint(cfg, stage: str) -> str | None:
    """``ckpt_path`` when it resumes ``stage``'s training, else None.

    With ``stage=all`` a CAM checkpoint resumes the CAM stage and a segmenter checkpoint the
    segmentation stage (the run's earlier stages are then taken from its directory, see
    :func:`pmm.run.run_pipeline`); with a single stage the checkpoint must be of that stage.
    """
    if not cfg.get("ckpt_path"):
        return None
    checkpoint = read_pmm_checkpoint(Path(cfg.ckpt_path), "ckpt_path", ANY_STAGE, resume=True)
    found = checkpoint_stage(checkpoint) or "cam"
    if found == stage:
        return str(Path(cfg.ckpt_path).expanduser().resolve())
    if cfg.stage == stage:
        raise PmmError(f"ckpt_path={cfg.ckpt_path}: a {found} checkpoint cannot resume stage={stage}; {HOW_TO_GET[stage]}")
    return None


def resumed_epochs(checkpoint: dict) -> int | None:
    """The epochs a checkpoint has trained: its fit loop's processed epochs (a checkpoint written at
    an epoch's end counts that epoch), or ``epoch + 1`` when it holds no loop state."""
    try:
        return int(checkpoint["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"])
    except (KeyError, TypeError, ValueError):
        epoch = checkpoint.get("epoch") if isinstance(checkpoint, dict) else None
        return int(epoch) + 1 if epoch is not None else None


def ensure_resume_fits(path: str | None, max_epochs: int | None, key: str) -> None:
    """Refuse, in one line, to resume from a checkpoint that has trained more epochs than planned.

    Lightning would stop with a MisconfigurationException traceback (or, one epoch past the plan,
    silently hand on weights trained longer than the config says); ``key`` is the setting that plans
    the epochs (``cam.max_epochs``...). No check for iteration-based schedules (``-1``).
    """
    if not path or max_epochs is None or int(max_epochs) < 0:
        return
    checkpoint = read_pmm_checkpoint(Path(path), "ckpt_path", ANY_STAGE, resume=True)
    done = resumed_epochs(checkpoint)
    if done is not None and done > int(max_epochs):
        raise PmmError(
            f"ckpt_path={path}: the checkpoint has trained {done} epochs but this run plans {int(max_epochs)} "
            f"({key} and the schedule); set {key} to more than {done} to train on from it, or drop ckpt_path "
            "to start afresh"
        )
