"""Memory plan: where every kernel argument lives at run time.

Graph inputs, outputs and constant parameters are caller-provided pointers;
intermediate values and kernel scratch buffers get byte offsets in one workspace
arena (64-byte aligned). Buffers whose lifetimes do not overlap share space:
a value is live from the call that writes it to the last call that reads it.
A kernel output is written in place over an input that dies at that call when
the kernel reads that input only element for element at the index it writes.

Outputs may also be *aliased* to graph inputs (``place_aliases``): the runtime
passes the input's buffer as the output's, so a training step updates parameters
and optimizer state where they are. The kernel writing such an output is moved
after every other reader of the input; when that is impossible (a cycle) or the
writer reads the input at other indices, the output is computed into the
workspace and copied over the input by a final kernel.
"""
from __future__ import annotations

from dataclasses import dataclass

from .. import ops
from ..ir import expr as E
from ..ir.graph import Node, Value
from ..ir.loop import Accumulate, Alloc, For, Func, If, Seq, Store
from ..ir.stmt import walk_stmts
from ..ir.plan import ALIGN, ControlCall, EntryCall, Frame, Slot
from ..ir.tensor import Kernel, Placeholder, Reduce
from ..ops.registry import MAX_NBYTES
from .lower import KernelCall, LoweredGraph, lower_group



def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def _nbytes(t, what: str) -> int:
    """A buffer's size, refused when the generated code's int64 offsets cannot address it."""
    n = t.nbytes
    if n > MAX_NBYTES:
        raise ValueError(f"{what} of type {t} needs {n} bytes, more than fits in memory (at most 2**63-1 bytes)")
    return n


@dataclass
class MemoryPlan:
    calls: list[EntryCall]
    workspace_bytes: int
    naive_bytes: int           # the sum of all intermediate sizes, without reuse
    in_place: int = 0          # outputs placed over a dying input
    views: int = 0             # reshapes that became the same bytes, with no kernel run

    def __str__(self) -> str:
        lines = [f"memory plan: workspace {self.workspace_bytes} bytes, naive {self.naive_bytes} bytes, "
                 f"{self.in_place} in place"]
        _format_calls(self.calls, lines, "  ")
        return "\n".join(lines)


def _slot(a: Slot) -> str:
    return f"ws+{a.index}" if a.space == "workspace" else f"{a.space}[{a.index}]"


def _format_calls(calls: list, lines: list[str], indent: str) -> None:
    for c in calls:
        if isinstance(c, ControlCall):
            attrs = ", ".join(f"{k}={v}" for k, v in c.attrs.items())
            lines.append(f"{indent}{c.op} @{c.name}(" + ", ".join(map(_slot, c.args)) + ") -> ("
                         + ", ".join(map(_slot, c.results)) + f") {{{attrs}; carries at "
                         + ", ".join(f"ws+{o}" for o in c.carries) + f"; bodies at ws+{c.frames_workspace}}}")
            for f in c.frames:
                lines.append(f"{indent}  frame @{f.name}: {f.num_inputs} inputs, {f.num_outputs} outputs, "
                             f"params from {f.param_base}, workspace {f.workspace_bytes} bytes")
                _format_calls(f.calls, lines, indent + "    ")
        else:
            lines.append(f"{indent}{c.func.name}(" + ", ".join(f"{b.name}={_slot(a)}"
                                                              for b, a in zip(c.func.params, c.args)) + ")")


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
    at the very index it writes, and the two have the same size. A collective that
    keeps the type works in place if its op says so (``OpDef.in_place``)."""
    if kernel.kind == "control":   # its bodies write results while reading operands
        return []
    if kernel.kind == "collective":
        same = kernel.in_type is not None and kernel.in_type == kernel.out_type
        return [(0, 0)] if same and ops.get(kernel.op).in_place else []
    bound = [t for t in kernel.inputs if isinstance(t, Placeholder)]
    pairs = []
    stage_inputs = None   # each stage's inputs, walked once: a training step's update kernels have many
    for o_idx, out in enumerate(kernel.outputs):
        if isinstance(out.body, Reduce):
            continue
        for i_idx, p in enumerate(bound):
            if p.type.nbytes != out.type.nbytes or p.shape != out.shape:
                continue
            if stage_inputs is None:
                stage_inputs = [(s, s.inputs()) for s in kernel.stages]
            readers = [s for s, ins in stage_inputs if p in ins]
            if readers != [out]:
                continue
            loads = [x for x in E.walk(out.body) if isinstance(x, E.Load) and x.source is p]
            if all(len(x.indices) == len(out.axes) and all(a is b for a, b in zip(x.indices, out.axes))
                   for x in loads):
                pairs.append((i_idx, o_idx))
    return pairs


def place_aliases(lowered: LoweredGraph, aliases: dict[int, int]) -> None:
    """Order ``lowered.calls`` so that each output aliased to a graph input (output
    position -> input position) is written after the input's last other reader.
    Outputs that cannot be placed so get a final copy kernel; an output that is its
    own aliased input needs no kernel at all."""
    graph = lowered.graph
    calls = lowered.calls
    producer = {v: c for c in calls for v in c.outputs}
    after: dict[int, set[int]] = {id(c): set() for c in calls}   # call -> calls that must run before it
    for c in calls:
        after[id(c)].update(id(producer[v]) for v in c.inputs if v in producer)

    def reaches(src: KernelCall, dst: KernelCall) -> bool:   # dst must run after src (transitively)?
        stack, seen = [id(dst)], set()
        while stack:
            x = stack.pop()
            if x == id(src):
                return True
            if x not in seen:
                seen.add(x)
                stack.extend(after[x])
        return False

    late_copies, dropped = [], set()
    for k, j in sorted(aliases.items()):
        inp, out = graph.inputs[j], lowered.outputs[k]
        writer = producer[out]
        if writer.outputs == [out] and out.producer.op == "copy" and out.producer.inputs == [inp]:
            dropped.add(id(writer))   # the output is a copy of the input itself: already in place
            continue
        readers = [c for c in calls if c is not writer and inp in c.inputs]
        # a kernel with a reduction may keep partial results in its output (a matrix product
        # blocked along its reduction, a weight's update in the last block's epilogue): over
        # the input it still has to read, only where it reads no reduction at all
        reads_in_place = inp not in writer.inputs or (writer.kernel.kind == "injective" and any(
            writer.inputs[i] is inp and writer.outputs[o] is out for i, o in in_place_pairs(writer.kernel)))
        if reads_in_place and not any(reaches(writer, r) for r in readers):
            after[id(writer)].update(id(r) for r in readers)
            continue
        copy = Node("copy", [out], {}, [out.type])
        kernel, bound = lower_group([copy], f"copy_{len(calls) + len(late_copies)}", {}, [copy.output])
        late_copies.append(KernelCall(kernel, bound, [copy.output]))
        lowered.outputs[k] = copy.output

    # a stable topological order: the original order wherever the new constraints allow
    order, done, pending = [], set(), [c for c in calls if id(c) not in dropped]
    while pending:
        for n, c in enumerate(pending):
            if after[id(c)] - dropped <= done:
                order.append(pending.pop(n))
                done.add(id(c))
                break
        else:
            raise RuntimeError("internal error: aliased outputs left a cycle in the kernel order")
    lowered.calls = order + late_copies


def writes_after_reading(func: Func, out, inp) -> bool:
    """Whether the scheduled ``func`` may write ``out`` over ``inp``: it never reads ``out``
    back, and every store to ``out`` reads ``inp`` (the epilogue that consumes the input
    element it overwrites). A schedule that keeps partial sums in its output (a matrix
    product blocked along its reduction, the residual added in the last block) does not:
    its partials would overwrite the input before the epilogue reads it."""
    for st, _ in walk_stmts(func.body):
        if isinstance(st, For):
            exprs = [st.start, st.extent]
        elif isinstance(st, (Store, Accumulate)):
            if st.buffer is out and (isinstance(st, Accumulate) or not any(
                    isinstance(x, E.Load) and x.source is inp for x in E.walk(st.value))):
                return False
            exprs = list(st.indices) + [st.value]
        elif isinstance(st, If):
            exprs = [st.cond]
        elif isinstance(st, (Seq, Alloc)):
            continue
        else:   # warp-wide and extern statements: not judged, not shared
            return False
        if any(isinstance(x, E.Load) and x.source is out for e in exprs for x in E.walk(e)):
            return False
    return True


def _release(arena: _Arena, scratch, call: KernelCall, t: int, where: dict, last_use: dict) -> None:
    """After call ``t``: its scratch, the inputs it read last and the results nothing reads."""
    for off, size in scratch:
        arena.release(off, size)
    for v in dict.fromkeys(call.inputs):   # a value read twice by one call is freed once
        if last_use.get(v) == t and v in where:
            arena.release(where[v], v.type.nbytes)
    for v in call.outputs:   # written but never read
        if v in where and v not in last_use:
            arena.release(where[v], v.type.nbytes)


def _control_call(kernel, args: list[Slot], outs: list[Slot], frames: list[Frame], arena: _Arena):
    """The ControlCall of a control-flow op, and the workspace blocks (offset, size) it
    holds while it runs: two buffers per carry, while_loop's flag, its bodies' workspace."""
    scratch = []

    def block(size: int) -> int:
        off = arena.alloc(size)
        scratch.append((off, size))
        return off
    k = kernel.attrs.get("num_carry", 0)
    carries = [block(_nbytes(t, f"a carry of {kernel.op}")) for t in kernel.in_types[:k] for _ in range(2)]
    flag = block(1) if kernel.op == "while_loop" else 0
    bodies = block(max(f.workspace_bytes for f in frames))
    attrs = {a: kernel.attrs[a] for a in ("num_carry", "num_xs", "length", "reverse") if a in kernel.attrs}
    call = ControlCall(kernel.name, kernel.op, attrs, args, outs, list(kernel.in_types), list(kernel.out_types),
                       frames, carries, flag, bodies)
    return call, scratch


def plan_memory(lowered: LoweredGraph, funcs: list[Func | None], aliases: dict[int, int] | None = None,
                frames: dict[str, list[Frame]] | None = None) -> MemoryPlan:
    """``funcs``: each call's scheduled function (None for a control-flow op, whose bodies'
    plans are ``frames[kernel name]``). ``aliases`` (output position -> input position)
    must have been placed by ``place_aliases``: the runtime passes one buffer for both."""
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

    # an aliased output and its input share a buffer: a kernel reading one and writing the
    # other (only at the same index, as place_aliases ensured) must not assume noalias
    shared = {lowered.outputs[k]: graph.inputs[j] for k, j in (aliases or {}).items()}

    updated = {graph.inputs[j] for j in (aliases or {}).values()}   # written in place: no views of them
    arena = _Arena()
    where: dict[Value, int] = {}
    naive = 0
    in_place = 0
    views = 0
    calls = []
    for t, (call, func) in enumerate(zip(lowered.calls, funcs)):
        src, dst = call.inputs[0] if call.inputs else None, call.outputs[0]
        if call.view and dst not in fixed and dst in last_use and src not in updated and (
                src in fixed or last_use.get(src) == t):
            # a reshape: its output is its input's bytes, with no kernel run
            if src in fixed:
                fixed[dst] = fixed[src]
            else:
                where[dst] = where.pop(src)
            views += 1
            continue
        args = [fixed.get(v) or Slot("workspace", where[v]) for v in call.inputs]
        if func is None:   # a control-flow op: its results, its carries and its bodies' workspace
            outs = []
            for v in call.outputs:
                if v not in fixed:
                    size = _nbytes(v.type, f"the result of {call.kernel.op}")
                    naive += _align(size)
                    where[v] = arena.alloc(size)
                outs.append(fixed.get(v) or Slot("workspace", where[v]))
            control, scratch = _control_call(call.kernel, args, outs, frames[call.kernel.name], arena)
            naive += sum(_align(size) for _, size in scratch)
            calls.append(control)
            _release(arena, scratch, call, t, where, last_use)
            continue
        reuse = {}   # output position -> input position it overwrites
        for i_idx, o_idx in in_place_pairs(call.kernel):
            v = call.inputs[i_idx]
            if (o_idx not in reuse and i_idx not in reuse.values() and v in where and last_use.get(v) == t
                    and call.inputs.count(v) == 1 and call.outputs[o_idx] not in fixed
                    and writes_after_reading(func, func.outputs[o_idx], func.inputs[i_idx])):
                reuse[o_idx] = i_idx
        outs = []
        for o_idx, v in enumerate(call.outputs):
            if v in shared and shared[v] in call.inputs:
                func.aliased.update({func.inputs[call.inputs.index(shared[v])], func.outputs[o_idx]})
            if v in fixed:
                outs.append(fixed[v])
                continue
            size = _nbytes(v.type, f"the result of {v.producer.op if v.producer else 'a kernel'}")
            naive += _align(size)
            if o_idx in reuse:
                src = call.inputs[reuse[o_idx]]
                where[v] = where.pop(src)   # the input's block now belongs to the output
                func.aliased.update({func.inputs[reuse[o_idx]], func.outputs[o_idx]})
                in_place += 1
            else:
                where[v] = arena.alloc(size)
            outs.append(Slot("workspace", where[v]))
        scratch = []
        for b in func.scratch:
            size = _nbytes(b.type, f"a scratch buffer of kernel {func.name}")
            off = arena.alloc(size)
            naive += _align(size)
            scratch.append((off, size))
        calls.append(EntryCall(func, args + outs + [Slot("workspace", off) for off, _ in scratch]))
        _release(arena, scratch, call, t, where, last_use)
    if arena.top > MAX_NBYTES:
        raise ValueError(f"the workspace would need {arena.top} bytes for the intermediate values of "
                         f"{graph.name}, more than fits in memory (at most 2**63-1 bytes)")
    return MemoryPlan(calls, arena.top, naive, in_place, views)
