"""Gradient rules of the nn ops (activations, prelu, clip, batch_norm, layer_norm, lrn)
and the indexing ops (gather, gather_elements, pad, tile, split, cumsum, top_k,
argmax/argmin), checked against central finite differences in float64
(tests/gradcheck.py); plus the ops the indexing gradients need, scatter_add and
scatter_elements_add, against numpy / ONNX and compiled against their reference.

Random inputs are kept away from kinks (relu-like thresholds, clip bounds), where a
finite difference straddles two slopes."""
from __future__ import annotations

import numpy as np
import pytest

import mlc
import mlc.ops.indexing as indexing
from gradcheck import check_grads
from numerics import assert_matches

F16, F32, F64 = np.float16, np.float32, np.float64
I64 = np.int64
_RNG = np.random.default_rng(5)


def rand(*shape, lo=-3.0, hi=3.0):
    return _RNG.uniform(lo, hi, shape)


def away(x, points=(0.0,), margin=0.05):
    """x with every entry moved at least ``margin`` away from each of ``points``."""
    x = np.array(x, F64)
    for p in points:
        near = np.abs(x - p) < margin
        x = np.where(near, p + np.where(x >= p, 2, -2) * margin, x)
    return x


# ============================================================================ activations

ACTIVATIONS = [
    ("leaky_relu", {"alpha": 0.1}, (0.0,)),
    ("elu", {"alpha": 0.7}, (0.0,)),
    ("selu", {}, (0.0,)),
    ("celu", {"alpha": 0.5}, (0.0,)),
    ("gelu", {}, ()),
    ("gelu", {"approximate": "tanh"}, ()),
    ("hard_sigmoid", {"alpha": 0.3, "beta": 0.4}, (-0.4 / 0.3, 0.6 / 0.3)),
    ("hard_swish", {}, (-3.0, 3.0)),
    ("softplus", {}, ()),
    ("softsign", {}, (0.0,)),
    ("mish", {}, ()),
    ("thresholded_relu", {"alpha": 0.5}, (0.5,)),
]


@pytest.mark.parametrize("name,attrs,kinks", ACTIVATIONS, ids=[f"{n}-{a.get('approximate', '')}"
                                                               for n, a, _ in ACTIVATIONS])
def test_activation_grads(name, attrs, kinks):
    x = away(rand(4, 5, lo=-4.5, hi=4.5), kinks)
    check_grads(lambda x: getattr(mlc, name)(x, **attrs), [x])


@pytest.mark.parametrize("name,attrs", [("gelu", {}), ("gelu", {"approximate": "tanh"}), ("softplus", {}),
                                        ("elu", {"alpha": 0.7}), ("mish", {})])
def test_smooth_activations_second_order(name, attrs):
    x = away(rand(3, 4), (0.0,))
    check_grads(lambda x: getattr(mlc, name)(x, **attrs), [x], order=2)


def test_activation_grads_compiled():
    x = away(rand(3, 7, lo=-4, hi=4), (0.0, -3.0, 3.0))
    check_grads(lambda x: mlc.hard_swish(mlc.gelu(x, approximate="tanh")) + mlc.leaky_relu(x, alpha=0.2), [x],
                compiled=True)


def test_kinks_follow_torch():
    """At a kink the one-sided derivative is torch's: leaky_relu and elu take the negative
    side at 0, hard_swish x/3 + 1/2 on [-3, 3], hard_sigmoid 0 where it saturates or at its
    kinks, thresholded_relu 0 at the threshold."""
    x = np.array([-3.0, -1.0, 0.0, 3.0, 4.0])

    def grad(fn):
        return mlc.grad(lambda x: mlc.sum(fn(x)))(x)
    np.testing.assert_allclose(grad(lambda x: mlc.leaky_relu(x, alpha=0.1)), [0.1, 0.1, 0.1, 1, 1])
    np.testing.assert_allclose(grad(lambda x: mlc.elu(x, alpha=0.5)), 0.5 * np.exp([-3, -1, 0, 0, 0]) * [1, 1, 1, 0, 0]
                               + [0, 0, 0, 1, 1])
    np.testing.assert_allclose(grad(mlc.hard_swish), [-0.5, 1 / 6, 0.5, 1.5, 1])
    np.testing.assert_allclose(grad(lambda x: mlc.thresholded_relu(x, alpha=3.0)), [0, 0, 0, 0, 1])
    x = np.array([-3.0, -2.5, 0.0, 2.5, 3.0])      # hard_sigmoid(0.2 x + 0.5) has its kinks at -2.5 and 2.5
    np.testing.assert_allclose(grad(lambda x: mlc.hard_sigmoid(x, alpha=0.2, beta=0.5)), [0, 0, 0.2, 0, 0])


@pytest.mark.parametrize("dtype", [F32, F16])
def test_activation_grads_keep_low_precision_dtypes(dtype):
    x = away(rand(2, 9), (0.0,)).astype(dtype)
    for fn in (mlc.gelu, mlc.mish, lambda x: mlc.elu(x, alpha=0.5)):
        got = mlc.grad(lambda x: mlc.sum(fn(x)))(x)
        want = mlc.grad(lambda x: mlc.sum(fn(x)))(x.astype(F64))
        assert got.dtype == dtype
        assert_matches(got, want.astype(dtype), {np.dtype(F32): (1e-5, 1e-6), np.dtype(F16): (1e-2, 1e-2)})


# ============================================================================ prelu, clip

@pytest.mark.parametrize("slope_shape", [(5,), (4, 1), (), (1,)])
def test_prelu_grads_x_and_broadcast_slope(slope_shape):
    check_grads(mlc.prelu, [away(rand(4, 5)), rand(*slope_shape, lo=0.05, hi=1)], compiled=slope_shape == (4, 1))


@pytest.mark.parametrize("lo,hi", [(-1.0, 1.5), (None, 1.5), (-1.0, None), (None, None), (2.0, -1.0)])
def test_clip_grads(lo, hi):
    x = away(rand(3, 5), (-1.0, 1.5, 2.0))
    check_grads(lambda x: mlc.clip(x, min=lo, max=hi), [x])


def test_clip_passes_the_gradient_at_its_bounds_like_torch():
    """torch.clamp's gradient is 1 where min <= x <= max, bounds included (its backward is
    where((x >= min) & (x <= max), g, 0)); min > max makes the result constant: 0."""
    x = np.array([-2.0, -1.0, 0.0, 1.0, 2.0])
    g = mlc.grad(lambda x: mlc.sum(mlc.clip(x, min=-1.0, max=1.0)))
    np.testing.assert_array_equal(g(x), [0, 1, 1, 1, 0])
    np.testing.assert_array_equal(mlc.grad(lambda x: mlc.sum(mlc.clip(x, max=0.0)))(x), [1, 1, 1, 0, 0])
    np.testing.assert_array_equal(mlc.grad(lambda x: mlc.sum(mlc.clip(x, min=1.0, max=-1.0)))(x), [0] * 5)


# ============================================================================ batch_norm

def _bn_params(c):
    return [rand(c), rand(c), rand(c), rand(c, lo=0.5, hi=2.0)]


@pytest.mark.parametrize("shape", [(2, 3, 2, 2), (4, 3), (7,)], ids=["nchw", "nc", "rank1"])
def test_batch_norm_inference_grads_all_five_inputs(shape):
    c = shape[1] if len(shape) >= 2 else 1
    check_grads(lambda *a: mlc.batch_norm(*a, epsilon=1e-3), [rand(*shape), *_bn_params(c)])


def _train_bn(x, scale, bias):
    """Training mode: normalize with the batch statistics, batch_norm(x, s, b, mean(x), var(x))."""
    axes = (0,) + tuple(range(2, x.ndim))
    shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
    mean = mlc.mean(x, axis=axes)
    d = x - mlc.reshape(mean, shape)
    var = mlc.mean(d * d, axis=axes)
    return mlc.batch_norm(x, scale, bias, mean, var, epsilon=1e-3)


def test_batch_norm_training_composition_flows_through_mean_and_var():
    x, scale, bias = rand(3, 2, 2, 3), rand(2), rand(2)
    check_grads(_train_bn, [x, scale, bias], compiled=True)
    # sum(y) of a normalized batch does not depend on x: the statistics' gradient cancels the direct one
    g = mlc.grad(lambda x: mlc.sum(_train_bn(x, scale, bias)))(x)
    np.testing.assert_allclose(g, 0, atol=1e-9)


# ============================================================================ layer_norm

@pytest.mark.parametrize("shape,axis,pshape", [((3, 5), -1, (5,)), ((2, 3, 4), 1, (3, 4)), ((2, 3, 4), 1, (4,)),
                                               ((3, 4), 0, ())], ids=["last", "axis1", "axis1-bcast", "scalar"])
def test_layer_norm_grads(shape, axis, pshape):
    check_grads(lambda x, s, b: mlc.layer_norm(x, s, b, axis=axis, epsilon=1e-3),
                [rand(*shape), rand(*pshape), rand(*pshape)], compiled=axis == 1 and len(pshape) == 2)


def test_layer_norm_second_order():
    check_grads(lambda x, s, b: mlc.layer_norm(x, s, b, epsilon=1e-3), [rand(2, 5), rand(5), rand(5)], order=2)


def test_norm_grads_in_float16_and_float32():
    for dtype, tol in ((F32, (1e-4, 1e-5)), (F16, (3e-2, 3e-2))):
        x, s, b = rand(3, 6).astype(dtype), rand(6).astype(dtype), rand(6).astype(dtype)
        p = [a.astype(dtype) for a in _bn_params(3)]

        def f(x, s, b, *p):
            return mlc.sum(mlc.layer_norm(x, s, b) * x) + mlc.sum(mlc.batch_norm(x[:, :3], *p) ** 2)
        got = mlc.grad(f, argnums=(0, 1, 2, 3))(x, s, b, *p)
        want = mlc.grad(f, argnums=(0, 1, 2, 3))(*[a.astype(F64) for a in (x, s, b, *p)])
        for g, w in zip(got, want):
            assert_matches(g, w.astype(dtype), {np.dtype(dtype): tol})


# ============================================================================ lrn

@pytest.mark.parametrize("size,beta", [(3, 0.75), (2, 0.5), (5, 1.3), (1, 0.75)])
def test_lrn_grads(size, beta):
    check_grads(lambda x: mlc.lrn(x, size=size, alpha=0.3, beta=beta, bias=1.5), [rand(2, 4, 3)],
                compiled=size == 3)


# ============================================================================ gather / gather_elements

@pytest.mark.parametrize("dshape,idx,axis", [
    ((5, 4), [[0, 3, -1], [3, 3, 7]], 0),        # repeats, a negative and an out-of-range index (clamped)
    ((5, 4), [1, -1, 1, 2, 9], 1),
    ((2, 5, 3), [[4, 0], [4, 4]], 1),
    ((5, 4), 2, 1),                               # a 0-d index
], ids=["axis0", "axis1", "3d", "0d-index"])
def test_gather_grads(dshape, idx, axis):
    idx = np.array(idx, I64)
    check_grads(lambda d, i: mlc.gather(d, i, axis=axis), [rand(*dshape), idx], compiled=len(dshape) == 3)


@pytest.mark.parametrize("sorted_gain", [0.0, 1e30], ids=["sorted", "direct"])
def test_embedding_grad_both_scatter_forms(monkeypatch, sorted_gain):
    """An embedding lookup table[V, D] gathered with [B, T] indices: the gradient sums
    each row's cotangents (np.add.at), by either formulation of scatter_add."""
    monkeypatch.setattr(indexing, "SORTED_SCATTER_GAIN", sorted_gain)
    table, idx = rand(9, 3), _RNG.integers(0, 9, (4, 6))
    idx[0, :5] = 2                       # a row used often: whole blocks in the sorted form
    check_grads(lambda t, i: mlc.gather(t, i, axis=0), [table, idx], compiled=True)


def test_large_embedding_grad_takes_the_sorted_form():
    V, D, B, T = 300, 16, 4, 128
    assert indexing._scatter_plan(V, B * T, D) is not None
    assert indexing._scatter_plan(1000, 2048, 64) is not None      # the benchmark size
    assert indexing._scatter_plan(10, 2048, 64) is None            # few rows: scanning the indices is cheaper
    table = _RNG.standard_normal((V, D)).astype(F32)
    idx = _RNG.integers(-V, V, (B, T))
    w = _RNG.standard_normal((B, T, D)).astype(F32)
    got = mlc.grad(lambda t: mlc.sum(mlc.gather(t, idx, axis=0) * w))(table)
    want = np.zeros((V, D), F64)
    np.add.at(want, np.where(idx < 0, idx + V, idx), w)
    assert_matches(got, want.astype(F32), {np.dtype(F32): (1e-5, 1e-5)})


@pytest.mark.parametrize("dshape,ishape,axis", [((5, 4), (3, 4), 1), ((4, 3), (7, 2), 0)])
def test_gather_elements_grads(dshape, ishape, axis):
    n = dshape[axis]
    idx = _RNG.integers(-n, n + 2, ishape)
    check_grads(lambda d: mlc.gather_elements(d, idx, axis=axis), [rand(*dshape)], compiled=axis == 0)


def test_integer_indices_get_no_gradient():
    """Indices are simply not differentiated: vjp gives None for them, and asking grad for
    them is an error naming the integer type."""
    data, idx = rand(5, 3), np.array([4, 0, 4])
    _, f_vjp = mlc.vjp(lambda d, i: mlc.gather(d, i, axis=0), data, idx)
    g_data, g_idx = f_vjp(np.ones((3, 3)))
    assert g_idx is None
    np.testing.assert_array_equal(g_data, [[1] * 3, [0] * 3, [0] * 3, [0] * 3, [2] * 3])
    with pytest.raises(mlc.TraceError, match="cannot differentiate with respect to an input of type i64"):
        mlc.grad(lambda d, i: mlc.sum(mlc.gather(d, i)), argnums=1)(data, idx)


# ============================================================================ pad / tile / split / cumsum

PADS = [((4, 5), [1, 2, 3, 0]), ((3,), [7, 9]), ((1, 4), [2, 1, 3, 4]), ((6, 5), [-2, 3, 1, -4]), ((5,), [-1, 2])]


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge", "wrap"])
def test_pad_grads_every_mode(mode):
    """Including pads longer than the axis (repeated reflection/wrapping), a size-1 axis
    and negative pads (cropping)."""
    for shape, pads in PADS:
        check_grads(lambda x: mlc.pad(x, pads=pads, mode=mode, value=1.5), [rand(*shape)])


def test_pad_grads_compiled():
    def f(x):
        return mlc.pad(x, pads=[2, 3, 4, 1], mode="reflect") * 2.0 + mlc.pad(x, pads=[1, 0, 5, 7], mode="edge")[:, :9]
    check_grads(f, [rand(4, 5)], compiled=True)


def test_tile_grads():
    check_grads(lambda x: mlc.tile(x, repeats=(2, 1, 3)), [rand(2, 3, 2)], compiled=True)
    check_grads(lambda x: mlc.tile(x, repeats=(1, 1)), [rand(2, 3)])


def test_split_grads_with_unused_outputs():
    def f(x):
        a, _, c = mlc.split(x, axis=1, sizes=(1, 3, 2))   # the middle piece is unused: zeros
        return a * 2.0, c
    check_grads(f, [rand(2, 6)], compiled=True)
    check_grads(lambda x: mlc.split(x, axis=0, num_outputs=3)[2], [rand(5, 2)])


@pytest.mark.parametrize("exclusive", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
def test_cumsum_grads(exclusive, reverse):
    check_grads(lambda x: mlc.cumsum(x, axis=1, exclusive=exclusive, reverse=reverse), [rand(2, 5)],
                compiled=exclusive and not reverse)


# ============================================================================ top_k / argmax / argmin

def test_top_k_grads_go_to_the_selected_positions():
    check_grads(lambda x: mlc.top_k(x, k=3, axis=1)[0], [rand(3, 6)], compiled=True)
    check_grads(lambda x: mlc.top_k(x, k=2, axis=0, largest=False), [rand(4, 3)])
    x = np.array([[1.0, 5.0, 3.0, 4.0]])
    np.testing.assert_array_equal(mlc.grad(lambda x: mlc.sum(mlc.top_k(x, k=2)[0] * np.array([10.0, 1.0])))(x),
                                  [[0, 10, 0, 1]])


@pytest.mark.parametrize("op", ["argmax", "argmin"])
def test_arg_ops_have_no_gradient(op):
    x = rand(3, 4)
    rule = mlc.ops.get(op).vjp
    assert rule is not None
    # an integer result passes nothing back; the gradient flows only through the float path
    check_grads(lambda x: x * mlc.cast(getattr(mlc, op)(x, axis=1), x.dtype), [x])
    g = mlc.grad(lambda x: mlc.sum(mlc.cast(getattr(mlc, op)(x, axis=1), x.dtype) + x * 0.0))(x)
    np.testing.assert_array_equal(g, np.zeros_like(x))


# ============================================================================ scatter_add / scatter_elements_add

def _np_scatter_add(data, idx, upd, axis):
    n = data.shape[axis]
    out = data.astype(F64)
    idx = np.clip(np.where(idx < 0, idx + n, idx), 0, n - 1)
    np.add.at(out, (slice(None),) * axis + (idx,), upd.astype(F64))
    return out


SCATTER_CASES = [((7, 5), (3,), 0, F32), ((4, 9, 3), (2, 5), 1, F32), ((4, 9), (40,), 1, F64),
                 ((3, 20), (7, 9), 1, F32), ((2, 6, 3), (50,), 1, F16), ((5, 3), (33,), 0, np.int32),
                 ((6, 2), (), 0, F32)]


@pytest.mark.parametrize("sorted_gain", [0.0, 1e30], ids=["sorted", "direct"])
@pytest.mark.parametrize("dshape,ishape,axis,dtype", SCATTER_CASES, ids=[str(c[:3]) for c in SCATTER_CASES])
def test_scatter_add_reference_and_compiled(monkeypatch, sorted_gain, dshape, ishape, axis, dtype):
    monkeypatch.setattr(indexing, "SORTED_SCATTER_GAIN", sorted_gain)
    n = dshape[axis]
    idx = _RNG.integers(-n - 2, n + 2, ishape)        # negative and out-of-range indices too
    data = (rand(*dshape) * 3).astype(dtype)
    upd = (rand(*(dshape[:axis] + ishape + dshape[axis + 1:])) * 3).astype(dtype)
    want = _np_scatter_add(data, idx, upd, axis).astype(dtype)
    tol = {np.dtype(F16): (2e-3, 2e-2), np.dtype(F32): (1e-5, 1e-5), np.dtype(F64): (1e-12, 1e-12)}
    ref = mlc.scatter_add(data, idx, upd, axis=axis)
    assert_matches(ref, want, tol)
    assert_matches(mlc.compile(lambda d, i, u: mlc.scatter_add(d, i, u, axis=axis), data, idx, upd)(data, idx, upd),
                   ref, tol)


def test_scatter_elements_add_matches_onnx():
    pytest.importorskip("onnx")
    from onnx_reference import onnx_run
    for dshape, ishape, axis in [((4, 7), (4, 3), 1), ((5, 6, 3), (2, 6, 3), 0), ((5, 6), (3, 4), 1)]:
        data = rand(*dshape).astype(F32)
        n = dshape[axis]
        idx = _RNG.integers(-n, n, ishape)
        upd = rand(*ishape).astype(F32)
        (want,) = onnx_run("ScatterElements", [data, idx, upd], {"axis": axis, "reduction": "add"})
        tol = {np.dtype(F32): (1e-6, 1e-6)}
        assert_matches(mlc.scatter_elements_add(data, idx, upd, axis=axis), want, tol)
        f = mlc.compile(lambda d, i, u: mlc.scatter_elements_add(d, i, u, axis=axis), data, idx, upd)
        assert_matches(f(data, idx, upd), want, tol)


def test_scatter_elements_add_clamps_and_f16():
    data = rand(3, 4).astype(F16)
    idx = np.array([[0, 9, -1], [-9, 2, 2], [1, 1, 1]])
    upd = rand(3, 3).astype(F16)
    want = data.astype(F64)
    for r in range(3):
        for c in range(3):
            want[r, min(max(idx[r, c] + 4 if idx[r, c] < 0 else idx[r, c], 0), 3)] += upd[r, c]
    tol = {np.dtype(F16): (2e-3, 2e-2)}
    assert_matches(mlc.scatter_elements_add(data, idx, upd, axis=1), want.astype(F16), tol)
    f = mlc.compile(lambda d, i, u: mlc.scatter_elements_add(d, i, u, axis=1), data, idx, upd)
    assert_matches(f(data, idx, upd), want.astype(F16), tol)


def test_scatter_ops_are_differentiable():
    idx = np.array([[0, 3, -1], [3, 3, 7]])
    check_grads(lambda d, u: mlc.scatter_add(d, idx, u, axis=1), [rand(2, 5, 3), rand(2, 2, 3, 3)])
    ie = np.array([[0, 3, 3], [1, -1, 0], [2, 2, 2]])
    check_grads(lambda d, u: mlc.scatter_elements_add(d, ie, u, axis=1), [rand(3, 4), rand(3, 3)])
    check_grads(lambda d: mlc.gather(d, idx, axis=0) ** 2, [rand(5, 4)], order=2)


def test_scatter_type_errors():
    d, u = np.zeros((4, 3), F32), np.zeros((2, 3), F32)
    with pytest.raises(mlc.TraceError, match="scatter_add: indices must be integers"):
        mlc.trace(lambda d, i, u: mlc.scatter_add(d, i, u), d, np.zeros(2, F32), u)
    with pytest.raises(mlc.TraceError, match=r"scatter_add: updates must have shape \[2, 3\]"):
        mlc.trace(lambda d, i, u: mlc.scatter_add(d, i, u), d, np.zeros(2, I64), np.zeros((3, 3), F32))
    with pytest.raises(mlc.TraceError, match="scatter_add: updates f64\\[2,3\\] must have the dtype of data"):
        mlc.trace(lambda d, i, u: mlc.scatter_add(d, i, u), d, np.zeros(2, I64), u.astype(F64))
    with pytest.raises(mlc.TraceError, match="scatter_add: axis 2 is out of range"):
        mlc.trace(lambda d, i, u: mlc.scatter_add(d, i, u, axis=2), d, np.zeros(2, I64), u)
    with pytest.raises(mlc.TraceError, match="scatter_elements_add: updates f32\\[2,3\\] must have the shape"):
        mlc.trace(lambda d, i, u: mlc.scatter_elements_add(d, i, u), d, np.zeros((2, 2), I64), u)
    with pytest.raises(mlc.TraceError, match="scatter_elements_add: indices i64\\[2,5\\] exceed data"):
        mlc.trace(lambda d, i, u: mlc.scatter_elements_add(d, i, u), d, np.zeros((2, 5), I64), np.zeros((2, 5), F32))
