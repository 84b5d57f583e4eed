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
from .registry import OpDef, OpTypeError, broadcast_load, broadcast_shapes, check, numpy_result_dtype

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
    "abs": (np.abs, lambda x: E.call("abs", x) if not x.dtype.is_bool else x),
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
}


def _unary(name: str, ref, scalar) -> OpDef:
    def infer(ins):
        (x,) = ins
        dt = numpy_result_dtype(ref, x.dtype)
        return [TensorType(x.shape, dt)]

    def lower(ins, outs):
        (x,), (o,) = ins, outs
        return [compute(o.shape, lambda *i: scalar(cast(o.dtype, x[i])))]

    return OpDef(name, "injective", infer, ref, lower, doc=f"Elementwise {name}, like numpy.")


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
    """The dtype a comparison computes in: numpy's promotion, except that int8 with
    uint8 promotes to int16, which mlc lacks; int32 holds both exactly."""
    try:
        return numpy_result_dtype(np.add, a, b)
    except OpTypeError:
        if a.is_int and b.is_int:
            return to_dtype("int32")
        raise


def _binary(name: str, ref, scalar) -> OpDef:
    def infer(ins):
        a, b = ins
        return [TensorType(broadcast_shapes(a.shape, b.shape), numpy_result_dtype(ref, a.dtype, b.dtype))]

    def lower(ins, outs):
        (a, b), (o,) = ins, outs
        # comparisons compare in the promoted dtype; arithmetic computes in the result dtype
        cdt = _compare_dtype(a.dtype, b.dtype) if name in _COMPARISONS else o.dtype
        return [compute(o.shape, lambda *i: scalar(cast(cdt, broadcast_load(a, i)), cast(cdt, broadcast_load(b, i))))]

    return OpDef(name, "injective", infer, ref, lower, params=("a", "b"),
                 doc=f"Elementwise {name} with numpy broadcasting.")


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


OPS = [
    *[_unary(n, r, s) for n, (r, s) in _UNARY.items()],
    *[_binary(n, r, s) for n, (r, s) in _BINARY.items()],
    OpDef("where", "injective", _where_infer, lambda c, a, b: np.where(c, a, b), _where_lower,
          params=("cond", "a", "b"), doc="Select a where cond is true, else b (numpy broadcasting)."),
    OpDef("cast", "injective",
          lambda ins, dtype: [TensorType(ins[0].shape, dtype)],
          lambda x, dtype: np.asarray(x).astype(dtype.np),
          lambda ins, outs, dtype: [compute(outs[0].shape, lambda *i: _cast_scalar(dtype, ins[0][i]))],
          attrs={"dtype": None}, canonicalize=_cast_canon, doc="Convert to another dtype (numpy astype)."),
    OpDef("copy", "injective",
          lambda ins: [ins[0]],
          lambda x: np.array(x, copy=True),
          lambda ins, outs: [compute(outs[0].shape, lambda *i: ins[0][i])],
          doc="A copy of the tensor."),
]
