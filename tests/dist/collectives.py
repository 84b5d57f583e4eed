"""Every collective op on 2 ranks: compiled result against numpy on the gathered
inputs, and its gradient rule against finite differences of the sum over ranks
(run with mpirun -n 2)."""
import sys

import numpy as np

import mlc
from mlc.dist import allgather, allreduce, broadcast, reduce_scatter

comm = mlc.dist.world().comm   # mpi4py, only to build the expected values independently
rank, n = comm.Get_rank(), comm.Get_size()
rng = np.random.default_rng(rank)
failures = []

CASES = {   # name: (function, expected output from every rank's input)
    "allreduce_sum": (lambda x: allreduce(x, op="sum"), lambda xs, r: sum(xs)),
    "allreduce_mean": (lambda x: allreduce(x, op="mean"), lambda xs, r: sum(xs) / n),
    "allreduce_max": (lambda x: allreduce(x, op="max"), lambda xs, r: np.maximum.reduce(xs)),
    "allreduce_min": (lambda x: allreduce(x, op="min"), lambda xs, r: np.minimum.reduce(xs)),
    "allgather_0": (lambda x: allgather(x, axis=0), lambda xs, r: np.concatenate(xs, 0)),
    "allgather_1": (lambda x: allgather(x, axis=1), lambda xs, r: np.concatenate(xs, 1)),
    "reduce_scatter_0": (lambda x: reduce_scatter(x, axis=0), lambda xs, r: np.split(sum(xs), n, 0)[r]),
    "reduce_scatter_1": (lambda x: reduce_scatter(x, axis=1, op="mean"),
                         lambda xs, r: np.split(sum(xs) / n, n, 1)[r]),
    "broadcast_1": (lambda x: broadcast(x * 3.0, root=1), lambda xs, r: xs[1] * 3.0),
}

for name, (fn, expect) in CASES.items():
    x = rng.standard_normal((4, 6))          # float64: finite differences need the precision
    xs = comm.allgather(x)
    out = mlc.jit(fn)(x)
    if not np.allclose(out, expect(xs, rank), rtol=1e-12, atol=1e-12):
        failures.append(f"{name}: forward differs from numpy")
    # J = sum over ranks of sum(c_r * fn(x)_r); mlc.grad gives dJ/dx_r (collective vjps)
    c = rng.standard_normal(out.shape)
    grad = mlc.jit(mlc.grad(lambda x: mlc.sum(fn(x) * c)))(x)
    local = mlc.jit(lambda x: mlc.sum(fn(x) * c))

    def J(xr):
        return comm.allreduce(float(local(xr)))

    eps, worst = 1e-6, 0.0
    for trial in range(4):
        owner = trial % n
        i = tuple(np.random.default_rng(100 + trial).integers(0, s) for s in x.shape)
        xp, xm = x.copy(), x.copy()
        if rank == owner:
            xp[i] += eps
            xm[i] -= eps
        fd = (J(xp) - J(xm)) / (2 * eps)
        analytic = comm.bcast(float(grad[i]) if rank == owner else None, root=owner)
        worst = max(worst, abs(fd - analytic))
    if worst > 1e-6:
        failures.append(f"{name}: gradient differs from finite differences by {worst:.3g}")
    print(f"rank {rank} {name}: forward ok, gradient vs finite differences {worst:.2g}", flush=True)

# send / recv, and their gradients: rank 1's objective sum(w * y**2) depends on what it
# received, so autodiff sends dJ/dy = 2*w*y back; rank 0's send receives it in its own rule
x = rng.standard_normal(5)
w = np.full(5, 3.0)
if rank == 0:
    got = mlc.jit(lambda x: mlc.dist.send(x, peer=1, tag=7))(x)
    back = mlc.jit(mlc.grad(lambda x: mlc.sum(mlc.dist.send(x, peer=1, tag=8))))(x)
    ok = np.array_equal(got, x) and np.allclose(back, 1.0 + 2.0 * 3.0 * x)   # own use + the peer's gradient
else:
    y = mlc.jit(lambda: mlc.dist.recv(shape=(5,), dtype="float64", peer=0, tag=7))()
    gw = mlc.jit(mlc.grad(lambda w: mlc.sum(w * mlc.dist.recv(shape=(5,), dtype="float64", peer=0, tag=8) ** 2)))(w)
    ok = y.shape == (5,) and np.allclose(gw, y ** 2)   # y is the x rank 0 sent both times
print(f"rank {rank} send/recv: {'ok' if ok else 'WRONG'}", flush=True)
if not ok:
    failures.append("send/recv")
if failures:
    sys.exit(f"rank {rank}: " + "; ".join(failures))
