"""Reverse-mode autodiff as a graph transformation.

``backprop`` replays a graph on an emitter (``ops/builder.py``: a graph being built,
or the trace open in ``mlc.grad``) and then walks its nodes in reverse, calling each
op's ``vjp`` rule (``ops/<family>.py``) on the cotangents of the node's outputs. Rules are written with ops themselves, so the backward pass is
an ordinary graph: it fuses, plans memory and compiles with the forward, and can
be differentiated again (grad of grad).

``gradient_graph(g)`` is the Graph -> Graph form: a graph taking g's inputs plus a
cotangent per output and returning g's outputs plus the gradient of each input.

A rule has the signature ``vjp(em, ins, outs, cts, **attrs) -> list``: ``em(op,
*args, **attrs)`` records an op (Python scalars adopt the tensors' dtype), ``ins``
and ``outs`` are the node's inputs and outputs as values being built (``Sym``), ``cts`` the
cotangents of the outputs (None for an output nothing depends on; a single-output
op always gets one). It returns one cotangent per input, or None where an input
gets no gradient (an integer index, a boolean condition).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from . import communicates, get
from ..ir.graph import Graph
from .builder import Emitter, Sym, TraceError, build_graph


def differentiable(t) -> bool:
    """Only floating-point tensors carry gradients."""
    return t.dtype.is_float


def zeros_like(em: Emitter, x: Sym) -> Sym:
    return em("broadcast_to", np.zeros((), x.dtype), shape=x.shape)


def backprop(em: Emitter, graph: Graph, inputs: Sequence[Sym], wrt: Sequence[int],
             cotangents: Sequence) -> tuple[list, list]:
    """Replay ``graph`` on ``inputs`` (values of ``em``) and differentiate it: returns
    (outputs, gradients of the inputs numbered in ``wrt``). ``cotangents`` has one
    entry per graph output (None: no cotangent)."""
    if len(inputs) != len(graph.inputs):
        raise TypeError(f"backprop: graph @{graph.name} takes {len(graph.inputs)} inputs, got {len(inputs)}")
    env, _ = em.replay(graph, inputs)

    # values that depend on a differentiated input (only those need cotangents), and what
    # a recv received: its gradient goes back to the sender (the objective is the sum over ranks)
    active = {graph.inputs[i] for i in wrt if differentiable(graph.inputs[i].type)}
    for n in graph.nodes:
        if any(v in active for v in n.inputs) or (not n.inputs and communicates(n.op)):
            active.update(o for o in n.outputs if differentiable(o.type))

    cts: dict = {}

    def accumulate(v, g, why: str):
        if tuple(g.shape) != v.shape or g.dtype != v.dtype.np:
            raise TraceError(f"internal error: the gradient rule of {why} gave {g.dtype}{list(g.shape)} for a "
                             f"value of type {v.type}")
        cts[v] = g if v not in cts else cts[v] + g

    for v, c in zip(graph.outputs, cotangents):
        if c is not None and v in active:
            accumulate(v, c, "the output cotangent")
    for n in reversed(graph.nodes):
        out_cts = [cts.get(o) for o in n.outputs]
        if all(c is None for c in out_cts) or not (any(v in active for v in n.inputs) or not n.inputs):
            continue
        if n.outputs and all(o.type.size == 0 for o in n.outputs):
            continue   # an empty result carries no cotangent: its inputs' gradients stay zero
        op = get(n.op)
        if op.vjp is None:
            raise TraceError(f"mlc.grad: op {n.op} has no gradient rule" + (f" (at {n.loc})" if n.loc else ""))
        in_cts = op.vjp(em, [env[v] for v in n.inputs], [env[o] for o in n.outputs], out_cts, **n.attrs)
        if len(in_cts) != len(n.inputs):
            raise TraceError(f"internal error: the gradient rule of {n.op} returned {len(in_cts)} cotangents "
                             f"for {len(n.inputs)} inputs")
        for v, g in zip(n.inputs, in_cts):
            if g is not None and v in active:
                accumulate(v, g, n.op)
    outputs = [env[v] for v in graph.outputs]
    grads = [cts[graph.inputs[i]] if graph.inputs[i] in cts else zeros_like(em, env[graph.inputs[i]]) for i in wrt]
    return outputs, grads


def gradient_graph(graph: Graph, wrt: Sequence[int] | None = None) -> Graph:
    """Graph -> Graph: ``@name_vjp(inputs..., ct_0, ..., ct_k)`` returning the outputs
    followed by the gradient of each input in ``wrt`` (default: every float input)."""
    if wrt is None:
        wrt = [i for i, v in enumerate(graph.inputs) if differentiable(v.type)]
    for i in wrt:
        if not differentiable(graph.inputs[i].type):
            raise TypeError(f"input %{graph.inputs[i].name} has type {graph.inputs[i].type}; only floating-point "
                            f"inputs have gradients")
    n_in = len(graph.inputs)

    def fn(em, *args):
        outs, grads = backprop(em, graph, args[:n_in], wrt, args[n_in:])
        return tuple(outs) + tuple(grads)

    types = [v.type for v in graph.inputs] + [v.type for v in graph.outputs]
    names = [v.name for v in graph.inputs] + [f"ct{i}" for i in range(len(graph.outputs))]
    return build_graph(f"{graph.name}_vjp", types, names, fn)
