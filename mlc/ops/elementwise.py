"""Elementwise ops: unary math, broadcasting binary ops, where, cast, copy.

Result dtypes follow numpy exactly (the rule asks numpy), e.g. ``exp`` of int32
is float64 and ``add`` of f32 and f64 is f64; comparisons give bool.
"""
from __future__ import annotations

import math

import numpy as np

from ..ir import expr as E
from ..ir.expr import Const, cast
from ..ir.tensor import compute
from ..ir.types import TensorType, dtype as to_dtype
from .registry import OpDef, broadcast_load, broadcast_shapes, check, numpy_result_dtype, unbroadcast

_erf = np.vectorize(math.erf, otypes=[np.float64])


def _float_result(x: np.ndarray) -> np.dtype:
    """The dtype numpy's float functions (exp, sqrt, ...) give for x's dtype."""
    return np.exp(np.ones(1, x.dtype)).dtype


def _np_erf(x):
    x = np.asarray(x)
    return _erf(x.astype(np.float64)).astype(_float_result(x))


def _np_sigmoid(x):
    x = np.asarray(x)
    return (1 / (1 + np.exp(-x.astype(_float_result(x))))).astype(_float_result(x))


def _np_rsqrt(x):
    x = np.asarray(x)
    return (1 / np.sqrt(x)).astype(_float_result(x))


# ----------------------------------------------------------------------------- unary

# name -> (numpy reference, scalar expression builder on a value already of the result dtype)
_UNARY = {
    "neg": (np.negative, lambda x: E.call("neg", x)),
    "abs": (np.abs, lambda x: x if x.dtype.kind in ("bool", "uint") else E.call("abs", x)),   # unsigned: itself
    "exp": (np.exp, lambda x: E.call("exp", x)),
    "log": (np.log, lambda x: E.call("log", x)),
    "sqrt": (np.sqrt, lambda x: E.call("sqrt", x)),
    "rsqrt": (_np_rsqrt, lambda x: Const(1.0, x.dtype) / E.call("sqrt", x)),
    "tanh": (np.tanh, lambda x: E.call("tanh", x)),
    "sigmoid": (_np_sigmoid, lambda x: Const(1.0, x.dtype) / (Const(1.0, x.dtype) + E.call("exp", -x))),
    "relu": (lambda x: np.maximum(x, np.zeros((), np.asarray(x).dtype)), lambda x: E.maximum(x, Const(0, x.dtype))),
    "sin": (np.sin, lambda x: E.call("sin", x)),
    "cos": (np.cos, lambda x: E.call("cos", x)),
    "erf": (_np_erf, lambda x: E.call("erf", x)),
    "floor": (np.floor, lambda x: E.call("floor", x) if x.dtype.is_float else x),
    "ceil": (np.ceil, lambda x: E.call("ceil", x) if x.dtype.is_float else x),
    "round": (np.round, lambda x: E.call("round", x) if x.dtype.is_float else x),
    "acos": (np.arccos, lambda x: E.call("acos", x)),
    "asin": (np.arcsin, lambda x: E.call("asin", x)),
    "atan": (np.arctan, lambda x: E.call("atan", x)),
}


def _unary(name: str, ref, scalar) -> OpDef:
    def infer(ins):
        (x,) = ins
        dt = numpy_result_dtype(ref, x.dtype)
        return [TensorType(x.shape, dt)]

    def lower(ins, outs):
        (x,), (o,) = ins, outs
        return [compute(o.shape, lambda *i: scalar(cast(o.dtype, x[i])))]

    return OpDef(name, "injective", infer, ref, lower, doc=f"Elementwise {name}, like numpy.", elementwise=True)


# ----------------------------------------------------------------------------- binary

def _pow_scalar(a, b):
    if isinstance(b, Const) and a.dtype.is_float:
        if b.value == 2:
            return a * a
        if b.value == 1:
            return a
        if b.value == 0.5:
            return E.call("sqrt", a)
    return E.binop("pow", a, b)   # integers: exact, wrapping like numpy (see codegen)


# name -> (numpy reference, scalar builder on operands of the compute dtype)
_BINARY = {
    "add": (np.add, lambda a, b: a + b if not a.dtype.is_bool else E.binop("or", a, b)),
    "sub": (np.subtract, lambda a, b: a - b),
    "mul": (np.multiply, lambda a, b: a * b if not a.dtype.is_bool else E.binop("and", a, b)),
    "div": (np.true_divide, lambda a, b: a / b),
    "pow": (np.power, _pow_scalar),
    "maximum": (np.maximum, E.maximum),
    "minimum": (np.minimum, E.minimum),
    "equal": (np.equal, lambda a, b: E.binop("eq", a, b)),
    "less": (np.less, lambda a, b: E.binop("lt", a, b)),
    "greater": (np.greater, lambda a, b: E.binop("gt", a, b)),
}
_COMPARISONS = {"equal", "less", "greater"}


def _compare_dtype(a, b):
    """The dtype a comparison computes in: numpy's promotion."""
    return numpy_result_dtype(np.add, a, b)


_MIXED_U64 = {"equal": "eq", "less": "lt", "greater": "gt"}


def _compare_u64_signed(name, a, b):
    """``a name b`` with one operand uint64 and the other a signed integer, exactly
    (numpy compares these exactly; their promoted dtype, float64, would round): a
    negative signed operand is below every uint64, any other converts exactly."""
    u64, i64 = to_dtype("uint64"), to_dtype("int64")
    flip = a.dtype.kind == "int"   # put the signed operand second: a is uint64
    if flip:
        a, b = b, a
        name = {"less": "greater", "greater": "less"}.get(name, name)
    b = cast(i64, b)
    neg = E.binop("lt", b, Const(0, i64))
    same = E.binop(_MIXED_U64[name], a, cast(u64, b))
    if name == "greater":   # uint64 > negative: always
        return E.binop("or", neg, same)
    return E.binop("and", E.call("not", neg), same)


def _binary(name: str, ref, scalar) -> OpDef:
    def infer(ins):
        a, b = ins
        return [TensorType(broadcast_shapes(a.shape, b.shape), numpy_result_dtype(ref, a.dtype, b.dtype))]

    def lower(ins, outs):
        (a, b), (o,) = ins, outs
        # comparisons compare in the promoted dtype; arithmetic computes in the result dtype
        if name in _COMPARISONS and {(a.dtype.name, b.dtype.kind), (b.dtype.name, a.dtype.kind)} & {("uint64", "int")}:
            return [compute(o.shape, lambda *i: _compare_u64_signed(name, broadcast_load(a, i), broadcast_load(b, i)))]
        cdt = _compare_dtype(a.dtype, b.dtype) if name in _COMPARISONS else o.dtype
        return [compute(o.shape, lambda *i: scalar(cast(cdt, broadcast_load(a, i)), cast(cdt, broadcast_load(b, i))))]

    return OpDef(name, "injective", infer, ref, lower, params=("a", "b"),
                 doc=f"Elementwise {name} with numpy broadcasting.", elementwise=True)


# ----------------------------------------------------------------------------- bit operations

def _bitwise(name: str, ref, bool_op: str, int_op: str) -> OpDef:
    """and/or/xor of the bits of integers (of bools: the logical op), dtypes as numpy
    promotes them (numpy refuses floats, and so does the type rule)."""
    def infer(ins):
        a, b = ins
        return [TensorType(broadcast_shapes(a.shape, b.shape), numpy_result_dtype(ref, a.dtype, b.dtype))]

    def lower(ins, outs):
        (a, b), (o,) = ins, outs
        bop = bool_op if o.dtype.is_bool else int_op
        return [compute(o.shape, lambda *i: E.binop(bop, cast(o.dtype, broadcast_load(a, i)),
                                                     cast(o.dtype, broadcast_load(b, i))))]

    return OpDef(name, "injective", infer, ref, lower, params=("a", "b"),
                 vjp=lambda em, ins, outs, cts: [None, None],
                 doc=f"Elementwise {name} (numpy.{ref.__name__}) of integers or bools, with numpy broadcasting.",
                 elementwise=True)


def _shift(name: str, ref, left: bool) -> OpDef:
    """a shifted by b bits, as numpy shifts (and ONNX's BitShift): a signed a shifts right
    arithmetically; a shift by the type's width or more, or by a negative amount, gives
    what the sign fill alone gives (-1 shifting a negative a right, else 0). An LLVM
    shift that far is undefined, so the amount is checked first."""
    def infer(ins):
        a, b = ins
        dt = numpy_result_dtype(ref, a.dtype, b.dtype)
        check(dt.kind in ("int", "uint"), f"{name}: shifts integers, got {a.dtype} and {b.dtype}")
        return [TensorType(broadcast_shapes(a.shape, b.shape), dt)]

    def lower(ins, outs):
        (a, b), (o,) = ins, outs
        dt = o.dtype
        udt = to_dtype(f"uint{dt.bits}")

        def scalar(*i):
            x, k = cast(dt, broadcast_load(a, i)), cast(dt, broadcast_load(b, i))
            in_range = E.binop("lt", cast(udt, k), Const(dt.bits, udt))   # a negative k reads as a huge one
            if not left and dt.kind == "int":   # shifting by width - 1 leaves the sign fill
                return E.binop("sar", x, E.select(in_range, k, Const(dt.bits - 1, dt)))
            return E.select(in_range, E.binop("shl" if left else "shr", x, k), Const(0, dt))
        return [compute(o.shape, scalar)]

    return OpDef(name, "injective", infer, ref, lower, params=("a", "b"),
                 vjp=lambda em, ins, outs, cts: [None, None],
                 doc=f"Elementwise {name} (numpy.{ref.__name__}) of integers, with numpy broadcasting.",
                 elementwise=True)


def _bitwise_not_infer(ins):
    (x,) = ins
    return [TensorType(x.shape, numpy_result_dtype(np.invert, x.dtype))]


# ----------------------------------------------------------------------------- where, cast, copy

def _where_infer(ins):
    c, a, b = ins
    check(c.dtype.is_bool, f"where: the condition must be bool, got {c.dtype}")
    return [TensorType(broadcast_shapes(c.shape, a.shape, b.shape), numpy_result_dtype(np.add, a.dtype, b.dtype))]


def _where_lower(ins, outs):
    (c, a, b), (o,) = ins, outs
    return [compute(o.shape, lambda *i: E.select(broadcast_load(c, i), cast(o.dtype, broadcast_load(a, i)),
                                                  cast(o.dtype, broadcast_load(b, i))))]


def _cast_canon(ins, attrs):
    return {"dtype": to_dtype(attrs["dtype"])}


def _cast_scalar(dt, x):
    if dt.is_bool and not x.dtype.is_bool:
        return E.binop("ne", x, Const(0, x.dtype))
    return cast(dt, x)


# ----------------------------------------------------------------------------- gradient rules
# vjp(em, ins, outs, cts) -> input cotangents (ops/autodiff.py); x: input, y: output, g: cotangent

_UNARY_VJP = {
    "neg": lambda em, x, y, g: -g,
    "abs": lambda em, x, y, g: em("where", x > 0, g, em("where", x < 0, -g, 0.0)),   # 0 at 0, like torch
    "exp": lambda em, x, y, g: g * y,
    "log": lambda em, x, y, g: g / x,
    "sqrt": lambda em, x, y, g: g * 0.5 / y,
    "rsqrt": lambda em, x, y, g: g * -0.5 * y / x,
    "tanh": lambda em, x, y, g: g * (1.0 - y * y),
    "sigmoid": lambda em, x, y, g: g * y * (1.0 - y),
    "relu": lambda em, x, y, g: em("where", x > 0, g, 0.0),
    "sin": lambda em, x, y, g: g * em("cos", x),
    "cos": lambda em, x, y, g: -g * em("sin", x),
    "erf": lambda em, x, y, g: g * (2.0 / math.sqrt(math.pi)) * em("exp", -(x * x)),
    # piecewise constant: zero almost everywhere
    "floor": lambda em, x, y, g: g * 0.0,
    "ceil": lambda em, x, y, g: g * 0.0,
    "round": lambda em, x, y, g: g * 0.0,
    "acos": lambda em, x, y, g: -g * em("rsqrt", 1.0 - x * x),
    "asin": lambda em, x, y, g: g * em("rsqrt", 1.0 - x * x),
    "atan": lambda em, x, y, g: g / (1.0 + x * x),
}


def _unary_vjp(name):
    rule = _UNARY_VJP[name]

    def vjp(em, ins, outs, cts):
        return [rule(em, ins[0], outs[0], cts[0]) if ins[0].dtype.kind == "f" else None]
    return vjp


def _tie_share(em, a, b, wins):
    """Where a beats b: 1; where they tie: 1/2 (the gradient is split evenly); else 0."""
    return em("where", wins, 1.0, em("where", em("equal", a, b), 0.5, 0.0))


def _pow_grad_b(em, a, y, g):
    # d(a^b)/db = a^b log a; where a == 0 the limit is taken as 0 (as torch does)
    return g * y * em("log", em("where", em("equal", a, 0.0), 1.0, a))


_BINARY_VJP = {
    "add": lambda em, a, b, y, g: (g, g),
    "sub": lambda em, a, b, y, g: (g, -g),
    "mul": lambda em, a, b, y, g: (g * b, g * a),
    "div": lambda em, a, b, y, g: (g / b, -g * y / b),
    "pow": lambda em, a, b, y, g: (g * b * em("pow", a, b - 1.0), _pow_grad_b(em, a, y, g)),
    "maximum": lambda em, a, b, y, g: (g * _tie_share(em, a, b, a > b), g * _tie_share(em, b, a, b > a)),
    "minimum": lambda em, a, b, y, g: (g * _tie_share(em, a, b, a < b), g * _tie_share(em, b, a, b < a)),
}


def _binary_vjp(name):
    rule = _BINARY_VJP.get(name)

    def vjp(em, ins, outs, cts):
        a, b = ins
        if rule is None or outs[0].dtype.kind != "f":   # comparisons: boolean result, no gradient
            return [None, None]
        ga, gb = rule(em, a, b, outs[0], cts[0])
        return [unbroadcast(em, ga, a) if a.dtype.kind == "f" else None,
                unbroadcast(em, gb, b) if b.dtype.kind == "f" else None]
    return vjp


def _where_vjp(em, ins, outs, cts):
    c, a, b = ins
    g = cts[0]
    return [None, unbroadcast(em, em("where", c, g, 0.0), a) if a.dtype.kind == "f" else None,
            unbroadcast(em, em("where", c, 0.0, g), b) if b.dtype.kind == "f" else None]


def _cast_vjp(em, ins, outs, cts, dtype):
    x = ins[0]
    if x.dtype.kind != "f" or not dtype.is_float:
        return [None]
    return [em("cast", cts[0], dtype=x.dtype)]


def _with_vjp(op: OpDef, vjp) -> OpDef:
    op.vjp = vjp
    return op


OPS = [
    *[_with_vjp(_unary(n, r, s), _unary_vjp(n)) for n, (r, s) in _UNARY.items()],
    *[_with_vjp(_binary(n, r, s), _binary_vjp(n)) for n, (r, s) in _BINARY.items()],
    _bitwise("bitwise_and", np.bitwise_and, "and", "bitand"),
    _bitwise("bitwise_or", np.bitwise_or, "or", "bitor"),
    _bitwise("bitwise_xor", np.bitwise_xor, "xor", "xor"),
    OpDef("bitwise_not", "injective", _bitwise_not_infer, np.invert,
          lambda ins, outs: [compute(outs[0].shape, lambda *i: E.call("not", cast(outs[0].dtype, ins[0][i])))],
          vjp=lambda em, ins, outs, cts: [None], doc="Elementwise bitwise not (numpy.invert) of integers or bools.",
          elementwise=True),
    _shift("left_shift", np.left_shift, True),
    _shift("right_shift", np.right_shift, False),
    OpDef("where", "injective", _where_infer, lambda c, a, b: np.where(c, a, b), _where_lower,
          params=("cond", "a", "b"), vjp=_where_vjp, doc="Select a where cond is true, else b (numpy broadcasting).",
          elementwise=True),
    OpDef("cast", "injective",
          lambda ins, dtype: [TensorType(ins[0].shape, dtype)],
          lambda x, dtype: np.asarray(x).astype(dtype.np),
          lambda ins, outs, dtype: [compute(outs[0].shape, lambda *i: _cast_scalar(dtype, ins[0][i]))],
          attrs={"dtype": None}, canonicalize=_cast_canon, vjp=_cast_vjp,
          doc="Convert to another dtype (numpy astype).", elementwise=True, identity_when_same_type=True),
    OpDef("copy", "injective",
          lambda ins: [ins[0]],
          lambda x: np.array(x, copy=True),
          lambda ins, outs: [compute(outs[0].shape, lambda *i: ins[0][i])],
          vjp=lambda em, ins, outs, cts: [cts[0]], doc="A copy of the tensor.", elementwise=True,
          identity_when_same_type=True),
]
