"""Building graphs with ops: an ``Emitter`` records typed nodes on an ``ir`` graph
builder, and a ``Sym`` is one value being built, with numpy-style operators.

This is what every producer of graphs shares: the tracer (``frontend/trace.py``,
whose ``Tracer`` is a ``Sym`` and whose trace is an ``Emitter`` that also knows the
user's line and captures tensors of enclosing traces), autodiff and the
parallelization passes (plain Graph -> Graph functions over ``build_graph``), and
gradient rules, which receive an emitter as ``em``.

Python scalars adopt the dtype of the tensors they meet (numpy's weak scalars);
arrays become constants; a type rule's refusal is a ``TraceError`` naming the op,
the operand types and, when known, the user's ``file:line``.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from ..ir.graph import Graph, GraphBuilder, Value
from ..ir.types import DType, TensorType, bool_, dtype as to_dtype, float64, int64, promote
from ..tree import flatten
from . import get, infer
from .registry import OpTypeError
from .shape import canonical_slice


class TraceError(Exception):
    """An error in the program being traced or built, located at the user's line."""


def at(loc: str | None) -> str:
    return f" (at {loc})" if loc else ""


# ----------------------------------------------------------------------------- scalars and types

def weak_dtype(x, strong: DType | None) -> DType:
    """numpy's rule for a Python scalar meeting tensors of dtype ``strong``."""
    if isinstance(x, (bool, np.bool_)):
        return bool_
    if isinstance(x, (int, np.integer)) and not isinstance(x, np.integer):
        return strong if strong is not None and not strong.is_bool else int64
    if isinstance(x, float):
        return strong if strong is not None and strong.is_float else float64
    return to_dtype(np.asarray(x).dtype)


def is_python_scalar(x) -> bool:
    return isinstance(x, (bool, int, float)) and not isinstance(x, np.generic)


def strong_dtype(inputs) -> DType | None:
    """The promoted dtype of the tensor (non-scalar) operands: what Python scalars adopt."""
    dts = [to_dtype(x.dtype) for x in inputs if not is_python_scalar(x) and hasattr(x, "dtype")]
    if not dts:
        return None
    try:
        return promote(*dts)
    except TypeError:
        return dts[0]


def typed(op, in_types, attrs, loc):
    """Canonical attrs and output types, or a TraceError naming op, types and line."""
    try:
        attrs = op.canonical_attrs(in_types, attrs)
        return attrs, op.output_types(in_types, attrs)
    except OpTypeError as e:
        msg = str(e) if str(e).startswith(op.name + ":") else f"{op.name}: {e}"
        raise TraceError(f"{msg}; operand types: ({', '.join(map(str, in_types))})" + at(loc)) from None


def as_array(x, name, loc, tracing: bool = False) -> np.ndarray:
    """``x`` as a numpy array of a dtype mlc has, or a TraceError saying why not."""
    if tracing and isinstance(x, (list, tuple)):
        raise TraceError(f"{name}: got a Python {type(x).__name__} where a tensor is expected; pass an array "
                         f"(np.array(...)) for a constant, or mlc.concatenate / mlc.expand_dims to build one from "
                         f"traced tensors" + at(loc))
    if hasattr(x, "__dlpack__") and not isinstance(x, np.ndarray):
        x = np.from_dlpack(x)
    a = np.asarray(x)
    try:
        to_dtype(a.dtype)
    except TypeError as e:
        raise TraceError(f"{name}: {e}" + at(loc)) from None
    return a


# ----------------------------------------------------------------------------- the emitter

class Emitter:
    """Records ops on a ``GraphBuilder``: ``em("add", x, 1.0)`` appends a typed node
    and returns its result as a ``Sym`` (a tuple for several results)."""

    def __init__(self, name: str):
        self.builder = GraphBuilder(name, infer)
        self.constants: dict[int, Value] = {}   # id(numpy array) -> constant value (dedups captures)
        self.keepalive: list = []               # keeps those ids unique while building

    # --- what a subclass (the tracer) refines
    def location(self) -> str | None:
        """The user's ``file:line`` for errors and node locations; None outside a trace."""
        return None

    def wrap(self, value: Value) -> "Sym":
        return Sym(value, self)

    def value_of(self, x: "Sym", op: str, loc: str | None) -> Value:
        if x.em is not self:
            raise TraceError(f"{op}: a tensor of another graph (@{x.em.builder.name}) was used while building "
                             f"@{self.builder.name}" + at(loc))
        return x.value

    # --- building
    def input(self, name: str, type: TensorType) -> "Sym":
        return self.wrap(self.builder.input(name, type))

    def constant(self, array: np.ndarray) -> Value:
        key = id(array)
        if key in self.constants and self.constants[key].type == TensorType.of(array) and array.ndim > 0:
            return self.constants[key]
        self.keepalive.append(array)
        v = self.builder.constant(array)
        self.constants[key] = v
        return v

    def operand(self, x, strong: DType | None, op: str, loc: str | None) -> Value:
        """The value for one operand: a Sym's own, or a constant for a scalar or an array."""
        if isinstance(x, Sym):
            return self.value_of(x, op, loc)
        if is_python_scalar(x):
            return self.constant(np.array(x, dtype=weak_dtype(x, strong).np))
        return self.constant(as_array(x, op, loc, tracing=True))

    def emit(self, name: str, *args, **kwargs):
        """Apply op ``name`` to Syms, arrays and Python scalars with the op's call
        signature (inputs, then attributes)."""
        op = get(name)
        inputs, attrs = op.bind(args, kwargs)
        return self.emit_bound(op, inputs, attrs)

    __call__ = emit

    def emit_bound(self, op, inputs: Sequence, attrs: dict):
        loc = self.location()
        strong = strong_dtype(inputs)
        values = [self.operand(x, strong, op.name, loc) for x in inputs]
        attrs, out_types = typed(op, [v.type for v in values], attrs, loc)
        outs = [self.wrap(v) for v in self.builder.node(op.name, values, attrs, out_types, loc=loc)]
        return outs[0] if len(outs) == 1 else tuple(outs)

    def record(self, name: str, inputs: Sequence["Sym"], attrs: dict, loc: str | None = None) -> list["Sym"]:
        """Record op ``name`` with already-canonical ``attrs`` (how a graph is replayed
        into another): its results as a list."""
        if name == "constant":
            return [self.wrap(self.constant(attrs["value"]))]
        values = [self.value_of(x, name, loc) for x in inputs]
        _, out_types = typed(get(name), [v.type for v in values], attrs, loc)
        return [self.wrap(v) for v in self.builder.node(name, values, attrs, out_types, loc=loc)]

    def replay(self, graph: Graph, inputs: Sequence["Sym"]) -> tuple[dict, list["Sym"]]:
        """Record ``graph``'s nodes on ``inputs``: (graph value -> Sym, the outputs)."""
        if len(inputs) != len(graph.inputs):
            raise TypeError(f"graph @{graph.name} takes {len(graph.inputs)} inputs, got {len(inputs)}")
        env = dict(zip(graph.inputs, inputs))
        for n in graph.nodes:
            env.update(zip(n.outputs, self.record(n.op, [env[v] for v in n.inputs], n.attrs, n.loc)))
        return env, [env[v] for v in graph.outputs]

    def output(self, r, what: str) -> Value:
        """A result as a graph output: a Sym's value, or a constant for an array or scalar."""
        if isinstance(r, Sym):
            return self.value_of(r, what, None)
        if is_python_scalar(r):
            return self.constant(np.array(r, dtype=weak_dtype(r, None).np))
        return self.constant(np.asarray(r))

    def build(self, results: Sequence) -> Graph:
        return self.builder.build([self.output(r, self.builder.name) for r in results])


def build_graph(name: str, types: Sequence[TensorType], input_names: Sequence[str], fn: Callable) -> Graph:
    """The graph ``@name`` whose inputs have ``types`` and whose outputs are the
    (pytree of) results of ``fn(em, *inputs)``, called with the emitter and the inputs
    as Syms: how passes write Graph -> Graph functions with ops."""
    em = Emitter(name)
    results, _ = flatten(fn(em, *[em.input(n, t) for n, t in zip(input_names, types)]))
    if not results:
        raise TraceError(f"@{name} has no outputs")
    return em.build(results)


# ----------------------------------------------------------------------------- values being built

class Sym:
    """A value being built: its type, and numpy-style operators that record ops."""

    __slots__ = ("value", "em")
    __array_ufunc__ = None   # numpy's operators defer to ours (the tracer maps ufuncs to ops)

    def __init__(self, value: Value, em: Emitter):
        self.value = value
        self.em = em

    def _emit(self, name: str, *args, **kwargs):
        return self.em.emit(name, *args, **kwargs)

    def _location(self) -> str | None:
        return self.em.location()

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
        return f"{type(self).__name__}({self.value.type})"

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d traced tensor")
        return self.shape[0]

    def __bool__(self):
        raise TraceError(f"the value of a traced tensor ({self.value.type}) is not known while tracing, so it "
                         f"cannot decide an `if`, `while`, `and`/`or` or bool(); use mlc.where to select values"
                         + at(self._location()))

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def _unknown_value(self, what: str):
        raise TraceError(f"{what} of a traced tensor ({self.value.type}): its value is not known while tracing; "
                         f"keep it a tensor (e.g. x.astype(mlc.float64), mlc.where for choices), or compute it "
                         f"outside the traced function and pass it in" + at(self._location()))

    def __float__(self): self._unknown_value("float()")
    def __int__(self): self._unknown_value("int()")
    def __index__(self): self._unknown_value("using as a Python int (an index, a size, range())")
    def __complex__(self): self._unknown_value("complex()")
    def __array__(self, *args, **kwargs): self._unknown_value("a numpy array (np.asarray, np.array)")

    def __setitem__(self, key, value):
        raise TraceError("traced tensors are immutable, like JAX arrays: x[...] = v is not supported; build the "
                         "new value instead (mlc.where(mask, v, x), mlc.concatenate, mlc.pad)" + at(self._location()))

    # --- arithmetic
    def __add__(self, o): return self._emit("add", self, o)
    def __radd__(self, o): return self._emit("add", o, self)
    def __sub__(self, o): return self._emit("sub", self, o)
    def __rsub__(self, o): return self._emit("sub", o, self)
    def __mul__(self, o): return self._emit("mul", self, o)
    def __rmul__(self, o): return self._emit("mul", o, self)
    def __truediv__(self, o): return self._emit("div", self, o)
    def __rtruediv__(self, o): return self._emit("div", o, self)
    def __pow__(self, o): return self._emit("pow", self, o)
    def __rpow__(self, o): return self._emit("pow", o, self)
    def __matmul__(self, o): return self._emit("matmul", self, o)
    def __rmatmul__(self, o): return self._emit("matmul", o, self)
    def __neg__(self): return self._emit("neg", self)
    def __pos__(self): return self
    def __abs__(self): return self._emit("abs", self)

    # --- comparisons: a <= b is (a < b) or (a == b), so NaN compares false as in numpy;
    # a != b is not (a == b), true for NaN as in numpy
    __hash__ = object.__hash__

    def __lt__(self, o): return self._emit("less", self, o)
    def __gt__(self, o): return self._emit("greater", self, o)
    def __eq__(self, o): return self._emit("equal", self, o)
    def __le__(self, o): return self._emit("where", self._emit("less", self, o), True, self._emit("equal", self, o))
    def __ge__(self, o): return self._emit("where", self._emit("greater", self, o), True, self._emit("equal", self, o))
    def __ne__(self, o): return self._emit("where", self._emit("equal", self, o), False, True)

    # --- methods
    @property
    def T(self): return self._emit("transpose", self)

    def transpose(self, *axes):
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        return self._emit("transpose", self, axes=axes or None)

    def reshape(self, *shape):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return self._emit("reshape", self, shape=shape)

    def astype(self, dtype): return self._emit("cast", self, dtype=dtype)

    # numpy's functions (np.sum(x), np.max(x), ...) call these methods with dtype= and out=
    def _reduce(self, op, axis, keepdims, dtype, out):
        if out is not None:
            raise TraceError(f"{op}: out= cannot be used while tracing (results are new tensors)"
                             + at(self._location()))
        x = self if dtype is None else self._emit("cast", self, dtype=dtype)
        return self._emit(op, x, axis=axis, keepdims=keepdims)

    def sum(self, axis=None, dtype=None, out=None, keepdims=False): return self._reduce("sum", axis, keepdims, dtype, out)
    def mean(self, axis=None, dtype=None, out=None, keepdims=False): return self._reduce("mean", axis, keepdims, dtype, out)
    def prod(self, axis=None, dtype=None, out=None, keepdims=False): return self._reduce("prod", axis, keepdims, dtype, out)
    def max(self, axis=None, out=None, keepdims=False): return self._reduce("max", axis, keepdims, None, out)
    def min(self, axis=None, out=None, keepdims=False): return self._reduce("min", axis, keepdims, None, out)

    def __getitem__(self, key):
        return index(self, key)


def index(t: Sym, key):
    """``t[key]`` for ints, slices, None and ``...``: a slice (numpy's clamping) and a
    reshape where the rank changes."""
    loc = t._location
    key = key if isinstance(key, tuple) else (key,)
    for k in key:
        if isinstance(k, (Sym, np.ndarray, list)):
            dt = np.dtype(k.dtype) if isinstance(k, (Sym, np.ndarray)) else np.asarray(k).dtype
            if dt == np.bool_:
                raise TraceError("boolean-mask indexing x[mask] gives a result whose size depends on the data, "
                                 "which a compiled graph cannot have; keep the shape with mlc.where(mask, x, 0) "
                                 "(and reduce over it), or index outside the traced function" + at(loc()))
            raise TraceError(f"indexing with an array ({type(k).__name__}) is not supported by x[...] while "
                             "tracing; use mlc.gather(x, indices, axis=...)" + at(loc()))
    if sum(k is Ellipsis for k in key) > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    n_real = sum(1 for k in key if k is not None and k is not Ellipsis)
    if n_real > t.ndim:
        raise TraceError(f"too many indices for a tensor of rank {t.ndim}: {key}" + at(loc()))
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
                raise TraceError("slice step cannot be zero" + at(loc()))
            b, e, s = canonical_slice(n, k.start, k.stop, k.step)
            begin.append(b), end.append(e), step.append(s)
            out_shape.append(len(range(*slice(b, e, s).indices(n))))
        elif isinstance(k, (int, np.integer)) and not isinstance(k, bool):
            i = int(k)
            if not -n <= i < n:
                raise TraceError(f"index {i} is out of bounds for axis {d} with size {n}" + at(loc()))
            i %= n
            begin.append(i), end.append(i + 1), step.append(1)
        else:
            raise TraceError(f"unsupported index {k!r}: traced tensors take ints, slices, None and ..." + at(loc()))
        d += 1
    out = t
    if any((b, e, s) != (0, n, 1) for b, e, s, n in zip(begin, end, step, t.shape)):  # not the whole axis
        out = t._emit("slice", t, begin=tuple(begin), end=tuple(end), step=tuple(step))
    if tuple(out_shape) != out.shape:
        out = t._emit("reshape", out, shape=tuple(out_shape))
    return out
