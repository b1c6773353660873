"""The library under src/torchkfp never imports kfp; only the CLI (top layer) reaches the
pipelines, lazily."""

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "torchkfp"
TOP_LAYER = {"cli.py"}
KFP_LAYER = ("torchkfp.components", "torchkfp.pipelines")


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_library_modules_do_not_import_kfp_or_the_kfp_layer():
    offenders = {}
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC).as_posix()
        if rel in TOP_LAYER or rel.startswith("commands/"):
            continue
        bad = {
            n for n in _imports(path)
            if n.split(".")[0] == "kfp" or n.startswith(KFP_LAYER)
        }  # fmt: skip
        if bad:
            offenders[rel] = bad
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
