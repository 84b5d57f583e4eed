"""The layer table (docs/design.md; pyproject.toml [tool.importlinter]) holds: the
contract passes on this tree, and a backward import, even one inside a function,
fails it with the chain that breaks it."""
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LINT = os.path.join(os.path.dirname(sys.executable), "lint-imports")
needs_linter = pytest.mark.skipif(not os.path.exists(LINT), reason="needs import-linter: pip install '.[dev]'")


def _lint(root: str) -> subprocess.CompletedProcess:
    return subprocess.run([LINT, "--no-cache"], cwd=root, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": root})


@needs_linter
def test_the_layer_table_holds():
    r = _lint(ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Contracts: 2 kept, 0 broken." in r.stdout


@needs_linter
def test_a_backward_import_inside_a_function_breaks_the_contract(tmp_path):
    shutil.copytree(os.path.join(ROOT, "mlc"), tmp_path / "mlc", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(os.path.join(ROOT, "pyproject.toml"), tmp_path)
    with open(tmp_path / "mlc" / "ops" / "registry.py", "a") as f:   # ops reaching up to the driver
        f.write("\n\ndef _compile_here(g):\n    from ..driver import compile_graph\n    return compile_graph(g)\n")
    r = _lint(str(tmp_path))
    assert r.returncode != 0
    assert "mlc.ops is not allowed to import mlc.driver" in r.stdout
    assert "mlc.ops.registry -> mlc.driver" in r.stdout
