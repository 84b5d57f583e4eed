"""Default schedules by rule: each stage gets a list of schedule primitives
(``mlc.schedule.primitives``), chosen by the stage's shape and parameterized by
the target (vector width, cores, cache sizes) and by *knobs* the tuner varies.

* injective: the innermost axis split by the vector width and vectorized when
  every read is contiguous or invariant along it; the outermost non-trivial axis
  parallel when the stage is large enough.
* reduction whose reads are affine along the innermost *output* axis (matmul,
  convolution, column sums, pooling): the micro-kernel. Rows x columns tiles of
  register accumulators (``cache_write``) with the reduction loops inside; around
  them, column and reduction blocks sized for the L2 cache, the block of the
  right-hand operand packed into tile-wide panels (``cache_read`` +
  ``compute_at``) when enough rows reuse it.
* other reductions: a scalar accumulator per output element.

A fused kernel's injective stage that reads a reduction only element for element
(a bias add, an activation, a residual add) is its *epilogue*: it runs on each
tile as the accumulators are stored (``reverse_compute_at``), so the reduction's
result never goes through memory.
"""
from __future__ import annotations

from ..ir import expr as E
from ..ir.expr import Const, Expr, Load, Var, linear_coefficient, offset_stride
from ..ir.loop import Func
from ..ir.tensor import Compute, Kernel
from ..target import Target
from .gpu import gpu_schedule
from .primitives import Schedule, replay

PARALLEL_MIN_WORK = 1 << 15     # elementwise operations below which threads cost more than they give
MICRO_ROWS = 6                  # extent from which an axis fills the register tile's rows
GEMV_VECTORS = 12                # at most this many column vectors in a matrix-vector product's tile
TRANSPOSE_TILE = 16              # elements per side of a transposition's tiles: a cache line of float32
PACK_MIN_ROWS = 48              # rows that must share a cache block for blocking and packing to pay off


def cache_blocks(target: Target, itemsize: int) -> tuple[int, int]:
    """Column and reduction block (NC, KC): a KC x NC block of the packed operand
    fills half the L2 cache, leaving room for the rows streaming past it; 256 x 256
    float32 on a 512 KiB L2."""
    elems = max(4096, target.l2_bytes // 2 // itemsize)
    side = 1 << (int(elems ** 0.5).bit_length() - 1)
    return side, side


def default_knobs(kernel: Kernel, target: Target) -> dict:
    """The knob values the rules use when nothing is tuned."""
    lanes = target.lanes(4)
    nc, kc = cache_blocks(target, 4)
    # accumulators + one row operand + one vector of the other fit the register file:
    # 16 vector registers on AVX2 and NEON -> 6 rows x 2 vectors; 32 on AVX-512 -> 8 x 3
    rows, vectors = (8, 3) if target.vector_bytes >= 64 else (6, 2)
    if any(_one_row(c) for c in kernel.stages):
        # a matrix-vector product (an RNN step at batch 1): one row of accumulators, so the
        # tile takes as many column vectors as the registers hold (2v + 1 of 16 or 32), each
        # row of the matrix read in longer contiguous runs
        rows, vectors = 1, min(GEMV_VECTORS, ((32 if target.vector_bytes >= 64 else 16) - 1) // 2)
    return {"rows": rows, "vectors": vectors, "block_n": nc, "block_k": kc, "pack": 1,
            "parallel": 1 if target.cores > 1 else 0,
            "row_axis": 0, "lanes": lanes}


def _one_row(c: Compute) -> bool:
    """Whether ``c`` is a product whose register tile has one row: a vector times a matrix
    ([1, k] @ [k, n]; a reduction to a vector of rank 1 keeps the rules' usual tile)."""
    return c.is_reduction and len(c.shape) >= 2 and c.shape[_row_axis(c)] == 1


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
            out.add(offset_stride(x.indices, x.source.shape, var))
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




# ============================================================================ rules

def schedule_kernel(kernel: Kernel, target: Target, trace: list | None = None) -> Func:
    """Loops for a kernel: ``trace`` (a tuned schedule) replayed on the default nest,
    or the rules' schedule."""
    if trace is not None:
        return replay(kernel, target, trace).finalize()
    return rule_schedule(kernel, target).finalize()


def rule_schedule(kernel: Kernel, target: Target, knobs: dict | None = None) -> Schedule:
    """The rules applied to a fresh Schedule; ``.trace`` is the JSON list of calls.
    A cuda target gets the GPU rules (``gpu.py``)."""
    if target.kind == "cuda":
        return gpu_schedule(kernel, target, knobs)
    k = default_knobs(kernel, target)
    k.update(knobs or {})
    s = Schedule(kernel, target)
    epi = epilogues(kernel)
    for c in kernel.stages:
        if s.stages[c.name].status != "root":
            continue
        if c.is_reduction:
            _reduction(s, c, epi.get(c), k)
        else:
            _injective(s, c, k)
    return s


def _split(s: Schedule, loop: str, factor: int, outer: str, inner: str) -> tuple[str, str]:
    return s.split(loop, factor, [s.unused_name(outer), s.unused_name(inner)])


def _work(c: Compute) -> int:
    n = 1
    for x in c.shape:
        n *= x
    if c.is_reduction:
        for x in c.body.extents:
            n *= x
    return n


def _vector_inner(s: Schedule, loop: str, extent: int, lanes: int, unroll_outer: bool) -> str:
    """Split ``loop`` by the vector width and vectorize the lanes; returns the outer loop."""
    if extent <= lanes:
        s.vectorize(loop)
        return loop
    o, v = _split(s, loop, lanes, loop + "o", loop + "v")
    s.vectorize(v)
    if unroll_outer:
        s.unroll(o)
    return o


def _injective(s: Schedule, c: Compute, k: dict) -> None:
    names = s.stages[c.name].loop_names
    rank = len(c.shape)
    if rank == 0:
        return
    lanes = k["lanes"] if c.dtype.itemsize == 4 else s.target.lanes(c.dtype.itemsize)
    big = _work(c) >= PARALLEL_MIN_WORK and k["parallel"]
    par = next((d for d in range(rank - 1) if c.shape[d] > 1), None) if big else None
    outer = names[-1]
    if rank >= 2 and min(c.shape[-2:]) >= TRANSPOSE_TILE and not _contiguous(c.body, c.axes[-1]) \
            and _contiguous(c.body, c.axes[-1 - 1]):
        # a transposition: square tiles, so that each cache line read (along the second-to-last
        # axis) is used whole while it is in L1, instead of one element per line per row written
        io, _, _, ji = s.tile(names[-2], names[-1], TRANSPOSE_TILE, TRANSPOSE_TILE)
        if lanes > 1:
            _vector_inner(s, ji, TRANSPOSE_TILE, lanes, True)
        if big:
            s.parallel(names[par] if par is not None and par < rank - 2 else io)
        return
    shape, contiguous = list(c.shape), _contiguous(c.body, c.axes[-1])
    if rank >= 2 and 1 < shape[-1] < lanes > 1 and shape[-2] > 1 and _rows_contiguous(c):
        # rows shorter than a vector (7 x 7 feature maps) that follow each other in memory:
        # one loop over both axes, vectorized
        names = list(names[:-2]) + [s.fuse(names[-2], names[-1])]
        shape[-2:] = [shape[-2] * shape[-1]]
        contiguous, outer = True, names[-1]
        par = next((d for d in range(len(shape) - 1) if shape[d] > 1), None) if big else None
    if shape[-1] >= lanes > 1 and contiguous:
        outer = _vector_inner(s, names[-1], shape[-1], lanes, False)
    if par is not None:
        s.parallel(names[par])
    elif big and (len(shape) == 1 or all(n == 1 for n in shape[:-1])):
        s.parallel(outer)


def _rows_contiguous(c: Compute) -> bool:
    """Whether ``c``'s last two axes, as one, read every operand contiguously (or not at all)."""
    row, col = c.axes[-2], c.axes[-1]
    flat = Var("flat")
    n = Const(c.shape[-1])
    body = E.substitute(c.body, {row: E.binop("floordiv", flat, n), col: E.binop("mod", flat, n)})
    return load_stride(body, flat) <= {0, 1}


def _reduction(s: Schedule, c: Compute, epilogue: Compute | None, k: dict) -> None:
    red = c.body
    lanes = s.target.lanes(red.dtype.itemsize)
    along_output = c.shape and c.shape[-1] >= lanes > 1 and (
        _contiguous(red.body, c.axes[-1])
        or (_affine_along(red.body, c.axes[-1]) and not _contiguous(red.body, red.axes[-1])))
    if along_output:
        _micro_kernel(s, c, epilogue, k, lanes)
        return
    st = s.stages[c.name]
    rank = len(c.shape)
    if rank:
        s.cache_write(c.name, st.loop_names[rank - 1])
        if red.extents and red.extents[-1] >= lanes > 1 and _contiguous(red.body, red.axes[-1]):
            # contiguous along the reduced axis (row sums, softmax): one partial per lane
            kl = st.loop_names[-1]
            _, kv = _split(s, kl, lanes, kl + "o", kl + "v")
            s.vectorize(kv)
        if _work(c) >= PARALLEL_MIN_WORK and k["parallel"]:
            par = next((d for d in range(rank) if c.shape[d] > 1), None)
            if par is not None:
                s.parallel(st.loop_names[par])


def _micro_kernel(s: Schedule, c: Compute, epilogue: Compute | None, k: dict, lanes: int) -> None:
    """Register tiles with the reduction inside; cache blocks and packing around them
    (the BLIS loop order: column block, reduction block, pack, row tiles, column tiles)."""
    red = c.body
    st = s.stages[c.name]
    rank = len(c.shape)
    names = st.loop_names
    j, nj = names[rank - 1], c.shape[-1]
    ri = (_row_axis(c) if k.get("row_axis", 0) == 0 else rank - 2) if rank >= 2 else None
    has_rows = ri is not None
    i, ni = (names[ri], c.shape[ri]) if has_rows else (None, 1)
    batch_axes = [d for d in range(rank - 1) if d != ri]
    batch = [names[d] for d in batch_axes]
    ks = names[rank:]
    width = min(k["vectors"] * lanes, max(lanes, nj // lanes * lanes))
    rows = min(k["rows"], ni) if has_rows else 1
    work = _work(c)
    big = work >= PARALLEL_MIN_WORK and k["parallel"]
    outer_par = next((d for d in batch_axes if c.shape[d] > 1), None) if big else None
    blocked = has_rows and ni >= PACK_MIN_ROWS
    nc = max(width, k["block_n"] // width * width)
    kc = k["block_k"]
    single_k = len(ks) == 1
    jb = kb = None
    jc, kin = j, list(ks)
    if blocked and nj > nc:
        jb, jc = _split(s, j, nc, j + "b", j + "c")
    if blocked and single_k and red.extents[0] > kc:
        kb, kc_loop = _split(s, ks[0], kc, ks[0] + "b", ks[0] + "c")
        kin = [kc_loop]
    io, ii = (i, None)
    if has_rows and rows > 1:
        io, ii = _split(s, i, rows, i + "o", i + "i")
    jo, ji = _split(s, jc, width, j + "o", j + "i")
    order = [*batch, jb, kb, io, jo, *kin, ii, ji]
    order = [x for x in order if x is not None]
    if len(order) > 1:
        s.reorder(*order)
    s.cache_write(c.name, jo)
    if epilogue is not None:
        s.reverse_compute_at(epilogue.name, jo)
        en = s.stages[epilogue.name].loop_names
        _vector_inner(s, en[-1], width, lanes, True)
        if rows > 1:
            s.unroll(en[ri])
    _vector_inner(s, ji, width, lanes, True)
    if ii is not None:
        s.unroll(ii)
    packed = None
    if k["pack"] and blocked and single_k and outer_par is None and nj >= width:
        packed = _pack(s, c, red, c.axes[ri], width, lanes, kb or jb)
    if outer_par is not None:
        s.parallel(names[outer_par])
    elif big and has_rows and -(-ni // rows) > 1:
        s.parallel(io)
    elif big and (not has_rows or ni == 1):   # one row (a matrix-vector product): split the columns
        s.parallel(jo)
    if packed is not None and big:
        s.parallel(s.stages[packed].loop_names[1])   # the reduction rows, outermost (see _pack)


def _row_axis(c: Compute) -> int:
    """The output axis the register tile's rows walk: one the vector operand (read
    contiguously along the columns) does not depend on, so each vector loaded serves
    every row of the tile -- matmul's rows; a convolution's output channels, not its
    output rows (whose input windows differ)."""
    j = c.axes[-1]
    body = c.body.body
    vec = [x for x in E.walk(body) if isinstance(x, Load)
           and linear_coefficient(flat_offset(x.indices, x.source.shape), j) == 1]
    free = [d for d in range(len(c.shape) - 1) if c.shape[d] > 1
            and not any(E.uses_var(flat_offset(x.indices, x.source.shape), c.axes[d]) for x in vec)]
    if not free:
        return len(c.shape) - 2
    wide = [d for d in free if c.shape[d] >= MICRO_ROWS]
    return wide[-1] if wide else max(free, key=lambda d: c.shape[d])


def _pack(s: Schedule, c: Compute, red, row_axis, width: int, lanes: int, at: str | None) -> str | None:
    """Pack the operand read along the columns into panels [j // width, k, j % width]."""
    load = _packable_load(red.body, row_axis, c.axes[-1], red.axes[0])
    if load is None or len(load.indices) != 2:
        return None
    dj = next((d for d, x in enumerate(load.indices) if x is c.axes[-1]), None)
    dk = next((d for d, x in enumerate(load.indices) if x is red.axes[0]), None)
    if dj is None or dk is None:
        return None
    name = s.cache_read(load.source.name, c.name, [["o", dj, width], dk, ["i", dj, width]])
    if at is not None:
        s.compute_at(name, at)
    pn = s.stages[name].loop_names
    s.reorder(pn[1], pn[0])      # walk the operand row by row (its memory order), panels inside
    _vector_inner(s, pn[2], width, lanes, True)
    return name


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


def _affine_along(e: Expr, var: Var) -> bool:
    return None not in load_stride(e, var)
