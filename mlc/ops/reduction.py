"""Reductions over any axes (sum, mean, max, min, prod) and softmax / log_softmax.

Result dtypes follow numpy (sums and products of small signed integers give int64,
of unsigned ones uint64). float16 sums accumulate in float32.
"""
from __future__ import annotations

import math

import numpy as np

from ..ir import expr as E
from ..ir.expr import Const, cast
from ..ir.tensor import Compute, combine, compute, reduce
from ..ir.types import TensorType, float32, float64
from .registry import OpDef, check, keep_reduced, normalize_axes, normalize_axis, numpy_result_dtype


def _canon(ins, attrs):
    return {"axis": normalize_axes(attrs["axis"], ins[0].rank, "reduction"), "keepdims": bool(attrs["keepdims"])}


def _reduced_shape(shape, axes, keepdims):
    if keepdims:
        return tuple(1 if d in axes else n for d, n in enumerate(shape))
    return tuple(n for d, n in enumerate(shape) if d not in axes)


def _reduce_dtype(np_fn, dt):
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


TREE_MIN = 4096   # reductions of more elements than this run as a tree of blocks


def blocked_reduce_stages(x, axes, combiner, acc_dtype) -> list[Compute]:
    """``x`` reduced over ``axes`` (the result has the other axes, no kept dims) as a
    tree of stages: blocks of about ``block`` contiguous elements are reduced into a
    tensor of partial results, which is reduced the same way until at most a block is
    left. No accumulator adds up more than a block, and the blocks are
    independent work (vector partial sums, parallel loops). Float32 sums accumulate
    in float64 (see the caller), so big blocks lose nothing; float64 sums and
    products use small blocks, which bounds their rounding error like numpy's pairwise
    summation does. The last stage is the result."""
    block = 64 if acc_dtype is float64 and x.dtype is float64 and combiner in ("sum", "prod") else 1024
    out_axes = [d for d in range(len(x.shape)) if d not in axes]
    out_shape = [x.shape[d] for d in out_axes]

    def read_x(o, r):
        idx = [None] * len(x.shape)
        for d, i in zip(out_axes, o):
            idx[d] = i
        for d, i in zip(axes, r):
            idx[d] = i
        return x[tuple(idx)]

    stages: list[Compute] = []
    out_inner = bool(out_shape) and axes[-1] != len(x.shape) - 1
    stages.append(_reduce_tree(read_x, out_shape, [x.shape[d] for d in axes], combiner, acc_dtype, block,
                               out_inner, stages))
    return stages


def _reduce_tree(read, out_shape, extents, combiner, acc, block, out_inner, stages) -> Compute:
    """One level of ``blocked_reduce_stages``: appends the stages it needs to ``stages``
    and returns the stage holding the reduction of ``read(out_index, red_index)``;
    ``out_inner``: the output axes vary fastest in the source's memory."""
    if math.prod(extents) <= block:
        return compute(out_shape, lambda *o: reduce(combiner, extents, lambda *r: cast(acc, read(o, r))), "T")
    # the innermost axes that fit in a block whole, and the axis j whose rows are split into blocks
    j, inner = len(extents) - 1, 1
    while inner * extents[j] <= block:
        inner *= extents[j]
        j -= 1
    f = max(1, block // inner)            # rows of axis j per block
    q, tail = divmod(extents[j], f)
    outer, rest = extents[:j], extents[j + 1:]

    # The partial results keep the source's order: partial[outer..., block, out...] when the
    # output axes are the innermost of the source (column sums read whole rows and vectorize
    # along them), else partial[out..., outer..., block] (each block streams through memory).
    n = len(out_shape)

    def read_block(i, r):                 # r: the row in the block, then the rest of the axes
        o, (*p, b) = (i[j + 1:], i[:j + 1]) if out_inner else (i[:n], i[n:])
        return read(o, (*p, b * f + r[0], *r[1:]))

    shape = outer + [q] + out_shape if out_inner else out_shape + outer + [q]
    partial = compute(shape, lambda *i: reduce(combiner, [f] + rest, lambda *r: cast(acc, read_block(i, r))), "P")
    stages.append(partial)
    result = _reduce_tree((lambda o, r: partial[(*r, *o)]) if out_inner else (lambda o, r: partial[(*o, *r)]),
                          out_shape, outer + [q], combiner, acc, block, out_inner, stages)
    if tail:   # the rows of axis j after the last whole block
        stages.append(result)
        rest_result = _reduce_tree(lambda o, r: read(o, (*r[:j], q * f + r[j], *r[j + 1:])), out_shape,
                                   outer + [tail] + rest, combiner, acc, block, out_inner, stages)
        stages.append(rest_result)
        result = compute(out_shape, lambda *o: combine(combiner, result[o], rest_result[o]), "T")
    return result


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
        n = math.prod(x.shape[d] for d in axis)
        at = lambda i: i   # noqa: E731 -- the output index -> the reduction's index
        if n > TREE_MIN:
            if acc is float32 and combiner == "sum":
                acc = float64   # float32 partials of long sums accumulate in float64: better than numpy's pairwise
            stages = blocked_reduce_stages(x, axis, combiner, acc)   # its result has no kept dims
            if keepdims:
                kept = [d for d in range(len(x.shape)) if d not in axis]
                at = lambda i: tuple(i[d] for d in kept)   # noqa: E731
        else:
            stages = [reduce_stage(x, axis, keepdims, combiner, acc)]
        stage = stages[-1]
        if name == "mean":
            scale = Const(1.0 / n if n else float("nan"), acc)   # the mean of nothing is NaN, as in numpy
            return stages + [compute(o.shape, lambda *i: cast(o.dtype, stage[at(i)] * scale))]
        if acc is not o.dtype or stage.shape != o.shape:
            return stages + [compute(o.shape, lambda *i: cast(o.dtype, stage[at(i)]))]
        return stages

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
    return [x]   # over an empty axis the result is empty too (nothing to normalize)


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
    if x.size == 0:
        return x.copy()
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return (e / e.sum(axis=axis, keepdims=True)).astype(x.dtype)


def _np_log_softmax(x, axis):
    x = np.asarray(x)
    if x.size == 0:
        return x.copy()
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
