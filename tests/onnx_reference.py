"""Run one ONNX node with ONNX's own reference implementation: the ground truth
the op tests compare mlc against."""
from __future__ import annotations

from onnx import helper
from onnx.reference import ReferenceEvaluator

OPSET = 21


def onnx_run(op_type, inputs, attrs=None, n_outputs=1, opset=OPSET):
    """Outputs of a one-node model. ``inputs``: arrays, or None for an omitted optional input."""
    names = [f"in{k}" if a is not None else "" for k, a in enumerate(inputs)]
    outs = [f"out{k}" for k in range(n_outputs)]
    node = helper.make_node(op_type, names, outs, **(attrs or {}))
    vi = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
          for n, a in zip(names, inputs) if a is not None]
    graph = helper.make_graph([node], "g", vi, [helper.make_tensor_value_info(o, 0, None) for o in outs])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    return ReferenceEvaluator(model).run(None, {n: a for n, a in zip(names, inputs) if a is not None})
