"""The ``trainer`` node's accelerator, devices and precision against what this machine has, before any work.

Lightning finds out only when the first Trainer is built, deep in a stage, with a traceback
(``MisconfigurationException: No supported gpu backend found!``). :func:`check_devices` says it in one
line naming the key, what the machine has and the fix. ``debug=smoke`` runs on the CPU whatever the
trainer says (:mod:`pmm.runtime.smoke`), so it is not checked.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from pmm.errors import PmmError

GPU_NAMES = ("gpu", "cuda")
KNOWN_ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu", "xla", "hpu")
# Lightning 2's precision flags (lightning_fabric.connector._PRECISION_INPUT).
PRECISIONS = ("transformer-engine", "transformer-engine-float16", "16-true", "16-mixed", "bf16-true", "bf16-mixed",
              "32-true", "64-true", "64", "32", "16", "bf16")
FIX_NO_GPU = "use trainer=cpu or run on a GPU machine"


def _plain(value: Any) -> Any:
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


def _show(value: Any) -> str:
    value = _plain(value)
    return "[" + ",".join(map(str, value)) + "]" if isinstance(value, (list, tuple)) else str(value)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'s' * (count != 1)}"


def requested_devices(devices: Any) -> tuple[int | None, list[int]]:
    """(count asked for, explicit device indices) of ``trainer.devices``; count None = all (``-1``/``auto``).

    Raises:
        PmmError: a value Lightning does not take.
    """
    value = _plain(devices)
    if isinstance(value, str):
        text = value.strip()
        if text in ("auto", "-1"):
            return None, []
        if "," in text:
            value = [int(part) for part in text.split(",") if part.strip().lstrip("-").isdigit()]
        elif text.isdigit():
            value = int(text)
    if isinstance(value, bool):
        value = None
    if isinstance(value, int):
        if value == -1:
            return None, []
        if value >= 1:
            return value, []
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                                                          for v in value):
        return len(value), sorted(set(value))
    raise PmmError(f"trainer.devices={_show(devices)}: expected a number of devices >= 1, -1 or auto (all), "
                   "or a list of device indices such as [0,1]")


def _cuda_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.backends.cuda.is_built() else 0


def _mps_available() -> bool:
    import torch

    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def check_devices(cfg: DictConfig, cuda_count: int | None = None) -> None:
    """Raise one line when ``trainer.accelerator`` / ``devices`` / ``precision`` cannot run on this machine.

    ``cuda_count`` replaces the machine's CUDA device count (tests).

    Raises:
        PmmError: e.g. ``trainer.devices=8 but this machine has 0 CUDA devices; use trainer=cpu or run on a GPU machine``.
    """
    if cfg.get("smoke") or not isinstance(cfg.get("trainer"), DictConfig):
        return
    trainer = cfg.trainer
    accelerator = str(_plain(trainer.get("accelerator", "auto"))).lower()
    precision = str(_plain(trainer.get("precision", "32-true")))
    count, indices = requested_devices(trainer.get("devices", "auto"))
    shown_devices = _show(trainer.get("devices", "auto"))

    if accelerator not in KNOWN_ACCELERATORS:
        raise PmmError(f"trainer.accelerator={accelerator}: expected one of cpu, gpu (cuda), mps or auto")
    if precision not in PRECISIONS:
        raise PmmError(f"trainer.precision={precision}: expected one of 32-true, 16-mixed, bf16-mixed, 16-true, "
                       "bf16-true, 64-true (Lightning's precision flags)")
    cuda = _cuda_count() if cuda_count is None else cuda_count

    if accelerator in GPU_NAMES or (accelerator == "auto" and cuda > 0):
        if cuda == 0:
            if count is not None and count > 1:
                raise PmmError(f"trainer.devices={shown_devices} but this machine has 0 CUDA devices; {FIX_NO_GPU}")
            raise PmmError(f"trainer.accelerator={accelerator} but this machine has 0 CUDA devices; {FIX_NO_GPU}")
        beyond = [i for i in indices if i >= cuda]
        if beyond:
            raise PmmError(f"trainer.devices={shown_devices}: device {beyond[0]} does not exist, this machine has "
                           f"{_plural(cuda, 'CUDA device')} (indices 0..{cuda - 1}); list existing indices")
        if not indices and count is not None and count > cuda:
            raise PmmError(f"trainer.devices={shown_devices} but this machine has {_plural(cuda, 'CUDA device')}; "
                           f"use trainer.devices={cuda} (or -1: all of them)")
        if precision.startswith("bf16"):
            import torch

            if not torch.cuda.is_bf16_supported():
                name = torch.cuda.get_device_name(indices[0] if indices else 0)
                raise PmmError(f"trainer.precision={precision} but the GPU ({name}) has no bfloat16 support; "
                               "use trainer.precision=16-mixed")
        return

    if accelerator == "mps" or (accelerator == "auto" and _mps_available()):
        if not _mps_available():
            raise PmmError(f"trainer.accelerator=mps but this machine has no Apple GPU (MPS); {FIX_NO_GPU}")
        return
    if accelerator in ("tpu", "xla", "hpu"):
        return  # Lightning checks its own accelerators' runtimes

    # On the CPU: devices is a number of processes; fp16 becomes bf16 / fp32 (pmm.runtime.trainer).
    if indices:
        raise PmmError(f"trainer.devices={shown_devices} names device indices but the run is on the CPU "
                       f"(this machine has 0 CUDA devices); {FIX_NO_GPU}")
    if accelerator == "auto" and count is not None and count > 1:
        raise PmmError(f"trainer.devices={shown_devices} but this machine has 0 CUDA devices; {FIX_NO_GPU} "
                       f"(trainer.accelerator=cpu trainer.devices={count} runs {count} CPU processes)")
    if accelerator == "cpu" and count is None and shown_devices != "auto":
        raise PmmError(f"trainer.devices={shown_devices} with trainer.accelerator=cpu: expected a number of "
                       "processes (an integer >= 1)")
    if precision.startswith("transformer-engine"):
        raise PmmError(f"trainer.precision={precision} needs an NVIDIA GPU; use trainer.precision=32-true on the CPU")
