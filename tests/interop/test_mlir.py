"""Graph-level MLIR export (mlc.interop.to_mlir), judged by upstream MLIR: the text
verifies in mlir-opt and, lowered with upstream passes, runs in mlir-cpu-runner with
mlc's numbers."""
import numpy as np
import pytest

pytest.importorskip("xdsl", reason="MLIR exchange needs xDSL (the mlir extra)")

import mlc  # noqa: E402
from mlc.interop.mlir import MlirExportError, build_module, print_module, to_mlir  # noqa: E402

import mlir_tools as mt  # noqa: E402

from mlir_cases import CASES, CONTROL, ZOO, f32, zoo  # noqa: E402


def check(fn, *args, rtol=2e-4, atol=2e-5):
    """fn traced on args exports, verifies upstream, and runs there with mlc's results."""
    g = mlc.trace(fn, *args)
    mod = build_module(g, "f")
    text = print_module(mod)
    mt.verify(text)
    want = mlc.compile(g)(*args)
    want = list(want) if isinstance(want, (list, tuple)) else [want]
    got = mt.run(mod, "f", list(args), [(w.shape, w.dtype) for w in want])
    for gv, wv in zip(got, want):
        np.testing.assert_allclose(gv, wv, rtol=rtol, atol=atol)
    return text


@pytest.mark.parametrize("name", sorted(CASES))
def test_op_family_runs_upstream(name):
    fn, *args = CASES[name]
    check(fn, *args)


@pytest.mark.parametrize("name", sorted(CONTROL))
def test_control_flow_runs_upstream(name):
    """scan as scf.for (carries and stacked outputs as iteration arguments), while_loop as
    scf.while, cond as scf.if, on tensors."""
    fn, *args = CONTROL[name]
    text = check(fn, *args, rtol=1e-4, atol=1e-4)
    assert {"scan": "scf.for", "scan_reverse": "scf.for", "while_loop": "scf.while", "cond": "scf.if"}[name] in text


def test_named_ops_appear():
    text = to_mlir(lambda x, w: mlc.max_pool(mlc.conv(x, w), kernel_shape=(2, 2)) , f32(1, 3, 8, 8), f32(4, 3, 3, 3))
    assert "linalg.conv_2d_nchw_fchw" in text and "linalg.pooling_nchw_max" in text
    text = to_mlir(lambda a, b: a @ b, f32(2, 3), f32(3, 4))
    assert "linalg.matmul" in text and "func.func @" in text
    assert "linalg.batch_matmul" in to_mlir(lambda a, b: a @ b, f32(2, 2, 3), f32(2, 3, 4))


@pytest.mark.parametrize("name", ["mlp", "gelu"])
def test_examples_run_upstream(name):
    from mlc.examples import EXAMPLES
    fn, inputs = EXAMPLES[name]
    args = inputs() if name != "mlp" else inputs(batch=4)
    check(fn, *args, rtol=1e-3, atol=1e-4)


def test_transformer_example_small():
    from mlc.examples import EXAMPLES
    fn, inputs = EXAMPLES["transformer"]
    args = inputs(seq=8, hidden=48, heads=12, ffn=64)
    check(fn, *args, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("name", ZOO + ["lstm_lm"])
def test_zoo_models_run_upstream(name):
    """mlc's model zoo with its weights (embeddings, attention, batch norm, residual convs)
    as dense constants in MLIR."""
    fn, inputs = zoo(name)
    check(fn, *inputs, rtol=1e-4, atol=1e-5)


def test_onnx_model_runs_upstream():
    """A light ONNX model (conv, batch norm, relu, pooling, flatten, gemm) imported by mlc."""
    from onnx import TensorProto, helper, numpy_helper
    w = f32(4, 1, 3, 3)
    inits = [numpy_helper.from_array(a, n) for a, n in [
        (w, "w"), (f32(4, lo=0.5, hi=1.5), "s"), (f32(4), "b"), (f32(4), "m"), (f32(4, lo=0.5, hi=1.0), "v"),
        (f32(36, 10), "fw"), (f32(10), "fb")]]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["bn"]),
             helper.make_node("Relu", ["bn"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("GlobalAveragePool", ["p"], ["gp"]),
             helper.make_node("Flatten", ["p"], ["fl"]),
             helper.make_node("Gemm", ["fl", "fw", "fb"], ["y"])]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 1, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    g = mlc.frontend.onnx.from_onnx(model)
    x = f32(2, 1, 6, 6)
    mod = build_module(g, "f")
    mt.verify(print_module(mod))
    got = mt.run(mod, "f", [x], [((2, 10), np.float32)])[0]
    np.testing.assert_allclose(got, mlc.compile(g)(x), rtol=1e-3, atol=1e-4)


def test_unsupported_ops_listed_at_once():
    w = f32(1, 1, 2, 2)

    def fn(a):
        return (mlc.conv_transpose(a, w)[:, :, :3, :3] + mlc.top_k(a, 1)[0]
                + mlc.conv_transpose(a, w)[:, :, 1:, 1:])
    with pytest.raises(MlirExportError) as e:
        to_mlir(fn, f32(1, 1, 3, 3))
    msg = str(e.value)
    assert "conv_transpose" in msg and "top_k" in msg and msg.count("conv_transpose") == 1 and "test_mlir.py:" in msg


def test_level_is_checked():
    with pytest.raises(ValueError, match="level"):
        to_mlir(lambda a: a + 1.0, f32(2), level="tensor")


def test_missing_tools_skip_with_the_reason(monkeypatch):
    monkeypatch.setattr(mt, "tool", lambda name: None)
    with pytest.raises(pytest.skip.Exception, match="apt-get install mlir-19-tools"):
        mt.verify("func.func @f() { return }")
    monkeypatch.setattr(mt, "runner_libs", lambda: [])
    monkeypatch.setattr(mt, "tool", lambda name: "/bin/true")
    with pytest.raises(pytest.skip.Exception, match="libmlir-19"):
        mt.need_runner()


def test_an_executable_prints_its_mlir_at_both_levels():
    """exe.ir("mlir") is the graph after mlc's passes in linalg; exe.ir("mlir-loop") the loops
    it compiled. Both verify upstream, and the graph level imports back to the same numbers."""
    from mlc.interop import from_mlir
    x = f32(4, 6)
    exe = mlc.compile(lambda x: mlc.softmax(mlc.relu(x * 2.0), axis=-1), x)
    graph_text, loop_text = exe.ir("mlir"), exe.ir("mlir-loop")
    assert "linalg.generic" in graph_text and "scf." in loop_text and "memref<4x6xf32>" in loop_text
    np.testing.assert_allclose(mlc.compile(from_mlir(graph_text))(x), exe(x), rtol=1e-6)
    if mt.tool("mlir-opt") is not None:
        mt.verify(graph_text)
        mt.verify(loop_text)
    with pytest.raises(ValueError, match="unknown IR level 'mlir-affine'.*mlir, mlir-loop"):
        exe.ir("mlir-affine")
