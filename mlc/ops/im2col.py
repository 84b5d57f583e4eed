"""im2col and its adjoint col2im: the matrix form of 2-D convolution (the layout
pass and conv's input gradient use them). Each op's rules (type, reference,
lowering, gradient) sit together; the window helpers are in ``window.py``.

* ``im2col(x, kernel_shape, strides, pads, dilations)``: the windows of a 2-D
  convolution as columns [N, C*KH*KW, OH*OW];
* ``col2im(cols, image_shape, kernel_shape, strides, pads, dilations)``: its
  adjoint (each column entry added back at the position it was read from), a
  gather like the other gradient ops.

Gradients: im2col <-> col2im.
"""
from __future__ import annotations

import itertools
import math

import numpy as np

from ..ir import expr as E
from ..ir.expr import Const, cast
from ..ir.tensor import compute
from ..ir.types import TensorType
from .registry import OpDef, check
from .window import (
    _guarded, _ints, _window_out, _image_shape, _acc_dtype, _finish, _np_pad, _windows, _covering, _gather_sum,
    _float_input,
)


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


@_float_input
def _im2col_vjp(em, ins, outs, cts, kernel_shape, strides, pads, dilations):
    return [em("col2im", cts[0], image_shape=tuple(ins[0].shape[2:]), kernel_shape=kernel_shape, strides=strides,
               pads=pads, dilations=dilations)]


# ============================================================================ col2im

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


@_float_input
def _col2im_vjp(em, ins, outs, cts, image_shape, kernel_shape, strides, pads, dilations):
    return [em("im2col", cts[0], kernel_shape=kernel_shape, strides=strides, pads=pads, dilations=dilations)]


# ============================================================================ records

OPS = [
    OpDef("im2col", "injective", _im2col_infer, _np_im2col, _im2col_lower,
          attrs={"kernel_shape": None, "strides": None, "pads": None, "dilations": None}, canonicalize=_im2col_canon,
          vjp=_im2col_vjp,
          doc="The windows of a 2-D convolution as columns: x [N, C, H, W] -> [N, C*KH*KW, OH*OW], row "
              "c*KH*KW + kh*KW + kw holding tap (kh, kw) of channel c at every output position (zero padding)."),
    OpDef("col2im", "reduction", _col2im_infer, _np_col2im, _col2im_lower,
          params=("cols",), attrs={"image_shape": None, "kernel_shape": None, "strides": None, "pads": None,
                                   "dilations": None},
          canonicalize=_col2im_canon, vjp=_col2im_vjp,
          doc="The adjoint of im2col: cols [N, C*KH*KW, OH*OW] -> [N, C, *image_shape], every column entry "
              "added at the image position its window tap reads (entries over the padding are dropped)."),
]
