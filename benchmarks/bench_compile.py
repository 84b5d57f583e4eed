"""How long mlc takes from a model to its first result, cold (empty compile cache) and warm.

    python benchmarks/bench_compile.py [--repeat N] [--cases resnet50_cold,...]

Every run is a fresh Python process, as a user's would be (imports, compile workers and
all), with ``MLC_CACHE_DIR`` set to a folder of its own. Cases:

  resnet50_cold      light ResNet-50 (ONNX) to its first result, empty cache
  resnet50_serial    the same with MLC_COMPILE_JOBS=1 (kernels compiled in this process only)
  resnet50_warm      the same again over the cache the cold run filled
  train_cold         a CNN training step (mlc.optim.train_step), empty cache
  train_after_infer  the same step after the model's inference was compiled into the cache:
                     the forward kernels the two graphs share are not compiled again

Prints, per case, the best and the spread (max - min) of --repeat runs of: the seconds
to the first result, of which compile (mlc.compile / the step's first call). The machine is
shared: repeat and read the best.

On the 2-core development host, with kernels compiled apart, light ResNet-50's 30 distinct
kernels cold: the compiling process spends 5.9-6.4 CPU s (was 8.6-11.1 s compiling the
whole program as one module) and one worker process 4.4-4.9 s (13-14 of the kernels, its
start included). Those runs had a load average of 9-10 from other work, so no core was
free and the wall time did not drop (before 17.2-21.1 s, after 20.8-22.8 s); a quiet machine
with N cores spends about the compiling process's share. The CNN training step finds 3 of
its 31 kernels (its forward's) in the cache after the model's inference was compiled.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))

RESNET = r"""
import os, sys, time, json
t0 = time.perf_counter()
import numpy as np, onnx, mlc
from mlc.frontend.onnx import from_onnx
sys.path.insert(0, sys.argv[1])
from peers import LIGHT
t1 = time.perf_counter()
graph = from_onnx(onnx.load(os.path.join(LIGHT, "light_resnet50.onnx")))
t2 = time.perf_counter()
exe = mlc.compile(graph)
t3 = time.perf_counter()
x = np.random.default_rng(0).random((1, 3, 224, 224), dtype=np.float32)
y = np.asarray(exe(x))
t4 = time.perf_counter()
assert np.isfinite(y).all() and abs(float(y.sum()) - 1) < 1e-3, y.sum()   # a softmax
print(json.dumps({"import": t1 - t0, "first_result": t4 - t1, "compile": t3 - t2}))
"""

TRAIN = r"""
import os, sys, time, json
t0 = time.perf_counter()
import numpy as np, mlc
from mlc import nn, optim
model = nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
                      nn.Flatten(), nn.Linear(64 * 12 * 12, 10))
rng = np.random.default_rng(0)
x, y = rng.standard_normal((64, 1, 28, 28)).astype(np.float32), rng.integers(0, 10, 64)
params, _ = model.init(seed=0)
t1 = time.perf_counter()
if sys.argv[1] == "infer":
    out = mlc.jit(lambda p, x: model(p, x))(params, x)
else:
    opt = optim.SGD(0.01, momentum=0.9)
    state = opt.init(params)
    out = optim.train_step(lambda p, x, y: nn.cross_entropy(model(p, x), y), opt)(params, state, x, y)
t2 = time.perf_counter()
assert np.isfinite(np.asarray(out)).all()
print(json.dumps({"import": t1 - t0, "first_result": t2 - t1, "compile": t2 - t1}))
"""


PYTHON = sys.executable   # --python: another interpreter (another mlc) to measure


def run(script: str, cache: str, *args: str, jobs: str | None = None) -> dict:
    env = dict(os.environ, MLC_CACHE_DIR=cache)
    env.pop("MLC_COMPILE_JOBS", None)
    if jobs is not None:
        env["MLC_COMPILE_JOBS"] = jobs
    r = subprocess.run([PYTHON, "-c", script, *args], env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"benchmark run failed:\n{r.stderr}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def case(name: str) -> dict:
    """One run of a case, each in fresh processes and cache folders."""
    with tempfile.TemporaryDirectory(prefix="mlc-bench-cache-") as cache:
        if name == "resnet50_cold":
            return run(RESNET, cache, HERE)
        if name == "resnet50_serial":
            return run(RESNET, cache, HERE, jobs="1")
        if name == "resnet50_warm":
            run(RESNET, cache, HERE)
            return run(RESNET, cache, HERE)
        if name == "train_cold":
            return run(TRAIN, cache, "train")
        if name == "train_after_infer":
            run(TRAIN, cache, "infer")
            return run(TRAIN, cache, "train")
    raise SystemExit(f"unknown case {name!r}")


CASES = ("resnet50_cold", "resnet50_serial", "resnet50_warm", "train_cold", "train_after_infer")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)}")
    p.add_argument("--python", default=sys.executable,
                   help="the Python that runs the cases (one with another mlc installed, to compare)")
    a = p.parse_args(argv)
    global PYTHON
    PYTHON = a.python
    print(f"{os.cpu_count()} cores; best (spread) of {a.repeat} runs, seconds")
    print(f"{'case':18s} {'to first result':>18s} {'compile':>16s}")
    for name in a.cases.split(","):
        runs = [case(name) for _ in range(a.repeat)]
        cols = []
        for k in ("first_result", "compile"):
            v = [r[k] for r in runs]
            cols.append(f"{min(v):8.2f} ({max(v) - min(v):5.2f})")
        print(f"{name:18s} {cols[0]:>18s} {cols[1]:>16s}", flush=True)


if __name__ == "__main__":
    main()
