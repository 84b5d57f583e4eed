"""ONNX sequence ops whose lengths and positions are known at import time: the
sequence is built at import, its tensors computed by the compiled model."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from mlc.driver import compile_graph
from mlc.frontend.onnx import OnnxImportError, from_onnx
from mlc.interop.onnx_backend import MlcBackend


def build(nodes, inputs, outputs, inits=()):
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
                          [helper.make_tensor_value_info(n, t, s) for n, t, s in outputs],
                          [numpy_helper.from_array(np.asarray(v), k) for k, v in inits])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def i64(v):
    return np.array(v, np.int64)


def test_construct_insert_erase_at_and_concat():
    nodes = [helper.make_node("SequenceEmpty", [], ["s0"], dtype=TensorProto.FLOAT),
             helper.make_node("SequenceInsert", ["s0", "x"], ["s1"]),                 # [x]
             helper.make_node("SequenceInsert", ["s1", "y", "zero"], ["s2"]),         # [y, x]
             helper.make_node("SequenceInsert", ["s2", "z", "minus1"], ["s3"]),       # [y, z, x]
             helper.make_node("SequenceErase", ["s3", "zero"], ["s4"]),               # [z, x]
             helper.make_node("SequenceAt", ["s4", "minus1"], ["last"]),              # x
             helper.make_node("ConcatFromSequence", ["s4"], ["cat"], axis=1),
             helper.make_node("ConcatFromSequence", ["s4"], ["stack"], axis=-1, new_axis=1),
             helper.make_node("SequenceLength", ["s4"], ["len"])]
    m = build(nodes, [("x", [2, 3]), ("y", [2, 3]), ("z", [2, 3])],
              [("last", TensorProto.FLOAT, [2, 3]), ("cat", TensorProto.FLOAT, [2, 6]),
               ("stack", TensorProto.FLOAT, [2, 3, 2]), ("len", TensorProto.INT64, [])],
              [("zero", i64(0)), ("minus1", i64(-1))])
    x, y, z = (np.random.default_rng(k).standard_normal((2, 3)).astype(np.float32) for k in range(3))
    last, cat, stack, length = compile_graph(from_onnx(m), single_output=False)(x, y, z)
    np.testing.assert_array_equal(last, x)
    np.testing.assert_array_equal(cat, np.concatenate([z, x], axis=1))
    np.testing.assert_array_equal(stack, np.stack([z, x], axis=-1))
    assert length == 2 and length.dtype == np.int64


@pytest.mark.parametrize("split,keepdims,want", [(None, 1, [1] * 5), (None, 0, [1] * 5), (i64(2), 1, [2, 2, 1]),
                                                 (i64([1, 4]), 1, [1, 4])])
def test_split_to_sequence(split, keepdims, want):
    inputs = ["x"] + (["split"] if split is not None else [])
    nodes = [helper.make_node("SplitToSequence", inputs, ["s"], axis=1, keepdims=keepdims),
             helper.make_node("SequenceLength", ["s"], ["len"]),
             helper.make_node("SequenceAt", ["s", "minus1"], ["last"])]
    last_shape = [3, want[-1]] if keepdims else [3]
    m = build(nodes, [("x", [3, 5])], [("len", TensorProto.INT64, []), ("last", TensorProto.FLOAT, last_shape)],
              [("minus1", i64(-1))] + ([("split", split)] if split is not None else []))
    x = np.arange(15, dtype=np.float32).reshape(3, 5)
    length, last = compile_graph(from_onnx(m), single_output=False)(x)
    assert length == len(want)
    np.testing.assert_array_equal(last, x[:, 5 - want[-1]:] if keepdims else x[:, -1])


def test_sequence_refusals_name_the_problem():
    nodes = [helper.make_node("SequenceConstruct", ["x", "x"], ["s"]), helper.make_node("SequenceAt", ["s", "p"], ["y"])]
    m = build(nodes, [("x", [2])], [("y", TensorProto.FLOAT, [2])], [("p", i64(2))])
    with pytest.raises(OnnxImportError, match="SequenceAt's position 2 is out of range for a sequence of 2 tensors"):
        from_onnx(m)
    m = build([helper.make_node("SequenceInsert", ["s", "x"], ["t"])], [("x", [2])], [("t", TensorProto.FLOAT, [2])])
    m.graph.input.append(helper.make_tensor_sequence_value_info("s", TensorProto.FLOAT, [2]))
    with pytest.raises(OnnxImportError, match=r"input 's' is a sequence; pass sequence_inputs=\{'s': \[\(shape, "
                                              r"dtype\), \.\.\.\]\} for the tensors it holds"):
        from_onnx(m)


def test_sequence_inputs_and_outputs_through_the_backend():
    """A sequence input becomes one graph input per tensor, a sequence output one graph
    output per tensor; the ONNX backend takes and returns lists of arrays."""
    nodes = [helper.make_node("SequenceInsert", ["s", "x"], ["t"]),
             helper.make_node("SplitToSequence", ["x"], ["u"], axis=0),
             helper.make_node("SequenceLength", ["t"], ["n"])]
    m = build(nodes, [("x", [2])], [("n", TensorProto.INT64, [])])
    m.graph.input.insert(0, helper.make_tensor_sequence_value_info("s", TensorProto.FLOAT, None))
    m.graph.output.extend([helper.make_tensor_sequence_value_info("t", TensorProto.FLOAT, None),
                           helper.make_tensor_sequence_value_info("u", TensorProto.FLOAT, None)])
    g = from_onnx(m, sequence_inputs={"s": [((3,), np.float32), ((1,), np.float32)]})
    assert [v.name for v in g.inputs] == ["s_0", "s_1", "x"]
    assert g.onnx_outputs == [("n", None), ("t", 3), ("u", 2)] and len(g.outputs) == 6
    a, b, x = np.arange(3, dtype=np.float32), np.array([7], np.float32), np.array([5, 6], np.float32)
    n, t, u = MlcBackend.prepare(m).run([[a, b], x])
    assert n == 3
    assert [list(v) for v in t] == [[0, 1, 2], [7], [5, 6]] and [list(v) for v in u] == [[5], [6]]


def test_a_sequence_where_a_tensor_is_taken_is_refused():
    nodes = [helper.make_node("SequenceConstruct", ["x", "x"], ["s"]), helper.make_node("Relu", ["s"], ["y"])]
    m = build(nodes, [("x", [2])], [("y", TensorProto.FLOAT, [2])])
    with pytest.raises(OnnxImportError, match=r"node 1 '' \(Relu\): input 0 \(X\) is a sequence, which the op does "
                                              "not take"):
        from_onnx(m)
