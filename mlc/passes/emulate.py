"""GPU loop nests as CPU loops: how ``MLC_CUDA_EMULATE=1`` runs a cuda-scheduled
program on a machine without a GPU (the tests check every GPU schedule's numerics
this way). It is an execution mode of the same loop IR, not a second implementation:

- ``blockIdx`` and ``threadIdx`` loops become serial loops;
- a ``warp_reduce`` of a per-thread register becomes loops over the block's warps
  that combine the copies of their threads (in lane order) and give every lane the
  result: what the butterfly shuffles leave in each thread's register on the device;
- an ``mma_m16n8k16`` becomes the loops of what it computes for its thread (the
  product of the two 16-wide operand slices at the elements the thread's lane holds);
- barriers disappear: the code between two barriers is its own threadIdx loop
  nest (``loop.verify`` keeps barriers out of thread loops), so running each such
  phase for every thread before the next phase starts is exactly what the barrier
  guarantees on the device;
- a ``shared`` buffer (one per block, allocated inside the blockIdx loop) becomes a
  ``local`` array allocated at the same place: one per block again;
- a ``local`` buffer allocated inside a blockIdx loop but outside its thread loops
  is per thread on the device (each thread its own registers, kept across phases:
  a register tile accumulated over the k-tiles of a matmul), so it gets one copy
  per thread of the block, indexed by the enclosing thread loops' variables. Block
  code outside any thread loop runs once, as thread 0 of the block (``codegen.nvptx``
  runs it on thread 0), except code that writes such a register: every thread
  runs that on its own copy.

A function without GPU loops comes back unchanged.

    blockIdx.x b in [0, 4) {                 for b in [0, 4) {
      alloc s: f32[64] shared                  alloc s: f32[64] local
      threadIdx.x t in [0, 64) {               for t in [0, 64) {
        s[t] = a[b * 64 + t]                     s[t] = a[b * 64 + t]
      }                                 ->     }
      barrier                                  for t in [0, 64) {
      threadIdx.x t in [0, 64) {                 out[b * 64 + t] = s[63 - t]
        out[b * 64 + t] = s[63 - t]            }
      }                                      }
    }
"""
from __future__ import annotations

from ..ir.expr import Cast, Const, Load, Var, substitute
from ..ir.loop import (GPU_KINDS, Accumulate, Alloc, Barrier, Buffer, For, Func, If, Mma, Seq, Stmt, Store,
                       WarpReduce, buffers_used)
from ..ir.tensor import combine
from ..ir.types import float32
from ..ir.stmt import replace_for, walk_stmts

AXES = ("z", "y", "x")


def is_gpu_func(func: Func) -> bool:
    return any(isinstance(s, (For, Alloc, Barrier)) and _gpu_node(s) for s, _ in walk_stmts(func.body))


def _gpu_node(s) -> bool:
    return (isinstance(s, For) and s.kind in GPU_KINDS) or isinstance(s, Barrier) or (
        isinstance(s, Alloc) and s.buffer.scope == "shared")


def emulate_gpu(func: Func) -> Func:
    """``func`` (scheduled for a cuda target) as serial CPU loops with the same results."""
    if not is_gpu_func(func):
        return func
    out = Func(func.name, func.inputs, func.outputs, _outside(func.body), func.scratch)
    out.aliased = set(func.aliased)
    return out


def _outside(s: Stmt) -> Stmt:
    """Code outside any block loop."""
    if isinstance(s, Seq):
        return Seq([_outside(x) for x in s.stmts])
    if isinstance(s, Barrier):
        return Seq([])
    if isinstance(s, For) and s.kind.startswith("blockIdx"):
        return _Block(s).run()
    if isinstance(s, For):
        return replace_for(s, kind="serial" if s.kind in GPU_KINDS else s.kind, body=_outside(s.body))
    if isinstance(s, Alloc):
        return Alloc(_unshared(s.buffer), _outside(s.body))
    if isinstance(s, If):
        return If(s.cond, _outside(s.then), _outside(s.orelse) if s.orelse is not None else None, s.likely)
    return s


def _unshared(b: Buffer) -> Buffer:
    return Buffer(b.name, b.shape, b.dtype, "local") if b.scope == "shared" else b


def mma_loops(s: Mma, thread) -> Stmt:
    """What one thread's ``mma_m16n8k16`` computes (see ``loop.Mma``), as loops."""
    if thread is None:
        raise ValueError(f"mma_m16n8k16 into {s.acc.name} outside a threadIdx.x loop")
    lane = thread % 32
    g, c = lane // 4, lane % 4
    q, k = Var(f"mma_q_{s.acc.name}"), Var(f"mma_k_{s.acc.name}")
    idx = [*s.indices[:-1], s.indices[-1] + q]
    a = Load(s.a, [s.a_index[0] + g + (q // 2) * 8, s.a_index[1] + k])
    b = Load(s.b, [s.b_index[0] + k, s.b_index[1] + c * 2 + q % 2])
    step = Store(s.acc, idx, Load(s.acc, idx) + Cast(float32, a) * Cast(float32, b))
    return For(q, 4, For(k, 16, step))


class _Block:
    """One launch nest: a blockIdx loop and everything inside it."""

    def __init__(self, nest: For):
        self.nest = nest
        # threads per axis: the widest thread loop of the nest (narrower ones are guarded on the device)
        self.threads: dict[str, int] = {}
        for s, _ in walk_stmts(nest):
            if isinstance(s, For) and s.kind.startswith("threadIdx"):
                axis = s.kind[-1]
                n = int(s.extent.value) if isinstance(s.extent, Const) else 1
                self.threads[axis] = max(self.threads.get(axis, 1), n)
        self.axes = [a for a in AXES if a in self.threads]
        self.private: dict = {}    # per-thread local Buffer -> its copy with one slice per thread
        self.buffers: dict = {}    # shared Buffer -> its local replacement
        self.fresh = 0

    def run(self) -> Stmt:
        return self.stmt(self.nest, None)

    def stmt(self, s: Stmt, tvars: dict | None) -> Stmt:
        """``tvars``: axis -> the thread loop variable around ``s``; None outside thread loops."""
        if isinstance(s, Seq):
            return Seq([self.stmt(x, tvars) for x in s.stmts])
        if isinstance(s, Barrier):
            return Seq([])
        if isinstance(s, WarpReduce):
            return self._warp_reduce(s)
        if isinstance(s, Mma):
            return self.stmt(mma_loops(s, (tvars or {}).get("x")), tvars)
        if tvars is None and self.private and not self._has_threads(s) and self._uses_private(s):
            if self._writes_private(s):
                return self._every_thread(s)
            return self.stmt(s, {})   # block code that only reads registers: thread 0's, which runs it
        if isinstance(s, For):
            inner = tvars
            if s.kind.startswith("threadIdx"):
                inner = {**(tvars or {}), s.kind[-1]: s.var}
            kind = "serial" if s.kind in GPU_KINDS else s.kind
            return For(s.var, s.extent, self.stmt(s.body, inner), kind, s.start)
        if isinstance(s, Alloc):
            b = s.buffer
            if b.scope == "shared":
                new = self.buffers[b] = _unshared(b)
            elif b.scope == "local" and tvars is None and self.axes:
                shape = [self.threads[a] for a in self.axes] + list(b.shape)
                new = self.private[b] = Buffer(b.name, shape, b.dtype, "local")
            else:
                new = b
            return Alloc(new, self.stmt(s.body, tvars))
        if isinstance(s, If):
            return If(self.expr(s.cond, tvars), self.stmt(s.then, tvars),
                      self.stmt(s.orelse, tvars) if s.orelse is not None else None, s.likely)
        if isinstance(s, Store):
            b, idx = self._target(s.buffer, s.indices, tvars)
            return Store(b, idx, self.expr(s.value, tvars))
        if isinstance(s, Accumulate):
            b, idx = self._target(s.buffer, s.indices, tvars)
            return Accumulate(b, idx, s.combiner, self.expr(s.value, tvars),
                              [(self.expr(e, tvars), n) for e, n in s.rindex])
        return s

    def _warp_reduce(self, s: WarpReduce) -> Stmt:
        """Each warp's copies of the register combined in lane order, the result stored
        back into every lane's copy (threads are numbered x fastest, then y, then z)."""
        if s.buffer not in self.private:
            raise ValueError(f"warp_reduce of {s.buffer.name}: not a per-thread register of the block (a local "
                             "buffer allocated in the block, outside its thread loops)")
        total = 1
        for a in self.axes:
            total *= self.threads[a]
        width = min(32, total)
        if total % width:
            raise ValueError(f"warp_reduce in a block of {total} threads: its warps must be whole (a multiple of 32)")
        priv, idx = self.private[s.buffer], list(s.indices)
        self.fresh += 1
        w, lane = Var(f"emu_warp{self.fresh}"), Var(f"emu_lane{self.fresh}")
        acc = Buffer(f"emu_warp_acc{self.fresh}", [1], s.buffer.dtype, "local")

        def copy(lane_expr):   # the register of lane ``lane_expr`` of warp w
            linear, thread, stride = w * width + lane_expr, [], 1
            for a in reversed(self.axes):   # x first
                n = self.threads[a]
                thread.insert(0, (linear // stride) % n if stride * n < total else linear // stride)
                stride *= n
            return thread + idx
        first = Store(acc, [Const(0)], Load(priv, copy(Const(0))))
        fold = For(lane, width - 1, Store(acc, [Const(0)], combine(s.combiner, Load(acc, [Const(0)]),
                                                                      Load(priv, copy(lane + 1)))))
        out = Var(f"emu_lane_out{self.fresh}")
        back = For(out, width, Store(priv, copy(out), Load(acc, [Const(0)])))
        return For(w, total // width, Alloc(acc, Seq([first, fold, back])))

    def _thread_index(self, tvars: dict | None) -> list:
        # a thread loop over fewer axes than the block runs on the threads at 0 of the others
        return [(tvars or {}).get(a, Const(0)) for a in self.axes]

    def _target(self, b: Buffer, indices, tvars):
        idx = [self.expr(i, tvars) for i in indices]
        if b in self.private:
            return self.private[b], self._thread_index(tvars) + idx
        return self.buffers.get(b, b), idx

    def expr(self, e, tvars):
        loads = {b: (lambda idx, new=new: Load(new, self._thread_index(tvars) + list(idx)))
                 for b, new in self.private.items()}
        loads.update({b: (lambda idx, new=new: Load(new, list(idx))) for b, new in self.buffers.items()})
        return substitute(e, {}, None, loads) if loads else e

    @staticmethod
    def _has_threads(s: Stmt) -> bool:
        return any(isinstance(x, For) and x.kind.startswith("threadIdx") for x, _ in walk_stmts(s))

    def _uses_private(self, s: Stmt) -> bool:
        return bool(buffers_used(s) & set(self.private))

    def _writes_private(self, s: Stmt) -> bool:
        return any(isinstance(x, (Store, Accumulate)) and x.buffer in self.private for x, _ in walk_stmts(s))

    def _every_thread(self, s: Stmt) -> Stmt:
        """Block code without thread loops that reads or writes per-thread registers:
        every thread runs it on its own copy."""
        tvars = {}
        for a in self.axes:
            self.fresh += 1
            tvars[a] = Var(f"emu_t{a}{self.fresh}")
        body = self.stmt(s, tvars)
        for a in reversed(self.axes):
            body = For(tvars[a], self.threads[a], body)
        return body
