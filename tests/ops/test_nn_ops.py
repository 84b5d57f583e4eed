"""nn ops (activations, clip, prelu, batch_norm, layer_norm, lrn) against ONNX's own
reference implementation (onnx.reference.ReferenceEvaluator on a one-node model):
both mlc's numpy reference and the compiled code are checked."""
from __future__ import annotations

import numpy as np
import pytest

import mlc
from numerics import assert_matches  # noqa: E402

onnx = pytest.importorskip("onnx")
from onnx_reference import onnx_run  # noqa: E402

F16, F32, F64 = np.float16, np.float32, np.float64
TOL = {np.dtype(F16): (1e-2, 2e-3), np.dtype(F32): (2e-5, 2e-6), np.dtype(F64): (1e-6, 1e-9)}
_RNG = np.random.default_rng(7)


def rand(shape, dtype=F32, lo=-5.0, hi=5.0):
    dt = np.dtype(dtype)
    if dt.kind in "iu":
        return _RNG.integers(lo, hi, size=shape, endpoint=True).astype(dt)
    return np.asarray(_RNG.uniform(lo, hi, size=shape)).astype(dt)


def close(got, want):
    assert_matches(got, want, TOL)


def check_all(fn, args, want):
    """mlc's numpy reference (eager call) and the compiled function both give ``want``."""
    close(fn(*args), want)
    close(mlc.compile(fn, *args)(*args), want)


# ============================================================================ activations

# mlc name, mlc attrs, ONNX op, ONNX attrs
ACTIVATIONS = [
    ("leaky_relu", {}, "LeakyRelu", {}),
    ("leaky_relu", {"alpha": 0.3}, "LeakyRelu", {"alpha": 0.3}),
    ("elu", {}, "Elu", {}),
    ("elu", {"alpha": 0.5}, "Elu", {"alpha": 0.5}),
    ("selu", {}, "Selu", {}),
    ("selu", {"alpha": 1.5, "gamma": 2.0}, "Selu", {"alpha": 1.5, "gamma": 2.0}),
    ("celu", {"alpha": 0.7}, "Celu", {"alpha": 0.7}),
    ("gelu", {}, "Gelu", {}),
    ("gelu", {"approximate": "tanh"}, "Gelu", {"approximate": "tanh"}),
    ("hard_sigmoid", {}, "HardSigmoid", {}),
    ("hard_sigmoid", {"alpha": 0.3, "beta": 0.4}, "HardSigmoid", {"alpha": 0.3, "beta": 0.4}),
    ("hard_swish", {}, "HardSwish", {}),
    ("softplus", {}, "Softplus", {}),
    ("softsign", {}, "Softsign", {}),
    ("mish", {}, "Mish", {}),
    ("thresholded_relu", {"alpha": 0.5}, "ThresholdedRelu", {"alpha": 0.5}),
]


def _act_input(shape, dtype):
    x = rand(shape, dtype)
    flat = x.reshape(-1)
    flat[:4] = np.array([0.0, -0.0, 0.5, -3.0])[:flat.size]   # exact kinks and attribute values
    return x


@pytest.mark.parametrize("case", ACTIVATIONS, ids=[f"{c[0]}-{c[1]}" for c in ACTIVATIONS])
def test_activation_f32_matches_onnx(case):
    name, attrs, op_type, onnx_attrs = case
    x = _act_input((5, 13), F32)
    (want,) = onnx_run(op_type, [x], onnx_attrs)
    check_all(lambda x: getattr(mlc, name)(x, **attrs), [x], want.astype(F32))


@pytest.mark.parametrize("name", sorted({c[0] for c in ACTIVATIONS}))
def test_activation_f64_f16_and_0d(name):
    attrs, op_type, onnx_attrs = next((a, o, oa) for n, a, o, oa in ACTIVATIONS if n == name)
    for shape, dtype in [((), F64), ((3, 9), F16)]:
        x = _act_input(shape, dtype)
        # ONNX float attributes are float32 and its f16 math rounds at each step: compare in f64
        # (flattened: some ONNX reference ops refuse 0-d arrays)
        (want,) = onnx_run(op_type, [x.astype(F64).reshape(-1)], onnx_attrs)
        check_all(lambda x: getattr(mlc, name)(x, **attrs), [x], want.astype(dtype).reshape(shape))


def test_softplus_and_mish_are_stable_at_extremes():
    x = np.array([-100.0, -30.0, -1e-8, 0.0, 1e-8, 20.0, 100.0, 1000.0], F32)
    want = np.logaddexp(0, x.astype(F64))
    check_all(mlc.softplus, [x], want.astype(F32))
    check_all(mlc.mish, [x], (x * np.tanh(want)).astype(F32))


@pytest.mark.parametrize("dtype", [F32, F16, np.int32, np.uint8, np.int8])
def test_clip_matches_onnx(dtype):
    x = rand((4, 11), dtype, -20 if np.dtype(dtype).kind != "u" else 0, 40)
    for lo, hi in [(-3, 7), (None, 5), (2, None), (6, 2), (None, None)]:
        if np.dtype(dtype).kind == "u" and lo is not None and lo < 0:
            lo = 1
        args = [x, None if lo is None else np.array(lo, dtype), None if hi is None else np.array(hi, dtype)]
        (want,) = onnx_run("Clip", args)
        close(mlc.clip(x, min=lo, max=hi), want)
    f = mlc.compile(lambda x: mlc.clip(x, min=-3 if np.dtype(dtype).kind != "u" else 1, max=7), x)
    close(f(x), np.clip(x, -3 if np.dtype(dtype).kind != "u" else 1, 7).astype(dtype))


def test_clip_compiled_variants_and_0d():
    x = rand((3, 17))
    check_all(lambda x: mlc.clip(x, max=0.25), [x], np.minimum(x, F32(0.25)))
    check_all(lambda x: mlc.clip(x, min=2, max=-1), [x], np.full_like(x, -1))   # min > max gives max (ONNX)
    x0 = np.array(-4.0, F64)
    check_all(lambda x: mlc.clip(x, min=-1.5), [x0], np.array(-1.5, F64))


@pytest.mark.parametrize("slope_shape", [(13,), (1,), (5, 1), ()])
def test_prelu_matches_onnx(slope_shape):
    x = _act_input((5, 13), F32)
    slope = rand(slope_shape, F32, 0, 1)
    (want,) = onnx_run("PRelu", [x, slope])
    check_all(mlc.prelu, [x, slope], want)


def test_activation_type_errors():
    xi = np.zeros((2, 3), np.int32)
    with pytest.raises(mlc.TraceError, match="leaky_relu: expects a floating-point tensor"):
        mlc.trace(lambda x: mlc.leaky_relu(x, alpha=0.1), xi)
    x = np.zeros((2, 3), F32)
    with pytest.raises(mlc.TraceError, match="gelu: approximate must be 'none' or 'tanh'"):
        mlc.trace(lambda x: mlc.gelu(x, approximate="fast"), x)
    with pytest.raises(mlc.TraceError, match="attribute alpha must be a number"):
        mlc.trace(lambda x: mlc.elu(x, alpha="1"), x)
    with pytest.raises(mlc.TraceError, match="clip: expects a numeric tensor"):
        mlc.trace(lambda x: mlc.clip(x, min=0), np.zeros(3, bool))
    with pytest.raises(mlc.TraceError, match="clip: bound 300 does not fit u8"):
        mlc.trace(lambda x: mlc.clip(x, max=300), np.zeros(3, np.uint8))
    with pytest.raises(mlc.TraceError, match="prelu: slope f32\\[3,1\\] does not broadcast"):
        mlc.trace(mlc.prelu, x, np.zeros((3, 1), F32))


# ============================================================================ batch_norm

@pytest.mark.parametrize("shape,dtype", [((2, 3, 5, 7), F32), ((4, 6), F32), ((2, 5, 9), F64), ((2, 3, 4, 5), F16)],
                         ids=["nchw", "nc", "ncl-f64", "nchw-f16"])
def test_batch_norm_matches_onnx(shape, dtype):
    c = shape[1]
    x = rand(shape, dtype, -3, 3)
    scale, bias, mean = rand((c,), dtype, -2, 2), rand((c,), dtype, -1, 1), rand((c,), dtype, -1, 1)
    var = rand((c,), dtype, 0.1, 2)
    for eps in (1e-5, 0.3):
        (want,) = onnx_run("BatchNormalization", [x.astype(F64), *(p.astype(F64) for p in (scale, bias, mean, var))],
                           {"epsilon": eps})
        close(mlc.batch_norm(x, scale, bias, mean, var, epsilon=eps), want.astype(dtype))
    f = mlc.compile(lambda *a: mlc.batch_norm(*a, epsilon=0.3), x, scale, bias, mean, var)
    close(f(x, scale, bias, mean, var), want.astype(dtype))


def test_batch_norm_rank1_and_errors():
    x = rand((10,))
    p = [np.array([v], F32) for v in (2.0, 0.5, 1.0, 4.0)]
    check_all(lambda *a: mlc.batch_norm(*a, epsilon=0.0), [x, *p], ((x - 1) / 2 * 2 + 0.5).astype(F32))
    x4 = np.zeros((2, 3, 4), F32)
    with pytest.raises(mlc.TraceError, match=r"batch_norm: var must have shape \[3\]"):
        mlc.trace(mlc.batch_norm, x4, *[np.zeros(3, F32)] * 3, np.zeros(4, F32))
    with pytest.raises(mlc.TraceError, match="batch_norm: expects a floating-point input"):
        mlc.trace(mlc.batch_norm, x4.astype(np.int32), *[np.zeros(3, F32)] * 4)


# ============================================================================ layer_norm

@pytest.mark.parametrize("shape,axis,pshape", [((3, 17), -1, (17,)), ((2, 3, 5), 1, (3, 5)), ((4, 9), 0, (4, 9)),
                                               ((2, 3, 7), -1, ())], ids=["last", "axis1", "axis0", "scalar-params"])
def test_layer_norm_matches_onnx(shape, axis, pshape):
    x = rand(shape, F32, -3, 3) + 2
    scale, bias = rand(pshape, F32, -2, 2), rand(pshape, F32, -1, 1)
    full = shape[axis:]
    s_full, b_full = np.broadcast_to(scale, full).copy(), np.broadcast_to(bias, full).copy()
    (want,) = onnx_run("LayerNormalization", [x, s_full, b_full], {"axis": axis, "epsilon": 1e-3})
    check_all(lambda x, s, b: mlc.layer_norm(x, s, b, axis=axis, epsilon=1e-3), [x, scale, bias], want)


def test_layer_norm_without_bias_f16_f64():
    for dtype in (F16, F64):
        x = rand((3, 10), dtype, -3, 3)
        scale = rand((10,), dtype)
        (want,) = onnx_run("LayerNormalization", [x.astype(F32), scale.astype(F32)], {"axis": -1})
        # a missing ONNX bias is a scalar zero
        check_all(lambda x, s: mlc.layer_norm(x, s, np.zeros((), dtype)), [x, scale], want.astype(dtype))


def test_layer_norm_errors():
    x = np.zeros((2, 3, 4), F32)
    with pytest.raises(mlc.TraceError, match=r"layer_norm: scale f32\[3\] does not broadcast to the normalized"):
        mlc.trace(lambda x, s: mlc.layer_norm(x, s, np.float32(0), axis=-1), x, np.zeros(3, F32))
    with pytest.raises(mlc.TraceError, match="layer_norm: axis 3 is out of range"):
        mlc.trace(lambda x: mlc.layer_norm(x, np.float32(1), np.float32(0), axis=3), x)
    with pytest.raises(mlc.TraceError, match="layer_norm: expects a floating-point input"):
        mlc.trace(lambda x: mlc.layer_norm(x, np.float32(1), np.float32(0)), x.astype(np.int32))


# ============================================================================ lrn

@pytest.mark.parametrize("size,alpha,beta,bias", [(3, 1e-4, 0.75, 1.0), (4, 0.1, 0.5, 2.0), (5, 0.02, 0.75, 1.0),
                                                  (1, 0.5, 1.3, 0.5)])
def test_lrn_matches_onnx(size, alpha, beta, bias):
    # ONNX's reference LRN loops over axis 0 where it means axis 1: it is right when N == C
    x = rand((6, 6, 3, 5), F32, -3, 3)
    (want,) = onnx_run("LRN", [x], {"size": size, "alpha": alpha, "beta": beta, "bias": bias})
    check_all(lambda x: mlc.lrn(x, size=size, alpha=alpha, beta=beta, bias=bias), [x], want)


def test_lrn_other_ranks_and_errors():
    x = rand((2, 7, 9), F64, -3, 3)
    want = mlc.lrn(np.expand_dims(x, -1), size=3, alpha=0.1)[..., 0]
    check_all(lambda x: mlc.lrn(x, size=3, alpha=0.1), [x], want)
    with pytest.raises(mlc.TraceError, match="lrn: expects a tensor of rank >= 2"):
        mlc.trace(lambda x: mlc.lrn(x, size=3), np.zeros(4, F32))
    with pytest.raises(mlc.TraceError, match="lrn: size must be a positive int"):
        mlc.trace(lambda x: mlc.lrn(x, size=0), np.zeros((1, 4), F32))


def test_large_shapes_take_the_parallel_path():
    x = rand((300, 130), F32, -3, 3)   # 39000 elements: over the parallel threshold, 130 % 8 != 0
    scale, bias = rand((130,)), rand((130,))
    (want,) = onnx_run("LayerNormalization", [x, scale, bias], {"axis": -1})
    check_all(lambda x, s, b: mlc.layer_norm(x, s, b), [x, scale, bias], want)
    (want,) = onnx_run("Gelu", [x])
    check_all(mlc.gelu, [x], want)
