"""Index arithmetic left by reshapes is simplified with the axes' ranges; a reduction
read through a reshape is recomputed in its reader's shape (so the reader becomes its
epilogue); a reshape between kernels is the same bytes, with no kernel run."""
import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import mlc
from mlc.frontend.onnx import from_onnx
from mlc.ir.expr import Var, index_range, simplify_int


def test_nested_reshape_index_arithmetic_simplifies():
    i, j, k = Var("i"), Var("j"), Var("k")
    ranges = {i: (0, 0), j: (0, 511), k: (0, 48)}
    flat = (i * 512 + j) * 49 + k
    # [512, 49] -> [1, 512, 7, 7] -> [1, 512, 49]: the composed indices of the round trip
    row = (((flat // 7 // 7 % 512) * 7 + flat // 7 % 7) * 7 + flat % 7) // 49 % 512
    col = (((flat // 7 // 7 % 512) * 7 + flat // 7 % 7) * 7 + flat % 7) % 49
    assert str(simplify_int(row, ranges)) == "j"
    assert str(simplify_int(col, ranges)) == "k"


def test_simplification_keeps_values():
    """Random index expressions evaluate the same before and after, over the whole range."""
    a, b = Var("a"), Var("b")
    ranges = {a: (0, 13), b: (0, 55)}
    exprs = [(a * 56 + b) // 56, (a * 56 + b) % 56, (a * 56 + b) // 8 % 7, (a * 56 + b) // 7 // 8,
             ((a * 56 + b) // 8) * 8 + (a * 56 + b) % 8, (a * 3 + b * 168) // 3 % 56, (b + 3) // 4 % 2]
    for e in exprs:
        s = simplify_int(e, ranges)
        for x in range(14):
            for y in range(56):
                env = {"a": x, "b": y}
                assert _eval(s, env) == _eval(e, env), (str(e), str(s), x, y)
    assert index_range((a * 56 + b) // 8, ranges) == (0, 97)


def _eval(e, env):
    text = str(e)
    return eval(text, {}, dict(env))   # the printer uses Python's operators for index arithmetic


def test_negative_operands_are_left_alone():
    a = Var("a")
    e = (a - 3) // 4
    assert str(simplify_int(e, {a: (0, 10)})) in ("(a - 3) // 4", "(-3 + a) // 4")   # a - 3 may be negative


def _conv_model(c_in, c_out, size):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((c_out, c_in, 1, 1)).astype(np.float32)
    bias = rng.standard_normal(c_out).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[1, 1]),
             helper.make_node("Relu", ["c"], ["y"])]
    g = helper.make_graph(nodes, "conv1x1", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                           [1, c_in, size, size])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c_out, size, size])],
                          [numpy_helper.from_array(w, "w"), numpy_helper.from_array(bias, "b")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), w, bias


def test_matrix_form_conv_applies_bias_and_relu_on_the_accumulators():
    model, w, bias = _conv_model(32, 24, 20)
    exe = mlc.compile(from_onnx(model))
    tensor, loops = exe.ir("tensor"), exe.ir("loop")
    # the matmul is computed in the output's [1, 24, 20, 20] shape, read element for element
    assert "T0[i, j, k, l] + C[j, 0, 0]" in tensor
    assert "scratch: T0" not in loops and "max(acc[" in loops
    x = np.random.default_rng(1).standard_normal((1, 32, 20, 20)).astype(np.float32)
    want = np.maximum(np.einsum("mc,nchw->nmhw", w[:, :, 0, 0], x) + bias[None, :, None, None], 0)
    np.testing.assert_allclose(exe(x), want, rtol=1e-4, atol=1e-4)
    # the input's reshape into the matrix form is a view of the input: no kernel runs for it
    assert exe.stats["views"] == 1


def test_reshape_between_kernels_is_a_view():
    def f(x, w):
        h = mlc.exp(x)                 # a kernel
        h = h.reshape((16, 64))        # the same bytes
        return h @ w                   # reads them directly
    x = np.random.default_rng(0).standard_normal((32, 32)).astype(np.float32) * 0.1
    w = np.random.default_rng(1).standard_normal((64, 8)).astype(np.float32)
    g = mlc.trace(f, x, w)
    from mlc.driver import Compiled
    from mlc.passes.manager import PassManager
    from mlc.target import Target
    c = Compiled(g, Target.get("host"), PassManager(1))    # -O1: no fusion, so the reshape is its own kernel
    assert any(call.view for call in c.lowered.calls)
    assert c.plan.views == 1
    exe = mlc.compile(g, opt_level=1)
    np.testing.assert_allclose(exe(x, w), np.exp(x).reshape(16, 64) @ w, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not os.path.exists(os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data",
                                                    "light", "light_squeezenet.onnx")),
                    reason="the onnx package ships no light models here")
def test_light_model_still_matches_reference_after_reindexing():
    path = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light", "light_squeezenet.onnx")
    out_pb = path.replace(".onnx", "_output_0.pb")
    model = onnx.load(path)
    exe = mlc.compile(from_onnx(model))
    x = np.random.default_rng(0).random((1, 3, 224, 224), dtype=np.float32)
    ref = mlc.ops.run_reference(from_onnx(model), x)
    got = exe(x)
    np.testing.assert_allclose(got, ref[0] if isinstance(ref, (list, tuple)) else ref, rtol=1e-3, atol=1e-4)
    assert os.path.exists(out_pb)
