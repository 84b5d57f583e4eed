"""The tensor level's text form: what it prints, that it parses back exactly, and
clear errors (with the line) for malformed text."""
import pytest

from mlc.ir import tensor as T
from mlc.ir.graph import ParseError as GraphParseError
from mlc.ir.text import ParseError
from mlc.ir.types import float32, float64, int32

SOFTMAX = """reduction kernel @softmax(A: f32[4,10]) -> f32[4,10] {
  T0[i, j] = max[k < 10] A[i, k] : f32[4,1]
  T1[i, j] = sum[k < 10] exp(A[i, k] - T0[i, 0]) : f32[4,1]
  out[i, j] = exp(A[i, j] - T0[i, 0]) / T1[i, 0]
}"""


def test_round_trip_of_temporaries_constants_and_literals():
    text = """kernel @k(A: f32[8], B: i32[8]) -> y: f64[8], f32[8] {
  C = 0.5: f32[1]
  D = True: bool[]
  y[i] = f64(A[i]) * 0.1:f64 + f64(neg(2.0))
  out1[i] = select(B[i] > 3:i32 && true, -A[i], max(A[i], 1e-05)) + f32(B[i] // 2:i32 % 3:i32)
}"""
    k = T.parse(text)
    assert str(k) == text
    assert k.outputs[0].dtype is float64 and k.stages[0].body.b.dtype is float64
    consts = [t for t in k.inputs if isinstance(t, T.ScalarConstant)]
    assert [(c.name, c.value, c.dtype) for c in consts][0] == ("C", 0.5, float32)
    assert consts[1].value is True
    T.verify(k)


def test_reduction_kind_and_temporaries_print_and_parse():
    k = T.parse(SOFTMAX)
    assert str(k) == SOFTMAX and k.kind == "reduction"
    assert [s.shape for s in k.stages] == [(4, 1), (4, 1), (4, 10)] and k.outputs == [k.stages[2]]


def test_reduce_axis_named_like_an_index_variable_prints_apart():
    A, B = T.Placeholder("A", (2, 3, 4), float32), T.Placeholder("B", (4, 5), float32)
    out = T.compute((2, 3, 5), lambda i, j, k: T.reduce("sum", [4], lambda r: A[i, j, r] * B[r, k]), "out")
    k = T.Kernel("mm", [A, B], [out], [out], "contraction")
    text = str(k)
    assert "out[i, j, k] = sum[k1 < 4] A[i, j, k1] * B[k1, k]" in text   # not "B[k, k]"
    back = T.parse(text)
    assert str(back) == text
    body = back.stages[0].body.body
    assert body.b.indices[1] is back.stages[0].axes[2] and body.b.indices[0] is back.stages[0].body.axes[0]


def test_parse_all_reads_several_kernels():
    one = "kernel @a(A: i32[3]) -> f32[3] {\n  out[i] = f32(A[i])\n}"
    ks = T.parse_all(one + "\n\n" + SOFTMAX)
    assert [k.name for k in ks] == ["a", "softmax"] and ks[0].stages[0].body.dtype is float32
    assert ks[0].inputs[0].dtype is int32


@pytest.mark.parametrize("text,line,message", [
    ("kernel @k(A: f32[4]) -> f32[4] {\n  out[i] = B[i]\n}", 2, "load from B, which is not defined"),
    ("kernel @k(A: f32[4]) -> f32[4] {\n  out[i] = A[j]\n}", 2, "variable j is not defined"),
    ("kernel @k(A: f32[4]) -> f32[4] {\n  out[i] = A[i, i]\n}", 2, "rank 1, indexed with 2"),
    ("kernel @k(A: f32[4]) -> f32[4] {\n  T0[i] = A[i]\n  out[i] = T0[i]\n}", 2, "temporary T0 needs its type"),
    ("kernel @k(A: f32[4]) -> f32[4] {\n  out[i] = A[i] + 1\n}", 2, "operand dtypes differ"),
    ("kernel @k(A: f32[4]) -> f32[4] {\n  y[i] = A[i] : f32[4]\n}", 1, "output out of kernel @k is not computed"),
    ("kernel @k(A: f32[4]) -> f32[4] {\n  out[i] = A[i] $ 2.0\n}", 2, "unexpected character '\\$'"),
    ("kernel @k(A: f32[4]) -> f32[4] {\n  out[i] = sum[i < 4] A[i]\n}", 2, "reduce axis i"),
    ("kernel @k(A: f32[4]) -> f32[4] {\n  out[i] = exp(A[i], A[i])\n}", 2, "exp takes 1 operand"),
    ("fused kernel @k(A: f32[4]) -> f32[4] {\n  out[i] = A[i]\n}", 1, "unknown kernel kind 'fused'"),
    ("kernel @k(A: f32[4]) -> f32[4] {\n  out[i] = A[i]\n", 3, "expected a stage name, found 'end of input'"),
])
def test_malformed_text_names_the_line(text, line, message):
    with pytest.raises(ParseError, match=f"line {line}: .*{message}"):
        T.parse(text)


def test_parse_error_is_the_graph_level_one():
    assert ParseError is GraphParseError
