"""Tracing: run a Python function on ``Tracer`` stand-ins and record a Graph.

Arrays passed as arguments become graph inputs; numpy arrays the function
captures and Python scalars become constants (scalars adopt the dtype of the
tensors they meet, as numpy's weak scalars do). A type or shape error is raised
at trace time with the op, the operand types and the user's ``file:line``.
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
from ..ir.graph import Graph, GraphBuilder, Value
from ..tree import TreeDef, flatten, key_paths, unflatten
from ..ir.types import DType, TensorType, bool_, dtype as to_dtype, float64, int64, promote
from ..ops.registry import OpTypeError
from ..ops.shape import canonical_slice

_MLC_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class TraceError(Exception):
    """An error in the traced program, located at the user's line."""


def user_location() -> str | None:
    """``file:line`` of the innermost stack frame outside the mlc package."""
    f = sys._getframe(1)
    while f is not None:
        path = os.path.abspath(f.f_code.co_filename)
        if not path.startswith(_MLC_DIR + os.sep):
            return f"{f.f_code.co_filename}:{f.f_lineno}"
        f = f.f_back
    return None


class _TraceContext:
    def __init__(self, name: str):
        self.builder = GraphBuilder(name, ops.infer)
        self.constants: dict[int, Value] = {}   # id(numpy array) -> constant value (dedups captures)
        self.keepalive: list = []
        # tensors of enclosing traces used here (a closure inside mlc.grad) become extra inputs
        self.captured: dict[Value, Value] = {}
        self.captured_tracers: list[Tracer] = []

    def value_of(self, x: "Tracer", op: str, loc: str | None) -> Value:
        """The value of ``x`` in this trace, capturing it as an input when it belongs to
        an enclosing trace."""
        if x._ctx is self:
            return x.value
        if x._ctx not in _STACK.get():
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


class Tracer:
    """A symbolic tensor inside ``mlc.trace``; supports numpy-style operators."""

    __slots__ = ("value", "_ctx")
    __array_ufunc__ = None   # replaced below: numpy ufuncs on tracers map to mlc ops

    def __init__(self, value: Value, ctx: _TraceContext):
        self.value = value
        self._ctx = ctx

    # --- metadata
    @property
    def shape(self) -> tuple[int, ...]:
        return self.value.type.shape

    @property
    def dtype(self) -> np.dtype:
        return self.value.type.dtype.np

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return self.value.type.size

    def __repr__(self) -> str:
        return f"Tracer({self.value.type})"

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d traced tensor")
        return self.shape[0]

    def __bool__(self):
        raise TraceError(f"the value of a traced tensor ({self.value.type}) is not known while tracing, so it "
                         f"cannot decide an `if`, `while`, `and`/`or` or bool(); use mlc.where to select values"
                         + _at(user_location()))

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def _unknown_value(self, what: str):
        raise TraceError(f"{what} of a traced tensor ({self.value.type}): its value is not known while tracing; "
                         f"keep it a tensor (e.g. x.astype(mlc.float64), mlc.where for choices), or compute it "
                         f"outside the traced function and pass it in" + _at(user_location()))

    def __float__(self): self._unknown_value("float()")
    def __int__(self): self._unknown_value("int()")
    def __index__(self): self._unknown_value("using as a Python int (an index, a size, range())")
    def __complex__(self): self._unknown_value("complex()")
    def __array__(self, *args, **kwargs): self._unknown_value("a numpy array (np.asarray, np.array)")

    def __setitem__(self, key, value):
        raise TraceError("traced tensors are immutable, like JAX arrays: x[...] = v is not supported; build the "
                         "new value instead (mlc.where(mask, v, x), mlc.concatenate, mlc.pad)" + _at(user_location()))

    __hash__ = object.__hash__

    # --- arithmetic
    def __add__(self, o): return apply("add", self, o)
    def __radd__(self, o): return apply("add", o, self)
    def __sub__(self, o): return apply("sub", self, o)
    def __rsub__(self, o): return apply("sub", o, self)
    def __mul__(self, o): return apply("mul", self, o)
    def __rmul__(self, o): return apply("mul", o, self)
    def __truediv__(self, o): return apply("div", self, o)
    def __rtruediv__(self, o): return apply("div", o, self)
    def __pow__(self, o): return apply("pow", self, o)
    def __rpow__(self, o): return apply("pow", o, self)
    def __matmul__(self, o): return apply("matmul", self, o)
    def __rmatmul__(self, o): return apply("matmul", o, self)
    def __neg__(self): return apply("neg", self)
    def __pos__(self): return self
    def __abs__(self): return apply("abs", self)

    # --- comparisons: a <= b is (a < b) or (a == b), so NaN compares false as in numpy;
    # a != b is not (a == b), true for NaN as in numpy
    def __lt__(self, o): return apply("less", self, o)
    def __gt__(self, o): return apply("greater", self, o)
    def __eq__(self, o): return apply("equal", self, o)
    def __le__(self, o): return apply("where", apply("less", self, o), True, apply("equal", self, o))
    def __ge__(self, o): return apply("where", apply("greater", self, o), True, apply("equal", self, o))
    def __ne__(self, o): return _logical_not(apply("equal", self, o))

    # --- methods
    @property
    def T(self): return apply("transpose", self)

    def transpose(self, *axes):
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        return apply("transpose", self, axes=axes or None)

    def reshape(self, *shape):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return apply("reshape", self, shape=shape)

    def astype(self, dtype): return apply("cast", self, dtype=dtype)

    # numpy's functions (np.sum(x), np.max(x), ...) call these methods with dtype= and out=
    def _reduce(self, op, axis, keepdims, dtype, out):
        if out is not None:
            raise TraceError(f"{op}: out= cannot be used while tracing (results are new tensors)"
                             + _at(user_location()))
        x = self if dtype is None else apply("cast", self, dtype=dtype)
        return apply(op, x, axis=axis, keepdims=keepdims)

    def sum(self, axis=None, dtype=None, out=None, keepdims=False): return self._reduce("sum", axis, keepdims, dtype, out)
    def mean(self, axis=None, dtype=None, out=None, keepdims=False): return self._reduce("mean", axis, keepdims, dtype, out)
    def prod(self, axis=None, dtype=None, out=None, keepdims=False): return self._reduce("prod", axis, keepdims, dtype, out)
    def max(self, axis=None, out=None, keepdims=False): return self._reduce("max", axis, keepdims, None, out)
    def min(self, axis=None, out=None, keepdims=False): return self._reduce("min", axis, keepdims, None, out)

    def __getitem__(self, key):
        return _index(self, key)


def _at(loc: str | None) -> str:
    return f" (at {loc})" if loc else ""


def _logical_not(t):
    return apply("where", t, False, True)


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


# ----------------------------------------------------------------------------- indexing

def _index(t: Tracer, key):
    key = key if isinstance(key, tuple) else (key,)
    for k in key:
        if isinstance(k, (Tracer, np.ndarray, list)):
            dt = np.dtype(k.dtype) if isinstance(k, (Tracer, np.ndarray)) else np.asarray(k).dtype
            if dt == np.bool_:
                raise TraceError("boolean-mask indexing x[mask] gives a result whose size depends on the data, "
                                 "which a compiled graph cannot have; keep the shape with mlc.where(mask, x, 0) "
                                 "(and reduce over it), or index outside the traced function" + _at(user_location()))
            raise TraceError(f"indexing with an array ({type(k).__name__}) is not supported by x[...] while "
                             "tracing; use mlc.gather(x, indices, axis=...)" + _at(user_location()))
    if sum(k is Ellipsis for k in key) > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    n_real = sum(1 for k in key if k is not None and k is not Ellipsis)
    if n_real > t.ndim:
        raise TraceError(f"too many indices for a tensor of rank {t.ndim}: {key}" + _at(user_location()))
    if Ellipsis in key:
        e = key.index(Ellipsis)
        key = key[:e] + (slice(None),) * (t.ndim - n_real) + key[e + 1:]
    else:
        key = key + (slice(None),) * (t.ndim - n_real)
    begin, end, step, out_shape = [], [], [], []
    d = 0
    for k in key:
        if k is None:
            out_shape.append(1)
            continue
        n = t.shape[d]
        if isinstance(k, slice):
            if k.step == 0:
                raise TraceError("slice step cannot be zero" + _at(user_location()))
            b, e, s = canonical_slice(n, k.start, k.stop, k.step)
            begin.append(b), end.append(e), step.append(s)
            out_shape.append(len(range(*slice(b, e, s).indices(n))))
        elif isinstance(k, (int, np.integer)) and not isinstance(k, bool):
            i = int(k)
            if not -n <= i < n:
                raise TraceError(f"index {i} is out of bounds for axis {d} with size {n}" + _at(user_location()))
            i %= n
            begin.append(i), end.append(i + 1), step.append(1)
        else:
            raise TraceError(f"unsupported index {k!r}: traced tensors take ints, slices, None and ..."
                             + _at(user_location()))
        d += 1
    out = t
    if any((b, e, s) != (0, n, 1) for b, e, s, n in zip(begin, end, step, t.shape)):  # not the whole axis
        out = apply("slice", t, begin=tuple(begin), end=tuple(end), step=tuple(step))
    if tuple(out_shape) != out.shape:
        out = apply("reshape", out, shape=tuple(out_shape))
    return out


# ----------------------------------------------------------------------------- applying ops

def _weak_dtype(x, strong: DType | None) -> DType:
    """numpy's rule for a Python scalar meeting tensors of dtype ``strong``."""
    if isinstance(x, (bool, np.bool_)):
        return bool_
    if isinstance(x, (int, np.integer)) and not isinstance(x, np.integer):
        return strong if strong is not None and not strong.is_bool else int64
    if isinstance(x, float):
        return strong if strong is not None and strong.is_float else float64
    return to_dtype(np.asarray(x).dtype)


def _is_python_scalar(x) -> bool:
    return isinstance(x, (bool, int, float)) and not isinstance(x, np.generic)


def _strong_dtype(inputs) -> DType | None:
    """The promoted dtype of the tensor (non-scalar) operands: what Python scalars adopt."""
    dts = [to_dtype(x.dtype) for x in inputs if not _is_python_scalar(x) and hasattr(x, "dtype")]
    if not dts:
        return None
    try:
        return promote(*dts)
    except TypeError:
        return dts[0]


def _typed(op, in_types, attrs, loc):
    """Canonical attrs and output types, or a TraceError naming op, types and line."""
    try:
        attrs = op.canonical_attrs(in_types, attrs)
        return attrs, op.output_types(in_types, attrs)
    except OpTypeError as e:
        msg = str(e) if str(e).startswith(op.name + ":") else f"{op.name}: {e}"
        raise TraceError(f"{msg}; operand types: ({', '.join(map(str, in_types))})" + _at(loc)) from None


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
    first = next((x._ctx for x in inputs if isinstance(x, Tracer)), None)
    stack = _STACK.get()
    if first is None:
        ctx = stack[-1] if stack and not eager_without_tracers else None
    else:
        ctx = stack[-1] if stack else first   # the innermost trace records (and captures outer tensors)
    loc = user_location()
    strong = _strong_dtype(inputs)
    if ctx is None:
        return _eager(op, inputs, attrs, strong, loc)
    values = []
    for x in inputs:
        if isinstance(x, Tracer):
            values.append(ctx.value_of(x, name, loc))
        elif _is_python_scalar(x):
            values.append(_constant(ctx, np.array(x, dtype=_weak_dtype(x, strong).np)))
        else:
            values.append(_constant(ctx, _as_array(x, name, loc, tracing=True)))
    attrs, out_types = _typed(op, [v.type for v in values], attrs, loc)
    outs = ctx.builder.node(name, values, attrs, out_types, loc=loc)
    wrapped = [Tracer(v, ctx) for v in outs]
    return wrapped[0] if len(wrapped) == 1 else tuple(wrapped)


def _eager(op, inputs, attrs, strong, loc):
    arrays = [np.array(x, dtype=_weak_dtype(x, strong).np) if _is_python_scalar(x) else _as_array(x, op.name, loc)
              for x in inputs]
    attrs, out_types = _typed(op, [TensorType.of(a) for a in arrays], attrs, loc)
    with np.errstate(all="ignore"):
        r = op.reference(*arrays, **attrs)
    rs = r if isinstance(r, (tuple, list)) else (r,)
    rs = [np.asarray(x).astype(t.dtype.np, copy=False) for x, t in zip(rs, out_types)]
    return rs[0] if len(rs) == 1 else tuple(rs)


def _as_array(x, name, loc, tracing: bool = False) -> np.ndarray:
    if tracing and isinstance(x, (list, tuple)):
        raise TraceError(f"{name}: got a Python {type(x).__name__} where a tensor is expected; pass an array "
                         f"(np.array(...)) for a constant, or mlc.concatenate / mlc.expand_dims to build one from "
                         f"traced tensors" + _at(loc))
    if hasattr(x, "__dlpack__") and not isinstance(x, np.ndarray):
        x = np.from_dlpack(x)
    a = np.asarray(x)
    try:
        to_dtype(a.dtype)
    except TypeError as e:
        raise TraceError(f"{name}: {e}" + _at(loc)) from None
    return a


def _constant(ctx: _TraceContext, array: np.ndarray) -> Value:
    key = id(array)
    if key in ctx.constants and ctx.constants[key].type == TensorType.of(array) and array.ndim > 0:
        return ctx.constants[key]
    ctx.keepalive.append(array)
    v = ctx.builder.constant(array)
    ctx.constants[key] = v
    return v


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
        t = a if isinstance(a, TensorType) else TensorType.of(_as_array(a, "trace", None))
        tracer_leaves.append(Tracer(ctx.builder.input(n, t), ctx))
        static.append(None)
    token = _STACK.set(_STACK.get() + (ctx,))
    try:
        result = fn(*unflatten(in_tree, tracer_leaves))
    finally:
        _STACK.reset(token)
    if result is None:
        raise TraceError(f"{gname} returned None; a traced function must return tensors")
    results, out_tree = flatten(result)   # None inside a returned pytree is an empty subtree
    outs = []
    for r in results:
        if isinstance(r, Tracer):
            outs.append(ctx.value_of(r, gname, None))
        else:
            outs.append(_constant(ctx, np.asarray(r) if not _is_python_scalar(r) else
                                  np.array(r, dtype=_weak_dtype(r, None).np)))
    if not outs:
        raise TraceError(f"{gname} returned no tensors")
    return Traced(ctx.builder.build(outs), in_tree, out_tree, static, list(ctx.captured_tracers))


def trace(fn: Callable, *args) -> Graph:
    """Trace ``fn`` on example arguments into a Graph: ``print(mlc.trace(f, x))``.
    Arguments may be arrays, Python scalars or pytrees (dicts, lists, tuples) of them."""
    return trace_info(fn, args).graph


def record(name: str, inputs: Sequence, attrs: dict, loc: str | None = None) -> list:
    """Record op ``name`` with already-canonical ``attrs`` on tracers in the current
    trace (how a graph is replayed into another trace, e.g. by autodiff)."""
    ctx = _STACK.get()[-1]
    op = ops.get(name)
    if name == "constant":
        return [Tracer(_constant(ctx, attrs["value"]), ctx)]
    values = [ctx.value_of(x, name, loc) for x in inputs]
    _, out_types = _typed(op, [v.type for v in values], attrs, loc)
    return [Tracer(v, ctx) for v in ctx.builder.node(name, values, attrs, out_types, loc=loc)]


def current_trace_active() -> bool:
    return bool(_STACK.get())
