"""Run one ONNX node with ONNX's own reference implementation: the ground truth
the op tests compare mlc against."""
from __future__ import annotations

import os

import numpy as np
import onnx
from onnx import helper, numpy_helper
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


LIGHT = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")


def light_model(name: str, seed: int = 0) -> onnx.ModelProto:
    """ONNX's light model ``name`` (light_NAME.onnx) with its ConstantOfShape weights (all one
    value, so that its output does not depend on its input) replaced by random initializers
    of the same shapes, and its closing softmax left out (the logits are what is compared)."""
    model = onnx.load(os.path.join(LIGHT, f"light_{name}.onnx"))
    rng = np.random.default_rng(seed)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    keep = []
    for n in model.graph.node:
        if n.op_type == "ConstantOfShape" and n.input[0] in inits:
            shape = tuple(int(d) for d in inits[n.input[0]])
            if len(shape) > 1:   # a weight, He-scaled
                w = rng.standard_normal(shape) * np.sqrt(2.0 / int(np.prod(shape[1:])))
            else:                # a bias, a scale, a batch norm's mean or (positive) variance
                w = rng.uniform(0.5, 1.5, shape)
            model.graph.initializer.append(numpy_helper.from_array(w.astype(np.float32), n.output[0]))
        else:
            keep.append(n)
        if n.op_type == "Softmax" and n.output[0] in {o.name for o in model.graph.output}:
            n.op_type = "Identity"   # compare the logits: a saturated softmax would hide differences
            del n.attribute[:]
    del model.graph.node[:]
    model.graph.node.extend(keep)
    return model
