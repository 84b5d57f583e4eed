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

The text form parses back (``parse``, ``parse_all``) to a function that prints the
same, and ``verify`` checks a function's rules. In the text, the comment line after
the header names the outputs, scratch buffers and the params the memory plan may
place in place (the other params are inputs); an accumulation ends with the index
and extent of each reduced axis (``acc[i] += A[i, ko * 8 + ki] over [ko * 8 + ki < 64]``);
``alloc`` makes a local buffer for the statements after it in its block; a runtime
call's descriptor is JSON.
"""
from __future__ import annotations

from typing import Sequence

import json

from .expr import BinOp, Const, Expr, Load, Var, as_expr, format_expr, walk
from .text import ParseError, Parser, VerifyError
from .types import DType, TensorType

GPU_KINDS = tuple(f"{g}.{a}" for g in ("blockIdx", "threadIdx") for a in "xyz")
FOR_KINDS = ("serial", "parallel", "vector", "unroll") + GPU_KINDS
SCOPES = ("global", "local", "shared")


class Buffer:
    """``scope``: ``global`` (a function parameter, placed by the runtime), ``local``
    (a small per-thread array, e.g. a register accumulator) or ``shared`` (GPU: one array
    per thread block, which its threads exchange data through between barriers).

    On a GPU, a ``local`` allocated inside a block but outside its thread loops (a
    register tile kept across the block's phases) is one copy per thread, and a
    statement outside the thread loops runs once per block, as thread 0, unless it
    writes such a register: the NVPTX code generator and the CPU emulation
    (``passes/emulate.py``) share this convention."""

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


class Barrier(Stmt):
    """GPU: every thread of the block waits here until all have arrived, so what one wrote
    to a shared buffer before it is visible to all after it (``__syncthreads``). Only inside
    a ``blockIdx`` loop and outside ``threadIdx`` loops: it separates the block's phases."""


class WarpReduce(Stmt):
    """GPU: every thread's ``buffer[indices]`` (a per-thread register: a ``local`` buffer
    allocated in the block, outside its thread loops) becomes the ``combiner`` of that
    register over the threads of its warp (32 consecutive threads; fewer when the block
    has fewer), by butterfly shuffles (``shfl.sync.bfly``): no shared memory, no
    barrier. Like a barrier, it sits in a ``blockIdx`` loop outside ``threadIdx`` loops:
    every thread of the block takes part."""

    def __init__(self, buffer: "Buffer", indices: Sequence, combiner: str):
        self.buffer = buffer
        self.indices = [as_expr(i) for i in indices]
        self.combiner = combiner


class Mma(Stmt):
    """GPU tensor cores, one warp-wide ``mma.sync.m16n8k16`` (float16 in, float32
    accumulated): the warp's 32 threads together add the 16 x 8 product of
    ``a[a0:a0+16, a1:a1+16]`` and ``b[b0:b0+16, b1:b1+8]`` (two-dimensional float16
    buffers) to the 16 x 8 tile their registers hold, each thread four of its elements:
    ``acc[indices..., q]`` (q < 4, from the last index) is element (g + 8 * (q // 2),
    2 * c + q % 2) of the tile, for lane = g * 4 + c. So for each thread on its own::

        acc[..., q] += sum[k < 16] a[a0 + g + 8 * (q // 2), a1 + k] * b[b0 + k, b1 + 2 * c + q % 2]

    which is how the CPU emulation runs it. Inside a ``threadIdx.x`` loop of a block
    of whole warps along x only; ``a0 .. b1`` are the same for every thread of a warp."""

    def __init__(self, acc: "Buffer", indices: Sequence, a: "Buffer", a_index: Sequence, b: "Buffer",
                 b_index: Sequence):
        self.acc, self.a, self.b = acc, a, b
        self.indices = [as_expr(i) for i in indices]
        self.a_index = [as_expr(i) for i in a_index]
        self.b_index = [as_expr(i) for i in b_index]

    @property
    def buffer(self) -> "Buffer":   # what it writes, as for Store
        return self.acc


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
        over = ", ".join(f"{format_expr(e, 4)} < {n}" for e, n in s.rindex)
        return [f"{pad}{s.buffer.name}[{idx}] {op} {format_expr(s.value)}" + (f" over [{over}]" if over else "")]
    if isinstance(s, Alloc):
        b = s.buffer
        return [f"{pad}alloc {b.name}: {b.type} {b.scope}", *format_stmt(s.body, depth)]
    if isinstance(s, Barrier):
        return [f"{pad}barrier"]
    if isinstance(s, WarpReduce):
        idx = ", ".join(format_expr(i) for i in s.indices)
        return [f"{pad}warp_reduce {s.combiner} {s.buffer.name}[{idx}]"]
    if isinstance(s, Mma):
        def ref(b, idx):
            return f"{b.name}[{', '.join(format_expr(i) for i in idx)}]"
        return [f"{pad}mma_m16n8k16 {ref(s.acc, s.indices)} += {ref(s.a, s.a_index)} * {ref(s.b, s.b_index)}"]
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
        elif isinstance(s, WarpReduce):
            used.add(s.buffer)
            exprs(*s.indices)
        elif isinstance(s, Mma):
            used.update((s.acc, s.a, s.b))
            exprs(*s.indices, *s.a_index, *s.b_index)
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


# ----------------------------------------------------------------------------- verifier

REDUCERS = ("sum", "prod", "max", "min")   # Accumulate's combiners (tensor.REDUCERS)


def verify(func: Func, target=None) -> None:
    """Check a function's rules in one walk: params have distinct names; every loop
    variable is used inside its loop only, and every buffer read or written is a
    param or an enclosing alloc, indexed once per dimension; stores and accumulations
    have the buffer's dtype, accumulations a known combiner; constant extents are
    >= 0, vector and unroll loops have one; GPU loop kinds appear only for a CUDA
    ``target`` (a ``mlc.Target``; None allows every kind), as do shared buffers and
    barriers, which never sit inside a threadIdx loop; every non-empty output is written.
    Raises VerifyError."""
    def fail(msg):
        raise VerifyError(f"func @{func.name}: {msg}")

    gpu = target is None or getattr(target, "kind", None) == "cuda"
    names: set[str] = set()
    for b in func.params:
        if b.name in names:
            fail(f"param name {b.name} is repeated")
        names.add(b.name)
    buffers = {id(b) for b in func.params}
    variables: set[int] = set()
    written: set[int] = set()
    thread_loops: list = []   # the threadIdx loops around the statement being checked

    def exprs(what, *es):
        for e in es:
            for x in walk(e):
                if isinstance(x, Var) and id(x) not in variables:
                    fail(f"{what} uses {x.name} outside the loops that define it")
                if isinstance(x, Load):
                    if id(x.source) not in buffers:
                        fail(f"{what} loads from {x.source.name}, which is not a param or an enclosing alloc")
                    if len(x.indices) != len(x.source.shape):
                        fail(f"{what} loads {x.source.name} (rank {len(x.source.shape)}) with {len(x.indices)} indices")

    def target_of(s, what):
        b = s.buffer
        if id(b) not in buffers:
            fail(f"{what} writes {b.name}, which is not a param or an enclosing alloc")
        if len(s.indices) != len(b.shape):
            fail(f"{what} writes {b.name} (rank {len(b.shape)}) with {len(s.indices)} indices")
        if s.value.dtype is not b.dtype:
            fail(f"{what} writes a {s.value.dtype} value into {b.name}: {b.dtype}")
        written.add(id(b))

    def visit(s):
        if isinstance(s, Seq):
            for x in s.stmts:
                visit(x)
        elif isinstance(s, For):
            what = f"loop {s.var.name}"
            if s.kind not in FOR_KINDS:
                fail(f"{what} has unknown kind {s.kind!r}")
            if s.kind in GPU_KINDS and not gpu:
                fail(f"{what} is bound to {s.kind}, but target {target.name} is not a GPU")
            exprs(what, s.start, s.extent)
            # 0 is legal: an empty tensor (a slice past the end, a sum over no elements) runs no iterations
            if isinstance(s.extent, Const) and s.extent.value < 0:
                fail(f"{what} has extent {s.extent.value}: extents must be >= 0")
            if s.kind in ("vector", "unroll") and not isinstance(s.extent, Const):
                fail(f"{s.kind} {what} needs a constant extent, has {format_expr(s.extent)}")
            if id(s.var) in variables:
                fail(f"{what} is nested in a loop over the same variable")
            variables.add(id(s.var))
            threads = s.kind.startswith("threadIdx")
            if threads:
                thread_loops.append(s)
            visit(s.body)
            if threads:
                thread_loops.pop()
            variables.discard(id(s.var))
        elif isinstance(s, Store):
            exprs(f"store to {s.buffer.name}", *s.indices, s.value)
            target_of(s, f"store to {s.buffer.name}")
        elif isinstance(s, Accumulate):
            what = f"accumulation into {s.buffer.name}"
            if s.combiner not in REDUCERS:
                fail(f"{what} combines with {s.combiner!r}, not one of {', '.join(REDUCERS)}")
            exprs(what, *s.indices, s.value, *(e for e, _ in s.rindex))
            target_of(s, what)
        elif isinstance(s, Alloc):
            if s.buffer.scope == "shared" and not gpu:
                fail(f"shared buffer {s.buffer.name}, but target {target.name} is not a GPU")
            buffers.add(id(s.buffer))
            visit(s.body)
            buffers.discard(id(s.buffer))
        elif isinstance(s, If):
            exprs("a condition", s.cond)
            if not s.cond.dtype.is_bool:
                fail(f"condition {format_expr(s.cond)} is {s.cond.dtype}, not bool")
            visit(s.then)
            if s.orelse is not None:
                visit(s.orelse)
        elif isinstance(s, Barrier):
            if not gpu:
                fail(f"a barrier, but target {target.name} is not a GPU")
            if thread_loops:
                fail("a barrier inside a threadIdx loop (threads of a block would wait for each other's "
                     "later iterations): put it between the block's thread loops")
        elif isinstance(s, WarpReduce):
            what = f"warp_reduce of {s.buffer.name}"
            if not gpu:
                fail(f"a {what}, but target {target.name} is not a GPU")
            if thread_loops:
                fail(f"a {what} inside a threadIdx loop: every thread of the block takes part, so it sits between "
                     "the block's thread loops")
            if s.combiner not in REDUCERS:
                fail(f"{what} combines with {s.combiner!r}, not one of {', '.join(REDUCERS)}")
            if s.buffer.scope != "local" or s.buffer.dtype.is_bool:
                fail(f"{what}: it reduces a per-thread register (a local buffer of numbers), {s.buffer.name} is "
                     f"{s.buffer.scope} {s.buffer.dtype}")
            exprs(what, *s.indices)
            if id(s.buffer) not in buffers:
                fail(f"{what}: {s.buffer.name} is not an enclosing alloc")
            if len(s.indices) != len(s.buffer.shape):
                fail(f"{what}: {s.buffer.name} (rank {len(s.buffer.shape)}) indexed with {len(s.indices)} indices")
        elif isinstance(s, Mma):
            what = f"mma_m16n8k16 into {s.acc.name}"
            if not gpu:
                fail(f"{what}, but target {target.name} is not a GPU")
            if not thread_loops or any(f.kind != "threadIdx.x" for f in thread_loops):
                fail(f"{what}: a warp-wide instruction, it runs inside threadIdx.x loops only (one warp = 32 "
                     "consecutive threads along x)")
            for b, idx, dt in ((s.acc, s.indices, "f32"), (s.a, s.a_index, "f16"), (s.b, s.b_index, "f16")):
                if id(b) not in buffers:
                    fail(f"{what}: {b.name} is not a param or an enclosing alloc")
                if b.dtype.short != dt:
                    fail(f"{what}: {b.name} is {b.dtype}, the instruction takes {dt}")
                if len(idx) != len(b.shape):
                    fail(f"{what}: {b.name} (rank {len(b.shape)}) indexed with {len(idx)} indices")
            if s.acc.scope != "local" or len(s.a.shape) != 2 or len(s.b.shape) != 2:
                fail(f"{what}: the accumulator is a per-thread register, the operands two-dimensional")
            exprs(what, *s.indices, *s.a_index, *s.b_index)
            written.add(id(s.acc))
        elif isinstance(s, CallExtern):
            for b in s.buffers:
                if b is not None and id(b) not in buffers:
                    fail(f"call {s.name} passes {b.name}, which is not a param or an enclosing alloc")
                if b is not None:
                    written.add(id(b))   # the runtime writes the destination
        else:
            fail(f"unknown statement {type(s).__name__}")

    visit(func.body)
    for b in func.outputs:
        if id(b) not in written and b.type.size:   # an empty output has nothing to write
            fail(f"output {b.name} is never written")


# ----------------------------------------------------------------------------- parser

_COMBINERS = {"+=": "sum", "*=": "prod"}


class _Parser(Parser):
    def __init__(self, text: str):
        super().__init__(text, comments=True)

    def funcs(self) -> list[Func]:
        out = [self.func()]
        while self.peek()[0] != "eof":
            out.append(self.func())
        return out

    def func(self) -> Func:
        self.expect("func")
        name = self.expect(kind="gname")[1:]
        params: dict[str, Buffer] = {}
        self.expect("(")
        while not self.accept(")"):
            b = self.buffer("global")
            if b.name in params:
                self.error(f"param {b.name} is declared twice")
            params[b.name] = b
            if self.peek()[1] != ")":
                self.expect(",")
        self.expect("{")
        roles: dict[str, list[Buffer]] = {"outputs": [], "scratch": [], "in place": []}
        if self.peek()[0] == "comment":
            _, text, line = self.next()
            for part in text.split(";"):
                key, _, listed = part.partition(":")
                if key.strip() not in roles:
                    self.error(f"unknown comment entry {key.strip()!r} (expected outputs, scratch or in place)", line)
                for n in filter(None, (x.strip() for x in listed.split(","))):
                    if n not in params:
                        self.error(f"{key.strip()} names {n}, which is not a param", line)
                    roles[key.strip()].append(params[n])
        special = {id(b) for b in roles["outputs"] + roles["scratch"]}
        body = self.block({}, dict(params))
        f = Func(name, [b for b in params.values() if id(b) not in special], roles["outputs"], body, roles["scratch"])
        if f.params != list(params.values()):
            self.error(f"func @{name}: params must be inputs, then outputs, then scratch")
        f.aliased = set(roles["in place"])
        return f

    def buffer(self, scope: str | None = None) -> Buffer:
        """``name: type``, then the scope unless given."""
        name = self.name("a buffer name")
        self.expect(":")
        t = self.type()
        if scope is None:
            line = self.peek()[2]
            scope = self.name("a buffer scope")
            if scope not in SCOPES:
                self.error(f"unknown buffer scope {scope!r} (expected {' or '.join(SCOPES)})", line)
        return Buffer(name, t.shape, t.dtype, scope)

    def block(self, variables: dict, buffers: dict) -> Stmt:
        """Statements up to the closing brace (consumed); an alloc holds the rest of them."""
        stmts: list[Stmt] = []
        while not self.accept("}"):
            k, v, line = self.peek()
            if k == "eof":
                self.error("expected '}', found end of input")
            if v == "alloc" and self.peek(1)[0] == "ident" and self.peek(2)[1] == ":":
                self.next()
                b = self.buffer()
                if b.name in buffers:
                    self.error(f"buffer {b.name} is already defined here", line)
                stmts.append(Alloc(b, self.block(variables, {**buffers, b.name: b})))
                break
            stmts.append(self.stmt(variables, buffers))
        return stmts[0] if len(stmts) == 1 else Seq(stmts)

    def stmt(self, variables: dict, buffers: dict) -> Stmt:
        k, v, line = self.next()
        if k != "ident":
            self.error(f"expected a statement, found {v or 'end of input'!r}", line)
        if v == "if":
            likely = self.accept("likely")
            cond = self.expr(variables, buffers)
            self.expect("{")
            then = self.block(variables, buffers)
            orelse = None
            if self.accept("else"):
                self.expect("{")
                orelse = self.block(variables, buffers)
            return If(cond, then, orelse, likely)
        if v == "call":
            return self.call_extern(buffers, line)
        if v == "barrier":
            return Barrier()
        if v == "mma_m16n8k16":
            refs = []
            for what in ("accumulator", "a", "b"):
                name = self.name(f"the {what} buffer")
                if name not in buffers:
                    self.error(f"mma_m16n8k16 uses {name}, which is not a param or an enclosing alloc", line)
                refs += [buffers[name], self.indices(variables, buffers)]
                if what != "b":
                    self.expect("+=" if what == "accumulator" else "*")
            return Mma(*refs)
        if v == "warp_reduce":
            combiner = self.name("a combiner")
            if combiner not in REDUCERS:
                self.error(f"warp_reduce combines with sum, prod, max or min, not {combiner!r}", line)
            name = self.name("a buffer name")
            if name not in buffers:
                self.error(f"warp_reduce of {name}, which is not an enclosing alloc", line)
            return WarpReduce(buffers[name], self.indices(variables, buffers), combiner)
        if (v == "for" or v in FOR_KINDS) and self.peek()[0] == "ident" and self.peek(1)[1] == "in":
            return self.loop("serial" if v == "for" else v, variables, buffers, line)
        if v not in buffers:
            self.error(f"store to {v}, which is not a param or an enclosing alloc", line)
        b = buffers[v]
        indices = self.indices(variables, buffers)
        if len(indices) != len(b.shape):
            self.error(f"{v} has rank {len(b.shape)}, indexed with {len(indices)} indices", line)
        k, op, _ = self.next()
        if op == "=":
            value = self.expr(variables, buffers)
            if value.dtype is not b.dtype:
                self.error(f"store of {value.dtype} into {v}: {b.dtype}", line)
            return Store(b, indices, value)
        if op in _COMBINERS or (k == "ident" and self.accept("=")):
            value = self.expr(variables, buffers)
            rindex = []
            if self.accept("over"):
                self.expect("[")
                while not self.accept("]"):
                    e = self.expr(variables, buffers, min_prec=4)
                    self.expect("<")
                    rindex.append((e, self.integer("reduce extent")))
                    if self.peek()[1] != "]":
                        self.expect(",")
            return Accumulate(b, indices, _COMBINERS.get(op, op), value, rindex)
        self.error(f"expected '=', '+=', '*=', 'max=' or 'min=' after {v}[...], found {op or 'end of input'!r}", line)

    def indices(self, variables: dict, buffers: dict) -> list:
        """``[e, e, ...]``: a buffer's index expressions."""
        self.expect("[")
        out = []
        while not self.accept("]"):
            out.append(self.expr(variables, buffers))
            if self.peek()[1] != "]":
                self.expect(",")
        return out

    def loop(self, kind: str, variables: dict, buffers: dict, line: int) -> For:
        var = Var(self.name("a loop variable"))
        self.expect("in")
        self.expect("[")
        lo = self.expr(variables, buffers)
        self.expect(",")
        hi = self.expr(variables, buffers)
        self.expect(")")
        self.expect("{")
        body = self.block({**variables, var.name: var}, buffers)
        # the text shows [start, start + extent): take the extent back out of the end
        if isinstance(lo, Const) and lo.value == 0:
            extent = hi
        elif isinstance(lo, Const) and isinstance(hi, Const):
            extent = Const(hi.value - lo.value)
        elif format_expr(hi) == format_expr(lo):
            extent = Const(0)
        elif isinstance(hi, BinOp) and hi.op == "add" and format_expr(hi.a) == format_expr(lo):
            extent = hi.b
        else:
            self.error(f"loop {var.name}: cannot tell its extent from [{format_expr(lo)}, {format_expr(hi)})", line)
        return For(var, extent, body, kind, lo)

    def call_extern(self, buffers: dict, line: int) -> CallExtern:
        name = self.name("a function name")
        self.expect("(")
        start = self.offsets[self.i]
        try:
            _, end = json.JSONDecoder().raw_decode(self.text, start)
        except ValueError as e:
            raise ParseError(f"line {line}: the descriptor of call {name} is not JSON: {e}") from None
        while self.offsets[self.i] < end:
            self.next()
        args = []
        while self.accept(","):
            k, v, aline = self.next()
            if v != "null" and v not in buffers:
                raise ParseError(f"line {aline}: call {name} passes {v or 'end of input'!r}, which is not a buffer")
            args.append(None if v == "null" else buffers[v])
        self.expect(")")
        return CallExtern(name, self.text[start:end], args)


def parse(text: str) -> Func:
    """The function printed as ``text`` (``str(func)``); ParseError (with the line) if malformed."""
    p = _Parser(text)
    func = p.func()
    p.expect(kind="eof")
    return func


def parse_all(text: str) -> list[Func]:
    """Every function of a text holding several, as ``Compiled.text("loop")`` prints them."""
    return _Parser(text).funcs()
