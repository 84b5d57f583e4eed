"""Tracing: what becomes an input or a constant, operators, and trace-time errors."""
import re

import numpy as np
import pytest

import mlc
from mlc.frontend.trace import TraceError


def f32(*shape):
    return np.random.default_rng(0).standard_normal(shape).astype(np.float32)


def test_arguments_are_inputs_and_captures_are_constants():
    w = f32(3, 4)

    def f(x):
        return x @ w + 2.0

    g = mlc.trace(f, f32(2, 3))
    assert [v.name for v in g.inputs] == ["x"]
    consts = [n for n in g.nodes if n.op == "constant"]
    assert len(consts) == 2
    assert np.array_equal(consts[0].attrs["value"], w)
    # a Python float meeting an f32 tensor stays f32 (numpy's weak scalars)
    assert consts[1].attrs["value"].dtype == np.float32 and consts[1].attrs["value"].shape == ()
    assert g.outputs[0].type == mlc.TensorType((2, 4), "float32")


def test_python_scalar_promotion_follows_numpy():
    xi = np.arange(6, dtype=np.int32).reshape(2, 3)
    g = mlc.trace(lambda x: x * 2, xi)
    assert str(g.outputs[0].type) == "i32[2,3]"
    g = mlc.trace(lambda x: x * 2.5, xi)
    assert str(g.outputs[0].type) == "f64[2,3]"
    g = mlc.trace(lambda x: x / 2, xi)
    assert str(g.outputs[0].type) == "f64[2,3]"


def test_operators_and_methods_print_expected_graph():
    def f(x, y):
        z = -(x + y) * x / y - x ** 2
        return z.T.reshape(6).sum(), (x < y), x.mean(axis=0, keepdims=True), x.shape, x.dtype

    x, y = f32(2, 3), f32(2, 3)
    captured = {}

    def g(x, y):
        s, c, m, shape, dtype = f(x, y)
        captured["shape"], captured["dtype"] = shape, dtype
        return s, c, m

    graph = mlc.trace(g, x, y)
    ops_used = [n.op for n in graph.nodes if n.op != "constant"]
    assert ops_used == ["add", "neg", "mul", "div", "pow", "sub", "transpose", "reshape", "sum", "less", "mean"]
    assert captured == {"shape": (2, 3), "dtype": np.float32}
    exe = mlc.compile(g, x, y)
    s, c, m = exe(x, y)
    ref = -(x + y) * x / y - x ** 2
    np.testing.assert_allclose(s, ref.T.reshape(6).sum(), rtol=1e-5)
    np.testing.assert_array_equal(c, x < y)
    np.testing.assert_allclose(m, x.mean(axis=0, keepdims=True), rtol=1e-6)


@pytest.mark.parametrize("key", [
    (1,), (-1,), (slice(1, 3),), (slice(None, None, -1),), (Ellipsis, 2), (None, 0),
    (slice(None), None, slice(1, None, 2)), (0, -2), (slice(-2, None), slice(None, None, 2)),
    # out-of-range bounds clamp as in numpy, negative steps included
    (slice(-5, None, -1),), (slice(-100, 100, -1),), (slice(10, -10, -1), slice(-9, None, -2)), (slice(3, 1),),
    (slice(None, None, -3), slice(100, None)),
])
def test_indexing_matches_numpy(key):
    x = f32(4, 5)
    exe = mlc.compile(lambda x: x[key], x)
    np.testing.assert_array_equal(exe(x), x[key])


def _assert_located(exc_info, op: str, *types: str):
    msg = str(exc_info.value)
    assert msg.startswith(op + ":"), msg
    for t in types:
        assert t in msg, msg
    m = re.search(r"\(at (.+):(\d+)\)$", msg)
    assert m, msg
    assert m.group(1).endswith("test_trace.py")
    return int(m.group(2)), msg


def test_shape_mismatch_names_op_types_and_user_line():
    def f(x, y):
        return x + y   # the line the error must point at

    with pytest.raises(TraceError) as e:
        mlc.trace(f, f32(2, 3), f32(4))
    line, msg = _assert_located(e, "add", "f32[2,3]", "f32[4]")
    assert "cannot be broadcast" in msg
    assert line == f.__code__.co_firstlineno + 1


def test_matmul_mismatch_error():
    with pytest.raises(TraceError) as e:
        mlc.trace(lambda a, b: a @ b, f32(2, 3), f32(4, 5))
    _, msg = _assert_located(e, "matmul", "f32[2,3]", "f32[4,5]")
    assert "3 != 4" in msg


def test_dtype_error_is_located():
    with pytest.raises(TraceError) as e:
        mlc.trace(lambda c, a: mlc.where(c, a, a), f32(3), f32(3))
    _assert_located(e, "where", "f32[3]")


def test_bad_axis_and_reshape_errors():
    with pytest.raises(TraceError, match=r"sum: .*axis 2 is out of range for rank 2"):
        mlc.trace(lambda x: x.sum(axis=2), f32(2, 3))
    with pytest.raises(TraceError, match=r"reshape: cannot reshape f32\[2,3\] \(6 elements\) to \(4,\)"):
        mlc.trace(lambda x: x.reshape(4), f32(2, 3))


def test_data_dependent_control_flow_is_refused():
    def f(x):
        if x.sum() > 0:
            return x
        return -x

    with pytest.raises(TraceError, match="not known while tracing.*mlc.where"):
        mlc.trace(f, f32(3))


def test_index_out_of_bounds():
    with pytest.raises(TraceError, match="index 5 is out of bounds for axis 0 with size 4"):
        mlc.trace(lambda x: x[5], f32(4))


def test_numpy_ufuncs_on_tracers_become_ops():
    g = mlc.trace(lambda x: np.exp(x) + np.maximum(x, 0), f32(3))
    assert [n.op for n in g.nodes if n.op != "constant"] == ["exp", "maximum", "add"]


def test_unsupported_dtype_is_clear():
    with pytest.raises(TraceError, match="complex64 is not supported"):
        mlc.trace(lambda x: x, np.zeros(3, np.complex64))


def test_op_functions_evaluate_eagerly_on_numpy():
    x = f32(3, 4)
    np.testing.assert_allclose(mlc.softmax(x, axis=-1), np.exp(x) / np.exp(x).sum(-1, keepdims=True), rtol=1e-6)
    assert mlc.sum(x, axis=1).shape == (3,)


def test_every_op_has_a_function_with_doc():
    for name in mlc.ops.REGISTRY:
        if name == "constant":
            continue
        fn = getattr(mlc, name)
        if mlc.ops.is_control(name):   # mlc.scan & co take Python functions: documented by hand
            assert fn.__module__ == "mlc.frontend.control" and fn.__doc__
            continue
        # help() shows the signature (test_ops: test_op_functions_have_real_signatures), then the op's doc
        assert callable(fn) and fn.__doc__ and fn.__doc__.startswith(mlc.ops.get(name).doc)


def test_empty_reductions_without_identity_are_refused():
    with pytest.raises(TraceError, match=r"max: cannot reduce an empty axis of f32\[2,0\]"):
        mlc.trace(lambda x: x.max(axis=1), np.zeros((2, 0), np.float32))
    # softmax over an empty axis normalizes nothing: an empty result, as in PyTorch
    for fn in (mlc.softmax, mlc.log_softmax):
        for shape, axis in (((3, 0), 1), ((0, 3), 0), ((0, 3), 1)):
            x = np.zeros(shape, np.float32)
            got = mlc.compile(lambda x: fn(x, axis=axis), x)(x)
            assert got.shape == shape and got.dtype == np.float32
    # sums have an identity, as in numpy
    x = np.zeros((2, 0), np.float32)
    np.testing.assert_array_equal(mlc.compile(lambda x: x.sum(axis=1), x)(x), np.zeros(2, np.float32))


def test_returning_nothing_is_an_error():
    import pytest
    with pytest.raises(mlc.TraceError, match="returned None"):
        mlc.trace(lambda x: None, np.ones(2))
    with pytest.raises(mlc.TraceError, match="returned no tensors"):
        mlc.trace(lambda x: {}, np.ones(2))


# ----------------------------------------------------------------------------- mistakes name the fix

def _trace_error(fn, *args) -> str:
    with pytest.raises(mlc.TraceError) as e:
        mlc.trace(fn, *args)
    msg = str(e.value)
    assert re.search(r"\(at .+test_trace\.py:\d+\)$", msg), msg   # the user's line
    return msg


def test_boolean_mask_indexing_names_where():
    x = f32(4, 5)
    msg = _trace_error(lambda x: x[x > 0], x)
    assert "boolean-mask" in msg and "mlc.where" in msg


def test_array_indexing_names_gather():
    x = f32(4, 5)
    assert "mlc.gather" in _trace_error(lambda x: x[np.array([0, 2])], x)
    assert "mlc.gather" in _trace_error(lambda x: x[[0, 2]], x)


@pytest.mark.parametrize("convert", [float, int, complex, np.asarray, lambda t: range(t)])
def test_python_values_of_traced_tensors_are_refused(convert):
    msg = _trace_error(lambda x: convert(x.sum()), f32(3))
    assert "not known while tracing" in msg, msg


def test_python_list_where_a_tensor_is_expected():
    x = f32(4)
    msg = _trace_error(lambda x: x + [1.0, 2.0, 3.0, 4.0], x)
    assert msg.startswith("add: got a Python list") and "np.array" in msg
    msg = _trace_error(lambda x: mlc.concatenate([x, [1.0]]), x)
    assert msg.startswith("concatenate: got a Python list")
    # outside a trace the ops are numpy functions, which take lists
    np.testing.assert_array_equal(mlc.add([1, 2], [3, 4]), [4, 6])


def test_item_assignment_is_refused():
    def f(x):
        x[0] = 1.0
        return x
    assert "immutable" in _trace_error(f, f32(3))


def test_numpy_reductions_on_traced_tensors():
    x = f32(3, 4)
    exe = mlc.compile(lambda x: (np.sum(x, axis=0), np.mean(x), np.max(x, axis=1), x.sum(dtype=np.float64)), x)
    s, m, mx, s64 = exe(x)
    np.testing.assert_allclose(s, x.sum(axis=0), rtol=1e-6)
    np.testing.assert_allclose(m, x.mean(), rtol=1e-6)
    np.testing.assert_array_equal(mx, x.max(axis=1))
    assert s64.dtype == np.float64
    assert "out=" in _trace_error(lambda x: x.sum(out=x), x)
