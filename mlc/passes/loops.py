"""Loop-level passes: Func -> Func, run in order on every scheduled function by the
pass manager (``LOOP_PASSES`` in passes/manager.py), after the schedule and before
code generation.

A schedule (``schedule/``) writes loops with ``likely`` guards (where a split does
not divide an extent) and ``Accumulate`` statements (reductions); these passes turn
that into the plain loops code generation takes:

- ``partition``: guards removed by loop partitioning (the iterations where a guard
  always holds run unguarded; the rest are peeled or dropped);
- ``lower_accumulate``: ``acc += x`` as a load, the reduction's combine and a store
  (required: code generation has no accumulate statement);
- ``simplify``: conditions folded and indices simplified with the loops' ranges.

``lower_loops(func)`` runs all three without a pass manager (the tuner, tests).
"""
from __future__ import annotations

from ..ir import expr as E
from ..ir.expr import Const, Expr, Load, affine
from ..ir.loop import GPU_KINDS, Accumulate, Alloc, For, Func, If, Seq, Stmt, Store, buffers_used
from ..ir.stmt import map_stmt, replace_for, simplify_stmt, subst_stmt, walk_stmts
from ..ir.tensor import combine


def _with_body(func: Func, body: Stmt) -> Func:
    """``func`` with a new body; scratch buffers the body no longer uses are dropped."""
    used = buffers_used(body)
    out = Func(func.name, func.inputs, func.outputs, body, [b for b in func.scratch if b in used])
    out.aliased = set(func.aliased)
    return out


def partition(func: Func) -> Func:
    return _with_body(func, partition_stmt(func.body))


def _store_accumulation(x):
    if isinstance(x, Accumulate):
        return Store(x.buffer, x.indices, combine(x.combiner, Load(x.buffer, x.indices), x.value))
    return None


def lower_accumulate(func: Func) -> Func:
    return _with_body(func, map_stmt(func.body, _store_accumulation) or Seq([]))


def simplify(func: Func) -> Func:
    return _with_body(func, simplify_stmt(func.body))


def lower_loops(func: Func) -> Func:
    """Every loop pass in order: a scheduled function as the loops code generation takes."""
    return simplify(lower_accumulate(partition(func)))


# ----------------------------------------------------------------------------- loop partitioning

def _guard_terms(cond: Expr):
    """``e < n`` with affine e: (coeffs, const, n); else None."""
    if isinstance(cond, E.BinOp) and cond.op == "lt" and isinstance(cond.b, Const):
        aff = affine(cond.a)
        if aff is not None:
            return aff[0], aff[1], int(cond.b.value)
    return None


def partition_stmt(s: Stmt, ranges: dict | None = None, gpu: frozenset = frozenset()) -> Stmt:
    """Remove ``likely`` guards by loop partitioning. At a loop whose variable is the
    outermost one in a guard below it, the iterations where the guard holds for every
    inner iteration run unguarded; the rest are peeled (one iteration: the variable
    becomes a constant) or dropped (the guard never holds there). ``gpu``: the block
    and thread indices around ``s``, whose loops stay whole and whose guards stay."""
    ranges = dict(ranges or {})
    if isinstance(s, Seq):
        return Seq([partition_stmt(x, ranges, gpu) for x in s.stmts])
    if isinstance(s, Alloc):
        return Alloc(s.buffer, partition_stmt(s.body, ranges, gpu))
    if isinstance(s, If):
        if s.likely:
            t = _guard_terms(s.cond)
            if t is not None and all(v in ranges for v in t[0]):
                cs, c0, n = t
                lo = c0 + sum(min(c * ranges[v][0], c * ranges[v][1]) for v, c in cs.items())
                hi = c0 + sum(max(c * ranges[v][0], c * ranges[v][1]) for v, c in cs.items())
                if hi < n:
                    return partition_stmt(s.then, ranges, gpu)
                if lo >= n:
                    return Seq([])
        return If(s.cond, partition_stmt(s.then, ranges, gpu), partition_stmt(s.orelse, ranges, gpu) if s.orelse is not None else None,
                  s.likely)
    if not isinstance(s, For):
        return s
    if not (isinstance(s.start, Const) and isinstance(s.extent, Const)):
        return replace_for(s, body=partition_stmt(s.body, ranges, gpu))
    start, n = s.start.value, s.extent.value
    if n <= 0:
        return Seq([])
    inner = dict(ranges)
    inner[s.var] = (start, start + n - 1)
    if s.kind in GPU_KINDS:
        # a block or thread index stays whole (a launch's grid and block are one shape
        # each): the guards on it stay, as the device's bounds checks
        return replace_for(s, body=partition_stmt(s.body, inner, gpu | {s.var}))
    # the guards below whose outermost unresolved variable is this loop's: up to
    # ``limit`` they hold for every inner iteration; from a guard's ``dead`` on they
    # never hold, and once every statement below is dead the loop can stop
    limit = None
    dead_of: dict[int, int] = {}        # id(guard) -> first iteration where it never holds
    for g, above in walk_stmts(s.body):
        if not (isinstance(g, If) and g.likely):
            continue
        t = _guard_terms(g.cond)
        if t is None or s.var not in t[0] or t[0][s.var] <= 0:
            continue
        cs, c0, bound = t
        below = {a.var: a for a in above if isinstance(a, For)}
        hi_rest = lo_rest = 0
        ok = True
        for v, c in cs.items():
            if v is s.var:
                continue
            if v in ranges:
                lo, hi = ranges[v]
            elif v in below and isinstance(below[v].start, Const) and isinstance(below[v].extent, Const):
                lo, hi = below[v].start.value, below[v].start.value + below[v].extent.value - 1
            else:
                ok = False
                break
            hi_rest += max(c * lo, c * hi)
            lo_rest += min(c * lo, c * hi)
        if not ok:
            continue
        c = cs[s.var]
        v_ok = (bound - c0 - hi_rest - 1) // c + 1        # first iteration that may fail
        if v_ok <= start and any(v in gpu for v in cs):
            continue    # it fails for some block or thread in every iteration: peeling would only copy code
        limit = v_ok if limit is None else min(limit, v_ok)
        dead_of[id(g)] = -(-(bound - c0 - lo_rest) // c)  # first iteration that always fails
    end = start + n
    leaves = [(x, above) for x, above in walk_stmts(s.body) if isinstance(x, (Store, Accumulate))]
    if dead_of and leaves and all(any(id(a) in dead_of for a in above) for _, above in leaves):
        live = max(min(dead_of[id(a)] for a in above if id(a) in dead_of) for _, above in leaves)
        end = max(start, min(end, live))
        if end == start:
            return Seq([])
        n = end - start
    if limit is None or limit >= end:
        inner[s.var] = (start, end - 1)
        return replace_for(s, extent=Const(n), body=partition_stmt(s.body, inner, gpu))
    limit = max(limit, start)
    parts = []
    if limit > start:
        main = dict(ranges)
        main[s.var] = (start, limit - 1)
        parts.append(replace_for(s, start=Const(start), extent=Const(limit - start), body=partition_stmt(s.body, main, gpu)))
    for v in range(limit, start + n):
        if start + n - limit > 4:
            rest = dict(ranges)
            rest[s.var] = (limit, start + n - 1)
            parts.append(replace_for(s, start=Const(limit), extent=Const(start + n - limit), body=partition_stmt(s.body, rest, gpu)))
            break
        parts.append(partition_stmt(subst_stmt(s.body, {s.var: Const(v)}), ranges, gpu))
    return Seq(parts)
