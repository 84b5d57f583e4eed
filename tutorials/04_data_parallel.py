"""Tutorial 4: make a training script data-parallel with one line, run it on 2 ranks.

    python tutorials/04_data_parallel.py             # starts itself with mpirun -n 2, then checks
                                                     # the result against training in one process
    mpirun -n 2 python tutorials/04_data_parallel.py --train --out params.mlct   # what it starts

The script below is ordinary single-process training, except for one argument:
``optim.train_step(loss_fn, opt, data_parallel=True)``. Under ``mpirun -n 2`` each
rank computes on its half of every batch; after autodiff, a compiler pass averages
the gradients across the ranks with bucketed all-reduces (ops in the graph, run by
MPI), so every rank applies the same update and ends with the same model as one
process training on whole batches. The printed graph shows where the all-reduces went.
Needs the ``dist`` extra (``pip install 'mlc[dist]'``: mpi4py and MPICH).
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

import mlc
from mlc import nn, optim


def train(data_parallel: bool, steps: int = 30):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((256, 20)).astype(np.float32)
    y = (x[:, :5].sum(axis=1) > 0).astype(np.int64) + 2 * (x[:, 5] > 0)   # 4 classes
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4))
    params, state = model.init(seed=0)

    def loss_fn(params, x, y):
        return nn.cross_entropy(model.apply(params, state, x)[0], y)

    opt = optim.Adam(lr=3e-3)
    opt_state = opt.init(params)
    step = optim.train_step(loss_fn, opt, data_parallel=data_parallel)   # <- the one line
    loader = mlc.data.DataLoader(x, y, batch_size=64, seed=0)             # every rank: the same batches
    losses = []
    for _ in range(steps // len(loader)):
        for xb, yb in loader:
            losses.append(float(step(params, opt_state, xb, yb)))
    return params, losses, step.lower(params, opt_state, xb, yb)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", action="store_true", help="train (run under mpirun)")
    p.add_argument("--out", help="with --train: rank 0 saves the parameters here")
    args = p.parse_args()
    if args.train:
        params, losses, exe = train(data_parallel=True)
        if mlc.dist.rank() == 0:
            print(f"{mlc.dist.world_size()} ranks: loss {losses[0]:.4f} -> {losses[-1]:.4f}")
            print("collectives in the compiled step:")
            print("\n".join(line for line in exe.ir("graph").splitlines() if "allreduce(" in line))
            mlc.checkpoint.save(args.out, params)
        return

    mpirun = os.path.join(os.path.dirname(sys.executable), "mpirun")
    mpirun = mpirun if os.path.exists(mpirun) else shutil.which("mpirun")
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        mpirun = None
    if mpirun is None:
        print("this tutorial needs mpi4py and an MPI launcher: pip install 'mlc[dist]'")
        return
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "params.mlct")
        cmd = [mpirun, "-n", "2", sys.executable, os.path.abspath(__file__), "--train", "--out", out]
        print("$ mpirun -n 2 python tutorials/04_data_parallel.py --train --out params.mlct")
        r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        print(r.stdout.rstrip())
        if r.returncode != 0:
            raise SystemExit(f"the 2-rank run failed:\n{r.stderr}")
        two_ranks = mlc.checkpoint.load(out)
    one, losses, _ = train(data_parallel=False)
    diff = max(float(np.abs(a - b).max()) for a, b in zip(mlc.tree.leaves(two_ranks), mlc.tree.leaves(one)))
    print(f"1 process: loss {losses[0]:.4f} -> {losses[-1]:.4f}")
    print(f"2 ranks end with the parameters of 1 process (max difference {diff:.2g}): {diff < 1e-5}")


if __name__ == "__main__":
    main()
