"""mlc's default wait policy for libgomp (mlc/runtime/threads.py): a bounded spin set
before libgomp loads, where the user set none, and never over the user's setting."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from mlc.runtime import threads


@pytest.mark.parametrize("env, want", [
    ({}, str(threads.DEFAULT_SPINCOUNT)),
    ({"OMP_WAIT_POLICY": " "}, str(threads.DEFAULT_SPINCOUNT)),     # blank is unset, as libgomp reads it
    ({"OMP_WAIT_POLICY": "passive"}, None),
    ({"OMP_WAIT_POLICY": "active"}, None),
    ({"GOMP_SPINCOUNT": "0"}, None),
    ({"GOMP_SPINCOUNT": "infinite", "OMP_WAIT_POLICY": "passive"}, None),
])
def test_prepare_openmp_sets_a_bounded_spin_only_where_the_user_set_none(env, want):
    before = dict(env)
    assert threads.prepare_openmp(env) == want
    if want is None:
        assert env == before
    else:
        assert env == {**before, "GOMP_SPINCOUNT": want}


_CHILD = """
import json, os
import numpy as np
import mlc
from mlc.runtime import threads
x = np.ones((256, 256), np.float32)
y = mlc.compile(lambda a: mlc.relu(a) * 2.0, x)(x)        # large enough for a parallel loop
print(json.dumps({"spin": os.environ.get("GOMP_SPINCOUNT"), "loaded": threads.libgomp_loaded(),
                  "ok": bool((y == 2.0).all())}))
"""


def _child(**env):
    full = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    full.update(env)
    out = subprocess.run([sys.executable, "-c", _CHILD], env=full, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_process_that_compiles_gets_the_bounded_spin_before_libgomp_loads():
    got = _child()
    assert got == {"spin": str(threads.DEFAULT_SPINCOUNT), "loaded": True, "ok": True}


def test_the_users_wait_policy_is_kept():
    assert _child(OMP_WAIT_POLICY="passive") == {"spin": None, "loaded": True, "ok": True}
    assert _child(GOMP_SPINCOUNT="500") == {"spin": "500", "loaded": True, "ok": True}
