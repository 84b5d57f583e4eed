"""The gradient fuzzer's CI slice (random float64 programs: mlc.grad and
mlc.value_and_grad against finite differences, the compiled gradient against the
reference interpreter) and its self-checks."""
import numpy as np

import mlc
from fuzz import ci_slice, gradients


def test_ci_slice():
    result = ci_slice("gradients")
    assert result.notes["rejected"] < result.cases // 4


def _program_with_inputs():
    """The first program whose gradient is not all zeros (some have empty outputs)."""
    for seed in range(100):
        p = gradients.generate(seed)
        x = gradients.prepare(p)
        if x is None:
            continue
        f = gradients.objective(p, x)
        value, grads = mlc.value_and_grad(f, argnums=tuple(range(len(x))))(*x)
        if all(np.any(g != 0) for g in grads):
            return p, x, float(value), list(grads)


def test_finite_differences_catch_a_wrong_gradient():
    p, x, value, grads = _program_with_inputs()
    assert gradients.finite_differences(p, x, grads, value) == []
    wrong = [g * 1.01 for g in grads]
    assert any("along a random direction" in m for m in gradients.finite_differences(p, x, wrong, value))
    assert any("value" in m for m in gradients.finite_differences(p, x, grads, value + 1e-3))


def test_inputs_near_a_kink_are_redrawn():
    """relu at 0 and max ties are never differentiated: the margin check sees them."""
    p = gradients.GradProgram(0)
    a = p.input((4,), np.float64)
    p.step([a], (4,), 2, lambda t: mlc.relu(t), "relu", margin=lambda t: gradients._min_abs(t))
    p.outputs = [p.vals[-1]]
    assert gradients.closest_kink(p, [np.array([1.0, -2.0, 0.0, 3.0])]) == 0.0
    assert gradients.closest_kink(p, [np.array([1.0, -2.0, 0.5, 3.0])]) == 0.5
    assert gradients._top_gap(np.array([[1.0, 3.0, 3.0], [0.0, 1.0, 2.0]]), 1) == 0.0
    assert gradients._top_gap(np.array([[1.0, 3.0, 2.5], [0.0, 1.0, 2.0]]), (1,)) == 0.5
