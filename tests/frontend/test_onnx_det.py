"""ONNX Det against numpy.linalg.det: batches, sizes 1 to 7, singular matrices, row
swaps (a zero leading entry), float16/32/64."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from mlc.driver import compile_graph
from mlc.frontend.onnx import OnnxImportError, from_onnx


def det_model(shape, dtype):
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    x = helper.make_tensor_value_info("x", elem, list(shape))
    y = helper.make_tensor_value_info("y", elem, list(shape[:-2]))
    g = helper.make_graph([helper.make_node("Det", ["x"], ["y"])], "g", [x], [y])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 22)])


@pytest.mark.parametrize("shape", [(1, 1), (2, 2), (3, 3), (4, 2, 2), (2, 3, 5, 5), (7, 7)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_det_matches_numpy(shape, dtype):
    x = np.random.default_rng(5).standard_normal(shape).astype(dtype)
    got = compile_graph(from_onnx(det_model(shape, dtype)))(x)
    assert got.dtype == dtype and got.shape == shape[:-2]
    np.testing.assert_allclose(got, np.linalg.det(x), rtol=1e-4 if dtype == np.float32 else 1e-12, atol=1e-6)


def test_det_of_singular_and_permuted_matrices():
    x = np.array([[[1, 2, 3], [2, 4, 6], [0, 1, 1]],      # two rows proportional: 0
                  [[0, 1, 0], [1, 0, 0], [0, 0, 1]],      # one swap: -1
                  [[0, 0, 2], [0, 3, 0], [4, 0, 0]],      # anti-diagonal: -24
                  [[0, 0, 0], [1, 2, 3], [4, 5, 6]]], np.float64)   # a zero row: 0
    got = compile_graph(from_onnx(det_model(x.shape, np.float64)))(x)
    np.testing.assert_allclose(got, np.linalg.det(x), atol=1e-12)
    h = np.array([[2, 1], [1, 3]], np.float16)
    got = compile_graph(from_onnx(det_model(h.shape, np.float16)))(h)
    assert got.dtype == np.float16 and got == np.float16(5.0)


def test_det_refuses_non_square_matrices():
    with pytest.raises(OnnxImportError, match=r"Det takes square matrices \[\.\.\., n, n\], got shape \[2, 3\]"):
        from_onnx(det_model((2, 3), np.float32))
