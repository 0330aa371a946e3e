"""Cyclic Pseudo-mask: between training rounds the segmenter's own predictions become the next masks."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytorch_lightning as pl
import torch

from pmm.data.voc import VOCSplit
from pmm.crf import CRFParams
from pmm.runtime.distributed import run_sharded
from pmm.seg.inference import predict_split_to_folder
from pmm.nets.tta import TTAConfig

log = logging.getLogger("pmm")


class CyclicPseudoMask(pl.Callback):
    """At the end of every ``every_n_epochs`` epochs (``rounds`` times), relabel the training split.

    The new round is written to ``<output_root>/round_<r>/``; every rank predicts its own shard and
    the round becomes active (the datamodule swaps folders) only after all ranks finished it.

    Args:
        split: the training split.
        datamodule: a :class:`~pmm.seg.datamodule.PseudoMaskDataModule`.
        output_root: the folder holding ``round_<r>`` folders.
        rounds: how many new rounds to make during the fit.
        every_n_epochs: epochs per round.
        reinit: start each new round from the initial weights (the paper's protocol).
        puf_first_round_only: plain cross-entropy after the first round (the paper's protocol).
        on_round: ``fn(round_index, folder)`` called on rank 0 when a round is complete (scoring).
        tta: how the training images are predicted (:class:`pmm.nets.tta.TTAConfig` fields).
        crf: ``crf.seg`` settings of the dense-CRF refinement, or None for none.
        relabel_from: ``last`` (the weights at the round's end) or ``best`` (the checkpoint with the best
            val mIoU so far, as the reference relabels train_aug).
    """

    def __init__(
        self,
        split: VOCSplit,
        datamodule,
        output_root: Path,
        rounds: int = 1,
        every_n_epochs: int = 1,
        reinit: bool = False,
        puf_first_round_only: bool = True,
        restrict_to_labels: bool = True,
        batch_size: int = 16,
        on_round: Callable[[int, Path], None] | None = None,
        tta: TTAConfig | dict | None = None,
        crf: CRFParams | dict | None = None,
        relabel_from: str = "last",
    ) -> None:
        if relabel_from not in ("last", "best"):
            raise ValueError(f"cyclic.relabel_from={relabel_from}: expected last or best")
        self.split, self.datamodule, self.output_root = split, datamodule, Path(output_root)
        self.rounds, self.every_n_epochs = rounds, every_n_epochs
        self.reinit, self.puf_first_round_only = reinit, puf_first_round_only
        self.restrict_to_labels, self.batch_size = restrict_to_labels, batch_size
        self.on_round = on_round
        self.tta = tta if isinstance(tta, TTAConfig) else TTAConfig.from_config(tta or {})
        self.crf = CRFParams.from_config(crf, "crf.seg") if isinstance(crf, dict) else crf
        self.relabel_from = relabel_from
        self.round = 0

    def round_folder(self, index: int) -> Path:
        return self.output_root / f"round_{index}"

    def state_dict(self) -> dict:
        return {"round": self.round}

    def load_state_dict(self, state_dict: dict) -> None:
        # Resuming: complete rounds are kept, training continues on the last active one.
        self.round = int(state_dict.get("round", 0))
        if self.round > 0:
            self.datamodule.set_mask_dir(self.round_folder(self.round))

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.round > 0 and self.puf_first_round_only:
            pl_module.set_loss_mode("none")

    def relabelling_net(self, trainer: pl.Trainer, pl_module: pl.LightningModule):
        """The network that predicts the new round: the current one, or the best-val checkpoint's weights."""
        if self.relabel_from == "last":
            return pl_module.net
        import copy

        best = [c.best_model_path for c in trainer.checkpoint_callbacks
                if getattr(c, "monitor", None) == "val/miou" and getattr(c, "best_model_path", "")]
        if not best or not Path(best[0]).is_file():
            log.warning("cyclic.relabel_from=best: no best-val checkpoint yet; relabelling with the current weights")
            return pl_module.net
        state = torch.load(best[0], map_location="cpu", weights_only=True)["state_dict"]
        net = copy.deepcopy(pl_module.net)
        net.load_state_dict({k[len("net."):]: v for k, v in state.items() if k.startswith("net.")})
        log.info("cyclic round %d relabels with the best-val checkpoint %s", self.round + 1, best[0])
        return net.to(pl_module.device)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        if self.round >= self.rounds or epoch % self.every_n_epochs:
            return
        if trainer.max_epochs is not None and 0 < trainer.max_epochs <= epoch:
            return  # the fit ends here: no round would train on new masks
        if trainer.max_steps is not None and 0 < trainer.max_steps <= trainer.global_step:
            return
        new_round = self.round + 1
        folder = self.round_folder(new_round)

        net = self.relabelling_net(trainer, pl_module)

        def write(ids: list[str]) -> None:
            predict_split_to_folder(net, self.split, ids, folder, batch_size=self.batch_size,
                                    use_labels=self.restrict_to_labels, progress=trainer.is_global_zero,
                                    device=pl_module.device, tta=self.tta, crf=self.crf)

        # Every rank writes its shard; the round is complete on every rank before anyone trains on it.
        run_sharded(self.split.ids, write, (lambda: self.on_round(new_round, folder)) if self.on_round else None)
        self.round = new_round
        self.datamodule.set_mask_dir(folder)
        if self.reinit:
            pl_module.reinitialize()
        if self.puf_first_round_only:
            pl_module.set_loss_mode("none")
        log.info("cyclic round %d active from epoch %d (%s)", new_round, epoch, folder)
