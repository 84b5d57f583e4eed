"""Property tests on random graphs: compiled code agrees with the reference
interpreter, and the printer/parser round-trip every generated graph.

A generated program is a list of instructions over a pool of values: elementwise
unary ops, broadcasting binary ops, ``where`` and reductions over random axes,
on random shapes (rank 0-3) in float32 or float64. The same instructions are turned
into a graph either directly (GraphBuilder + the registry's type rules) or by
tracing a Python function that performs them with mlc's operators and functions.

Inputs are bounded and each value carries a bound on its magnitude, so every op
stays finite: ``exp`` only sees small arguments, ``div`` only denominators of the
form ``|y| + 1``. Each value also carries an error scale (how large the values
that fed it were, times the op's sensitivity) that sets the absolute tolerance.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import mlc
from mlc.passes.manager import PASSES
from mlc import ops
from mlc.ir.graph import GraphBuilder, parse_graph, print_graph

INPUT_BOUND = 2.0
TOL = {np.float32: (1e-4, 1e-5), np.float64: (1e-10, 1e-12)}   # (rtol, atol per unit of error scale)

UNARY = ["exp", "tanh", "sigmoid", "relu", "neg", "abs", "sin", "cos"]
BINARY = ["add", "sub", "mul", "maximum", "minimum", "div"]
REDUCE = ["sum", "mean", "max", "min"]

# Ops may read one value twice (``mul(%0, %0)``): the memory planner once released such
# a value's workspace twice (test_value_read_twice_by_one_call pins that down).
REPEATED_OPERANDS_COMPILE = True

SETTINGS = dict(deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@dataclass
class Val:
    ref: int            # index into the program's value list
    shape: tuple
    bound: float        # |value| <= bound
    scale: float        # the absolute error may grow like eps * scale
    exact: bool         # computed without rounding differences between numpy and compiled code


# ----------------------------------------------------------------------------- shapes

def dims():
    return st.one_of(st.integers(1, 9), st.integers(1, 9), st.integers(1, 9), st.sampled_from([17, 33]))


def shapes(max_rank=3):
    return st.integers(0, max_rank).flatmap(lambda r: st.tuples(*[dims()] * r))


@st.composite
def partner_shape(draw, shape):
    """A shape that broadcasts with ``shape`` (either may be the bigger one)."""
    out = []
    for n in shape:
        if n == 1:
            out.append(draw(st.one_of(st.just(1), dims())))
        else:
            out.append(draw(st.sampled_from([n, n, 1])))
    # numpy aligns shapes from the right: drop leading axes or add new ones (rank stays <= 3)
    if draw(st.booleans()):
        out = out[draw(st.integers(0, len(out))):]
    else:
        while len(out) < 3 and draw(st.integers(0, 2)) == 0:
            out.insert(0, draw(dims()))
    return tuple(out)


def broadcasts(a, b) -> bool:
    try:
        np.broadcast_shapes(a, b)
        return True
    except ValueError:
        return False


# ----------------------------------------------------------------------------- program generation

class Program:
    """Instructions over numbered values; inputs are numbered too (kind "input")."""

    def __init__(self, dtype):
        self.dtype = dtype
        self.instrs: list[tuple] = []
        self.vals: list[Val] = []

    def add(self, instr, shape, bound, scale, exact) -> Val:
        v = Val(len(self.vals), tuple(shape), bound, max(scale, bound), exact)
        self.instrs.append(instr)
        self.vals.append(v)
        return v

    def input(self, shape) -> Val:
        return self.add(("input", tuple(shape)), shape, INPUT_BOUND, INPUT_BOUND, True)

    def inputs(self):
        return [v for v, ins in zip(self.vals, self.instrs) if ins[0] == "input"]


def operands(ins) -> list[int]:
    k = ins[0]
    if k == "input":
        return []
    if k == "where":
        return [r for r in ins[2:] if r is not None]
    return list(ins[2:3] if k in ("unary", "reduce") else ins[2:4])


def _reduced(shape, axes, keepdims):
    return tuple(1 if d in axes else n for d, n in enumerate(shape)) if keepdims else \
        tuple(n for d, n in enumerate(shape) if d not in axes)


@st.composite
def programs(draw, dtype, max_steps=8, repeated_operands=True):
    p = Program(dtype)
    p.input(draw(shapes()))
    if draw(st.booleans()):
        p.input(draw(partner_shape(p.vals[0].shape)))

    def pick(pred=lambda v: True):
        """A pool value, often the newest, so that the graphs grow deep rather than wide."""
        cands = [v for v in p.vals if pred(v)]
        if not cands:
            return None
        return cands[-1] if draw(st.booleans()) else cands[draw(st.integers(0, len(cands) - 1))]

    def differs(a):
        return (lambda v: True) if repeated_operands else (lambda v: v.ref != a.ref)

    def partner(a, pred=lambda v: True):
        """A pool value that broadcasts with a, or a new input that does."""
        b = pick(lambda v: broadcasts(v.shape, a.shape) and pred(v)) if draw(st.integers(0, 2)) else None
        return b if b is not None else p.input(draw(partner_shape(a.shape)))

    for _ in range(draw(st.integers(1, max_steps))):
        kind = draw(st.sampled_from(["unary", "binary", "unary", "binary", "where", "reduce", "unary", "binary",
                                     "reduce"]))
        if kind == "unary":
            a = pick()
            op = draw(st.sampled_from(UNARY))
            if op == "exp" and a.bound > 4:
                op = "tanh"
            if op in ("sin", "cos") and a.bound > 1e3:
                op = "sigmoid"
            if op == "exp":   # only here: a.bound <= 4
                bound, scale = math.exp(a.bound), math.exp(a.bound) * (a.scale + 1)
            else:
                bound, scale = (1.0, a.scale) if op in ("tanh", "sigmoid", "sin", "cos") else (a.bound, a.scale)
            p.add(("unary", op, a.ref), a.shape, bound, scale, a.exact and op in ("relu", "neg", "abs"))
        elif kind == "binary":
            a = pick()
            b = partner(a, differs(a))
            if draw(st.booleans()):
                a, b = b, a
            op = draw(st.sampled_from(BINARY))
            if op == "mul" and a.bound * b.bound > 1e4:
                op = "add"
            shape = np.broadcast_shapes(a.shape, b.shape)
            if op in ("add", "sub"):
                bound, scale, exact = a.bound + b.bound, a.scale + b.scale, a.exact and b.exact
            elif op == "mul":
                bound, scale, exact = a.bound * b.bound, a.scale * b.bound + b.scale * a.bound, False
            elif op in ("maximum", "minimum"):
                bound, scale, exact = max(a.bound, b.bound), max(a.scale, b.scale), a.exact and b.exact
            else:   # a / (|b| + 1): the denominator is at least 1
                bound, scale, exact = a.bound, a.scale + a.bound * (b.scale + b.bound + 1), False
            p.add(("binary", op, a.ref, b.ref), shape, bound, scale, exact)
        elif kind == "where":
            # the condition compares exactly computed values, so it cannot flip between
            # numpy and compiled code; the branches may be anything
            c1 = pick(lambda v: v.exact)
            c2 = pick(lambda v: v.exact and broadcasts(v.shape, c1.shape) and differs(c1)(v)) \
                if draw(st.booleans()) else None
            cmp = draw(st.sampled_from(["greater", "less"]))
            cshape = np.broadcast_shapes(c1.shape, c2.shape) if c2 is not None else c1.shape
            x = pick(lambda v: broadcasts(v.shape, cshape))
            y = pick(lambda v: broadcasts(v.shape, np.broadcast_shapes(cshape, x.shape)) and differs(x)(v))
            if y is None:
                y = p.input(draw(partner_shape(np.broadcast_shapes(cshape, x.shape))))
            shape = np.broadcast_shapes(cshape, x.shape, y.shape)
            p.add(("where", cmp, c1.ref, c2.ref if c2 is not None else None, x.ref, y.ref), shape,
                  max(x.bound, y.bound), max(x.scale, y.scale), x.exact and y.exact)
        else:
            a = pick()
            op = draw(st.sampled_from(REDUCE))
            rank = len(a.shape)
            style = draw(st.sampled_from(["int", "tuple", "int", "tuple", "none", "empty"]))
            if style == "none" or rank == 0:
                axis, axes = None, tuple(range(rank))
            elif style == "int":
                d = draw(st.integers(-rank, rank - 1))
                axis, axes = d, (d % rank,)
            elif style == "empty":
                axis, axes = (), ()
            else:
                chosen = draw(st.lists(st.integers(0, rank - 1), min_size=1, max_size=rank, unique=True))
                axis = tuple(d - rank if draw(st.booleans()) else d for d in chosen)
                axes = tuple(sorted(chosen))
            keepdims = draw(st.booleans())
            n = int(np.prod([a.shape[d] for d in axes], dtype=np.int64))
            if op == "sum":
                bound, scale = a.bound * n, a.scale * n
            else:
                bound, scale = a.bound, a.scale
            p.add(("reduce", op, a.ref, axis, keepdims), _reduced(a.shape, axes, keepdims), bound, scale,
                  a.exact and (op in ("max", "min") or n == 1))
    # outputs: every computed value nothing else uses (so no node is dead), sometimes
    # also an input or a repeat
    used = {r for ins in p.instrs for r in operands(ins)}
    outs = [v for v, ins in zip(p.vals, p.instrs) if ins[0] != "input" and v.ref not in used]
    if draw(st.integers(0, 5)) == 0:
        outs.append(p.vals[0])
    if draw(st.integers(0, 5)) == 0:
        outs.append(outs[0])
    return p, outs


# ----------------------------------------------------------------------------- graph construction

def build_graph(p: Program, outs, name="rand"):
    """GraphBuilder + the registry's type rules."""
    b = GraphBuilder(name, ops.infer)
    env = {}
    one = None

    def canon_node(op, ins, attrs):
        attrs = ops.get(op).canonical_attrs([v.type for v in ins], attrs)
        return b.node(op, ins, attrs)[0]

    for i, ins in enumerate(p.instrs):
        k = ins[0]
        if k == "input":
            env[i] = b.input(f"x{i}", mlc.TensorType(ins[1], p.dtype))
        elif k == "unary":
            env[i] = canon_node(ins[1], [env[ins[2]]], {})
        elif k == "binary":
            op, a, bb = ins[1], env[ins[2]], env[ins[3]]
            if op == "div":
                if one is None:
                    one = b.constant(np.array(1.0, p.dtype))
                den = canon_node("add", [canon_node("abs", [bb], {}), one], {})
                env[i] = canon_node("div", [a, den], {})
            else:
                env[i] = canon_node(op, [a, bb], {})
        elif k == "where":
            cmp, c1, c2, x, y = ins[1:]
            rhs = env[c2] if c2 is not None else b.constant(np.array(0.25, p.dtype))
            cond = canon_node(cmp, [env[c1], rhs], {})
            env[i] = canon_node("where", [cond, env[x], env[y]], {})
        else:
            op, a, axis, keepdims = ins[1:]
            env[i] = canon_node(op, [env[a]], {"axis": axis, "keepdims": keepdims})
    return b.build([env[v.ref] for v in outs])


def trace_graph(p: Program, outs, name="rand_traced"):
    """The same program as a Python function, traced: operators, mlc functions and
    numpy ufuncs on tracers, Python scalars as constants."""
    n_in = len(p.inputs())

    def fn(*xs):
        it = iter(xs)
        env = {}
        for i, ins in enumerate(p.instrs):
            k = ins[0]
            if k == "input":
                env[i] = next(it)
            elif k == "unary":
                op, a = ins[1], env[ins[2]]
                env[i] = {"neg": lambda: -a, "abs": lambda: abs(a), "exp": lambda: np.exp(a),
                          "tanh": lambda: mlc.tanh(a), "sin": lambda: np.sin(a),
                          }.get(op, lambda: getattr(mlc, op)(a))()
            elif k == "binary":
                op, a, b = ins[1], env[ins[2]], env[ins[3]]
                env[i] = {"add": lambda: a + b, "sub": lambda: a - b, "mul": lambda: a * b,
                          "div": lambda: a / (abs(b) + 1.0), "maximum": lambda: np.maximum(a, b),
                          "minimum": lambda: mlc.minimum(a, b)}[op]()
            elif k == "where":
                cmp, c1, c2, x, y = ins[1:]
                rhs = env[c2] if c2 is not None else 0.25
                cond = env[c1] > rhs if cmp == "greater" else env[c1] < rhs
                env[i] = mlc.where(cond, env[x], env[y])
            else:
                op, a, axis, keepdims = ins[1:]
                t = env[a]
                env[i] = getattr(t, op)(axis=axis, keepdims=keepdims) if op != "min" else \
                    mlc.min(t, axis=axis, keepdims=keepdims)
        return tuple(env[v.ref] for v in outs)

    fn.__name__ = name
    args = [mlc.TensorType(v.shape, p.dtype) for v in p.inputs()]
    assert len(args) == n_in
    return mlc.trace(fn, *args)


def make_inputs(p: Program, seed: int):
    rng = np.random.default_rng(seed)
    return [rng.uniform(-INPUT_BOUND, INPUT_BOUND, v.shape).astype(p.dtype) for v in p.inputs()]


def describe(graph, inputs):
    return "graph:\n" + print_graph(graph) + "\ninput shapes: " + ", ".join(str(a.shape) for a in inputs)


def assert_close(got, want, scale, dtype, graph, inputs, k):
    rtol, atol = TOL[dtype]
    assert got.dtype == want.dtype and got.shape == want.shape, \
        f"output {k}: got {got.dtype}{got.shape}, reference {want.dtype}{want.shape}\n" + describe(graph, inputs)
    assert np.all(np.isfinite(want)), "generator bug: the reference is not finite\n" + describe(graph, inputs)
    err = np.abs(got.astype(np.float64) - want.astype(np.float64))
    allowed = rtol * np.abs(want.astype(np.float64)) + atol * scale
    bad = ~(err <= allowed)
    if bad.any():
        idx = tuple(np.argwhere(bad)[0]) if got.ndim else ()
        raise AssertionError(
            f"output {k}: {bad.sum()} of {bad.size} elements differ; first at {idx}: compiled {got[idx]!r}, "
            f"reference {want[idx]!r} (allowed {allowed[idx]:.3g}, error scale {scale:.3g})\n" + describe(graph, inputs))


# ----------------------------------------------------------------------------- properties

@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@settings(max_examples=50, **SETTINGS)
@given(data=st.data(), traced=st.booleans(), seed=st.integers(0, 2 ** 32 - 1), opt_level=st.sampled_from([0, 1, 2, 3]))
def test_compiled_matches_reference(dtype, data, traced, seed, opt_level):
    prog = data.draw(programs(dtype, repeated_operands=REPEATED_OPERANDS_COMPILE), label="program")
    p, outs = prog
    graph = trace_graph(p, outs) if traced else build_graph(p, outs)
    ops.verify(graph)
    inputs = make_inputs(p, seed)
    want = ops.run_reference(graph, *inputs)
    exe = mlc.compile(graph, opt_level=opt_level)
    got = exe(*inputs)
    got = [got] if len(graph.outputs) == 1 else list(got)
    assert len(got) == len(want) == len(outs)
    for k, (g, w, v) in enumerate(zip(got, want, outs)):
        assert w.shape == v.shape, "generator and type rules disagree on a shape"
        assert_close(g, w, v.scale, p.dtype, graph, inputs, k)


@pytest.mark.parametrize("name", sorted(PASSES))
@settings(max_examples=40, **SETTINGS)
@given(data=st.data(), traced=st.booleans(), seed=st.integers(0, 2 ** 32 - 1))
def test_every_graph_pass_preserves_results_and_is_idempotent(name, data, traced, seed):
    p, outs = data.draw(programs(np.float64, repeated_operands=REPEATED_OPERANDS_COMPILE), label="program")
    graph = trace_graph(p, outs) if traced else build_graph(p, outs)
    inputs = make_inputs(p, seed)
    want = ops.run_reference(graph, *inputs)
    once = PASSES[name].run(graph)
    ops.verify(once)
    for k, (g, w, v) in enumerate(zip(ops.run_reference(once, *inputs), want, outs)):
        assert_close(g, w, v.scale, p.dtype, once, inputs, k)
    assert str(PASSES[name].run(once)) == str(once), f"{name} is not idempotent"


@settings(max_examples=120, **SETTINGS)
@given(programs(np.float32, max_steps=10) | programs(np.float64, max_steps=10), st.booleans(),
       st.integers(0, 2 ** 32 - 1))
def test_print_parse_round_trip(prog, traced, seed):
    p, outs = prog
    graph = trace_graph(p, outs) if traced else build_graph(p, outs)
    text = print_graph(graph)
    parsed = parse_graph(text)
    assert print_graph(parsed) == text
    ops.verify(parsed)
    inputs = make_inputs(p, seed)
    for a, b in zip(ops.run_reference(graph, *inputs), ops.run_reference(parsed, *inputs)):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()


def test_value_read_twice_by_one_call():
    def f(x, y):
        a = -x
        return a * a, (-x) - (-y)

    x = np.array([1, 2, 3, 4], np.float32)
    y = np.array([10, 20, 30, 40], np.float32)
    sq, diff = mlc.compile(f, x, y)(x, y)
    np.testing.assert_array_equal(sq, x * x)
    np.testing.assert_array_equal(diff, y - x)


def test_builder_and_tracer_agree():
    """Both constructions of one program compute the same values (a check on the generator)."""
    p = Program(np.float32)
    x = p.input((3, 1, 4))
    y = p.input((5, 1))
    s = p.add(("binary", "div", x.ref, y.ref), (3, 5, 4), 2, 8, False)
    e = p.add(("unary", "exp", s.ref), s.shape, math.e ** 2, 60, False)
    w = p.add(("where", "greater", x.ref, None, e.ref, y.ref), (3, 5, 4), 8, 60, False)
    r = p.add(("reduce", "mean", w.ref, (0, -1), True), (1, 5, 1), 8, 60, False)
    g1, g2 = build_graph(p, [r, w]), trace_graph(p, [r, w])
    inputs = make_inputs(p, 0)
    for a, b in zip(ops.run_reference(g1, *inputs), ops.run_reference(g2, *inputs)):
        np.testing.assert_array_equal(a, b)
    xs, ys = inputs
    want_w = np.where(xs > np.float32(0.25), np.exp(xs / (np.abs(ys) + np.float32(1))), ys)
    np.testing.assert_allclose(ops.run_reference(g1, *inputs)[1], want_w, rtol=1e-6)
    assert [n.op for n in g1.nodes if n.op != "constant"] == [n.op for n in g2.nodes if n.op != "constant"]


def test_tolerance_catches_a_wrong_result():
    """The comparison is not vacuous: a one-element perturbation is reported."""
    p = Program(np.float32)
    x = p.input((4, 5))
    r = p.add(("reduce", "sum", x.ref, 1, False), (4,), 10, 10, False)
    g = build_graph(p, [r])
    [inp] = make_inputs(p, 1)
    got = mlc.compile(g)(inp)
    want = ops.run_reference(g, inp)[0]
    assert_close(got, want, r.scale, np.float32, g, [inp], 0)
    got[2] += 1e-2
    with pytest.raises(AssertionError, match="1 of 4 elements differ"):
        assert_close(got, want, r.scale, np.float32, g, [inp], 0)
