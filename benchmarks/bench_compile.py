"""How long mlc takes from a model to its first result, cold (empty compile cache) and warm.

    python benchmarks/bench_compile.py [--repeat N] [--cases resnet50_cold,...]

Every run is a fresh Python process, as a user's would be (imports, compile workers and
all), with ``MLC_CACHE_DIR`` set to a folder of its own. Cases:

  resnet50_cold      light ResNet-50 (ONNX) to its first result, empty cache
  resnet50_serial    the same with MLC_COMPILE_JOBS=1 (kernels compiled in this process only)
  resnet50_warm      the same again over the cache the cold run filled
  resnet50_ort       the peer: ONNX Runtime's session creation and first run on the same file
  resnet50_tvm       the peer: TVM's untuned build (its ONNX front end, tvm.compile for the host)
  densenet121_cold, densenet121_warm, densenet121_ort, inception_v2_cold, inception_v2_ort
                     the same for light DenseNet-121 and Inception-v2
  train_cold         a CNN training step (mlc.optim.train_step), empty cache
  train_after_infer  the same step after the model's inference was compiled into the cache:
                     the forward kernels the two graphs share are not compiled again

Prints, per case, the best and the spread (max - min) of --repeat runs of: the seconds
to the first result, of which compile (mlc.compile / the step's first call / the peer's
session or build). A peer that is not installed is skipped. The machine is shared: repeat
and read the best.

Measured on the quiet 2-core znver4 host, best of 3, seconds to the first result (compile):
light ResNet-50 2.68 (2.31), DenseNet-121 9.00 (8.67), Inception-v2 5.39 (5.16); the same
run of the previous mlc (before addresses were summed once per block and its reshape
indices merged): 3.93, 14.07, 6.95. ONNX Runtime's sessions: 0.35, 0.22, 0.25; TVM's
untuned ResNet-50: 7.90 (2.75 in tvm.compile, the rest in its first call). A CNN training
step cold 1.54, after its inference graph 1.32.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))

LIGHT_MODEL = r"""
import os, sys, time, json
t0 = time.perf_counter()
import numpy as np, onnx, mlc
from mlc.frontend.onnx import from_onnx
sys.path.insert(0, sys.argv[1])
from peers import LIGHT
t1 = time.perf_counter()
graph = from_onnx(onnx.load(os.path.join(LIGHT, f"light_{sys.argv[2]}.onnx")))
t2 = time.perf_counter()
exe = mlc.compile(graph)
t3 = time.perf_counter()
x = np.random.default_rng(0).random(graph.inputs[0].type.shape, dtype=np.float32)
y = np.asarray(exe(x))
t4 = time.perf_counter()
assert y.size and np.isfinite(y).all()
print(json.dumps({"import": t1 - t0, "first_result": t4 - t1, "compile": t3 - t2}))
"""

# The peers on the same file: ONNX Runtime's session creation and TVM's untuned build
# (its ONNX front end, then tvm.compile for the host), each to its first result.
ORT = r"""
import os, sys, time, json
t0 = time.perf_counter()
import numpy as np, onnxruntime as ort
sys.path.insert(0, sys.argv[1])
from peers import LIGHT
t1 = time.perf_counter()
so = ort.SessionOptions()
so.intra_op_num_threads = os.cpu_count()
sess = ort.InferenceSession(os.path.join(LIGHT, f"light_{sys.argv[2]}.onnx"), so, providers=["CPUExecutionProvider"])
t2 = time.perf_counter()
i = sess.get_inputs()[0]
sess.run(None, {i.name: np.random.default_rng(0).random(i.shape, dtype=np.float32)})
t3 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "first_result": t3 - t1, "compile": t2 - t1}))
"""

TVM = r"""
import os, sys, time, json
t0 = time.perf_counter()
import numpy as np, onnx, tvm
from tvm import relax
from tvm.relax.frontend.onnx import from_onnx
sys.path.insert(0, sys.argv[1])
from peers import LIGHT
t1 = time.perf_counter()
model = onnx.load(os.path.join(LIGHT, f"light_{sys.argv[2]}.onnx"))
mod = from_onnx(model, keep_params_in_input=False)
ex = tvm.compile(mod, target="llvm")
t2 = time.perf_counter()
vm = relax.VirtualMachine(ex, tvm.cpu())
shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
vm["main"](tvm.runtime.tensor(np.random.default_rng(0).random(shape, dtype=np.float32)))
t3 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "first_result": t3 - t1, "compile": t2 - t1}))
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
        if "ModuleNotFoundError" in r.stderr:
            raise ModuleNotFoundError(r.stderr.strip().splitlines()[-1])
        raise SystemExit(f"benchmark run failed:\n{r.stderr}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def case(name: str) -> dict:
    """One run of a case, each in fresh processes and cache folders."""
    with tempfile.TemporaryDirectory(prefix="mlc-bench-cache-") as cache:
        model, _, how = name.rpartition("_")
        if how == "cold" and model in LIGHT_MODELS:
            return run(LIGHT_MODEL, cache, HERE, model)
        if name == "resnet50_serial":
            return run(LIGHT_MODEL, cache, HERE, "resnet50", jobs="1")
        if how == "warm" and model in LIGHT_MODELS:
            run(LIGHT_MODEL, cache, HERE, model)
            return run(LIGHT_MODEL, cache, HERE, model)
        if how == "ort" and model in LIGHT_MODELS:
            return run(ORT, cache, HERE, model)
        if how == "tvm" and model in LIGHT_MODELS:
            return run(TVM, cache, HERE, model)
        if name == "train_cold":
            return run(TRAIN, cache, "train")
        if name == "train_after_infer":
            run(TRAIN, cache, "infer")
            return run(TRAIN, cache, "train")
    raise SystemExit(f"unknown case {name!r}")


LIGHT_MODELS = ("resnet50", "densenet121", "inception_v2")
CASES = ("resnet50_cold", "resnet50_serial", "resnet50_warm", "resnet50_ort", "resnet50_tvm", "densenet121_cold",
         "densenet121_warm", "densenet121_ort", "inception_v2_cold", "inception_v2_ort", "train_cold",
         "train_after_infer")


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
        try:
            runs = [case(name) for _ in range(a.repeat)]
        except ModuleNotFoundError as e:   # a peer that is not installed (the bench extra)
            print(f"{name:18s} skipped: {e}", flush=True)
            continue
        cols = []
        for k in ("first_result", "compile"):
            v = [r[k] for r in runs]
            cols.append(f"{min(v):8.2f} ({max(v) - min(v):5.2f})")
        print(f"{name:18s} {cols[0]:>18s} {cols[1]:>16s}", flush=True)


if __name__ == "__main__":
    main()
