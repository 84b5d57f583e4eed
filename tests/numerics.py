"""The one way the op tests compare a result with its reference."""
from __future__ import annotations

import numpy as np


def assert_matches(got, want, tol: dict, equal_nan: bool = False) -> None:
    """``got`` has ``want``'s dtype and shape; floats agree within ``tol[dtype]`` =
    (rtol, atol), compared in float64; other dtypes agree exactly."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.dtype == want.dtype, f"dtype {got.dtype}, expected {want.dtype}"
    assert got.shape == want.shape, f"shape {got.shape}, expected {want.shape}"
    if want.dtype.kind == "f":
        rtol, atol = tol[want.dtype]
        np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), rtol=rtol, atol=atol,
                                   equal_nan=equal_nan)
    else:
        np.testing.assert_array_equal(got, want)
