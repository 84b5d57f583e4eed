"""Data movement: reshape, transpose, broadcast_to, expand_dims, squeeze,
concatenate, slice. All injective: each output element reads one input element."""
from __future__ import annotations

import numpy as np

from ..ir import expr as E
from ..ir.expr import Const, cast
from ..ir.tensor import compute
from ..ir.types import TensorType
from .registry import (OpDef, OpTypeError, broadcast_load, check, check_fits, normalize_axes, normalize_axis,
                       numpy_result_dtype, unbroadcast)


def _flat_index(idx, shape):
    flat = Const(0)
    for i, n in zip(idx, shape):
        flat = flat * n + i
    return flat


def _unflat_index(flat, shape):
    idx = []
    for n in reversed(shape):
        idx.append(flat % n if n != 1 else Const(0))
        flat = flat // n
    return idx[::-1]


# ----------------------------------------------------------------------------- reshape

def _reshape_canon(ins, attrs):
    shape = attrs["shape"]
    if isinstance(shape, (int, np.integer)):
        shape = (shape,)
    shape = [int(s) for s in shape]
    size = ins[0].size
    if shape.count(-1) > 1:
        raise OpTypeError(f"reshape: at most one -1 in {tuple(shape)}")
    if -1 in shape:
        known = int(np.prod([s for s in shape if s != -1], dtype=np.int64))
        check(known > 0 and size % known == 0, f"reshape: cannot reshape {ins[0]} to {tuple(shape)}")
        shape[shape.index(-1)] = size // known
    check(all(s >= 0 for s in shape) and int(np.prod(shape, dtype=np.int64)) == size,
          f"reshape: cannot reshape {ins[0]} ({size} elements) to {tuple(shape)}")
    return {"shape": tuple(shape)}


def _reshape_lower(ins, outs, shape):
    (x,), (o,) = ins, outs
    if x.shape == o.shape:
        return [compute(o.shape, lambda *i: x[i])]
    return [compute(o.shape, lambda *i: x[tuple(_unflat_index(_flat_index(i, o.shape), x.shape))])]


# ----------------------------------------------------------------------------- transpose

def _transpose_canon(ins, attrs):
    rank = ins[0].rank
    axes = attrs["axes"]
    if axes is None:
        return {"axes": tuple(range(rank - 1, -1, -1))}
    axes = tuple(normalize_axis(a, rank, "transpose") for a in axes)
    check(sorted(axes) == list(range(rank)), f"transpose: {axes} is not a permutation of {rank} axes")
    return {"axes": axes}


def _transpose_lower(ins, outs, axes):
    (x,), (o,) = ins, outs

    def fn(*i):
        idx = [None] * len(axes)
        for out_d, in_d in enumerate(axes):
            idx[in_d] = i[out_d]
        return x[tuple(idx)]
    return [compute(o.shape, fn)]


# ----------------------------------------------------------------------------- broadcast_to / expand_dims / squeeze

def _broadcast_to_infer(ins, shape):
    (x,) = ins
    shape = tuple(shape)
    check_fits("broadcast_to", shape, x.dtype)   # before numpy, whose shape arithmetic overflows
    try:
        out = np.broadcast_shapes(x.shape, shape)
    except ValueError:
        out = None
    check(out == tuple(shape), f"broadcast_to: cannot broadcast {x} to {list(shape)}")
    return [TensorType(shape, x.dtype)]


def _expand_canon(ins, attrs):
    axis = attrs["axis"]
    axis = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    return {"axis": normalize_axes(axis, ins[0].rank + len(axis), "expand_dims")}


def _expand_shape(shape, axes):
    out, it = [], iter(shape)
    for d in range(len(shape) + len(axes)):
        out.append(1 if d in axes else next(it))
    return tuple(out)


def _squeeze_canon(ins, attrs):
    x = ins[0]
    if attrs["axis"] is None:
        return {"axis": tuple(d for d, n in enumerate(x.shape) if n == 1)}
    axes = normalize_axes(attrs["axis"], x.rank, "squeeze")
    for d in axes:
        check(x.shape[d] == 1, f"squeeze: axis {d} of {x} has size {x.shape[d]}, not 1")
    return {"axis": axes}


def _same_order_lower(ins, outs, **_):
    """Ops that keep element order (expand_dims, squeeze) read through the flat index."""
    return _reshape_lower(ins, outs, outs[0].shape)


# ----------------------------------------------------------------------------- concatenate

def _concat_canon(ins, attrs):
    return {"axis": normalize_axis(attrs["axis"], ins[0].rank, "concatenate")}


def _concat_infer(ins, axis):
    first = ins[0]
    check(first.rank > 0, "concatenate: zero-dimensional tensors cannot be concatenated")
    for t in ins[1:]:
        check(t.rank == first.rank and all(a == b for d, (a, b) in enumerate(zip(t.shape, first.shape)) if d != axis),
              f"concatenate along axis {axis}: {first} and {t} differ outside that axis")
    dt = numpy_result_dtype(lambda *xs: np.concatenate(xs), *[t.dtype for t in ins])
    shape = list(first.shape)
    shape[axis] = sum(t.shape[axis] for t in ins)
    return [TensorType(shape, dt)]


def _concat_lower(ins, outs, axis):
    o = outs[0]
    offsets = [int(n) for n in np.cumsum([0] + [t.shape[axis] for t in ins])]
    total = offsets[-1]
    # empty pieces hold nothing to read (all empty: the output is empty, any piece will do)
    pieces = [k for k, t in enumerate(ins) if t.shape[axis] > 0] or [0]

    def fn(*i):
        # select among the pieces by the position along axis, last piece as the default
        value = None
        for k in reversed(pieces):
            # a select evaluates both arms, so every piece is read at every position:
            # clamp the index into the piece, or the reads run past its ends (and fault)
            j = i[axis] - offsets[k]
            if offsets[k] > 0:
                j = E.maximum(j, Const(0))
            if offsets[k + 1] < total:
                j = E.minimum(j, Const(offsets[k + 1] - offsets[k] - 1))
            idx = list(i)
            idx[axis] = j
            piece = cast(o.dtype, ins[k][tuple(idx)])
            value = piece if value is None else E.select(E.binop("lt", i[axis], Const(offsets[k + 1])), piece, value)
        return value
    return [compute(o.shape, fn)]


# ----------------------------------------------------------------------------- slice

def canonical_slice(n: int, begin, end, step) -> tuple[int, int | None, int]:
    """The Python slice ``begin:end:step`` of an axis of size ``n`` in the one form that
    describes its elements exactly: out-of-range bounds clamped as numpy does, ``begin``
    the first index taken, ``end`` one step past the last (``None`` when that is before
    index 0), and an empty slice written ``0:0:1``. Slicing with the result again gives
    the same elements, so canonicalizing twice changes nothing."""
    r = range(*slice(begin, end, step).indices(n))
    if not r:
        return 0, 0, 1
    stop = r.start + len(r) * r.step
    return r.start, (stop if stop >= 0 else None), r.step


def _slice_canon(ins, attrs):
    """Per-axis Python slices in the form ``canonical_slice`` gives."""
    x = ins[0]
    begin, end, step = attrs["begin"], attrs["end"], attrs["step"]
    n = len(begin)
    check(len(end) == n and (step is None or len(step) == n) and n <= x.rank,
          f"slice: begin, end and step must have the same length, at most the rank of {x}")
    step = tuple(step) if step is not None else (1,) * n
    b2, e2, s2 = [], [], []
    for d in range(x.rank):
        if d < n:
            check(step[d] != 0, "slice: step must not be zero")
            b, e, s = canonical_slice(x.shape[d], begin[d], end[d], step[d])
        else:
            b, e, s = 0, x.shape[d], 1
        b2.append(b), e2.append(e), s2.append(s)
    return {"begin": tuple(b2), "end": tuple(e2), "step": tuple(s2)}


def _slice_ranges(shape, begin, end, step):
    return [range(*slice(b, e, s).indices(n)) for n, b, e, s in zip(shape, begin, end, step)]


def _slice_infer(ins, begin, end, step):
    return [TensorType([len(r) for r in _slice_ranges(ins[0].shape, begin, end, step)], ins[0].dtype)]


def _slice_ref(x, begin, end, step):
    return np.asarray(x)[tuple(slice(b, e, s) for b, e, s in zip(begin, end, step))]


def _slice_lower(ins, outs, begin, end, step):
    (x,), (o,) = ins, outs
    return [compute(o.shape, lambda *i: x[tuple(b + j * s for j, b, s in zip(i, begin, step))])]


# ----------------------------------------------------------------------------- gradient rules

def _float_only(rule):
    def vjp(em, ins, outs, cts, **attrs):
        if ins[0].dtype.kind != "f":
            return [None] * len(ins)
        return rule(em, ins, cts[0], **attrs)
    return vjp


@_float_only
def _reshape_vjp(em, ins, g, **attrs):
    return [em("reshape", g, shape=ins[0].shape)]


@_float_only
def _transpose_vjp(em, ins, g, axes):
    return [em("transpose", g, axes=tuple(int(a) for a in np.argsort(axes)))]


@_float_only
def _broadcast_to_vjp(em, ins, g, shape):
    return [unbroadcast(em, g, ins[0])]


def _concat_vjp(em, ins, outs, cts, axis):
    g, start, grads = cts[0], 0, []
    for x in ins:
        n = x.shape[axis]
        if x.dtype.kind == "f":
            begin = [0] * len(x.shape)
            end = list(g.shape)
            begin[axis], end[axis] = start, start + n
            grads.append(em("slice", g, begin=tuple(begin), end=tuple(end)))
        else:
            grads.append(None)
        start += n
    return grads


@_float_only
def _slice_vjp(em, ins, g, begin, end, step):
    """Scatter g back into zeros: per axis, reverse a negative step, interleave zeros for
    a step > 1, then pad to the input's extent."""
    x = ins[0]
    r = len(x.shape)
    for d, (n, b, e, s) in enumerate(zip(x.shape, begin, end, step)):
        m = g.shape[d]
        if (b, e, s) == (0, n, 1) or m == 0:
            continue
        if s < 0:
            g = em("slice", g, begin=(0,) * d + (m - 1,), end=(None,) * d + (None,), step=(1,) * d + (-1,))
            b, s = b + (m - 1) * s, -s
        if s > 1:   # g[..., j] goes to position j*s: append s-1 zeros after each element, drop the tail
            shp = list(g.shape)
            g = em("reshape", g, shape=tuple(shp[:d + 1]) + (1,) + tuple(shp[d + 1:]))
            pads = [0] * (r + 1) * 2
            pads[(r + 1) + d + 1] = s - 1
            g = em("pad", g, pads=tuple(pads))
            shp[d] = m * s
            g = em("reshape", g, shape=tuple(shp))
            g = em("slice", g, begin=(0,) * d + (0,), end=tuple(shp[:d]) + ((m - 1) * s + 1,))
        pads = [0] * 2 * r
        pads[d], pads[r + d] = b, n - b - g.shape[d]
        g = em("pad", g, pads=tuple(pads))
    return [g]


OPS = [
    OpDef("reshape", "injective", lambda ins, shape: [TensorType(shape, ins[0].dtype)],
          lambda x, shape: np.reshape(x, shape), _reshape_lower, attrs={"shape": None}, vjp=_reshape_vjp,
          canonicalize=_reshape_canon, doc="Same elements, new shape (one -1 is inferred).", view=True,
          identity_when_same_type=True),
    OpDef("transpose", "injective",
          lambda ins, axes: [TensorType([ins[0].shape[a] for a in axes], ins[0].dtype)],
          lambda x, axes: np.transpose(x, axes), _transpose_lower, attrs={"axes": None}, vjp=_transpose_vjp,
          canonicalize=_transpose_canon, doc="Permute axes (reverse them by default)."),
    OpDef("broadcast_to", "injective", _broadcast_to_infer, lambda x, shape: np.broadcast_to(x, shape),
          lambda ins, outs, shape: [compute(outs[0].shape, lambda *i: broadcast_load(ins[0], i))],
          attrs={"shape": None}, canonicalize=lambda ins, a: {"shape": tuple(int(s) for s in a["shape"])},
          vjp=_broadcast_to_vjp,
          doc="Broadcast to a shape with numpy rules.", identity_when_same_type=True),
    OpDef("expand_dims", "injective", lambda ins, axis: [TensorType(_expand_shape(ins[0].shape, axis), ins[0].dtype)],
          lambda x, axis: np.expand_dims(x, axis), _same_order_lower, attrs={"axis": None}, vjp=_reshape_vjp,
          canonicalize=_expand_canon, doc="Insert size-1 axes.", view=True, identity_when_same_type=True),
    OpDef("squeeze", "injective",
          lambda ins, axis: [TensorType([n for d, n in enumerate(ins[0].shape) if d not in axis], ins[0].dtype)],
          lambda x, axis: np.squeeze(x, axis), _same_order_lower, attrs={"axis": None}, vjp=_reshape_vjp,
          canonicalize=_squeeze_canon, doc="Remove size-1 axes (all of them by default).", view=True,
          identity_when_same_type=True),
    OpDef("concatenate", "injective", _concat_infer, lambda *xs, axis: np.concatenate(xs, axis=axis),
          _concat_lower, params=("*xs",), attrs={"axis": 0}, canonicalize=_concat_canon, vjp=_concat_vjp,
          doc="Join tensors along an existing axis."),
    OpDef("slice", "injective", _slice_infer, _slice_ref, _slice_lower,
          attrs={"begin": None, "end": None, "step": None}, canonicalize=_slice_canon, vjp=_slice_vjp,
          doc="Python slicing per axis: x[begin:end:step] on the leading len(begin) axes."),
]
