"""Loop-level MLIR export (to_mlir(..., level="loop")): mlc's scheduled kernels as
scf/memref functions and an entry calling them in the memory plan's order; upstream
mlir-opt verifies them and mlir-cpu-runner runs them with mlc's numbers."""
import numpy as np
import pytest

pytest.importorskip("xdsl", reason="MLIR exchange needs xDSL (the mlir extra)")

import mlc  # noqa: E402
from mlc.interop.mlir import MlirExportError, print_module, to_mlir  # noqa: E402
from mlc.interop.mlir_loop import compiled, loop_module  # noqa: E402

import mlir_tools as mt  # noqa: E402
from mlir_cases import f32, zoo  # noqa: E402


def check(fn, *args, rtol=2e-4, atol=2e-5):
    g = mlc.trace(fn, *args)
    c = compiled(g)
    mod = loop_module(g, compiled_graph=c)
    text = print_module(mod)
    mt.verify(text)
    want = mlc.compile(g)(*args)
    want = list(want) if isinstance(want, (list, tuple)) else [want]
    got = mt.run(mod, g.name, list(args), [(w.shape, w.dtype) for w in want], tensors=False)
    for gv, wv in zip(got, want):
        np.testing.assert_allclose(gv, wv, rtol=rtol, atol=atol)
    return text, c


def test_matmul_softmax_kernels():
    text, c = check(lambda x, w: mlc.softmax(mlc.relu(x @ w) + 1.0, axis=-1), f32(12, 20), f32(20, 16))
    assert "scf.for" in text and "memref.load" in text and "memref.store" in text
    for f in c.funcs:   # every kernel is a func of its own, called from the entry
        assert f"func.func @{f.name}(" in text and f"func.call @{f.name}(" in text


def test_parallel_vector_unroll_loops():
    """A tiled matmul: packed operands, a register tile, parallel, vector and unroll loops."""
    text, c = check(lambda a, b: a @ b, f32(64, 64), f32(64, 64))
    loops = "\n".join(map(str, c.funcs))
    assert "parallel " in loops and "vector " in loops and "unroll " in loops   # the host schedule's loops
    assert "scf.parallel" in text and "memref.alloca" in text
    assert "vector.load" in text and "vector.store" in text and "vector<" in text


def test_elementwise_math():
    check(lambda x: mlc.tanh(x) * 2.0 + mlc.exp(-x) + mlc.erf(x) + mlc.where(x > 0.0, mlc.sqrt(x), x * x),
          f32(16, 40))


def test_conv_pool_with_constants():
    w = f32(4, 3, 3, 3)
    b = f32(1, 4, 1, 1)
    text, _ = check(lambda x: mlc.max_pool(mlc.relu(mlc.conv(x, w, pads=(1, 1, 1, 1)) + b), kernel_shape=(2, 2),
                                           strides=(2, 2)), f32(2, 3, 8, 8))
    assert "memref.global" in text and "memref.get_global" in text


def test_examples_mlp():
    from mlc.examples import mlp, mlp_inputs
    check(mlp, *mlp_inputs(batch=4), rtol=1e-3, atol=1e-4)


def test_examples_transformer_and_gelu():
    from mlc.examples import EXAMPLES
    fn, inputs = EXAMPLES["transformer"]
    check(fn, *inputs(seq=8, hidden=48, heads=12, ffn=64), rtol=1e-3, atol=1e-4)
    fn, inputs = EXAMPLES["gelu"]
    check(fn, *inputs(), rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("name", ["bert", "wide_deep", "ncf"])
def test_zoo_models(name):
    """Whole models: embeddings (integer inputs), attention, many fused kernels sharing
    the workspace."""
    fn, inputs = zoo(name)
    check(fn, *inputs, rtol=1e-4, atol=1e-5)


def test_to_mlir_loop_level_text():
    text = to_mlir(lambda a, b: a @ b + 1.0, f32(8, 8), f32(8, 8), level="loop")
    mt.verify(text)
    assert text.startswith("builtin.module") and "linalg." not in text


def test_control_flow_is_refused():
    def fn(x):
        return mlc.scan(lambda c, xi: (c + xi, c * 2.0), x[0] * 0.0, x)[0]
    with pytest.raises(MlirExportError, match="control flow"):
        to_mlir(fn, f32(4, 3), level="loop")


def test_gpu_schedules_are_refused():
    with pytest.raises(MlirExportError, match="bound to blockIdx|bound to threadIdx"):
        to_mlir(lambda a: a * 2.0 + 1.0, f32(64, 64), level="loop", target="cuda-sm80")


@pytest.mark.parametrize("fn", [lambda a: a, lambda a: mlc.reshape(a, (4, 3)),
                                lambda a: (mlc.reshape(a * 2.0, (2, 6)), a + 1.0)], ids=["identity", "reshape", "two"])
def test_outputs_that_are_copies_and_views(fn):
    check(fn, f32(3, 4))


def test_bool_constant_parameter():
    mask = np.arange(600).reshape(200, 3) % 3 == 1   # a bool param of the kernel, as an i8 global compared
    check(lambda a: mlc.where(mask, a, a * 3.0), f32(200, 3))
