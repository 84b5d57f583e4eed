"""ONNX Mod of floats against numpy: fmod=0 is numpy.mod (the divisor's sign, as Python's
%), fmod=1 is numpy.fmod (C's fmod, the dividend's sign), infinities, NaN and signed
zeros included."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from mlc.driver import compile_graph
from mlc.frontend.onnx import from_onnx

EDGE = [(0.0, -2.0), (-0.0, 2.0), (0.0, 2.0), (-0.0, -2.0), (-3.0, np.inf), (3.0, np.inf), (-1.0, -np.inf),
        (1.0, -np.inf), (np.inf, 2.0), (-np.inf, 2.0), (1.0, 0.0), (1.0, -0.0), (np.nan, 2.0), (1.0, np.nan),
        (5.5, 2.0), (-5.5, 2.0), (5.5, -2.0), (-5.5, -2.0), (4.0, 2.0), (-4.0, 2.0), (4.0, -2.0)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16], ids=["f32", "f64", "f16"])
@pytest.mark.parametrize("fmod", [0, 1])
def test_float_mod_matches_numpy_at_edge_values(fmod, dtype):
    rng = np.random.default_rng(3)
    x = np.concatenate([[a for a, _ in EDGE], rng.uniform(-50, 50, 200)]).astype(dtype)
    y = np.concatenate([[b for _, b in EDGE], rng.uniform(-7, 7, 200)]).astype(dtype)
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    vi = [helper.make_tensor_value_info(n, elem, [len(x)]) for n in ("x", "y", "z")]
    g = helper.make_graph([helper.make_node("Mod", ["x", "y"], ["z"], fmod=fmod)], "g", vi[:2], vi[2:])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    got = compile_graph(from_onnx(model))(x, y)
    with np.errstate(all="ignore"):
        want = (np.fmod if fmod else np.mod)(x, y)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.signbit(got[:len(EDGE)]), np.signbit(want[:len(EDGE)]))
    tol = {np.float16: 2e-2, np.float32: 1e-4, np.float64: 1e-9}[dtype]
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * 8)


def test_training_dropout_with_ratio_zero_is_the_identity():
    vi = helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4])
    outs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 4]),
            helper.make_tensor_value_info("m", TensorProto.BOOL, [3, 4])]
    inits = [helper.make_tensor("r", TensorProto.FLOAT, [], [0.0]), helper.make_tensor("t", TensorProto.BOOL, [], [1])]
    g = helper.make_graph([helper.make_node("Dropout", ["x", "r", "t"], ["y", "m"])], "g", [vi], outs, inits)
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    y, m = compile_graph(from_onnx(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])),
                         single_output=False)(x)
    np.testing.assert_array_equal(y, x)
    assert m.dtype == np.bool_ and m.all()
    inits[0] = helper.make_tensor("r", TensorProto.FLOAT, [], [0.1])
    g = helper.make_graph([helper.make_node("Dropout", ["x", "r", "t"], ["y", "m"])], "g", [vi], outs, inits)
    with pytest.raises(Exception, match=r"Dropout in training mode \(random\) is not supported"):
        from_onnx(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]))
