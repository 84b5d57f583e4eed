"""The random-program fuzzer's CI slice (fixed seeds, bounds-checked code at -O0 and
-O2 against numpy), its self-checks, and the bugs it found, pinned down one by one."""
import re

import numpy as np
import pytest

import mlc
from fuzz import ci_slice, programs


def test_ci_slice():
    ci_slice("programs")


def test_replay_is_deterministic_and_covers_the_op_families():
    a, b = programs.generate(123), programs.generate(123)
    assert programs.describe(a) == programs.describe(b)
    texts = " ".join(s.text for seed in range(200) for s in programs.generate(seed).steps if s is not None)
    for family in ("sum", "mean", "max", "min", "prod", "keepdims=True", "axis=None", "axis=()", "matmul",
                   "reshape", "transpose", "expand_dims", "squeeze", "slice begin=", "concatenate", "softmax",
                   "log_softmax", "astype int32", "astype float32", "where", "exp", "div", "pad", "edge", "reflect",
                   "tile", "broadcast_to", "cumsum", "clip", "argmax", "argmin", "gather"):
        assert family in texts, family
    assert re.search(r"slice\([^)]*, -\d\)", texts)                        # negative steps
    assert re.search(r"slice\((-\d+|\d\d+|\d), ", texts)                 # begin out of range (sometimes)
    shapes = [v.shape for seed in range(200) for v in programs.generate(seed).inputs]
    assert any(0 in s for s in shapes) and any(len(s) == 0 for s in shapes)
    assert any(np.prod(s) > 4096 for s in shapes)   # reductions as trees of blocks
    dtypes = {v.dtype.name for seed in range(200) for v in programs.generate(seed).vals}
    assert {"float32", "float64", "int32", "int64", "int8", "uint8", "bool"} <= dtypes


def test_a_wrong_result_is_reported_with_its_seed():
    """The comparison is not vacuous: a program whose compiled result is perturbed fails,
    and the failure names the seed that replays it."""
    p = programs.generate(5)
    step = next(s for s in p.steps if s is not None)
    real = step.np_fn
    step.np_fn = lambda *xs: np.asarray(real(*xs)) + 1
    problems = programs.check([p], opt_levels=(0,))
    assert problems and "elements differ" in problems[0]


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32])
@pytest.mark.parametrize("opt_level", [0, 2])
def test_matmul_of_a_vector_with_itself(dtype, opt_level):
    """x @ x for a 1-D x read x[0] as the right operand (the two sides were told apart
    by identity)."""
    x = np.arange(1, 8).astype(dtype)
    got = mlc.compile(lambda x: x @ x, x, opt_level=opt_level)(x)
    assert got == x @ x == 140
    m = np.arange(12).reshape(3, 4).astype(dtype)
    np.testing.assert_array_equal(mlc.compile(lambda m: m @ m.T, m, opt_level=opt_level)(m), m @ m.T)


@pytest.mark.parametrize("opt_level", [0, 2])
def test_abs_of_unsigned_is_the_identity(opt_level):
    """abs of uint8 went through llvm.abs, which reads its operand as signed: 255 -> 1."""
    a = np.array([0, 1, 127, 128, 200, 255], np.uint8)
    np.testing.assert_array_equal(mlc.compile(lambda a: abs(a), a, opt_level=opt_level)(a), a)
    np.testing.assert_array_equal(mlc.compile(lambda a: mlc.abs(a) + a, a, opt_level=opt_level)(a), a + a)
