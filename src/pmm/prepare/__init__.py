"""Dataset preparation: raw public datasets -> the VOC-layout trees that ``data=voc`` reads.

``python -m pmm.prepare voc --voc VOC2012_DIR_OR_TAR --sbd SBD_DIR_OR_TGZ --out OUT [--copy] [--workers N]``
``python -m pmm.prepare coco --annotations JSON --images DIR --out OUT --split NAME [--copy] [--limit N] [--workers N]``

See :mod:`pmm.prepare.voc` and :mod:`pmm.prepare.coco` for what each writes.
"""

from __future__ import annotations

from pmm.data.class_names import read_class_names, write_class_names
from pmm.prepare.voc import PreparedVOC, prepare_voc, read_sbd_mat


def main(argv: list[str] | None = None) -> int:
    """The ``python -m pmm.prepare`` command line; returns the exit code (2 on bad input)."""
    from pmm.prepare.cli import main as cli_main

    return cli_main(argv)


__all__ = ["PreparedVOC", "main", "prepare_voc", "read_class_names", "read_sbd_mat", "write_class_names"]
