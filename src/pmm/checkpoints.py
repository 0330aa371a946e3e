"""Reading the Lightning checkpoints pmm writes and rebuilding their networks.

Every checkpoint carries its network's spec (``hyper_parameters.net_config``: ``_target_`` plus the
constructor arguments), so any network class rebuilds with ``instantiate``. Checkpoints written
before specs had a ``_target_`` hold the plain CAM head's or the segmenter's arguments: they get
that class.
"""

from __future__ import annotations

from pathlib import Path

import torch  # noqa: F401 - networks are torch modules

from pmm.errors import PmmError

DEFAULT_TARGETS = {"cam": "pmm.cam.net.CAMNet", "seg": "pmm.seg.model.Segmenter"}
HOW_TO_GET = {
    "cam": "stage=cam writes RUN/checkpoints/cam/last.ckpt",
    "seg": "stage=seg writes RUN/checkpoints/seg/last.ckpt",
}


def _load(path: Path, key: str, stage: str, resume: bool = False) -> dict:
    """Every checkpoint pmm reads goes through :func:`pmm.ckpt_io.read_pmm_checkpoint` (one-line errors)."""
    from pmm.ckpt_io import read_pmm_checkpoint

    return read_pmm_checkpoint(path, key, stage, resume=resume)


def read_checkpoint(path: str | Path, key: str, stage: str = "cam") -> tuple[dict, dict]:
    """The checkpoint at ``path`` and its network spec, checked to be a pmm checkpoint of ``stage``.

    ``key`` is the config key that named the file (``cam_ckpt``, ``seg_ckpt``), for the error message.
    The spec has ``pretrained``/``weights`` cleared (the checkpoint carries the weights) and always
    a ``_target_`` and ``num_classes``.
    """
    checkpoint = _load(Path(path), key, stage)
    hparams = checkpoint.get("hyper_parameters", {}) if isinstance(checkpoint, dict) else {}
    spec = dict(hparams.get("net_config") or {})
    if not spec or "state_dict" not in checkpoint:
        raise PmmError(f"{key}={path}: not a pmm {stage} checkpoint (no network spec in it); {HOW_TO_GET[stage]}")
    spec.setdefault("_target_", DEFAULT_TARGETS[stage])
    if "num_classes" not in spec:
        if stage == "cam":
            weight = checkpoint["state_dict"].get("net.classifier.weight")
            if weight is None:
                raise PmmError(f"{key}={path}: not a pmm CAM checkpoint (no classifier weights); {HOW_TO_GET[stage]}")
            spec["num_classes"] = int(weight.shape[0])
        else:
            spec["num_classes"] = len(hparams.get("class_names") or [])
    for name in ("pretrained", "weights"):
        if name in spec:
            spec[name] = False if name == "pretrained" else None
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


def checkpoint_stage(checkpoint: dict) -> str:
    """``cam`` or ``seg``: recorded in the hyper-parameters, or told by what older checkpoints hold."""
    from pmm.ckpt_io import checkpoint_stage as detect

    return detect(checkpoint) or "cam"


def resume_checkpoint(cfg, stage: str) -> str | None:
    """``ckpt_path`` when it resumes ``stage``'s training, else None.

    With ``stage=all`` a CAM checkpoint resumes the CAM stage and a segmenter checkpoint the
    segmentation stage (the run's earlier stages are then taken from its directory, see
    :func:`pmm.run.run_pipeline`); with a single stage the checkpoint must be of that stage.
    """
    if not cfg.get("ckpt_path"):
        return None
    checkpoint = _load(Path(cfg.ckpt_path), "ckpt_path", "any", resume=True)
    found = checkpoint_stage(checkpoint)
    if found == stage:
        return str(Path(cfg.ckpt_path).expanduser().resolve())
    if cfg.stage == stage:
        raise PmmError(f"ckpt_path={cfg.ckpt_path}: a {found} checkpoint cannot resume stage={stage}; {HOW_TO_GET[stage]}")
    return None
