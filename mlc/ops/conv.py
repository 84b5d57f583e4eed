"""Convolution and pooling with ONNX semantics, layout (N, C, *spatial), 1-D to 3-D.

Ops and their attributes (all lists are per spatial axis; ``pads`` is ONNX order
``[x1_begin, x2_begin, ..., x1_end, x2_end, ...]``):

* ``conv(x, w, strides, dilations, pads, group, auto_pad, kernel_shape)``:
  x [N, C, *S], w [M, C/group, *K] -> [N, M, *O]. There is no bias input: ONNX
  ``Conv(X, W, B)`` is ``conv(x, w) + reshape(b, (M, 1, ..., 1))``.
* ``conv_transpose(x, w, strides, dilations, pads, output_padding, output_shape,
  group, auto_pad, kernel_shape)``: x [N, C, *S], w [C, M/group, *K] -> [N, M, *O]
  with O = strides*(S-1) + output_padding + (K-1)*dilations + 1 - pad_begin - pad_end.
  No bias input either (add it as for conv).
* ``max_pool(x, kernel_shape, strides, pads, dilations, ceil_mode, auto_pad)``:
  ONNX MaxPool's first output (no indices); floats and integers.
* ``avg_pool(x, kernel_shape, strides, pads, dilations, ceil_mode,
  count_include_pad, auto_pad)``: ONNX AveragePool.
* ``global_avg_pool(x)``, ``global_max_pool(x)``: over all spatial axes, keeping
  them as size 1.
* ``im2col(x, kernel_shape, strides, pads, dilations)``: the windows of a 2-D
  convolution as columns [N, C*KH*KW, OH*OW]; ``col2im(cols, image_shape, ...)`` is
  its adjoint (each column entry added back at the position it was read from).

Gradients (``vjp`` rules, near the end of this file). conv: dx is conv_transpose of g
with the same weight and attributes (output_padding restoring the rows the stride
skipped), or for 2-D convolutions with C*KH*KW >= 64 ``col2im(W^T @ g)``, which
avoids conv_transpose's s*s overwork on strided convolutions and runs on the matmul
micro-kernel; dw is ``conv_weight_grad(x, g)``. conv_transpose: dx = conv(g, w),
dw = conv_weight_grad(g, x) (roles swapped). im2col <-> col2im. max_pool: each
window's cotangent goes to its first maximum in scan order (``max_pool_grad``, as
``max_pool_indices`` picks it); avg_pool: ``avg_pool_grad``, its transpose;
global_avg_pool: g / size broadcast; global_max_pool: tied maxima share g evenly;
max_pool_indices (int64): none. The gradient ops are gathers -- each input element
sums over the windows that cover it -- since loops have no atomic scatter:

* ``conv_weight_grad(x, g, kernel_shape, strides, dilations, pads, group)`` -> dw
  [M, C/group, *K]. With >= 8 output channels per group it lowers to a matrix form:
  g transposed to [N, *O, M], partial sums per batch chunk over rows (c, *k) --
  an implicit im2col of the padded input -- and columns m, on the register-tile
  micro-kernel, then a sum over the chunks.
* ``max_pool_grad(x, y, g, <max_pool attrs>)`` -> dx: the first maximal tap of each
  window, then per input element the sum of g over the windows won there.
* ``avg_pool_grad(g, <avg_pool attrs>, image_shape)`` -> dx: g / count summed over
  the windows covering each element.

``canonicalize`` resolves defaults (None -> ones / zeros), ``auto_pad``
("SAME_UPPER", "SAME_LOWER", "VALID") and conv_transpose's ``output_shape`` into
explicit ``pads`` (then ``auto_pad`` is "NOTSET" and ``output_shape`` None), and
``kernel_shape`` of the convolutions into the weight's spatial shape.

Lowering: padding never reads outside the input. A first stage copies the input
into a zero (or -inf) padded buffer with clamped indices and a select; when the
innermost spatial axis is strided it is unfolded there into (tap, output) --
``P[n, c, ..., kw, ow] = x[n, c, ..., ow*s + kw*d - pad_begin]`` -- so every read
of the main stage is contiguous along the innermost output axis, whatever the
stride, and the default schedule gives it the register-tile (matmul-like)
micro-kernel. The convolution is ``sum[ci < C/group, *k < K]`` over that buffer;
float16 is accumulated in float32. conv_transpose first spreads the input out
(stride - 1 zeros between elements) and pads it, then runs a stride-1 conv with
the flipped kernel.
"""
from __future__ import annotations

import itertools
import math

import numpy as np

from ..ir import expr as E
from ..ir.expr import Const, cast
from ..ir.tensor import compute, reduce, reduce_identity
from ..ir.types import TensorType, float32, int64
from .reduction import reduce_stage
from .registry import OpDef, OpTypeError, check

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


# ============================================================================ conv

def _conv_canon(ins, attrs, transpose=False):
    op = "conv_transpose" if transpose else "conv"
    x, w = ins
    D = _spatial_rank(x, op)
    check(w.rank == x.rank, f"{op}: the weight must have rank {x.rank} like the input, got {w}")
    K = w.shape[2:]
    ks = attrs["kernel_shape"]
    if ks is not None:
        check(_ints(ks, D, 1, "kernel_shape", op) == K, f"{op}: kernel_shape {list(ks)} differs from the weight {w}")
    strides = _ints(attrs["strides"], D, 1, "strides", op, 1)
    dilations = _ints(attrs["dilations"], D, 1, "dilations", op, 1)
    group = attrs["group"]
    check(isinstance(group, (int, np.integer)) and not isinstance(group, bool) and group >= 1,
          f"{op}: group must be a positive int, got {group!r}")
    auto_pad = _auto_pad(attrs["auto_pad"], op)
    out = {"strides": strides, "dilations": dilations}
    if not transpose:
        if auto_pad == "NOTSET":
            pads = _ints(attrs["pads"], 2 * D, 0, "pads", op, 0)
        else:
            pads = _same_pads(auto_pad, x.shape[2:], K, strides, dilations)
        out.update(pads=pads, group=int(group), auto_pad="NOTSET", kernel_shape=tuple(K))
        return out
    opad = _ints(attrs["output_padding"], D, 0, "output_padding", op, 0)
    oshape = attrs["output_shape"]
    S = x.shape[2:]
    if oshape is not None or auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        if oshape is None:
            oshape = [n * s for n, s in zip(S, strides)]
        else:
            oshape = list(oshape)
            if len(oshape) == D + 2:     # some exporters give the whole shape
                oshape = oshape[2:]
            oshape = _ints(oshape, D, 1, "output_shape", op, 1)
        begin, end = [], []
        for n, k, s, d, p, o in zip(S, K, strides, dilations, opad, oshape):
            total = s * (n - 1) + p + (k - 1) * d + 1 - o
            small, big = total // 2, total - total // 2
            begin.append(small if auto_pad == "SAME_UPPER" else big)
            end.append(big if auto_pad == "SAME_UPPER" else small)
        pads = tuple(begin + end)
    elif auto_pad == "VALID":
        pads = (0,) * (2 * D)
    else:
        pads = _ints(attrs["pads"], 2 * D, 0, "pads", op)
    out.update(pads=pads, output_padding=opad, output_shape=None, group=int(group), auto_pad="NOTSET",
               kernel_shape=tuple(K))
    return out


def _float_operands(x, w, op):
    check(x.dtype.is_float, f"{op}: expects floating-point tensors, got {x}")
    check(w.dtype is x.dtype, f"{op}: input and weight dtypes differ: {x} and {w}")


def _conv_out_shape(x, w, strides, dilations, pads, group):
    D = x.rank - 2
    N, C = x.shape[:2]
    M, Cg = w.shape[:2]
    check(C % group == 0, f"conv: {C} input channels do not split into {group} groups")
    check(Cg * group == C, f"conv: the weight {w} expects {Cg} channels per group ({Cg * group} in all, "
                           f"group={group}), the input {x} has {C}")
    check(M % group == 0, f"conv: {M} output channels (weight {w}) do not split into {group} groups")
    out = [_window_out(n, k, s, d, pb, pe, False, "conv", a)
           for a, (n, k, s, d, pb, pe) in enumerate(zip(x.shape[2:], w.shape[2:], strides, dilations,
                                                          pads[:D], pads[D:]))]
    return (N, M, *out)


def _conv_infer(ins, strides, dilations, pads, group, auto_pad, kernel_shape):
    x, w = ins
    _float_operands(x, w, "conv")
    return [TensorType(_conv_out_shape(x, w, strides, dilations, pads, group), x.dtype)]


def _conv_lower(ins, outs, strides, dilations, pads, group, auto_pad, kernel_shape):
    (x, w), (o,) = ins, outs
    M, Cg, *K = w.shape
    Mg = M // group
    acc = _acc_dtype(o.dtype)
    stages, read = _padded_source(x, o.shape[2:], K, strides, dilations, pads, 0)

    def fn(n, m, *os):
        base = (m // Mg) * Cg if group > 1 else Const(0)

        def body(ci, *ks):
            return cast(acc, read(n, base + ci, os, ks)) * cast(acc, w[(m, ci, *ks)])
        return reduce("sum", [Cg, *K], body)

    stage = compute(o.shape, fn, "conv")
    return _finish(stage, o, stages + [stage])


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


_LETTERS = "ABCDEFGHIJ"   # spatial axes in einsum subscripts (lowercase: n, g, c, m)


def _np_conv(x, w, strides, dilations, pads, group, auto_pad, kernel_shape):
    x, w = np.asarray(x), np.asarray(w)
    D = x.ndim - 2
    N, _, *S = x.shape
    M, Cg, *K = w.shape
    out_sp = [(n + pb + pe - (k - 1) * d - 1) // s + 1
              for n, k, s, d, pb, pe in zip(S, K, strides, dilations, pads[:D], pads[D:])]
    win = _windows(_np_pad(x.astype(np.float64), pads, 0), out_sp, K, strides, dilations)
    win = win.reshape(N, group, Cg, *out_sp, *K)
    wg = w.astype(np.float64).reshape(group, M // group, Cg, *K)
    o_, k_ = _LETTERS[:D], _LETTERS[D:2 * D]
    y = np.einsum(f"ngc{o_}{k_},gmc{k_}->ngm{o_}", win, wg)
    return y.reshape(N, M, *out_sp).astype(x.dtype)


# ============================================================================ conv_transpose

def _convt_out_shape(x, w, strides, dilations, pads, output_padding, group):
    D = x.rank - 2
    N, C = x.shape[:2]
    Cw, Mg = w.shape[:2]
    op = "conv_transpose"
    check(Cw == C, f"{op}: the weight {w} is for {Cw} input channels, the input {x} has {C}")
    check(C % group == 0, f"{op}: {C} input channels do not split into {group} groups")
    out = []
    for a, (n, k, s, d, p, pb, pe) in enumerate(zip(x.shape[2:], w.shape[2:], strides, dilations,
                                                     output_padding, pads[:D], pads[D:])):
        o = s * (n - 1) + p + (k - 1) * d + 1 - pb - pe
        check(o >= 1, f"{op}: spatial axis {a} has {o} outputs (input {n}, kernel {k}, stride {s}, "
                      f"dilation {d}, output_padding {p}, pads {pb} + {pe})")
        out.append(o)
    return (N, Mg * group, *out)


def _convt_infer(ins, strides, dilations, pads, output_padding, output_shape, group, auto_pad, kernel_shape):
    x, w = ins
    _float_operands(x, w, "conv_transpose")
    return [TensorType(_convt_out_shape(x, w, strides, dilations, pads, output_padding, group), x.dtype)]


def _convt_lower(ins, outs, strides, dilations, pads, output_padding, output_shape, group, auto_pad,
                 kernel_shape):
    """y[o] = sum over i, k with i*s + k*d - pad_begin = o of x[i] * w[k]. The input is
    first spread out (s - 1 zeros between elements) and padded, into Z with
    Z[o + k'*d] = x[i] for the flipped tap k' = K-1-k, so y is a stride-1 conv of Z."""
    (x, w), (o,) = ins, outs
    D = x.type.rank - 2
    C, Mg, *K = w.shape
    Cg = C // group
    S = x.shape[2:]
    O = o.shape[2:]
    acc = _acc_dtype(o.dtype)
    P0 = [(k - 1) * d - pb for k, d, pb in zip(K, dilations, pads[:D])]
    Zlen = [n + (k - 1) * d for n, k, d in zip(O, K, dilations)]

    def zbody(n, c, *t):
        idx, conds = [n, c], []
        for a in range(D):
            s = strides[a]
            if s == 1:
                i = t[a] - P0[a]
                lo_ok = P0[a] > 0                       # t >= P0 can fail
            else:
                A = max(0, -(-P0[a] // s))              # u = t - P0 + A*s >= 0 for every t >= 0
                u = t[a] + (A * s - P0[a])
                conds.append(E.binop("eq", u % s, Const(0)))
                i = u // s - A
                lo_ok = A > 0
            if lo_ok:
                conds.append(E.binop("ge", i, Const(0)))
                i = E.maximum(i, Const(0))
            if (Zlen[a] - 1 - P0[a]) // s >= S[a] or (Zlen[a] - 1 - P0[a]) >= S[a] * s:
                conds.append(E.binop("lt", i, Const(S[a])))
                i = E.minimum(i, Const(S[a] - 1))
            idx.append(i)
        return _guarded(x[tuple(idx)], conds, Const(0, x.dtype))

    z = compute([*x.shape[:2], *Zlen], zbody, "spread")

    def fn(n, m, *os):
        g = m // Mg if group > 1 else Const(0)
        mm = m % Mg if group > 1 else m

        def body(ci, *ks):
            c = g * Cg + ci
            zi = [oo + kk * d for oo, kk, d in zip(os, ks, dilations)]
            wi = [Const(k - 1) - kk for k, kk in zip(K, ks)]
            return cast(acc, z[(n, c, *zi)]) * cast(acc, w[(c, mm, *wi)])
        return reduce("sum", [Cg, *K], body)

    stage = compute(o.shape, fn, "conv_transpose")
    return _finish(stage, o, [z, stage])


def _np_conv_transpose(x, w, strides, dilations, pads, output_padding, output_shape, group, auto_pad,
                       kernel_shape):
    """Scatter: every input element adds x[i] * w[k] at full position i*s + k*d, then
    the full result is cropped by the pads (or extended, for negative pads)."""
    x, w = np.asarray(x), np.asarray(w)
    D = x.ndim - 2
    N, C, *S = x.shape
    _, Mg, *K = w.shape
    Cg = C // group
    pb, pe = pads[:D], pads[D:]
    full = [(n - 1) * s + (k - 1) * d + 1 for n, k, s, d in zip(S, K, strides, dilations)]
    lead = [max(0, -p) for p in pb]
    out_sp = [f + op - b - e for f, op, b, e in zip(full, output_padding, pb, pe)]
    buf = np.zeros([N, group, Mg] + [l + f + op + max(0, -e) for l, f, op, e in
                                     zip(lead, full, output_padding, pe)], np.float64)
    xg = x.astype(np.float64).reshape(N, group, Cg, *S)
    wg = w.astype(np.float64).reshape(group, Cg, Mg, *K)
    s_ = _LETTERS[:D]
    for ks in itertools.product(*[range(k) for k in K]):
        contrib = np.einsum(f"ngc{s_},gcm->ngm{s_}", xg, wg[(slice(None),) * 3 + ks])
        at = tuple(slice(l + k * d, l + k * d + (n - 1) * s + 1, s)
                   for l, k, d, n, s in zip(lead, ks, dilations, S, strides))
        buf[(slice(None),) * 3 + at] += contrib
    crop = tuple(slice(l + b, l + b + o) for l, b, o in zip(lead, pb, out_sp))
    y = buf[(slice(None),) * 3 + crop]
    return y.reshape(N, group * Mg, *out_sp).astype(x.dtype)


# ============================================================================ pools

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


def _max_pool_infer(ins, kernel_shape, strides, pads, dilations, ceil_mode, auto_pad):
    (x,) = ins
    check(x.dtype.is_float or x.dtype.is_int, f"max_pool: expects a float or integer tensor, got {x}")
    out = _pool_out_spatial(x.shape, kernel_shape, strides, pads, dilations, ceil_mode, "max_pool")
    return [TensorType((*x.shape[:2], *out), x.dtype)]


def _max_pool_indices_infer(ins, kernel_shape, strides, pads, dilations, ceil_mode, storage_order, auto_pad):
    (t,) = _max_pool_infer(ins, kernel_shape, strides, pads, dilations, ceil_mode, auto_pad)
    return [TensorType(t.shape, int64)]


def _avg_pool_infer(ins, kernel_shape, strides, pads, dilations, ceil_mode, count_include_pad, auto_pad):
    (x,) = ins
    check(x.dtype.is_float, f"avg_pool: expects a floating-point tensor, got {x}")
    out = _pool_out_spatial(x.shape, kernel_shape, strides, pads, dilations, ceil_mode, "avg_pool")
    return [TensorType((*x.shape[:2], *out), x.dtype)]


def _max_pool_lower(ins, outs, kernel_shape, strides, pads, dilations, ceil_mode, auto_pad):
    (x,), (o,) = ins, outs
    fill = reduce_identity("max", x.dtype).value
    stages, read = _padded_source(x, o.shape[2:], kernel_shape, strides, dilations, pads, fill)
    stage = compute(o.shape, lambda n, c, *os: reduce("max", list(kernel_shape),
                                                        lambda *ks: read(n, c, os, ks)), "max_pool")
    return stages + [stage]


def _flat_strides(shape, storage_order):
    """Element strides of ``shape`` in row-major (0) or column-major (1) order."""
    dims = list(shape) if storage_order == 0 else list(reversed(shape))
    st = [math.prod(dims[a + 1:]) for a in range(len(dims))]
    return st if storage_order == 0 else list(reversed(st))


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


def _np_pool_windows(xp, x_shape, kernel_shape, strides, pads, dilations, ceil_mode, fill):
    """Windows [N, C, *O, *K] of ``xp`` (the input with its pads already applied),
    padded further at the end with ``fill`` where ceil_mode's last window runs past."""
    D = len(x_shape) - 2
    out_sp = _pool_out_spatial(x_shape, kernel_shape, strides, pads, dilations, ceil_mode, "pool")
    extra = [max(0, (o - 1) * s + (k - 1) * d + 1 - n)
             for o, s, k, d, n in zip(out_sp, strides, kernel_shape, dilations, xp.shape[2:])]
    xp = _np_pad(xp, (0,) * D + tuple(extra), fill)
    return _windows(xp, out_sp, kernel_shape, strides, dilations)


def _np_max_pool(x, kernel_shape, strides, pads, dilations, ceil_mode, auto_pad):
    x = np.asarray(x)
    D = x.ndim - 2
    fill = -np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).min
    win = _np_pool_windows(_np_pad(x, pads, fill), x.shape, kernel_shape, strides, pads, dilations, ceil_mode,
                           fill)
    return win.max(axis=tuple(range(-D, 0))).astype(x.dtype)


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


# ============================================================================ im2col

def _im2col_canon(ins, attrs):
    (x,) = ins
    check(x.rank == 4, f"im2col: expects an [N, C, H, W] tensor, got {x}")
    check(attrs["kernel_shape"] is not None, "im2col: kernel_shape is required")
    return {"kernel_shape": _ints(attrs["kernel_shape"], 2, 1, "kernel_shape", "im2col", 1),
            "strides": _ints(attrs["strides"], 2, 1, "strides", "im2col", 1),
            "pads": _ints(attrs["pads"], 4, 0, "pads", "im2col", 0),
            "dilations": _ints(attrs["dilations"], 2, 1, "dilations", "im2col", 1)}


def _im2col_out(shape, kernel_shape, strides, pads, dilations):
    return [_window_out(n, k, s, d, pads[a], pads[2 + a], False, "im2col", a)
            for a, (n, k, s, d) in enumerate(zip(shape[2:], kernel_shape, strides, dilations))]


def _im2col_infer(ins, kernel_shape, strides, pads, dilations):
    (x,) = ins
    OH, OW = _im2col_out(x.shape, kernel_shape, strides, pads, dilations)
    return [TensorType((x.shape[0], x.shape[1] * math.prod(kernel_shape), OH * OW), x.dtype)]


def _np_im2col(x, kernel_shape, strides, pads, dilations):
    x = np.asarray(x)
    out_sp = _im2col_out(x.shape, kernel_shape, strides, pads, dilations)
    win = _windows(_np_pad(x, pads, 0), out_sp, kernel_shape, strides, dilations)   # [N, C, OH, OW, KH, KW]
    N, C = x.shape[:2]
    return np.ascontiguousarray(win.transpose(0, 1, 4, 5, 2, 3)).reshape(N, C * math.prod(kernel_shape), -1)


def _im2col_lower(ins, outs, kernel_shape, strides, pads, dilations):
    (x,), (o,) = ins, outs
    KH, KW = kernel_shape
    H, W = x.shape[2:]
    OW = _im2col_out(x.shape, kernel_shape, strides, pads, dilations)[1]

    def fn(n, r, p):
        c, kh, kw = r // (KH * KW), (r // KW) % KH, r % KW
        h = (p // OW) * strides[0] + kh * dilations[0] - pads[0]
        w = (p % OW) * strides[1] + kw * dilations[1] - pads[1]
        conds = [E.binop("ge", h, Const(0)), E.binop("lt", h, Const(H)),
                 E.binop("ge", w, Const(0)), E.binop("lt", w, Const(W))]
        at = x[n, c, E.minimum(E.maximum(h, Const(0)), Const(H - 1)), E.minimum(E.maximum(w, Const(0)), Const(W - 1))]
        return _guarded(at, conds, Const(0, x.dtype))
    return [compute(o.shape, fn, "im2col")]


# ============================================================================ gradient ops

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


def _image_shape(v, D, op):
    return _ints(v, D, 1, "image_shape", op, 1)


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


# ---------------------------------------------------------------------------- max_pool_grad

def _max_pool_grad_infer(ins, kernel_shape, strides, pads, dilations, ceil_mode):
    x, y, g = ins
    check(x.dtype.is_float, f"max_pool_grad: expects a floating-point tensor, got {x}")
    check(y.dtype is x.dtype and g.dtype is x.dtype, f"max_pool_grad: dtypes differ: {x}, {y}, {g}")
    _check_pool_grad_shapes(x.shape, g, kernel_shape, strides, pads, dilations, ceil_mode, "max_pool_grad")
    check(y.shape == g.shape, f"max_pool_grad: the pooled values {y} and the cotangent {g} differ in shape")
    return [x]


def _max_pool_grad_lower(ins, outs, kernel_shape, strides, pads, dilations, ceil_mode):
    """Two gather stages: the first maximal tap of every window (as max_pool_indices
    finds it), then per input element the sum of g over the windows covering it at
    their first maximal tap -- each element computed on its own, no scatter."""
    (x, y, g), (o,) = ins, outs
    D = x.type.rank - 2
    S, O, K = x.shape[2:], g.shape[2:], list(kernel_shape)
    taps = math.prod(K)
    tap_strides = _flat_strides(K, 0)

    def flat_tap(ks):
        return sum((k * st for k, st in zip(ks[1:], tap_strides[1:])), ks[0] * tap_strides[0])

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
            return _guarded(E.select(hit, flat_tap(ks), Const(taps)), conds, Const(taps))
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


# ---------------------------------------------------------------------------- avg_pool_grad

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


# ---------------------------------------------------------------------------- col2im

def _col2im_canon(ins, attrs):
    check(attrs["image_shape"] is not None, "col2im: image_shape is required")
    check(attrs["kernel_shape"] is not None, "col2im: kernel_shape is required")
    return {"image_shape": _image_shape(attrs["image_shape"], 2, "col2im"),
            "kernel_shape": _ints(attrs["kernel_shape"], 2, 1, "kernel_shape", "col2im", 1),
            "strides": _ints(attrs["strides"], 2, 1, "strides", "col2im", 1),
            "pads": _ints(attrs["pads"], 4, 0, "pads", "col2im", 0),
            "dilations": _ints(attrs["dilations"], 2, 1, "dilations", "col2im", 1)}


def _col2im_infer(ins, image_shape, kernel_shape, strides, pads, dilations):
    (c,) = ins
    check(c.rank == 3, f"col2im: expects an [N, C*KH*KW, OH*OW] tensor, got {c}")
    taps = math.prod(kernel_shape)
    check(c.shape[1] % taps == 0, f"col2im: {c.shape[1]} rows do not split into {taps} kernel taps")
    out = _im2col_out((1, 1, *image_shape), kernel_shape, strides, pads, dilations)
    check(c.shape[2] == math.prod(out), f"col2im: {c} has {c.shape[2]} columns, the windows over "
                                        f"{list(image_shape)} number {out[0]} x {out[1]}")
    return [TensorType((c.shape[0], c.shape[1] // taps, *image_shape), c.dtype)]


def _col2im_lower(ins, outs, image_shape, kernel_shape, strides, pads, dilations):
    """x[n, c, h, w] = the sum of the columns whose window tap lands on (h, w): a gather."""
    (cols,), (o,) = ins, outs
    KH, KW = kernel_shape
    S = tuple(image_shape)
    O = _im2col_out((1, 1, *S), kernel_shape, strides, pads, dilations)
    acc = _acc_dtype(o.dtype)

    extents, at = _covering(S, O, kernel_shape, strides, dilations, pads[:2])

    def fn(n, c, h, w):
        def body(*rs):
            (oh, ow), (kh, kw), conds = at((h, w), rs)
            v = cols[n, c * Const(KH * KW) + kh * Const(KW) + kw, oh * Const(O[1]) + ow]
            return _guarded(cast(acc, v), conds, Const(0, acc))
        return _gather_sum(extents, body, acc)

    stage = compute(o.shape, fn, "col2im")
    return _finish(stage, o, [stage])


def _np_col2im(cols, image_shape, kernel_shape, strides, pads, dilations):
    cols = np.asarray(cols)
    N, R, _ = cols.shape
    (KH, KW), (H, W) = kernel_shape, image_shape
    C = R // (KH * KW)
    OH, OW = _im2col_out((1, 1, H, W), kernel_shape, strides, pads, dilations)
    c6 = cols.astype(np.float64).reshape(N, C, KH, KW, OH, OW)
    buf = np.zeros((N, C, H + pads[0] + pads[2] + (KH - 1) * dilations[0] + strides[0],
                    W + pads[1] + pads[3] + (KW - 1) * dilations[1] + strides[1]))
    for kh, kw in itertools.product(range(KH), range(KW)):
        h0, w0 = kh * dilations[0], kw * dilations[1]
        buf[:, :, h0:h0 + (OH - 1) * strides[0] + 1:strides[0], w0:w0 + (OW - 1) * strides[1] + 1:strides[1]] \
            += c6[:, :, kh, kw]
    return buf[:, :, pads[0]:pads[0] + H, pads[1]:pads[1] + W].astype(cols.dtype)


# ---------------------------------------------------------------------------- conv_weight_grad

_WGRAD_PART_BYTES = 16 << 20    # the partial sums over batch chunks stay below this
_WGRAD_MIN_COLUMNS = 8          # output channels per group from which the matrix form pays off


def _conv_weight_grad_canon(ins, attrs):
    x, g = ins
    D = _spatial_rank(x, "conv_weight_grad")
    op = "conv_weight_grad"
    check(attrs["kernel_shape"] is not None, f"{op}: kernel_shape is required")
    group = attrs["group"]
    check(isinstance(group, (int, np.integer)) and not isinstance(group, bool) and group >= 1,
          f"{op}: group must be a positive int, got {group!r}")
    return {"kernel_shape": _ints(attrs["kernel_shape"], D, 1, "kernel_shape", op, 1),
            "strides": _ints(attrs["strides"], D, 1, "strides", op, 1),
            "dilations": _ints(attrs["dilations"], D, 1, "dilations", op, 1),
            "pads": _ints(attrs["pads"], 2 * D, 0, "pads", op, 0), "group": int(group)}


def _conv_weight_grad_infer(ins, kernel_shape, strides, dilations, pads, group):
    x, g = ins
    op = "conv_weight_grad"
    check(x.dtype.is_float and g.dtype is x.dtype,
          f"{op}: expects floating-point tensors of one dtype, got {x} and {g}")
    check(g.rank == x.rank and g.shape[0] == x.shape[0], f"{op}: the cotangent {g} does not match the input {x}")
    N, C = x.shape[:2]
    M = g.shape[1]
    check(C % group == 0 and M % group == 0, f"{op}: {C} input and {M} output channels do not split into "
                                             f"{group} groups")
    w = TensorType((M, C // group, *kernel_shape), x.dtype)
    want = _conv_out_shape(x, w, strides, dilations, pads, group)
    check(tuple(g.shape) == want, f"{op}: the cotangent {g} does not match the convolution's output {list(want)}")
    return [w]


def _wgrad_chunks(N, per_item_bytes):
    """Batch chunks with a partial sum each: as many as fit the budget (a divisor of N)."""
    best = 1
    for p in range(1, N + 1):
        if N % p == 0 and p * per_item_bytes <= _WGRAD_PART_BYTES:
            best = p
    return best


def _conv_weight_grad_lower(ins, outs, kernel_shape, strides, dilations, pads, group):
    """dw[m, c, *k] = sum over n, o of g[n, m, *o] * x_padded[n, (m // Mg)*Cg + c, *(o*s + k*d)].

    With enough output channels per group, the matrix form: g is transposed to
    [N, *O, M] and per batch chunk p the partial sums part[p, group, (c, *k), m]
    reduce over (n in the chunk, *o) -- rows (c, *k) read the padded input as an
    implicit im2col, columns m read g contiguously -- so the default schedule gives
    the register-tile micro-kernel; a last stage adds the chunks. Otherwise (depthwise,
    few channels) one reduction over (n, *o), contiguous along the output width."""
    (x, g), (o,) = ins, outs
    D = x.type.rank - 2
    N, C = x.shape[:2]
    M = g.shape[1]
    O, K = g.shape[2:], list(kernel_shape)
    Cg, Mg = C // group, M // group
    acc = _acc_dtype(o.dtype)
    stages, read = _padded_source(x, O, K, strides, dilations, pads, 0)
    taps = math.prod(K)
    tap_strides = _flat_strides(K, 0)

    if Mg < _WGRAD_MIN_COLUMNS:
        def direct(m, c, *ks):
            base = (m // Mg) * Cg + c if group > 1 else c
            return reduce("sum", [N, *O], lambda n, *os: cast(acc, g[(n, m, *os)]) * cast(acc, read(n, base, os, ks)))
        stage = compute(o.shape, direct, "conv_weight_grad")
        return _finish(stage, o, stages + [stage])

    gt = compute([N, *O, M], lambda n, *rest: g[(n, rest[D], *rest[:D])], "g_t")
    P = _wgrad_chunks(N, C * taps * Mg * acc.itemsize)
    Q = N // P

    def part_fn(p, gi, r, mm):
        c = gi * Cg + r // taps if taps > 1 else gi * Cg + r
        ks = [(r // st) % k if k > 1 else Const(0) for st, k in zip(tap_strides, K)]
        m = gi * Mg + mm

        def body(*red):
            q, os = (red[0], red[1:]) if Q > 1 else (Const(0), red)
            n = p * Q + q if Q > 1 else p
            return cast(acc, read(n, c, os, ks)) * cast(acc, gt[(n, *os, m)])
        return reduce("sum", ([Q] if Q > 1 else []) + list(O), body)

    part = compute([P, group, Cg * taps, Mg], part_fn, "wgrad_part")

    def total(m, c, *ks):
        r = sum((k * st for k, st in zip(ks[1:], tap_strides[1:])), ks[0] * tap_strides[0])
        at = (m // Mg, c * taps + r, m % Mg)
        if P == 1:
            return cast(o.dtype, part[(Const(0), *at)])
        return reduce("sum", [P], lambda p: part[(p, *at)])

    stage = compute(o.shape, total, "conv_weight_grad")
    return _finish(stage, o, stages + [gt, part, stage])


def _np_conv_weight_grad(x, g, kernel_shape, strides, dilations, pads, group):
    x, g = np.asarray(x), np.asarray(g)
    D = x.ndim - 2
    N, C = x.shape[:2]
    M, O = g.shape[1], g.shape[2:]
    Cg = C // group
    win = _windows(_np_pad(x.astype(np.float64), pads, 0), O, kernel_shape, strides, dilations)
    win = win.reshape(N, group, Cg, *O, *kernel_shape)
    gg = g.astype(np.float64).reshape(N, group, M // group, *O)
    o_, k_ = _LETTERS[:D], _LETTERS[D:2 * D]
    dw = np.einsum(f"ngc{o_}{k_},ngm{o_}->gmc{k_}", win, gg)
    return dw.reshape(M, Cg, *kernel_shape).astype(x.dtype)


# ============================================================================ gradient rules
# vjp(em, ins, outs, cts, **canonical attrs) -> input cotangents (passes/autodiff.py)

def _cropped(em, t, begin, end):
    """t without its first begin[a] and last end[a] elements along spatial axis a."""
    if not any(begin) and not any(end):
        return t
    return em("slice", t, begin=(0, 0, *begin), end=(*t.shape[:2], *[n - e for n, e in zip(t.shape[2:], end)]))


def _restored_rows(x, g, K, strides, dilations, pads):
    """conv_transpose's output_padding that gives conv's dx the shape of x: the input
    rows past the last window, which the stride skipped."""
    D = len(x.shape) - 2
    return tuple(n + pb + pe - ((o - 1) * s + (k - 1) * d + 1)
                 for n, pb, pe, o, s, k, d in zip(x.shape[2:], pads[:D], pads[D:], g.shape[2:], strides, K, dilations))


_MATRIX_DX_MIN_ROWS = 64          # C*KH*KW from which dx as matmul + col2im beats conv_transpose
_MATRIX_DX_MAX_BYTES = 256 << 20   # ... as long as the columns it writes stay below this


def _matrix_input_grad(x, w, g, group) -> bool:
    """Whether conv's dx is computed as W^T @ g followed by col2im (2-D, one group,
    enough rows for the matmul micro-kernel) rather than by conv_transpose, whose
    stride-1 convolution over the spread-out g runs s*s times the work when strided.
    Measured (2-core AVX2, batch 64, 3x3 on 28x28): 32 -> 64 channels, conv_transpose
    42 GFLOP/s, matmul + col2im 79; 1 -> 32 channels (9 rows), 27 vs 7."""
    if len(x.shape) != 4 or group != 1:
        return False
    rows = x.shape[1] * math.prod(w.shape[2:])
    cols_bytes = x.shape[0] * rows * math.prod(g.shape[2:]) * x.dtype.itemsize
    return rows >= _MATRIX_DX_MIN_ROWS and cols_bytes <= _MATRIX_DX_MAX_BYTES


def _conv_vjp(em, ins, outs, cts, strides, dilations, pads, group, auto_pad, kernel_shape):
    """dx: conv_transpose of g with the same weight and attributes (output_padding
    restores the rows the forward stride skipped), or col2im(W^T @ g) (see
    _matrix_input_grad); dw: conv_weight_grad."""
    (x, w), g = ins, cts[0]
    if _matrix_input_grad(x, w, g, group):
        # the columns of every window: W^T [C*KH*KW, M] @ g [N, M, OH*OW], added back by col2im
        N, M = g.shape[:2]
        C = x.shape[1]
        wt = em("transpose", em("reshape", w, shape=(M, C * math.prod(kernel_shape))), axes=(1, 0))
        cols = em("matmul", wt, em("reshape", g, shape=(N, M, math.prod(g.shape[2:]))))
        dx = em("col2im", cols, image_shape=tuple(x.shape[2:]), kernel_shape=kernel_shape, strides=strides,
                pads=pads, dilations=dilations)
    else:
        dx = em("conv_transpose", g, w, strides=strides, dilations=dilations, pads=pads,
                output_padding=_restored_rows(x, g, kernel_shape, strides, dilations, pads), group=group)
    dw = em("conv_weight_grad", x, g, kernel_shape=kernel_shape, strides=strides, dilations=dilations, pads=pads,
            group=group)
    return [dx, dw]


def _conv_transpose_vjp(em, ins, outs, cts, strides, dilations, pads, output_padding, output_shape, group,
                        auto_pad, kernel_shape):
    """conv_transpose is the adjoint of conv in its input: dx = conv(g, w) with the same
    strides, dilations, pads and group, and dw is conv's weight gradient with the roles
    of input and output swapped, conv_weight_grad(g, x). The end pad less
    output_padding is what that conv pads g with; negative pads crop g instead."""
    (x, w), g = ins, cts[0]
    D = len(x.shape) - 2
    begin = list(pads[:D])
    end = [pe - op for pe, op in zip(pads[D:], output_padding)]
    gc = _cropped(em, g, [max(0, -p) for p in begin], [max(0, -p) for p in end])
    cpads = tuple(max(0, p) for p in begin + end)
    dx = em("conv", gc, w, strides=strides, dilations=dilations, pads=cpads, group=group)
    dw = em("conv_weight_grad", gc, x, kernel_shape=kernel_shape, strides=strides, dilations=dilations, pads=cpads,
            group=group)
    return [dx, dw]


def _conv_weight_grad_vjp(em, ins, outs, cts, kernel_shape, strides, dilations, pads, group):
    """dw = conv_weight_grad(x, g) is bilinear: <dw, c> = <conv(x, c), g>, so x gets
    conv_transpose(g, c) (conv's dx with weight c) and g gets conv(x, c)."""
    (x, g), c = ins, cts[0]
    dx = em("conv_transpose", g, c, strides=strides, dilations=dilations, pads=pads,
            output_padding=_restored_rows(x, g, kernel_shape, strides, dilations, pads), group=group)
    dg = em("conv", x, c, strides=strides, dilations=dilations, pads=pads, group=group)
    return [dx, dg]


def _float_input(rule):
    def vjp(em, ins, outs, cts, **attrs):
        if ins[0].dtype.kind != "f":
            return [None] * len(ins)
        return rule(em, ins, outs, cts, **attrs)
    return vjp


@_float_input
def _im2col_vjp(em, ins, outs, cts, kernel_shape, strides, pads, dilations):
    return [em("col2im", cts[0], image_shape=tuple(ins[0].shape[2:]), kernel_shape=kernel_shape, strides=strides,
               pads=pads, dilations=dilations)]


@_float_input
def _col2im_vjp(em, ins, outs, cts, image_shape, kernel_shape, strides, pads, dilations):
    return [em("im2col", cts[0], kernel_shape=kernel_shape, strides=strides, pads=pads, dilations=dilations)]


@_float_input
def _max_pool_vjp(em, ins, outs, cts, kernel_shape, strides, pads, dilations, ceil_mode, auto_pad):
    return [em("max_pool_grad", ins[0], outs[0], cts[0], kernel_shape=kernel_shape, strides=strides, pads=pads,
               dilations=dilations, ceil_mode=ceil_mode)]


def _max_pool_grad_vjp(em, ins, outs, cts, kernel_shape, strides, pads, dilations, ceil_mode):
    """max_pool_grad(x, y, g) is linear in g (piecewise constant in x, y): g gets the
    cotangent read at each window's first maximum (max_pool_indices)."""
    x, c = ins[0], cts[0]
    idx = em("max_pool_indices", x, kernel_shape=kernel_shape, strides=strides, pads=pads, dilations=dilations,
             ceil_mode=ceil_mode)
    return [None, None, em("gather", em("reshape", c, shape=(-1,)), idx, axis=0)]


@_float_input
def _avg_pool_vjp(em, ins, outs, cts, kernel_shape, strides, pads, dilations, ceil_mode, count_include_pad,
                  auto_pad):
    return [em("avg_pool_grad", cts[0], kernel_shape=kernel_shape, strides=strides, pads=pads, dilations=dilations,
               ceil_mode=ceil_mode, count_include_pad=count_include_pad, image_shape=tuple(ins[0].shape[2:]))]


@_float_input
def _avg_pool_grad_vjp(em, ins, outs, cts, kernel_shape, strides, pads, dilations, ceil_mode, count_include_pad,
                       image_shape):
    """avg_pool_grad is linear in g and the transpose of avg_pool: its vjp is avg_pool."""
    return [em("avg_pool", cts[0], kernel_shape=kernel_shape, strides=strides, pads=pads, dilations=dilations,
               ceil_mode=ceil_mode, count_include_pad=count_include_pad)]


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


# ============================================================================ records

_CONV_ATTRS = {"strides": None, "dilations": None, "pads": None, "group": 1, "auto_pad": "NOTSET",
               "kernel_shape": None}
_CONVT_ATTRS = {"strides": None, "dilations": None, "pads": None, "output_padding": None, "output_shape": None,
                "group": 1, "auto_pad": "NOTSET", "kernel_shape": None}
_POOL_ATTRS = {"kernel_shape": None, "strides": None, "pads": None, "dilations": None, "ceil_mode": False}

OPS = [
    OpDef("conv", "contraction", _conv_infer, _np_conv, _conv_lower, params=("x", "w"), attrs=dict(_CONV_ATTRS),
          canonicalize=_conv_canon, vjp=_conv_vjp,
          doc="ONNX Conv without bias: x [N, C, *S], w [M, C/group, *K] -> [N, M, *O]; pads are "
              "[begin..., end...]; auto_pad resolves to pads. Add a bias b[M] as reshape(b, (M, 1, ...)) "
              "after the conv."),
    OpDef("conv_transpose", "contraction", _convt_infer, _np_conv_transpose, _convt_lower, params=("x", "w"),
          attrs=dict(_CONVT_ATTRS), canonicalize=lambda ins, a: _conv_canon(ins, a, transpose=True),
          vjp=_conv_transpose_vjp,
          doc="ONNX ConvTranspose without bias: x [N, C, *S], w [C, M/group, *K] -> [N, M, *O]; "
              "output_shape / auto_pad resolve to pads."),
    OpDef("im2col", "injective", _im2col_infer, _np_im2col, _im2col_lower,
          attrs={"kernel_shape": None, "strides": None, "pads": None, "dilations": None}, canonicalize=_im2col_canon,
          vjp=_im2col_vjp,
          doc="The windows of a 2-D convolution as columns: x [N, C, H, W] -> [N, C*KH*KW, OH*OW], row "
              "c*KH*KW + kh*KW + kw holding tap (kh, kw) of channel c at every output position (zero padding)."),
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
              "its first maximum in scan order (max_pool_indices), computed as a gather (two stages)."),
    OpDef("avg_pool_grad", "reduction", _avg_pool_grad_infer, _np_avg_pool_grad, _avg_pool_grad_lower,
          params=("g",), attrs={**_POOL_ATTRS, "count_include_pad": False, "image_shape": None},
          canonicalize=_grad_pool_canon("avg_pool_grad", with_count=True), vjp=_avg_pool_grad_vjp,
          doc="The transpose of avg_pool (its gradient): g [N, C, *O] -> dx [N, C, *image_shape], each "
              "window's g / count added over the taps it averages, computed as a gather."),
    OpDef("conv_weight_grad", "contraction", _conv_weight_grad_infer, _np_conv_weight_grad,
          _conv_weight_grad_lower, params=("x", "g"),
          attrs={"kernel_shape": None, "strides": None, "dilations": None, "pads": None, "group": 1},
          canonicalize=_conv_weight_grad_canon, vjp=_conv_weight_grad_vjp,
          doc="The weight gradient of conv(x, w) for its output cotangent g: dw [M, C/group, *kernel_shape], "
              "dw[m, c, k] = sum over n, o of g[n, m, o] * x_padded[n, group(m)*C/group + c, o*s + k*d]."),
    OpDef("col2im", "reduction", _col2im_infer, _np_col2im, _col2im_lower,
          params=("cols",), attrs={"image_shape": None, "kernel_shape": None, "strides": None, "pads": None,
                                   "dilations": None},
          canonicalize=_col2im_canon, vjp=_col2im_vjp,
          doc="The adjoint of im2col: cols [N, C*KH*KW, OH*OW] -> [N, C, *image_shape], every column entry "
              "added at the image position its window tap reads (entries over the padding are dropped)."),
]
