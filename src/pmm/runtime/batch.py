"""Global batch sizes: the batch of one optimiser step over all processes, and each process's share.

A paper setting is a *global* batch (the reference's 16 images a step on 8 GPUs). A training node
(``cam``, ``cam.multi_crop``, ``seg``) may state it as ``global_batch_size``; at start-up the
per-process ``batch_size`` becomes ``global_batch_size / (world size x accumulate_grad_batches)``,
so the same preset trains with the same batch on 1, 2, 4 or 8 GPUs. Without it ``batch_size`` is
per process, as the DataLoader sees it. Either way the run records what each stage trains with.
"""

from __future__ import annotations

import logging

from omegaconf import DictConfig, OmegaConf, open_dict

from pmm.errors import PmmError

log = logging.getLogger("pmm")

# The training nodes with a batch: config key, and whether the node trains in this run.
NODES = ("cam", "cam.multi_crop", "seg")


def per_process_batch(global_batch: int, world_size: int, accumulate: int, key: str) -> int:
    """``global_batch / (world_size * accumulate)``; one line naming both numbers when it does not divide."""
    share = world_size * accumulate
    if global_batch % share:
        raise PmmError(
            f"{key}.global_batch_size={global_batch} is not divisible by the {world_size} processes "
            f"(trainer.devices x trainer.num_nodes) x trainer.accumulate_grad_batches={accumulate}; run on a device "
            f"count that divides it, or set trainer.accumulate_grad_batches so that processes x accumulation "
            f"divides {global_batch}"
        )
    return global_batch // share


def resolve_batches(cfg: DictConfig, world_size: int) -> dict:
    """Set each node's per-process ``batch_size`` from its ``global_batch_size`` (in place).

    ``cam.multi_crop.batch_size`` null stays null (the round takes ``cam``'s). Returns, per node
    that has a batch, ``{"global_batch_size", "world_size", "accumulate_grad_batches",
    "per_process_batch_size"}``.
    """
    accumulate = int(cfg.trainer.get("accumulate_grad_batches", 1) or 1)
    result = {}
    for key in NODES:
        node = OmegaConf.select(cfg, key)
        if not isinstance(node, DictConfig):
            continue
        global_batch = node.get("global_batch_size")
        if global_batch is not None:
            with open_dict(node):
                node.batch_size = per_process_batch(int(global_batch), world_size, accumulate, key)
        batch = node.get("batch_size")
        if key == "cam.multi_crop" and batch is None:
            batch = cfg.cam.batch_size
        result[key] = {
            "global_batch_size": int(batch) * world_size * accumulate,
            "world_size": int(world_size),
            "accumulate_grad_batches": accumulate,
            "per_process_batch_size": int(batch),
        }
    return result


def describe(batches: dict) -> str:
    """One log line: ``cam 24 = 3 x 8 processes, seg 16 = 2 x 8 processes``."""
    parts = []
    for key, b in batches.items():
        accumulation = f" x {b['accumulate_grad_batches']} accumulated" if b["accumulate_grad_batches"] > 1 else ""
        parts.append(f"{key} {b['global_batch_size']} = {b['per_process_batch_size']} x {b['world_size']} "
                     f"process{'es' if b['world_size'] > 1 else ''}{accumulation}")
    return "global batch: " + ", ".join(parts)
