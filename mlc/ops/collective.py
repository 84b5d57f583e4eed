"""Collective communication as graph ops: allreduce, allgather, reduce_scatter,
broadcast, send, recv.

Each has a ``group`` attribute: the world ranks taking part, in order, fixed when
the graph is built (``mlc.dist`` fills in the job's ranks), so a graph's types do not
depend on the process that reads it; broadcast also records this process's ``rank``. Type
rules know the group size: allgather multiplies the gathered axis by it,
reduce_scatter divides it. The ops run through a communicator
(MPI or NCCL, through ``mlc.dist`` on arrays); the passes never fuse, fold, merge or drop
them. Gradient rules are collectives too: allreduce -> allreduce,
allgather <-> reduce_scatter, broadcast -> allreduce to the root, send <-> recv (a
recv's gradient is sent back to the sender, whose send receives it).
A differentiated distributed graph computes the gradient of the sum over ranks of
each rank's value (``mlc.dist`` divides by the world size where a mean is meant).
"""
from __future__ import annotations

import numpy as np

from ..ir.types import TensorType, dtype as to_dtype
from .registry import OpDef, check, normalize_axis

REDUCE_OPS = ("sum", "mean", "max", "min")


def group_ranks(group, name: str = "collective") -> tuple[int, ...]:
    """A collective's ``group`` attribute as a tuple of distinct ranks; a clear error otherwise."""
    check(group is not None, f"{name}: group must list the ranks taking part; mlc.dist.{name} fills in the "
                             f"job's ranks")
    try:
        ranks = tuple(int(r) for r in group)
    except TypeError:
        raise TypeError(f"group must be a sequence of ranks, got {group!r}") from None
    check(len(ranks) > 0 and len(set(ranks)) == len(ranks), f"group {list(ranks)} must list distinct ranks")
    check(all(r >= 0 for r in ranks), f"group {list(ranks)} names negative ranks")
    return ranks


def _reduce_op(op: str, t: TensorType, name: str) -> str:
    check(op in REDUCE_OPS, f"{name}: op must be one of {', '.join(REDUCE_OPS)}, got {op!r}")
    check(op != "mean" or t.dtype.is_float, f"{name}: op 'mean' needs a float tensor, got {t}")
    return op


def _canon(name: str):
    def canon(ins, attrs):
        out = dict(attrs)
        out["group"] = group_ranks(attrs["group"], name)
        if "op" in attrs:
            out["op"] = _reduce_op(attrs["op"], ins[0], name)
        if "axis" in attrs:
            out["axis"] = normalize_axis(attrs["axis"], ins[0].rank, name)
        if "peer" in attrs:
            peer = attrs["peer"]
            check(isinstance(peer, (int, np.integer)) and peer in out["group"],
                  f"{name}: peer {peer!r} is not a rank of the group {list(out['group'])}")
            out["peer"] = int(peer)
            out["tag"] = int(attrs["tag"])
        if "root" in attrs:
            check(attrs["root"] in out["group"], f"{name}: root {attrs['root']!r} is not a rank of the group "
                                                 f"{list(out['group'])}")
            check(attrs["rank"] in out["group"], f"{name}: rank {attrs['rank']!r} (this process's) is not a rank "
                                                 f"of the group {list(out['group'])}")
            out["root"] = int(attrs["root"])
        if "shape" in attrs:
            out["shape"] = tuple(int(d) for d in attrs["shape"])
            out["dtype"] = to_dtype(attrs["dtype"])
        return out
    return canon


def _same(ins, **attrs):
    return [ins[0]]


def _allgather_infer(ins, axis, group):
    (x,) = ins
    check(x.rank > 0, "allgather: a 0-d tensor has no axis to gather along")
    shape = list(x.shape)
    shape[axis] *= len(group)
    return [TensorType(shape, x.dtype)]


def _reduce_scatter_infer(ins, axis, op, group):
    (x,) = ins
    check(x.rank > 0, "reduce_scatter: a 0-d tensor has no axis to scatter along")
    n = len(group)
    check(x.shape[axis] % n == 0, f"reduce_scatter: axis {axis} of {x} does not split into {n} equal blocks "
                                  f"(the group's size)")
    shape = list(x.shape)
    shape[axis] //= n
    return [TensorType(shape, x.dtype)]


def _recv_infer(ins, shape, dtype, peer, tag, group):
    return [TensorType(shape, dtype)]


def _reference(name: str):
    def reference(*args, **attrs):
        raise NotImplementedError(f"{name}: collectives on arrays run through mlc.dist.{name}, which knows the job's "
                                  f"ranks")
    return reference


def _not_lowered(ins, outs, **attrs):
    raise NotImplementedError("collectives are communicator calls (passes/lower.py), not compute stages")


# ----------------------------------------------------------------------------- gradient rules

def _float(rule):
    def vjp(em, ins, outs, cts, **attrs):
        if not ins or ins[0].dtype.kind != "f":
            return [None] * len(ins)
        return rule(em, ins, outs, cts[0], **attrs)
    return vjp


@_float
def _allreduce_vjp(em, ins, outs, g, op, group):
    if op in ("sum", "mean"):
        return [em("allreduce", g, op=op, group=group)]
    # max / min: the gradient goes where the extreme value came from
    return [em("allreduce", g, op="sum", group=group) * em("cast", em("equal", ins[0], outs[0]), dtype=g.dtype)]


@_float
def _allgather_vjp(em, ins, outs, g, axis, group):
    return [em("reduce_scatter", g, axis=axis, op="sum", group=group)]


@_float
def _reduce_scatter_vjp(em, ins, outs, g, axis, op, group):
    gathered = em("allgather", g, axis=axis, group=group)
    if op == "mean":
        return [gathered / len(group)]
    if op == "sum":
        return [gathered]
    return [gathered * em("cast", em("equal", ins[0], em("allgather", outs[0], axis=axis, group=group)),
                          dtype=g.dtype)]


@_float
def _broadcast_vjp(em, ins, outs, g, root, group, rank):
    total = em("allreduce", g, op="sum", group=group)
    return [total if rank == root else total * 0.0]


def _send_vjp(em, ins, outs, cts, **attrs):
    """The peer's gradient of what it received comes back with the same tag."""
    if ins[0].dtype.kind != "f":
        return [None]
    g = cts[0]
    back = em("recv", shape=ins[0].shape, dtype=ins[0].dtype, peer=attrs["peer"], tag=attrs["tag"],
              group=attrs["group"])
    return [back if g is None else back + g]


def _recv_vjp(em, ins, outs, cts, shape, dtype, peer, tag, group):
    """Send the gradient of what was received back to its sender, which receives it in
    its send's gradient rule."""
    if cts[0] is not None and outs[0].dtype.kind == "f":
        em("send", cts[0], peer=peer, tag=tag, group=group)
    return []


# allreduce, broadcast and send keep their input's type, so the runtime may work in the
# input's buffer (in_place); allgather, reduce_scatter and recv change the shape.
OPS = [
    OpDef("allreduce", "collective", _same, _reference("allreduce"), _not_lowered,
          attrs={"op": "sum", "group": None}, canonicalize=_canon("allreduce"), vjp=_allreduce_vjp,
          in_place=True,
          doc="Reduce x over the group (op: sum, mean, max, min); every member gets the result."),
    OpDef("allgather", "collective", _allgather_infer, _reference("allgather"), _not_lowered,
          attrs={"axis": 0, "group": None}, canonicalize=_canon("allgather"), vjp=_allgather_vjp,
          doc="Concatenate every member's x along axis, in rank order."),
    OpDef("reduce_scatter", "collective", _reduce_scatter_infer, _reference("reduce_scatter"), _not_lowered,
          attrs={"axis": 0, "op": "sum", "group": None}, canonicalize=_canon("reduce_scatter"),
          vjp=_reduce_scatter_vjp,
          doc="Reduce x over the group and give member r block r of the result along axis."),
    OpDef("broadcast", "collective", _same, _reference("broadcast"), _not_lowered,
          attrs={"root": 0, "group": None, "rank": None}, canonicalize=_canon("broadcast"), vjp=_broadcast_vjp,
          in_place=True,
          doc="Every member gets the root's x."),
    OpDef("send", "collective", _same, _reference("send"), _not_lowered,
          attrs={"peer": None, "tag": 0, "group": None}, canonicalize=_canon("send"), vjp=_send_vjp,
          in_place=True,
          doc="Send x to rank peer; the result is x (so the send stays in the graph where it is used)."),
    OpDef("recv", "collective", _recv_infer, _reference("recv"), _not_lowered, params=(),
          attrs={"shape": None, "dtype": "float32", "peer": None, "tag": 0, "group": None},
          canonicalize=_canon("recv"), vjp=_recv_vjp,
          doc="Receive a tensor of shape and dtype from rank peer."),
]
OPS_BY_NAME = {op.name: op for op in OPS}
