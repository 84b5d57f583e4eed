"""Graph-level autodiff: the transforms, and every elementwise, reduction, matmul and
shape rule against finite differences (float64). Conv, pooling, normalization and
indexing rules are in test_grad_conv.py and test_grad_nn.py."""
import numpy as np
import pytest

import mlc
from mlc.frontend.trace import TraceError
from mlc.ir.graph import parse_graph
from mlc.ops.autodiff import gradient_graph

from gradcheck import check_grads

R = np.random.default_rng(0)


def rnd(*shape, lo=-1.0, hi=1.0):
    return R.uniform(lo, hi, shape)


def away_from_zero(*shape):
    return rnd(*shape, lo=0.2, hi=1.5) * R.choice([-1.0, 1.0], shape)


# ----------------------------------------------------------------------------- elementwise

UNARY = {
    "neg": rnd, "abs": away_from_zero, "exp": rnd, "log": lambda *s: rnd(*s, lo=0.2, hi=2),
    "sqrt": lambda *s: rnd(*s, lo=0.2, hi=2), "rsqrt": lambda *s: rnd(*s, lo=0.2, hi=2), "tanh": rnd,
    "sigmoid": rnd, "relu": away_from_zero, "sin": rnd, "cos": rnd, "erf": rnd,
    "floor": lambda *s: np.floor(rnd(*s) * 5) + 0.5,   # halfway between the jumps
}


@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary(name):
    x = UNARY[name](3, 4)
    check_grads(getattr(mlc, name), [x])


@pytest.mark.parametrize("name", ["exp", "log", "tanh", "sigmoid", "sin", "sqrt", "erf"])
def test_unary_second_order(name):
    check_grads(getattr(mlc, name), [rnd(5, lo=0.3, hi=1.5)], order=2)


@pytest.mark.parametrize("name", ["add", "sub", "mul", "div", "pow", "maximum", "minimum"])
@pytest.mark.parametrize("shapes", [((3, 4), (3, 4)), ((3, 4), (4,)), ((2, 1, 4), (3, 1)), ((), (2, 3))])
def test_binary_broadcasting(name, shapes):
    a, b = rnd(*shapes[0], lo=0.3, hi=1.5), rnd(*shapes[1], lo=0.3, hi=1.5)
    if name in ("maximum", "minimum"):
        b = b + 0.05 * np.sign(b - a.mean())   # no ties within finite-difference reach
    check_grads(getattr(mlc, name), [a, b])


@pytest.mark.parametrize("name", ["mul", "div", "pow", "add"])
def test_binary_second_order(name):
    check_grads(getattr(mlc, name), [rnd(4, lo=0.5, hi=1.5), rnd(3, 1, lo=0.5, hi=1.5)], order=2)


def test_maximum_ties_split_evenly():
    x = np.array([1.0, 2.0, 3.0])
    y = np.array([1.0, 5.0, 0.0])
    gx, gy = mlc.grad(lambda a, b: mlc.sum(mlc.maximum(a, b)), argnums=(0, 1))(x, y)
    np.testing.assert_array_equal(gx, [0.5, 0.0, 1.0])
    np.testing.assert_array_equal(gy, [0.5, 1.0, 0.0])


def test_where_and_cast():
    c = rnd(3, 4) > 0
    check_grads(lambda a, b: mlc.where(c, a, b), [rnd(3, 4), rnd(4)])
    g = mlc.grad(lambda a: mlc.sum(mlc.cast(a, "float32") * 2.0))(rnd(3))
    assert g.dtype == np.float64
    np.testing.assert_array_equal(g, [2.0, 2.0, 2.0])


def test_mixed_precision_gradient_keeps_dtype():
    x32 = rnd(3, 4).astype(np.float32)
    w = rnd(4, 2)
    gx, gw = mlc.grad(lambda x, w: mlc.sum(x @ w), argnums=(0, 1))(x32, w)
    assert gx.dtype == np.float32 and gw.dtype == np.float64
    np.testing.assert_allclose(gx, np.broadcast_to(w.sum(1), (3, 4)), rtol=1e-6)


# ----------------------------------------------------------------------------- reductions

@pytest.mark.parametrize("name", ["sum", "mean", "max", "min", "prod"])
@pytest.mark.parametrize("axis,keepdims", [(None, False), (1, False), ((0, 2), True), (-1, True)])
def test_reductions(name, axis, keepdims):
    x = R.permutation(24).reshape(2, 3, 4) / 24 + 0.5   # distinct values: no ties in max/min
    check_grads(lambda a: getattr(mlc, name)(a, axis=axis, keepdims=keepdims), [x])


def test_prod_with_zeros():
    x = np.array([[2.0, 0.0, 3.0], [0.0, 0.0, 4.0], [1.0, 2.0, 3.0]])
    g = mlc.grad(lambda a: mlc.sum(mlc.prod(a, axis=1)))(x)
    np.testing.assert_array_equal(g, [[0.0, 6.0, 0.0], [0.0, 0.0, 0.0], [6.0, 3.0, 2.0]])


def test_max_ties_split_evenly():
    x = np.array([[1.0, 3.0, 3.0, 2.0]])
    np.testing.assert_array_equal(mlc.grad(lambda a: mlc.sum(mlc.max(a, axis=1)))(x), [[0.0, 0.5, 0.5, 0.0]])


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@pytest.mark.parametrize("axis", [-1, 0])
def test_softmax(name, axis):
    check_grads(lambda a: getattr(mlc, name)(a, axis=axis), [rnd(3, 5)])


def test_softmax_second_order():
    check_grads(lambda a: mlc.softmax(a), [rnd(2, 4)], order=2)


# ----------------------------------------------------------------------------- matmul

@pytest.mark.parametrize("sa,sb", [((3, 4), (4, 5)), ((2, 3, 4), (4, 5)), ((4,), (4, 5)), ((3, 4), (4,)),
                                   ((2, 1, 3, 4), (5, 4, 2)), ((4,), (4,))])
def test_matmul(sa, sb):
    check_grads(lambda a, b: a @ b, [rnd(*sa), rnd(*sb)])


def test_matmul_second_order():
    check_grads(lambda a, b: mlc.tanh(a @ b) @ b.T, [rnd(3, 4), rnd(4, 4)], order=2)


# ----------------------------------------------------------------------------- shape ops

@pytest.mark.parametrize("fn", [
    lambda x: x.reshape(6, 4), lambda x: x.transpose(2, 0, 1), lambda x: mlc.broadcast_to(x[:, :1], (3, 2, 3, 4)),
    lambda x: mlc.expand_dims(x, 1), lambda x: mlc.squeeze(x[:1], 0), lambda x: x[1, ::2, 1:],
    lambda x: x[:, ::-1, -1:0:-3], lambda x: mlc.concatenate([x, x * 2.0, x[:, :1]], axis=1),
], ids=["reshape", "transpose", "broadcast_to", "expand_dims", "squeeze", "slice", "slice_negative_steps",
        "concatenate"])
def test_shape_ops(fn):
    check_grads(fn, [rnd(2, 3, 4)])


# ----------------------------------------------------------------------------- transforms

def test_print_trace_of_grad_shows_backward_graph():
    text = str(mlc.trace(mlc.grad(lambda x: mlc.sum(mlc.tanh(x))), rnd(3)))
    assert "tanh" in text and "sub" in text and "mul" in text
    parse_graph(text)   # a graph like any other


def test_compiled_gradient_matches_reference():
    x, w = rnd(8, 16).astype(np.float32), rnd(16, 4).astype(np.float32)

    @mlc.jit
    def step(x, w):
        return mlc.value_and_grad(lambda w: mlc.mean(mlc.tanh(x @ w) ** 2))(w)

    value, g = step(x, w)
    t = np.tanh(x @ w)
    np.testing.assert_allclose(value, np.mean(t ** 2), rtol=1e-5)
    np.testing.assert_allclose(g, x.T @ (2 * t * (1 - t * t) / t.size), rtol=1e-4, atol=1e-6)


def test_pytree_arguments_and_aux():
    params = {"w": rnd(4, 3), "b": [rnd(3)]}
    x = rnd(5, 4)

    def loss(p, x):
        y = x @ p["w"] + p["b"][0]
        return mlc.sum(y * y), {"y": y}

    (value, aux), g = mlc.value_and_grad(loss, has_aux=True)(params, x)
    y = x @ params["w"] + params["b"][0]
    assert set(g) == {"w", "b"} and isinstance(g["b"], list)
    np.testing.assert_allclose(value, np.sum(y * y))
    np.testing.assert_allclose(aux["y"], y)
    np.testing.assert_allclose(g["w"], x.T @ (2 * y))
    np.testing.assert_allclose(g["b"][0], (2 * y).sum(0))
    gg, aux2 = mlc.grad(loss, has_aux=True)(params, x)
    np.testing.assert_allclose(gg["w"], g["w"])


def test_vjp():
    x = rnd(3, 4)
    out, f_vjp = mlc.vjp(lambda a: mlc.sin(a) * 2.0, x)
    np.testing.assert_allclose(out, np.sin(x) * 2)
    ct = rnd(3, 4)
    (gx,) = f_vjp(ct)
    np.testing.assert_allclose(gx, ct * 2 * np.cos(x))


def test_vjp_integer_primal_gets_none():
    idx = np.array([2, 0], np.int64)
    out, f_vjp = mlc.vjp(lambda a, i: a * 3.0, rnd(2), idx)
    g, gi = f_vjp(np.ones(2))
    assert gi is None
    np.testing.assert_allclose(g, [3.0, 3.0])


def test_grad_of_grad_closure_over_outer_tracer():
    # d/dx [ d/dy (x*y^2) at y=x ] = d/dx 2x^2 = 4x
    f = mlc.grad(lambda x: mlc.grad(lambda y: mlc.sum(x * y * y))(x).sum())
    x = rnd(3)
    np.testing.assert_allclose(f(x), 4 * x)


def test_grad_refuses_integer_argument():
    with pytest.raises(TraceError, match="integer and boolean tensors have no gradient"):
        mlc.grad(lambda x, i: mlc.sum(x) + mlc.sum(i), argnums=(0, 1))(rnd(3), np.arange(3))
    g = mlc.grad(lambda x, i: mlc.sum(x * i))(rnd(3), np.arange(3.0).astype(np.int64))
    np.testing.assert_array_equal(g, [0.0, 1.0, 2.0])


def test_grad_needs_scalar_output():
    with pytest.raises(TraceError, match="must return a float scalar"):
        mlc.grad(lambda x: x * 2.0)(rnd(3))


def test_gradient_of_unused_argument_is_zero():
    g = mlc.grad(lambda x, y: mlc.sum(x), argnums=1)(rnd(3), rnd(2, 2))
    np.testing.assert_array_equal(g, np.zeros((2, 2)))


def test_gradient_graph_pass():
    g = mlc.trace(lambda x, w: mlc.tanh(x @ w), rnd(2, 3), rnd(3, 4))
    gg = gradient_graph(g)
    assert [v.name for v in gg.inputs] == ["x", "w", "ct0"] and len(gg.outputs) == 3
    x, w, ct = rnd(2, 3), rnd(3, 4), rnd(2, 4)
    from mlc.ops import run_reference
    y, gx, gw = run_reference(gg, x, w, ct)
    d = ct * (1 - np.tanh(x @ w) ** 2)
    np.testing.assert_allclose(gx, d @ w.T)
    np.testing.assert_allclose(gw, x.T @ d)


def test_mlp_compiled_against_finite_differences():
    def mlp(x, w1, b1, w2):
        return mlc.log_softmax(mlc.relu(x @ w1 + b1) @ w2)
    check_grads(mlp, [rnd(4, 6), rnd(6, 8), rnd(8), rnd(8, 3)], wrt=[1, 2, 3], compiled=True)
