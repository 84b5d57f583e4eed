"""What a kernel costs, read from its tensor-level description: arithmetic operations
and the bytes it must move at least (each input read once, each output written once).

The profiler divides these by measured times (GFLOP/s, GB/s) and places each kernel
on the roofline (arithmetic intensity = flops / bytes). An operation is one scalar
arithmetic node of a stage's value -- add, mul, max, exp, select, ... -- counted once
per element it is computed for; index arithmetic and casts are free, and a
reduction adds one combine per reduced element.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .expr import BinOp, Call, Cast, Const, Expr, Load, Select, Var
from .tensor import Kernel, Reduce, ScalarConstant


@dataclass(frozen=True)
class Cost:
    flops: int      # scalar arithmetic operations
    bytes: int      # compulsory memory traffic: inputs read once, outputs written once

    @property
    def intensity(self) -> float:
        """Operations per byte (the roofline's x axis)."""
        return self.flops / self.bytes if self.bytes else 0.0


def operations(e: Expr) -> int:
    """Arithmetic nodes of a scalar value expression (loads' index expressions excluded)."""
    if isinstance(e, (Const, Var, Load)):
        return 0
    if isinstance(e, Cast):
        return operations(e.value)
    if isinstance(e, BinOp):
        return 1 + operations(e.a) + operations(e.b)
    if isinstance(e, Call):
        return 1 + sum(operations(a) for a in e.args)
    if isinstance(e, Select):
        return 1 + operations(e.cond) + operations(e.a) + operations(e.b)
    return 0


def kernel_cost(kernel: Kernel) -> Cost:
    flops = 0
    for stage in kernel.stages:
        elements = math.prod(stage.shape)
        body = stage.body
        if isinstance(body, Reduce):
            flops += elements * math.prod(body.extents) * (operations(body.body) + 1)
        else:
            flops += elements * operations(body)
    moved = sum(t.type.nbytes for t in kernel.inputs if not isinstance(t, ScalarConstant))
    moved += sum(t.type.nbytes for t in kernel.outputs)
    return Cost(flops, moved)
