"""Graph IR: printer/parser round trip, verifier, parser errors, TensorType and dtypes."""
import dataclasses
import re

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import mlc
from mlc import ops
from mlc.ir.graph import (Graph, GraphBuilder, Node, ParseError, Value, VerificationError, parse_graph,
                          print_graph, verify as verify_structure)
from mlc.ir.types import ALL_DTYPES, TensorType

F32 = np.float32
DTYPE_NAMES = [d.name for d in ALL_DTYPES]


def constants(graph):
    return [n.attrs["value"] for n in graph.nodes if n.op == "constant"]


def check_round_trip(graph, *inputs):
    """print -> parse -> print is the identity; the parsed graph verifies, keeps every
    constant bit for bit and computes bit-identical reference results."""
    ops.verify(graph)
    text = print_graph(graph)
    parsed = parse_graph(text)
    assert print_graph(parsed) == text
    ops.verify(parsed)
    assert [v.name for v in parsed.inputs] == [v.name for v in graph.inputs]
    assert [v.type for v in parsed.inputs] == [v.type for v in graph.inputs]
    assert [n.op for n in parsed.nodes] == [n.op for n in graph.nodes]
    c0, c1 = constants(graph), constants(parsed)
    assert len(c0) == len(c1)
    for a, b in zip(c0, c1):
        assert isinstance(b, np.ndarray)
        assert a.dtype == b.dtype and a.shape == b.shape
        assert np.ascontiguousarray(a).tobytes() == b.tobytes()
    r0, r1 = ops.run_reference(graph, *inputs), ops.run_reference(parsed, *inputs)
    assert len(r0) == len(r1) == len(graph.outputs)
    for a, b in zip(r0, r1):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert a.tobytes() == b.tobytes()
    return text, parsed


def rand(*shape, dtype=F32, seed=0, lo=-2.0, hi=2.0):
    return np.random.default_rng(seed).uniform(lo, hi, shape).astype(dtype)


# ----------------------------------------------------------------------------- round trip

def test_round_trip_mlp():
    def mlp(x, w1, b1, w2, b2):
        h = mlc.relu(x @ w1 + b1)
        return mlc.softmax(h @ w2 + b2, axis=1)

    args = [rand(8, 16, seed=1), rand(16, 32, seed=2), rand(32, seed=3), rand(32, 10, seed=4), rand(10, seed=5)]
    g = mlc.trace(mlp, *args)
    text, parsed = check_round_trip(g, *args)
    assert [n.op for n in g.nodes] == ["matmul", "add", "relu", "matmul", "add", "softmax"]
    assert "softmax(%4) {axis=1} : f32[8,10]" in text
    assert text.startswith("graph @mlp(%x: f32[8,16], %w1: f32[16,32], %b1: f32[32], %w2: f32[32,10], %b2: f32[10]) {")
    # the parsed graph compiles and agrees with the original's reference
    got = mlc.compile(parsed)(*args)
    np.testing.assert_allclose(got, ops.run_reference(g, *args)[0], rtol=1e-5, atol=1e-6)


def test_round_trip_reductions():
    def f(x):
        return (x.sum(axis=(0, 2), keepdims=True), x.mean(axis=(1,)), x.max(axis=-1, keepdims=True),
                mlc.min(x, axis=(2, 0)), x.prod(axis=1, keepdims=False), x.sum(), mlc.mean(x, axis=(), keepdims=True))

    x = rand(3, 4, 5)
    text, _ = check_round_trip(mlc.trace(f, x), x)
    assert "sum(%x) {axis=[0, 2], keepdims=true} : f32[1,4,1]" in text
    assert "mean(%x) {axis=[1], keepdims=false} : f32[3,5]" in text
    assert "max(%x) {axis=[2], keepdims=true} : f32[3,4,1]" in text
    assert "min(%x) {axis=[0, 2], keepdims=false} : f32[4]" in text
    assert "sum(%x) {axis=[0, 1, 2], keepdims=false} : f32[]" in text
    assert "mean(%x) {axis=[], keepdims=true} : f32[3,4,5]" in text


def test_round_trip_negative_step_slices():
    def f(x):
        return (x[5:1:-2], x[6:0:-1, ::3], x[-1:-6:-2, 1:7:2], x[::-1], x[:, ::-4],
                mlc.slice(x, begin=(None, None), end=(None, None), step=(-1, -3)))

    x = rand(8, 9)
    text, parsed = check_round_trip(mlc.trace(f, x), x)
    assert text.count("slice(%x)") == 6
    assert "step=[-1, -3]} : f32[8,3]" in text and "step=[-2, 1]} : f32[2,9]" in text
    r = ops.run_reference(parsed, x)
    for got, want in zip(r, [x[5:1:-2], x[6:0:-1, ::3], x[-1:-6:-2, 1:7:2], x[::-1], x[:, ::-4], x[::-1, ::-3]]):
        np.testing.assert_array_equal(got, want)


def test_round_trip_concatenate_three_inputs():
    a, b, c = rand(2, 3, seed=1), rand(2, 5, seed=2), rand(2, 1, seed=3).astype(np.float64)
    g = mlc.trace(lambda a, b, c: mlc.concatenate([a, b, c], axis=1), a, b, c)
    text, parsed = check_round_trip(g, a, b, c)
    assert "concatenate(%a, %b, %c) {axis=1} : f64[2,9]" in text
    np.testing.assert_array_equal(ops.run_reference(parsed, a, b, c)[0], np.concatenate([a, b, c], axis=1))


def test_round_trip_casts_to_every_dtype():
    x = rand(3, 4, lo=0.0, hi=100.0)
    i = np.arange(-6, 6, dtype=np.int32).reshape(3, 4)
    g = mlc.trace(lambda x, i: tuple(x.astype(d) for d in DTYPE_NAMES) + tuple(i.astype(d) for d in DTYPE_NAMES), x, i)
    text, parsed = check_round_trip(g, x, i)
    for d in ALL_DTYPES:
        assert f"cast(%x) {{dtype={d.short}}} : {d.short}[3,4]" in text
        assert f"cast(%i) {{dtype={d.short}}} : {d.short}[3,4]" in text
    casts = [n for n in parsed.nodes if n.op == "cast"]
    assert [n.attrs["dtype"] for n in casts] == list(ALL_DTYPES) * 2
    assert all(isinstance(n.attrs["dtype"], mlc.DType) for n in casts)


def test_round_trip_small_and_large_constants():
    small = rand(8, 8, seed=7)        # 64 elements: the largest inline constant
    large = rand(65, seed=8)          # 65 elements: hex
    big2d = rand(16, 8, seed=9, dtype=np.float64)
    x = rand(8, seed=10)

    def f(x):
        return x @ small + x[0], mlc.sum(large) + x, (big2d @ x.astype(np.float64))

    g = mlc.trace(f, x)
    text, parsed = check_round_trip(g, x)
    inline = re.findall(r"dense<f32\[8,8\]: \[([^\]]*)\]>", text)
    assert len(inline) == 1 and len(inline[0].split(",")) == 64
    assert re.search(r"dense<f32\[65\]: 0x[0-9a-f]{520}>", text)
    assert re.search(r"dense<f64\[16,8\]: 0x[0-9a-f]{2048}>", text)
    [c_small, c_large, c_big] = constants(parsed)
    assert c_small.tobytes() == small.tobytes()
    assert c_large.tobytes() == large.tobytes()
    assert c_big.tobytes() == big2d.tobytes()


SPECIALS = [np.nan, np.inf, -np.inf, -0.0, 0.0, 1.0, -1.5, 1e-30, 65504.0, 6e-8]


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("size", [len(SPECIALS), 7 * len(SPECIALS)])   # inline and hex
def test_round_trip_special_float_constants(dtype, size):
    with np.errstate(over="ignore"):
        c = np.resize(np.array(SPECIALS, dtype=np.float64), size).astype(dtype)
    x = np.ones(size, dtype)
    g = mlc.trace(lambda x: x * c, x)
    text, parsed = check_round_trip(g, x)
    if size <= 64:
        assert "nan, inf, -inf, -0.0, 0.0, 1.0, -1.5" in text
    else:
        assert re.search(r"dense<f\d+\[70\]: 0x", text)
    [back] = constants(parsed)
    assert np.signbit(back[3]) and back[3] == 0     # -0.0 keeps its sign
    assert np.isnan(back[0]) and back[1] == np.inf and back[2] == -np.inf


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_round_trip_nan_payloads_and_sign_are_kept(dtype):
    bits = np.dtype(f"u{np.dtype(dtype).itemsize}")
    canonical = np.array(np.nan, dtype).view(bits)
    sign = np.array(-0.0, dtype).view(bits)
    c = np.array([canonical, canonical | sign, canonical | 1, 1], dtype=bits).view(dtype)
    x = np.ones(4, dtype)
    text, parsed = check_round_trip(mlc.trace(lambda x: x + c, x), x)
    assert constants(parsed)[0].view(bits).tolist() == c.view(bits).tolist()
    # a canonical NaN alone still prints inline
    text2, _ = check_round_trip(mlc.trace(lambda x: x + np.array([np.nan, 1, 2, 3], dtype), x), x)
    assert "[nan, 1.0, 2.0, 3.0]" in text2


def test_round_trip_float16_int8_uint8_bool_constants():
    x = rand(6, seed=3)
    f16 = np.array([0.1, -2.5, 65504, 6e-8, -0.0, 1 / 3], np.float16)
    i8 = np.array([-128, -1, 0, 1, 100, 127], np.int8)
    u8 = np.array([0, 1, 127, 128, 254, 255], np.uint8)
    b = np.array([True, False, False, True, True, False])
    big_i8 = np.arange(-100, 100, dtype=np.int8)
    big_u8 = np.arange(0, 256, dtype=np.uint8)
    big_b = np.arange(100) % 3 == 0

    def f(x):
        return (x * f16, x + i8, x - u8, mlc.where(b, x, -x), mlc.sum(big_i8.astype(np.int32)) + x,
                mlc.sum(big_u8) + x, mlc.where(big_b, 1.0, 2.0))

    text, parsed = check_round_trip(mlc.trace(f, x), x)
    assert "dense<f16[6]: [0.1, -2.5, 6.55e+04, 6e-08, -0.0, 0.3333]>" in text
    assert "dense<i8[6]: [-128, -1, 0, 1, 100, 127]>" in text
    assert "dense<u8[6]: [0, 1, 127, 128, 254, 255]>" in text
    assert "dense<bool[6]: [true, false, false, true, true, false]>" in text
    assert "dense<bool[100]: 0x01000001" in text
    assert "dense<u8[256]: 0x000102" in text


def test_round_trip_scalar_and_extreme_constants():
    vals = {np.float32: [np.finfo(np.float32).max, np.finfo(np.float32).tiny, 1e-45, -3.4028235e38],
            np.float64: [np.finfo(np.float64).max, 5e-324, 0.1, 2 ** 53 + 1.0],
            np.int64: [np.iinfo(np.int64).min, np.iinfo(np.int64).max, 0, -1],
            np.int32: [np.iinfo(np.int32).min, np.iinfo(np.int32).max, 7, -7]}
    b = GraphBuilder("extremes", ops.infer)
    outs = [b.constant(np.array(v, dtype=dt)) for dt, v in vals.items()]
    outs.append(b.constant(np.float32(2.5)))          # 0-d
    outs.append(b.constant(np.zeros((0, 3), np.int8)))  # empty
    g = b.build(outs)
    text, parsed = check_round_trip(g)
    assert "dense<f32[]: [2.5]>" in text and "dense<i8[0,3]: []>" in text
    for a, r in zip(constants(g), ops.run_reference(parsed)):
        assert a.tobytes() == r.tobytes() and a.dtype == r.dtype


def test_round_trip_repeated_output_and_input_output():
    x = rand(4)

    def f(x):
        e = mlc.exp(x)
        return e, x, e

    text, parsed = check_round_trip(mlc.trace(f, x), x)
    assert text.splitlines()[-2] == "  return %0, %x, %0"
    assert parsed.outputs[0] is parsed.outputs[2]
    assert parsed.outputs[1] is parsed.inputs[0]


def test_round_trip_attribute_values():
    b = GraphBuilder("attrs")
    x = b.input("x", TensorType((2,), "f32"))
    attrs = {"i": -3, "f": 1.5e-07, "big": 1e300, "n": float("nan"), "pinf": float("inf"), "minf": float("-inf"),
             "s": "a \"quoted\"\nstring \u00e9", "none": None, "t": True, "fl": False, "dt": mlc.int8,
             "nested": (1, (2.0, "x"), ()), "nb": np.bool_(True), "ni": np.int64(5), "nf": np.float32(0.1)}
    b.node("opaque", [x], attrs, [TensorType((2,), "f32")])
    g = b.build([x])
    verify_structure(g)
    text = print_graph(g)
    parsed = parse_graph(text)
    assert print_graph(parsed) == text
    got = parsed.nodes[0].attrs
    assert list(got) == list(attrs)
    assert got["s"] == attrs["s"] and got["dt"] is mlc.int8 and got["nested"] == (1, (2.0, "x"), ())
    assert got["i"] == -3 and got["big"] == 1e300 and got["f"] == 1.5e-07 and np.isnan(got["n"])
    assert got["pinf"] == float("inf") and got["minf"] == float("-inf")
    assert got["none"] is None and got["t"] is True and got["fl"] is False and got["nb"] is True
    assert got["ni"] == 5 and got["nf"] == float(np.float32(0.1))


def test_round_trip_names_that_look_like_numbers():
    b = GraphBuilder("g", ops.infer)
    x0 = b.input("0", TensorType((2,), "f32"))
    x2 = b.input("2", TensorType((2,), "f32"))
    r = b.node("add", [x0, b.node("relu", [x2])[0]])[0]
    g = b.build([r, x0])
    a, c = rand(2, seed=1), rand(2, seed=2)
    text, parsed = check_round_trip(g, a, c)
    assert text == ("graph @g(%0: f32[2], %2: f32[2]) {\n"
                    "  %1 = relu(%2) : f32[2]\n"
                    "  %3 = add(%0, %1) : f32[2]\n"
                    "  return %3, %0\n"
                    "}")


def test_round_trip_graph_without_outputs_or_inputs():
    g = GraphBuilder("empty").build([])
    text, _ = check_round_trip(g)
    assert text == "graph @empty() {\n  return\n}"


def test_builder_constant_is_native_byte_order():
    big_endian = np.arange(100, dtype=">f4")
    b = GraphBuilder("g", ops.infer)
    c = b.constant(big_endian)
    [arr] = c.producer.attrs.values()
    assert arr.dtype == np.float32 and arr.dtype.isnative and arr.flags.c_contiguous
    np.testing.assert_array_equal(arr, big_endian)
    # compiled code reads constants as raw bytes: it must see the values, not swapped bytes
    x = np.ones(100, np.float32)
    np.testing.assert_array_equal(mlc.compile(lambda x: x + big_endian, x)(x), x + big_endian)
    small = np.arange(3, dtype=">i4")
    np.testing.assert_array_equal(mlc.compile(lambda x: x[:3] + small, x)(x), x[:3] + small)


def test_builder_constant_copies_and_keeps_0d():
    a = np.arange(6, dtype=np.float32).reshape(2, 3).T   # not C-contiguous
    b = GraphBuilder("g", ops.infer)
    v = b.constant(a)
    arr = v.producer.attrs["value"]
    a[0, 0] = 99
    assert arr[0, 0] == 0 and arr.flags.c_contiguous and v.type == TensorType((3, 2), "f32")
    assert b.constant(np.float64(3)).type == TensorType((), "f64")


# --- property: every constant array of a supported dtype survives print -> parse bit for bit

@st.composite
def arrays(draw):
    """Arrays of any supported dtype with arbitrary bit patterns (NaN payloads, -0.0,
    denormals, ...), small enough to print inline or large enough for hex."""
    dt = np.dtype(draw(st.sampled_from(DTYPE_NAMES)))
    shape = tuple(draw(st.lists(st.integers(0, 5), max_size=3)))
    n = int(np.prod(shape, dtype=np.int64))
    if dt == np.bool_:
        return np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool).reshape(shape)
    bits = draw(st.lists(st.integers(0, 2 ** (8 * dt.itemsize) - 1), min_size=n, max_size=n))
    return np.array(bits, dtype=f"u{dt.itemsize}").view(dt).reshape(shape)


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(arrays())
def test_round_trip_any_constant_bits(a):
    b = GraphBuilder("c", ops.infer)
    g = b.build([b.constant(a)])
    text, parsed = check_round_trip(g)
    [back] = constants(parsed)
    assert back.dtype == a.dtype and back.shape == a.shape and back.tobytes() == a.tobytes()


# ----------------------------------------------------------------------------- verifier

def t(shape, dt="f32"):
    return TensorType(shape, dt)


def test_verify_accepts_valid_graph():
    b = GraphBuilder("ok", ops.infer)
    x = b.input("x", t((2, 3)))
    y = b.node("exp", [x])[0]
    s = b.node("sum", [y], {"axis": (1,), "keepdims": False})[0]
    g = b.build([s, y])
    ops.verify(g)
    verify_structure(g)


def test_verify_use_before_definition():
    x = Value(t((2,)), name="x")
    n1 = Node("relu", [x], {}, [t((2,))])
    n2 = Node("neg", [n1.output], {}, [t((2,))])
    g = Graph("g", [x], [n2, n1], [n2.output])
    with pytest.raises(VerificationError, match=r"node 0 \(neg\) uses operand 0 before it is defined"):
        verify_structure(g)
    with pytest.raises(VerificationError, match="before it is defined"):
        ops.verify(g)


def test_verify_operand_from_another_graph():
    x = Value(t((2,)), name="x")
    stray = Value(t((2,)), name="y")        # not an input of the graph
    n = Node("add", [x, stray], {}, [t((2,))])
    with pytest.raises(VerificationError, match=r"node 0 \(add\) uses operand 1 before it is defined"):
        ops.verify(Graph("g", [x], [n], [n.output]))


def test_verify_value_defined_twice():
    x = Value(t((2,)), name="x")
    n1 = Node("relu", [x], {}, [t((2,))])
    g = Graph("g", [x], [n1, n1], [n1.output])
    with pytest.raises(VerificationError, match=r"node 1 \(relu\) redefines a value"):
        ops.verify(g)


def test_verify_output_claimed_by_another_node():
    x = Value(t((2,)), name="x")
    n1 = Node("relu", [x], {}, [t((2,))])
    n2 = Node("neg", [x], {}, [t((2,))])
    n2.outputs = [n1.outputs[0]]      # n2 claims n1's value
    with pytest.raises(VerificationError, match="redefines a value"):
        ops.verify(Graph("g", [x], [n1, n2], [n2.outputs[0]]))


def test_verify_graph_input_produced_by_node():
    x = Value(t((2,)), name="x")
    n = Node("relu", [x], {}, [t((2,))])
    n.output.name = "y"
    with pytest.raises(VerificationError, match="graph input y is produced by a node"):
        ops.verify(Graph("g", [x, n.output], [n], [n.output]))


def test_verify_broadcast_mismatch():
    b = GraphBuilder("g")
    x, y = b.input("x", t((2,))), b.input("y", t((3,)))
    s = b.node("add", [x, y], out_types=[t((3,))])[0]
    g = b.build([s])
    verify_structure(g)      # structure alone is fine
    with pytest.raises(VerificationError, match=r"node 0 \(add\): shapes \[2\] and \[3\] cannot be broadcast"):
        ops.verify(g)


def test_verify_wrong_output_dtype():
    b = GraphBuilder("g")
    x, y = b.input("x", t((2,))), b.input("y", t((2,)))
    s = b.node("add", [x, y], out_types=[t((2,), "f64")])[0]
    with pytest.raises(VerificationError,
                       match=r"node 0 \(add\) has output types f64\[2\] but its type rule gives f32\[2\]"):
        ops.verify(b.build([s]))


def test_verify_wrong_output_shape_and_count():
    b = GraphBuilder("g")
    x = b.input("x", t((2, 3)))
    s = b.node("sum", [x], {"axis": (1,), "keepdims": True}, out_types=[t((2,))])[0]
    with pytest.raises(VerificationError, match=r"has output types f32\[2\] but its type rule gives f32\[2,1\]"):
        ops.verify(b.build([s]))
    b = GraphBuilder("g")
    x = b.input("x", t((2,)))
    outs = b.node("exp", [x], out_types=[t((2,)), t((2,))])
    with pytest.raises(VerificationError, match=r"output types f32\[2\], f32\[2\] but its type rule gives f32\[2\]$"):
        ops.verify(b.build(outs))


def test_verify_unknown_op_and_bad_attrs():
    b = GraphBuilder("g")
    x = b.input("x", t((2,)))
    y = b.node("frobnicate", [x], out_types=[t((2,))])[0]
    with pytest.raises(VerificationError, match=r"node 0 \(frobnicate\): .*unknown op 'frobnicate'"):
        ops.verify(b.build([y]))
    b = GraphBuilder("g")
    x = b.input("x", t((2,)))
    y = b.node("sum", [x], {"keepdims": False}, out_types=[t(())])[0]   # axis missing
    with pytest.raises(VerificationError, match=r"node 0 \(sum\): .*axis"):
        ops.verify(b.build([y]))


def test_verify_undefined_graph_output():
    b = GraphBuilder("g")
    x = b.input("x", t((2,)))
    stray = Node("relu", [x], {}, [t((2,))]).output    # never added to the graph
    with pytest.raises(VerificationError, match=r"graph output Value\(\?: f32\[2\]\) is not defined"):
        ops.verify(b.build([x, stray]))


@pytest.mark.parametrize("names", [["x", "x"], ["x", ""], ["a", "b", "a"]])
def test_verify_repeated_or_empty_input_names(names):
    g = Graph("g", [Value(t((2,)), name=n) for n in names], [], [])
    with pytest.raises(VerificationError, match=r"graph input name '.*' is empty or repeated"):
        verify_structure(g)


@pytest.mark.parametrize("name", ["a b", "x-y", "%x", "é"])
def test_verify_unprintable_input_name(name):
    g = Graph("g", [Value(t((2,)), name=name)], [], [])
    with pytest.raises(VerificationError, match=r"graph input name .* is not made of letters, digits"):
        ops.verify(g)


def test_verify_unprintable_graph_name():
    with pytest.raises(VerificationError, match=r"graph name 'my graph' is not made of"):
        ops.verify(Graph("my graph", [], [], []))


def test_traced_graphs_verify():
    g = mlc.trace(lambda x, y: mlc.where(x > y, x * 2.0, y).sum(axis=0), rand(3, 4), rand(4))
    ops.verify(g)
    ops.verify(g.copy())
    assert print_graph(g.copy()) == print_graph(g)


# ----------------------------------------------------------------------------- parser errors

GOOD = """graph @g(%x: f32[2], %y: f32[2]) {
  %0 = add(%x, %y) : f32[2]
  %1 = constant() {value=dense<f32[2]: [1.0, 2.0]>} : f32[2]
  %2 = mul(%0, %1) : f32[2]
  return %2
}"""


def test_parse_good_text():
    g = parse_graph(GOOD)
    assert print_graph(g) == GOOD
    ops.verify(g)
    x, y = np.array([1, 2], F32), np.array([3, 4], F32)
    np.testing.assert_array_equal(ops.run_reference(g, x, y)[0], np.array([4, 12], F32))


@pytest.mark.parametrize("old, new, pattern", [
    ("%y: f32[2]", "%y: f31[2]", r"^line 1: unknown dtype 'f31'"),
    ("%y: f32[2]", "%y: complex64[2]", r"^line 1: unknown dtype 'complex64'"),
    ("%y: f32[2]", "%y: double[2]", r"^line 1: unknown dtype 'double'"),    # numpy aliases are not IR
    ("<f32[2]: [1.0", "<c64[2]: [1", r"^line 3: unknown dtype 'c64'"),
    ("mul(%0, %1)", "mul(%0, %7)", r"^line 4: %7 is used before it is defined"),
    ("add(%x, %y)", "add(%x, %2)", r"^line 2: %2 is used before it is defined"),
    ("return %2", "return %z", r"^line 5: %z is used before it is defined"),
    ("[1.0, 2.0]", "[1.0, 2.0, 3.0]", r"^line 3: dense f32\[2\] needs 2 elements, found 3"),
    ("[1.0, 2.0]", "[1.0]", r"^line 3: dense f32\[2\] needs 2 elements, found 1"),
    ("[1.0, 2.0]>", "0x0000803f>", r"^line 3: dense f32\[2\] needs 8 bytes, found 4"),
    ("[1.0, 2.0]>", "0x0000803f0>", r"^line 3: .*odd number of digits"),
    ("mul(%0, %1)", "mul(%0, %1) $", r"^line 4: unexpected character '\$'"),
    ("%x: f32[2]", "%x: f32[2]#", r"^line 1: unexpected character '#'"),
    ("return %2", "return %2\n  ;", r"^line 6: unexpected character ';'"),
    ("%2 = mul", "%1 = mul", r"^line 4: %1 is defined twice"),
    ("%y: f32[2]", "%x: f32[2]", r"^line 1: input %x declared twice"),
    ("%x: f32[2]", "%x: f32[2.5]", r"^line 1: bad dimension '2.5'"),
    ("%x: f32[2]", "%x: f32[-2]", r"^line 1: bad dimension '-2'"),
    ("[1.0, 2.0]", "[1.0, true]", r"^line 3: bad dense element 'true' for f32"),
    ("dense<f32[2]: [1.0, 2.0]> } : f32[2]", "dense<bool[2]: [1, 0]>} : bool[2]", r"^line 3: bad dense element '1' for bool"),
    ("dense<f32[2]: [1.0, 2.0]> } : f32[2]", "dense<i8[2]: [1, 200]>} : i8[2]", r"^line 3: dense element 200 is out of range for i8"),
    ("dense<f32[2]: [1.0, 2.0]> } : f32[2]", "dense<i32[2]: [1, 2.5]>} : i32[2]", r"^line 3: bad dense element '2.5' for i32"),
    ("{value=", "{value=dense<f32[2]: [1.0, 2.0]>, value=", r"^line 3: attribute 'value' of constant is given twice"),
    ("return %2\n}", "return %2\n}\n%3", r"^line 7: expected 'eof', found '%3'"),
    ("return %2\n}", "return %2", r"^line 5: expected '}', found 'end of input'"),
    (": f32[2]\n  return", ": f32[2], f32[2]\n  return", r"^line 4: mul defines 1 values but lists 2 types"),
])
def test_parse_errors(old, new, pattern):
    old = old.replace("> }", ">}")
    assert old in GOOD, old
    text = GOOD.replace(old, new, 1)
    with pytest.raises(ParseError, match=pattern):
        parse_graph(text)


def test_parse_error_string_escape():
    text = GOOD.replace("%2 = mul(%0, %1)", '%2 = mul(%0, %1) {note="\\q"}')
    with pytest.raises(ParseError, match=r"^line 4: bad string"):
        parse_graph(text)


def test_parse_empty_and_truncated():
    with pytest.raises(ParseError, match=r"^line 1: expected 'graph', found 'end of input'"):
        parse_graph("")
    for cut in range(1, len(GOOD) - 1, 7):
        with pytest.raises(ParseError, match=r"^line \d+: "):
            parse_graph(GOOD[:cut])


# ----------------------------------------------------------------------------- TensorType and dtypes

def test_tensor_type_str():
    assert str(TensorType((2, 3), "float32")) == "f32[2,3]"
    assert str(TensorType((), "float32")) == "f32[]"
    assert repr(TensorType([4], np.int8)) == "i8[4]"
    assert str(TensorType((1, 0, 7), mlc.bool_)) == "bool[1,0,7]"
    assert str(mlc.TensorType.of(np.zeros((2, 5), np.uint8))) == "u8[2,5]"


def test_tensor_type_fields_and_equality():
    tt = TensorType(np.array([2, 3]), "f64")
    assert tt.shape == (2, 3) and all(type(s) is int for s in tt.shape)
    assert tt.dtype is mlc.float64 and tt.rank == 2 and tt.size == 6 and tt.nbytes == 48
    assert TensorType((), "f16").size == 1 and TensorType((), "f16").nbytes == 2
    assert TensorType((2, 3), "float64") == tt and hash(TensorType((2, 3), np.float64)) == hash(tt)
    assert TensorType((2, 3), "f32") != tt and TensorType((3, 2), "f64") != tt
    assert dataclasses.replace(tt, shape=(5,)) == TensorType((5,), "f64")
    assert dataclasses.replace(tt, dtype=mlc.int8) == TensorType((2, 3), "i8")
    with pytest.raises(ValueError, match="negative dimension"):
        TensorType((2, -1), "f32")
    with pytest.raises(TypeError, match="dimensions must be integers"):
        TensorType((2.5,), "f32")


def test_dtype_lookup():
    assert mlc.dtype(np.float16) is mlc.float16
    assert mlc.dtype("float32") is mlc.float32 and mlc.dtype("f32") is mlc.float32
    assert mlc.dtype(np.dtype("int8")) is mlc.int8 and mlc.dtype("u8") is mlc.uint8
    assert mlc.dtype(np.uint16) is mlc.uint16 and mlc.dtype("u32") is mlc.uint32 and mlc.dtype("i16") is mlc.int16
    assert mlc.dtype(np.dtype("<u8")) is mlc.uint64   # numpy's "u8" is 8 bytes; mlc's IR "u8" is uint8
    assert mlc.dtype(bool) is mlc.bool_ and mlc.dtype(mlc.int64) is mlc.int64
    assert mlc.dtype(np.dtype(">f8")) is mlc.float64
    for d in ALL_DTYPES:
        assert mlc.dtype(d.name) is d and mlc.dtype(d.short) is d and mlc.dtype(d.np) is d
        assert str(d) == repr(d) == d.short
        assert TensorType((1,), d).nbytes == d.itemsize
    import copy
    import pickle
    assert pickle.loads(pickle.dumps(mlc.float32)) is mlc.float32 and copy.deepcopy(mlc.uint8) is mlc.uint8


@pytest.mark.parametrize("bad", [np.complex64, "datetime64[s]", "complex128", np.float128 if hasattr(np, "float128") else "U3"])
def test_unsupported_dtype_names_supported_list(bad):
    with pytest.raises(TypeError, match=r"is not supported by mlc \(supported: float16, float32, float64, int8, "
                                        r"int16, int32, int64, uint8, uint16, uint32, uint64, bool\)"):
        mlc.dtype(bad)


@pytest.mark.parametrize("bad", [None, "f31", "nonsense", 3.5])
def test_not_a_dtype(bad):
    with pytest.raises(TypeError, match="not a dtype"):
        mlc.dtype(bad)
