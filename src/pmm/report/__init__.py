"""Run reports: ``report.html`` in every run folder and ``comparison.html`` across runs.

``python -m pmm.run`` writes ``report.html`` at the end of every run (also one stopped by an error
or Ctrl-C, with what exists); ``python -m pmm.report RUN_DIR [RUN_DIR ...]`` draws the pages again
and compares runs. Pages are plain HTML with inline CSS and relative image paths: they open from
``file://`` with no network.
"""

from pmm.report.comparison import write_comparison
from pmm.report.run_page import write_run_page, write_run_report

__all__ = ["write_comparison", "write_run_page", "write_run_report"]
