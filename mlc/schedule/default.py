"""Default schedules by rule: tensor-level Kernel -> loop-level Func.

Each stage becomes its own loop nest, in stage order. The rules, by stage shape:

* injective: the innermost axis is vectorized (main loop of whole vectors plus a
  scalar tail) when every read is contiguous or invariant along it; the outermost
  non-trivial axis is parallel when the stage is large enough.
* reduction whose reads are contiguous/invariant along the innermost *output*
  axis (matmul, column sums): a register tile of R rows x U vectors of
  accumulators, the reduction loop inside it -- the classic micro-kernel.
* reduction contiguous along the innermost *reduced* axis (row sums, softmax):
  a vector of partial accumulators, folded into one value at the end.
* anything else: plain loops with a scalar accumulator.

A fused kernel's injective stage that reads a reduction only element for element
(a bias add, an activation, a residual add) is its *epilogue*: it is applied to
the accumulators as they are stored, so the reduction's result never goes
through memory.
"""
from __future__ import annotations

from ..ir import expr as E
from ..ir.expr import Const, Expr, Load, Var, linear_coefficient, substitute
from ..ir.loop import Alloc, Buffer, For, Func, If, Seq, Stmt, Store, buffers_used
from ..ir.tensor import Compute, Kernel, Placeholder, Reduce, reduce_identity
from ..target import Target

PARALLEL_MIN_WORK = 1 << 15     # elementwise operations below which threads cost more than they give
MICRO_ROWS = 6                  # register tile rows for contraction-like reductions
MICRO_VECTORS = 2               # register tile width in vectors (6 x 2 accumulators + 3 operands fit 16 registers)
BLOCK_N = 256                   # output columns per cache block
BLOCK_K = 256                   # reduction extent per cache block: a 256 x 256 f32 block is 256 KiB (L2)
PACK_MIN_ROWS = 48              # rows that must share a cache block for blocking and packing to pay off


def combine(combiner: str, acc: Expr, x: Expr) -> Expr:
    if combiner == "sum":
        return acc + x if not acc.dtype.is_bool else E.binop("or", acc, x)
    if combiner == "prod":
        return acc * x if not acc.dtype.is_bool else E.binop("and", acc, x)
    return E.maximum(acc, x) if combiner == "max" else E.minimum(acc, x)


def flat_offset(indices, shape) -> Expr:
    off: Expr = Const(0)
    for i, n in zip(indices, shape):
        off = off * n + i
    return off


def load_stride(e: Expr, var: Var) -> set:
    """Flat-offset coefficients of ``var`` over every global Load in ``e`` (None = not affine)."""
    out = set()
    for x in E.walk(e):
        if isinstance(x, Load):
            out.add(linear_coefficient(flat_offset(x.indices, x.source.shape), var))
    return out


def _contiguous(e: Expr, var: Var) -> bool:
    return load_stride(e, var) <= {0, 1}


def epilogues(kernel: Kernel) -> dict[Compute, Compute]:
    """reduction stage -> the injective stage applied to it as it is stored: the only
    reader of the reduction, reading it at the index it writes, and reading no other
    stage computed after it."""
    found: dict[Compute, Compute] = {}
    order = {id(s): n for n, s in enumerate(kernel.stages)}
    for e in kernel.stages:
        if e.is_reduction or e in found.values():
            continue
        computes = [t for t in e.inputs() if isinstance(t, Compute)]
        for r in computes:
            if not r.is_reduction or r in kernel.outputs or r in found or r.shape != e.shape:
                continue
            if any(r in s.inputs() for s in kernel.stages if s is not e):
                continue
            if any(order[id(t)] > order[id(r)] for t in computes if t is not r):
                continue
            loads = [x for x in E.walk(e.body) if isinstance(x, Load) and x.source is r]
            if all(len(x.indices) == len(e.axes) and all(a is b for a, b in zip(x.indices, e.axes)) for x in loads):
                found[r] = e
                break
    return found


def schedule_kernel(kernel: Kernel, target: Target) -> Func:
    buffers: dict = {}
    inputs = []
    for t in kernel.inputs:
        if isinstance(t, Placeholder):
            buffers[t] = Buffer(t.name, t.shape, t.dtype)
            inputs.append(buffers[t])
    scratch = []
    for s in kernel.stages:
        buffers[s] = Buffer(s.name, s.shape, s.dtype)
        if s not in kernel.outputs:
            scratch.append(buffers[s])
    outputs = [buffers[s] for s in kernel.outputs]
    epi = epilogues(kernel)
    applied = set(epi.values())
    nests = []
    for s in kernel.stages:
        if s in applied:
            continue
        finish = None
        if s in epi:
            e = epi[s]

            def finish(idx, value, e=e, r=s):
                return Store(buffers[e], idx, substitute(e.body, dict(zip(e.axes, idx)), buffers,
                                                         loads={r: lambda _: value}))
        nests.append(_schedule_stage(s, buffers, target, scratch, finish))
    body = Seq(nests)
    used = buffers_used(body)
    scratch = [b for b in scratch if b in used]   # a reduction whose epilogue took its result needs no buffer
    return Func(kernel.name, inputs, outputs, body, scratch)


def _schedule_stage(stage: Compute, buffers: dict, target: Target, scratch: list, finish=None) -> Stmt:
    """Loops for one stage; buffers the schedule itself needs are appended to ``scratch``.
    ``finish(indices, value)`` stores a reduction's result (default: into its buffer)."""
    out = buffers[stage]
    if isinstance(stage.body, Reduce):
        red = stage.body
        body = substitute(red.body, {}, buffers)
        finish = finish or (lambda idx, value: Store(out, idx, value))
        return _reduction(stage, out, red, body, target, scratch, finish)
    body = substitute(stage.body, {}, buffers)
    return _injective(stage.axes, stage.shape, out, body, target)


# ----------------------------------------------------------------------------- injective

def _injective(axes, shape, out: Buffer, body: Expr, target: Target) -> Stmt:
    rank = len(shape)
    if rank == 0:
        return Store(out, [], body)
    work = out.type.size
    lanes = target.lanes(out.dtype.itemsize)
    inner = axes[-1]
    par_axis = next((d for d in range(rank - 1) if shape[d] > 1), None) if work >= PARALLEL_MIN_WORK else None
    vectorize = shape[-1] >= lanes and lanes > 1 and _contiguous(body, inner)

    def store_at(j: Expr) -> Stmt:
        vmap = {inner: j}
        return Store(out, [*axes[:-1], j], substitute(body, vmap))

    if vectorize:
        n = shape[-1]
        vo, vi = Var(inner.name + "o"), Var(inner.name + "v")
        main_kind = "parallel" if (work >= PARALLEL_MIN_WORK and par_axis is None) else "serial"
        nest: Stmt = For(vo, n // lanes, For(vi, lanes, store_at(vo * lanes + vi), "vector"), main_kind)
        if n % lanes:
            nest = Seq([nest, For(inner, n % lanes, store_at(inner), "serial", start=n - n % lanes)])
    else:
        kind = "parallel" if (work >= PARALLEL_MIN_WORK and par_axis is None and rank == 1) else "serial"
        nest = For(inner, shape[-1], store_at(inner), kind)
    for d in range(rank - 2, -1, -1):
        nest = For(axes[d], shape[d], nest, "parallel" if d == par_axis else "serial")
    return nest


# ----------------------------------------------------------------------------- reductions

def _reduction(stage: Compute, out: Buffer, red: Reduce, body: Expr, target: Target, scratch: list,
               finish) -> Stmt:
    axes, shape = stage.axes, stage.shape
    acc_dt = red.dtype
    lanes = target.lanes(acc_dt.itemsize)
    work = out.type.size * max(1, _prod(red.extents))
    if shape and shape[-1] >= lanes > 1 and _contiguous(body, axes[-1]):
        return _register_tile(stage, out, red, body, target, lanes, work, scratch, finish)
    if red.extents and red.extents[-1] >= lanes > 1 and _contiguous(body, red.axes[-1]):
        return _vector_reduce(stage, out, red, body, lanes, work, finish)
    return _scalar_reduce(stage, out, red, body, work, finish)


def _prod(xs) -> int:
    p = 1
    for x in xs:
        p *= x
    return p


def _spatial_loops(axes, shape, inner: Stmt, work: int, skip: int = 0) -> Stmt:
    """Wrap ``inner`` in serial loops over axes[:len-skip], the outermost >1 axis parallel."""
    rank = len(shape) - skip
    par = next((d for d in range(rank) if shape[d] > 1), None) if work >= PARALLEL_MIN_WORK else None
    for d in range(rank - 1, -1, -1):
        inner = For(axes[d], shape[d], inner, "parallel" if d == par else "serial")
    return inner


def _reduce_loops(red: Reduce, vmap: dict, make_body) -> Stmt:
    """Serial loops over the reduction axes (fresh vars) around make_body(vmap)."""
    fresh = [Var(v.name) for v in red.axes]
    m = dict(vmap)
    m.update(zip(red.axes, fresh))
    nest = make_body(m)
    for v, n in zip(reversed(fresh), reversed(red.extents)):
        nest = For(v, n, nest)
    return nest


def _scalar_reduce(stage, out, red, body, work, finish) -> Stmt:
    acc = Buffer("acc", [1], red.dtype, "local")
    zero = [Const(0)]
    init = Store(acc, zero, reduce_identity(red.combiner, red.dtype))
    update = _reduce_loops(red, {}, lambda m: Store(acc, zero, combine(red.combiner, Load(acc, zero), substitute(body, m))))
    fin = finish(list(stage.axes), Load(acc, zero))
    return _spatial_loops(stage.axes, stage.shape, Alloc(acc, Seq([init, update, fin])), work)


def _vector_reduce(stage, out, red, body, lanes, work, finish) -> Stmt:
    """Partial sums in a vector of accumulators along the contiguous innermost reduced axis."""
    k, nk = red.axes[-1], red.extents[-1]
    vacc = Buffer("vacc", [lanes], red.dtype, "local")
    acc = Buffer("acc", [1], red.dtype, "local")
    zero = [Const(0)]
    ident = reduce_identity(red.combiner, red.dtype)
    v, ko, kt = Var("kv"), Var("ko"), Var("kt")
    outer = Reduce(red.combiner, red.axes[:-1], red.extents[:-1], body)

    def per_outer(m):
        main = For(ko, nk // lanes, For(v, lanes, Store(vacc, [v], combine(
            red.combiner, Load(vacc, [v]), substitute(body, {**m, k: ko * lanes + v}))), "vector"))
        parts = [main]
        if nk % lanes:
            parts.append(For(kt, nk % lanes, Store(acc, zero, combine(
                red.combiner, Load(acc, zero), substitute(body, {**m, k: kt}))), start=nk - nk % lanes))
        return Seq(parts)

    lane = Var("l")
    stmts = Seq([
        For(v, lanes, Store(vacc, [v], ident), "vector"),
        Store(acc, zero, ident),
        _reduce_loops(outer, {}, per_outer),
        For(lane, lanes, Store(acc, zero, combine(red.combiner, Load(acc, zero), Load(vacc, [lane]))), "unroll"),
        finish(list(stage.axes), Load(acc, zero)),
    ])
    return _spatial_loops(stage.axes, stage.shape, Alloc(vacc, Alloc(acc, stmts)), work)


def _blocks(var: Var, extent: int, size: int, make) -> Stmt:
    """``make(start, width)`` over [0, extent) in blocks of ``size``: a loop over the
    whole blocks, then the remainder as one smaller block (widths stay static)."""
    if extent <= size:
        return make(Const(0), extent)
    parts = [For(var, extent // size, make(var * size, size))]
    if extent % size:
        parts.append(make(Const(extent - extent % size), extent % size))
    return Seq(parts)


def _packable_load(body: Expr, i: Var | None, j: Var, k: Var) -> Load | None:
    """The operand worth packing: read contiguously along the output column j, varying
    with the reduction k and not with the row i (matmul's right-hand side), and read
    the same way wherever the body reads its buffer."""
    for x in E.walk(body):
        if isinstance(x, Load):
            off = flat_offset(x.indices, x.source.shape)
            if (linear_coefficient(off, j) == 1 and linear_coefficient(off, k) not in (0, None)
                    and (i is None or not E.uses_var(off, i))):
                same = {str(y) for y in E.walk(body) if isinstance(y, Load) and y.source is x.source}
                return x if same == {str(x)} else None
    return None


def _register_tile(stage, out, red, body, target, lanes, work, scratch, finish) -> Stmt:
    """The micro-kernel schedule for contraction-like reductions (matmul).

    The two innermost output axes are cut into R x (U*lanes) tiles of register
    accumulators with the reduction loop inside, so each value loaded is used R or
    U*lanes times from registers. Around the tiles, columns (NC) and a single
    reduction axis (KC) are blocked so that the block of the right-hand operand in
    use stays in the L2 cache while every row tile sweeps it; a tile continues from
    the partial result in ``out`` after the first reduction block, and only the last
    block stores through ``finish`` (the epilogue). When enough rows
    share it, that block is first packed into panels of tile width, so the
    micro-kernel reads it sequentially instead of one cache line per matrix row.
    """
    axes, shape = stage.axes, stage.shape
    j, nj = axes[-1], shape[-1]
    has_rows = len(shape) >= 2
    i, ni = (axes[-2], shape[-2]) if has_rows else (None, 1)
    width = MICRO_VECTORS * lanes
    rows = MICRO_ROWS if has_rows and ni >= MICRO_ROWS else 1
    ident = reduce_identity(red.combiner, red.dtype)
    # cache blocks and packing pay off only when many row tiles reuse the same block
    blocked = has_rows and ni >= PACK_MIN_ROWS
    k_blocked = blocked and len(red.axes) == 1 and red.extents[0] > BLOCK_K
    kvar = red.axes[0] if k_blocked else None
    outer_par = next((d for d in range(len(shape) - 2) if shape[d] > 1), None) if work >= PARALLEL_MIN_WORK else None
    packed_load = packed = None
    if blocked and len(red.axes) == 1 and nj >= width and outer_par is None:
        packed_load = _packable_load(body, i, j, red.axes[0])
    if packed_load is not None:
        krows = min(red.extents[0], BLOCK_K)
        packed = Buffer(f"packed{len(scratch)}", [min(nj, BLOCK_N) // width, krows, width], packed_load.dtype)
        scratch.append(packed)

    def tile(i_base, R: int, j_base: Expr, cols: int, vec: bool, k0: Expr, kw: int, first, last,
             panel=None) -> Stmt:
        """Accumulate an R x cols block at (i_base, j_base) over reduction [k0, k0 + kw);
        with ``panel``, the packed operand is read from that panel of ``packed``."""
        acc = Buffer("acc", [R, cols], red.dtype, "local")
        r, c, cv, cu = Var("r"), Var("c"), Var("cv"), Var("cu")
        row = (lambda: [r if R > 1 else Const(0)])

        def over_block(make) -> Stmt:
            if vec:
                inner = For(cu, cols // lanes, For(cv, lanes, make(cu * lanes + cv), "vector"), "unroll")
            else:
                inner = For(c, cols, make(c), "unroll" if cols > 1 else "serial")
            return For(r, R, inner, "unroll") if R > 1 else inner

        def out_index(col):
            rows_idx = [i_base + r if R > 1 else i_base] if i is not None else []
            return [*axes[:-2], *rows_idx, j_base + col]

        def point(m, col):
            mm = dict(m)
            mm[j] = j_base + col
            if i is not None:
                mm[i] = i_base + r if R > 1 else i_base
            return mm

        start_fresh = over_block(lambda col: Store(acc, [*row(), col], ident))
        resume = over_block(lambda col: Store(acc, [*row(), col], Load(out, out_index(col))))
        if first is True:
            init = start_fresh
        elif first is False:
            init = resume
        else:
            init = If(first, start_fresh, resume)

        def value(m, col):
            if panel is None:
                return substitute(body, point(m, col))
            kk = m[red.axes[0]]
            return substitute(body, point(m, col), loads={
                packed_load.source: lambda idx: Load(packed, [panel, kk - (k0 if k0 is not None else 0), col])})

        def update(m):
            return over_block(lambda col: Store(acc, [*row(), col], combine(
                red.combiner, Load(acc, [*row(), col]), value(m, col))))

        if k_blocked:
            kk = Var(kvar.name)
            loop = For(kk, kw, update({kvar: kk}), start=k0)
        else:
            loop = _reduce_loops(red, {}, update)
        final = over_block(lambda col: finish(out_index(col), Load(acc, [*row(), col])))
        partial = over_block(lambda col: Store(out, out_index(col), Load(acc, [*row(), col])))
        fin = final if last is True else partial if last is False else If(last, final, partial)
        return Alloc(acc, Seq([init, loop, fin]))

    def columns(i_base, R: int, c0: Expr, cw: int, k0, kw, first, last) -> Stmt:
        """Tiles over columns [c0, c0 + cw): whole vector tiles, a narrower vector tile, scalar columns."""
        jo, jt = Var("jo"), Var("jt")
        parts = []
        if cw // width:
            parts.append(For(jo, cw // width, tile(i_base, R, c0 + jo * width, width, True, k0, kw, first, last,
                                                    jo if packed is not None else None)))
        rest = cw % width
        if rest // lanes:
            parts.append(tile(i_base, R, c0 + (cw - rest), (rest // lanes) * lanes, True, k0, kw, first, last))
        if rest % lanes:
            parts.append(For(jt, rest % lanes, tile(i_base, R, c0 + jt, 1, False, k0, kw, first, last),
                             start=cw - rest % lanes))
        return Seq(parts)

    def pack(c0, cw, k0, kw) -> Stmt:
        """packed[p, kk, c] = the operand at reduction index k0 + kk, column c0 + p * width + c."""
        kk, p, cu, cv = Var("kk"), Var("p"), Var("pu"), Var("pv")
        k0, kw = (k0, kw) if k0 is not None else (Const(0), red.extents[0])
        value = substitute(packed_load, {red.axes[0]: k0 + kk, j: c0 + p * width + (cu * lanes + cv)})
        store = Store(packed, [p, kk, cu * lanes + cv], value)
        return For(kk, kw, For(p, cw // width, For(cu, width // lanes, For(cv, lanes, store, "vector"), "unroll")),
                   "parallel" if work >= PARALLEL_MIN_WORK else "serial")

    def all_rows(c0, cw, k0, kw, first, last) -> Stmt:
        if not has_rows:
            return columns(None, 1, c0, cw, k0, kw, first, last)
        io, it = Var(i.name + "o"), Var(i.name + "t")
        nest = []
        if ni // rows:
            par = work >= PARALLEL_MIN_WORK and outer_par is None and ni // rows > 1
            nest.append(For(io, ni // rows, columns(io * rows, rows, c0, cw, k0, kw, first, last),
                            "parallel" if par else "serial"))
        if ni % rows:
            nest.append(For(it, ni % rows, columns(it, 1, c0, cw, k0, kw, first, last), start=ni - ni % rows))
        if packed is not None and cw >= width:
            nest.insert(0, pack(c0, cw, k0, kw))
        return Seq(nest)

    def k_blocks(c0, cw) -> Stmt:
        if not k_blocked:
            return all_rows(c0, cw, None, None, True, True)
        kb = Var("kb")
        nk = red.extents[0]

        def first_block(k0):
            """Whether the block at k0 starts the reduction: known statically for the
            tail block (a Const start), decided at run time inside the block loop."""
            if isinstance(k0, Const):
                return k0.value == 0
            return E.binop("eq", kb, Const(0))

        def last_block(k0, kw):
            """Whether the block at k0 ends the reduction (then the epilogue runs)."""
            if isinstance(k0, Const):
                return k0.value + kw == nk
            return E.binop("eq", kb, Const(nk // BLOCK_K - 1)) if nk % BLOCK_K == 0 else False

        return _blocks(kb, nk, BLOCK_K, lambda k0, kw: all_rows(c0, cw, k0, kw, first_block(k0), last_block(k0, kw)))

    inner = _blocks(Var("jb"), nj, BLOCK_N if blocked else nj, k_blocks)
    for d in range(len(shape) - 3, -1, -1):
        inner = For(axes[d], shape[d], inner, "parallel" if d == outer_par else "serial")
    return inner
