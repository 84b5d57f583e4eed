"""Pooling with ONNX semantics, layout (N, C, *spatial), 1-D to 3-D, and the
pools' gradient ops. Each op's rules (type, reference, lowering, gradient) sit
together; what they share with conv and im2col is in ``window.py``.

* ``max_pool(x, kernel_shape, strides, pads, dilations, ceil_mode, auto_pad)``:
  ONNX MaxPool's first output (no indices); floats and integers.
* ``max_pool_indices(x, <max_pool attrs>, storage_order)``: ONNX MaxPool's
  Indices output.
* ``avg_pool(x, kernel_shape, strides, pads, dilations, ceil_mode,
  count_include_pad, auto_pad)``: ONNX AveragePool.
* ``global_avg_pool(x)``, ``global_max_pool(x)``: over all spatial axes, keeping
  them as size 1.
* ``max_pool_grad(x, y, g, <max_pool attrs>)`` -> dx: the first maximal tap of each
  window, then per input element the sum of g over the windows won there.
* ``avg_pool_grad(g, <avg_pool attrs>, image_shape)`` -> dx: g / count summed over
  the windows covering each element.

Gradients: max_pool: each window's cotangent goes to its first maximum in scan
order (``max_pool_grad``, as ``max_pool_indices`` picks it); avg_pool:
``avg_pool_grad``, its transpose; global_avg_pool: g / size broadcast;
global_max_pool: tied maxima share g evenly; max_pool_indices (int64): none. The
gradient ops are gathers (``window.py``); max_pool_grad over disjoint windows
(undilated, kernel <= stride: the common 2x2 / 2) is one elementwise stage instead --
an element takes its window's g when it is the window's maximum and no earlier tap is.
"""
from __future__ import annotations

import itertools
import math

import numpy as np

from ..ir import expr as E
from ..ir.expr import Const, cast
from ..ir.tensor import compute, reduce, reduce_identity
from ..ir.types import TensorType, bool_, int32, int64
from .reduction import reduce_stage
from .registry import OpDef, check
from .window import (
    _guarded, _ints, _spatial_rank, _auto_pad, _same_pads, _window_out, _image_shape, _padded_source,
    _acc_dtype, _finish, _flat_strides, _np_pad, _windows, _covering, _gather_sum, _float_input,
)


# ============================================================================ windows shared by the pools

def _pool_canon(op):
    def canon(ins, attrs):
        (x,) = ins
        D = _spatial_rank(x, op)
        check(attrs["kernel_shape"] is not None, f"{op}: kernel_shape is required")
        K = _ints(attrs["kernel_shape"], D, 1, "kernel_shape", op, 1)
        strides = _ints(attrs["strides"], D, 1, "strides", op, 1)
        dilations = _ints(attrs["dilations"], D, 1, "dilations", op, 1)
        auto_pad = _auto_pad(attrs["auto_pad"], op)
        ceil_mode = bool(attrs["ceil_mode"])
        if auto_pad == "NOTSET":
            pads = _ints(attrs["pads"], 2 * D, 0, "pads", op, 0)
        else:
            pads = _same_pads(auto_pad, x.shape[2:], K, strides, dilations)
            ceil_mode = False
        out = {"kernel_shape": K, "strides": strides, "pads": pads, "dilations": dilations, "ceil_mode": ceil_mode}
        if op == "avg_pool":
            out["count_include_pad"] = bool(attrs["count_include_pad"])
        if op == "max_pool_indices":
            out["storage_order"] = int(attrs["storage_order"])
            check(out["storage_order"] in (0, 1), f"{op}: storage_order must be 0 or 1, got {out['storage_order']}")
        out["auto_pad"] = "NOTSET"
        return out
    return canon


def _pool_out_spatial(shape, kernel_shape, strides, pads, dilations, ceil_mode, op):
    D = len(shape) - 2
    return [_window_out(n, k, s, d, pb, pe, ceil_mode, op, a)
            for a, (n, k, s, d, pb, pe) in enumerate(zip(shape[2:], kernel_shape, strides, dilations,
                                                         pads[:D], pads[D:]))]


def _np_pool_windows(xp, x_shape, kernel_shape, strides, pads, dilations, ceil_mode, fill):
    """Windows [N, C, *O, *K] of ``xp`` (the input with its pads already applied),
    padded further at the end with ``fill`` where ceil_mode's last window runs past."""
    D = len(x_shape) - 2
    out_sp = _pool_out_spatial(x_shape, kernel_shape, strides, pads, dilations, ceil_mode, "pool")
    extra = [max(0, (o - 1) * s + (k - 1) * d + 1 - n)
             for o, s, k, d, n in zip(out_sp, strides, kernel_shape, dilations, xp.shape[2:])]
    xp = _np_pad(xp, (0,) * D + tuple(extra), fill)
    return _windows(xp, out_sp, kernel_shape, strides, dilations)


# ============================================================================ max_pool

def _max_pool_infer(ins, kernel_shape, strides, pads, dilations, ceil_mode, auto_pad):
    (x,) = ins
    check(x.dtype.is_float or x.dtype.is_int, f"max_pool: expects a float or integer tensor, got {x}")
    out = _pool_out_spatial(x.shape, kernel_shape, strides, pads, dilations, ceil_mode, "max_pool")
    return [TensorType((*x.shape[:2], *out), x.dtype)]


def _max_pool_lower(ins, outs, kernel_shape, strides, pads, dilations, ceil_mode, auto_pad):
    (x,), (o,) = ins, outs
    fill = reduce_identity("max", x.dtype).value
    stages, read = _padded_source(x, o.shape[2:], kernel_shape, strides, dilations, pads, fill)
    stage = compute(o.shape, lambda n, c, *os: reduce("max", list(kernel_shape),
                                                        lambda *ks: read(n, c, os, ks)), "max_pool")
    return stages + [stage]


def _np_max_pool(x, kernel_shape, strides, pads, dilations, ceil_mode, auto_pad):
    x = np.asarray(x)
    D = x.ndim - 2
    fill = -np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).min
    win = _np_pool_windows(_np_pad(x, pads, fill), x.shape, kernel_shape, strides, pads, dilations, ceil_mode,
                           fill)
    return win.max(axis=tuple(range(-D, 0))).astype(x.dtype)


@_float_input
def _max_pool_vjp(em, ins, outs, cts, kernel_shape, strides, pads, dilations, ceil_mode, auto_pad):
    return [em("max_pool_grad", ins[0], outs[0], cts[0], kernel_shape=kernel_shape, strides=strides, pads=pads,
               dilations=dilations, ceil_mode=ceil_mode)]


# ============================================================================ max_pool_indices

def _max_pool_indices_infer(ins, kernel_shape, strides, pads, dilations, ceil_mode, storage_order, auto_pad):
    (t,) = _max_pool_infer(ins, kernel_shape, strides, pads, dilations, ceil_mode, auto_pad)
    return [TensorType(t.shape, int64)]


def _max_pool_indices_lower(ins, outs, kernel_shape, strides, pads, dilations, ceil_mode, storage_order, auto_pad):
    """The first maximum of each window in scan order (row-major over the taps), as
    a flat index into x: (n*C + c)*prod(S) plus the spatial offset in storage_order."""
    (x,), (o,) = ins, outs
    D = x.type.rank - 2
    S = x.shape[2:]
    values = _max_pool_lower(ins, [o], kernel_shape, strides, pads, dilations, ceil_mode, auto_pad)
    m = values[-1]
    K = list(kernel_shape)
    taps = math.prod(K)
    tap_strides = _flat_strides(K, 0)

    def positions(os, ks):
        return [oo * s + k * d - p for oo, k, s, d, p in zip(os, ks, strides, dilations, pads[:D])]

    def first_tap(n, c, *os):
        def body(*ks):
            pos = positions(os, ks)
            conds = [E.binop("and", E.binop("ge", p, Const(0)), E.binop("lt", p, Const(S[a])))
                     for a, p in enumerate(pos)]
            v = x[(n, c, *[E.minimum(E.maximum(p, Const(0)), Const(S[a] - 1)) for a, p in enumerate(pos)])]
            hit = E.binop("eq", v, m[(n, c, *os)])
            if x.dtype.is_float:   # a NaN is the maximum, as in numpy
                hit = E.binop("or", hit, E.binop("ne", v, v))
            tap = sum((k * st for k, st in zip(ks[1:], tap_strides[1:])), ks[0] * tap_strides[0])
            return _guarded(E.select(hit, tap, Const(taps)), conds, Const(taps))
        return reduce("min", K, body)

    first = compute(o.shape, first_tap, "first_tap")
    sp_strides = _flat_strides(S, storage_order)

    def index(n, c, *os):
        t = first[(n, c, *os)]
        ks = [(t // Const(st)) % Const(k) for st, k in zip(tap_strides, K)]
        flat = (n * Const(x.shape[1]) + c) * Const(math.prod(S))
        for p, st in zip(positions(os, ks), sp_strides):
            flat = flat + p * Const(st)
        return cast(int64, flat)

    return values + [first, compute(o.shape, index, "max_pool_indices")]


def _np_max_pool_indices(x, kernel_shape, strides, pads, dilations, ceil_mode, storage_order, auto_pad):
    x = np.asarray(x)
    D = x.ndim - 2
    S = x.shape[2:]
    fill = -np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).min
    args = (x.shape, kernel_shape, strides, pads, dilations, ceil_mode)
    win = _np_pool_windows(_np_pad(x, pads, fill), *args, fill)
    offsets = sum(np.arange(n).reshape([-1 if b == a else 1 for b in range(D)]) * st
                  for a, (n, st) in enumerate(zip(S, _flat_strides(S, storage_order))))
    pos = _np_pool_windows(_np_pad(offsets.reshape(1, 1, *S), pads, -1), *args, -1)
    win = win.reshape(win.shape[:2 + D] + (-1,))
    pos = np.broadcast_to(pos.reshape(pos.shape[:2 + D] + (-1,)), win.shape)
    inside = pos >= 0
    with np.errstate(invalid="ignore"):
        m = np.where(inside, win, fill).max(axis=-1, keepdims=True)
        hit = inside & ((win == m) | (win != win))
    first = np.take_along_axis(pos, hit.argmax(axis=-1)[..., None], axis=-1)[..., 0]
    N, C = x.shape[:2]
    base = (np.arange(N)[:, None] * C + np.arange(C)[None, :]) * math.prod(S)
    return (first + base.reshape(N, C, *([1] * D))).astype(np.int64)


# ============================================================================ avg_pool

def _avg_pool_infer(ins, kernel_shape, strides, pads, dilations, ceil_mode, count_include_pad, auto_pad):
    (x,) = ins
    check(x.dtype.is_float, f"avg_pool: expects a floating-point tensor, got {x}")
    out = _pool_out_spatial(x.shape, kernel_shape, strides, pads, dilations, ceil_mode, "avg_pool")
    return [TensorType((*x.shape[:2], *out), x.dtype)]


def sum_selects(o, k, s, d, pb, lo, hi):
    total = None
    for j in range(k):
        pos = o * s + (j * d - pb)
        inside = E.binop("and", E.binop("ge", pos, Const(lo)), E.binop("lt", pos, Const(hi)))
        term = E.select(inside, Const(1), Const(0))
        total = term if total is None else total + term
    return total


def _taps_inside(oo, k, s, d, pb, lo, hi) -> int:
    return sum(1 for j in range(k) if lo <= oo * s + j * d - pb < hi)


def _tap_breakpoints(n_out, k, s, d, pb, lo, hi) -> set:
    """Output positions where the number of taps inside [lo, hi) can change: the first
    one, and where each tap crosses lo or hi. The count is constant from one of them to
    the next, so these positions see every count (in O(k), not O(outputs))."""
    points = {0} if n_out else set()
    for j in range(k):
        for bound in (lo, hi):
            first = -(-(bound + pb - j * d) // s)   # the first position whose tap j reaches the bound
            points.update(p for p in (first - 1, first) if 0 <= p < n_out)
    return points


def _avg_divisor(S, O, kernel_shape, strides, pads, dilations, count_include_pad):
    """``div(os)``: the number of taps each window averages over (those inside the
    input, or inside the padded input), as an index expression of the output position."""
    D = len(S)
    per_axis = []
    for a in range(D):
        n, k, s, d, pb, pe = S[a], kernel_shape[a], strides[a], dilations[a], pads[a], pads[D + a]
        lo, hi = (-pb, n + pe) if count_include_pad else (0, n)
        counts = {_taps_inside(oo, k, s, d, pb, lo, hi) for oo in _tap_breakpoints(O[a], k, s, d, pb, lo, hi)}
        per_axis.append(counts.pop() if len(counts) == 1 else (k, s, d, pb, lo, hi))
    const = math.prod(c for c in per_axis if isinstance(c, int))

    def div(os):
        out = Const(const)
        for a, spec in enumerate(per_axis):
            if not isinstance(spec, int):
                k, s, d, pb, lo, hi = spec
                out = out * sum_selects(os[a], k, s, d, pb, lo, hi)
        return out
    return div, all(isinstance(c, int) for c in per_axis), const


def _avg_pool_lower(ins, outs, kernel_shape, strides, pads, dilations, ceil_mode, count_include_pad, auto_pad):
    (x,), (o,) = ins, outs
    acc = _acc_dtype(o.dtype)
    O = o.shape[2:]
    stages, read = _padded_source(x, O, kernel_shape, strides, dilations, pads, 0)
    total = compute(o.shape, lambda n, c, *os: reduce("sum", list(kernel_shape),
                                                        lambda *ks: cast(acc, read(n, c, os, ks))), "window_sum")
    # the divisor per axis: taps inside the input, or inside the padded input
    div, _, _ = _avg_divisor(x.shape[2:], O, kernel_shape, strides, pads, dilations, count_include_pad)

    def fn(n, c, *os):
        return cast(o.dtype, total[(n, c, *os)] / cast(acc, div(os)))

    return stages + [total, compute(o.shape, fn, "avg_pool")]


def _np_avg_pool(x, kernel_shape, strides, pads, dilations, ceil_mode, count_include_pad, auto_pad):
    x = np.asarray(x)
    D = x.ndim - 2
    args = (x.shape, kernel_shape, strides, pads, dilations, ceil_mode, 0.0)
    win = _np_pool_windows(_np_pad(x.astype(np.float64), pads, 0.0), *args)
    # the positions that count: the input, or the input with its pads (not ceil_mode's overhang)
    ones = np.ones((1, 1, *x.shape[2:]))
    mask = _np_pad(ones, pads, 1.0 if count_include_pad else 0.0)
    count = _np_pool_windows(mask, *args)
    axes = tuple(range(-D, 0))
    with np.errstate(all="ignore"):
        return (win.sum(axis=axes) / count.sum(axis=axes)).astype(x.dtype)


@_float_input
def _avg_pool_vjp(em, ins, outs, cts, kernel_shape, strides, pads, dilations, ceil_mode, count_include_pad,
                  auto_pad):
    return [em("avg_pool_grad", cts[0], kernel_shape=kernel_shape, strides=strides, pads=pads, dilations=dilations,
               ceil_mode=ceil_mode, count_include_pad=count_include_pad, image_shape=tuple(ins[0].shape[2:]))]


# ============================================================================ global pools

def _global_infer(op):
    def infer(ins):
        (x,) = ins
        _spatial_rank(x, op)
        check(x.dtype.is_float or (op == "global_max_pool" and x.dtype.is_int),
              f"{op}: expects a floating-point tensor, got {x}")
        check(all(n > 0 for n in x.shape[2:]), f"{op}: the spatial axes of {x} are empty")
        return [TensorType((*x.shape[:2], *([1] * (x.rank - 2))), x.dtype)]
    return infer


def _global_lower(combiner):
    def lower(ins, outs):
        (x,), (o,) = ins, outs
        axes = tuple(range(2, len(x.shape)))
        acc = _acc_dtype(o.dtype) if combiner == "sum" else o.dtype
        stage = reduce_stage(x, axes, True, combiner, acc)
        if combiner == "max":
            return [stage]
        n = math.prod(x.shape[2:])
        return [stage, compute(o.shape, lambda *i: cast(o.dtype, stage[i] * Const(1.0 / n, acc)))]
    return lower


def _np_global(fn):
    def ref(x):
        x = np.asarray(x)
        axes = tuple(range(2, x.ndim))
        if fn is np.mean:
            return np.mean(x.astype(np.float64), axis=axes, keepdims=True).astype(x.dtype)
        return np.max(x, axis=axes, keepdims=True)
    return ref


@_float_input
def _global_avg_pool_vjp(em, ins, outs, cts):
    x = ins[0]
    return [em("broadcast_to", cts[0] * (1.0 / math.prod(x.shape[2:])), shape=tuple(x.shape))]


@_float_input
def _global_max_pool_vjp(em, ins, outs, cts):
    """Ties split the gradient evenly between the tied maxima (like max over axes)."""
    x = ins[0]
    axes = tuple(range(2, len(x.shape)))
    hit = em("cast", em("equal", x, outs[0]), dtype=x.dtype)
    return [hit * (cts[0] / em("sum", hit, axis=axes, keepdims=True))]


# ============================================================================ gradient ops: shared

def _grad_pool_canon(op, with_count=False):
    """Canonical attrs of the pooling gradient ops: the pool's own (as its canonicalize
    gives them, so auto_pad is already resolved) plus the input's spatial shape."""
    def canon(ins, attrs):
        g = ins[-1]
        D = _spatial_rank(g, op)
        check(attrs["kernel_shape"] is not None, f"{op}: kernel_shape is required")
        out = {"kernel_shape": _ints(attrs["kernel_shape"], D, 1, "kernel_shape", op, 1),
               "strides": _ints(attrs["strides"], D, 1, "strides", op, 1),
               "pads": _ints(attrs["pads"], 2 * D, 0, "pads", op, 0),
               "dilations": _ints(attrs["dilations"], D, 1, "dilations", op, 1),
               "ceil_mode": bool(attrs["ceil_mode"])}
        if with_count:
            out["count_include_pad"] = bool(attrs["count_include_pad"])
            check(attrs["image_shape"] is not None, f"{op}: image_shape is required")
            out["image_shape"] = _image_shape(attrs["image_shape"], D, op)
        return out
    return canon


def _check_pool_grad_shapes(x_shape, g, kernel_shape, strides, pads, dilations, ceil_mode, op):
    out = _pool_out_spatial(x_shape, kernel_shape, strides, pads, dilations, ceil_mode, op)
    check(tuple(g.shape) == (*x_shape[:2], *out),
          f"{op}: the cotangent {g} does not match the pooled shape {[*x_shape[:2], *out]}")


# ============================================================================ max_pool_grad

def _max_pool_grad_infer(ins, kernel_shape, strides, pads, dilations, ceil_mode):
    x, y, g = ins
    check(x.dtype.is_float, f"max_pool_grad: expects a floating-point tensor, got {x}")
    check(y.dtype is x.dtype and g.dtype is x.dtype, f"max_pool_grad: dtypes differ: {x}, {y}, {g}")
    _check_pool_grad_shapes(x.shape, g, kernel_shape, strides, pads, dilations, ceil_mode, "max_pool_grad")
    check(y.shape == g.shape, f"max_pool_grad: the pooled values {y} and the cotangent {g} differ in shape")
    return [x]


def _disjoint_windows(kernel_shape, strides, dilations) -> bool:
    """Whether every input element lies in at most one window: undilated windows no
    longer than their stride (2x2 / 2, the common pool), whatever the padding."""
    return all(d == 1 and k <= s for k, s, d in zip(kernel_shape, strides, dilations))


def _max_pool_grad_disjoint(x, y, g, o, kernel_shape, strides, pads):
    """max_pool_grad over disjoint windows, one elementwise stage over the input:
    dx[p] = g[w] where x[p] is window w's maximum (or NaN) and none of w's earlier taps
    (scan order) is, else 0 -- the first maximum takes the cotangent, as
    max_pool_indices picks it. No index stage, no integer reduction: each element
    reads its window's y and g and the taps before it, which the cache holds."""
    D = x.type.rank - 2
    S, O, K = x.shape[2:], g.shape[2:], list(kernel_shape)
    pb = pads[:D]
    taps = math.prod(K)
    tap_strides = _flat_strides(K, 0)
    acc = _acc_dtype(o.dtype)

    def hit(v, m):                                   # a NaN is the maximum, as in numpy
        return E.binop("or", E.binop("eq", v, m), E.binop("ne", v, v))

    def fn(n, c, *ps):
        os_, ts, valid = [], [], []
        for a, p in enumerate(ps):
            s, k = strides[a], K[a]
            u = p + pb[a] if pb[a] else p               # >= 0
            oo, t = (u // Const(s), u % Const(s)) if s > 1 else (u, Const(0))
            if k < s:                                   # the stride skips the positions past the window
                valid.append(E.binop("lt", t, Const(k)))
            if (S[a] - 1 + pb[a]) // s >= O[a]:         # the last positions belong to no window
                valid.append(E.binop("lt", oo, Const(O[a])))
                oo = E.minimum(oo, Const(O[a] - 1))
            os_.append(oo)
            ts.append(t)
        m = y[(n, c, *os_)]
        mine = sum((t * Const(st) for t, st in zip(ts[1:], tap_strides[1:])), ts[0] * Const(tap_strides[0]))
        conds = valid + [hit(x[(n, c, *ps)], m)]
        # no earlier tap of the window is a maximum (the last tap is never earlier)
        for f in range(taps - 1):
            tk = [(f // st) % k for st, k in zip(tap_strides, K)]
            idx, inside = [], []
            for a, (oo, k_, s) in enumerate(zip(os_, tk, strides)):
                q = oo * Const(s) + Const(k_ - pb[a]) if s > 1 else oo + Const(k_ - pb[a])
                if k_ < pb[a]:                          # the tap can fall in the begin padding
                    inside.append(E.binop("ge", q, Const(0)))
                    q = E.maximum(q, Const(0))
                if (O[a] - 1) * s + k_ - pb[a] >= S[a]:   # ... or past the input's end
                    inside.append(E.binop("lt", q, Const(S[a])))
                    q = E.minimum(q, Const(S[a] - 1))
                idx.append(q)
            earlier_hit = _guarded(hit(x[(n, c, *idx)], m), inside, Const(False, bool_))
            conds.append(E.binop("or", E.binop("le", mine, Const(f)), E.call("not", earlier_hit)))
        return _guarded(cast(acc, g[(n, c, *os_)]), conds, Const(0, acc))

    stage = compute(o.shape, fn, "max_pool_grad")
    return _finish(stage, o, [stage])


def _max_pool_grad_lower(ins, outs, kernel_shape, strides, pads, dilations, ceil_mode):
    """Disjoint windows: one elementwise stage (``_max_pool_grad_disjoint``). Otherwise two gather stages: the first maximal tap of every window (as max_pool_indices
    finds it), then per input element the sum of g over the windows covering it at
    their first maximal tap -- each element computed on its own, no scatter."""
    (x, y, g), (o,) = ins, outs
    if _disjoint_windows(kernel_shape, strides, dilations):
        return _max_pool_grad_disjoint(x, y, g, o, kernel_shape, strides, pads)
    D = x.type.rank - 2
    S, O, K = x.shape[2:], g.shape[2:], list(kernel_shape)
    taps = math.prod(K)
    tap_strides = _flat_strides(K, 0)

    def flat_tap(ks):   # int32: the index stage and its compares stay narrow (half the bytes of int64)
        return cast(int32, sum((k * st for k, st in zip(ks[1:], tap_strides[1:])), ks[0] * tap_strides[0]))

    def first_tap(n, c, *os):
        def body(*ks):
            conds, idx = [], []
            for a, (oo, k, s, d, pb) in enumerate(zip(os, ks, strides, dilations, pads[:D])):
                p = oo * s + k * d - pb if pb else oo * s + k * d
                if pb > 0:                                        # the window can start in the padding
                    conds.append(E.binop("ge", p, Const(0)))
                    p = E.maximum(p, Const(0))
                if (O[a] - 1) * s + (K[a] - 1) * d - pb >= S[a]:  # ... or end past the input
                    conds.append(E.binop("lt", p, Const(S[a])))
                    p = E.minimum(p, Const(S[a] - 1))
                idx.append(p)
            v = x[(n, c, *idx)]
            hit = E.binop("or", E.binop("eq", v, y[(n, c, *os)]), E.binop("ne", v, v))   # NaN is the max
            return _guarded(E.select(hit, flat_tap(ks), Const(taps, int32)), conds, Const(taps, int32))
        return reduce("min", K, body)

    first = compute(g.shape, first_tap, "first_tap")
    acc = _acc_dtype(o.dtype)

    extents, at = _covering(S, O, K, strides, dilations, pads[:D])

    def fn(n, c, *ps):
        def body(*rs):
            os_, ks, conds = at(ps, rs)
            conds.append(E.binop("eq", first[(n, c, *os_)], flat_tap(ks)))
            return _guarded(cast(acc, g[(n, c, *os_)]), conds, Const(0, acc))
        return _gather_sum(extents, body, acc)

    stage = compute(o.shape, fn, "max_pool_grad")
    return _finish(stage, o, [first, stage])


def _np_max_pool_grad(x, y, g, kernel_shape, strides, pads, dilations, ceil_mode):
    """Each window's g goes to its first maximum in scan order (max_pool_indices)."""
    x, g = np.asarray(x), np.asarray(g)
    idx = _np_max_pool_indices(x, kernel_shape, strides, pads, dilations, ceil_mode, 0, "NOTSET")
    dx = np.zeros(x.size, np.float64)
    np.add.at(dx, idx.reshape(-1), g.astype(np.float64).reshape(-1))
    return dx.reshape(x.shape).astype(x.dtype)


def _max_pool_grad_vjp(em, ins, outs, cts, kernel_shape, strides, pads, dilations, ceil_mode):
    """max_pool_grad(x, y, g) is linear in g (piecewise constant in x, y): g gets the
    cotangent read at each window's first maximum (max_pool_indices)."""
    x, c = ins[0], cts[0]
    idx = em("max_pool_indices", x, kernel_shape=kernel_shape, strides=strides, pads=pads, dilations=dilations,
             ceil_mode=ceil_mode)
    return [None, None, em("gather", em("reshape", c, shape=(-1,)), idx, axis=0)]


# ============================================================================ avg_pool_grad

def _avg_pool_grad_infer(ins, kernel_shape, strides, pads, dilations, ceil_mode, count_include_pad, image_shape):
    (g,) = ins
    check(g.dtype.is_float, f"avg_pool_grad: expects a floating-point tensor, got {g}")
    x_shape = (*g.shape[:2], *image_shape)
    _check_pool_grad_shapes(x_shape, g, kernel_shape, strides, pads, dilations, ceil_mode, "avg_pool_grad")
    return [TensorType(x_shape, g.dtype)]


def _avg_pool_grad_lower(ins, outs, kernel_shape, strides, pads, dilations, ceil_mode, count_include_pad,
                         image_shape):
    """g divided by each window's count, then per input element the sum over the
    windows covering it (a gather)."""
    (g,), (o,) = ins, outs
    D = len(image_shape)
    S, O, K = tuple(image_shape), g.shape[2:], list(kernel_shape)
    acc = _acc_dtype(o.dtype)
    div, constant, const = _avg_divisor(S, O, kernel_shape, strides, pads, dilations, count_include_pad)
    stages = []
    if constant:
        src = g
    else:
        src = compute(g.shape, lambda n, c, *os: cast(acc, g[(n, c, *os)]) / cast(acc, div(os)), "scaled")
        stages.append(src)

    extents, at = _covering(S, O, K, strides, dilations, pads[:D])

    def fn(n, c, *ps):
        def body(*rs):
            os_, _, conds = at(ps, rs)
            return _guarded(cast(acc, src[(n, c, *os_)]), conds, Const(0, acc))
        return _gather_sum(extents, body, acc)

    total = compute(o.shape, fn, "window_sum")
    scale = 1.0 / const if constant else 1.0
    if scale == 1.0 and acc is o.dtype:
        return stages + [total]
    return stages + [total, compute(o.shape, lambda *i: cast(o.dtype, total[i] * Const(scale, acc)),
                                    "avg_pool_grad")]


def _np_avg_pool_grad(g, kernel_shape, strides, pads, dilations, ceil_mode, count_include_pad, image_shape):
    """The transpose of avg_pool: each window's g / count spread over its taps."""
    g = np.asarray(g)
    D = len(image_shape)
    N, C = g.shape[:2]
    x_shape = (N, C, *image_shape)
    args = (x_shape, kernel_shape, strides, pads, dilations, ceil_mode)
    ones = np.ones((1, 1, *image_shape))
    mask = _np_pad(ones, pads, 1.0 if count_include_pad else 0.0)
    count = _np_pool_windows(mask, *args, 0.0).sum(axis=tuple(range(-D, 0)))
    share = g.astype(np.float64) / count
    # scatter each window's share over its taps into the padded (and ceil-extended) input
    out_sp = g.shape[2:]
    full = [max(n + pb + pe, (o - 1) * s + (k - 1) * d + 1)
            for n, pb, pe, o, s, k, d in zip(image_shape, pads[:D], pads[D:], out_sp, strides, kernel_shape,
                                             dilations)]
    buf = np.zeros((N, C, *full))
    for ks in itertools.product(*[range(k) for k in kernel_shape]):
        at = tuple(slice(k * d, k * d + (o - 1) * s + 1, s) for k, d, o, s in zip(ks, dilations, out_sp, strides))
        buf[(slice(None), slice(None)) + at] += share
    crop = tuple(slice(pb, pb + n) for pb, n in zip(pads[:D], image_shape))
    return buf[(slice(None), slice(None)) + crop].astype(g.dtype)


@_float_input
def _avg_pool_grad_vjp(em, ins, outs, cts, kernel_shape, strides, pads, dilations, ceil_mode, count_include_pad,
                       image_shape):
    """avg_pool_grad is linear in g and the transpose of avg_pool: its vjp is avg_pool."""
    return [em("avg_pool", cts[0], kernel_shape=kernel_shape, strides=strides, pads=pads, dilations=dilations,
               ceil_mode=ceil_mode, count_include_pad=count_include_pad)]


# ============================================================================ records

_POOL_ATTRS = {"kernel_shape": None, "strides": None, "pads": None, "dilations": None, "ceil_mode": False}


OPS = [
    OpDef("max_pool", "reduction", _max_pool_infer, _np_max_pool, _max_pool_lower,
          attrs={**_POOL_ATTRS, "auto_pad": "NOTSET"}, canonicalize=_pool_canon("max_pool"), vjp=_max_pool_vjp,
          doc="ONNX MaxPool (values only): windows of kernel_shape over the spatial axes, padding never wins. "
              "Gradient: each window's cotangent goes to its FIRST maximum in scan order (the element "
              "max_pool_indices picks); tied maxima after it get nothing."),
    OpDef("max_pool_indices", "reduction", _max_pool_indices_infer, _np_max_pool_indices, _max_pool_indices_lower,
          attrs={**_POOL_ATTRS, "storage_order": 0, "auto_pad": "NOTSET"},
          canonicalize=_pool_canon("max_pool_indices"), vjp=lambda em, ins, outs, cts, **a: [None],
          doc="ONNX MaxPool's Indices output: the flat int64 index into x of each window's first maximum "
              "(spatial offset row-major, or column-major with storage_order=1)."),
    OpDef("avg_pool", "reduction", _avg_pool_infer, _np_avg_pool, _avg_pool_lower,
          attrs={**_POOL_ATTRS, "count_include_pad": False, "auto_pad": "NOTSET"},
          canonicalize=_pool_canon("avg_pool"), vjp=_avg_pool_vjp,
          doc="ONNX AveragePool: the window mean over the input (count_include_pad: over the padded input)."),
    OpDef("global_avg_pool", "reduction", _global_infer("global_avg_pool"), _np_global(np.mean),
          _global_lower("sum"), vjp=_global_avg_pool_vjp,
          doc="ONNX GlobalAveragePool: mean over the spatial axes, kept as size 1."),
    OpDef("global_max_pool", "reduction", _global_infer("global_max_pool"), _np_global(np.max),
          _global_lower("max"), vjp=_global_max_pool_vjp,
          doc="ONNX GlobalMaxPool: max over the spatial axes, kept as size 1. Gradient: tied maxima share "
              "the cotangent evenly (like max over axes)."),
    OpDef("max_pool_grad", "reduction", _max_pool_grad_infer, _np_max_pool_grad, _max_pool_grad_lower,
          params=("x", "y", "g"), attrs=dict(_POOL_ATTRS), canonicalize=_grad_pool_canon("max_pool_grad"),
          vjp=_max_pool_grad_vjp,
          doc="The gradient of max_pool(x) = y for the cotangent g: dx [N, C, *S], each window's g added at "
              "its first maximum in scan order (max_pool_indices); one elementwise stage over disjoint windows "
              "(kernel <= stride, undilated), else a gather (two stages)."),
    OpDef("avg_pool_grad", "reduction", _avg_pool_grad_infer, _np_avg_pool_grad, _avg_pool_grad_lower,
          params=("g",), attrs={**_POOL_ATTRS, "count_include_pad": False, "image_shape": None},
          canonicalize=_grad_pool_canon("avg_pool_grad", with_count=True), vjp=_avg_pool_grad_vjp,
          doc="The transpose of avg_pool (its gradient): g [N, C, *O] -> dx [N, C, *image_shape], each "
              "window's g / count added over the taps it averages, computed as a gather."),
]
