"""Ranks that disagree on a collective fail with DistError naming each rank's type,
never a wrong answer (run with mpirun -n 2; the case is argv[1]).

- sizes: rank 0 all-reduces f32[4], rank 1 f32[8] at their first call
- dtypes-later: both agree on f32[4] first; then rank 1 all-reduces f64[4] while rank 0
  repeats the call it already agreed on
- send-recv: rank 0 sends f32[5], rank 1 expects f64[5]
- agree: the same program on both ranks runs and gives numpy's answer
"""
import sys

import numpy as np

import mlc

rank = mlc.dist.rank()
case = sys.argv[1]
step = mlc.jit(lambda x: mlc.dist.allreduce(x))
try:
    if case == "sizes":
        out = step(np.ones(4 if rank == 0 else 8, np.float32))
    elif case == "dtypes-later":
        step(np.ones(4, np.float32))
        out = step(np.ones(4, np.float32 if rank == 0 else np.float64))
    elif case == "send-recv":
        if rank == 0:
            out = mlc.jit(lambda x: mlc.dist.send(x, peer=1, tag=3))(np.ones(5, np.float32))
        else:
            out = mlc.jit(lambda: mlc.dist.recv(shape=(5,), dtype="float64", peer=0, tag=3))()
    elif case == "agree":
        for _ in range(3):
            out = step(np.full(6, rank + 1.0, np.float32))
        assert np.array_equal(out, np.full(6, 3.0, np.float32)), out
        back = mlc.dist.allreduce(np.full(2, rank, np.int32), op="max")   # the eager path checks too
        assert np.array_equal(back, [1, 1]), back
    else:
        sys.exit(f"unknown case {case!r}")
except mlc.dist.DistError as e:
    print(f"rank {rank}: DistError: {e}", flush=True)
    sys.exit(3)
print(f"rank {rank}: finished with {out}", flush=True)
