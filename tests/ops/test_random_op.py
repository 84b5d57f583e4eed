"""random_uniform: a pure function of (seed, stream, index), the same compiled and in numpy."""
import numpy as np

import mlc


def test_compiled_matches_reference_and_is_uniform():
    seed = np.array(42, np.int64)
    ref = mlc.random_uniform(seed, shape=(64, 7, 9), stream=3)
    got = mlc.jit(lambda s: mlc.random_uniform(s, shape=(64, 7, 9), stream=3))(seed)
    np.testing.assert_array_equal(got, ref)
    assert got.dtype == np.float32 and 0.0 <= got.min() and got.max() < 1.0
    assert abs(got.mean() - 0.5) < 0.01 and abs(got.var() - 1 / 12) < 0.005
    hist = np.histogram(got, bins=10, range=(0, 1))[0]
    assert hist.min() > 0.9 * got.size / 10


def test_seed_and_stream_change_the_numbers():
    a = mlc.random_uniform(np.array(1, np.int64), shape=(100,))
    b = mlc.random_uniform(np.array(2, np.int64), shape=(100,))
    c = mlc.random_uniform(np.array(1, np.int64), shape=(100,), stream=1)
    assert not np.array_equal(a, b) and not np.array_equal(a, c)
    assert abs(np.corrcoef(a, b)[0, 1]) < 0.3
    np.testing.assert_array_equal(a, mlc.random_uniform(np.array(1, np.int64), shape=(100,)))


def test_seed_must_be_int64_scalar():
    import pytest
    with pytest.raises(mlc.TraceError, match="int64 scalar"):
        mlc.trace(lambda s: mlc.random_uniform(s, shape=(3,)), np.zeros(2, np.int64))
