"""The loop level's text form: accumulations with their reduced axes, guards, allocs,
offset loops, runtime calls and the params' roles parse back exactly; malformed text
gives a ParseError with the line."""
import pytest

from mlc.ir import loop as L
from mlc.ir.text import ParseError

SCHEDULED = """func @mm(A: f32[6,10], B: f32[10,8], out: f32[6,8], T0: f32[8]) {
  // outputs: out; scratch: T0; in place: out
  parallel io in [0, 2) {
    alloc acc: f32[4,8] local
    unroll ii in [0, 4) {
      vector j in [0, 8) {
        if likely io * 4 + ii < 6 {
          acc[ii, j] = 0.0
        }
      }
    }
    for ko in [0, 3) {
      for ki in [0, 4) {
        if likely ko * 4 + ki < 10 {
          acc[0, 0] += A[io * 4, ko * 4 + ki] * B[ko * 4 + ki, 0] over [ko * 4 + ki < 10]
          acc[1, 0] max= A[1, 0] over [ko * 4 + ki < 10]
        } else {
          T0[ki] = f32(ko) * -1.5
        }
      }
    }
    for i in [4, 6) {
      out[i, 0] = acc[i - 4, 0]
    }
    for j in [io, io + 3) {
      out[0, j] = acc[0, j]
    }
  }
}"""


def test_scheduled_function_round_trips():
    f = L.parse(SCHEDULED)
    assert str(f) == SCHEDULED
    assert [b.name for b in f.inputs] == ["A", "B"] and [b.name for b in f.outputs] == ["out"]
    assert [b.name for b in f.scratch] == ["T0"] and {b.name for b in f.aliased} == {"out"}
    loops = [s for s in f.body.body.body.stmts if isinstance(s, L.For)]
    assert (loops[2].start.value, loops[2].extent.value) == (4, 2)
    assert loops[3].start is f.body.var and loops[3].extent.value == 3
    acc = loops[1].body.body.then.stmts[0]
    assert acc.combiner == "sum" and [n for _, n in acc.rindex] == [10]
    L.verify(f)


def test_runtime_call_keeps_its_descriptor():
    text = """func @ar(x: f32[4], y: f32[4]) {
  // outputs: y
  call mlc_collective({"attrs": {"group": [0, 1], "op": "sum"}, "in": ["<f4", [4]], "out": ["<f4", [4]]}, x, y)
  call mlc_recv({"op": "recv"}, null, y)
}"""
    f = L.parse(text)
    assert str(f) == text and f.body.stmts[1].buffers[0] is None
    L.verify(f)


def test_parse_all_reads_several_functions():
    one = "func @a(x: i32[2], y: i32[2]) {\n  // outputs: y\n  for i in [0, 2) {\n    y[i] = x[i] + 1:i32\n  }\n}"
    fs = L.parse_all(one + "\n\n" + SCHEDULED)
    assert [f.name for f in fs] == ["a", "mm"] and "\n\n".join(map(str, fs)) == one + "\n\n" + SCHEDULED


HEAD = "func @f(a: f32[4], out: f32[4]) {\n  // outputs: out\n"


@pytest.mark.parametrize("body,line,message", [
    ("  for i in [0, 4) {\n    out[i] = b[i]\n  }\n}", 4, "load from b, which is not defined"),
    ("  for i in [0, 4) {\n    out[j] = a[i]\n  }\n}", 4, "variable j is not defined"),
    ("  for i in [0, 4) {\n    x[i] = a[i]\n  }\n}", 4, "store to x, which is not a param"),
    ("  for i in [0, 4) {\n    out[i] = a[i] + 1\n  }\n}", 4, "operand dtypes differ"),
    ("  for i in [0, 4) {\n    out[i] = 1\n  }\n}", 4, "store of i64 into out: f32"),
    ("  for i in [0, 4) {\n    out[i] <- a[i]\n  }\n}", 4, "expected '=', '\\+=', '\\*=', 'max=' or 'min='"),
    ("  alloc t: f32[4] texture\n}", 3, "unknown buffer scope 'texture'"),
    ("  for i in [0, 4) {\n    out[i] = a[i]\n  }\n", 6, "expected '}', found end of input"),
    ("  call c(not json, out)\n}", 3, "descriptor of call c is not JSON"),
])
def test_malformed_text_names_the_line(body, line, message):
    with pytest.raises(ParseError, match=f"line {line}: .*{message}"):
        L.parse(HEAD + body)


def test_unknown_role_in_the_comment_line():
    with pytest.raises(ParseError, match="line 2: unknown comment entry 'inputs'"):
        L.parse("func @f(a: f32[4]) {\n  // inputs: a\n}")
