"""``mlc.scan``, ``mlc.while_loop`` and ``mlc.cond``: structured control flow from
Python functions, with ``jax.lax``'s semantics.

Each traces its Python function(s) into a body graph (``trace_info``, nested in the
trace open around it, so tensors the function uses from outside become extra
operands) and records ONE graph op (``ops/control.py``). Inside ``mlc.trace`` /
``mlc.jit`` that op is compiled as a loop; on numpy arrays it runs eagerly through the
reference interpreter.

    def step(h, x):                       # carry, one slice of xs
        h = mlc.tanh(x @ w + h @ u)
        return h, h                       # the new carry, this step's output
    h_last, hs = mlc.scan(step, h0, xs)   # hs: every step's h, stacked
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from ..ir.graph import Graph, Value
from ..ir.types import TensorType, bool_
from ..ops.builder import Sym, TraceError, as_array, at, is_python_scalar
from ..tree import TreeDef, flatten, unflatten
from .trace import apply, trace_info, user_location

__all__ = ["scan", "while_loop", "cond"]


def _leaf_type(x, what: str) -> TensorType:
    if isinstance(x, Sym):
        return x.value.type
    if is_python_scalar(x):
        raise TraceError(f"{what}: a Python scalar ({x!r}) has no dtype of its own; pass a typed array "
                         f"(np.float32({x!r}), np.array({x!r}, np.int64))" + at(user_location()))
    return TensorType.of(as_array(x, what, user_location()))


def _tensors(tree, what: str) -> tuple[list, TreeDef, list[TensorType]]:
    leaves, treedef = flatten(tree)
    return leaves, treedef, [_leaf_type(x, what) for x in leaves]


def _body(fn: Callable, args: tuple, name: str, what: str):
    """Trace ``fn`` on ``args`` (pytrees of TensorTypes): (graph, output tree, the
    tensors it captured from enclosing traces, one per trailing graph input)."""
    try:
        traced = trace_info(fn, args, name=name)
    except TraceError:
        raise
    except Exception as e:
        raise TraceError(f"{what}: tracing {getattr(fn, '__name__', 'the function')} failed: {e}"
                         + at(user_location())) from e
    return traced.graph, traced.out_tree, list(traced.captured)


def _padded(graph: Graph, before: list[TensorType], after: list[TensorType], at_input: int) -> Graph:
    """``graph`` with unused inputs of types ``before`` and ``after`` around its inputs from
    ``at_input`` on (its captured tensors), so two bodies share one operand list."""
    taken = {v.name for v in graph.inputs}

    def fresh(t: TensorType) -> Value:
        n = len(taken)
        while f"unused{n}" in taken:
            n += 1
        taken.add(f"unused{n}")
        return Value(t, name=f"unused{n}")

    pre = [fresh(t) for t in before]
    post = [fresh(t) for t in after]
    inputs = graph.inputs[:at_input] + pre + graph.inputs[at_input:] + post
    return Graph(graph.name, inputs, graph.nodes, graph.outputs)


def _results(res) -> list:
    return list(res) if isinstance(res, tuple) else [res]


def scan(f: Callable, init, xs=None, length: int | None = None, reverse: bool = False):
    """``f(carry, x) -> (carry, y)`` over the leading axis of ``xs``; returns ``(carry, ys)``
    with each y stacked (``jax.lax.scan``). ``init`` and ``xs`` are pytrees of tensors;
    ``xs=None`` with ``length`` runs ``length`` steps with ``x=None``. The carry must keep
    its structure, shapes and dtypes."""
    c_leaves, c_tree, c_types = _tensors(init, "scan: init")
    x_leaves, x_tree, x_types = _tensors(xs, "scan: xs")
    lengths = {t.shape[0] for t in x_types if t.shape}
    if any(not t.shape for t in x_types):
        raise TraceError("scan: every leaf of xs needs a leading axis to scan over; got "
                         + ", ".join(map(str, x_types)) + at(user_location()))
    if len(lengths) > 1 or (length is not None and lengths and lengths != {length}):
        raise TraceError(f"scan: the leaves of xs have leading axes {sorted(lengths)}"
                         + (f" and length={length} was given" if length is not None else "")
                         + "; they must all be the scan's length" + at(user_location()))
    if length is None:
        if not lengths:
            raise TraceError("scan: with no xs, give the number of steps as length=" + at(user_location()))
        length = lengths.pop()
    if not isinstance(length, (int, np.integer)) or length < 0:
        raise TraceError(f"scan: length must be a non-negative int, got {length!r}" + at(user_location()))
    slices = [TensorType(t.shape[1:], t.dtype) for t in x_types]
    body, out_tree, captured = _body(
        lambda c, x: f(c, x), (unflatten(c_tree, c_types), unflatten(x_tree, slices)),
        getattr(f, "__name__", "body"), "scan")
    if out_tree.kind not in ("tuple", "list") or len(out_tree.children) != 2:
        raise TraceError(f"scan: {getattr(f, '__name__', 'the body')} must return a pair (carry, y); got "
                         f"a {out_tree.kind}" + at(user_location()))
    if out_tree.children[0] != c_tree:
        raise TraceError(f"scan: {getattr(f, '__name__', 'the body')} returns a carry of structure "
                         f"{out_tree.children[0]} where the initial carry is {c_tree}" + at(user_location()))
    k = len(c_leaves)
    got = [v.type for v in body.outputs[:k]]
    if got != c_types:
        raise TraceError(f"scan: {getattr(f, '__name__', 'the body')} returns a carry of type "
                         f"({', '.join(map(str, got))}) where the initial carry is ({', '.join(map(str, c_types))})"
                         + at(user_location()))
    res = _results(apply("scan", c_leaves + x_leaves + captured, num_carry=k, num_xs=len(x_leaves),
                         length=int(length), reverse=bool(reverse), body=body))
    return unflatten(c_tree, res[:k]), unflatten(out_tree.children[1], res[k:])


def while_loop(cond_fn: Callable, body_fn: Callable, init):
    """``while cond_fn(carry): carry = body_fn(carry)``; returns the final carry
    (``jax.lax.while_loop``). ``cond_fn`` returns a bool scalar; ``body_fn`` keeps the
    carry's structure, shapes and dtypes. Not reverse-differentiable (use ``scan``)."""
    c_leaves, c_tree, c_types = _tensors(init, "while_loop: init")
    carry = unflatten(c_tree, c_types)
    cond_g, cond_tree, cond_cap = _body(lambda c: cond_fn(c), (carry,), getattr(cond_fn, "__name__", "cond"),
                                        "while_loop")
    body_g, body_tree, body_cap = _body(lambda c: body_fn(c), (carry,), getattr(body_fn, "__name__", "body"),
                                        "while_loop")
    if cond_tree.kind != "leaf" or cond_g.outputs[0].type != TensorType((), bool_):
        raise TraceError(f"while_loop: {getattr(cond_fn, '__name__', 'cond_fn')} must return a bool scalar; got "
                         + ", ".join(str(v.type) for v in cond_g.outputs) + at(user_location()))
    got = [v.type for v in body_g.outputs]
    if body_tree != c_tree or got != c_types:
        raise TraceError(f"while_loop: {getattr(body_fn, '__name__', 'body_fn')} returns ({', '.join(map(str, got))})"
                         f" where the carry is ({', '.join(map(str, c_types))})" + at(user_location()))
    k = len(c_leaves)
    cond_types = [v.type for v in cond_g.inputs[k:]]
    body_types = [v.type for v in body_g.inputs[k:]]
    res = _results(apply("while_loop", c_leaves + cond_cap + body_cap, num_carry=k,
                         cond=_padded(cond_g, [], body_types, k), body=_padded(body_g, cond_types, [], k)))
    return unflatten(c_tree, res)


def cond(pred, true_fn: Callable, false_fn: Callable, *operands):
    """``true_fn(*operands)`` if ``pred`` else ``false_fn(*operands)`` (``jax.lax.cond``):
    both are traced and must return the same structure, shapes and dtypes; only one
    runs. ``pred`` is a scalar (nonzero is true); a Python bool picks the branch now."""
    if isinstance(pred, (bool, np.bool_)):
        return (true_fn if pred else false_fn)(*operands)
    p_type = _leaf_type(pred, "cond: pred")
    if p_type.shape != ():
        raise TraceError(f"cond: the predicate must be a scalar, got {p_type}" + at(user_location()))
    if p_type.dtype != bool_:
        pred = apply("cast", pred, dtype=bool_)
    o_leaves, o_tree, o_types = _tensors(tuple(operands), "cond: operands")
    args = unflatten(o_tree, o_types)
    t_g, t_tree, t_cap = _body(lambda *a: true_fn(*a), args, getattr(true_fn, "__name__", "true_fn"), "cond")
    f_g, f_tree, f_cap = _body(lambda *a: false_fn(*a), args, getattr(false_fn, "__name__", "false_fn"), "cond")
    t_out, f_out = [v.type for v in t_g.outputs], [v.type for v in f_g.outputs]
    if t_tree != f_tree or t_out != f_out:
        raise TraceError(f"cond: the branches return different types: {getattr(true_fn, '__name__', 'true_fn')} "
                         f"({', '.join(map(str, t_out))}), {getattr(false_fn, '__name__', 'false_fn')} "
                         f"({', '.join(map(str, f_out))})" + at(user_location()))
    n = len(o_leaves)
    t_types = [v.type for v in t_g.inputs[n:]]
    f_types = [v.type for v in f_g.inputs[n:]]
    res = _results(apply("cond", [pred] + o_leaves + t_cap + f_cap, true_body=_padded(t_g, [], f_types, n),
                         false_body=_padded(f_g, t_types, [], n)))
    return unflatten(t_tree, res)
