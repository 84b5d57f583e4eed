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
from ..frontend.onnx import FLOAT_SHAPE_INPUTS, NEEDS_CONSTANT, OnnxImportError, data_inputs, from_onnx


class MlcBackendRep(BackendRep):
    """A compiled model: ``run(inputs)`` takes arrays in graph-input order (or a dict).

    Inputs that decide shapes or attributes (an ``axes`` or ``shape`` tensor, a
    Clip bound, given as a graph input) cannot stay inputs of a statically shaped
    program: such a model is compiled at ``run``, specialized on the values of
    its integer, bool and one-element inputs and of float inputs that decide shapes
    (FLOAT_SHAPE_INPUTS: Resize's scales)."""

    def __init__(self, model, exe, output_names):
        self.model = model
        self.exe = exe
        weights = {i.name for i in model.graph.initializer}
        self.fed_names = [vi.name for vi in model.graph.input if vi.name not in weights]
        self.input_names = [vi.name for vi in data_inputs(model.graph, weights)]
        self.output_names = output_names
        self._specialized: dict = {}
        self._shape_deciding = {x for node in model.graph.node for k, x in enumerate(node.input)
                                if k in FLOAT_SHAPE_INPUTS.get(node.op_type, ())}

    def run(self, inputs, **kwargs):
        if isinstance(inputs, np.ndarray):
            inputs = [inputs]
        if not isinstance(inputs, dict):   # positional: every input that is not a weight
            inputs = dict(zip(self.fed_names, inputs))
        inputs = [np.asarray(inputs[n]) for n in self.input_names]
        exe, args = self.exe, inputs
        if exe is None:
            fixed = {n: x for n, x in zip(self.input_names, inputs) if x.dtype.kind in "iub" or x.size <= 1
                     or n in self._shape_deciding}
            key = tuple((n, x.dtype.str, x.shape, x.tobytes()) for n, x in fixed.items())
            exe = self._specialized.get(key)
            if exe is None:
                exe = compile_graph(from_onnx(self.model, constant_inputs=fixed), single_output=False)
                self._specialized[key] = exe
            args = [x for n, x in zip(self.input_names, inputs) if n not in fixed]
        outs = exe(*args)
        return namedtupledict("Outputs", self.output_names)(*outs)


class MlcBackend(Backend):
    """mlc as an ONNX backend (``onnx.backend.base.Backend``), on the CPU."""

    @classmethod
    def prepare(cls, model, device: str = "CPU", **kwargs):
        super().prepare(model, device, **kwargs)
        try:
            exe = compile_graph(from_onnx(model), single_output=False)
        except OnnxImportError as e:
            if NEEDS_CONSTANT not in str(e):
                raise
            exe = None   # compiled at run time, specialized on the shape-deciding inputs
        return MlcBackendRep(model, exe, [o.name for o in model.graph.output])

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return device.upper().startswith("CPU")
