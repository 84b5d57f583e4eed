"""mlc vs numpy on the spine's workloads, in one run; prints times and ratios.

    python benchmarks/bench_spine.py [--repeat N]

Ratios are numpy_time / mlc_time: above 1 means mlc is faster. Both run with the
threads they find (numpy's BLAS and mlc's libgomp use every core).
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import mlc


def timeit(fn, repeat: int, min_time: float = 0.2) -> float:
    """Median seconds per call over ``repeat`` rounds of enough calls to last min_time/repeat,
    after a warm-up of about min_time/4 (first-touch page faults, thread start-up)."""
    t0 = time.perf_counter()
    calls = 0
    while calls < 2 or time.perf_counter() - t0 < min_time / 4:
        fn()
        calls += 1
    once = max((time.perf_counter() - t0) / calls, 1e-7)
    inner = max(1, int(min_time / repeat / once))
    rounds = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        rounds.append((time.perf_counter() - t0) / inner)
    return float(np.median(rounds))


def elementwise_chain(x, y):
    return mlc.relu(x * y + 1.0) * mlc.exp(-x * x) + y


def elementwise_chain_np(x, y):
    return np.maximum(x * y + 1.0, 0) * np.exp(-x * x) + y


def softmax_np(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=7)
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    print(f"mlc {mlc.__version__} on {mlc.Target.get('host')}; numpy {np.__version__}")
    x4 = rng.standard_normal(4 << 20).astype(np.float32)
    y4 = rng.standard_normal(4 << 20).astype(np.float32)
    s = rng.standard_normal((4096, 1024)).astype(np.float32)
    cases = [
        ("elementwise chain, 4M f32 (7 ops)", elementwise_chain, elementwise_chain_np, (x4, y4), None),
        ("row softmax 4096x1024 f32", lambda x: mlc.softmax(x, axis=-1), softmax_np, (s,), None),
    ]
    for n in (512, 1024):
        a = rng.standard_normal((n, n)).astype(np.float32)
        b = rng.standard_normal((n, n)).astype(np.float32)
        cases.append((f"matmul {n}x{n}x{n} f32", lambda a, b: a @ b, np.matmul, (a, b), 2 * n ** 3))
    print(f"{'workload':38s} {'mlc ms':>9s} {'numpy ms':>9s} {'numpy/mlc':>10s} {'mlc GFLOP/s':>12s}")
    for name, fn, ref, inputs, flops in cases:
        exe = mlc.compile(fn, *inputs)
        got, want = exe(*inputs), ref(*inputs)
        err = float(np.max(np.abs(got - want)) / np.max(np.abs(want)))
        t_mlc = timeit(lambda: exe(*inputs), args.repeat)
        t_np = timeit(lambda: ref(*inputs), args.repeat)
        gf = f"{flops / t_mlc / 1e9:12.1f}" if flops else " " * 12
        print(f"{name:38s} {t_mlc * 1e3:9.3f} {t_np * 1e3:9.3f} {t_np / t_mlc:10.2f} {gf}  (max err / max value {err:.1e})")


if __name__ == "__main__":
    main()
