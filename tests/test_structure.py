"""The code's shape: one-way imports (no cycle, not even through imports inside functions),
every module importable on its own, small files and functions (README, "How the code is
organised")."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("hydralanet", "training", "webapp", "benchmarks")
MAX_FILE_LINES = 500
MAX_FUNCTION_LINES = 80


def source_files() -> list[Path]:
    files = [ROOT / "app.py", *sorted((ROOT / "tools").glob("*.py"))]
    for package in PACKAGES:
        files += sorted((ROOT / package).rglob("*.py"))
    return files


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def project_imports(path: Path, known: set[str]) -> set[str]:
    """Project modules ``path`` imports anywhere in its code (functions included), except
    under ``if TYPE_CHECKING:``; ``from pkg import name`` counts ``pkg.name`` when that is a module."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return {m for m in found if m in known and m != name}


def import_graph() -> dict[str, set[str]]:
    files = source_files()
    known = {module_name(p) for p in files}
    return {module_name(p): project_imports(p, known) for p in files}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (as a list of modules, first repeated last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            # a package's __init__ is imported on the way to its modules: not an edge back
            if node.startswith(nxt + "."):
                continue
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := walk(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := walk(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_cycles() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"p": {"p.x"}, "p.x": {"p"}}) is None  # a package and its own module


def test_no_import_cycle() -> None:
    graph = import_graph()
    assert graph["hydralanet.inference.loaded"] and graph["app"]  # the graph sees imports at all
    assert find_cycle(graph) is None


# The library's layers, lowest first: a module imports from its own layer and the ones below,
# never from above (the package's root, `hydralanet`, only for `__version__`).
LAYERS = (
    ("hydralanet._lazy", "hydralanet._moved", "hydralanet.config", "hydralanet.io", "hydralanet.preprocessing"),
    ("hydralanet.model",),
    ("hydralanet.checkpoints",),
    ("hydralanet.inference",),
    ("hydralanet.reading",),
    ("hydralanet.report",),
    ("hydralanet.batch",),
    ("hydralanet.cli", "hydralanet.__main__"),
)


def layer_of(module: str) -> int | None:
    for level, names in enumerate(LAYERS):
        if any(module == name or module.startswith(name + ".") for name in names):
            return level
    return None


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    """``"a -> b"`` for each library module ``a`` that imports ``b`` from a higher layer, or
    from outside the library other than the standard and third-party libraries."""
    found = []
    for module, imports in sorted(graph.items()):
        if not module.startswith("hydralanet"):
            continue
        for imported in sorted(imports):
            if imported.startswith(("training", "webapp", "benchmarks", "tools", "app")):
                found.append(f"{module} -> {imported}")
            elif module != "hydralanet" and imported != "hydralanet" and imported.startswith("hydralanet"):
                mine, theirs = layer_of(module), layer_of(imported)
                if mine is None or theirs is None or theirs > mine:
                    found.append(f"{module} -> {imported}")
    return found


def test_every_library_module_has_a_layer() -> None:
    modules = [m for m in import_graph() if m.startswith("hydralanet.")]
    assert len(modules) > 40
    assert [m for m in modules if layer_of(m) is None] == []


def test_the_layer_check_sees_an_import_that_points_up() -> None:
    graph = {
        "hydralanet.inference.loaded": {"hydralanet.checkpoints.read", "hydralanet.inference.fast"},
        "hydralanet.checkpoints.read": {"hydralanet.inference.fast", "hydralanet.config"},
        "hydralanet.report.pdf": {"hydralanet", "hydralanet.reading.zones"},
        "hydralanet.batch.runner": {"benchmarks.speed"},
    }
    assert layer_violations(graph) == [
        "hydralanet.batch.runner -> benchmarks.speed",
        "hydralanet.checkpoints.read -> hydralanet.inference.fast",
    ]


def test_layers_point_one_way() -> None:
    graph = import_graph()
    assert layer_violations(graph) == []
    for module, imports in graph.items():
        if module.startswith("webapp"):
            assert not {m for m in imports if m.startswith(("training", "app"))}, module


# Imports each module named in argv in a child forked from this interpreter, which holds the
# third-party libraries the project imports (torch, cv2, streamlit, ...) but no project module:
# each child starts as a fresh interpreter would, minus the libraries' start-up cost. Prints
# {module: last line of its error} as JSON.
IMPORT_EACH_ALONE = """
import importlib, json, os, shutil, sys, tempfile, traceback
for name in json.loads(sys.argv[1]):
    try:
        importlib.import_module(name)
    except Exception:
        pass
project = [m for m in sys.modules if m.split(".")[0] in ("app", "tools", "hydralanet", "training", "webapp")]
assert not project, project
# Bytecode into a folder of this run's, even under PYTHONDONTWRITEBYTECODE: each project module
# is compiled by the first child that imports it, not by every one.
sys.pycache_prefix, sys.dont_write_bytecode = tempfile.mkdtemp(), False
failures = {}
for module in sys.argv[2:]:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            importlib.import_module(module)
            os._exit(0)
        except BaseException:
            os.write(write, traceback.format_exc().strip().splitlines()[-1].encode())
            os._exit(1)
    os.close(write)
    with os.fdopen(read) as error:
        message = error.read()
    if os.waitpid(pid, 0)[1] != 0:
        failures[module] = message or "died"
shutil.rmtree(sys.pycache_prefix)
print(json.dumps(failures))
"""


def third_party_imports(paths: list[Path]) -> set[str]:
    """Top-level names of the libraries the files import (anywhere in them), standard library included."""
    names = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names.add(node.module.split(".")[0])
    return names - {"app", "tools", *PACKAGES}


def test_every_module_imports_alone_in_a_fresh_interpreter() -> None:
    modules = [m for m in sorted(import_graph()) if m not in ("app",) and not m.endswith("__main__")]
    libraries = sorted(third_party_imports(source_files()))
    assert {"torch", "cv2", "streamlit"} <= set(libraries)
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_EACH_ALONE, json.dumps(libraries), *modules],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {}


def test_the_import_check_sees_a_module_that_needs_another_imported_first(tmp_path: Path) -> None:
    """A module that works only when a project module was imported before it fails the check."""
    package = tmp_path / "hydralanet"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "first.py").write_text("import sys\nsys.modules[__name__].ready = True\n")
    (package / "second.py").write_text("import sys\nassert 'hydralanet.first' in sys.modules, 'first missing'\n")
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_EACH_ALONE, "[]", "hydralanet.first", "hydralanet.second", "hydralanet.nope"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    failures = json.loads(done.stdout.strip().splitlines()[-1])
    assert failures.keys() == {"hydralanet.second", "hydralanet.nope"}
    assert failures["hydralanet.second"] == "AssertionError: first missing"


@pytest.mark.parametrize("path", source_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_small_files_and_functions(path: Path) -> None:
    text = path.read_text()
    assert len(text.splitlines()) <= MAX_FILE_LINES, f"{path.name}: {len(text.splitlines())} lines"
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(ast.parse(text))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert long == []
