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


def test_rules_pick_vector_axis_by_memory_order():
    x = rand((600, 530))
    col = mlc.compile(lambda x: x.sum(axis=0), x)     # contiguous along the output: register tiles
    row = mlc.compile(lambda x: x.sum(axis=1), x)     # contiguous along the reduction: vector partial sums
    assert "alloc acc: f32[16] local" in col.ir("loop")          # one row of 2 vectors
    assert "alloc vacc: f32[1,8] local" in row.ir("loop")        # one partial per lane
    np.testing.assert_allclose(col(x), x.sum(axis=0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(row(x), x.sum(axis=1), rtol=1e-4, atol=1e-4)


def test_elementwise_is_vectorized_and_parallel_when_large():
    big, small = rand((256, 300)), rand((4, 9))
    big_loops = mlc.compile(lambda x: x * 2.0, big).ir("loop")
    small_loops = mlc.compile(lambda x: x * 2.0, small).ir("loop")
    assert "parallel i in [0, 256)" in big_loops and "vector jv in [0, 8)" in big_loops
    assert "vector jv in [0, 4)" in big_loops                       # the peeled tail, 4 lanes wide
    assert "parallel" not in small_loops
