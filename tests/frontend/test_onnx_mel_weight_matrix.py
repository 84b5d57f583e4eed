"""ONNX MelWeightMatrix: a constant computed from scalar parameters, against ONNX's
reference evaluator."""
from __future__ import annotations

import re

import numpy as np
import onnx.reference
import pytest
from onnx import TensorProto, helper, numpy_helper

from mlc.driver import compile_graph
from mlc.frontend.onnx import NEEDS_CONSTANT, OnnxImportError, from_onnx

NAMES = ("num_mel_bins", "dft_length", "sample_rate", "lower_edge_hertz", "upper_edge_hertz")


def mel_model(values, output_datatype=TensorProto.FLOAT, runtime=()):
    inits = [numpy_helper.from_array(np.array(v, np.float32 if "hertz" in k else np.int64), k)
             for k, v in zip(NAMES, values) if k not in runtime]
    inputs = [helper.make_tensor_value_info(k, TensorProto.INT64, []) for k in runtime]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    nodes = [helper.make_node("MelWeightMatrix", list(NAMES), ["m"], output_datatype=output_datatype),
             helper.make_node("CastLike", ["x", "m"], ["xc"]), helper.make_node("Mul", ["m", "xc"], ["y"])]
    y = helper.make_tensor_value_info("y", output_datatype, None)
    g = helper.make_graph(nodes, "g", [x] + inputs, [y], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("values", [(8, 16, 8192, 0.0, 4096.0), (20, 512, 16000, 20.0, 7600.0), (3, 32, 100, 0.0, 50.0)])
@pytest.mark.parametrize("dt", [TensorProto.FLOAT, TensorProto.DOUBLE])
def test_mel_weight_matrix_matches_onnx_reference(values, dt):
    m = mel_model(values, dt)
    x = np.array([2.0], np.float32)
    want = onnx.reference.ReferenceEvaluator(m).run(None, {"x": x})[0]
    got = compile_graph(from_onnx(m))(x)
    assert got.dtype == want.dtype and got.shape == (values[1] // 2 + 1, values[0])
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_mel_weight_matrix_refusals():
    with pytest.raises(OnnxImportError, match=re.escape(f"MelWeightMatrix's num_mel_bins {NEEDS_CONSTANT}")):
        from_onnx(mel_model((8, 16, 8192, 0.0, 4096.0), runtime=("num_mel_bins",)))
    with pytest.raises(OnnxImportError, match="edge frequencies fall outside the 9 spectrogram bins"):
        from_onnx(mel_model((8, 16, 100, 0.0, 4096.0)))
