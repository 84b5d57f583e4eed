"""Schedule primitives: checked transformations of a kernel's loop nest.

A ``Schedule`` starts from the kernel's *default loop nest*: every stage as a
perfect nest over its output axes, then its reduction axes, around one
``Store`` (or ``Accumulate`` for a reduction, after an init nest that fills the
stage with the combiner's identity)::

    for i in [0, 64) { for j in [0, 64) { T0[i, j] = 0.0 } }          // T0's init nest
    for i in [0, 64) { for j in [0, 64) { for k in [0, 32) {
      T0[i, j] += A[i, k] * B[k, j] } } }

Primitives name loops by the names printed there (``Schedule.loops()``) and
each either transforms the nest or raises ``ScheduleError`` saying why the
request is illegal. A split that does not divide its loop leaves a ``likely``
bounds guard; ``finalize`` partitions loops so that only the last block runs
guarded, with static extents everywhere. A loop may exist in several copies
(after such a partition, or inside a register accumulator's init and
write-back); a primitive applies to every copy of the loop it names.

Every call is recorded in ``Schedule.trace`` as ``{"prim": name, "args": [...]}``
(JSON); ``replay(kernel, target, trace)`` applies a trace to a fresh default nest,
which is how tuned schedules are stored and reused.
"""
from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import dataclass, field

from ..ir import expr as E
from ..ir.expr import Const, Expr, Load, Var, affine_expr as _lin, linear_coefficient, substitute
from ..ir.loop import (GPU_KINDS, Accumulate, Alloc, Barrier, Buffer, For, Func, If, Mma, Seq, Stmt, Store,
                       WarpReduce, buffers_used)
from ..ir.stmt import (REMOVE, fold_bool as _fold_bool, map_stmt, replace_for as _for, simplify_stmt as _simplify_stmt,
                       simplify_sub as _simplify_sub, subst_stmt, walk_stmts)
from ..ir.tensor import Compute, Kernel, Placeholder, Reduce, combine, reduce_identity
from ..ir.types import float16, float32
from ..target import Target

MAX_VECTOR_LANES = 64      # wider vector loops make LLVM spill; split first
MAX_UNROLL = 512           # fully unrolled iterations before code size explodes


class ScheduleError(ValueError):
    """An illegal or impossible schedule request; the message says why."""


def primitive(fn):
    """A schedule primitive is all or nothing: when it refuses, the schedule (nests,
    names, trace) is left exactly as it was."""
    @functools.wraps(fn)
    def wrapper(self, *args, **kwargs):
        saved = self._snapshot()
        try:
            return fn(self, *args, **kwargs)
        except BaseException:
            self._restore(saved)
            raise
    return wrapper


# ============================================================================ statement utilities

def subst_loads(e: Expr, buf: Buffer, fn) -> Expr:
    """``e`` with every load of ``buf`` replaced by ``fn(indices)``."""
    return substitute(e, {}, None, {buf: fn})


def _loads(e: Expr):
    return [x for x in E.walk(e) if isinstance(x, Load)]


def stmt_exprs(s: Stmt) -> list[Expr]:
    if isinstance(s, (Store, Accumulate)):
        return [*s.indices, s.value]
    if isinstance(s, For):
        return [s.start, s.extent]
    if isinstance(s, If):
        return [s.cond]
    return []


def _guard_innermost(s: Stmt, cond: Expr) -> Stmt:
    """Wrap the body under the perfect loop chain starting at ``s`` in a likely guard,
    so the chain stays perfect (reorder works across it)."""
    if isinstance(s, For):
        return _for(s, body=_guard_innermost(s.body, cond))
    return If(cond, s, None, likely=True)


def _const(e: Expr) -> int:
    if not isinstance(e, Const):
        raise ScheduleError(f"loop bound {E.format_expr(e)} is not a constant")
    return int(e.value)


def split_affine(e: Expr, inner: list[Var]):
    """e = outer + sum(c_v * v for v in inner): (outer, {v: c}), or None if e is not
    affine in the inner variables."""
    coeffs = {}
    for v in inner:
        c = linear_coefficient(e, v)
        if c is None:
            return None
        if c:
            coeffs[v] = c
    outer = substitute(e, {v: Const(0) for v in coeffs}) if coeffs else e
    return outer, coeffs


def _below(above: tuple, L: For) -> tuple:
    """The ancestors of a statement that lie inside ``L`` (``above`` runs outermost first)."""
    k = next(i for i, a in enumerate(above) if a is L)
    return above[k + 1:]


def _inner_ranges(above: tuple, L: For) -> dict:
    """Var -> (lo, hi) inclusive for the loops between ``L`` and a statement."""
    return {a.var: (_const(a.start), _const(a.start) + _const(a.extent) - 1)
            for a in _below(above, L) if isinstance(a, For)}


# ============================================================================ stages

@dataclass
class Stage:
    """One stage of the kernel: what it computes, where its loops are."""
    name: str
    buffer: Buffer
    axes: list            # the Compute's index Vars
    extents: list
    value: Expr           # over ``axes`` (and ``raxes``), reading Buffers
    combiner: str | None = None
    raxes: list = field(default_factory=list)
    rextents: list = field(default_factory=list)
    guard: Expr | None = None   # elements outside it are never read (a packed buffer's padding)
    output: bool = False
    loop_names: list = field(default_factory=list)    # default nest: spatial, then reduction
    status: str = "root"        # root | attached | inlined
    touched: bool = False       # its loops were transformed

    @property
    def is_reduction(self) -> bool:
        return self.combiner is not None


class Schedule:
    def __init__(self, kernel: Kernel, target: "Target | str | None" = None):
        self.kernel = kernel
        self.target = Target.get(target)
        self.trace: list[dict] = []
        self._depth = 0
        self.taken: set[str] = set()
        self.loop_stage: dict[str, str] = {}
        self.tensor_buffers: dict = {}
        self.inputs = []
        for t in kernel.inputs:
            if isinstance(t, Placeholder):
                self.tensor_buffers[t] = Buffer(t.name, t.shape, t.dtype)
                self.inputs.append(self.tensor_buffers[t])
        for s in kernel.stages:
            self.tensor_buffers[s] = Buffer(s.name, s.shape, s.dtype)
        self.stages: dict[str, Stage] = {}
        self.order: list[str] = []
        self.nests: dict[str, Stmt] = {}
        self.extra_scratch: list[Buffer] = []
        self.acc_of: dict = {}          # register accumulator Buffer -> stage name
        for s in kernel.stages:
            st = self._stage_from(s)
            self.stages[st.name] = st
            self.order.append(st.name)
            self.nests[st.name] = self._nest(st)

    # ------------------------------------------------------------------ building nests
    def _stage_from(self, s: Compute) -> Stage:
        buf = self.tensor_buffers[s]
        st = Stage(s.name, buf, list(s.axes), list(s.shape), None, output=s in self.kernel.outputs)
        if isinstance(s.body, Reduce):
            st.combiner = s.body.combiner
            st.raxes, st.rextents = list(s.body.axes), list(s.body.extents)
            st.value = substitute(s.body.body, {}, self.tensor_buffers)
        else:
            st.value = substitute(s.body, {}, self.tensor_buffers)
        names = [v.name for v in st.axes] + [v.name for v in st.raxes]
        st.loop_names = [self._fresh(n, st.name) for n in names]
        return st

    def unused_name(self, base: str) -> str:
        """``base``, or ``base1``, ``base2``, ... : the first name no loop or stage has (not
        reserved: the rules pass it to the primitive that makes the loop)."""
        name, n = base, 1
        while name in self.taken:
            name, n = f"{base}{n}", n + 1
        return name

    def _fresh(self, base: str, stage: str) -> str:
        name = self.unused_name(base)
        self.taken.add(name)
        self.loop_stage[name] = stage
        return name

    def _nest(self, st: Stage, region=None, buffer: Buffer | None = None, bounds_guard: bool = False) -> Stmt:
        """The default nest of ``st`` over ``region`` (per axis: (start expr, extent);
        default: the whole stage), storing at region-relative indices into ``buffer``
        when given. A reduction gets its init nest first."""
        rank = len(st.axes)
        region = region or [(Const(0), n) for n in st.extents]
        buf = buffer or st.buffer
        local = buffer is not None
        names = st.loop_names

        def nest(init: bool) -> Stmt:
            lv = [Var(names[d] + ("_init" if init else "")) for d in range(rank)]
            gidx = [region[d][0] + lv[d] for d in range(rank)]
            vmap = dict(zip(st.axes, gidx))
            idx = lv if local else gidx
            if init:
                body: Stmt = Store(buf, idx, reduce_identity(st.combiner, buf.dtype))
            elif st.is_reduction:
                rv = [Var(n) for n in names[rank:]]
                vmap.update(zip(st.raxes, rv))
                body = Accumulate(buf, idx, st.combiner, substitute(st.value, vmap), list(zip(rv, st.rextents)))
                for v, n in reversed(list(zip(rv, st.rextents))):
                    body = For(v, n, body)
            else:
                body = Store(buf, idx, substitute(st.value, vmap))
            if bounds_guard:
                for d in reversed(range(rank)):
                    body = If(E.binop("lt", gidx[d], Const(st.extents[d])), body, None, likely=True)
            if st.guard is not None:
                body = If(substitute(st.guard, vmap), body, None, likely=True)
            for d in reversed(range(rank)):
                body = For(lv[d], region[d][1], body)
            return body

        if not st.is_reduction:
            return nest(False)
        for n in names[:rank]:
            self.taken.add(n + "_init")
            self.loop_stage[n + "_init"] = st.name
        return Seq([nest(True), nest(False)])

    def _snapshot(self):
        return (dict(self.nests), list(self.order), {k: dataclasses.replace(v) for k, v in self.stages.items()},
                set(self.taken), dict(self.loop_stage), list(self.extra_scratch), dict(self.acc_of),
                len(self.trace), self._depth)

    def _restore(self, saved) -> None:
        (self.nests, self.order, self.stages, self.taken, self.loop_stage, self.extra_scratch, self.acc_of,
         n, self._depth) = saved
        del self.trace[n:]

    # ------------------------------------------------------------------ lookup
    def loops(self) -> dict[str, list[str]]:
        """Stage -> the names of its loops, outermost first, as they stand."""
        out: dict[str, list[str]] = {}
        for s, _ in self._walk():
            if isinstance(s, For):
                names = out.setdefault(self.loop_stage.get(s.var.name, "?"), [])
                if s.var.name not in names:
                    names.append(s.var.name)
        return out

    def _walk(self):
        for name in self.order:
            if name in self.nests:
                yield from walk_stmts(self.nests[name])

    def _find(self, loop: str) -> list:
        found = [(s, above) for s, above in self._walk() if isinstance(s, For) and s.var.name == loop]
        if not found:
            known = ", ".join(sorted({s.var.name for s, _ in self._walk() if isinstance(s, For)}))
            raise ScheduleError(f"no loop named {loop!r}; the loops are: {known}")
        return found

    def _stage(self, name: str) -> Stage:
        if name not in self.stages:
            raise ScheduleError(f"no stage named {name!r}; the stages are: {', '.join(self.stages)}")
        return self.stages[name]

    def _rewrite(self, fn) -> None:
        for name in list(self.nests):
            out = map_stmt(self.nests[name], fn)
            self.nests[name] = out if out is not None else Seq([])

    def _touch(self, loop: str) -> None:
        st = self.stages.get(self.loop_stage.get(loop, ""))
        if st is not None:
            st.touched = True

    def _record(self, prim: str, *args) -> None:
        if self._depth == 0:
            self.trace.append({"prim": prim, "args": [list(a) if isinstance(a, tuple) else a for a in args]})

    def _check_name(self, name: str) -> None:
        if not isinstance(name, str) or not name.replace("_", "").isalnum():
            raise ScheduleError(f"loop name {name!r} must be letters, digits and underscores")
        if name in self.taken:
            raise ScheduleError(f"a loop named {name!r} exists already; pass other names")

    # ================================================================== loop primitives
    @primitive
    def split(self, loop: str, factor: int, names=None) -> tuple[str, str]:
        """``for v in [0, n)`` -> ``for vo in [0, ceil(n/f)) { for vi in [0, f) }`` with
        ``v = vo * f + vi``; when f does not divide n the body is guarded (``likely``)
        and ``finalize`` peels the last block."""
        fors = self._find(loop)
        if not isinstance(factor, int) or isinstance(factor, bool) or factor < 1:
            raise ScheduleError(f"split factor must be a positive integer, got {factor!r}")
        if names is not None and not (isinstance(names, (list, tuple)) and len(names) == 2):
            raise ScheduleError(f"split names must be a pair [outer, inner], got {names!r}")
        outer, inner = names or (loop + "o", loop + "i")
        if outer == inner:
            raise ScheduleError(f"split names must differ, got {outer!r} twice")
        for n in (outer, inner):
            self._check_name(n)
        for f, _ in fors:
            if f.kind != "serial":
                raise ScheduleError(f"cannot split {f.kind} loop {loop}: split before annotating it")
            _const(f.extent), _const(f.start)
        vo, vi = Var(outer), Var(inner)

        def fn(s):
            if isinstance(s, For) and s.var.name == loop:
                n, start = _const(s.extent), s.start
                body = subst_stmt(s.body, {s.var: start + vo * factor + vi})
                if n % factor:
                    body = _guard_innermost(body, E.binop("lt", vo * factor + vi, Const(n)))
                return For(vo, -(-n // factor), For(vi, factor, body))
            return None
        self._rewrite(fn)
        stage = self.loop_stage[loop]
        for n in (outer, inner):
            self.taken.add(n)
            self.loop_stage[n] = stage
        self._touch(loop)
        self._record("split", loop, factor, [outer, inner])
        return outer, inner

    @primitive
    def reorder(self, *loops: str) -> None:
        """Permute loops of one perfect nest into the given order (outermost first);
        loops not named keep their places."""
        if len(set(loops)) != len(loops) or len(loops) < 2:
            raise ScheduleError(f"reorder needs two or more distinct loops, got {list(loops)}")
        for name in loops:
            self._find(name)
        owners = {self.loop_stage.get(n) for n in loops}
        if len(owners) > 1:
            raise ScheduleError(f"cannot reorder {', '.join(loops)}: they belong to different stages "
                                f"({', '.join(sorted(str(o) for o in owners))})")
        names = set(loops)
        done = [0]
        complete = [0]

        def fn(s):
            if not (isinstance(s, For) and s.var.name in names):
                return None
            chain, cur = [s], s.body
            while isinstance(cur, For):
                chain.append(cur)
                cur = cur.body
            in_chain = [f for f in chain if f.var.name in names]
            below = {x.var.name for x, _ in walk_stmts(cur) if isinstance(x, For)} & names
            if below:
                raise ScheduleError(f"cannot reorder {', '.join(loops)}: loop {sorted(below)[0]} is not perfectly "
                                    f"nested in {s.var.name} (other statements lie between them)")
            if len(in_chain) < 2:
                return None
            chain_vars = {f.var for f in chain}
            for f in in_chain:
                if any(E.uses_var(e, v) for e in (f.start, f.extent) for v in chain_vars):
                    raise ScheduleError(f"cannot reorder: the bounds of {f.var.name} depend on an enclosing loop")
            wanted = [f for name in loops for f in in_chain if f.var.name == name]
            complete[0] += len(in_chain) == len(loops)
            it = iter(wanted)
            new = [next(it) if f.var.name in names else f for f in chain]
            body = cur
            for f in reversed(new):
                body = _for(f, body=body)
            done[0] += 1
            return body
        self._rewrite(fn)
        if not complete[0]:
            raise ScheduleError(f"cannot reorder {', '.join(loops)}: they are not nested in one another")
        for name in loops:
            self._touch(name)
        self._record("reorder", *loops)

    @primitive
    def fuse(self, outer: str, inner: str, name: str | None = None) -> str:
        """``for a { for b { S } }`` -> ``for ab in [0, na * nb) { S[a = ab / nb, b = ab % nb] }``."""
        name = name or f"{outer}_{inner}"
        self._check_name(name)
        fused = Var(name)
        self._find(outer)

        def fn(s):
            if isinstance(s, For) and s.var.name == outer:
                b = s.body
                if not (isinstance(b, For) and b.var.name == inner):
                    raise ScheduleError(f"cannot fuse {outer} and {inner}: {inner} is not directly inside {outer}")
                for f in (s, b):
                    if f.kind != "serial" or _const(f.start) != 0:
                        raise ScheduleError(f"cannot fuse: {f.var.name} must be a serial loop starting at 0")
                nb = _const(b.extent)
                body = subst_stmt(b.body, {s.var: fused // nb, b.var: fused % nb})
                return For(fused, _const(s.extent) * nb, body)
            return None
        self._rewrite(fn)
        self.taken.add(name)
        self.loop_stage[name] = self.loop_stage[outer]
        self._touch(outer)
        self._record("fuse", outer, inner, name)
        return name

    @primitive
    def tile(self, a: str, b: str, fa: int, fb: int) -> tuple[str, str, str, str]:
        """split both loops and order them ``ao, bo, ai, bi``."""
        self._depth += 1
        try:
            ao, ai = self.split(a, fa)
            bo, bi = self.split(b, fb)
            self.reorder(ao, bo, ai, bi)
        finally:
            self._depth -= 1
        self._record("tile", a, b, fa, fb)
        return ao, bo, ai, bi

    def _annotate(self, loop: str, kind: str, check) -> None:
        fors = self._find(loop)
        for f, above in fors:
            if f.kind != "serial":
                raise ScheduleError(f"loop {loop} is already {f.kind}")
            check(f, above)

        def fn(s):
            if isinstance(s, For) and s.var.name == loop:
                return _for(s, kind=kind, body=map_stmt(s.body, fn))
            return None
        self._rewrite(fn)
        self._touch(loop)

    def _writes(self, f: For):
        """(statement, whether its buffer is allocated inside ``f``) for every store under f."""
        inside = {s.buffer for s, _ in walk_stmts(f.body) if isinstance(s, Alloc)}
        return [(s, s.buffer in inside) for s, _ in walk_stmts(f.body) if isinstance(s, (Store, Accumulate))]

    def _check_independent(self, f: For, what: str, lanes_ok: bool = False) -> None:
        """Iterations of ``f`` must write disjoint elements: no reduction over f, and every
        store to a buffer that outlives an iteration depends on f (``lanes_ok``: an
        accumulator with one partial per lane of f qualifies)."""
        for s, private in self._writes(f):
            if private or (lanes_ok and isinstance(s, Accumulate) and s.buffer in self.acc_of
                           and s.indices and s.indices[-1] is f.var):
                continue
            if isinstance(s, Accumulate) and any(E.uses_var(r, f.var) for r, _ in s.rindex):
                raise ScheduleError(f"cannot {what} {f.var.name}: it is a reduction loop of {s.buffer.name} "
                                    "(iterations would race on the same elements)")
            if not any(E.uses_var(i, f.var) for i in s.indices):
                raise ScheduleError(f"cannot {what} {f.var.name}: every iteration writes the same elements of "
                                    f"{s.buffer.name}")

    @primitive
    def vectorize(self, loop: str) -> None:
        """Run the loop's iterations as the lanes of one vector: innermost, constant extent.
        A reduction loop accumulating into a register accumulator gets one partial
        accumulator per lane, folded together where the accumulator is read."""
        fors = self._find(loop)
        accs = {w.buffer for f, _ in fors for w, _ in walk_stmts(f.body)
                if isinstance(w, Accumulate) and any(E.uses_var(r, f.var) for r, _ in w.rindex)}
        if accs and all(b in self.acc_of for b in accs) and len(accs) == 1:
            self._lane_partials(loop, fors, accs.pop())

        def check(f, above):
            n = _const(f.extent)
            if _const(f.start) != 0:
                raise ScheduleError(f"cannot vectorize {loop}: it starts at {f.start}, not 0")
            if n > MAX_VECTOR_LANES:
                raise ScheduleError(f"cannot vectorize {loop}: {n} lanes is too wide (at most {MAX_VECTOR_LANES}); "
                                    "split it first")
            for s, _ in walk_stmts(f.body):
                if isinstance(s, (For, Alloc)):
                    raise ScheduleError(f"cannot vectorize {loop}: it is not an innermost loop")
                if isinstance(s, If) and not s.likely:
                    raise ScheduleError(f"cannot vectorize {loop}: its body branches")
            if any(a.kind == "vector" for a in above if isinstance(a, For)):
                raise ScheduleError(f"cannot vectorize {loop}: it is inside another vector loop")
            self._check_independent(f, "vectorize", lanes_ok=True)
        self._annotate(loop, "vector", check)
        self._record("vectorize", loop)

    def _lane_partials(self, loop: str, fors, acc: Buffer) -> None:
        n = _const(fors[0][0].extent)
        if any(_const(f.extent) != n for f, _ in fors):
            raise ScheduleError(f"cannot vectorize {loop}: its copies have different extents")
        stage = self.acc_of[acc]
        st = self.stages[stage]
        lanes = Buffer("vacc", (*acc.shape, n), acc.dtype, "local")
        lane_of = {id(f): f.var for f, _ in fors}
        ident = reduce_identity(st.combiner, acc.dtype)

        def fold(idx):
            v = Load(lanes, [*idx, Const(0)])
            for k in range(1, n):
                v = combine(st.combiner, v, Load(lanes, [*idx, Const(k)]))
            return v

        def fn(x, lane=None):
            if isinstance(x, For) and id(x) in lane_of:
                return _for(x, body=map_stmt(x.body, lambda y: fn(y, x.var)))
            if isinstance(x, Accumulate) and x.buffer is acc:
                if lane is None:
                    raise ScheduleError(f"cannot vectorize {loop}: {stage} also accumulates outside it")
                return Accumulate(lanes, [*x.indices, lane], x.combiner, x.value, x.rindex)
            if isinstance(x, Alloc) and x.buffer is acc:
                return Alloc(lanes, map_stmt(x.body, fn))
            if isinstance(x, Store) and x.buffer is acc:
                lv = Var(f"{loop}_lane")
                fill = For(lv, n, Store(lanes, [*x.indices, lv], ident), "vector")
                if isinstance(x.value, Const) and x.value.value == ident.value:
                    return fill
                return Seq([fill, Store(lanes, [*x.indices, Const(0)], subst_loads(x.value, acc, fold))])
            if isinstance(x, (Store, Accumulate)):
                return type(x)(x.buffer, x.indices, subst_loads(x.value, acc, fold)) if isinstance(x, Store) else \
                    Accumulate(x.buffer, x.indices, x.combiner, subst_loads(x.value, acc, fold), x.rindex)
            return None
        self._rewrite(fn)
        self.taken.add(f"{loop}_lane")
        del self.acc_of[acc]
        self.acc_of[lanes] = stage

    @primitive
    def parallel(self, loop: str) -> None:
        """Spread the loop's iterations over the CPU's threads."""
        def check(f, above):
            if any(isinstance(a, For) and a.kind in ("parallel", "vector") + GPU_KINDS for a in above) or any(
                    isinstance(s, For) and s.kind == "parallel" for s, _ in walk_stmts(f.body)):
                raise ScheduleError(f"cannot parallelize {loop}: parallel loops do not nest")
            self._check_independent(f, "parallelize")
        self._annotate(loop, "parallel", check)
        self._record("parallel", loop)

    @primitive
    def unroll(self, loop: str) -> None:
        def check(f, above):
            n = _const(f.extent)
            if n > MAX_UNROLL:
                raise ScheduleError(f"cannot unroll {loop}: {n} iterations (at most {MAX_UNROLL}); split it first")
        self._annotate(loop, "unroll", check)
        self._record("unroll", loop)

    @primitive
    def bind(self, loop: str, axis: str) -> None:
        """Map the loop onto GPU blocks or threads (``blockIdx.x`` ... ``threadIdx.z``)."""
        if axis not in GPU_KINDS:
            raise ScheduleError(f"cannot bind {loop} to {axis!r}: choose one of {', '.join(GPU_KINDS)}")
        if self.target.kind != "cuda":
            raise ScheduleError(f"cannot bind {loop} to {axis}: target {self.target.name} is not a GPU "
                                "(use parallel for CPU threads)")

        def check(f, above):
            if any(isinstance(a, For) and a.kind == axis for a in above):
                raise ScheduleError(f"cannot bind {loop}: an enclosing loop is bound to {axis} already")
            if _const(f.extent) != 1:   # one iteration cannot race with another
                self._check_independent(f, "bind")
        self._annotate(loop, axis, check)
        self._record("bind", loop, axis)

    @primitive
    def add_loop(self, stage: str, name: str) -> str:
        """Wrap the stage's whole nest (init nest included) in a loop of one iteration:
        a stage without loops of its own (a scalar, a full reduction) gets one to bind
        to a GPU block or thread."""
        st = self._stage(stage)
        if st.status != "root" or stage not in self.nests:
            raise ScheduleError(f"cannot add a loop around {stage}: it is {st.status}")
        self._check_name(name)
        self.nests[stage] = For(Var(name), 1, self.nests[stage])
        self.taken.add(name)
        self.loop_stage[name] = stage
        st.touched = True
        self._record("add_loop", stage, name)
        return name

    # ================================================================== GPU primitives
    def _thread_chain(self, L: For) -> list[For]:
        """The block's thread loops inside ``L``: the widest loop per axis, z, y, x."""
        widest: dict[str, For] = {}
        for f, _ in walk_stmts(L.body):
            if isinstance(f, For) and f.kind.startswith("threadIdx"):
                if f.kind not in widest or _const(f.extent) > _const(widest[f.kind].extent):
                    widest[f.kind] = f
        return [widest[k] for k in ("threadIdx.z", "threadIdx.y", "threadIdx.x") if k in widest]

    def _gpu_loop(self, loop: str, what: str) -> list:
        """The copies of ``loop``: serial, inside a blockIdx loop, outside threadIdx loops,
        with thread loops inside it."""
        copies = self._find(loop)
        for f, above in copies:
            kinds = [a.kind for a in above if isinstance(a, For)]
            if f.kind != "serial" or not any(k.startswith("blockIdx") for k in kinds) or any(
                    k.startswith("threadIdx") for k in kinds):
                raise ScheduleError(f"cannot {what} at {loop}: it must be a serial loop of a block, outside its "
                                    "thread loops (bind the block and thread loops first)")
            if not self._thread_chain(f):
                raise ScheduleError(f"cannot {what} at {loop}: no thread loops inside it")
        return copies

    def _fresh_threads(self, chain: list[For], base: str) -> list[Var]:
        out = []
        for f in chain:
            name = self._fresh(f"{base}_{f.kind[-1]}", self.loop_stage.get(f.var.name, "?"))
            out.append(Var(name))
        return out

    @staticmethod
    def _over_threads(chain: list[For], tvars: list[Var], body: Stmt) -> Stmt:
        for f, v in reversed(list(zip(chain, tvars))):
            body = For(v, f.extent, body, f.kind)
        return body

    @primitive
    def register_tile(self, stage: str, loop: str, epilogue: str | None = None) -> str:
        """Accumulate a reduction in per-thread registers across ``loop``: a serial loop of
        a block (the k-tiles of a matmul) holding the whole reduction, its thread loops
        inside. Each thread's accumulator (the elements it updates inside its thread loops)
        is allocated at the block, set to the identity in a thread phase before ``loop``
        and stored in one after it; the stage's init nest goes away::

            blockIdx.x bj { for ko { threadIdx.x tx { for rj { C[bj*64 + tx*4 + rj] += ... } } } }
            ->
            blockIdx.x bj {
              alloc acc: f32[4] local                       // per thread
              threadIdx.x tx' { for rj { acc[rj] = 0.0 } }
              for ko { threadIdx.x tx { for rj { acc[rj] += ... } } }
              threadIdx.x tx' { for rj { C[bj*64 + tx'*4 + rj] = acc[rj] } }
            }

        ``epilogue``: an elementwise stage that reads only this one's elements, each at its
        own index (a bias add, an activation), computed from the registers as they are
        stored instead of ``stage`` (which must be read by nothing else).
        """
        st = self._stage(stage)
        what = f"register_tile {stage}"
        if not st.is_reduction:
            raise ScheduleError(f"cannot {what}: it is not a reduction")
        if any(v == stage for v in self.acc_of.values()):
            raise ScheduleError(f"cannot {what}: it accumulates in registers already")
        ep = self._check_epilogue(st, epilogue, what) if epilogue is not None else None
        copies = self._gpu_loop(loop, what)
        ident = reduce_identity(st.combiner, st.buffer.dtype)
        acc_buf: list[Buffer] = []

        def fn(s):
            if not (isinstance(s, For) and any(s is L for L, _ in copies)):
                return None
            above_L = next(a for L, a in copies if L is s)
            accs = [(w, a) for w, a in walk_stmts(s.body, (*above_L, s))
                    if isinstance(w, Accumulate) and w.buffer is st.buffer]
            if not accs:
                raise ScheduleError(f"cannot {what} at {loop}: it does not accumulate there")
            chain = self._thread_chain(s)
            boxes = None
            for w, above in accs:
                below = _below(above, s)
                threads = [a for a in below if isinstance(a, For) and a.kind.startswith("threadIdx")]
                if not threads:
                    raise ScheduleError(f"cannot {what} at {loop}: an accumulation lies outside the thread loops")
                inner = below[below.index(threads[-1]) + 1:]
                rng = {a.var: (_const(a.start), _const(a.start) + _const(a.extent) - 1) for a in inner
                       if isinstance(a, For)}
                serial = {a.var for a in (s, *below[:below.index(threads[-1])])
                          if isinstance(a, For) and not a.kind.startswith("threadIdx")}
                if any(E.uses_var(r, a.var) for r, _ in w.rindex for a in above_L if isinstance(a, For)):
                    raise ScheduleError(f"cannot {what} at {loop}: the reduction continues outside {loop}")
                box = []
                for e in w.indices:
                    sa = split_affine(e, list(rng))
                    if sa is None or any(E.uses_var(sa[0], v) for v in serial):
                        raise ScheduleError(f"cannot {what} at {loop}: index {E.format_expr(e)} is not an affine "
                                            "function of the thread and register loops")
                    o, cs = sa
                    box.append((o, sum(min(c * rng[v][0], c * rng[v][1]) for v, c in cs.items()),
                                sum(max(c * rng[v][0], c * rng[v][1]) for v, c in cs.items()), cs))
                if boxes is not None and [E.format_expr(b[0]) for b in box] != [E.format_expr(b[0]) for b in boxes]:
                    raise ScheduleError(f"cannot {what} at {loop}: accumulations at unrelated offsets")
                boxes = box
            shape = [h - lo + 1 for _, lo, h, _ in boxes]
            acc = acc_buf[0] if acc_buf else Buffer("acc", shape, st.buffer.dtype, "local")
            acc_buf[:] = [acc]
            tv = self._fresh_threads(chain, f"{loop}_t")
            tmap = dict(zip([f.var for f in chain], tv))

            def region(make) -> Stmt:
                names = [self._fresh(f"{loop}_r{d}", stage) for d in range(len(shape))]
                lv = [Var(n) if n_ > 1 else Const(0) for n, n_ in zip(names, shape)]
                gidx = [substitute(o, tmap) + lo + v for (o, lo, _, _), v in zip(boxes, lv)]
                body = make(lv, gidx)
                for v, n_ in reversed(list(zip(lv, shape))):
                    if n_ > 1:
                        body = For(v, n_, body)
                return self._over_threads(chain, tv, body)

            def bounded(lv, g):
                if ep is None:
                    body: Stmt = Store(st.buffer, g, Load(acc, lv))
                else:
                    value = subst_loads(substitute(ep.value, dict(zip(ep.axes, g))), st.buffer, lambda _: Load(acc, lv))
                    body = Store(ep.buffer, g, value)
                for d in reversed(range(len(g))):
                    body = If(E.binop("lt", g[d], Const(st.extents[d])), body, None, likely=True)
                return body
            init = region(lambda lv, g: Store(acc, lv, ident))
            writeback = region(bounded)

            def to_acc(x):
                if isinstance(x, Accumulate) and x.buffer is st.buffer:
                    idx = [_simplify_sub(E.binop("sub", i, o + lo)) for i, (o, lo, _, _) in zip(x.indices, boxes)]
                    return Accumulate(acc, idx, x.combiner, x.value, x.rindex)
                return None
            return Alloc(acc, Seq([init, map_stmt(s, to_acc), writeback]))

        self._rewrite(fn)
        self._rewrite(lambda x: REMOVE if isinstance(x, For) and x.var.name.endswith("_init")
                      and self.loop_stage.get(x.var.name) == stage else None)
        self.acc_of[acc_buf[0]] = stage
        st.touched = True
        if ep is None:
            self._record("register_tile", stage, loop)
        else:
            del self.nests[ep.name]
            ep.status = "attached"
            self._record("register_tile", stage, loop, epilogue)
        return acc_buf[0].name

    def _check_epilogue(self, prod: Stage, name: str, what: str) -> Stage:
        """The stage ``name`` if it can be computed from ``prod``'s registers as they are stored."""
        ep = self._root(name, f"{what} with epilogue")
        if ep.is_reduction or ep.extents != prod.extents:
            raise ScheduleError(f"cannot {what} with epilogue {name}: it must be elementwise over {prod.name}'s shape")
        loads = [x for x in _loads(ep.value) if x.source is prod.buffer]
        if not loads or any(len(x.indices) != len(ep.axes) or any(i is not a for i, a in zip(x.indices, ep.axes))
                            for x in loads):
            raise ScheduleError(f"cannot {what} with epilogue {name}: it must read {prod.name} element for element, "
                                "at its own index")
        for x in _loads(ep.value):
            owner = self._stage_of_buffer(x.source)
            if owner not in (None, prod.name) and self.order.index(owner) > self.order.index(prod.name):
                raise ScheduleError(f"cannot {what} with epilogue {name}: it also reads {owner}, computed after "
                                    f"{prod.name}")
        if prod.output or any(self._owner(s) != name for s, _ in self._readers(prod.buffer)
                              if self._owner(s) != prod.name):
            raise ScheduleError(f"cannot {what} with epilogue {name}: {prod.name} is read elsewhere too")
        return ep

    @primitive
    def cache_shared(self, buffer: str, loop: str) -> str:
        """Stage the tile of ``buffer`` that one iteration of ``loop`` reads in a shared
        buffer: at each iteration the block's threads copy the tile cooperatively
        (consecutive threads, consecutive elements), a barrier, the iteration's work
        reading the copy, a barrier before the next copy overwrites it. ``loop`` is a
        serial loop of a block outside its thread loops (a matmul's k-tile loop); a
        second buffer staged at the same loop joins the first one's copy phase."""
        src = next((b for b in self.inputs if b.name == buffer), None) or next(
            (st.buffer for st in self.stages.values() if st.name == buffer and st.buffer.scope == "global"), None)
        if src is None:
            raise ScheduleError(f"no global buffer named {buffer!r} to cache_shared")
        what = f"cache_shared {buffer}"
        copies = self._gpu_loop(loop, what)
        name = f"{buffer}_shared"
        if any(isinstance(x, Alloc) and x.buffer.name == name for x, _ in self._walk()):
            raise ScheduleError(f"{buffer} is staged in shared memory already")
        shared: list[Buffer] = []

        def fn(s):
            if not (isinstance(s, For) and any(s is L for L, _ in copies)):
                return None
            above_L = next(a for L, a in copies if L is s)
            reads = []
            for x, above in walk_stmts(s.body, (*above_L, s)):
                for e in stmt_exprs(x):
                    for ld in _loads(e):
                        if ld.source is src:
                            if not any(isinstance(a, For) and a.kind.startswith("threadIdx") for a in _below(above, s)):
                                raise ScheduleError(f"cannot {what} at {loop}: it is read outside the thread loops")
                            reads.append((ld.indices, above))
            if not reads:
                raise ScheduleError(f"cannot {what} at {loop}: nothing under it reads {buffer}")
            p = self._region(reads, s, f"{what} at {loop}")
            shape = [h - lo + 1 for _, lo, h in p]
            if shared and list(shared[0].shape) != shape:
                raise ScheduleError(f"cannot {what} at {loop}: its copies read differently shaped tiles")
            sh = shared[0] if shared else Buffer(name, shape, src.dtype, "shared")
            shared[:] = [sh]
            chain = self._thread_chain(s)
            tv = self._fresh_threads(chain, f"{buffer}_copy")
            nthreads, tid = 1, Const(0)
            for f, v in zip(chain, tv):
                nthreads *= _const(f.extent)
                tid = tid * _const(f.extent) + v
            size = 1
            for n in shape:
                size *= n
            c = Var(self._fresh(f"{buffer}_copy_c", self.loop_stage.get(loop, "?")))
            e = c * nthreads + tid
            local, stride = [], 1
            for n in reversed(shape):
                local.insert(0, (e // stride) % n if stride * n < size else e // stride)
                stride *= n
            gidx = [_simplify_sub(o + lo + d) for (o, lo, _), d in zip(p, local)]
            body: Stmt = Store(sh, local, Load(src, gidx))
            outer_rng = {a.var: (_const(a.start), _const(a.start) + _const(a.extent) - 1)
                         for a in (*above_L, s) if isinstance(a, For)}
            for d in reversed(range(len(gidx))):
                aff = E.affine(p[d][0])
                top = None if aff is None or any(v not in outer_rng for v in aff[0]) else aff[1] + sum(
                    max(c * outer_rng[v][0], c * outer_rng[v][1]) for v, c in aff[0].items())
                if top is None or top + p[d][2] >= src.shape[d]:    # the tile can reach past the buffer's end
                    body = If(E.binop("lt", gidx[d], Const(src.shape[d])), body)
            if size % nthreads:
                body = If(E.binop("lt", e, Const(size)), body, None, likely=True)
            copy = self._over_threads(chain, tv, For(c, -(-size // nthreads), body))

            def relocal(idx, p=p):
                return Load(sh, [_simplify_sub(E.binop("sub", i, o + lo)) for i, (o, lo, _) in zip(idx, p)])
            work = subst_stmt(s.body, {}, loads={src: relocal})
            if isinstance(work, Seq) and any(isinstance(x, Barrier) for x in work.stmts):
                k = next(i for i, x in enumerate(work.stmts) if isinstance(x, Barrier))   # join the copy phase
                new = Seq([*work.stmts[:k], copy, *work.stmts[k:]])
            else:
                new = Seq([copy, Barrier(), work, Barrier()])
            return Alloc(sh, _for(s, body=new))

        self._rewrite(fn)
        self._record("cache_shared", buffer, loop)
        return name

    @primitive
    def block_reduce(self, stage: str, threads: int, blocks: int = 1) -> None:
        """A reduction by thread blocks: ``threads`` threads stride a row's reduced
        elements (consecutive threads, consecutive elements) into a register each, then
        combine them -- by warp shuffles (``warp_reduce``), the warps' results through
        shared memory, one barrier -- and one thread stores the result::

            blockIdx.x row in [0, R) {
              alloc acc: f32[1] local                  (one register per thread)
              threadIdx.x t in [0, T) { acc[0] = 0; for r { acc[0] = acc[0] + x[row, r*T + t] } }
              warp_reduce sum acc[0]
              alloc red: f32[32] shared
              threadIdx.x t in [0, T) { if t % 32 == 0 { red[t / 32] = acc[0] } }
              barrier
              threadIdx.x t in [0, 32) { acc[0] = t < T / 32 ? red[t] : 0 }
              warp_reduce sum acc[0]
              threadIdx.x t in [0, 1) { out[row] = acc[0] }
            }

        Below 32 threads (or for booleans) the threads combine through a shared-memory
        tree instead, halving at each step with a barrier between steps.

        ``blocks`` > 1 reduces in two phases, for few long rows (a full reduction): ``blocks``
        blocks per row each reduce every ``blocks``-th run of ``threads`` elements into a
        partial (a scratch buffer of rows x blocks), then a second launch reduces each
        row's partials with one block."""
        for name, v, most in (("threads", threads, 1024), ("blocks", blocks, 1 << 16)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1 or v > most:
                raise ScheduleError(f"block_reduce {name} must be an integer in [1, {most}], got {v!r}")
        if threads < 2 or threads & (threads - 1):
            raise ScheduleError(f"block_reduce threads must be a power of two in [2, 1024], got {threads!r}")
        if self.target.kind != "cuda":
            raise ScheduleError(f"cannot block_reduce {stage}: target {self.target.name} is not a GPU")
        st = self._root(stage, "block_reduce")
        if not st.is_reduction:
            raise ScheduleError(f"cannot block_reduce {stage}: it is not a reduction")
        rows, k = _prod(st.extents), _prod(st.rextents)
        dtype = st.buffer.dtype

        def element(row, e):   # the reduced value at flat reduced index e of flat output index row
            return substitute(st.value, {**dict(zip(st.axes, _unflatten(row, st.extents))),
                                         **dict(zip(st.raxes, _unflatten(e, st.rextents)))})
        row = Var(self._fresh(f"{stage}_row", stage))
        if blocks == 1:
            self.nests[stage] = For(row, rows, self._reduce_block(
                stage, st, threads, k, 1, Const(0), lambda e: element(row, e),
                lambda v: Store(st.buffer, _unflatten(row, st.extents), v)), "blockIdx.x")
        else:
            part = Buffer(self._fresh(f"{stage}_part", stage), [rows * blocks], dtype)
            self.extra_scratch.append(part)
            bid = Var(self._fresh(f"{stage}_blk", stage))
            first = For(bid, rows * blocks, self._reduce_block(
                stage, st, threads, k, blocks, bid % blocks, lambda e: element(bid // blocks, e),
                lambda v: Store(part, [bid], v)), "blockIdx.x")
            second_threads = 32
            while second_threads < min(blocks, 1024):
                second_threads *= 2
            second = For(row, rows, self._reduce_block(
                stage, st, second_threads, blocks, 1, Const(0), lambda e: Load(part, [row * blocks + e]),
                lambda v: Store(st.buffer, _unflatten(row, st.extents), v)), "blockIdx.x")
            self.nests[stage] = Seq([first, second])
        st.touched = True
        self._record("block_reduce", stage, threads, *([blocks] if blocks != 1 else []))

    def _reduce_block(self, stage: str, st, threads: int, count: int, blocks: int, part, value_of, store) -> Stmt:
        """The body of a block that combines ``value_of(e)`` over e in [0, count) -- the
        runs of ``threads`` elements numbered ``part`` mod ``blocks`` -- and stores the
        result with ``store(value)`` from thread 0 (see ``block_reduce``)."""
        dtype, comb = st.buffer.dtype, st.combiner
        ident = reduce_identity(comb, dtype)
        acc = Buffer(self._fresh(f"{stage}_acc", stage), [1], dtype, "local")
        a0 = Load(acc, [Const(0)])
        t, r = Var(self._fresh(f"{stage}_t", stage)), Var(self._fresh(f"{stage}_r", stage))
        e = (r * blocks + part) * threads + t
        step: Stmt = Store(acc, [Const(0)], combine(comb, a0, value_of(e)))
        if count % (threads * blocks):
            step = If(E.binop("lt", e, Const(count)), step, None, likely=True)
        fill = Seq([Store(acc, [Const(0)], ident), For(r, -(-count // (threads * blocks)), step)])

        def thread_loop(n, body, name="t"):
            v = Var(self._fresh(f"{stage}_{name}", stage))
            return For(v, n, body(v), "threadIdx.x")
        if threads < 32 or dtype.is_bool:   # a shared-memory tree
            red = Buffer(self._fresh(f"{stage}_red", stage), [threads], dtype, "shared")
            phases: list[Stmt] = [For(t, threads, Alloc(acc, Seq([fill, Store(red, [t], a0)])), "threadIdx.x")]
            half = threads // 2
            while half >= 1:
                merged = lambda tt, h=half: combine(comb, Load(red, [tt]), Load(red, [tt + h]))   # noqa: E731
                last = half == 1
                phases += [Barrier(), thread_loop(half, lambda tt, m=merged, last=last:
                                                  store(m(tt)) if last else Store(red, [tt], m(tt)))]
                half //= 2
            return Alloc(red, Seq(phases))
        phases = [For(t, threads, fill, "threadIdx.x"), WarpReduce(acc, [Const(0)], comb)]
        if threads > 32:   # the warps' results through shared memory, combined by warp 0
            warps = threads // 32
            red = Buffer(self._fresh(f"{stage}_red", stage), [warps], dtype, "shared")
            phases += [Alloc(red, Seq([
                thread_loop(threads, lambda tt: If(E.binop("eq", tt % 32, Const(0)), Store(red, [tt // 32], a0))),
                Barrier(),
                thread_loop(32, lambda tt: Store(acc, [Const(0)], Load(red, [tt])) if warps == 32 else
                            If(E.binop("lt", tt, Const(warps)), Store(acc, [Const(0)], Load(red, [tt])),
                               Store(acc, [Const(0)], ident))),
                WarpReduce(acc, [Const(0)], comb),
                thread_loop(1, lambda tt: store(a0))]))]
        else:
            phases.append(thread_loop(1, lambda tt: store(a0)))
        return Alloc(acc, Seq(phases))

    @primitive
    def mma_tiles(self, stage: str, epilogue: str | None = None, warps_m: int = 2, warps_n: int = 2,
                  tiles_m: int = 2, tiles_n: int = 4, k_tile: int = 32) -> None:
        """A float16 matrix product on tensor cores: ``stage`` sums over one axis the
        product of two float16 operands widened to float32 (``f32(X[.., i, k]) *
        f32(Y[.., k, j])``, any index functions; leading axes are batch axes). Each block
        computes a (``warps_m`` x ``tiles_m`` x 16) x (``warps_n`` x ``tiles_n`` x 8) tile
        with ``warps_m * warps_n`` warps, each warp ``tiles_m`` x ``tiles_n`` tiles of
        16 x 8 in registers (``mma_m16n8k16``); every ``k_tile`` slice of both operands is
        copied into shared memory (zeros past the edges) between barriers; ``epilogue``
        (an elementwise consumer) is applied as the registers are stored::

            blockIdx.y bm { blockIdx.x bn {
              alloc acc: f32[tiles_m, tiles_n, 4] local
              for ko { copy X, Y slices to X_sh, Y_sh; barrier
                       threadIdx.x t { for kk, mi, ni { mma_m16n8k16 acc[mi, ni, 0] += X_sh[..] * Y_sh[..] } }
                       barrier }
              threadIdx.x t { out[row(t, mi, q), col(t, ni, q)] = acc[mi, ni, q] ... }
            } }
        """
        if self.target.kind != "cuda" or self.target.arch < "sm_80":
            raise ScheduleError(f"cannot mma_tiles {stage}: tensor cores (mma.sync m16n8k16) need sm_80 or newer, "
                                f"target {self.target.name} is {self.target.arch or self.target.kind}")
        for name, v in (("warps_m", warps_m), ("warps_n", warps_n), ("tiles_m", tiles_m), ("tiles_n", tiles_n)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ScheduleError(f"mma_tiles {name} must be a positive integer, got {v!r}")
        if warps_m * warps_n * 32 > 1024:
            raise ScheduleError(f"mma_tiles: {warps_m} x {warps_n} warps are more than 1024 threads")
        if not isinstance(k_tile, int) or k_tile < 16 or k_tile % 16:
            raise ScheduleError(f"mma_tiles k_tile must be a multiple of 16, got {k_tile!r}")
        st = self._root(stage, "mma_tiles")
        x, y = self._mma_operands(st)
        ep = self._check_epilogue(st, epilogue, f"mma_tiles {stage}") if epilogue is not None else None
        threads = warps_m * warps_n * 32
        tm, tn = warps_m * tiles_m * 16, warps_n * tiles_n * 8
        batch, (m, n), k = st.extents[:-2], st.extents[-2:], st.rextents[0]
        i, j, kv = st.axes[-2], st.axes[-1], st.raxes[0]
        f = lambda base: Var(self._fresh(f"{stage}_{base}", stage))   # noqa: E731
        bz, bm, bn, ko = f("bz"), f("bm"), f("bn"), f("ko")
        spatial = dict(zip(st.axes[:-2], _unflatten(bz, batch)))   # the flat batch index on blockIdx.z
        acc = Buffer(self._fresh(f"{stage}_acc", stage), [tiles_m, tiles_n, 4], float32, "local")
        xs, ys = (Buffer(self._fresh(f"{_loads(o)[0].source.name if _loads(o) else 'op'}_shared", stage), shape,
                         float16, "shared") for o, shape in ((x, [tm, k_tile]), (y, [k_tile, tn])))
        m0, n0, k0 = bm * tm, bn * tn, ko * k_tile

        def over_threads(body):
            t = f("t")
            return For(t, threads, body(t), "threadIdx.x")

        def loops(extents, body):   # nested serial loops over ``extents``, body(vars)
            vs = [f(name) for name in ("mi", "ni", "q")[:len(extents)]]
            out = body(vs)
            for v, e in reversed(list(zip(vs, extents))):
                out = For(v, e, out)
            return out

        def copy(dst: Buffer, expr, rows: int, cols: int, row_of, col_of):
            """dst[r, c] = the operand at the axis values row_of(r), col_of(c) (each: the
            axis, its value, its extent), zero past the edges."""
            def body(t):
                c = f("c")
                e = c * threads + t
                r, cc = e // cols, e % cols
                (ra, rv, rn), (ca, cv, cn) = row_of(r), col_of(cc)
                inside = E.binop("and", E.binop("lt", rv, Const(rn)), E.binop("lt", cv, Const(cn)))
                value = substitute(expr, {**spatial, ra: rv, ca: cv})
                put: Stmt = If(inside, Store(dst, [r, cc], value), Store(dst, [r, cc], Const(0.0, float16)))
                if (rows * cols) % threads:
                    put = If(E.binop("lt", e, Const(rows * cols)), put)
                return For(c, -(-rows * cols // threads), put)
            return over_threads(body)
        copy_x = copy(xs, x, tm, k_tile, lambda r: (i, m0 + r, m), lambda c: (kv, k0 + c, k))
        copy_y = copy(ys, y, k_tile, tn, lambda r: (kv, k0 + r, k), lambda c: (j, n0 + c, n))

        def warp_m(t):
            return (t // 32) // warps_n

        def warp_n(t):
            return (t // 32) % warps_n

        def products(t):
            kk = f("kk")
            return For(kk, k_tile // 16, loops([tiles_m, tiles_n], lambda v: Mma(
                acc, [v[0], v[1], Const(0)], xs, [warp_m(t) * (tiles_m * 16) + v[0] * 16, kk * 16],
                ys, [kk * 16, warp_n(t) * (tiles_n * 8) + v[1] * 8])))

        def store(t):
            def body(v):
                mi, ni, q = v
                lane = t % 32
                row = m0 + warp_m(t) * (tiles_m * 16) + mi * 16 + lane // 4 + (q // 2) * 8
                col = n0 + warp_n(t) * (tiles_n * 8) + ni * 8 + (lane % 4) * 2 + q % 2
                where = [*(spatial[a] for a in st.axes[:-2]), row, col]
                value = Load(acc, [mi, ni, q])
                if ep is None:
                    put = Store(st.buffer, where, value)
                else:
                    put = Store(ep.buffer, where, subst_loads(substitute(ep.value, dict(zip(ep.axes, where))),
                                                              st.buffer, lambda _: value))
                inside = E.binop("and", E.binop("lt", row, Const(m)), E.binop("lt", col, Const(n)))
                return If(inside, put, None, likely=True)
            return loops([tiles_m, tiles_n, 4], body)
        block = Alloc(acc, Seq([
            over_threads(lambda t: loops([tiles_m, tiles_n, 4], lambda v: Store(acc, v, Const(0.0, float32)))),
            Alloc(xs, Alloc(ys, For(ko, -(-k // k_tile), Seq([copy_x, copy_y, Barrier(), over_threads(products),
                                                               Barrier()])))),
            over_threads(store)]))
        nest = For(bn, -(-n // tn), block, "blockIdx.x")
        nest = For(bm, -(-m // tm), nest, "blockIdx.y")
        self.nests[stage] = For(bz, _prod(batch), nest, "blockIdx.z") if batch else nest
        st.touched = True
        if ep is not None:
            del self.nests[ep.name]
            ep.status = "attached"
        self._record("mma_tiles", stage, epilogue, warps_m, warps_n, tiles_m, tiles_n, k_tile)

    def _mma_operands(self, st: "Stage") -> tuple[Expr, Expr]:
        """The float16 operands (X over i and k, Y over k and j) of a stage that tensor cores
        can compute; ScheduleError saying what does not fit."""
        what = f"cannot mma_tiles {st.name}"
        if not st.is_reduction or st.combiner != "sum" or len(st.raxes) != 1 or len(st.axes) < 2:
            raise ScheduleError(f"{what}: it must be a sum over one axis with at least two output axes")
        v = st.value
        if st.buffer.dtype is not float32 or not (isinstance(v, E.BinOp) and v.op == "mul"):
            raise ScheduleError(f"{what}: it must sum float32 products")
        ops = []
        for factor in (v.a, v.b):
            if not (isinstance(factor, E.Cast) and factor.value.dtype is float16):
                raise ScheduleError(f"{what}: each factor must be a float16 value widened to float32")
            ops.append(factor.value)
        i, j = st.axes[-2], st.axes[-1]

        def follows(e, a):
            return E.uses_var(e, a)
        for x, y in (ops, ops[::-1]):
            if follows(x, i) and not follows(x, j) and follows(y, j) and not follows(y, i):
                return x, y
        raise ScheduleError(f"{what}: one factor must follow the rows and not the columns, the other the columns "
                            "and not the rows")

    # ================================================================== stage primitives
    def _root(self, name: str, what: str) -> Stage:
        st = self._stage(name)
        if st.status != "root":
            raise ScheduleError(f"cannot {what} {name}: it is {st.status} already")
        if st.touched:
            raise ScheduleError(f"cannot {what} {name}: its loops were transformed; {what} it first")
        return st

    def _readers(self, buf: Buffer):
        """Every statement (with ancestors) that loads from ``buf``."""
        out = []
        for s, above in self._walk():
            if any(x.source is buf for e in stmt_exprs(s) for x in _loads(e)):
                out.append((s, above))
        return out

    @primitive
    def compute_inline(self, stage: str) -> None:
        """Replace every read of an elementwise stage by its expression; its loops go away."""
        st = self._root(stage, "inline")
        if st.is_reduction:
            raise ScheduleError(f"cannot inline {stage}: it is a reduction")
        if st.output:
            raise ScheduleError(f"cannot inline {stage}: it is an output of the kernel")
        del self.nests[stage]

        def expand(idx):
            return substitute(st.value, dict(zip(st.axes, idx)))
        for name in list(self.nests):
            self.nests[name] = subst_stmt(self.nests[name], {}, loads={st.buffer: expand})
        st.status = "inlined"
        self._record("compute_inline", stage)

    def _region(self, accesses, L: For, what: str):
        """Per dimension (outer expr, lo, hi): the box of indices that ``accesses``
        (list of (indices, ancestors)) touch during one iteration of ``L``'s body."""
        dims = None
        for indices, above in accesses:
            rng = _inner_ranges(above, L)
            box = []
            for e in indices:
                sa = split_affine(e, list(rng))
                if sa is None:
                    raise ScheduleError(f"cannot {what}: index {E.format_expr(e)} is not affine in the loops "
                                        f"inside {L.var.name}")
                outer, cs = sa
                lo = sum(min(c * rng[v][0], c * rng[v][1]) for v, c in cs.items())
                hi = sum(max(c * rng[v][0], c * rng[v][1]) for v, c in cs.items())
                box.append((outer, lo, hi))
            if dims is None:
                dims = box
                continue
            for d, ((o1, l1, h1), (o2, l2, h2)) in enumerate(zip(dims, box)):
                if E.format_expr(o1) != E.format_expr(o2):
                    if isinstance(o1, Const) and isinstance(o2, Const):
                        base = min(o1.value, o2.value)
                        dims[d] = (Const(base), min(o1.value + l1, o2.value + l2) - base,
                                   max(o1.value + h1, o2.value + h2) - base)
                        continue
                    raise ScheduleError(f"cannot {what}: accesses at unrelated offsets "
                                        f"({E.format_expr(o1)} and {E.format_expr(o2)})")
                dims[d] = (o1, min(l1, l2), max(h1, h2))
        return dims

    @primitive
    def compute_at(self, stage: str, loop: str) -> None:
        """Compute a producer inside a consumer's loop, only the part one iteration of that
        loop reads, into a buffer just that size (per thread inside a parallel loop)."""
        st = self._root(stage, "compute_at")
        if st.output:
            raise ScheduleError(f"cannot compute {stage} at {loop}: it is an output of the kernel")
        if self.loop_stage.get(loop) == stage:
            raise ScheduleError(f"cannot compute {stage} at its own loop {loop}")
        copies = self._find(loop)
        copy_ids = {id(f) for f, _ in copies}
        readers = self._readers(st.buffer)
        outside = [s for s, above in readers if not any(id(a) in copy_ids for a in above) and s not in
                   [f for f, _ in copies]]
        if outside or not readers:
            raise ScheduleError(f"cannot compute {stage} at {loop}: "
                                + ("it is also read outside that loop" if readers else "nothing under it reads it"))
        plans = []
        for L, above_L in copies:
            acc = []
            for s, above in walk_stmts(L.body, (*above_L, L)):
                for e in stmt_exprs(s):
                    acc += [(x.indices, above) for x in _loads(e) if x.source is st.buffer]
            if not acc:
                plans.append(None)
                continue
            plans.append(self._region(acc, L, f"compute {stage} at {loop}"))
        shape = [max(p[d][2] - p[d][1] + 1 for p in plans if p is not None) for d in range(len(st.extents))]
        in_parallel = any(isinstance(a, For) and a.kind == "parallel" for L, above in copies for a in (*above, L))
        buf = Buffer(st.name, shape, st.buffer.dtype, "local" if in_parallel else "global")
        by_id = {id(L): p for (L, _), p in zip(copies, plans)}
        del self.nests[stage]

        def fn(s):
            if isinstance(s, For) and id(s) in by_id:
                p = by_id[id(s)]
                if p is None:
                    return s
                region = [(o + lo, h - lo + 1) for o, lo, h in p]
                guard = any(not isinstance(o, Const) or o.value + h >= n for (o, lo, h), n in zip(p, st.extents))
                nest = self._nest(st, region, buf, bounds_guard=guard)

                def relocal(idx, p=p):
                    return Load(buf, [_simplify_sub(E.binop("sub", e, o + lo)) for e, (o, lo, _) in zip(idx, p)])
                body = subst_stmt(s.body, {}, loads={st.buffer: relocal})
                inner = Seq([nest, body])
                return _for(s, body=Alloc(buf, inner) if in_parallel else inner)
            return None
        self._rewrite(fn)
        if not in_parallel:
            self.extra_scratch.append(buf)
        st.buffer = buf
        st.status = "attached"
        self._record("compute_at", stage, loop)

    @primitive
    def reverse_compute_at(self, stage: str, loop: str) -> None:
        """Compute an elementwise consumer inside its producer's loop, on the elements one
        iteration of that loop finishes: the epilogue of a tile. Under a register
        accumulator it reads the accumulator directly."""
        st = self._root(stage, "reverse_compute_at")
        if st.is_reduction:
            raise ScheduleError(f"cannot reverse_compute_at {stage}: it is a reduction")
        pname = self.loop_stage.get(loop)
        prod = self.stages.get(pname)
        if prod is None or prod.name == stage:
            raise ScheduleError(f"cannot reverse_compute_at {stage} at {loop}: {loop} is not a loop of a producer")
        loads = [x for x in _loads(st.value) if x.source is prod.buffer]
        if not loads or prod.extents != st.extents or any(
                len(x.indices) != len(st.axes) or any(i is not a for i, a in zip(x.indices, st.axes)) for x in loads):
            raise ScheduleError(f"cannot reverse_compute_at {stage} at {loop}: {stage} must read {pname} element for "
                                "element, at its own index")
        for x in _loads(st.value):
            owner = self._stage_of_buffer(x.source)
            if owner not in (None, pname) and self.order.index(owner) > self.order.index(pname):
                raise ScheduleError(f"cannot reverse_compute_at {stage} at {loop}: {stage} also reads {owner}, "
                                    f"which is computed after {pname}")
        others = [s for s, _ in self._readers(prod.buffer) if self._owner(s) not in (stage, pname)]
        copies = self._find(loop)
        del self.nests[stage]
        forwarded = [True]
        always_last = [True]

        def fn(s):
            if not (isinstance(s, For) and any(s is L for L, _ in copies)):
                return None
            above = next(a for L, a in copies if L is s)
            writes = [(w.indices, a) for w, a in walk_stmts(s.body, (*above, s))
                      if isinstance(w, (Store, Accumulate)) and w.buffer is prod.buffer]
            accs = [(w, a) for w, a in walk_stmts(s.body, (*above, s)) if isinstance(w, Accumulate)
                    and (w.buffer is prod.buffer or self.acc_of.get(w.buffer) == pname)]
            if not writes or (prod.is_reduction and not accs):
                raise ScheduleError(f"cannot reverse_compute_at {stage} at {loop}: {pname} is not "
                                    + ("written there" if not writes else "reduced there (an init loop?)"))
            p = self._region(writes, s, f"reverse_compute_at {stage} at {loop}")
            last = self._reduction_done(accs, s, "last") if prod.is_reduction else Const(True, E.bool_)
            if isinstance(last, Const) and not last.value:
                return s            # the reduction never completes inside this copy
            if not (isinstance(last, Const) and last.value):
                always_last[0] = False
            region = [(o + lo, h - lo + 1) for o, lo, h in p]
            guard = any(isinstance(g, If) and g.likely for _, a in writes for g in a)
            hoisted, block = _peel_guards(s.body)
            acc = block.buffer if isinstance(block, Alloc) and self.acc_of.get(block.buffer) == pname else None
            nest = self._consumer_nest(st, region, guard, prod.buffer, acc)
            if acc is None:
                forwarded[0] = False
                # an iteration the split guards skip must not run the epilogue either
                nest = _wrap_guards(list(_outer_guards(s, writes).values()), nest)
            if not (isinstance(last, Const) and last.value):
                nest = If(last, nest)
            if acc is not None:
                return _for(s, body=_wrap_guards(hoisted, Alloc(acc, Seq([block.body, nest]))))
            return _for(s, body=Seq([s.body, nest]))
        self._rewrite(fn)
        st.status = "attached"
        if forwarded[0] and not prod.output and not others:
            if always_last[0]:
                # nobody reads the stored result any more: drop the write-back
                self._rewrite(lambda x: REMOVE if isinstance(x, Store) and x.buffer is prod.buffer else None)
            elif prod.buffer.type == st.buffer.type:
                # partial sums between reduction blocks live in the epilogue's output,
                # which the epilogue overwrites only once the sum is complete
                old = prod.buffer
                for name in list(self.nests):
                    self.nests[name] = subst_stmt(self.nests[name], {}, loads={old: lambda idx: Load(st.buffer, idx)},
                                                  buffers={old: st.buffer})
        self._record("reverse_compute_at", stage, loop)

    def _owner(self, s: Stmt) -> str | None:
        """The stage a statement writes (a register accumulator's counts as its stage's)."""
        if isinstance(s, (Store, Accumulate)):
            return self._stage_of_buffer(s.buffer) or self.acc_of.get(s.buffer)
        return None

    @staticmethod
    def _consumer_nest(st: Stage, region, guard: bool, produced: Buffer, acc: Buffer | None) -> Stmt:
        """``st`` over ``region``; with ``acc``, its reads of ``produced`` read the
        accumulator (which covers the same region) instead."""
        rank = len(st.axes)
        lv = [Var(st.loop_names[d]) for d in range(rank)]
        gidx = [region[d][0] + lv[d] for d in range(rank)]
        value = substitute(st.value, dict(zip(st.axes, gidx)))
        if acc is not None:
            value = subst_loads(value, produced, lambda idx: Load(acc, lv))
        body: Stmt = Store(st.buffer, gidx, value)
        if guard:
            for d in reversed(range(rank)):
                body = If(E.binop("lt", gidx[d], Const(st.extents[d])), body, None, likely=True)
        for d in reversed(range(rank)):
            body = For(lv[d], region[d][1], body)
        return body

    def _stage_of_buffer(self, b: Buffer) -> str | None:
        return next((st.name for st in self.stages.values() if st.buffer is b), None)

    def _reduction_done(self, accs, L: For, end: str) -> Expr:
        """The condition, over loops outside ``L``, that this iteration of L holds the
        first (``end="first"``) or last update of each element's reduction."""
        cond: Expr | None = None
        for axis in range(len(accs[0][0].rindex)) if accs else ():
            terms = []
            for w, above in accs:
                rng = _inner_ranges(above, L)
                e, n = w.rindex[axis]
                sa = split_affine(e, list(rng))
                if sa is None:
                    raise ScheduleError(f"reduction index {E.format_expr(e)} is not affine")
                outer, cs = sa
                if end == "first":
                    bound = sum(min(c * rng[v][0], c * rng[v][1]) for v, c in cs.items())
                    terms.append(E.binop("le", outer + bound, Const(0)))
                else:
                    bound = sum(max(c * rng[v][0], c * rng[v][1]) for v, c in cs.items())
                    terms.append(E.binop("ge", outer + bound, Const(n - 1)))
            t = terms[0]
            for x in terms[1:]:
                t = E.binop("or", t, x)
            cond = t if cond is None else E.binop("and", cond, t)
        return _fold_bool(cond) if cond is not None else Const(True, E.bool_)

    @primitive
    def cache_write(self, stage: str, loop: str) -> str:
        """Accumulate a reduction in registers: the elements one iteration of ``loop``
        updates live in a local buffer, initialized at the start of the iteration (the
        identity on the reduction's first block, else the partial result) and stored at
        its end. The stage's init nest goes away."""
        st = self._stage(stage)
        if not st.is_reduction:
            raise ScheduleError(f"cannot cache_write {stage}: it is not a reduction")
        if self.loop_stage.get(loop) != stage:
            raise ScheduleError(f"cannot cache_write {stage} at {loop}: {loop} is not one of its loops")
        if any(v == stage for v in self.acc_of.values()):
            raise ScheduleError(f"cannot cache_write {stage}: it accumulates in registers already")
        copies = self._find(loop)
        ident = reduce_identity(st.combiner, st.buffer.dtype)
        acc_buf: list[Buffer] = []

        def fn(s):
            if not (isinstance(s, For) and any(s is L for L, _ in copies)):
                return None
            above = next(a for L, a in copies if L is s)
            accs = [(w, a) for w, a in walk_stmts(s.body, (*above, s))
                    if isinstance(w, Accumulate) and w.buffer is st.buffer]
            if not accs:
                raise ScheduleError(f"cannot cache_write {stage} at {loop}: it does not accumulate there")
            p = self._region([(w.indices, a) for w, a in accs], s, f"cache_write {stage} at {loop}")
            shape = [h - lo + 1 for _, lo, h in p]
            _check_dense(accs, s, shape, f"cache_write {stage} at {loop}")
            if acc_buf and list(acc_buf[0].shape) != shape:
                raise ScheduleError(f"cannot cache_write {stage} at {loop}: its copies update differently shaped tiles")
            acc = acc_buf[0] if acc_buf else Buffer("acc", shape, st.buffer.dtype, "local")
            acc_buf[:] = [acc]
            inner_of = {}
            for w, a in accs:
                inner_of.update({x.var: x for x in _below(a, s) if isinstance(x, For)})
            first = self._reduction_done(accs, s, "first")
            guard = any(isinstance(g, If) and g.likely for _, a in accs for g in a)
            # name the accumulator's loops after the loops that walk the same dimension
            dim_loops = []
            for d, (o, lo, h) in enumerate(p):
                walkers = {v for w, _ in accs for v in inner_of if linear_coefficient(w.indices[d], v)}
                f = inner_of[next(iter(walkers))] if len(walkers) == 1 else None
                ok = f is not None and _const(f.extent) == shape[d] and linear_coefficient(
                    accs[0][0].indices[d], f.var) == 1
                dim_loops.append((f.var.name, f.kind) if ok else (f"{loop}_{stage}{d}", "serial"))
                if not ok:
                    self.taken.add(dim_loops[-1][0])
                    self.loop_stage[dim_loops[-1][0]] = stage

            def region_nest(make) -> Stmt:
                lv = [Var(n) if extent > 1 else Const(0) for (n, _), extent in zip(dim_loops, shape)]
                gidx = [o + lo + v for (o, lo, _), v in zip(p, lv)]
                body = make(lv, gidx)
                if guard:
                    for d in reversed(range(len(p))):
                        body = If(E.binop("lt", gidx[d], Const(st.extents[d])), body, None, likely=True)
                for v, (n, kind), extent in reversed(list(zip(lv, dim_loops, shape))):
                    if extent > 1:
                        body = For(v, extent, body, kind)
                return body

            fresh = region_nest(lambda lv, g: Store(acc, lv, ident))
            resume = region_nest(lambda lv, g: Store(acc, lv, Load(st.buffer, g)))
            if isinstance(first, Const):
                init = fresh if first.value else resume
            else:
                init = If(first, fresh, resume)
            writeback = region_nest(lambda lv, g: Store(st.buffer, g, Load(acc, lv)))

            def to_acc(x):
                if isinstance(x, Accumulate) and x.buffer is st.buffer:
                    idx = [_lin(split_affine(i, list(inner_of))[1], -lo) for i, (_, lo, _) in zip(x.indices, p)]
                    return Accumulate(acc, idx, x.combiner, x.value, x.rindex)
                return None
            # guards on this loop or outer ones skip whole iterations: hoist them around
            # the accumulator so a skipped iteration neither resumes nor stores
            outer = _outer_guards(s, accs)
            outer_ids = {id(g) for g in outer}
            body = map_stmt(s.body, to_acc)
            body = map_stmt(body, lambda x: _unguard(x, outer_ids)) or Seq([])
            return _for(s, body=_wrap_guards(list(outer.values()), Alloc(acc, Seq([init, body, writeback]))))
        self._rewrite(fn)
        # the accumulator now starts every reduction: drop the stage's init nest
        self._rewrite(lambda x: REMOVE if isinstance(x, For) and x.var.name.endswith("_init")
                      and self.loop_stage.get(x.var.name) == stage else None)
        self.acc_of[acc_buf[0]] = stage
        st.touched = True
        self._record("cache_write", stage, loop)
        return acc_buf[0].name

    @primitive
    def cache_read(self, buffer: str, consumer: str, layout) -> str:
        """Copy ``buffer`` into a new stage in a blocked layout and make ``consumer`` read
        the copy. ``layout`` lists the new dimensions: an old dimension ``d``, or
        ``["o", d, f]`` / ``["i", d, f]`` for the outer (``idx // f``) and inner
        (``idx % f``) parts of dimension d split by f. E.g. ``[["o", 1, 16], 0,
        ["i", 1, 16]]`` packs B[k, j] into panels P[j // 16, k, j % 16]."""
        src = next((b for b in self.inputs if b.name == buffer), None) or next(
            (st.buffer for st in self.stages.values() if st.name == buffer), None)
        if src is None:
            raise ScheduleError(f"no buffer named {buffer!r} to cache_read")
        cons = self._stage(consumer)
        if cons.status != "root":
            raise ScheduleError(f"cannot cache_read into {consumer}: it is {cons.status}")
        layout = _check_layout(layout, src)
        shape, covered, factors = [], {}, {}
        for x in layout:
            if isinstance(x, int):
                shape.append(src.shape[x])
                covered.setdefault(x, []).append("all")
            else:
                part, d, f = x
                shape.append(-(-src.shape[d] // f) if part == "o" else f)
                covered.setdefault(d, []).append(part)
                factors.setdefault(d, set()).add(f)
        if sorted(covered) != list(range(len(src.shape))) or any(
                sorted(v) not in (["all"], ["i", "o"]) for v in covered.values()):
            raise ScheduleError(f"cache_read layout {layout} must cover each dimension of {buffer} once "
                                "(whole, or as one 'o' and one 'i' part)")
        if any(len(f) > 1 for f in factors.values()):
            raise ScheduleError(f"cache_read layout {layout}: the 'o' and 'i' parts of a dimension need the same factor")
        if not any(x.source is src for st2 in [cons] for x in _loads(st2.value)):
            raise ScheduleError(f"cannot cache_read {buffer} for {consumer}: {consumer} does not read it")
        name = f"{buffer}_{consumer}_packed" if f"{buffer}_{consumer}_packed" not in self.stages else None
        if name is None:
            raise ScheduleError(f"{buffer} is cached for {consumer} already")
        axes = [Var(f"p{n}") for n in range(len(layout))]
        src_idx, guard = [None] * len(src.shape), None
        for x, a in zip(layout, axes):
            if isinstance(x, int):
                src_idx[x] = a
        for d in covered:
            if sorted(covered[d]) == ["i", "o"]:
                o = next(a for x, a in zip(layout, axes) if isinstance(x, list) and x[0] == "o" and x[1] == d)
                i, f = next((a, x[2]) for x, a in zip(layout, axes) if isinstance(x, list) and x[0] == "i" and x[1] == d)
                src_idx[d] = o * f + i
                if src.shape[d] % f:
                    g = E.binop("lt", src_idx[d], Const(src.shape[d]))
                    guard = g if guard is None else E.binop("and", guard, g)
        buf = Buffer(name, shape, src.dtype)
        st = Stage(name, buf, axes, shape, Load(src, src_idx), guard=guard)
        st.loop_names = [self._fresh(f"{name}_{n}", name) for n in range(len(layout))]
        self.stages[name] = st
        self.order.insert(self.order.index(consumer), name)
        self.nests[name] = self._nest(st)

        def new_index(idx):
            out = []
            for x in layout:
                if isinstance(x, int):
                    out.append(idx[x])
                else:
                    out.append(idx[x[1]] // x[2] if x[0] == "o" else idx[x[1]] % x[2])
            return out

        nest = self.nests[consumer]
        nest = subst_stmt(nest, {}, loads={src: lambda idx: Load(buf, new_index(idx))})
        self.nests[consumer] = _simplify_stmt(nest)
        self._record("cache_read", buffer, consumer, layout)
        return name

    # ================================================================== result
    def finalize(self) -> Func:
        """The scheduled kernel as one function, with its ``likely`` guards and
        accumulations: the loop passes (``passes/loops.py``) make plain loops of it."""
        body: Stmt = Seq([self.nests[n] for n in self.order if n in self.nests])
        outputs = [self.tensor_buffers[t] for t in self.kernel.outputs]
        used = buffers_used(body)
        scratch = [st.buffer for st in self.stages.values()
                   if not st.output and st.buffer.scope == "global" and st.buffer in used]
        scratch += [b for b in self.extra_scratch if b in used and b not in scratch]
        return Func(self.kernel.name, self.inputs, outputs, body, scratch)

    def __str__(self) -> str:
        body = Seq([self.nests[n] for n in self.order if n in self.nests])
        return str(Func(self.kernel.name, self.inputs, [self.tensor_buffers[t] for t in self.kernel.outputs], body))

    # ------------------------------------------------------------------ replay
    def apply(self, call: dict):
        prim = call.get("prim") if isinstance(call, dict) else None
        if prim not in PRIMITIVES:
            raise ScheduleError(f"unknown schedule primitive {prim!r}; known: {', '.join(PRIMITIVES)}")
        args = call.get("args", [])
        if not isinstance(args, list):
            raise ScheduleError(f"{prim}: args must be a list, got {args!r}")
        try:
            return getattr(self, prim)(*args)
        except (TypeError, ValueError, IndexError, KeyError) as e:
            if isinstance(e, ScheduleError):
                raise
            raise ScheduleError(f"{prim}{tuple(args)}: {e}") from None


PRIMITIVES = ("split", "reorder", "fuse", "tile", "vectorize", "parallel", "unroll", "bind", "compute_inline",
              "compute_at", "reverse_compute_at", "cache_read", "cache_write", "add_loop", "register_tile",
              "cache_shared", "block_reduce", "mma_tiles")


def replay(kernel: Kernel, target, trace) -> Schedule:
    """A fresh default nest with every call of ``trace`` (a list or its JSON) applied."""
    if isinstance(trace, str):
        trace = json.loads(trace)
    s = Schedule(kernel, target)
    for call in trace:
        s.apply(call)
    return s


def _unflatten(e: Expr, extents) -> list[Expr]:
    """The row-major indices over ``extents`` of the flat index ``e``."""
    out, stride = [], 1
    for n in reversed(extents):
        out.insert(0, (e // stride) % n if stride * n < max(1, _prod(extents)) else e // stride)
        stride *= n
    return out


def _prod(xs) -> int:
    n = 1
    for x in xs:
        n *= x
    return n


def _check_layout(layout, src: Buffer) -> list:
    """A cache_read layout as [int | ["o"|"i", dim, factor]], or a ScheduleError."""
    if not isinstance(layout, (list, tuple)) or not layout:
        raise ScheduleError(f"cache_read layout must be a non-empty list, got {layout!r}")
    out = []
    for x in layout:
        if isinstance(x, int) and not isinstance(x, bool):
            if not 0 <= x < len(src.shape):
                raise ScheduleError(f"cache_read layout: {src.name} has no dimension {x}")
            out.append(x)
        elif (isinstance(x, (list, tuple)) and len(x) == 3 and x[0] in ("o", "i")
              and all(isinstance(v, int) and not isinstance(v, bool) for v in x[1:])):
            if not 0 <= x[1] < len(src.shape) or x[2] < 1:
                raise ScheduleError(f"cache_read layout entry {list(x)}: dimension or factor out of range")
            out.append([x[0], x[1], x[2]])
        else:
            raise ScheduleError(f"cache_read layout entry {x!r}: use a dimension number or ['o'|'i', dim, factor]")
    return out


def _outer_guards(L: For, stmts) -> dict:
    """The likely guards between ``L`` and the statements whose conditions use no loop
    inside L: they decide whole iterations of L. id(If) -> condition."""
    inner = {x.var for x, _ in walk_stmts(L.body) if isinstance(x, For)}
    out = {}
    for _, above in stmts:
        for g in _below(above, L):
            if isinstance(g, If) and g.likely and not any(E.uses_var(g.cond, v) for v in inner):
                out[id(g)] = g.cond
    return out


def _unguard(x, ids):
    if isinstance(x, If) and id(x) in ids:
        return map_stmt(x.then, lambda y: _unguard(y, ids)) or Seq([])
    return None


def _wrap_guards(conds, body: Stmt) -> Stmt:
    for c in conds:
        body = If(c, body, None, likely=True)
    return body


def _peel_guards(s: Stmt):
    """(conditions of the likely guards wrapping ``s``, what they wrap)."""
    conds = []
    while isinstance(s, If) and s.likely and s.orelse is None:
        conds.append(s.cond)
        s = s.then
    return conds[::-1], s


def _check_dense(accs, L: For, shape, what: str) -> None:
    """Each accumulation under one iteration of L must fill its box without gaps: per
    dimension, the inner loops that index it span exactly the box (no strided walk that
    would make the write-back overwrite elements other iterations own)."""
    for w, above in accs:
        inner = {a.var: _const(a.extent) for a in _below(above, L) if isinstance(a, For)}
        for d, e in enumerate(w.indices):
            span = 1
            for v, n in inner.items():
                if linear_coefficient(e, v):
                    span *= n
            if span != shape[d]:
                raise ScheduleError(f"cannot {what}: the loops inside it walk dimension {d} of {w.buffer.name} "
                                    f"with gaps (a {shape[d]}-wide box for {span} elements); reorder so the "
                                    "inner loops cover a contiguous tile")
