"""mlc vs ONNX Runtime on the light models shipped with the onnx package, in one run.

    python benchmarks/bench_onnx_models.py [--models resnet50,squeezenet] [--repeat N]

Batch 1, 2 threads each (ONNX Runtime: intra-op threads = 2; mlc: libgomp with the
machine's cores). Prints per-call latency (median), the ratio ort/mlc (above 1:
mlc is faster), mlc's compile time and kernel count, and the agreement of the
two outputs. Needs onnxruntime (`pip install ".[bench]"`).
"""
from __future__ import annotations

import argparse
import glob
import os
import time

import numpy as np
import onnx

import mlc
from mlc.runtime.timing import median_seconds
from mlc.frontend.onnx import data_inputs, from_onnx
from peers import LIGHT, ort_session



def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", help="comma-separated names (default: all light models)")
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--profile", action="store_true",
                   help="after each model, its top kernels: share of the time and GFLOP/s against the peak")
    p.add_argument("--top", type=int, default=10, help="kernels shown per model with --profile (default 10)")
    args = p.parse_args(argv)
    try:
        import onnxruntime as ort
    except ImportError:
        raise SystemExit("this benchmark needs onnxruntime: pip install '.[bench]'")
    paths = sorted(glob.glob(os.path.join(LIGHT, "light_*.onnx")))
    if args.models:
        wanted = set(args.models.split(","))
        paths = [q for q in paths if os.path.basename(q)[len("light_"):-len(".onnx")] in wanted]
    print(f"mlc {mlc.__version__} on {mlc.Target.get('host')}; onnxruntime {ort.__version__}")
    print(f"{'model':14s} {'mlc ms':>9s} {'ort ms':>9s} {'ort/mlc':>8s} {'compile s':>10s} {'kernels':>8s}  max |diff|")
    for path in paths:
        name = os.path.basename(path)[len("light_"):-len(".onnx")]
        model = onnx.load(path)
        t0 = time.perf_counter()
        exe = mlc.compile(from_onnx(model))
        t_compile = time.perf_counter() - t0
        sess = ort_session(ort, path)
        feeds = {}
        for vi in data_inputs(model.graph, {i.name for i in model.graph.initializer}):
            shape = [d.dim_value or 1 for d in vi.type.tensor_type.shape.dim]
            feeds[vi.name] = np.random.default_rng(0).random(shape, dtype=np.float32)
        mlc_args = list(feeds.values())
        got = exe(*mlc_args)
        want = sess.run(None, feeds)[0]
        diff = float(np.max(np.abs(np.asarray(got) - want)))
        t_mlc = median_seconds(lambda: exe(*mlc_args), args.repeat)
        t_ort = median_seconds(lambda: sess.run(None, feeds), args.repeat)
        print(f"{name:14s} {t_mlc * 1e3:9.2f} {t_ort * 1e3:9.2f} {t_ort / t_mlc:8.3f} {t_compile:10.1f} "
              f"{exe.kernel_count:8d}  {diff:.1e}")
        if args.profile:
            print_top(exe.profile(*mlc_args, runs=args.repeat), args.top)


def print_top(report, top: int) -> None:
    total = report.kernel_time
    peak = report.peak_gflops
    print(f"  {report.model}: kernels' sum {total * 1e3:.2f} ms vs model {report.model_time * 1e3:.2f} ms; "
          f"peak {peak:.0f} GFLOP/s, bandwidth {report.bandwidth_gbs:.1f} GB/s")
    for k in report.slowest(top):
        print(f"    {k.name[:32]:32s} {100 * k.median / total:5.1f}%  {k.median * 1e6:9.1f} us  "
              f"{k.gflops:7.1f} GFLOP/s ({100 * k.gflops / peak if peak else 0:4.1f}% of peak)  "
              f"{k.intensity:6.1f} flop/B")


if __name__ == "__main__":
    main()
