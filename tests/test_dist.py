"""Collectives as graph ops and the parallelization passes: single-process properties
here, and the scripts in tests/dist/ under `mpirun -n 2` (the MPI launcher of the
`dist` extra, which `make test` installs)."""
import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

import mlc
from mlc.frontend.trace import trace_info
from mlc.dist import allreduce_gradients, data_parallel_graph
from mlc.passes.simplify import eliminate_common_subexpressions, eliminate_dead_code
from mlc.runtime.comm import DistError, SingleProcess, world

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = os.path.join(ROOT, "tests", "dist")


def _mpirun():
    here = os.path.join(os.path.dirname(sys.executable), "mpirun")
    return here if os.path.exists(here) else shutil.which("mpirun")


def _has_mpi4py():
    try:
        import mpi4py  # noqa: F401
        return True
    except ImportError:
        return False


MPIRUN = _mpirun()
needs_mpi = pytest.mark.skipif(MPIRUN is None or not _has_mpi4py(),
                               reason="needs mpi4py and an MPI launcher: pip install '.[dist]'")


def run_ranks(script: str, n: int = 2, timeout: float = 300, _args=(), **env) -> subprocess.CompletedProcess:
    cmd = [MPIRUN, "-n", str(n), sys.executable, os.path.join(SCRIPTS, script), *_args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1", **env})


# ----------------------------------------------------------------------------- one process (a world of one)

def test_world_of_one_without_a_launcher():
    w = world()
    assert isinstance(w, SingleProcess) and (mlc.dist.rank(), mlc.dist.world_size()) == (0, 1)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)

    def f(x):
        return mlc.dist.allreduce(x, op="mean"), mlc.dist.allgather(x, axis=1), mlc.dist.broadcast(x, root=0)

    g = mlc.trace(f, x)
    text = str(g)
    assert 'allreduce(%x) {op="mean", group=[0]}' in text and "allgather(%x) {axis=1, group=[0]}" in text
    for out in mlc.compile(f, x)(x):
        np.testing.assert_array_equal(out, x)
    with pytest.raises(DistError, match="this process runs alone .* start it with mpirun -n N"):
        SingleProcess().send(x, 1, 0)
    np.testing.assert_array_equal(mlc.jit(mlc.grad(lambda x: mlc.sum(mlc.dist.allreduce(x * x))))(x), 2 * x)


@pytest.mark.parametrize("name", ["allreduce", "allgather", "reduce_scatter", "broadcast", "send", "recv"])
def test_collective_ops_are_registered_once_with_gradient_rules(name):
    from mlc import ops
    op = ops.get(name)
    assert op.kind == "collective" and "group" in op.attrs
    assert op.vjp is not None                             # recv's sends the gradient back to the sender
    assert getattr(mlc, name) is getattr(mlc.dist, name)  # one function, two names


def test_type_rules_and_errors():
    x = np.ones((4, 6), np.float32)
    with pytest.raises(mlc.TraceError, match="op must be one of sum, mean, max, min, got 'avg'"):
        mlc.trace(lambda x: mlc.dist.allreduce(x, op="avg"), x)
    with pytest.raises(mlc.TraceError, match="op 'mean' needs a float tensor"):
        mlc.trace(lambda x: mlc.dist.allreduce(x, op="mean"), np.ones(3, np.int32))
    with pytest.raises(mlc.TraceError, match=r"group \[0, 3\] names ranks outside the world of 1"):
        mlc.trace(lambda x: mlc.dist.allreduce(x, group=(0, 3)), x)
    with pytest.raises(mlc.TraceError, match="peer 0 is this process's own rank"):
        mlc.trace(lambda x: mlc.dist.send(x, peer=0), x)
    with pytest.raises(mlc.TraceError, match="a 0-d tensor has no axis to gather along"):
        mlc.trace(lambda x: mlc.dist.allgather(mlc.sum(x)), x)
    g = mlc.trace(lambda x: mlc.dist.reduce_scatter(x, axis=-1), x)
    assert g.outputs[0].shape == (4, 6) and "axis=1" in str(g)


def test_passes_never_drop_merge_or_fold_collectives():
    x = np.ones((3,), np.float32)

    def f(x):
        mlc.dist.allreduce(x)                       # result unused: it still communicates
        a = mlc.dist.allreduce(x)
        b = mlc.dist.allreduce(x)                   # same op, same input: two messages
        c = mlc.dist.allreduce(np.ones(3, np.float32))   # a constant input: not folded
        return a + b + c

    g = mlc.trace(f, x)
    g = eliminate_dead_code(eliminate_common_subexpressions(g))
    assert str(g).count("allreduce(") == 4
    exe = mlc.compile(f, x)
    assert exe.ir("fused").count("allreduce(") == 4
    np.testing.assert_array_equal(exe(x), 3 * x)
    # a collective's kernel holds it alone: the adds around it are separate kernels
    loop = exe.ir("loop")
    assert loop.count("call mlc_collective(") == 4


def test_data_parallel_pass_buckets_gradients_in_production_order():
    rng = np.random.default_rng(0)
    params = {"w1": rng.standard_normal((8, 16)).astype(np.float32), "w2": rng.standard_normal((16, 4)).astype(
        np.float32), "b2": np.zeros(4, np.float32)}
    x = rng.standard_normal((5, 8)).astype(np.float32)

    def grads(p, x):
        return mlc.grad(lambda p: mlc.sum(mlc.tanh(x @ p["w1"]) @ p["w2"] + p["b2"]))(p)

    def buckets_of(nbytes):
        def f(p, x):
            leaves, tree = mlc.tree.flatten(grads(p, x))
            return mlc.tree.unflatten(tree, allreduce_gradients(leaves, nbytes))
        return mlc.trace(f, params, x)

    one = str(buckets_of(1 << 20))
    assert one.count("allreduce(") == 1 and "f32[196]" in one     # 8*16 + 16*4 + 4 in one flat buffer
    each = str(buckets_of(4))
    assert each.count("allreduce(") == 3
    order = [line.split(":")[-1].strip() for line in each.splitlines() if "allreduce(" in line]
    assert order == ["f32[4]", "f32[16,4]", "f32[8,16]"]          # the last layer's gradients come first
    # the Graph form, and the values: a world of one averages over itself
    g = data_parallel_graph(trace_info(grads, (params, x)).graph, bucket_bytes=1 << 20)
    assert str(g).count('allreduce(') == 1
    out = mlc.compile(g)(*mlc.tree.leaves(params), x)
    ref = mlc.jit(grads)(params, x)
    for a, b in zip(out, mlc.tree.leaves(ref)):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_data_parallel_train_step_in_one_process_is_plain_training():
    from mlc import nn, optim
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    p1, state = model.init(seed=0)
    p2, _ = model.init(seed=0)
    x = np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32)
    y = np.array([0, 1, 1, 0, 1, 0])

    def loss(p, x, y):
        return nn.cross_entropy(model.apply(p, state, x)[0], y)

    opt = optim.SGD(lr=0.1)
    s1, s2 = opt.init(p1), opt.init(p2)
    dp, plain = optim.train_step(loss, opt, data_parallel=True), optim.train_step(loss, opt)
    for _ in range(3):
        assert float(dp(p1, s1, x, y)) == pytest.approx(float(plain(p2, s2, x, y)), rel=1e-6)
    for a, b in zip(mlc.tree.leaves(p1), mlc.tree.leaves(p2)):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    assert "allreduce(" in dp.lower(p1, s1, x, y).ir("graph")


def test_shard_params_and_errors():
    p = {"w": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.zeros(4, np.float32)}
    local = mlc.dist.shard_params(p, {"w": "column"})
    np.testing.assert_array_equal(local["w"], p["w"])          # one rank holds everything
    with pytest.raises(KeyError, match="shard names 'v', not parameters; the parameters are w, b"):
        mlc.dist.shard_params(p, {"v": "row"})
    with pytest.raises(ValueError, match="'column' or 'row', got 'diagonal'"):
        mlc.dist.shard_params(p, {"w": "diagonal"})


def test_collectives_are_not_exported(tmp_path):
    from mlc.codegen.export import ExportError
    exe = mlc.compile(lambda x: mlc.dist.allreduce(x), np.ones(3, np.float32))
    with pytest.raises(ExportError, match="a model with collectives"):
        exe.export(tmp_path / "m.so")


def test_timeout_setting_is_validated(monkeypatch):
    from mlc.runtime.comm import default_timeout
    monkeypatch.setenv("MLC_DIST_TIMEOUT", "soon")
    with pytest.raises(DistError, match="MLC_DIST_TIMEOUT must be a number of seconds, got 'soon'"):
        default_timeout()
    monkeypatch.setenv("MLC_DIST_TIMEOUT", "7.5")
    assert default_timeout() == 7.5


# ----------------------------------------------------------------------------- two ranks under mpirun

@needs_mpi
def test_every_collective_and_its_gradient_on_two_ranks():
    r = run_ranks("collectives.py")
    assert r.returncode == 0, r.stdout + r.stderr
    for rank in (0, 1):
        assert r.stdout.count(f"rank {rank} ") == 10 and f"rank {rank} send/recv: ok" in r.stdout


@needs_mpi
def test_data_parallel_training_matches_single_process():
    r = run_ranks("dp_train.py")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("same on all ranks True") == 4
    # the bucketed all-reduces the pass inserted, printed from the compiled step's graph
    assert r.stdout.count('allreduce(') == 4 and '{op="mean", group=[0, 1]}' in r.stdout


@needs_mpi
def test_data_parallel_training_with_gpu_schedules_matches_single_process():
    # the cuda target's schedules, emulated, with the bucketed all-reduces between their launches
    r = run_ranks("dp_train.py", _args=("cuda-sm90",), MLC_CUDA_EMULATE="1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("same on all ranks True") == 4


@needs_mpi
def test_tensor_parallel_mlp_matches_single_device():
    r = run_ranks("tp_mlp.py")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("gradient max diff") == 2
    graph = r.stdout[r.stdout.index("graph @mlp_tp"):]
    assert graph.count("allreduce(") == 1 and 'allreduce(%3) {op="sum", group=[0, 1]}' in graph
    assert "%p_w1: f32[16,16]" in graph and "%p_w2: f32[16,8]" in graph   # the shards


@needs_mpi
def test_pipeline_training_matches_single_device():
    r = run_ranks("pp_train.py")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "rank 0: stage 0 parameters max diff" in r.stdout and "rank 1: stage 1 parameters" in r.stdout
    assert "send(%2) {peer=1, tag=0, group=[0, 1]}" in r.stdout and "recv() {shape=[8, 32]" in r.stdout


@needs_mpi
def test_a_rank_exiting_early_fails_the_others_within_the_timeout(tmp_path):
    report = tmp_path / "rank0.txt"
    t0 = time.monotonic()
    r = run_ranks("dead_rank.py", timeout=120, _args=(str(report),), MLC_DIST_TIMEOUT="3")
    elapsed = time.monotonic() - t0
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert "rank 1: leaving early" in out
    assert report.exists(), f"rank 0 never reported an error:\n{out}"
    assert "allreduce(sum) on ranks [0, 1] did not complete within 3 s: another rank exited" in report.read_text()
    assert elapsed < 90


@needs_mpi
@pytest.mark.parametrize("case, message", [
    ("sizes", r"allreduce at {script}:18: ranks disagree: rank 0 f32\[4\], rank 1 f32\[8\]"),
    # rank 0 repeats a call both agreed on; rank 1 changes its type: rank 0 notices while it waits
    ("dtypes-later", r"allreduce at {script}:18: ranks disagree: rank 0 f32\[4\], rank 1 f64\[4\]"),
    # whichever rank reports first names its own line: the send's or the recv's
    ("send-recv", r"(send at {script}:27|recv at {script}:29): ranks disagree: rank 0 sends f32\[5\], "
                  r"rank 1 receives f64\[5\]"),
], ids=["sizes", "dtypes-later", "send-recv"])
def test_ranks_that_disagree_on_a_collective_fail_with_each_ranks_type(case, message):
    r = run_ranks("disagree.py", 2, 120, MLC_DIST_TIMEOUT="60", _args=(case,))
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "finished" not in out, out   # never a result
    assert re.search("DistError: " + message.format(script=re.escape(os.path.join(SCRIPTS, "disagree.py"))), out), out
    assert "did not complete within" not in out   # found by agreement, not by the timeout


@needs_mpi
def test_ranks_that_agree_check_once_and_compute():
    r = run_ranks("disagree.py", 2, 120, _args=("agree",))
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("finished with [3. 3. 3. 3. 3. 3.]") == 2


def test_nccl_type_map_and_pipeline_type_codes_cover_the_integer_dtypes():
    from types import SimpleNamespace

    from mlc.dist import TYPE_CODES
    from mlc.runtime.comm import nccl_types
    # by name: the constants a CuPy has (NCCL has no 16-bit integers); an older CuPy
    # without NCCL_UINT64 leaves uint64 out instead of failing
    full = SimpleNamespace(NCCL_FLOAT32=7, NCCL_FLOAT64=8, NCCL_FLOAT16=6, NCCL_INT32=2, NCCL_INT64=4, NCCL_INT8=0,
                           NCCL_UINT8=1, NCCL_UINT32=3, NCCL_UINT64=5)
    types = nccl_types(full)
    assert types[np.dtype(np.uint32)] == 3 and types[np.dtype(np.uint64)] == 5 and types[np.dtype(np.int8)] == 0
    assert np.dtype(np.int16) not in types and np.dtype(np.uint16) not in types
    old = SimpleNamespace(**{k: v for k, v in vars(full).items() if k != "NCCL_UINT64"})
    assert np.dtype(np.uint64) not in nccl_types(old) and len(nccl_types(old)) == 8
    # pipeline type codes are additive: the old codes keep their meaning
    assert TYPE_CODES[:8] == ("float32", "float64", "float16", "int32", "int64", "int8", "uint8", "bool")
    assert {d.name for d in mlc.ir.ALL_DTYPES} == set(TYPE_CODES)
