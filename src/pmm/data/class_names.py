"""The class list a VOC-layout tree carries beside its masks: ``class_names.txt`` / ``class_names.json``.

Written by ``python -m pmm.prepare`` (both files), read by ``data=coco`` (and any dataset whose
classes are not fixed): background first, one name a line.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from pmm.errors import PmmError
from pmm.io import atomic_path

CLASS_NAMES_JSON = "class_names.json"
CLASS_NAMES_TXT = "class_names.txt"
MAX_NAMES = 255  # uint8 masks, 255 = ignore: background + at most 254 classes


def write_class_names(root: str | os.PathLike, names: Sequence[str]) -> None:
    """Write ``root/class_names.json`` (a JSON list) and ``root/class_names.txt`` (one name a line), atomically."""
    root = Path(root)
    for path, text in (
        (root / CLASS_NAMES_JSON, json.dumps(list(names), indent=2) + "\n"),
        (root / CLASS_NAMES_TXT, "".join(f"{name}\n" for name in names)),
    ):
        with atomic_path(path) as tmp:
            tmp.write_text(text, encoding="utf-8")


def read_class_names(root: str | os.PathLike) -> list[str]:
    """The class names of a prepared tree, background first: ``root/class_names.txt`` (one name a
    line), or ``root/class_names.json`` (a JSON list of strings) when there is no ``.txt``.

    Raises:
        PmmError: one line naming the file when neither exists, it cannot be read, or it is malformed
            (blank line, not a list of strings, fewer than 2 names, duplicates, first name not
            ``background``, more than 255 names).
    """
    root = Path(root).expanduser()
    txt, jsn = root / CLASS_NAMES_TXT, root / CLASS_NAMES_JSON
    fix = "one name a line, background first (python -m pmm.prepare writes it)"
    if txt.is_file():
        source = txt
        try:
            lines = txt.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as error:
            raise PmmError(f"{txt}: cannot be read ({error}); expected a UTF-8 text file, {fix}") from None
        while lines and not lines[-1].strip():
            lines.pop()
        names = [line.strip() for line in lines]
        blank = [number for number, name in enumerate(names, start=1) if not name]
        if blank:
            raise PmmError(f"{txt}: line {blank[0]} is blank; expected {fix}")
    elif jsn.is_file():
        source = jsn
        try:
            names = json.loads(jsn.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise PmmError(f"{jsn}: not valid JSON ({error}); expected a list of class names, background first") from None
        if not isinstance(names, list) or not all(isinstance(name, str) and name.strip() for name in names):
            raise PmmError(f"{jsn}: expected a JSON list of non-empty class names (strings), background first")
    else:
        raise PmmError(
            f"{txt}: class names file not found (nor {CLASS_NAMES_JSON}); prepare the tree with "
            "python -m pmm.prepare, or write it yourself: one name a line, background first"
        )
    if len(names) < 2:
        raise PmmError(f"{source}: holds {len(names)} class name(s); expected background and at least one class")
    if names[0] != "background":
        raise PmmError(f"{source}: the first class is {names[0]!r}; it must be 'background' (class id 0), add it first")
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise PmmError(f"{source}: class {duplicates[0]!r} is listed more than once; class names must be unique")
    if len(names) > MAX_NAMES:
        raise PmmError(f"{source}: {len(names)} class names, but uint8 masks (255 = ignore) hold at most {MAX_NAMES}")
    return list(names)
