"""Tracing, jit and autodiff from several threads at once: each thread has its own
trace stack, so concurrent traces never mix (and the results match numpy)."""
import numpy as np

import mlc
from concurrency import run_in_threads


def _long(x, k):
    # a few hundred ops, so that traces in different threads overlap in time
    for i in range(100):
        x = mlc.tanh(x * (1.0 + k * 1e-3) + 0.01 * i) - 0.5 * x
    return x.sum()


def _np_long(x, k):
    for i in range(100):
        x = np.tanh(x * (1.0 + k * 1e-3) + 0.01 * i) - 0.5 * x
    return x.sum()


def test_eight_threads_trace_at_once():
    x = np.linspace(-1, 1, 16)
    graphs = run_in_threads(lambda k: mlc.trace(lambda x: _long(x, k), x))
    for k, g in enumerate(graphs):
        assert len(g.nodes) > 300
        np.testing.assert_allclose(mlc.ops.run_reference(g, x)[0], _np_long(x, k), rtol=1e-12)


def test_first_calls_of_one_jit_function_from_eight_threads():
    f = mlc.jit(lambda x, y: _long(x, 1) * y)
    xs = [np.linspace(-1, 1, 16) * (k + 1) for k in range(8)]
    got = run_in_threads(lambda k: f(xs[k], np.float64(k)))
    for k in range(8):
        np.testing.assert_allclose(got[k], _np_long(xs[k], 1) * k, rtol=1e-12)


def test_eight_threads_trace_jit_and_differentiate_at_once():
    x = np.linspace(-1, 1, 8)

    def work(k):
        if k % 3 == 0:
            return mlc.trace(lambda x: _long(x, k), x)
        if k % 3 == 1:
            return mlc.jit(lambda x: _long(x, k))(x)
        return mlc.grad(lambda x: _long(x, k))(x)

    got = run_in_threads(work)
    h = 1e-6
    for k, r in enumerate(got):
        if k % 3 == 0:
            np.testing.assert_allclose(mlc.ops.run_reference(r, x)[0], _np_long(x, k), rtol=1e-12)
        elif k % 3 == 1:
            np.testing.assert_allclose(r, _np_long(x, k), rtol=1e-12)
        else:
            fd = [(_np_long(x + h * e, k) - _np_long(x - h * e, k)) / (2 * h) for e in np.eye(len(x))]
            np.testing.assert_allclose(r, fd, rtol=1e-5, atol=1e-8)
