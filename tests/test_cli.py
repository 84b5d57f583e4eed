"""The `mlc` command, run as a user would."""
import os
import subprocess
import sys

import mlc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*args):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", "mlc.cli", *args], env=env, capture_output=True, text=True)


def test_version():
    r = run("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"mlc {mlc.__version__}"


def test_ir_prints_every_level():
    r = run("ir", "mlp")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    for header in ("graph", "tensor", "loop", "llvm"):
        assert f";; ===== {header} =====" in out
    assert "graph @mlp(" in out and "kernel @softmax_4(" in out and "func @matmul_0(" in out
    assert "define void @\"mlc_entry\"" in out


def test_ir_asm_level_and_bad_input():
    r = run("ir", "gelu", "--level", "asm")
    assert r.returncode == 0 and "mlc_entry:" in r.stdout
    r = run("ir", "nosuch")
    assert r.returncode != 0 and "unknown example 'nosuch'; available: gelu, mlp" in r.stderr
    r = run("ir", "mlp", "--level", "bogus")
    assert r.returncode != 0 and "unknown IR level 'bogus'" in r.stderr


def test_demo_runs_and_checks_against_numpy():
    r = run("demo", "--batch", "8")
    assert r.returncode == 0, r.stderr
    assert "demo OK" in r.stdout and "max relative error vs numpy" in r.stdout
