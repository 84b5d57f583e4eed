"""Every tutorial runs end to end as a user would run it."""
import glob
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TUTORIALS = sorted(glob.glob(os.path.join(ROOT, "tutorials", "*.py")))


def test_there_are_tutorials():
    assert TUTORIALS


@pytest.mark.parametrize("path", TUTORIALS, ids=os.path.basename)
def test_tutorial_runs(path):
    r = subprocess.run([sys.executable, path], capture_output=True, text=True, timeout=600,
                       env=dict(os.environ, PYTHONPATH=ROOT))
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stdout
    if path.endswith("02_train_cnn_digits.py"):
        acc = float(r.stdout.split("test accuracy: ")[1].split()[0])
        assert acc >= 0.97
        assert "images/s" in r.stdout and "resumed from it" in r.stdout
    if path.endswith("03_deploy_to_c.py"):
        for line in ("C matches Python bit for bit: True", "matches numpy: True", "truncated weights refused: True",
                     "damaged library refused by C: True", "damaged library refused by mlc.load",
                     "outputs identical to the first run"):
            assert line in r.stdout, line
    if path.endswith("04_data_parallel.py") and "needs mpi4py" not in r.stdout:
        assert "2 ranks end with the parameters of 1 process" in r.stdout and r.stdout.rstrip().endswith("True")
        assert 'allreduce(' in r.stdout and 'group=[0, 1]' in r.stdout
    if path.endswith("01_trace_and_jit.py"):
        assert "matches numpy: True" in r.stdout
        assert "error: matmul: contraction dims differ" in r.stdout
