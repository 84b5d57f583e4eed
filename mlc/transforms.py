"""Function transforms: ``mlc.grad``, ``mlc.value_and_grad``, ``mlc.vjp``.

Each traces the function into a graph, differentiates that graph
(``ops.autodiff``) and returns the result in the caller's pytree structure.
Inside ``mlc.trace``/``mlc.jit``/``mlc.compile`` the forward and backward graphs
are recorded into the enclosing trace, so ``print(mlc.trace(mlc.grad(f), x))``
shows the backward graph and one compile covers both. Called on plain arrays, a
transformed function compiles itself once per argument signature (like
``mlc.jit``) and returns numpy arrays.
"""
from __future__ import annotations

import functools
from typing import Callable, Sequence

import numpy as np

from .driver import JitFunction
from .frontend.trace import TraceError, Tracer, current_trace, current_trace_active, trace_info, user_location
from .ops.autodiff import backprop
from .tree import flatten, unflatten


def _in_trace(args) -> bool:
    return current_trace_active() or any(isinstance(a, Tracer) for a in flatten(args)[0])


def _eager_or_traced(traced: Callable) -> Callable:
    """``traced(*args)`` records into the current trace; called on arrays outside any
    trace, the same function is compiled (cached per signature) and run."""
    jitted = JitFunction(traced)

    @functools.wraps(traced)
    def wrapper(*args):
        return traced(*args) if _in_trace(args) else jitted(*args)

    return wrapper


def _constant(array) -> Tracer:
    """``array`` as a constant of the current trace."""
    return current_trace().record("constant", [], {"value": np.asarray(array)})[0]


def _subtrace(fn: Callable, args: Sequence, what: str):
    """Trace ``fn`` on ``args`` into its own graph (tracers of the enclosing trace become
    inputs); returns (traced, the outer tensor for each graph input)."""
    leaves, tree = flatten(tuple(args))
    types = unflatten(tree, [a.value.type if isinstance(a, Tracer) else a for a in leaves])
    traced = trace_info(fn, types, name=getattr(fn, "__name__", what))
    outer = [a if isinstance(a, Tracer) else _constant(a)
             for a, s in zip(leaves, traced.static) if s is None]
    return traced, outer + traced.captured


def _argnum_leaves(args: Sequence, argnums, traced, what: str) -> tuple[list[int], list, bool]:
    """Graph input numbers of the leaves of the differentiated arguments (in argnums
    order), each such argument's (structure, leaf count), and whether argnums is one int."""
    single = isinstance(argnums, int)
    nums = (argnums,) if single else tuple(argnums)
    for a in nums:
        if not isinstance(a, int) or not -len(args) <= a < len(args):
            raise TypeError(f"{what}: argnums {argnums!r} is out of range for {len(args)} argument(s)")
    arg_inputs = traced.arg_inputs()
    wrt, trees = [], []
    for i in (a % len(args) for a in nums):
        for j, k in enumerate(arg_inputs[i]):
            if k is None:
                raise TraceError(f"{what}: argument {i} holds a Python scalar ({flatten(args[i])[0][j]!r}); pass an "
                                 f"array to differentiate with respect to it" + _at(user_location()))
            wrt.append(k)
        trees.append((traced.in_tree.children[i], len(arg_inputs[i])))
    return wrt, trees, single


def _at(loc):
    return f" (at {loc})" if loc else ""


def _check_float_inputs(graph, wrt, what):
    for i in wrt:
        v = graph.inputs[i]
        if not v.dtype.is_float:
            raise TraceError(f"{what}: cannot differentiate with respect to an input of type {v.type} (integer and "
                             f"boolean tensors have no gradient); leave it out of argnums" + _at(user_location()))


def value_and_grad(fn: Callable, argnums: int | Sequence[int] = 0, has_aux: bool = False) -> Callable:
    """``f(*args) -> (value, grad)``: ``value = fn(*args)`` (a float scalar, or
    ``(scalar, aux)`` with ``has_aux``) and the gradient with respect to the
    argument(s) ``argnums``, with the same pytree structure as those arguments."""
    what = "mlc.value_and_grad"

    def traced(*args):
        t, outer = _subtrace(fn, args, what)
        wrt, trees, single = _argnum_leaves(args, argnums, t, what)
        _check_float_inputs(t.graph, wrt, what)
        out_leaves_tree = t.out_tree
        if has_aux:
            if out_leaves_tree.kind not in ("tuple", "list") or len(out_leaves_tree.children) != 2:
                raise TraceError(f"{what}: with has_aux=True the function must return (value, aux)")
            value_tree = out_leaves_tree.children[0]
        else:
            value_tree = out_leaves_tree
        value = t.graph.outputs[0]
        if value_tree.kind != "leaf" or value.shape != () or not value.dtype.is_float:
            raise TraceError(f"{what}: the function must return a float scalar to differentiate, got "
                             f"{value.type if value_tree.kind == 'leaf' else 'a ' + repr(value_tree)}"
                             + ("; use has_aux=True to return (value, aux)" if not has_aux else ""))
        one = _constant(np.ones((), value.dtype.np))
        outs, grads = backprop(current_trace(), t.graph, outer, wrt, [one] + [None] * (len(t.graph.outputs) - 1))
        grouped, k = [], 0
        for tree, n in trees:
            grouped.append(unflatten(tree, grads[k:k + n]))
            k += n
        g = grouped[0] if single else tuple(grouped)
        if has_aux:
            return (outs[0], unflatten(out_leaves_tree.children[1], outs[1:])), g
        return outs[0], g

    traced.__name__ = f"value_and_grad_{getattr(fn, '__name__', 'fn')}"
    return _eager_or_traced(traced)


def grad(fn: Callable, argnums: int | Sequence[int] = 0, has_aux: bool = False) -> Callable:
    """``mlc.grad(f)(*args)``: the gradient of the float scalar ``f(*args)`` with respect
    to argument(s) ``argnums`` (pytrees keep their structure). With ``has_aux``, f
    returns ``(value, aux)`` and the result is ``(grad, aux)``."""
    vg = value_and_grad(fn, argnums, has_aux)

    def traced(*args):
        (value, g) = vg(*args)
        return (g, value[1]) if has_aux else g

    traced.__name__ = f"grad_{getattr(fn, '__name__', 'fn')}"
    return _eager_or_traced(traced)


def vjp(fn: Callable, *primals, has_aux: bool = False):
    """``out, f_vjp = mlc.vjp(fn, *primals)``: the outputs and a function taking a
    cotangent shaped like ``out`` and returning one cotangent per primal (pytrees keep
    their structure). With ``has_aux``, fn returns ``(out, aux)`` and vjp returns
    ``(out, f_vjp, aux)``."""
    what = "mlc.vjp"

    def split(t):
        if not has_aux:
            return t.out_tree, None
        if t.out_tree.kind not in ("tuple", "list") or len(t.out_tree.children) != 2:
            raise TraceError(f"{what}: with has_aux=True the function must return (out, aux)")
        return t.out_tree.children

    def forward(*ps):
        t, outer = _subtrace(fn, ps, what)
        outs, _ = backprop(current_trace(), t.graph, outer, [], [None] * len(t.graph.outputs))
        out_tree, aux_tree = split(t)
        n = out_tree.num_leaves
        out = unflatten(out_tree, outs[:n])
        return (out, unflatten(aux_tree, outs[n:])) if has_aux else out

    def backward(ps, ct):
        t, outer = _subtrace(fn, ps, what)
        wrt, trees, _ = _argnum_leaves(ps, tuple(range(len(ps))), t, what)
        wrt_float = [i for i in wrt if t.graph.inputs[i].dtype.is_float]
        out_tree, _ = split(t)
        ct_leaves, ct_tree = flatten(ct)
        if ct_tree != out_tree:
            raise TraceError(f"{what}: the cotangent has structure {ct_tree!r}, the output {out_tree!r}")
        cts = []
        for c, v in zip(ct_leaves, t.graph.outputs):
            if tuple(c.shape) != v.shape or np.dtype(c.dtype) != v.dtype.np:
                raise TraceError(f"{what}: a cotangent of {c.dtype}{list(c.shape)} was given for an output of "
                                 f"type {v.type}")
            cts.append(c if isinstance(c, Tracer) else _constant(c))
        cts += [None] * (len(t.graph.outputs) - len(cts))
        _, grads = backprop(current_trace(), t.graph, outer, wrt_float, cts)
        by_input = dict(zip(wrt_float, grads))
        # integer and boolean primals get no gradient: None in their place
        flat = [by_input.get(i) for i in wrt]
        out, k = [], 0
        for tree, n in trees:
            out.append(unflatten(tree, flat[k:k + n]))
            k += n
        return tuple(out)

    forward.__name__ = f"vjp_{getattr(fn, '__name__', 'fn')}"
    result = _eager_or_traced(forward)(*primals)
    out, aux = result if has_aux else (result, None)
    back = _eager_or_traced(backward)

    def f_vjp(ct):
        return back(primals, ct)

    return (out, f_vjp, aux) if has_aux else (out, f_vjp)
