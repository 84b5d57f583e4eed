"""Loop IR -> LLVM IR (llvmlite) -> optimized machine code for the CPU.

A compiled graph is every kernel function plus ``mlc_entry``, which runs the whole
plan over one workspace::

    void mlc_entry(void **inputs, void **outputs, void **params, char *workspace)

``source`` writes them as one LLVM module (the text shown by ``mlc compile --emit llvm``);
``build_split`` (what a compile for this machine runs) gives each distinct kernel a module
of its own, compiled in worker processes and cached on disk kernel by kernel, and links
their objects with the entry's (``ld -r``).

``vector`` loops are emitted as LLVM vector code (contiguous accesses become
vector loads/stores, others gather/scatter lane by lane); ``unroll`` loops are
unrolled here; ``parallel`` loops are outlined and run with libgomp's
``GOMP_parallel`` (static chunks), or serially with one warning when libgomp
cannot be loaded.

``bounds_check=True`` (``MLC_BOUNDS_CHECK=1`` in the driver) guards every load and
store with a check that its element offset, all lanes of a vector access included,
lies inside its buffer; a failing access is skipped (a load reads 0) and the first
one is recorded in the module's ``mlc_bounds_status``, which the runtime turns into
``BoundsError`` after the call.
"""
from __future__ import annotations

import atexit
import collections
import contextlib
import ctypes.util
import gc
import logging
import os
import pickle
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import warnings

import llvmlite
import llvmlite.binding as llvm
import llvmlite.ir as ir

from ..ir.expr import (BinOp, Call, Cast, Const, Expr, Load, Select, Var, linear_coefficient, offset_form,
                       structural_key, substitute, uses_var, walk)
from ..ir.loop import GPU_KINDS, Alloc, Buffer, CallExtern, For, Func, If, Seq, Stmt, Store
from ..ir.plan import ControlCall, Frame, entry_calls
from ..ir.types import DType, float64
from ..runtime import cache
from ..runtime.executable import BOUNDS_STATUS, PROFILE_MAX_THREADS, PROFILE_SYMBOLS, LoadedCode
from ..target import Target, init_llvm
from ..version import __version__
from . import Backend, Program
from . import fastmath

_GOMP: bool | None = None
log = logging.getLogger(__name__)

I1, I8, I32, I64 = ir.IntType(1), ir.IntType(8), ir.IntType(32), ir.IntType(64)
PTR = ir.PointerType()
VOID = ir.VoidType()
FLOAT_FLAGS = ("contract",)


def gomp_available() -> bool:
    """Load libgomp into the process for GOMP_parallel; warn once if it is missing."""
    global _GOMP
    if _GOMP is None:
        init_llvm()
        name = ctypes.util.find_library("gomp") or "libgomp.so.1"
        from ..runtime.threads import prepare_openmp
        prepare_openmp()   # libgomp reads its wait policy once, as it loads
        try:
            llvm.load_library_permanently(name)
            _GOMP = True
        except RuntimeError:
            _GOMP = False
            warnings.warn("libgomp could not be loaded: parallel loops will run on one thread", RuntimeWarning)
    return _GOMP


def scalar_type(dt: DType) -> ir.Type:
    if dt.is_float:
        return {16: ir.HalfType(), 32: ir.FloatType(), 64: ir.DoubleType()}[dt.bits]
    if dt.is_bool:
        return I1
    return ir.IntType(dt.bits)


def memory_type(dt: DType) -> ir.Type:
    return I8 if dt.is_bool else scalar_type(dt)


def _suffix(t: ir.Type) -> str:
    if isinstance(t, ir.VectorType):
        return f"v{t.count}{_suffix(t.element)}"
    if isinstance(t, ir.HalfType):
        return "f16"
    if isinstance(t, ir.FloatType):
        return "f32"
    if isinstance(t, ir.DoubleType):
        return "f64"
    return f"i{t.width}"


# ----------------------------------------------------------------------------- module

class ModuleBuilder:
    """``profile_calls``: the number of kernel calls the entry makes, for a profiling build
    (0: none). Such a build times every call on the calling thread (``mlc_profile``: start
    and end per call, nanoseconds of CLOCK_MONOTONIC) and every thread's share of each
    parallel loop (``mlc_profile_threads``: first start and last end per call and thread,
    up to ``PROFILE_MAX_THREADS`` threads); ``runtime.executable.LoadedCode`` reads both."""

    def __init__(self, name: str, triple: str, parallel: bool, bounds_check: bool = False,
                 profile_calls: int = 0, extern_globals: bool = False):
        self.module = ir.Module(name)
        # a kernel module compiled apart (``kernel_source``) declares the module-level globals
        # (profile records, bounds status) that its entry module defines once
        self.extern_globals = extern_globals
        self._status: ir.GlobalVariable | None = None
        self.module.triple = triple
        self.parallel = parallel
        self.bounds_check = bounds_check
        self.functions: dict[str, ir.Function] = {}
        self._outlined = 0
        self._strings: dict[str, ir.GlobalVariable] = {}
        self._bounds_fail: ir.Function | None = None
        self._by_text: dict[str, ir.Function] = {}   # a function's text but its name -> its code
        self.profile = None
        if profile_calls:
            self.profile = self._profile_globals(profile_calls)

    def _profile_globals(self, calls: int):
        def array(name, n):
            if self.extern_globals:   # its length is the entry's business: declared unsized
                return ir.GlobalVariable(self.module, ir.ArrayType(I64, 0), name)
            g = ir.GlobalVariable(self.module, ir.ArrayType(I64, n), name)
            g.initializer = ir.Constant(ir.ArrayType(I64, n), None)
            return g
        current = ir.GlobalVariable(self.module, I64, PROFILE_SYMBOLS[2])
        if not self.extern_globals:
            current.initializer = ir.Constant(I64, 0)
        now = ir.Function(self.module, ir.FunctionType(I64, []), "mlc.now")
        now.linkage = "internal"
        b = ir.IRBuilder(now.append_basic_block("entry"))
        ts = _alloca(b, ir.ArrayType(I64, 2), "ts")   # struct timespec {time_t tv_sec; long tv_nsec}
        b.call(self.declare("clock_gettime", I32, [I32, PTR]), [ir.Constant(I32, 1), ts])   # CLOCK_MONOTONIC
        sec = b.load(b.gep(ts, [ir.Constant(I64, 0)], source_etype=I64), typ=I64)
        nsec = b.load(b.gep(ts, [ir.Constant(I64, 1)], source_etype=I64), typ=I64)
        b.ret(b.add(b.mul(sec, ir.Constant(I64, 1_000_000_000)), nsec))
        return {"calls": array(PROFILE_SYMBOLS[0], 2 * calls),
                "threads": array(PROFILE_SYMBOLS[1], 2 * calls * PROFILE_MAX_THREADS),
                "current": current, "now": now, "n": calls}

    def _element(self, b: ir.IRBuilder, array: ir.GlobalVariable, index) -> ir.Value:
        p = b.gep(array, [ir.Constant(I64, 0), index], source_etype=array.value_type)
        p.type = PTR
        return p

    def profile_thread_start(self, b: ir.IRBuilder) -> tuple:
        """In a parallel loop's outlined body: (this thread's slot index, start time)."""
        prof = self.profile
        tid = b.sext(b.call(self.declare("omp_get_thread_num", I32, []), []), I64)
        call = b.load(prof["current"], typ=I64)
        slot = b.mul(b.add(b.mul(call, ir.Constant(I64, PROFILE_MAX_THREADS)), tid), ir.Constant(I64, 2))
        return tid, slot, b.call(prof["now"], [])

    def profile_thread_end(self, b: ir.IRBuilder, tid, slot, start) -> None:
        """Record the thread's first start and last end for the current call."""
        prof = self.profile
        end = b.call(prof["now"], [])
        with b.if_then(b.icmp_signed("<", tid, ir.Constant(I64, PROFILE_MAX_THREADS))):
            first = self._element(b, prof["threads"], slot)
            old = b.load(first, typ=I64)
            b.store(b.select(b.icmp_signed("==", old, ir.Constant(I64, 0)), start, old), first)
            b.store(end, self._element(b, prof["threads"], b.add(slot, ir.Constant(I64, 1))))

    def declare(self, name: str, ret: ir.Type, args: list[ir.Type]) -> ir.Function:
        fn = self.module.globals.get(name)
        if fn is None:
            fn = ir.Function(self.module, ir.FunctionType(ret, args), name)
        return fn

    def outlined_name(self, base: str) -> str:
        self._outlined += 1
        return f"{base}.par{self._outlined}"

    def string(self, text: str) -> ir.GlobalVariable:
        """A NUL-terminated constant string in the module (one per distinct text)."""
        g = self._strings.get(text)
        if g is None:
            data = bytearray(text.encode("utf-8") + b"\0")
            g = ir.GlobalVariable(self.module, ir.ArrayType(I8, len(data)), f"str.{len(self._strings)}")
            g.global_constant = True
            g.linkage = "private"
            g.initializer = ir.Constant(ir.ArrayType(I8, len(data)), data)
            self._strings[text] = g
        return g

    def bounds_fail(self) -> ir.Function:
        """``void (i64 kind, ptr kernel, ptr buffer, i64 offset, i64 count, i64 size)``: record the
        first out-of-bounds access in ``mlc_bounds_status`` (threads race: compare and swap)."""
        if self._bounds_fail is None:
            status = self.bounds_status()
            fn = ir.Function(self.module, ir.FunctionType(VOID, [I64, PTR, PTR, I64, I64, I64]), "mlc.bounds_fail")
            fn.linkage = "internal"
            fn.attributes.add("cold")
            fn.attributes.add("noinline")
            b = ir.IRBuilder(fn.append_basic_block("entry"))
            kind, kernel, buf, *numbers = fn.args
            slots = []
            for n in range(6):
                p = b.gep(status, [ir.Constant(I64, 0), ir.Constant(I64, n)], source_etype=status.value_type)
                p.type = ir.PointerType(I64)   # llvmlite types the element pointer as the array's
                slots.append(p)
            first = b.extract_value(b.cmpxchg(slots[0], ir.Constant(I64, 0), kind, "monotonic", "monotonic"), 1)
            with b.if_then(first):
                for p, v in zip(slots[1:], [b.ptrtoint(kernel, I64), b.ptrtoint(buf, I64), *numbers]):
                    b.store(v, p)
            b.ret_void()
            self._bounds_fail = fn
        return self._bounds_fail

    def bounds_status(self) -> ir.GlobalVariable:
        """``mlc_bounds_status``, where the first failing access is recorded: defined here, or
        declared in a kernel module compiled apart (its entry module defines it)."""
        if self._status is None:
            self._status = ir.GlobalVariable(self.module, ir.ArrayType(I64, 6), BOUNDS_STATUS)
            if not self.extern_globals:
                self._status.initializer = ir.Constant(ir.ArrayType(I64, 6), None)
        return self._status

    def add_func(self, func: Func, symbol: str | None = None) -> ir.Function:
        """The function's code; a function whose loops equal an earlier one's but for its name
        (ResNet-50's repeated blocks: 57 kernels, 30 distinct) shares that one's code, so
        LLVM compiles it once."""
        key = kernel_text(func, self.bounds_check)
        twin = self._by_text.get(key)
        if twin is not None:
            self.functions[func.name] = twin
            return twin
        fn = ir.Function(self.module, ir.FunctionType(VOID, [PTR] * len(func.params)), symbol or f"mlc_{func.name}")
        if symbol is None:
            fn.linkage = "internal"
        else:   # called from the entry's module, linked with it; not exported from a library
            fn.visibility = "hidden"
        fn.attributes.add("nounwind")
        for b, a in zip(func.params, fn.args):
            if b not in func.aliased:   # an in-place output shares memory with an input
                a.add_attribute("noalias")
        em = FuncEmitter(self, fn, {b: a for b, a in zip(func.params, fn.args)}, {}, kernel=func.name)
        em.stmt(func.body)
        em.builder.ret_void()
        self.functions[func.name] = self._by_text[key] = fn
        return fn

    def add_entry(self, calls: list, name: str = "mlc_entry",
                  symbols: dict[str, str] | None = None) -> ir.Function:
        """The entry function; ``symbols``: kernel name -> the symbol of its code compiled in
        another module (declared here), for kernels not added to this one. A control-flow
        call (``ControlCall``) runs its bodies, each a function of the entry's signature
        (``_frame``), from a loop or a branch here."""
        for call in entry_calls(calls):
            if call.func.name not in self.functions and symbols is not None:
                k = self.declare(symbols[call.func.name], VOID, [PTR] * len(call.func.params))
                k.visibility = "hidden"
                self.functions[call.func.name] = k
        if self.bounds_check:   # defined here once, also when only other modules' kernels check
            self.bounds_status()
        fn = ir.Function(self.module, ir.FunctionType(VOID, [PTR] * 4), name)
        fn.attributes.add("nounwind")
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        prof = self.profile
        if prof is not None:
            assert prof["n"] == len(calls), (prof["n"], len(calls))
            size = prof["threads"].value_type.count * 8
            memset = self.module.declare_intrinsic("llvm.memset", [PTR, I64])
            b.call(memset, [prof["threads"], ir.Constant(I8, 0), ir.Constant(I64, size), ir.Constant(I1, 0)])
        self._calls(b, fn, calls, prof)
        b.ret_void()
        return fn

    def _calls(self, b: ir.IRBuilder, fn: ir.Function, calls: list, prof=None) -> None:
        """``calls`` in order, in ``fn`` (an entry or a frame: inputs, outputs, params, workspace)."""
        for n, call in enumerate(calls):
            if prof is not None:
                b.store(ir.Constant(I64, n), prof["current"])
                start = b.call(prof["now"], [])
            if isinstance(call, ControlCall):
                self._control(b, fn, call)
            else:
                b.call(self.functions[call.func.name], [self._slot(b, fn, slot) for slot in call.args])
            if prof is not None:
                b.store(start, self._element(b, prof["calls"], ir.Constant(I64, 2 * n)))
                b.store(b.call(prof["now"], []), self._element(b, prof["calls"], ir.Constant(I64, 2 * n + 1)))

    @staticmethod
    def _slot(b: ir.IRBuilder, fn: ir.Function, slot) -> ir.Value:
        ins, outs, params, ws = fn.args
        if slot.space == "workspace":
            return b.gep(ws, [ir.Constant(I64, slot.index)], source_etype=I8)
        array = {"input": ins, "output": outs, "param": params}[slot.space]
        return b.load(b.gep(array, [ir.Constant(I64, slot.index)], source_etype=PTR), typ=PTR)

    def _frame(self, frame: Frame) -> ir.Function:
        """A control-flow body as a function of the entry's signature, running its calls."""
        fn = ir.Function(self.module, ir.FunctionType(VOID, [PTR] * 4), self.outlined_name(f"mlc_frame_{frame.name}"))
        fn.linkage = "internal"
        fn.attributes.add("nounwind")
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        self._calls(b, fn, frame.calls)
        b.ret_void()
        return fn

    def _control(self, b: ir.IRBuilder, fn: ir.Function, call: ControlCall) -> None:
        """A scan, while_loop or cond of ``fn``: pointer arrays for its bodies' inputs and
        outputs, filled before each call of a body; carries alternate between their two
        buffers, so a step never writes what it reads."""
        frames = [self._frame(f) for f in call.frames]
        params, ws = fn.args[2], fn.args[3]
        args = [self._slot(b, fn, s) for s in call.args]
        results = [self._slot(b, fn, s) for s in call.results]

        def frame_args(frame_index: int, ins: list, outs: list) -> None:
            frame = call.frames[frame_index]
            arrays = []
            for ptrs in (ins, outs):
                here = b.block   # the arrays are allocated once, in the entry block, not per step
                b.position_at_start(fn.entry_basic_block)
                a = _alloca(b, ir.ArrayType(PTR, max(len(ptrs), 1)), "frame.args")
                b.position_at_end(here)
                for i, p in enumerate(ptrs):
                    b.store(p, b.gep(a, [ir.Constant(I64, i)], source_etype=PTR))
                arrays.append(a)
            sub_params = b.gep(params, [ir.Constant(I64, frame.param_base)], source_etype=PTR)
            sub_ws = b.gep(ws, [ir.Constant(I64, call.frames_workspace)], source_etype=I8)
            b.call(frames[frame_index], arrays + [sub_params, sub_ws])

        def memcpy(dst, src, nbytes: int) -> None:
            if nbytes:
                f = self.module.declare_intrinsic("llvm.memcpy", [PTR, PTR, I64])
                b.call(f, [dst, src, ir.Constant(I64, nbytes), ir.Constant(I1, 0)])

        if call.op == "cond":
            flag = b.icmp_unsigned("!=", b.load(args[0], typ=I8), ir.Constant(I8, 0))
            with b.if_else(flag) as (then, otherwise):
                with then:
                    frame_args(0, args[1:], results)
                with otherwise:
                    frame_args(1, args[1:], results)
            return

        k = call.attrs["num_carry"]
        buffers = [(b.gep(ws, [ir.Constant(I64, call.carries[2 * i])], source_etype=I8),
                    b.gep(ws, [ir.Constant(I64, call.carries[2 * i + 1])], source_etype=I8)) for i in range(k)]
        sizes = [t.nbytes for t in call.in_types[:k]]
        for (first, _), src, size in zip(buffers, args[:k], sizes):
            memcpy(first, src, size)

        def carries(odd):   # (read, written) buffers of a step: odd steps read the second
            read = [b.select(odd, second, first) for first, second in buffers]
            written = [b.select(odd, first, second) for first, second in buffers]
            return read, written

        pre = b.block
        header = fn.append_basic_block(f"{call.name}.header")
        body = fn.append_basic_block(f"{call.name}.body")
        exit_ = fn.append_basic_block(f"{call.name}.exit")
        b.branch(header)
        b.position_at_end(header)
        step = b.phi(I64, name=f"{call.name}.step")
        step.add_incoming(ir.Constant(I64, 0), pre)
        odd = b.trunc(step, I1)
        read, written = carries(odd)
        if call.op == "scan":
            m, length = call.attrs["num_xs"], call.attrs["length"]
            b.cbranch(b.icmp_signed("<", step, ir.Constant(I64, length)), body, exit_)
            b.position_at_end(body)
            t = b.sub(ir.Constant(I64, length - 1), step) if call.attrs["reverse"] else step
            xs = [b.gep(x, [b.mul(t, ir.Constant(I64, ty.nbytes // max(length, 1)))], source_etype=I8)
                  for x, ty in zip(args[k:k + m], call.in_types[k:k + m])]
            ys = [b.gep(y, [b.mul(t, ir.Constant(I64, ty.nbytes // max(length, 1)))], source_etype=I8)
                  for y, ty in zip(results[k:], call.out_types[k:])]
            frame_args(0, read + xs + args[k + m:], written + ys)
        else:   # while_loop: the condition, then the body
            flag = b.gep(ws, [ir.Constant(I64, call.flag)], source_etype=I8)
            frame_args(0, read + args[k:], [flag])
            b.cbranch(b.icmp_unsigned("!=", b.load(flag, typ=I8), ir.Constant(I8, 0)), body, exit_)
            b.position_at_end(body)
            frame_args(1, read + args[k:], written)
        step.add_incoming(b.add(step, ir.Constant(I64, 1)), b.block)
        b.branch(header)
        b.position_at_end(exit_)
        for dst, src, size in zip(results[:k], read, sizes):   # the buffers the last step wrote
            memcpy(dst, src, size)


def kernel_text(func: Func, bounds_check: bool) -> str:
    """What makes a kernel's code: its loops but its name (``func @name``), so that kernels
    equal but for their name share code; with ``bounds_check`` the name too, as a bounds
    error names its kernel."""
    text = str(func)
    key = text[text.index("("):]
    return f"{func.name}{key}" if bounds_check else key


def _alloca(builder: ir.IRBuilder, typ: ir.Type, name: str):
    # llvmlite types an alloca as a typed pointer; mlc uses opaque pointers throughout
    ptr = builder.alloca(typ, name=name)
    ptr.type = PTR
    return ptr


class FuncEmitter:
    """Emits statements and expressions into one LLVM function."""

    def __init__(self, mb: ModuleBuilder, fn: ir.Function, buffers: dict, env: dict, in_parallel: bool = False,
                 kernel: str = ""):
        self.mb = mb
        self.fn = fn
        self.kernel = kernel or fn.name   # named in bounds-check errors
        self.entry = fn.append_basic_block("entry") if not fn.blocks else fn.blocks[0]
        self.builder = ir.IRBuilder(self.entry)
        self.buffers = dict(buffers)       # Buffer -> pointer value
        self.env = dict(env)               # Var -> i64 value
        self.vec: tuple[Var, int] | None = None
        self.in_parallel = in_parallel
        self._linear: dict = {}   # an access's index expressions -> its offset's linear form (_linear_offset)
        self._sums: dict = {}     # (basic block, terms) -> their sum emitted in that block (_sum)

    # --------------------------------------------------------------- statements
    def stmt(self, s: Stmt) -> None:
        if isinstance(s, Seq):
            for x in s.stmts:
                self.stmt(x)
        elif isinstance(s, For):
            self.for_(s)
        elif isinstance(s, Store):
            self.store(s)
        elif isinstance(s, Alloc):
            self.alloc(s)
        elif isinstance(s, If):
            self.if_(s)
        elif isinstance(s, CallExtern):
            self.call_extern(s)
        else:
            raise TypeError(f"cannot emit {type(s).__name__}")

    def call_extern(self, s: CallExtern) -> None:
        """``void name(const char *descriptor, ptr...)``: the descriptor is a constant
        string in the module; the runtime resolves ``name``."""
        mod = self.mb.module
        fn = mod.globals.get(s.name) or ir.Function(mod, ir.FunctionType(VOID, [PTR] * (1 + len(s.buffers))), s.name)
        data = bytearray(s.descriptor.encode("utf-8") + b"\0")
        text = ir.GlobalVariable(mod, ir.ArrayType(I8, len(data)), self.mb.outlined_name("desc"))
        text.global_constant = True
        text.linkage = "private"
        text.initializer = ir.Constant(ir.ArrayType(I8, len(data)), data)
        null = ir.Constant(PTR, None)
        self.builder.call(fn, [text] + [self.buffers[b] if b is not None else null for b in s.buffers])

    def alloc(self, s: Alloc) -> None:
        b = s.buffer
        with self.builder.goto_block(self.entry):
            self.builder.position_at_start(self.entry)
            size = max(1, b.type.size)
            ptr = _alloca(self.builder, ir.ArrayType(memory_type(b.dtype), size), b.name)
            ptr.align = 64
        self.buffers[b] = ptr
        self.stmt(s.body)
        del self.buffers[b]

    def if_(self, s: If) -> None:
        cond = self.expr(s.cond)
        if isinstance(cond.type, ir.VectorType):
            raise ValueError("an `if` inside a vector loop must not depend on the vector lane")
        if s.orelse is None:
            with self.builder.if_then(cond):
                self.stmt(s.then)
        else:
            with self.builder.if_else(cond) as (then, orelse):
                with then:
                    self.stmt(s.then)
                with orelse:
                    self.stmt(s.orelse)

    def for_(self, s: For) -> None:
        if s.kind in GPU_KINDS:
            raise ValueError(f"loop {s.var.name} is bound to {s.kind}: GPU bindings need a GPU target, "
                             "not a CPU (use parallel for CPU threads)")
        if s.kind == "vector":
            if self.vec is not None:
                raise ValueError("nested vector loops")
            if not (isinstance(s.extent, Const) and isinstance(s.start, Const) and s.start.value == 0):
                raise ValueError(f"vector loop {s.var.name} needs start 0 and a constant extent")
            if s.extent.value == 1:
                self.env[s.var] = ir.Constant(I64, 0)
                self.stmt(s.body)
                del self.env[s.var]
                return
            self.vec = (s.var, s.extent.value)
            try:
                self.stmt(s.body)
            finally:
                self.vec = None
            return
        if s.kind == "unroll":
            if not isinstance(s.extent, Const):
                raise ValueError(f"unrolled loop {s.var.name} needs a constant extent")
            start = self.expr(s.start)
            for k in range(s.extent.value):
                if isinstance(start, ir.Constant):   # each copy's variable a constant its addresses fold
                    self.env[s.var] = ir.Constant(I64, start.constant + k)
                else:
                    self.env[s.var] = self.builder.add(start, ir.Constant(I64, k)) if k else start
                self.stmt(s.body)
            del self.env[s.var]
            return
        if s.kind == "parallel" and not self.in_parallel and self.vec is None and self.mb.parallel:
            self.parallel_for(s)
            return
        start = self.expr(s.start)
        end = self.builder.add(start, self.expr(s.extent))
        self.loop(s.var, start, end, lambda: self.stmt(s.body))

    def loop(self, var: Var, start, end, emit_body) -> None:
        b = self.builder
        pre = b.block
        header = self.fn.append_basic_block(f"{var.name}.header")
        body = self.fn.append_basic_block(f"{var.name}.body")
        exit_ = self.fn.append_basic_block(f"{var.name}.exit")
        b.branch(header)
        b.position_at_end(header)
        i = b.phi(I64, name=var.name)
        i.add_incoming(start, pre)
        b.cbranch(b.icmp_signed("<", i, end), body, exit_)
        b.position_at_end(body)
        self.env[var] = i
        emit_body()
        nxt = b.add(i, ir.Constant(I64, 1), name=f"{var.name}.next")
        i.add_incoming(nxt, b.block)
        b.branch(header)
        b.position_at_end(exit_)
        del self.env[var]

    def parallel_for(self, s: For) -> None:
        """Outline the loop into fn(void *captures) and run it with GOMP_parallel."""
        b = self.builder
        captured = [(k, v) for k, v in self.buffers.items()] + [(k, v) for k, v in self.env.items()]
        with b.goto_block(self.entry):
            b.position_at_start(self.entry)
            data = _alloca(b, ir.ArrayType(I64, max(1, len(captured))), "captures")
        for n, (key, val) in enumerate(captured):
            slot = b.gep(data, [ir.Constant(I64, n)], source_etype=I64)
            b.store(b.ptrtoint(val, I64) if val.type == PTR or isinstance(val.type, ir.PointerType) else val, slot)
        outlined = ir.Function(self.mb.module, ir.FunctionType(VOID, [PTR]), self.mb.outlined_name(self.fn.name))
        outlined.linkage = "internal"
        outlined.attributes.add("nounwind")
        sub = FuncEmitter(self.mb, outlined, {}, {}, in_parallel=True, kernel=self.kernel)
        sb = sub.builder
        for n, (key, val) in enumerate(captured):
            slot = sb.gep(outlined.args[0], [ir.Constant(I64, n)], source_etype=I64)
            raw = sb.load(slot, typ=I64)
            if isinstance(key, Buffer):
                sub.buffers[key] = sb.inttoptr(raw, PTR)
            else:
                sub.env[key] = raw
        tid = sb.sext(sb.call(self.mb.declare("omp_get_thread_num", I32, []), []), I64)
        nth = sb.sext(sb.call(self.mb.declare("omp_get_num_threads", I32, []), []), I64)
        start = sub.expr(s.start)
        extent = sub.expr(s.extent)
        chunk = sb.sdiv(sb.add(extent, sb.sub(nth, ir.Constant(I64, 1))), nth)
        lo = sb.add(start, sb.mul(tid, chunk))
        end = sb.add(start, extent)
        hi = sb.add(lo, chunk)
        hi = sb.select(sb.icmp_signed("<", hi, end), hi, end)
        timing = self.mb.profile_thread_start(sb) if self.mb.profile is not None else None
        sub.loop(s.var, lo, hi, lambda: sub.stmt(s.body))
        if timing is not None:
            self.mb.profile_thread_end(sb, *timing)
        sb.ret_void()
        gomp = self.mb.declare("GOMP_parallel", VOID, [PTR, PTR, I32, I32])
        b.call(gomp, [outlined, data, ir.Constant(I32, 0), ir.Constant(I32, 0)])

    # --------------------------------------------------------------- memory
    def _linear_offset(self, buf: Buffer, indices):
        """The flat element offset of ``buf[indices]`` as ([(atom, coefficient)], constant),
        atoms being variables or non-linear subexpressions (``x // 7``); None when an index
        is not a linear form. Memoized by the index expressions, which an unrolled body
        shares across its copies."""
        key = (id(buf), *map(id, indices))
        hit = self._linear.get(key)
        if hit is not None:
            return hit[0]
        form = offset_form(indices, buf.shape)
        lin = None if form is None else (list(form[0].values()), form[1])
        self._linear[key] = (lin, indices)   # the indices kept alive: their ids stay theirs
        return lin

    def _sum(self, terms, const: int):
        """sum(coefficient * atom) + const as an i64 (no atom is the vector lane: ``_offsets``
        takes it out). Atoms that are compile-time constants (an unrolled copy's variable) fold into
        ``const``; the rest is summed once per basic block and reused, so the copies of an
        unrolled body share their address arithmetic."""
        b = self.builder
        parts = []
        for atom, c in terms:
            v = self.env.get(atom) if isinstance(atom, Var) else None
            if v is None:
                v = self._atom(atom)
            if isinstance(v, ir.Constant):
                const += c * v.constant
            else:
                parts.append((v, c))
        total = None
        for n in range(len(parts)):
            key = (b.block, *((id(v), c) for v, c in parts[:n + 1]))
            hit = self._sums.get(key)
            if hit is None:
                v, c = parts[n]
                term = v if c == 1 else b.mul(v, ir.Constant(I64, c))
                hit = term if total is None else b.add(total, term)
                self._sums[key] = hit
            total = hit
        if total is None:
            return ir.Constant(I64, const)
        return b.add(total, ir.Constant(I64, const)) if const else total

    def _atom(self, atom: Expr):
        """A non-linear atom's value, once per block and binding of its variables (each time
        when it reads memory, which a store between two uses could change)."""
        nodes = list(walk(atom))
        if any(isinstance(x, Load) for x in nodes):
            return self.expr(atom)
        bound = tuple(id(self.env.get(x)) for x in nodes if isinstance(x, Var))   # an unrolled copy's own values
        key = (self.builder.block, structural_key(atom), bound)
        v = self._sums.get(key)
        if v is None:
            v = self._sums[key] = self.expr(atom)
        return v

    def _offsets(self, buf: Buffer, indices) -> tuple[list[tuple], int | None]:
        """The access's pieces (first element offset, element count): one scalar, one
        contiguous vector, or one per lane of a gather/scatter; and the offset's stride along
        the vector lane (0: the same element in every lane, None: not affine in the lane)."""
        lin = self._linear_offset(buf, indices)
        var = self.vec[0] if self.vec is not None else None
        if lin is None or (var is not None and any(a is not var and uses_var(a, var) for a, _ in lin[0])):
            return self._offsets_of_expr(buf, indices)
        terms, const = lin
        stride = sum(c for a, c in terms if a is var) if var is not None else 0
        rest = [(a, c) for a, c in terms if a is not var]
        if stride == 0:
            return [(self._sum(rest, const), 1)], 0
        lanes = self.vec[1]
        if stride == 1:
            return [(self._sum(rest, const), lanes)], 1
        base = self._sum(rest, const)
        return [(self.builder.add(base, ir.Constant(I64, l * stride)) if l else base, 1) for l in range(lanes)], stride

    def scalar_offset(self, buf: Buffer, indices) -> ir.Value:
        """The flat element offset of ``buf[indices]`` outside any vector loop."""
        if self.vec is not None:
            raise ValueError(f"a scalar access to {buf.name} inside vector loop {self.vec[0].name}")
        (off, _), = self._offsets(buf, indices)[0]
        return off

    def _offsets_of_expr(self, buf: Buffer, indices) -> tuple[list[tuple], int | None]:
        """``_offsets`` for an index that is not a linear form: the expression emitted as it is."""
        off: Expr = Const(0)
        for i, n in zip(indices, buf.shape):
            off = off * n + i
        if self.vec is None or not uses_var(off, self.vec[0]):
            return [(self.expr(off), 1)], 0
        var, lanes = self.vec
        stride = linear_coefficient(off, var)
        if stride == 1:
            return [(self.expr(substitute(off, {var: Const(0)})), lanes)], 1
        return [(self.expr(substitute(off, {var: Const(l)})), 1) for l in range(lanes)], stride

    def _ptr(self, buf: Buffer, offset_value) -> ir.Value:
        return self.builder.gep(self.buffers[buf], [offset_value], source_etype=memory_type(buf.dtype))

    def _guarded(self, buf: Buffer, pieces, kind: int, access):
        """Run ``access()`` (which emits the load or store); under bounds checking only
        when every piece lies inside ``buf``, else record the failure. A skipped load
        gives zeros."""
        if not self.mb.bounds_check:
            return access()
        b = self.builder
        size = buf.type.size
        ok, bad = ir.Constant(I1, 1), None
        for o, n in pieces:
            # unsigned: a negative offset is huge
            inside = b.icmp_unsigned("<=", o, ir.Constant(I64, size - n)) if size >= n else ir.Constant(I1, 0)
            bad = o if bad is None else b.select(ok, o, bad)   # the first failing piece's offset
            ok = b.and_(ok, inside)
        count = pieces[0][1]
        with b.if_else(ok, likely=True) as (then, otherwise):
            with then:
                v = access()
                then_block = b.block
            with otherwise:
                fail = self.mb.bounds_fail()
                b.call(fail, [ir.Constant(I64, kind), self.mb.string(self.kernel),
                              self.mb.string(f"{buf.name}: {buf.type}"), bad, ir.Constant(I64, count),
                              ir.Constant(I64, size)])
                else_block = b.block
        if v is None:
            return None
        phi = b.phi(v.type)
        phi.add_incoming(v, then_block)
        phi.add_incoming(ir.Constant(v.type, None), else_block)
        return phi

    def load(self, e: Load):
        buf = e.source
        if buf not in self.buffers:
            raise KeyError(f"buffer {buf.name} is not in scope")
        b = self.builder
        mt = memory_type(buf.dtype)
        pieces, stride = self._offsets(buf, e.indices)
        align = buf.dtype.itemsize

        def access():
            if stride == 0 or stride == 1:
                (o, n), = pieces
                return b.load(self._ptr(buf, o), typ=ir.VectorType(mt, n) if stride else mt, align=align)
            v = ir.Constant(ir.VectorType(mt, len(pieces)), None)
            for l, (o, _) in enumerate(pieces):
                v = b.insert_element(v, b.load(self._ptr(buf, o), typ=mt, align=align), ir.Constant(I32, l))
            return v
        v = self._guarded(buf, pieces, 1, access)
        if buf.dtype.is_bool:
            zero = ir.Constant(v.type, None)
            v = b.icmp_unsigned("!=", v, zero)
        return v

    def store(self, s: Store) -> None:
        buf = s.buffer
        b = self.builder
        value = self.expr(s.value)
        pieces, stride = self._offsets(buf, s.indices)
        is_vec = isinstance(value.type, ir.VectorType)
        if buf.dtype.is_bool:
            value = b.zext(value, ir.VectorType(I8, value.type.count) if is_vec else I8)
        if stride == 0 and is_vec:
            raise ValueError(f"store to {buf.name}: every vector lane writes the same element")
        if stride != 0 and not is_vec:
            value = self.splat(value, self.vec[1])
        align = buf.dtype.itemsize

        def access():
            if stride == 0 or stride == 1:
                b.store(value, self._ptr(buf, pieces[0][0]), align=align)
            else:
                for l, (o, _) in enumerate(pieces):
                    b.store(b.extract_element(value, ir.Constant(I32, l)), self._ptr(buf, o), align=align)
        self._guarded(buf, pieces, 2, access)

    # --------------------------------------------------------------- expressions
    def splat(self, v, lanes: int):
        b = self.builder
        vt = ir.VectorType(v.type, lanes)
        if isinstance(v, ir.Constant):
            return ir.Constant(vt, [v] * lanes)
        x = b.insert_element(ir.Constant(vt, None), v, ir.Constant(I32, 0))
        return b.shuffle_vector(x, ir.Constant(vt, None), ir.Constant(ir.VectorType(I32, lanes), [0] * lanes))

    def _match(self, *vals):
        if any(isinstance(v.type, ir.VectorType) for v in vals):
            lanes = next(v.type.count for v in vals if isinstance(v.type, ir.VectorType))
            return [v if isinstance(v.type, ir.VectorType) else self.splat(v, lanes) for v in vals]
        return list(vals)

    def expr(self, e: Expr):
        if isinstance(e, Const):
            t = scalar_type(e.dtype)
            return ir.Constant(t, e.value if not e.dtype.is_bool else int(e.value))
        if isinstance(e, Var):
            if self.vec is not None and e is self.vec[0]:
                lanes = self.vec[1]
                return ir.Constant(ir.VectorType(I64, lanes), list(range(lanes)))
            try:
                return self.env[e]
            except KeyError:
                raise KeyError(f"loop variable {e.name} is not in scope") from None
        if isinstance(e, Load):
            return self.load(e)
        if isinstance(e, BinOp):
            a, b = self._match(self.expr(e.a), self.expr(e.b))
            return self.binop(e.op, e.a.dtype, a, b)
        if isinstance(e, Call):
            return self.call(e.fn, e.dtype, self.expr(e.args[0]))
        if isinstance(e, Select):
            c, a, b = self._match(self.expr(e.cond), self.expr(e.a), self.expr(e.b))
            return self.builder.select(c, a, b)
        if isinstance(e, Cast):
            return self.cast(self.expr(e.value), e.value.dtype, e.dtype)
        raise TypeError(f"cannot emit {type(e).__name__}")

    def binop(self, op: str, dt: DType, a, b):
        bld = self.builder
        if dt.is_float:
            simple = {"add": bld.fadd, "sub": bld.fsub, "mul": bld.fmul, "div": bld.fdiv}
            if op in simple:
                return simple[op](a, b, flags=FLOAT_FLAGS)
            if op in ("max", "min", "pow"):
                name = {"max": "llvm.maximum", "min": "llvm.minimum", "pow": "llvm.pow"}[op]
                fn = self.mb.declare(f"{name}.{_suffix(a.type)}", a.type, [a.type, a.type])
                return bld.call(fn, [a, b])
            if op in ("lt", "le", "gt", "ge", "eq"):
                sym = {"lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "=="}[op]
                return bld.fcmp_ordered(sym, a, b)
            if op == "ne":
                return bld.fcmp_unordered("!=", a, b)
            if op == "floordiv":
                return self.call("floor", dt, bld.fdiv(a, b))
            raise ValueError(f"float op {op}")
        signed = dt.kind == "int"
        if op in ("and", "or") or (dt.is_bool and op in ("max", "min")):
            return bld.and_(a, b) if op in ("and", "min") else bld.or_(a, b)
        simple = {"add": bld.add, "sub": bld.sub, "mul": bld.mul, "xor": bld.xor, "shr": bld.lshr,
                  "bitand": bld.and_, "bitor": bld.or_, "shl": bld.shl, "sar": bld.ashr}
        if op in simple:
            return simple[op](a, b)
        if op == "pow":
            return self.int_pow(a, b)
        if op in ("floordiv", "div"):
            return bld.sdiv(a, b) if signed else bld.udiv(a, b)
        if op == "mod":
            return bld.srem(a, b) if signed else bld.urem(a, b)
        if op in ("max", "min"):
            cmp = (bld.icmp_signed if signed else bld.icmp_unsigned)(">" if op == "max" else "<", a, b)
            return bld.select(cmp, a, b)
        if op in ("lt", "le", "gt", "ge", "eq", "ne"):
            sym = {"lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "==", "ne": "!="}[op]
            return (bld.icmp_signed if signed else bld.icmp_unsigned)(sym, a, b)
        raise ValueError(f"integer op {op}")

    def int_pow(self, a, e):
        """a ** e for integers by squaring: exact, and wrapping on overflow like numpy.
        (A negative e, an error in numpy, acts as its unsigned bit pattern.)"""
        bld = self.builder
        t = a.type
        vec = isinstance(t, ir.VectorType)
        width = (t.element if vec else t).width
        const = lambda v: ir.Constant(t, [ir.Constant(t.element, v)] * t.count) if vec else ir.Constant(t, v)
        if isinstance(e, ir.Constant):   # a literal exponent (maybe splat): multiply out its bits
            ks = {int(c.constant) for c in e.constant} if vec else {int(e.constant)}
            if len(ks) == 1:
                k = ks.pop() & ((1 << width) - 1)
                result, base = const(1), a
                while k:
                    if k & 1:
                        result = bld.mul(result, base)
                    k >>= 1
                    if k:
                        base = bld.mul(base, base)
                return result
        if vec:                          # lane by lane
            out = ir.Constant(t, None)
            for lane in range(t.count):
                i = ir.Constant(I32, lane)
                out = bld.insert_element(out, self.int_pow(bld.extract_element(a, i), bld.extract_element(e, i)), i)
            return out
        # a loop over the bits of e: r *= base where the bit is set, base *= base, e >>= 1
        pre = bld.block
        header, body, done = (self.fn.append_basic_block(f"pow.{n}") for n in ("header", "body", "done"))
        bld.branch(header)
        bld.position_at_end(header)
        r, base, k = bld.phi(t), bld.phi(t), bld.phi(t)
        r.add_incoming(const(1), pre)
        base.add_incoming(a, pre)
        k.add_incoming(e, pre)
        bld.cbranch(bld.icmp_unsigned("!=", k, const(0)), body, done)
        bld.position_at_end(body)
        r.add_incoming(bld.select(bld.trunc(k, I1), bld.mul(r, base), r), body)
        base.add_incoming(bld.mul(base, base), body)
        k.add_incoming(bld.lshr(k, const(1)), body)
        bld.branch(header)
        bld.position_at_end(done)
        return r

    def call(self, fn: str, dt: DType, x):
        b = self.builder
        if fn == "not":
            return b.not_(x)
        if fn == "neg":
            return b.fneg(x) if dt.is_float else b.neg(x)
        if not dt.is_float:
            if fn == "abs" and dt.kind == "uint":
                return x   # llvm.abs reads its operand as signed
            if fn == "abs":
                f = self.mb.declare(f"llvm.abs.{_suffix(x.type)}", x.type, [x.type, I1])
                return b.call(f, [x, ir.Constant(I1, 0)])
            raise ValueError(f"{fn} on {dt}")
        if fn == "exp" and dt.bits == 32:
            return fastmath.exp_f32(b, x, self.mb.declare)
        if fn == "tanh" and dt.bits == 32:
            return fastmath.tanh_f32(b, x, self.mb.declare)
        if fn in ("exp", "log", "sqrt", "sin", "cos", "floor", "ceil", "round", "abs"):
            # round is numpy's round-half-to-even
            name = {"abs": "fabs", "round": "roundeven"}.get(fn, fn)
            f = self.mb.declare(f"llvm.{name}.{_suffix(x.type)}", x.type, [x.type])
            return b.call(f, [x])
        if fn in ("tanh", "erf", "acos", "asin", "atan"):
            return self.libm(fn, dt, x)
        raise ValueError(f"unknown function {fn}")

    def libm(self, fn: str, dt: DType, x):
        """Call the C math library (float or double version), lane by lane for vectors."""
        b = self.builder
        if isinstance(x.type, ir.VectorType):
            out = ir.Constant(x.type, None)
            for l in range(x.type.count):
                lane = b.extract_element(x, ir.Constant(I32, l))
                out = b.insert_element(out, self.libm(fn, dt, lane), ir.Constant(I32, l))
            return out
        if dt.bits == 64:
            return b.call(self.mb.declare(fn, ir.DoubleType(), [ir.DoubleType()]), [x])
        f32 = ir.FloatType()
        xf = b.fpext(x, f32) if dt.bits == 16 else x
        r = b.call(self.mb.declare(fn + "f", f32, [f32]), [xf])
        return b.fptrunc(r, x.type) if dt.bits == 16 else r

    def f64_to_f32_round_to_odd(self, v):
        """f64 -> f32 rounded toward zero, the last bit set when inexact ("round to odd"):
        rounding that to f16 gives the correctly rounded f16 (f32 has >= 2*11+2 bits)."""
        b = self.builder
        lanes = v.type.count if isinstance(v.type, ir.VectorType) else None
        f32, i32, one = ir.FloatType(), I32, ir.Constant(I32, 1)
        if lanes:
            f32, i32 = ir.VectorType(f32, lanes), ir.VectorType(i32, lanes)
            one = ir.Constant(i32, [one] * lanes)
        f = b.fptrunc(v, f32)                      # to nearest
        back = b.fpext(f, v.type)
        bits = b.bitcast(f, i32)
        away = b.fcmp_ordered(">", self.call("abs", float64, back), self.call("abs", float64, v))
        bits = b.select(away, b.sub(bits, one), bits)   # rounded away from zero: one ulp back
        bits = b.select(b.fcmp_unordered("!=", back, v), b.or_(bits, one), bits)
        return b.bitcast(bits, f32)

    def cast(self, v, src: DType, dst: DType):
        b = self.builder
        if src is dst:
            return v
        lanes = v.type.count if isinstance(v.type, ir.VectorType) else None
        t = scalar_type(dst)
        if lanes:
            t = ir.VectorType(t, lanes)
        if dst.is_bool:
            zero = ir.Constant(v.type, None)
            return b.fcmp_unordered("!=", v, zero) if src.is_float else b.icmp_unsigned("!=", v, zero)
        if src.is_float and dst.is_float:
            if dst.bits > src.bits:
                return b.fpext(v, t)
            if src.bits == 64 and dst.bits == 16:
                # LLVM lowers this to a call of __truncdfhf2, which the JIT cannot resolve
                return b.fptrunc(self.f64_to_f32_round_to_odd(v), t)
            return b.fptrunc(v, t)
        if src.is_float:
            return b.fptosi(v, t) if dst.kind == "int" else b.fptoui(v, t)
        if dst.is_float:
            return b.sitofp(v, t) if src.kind == "int" else b.uitofp(v, t)
        sbits = 1 if src.is_bool else src.bits
        if dst.bits > sbits:
            return b.sext(v, t) if src.kind == "int" else b.zext(v, t)
        if dst.bits < sbits:
            return b.trunc(v, t)
        return v


# ----------------------------------------------------------------------------- compile to machine code

def target_machine(triple: str, cpu: str, features: str):
    """An LLVM TargetMachine for any triple llvmlite has a backend for, not only the host's."""
    init_llvm()
    return llvm.Target.from_triple(triple).create_target_machine(
        cpu=cpu, features=features, opt=3, reloc="pic", codemodel="default")


def compile_source(module_text: str, triple: str, cpu: str, features: str) -> bytes:
    """LLVM IR text -> optimized object code."""
    tm = target_machine(triple, cpu, features)
    return tm.emit_object(optimize(module_text, tm))


def optimize(module_text: str, tm) -> "llvm.ModuleRef":
    mod = llvm.parse_assembly(module_text)
    mod.verify()
    pto = llvm.create_pipeline_tuning_options(speed_level=2)
    pto.loop_vectorization = True
    pto.slp_vectorization = True
    pb = llvm.create_pass_builder(tm, pto)
    pb.getModulePassManager().run(mod, pb)
    return mod


class LLVMBackend(Backend):
    """CPU code through LLVM: x86-64 and every other CPU triple llvmlite has a backend for."""
    kind = "cpu"

    def source(self, program: Program, target: Target) -> str:
        mb = ModuleBuilder(program.name, target.triple, program.parallel, program.bounds_check,
                           len(program.calls) if program.profile else 0)
        for f in program.funcs:
            mb.add_func(f)
        mb.add_entry(program.calls)
        return str(mb.module)

    def compile(self, source: str, target: Target) -> bytes:
        t0 = time.perf_counter()
        obj = compile_source(source, target.triple, target.cpu, target.features)
        log.info("LLVM compiled %d KiB of IR for %s into %d KiB of code in %.2f s", len(source) >> 10, target.name,
                 len(obj) >> 10, time.perf_counter() - t0)
        return obj

    def build_split(self, program: Program, target: Target) -> bytes | None:
        return build_split(program, target)

    def prepare(self, target: Target, kernels: int) -> None:
        if target.is_host:
            start_workers(kernels)

    def text(self, source: str, target: Target, level: str) -> str:
        tm = target_machine(target.triple, target.cpu, target.features)
        mod = optimize(source, tm)
        if level == "llvm-opt":
            return str(mod)
        if level == "asm":
            return tm.emit_assembly(mod)
        raise ValueError(f"unknown LLVM level {level!r}: use llvm-opt or asm")

    def load(self, obj: bytes, target: Target) -> LoadedCode:
        if not target.is_host:
            raise ValueError(f"code for {target.name} ({target.triple}) cannot run on this machine")
        if b"GOMP_parallel" in obj:
            gomp_available()   # GOMP_parallel must resolve when the object is linked
        # a fresh target machine each time: the MCJIT engine takes ownership of (and frees) it
        return LoadedCode(obj, target_machine(target.triple, target.cpu, target.features))

    def runs_parallel(self, target: Target) -> bool:
        # libgomp is looked for here only when the code runs here; another machine is assumed to have it
        return gomp_available() if target.is_host else target.cores > 1


BACKEND = LLVMBackend()


# ----------------------------------------------------------------------------- kernels compiled apart
#
# ``build_split``: one LLVM module per distinct kernel, each compiled (in worker processes
# when several miss the cache) and cached on disk by itself, plus a small entry module;
# ``ld -r`` links them into one relocatable object. A kernel shared by two graphs (the
# same model at another opt level, a training graph's forward) is compiled once.

# kernel objects served from the disk cache / compiled / of those, compiled by worker processes
KERNEL_COUNTS = {"hits": 0, "misses": 0, "workers": 0}


def kernel_source(func: Func, symbol: str, triple: str, parallel: bool, bounds_check: bool, profile: bool) -> str:
    """One kernel as a module of its own: its code under ``symbol`` (hidden), the globals it
    shares with the entry declared."""
    with gc_paused():
        mb = ModuleBuilder(symbol, triple, parallel, bounds_check, 1 if profile else 0, extern_globals=True)
        mb.add_func(func, symbol)
        return str(mb.module)


@contextlib.contextmanager
def gc_paused():
    """No cyclic garbage collection inside: llvmlite's IR is a web of cycles built object by
    object, and the collector would traverse the half-built module again and again (40% of
    the time of building a kernel's IR). What the block leaves behind is collected after it."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def compile_kernel(job: tuple) -> bytes:
    """A worker process's task: (func, symbol, triple, cpu, features, parallel, bounds_check,
    profile) -> the kernel's object code, its local symbols named after it."""
    func, symbol, triple, cpu, features, parallel, bounds_check, profile = job
    obj = compile_source(kernel_source(func, symbol, triple, parallel, bounds_check, profile), triple, cpu, features)
    return prefix_local_symbols(obj, f"{symbol}.".encode())


def prefix_local_symbols(obj: bytes, prefix: bytes) -> bytes:
    """An ELF64 little-endian object with ``prefix`` before the name of each local symbol
    (not sections and files). MCJIT resolves a relocation against a local symbol by its name,
    so once ``ld -r`` has joined kernel objects, two kernels' constant pools (``.LCPI0_1``)
    or strings (``.Lstr.0``) must not share one. The new string table goes at the end of the
    file (the old one is its start, so every other name keeps its offset)."""
    if obj[:4] != b"\x7fELF" or obj[4] != 2 or obj[5] != 1:
        raise ValueError("kernel objects compiled apart must be ELF64 little-endian")
    buf = bytearray(obj)
    shoff = int.from_bytes(obj[0x28:0x30], "little")
    shentsize, shnum = int.from_bytes(obj[0x3A:0x3C], "little"), int.from_bytes(obj[0x3C:0x3E], "little")
    headers = [shoff + i * shentsize for i in range(shnum)]
    field = lambda h, at, n: int.from_bytes(obj[h + at:h + at + n], "little")
    for h in headers:
        if field(h, 4, 4) != 2:   # SHT_SYMTAB
            continue
        strtab = headers[field(h, 40, 4)]
        start, size = field(strtab, 24, 8), field(strtab, 32, 8)
        old = obj[start:start + size]
        names = bytearray(old)
        for sym in range(field(h, 24, 8), field(h, 24, 8) + field(h, 32, 8), 24):
            name, info = int.from_bytes(obj[sym:sym + 4], "little"), obj[sym + 4]
            if name and info >> 4 == 0 and info & 0xF not in (3, 4):   # STB_LOCAL, not STT_SECTION/STT_FILE
                buf[sym:sym + 4] = len(names).to_bytes(4, "little")
                names += prefix + old[name:old.index(b"\0", name)] + b"\0"
        buf[strtab + 24:strtab + 32] = len(buf).to_bytes(8, "little")
        buf[strtab + 32:strtab + 40] = len(names).to_bytes(8, "little")
        buf += names
    return bytes(buf)


def compile_jobs() -> int:
    """Processes compiling kernels at once, this one included: ``$MLC_COMPILE_JOBS``, else
    the machine's cores."""
    raw = os.environ.get("MLC_COMPILE_JOBS", "").strip()
    if not raw:
        return os.cpu_count() or 1
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"MLC_COMPILE_JOBS must be a positive integer (processes compiling kernels), got {raw!r}")
    return n


# A worker runs mlc's modules without mlc/__init__ (the frontends, the driver, nn...), so it
# starts in about half the time; it is a fresh interpreter, not a fork of this process (whose
# OpenMP and other threads a fork could catch holding a lock), and unlike multiprocessing's
# spawn it does not run the caller's __main__ script again.
_WORKER_BOOT = """
import sys, types
pkg = types.ModuleType("mlc")
pkg.__path__ = [sys.argv[1]]
sys.modules["mlc"] = pkg
from mlc.codegen.llvm import serve_worker
serve_worker()
"""


def serve_worker() -> None:
    """A worker process's loop: length-prefixed pickles on stdin, ``compile_kernel``'s jobs,
    answered on stdout with (True, object code) or (False, the exception)."""
    import signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C is the compiling process's to handle
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr   # a stray print must not corrupt the replies
    init_llvm()
    out.write(b"R")   # ready: the compiling process sends jobs only now
    out.flush()
    while True:
        head = inp.read(8)
        if len(head) < 8:
            return   # the compiling process closed the pipe or exited
        job = pickle.loads(inp.read(int.from_bytes(head, "little")))
        try:
            reply = (True, compile_kernel(job))
        except Exception as e:
            reply = (False, e)
        try:
            data = pickle.dumps(reply)
        except Exception:
            data = pickle.dumps((False, RuntimeError(f"{type(reply[1]).__name__}: {reply[1]}")))
        out.write(len(data).to_bytes(8, "little") + data)
        out.flush()


class WorkerDied(RuntimeError):
    """A compile worker process exited without answering."""


class _Worker:
    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, "-c", _WORKER_BOOT, os.path.dirname(os.path.dirname(__file__))],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.lock = threading.Lock()   # one job at a time
        self.ready = False

    def wait_ready(self) -> bool:
        """Wait until the worker has started (False: it died starting)."""
        with self.lock:
            if not self.ready:
                self.ready = self.proc.stdout.read(1) == b"R"
            return self.ready

    def run(self, job: tuple) -> bytes:
        with self.lock:
            return self._run(job)

    def _run(self, job: tuple) -> bytes:
        try:
            data = pickle.dumps(job)
            self.proc.stdin.write(len(data).to_bytes(8, "little") + data)
            self.proc.stdin.flush()
            head = self.proc.stdout.read(8)
            reply = self.proc.stdout.read(int.from_bytes(head, "little")) if len(head) == 8 else b""
        except OSError as e:
            raise WorkerDied(f"the pipe to it broke: {e}") from None
        if not reply:
            raise WorkerDied(f"exit status {self.proc.wait()}")
        ok, value = pickle.loads(reply)
        if not ok:
            raise value
        return value

    def close(self) -> None:
        if not self.ready:   # still starting, or never asked: it holds no job, so no need to wait for it
            self.proc.kill()
        try:
            self.proc.stdin.close()   # the worker exits at the end of its input
            self.proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()


_WORKERS: list[_Worker] = []
_WORKERS_PID = 0   # the process that started them (a fork of it starts its own)
_WORKERS_FAILED = ""   # why workers are not used any more in this process ("": they are)


def _workers(n: int) -> list[_Worker]:
    """``n`` worker processes, started once and reused by every compile in this process;
    none once one has died or could not be started (this process compiles alone then)."""
    global _WORKERS, _WORKERS_PID, _WORKERS_FAILED
    if _WORKERS_PID != os.getpid():
        _WORKERS, _WORKERS_PID, _WORKERS_FAILED = [], os.getpid(), ""
    if _WORKERS_FAILED:
        return []
    try:
        while len(_WORKERS) < n:
            _WORKERS.append(_Worker())
    except OSError as e:
        _worker_failed(f"a compile worker process could not be started: {e}")
    return _WORKERS[:n]


def _worker_failed(why: str) -> None:
    global _WORKERS_FAILED
    if not _WORKERS_FAILED:
        _WORKERS_FAILED = why
        warnings.warn(f"{why}; mlc compiles kernels in this process from now on", RuntimeWarning)


@atexit.register
def _close_workers() -> None:
    if _WORKERS_PID == os.getpid():
        for w in _WORKERS:
            w.close()
        _WORKERS.clear()


MIN_PARALLEL_JOBS = 4   # fewer kernels compile here as fast as a worker would start


def start_workers(kernels: int) -> None:
    """Start the worker processes ahead of a compile of about ``kernels`` kernels (they take
    about half a second to start), so that they are ready when its code is generated."""
    n = compile_jobs()
    if n > 1 and kernels >= 2 * MIN_PARALLEL_JOBS and linker() is not None:
        _workers(min(n - 1, kernels - 1))


def compile_kernels(jobs: list[tuple], sizes: list[int]) -> list[bytes]:
    """Object code of each job (``compile_kernel``'s tuples), the largest (``sizes``) first,
    on ``compile_jobs() - 1`` worker processes and on this thread, which takes the smallest
    jobs left (all of them while the workers start). In this process alone for one job, one
    core or MLC_COMPILE_JOBS=1; here too what a dying worker left."""
    n = compile_jobs()
    if n <= 1 or len(jobs) < MIN_PARALLEL_JOBS:
        return [compile_kernel(j) for j in jobs]
    order = collections.deque(sorted(range(len(jobs)), key=lambda i: -sizes[i]))
    results: list = [None] * len(jobs)
    errors: dict[int, BaseException] = {}
    lock = threading.Lock()

    def take(front: bool):
        with lock:
            return (order.popleft() if front else order.pop()) if order else None

    busy = threading.Condition(lock)
    running = [0]   # jobs on the workers now

    def drive(w: _Worker) -> None:
        if not w.wait_ready():   # meanwhile this thread has been taking jobs
            _worker_failed(f"an mlc compile worker process died starting (exit status {w.proc.wait()})")
            return
        while True:
            with lock:
                if not order:
                    return
                i = order.popleft()
                running[0] += 1
            try:
                results[i] = w.run(jobs[i])
                KERNEL_COUNTS["workers"] += 1
            except WorkerDied as e:
                _worker_failed(f"an mlc compile worker process died ({e})")
                with lock:
                    order.appendleft(i)
                return
            except Exception as e:   # the kernel's own error, raised as if compiled here
                errors[i] = e
            finally:
                with busy:
                    running[0] -= 1
                    busy.notify_all()

    for w in _workers(min(n - 1, len(jobs) - 1)):
        threading.Thread(target=drive, args=(w,), daemon=True).start()
    try:
        while True:
            while (i := take(False)) is not None:
                try:
                    results[i] = compile_kernel(jobs[i])
                except Exception as e:
                    errors[i] = e
            with busy:   # the workers' last jobs (a worker still starting takes none: not waited for)
                busy.wait_for(lambda: running[0] == 0 or order)
                if not order:
                    break
    except BaseException:   # interrupted: the workers stop after their job (its reply read, the pipe clean)
        with busy:
            order.clear()
            busy.wait_for(lambda: running[0] == 0)
        raise
    if _WORKERS_FAILED:
        _close_workers()
    if errors:
        raise errors[min(errors)]
    return [r if r is not None else compile_kernel(j) for r, j in zip(results, jobs)]


def linker() -> str | None:
    """The ``ld`` that joins kernel objects into one (None: not installed)."""
    return shutil.which("ld")


def link_objects(objs: list[bytes], ld: str) -> bytes:
    """One relocatable object of several (``ld -r``)."""
    with tempfile.TemporaryDirectory(prefix="mlc-link-") as d:
        paths = []
        for n, obj in enumerate(objs):
            paths.append(os.path.join(d, f"{n}.o"))
            with open(paths[-1], "wb") as f:
                f.write(obj)
        out = os.path.join(d, "out.o")
        r = subprocess.run([ld, "-r", "-o", out, *paths], capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"{ld} -r could not link the kernel objects: {r.stderr.strip()}")
        with open(out, "rb") as f:
            return f.read()


# triples whose objects are ELF64 little-endian (``prefix_local_symbols`` edits those)
_ELF64LE = re.compile(r"(x86_64|aarch64|riscv64|powerpc64le)-[^-]*-(linux|freebsd)")


def kernel_key(func: Func, program: Program, target: Target) -> str:
    """The disk-cache key of a kernel's object: its code, the codegen options, the target
    and the exact mlc and llvmlite."""
    return cache.key_of("kernel", __version__, cache.source_hash(), llvmlite.__version__, target.key,
                        f"parallel={program.parallel}", f"bounds_check={program.bounds_check}",
                        f"profile={program.profile}", kernel_text(func, program.bounds_check))


def build_split(program: Program, target: Target) -> bytes | None:
    """``program``'s object code, each distinct kernel compiled apart and cached on disk
    by itself, linked with the entry; None where that cannot be done (a target other than
    this machine, no ``ld``), for the caller to compile the whole program as one module."""
    ld = linker()
    if not target.is_host or ld is None or not _ELF64LE.match(target.triple):
        return None
    t0 = time.perf_counter()
    symbols: dict[str, str] = {}     # kernel name -> symbol
    kernels: dict[str, tuple] = {}   # symbol -> (key, func)
    for f in program.funcs:
        if f.name in symbols:
            continue
        key = kernel_key(f, program, target)
        symbols[f.name] = sym = f"mlc_k{key[:24]}"
        kernels.setdefault(sym, (key, f))
    objs = {sym: cache.load(key) for sym, (key, _) in kernels.items()}
    missing = [sym for sym, obj in objs.items() if obj is None]
    KERNEL_COUNTS["hits"] += len(objs) - len(missing)
    KERNEL_COUNTS["misses"] += len(missing)
    jobs = [(kernels[s][1], s, target.triple, target.cpu, target.features, program.parallel,
             program.bounds_check, program.profile) for s in missing]
    built = compile_kernels(jobs, [len(str(kernels[s][1])) for s in missing])
    for sym, obj in zip(missing, built):
        cache.store(kernels[sym][0], obj)
        objs[sym] = obj
    mb = ModuleBuilder(program.name, target.triple, program.parallel, program.bounds_check,
                       len(program.calls) if program.profile else 0)
    mb.add_entry(program.calls, symbols=symbols)
    entry = compile_source(str(mb.module), target.triple, target.cpu, target.features)
    obj = link_objects([entry] + [objs[s] for s in sorted(objs)], ld)
    log.info("LLVM: %d kernels for %s, %d from the cache, %d compiled (up to %d processes); done in %.2f s",
             len(objs), target.name, len(objs) - len(missing), len(missing), min(compile_jobs(), len(missing)),
             time.perf_counter() - t0)
    return obj
