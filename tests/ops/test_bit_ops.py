"""Bit operations (bitwise_and/or/xor/not, left_shift, right_shift) and the inverse
trigonometric functions (acos, asin, atan), compiled and run, against numpy: dtypes
and values exactly for the bit operations, within a dtype's tolerance for the
functions; and their gradients."""
from __future__ import annotations

import numpy as np
import pytest

import mlc
from numerics import assert_matches  # noqa: E402

INTS = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64]
_RNG = np.random.default_rng(21)


def ints(shape, dtype):
    info = np.iinfo(dtype)
    return _RNG.integers(info.min, info.max, size=shape, endpoint=True, dtype=dtype)


def run(fn, *args):
    return mlc.compile(fn, *args)(*args)


def exact(got, want):
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)


BITWISE = {"bitwise_and": np.bitwise_and, "bitwise_or": np.bitwise_or, "bitwise_xor": np.bitwise_xor}
# broadcasting, and extents past a vector's lanes (70 > 32 lanes of 8-bit vectors) and the parallel threshold
SHAPES = [((), ()), ((7,), (7,)), ((3, 1), (1, 70)), ((2, 70), (70,)), ((300, 130), (300, 130))]


@pytest.mark.parametrize("name", sorted(BITWISE))
@pytest.mark.parametrize("dtype", INTS + [np.bool_], ids=lambda d: np.dtype(d).name)
def test_bitwise_binary_matches_numpy(name, dtype):
    for sa, sb in SHAPES:
        if dtype is np.bool_:
            a, b = _RNG.random(sa) < 0.5, _RNG.random(sb) < 0.5
        else:
            a, b = ints(sa, dtype), ints(sb, dtype)
        exact(run(getattr(mlc, name), np.asarray(a), np.asarray(b)), BITWISE[name](a, b))


@pytest.mark.parametrize("name", sorted(BITWISE))
def test_bitwise_mixed_dtypes_promote_like_numpy(name):
    a, b = np.array([-5, 3, 127, -128], np.int8), np.array([7, -1, 300, -3000], np.int16)
    exact(run(getattr(mlc, name), a, b), BITWISE[name](a, b))   # int8 sign-extends to int16 first
    u, i = np.array([200, 1, 255], np.uint8), np.array([-1, 256, 7], np.int32)
    exact(run(getattr(mlc, name), u, i), BITWISE[name](u, i))
    exact(run(lambda u: getattr(mlc, name)(u, 6), u), BITWISE[name](u, np.uint8(6)))   # a Python int is weak


@pytest.mark.parametrize("dtype", INTS + [np.bool_], ids=lambda d: np.dtype(d).name)
def test_bitwise_not_matches_numpy(dtype):
    for shape in [(), (9,), (2, 70)]:
        x = _RNG.random(shape) < 0.5 if dtype is np.bool_ else ints(shape, dtype)
        exact(run(mlc.bitwise_not, np.asarray(x)), np.invert(x))


@pytest.mark.parametrize("name", ["bitwise_and", "bitwise_not", "left_shift"])
def test_bit_operations_refuse_floats(name):
    x = np.ones(3, np.float32)
    args = (x,) if name == "bitwise_not" else (x, x)
    with pytest.raises(mlc.TraceError, match=rf"^{name}: ufunc '\w+' not supported for the input types"):
        mlc.compile(getattr(mlc, name), *args)


@pytest.mark.parametrize("left", [True, False], ids=["left", "right"])
@pytest.mark.parametrize("dtype", INTS, ids=lambda d: np.dtype(d).name)
def test_shifts_match_numpy_at_every_amount(dtype, left):
    """Every amount from -3 (signed types) to the width + 2: a shift by the width or more,
    or by a negative amount, leaves the sign fill (-1 for a negative value shifted right,
    else 0); numpy's rule, and ONNX BitShift's."""
    bits = np.iinfo(dtype).bits
    lo = -3 if np.iinfo(dtype).min < 0 else 0
    k = np.arange(lo, bits + 3).astype(dtype)
    x = np.concatenate([ints((len(k),), dtype), np.array([np.iinfo(dtype).min, np.iinfo(dtype).max,
                                                          1, 0], dtype)])
    a, b = x[:, None], k[None, :]   # every value by every amount
    fn, ref = (mlc.left_shift, np.left_shift) if left else (mlc.right_shift, np.right_shift)
    exact(run(fn, a, b), ref(a, b))


def test_right_shift_is_arithmetic_for_signed_and_logical_for_unsigned():
    exact(run(mlc.right_shift, np.array([-128, -1, 64], np.int8), np.array([1, 7, 2], np.int8)),
          np.array([-64, -1, 16], np.int8))
    exact(run(mlc.right_shift, np.array([128, 255, 64], np.uint8), np.array([1, 7, 2], np.uint8)),
          np.array([64, 1, 16], np.uint8))
    exact(run(lambda x: mlc.left_shift(x, 3), np.arange(40, dtype=np.uint8)),
          np.left_shift(np.arange(40, dtype=np.uint8), np.uint8(3)))


INVERSE = {"acos": np.arccos, "asin": np.arcsin, "atan": np.arctan}
TOL = {np.dtype(np.float16): (1e-3, 1e-3), np.dtype(np.float32): (2e-6, 1e-7), np.dtype(np.float64): (1e-14, 1e-15)}


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16], ids=["f32", "f64", "f16"])
@pytest.mark.parametrize("name", sorted(INVERSE))
def test_inverse_trigonometric_functions_match_numpy(name, dtype):
    lim = 1.0 if name != "atan" else 50.0
    x = np.concatenate([np.linspace(-lim, lim, 1001), [-1.0, 1.0, 0.0, -0.0]]).astype(dtype)
    assert_matches(run(getattr(mlc, name), x), INVERSE[name](x), TOL, equal_nan=True)
    big = _RNG.uniform(-lim, lim, size=(300, 130)).astype(dtype)   # the parallel, vectorized path
    assert_matches(run(getattr(mlc, name), big), INVERSE[name](big), TOL, equal_nan=True)


def test_inverse_trigonometric_special_values_and_int_inputs():
    x = np.array([1.5, -2.0, np.nan, np.inf, -np.inf], np.float32)
    with np.errstate(invalid="ignore"):
        for name, ref in INVERSE.items():
            assert_matches(run(getattr(mlc, name), x), ref(x), TOL, equal_nan=True)   # NaN outside [-1, 1]
    i = np.array([-1, 0, 1], np.int32)
    for name, ref in INVERSE.items():
        got = run(getattr(mlc, name), i)
        assert got.dtype == np.float64   # numpy's float result for int32
        assert_matches(got, ref(i), TOL)


@pytest.mark.parametrize("name", sorted(INVERSE))
def test_inverse_trigonometric_gradients(name):
    x = np.linspace(-0.9, 0.9, 7)
    want = {"acos": -1 / np.sqrt(1 - x * x), "asin": 1 / np.sqrt(1 - x * x), "atan": 1 / (1 + x * x)}[name]
    g = mlc.grad(lambda a: mlc.sum(getattr(mlc, name)(a)))(x)
    np.testing.assert_allclose(g, want, rtol=1e-12)


def test_bit_operations_print_and_parse_back_in_the_tensor_ir():
    from mlc.ir import tensor as T
    text = """kernel @k(A: u8[8], B: i16[8]) -> u8[8], i16[8] {
  out0[i] = select(A[i] < 8:u8, shl(A[i], bitand(A[i], 7:u8)), bitor(A[i], 1:u8))
  out1[i] = sar(B[i], B[i] ^ 3:i16) + i16(atan(acos(asin(f64(B[i])))))
}"""
    k = T.parse(text)
    assert str(k) == text
    T.verify(k)


def test_onnx_bit_shift_imports_onto_the_shifts_and_refuses_an_unknown_direction():
    from onnx import TensorProto, helper

    from mlc.frontend.onnx import OnnxImportError, from_onnx

    def model(direction):
        vi = [helper.make_tensor_value_info(n, TensorProto.INT8, [4]) for n in ("x", "k", "y")]
        node = helper.make_node("BitShift", ["x", "k"], ["y"], direction=direction)
        g = helper.make_graph([node], "g", vi[:2], vi[2:])
        # signed integers: BitShift of opset 28 on (arithmetic right shifts)
        return helper.make_model(g, opset_imports=[helper.make_opsetid("", 28)])

    x, k = np.array([-128, -3, 5, 100], np.int8), np.array([7, 1, 9, -1], np.int8)
    exe = mlc.driver.compile_graph(from_onnx(model("RIGHT")))
    exact(exe(x, k), np.right_shift(x, k))
    with pytest.raises(OnnxImportError, match="BitShift's direction must be 'LEFT' or 'RIGHT', got 'UP'"):
        from_onnx(model("UP"))
