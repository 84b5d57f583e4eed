"""matmul with numpy semantics: batched, broadcasting batch dims, 1-D operands."""
from __future__ import annotations

import numpy as np

from ..ir.expr import Const, cast
from ..ir.tensor import compute, reduce
from ..ir.types import TensorType, float32
from .registry import OpDef, OpTypeError, broadcast_shapes, check, numpy_result_dtype, unbroadcast


def _matmul_shapes(a, b):
    check(a.rank >= 1 and b.rank >= 1, f"matmul needs operands of rank >= 1, got {a} and {b}")
    sa = (1,) + a.shape if a.rank == 1 else a.shape
    sb = b.shape + (1,) if b.rank == 1 else b.shape
    if sa[-1] != sb[-2]:
        raise OpTypeError(f"matmul: contraction dims differ: {a} @ {b} ({sa[-1]} != {sb[-2]})")
    batch = broadcast_shapes(sa[:-2], sb[:-2])
    out = batch + (sa[-2],) * (a.rank > 1) + (sb[-1],) * (b.rank > 1)
    return sa, sb, batch, out


def _infer(ins):
    a, b = ins
    *_, out = _matmul_shapes(a, b)
    return [TensorType(out, numpy_result_dtype(np.matmul, a.dtype, b.dtype))]


def _lower(ins, outs):
    (a, b), (o,) = ins, outs
    sa, sb, batch, _ = _matmul_shapes(a.type, b.type)
    K = sa[-1]
    acc = float32 if o.dtype.is_float and o.dtype.bits < 32 else o.dtype
    nb = len(batch)

    def operand_index(t, full_shape, bidx, row, col, left):
        # batch dims broadcast (size-1 reads index 0); a 1-D operand drops its unit dim:
        # the left one keeps its column, the right one its row (``x @ x`` passes one
        # tensor as both, so the side is given, not found by identity)
        tb = full_shape[:-2]
        lead = [Const(0) if n == 1 else i for n, i in zip(tb, bidx[nb - len(tb):])] if tb else []
        if len(t.shape) == 1:
            return lead + [col if left else row]
        return lead + [row, col]

    def fn(*idx):
        bidx = idx[:nb]
        rest = list(idx[nb:])
        i = rest.pop(0) if a.type.rank > 1 else Const(0)
        j = rest.pop(0) if b.type.rank > 1 else Const(0)
        return reduce("sum", [K], lambda k: cast(acc, a[tuple(operand_index(a, sa, bidx, i, k, True))])
                      * cast(acc, b[tuple(operand_index(b, sb, bidx, k, j, False))]))

    stage = compute(o.shape, fn)
    if acc is not o.dtype:
        return [stage, compute(o.shape, lambda *i: cast(o.dtype, stage[i]))]
    return [stage]


def _swap_last(em, t):
    r = len(t.shape)
    return em("transpose", t, axes=tuple(range(r - 2)) + (r - 1, r - 2))


def _vjp(em, ins, outs, cts):
    """da = g @ b^T, db = a^T @ g, summed over broadcast batch dims; a 1-D operand
    is treated as a row (a) or column (b) matrix."""
    a, b = ins
    a2 = em("reshape", a, shape=(1,) + tuple(a.shape)) if len(a.shape) == 1 else a
    b2 = em("reshape", b, shape=tuple(b.shape) + (1,)) if len(b.shape) == 1 else b
    out_shape = np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2]) + (a2.shape[-2], b2.shape[-1])
    g = _reshaped(em, cts[0], out_shape)
    ga = _reshaped(em, unbroadcast(em, em("matmul", g, _swap_last(em, b2)), a2), a.shape) if a.dtype.kind == "f" \
        else None
    gb = _reshaped(em, unbroadcast(em, em("matmul", _swap_last(em, a2), g), b2), b.shape) if b.dtype.kind == "f" \
        else None
    return [ga, gb]


def _reshaped(em, t, shape):
    return t if tuple(t.shape) == tuple(shape) else em("reshape", t, shape=tuple(shape))


def _shard(sts, types):
    """Megatron's tensor-parallel matmul: a replicated a times a column-split 2-D b
    gives a column-split result; a column-split a times a row-split 2-D b gives
    partial sums (each rank's share of the contraction)."""
    if len(sts) != 2:
        return None
    (a, b), (ta, tb) = sts, types
    if a[0] == "R" and b == ("S", -1) and tb.rank == 2:
        return ("S", -1)                                     # column parallel
    if a == ("S", -1) and b[0] == "S" and b[1] == -tb.rank and tb.rank == 2 and ta.rank >= 1:
        return ("P",)                                        # row parallel: partial sums
    return None


def _weight_channel_axis(out, w):
    """[N, K] @ w[K, M]: the result's channels are w's columns (batch_norm folds into them)."""
    return 1 if out.rank == 2 and w.rank == 2 else None


OPS = [
    OpDef("matmul", "contraction", _infer, np.matmul, _lower, params=("a", "b"), vjp=_vjp,
          doc="Matrix product with numpy.matmul semantics.", shard=_shard,
          weight_channel_axis=_weight_channel_axis),
]
