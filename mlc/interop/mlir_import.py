"""MLIR in: ``from_mlir(text)`` parses a module with xDSL and imports its function on
tensors as an mlc Graph, so programs from other MLIR front ends (torch-mlir's linalg
output, ``to_mlir``'s own) compile with mlc.

What is read:

- ``func.func``, ``func.call`` (callees inlined), ``func.return``;
- ``scf.if``, ``scf.while`` and ``scf.for`` on tensors as ``cond``, ``while_loop`` and
  ``scan`` (their regions as body graphs that take what they read from outside as inputs);
- ``linalg.generic`` whose output indexing maps are projected permutations (a result may
  be the constant 0 on a unit axis; an input map may be any affine map -- windows,
  strides -- and is read by a gather), whose body uses ``arith``/``math``,
  ``linalg.index`` and ``tensor.extract`` (a gather), with parallel iterators, or
  reductions ending in one combiner (add, mul, max, min) of the accumulator, or the
  two-output argmax/argmin form;
- the named ops ``matmul``, ``batch_matmul``, ``conv_1d_ncw_fcw``, ``conv_2d_nchw_fchw``,
  ``conv_3d_ncdhw_fcdhw``, ``conv_2d_ngchw_gfchw``/``fgchw``, ``conv_2d_nhwc_hwcf``,
  ``pooling_nchw_max``/``_sum``, ``pooling_ncw_max``/``_sum``, ``transpose``,
  ``broadcast``, ``fill``, ``copy``, ``reduce`` and the elementwise
  ``add``/``sub``/``mul``/``max``/``min``/``exp``/``log``/``sqrt``/``select``;
- ``tensor`` ``empty``, ``extract``, ``extract_slice``/``insert_slice`` (static or
  run-time offsets), ``expand_shape``, ``collapse_shape``, ``reshape``, ``concat``,
  ``pad`` (a constant pad value), ``cast``;
- ``arith`` constants (dense tensors and scalars) and ``arith``/``math`` ops on tensors.

Anything else is refused: every unsupported op is listed at once with its lines in the
text.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from ..ir import types as T
from ..ir.graph import Graph
from ..ops.builder import Emitter, Sym, TraceError


class MlirImportError(ValueError):
    """The module holds something this importer does not read; the message says what and where."""


# ----------------------------------------------------------------------------- element ops

_BIN = {"arith.addf": "add", "arith.addi": "add", "arith.subf": "sub", "arith.subi": "sub",
        "arith.mulf": "mul", "arith.muli": "mul", "arith.divf": "div",
        "arith.maximumf": "maximum", "arith.maxnumf": "maximum", "arith.maxsi": "maximum", "arith.maxui": "maximum",
        "arith.minimumf": "minimum", "arith.minnumf": "minimum", "arith.minsi": "minimum", "arith.minui": "minimum",
        "arith.andi": "bitwise_and", "arith.ori": "bitwise_or", "arith.xori": "bitwise_xor",
        "arith.shli": "left_shift", "arith.shrsi": "right_shift", "arith.shrui": "right_shift",
        "math.powf": "pow"}
_UN = {"arith.negf": "neg", "math.exp": "exp", "math.log": "log", "math.tanh": "tanh", "math.sqrt": "sqrt",
       "math.rsqrt": "rsqrt", "math.erf": "erf", "math.sin": "sin", "math.cos": "cos", "math.floor": "floor",
       "math.ceil": "ceil", "math.absf": "abs", "math.absi": "abs", "math.roundeven": "round",
       "math.acos": "acos", "math.asin": "asin", "math.atan": "atan"}
_CAST = ("arith.sitofp", "arith.uitofp", "arith.fptosi", "arith.fptoui", "arith.extf", "arith.truncf",
         "arith.extsi", "arith.extui", "arith.trunci", "arith.index_cast", "arith.bitcast")
_CMP_F = {"olt": "lt", "ult": "lt", "ogt": "gt", "ugt": "gt", "oeq": "eq", "ueq": "eq", "ole": "le", "ule": "le",
          "oge": "ge", "uge": "ge", "one": "ne", "une": "ne"}
_CMP_I = {"slt": "lt", "ult": "lt", "sgt": "gt", "ugt": "gt", "eq": "eq", "sle": "le", "ule": "le",
          "sge": "ge", "uge": "ge", "ne": "ne"}
_NAMED_EW = {"linalg.add": "add", "linalg.sub": "sub", "linalg.mul": "mul", "linalg.max": "maximum",
             "linalg.min": "minimum", "linalg.exp": "exp", "linalg.log": "log", "linalg.sqrt": "sqrt",
             "linalg.copy": "copy", "linalg.select": "where"}
_CONVS = ("linalg.conv_1d_ncw_fcw", "linalg.conv_2d_nchw_fchw", "linalg.conv_3d_ncdhw_fcdhw",
          "linalg.conv_2d_ngchw_gfchw", "linalg.conv_2d_ngchw_fgchw", "linalg.conv_2d_nhwc_hwcf")
_POOLS = ("linalg.pooling_nchw_max", "linalg.pooling_nchw_sum", "linalg.pooling_ncw_max", "linalg.pooling_ncw_sum")
_COMBINE = {"add": "sum", "mul": "prod", "maximum": "max", "minimum": "min"}
_IDENTITY = {"add": 0.0, "mul": 1.0}

_BODY_OPS = set(_BIN) | set(_UN) | set(_CAST) | {"arith.constant", "arith.select", "arith.cmpf", "arith.cmpi",
                                                 "linalg.index", "linalg.yield", "math.log1p", "tensor.yield",
                                                 "tensor.extract"}
_TOP_OPS = {"func.func", "func.call", "func.return", "arith.constant", "linalg.generic", "linalg.matmul",
            "linalg.batch_matmul", *_CONVS, *_POOLS, "linalg.transpose", "linalg.broadcast",
            "linalg.fill", "linalg.reduce", "tensor.empty", "tensor.extract_slice", "tensor.insert_slice",
            "tensor.expand_shape", "tensor.collapse_shape", "tensor.pad", "tensor.cast", "tensor.reshape",
            "tensor.concat", "tensor.extract", "scf.if", "scf.while", "scf.for", "scf.yield", "scf.condition",
            "builtin.module"} | set(_NAMED_EW) | set(_BIN) | set(_UN) | set(_CAST) | {"arith.select",
                                                                                      "arith.cmpf", "arith.cmpi"}
# a named op's body is implied by its name: its own ops are not checked
_OPAQUE_BODIES = {"linalg.matmul", "linalg.batch_matmul", *_CONVS, *_POOLS, "linalg.transpose", "linalg.broadcast",
                  "linalg.fill", "linalg.copy", "linalg.reduce"} | set(_NAMED_EW)


def _dtype(ty) -> T.DType:
    from xdsl.dialects.builtin import Float16Type, Float32Type, Float64Type, IndexType, IntegerType
    if isinstance(ty, Float32Type):
        return T.float32
    if isinstance(ty, Float64Type):
        return T.float64
    if isinstance(ty, Float16Type):
        return T.float16
    if isinstance(ty, IndexType):
        return T.int64
    if isinstance(ty, IntegerType):
        w = ty.width.data
        if w == 1:
            return T.bool_
        return {8: T.int8, 16: T.int16, 32: T.int32, 64: T.int64}[w]
    raise MlirImportError(f"element type {ty} is not supported")


def _ttype(ty) -> T.TensorType:
    from xdsl.dialects.builtin import TensorType
    if isinstance(ty, TensorType):
        shape = tuple(ty.get_shape())
        if any(s < 0 for s in shape):
            raise MlirImportError(f"{ty}: dynamic shapes are not supported (mlc compiles static shapes)")
        return T.TensorType(shape, _dtype(ty.get_element_type()))
    return T.TensorType((), _dtype(ty))


class _Empty:
    """A ``tensor.empty``: no data until something reads it (then zeros)."""

    def __init__(self, ttype: T.TensorType):
        self.type = ttype


class _Importer:
    def __init__(self, module, text: str):
        self.module = module
        self.text = text
        self.funcs = {}
        for op in module.body.block.ops:
            if op.name == "func.func":
                self.funcs[op.sym_name.data] = op
        self.em: Emitter | None = None
        self.fills: dict[int, float] = {}   # id(Sym) of a linalg.fill result -> its value

    # --- values -------------------------------------------------------------------------------

    def where(self, op) -> str:
        return _locate(self.text, op.name)

    def fail(self, op, why: str):
        raise MlirImportError(f"{op.name}{self.where(op)}: {why}")

    def val(self, env, v):
        x = env[v]
        if isinstance(x, _Empty):   # read: zeros
            return self._constant(np.zeros(x.type.shape, x.type.dtype.np))
        return x

    def const_array(self, attr, ty) -> np.ndarray:
        from xdsl.dialects.builtin import DenseIntOrFPElementsAttr, FloatAttr, IntegerAttr
        tt = _ttype(ty)
        if isinstance(attr, DenseIntOrFPElementsAttr):
            vals = attr.get_values()
            arr = np.array(vals, dtype=tt.dtype.np)
            if arr.size == 1 and tt.size != 1:
                arr = np.full(tt.shape, arr.reshape(-1)[0], tt.dtype.np)
            return arr.reshape(tt.shape)
        if isinstance(attr, (FloatAttr, IntegerAttr)):
            return np.array(attr.value.data, dtype=tt.dtype.np)
        raise MlirImportError(f"arith.constant {attr}: only dense and scalar constants are read")

    def _constant(self, arr: np.ndarray) -> Sym:
        arr = np.array(arr)
        return self.em.wrap(self.em.constant(arr))

    def reshape(self, s: Sym, shape) -> Sym:
        shape = tuple(int(d) for d in shape)
        return s if tuple(s.shape) == shape else self.em("reshape", s, shape=shape)

    # --- functions ----------------------------------------------------------------------------

    def function(self, fn, args: list) -> list:
        env = dict(zip(fn.body.block.args, args))
        for op in fn.body.block.ops:
            if op.name == "func.return":
                return [env[v] for v in op.operands]
            try:
                results = self.op(op, env)
            except TraceError as e:   # an op's type rule refused what the MLIR op says
                raise MlirImportError(f"{op.name}{self.where(op)}: {e}") from None
            env.update(zip(op.results, results))
        raise MlirImportError(f"func @{fn.sym_name.data} has no func.return")

    def op(self, op, env) -> list:
        name = op.name
        em = self.em
        if name == "arith.constant":
            return [self._constant(self.const_array(op.value, op.result.type))]
        if name == "func.call":
            callee = self.funcs.get(op.callee.root_reference.data)
            if callee is None or not callee.body.blocks:
                self.fail(op, f"callee @{op.callee.root_reference.data} has no body in this module")
            return self.function(callee, [env[v] for v in op.operands])
        if name in _BIN or name in _UN or name in _CAST or name in ("arith.select", "arith.cmpf", "arith.cmpi"):
            return [self.scalar_op(op, env)]
        if name == "tensor.empty":
            return [_Empty(_ttype(op.tensor.type))]
        if name == "tensor.cast":
            return [self.val(env, op.operands[0])]
        if name in ("tensor.expand_shape", "tensor.collapse_shape", "tensor.reshape"):
            return [self.reshape(self.val(env, op.operands[0]), _ttype(op.results[0].type).shape)]
        if name == "tensor.extract_slice":
            return [self.extract_slice(op, env)]
        if name == "tensor.concat":
            return [em("concatenate", [self.val(env, v) for v in op.inputs], axis=op.dim.value.data)]
        if name == "tensor.insert_slice":
            return [self.insert_slice(op, env)]
        if name == "tensor.pad":
            return [self.pad(op, env)]
        if name == "linalg.fill":
            value = self.val(env, op.inputs[0])
            tt = _ttype(op.outputs[0].type)
            r = em("broadcast_to", em("cast", value, dtype=tt.dtype), shape=tt.shape)
            c = _scalar_value(value)
            if c is not None:
                self.fills[id(r)] = c
            return [r]
        if name == "linalg.generic":
            return self.generic(op, env)
        if name in ("scf.if", "scf.while", "scf.for"):
            return self.scf(op, env)
        if name == "tensor.extract":   # an element (a predicate, a loop's bound) as a 0-d tensor
            return [self.extract(op, env, full_shape=())]
        if name in _NAMED_EW:
            ins = [self.val(env, v) for v in op.inputs]
            return [em(_NAMED_EW[name], *ins)]
        if name in ("linalg.matmul", "linalg.batch_matmul"):
            a, b = (self.val(env, v) for v in op.inputs)
            return [self.accumulate(em("matmul", a, b), op, env, "add")]
        if name in _CONVS:
            return [self.conv(op, env)]
        if name in _POOLS:
            return [self.pool(op, env)]
        if name == "linalg.transpose":
            perm = [int(p) for p in op.permutation.get_values()]
            return [em("transpose", self.val(env, op.inputs[0]), axes=perm)]
        if name == "linalg.broadcast":
            x = self.val(env, op.input)
            tt = _ttype(op.init.type)
            added = sorted(int(d) for d in op.dimensions.get_values())
            kept = [d for d in range(len(tt.shape)) if d not in added]
            shaped = self.reshape(x, [tt.shape[d] if d in kept else 1 for d in range(len(tt.shape))])
            return [em("broadcast_to", shaped, shape=tt.shape)]
        if name == "linalg.reduce":
            return [self.reduce_op(op, env)]
        self.fail(op, "not supported")

    # --- element ops on tensors (and on the broadcast operands of a linalg body) ---------------

    def scalar_op(self, op, env, args=None):
        em = self.em
        name = op.name
        xs = args if args is not None else [self.val(env, v) for v in op.operands]
        if name in _BIN:
            return em(_BIN[name], *xs)
        if name in _UN:
            return em(_UN[name], xs[0])
        if name == "math.log1p":
            return em("log", em("add", xs[0], 1.0))
        if name in _CAST:
            return em("cast", xs[0], dtype=_dtype(_elem(op.results[0].type)))
        if name == "arith.select":
            return em("where", *xs)
        if name in ("arith.cmpf", "arith.cmpi"):
            pred = _predicate(op)
            kind = (_CMP_F if name == "arith.cmpf" else _CMP_I).get(pred)
            if kind is None:
                self.fail(op, f"predicate {pred} is not supported")
            a, b = xs
            if kind == "lt":
                return em("less", a, b)
            if kind == "gt":
                return em("greater", a, b)
            if kind == "eq":
                return em("equal", a, b)
            if kind == "ne":
                return em("bitwise_not", em("equal", a, b))
            if kind == "le":
                return em("bitwise_not", em("greater", a, b))
            return em("bitwise_not", em("less", a, b))
        self.fail(op, "not supported in a linalg body")

    # --- linalg -------------------------------------------------------------------------------

    def accumulate(self, r: Sym, op, env, kind: str) -> Sym:
        """``r`` combined with the op's init (its outs, or the init value ``op``) by ``kind``,
        unless the init is that combiner's identity (a fill) or an empty tensor."""
        init = env[op.outputs[0] if hasattr(op, "outputs") else op]
        if isinstance(init, _Empty):
            return r
        c = self.fills.get(id(init))
        ident = _IDENTITY.get(kind, -np.inf if kind == "maximum" else np.inf)
        if c is not None and c == ident:
            return r
        return self.em(kind, init, r)

    def generic(self, op, env) -> list:
        from xdsl.ir.affine import AffineConstantExpr, AffineDimExpr
        em = self.em
        maps = [m.data for m in op.indexing_maps.data]
        n = maps[0].num_dims
        iters = [str(it.data) for it in op.iterator_types.data]
        red = [d for d, it in enumerate(iters) if it == "reduction"]
        if any(it not in ("parallel", "reduction") for it in iters):
            self.fail(op, f"iterator types {iters}")
        operands = list(op.inputs) + list(op.outputs)
        sizes = [None] * n
        def projected(m, shape) -> bool:
            return all(isinstance(r, AffineDimExpr) or (isinstance(r, AffineConstantExpr) and r.value == 0
                                                        and shape[k] == 1) for k, r in enumerate(m.results))

        for i, (v, m) in enumerate(zip(operands, maps)):
            shape = _ttype(v.type).shape
            if not projected(m, shape):
                if i >= len(op.inputs):
                    self.fail(op, f"output indexing map {m} is not a projected permutation")
                continue   # an input read through general affine indices (a window, a stride): gathered
            for k, r in enumerate(m.results):
                if isinstance(r, AffineDimExpr):
                    sizes[r.position] = shape[k]
        if any(s is None for s in sizes):
            self.fail(op, "a loop's range is not given by any operand")

        def affine(e) -> Sym | int:
            """An affine expression of the loop indices, as an int64 tensor over the loop space."""
            if isinstance(e, AffineConstantExpr):
                return e.value
            if isinstance(e, AffineDimExpr):
                shape = [1] * n
                shape[e.position] = sizes[e.position]
                return self._constant(np.arange(sizes[e.position], dtype=np.int64).reshape(shape))
            a, b = affine(e.lhs), affine(e.rhs)
            kind = e.kind.name
            if kind == "Add":
                return em("add", a, b) if isinstance(a, Sym) or isinstance(b, Sym) else a + b
            if kind == "Mul":
                return em("mul", a, b) if isinstance(a, Sym) or isinstance(b, Sym) else a * b
            q = em("cast", em("floor", em("div", em("cast", a, dtype=T.float64), float(b))), dtype=T.int64)
            if kind == "FloorDiv":
                return q
            if kind == "Mod":
                return em("sub", a, em("mul", q, b))
            return em("cast", em("ceil", em("div", em("cast", a, dtype=T.float64), float(b))), dtype=T.int64)

        def to_loops(x: Sym, m) -> Sym:
            if not projected(m, x.shape):   # gather at the linear index the map computes
                lin, stride = 0, 1
                for r, d in reversed(list(zip(m.results, x.shape))):
                    term = affine(r)
                    lin = em("add", em("mul", term, stride), lin) if isinstance(term, Sym) else \
                        (em("add", lin, term * stride) if isinstance(lin, Sym) else lin + term * stride)
                    stride *= d
                flat = self.reshape(x, (int(np.prod(x.shape)),))
                if not isinstance(lin, Sym):
                    lin = self._constant(np.array(lin, np.int64))
                return em("gather", flat, em("broadcast_to", lin, shape=tuple(sizes)), axis=0)
            dims = [r.position for r in m.results if isinstance(r, AffineDimExpr)]
            x = self.reshape(x, [sizes[d] for d in dims])
            order = sorted(range(len(dims)), key=lambda i: dims[i])
            if order != list(range(len(dims))):
                x = em("transpose", x, axes=order)
            present = set(dims)
            return self.reshape(x, [sizes[d] if d in present else 1 for d in range(n)])

        body = op.body.block
        benv = dict(env)
        n_in = len(op.inputs)
        for arg, v, m in zip(body.args[:n_in], op.inputs, maps):
            benv[arg] = to_loops(self.val(env, v), m)
        accs = body.args[n_in:]
        ops = list(body.ops)
        yielded = list(ops[-1].operands)
        combiners = {}
        if red and len(op.outputs) == 2 and len(red) == 1 and n_in == 1:
            return self.arg_reduce(op, env, benv[body.args[0]], red[0], maps, sizes)
        if red:
            if len(op.outputs) != 1:
                self.fail(op, "a reduction with several outputs other than argmax/argmin is not supported")
            y = yielded[0].owner
            kind = _BIN.get(getattr(y, "name", None))
            if kind not in _COMBINE or accs[0] not in y.operands:
                self.fail(op, "a reduction body must end in add, mul, max or min of the accumulator")
            other = y.operands[1] if y.operands[0] is accs[0] else y.operands[0]
            combiners[y] = (kind, other)
        else:
            for acc, v, m in zip(accs, op.outputs, maps[n_in:]):
                if acc.uses:
                    benv[acc] = to_loops(self.val(env, v), m)
        for b in ops[:-1]:
            if b in combiners:
                continue
            if b.name == "arith.constant":
                benv[b.results[0]] = self._constant(self.const_array(b.value, b.results[0].type))
            elif b.name == "linalg.index":
                d = b.dim.value.data
                shape = [1] * n
                shape[d] = sizes[d]
                benv[b.results[0]] = self._constant(np.arange(sizes[d], dtype=np.int64).reshape(shape))
            elif b.name == "tensor.extract":
                benv[b.results[0]] = self.extract(b, benv, full_shape=tuple(sizes))
            else:
                if red and accs[0] in b.operands:
                    self.fail(op, "the accumulator is used before the reduction's combiner")
                benv[b.results[0]] = self.scalar_op(b, benv, [benv[v] for v in b.operands])
        full = tuple(sizes)
        results = []
        for i, (v, m) in enumerate(zip(op.outputs, maps[n_in:])):
            tt = _ttype(v.type)
            if red:
                kind, other = combiners[yielded[0].owner]
                e = em("broadcast_to", em("cast", benv[other], dtype=tt.dtype), shape=full)
                r = em(_COMBINE[kind], e, axis=tuple(red), keepdims=False)
                par = [d for d in range(n) if d not in red]
            else:
                r = em("broadcast_to", em("cast", benv[yielded[i]], dtype=tt.dtype), shape=full)
                par = list(range(n))
            dims = [rr.position for rr in m.results if isinstance(rr, AffineDimExpr)]
            if sorted(dims) != par:
                self.fail(op, f"output indexing map {m} does not cover the parallel loops")
            order = [par.index(d) for d in dims]
            if order != list(range(len(order))):
                r = em("transpose", r, axes=order)
            r = self.reshape(r, tt.shape)
            if red:
                r = self.accumulate(r, op, env, kind)
            results.append(r)
        return results

    def arg_reduce(self, op, env, xin: Sym, axis: int, maps, sizes) -> list:
        """The argmax/argmin form (torch-mlir's too): two outputs, the running extreme
        ``select(cmp(in, acc), in, acc)`` and its index ``select(cmp(in, acc), i, acc_i)``
        with ``i`` from ``linalg.index`` of the reduced loop."""
        from xdsl.ir.affine import AffineDimExpr
        em = self.em
        body = op.body.block
        e, acc, acc_i = body.args
        yv, yi = (v.owner for v in list(body.ops)[-1].operands)
        ok = getattr(yv, "name", None) == "arith.select" and getattr(yi, "name", None) == "arith.select" \
            and yv.cond is yi.cond and yv.lhs is e and yv.rhs is acc and yi.rhs is acc_i
        cmp = yv.cond.owner if ok else None
        ok = ok and getattr(cmp, "name", None) in ("arith.cmpf", "arith.cmpi") and cmp.lhs is e and cmp.rhs is acc
        i = yi.lhs.owner if ok else None
        while ok and getattr(i, "name", None) in _CAST:
            i = i.operands[0].owner
        ok = ok and getattr(i, "name", None) == "linalg.index" and i.dim.value.data == axis
        kind = (_CMP_F if cmp.name == "arith.cmpf" else _CMP_I).get(_predicate(cmp)) if ok else None
        if kind not in ("gt", "ge", "lt", "le"):
            self.fail(op, "a reduction with two outputs must be the argmax/argmin form")
        name = "argmax" if kind in ("gt", "ge") else "argmin"
        idx = em(name, xin, axis=axis, keepdims=False, select_last_index=kind in ("ge", "le"))
        val = em("max" if name == "argmax" else "min", xin, axis=axis, keepdims=False)
        par = [d for d in range(len(sizes)) if d != axis]
        out = []
        for r, v, m in zip((val, idx), op.outputs, maps[1:]):
            tt = _ttype(v.type)
            dims = [rr.position for rr in m.results if isinstance(rr, AffineDimExpr)]
            order = [par.index(d) for d in dims]
            if order != list(range(len(order))):
                r = em("transpose", r, axes=order)
            out.append(em("cast", self.reshape(r, tt.shape), dtype=tt.dtype))
        return out

    def extract(self, b, benv, full_shape) -> Sym:
        """``tensor.extract`` in a linalg body (a gather, as torch-mlir writes embeddings):
        the flattened tensor gathered at the linear index, over the loop space."""
        em = self.em
        data = self.val(benv, b.tensor)
        if any(v not in benv for v in b.indices):
            self.fail(b, "indices must come from the body")
        stride, lin = 1, None
        for v, d in reversed(list(zip(b.indices, data.shape))):
            term = em("mul", em("cast", benv[v], dtype=T.int64), stride) if stride != 1 else \
                em("cast", benv[v], dtype=T.int64)
            lin = term if lin is None else em("add", lin, term)
            stride *= d
        if lin is None:
            return self.reshape(data, ())
        flat = self.reshape(data, (int(np.prod(data.shape)),))
        return em("gather", flat, em("broadcast_to", lin, shape=full_shape), axis=0)

    def reduce_op(self, op, env) -> Sym:
        body = list(op.region.block.ops)
        kind = _BIN.get(body[0].name) if len(body) == 2 else None
        if kind not in _COMBINE:
            self.fail(op, "a linalg.reduce body must be one add, mul, max or min")
        x = self.val(env, op.input)
        dims = tuple(int(d) for d in op.dimensions.get_values())
        r = self.em(_COMBINE[kind], x, axis=dims, keepdims=False)
        return self.accumulate(r, op.init, env, kind)

    def conv(self, op, env) -> Sym:
        em = self.em
        x, w = (self.val(env, v) for v in op.inputs)
        s = [int(v) for v in op.strides.get_values()]
        d = [int(v) for v in op.dilations.get_values()]
        if op.name in ("linalg.conv_1d_ncw_fcw", "linalg.conv_2d_nchw_fchw", "linalg.conv_3d_ncdhw_fcdhw"):
            r = em("conv", x, w, strides=s, dilations=d)
        elif op.name == "linalg.conv_2d_nhwc_hwcf":   # channels last: through NCHW and back
            r = em("conv", em("transpose", x, axes=[0, 3, 1, 2]), em("transpose", w, axes=[3, 2, 0, 1]),
                   strides=s, dilations=d)
            r = em("transpose", r, axes=[0, 2, 3, 1])
        else:   # (N, G, C, H, W) x (G, F, C, kh, kw) -> (N, G, F, oh, ow); fgchw: (F, G, C, kh, kw)
            if op.name == "linalg.conv_2d_ngchw_fgchw":
                w = em("transpose", w, axes=[1, 0, 2, 3, 4])
            N, G, C, H, W = x.shape
            _, F, _, kh, kw = w.shape
            r = em("conv", self.reshape(x, (N, G * C, H, W)), self.reshape(w, (G * F, C, kh, kw)),
                   strides=s, dilations=d, group=G)
            r = self.reshape(r, _ttype(op.outputs[0].type).shape)
        return self.accumulate(r, op, env, "add")

    def pool(self, op, env) -> Sym:
        em = self.em
        x = self.val(env, op.inputs[0])
        k = list(_ttype(op.inputs[1].type).shape)
        s = [int(v) for v in op.strides.get_values()]
        d = [int(v) for v in op.dilations.get_values()]
        if op.name.endswith("_max"):
            return self.accumulate(em("max_pool", x, kernel_shape=k, strides=s, dilations=d), op, env, "maximum")
        if any(v != 1 for v in d):
            self.fail(op, "dilated sum pooling is not supported")
        r = em("mul", em("avg_pool", x, kernel_shape=k, strides=s, count_include_pad=True), float(np.prod(k)))
        return self.accumulate(r, op, env, "add")

    # --- tensor -------------------------------------------------------------------------------

    def offsets(self, op, env) -> list:
        """The slice's offsets: ints, or 0-d int64 Syms where they are dynamic."""
        from xdsl.dialects.builtin import DYNAMIC_INDEX
        if op.sizes or op.strides:
            self.fail(op, "dynamic sizes or strides")
        dyn = iter(op.offsets)
        return [self.em("cast", self.val(env, next(dyn)), dtype=T.int64) if o == DYNAMIC_INDEX else int(o)
                for o in op.static_offsets.get_values()]

    def extract_slice(self, op, env) -> Sym:
        x = self.val(env, op.source)
        offs = self.offsets(op, env)
        sizes = [int(v) for v in op.static_sizes.get_values()]
        steps = [int(v) for v in op.static_strides.get_values()]
        if all(isinstance(o, int) for o in offs):
            ends = [o + (n - 1) * st + 1 for o, n, st in zip(offs, sizes, steps)]
            r = self.em("slice", x, begin=offs, end=ends, step=steps)
        else:   # a slice at a run-time position (a loop's step): a gather at the linear index
            em, lin, stride = self.em, 0, 1
            for k in reversed(range(len(sizes))):
                shape = [1] * len(sizes)
                shape[k] = sizes[k]
                pos = em("add", self._constant(np.arange(sizes[k], dtype=np.int64).reshape(shape) * steps[k]),
                         offs[k])
                lin = em("add", em("mul", pos, stride), lin)
                stride *= x.shape[k]
            r = em("gather", self.reshape(x, (int(np.prod(x.shape)),)), em("broadcast_to", lin, shape=tuple(sizes)),
                   axis=0)
        return self.reshape(r, _ttype(op.results[0].type).shape)

    def insert_slice(self, op, env) -> Sym:
        em = self.em
        steps = [int(v) for v in op.static_strides.get_values()]
        if any(st != 1 for st in steps):
            self.fail(op, "strided insert_slice is not supported")
        offs = self.offsets(op, env)
        dest = self.val(env, op.dest)
        tt = _ttype(op.dest.type)
        sizes = [int(v) for v in op.static_sizes.get_values()]
        src = self.reshape(self.val(env, op.source), sizes)
        if not all(isinstance(o, int) for o in offs):   # where each position falls in the slice, gathered
            inside, lin, stride = None, 0, 1
            for k in reversed(range(len(sizes))):
                shape = [1] * len(sizes)
                shape[k] = tt.shape[k]
                q = em("sub", self._constant(np.arange(tt.shape[k], dtype=np.int64).reshape(shape)), offs[k])
                ok = em("bitwise_and", em("greater", q, -1), em("less", q, sizes[k]))
                inside = ok if inside is None else em("bitwise_and", inside, ok)
                lin = em("add", em("mul", em("minimum", em("maximum", q, 0), sizes[k] - 1), stride), lin)
                stride *= sizes[k]
            flat = self.reshape(src, (int(np.prod(sizes)),))
            picked = em("gather", flat, em("broadcast_to", lin, shape=tt.shape), axis=0)
            return em("where", em("broadcast_to", inside, shape=tt.shape), picked, dest)
        pads = offs + [d - o - n for d, o, n in zip(tt.shape, offs, sizes)]
        padded = em("pad", src, pads=pads)
        if isinstance(env[op.dest], _Empty) or tuple(sizes) == tt.shape:
            return padded
        mask = np.zeros(tt.shape, bool)
        mask[tuple(slice(o, o + n) for o, n in zip(offs, sizes))] = True
        return em("where", self._constant(mask), padded, dest)

    # --- scf: control flow as mlc's cond, while_loop and scan --------------------------------

    def captured(self, *regions) -> list:
        """The values the regions read from outside them, in first-use order."""
        inside, out = set(), {}
        for region in regions:
            for o in region.walk():
                inside.update(o.results)
                for r in o.regions:
                    for b in r.blocks:
                        inside.update(b.args)
            for b in region.blocks:
                inside.update(b.args)
        for region in regions:
            for o in region.walk():
                for v in o.operands:
                    if v not in inside:
                        out.setdefault(v, None)
        return list(out)

    def body_graph(self, name: str, params: list, types: list, ops: list, outputs) -> Graph:
        """``ops`` as a closed mlc graph: ``params`` (block arguments, then the values read
        from outside) become its inputs of ``types``; ``outputs(terminator)`` its outputs."""
        saved = self.em, self.fills
        em = self.em = Emitter(name)
        self.fills = {}
        try:
            env = {v: em.input(f"in{i}", t) for i, (v, t) in enumerate(zip(params, types))}
            for o in ops[:-1]:
                env.update(zip(o.results, self.op(o, env)))
            return em.build([self.val(env, v) for v in outputs(ops[-1])])
        finally:
            self.em, self.fills = saved

    def scf(self, op, env) -> list:
        em = self.em
        yields = lambda t: list(t.operands)  # noqa: E731
        if op.name == "scf.if":
            if not op.false_region.blocks:
                self.fail(op, "an scf.if without an else region has no results to import")
            consts = self.captured(op.true_region, op.false_region)
            outer = [self.val(env, v) for v in consts]
            types = [s.value.type for s in outer]
            gt = self.body_graph("then", consts, types, list(op.true_region.block.ops), yields)
            gf = self.body_graph("else", consts, types, list(op.false_region.block.ops), yields)
            r = em("cond", [self.val(env, op.cond), *outer], true_body=gt, false_body=gf)
            return list(r) if isinstance(r, tuple) else [r]
        if op.name == "scf.while":
            before, after = op.before_region.block, op.after_region.block
            cond_op = list(before.ops)[-1]
            if list(cond_op.operands[1:]) != list(before.args) or len(after.args) != len(before.args):
                self.fail(op, "only loops whose scf.condition forwards the before region's arguments are read")
            consts = self.captured(op.before_region, op.after_region)
            carries = [self.val(env, v) for v in op.arguments]
            outer = [self.val(env, v) for v in consts]
            types = [s.value.type for s in carries + outer]
            gc = self.body_graph("cond", list(before.args) + consts, types, list(before.ops),
                                 lambda t: [t.operands[0]])
            gb = self.body_graph("body", list(after.args) + consts, types, list(after.ops), yields)
            r = em("while_loop", [*carries, *outer], num_carry=len(carries), cond=gc, body=gb)
            return list(r) if isinstance(r, tuple) else [r]
        # scf.for: a scan over the induction values (a constant xs), the iteration arguments carried
        bounds = [_scalar_value(self.val(env, v)) for v in (op.lb, op.ub, op.step)]
        if any(b is None for b in bounds):
            self.fail(op, "loop bounds must be constants")
        ivs = np.arange(*(int(b) for b in bounds), dtype=np.int64)
        block = op.body.block
        consts = self.captured(op.body)
        carries = [self.val(env, v) for v in op.iter_args]
        outer = [self.val(env, v) for v in consts]
        k = len(carries)
        # the step's graph takes scan's order: carries, the step's induction value, the values read
        params = list(block.args[1:]) + [block.args[0]] + consts
        types = [s.value.type for s in carries] + [T.TensorType((), T.int64)] + [s.value.type for s in outer]
        g = self.body_graph("step", params, types, list(block.ops), yields)
        r = em("scan", [*carries, self._constant(ivs), *outer], num_carry=k, num_xs=1, length=len(ivs),
               reverse=False, body=g)
        r = list(r) if isinstance(r, tuple) else [r]
        return r[:k]

    def pad(self, op, env) -> Sym:
        if op.low or op.high:
            self.fail(op, "dynamic padding")
        ops = list(op.region.block.ops)
        value = None
        if len(ops) == 1:
            value = _scalar_value(env.get(ops[0].operands[0]))
        elif len(ops) == 2 and ops[0].name == "arith.constant":
            value = float(np.asarray(self.const_array(ops[0].value, ops[0].results[0].type)))
        if value is None:
            self.fail(op, "the pad value must be a constant")
        low = [int(v) for v in op.static_low.get_values()]
        high = [int(v) for v in op.static_high.get_values()]
        x = self.val(env, op.source)
        return self.em("pad", x, pads=low + high, value=value)


def _elem(ty):
    from xdsl.dialects.builtin import TensorType
    return ty.get_element_type() if isinstance(ty, TensorType) else ty


def _predicate(op) -> str:
    from xdsl.dialects import arith
    names = (["false", "oeq", "ogt", "oge", "olt", "ole", "one", "ord", "ueq", "ugt", "uge", "ult", "ule", "une",
              "uno", "true"] if isinstance(op, arith.CmpfOp) else
             ["eq", "ne", "slt", "sle", "sgt", "sge", "ult", "ule", "ugt", "uge"])
    return names[op.predicate.value.data]


def _scalar_value(s) -> float | None:
    """The value of a 0-d (or single-element) constant Sym, else None."""
    if not isinstance(s, Sym):
        return None
    p = s.value.producer
    if p is None or p.op != "constant" or np.asarray(p.attrs["value"]).size != 1:
        return None
    return float(np.asarray(p.attrs["value"]).reshape(-1)[0])


def _op_name(op) -> str:
    """The op's name as written (an unregistered op's own, not xDSL's placeholder)."""
    if op.name == "builtin.unregistered":
        return op.op_name.data
    return op.name


def _locate(text: str, name: str) -> str:
    """`` (line L, ...)`` for where op ``name`` appears in ``text``."""
    lines = []
    pat = re.compile(r'(?<![\w.])"?' + re.escape(name) + r'(?![\w.])')
    for i, line in enumerate(text.splitlines(), 1):
        if pat.search(line):
            lines.append(str(i))
    if not lines:
        return ""
    more = f", +{len(lines) - 5} more" if len(lines) > 5 else ""
    return f" (line {', '.join(lines[:5])}{more})"


def _unsupported(module, text: str) -> list[str]:
    """Every op the importer does not read, each once, with its lines."""
    seen: dict[str, None] = {}

    def walk(op, in_body: bool):
        name = _op_name(op)
        ok = name in _BODY_OPS if in_body else name in _TOP_OPS
        if not ok:
            seen.setdefault(name, None)
        if name in _OPAQUE_BODIES:
            return
        for region in op.regions:
            for block in region.blocks:
                for inner in block.ops:
                    walk(inner, in_body or name in ("linalg.generic", "tensor.pad"))

    for op in module.body.block.ops:
        walk(op, False)
    return [name + _locate(text, name) for name in seen]


def from_mlir(text, entry: str | None = None) -> Graph:
    """The function ``entry`` of the MLIR module ``text`` (MLIR text, or a path to a
    ``.mlir`` file; by default the one public function no other calls) as an mlc Graph
    on its tensor arguments, named as in the text."""
    if isinstance(text, os.PathLike):
        text = Path(text).read_text()
    try:
        import xdsl  # noqa: F401
    except ImportError:
        raise ImportError("MLIR import needs xDSL: pip install 'mlc[mlir]'") from None
    from xdsl.parser import Parser
    from xdsl.utils.exceptions import ParseError
    from . import _xdsl as x
    try:
        module = Parser(x.context(), text).parse_module()
    except ParseError as e:
        raise MlirImportError(f"the text does not parse as MLIR:\n{e}") from None
    bad = _unsupported(module, text)
    if bad:
        raise MlirImportError("the module has ops mlc does not import:\n" + "\n".join(f"  {b}" for b in bad))
    imp = _Importer(module, text)
    fn = _entry(imp.funcs, entry)
    name = re.sub(r"[^A-Za-z0-9_.]", "_", fn.sym_name.data) or "mlir"
    em = Emitter(name)
    imp.em = em
    args, taken = [], set()
    for i, a in enumerate(fn.body.block.args):   # the text's own names (%x) where it has them
        hint = re.sub(r"[^A-Za-z0-9_.]", "_", a.name_hint or "")
        arg_name = hint if hint and hint not in taken and not hint[0].isdigit() else f"arg{i}"
        taken.add(arg_name)
        args.append(em.input(arg_name, _ttype(a.type)))
    outs = imp.function(fn, args)
    return em.build([imp.val({0: o}, 0) for o in outs])


def _entry(funcs: dict, entry: str | None):
    if entry is not None:
        if entry not in funcs:
            raise MlirImportError(f"no func.func @{entry} in the module (it has {', '.join(funcs) or 'none'})")
        return funcs[entry]
    called = set()
    for f in funcs.values():
        for op in f.walk():
            if op.name == "func.call":
                called.add(op.callee.root_reference.data)
    roots = [n for n, f in funcs.items() if f.body.blocks and n not in called
             and not (f.sym_visibility is not None and f.sym_visibility.data == "private")]
    if len(roots) != 1:
        raise MlirImportError(f"the module has {len(roots)} entry functions ({', '.join(roots)}): name one with entry=")
    return funcs[roots[0]]
