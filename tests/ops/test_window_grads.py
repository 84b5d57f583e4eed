"""The fast forms of the window ops' gradients (mlc/ops/pool.py, conv.py): max_pool_grad
over disjoint windows as one elementwise stage, and conv's input gradient of a stride-1
convolution as a convolution of the padded cotangent with the flipped weight. Each is
checked against numpy loops (ties, NaN, padding, uncovered rows), the numpy reference,
finite differences (float64), and for the form it lowers to.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest

import mlc
from gradcheck import check_grads
from mlc.ir.tensor import Placeholder
from mlc.ops import conv as conv_ops
from mlc.ops import pool as pool_ops
from numerics import assert_matches

R = np.random.default_rng(7)
TOL = {np.dtype(np.float32): (2e-5, 2e-5), np.dtype(np.float64): (1e-12, 1e-12)}


def loop_max_pool_grad(x, g, kernel_shape, strides, pads):
    """Each window's g added at its first maximum in scan order (a NaN is the maximum),
    padding never winning, by loops."""
    D = x.ndim - 2
    dx = np.zeros(x.shape)
    for n, c in itertools.product(*[range(k) for k in x.shape[:2]]):
        for o in itertools.product(*[range(k) for k in g.shape[2:]]):
            best = None
            for k in itertools.product(*[range(k) for k in kernel_shape]):
                p = tuple(oo * s + kk - pb for oo, kk, s, pb in zip(o, k, strides, pads[:D]))
                if not all(0 <= pp < nn for pp, nn in zip(p, x.shape[2:])):
                    continue
                v = x[(n, c, *p)]
                if best is None or (not np.isnan(x[(n, c, *best)]) and (np.isnan(v) or v > x[(n, c, *best)])):
                    best = p
            if best is not None:
                dx[(n, c, *best)] += g[(n, c, *o)]
    return dx


# disjoint windows: undilated, kernel <= stride
DISJOINT = [
    ((2, 3, 6, 6), {"kernel_shape": [2, 2], "strides": [2, 2]}),
    ((1, 2, 7, 5), {"kernel_shape": [2, 2], "strides": [2, 2]}),                                   # rows left over
    ((1, 2, 7, 5), {"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": True}),                # ... or a short last window
    ((1, 2, 7, 6), {"kernel_shape": [2, 3], "strides": [2, 3], "pads": [1, 1, 0, 2]}),             # padding
    ((1, 2, 8, 7), {"kernel_shape": [2, 2], "strides": [3, 2], "pads": [0, 1, 1, 0]}),             # gaps (k < s)
    ((2, 2, 9), {"kernel_shape": [3], "strides": [3], "pads": [1, 2]}),                            # 1-D
    ((1, 2, 4, 6, 4), {"kernel_shape": [2, 3, 2], "strides": [2, 3, 2]}),                          # 3-D
]


def _attrs(xs, attrs):
    canon = mlc.ops.get("max_pool").canonical_attrs([mlc.TensorType(xs, mlc.float64)], attrs)
    return {k: canon[k] for k in ("kernel_shape", "strides", "pads", "dilations", "ceil_mode")}


@pytest.mark.parametrize("xs, attrs", DISJOINT, ids=[str(i) for i in range(len(DISJOINT))])
def test_max_pool_grad_disjoint_windows(xs, attrs):
    a = _attrs(xs, attrs)
    assert pool_ops._disjoint_windows(a["kernel_shape"], a["strides"], a["dilations"])
    x = np.round(R.standard_normal(xs) * 2) / 2          # many ties
    x.flat[R.choice(x.size, 3, replace=False)] = np.nan   # a NaN is its window's maximum
    y = mlc.max_pool(x, **a)
    g = R.standard_normal(y.shape)
    want = loop_max_pool_grad(x, g, a["kernel_shape"], a["strides"], a["pads"])
    assert_matches(mlc.max_pool_grad(x, y, g, **a), want, TOL)   # the numpy reference
    for dt in (np.float64, np.float32):
        args = [v.astype(dt) for v in (x, y, g)]
        got = mlc.compile(lambda x, y, g: mlc.max_pool_grad(x, y, g, **a), *args)(*args)
        assert_matches(got, want.astype(dt), TOL)


def test_max_pool_grad_disjoint_is_one_elementwise_stage():
    """No window index stage (int64) and no reduction: one stage over the input."""
    def lower(y_shape, **a):
        ins = [Placeholder("x", (2, 3, 8, 8), mlc.float32), Placeholder("y", y_shape, mlc.float32),
               Placeholder("g", y_shape, mlc.float32)]
        return pool_ops._max_pool_grad_lower(ins, [Placeholder("dx", (2, 3, 8, 8), mlc.float32)], pads=(0, 0, 0, 0),
                                             dilations=(1, 1), ceil_mode=False, **a)
    stages = lower((2, 3, 4, 4), kernel_shape=(2, 2), strides=(2, 2))
    assert len(stages) == 1 and not stages[0].is_reduction
    # overlapping windows keep the two stages (first tap per window, then the gather)
    assert len(lower((2, 3, 3, 3), kernel_shape=(3, 3), strides=(2, 2))) == 2


@pytest.mark.parametrize("xs, attrs", DISJOINT[:4], ids=[str(i) for i in range(4)])
def test_max_pool_gradient_disjoint_finite_differences(xs, attrs):
    n = int(np.prod(xs))
    x = (R.permutation(n).reshape(xs) - n / 2) * 0.1      # no near-ties
    check_grads(lambda x: mlc.max_pool(x, **attrs), [x], compiled=True)


# ============================================================================ conv: stride-1 input gradient

STRIDE1 = [
    # (x shape, w shape, attrs)
    ((2, 8, 7, 6), (8, 8, 3, 3), {"pads": [1, 1, 1, 1]}),
    ((2, 3, 7, 6), (4, 3, 3, 2), {"pads": [0, 1, 2, 0], "dilations": [2, 1]}),
    ((1, 4, 6, 5), (6, 2, 3, 3), {"group": 2, "pads": [1, 0, 1, 2]}),
    ((1, 4, 6, 6), (8, 1, 3, 3), {"group": 4, "pads": [1, 1, 1, 1]}),                 # depthwise x2
    ((2, 3, 9), (4, 3, 3), {"dilations": [2], "pads": [2, 1]}),                        # 1-D
    ((1, 2, 4, 4, 3), (2, 2, 2, 3, 2), {"pads": [1, 0, 0, 0, 1, 1]}),                  # 3-D
]


def _ops_of(fn, *args):
    return {n.op for n in mlc.trace(fn, *args).nodes}


@pytest.mark.parametrize("xs, ws, attrs", STRIDE1, ids=[str(i) for i in range(len(STRIDE1))])
def test_conv_stride1_input_gradient_is_a_flipped_conv(xs, ws, attrs):
    x, w = R.standard_normal(xs), R.standard_normal(ws)
    dx = mlc.grad(lambda x: mlc.sum(mlc.conv(x, w, **attrs)))
    ops = _ops_of(dx, x)
    assert "conv" in ops and not ops & {"col2im", "conv_transpose", "matmul"}, ops
    check_grads(lambda x, w: mlc.conv(x, w, **attrs), [x, w], compiled=True)


def test_conv_stride1_second_order():
    check_grads(lambda x, w: mlc.conv(x, w, pads=[1, 0, 0, 1], group=2), [R.standard_normal((1, 4, 5, 4)),
                                                                           R.standard_normal((4, 2, 3, 2))], order=2)


def test_conv_input_gradient_other_forms():
    """A stride, or a pad wider than the window, keeps col2im(W^T @ g) / conv_transpose."""
    assert conv_ops._flipped_pads((3, 3), (1, 1), (1, 1), (1, 1, 1, 1)) == (1, 1, 1, 1)
    assert conv_ops._flipped_pads((3, 3), (1, 1), (2, 1), (0, 1, 3, 0)) == (4, 1, 1, 2)
    assert conv_ops._flipped_pads((3, 3), (2, 1), (1, 1), (1, 1, 1, 1)) is None
    assert conv_ops._flipped_pads((3, 3), (1, 1), (1, 1), (3, 0, 0, 0)) is None
    x, w = R.standard_normal((2, 8, 7, 6)), R.standard_normal((8, 8, 3, 3))
    assert "col2im" in _ops_of(mlc.grad(lambda x: mlc.sum(mlc.conv(x, w, strides=[2, 2]))), x)
    x, w = R.standard_normal((1, 2, 5, 5)), R.standard_normal((2, 2, 3, 3))
    attrs = {"pads": [3, 0, 1, 1]}
    assert "conv_transpose" in _ops_of(mlc.grad(lambda x: mlc.sum(mlc.conv(x, w, **attrs))), x)
    check_grads(lambda x, w: mlc.conv(x, w, **attrs), [x, w], compiled=True)
