"""What the windowed ops share (``conv.py``, ``pool.py``, ``im2col.py``): ONNX
attribute checks, the padded input stage, the numpy window view and the gathers
that their gradient ops are made of. Layout (N, C, *spatial), 1-D to 3-D; lists
are per spatial axis, and ``pads`` is ONNX order ``[x1_begin, x2_begin, ...,
x1_end, x2_end, ...]``.

``canonicalize`` (in each op's module) resolves defaults (None -> ones / zeros),
``auto_pad`` ("SAME_UPPER", "SAME_LOWER", "VALID") into explicit ``pads`` (then
``auto_pad`` is "NOTSET"), with the helpers here.

Lowering: padding never reads outside the input. A first stage copies the input
into a zero (or -inf) padded buffer with clamped indices and a select; when the
innermost spatial axis is strided it is unfolded there into (tap, output) --
``P[n, c, ..., kw, ow] = x[n, c, ..., ow*s + kw*d - pad_begin]`` -- so every read
of the main stage is contiguous along the innermost output axis, whatever the
stride, and the default schedule gives it the register-tile (matmul-like)
micro-kernel (``_padded_source``).

The gradient ops are gathers -- each input element sums over the windows that
cover it -- since loops have no atomic scatter (``_covering``, ``_gather_sum``).
The names keep their underscore: they are private to the op modules that import them.
"""
from __future__ import annotations

import math

import numpy as np

from ..ir import expr as E
from ..ir.expr import Const, cast
from ..ir.tensor import compute, reduce
from ..ir.types import TensorType, float32
from .registry import OpTypeError, check


def _guarded(value, conds, fill):
    """``value`` where every condition holds (its indices are in bounds), else ``fill``."""
    if not conds:
        return value
    cond = conds[0]
    for c in conds[1:]:
        cond = E.binop("and", cond, c)
    return E.select(cond, value, fill)


AUTO_PADS = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")


# ============================================================================ attribute helpers

def _ints(v, n: int, default: int, what: str, op: str, minimum: int | None = None) -> tuple[int, ...]:
    if v is None:
        return (default,) * n
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        v = (v,)
    try:
        v = tuple(v)
    except TypeError:
        raise OpTypeError(f"{op}: {what} must be a list of ints, got {v!r}") from None
    if not all(isinstance(a, (int, np.integer)) and not isinstance(a, bool) for a in v):
        raise OpTypeError(f"{op}: {what} must be a list of ints, got {v!r}")
    check(len(v) == n, f"{op}: {what} needs {n} values for {n // (2 if what == 'pads' else 1)} "
                       f"spatial axes, got {len(v)}: {list(v)}")
    v = tuple(int(a) for a in v)
    if minimum is not None:
        check(all(a >= minimum for a in v), f"{op}: {what} must be >= {minimum}, got {list(v)}")
    return v


def _spatial_rank(x: TensorType, op: str) -> int:
    check(x.rank >= 3, f"{op}: expects an input of rank 3 to 5 (N, C, spatial...), got {x}")
    check(x.rank <= 5, f"{op}: supports 1 to 3 spatial axes, got {x}")
    return x.rank - 2


def _auto_pad(auto_pad, op: str) -> str:
    if isinstance(auto_pad, bytes):
        auto_pad = auto_pad.decode()
    check(auto_pad in AUTO_PADS, f"{op}: auto_pad must be one of {', '.join(AUTO_PADS)}, got {auto_pad!r}")
    return auto_pad


def _same_pads(mode: str, S, K, strides, dilations) -> tuple[int, ...]:
    """Explicit pads for auto_pad: SAME_* gives ceil(S / stride) outputs, the odd pad
    at the end (UPPER) or the beginning (LOWER); VALID pads nothing."""
    D = len(S)
    if mode == "VALID":
        return (0,) * (2 * D)
    begin, end = [], []
    for n, k, s, d in zip(S, K, strides, dilations):
        out = -(-n // s)
        total = max(0, (out - 1) * s + (k - 1) * d + 1 - n)
        small, big = total // 2, total - total // 2
        begin.append(small if mode == "SAME_UPPER" else big)
        end.append(big if mode == "SAME_UPPER" else small)
    return tuple(begin + end)


def _window_out(n, k, s, d, pb, pe, ceil_mode, op, axis):
    """Outputs along one axis of a window of k taps, dilation d, stride s."""
    span = (k - 1) * d + 1
    padded = n + pb + pe
    check(padded >= span, f"{op}: the window ({span} along spatial axis {axis}, kernel {k}, dilation {d}) "
                          f"is larger than the padded input ({padded} = {n} + pads {pb} + {pe})")
    if not ceil_mode:
        return (padded - span) // s + 1
    out = -(-(padded - span) // s) + 1
    if (out - 1) * s >= n + pb:      # the last window must start inside the input or the begin padding
        out -= 1
    return out


def _image_shape(v, D, op):
    return _ints(v, D, 1, "image_shape", op, 1)


# ============================================================================ staged (padded) input

def _padded_source(x, out_sp, K, strides, dilations, pads, fill):
    """How the main stage reads the padded input, and the stage that pads it (if any).

    Returns (stages, read) with ``read(n, c, os, ks)`` the padded input at window
    position ``o*s + k*d - pad_begin`` per spatial axis (``os``, ``ks`` index exprs)."""
    D = len(out_sp)
    S = x.shape[2:]
    pb = pads[:D]
    # largest padded position read, per axis
    need = [(o - 1) * s + (k - 1) * d for o, k, s, d in zip(out_sp, K, strides, dilations)]
    no_pad = all(p == 0 for p in pb) and all(nd < n for nd, n in zip(need, S))
    if no_pad and all(s == 1 for s in strides):
        return [], lambda n, c, os, ks: x[(n, c, *[o + k * d for o, k, d in zip(os, ks, dilations)])]

    # padded extent per axis; a strided innermost axis is unfolded into (tap, output)
    span = [(o - 1) * s + (k - 1) * d + 1 for o, k, s, d in zip(out_sp, K, strides, dilations)]
    unfold = strides[-1] > 1
    shape = list(x.shape[:2]) + span[:-1] + ([K[-1], out_sp[-1]] if unfold else [span[-1]])

    def body(n, c, *rest):
        pos = [r - p for r, p in zip(rest[:D - 1], pb)]
        if unfold:
            pos.append(rest[D] * strides[-1] + rest[D - 1] * dilations[-1] - pb[-1])
        else:
            pos.append(rest[D - 1] - pb[-1])
        idx, conds = [n, c], []
        for a in range(D):
            p = pos[a]
            if pb[a] > 0:
                conds.append(E.binop("ge", pos[a], Const(0)))
                p = E.maximum(p, Const(0))
            if span[a] - pb[a] > S[a]:
                conds.append(E.binop("lt", pos[a], Const(S[a])))
                p = E.minimum(p, Const(S[a] - 1))
            idx.append(p)
        return _guarded(x[tuple(idx)], conds, Const(fill, x.dtype))

    padded = compute(shape, body, "pad")

    def read(n, c, os, ks):
        idx = [o * s + k * d for o, k, s, d in zip(os[:-1], ks[:-1], strides, dilations)]
        idx += [ks[-1], os[-1]] if unfold else [os[-1] + ks[-1] * dilations[-1]]
        return padded[(n, c, *idx)]

    return [padded], read


def _acc_dtype(dt):
    return float32 if dt.is_float and dt.bits < 32 else dt


def _finish(stage, o, stages):
    if stage.dtype is not o.dtype:
        stages.append(compute(o.shape, lambda *i: cast(o.dtype, stage[i])))
    return stages


def _flat_strides(shape, storage_order):
    """Element strides of ``shape`` in row-major (0) or column-major (1) order."""
    dims = list(shape) if storage_order == 0 else list(reversed(shape))
    st = [math.prod(dims[a + 1:]) for a in range(len(dims))]
    return st if storage_order == 0 else list(reversed(st))


# ============================================================================ numpy references

def _np_pad(x, pads, value):
    D = x.ndim - 2
    return np.pad(x, [(0, 0), (0, 0)] + [(pads[a], pads[D + a]) for a in range(D)], constant_values=value)


def _windows(xp, out_sp, K, strides, dilations):
    """xp[n, c, *(o*s + k*d)] as an array [N, C, *O, *K] (xp padded far enough)."""
    D = len(K)
    span = [(k - 1) * d + 1 for k, d in zip(K, dilations)]
    v = np.lib.stride_tricks.sliding_window_view(xp, span, axis=tuple(range(2, 2 + D)))
    idx = (slice(None), slice(None)) + tuple(slice(None, (o - 1) * s + 1, s) for o, s in zip(out_sp, strides)) \
        + tuple(slice(None, None, d) for d in dilations)
    return v[idx]


# ============================================================================ gradient ops: gathers

def _covering(S, O, K, strides, dilations, pb):
    """The windows covering each input position, for a gather over them: returns
    (extents, at) where a reduction over ``extents`` enumerates, per spatial axis, the
    candidate windows of an input position, and ``at(pos, rs)`` gives for input
    position ``pos`` and reduction indices ``rs`` the window ``o`` (clamped into
    range), the tap ``k`` with ``o*s + k*d - pad_begin == pos``, and the conditions
    for that window to exist. Undilated strided axes enumerate only the ceil(K/s)
    windows that can cover a position (o = (pos + pad_begin) // s - j), others every
    tap k (the window exists when pos + pad_begin - k*d divides by s)."""
    extents, plans = [], []
    for n, no, kk, s, d, b in zip(S, O, K, strides, dilations, pb):
        if d == 1 and s > 1:
            J = -(-kk // s)
            extents.append(J)
            plans.append(("offset", n, no, kk, s, d, b, J))
        else:
            extents.append(kk)
            plans.append(("tap", n, no, kk, s, d, b, kk))

    def at(pos, rs):
        os_, ks, conds = [], [], []
        for p, r, (how, n, no, kk, s, d, b, J) in zip(pos, rs, plans):
            if how == "offset":
                u = p + b if b else p                                    # >= 0
                o = u // Const(s) - r if J > 1 else u // Const(s)
                k = u % Const(s) + r * s if J > 1 else u % Const(s)
                if kk % s:
                    conds.append(E.binop("lt", k, Const(kk)))
                    k = E.minimum(k, Const(kk - 1))
                lo = J > 1
            else:
                k = r
                u = p - r * d + b if kk > 1 else p + b                  # = o * s
                low = b - (kk - 1) * d                                   # smallest u
                if s > 1:
                    A = max(0, -(-(-low) // s))                          # u + A*s >= 0 everywhere
                    v = u + Const(A * s) if A else u
                    conds.append(E.binop("eq", v % Const(s), Const(0)))
                    o = v // Const(s) - Const(A) if A else v // Const(s)
                else:
                    o = u
                lo = low < 0
            if lo:
                conds.append(E.binop("ge", o, Const(0)))
                o = E.maximum(o, Const(0))
            if (n - 1 + b) // s >= no:
                conds.append(E.binop("lt", o, Const(no)))
                o = E.minimum(o, Const(no - 1))
            os_.append(o)
            ks.append(k)
        return os_, ks, conds
    return extents, at


def _gather_sum(extents, body, acc):
    """The sum of body over the candidate windows: a reduction, or with a single
    candidate per position (non-overlapping windows) the plain expression."""
    if all(e == 1 for e in extents):
        return body(*[Const(0)] * len(extents))
    return reduce("sum", extents, body)


def _float_input(rule):
    def vjp(em, ins, outs, cts, **attrs):
        if ins[0].dtype.kind != "f":
            return [None] * len(ins)
        return rule(em, ins, outs, cts, **attrs)
    return vjp
