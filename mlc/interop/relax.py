"""mlc graphs to and from TVM Relax (``apache-tvm``, the ``tvm`` extra).

    mod = mlc.interop.to_relax(graph)            # a tvm.IRModule with one Relax function, "main"
    exe = tvm.compile(mod, target="llvm")        # TVM builds it for any of its targets
    g = mlc.interop.from_relax(mod)              # and back: e.g. the output of TVM's ONNX or PyTorch importers

``to_relax`` writes each graph op as the Relax op of the same meaning
(``relax.BlockBuilder``, one dataflow block; constants stay constants). ``from_relax``
walks the function's binding blocks and records each ``relax.Call`` as mlc ops, on
static shapes. Either direction refuses what it has no mapping for, naming every
unsupported op at once; nothing is approximated. The op families are the tables
``TO_RELAX`` and ``FROM_RELAX`` below (docs/relax.md describes them).
"""
from __future__ import annotations

import re

import numpy as np

from ..ir.graph import Graph, walk_nodes
from ..ir.types import TensorType, dtype as to_dtype
from ..ops.builder import Emitter, Sym


class RelaxExportError(ValueError):
    """The graph holds ops with no Relax mapping; the message names all of them."""


class RelaxImportError(ValueError):
    """The Relax module holds what mlc does not import; the message names all of it."""


def _tvm():
    try:
        import tvm
        from tvm import relax
    except ImportError as e:   # pragma: no cover - depends on the environment
        raise ImportError("mlc.interop's Relax exchange needs TVM: pip install 'mlc[tvm]' (apache-tvm)") from e
    return tvm, relax


# ============================================================================ mlc -> Relax

_BINARY = {"add": "add", "sub": "subtract", "mul": "multiply", "div": "divide", "pow": "power",
           "maximum": "maximum", "minimum": "minimum", "less": "less", "greater": "greater", "equal": "equal"}
_UNARY = {"sigmoid": "sigmoid", "tanh": "tanh", "exp": "exp", "log": "log", "sqrt": "sqrt", "rsqrt": "rsqrt",
          "neg": "negative", "abs": "abs", "erf": "erf", "floor": "floor", "ceil": "ceil", "sin": "sin",
          "cos": "cos"}
_NN_UNARY = {"relu": "relu", "softplus": "softplus"}
_REDUCE = ("sum", "mean", "max", "min", "prod")
_PAD_MODES = {"constant": "constant", "reflect": "reflect", "edge": "replicate", "wrap": "circular"}   # mlc: Relax


def _ints(xs):
    return [int(x) for x in xs]


class _ToRelax:
    def __init__(self, relax):
        self.R = relax
        self.op = relax.op

    def const(self, array, dt=None):
        a = np.asarray(array, dtype=dt)
        return self.R.const(np.array(a, order="C"), str(a.dtype))

    def node(self, n, ins):
        R, op, a = self.R, self.op, n.attrs
        name = n.op
        rank = len(n.inputs[0].shape) if n.inputs else 0
        if name == "constant":
            return self.const(a["value"])
        if name == "copy":
            return ins[0]
        if name in _BINARY:   # Relax takes one dtype: mlc's promotion (an int / an int is a float) made explicit
            out = n.outputs[0].dtype
            common = out if not out.is_bool else to_dtype(np.result_type(*[v.dtype.np for v in n.inputs]))
            ins = [x if v.dtype == common else op.astype(x, common.name) for x, v in zip(ins, n.inputs)]
            return getattr(op, _BINARY[name])(*ins)
        if name in _UNARY:
            return getattr(op, _UNARY[name])(ins[0])
        if name in _NN_UNARY:
            return getattr(op.nn, _NN_UNARY[name])(ins[0])
        if name == "where":
            out = n.outputs[0].dtype
            return op.where(ins[0], *[x if v.dtype == out else op.astype(x, out.name)
                                      for x, v in zip(ins[1:], n.inputs[1:])])
        if name == "matmul":
            return op.matmul(*ins)
        if name == "gelu":
            return op.nn.gelu(ins[0]) if a["approximate"] == "none" else op.nn.gelu_tanh(ins[0])
        if name == "leaky_relu":
            return op.nn.leakyrelu(ins[0], float(a["alpha"]))
        if name == "prelu":
            x, slope = ins
            zero = self.const(0, n.inputs[0].dtype.np)
            return op.where(op.less(x, zero), op.multiply(x, slope), x)
        if name in ("softmax", "log_softmax"):
            return getattr(op.nn, name)(ins[0], axis=int(a["axis"]))
        if name in _REDUCE:
            axis = None if a["axis"] is None else _ints(a["axis"])
            return getattr(op, name)(ins[0], axis=axis, keepdims=bool(a["keepdims"]))
        if name in ("argmax", "argmin"):
            return getattr(op, name)(ins[0], axis=int(a["axis"]), keepdims=bool(a["keepdims"]))
        if name == "conv":
            d = rank - 2
            conv = getattr(op.nn, f"conv{d}d")
            layouts = {1: ("NCW", "OIW"), 2: ("NCHW", "OIHW"), 3: ("NCDHW", "OIDHW")}[d]
            return conv(ins[0], ins[1], strides=_ints(a["strides"]), padding=_ints(a["pads"]),
                        dilation=_ints(a["dilations"]), groups=int(a["group"]),
                        data_layout=layouts[0], kernel_layout=layouts[1])
        if name in ("max_pool", "avg_pool"):
            d = rank - 2
            pool = getattr(op.nn, f"{name}{d}d")
            layout = {1: "NCW", 2: "NCHW", 3: "NCDHW"}[d]
            return pool(ins[0], pool_size=_ints(a["kernel_shape"]), strides=_ints(a["strides"]),
                        padding=_ints(a["pads"]), dilation=_ints(a["dilations"]), ceil_mode=bool(a["ceil_mode"]),
                        count_include_pad=bool(a.get("count_include_pad", False)), layout=layout)
        if name in ("global_avg_pool", "global_max_pool"):
            return (op.mean if name == "global_avg_pool" else op.max)(ins[0], axis=list(range(2, rank)), keepdims=True)
        if name == "batch_norm":
            bn = op.nn.batch_norm(*ins, axis=1, epsilon=float(a["epsilon"]), training=False)
            return R.TupleGetItem(bn, 0)
        if name == "layer_norm":
            axis = a["axis"] % rank
            return op.nn.layer_norm(*ins, axes=list(range(axis, rank)), epsilon=float(a["epsilon"]))
        if name in ("reshape", "broadcast_to"):
            return getattr(op, name)(ins[0], _ints(n.outputs[0].shape))
        if name == "transpose":
            return op.permute_dims(ins[0], axes=_ints(a["axes"]))
        if name == "concatenate":
            return op.concat(ins, axis=int(a["axis"]))
        if name == "expand_dims":
            return op.expand_dims(ins[0], axis=_ints(a["axis"]))
        if name == "squeeze":
            return op.squeeze(ins[0], axis=_ints(a["axis"]))
        if name == "gather":
            return op.take(ins[0], ins[1], axis=int(a["axis"]), mode="wrap")
        if name == "slice":
            shape = n.inputs[0].shape
            ends = [e if e is not None else (shape[i] if s > 0 else -shape[i] - 1)
                    for i, (e, s) in enumerate(zip(a["end"], a["step"]))]
            axes = list(range(len(ends)))
            return op.strided_slice(ins[0], axes, _ints(a["begin"]), _ints(ends), _ints(a["step"]))
        if name == "cast":
            return op.astype(ins[0], a["dtype"].name)
        if name == "clip":
            x, dt = ins[0], n.inputs[0].dtype.np
            if a["min"] is not None:
                x = op.maximum(x, self.const(a["min"], dt))
            if a["max"] is not None:
                x = op.minimum(x, self.const(a["max"], dt))
            return x
        if name == "pad":
            pads = _ints(a["pads"])
            width = [p for i in range(rank) for p in (pads[i], pads[rank + i])]
            return op.nn.pad(ins[0], width, _PAD_MODES[a["mode"]], float(a["value"]))
        if name == "tile":
            return op.tile(ins[0], _ints(a["repeats"]))
        if name == "lrn":   # Relax has no LRN: the window sum over channels of the zero-padded squares
            x, size, channels = ins[0], int(a["size"]), n.inputs[0].shape[1]
            dt = n.inputs[0].dtype.np
            before = (size - 1) // 2
            width = [0, 0, before, size - 1 - before] + [0, 0] * (rank - 2)
            sq = op.nn.pad(op.multiply(x, x), width, "constant", 0.0)
            total = op.strided_slice(sq, [1], [0], [channels])
            for k in range(1, size):
                total = op.add(total, op.strided_slice(sq, [1], [k], [k + channels]))
            scale = op.add(self.const(a["bias"], dt), op.multiply(self.const(a["alpha"] / size, dt), total))
            return op.divide(x, op.power(scale, self.const(a["beta"], dt)))
        if name == "cumsum":
            return op.cumsum(ins[0], axis=int(a["axis"]))
        raise AssertionError(name)


TO_RELAX = sorted(set(_BINARY) | set(_UNARY) | set(_NN_UNARY) | set(_REDUCE) | {
    "constant", "copy", "where", "matmul", "gelu", "leaky_relu", "prelu", "softmax", "log_softmax", "argmax",
    "argmin", "conv", "max_pool", "avg_pool", "global_avg_pool", "global_max_pool", "batch_norm", "layer_norm",
    "reshape", "broadcast_to", "transpose", "concatenate", "expand_dims", "squeeze", "gather", "slice", "cast",
    "clip", "pad", "tile", "cumsum", "lrn"})
"""The graph ops ``to_relax`` writes."""


def _export_refusals(graph: Graph) -> list[str]:
    bad = []
    for n in walk_nodes(graph):
        a, why = n.attrs, None
        if n.op not in TO_RELAX:
            why = f"{n.op}"
        elif n.op == "cumsum" and (a.get("exclusive") or a.get("reverse")):
            why = "cumsum (exclusive or reverse)"
        elif n.op in ("argmax", "argmin") and a.get("select_last_index"):
            why = f"{n.op} (select_last_index)"
        elif n.op in ("conv", "max_pool", "avg_pool") and not 3 <= len(n.inputs[0].shape) <= 5:
            why = f"{n.op} on a rank-{len(n.inputs[0].shape)} input"
        elif n.op == "pad" and min(a["pads"]) < 0:
            why = "pad (negative pads)"
        if why:
            bad.append(why + (f" (at {n.loc})" if n.loc else ""))
    return bad


def to_relax(graph: Graph, name: str = "main"):
    """``graph`` as a ``tvm.IRModule`` holding the Relax function ``name``: its
    parameters are the graph's inputs (same names, shapes and dtypes), its body one
    dataflow block, its result the graph's output (a tuple for several)."""
    if not isinstance(graph, Graph):
        raise TypeError(f"to_relax takes an mlc Graph (mlc.trace, mlc.frontend.onnx.from_onnx), "
                        f"not {type(graph).__name__}")
    bad = _export_refusals(graph)
    if bad:
        raise RelaxExportError(f"@{graph.name} has ops with no Relax export: " + "; ".join(dict.fromkeys(bad)))
    _, relax = _tvm()
    conv = _ToRelax(relax)
    bb = relax.BlockBuilder()
    params = [relax.Var(v.name, relax.TensorType(list(v.shape), v.dtype.name)) for v in graph.inputs]
    env = dict(zip(graph.inputs, params))
    with bb.function(name, params):
        with bb.dataflow():
            for n in graph.nodes:
                expr = conv.node(n, [env[v] for v in n.inputs])
                env[n.outputs[0]] = expr if n.op == "copy" else bb.emit(expr)
            outs = [env[v] for v in graph.outputs]
            result = bb.emit_output(outs[0] if len(outs) == 1 else relax.Tuple(outs))
        bb.emit_func_output(result)
    return bb.get()


# ============================================================================ Relax -> mlc

def _attr_ints(x):
    return None if x is None else [int(v) for v in x]


def _binary(op):
    return lambda em, c, args: em(op, *args)


def _divide(floor: bool):
    """Relax's divide truncates integers (floor_divide floors); mlc's div is true division."""
    def f(em, c, args):
        a, b = args
        if not floor and a.dtype.kind == "f":
            return em("div", a, b)
        q = em("div", a, b)
        if floor:
            r = em("floor", q)
        else:
            r = em("where", em("less", q, 0.0), em("ceil", q), em("floor", q))
        return r if r.dtype == a.dtype else em("cast", r, dtype=to_dtype(a.dtype))
    return f


def _unary(op, **attrs):
    return lambda em, c, args: em(op, args[0], **attrs)


def _reduce(op):
    def f(em, c, args):
        axis = _attr_ints(c.attrs.axis)
        return em(op, args[0], axis=axis, keepdims=bool(c.attrs.keepdims))
    return f


def _arg(op):
    def f(em, c, args):
        axis = c.attrs.axis
        x = args[0]
        if axis is None:   # over the flattened tensor
            x, axis = em("reshape", x, shape=(-1,)), 0
        return em(op, x, axis=int(axis), keepdims=bool(c.attrs.keepdims))
    return f


def _compare_or(op):   # a <= b as (a < b) or (a == b), as mlc's tracer writes it
    def f(em, c, args):
        return em("where", em(op, *args), True, em("equal", *args))
    return f


def _conv(d):
    def f(em, c, args):
        a = c.attrs
        return em("conv", args[0], args[1], strides=_attr_ints(a.strides), pads=_attr_ints(a.padding),
                  dilations=_attr_ints(a.dilation), group=int(a.groups))
    return f


def _pool(op):
    def f(em, c, args):
        a = c.attrs
        attrs = dict(kernel_shape=_attr_ints(a.pool_size), strides=_attr_ints(a.strides), pads=_attr_ints(a.padding),
                     dilations=_attr_ints(a.dilation), ceil_mode=bool(a.ceil_mode))
        if op == "avg_pool":
            attrs["count_include_pad"] = bool(a.count_include_pad)
        return em(op, args[0], **attrs)
    return f


def _batch_norm(em, c, args):
    x, scale, bias, mean, var = args
    return (em("batch_norm", x, scale, bias, mean, var, epsilon=float(c.attrs.epsilon)), mean, var)


def _layer_norm(em, c, args):
    rank = len(args[0].shape)
    axes = sorted(a % rank for a in _attr_ints(c.attrs.axes))
    return em("layer_norm", *args, axis=axes[0], epsilon=float(c.attrs.epsilon))


def _shape_op(op):
    return lambda em, c, args: em(op, args[0], shape=tuple(_out_shape(c)))


def _permute(em, c, args):
    axes = _attr_ints(c.attrs.axes)
    return em("transpose", args[0], axes=tuple(axes) if axes is not None else None)


def _stack(em, c, args):
    axis = int(c.attrs.axis) if c.attrs.axis is not None else 0
    return em("concatenate", [em("expand_dims", x, axis=axis) for x in args[0]], axis=axis)


def _take(em, c, args):
    x, idx = args
    axis = c.attrs.axis
    if axis is None:
        x, axis = em("reshape", x, shape=(-1,)), 0
    return em("gather", x, idx, axis=int(axis))


def _strided_slice(em, c, args):
    x, axes, begin, end = args[:4]
    strides = args[4] if len(args) > 4 else [1] * len(axes)
    rank = len(x.shape)
    b, e, s = [0] * rank, [None] * rank, [1] * rank
    for ax, bb, ee, ss in zip(axes, begin, end, strides):
        ax = ax % rank
        b[ax], e[ax], s[ax] = bb, ee, ss
    return em("slice", x, begin=tuple(b), end=tuple(e), step=tuple(s))


def _clip(em, c, args):
    x, lo, hi = args
    return em("clip", x, min=lo, max=hi)


def _pad(em, c, args):
    a = c.attrs
    width = _attr_ints(a.pad_width)
    rank = len(args[0].shape)
    pads = width[0::2] + width[1::2]
    assert len(pads) == 2 * rank
    value = float(args[1]) if len(args) > 1 else float(getattr(a, "pad_value", 0.0) or 0.0)
    # Relax's legalization pads with the constant for any mode but these three
    mode = {v: k for k, v in _PAD_MODES.items()}.get(str(a.pad_mode), "constant")
    return em("pad", args[0], pads=tuple(pads), mode=mode, value=value)


def _split(em, c, args):
    sizes = [int(v.shape[int(c.attrs.axis)]) for v in _out_types(c)]
    return em("split", args[0], axis=int(c.attrs.axis), sizes=tuple(sizes))


def _silu(em, c, args):
    return em("mul", args[0], em("sigmoid", args[0]))


def _softplus(em, c, args):
    beta = float(c.attrs.beta)   # above the threshold Relax returns x, as log1p(exp(x)) does in float
    if beta == 1.0:
        return em("softplus", args[0])
    return em("div", em("softplus", em("mul", args[0], beta)), beta)


def _filled(fill):
    def f(em, c, args):   # a broadcast scalar, of the call's result type
        shape, dt = _out_shape(c), str(c.ty.dtype)
        return em("broadcast_to", em.wrap(em.constant(np.array(fill, dtype=dt))), shape=tuple(shape))
    return f


def _dropout(em, c, args):   # inference: the identity, and no mask
    return (args[0], None)


def _adaptive_avg_pool2d(em, c, args):
    return em("global_avg_pool", args[0])


def _cumsum(em, c, args):
    return em("cumsum", args[0], axis=int(c.attrs.axis))


def _astype(em, c, args):
    return em("cast", args[0], dtype=to_dtype(str(c.attrs.dtype)))


def _flatten(em, c, args):
    return em("reshape", args[0], shape=(-1,))


def _tile(em, c, args):
    return em("tile", args[0], repeats=tuple(_attr_ints(c.attrs.repeats)))


def _expand_dims(em, c, args):
    return em("expand_dims", args[0], axis=tuple(_attr_ints(c.attrs.axis)))


def _squeeze(em, c, args):
    axis = _attr_ints(c.attrs.axis)
    return em("squeeze", args[0], axis=tuple(axis) if axis is not None else
              tuple(i for i, d in enumerate(args[0].shape) if d == 1))


def _concat(em, c, args):
    return em("concatenate", list(args[0]), axis=int(c.attrs.axis) if c.attrs.axis is not None else 0)


def _softmax(op):
    return lambda em, c, args: em(op, args[0], axis=int(c.attrs.axis))


def _gelu(approximate):
    return lambda em, c, args: em("gelu", args[0], approximate=approximate)


def _leaky(em, c, args):
    return em("leaky_relu", args[0], alpha=float(c.attrs.alpha))


def _matmul(em, c, args):
    if c.attrs.out_dtype is not None and str(c.attrs.out_dtype) not in ("", "void", str(args[0].dtype)):
        return em("matmul", *[em("cast", x, dtype=to_dtype(str(c.attrs.out_dtype))) for x in args])
    return em("matmul", *args)


FROM_RELAX = {
    **{f"relax.{k}": _binary(v) for k, v in {"add": "add", "subtract": "sub", "multiply": "mul",
                                              "power": "pow", "maximum": "maximum", "minimum": "minimum",
                                              "less": "less", "greater": "greater", "equal": "equal"}.items()},
    "relax.divide": _divide(False), "relax.floor_divide": _divide(True),
    "relax.less_equal": _compare_or("less"), "relax.greater_equal": _compare_or("greater"),
    "relax.where": _binary("where"),
    **{f"relax.{k}": _unary(v) for k, v in {"sigmoid": "sigmoid", "tanh": "tanh", "exp": "exp", "log": "log",
                                             "sqrt": "sqrt", "rsqrt": "rsqrt", "negative": "neg", "abs": "abs",
                                             "erf": "erf", "floor": "floor", "ceil": "ceil", "sin": "sin",
                                             "cos": "cos", "nn.relu": "relu"}.items()},
    "relax.nn.gelu": _gelu("none"), "relax.nn.gelu_tanh": _gelu("tanh"), "relax.nn.leakyrelu": _leaky,
    "relax.nn.silu": _silu, "relax.nn.softplus": _softplus,
    "relax.nn.softmax": _softmax("softmax"), "relax.nn.log_softmax": _softmax("log_softmax"),
    "relax.matmul": _matmul,
    "relax.nn.conv1d": _conv(1), "relax.nn.conv2d": _conv(2), "relax.nn.conv3d": _conv(3),
    **{f"relax.nn.{p}{d}d": _pool(op) for p, op in (("max_pool", "max_pool"), ("avg_pool", "avg_pool"))
       for d in (1, 2, 3)},
    "relax.nn.adaptive_avg_pool2d": _adaptive_avg_pool2d,
    "relax.nn.batch_norm": _batch_norm, "relax.nn.layer_norm": _layer_norm, "relax.nn.dropout": _dropout,
    **{f"relax.{k}": _reduce(k) for k in _REDUCE},
    "relax.argmax": _arg("argmax"), "relax.argmin": _arg("argmin"),
    "relax.reshape": _shape_op("reshape"), "relax.broadcast_to": _shape_op("broadcast_to"), "relax.flatten": _flatten,
    "relax.permute_dims": _permute, "relax.concat": _concat, "relax.stack": _stack,
    "relax.expand_dims": _expand_dims, "relax.squeeze": _squeeze, "relax.take": _take,
    "relax.strided_slice": _strided_slice, "relax.astype": _astype, "relax.clip": _clip, "relax.nn.pad": _pad,
    "relax.zeros_like": _filled(0), "relax.ones_like": _filled(1), "relax.zeros": _filled(0), "relax.ones": _filled(1),
    "relax.split": _split, "relax.tile": _tile, "relax.cumsum": _cumsum,
}
"""The Relax ops ``from_relax`` imports, by their registered names."""


def _out_types(c):
    ty = c.ty
    fields = getattr(ty, "fields", None)
    return list(fields) if fields is not None else [ty]


def _out_shape(c):
    shape = c.ty.shape
    if shape is None or not hasattr(shape, "values"):
        raise RelaxImportError(f"{c.op.name}: the result shape is not static")
    return [int(d) for d in shape.values]


def _import_refusals(tvm, relax, fn) -> list[str]:
    """Every op (and construct) of ``fn`` that from_relax does not import."""
    bad = []
    body = fn.body
    if not isinstance(body, relax.SeqExpr):
        return ["a function body that is not a sequence of binding blocks"]
    for block in body.blocks:
        for b in block.bindings:
            if not isinstance(b, relax.VarBinding):
                bad.append(f"{type(b).__name__} (binding of {b.var.name})")
                continue
            v = b.value
            if isinstance(v, relax.Call):
                if not isinstance(v.op, tvm.ir.Op):
                    bad.append(f"a call of {v.op} (at {b.var.name})")
                elif v.op.name not in FROM_RELAX:
                    bad.append(v.op.name)
                elif v.op.name.startswith("relax.nn.") and not _layout_ok(v):
                    bad.append(f"{v.op.name} (layout other than NC..., OI...)")
                elif v.op.name == "relax.nn.batch_norm" and (int(v.attrs.axis) != 1 or bool(v.attrs.training)
                                                             or not v.attrs.center or not v.attrs.scale):
                    bad.append("relax.nn.batch_norm (axis other than 1, training, or center/scale off)")
                elif v.op.name == "relax.nn.adaptive_avg_pool2d" and v.attrs.output_size is not None and \
                        any(int(s) != 1 for s in v.attrs.output_size):
                    bad.append("relax.nn.adaptive_avg_pool2d (output size other than 1)")
                elif v.op.name == "relax.cumsum" and (v.attrs.axis is None or bool(v.attrs.exclusive)):
                    bad.append("relax.cumsum (flattened or exclusive)")
                elif v.op.name == "relax.nn.layer_norm" and not _trailing(v):
                    bad.append("relax.nn.layer_norm (axes not the trailing ones, or without center/scale)")
            elif not isinstance(v, (relax.Var, relax.Tuple, relax.TupleGetItem, relax.ShapeExpr,
                                    tvm.ir.expr.Constant)):
                bad.append(f"{type(v).__name__} (binding of {b.var.name})")
    return bad


def _layout_ok(c) -> bool:
    for key in ("data_layout", "layout"):
        lay = getattr(c.attrs, key, None) if c.attrs is not None else None
        if lay is not None and not str(lay).startswith("NC"):
            return False
    for key in ("out_layout",):
        lay = getattr(c.attrs, key, None) if c.attrs is not None else None
        if lay is not None and str(lay) and not str(lay).startswith("NC"):
            return False
    lay = getattr(c.attrs, "kernel_layout", None) if c.attrs is not None else None
    return lay is None or str(lay).startswith("OI")


def _trailing(c) -> bool:
    rank = len(c.args[0].ty.shape.values) if hasattr(c.args[0].ty.shape, "values") else None
    if rank is None or not c.attrs.center or not c.attrs.scale:
        return False
    axes = sorted(int(a) % rank for a in c.attrs.axes)
    return axes == list(range(axes[0], rank))


_SAFE = re.compile(r"[^A-Za-z0-9_.]")


def _safe_name(name: str, taken: set) -> str:
    base = _SAFE.sub("_", name) or "x"
    out, i = base, 1
    while out in taken:
        out, i = f"{base}_{i}", i + 1
    taken.add(out)
    return out


def from_relax(mod, name: str = "main") -> Graph:
    """The Relax function ``name`` of ``mod`` (a ``tvm.IRModule``, or a ``relax.Function``)
    as an mlc Graph: tensor parameters with static shapes become inputs, bindings become
    ops, constants stay constants, the returned tensor (or tuple of tensors) the outputs."""
    tvm, relax = _tvm()
    fn = mod[name] if isinstance(mod, tvm.IRModule) else mod
    if not isinstance(fn, relax.Function):
        raise RelaxImportError(f"{name} is a {type(fn).__name__}, not a Relax function")
    bad = _import_refusals(tvm, relax, fn)
    if bad:
        raise RelaxImportError("the Relax function has what mlc does not import: " + "; ".join(dict.fromkeys(bad)))

    em = Emitter(_SAFE.sub("_", name) or "main")
    env: dict = {}
    taken: set = set()
    for p in fn.params:
        ty = p.ty
        shape = getattr(ty, "shape", None)
        if not hasattr(shape, "values"):
            raise RelaxImportError(f"parameter {p.name}: not a tensor with a static shape ({ty})")
        t = TensorType(tuple(int(d) for d in shape.values), to_dtype(str(ty.dtype)))
        env[p] = em.input(_safe_name(p.name, taken), t)

    def value(x):
        if isinstance(x, relax.Var):
            return env[x]
        if isinstance(getattr(x, "value", None), (bool, int, float)):   # IntImm, FloatImm, PrimValue
            return x.value
        if isinstance(x, tvm.ir.expr.Constant):
            return em.wrap(em.constant(np.ascontiguousarray(x.value.numpy())))
        if isinstance(x, relax.Tuple):
            return tuple(value(f) for f in x.fields)
        if isinstance(x, relax.TupleGetItem):
            return value(x.tuple_value)[int(x.index)]
        if isinstance(x, relax.ShapeExpr):
            return tuple(int(d) for d in x.values)
        if isinstance(getattr(getattr(x, "value", None), "value", None), (bool, int, float)):
            return x.value.value
        raise RelaxImportError(f"an operand {type(x).__name__} ({x}) mlc does not import")

    for block in fn.body.blocks:
        for b in block.bindings:
            v = b.value
            if isinstance(v, relax.Call):
                out = FROM_RELAX[v.op.name](em, v, [value(a) for a in v.args])
                _check_types(v, out, b.var.name)
            else:
                out = value(v)
            env[b.var] = out
    result = value(fn.body.body)
    results = list(result) if isinstance(result, tuple) else [result]
    if any(not isinstance(r, Sym) for r in results):
        raise RelaxImportError("the function returns something other than tensors")
    return em.build(results)


def _check_types(call, out, where):
    """mlc's type rules agree with Relax's on each result (a difference is a mapping bug)."""
    outs = list(out) if isinstance(out, tuple) else [out]
    for ty, o in zip(_out_types(call), outs):
        if o is None or not hasattr(getattr(ty, "shape", None), "values"):
            continue
        want = (tuple(int(d) for d in ty.shape.values), str(ty.dtype))
        got = (tuple(o.shape), o.value.type.dtype.name)
        if want != got:
            raise RelaxImportError(f"{call.op.name} at {where}: mlc computes {got}, Relax says {want}")
