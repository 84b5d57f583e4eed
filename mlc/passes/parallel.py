"""Parallelization: passes that insert collective ops (``ops/collective.py``).

- ``allreduce_gradients`` (data parallel): after autodiff, every gradient is
  averaged over the group with all-reduces on flat buckets (concatenated gradients
  of one dtype, up to ``bucket_bytes`` each), bucketed in the order the backward pass
  produced the gradients (the last layer's first, as DDP does), then sliced back.
  ``data_parallel_graph`` is the same on a Graph whose outputs are gradients.
- ``tensor_parallel_graph`` (tensor parallel): inputs annotated ``column`` (split
  along their last axis) or ``row`` (split along their first axis) are the local
  shards; sharding is propagated node by node (replicated R, sharded S(axis),
  partial sum P) and collectives are inserted where a node needs whole values:
  an op's own ``shard`` rule decides where it has one (matmul's, in ops/linalg.py:
  matmul(R, column) -> S; matmul(S, row) -> P); elementwise ops keep S when every
  operand agrees; P -> R by allreduce(sum), S -> R by allgather. This is Megatron's
  column- then row-parallel MLP without writing any collective by hand.

Each is a Graph -> Graph function that replays the graph on an emitter
(``ops/builder.py``), so the result is an ordinary graph: printing it shows the
collectives where they were inserted.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .. import ops
from ..ir.graph import Graph
from ..ops.builder import Emitter, Sym, build_graph
from ..ops.collective import group_ranks

DEFAULT_BUCKET_BYTES = 25 << 20   # PyTorch DDP's default bucket size


def allreduce_gradients(grads: Sequence, bucket_bytes: int = DEFAULT_BUCKET_BYTES, op: str = "mean", *,
                        group: Sequence[int]) -> list:
    """Average (``op``) gradient tensors being built (traced tensors, or Syms of a
    graph being built) over ``group``: bucketed all-reduces on flat buffers, in the
    order the gradients were produced. Returns the reduced tensors in the order given."""
    if bucket_bytes <= 0:
        raise ValueError(f"bucket_bytes must be > 0, got {bucket_bytes}")
    for g in grads:
        if not isinstance(g, Sym):
            raise TypeError(f"allreduce_gradients works on traced tensors, got {type(g).__name__}")
    if not grads:
        return []
    position = {id(n): k for k, n in enumerate(grads[0].em.builder.nodes)}
    emit = grads[0]._emit   # records where the gradients' operators record

    def produced_at(k):
        p = grads[k].value.producer
        return position.get(id(p), -1) if p is not None else -1

    # the backward pass produces the last layer's gradients first: bucket in that order
    pending = sorted((k for k in range(len(grads)) if grads[k].dtype.kind == "f"), key=produced_at)
    out = list(grads)
    bucket: list[int] = []
    size = 0

    def flush():
        nonlocal bucket, size
        if not bucket:
            return
        if len(bucket) == 1:
            k = bucket[0]
            out[k] = emit("allreduce", grads[k], op=op, group=group)
        else:
            flat = emit("concatenate", [emit("reshape", grads[k], shape=(-1,)) for k in bucket], axis=0)
            reduced = emit("allreduce", flat, op=op, group=group)
            start = 0
            for k in bucket:
                n = int(np.prod(grads[k].shape, dtype=np.int64))
                piece = emit("slice", reduced, begin=(start,), end=(start + n,), step=(1,))
                out[k] = emit("reshape", piece, shape=tuple(grads[k].shape))
                start += n
        bucket, size = [], 0

    for k in pending:
        g = grads[k]
        nbytes = int(np.prod(g.shape, dtype=np.int64)) * g.dtype.itemsize
        if bucket and (grads[bucket[0]].dtype != g.dtype or size + nbytes > bucket_bytes):
            flush()
        bucket.append(k)
        size += nbytes
    flush()
    return out


def replay(graph: Graph, inputs: Sequence[Sym]) -> list:
    """Record ``graph``'s nodes on ``inputs`` where their first Sym records; its outputs."""
    em = next(x.em for x in inputs if isinstance(x, Sym))
    return em.replay(graph, inputs)[1]


def data_parallel_graph(graph: Graph, grad_outputs: Sequence[int] | None = None,
                        bucket_bytes: int = DEFAULT_BUCKET_BYTES, *, group: Sequence[int]) -> Graph:
    """``graph`` with the outputs at ``grad_outputs`` (default: every float output)
    averaged over the group by bucketed all-reduces."""
    if grad_outputs is None:
        grad_outputs = [k for k, v in enumerate(graph.outputs) if v.dtype.is_float]

    def fn(em: Emitter, *args):
        _, outs = em.replay(graph, args)
        reduced = allreduce_gradients([outs[k] for k in grad_outputs], bucket_bytes, group=group)
        for k, r in zip(grad_outputs, reduced):
            outs[k] = r
        return tuple(outs)

    return build_graph(f"{graph.name}_dp", [v.type for v in graph.inputs], [v.name for v in graph.inputs], fn)


# ----------------------------------------------------------------------------- tensor parallel

SHARD_KINDS = ("column", "row")


def shard_axis(kind: str, rank: int) -> int:
    """The axis a ``column``/``row`` annotation splits, counted from the end."""
    if kind not in SHARD_KINDS:
        raise ValueError(f"a shard annotation is 'column' or 'row', got {kind!r}")
    return -1 if kind == "column" or rank == 1 else -rank


def local_type(t, kind: str, n: int):
    from ..ir.types import TensorType
    if t.rank == 0:
        raise ValueError(f"a {t} tensor cannot be sharded")
    axis = shard_axis(kind, t.rank) % t.rank
    if t.shape[axis] % n:
        raise ValueError(f"{kind}-parallel: axis {axis} of {t} does not split into {n} equal shards")
    shape = list(t.shape)
    shape[axis] //= n
    return TensorType(shape, t.dtype)


def tensor_parallel_graph(graph: Graph, sharded: dict[int, str], *, group: Sequence[int]) -> Graph:
    """``graph`` rewritten for tensor parallelism: input ``i`` in ``sharded`` is
    this rank's shard (``column`` or ``row``); every output is replicated."""
    ranks = group_ranks(group, "tensor_parallel_graph")
    n = len(ranks)
    in_types = [local_type(v.type, sharded[i], n) if i in sharded else v.type for i, v in enumerate(graph.inputs)]

    def fn(em: Emitter, *args):
        env, state = {}, {}
        for i, (v, a) in enumerate(zip(graph.inputs, args)):
            env[v] = a
            state[v] = ("S", shard_axis(sharded[i], v.type.rank)) if i in sharded else ("R",)

        def whole(v):
            """v's full value on every rank."""
            s = state[v]
            if s[0] == "P":
                env[v], state[v] = em("allreduce", env[v], op="sum", group=ranks), ("R",)
            elif s[0] == "S":
                env[v], state[v] = em("allgather", env[v], axis=s[1] % v.type.rank, group=ranks), ("R",)
            return env[v]

        for node in graph.nodes:
            if node.op == "constant":
                outs, st = em.record("constant", [], node.attrs, node.loc), ("R",)
            else:
                st = _propagate(node, state)
                if st is None:   # the node needs whole values
                    ins = [whole(v) for v in node.inputs]
                    st = ("R",)
                else:
                    ins = [env[v] for v in node.inputs]
                outs = _record_local(em, node, ins)
            for o, t in zip(node.outputs, outs):
                env[o], state[o] = t, st
        return tuple(whole(v) for v in graph.outputs)

    return build_graph(f"{graph.name}_tp", in_types, [v.name for v in graph.inputs], fn)


def _record_local(em: Emitter, node, ins):
    """Record ``node`` on local values, whose shapes may be shards: attributes are
    re-canonicalized against the local types."""
    op = ops.get(node.op)
    attrs = op.canonical_attrs([t.value.type for t in ins], node.attrs)
    return em.record(node.op, ins, attrs, node.loc)


def _propagate(node, state) -> tuple | None:
    """The sharding of ``node``'s result computed from local operands, or None when the
    node needs whole values."""
    sts = [state[v] for v in node.inputs]
    if all(s[0] == "R" for s in sts):
        return ("R",)
    op = ops.get(node.op)
    if op.shard is not None:
        return op.shard(sts, [v.type for v in node.inputs])
    if op.elementwise:
        if any(s[0] == "P" for s in sts):
            return None
        out_rank = node.outputs[0].type.rank
        axes = {s[1] for s in sts if s[0] == "S"}
        if len(axes) != 1:
            return None
        (axis,) = axes
        for v, s in zip(node.inputs, sts):   # a replicated operand must broadcast along the split axis
            if s[0] == "R" and v.type.rank >= -axis and v.shape[axis] != 1:
                return None
        if node.outputs[0].shape[axis] == 1 or -axis > out_rank:
            return None
        return ("S", axis)
    return None
