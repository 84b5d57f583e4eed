"""The ONNX importer on models built here: what it imports, what it folds, and
the errors a user sees for bad or unsupported input."""
import os

import numpy as np
import onnx
import onnx.reference
import pytest
from onnx import TensorProto, helper, numpy_helper

import mlc
from mlc.frontend.onnx import OnnxImportError, from_onnx


def model(nodes, inputs, outputs, initializers=(), opset=17):
    g = helper.make_graph(nodes, "m", inputs, outputs, initializer=list(initializers))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def vi(name, shape, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


def mlp_model():
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((4, 8)).astype(np.float32), "w1")
    b1 = numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "b1")
    w2 = numpy_helper.from_array(rng.standard_normal((8, 3)).astype(np.float32), "w2")
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["z"]), helper.make_node("Softmax", ["z"], ["y"], axis=-1)]
    return model(nodes, [vi("x", [2, 4])], [vi("y", [2, 3])], [w1, b1, w2])


def test_mlp_imports_and_matches_onnx_reference():
    m = mlp_model()
    g = from_onnx(m)
    assert [n.op for n in g.nodes if n.op != "constant"] == ["matmul", "add", "relu", "matmul", "softmax"]
    x = np.random.default_rng(1).standard_normal((2, 4)).astype(np.float32)
    want = onnx.reference.ReferenceEvaluator(m).run(None, {"x": x})[0]
    np.testing.assert_allclose(mlc.compile(g)(x), want, rtol=1e-5, atol=1e-6)


def test_shape_subgraph_is_folded_at_import():
    # y = reshape(x, [shape(x)[0], -1]) computed through Shape, Gather, Unsqueeze, Concat
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Gather", ["s", "zero"], ["d0"], axis=0),
             helper.make_node("Unsqueeze", ["d0", "axes"], ["d0u"]),
             helper.make_node("Concat", ["d0u", "minus1"], ["target"], axis=0),
             helper.make_node("Reshape", ["x", "target"], ["y"])]
    inits = [numpy_helper.from_array(np.array(0, np.int64), "zero"),
             numpy_helper.from_array(np.array([0], np.int64), "axes"),
             numpy_helper.from_array(np.array([-1], np.int64), "minus1")]
    m = model(nodes, [vi("x", [3, 4, 5])], [vi("y", [3, 20])], inits)
    if "Gather" not in mlc.frontend.onnx.CONVERTERS:
        pytest.skip("Gather is not mapped yet")
    g = from_onnx(m)
    assert [n.op for n in g.nodes] == ["reshape"]


def test_initializers_listed_as_inputs_are_weights():
    m = mlp_model()
    m.graph.input.extend([vi("w1", [4, 8]), vi("b1", [8]), vi("w2", [8, 3])])   # as old exporters did
    g = from_onnx(m)
    assert [v.name for v in g.inputs] == ["x"]


def test_every_unsupported_op_is_listed_once():
    nodes = [helper.make_node("FancyOp", ["x"], ["a"]), helper.make_node("FancyOp", ["a"], ["b"]),
             helper.make_node("Relu", ["b"], ["c"]),
             helper.make_node("MyOp", ["c"], ["y"], domain="com.example")]
    m = model(nodes, [vi("x", [2])], [vi("y", [2])])
    m.opset_import.extend([helper.make_opsetid("com.example", 3)])
    with pytest.raises(OnnxImportError) as e:
        from_onnx(m)
    msg = str(e.value)
    assert "2 op type(s) mlc does not support" in msg
    assert "FancyOp (domain ai.onnx, opset 17; 2 nodes)" in msg
    assert "MyOp (domain com.example, opset 3; 1 node)" in msg


def test_truncated_and_corrupted_files(tmp_path):
    data = mlp_model().SerializeToString()
    path = tmp_path / "m.onnx"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(OnnxImportError, match=r"m.onnx is not a valid ONNX model: the file is truncated or corrupted"):
        from_onnx(str(path))
    path.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(OnnxImportError, match="truncated or corrupted"):
        from_onnx(str(path))
    with pytest.raises(OnnxImportError, match="no such ONNX file"):
        from_onnx(str(tmp_path / "missing.onnx"))


def test_missing_external_data_file(tmp_path):
    m = mlp_model()
    path = str(tmp_path / "ext.onnx")
    onnx.save_model(mlp_model(), path, save_as_external_data=True, all_tensors_to_one_file=True, location="weights.bin",
                    size_threshold=0)
    x = np.ones((2, 4), np.float32)
    np.testing.assert_allclose(mlc.compile(from_onnx(path))(x), mlc.compile(from_onnx(m))(x))
    os.remove(tmp_path / "weights.bin")
    with pytest.raises(OnnxImportError, match=r"keeps its data in the external file 'weights.bin', which is missing"):
        from_onnx(path)


def test_declared_shape_contradicting_the_ops():
    m = model([helper.make_node("Relu", ["x"], ["y"])], [vi("x", [2, 3])], [vi("y", [3, 2])])
    with pytest.raises(OnnxImportError, match=r"output 'y' is declared with shape \[3, 2\] but the model computes \[2, 3\]"):
        from_onnx(m)
    m = model([helper.make_node("MatMul", ["x", "x"], ["y"])], [vi("x", [2, 3])], [vi("y", [2, 2])])
    with pytest.raises(OnnxImportError, match=r"node 0 '' \(MatMul\): matmul: contraction dims differ"):
        from_onnx(m)


def test_symbolic_shapes_need_input_shapes():
    m = model([helper.make_node("Relu", ["x"], ["y"])], [vi("x", ["N", 3])], [vi("y", ["N", 3])])
    with pytest.raises(OnnxImportError, match=r"input 'x' has shape \['N', 3\], which is not static; pass input_shapes"):
        from_onnx(m)
    g = from_onnx(m, input_shapes={"x": (5, 3)})
    assert g.inputs[0].shape == (5, 3)


def test_minus_one_dims_are_dynamic():
    # some exporters write a dynamic dimension as dim_value -1: like a named one, never a contradiction
    m = model([helper.make_node("Relu", ["x"], ["y"])], [vi("x", [1, 2])], [vi("y", [-1, 2])])
    x = np.array([[-1.0, 2.0]], np.float32)
    np.testing.assert_array_equal(mlc.compile(from_onnx(m))(x), [[0.0, 2.0]])
    m = model([helper.make_node("Relu", ["x"], ["y"])], [vi("x", [-1, 2])], [vi("y", [-1, 2])])
    with pytest.raises(OnnxImportError, match=r"input 'x' has shape \['\?', 2\], which is not static; pass input_shapes"):
        from_onnx(m)
    assert from_onnx(m, input_shapes={"x": (4, 2)}).outputs[0].shape == (4, 2)
    m = model([helper.make_node("Relu", ["x"], ["y"])], [vi("x", [1, 2])], [vi("y", [-1, 3])])
    with pytest.raises(OnnxImportError, match=r"output 'y' is declared with shape \['\?', 3\] but the model computes \[1, 2\]"):
        from_onnx(m)


def test_opset_range_is_checked():
    newest = onnx.defs.onnx_opset_version()
    m = model([helper.make_node("Relu", ["x"], ["y"])], [vi("x", [2])], [vi("y", [2])], opset=newest + 1)
    with pytest.raises(OnnxImportError, match=rf"opset {newest + 1}; mlc imports opsets 1 to {newest}"):
        from_onnx(m)


def test_opset_6_binary_ops_broadcast_only_when_asked_at_axis():
    a = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    b = np.array([10.0, 20.0, 30.0], np.float32)
    # broadcast=1, axis=1: b lines up with a's axis 1 (not numpy's trailing alignment)
    m = model([helper.make_node("Add", ["a", "b"], ["y"], broadcast=1, axis=1)],
              [vi("a", [2, 3, 4]), vi("b", [3])], [vi("y", [2, 3, 4])], opset=6)
    np.testing.assert_array_equal(mlc.compile(from_onnx(m))(a, b), a + b.reshape(3, 1))
    m = model([helper.make_node("Mul", ["a", "b"], ["y"])], [vi("a", [2, 3, 4]), vi("b", [3])],
              [vi("y", [2, 3, 4])], opset=6)
    with pytest.raises(OnnxImportError, match=r"Mul \(opset 6\) without broadcast=1 needs operands of one shape, "
                                              r"got \[2, 3, 4\] and \[3\]"):
        from_onnx(m)


def test_opset_1_cast_names_its_type_and_prelu_6_slope_is_per_channel():
    m = model([helper.make_node("Cast", ["x"], ["y"], to="INT32")], [vi("x", [3])],
              [vi("y", [3], TensorProto.INT32)], opset=1)
    np.testing.assert_array_equal(mlc.compile(from_onnx(m))(np.array([1.7, -2.2, 3.0], np.float32)), [1, -2, 3])
    slope = numpy_helper.from_array(np.array([0.1, 0.2, 0.3], np.float32), "s")
    m = model([helper.make_node("PRelu", ["x", "s"], ["y"])], [vi("x", [1, 3, 2])], [vi("y", [1, 3, 2])], [slope],
              opset=6)
    x = -np.ones((1, 3, 2), np.float32)
    np.testing.assert_allclose(mlc.compile(from_onnx(m))(x), [[[-0.1, -0.1], [-0.2, -0.2], [-0.3, -0.3]]])


def test_backend_specializes_shape_inputs():
    # Reshape's target shape arrives as a graph input: compiled at run time for its value
    m = model([helper.make_node("Reshape", ["x", "shape"], ["y"])],
              [vi("x", [2, 6]), vi("shape", [2], TensorProto.INT64)], [vi("y", ["a", "b"])])
    from mlc.interop.onnx_backend import MlcBackend
    rep = MlcBackend.prepare(m)
    x = np.arange(12, dtype=np.float32).reshape(2, 6)
    (y,) = rep.run([x, np.array([3, 4], np.int64)])
    np.testing.assert_array_equal(y, x.reshape(3, 4))
    (y,) = rep.run([x, np.array([4, 3], np.int64)])
    np.testing.assert_array_equal(y, x.reshape(4, 3))


EINSUMS = [("ij->ji", [(3, 4)]), ("ij->i", [(3, 4)]), ("i,i", [(5,), (5,)]), ("bij, bjk -> bik", [(5, 2, 3), (5, 3, 4)]),
           ("->", [()]), ("ij,jk", [(3, 4), (4, 5)]), ("...ij,...jk->...ik", [(2, 1, 3, 4), (6, 4, 5)]),
           ("ij,kj->ik", [(3, 4), (5, 4)]), ("bhqd,bhkd->bhqk", [(2, 3, 4, 5), (2, 3, 6, 5)]),
           ("i,j->ij", [(3,), (4,)]), ("ij,jk->", [(2, 3), (3, 4)])]


@pytest.mark.parametrize("equation,shapes", EINSUMS, ids=[e for e, _ in EINSUMS])
def test_einsum_forms_match_numpy(equation, shapes):
    rng = np.random.default_rng(0)
    names = [f"x{k}" for k in range(len(shapes))]
    xs = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    m = model([helper.make_node("Einsum", names, ["y"], equation=equation)],
              [vi(n, list(s)) for n, s in zip(names, shapes)], [vi("y", None)])
    np.testing.assert_allclose(mlc.compile(from_onnx(m))(*xs), np.einsum(equation.replace(" ", ""), *xs),
                               rtol=1e-5, atol=1e-5)


def test_einsum_diagonal_is_refused_clearly():
    m = model([helper.make_node("Einsum", ["x"], ["y"], equation="ii->i")], [vi("x", [3, 3])], [vi("y", [3])])
    with pytest.raises(OnnxImportError, match=r"repeated index in one operand \('ii', a diagonal\) is not supported"):
        from_onnx(m)


# -- every model protobuf can decode: imported, or refused with one OnnxImportError ----------------

def relu_model():
    return model([helper.make_node("Relu", ["x"], ["y"], name="r")], [vi("x", [2])], [vi("y", [2])])


def test_text_that_is_not_utf8_is_refused():
    # protobuf decodes such a string field as bytes; the importer used to fail on them with a TypeError
    data = bytearray(relu_model().SerializeToString())
    data[data.index(b"\x12\x01m") + 2] = 0xFF   # the graph's name, "m"
    with pytest.raises(OnnxImportError, match=r"model.graph.name is not valid UTF-8"):
        from_onnx(bytes(data))
    data = bytearray(relu_model().SerializeToString())
    data[data.index(b"Relu")] = 0xFF
    with pytest.raises(OnnxImportError, match=r"model.graph.node\[0\].op_type is not valid UTF-8"):
        from_onnx(bytes(data))


def test_output_that_nothing_computes():
    m = model([helper.make_node("Relu", ["x"], ["y"])], [vi("x", [2])], [vi("z", [2])])
    with pytest.raises(OnnxImportError, match=r"graph output 'z' is computed by no node and is no input or initializer"):
        from_onnx(m)


def test_a_value_written_twice_is_refused():
    # the last writer used to win silently; onnx.checker and ONNX Runtime refuse such a model
    m = model([helper.make_node("Relu", ["x"], ["y"], name="a"), helper.make_node("Neg", ["x"], ["y"], name="b")],
              [vi("x", [2])], [vi("y", [2])])
    with pytest.raises(OnnxImportError, match=r"node 1 'b' \(Neg\) writes 'y', which node 0 'a' \(Relu\) writes too"):
        from_onnx(m)
    w = numpy_helper.from_array(np.ones(2, np.float32), "w")
    m = model([helper.make_node("Relu", ["x"], ["w"])], [vi("x", [2])], [vi("w", [2])], [w])
    with pytest.raises(OnnxImportError, match=r"writes 'w', which is an initializer"):
        from_onnx(m)
    m = model([helper.make_node("Relu", ["x"], ["y"])], [vi("x", [2]), vi("x", [2])], [vi("y", [2])])
    with pytest.raises(OnnxImportError, match=r"the graph input 'x' is listed twice"):
        from_onnx(m)


def test_attributes_are_checked_against_the_op_schema():
    flat = helper.make_node("Flatten", ["x"], ["y"], axis=[1, 2])   # INTS where Flatten takes an INT
    with pytest.raises(OnnxImportError, match=r"node 0 '' \(Flatten\): attribute 'axis' is INTS, Flatten takes INT"):
        from_onnx(model([flat], [vi("x", [2, 3])], [vi("y", None)]))
    leaky = helper.make_node("LeakyRelu", ["x"], ["y"], alpha=[0.1])
    with pytest.raises(OnnxImportError, match=r"attribute 'alpha' is FLOATS, LeakyRelu takes FLOAT"):
        from_onnx(model([leaky], [vi("x", [2])], [vi("y", [2])]))
    typo = helper.make_node("Softmax", ["x"], ["y"], axes=1)
    with pytest.raises(OnnxImportError, match=r"unknown attribute 'axes' \(Softmax takes axis\)"):
        from_onnx(model([typo], [vi("x", [2])], [vi("y", [2])]))
    cast = helper.make_node("Cast", ["x"], ["y"])
    with pytest.raises(OnnxImportError, match=r"missing required attribute\(s\) to"):
        from_onnx(model([cast], [vi("x", [2])], [vi("y", [2])]))
    cast = helper.make_node("Cast", ["x"], ["y"], to=999)
    with pytest.raises(OnnxImportError, match=r"Cast's 'to' attribute has the unknown ONNX element type 999"):
        from_onnx(model([cast], [vi("x", [2])], [vi("y", None)]))
    extra = helper.make_node("Relu", ["x", "x"], ["y"])
    with pytest.raises(OnnxImportError, match=r"node 0 '' \(Relu\): has 2 inputs, Relu takes 1 inputs"):
        from_onnx(model([extra], [vi("x", [2])], [vi("y", [2])]))


def test_constants_computed_at_import_are_capped():
    # a 120-byte model asked for a 64 GiB constant (MemoryError)
    shape = numpy_helper.from_array(np.array([2 ** 17, 2 ** 17], np.int64), "s")
    m = model([helper.make_node("ConstantOfShape", ["s"], ["y"], name="big")], [], [vi("y", None)], [shape])
    assert len(m.SerializeToString()) < 200
    with pytest.raises(OnnxImportError, match=r"node 0 'big' \(ConstantOfShape\): its result, a constant of shape "
                                              r"\[131072, 131072\] \(64 GiB\), would be computed at import time; "
                                              r"mlc folds at most 1 GiB per value"):
        from_onnx(m)
    one = numpy_helper.from_array(np.ones(1, np.float32), "one")
    m = model([helper.make_node("Expand", ["one", "s"], ["y"])], [], [vi("y", None)], [shape, one])
    with pytest.raises(OnnxImportError, match=r"\(Expand\): the result of broadcast_to on constants, a constant of "
                                              r"shape \[131072, 131072\]"):
        from_onnx(m)
    limits = [numpy_helper.from_array(np.array(v, np.int64), n) for n, v in (("a", 0), ("b", 2 ** 40), ("d", 1))]
    m = model([helper.make_node("Range", ["a", "b", "d"], ["y"])], [], [vi("y", None)], limits)
    with pytest.raises(OnnxImportError, match=r"\(Range\): its result, a constant of shape \[1099511627776\]"):
        from_onnx(m)


def test_declared_dims_no_memory_holds():
    m = model([helper.make_node("Relu", ["x"], ["y"])], [vi("x", [2 ** 40, 2 ** 40])], [vi("y", None)])
    with pytest.raises(OnnxImportError, match=r"input 'x' declares shape \[1099511627776, 1099511627776\] "
                                              r"\(\d+ bytes\), more than any memory holds"):
        from_onnx(m)
    m = model([helper.make_node("Relu", ["x"], ["y"])], [vi("x", [-3])], [vi("y", None)])
    with pytest.raises(OnnxImportError, match=r"input 'x': negative dimension"):
        from_onnx(m)
    reps = numpy_helper.from_array(np.array([2 ** 62], np.int64), "reps")
    m = model([helper.make_node("Tile", ["x", "reps"], ["y"], name="t")], [vi("x", [4])], [vi("y", None)], [reps])
    with pytest.raises(OnnxImportError, match=r"node 0 't' \(Tile\): .*more than"):
        from_onnx(m)


def test_mlc_run_prints_one_line_for_a_bad_model(tmp_path, capsys):
    from mlc.cli import main
    path = tmp_path / "bad.onnx"
    onnx.save(model([helper.make_node("Relu", ["x"], ["y"])], [vi("x", [2])], [vi("z", [2])]), str(path))
    with pytest.raises(SystemExit) as e:
        main(["run", str(path), "--random-inputs"])
    assert str(e.value) == "mlc run: graph output 'z' is computed by no node and is no input or initializer"


def test_axes_out_of_range_are_refused_not_wrapped():
    # Flatten's axis 2**31 on a rank-3 input used to wrap around (to 2: shape [6, 4])
    m = model([helper.make_node("Flatten", ["x"], ["y"], axis=2 ** 31)], [vi("x", [2, 3, 4])], [vi("y", None)])
    with pytest.raises(OnnxImportError, match=r"\(Flatten\): Flatten's axis 2147483648 is out of range for rank 3"):
        from_onnx(m)
    m = model([helper.make_node("Flatten", ["x"], ["y"], axis=3)], [vi("x", [2, 3, 4])], [vi("y", None)])
    assert from_onnx(m).outputs[0].shape == (24, 1)   # axis == rank is allowed
    axes = numpy_helper.from_array(np.array([3], np.int64), "axes")
    m = model([helper.make_node("ReduceMax", ["x", "axes"], ["y"])], [vi("x", [0, 3])], [vi("y", None)], [axes],
              opset=18)
    with pytest.raises(OnnxImportError, match=r"ReduceMax's axis 3 is out of range for rank 2"):
        from_onnx(m)


def test_input_types_are_checked_against_the_op_schema():
    # mlc's add promotes f32 + f64; ONNX (and ONNX Runtime) take one type for both
    m = model([helper.make_node("Add", ["x", "z"], ["y"])], [vi("x", [2]), vi("z", [2], TensorProto.DOUBLE)],
              [vi("y", None)])
    with pytest.raises(OnnxImportError, match=r"node 0 '' \(Add\): input 1 \(B\) is a tensor\(double\) but input 0 "
                                              r"is a tensor\(float\); the op takes one type for both"):
        from_onnx(m)
    m = model([helper.make_node("Sqrt", ["x"], ["y"])], [vi("x", [2], TensorProto.BOOL)], [vi("y", None)])
    with pytest.raises(OnnxImportError, match=r"input 0 \(X\) is a tensor\(bool\), which the op does not take"):
        from_onnx(m)
    m = model([helper.make_node("Slice", ["", "s", "s"], ["y"])], [vi("x", [2])], [vi("y", None)],
              [numpy_helper.from_array(np.array([0], np.int64), "s")])
    with pytest.raises(OnnxImportError, match=r"\(Slice\): input 0 \(data\) is required but not given"):
        from_onnx(m)


def test_dropout_in_training_mode_is_refused():
    # it used to run as the identity, where the reference drops elements at random
    training = numpy_helper.from_array(np.array(True), "t")
    ratio = numpy_helper.from_array(np.array(0.5, np.float32), "r")
    m = model([helper.make_node("Dropout", ["x", "r", "t"], ["y"])], [vi("x", [4])], [vi("y", [4])], [ratio, training])
    with pytest.raises(OnnxImportError, match=r"Dropout in training mode \(random\) is not supported"):
        from_onnx(m)
    m.graph.initializer[1].CopyFrom(numpy_helper.from_array(np.array(False), "t"))
    x = np.arange(4, dtype=np.float32)
    np.testing.assert_array_equal(mlc.compile(from_onnx(m))(x), x)


def test_flags_other_than_0_or_1_are_refused():
    # keepdims=7 used to be read as true; the reference reads it otherwise
    m = model([helper.make_node("ReduceMax", ["x"], ["y"], axes=[1], keepdims=7)], [vi("x", [2, 3])], [vi("y", None)])
    with pytest.raises(OnnxImportError, match=r"\(ReduceMax\): attribute 'keepdims' must be 0 or 1, got 7"):
        from_onnx(m)
    w = numpy_helper.from_array(np.ones((3, 3), np.float32), "w")
    m = model([helper.make_node("Gemm", ["x", "w"], ["y"], transB=-1)], [vi("x", [2, 3])], [vi("y", None)], [w])
    with pytest.raises(OnnxImportError, match=r"attribute 'transB' must be 0 or 1, got -1"):
        from_onnx(m)


def test_constant_gather_indices_out_of_range_are_refused():
    # mlc's gather clamps; ONNX makes an out-of-range index an error (the reference raises)
    idx = numpy_helper.from_array(np.array([5, -3], np.int64), "idx")
    m = model([helper.make_node("Gather", ["x", "idx"], ["y"], axis=1)], [vi("x", [2, 4])], [vi("y", None)], [idx])
    with pytest.raises(OnnxImportError, match=r"\(Gather\): Gather's index 5 is out of range for axis 1 of size 4"):
        from_onnx(m)
    m.graph.initializer[0].CopyFrom(numpy_helper.from_array(np.array([3, -4], np.int64), "idx"))
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    np.testing.assert_array_equal(mlc.compile(from_onnx(m))(x), x[:, [3, 0]])


def test_mlc_run_prints_one_line_when_memory_runs_out(tmp_path):
    # 2**60 float32 intermediates: the model compiles, its workspace cannot be allocated
    from mlc.cli import main
    s = numpy_helper.from_array(np.array([2 ** 60], np.int64), "s")
    nodes = [helper.make_node("Expand", ["x", "s"], ["e"]), helper.make_node("Exp", ["e"], ["f"]),
             helper.make_node("Mul", ["f", "e"], ["g"]), helper.make_node("ReduceSum", ["g"], ["y"], keepdims=0)]
    path = tmp_path / "huge.onnx"
    onnx.save(model(nodes, [vi("x", [1])], [vi("y", None)], [s]), str(path))
    with pytest.raises(SystemExit) as e:
        main(["run", str(path), "--random-inputs"])
    assert str(e.value).startswith("mlc run: not enough memory to run the model: Unable to allocate")


def test_ops_defined_as_onnx_functions_import_as_their_body():
    # RMSNormalization's body is built for the node (context dependent), Swish's is fixed
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    scale = numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "s")
    m = model([helper.make_node("RMSNormalization", ["x", "s"], ["r"], epsilon=1e-3),
               helper.make_node("Swish", ["r"], ["y"], alpha=0.5)],
              [vi("x", [2, 3, 4])], [vi("y", [2, 3, 4])], [scale], opset=24)
    g = from_onnx(m)
    assert "sigmoid" in [n.op for n in g.nodes]
    r = x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + 1e-3) * numpy_helper.to_array(scale)
    np.testing.assert_allclose(mlc.compile(g)(x), r / (1 + np.exp(-0.5 * r)), rtol=1e-5, atol=1e-6)


def test_losses_attention_and_resize_match_onnx_reference():
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((3, 5, 2)).astype(np.float32)
    labels = np.array([[0, 4], [2, -1], [1, 3]], np.int64)
    w = numpy_helper.from_array(rng.random(5).astype(np.float32), "w")
    m = model([helper.make_node("SoftmaxCrossEntropyLoss", ["s", "t", "w"], ["loss", "logp"], ignore_index=-1)],
              [vi("s", [3, 5, 2]), vi("t", [3, 2], TensorProto.INT64)], [vi("loss", []), vi("logp", [3, 5, 2])],
              [w], opset=13)
    got = mlc.compile(from_onnx(m))(scores, labels)
    want = onnx.reference.ReferenceEvaluator(m).run(None, {"s": scores, "t": labels})
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)

    q, k, v = (rng.standard_normal((1, 4, 3, 8)).astype(np.float32) for _ in range(3))
    k, v = k[:, :2], v[:, :2]   # grouped-query: 4 query heads share 2 key/value heads
    m = model([helper.make_node("Attention", ["q", "k", "v"], ["y"], is_causal=1, softcap=2.0)],
              [vi("q", [1, 4, 3, 8]), vi("k", [1, 2, 3, 8]), vi("v", [1, 2, 3, 8])], [vi("y", [1, 4, 3, 8])], opset=23)
    want = onnx.reference.ReferenceEvaluator(m).run(None, {"q": q, "k": k, "v": v})[0]
    np.testing.assert_allclose(mlc.compile(from_onnx(m))(q, k, v), want, rtol=1e-5, atol=1e-6)

    x = rng.standard_normal((1, 2, 3, 4)).astype(np.float32)
    sizes = numpy_helper.from_array(np.array([5, 7], np.int64), "sizes")
    for mode in ("nearest", "linear", "cubic"):
        m = model([helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], mode=mode, axes=[2, 3])],
                  [vi("x", [1, 2, 3, 4])], [vi("y", [1, 2, 5, 7])], [sizes], opset=19)
        want = onnx.reference.ReferenceEvaluator(m).run(None, {"x": x})[0]
        np.testing.assert_allclose(mlc.compile(from_onnx(m))(x), want, rtol=1e-5, atol=1e-6, err_msg=mode)
    m = model([helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], mode="area", axes=[2, 3])],
              [vi("x", [1, 2, 3, 4])], [vi("y", [1, 2, 5, 7])], [sizes], opset=19)
    with pytest.raises(OnnxImportError, match="Resize's mode 'area' is not nearest, linear or cubic"):
        from_onnx(m)


def test_quantize_dequantize_per_block_and_qlinear_matmul_match_onnx_reference():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((3, 5)) * 200).astype(np.float32)
    scale = numpy_helper.from_array(np.array([[0.5, 1.0, 2.0]] * 3, np.float32), "s")   # blocks of 2 along axis 1
    zp = numpy_helper.from_array(np.array([[3, -2, 0]] * 3, np.int8), "z")
    m = model([helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], axis=1, block_size=2),
               helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], axis=1, block_size=2)],
              [vi("x", [3, 5])], [vi("q", [3, 5], TensorProto.INT8), vi("y", [3, 5])], [scale, zp], opset=21)
    got = mlc.compile(from_onnx(m))(x)
    want = onnx.reference.ReferenceEvaluator(m).run(None, {"x": x})
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_allclose(got[1], want[1], rtol=1e-6)
    assert got[0].min() == -128 and got[0].max() == 127   # saturated

    a = rng.integers(0, 255, (2, 4), dtype=np.uint8)
    b = rng.integers(0, 255, (4, 3), dtype=np.uint8)
    consts = [numpy_helper.from_array(np.array(v, dt), k) for k, v, dt in
              (("as", [0.02], np.float32), ("az", [120], np.uint8), ("bs", [0.03], np.float32),
               ("bz", [130], np.uint8), ("ys", [0.2], np.float32), ("yz", [128], np.uint8))]
    m = model([helper.make_node("QLinearMatMul", ["a", "as", "az", "b", "bs", "bz", "ys", "yz"], ["y"])],
              [vi("a", [2, 4], TensorProto.UINT8), vi("b", [4, 3], TensorProto.UINT8)],
              [vi("y", [2, 3], TensorProto.UINT8)], consts, opset=21)
    want = onnx.reference.ReferenceEvaluator(m).run(None, {"a": a, "b": b})[0]
    np.testing.assert_array_equal(mlc.compile(from_onnx(m))(a, b), want)
    m = model([helper.make_node("QuantizeLinear", ["x", "s"], ["q"], output_dtype=TensorProto.INT32)],
              [vi("x", [3, 5])], [vi("q", [3, 5], TensorProto.INT32)], [scale], opset=21)
    with pytest.raises(OnnxImportError, match="QuantizeLinear to int32: mlc quantizes to uint8, int8, uint16 and int16"):
        from_onnx(m)


def _single_node_matches_reference(node, inputs, out_shape, out_type=TensorProto.FLOAT, opset=22, consts=()):
    m = model([node], [vi(k, list(v.shape), helper.np_dtype_to_tensor_dtype(v.dtype)) for k, v in inputs.items()],
              [vi("y", out_shape, out_type)], list(consts), opset=opset)
    want = onnx.reference.ReferenceEvaluator(m).run(None, inputs)[0]
    got = mlc.compile(from_onnx(m))(*inputs.values())
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=node.op_type)


def test_more_converters_match_onnx_reference():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 5, 4)).astype(np.float32)
    grid = rng.uniform(-1.2, 1.2, (2, 3, 2, 2)).astype(np.float32)
    for mode, pad in (("linear", "zeros"), ("cubic", "border"), ("nearest", "reflection")):
        _single_node_matches_reference(helper.make_node("GridSample", ["x", "g"], ["y"], mode=mode, padding_mode=pad),
                                       {"x": x, "g": grid}, [2, 3, 3, 2])
    sig = rng.standard_normal((1, 8, 3, 1)).astype(np.float32)
    _single_node_matches_reference(helper.make_node("DFT", ["x"], ["y"], axis=1, onesided=1),
                                   {"x": sig}, [1, 5, 3, 2], opset=19)
    spec = rng.standard_normal((1, 5, 3, 2)).astype(np.float32)
    _single_node_matches_reference(helper.make_node("DFT", ["x"], ["y"], axis=1, inverse=1, onesided=1),
                                   {"x": spec}, [1, 8, 3, 1], opset=19)
    axis = numpy_helper.from_array(np.array(1, np.int64), "axis")
    _single_node_matches_reference(helper.make_node("CumProd", ["x", "axis"], ["y"], exclusive=1, reverse=1),
                                   {"x": x}, [2, 3, 5, 4], opset=26, consts=[axis])
    m = model([helper.make_node("GlobalLpPool", ["x"], ["y"], p=3)], [vi("x", [2, 3, 5, 4])], [vi("y", [2, 3, 1, 1])])
    want = np.cbrt(np.sum(np.abs(x.astype(np.float64)) ** 3, axis=(2, 3), keepdims=True))
    np.testing.assert_allclose(mlc.compile(from_onnx(m))(x), want, rtol=1e-5)
    data = rng.standard_normal((4, 3)).astype(np.float32)
    idx = numpy_helper.from_array(np.array([[1], [-1], [1]], np.int64), "i")
    upd = rng.standard_normal((3, 3)).astype(np.float32)
    _single_node_matches_reference(helper.make_node("ScatterND", ["x", "i", "u"], ["y"], reduction="max"),
                                   {"x": data, "u": upd}, [4, 3], consts=[idx])
    _single_node_matches_reference(helper.make_node("Trilu", ["x"], ["y"], upper=0), {"x": x}, [2, 3, 5, 4])


def test_opset_6_average_pool_counts_padding_as_onnx_reference_does():
    x = np.arange(1, 10, dtype=np.float32).reshape(1, 1, 3, 3)
    m = model([helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])],
              [vi("x", [1, 1, 3, 3])], [vi("y", [1, 1, 3, 3])], opset=6)
    want = onnx.reference.ReferenceEvaluator(m).run(None, {"x": x})[0]
    got = mlc.compile(from_onnx(m))(x)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert got[0, 0, 0, 0] == np.float32((1 + 2 + 4 + 5) / 9)   # the corner window: 4 values over 9 places
