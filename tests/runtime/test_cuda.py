"""The GPU runtime (runtime/cuda.py): compiled programs on a CUDA device through CuPy.
Without CuPy or a device, the error paths are checked and the device tests skip,
saying why; the same schedules' numerics are checked under emulation in
tests/schedule/test_gpu_schedules.py and their PTX by ptxas in tests/codegen/test_nvptx.py."""
import numpy as np
import pytest

import mlc
from mlc.examples import mlp, mlp_inputs, mlp_numpy
from mlc.runtime import cuda
from mlc.target import Target


def _device():
    try:
        return cuda.cupy_module()
    except cuda.CudaUnavailable as e:
        return str(e)


CP = _device()
needs_device = pytest.mark.skipif(isinstance(CP, str), reason=f"no CUDA device: {CP}")


@pytest.fixture(autouse=True)
def _no_emulation(monkeypatch):
    monkeypatch.delenv("MLC_CUDA_EMULATE", raising=False)


@pytest.mark.skipif(not isinstance(CP, str), reason="a CUDA device is present")
def test_without_a_device_the_error_says_what_is_missing():
    x = np.ones((4, 8), np.float32)
    with pytest.raises(cuda.CudaUnavailable, match="MLC_CUDA_EMULATE=1 runs GPU schedules on the CPU") as e:
        mlc.compile(lambda a: a * 2.0, x, target="cuda-sm90")
    assert "mlc compile MODEL --target cuda-sm90 -o model.ptx" in str(e.value)
    with pytest.raises(ValueError, match="target 'cuda' means the current CUDA device, and none was found"):
        Target.get("cuda")


@needs_device
def test_mlp_on_the_device_matches_numpy():
    exe = mlc.compile(mlp, *mlp_inputs(), target="cuda")
    args = [CP.asarray(a) for a in mlp_inputs()]
    y = exe(*args)
    assert isinstance(y, CP.ndarray)
    np.testing.assert_allclose(CP.asnumpy(y), mlp_numpy(*mlp_inputs()), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(CP.asnumpy(exe(*mlp_inputs())), mlp_numpy(*mlp_inputs()), rtol=1e-4, atol=1e-5)


@needs_device
@pytest.mark.parametrize("graph", ["1", "0"])
def test_jit_with_device_arrays_and_graph_replay(monkeypatch, graph):
    monkeypatch.setenv("MLC_CUDA_GRAPH", graph)
    f = mlc.jit(lambda x, w: mlc.relu(x @ w).sum(axis=1), target="cuda")
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((64, 96), np.float32), rng.standard_normal((96, 80), np.float32)
    for _ in range(3):   # the first call captures, the next ones replay
        got = CP.asnumpy(f(CP.asarray(x), CP.asarray(w)))
        np.testing.assert_allclose(got, np.maximum(x @ w, 0).sum(axis=1), rtol=1e-4, atol=1e-3)


@needs_device
def test_torch_cuda_tensors_go_in_without_a_copy():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA here")
    f = mlc.jit(lambda a: a * 3.0 + 1.0, target="cuda")
    t = torch.arange(12, dtype=torch.float32, device="cuda").reshape(3, 4)
    np.testing.assert_allclose(CP.asnumpy(f(t)), t.cpu().numpy() * 3 + 1)


@needs_device
def test_training_step_updates_device_parameters_in_place():
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((8, 40)).astype(np.float32), rng.standard_normal((40, 30)).astype(np.float32) * 0.1

    def step(w, x):
        loss, g = mlc.value_and_grad(lambda w: mlc.sum(mlc.relu(x @ w) ** 2))(w)
        return loss, w - 0.01 * g
    gpu, cpu = mlc.compile(step, w, x, target="cuda", in_place=(0,)), mlc.compile(step, w, x, in_place=(0,))
    w_gpu, w_cpu, x_gpu = CP.asarray(w), w.copy(), CP.asarray(x)
    for _ in range(3):
        np.testing.assert_allclose(CP.asnumpy(gpu(w_gpu, x_gpu)), cpu(w_cpu, x), rtol=1e-4)
    np.testing.assert_allclose(CP.asnumpy(w_gpu), w_cpu, rtol=1e-4, atol=1e-5)
    with pytest.raises(TypeError, match="updated in place, so it must be a C-contiguous CuPy array"):
        gpu(w, x_gpu)   # a host array cannot be updated where it is


@needs_device
def test_profile_times_every_launch():
    exe = mlc.compile(mlp, *mlp_inputs(), target="cuda")
    report = exe.profile(*[CP.asarray(a) for a in mlp_inputs()], runs=3, warmup=1)
    assert len(report.kernels) == len(exe._code.launches) and all(k.median > 0 for k in report.kernels)


# ----------------------------------------------------------------------------- collectives in GPU programs

def _dp_step_graph():
    x, w = np.ones((8, 16), np.float32), np.full((16, 4), 0.1, np.float32)

    def step(w, x):
        loss, g = mlc.value_and_grad(lambda w: mlc.sum((x @ w) ** 2))(w)
        g, = mlc.dist.allreduce_gradients([g])
        return loss, w - 0.1 * g
    return mlc.trace(step, w, x), (w, x)


def test_a_collective_is_an_entry_of_the_launch_table_between_kernels():
    from mlc.driver import Compiled
    graph, _ = _dp_step_graph()
    c = Compiled(graph, Target.get("cuda-sm90"))
    table = c.gpu_module.launches
    coll = [n for n, launch in enumerate(table) if launch.collective]
    assert len(coll) == 1 and 0 < coll[0] < len(table) - 1   # the update kernels run after it
    entry = table[coll[0]]
    import json
    d = json.loads(entry.collective)
    assert d["op"] == "allreduce" and d["attrs"]["op"] == "mean" and d["out"] == ["<f4", [16, 4]]
    assert entry.kernel not in c.gpu_module.ptx   # no kernel of its own: the runtime's communicator runs it
    assert all(launch.kernel in c.gpu_module.ptx for launch in table if not launch.collective)


def test_device_world_choice_and_its_errors(monkeypatch):
    from mlc.runtime import comm
    monkeypatch.setattr(comm, "_device_world", None)
    monkeypatch.setenv("MLC_DIST", "tcp")
    with pytest.raises(comm.DistError, match="MLC_DIST must be one of auto, mpi, nccl, none, got 'tcp'"):
        comm.device_world()
    monkeypatch.setenv("MLC_DIST", "auto")
    if comm.world().size == 1:   # one process: buffers pass through, whatever the transport
        assert comm.device_world() is comm.world()
    monkeypatch.setattr(comm, "_device_world", None)
    monkeypatch.setattr(comm, "nccl_available", lambda: False)
    monkeypatch.setenv("MLC_DIST", "nccl")
    with pytest.raises(comm.DistError, match="GPU collectives by NCCL need CuPy with NCCL"):
        comm.device_world()


@needs_device
def test_a_data_parallel_step_runs_its_all_reduce_on_the_device(monkeypatch):
    from mlc.runtime import comm
    monkeypatch.setattr(comm, "_device_world", None)
    graph, (w, x) = _dp_step_graph()
    step = mlc.compile(graph, target="cuda")
    cpu = mlc.compile(graph)
    for got, want in zip(step(CP.asarray(w), CP.asarray(x)), cpu(w, x)):
        np.testing.assert_allclose(CP.asnumpy(got), want, rtol=1e-5)
