"""Tracing: run a Python function on ``Tracer`` stand-ins and record a Graph.

Arrays passed as arguments become graph inputs; numpy arrays the function
captures and Python scalars become constants (scalars adopt the dtype of the
tensors they meet, as numpy's weak scalars do). A type or shape error is raised
at trace time with the op, the operand types and the user's ``file:line``.

A trace is an ``Emitter`` (``ops/builder.py``) that knows the user's line and
captures tensors of enclosing traces; a ``Tracer`` is a ``Sym`` whose operators
record into the innermost open trace.
"""
from __future__ import annotations

import contextvars
import inspect
import os
import re
import sys
from typing import Callable, Sequence

import numpy as np

from .. import ops
from ..ir.graph import Graph, Value
from ..ir.types import TensorType, dtype as to_dtype
from ..ops.builder import (Emitter, Sym, TraceError, as_array, at as _at, is_python_scalar as _is_python_scalar,
                           strong_dtype as _strong_dtype, typed as _typed, weak_dtype as _weak_dtype)
from ..tree import TreeDef, flatten, key_paths, unflatten

_MLC_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


__all__ = ["TraceError", "Tracer", "Traced", "apply", "evaluate_or_record", "trace", "trace_info", "current_trace",
           "user_location", "sanitize_name", "arg_names"]


def user_location() -> str | None:
    """``file:line`` of the innermost stack frame outside the mlc package."""
    f = sys._getframe(1)
    while f is not None:
        path = os.path.abspath(f.f_code.co_filename)
        if not path.startswith(_MLC_DIR + os.sep):
            return f"{f.f_code.co_filename}:{f.f_lineno}"
        f = f.f_back
    return None


class _TraceContext(Emitter):
    """One open trace: nodes are located at the user's line, and tensors of enclosing
    traces used here (a closure inside mlc.grad) become extra inputs."""

    def __init__(self, name: str):
        super().__init__(name)
        self.captured: dict[Value, Value] = {}
        self.captured_tracers: list[Tracer] = []

    def location(self) -> str | None:
        return user_location()

    def wrap(self, value: Value) -> "Tracer":
        return Tracer(value, self)

    def value_of(self, x: Sym, op: str, loc: str | None) -> Value:
        """The value of ``x`` in this trace, capturing it as an input when it belongs to
        an enclosing trace."""
        if x.em is self:
            return x.value
        if x.em not in _STACK.get():
            raise TraceError(f"{op}: a tensor from another (finished) trace was used here" + _at(loc))
        v = self.captured.get(x.value)
        if v is None:
            v = self.builder.input(f"captured{len(self.captured)}", x.value.type)
            self.captured[x.value] = v
            self.captured_tracers.append(x)
        return v


# The traces open in this thread (or asyncio task), innermost last: a tuple, replaced
# on every push, so threads tracing at once never see each other's traces.
_STACK: contextvars.ContextVar[tuple[_TraceContext, ...]] = contextvars.ContextVar("mlc_trace_stack", default=())


def current_trace() -> _TraceContext | None:
    """The innermost open trace of this thread, or None."""
    stack = _STACK.get()
    return stack[-1] if stack else None


class Tracer(Sym):
    """A symbolic tensor inside ``mlc.trace``; supports numpy-style operators, which
    record into the innermost open trace."""

    __slots__ = ()

    def _emit(self, name: str, *args, **kwargs):
        return apply(name, *args, **kwargs)

    def _location(self) -> str | None:
        return user_location()


_UFUNCS = {np.add: "add", np.subtract: "sub", np.multiply: "mul", np.true_divide: "div", np.power: "pow",
           np.maximum: "maximum", np.minimum: "minimum", np.equal: "equal", np.less: "less",
           np.greater: "greater", np.negative: "neg", np.absolute: "abs", np.exp: "exp", np.log: "log",
           np.sqrt: "sqrt", np.tanh: "tanh", np.sin: "sin", np.cos: "cos", np.matmul: "matmul"}


def _array_ufunc(self, ufunc, method, *inputs, **kwargs):
    if method == "__call__" and ufunc in _UFUNCS and not kwargs:
        return apply(_UFUNCS[ufunc], *inputs)
    raise TraceError(f"numpy.{ufunc.__name__} ({method}) cannot be applied to a traced tensor; "
                     f"use the mlc function instead" + _at(user_location()))


Tracer.__array_ufunc__ = _array_ufunc


# ----------------------------------------------------------------------------- applying ops

def apply(name: str, *args, **kwargs):
    """Apply op ``name`` to tracers, arrays and scalars: inside a trace this records a
    node; outside, with plain arrays, it evaluates the numpy reference."""
    return _apply(name, args, kwargs, eager_without_tracers=False)


def evaluate_or_record(name: str, *args, **kwargs):
    """Like ``apply``, but with no tracer among the inputs the op is evaluated now even
    inside a trace: how an importer folds constant subgraphs (shape arithmetic)."""
    return _apply(name, args, kwargs, eager_without_tracers=True)


def _apply(name: str, args, kwargs, eager_without_tracers: bool):
    op = ops.get(name)
    inputs, attrs = op.bind(args, kwargs)
    first = next((x.em for x in inputs if isinstance(x, Sym)), None)
    stack = _STACK.get()
    if first is None:
        em = stack[-1] if stack and not eager_without_tracers else None
    else:
        em = stack[-1] if stack else first   # the innermost trace records (and captures outer tensors)
    if em is None:
        return _eager(op, inputs, attrs, _strong_dtype(inputs), user_location())
    return em.emit_bound(op, inputs, attrs)


def _eager(op, inputs, attrs, strong, loc):
    arrays = [np.array(x, dtype=_weak_dtype(x, strong).np) if _is_python_scalar(x) else as_array(x, op.name, loc)
              for x in inputs]
    attrs, out_types = _typed(op, [TensorType.of(a) for a in arrays], attrs, loc)
    with np.errstate(all="ignore"):
        r = op.reference(*arrays, **attrs)
    rs = r if isinstance(r, (tuple, list)) else (r,)
    rs = [np.asarray(x).astype(t.dtype.np, copy=False) for x, t in zip(rs, out_types)]
    return rs[0] if len(rs) == 1 else tuple(rs)


# ----------------------------------------------------------------------------- trace

def sanitize_name(name: str) -> str:
    """A name the graph text can print: letters, digits and _ (ONNX and Python names vary)."""
    name = re.sub(r"[^A-Za-z0-9_]", "_", name) or "fn"
    return name if not name[0].isdigit() else "_" + name


def arg_names(fn: Callable, n: int) -> list[str]:
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        params = []
    names = []
    for i in range(n):
        p = params[i] if i < len(params) else None
        if p is None or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            names.append(f"arg{i}")
        else:
            names.append(sanitize_name(p.name))
    return names


class Traced:
    """A traced function: its graph, the pytree structure of its arguments and result,
    and the tensors of enclosing traces it captured (the graph's trailing inputs)."""

    def __init__(self, graph: Graph, in_tree: TreeDef, out_tree: TreeDef, static: list, captured: list):
        self.graph = graph
        self.in_tree = in_tree        # structure of the argument tuple
        self.out_tree = out_tree
        self.static = static          # per argument leaf: the Python scalar baked in, or None for an input
        self.captured = captured      # Tracers of enclosing traces, one per trailing graph input

    @property
    def single_output(self) -> bool:
        return self.out_tree.kind == "leaf"

    def arg_inputs(self) -> list[list[int | None]]:
        """Per argument, the graph input number of each of its leaves (None for a Python
        scalar baked into the graph)."""
        out, leaf, k = [], 0, 0
        for arg in self.in_tree.children:
            positions = []
            for s in self.static[leaf:leaf + arg.num_leaves]:
                positions.append(k if s is None else None)
                k += s is None
            leaf += arg.num_leaves
            out.append(positions)
        return out


def _device_type(a) -> TensorType | None:
    """The type of an array that lives elsewhere (a CuPy array on a GPU), read from its
    shape and dtype without copying it to the host; None for anything else."""
    if isinstance(a, np.ndarray) or not (hasattr(a, "shape") and hasattr(a, "dtype")
                                         and hasattr(a, "__cuda_array_interface__")):
        return None
    return TensorType(tuple(a.shape), to_dtype(np.dtype(a.dtype)))


def trace_info(fn: Callable, args: Sequence, name: str | None = None,
               input_names: Sequence[str] | None = None) -> Traced:
    """Trace ``fn`` on example ``args``. An argument may be an array (a graph input),
    a ``TensorType`` (an input of that type), a Python scalar (a constant baked into
    the graph) or a pytree of those (nested dicts, lists, tuples). Inputs are named
    after fn's parameters (and the path inside a pytree) unless ``input_names`` is given."""
    gname = sanitize_name(name or getattr(fn, "__name__", "fn"))
    ctx = _TraceContext(gname)
    names = [sanitize_name(n) for n in input_names] if input_names is not None else arg_names(fn, len(args))
    leaves, in_tree = flatten(tuple(args))
    leaf_names = []
    for n, a in zip(names, args):
        leaf_names += [n] if flatten(a)[1].kind == "leaf" else [sanitize_name(f"{n}_{p}") for p in key_paths(a)]
    tracer_leaves, static = [], []
    for n, a in zip(leaf_names, leaves):
        if _is_python_scalar(a):
            tracer_leaves.append(a)
            static.append(a)
            continue
        t = a if isinstance(a, TensorType) else _device_type(a) or TensorType.of(as_array(a, "trace", None))
        tracer_leaves.append(ctx.input(n, t))
        static.append(None)
    token = _STACK.set(_STACK.get() + (ctx,))
    try:
        result = fn(*unflatten(in_tree, tracer_leaves))
    finally:
        _STACK.reset(token)
    if result is None:
        raise TraceError(f"{gname} returned None; a traced function must return tensors")
    results, out_tree = flatten(result)   # None inside a returned pytree is an empty subtree
    outs = [ctx.output(r, gname) for r in results]
    if not outs:
        raise TraceError(f"{gname} returned no tensors")
    return Traced(ctx.builder.build(outs), in_tree, out_tree, static, list(ctx.captured_tracers))


def trace(fn: Callable, *args) -> Graph:
    """Trace ``fn`` on example arguments into a Graph: ``print(mlc.trace(f, x))``.
    Arguments may be arrays, Python scalars or pytrees (dicts, lists, tuples) of them."""
    return trace_info(fn, args).graph


def current_trace_active() -> bool:
    return bool(_STACK.get())
