"""mlc's scheduled loop nests out as MLIR: ``to_mlir(..., level="loop")``.

The graph is compiled as ``mlc.compile`` compiles it (fusion, the schedule rules or
the tuning database, the loop passes, the memory plan); each kernel becomes a
``func.func`` on ``memref``s (its inputs, then outputs, then scratch buffers) whose
loops are ``scf.for`` (``serial``, and ``vector``/``unroll`` loops, as plain scalar
code: the loop order and tiling are kept, the vector width and unrolling are the
backend's to redo) or ``scf.parallel`` (``parallel``), with ``memref.load``/``store``,
``memref.alloca`` for local buffers, ``scf.if`` for guards and ``arith``/``math`` for
the expressions. Index arithmetic is ``i64``, as in mlc, cast to ``index`` where it
addresses memory. An entry function named after the graph takes the graph's inputs
and outputs as memrefs and calls the kernels in the memory plan's order: intermediates
are views (``memref.view``) into one workspace allocation at the plan's offsets,
constants are ``memref.global``s. GPU-only statements (barriers, warp reductions,
tensor-core MMAs), runtime calls (collectives) and control-flow ops are refused.
"""
from __future__ import annotations

from ..ir import expr as E
from ..ir import loop as L
from ..ir import types as T
from ..ir.graph import Graph
from .mlir import MlirExportError, _Scalar, _x


class _Kernel:
    """One loop Func as a func.func on memrefs."""

    def __init__(self, x, func: L.Func):
        self.x = x
        self.func = func
        self.vars: dict[int, object] = {}     # id(Var) -> i64 SSA value
        self.bufs: dict[int, object] = {}     # id(Buffer) -> memref SSA value

    def build(self):
        x, f = self.x, self.func
        types = [x.memref_type(b.dtype, b.shape) for b in f.params]
        block = x.Block(arg_types=types)
        for b, arg in zip(f.params, block.args):
            self.bufs[id(b)] = arg
        with x.ImplicitBuilder(block):
            self.stmt(f.body)
            x.func.ReturnOp()
        return x.func.FuncOp(f.name, (types, []), x.Region(block))

    # --- statements ---------------------------------------------------------------------------

    def stmt(self, s):
        x = self.x
        if isinstance(s, L.Seq):
            for t in s.stmts:
                self.stmt(t)
        elif isinstance(s, L.For):
            lo = self.index(s.start)
            hi = self.index(E.binop("add", s.start, s.extent))
            one = x.arith.ConstantOp(x.IntegerAttr(1, x.IndexType()), x.IndexType()).result
            body = x.Block(arg_types=[x.IndexType()])
            with x.ImplicitBuilder(body):
                self.vars[id(s.var)] = x.arith.IndexCastOp(body.args[0], x.IntegerType(64)).result
                self.stmt(s.body)
                if s.kind == "parallel":
                    x.scf.ReduceOp()
                else:
                    x.scf.YieldOp()
            if s.kind == "parallel":
                x.scf.ParallelOp([lo], [hi], [one], x.Region(body))
            else:
                x.scf.ForOp(lo, hi, one, [], body)
        elif isinstance(s, L.Store):
            v = self.expr(s.value)
            x.memref.StoreOp.get(v, self.buf(s.buffer), [self.index(i) for i in s.indices])
        elif isinstance(s, L.Alloc):
            b = s.buffer
            self.bufs[id(b)] = x.memref.AllocaOp.get(x.elem_type(b.dtype), shape=list(b.shape)).memref
            self.stmt(s.body)
        elif isinstance(s, L.If):
            c = self.expr(s.cond)
            then = x.Block()
            with x.ImplicitBuilder(then):
                self.stmt(s.then)
                x.scf.YieldOp()
            orelse = None
            if s.orelse is not None:
                ob = x.Block()
                with x.ImplicitBuilder(ob):
                    self.stmt(s.orelse)
                    x.scf.YieldOp()
                orelse = x.Region(ob)
            x.scf.IfOp(c, [], x.Region(then), orelse)
        else:
            raise MlirExportError(f"kernel @{self.func.name}: {type(s).__name__} statements have no scf/memref "
                                  f"export")

    def buf(self, b):
        try:
            return self.bufs[id(b)]
        except KeyError:
            raise MlirExportError(f"kernel @{self.func.name} uses {b.name} outside its scope") from None

    def index(self, e):
        x = self.x
        if isinstance(e, E.Const):
            return x.arith.ConstantOp(x.IntegerAttr(int(e.value), x.IndexType()), x.IndexType()).result
        return x.arith.IndexCastOp(self.expr(e), x.IndexType()).result

    # --- expressions --------------------------------------------------------------------------

    def expr(self, e):
        x = self.x
        if isinstance(e, E.Const):
            return _Scalar(x, e.dtype).const(e.value) if not e.dtype.is_bool else \
                x.arith.ConstantOp(x.IntegerAttr(int(e.value), x.IntegerType(1)), x.IntegerType(1)).result
        if isinstance(e, E.Var):
            try:
                return self.vars[id(e)]
            except KeyError:
                raise MlirExportError(f"kernel @{self.func.name}: loop variable {e.name} is not in scope") from None
        if isinstance(e, E.Load):
            return x.memref.LoadOp.get(self.buf(e.source), [self.index(i) for i in e.indices]).res
        if isinstance(e, E.Cast):
            return _Scalar(x, e.value.dtype).cast(self.expr(e.value), e.value.dtype, e.dtype)
        if isinstance(e, E.Select):
            return x.arith.SelectOp(self.expr(e.cond), self.expr(e.a), self.expr(e.b)).result
        if isinstance(e, E.Call):
            return self.call(e.fn, e.args[0].dtype, self.expr(e.args[0]))
        if isinstance(e, E.BinOp):
            return self.binop(e.op, e.a.dtype, self.expr(e.a), self.expr(e.b))
        raise MlirExportError(f"kernel @{self.func.name}: cannot export {type(e).__name__}")

    def binop(self, op: str, dt: T.DType, a, b):
        x, ar = self.x, self.x.arith
        s = _Scalar(x, dt)
        if op in ("lt", "le", "gt", "ge", "eq"):
            return s.cmp(op, a, b)
        if op == "ne":
            return (ar.CmpfOp(a, b, "une") if dt.is_float else ar.CmpiOp(a, b, "ne")).result
        if dt.is_float:
            if op in ("add", "sub", "mul", "div", "max", "min", "pow"):
                return s.bin(op, a, b)
            if op == "floordiv":
                return s.un("floor", s.bin("div", a, b))
            raise MlirExportError(f"kernel @{self.func.name}: float op {op}")
        if op in ("and", "bitand") or (dt.is_bool and op == "min"):
            return ar.AndIOp(a, b).result
        if op in ("or", "bitor") or (dt.is_bool and op == "max"):
            return ar.OrIOp(a, b).result
        u = dt.kind != "int"
        simple = {"add": ar.AddiOp, "sub": ar.SubiOp, "mul": ar.MuliOp, "xor": ar.XOrIOp, "shr": ar.ShRUIOp,
                  "shl": ar.ShLIOp, "sar": ar.ShRSIOp,
                  "floordiv": ar.DivUIOp if u else ar.DivSIOp, "div": ar.DivUIOp if u else ar.DivSIOp,
                  "mod": ar.RemUIOp if u else ar.RemSIOp}
        if op in simple:
            return simple[op](a, b).result
        if op in ("max", "min"):
            return s.bin(op, a, b)
        raise MlirExportError(f"kernel @{self.func.name}: integer op {op}")

    def call(self, fn: str, dt: T.DType, a):
        x = self.x
        s = _Scalar(x, dt)
        if fn == "not":
            return x.arith.XOrIOp(a, s.const(1) if dt.is_bool else s.const(-1)).result
        if fn == "neg":
            return s.neg(a)
        if fn == "abs" and not dt.is_float:
            if dt.kind == "uint":
                return a
            return s.select(s.cmp("lt", a, s.const(0)), s.neg(a), a)
        if fn in ("exp", "log", "sqrt", "sin", "cos", "floor", "ceil", "round", "abs", "tanh", "erf", "acos",
                  "asin", "atan") and dt.is_float:
            return s.un(fn, a)
        raise MlirExportError(f"kernel @{self.func.name}: function {fn} on {dt}")


def compiled(graph: Graph, target=None):
    """``graph`` compiled up to its memory plan (no machine code): mlc's ``Compiled``."""
    from .. import codegen
    from ..driver import Compiled
    from ..passes.manager import PassManager
    from ..target import Target
    with codegen.LOCK:
        return Compiled(graph, Target.get(target or "host"), PassManager())


def loop_module(graph: Graph, target=None, compiled_graph=None):
    """The compiled, scheduled kernels of ``graph`` and an entry calling them, as an xDSL
    ModuleOp (see the module docstring)."""
    from ..ir.plan import ControlCall
    x = _x()
    c = compiled_graph or compiled(graph, target)
    if any(isinstance(call, ControlCall) for call in c.plan.calls):
        raise MlirExportError(f"@{graph.name} has control flow (scan, while_loop, cond), which the loop-level "
                              f"MLIR export does not write yet")
    funcs = [_Kernel(x, f).build() for f in c.funcs]
    ins = [v.type for v in c.lowered.graph.inputs]
    outs = [v.type for v in c.lowered.outputs]
    types = [x.memref_type(t.dtype, t.shape) for t in ins + outs]
    block = x.Block(arg_types=types)
    globals_ = {}
    with x.ImplicitBuilder(block):
        arena = None
        if c.plan.workspace_bytes:
            arena = x.memref.AllocOp([], [], x.MemRefType(x.IntegerType(8), [c.plan.workspace_bytes])).memref
        for call in c.plan.calls:
            args = []
            for b, slot in zip(call.func.params, call.args):
                want = x.memref_type(b.dtype, b.shape)
                if slot.space == "workspace":
                    off = x.arith.ConstantOp(x.IntegerAttr(slot.index, x.IndexType()), x.IndexType()).result
                    args.append(x.memref.ViewOp(arena, off, [], want).result)
                    continue
                if slot.space == "param":
                    data = c.lowered.param_data[slot.index]
                    name = f"__mlc_param{slot.index}"
                    pt = x.memref_type(T.dtype(data.dtype), data.shape)
                    globals_[name] = (pt, data)
                    v, have = x.memref.GetGlobalOp(name, pt).memref, data.shape
                else:
                    k = slot.index if slot.space == "input" else len(ins) + slot.index
                    v, have = block.args[k], (ins + outs)[k].shape
                if tuple(have) != tuple(b.shape):   # a reshape the plan made a view of the same bytes
                    strides = [int(s) for s in _strides(b.shape)]
                    v = x.memref.ReinterpretCastOp(v, [], [], [], [0], list(b.shape), strides, want).result
                args.append(v)
            x.func.CallOp(call.func.name, args, [])
        if arena is not None:
            x.memref.DeallocOp.get(arena)
        x.func.ReturnOp()
    entry = x.func.FuncOp(graph.name, (types, []), x.Region(block))
    globals_ops = [x.memref.GlobalOp.get(x.StringAttr(name), pt, x.dense(data, x.tensor_type(T.dtype(data.dtype),
                                                                                             data.shape)),
                                         constant=x.UnitAttr(), alignment=64)
                   for name, (pt, data) in globals_.items()]
    mod = x.ModuleOp([*globals_ops, *funcs, entry])
    mod.verify()
    return mod


def _strides(shape):
    out, acc = [], 1
    for d in reversed(shape):
        out.append(acc)
        acc *= d
    return list(reversed(out))
