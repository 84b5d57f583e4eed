"""Indexing and data movement with ONNX semantics: gather, gather_elements, their
adjoints scatter_add and scatter_elements_add, pad, tile, split, cumsum,
argmax / argmin and top_k.

Generated code never reads out of bounds. Where ONNX leaves an out-of-range index
undefined (gather, gather_elements), the index is first wrapped once if negative
(ONNX: -n <= i < 0 means i + n) and then clamped into [0, n - 1], in the numpy
reference as in the compiled code. Padding modes map output positions to input
positions with index arithmetic (clamp, floor modulo, reflection).
"""
from __future__ import annotations

import math

import numpy as np

from ..ir import expr as E
from ..ir.expr import Const, cast
from ..ir.tensor import compute, reduce
from ..ir.types import TensorType, float32, int64
from .reduction import reduce_stage
from .registry import OpDef, check, normalize_axis


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _ints(v, what: str) -> tuple[int, ...]:
    if _is_int(v):
        v = (v,)
    try:
        out = tuple(v)
    except TypeError:
        out = None
    check(out is not None and all(_is_int(a) for a in out), f"{what} must be a sequence of ints, got {v!r}")
    return tuple(int(a) for a in out)


def _clamp(e, n: int):
    """Clamp an int64 index expression into [0, n - 1] (n >= 1)."""
    return E.minimum(E.maximum(e, Const(0)), Const(n - 1))


def _wrap_clamp(e, n: int):
    """ONNX index semantics with a defined result for bad indices: wrap negatives once, then clamp."""
    e = cast(int64, e)
    e = E.select(E.binop("lt", e, Const(0)), e + Const(n), e)
    return _clamp(e, n)


def _np_wrap_clamp(idx, n: int):
    idx = np.asarray(idx).astype(np.int64)
    idx = np.where(idx < 0, idx + n, idx)
    return np.clip(idx, 0, max(n - 1, 0))


def _zero_stage(o):
    """A stage for an output that holds no elements (or that reads nothing)."""
    return compute(o.shape, lambda *i: Const(0, o.dtype))


# ----------------------------------------------------------------------------- gather

def _gather_canon(ins, attrs):
    check(ins[0].rank >= 1, f"gather: data must have rank >= 1, got {ins[0]}")
    return {"axis": normalize_axis(attrs["axis"], ins[0].rank, "gather")}


def _gather_infer(ins, axis):
    data, idx = ins
    check(idx.dtype.is_int, f"gather: indices must be integers, got {idx}")
    shape = data.shape[:axis] + idx.shape + data.shape[axis + 1:]
    check(data.shape[axis] > 0 or idx.size == 0,
          f"gather: cannot gather from the empty axis {axis} of {data}")
    return [TensorType(shape, data.dtype)]


def _gather_ref(data, indices, axis):
    data = np.asarray(data)
    return np.take(data, _np_wrap_clamp(indices, data.shape[axis]), axis=axis)


def _gather_lower(ins, outs, axis):
    (data, idx), (o,) = ins, outs
    if o.size == 0:
        return [_zero_stage(o)]
    r = len(idx.shape)
    n = data.shape[axis]

    def fn(*i):
        j = _wrap_clamp(idx[tuple(i[axis:axis + r])], n)
        return data[tuple(i[:axis]) + (j,) + tuple(i[axis + r:])]
    return [compute(o.shape, fn)]


# ----------------------------------------------------------------------------- gather_elements

def _gather_elements_canon(ins, attrs):
    check(ins[0].rank >= 1, f"gather_elements: data must have rank >= 1, got {ins[0]}")
    return {"axis": normalize_axis(attrs["axis"], ins[0].rank, "gather_elements")}


def _gather_elements_infer(ins, axis):
    data, idx = ins
    check(idx.dtype.is_int, f"gather_elements: indices must be integers, got {idx}")
    check(idx.rank == data.rank, f"gather_elements: indices {idx} must have the rank of data {data}")
    check(all(a <= b for d, (a, b) in enumerate(zip(idx.shape, data.shape)) if d != axis),
          f"gather_elements: indices {idx} exceed data {data} outside axis {axis}")
    check(data.shape[axis] > 0 or idx.size == 0,
          f"gather_elements: cannot gather from the empty axis {axis} of {data}")
    return [TensorType(idx.shape, data.dtype)]


def _gather_elements_ref(data, indices, axis):
    data = np.asarray(data)
    idx = _np_wrap_clamp(indices, data.shape[axis])
    if idx.size == 0:
        return np.zeros(idx.shape, data.dtype)
    sub = data[tuple(slice(0, n) if d != axis else slice(None) for d, n in enumerate(idx.shape))]
    return np.take_along_axis(sub, idx, axis=axis)


def _gather_elements_lower(ins, outs, axis):
    (data, idx), (o,) = ins, outs
    if o.size == 0:
        return [_zero_stage(o)]
    n = data.shape[axis]

    def fn(*i):
        j = list(i)
        j[axis] = _wrap_clamp(idx[i], n)
        return data[tuple(j)]
    return [compute(o.shape, fn)]


# ----------------------------------------------------------------------------- scatter_add / scatter_elements_add
# The adjoints of gather and gather_elements (their gradients), with the same index
# semantics: negative indices wrap once, out-of-range ones are clamped. The loop IR
# has no atomic or sequential scatter: every output element is computed on its own,
# so each one sums the updates whose index selects it (scatter_add first sorts the
# indices when that saves work, see _scatter_add_sorted).

def _acc_dtype(dt):
    return float32 if dt.is_float and dt.bits < 32 else dt


def _scatter_canon(name):
    def canon(ins, attrs):
        check(ins[0].rank >= 1, f"{name}: data must have rank >= 1, got {ins[0]}")
        return {"axis": normalize_axis(attrs["axis"], ins[0].rank, name)}
    return canon


def _scatter_check(name, data, idx, upd):
    check(not data.dtype.is_bool, f"{name}: expects a numeric tensor, got {data}")
    check(idx.dtype.is_int, f"{name}: indices must be integers, got {idx}")
    check(upd.dtype == data.dtype, f"{name}: updates {upd} must have the dtype of data {data}")


def _scatter_add_infer(ins, axis):
    data, idx, upd = ins
    _scatter_check("scatter_add", data, idx, upd)
    want = data.shape[:axis] + idx.shape + data.shape[axis + 1:]
    check(upd.shape == want, f"scatter_add: updates must have shape {list(want)} (data.shape[:axis] + "
                             f"indices.shape + data.shape[axis+1:]), got {upd}")
    check(data.shape[axis] > 0 or idx.size == 0, f"scatter_add: cannot scatter into the empty axis {axis} of {data}")
    return [data]


def _scatter_add_ref(data, indices, updates, axis):
    data = np.asarray(data)
    acc = np.float32 if data.dtype == np.float16 else data.dtype
    out = data.astype(acc)
    if np.size(indices):
        idx = _np_wrap_clamp(indices, data.shape[axis])
        np.add.at(out, (slice(None),) * axis + (idx,), np.asarray(updates).astype(acc))
    return out.astype(data.dtype)


SORTED_SCATTER_GAIN = 2.0   # the sorted scatter_add is used where it does this many times less work


def _scatter_plan(n_rows: int, n_idx: int, row_size: int):
    """(block size, blocks) of the sorted scatter_add, or None where the direct one does
    less work. Work counted in element operations: direct, every output element scans all
    indices (rows * N * row_size); sorted, the index sort (2 N^2), the row bounds (rows * N)
    and per output element at most 2 partial blocks of S and N / S whole-block sums."""
    if n_idx < 2:
        return None
    s = max(1, int(round(math.sqrt(n_idx / 2))))
    nb = -(-n_idx // s)
    direct = n_rows * n_idx * row_size
    sorted_ = 2 * n_idx * n_idx + n_rows * n_idx + n_rows * row_size * (2 * s + nb) + 2 * n_idx * row_size
    return (s, nb) if direct >= SORTED_SCATTER_GAIN * sorted_ else None


def _unflat(flat, shape):
    """The multi-index of the row-major flat position ``flat`` in ``shape``."""
    idx = []
    for n in reversed(shape):
        idx.append(flat % Const(n) if n != 1 else Const(0))
        flat = flat // Const(n)
    return tuple(idx[::-1])


def _scatter_without_updates(data, idx, o):
    """The stages of a scatter-add with nothing to add (an empty output, or no indices),
    else None."""
    if o.size == 0:
        return [_zero_stage(o)]
    if idx.type.size == 0:
        return [compute(o.shape, lambda *i: data[i])]
    return None


def _scatter_add_lower(ins, outs, axis):
    """out[..., v, ...] = data[..., v, ...] + the sum of updates[..., p, ...] over the index
    positions p with indices[p] == v (after wrapping and clamping). The IR has no scatter:
    each output element gathers its own sum. Directly, it scans every index
    (O(data.size * indices.size)); for large problems (an embedding table's gradient) the
    indices are sorted first so each row sums only its own updates (``_scatter_add_sorted``)."""
    (data, idx, upd), (o,) = ins, outs
    trivial = _scatter_without_updates(data, idx, o)
    if trivial is not None:
        return trivial
    acc = _acc_dtype(o.dtype)
    n, r = data.shape[axis], len(idx.shape)
    zero = Const(0, acc)
    plan = _scatter_plan(n, idx.type.size, o.size // n)
    if plan is not None:
        stages = _scatter_add_sorted(data, idx, upd, axis, acc, *plan)
        total = stages[-1]
        return stages + [compute(o.shape, lambda *i: cast(o.dtype, cast(acc, data[i]) + total[i]))]
    clamped = compute(idx.shape, lambda *p: _wrap_clamp(idx[p], n), "index")

    def term(i, p):
        at = tuple(i[:axis]) + tuple(p) + tuple(i[axis + 1:])
        return E.select(E.binop("eq", clamped[tuple(p)], i[axis]), cast(acc, upd[at]), zero)
    if r == 0:
        total = compute(o.shape, lambda *i: term(i, ()), "sum")
    else:
        total = compute(o.shape, lambda *i: reduce("sum", list(idx.shape), lambda *p: term(i, p)), "sum")
    return [clamped, total, compute(o.shape, lambda *i: cast(o.dtype, cast(acc, data[i]) + total[i]))]


def _scatter_add_sorted(data, idx, upd, axis, acc, S, nb):
    """The sums of scatter_add through a stable sort of the N indices, all with static
    extents (the IR has no data-dependent loops):

    * ``key[q]``: the clamped index at flat position q; ``rank[q]``: its position in the
      stable sort (keys, then positions): O(N^2); ``perm[p]``: the position with rank p.
    * ``start[v]``: how many keys are < v (O(V * N)), so row v's updates are the sorted
      positions [start[v], end[v]) with end[v] = start[v + 1].
    * ``sorted[.., p, ..]``: the updates in sorted order; ``block[.., b, ..]``: the sums of
      blocks of S sorted positions.
    * row v sums its first partial block and its last partial block element by element
      (``edges``: 2S terms) and the whole blocks between from ``block`` (``middle``: N/S
      terms): O(data.size * (2S + N/S)) instead of O(data.size * N).

    Only a row's own updates are added, in index order, as the direct form does."""
    V, N = data.shape[axis], idx.type.size
    ishape = idx.shape
    pre, post = data.shape[:axis], data.shape[axis + 1:]
    zero, one, zi = Const(0, acc), Const(1), Const(0)
    key = compute((N,), lambda q: _wrap_clamp(idx[_unflat(q, ishape)], V), "key")

    def rank_fn(q):
        def body(m):
            before = E.binop("or", E.binop("lt", key[m], key[q]),
                             E.binop("and", E.binop("eq", key[m], key[q]), E.binop("lt", m, q)))
            return E.select(before, one, zi)
        return reduce("sum", [N], body)

    rank = compute((N,), rank_fn, "rank")
    perm = compute((N,), lambda p: reduce("sum", [N], lambda q: E.select(E.binop("eq", rank[q], p), q, zi)), "perm")
    start = compute((V,), lambda v: reduce("sum", [N], lambda q: E.select(E.binop("lt", key[q], v), one, zi)),
                    "start")
    end = compute((V,), lambda v: E.select(E.binop("lt", v, Const(V - 1)), start[(E.minimum(v + Const(1),
                                                                                             Const(V - 1)),)],
                                           Const(N)), "end")
    k_pre = len(pre)

    def split(i):
        return tuple(i[:k_pre]), i[k_pre], tuple(i[k_pre + 1:])

    srt = compute(pre + (N,) + post, lambda *i: cast(acc, upd[split(i)[0] + _unflat(perm[(split(i)[1],)], ishape)
                                                              + split(i)[2]]), "sorted")

    def block_fn(*i):
        a, b, z = split(i)

        def body(k):
            p = b * Const(S) + k
            return E.select(E.binop("lt", p, Const(N)), srt[a + (E.minimum(p, Const(N - 1)),) + z], zero)
        return reduce("sum", [S], body)

    block = compute(pre + (nb,) + post, block_fn, "block")
    s_ = Const(S)

    def edges_fn(*i):
        a, v, z = split(i)
        lo, hi = start[(v,)], end[(v,)]
        first_full = (lo + Const(S - 1)) // s_ * s_     # the first block boundary at or after lo
        last_full = hi // s_ * s_                       # the last block boundary at or before hi

        def body(k):
            head = E.binop("lt", k, s_)
            p = E.select(head, lo + k, last_full + k - s_)
            in_head = E.binop("and", E.binop("lt", p, hi), E.binop("lt", p, first_full))
            in_tail = E.binop("and", E.binop("lt", p, hi), E.binop("ge", p, first_full))
            valid = E.select(head, in_head, in_tail)
            return E.select(valid, srt[a + (E.minimum(p, Const(N - 1)),) + z], zero)
        return reduce("sum", [2 * S], body)

    def middle_fn(*i):
        a, v, z = split(i)
        lo, hi = start[(v,)], end[(v,)]
        first_full = (lo + Const(S - 1)) // s_ * s_

        def body(b):
            inside = E.binop("and", E.binop("ge", b * s_, first_full), E.binop("le", (b + Const(1)) * s_, hi))
            return E.select(inside, block[a + (b,) + z], zero)
        return reduce("sum", [nb], body)

    edges = compute(data.shape, edges_fn, "edges")
    middle = compute(data.shape, middle_fn, "middle")
    total = compute(data.shape, lambda *i: edges[i] + middle[i], "sum")
    return [key, rank, perm, start, end, srt, block, edges, middle, total]


def _scatter_elements_infer(ins, axis):
    data, idx, upd = ins
    _scatter_check("scatter_elements_add", data, idx, upd)
    check(idx.rank == data.rank, f"scatter_elements_add: indices {idx} must have the rank of data {data}")
    check(upd.shape == idx.shape, f"scatter_elements_add: updates {upd} must have the shape of indices {idx}")
    check(all(a <= b for d, (a, b) in enumerate(zip(idx.shape, data.shape)) if d != axis),
          f"scatter_elements_add: indices {idx} exceed data {data} outside axis {axis}")
    check(data.shape[axis] > 0 or idx.size == 0,
          f"scatter_elements_add: cannot scatter into the empty axis {axis} of {data}")
    return [data]


def _scatter_elements_ref(data, indices, updates, axis):
    data = np.asarray(data)
    acc = np.float32 if data.dtype == np.float16 else data.dtype
    out = data.astype(acc)
    idx = _np_wrap_clamp(indices, data.shape[axis])
    if idx.size:
        pos = list(np.indices(idx.shape, sparse=True))
        pos[axis] = idx
        np.add.at(out, tuple(pos), np.asarray(updates).astype(acc))
    return out.astype(data.dtype)


def _scatter_elements_lower(ins, outs, axis):
    """out[j] = data[j] + sum over k < indices.shape[axis] of updates[j with axis = k]
    where indices there selects j[axis]: O(data.size * indices.shape[axis])."""
    (data, idx, upd), (o,) = ins, outs
    trivial = _scatter_without_updates(data, idx, o)
    if trivial is not None:
        return trivial
    acc = _acc_dtype(o.dtype)
    n, m = data.shape[axis], idx.shape[axis]
    zero = Const(0, acc)

    def fn(*j):
        inside = None
        at = list(j)
        for d, (ni, nd) in enumerate(zip(idx.shape, data.shape)):
            if d != axis and ni < nd:   # positions past the indices' extent receive nothing
                c = E.binop("lt", j[d], Const(ni))
                inside = c if inside is None else E.binop("and", inside, c)
                at[d] = E.minimum(j[d], Const(ni - 1))   # (and read in bounds)

        def body(k):
            q = list(at)
            q[axis] = k
            hit = E.binop("eq", _wrap_clamp(idx[tuple(q)], n), j[axis])
            return E.select(hit if inside is None else E.binop("and", inside, hit), cast(acc, upd[tuple(q)]), zero)
        return reduce("sum", [m], body)

    total = compute(o.shape, fn, "sum")
    return [total, compute(o.shape, lambda *i: cast(o.dtype, cast(acc, data[i]) + total[i]))]


# ----------------------------------------------------------------------------- pad

_PAD_MODES = ("constant", "reflect", "edge", "wrap")


def _pad_canon(ins, attrs):
    x = ins[0]
    pads = _ints(attrs["pads"], "pad: pads")
    check(len(pads) == 2 * x.rank, f"pad: pads must have 2 * rank = {2 * x.rank} entries for {x}, got {len(pads)}")
    mode = attrs["mode"]
    check(mode in _PAD_MODES, f"pad: mode must be one of {', '.join(_PAD_MODES)}, got {mode!r}")
    value = attrs["value"]
    check(isinstance(value, (int, float, bool, np.number, np.bool_)), f"pad: value must be a number, got {value!r}")
    dt = x.dtype
    check(dt.is_float or np.isfinite(value), f"pad: value {value} does not fit {dt}")
    value = bool(value) if dt.is_bool else float(value) if dt.is_float else int(value)
    if dt.is_int:
        info = np.iinfo(dt.np)
        check(info.min <= value <= info.max, f"pad: value {value} does not fit {dt}")
    return {"pads": pads, "mode": mode, "value": value}


def _pad_shape(shape, pads):
    r = len(shape)
    return tuple(n + pads[d] + pads[d + r] for d, n in enumerate(shape))


def _pad_infer(ins, pads, mode, value):
    (x,) = ins
    r = x.rank
    out = [n + pads[d] + pads[d + r] for d, n in enumerate(x.shape)]
    check(all(n >= 0 for _, n, _, _ in _pad_crop(x.shape, pads)),
          f"pad: pads {list(pads)} remove more than all of {x}")
    if mode != "constant" and all(n > 0 for n in out):
        check(all(n > 0 for _, n, _, _ in _pad_crop(x.shape, pads)),
              f"pad: {mode} padding of an empty axis of {x} has nothing to repeat")
    return [TensorType(out, x.dtype)]


def _pad_ref(x, pads, mode, value):
    x = np.asarray(x)
    r = x.ndim
    # negative pads crop first
    crop = tuple(slice(max(-pads[d], 0), n - max(-pads[d + r], 0)) for d, n in enumerate(x.shape))
    x = x[crop]
    widths = [(max(pads[d], 0), max(pads[d + r], 0)) for d in range(r)]
    if not r:
        return x.copy()
    if mode == "constant":
        return np.pad(x, widths, mode="constant", constant_values=np.asarray(value).astype(x.dtype))
    if x.size == 0:
        return np.zeros(_pad_shape(x.shape, [w[0] for w in widths] + [w[1] for w in widths]), x.dtype)
    return np.pad(x, widths, mode={"reflect": "reflect", "edge": "edge", "wrap": "wrap"}[mode])


def _pad_crop(shape, pads):
    """Negative pads crop first: per axis (first kept index, kept extent, begin pad, end pad)."""
    r = len(shape)
    out = []
    for d, n in enumerate(shape):
        b, e = pads[d], pads[d + r]
        cb, ce = max(-b, 0), max(-e, 0)
        out.append((cb, n - cb - ce, max(b, 0), max(e, 0)))
    return out


def _pad_lower(ins, outs, pads, mode, value):
    (x,), (o,) = ins, outs
    fill = Const(value, o.dtype)
    crop = _pad_crop(x.shape, pads)
    if o.size == 0 or any(n <= 0 for _, n, _, _ in crop):   # nothing to read: all fill (or no output)
        return [compute(o.shape, lambda *i: fill)]

    def fn(*i):
        idx, inside = [], None
        for d, (c0, n, b, e) in enumerate(crop):
            j = i[d] - Const(b)                           # index into the cropped axis
            if not b and not e:
                k = j
            elif mode == "constant":
                conds = []
                if b:
                    conds.append(E.binop("ge", j, Const(0)))
                if e:
                    conds.append(E.binop("lt", j, Const(n)))
                for c in conds:
                    inside = c if inside is None else E.binop("and", inside, c)
                k = _clamp(j, n)
            elif mode == "edge":
                k = _clamp(j, n)
            elif mode == "wrap":
                k = (j + Const(n * (b // n + 1))) % Const(n)     # made >= 0 first: a floor modulo
            elif n == 1:                                   # reflect
                k = Const(0)
            else:
                p = 2 * (n - 1)                            # reflection is periodic with period 2(n - 1)
                m = (j + Const(p * (b // p + 1))) % Const(p)
                k = E.select(E.binop("lt", m, Const(n)), m, Const(p) - m)
            idx.append(k + Const(c0))
        v = x[tuple(idx)]
        return v if inside is None else E.select(inside, v, fill)
    return [compute(o.shape, fn)]


# ----------------------------------------------------------------------------- tile

def _tile_canon(ins, attrs):
    reps = _ints(attrs["repeats"], "tile: repeats")
    check(len(reps) == ins[0].rank, f"tile: repeats must have one entry per axis of {ins[0]}, got {list(reps)}")
    check(all(k >= 0 for k in reps), f"tile: repeats must be >= 0, got {list(reps)}")
    return {"repeats": reps}


def _tile_lower(ins, outs, repeats):
    (x,), (o,) = ins, outs
    if o.size == 0:
        return [_zero_stage(o)]
    return [compute(o.shape, lambda *i: x[tuple(j % Const(n) if k > 1 else j
                                                 for j, n, k in zip(i, x.shape, repeats))])]


# ----------------------------------------------------------------------------- split

def _split_canon(ins, attrs):
    x = ins[0]
    check(x.rank >= 1, f"split: cannot split the 0-d tensor {x}")
    axis = normalize_axis(attrs["axis"], x.rank, "split")
    n = x.shape[axis]
    sizes, num = attrs["sizes"], attrs["num_outputs"]
    if sizes is None:
        check(_is_int(num) and num >= 1, f"split: give sizes or a positive num_outputs, got {num!r}")
        chunk = -(-n // num)
        sizes = (chunk,) * (num - 1) + (n - chunk * (num - 1),)
        check(sizes[-1] >= 0, f"split: axis {axis} of {x} cannot be split into {num} parts")
    sizes = _ints(sizes, "split: sizes")
    check(len(sizes) >= 1 and all(s >= 0 for s in sizes) and sum(sizes) == n,
          f"split: sizes {list(sizes)} must be >= 0 and add up to {n}, axis {axis} of {x}")
    check(num is None or num == len(sizes), f"split: {len(sizes)} sizes but num_outputs={num}")
    return {"axis": axis, "sizes": sizes, "num_outputs": None}


def _split_infer(ins, axis, sizes, num_outputs):
    (x,) = ins
    out = []
    for s in sizes:
        shape = list(x.shape)
        shape[axis] = s
        out.append(TensorType(shape, x.dtype))
    return out


def _split_ref(x, axis, sizes, num_outputs):
    x = np.asarray(x)
    return tuple(np.split(x, np.cumsum(sizes)[:-1], axis=axis))


def _split_lower(ins, outs, axis, sizes, num_outputs):
    (x,) = ins
    stages, offset = [], 0
    for o, s in zip(outs, sizes):
        def fn(*i, off=offset):
            j = list(i)
            j[axis] = i[axis] + Const(off)
            return x[tuple(j)]
        stages.append(_zero_stage(o) if o.size == 0 else compute(o.shape, fn))
        offset += s
    return stages


# ----------------------------------------------------------------------------- cumsum

def _cumsum_canon(ins, attrs):
    check(ins[0].rank >= 1, f"cumsum: expects a tensor of rank >= 1, got {ins[0]}")
    return {"axis": normalize_axis(attrs["axis"], ins[0].rank, "cumsum"),
            "exclusive": bool(attrs["exclusive"]), "reverse": bool(attrs["reverse"])}


def _cumsum_infer(ins, axis, exclusive, reverse):
    (x,) = ins
    check(not x.dtype.is_bool, f"cumsum: expects a numeric tensor, got {x}")
    return [x]


def _cumsum_ref(x, axis, exclusive, reverse):
    x = np.asarray(x)
    acc = np.float32 if x.dtype == np.float16 else x.dtype
    y = np.flip(x, axis) if reverse else x
    c = np.cumsum(y, axis=axis, dtype=acc)
    if exclusive:
        zero = np.zeros_like(np.take(c, [0], axis=axis)) if c.shape[axis] else np.take(c, [], axis=axis)
        c = np.concatenate([zero, np.take(c, np.arange(c.shape[axis] - 1), axis=axis)], axis=axis)
        c = c[tuple(slice(0, n) for n in x.shape)]
    if reverse:
        c = np.flip(c, axis)
    return c.astype(x.dtype)


def _cumsum_lower(ins, outs, axis, exclusive, reverse):
    (x,), (o,) = ins, outs
    if o.size == 0:
        return [_zero_stage(o)]
    acc = float32 if o.dtype.is_float and o.dtype.bits < 32 else o.dtype
    n = x.shape[axis]
    op = {(False, False): "le", (True, False): "lt", (False, True): "ge", (True, True): "gt"}[(exclusive, reverse)]

    def fn(*i):
        def body(k):
            j = list(i)
            j[axis] = k
            return E.select(E.binop(op, k, i[axis]), cast(acc, x[tuple(j)]), Const(0, acc))
        return reduce("sum", [n], body)

    s = compute(o.shape, fn, "cumsum")
    if acc is o.dtype:
        return [s]
    return [s, compute(o.shape, lambda *i: cast(o.dtype, s[i]))]


# ----------------------------------------------------------------------------- argmax / argmin

def _arg_canon(name):
    def canon(ins, attrs):
        check(ins[0].rank >= 1, f"{name}: expects a tensor of rank >= 1, got {ins[0]}")
        return {"axis": normalize_axis(attrs["axis"], ins[0].rank, name), "keepdims": bool(attrs["keepdims"]),
                "select_last_index": bool(attrs["select_last_index"])}
    return canon


def _arg_infer(name):
    def infer(ins, axis, keepdims, select_last_index):
        (x,) = ins
        check(x.shape[axis] > 0, f"{name}: cannot reduce the empty axis {axis} of {x}")
        shape = tuple(1 if d == axis else n for d, n in enumerate(x.shape)) if keepdims else \
            tuple(n for d, n in enumerate(x.shape) if d != axis)
        return [TensorType(shape, int64)]
    return infer


def _arg_ref(np_fn):
    def ref(x, axis, keepdims, select_last_index):
        x = np.asarray(x)
        if select_last_index:
            r = x.shape[axis] - 1 - np_fn(np.flip(x, axis), axis=axis)
        else:
            r = np_fn(x, axis=axis)
        r = np.asarray(r, np.int64)
        return np.expand_dims(r, axis) if keepdims else r
    return ref


def _arg_lower(combiner):
    def lower(ins, outs, axis, keepdims, select_last_index):
        (x,), (o,) = ins, outs
        n = x.shape[axis]
        m = reduce_stage(x, (axis,), True, combiner, x.dtype, name=combiner)

        def fn(*i):
            full = list(i) if keepdims else list(i[:axis]) + [Const(0)] + list(i[axis:])
            at0 = list(full)
            at0[axis] = Const(0)

            def body(k):
                j = list(full)
                j[axis] = k
                v = x[tuple(j)]
                hit = E.binop("eq", v, m[tuple(at0)])
                if x.dtype.is_float:   # NaN wins, as in numpy: the max/min of a row with NaN is NaN
                    hit = E.binop("or", hit, E.binop("ne", v, v))
                return E.select(hit, k, Const(-1 if select_last_index else n))
            return reduce("max" if select_last_index else "min", [n], body)
        return [m, compute(o.shape, fn, "index")]
    return lower


def _arg_op(name, np_fn, combiner):
    return OpDef(name, "reduction", _arg_infer(name), _arg_ref(np_fn), _arg_lower(combiner),
                 attrs={"axis": 0, "keepdims": True, "select_last_index": False}, canonicalize=_arg_canon(name),
                 vjp=_arg_vjp,
                 doc=f"Index (int64) of the {combiner} along axis, the first one unless select_last_index "
                     f"(ONNX Arg{combiner.capitalize()}; NaN counts as the {combiner}, as in numpy).")


# ----------------------------------------------------------------------------- top_k

def _top_k_canon(ins, attrs):
    x = ins[0]
    check(x.rank >= 1, f"top_k: expects a tensor of rank >= 1, got {x}")
    axis = normalize_axis(attrs["axis"], x.rank, "top_k")
    k = attrs["k"]
    check(_is_int(k) and 0 <= k <= x.shape[axis], f"top_k: k must be an int in [0, {x.shape[axis]}], got {k!r}")
    return {"k": int(k), "axis": axis, "largest": bool(attrs["largest"]), "sorted": bool(attrs["sorted"])}


def _top_k_infer(ins, k, axis, largest, sorted):
    (x,) = ins
    check(not x.dtype.is_bool, f"top_k: expects a numeric tensor, got {x}")
    shape = list(x.shape)
    shape[axis] = k
    return [TensorType(shape, x.dtype), TensorType(shape, int64)]


def _top_k_ref(x, k, axis, largest, sorted):
    x = np.asarray(x)
    n = x.shape[axis]
    if largest:   # descending, ties by lower index: a stable ascending sort of the reversed axis, reversed
        order = np.flip(n - 1 - np.argsort(np.flip(x, axis), axis=axis, kind="stable"), axis)
    else:
        order = np.argsort(x, axis=axis, kind="stable")
    idx = np.take(order, np.arange(k), axis=axis).astype(np.int64)
    return np.take_along_axis(x, idx, axis=axis), idx


def _top_k_lower(ins, outs, k, axis, largest, sorted):
    (x,), (vo, io) = ins, outs
    if vo.size == 0:
        return [_zero_stage(vo), _zero_stage(io)]
    n = x.shape[axis]
    is_float = x.dtype.is_float

    def before(a, b, ia, ib):
        """a (at index ia) comes before b (at ib): a strict total order, NaN as the largest value."""
        better = E.binop("gt" if largest else "lt", a, b)
        tie = E.binop("and", E.binop("eq", a, b), E.binop("lt", ia, ib))
        c = E.binop("or", better, tie)
        if is_float:
            na, nb = E.binop("ne", a, a), E.binop("ne", b, b)
            not_nb, not_na = E.call("not", nb), E.call("not", na)
            nan_first = E.binop("and", na, not_nb) if largest else E.binop("and", not_na, nb)
            both = E.binop("and", E.binop("and", na, nb), E.binop("lt", ia, ib))
            c = E.binop("or", E.binop("or", c, nan_first), both)
        return c

    def rank_fn(*i):   # how many elements come before x[i] along the axis
        def body(m):
            j = list(i)
            j[axis] = m
            return E.select(before(x[tuple(j)], x[i], m, i[axis]), Const(1), Const(0))
        return reduce("sum", [n], body)

    rank = compute(x.shape, rank_fn, "rank")

    def index_fn(*p):   # the element whose rank is p
        def body(j):
            q = list(p)
            q[axis] = j
            return E.select(E.binop("eq", rank[tuple(q)], p[axis]), j, Const(0))
        return reduce("sum", [n], body)

    index = compute(io.shape, index_fn, "indices")

    def value_fn(*p):
        q = list(p)
        q[axis] = _clamp(index[p], n)
        return x[tuple(q)]

    values = compute(vo.shape, value_fn, "values")
    return [rank, values, index]   # the outputs last, in order


# ----------------------------------------------------------------------------- gradient rules
# vjp(em, ins, outs, cts, **attrs) -> input cotangents (ops/autodiff.py). Integer
# indices never get a gradient (None).

def _float(t) -> bool:
    return t.dtype.kind == "f"


def _zeros(em, like):
    return em("broadcast_to", np.zeros((), like.dtype), shape=tuple(like.shape))


def _gather_vjp(em, ins, outs, cts, axis):
    data, idx = ins
    if not _float(data):
        return [None, None]
    return [em("scatter_add", _zeros(em, data), idx, cts[0], axis=axis), None]


def _gather_elements_vjp(em, ins, outs, cts, axis):
    data, idx = ins
    if not _float(data):
        return [None, None]
    return [em("scatter_elements_add", _zeros(em, data), idx, cts[0], axis=axis), None]


def _scatter_add_vjp(em, ins, outs, cts, axis):
    if not _float(ins[0]):
        return [None, None, None]
    return [cts[0], None, em("gather", cts[0], ins[1], axis=axis)]


def _scatter_elements_vjp(em, ins, outs, cts, axis):
    if not _float(ins[0]):
        return [None, None, None]
    return [cts[0], None, em("gather_elements", cts[0], ins[1], axis=axis)]


def _index_runs(index_map):
    """Split an output -> input index map into runs (start, length, first input index,
    step) with step +1, -1 or 0; -1 entries (constant fill) are skipped."""
    runs, i, n = [], 0, len(index_map)
    while i < n:
        k = int(index_map[i])
        if k < 0:
            i += 1
            continue
        step, length = 0, 1
        if i + 1 < n and index_map[i + 1] >= 0 and abs(int(index_map[i + 1]) - k) <= 1:
            step = int(index_map[i + 1]) - k
            while i + length < n and int(index_map[i + length]) == k + step * length:
                length += 1
        runs.append((i, length, k, step))
        i += length
    return runs


def _pad_axis_vjp(em, g, d, extent, index_map):
    """The adjoint of one axis of pad: g (padded along axis d) summed back onto ``extent``
    input positions, output position i having copied input ``index_map[i]`` (-1: the
    fill value). Each run of consecutive positions is a slice of g (reversed for a
    reflection, summed for an edge) padded with zeros into place."""
    r = len(g.shape)
    total = None
    for i0, length, k0, step in _index_runs(index_map):
        begin, end, stride = [0] * r, list(g.shape), [1] * r
        if step < 0:
            begin[d], end[d], stride[d] = i0 + length - 1, (i0 - 1 if i0 > 0 else None), -1
            lo = k0 - length + 1
        else:
            begin[d], end[d] = i0, i0 + length
            lo = k0
        piece = em("slice", g, begin=tuple(begin), end=tuple(end), step=tuple(stride))
        if step == 0 and length > 1:
            piece = em("sum", piece, axis=d, keepdims=True)
        width = piece.shape[d]
        if (lo, width) != (0, extent):
            pads = [0] * (2 * r)
            pads[d], pads[r + d] = lo, extent - lo - width
            piece = em("pad", piece, pads=tuple(pads))
        total = piece if total is None else total + piece
    if total is None:   # every output position along this axis is fill
        shape = list(g.shape)
        shape[d] = extent
        total = em("broadcast_to", np.zeros((), g.dtype), shape=tuple(shape))
    return total


def _pad_vjp(em, ins, outs, cts, pads, mode, value):
    """Axis by axis (pad maps each axis on its own): each output position's cotangent goes
    to the input position it copies, as numpy's pad (the reference) defines it; the fill
    of constant mode and cropped input positions (negative pads) get nothing."""
    x = ins[0]
    if not _float(x):
        return [None]
    g = cts[0]
    crop = _pad_crop(x.shape, pads)
    if g.size == 0 or any(n <= 0 for _, n, _, _ in crop):
        return [_zeros(em, x)]
    for d, (c0, n, b, e) in enumerate(crop):
        if (c0, n, b, e) == (0, x.shape[d], 0, 0):
            continue
        source = np.arange(c0, c0 + n)
        if mode == "constant":
            index_map = np.pad(source, (b, e), mode="constant", constant_values=-1)
        elif mode == "reflect" and n == 1:   # numpy cannot reflect one element; the lowering repeats it
            index_map = np.full(b + n + e, c0)
        else:
            index_map = np.pad(source, (b, e), mode=mode)
        g = _pad_axis_vjp(em, g, d, x.shape[d], index_map)
    return [g]


def _tile_vjp(em, ins, outs, cts, repeats):
    """Axis d of the output is repeats[d] copies of x's axis: split it into (copy, position)
    and sum over the copies."""
    x, g = ins[0], cts[0]
    if not _float(x):
        return [None]
    if all(k == 1 for k in repeats):
        return [g]
    if g.size == 0:
        return [_zeros(em, x)]
    split = []
    for n, k in zip(x.shape, repeats):
        split += [k, n]
    g = em("reshape", g, shape=tuple(split))
    return [em("sum", g, axis=tuple(range(0, 2 * len(x.shape), 2)), keepdims=False)]


def _split_vjp(em, ins, outs, cts, axis, sizes, num_outputs):
    if not _float(ins[0]):
        return [None]
    pieces = [c if c is not None else _zeros(em, o) for c, o in zip(cts, outs)]
    return [pieces[0] if len(pieces) == 1 else em("concatenate", pieces, axis=axis)]


def _cumsum_vjp(em, ins, outs, cts, axis, exclusive, reverse):
    """Each output sums the inputs before it (after it, reversed), so each input's
    gradient sums the cotangents of the outputs after it (before it): the same cumsum in
    the other direction, exclusive as the forward."""
    if not _float(ins[0]):
        return [None]
    return [em("cumsum", cts[0], axis=axis, exclusive=exclusive, reverse=not reverse)]


def _arg_vjp(em, ins, outs, cts, **attrs):
    return [None]   # an integer result: no gradient flows back


def _top_k_vjp(em, ins, outs, cts, k, axis, largest, sorted):
    """The values' cotangent goes back to the positions they were taken from (the
    indices output is an integer: it has none)."""
    x = ins[0]
    if not _float(x) or cts[0] is None:
        return [None]
    return [em("scatter_elements_add", _zeros(em, x), outs[1], cts[0], axis=axis)]


OPS = [
    OpDef("gather", "injective", _gather_infer, _gather_ref, _gather_lower, params=("data", "indices"),
          attrs={"axis": 0}, canonicalize=_gather_canon, vjp=_gather_vjp,
          doc="Take entries of data along axis at indices (ONNX Gather; output shape "
              "data.shape[:axis] + indices.shape + data.shape[axis+1:]). Negative indices count from the end; "
              "indices out of range (undefined in ONNX) are clamped."),
    OpDef("gather_elements", "injective", _gather_elements_infer, _gather_elements_ref, _gather_elements_lower,
          params=("data", "indices"), attrs={"axis": 0}, canonicalize=_gather_elements_canon,
          vjp=_gather_elements_vjp,
          doc="out[i] = data[i with axis replaced by indices[i]] (ONNX GatherElements); "
              "negative indices count from the end, out-of-range ones are clamped."),
    OpDef("scatter_add", "reduction", _scatter_add_infer, _scatter_add_ref, _scatter_add_lower,
          params=("data", "indices", "updates"), attrs={"axis": 0}, canonicalize=_scatter_canon("scatter_add"),
          vjp=_scatter_add_vjp,
          doc="data with updates added at indices along axis: out[..., indices[p], ...] += updates[..., p, ...] "
              "for every position p of indices (updates.shape = data.shape[:axis] + indices.shape + "
              "data.shape[axis+1:]); repeated indices accumulate. The adjoint of gather, with its index rules "
              "(negative indices count from the end, out-of-range ones are clamped). Compiled directly, "
              "O(data.size * indices.size), or where that is cheaper (an embedding table's gradient) through a "
              "sort of the indices, O(indices.size^2 + data.size * sqrt(indices.size))."),
    OpDef("scatter_elements_add", "reduction", _scatter_elements_infer, _scatter_elements_ref,
          _scatter_elements_lower, params=("data", "indices", "updates"), attrs={"axis": 0},
          canonicalize=_scatter_canon("scatter_elements_add"), vjp=_scatter_elements_vjp,
          doc="data with updates[j] added at j with axis replaced by indices[j] (ONNX ScatterElements with "
              "reduction='add'); repeated indices accumulate. The adjoint of gather_elements, with its index "
              "rules. O(data.size * indices.shape[axis])."),
    OpDef("pad", "injective", _pad_infer, _pad_ref, _pad_lower,
          attrs={"pads": None, "mode": "constant", "value": 0}, canonicalize=_pad_canon, vjp=_pad_vjp,
          doc="Pad with ONNX pads order [x1_begin, x2_begin, ..., x1_end, x2_end, ...] (negative pads crop); "
              "mode constant (fill with value), reflect, edge or wrap (ONNX Pad)."),
    OpDef("tile", "injective", lambda ins, repeats: [TensorType([n * k for n, k in zip(ins[0].shape, repeats)],
                                                                ins[0].dtype)],
          lambda x, repeats: np.tile(np.asarray(x), repeats) if np.ndim(x) else np.asarray(x).copy(),
          _tile_lower, attrs={"repeats": None}, canonicalize=_tile_canon, vjp=_tile_vjp,
          doc="Repeat the tensor repeats[d] times along each axis d (ONNX Tile)."),
    OpDef("split", "injective", _split_infer, _split_ref, _split_lower,
          attrs={"axis": 0, "sizes": None, "num_outputs": None}, canonicalize=_split_canon, vjp=_split_vjp,
          doc="Split along axis into pieces of the given sizes, or into num_outputs pieces of "
              "ceil(n / num_outputs) (the last one smaller) (ONNX Split); one output per piece."),
    OpDef("cumsum", "reduction", _cumsum_infer, _cumsum_ref, _cumsum_lower,
          attrs={"axis": 0, "exclusive": False, "reverse": False}, canonicalize=_cumsum_canon,
          vjp=_cumsum_vjp, doc="Cumulative sum along axis, optionally exclusive and/or reversed (ONNX CumSum); "
              "the dtype is kept (integers wrap). O(n^2) along the axis."),
    _arg_op("argmax", np.argmax, "max"),
    _arg_op("argmin", np.argmin, "min"),
    OpDef("top_k", "reduction", _top_k_infer, _top_k_ref, _top_k_lower,
          attrs={"k": None, "axis": -1, "largest": True, "sorted": True}, canonicalize=_top_k_canon,
          vjp=_top_k_vjp, doc="The k largest (or smallest) entries along axis and their int64 indices, sorted, "
              "ties by lower index, NaN as the largest value (ONNX TopK; sorted=False gives the same "
              "sorted order). O(n^2) along the axis."),
]
