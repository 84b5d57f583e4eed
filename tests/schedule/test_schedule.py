"""Default schedules: each rule is chosen where it should be, and the loops it
produces compute the same numbers as numpy, tails and blocks included."""
import numpy as np
import pytest

import mlc


def rand(shape, dtype=np.float32, seed=0):
    r = np.random.default_rng(seed).standard_normal(shape)
    return (r * 4).astype(dtype) if np.dtype(dtype).kind == "i" else r.astype(dtype)


@pytest.mark.parametrize("m,k,n", [
    (100, 600, 530),   # packed, 3 reduction blocks (256, 256, 88), 3 column blocks (256, 256, 18), row tail 4
    (48, 256, 256),    # exactly one block, no tails
    (61, 1000, 35),    # packed, reduction blocks with a tail, narrow columns: vector tile + scalar columns
    (5, 700, 300),     # too few rows to block or pack
])
def test_blocked_matmul_matches_numpy(m, k, n):
    a, b = rand((m, k)), rand((k, n), seed=1)
    exe = mlc.compile(lambda a, b: a @ b, a, b)
    loops = exe.ir("loop")
    assert ("packed" in loops) == (m >= 48)
    assert ("kb" in loops) == (k > 256 and m >= 48)      # blocks only where row tiles reuse them
    np.testing.assert_allclose(exe(a, b), a @ b, rtol=2e-5, atol=2e-4)


def test_blocked_integer_matmul_is_exact():
    a, b = rand((64, 520), np.int32), rand((520, 300), np.int32, seed=1)
    exe = mlc.compile(lambda a, b: a @ b, a, b)
    assert "packed" in exe.ir("loop")
    np.testing.assert_array_equal(exe(a, b), a @ b)


# The rules follow the target's vector width: the IR is checked on named targets (8
# f32 lanes on AVX2, 16 on AVX-512), whatever the host; the numbers on the host.
@pytest.mark.parametrize("target, lanes", [("znver3", 8), ("skylake-avx512", 16)])
def test_rules_pick_vector_axis_by_memory_order(target, lanes):
    x = rand((600, 530))
    col = lambda x: x.sum(axis=0)     # contiguous along the output: register tiles
    row = lambda x: x.sum(axis=1)     # contiguous along the reduction: vector partial sums
    vectors = {8: 2, 16: 3}[lanes]   # one row of the register tile: 6 x 2 vectors on AVX2, 8 x 3 on AVX-512
    assert f"alloc acc: f32[{vectors * lanes}] local" in mlc.compile(col, x, target=target).ir("loop")
    assert f"alloc vacc: f32[1,{lanes}] local" in mlc.compile(row, x, target=target).ir("loop")   # a partial per lane
    np.testing.assert_allclose(mlc.compile(col, x)(x), x.sum(axis=0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(mlc.compile(row, x)(x), x.sum(axis=1), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("target, lanes", [("znver3", 8), ("skylake-avx512", 16)])
def test_elementwise_is_vectorized_and_parallel_when_large(target, lanes):
    big, small = rand((256, 300)), rand((4, 9))
    big_loops = mlc.compile(lambda x: x * 2.0, big, target=target).ir("loop")
    small_loops = mlc.compile(lambda x: x * 2.0, small, target=target).ir("loop")
    assert "parallel i in [0, 256)" in big_loops and f"vector jv in [0, {lanes})" in big_loops
    assert f"vector jv in [0, {300 % lanes})" in big_loops   # the peeled tail: 300 = 37 * 8 + 4 = 18 * 16 + 12
    assert "parallel" not in small_loops


@pytest.mark.parametrize("target, lanes", [("znver3", 8), ("skylake-avx512", 16)])
def test_transposition_runs_in_square_tiles(target, lanes):
    """A transpose reads along the axis it does not write along: 16 x 16 tiles use each
    cache line read whole, the writes in vectors; tails (1000 = 62 * 16 + 8) included."""
    for shape in [(1024, 256), (1000, 250)]:
        x = rand(shape)
        loops = mlc.compile(lambda x: x.T, x, target=target).ir("loop")
        assert "parallel io in [0, 16)" in loops if shape[1] == 256 else "parallel io" in loops
        assert "for ii in [0, 16)" in loops   # the tile's writes: 2 vectors of 8 on AVX2, one of 16 on AVX-512
        assert ("vector jiv in [0, 8)" if lanes == 8 else "vector ji in [0, 16)") in loops
        np.testing.assert_array_equal(mlc.compile(lambda x: x.T, x)(x), x.T)
    small = mlc.compile(lambda x: x.T, rand((8, 5)), target=target).ir("loop")
    assert "ii" not in small   # too small to tile


@pytest.mark.parametrize("target, width", [("znver3", 56), ("skylake-avx512", 192)])
def test_a_vector_times_a_matrix_takes_a_wide_one_row_tile(target, width):
    """One row of accumulators (an RNN step at batch 1): the tile takes as many column
    vectors as the registers hold (7 of 8 lanes on AVX2, 12 of 16 on AVX-512), so each row
    of the matrix is read in long contiguous runs; tails included (1000 = 17 * 56 + 48)."""
    a, b = rand((1, 256)), rand((256, 1000), seed=1)
    loops = mlc.compile(lambda a, b: a @ b, a, b, target=target).ir("loop")
    assert f"alloc acc: f32[1,{width}] local" in loops
    np.testing.assert_allclose(mlc.compile(lambda a, b: a @ b, a, b)(a, b), a @ b, rtol=1e-4, atol=1e-4)
    rows = mlc.compile(lambda a, b: a @ b, rand((8, 256)), b, target=target).ir("loop")
    assert f"alloc acc: f32[1,{width}] local" not in rows   # several rows: the usual tile


@pytest.mark.parametrize("target, lanes", [("znver3", 8), ("skylake-avx512", 16)])
def test_reads_through_a_reshape_are_contiguous_vectors(target, lanes):
    """[64, 56, 56] read as [64, 3136]: the index (k // 56, k % 56) is the flat offset k,
    so the loop is a vector loop and its loads one contiguous vector each, not a gather."""
    x, s = rand((64, 56, 56)), rand((64, 1), seed=1)
    f = lambda x, s: mlc.relu(mlc.reshape(x, (64, 3136)) * s + 1.0)
    exe = mlc.compile(f, x, s, target=target)
    assert f"vector jv in [0, {lanes})" in exe.ir("loop")
    llvm_ir = exe.ir("llvm")
    assert f"load <{lanes} x float>" in llvm_ir
    assert llvm_ir.count("= load float") == 1   # the row's scale, broadcast; no per-lane gather of x
    want = np.maximum(x.reshape(64, 3136) * s + 1, 0)
    np.testing.assert_allclose(mlc.compile(f, x, s)(x, s), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("target, lanes", [("znver3", 8), ("skylake-avx512", 16)])
def test_rows_shorter_than_a_vector_are_fused_and_vectorized(target, lanes):
    """A 7 x 7 feature map: its rows follow each other in memory, so the two axes run as one
    loop of 49 in vectors (and a tail), instead of scalar rows of 7."""
    x, s = rand((1, 64, 7, 7)), rand((1, 64, 1, 1), seed=1)
    f = lambda x, s: mlc.relu(x * s + 1.0)
    loops = mlc.compile(f, x, s, target=target).ir("loop")
    assert f"vector k_lv in [0, {lanes})" in loops and f"vector k_lv in [0, {49 % lanes})" in loops
    np.testing.assert_allclose(mlc.compile(f, x, s)(x, s), np.maximum(x * s + 1, 0), rtol=1e-5, atol=1e-6)
    t = lambda x: mlc.relu(mlc.transpose(x, (0, 1, 3, 2)))   # the rows do not follow each other: not fused
    assert "k_l" not in mlc.compile(t, x, target=target).ir("loop")
