"""Take a PNG screenshot of a report page (report.html or comparison.html) with headless Chromium.

    python scripts/screenshot_report.py RUN_DIR docs/report.png [--size 1280x2400]
    python scripts/screenshot_report.py RUN_DIR/report.html shot.png

The same as this command line (the background-networking flags keep Chromium from dialling out,
which a machine without internet refuses, many connections at a time):
    chromium --headless=new --no-sandbox --disable-gpu --disable-dev-shm-usage \
        --disable-background-networking --disable-component-update --disable-sync --no-first-run \
        --user-data-dir=$(mktemp -d) --window-size=1280,2400 --screenshot=docs/report.png file://$PWD/RUN_DIR/report.html

Chromium: ``apt-get install chromium`` (Debian), or ``--chromium PATH``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
         "--hide-scrollbars")


def screenshot(page: str | Path, output: str | Path, width: int = 1280, height: int = 2400,
               chromium: str = "chromium", timeout: float = 120) -> Path:
    """Render ``page`` (a report.html, or a run folder holding one) at ``width`` x ``height`` into the PNG ``output``."""
    page = Path(page)
    if page.is_dir():
        page = page / "report.html"
    if not page.is_file():
        raise SystemExit(f"screenshot_report: {page}: no such page; give a run folder or its report.html "
                         "(python -m pmm.report RUN_DIR draws it)")
    binary = shutil.which(chromium)
    if binary is None:
        raise SystemExit(f"screenshot_report: {chromium}: not found; install Chromium (apt-get install chromium) "
                         "or give --chromium PATH")
    output = Path(output).absolute()
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pmm-shot-") as profile:
        partial = Path(profile) / "shot.png"  # renamed onto output once complete
        command = [binary, *FLAGS, f"--user-data-dir={profile}/user", f"--window-size={width},{height}",
                   f"--screenshot={partial}", page.resolve().as_uri()]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0 or not partial.is_file():
            raise SystemExit(f"screenshot_report: chromium exited with {done.returncode} and wrote no PNG: "
                             f"{done.stderr.strip().splitlines()[-1:] or ''}")
        shutil.move(str(partial), str(output.with_suffix(".tmp.png")))
        os.replace(output.with_suffix(".tmp.png"), output)
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Screenshot a pmm report page with headless Chromium.")
    parser.add_argument("page", help="a run folder, its report.html, or a comparison.html")
    parser.add_argument("output", help="the PNG to write")
    parser.add_argument("--size", default="1280x2400", help="window WIDTHxHEIGHT in pixels (default 1280x2400)")
    parser.add_argument("--chromium", default="chromium", help="the Chromium binary (default: chromium on PATH)")
    args = parser.parse_args(argv)
    width, _, height = args.size.partition("x")
    print(screenshot(args.page, args.output, int(width), int(height), args.chromium))
    return 0


if __name__ == "__main__":
    sys.exit(main())
