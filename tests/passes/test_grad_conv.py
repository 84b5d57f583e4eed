"""Gradient rules of the convolution and pooling ops (mlc/ops/conv.py, pool.py, im2col.py) against finite
differences (tests/gradcheck.py, float64), and the ops added for them --
conv_weight_grad, col2im, max_pool_grad, avg_pool_grad -- against straightforward
numpy loops and compiled against their references.

Max pooling inputs are permutations of well-separated values, so that no two window
elements are within finite-difference reach of each other; ties are tested on their
own, with exact expectations.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest

import mlc
from gradcheck import check_grads
from mlc.ops import conv as conv_ops
from numerics import assert_matches

R = np.random.default_rng(0)
TOL = {np.dtype(np.float32): (2e-5, 2e-5), np.dtype(np.float64): (1e-12, 1e-12)}


def rnd(*shape):
    return R.standard_normal(shape)


def distinct(*shape):
    """Values 0.1 apart in random order: no near-ties for max pooling."""
    n = int(np.prod(shape))
    return (R.permutation(n).reshape(shape) - n / 2) * 0.1


# ============================================================================ conv

CONV = [
    # (x shape, w shape, attrs, compiled)
    ((2, 3, 6, 5), (4, 3, 3, 2), {}, True),
    ((2, 4, 7, 6), (6, 2, 3, 2), {"strides": [2, 1], "dilations": [1, 2], "pads": [1, 0, 2, 1], "group": 2}, True),
    ((1, 4, 6, 6), (4, 1, 3, 3), {"group": 4, "strides": [2, 2], "pads": [1, 1, 1, 1]}, True),      # depthwise
    ((1, 3, 5, 5), (6, 1, 2, 2), {"group": 3, "pads": [0, 1, 1, 0]}, False),                          # depthwise x2
    ((1, 2, 7, 6), (3, 2, 3, 3), {"auto_pad": "SAME_UPPER", "strides": [2, 2]}, False),
    ((1, 2, 6, 7), (3, 2, 2, 3), {"auto_pad": "SAME_LOWER", "strides": [2, 3]}, False),
    ((1, 2, 7, 6), (3, 2, 3, 2), {"auto_pad": "VALID", "strides": [2, 2], "dilations": [2, 1]}, False),
    ((1, 3, 5, 5), (4, 3, 1, 1), {"strides": [2, 2]}, False),
    ((1, 2, 5, 5), (2, 2, 3, 3), {"strides": [3, 3], "pads": [0, 1, 2, 2]}, False),   # end pads partly unread
    ((2, 3, 9), (4, 3, 3), {"strides": [2], "dilations": [2], "pads": [2, 1]}, True),                 # 1-D
    ((1, 2, 4, 4, 3), (2, 2, 2, 3, 2), {"strides": [1, 2, 1], "pads": [1, 0, 0, 0, 1, 1]}, True),     # 3-D
    # dx as a flipped conv (stride 1) or W^T @ g + col2im (C*KH*KW >= 64 rows), dw in the matrix form (>= 8 output channels)
    ((2, 8, 7, 6), (8, 8, 3, 3), {"pads": [1, 1, 1, 1]}, True),
    ((2, 8, 9, 8), (3, 8, 3, 3), {"strides": [2, 2], "pads": [1, 0, 2, 1], "dilations": [1, 2]}, True),
    ((1, 4, 5, 6), (16, 2, 3, 3), {"group": 2, "strides": [2, 1], "pads": [1, 1, 0, 0]}, True),
]


@pytest.mark.parametrize("xs, ws, attrs, compiled", CONV, ids=[str(i) for i in range(len(CONV))])
def test_conv(xs, ws, attrs, compiled):
    check_grads(lambda x, w: mlc.conv(x, w, **attrs), [rnd(*xs), rnd(*ws)], compiled=compiled)


def test_conv_second_order():
    check_grads(lambda x, w: mlc.conv(x, w, strides=[2, 1], pads=[1, 0, 0, 1]), [rnd(1, 2, 5, 4), rnd(2, 2, 3, 2)],
                order=2)


def test_conv_in_a_network_compiles_with_its_gradient():
    """conv -> relu -> max_pool -> mean, float32, both gradients compiled in one graph."""
    x = rnd(2, 3, 8, 8).astype(np.float32)
    w = (rnd(8, 3, 3, 3) * 0.3).astype(np.float32)

    def loss(x, w):
        y = mlc.max_pool(mlc.relu(mlc.conv(x, w, pads=[1, 1, 1, 1])), kernel_shape=[2, 2], strides=[2, 2])
        return mlc.mean(y * y)

    gx, gw = mlc.grad(loss, argnums=(0, 1))(x, w)
    want = mlc.ops.run_reference(mlc.trace(mlc.grad(loss, argnums=(0, 1)), x, w), x, w)
    np.testing.assert_allclose(gx, want[0], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(gw, want[1], rtol=1e-4, atol=1e-6)


# ============================================================================ conv_transpose

CONVT = [
    ((1, 3, 4, 3), (3, 2, 3, 3), {"strides": [2, 2]}, True),
    ((1, 4, 3, 4), (4, 3, 3, 2), {"strides": [2, 3], "pads": [1, 0, 1, 1], "output_padding": [1, 2],
                                  "dilations": [1, 2]}, True),
    ((1, 4, 4, 4), (4, 1, 3, 3), {"group": 2, "pads": [1, 1, 1, 1], "dilations": [2, 1]}, False),
    # output_shape larger than the natural size: negative pads
    ((1, 2, 4, 5), (2, 3, 3, 3), {"strides": [2, 2], "output_shape": [10, 12], "auto_pad": "SAME_UPPER"}, True),
    ((2, 3, 5), (3, 2, 4), {"strides": [3], "pads": [1, 2]}, False),                                 # 1-D
    ((1, 2, 4), (2, 2, 3), {"strides": [2], "output_padding": [3]}, False),          # output_padding > stride
    ((1, 2, 3, 2, 3), (2, 2, 2, 3, 2), {"strides": [2, 1, 2], "pads": [0, 1, 0, 1, 0, 1]}, True),   # 3-D
]


@pytest.mark.parametrize("xs, ws, attrs, compiled", CONVT, ids=[str(i) for i in range(len(CONVT))])
def test_conv_transpose(xs, ws, attrs, compiled):
    check_grads(lambda x, w: mlc.conv_transpose(x, w, **attrs), [rnd(*xs), rnd(*ws)], compiled=compiled)


# ============================================================================ conv_weight_grad

def loop_conv_weight_grad(x, g, K, strides, dilations, pads, group):
    """dw[m, c, k] = sum over n, o of g[n, m, o] * x_padded[n, group(m)*Cg + c, o*s + k*d], by loops."""
    D = x.ndim - 2
    C, M = x.shape[1], g.shape[1]
    Cg, Mg = C // group, M // group
    xp = np.pad(x, [(0, 0), (0, 0)] + [(pads[a], pads[D + a]) for a in range(D)])
    dw = np.zeros((M, Cg, *K))
    for m, c in itertools.product(range(M), range(Cg)):
        ci = (m // Mg) * Cg + c
        for k in itertools.product(*[range(n) for n in K]):
            for o in itertools.product(*[range(n) for n in g.shape[2:]]):
                pos = tuple(oo * s + kk * d for oo, kk, s, d in zip(o, k, strides, dilations))
                dw[(m, c, *k)] += np.dot(g[(slice(None), m, *o)], xp[(slice(None), ci, *pos)])
    return dw


WGRAD = [
    # (x shape, w shape, attrs): the direct form (< 8 output channels per group) and the matrix form
    ((2, 3, 6, 5), (4, 3, 3, 2), {"strides": [2, 1], "pads": [1, 0, 2, 1], "dilations": [1, 2]}),
    ((2, 4, 5, 5), (4, 1, 3, 3), {"group": 4, "pads": [1, 1, 1, 1]}),
    ((3, 3, 6, 7), (8, 3, 3, 2), {"strides": [2, 3], "pads": [0, 1, 1, 0]}),
    ((2, 4, 5, 6), (16, 2, 2, 3), {"group": 2, "dilations": [2, 1], "pads": [1, 1, 0, 1]}),
    ((2, 2, 9), (8, 2, 3), {"strides": [2], "pads": [1, 2]}),
]


def _wgrad_case(xs, ws, attrs, dtype=np.float64):
    x = rnd(*xs).astype(dtype)
    canon = mlc.ops.get("conv").canonical_attrs([mlc.TensorType(xs, mlc.float64), mlc.TensorType(ws, mlc.float64)],
                                                attrs)
    a = {k: canon[k] for k in ("strides", "dilations", "pads", "group")}
    a["kernel_shape"] = ws[2:]
    g = rnd(*mlc.conv(x.astype(np.float64), np.zeros(ws), **attrs).shape).astype(dtype)
    return x, g, a


@pytest.mark.parametrize("xs, ws, attrs", WGRAD, ids=[str(i) for i in range(len(WGRAD))])
def test_conv_weight_grad_op(xs, ws, attrs):
    x, g, a = _wgrad_case(xs, ws, attrs)
    want = loop_conv_weight_grad(x, g, a["kernel_shape"], a["strides"], a["dilations"], a["pads"], a["group"])
    ref = mlc.conv_weight_grad(x, g, **a)
    assert_matches(ref, want, TOL)
    got = mlc.compile(lambda x, g: mlc.conv_weight_grad(x, g, **a), x, g)(x, g)
    assert_matches(got, ref, TOL)


@pytest.mark.parametrize("budget", [1, 2 * 16 * 9 * 8 * 4])
def test_conv_weight_grad_batch_chunks(monkeypatch, budget):
    """The matrix form's partial sums over batch chunks: one chunk for the whole batch
    (budget 1), and chunks of two images (room for two partial sums of 16*9*8 floats)."""
    monkeypatch.setattr(conv_ops, "_WGRAD_PART_BYTES", budget)
    x, g, a = _wgrad_case((4, 16, 6, 6), (8, 16, 3, 3), {"pads": [1, 1, 1, 1]}, np.float32)
    got = mlc.compile(lambda x, g: mlc.conv_weight_grad(x, g, **a), x, g)(x, g)
    assert_matches(got, mlc.conv_weight_grad(x, g, **a), {np.dtype(np.float32): (1e-5, 1e-4)})


# ============================================================================ im2col / col2im

IM2COL = [
    ({"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}, True),
    ({"kernel_shape": [3, 2], "strides": [2, 1], "pads": [1, 0, 0, 1], "dilations": [1, 2]}, True),
    ({"kernel_shape": [2, 2], "strides": [3, 2]}, False),
]


@pytest.mark.parametrize("attrs, compiled", IM2COL, ids=[str(i) for i in range(len(IM2COL))])
def test_im2col(attrs, compiled):
    check_grads(lambda x: mlc.im2col(x, **attrs), [rnd(2, 2, 6, 5)], compiled=compiled)


def loop_col2im(cols, image_shape, K, strides, pads, dilations):
    N, rows, _ = cols.shape
    C = rows // (K[0] * K[1])
    out = [(n + pads[a] + pads[2 + a] - (k - 1) * d - 1) // s + 1
           for a, (n, k, s, d) in enumerate(zip(image_shape, K, strides, dilations))]
    x = np.zeros((N, C, *image_shape))
    for c, kh, kw, oh, ow in itertools.product(range(C), range(K[0]), range(K[1]), range(out[0]), range(out[1])):
        h = oh * strides[0] + kh * dilations[0] - pads[0]
        w = ow * strides[1] + kw * dilations[1] - pads[1]
        if 0 <= h < image_shape[0] and 0 <= w < image_shape[1]:
            x[:, c, h, w] += cols[:, (c * K[0] + kh) * K[1] + kw, oh * out[1] + ow]
    return x


@pytest.mark.parametrize("attrs, compiled", IM2COL, ids=[str(i) for i in range(len(IM2COL))])
def test_col2im_op(attrs, compiled):
    a = {"strides": [1, 1], "pads": [0, 0, 0, 0], "dilations": [1, 1], **attrs}
    x = rnd(2, 2, 6, 5)
    cols = rnd(*mlc.im2col(x, **attrs).shape)
    ref = mlc.col2im(cols, image_shape=[6, 5], **attrs)
    assert_matches(ref, loop_col2im(cols, (6, 5), a["kernel_shape"], a["strides"], a["pads"], a["dilations"]), TOL)
    # the adjoint of im2col: <im2col(x), cols> == <x, col2im(cols)>
    np.testing.assert_allclose(np.sum(mlc.im2col(x, **attrs) * cols), np.sum(x * ref), rtol=1e-12)
    check_grads(lambda c: mlc.col2im(c, image_shape=[6, 5], **attrs), [cols])
    if compiled:
        for dt in (np.float64, np.float32):
            c = cols.astype(dt)
            got = mlc.compile(lambda c: mlc.col2im(c, image_shape=[6, 5], **attrs), c)(c)
            assert_matches(got, mlc.col2im(c, image_shape=[6, 5], **attrs), TOL)


# ============================================================================ max_pool

MAX_POOL = [
    ((2, 3, 6, 6), {"kernel_shape": [2, 2], "strides": [2, 2]}, True),
    ((1, 2, 7, 6), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}, True),
    ((1, 2, 7, 6), {"kernel_shape": [3, 2], "strides": [2, 2], "pads": [1, 0, 0, 1], "ceil_mode": True}, True),
    ((1, 2, 7, 8), {"kernel_shape": [2, 3], "dilations": [2, 2], "pads": [1, 1, 0, 2]}, True),
    ((1, 2, 5, 5), {"kernel_shape": [3, 3]}, False),                                          # stride 1
    ((1, 2, 7, 6), {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_UPPER"}, False),
    ((1, 2, 8, 7), {"kernel_shape": [3, 2], "strides": [3, 2], "ceil_mode": True, "dilations": [1, 2]}, False),
    ((2, 2, 9), {"kernel_shape": [4], "strides": [3], "pads": [2, 1]}, True),                   # 1-D
    ((1, 2, 4, 5, 4), {"kernel_shape": [2, 3, 2], "strides": [2, 2, 1], "pads": [0, 1, 0, 1, 1, 1]}, False),  # 3-D
]


@pytest.mark.parametrize("xs, attrs, compiled", MAX_POOL, ids=[str(i) for i in range(len(MAX_POOL))])
def test_max_pool(xs, attrs, compiled):
    check_grads(lambda x: mlc.max_pool(x, **attrs), [distinct(*xs)], compiled=compiled)


def test_max_pool_ties_go_to_the_first_maximum_in_scan_order():
    x = np.zeros((1, 1, 4, 4))
    x[0, 0, 1, 0] = x[0, 0, 0, 1] = 5.0        # tie in the first 2x2 window: (0, 1) comes first row-major
    x[0, 0, 3, 3] = x[0, 0, 2, 3] = 2.0        # tie in the last window: (2, 3) first
    # windows 2 and 3 are all zeros: their first element, (0, 2) and (2, 0), wins
    f = mlc.grad(lambda x: mlc.sum(mlc.max_pool(x, kernel_shape=[2, 2], strides=[2, 2]) * np.arange(1.0, 5.0)
                                   .reshape(1, 1, 2, 2)))
    want = np.zeros((1, 1, 4, 4))
    want[0, 0, 0, 1], want[0, 0, 0, 2], want[0, 0, 2, 0], want[0, 0, 2, 3] = 1.0, 2.0, 3.0, 4.0
    np.testing.assert_array_equal(f(x), want)                                       # compiled
    np.testing.assert_array_equal(mlc.ops.run_reference(mlc.trace(f, x), x)[0], want)   # reference
    # overlapping windows (stride 1): each window's cotangent goes to its own first maximum
    y = np.array([[[1.0, 3.0, 3.0, 0.0, 3.0]]])
    g = mlc.grad(lambda y: mlc.sum(mlc.max_pool(y, kernel_shape=[3])))(y)
    np.testing.assert_array_equal(g, [[[0.0, 2.0, 1.0, 0.0, 0.0]]])   # windows [1,3,3] [3,3,0] -> 1; [3,0,3] -> 2


def loop_max_pool_grad(x, g, kernel_shape, strides, pads, dilations):
    """Each window's g added at its first maximum in scan order, by loops."""
    D = x.ndim - 2
    dx = np.zeros(x.shape)
    for n, c in itertools.product(*[range(k) for k in x.shape[:2]]):
        for o in itertools.product(*[range(k) for k in g.shape[2:]]):
            best = None
            for k in itertools.product(*[range(k) for k in kernel_shape]):
                p = tuple(oo * s + kk * d - pb for oo, kk, s, d, pb in zip(o, k, strides, dilations, pads[:D]))
                if all(0 <= pp < nn for pp, nn in zip(p, x.shape[2:])) and (best is None or x[(n, c, *p)] >
                                                                             x[(n, c, *best)]):
                    best = p
            if best is not None:
                dx[(n, c, *best)] += g[(n, c, *o)]
    return dx


@pytest.mark.parametrize("xs, attrs, compiled", MAX_POOL, ids=[str(i) for i in range(len(MAX_POOL))])
def test_max_pool_grad_op(xs, attrs, compiled):
    x = np.round(rnd(*xs) * 2) / 2      # many ties
    canon = mlc.ops.get("max_pool").canonical_attrs([mlc.TensorType(xs, mlc.float64)], attrs)
    a = {k: canon[k] for k in ("kernel_shape", "strides", "pads", "dilations", "ceil_mode")}
    y = mlc.max_pool(x, **a)
    g = rnd(*y.shape)
    ref = mlc.max_pool_grad(x, y, g, **a)
    assert_matches(ref, loop_max_pool_grad(x, g, a["kernel_shape"], a["strides"], a["pads"], a["dilations"]), TOL)
    if compiled:
        for dt in (np.float64, np.float32):
            args = [v.astype(dt) for v in (x, y, g)]
            got = mlc.compile(lambda x, y, g: mlc.max_pool_grad(x, y, g, **a), *args)(*args)
            assert_matches(got, mlc.max_pool_grad(*args, **a), TOL)


def test_max_pool_grad_is_linear_in_g():
    """Its own gradient (second order through max_pool): g gets the cotangent at each
    window's first maximum; x and y get none."""
    x = distinct(1, 2, 7, 6)
    a = {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}
    y = mlc.max_pool(x, **a)
    check_grads(lambda g: mlc.max_pool_grad(x, y, g, **a), [rnd(*y.shape)], compiled=True)


def test_max_pool_indices_has_no_gradient():
    x = distinct(1, 2, 6, 6)
    a = {"kernel_shape": [2, 2], "strides": [2, 2]}
    check_grads(lambda x: mlc.max_pool(x, **a) * mlc.cast(mlc.max_pool_indices(x, **a), "float64"), [x])


# ============================================================================ avg_pool

AVG_POOL = [
    ((1, 2, 7, 6), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}, True),
    ((1, 2, 7, 6), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "count_include_pad": True}, True),
    ((1, 2, 8, 7), {"kernel_shape": [3, 2], "strides": [2, 2], "pads": [1, 0, 0, 1], "ceil_mode": True,
                    "count_include_pad": True}, True),
    ((1, 2, 8, 7), {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": True}, False),
    ((2, 3, 6, 6), {"kernel_shape": [2, 2], "strides": [2, 2]}, True),
    ((1, 2, 7, 8), {"kernel_shape": [2, 2], "dilations": [2, 1], "pads": [1, 1, 1, 0]}, False),
    ((1, 2, 7, 8), {"kernel_shape": [3, 2], "strides": [1, 2], "auto_pad": "SAME_UPPER"}, False),
    ((2, 2, 9), {"kernel_shape": [4], "strides": [3], "pads": [2, 1], "count_include_pad": True}, True),  # 1-D
    ((1, 2, 4, 5, 5), {"kernel_shape": [2, 2, 3], "strides": [1, 2, 2], "pads": [1, 0, 1, 0, 1, 1]}, False),  # 3-D
]


@pytest.mark.parametrize("xs, attrs, compiled", AVG_POOL, ids=[str(i) for i in range(len(AVG_POOL))])
def test_avg_pool(xs, attrs, compiled):
    check_grads(lambda x: mlc.avg_pool(x, **attrs), [rnd(*xs)], compiled=compiled)


def test_avg_pool_second_order():
    check_grads(lambda x: mlc.avg_pool(x * x, kernel_shape=[3, 2], strides=[2, 1], pads=[1, 0, 1, 1],
                                       ceil_mode=True), [rnd(1, 1, 5, 4)], order=2)


def loop_avg_pool_grad(g, image_shape, kernel_shape, strides, pads, dilations, count_include_pad):
    """Each window's g / count added at each of its taps inside the input, by loops."""
    D = len(image_shape)
    dx = np.zeros((*g.shape[:2], *image_shape))
    for o in itertools.product(*[range(k) for k in g.shape[2:]]):
        taps = [tuple(oo * s + kk * d - pb for oo, kk, s, d, pb in zip(o, k, strides, dilations, pads[:D]))
                for k in itertools.product(*[range(k) for k in kernel_shape])]
        inside = [p for p in taps if all(0 <= pp < n for pp, n in zip(p, image_shape))]
        padded = [p for p in taps if all(-pb <= pp < n + pe for pp, n, pb, pe in
                                         zip(p, image_shape, pads[:D], pads[D:]))]
        count = len(padded) if count_include_pad else len(inside)
        for p in inside:
            dx[(slice(None), slice(None), *p)] += g[(slice(None), slice(None), *o)] / count
    return dx


@pytest.mark.parametrize("xs, attrs, compiled", AVG_POOL, ids=[str(i) for i in range(len(AVG_POOL))])
def test_avg_pool_grad_op(xs, attrs, compiled):
    canon = mlc.ops.get("avg_pool").canonical_attrs([mlc.TensorType(xs, mlc.float64)], attrs)
    a = {k: canon[k] for k in ("kernel_shape", "strides", "pads", "dilations", "ceil_mode", "count_include_pad")}
    g = rnd(*mlc.avg_pool(np.zeros(xs), **a).shape)
    ref = mlc.avg_pool_grad(g, image_shape=xs[2:], **a)
    want = loop_avg_pool_grad(g, xs[2:], a["kernel_shape"], a["strides"], a["pads"], a["dilations"],
                              a["count_include_pad"])
    assert_matches(ref, want, TOL)
    if compiled:
        for dt in (np.float64, np.float32):
            gd = g.astype(dt)
            got = mlc.compile(lambda g: mlc.avg_pool_grad(g, image_shape=xs[2:], **a), gd)(gd)
            assert_matches(got, mlc.avg_pool_grad(gd, image_shape=xs[2:], **a), TOL)


# ============================================================================ global pools

@pytest.mark.parametrize("shape", [(2, 3, 4, 3), (1, 2, 5), (1, 2, 2, 3, 2)])
def test_global_avg_pool(shape):
    check_grads(mlc.global_avg_pool, [rnd(*shape)], compiled=len(shape) == 4)


@pytest.mark.parametrize("shape", [(2, 3, 4, 3), (1, 2, 5), (1, 2, 2, 3, 2)])
def test_global_max_pool(shape):
    check_grads(mlc.global_max_pool, [distinct(*shape)], compiled=len(shape) == 4)


def test_global_max_pool_ties_split_evenly():
    x = np.array([[[[1.0, 4.0], [4.0, 0.0]], [[2.0, 2.0], [2.0, 2.0]]]])     # [1, 2, 2, 2]
    g = mlc.grad(lambda x: mlc.sum(mlc.global_max_pool(x) * np.array([1.0, 2.0]).reshape(1, 2, 1, 1)))
    want = np.array([[[[0.0, 0.5], [0.5, 0.0]], [[0.5, 0.5], [0.5, 0.5]]]])
    np.testing.assert_array_equal(g(x), want)
    np.testing.assert_array_equal(mlc.ops.run_reference(mlc.trace(g, x), x)[0], want)


# ============================================================================ type rules of the new ops

def test_gradient_op_type_errors():
    x, g = np.zeros((1, 2, 6, 6)), np.zeros((1, 4, 3, 3))
    with pytest.raises(mlc.TraceError, match="conv_weight_grad: the cotangent"):
        mlc.trace(lambda x, g: mlc.conv_weight_grad(x, g, kernel_shape=[3, 3]), x, g)
    with pytest.raises(mlc.TraceError, match="max_pool_grad: the cotangent"):
        mlc.trace(lambda x, g: mlc.max_pool_grad(x, g, g, kernel_shape=[3, 3]), x, g)
    with pytest.raises(mlc.TraceError, match="avg_pool_grad: image_shape is required"):
        mlc.trace(lambda g: mlc.avg_pool_grad(g, kernel_shape=[2, 2]), g)
    with pytest.raises(mlc.TraceError, match="col2im"):
        mlc.trace(lambda c: mlc.col2im(c, image_shape=[6, 6], kernel_shape=[3, 3]), np.zeros((1, 18, 15)))
