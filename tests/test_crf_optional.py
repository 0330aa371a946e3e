"""pydensecrf2 is an optional extra: without it the defaults run, and choosing it is one clear line.

pydensecrf2 is hidden by ``sys.modules['pydensecrf'] = None`` (the import machinery then raises
ModuleNotFoundError, as for a package that is not installed), in this process or in a child.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

import pmm
from pmm.crf import CRFParams, dense_crf, get_crf_backend
from pmm.crf.pydensecrf_backend import PyDenseCRFBackend, solve_one, unavailable_reason
from pmm.errors import PmmError
from pmm.settings import Settings

CONF_DIR = str(Path(pmm.__file__).parent / "conf")
ROOT = Path(__file__).resolve().parents[1]
HIDE = "import sys; sys.modules['pydensecrf'] = None\n"


@pytest.fixture
def hidden(monkeypatch):
    """pydensecrf2 not importable for the test's duration (restored after)."""
    monkeypatch.setitem(sys.modules, "pydensecrf", None)
    monkeypatch.delitem(sys.modules, "pydensecrf.densecrf", raising=False)  # an earlier test may have loaded it
    get_crf_backend.cache_clear()  # a backend built earlier in this process must not hide the check
    yield
    get_crf_backend.cache_clear()


def compose_config(overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=CONF_DIR):
        return compose("config", overrides=overrides)


def test_hidden_module_reads_as_not_installed(hidden):
    assert unavailable_reason() == "pydensecrf2 is not installed"


def test_a_broken_install_is_told_apart(monkeypatch):
    """Installed, but its C extension does not load (built against another libstdc++): said as such."""

    class Broken:
        @staticmethod
        def find_spec(name, path=None, target=None):
            if name.split(".")[0] == "pydensecrf":
                raise ImportError("libstdc++.so.6: version `GLIBCXX_3.4.32' not found\n(required by densecrf.so)")
            return None

    for name in ("pydensecrf", "pydensecrf.densecrf"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.setattr(sys, "meta_path", [Broken(), *sys.meta_path])
    reason = unavailable_reason()
    assert reason.startswith("pydensecrf2 is installed but its C extension does not load (libstdc++.so.6")
    assert "GLIBCXX_3.4.32" in reason and "\n" not in reason


def test_the_defaults_run_without_pydensecrf(hidden):
    """The composed config validates and every CRF node, and CRFParams' default, is on a backend that needs no C++ build."""
    settings = Settings.from_config(compose_config([]))
    assert {name: params.backend for name, params in settings.crf.items()} == {"pseudo": "fast", "seg": "fast",
                                                                              "rough": "fast"}
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (16, 20, 3), dtype=np.uint8)
    q = dense_crf(image, rng.random((3, 16, 20)), CRFParams())
    np.testing.assert_allclose(q.sum(axis=0), 1.0, atol=1e-5)


@pytest.mark.parametrize("node", ["pseudo", "seg", "rough"])
def test_choosing_pydensecrf_without_it_is_one_line_at_start_up(hidden, node):
    key = f"crf.{node}.backend"
    with pytest.raises(PmmError) as error:
        Settings.from_config(compose_config([f"{key}=pydensecrf"]))
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"{key}=pydensecrf: pydensecrf2 is not installed")
    assert 'pip install "pmm[pydensecrf]"' in message and message.endswith(f"or choose {key}=fast")


def test_the_backend_itself_says_so_when_used_directly(hidden):
    """dense_crf with backend=pydensecrf (no config in between), a dotted path, solve_one: the same fix, one line."""
    image = np.zeros((8, 8, 3), dtype=np.uint8)
    probs = np.full((2, 8, 8), 0.5, dtype=np.float32)
    for call in (lambda: dense_crf(image, probs, CRFParams(backend="pydensecrf")),
                 lambda: get_crf_backend("pmm.crf.pydensecrf_backend.PyDenseCRFBackend"),
                 PyDenseCRFBackend,
                 lambda: solve_one(image, probs, CRFParams())):
        with pytest.raises(PmmError) as error:
            call()
        message = str(error.value)
        assert "\n" not in message
        assert message.startswith("CRF backend 'pydensecrf': pydensecrf2 is not installed")
        assert 'pip install "pmm[pydensecrf]"' in message and "backend=fast" in message


def test_the_cli_stops_before_any_work_with_one_line(tmp_path):
    """``python -m pmm.run`` without pydensecrf2 and crf.rough.backend=pydensecrf: rc 2, the line, nothing trained."""
    run_dir = tmp_path / "run"
    script = HIDE + "import runpy; runpy.run_module('pmm.run', run_name='__main__', alter_sys=True)\n"  # -m pmm.run
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env["PMM_DATA_DIR"] = str(tmp_path / "data")
    result = subprocess.run([sys.executable, "-c", script, "stage=all", "debug=smoke", "crf.rough.backend=pydensecrf",
                             f"hydra.run.dir={run_dir}"], capture_output=True, text=True, env=env, timeout=300,
                            cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last == ('pmm: error: crf.rough.backend=pydensecrf: pydensecrf2 is not installed (the exact reference CRF, '
                    'an optional C++ extension); install it with pip install "pmm[pydensecrf]", or choose '
                    'crf.rough.backend=fast')
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "data").exists() and not (run_dir / "checkpoints").exists()  # stopped before the data


def test_reference_tests_skip_without_pydensecrf_and_fail_under_ci(tmp_path):
    """The ``pydensecrf`` marker: skipped with the reason and the fix; under CI an error at set-up instead."""
    script = HIDE + "import pytest\nsys.exit(pytest.main(sys.argv[1:]))\n"
    args = [sys.executable, "-c", script, "-q", "-p", "no:cacheprovider", "-o", "addopts=-ra",
            "tests/test_crf_fast_multilabel.py", "-k", "colour_edge"]
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    local = subprocess.run(args, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert local.returncode == 0, local.stdout[-3000:]
    assert re.search(r"1 passed, 1 skipped, \d+ deselected", local.stdout)
    assert 'needs crf backend=pydensecrf: pydensecrf2 is not installed; pip install "pmm[pydensecrf]"' in local.stdout
    ci = subprocess.run(args, capture_output=True, text=True, env=dict(env, CI="true"), cwd=ROOT, timeout=300)
    assert ci.returncode == 1, ci.stdout[-3000:]
    assert re.search(r"1 passed, \d+ deselected, 1 error", ci.stdout) and "CI must run the reference checks" in ci.stdout


def test_the_crf_benchmarks_say_they_need_the_extra(hidden, tmp_path, capsys):
    """bench_crf.py stops with one line; run_all.py leaves its CRF sections out and says why."""
    from conftest import load_script

    bench = load_script("benchmarks/bench_crf.py", "pmm_bench_crf_without_reference")
    assert bench.main(["--only", "rough"]) == 2
    line = capsys.readouterr().err.strip()
    assert line == ('bench_crf: error: bench_crf.py measures every backend against crf backend=pydensecrf, the exact '
                    'reference loop: pydensecrf2 is not installed; pip install "pmm[pydensecrf]" (included in .[dev])')
    run_all = load_script("benchmarks/run_all.py", "pmm_bench_run_all_without_reference")
    out = tmp_path / "results.md"
    assert run_all.main(["--only", "crf", "crf_seg", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "[run_all] crf skipped: bench_crf.py measures every backend against crf backend=pydensecrf" in err
    text = out.read_text()
    assert "_0 section(s) in" in text and "## Dense CRF" not in text
    assert text.count('not measured: bench_crf.py measures every backend against crf backend=pydensecrf') == 2
