"""One run per run folder: a lock file with the owner's pid and host, and time-stamped folders that never collide.

Two runs writing one folder mix their metrics, logs, ``.hydra/`` and checkpoints (``last.ckpt`` and
``last-v1.ckpt``). :class:`RunFolder` is a Hydra callback (``conf/hydra/default.yaml``) that acts
before Hydra creates the folder or writes anything into it:

- a folder named by a time stamp (the default ``hydra.run.dir``) that exists already (two runs
  started in the same second) gets a suffix, ``..._12-00-00-2``: the folder is created with
  ``mkdir``, which only one process can win;
- the folder (or a multirun's sweep folder) is locked with ``.pmm-run.lock`` (pid, host, start,
  command). A second run on a locked folder stops with one line naming the first; the lock of a
  process that is gone (killed) is taken over with a warning. The lock goes when the run ends,
  also on an error or Ctrl-C.

Only the first process of a distributed run locks: the processes Lightning's launcher or torchrun
start share the folder of the first.

It also refuses, before anything is written, what would fail later: ``+key=`` overrides pmm never
reads (:mod:`pmm.runtime.config_check`) and trainer settings this machine cannot run
(:mod:`pmm.runtime.devices`).
"""

from __future__ import annotations

import atexit
import json
import os
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from pmm.errors import PmmError

LOCK_NAME = ".pmm-run.lock"


def _start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux), to tell a reused pid from the owner."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def process_alive(pid: int, start_ticks: int | None = None) -> bool:
    """Whether process ``pid`` of this host still runs (and, when known, is the one started at ``start_ticks``)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    if start_ticks is not None:
        now = _start_ticks(pid)
        return now is None or now == start_ticks
    return True


def secondary_process() -> bool:
    """A process that Lightning's DDP launcher or torchrun started beside the first one of the run."""
    for name in ("RANK", "LOCAL_RANK", "NODE_RANK"):
        value = os.environ.get(name, "0").strip()
        if value.isdigit() and int(value) != 0:
            return True
    return False


def _describe(owner: dict) -> str:
    started = owner.get("started", "?")
    command = owner.get("command")
    return (f"pid {owner.get('pid', '?')} on {owner.get('host', '?')}, started {started}"
            + (f": {command}" if command else ""))


@dataclass
class RunLock:
    """The lock file of one run folder, held by this process until :meth:`release`."""

    path: Path
    key: str = "hydra.run.dir"

    @classmethod
    def acquire(cls, folder: str | os.PathLike, key: str = "hydra.run.dir") -> "RunLock":
        """Create ``folder/.pmm-run.lock`` for this process; a live owner is one PmmError line.

        Raises:
            PmmError: another live run holds the folder (or a run on another host, which cannot be checked).
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / LOCK_NAME
        record = {"pid": os.getpid(), "host": socket.gethostname(), "start_ticks": _start_ticks(os.getpid()),
                  "started": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(["pmm", *sys.argv[1:]])}
        handle, tmp_name = tempfile.mkstemp(dir=folder, prefix=f"{LOCK_NAME}.", suffix=".tmp")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(handle, "w") as stream:
                json.dump(record, stream)
            for _ in range(3):
                try:
                    os.link(tmp, path)  # atomic: fails when a lock is there, never leaves half a file
                    break
                except FileExistsError:
                    owner = cls._read(path)
                    if owner is None:
                        continue  # it went away meanwhile
                    if owner.get("host") != record["host"]:
                        raise PmmError(
                            f"{key}={folder}: another pmm run holds this folder ({_describe(owner)}); pmm cannot tell "
                            f"from here whether it still runs: wait for it or give another {key} "
                            f"(if it is gone, delete {path})")
                    if process_alive(int(owner.get("pid", -1)), owner.get("start_ticks")):
                        raise PmmError(
                            f"{key}={folder}: another pmm run is writing this folder ({_describe(owner)}); wait for "
                            f"it to finish or give another {key}")
                    print(f"pmm: warning: {key}={folder}: the run that locked this folder is gone "
                          f"({_describe(owner)}); its lock is taken over", file=sys.stderr)
                    try:
                        path.unlink()
                    except FileNotFoundError:
                        pass
            else:
                raise PmmError(f"{key}={folder}: could not lock the folder ({path} keeps changing); retry")
        except OSError as error:
            from pmm.io import os_error_line

            raise PmmError(os_error_line(path, error, "the run's lock file", key)) from None
        finally:
            tmp.unlink(missing_ok=True)
        lock = cls(path, key)
        atexit.register(lock.release)
        return lock

    @staticmethod
    def _read(path: Path) -> dict | None:
        try:
            owner = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {"pid": -1, "host": socket.gethostname()}  # unreadable: no live owner to respect
        return owner if isinstance(owner, dict) else {"pid": -1, "host": socket.gethostname()}

    def release(self) -> None:
        """Remove the lock file if this process still owns it (idempotent)."""
        owner = self._read(self.path)
        if owner is not None and owner.get("pid") == os.getpid() and owner.get("host") == socket.gethostname():
            try:
                self.path.unlink()
            except OSError:
                pass


def unique_folder(base: str | os.PathLike) -> Path:
    """``base``, or ``base-2``, ``base-3``... : the first that did not exist, created by this process."""
    base = Path(base)
    base.parent.mkdir(parents=True, exist_ok=True)
    number = 1
    while True:
        candidate = base if number == 1 else base.with_name(f"{base.name}-{number}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            number += 1


def _time_stamped(node: DictConfig, key: str) -> bool:
    raw = OmegaConf.to_container(node, resolve=False).get(key)
    return isinstance(raw, str) and "${now:" in raw


def _fail(error: PmmError) -> None:
    print(f"pmm: error: {error}", file=sys.stderr)
    sys.exit(2)


class RunFolder(Callback):
    """Hydra callback: refuse bad ``+`` keys and trainer settings, pick and lock the run folder."""

    def __init__(self) -> None:
        self.lock: RunLock | None = None

    def on_run_start(self, config: DictConfig, config_name: str | None = None, **kwargs: Any) -> None:
        try:
            from pmm.runtime.config_check import check_added_keys
            from pmm.runtime.devices import check_devices

            check_added_keys(config, config_name)
            check_devices(config)
            if secondary_process():
                return
            HydraConfig.instance().set_config(config)  # as run_job does next: ${hydra:runtime.cwd} resolves
            folder = Path(str(config.hydra.run.dir))
            if _time_stamped(config.hydra.run, "dir"):
                folder = unique_folder(folder)
                with read_write(config.hydra.run), open_dict(config.hydra.run):
                    config.hydra.run.dir = str(folder)
            self.lock = RunLock.acquire(folder, "hydra.run.dir")
        except PmmError as error:
            _fail(error)

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        self.release()

    def on_multirun_start(self, config: DictConfig, config_name: str | None = None, **kwargs: Any) -> None:
        try:
            from pmm.runtime.config_check import check_added_keys

            check_added_keys(config, config_name, multirun=True)
            if not secondary_process():
                HydraConfig.instance().set_config(config)
                self.lock = RunLock.acquire(Path(str(config.hydra.sweep.dir)), "hydra.sweep.dir")
        except PmmError as error:
            _fail(error)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self.release()

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None
