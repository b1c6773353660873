"""The house rules of the layout: the library under src/torchkfp never imports kfp (only the CLI,
the top layer, reaches the pipelines, lazily), and no import cycle among the project's own
modules, lazy imports (inside functions) included."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "torchkfp"
# the KFP layer lives in top-level folders, imported as torchkfp.components / torchkfp.pipelines
PACKAGE_DIRS = {
    "torchkfp": SRC,
    "torchkfp.components": ROOT / "components",
    "torchkfp.pipelines": ROOT / "pipelines",
}
TOP_LAYER = ("cli",)
KFP_LAYER = ("torchkfp.components", "torchkfp.pipelines")


def _modules() -> dict[str, Path]:
    """Every module of the project by its import name."""
    mods = {}
    for pkg, folder in PACKAGE_DIRS.items():
        for path in folder.rglob("*.py"):
            rel = path.relative_to(folder).with_suffix("").parts
            if pkg == "torchkfp" and rel and rel[0] in ("components", "pipelines"):
                continue
            name = ".".join((pkg, *rel))
            mods[name.removesuffix(".__init__")] = path
    return mods


def _runtime_nodes(tree: ast.AST):
    """Every node, except those under ``if TYPE_CHECKING:`` (never imported at run time)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))


def _imports(path: Path) -> set[str]:
    """Names of what a module imports anywhere in it, imports inside functions included
    (``from X import Y`` gives X.Y)."""
    names = set()
    for node in _runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return names


def import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports: for ``X.Y`` the longest prefix that is a
    module (``from pkg import sub`` is an edge to pkg.sub, ``from pkg import name`` to pkg)."""
    mods = _modules()
    graph = {}
    for name, path in mods.items():
        deps = set()
        for imported in _imports(path):
            parts = imported.split(".")
            for i in range(len(parts), 0, -1):
                target = ".".join(parts[:i])
                if target in mods:
                    deps.add(target)
                    break
        deps.discard(name)
        graph[name] = deps
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, on_stack, stack, out = {}, {}, set(), [], []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle_among_project_modules():
    graph = import_graph()
    assert len(graph) > 40  # the scan sees the whole project
    assert find_cycles(graph) == []


def test_cycle_finder_finds_a_cycle():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_library_modules_do_not_import_kfp_or_the_kfp_layer():
    offenders = {}
    for name, path in _modules().items():
        if name.startswith(KFP_LAYER) or name.split(".")[1:2] == list(TOP_LAYER[:1]):
            continue
        bad = {n for n in _imports(path) if n.split(".")[0] == "kfp" or n.startswith(KFP_LAYER)}
        if bad:
            offenders[name] = bad
    assert not offenders, offenders


def test_importing_the_library_and_cli_help_do_not_load_kfp():
    code = (
        "import sys, importlib, pkgutil, torchkfp\n"
        "mods = [m.name for m in pkgutil.walk_packages(torchkfp.__path__, 'torchkfp.')\n"
        "        if not m.name.startswith(('torchkfp.components', 'torchkfp.pipelines'))]\n"
        "for m in mods: importlib.import_module(m)\n"
        "assert 'kfp' not in sys.modules, 'kfp imported'\n"
        "assert 'torch' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_every_package_is_listed_for_setuptools():
    """pyproject lists packages by hand (components/ and pipelines/ are mapped into the
    torchkfp namespace): a package missing there installs nowhere but an editable checkout."""
    import tomllib

    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {name for name, path in _modules().items() if path.name == "__init__.py"} | {
        "torchkfp.sql"
    }
    assert found == listed


@pytest.mark.parametrize("command", ["run", "compile"])
def test_a_config_error_exits_before_kfp_is_imported(command, tmp_path):
    """``torchkfp run``/``compile`` with a bad setting answer at once (kfp takes seconds)."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epochs: 0\n")
    args = [command, "-c", str(bad), "--out", str(tmp_path / "out")][: 3 if command == "run" else 5]
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from torchkfp.cli import app\n"
        f"r = CliRunner().invoke(app, {args!r})\n"
        "assert r.exit_code == 2, (r.exit_code, r.output)\n"
        "assert 'train.epochs must be >= 1' in r.output, r.output\n"
        "assert 'kfp' not in sys.modules, 'kfp imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert not (tmp_path / "out").exists()
