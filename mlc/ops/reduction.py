"""Reductions over any axes (sum, mean, max, min, prod) and softmax / log_softmax.

Result dtypes follow numpy, except that sums and products of uint8 give int64
(numpy: uint64, which mlc does not have). float16 sums accumulate in float32.
"""
from __future__ import annotations

import numpy as np

from ..ir import expr as E
from ..ir.expr import Const, cast
from ..ir.tensor import Compute, compute, reduce
from ..ir.types import TensorType, float32, int64
from .registry import OpDef, check, keep_reduced, normalize_axes, normalize_axis, numpy_result_dtype


def _canon(ins, attrs):
    return {"axis": normalize_axes(attrs["axis"], ins[0].rank, "reduction"), "keepdims": bool(attrs["keepdims"])}


def _reduced_shape(shape, axes, keepdims):
    if keepdims:
        return tuple(1 if d in axes else n for d, n in enumerate(shape))
    return tuple(n for d, n in enumerate(shape) if d not in axes)


def _reduce_dtype(np_fn, dt):
    if dt.kind == "uint" and np_fn in (np.sum, np.prod):
        return int64
    return numpy_result_dtype(lambda x: np_fn(x), dt)


def reduce_stage(x, axes, keepdims, combiner, acc_dtype, body=None, name="T") -> Compute:
    """A stage reducing ``body(index) `` (default: x itself) over ``axes`` of x's shape."""
    body = body or (lambda idx: x[tuple(idx)])
    red_extents = [x.shape[d] for d in axes]
    out_shape = _reduced_shape(x.shape, axes, keepdims)

    def fn(*out_idx):
        def inner(*r):
            idx, it, rt = [], iter(out_idx), iter(r)
            for d in range(len(x.shape)):
                if d in axes:
                    idx.append(next(rt))
                    if keepdims:
                        next(it)
                else:
                    idx.append(next(it))
            return cast(acc_dtype, body(idx))
        return reduce(combiner, red_extents, inner)

    return compute(out_shape, fn, name)


def _reduction(name: str, np_fn, combiner: str) -> OpDef:
    def infer(ins, axis, keepdims):
        (x,) = ins
        if combiner in ("max", "min"):   # no identity element: numpy refuses empty reductions too
            check(all(x.shape[d] > 0 for d in axis), f"{name}: cannot reduce an empty axis of {x} (no identity)")
        return [TensorType(_reduced_shape(x.shape, axis, keepdims), _reduce_dtype(np_fn, x.dtype))]

    def lower(ins, outs, axis, keepdims):
        (x,), (o,) = ins, outs
        acc = float32 if o.dtype.is_float and o.dtype.bits < 32 else o.dtype
        if combiner in ("max", "min"):
            acc = x.dtype
        stage = reduce_stage(x, axis, keepdims, combiner, acc)
        if name == "mean":
            n = int(np.prod([x.shape[d] for d in axis], dtype=np.int64))
            return [stage, compute(o.shape, lambda *i: cast(o.dtype, stage[i] * Const(1.0 / max(n, 1), acc)))]
        if acc is not o.dtype:
            return [stage, compute(o.shape, lambda *i: cast(o.dtype, stage[i]))]
        return [stage]

    def ref(x, axis, keepdims):
        with np.errstate(all="ignore"):
            r = np_fn(x, axis=axis, keepdims=keepdims)
        return np.asarray(r).astype(_reduce_dtype(np_fn, _dt(x)).np)

    kind = "reduction"
    return OpDef(name, kind, infer, ref, lower, attrs={"axis": None, "keepdims": False}, canonicalize=_canon,
                 vjp=_reduction_vjp(name), doc=f"{name} over the given axes (all when axis is None), like numpy.{np_fn.__name__}.")


def _dt(x):
    from ..ir.types import dtype
    return dtype(np.asarray(x).dtype)


# ----------------------------------------------------------------------------- softmax

def _softmax_canon(ins, attrs):
    return {"axis": normalize_axis(attrs["axis"], ins[0].rank, "softmax")}


def _softmax_infer(ins, axis):
    (x,) = ins
    check(x.dtype.is_float, f"expects a floating-point tensor, got {x.dtype}")
    check(not x.shape or x.shape[axis] > 0, f"axis {axis} of {x} is empty")
    return [x]


def _softmax_stages(x, axis):
    """max over the axis, then the sum of exp(x - max); both keep the axis as size 1."""
    acc = float32 if x.dtype.bits < 32 else x.dtype
    axes = (axis,) if x.shape else ()    # a 0-d tensor: reduce over no axes
    m = reduce_stage(x, axes, True, "max", x.dtype, name="max")

    def shifted(idx):
        return cast(acc, x[tuple(idx)]) - cast(acc, m[_at_axis0(idx, axis)])

    s = reduce_stage(x, axes, True, "sum", acc, body=lambda idx: E.call("exp", shifted(idx)), name="sum")
    return m, s, shifted, acc


def _at_axis0(idx, axis):
    j = list(idx)
    if j:
        j[axis] = Const(0)
    return tuple(j)


def _softmax_lower(ins, outs, axis):
    (x,), (o,) = ins, outs
    m, s, shifted, acc = _softmax_stages(x, axis)
    out = compute(o.shape, lambda *i: cast(o.dtype, E.call("exp", shifted(i)) / s[_at_axis0(i, axis)]))
    return [m, s, out]


def _log_softmax_lower(ins, outs, axis):
    (x,), (o,) = ins, outs
    m, s, shifted, acc = _softmax_stages(x, axis)
    out = compute(o.shape, lambda *i: cast(o.dtype, shifted(i) - E.call("log", s[_at_axis0(i, axis)])))
    return [m, s, out]


def _np_softmax(x, axis):
    x = np.asarray(x)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return (e / e.sum(axis=axis, keepdims=True)).astype(x.dtype)


def _np_log_softmax(x, axis):
    x = np.asarray(x)
    s = x - x.max(axis=axis, keepdims=True)
    return (s - np.log(np.exp(s).sum(axis=axis, keepdims=True))).astype(x.dtype)


# ----------------------------------------------------------------------------- gradient rules

def _reduction_vjp(name):
    def vjp(em, ins, outs, cts, axis, keepdims):
        x, y, g = ins[0], outs[0], cts[0]
        if x.dtype.kind != "f":
            return [None]
        g = keep_reduced(em, g, x.shape, axis)
        if name == "sum":
            dx = em("broadcast_to", g, shape=x.shape)
        elif name == "mean":
            n = int(np.prod([x.shape[d] for d in axis], dtype=np.int64))
            dx = em("broadcast_to", g * (1.0 / max(n, 1)), shape=x.shape)
        elif name in ("max", "min"):
            # ties split the gradient evenly between the tied elements
            hit = em("cast", em("equal", x, keep_reduced(em, y, x.shape, axis)), dtype=x.dtype)
            dx = hit * (g / em("sum", hit, axis=axis, keepdims=True))
        else:   # prod: the product of the other elements, exact when some are zero
            zero = em("equal", x, 0.0)
            nonzero_prod = em("prod", em("where", zero, 1.0, x), axis=axis, keepdims=True)
            zeros = em("sum", em("cast", zero, dtype=x.dtype), axis=axis, keepdims=True)
            dx = g * em("where", zero, em("where", em("equal", zeros, 1.0), nonzero_prod, 0.0),
                        em("where", em("equal", zeros, 0.0), nonzero_prod / em("where", zero, 1.0, x), 0.0))
        return [em("cast", dx, dtype=x.dtype) if dx.dtype != x.dtype else dx]
    return vjp


def _softmax_vjp(em, ins, outs, cts, axis):
    y, g = outs[0], cts[0]
    return [y * (g - em("sum", g * y, axis=axis, keepdims=True))]


def _log_softmax_vjp(em, ins, outs, cts, axis):
    y, g = outs[0], cts[0]
    return [g - em("exp", y) * em("sum", g, axis=axis, keepdims=True)]


OPS = [
    _reduction("sum", np.sum, "sum"),
    _reduction("mean", np.mean, "sum"),
    _reduction("max", np.max, "max"),
    _reduction("min", np.min, "min"),
    _reduction("prod", np.prod, "prod"),
    OpDef("softmax", "reduction", _softmax_infer, _np_softmax, _softmax_lower, attrs={"axis": -1},
          canonicalize=_softmax_canon, vjp=_softmax_vjp, doc="exp(x) / sum(exp(x)) along axis, computed stably."),
    OpDef("log_softmax", "reduction", _softmax_infer, _np_log_softmax, _log_softmax_lower, attrs={"axis": -1},
          canonicalize=_softmax_canon, vjp=_log_softmax_vjp, doc="x - log(sum(exp(x))) along axis, computed stably."),
]
