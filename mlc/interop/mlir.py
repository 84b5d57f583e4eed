"""mlc graphs out as MLIR: ``to_mlir(fn_or_graph, *example_args, level="graph"|"loop")``.

    text = mlc.interop.to_mlir(lambda x, w: mlc.relu(x @ w), x, w)

At ``level="graph"`` the graph becomes one ``func.func`` on tensors in upstream
dialects: ``linalg`` named ops where upstream has them (``matmul``,
``conv_2d_nchw_fchw`` and its grouped form, ``pooling_nchw_max``/``_sum``,
``transpose``, ``fill``), ``linalg.generic`` with ``arith``/``math`` bodies for
elementwise ops (numpy broadcasting through the indexing maps), reductions and the
composite ops (softmax, layer/batch norm, the activations), ``tensor`` for shapes
(``collapse_shape``/``expand_shape``, ``extract_slice``, ``insert_slice``, ``pad``)
and ``arith.constant`` dense tensors for constants; control flow is ``scf`` on tensors
(``scan`` an ``scf.for``, ``while_loop`` an ``scf.while``, ``cond`` an ``scf.if``). At
``level="loop"``
(``mlir_loop.py``) the compiled, scheduled loop nests become ``scf`` + ``memref``.

The module is built with xDSL's IR builders and printed by xDSL; upstream
``mlir-opt`` verifies it, and lowered with upstream passes it runs in
``mlir-cpu-runner`` with mlc's results (tests/interop/test_mlir.py). An op with no
mapping is refused: every unsupported op of the graph is named at once, with where it
was traced.
"""
from __future__ import annotations

import io
from typing import Callable

import numpy as np

from ..frontend.trace import trace
from ..ir import types as T
from ..ir.graph import Graph, Node, Value, walk_nodes


class MlirExportError(ValueError):
    """The graph holds ops this exporter cannot express in MLIR; the message names them all."""


def _x():
    """The xDSL modules, imported on first use (the ``mlir`` extra)."""
    try:
        import xdsl  # noqa: F401
    except ImportError:
        raise ImportError("MLIR export needs xDSL: pip install 'mlc[mlir]'") from None
    from . import _xdsl
    return _xdsl


# ----------------------------------------------------------------------------- scalar bodies

class _Scalar:
    """Builds arith/math ops on scalars inside a linalg body (the caller holds the builder)."""

    def __init__(self, x, dtype: T.DType):
        self.x = x
        self.dtype = dtype

    @property
    def fp(self) -> bool:
        return self.dtype.is_float

    def const(self, value, dtype: T.DType | None = None):
        x = self.x
        dt = dtype or self.dtype
        ty = x.elem_type(dt)
        if dt.is_float:
            attr = x.FloatAttr(float(value), ty)
        else:
            attr = x.IntegerAttr(int(value), ty)
        return x.arith.ConstantOp(attr, ty).result

    def bin(self, op: str, a, b):
        x, ar = self.x, self.x.arith
        if self.fp:
            cls = {"add": ar.AddfOp, "sub": ar.SubfOp, "mul": ar.MulfOp, "div": ar.DivfOp,
                   "max": ar.MaximumfOp, "min": ar.MinimumfOp, "pow": x.math.PowFOp}[op]
        else:
            u = self.dtype.kind == "uint"
            cls = {"add": ar.AddiOp, "sub": ar.SubiOp, "mul": ar.MuliOp,
                   "div": ar.DivUIOp if u else ar.DivSIOp,
                   "max": ar.MaxUIOp if u else ar.MaxSIOp, "min": ar.MinUIOp if u else ar.MinSIOp,
                   "and": ar.AndIOp, "or": ar.OrIOp, "xor": ar.XOrIOp, "shl": ar.ShLIOp,
                   "shr": ar.ShRUIOp if u else ar.ShRSIOp}[op]
        return cls(a, b).result

    def cmp(self, pred: str, a, b):
        ar = self.x.arith
        if self.fp:
            return ar.CmpfOp(a, b, {"lt": "olt", "gt": "ogt", "eq": "oeq", "le": "ole", "ge": "oge"}[pred]).result
        u = self.dtype.kind in ("uint", "bool")
        sp = {"lt": "ult" if u else "slt", "gt": "ugt" if u else "sgt", "eq": "eq",
              "le": "ule" if u else "sle", "ge": "uge" if u else "sge"}[pred]
        return ar.CmpiOp(a, b, sp).result

    def select(self, c, a, b):
        return self.x.arith.SelectOp(c, a, b).result

    def neg(self, a):
        if self.fp:
            return self.x.arith.NegfOp(a).result
        return self.bin("sub", self.const(0), a)

    def un(self, name: str, a):
        m = self.x.math
        cls = {"exp": m.ExpOp, "log": m.LogOp, "tanh": m.TanhOp, "sqrt": m.SqrtOp, "rsqrt": m.RsqrtOp,
               "erf": m.ErfOp, "sin": m.SinOp, "cos": m.CosOp, "floor": m.FloorOp, "ceil": m.CeilOp,
               "abs": m.AbsFOp, "round": m.RoundEvenOp, "log1p": m.Log1pOp, "acos": m.AcosOp,
               "asin": m.AsinOp, "atan": m.AtanOp}[name]
        return cls(a).result

    def cast(self, a, src: T.DType, dst: T.DType):
        """``a`` (of ``src``) converted as numpy's astype does (floats to ints truncate)."""
        x, ar = self.x, self.x.arith
        ty = x.elem_type(dst)
        if src.bits == dst.bits and src.is_float == dst.is_float and src.kind == dst.kind:
            return a
        if src.is_bool:
            if dst.is_float:
                return ar.UIToFPOp(a, ty).result
            return ar.ExtUIOp(a, ty).result
        if dst.is_bool:
            zero = _Scalar(x, src).const(0)
            return (ar.CmpfOp(a, zero, "une") if src.is_float else ar.CmpiOp(a, zero, "ne")).result
        if src.is_float and dst.is_float:
            return (ar.ExtFOp if dst.bits > src.bits else ar.TruncFOp)(a, ty).result
        if src.is_float:
            return (ar.FPToUIOp if dst.kind == "uint" else ar.FPToSIOp)(a, ty).result
        if dst.is_float:
            return (ar.UIToFPOp if src.kind == "uint" else ar.SIToFPOp)(a, ty).result
        if dst.bits > src.bits:
            return (ar.ExtUIOp if src.kind == "uint" else ar.ExtSIOp)(a, ty).result
        if dst.bits < src.bits:
            return ar.TruncIOp(a, ty).result
        return a


# ----------------------------------------------------------------------------- the graph exporter

class _T:
    """A tensor SSA value with mlc's shape and dtype."""

    __slots__ = ("v", "shape", "dtype")

    def __init__(self, v, shape, dtype: T.DType):
        self.v = v
        self.shape = tuple(shape)
        self.dtype = dtype

    @property
    def rank(self) -> int:
        return len(self.shape)


def _unary_fns():
    def act(f):
        return f

    U = {
        "relu": lambda s, a: s.bin("max", a, s.const(0)),
        "neg": lambda s, a: s.neg(a),
        "copy": lambda s, a: a,
        "sigmoid": lambda s, a: s.bin("div", s.const(1), s.bin("add", s.const(1), s.un("exp", s.neg(a)))),
        "softsign": lambda s, a: s.bin("div", a, s.bin("add", s.const(1), s.un("abs", a))),
        "softplus": lambda s, a: s.bin("add", s.bin("max", a, s.const(0)),
                                       s.un("log1p", s.un("exp", s.neg(s.un("abs", a))))),
        "abs": lambda s, a: s.un("abs", a) if s.fp else s.select(s.cmp("lt", a, s.const(0)), s.neg(a), a),
        "bitwise_not": lambda s, a: s.bin("xor", a, s.const(-1)),
        "hard_swish": lambda s, a: s.bin("mul", a, _clip01(s, s.bin("add", s.bin("div", a, s.const(6)),
                                                                        s.const(0.5)))),
        "mish": lambda s, a: s.bin("mul", a, s.un("tanh", U["softplus"](s, a))),
    }
    for name in ("exp", "log", "tanh", "sqrt", "rsqrt", "erf", "sin", "cos", "floor", "ceil", "round",
                 "acos", "asin", "atan"):
        U[name] = (lambda n: lambda s, a: s.un(n, a))(name)
    return U


def _clip01(s, a):
    return s.bin("min", s.bin("max", a, s.const(0)), s.const(1))


def _param_fns():
    """Elementwise ops with attributes: ``fn(scalar builder, x, **attrs)``."""
    def elu(s, a, alpha):
        return s.select(s.cmp("lt", a, s.const(0)), s.bin("mul", s.const(alpha), s.bin("sub", s.un("exp", a),
                                                                                       s.const(1))), a)

    def selu(s, a, alpha, gamma):
        neg = s.bin("mul", s.const(gamma), s.bin("sub", s.bin("mul", s.const(alpha), s.un("exp", a)), s.const(alpha)))
        return s.select(s.cmp("le", a, s.const(0)), neg, s.bin("mul", s.const(gamma), a))

    def celu(s, a, alpha):
        e = s.bin("mul", s.const(alpha), s.bin("sub", s.un("exp", s.bin("div", a, s.const(alpha))), s.const(1)))
        return s.bin("add", s.bin("max", a, s.const(0)), s.bin("min", s.const(0), e))

    def gelu(s, a, approximate):
        half = s.bin("mul", s.const(0.5), a)
        if approximate == "tanh":
            cube = s.bin("mul", s.bin("mul", a, a), a)
            inner = s.bin("mul", s.const(np.sqrt(2 / np.pi)), s.bin("add", a, s.bin("mul", s.const(0.044715), cube)))
            return s.bin("mul", half, s.bin("add", s.const(1), s.un("tanh", inner)))
        return s.bin("mul", half, s.bin("add", s.const(1), s.un("erf", s.bin("mul", a, s.const(1 / np.sqrt(2))))))

    def clip(s, a, min, max):
        if min is not None:
            a = s.bin("max", a, s.const(min))
        if max is not None:
            a = s.bin("min", a, s.const(max))
        return a

    return {
        "leaky_relu": lambda s, a, alpha: s.select(s.cmp("lt", a, s.const(0)), s.bin("mul", s.const(alpha), a), a),
        "elu": elu, "selu": selu, "celu": celu, "gelu": gelu, "clip": clip,
        "hard_sigmoid": lambda s, a, alpha, beta: _clip01(s, s.bin("add", s.bin("mul", s.const(alpha), a),
                                                                   s.const(beta))),
        "thresholded_relu": lambda s, a, alpha: s.select(s.cmp("gt", a, s.const(alpha)), a, s.const(0)),
    }


_BINARY = {"add": "add", "sub": "sub", "mul": "mul", "div": "div", "maximum": "max", "minimum": "min",
           "pow": "pow", "bitwise_and": "and", "bitwise_or": "or", "bitwise_xor": "xor",
           "left_shift": "shl", "right_shift": "shr"}
_COMPARE = {"less": "lt", "greater": "gt", "equal": "eq"}
_REDUCE = {"sum": "add", "mean": "add", "max": "max", "min": "min", "prod": "mul"}
_UNARY = _unary_fns()
_PARAM = _param_fns()


def _identity(kind: str, dt: T.DType):
    if kind == "add":
        return 0
    if kind == "mul":
        return 1
    if dt.is_float:
        return -np.inf if kind == "max" else np.inf
    info = np.iinfo(dt.np) if not dt.is_bool else None
    if info is None:
        return 0 if kind == "max" else 1
    return info.min if kind == "max" else info.max


class _Exporter:
    def __init__(self, x):
        self.x = x

    # --- building blocks ------------------------------------------------------------------------

    def empty(self, shape, dtype):
        return self.x.tensor.EmptyOp([], self.x.tensor_type(dtype, shape)).tensor

    def filled(self, shape, dtype, value):
        x = self.x
        c = _Scalar(x, dtype).const(value)
        return x.linalg.FillOp([c], [self.empty(shape, dtype)], [x.tensor_type(dtype, shape)]).results[0]

    def generic(self, ins: list[tuple[_T, tuple]], out_shape, out_dtype, body: Callable, n_loops: int | None = None,
                reduction_dims=(), init=None, out_map=None, scalar_dtype=None):
        """A linalg.generic over ``n_loops`` loops (the output's rank by default). Each input
        comes with its indexing map's results: a loop index (int), the constant 0 (``None``)
        or an affine expression (built from ``x.d(i)``). ``body(scalar builder, *scalars, acc)``
        returns the new element; reductions receive the accumulator ``init`` holds."""
        x = self.x
        n = len(out_shape) if n_loops is None else n_loops
        maps = [x.affine_map(n, [x.expr(r) for r in idx]) for _, idx in ins]
        maps.append(x.affine_map(n, [x.expr(r) for r in (out_map if out_map is not None else range(len(out_shape)))]))
        its = [x.reduction() if i in reduction_dims else x.parallel() for i in range(n)]
        out_ty = x.tensor_type(out_dtype, out_shape)
        dest = init if init is not None else self.empty(out_shape, out_dtype)
        block = x.Block(arg_types=[x.elem_type(t.dtype) for t, _ in ins] + [x.elem_type(out_dtype)])
        s = _Scalar(x, scalar_dtype or (ins[0][0].dtype if ins else out_dtype))
        with x.ImplicitBuilder(block):
            r = body(s, *block.args)
            x.linalg.YieldOp(r)
        op = x.linalg.GenericOp([t.v for t, _ in ins], [dest], x.Region(block), maps, its, [out_ty])
        return _T(op.results[0], out_shape, out_dtype)

    def ew(self, fn, args: list[_T], out_shape, out_dtype, scalar_dtype=None):
        """Elementwise ``fn`` over ``args`` broadcast numpy-style to ``out_shape``."""
        r = len(out_shape)
        ins = []
        for a in args:
            off = r - a.rank
            ins.append((a, tuple(None if d == 1 and out_shape[off + i] != 1 else off + i
                                 for i, d in enumerate(a.shape))))
        return self.generic(ins, out_shape, out_dtype, lambda s, *xs: fn(s, *xs[:len(args)]),
                            scalar_dtype=scalar_dtype)

    def reduce(self, a: _T, axes, kind: str, keepdims: bool) -> _T:
        axes = sorted(axes)
        kept = [d for d in range(a.rank) if d not in axes]
        out_shape = tuple(a.shape[d] for d in kept)
        init = self.filled(out_shape, a.dtype, _identity(kind, a.dtype))
        out = self.generic([(a, tuple(range(a.rank)))], out_shape, a.dtype,
                           lambda s, v, acc: s.bin(kind, acc, v), n_loops=a.rank, reduction_dims=axes,
                           init=init, out_map=tuple(kept))
        if keepdims:
            out = self.reshape(out, tuple(1 if d in axes else a.shape[d] for d in range(a.rank)))
        return out

    def reshape(self, a: _T, shape) -> _T:
        shape = tuple(shape)
        if shape == a.shape:
            return a
        x = self.x
        if a.rank == 0 or len(shape) == 0:
            flat = a
        elif a.rank == 1:
            flat = a
        else:
            flat_shape = (int(np.prod(a.shape)),)
            op = x.tensor.CollapseShapeOp(operands=[a.v], result_types=[x.tensor_type(a.dtype, flat_shape)],
                                          properties={"reassociation": x.reassoc([list(range(a.rank))])})
            flat = _T(op.result, flat_shape, a.dtype)
        if len(shape) == 1 and flat.rank == 1:
            return flat
        if len(shape) == 0:   # every dimension is 1
            op = x.tensor.CollapseShapeOp(operands=[flat.v], result_types=[x.tensor_type(a.dtype, ())],
                                          properties={"reassociation": x.reassoc([])})
            return _T(op.result, (), a.dtype)
        groups = [list(range(len(shape)))] if flat.rank == 1 else []
        op = x.tensor.ExpandShapeOp(flat.v, [], x.reassoc(groups), list(shape), x.tensor_type(a.dtype, shape))
        return _T(op.result, shape, a.dtype)

    def pad(self, a: _T, low, high, value) -> _T:
        if not any(low) and not any(high):
            return a
        x = self.x
        shape = tuple(d + lo + hi for d, lo, hi in zip(a.shape, low, high))
        block = x.Block(arg_types=[x.IndexType()] * a.rank)
        with x.ImplicitBuilder(block):
            x.tensor.YieldOp(_Scalar(x, a.dtype).const(value))
        op = x.tensor.PadOp(a.v, [], [], x.Region(block), list(low), list(high), x.tensor_type(a.dtype, shape))
        return _T(op.result, shape, a.dtype)

    def extract(self, a: _T, offsets, sizes, strides) -> _T:
        x = self.x
        op = x.tensor.ExtractSliceOp.from_static_parameters(a.v, list(offsets), list(sizes), list(strides))
        return _T(op.result, sizes, a.dtype)

    def const(self, value: np.ndarray) -> _T:
        x = self.x
        if value.dtype == np.bool_ and value.size > 1:   # i1 data: as i8 (its hex form differs between tools)
            i8 = self.const(value.astype(np.int8))
            return self.ew(lambda s, v: s.cast(v, T.int8, T.bool_), [i8], value.shape, T.bool_)
        dt = T.dtype(value.dtype)
        ty = x.tensor_type(dt, value.shape)
        return _T(x.arith.ConstantOp(x.dense(value, ty), ty).result, value.shape, dt)

    # --- ops ------------------------------------------------------------------------------------

    def node(self, n: Node, ins: list[_T]) -> list[_T]:
        a = n.attrs
        op = n.op
        outs = n.outputs
        oshape, odt = (outs[0].shape, outs[0].dtype) if outs else ((), None)
        if op == "constant":
            return [self.const(np.asarray(a["value"]))]
        if op in _BINARY:
            kind = _BINARY[op]
            dt = ins[0].dtype
            return [self.ew(lambda s, p, q: s.bin(kind, s.cast(p, ins[0].dtype, odt), s.cast(q, ins[1].dtype, odt)),
                            ins, oshape, odt, scalar_dtype=odt if dt != odt else None)]
        if op in _COMPARE:
            pred = _COMPARE[op]
            return [self.ew(lambda s, p, q: s.cmp(pred, p, q), ins, oshape, odt)]
        if op == "where":
            return [self.ew(lambda s, c, p, q: s.select(c, p, q), ins, oshape, odt, scalar_dtype=odt)]
        if op in _UNARY:
            return [self.ew(_UNARY[op], ins, oshape, odt)]
        if op in _PARAM:
            return [self.ew(lambda s, v: _PARAM[op](s, v, **a), ins, oshape, odt)]
        if op == "cast":
            src = ins[0].dtype
            return [self.ew(lambda s, v: s.cast(v, src, odt), ins, oshape, odt)]
        if op == "prelu":
            return [self.ew(lambda s, v, k: s.select(s.cmp("lt", v, s.const(0)), s.bin("mul", k, v), v),
                            ins, oshape, odt)]
        if op in _REDUCE:
            x0 = ins[0]
            axes = range(x0.rank) if a["axis"] is None else [d % max(x0.rank, 1) for d in _tuple(a["axis"])]
            r = self.reduce(x0, axes, _REDUCE[op], a["keepdims"])
            if op == "mean":
                count = int(np.prod([x0.shape[d] for d in axes]))
                r = self.ew(lambda s, v: s.bin("div", v, s.const(count)), [r], r.shape, r.dtype)
            return [r]
        if op in ("global_avg_pool", "global_max_pool"):
            x0 = ins[0]
            axes = range(2, x0.rank)
            r = self.reduce(x0, axes, "add" if op == "global_avg_pool" else "max", True)
            if op == "global_avg_pool":
                count = int(np.prod(x0.shape[2:]))
                r = self.ew(lambda s, v: s.bin("div", v, s.const(count)), [r], r.shape, r.dtype)
            return [r]
        if op in ("softmax", "log_softmax"):
            return [self.softmax(ins[0], a["axis"] % ins[0].rank, op == "log_softmax")]
        if op == "layer_norm":
            return [self.layer_norm(*ins, a["axis"] % ins[0].rank, a["epsilon"])]
        if op == "batch_norm":
            return [self.batch_norm(*ins, a["epsilon"])]
        if op == "matmul":
            return [self.matmul(ins[0], ins[1], oshape)]
        if op == "conv":
            return [self.conv(n, ins[0], ins[1])]
        if op in ("max_pool", "avg_pool"):
            return [self.pool(n, ins[0])]
        if op in ("reshape", "expand_dims", "squeeze"):
            return [self.reshape(ins[0], oshape)]
        if op == "transpose":
            x = self.x
            perm = [int(p) for p in a["axes"]]
            t = x.linalg.TransposeOp(ins[0].v, self.empty(oshape, odt), x.DenseArrayBase.from_list(x.i64, perm),
                                     x.tensor_type(odt, oshape))
            return [_T(t.results[0], oshape, odt)]
        if op == "broadcast_to":
            return [self.ew(lambda s, v: v, ins, oshape, odt)]
        if op == "slice":
            x0 = ins[0]
            if all(st > 0 for st in a["step"]):
                return [self.extract(x0, _slice_offsets(x0.shape, a), oshape, a["step"])]
            x = self.x   # a reversed axis: read through the map begin + i * step
            idx = tuple(x.d(i) * st + b for i, (b, st) in enumerate(zip(a["begin"], a["step"])))
            return [self.generic([(x0, idx)], oshape, odt, lambda s, v, _acc: v)]
        if op == "tile":
            x = self.x   # read through the map i mod n on each repeated axis
            idx = tuple(x.d(i) % d if r != 1 else i for i, (d, r) in enumerate(zip(ins[0].shape, a["repeats"])))
            return [self.generic([(ins[0], idx)], oshape, odt, lambda s, v, _acc: v)]
        if op == "split":
            axis = a["axis"] % ins[0].rank
            res, start = [], 0
            for o in outs:
                off = [0] * ins[0].rank
                off[axis] = start
                res.append(self.extract(ins[0], off, o.shape, [1] * ins[0].rank))
                start += o.shape[axis]
            return res
        if op == "concatenate":
            axis = a["axis"] % len(oshape)
            x = self.x
            dest, start = self.empty(oshape, odt), 0
            for t in ins:
                off = [0] * len(oshape)
                off[axis] = start
                dest = x.tensor.InsertSliceOp.from_static_parameters(t.v, dest, off, list(t.shape)).result
                start += t.shape[axis]
            return [_T(dest, oshape, odt)]
        if op in ("argmax", "argmin"):
            return [self.argext(ins[0], a["axis"] % ins[0].rank, op == "argmax", a["keepdims"],
                                a["select_last_index"])]
        if op == "cumsum":
            return [self.cumsum(ins[0], a["axis"] % ins[0].rank, a["exclusive"], a["reverse"])]
        if op == "lrn":
            return [self.lrn(ins[0], **a)]
        if op == "gather":
            return [self.gather(ins[0], ins[1], a["axis"] % max(ins[0].rank, 1), oshape)]
        if op == "gather_elements":
            return [self.gather(ins[0], ins[1], a["axis"] % ins[0].rank, oshape, elements=True)]
        if op == "cond":
            return self.cond(n, ins)
        if op == "while_loop":
            return self.while_loop(n, ins)
        if op == "scan":
            return self.scan(n, ins)
        if op == "pad":
            pads = list(a["pads"])
            r = ins[0].rank
            return [self.pad(ins[0], pads[:r], pads[r:], a["value"])]
        raise AssertionError(op)

    def argext(self, v: _T, axis: int, is_max: bool, keepdims: bool, last: bool) -> _T:
        """argmax/argmin: one linalg.generic with two outputs (the running extreme and its
        index, from ``linalg.index``), reducing over ``axis``."""
        x = self.x
        kept = [d for d in range(v.rank) if d != axis]
        shape = tuple(v.shape[d] for d in kept)
        vals = self.filled(shape, v.dtype, _identity("max" if is_max else "min", v.dtype))
        idxs = self.filled(shape, T.int64, 0)
        block = x.Block(arg_types=[x.elem_type(v.dtype), x.elem_type(v.dtype), x.elem_type(T.int64)])
        s = _Scalar(x, v.dtype)
        with x.ImplicitBuilder(block):
            e, acc, acc_i = block.args
            i = x.arith.IndexCastOp(x.linalg.IndexOp(axis).result, x.IntegerType(64)).result
            better = s.cmp(("ge" if last else "gt") if is_max else ("le" if last else "lt"), e, acc)
            x.linalg.YieldOp(s.select(better, e, acc), s.select(better, i, acc_i))
        maps = [x.affine_map(v.rank, [x.expr(d) for d in range(v.rank)])] + \
            [x.affine_map(v.rank, [x.expr(d) for d in kept])] * 2
        its = [x.reduction() if d == axis else x.parallel() for d in range(v.rank)]
        op = x.linalg.GenericOp([v.v], [vals, idxs], x.Region(block), maps, its,
                                [x.tensor_type(v.dtype, shape), x.tensor_type(T.int64, shape)])
        r = _T(op.results[1], shape, T.int64)
        return self.reshape(r, tuple(1 if d == axis else v.shape[d] for d in range(v.rank))) if keepdims else r

    def cumsum(self, v: _T, axis: int, exclusive: bool, reverse: bool) -> _T:
        """A reduction over a second loop ``j`` along ``axis``: out[.., i, ..] sums
        v[.., j, ..] where ``j <= i`` (``<`` exclusive; ``>=``/``>`` reversed)."""
        x = self.x
        r = v.rank
        pred = {(False, False): "le", (True, False): "lt", (False, True): "ge", (True, True): "gt"}[
            (exclusive, reverse)]

        def body(s, e, acc):
            i, j = x.linalg.IndexOp(axis).result, x.linalg.IndexOp(r).result
            take = _Scalar(x, T.int64).cmp(pred, j, i)
            return s.bin("add", acc, s.select(take, e, s.const(0)))
        idx = tuple(r if d == axis else d for d in range(r))
        return self.generic([(v, idx)], v.shape, v.dtype, body, n_loops=r + 1, reduction_dims=(r,),
                            init=self.filled(v.shape, v.dtype, 0), out_map=tuple(range(r)))

    def lrn(self, v: _T, size: int, alpha: float, beta: float, bias: float) -> _T:
        """Local response normalization: the squares summed over a window of channels
        (zero-padded; the window a loop read through the map c + k, its range given by an
        empty window tensor as in upstream's pooling), then
        x / (bias + alpha / size * sum) ** beta."""
        x = self.x
        before, after = (size - 1) // 2, -(-(size - 1) // 2)
        sq = self.ew(lambda s, p: s.bin("mul", p, p), [v], v.shape, v.dtype)
        padded = self.pad(sq, [0, before] + [0] * (v.rank - 2), [0, after] + [0] * (v.rank - 2), 0)
        r = v.rank
        idx = tuple(x.d(1) + x.d(r) if d == 1 else d for d in range(r))
        window = _T(self.empty((size,), v.dtype), (size,), v.dtype)   # gives the window loop its range
        total = self.generic([(padded, idx), (window, (r,))], v.shape, v.dtype,
                             lambda s, e, _w, acc: s.bin("add", acc, e), n_loops=r + 1, reduction_dims=(r,),
                             init=self.filled(v.shape, v.dtype, 0), out_map=tuple(range(r)))
        return self.ew(lambda s, p, q: s.bin("div", p, s.bin("pow", s.bin("add", s.const(bias), s.bin(
            "mul", s.const(alpha / size), q)), s.const(beta))), [v, total], v.shape, v.dtype)

    def gather(self, data: _T, idx: _T, axis: int, oshape, elements: bool = False) -> _T:
        """A linalg.generic over the output reading ``data`` with ``tensor.extract`` (as
        torch-mlir writes embeddings): negative indices wrap, then clamp, as in mlc.
        ``elements`` (gather_elements): the index replaces the output's own position on
        ``axis`` only."""
        x = self.x
        r = 1 if elements else idx.rank
        n = data.shape[axis]

        def body(s, i, _acc):
            si = _Scalar(x, idx.dtype)
            i = si.select(si.cmp("lt", i, si.const(0)), si.bin("add", i, si.const(n)), i)
            i = si.bin("min", si.bin("max", i, si.const(0)), si.const(n - 1))
            at = x.arith.IndexCastOp(i, x.IndexType()).result
            pos = [x.linalg.IndexOp(d).result for d in range(axis)] + [at] + \
                [x.linalg.IndexOp(axis + r + d).result for d in range(data.rank - axis - 1)]
            return x.tensor.ExtractOp(data.v, pos, x.elem_type(data.dtype)).result
        imap = tuple(range(idx.rank)) if elements else tuple(range(axis, axis + r))
        return self.generic([(idx, imap)], oshape, data.dtype, body)

    # --- control flow: scf on tensors ------------------------------------------------------

    def inline(self, g: Graph, args: list[_T]) -> list[_T]:
        """``g``'s nodes written at the current insertion point on ``args``."""
        env = dict(zip(g.inputs, args))
        for node in g.nodes:
            env.update(zip(node.outputs, self.node(node, [env[v] for v in node.inputs])))
        return [env[v] for v in g.outputs]

    def region(self, g: Graph, args: list[_T], block=None, terminator=None):
        """A region whose block runs ``g`` on ``args`` and ends in ``terminator(results)``
        (``scf.yield`` by default)."""
        x = self.x
        block = block if block is not None else x.Block()
        with x.ImplicitBuilder(block):
            outs = self.inline(g, args)
            (terminator or (lambda vs: x.scf.YieldOp(*vs)))([o.v for o in outs])
        return x.Region(block)

    def scalar(self, t: _T):
        """The element of a 0-d tensor."""
        return self.x.tensor.ExtractOp(t.v, [], self.x.elem_type(t.dtype)).result

    def cond(self, n: Node, ins: list[_T]) -> list[_T]:
        x = self.x
        types = [x.tensor_type(o.dtype, o.shape) for o in n.outputs]
        op = x.scf.IfOp(self.scalar(ins[0]), types, self.region(n.attrs["true_body"], ins[1:]),
                        self.region(n.attrs["false_body"], ins[1:]))
        return [_T(r, o.shape, o.dtype) for r, o in zip(op.results, n.outputs)]

    def while_loop(self, n: Node, ins: list[_T]) -> list[_T]:
        """``scf.while``: the condition graph in the before region (``scf.condition``), the
        body in the after region, the carries as its arguments, the rest read from outside."""
        x = self.x
        k = n.attrs["num_carry"]
        carries, consts = ins[:k], ins[k:]
        types = [x.tensor_type(t.dtype, t.shape) for t in carries]
        before, after = x.Block(arg_types=types), x.Block(arg_types=types)
        wrap = lambda block: [_T(a, t.shape, t.dtype) for a, t in zip(block.args, carries)]  # noqa: E731
        cond_g, body_g = n.attrs["cond"], n.attrs["body"]
        with x.ImplicitBuilder(before):
            c = self.inline(cond_g, wrap(before) + consts)[0]
            x.scf.ConditionOp(self.scalar(c), *before.args)
        op = x.scf.WhileOp([t.v for t in carries], types, x.Region(before),
                           self.region(body_g, wrap(after) + consts, block=after))
        return [_T(r, t.shape, t.dtype) for r, t in zip(op.results, carries)]

    def scan(self, n: Node, ins: list[_T]) -> list[_T]:
        """``scf.for`` over the steps: carries and the stacked outputs as iteration
        arguments, each step's xs read with ``tensor.extract_slice`` at the step and its ys
        written with ``tensor.insert_slice``."""
        x = self.x
        a = n.attrs
        k, m, length = a["num_carry"], a["num_xs"], a["length"]
        carries, xs, consts = ins[:k], ins[k:k + m], ins[k + m:]
        ys = n.outputs[k:]
        accs = [_T(self.empty(o.shape, o.dtype), o.shape, o.dtype) for o in ys]
        state = carries + accs
        idx = x.IndexType()
        block = x.Block(arg_types=[idx] + [x.tensor_type(t.dtype, t.shape) for t in state])
        with x.ImplicitBuilder(block):
            i = block.args[0]
            if a["reverse"]:
                last = x.arith.ConstantOp(x.IntegerAttr(length - 1, idx), idx).result
                i = x.arith.SubiOp(last, i).result
            cur = [_T(v, t.shape, t.dtype) for v, t in zip(block.args[1:], state)]
            slices = [self.reshape(self.dynamic_slice(t, i), t.shape[1:]) for t in xs]
            outs = self.inline(a["body"], cur[:k] + slices + consts)
            stacked = [self.dynamic_insert(self.reshape(y, (1,) + y.shape), acc, i)
                       for y, acc in zip(outs[k:], cur[k:])]
            x.scf.YieldOp(*[t.v for t in outs[:k] + stacked])
        c = [x.arith.ConstantOp(x.IntegerAttr(v, idx), idx).result for v in (0, length, 1)]
        op = x.scf.ForOp(c[0], c[1], c[2], [t.v for t in state], block)
        return [_T(r, t.shape, t.dtype) for r, t in zip(op.results, state)]

    def dynamic_slice(self, t: _T, i) -> _T:
        """``t[i:i+1]`` along the leading axis, ``i`` an index value."""
        x = self.x
        sizes = (1,) + t.shape[1:]
        op = x.tensor.ExtractSliceOp.build(
            operands=[t.v, [i], [], []], result_types=[x.tensor_type(t.dtype, sizes)],
            properties={"static_offsets": x.DenseArrayBase.from_list(x.i64, [x.DYNAMIC_INDEX] + [0] * (t.rank - 1)),
                        "static_sizes": x.DenseArrayBase.from_list(x.i64, list(sizes)),
                        "static_strides": x.DenseArrayBase.from_list(x.i64, [1] * t.rank)})
        return _T(op.result, sizes, t.dtype)

    def dynamic_insert(self, src: _T, dest: _T, i) -> _T:
        x = self.x
        op = x.tensor.InsertSliceOp.build(
            operands=[src.v, dest.v, [i], [], []], result_types=[dest.v.type],
            properties={"static_offsets": x.DenseArrayBase.from_list(x.i64, [x.DYNAMIC_INDEX] + [0] * (dest.rank - 1)),
                        "static_sizes": x.DenseArrayBase.from_list(x.i64, list(src.shape)),
                        "static_strides": x.DenseArrayBase.from_list(x.i64, [1] * dest.rank)})
        return _T(op.result, dest.shape, dest.dtype)

    def softmax(self, v: _T, axis: int, log: bool) -> _T:
        m = self.reduce(v, [axis], "max", True)
        d = self.ew(lambda s, p, q: s.bin("sub", p, q), [v, m], v.shape, v.dtype)
        e = self.ew(lambda s, p: s.un("exp", p), [d], v.shape, v.dtype)
        z = self.reduce(e, [axis], "add", True)
        if log:
            return self.ew(lambda s, p, q: s.bin("sub", p, s.un("log", q)), [d, z], v.shape, v.dtype)
        return self.ew(lambda s, p, q: s.bin("div", p, q), [e, z], v.shape, v.dtype)

    def layer_norm(self, v: _T, scale: _T, bias: _T, axis: int, eps: float) -> _T:
        axes = list(range(axis, v.rank))
        count = int(np.prod(v.shape[axis:]))
        mean = self.ew(lambda s, p: s.bin("div", p, s.const(count)), [self.reduce(v, axes, "add", True)],
                       None or tuple(1 if d in axes else v.shape[d] for d in range(v.rank)), v.dtype)
        d = self.ew(lambda s, p, q: s.bin("sub", p, q), [v, mean], v.shape, v.dtype)
        sq = self.ew(lambda s, p: s.bin("mul", p, p), [d], v.shape, v.dtype)
        var = self.reduce(sq, axes, "add", True)
        return self.ew(lambda s, p, q, g, b: s.bin("add", s.bin("mul", s.bin(
            "mul", p, s.un("rsqrt", s.bin("add", s.bin("div", q, s.const(count)), s.const(eps)))), g), b),
            [d, var, scale, bias], v.shape, v.dtype)

    def batch_norm(self, v: _T, scale: _T, bias: _T, mean: _T, var: _T, eps: float) -> _T:
        ch = 1 if v.rank >= 2 else 0
        ins = [(v, tuple(range(v.rank)))] + [(p, (ch,)) for p in (scale, bias, mean, var)]
        return self.generic(ins, v.shape, v.dtype, lambda s, p, g, b, mu, va, _acc: s.bin("add", s.bin(
            "mul", s.bin("div", s.bin("sub", p, mu), s.un("sqrt", s.bin("add", va, s.const(eps)))), g), b))

    def matmul(self, p: _T, q: _T, oshape) -> _T:
        x = self.x
        dt = p.dtype
        if p.rank == 2 and q.rank == 2:
            init = self.filled(oshape, dt, 0)
            return _T(x.linalg.MatmulOp([p.v, q.v], [init]).results[0], oshape, dt)
        if p.rank == 3 and q.rank == 3 and p.shape[0] == q.shape[0]:
            init = self.filled(oshape, dt, 0)
            return _T(x.BatchMatmulOp([p.v, q.v], [init]).results[0], oshape, dt)
        # numpy matmul: 1-D operands gain (and lose) a unit axis; batch axes broadcast
        pr, qr = max(p.rank, 2), max(q.rank, 2)
        pv = self.reshape(p, (1,) + p.shape) if p.rank == 1 else p
        qv = self.reshape(q, q.shape + (1,)) if q.rank == 1 else q
        batch = np.broadcast_shapes(pv.shape[:-2], qv.shape[:-2])
        nb = len(batch)
        full = tuple(batch) + (pv.shape[-2], qv.shape[-1])
        i, j, k = nb, nb + 1, nb + 2

        def bmap(t, last2):
            off = nb - (t.rank - 2)
            return tuple(None if d == 1 and batch[off + a] != 1 else off + a for a, d in enumerate(t.shape[:-2])) + last2
        init = self.filled(full, dt, 0)
        r = self.generic([(pv, bmap(pv, (i, k))), (qv, bmap(qv, (k, j)))], full, dt,
                         lambda s, u, w, acc: s.bin("add", acc, s.bin("mul", u, w)), n_loops=nb + 3,
                         reduction_dims=(k,), init=init, out_map=tuple(range(nb + 2)))
        del pr, qr
        return self.reshape(r, oshape)

    def _window(self, n: Node, v: _T, pad_value):
        """``v`` padded for ``n``'s window (ONNX pads, auto_pad, ceil_mode's extra end), with
        the strides, dilations and kernel shape."""
        a = n.attrs
        sp = v.rank - 2
        k = list(a["kernel_shape"] or n.inputs[1].shape[2:])
        s = list(a["strides"] or [1] * sp)
        d = list(a["dilations"] or [1] * sp)
        out = n.outputs[0].shape[2:]
        pads = list(a["pads"] or [0] * (2 * sp))
        if a.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
            pads = [0] * (2 * sp)
            for i in range(sp):
                total = max((out[i] - 1) * s[i] + (k[i] - 1) * d[i] + 1 - v.shape[2 + i], 0)
                lo = total // 2 if a["auto_pad"] == "SAME_UPPER" else total - total // 2
                pads[i], pads[sp + i] = lo, total - lo
        low = [0, 0] + pads[:sp]
        high = [0, 0] + [max(pads[sp + i], (out[i] - 1) * s[i] + (k[i] - 1) * d[i] + 1 - v.shape[2 + i] - pads[i])
                         for i in range(sp)]
        return self.pad(v, low, high, pad_value), k, s, d, pads

    def conv(self, n: Node, v: _T, w: _T) -> _T:
        x = self.x
        oshape, dt = n.outputs[0].shape, n.outputs[0].dtype
        pv, k, s, d, _ = self._window(n, v, 0)
        g = n.attrs["group"]
        if g == 1:
            init = self.filled(oshape, dt, 0)
            cls = {1: x.Conv1DNcwFcwOp, 2: x.linalg.Conv2DNchwFchwOp, 3: x.Conv3DNcdhwFcdhwOp}[v.rank - 2]
            op = cls([pv.v, w.v], [init], [x.tensor_type(dt, oshape)], strides=x.dense_i64(s),
                                            dilations=x.dense_i64(d))
            return _T(op.results[0], oshape, dt)
        N, C = pv.shape[:2]
        F = w.shape[0]
        gv = self.reshape(pv, (N, g, C // g) + pv.shape[2:])
        gw = self.reshape(w, (g, F // g) + w.shape[1:])
        gshape = (N, g, F // g) + oshape[2:]
        init = self.filled(gshape, dt, 0)
        op = x.linalg.Conv2DNgchwGfchwOp([gv.v, gw.v], [init], [x.tensor_type(dt, gshape)], strides=x.dense_i64(s),
                                         dilations=x.dense_i64(d))
        return self.reshape(_T(op.results[0], gshape, dt), oshape)

    def pool(self, n: Node, v: _T) -> _T:
        x = self.x
        a = n.attrs
        oshape, dt = n.outputs[0].shape, n.outputs[0].dtype
        is_max = n.op == "max_pool"
        pv, k, s, d, pads = self._window(n, v, -np.inf if is_max else 0)
        window = self.empty(k, dt)
        init = self.filled(oshape, dt, -np.inf if is_max else 0)
        if v.rank == 3:
            cls = x.PoolingNcwMaxOp if is_max else x.PoolingNcwSumOp
        else:
            cls = x.linalg.PoolingNchwMaxOp if is_max else x.PoolingNchwSumOp
        sum_cls = x.PoolingNcwSumOp if v.rank == 3 else x.PoolingNchwSumOp
        r = _T(cls([pv.v, window], [init], [x.tensor_type(dt, oshape)], strides=x.dense_i64(s),
                   dilations=x.dense_i64(d)).results[0], oshape, dt)
        if is_max:
            return r
        if a["count_include_pad"] or not (any(pads) or a["ceil_mode"]):
            if a["count_include_pad"] and a["ceil_mode"]:
                raise MlirExportError("avg_pool with both ceil_mode and count_include_pad has no MLIR export")
            size = int(np.prod(k))
            return self.ew(lambda sc, p: sc.bin("div", p, sc.const(size)), [r], oshape, dt)
        # the divisor counts the window's elements inside the image: the same pool over ones
        ones = self.filled(v.shape, dt, 1)
        pones, *_ = self._window(n, _T(ones, v.shape, dt), 0)
        init2 = self.filled(oshape, dt, 0)
        cnt = _T(sum_cls([pones.v, self.empty(k, dt)], [init2], [x.tensor_type(dt, oshape)],
                                    strides=x.dense_i64(s), dilations=x.dense_i64(d)).results[0], oshape, dt)
        return self.ew(lambda sc, p, q: sc.bin("div", p, q), [r, cnt], oshape, dt)


def _tuple(v):
    return tuple(v) if isinstance(v, (list, tuple)) else (v,)


def _slice_offsets(shape, a):
    offs = []
    for d, b, st in zip(shape, a["begin"], a["step"]):
        b = b + d if b < 0 else b
        offs.append(min(max(b, 0), d))
    return offs


def _refusal(n: Node) -> str | None:
    """Why node ``n`` cannot be exported, or None when it can."""
    op, a = n.op, n.attrs
    if op == "constant" or op in _BINARY or op in _COMPARE or op in _UNARY or op in _PARAM or op in _REDUCE:
        pass
    elif op in ("where", "cast", "prelu", "softmax", "log_softmax", "layer_norm", "batch_norm", "matmul",
                "reshape", "expand_dims", "squeeze", "transpose", "broadcast_to", "concatenate", "split",
                "global_avg_pool", "global_max_pool", "gather", "gather_elements", "argmax", "argmin", "slice",
                "cumsum", "cond", "while_loop", "scan"):
        pass
    elif op == "conv":
        if n.inputs[0].type.rank not in (3, 4, 5):
            return "conv: only 1-D, 2-D and 3-D convolutions (NCW, NCHW, NCDHW) map onto linalg"
        if a["group"] != 1 and n.inputs[0].type.rank != 4:
            return "conv: grouped convolutions map onto linalg in 2-D only"
    elif op in ("max_pool", "avg_pool"):
        if n.inputs[0].type.rank not in (3, 4):
            return f"{op}: only 1-D and 2-D pooling (NCW, NCHW) map onto linalg"
        if len(n.outputs) != 1:
            return f"{op}: the indices output has no linalg form"
    elif op == "tile":
        pass
    elif op == "lrn":
        if n.inputs[0].type.rank < 2 or not n.inputs[0].dtype.is_float:
            return "lrn: only on float tensors with a channel axis"
    elif op == "pad":
        if a["mode"] != "constant" or any(p < 0 for p in a["pads"]):
            return f"pad: mode {a['mode']!r} or negative pads have no tensor.pad form"
    else:
        return op
    if op in ("div", "pow") and not n.outputs[0].dtype.is_float:
        return f"{op} on integers (numpy's floor semantics)"
    if op in _UNARY and op not in ("relu", "neg", "copy", "abs", "bitwise_not") and not n.outputs[0].dtype.is_float:
        return f"{op} on integers"
    return None


def _name_args(block, names) -> None:
    """The block's arguments print as ``%name`` where ``name`` is a valid, unique SSA name."""
    import re
    seen = set()
    for arg, name in zip(block.args, names):
        if name and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", name) and name not in seen:
            arg.name_hint = name
            seen.add(name)


def build_module(graph: Graph, name: str | None = None):
    """``graph`` as an xDSL ``ModuleOp`` holding one ``func.func`` (named after the graph).
    Raises MlirExportError naming every op that has no mapping."""
    bad: dict[str, list[str]] = {}
    for n in walk_nodes(graph):   # control flow's bodies too
        why = _refusal(n)
        if why is not None:
            bad.setdefault(why, []).append(n.loc or "?")
    if bad:
        lines = [f"  {why}" + (f" (at {', '.join(sorted(set(locs))[:3])})" if any(l != "?" for l in locs) else "")
                 for why, locs in bad.items()]
        raise MlirExportError(f"@{graph.name} has ops with no MLIR (linalg) export:\n" + "\n".join(lines))
    x = _x()
    in_types = [x.tensor_type(v.dtype, v.shape) for v in graph.inputs]
    out_types = [x.tensor_type(v.dtype, v.shape) for v in graph.outputs]
    block = x.Block(arg_types=in_types)
    _name_args(block, [v.name for v in graph.inputs])
    ex = _Exporter(x)
    env: dict[Value, _T] = {v: _T(arg, v.shape, v.dtype) for v, arg in zip(graph.inputs, block.args)}
    with x.ImplicitBuilder(block):
        for n in graph.nodes:
            env.update(zip(n.outputs, ex.node(n, [env[v] for v in n.inputs])))
        x.func.ReturnOp(*[env[v].v for v in graph.outputs])
    fn = x.func.FuncOp(name or graph.name, (in_types, out_types), x.Region(block))
    mod = x.ModuleOp([fn])
    mod.verify()
    return mod


def print_module(mod) -> str:
    from xdsl.printer import Printer
    s = io.StringIO()
    Printer(stream=s).print_op(mod)
    return s.getvalue() + "\n"


def to_mlir(fn_or_graph: Callable | Graph, *example_args, level: str = "graph", target=None) -> str:
    """MLIR text of ``fn_or_graph`` (a Graph, or a function traced on ``example_args``):
    ``level="graph"`` a func on tensors in linalg/tensor/arith/math; ``level="loop"`` the
    compiled loop nests (scheduled for ``target``, the host by default) in scf/memref."""
    if level not in ("graph", "loop"):
        raise ValueError(f"level must be 'graph' or 'loop', not {level!r}")
    graph = fn_or_graph if isinstance(fn_or_graph, Graph) else trace(fn_or_graph, *example_args)
    if level == "loop":
        from .mlir_loop import loop_module
        return print_module(loop_module(graph, target=target))
    return print_module(build_module(graph))


def compiled_text(compiled, level: str) -> str:
    """``exe.ir("mlir")`` / ``exe.ir("mlir-loop")``: the MLIR of a compilation (mlc's
    ``Compiled``), its graph after the graph passes or its scheduled loops as they were
    compiled."""
    if level == "loop":
        from .mlir_loop import loop_module
        return print_module(loop_module(compiled.source, compiled_graph=compiled))
    return print_module(build_module(compiled.graph))
