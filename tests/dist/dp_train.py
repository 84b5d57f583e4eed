"""Data parallel: 20 steps on 2 ranks end with the parameters of single-process
training on the whole batch (run with mpirun -n 2). argv[1], if given, is the target
(cuda-sm90 under MLC_CUDA_EMULATE=1: the GPU schedules with the all-reduces between them)."""
import sys

import numpy as np

import mlc
from mlc import nn, optim

rank, size = mlc.dist.rank(), mlc.dist.world_size()
TARGET = sys.argv[1] if len(sys.argv) > 1 else "host"
model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 4))
rng = np.random.default_rng(0)
X = rng.standard_normal((64, 16)).astype(np.float32)
Y = rng.integers(0, 4, size=64).astype(np.int64)
_, STATE = model.init(seed=1)


def loss_fn(params, x, y):
    logits, _ = model.apply(params, STATE, x)
    return nn.cross_entropy(logits, y)


def train(data_parallel, opt):
    params, _ = model.init(seed=1)
    state = opt.init(params)
    # small buckets: several all-reduces, bucketed by production order
    step = optim.train_step(loss_fn, opt, data_parallel=data_parallel, bucket_bytes=4096, target=TARGET)
    losses = [float(step(params, state, X, Y)) for _ in range(20)]
    return params, losses, step


for name, make in (("sgd", lambda: optim.SGD(lr=0.1, momentum=0.9)), ("adam", lambda: optim.Adam(lr=1e-2))):
    dp_params, dp_losses, step = train(True, make())
    ref_params, ref_losses, _ = train(False, make())   # every rank: the whole batch, no collectives
    diff = max(float(np.abs(a - b).max()) for a, b in zip(mlc.tree.leaves(dp_params), mlc.tree.leaves(ref_params)))
    ldiff = max(abs(a - b) for a, b in zip(dp_losses, ref_losses))
    # the parameters are identical on every rank
    mine = np.concatenate([p.reshape(-1) for p in mlc.tree.leaves(dp_params)])
    theirs = mlc.dist.world().comm.bcast(mine, root=0) if size > 1 else mine
    print(f"rank {rank} {name}: max |dp - single| = {diff:.3g}, loss diff {ldiff:.3g}, "
          f"same on all ranks {np.array_equal(mine, theirs)}, loss {dp_losses[0]:.4f} -> {dp_losses[-1]:.4f}")
    if diff > 1e-5 or ldiff > 1e-5 or not np.array_equal(mine, theirs):
        sys.exit(f"rank {rank}: data-parallel training diverged from single-process training")

if rank == 0:   # the step's graph after the data-parallel pass: the all-reduces it inserted
    params, _ = model.init(seed=1)
    graph = step.lower(params, optim.Adam(lr=1e-2).init(params), X, Y).ir("graph")
    print("\n".join(line for line in graph.splitlines() if "allreduce(" in line))
