"""Rewriting loop-level statements: map, walk and substitute through a statement
tree, and simplify one with the ranges of its loops. Shared by the schedule
primitives (``schedule/``) and the loop passes (``passes/loops.py``)."""
from __future__ import annotations

from . import expr as E
from .expr import Const, Expr, affine, affine_expr, simplify_index, simplify_int, substitute
from .loop import Accumulate, Alloc, For, If, Mma, Seq, Stmt, Store, WarpReduce


def replace_for(old: For, **changes) -> For:
    """``old`` with some of its fields replaced."""
    f = For(changes.get("var", old.var), changes.get("extent", old.extent), changes.get("body", old.body),
            changes.get("kind", old.kind), changes.get("start", old.start))
    return f


def map_stmt(s: Stmt, fn) -> Stmt | None:
    """Rebuild ``s`` bottom-up after ``fn``: ``fn(node)`` returns a replacement (used as
    is), or None to recurse into the node's children. A replacement of None-valued
    children (a removed statement) is dropped from its parent."""
    r = fn(s)
    if r is not None:
        return r if not isinstance(r, _Removed) else None
    if isinstance(s, For):
        body = map_stmt(s.body, fn)
        return None if body is None else replace_for(s, body=body)
    if isinstance(s, Seq):
        kids = [k for k in (map_stmt(x, fn) for x in s.stmts) if k is not None]
        return Seq(kids) if kids else None
    if isinstance(s, Alloc):
        body = map_stmt(s.body, fn)
        return None if body is None else Alloc(s.buffer, body)
    if isinstance(s, If):
        then = map_stmt(s.then, fn)
        orelse = map_stmt(s.orelse, fn) if s.orelse is not None else None
        if then is None and orelse is None:
            return None
        return If(s.cond, then if then is not None else Seq([]), orelse, s.likely)
    return s


class _Removed:
    """Returned by a ``map_stmt`` callback to delete the node."""


REMOVE = _Removed()


def subst_stmt(s: Stmt, vmap: dict, loads: dict | None = None, buffers: dict | None = None) -> Stmt:
    """Substitute variables (``vmap``), whole loads (``loads``: buffer -> fn(indices))
    and stored-to buffers (``buffers``: old -> new) throughout a statement."""
    def ex(e):
        return substitute(e, vmap, None, loads)

    def fn(x):
        if isinstance(x, For):
            return For(x.var, ex(x.extent), subst_stmt(x.body, vmap, loads, buffers), x.kind, ex(x.start))
        if isinstance(x, Store):
            buf = buffers.get(x.buffer, x.buffer) if buffers else x.buffer
            return Store(buf, [ex(i) for i in x.indices], ex(x.value))
        if isinstance(x, Accumulate):
            buf = buffers.get(x.buffer, x.buffer) if buffers else x.buffer
            return Accumulate(buf, [ex(i) for i in x.indices], x.combiner, ex(x.value),
                              [(ex(r), n) for r, n in x.rindex])
        if isinstance(x, WarpReduce):
            buf = buffers.get(x.buffer, x.buffer) if buffers else x.buffer
            return WarpReduce(buf, [ex(i) for i in x.indices], x.combiner)
        if isinstance(x, Mma):
            new = (lambda b: buffers.get(b, b)) if buffers else (lambda b: b)
            return Mma(new(x.acc), [ex(i) for i in x.indices], new(x.a), [ex(i) for i in x.a_index], new(x.b),
                       [ex(i) for i in x.b_index])
        if isinstance(x, If):
            return If(ex(x.cond), subst_stmt(x.then, vmap, loads, buffers),
                      subst_stmt(x.orelse, vmap, loads, buffers) if x.orelse is not None else None, x.likely)
        return None
    out = map_stmt(s, fn)
    return out if out is not None else Seq([])


def walk_stmts(s: Stmt, above: tuple = ()):
    """(statement, its ancestors outermost first) for every statement under ``s``."""
    yield s, above
    inner = above + (s,)
    if isinstance(s, For):
        yield from walk_stmts(s.body, inner)
    elif isinstance(s, Seq):
        for x in s.stmts:
            yield from walk_stmts(x, inner)
    elif isinstance(s, Alloc):
        yield from walk_stmts(s.body, inner)
    elif isinstance(s, If):
        yield from walk_stmts(s.then, inner)
        if s.orelse is not None:
            yield from walk_stmts(s.orelse, inner)


def fold_bool(e: Expr) -> Expr:
    """Fold comparisons of constants and and/or of constant booleans."""
    if isinstance(e, E.BinOp):
        a, b = fold_bool(e.a), fold_bool(e.b)
        if isinstance(a, Const) and isinstance(b, Const):
            ops = {"lt": lambda x, y: x < y, "le": lambda x, y: x <= y, "gt": lambda x, y: x > y,
                   "ge": lambda x, y: x >= y, "eq": lambda x, y: x == y, "ne": lambda x, y: x != y,
                   "and": lambda x, y: x and y, "or": lambda x, y: x or y}
            if e.op in ops:
                return Const(ops[e.op](a.value, b.value), E.bool_)
        if e.op in ("and", "or"):
            for x, y in ((a, b), (b, a)):
                if isinstance(x, Const):
                    if e.op == "and":
                        return y if x.value else Const(False, E.bool_)
                    return Const(True, E.bool_) if x.value else y
        return E.binop(e.op, a, b) if (a is not e.a or b is not e.b) else e
    return e


def simplify_sub(e: Expr) -> Expr:
    """(outer + x) - outer -> x for affine index expressions."""
    aff = affine(e)
    return affine_expr(*aff) if aff is not None else e


def simplify_stmt(s: Stmt, ranges: dict | None = None) -> Stmt:
    """Conditions folded and indices simplified with the ranges of the loops around them."""
    ranges = dict(ranges or {})

    def fn(x):
        if isinstance(x, For):
            r = dict(ranges)
            if isinstance(x.start, Const) and isinstance(x.extent, Const):
                r[x.var] = (x.start.value, x.start.value + x.extent.value - 1)
            return replace_for(x, body=simplify_stmt(x.body, r))
        if isinstance(x, Store):
            return Store(x.buffer, [simplify_sub(simplify_int(i, ranges)) for i in x.indices],
                         simplify_index(x.value, ranges))
        if isinstance(x, Accumulate):
            return Accumulate(x.buffer, [simplify_sub(simplify_int(i, ranges)) for i in x.indices], x.combiner,
                              simplify_index(x.value, ranges), x.rindex)
        if isinstance(x, If):
            cond = fold_bool(simplify_index(x.cond, ranges))
            then = simplify_stmt(x.then, ranges)
            orelse = simplify_stmt(x.orelse, ranges) if x.orelse is not None else None
            if isinstance(cond, Const):
                return then if cond.value else (orelse if orelse is not None else REMOVE)
            return If(cond, then, orelse, x.likely)
        return None
    return map_stmt(s, fn) or Seq([])
