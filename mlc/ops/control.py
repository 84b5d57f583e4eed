"""Structured control flow: ``scan``, ``while_loop`` and ``cond``, each one graph op
whose bodies are graphs (graph-valued attributes, printed nested).

A body is closed: it reads only its own inputs, so what the Python function
captured from outside comes in as trailing operands (``consts``). The semantics
are ``jax.lax``'s functions of the same names:

* ``scan(carries..., xs..., consts...)``, body ``(c..., x..., k...) -> (c'..., y...)``:
  runs ``length`` steps over the leading axis of each x (from the end with
  ``reverse``), threading the carries; results: the final carries, then each y
  stacked along a new leading axis.
* ``while_loop(carries..., consts...)``, ``cond`` body ``(c..., k...) -> bool[]``,
  ``body`` ``(c..., k...) -> (c'...)``: steps while cond holds; results: the carries.
* ``cond(pred, operands..., consts...)``, ``true_body`` and ``false_body`` both
  ``(operands..., k...) -> (outs...)`` of one signature: runs one of them.

Compiled code keeps the loop a loop (``passes.plan`` plans each body apart,
``codegen.llvm`` calls it from a loop in the entry), so code size and compile time
do not grow with the trip count. Gradients: the vjp of ``scan`` is a reverse
``scan`` over the carries each step started from (saved by the forward, the rest of
the body recomputed per step); ``cond`` differentiates both branches under the same
predicate; ``while_loop`` has no reverse-mode rule (its trip count is known only at
run time).
"""
from __future__ import annotations

import numpy as np

from ..ir.graph import Graph
from ..ir.types import TensorType, bool_
from .registry import OpDef, check


def _body_check(op: str, what: str, g, in_types, out_types=None) -> None:
    check(isinstance(g, Graph), f"{op}: attribute {what} must be a graph, got {type(g).__name__}")
    got = [v.type for v in g.inputs]
    check(got == list(in_types), f"{op}: {what} @{g.name} takes ({', '.join(map(str, got))}) but is given "
                                 f"({', '.join(map(str, in_types))})")
    if out_types is not None:
        outs = [v.type for v in g.outputs]
        check(outs == list(out_types), f"{op}: {what} @{g.name} returns ({', '.join(map(str, outs))}) where "
                                       f"({', '.join(map(str, out_types))}) is needed")


def _not_lowered(*_args, **_attrs):
    raise NotImplementedError("control-flow ops are planned as nested bodies (passes.plan), not lowered to stages")


# ----------------------------------------------------------------------------- scan

def _scan_infer(ins, num_carry, num_xs, length, reverse, body):
    k, m = num_carry, num_xs
    check(isinstance(k, int) and isinstance(m, int) and 0 <= k and 0 <= m and k + m <= len(ins),
          f"scan: num_carry={k} and num_xs={m} do not fit its {len(ins)} operands")
    check(isinstance(length, int) and length >= 0, f"scan: length must be a non-negative int, got {length!r}")
    xs = ins[k:k + m]
    for n, t in enumerate(xs):
        check(len(t.shape) >= 1 and t.shape[0] == length,
              f"scan: xs[{n}] has type {t} but the scan runs {length} steps over its leading axis")
    slices = [TensorType(t.shape[1:], t.dtype) for t in xs]
    _body_check("scan", "body", body, list(ins[:k]) + slices + list(ins[k + m:]))
    outs = [v.type for v in body.outputs]
    check(len(outs) >= k and outs[:k] == list(ins[:k]),
          f"scan: body @{body.name} returns carries ({', '.join(map(str, outs[:k]))}) of other types than its "
          f"initial carries ({', '.join(map(str, ins[:k]))})")
    return outs[:k] + [TensorType((length,) + t.shape, t.dtype) for t in outs[k:]]


def _scan_reference(*arrays, num_carry, num_xs, length, reverse, body):
    from . import run_reference
    k, m = num_carry, num_xs
    carries, xs, consts = list(arrays[:k]), arrays[k:k + m], list(arrays[k + m:])
    ys = [np.empty((length,) + v.shape, v.dtype.np) for v in body.outputs[k:]]
    for step in range(length):
        t = length - 1 - step if reverse else step
        res = run_reference(body, *carries, *[x[t] for x in xs], *consts)
        carries = res[:k]
        for y, r in zip(ys, res[k:]):
            y[t] = r
    return tuple(carries) + tuple(ys)


def with_carry_outputs(body: Graph, k: int) -> Graph:
    """``body`` also returning the first ``k`` inputs (the carries a step starts from)
    as extra per-step outputs: the forward scan a gradient needs."""
    g = body.copy()
    return Graph(g.name + "_saved", g.inputs, g.nodes, g.outputs + g.inputs[:k])


def _matmul_factors(g) -> tuple | None:
    """(P, Q) when the gradient ``g`` is one 2-D product P @ Q built in the step's graph."""
    n = g.value.producer
    if n is None or n.op != "matmul" or any(len(v.shape) != 2 for v in n.inputs):
        return None
    return tuple(g.em.wrap(v) for v in n.inputs)


def _scan_vjp(em, ins, outs, cts, num_carry, num_xs, length, reverse, body):
    """A reverse scan over the carries each forward step started from. A const's
    gradient is summed over the steps: in a carry, or -- where one step's share is a
    matrix product P_t @ Q_t (a weight the body multiplies by) -- as P_t and Q_t stacked
    by the loop and multiplied once after it, sum_t P_t Q_t = [P_1 .. P_T] [Q_1; ..; Q_T]:
    one large product instead of a small one and an accumulation every step."""
    from .autodiff import backprop, differentiable, zeros_like
    from .builder import build_graph
    k, m = num_carry, num_xs
    n_consts = len(ins) - k - m
    n_ys = len(body.outputs) - k
    saved = em.emit("scan", list(ins), num_carry=k, num_xs=m, length=length, reverse=reverse,
                    body=with_carry_outputs(body, k))
    saved = list(saved) if isinstance(saved, tuple) else [saved]
    stacked_carries = saved[k + n_ys:]

    float_in = [i for i, v in enumerate(body.inputs) if differentiable(v.type)]
    dc_at = [i for i in range(k) if differentiable(body.inputs[i].type)]            # carries with gradients
    consts_at = [i for i in range(k + m, len(body.inputs)) if differentiable(body.inputs[i].type)]
    dx_at = [i for i in range(k, k + m) if differentiable(body.inputs[i].type)]      # xs
    dy_at = [j for j in range(n_ys) if cts[k + j] is not None]

    def backward_graph(dk_at, hoisted):
        types = [body.inputs[i].type for i in dc_at + dk_at] + [body.inputs[i].type for i in range(k + m)] \
            + [body.outputs[k + j].type for j in dy_at] + [body.inputs[i].type for i in range(k + m, len(body.inputs))]
        names = [f"dc{i}" for i in dc_at] + [f"dk{i}" for i in dk_at] + [f"c{i}" for i in range(k)] \
            + [f"x{i}" for i in range(m)] + [f"dy{j}" for j in dy_at] + [f"k{i}" for i in range(n_consts)]

        def step(em2, *args):
            args = list(args)
            dc, dk = args[:len(dc_at)], args[len(dc_at):len(dc_at) + len(dk_at)]
            rest = args[len(dc_at) + len(dk_at):]
            c, x, dy, consts = rest[:k], rest[k:k + m], rest[k + m:k + m + len(dy_at)], rest[k + m + len(dy_at):]
            cot = [None] * len(body.outputs)
            for i, g in zip(dc_at, dc):
                cot[i] = g
            for j, g in zip(dy_at, dy):
                cot[k + j] = g
            _, grads = backprop(em2, body, c + x + consts, float_in, cot)
            grad = dict(zip(float_in, grads))
            factors = [f for i in hoisted for f in _matmul_factors(grad[i])]
            return [grad[i] for i in dc_at] + [a + grad[i] for a, i in zip(dk, dk_at)] + [grad[i] for i in dx_at] \
                + factors, grad
        return types, names, step

    # which consts' per-step gradients are one matrix product (traced once to find out)
    types, names, step = backward_graph(consts_at, [])
    probe = {}

    def probe_step(em2, *args):
        outs, grad = step(em2, *args)
        probe.update(grad)
        return outs
    build_graph("probe", types, names, probe_step)
    hoisted = [i for i in consts_at if _matmul_factors(probe[i]) is not None] if length > 0 else []
    dk_at = [i for i in consts_at if i not in hoisted]
    types, names, step = backward_graph(dk_at, hoisted)
    step_graph = build_graph(f"{body.name}_vjp", types, names, lambda em2, *a: step(em2, *a)[0])

    init = [cts[i] if cts[i] is not None else zeros_like(em, outs[i]) for i in dc_at]
    init += [zeros_like(em, ins[i]) for i in dk_at]
    res = em.emit("scan", init + stacked_carries + list(ins[k:k + m])
                  + [cts[k + j] for j in dy_at] + list(ins[k + m:]),
                  num_carry=len(init), num_xs=k + m + len(dy_at), length=length, reverse=not reverse,
                  body=step_graph)
    res = list(res) if isinstance(res, tuple) else [res]
    grads = [None] * len(ins)
    for i, g in zip(dc_at + dk_at + dx_at, res):
        grads[i] = g
    stacked = res[len(dc_at) + len(dk_at) + len(dx_at):]
    for n, i in enumerate(hoisted):   # [T, a, b] and [T, b, c] -> [a, T*b] @ [T*b, c]
        p, q = stacked[2 * n], stacked[2 * n + 1]
        _, a, b = p.shape
        _, _, c = q.shape
        p = em.emit("reshape", em.emit("transpose", p, axes=(1, 0, 2)), shape=(a, length * b))
        grads[i] = em.emit("matmul", p, em.emit("reshape", q, shape=(length * b, c)))
    return grads


# ----------------------------------------------------------------------------- while_loop

def _while_infer(ins, num_carry, cond, body):
    k = num_carry
    check(isinstance(k, int) and 0 <= k <= len(ins), f"while_loop: num_carry={k} does not fit its {len(ins)} "
                                                     f"operands")
    _body_check("while_loop", "cond", cond, ins, [TensorType((), bool_)])
    _body_check("while_loop", "body", body, ins, ins[:k])
    return list(ins[:k])


def _while_reference(*arrays, num_carry, cond, body):
    from . import run_reference
    carries, consts = list(arrays[:num_carry]), list(arrays[num_carry:])
    while bool(run_reference(cond, *carries, *consts)[0]):
        carries = run_reference(body, *carries, *consts)
    return tuple(carries)


def _while_vjp(em, ins, outs, cts, **attrs):
    from .builder import TraceError
    raise TraceError("mlc.grad: while_loop has no reverse-mode gradient (its trip count is known only at run "
                     "time); write the loop with mlc.scan and a fixed length to differentiate it")


# ----------------------------------------------------------------------------- cond

def _cond_infer(ins, true_body, false_body):
    check(len(ins) >= 1 and ins[0].shape == () and ins[0].dtype == bool_,
          f"cond: the predicate must be a bool scalar, got {ins[0] if ins else 'nothing'}")
    _body_check("cond", "true_body", true_body, ins[1:])
    outs = [v.type for v in true_body.outputs]
    _body_check("cond", "false_body", false_body, ins[1:], outs)
    return outs


def _cond_reference(pred, *operands, true_body, false_body):
    from . import run_reference
    return tuple(run_reference(true_body if bool(pred) else false_body, *operands))


def _cond_vjp(em, ins, outs, cts, true_body, false_body):
    from .autodiff import backprop, differentiable
    from .builder import build_graph
    operands = ins[1:]
    wrt = [i for i, v in enumerate(true_body.inputs) if differentiable(v.type)]
    if not wrt:
        return [None] * len(ins)
    with_ct = [j for j, c in enumerate(cts) if c is not None]
    types = [v.type for v in true_body.inputs] + [true_body.outputs[j].type for j in with_ct]
    names = [f"x{i}" for i in range(len(operands))] + [f"ct{j}" for j in with_ct]

    def branch(g: Graph) -> Graph:
        def fn(em2, *args):
            cot = [None] * len(g.outputs)
            for j, c in zip(with_ct, args[len(operands):]):
                cot[j] = c
            return backprop(em2, g, list(args[:len(operands)]), wrt, cot)[1]
        return build_graph(f"{g.name}_vjp", types, names, fn)

    res = em.emit("cond", [ins[0]] + list(operands) + [cts[j] for j in with_ct],
                  true_body=branch(true_body), false_body=branch(false_body))
    res = list(res) if isinstance(res, tuple) else [res]
    grads = [None] * len(ins)
    for i, g in zip(wrt, res):
        grads[1 + i] = g
    return grads


OPS = [
    OpDef("scan", "control", _scan_infer, _scan_reference, _not_lowered, params=("*operands",),
          attrs={"num_carry": 0, "num_xs": 0, "length": 0, "reverse": False, "body": None}, vjp=_scan_vjp,
          doc="A loop over the leading axis of xs threading carries (jax.lax.scan); the body is a graph."),
    OpDef("while_loop", "control", _while_infer, _while_reference, _not_lowered, params=("*operands",),
          attrs={"num_carry": 0, "cond": None, "body": None}, vjp=_while_vjp,
          doc="Steps body while cond holds (jax.lax.while_loop); cond and body are graphs."),
    OpDef("cond", "control", _cond_infer, _cond_reference, _not_lowered, params=("*operands",),
          attrs={"true_body": None, "false_body": None}, vjp=_cond_vjp,
          doc="Runs true_body or false_body on the operands by a bool scalar (jax.lax.cond)."),
]
