"""Loop level: how a kernel runs. Buffers are dense row-major arrays.

    func @matmul(A: f32[32,784], B: f32[784,128], out: f32[32,128]) {
      parallel i in [0, 32) {
        ...
      }
    }

``For`` kinds: ``serial``, ``parallel`` (libgomp threads), ``vector`` (the body
becomes LLVM vector code; the extent must be a constant), ``unroll`` (fully
unrolled by codegen; constant extent), and the GPU bindings ``blockIdx.x``...
``threadIdx.z`` (one loop iteration per block or thread).

``Accumulate`` and ``likely`` ``If`` guards exist only while a kernel is being
scheduled (``mlc.schedule``); ``Schedule.finalize`` lowers them to plain stores,
loops and partitions before code generation.
"""
from __future__ import annotations

from typing import Sequence

from .expr import Expr, Load, Var, as_expr, format_expr, walk
from .types import DType, TensorType

GPU_KINDS = tuple(f"{g}.{a}" for g in ("blockIdx", "threadIdx") for a in "xyz")
FOR_KINDS = ("serial", "parallel", "vector", "unroll") + GPU_KINDS
SCOPES = ("global", "local")


class Buffer:
    """``scope``: ``global`` (a function parameter, placed by the runtime) or ``local``
    (a small per-thread array, e.g. a register accumulator)."""

    def __init__(self, name: str, shape: Sequence[int], dtype: DType, scope: str = "global"):
        assert scope in SCOPES, scope
        self.name = name
        self.shape = tuple(int(s) for s in shape)
        self.dtype = dtype
        self.scope = scope

    @property
    def type(self) -> TensorType:
        return TensorType(self.shape, self.dtype)

    def __repr__(self) -> str:
        return f"Buffer({self.name}: {self.type}, {self.scope})"


class Stmt:
    def __str__(self) -> str:
        return "\n".join(format_stmt(self, 0))


class For(Stmt):
    def __init__(self, var: Var, extent, body: Stmt, kind: str = "serial", start=0):
        assert kind in FOR_KINDS, kind
        self.var = var
        self.start = as_expr(start)
        self.extent = as_expr(extent)   # number of iterations
        self.body = body
        self.kind = kind


class Store(Stmt):
    def __init__(self, buffer: Buffer, indices: Sequence, value: Expr):
        if len(indices) != len(buffer.shape):
            raise IndexError(f"store to {buffer.name} (rank {len(buffer.shape)}) with {len(indices)} indices")
        if value.dtype is not buffer.dtype:
            raise TypeError(f"store of {value.dtype} into {buffer.name}: {buffer.dtype}")
        self.buffer = buffer
        self.indices = [as_expr(i) for i in indices]
        self.value = value


class Accumulate(Stmt):
    """``buffer[indices] <combiner>= value`` inside a reduction's loops. ``rindex`` gives,
    for each reduced axis of the stage, its index as an expression of the loop variables
    and the axis extent, so schedules can tell where a reduction starts and ends. The
    buffer holds the combiner's identity before the first update (an init nest, or a
    register accumulator's initialization, puts it there)."""

    def __init__(self, buffer: Buffer, indices: Sequence, combiner: str, value: Expr, rindex: Sequence):
        if len(indices) != len(buffer.shape):
            raise IndexError(f"accumulate into {buffer.name} (rank {len(buffer.shape)}) with {len(indices)} indices")
        self.buffer = buffer
        self.indices = [as_expr(i) for i in indices]
        self.combiner = combiner
        self.value = value
        self.rindex = [(as_expr(e), int(n)) for e, n in rindex]


class Alloc(Stmt):
    """A local buffer live for ``body``."""

    def __init__(self, buffer: Buffer, body: Stmt):
        self.buffer = buffer
        self.body = body


class If(Stmt):
    """``likely``: a bounds guard from a split that does not divide its loop; the
    schedule's loop partitioning removes it from all but the boundary iterations."""

    def __init__(self, cond: Expr, then: Stmt, orelse: Stmt | None = None, likely: bool = False):
        self.cond = cond
        self.then = then
        self.orelse = orelse
        self.likely = likely


class Seq(Stmt):
    def __init__(self, stmts: Sequence[Stmt]):
        flat: list[Stmt] = []
        for s in stmts:
            if isinstance(s, Seq):
                flat.extend(s.stmts)
            elif s is not None:
                flat.append(s)
        self.stmts = flat


class CallExtern(Stmt):
    """A call into the runtime: ``name(descriptor, *buffers)``. Collective ops are such
    calls (``mlc_collective``, the op's JSON descriptor, source and destination)."""

    def __init__(self, name: str, descriptor: str, buffers: Sequence[Buffer | None]):
        self.name = name
        self.descriptor = descriptor
        self.buffers = list(buffers)   # None: a NULL pointer (recv has no source)


class Func:
    """A kernel as loops. ``params`` are inputs, then outputs, then ``scratch`` buffers
    (kernel temporaries that the runtime places in the workspace)."""

    def __init__(self, name: str, inputs: Sequence[Buffer], outputs: Sequence[Buffer], body: Stmt,
                 scratch: Sequence[Buffer] = ()):
        self.name = name
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        self.scratch = list(scratch)
        self.body = body
        self.aliased: set[Buffer] = set()   # params the memory plan may place over another param


    @property
    def params(self) -> list[Buffer]:
        return self.inputs + self.outputs + self.scratch

    def __str__(self) -> str:
        ps = ", ".join(f"{b.name}: {b.type}" for b in self.params)
        lines = [f"func @{self.name}({ps}) {{"]
        if self.outputs:
            lines.append("  // outputs: " + ", ".join(b.name for b in self.outputs)
                         + ("; scratch: " + ", ".join(b.name for b in self.scratch) if self.scratch else "")
                         + ("; in place: " + ", ".join(sorted(b.name for b in self.aliased)) if self.aliased else ""))
        lines += format_stmt(self.body, 1)
        lines.append("}")
        return "\n".join(lines)


def format_stmt(s: Stmt, depth: int) -> list[str]:
    pad = "  " * depth
    if isinstance(s, Seq):
        return [line for x in s.stmts for line in format_stmt(x, depth)]
    if isinstance(s, For):
        kw = "for" if s.kind == "serial" else s.kind
        lo = format_expr(s.start)
        hi = format_expr(s.start + s.extent) if lo != "0" else format_expr(s.extent)
        return [f"{pad}{kw} {s.var.name} in [{lo}, {hi}) {{", *format_stmt(s.body, depth + 1), f"{pad}}}"]
    if isinstance(s, Store):
        idx = ", ".join(format_expr(i) for i in s.indices)
        return [f"{pad}{s.buffer.name}[{idx}] = {format_expr(s.value)}"]
    if isinstance(s, Accumulate):
        idx = ", ".join(format_expr(i) for i in s.indices)
        op = {"sum": "+=", "prod": "*="}.get(s.combiner, s.combiner + "=")
        return [f"{pad}{s.buffer.name}[{idx}] {op} {format_expr(s.value)}"]
    if isinstance(s, Alloc):
        b = s.buffer
        return [f"{pad}alloc {b.name}: {b.type} {b.scope}", *format_stmt(s.body, depth)]
    if isinstance(s, CallExtern):
        args = ", ".join(b.name if b is not None else "null" for b in s.buffers)
        return [f"{pad}call {s.name}({s.descriptor}, {args})"]
    if isinstance(s, If):
        out = [f"{pad}if {'likely ' if s.likely else ''}{format_expr(s.cond)} {{", *format_stmt(s.then, depth + 1)]
        if s.orelse is not None:
            out += [f"{pad}}} else {{", *format_stmt(s.orelse, depth + 1)]
        return out + [f"{pad}}}"]
    raise TypeError(type(s).__name__)


def buffers_used(stmt: Stmt) -> set:
    """Every buffer a statement stores to or loads from."""
    used: set = set()

    def exprs(*es):
        for e in es:
            for x in walk(e):
                if isinstance(x, Load):
                    used.add(x.source)

    def visit(s):
        if isinstance(s, For):
            exprs(s.start, s.extent)
            visit(s.body)
        elif isinstance(s, (Store, Accumulate)):
            used.add(s.buffer)
            exprs(*s.indices, s.value)
        elif isinstance(s, Alloc):
            visit(s.body)
        elif isinstance(s, If):
            exprs(s.cond)
            visit(s.then)
            if s.orelse is not None:
                visit(s.orelse)
        elif isinstance(s, Seq):
            for x in s.stmts:
                visit(x)

    visit(stmt)
    return used
