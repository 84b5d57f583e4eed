"""mlc graphs out as ONNX models: ``to_onnx(fn_or_graph, *example_args)`` or ``export(fn, *example_args, path=...)``.

    model = mlc.interop.onnx_export.export(lambda p, x: net(p, x), params, x, path="net.onnx")

Each graph op maps onto the ONNX operator of the same meaning (opset ``OPSET``);
constants become initializers (written beside the model as external data when they
pass ``EXTERNAL_DATA_BYTES``, as a protobuf cannot exceed 2 GiB); ``scan`` becomes ONNX ``Scan``, ``while_loop`` a
``Loop`` (its condition evaluated before the loop and after each step, as ONNX's Loop
expects it from the body), ``cond`` an ``If``, their bodies subgraphs that read the
enclosing graph's values by name. An op with no mapping is refused with its name, never
approximated. What comes out passes ``onnx.checker`` (full check, with shape inference)
and computes what mlc computes (tests: ONNX's reference evaluator and ONNX Runtime).
"""
from __future__ import annotations

import itertools
import os
from typing import Callable

import numpy as np

from ..frontend.trace import trace
from ..ir.graph import Graph, Node, Value
from ..ir.types import TensorType

OPSET = 20   # Gelu and the reductions' axes as inputs

_SAME = {"add": "Add", "sub": "Sub", "mul": "Mul", "div": "Div", "pow": "Pow", "maximum": "Max", "minimum": "Min",
         "less": "Less", "greater": "Greater", "equal": "Equal", "where": "Where", "matmul": "MatMul",
         "relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh", "exp": "Exp", "log": "Log", "sqrt": "Sqrt",
         "neg": "Neg", "abs": "Abs", "erf": "Erf", "floor": "Floor", "ceil": "Ceil", "sin": "Sin", "cos": "Cos",
         "copy": "Identity", "global_avg_pool": "GlobalAveragePool", "softsign": "Softsign",
         "softplus": "Softplus", "global_max_pool": "GlobalMaxPool", "prelu": "PRelu", "round": "Round",
         "hard_swish": "HardSwish", "mish": "Mish"}
_ALPHA = {"elu": "Elu", "celu": "Celu", "thresholded_relu": "ThresholdedRelu"}   # one float attribute, alpha
_REDUCE = {"sum": "ReduceSum", "mean": "ReduceMean", "max": "ReduceMax", "min": "ReduceMin", "prod": "ReduceProd"}
_OTHER = {"constant", "rsqrt", "softmax", "log_softmax", "gelu", "leaky_relu", "batch_norm", "layer_norm", "conv",
          "max_pool", "avg_pool", "gather", "gather_elements", "concatenate", "reshape", "broadcast_to", "transpose",
          "expand_dims", "squeeze", "slice", "cast", "clip", "argmax", "argmin", "pad", "tile", "cumsum", "split",
          "selu", "hard_sigmoid", "lrn", "scan", "while_loop", "cond"}
EXPORTED = frozenset(_SAME) | frozenset(_REDUCE) | frozenset(_ALPHA) | _OTHER
"""The graph ops ``to_onnx`` writes."""
INT64_MAX, INT64_MIN = 2 ** 63 - 1, -2 ** 63
EXTERNAL_DATA_BYTES = 2 ** 31 - 2 ** 26
"""``export`` writes the initializers to a separate file when they hold more bytes than
this: a protobuf (a whole .onnx file) cannot exceed 2 GiB."""


class OnnxExportError(ValueError):
    """The graph holds something ONNX (or this exporter) cannot express; the message says what."""


def _onnx_type(t: TensorType):
    from onnx import helper
    return helper.np_dtype_to_tensor_dtype(t.dtype.np)


class _Exporter:
    def __init__(self, reserved=()):
        from onnx import helper
        self.h = helper
        self.counter = itertools.count()
        self.taken = set(reserved)   # the model's input names, which fresh names avoid
        self.initializers = []
        self.nodes: list = []   # the graph being written (a subgraph swaps its own list in)

    def fresh(self, hint: str) -> str:
        name = f"{hint}_{next(self.counter)}"
        while name in self.taken:
            name = f"{hint}_{next(self.counter)}"
        return name

    def emit(self, op_type: str, inputs: list[str], n_out: int = 1, **attrs) -> list[str]:
        outs = [self.fresh(op_type.lower()) for _ in range(n_out)]
        self.nodes.append(self.h.make_node(op_type, inputs, outs, **attrs))
        return outs

    def const(self, value, hint: str = "const") -> str:
        from onnx import numpy_helper
        name = self.fresh(hint)
        self.initializers.append(numpy_helper.from_array(np.array(value, order="C"), name))   # 0-d stays 0-d
        return name

    def ints(self, values) -> str:
        return self.const(np.asarray(list(values), np.int64), "ints")

    def value_info(self, name: str, t: TensorType):
        return self.h.make_tensor_value_info(name, _onnx_type(t), list(t.shape))

    def graph(self, g: Graph, name: str, bound: dict[Value, str], declared: list[Value], keep_names: bool = False):
        """``g`` as a GraphProto: ``declared`` inputs become its inputs (named afresh, or as
        in ``g`` with ``keep_names``), ``bound`` values are names of the enclosing scope."""
        saved, self.nodes = self.nodes, []
        env = dict(bound)
        inputs = []
        for v in declared:
            env[v] = v.name if keep_names else self.fresh(v.name or "in")
            inputs.append(self.value_info(env[v], v.type))
        for n in g.nodes:
            outs = self.node(n, [env[v] for v in n.inputs])
            env.update(zip(n.outputs, outs))
        outputs = []
        for v in g.outputs:   # a graph output is a value written in this graph, under its own name
            out = self.emit("Identity", [env[v]])[0]
            outputs.append(self.value_info(out, v.type))
        nodes, self.nodes = self.nodes, saved
        return self.h.make_graph(nodes, name, inputs, outputs)

    def node(self, n: Node, ins: list[str]) -> list[str]:
        a = n.attrs
        op = n.op
        if op == "constant":
            return [self.const(a["value"])]
        if op in _SAME:
            return self.emit(_SAME[op], ins)
        if op in _REDUCE:
            axes = [] if a["axis"] is None else [self.ints(a["axis"])]
            return self.emit(_REDUCE[op], ins + axes, keepdims=int(a["keepdims"]))
        if op == "rsqrt":
            return self.emit("Reciprocal", self.emit("Sqrt", ins))
        if op in ("softmax", "log_softmax"):
            return self.emit("Softmax" if op == "softmax" else "LogSoftmax", ins, axis=a["axis"])
        if op in _ALPHA:
            return self.emit(_ALPHA[op], ins, alpha=float(a["alpha"]))
        if op == "selu":
            return self.emit("Selu", ins, alpha=float(a["alpha"]), gamma=float(a["gamma"]))
        if op == "hard_sigmoid":
            return self.emit("HardSigmoid", ins, alpha=float(a["alpha"]), beta=float(a["beta"]))
        if op == "lrn":
            return self.emit("LRN", ins, size=int(a["size"]), alpha=float(a["alpha"]), beta=float(a["beta"]),
                             bias=float(a["bias"]))
        if op in ("argmax", "argmin"):
            return self.emit("ArgMax" if op == "argmax" else "ArgMin", ins, axis=int(a["axis"]),
                             keepdims=int(a["keepdims"]), select_last_index=int(a["select_last_index"]))
        if op == "pad":
            value = self.const(np.asarray(a["value"], n.inputs[0].dtype.np))
            return self.emit("Pad", ins + [self.ints(a["pads"]), value], mode=a["mode"])
        if op == "tile":
            return self.emit("Tile", ins + [self.ints(a["repeats"])])
        if op == "cumsum":
            return self.emit("CumSum", ins + [self.const(np.int64(a["axis"]), "axis")],
                             exclusive=int(a["exclusive"]), reverse=int(a["reverse"]))
        if op == "split":
            axis = int(a["axis"])
            sizes = [o.shape[axis] for o in n.outputs]
            return self.emit("Split", ins + [self.ints(sizes)], len(n.outputs), axis=axis)
        if op == "gather_elements":
            return self.emit("GatherElements", ins, axis=a["axis"])
        if op == "gelu":
            return self.emit("Gelu", ins, approximate=a["approximate"])
        if op == "leaky_relu":
            return self.emit("LeakyRelu", ins, alpha=float(a["alpha"]))
        if op == "batch_norm":
            return self.emit("BatchNormalization", ins, epsilon=float(a["epsilon"]))
        if op == "layer_norm":
            return self.emit("LayerNormalization", ins, axis=a["axis"], epsilon=float(a["epsilon"]))
        if op in ("conv", "max_pool", "avg_pool"):
            attrs = {k: list(a[k]) for k in ("strides", "pads", "dilations", "kernel_shape") if a.get(k) is not None}
            if a.get("auto_pad", "NOTSET") != "NOTSET":
                attrs["auto_pad"] = a["auto_pad"]
            if op == "conv":
                return self.emit("Conv", ins, group=a["group"], **attrs)
            attrs["ceil_mode"] = int(a["ceil_mode"])
            if op == "avg_pool":
                attrs.pop("dilations", None)
                return self.emit("AveragePool", ins, count_include_pad=int(a["count_include_pad"]), **attrs)
            return self.emit("MaxPool", ins, **attrs)
        if op == "gather":
            return self.emit("Gather", ins, axis=a["axis"])
        if op == "concatenate":
            return self.emit("Concat", ins, axis=a["axis"])
        if op == "reshape":
            return self.emit("Reshape", ins + [self.ints(n.outputs[0].shape)])
        if op == "broadcast_to":
            return self.emit("Expand", ins + [self.ints(n.outputs[0].shape)])
        if op == "transpose":
            return self.emit("Transpose", ins, perm=list(a["axes"]))
        if op == "expand_dims":
            return self.emit("Unsqueeze", ins + [self.ints(a["axis"])])
        if op == "squeeze":
            return self.emit("Squeeze", ins + [self.ints(a["axis"])])
        if op == "slice":
            ends = [e if e is not None else (INT64_MIN if s < 0 else INT64_MAX) for e, s in zip(a["end"], a["step"])]
            return self.emit("Slice", ins + [self.ints(a["begin"]), self.ints(ends),
                                             self.ints(range(len(ends))), self.ints(a["step"])])
        if op == "cast":
            from onnx import helper
            return self.emit("Cast", ins, to=helper.np_dtype_to_tensor_dtype(a["dtype"].np))
        if op == "clip":
            dt = n.inputs[0].dtype.np
            lo = self.const(np.asarray(a["min"], dt)) if a["min"] is not None else ""
            hi = self.const(np.asarray(a["max"], dt)) if a["max"] is not None else ""
            return self.emit("Clip", ins + [lo, hi])
        if op == "scan":
            return self.scan(n, ins)
        if op == "while_loop":
            return self.while_loop(n, ins)
        if op == "cond":
            return self.cond(n, ins)
        raise OnnxExportError(f"op {op} has no ONNX export yet" + (f" (at {n.loc})" if n.loc else ""))

    def scan(self, n: Node, ins: list[str]) -> list[str]:
        k, m, body = n.attrs["num_carry"], n.attrs["num_xs"], n.attrs["body"]
        consts = dict(zip(body.inputs[k + m:], ins[k + m:]))   # read from the enclosing graph by name
        g = self.graph(body, self.fresh(body.name), consts, body.inputs[:k + m])
        xs = ins[k:k + m]
        if n.attrs["reverse"]:   # flipped around a forward Scan: not every runtime runs Scan's directions
            xs = [self.flip(x) for x in xs]
        outs = self.emit("Scan", ins[:k] + xs, len(n.outputs), body=g, num_scan_inputs=m)
        if n.attrs["reverse"]:
            outs = outs[:k] + [self.flip(y) for y in outs[k:]]
        return outs

    def flip(self, x: str) -> str:
        """``x`` reversed along its leading axis."""
        return self.emit("Slice", [x, self.ints([-1]), self.ints([INT64_MIN]), self.ints([0]), self.ints([-1])])[0]

    def while_loop(self, n: Node, ins: list[str]) -> list[str]:
        k, cond, body = n.attrs["num_carry"], n.attrs["cond"], n.attrs["body"]
        consts = ins[k:]
        # ONNX's Loop takes the condition before the first step and from the body after each
        first = self.inline(cond, ins)
        saved, self.nodes = self.nodes, []
        it, cond_in = self.fresh("iter"), self.fresh("cond_in")
        carried = [self.fresh("carry") for _ in range(k)]
        stepped = self.inline(body, carried + consts)
        again = self.inline(cond, stepped + consts)
        outs = [self.emit("Identity", [x])[0] for x in again + stepped]
        h = self.h
        from onnx import TensorProto
        graph = h.make_graph(
            self.nodes, self.fresh(body.name),
            [h.make_tensor_value_info(it, TensorProto.INT64, []), h.make_tensor_value_info(cond_in, TensorProto.BOOL, [])]
            + [self.value_info(c, v.type) for c, v in zip(carried, body.inputs[:k])],
            [self.value_info(outs[0], TensorType((), cond.outputs[0].dtype))]
            + [self.value_info(o, v.type) for o, v in zip(outs[1:], body.outputs)])
        self.nodes = saved
        return self.emit("Loop", ["", first[0]] + ins[:k], k, body=graph)

    def inline(self, g: Graph, args: list[str]) -> list[str]:
        """``g``'s nodes written into the current graph on ``args``: its outputs' names."""
        env = dict(zip(g.inputs, args))
        for n in g.nodes:
            env.update(zip(n.outputs, self.node(n, [env[v] for v in n.inputs])))
        return [env[v] for v in g.outputs]

    def cond(self, n: Node, ins: list[str]) -> list[str]:
        branches = {}
        for key in ("true_body", "false_body"):
            g = n.attrs[key]
            branches[key] = self.graph(g, self.fresh(g.name), dict(zip(g.inputs, ins[1:])), [])
        return self.emit("If", ins[:1], len(n.outputs), then_branch=branches["true_body"],
                         else_branch=branches["false_body"])


def _refusals(graph: Graph) -> list[str]:
    """Every op of ``graph`` (and of its bodies) with no ONNX export, with its location."""
    from ..ir.graph import walk_nodes
    bad = []
    for n in walk_nodes(graph):
        if n.op not in EXPORTED:
            bad.append(f"op {n.op} has no ONNX export yet" + (f" (at {n.loc})" if n.loc else ""))
    return list(dict.fromkeys(bad))


def _check(model_or_path, name: str):
    import onnx
    try:
        onnx.checker.check_model(model_or_path, full_check=True)
    except onnx.checker.ValidationError as e:
        raise OnnxExportError(f"internal error: the exported model of @{name} fails onnx.checker: "
                              f"{str(e).splitlines()[0]}") from None


def initializer_bytes(model) -> int:
    """The bytes ``model``'s initializers hold (the main graph's)."""
    return sum(len(t.raw_data) for t in model.graph.initializer)


def to_onnx(fn_or_graph: Callable | Graph, *example_args, name: str | None = None, check: bool | None = None):
    """A graph (or ``fn`` traced on the example arguments) as an ``onnx.ModelProto``
    (opset ``OPSET``), checked by ``onnx.checker``
    (full check, with shape inference); its inputs keep their names. Every op without an
    ONNX export is named at once. A model whose initializers pass ``EXTERNAL_DATA_BYTES``
    is too large for the in-memory check (a protobuf holds at most 2 GiB): ``check=None``
    skips it then, and ``export`` checks the written files instead."""
    graph = fn_or_graph if isinstance(fn_or_graph, Graph) else trace(fn_or_graph, *example_args)
    bad = _refusals(graph)
    if bad:
        raise OnnxExportError("; ".join(bad))
    ex = _Exporter(reserved=[v.name for v in graph.inputs])
    g = ex.graph(graph, name or graph.name, {}, graph.inputs, keep_names=True)
    model = ex.h.make_model(g, opset_imports=[ex.h.make_opsetid("", OPSET)], producer_name="mlc")
    model.graph.initializer.extend(ex.initializers)
    if check or (check is None and initializer_bytes(model) <= EXTERNAL_DATA_BYTES):
        _check(model, graph.name)
    return model


def export(fn: Callable | Graph, *example_args, path: str | os.PathLike | None = None,
           external_data_bytes: int = EXTERNAL_DATA_BYTES):
    """Trace ``fn`` on the example arguments (or take a Graph) and return its ONNX model,
    written to ``path`` when given. When the initializers hold more than
    ``external_data_bytes`` (default ``EXTERNAL_DATA_BYTES``, below protobuf's 2 GiB),
    they go to ``PATH.data`` beside the model (ONNX external data: ``onnx.load(path)``
    and ONNX Runtime read them back), the written model is what onnx.checker checks, and
    the returned model refers to that file for its initializers' data."""
    import onnx
    graph = fn if isinstance(fn, Graph) else trace(fn, *example_args)
    model = to_onnx(graph, check=False)
    external = initializer_bytes(model) > external_data_bytes
    if not external:
        _check(model, graph.name)
    if path is not None:
        path = os.fspath(path)
        if external:
            location = os.path.basename(path) + ".data"
            if os.path.exists(os.path.join(os.path.dirname(path), location)):
                os.remove(os.path.join(os.path.dirname(path), location))   # save_model appends to it
            onnx.save_model(model, path, save_as_external_data=True, all_tensors_to_one_file=True,
                            location=location, size_threshold=1024)
            _check(path, graph.name)   # by path: the checker reads the external data
        else:
            onnx.save(model, path)
    return model
