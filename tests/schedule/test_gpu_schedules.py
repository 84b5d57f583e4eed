"""Default GPU schedules (mlc.schedule.gpu), checked by emulation on the CPU
(MLC_CUDA_EMULATE=1): every op family against numpy, the transformer block and a
light ONNX model against the CPU build; every scheduled function is a sequence of
launch nests that passes ``loop.verify`` for the cuda target."""
import os

import numpy as np
import pytest

import mlc
from mlc import examples
from mlc.driver import Compiled
from mlc.ir import loop as L
from mlc.ir.expr import Const
from mlc.ir.loop import For
from mlc.ir.stmt import walk_stmts
from mlc.target import Target

GPU = Target.get("cuda-sm90")


@pytest.fixture(autouse=True)
def emulate(monkeypatch):
    monkeypatch.setenv("MLC_CUDA_EMULATE", "1")


def rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def check_funcs(exe):
    """Every function: top-level launch nests only (blockIdx loops with constant
    extents around everything), verified for the GPU target."""
    text = exe.ir("loop")
    for func in L.parse_all(text):
        L.verify(func, GPU)
        tops = func.body.stmts if isinstance(func.body, L.Seq) else [func.body]
        for t in tops:
            assert isinstance(t, For) and t.kind.startswith("blockIdx"), f"{func.name}: {L.format_stmt(t, 0)[0]}"
        for s, _ in walk_stmts(func.body):
            if isinstance(s, For) and s.kind in L.GPU_KINDS:
                assert isinstance(s.extent, Const), f"{func.name}: {s.var.name} has extent {s.extent}"
    return text


def gpu_run(fn, *args, rtol=1e-5, atol=1e-5, want=None):
    exe = mlc.compile(fn, *args, target="cuda-sm90")
    text = check_funcs(exe)
    got = exe(*args)
    if want is None:
        want = mlc.compile(fn, *args)(*args)   # the CPU build
    for g, w in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)):
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)
    return text


# ----------------------------------------------------------------------------- op families

def test_elementwise_with_broadcasting():
    a, b, c = rand(7, 1, 33), rand(5, 1, seed=1), rand(33, seed=2)
    gpu_run(lambda a, b, c: mlc.tanh(a * b + c) - mlc.exp(c), a, b, c,
            want=np.tanh(a * b + c) - np.exp(c))


def test_scalar_output_and_full_reduction():
    a = rand(300)
    gpu_run(lambda a: a.sum(), a, want=a.sum(), rtol=1e-4, atol=1e-4)


def test_a_long_full_reduction_runs_in_two_phases_and_rows_combine_by_warp_shuffles():
    a, b = rand(4096), rand(3, 3000, seed=1)   # (above 4096 elements the tensor level splits a reduction)
    text = gpu_run(lambda a, b: (mlc.sum(a), mlc.max(a), mlc.sum(b * b, axis=1)), a, b,
                   want=(a.sum(dtype=np.float64), a.max(), (b * b).sum(axis=1)), rtol=1e-4, atol=1e-3)
    func = next(f for f in L.parse_all(text) if f.name.startswith("sum"))
    # the sum's long part: many blocks write partials, then one block combines them
    parts = [b for b in func.scratch if "_part" in b.name]
    assert len(parts) == 1 and parts[0].shape[0] > 1
    assert "warp_reduce max" in text and "warp_reduce sum" in text


@pytest.mark.parametrize("axis", [0, 1, 2, None])
@pytest.mark.parametrize("keepdims", [False, True])
def test_sum_and_max_over_each_axis(axis, keepdims):
    a = rand(6, 45, 37)
    gpu_run(lambda a: (mlc.sum(a, axis=axis, keepdims=keepdims), mlc.max(a, axis=axis, keepdims=keepdims)), a,
            want=(a.sum(axis=axis, keepdims=keepdims), a.max(axis=axis, keepdims=keepdims)), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("shape", [(4, 10), (3, 1000), (2, 3, 257)])
def test_softmax(shape):
    a = rand(*shape)
    e = np.exp(a - a.max(-1, keepdims=True))
    gpu_run(lambda a: mlc.softmax(a, axis=-1), a, want=e / e.sum(-1, keepdims=True), atol=1e-6)


def test_softmax_over_a_leading_axis():
    a = rand(9, 20)
    e = np.exp(a - a.max(0, keepdims=True))
    gpu_run(lambda a: mlc.softmax(a, axis=0), a, want=e / e.sum(0, keepdims=True), atol=1e-6)


@pytest.mark.parametrize("n", [48, 768])
def test_layer_norm(n):
    x, g, b = rand(5, n), rand(n, seed=1), rand(n, seed=2)
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    gpu_run(lambda x, g, b: mlc.layer_norm(x, g, b), x, g, b, want=(x - mu) / np.sqrt(var + 1e-5) * g + b,
            rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("m,k,n", [(64, 64, 64), (128, 32, 192), (37, 23, 29), (1, 100, 70), (130, 70, 66)])
def test_matmul(m, k, n):
    a, b = rand(m, k), rand(k, n, seed=1)
    gpu_run(lambda a, b: a @ b, a, b, want=a @ b, rtol=1e-4, atol=1e-4)


def test_matmul_with_fused_bias_and_relu():
    a, b, c = rand(70, 40), rand(40, 90, seed=1), rand(90, seed=2)
    gpu_run(lambda a, b, c: mlc.relu(a @ b + c), a, b, c, want=np.maximum(a @ b + c, 0), rtol=1e-4, atol=1e-4)


def test_float16_matmul_on_tensor_cores_and_float16_conv_without():
    a, b = rand(40, 72).astype(np.float16), rand(72, 24, seed=1).astype(np.float16)
    text = gpu_run(lambda a, b: mlc.relu(a @ b), a, b, rtol=2e-3, atol=2e-3)
    assert "mma_m16n8k16" in text
    x, w = rand(1, 8, 6, 6).astype(np.float16), rand(16, 8, 3, 3, seed=1).astype(np.float16)
    text = gpu_run(lambda x, w: mlc.conv(x, w, pads=[1, 1, 1, 1]), x, w, rtol=2e-3, atol=2e-3)
    assert "mma_m16n8k16" not in text   # its operands are not rows and columns: the implicit GEMM


def test_batch_matmul():
    a, b = rand(3, 33, 20), rand(3, 20, 17, seed=1)
    gpu_run(lambda a, b: a @ b, a, b, want=a @ b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("stride,pads", [(1, [1, 1, 1, 1]), (2, [0, 0, 0, 0]), (2, [1, 2, 1, 0])])
def test_conv2d(stride, pads):
    x, w = rand(2, 3, 11, 13), rand(8, 3, 3, 3, seed=1)
    gpu_run(lambda x, w: mlc.conv(x, w, strides=[stride, stride], pads=pads), x, w, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("k,stride,pads,groups", [(3, 1, 1, 1), (1, 1, 0, 1), (3, 2, 1, 1), (3, 1, 1, 4)])
def test_conv_with_bias_and_relu_as_an_implicit_gemm(k, stride, pads, groups):
    x, w, b = rand(2, 16, 9, 7), rand(24, 16 // groups, k, k, seed=1) * 0.2, rand(24, seed=2)
    text = gpu_run(lambda x, w, b: mlc.relu(mlc.conv(x, w, strides=[stride, stride], pads=[pads] * 4, group=groups)
                                            + b.reshape(1, 24, 1, 1)), x, w, b, rtol=1e-4, atol=1e-4)
    conv = next(f for f in L.parse_all(text) if f.name.startswith("conv"))
    tiled = "alloc acc:" in str(conv)   # the register tile of the implicit GEMM, the epilogue on its registers
    assert tiled == (groups == 1), str(conv)
    if tiled:
        assert "blockIdx.z" in str(conv) and "max(acc[" in str(conv)   # bias and relu applied to the registers
    if k == 1 and groups == 1:   # a 1x1 conv's weight slice is a box: staged through shared memory
        assert " shared" in str(conv)


def test_pooling():
    x = rand(2, 4, 9, 10)
    gpu_run(lambda x: (mlc.max_pool(x, kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
                       mlc.avg_pool(x, kernel_shape=[2, 2], strides=[2, 2]), mlc.global_avg_pool(x)), x)


def test_transpose_reshape_concat_slice_gather():
    x, y = rand(4, 6, 5), rand(4, 2, 5, seed=1)
    idx = np.array([3, 0, 2, 2], np.int64)

    def f(x, y, idx):
        t = mlc.transpose(x, axes=[2, 0, 1]).reshape(5, 24)
        c = mlc.concatenate([x, y], axis=1)
        s = mlc.slice(x, begin=[1, 0, 1], end=[4, 6, 5], step=[2, 3, 1])
        return t, c, s, mlc.gather(x, idx, axis=0)
    gpu_run(f, x, y, idx, want=(x.transpose(2, 0, 1).reshape(5, 24), np.concatenate([x, y], 1), x[1:4:2, ::3, 1:],
                                x[idx]))


# ----------------------------------------------------------------------------- models

def test_transformer_block_matches_the_cpu_build():
    args = examples.transformer_inputs(seq=16, hidden=64, heads=4, ffn=128)
    fn = lambda *a: examples.transformer_block(*a, heads=4)
    gpu_run(fn, *args, rtol=1e-3, atol=1e-4)


def test_light_squeezenet_matches_the_cpu_build():
    onnx = pytest.importorskip("onnx")
    from mlc.frontend.onnx import from_onnx
    path = os.path.join(os.path.dirname(onnx.__file__), "backend/test/data/light/light_squeezenet.onnx")
    g = from_onnx(path)
    x = rand(*g.inputs[0].type.shape)
    got = mlc.compile(g, target="cuda-sm90")
    check_funcs(got)
    np.testing.assert_allclose(got(x), mlc.compile(g)(x), rtol=1e-3, atol=1e-4)


def test_every_kernel_of_the_squeezenet_is_scheduled_for_the_gpu():
    onnx = pytest.importorskip("onnx")
    from mlc.frontend.onnx import from_onnx
    path = os.path.join(os.path.dirname(onnx.__file__), "backend/test/data/light/light_squeezenet.onnx")
    funcs = Compiled(from_onnx(path), GPU).funcs
    for f in funcs:
        L.verify(f, GPU)
        assert "threadIdx.x" in str(f)


def test_loop_text_of_matmul_and_softmax_names_blocks_threads_shared_memory_and_barriers():
    a, b = rand(128, 64), rand(64, 96, seed=1)
    for g in (mlc.trace(lambda a, b: a @ b, a, b), mlc.trace(lambda a: mlc.softmax(a, axis=-1), rand(8, 512))):
        text = str(Compiled(g, Target.get("cuda-sm90")).funcs)
        for word in ("blockIdx.x", "threadIdx.x", "shared", "barrier"):
            assert word in text, (g.name, word)
        for func in L.parse_all(text):
            L.verify(func, GPU)


def test_training_step_updates_in_place_like_the_cpu_build():
    x, w = rand(8, 40), rand(40, 30, seed=1) * 0.1

    def step(w, x):
        loss, g = mlc.value_and_grad(lambda w: mlc.sum(mlc.relu(x @ w) ** 2))(w)
        return loss, w - 0.01 * g
    gpu, cpu = mlc.compile(step, w, x, target="cuda", in_place=(0,)), mlc.compile(step, w, x, in_place=(0,))
    w_gpu, w_cpu = w.copy(), w.copy()
    for _ in range(3):
        np.testing.assert_allclose(gpu(w_gpu, x), cpu(w_cpu, x), rtol=1e-4)
    np.testing.assert_allclose(w_gpu, w_cpu, rtol=1e-5, atol=1e-6)
