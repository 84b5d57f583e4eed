"""Indexing and data movement with ONNX semantics: gather, gather_elements, pad,
tile, split, cumsum, argmax / argmin and top_k.

Generated code never reads out of bounds. Where ONNX leaves an out-of-range index
undefined (gather, gather_elements), the index is first wrapped once if negative
(ONNX: -n <= i < 0 means i + n) and then clamped into [0, n - 1], in the numpy
reference as in the compiled code. Padding modes map output positions to input
positions with index arithmetic (clamp, floor modulo, reflection).
"""
from __future__ import annotations

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


OPS = [
    OpDef("gather", "injective", _gather_infer, _gather_ref, _gather_lower, params=("data", "indices"),
          attrs={"axis": 0}, canonicalize=_gather_canon,
          doc="Take entries of data along axis at indices (ONNX Gather; output shape "
              "data.shape[:axis] + indices.shape + data.shape[axis+1:]). Negative indices count from the end; "
              "indices out of range (undefined in ONNX) are clamped."),
    OpDef("gather_elements", "injective", _gather_elements_infer, _gather_elements_ref, _gather_elements_lower,
          params=("data", "indices"), attrs={"axis": 0}, canonicalize=_gather_elements_canon,
          doc="out[i] = data[i with axis replaced by indices[i]] (ONNX GatherElements); "
              "negative indices count from the end, out-of-range ones are clamped."),
    OpDef("pad", "injective", _pad_infer, _pad_ref, _pad_lower,
          attrs={"pads": None, "mode": "constant", "value": 0}, canonicalize=_pad_canon,
          doc="Pad with ONNX pads order [x1_begin, x2_begin, ..., x1_end, x2_end, ...] (negative pads crop); "
              "mode constant (fill with value), reflect, edge or wrap (ONNX Pad)."),
    OpDef("tile", "injective", lambda ins, repeats: [TensorType([n * k for n, k in zip(ins[0].shape, repeats)],
                                                                ins[0].dtype)],
          lambda x, repeats: np.tile(np.asarray(x), repeats) if np.ndim(x) else np.asarray(x).copy(),
          _tile_lower, attrs={"repeats": None}, canonicalize=_tile_canon,
          doc="Repeat the tensor repeats[d] times along each axis d (ONNX Tile)."),
    OpDef("split", "injective", _split_infer, _split_ref, _split_lower,
          attrs={"axis": 0, "sizes": None, "num_outputs": None}, canonicalize=_split_canon,
          doc="Split along axis into pieces of the given sizes, or into num_outputs pieces of "
              "ceil(n / num_outputs) (the last one smaller) (ONNX Split); one output per piece."),
    OpDef("cumsum", "reduction", _cumsum_infer, _cumsum_ref, _cumsum_lower,
          attrs={"axis": 0, "exclusive": False, "reverse": False}, canonicalize=_cumsum_canon,
          doc="Cumulative sum along axis, optionally exclusive and/or reversed (ONNX CumSum); "
              "the dtype is kept (integers wrap). O(n^2) along the axis."),
    _arg_op("argmax", np.argmax, "max"),
    _arg_op("argmin", np.argmin, "min"),
    OpDef("top_k", "reduction", _top_k_infer, _top_k_ref, _top_k_lower,
          attrs={"k": None, "axis": -1, "largest": True, "sorted": True}, canonicalize=_top_k_canon,
          doc="The k largest (or smallest) entries along axis and their int64 indices, sorted, "
              "ties by lower index, NaN as the largest value (ONNX TopK; sorted=False gives the same "
              "sorted order). O(n^2) along the axis."),
]
