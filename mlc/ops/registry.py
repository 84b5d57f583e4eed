"""The op record: everything the stack needs to know about one op, in one place.

An op module defines ``OpDef`` records and lists them in ``OPS``; ``mlc.ops``
builds the registry from those lists explicitly (no registration side effects).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from ..ir.expr import Const, Expr
from ..ir.tensor import Compute, Tensor
from ..ir.types import DType, TensorType, dtype as to_dtype

KINDS = ("injective", "reduction", "contraction", "opaque", "collective", "control")

# The largest tensor mlc describes: byte sizes and offsets are int64 in the generated code.
MAX_NBYTES = 2 ** 63 - 1


class OpTypeError(TypeError):
    """A type rule refused its operands; the message says why (without the location,
    which the tracer adds)."""


@dataclass
class OpDef:
    name: str
    kind: str
    infer: Callable[..., list[TensorType]]      # infer(input_types, **attrs) -> output types
    reference: Callable[..., object]            # reference(*np arrays, **attrs) -> array(s)
    lower: Callable[..., list[Compute]]         # lower(input tensors, output types, **attrs) -> stages
    params: tuple[str, ...] = ("x",)            # input names; "*xs" takes a list of tensors
    attrs: dict = field(default_factory=dict)   # attribute name -> default value
    canonicalize: Callable[..., dict] | None = None   # (input_types, attrs) -> canonical attrs
    vjp: Callable | None = None                 # gradient rule, filled by the autodiff work
    doc: str = ""
    # Facts the graph passes read instead of lists of op names:
    elementwise: bool = False                   # out[i] = f(inputs at i) under numpy broadcasting
    view: bool = False                          # the result is the input's bytes under another shape
    identity_when_same_type: bool = False       # a no-op when the result type equals the input's type
    in_place: bool = False                      # the result may be written over its input when both have one type
    shard: Callable | None = None               # tensor parallel: shard(in_shardings, in_types) -> sharding or None
    weight_channel_axis: Callable | None = None  # (out type, w type) -> w's out-channel axis or None (batch_norm fold)

    def __post_init__(self):
        assert self.kind in KINDS, self.kind

    @property
    def variadic(self) -> bool:
        return len(self.params) == 1 and self.params[0].startswith("*")

    def bind(self, args: Sequence, kwargs: dict) -> tuple[list, dict]:
        """Split a user call ``op(*args, **kwargs)`` into (inputs, attrs)."""
        args = list(args)
        if self.variadic:
            if not args:
                raise TypeError(f"{self.name}() needs a sequence of tensors")
            inputs = list(args.pop(0))
            if not inputs:
                raise TypeError(f"{self.name}() needs at least one tensor")
        else:
            n = len(self.params)
            if len(args) < n:
                missing = [p for p in self.params[len(args):] if p not in kwargs]
                if missing:
                    raise TypeError(f"{self.name}() missing input(s): {', '.join(missing)}")
                args += [kwargs.pop(p) for p in self.params[len(args):]]
            inputs, args = args[:n], args[n:]
        names = list(self.attrs)
        if len(args) > len(names):
            raise TypeError(f"{self.name}() takes {len(self.params) + len(names)} arguments, got more")
        attrs = dict(self.attrs)
        for k, v in zip(names, args):
            attrs[k] = v
        for k, v in kwargs.items():
            if k not in attrs:
                raise TypeError(f"{self.name}() got an unexpected argument {k!r}")
            attrs[k] = v
        return inputs, attrs

    def output_types(self, in_types: Sequence[TensorType], attrs: dict) -> list[TensorType]:
        """``infer`` on canonical attrs, and every result small enough to exist: a shape
        whose byte size passes int64 is refused here, once for every op."""
        outs = list(self.infer(list(in_types), **attrs))
        for t in outs:
            check_fits(self.name, t.shape, t.dtype)
        return outs

    def canonical_attrs(self, in_types: Sequence[TensorType], attrs: dict) -> dict:
        full = dict(self.attrs)
        full.update(attrs)
        return self.canonicalize(list(in_types), full) if self.canonicalize else full


# ----------------------------------------------------------------------------- helpers for op files

def check(cond: bool, msg: str) -> None:
    if not cond:
        raise OpTypeError(msg)


def check_fits(op: str, shape: Sequence[int], dt: DType) -> None:
    """Refuse a result of ``shape`` whose byte size passes int64 (exact arithmetic: an
    int64 product would wrap into a small or negative size)."""
    n = math.prod(shape)
    check(n * dt.itemsize <= MAX_NBYTES,
          f"{op}: the result {dt.short}{list(shape)} would hold {n} elements ({n * dt.itemsize} bytes), more than "
          f"fits in memory (at most 2**63-1 bytes)")


def numpy_result_dtype(fn: Callable, *dtypes: DType) -> DType:
    """The dtype numpy gives ``fn`` on arrays of these dtypes: the type rules follow numpy."""
    with np.errstate(all="ignore"):
        try:
            r = np.asarray(fn(*[np.ones(1, dtype=d.np) for d in dtypes]))
        except TypeError as e:
            raise OpTypeError(str(e).split("\n")[0]) from None
    try:
        return to_dtype(r.dtype)
    except TypeError as e:
        raise OpTypeError(str(e)) from None


def broadcast_shapes(*shapes: Sequence[int]) -> tuple[int, ...]:
    try:
        return tuple(np.broadcast_shapes(*[tuple(s) for s in shapes]))
    except ValueError:
        raise OpTypeError("shapes " + " and ".join(str(list(s)) for s in shapes)
                          + " cannot be broadcast together") from None


def broadcast_load(t: Tensor, out_axes: Sequence[Expr]) -> Expr:
    """Read ``t`` at an output index under numpy broadcasting (size-1 dims read index 0)."""
    rank = len(t.shape)
    idx = list(out_axes[len(out_axes) - rank:]) if rank else []
    idx = [Const(0) if n == 1 else i for n, i in zip(t.shape, idx)]
    return t[tuple(idx)]


def normalize_axis(axis: int, rank: int, op: str) -> int:
    if not isinstance(axis, (int, np.integer)) or isinstance(axis, bool):
        raise OpTypeError(f"{op}: axis must be an int, got {axis!r}")
    # like numpy, a 0-d tensor accepts axis 0 and -1 (as if it had one axis of size 1)
    if not -max(rank, 1) <= axis < max(rank, 1):
        raise OpTypeError(f"{op}: axis {axis} is out of range for rank {rank}")
    return int(axis) % max(rank, 1)


def normalize_axes(axis, rank: int, op: str) -> tuple[int, ...]:
    """None -> all axes; int or sequence -> sorted, non-negative, unique. A 0-d tensor
    has no axes, so the axis 0 (or -1) that numpy accepts for it normalizes to none."""
    if axis is None:
        return tuple(range(rank))
    if isinstance(axis, (int, np.integer)):
        axis = (axis,)
    axes = tuple(sorted(normalize_axis(a, rank, op) for a in axis))
    if len(set(axes)) != len(axes):
        raise OpTypeError(f"{op}: repeated axis in {tuple(axis)}")
    return axes if rank else ()


# ----------------------------------------------------------------------------- helpers for gradient rules

def unbroadcast(em, g, like):
    """The cotangent ``g`` of a broadcast result, summed back to the shape (and dtype)
    of the operand ``like``: the reduction that every broadcasting op's vjp needs."""
    shape = tuple(like.shape)
    lead = len(g.shape) - len(shape)
    axes = tuple(range(lead)) + tuple(lead + d for d, n in enumerate(shape) if n == 1 and g.shape[lead + d] != 1)
    if axes:
        g = em("sum", g, axis=axes, keepdims=False)
    if tuple(g.shape) != shape:
        g = em("reshape", g, shape=shape)
    if g.dtype != like.dtype:
        g = em("cast", g, dtype=like.dtype)
    return g


def keep_reduced(em, g, x_shape, axes):
    """Reshape the cotangent of a reduction over ``axes`` (keepdims or not) so that it
    broadcasts against the reduced input again."""
    return em("reshape", g, shape=tuple(1 if d in axes else n for d, n in enumerate(x_shape)))
