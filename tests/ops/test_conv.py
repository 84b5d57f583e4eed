"""conv, conv_transpose, max_pool, avg_pool, global pools: against ONNX's own reference.

Each case builds a one-node ONNX model, runs it with ``onnx.reference.ReferenceEvaluator``,
and compares both mlc's numpy reference (``mlc.<op>`` on arrays) and the compiled mlc
function. Compiling costs ~0.1-0.5 s, so the compiled cases are chosen to cover
each attribute once; many more attribute combinations run through the references only.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest

import mlc
from numerics import assert_matches  # noqa: E402
from mlc import ops

onnx = pytest.importorskip("onnx")
from onnx_reference import onnx_run  # noqa: E402

F16, F32, F64 = np.float16, np.float32, np.float64
TOL = {np.dtype(F16): (1e-2, 1e-2), np.dtype(F32): (2e-5, 2e-5), np.dtype(F64): (1e-12, 1e-12)}

_RNG = np.random.default_rng(2024)

ONNX_NAMES = {"conv": "Conv", "conv_transpose": "ConvTranspose", "max_pool": "MaxPool", "avg_pool": "AveragePool",
              "global_avg_pool": "GlobalAveragePool", "global_max_pool": "GlobalMaxPool"}


def rand(shape, dtype=F32):
    return _RNG.standard_normal(shape).astype(dtype)


def onnx_reference(op: str, inputs, **attrs):
    """Run one ONNX node (opset 22) with ONNX's reference evaluator."""
    return onnx_run(ONNX_NAMES[op], inputs, {k: v for k, v in attrs.items() if v is not None}, opset=22)[0]


def onnx_conv_transpose(x, w, group=1, **attrs):
    """ONNX ConvTranspose by its reference, one group at a time: the reference's own
    grouped path slices the weight by output channels (onnx 1.23), which is wrong."""
    Cg = w.shape[0] // group
    parts = [onnx_reference("conv_transpose", [x[:, g * Cg:(g + 1) * Cg], w[g * Cg:(g + 1) * Cg]], **attrs)
             for g in range(group)]
    return np.concatenate(parts, axis=1)


def close(got, want):
    assert_matches(got, want, TOL)


def check_against_onnx(op, inputs, compiled=True, onnx_attrs=None, **attrs):
    """mlc's numpy reference and (optionally) the compiled op against the ONNX reference
    (run with ``onnx_attrs`` instead of ``attrs`` where that reference is off the spec)."""
    oattrs = attrs if onnx_attrs is None else onnx_attrs
    if op == "conv_transpose":
        want = onnx_conv_transpose(*inputs, **oattrs)
    else:
        want = onnx_reference(op, inputs, **oattrs)
    fn = getattr(mlc, op)
    close(fn(*inputs, **attrs), want)
    if compiled:
        got = mlc.compile(lambda *xs: fn(*xs, **attrs), *inputs)(*inputs)
        close(got, want)


# ============================================================================ conv

CONV_COMPILED = [
    # (x shape, w shape, attrs)
    ((1, 3, 9, 10), (4, 3, 3, 3), {}),
    ((2, 4, 11, 9), (6, 4, 3, 2), {"strides": [2, 1], "dilations": [1, 2], "pads": [1, 0, 2, 1]}),
    ((1, 4, 8, 8), (6, 2, 3, 3), {"group": 2, "pads": [1, 1, 1, 1]}),
    ((1, 6, 13, 12), (12, 1, 3, 3), {"group": 6, "strides": [2, 2], "pads": [1, 1, 1, 1]}),        # depthwise x2
    ((1, 3, 10, 11), (4, 3, 3, 3), {"auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    ((1, 3, 10, 11), (4, 3, 4, 2), {"auto_pad": "SAME_LOWER", "strides": [3, 2]}),
    ((1, 3, 10, 11), (4, 3, 3, 3), {"auto_pad": "VALID", "strides": [2, 3]}),
    ((1, 5, 16, 16), (7, 5, 1, 1), {"strides": [2, 2]}),
    ((1, 3, 23, 21), (5, 3, 7, 7), {"strides": [2, 2], "pads": [3, 3, 3, 3]}),
    ((2, 3, 17), (4, 3, 3), {"strides": [3], "dilations": [2], "pads": [2, 1]}),                   # 1-D
    ((1, 2, 5, 6, 7), (3, 2, 3, 2, 3), {"strides": [1, 2, 2], "pads": [1, 0, 1, 0, 1, 1]}),      # 3-D
]


@pytest.mark.parametrize("xs, ws, attrs", CONV_COMPILED, ids=[str(c) for c in range(len(CONV_COMPILED))])
def test_conv_compiled(xs, ws, attrs):
    check_against_onnx("conv", [rand(xs), rand(ws)], **attrs)


def test_conv_dtypes():
    x, w = rand((1, 4, 9, 9), F64), rand((4, 2, 3, 3), F64)
    check_against_onnx("conv", [x, w], group=2, pads=[1, 1, 1, 1], strides=[2, 2])
    x16, w16 = rand((1, 3, 8, 9), F16), rand((5, 3, 3, 3), F16)
    want = mlc.conv(x16.astype(F32), w16.astype(F32), pads=[1, 1, 0, 0]).astype(F16)
    got = mlc.compile(lambda x, w: mlc.conv(x, w, pads=[1, 1, 0, 0]), x16, w16)(x16, w16)
    close(got, want)


def _conv_configs(D, n):
    """Random but valid conv attribute combinations for D spatial axes."""
    rng = np.random.default_rng(D)
    for _ in range(n):
        group = int(rng.choice([1, 1, 2, 3]))
        C, M = group * int(rng.integers(1, 3)), group * int(rng.integers(1, 3))
        K = [int(k) for k in rng.integers(1, 4, D)]
        strides = [int(s) for s in rng.integers(1, 4, D)]
        dil = [int(d) for d in rng.integers(1, 3, D)]
        pads = [int(p) for p in rng.integers(0, 3, 2 * D)]
        auto_pad = str(rng.choice(["NOTSET", "NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"]))
        S = [int(s) + (k - 1) * d for s, k, d in zip(rng.integers(2, 7, D), K, dil)]
        attrs = {"strides": strides, "dilations": dil, "group": group}
        if auto_pad == "NOTSET":
            attrs["pads"] = pads
        else:
            attrs["auto_pad"] = auto_pad
        yield (int(rng.integers(1, 3)), C, *S), (M, C // group, *K), attrs


@pytest.mark.parametrize("D", [1, 2, 3])
def test_conv_reference_many_attributes(D):
    """mlc's numpy reference against ONNX's on many attribute combinations (no compile)."""
    for xs, ws, attrs in _conv_configs(D, 40):
        x, w = rand(xs, F64), rand(ws, F64)
        if attrs.get("auto_pad", "NOTSET") != "NOTSET" and any(d > 1 for d in attrs["dilations"]):
            # the ONNX reference sizes SAME pads without the dilation; the spec includes it
            continue
        want = onnx_reference("conv", [x, w], **attrs)
        close(mlc.conv(x, w, **attrs), want)


def test_conv_with_bias_as_add():
    """The bias is not an input of conv: ONNX Conv(X, W, B) is conv(x, w) + b[:, None, None]."""
    x, w, b = rand((1, 3, 8, 8)), rand((4, 3, 3, 3)), rand((4,))
    f = mlc.compile(lambda x, w, b: mlc.conv(x, w, pads=[1, 1, 1, 1]) + mlc.reshape(b, shape=(4, 1, 1)), x, w, b)
    close(f(x, w, b), onnx_reference("conv", [x, w, b], pads=[1, 1, 1, 1]))


def test_conv_canonical_attrs():
    x, w = mlc.TensorType((1, 3, 10, 11), mlc.float32), mlc.TensorType((4, 3, 3, 3), mlc.float32)
    op = ops.get("conv")
    a = op.canonical_attrs([x, w], {"auto_pad": "SAME_LOWER", "strides": [2, 2]})
    assert a == {"strides": (2, 2), "dilations": (1, 1), "pads": (1, 1, 0, 1), "group": 1, "auto_pad": "NOTSET",
                 "kernel_shape": (3, 3)}
    assert op.canonical_attrs([x, w], a) == a
    assert op.infer([x, w], **a)[0].shape == (1, 4, 5, 6)


# ============================================================================ conv_transpose

CONVT_COMPILED = [
    ((1, 3, 5, 4), (3, 2, 3, 3), {"strides": [2, 2]}),
    ((1, 4, 5, 6), (4, 3, 3, 2), {"strides": [2, 3], "pads": [1, 0, 1, 1], "output_padding": [1, 2], "dilations": [1, 2]}),
    ((1, 4, 5, 5), (4, 1, 3, 3), {"group": 2, "strides": [1, 1], "pads": [1, 1, 1, 1], "dilations": [2, 1]}),
    ((2, 3, 7), (3, 2, 4), {"strides": [3], "pads": [1, 2]}),                                     # 1-D
    ((1, 2, 3, 4, 3), (2, 2, 2, 3, 2), {"strides": [2, 1, 2], "pads": [0, 1, 0, 1, 0, 1]}),      # 3-D
    ((1, 2, 4, 5), (2, 3, 3, 3), {"strides": [2, 2], "auto_pad": "SAME_UPPER"}),
    ((1, 2, 4, 5), (2, 3, 4, 3), {"strides": [2, 2], "auto_pad": "SAME_LOWER"}),
]


@pytest.mark.parametrize("xs, ws, attrs", CONVT_COMPILED, ids=[str(c) for c in range(len(CONVT_COMPILED))])
def test_conv_transpose_compiled(xs, ws, attrs):
    check_against_onnx("conv_transpose", [rand(xs), rand(ws)], **attrs)


def test_conv_transpose_reference_many_attributes():
    rng = np.random.default_rng(7)
    for D, _ in itertools.product([1, 2, 3], range(12)):
        group = int(rng.choice([1, 2]))
        C, Mg = group * int(rng.integers(1, 3)), int(rng.integers(1, 3))
        K = [int(k) for k in rng.integers(1, 4, D)]
        strides = [int(s) for s in rng.integers(1, 4, D)]
        dil = [int(d) for d in rng.integers(1, 3, D)]
        opad = [int(rng.integers(0, s)) for s in strides]
        pads = [int(p) for p in rng.integers(0, 2, 2 * D)]
        x, w = rand((1, C, *rng.integers(1, 5, D)), F64), rand((C, Mg, *K), F64)
        attrs = {"strides": strides, "dilations": dil, "group": group, "output_padding": opad, "pads": pads}
        out = [s * (n - 1) + p + (k - 1) * d + 1 - pads[a] - pads[D + a]
               for a, (n, k, s, d, p) in enumerate(zip(x.shape[2:], K, strides, dil, opad))]
        if min(out) < 1:
            continue
        close(mlc.conv_transpose(x, w, **attrs), onnx_conv_transpose(x, w, **attrs))


def test_conv_transpose_output_shape():
    x, w = rand((1, 2, 4, 5)), rand((2, 3, 3, 3))
    # output_shape larger than the natural size of (4-1)*2+3 = 9: pads come out as computed by ONNX
    for auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        check_against_onnx("conv_transpose", [x, w], compiled=auto_pad == "SAME_LOWER", strides=[2, 2],
                           output_shape=[8, 10], auto_pad=auto_pad)
    a = ops.get("conv_transpose").canonical_attrs([mlc.TensorType(x.shape, mlc.float32),
                                                    mlc.TensorType(w.shape, mlc.float32)],
                                                   {"strides": [2, 2], "output_shape": [1, 3, 8, 10]})
    assert a["pads"] == (1, 1, 0, 0) and a["output_shape"] is None and a["auto_pad"] == "NOTSET"


# ============================================================================ pools

POOL_COMPILED = [
    ("max_pool", (1, 3, 8, 9), {"kernel_shape": [2, 2], "strides": [2, 2]}),
    ("max_pool", (1, 2, 11, 10), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ("max_pool", (1, 2, 10, 9), {"kernel_shape": [3, 2], "strides": [2, 2], "pads": [1, 0, 0, 1], "ceil_mode": 1}),
    ("max_pool", (1, 2, 9, 10), {"kernel_shape": [2, 3], "dilations": [2, 2], "pads": [1, 1, 0, 2]}),
    ("max_pool", (1, 2, 9, 10), {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_UPPER"}),
    ("max_pool", (2, 3, 13), {"kernel_shape": [4], "strides": [3], "pads": [2, 1]}),
    ("max_pool", (1, 2, 5, 6, 7), {"kernel_shape": [2, 3, 2], "strides": [2, 2, 1], "pads": [0, 1, 0, 1, 1, 1]}),
    ("avg_pool", (1, 2, 8, 9), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ("avg_pool", (1, 2, 8, 9), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "count_include_pad": 1}),
    ("avg_pool", (1, 2, 10, 9), {"kernel_shape": [3, 2], "strides": [2, 2], "pads": [1, 0, 0, 1], "ceil_mode": 1,
                                     "count_include_pad": 1}),
    ("avg_pool", (1, 2, 10, 9), {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}),
    ("avg_pool", (1, 2, 9, 10), {"kernel_shape": [3, 2], "strides": [1, 2], "auto_pad": "SAME_UPPER"}),
    ("avg_pool", (1, 2, 9, 10), {"kernel_shape": [2, 2], "dilations": [2, 1], "pads": [1, 1, 1, 0]}),
    ("avg_pool", (2, 3, 13), {"kernel_shape": [4], "strides": [3], "pads": [2, 1], "count_include_pad": 1}),
    ("avg_pool", (1, 2, 5, 6, 7), {"kernel_shape": [2, 2, 3], "strides": [1, 2, 2], "pads": [1, 0, 1, 0, 1, 1]}),
    ("avg_pool", (1, 8, 7, 7), {"kernel_shape": [7, 7]}),
]


@pytest.mark.parametrize("op, xs, attrs", POOL_COMPILED, ids=[str(c) for c in range(len(POOL_COMPILED))])
def test_pool_compiled(op, xs, attrs):
    check_against_onnx(op, [rand(xs)], **attrs)


def test_max_pool_same_lower():
    # ONNX's MaxPool reference gives SAME_LOWER floor(S / stride) outputs and the odd pad at
    # the end; the spec (and its AveragePool) say ceil and the beginning: compare with the pads
    # the spec gives, (5 - 1) * 2 + 2 - 9 = 1 and (4 - 1) * 3 + 2 - 10 = 1, both at the beginning
    check_against_onnx("max_pool", [rand((1, 2, 9, 10))], kernel_shape=[2, 2], strides=[2, 3], auto_pad="SAME_LOWER",
                       onnx_attrs={"kernel_shape": [2, 2], "strides": [2, 3], "pads": [1, 1, 0, 0]})


@pytest.mark.parametrize("op", ["max_pool", "avg_pool"])
def test_pool_reference_many_attributes(op):
    rng = np.random.default_rng(11)
    for D, _ in itertools.product([1, 2, 3], range(15)):
        K = [int(k) for k in rng.integers(1, 4, D)]
        strides = [int(s) for s in rng.integers(1, 3, D)]   # ceil_mode: ONNX's reference shifts windows for s>2
        dil = [int(d) for d in rng.integers(1, 3, D)]
        pads = [int(rng.integers(0, k)) for k in K * 2]          # pads smaller than the kernel, as ONNX requires
        attrs = {"kernel_shape": K, "strides": strides, "dilations": dil, "pads": pads, "ceil_mode": int(rng.integers(0, 2))}
        if op == "avg_pool":
            attrs["count_include_pad"] = int(rng.integers(0, 2))
        S = [int(s) + (k - 1) * d for s, k, d in zip(rng.integers(1, 6, D), K, dil)]
        x = rand((1, 2, *S), F64)
        if op == "max_pool" and D != 2 and strides == [1] * D and dil == [1] * D and any(pads):
            continue    # ONNX's MaxPool reference takes a path that ignores pads unless 2-D here
        close(getattr(mlc, op)(x, **attrs), onnx_reference(op, [x], **attrs))


def test_pool_dtypes():
    x = rand((1, 3, 9, 8), F16)
    attrs = {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}
    for op in ("max_pool", "avg_pool"):
        fn = getattr(mlc, op)
        want = fn(x.astype(F32), **attrs).astype(F16)
        close(mlc.compile(lambda x: fn(x, **attrs), x)(x), want)  # noqa: B023 (compiled at once)
    xi = _RNG.integers(-100, 100, (1, 2, 7, 6)).astype(np.int8)
    got = mlc.compile(lambda x: mlc.max_pool(x, **attrs), xi)(xi)
    np.testing.assert_array_equal(got, onnx_reference("max_pool", [xi], **attrs))


@pytest.mark.parametrize("op", ["global_avg_pool", "global_max_pool"])
def test_global_pools(op):
    check_against_onnx(op, [rand((2, 3, 7, 9))])
    # ONNX's GlobalMaxPool reference reduces the wrong axes unless 2-D: numpy instead
    np_fn = np.mean if op == "global_avg_pool" else np.max
    for shape in [(1, 4, 10), (1, 2, 3, 4, 5)]:
        x = rand(shape)
        want = np_fn(x.astype(F64), axis=tuple(range(2, x.ndim)), keepdims=True).astype(F32)
        close(getattr(mlc, op)(x), want)
        close(mlc.compile(lambda x: getattr(mlc, op)(x), x)(x), want)


# ============================================================================ type errors

def trace_error(fn, *args):
    with pytest.raises(mlc.TraceError) as e:
        mlc.trace(fn, *args)
    return str(e.value)


def test_type_errors():
    x, w = np.zeros((1, 4, 8, 8), F32), np.zeros((6, 4, 3, 3), F32)
    msg = trace_error(lambda x, w: mlc.conv(x, w, group=2), x, w)
    assert msg.startswith("conv:") and "4 channels per group" in msg
    msg = trace_error(lambda x, w: mlc.conv(x, w, group=4), x, np.zeros((6, 1, 3, 3), F32))
    assert "6 output channels" in msg
    msg = trace_error(lambda x, w: mlc.conv(x, w, pads=[1, 1]), x, w)
    assert "pads needs 4 values" in msg
    msg = trace_error(lambda x, w: mlc.conv(x, w, strides=[0, 1]), x, w)
    assert "strides must be >= 1" in msg
    msg = trace_error(lambda x, w: mlc.conv(x, w), np.zeros((1, 4, 2, 8), F32), w)
    assert "larger than the padded input" in msg
    msg = trace_error(lambda x, w: mlc.conv(x, w, auto_pad="SAME"), x, w)
    assert "auto_pad must be one of" in msg
    msg = trace_error(lambda x, w: mlc.conv(x, w), x, np.zeros((6, 4, 3), F32))
    assert "rank 4" in msg
    msg = trace_error(lambda x, w: mlc.conv(x, w), x, w.astype(F64))
    assert "dtypes differ" in msg
    msg = trace_error(lambda x, w: mlc.conv(x, w), x.astype(np.int32), w.astype(np.int32))
    assert "floating-point" in msg
    msg = trace_error(lambda x, w: mlc.conv(x, w, kernel_shape=[3, 2]), x, w)
    assert "kernel_shape" in msg
    msg = trace_error(lambda x, w: mlc.conv_transpose(x, w), x, np.zeros((3, 2, 3, 3), F32))
    assert msg.startswith("conv_transpose:") and "4 input channels" not in msg and "has 4" in msg
    msg = trace_error(lambda x, w: mlc.conv_transpose(x, w, pads=[3, 3, 3, 3]), np.zeros((1, 4, 2, 2), F32),
                      np.zeros((4, 2, 3, 3), F32))
    assert "outputs" in msg
    msg = trace_error(lambda x: mlc.max_pool(x), x)
    assert msg.startswith("max_pool:") and "kernel_shape is required" in msg
    msg = trace_error(lambda x: mlc.avg_pool(x, kernel_shape=[9, 9]), x)
    assert "larger than the padded input" in msg
    msg = trace_error(lambda x: mlc.avg_pool(x, kernel_shape=[3]), x)
    assert "kernel_shape needs 2 values" in msg
    msg = trace_error(lambda x: mlc.global_avg_pool(x), np.zeros((4, 8), F32))
    assert "rank 3 to 5" in msg


def onnx_max_pool_indices(x, **attrs):
    """MaxPool's Indices output from ONNX's reference evaluator."""
    return onnx_run("MaxPool", [x], attrs, n_outputs=2, opset=22)[1]


MAX_POOL_INDICES = [
    ((2, 3, 8, 9), {"kernel_shape": [2, 2], "strides": [2, 2]}),
    ((1, 2, 11, 10), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "storage_order": 1}),
    ((1, 2, 9, 10), {"kernel_shape": [2, 3], "dilations": [2, 2], "pads": [1, 1, 0, 2]}),
    ((1, 2, 10, 9), {"kernel_shape": [3, 2], "strides": [1, 2], "pads": [1, 0, 0, 1], "ceil_mode": 1,
                     "storage_order": 1}),
    ((2, 2, 5, 6, 7), {"kernel_shape": [2, 3, 2], "strides": [2, 2, 1], "pads": [0, 1, 0, 1, 1, 1]}),
]


@pytest.mark.parametrize("xs, attrs", MAX_POOL_INDICES, ids=[str(c) for c in range(len(MAX_POOL_INDICES))])
def test_max_pool_indices(xs, attrs):
    x = rand(xs)
    want = onnx_max_pool_indices(x, **attrs)
    assert want.dtype == np.int64
    np.testing.assert_array_equal(mlc.max_pool_indices(x, **attrs), want)
    got = mlc.compile(lambda v: mlc.max_pool_indices(v, **attrs), x)(x)
    np.testing.assert_array_equal(got, want)
    # the indices pick out the pooled values
    flat = x.reshape(-1) if attrs.get("storage_order", 0) == 0 else \
        np.swapaxes(x, -1, -2).reshape(-1)
    if len(xs) == 4:
        np.testing.assert_array_equal(flat[got], mlc.max_pool(x, **{k: v for k, v in attrs.items()
                                                                     if k != "storage_order"}))


def test_max_pool_indices_ties_take_the_first_in_scan_order():
    x = np.zeros((1, 1, 4, 4), np.int32)
    x[0, 0, 1, 0] = x[0, 0, 0, 1] = 5      # a tie inside the first 2x2 window
    for order in (0, 1):
        want = onnx_max_pool_indices(x.astype(F32), kernel_shape=[2, 2], strides=[2, 2], storage_order=order)
        got = mlc.compile(lambda v: mlc.max_pool_indices(v, kernel_shape=[2, 2], strides=[2, 2],
                                                         storage_order=order), x)(x)
        np.testing.assert_array_equal(got, want)
    assert got[0, 0, 0, 0] == 4    # (h=0, w=1) column-major: 0 + 1*4, scanned before (1, 0)


@pytest.mark.parametrize("attrs", [
    {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]},
    {"kernel_shape": [3, 2], "strides": [2, 1], "pads": [1, 0, 0, 1], "dilations": [1, 2]},
    {"kernel_shape": [1, 1]},
])
def test_im2col_times_weights_is_the_convolution(attrs):
    x = rand((2, 3, 7, 6), F64)
    w = rand((4, 3, *attrs["kernel_shape"]), F64)
    cols = mlc.im2col(x, **attrs)
    conv = onnx_reference("conv", [x, w], **attrs)
    assert cols.shape == (2, 3 * w.shape[2] * w.shape[3], conv.shape[2] * conv.shape[3])
    np.testing.assert_allclose((w.reshape(4, -1) @ cols).reshape(conv.shape), conv, rtol=1e-12, atol=1e-12)
    got = mlc.compile(lambda v: mlc.im2col(v, **attrs), x)(x)
    np.testing.assert_array_equal(got, cols)


def test_avg_pool_divisor_breakpoints_see_every_count():
    # the divisor's taps-inside count is found at O(kernel) breakpoints, not at every output
    # position (a pad of 2**31 used to loop over 2**31 positions while compiling)
    import random
    from mlc.ops.pool import _tap_breakpoints, _taps_inside
    rng = random.Random(0)
    for _ in range(2000):
        n, k, s, d = rng.randint(1, 12), rng.randint(1, 5), rng.randint(1, 4), rng.randint(1, 3)
        pb, pe = rng.randint(0, 6), rng.randint(0, 6)
        n_out = max(0, (n + pb + pe - (k - 1) * d - 1) // s + 1)
        for lo, hi in ((-pb, n + pe), (0, n)):
            every = {_taps_inside(o, k, s, d, pb, lo, hi) for o in range(n_out)}
            assert every == {_taps_inside(o, k, s, d, pb, lo, hi)
                             for o in _tap_breakpoints(n_out, k, s, d, pb, lo, hi)}
    x = np.ones((1, 3, 5, 5), np.float32)
    exe = mlc.compile(lambda x: mlc.avg_pool(x, kernel_shape=(3, 3), pads=(1, 1, 2 ** 31, 1)), x)
    assert exe.output_types[0].shape == (1, 3, 2 ** 31 + 4, 5)
