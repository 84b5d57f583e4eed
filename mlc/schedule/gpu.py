"""Default GPU schedules by rule (targets of kind ``cuda``): the tuner's starting point,
each a trace of schedule primitives like the CPU rules' (``default.py``).

Every stage becomes its own launch nest: a ``blockIdx`` loop nest with constant
extents, its ``threadIdx`` loops inside (what the NVPTX code generator takes; a
block's size per axis is its widest thread loop, narrower ones are guarded).

* contractions (matmul, batch matmul: a sum over one axis of a product of operands,
  each missing one of the two last output axes): a ``TILE`` x ``TILE`` block tile,
  ``TILE/REG`` x ``TILE/REG`` threads each accumulating a ``REG`` x ``REG`` register
  tile (``register_tile``), the operands' tiles for each ``K_TILE`` slice of the
  reduction copied cooperatively into shared memory between barriers
  (``cache_shared``); batch axes on ``blockIdx.z``; an elementwise epilogue (bias,
  activation, residual) applied as the registers are stored.
* float16 matrix products on sm_80 and newer: tensor cores (``mma_tiles``: warps of
  ``mma.sync.m16n8k16``, float32 accumulators in registers, operand slices in shared
  memory, the epilogue on the registers).
* convolutions (not grouped): an implicit GEMM (``conv_tiles``) -- output channels as
  the rows, the innermost spatial axis as the columns (the other spatial axes and the
  batch on ``blockIdx.z``), input channels and window fused into the reduction -- with
  the same register tiles and fused epilogue; the weights' slice staged through shared
  memory where it is a box (1x1 convolutions), the input read through the cache.
* row reductions (softmax's max and sum, layer norm's moments, sums over the last
  axis: a reduction read contiguously along its innermost reduced axis, with few rows
  or long ones): one block per output element, threads striding the row into
  registers, combined by warp shuffles, the warps' results through shared memory
  (``block_reduce``); rows too few to fill the device (a full reduction) are split
  over several blocks each, whose partials a second launch combines (two phases).
* every other stage (the rule that covers all kernels): one thread per output element --
  the output axes fused into one, split by ``THREADS``, the outer part bound to
  ``blockIdx.x`` and the inner to ``threadIdx.x`` (the tail block guarded); a
  reduction's loops run serially in its thread, accumulating in a register.

The constants below are the defaults of the rules' knobs (``KNOBS``), which
``gpu_schedule(kernel, target, knobs)`` overrides: the GPU tuner's search space
(``mlc.tune.gpu_space``) is their legal combinations.
"""
from __future__ import annotations

from ..ir import expr as E
from ..ir.expr import Load, affine, linear_coefficient
from ..ir.tensor import Compute, Kernel
from .primitives import Schedule, ScheduleError

THREADS = 256     # threads per block of the one-thread-per-element rule
TILE = 64         # a contraction's block tile (rows and columns)
REG = 4           # each thread's register tile (rows and columns): 16 x 16 threads
K_TILE = 16       # the reduction slice staged through shared memory per step
ROW_THREADS = 256  # the most threads a row reduction's block uses
MAX_GRID_YZ = 65535   # blocks a grid may have along y and z (x: 2**31 - 1)
BLOCKS_PER_SM = 4     # a two-phase reduction's first launch: blocks per SM it aims for
MIN_RUNS_PER_BLOCK = 4   # ... and the fewest runs of a block's threads each block reduces
MAX_PARTIALS = 1024   # ... and the most partials per row (its second launch: one block per row)
MAX_BLOCK = 1024      # threads per block on every CUDA architecture

# the knobs the tuner varies (mlc.tune.gpu_space), at the values the rules use untuned:
# per-element threads, a contraction's block tile per axis, its register tile and
# reduction slice, and the most threads of a row reduction's block
KNOBS = {"threads": THREADS, "tile_m": TILE, "tile_n": TILE, "reg": REG, "k_tile": K_TILE,
         "row_threads": ROW_THREADS}


class _Knobs(dict):
    """The knob values, remembering which ones the rules read (``Schedule.knobs_read``):
    the tuner varies only those, so a kernel's space has no knob that changes nothing."""

    def __init__(self, values):
        super().__init__(values)
        self.read: set[str] = set()

    def __getitem__(self, name):
        self.read.add(name)
        return super().__getitem__(name)


def check_knobs(knobs: dict) -> dict:
    """The knobs over the defaults; ScheduleError naming the first value no launch can
    use (an unknown name, a block over 1024 threads, a register tile that does not
    divide the block tile)."""
    unknown = sorted(set(knobs) - set(KNOBS))
    if unknown:
        raise ScheduleError(f"unknown GPU schedule knob(s) {', '.join(unknown)}: the GPU rules take "
                            f"{', '.join(KNOBS)}")
    k = {**KNOBS, **knobs}
    for name, v in k.items():
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ScheduleError(f"GPU knob {name} must be a positive integer, got {v!r}")
    if k["threads"] > MAX_BLOCK:
        raise ScheduleError(f"GPU knob threads={k['threads']}: a block has at most {MAX_BLOCK} threads")
    rt = k["row_threads"]
    if rt < 32 or rt > MAX_BLOCK or rt & (rt - 1):
        raise ScheduleError(f"GPU knob row_threads must be a power of two in [32, {MAX_BLOCK}], got {rt}")
    if k["tile_m"] % k["reg"] or k["tile_n"] % k["reg"]:
        raise ScheduleError(f"GPU knob reg={k['reg']} must divide the block tile {k['tile_m']}x{k['tile_n']}")
    block = (k["tile_m"] // k["reg"]) * (k["tile_n"] // k["reg"])
    if block > MAX_BLOCK:
        raise ScheduleError(f"GPU knobs tile {k['tile_m']}x{k['tile_n']} with reg={k['reg']} make {block} threads "
                            f"per block: at most {MAX_BLOCK}")
    return k


def gpu_schedule(kernel: Kernel, target, knobs: dict | None = None) -> Schedule:
    """The GPU rules applied to a fresh Schedule; ``.trace`` is the JSON list of calls.
    ``knobs`` (``KNOBS``: the tuner's) override the rules' constants; ``.knobs_read``
    names the knobs the rules used for this kernel."""
    k = _Knobs(check_knobs(knobs or {}))
    from .default import epilogues   # (default.py imports this module)
    s = Schedule(kernel, target)
    epi = epilogues(kernel)
    for c in kernel.stages:
        if s.stages[c.name].status != "root":
            continue
        if _half_products(c) and target.arch >= "sm_80" and _tensor_cores(s, c, epi.get(c)):
            pass
        elif _tiled_contraction(c, k):
            matmul_tiles(s, c, epi.get(c), k["tile_m"], k["tile_n"], k["reg"], k["k_tile"])
        elif _implicit_gemm(c, k):
            conv_tiles(s, c, epi.get(c), k["tile_m"], k["tile_n"], k["reg"], k["k_tile"])
        elif _row_reduction(c):
            threads = _row_threads(c, k["row_threads"])
            s.block_reduce(c.name, threads, _row_blocks(c, threads, target))
        else:
            per_element(s, c, k["threads"])
    s.knobs_read = set(k.read)
    return s


def per_element(s: Schedule, c: Compute, threads: int = THREADS) -> None:
    """One thread per output element: ``blockIdx.x`` over blocks of ``threads`` output
    elements (row-major), ``threadIdx.x`` over the elements of a block; a reduction
    accumulates serially in the thread's register."""
    st = s.stages[c.name]
    rank = len(c.shape)
    size = 1
    for n in c.shape:
        size *= n
    if size == 0:
        return     # an empty output: nothing to compute, no launch
    if rank == 0:
        thread = s.add_loop(c.name, s.unused_name(f"{c.name}_thread"))
        s.bind(s.add_loop(c.name, s.unused_name(f"{c.name}_block")), "blockIdx.x")   # around the thread loop
        s.bind(thread, "threadIdx.x")
        return
    names = st.loop_names[:rank]
    if c.is_reduction:
        s.cache_write(c.name, names[-1])
    flat = names[0]
    for n in names[1:]:
        flat = s.fuse(flat, n, s.unused_name(f"{flat}_{n}"))
    bo, ti = s.split(flat, min(threads, size), [s.unused_name(f"{flat}_b"), s.unused_name(f"{flat}_t")])
    s.bind(bo, "blockIdx.x")
    s.bind(ti, "threadIdx.x")


def _size(xs) -> int:
    n = 1
    for x in xs:
        n *= x
    return n


def _loads(c: Compute) -> list:
    return [x for x in E.walk(c.body.body if c.is_reduction else c.body) if isinstance(x, Load)]


def _tiled_contraction(c: Compute, knobs=KNOBS) -> bool:
    """A sum over one axis whose operands each miss one of the two last output axes
    (so a block tile reuses them), every index affine, both tiled axes wide enough."""
    if not c.is_reduction or c.body.combiner != "sum" or len(c.shape) < 2 or len(c.body.axes) != 1:
        return False
    if c.shape[-2] < 16 or c.shape[-1] < 16 or c.body.extents[0] < 8:
        return False
    if _size(c.shape[:-2]) > MAX_GRID_YZ or -(-c.shape[-2] // knobs["tile_m"]) > MAX_GRID_YZ:
        return False
    i, j = c.axes[-2], c.axes[-1]
    loads = _loads(c)
    if not loads or any(affine(x) is None for ld in loads for x in ld.indices):
        return False
    # each operand index follows at most one of the tiled and reduced axes: an index such as
    # k * 55 + l (two output axes flattened into one) would make the staged tile span whole rows
    # (hundreds of KiB of shared memory) instead of TILE x K_TILE elements
    if any(sum(E.uses_var(x, v) for v in (i, j, c.body.axes[0])) > 1 for ld in loads for x in ld.indices):
        return False
    return any(not any(E.uses_var(x, j) for x in ld.indices) for ld in loads) and any(
        not any(E.uses_var(x, i) for x in ld.indices) for ld in loads)


def _row_reduction(c: Compute) -> bool:
    """Read contiguously along the innermost reduced axis, with few rows (a softmax,
    a layer norm over a batch) or long ones, so a block per row has work."""
    if not c.is_reduction or c.body.combiner not in ("sum", "max", "min", "prod"):
        return False
    k, rows = _size(c.body.extents), _size(c.shape)
    if k < 32 or not (rows <= 8192 or k >= 1024):
        return False
    r = c.body.axes[-1]
    strides = set()
    for ld in _loads(c):
        off = 0
        for x, n in zip(ld.indices, ld.source.shape):
            off = off * n + x
        strides.add(linear_coefficient(E.as_expr(off), r))
    return 1 in strides and None not in strides


def _row_blocks(c: Compute, threads: int, target) -> int:
    """Blocks per row: 1, or for rows too few to fill the device (a full reduction) as
    many as give every SM ``BLOCKS_PER_SM`` blocks, each reducing at least
    ``MIN_RUNS_PER_BLOCK`` runs of ``threads`` elements (the two-phase reduction)."""
    k, rows = _size(c.body.extents), _size(c.shape)
    want = -(-BLOCKS_PER_SM * max(1, target.cores) // rows)
    blocks = min(want, k // (threads * MIN_RUNS_PER_BLOCK), MAX_PARTIALS)
    return blocks if blocks >= 2 else 1


def _row_threads(c: Compute, most: int = ROW_THREADS) -> int:
    """The smallest power of two from 32 that covers the row, up to ``most``."""
    k = _size(c.body.extents)
    t = 32
    while t < min(k, most):
        t *= 2
    return t


def matmul_tiles(s: Schedule, c: Compute, epilogue: Compute | None = None, tile_m: int = TILE, tile_n: int = TILE,
                 reg: int = REG, k_tile: int = K_TILE) -> None:
    """Block tile (``tile_m`` x ``tile_n``) through shared memory, ``reg`` x ``reg``
    register tile per thread, ``k_tile`` reduction slice per step (see the module doc);
    ``epilogue`` (an elementwise consumer) computed as the registers are stored."""
    names = s.stages[c.name].loop_names
    rank = len(c.shape)
    ko = block_tile(s, c, epilogue, names[:rank - 2], names[rank - 2], names[rank - 1], names[rank],
                    tile_m, tile_n, reg, k_tile)
    staged = []
    for ld in _loads(c):
        if ld.source.name not in staged:
            staged.append(ld.source.name)
            s.cache_shared(ld.source.name, ko)


def block_tile(s: Schedule, c: Compute, epilogue, batch: list, i: str, j: str, k: str, tile_m: int, tile_n: int,
               reg: int, k_tile: int) -> str:
    """The loops of a contraction as a GEMM: ``i`` x ``j`` output tiles per block (batch
    loops on ``blockIdx.z``), a ``reg`` x ``reg`` register tile per thread, the
    reduction ``k`` in slices of ``k_tile``; returns the slice loop (where operands are
    staged through shared memory)."""
    bi, i1 = s.split(i, tile_m, [s.unused_name(f"{i}_b"), s.unused_name(f"{i}_1")])
    ty, ri = s.split(i1, reg, [s.unused_name(f"{i}_t"), s.unused_name(f"{i}_r")])
    bj, j1 = s.split(j, tile_n, [s.unused_name(f"{j}_b"), s.unused_name(f"{j}_1")])
    tx, rj = s.split(j1, reg, [s.unused_name(f"{j}_t"), s.unused_name(f"{j}_r")])
    ko, ki = s.split(k, k_tile, [s.unused_name(f"{k}_o"), s.unused_name(f"{k}_i")])
    bz = batch[0] if batch else None
    for n in batch[1:]:
        bz = s.fuse(bz, n, s.unused_name(f"{bz}_{n}"))
    s.reorder(*([bz] if bz else []), bi, bj, ko, ty, tx, ki, ri, rj)
    if bz:
        s.bind(bz, "blockIdx.z")
    s.bind(bi, "blockIdx.y")
    s.bind(bj, "blockIdx.x")
    s.bind(ty, "threadIdx.y")
    s.bind(tx, "threadIdx.x")
    s.register_tile(c.name, ko, *([epilogue.name] if epilogue is not None else []))
    return ko


def _half_products(c: Compute) -> bool:
    """A sum of float16 products widened to float32 (a float16 matmul or convolution)."""
    v = c.body.body if c.is_reduction else None
    return (v is not None and c.body.combiner == "sum" and isinstance(v, E.BinOp) and v.op == "mul" and
            all(isinstance(f, E.Cast) and f.value.dtype.name == "float16" for f in (v.a, v.b)))


def _tensor_cores(s: Schedule, c: Compute, epilogue: Compute | None) -> bool:
    """``mma_tiles`` where it applies (a float16 matrix product; a float16 convolution,
    whose operands do not split into rows and columns, is refused and takes the other
    rules)."""
    try:
        s.mma_tiles(c.name, epilogue.name if epilogue is not None else None)
    except ScheduleError:
        return False
    return True


def _implicit_gemm(c: Compute, knobs=KNOBS) -> bool:
    """A convolution (N, C_out, spatial...) = sum over (C_in, window...) of input x
    weights, where the weights follow the output channel and no other output axis and
    the input does not follow the output channel (not grouped or depthwise): a GEMM of
    C_out x (spatial) over (C_in x window), tiled without an im2col copy."""
    if not c.is_reduction or c.body.combiner != "sum" or not 3 <= len(c.shape) <= 5:
        return False
    loads = _loads(c)
    if len(loads) != 2 or loads[0].source is loads[1].source:
        return False
    n, oc, spatial = c.axes[0], c.axes[1], c.axes[2:]
    uses = [{v for v in c.axes if any(E.uses_var(x, v) for x in ld.indices)} for ld in loads]
    weights = [m for m, u in enumerate(uses) if oc in u and not (u - {oc})]
    if len(weights) != 1 or oc in uses[1 - weights[0]]:
        return False
    if c.shape[1] < 8 or _size(c.shape[2:]) < 16 or _size(c.body.extents) < 8:
        return False
    if _size(c.shape[:1] + c.shape[2:-1]) > MAX_GRID_YZ or -(-c.shape[1] // knobs["tile_m"]) > MAX_GRID_YZ:
        return False
    return n not in uses[weights[0]] and bool(spatial)


def conv_tiles(s: Schedule, c: Compute, epilogue: Compute | None = None, tile_m: int = TILE, tile_n: int = TILE,
               reg: int = REG, k_tile: int = K_TILE) -> None:
    """Implicit GEMM: the output channels are the GEMM's rows, the innermost spatial
    axis its columns (the others, with the batch, on ``blockIdx.z``), the reduced axes
    (input channels and the window) fused into its reduction; the weights' slice
    staged through shared memory, the input read through the cache (its window indices
    are not a box a block could stage). The column tile shrinks to the row width (a
    7-wide output takes 8 columns, not 64)."""
    names = s.stages[c.name].loop_names
    rank = len(c.shape)
    n, oc, spatial, reduced = names[0], names[1], names[2:rank], names[rank:]
    s.reorder(n, *spatial[:-1], oc, spatial[-1])
    red = reduced[0]
    for x in reduced[1:]:
        red = s.fuse(red, x, s.unused_name(f"{red}_{x}"))
    width = c.shape[-1]
    cols = max(reg, min(tile_n, 1 << (width - 1).bit_length()))
    ko = block_tile(s, c, epilogue, [n, *spatial[:-1]], oc, spatial[-1], red, tile_m, cols, reg, k_tile)
    weights = next(ld.source.name for ld in _loads(c)
                   if any(E.uses_var(x, c.axes[1]) for x in ld.indices))
    try:
        s.cache_shared(weights, ko)
    except ScheduleError:   # (the schedule is left as it was: the weights are read through the cache)
        pass
