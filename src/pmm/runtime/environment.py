"""What a run ran on: versions, devices, host and the source commit, recorded once at the start of a run.

It is recorded in ``metrics.json`` (``environment``) rather than looked up when a report is drawn:
the page of a run rebuilt later, on another machine, must still describe the machine that ran it.
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
from pathlib import Path

from omegaconf import DictConfig


def git_commit(folder: str | os.PathLike) -> dict | None:
    """``{"commit": sha, "dirty": bool}`` of the git work tree holding ``folder``; None outside one (or without git)."""
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if not commit:
        return None
    changes = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(changes)}


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else what :mod:`platform` knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def device_names(accelerator: str, devices) -> list[str]:
    """The accelerators a trainer setting uses on this machine: GPU names, else the CPU."""
    import torch

    if accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available():
        count = torch.cuda.device_count()
        if isinstance(devices, int) and devices > 0:
            indices = list(range(min(devices, count)))
        elif isinstance(devices, (list, tuple)):
            indices = [int(d) for d in devices if int(d) < count]
        else:  # "auto", -1: all of them
            indices = list(range(count))
        return [f"cuda:{i} {torch.cuda.get_device_name(i)}" for i in indices]
    if accelerator in ("mps", "auto") and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return ["mps"]
    return [f"cpu {cpu_name()} ({os.cpu_count()} logical cores)"]


def describe_environment(cfg: DictConfig, world_size: int) -> dict:
    """Versions, devices, world size, seed, host and git commit of the run ``cfg`` configures."""
    import pytorch_lightning
    import torch

    import pmm

    trainer = cfg.get("trainer") or {}
    accelerator = str(trainer.get("accelerator", "auto"))
    devices = trainer.get("devices", "auto")
    devices = list(devices) if hasattr(devices, "__iter__") and not isinstance(devices, str) else devices
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "lightning": pytorch_lightning.__version__,
        "pmm": pmm.__version__,
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "accelerator": accelerator,
        "devices": device_names(accelerator, devices),
        "num_nodes": int(trainer.get("num_nodes", 1) or 1),
        "world_size": int(world_size),
        "seed": cfg.get("seed"),
        "working_dir": os.getcwd(),
        "git": git_commit(os.getcwd()),
    }
