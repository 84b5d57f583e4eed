"""Tensor level: what a kernel computes, not how (TE style).

A ``Kernel`` has placeholder inputs and a list of ``Compute`` stages in
dependency order; each stage defines every element of its output by a scalar
expression over its index variables, optionally a ``Reduce`` over extra axes::

    kernel @matmul(A: f32[32,784], B: f32[784,128]) -> f32[32,128] {
      out[i, j] = sum[k < 784] A[i, k] * B[k, j]
    }
"""
from __future__ import annotations

from typing import Callable, Sequence

from .expr import Const, Expr, Load, Var, binop, cast, format_expr, maximum, minimum, walk
from .types import DType, TensorType

REDUCERS = ("sum", "prod", "max", "min")


class Tensor:
    """Anything a stage can read: ``t[i, j]`` builds a Load."""

    def __init__(self, name: str, shape: Sequence[int], dtype: DType):
        self.name = name
        self.shape = tuple(int(s) for s in shape)
        self.dtype = dtype

    @property
    def type(self) -> TensorType:
        return TensorType(self.shape, self.dtype)

    def __getitem__(self, idx) -> Expr:
        if not isinstance(idx, tuple):
            idx = (idx,)
        return Load(self, idx)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name}: {self.type})"


class Placeholder(Tensor):
    """A kernel input."""


class ScalarConstant(Tensor):
    """A one-element constant folded into the code: reading it gives the literal."""

    def __init__(self, name: str, shape, dtype: DType, value):
        super().__init__(name, shape, dtype)
        self.value = value

    def __getitem__(self, idx) -> Expr:
        return Const(self.value, self.dtype)


class Reduce:
    """``combiner[r0 < n0, r1 < n1] body`` -- only ever the whole body of a stage."""

    def __init__(self, combiner: str, axes: Sequence[Var], extents: Sequence[int], body: Expr):
        assert combiner in REDUCERS, combiner
        self.combiner = combiner
        self.axes = list(axes)
        self.extents = [int(e) for e in extents]
        self.body = body
        self.dtype = body.dtype

    def __str__(self) -> str:
        rng = ", ".join(f"{v.name} < {n}" for v, n in zip(self.axes, self.extents))
        return f"{self.combiner}[{rng}] {format_expr(self.body)}"


class Compute(Tensor):
    def __init__(self, name: str, shape, axes: Sequence[Var], body: "Expr | Reduce"):
        super().__init__(name, shape, body.dtype)
        self.axes = list(axes)
        self.body = body

    @property
    def is_reduction(self) -> bool:
        return isinstance(self.body, Reduce)

    def inputs(self) -> list[Tensor]:
        """Tensors this stage reads, in first-use order."""
        body = self.body.body if isinstance(self.body, Reduce) else self.body
        seen: list[Tensor] = []
        for e in walk(body):
            if isinstance(e, Load) and e.source not in seen:
                seen.append(e.source)
        return seen

    def __str__(self) -> str:
        idx = ", ".join(v.name for v in self.axes)
        body = str(self.body) if isinstance(self.body, Reduce) else format_expr(self.body)
        return f"{self.name}[{idx}] = {body}"


_AXIS_NAMES = "ijklmnpqrstuvw"


def index_vars(rank: int, prefix: str = "") -> list[Var]:
    names = _AXIS_NAMES if rank <= len(_AXIS_NAMES) else [f"i{n}" for n in range(rank)]
    return [Var(prefix + names[d]) for d in range(rank)]


def compute(shape: Sequence[int], fn: Callable[..., "Expr | Reduce"], name: str = "T") -> Compute:
    """``compute((m, n), lambda i, j: A[i, j] + 1.0)``."""
    axes = index_vars(len(shape))
    return Compute(name, shape, axes, fn(*axes))


def reduce_axes(extents: Sequence[int]) -> list[Var]:
    return [Var(f"r{n}" if len(extents) > 1 else "k") for n in range(len(extents))]


def reduce(combiner: str, extents: Sequence[int], fn: Callable[..., Expr]) -> Reduce:
    """``reduce("sum", [k_extent], lambda k: A[i, k] * B[k, j])``."""
    axes = reduce_axes(extents)
    return Reduce(combiner, axes, extents, fn(*axes))


def combine(combiner: str, acc: Expr, x: Expr) -> Expr:
    """One step of a reduction: ``acc`` combined with ``x`` (booleans sum by "or" and
    multiply by "and")."""
    if combiner == "sum":
        return acc + x if not acc.dtype.is_bool else binop("or", acc, x)
    if combiner == "prod":
        return acc * x if not acc.dtype.is_bool else binop("and", acc, x)
    return maximum(acc, x) if combiner == "max" else minimum(acc, x)


def reduce_identity(combiner: str, dtype: DType) -> Const:
    import numpy as np
    if combiner == "sum":
        return Const(0, dtype)
    if combiner == "prod":
        return Const(1, dtype)
    if dtype.is_float:
        return Const(float("-inf") if combiner == "max" else float("inf"), dtype)
    if dtype.is_bool:
        return Const(combiner == "min", dtype)
    info = np.iinfo(dtype.np)
    return Const(info.min if combiner == "max" else info.max, dtype)


class Kernel:
    """One unit of generated code: placeholders in, ``outputs`` out, ``stages`` in order.
    Stages that are not outputs are kernel-private temporaries."""

    def __init__(self, name: str, inputs: Sequence[Tensor], stages: Sequence[Compute],
                 outputs: Sequence[Compute], kind: str = "injective"):
        self.name = name
        self.inputs = list(inputs)
        self.stages = list(stages)
        self.outputs = list(outputs)
        self.kind = kind

    @property
    def temporaries(self) -> list[Compute]:
        return [s for s in self.stages if s not in self.outputs]

    def __str__(self) -> str:
        ins = ", ".join(f"{t.name}: {t.type}" for t in self.inputs if not isinstance(t, ScalarConstant))
        outs = ", ".join(str(t.type) for t in self.outputs)
        lines = [f"kernel @{self.name}({ins}) -> {outs} {{"]
        for t in self.inputs:
            if isinstance(t, ScalarConstant):
                lines.append(f"  {t.name} = {t.value!r}: {t.type}")
        lines += [f"  {s}" for s in self.stages]
        lines.append("}")
        return "\n".join(lines)


def stages_of(outputs: Sequence[Compute]) -> list[Compute]:
    """All Compute stages reachable from ``outputs``, producers first."""
    order: list[Compute] = []
    seen: set[int] = set()

    def visit(t):
        if id(t) in seen or not isinstance(t, Compute):
            return
        seen.add(id(t))
        for src in t.inputs():
            visit(src)
        order.append(t)

    for o in outputs:
        visit(o)
    return order


__all__ = ["Tensor", "Placeholder", "ScalarConstant", "Compute", "Reduce", "Kernel", "compute", "reduce",
           "combine", "reduce_identity", "stages_of", "index_vars", "cast"]
