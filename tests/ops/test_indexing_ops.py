"""Indexing ops (gather, gather_elements, pad, tile, split, cumsum, argmax/argmin,
top_k) against ONNX's own reference implementation (onnx.reference.ReferenceEvaluator
on a one-node model): both mlc's numpy reference and the compiled code are checked.
Where ONNX leaves a result undefined (out-of-range gather indices) mlc clamps, and
the compiled code must agree with the reference without reading out of bounds."""
from __future__ import annotations

import numpy as np
import pytest

import mlc
from numerics import assert_matches  # noqa: E402

onnx = pytest.importorskip("onnx")
from onnx_reference import onnx_run  # noqa: E402

F16, F32, F64 = np.float16, np.float32, np.float64
I8, I32, I64, U8 = np.int8, np.int32, np.int64, np.uint8
TOL = {np.dtype(F16): (1e-2, 2e-3), np.dtype(F32): (2e-5, 2e-6), np.dtype(F64): (1e-12, 1e-13)}
_RNG = np.random.default_rng(11)


def rand(shape, dtype=F32, lo=-5, hi=5):
    dt = np.dtype(dtype)
    if dt == np.bool_:
        return _RNG.random(shape) < 0.5
    if dt.kind in "iu":
        return _RNG.integers(lo, hi, size=shape, endpoint=True).astype(dt)
    return np.asarray(_RNG.uniform(lo, hi, size=shape)).astype(dt)


def close(got, want):
    assert_matches(got, want, TOL, equal_nan=True)


def check_all(fn, args, want):
    """mlc's numpy reference (eager call) and the compiled function both give ``want``
    (a tuple of results for multi-output ops)."""
    for got in (fn(*args), mlc.compile(fn, *args)(*args)):
        if isinstance(want, (tuple, list)):
            assert isinstance(got, tuple) and len(got) == len(want)
            for g, w in zip(got, want):
                close(g, w)
        else:
            close(got, want)


# ============================================================================ gather

@pytest.mark.parametrize("dshape,ishape,axis,idtype,dtype", [
    ((7, 5), (3,), 0, I64, F32),
    ((4, 9, 3), (2, 5), 1, I32, F32),
    ((4, 9, 3), (), -1, I64, I32),
    ((11,), (4, 3), 0, I32, np.bool_),
    ((3, 13), (13,), 1, I64, F16),
], ids=["axis0", "axis1-2d", "0d-index", "1d-bool", "f16"])
def test_gather_matches_onnx(dshape, ishape, axis, idtype, dtype):
    data = rand(dshape, dtype)
    n = dshape[axis]
    indices = _RNG.integers(-n, n, size=ishape).astype(idtype)   # negative indices count from the end
    (want,) = onnx_run("Gather", [data, indices], {"axis": axis})
    check_all(lambda d, i: mlc.gather(d, i, axis=axis), [data, indices], want)


def test_gather_clamps_out_of_range_indices():
    data = rand((6, 5))
    idx = np.array([0, 5, 6, 1000, -1, -6, -7, -10**12], I64)
    clamped = np.array([0, 5, 5, 5, 5, 0, 0, 0])
    check_all(lambda d, i: mlc.gather(d, i, axis=0), [data, idx], data[clamped])
    check_all(lambda d, i: mlc.gather_elements(d, i, axis=1), [data, np.tile(idx[:5], (6, 1)) * 3],
              np.take_along_axis(data, np.tile(np.array([0, 4, 4, 4, 2]), (6, 1)), axis=1))


@pytest.mark.parametrize("dshape,ishape,axis", [((4, 7), (4, 3), 1), ((5, 6, 3), (2, 6, 3), 0),
                                                ((5, 6, 3), (5, 6, 9), 2)], ids=["axis1", "axis0-3d", "larger-axis"])
def test_gather_elements_matches_onnx(dshape, ishape, axis):
    data = rand(dshape)
    n = dshape[axis]
    indices = _RNG.integers(-n, n, size=ishape).astype(I64)
    (want,) = onnx_run("GatherElements", [data, indices], {"axis": axis})
    check_all(lambda d, i: mlc.gather_elements(d, i, axis=axis), [data, indices], want)


def test_gather_type_errors():
    x = np.zeros((3, 4), F32)
    with pytest.raises(mlc.TraceError, match="gather: indices must be integers"):
        mlc.trace(lambda x, i: mlc.gather(x, i), x, np.zeros(2, F32))
    with pytest.raises(mlc.TraceError, match="gather: axis 2 is out of range for rank 2"):
        mlc.trace(lambda x, i: mlc.gather(x, i, axis=2), x, np.zeros(2, I64))
    with pytest.raises(mlc.TraceError, match="gather: cannot gather from the empty axis 0"):
        mlc.trace(lambda x, i: mlc.gather(x, i), np.zeros((0, 3), F32), np.zeros(2, I64))
    with pytest.raises(mlc.TraceError, match="gather_elements: indices i64\\[3\\] must have the rank of data"):
        mlc.trace(lambda x, i: mlc.gather_elements(x, i), x, np.zeros(3, I64))
    with pytest.raises(mlc.TraceError, match="gather_elements: indices i64\\[3,5\\] exceed data"):
        mlc.trace(lambda x, i: mlc.gather_elements(x, i), x, np.zeros((3, 5), I64))


def test_large_shapes_take_the_parallel_path():
    x = rand((300, 130))   # 39000 elements: over the parallel threshold, 130 % 8 != 0
    idx = _RNG.integers(-130, 130, size=(300, 131)).astype(I64)
    check_all(lambda x, i: mlc.gather(x, i, axis=1), [x, idx], np.take(x, np.where(idx < 0, idx + 130, idx), axis=1))
    check_all(lambda x: mlc.pad(x, pads=[3, 9, 5, 2], mode="reflect"), [x], np.pad(x, [(3, 5), (9, 2)], "reflect"))


# ============================================================================ pad

PAD_CASES = [
    ((4, 7), [1, 2, 3, 0]),
    ((3, 5, 6), [0, 1, 2, 2, 0, 5]),
    ((5,), [9, 11]),                 # pads longer than the axis: repeated reflection / wrapping
    ((1, 6), [2, 0, 3, 1]),          # a size-1 axis
]


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge", "wrap"])
def test_pad_matches_onnx(mode):
    for k, (shape, pads) in enumerate(PAD_CASES):
        x = rand(shape)
        if mode == "reflect" and 1 in shape:
            continue   # numpy's (and ONNX's reference) reflection of a size-1 axis is covered below
        ins = [x, np.array(pads, I64)] + ([np.array(1.5, F32)] if mode == "constant" else [])
        (want,) = onnx_run("Pad", ins, {"mode": mode})
        close(mlc.pad(x, pads=pads, mode=mode, value=1.5), want)
        if k in (1, 2):   # compile a few
            close(mlc.compile(lambda x: mlc.pad(x, pads=pads, mode=mode, value=1.5), x)(x), want)


def test_pad_negative_pads_crop_and_other_dtypes():
    x = rand((6, 7), I32)
    pads = [-2, 3, 1, -4]    # crop 2 rows at the start, 4 columns at the end; then pad
    cropped = x[2:, :3]
    check_all(lambda x: mlc.pad(x, pads=pads, mode="reflect"), [x], np.pad(cropped, [(0, 1), (3, 0)], "reflect"))
    check_all(lambda x: mlc.pad(x, pads=pads, value=-7), [x],
              np.pad(cropped, [(0, 1), (3, 0)], constant_values=-7))
    xb = rand((3, 4), np.bool_)
    check_all(lambda x: mlc.pad(x, pads=[1, 0, 0, 2], mode="edge"), [xb], np.pad(xb, [(1, 0), (0, 2)], "edge"))
    x1 = rand((1, 3), F64)
    check_all(lambda x: mlc.pad(x, pads=[2, 0, 1, 0], mode="reflect"), [x1], np.pad(x1, [(2, 1), (0, 0)], "reflect"))
    x0 = np.array(3.0, F32)
    check_all(lambda x: mlc.pad(x, pads=[]), [x0], x0)
    xe = np.zeros((0, 3), F32)   # constant padding of an empty tensor is all fill
    check_all(lambda x: mlc.pad(x, pads=[1, 1, 1, 0], value=2), [xe], np.full((2, 4), 2, F32))


def test_pad_type_errors():
    x = np.zeros((3, 4), F32)
    with pytest.raises(mlc.TraceError, match="pad: pads must have 2 \\* rank = 4 entries"):
        mlc.trace(lambda x: mlc.pad(x, pads=[1, 1]), x)
    with pytest.raises(mlc.TraceError, match="pad: mode must be one of"):
        mlc.trace(lambda x: mlc.pad(x, pads=[1, 1, 1, 1], mode="symmetric"), x)
    with pytest.raises(mlc.TraceError, match="pad: pads .* remove more than all"):
        mlc.trace(lambda x: mlc.pad(x, pads=[-2, 0, -2, 0]), x)
    with pytest.raises(mlc.TraceError, match="pad: edge padding of an empty axis"):
        mlc.trace(lambda x: mlc.pad(x, pads=[1, 0, 1, 0], mode="edge"), np.zeros((0, 4), F32))
    with pytest.raises(mlc.TraceError, match="pad: value 300 does not fit u8"):
        mlc.trace(lambda x: mlc.pad(x, pads=[1, 0, 1, 0], value=300), np.zeros((2, 4), U8))
    with pytest.raises(mlc.TraceError, match="pad: value nan does not fit i32"):
        mlc.trace(lambda x: mlc.pad(x, pads=[1, 0, 1, 0], value=float("nan")), np.zeros((2, 4), I32))


# ============================================================================ tile, split

@pytest.mark.parametrize("shape,repeats,dtype", [((3, 5), (2, 3), F32), ((2, 1, 7), (1, 4, 2), I64), ((9,), (3,), U8),
                                                 ((2, 3), (0, 2), F32)], ids=["2d", "3d-i64", "1d-u8", "zero"])
def test_tile_matches_onnx(shape, repeats, dtype):
    x = rand(shape, dtype, 0, 9)
    (want,) = onnx_run("Tile", [x, np.array(repeats, I64)])
    check_all(lambda x: mlc.tile(x, repeats), [x], want)


def test_split_matches_onnx():
    x = rand((4, 11, 3))
    (*want,) = onnx_run("Split", [x, np.array([2, 0, 6, 3], I64)], {"axis": 1}, n_outputs=4)
    check_all(lambda x: mlc.split(x, axis=1, sizes=[2, 0, 6, 3]), [x], want)
    (*want,) = onnx_run("Split", [x], {"axis": -2, "num_outputs": 3}, n_outputs=3)   # 4, 4, 3
    check_all(lambda x: mlc.split(x, axis=-2, num_outputs=3), [x], want)
    (*want,) = onnx_run("Split", [x], {"num_outputs": 2}, n_outputs=2)
    assert [w.shape for w in mlc.split(x, num_outputs=2)] == [w.shape for w in want] == [(2, 11, 3)] * 2


def test_split_and_tile_errors():
    x = np.zeros((4, 5), F32)
    with pytest.raises(mlc.TraceError, match=r"split: sizes \[2, 2\] must be >= 0 and add up to 5"):
        mlc.trace(lambda x: mlc.split(x, axis=1, sizes=[2, 2]), x)
    with pytest.raises(mlc.TraceError, match="split: give sizes or a positive num_outputs"):
        mlc.trace(lambda x: mlc.split(x), x)
    with pytest.raises(mlc.TraceError, match="split: axis 0 of f32\\[5,4\\] cannot be split into 4 parts"):
        mlc.trace(lambda x: mlc.split(x, num_outputs=4), np.zeros((5, 4), F32))
    assert [p.shape[0] for p in mlc.split(x, num_outputs=5)] == [1, 1, 1, 1, 0]   # as ONNX: ceil(4 / 5) each
    with pytest.raises(mlc.TraceError, match="tile: repeats must have one entry per axis"):
        mlc.trace(lambda x: mlc.tile(x, [2]), x)


# ============================================================================ cumsum

@pytest.mark.parametrize("dtype", [F32, I32, F64])
def test_cumsum_matches_onnx(dtype):
    x = rand((3, 13, 5), dtype, -9, 9)
    for k, (axis, exclusive, reverse) in enumerate([(1, 0, 0), (1, 1, 0), (-1, 0, 1), (0, 1, 1), (2, 1, 0)]):
        (want,) = onnx_run("CumSum", [x, np.array(axis, I64)], {"exclusive": exclusive, "reverse": reverse})
        fn = lambda x: mlc.cumsum(x, axis=axis, exclusive=exclusive, reverse=reverse)  # noqa: E731
        if k < 4 or dtype is F32:
            check_all(fn, [x], want)
        else:
            close(fn(x), want)


def test_cumsum_f16_u8_and_errors():
    x = rand((2, 37), F16, 0, 1)
    want = np.cumsum(x.astype(F32), axis=1).astype(F16)
    check_all(lambda x: mlc.cumsum(x, axis=1), [x], want)
    xu = rand((20,), U8, 0, 255)
    check_all(lambda x: mlc.cumsum(x, reverse=True), [xu], np.cumsum(xu[::-1], dtype=U8)[::-1])   # wraps
    with pytest.raises(mlc.TraceError, match="cumsum: expects a numeric tensor"):
        mlc.trace(lambda x: mlc.cumsum(x), np.zeros(3, bool))
    with pytest.raises(mlc.TraceError, match="cumsum: expects a tensor of rank >= 1"):
        mlc.trace(lambda x: mlc.cumsum(x), np.float32(1))


# ============================================================================ argmax / argmin

@pytest.mark.parametrize("op", ["argmax", "argmin"])
@pytest.mark.parametrize("dtype", [F32, I8])
def test_arg_matches_onnx(op, dtype):
    x = rand((5, 9, 6), dtype, -3, 3)   # small integers: many ties
    if dtype is F32:
        x = np.round(x)
    onnx_op = {"argmax": "ArgMax", "argmin": "ArgMin"}[op]
    for k, (axis, keepdims, last) in enumerate([(1, 1, 0), (1, 0, 1), (-1, 0, 0), (0, 1, 1)]):
        (want,) = onnx_run(onnx_op, [x], {"axis": axis, "keepdims": keepdims, "select_last_index": last})
        fn = lambda x: getattr(mlc, op)(x, axis=axis, keepdims=keepdims, select_last_index=last)  # noqa: E731
        if dtype is F32 or k < 2:
            check_all(fn, [x], want)
        else:
            close(fn(x), want)


def test_arg_nan_and_errors():
    x = np.array([[1.0, np.nan, 3.0, np.nan], [2.0, 5.0, 5.0, -1.0]], F32)
    check_all(lambda x: mlc.argmax(x, axis=1, keepdims=False), [x], np.array([1, 1], I64))
    check_all(lambda x: mlc.argmin(x, axis=1, keepdims=False, select_last_index=True), [x], np.array([3, 3], I64))
    with pytest.raises(mlc.TraceError, match="argmax: cannot reduce the empty axis 1"):
        mlc.trace(lambda x: mlc.argmax(x, axis=1), np.zeros((2, 0), F32))
    with pytest.raises(mlc.TraceError, match="argmin: expects a tensor of rank >= 1"):
        mlc.trace(lambda x: mlc.argmin(x), np.float32(1))


# ============================================================================ top_k

@pytest.mark.parametrize("largest", [1, 0])
def test_top_k_matches_onnx(largest):
    x = np.round(rand((4, 13, 3), F32, -4, 4))    # ties: the lower index first
    for k, axis in [(5, 1), (3, -1), (13, 1)]:
        want = onnx_run("TopK", [x, np.array([k], I64)], {"axis": axis, "largest": largest}, n_outputs=2)
        check_all(lambda x: mlc.top_k(x, k=k, axis=axis, largest=largest), [x], want)


def test_top_k_ints_nan_and_errors():
    x = rand((3, 10), I32, -3, 3)
    want = onnx_run("TopK", [x, np.array([4], I64)], {"axis": 1}, n_outputs=2)
    check_all(lambda x: mlc.top_k(x, k=4, axis=1), [x], want)
    xn = np.array([[1.0, np.nan, 3.0, np.nan, 3.0]], F32)
    check_all(lambda x: mlc.top_k(x, k=5), [xn], (xn[:, [1, 3, 2, 4, 0]], np.array([[1, 3, 2, 4, 0]], I64)))
    check_all(lambda x: mlc.top_k(x, k=3, largest=False), [xn], (xn[:, [0, 2, 4]], np.array([[0, 2, 4]], I64)))
    with pytest.raises(mlc.TraceError, match=r"top_k: k must be an int in \[0, 10\]"):
        mlc.trace(lambda x: mlc.top_k(x, k=11), x)
    with pytest.raises(mlc.TraceError, match="top_k: expects a numeric tensor"):
        mlc.trace(lambda x: mlc.top_k(x, k=1), np.zeros(3, bool))
