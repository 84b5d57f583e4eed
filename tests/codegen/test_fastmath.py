"""The inline float32 exp and tanh, through the whole compiler, against float64
numpy rounded to float32, on a sweep of float32 bit patterns plus special values."""
import numpy as np
import pytest

import mlc

SPECIALS = np.array([np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, 88.72, 88.73, -87.33, -103.9, -104.5,
                     0.625, -0.625, 0.62499994, 9.0, -9.0, 1e-30, -1e-30, 1e-45], dtype=np.float32)


def sweep() -> np.ndarray:
    bits = np.arange(0, 2 ** 32, 9973, dtype=np.uint64).astype(np.uint32)
    return np.concatenate([bits.view(np.float32), SPECIALS])


def ulp_distance(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    """Distance in units in the last place, on the monotone integer image of floats."""
    def key(a):
        i = a.view(np.int32).astype(np.int64)
        return np.where(i < 0, -(i & 0x7FFFFFFF), i)
    d = np.abs(key(got) - key(want))
    return np.where(np.isnan(got) & np.isnan(want), 0, d)


@pytest.mark.parametrize("name,ref", [("exp", np.exp), ("tanh", np.tanh)])
def test_within_one_ulp_over_the_float32_range(name, ref):
    x = sweep()
    exe = mlc.compile(lambda x: getattr(mlc, name)(x), x)
    with np.errstate(all="ignore"):
        want = ref(x.astype(np.float64)).astype(np.float32)
    got = exe(x)
    d = ulp_distance(got, want)
    assert d.max() <= 1, (x[d.argmax()], got[d.argmax()], want[d.argmax()])
    # signs of zero and the NaNs survive
    np.testing.assert_array_equal(np.signbit(got[x == 0]), np.signbit(want[x == 0]))
    assert np.isnan(got[np.isnan(x)]).all()
