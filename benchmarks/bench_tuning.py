"""Schedules and tuning, against the peers, in one run.

    python benchmarks/bench_tuning.py [--sections matmul,conv,resnet50,cost]
        [--matmul-trials 48] [--tune-budget 900] [--db bench_tuning.db] [--repeat 10]

* matmul: float32 at 256, 512, 1024, 2048 and the transformer shapes
  128x768x768 and 128x768x3072: mlc's default schedule, mlc tuned
  (``--matmul-trials`` per shape), numpy/OpenBLAS; GFLOP/s and ratios.
* conv: every distinct convolution of ResNet-50 (batch 1, with its bias and
  ReLU where the network has them), mlc (default schedules) vs ONNX Runtime.
* resnet50: the light ResNet-50 of the onnx package end to end: mlc default,
  mlc with the tuning database, ONNX Runtime, TVM (apache-tvm, its untuned
  default pipeline; skipped when not installed).
* cost: tune ResNet-50 for ``--tune-budget`` seconds into ``--db`` (resumes
  when the file exists) and report the trials and wall time until the estimated
  latency came within 10% of its final value.

2 threads for everyone (ONNX Runtime intra-op 2, TVM's pool 2, mlc libgomp on
this machine's cores); each engine is timed after the previous one's threads have
stopped spinning. Needs onnxruntime (and apache-tvm for its row): pip
install '.[bench]'.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import mlc
from mlc.frontend.onnx import from_onnx
from mlc.tune.tuner import tune

sys.path.insert(0, os.path.dirname(__file__))
from peers import LIGHT, ort_session, timed  # noqa: E402

MATMULS = [(256, 256, 256), (512, 512, 512), (1024, 1024, 1024), (2048, 2048, 2048),
           (128, 768, 768), (128, 768, 3072)]
# ResNet-50's convolutions at batch 1: (in channels, out channels, kernel, stride, input size, relu)
RESNET50_CONVS = [
    (3, 64, 7, 2, 224, True), (64, 64, 1, 1, 56, True), (64, 64, 3, 1, 56, True), (64, 256, 1, 1, 56, False),
    (256, 64, 1, 1, 56, True), (256, 128, 1, 1, 56, True), (128, 128, 3, 2, 56, True), (128, 512, 1, 1, 28, False),
    (256, 512, 1, 2, 56, False), (512, 128, 1, 1, 28, True), (128, 128, 3, 1, 28, True),
    (512, 256, 1, 1, 28, True), (256, 256, 3, 2, 28, True), (256, 1024, 1, 1, 14, False),
    (512, 1024, 1, 2, 28, False), (1024, 256, 1, 1, 14, True), (256, 256, 3, 1, 14, True),
    (1024, 512, 1, 1, 14, True), (512, 512, 3, 2, 14, True), (512, 2048, 1, 1, 7, False),
    (1024, 2048, 1, 2, 14, False), (2048, 512, 1, 1, 7, True), (512, 512, 3, 1, 7, True),
]


def gflops(flop: float, seconds: float) -> float:
    return flop / seconds / 1e9


def bench_matmul(args) -> None:
    print("\n== float32 matmul: mlc default and tuned vs numpy/OpenBLAS (GFLOP/s; ratio = mlc / numpy) ==")
    print(f"{'shape':>16s} {'numpy':>7s} {'default':>8s} {'ratio':>6s} {'tuned':>7s} {'ratio':>6s} "
          f"{'trials':>6s} {'tune s':>7s}")
    rng = np.random.default_rng(0)
    for m, k, n in MATMULS:
        a = rng.standard_normal((m, k)).astype(np.float32)
        b = rng.standard_normal((k, n)).astype(np.float32)
        fn = lambda a, b: a @ b
        graph = mlc.trace(fn, a, b)
        flop = 2.0 * m * n * k
        reps = args.repeat if m * n * k <= 1 << 30 else max(3, args.repeat // 2)
        default = mlc.compile(graph)
        np.testing.assert_allclose(default(a, b), a @ b, rtol=1e-3, atol=1e-2)
        with tempfile.TemporaryDirectory() as d:
            db = os.path.join(d, "mm.db")
            t0 = time.perf_counter()
            tuner = tune(graph, db=db, trials=args.matmul_trials)
            t_tune = time.perf_counter() - t0
            tuned = mlc.compile(graph, db=db)
        np.testing.assert_allclose(tuned(a, b), a @ b, rtol=1e-3, atol=1e-2)
        # interleave the three so a noisy stretch of the machine hits them alike
        t_np = timed(lambda: a @ b, reps)
        t_def = timed(lambda: default(a, b), reps)
        t_tun = timed(lambda: tuned(a, b), reps)
        t_np = min(t_np, timed(lambda: a @ b, reps))
        t_def = min(t_def, timed(lambda: default(a, b), reps))
        t_tun = min(t_tun, timed(lambda: tuned(a, b), reps))
        g_np, g_def, g_tun = gflops(flop, t_np), gflops(flop, t_def), gflops(flop, t_tun)
        print(f"{f'{m}x{k}x{n}':>16s} {g_np:7.0f} {g_def:8.0f} {g_def / g_np:6.2f} {g_tun:7.0f} {g_tun / g_np:6.2f} "
              f"{tuner.trials:6d} {t_tune:7.1f}", flush=True)


def conv_model(c_in, c_out, k, stride, size, relu) -> onnx.ModelProto:
    rng = np.random.default_rng(c_in * 7 + c_out)
    w = (rng.standard_normal((c_out, c_in, k, k)) / np.sqrt(c_in * k * k)).astype(np.float32)
    bias = rng.standard_normal(c_out).astype(np.float32) * 0.1
    pad = k // 2
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["y" if not relu else "c"], kernel_shape=[k, k],
                              strides=[stride, stride], pads=[pad] * 4)]
    if relu:
        nodes.append(helper.make_node("Relu", ["c"], ["y"]))
    out = (size + 2 * pad - k) // stride + 1
    g = helper.make_graph(nodes, "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c_in, size, size])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c_out, out, out])],
                          [numpy_helper.from_array(w, "w"), numpy_helper.from_array(bias, "b")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def bench_conv(args, ort) -> None:
    print("\n== ResNet-50 convolutions, batch 1: mlc default schedules vs ONNX Runtime (ratio = ort / mlc, "
          "above 1: mlc faster) ==")
    print(f"{'conv':>28s} {'GFLOP':>6s} {'mlc ms':>8s} {'GF/s':>5s} {'ort ms':>8s} {'GF/s':>5s} {'ratio':>6s}")
    total_mlc = total_ort = 0.0
    for spec in RESNET50_CONVS:
        c_in, c_out, k, stride, size, relu = spec
        model = conv_model(*spec)
        exe = mlc.compile(from_onnx(model))
        sess = ort_session(ort, model.SerializeToString())
        x = np.random.default_rng(1).standard_normal((1, c_in, size, size)).astype(np.float32)
        got, want = exe(x), sess.run(None, {"x": x})[0]
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3)
        out = want.shape[2]
        flop = 2.0 * c_out * out * out * c_in * k * k
        t_mlc = timed(lambda: exe(x), args.repeat)
        t_ort = timed(lambda: sess.run(None, {"x": x}), args.repeat)
        total_mlc += t_mlc
        total_ort += t_ort
        name = f"{c_in}->{c_out} {k}x{k}/{stride} @{size}{' +relu' if relu else ''}"
        print(f"{name:>28s} {flop / 1e9:6.3f} {t_mlc * 1e3:8.3f} {gflops(flop, t_mlc):5.0f} {t_ort * 1e3:8.3f} "
              f"{gflops(flop, t_ort):5.0f} {t_ort / t_mlc:6.2f}", flush=True)
    print(f"{'sum (one of each)':>28s} {'':6s} {total_mlc * 1e3:8.2f} {'':5s} {total_ort * 1e3:8.2f} {'':5s} "
          f"{total_ort / total_mlc:6.2f}")


def tvm_resnet50(path: str, x: np.ndarray):
    """(seconds per call, output) with TVM's untuned default pipeline, or None if TVM is missing."""
    try:
        import tvm
        from tvm import relax
        from tvm.relax.frontend.onnx import from_onnx as tvm_from_onnx
    except ImportError:
        return None
    os.environ.setdefault("TVM_NUM_THREADS", "2")
    mod = tvm_from_onnx(onnx.load(path), keep_params_in_input=False)
    mod = relax.transform.DecomposeOpsForInference()(mod)
    mod = relax.transform.LegalizeOps()(mod)
    ex = (relax.build if hasattr(relax, "build") else tvm.compile)(mod, target="llvm")
    vm = relax.VirtualMachine(ex, tvm.cpu())
    data = (tvm.runtime.tensor if hasattr(tvm.runtime, "tensor") else tvm.nd.array)(x)
    out = vm["main"](data)
    t0 = time.perf_counter()
    out = vm["main"](data)
    t = time.perf_counter() - t0
    return t, (out[0] if isinstance(out, (list, tuple)) else out).numpy()


def bench_resnet50(args, ort) -> None:
    print("\n== light ResNet-50 end to end, batch 1 (ratio = peer / mlc: above 1, mlc faster) ==")
    path = os.path.join(LIGHT, "light_resnet50.onnx")
    model = onnx.load(path)
    graph = from_onnx(model)
    x = np.random.default_rng(0).random((1, 3, 224, 224), dtype=np.float32)
    sess = ort_session(ort, path)
    feed = {model.graph.input[0].name: x}
    want = sess.run(None, feed)[0]
    t_ort = timed(lambda: sess.run(None, feed), args.repeat)
    rows = [("onnxruntime", t_ort)]
    default = mlc.compile(graph)
    np.testing.assert_allclose(default(x), want, rtol=1e-3, atol=1e-3)
    rows.append(("mlc default", timed(lambda: default(x), args.repeat)))
    if os.path.exists(args.db):
        tuned = mlc.compile(graph, db=args.db)
        np.testing.assert_allclose(tuned(x), want, rtol=1e-3, atol=1e-3)
        rows.append((f"mlc tuned ({tuned.stats['tuned_kernels']}/{tuned.kernel_count} kernels)",
                     timed(lambda: tuned(x), args.repeat)))
    try:
        res = tvm_resnet50(path, x)
    except Exception as e:   # noqa: BLE001 -- a peer failing is reported, not fatal
        res = None
        print(f"  TVM failed: {type(e).__name__}: {str(e).splitlines()[0][:120]}")
    if res is not None:
        rows.append(("TVM untuned", res[0]))
    best_mlc = min(t for name, t in rows if name.startswith("mlc"))
    for name, t in rows:
        print(f"{name:>32s} {t * 1e3:9.2f} ms   mlc best / this: {best_mlc / t:5.2f}   this / mlc best: "
              f"{t / best_mlc:5.2f}")


def bench_cost(args) -> None:
    print(f"\n== tuning cost: ResNet-50 for {args.tune_budget:g} s into {args.db} ==")
    graph = from_onnx(onnx.load(os.path.join(LIGHT, "light_resnet50.onnx")))
    curve = []

    def progress(tuner, event):
        if event in ("round", "done"):
            curve.append((time.monotonic() - tuner.started, tuner.trials, tuner.estimated_latency))
            print(f"  {curve[-1][0]:7.1f} s  {tuner.trials:5d} trials  estimated {tuner.estimated_latency * 1e3:8.2f} ms"
                  f"  (default {tuner.default_latency * 1e3:.2f} ms)", flush=True)

    tuner = tune(graph, db=args.db, trials=10 ** 6, time_budget=args.tune_budget, progress=progress)
    final = tuner.estimated_latency
    hit = next(((s, n) for s, n, lat in curve if lat <= 1.1 * final), None)
    print(f"final estimate {final * 1e3:.2f} ms after {tuner.trials} trials ({tuner.stopped_by}); "
          f"default {tuner.default_latency * 1e3:.2f} ms ({tuner.default_latency / final:.2f}x)")
    if hit:
        print(f"within 10% of the final estimate after {hit[1]} trials, {hit[0]:.0f} s of tuning")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sections", default="matmul,conv,cost,resnet50")
    p.add_argument("--matmul-trials", type=int, default=48)
    p.add_argument("--tune-budget", type=float, default=900.0)
    p.add_argument("--db", default="bench_tuning.db")
    p.add_argument("--repeat", type=int, default=10)
    args = p.parse_args(argv)
    sections = args.sections.split(",")
    print(f"mlc {mlc.__version__} on {mlc.Target.get('host')}; numpy {np.__version__}")
    ort = None
    if {"conv", "resnet50"} & set(sections):
        try:
            import onnxruntime as ort
        except ImportError:
            raise SystemExit("the conv and resnet50 sections need onnxruntime: pip install '.[bench]'")
        print(f"onnxruntime {ort.__version__}")
    if "matmul" in sections:
        bench_matmul(args)
    if "conv" in sections:
        bench_conv(args, ort)
    if "cost" in sections:
        bench_cost(args)
    if "resnet50" in sections:
        bench_resnet50(args, ort)


if __name__ == "__main__":
    main()
