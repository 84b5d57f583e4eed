"""mlc's scheduled loop nests out as MLIR: ``to_mlir(..., level="loop")``.

The graph is compiled as ``mlc.compile`` compiles it (fusion, the schedule rules or
the tuning database, the loop passes, the memory plan); each kernel becomes a
``func.func`` on ``memref``s (its inputs, then outputs, then scratch buffers) whose
loops are ``scf.for`` (``serial``, ``unroll``: the loop order and tiling are kept, the
unrolling is the backend's to redo) or ``scf.parallel`` (``parallel``); a ``vector``
loop whose stores and loads move one element per lane along the last axis becomes
``vector.load``/``vector.store``/``vector.broadcast`` and arithmetic on vectors (any
other stays a scalar ``scf.for``), with ``memref.load``/``store``,
``memref.alloca`` for local buffers, ``scf.if`` for guards and ``arith``/``math`` for
the expressions. Index arithmetic is ``i64``, as in mlc, cast to ``index`` where it
addresses memory. An entry function named after the graph takes the graph's inputs
and outputs as memrefs and calls the kernels in the memory plan's order: intermediates
are views (``memref.view``) into one workspace allocation at the plan's offsets,
constants are ``memref.global``s. GPU-only statements (barriers, warp reductions,
tensor-core MMAs), runtime calls (collectives) and control-flow ops are refused.
"""
from __future__ import annotations

import numpy as np

from ..ir import expr as E
from ..ir import loop as L
from ..ir import types as T
from ..ir.graph import Graph
from .mlir import MlirExportError, _name_args, _Scalar, _x


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
        _name_args(block, [b.name for b in f.params])
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
        elif isinstance(s, L.For) and s.kind in L.GPU_KINDS:
            raise MlirExportError(f"kernel @{self.func.name}: loop {s.var.name} is bound to {s.kind}; the loop-level "
                                  f"MLIR export writes CPU schedules (compile for a cpu target)")
        elif isinstance(s, L.For) and s.kind == "vector" and self.vectorizable(s):
            self.vector_loop(s)
        elif isinstance(s, L.For):
            lo = self.index(s.start)
            hi = self.index(E.binop("add", s.start, s.extent))
            one = x.arith.ConstantOp(x.IntegerAttr(1, x.IndexType()), x.IndexType()).result
            body = x.Block(arg_types=[x.IndexType()])
            _name_args(body, [s.var.name])
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

    # --- vector loops ------------------------------------------------------------------------

    def vectorizable(self, s) -> bool:
        """Whether vector loop ``s`` becomes ``vector`` ops: its body is stores whose
        address moves by one element per lane along the last axis, whose values read
        such addresses or lane-invariant ones, with arithmetic and float math between."""
        var = s.var
        if not isinstance(s.extent, E.Const) or s.extent.value < 2:
            return False
        stores = s.body.stmts if isinstance(s.body, L.Seq) else [s.body]
        return all(isinstance(t, L.Store) and _contiguous(t.indices, var) and self._vector_ok(t.value, var)
                   for t in stores)

    def _vector_ok(self, e, var) -> bool:
        if not E.uses_var(e, var):
            return True
        if isinstance(e, E.Var):
            return e is var
        if isinstance(e, E.Load):
            return _contiguous(e.indices, var)
        if isinstance(e, E.BinOp):
            ok = e.op in (("add", "sub", "mul", "div", "max", "min", "pow") if e.a.dtype.is_float
                          else ("add", "sub", "mul", "xor", "bitand", "bitor", "shl", "sar", "shr"))
            return ok and self._vector_ok(e.a, var) and self._vector_ok(e.b, var)
        if isinstance(e, E.Call):
            return e.dtype.is_float and e.fn in _VECTOR_MATH and self._vector_ok(e.args[0], var)
        if isinstance(e, E.Cast):
            src, dst = e.value.dtype, e.dtype
            return not src.is_bool and not dst.is_bool and (src.is_float or dst.is_float) and \
                self._vector_ok(e.value, var)
        return False

    def vector_loop(self, s):
        x = self.x
        lanes = s.extent.value
        self.vars[id(s.var)] = self.expr(s.start)   # addresses at the first lane
        stores = s.body.stmts if isinstance(s.body, L.Seq) else [s.body]
        for t in stores:
            v = self.vexpr(t.value, s.var, lanes)
            x.vector.StoreOp(v, self.buf(t.buffer), [self.index(i) for i in t.indices])

    def vexpr(self, e, var, lanes):
        x = self.x
        vt = x.VectorType(x.elem_type(e.dtype), [lanes])
        if not E.uses_var(e, var):
            return x.vector.BroadcastOp(self.expr(e), vt).vector
        if isinstance(e, E.Var):
            iota = x.arith.ConstantOp(x.DenseIntOrFPElementsAttr.from_list(vt, list(range(lanes))), vt).result
            base = x.vector.BroadcastOp(self.vars[id(var)], vt).vector
            return x.arith.AddiOp(base, iota).result
        if isinstance(e, E.Load):
            return x.vector.LoadOp(self.buf(e.source), [self.index(i) for i in e.indices], vt).result
        if isinstance(e, E.BinOp):
            a, b = self.vexpr(e.a, var, lanes), self.vexpr(e.b, var, lanes)
            return self.binop(e.op, e.a.dtype, a, b)
        if isinstance(e, E.Call):
            return self.call(e.fn, e.dtype, self.vexpr(e.args[0], var, lanes))
        if isinstance(e, E.Cast):
            v = self.vexpr(e.value, var, lanes)
            src, dst, ar = e.value.dtype, e.dtype, x.arith
            if src.is_float and dst.is_float:
                return (ar.ExtFOp if dst.bits > src.bits else ar.TruncFOp)(v, vt).result
            if src.is_float:
                return (ar.FPToUIOp if dst.kind == "uint" else ar.FPToSIOp)(v, vt).result
            return (ar.UIToFPOp if src.kind == "uint" else ar.SIToFPOp)(v, vt).result
        raise AssertionError(type(e).__name__)

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


_VECTOR_MATH = ("exp", "log", "sqrt", "sin", "cos", "floor", "ceil", "round", "abs", "tanh", "erf", "neg")


def _contiguous(indices, var) -> bool:
    """An access whose last index moves by one per lane and whose others do not move."""
    *outer, last = indices
    return all(not E.uses_var(i, var) for i in outer) and E.linear_coefficient(last, var) == 1


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
                    if data.dtype == np.bool_:   # i1 data as i8 (its hex form differs between tools), then compared
                        pt = x.memref_type(T.int8, data.shape)
                        globals_[name] = (pt, data.astype(np.int8))
                        v = _to_bool(x, x.memref.GetGlobalOp(name, pt).memref, data.shape)
                    else:
                        pt = x.memref_type(T.dtype(data.dtype), data.shape)
                        globals_[name] = (pt, data)
                        v = x.memref.GetGlobalOp(name, pt).memref
                    have = data.shape
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


def _to_bool(x, src, shape):
    """A new i1 buffer holding ``src != 0`` (an i8 buffer of ``shape``), by one flat loop."""
    n = int(np.prod(shape))
    flat8, flat1 = x.memref_type(T.int8, (n,)), x.memref_type(T.bool_, (n,))
    out = x.memref.AllocOp([], [], x.memref_type(T.bool_, shape)).memref
    a = x.memref.ReinterpretCastOp(src, [], [], [], [0], [n], [1], flat8).result
    b = x.memref.ReinterpretCastOp(out, [], [], [], [0], [n], [1], flat1).result
    idx = x.IndexType()
    c = [x.arith.ConstantOp(x.IntegerAttr(v, idx), idx).result for v in (0, n, 1)]
    body = x.Block(arg_types=[idx])
    with x.ImplicitBuilder(body):
        v = x.memref.LoadOp.get(a, [body.args[0]]).res
        zero = x.arith.ConstantOp(x.IntegerAttr(0, x.IntegerType(8)), x.IntegerType(8)).result
        x.memref.StoreOp.get(x.arith.CmpiOp(v, zero, "ne").result, b, [body.args[0]])
        x.scf.YieldOp()
    x.scf.ForOp(c[0], c[1], c[2], [], body)
    return out


def _strides(shape):
    out, acc = [], 1
    for d in reversed(shape):
        out.append(acc)
        acc *= d
    return list(reversed(out))
