"""mlc as an ONNX backend (``onnx.backend.base.Backend``), on the CPU: ``prepare``
imports a model (``mlc.frontend.onnx``) and compiles it (``mlc.driver``); ONNX's
conformance suite runs against it in tests/interop/test_onnx_backend.py.

    rep = MlcBackend.prepare(onnx.load("model.onnx"))
    outputs = rep.run([x])
"""
from __future__ import annotations

import numpy as np
from onnx.backend.base import Backend, BackendRep, namedtupledict

from ..driver import compile_graph
from ..frontend.onnx import (FLOAT_SHAPE_INPUTS, NEEDS_CONSTANT, OnnxImportError, SymbolicShapeError, data_inputs,
                             from_onnx)


class MlcBackendRep(BackendRep):
    """A compiled model: ``run(inputs)`` takes arrays in graph-input order (or a dict).

    Inputs that decide shapes or attributes (an ``axes`` or ``shape`` tensor, a
    Clip bound, given as a graph input) cannot stay inputs of a statically shaped
    program: such a model is compiled at ``run``, specialized on the values of
    its integer, bool and one-element inputs and of float inputs that decide shapes
    (FLOAT_SHAPE_INPUTS: Resize's scales). So is a model with an input of symbolic
    shape (compiled for the shapes it is given) or a sequence input (a list of arrays:
    compiled for their number, shapes and dtypes); a sequence output is returned as a
    list of arrays."""

    def __init__(self, model, exe, output_names):
        self.model = model
        self.exe = exe
        self.groups = None   # (name, count) per output where the compiled program's are regrouped
        weights = {i.name for i in model.graph.initializer}
        self.fed_names = [vi.name for vi in model.graph.input if vi.name not in weights]
        self.input_names = [vi.name for vi in data_inputs(model.graph, weights)]
        self.output_names = output_names
        self._specialized: dict = {}
        self._shape_deciding = {x for node in model.graph.node for k, x in enumerate(node.input)
                                if k in FLOAT_SHAPE_INPUTS.get(node.op_type, ())}
        self._symbolic = {vi.name for vi in model.graph.input if vi.type.HasField("tensor_type")
                          and (not vi.type.tensor_type.HasField("shape")
                               or any(not d.HasField("dim_value") or d.dim_value < 0
                                      for d in vi.type.tensor_type.shape.dim))}

    def run(self, inputs, **kwargs):
        if isinstance(inputs, np.ndarray):
            inputs = [inputs]
        if not isinstance(inputs, dict):   # positional: every input that is not a weight
            inputs = dict(zip(self.fed_names, inputs))
        inputs = [[np.asarray(t) for t in inputs[n]] if isinstance(inputs[n], list) else np.asarray(inputs[n])
                  for n in self.input_names]
        exe, args, groups = self.exe, inputs, self.groups
        if exe is None:
            fixed = {n: x for n, x in zip(self.input_names, inputs) if not isinstance(x, list)
                     and (x.dtype.kind in "iub" or x.size <= 1 or n in self._shape_deciding)}
            seqs = {n: [(t.shape, t.dtype) for t in x] for n, x in zip(self.input_names, inputs) if isinstance(x, list)}
            shapes = {n: x.shape for n, x in zip(self.input_names, inputs) if n not in fixed and n not in seqs
                      and n in self._symbolic}
            key = (tuple((n, x.dtype.str, x.shape, x.tobytes()) for n, x in fixed.items()),
                   tuple((n, tuple((s, d.str) for s, d in v)) for n, v in seqs.items()), tuple(shapes.items()))
            if key not in self._specialized:
                g = from_onnx(self.model, constant_inputs=fixed, sequence_inputs=seqs, input_shapes=shapes)
                self._specialized[key] = (compile_graph(g, single_output=False), g.onnx_outputs)
            exe, groups = self._specialized[key]
            args = [t for n, x in zip(self.input_names, inputs) if n not in fixed
                    for t in (x if isinstance(x, list) else [x])]
        outs = list(exe(*args))
        if groups is not None and any(c is not None for _, c in groups):   # sequences regrouped into lists
            it = iter(outs)
            outs = [next(it) if c is None else [next(it) for _ in range(c)] for _, c in groups]
        return namedtupledict("Outputs", self.output_names)(*outs)


class MlcBackend(Backend):
    """mlc as an ONNX backend (``onnx.backend.base.Backend``), on the CPU."""

    @classmethod
    def prepare(cls, model, device: str = "CPU", **kwargs):
        super().prepare(model, device, **kwargs)
        groups = None
        try:
            g = from_onnx(model)
            exe, groups = compile_graph(g, single_output=False), g.onnx_outputs
        except OnnxImportError as e:
            seq_in = any(vi.type.HasField("sequence_type") for vi in model.graph.input)
            if not (NEEDS_CONSTANT in str(e) or isinstance(e, SymbolicShapeError) or seq_in):
                raise
            exe = None   # compiled at run time, specialized on the shape-deciding inputs
        rep = MlcBackendRep(model, exe, [o.name for o in model.graph.output])
        rep.groups = groups
        return rep

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return device.upper().startswith("CPU")
