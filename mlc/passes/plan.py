"""Memory plan: where every kernel argument lives at run time.

Graph inputs, outputs and constant parameters are caller-provided pointers;
intermediate values and kernel scratch buffers get byte offsets in one workspace
arena (64-byte aligned). Buffers whose lifetimes do not overlap share space:
a value is live from the call that writes it to the last call that reads it.
A kernel output is written in place over an input that dies at that call when
the kernel reads that input only element for element at the index it writes.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..codegen.llvm import EntryCall, Slot
from ..ir import expr as E
from ..ir.graph import Value
from ..ir.loop import Func
from ..ir.tensor import Kernel, Placeholder, Reduce
from .lower import LoweredGraph

ALIGN = 64


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


@dataclass
class MemoryPlan:
    calls: list[EntryCall]
    workspace_bytes: int
    naive_bytes: int           # the sum of all intermediate sizes, without reuse
    in_place: int = 0          # outputs placed over a dying input

    def __str__(self) -> str:
        def slot(a):
            return f"ws+{a.index}" if a.space == "workspace" else f"{a.space}[{a.index}]"
        lines = [f"memory plan: workspace {self.workspace_bytes} bytes, naive {self.naive_bytes} bytes, "
                 f"{self.in_place} in place"]
        for c in self.calls:
            lines.append(f"  {c.func.name}(" + ", ".join(f"{b.name}={slot(a)}" for b, a in zip(c.func.params, c.args))
                         + ")")
        return "\n".join(lines)


class _Arena:
    """First-fit allocator over a growing arena of aligned blocks."""

    def __init__(self):
        self.free: list[tuple[int, int]] = []   # (offset, size), sorted by offset
        self.top = 0

    def alloc(self, size: int) -> int:
        size = _align(max(size, 1))
        for n, (off, sz) in enumerate(self.free):
            if sz >= size:
                if sz == size:
                    self.free.pop(n)
                else:
                    self.free[n] = (off + size, sz - size)
                return off
        off, self.top = self.top, self.top + size
        return off

    def release(self, off: int, size: int) -> None:
        size = _align(max(size, 1))
        self.free.append((off, size))
        self.free.sort()
        merged: list[tuple[int, int]] = []
        for o, s in self.free:
            if merged and merged[-1][0] + merged[-1][1] == o:
                merged[-1] = (merged[-1][0], merged[-1][1] + s)
            else:
                merged.append((o, s))
        self.free = merged


def in_place_pairs(kernel: Kernel) -> list[tuple[int, int]]:
    """(placeholder position among the bound inputs, output position) pairs where the
    output may overwrite the input: only that output's stage reads the input, only
    at the very index it writes, and the two have the same size."""
    bound = [t for t in kernel.inputs if isinstance(t, Placeholder)]
    pairs = []
    for o_idx, out in enumerate(kernel.outputs):
        if isinstance(out.body, Reduce):
            continue
        for i_idx, p in enumerate(bound):
            if p.type.nbytes != out.type.nbytes or p.shape != out.shape:
                continue
            readers = [s for s in kernel.stages if p in s.inputs()]
            if readers != [out]:
                continue
            loads = [x for x in E.walk(out.body) if isinstance(x, E.Load) and x.source is p]
            if all(len(x.indices) == len(out.axes) and all(a is b for a, b in zip(x.indices, out.axes))
                   for x in loads):
                pairs.append((i_idx, o_idx))
    return pairs


def plan_memory(lowered: LoweredGraph, funcs: list[Func]) -> MemoryPlan:
    graph = lowered.graph
    fixed: dict[Value, Slot] = {}
    for n, v in enumerate(graph.inputs):
        fixed[v] = Slot("input", n)
    for n, v in enumerate(lowered.params):
        fixed[v] = Slot("param", n)
    for n, v in enumerate(lowered.outputs):
        fixed[v] = Slot("output", n)

    last_use: dict[Value, int] = {}
    for t, call in enumerate(lowered.calls):
        for v in call.inputs:
            last_use[v] = t

    arena = _Arena()
    where: dict[Value, int] = {}
    naive = 0
    in_place = 0
    calls = []
    for t, (call, func) in enumerate(zip(lowered.calls, funcs)):
        args = [fixed.get(v) or Slot("workspace", where[v]) for v in call.inputs]
        reuse = {}   # output position -> input position it overwrites
        for i_idx, o_idx in in_place_pairs(call.kernel):
            v = call.inputs[i_idx]
            if (o_idx not in reuse and i_idx not in reuse.values() and v in where and last_use.get(v) == t
                    and call.inputs.count(v) == 1 and call.outputs[o_idx] not in fixed):
                reuse[o_idx] = i_idx
        outs = []
        for o_idx, v in enumerate(call.outputs):
            if v in fixed:
                outs.append(fixed[v])
                continue
            naive += _align(v.type.nbytes)
            if o_idx in reuse:
                src = call.inputs[reuse[o_idx]]
                where[v] = where.pop(src)   # the input's block now belongs to the output
                func.aliased.update({func.inputs[reuse[o_idx]], func.outputs[o_idx]})
                in_place += 1
            else:
                where[v] = arena.alloc(v.type.nbytes)
            outs.append(Slot("workspace", where[v]))
        scratch = []
        for b in func.scratch:
            off = arena.alloc(b.type.nbytes)
            naive += _align(b.type.nbytes)
            scratch.append((off, b.type.nbytes))
        calls.append(EntryCall(func, args + outs + [Slot("workspace", off) for off, _ in scratch]))
        for off, size in scratch:
            arena.release(off, size)
        for v in dict.fromkeys(call.inputs):   # a value read twice by one call is freed once
            if last_use.get(v) == t and v in where:
                arena.release(where[v], v.type.nbytes)
        for v in call.outputs:   # written but never read
            if v in where and v not in last_use:
                arena.release(where[v], v.type.nbytes)
    return MemoryPlan(calls, arena.top, naive, in_place)
