"""ONNX control flow and recurrent ops onto mlc's structured control flow
(``frontend/control.py``): ``If`` -> ``cond``, ``Scan`` -> ``scan``, ``Loop`` -> ``scan``
(a trip count known at import and no early exit) or ``while_loop`` (no scan outputs),
and ``RNN``/``GRU``/``LSTM`` -> one ``scan`` per direction whose step is the ONNX
cell (gate orders, activations, clip, peepholes, sequence lengths as ONNX defines them).

A subgraph runs through the importer's own node loop (``onnx.run_nodes``) inside the
traced body, in an environment that sees the enclosing graph's values: what it reads
from outside becomes an operand of the control-flow op, as for any traced closure.
"""
from __future__ import annotations

from collections import ChainMap

import numpy as np

from ..ir.types import bool_ as mlc_bool
from ..ops.builder import Sym
from .control import cond, scan, while_loop
from .onnx import NEEDS_CONSTANT, OnnxImportError, _check_graph, converter, op, run_nodes


def _subgraph(n, attr: str):
    """A callable running subgraph ``attr`` of node ``n`` on its inputs' values,
    returning its outputs' values."""
    from onnx import numpy_helper
    g = n.attr(attr)
    if g is None:
        raise OnnxImportError(f"{n.op_type} has no {attr} subgraph")
    schemas = _check_graph(g, n.opset, outer=set(n.env))
    weights = {t.name: numpy_helper.to_array(t) for t in g.initializer}

    def run(*values):
        if len(values) != len(g.input):
            raise OnnxImportError(f"{n.op_type}'s {attr} takes {len(g.input)} inputs, the node gives {len(values)}")
        env = ChainMap(dict(weights), n.env)
        env.maps[0].update((vi.name, v) for vi, v in zip(g.input, values))
        run_nodes(g, env, n.opset, schemas, where=f"{n.op_type} {n.name!r}, {attr}: ")
        return [env[o.name] for o in g.output]
    return g, run


def _scalar(x, what: str):
    if tuple(x.shape) not in ((), (1,)):
        raise OnnxImportError(f"{what} must hold one element, got shape {list(x.shape)}")
    return op("reshape", x, shape=()) if x.shape else x


# ----------------------------------------------------------------------------- If

@converter("If")
def _if(n, condition):
    _, then_branch = _subgraph(n, "then_branch")
    _, else_branch = _subgraph(n, "else_branch")
    pred = _scalar(condition, "If's condition")
    if not isinstance(pred, Sym):   # known at import: only the branch taken is imported
        return tuple((then_branch if bool(pred) else else_branch)())
    if np.dtype(pred.dtype) != np.bool_:
        pred = op("cast", pred, dtype=mlc_bool)
    return cond(pred, lambda: tuple(then_branch()), lambda: tuple(else_branch()))


# ----------------------------------------------------------------------------- Scan

def _flip(x):
    return x[::-1]


def _move(x, src: int, dst: int):
    if src == dst:
        return x
    perm = list(range(len(x.shape)))
    perm.insert(dst, perm.pop(src))
    return op("transpose", x, axes=tuple(perm))


def _scan_step(run, k: int):
    """A Scan body as ``scan``'s step: its first ``k`` outputs the carry, the rest the step's outputs."""
    def step(carry, x):
        outs = run(*carry, *x)
        return tuple(outs[:k]), tuple(outs[k:])
    return step


@converter("Scan")
def _scan(n, *args):
    if n.opset < 9:
        return _scan_8(n, *args)
    body, run = _subgraph(n, "body")
    m = n.attr("num_scan_inputs")
    k = len(args) - m
    n_out = len(body.output) - k
    in_axes = list(n.attr("scan_input_axes", [0] * m))
    in_dirs = list(n.attr("scan_input_directions", [0] * m))
    out_axes = list(n.attr("scan_output_axes", [0] * n_out))
    out_dirs = list(n.attr("scan_output_directions", [0] * n_out))
    xs = []
    for x, axis, d in zip(args[k:], in_axes, in_dirs):
        x = _move(x, axis + len(x.shape) if axis < 0 else axis, 0)
        xs.append(_flip(x) if d else x)

    final, ys = scan(_scan_step(run, k), tuple(args[:k]), tuple(xs))
    outs = []
    for y, axis, d in zip(ys, out_axes, out_dirs):
        y = _flip(y) if d else y
        outs.append(_move(y, 0, axis + len(y.shape) if axis < 0 else axis))
    return tuple(final) + tuple(outs)


def _scan_8(n, sequence_lens=None, *args):
    """Scan of opset 8: every state and scan input has a batch axis first (the scan axis is
    the second), which the body does not see. The batch is static: each element is scanned
    by itself and the results are stacked. ``sequence_lens`` may only say what the shapes
    say (every sequence whole)."""
    body, run = _subgraph(n, "body")
    m = n.attr("num_scan_inputs")
    k = len(args) - m
    if not args:
        raise OnnxImportError("Scan (opset 8) without states or scan inputs")
    directions = list(n.attr("directions", [0] * m))
    states, inputs = args[:k], args[k:]
    batch = int(args[0].shape[0])
    if sequence_lens is not None:
        length = int(inputs[0].shape[1]) if inputs else 0
        if isinstance(sequence_lens, Sym) or (np.asarray(sequence_lens) != length).any():
            raise OnnxImportError(f"Scan (opset 8) with sequence_lens {NEEDS_CONSTANT} and equal to the sequence "
                                  f"length {length} (sequences of different lengths in one batch are not supported)")

    step = _scan_step(run, k)
    per_batch = []
    for b in range(batch):
        xs = tuple(_flip(x[b]) if d else x[b] for x, d in zip(inputs, directions))
        final, ys = scan(step, tuple(s[b] for s in states), xs)
        per_batch.append(tuple(final) + tuple(ys))
    return tuple(op("concatenate", [op("expand_dims", r[i], axis=0) for r in per_batch], axis=0)
                 for i in range(len(per_batch[0])))


# ----------------------------------------------------------------------------- Loop

@converter("Loop")
def _loop(n, trip_count=None, condition=None, *initial):
    body, run = _subgraph(n, "body")
    k = len(initial)
    n_scan = len(body.output) - 1 - k
    if trip_count is not None:
        trip_count = _scalar(trip_count, "Loop's trip count")
    if condition is not None:
        condition = _scalar(condition, "Loop's condition")
    # without an early exit and with a trip count known now, the loop is a scan
    always = condition is None or (not isinstance(condition, Sym) and bool(condition))
    if always and trip_count is not None and not isinstance(trip_count, Sym):
        count = int(trip_count)
        probe = {}

        def step(carry, i):
            outs = run(i, np.bool_(True), *carry)
            probe["exit"] = outs[0]
            return tuple(outs[1:1 + k]), tuple(outs[1 + k:])
        final, ys = scan(step, tuple(initial), np.arange(max(count, 0), dtype=np.int64))
        if count > 0 and (isinstance(probe["exit"], Sym) or not bool(np.asarray(probe["exit"]).reshape(-1)[0])):
            if n_scan:
                raise OnnxImportError("Loop with scan outputs whose body may end the loop early: the outputs' length "
                                      "would depend on the data, which a compiled graph cannot have")
        else:
            return tuple(final) + tuple(ys)
    if n_scan:   # (the ONNX backend imports again with the scalar inputs bound when told NEEDS_CONSTANT)
        raise OnnxImportError(f"Loop with scan outputs: the trip count and the condition {NEEDS_CONSTANT} (the "
                              "outputs' length would otherwise depend on the data)")
    i0 = np.int64(0)
    c0 = np.bool_(True) if condition is None else condition
    if not isinstance(c0, Sym):
        c0 = np.bool_(bool(c0))

    def keep_going(state):
        i, c = state[0], state[1]
        return c if trip_count is None else op("where", i < trip_count, c, False)

    def step(state):
        outs = run(state[0], state[1], *state[2:])
        c = _scalar(outs[0], "Loop body's condition")
        return (state[0] + 1, c if np.dtype(c.dtype) == np.bool_ else op("cast", c, dtype=mlc_bool),
                *outs[1:1 + k])
    return tuple(while_loop(keep_going, step, (i0, c0, *initial))[2:])


# ----------------------------------------------------------------------------- RNN, GRU, LSTM

def _activation(name: str, alpha, beta):
    name = name.lower()
    simple = {"relu": "relu", "tanh": "tanh", "sigmoid": "sigmoid", "softsign": "softsign", "softplus": "softplus"}
    if name in simple:
        return lambda x: op(simple[name], x)
    if name == "affine":
        return lambda x: x * alpha + beta
    if name == "leakyrelu":
        return lambda x: op("where", x < 0, x * alpha, x)
    if name == "thresholdedrelu":
        return lambda x: op("where", x > alpha, x, 0.0)
    if name == "scaledtanh":
        return lambda x: op("tanh", x * beta) * alpha
    if name == "hardsigmoid":
        return lambda x: op("clip", x * alpha + beta, 0.0, 1.0)
    if name == "elu":
        return lambda x: op("where", x < 0, (op("exp", x) - 1.0) * alpha, x)
    raise OnnxImportError(f"activation {name!r} is not supported")


_DEFAULT_ALPHA = {"affine": 1.0, "leakyrelu": 0.01, "thresholdedrelu": 1.0, "scaledtanh": 1.0, "hardsigmoid": 0.2,
                  "elu": 1.0}
_DEFAULT_BETA = {"affine": 0.0, "scaledtanh": 1.0, "hardsigmoid": 0.5}
_GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}
_ACTIVATIONS = {"RNN": ["Tanh"], "GRU": ["Sigmoid", "Tanh"], "LSTM": ["Sigmoid", "Tanh", "Tanh"]}


def _activations(n, kind: str, dirs: int) -> list[list]:
    per = len(_ACTIVATIONS[kind])
    names = [a.decode() if isinstance(a, bytes) else a for a in n.attr("activations", _ACTIVATIONS[kind] * dirs)]
    if len(names) == per and dirs == 2:
        names = names * 2
    if len(names) != per * dirs:
        raise OnnxImportError(f"{kind} takes {per * dirs} activations for {dirs} direction(s), got {len(names)}")
    alphas, betas = list(n.attr("activation_alpha", [])), list(n.attr("activation_beta", []))
    fns = []
    for name in names:   # alpha and beta are consumed in order by the activations that take them
        low = name.lower()
        a = alphas.pop(0) if low in _DEFAULT_ALPHA and alphas else _DEFAULT_ALPHA.get(low)
        b = betas.pop(0) if low in _DEFAULT_BETA and betas else _DEFAULT_BETA.get(low)
        fns.append(_activation(name, a, b))
    return [fns[d * per:(d + 1) * per] for d in range(dirs)]


@converter("RNN", "GRU", "LSTM")
def _recurrent(n, x, w, r, b=None, seq_lens=None, h0=None, c0=None, p=None):
    kind = n.op_type
    g = _GATES[kind]
    direction = n.attr("direction", "forward")
    if direction not in ("forward", "reverse", "bidirectional"):
        raise OnnxImportError(f"direction must be forward, reverse or bidirectional, got {direction!r}")
    dirs = 2 if direction == "bidirectional" else 1
    hidden = n.attr("hidden_size", int(w.shape[1]) // g)
    if tuple(w.shape[:2]) != (dirs, g * hidden) or tuple(r.shape) != (dirs, g * hidden, hidden):
        raise OnnxImportError(f"W has shape {list(w.shape)} and R {list(r.shape)}; {kind} with hidden_size {hidden} "
                              f"and {dirs} direction(s) takes [{dirs}, {g * hidden}, input] and "
                              f"[{dirs}, {g * hidden}, {hidden}]")
    layout = n.attr("layout", 0)
    if layout:
        x = op("transpose", x, axes=(1, 0, 2))
        h0 = op("transpose", h0, axes=(1, 0, 2)) if h0 is not None else None
        c0 = op("transpose", c0, axes=(1, 0, 2)) if c0 is not None else None
    steps, batch = int(x.shape[0]), int(x.shape[1])
    dt = np.dtype(x.dtype)
    clip = n.attr("clip")
    acts = _activations(n, kind, dirs)
    before_reset = n.attr("linear_before_reset", 0)
    coupled = n.attr("input_forget", 0)
    zeros = np.zeros((dirs, batch, hidden), dt)
    h0 = zeros if h0 is None else h0
    c0 = zeros if c0 is None else c0
    lens = None if seq_lens is None else op("reshape", op("cast", seq_lens, dtype=np.int64), shape=(batch, 1))
    times = np.arange(steps, dtype=np.int64)
    ys, hs, cs = [], [], []
    for d in range(dirs):
        f, gact, hact = (acts[d] + [None, None])[:3]
        wt, rt = op("transpose", w[d]), op("transpose", r[d])
        xp = op("reshape", op("reshape", x, shape=(steps * batch, int(x.shape[2]))) @ wt, shape=(steps, batch, g * hidden))
        wb = rb = None
        if b is not None:
            wb, rb = b[d][:g * hidden], b[d][g * hidden:]
            xp = xp + wb
        peep = [p[d][i * hidden:(i + 1) * hidden] for i in range(3)] if p is not None else None

        def pre(v):
            return op("clip", v, -clip, clip) if clip is not None else v

        def cell(carry, xt, t, f=f, gact=gact, hact=hact, rt=rt, rb=rb, peep=peep):
            h, c = carry
            rec = h @ rt
            if kind == "RNN":
                new_h = f(pre(xt + rec + (rb if rb is not None else 0.0)))
                new_c = c
            elif kind == "GRU":
                xz, xr, xh = (xt[:, i * hidden:(i + 1) * hidden] for i in range(3))
                if rb is not None:
                    rec = rec + rb
                hz, hr, hh = (rec[:, i * hidden:(i + 1) * hidden] for i in range(3))
                z, rr = f(pre(xz + hz)), f(pre(xr + hr))
                if before_reset:
                    cand = gact(pre(xh + rr * hh))
                else:
                    hh2 = (rr * h) @ rt[:, 2 * hidden:]
                    cand = gact(pre(xh + hh2 + (rb[2 * hidden:] if rb is not None else 0.0)))
                new_h = (1.0 - z) * cand + z * h
                new_c = c
            else:
                z = xt + rec + (rb if rb is not None else 0.0)
                zi, zo, zf, zc = (z[:, i * hidden:(i + 1) * hidden] for i in range(4))
                if peep is not None:
                    zi, zf = zi + peep[0] * c, zf + peep[2] * c
                i_gate = f(pre(zi))
                f_gate = 1.0 - i_gate if coupled else f(pre(zf))
                new_c = f_gate * c + i_gate * gact(pre(zc))
                if peep is not None:
                    zo = zo + peep[1] * new_c
                new_h = f(pre(zo)) * hact(new_c)
            if lens is None:
                return (new_h, new_c), new_h
            live = t < lens   # [batch, 1]: steps past a sequence's length keep its state and output zeros
            return (op("where", live, new_h, h), op("where", live, new_c, c)), op("where", live, new_h, 0.0)

        (h_last, c_last), y = scan(lambda carry, xs: cell(carry, *xs), (h0[d], c0[d]), (xp, times),
                                   reverse=d == 1 or direction == "reverse")
        ys.append(op("expand_dims", y, axis=1))
        hs.append(op("expand_dims", h_last, axis=0))
        cs.append(op("expand_dims", c_last, axis=0))
    y = ys[0] if dirs == 1 else op("concatenate", ys, axis=1)        # [T, dirs, B, H]
    h_n = hs[0] if dirs == 1 else op("concatenate", hs, axis=0)      # [dirs, B, H]
    c_n = cs[0] if dirs == 1 else op("concatenate", cs, axis=0)
    if layout:
        y = op("transpose", y, axes=(2, 0, 1, 3))
        h_n, c_n = op("transpose", h_n, axes=(1, 0, 2)), op("transpose", c_n, axes=(1, 0, 2))
    return (y, h_n, c_n) if kind == "LSTM" else (y, h_n)

