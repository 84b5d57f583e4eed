"""Convolution with ONNX semantics, layout (N, C, *spatial), 1-D to 3-D, and its
gradient op. Each op's rules (type, reference, lowering, gradient) sit together;
what it shares with the pools and im2col is in ``window.py``.

Ops and their attributes (all lists are per spatial axis; ``pads`` is ONNX order
``[x1_begin, x2_begin, ..., x1_end, x2_end, ...]``):

* ``conv(x, w, strides, dilations, pads, group, auto_pad, kernel_shape)``:
  x [N, C, *S], w [M, C/group, *K] -> [N, M, *O]. There is no bias input: ONNX
  ``Conv(X, W, B)`` is ``conv(x, w) + reshape(b, (M, 1, ..., 1))``.
* ``conv_transpose(x, w, strides, dilations, pads, output_padding, output_shape,
  group, auto_pad, kernel_shape)``: x [N, C, *S], w [C, M/group, *K] -> [N, M, *O]
  with O = strides*(S-1) + output_padding + (K-1)*dilations + 1 - pad_begin - pad_end.
  No bias input either (add it as for conv).
* ``conv_weight_grad(x, g, kernel_shape, strides, dilations, pads, group)`` -> dw
  [M, C/group, *K]. With >= 8 output channels per group it lowers to a matrix form:
  g transposed to [N, *O, M], partial sums per batch chunk over rows (c, *k) --
  an implicit im2col of the padded input -- and columns m, on the register-tile
  micro-kernel, then a sum over the chunks.

Gradients. conv: dx of a stride-1 convolution is a convolution of g, padded by
(K-1)*d - pad, with the flipped weight (channels swapped within each group) -- the
forward convolution's micro-kernel, and no columns buffer in memory (g is read in
place of the N*C*KH*KW*OH*OW columns). Strided: conv_transpose of g with the same
weight and attributes (output_padding restoring the rows the stride skipped), or
for 2-D convolutions with C*KH*KW >= 64 ``col2im(W^T @ g)``, which avoids
conv_transpose's s*s overwork and runs on the matmul micro-kernel. dw is
``conv_weight_grad(x, g)``. conv_transpose: dx = conv(g, w), dw =
conv_weight_grad(g, x) (roles swapped).

``canonicalize`` resolves defaults, ``auto_pad`` and conv_transpose's
``output_shape`` into explicit ``pads`` (then ``auto_pad`` is "NOTSET" and
``output_shape`` None), and ``kernel_shape`` into the weight's spatial shape.

Lowering: the input is padded as ``window.py`` describes. The convolution is
``sum[ci < C/group, *k < K]`` over that buffer; float16 is accumulated in float32.
conv_transpose first spreads the input out (stride - 1 zeros between elements) and
pads it, then runs a stride-1 conv with the flipped kernel.
"""
from __future__ import annotations

import itertools
import math

import numpy as np

from ..ir import expr as E
from ..ir.expr import Const, cast
from ..ir.tensor import compute, reduce
from ..ir.types import TensorType
from .registry import OpDef, check
from .window import (
    _guarded, _ints, _spatial_rank, _auto_pad, _same_pads, _window_out, _padded_source, _acc_dtype, _finish,
    _flat_strides, _np_pad, _windows,
)


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


def _flipped_pads(kernel_shape, strides, dilations, pads):
    """The pads of the convolution that gives a stride-1 conv's dx -- g padded by
    (K-1)*d - pad on each side, so that dx[i] = sum over k of g[i + pad_begin - k*d] w[k]
    -- or None where that conv does not apply (a stride, or a pad wider than the
    window, whose rows of g would have to be cropped)."""
    if any(s != 1 for s in strides):
        return None
    D = len(kernel_shape)
    span = [(k - 1) * d for k, d in zip(kernel_shape, dilations)]
    flipped = tuple(sp - p for sp, p in zip(span + span, pads[:D] + pads[D:]))
    return flipped if all(p >= 0 for p in flipped) else None


def _flipped_weight(em, w, group):
    """w [M, C/group, *K] as the weight of conv's input gradient: [C, M/group, *K],
    input and output channels swapped within each group, every spatial axis reversed."""
    M, Cg, *K = w.shape
    D = len(K)
    wf = em("slice", w, begin=(0, 0, *[k - 1 for k in K]), end=(None,) * (2 + D), step=(1, 1) + (-1,) * D)
    if group == 1:
        return em("transpose", wf, axes=(1, 0, *range(2, 2 + D)))
    Mg = M // group
    wf = em("transpose", em("reshape", wf, shape=(group, Mg, Cg, *K)), axes=(0, 2, 1, *range(3, 3 + D)))
    return em("reshape", wf, shape=(group * Cg, Mg, *K))


def _conv_vjp(em, ins, outs, cts, strides, dilations, pads, group, auto_pad, kernel_shape):
    """dx: for a stride-1 convolution, conv(g, flipped w) with the pads of
    _flipped_pads -- the forward convolution's own fast path, and nothing the size of
    the columns in memory; otherwise col2im(W^T @ g) (see _matrix_input_grad) or
    conv_transpose of g with the same weight and attributes (output_padding restores
    the rows the forward stride skipped). dw: conv_weight_grad."""
    (x, w), g = ins, cts[0]
    flipped = _flipped_pads(kernel_shape, strides, dilations, pads)
    if flipped is not None:
        dx = em("conv", g, _flipped_weight(em, w, group), strides=strides, dilations=dilations, pads=flipped,
                group=group)
    elif _matrix_input_grad(x, w, g, group):
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


def _cropped(em, t, begin, end):
    """t without its first begin[a] and last end[a] elements along spatial axis a."""
    if not any(begin) and not any(end):
        return t
    return em("slice", t, begin=(0, 0, *begin), end=(*t.shape[:2], *[n - e for n, e in zip(t.shape[2:], end)]))


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


# ============================================================================ conv_weight_grad

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


def _conv_weight_grad_vjp(em, ins, outs, cts, kernel_shape, strides, dilations, pads, group):
    """dw = conv_weight_grad(x, g) is bilinear: <dw, c> = <conv(x, c), g>, so x gets
    conv_transpose(g, c) (conv's dx with weight c) and g gets conv(x, c)."""
    (x, g), c = ins, cts[0]
    dx = em("conv_transpose", g, c, strides=strides, dilations=dilations, pads=pads,
            output_padding=_restored_rows(x, g, kernel_shape, strides, dilations, pads), group=group)
    dg = em("conv", x, c, strides=strides, dilations=dilations, pads=pads, group=group)
    return [dx, dg]


# ============================================================================ records

_CONV_ATTRS = {"strides": None, "dilations": None, "pads": None, "group": 1, "auto_pad": "NOTSET",
               "kernel_shape": None}

_CONVT_ATTRS = {"strides": None, "dilations": None, "pads": None, "output_padding": None, "output_shape": None,
                "group": 1, "auto_pad": "NOTSET", "kernel_shape": None}


OPS = [
    OpDef("conv", "contraction", _conv_infer, _np_conv, _conv_lower, params=("x", "w"), attrs=dict(_CONV_ATTRS),
          canonicalize=_conv_canon, vjp=_conv_vjp,
          weight_channel_axis=lambda out, w: 0,   # w [M, C/group, *K]: output channel m is w[m]
          doc="ONNX Conv without bias: x [N, C, *S], w [M, C/group, *K] -> [N, M, *O]; pads are "
              "[begin..., end...]; auto_pad resolves to pads. Add a bias b[M] as reshape(b, (M, 1, ...)) "
              "after the conv."),
    OpDef("conv_transpose", "contraction", _convt_infer, _np_conv_transpose, _convt_lower, params=("x", "w"),
          attrs=dict(_CONVT_ATTRS), canonicalize=lambda ins, a: _conv_canon(ins, a, transpose=True),
          vjp=_conv_transpose_vjp,
          doc="ONNX ConvTranspose without bias: x [N, C, *S], w [C, M/group, *K] -> [N, M, *O]; "
              "output_shape / auto_pad resolve to pads."),
    OpDef("conv_weight_grad", "contraction", _conv_weight_grad_infer, _np_conv_weight_grad,
          _conv_weight_grad_lower, params=("x", "g"),
          attrs={"kernel_shape": None, "strides": None, "dilations": None, "pads": None, "group": 1},
          canonicalize=_conv_weight_grad_canon, vjp=_conv_weight_grad_vjp,
          doc="The weight gradient of conv(x, w) for its output cotangent g: dw [M, C/group, *kernel_shape], "
              "dw[m, c, k] = sum over n, o of g[n, m, o] * x_padded[n, group(m)*C/group + c, o*s + k*d]."),
]
