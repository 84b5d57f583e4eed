"""Each tensor-level pass, text in and text out."""
from mlc.ir import tensor as T
from mlc.passes import lower


def run(pass_, text):
    kernel = pass_(T.parse(text))
    T.verify(kernel)
    return str(kernel)


def test_inline_folds_a_bias_add_into_its_reader():
    assert run(lower.inline, """contraction kernel @k(A: f32[4,8], B: f32[8,3], C: f32[3]) -> f32[4,3] {
  T0[i, j] = sum[k < 8] A[i, k] * B[k, j] : f32[4,3]
  T1[i, j] = T0[i, j] + C[j] : f32[4,3]
  out[i, j] = max(T1[i, j], 0.0)
}""") == """contraction kernel @k(A: f32[4,8], B: f32[8,3], C: f32[3]) -> f32[4,3] {
  T0[i, j] = sum[k < 8] A[i, k] * B[k, j] : f32[4,3]
  out[i, j] = max(T0[i, j] + C[j], 0.0)
}"""


def test_simplify_indices_drops_a_modulo_the_range_makes_useless():
    assert run(lower.simplify_indices, """kernel @k(A: f32[6,4]) -> f32[24] {
  out[i] = A[i // 4 % 6, i % 4]
}""") == """kernel @k(A: f32[6,4]) -> f32[24] {
  out[i] = A[i // 4, i % 4]
}"""


def test_reindex_reductions_computes_the_matmul_in_its_readers_shape():
    assert run(lower.reindex_reductions, """contraction kernel @k(A: f32[16,8], B: f32[8,16], C: f32[16]) -> f32[4,4,16] {
  T0[i, j] = sum[k < 8] A[i, k] * B[k, j] : f32[16,16]
  out[i, j, k] = T0[i * 4 + j, k] + C[k]
}""") == """contraction kernel @k(A: f32[16,8], B: f32[8,16], C: f32[16]) -> f32[4,4,16] {
  T0[i, j, k] = sum[k1 < 8] A[i * 4 + j, k1] * B[k1, k] : f32[4,4,16]
  out[i, j, k] = T0[i, j, k] + C[k]
}"""
