"""Pipeline parallel: a 2-stage MLP trained with GPipe (4 micro-batches) on 2 ranks
matches single-device training (run with mpirun -n 2)."""
import sys

import numpy as np

import mlc

rank = mlc.dist.rank()
rng = np.random.default_rng(0)
P0 = {"w": rng.standard_normal((16, 32)).astype(np.float32) * 0.3, "b": np.zeros(32, np.float32)}
P1 = {"w": rng.standard_normal((32, 4)).astype(np.float32) * 0.3, "b": np.zeros(4, np.float32)}
X = rng.standard_normal((32, 16)).astype(np.float32)
Y = rng.standard_normal((32, 4)).astype(np.float32)
LR, STEPS = 0.1, 10


def stage0(p, x):
    return mlc.tanh(x @ p["w"] + p["b"])


def stage1(p, h):
    return h @ p["w"] + p["b"]


def loss_fn(out, y):
    return mlc.mean((out - y) ** 2)


def sgd(p, g):
    for k in p:
        p[k] = p[k] - LR * g[k]


# the pipeline: this rank's stage and parameters only
pipe = mlc.dist.Pipeline([stage0, stage1], loss_fn, micro_batches=4)
mine = {k: v.copy() for k, v in (P0 if rank == 0 else P1).items()}
pp_losses = []
for _ in range(STEPS):
    loss, grads = pipe.value_and_grad(mine, X, Y)
    pp_losses.append(loss)
    sgd(mine, grads)

# single device: both stages, the whole batch
ref = [{k: v.copy() for k, v in P0.items()}, {k: v.copy() for k, v in P1.items()}]
vg = mlc.jit(mlc.value_and_grad(lambda ps, x, y: loss_fn(stage1(ps[1], stage0(ps[0], x)), y)))
ref_losses = []
for _ in range(STEPS):
    loss, grads = vg(ref, X, Y)
    ref_losses.append(float(loss))
    sgd(ref[0], grads[0])
    sgd(ref[1], grads[1])

diff = max(float(np.abs(mine[k] - ref[rank][k]).max()) for k in mine)
line = f"rank {rank}: stage {rank} parameters max diff {diff:.3g} after {STEPS} steps"
if rank == 1:
    ldiff = max(abs(a - b) for a, b in zip(pp_losses, ref_losses))
    line += f", loss diff {ldiff:.3g}, loss {pp_losses[0]:.4f} -> {pp_losses[-1]:.4f}"
    diff = max(diff, ldiff)
print(line)
if diff > 1e-5:
    sys.exit(f"rank {rank}: pipeline training differs from single-device training")
if rank == 0:
    fwd, bwd = pipe._fns
    print(fwd.lower(mine, np.split(X, 4)[0]).ir("graph"))
    print(bwd.lower(mine, np.split(X, 4)[0]).ir("graph"))
