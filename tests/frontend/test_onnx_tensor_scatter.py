"""ONNX TensorScatter (a KV-cache write) against ONNX's pseudocode, with the write
indices as a run-time input (not specialized) and as a constant."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from mlc.driver import compile_graph
from mlc.frontend.onnx import OnnxImportError, from_onnx


def reference(past, update, w, axis, mode):
    out = past.copy()
    m, length = past.shape[axis], update.shape[axis]
    for prefix in np.ndindex(past.shape[:axis]):
        for i in range(length):
            s = w[prefix[0]] + i
            s = s % m if mode == "circular" else s
            out[prefix + (s,)] = update[prefix + (i,)]
    return out


def model(shape, ushape, axis, mode, with_indices=True):
    vi = [helper.make_tensor_value_info("past", TensorProto.FLOAT, shape),
          helper.make_tensor_value_info("update", TensorProto.FLOAT, ushape)]
    if with_indices:
        vi.append(helper.make_tensor_value_info("w", TensorProto.INT64, [shape[0]]))
    out = helper.make_tensor_value_info("present", TensorProto.FLOAT, shape)
    node = helper.make_node("TensorScatter", [v.name for v in vi], ["present"], mode=mode, axis=axis)
    return helper.make_model(helper.make_graph([node], "g", vi, [out]), opset_imports=[helper.make_opsetid("", 24)])


@pytest.mark.parametrize("mode", ["linear", "circular"])
@pytest.mark.parametrize("shape,length,axis", [((3, 2, 7, 4), 3, -2), ((3, 2, 7, 4), 2, 2), ((2, 6, 5), 4, 1),
                                               ((2, 3, 5), 3, -2)])
def test_tensor_scatter_matches_onnx_pseudocode(shape, length, axis, mode):
    rng = np.random.default_rng(7)
    ax = axis % len(shape)
    ushape = tuple(length if k == ax else d for k, d in enumerate(shape))
    past, update = rng.standard_normal(shape).astype(np.float32), rng.standard_normal(ushape).astype(np.float32)
    m = shape[ax]
    hi = m + 3 if mode == "circular" else m - length   # circular indices may pass the end
    w = rng.integers(0, hi, size=shape[0], endpoint=True).astype(np.int64)
    exe = compile_graph(from_onnx(model(shape, ushape, axis, mode)))
    np.testing.assert_array_equal(exe(past, update, w), reference(past, update, w, ax, mode))
    # write_indices omitted: every row writes from 0
    exe = compile_graph(from_onnx(model(shape, ushape, axis, mode, with_indices=False)))
    np.testing.assert_array_equal(exe(past, update), reference(past, update, np.zeros(shape[0], int), ax, mode))


def test_tensor_scatter_refusals_name_the_problem():
    with pytest.raises(OnnxImportError, match=r"update \[2, 3, 5\] must have the cache's shape \[2, 4, 5\] but "
                                              r"along axis 2, at most as long"):
        from_onnx(model((2, 4, 5), (2, 3, 5), 2, "linear"))
    with pytest.raises(OnnxImportError, match="TensorScatter's mode must be 'linear' or 'circular', got 'ring'"):
        from_onnx(model((2, 4, 5), (2, 3, 5), 1, "ring"))
    with pytest.raises(OnnxImportError, match=r"TensorScatter's axis must not be 0 \(the batch axis\)"):
        from_onnx(model((2, 4, 5), (1, 4, 5), 0, "linear"))
