"""Random differentiable float64 programs: ``mlc.grad`` / ``mlc.value_and_grad`` against
central finite differences, and the compiled gradient (-O0 and -O2, bounds-checked)
against the reference interpreter.

A program (drawn from one seed, like ``fuzz.programs``) chains smooth unary ops,
activations (relu, abs, leaky_relu, selu, elu, gelu, softplus, mish, ...), broadcasting
binary ops, ``where``, reductions (sum, mean, max, min, prod), softmax/log_softmax,
layer_norm, matmul, movement ops, slicing (negative steps, out-of-range bounds, empty
slices), concatenate, pad, tile, cumsum and broadcast_to. Its outputs are projected
onto fixed random weights (``gradcheck._scalarized``), which gives one scalar to
differentiate with respect to every input; every fourth program differentiates its
gradient again (projected the same way), checking second derivatives.

Non-differentiable points are avoided by construction: the program's intermediate
values are computed first (reference interpreter), and inputs whose values come
within ``MARGIN`` of a kink (relu/abs/leaky_relu/selu at 0, maximum/minimum of equal
operands, a ``where`` comparison of near-equal values, a max/min reduction whose two
largest elements nearly tie) are redrawn; a program that stays too close after a few
draws is skipped (counted as ``rejected``). Finite differences move each input by
``EPS`` times a random direction, far less than ``MARGIN``.
"""
from __future__ import annotations

import math
import os
import traceback
import warnings

import numpy as np

import mlc
from gradcheck import EPS, _scalarized
from mlc.ops import run_reference

from . import FuzzResult, random_slice_key
from .programs import F64, Program, Skip, _factor, bounds_checked, grow

MARGIN = 1e-3
BATCH = 4
OPT_LEVELS = (0, 2)
DIRECTIONS = 2


class GradProgram(Program):
    def dtype(self):
        return F64

    def dim(self) -> int:
        r = self.rng.random()
        return 0 if r < 0.03 else self.rng.choice([9, 17]) if r < 0.1 else self.rng.randint(1, 5)

    def step(self, args, shape, bound, mlc_fn, text, margin=None):
        if bound > 1e6:   # keep finite differences meaningful
            raise Skip
        v = self.add(args, shape, F64, bound, 0.0, False, None, mlc_fn, text)
        self.steps[-1].margin = margin
        return v


def _min_abs(x) -> float:
    return float(np.min(np.abs(x))) if np.size(x) else math.inf


def _top_gap(x, axes) -> float:
    """The smallest gap between the two largest elements of each reduced group."""
    x = np.asarray(x)
    axes = tuple(range(x.ndim)) if axes is None else tuple(a % x.ndim for a in (axes if isinstance(axes, tuple)
                                                                                else (axes,)))
    if not axes or x.size == 0:
        return math.inf
    rest = [d for d in range(x.ndim) if d not in axes]
    groups = np.transpose(x, rest + list(axes)).reshape(-1, int(np.prod([x.shape[d] for d in axes])))
    if groups.shape[1] < 2:
        return math.inf
    s = np.sort(groups, axis=1)
    return float(min(np.min(s[:, -1] - s[:, -2]), np.min(s[:, 1] - s[:, 0])))


UNARY = ["neg", "exp", "tanh", "sigmoid", "sin", "cos", "erf", "log1", "sqrt1", "square", "cube", "pow15", "relu",
         "abs", "softplus", "gelu", "elu", "leaky_relu", "selu", "mish", "softsign"]


def unary(p: GradProgram):
    a = p.pick()
    op = p.rng.choice(UNARY)
    b = a.bound   # <= 1e6 (GradProgram.step)
    if op == "exp" and b > 3:
        op = "tanh"
    if op in ("square", "cube", "pow15") and b > 10:
        op = "sin"
    smooth = {"neg": (lambda x: -x, b), "exp": (lambda x: mlc.exp(x), math.exp(min(b, 3))),
              "tanh": (lambda x: mlc.tanh(x), 1), "sigmoid": (lambda x: mlc.sigmoid(x), 1),
              "sin": (lambda x: mlc.sin(x), 1), "cos": (lambda x: np.cos(x), 1), "erf": (lambda x: mlc.erf(x), 1),
              "log1": (lambda x: mlc.log(x * x + 1.0), math.log(b * b + 1)),
              "sqrt1": (lambda x: mlc.sqrt(x * x + 1.0), math.sqrt(b * b + 1)),
              "square": (lambda x: x ** 2, b * b), "cube": (lambda x: x * x * x, min(b, 10) ** 3),
              "softplus": (lambda x: mlc.softplus(x), b + 1), "gelu": (lambda x: mlc.gelu(x), b),
              "mish": (lambda x: mlc.mish(x), b)}
    # kinks, and points where the second derivative (checked for some programs) jumps
    # or blows up: |x| ** 1.5, elu and softsign are only C1 at 0
    kinked = {"relu": (lambda x: mlc.relu(x), b), "abs": (lambda x: abs(x), b),
              "pow15": (lambda x: abs(x) ** 1.5, b ** 1.5), "elu": (lambda x: mlc.elu(x), b),
              "softsign": (lambda x: mlc.softsign(x), 1),
              "leaky_relu": (lambda x: mlc.leaky_relu(x, alpha=0.1), b), "selu": (lambda x: mlc.selu(x), 2 * b)}
    if op in smooth:
        fn, bound = smooth[op]
        p.step([a], a.shape, bound, fn, op)
    else:
        fn, bound = kinked[op]
        p.step([a], a.shape, bound, fn, op, margin=lambda x: _min_abs(x))


def binary(p: GradProgram):
    a = p.pick()
    b = p.partner(a.shape, lambda v: v.ref != a.ref)   # maximum(x, x) sits on its kink
    if p.rng.random() < 0.5:
        a, b = b, a
    shape = np.broadcast_shapes(a.shape, b.shape)
    op = p.rng.choice(["add", "sub", "mul", "div", "maximum", "minimum", "add", "mul", "scalar"])
    if op == "mul" and a.bound * b.bound > 1e4:
        op = "add"
    if op == "scalar":
        s = p.rng.choice([0.5, -2.0, 3.0])
        p.step([a], a.shape, a.bound * 3 + 3, p.rng.choice([lambda x: x * s, lambda x: x + s, lambda x: s - x,
                                                             lambda x: x / s]), f"scalar {s}")
        return
    table = {"add": (lambda x, y: x + y, a.bound + b.bound), "sub": (lambda x, y: x - y, a.bound + b.bound),
             "mul": (lambda x, y: x * y, a.bound * b.bound),
             "div": (lambda x, y: x / (y * y + 1.0), a.bound),
             "maximum": (lambda x, y: mlc.maximum(x, y), max(a.bound, b.bound)),
             "minimum": (lambda x, y: np.minimum(x, y), max(a.bound, b.bound))}
    fn, bound = table[op]
    margin = (lambda x, y: _min_abs(np.subtract(x, y))) if op in ("maximum", "minimum") else None
    p.step([a, b], shape, bound, fn, op, margin)


def where(p: GradProgram):
    c = p.pick()
    d = p.partner(c.shape, lambda v: v.ref != c.ref)
    cshape = np.broadcast_shapes(c.shape, d.shape)
    x = p.partner(cshape)
    y = p.partner(np.broadcast_shapes(cshape, x.shape))
    shape = np.broadcast_shapes(cshape, x.shape, y.shape)
    p.step([c, d, x, y], shape, max(x.bound, y.bound), lambda c, d, x, y: mlc.where(c > d, x, y), "where(c > d)",
           margin=lambda c, d, x, y: _min_abs(np.subtract(c, d)))


def reduction(p: GradProgram):
    rng = p.rng
    a = p.pick()
    rank = len(a.shape)
    op = rng.choice(["sum", "mean", "max", "min", "prod", "sum", "mean"])
    if rank == 0 or rng.random() < 0.3:
        axis, axes = None, tuple(range(rank))
    else:
        axes = tuple(sorted(rng.sample(range(rank), rng.randint(1, rank))))
        axis = axes if rng.random() < 0.6 else tuple(d - rank for d in axes)
    keepdims = rng.random() < 0.4
    n = int(np.prod([a.shape[d] for d in axes], dtype=np.int64))
    if op in ("max", "min") and n == 0:
        op = "sum"
    if op == "prod" and (n > 6 or a.bound ** max(n, 1) > 1e4):
        op = "mean"
    shape = tuple(1 if d in axes else s for d, s in enumerate(a.shape)) if keepdims else \
        tuple(s for d, s in enumerate(a.shape) if d not in axes)
    bound = a.bound * n if op == "sum" else a.bound ** n if op == "prod" else a.bound
    fn = (lambda x: getattr(x, op)(axis=axis, keepdims=keepdims)) if rng.random() < 0.5 else \
        (lambda x: getattr(mlc, op)(x, axis=axis, keepdims=keepdims))
    margin = (lambda x: _top_gap(x, axis)) if op in ("max", "min") else None
    p.step([a], shape, max(bound, 1.0), fn, f"{op} axis={axis} keepdims={keepdims}", margin)


def normalize(p: GradProgram):
    a = p.pick(lambda v: len(v.shape) >= 1 and v.bound < 50)
    if a is None:
        return
    rank = len(a.shape)
    axis = p.rng.randint(-rank, rank - 1)
    kind = p.rng.choice(["softmax", "log_softmax", "layer_norm"])
    if a.shape[axis] == 0 and kind != "layer_norm":
        return   # refused for an empty axis (see fuzz.programs.KNOWN)
    if kind == "layer_norm":
        if a.shape[-1] < 2:
            return
        scale = p.input((a.shape[-1],), F64)
        bias = p.input((a.shape[-1],), F64)
        p.step([a, scale, bias], a.shape, 10 * scale.bound + bias.bound,
               lambda x, s, b: mlc.layer_norm(x, s, b, axis=-1, epsilon=0.1), "layer_norm")
        return
    fn = getattr(mlc, kind)
    p.step([a], a.shape, 2 * a.bound + 5, lambda x: fn(x, axis=axis), f"{kind} axis={axis}")


def matmul(p: GradProgram):
    a = p.pick(lambda v: 1 <= len(v.shape) <= 3 and v.shape[-1] <= 20)
    if a is None:
        return
    k, n = a.shape[-1], p.dim()
    bshape = p.rng.choice([(k,), (k, n), (p.rng.choice([1, 2]), k, n)])
    if len(a.shape) == 3 and len(bshape) == 3 and 1 not in (a.shape[0], bshape[0]) and a.shape[0] != bshape[0]:
        bshape = (a.shape[0], k, n)
    b = p.pick(lambda v: v.shape == bshape) or p.input(bshape, F64)
    out = np.matmul(np.zeros(a.shape, np.int8), np.zeros(b.shape, np.int8)).shape
    fn = (lambda x, y: x @ y) if p.rng.random() < 0.5 else (lambda x, y: mlc.matmul(x, y))
    p.step([a, b], out, k * a.bound * b.bound, fn, f"matmul {a.shape} @ {b.shape}")


def movement(p: GradProgram):
    rng = p.rng
    a = p.pick()
    rank = len(a.shape)
    kind = rng.choice(["reshape", "transpose", "expand", "squeeze", "slice", "slice", "concat", "pad", "tile",
                       "cumsum", "broadcast_to"])
    b = a.bound
    if kind == "reshape":
        size = int(np.prod(a.shape, dtype=np.int64))
        shape = _factor(rng, size, rng.randint(0 if size == 1 else 1, 3))
        p.step([a], shape, b, lambda x: x.reshape(shape), f"reshape {shape}")
    elif kind == "transpose" and rank >= 2:
        perm = list(range(rank))
        rng.shuffle(perm)
        perm = tuple(perm)
        p.step([a], tuple(a.shape[d] for d in perm), b, lambda x: x.transpose(*perm), f"transpose {perm}")
    elif kind == "expand" and rank < 3:
        ax = rng.randint(-rank - 1, rank)
        shape = np.expand_dims(np.zeros(a.shape, np.int8), ax).shape
        p.step([a], shape, b, lambda x: mlc.expand_dims(x, axis=ax), f"expand_dims {ax}")
    elif kind == "squeeze" and 1 in a.shape:
        axes = tuple(d for d in range(rank) if a.shape[d] == 1)
        shape = tuple(s for s in a.shape if s != 1)
        p.step([a], shape, b, lambda x: mlc.squeeze(x, axis=axes), f"squeeze {axes}")
    elif kind == "slice" and rank >= 1:
        key = tuple(random_slice_key(rng, a.shape, [None, 1, 2, -1, -1, -2]))
        shape = np.zeros(a.shape, np.int8)[key].shape
        p.step([a], shape, b, lambda x: x[key], f"[{key}]")
    elif kind == "concat" and rank >= 1:
        ax = rng.randint(-rank, rank - 1)
        shape = list(a.shape)
        shape[ax] = p.dim()
        c = p.input(tuple(shape), F64)
        out = list(a.shape)
        out[ax] += c.shape[ax] + a.shape[ax]
        p.step([a, c], tuple(out), max(b, c.bound), lambda x, y: mlc.concatenate([x, y, x], axis=ax),
               f"concatenate axis={ax}")
    elif kind == "pad" and rank >= 1:
        pads = tuple(rng.randint(0, 2) for _ in range(2 * rank))
        shape = tuple(s + pads[d] + pads[rank + d] for d, s in enumerate(a.shape))
        p.step([a], shape, b, lambda x: mlc.pad(x, pads=pads), f"pad {pads}")
    elif kind == "tile" and rank >= 1:
        reps = tuple(rng.randint(1, 2) for _ in range(rank))
        p.step([a], tuple(s * r for s, r in zip(a.shape, reps)), b, lambda x: mlc.tile(x, repeats=reps),
               f"tile {reps}")
    elif kind == "cumsum" and rank >= 1:
        ax = rng.randint(-rank, rank - 1)
        exclusive, reverse = rng.random() < 0.3, rng.random() < 0.3
        p.step([a], a.shape, b * max(a.shape[ax], 1), lambda x: mlc.cumsum(x, axis=ax, exclusive=exclusive,
                                                                            reverse=reverse),
               f"cumsum axis={ax} exclusive={exclusive} reverse={reverse}")
    elif kind == "broadcast_to" and rank < 3:
        shape = (p.dim(),) + tuple(p.dim() if s == 1 and rng.random() < 0.5 else s for s in a.shape)
        p.step([a], shape, b, lambda x: mlc.broadcast_to(x, shape=shape), f"broadcast_to {shape}")


GENERATORS = [unary, unary, binary, binary, where, reduction, reduction, normalize, matmul, movement, movement]


def generate(seed: int) -> GradProgram:
    p = GradProgram(seed)
    p.input(p.shape(), F64)
    if p.rng.random() < 0.5:
        p.input(p.partner_shape(p.vals[0].shape), F64)
    p.outputs = grow(p, GENERATORS, p.rng.randint(1, 7))
    if not p.outputs:
        a = p.vals[0]
        p.outputs = [p.step([a], a.shape, a.bound, lambda x: mlc.tanh(x), "tanh")]
    return p


def program_fn(p: GradProgram):
    """The program as a function of its inputs; ``every=True`` returns every value."""
    def fn(*xs, every=False):
        env = dict(zip((v.ref for v in p.inputs), xs))
        for s in p.steps:
            if s is not None:
                env[s.out.ref] = s.mlc_fn(*[env[r] for r in s.args])
        return tuple(env[v.ref] for v in (p.vals if every else p.outputs))
    return fn


def draw_inputs(p: GradProgram, attempt: int) -> list[np.ndarray]:
    rng = np.random.default_rng([p.seed, attempt])
    return [rng.uniform(-2, 2, v.shape) for v in p.inputs]


def _reference(graph, inputs):
    """The reference interpreter without numpy's warnings (the mean of an empty slice)."""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return run_reference(graph, *inputs)


def closest_kink(p: GradProgram, inputs) -> float:
    fn = program_fn(p)
    graph = mlc.trace(lambda *xs: fn(*xs, every=True), *inputs)
    values = _reference(graph, inputs)
    margin = math.inf
    for s in p.steps:
        if s is not None and s.margin is not None:
            margin = min(margin, s.margin(*[values[r] for r in s.args]))
    if not all(np.all(np.isfinite(v)) for v in values):
        return 0.0   # an overflow: not a program to differentiate
    return margin


def prepare(p: GradProgram) -> list[np.ndarray] | None:
    """Inputs at least MARGIN away from every kink, or None."""
    for attempt in range(4):
        inputs = draw_inputs(p, attempt)
        if closest_kink(p, inputs) >= MARGIN:
            return inputs
    return None


def order(p: GradProgram) -> int:
    """Every fourth program checks the gradient of its gradient."""
    return 2 if p.seed % 4 == 0 else 1


def objective(p: GradProgram, inputs):
    """The scalar differentiated: the program's outputs against fixed random weights,
    or for order 2 the gradient's, like ``gradcheck.check_grads(order=2)``."""
    f = _scalarized(program_fn(p), inputs, p.seed)
    if order(p) == 2:
        inner = mlc.grad(f, argnums=tuple(range(len(inputs))))
        f = _scalarized(lambda *xs: inner(*xs), inputs, p.seed + 1)
    return f


def finite_differences(p: GradProgram, inputs, grads, value) -> list[str]:
    """Directional derivatives of the scalarized program against <grad, direction>."""
    f = objective(p, inputs)
    graph = mlc.trace(f, *inputs)
    at = lambda xs: float(_reference(graph, xs)[0])
    problems = []
    f0 = at(inputs)
    if not math.isclose(f0, value, rel_tol=1e-9, abs_tol=1e-9):
        problems.append(f"value: value_and_grad gives {value!r}, the function {f0!r}")
    rng = np.random.default_rng([p.seed, 99])
    for i, (x, g) in enumerate(zip(inputs, grads)):
        if x.size == 0:
            if np.asarray(g).shape != x.shape:
                problems.append(f"gradient of input {i}: shape {np.asarray(g).shape}, input {x.shape}")
            continue
        for _ in range(DIRECTIONS):
            v = rng.standard_normal(x.shape)
            plus, minus = list(inputs), list(inputs)
            plus[i], minus[i] = x + EPS * v, x - EPS * v
            fd = (at(plus) - at(minus)) / (2 * EPS)
            an = float(np.sum(g * v))
            # truncation (EPS**2 times the third derivative) is negligible for these bounded
            # programs; rounding in f costs about 1e-16 * |f| / EPS
            tol = 1e-5 * abs(fd) + 1e-6 * (1 + float(np.sum(np.abs(g * v)))) + 1e-14 * (1 + abs(f0)) / EPS
            if not abs(an - fd) <= tol:
                problems.append(f"order-{order(p)} gradient of input {i} {list(x.shape)} along a random direction: "
                                f"mlc {an!r}, "
                                f"finite differences {fd!r} (allowed {tol:.2g})")
                break
    return problems


def _compare_compiled(name, got, want) -> str | None:
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape:
        return f"{name}: shape {got.shape}, reference {want.shape}"
    scale = 1 + (float(np.max(np.abs(want))) if want.size else 0.0)
    bad = ~(np.abs(got - want) <= 1e-9 * scale + 1e-8 * np.abs(want))
    if np.any(bad):
        idx = tuple(np.argwhere(bad)[0]) if got.ndim else ()
        return f"{name}: {int(bad.sum())} of {bad.size} differ; first at {list(idx)}: {got[idx]!r}, reference {want[idx]!r}"
    return None


def check(progs: list[GradProgram], inputs: list[list[np.ndarray]], opt_levels=OPT_LEVELS,
          bounds_check=True) -> list[str]:
    """Problems of one batch: the gradient graph (reference interpreter) against finite
    differences per program, and the compiled gradient against the reference. Odd
    seeds use ``mlc.grad``, even ones ``mlc.value_and_grad``."""
    fns = [objective(p, x) for p, x in zip(progs, inputs)]
    counts = [len(x) for x in inputs]

    def batch(*xs):
        out, k = [], 0
        for p, f, n in zip(progs, fns, counts):
            args = xs[k:k + n]
            k += n
            if p.seed % 2:
                g = mlc.grad(f, argnums=tuple(range(n)))(*args)
                out += [f(*args), *g]
            else:
                v, g = mlc.value_and_grad(f, argnums=tuple(range(n)))(*args)
                out += [v, *g]
        return tuple(out)

    flat = [a for x in inputs for a in x]
    problems = []
    try:
        graph = mlc.trace(batch, *flat)
        ref = _reference(graph, flat)
        k = 0
        for p, x in zip(progs, inputs):
            value, grads = float(ref[k]), ref[k + 1:k + 1 + len(x)]
            k += 1 + len(x)
            problems += [f"seed {p.seed}: {m}" for m in finite_differences(p, x, grads, value)]
        with bounds_checked(bounds_check):
            for o in opt_levels:
                got = mlc.compile(graph, opt_level=o)(*flat)
                got = got if isinstance(got, tuple) else (got,)
                for j, (g, w) in enumerate(zip(got, ref)):
                    m = _compare_compiled(f"-O{o} output {j}", g, w)
                    if m:
                        problems.append(m)
    except Exception as e:   # noqa: BLE001 - any exception is a finding
        tb = traceback.extract_tb(e.__traceback__)[-1]
        return [f"{type(e).__name__}: {e} (at {os.path.basename(tb.filename)}:{tb.lineno})"]
    return problems


def describe(p: GradProgram) -> str:
    lines = [f"%{v.ref} = input f64{list(v.shape)}" if s is None else
             f"%{v.ref} = {s.text}({', '.join(f'%{r}' for r in s.args)}) -> f64{list(v.shape)}"
             for v, s in zip(p.vals, p.steps)]
    return "\n".join(lines) + f"\noutputs: {', '.join(f'%{v.ref}' for v in p.outputs)}"


def fuzz(seed: int, iterations: int, batch: int = BATCH, opt_levels=OPT_LEVELS, bounds_check=True) -> FuzzResult:
    """``iterations`` programs, the k-th from ``seed + k`` (``fuzz(s, 1)`` replays s).
    Gradient graphs are large (compiling dominates), so batches alternate between the
    opt levels; a program that fails is re-run alone at all of them."""
    result = FuzzResult("gradients")
    result.notes["rejected"] = 0
    for n, start in enumerate(range(seed, seed + iterations, batch)):
        progs, inputs = [], []
        for s in range(start, min(start + batch, seed + iterations)):
            result.cases += 1
            p = generate(s)
            x = prepare(p)
            if x is None:
                result.notes["rejected"] += 1
                continue
            progs.append(p)
            inputs.append(x)
        if not progs:
            continue
        if not check(progs, inputs, (opt_levels[n % len(opt_levels)],), bounds_check):
            continue
        alone = False
        for p, x in zip(progs, inputs):
            problems = check([p], [x], opt_levels, bounds_check)
            if problems:
                alone = True
                result.fail(f"seed {p.seed} (replay: fuzz({p.seed}, 1)): " + "\n".join(problems)
                            + "\nprogram:\n" + describe(p))
        if not alone:
            result.fail(f"seeds {progs[0].seed}..{progs[-1].seed} fail only together (replay: "
                        f"fuzz({progs[0].seed}, {batch})): " + "\n".join(check(progs, inputs, opt_levels,
                                                                                  bounds_check)))
    return result
