"""Tensor parallel: a column- then row-parallel MLP, forward and backward, equals the
single-device model (run with mpirun -n 2)."""
import sys

import numpy as np

import mlc

rank, n = mlc.dist.rank(), mlc.dist.world_size()
rng = np.random.default_rng(0)
params = {"w1": rng.standard_normal((16, 32)).astype(np.float32) * 0.3,
          "b1": rng.standard_normal(32).astype(np.float32) * 0.1,
          "w2": rng.standard_normal((32, 8)).astype(np.float32) * 0.3,
          "b2": rng.standard_normal(8).astype(np.float32) * 0.1}
x = rng.standard_normal((4, 16)).astype(np.float32)
target = rng.standard_normal((4, 8)).astype(np.float32)
SHARD = {"w1": "column", "b1": "column", "w2": "row"}


def mlp(p, x):
    return mlc.tanh(mlc.relu(x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"])


def loss(p, x, t):
    return mlc.mean((mlp(p, x) - t) ** 2)


local = mlc.dist.shard_params(params, SHARD)
y_tp = mlc.dist.tensor_parallel(mlp, SHARD)(local, x)
y_ref = mlc.jit(mlp)(params, x)
fwd = float(np.abs(y_tp - y_ref).max())

l_tp, g_tp = mlc.dist.tensor_parallel_value_and_grad(loss, SHARD)(local, x, target)
l_ref, g_ref = mlc.value_and_grad(loss)(params, x, target)
g_ref_local = mlc.dist.shard_params(g_ref, SHARD)   # this rank's slice of the full gradients
bwd = max(float(np.abs(g_tp[k] - g_ref_local[k]).max()) for k in params)
print(f"rank {rank}: forward max diff {fwd:.3g}, loss diff {abs(float(l_tp) - float(l_ref)):.3g}, "
      f"gradient max diff {bwd:.3g}, local shapes {[tuple(local[k].shape) for k in params]}")
if fwd > 1e-5 or bwd > 1e-5 or abs(float(l_tp) - float(l_ref)) > 1e-5:
    sys.exit(f"rank {rank}: tensor-parallel results differ from the single-device model")
if rank == 0:
    from mlc.frontend.trace import trace_info
    from mlc.dist import tensor_parallel_graph
    g = trace_info(mlp, (params, x)).graph
    print(tensor_parallel_graph(g, {0: "column", 1: "column", 2: "row"}))
