"""The few HTML pieces both pages are made of: escaping, numbers, tables, IoU bars, the page frame.

Plain HTML with one inline style sheet and no script: the pages open from ``file://`` with no
network (no CDN, no web font) and look the same in any browser.
"""

from __future__ import annotations

import html
import math
from typing import Iterable, Sequence

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       margin: 1.5em auto; max-width: 1200px; padding: 0 1em; color: #222; line-height: 1.4; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; } h2 { font-size: 1.2em; border-bottom: 1px solid #ddd;
     padding-bottom: 0.2em; margin-top: 1.8em; } h3 { font-size: 1em; margin: 1.2em 0 0.4em; }
nav a { margin-right: 0.9em; } .muted { color: #666; } .small { font-size: 0.85em; }
table { border-collapse: collapse; margin: 0.4em 0 1em; font-size: 0.92em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.headline td { font-weight: bold; background: #fff8e0; }
.bar { display: inline-block; height: 0.8em; background: #4a7fb5; vertical-align: middle; margin-right: 0.4em; }
.barbox { display: inline-block; width: 8em; background: #eef2f6; vertical-align: middle; }
.status { padding: 0.5em 0.8em; border-radius: 4px; margin: 0.6em 0; }
.status.done { background: #e6f4e6; } .status.stopped { background: #fdecea; }
figure { margin: 0.8em 0 1.4em; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
.cols { display: flex; flex-wrap: wrap; gap: 0 2em; align-items: flex-start; }
.figures { display: flex; flex-wrap: wrap; gap: 0 1.5em; align-items: flex-start; }
.figures figure { max-width: 760px; } .figures.pair figure { flex: 1 1 40%; max-width: 600px; }
figcaption { font-size: 0.9em; color: #555; margin-top: 0.3em; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
details summary { cursor: pointer; font-weight: bold; margin: 0.4em 0; }
code { background: #f4f4f4; padding: 0 0.2em; }
"""


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def number(value, digits: int = 4) -> str:
    """A metric as text: integers as they are, floats with ``digits`` decimals, NaN and None as n/a."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


def seconds_text(seconds: float) -> str:
    """``12.3 s``, ``4 min 05 s``, ``2 h 03 min``."""
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {rest:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def value_text(value, limit: int = 8) -> str:
    """Any metrics.json value as short escaped text: numbers formatted, long lists cut, dicts as ``k: v``."""
    if is_number(value) or value is None or isinstance(value, bool):
        return esc(number(value))
    if isinstance(value, str):
        return esc(value)
    if isinstance(value, (list, tuple)):
        shown = ", ".join(value_text(v, limit) for v in value[:limit])
        more = f" and {len(value) - limit} more" if len(value) > limit else ""
        return f"[{shown}]{esc(more)}" if value else "[]"
    if isinstance(value, dict):
        items = list(value.items())
        shown = "; ".join(f"{esc(k)}: {value_text(v, limit)}" for k, v in items[:limit])
        more = f"; and {len(items) - limit} more" if len(items) > limit else ""
        return shown + esc(more) if items else "{}"
    return esc(value)


def _bar(fraction: float, text: str) -> str:
    width = max(0.0, min(1.0, float(fraction))) * 100
    return f'<span class="barbox"><span class="bar" style="width:{width:.1f}%"></span></span>{text}'


def iou_bar(value) -> str:
    """A number with a bar as wide as the value (0..1): IoU tables read at a glance, with no image."""
    if not is_number(value) or math.isnan(value):
        return '<span class="muted">n/a</span>'
    return _bar(value, number(value))


def share_bar(fraction: float) -> str:
    """A fraction of a whole as a bar and a percentage."""
    return _bar(fraction, f"{100 * fraction:.0f}%")


def table(header: Sequence[str], rows: Iterable[Sequence[str]], numeric: Sequence[int] = (),
          row_classes: Sequence[str] | None = None) -> str:
    """A table of already-escaped cells; ``numeric`` column indices are right-aligned. Empty string without rows."""
    rows = [list(r) for r in rows]
    if not rows:
        return ""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    head = f"<thead><tr>{head}</tr></thead>" if any(header) else ""  # a table of (name, value) rows needs none
    body = []
    for index, row in enumerate(rows):
        css = f' class="{row_classes[index]}"' if row_classes and row_classes[index] else ""
        cells = "".join(f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>" for i, c in enumerate(row))
        body.append(f"<tr{css}>{cells}</tr>")
    return f"<table>{head}<tbody>{''.join(body)}</tbody></table>"


def page(title: str, body: str) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{esc(title)}</title>"
            f"<style>{STYLE}</style></head><body>\n{body}\n</body></html>\n")
