"""Every registered op, compiled with ``mlc.compile`` and run, against numpy.

Each case checks the output dtype and shape exactly and the values with a
tolerance for the dtype (integers and bools exactly). Shapes cover 0-d tensors,
size-1 dims, extents that are not multiples of the vector width (8 f32 lanes on
AVX2) and sizes large enough (>= 32768 elements) for the parallel path.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

import mlc
from numerics import assert_matches  # noqa: E402
from mlc import ops

F16, F32, F64 = np.float16, np.float32, np.float64
I8, I32, I64, U8, B = np.int8, np.int32, np.int64, np.uint8, np.bool_
I16, U16, U32, U64 = np.int16, np.uint16, np.uint32, np.uint64

# (rtol, atol) per result dtype; integer and bool results must match exactly
TOL = {np.dtype(F16): (1e-2, 1e-3), np.dtype(F32): (1e-5, 1e-6), np.dtype(F64): (1e-12, 1e-13)}
# transcendental functions, reductions and contractions: a little looser for f32
LOOSE = {np.dtype(F16): (1e-2, 1e-3), np.dtype(F32): (3e-5, 1e-6), np.dtype(F64): (1e-12, 1e-13)}

BIG = (300, 130)        # 39000 elements: over the parallel threshold, 130 % 8 != 0
WIDE = (64, 1000)       # 64000 elements

_RNG = np.random.default_rng(1234)


def rand(shape, dtype, lo=-3.0, hi=3.0):
    """Random data of a dtype: uniform floats in [lo, hi), integers in [lo, hi], bools 50/50."""
    dt = np.dtype(dtype)
    if dt == np.bool_:
        return np.asarray(_RNG.random(shape) < 0.5)
    if dt.kind in "iu":
        info = np.iinfo(dt)
        lo, hi = max(int(lo), info.min), min(int(hi), info.max)
        big = {"dtype": dt} if hi > np.iinfo(np.int64).max else {}   # uint64 beyond int64's range
        return np.asarray(_RNG.integers(lo, hi, size=shape, endpoint=True, **big)).astype(dt)
    return np.asarray(_RNG.uniform(lo, hi, size=shape)).astype(dt)


def nonzero(a):
    """``a`` with zeros replaced by ones (divisors, integer products)."""
    a = np.array(a, copy=True)
    a[a == 0] = 1
    return a


def run(fn, *args):
    """Compile ``fn`` for ``args`` and run it on them."""
    return mlc.compile(fn, *args)(*args)


def check(got, want, tol=TOL):
    """``got`` (an mlc result) has numpy's dtype and shape and matches its values."""
    assert isinstance(got, np.ndarray), f"expected an ndarray, got {type(got).__name__}"
    assert_matches(got, want, tol, equal_nan=True)


def ids(cases):
    return [str(c) for c in cases]


# ============================================================================ the op list itself

def test_every_registered_op_is_tested():
    """Each op of the registry is exercised by name in some test module."""
    import glob
    import os
    import re
    tests = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    text = "\n".join(open(f).read() for f in glob.glob(os.path.join(tests, "**", "test_*.py"), recursive=True))
    untested = [name for name in ops.REGISTRY if name != "constant"
                and not re.search(rf"(mlc\.{name}\b|[\"']{name}[\"'])", text)]
    assert not untested, untested


# ============================================================================ unary

_erf = np.vectorize(math.erf, otypes=[F64])


def np_erf(x):
    return _erf(x.astype(F64)).astype(np.exp(x).dtype)


UNARY = {
    "neg": (np.negative, -3, 3),
    "abs": (np.abs, -3, 3),
    "exp": (np.exp, -3, 3),
    "log": (np.log, 0.05, 5),
    "sqrt": (np.sqrt, 0, 5),
    "rsqrt": (lambda x: 1 / np.sqrt(x), 0.05, 5),
    "tanh": (np.tanh, -4, 4),
    "sigmoid": (lambda x: 1 / (1 + np.exp(-x.astype(np.exp(x).dtype))), -6, 6),
    "relu": (lambda x: np.maximum(x, x.dtype.type(0)), -3, 3),
    "sin": (np.sin, -4, 4),
    "cos": (np.cos, -4, 4),
    "erf": (np_erf, -3, 3),
}
UNARY_SHAPES = [(), (1,), (7,), (9,), (33,), (1, 1, 3), (4, 17), BIG]


@pytest.mark.parametrize("shape", UNARY_SHAPES, ids=ids(UNARY_SHAPES))
@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_f32_shapes(name, shape):
    ref, lo, hi = UNARY[name]
    x = rand(shape, F32, lo, hi)
    check(run(getattr(mlc, name), x), ref(x), LOOSE)


@pytest.mark.parametrize("dtype", [F64, F16], ids=["f64", "f16"])
@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_float_dtypes(name, dtype):
    ref, lo, hi = UNARY[name]
    for shape in [(), (3, 17)]:
        x = rand(shape, dtype, lo, hi)
        check(run(getattr(mlc, name), x), ref(x), LOOSE)


# integer and bool inputs: numpy gives ints for neg/abs/relu and floats (f16 for
# 8-bit inputs, f64 for wider ones) for the math functions
UNARY_INT = [("neg", I32), ("neg", I8), ("neg", U8), ("neg", I64), ("abs", I8), ("abs", I64), ("abs", U8),
             ("abs", B), ("relu", I32), ("relu", I8), ("relu", U8), ("relu", B), ("exp", I32), ("exp", I8),
             ("sqrt", U8), ("log", I64), ("sin", I8), ("erf", I32), ("sigmoid", B), ("tanh", U8),
             ("neg", I16), ("neg", U16), ("neg", U64), ("abs", I16), ("abs", U32), ("relu", U32), ("sqrt", U16),
             ("exp", I16), ("log", U64)]


@pytest.mark.parametrize("name,dtype", UNARY_INT, ids=[f"{n}-{np.dtype(d).name}" for n, d in UNARY_INT])
def test_unary_int_and_bool(name, dtype):
    lo, hi = {"log": (1, 1000), "sqrt": (0, 255), "exp": (-5, 5)}.get(name, (-128, 127))
    for shape in [(5, 19), (2, 70)]:                 # 70: past the 32 lanes of 8-bit vectors
        x = rand(shape, dtype, lo, hi)
        check(run(getattr(mlc, name), x), UNARY[name][0](x), LOOSE)


def test_abs_of_int8_min_wraps_like_numpy():
    x = np.array([-128, -127, -1, 0, 1, 127] * 3, dtype=I8)
    check(run(mlc.abs, x), np.abs(x))


def test_unary_special_values():
    x = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-30, -5.0, 88.0, 100.0], dtype=F32)
    with np.errstate(all="ignore"):
        for name in ("neg", "abs", "exp", "tanh", "sigmoid", "relu", "sqrt", "log", "erf"):
            check(run(getattr(mlc, name), x), UNARY[name][0](x), LOOSE)


# ============================================================================ binary

BINARY = {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.true_divide, "pow": np.power,
    "maximum": np.maximum, "minimum": np.minimum,
}
PAIRS = [((), ()), ((7,), (7,)), ((3, 1), (1, 4)), ((5,), (2, 3, 5)), ((), (9,)), ((17,), ()),
         ((1,), (33,)), ((2, 1, 3), (4, 1)), (BIG, BIG), ((300, 1), (1, 130)), (WIDE, (1000,))]


def binary_inputs(name, sa, sb, da, db):
    if name == "pow":
        if np.dtype(da).kind == "f":
            return rand(sa, da, 0.5, 2.0), rand(sb, db, -2, 2)
        return rand(sa, da, -3, 3), rand(sb, db, 0, 3)   # no negative integer exponents
    a, b = rand(sa, da), rand(sb, db)
    if name == "div":
        b = nonzero(b) if np.dtype(db).kind != "f" else np.where(np.abs(b) < 0.1, 1, b).astype(db)
    return a, b


@pytest.mark.parametrize("sa,sb", PAIRS, ids=ids(PAIRS))
@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary_f32_broadcasting(name, sa, sb):
    a, b = binary_inputs(name, sa, sb, F32, F32)
    tol = LOOSE if name == "pow" else TOL
    check(run(getattr(mlc, name), a, b), BINARY[name](a, b), tol)


BINARY_DTYPES = [F64, F16, I32, I64, I8, U8, B, I16, U16, U32, U64]


@pytest.mark.parametrize("dtype", BINARY_DTYPES, ids=[np.dtype(d).name for d in BINARY_DTYPES])
@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary_dtypes(name, dtype):
    if name == "sub" and dtype is B:
        with pytest.raises(mlc.TraceError):       # numpy refuses bool subtraction too
            mlc.compile(mlc.sub, rand((3,), B), rand((3,), B))
        return
    for sa, sb in [((3, 1), (1, 9)), ((2, 70), (70,))]:   # 70: past the 32 lanes of 8-bit vectors
        a, b = binary_inputs(name, sa, sb, dtype, dtype)
        check(run(getattr(mlc, name), a, b), BINARY[name](a, b), LOOSE)


def test_integer_arithmetic_wraps_like_numpy():
    a = rand((40,), I8, -128, 127)
    b = rand((40,), I8, -128, 127)
    check(run(lambda a, b: (a + b) * b - a, a, b), (a + b) * b - a)
    c = rand((40,), U8, 0, 255)
    check(run(lambda c: c * c + c, c), c * c + c)


MIXED = [(F32, F64), (I32, F32), (I8, I32), (U8, F32), (B, F16), (I64, F16), (U8, I32), (B, I8), (F16, F32),
         (U8, I8), (U16, I16), (U32, I32), (U64, I64), (U64, F32), (U16, F16), (I16, U32), (U8, U64), (I8, U16)]


@pytest.mark.parametrize("da,db", MIXED, ids=[f"{np.dtype(a).name}-{np.dtype(b).name}" for a, b in MIXED])
def test_binary_mixed_dtypes(da, db):
    for name in ("add", "mul", "div", "maximum"):
        a, b = binary_inputs(name, (2, 9), (9,), da, db)
        check(run(getattr(mlc, name), a, b), BINARY[name](a, b), LOOSE)


def test_binary_python_scalars_are_weak():
    x = rand((3, 9), F16)
    check(run(lambda x: x + 2.5, x), x + 2.5)
    check(run(lambda x: 1.5 - x, x), 1.5 - x)
    check(run(lambda x: x / 3, x), x / 3)
    i = rand((3, 9), I8, -20, 20)
    check(run(lambda i: 2 * i, i), 2 * i)
    check(run(lambda i: i * 0.5, i), i * 0.5)        # a float scalar promotes an int tensor to f64
    u = rand((3, 9), U8, 0, 100)
    check(run(lambda u: u + 7, u), u + 7)


@pytest.mark.parametrize("dtype", [F32, F64, F16], ids=["f32", "f64", "f16"])
def test_pow_by_python_scalars(dtype):
    x = rand((5, 17), dtype, 0.1, 3)
    for fn in (lambda x: x ** 2, lambda x: x ** 0.5, lambda x: x ** 1, lambda x: x ** 3, lambda x: x ** -1.5,
               lambda x: 2.0 ** x, lambda x: x ** 0):
        check(run(fn, x), fn(x), LOOSE)


@pytest.mark.parametrize("dtype", [I64, I32, I8, U8, I16, U16, U32, U64], ids=lambda d: np.dtype(d).name)
def test_integer_pow_is_exact_and_wraps(dtype):
    # beyond 2**53 (where a float64 power is inexact) and past the dtype's range (numpy wraps)
    base = np.array([3, 2000, 2_000_001, -7, 123457, 0, 1, -1, 2, 5, 255, -128] * 3)
    exp = np.array([39, 3, 3, 5, 4, 0, 9, 7, 63, 27, 2, 3] * 3)
    a, e = base.astype(dtype), exp.astype(dtype)
    check(run(mlc.pow, a, e), np.power(a, e))
    check(run(lambda a: a ** 3, a), a ** 3)      # a literal exponent
    check(run(lambda a: a ** 2, a), a ** 2)
    check(run(lambda e: 3 ** e, e), 3 ** e)


def test_maximum_minimum_propagate_nan():
    a = np.array([1.0, np.nan, 3.0, np.nan, -0.0, 2.0, 5.0, 1.0, np.nan], dtype=F32)
    b = np.array([np.nan, 2.0, 1.0, np.nan, 0.0, 2.0, -5.0, 7.0, 0.0], dtype=F32)
    check(run(mlc.maximum, a, b), np.maximum(a, b))
    check(run(mlc.minimum, a, b), np.minimum(a, b))


# ============================================================================ comparisons

COMPARE = {"equal": np.equal, "less": np.less, "greater": np.greater}
OPERATORS = {
    "==": (lambda a, b: a == b), "!=": (lambda a, b: a != b), "<": (lambda a, b: a < b),
    ">": (lambda a, b: a > b), "<=": (lambda a, b: a <= b), ">=": (lambda a, b: a >= b),
}
CMP_DTYPES = [F32, F64, F16, I32, I64, I8, U8, B, I16, U16, U32, U64]


def cmp_inputs(sa, sb, da, db):
    # few distinct values, so equal elements are common
    return rand(sa, da, -2, 2).round().astype(da), rand(sb, db, -2, 2).round().astype(db)


@pytest.mark.parametrize("dtype", CMP_DTYPES, ids=[np.dtype(d).name for d in CMP_DTYPES])
def test_comparisons_dtypes(dtype):
    a, b = cmp_inputs((4, 9), (4, 9), dtype, dtype)
    for name, ref in COMPARE.items():
        check(run(getattr(mlc, name), a, b), ref(a, b))


@pytest.mark.parametrize("sa,sb", PAIRS, ids=ids(PAIRS))
def test_comparisons_broadcasting(sa, sb):
    a, b = cmp_inputs(sa, sb, F32, F32)
    got = run(lambda a, b: (mlc.equal(a, b), mlc.less(a, b), mlc.greater(a, b)), a, b)
    for g, ref in zip(got, COMPARE.values()):
        check(g, ref(a, b))


CMP_MIXED = [(I32, F32), (F16, F64), (I8, U8), (U8, I64), (B, I32), (I8, F16), (U64, I64), (I8, U64), (U16, I16),
             (U32, I8)]


@pytest.mark.parametrize("da,db", CMP_MIXED, ids=[f"{np.dtype(a).name}-{np.dtype(b).name}" for a, b in CMP_MIXED])
def test_comparisons_mixed_dtypes(da, db):
    a, b = rand((3, 1), da, -3, 3), rand((1, 9), db, -3, 3)
    if da is I8 and db is U8:
        a = np.array([[-128], [0], [127]], dtype=I8)
        b = np.array([[0, 1, 127, 128, 255, 0, 3, 200, 127]], dtype=U8)
    for name, ref in COMPARE.items():
        check(run(getattr(mlc, name), a, b), ref(a, b))


def test_uint64_against_signed_compares_exactly():
    # numpy compares these exactly; through their promoted dtype, float64, 2**63 - 1
    # and 2**63 would be equal, and negative values would wrap
    a = np.array([[2 ** 63 - 1], [2 ** 64 - 1], [0], [2 ** 63], [5]], dtype=U64)
    b = np.array([[2 ** 63 - 1, -1, 0, -(2 ** 63), 5, 6, 2 ** 62]], dtype=I64)
    for name, ref in COMPARE.items():
        check(run(getattr(mlc, name), a, b), ref(a, b))
        check(run(getattr(mlc, name), b.T, a.T), ref(b.T, a.T))


@pytest.mark.parametrize("dtype", [F32, I32, U8], ids=["f32", "i32", "u8"])
def test_comparison_operators_on_tracers(dtype):
    a, b = cmp_inputs((5, 11), (11,), dtype, dtype)
    fns = list(OPERATORS.values())
    for got, fn in zip(run(lambda a, b: [fn(a, b) for fn in fns], a, b), fns):
        check(got, fn(a, b))
    k = 0.5 if dtype is F32 else 1               # against a Python scalar
    for got, fn in zip(run(lambda a: [fn(a, k) for fn in fns], a), fns):
        check(got, fn(a, k))


@pytest.mark.parametrize("sym", ["==", "!=", "<", ">", "<=", ">="])
def test_comparison_operators_with_nan(sym):
    # every comparison with NaN is false, except != which is true
    a = np.array([np.nan, 1.0, np.nan, 2.0, 0.0], dtype=F32)
    b = np.array([1.0, np.nan, np.nan, 2.0, 1.0], dtype=F32)
    fn = OPERATORS[sym]
    check(run(fn, a, b), fn(a, b))


# ============================================================================ where

WHERE = [((3, 1), (1, 4), ()), ((5,), (2, 3, 5), (5,)), ((), (7,), (7,)), ((9,), (), ()),
         (BIG, BIG, (130,)), ((1, 130), (300, 1), ())]


@pytest.mark.parametrize("sc,sa,sb", WHERE, ids=ids(WHERE))
def test_where_broadcasting(sc, sa, sb):
    c, a, b = rand(sc, B), rand(sa, F32), rand(sb, F32)
    check(run(mlc.where, c, a, b), np.where(c, a, b))


WHERE_DTYPES = [(F64, F64), (F16, F16), (I32, I32), (I8, I8), (U8, U8), (B, B), (I64, I64), (I32, F32),
                (F16, I8), (B, U8), (I16, I16), (U16, U16), (U32, U32), (U64, U64), (U8, I8), (U64, I64)]


@pytest.mark.parametrize("da,db", WHERE_DTYPES, ids=[f"{np.dtype(a).name}-{np.dtype(b).name}" for a, b in WHERE_DTYPES])
def test_where_dtypes(da, db):
    for sc, sa, sb in [((4, 1), (1, 9), (4, 9)), ((3, 70), (70,), ())]:
        c, a, b = rand(sc, B), rand(sa, da), rand(sb, db)
        check(run(mlc.where, c, a, b), np.where(c, a, b))


def test_where_with_scalars_and_computed_condition():
    x = rand((6, 17), F32)
    check(run(lambda x: mlc.where(x > 0, x, 0.0), x), np.where(x > 0, x, 0.0))
    check(run(lambda x: mlc.where(x < 1, -1.5, x * 2), x), np.where(x < 1, -1.5, x * 2))
    i = rand((6, 17), I32)
    check(run(lambda i: mlc.where(i >= 0, 1, i), i), np.where(i >= 0, 1, i))


# ============================================================================ cast and copy

CASTS = [  # (from, to, lo, hi)
    (F32, I32, -100, 100), (F64, I8, -100, 100), (F32, U8, 0, 250), (F16, I32, -100, 100), (F64, I64, -1e9, 1e9),
    (I32, F32, -1000, 1000), (I64, F64, -10 ** 9, 10 ** 9), (U8, F16, 0, 255), (I8, F32, -128, 127),
    (F32, B, -2, 2), (I32, B, -2, 2), (U8, B, 0, 2), (F16, B, -1, 1),
    (B, F32, 0, 1), (B, I32, 0, 1), (B, U8, 0, 1), (B, F16, 0, 1),
    (F32, F16, -100, 100), (F16, F32, -100, 100), (F64, F32, -100, 100), (F32, F64, -100, 100),
    (F64, F16, -7e4, 7e4), (F16, F64, -100, 100), (I64, F16, -7e4, 7e4), (F16, I64, -100, 100),
    (I64, I8, -1000, 1000), (U8, I8, 0, 255), (I8, U8, -128, 127), (I8, I64, -128, 127), (I32, U8, -300, 300),
    (F32, U16, 0, 6e4), (F64, U32, 0, 4e9), (F64, U64, 0, 1.8e19), (F16, U64, 0, 6e4), (F32, I16, -3e4, 3e4),
    (U16, F32, 0, 65535), (U32, F64, 0, 2 ** 32 - 1), (U64, F64, 0, 2 ** 64 - 1), (U64, F32, 0, 2 ** 64 - 1),
    (U64, F16, 0, 6e4), (U32, F16, 0, 6e4), (I16, F16, -3e4, 3e4), (U16, B, 0, 2), (B, U64, 0, 1),
    (U64, I64, 0, 2 ** 64 - 1), (I64, U64, -10 ** 18, 10 ** 18), (I16, U32, -3e4, 3e4), (U32, I16, 0, 2 ** 32 - 1),
    (U8, U64, 0, 255), (U64, U8, 0, 2 ** 64 - 1), (I8, I16, -128, 127), (U16, I8, 0, 65535),
]


@pytest.mark.parametrize("src,dst,lo,hi", CASTS,
                         ids=[f"{np.dtype(a).name}->{np.dtype(b).name}" for a, b, _, _ in CASTS])
@np.errstate(over="ignore")                      # beyond the f16 range: inf
def test_cast(src, dst, lo, hi):
    for shape in [(), (3, 33)]:
        x = rand(shape, src, lo, hi)
        if np.dtype(src).kind == "f" and np.dtype(dst).kind != "f" and x.size > 2:
            x.reshape(-1)[:2] = 0                 # exact zeros (-> False / 0)
        check(run(lambda x: mlc.cast(x, dst), x), x.astype(dst))
    x = rand(BIG, src, lo, hi)
    check(run(lambda x: x.astype(dst), x), x.astype(dst))


def test_cast_float_to_int_truncates_toward_zero():
    x = np.array([-2.9, -2.5, -1.1, -0.9, -0.0, 0.4, 0.5, 1.99, 2.5, 126.7, -127.9], dtype=F32)
    for dst in (I32, I8, I64):
        check(run(lambda x: mlc.cast(x, dst), x), x.astype(dst))


def test_cast_f64_to_f16_rounds_once():
    # halfway between neighbouring f16 values (ties to even), a hair either side, specials:
    # the result must be numpy's bit for bit, not a double rounding through f32
    h = np.arange(0, 0x7C00, 37, dtype=np.uint16).view(F16).astype(F64)
    mid = (h[:-1] + h[1:]) / 2
    x = np.concatenate([mid, np.nextafter(mid, np.inf), np.nextafter(mid, -np.inf), -mid, [
        0.0, -0.0, np.inf, -np.inf, np.nan, 65519.99, 65520.0, 1e300, 1e-300, -2.98023223876953125e-08]])
    with np.errstate(over="ignore"):
        want = x.astype(F16)
    got = run(lambda x: x.astype(F16), x)
    assert got.dtype == F16
    np.testing.assert_array_equal(got.view(np.uint16), want.view(np.uint16))


def test_cast_nan_to_bool_is_true():
    x = np.array([np.nan, 0.0, -0.0, np.inf, 1e-40], dtype=F32)
    check(run(lambda x: mlc.cast(x, "bool"), x), x.astype(B))


@pytest.mark.parametrize("dtype", [F32, F16, F64, I8, I64, U8, B, I16, U16, U32, U64], ids=lambda d: np.dtype(d).name)
def test_copy(dtype):
    for shape in [(), (7,), BIG]:
        x = rand(shape, dtype)
        got = run(mlc.copy, x)
        check(got, x.copy())
        assert not np.shares_memory(got, x)


# ============================================================================ reductions

REDUCE = {"sum": np.sum, "mean": np.mean, "max": np.max, "min": np.min, "prod": np.prod}
REDUCE_CASES = [  # (shape, axis)
    ((), None), ((), 0), ((), -1), ((7,), None), ((7,), 0), ((33,), -1), ((1,), 0), ((4, 17), ()),
    ((5, 17), None), ((5, 17), 0), ((5, 17), 1), ((5, 17), -2), ((5, 17), (-1, 0)), ((1, 9), 0), ((9, 1), 1),
    ((3, 9, 17), 0), ((3, 9, 17), 1), ((3, 9, 17), 2), ((3, 9, 17), -1), ((3, 9, 17), (0, 2)),
    ((3, 9, 17), (0, 1)), ((3, 9, 17), (1, 2)), ((3, 9, 17), (-3, -1)), ((3, 9, 17), None), ((1, 9, 1), (0, 2)),
    (BIG, 1), (BIG, 0), (BIG, None), ((8, 300, 33), (0, 2)), ((17, 64, 40), 1),
]


def reduce_input(name, shape, dtype):
    if name == "prod":
        if np.dtype(dtype).kind == "f":
            return rand(shape, dtype, 0.9, 1.1)
        return nonzero(rand(shape, dtype, -3, 3))
    if name in ("sum", "mean") and np.dtype(dtype).kind == "f":
        return rand(shape, dtype, 0.5, 1.5)     # no cancellation: a relative tolerance is meaningful
    return rand(shape, dtype, -100, 100)


# Every case runs on sum, with and without keepdims; max, mean, min and prod run the
# core cases below (the axis bookkeeping is shared by all reductions; the core cases
# reach each schedule: scalar loops, vector partials, register tiles, threads).
# numpy's mean refuses axis=0 on a 0-d array (its sum, max, min, prod take it): see
# test_mean_of_0d_over_axis_0 for mlc's rule.
REDUCE_CORE = {((), None), ((), 0), ((7,), 0), ((33,), -1), ((5, 17), 0), ((5, 17), 1), ((5, 17), (-1, 0)),
               ((3, 9, 17), 1), ((3, 9, 17), (0, 2)), ((3, 9, 17), -1), ((1, 9, 1), (0, 2)), (BIG, 1), (BIG, 0),
               (BIG, None), ((17, 64, 40), 1)}
REDUCE_PARAMS = [(name, shape, axis, keepdims) for name in sorted(REDUCE) for shape, axis in REDUCE_CASES
                 for keepdims in (False, True)
                 if name == "sum" or ((shape, axis) in REDUCE_CORE and (not keepdims or len(shape) == 3))
                 if not (name == "mean" and shape == () and axis is not None)]


@pytest.mark.parametrize("name,shape,axis,keepdims", REDUCE_PARAMS, ids=ids(REDUCE_PARAMS))
def test_reduction_axes(name, shape, axis, keepdims):
    x = reduce_input(name, shape, F32)
    fn = getattr(mlc, name)
    check(run(lambda x: fn(x, axis=axis, keepdims=keepdims), x),
          REDUCE[name](x, axis=axis, keepdims=keepdims), LOOSE)


def test_mean_of_0d_over_axis_0():
    # like sum/max/min/prod (and numpy's sum): a 0-d tensor reduces over axis 0 or -1 to itself
    x = np.array(2.5, dtype=F32)
    for axis in (0, -1, ()):
        check(run(lambda x: mlc.mean(x, axis=axis), x), np.mean(x, axis=()))
        check(run(lambda x: mlc.mean(x, axis=axis, keepdims=True), x), np.sum(x, axis=axis, keepdims=True))


REDUCE_DTYPES = [F64, F16, I32, I64, I8, U8, B, I16, U16, U32, U64]


def np_reduce(name, x, **kw):
    """numpy's reduction: sums and products of small integers widen to int64 / uint64."""
    return REDUCE[name](x, **kw)


@pytest.mark.parametrize("dtype", REDUCE_DTYPES, ids=[np.dtype(d).name for d in REDUCE_DTYPES])
@pytest.mark.parametrize("name", sorted(REDUCE))
def test_reduction_dtypes(name, dtype):
    # 40: past the 32 lanes of 8-bit vectors, for vector partials (1-D) and register tiles (2-D)
    for shape, axis, keepdims in [((3, 9, 17), (0, 2), True), ((40,), None, False), ((21, 40), 0, False)]:
        x = reduce_input(name, shape, dtype)
        fn = getattr(mlc, name)
        check(run(lambda x: fn(x, axis=axis, keepdims=keepdims), x),
              np_reduce(name, x, axis=axis, keepdims=keepdims), LOOSE)


def test_reduction_methods_on_tracers():
    x = rand((6, 19), F32, 0.5, 1.5)
    fn = lambda x: (x.sum(), x.mean(axis=0), x.max(axis=-1, keepdims=True), x.min(1), x.prod(axis=(0,)))
    got = run(fn, x)
    want = (x.sum(), x.mean(axis=0), x.max(axis=-1, keepdims=True), x.min(1), x.prod(axis=(0,)))
    for g, w in zip(got, want):
        check(g, w, LOOSE)


# Long reductions run as a tree of blocks (ops/reduction.py): shapes whose reduced extent
# leaves a tail after the last whole block, reductions over inner, outer and all axes.
LONG_REDUCE = [((2 ** 20 + 7,), None), ((3, 100003), 1), ((100003, 3), 0), ((64, 257, 33), None),
               ((5, 4099, 3), (1, 2)), ((2, 70000), None), ((9000, 7), 0)]


@pytest.mark.parametrize("shape,axis", LONG_REDUCE, ids=ids(LONG_REDUCE))
@pytest.mark.parametrize("name", ["sum", "mean", "max", "min"])
def test_long_reductions_match_numpy(name, shape, axis):
    x = rand(shape, F32)
    fn = getattr(mlc, name)
    for keepdims in (False, True):
        got = run(lambda x: fn(x, axis=axis, keepdims=keepdims), x)
        want = REDUCE[name](x.astype(F64), axis=axis, keepdims=keepdims)
        assert got.dtype == F32 and got.shape == want.shape
        # float32 sums accumulate in float64: the result is float32's rounding of the exact sum
        np.testing.assert_allclose(got, want, rtol=2e-7 if name in ("sum", "mean") else 0, atol=1e-6)


def test_float32_sum_of_2_pow_25_ones_is_exact():
    # one float32 accumulator stops growing at 2**24 (adding 1.0 no longer changes it)
    x = np.ones(2 ** 25, F32)
    assert run(lambda x: x.sum(), x) == 2.0 ** 25
    assert run(lambda x: x.mean(), x) == 1.0
    assert run(lambda x: x.sum(axis=0, keepdims=True), x).tolist() == [2.0 ** 25]


@pytest.mark.parametrize("n", [5000, 100003, 2 ** 21])
def test_float64_sum_is_as_accurate_as_numpy(n):
    rng = np.random.default_rng(n)
    got_err, np_err = [], []
    for _ in range(4):
        x = rng.standard_normal(n) + 0.25
        exact = math.fsum(x)
        got_err.append(abs(run(lambda x: x.sum(), x) - exact))
        np_err.append(abs(x.sum() - exact))
    # numpy sums pairwise; the blocked tree's error is of the same order (a few units in
    # the last place of the sum), where one serial accumulator's grows with n
    ulp = np.spacing(abs(exact))
    assert max(got_err) <= max(max(np_err), ulp) * 8, (got_err, np_err)


def test_mean_over_an_empty_axis_is_nan():
    for shape, axis in [((0, 3), 0), ((2, 0), 1), ((0,), None), ((2, 0, 3), (1, 2))]:
        for dtype in (F32, F64, I32):
            x = np.ones(shape, dtype)
            with np.errstate(invalid="ignore"), pytest.warns(RuntimeWarning):
                want = np.mean(x, axis=axis)
            check(run(lambda x: mlc.mean(x, axis=axis), x), want)
    # sums of nothing are zero, products one
    check(run(lambda x: mlc.sum(x, axis=0), np.ones((0, 3), F32)), np.zeros(3, F32))
    check(run(lambda x: mlc.prod(x, axis=1), np.ones((2, 0), F32)), np.ones(2, F32))


def test_reductions_propagate_nan_and_inf():
    x = np.array([[1.0, np.nan, 3.0] * 4, [1.0, 2.0, np.inf] * 4, [-np.inf, 2.0, 3.0] * 4], dtype=F32)
    for name in ("sum", "max", "min", "prod", "mean"):
        fn = getattr(mlc, name)
        for axis in (None, 0, 1):
            with np.errstate(invalid="ignore"):
                want = REDUCE[name](x, axis=axis)
            check(run(lambda x: fn(x, axis=axis), x), want)


def test_integer_sum_does_not_overflow_the_input_type():
    x = np.full((3, 200), 127, dtype=I8)
    check(run(lambda x: mlc.sum(x, axis=1), x), np.sum(x, axis=1))
    u = np.full((3, 300), 255, dtype=U8)
    check(run(lambda u: mlc.sum(u, axis=1), u), np.sum(u, axis=1))   # uint64, as numpy
    w = np.full((3, 300), 65535, dtype=U16)
    check(run(lambda w: mlc.sum(w, axis=1), w), np.sum(w, axis=1))
    h = np.full((3, 300), -32768, dtype=I16)
    check(run(lambda h: mlc.sum(h, axis=1), h), np.sum(h, axis=1))
    b = rand((70, 9), B)
    check(run(lambda b: mlc.sum(b, axis=0), b), np.sum(b, axis=0))


SOFTMAX_CASES = [((), -1), ((1,), -1), ((7,), 0), ((5, 17), -1), ((5, 17), 0), ((5, 17), 1), ((3, 9, 17), 0),
                 ((3, 9, 17), 1), ((3, 9, 17), -1), ((4, 1, 9), 1), (BIG, -1), (BIG, 0), (WIDE, 1)]


def np_softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def np_log_softmax(x, axis):
    s = x - x.max(axis=axis, keepdims=True)
    return s - np.log(np.exp(s).sum(axis=axis, keepdims=True))


@pytest.mark.parametrize("shape,axis", SOFTMAX_CASES, ids=ids(SOFTMAX_CASES))
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_axes(name, shape, axis):
    x = rand(shape, F32, -5, 5)
    ref = np_softmax if name == "softmax" else np_log_softmax
    fn = getattr(mlc, name)
    check(run(lambda x: fn(x, axis=axis), x), ref(x, axis), LOOSE)


@pytest.mark.parametrize("dtype", [F64, F16], ids=["f64", "f16"])
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_dtypes(name, dtype):
    ref = np_softmax if name == "softmax" else np_log_softmax
    fn = getattr(mlc, name)
    for shape, axis in [((5, 17), -1), ((3, 9, 17), 1)]:
        x = rand(shape, dtype, -5, 5)
        # an f16 softmax is computed in f32 and rounded once; so is the reference
        want = ref(x, axis) if dtype is F64 else ref(x.astype(F32), axis).astype(F16)
        check(run(lambda x: fn(x, axis=axis), x), want, LOOSE)


def test_softmax_is_stable_for_large_inputs():
    x = np.array([[1000.0, 1001.0, 1002.0, -1000.0] * 3], dtype=F32)
    check(run(mlc.softmax, x), np_softmax(x, -1), LOOSE)
    check(run(mlc.log_softmax, x), np_log_softmax(x, -1), LOOSE)


def test_softmax_rejects_integers():
    with pytest.raises(mlc.TraceError, match="softmax"):
        mlc.compile(mlc.softmax, rand((3, 4), I32))


# ============================================================================ matmul

MATMUL_SHAPES = [((1, 1), (1, 1)), ((5, 7), (7, 3)), ((33, 17), (17, 19)), ((8, 16), (16, 8)), ((3, 40), (40, 1)),
                 ((1, 9), (9, 17)), ((7,), (7, 3)), ((5, 7), (7,)), ((7,), (7,)), ((1,), (1,)), ((33,), (33, 20)),
                 ((2, 3, 4), (4, 5)), ((4, 5), (2, 5, 3)), ((2, 1, 3, 4), (5, 4, 6)), ((3, 5, 4), (3, 4, 9)),
                 ((2, 3, 4), (4,)), ((4,), (3, 4, 2))]


def int_valued(shape, dtype):
    """Small integers stored as floats: every product and sum is exact, in any order."""
    return rand(shape, F64, -3, 3).round().astype(dtype)


@pytest.mark.parametrize("sa,sb", MATMUL_SHAPES, ids=ids(MATMUL_SHAPES))
def test_matmul_shapes(sa, sb):
    a, b = int_valued(sa, F32), int_valued(sb, F32)
    check(run(mlc.matmul, a, b), np.matmul(a, b))
    a, b = rand(sa, F32), rand(sb, F32)
    check(run(lambda a, b: a @ b, a, b), a @ b, {np.dtype(F32): (1e-5, 1e-5)})


MATMUL_DTYPES = [F64, F16, I32, I64, I8, U8, B, (F32, F64), (I32, F32), (I8, I32)]


@pytest.mark.parametrize("dt", MATMUL_DTYPES, ids=ids(MATMUL_DTYPES))
def test_matmul_dtypes(dt):
    da, db = dt if isinstance(dt, tuple) else (dt, dt)
    for sa, sb in [((5, 7), (7, 3)), ((33, 17), (17, 19)), ((9,), (9,)), ((5, 9), (9, 40))]:
        if np.dtype(da).kind in "iub":
            a, b = rand(sa, da, -4, 4), rand(sb, db, -4, 4)
        else:
            a, b = int_valued(sa, da), int_valued(sb, db)
        check(run(mlc.matmul, a, b), np.matmul(a, b))
    if np.dtype(da).kind in "iu" and np.dtype(db).kind in "iu":
        a, b = rand((3, 33), da, -100, 100), rand((33, 4), db, -100, 100)   # results wrap like numpy's
        check(run(mlc.matmul, a, b), np.matmul(a, b))


@pytest.mark.parametrize("sa,sb", [((64, 300), (300, 130)), ((8, 64, 64), (64, 72)), ((300, 33), (33, 130)),
                                   ((1000,), (1000, 70))], ids=["64x300x130", "batched", "300x33x130", "vec-mat"])
def test_matmul_large(sa, sb):
    a, b = rand(sa, F32, 0, 1), rand(sb, F32, 0, 1)
    check(run(mlc.matmul, a, b), np.matmul(a, b), LOOSE)
    a, b = int_valued(sa, F32), int_valued(sb, F32)
    check(run(mlc.matmul, a, b), np.matmul(a, b))


def test_matmul_f64_precision():
    a, b = rand((33, 300), F64), rand((300, 17), F64)
    check(run(mlc.matmul, a, b), a @ b, {np.dtype(F64): (1e-12, 1e-12)})


# ============================================================================ shape ops

@pytest.mark.parametrize("src,dst", [((12,), (3, 4)), ((3, 4), (-1,)), ((2, 3, 4), (4, -1)), ((), (1, 1)),
                                     ((1,), ()), ((1, 1), ()), ((6, 1, 5), (5, 6)), (BIG, (130, 300)),
                                     (BIG, (-1, 39, 2)), ((3, 17), (17, 3)), ((2, 3, 4), (2, 12))],
                         ids=str)
def test_reshape(src, dst):
    for dtype in (F32, B):
        x = rand(src, dtype)
        check(run(lambda x: mlc.reshape(x, dst), x), np.reshape(x, dst))
    x = rand(src, F64)
    check(run(lambda x: x.reshape(*dst) if dst else x.reshape(()), x), x.reshape(dst))


TRANSPOSES = [((3, 4), None), ((2, 3, 4), None), ((2, 3, 4), (1, 0, 2)), ((2, 3, 4), (0, 2, 1)),
              ((2, 3, 4), (2, 0, 1)), ((2, 3, 4), (-1, 0, 1)), ((1, 5), None), ((), None), ((9,), None),
              (BIG, None), ((17, 9, 33), (2, 0, 1)), ((33, 2, 17), (1, 2, 0)), ((2, 3, 4, 5), (3, 1, 0, 2))]


@pytest.mark.parametrize("shape,axes", TRANSPOSES, ids=ids(TRANSPOSES))
def test_transpose(shape, axes):
    for dtype in (F32, U8):
        x = rand(shape, dtype)
        check(run(lambda x: mlc.transpose(x, axes), x), np.transpose(x, axes))


def test_transpose_methods():
    x = rand((3, 5, 7), F16)
    check(run(lambda x: x.T, x), x.T)
    check(run(lambda x: x.transpose(1, 0, 2), x), x.transpose(1, 0, 2))
    check(run(lambda x: x.transpose((2, 1, 0)), x), x.transpose((2, 1, 0)))


BROADCASTS = [((), (3, 4)), ((1,), (9,)), ((3, 1), (2, 3, 5)), ((4,), (300, 4)), ((1, 130), BIG), ((), ()),
              ((5,), (5,)), ((2, 1, 3), (2, 17, 3))]


@pytest.mark.parametrize("src,dst", BROADCASTS, ids=ids(BROADCASTS))
def test_broadcast_to(src, dst):
    for dtype in (F32, B, F16):
        x = rand(src, dtype)
        check(run(lambda x: mlc.broadcast_to(x, dst), x), np.broadcast_to(x, dst))


def test_broadcast_to_rejects_incompatible_shapes():
    with pytest.raises(mlc.TraceError, match="broadcast"):
        mlc.compile(lambda x: mlc.broadcast_to(x, (3, 4)), rand((2, 4), F32))


EXPANDS = [((3, 4), 0), ((3, 4), 1), ((3, 4), 2), ((3, 4), -1), ((3, 4), (0, 3)), ((), 0), ((7,), (0, -1)),
           ((300, 130), 1)]


@pytest.mark.parametrize("shape,axis", EXPANDS, ids=ids(EXPANDS))
def test_expand_dims(shape, axis):
    for dtype in (F32, I8):
        x = rand(shape, dtype)
        check(run(lambda x: mlc.expand_dims(x, axis), x), np.expand_dims(x, axis))


SQUEEZES = [((1, 3, 1, 4), None), ((1, 3, 1, 4), 0), ((1, 3, 1, 4), 2), ((1, 3, 1, 4), (0, 2)),
            ((1, 3, 1, 4), -2), ((1,), None), ((1, 1), -1), ((9,), None), ((), None), ((300, 1, 130), 1)]


@pytest.mark.parametrize("shape,axis", SQUEEZES, ids=ids(SQUEEZES))
def test_squeeze(shape, axis):
    for dtype in (F32, U8):
        x = rand(shape, dtype)
        check(run(lambda x: mlc.squeeze(x, axis), x), np.squeeze(x, axis))


def test_squeeze_rejects_non_unit_axis():
    with pytest.raises(mlc.TraceError, match="squeeze"):
        mlc.compile(lambda x: mlc.squeeze(x, 1), rand((1, 3), F32))


CONCATS = [  # (shapes, dtypes, axis)
    (((3,), (5,)), (F32, F32), 0), (((2, 3), (4, 3)), (F32, F32), 0), (((2, 3), (2, 5)), (F32, F32), 1),
    (((2, 3), (2, 5)), (F32, F32), -1), (((1, 3, 4), (2, 3, 4), (3, 3, 4)), (I32, I32, I32), 0),
    (((2, 1, 4), (2, 7, 4), (2, 9, 4)), (F64, F64, F64), 1), (((2, 3, 4), (2, 3, 1), (2, 3, 12)), (U8, U8, U8), 2),
    (((2, 3), (2, 3)), (F32, F64), 0), (((4, 2), (4, 3)), (I32, F32), 1), (((5,), (3,)), (B, I8), 0),
    (((3, 2), (3, 7)), (U8, I32), 1), (((2, 2), (2, 2), (2, 2)), (F16, F32, F16), -2), (((9,), (1,)), (B, B), 0),
    ((BIG, BIG), (F32, F32), 0), ((BIG, (300, 7)), (F32, F32), 1),
]


@pytest.mark.parametrize("shapes,dtypes,axis", CONCATS, ids=[f"{s}-{a}" for s, _, a in CONCATS])
def test_concatenate(shapes, dtypes, axis):
    xs = [rand(s, d) for s, d in zip(shapes, dtypes)]
    if len(xs) == 2:
        fn = lambda a, b: mlc.concatenate([a, b], axis=axis)
    else:
        fn = lambda a, b, c: mlc.concatenate((a, b, c), axis)
    check(run(fn, *xs), np.concatenate(xs, axis=axis))


def test_concatenate_a_tensor_with_itself_and_a_constant():
    x = rand((2, 5), F32)
    k = rand((1, 5), F32)
    check(run(lambda x: mlc.concatenate([x, k, x], axis=0), x), np.concatenate([x, k, x], axis=0))


SLICES = [  # (shape, begin, end, step)
    ((10,), (1,), (5,), None), ((10,), (None,), (None,), (-1,)), ((10,), (8,), (2,), (-2,)),
    ((10,), (-3,), (None,), None), ((10,), (0,), (100,), (3,)), ((4, 5), (1, 0), (3, 5), (1, 2)),
    ((4, 5), (1,), (2,), None), ((7, 9, 33), (0, 2, 1), (7, 9, 30), (2, 3, 1)), ((7, 9, 33), (None, None, None),
                                                                             (None, None, None), (-1, -2, -3)),
    (BIG, (0, 1), (300, 130), (2, 1)), (BIG, (299,), (None,), (-1,)), ((1,), (0,), (1,), None), ((), (), (), None),
    # out-of-range bounds clamp as in numpy, negative steps included (empty results read nothing)
    ((3,), (-5,), (None,), (-1,)), ((3,), (-10,), (-20,), (-1,)), ((3,), (5,), (None,), (-1,)),
    ((3,), (100,), (-100,), (-1,)), ((3,), (-100,), (100,), (2,)), ((3,), (2,), (1,), None), ((0,), (None,), (None,), (-1,)),
    ((4, 5), (-9, 9), (None, -9), (-1, -2)),
]


@pytest.mark.parametrize("shape,begin,end,step", SLICES, ids=ids(SLICES))
def test_slice(shape, begin, end, step):
    x = rand(shape, F32)
    key = tuple(slice(b, e, s) for b, e, s in zip(begin, end, step or (None,) * len(begin)))
    check(run(lambda x: mlc.slice(x, begin, end, step), x), x[key])
    xi = rand(shape, I8)
    check(run(lambda x: mlc.slice(x, begin=begin, end=end, step=step), xi), xi[key])


# Inputs at the very edge of readable memory: a small piece sits at the end (or the
# start) of a page whose neighbour is PROT_NONE, so reading past it faults. Run in a
# child process, so a fault fails this test instead of killing the test session.
_GUARDED_CONCAT = r"""
import ctypes, mmap
import numpy as np
import mlc

page = mmap.PAGESIZE
m = mmap.mmap(-1, 3 * page)
base = ctypes.addressof(ctypes.c_char.from_buffer(m))
libc = ctypes.CDLL(None)
for off in (0, 2 * page):
    assert libc.mprotect(ctypes.c_void_p(base + off), page, 0) == 0
n = 5
at_end = np.frombuffer(m, np.float32, n, 2 * page - 4 * n)      # a guard page right after it
at_start = np.frombuffer(m, np.float32, n, page)                # a guard page right before it
empty = np.frombuffer(m, np.float32, 0, 2 * page)             # nothing to read, and its first byte faults
assert empty.ctypes.data == base + 2 * page
at_end[...] = np.arange(n)
big = np.arange(20000, dtype=np.float32)
for xs, axis in [((at_end, big), 0), ((big, at_start), 0), ((big, at_end, big), 0), ((big, at_start, big), 0),
                 ((at_end.reshape(1, n), big[:5000].reshape(1, -1)), 1), ((big, empty, at_end, empty), 0),
                 ((empty, big), 0), ((empty, empty), 0)]:
    fn = lambda *xs: mlc.concatenate(xs, axis=axis)
    got = mlc.compile(fn, *xs)(*xs)
    assert np.array_equal(got, np.concatenate(xs, axis=axis))
print("ok")
"""


def test_concatenate_reads_only_inside_each_piece():
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-c", _GUARDED_CONCAT], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", (r.returncode, r.stderr[-2000:])


INDEXING = {
    "[1:5]": lambda x: x[1:5], "[::2]": lambda x: x[::2], "[-3:]": lambda x: x[-3:], "[2]": lambda x: x[2],
    "[...,1]": lambda x: x[..., 1], "[None]": lambda x: x[None], "[1,::3]": lambda x: x[1, ::3],
    "[:,None,2:]": lambda x: x[:, None, 2:], "[-1]": lambda x: x[-1], "[5:1:-1]": lambda x: x[5:1:-1],
    "[1:-1,...,::4]": lambda x: x[1:-1, ..., ::4], "[:]": lambda x: x[:],
    "[::-1]": lambda x: x[::-1], "[:,::-1]": lambda x: x[:, ::-1], "[::-2]": lambda x: x[::-2],
    "[-1::-3,1]": lambda x: x[-1::-3, 1],
}


@pytest.mark.parametrize("key", list(INDEXING))
def test_python_indexing(key):
    fn = INDEXING[key]
    for shape in [(8, 6, 9), (301, 130)]:
        x = rand(shape, F32)
        check(run(fn, x), fn(x))


# ============================================================================ whole programs

def test_mlp_under_jit():
    @mlc.jit
    def mlp(x, w1, b1, w2):
        return mlc.softmax(mlc.relu(x @ w1 + b1) @ w2, axis=-1)

    x = rand((32, 784), F32, -1, 1)
    w1 = rand((784, 128), F32, -0.05, 0.05)
    b1 = rand((128,), F32, -0.1, 0.1)
    w2 = rand((128, 10), F32, -0.3, 0.3)
    h = np.maximum(x @ w1 + b1, 0)
    z = h @ w2
    want = np.exp(z - z.max(axis=-1, keepdims=True))
    want /= want.sum(axis=-1, keepdims=True)
    got = mlp(x, w1, b1, w2)
    check(got, want, {np.dtype(F32): (1e-5, 0)})
    x2 = rand((32, 784), F32, -1, 1)        # a second call reuses the compiled code
    h2 = np.maximum(x2 @ w1 + b1, 0) @ w2
    want2 = np.exp(h2 - h2.max(axis=-1, keepdims=True))
    check(mlp(x2, w1, b1, w2), want2 / want2.sum(axis=-1, keepdims=True), {np.dtype(F32): (1e-5, 0)})


def test_chained_ops_with_intermediates():
    x, y = rand((9, 33), F32), rand((33,), F32)
    fn = lambda x, y: mlc.sum(mlc.exp(mlc.tanh(x * y) - 1.0) / (mlc.abs(y) + 1.0), axis=0) + mlc.max(x, axis=0)
    want = np.sum(np.exp(np.tanh(x * y) - 1.0) / (np.abs(y) + 1.0), axis=0) + np.max(x, axis=0)
    check(run(fn, x, y), want, LOOSE)


REFERENCE_PROGRAMS = {
    "mlp": (lambda x, w, b: mlc.log_softmax(mlc.relu(x @ w + b), axis=-1),
            lambda: (rand((6, 33), F32), rand((33, 17), F32), rand((17,), F32))),
    "mixed-dtypes": (lambda a, i: mlc.where(a > 0, mlc.cast(i, "float32") * a, mlc.sqrt(mlc.abs(a))).sum(axis=1),
                     lambda: (rand((5, 19), F32), rand((5, 19), I32))),
    "shapes": (lambda x: mlc.concatenate([mlc.transpose(x, (1, 0, 2)).reshape(4, -1), x[0]], axis=1)[:, ::2],
               lambda: (rand((4, 4, 3), F64),)),
    "reductions": (lambda x: (mlc.mean(x, axis=(0, 2), keepdims=True), mlc.prod(x, axis=1), mlc.min(x)),
                   lambda: (rand((3, 4, 17), F32, 0.9, 1.1),)),
    "ints": (lambda a, b: (mlc.maximum(a, b) * 3 - mlc.minimum(a, b), mlc.sum(a, axis=0), mlc.equal(a, b)),
             lambda: (rand((7, 9), I8), rand((9,), I8))),
}


@pytest.mark.parametrize("name", sorted(REFERENCE_PROGRAMS))
def test_reference_interpreter_agrees_with_compiled_code(name):
    fn, make = REFERENCE_PROGRAMS[name]
    args = make()
    graph = mlc.trace(fn, *args)
    ref = ops.run_reference(graph, *args)
    got = mlc.compile(graph)(*args)
    got = list(got) if isinstance(got, tuple) else [got]
    assert len(ref) == len(got) == len(graph.outputs)
    for r, g, v in zip(ref, got, graph.outputs):
        assert r.dtype == v.dtype.np and r.shape == v.shape
        check(g, r, LOOSE)
    with np.errstate(all="ignore"):
        direct = fn(*args)        # mlc functions on plain arrays evaluate the references eagerly
    direct = list(direct) if isinstance(direct, tuple) else [direct]
    for r, d in zip(ref, direct):
        check(np.asarray(d), r, LOOSE)


@pytest.mark.parametrize("name", ["floor", "ceil", "round"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32])
def test_rounding_ops(name, dtype):
    x = (np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 1.2, -1.7, 3.49, -0.0, 7.5]) * (1 if dtype != np.int32 else 2))
    x = x.astype(dtype)
    exe = mlc.compile(lambda x: getattr(mlc, name)(x), x)
    want = getattr(np, name)(x)
    got = exe(x)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)   # round: half to even, as numpy


def test_op_functions_have_real_signatures():
    import inspect
    for name, op in ops.REGISTRY.items():
        if name == "constant" or ops.is_control(name):   # mlc.scan & co take Python functions (test_control)
            continue
        sig = inspect.signature(getattr(mlc, name))
        assert list(sig.parameters) == [p.lstrip("*") for p in op.params] + list(op.attrs), name
        for k, v in op.attrs.items():
            assert sig.parameters[k].default == v or (sig.parameters[k].default is v), (name, k)
    assert str(inspect.signature(mlc.sum)) == "(x, axis=None, keepdims=False)"
    assert "numpy" in mlc.sum.__doc__
    # a call bound by the signature is the call the op takes
    x = rand((2, 3), F32)
    bound = inspect.signature(mlc.sum).bind(x, axis=1)
    check(mlc.sum(*bound.args, **bound.kwargs), x.sum(axis=1))


def test_onnx_frontend_is_reachable_after_import_mlc():
    import subprocess
    import sys
    code = "import mlc; print(mlc.frontend.onnx.from_onnx.__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "from_onnx", out.stderr
