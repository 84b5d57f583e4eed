"""Structured control flow: mlc.scan, mlc.while_loop, mlc.cond -- traced, printed and
parsed back, compiled as loops (checked against the reference interpreter and plain
Python loops), differentiated (against finite differences), and refused clearly
when misused."""
from __future__ import annotations

import ctypes
import re

import numpy as np
import pytest

import mlc
from mlc import ops
from mlc.ir.graph import parse_graph
from mlc.ir.text import VerificationError
from gradcheck import check_grads

rng = np.random.default_rng(0)
F32 = np.float32


def rand(*shape, dtype=F32):
    return rng.standard_normal(shape).astype(dtype)


def rnn(w, u, h0, xs):
    def step(h, x):
        h = mlc.tanh(x @ w + h @ u)
        return h, h * 2.0
    return mlc.scan(step, h0, xs)


def rnn_numpy(w, u, h0, xs, reverse=False):
    h, ys = h0, [None] * len(xs)
    for t in (reversed(range(len(xs))) if reverse else range(len(xs))):
        h = np.tanh(xs[t] @ w + h @ u)
        ys[t] = h * 2
    return h, np.stack(ys) if ys else np.zeros((0,) + h0.shape, h0.dtype)


# ----------------------------------------------------------------------------- the IR

def test_scan_is_one_node_whose_body_prints_nested_and_parses_back():
    w, u, h0, xs = rand(4, 4), rand(4, 4), rand(2, 4), rand(5, 2, 4)
    g = mlc.trace(rnn, w, u, h0, xs)
    assert [n.op for n in g.nodes] == ["scan"]
    text = str(g)
    assert "scan(%h0, %xs, %w, %u) {num_carry=1, num_xs=1, length=5, reverse=false, body=graph @step(" in text
    assert "tanh" in text and text.count("return") == 2
    again = parse_graph(text)
    assert str(again) == text
    ops.verify(again)
    h, ys = ops.run_reference(again, w, u, h0, xs)
    want_h, want_ys = rnn_numpy(w, u, h0, xs)
    np.testing.assert_allclose(h, want_h, rtol=1e-5)
    np.testing.assert_allclose(ys, want_ys, rtol=1e-5)


def test_the_verifier_checks_bodies_and_their_signatures():
    g = mlc.trace(rnn, rand(4, 4), rand(4, 4), rand(2, 4), rand(5, 2, 4))
    bad = str(g).replace("%c: f32[2,4]", "%c: f32[2,5]", 1)
    with pytest.raises(VerificationError, match=r"scan: body @step takes \(f32\[2,5\]"):
        ops.verify(parse_graph(bad))
    # a broken node inside a body is reported with the body it is in
    inner = str(g).replace("= tanh(%", "= exp(%", 1).replace(") : f32[2,4]\n      %", ") : f32[2,3]\n      %", 1)
    with pytest.raises(VerificationError, match=r"its body @step"):
        ops.verify(parse_graph(inner))


def test_while_and_cond_print_and_parse_back():
    def f(x, n):
        s = mlc.while_loop(lambda s: s[1] < n, lambda s: (s[0] * 0.5, s[1] + 1), (x, np.int64(0)))
        return mlc.cond(s[1] > 2, lambda a: a + 1.0, lambda a: a - x, s[0])
    g = mlc.trace(f, rand(3), np.int64(4))
    text = str(g)
    assert "while_loop(" in text and "cond=graph @" in text and "true_body=graph @" in text
    assert str(parse_graph(text)) == text
    ops.verify(parse_graph(text))


# ----------------------------------------------------------------------------- compiled against numpy

@pytest.mark.parametrize("length", [0, 1, 7])
@pytest.mark.parametrize("reverse", [False, True])
def test_compiled_scan_matches_a_python_loop(length, reverse):
    w, u, h0, xs = rand(4, 4), rand(4, 4), rand(3, 4), rand(length, 3, 4)

    def f(w, u, h0, xs):
        def step(h, x):
            h = mlc.tanh(x @ w + h @ u)
            return h, h * 2.0
        return mlc.scan(step, h0, xs, reverse=reverse)
    h, ys = mlc.jit(f)(w, u, h0, xs)
    want_h, want_ys = rnn_numpy(w, u, h0, xs, reverse)
    np.testing.assert_allclose(h, want_h, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ys, want_ys, rtol=1e-5, atol=1e-6)
    assert ys.shape == (length, 3, 4)


def test_scan_with_pytree_carries_no_xs_and_integer_state():
    def f(a):
        def step(c, _):
            fib, k = c["fib"], c["k"]
            return {"fib": (fib[1], fib[0] + fib[1]), "k": k + 1}, fib[0] * a
        return mlc.scan(step, {"fib": (np.float64(0.0), np.float64(1.0)), "k": np.int32(0)}, None, length=10)
    c, ys = mlc.jit(f)(np.float64(2.0))
    fibs = [0, 1, 1, 2, 3, 5, 8, 13, 21, 34, 55]
    assert c["k"] == 10 and c["k"].dtype == np.int32
    assert (float(c["fib"][0]), float(c["fib"][1])) == (55.0, 89.0)
    np.testing.assert_array_equal(ys, 2.0 * np.array(fibs[:10]))


def test_nested_scans_capture_outer_values():
    xs, w = rand(4, 5, 3), rand(3)

    def f(xs, w):
        def outer(c, row):
            def inner(ci, v):
                return ci + v * w, ci
            ci, ys = mlc.scan(inner, c, row, reverse=True)
            return ci * 0.5, ys.sum()
        return mlc.scan(outer, np.zeros(3, F32), xs)
    got = mlc.jit(f)(xs, w)
    c, sums = np.zeros(3, F32), []
    for row in xs:
        ys = []
        for v in row[::-1]:
            ys.append(c)
            c = c + v * w
        sums.append(np.sum(ys))
        c = c * 0.5
    np.testing.assert_allclose(got[0], c, rtol=1e-5)
    np.testing.assert_allclose(got[1], sums, rtol=1e-5)


def test_compiled_while_loop_runs_a_data_dependent_number_of_steps():
    def doublings(n):   # how many steps of c -> 2c + 1 from 0 until c >= n
        def body(s):
            c, steps = s
            return c * 2 + 1, steps + 1
        return mlc.while_loop(lambda s: s[0] < n, body, (np.int64(0), np.int64(0)))
    f = mlc.jit(doublings)
    for n, want in [(0, 0), (1, 1), (6, 3), (1000, 10)]:
        c, steps = f(np.int64(n))
        assert int(steps) == want and int(c) == 2 ** want - 1


def test_compiled_cond_runs_one_branch_by_the_predicate():
    def f(p, x, y):
        return mlc.cond(p, lambda a: (a * 2.0, a.sum()), lambda a: (a - y, (a * y).sum()), x)
    x, y = rand(5), rand(5)
    jf = mlc.jit(f)
    for p in (np.int32(3), np.int32(0)):
        got = jf(p, x, y)
        want = (x * 2, x.sum()) if p else (x - y, (x * y).sum())
        np.testing.assert_allclose(got[0], want[0], rtol=1e-6)
        np.testing.assert_allclose(got[1], want[1], rtol=1e-5)
    assert mlc.cond(True, lambda a: a + 1, lambda a: a, 1.0) == 2.0   # a Python bool picks now


def test_the_loop_stays_a_loop_in_the_compiled_code():
    """The body's kernels are generated once whatever the trip count: the code does not
    grow with the length."""
    def loop_text(length):
        exe = mlc.compile(rnn, rand(4, 4), rand(4, 4), rand(2, 4), rand(length, 2, 4))
        return exe.ir("loop"), exe.ir("llvm")
    loops10, llvm10 = loop_text(10)
    loops1000, llvm1000 = loop_text(1000)
    assert loops10 == loops1000
    assert len(re.findall(r"^define", llvm10, re.M)) == len(re.findall(r"^define", llvm1000, re.M))
    assert abs(len(llvm10) - len(llvm1000)) < 64   # only the trip count and strides differ
    assert "icmp slt i64 %\"scan_0.step\", 1000" in llvm1000


def test_memory_plan_places_carries_and_bodies_in_the_workspace():
    exe = mlc.compile(rnn, rand(4, 4), rand(4, 4), rand(2, 4), rand(6, 2, 4))
    plan = str(exe.plan) if hasattr(exe, "plan") else str(exe._compiled.plan)
    assert re.search(r"scan @scan_0\(input\[2\], input\[3\], input\[0\], input\[1\]\) -> "
                     r"\(output\[0\], output\[1\]\) \{num_carry=1, num_xs=1, length=6, reverse=False; carries at "
                     r"ws\+\d+, ws\+\d+; bodies at ws\+\d+\}", plan), plan
    assert "frame @scan_0_body: 4 inputs, 2 outputs" in plan


# ----------------------------------------------------------------------------- gradients

def test_scan_gradient_matches_finite_differences():
    w, u, h0, xs = (rng.standard_normal(s) * 0.5 for s in [(3, 3), (3, 3), (2, 3), (4, 2, 3)])
    check_grads(rnn, [w, u, h0, xs], compiled=True)


def test_scan_gradient_with_reverse_integer_carry_and_unused_output():
    def f(w, xs):
        def step(c, x):
            h, k = c
            return (mlc.sin(h * w + x), k + 1), mlc.cast(k, mlc.float64) * h
        (h, k), ys = mlc.scan(step, (np.zeros(3), np.int64(0)), xs, reverse=True)
        return h * 2.0
    check_grads(f, [rng.standard_normal(3), rng.standard_normal((5, 3))], compiled=True)


def test_cond_gradient_follows_the_branch_taken():
    def f(p, x, w):
        return mlc.cond(p > 0, lambda a: mlc.exp(a * w), lambda a: a * a + w, x)
    for p in (1.0, -1.0):
        check_grads(f, [np.float64(p), rng.standard_normal(4), rng.standard_normal(4)], wrt=[1, 2], compiled=True)


def test_while_loop_refuses_reverse_mode_with_a_way_out():
    def f(x):
        return mlc.while_loop(lambda c: c.sum() < 10.0, lambda c: c * 2.0, x).sum()
    with pytest.raises(mlc.TraceError, match=r"while_loop has no reverse-mode gradient .* mlc\.scan"):
        mlc.grad(f)(np.ones(3))


# ----------------------------------------------------------------------------- errors at the user's line

def test_errors_name_the_problem_and_the_users_line():
    h0, xs = rand(2, 4), rand(5, 2, 4)
    with pytest.raises(mlc.TraceError, match=r"returns a carry of type \(f32\[2,3\]\) where the initial carry "
                                              r"is \(f32\[2,4\]\) \(at .*test_control\.py:\d+\)"):
        mlc.trace(lambda h0, xs: mlc.scan(lambda h, x: (h[:, :3], x), h0, xs), h0, xs)
    with pytest.raises(mlc.TraceError, match=r"must return a pair \(carry, y\)"):
        mlc.trace(lambda h0, xs: mlc.scan(lambda h, x: h, h0, xs), h0, xs)
    with pytest.raises(mlc.TraceError, match=r"leading axes \[3, 5\]"):
        mlc.trace(lambda h0, xs: mlc.scan(lambda h, x: (h, x), h0, (xs, xs[:3])), h0, xs)
    with pytest.raises(mlc.TraceError, match=r"with no xs, give the number of steps as length="):
        mlc.scan(lambda h, x: (h, h), h0, None)
    with pytest.raises(mlc.TraceError, match=r"must return a bool scalar"):
        mlc.trace(lambda x: mlc.while_loop(lambda c: c, lambda c: c, x), rand(3))
    with pytest.raises(mlc.TraceError, match=r"the branches return different types"):
        mlc.trace(lambda p, x: mlc.cond(p, lambda a: a, lambda a: a.sum(), x), np.bool_(True), rand(3))
    with pytest.raises(mlc.TraceError, match=r"a Python scalar \(1\.0\) has no dtype of its own"):
        mlc.scan(lambda c, x: (c, x), 1.0, xs)


def test_eager_calls_run_the_reference():
    h, ys = rnn(*[rand(4, 4), rand(4, 4)], rand(2, 4), np.zeros((0, 2, 4), F32))
    assert ys.shape == (0, 2, 4) and h.shape == (2, 4)
    assert mlc.while_loop(lambda c: c < 100, lambda c: c * 3, np.int64(1)) == 243


# ----------------------------------------------------------------------------- a model library

def test_a_model_library_with_a_loop_runs_from_c(tmp_path):
    w, u, h0, xs = rand(4, 4), rand(4, 4), rand(2, 4), rand(9, 2, 4)
    exe = mlc.compile(rnn, w, u, h0, xs)
    path = exe.export(tmp_path / "rnn.so").library
    lib = mlc.load(path)
    h, ys = lib(w, u, h0, xs)
    want_h, want_ys = rnn_numpy(w, u, h0, xs)
    np.testing.assert_allclose(h, want_h, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ys, want_ys, rtol=1e-5, atol=1e-6)
    assert ctypes.CDLL(str(path))   # a plain shared library


def test_cse_runs_the_forward_loop_once_when_a_gradient_saves_its_carries():
    """The gradient re-runs the forward scan saving each step's carry; CSE makes that
    scan the only forward one, at the first one's place."""
    from mlc.passes.simplify import eliminate_common_subexpressions

    def loss(w, xs, h0):
        h, ys = rnn(w, w, h0, xs)
        return (h * h).sum() + ys.sum()
    g = mlc.trace(mlc.grad(loss), rand(4, 4), rand(3, 2, 4), rand(2, 4))
    before = [n for n in g.nodes if n.op == "scan"]
    # forward; forward saving carries; backward: (dh, dw) carried, dxs stacked
    assert [len(n.outputs) for n in before] == [2, 3, 3]
    after = eliminate_common_subexpressions(g)
    scans = [n for n in after.nodes if n.op == "scan"]
    assert [len(n.outputs) for n in scans] == [3, 3] and scans[1].attrs["reverse"] is True
    assert scans[0].attrs["body"].name == "step_saved"
    ops.verify(after)
    args = [rand(4, 4).astype(np.float64), rand(3, 2, 4).astype(np.float64), rand(2, 4).astype(np.float64)]
    g64 = mlc.trace(mlc.grad(loss), *args)
    np.testing.assert_allclose(ops.run_reference(eliminate_common_subexpressions(g64), *args)[0],
                               ops.run_reference(g64, *args)[0], rtol=1e-12)


def test_loop_invariant_work_moves_before_the_loop():
    """A body's transpose of a weight it reads from outside runs once, before the loop,
    and the loop gets its result as another operand; the numbers stay."""
    from mlc.passes.simplify import hoist_loop_invariants

    def f(w, h0, xs):
        return mlc.scan(lambda h, x: (mlc.tanh(x + h @ w.T * 2.0), h), h0, xs)
    args = [rand(4, 4), rand(2, 4), rand(5, 2, 4)]
    g = mlc.trace(f, *args)
    body_ops = [n.op for n in g.nodes[0].attrs["body"].nodes]
    assert "transpose" in body_ops
    after = hoist_loop_invariants(g)
    ops.verify(after)
    assert [n.op for n in after.nodes] == ["transpose", "scan"]
    scan = after.nodes[1]
    assert scan.inputs[-1] is after.nodes[0].output   # the transposed weight, a new trailing operand
    assert "transpose" not in [n.op for n in scan.attrs["body"].nodes]
    for a, b in zip(ops.run_reference(after, *args), ops.run_reference(g, *args)):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    # a while_loop's condition and body share the new operands
    def w_loop(x, lim):
        return mlc.while_loop(lambda c: c.sum() < (lim * 2.0).sum(), lambda c: c + mlc.exp(lim), x)
    g = mlc.trace(w_loop, np.ones(3, F32), np.full(3, 2.0, F32))
    after = hoist_loop_invariants(g)
    ops.verify(after)
    node = after.nodes[-1]
    # the carry, lim (captured by each of cond and body), then the hoisted sum (cond) and exp (body)
    assert node.op == "while_loop" and len(node.inputs) == 1 + 2 + 2
    np.testing.assert_allclose(ops.run_reference(after, np.ones(3, F32), np.full(3, 2.0, F32))[0],
                               ops.run_reference(g, np.ones(3, F32), np.full(3, 2.0, F32))[0])


def test_gpu_schedules_of_loop_bodies_run_in_emulation_and_ptx_refuses_clearly(monkeypatch):
    """A cuda compile schedules the bodies' kernels with the GPU rules; under
    MLC_CUDA_EMULATE=1 they run (the loop in the CPU entry) and match numpy, while asking
    for GPU code names what is missing."""
    monkeypatch.setenv("MLC_CUDA_EMULATE", "1")
    w, u, h0, xs = rand(4, 4), rand(4, 4), rand(2, 4), rand(6, 2, 4)
    exe = mlc.compile(rnn, w, u, h0, xs, target="cuda-sm90")
    assert "blockIdx" in exe.ir("loop")   # the bodies' kernels have GPU schedules
    h, ys = exe(w, u, h0, xs)
    want_h, want_ys = rnn_numpy(w, u, h0, xs)
    np.testing.assert_allclose(h, want_h, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ys, want_ys, rtol=1e-5, atol=1e-6)
    with pytest.raises(NotImplementedError, match=r"scan \(kernel scan_0\) has no GPU code yet.*"
                                                  r"compile this model for a cpu target"):
        exe.ir("ptx")
