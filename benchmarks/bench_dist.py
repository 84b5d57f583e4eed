"""Collectives and data-parallel training through mlc against raw mpi4py, in one run.

    python benchmarks/bench_dist.py [--batch 512] [--steps 30]

Launches its own MPI jobs with the launcher of the ``dist`` extra:

* all-reduce (sum, float32, in place) from 4 KB to 64 MB on 2 ranks, timed three
  ways on the same buffers: raw mpi4py (``Allreduce(IN_PLACE, buf)``), mlc's
  communicator (``mlc.dist.world().allreduce``: non-blocking MPI with a deadline),
  and a compiled mlc graph holding one ``allreduce`` op that updates the buffer in
  place (the path training steps take: compiled code -> dispatcher ->
  communicator). Ratio = mpi4py / mlc.
* data parallel: one training step of an MLP (``optim.train_step(...,
  data_parallel=True)``) at the same global batch on 2 ranks and on 1 process;
  speed-up and efficiency (speed-up / 2).

This machine has 2 cores: 2 ranks use one core each (OMP_NUM_THREADS=1), and the
1-process baseline is given both with 1 thread and with both cores (libgomp).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

HERE = os.path.abspath(__file__)
SIZES = [4 << 10, 64 << 10, 1 << 20, 16 << 20, 64 << 20]


def _mpirun() -> str:
    here = os.path.join(os.path.dirname(sys.executable), "mpirun")
    return here if os.path.exists(here) else "mpirun"


def worker_allreduce() -> None:
    from mpi4py import MPI

    import mlc
    comm = MPI.COMM_WORLD
    w = mlc.dist.world()
    for size in SIZES:
        n = size // 4
        buf = np.ones(n, np.float32)
        reps = max(5, min(500, (256 << 20) // size))
        # the compiled op writes into the same buffer (in_place), as inside a training step
        step = mlc.jit(lambda x: (None, mlc.dist.allreduce(x)), in_place=(0,))
        step(buf)   # compile
        ways = {"mpi4py": lambda: comm.Allreduce(MPI.IN_PLACE, buf),
                "mlc communicator": lambda: w.allreduce(buf, buf, "sum"),
                "mlc compiled op": lambda: step(buf)}
        best = {}
        for _ in range(3):   # interleaved rounds; the median per call of each, the best round kept
            for name, fn in ways.items():
                comm.Barrier()
                times = []
                for _ in range(reps):
                    t0 = time.perf_counter()
                    fn()
                    times.append(time.perf_counter() - t0)
                t = comm.allreduce(statistics.median(times), op=MPI.MAX)
                best[name] = min(best.get(name, float("inf")), t)
        if comm.rank == 0:
            print(json.dumps({"bytes": size, **best}), flush=True)


def worker_dp(batch: int, steps: int) -> None:
    import mlc
    from mlc import nn, optim
    model = nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))
    params, state = model.init(seed=0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, 256)).astype(np.float32)
    y = rng.integers(0, 10, size=batch)

    def loss_fn(p, x, y):
        return nn.cross_entropy(model.apply(p, state, x)[0], y)

    opt = optim.SGD(lr=0.01, momentum=0.9)
    s = opt.init(params)
    step = optim.train_step(loss_fn, opt, data_parallel=mlc.dist.world_size() > 1)
    step(params, s, x, y)
    times = []
    for _ in range(steps):
        mlc.dist.barrier()
        t0 = time.perf_counter()
        step(params, s, x, y)
        times.append(time.perf_counter() - t0)
    t = statistics.median(times)
    if mlc.dist.world_size() > 1:
        t = mlc.dist.world().comm.allreduce(t, op=__import__("mpi4py").MPI.MAX)
    if mlc.dist.rank() == 0:
        print(json.dumps({"ranks": mlc.dist.world_size(), "threads": os.environ.get("OMP_NUM_THREADS", "all"),
                          "step": t}), flush=True)


def run(args: list[str], ranks: int | None, threads: int | None) -> list[dict]:
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    cmd = [sys.executable, HERE, *args]
    if ranks:
        cmd = [_mpirun(), "-n", str(ranks), *cmd]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stdout}{r.stderr}")
    return [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=512, help="global batch of the data-parallel step")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--worker", choices=["allreduce", "dp"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker == "allreduce":
        return worker_allreduce()
    if args.worker == "dp":
        return worker_dp(args.batch, args.steps)
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        raise SystemExit("needs the dist extra: pip install '.[dist]'")

    rows = run(["--worker", "allreduce"], 2, 1)
    print("all-reduce, float32 sum in place, 2 ranks, median per call (us); ratio = mpi4py / mlc")
    print("| size | mpi4py | mlc communicator | ratio | mlc compiled op | ratio |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        size = r["bytes"]
        label = f"{size >> 20} MB" if size >= 1 << 20 else f"{size >> 10} KB"
        raw, com, op = r["mpi4py"], r["mlc communicator"], r["mlc compiled op"]
        print(f"| {label} | {raw * 1e6:.1f} | {com * 1e6:.1f} | {raw / com:.2f} | {op * 1e6:.1f} | {raw / op:.2f} |")

    dp_args = ["--worker", "dp", "--batch", str(args.batch), "--steps", str(args.steps)]
    two = run(dp_args, 2, 1)[0]["step"]
    one_1 = run(dp_args, None, 1)[0]["step"]
    one_2 = run(dp_args, None, 2)[0]["step"]
    print(f"\ndata-parallel MLP (256-512-512-10) training step, global batch {args.batch}, median of {args.steps}")
    print("| setup | step (ms) | speed-up of 2 ranks | efficiency |")
    print("| --- | --- | --- | --- |")
    print(f"| 2 ranks x 1 thread | {two * 1e3:.2f} | | |")
    print(f"| 1 process, 1 thread | {one_1 * 1e3:.2f} | {one_1 / two:.2f} | {one_1 / two / 2:.2f} |")
    print(f"| 1 process, 2 threads | {one_2 * 1e3:.2f} | {one_2 / two:.2f} | {one_2 / two / 2:.2f} |")
    print("(this machine has 2 cores: the 2-rank job and the 2-thread process use the same hardware)")


if __name__ == "__main__":
    main()
