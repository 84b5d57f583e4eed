"""One gradient check for every rule: mlc's gradient against central finite differences.

``check_grads(fn, args)`` differentiates the float64 scalar ``sum(fn(*args) * r)``
(r random, fixed) with ``mlc.grad`` and compares it with central differences of the
same scalar evaluated by the numpy reference interpreter: element by element for
small inputs, along random directions for large ones. ``order=2`` checks the
gradient of the gradient the same way. ``compiled=True`` also runs the gradient
graph through the compiler and compares it with the reference result.
"""
from __future__ import annotations

import numpy as np

import mlc
from mlc.ops import run_reference
from mlc.tree import flatten

EPS = 1e-6


def _scalarized(fn, args, seed):
    """fn's output(s) projected onto fixed random weights: a float64 scalar."""
    rng = np.random.default_rng(seed)
    weights = {}

    def f(*xs):
        ys = fn(*xs)
        total = 0.0
        for k, y in enumerate(flatten(ys)[0]):
            if y.dtype.kind != "f":
                continue
            if k not in weights:
                weights[k] = rng.standard_normal(y.shape)
            total = total + mlc.sum(y * weights[k].astype(y.dtype))
        return total
    return f


def _reference(f, args):
    g = mlc.trace(f, *args)
    return float(run_reference(g, *[a for a in args if isinstance(a, np.ndarray)])[0])


def numeric_grad(f, args, i, rng, directions=3):
    """Central differences of scalar f with respect to args[i]: the full gradient for
    small inputs, else (directions, projections) pairs."""
    x = args[i]

    def at(xi):
        a = list(args)
        a[i] = np.asarray(xi)
        return _reference(f, a)

    if x.size <= 24:
        g = np.zeros(x.shape)
        for j in range(x.size):
            d = np.zeros(x.size)
            d[j] = EPS
            d = d.reshape(x.shape)
            g.flat[j] = (at(x + d) - at(x - d)) / (2 * EPS)
        return g, None
    dirs = [rng.standard_normal(x.shape) for _ in range(directions)]
    return None, [(v, (at(x + EPS * v) - at(x - EPS * v)) / (2 * EPS)) for v in dirs]


def check_grads(fn, args, wrt=None, order=1, rtol=1e-5, atol=1e-6, compiled=False, seed=0):
    """Assert that mlc's gradient of ``sum(fn(*args) * r)`` matches finite differences
    for each float64 array argument in ``wrt`` (default: all of them)."""
    args = [a if type(a) in (int, float) else np.asarray(a) for a in args]
    wrt = [i for i, a in enumerate(args) if isinstance(a, np.ndarray) and a.dtype == np.float64] \
        if wrt is None else list(wrt)
    assert wrt, "nothing to differentiate"
    f = _scalarized(fn, args, seed)
    if order == 2:
        inner = mlc.grad(f, argnums=tuple(wrt))
        f = _scalarized(lambda *xs: inner(*xs), args, seed + 1)
    rng = np.random.default_rng(seed + 7)
    grad_fn = mlc.grad(f, argnums=tuple(wrt))
    graph = mlc.trace(grad_fn, *args)
    got = run_reference(graph, *[a for a in args if isinstance(a, np.ndarray)])
    if compiled:
        exe = mlc.compile(grad_fn, *args)
        out = exe(*[a for a in args if isinstance(a, np.ndarray)])
        out = out if isinstance(out, tuple) else (out,)
        for c, r in zip(out, got):
            np.testing.assert_allclose(c, r, rtol=1e-9, atol=1e-9, err_msg="compiled gradient != reference")
    for k, i in enumerate(wrt):
        full, projections = numeric_grad(f, args, i, rng)
        if full is not None:
            np.testing.assert_allclose(got[k], full, rtol=rtol, atol=atol,
                                       err_msg=f"gradient of argument {i} (order {order})")
        else:
            for v, expected in projections:
                np.testing.assert_allclose(np.sum(got[k] * v), expected, rtol=rtol, atol=atol * v.size ** 0.5,
                                           err_msg=f"directional derivative of argument {i} (order {order})")
    return got
