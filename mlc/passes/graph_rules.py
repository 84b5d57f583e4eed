"""Algebraic simplification as three rule tables for the rewrite engine (``rewrite.py``):

* ``IDENTITIES``: x + 0, x - 0, x * 1, x / 1, an identity transpose, and any op
  that is a no-op at the same type (``OpDef.identity_when_same_type``: cast,
  broadcast_to, reshape, ...) -> x;
* ``CHAINS``: transpose of transpose -> one transpose; reshape of a chain of views
  (``OpDef.view``) -> one reshape;
* ``FOLD_BATCH_NORM``: batch_norm (inference, constant statistics) after an op with
  a constant weight whose channels it knows (``OpDef.weight_channel_axis``: conv,
  matmul), with or without a constant bias add between -> the weights scaled per
  output channel plus one bias add.

The ``simplify`` pass runs the three tables together.
"""
from __future__ import annotations

from collections import Counter

import numpy as np

from .. import ops
from ..ir.graph import Graph, Node, Value
from .rewrite import Rule, rewrite
from .simplify import constant_value, emit


def _is_splat(v: Value, x: float) -> bool:
    c = constant_value(v)
    return c is not None and c.size > 0 and bool(np.all(c == x))


def _same_type(n: Node, ins) -> bool:
    """One result, of the first input's type."""
    return len(n.outputs) == 1 and bool(ins) and ins[0].type == n.outputs[0].type


# ----------------------------------------------------------------------------- identities

def _x_op_splat(value: float):
    """x (op) splat(value) -> x, for the value that leaves x unchanged."""
    def apply(n, ins, b, single_use):
        return [ins[0]] if _same_type(n, ins) and _is_splat(ins[1], value) else None
    return apply


def _zero_add(n, ins, b, single_use):
    """0 + x -> x."""
    out = n.outputs[0]
    return [ins[1]] if ins[1].type == out.type and _is_splat(ins[0], 0) else None


def _unchanged(n, ins, b, single_use):
    return [ins[0]] if _same_type(n, ins) else None


def _identity_transpose(n, ins, b, single_use):
    return [ins[0]] if list(n.attrs["axes"]) == list(range(len(n.attrs["axes"]))) else None


IDENTITIES = [
    Rule("add_zero", "add", _x_op_splat(0)),
    Rule("zero_add", "add", _zero_add),
    Rule("sub_zero", "sub", _x_op_splat(0)),
    Rule("mul_one", "mul", _x_op_splat(1)),
    Rule("div_one", "div", _x_op_splat(1)),
    Rule("identity_transpose", "transpose", _identity_transpose),
    *[Rule(f"{name}_to_same_type", name, _unchanged)
      for name, op in ops.REGISTRY.items() if op.identity_when_same_type],
]


# ----------------------------------------------------------------------------- chains

def _transpose_of_transpose(n, ins, b, single_use):
    """transpose(transpose(x, p), q) -> transpose(x, p o q), or x when that is the identity."""
    src = ins[0]
    if src.producer is None or src.producer.op != "transpose":
        return None
    inner = list(src.producer.attrs["axes"])
    perm = [inner[p] for p in n.attrs["axes"]]
    src = src.producer.inputs[0]
    if perm == list(range(len(perm))):
        return [src]
    return [emit(b, "transpose", [src], n.loc, axes=perm)]


def _reshape_of_views(n, ins, b, single_use):
    """reshape(view(view(x))) -> reshape(x), or x when that has the result's type."""
    src = ins[0]
    while src.producer is not None and ops.get(src.producer.op).view:
        src = src.producer.inputs[0]
    out = n.outputs[0]
    if src.type == out.type:
        return [src]
    if src is not ins[0]:
        return [emit(b, "reshape", [src], n.loc, shape=list(out.shape))]
    return None


CHAINS = [
    Rule("transpose_of_transpose", "transpose", _transpose_of_transpose),
    Rule("reshape_of_views", "reshape", _reshape_of_views),
]


# ----------------------------------------------------------------------------- batch_norm folding

def _channel_scale(bn: Node):
    """(scale, shift) per channel of an inference batch_norm with constant statistics:
    batch_norm(x) = x * scale + shift."""
    scale, bias, mean, var = (constant_value(v) for v in bn.inputs[1:])
    if any(a is None for a in (scale, bias, mean, var)):
        return None
    dt = bn.inputs[0].dtype.np
    with np.errstate(all="ignore"):
        s = scale.astype(np.float64) / np.sqrt(var.astype(np.float64) + bn.attrs["epsilon"])
        shift = bias.astype(np.float64) - mean.astype(np.float64) * s
    return s.astype(dt), shift.astype(dt)


def _per_channel(c: np.ndarray, channels: int, rank: int) -> np.ndarray | None:
    """A constant added to a [N, C, ...] (or [N, C]) tensor as one value per channel, or None."""
    if c.ndim > rank:
        return None
    full = (1,) * (rank - c.ndim) + c.shape
    if any(d != 1 for a, d in enumerate(full) if a != 1) or full[1] not in (1, channels):
        return None
    return np.broadcast_to(c.reshape(-1), (channels,))


def _fold_batch_norm(n: Node, ins, b, single_use) -> list[Value] | None:
    """op [+ constant bias] -> batch_norm, as the op with scaled weights plus one bias.
    ``n`` is the swept graph's node (for use counts), ``ins`` its new inputs."""
    folded = _channel_scale(n)
    if folded is None or not single_use(n.inputs[0]):
        return None
    s, shift = folded
    rank, channels = n.inputs[0].type.rank, n.inputs[0].shape[1]
    old, new = n.inputs[0].producer, ins[0].producer
    if old is not None and old.op == "add" and constant_value(new.inputs[1]) is not None \
            and single_use(old.inputs[0]) and new.inputs[0].type == new.outputs[0].type:
        bias = _per_channel(constant_value(new.inputs[1]), channels, rank)
        if bias is None:
            return None
        shift = shift + bias.astype(shift.dtype) * s
        old, new = old.inputs[0].producer, new.inputs[0].producer
    channel_axis = ops.get(old.op).weight_channel_axis if old is not None else None
    w = constant_value(new.inputs[1]) if channel_axis is not None else None
    axis = channel_axis(old.outputs[0].type, new.inputs[1].type) if w is not None else None
    if axis is None:
        return None
    scale_shape = [1] * w.ndim
    scale_shape[axis] = -1
    w2 = w * s.reshape(scale_shape).astype(w.dtype)
    y = b.node(old.op, [new.inputs[0], b.constant(w2)], old.attrs, [o.type for o in old.outputs], old.loc)[0]
    channel_shape = (-1,) + (1,) * (rank - 2)
    return [emit(b, "add", [y, b.constant(shift.reshape(channel_shape).astype(y.dtype.np))], n.loc)]


FOLD_BATCH_NORM = [
    Rule("batch_norm_into_weights", "batch_norm", _fold_batch_norm),
]


# ----------------------------------------------------------------------------- the pass

SIMPLIFY = IDENTITIES + CHAINS + FOLD_BATCH_NORM


def simplify(graph: Graph, hits: Counter | None = None) -> Graph:
    """The three tables to a fixed point (``hits`` counts the rewrites per rule)."""
    return rewrite(graph, SIMPLIFY, hits)
