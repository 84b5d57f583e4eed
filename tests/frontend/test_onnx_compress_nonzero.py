"""ONNX Compress and NonZero, whose output shapes depend on input values: imported
with those inputs known (an initializer, or a value the ONNX backend specializes on),
refused with a message naming the input otherwise."""
from __future__ import annotations

import re

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from mlc.driver import compile_graph
from mlc.frontend.onnx import NEEDS_CONSTANT, OnnxImportError, from_onnx
from mlc.interop.onnx_backend import MlcBackend


def compress_model(x_shape, cond, axis):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"] if axis is None else ["a", "b"])
    attrs = {} if axis is None else {"axis": axis}
    node = helper.make_node("Compress", ["x", "c"], ["y"], **attrs)
    init = [numpy_helper.from_array(np.asarray(cond, bool), "c")]
    return helper.make_model(helper.make_graph([node], "g", [x], [y], init), opset_imports=[helper.make_opsetid("", 11)])


@pytest.mark.parametrize("cond,axis", [([0, 1, 1], 0), ([1, 0, 1, 1], 1), ([1, 0, 0, 1, 1, 0, 1], None),
                                       ([0, 1], -1), ([1, 0, 1], -2)])
def test_compress_matches_numpy(cond, axis):
    x = np.arange(3 * 4, dtype=np.float32).reshape(3, 4)
    got = compile_graph(from_onnx(compress_model([3, 4], cond, axis)))(x)
    np.testing.assert_array_equal(got, np.compress(np.asarray(cond, bool), x, axis=axis))


def test_compress_refusals_name_the_problem():
    with pytest.raises(OnnxImportError, match="Compress's condition has 5 entries, more than axis 0's 3"):
        from_onnx(compress_model([3, 4], [1, 0, 1, 1, 0], 0))
    m = compress_model([3, 4], [1, 0, 1], 0)
    m.graph.input.append(helper.make_tensor_value_info("c", TensorProto.BOOL, [3]))
    del m.graph.initializer[:]
    with pytest.raises(OnnxImportError, match=re.escape(f"Compress's condition {NEEDS_CONSTANT}")):
        from_onnx(m)
    # the ONNX backend compiles such a model for the condition's value when it runs
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    rep = MlcBackend.prepare(m)
    for c in ([True, False, True], [False, True, True]):
        np.testing.assert_array_equal(rep.run([x, np.array(c)])[0], np.compress(c, x, axis=0))


def test_nonzero_of_a_known_input():
    v = np.array([[1, 0, 3], [0, 0, 2]], np.int32)
    x = helper.make_tensor_value_info("x", TensorProto.INT64, [2, 3])
    nodes = [helper.make_node("NonZero", ["v"], ["y"]), helper.make_node("Add", ["y", "x"], ["z"])]
    g = helper.make_graph(nodes, "g", [x], [helper.make_tensor_value_info("z", TensorProto.INT64, [2, 3])],
                          [numpy_helper.from_array(v, "v")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    x = np.arange(6, dtype=np.int64).reshape(2, 3)
    np.testing.assert_array_equal(compile_graph(from_onnx(m))(x), np.stack(np.nonzero(v)) + x)   # 3 nonzeros
