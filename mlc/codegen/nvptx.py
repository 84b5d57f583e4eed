"""Loop IR -> LLVM IR for ``nvptx64-nvidia-cuda`` (llvmlite) -> PTX, for ``cuda`` targets.

A GPU function's body is a sequence of launch nests: each top-level ``blockIdx`` loop
nest becomes one PTX kernel (``.entry``) named ``<func>_k0``, ``<func>_k1``, ... whose
parameters are the function's buffers (generic pointers), in order::

    func @add(a: f32[4096], b: f32[4096], out: f32[4096]) {      .entry add_k0(3 x .param .u64 .ptr)
      blockIdx.x i0 in [0, 16) {                          ->       grid (16, 1, 1)
        threadIdx.x i1 in [0, 256) {                               block (256, 1, 1)
          out[i0 * 256 + i1] = a[i0 * 256 + i1] + b[i0 * 256 + i1]
        } } }

- Bound loops read the special registers (``llvm.nvvm.read.ptx.sreg.ctaid.x``, ``tid.x``,
  ...). A launch's grid size on an axis is the constant extent of its ``blockIdx`` loop
  (the largest, if there are several), its block size the largest constant extent of
  its ``threadIdx`` loops on that axis; a bound loop with a smaller extent is guarded
  (``if tid.x < extent``).
- A statement runs once per iteration of the bound loops around it: a store outside the
  ``threadIdx`` loops of a block (or outside a nested ``blockIdx`` loop) is made by the
  threads whose index on the unbound axes is 0 only. Stores to ``local`` buffers are not
  guarded: every thread has its own copy. Loops, conditions and barriers outside thread
  loops run on every thread of the block (so all reach the same barriers).
- ``shared`` buffers are module globals in address space 3, one per alloc and kernel
  (static shared memory); a kernel using more than 48 KiB puts them all in dynamic
  shared memory (one ``extern .shared`` array, each buffer at its offset), up to the
  architecture's limit (227 KiB on sm_90); ``barrier`` is ``llvm.nvvm.barrier0``
  (``bar.sync 0``); ``warp_reduce`` is log2(32) butterfly shuffles
  (``llvm.nvvm.shfl.sync.bfly.i32``; 64-bit values as two halves) combined in registers;
  ``mma_m16n8k16`` is one ``mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32`` (inline
  PTX), each lane loading the operand elements its fragments hold;
  kernels carry ``!nvvm.annotations`` (``kernel``, ``maxntidx/y/z``).
- Math functions (exp, log, sin, cos, tanh, erf, pow) call libdevice (``__nv_expf``, ...),
  linked into the module at compile time from ``$CUDA_HOME/nvvm/libdevice`` (default
  ``/usr/local/cuda``); without libdevice, exp and tanh on float32 use the inline
  versions of ``codegen.fastmath`` and the others are refused by name. sqrt, floor, ceil,
  round, abs, max and min are PTX instructions.

``Program.bounds_check`` works as on the CPU: the first failing access is recorded in the
module's global ``mlc_bounds_status`` (its kernel and buffer fields are addresses of
strings in device memory). ``Program.parallel`` and ``profile`` do not apply (a GPU
runtime times launches with CUDA events).

``build_gpu(program, target)`` gives what a GPU runtime needs: the PTX and the launch
table (``GpuModule``), see there. ``Backend.compile`` gives the PTX alone (as bytes);
``assemble`` turns PTX into a cubin with ``ptxas``.
"""
from __future__ import annotations

import functools
import glob
import logging
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field

import llvmlite.binding as llvm
import llvmlite.ir as ir

from ..ir.expr import Const, format_expr
from ..ir.loop import (GPU_KINDS, Alloc, Barrier, CallExtern, For, Func, If, Mma, Seq, Stmt, Store, WarpReduce,
                       format_stmt)
from ..ir.plan import Slot
from ..ir.types import DType
from ..target import Target
from . import Backend, Program
from . import fastmath
from .cross import ToolchainNotFound
from .llvm import I1, I32, I64, VOID, PTR, FuncEmitter, ModuleBuilder, memory_type, target_machine

log = logging.getLogger(__name__)

AXES = "xyz"
MAX_THREADS = 1024            # threads per block on every CUDA architecture
MAX_GRID = (2**31 - 1, 65535, 65535)
MAX_STATIC_SHARED = 48 << 10  # static shared memory per block; more is dynamic, up to the architecture's limit
MAX_SHARED = {"sm_80": 163 << 10, "sm_86": 99 << 10, "sm_87": 163 << 10, "sm_89": 99 << 10, "sm_90": 227 << 10,
              "sm_90a": 227 << 10}   # shared memory one block may use (CUDA programming guide)
SHARED_ALIGN = 16
LIBDEVICE_MATH = ("exp", "log", "sin", "cos", "tanh", "erf", "pow")


class GpuCodegenError(ValueError):
    """A function that cannot become GPU kernels (the message names it)."""


# ----------------------------------------------------------------------------- what a runtime replays

@dataclass(frozen=True)
class Launch:
    """One kernel launch: ``kernel`` in the PTX, run on ``grid`` blocks of ``block``
    threads (x, y, z), with ``args`` the buffers of its function's params in order, each
    placed as the memory plan says: ``Slot("input", n)`` the n-th input array,
    ``"output"`` the n-th output, ``"param"`` the n-th weight, ``"workspace"`` the byte
    offset ``index`` into the one workspace arena. ``shared_bytes``: the shared memory
    the kernel uses. Up to 48 KiB it is static (declared in the PTX) and
    ``dynamic_shared_bytes`` is 0; beyond, all of it is dynamic: the launch passes
    ``dynamic_shared_bytes`` (== ``shared_bytes``) as its shared memory size, after setting
    the kernel's ``CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES`` to it once. A grid
    with a 0 in it launches nothing (an empty tensor).

    A collective op of the graph (an all-reduce of data-parallel gradients) is an entry
    with ``collective`` set to the op's JSON descriptor (``ops/collective.py``) and
    ``args`` its source and destination (a recv has no source: ``args[0]`` is None): the
    runtime runs it with its communicator (NCCL) on the same stream, in order."""
    kernel: str
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    shared_bytes: int
    args: tuple[Slot, ...]
    func: str = ""   # the loop-level function the kernel comes from
    dynamic_shared_bytes: int = 0
    collective: str = ""   # not a kernel: a collective op's JSON descriptor, run by the runtime's communicator


@dataclass
class GpuModule:
    """A compiled program for a CUDA device: ``ptx`` (one module, load it once with
    ``cuModuleLoadData`` / ``cupy.RawModule(code=ptx)``) and ``launches``, which run the
    whole program when replayed in order on one stream: every kernel of every plan call,
    in order, each launched with its args as device pointers (``void *`` each). The
    arena for ``Slot("workspace", ...)`` is ``workspace_bytes`` long."""
    ptx: str
    launches: list[Launch] = field(default_factory=list)
    workspace_bytes: int = 0


# ----------------------------------------------------------------------------- launch nests

@dataclass
class KernelPlan:
    """One top-level blockIdx nest of a function, and its launch shape."""
    name: str
    nest: For
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    shared_bytes: int

    @property
    def dynamic_shared(self) -> bool:
        """Whether the kernel's shared buffers live in dynamic shared memory (over 48 KiB)."""
        return self.shared_bytes > MAX_STATIC_SHARED

    @property
    def dims(self) -> dict[str, int]:
        """Launch size per bound kind: {"blockIdx.x": grid x, ..., "threadIdx.z": block z}."""
        return {**{f"blockIdx.{a}": n for a, n in zip(AXES, self.grid)},
                **{f"threadIdx.{a}": n for a, n in zip(AXES, self.block)}}


def _first_line(s: Stmt) -> str:
    return format_stmt(s, 0)[0].strip()


def _top_level(func: Func) -> list[Stmt]:
    return list(func.body.stmts) if isinstance(func.body, Seq) else [func.body]


def shared_size(buf) -> int:
    """Bytes of a shared buffer in the kernel's static shared memory (each one aligned)."""
    return -(-max(1, buf.type.size) * buf.dtype.itemsize // SHARED_ALIGN) * SHARED_ALIGN


def kernels_of(func: Func, target: Target) -> list[KernelPlan]:
    """The kernels of a GPU function, one per top-level blockIdx loop nest, with their
    launch shapes; GpuCodegenError for anything else at the top level, a bound loop
    without a constant extent, or a launch the target's device cannot run."""
    def fail(msg):
        raise GpuCodegenError(f"func @{func.name}: {msg}")

    plans = []
    for s in _top_level(func):
        if isinstance(s, CallExtern):
            fail(f"call {s.name}: runtime calls (collectives) have no GPU code")
        if not (isinstance(s, For) and s.kind.startswith("blockIdx.")):
            fail(f"'{_first_line(s)}' is outside every blockIdx loop: on a GPU each top-level statement must "
                 "be a blockIdx loop nest (one kernel launch each); schedule it with bound loops")
        sizes: dict[str, int] = {}   # bound kind -> the largest extent of its loops
        shared = 0

        def visit(x, bound):
            nonlocal shared
            if isinstance(x, Seq):
                for y in x.stmts:
                    visit(y, bound)
            elif isinstance(x, For):
                if x.kind in GPU_KINDS:
                    if not isinstance(x.extent, Const):
                        fail(f"loop {x.var.name} is bound to {x.kind} with extent {format_expr(x.extent)}: bound "
                             "loops need a constant extent (it sets the launch's grid or block size)")
                    if x.kind in bound:
                        fail(f"loop {x.var.name} is bound to {x.kind} inside another {x.kind} loop")
                    if x.kind.startswith("blockIdx.") and any(k.startswith("threadIdx.") for k in bound):
                        fail(f"loop {x.var.name} is bound to {x.kind} inside a threadIdx loop")
                    sizes[x.kind] = max(sizes.get(x.kind, 0), x.extent.value)
                    bound = bound | {x.kind}
                visit(x.body, bound)
            elif isinstance(x, Alloc):
                if x.buffer.scope == "shared":
                    shared += shared_size(x.buffer)
                visit(x.body, bound)
            elif isinstance(x, If):
                visit(x.then, bound)
                if x.orelse is not None:
                    visit(x.orelse, bound)
            elif isinstance(x, CallExtern):
                fail(f"call {x.name}: runtime calls (collectives) have no GPU code")

        visit(s, frozenset())
        grid = tuple(sizes.get(f"blockIdx.{a}", 1) for a in AXES)
        block = tuple(max(1, sizes.get(f"threadIdx.{a}", 1)) for a in AXES)
        name = f"{func.name}_k{len(plans)}"
        if block[0] * block[1] * block[2] > MAX_THREADS:
            fail(f"kernel {name} has {block[0]}x{block[1]}x{block[2]} threads per block: at most {MAX_THREADS}")
        for a, n, most in zip(AXES, grid, MAX_GRID):
            if n > most:
                fail(f"kernel {name} has {n} blocks along {a}: at most {most}")
        most = MAX_SHARED.get(target.arch, MAX_STATIC_SHARED)
        if shared > most:
            fail(f"kernel {name} allocates {shared} bytes of shared memory: a block on {target.arch} has at most "
                 f"{most}")
        plans.append(KernelPlan(name, s, grid, block, shared))
    return plans


# ----------------------------------------------------------------------------- libdevice and ptxas

def _cuda_homes() -> list[str]:
    """Where the CUDA toolkit is looked for: $CUDA_HOME (or $CUDA_PATH) when set, else /usr/local/cuda."""
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    return [home] if home else ["/usr/local/cuda"]


def find_libdevice() -> str | None:
    """The path of libdevice (``nvvm/libdevice/libdevice.10.bc``), or None when not installed."""
    for home in _cuda_homes():
        found = sorted(glob.glob(os.path.join(home, "nvvm", "libdevice", "libdevice*.bc")))
        if found:
            return found[-1]
    return None


@functools.lru_cache(maxsize=4)
def _libdevice_bitcode(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def find_ptxas() -> str:
    """The ptxas command: ``$CUDA_HOME/bin/ptxas``, else on PATH; ToolchainNotFound if neither."""
    tried = []
    for home in _cuda_homes():
        p = os.path.join(home, "bin", "ptxas")
        tried.append(p)
        if os.access(p, os.X_OK):
            return p
    tried.append("ptxas on PATH")
    found = shutil.which("ptxas")
    if found:
        return found
    raise ToolchainNotFound(f"ptxas (the CUDA toolkit's PTX assembler) was not found: looked for {', '.join(tried)}; "
                            "install the CUDA toolkit or set CUDA_HOME, or write PTX (.ptx), which the CUDA "
                            "driver compiles when it loads it")


def assemble(ptx: str | bytes, arch: str) -> bytes:
    """A cubin for ``arch`` (``sm_90``) from PTX, by ptxas; RuntimeError with ptxas's message if it fails."""
    ptxas = find_ptxas()
    data = ptx.encode() if isinstance(ptx, str) else ptx
    with tempfile.TemporaryDirectory(prefix="mlc-ptxas-") as tmp:
        src, out = os.path.join(tmp, "module.ptx"), os.path.join(tmp, "module.cubin")
        with open(src, "wb") as f:
            f.write(data)
        r = subprocess.run([ptxas, f"-arch={arch}", "-o", out, src], capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"ptxas -arch={arch} failed: {(r.stderr or r.stdout).strip()}")
        with open(out, "rb") as f:
            return f.read()


# ----------------------------------------------------------------------------- module


class NVPTXModuleBuilder(ModuleBuilder):
    """The module of one program: every function's kernels (no entry function: the
    runtime replays the launch table instead)."""

    def __init__(self, name: str, target: Target, bounds_check: bool = False):
        super().__init__(name, target.triple, parallel=False, bounds_check=bounds_check)
        self.target = target
        self.libdevice = find_libdevice()
        self.kernels: list[KernelPlan] = []
        self._shared_names: set[str] = set()

    def shared_global(self, name: str, t: ir.Type | None) -> ir.GlobalVariable:
        """A module global in address space 3: an array of type ``t`` (static shared memory),
        or with ``t`` None the kernel's dynamic shared memory (``extern .shared``)."""
        base, n = name, 0
        while name in self._shared_names:
            n += 1
            name = f"{base}.{n}"
        self._shared_names.add(name)
        g = ir.GlobalVariable(self.module, t or ir.ArrayType(ir.IntType(8), 0), name, addrspace=3)
        g.type = ir.PointerType(addrspace=3)   # llvmlite types it as a typed pointer; mlc uses opaque ones
        if t is None:
            g.linkage = "external"
        else:
            g.linkage = "internal"
            g.initializer = ir.Constant(t, ir.Undefined)
        g.align = SHARED_ALIGN
        return g

    def add_gpu_func(self, func: Func) -> list[KernelPlan]:
        plans = kernels_of(func, self.target)
        for plan in plans:
            fn = ir.Function(self.module, ir.FunctionType(VOID, [PTR] * len(func.params)), plan.name)
            fn.attributes.add("nounwind")
            for b, a in zip(func.params, fn.args):
                if b not in func.aliased:   # an in-place output shares memory with an input
                    a.add_attribute("noalias")
            em = GPUFuncEmitter(self, fn, {b: a for b, a in zip(func.params, fn.args)}, plan)
            em.stmt(plan.nest)
            em.builder.ret_void()
            self.annotate(fn, "kernel", 1)
            for a, n in zip(AXES, plan.block):
                self.annotate(fn, f"maxntid{a}", n)
        self.kernels += plans
        return plans

    def annotate(self, fn: ir.Function, key: str, value: int) -> None:
        self.module.add_named_metadata("nvvm.annotations",
                                       [fn, ir.MetaDataString(self.module, key), ir.Constant(I32, value)])


class GPUFuncEmitter(FuncEmitter):
    """FuncEmitter for one kernel: bound loops read special registers, shared allocs are
    address-space-3 globals, barriers synchronize the block, math calls libdevice."""

    def __init__(self, mb: NVPTXModuleBuilder, fn: ir.Function, buffers: dict, plan: KernelPlan):
        super().__init__(mb, fn, buffers, {}, kernel=plan.name)
        self.plan = plan
        self.dims = plan.dims
        self.bound: set[str] = set()       # the bound kinds around the statement being emitted
        self._sregs: dict[str, ir.Value] = {}
        self._shared: dict = {}             # Buffer -> its shared memory (an alloc unrolled reuses it)
        self._dynamic = None                # the kernel's dynamic shared memory, if it has any
        self._shared_offset = 0             # where the next shared buffer starts in it

    def sreg(self, kind: str):
        """blockIdx.x -> %ctaid.x, threadIdx.y -> %tid.y, as i64 (read once, in the entry block)."""
        v = self._sregs.get(kind)
        if v is None:
            reg = ("ctaid" if kind.startswith("blockIdx") else "tid") + kind[-2:]
            f = self.mb.declare(f"llvm.nvvm.read.ptx.sreg.{reg}", I32, [])
            with self.builder.goto_block(self.entry):
                self.builder.position_at_start(self.entry)
                v = self.builder.zext(self.builder.call(f, []), I64, name=kind)
            self._sregs[kind] = v
        return v

    # --------------------------------------------------------------- statements
    def stmt(self, s: Stmt) -> None:
        if isinstance(s, Barrier):
            if any(k.startswith("threadIdx.") for k in self.bound):   # loop.verify refuses it too
                raise GpuCodegenError(f"kernel {self.kernel}: a barrier inside a threadIdx loop")
            self.builder.call(self.mb.declare("llvm.nvvm.barrier0", VOID, []), [])
        elif isinstance(s, WarpReduce):
            self.warp_reduce(s)
        elif isinstance(s, Mma):
            self.mma(s)
        elif isinstance(s, CallExtern):
            raise GpuCodegenError(f"kernel {self.kernel}: call {s.name}: runtime calls have no GPU code")
        else:
            super().stmt(s)

    def warp_reduce(self, s: WarpReduce) -> None:
        """Butterfly shuffles: after step ``off`` (16, 8, ..., 1) each lane holds the
        combination of the 32/off lanes around it, so after the last one every lane of
        the warp holds the whole warp's."""
        if any(k.startswith("threadIdx.") for k in self.bound):   # loop.verify refuses it too
            raise GpuCodegenError(f"kernel {self.kernel}: a warp_reduce inside a threadIdx loop")
        threads = self.plan.block[0] * self.plan.block[1] * self.plan.block[2]
        width = min(32, threads)
        if threads % width or width & (width - 1):
            raise GpuCodegenError(f"kernel {self.kernel}: warp_reduce in a block of {threads} threads: a block that "
                                  "reduces across its warps has whole warps (a multiple of 32 threads, or a power "
                                  "of two below 32)")
        b, buf, dt = self.builder, s.buffer, s.buffer.dtype
        ptr = self._ptr(buf, self.scalar_offset(buf, s.indices))
        v = b.load(ptr, typ=memory_type(dt))
        op = {"sum": "add", "prod": "mul", "max": "max", "min": "min"}[s.combiner]
        mask = ir.Constant(I32, 0xFFFFFFFF if width == 32 else (1 << width) - 1)
        clamp = ir.Constant(I32, ((32 - width) << 8) | 0x1F)   # lanes in segments of ``width``
        step = width // 2
        while step:
            v = self.binop(op, dt, v, self._shuffle_xor(v, ir.Constant(I32, step), mask, clamp))
            step //= 2
        b.store(v, ptr)

    MMA = ("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {$0, $1, $2, $3}, {$4, $5, $6, $7}, {$8, $9}, "
           "{$10, $11, $12, $13};")

    def mma(self, s: Mma) -> None:
        """Tensor cores: the fragments of lane l = 4g + c (PTX ISA, m16n8k16 with .f16
        operands): a's registers hold (row, col) pairs (g, 2c), (g + 8, 2c), (g, 2c + 8),
        (g + 8, 2c + 8) and the next column; b's (2c, g) and (2c + 8, g) and the next row;
        the accumulator's (g, 2c), (g, 2c + 1), (g + 8, 2c), (g + 8, 2c + 1)."""
        if "threadIdx.x" not in self.bound or self.plan.block[1] != 1 or self.plan.block[2] != 1 \
                or self.plan.block[0] % 32:
            raise GpuCodegenError(f"kernel {self.kernel}: mma_m16n8k16 needs a threadIdx.x loop in a block of whole "
                                  f"warps along x, the block is {self.plan.block}")
        b = self.builder
        i64 = lambda n: ir.Constant(I64, n)   # noqa: E731
        lane = b.and_(self.sreg("threadIdx.x"), i64(31))
        g, c = b.lshr(lane, i64(2)), b.and_(lane, i64(3))
        c2 = b.shl(c, i64(1))

        def element(buf, row, col):
            off = b.add(b.mul(row, i64(buf.shape[1])), col)
            return b.bitcast(b.load(self._ptr(buf, off), typ=ir.HalfType()), ir.IntType(16))

        def pair(buf, row, col, down: bool):   # two halves in one 32-bit register, the first in the low bits
            lo = element(buf, row, col)
            hi = element(buf, b.add(row, i64(1)), col) if down else element(buf, row, b.add(col, i64(1)))
            return b.or_(b.zext(lo, I32), b.shl(b.zext(hi, I32), ir.Constant(I32, 16)))
        a0, a1 = (self.expr(e) for e in s.a_index)
        b0, b1 = (self.expr(e) for e in s.b_index)
        a_regs = [pair(s.a, b.add(a0, b.add(g, i64(8 * (j & 1)))), b.add(a1, b.add(c2, i64(8 * (j >> 1)))), False)
                  for j in range(4)]
        b_regs = [pair(s.b, b.add(b0, b.add(c2, i64(8 * j))), b.add(b1, g), True) for j in range(2)]
        base = self.scalar_offset(s.acc, s.indices)
        f32 = ir.FloatType()
        ptrs = [self._ptr(s.acc, b.add(base, i64(q))) for q in range(4)]
        acc = [b.load(p, typ=f32) for p in ptrs]
        ft = ir.FunctionType(ir.LiteralStructType([f32] * 4), [I32] * 6 + [f32] * 4)
        asm = ir.InlineAsm(ft, self.MMA, "=f,=f,=f,=f,r,r,r,r,r,r,f,f,f,f", side_effect=True)
        d = b.call(asm, a_regs + b_regs + acc)
        for q, p in enumerate(ptrs):
            b.store(b.extract_value(d, q), p)

    def _shuffle_xor(self, v, lane_mask, mask, clamp):
        """``v`` of the lane whose index differs from this one's by ``lane_mask`` (xor);
        any scalar of up to 64 bits, moved as one or two 32-bit words."""
        b = self.builder
        shfl = self.mb.declare("llvm.nvvm.shfl.sync.bfly.i32", I32, [I32, I32, I32, I32])
        t = v.type
        bits = t.width if isinstance(t, ir.IntType) else {ir.HalfType: 16, ir.FloatType: 32, ir.DoubleType: 64}[type(t)]
        word = ir.IntType(bits)
        x = b.bitcast(v, word) if not isinstance(t, ir.IntType) else v
        if bits <= 32:
            w = b.zext(x, I32) if bits < 32 else x
            r = b.call(shfl, [mask, w, lane_mask, clamp])
            r = b.trunc(r, word) if bits < 32 else r
        else:
            lo = b.call(shfl, [mask, b.trunc(x, I32), lane_mask, clamp])
            hi = b.call(shfl, [mask, b.trunc(b.lshr(x, ir.Constant(I64, 32)), I32), lane_mask, clamp])
            r = b.or_(b.zext(lo, I64), b.shl(b.zext(hi, I64), ir.Constant(I64, 32)))
        return b.bitcast(r, t) if not isinstance(t, ir.IntType) else r

    def for_(self, s: For) -> None:
        if s.kind not in GPU_KINDS:
            super().for_(s)
            return
        if self.vec is not None:
            raise GpuCodegenError(f"kernel {self.kernel}: loop {s.var.name} is bound to {s.kind} inside a vector loop")
        index = self.sreg(s.kind)
        start = self.expr(s.start)
        self.env[s.var] = index if isinstance(s.start, Const) and s.start.value == 0 else \
            self.builder.add(start, index)
        self.bound.add(s.kind)
        try:
            if s.extent.value < self.dims[s.kind]:   # a smaller loop than the launch: the extra ones idle
                with self.builder.if_then(self.builder.icmp_unsigned("<", index, ir.Constant(I64, s.extent.value))):
                    self.stmt(s.body)
            else:
                self.stmt(s.body)
        finally:
            self.bound.discard(s.kind)
            del self.env[s.var]

    def alloc(self, s: Alloc) -> None:
        if s.buffer.scope != "shared":
            super().alloc(s)
            return
        buf = s.buffer
        if buf not in self._shared:
            self._shared[buf] = self._shared_memory(buf)
        self.buffers[buf] = self._shared[buf]
        self.stmt(s.body)
        del self.buffers[s.buffer]

    def _shared_memory(self, buf):
        if not self.plan.dynamic_shared:
            t = ir.ArrayType(memory_type(buf.dtype), max(1, buf.type.size))
            return self.mb.shared_global(f"{self.kernel}.{buf.name}", t)
        # over 48 KiB: each buffer at its own offset in the kernel's dynamic shared memory
        if self._dynamic is None:
            self._dynamic = self.mb.shared_global(f"{self.kernel}_dynamic_shared", None)
        with self.builder.goto_block(self.entry):
            self.builder.position_at_start(self.entry)
            p = self.builder.gep(self._dynamic, [ir.Constant(I64, self._shared_offset)], source_etype=ir.IntType(8))
        p.type = ir.PointerType(addrspace=3)
        self._shared_offset += shared_size(buf)
        return p

    def store(self, s: Store) -> None:
        # once per iteration of the bound loops around it: the threads (and blocks) at 0 on the other axes
        unbound = [k for k, n in self.dims.items() if n > 1 and k not in self.bound]
        if s.buffer.scope == "local" or not unbound:
            super().store(s)
            return
        b = self.builder
        cond = ir.Constant(I1, 1)
        for k in unbound:
            cond = b.and_(cond, b.icmp_unsigned("==", self.sreg(k), ir.Constant(I64, 0)))
        with b.if_then(cond):
            super().store(s)

    # --------------------------------------------------------------- math
    def call(self, fn: str, dt: DType, x):
        if dt.is_float and fn in LIBDEVICE_MATH:
            return self.math(fn, dt, [x])
        return super().call(fn, dt, x)

    def libm(self, fn: str, dt: DType, x):
        return self.math(fn, dt, [x])

    def binop(self, op: str, dt: DType, a, b):
        if dt.is_float and op == "pow":
            return self.math("pow", dt, [a, b])
        return super().binop(op, dt, a, b)

    def math(self, fn: str, dt: DType, args: list):
        """A libdevice function (``__nv_expf`` for f32, ``__nv_exp`` for f64; f16 through f32),
        lane by lane for vectors; the fastmath inline versions when libdevice is missing."""
        b = self.builder
        if isinstance(args[0].type, ir.VectorType):
            out = ir.Constant(args[0].type, None)
            for lane in range(args[0].type.count):
                i = ir.Constant(I32, lane)
                out = b.insert_element(out, self.math(fn, dt, [b.extract_element(a, i) for a in args]), i)
            return out
        t = args[0].type
        f32 = ir.FloatType()
        wide = [b.fpext(a, f32) for a in args] if dt.bits == 16 else args
        if self.mb.libdevice is not None:
            ft = ir.DoubleType() if dt.bits == 64 else f32
            name = f"__nv_{fn}" + ("" if dt.bits == 64 else "f")
            r = b.call(self.mb.declare(name, ft, [ft] * len(args)), wide)
        elif fn in ("exp", "tanh") and dt.bits in (16, 32):
            r = (fastmath.exp_f32 if fn == "exp" else fastmath.tanh_f32)(b, wide[0], self.mb.declare)
        else:
            raise GpuCodegenError(f"kernel {self.kernel}: {fn} on {dt} needs libdevice, which was not found (looked "
                                  f"in {', '.join(os.path.join(h, 'nvvm', 'libdevice') for h in _cuda_homes())}; "
                                  "set CUDA_HOME to the CUDA toolkit)")
        return b.fptrunc(r, t) if dt.bits == 16 else r


# ----------------------------------------------------------------------------- compile to PTX

def _tm(target: Target):
    return target_machine(target.triple, target.cpu, target.features)


def optimize(source: str, target: Target) -> "llvm.ModuleRef":
    """Parse, link libdevice when the module calls it, make everything but the kernels
    internal (so unused libdevice code is dropped) and optimize."""
    tm = _tm(target)
    mod = llvm.parse_assembly(source)
    mod.data_layout = str(tm.target_data)
    own = {f.name for f in mod.functions if not f.is_declaration}
    if any(f.is_declaration and f.name.startswith("__nv_") for f in mod.functions):
        path = find_libdevice()
        if path is None:
            raise GpuCodegenError("this module calls libdevice, which was not found: set CUDA_HOME")
        lib = llvm.parse_bitcode(_libdevice_bitcode(path))
        lib.triple, lib.data_layout = mod.triple, mod.data_layout
        mod.link_in(lib)
        for f in mod.functions:
            if not f.is_declaration and f.name not in own:
                f.linkage = llvm.Linkage.internal
    mod.verify()
    pb = llvm.create_pass_builder(tm, llvm.create_pipeline_tuning_options(speed_level=2))
    pb.getModulePassManager().run(mod, pb)
    return mod


class NVPTXBackend(Backend):
    """CUDA code through LLVM's NVPTX backend: PTX text (compile gives it as bytes)."""
    kind = "cuda"

    def module(self, program: Program, target: Target) -> NVPTXModuleBuilder:
        mb = NVPTXModuleBuilder(program.name, target, program.bounds_check)
        for f in program.funcs:
            if collective_call(f) is None:   # collectives are the runtime's, not kernels
                mb.add_gpu_func(f)
        return mb

    def source(self, program: Program, target: Target) -> str:
        return str(self.module(program, target).module)

    def compile(self, source: str, target: Target) -> bytes:
        t0 = time.perf_counter()
        ptx = _tm(target).emit_assembly(optimize(source, target))
        log.info("LLVM compiled %d KiB of IR for %s into %d KiB of PTX in %.2f s", len(source) >> 10, target.name,
                 len(ptx) >> 10, time.perf_counter() - t0)
        return ptx.encode()

    def text(self, source: str, target: Target, level: str) -> str:
        mod = optimize(source, target)
        if level == "llvm-opt":
            return str(mod)
        if level in ("asm", "ptx"):
            return _tm(target).emit_assembly(mod)
        raise ValueError(f"unknown NVPTX level {level!r}: use llvm-opt, asm or ptx")

    def load(self, obj: bytes, target: Target):
        raise RuntimeError(f"code for {target.name} runs on a CUDA device through a GPU runtime, not in this "
                           "process: codegen.nvptx.build_gpu gives its PTX and launch table")

    def runs_parallel(self, target: Target) -> bool:
        return False   # parallel loops in a GPU function run serially on their thread


def collective_call(func: Func) -> CallExtern | None:
    """The runtime call of a function that is one collective op, else None."""
    return func.body if isinstance(func.body, CallExtern) else None


def launches(program: Program, target: Target) -> list[Launch]:
    """The launch table of a program: every kernel of every call's function, in call order
    (a collective op as one entry the runtime runs, see ``Launch``)."""
    out = []
    for call in program.calls:
        ext = collective_call(call.func)
        if ext is not None:
            # the function's params are (source, destination), or (destination) for a recv
            args = tuple(call.args) if len(call.args) == 2 else (None, *call.args)
            out.append(Launch(call.func.name, (1, 1, 1), (1, 1, 1), 0, args, call.func.name, 0, ext.descriptor))
            continue
        for k in kernels_of(call.func, target):
            out.append(Launch(k.name, k.grid, k.block, k.shared_bytes, tuple(call.args), call.func.name,
                              k.shared_bytes if k.dynamic_shared else 0))
    return out


def build_gpu(program: Program, target) -> GpuModule:
    """The program as PTX for ``target`` (a cuda target) and the launches that run it."""
    from . import LOCK
    target = Target.get(target)
    if target.kind != "cuda":
        raise ValueError(f"target {target.name} is a {target.kind} target: build_gpu generates CUDA code")
    with LOCK:
        ptx = BACKEND.compile(BACKEND.source(program, target), target).decode()
    return GpuModule(ptx, launches(program, target), program.workspace_bytes)


BACKEND = NVPTXBackend()
