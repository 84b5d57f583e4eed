"""Random programs, compiled at -O0 and -O2 under ``MLC_BOUNDS_CHECK=1``, against numpy.

A program is a list of steps over a pool of values, drawn from one seed: elementwise
unary and binary ops (broadcasting, Python scalars, mixed dtypes), ``where`` on
comparisons, casts, reductions (sum/mean/max/min/prod over random axes, all axes or
none, keepdims), softmax/log_softmax, matmul (vectors, matrices, broadcast batches),
reshape/transpose/expand_dims/squeeze, slicing (negative steps, out-of-range bounds,
integer indices, new axes), concatenate, pad, tile, broadcast_to, cumsum, clip,
argmax/argmin, gather, on float32/float64 values and one integer type per program
(int32 mostly, else int64, int8 or uint8; float16 now and then) of rank 0-3 whose
dims may be 0, with now and then an input past the size where reductions become
trees of blocks. Inputs are sometimes passed as non-contiguous views. Each batch is
compiled at -O0 and -O2 with the default schedules, and once more at -O2 with
schedules from the tuner's search space. Each step has two implementations written here: numpy on
arrays (the oracle) and mlc on tracers (operators, tracer methods, ``mlc.<op>``
functions and numpy ufuncs on tracers, chosen at random), so the oracle is
independent of mlc's own op references. The traced graph is also run by the
reference interpreter (``mlc.ops.run_reference``), which must agree with numpy too.

Several programs are traced into one graph per compile (compiling dominates the
cost); a failing batch is re-run program by program, and a failure names the seed
that replays it alone: ``fuzz(seed, 1)``, with the graph's text.

Values stay finite and exactly comparable by construction, so a mismatch is a bug:
- each value carries a bound on its magnitude and an estimate of its absolute error
  (eps per rounding, times the op's sensitivity; reductions and matmul by their
  length), which sets the tolerance; ``exp`` only sees small arguments, ``div``
  only denominators ``|b| + 1``, ``prod`` only short, small products;
- values flagged exact (no rounding difference is possible: neg, abs, max, where,
  movement, add/sub of exact values that no multiply fed, integers) must match bit
  for bit; only they feed comparisons, floor/ceil/round and float->int casts, so a
  rounding difference can never flip a branch or an integer;
- int32 and int64 values stay far from overflow (8-bit ones wrap, as both numpy and
  LLVM define it; a bound is kept on every value so that float errors are estimated
  from true magnitudes), int8 and uint8 never meet (numpy would promote to int16,
  which this generator leaves out), unsigned sums are uint64, as numpy's, integer
  division is numpy's true division (float64) by ``|b| + 1``, integer powers have
  small non-negative exponents (negative ones are an error in numpy), and float->int
  casts only see in-range exact values (out of range, numpy's result is
  platform-defined and LLVM's ``fptosi`` gives poison).
"""
from __future__ import annotations

import math
import os
import random
import traceback
import warnings
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

import mlc

from . import random_slice_key
from mlc import ops

from . import FuzzResult

F16, F32, F64, I32, I64, I8, U8, BOOL = (np.dtype(t) for t in ("float16", "float32", "float64", "int32", "int64",
                                                                  "int8", "uint8", "bool"))
FLOATS = (F32, F64)
K_ERR = 4.0          # allowed error: K_ERR * the estimate (numpy's own rounding counts too)
OPT_LEVELS = (0, 2)
BATCH = 4            # programs per compiled graph
INT_LIMIT = 2 ** 20  # |int32 values| stay below this (8-bit values wrap, as in numpy)


def is_int(dt) -> bool:
    return dt.kind in "iu"


def int_range(dt) -> float:
    """The largest magnitude a value of integer type dt can have."""
    info = np.iinfo(dt)
    return float(max(-int(info.min), int(info.max)))


def eps(dt) -> float:
    return float(np.finfo(dt).eps) if dt.kind == "f" else 0.0


class Skip(Exception):
    """A step the generator drops (its value could overflow its type)."""


@dataclass
class Val:
    ref: int
    shape: tuple
    dtype: np.dtype
    bound: float          # |x| <= bound
    err: float            # estimated absolute error against exact arithmetic
    exact: bool           # numpy and compiled code compute it bit for bit alike
    from_mul: bool = False   # a product: an add of it may be contracted into an FMA
    nan: bool = False     # may hold NaN (the mean of nothing)


@dataclass
class Step:
    out: Val
    args: list            # Val refs
    np_fn: object         # numpy arrays -> array
    mlc_fn: object        # tracers -> tracer
    text: str


class Program:
    def __init__(self, seed: int):
        self.seed = seed
        self.rng = random.Random(seed)
        self.vals: list[Val] = []
        self.steps: list[Step | None] = []   # None: an input
        self.inputs: list[Val] = []
        self.outputs: list[Val] = []
        # one integer type per program: int8 with uint8 would promote to int16, which this generator leaves out
        self.int_dtype = self.rng.choice([I32, I32, I32, I64, I8, U8])

    # ------------------------------------------------------------------ pool
    def _new(self, shape, dtype, bound, err, exact, from_mul=False) -> Val:
        v = Val(len(self.vals), tuple(int(d) for d in shape), np.dtype(dtype), float(bound), float(err), exact,
                from_mul)
        self.vals.append(v)
        return v

    def input(self, shape, dtype) -> Val:
        dtype = np.dtype(dtype)
        bound = (255.0 if dtype == U8 else 128.0 if dtype == I8 else 4.0) if is_int(dtype) else 2.0
        v = self._new(shape, dtype, bound, 0.0, True)
        self.steps.append(None)
        self.inputs.append(v)
        return v

    def add(self, args, shape, dtype, bound, err, exact, np_fn, mlc_fn, text, from_mul=False, nan=False) -> Val:
        dtype = np.dtype(dtype)
        if dtype.kind != "f":
            err, exact = 0.0, True
        if is_int(dtype):   # a wrapped value is still in the type's range
            bound = min(bound, int_range(dtype))
        if dtype == F16 and bound > 3e4:   # float16 overflows at 65504
            raise Skip
        v = self._new(shape, dtype, bound, err, exact, from_mul)
        v.nan = dtype.kind == "f" and (nan or any(a.nan for a in args))
        self.steps.append(Step(v, [a.ref for a in args], np_fn, mlc_fn, text))
        return v

    def pick(self, pred=lambda v: True) -> Val | None:
        cands = [v for v in self.vals if pred(v)]
        if not cands:
            return None
        return cands[-1] if self.rng.random() < 0.4 else self.rng.choice(cands)

    # ------------------------------------------------------------------ shapes
    def dim(self) -> int:
        r = self.rng.random()
        return 0 if r < 0.04 else self.rng.choice([17, 33]) if r < 0.11 else 130 if r < 0.125 else \
            self.rng.randint(1, 7)

    def shape(self, max_rank=3) -> tuple:
        if self.rng.random() < 0.04:   # past the size where reductions become trees of blocks, with tails
            return self.rng.choice([(4099,), (67, 131), (3, 2053), (2, 65, 33), (8193,)])
        shape = [self.dim() for _ in range(self.rng.randint(0, max_rank))]
        while math.prod(shape) > 5000:   # big enough for vector loops and blocked sums, still quick
            shape[shape.index(max(shape))] = self.rng.randint(1, 7)
        return tuple(shape)

    def dtype(self):
        return self.rng.choice([F32, F32, F32, F64, F64, F64, self.int_dtype, self.int_dtype, F16])

    def partner_shape(self, shape) -> tuple:
        """A shape that broadcasts with ``shape``."""
        out = [n if self.rng.random() < 0.6 else 1 for n in shape]
        if self.rng.random() < 0.5:
            out = out[self.rng.randint(0, len(out)):]   # numpy aligns shapes from the right
        else:
            while len(out) < 3 and self.rng.random() < 0.3:
                out.insert(0, self.dim() if math.prod(out) < 1000 else 1)
        return tuple(out)

    def partner(self, shape, pred=lambda v: True) -> Val:
        """A pool value that broadcasts with ``shape``, or a new input that does."""
        def fits(v):
            try:
                np.broadcast_shapes(v.shape, shape)
            except ValueError:
                return False
            return pred(v)
        b = self.pick(fits) if self.rng.random() < 0.5 else None
        return b if b is not None else self.input(self.partner_shape(shape), self.dtype())


# ----------------------------------------------------------------------------- error bookkeeping

def _result_dtype(*dts):
    return np.result_type(*dts)


def _round(dt, bound) -> float:
    """One rounding of a value of magnitude <= bound."""
    return eps(dt) * bound


def _sum_err(dt, n, err_in, bound_out) -> float:
    """A sum of n terms: their errors add up; rounding grows like sqrt(n) for the
    random-sign rounding errors of a serial sum, less for pairwise/blocked sums."""
    return n * err_in + _round(dt, bound_out) * (2 * math.sqrt(n) + 2)


# ----------------------------------------------------------------------------- steps

UNARY_FLOAT = ["neg", "abs", "relu", "exp", "tanh", "sigmoid", "sin", "cos", "erf", "log1", "sqrt1", "square",
               "floor", "ceil", "round", "pow15"]
UNARY_INT = ["neg", "abs", "relu", "square"]


def unary(p: Program):
    a = p.pick()
    if a.dtype == BOOL:
        return
    rng = p.rng
    op = rng.choice(UNARY_FLOAT if a.dtype.kind == "f" else UNARY_INT)
    if op == "exp" and a.bound > 4:
        op = "tanh"
    if op in ("sin", "cos") and a.bound > 100:
        op = "sigmoid"
    if op in ("floor", "ceil", "round") and not a.exact:
        op = "abs"
    if op == "square" and a.bound > (1e3 if a.dtype.kind == "f" else 2 ** 10):
        op = "neg"
    if op == "pow15" and a.bound > 100:
        op = "relu"
    dt, b, e = a.dtype, a.bound, a.err
    style = rng.random()
    if op == "neg":
        p.add([a], a.shape, dt, b, e, a.exact, np.negative, lambda x: -x, "neg")
    elif op == "abs":
        p.add([a], a.shape, dt, b, e, a.exact, np.abs,
              (lambda x: abs(x)) if style < 0.5 else (lambda x: mlc.abs(x)), "abs")
    elif op == "relu":
        p.add([a], a.shape, dt, b, e, a.exact, lambda x: np.maximum(x, np.zeros((), x.dtype)),
              lambda x: mlc.relu(x), "relu")
    elif op == "exp":
        out = math.exp(b)
        p.add([a], a.shape, dt, out, out * e + 4 * _round(dt, out), False, np.exp,
              (lambda x: np.exp(x)) if style < 0.5 else (lambda x: mlc.exp(x)), "exp")
    elif op in ("tanh", "sigmoid", "sin", "cos", "erf"):
        fns = {"tanh": np.tanh, "sin": np.sin, "cos": np.cos,
               "sigmoid": lambda x: (1 / (1 + np.exp(-x))).astype(x.dtype),
               "erf": lambda x: np.vectorize(math.erf, otypes=[np.float64])(x).astype(x.dtype)}
        via_ufunc = op in ("tanh", "sin", "cos") and style < 0.5
        p.add([a], a.shape, dt, 1.0, 1.2 * e + 4 * _round(dt, 1.0), False, fns[op],
              (lambda x, f=fns[op]: f(x)) if via_ufunc else (lambda x, op=op: getattr(mlc, op)(x)), op)
    elif op == "log1":    # log(|x| + 1): defined everywhere, derivative <= 1
        out = math.log(b + 1)
        p.add([a], a.shape, dt, out, e + 4 * _round(dt, out + 1), False,
              lambda x: np.log(np.abs(x) + np.ones((), x.dtype)), lambda x: mlc.log(abs(x) + 1.0), "log(|x|+1)")
    elif op == "sqrt1":   # sqrt(|x| + 1): derivative <= 1/2
        out = math.sqrt(b + 1)
        p.add([a], a.shape, dt, out, e + 4 * _round(dt, out + b + 1), False,
              lambda x: np.sqrt(np.abs(x) + np.ones((), x.dtype)), lambda x: mlc.sqrt(abs(x) + 1.0), "sqrt(|x|+1)")
    elif op == "square":
        exact = a.dtype.kind != "f"
        p.add([a], a.shape, dt, b * b, 2 * b * e + 2 * _round(dt, b * b), exact, lambda x: x ** 2, lambda x: x ** 2,
              "x**2", from_mul=True)
    elif op == "pow15":   # |x| ** 1.5
        out = b ** 1.5
        p.add([a], a.shape, dt, out, 1.5 * math.sqrt(b) * e + 8 * _round(dt, out), False,
              lambda x: np.abs(x) ** 1.5, lambda x: abs(x) ** 1.5, "|x|**1.5")
    else:                 # floor/ceil/round of an exact value: exact
        fn = getattr(np, op)
        p.add([a], a.shape, dt, b + 1, 0.0, True, fn, lambda x, op=op: getattr(mlc, op)(x), op)


BINARY = ["add", "sub", "mul", "maximum", "minimum", "div", "add", "mul"]


def binary(p: Program):
    rng = p.rng
    a = p.pick(lambda v: v.dtype != BOOL)
    op = rng.choice(BINARY)
    if rng.random() < 0.2:   # a Python scalar operand (numpy's weak scalar promotion)
        sc = rng.choice([0.5, -1.5, 2.0, 3, -2])
        if a.dtype.kind == "u" and sc == -2:
            sc = 2   # numpy refuses a negative Python int with an unsigned array
        bs = abs(sc)
        fn, bound, err = {
            "add": (lambda x: x + sc, a.bound + bs, a.err),
            "sub": (lambda x: sc - x, a.bound + bs, a.err),
            "mul": (lambda x: x * sc, a.bound * bs, a.err * bs),
            "maximum": (lambda x: np.maximum(x, sc), max(a.bound, bs), a.err),
            "minimum": (lambda x: np.minimum(sc, x), max(a.bound, bs), a.err),
            "div": (lambda x: x / sc, a.bound / bs, a.err / bs)}[op]
        dt = np.asarray(fn(np.zeros((), a.dtype))).dtype
        if dt.kind == "i" and bound > INT_LIMIT:
            return
        exact = a.exact and op in ("add", "sub", "maximum", "minimum") and not a.from_mul
        mfn = fn if op not in ("maximum", "minimum") or rng.random() < 0.5 else \
            (lambda x: getattr(mlc, op)(x, sc))
        p.add([a], a.shape, dt, bound, err + 2 * _round(dt, bound), exact, fn, mfn, f"{op} scalar {sc!r}",
              from_mul=op == "mul")
        return
    b = p.partner(a.shape, lambda v: v.dtype != BOOL)
    if rng.random() < 0.5:
        a, b = b, a
    shape = np.broadcast_shapes(a.shape, b.shape)
    dt = _result_dtype(a.dtype, b.dtype)
    ea, eb = a.err, b.err
    exact_in = a.exact and b.exact and not a.from_mul and not b.from_mul
    style = rng.random()
    if op in ("add", "sub"):
        bound, err = a.bound + b.bound, ea + eb + _round(dt, a.bound + b.bound)
        fn = (lambda x, y: x + y) if op == "add" else (lambda x, y: x - y)
        mfn = fn if style < 0.7 else (lambda x, y, op=op: getattr(mlc, op)(x, y))
        exact = exact_in
    elif op == "mul":
        bound = a.bound * b.bound
        err = ea * b.bound + eb * a.bound + _round(dt, bound)
        fn = lambda x, y: x * y
        mfn = fn if style < 0.7 else (lambda x, y: np.multiply(x, y))
        exact = False
    elif op in ("maximum", "minimum"):
        bound, err, exact = max(a.bound, b.bound), max(ea, eb), a.exact and b.exact
        fn = getattr(np, op)
        mfn = fn if style < 0.5 else (lambda x, y, op=op: getattr(mlc, op)(x, y))
    else:   # a / (|b| + 1): true division, the denominator >= 1
        fn = lambda x, y: x / (np.abs(y) + 1.0)   # 1.0: an unsigned |y| + 1 would wrap to 0
        mfn = lambda x, y: x / (abs(y) + 1.0)
        dt = np.asarray(fn(np.zeros((), a.dtype), np.zeros((), b.dtype))).dtype   # numpy's, float16 included
        bound = a.bound
        err = ea + a.bound * eb + 3 * _round(dt, a.bound + b.bound + 1)
        exact = False
    if dt.kind == "i" and bound > INT_LIMIT:
        return
    p.add([a, b], shape, dt, bound, err, exact, fn, mfn, op, from_mul=op == "mul")


def where(p: Program):
    rng = p.rng
    c1 = p.pick(lambda v: v.exact and v.dtype != BOOL)
    if c1 is None:
        return
    c2 = p.partner(c1.shape, lambda v: v.exact and v.dtype != BOOL) if rng.random() < 0.5 else None
    cmp = rng.choice(["greater", "less", "equal", "ge", "ne"])
    cshape = np.broadcast_shapes(c1.shape, c2.shape) if c2 is not None else c1.shape
    npcmp = {"greater": np.greater, "less": np.less, "equal": np.equal, "ge": np.greater_equal,
             "ne": np.not_equal}[cmp]
    opcmp = {"greater": lambda x, y: x > y, "less": lambda x, y: x < y, "equal": lambda x, y: x == y,
             "ge": lambda x, y: x >= y, "ne": lambda x, y: x != y}[cmp]
    if c2 is None:
        k = 0.25 if c1.dtype.kind == "f" else 1
        cond = p.add([c1], cshape, BOOL, 1, 0, True, lambda x: npcmp(x, k), lambda x: opcmp(x, k), f"{cmp} {k}")
    else:
        cond = p.add([c1, c2], cshape, BOOL, 1, 0, True, npcmp, opcmp, cmp)
    x = p.partner(cshape, lambda v: v.dtype != BOOL)
    y = p.partner(np.broadcast_shapes(cshape, x.shape), lambda v: v.dtype != BOOL)
    shape = np.broadcast_shapes(cshape, x.shape, y.shape)
    dt = _result_dtype(x.dtype, y.dtype)
    p.add([cond, x, y], shape, dt, max(x.bound, y.bound), max(x.err, y.err), x.exact and y.exact,
          np.where, lambda c, a, b: mlc.where(c, a, b), "where")


def cast(p: Program):
    a = p.pick()
    rng = p.rng
    if a.dtype == BOOL:
        to = rng.choice([F32, I32])
        p.add([a], a.shape, to, 1, 0, True, lambda x: x.astype(to), lambda x: x.astype(to), f"astype {to}")
        return
    in_range = a.bound < 2 ** 30 and (a.dtype.kind != "f" or a.bound < int_range(p.int_dtype))
    choices = [F32, F64] + ([I32, p.int_dtype, BOOL] if a.exact and in_range and not a.nan else [])
    if a.dtype.kind == "f" and p.int_dtype == U8 and p.int_dtype in choices:
        choices.remove(p.int_dtype)   # a negative float to uint8 is platform-defined in numpy, poison in LLVM
    to = rng.choice([t for t in choices if t != a.dtype] or [F64])
    if is_int(to) and a.dtype.kind == "f" and a.exact:
        err = 0.0
    elif to.kind == "f":
        err = a.err + _round(to, a.bound)
    else:
        err = 0.0
    exact = a.exact and not (to == F32 and is_int(a.dtype) and a.bound > 2 ** 24)
    fn = lambda x: x.astype(to)
    mfn = fn if rng.random() < 0.6 else (lambda x: mlc.cast(x, dtype=to.name))
    p.add([a], a.shape, to, a.bound + (1 if is_int(to) else 0) if to != BOOL else 1, err, exact, fn, mfn,
          f"astype {to}")


REDUCE = ["sum", "mean", "max", "min", "prod", "sum", "mean"]


def reduction(p: Program):
    rng = p.rng
    a = p.pick(lambda v: v.dtype != BOOL)
    op = rng.choice(REDUCE)
    rank = len(a.shape)
    style = rng.choice(["none", "int", "tuple", "tuple", "empty"])
    if style == "none" or rank == 0:
        axis, axes = None, tuple(range(rank))
    elif style == "int":
        d = rng.randint(-rank, rank - 1)
        axis, axes = d, (d % rank,)
    elif style == "empty":
        axis, axes = (), ()
    else:
        chosen = rng.sample(range(rank), rng.randint(1, rank))
        axis = tuple(d - rank if rng.random() < 0.3 else d for d in chosen)
        axes = tuple(sorted(chosen))
    keepdims = rng.random() < 0.4
    n = int(np.prod([a.shape[d] for d in axes], dtype=np.int64))
    if op in ("max", "min") and n == 0 and axes:
        op = "sum"   # no identity: numpy and mlc refuse (the type rule is tested elsewhere)
    if op == "prod" and (n > 8 or a.bound ** max(n, 1) > 1e6):
        op = "mean"
    shape = tuple(1 if d in axes else s for d, s in enumerate(a.shape)) if keepdims else \
        tuple(s for d, s in enumerate(a.shape) if d not in axes)
    dt = a.dtype
    if op in ("sum", "prod") and is_int(dt):
        dt = np.dtype(np.uint64) if dt.kind == "u" else I64   # numpy's (and mlc's) widening
    if op == "mean" and is_int(dt):
        dt = F64
    if op == "sum":
        bound = a.bound * n
        err = _sum_err(dt, n, a.err, bound)
        exact = is_int(dt) or (a.exact and n <= 1)
    elif op == "mean":
        bound = a.bound
        err = a.err + _round(dt, a.bound) * (2 * math.sqrt(n) + 4)
        exact = False if n != 1 else a.exact and dt == a.dtype
    elif op == "prod":
        bound = a.bound ** n
        err = n * a.bound ** max(n - 1, 0) * a.err + 2 * n * _round(dt, max(bound, 1))
        exact = is_int(dt) or (a.exact and n <= 1)
    else:
        bound, err, exact = a.bound, a.err, a.exact
    if dt.kind in "iu" and bound > 2 ** 40:
        return
    npfn = getattr(np, op)

    def np_fn(x):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)   # mean of nothing: NaN, like numpy
            return np.asarray(npfn(x, axis=axis, keepdims=keepdims))

    if rng.random() < 0.6:
        mfn = lambda x: getattr(x, op)(axis=axis, keepdims=keepdims)
    else:
        mfn = lambda x: getattr(mlc, op)(x, axis=axis, keepdims=keepdims)
    p.add([a], shape, dt, bound, err, exact, np_fn, mfn, f"{op} axis={axis} keepdims={keepdims}",
          nan=op == "mean" and n == 0)


def softmax(p: Program):
    a = p.pick(lambda v: v.dtype.kind == "f" and len(v.shape) >= 1 and v.bound <= 50)
    if a is None:
        return
    rank = len(a.shape)
    axis = p.rng.randint(-rank, rank - 1)
    n = a.shape[axis]
    log = p.rng.random() < 0.5
    dt = a.dtype

    def np_fn(x):
        m = np.max(x, axis=axis, keepdims=True, initial=-np.inf)
        z = x - m
        s = np.sum(np.exp(z), axis=axis, keepdims=True)
        return (z - np.log(s)) if log else np.exp(z) / s

    if log:
        bound = 2 * a.bound + math.log(max(n, 1))
        err = 2 * a.err + 8 * _round(dt, bound) * (math.sqrt(n) + 2)
    else:
        bound, err = 1.0, 2 * a.err + 8 * eps(dt) * (math.sqrt(n) + 2)
    p.add([a], a.shape, dt, bound, err, False, np_fn,
          (lambda x: mlc.log_softmax(x, axis=axis)) if log else (lambda x: mlc.softmax(x, axis=axis)),
          f"{'log_' if log else ''}softmax axis={axis}")


def matmul(p: Program):
    rng = p.rng
    if rng.random() < 0.08:   # big enough for the default schedule's cache blocks and packing, with tails
        dt = rng.choice([F32, F64])
        if rng.random() < 0.4:   # a residual added to a blocked product, dying there and read by a
            k = rng.choice([300, 520])   # reduction: the epilogue must not share memory with the partial
            c = p.input((rng.choice([49, 67]), k), dt)   # sums
            w = p.input((k, k), dt)
            bound = k * 2.0 + 1
            p.add([c, w], c.shape[:1], dt, bound, _round(dt, bound) * (2 * math.sqrt(k) + 4), False,
                  lambda c, w: (np.tanh(c) + (np.tanh(c) * 0.5) @ w).max(axis=-1),
                  lambda c, w: (mlc.tanh(c) + (mlc.tanh(c) * 0.5) @ w).max(axis=-1),
                  f"max(tanh(c) + (tanh(c) * 0.5) @ w) {c.shape} @ {w.shape}", from_mul=True)
            return
        a = p.input((rng.choice([49, 67]), rng.choice([300, 520])), dt)
        b = p.input((a.shape[1], rng.choice([17, 70])), dt)
        bound = a.shape[1] * 4.0
        p.add([a, b], (a.shape[0], b.shape[1]), dt, bound, _round(dt, bound) * (2 * math.sqrt(a.shape[1]) + 2), False,
              np.matmul, lambda x, y: x @ y, f"matmul {a.shape} @ {b.shape}", from_mul=True)
        return
    a = p.pick(lambda v: v.dtype != BOOL and 1 <= len(v.shape) <= 3 and v.shape[-1] <= 40)
    if a is None:
        return
    k = a.shape[-1]
    n = p.dim()
    form = rng.choice(["vec", "mat", "mat", "batch"])
    bshape = {"vec": (k,), "mat": (k, n), "batch": (rng.choice([1, p.dim()]), k, n)}[form]
    if len(a.shape) == 3 and form == "batch" and bshape[0] not in (1, a.shape[0]) and a.shape[0] != 1:
        bshape = (a.shape[0], k, n)
    b = p.pick(lambda v: v.shape == bshape and v.dtype != BOOL) or p.input(bshape, p.dtype())
    dt = _result_dtype(a.dtype, b.dtype)
    bound = k * a.bound * b.bound
    if dt.kind == "i" and bound > INT_LIMIT:
        return
    err = k * (a.err * b.bound + b.err * a.bound) + _round(dt, bound) * (2 * math.sqrt(max(k, 1)) + 2)
    out = np.matmul(np.zeros(a.shape, np.int8), np.zeros(b.shape, np.int8)).shape
    if math.prod(out) * max(k, 1) > 200000:
        return
    mfn = (lambda x, y: x @ y) if rng.random() < 0.6 else (lambda x, y: mlc.matmul(x, y))
    p.add([a, b], out, dt, bound, err, is_int(dt), np.matmul, mfn, f"matmul {a.shape} @ {b.shape}",
          from_mul=True)


def _factor(rng, size: int, rank: int) -> tuple:
    """A random shape of ``rank`` dims with product ``size``."""
    if size == 0:
        dims = [rng.randint(0, 4) for _ in range(rank)] if rank else []
        if rank:
            dims[rng.randrange(rank)] = 0
        return tuple(dims)
    dims = [1] * rank
    f, m = 2, size
    primes = []
    while f * f <= m:
        while m % f == 0:
            primes.append(f)
            m //= f
        f += 1
    if m > 1:
        primes.append(m)
    if rank == 0:
        return ()
    for q in primes:
        dims[rng.randrange(rank)] *= q
    return tuple(dims)


def movement(p: Program):
    rng = p.rng
    a = p.pick()
    rank = len(a.shape)
    kind = rng.choice(["reshape", "transpose", "expand", "squeeze", "slice", "slice", "concat"])
    keep = (a.dtype, a.bound, a.err, a.exact)
    if kind == "reshape":
        size = int(np.prod(a.shape, dtype=np.int64))
        new_rank = rng.randint(0 if size == 1 else 1, 3)
        shape = _factor(rng, size, new_rank)
        if size == 1 and new_rank == 0:
            shape = ()
        spec = shape
        if size > 0 and shape and rng.random() < 0.3:
            spec = tuple(-1 if i == rng.randrange(len(shape)) else d for i, d in enumerate(shape))
            if spec.count(-1) != 1:
                spec = shape
        mfn = (lambda x: x.reshape(spec)) if rng.random() < 0.6 else (lambda x: mlc.reshape(x, shape=spec))
        p.add([a], shape, *keep, lambda x: x.reshape(spec), mfn, f"reshape {spec}", from_mul=a.from_mul)
    elif kind == "transpose":
        if rank < 2:
            return
        perm = list(range(rank))
        rng.shuffle(perm)
        perm = tuple(perm)
        r = rng.random()
        if r < 0.2:
            perm = tuple(reversed(range(rank)))
            mfn = lambda x: x.T
        elif r < 0.6:
            mfn = lambda x: x.transpose(*perm)
        else:
            mfn = lambda x: mlc.transpose(x, axes=perm)
        p.add([a], tuple(a.shape[d] for d in perm), *keep, lambda x: np.transpose(x, perm), mfn,
              f"transpose {perm}", from_mul=a.from_mul)
    elif kind == "expand":
        if rank >= 3:
            return
        ax = rng.randint(-rank - 1, rank)
        shape = np.expand_dims(np.zeros(a.shape, np.int8), ax).shape
        p.add([a], shape, *keep, lambda x: np.expand_dims(x, ax), lambda x: mlc.expand_dims(x, axis=ax),
              f"expand_dims {ax}", from_mul=a.from_mul)
    elif kind == "squeeze":
        ones = [d for d in range(rank) if a.shape[d] == 1]
        if not ones:
            return
        axes = tuple(rng.sample(ones, rng.randint(1, len(ones))))
        shape = tuple(s for d, s in enumerate(a.shape) if d not in axes)
        p.add([a], shape, *keep, lambda x: np.squeeze(x, axis=axes), lambda x: mlc.squeeze(x, axis=axes),
              f"squeeze {axes}", from_mul=a.from_mul)
    elif kind == "slice":
        if rank == 0:
            return
        key = random_slice_key(rng, a.shape, [None, 1, 2, 3, -1, -1, -2, -3], whole=0.35)
        explicit = rng.random() < 0.3 and not any(isinstance(k, int) for k in key)
        if not explicit and rng.random() < 0.2:
            key.insert(rng.randint(0, len(key)), None)   # a new axis
        key = tuple(key)
        shape = np.zeros(a.shape, np.int8)[key].shape
        if explicit:
            begin = tuple(k.start for k in key)
            end = tuple(k.stop for k in key)
            step = tuple(k.step if k.step is not None else 1 for k in key)
            mfn = lambda x: mlc.slice(x, begin=begin, end=end, step=step)
            text = f"slice begin={begin} end={end} step={step}"
        else:
            mfn = lambda x: x[key]
            text = f"[{key}]"
        p.add([a], shape, *keep, lambda x: x[key], mfn, text, from_mul=a.from_mul)
    else:   # concatenate with a value of the same shape except along one axis
        if rank == 0:
            return
        ax = rng.randint(-rank, rank - 1)
        d = ax % rank

        def fits(v):
            return len(v.shape) == rank and all(v.shape[i] == a.shape[i] for i in range(rank) if i != d) \
                and v.dtype != BOOL and a.dtype != BOOL
        b = p.pick(fits) if rng.random() < 0.5 else None
        if b is None:
            shape = list(a.shape)
            shape[d] = p.dim()
            b = p.input(tuple(shape), a.dtype if rng.random() < 0.7 or a.dtype == BOOL else p.dtype())
        parts = [a, b] if rng.random() < 0.5 else [b, a, b]
        refs = [v.ref for v in parts]
        uniq = list(dict.fromkeys(refs))
        where_ = [uniq.index(r) for r in refs]
        args = [p.vals[r] for r in uniq]
        dt = _result_dtype(*[v.dtype for v in args])
        shape = list(a.shape)
        shape[d] = sum(v.shape[d] for v in parts)
        p.add(args, tuple(shape), dt, max(v.bound for v in args), max(v.err for v in args),
              all(v.exact for v in args), lambda *xs: np.concatenate([xs[i] for i in where_], axis=ax),
              lambda *xs: mlc.concatenate([xs[i] for i in where_], axis=ax), f"concatenate axis={ax}",
              from_mul=any(v.from_mul for v in args))


def extra(p: Program):
    """pad (constant, edge, reflect), tile, broadcast_to, cumsum, clip, argmax/argmin,
    gather with constant indices, comparisons as results."""
    rng = p.rng
    a = p.pick(lambda v: v.dtype != BOOL)
    rank = len(a.shape)
    kind = rng.choice(["pad", "tile", "broadcast_to", "cumsum", "clip", "arg", "gather", "compare"])
    keep = (a.dtype, a.bound, a.err, a.exact)
    if kind == "pad" and rank >= 1:
        mode = rng.choice(["constant", "edge", "reflect"])
        widths = [(rng.randint(0, 2), rng.randint(0, 2)) for _ in range(rank)]
        if mode != "constant":   # numpy's rules: edge needs elements, reflect needs more than the width
            widths = [(lo, hi) if (n > 0 and (mode == "edge" or max(lo, hi) < n)) else (0, 0)
                      for (lo, hi), n in zip(widths, a.shape)]
        pads = tuple(lo for lo, _ in widths) + tuple(hi for _, hi in widths)
        shape = tuple(n + lo + hi for n, (lo, hi) in zip(a.shape, widths))
        if mode == "constant":
            value = rng.choice([0, 1])
            p.add([a], shape, *keep, lambda x: np.pad(x, widths, constant_values=value),
                  lambda x: mlc.pad(x, pads=pads, value=value), f"pad {pads} value={value}", from_mul=a.from_mul)
        else:
            p.add([a], shape, *keep, lambda x: np.pad(x, widths, mode=mode),
                  lambda x: mlc.pad(x, pads=pads, mode=mode), f"pad {pads} {mode}", from_mul=a.from_mul)
    elif kind == "tile" and rank >= 1 and math.prod(a.shape) < 5000:
        reps = tuple(rng.randint(1, 3) for _ in range(rank))
        p.add([a], tuple(n * r for n, r in zip(a.shape, reps)), *keep, lambda x: np.tile(x, reps),
              lambda x: mlc.tile(x, repeats=reps), f"tile {reps}", from_mul=a.from_mul)
    elif kind == "broadcast_to" and rank < 3:
        shape = (p.dim(),) + tuple(p.dim() if n == 1 and rng.random() < 0.5 else n for n in a.shape)
        if math.prod(shape) > 20000:
            return
        p.add([a], shape, *keep, lambda x: np.broadcast_to(x, shape), lambda x: mlc.broadcast_to(x, shape=shape),
              f"broadcast_to {shape}", from_mul=a.from_mul)
    elif kind == "cumsum" and rank >= 1:
        ax = rng.randint(-rank, rank - 1)
        n = a.shape[ax]
        bound = a.bound * max(n, 1)
        if a.dtype.kind == "i" and bound > INT_LIMIT:
            return
        # mlc keeps the input's dtype (ONNX CumSum); numpy would widen int32 to int64
        p.add([a], a.shape, a.dtype, bound, _sum_err(a.dtype, n, a.err, bound), is_int(a.dtype),
              lambda x: np.cumsum(x, axis=ax, dtype=x.dtype), lambda x: mlc.cumsum(x, axis=ax),
              f"cumsum axis={ax}")
    elif kind == "clip":
        lo, hi = sorted(rng.sample([-1.5, -0.5, 0.25, 1.0, 2.0], 2))
        if is_int(a.dtype):
            lo, hi = int(lo), int(hi)
        if a.dtype.kind == "u":
            lo, hi = abs(lo), abs(lo) + abs(hi)
        p.add([a], a.shape, *keep, lambda x: np.clip(x, lo, hi).astype(x.dtype), lambda x: mlc.clip(x, min=lo, max=hi),
              f"clip {lo} {hi}")
    elif kind == "arg" and rank >= 1 and a.exact:
        ax = rng.randint(-rank, rank - 1)
        if a.shape[ax] == 0:
            return
        op = rng.choice(["argmax", "argmin"])
        keepdims = rng.random() < 0.5
        shape = tuple(1 if d == ax % rank else n for d, n in enumerate(a.shape)) if keepdims else \
            tuple(n for d, n in enumerate(a.shape) if d != ax % rank)
        p.add([a], shape, I64, max(a.shape), 0, True,
              lambda x: getattr(np, op)(x, axis=ax, keepdims=keepdims),
              lambda x: getattr(mlc, op)(x, axis=ax, keepdims=keepdims), f"{op} axis={ax} keepdims={keepdims}")
    elif kind == "gather" and rank >= 1 and a.shape[rank - 1 if rng.random() < 0.5 else 0] > 0:
        ax = rng.choice([d for d in range(rank) if a.shape[d] > 0])
        n = a.shape[ax]
        idx = np.array([rng.randint(-n, n - 1) for _ in range(rng.randint(0, 4))], np.int64)
        if rng.random() < 0.3 and idx.size:
            idx = idx.reshape(-1, 1)
        shape = np.take(np.zeros(a.shape, np.int8), idx, axis=ax).shape
        p.add([a], shape, *keep, lambda x: np.take(x, idx, axis=ax), lambda x: mlc.gather(x, idx, axis=ax),
              f"gather {idx.tolist()} axis={ax}", from_mul=a.from_mul)
    elif kind == "compare" and a.exact:
        b = p.partner(a.shape, lambda v: v.exact and v.dtype != BOOL)
        op = rng.choice(["greater", "less", "equal"])
        p.add([a, b], np.broadcast_shapes(a.shape, b.shape), BOOL, 1, 0, True, getattr(np, op),
              lambda x, y: getattr(mlc, op)(x, y), op)


GENERATORS = [unary, binary, binary, unary, where, cast, reduction, reduction, softmax, matmul, movement, movement,
              movement, extra]


def grow(p, generators, n: int) -> list:
    """Apply ``n`` generators drawn at random to ``p`` (one that does not apply skips);
    returns the computed values no step reads: the program's outputs."""
    for _ in range(n):
        try:
            p.rng.choice(generators)(p)
        except Skip:
            pass
    used = {r for s in p.steps if s is not None for r in s.args}
    return [v for v, s in zip(p.vals, p.steps) if s is not None and v.ref not in used]


def generate(seed: int) -> Program:
    p = Program(seed)
    p.input(p.shape(), p.dtype())
    if p.rng.random() < 0.5:
        p.input(p.partner_shape(p.vals[0].shape), p.dtype())
    p.outputs = grow(p, GENERATORS, p.rng.randint(2, 12))
    if not p.outputs:   # only inputs: return a computed copy of the first one
        a = p.vals[0]
        p.outputs = [p.add([a], a.shape, a.dtype, a.bound, a.err, a.exact, np.negative, lambda x: -x, "neg")]
    return p


def make_inputs(p: Program) -> list[np.ndarray]:
    rng = np.random.default_rng(p.seed)
    out = []
    for v in p.inputs:
        if is_int(v.dtype):
            lo, hi = {U8: (0, 256), I8: (-128, 128)}.get(v.dtype, (-4, 5))
            x = rng.integers(lo, hi, v.shape).astype(v.dtype)
        else:
            x = rng.uniform(-2, 2, v.shape)
            if rng.random() < 0.2:   # some exactly representable values with ties for max/min/where
                x = np.round(x * 2) / 2
            x = x.astype(v.dtype)
        r = rng.random()
        if r < 0.1 and x.ndim >= 2:   # non-contiguous views: the runtime must copy them, never misread them
            x = np.asfortranarray(x)
        elif r < 0.2 and x.ndim:
            wide = np.zeros(x.shape[:-1] + (2 * x.shape[-1],), x.dtype)
            wide[..., ::2] = x
            x = wide[..., ::2]
        out.append(x)
    return out


# ----------------------------------------------------------------------------- running

def run_numpy(p: Program, inputs) -> list[np.ndarray]:
    env = dict(zip((v.ref for v in p.inputs), inputs))
    with np.errstate(all="ignore"):
        for s in p.steps:
            if s is not None:
                env[s.out.ref] = np.asarray(s.np_fn(*[env[r] for r in s.args]))
    return [env[v.ref] for v in p.outputs]


def trace_programs(progs: list[Program]):
    """One graph computing every program's outputs from every program's inputs."""
    def fn(*xs):
        it = iter(xs)
        outs = []
        for p in progs:
            env = {v.ref: next(it) for v in p.inputs}
            for s in p.steps:
                if s is not None:
                    env[s.out.ref] = s.mlc_fn(*[env[r] for r in s.args])
            outs += [env[v.ref] for v in p.outputs]
        return tuple(outs)

    fn.__name__ = f"fuzz_{progs[0].seed}"
    return mlc.trace(fn, *[mlc.TensorType(v.shape, mlc.dtype(v.dtype.name)) for p in progs for v in p.inputs])


def compare(got, want, v: Val, what: str) -> str | None:
    got = np.asarray(got)
    if got.shape != tuple(v.shape) or got.dtype != want.dtype or want.shape != tuple(v.shape):
        return (f"{what}: got {got.dtype}{list(got.shape)}, numpy gives {want.dtype}{list(want.shape)} "
                f"(generator expects {v.dtype}{list(v.shape)})")
    if want.dtype.kind != "f":
        bad = got != want
    else:
        g, w = got.astype(np.float64), want.astype(np.float64)
        nan = np.isnan(g) | np.isnan(w)
        if v.exact:
            bad = ~((g == w) | (np.isnan(g) & np.isnan(w)))
        else:
            tol = K_ERR * v.err + 1e-300
            bad = np.where(nan, np.isnan(g) != np.isnan(w), ~(np.abs(g - w) <= tol))
    if not np.any(bad):
        return None
    idx = tuple(np.argwhere(bad)[0]) if got.ndim else ()
    return (f"{what}: {int(np.sum(bad))} of {bad.size} elements differ; first at {list(idx)}: {got[idx]!r}, numpy "
            f"{want[idx]!r} (allowed {'none (exact)' if v.exact or want.dtype.kind != 'f' else f'{K_ERR * v.err:.3g}'})")


@contextmanager
def bounds_checked(on: bool):
    old = os.environ.get("MLC_BOUNDS_CHECK")
    if on:
        os.environ["MLC_BOUNDS_CHECK"] = "1"
    try:
        yield
    finally:
        if on:
            if old is None:
                del os.environ["MLC_BOUNDS_CHECK"]
            else:
                os.environ["MLC_BOUNDS_CHECK"] = old


@contextmanager
def tuned_schedules():
    """Kernels compiled meanwhile get a schedule from the tuner's search space (random
    knobs, replayed as a tuned trace is) instead of the rules' defaults: the schedules
    a tuned model runs. The knobs are a function of the kernel's text, so a kernel gets
    the same schedule in a batch and alone."""
    from mlc import driver
    from mlc.schedule.database import workload_key
    from mlc.tune.space import SearchSpace
    real = driver.schedule_kernel

    def schedule(kernel, target, trace=None):
        space = SearchSpace(kernel, target)
        config = random.Random(workload_key(kernel, target)).choice(space.configs)
        return real(kernel, target, space.schedule(config).trace)

    driver.schedule_kernel = schedule
    try:
        yield
    finally:
        driver.schedule_kernel = real


def check(progs: list[Program], opt_levels=OPT_LEVELS, bounds_check=True, tuned=True) -> list[str]:
    """Problems found running ``progs`` as one graph (empty: all agree)."""
    inputs = [x for p in progs for x in make_inputs(p)]
    wants, outs = [], []
    pos = 0
    for p in progs:
        ins = inputs[pos:pos + len(p.inputs)]
        pos += len(p.inputs)
        wants += run_numpy(p, ins)
        outs += p.outputs
    problems = []
    try:
        graph = trace_programs(progs)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)   # numpy's "mean of empty slice"
            results = {"reference": ops.run_reference(graph, *inputs)}
        with bounds_checked(bounds_check):
            for o in opt_levels:
                r = mlc.compile(graph, opt_level=o)(*inputs)
                results[f"-O{o}"] = list(r) if isinstance(r, tuple) else [r]
            if tuned:
                with tuned_schedules():
                    r = mlc.compile(graph, opt_level=max(opt_levels))(*inputs)
                results[f"-O{max(opt_levels)} tuned"] = list(r) if isinstance(r, tuple) else [r]
    except Exception as e:   # noqa: BLE001 - any exception is a finding
        tb = traceback.extract_tb(e.__traceback__)[-1]
        return [f"{type(e).__name__}: {e} (at {os.path.basename(tb.filename)}:{tb.lineno})"]
    for name, got in results.items():
        if len(got) != len(wants):
            problems.append(f"{name}: {len(got)} outputs, expected {len(wants)}")
            continue
        for k, (g, w, v) in enumerate(zip(got, wants, outs)):
            msg = compare(g, w, v, f"{name} output {k}")
            if msg:
                problems.append(msg)
    if problems:
        problems.append("graph:\n" + str(graph))
    return problems


def describe(p: Program) -> str:
    lines = [f"%{v.ref} = input {v.dtype}{list(v.shape)}" if s is None else
             f"%{v.ref} = {s.text}({', '.join(f'%{r}' for r in s.args)}) -> {v.dtype}{list(v.shape)}"
             f"{' exact' if v.exact else f' err~{v.err:.2g}'}" for v, s in zip(p.vals, p.steps)]
    return "\n".join(lines) + f"\noutputs: {', '.join(f'%{v.ref}' for v in p.outputs)}"


# Failures already reported against code outside the fuzzer's reach, by a fragment of
# their message: counted as "known", not as failures. Empty when everything is fixed.
KNOWN: dict[str, str] = {}


def _known(problems: list[str]) -> str | None:
    text = "\n".join(problems)
    return next((k for k in KNOWN if k in text), None)


def fuzz(seed: int, iterations: int, batch: int = BATCH, opt_levels=OPT_LEVELS, bounds_check=True) -> FuzzResult:
    """``iterations`` programs, the k-th generated from ``seed + k`` (so ``fuzz(s, 1)``
    replays program s alone), ``batch`` per compiled graph."""
    result = FuzzResult("programs")
    for start in range(seed, seed + iterations, batch):
        progs = [generate(s) for s in range(start, min(start + batch, seed + iterations))]
        result.cases += len(progs)
        if not check(progs, opt_levels, bounds_check):
            continue
        alone = False
        for p in progs:
            problems = check([p], opt_levels, bounds_check) if len(progs) > 1 else check(progs, opt_levels,
                                                                                        bounds_check)
            if problems:
                alone = True
                known = _known(problems)
                if known:
                    result.notes[f"known: {KNOWN[known]}"] = result.notes.get(f"known: {KNOWN[known]}", 0) + 1
                    continue
                result.fail(f"seed {p.seed} (replay: fuzz({p.seed}, 1)): " + "\n".join(problems)
                            + "\nprogram:\n" + describe(p))
        if not alone:
            result.fail(f"seeds {progs[0].seed}..{progs[-1].seed} fail only together (replay: "
                        f"fuzz({progs[0].seed}, {len(progs)}, batch={len(progs)})): "
                        + "\n".join(check(progs, opt_levels, bounds_check)))
    return result
