"""The package's layers: imports only point down, no module imports itself back in a circle.

Read from the source (every ``import``, at module level, inside functions and under
``TYPE_CHECKING`` alike: an arrow is an arrow), then checked in a fresh interpreter that imports
every module, each package's modules before the packages that use them.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pmm

PACKAGE = Path(pmm.__file__).resolve().parent

# Lowest first. A module may import modules of its own layer or below, never above.
LAYERS: list[tuple[str, ...]] = [
    ("pmm.errors",),
    ("pmm.io",),
    ("pmm.crf", "pmm.losses", "pmm.nets", "pmm.viz"),
    ("pmm.pseudo", "pmm.data", "pmm.checkpoints", "pmm.settings"),
    ("pmm.runtime", "pmm.scoring"),
    ("pmm.cam", "pmm.seg"),
    ("pmm.stages",),
    ("pmm.run", "pmm.predict", "pmm.prepare", "pmm.report"),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def layer_of(name: str) -> int:
    for index, prefixes in enumerate(LAYERS):
        if any(name == p or name.startswith(p + ".") for p in prefixes):
            return index
    if name == "pmm":
        return -1
    raise AssertionError(f"{name}: not in any layer of tests/test_imports.py; add it where it belongs")


def imported(path: Path, name: str, known: set[str]) -> set[str]:
    """The pmm modules ``path`` imports (``from pmm.x import y`` counts pmm.x.y when that is a module)."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        found.update(t for t in targets if t == "pmm" or t.startswith("pmm."))
    found.discard(name)
    return {t for t in found if t in known}


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: imported(path, name, known) for name, path in found.items()}


def test_every_module_has_a_layer_and_imports_only_point_down():
    upward = []
    for name, targets in graph().items():
        for target in targets:
            if target != "pmm" and layer_of(target) > layer_of(name):
                upward.append(f"{name} -> {target}")
    assert not upward, "imports that point up a layer:\n" + "\n".join(sorted(upward))


def test_no_import_cycle():
    edges = graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for target in sorted(edges.get(node, ())):
            if state.get(target) == 1:
                cycles.append(" -> ".join(trail[trail.index(target):] + [target]))
            elif target not in state:
                visit(target, trail + [target])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_every_module_imports_in_a_fresh_interpreter_lowest_layer_last():
    # Highest layer first: a cycle through a module-level ``from x import y`` fails when its
    # upper end is entered first, which a lower-first order would hide.
    names = sorted((n for n in modules() if not n.endswith("__main__")), key=lambda n: (-layer_of(n), n))
    script = "import importlib\nfor name in %r:\n    importlib.import_module(name)\nprint('imported', len(%r))" % (names, names)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"imported {len(names)}" in done.stdout


def test_no_stage_imports_another_stage():
    # The shared stage modules are the exception; the multi-crop round is part of stage=cam.
    shared = {"pmm.stages.cam_inference", "pmm.stages.cam_import", "pmm.stages.evaluation"}
    allowed = {("pmm.stages.cam", "pmm.stages.cam_multicrop")}
    crossing = [f"{name} -> {target}" for name, targets in graph().items() if name.startswith("pmm.stages.")
                for target in targets if target.startswith("pmm.stages.") and target not in shared
                and (name, target) not in allowed and target != "pmm.stages"]
    assert not crossing, "stage files importing other stage files:\n" + "\n".join(crossing)
