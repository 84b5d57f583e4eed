"""compile(..., in_place=...): results written into the argument arrays."""
import numpy as np
import pytest

import mlc


def test_sgd_step_updates_arguments_in_place():
    r = np.random.default_rng(0)
    p = {"w1": r.standard_normal((8, 16)).astype(np.float32), "w2": r.standard_normal((16, 4)).astype(np.float32)}
    x = r.standard_normal((32, 8)).astype(np.float32)

    def loss(p, x):
        return mlc.mean((mlc.tanh(x @ p["w1"]) @ p["w2"]) ** 2)

    def step(p, x):
        value, g = mlc.value_and_grad(loss)(p, x)
        return value, {k: p[k] - 0.1 * g[k] for k in p}

    ref = {k: v.astype(np.float64) for k, v in p.items()}
    buffers = {k: v.ctypes.data for k, v in p.items()}
    exe = mlc.compile(step, p, x, in_place=(0,))
    for _ in range(3):
        value = exe(p, x)
        h = np.tanh(x @ ref["w1"])
        y = h @ ref["w2"]
        dy = 2 * y / y.size
        gw2, gw1 = h.T @ dy, x.T @ (dy @ ref["w2"].T * (1 - h * h))
        np.testing.assert_allclose(value, np.mean(y ** 2), rtol=1e-5)
        ref["w1"] -= 0.1 * gw1
        ref["w2"] -= 0.1 * gw2
        for k in p:
            np.testing.assert_allclose(p[k], ref[k], rtol=1e-4, atol=1e-5)
    assert {k: v.ctypes.data for k, v in p.items()} == buffers


def test_swap_needs_a_copy_and_stays_correct():
    # each new value reads the other argument: one of the writes must wait for a copy
    a, b = np.arange(4.0), np.arange(4.0) + 10
    exe = mlc.compile(lambda a, b: (mlc.sum(a), b * 1.0, a * 1.0), a, b, in_place=(0, 1))
    total = exe(a, b)
    assert total == 6.0
    np.testing.assert_array_equal(a, np.arange(4.0) + 10)
    np.testing.assert_array_equal(b, np.arange(4.0))


def test_unchanged_argument_and_later_reader():
    # the new x is read by the result after it is written; y is returned unchanged
    x, y = np.ones(3), np.full(3, 2.0)
    exe = mlc.compile(lambda x, y: (mlc.sum(x * y), x + y, y), x, y, in_place=(0, 1))
    assert exe(x, y) == 6.0
    np.testing.assert_array_equal(x, [3.0, 3.0, 3.0])
    np.testing.assert_array_equal(y, [2.0, 2.0, 2.0])


def test_in_place_argument_errors():
    x = np.ones(3)
    exe = mlc.compile(lambda x: (mlc.sum(x), x * 2.0), x, in_place=(0,))
    with pytest.raises(TypeError, match="updated in place"):
        exe(np.ones(6)[::2])
    with pytest.raises(TypeError, match="expects f64"):
        exe(np.ones(3, np.float32))
    ro = np.ones(3)
    ro.flags.writeable = False
    with pytest.raises(TypeError, match="updated in place"):
        exe(ro)
    with pytest.raises(TypeError, match="must return a tuple"):
        mlc.compile(lambda x: x * 2.0, x, in_place=(0,))
    with pytest.raises(TypeError, match="has type"):
        mlc.compile(lambda x: (mlc.sum(x), mlc.sum(x)), x, in_place=(0,))


def test_jit_in_place():
    @mlc.jit(in_place=(0,))
    def bump(counter, x):
        return mlc.sum(x), counter + 1.0

    c = np.zeros(())
    for _ in range(3):
        bump(c, np.ones(2))
    assert c == 3.0


def test_in_place_argument_passed_twice_is_refused():
    x = np.ones(3)
    exe = mlc.compile(lambda x, y: (mlc.sum(y), x + y), x, np.ones(3), in_place=(0,))
    with pytest.raises(TypeError, match="also passed as another argument"):
        exe(x, x)
    y = np.full(3, 2.0)
    assert exe(x, y) == 6.0
    np.testing.assert_array_equal(x, [3.0, 3.0, 3.0])


def test_a_blocked_matrix_product_never_overwrites_what_it_still_reads():
    """A product blocked along a long reduction keeps partial sums in its output before its
    epilogue reads the input being updated (a weight's SGD step fused into its gradient's
    product, a residual added to a product). Neither may share the input's memory then."""
    r = np.random.default_rng(1)
    x = r.standard_normal((1024, 64)).astype(np.float32)   # 1024 rows: the weight gradient's reduction
    y = r.standard_normal((1024, 32)).astype(np.float32)
    w0 = (r.standard_normal((64, 32)) * 0.1).astype(np.float32)

    def step(w, x, y):
        value, g = mlc.value_and_grad(lambda w: mlc.mean((x @ w - y) ** 2))(w)
        return value, w - 0.1 * g
    w = w0.copy()
    mlc.compile(step, w, x, y, in_place=(0,))(w, x, y)
    want = w0 - 0.1 * (2 * x.T @ (x @ w0 - y) / y.size)
    np.testing.assert_allclose(w, want, rtol=1e-5, atol=1e-6)

    # a residual added to a product with a 1024-long reduction, the residual dying there
    # (BERT's feed-forward block: r + relu(r @ w1) @ w2, then a normalization)
    x, w1, w2 = (r.standard_normal(s).astype(np.float32) for s in ((2, 64, 256), (256, 1024), (1024, 256)))
    w1, w2 = w1 * 0.05, w2 * 0.05

    def ffn(x, w1, w2):
        res = mlc.softmax(x, axis=-1)
        return mlc.softmax(res + mlc.relu(res @ w1) @ w2, axis=-1)

    def softmax(z):
        e = np.exp(z - z.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)
    res = softmax(x.astype(np.float64))
    want = softmax(res + np.maximum(res @ w1, 0) @ w2)
    np.testing.assert_allclose(mlc.compile(ffn, x, w1, w2)(x, w1, w2), want, rtol=1e-4, atol=1e-7)
