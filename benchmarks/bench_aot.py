"""Per-call latency of an exported model library, against ONNX Runtime, in one run.

    python benchmarks/bench_aot.py [--models mlp,resnet50] [--rounds 3]

For each model -- a small MLP (784-256-10, batch 1, built as ONNX here) and the light
ResNet-50 of the onnx package (batch 1) -- the same ONNX file runs through:

* C API: ``tutorials/c_api/run_model.c`` built against the exported library, timing
  ``mlc_model_run`` in C (``--repeat``: the median over the calls);
* mlc.load: the same library called from Python;
* JIT: ``mlc.compile`` of the same graph, called from Python;
* onnxruntime: an InferenceSession on the ONNX file (2 intra-op threads).

Every engine is timed ``--rounds`` times, interleaved, each after the previous
one's threads stopped spinning; the table shows the best median per engine.
``load - C`` is mlc.load minus the C program; ``load - raw C call`` is mlc.load
minus the library's entry point called from Python with prepared pointers, in the
same process: what mlc.load adds to the kernels' own time (the target is under
20 us). All outputs are
compared before anything is timed. Needs onnxruntime and a C compiler.
"""
from __future__ import annotations

import argparse
import ctypes
import os
import re
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import mlc
from mlc.frontend.onnx import from_onnx

sys.path.insert(0, os.path.dirname(__file__))
from peers import LIGHT, ort_session, timed  # noqa: E402

RUN_MODEL_C = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tutorials", "c_api",
                           "run_model.c")


def mlp_onnx(path: str) -> None:
    rng = np.random.default_rng(0)
    w = {"W1": rng.standard_normal((784, 256)).astype(np.float32) * 0.05, "b1": np.zeros(256, np.float32),
         "W2": rng.standard_normal((256, 10)).astype(np.float32) * 0.05, "b2": np.zeros(10, np.float32)}
    nodes = [helper.make_node("Gemm", ["x", "W1", "b1"], ["h"]), helper.make_node("Relu", ["h"], ["a"]),
             helper.make_node("Gemm", ["a", "W2", "b2"], ["z"]), helper.make_node("Softmax", ["z"], ["y"], axis=1)]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 784])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
                              [numpy_helper.from_array(v, k) for k, v in w.items()])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


MODELS = {"mlp": (mlp_onnx, 3000), "resnet50": (os.path.join(LIGHT, "light_resnet50.onnx"), 30)}


def c_latency(exe: str, folder: str, repeat: int) -> float:
    r = subprocess.run([exe, "input.bin", "--repeat", str(repeat)], cwd=folder, capture_output=True, text=True,
                       check=True)
    return float(re.search(r"median ([\d.]+) us", r.stdout).group(1)) * 1e-6


def bench(name: str, args, ort, cc: str, d: str) -> dict:
    source, repeat = MODELS[name]
    path = os.path.join(d, f"{name}.onnx")
    if callable(source):
        source(path)
    else:
        shutil.copy(source, path)
    graph = from_onnx(onnx.load(path))
    jit = mlc.compile(graph)
    jit.export(os.path.join(d, f"{name}.so"))
    lib = mlc.load(os.path.join(d, f"{name}.so"))
    exe = os.path.join(d, f"run_{name}")
    subprocess.run([cc, "-O2", f"-DMODEL_HEADER=\"{name}.h\"", RUN_MODEL_C, f"-I{d}", os.path.join(d, f"{name}.so"),
                    "-Wl,-rpath,$ORIGIN", "-lpthread", "-o", exe], check=True)
    x = np.random.default_rng(1).standard_normal(graph.inputs[0].type.shape).astype(np.float32)
    x.tofile(os.path.join(d, "input.bin"))
    sess = ort_session(ort, path)
    feed = {sess.get_inputs()[0].name: x}

    # correctness first: the C program, mlc.load and the JIT agree bit for bit, ORT to 1e-4
    subprocess.run([exe, "input.bin", "--output", "out.bin"], cwd=d, check=True, capture_output=True)
    from_c = np.fromfile(os.path.join(d, "out.bin"), np.float32).reshape(lib.output_types[0].shape)
    same = np.array_equal(from_c, lib(x)) and np.array_equal(from_c, jit(x))
    close = np.allclose(from_c, sess.run(None, feed)[0], rtol=1e-4, atol=1e-4)

    # the library's C entry point called from Python with prepared pointers: the kernels
    # plus one ctypes call, nothing of mlc.load's argument handling
    code, out = lib._code, np.empty(lib.output_types[0].shape, np.float32)
    ins, outs = (ctypes.c_void_p * 1)(x.ctypes.data), (ctypes.c_void_p * 1)(out.ctypes.data)
    best = {k: float("inf") for k in ("c", "raw", "load", "jit", "ort")}
    for _ in range(args.rounds):
        best["c"] = min(best["c"], c_latency(exe, d, repeat))
        best["raw"] = min(best["raw"], timed(lambda: code._run(code.handle, ins, outs), repeat))
        best["load"] = min(best["load"], timed(lambda: lib(x), repeat))
        best["jit"] = min(best["jit"], timed(lambda: jit(x), repeat))
        best["ort"] = min(best["ort"], timed(lambda: sess.run(None, feed), repeat))
    return {"model": name, "same": same, "close": close, **best}


def _overhead(t: float, base: float) -> str:
    """t - base, unless the difference is below what this machine can resolve at
    that size (2% of the time: run-to-run noise of whole-model timings here)."""
    d = t - base
    return f"{d * 1e6:.1f} us" if abs(d) <= 0.02 * base or base < 1e-3 else f"noise ({100 * d / base:+.0f}%)"


def us(t: float) -> str:
    return f"{t * 1e6:.1f}" if t < 1e-3 else f"{t * 1e3:.2f} ms"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="mlp,resnet50")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    try:
        import onnxruntime as ort
    except ImportError:
        raise SystemExit("needs onnxruntime: pip install onnxruntime (or '.[bench]')")
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        raise SystemExit("needs a C compiler (cc, gcc or clang)")
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for name in args.models.split(","):
            rows.append(bench(name, args, ort, cc, d))
    print(f"\nper-call latency, batch 1 (us unless marked), best of {args.rounds} interleaved medians; "
          "ratio = onnxruntime / engine (> 1: faster than ORT)")
    print("| model | C API | mlc.load | JIT | onnxruntime | ort/C | ort/load | ort/JIT | load - C | "
          "load - raw C call | outputs |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        check = ("C = load = JIT bit for bit" if r["same"] else "DIFFER") + (", ORT 1e-4" if r["close"] else
                                                                           ", ORT DIFFERS")
        print(f"| {r['model']} | {us(r['c'])} | {us(r['load'])} | {us(r['jit'])} | {us(r['ort'])} | "
              f"{r['ort'] / r['c']:.2f} | {r['ort'] / r['load']:.2f} | {r['ort'] / r['jit']:.2f} | "
              f"{_overhead(r['load'], r['c'])} | {_overhead(r['load'], r['raw'])} | {check} |")
    print("load - C: mlc.load against the C program (two processes; for ResNet-50 within the machine's noise). "
          "load - raw C call: the same library's entry point called from Python with prepared pointers, in the "
          "same process: mlc.load's own per-call work (argument checks, output arrays).")


if __name__ == "__main__":
    main()
