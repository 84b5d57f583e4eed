"""A rank that exits early: the others fail with a clear error within MLC_DIST_TIMEOUT,
never hang (run with mpirun -n 2 and MLC_DIST_TIMEOUT=3). Rank 0 also writes its error to
the file named by the first argument: the launcher may stop forwarding output at the abort."""
import sys
import time

import numpy as np

import mlc

rank = mlc.dist.rank()
x = np.ones(1024, np.float32)
step = mlc.jit(lambda x: mlc.dist.allreduce(x * 2.0))
step(x)                          # both ranks take part once
if rank == 1:
    print("rank 1: leaving early", flush=True)
    sys.exit(0)
t0 = time.monotonic()
try:
    step(x)
except mlc.dist.DistError as e:
    report = f"rank 0: DistError after {time.monotonic() - t0:.1f} s: {e}"
    with open(sys.argv[1], "w") as f:
        f.write(report)
    print(report, flush=True)
    raise
