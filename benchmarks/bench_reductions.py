"""Reductions, mlc vs numpy, in one run: time (ratio numpy / mlc, above 1: mlc is
faster), effective bandwidth, and accuracy against the exact sum (math.fsum).

    python benchmarks/bench_reductions.py [--repeat N]

Long reductions run as a tree of blocks (``mlc/ops/reduction.py``): vector partial
sums, parallel blocks, float32 sums accumulated in float64.
"""
from __future__ import annotations

import argparse
import math

import numpy as np

import mlc
from bench_spine import timeit

CASES = [  # (dtype, shape, axis)
    ("float32", (1 << 25,), None), ("float64", (1 << 24,), None), ("float32", (4096, 4096), None),
    ("float32", (64, 1 << 18), 1), ("float32", (1 << 18, 64), 0), ("float32", (1024, 1024), 1),
    ("float64", (1 << 22,), None),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    print(f"{'case':<34}{'mlc ms':>9}{'numpy ms':>10}{'np/mlc':>8}{'mlc GB/s':>10}{'mlc err':>10}{'np err':>10}")
    for dt, shape, axis in CASES:
        x = (rng.standard_normal(shape) + 0.5).astype(dt)
        f = mlc.jit(lambda x: x.sum(axis=axis))
        got, ref = f(x), x.sum(axis=axis)
        exact = np.sum(x.astype(np.float64), axis=axis) if axis is not None else math.fsum(x.ravel().astype(float))
        scale = np.maximum(np.abs(exact), 1e-30)
        err_mlc = float(np.max(np.abs(got - exact) / scale))
        err_np = float(np.max(np.abs(ref - exact) / scale))
        t_mlc = timeit(lambda: f(x), args.repeat)
        t_np = timeit(lambda: x.sum(axis=axis), args.repeat)
        name = f"sum {dt}{list(shape)} axis={axis}"
        print(f"{name:<34}{t_mlc * 1e3:9.2f}{t_np * 1e3:10.2f}{t_np / t_mlc:8.2f}{x.nbytes / t_mlc / 1e9:10.1f}"
              f"{err_mlc:10.1e}{err_np:10.1e}", flush=True)


if __name__ == "__main__":
    main()
