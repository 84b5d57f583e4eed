"""Each loop-level pass, text in and text out."""
from mlc.ir import loop as L
from mlc.passes import loops


def run(pass_, text):
    func = pass_(L.parse(text))
    L.verify(func)
    return str(func)


def test_partition_peels_the_guarded_tail():
    assert run(loops.partition, """func @f(a: f32[10], out: f32[10]) {
  // outputs: out
  for io in [0, 3) {
    vector ii in [0, 4) {
      if likely io * 4 + ii < 10 {
        out[io * 4 + ii] = a[io * 4 + ii] * 2.0
      }
    }
  }
}""") == """func @f(a: f32[10], out: f32[10]) {
  // outputs: out
  for io in [0, 2) {
    vector ii in [0, 4) {
      out[io * 4 + ii] = a[io * 4 + ii] * 2.0
    }
  }
  vector ii in [0, 2) {
    out[8 + ii] = a[8 + ii] * 2.0
  }
}"""


def test_lower_accumulate_writes_the_combine_out():
    assert run(loops.lower_accumulate, """func @f(a: f32[4,8], out: f32[4]) {
  // outputs: out
  for i in [0, 4) {
    out[i] = 0.0
    for j in [0, 8) {
      out[i] max= a[i, j] over [j < 8]
    }
  }
}""") == """func @f(a: f32[4,8], out: f32[4]) {
  // outputs: out
  for i in [0, 4) {
    out[i] = 0.0
    for j in [0, 8) {
      out[i] = max(out[i], a[i, j])
    }
  }
}"""


def test_simplify_undoes_reshape_arithmetic_with_the_loop_ranges():
    assert run(loops.simplify, """func @f(a: f32[4,8], out: f32[32]) {
  // outputs: out
  for i in [0, 4) {
    for j in [0, 8) {
      out[(i * 8 + j) // 8 * 8 + (i * 8 + j) % 8] = a[(i * 8 + j) // 8, j % 8]
    }
  }
}""") == """func @f(a: f32[4,8], out: f32[32]) {
  // outputs: out
  for i in [0, 4) {
    for j in [0, 8) {
      out[i * 8 + j] = a[i, j]
    }
  }
}"""
