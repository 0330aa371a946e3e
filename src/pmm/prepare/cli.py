"""``python -m pmm.prepare voc|coco|folder``: one entry point for the dataset preparers."""

from __future__ import annotations

import argparse
import shlex
import sys

from pmm.errors import PmmError


def _voc_command(args: argparse.Namespace) -> int:
    from pmm.prepare.voc import prepare_voc

    result = prepare_voc(
        args.voc, args.sbd, args.out, link_images=not args.copy, workers=args.workers, progress=not args.no_progress
    )
    print(result.summary())
    train = "train_aug" if "train_aug" in result.splits else "train"
    print(
        "use it with: pmm data=voc "
        + shlex.quote(f"data.root={result.root}")
        + f" data.mask_dir=SegmentationClassAug data.train_split={train} data.val_split=val"
    )
    return 0


def _folder_command(args: argparse.Namespace) -> int:
    from pmm.prepare.folder import export_folder

    names = [n.strip() for n in args.class_names.split(",")] if args.class_names else None
    result = export_folder(args.voc, args.out, **({"class_names": names} if names else {}), mask_dir=args.mask_dir,
                           long_side=args.long_side, masks=args.masks, progress=not args.no_progress)
    print(f"{result.num_images} images and labels.csv ({len(result.class_names) - 1} classes) in {result.out}")
    print("use it with: " + result.command())
    return 0


def build_parser() -> argparse.ArgumentParser:
    from pmm.prepare.coco import add_arguments as add_coco_arguments

    parser = argparse.ArgumentParser(
        prog="python -m pmm.prepare",
        description="Prepare public datasets as VOC-layout trees for data=voc (rerunnable; bad input exits with code 2).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{voc,coco,folder}")
    voc = commands.add_parser(
        "voc",
        help="PASCAL VOC 2012 + SBD -> SegmentationClassAug and train_aug",
        description="PASCAL VOC 2012 + SBD -> a VOC-layout tree with SegmentationClassAug/ and the train_aug list "
        "((VOC train + SBD train + SBD val) - VOC val).",
    )
    voc.add_argument("--voc", required=True, help="VOCdevkit/VOC2012 folder, or VOCtrainval_11-May-2012.tar")
    voc.add_argument("--sbd", required=True, help="SBD benchmark_RELEASE/dataset folder, or benchmark.tgz")
    voc.add_argument("--out", required=True, help="output tree, e.g. data/voc_aug (archives are unpacked into OUT/.raw/)")
    voc.add_argument("--copy", action="store_true", help="copy images, VOC masks and XML instead of symlinking them")
    voc.add_argument("--workers", type=int, default=None, help="worker processes (default: CPUs, at most 8)")
    voc.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    voc.set_defaults(run=_voc_command)
    coco = commands.add_parser(
        "coco",
        help="COCO instances JSON + images -> SegmentationClass and class_names.txt",
        description="Convert COCO instance annotations into the VOC devkit layout read by data=voc.",
    )
    add_coco_arguments(coco)
    folder = commands.add_parser(
        "folder",
        help="a VOC-layout tree -> images/ + labels.csv (+ masks/) for data=folder",
        description="Write the images of a VOC-layout tree that have a mask as a data=folder dataset: images/, "
        "labels.csv (the classes of each mask) and, with --masks, masks/ renumbered to the labels file's class order.",
    )
    folder.add_argument("--voc", required=True, help="a VOC-layout tree (JPEGImages/, SegmentationClass/)")
    folder.add_argument("--out", required=True, help="output folder")
    folder.add_argument("--mask-dir", default="SegmentationClass", help="the tree's mask folder")
    folder.add_argument("--class-names", default=None, help="comma-separated names of the mask ids, background first "
                        "(default: the 21 VOC classes)")
    folder.add_argument("--long-side", type=int, default=None, help="shrink every image to this long side first")
    folder.add_argument("--masks", action="store_true", help="also write masks/ (for scoring with data.masks)")
    folder.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    folder.set_defaults(run=_folder_command)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except PmmError as error:
        print(f"pmm: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pmm: interrupted; every file written so far is complete, run the same command again to finish", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
