"""ONNX import: an ONNX model becomes an mlc Graph.

    g = mlc.frontend.onnx.from_onnx("resnet50.onnx")
    exe = mlc.compile(g)

Each ONNX node maps onto mlc ops (or a small composition of them); the importer
defines no semantics of its own. Weights (initializers) become graph constants,
which the compiler passes to the generated code as parameters. Subgraphs that
only compute on constants -- typically shape arithmetic (Shape, Gather, Concat,
Reshape on shapes) -- are evaluated at import time, so the graph holds only the
real computation.

Errors are ``OnnxImportError`` and name the problem: a corrupted or truncated
file, a missing external-data file, every unsupported op type at once (with
domain and opset), a node whose types do not fit its op, declared output shapes
that contradict the computed ones. Any model protobuf can decode imports or
raises one: nodes are checked against their op's ONNX schema, values must have
one writer, and sizes are bounded (``MAX_FOLDED_BYTES`` for constants computed
at import, int64 bytes for any value). An error in a node's conversion names the node.
"""
from __future__ import annotations

import itertools
import math
import os
from typing import Callable

import numpy as np

from .. import ops
from ..ir.graph import Graph
from ..ir.types import TensorType
from ..ops.registry import OpTypeError
from ..ops.registry import MAX_NBYTES
from .trace import TraceError, Tracer, evaluate_or_record, trace_info


class OnnxImportError(Exception):
    pass


class SymbolicShapeError(OnnxImportError):
    """An input whose declared shape is not static: ``dims`` (None: no shape declared)
    holds ints and the names of symbolic dimensions."""

    def __init__(self, message: str, input_name: str, dims: list | None):
        super().__init__(message)
        self.input_name, self.dims = input_name, dims


MIN_OPSET = 1

# Constants computed at import time (ConstantOfShape, Range, ops on constants) become
# graph parameters in memory: a tiny model must not ask for more than this.
MAX_FOLDED_BYTES = 1 << 30


def _onnx():
    try:
        import onnx
    except ImportError:  # onnx is a core dependency; this only guards a broken install
        raise OnnxImportError("the onnx package is required to import ONNX models: pip install onnx") from None
    return onnx


# ----------------------------------------------------------------------------- loading

def load_model(model_or_path):
    """An onnx.ModelProto from a path, bytes or a ModelProto, with clear errors."""
    onnx = _onnx()
    if isinstance(model_or_path, onnx.ModelProto):
        _check_text(model_or_path)
        return model_or_path
    if isinstance(model_or_path, (bytes, bytearray)):
        try:
            model = onnx.load_from_string(bytes(model_or_path))
        except Exception as e:
            raise OnnxImportError(f"the bytes given are not a valid ONNX model ({_short(e)})") from None
        _check_text(model)
        return model
    path = os.fspath(model_or_path)
    if not os.path.exists(path):
        raise OnnxImportError(f"no such ONNX file: {path}")
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as e:
        raise OnnxImportError(f"{path} is not a valid ONNX model: the file is truncated or corrupted "
                              f"({_short(e)})") from None
    _check_text(model, path + ": ")
    _load_external_data(model, os.path.dirname(os.path.abspath(path)), path)
    return model


def _check_text(model, where: str = "") -> None:
    """ONNX's string fields must be UTF-8, but protobuf decodes a field that is not as
    bytes: refuse that here, naming the field, rather than fail later on bytes."""
    from google.protobuf.descriptor import FieldDescriptor as F
    from google.protobuf.message import Message
    stack = [(model, "model")]
    while stack:
        msg, at = stack.pop()
        for field, value in msg.ListFields():
            if field.type not in (F.TYPE_STRING, F.TYPE_MESSAGE):   # numbers and raw bytes
                continue
            single = isinstance(value, (str, bytes, Message))
            for k, v in enumerate([value] if single else value):
                name = f"{at}.{field.name}" + ("" if single else f"[{k}]")
                if field.type == F.TYPE_STRING and not isinstance(v, str):
                    raise OnnxImportError(f"{where}the model is corrupted: {name} is not valid UTF-8 text")
                if field.type == F.TYPE_MESSAGE:
                    stack.append((v, name))


def _load_external_data(model, base_dir: str, path: str) -> None:
    from onnx.external_data_helper import _get_all_tensors, uses_external_data, load_external_data_for_tensor
    for tensor in _get_all_tensors(model):
        if uses_external_data(tensor):
            info = {e.key: e.value for e in tensor.external_data}
            location = os.path.join(base_dir, info.get("location", ""))
            if not os.path.isfile(location):
                raise OnnxImportError(f"{path}: tensor {tensor.name!r} keeps its data in the external file "
                                      f"{info.get('location')!r}, which is missing (looked in {base_dir})")
            try:
                load_external_data_for_tensor(tensor, base_dir)
            except Exception as e:
                raise OnnxImportError(f"{path}: cannot read the external data of tensor {tensor.name!r} from "
                                      f"{location}: {_short(e)}") from None
            expected = int(np.prod(tensor.dims, dtype=np.int64)) * _itemsize(tensor.data_type)
            if expected and len(tensor.raw_data) != expected:
                raise OnnxImportError(f"{path}: external data of tensor {tensor.name!r} in {location} has "
                                      f"{len(tensor.raw_data)} bytes, its shape {list(tensor.dims)} needs {expected}")
            del tensor.external_data[:]
            tensor.data_location = 0   # DEFAULT: the data is now inline


def _np_dtype(onnx_dtype: int, what: str) -> np.dtype:
    """The numpy dtype of an ONNX element type code, or an OnnxImportError naming ``what``."""
    from onnx import helper
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(onnx_dtype))
    except (KeyError, TypeError, ValueError):
        raise OnnxImportError(f"{what} has the unknown ONNX element type {onnx_dtype}") from None


def _gib(nbytes: int) -> str:
    return f"{nbytes / 2**30:.3g} GiB"


def _check_folded(what: str, shape, dtype) -> None:
    """Refuse an import-time constant too large to hold, before it is allocated."""
    nbytes = math.prod(shape) * np.dtype(dtype).itemsize
    if nbytes > MAX_FOLDED_BYTES:
        raise OnnxImportError(f"{what}, a constant of shape {list(shape)} ({_gib(nbytes)}), would be computed at "
                              f"import time; mlc folds at most {_gib(MAX_FOLDED_BYTES)} per value")


def _itemsize(onnx_dtype: int) -> int:
    from onnx import helper
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(onnx_dtype)).itemsize
    except Exception:
        return 0


def _short(e: Exception) -> str:
    msg = str(e).strip().splitlines()
    return (msg[0] if msg else type(e).__name__)[:200]


# ----------------------------------------------------------------------------- converters

class _Node:
    """What a converter sees of one ONNX node."""

    def __init__(self, proto, opset: int, env=None):
        from onnx import helper
        self.proto = proto
        self.op_type = proto.op_type
        self.name = proto.name
        self.opset = opset
        self.env = env   # the values in scope: what a subgraph (Loop, Scan, If) may read from outside
        self.attrs = {a.name: helper.get_attribute_value(a) for a in proto.attribute}
        for k, v in list(self.attrs.items()):
            if isinstance(v, bytes):
                self.attrs[k] = v.decode()

    def attr(self, name, default=None):
        return self.attrs.get(name, default)

    def flag(self, name, default: int) -> bool:
        """A 0/1 attribute (keepdims, transA, ...): another value is refused, not read as true."""
        v = self.attrs.get(name, default)
        if v not in (0, 1):
            raise OnnxImportError(f"attribute {name!r} must be 0 or 1, got {v!r}")
        return bool(v)


def op(name: str, *args, **attrs):
    """Apply an mlc op to importer values (tracers or constant numpy arrays). An op on
    constants only is computed now, so its result's size is checked first."""
    flat = [y for x in args for y in (x if isinstance(x, (list, tuple)) else (x,))]
    if not any(isinstance(x, Tracer) for x in flat):
        _check_folded_op(name, args, attrs)
    return evaluate_or_record(name, *args, **attrs)


def _check_folded_op(name: str, args, attrs) -> None:
    o = ops.get(name)
    try:
        inputs, bound = o.bind(args, attrs)
        types = [TensorType.of(np.asarray(x)) for x in inputs]
        outs = o.output_types(types, o.canonical_attrs(types, bound))
    except (OpTypeError, TypeError, ValueError):
        return   # not a valid call: evaluate_or_record reports it
    for t in outs:
        _check_folded(f"the result of {name} on constants", t.shape, t.dtype.np)


NEEDS_CONSTANT = "must be a constant (or computable from shapes) at import time"


def _const(v, what: str):
    """The numpy value of an input that must be known at import time."""
    if isinstance(v, Tracer):
        raise OnnxImportError(f"{what} {NEEDS_CONSTANT}")
    return np.asarray(v)


def _shape(v) -> tuple[int, ...]:
    return tuple(v.shape)


def _ints(v, what) -> list[int]:
    a = _const(v, what)
    if a.dtype.kind not in "iub":   # ONNX gives shapes, axes and counts as integer tensors
        raise OnnxImportError(f"{what} must be an integer tensor, got {a.dtype}")
    return [int(x) for x in a.reshape(-1)]


def _axis(a: int, rank: int, what: str, end: bool = False) -> int:
    """An axis in [-rank, rank) (or [-rank, rank] with ``end``), made non-negative; ONNX
    Runtime refuses others, and wrapping them around would compute something else."""
    if not -rank <= a < rank + end:
        raise OnnxImportError(f"{what} {a} is out of range for rank {rank}")
    return a + rank if a < 0 else a


CONVERTERS: dict[str, Callable] = {}


def converter(*names: str):
    def register(fn):
        for n in names:
            CONVERTERS[n] = fn
        return fn
    return register


_BINARY = {"Add": "add", "Sub": "sub", "Mul": "mul", "Pow": "pow", "Equal": "equal", "Less": "less",
           "Greater": "greater"}
_UNARY = {"Neg": "neg", "Abs": "abs", "Exp": "exp", "Log": "log", "Sqrt": "sqrt", "Tanh": "tanh",
          "Sigmoid": "sigmoid", "Relu": "relu", "Sin": "sin", "Cos": "cos", "Erf": "erf", "Floor": "floor",
          "Ceil": "ceil", "Round": "round", "Acos": "acos", "Asin": "asin", "Atan": "atan"}


@converter(*_BINARY)
def _binary(n, a, b):
    out = op(_BINARY[n.op_type], a, b)
    if n.op_type == "Pow":   # ONNX Pow keeps the base's dtype
        out = op("cast", out, dtype=a.dtype)
    return out


@converter("Div")
def _div(n, a, b):
    if np.dtype(a.dtype).kind in "iu":   # ONNX integer division truncates toward zero, as a cast does
        return op("cast", op("div", a, b), dtype=a.dtype)
    return op("div", a, b)


@converter(*_UNARY)
def _unary(n, x):
    return op(_UNARY[n.op_type], x)


@converter("Reciprocal")
def _reciprocal(n, x):
    return op("div", np.ones((), dtype=x.dtype), x)


@converter("LessOrEqual", "GreaterOrEqual")
def _le_ge(n, a, b):
    strict = op("less" if n.op_type == "LessOrEqual" else "greater", a, b)
    return op("where", strict, True, op("equal", a, b))


@converter("Not")
def _not(n, x):
    return op("where", x, False, True)


@converter("Max", "Min", "Sum", "Mean")
def _variadic(n, *xs):
    fn = {"Max": "maximum", "Min": "minimum", "Sum": "add", "Mean": "add"}[n.op_type]
    out = xs[0]
    for x in xs[1:]:
        out = op(fn, out, x)
    if n.op_type == "Mean":
        out = op("div", out, np.asarray(len(xs), dtype=xs[0].dtype))
    return out


@converter("Where")
def _where(n, c, a, b):
    return op("where", c, a, b)


@converter("Cast")
def _cast(n, x):
    return op("cast", x, dtype=_np_dtype(n.attr("to"), "Cast's 'to' attribute"))


@converter("Identity")
def _identity(n, x):
    return (x,) if isinstance(x, list) else x   # a sequence (a list) would read as the node's outputs


@converter("Dropout")
def _dropout(n, x, ratio=None, training_mode=None):
    """Inference: the identity, and a mask of all true."""
    if training_mode is not None and _const(training_mode, "Dropout's training_mode").reshape(-1).any():
        if ratio is None or _const(ratio, "Dropout's ratio").reshape(-1)[0] != 0:   # ratio 0 drops nothing
            raise OnnxImportError("Dropout in training mode (random) is not supported")
    if len(n.proto.output) < 2 or not n.proto.output[1]:
        return x
    return x, op("broadcast_to", np.array(True), shape=_shape(x))


@converter("CastLike")
def _cast_like(n, x, like):
    return op("cast", x, dtype=like.dtype)


@converter("And", "Or", "Xor")
def _logical(n, a, b):
    if n.op_type == "And":
        return op("where", a, b, False)
    if n.op_type == "Or":
        return op("where", a, True, b)
    return op("where", op("equal", a, b), False, True)


@converter("Mod")
def _mod(n, a, b):
    """fmod=0: the result takes the divisor's sign (Python's %); fmod=1: the dividend's (C fmod).
    Integers are computed exactly through float64 (|values| < 2**53)."""
    dt = a.dtype
    if np.dtype(dt).kind == "f":
        return _float_mod(a, b, n.flag("fmod", 0))
    fa, fb = (op("cast", a, dtype="float64"), op("cast", b, dtype="float64")) if np.dtype(dt).kind in "iu" else (a, b)
    q = op("div", fa, fb)
    q = op("floor", q) if not n.flag("fmod", 0) else op("where", op("less", q, 0.0), op("ceil", q), op("floor", q))
    return op("cast", op("sub", fa, op("mul", q, fb)), dtype=dt)


def _float_mod(a, b, fmod: bool):
    """C's fmod, or numpy's mod (fmod=0) built on it as numpy builds it: a nonzero
    remainder of the other sign than b moves by b, a zero one takes b's sign. fmod(a, b)
    is a - trunc(a/b)*b, and a itself where b is infinite and a finite. float16 computes
    in float32, as numpy's does (a float16 quotient rounds to the wrong integer too often)."""
    dt = np.dtype(a.dtype)
    if dt == np.float16:
        wide = (op("cast", v, dtype="float32") for v in (a, b))
        return op("cast", _float_mod(*wide, fmod), dtype="float16")
    q = op("div", a, b)
    r = op("sub", a, op("mul", op("where", op("less", q, 0.0), op("ceil", q), op("floor", q)), b))
    a_finite = op("equal", op("sub", a, a), 0.0)   # inf - inf and NaN - NaN are NaN
    r = op("where", op("where", op("equal", op("abs", b), np.array(np.inf, dt)), a_finite, False), a, r)
    if fmod:   # a zero remainder takes a's sign
        return op("where", op("equal", r, 0.0), op("mul", a, 0.0), r)
    b_neg = op("less", b, 0.0)
    other_sign = op("where", b_neg, op("greater", r, 0.0), op("less", r, 0.0))
    r = op("where", other_sign, op("add", r, b), r)
    return op("where", op("equal", r, 0.0), op("where", b_neg, np.array(-0.0, dt), np.array(0.0, dt)), r)


@converter("Sign")
def _sign(n, x):
    one, zero = np.ones((), x.dtype), np.zeros((), x.dtype)
    return op("where", op("greater", x, zero), one, op("where", op("less", x, zero), op("neg", one), zero))


@converter("IsNaN")
def _isnan(n, x):
    return op("where", op("equal", x, x), False, True)


@converter("IsInf")
def _isinf(n, x):
    pos = op("equal", x, np.array(np.inf, x.dtype)) if n.flag("detect_positive", 1) else False
    neg = op("equal", x, np.array(-np.inf, x.dtype)) if n.flag("detect_negative", 1) else False
    if pos is False and neg is False:
        return op("less", x, np.array(np.nan, x.dtype))   # all false, with x's shape
    if pos is False or neg is False:
        return neg if pos is False else pos
    return op("where", pos, True, neg)


@converter("Shrink")
def _shrink(n, x):
    lambd, bias = float(n.attr("lambd", 0.5)), float(n.attr("bias", 0.0))
    return op("where", op("less", x, -lambd), op("add", x, bias),
              op("where", op("greater", x, lambd), op("sub", x, bias), 0.0))


@converter("Tan")
def _tan(n, x):
    return op("div", op("sin", x), op("cos", x))


@converter("BitwiseAnd", "BitwiseOr", "BitwiseXor")
def _bitwise(n, a, b):
    return op({"BitwiseAnd": "bitwise_and", "BitwiseOr": "bitwise_or", "BitwiseXor": "bitwise_xor"}[n.op_type], a, b)


@converter("BitwiseNot")
def _bitwise_not(n, x):
    return op("bitwise_not", x)


@converter("BitShift")
def _bit_shift(n, x, k):
    direction = n.attr("direction")
    if direction not in ("LEFT", "RIGHT"):
        raise OnnxImportError(f"BitShift's direction must be 'LEFT' or 'RIGHT', got {direction!r}")
    return op("left_shift" if direction == "LEFT" else "right_shift", x, k)


@converter("TensorScatter")
def _tensor_scatter(n, past, update, write_indices=None):
    """A KV-cache write: batch row b's update lands along ``axis`` from write_indices[b]
    (wrapping around in circular mode). Each cache position reads the update row that
    lands on it (s - w, mod the length when circular), or keeps the past value."""
    shape, ushape = _shape(past), _shape(update)
    rank = len(shape)
    axis = _axis(n.attr("axis", -2), rank, "TensorScatter's axis")
    mode = n.attr("mode", "linear")
    if mode not in ("linear", "circular"):
        raise OnnxImportError(f"TensorScatter's mode must be 'linear' or 'circular', got {mode!r}")
    if axis == 0:
        raise OnnxImportError("TensorScatter's axis must not be 0 (the batch axis)")
    if len(ushape) != rank or any(u != p for k, (u, p) in enumerate(zip(ushape, shape)) if k != axis) \
            or ushape[axis] > shape[axis]:
        raise OnnxImportError(f"TensorScatter: update {list(ushape)} must have the cache's shape {list(shape)} "
                              f"but along axis {axis}, at most as long")
    batch, m, length = shape[0], shape[axis], ushape[axis]
    w = np.zeros((batch,), np.int64) if write_indices is None else op("cast", write_indices, dtype="int64")
    if _shape(w) != (batch,):
        raise OnnxImportError(f"TensorScatter: write_indices has shape {list(_shape(w))}, the cache's batch is {batch}")
    if mode == "circular":   # w mod m, exact through float64
        wf = op("cast", w, dtype="float64")
        w = op("cast", op("sub", wf, op("mul", op("floor", op("div", wf, float(m))), float(m))), dtype="int64")
    j = op("sub", np.arange(m, dtype=np.int64)[None, :], op("reshape", w, shape=(batch, 1)))   # [batch, m]
    if mode == "circular":
        j = op("where", op("less", j, np.int64(0)), op("add", j, np.int64(m)), j)
    valid = op("where", op("less", j, np.int64(0)), False, op("less", j, np.int64(length)))
    along = tuple(batch if k == 0 else m if k == axis else 1 for k in range(rank))
    idx = op("broadcast_to", op("reshape", op("where", valid, j, np.int64(0)), shape=along),
             shape=tuple(shape[:axis]) + (m,) + tuple(ushape[axis + 1:]))
    rows = op("gather_elements", update, idx, axis=axis)
    return op("where", op("reshape", valid, shape=along), rows, past)


@converter("Sinh", "Cosh")
def _sinh_cosh(n, x):
    e, em = op("exp", x), op("exp", op("neg", x))
    return op("mul", op("sub" if n.op_type == "Sinh" else "add", e, em), 0.5)


@converter("MatMul")
def _matmul(n, a, b):
    return op("matmul", a, b)


@converter("Gemm")
def _gemm(n, a, b, c=None):
    if n.flag("transA", 0):
        a = op("transpose", a)
    if n.flag("transB", 0):
        b = op("transpose", b)
    y = op("matmul", a, b)
    alpha, beta = float(n.attr("alpha", 1.0)), float(n.attr("beta", 1.0))
    if alpha != 1.0:
        y = op("mul", y, alpha)
    if c is not None:
        y = op("add", y, c if beta == 1.0 else op("mul", c, beta))
    return y


@converter("Constant")
def _constant(n):
    from onnx import numpy_helper
    for key in ("value", "value_float", "value_floats", "value_int", "value_ints"):
        if key in n.attrs:
            v = n.attrs[key]
            if key == "value":
                return numpy_helper.to_array(v)
            return np.asarray(v, dtype=np.float32 if "float" in key else np.int64)
    raise OnnxImportError(f"Constant node {n.name!r} has an unsupported value attribute ({', '.join(n.attrs)})")


@converter("Shape")
def _shape_op(n, x):
    shape = np.array(_shape(x), dtype=np.int64)
    start, end = n.attr("start", 0), n.attr("end", None)
    return shape[start:end]


@converter("Size")
def _size(n, x):
    return np.array(int(np.prod(_shape(x), dtype=np.int64)), dtype=np.int64)


@converter("ConstantOfShape")
def _constant_of_shape(n, shape):
    from onnx import numpy_helper
    value = numpy_helper.to_array(n.attr("value")) if "value" in n.attrs else np.zeros(1, np.float32)
    if value.size != 1:
        raise OnnxImportError(f"ConstantOfShape's value must hold one element, it holds {value.size}")
    dims = _ints(shape, "ConstantOfShape's shape")
    if any(d < 0 for d in dims):
        raise OnnxImportError(f"ConstantOfShape's shape {dims} has a negative dimension")
    _check_folded("its result", dims, value.dtype)
    return np.full(dims, value.reshape(-1)[0], dtype=value.dtype)


@converter("Range")
def _range(n, start, limit, delta):
    s, l, d = (_const(v, "Range's inputs") for v in (start, limit, delta))
    if s.size != 1 or l.size != 1 or d.size != 1:
        raise OnnxImportError(f"Range's start, limit and delta must be scalars, got shapes {s.shape}, {l.shape}, {d.shape}")
    if d == 0:
        raise OnnxImportError("Range's delta is 0")
    span = (l.item() - s.item()) / d.item()   # .item(): a one-element 1-D input too (ONNX Runtime takes them)
    if not math.isfinite(span):
        raise OnnxImportError(f"Range({s.item()}, {l.item()}, {d.item()}) has no finite length")
    count = max(math.ceil(span), 0)
    _check_folded("its result", [count], s.dtype)
    return np.arange(s.item(), l.item(), d.item(), dtype=s.dtype)


@converter("Reshape")
def _reshape(n, x, shape=None):
    target = _ints(shape, "Reshape's shape") if shape is not None else list(n.attr("shape"))
    if not n.flag("allowzero", 0):   # 0 copies the input's dimension
        target = [_shape(x)[i] if d == 0 else d for i, d in enumerate(target)]
    return op("reshape", x, shape=tuple(target))


@converter("Flatten")
def _flatten(n, x):
    shape = _shape(x)
    axis = _axis(n.attr("axis", 1), len(shape), "Flatten's axis", end=True)
    outer = int(np.prod(shape[:axis], dtype=np.int64))
    return op("reshape", x, shape=(outer, int(np.prod(shape[axis:], dtype=np.int64))))


@converter("Transpose")
def _transpose(n, x):
    perm = n.attr("perm")
    return op("transpose", x, axes=tuple(perm) if perm is not None else None)


def _axes_arg(n, axes_input, name="axes"):
    """Axes from the attribute (older opsets) or the optional input (newer ones)."""
    if axes_input is not None:
        return _ints(axes_input, f"{n.op_type}'s axes")
    a = n.attr(name)
    return list(a) if a is not None else None


@converter("Squeeze")
def _squeeze(n, x, axes=None):
    ax = _axes_arg(n, axes)
    return op("squeeze", x, axis=tuple(ax) if ax else None)


@converter("Unsqueeze")
def _unsqueeze(n, x, axes=None):
    return op("expand_dims", x, axis=tuple(_axes_arg(n, axes)))


@converter("Concat")
def _concat(n, *xs):
    return op("concatenate", list(xs), axis=n.attr("axis"))


@converter("Expand")
def _expand(n, x, shape):
    target = _ints(shape, "Expand's shape")
    return op("broadcast_to", x, shape=tuple(np.broadcast_shapes(_shape(x), tuple(target))))


@converter("Slice")
def _slice(n, x, starts=None, ends=None, axes=None, steps=None):
    if starts is None:   # opset < 10: attributes
        st, en, ax, sp = list(n.attr("starts")), list(n.attr("ends")), n.attr("axes"), None
    else:
        st, en = _ints(starts, "Slice's starts"), _ints(ends, "Slice's ends")
        ax = _ints(axes, "Slice's axes") if axes is not None else None
        sp = _ints(steps, "Slice's steps") if steps is not None else None
    rank = len(_shape(x))
    ax = [_axis(a, rank, "Slice's axis") for a in ax] if ax is not None else list(range(len(st)))
    sp = sp or [1] * len(st)
    begin, end, step = [0] * rank, [None] * rank, [1] * rank
    for a, b, e, s in zip(ax, st, en, sp):
        dim = _shape(x)[a]
        # ONNX clamps; Python slices clamp the same way, except for huge negative ends with negative steps
        begin[a], step[a] = b, s
        end[a] = None if (s < 0 and e < -dim) else e
    begin = [min(max(b, -2 ** 62), 2 ** 62) for b in begin]
    end = [None if e is None else min(max(e, -2 ** 62), 2 ** 62) for e in end]
    return op("slice", x, begin=tuple(begin), end=tuple(end), step=tuple(step))


def _reduce_axes(n, x, axes_input):
    ax = _axes_arg(n, axes_input)
    if not ax:
        if n.flag("noop_with_empty_axes", 0):
            return ()
        return None
    return tuple(ax)


@converter("ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceSumSquare",
           "ReduceL1", "ReduceL2", "ReduceLogSumExp", "ReduceLogSum")
def _reduce(n, x, axes=None):
    ax = _reduce_axes(n, x, axes)
    keep = n.flag("keepdims", 1)
    kind = n.op_type
    if kind == "ReduceSumSquare":
        return op("sum", op("mul", x, x), axis=ax, keepdims=keep)
    if kind == "ReduceL1":
        return op("sum", op("abs", x), axis=ax, keepdims=keep)
    if kind == "ReduceL2":
        return op("sqrt", op("sum", op("mul", x, x), axis=ax, keepdims=keep))
    if kind == "ReduceLogSum":
        return op("log", op("sum", x, axis=ax, keepdims=keep))
    if kind == "ReduceLogSumExp":
        return op("log", op("sum", op("exp", x), axis=ax, keepdims=keep))
    fn = {"ReduceSum": "sum", "ReduceMean": "mean", "ReduceMax": "max", "ReduceMin": "min", "ReduceProd": "prod"}[kind]
    shape = _shape(x)
    reduced = range(len(shape)) if ax is None else [_axis(a, len(shape), f"{kind}'s axis") for a in ax]
    if fn in ("max", "min") and any(shape[a] == 0 for a in reduced):
        # ONNX defines the empty max/min as the lowest/highest value of the type
        dt = np.dtype(x.dtype)
        info = np.finfo(dt) if dt.kind == "f" else (np.iinfo(dt) if dt.kind in "iu" else None)
        value = (-np.inf if fn == "max" else np.inf) if dt.kind == "f" else \
            ((fn == "min") if info is None else (info.min if fn == "max" else info.max))
        out_shape = [1 if a in reduced else d for a, d in enumerate(shape)] if keep else \
            [d for a, d in enumerate(shape) if a not in reduced]
        _check_folded("its result", out_shape, dt)
        return np.full(out_shape, value, dtype=dt)
    out = op(fn, x, axis=ax, keepdims=keep)
    return op("cast", out, dtype=x.dtype) if out.dtype != x.dtype else out   # ONNX keeps the input dtype


@converter("Softmax", "LogSoftmax")
def _softmax(n, x):
    name = "softmax" if n.op_type == "Softmax" else "log_softmax"
    shape = _shape(x)
    if n.opset >= 13:
        return op(name, x, axis=n.attr("axis", -1))
    # before opset 13 the input is viewed as 2-D: [prod(shape[:axis]), prod(shape[axis:])]
    axis = _axis(n.attr("axis", 1), len(shape), f"{n.op_type}'s axis")
    flat = op("reshape", x, shape=(int(np.prod(shape[:axis], dtype=np.int64)), -1))
    return op("reshape", op(name, flat, axis=1), shape=shape)


def _spatial_attrs(n, names):
    out = {}
    for k in names:
        v = n.attr(k)
        if v is not None:
            out[k] = tuple(v) if isinstance(v, (list, tuple)) else v
    if "ceil_mode" in out:
        out["ceil_mode"] = n.flag("ceil_mode", 0)
    return out


def _add_channel_bias(y, b):
    """ONNX's optional conv bias b[M] added along axis 1."""
    if b is None:
        return y
    rank = len(_shape(y))
    return op("add", y, op("reshape", b, shape=(-1,) + (1,) * (rank - 2)))


@converter("Conv")
def _conv(n, x, w, b=None):
    attrs = _spatial_attrs(n, ("strides", "dilations", "pads", "group", "auto_pad", "kernel_shape"))
    return _add_channel_bias(op("conv", x, w, **attrs), b)


@converter("ConvTranspose")
def _conv_transpose(n, x, w, b=None):
    attrs = _spatial_attrs(n, ("strides", "dilations", "pads", "output_padding", "output_shape", "group",
                                "auto_pad", "kernel_shape"))
    return _add_channel_bias(op("conv_transpose", x, w, **attrs), b)


@converter("MaxPool")
def _max_pool(n, x):
    attrs = _spatial_attrs(n, ("kernel_shape", "strides", "pads", "dilations", "ceil_mode", "auto_pad"))
    values = op("max_pool", x, **attrs)
    if len(n.proto.output) > 1 and n.proto.output[1]:
        return values, op("max_pool_indices", x, storage_order=n.attr("storage_order", 0), **attrs)
    return values


@converter("AveragePool")
def _avg_pool(n, x):
    attrs = _spatial_attrs(n, ("kernel_shape", "strides", "pads", "dilations", "ceil_mode", "auto_pad"))
    attrs["count_include_pad"] = n.flag("count_include_pad", 0)
    return op("avg_pool", x, **attrs)


@converter("GlobalAveragePool", "GlobalMaxPool")
def _global_pool(n, x):
    return op("global_avg_pool" if n.op_type == "GlobalAveragePool" else "global_max_pool", x)


_ACTIVATIONS = {  # ONNX op -> (mlc op, ONNX attribute -> mlc attribute)
    "LeakyRelu": ("leaky_relu", {"alpha": "alpha"}),
    "Elu": ("elu", {"alpha": "alpha"}),
    "Selu": ("selu", {"alpha": "alpha", "gamma": "gamma"}),
    "Celu": ("celu", {"alpha": "alpha"}),
    "Gelu": ("gelu", {"approximate": "approximate"}),
    "HardSigmoid": ("hard_sigmoid", {"alpha": "alpha", "beta": "beta"}),
    "HardSwish": ("hard_swish", {}),
    "Softplus": ("softplus", {}),
    "Softsign": ("softsign", {}),
    "Mish": ("mish", {}),
    "ThresholdedRelu": ("thresholded_relu", {"alpha": "alpha"}),
}


@converter(*_ACTIVATIONS)
def _activation(n, x):
    name, names = _ACTIVATIONS[n.op_type]
    return op(name, x, **{m: n.attr(k) for k, m in names.items() if k in n.attrs})


@converter("PRelu")
def _prelu(n, x, slope):
    return op("prelu", x, slope)


@converter("Clip")
def _clip(n, x, lo=None, hi=None):
    if n.opset < 11:   # bounds were attributes
        lo, hi = n.attr("min"), n.attr("max")
    else:
        lo = None if lo is None else _const(lo, "Clip's min").item()
        hi = None if hi is None else _const(hi, "Clip's max").item()
    return op("clip", x, min=lo, max=hi)


@converter("BatchNormalization")
def _batch_norm(n, x, scale, bias, mean, var):
    if len([o for o in n.proto.output if o]) > 1 or n.attr("training_mode", 0):
        raise OnnxImportError("BatchNormalization in training mode (running statistics outputs) is not supported")
    return op("batch_norm", x, scale, bias, mean, var, epsilon=float(n.attr("epsilon", 1e-5)))


@converter("LayerNormalization")
def _layer_norm(n, x, scale, bias=None):
    axis, eps = n.attr("axis", -1), float(n.attr("epsilon", 1e-5))
    if bias is None:
        bias = np.zeros(_shape(scale), dtype=scale.dtype)
    y = op("layer_norm", x, scale, bias, axis=axis, epsilon=eps)
    if len([o for o in n.proto.output if o]) == 1:
        return y
    # the optional Mean and InvStdDev outputs, over the normalized axes, kept as size 1
    rank = len(_shape(x))
    axes = tuple(range(_axis(axis, rank, "LayerNormalization's axis"), rank))
    xf = op("cast", x, dtype="float32") if np.dtype(x.dtype) != np.float32 else x
    mean = op("mean", xf, axis=axes, keepdims=True)
    centered = op("sub", xf, mean)
    var = op("mean", op("mul", centered, centered), axis=axes, keepdims=True)
    return y, mean, op("rsqrt", op("add", var, eps))


@converter("LRN")
def _lrn(n, x):
    return op("lrn", x, size=n.attr("size"), alpha=float(n.attr("alpha", 1e-4)), beta=float(n.attr("beta", 0.75)),
              bias=float(n.attr("bias", 1.0)))


def _check_indices(n, data, indices):
    """Constant indices must lie in [-size, size) as ONNX requires (mlc's gather would clamp)."""
    if isinstance(indices, np.ndarray) and indices.size:
        axis = _axis(n.attr("axis", 0), len(_shape(data)), f"{n.op_type}'s axis")
        size = _shape(data)[axis]
        bad = indices[(indices < -size) | (indices >= size)]
        if bad.size:
            raise OnnxImportError(f"{n.op_type}'s index {int(bad[0])} is out of range for axis {axis} of size {size}")


@converter("Gather")
def _gather(n, data, indices):
    _check_indices(n, data, indices)
    return op("gather", data, indices, axis=n.attr("axis", 0))


@converter("Det")
def _det(n, x):
    """Determinants of the trailing square matrices, by Gaussian elimination with partial
    pivoting (as LAPACK's LU, which numpy's det uses): the product of the pivots, its
    sign flipped for each row swap. float16 is computed in float32."""
    shape = _shape(x)
    if len(shape) < 2 or shape[-1] != shape[-2]:
        raise OnnxImportError(f"Det takes square matrices [..., n, n], got shape {list(shape)}")
    dt = np.dtype(x.dtype)
    a = op("cast", x, dtype="float32") if dt == np.float16 else x
    size, batch, r = shape[-1], tuple(shape[:-2]), len(shape)
    rows = np.arange(size)
    det = np.ones((), np.dtype(a.dtype))
    for c in range(size):
        col = op("gather", a, np.array(c, np.int64), axis=r - 1)                          # [..., n]
        p = op("argmax", op("where", rows >= c, op("abs", col), -1.0), axis=r - 2, keepdims=True)
        is_p = op("equal", rows, p)                                                        # [..., n]
        row_p = op("sum", op("where", op("reshape", is_p, shape=batch + (size, 1)), a, 0.0), axis=r - 2)
        row_c = op("gather", a, np.array(c, np.int64), axis=r - 2)
        a = op("where", (rows == c)[:, None], op("reshape", row_p, shape=batch + (1, size)),
               op("where", op("reshape", is_p, shape=batch + (size, 1)), op("reshape", row_c, shape=batch + (1, size)),
                  a))
        pivot = op("gather", row_p, np.array(c, np.int64), axis=r - 2)                    # [...]
        kept = op("reshape", op("equal", p, np.int64(c)), shape=batch)   # no row swap: the sign stays
        det = op("mul", det, op("where", kept, pivot, op("neg", pivot)))
        factor = op("div", op("gather", a, np.array(c, np.int64), axis=r - 1),
                    op("reshape", op("where", op("equal", pivot, 0.0), 1.0, pivot), shape=batch + (1,)))
        factor = op("where", rows > c, factor, 0.0)                                        # rows below the pivot
        a = op("sub", a, op("mul", op("reshape", factor, shape=batch + (size, 1)),
                                   op("reshape", row_p, shape=batch + (1, size))))
    return op("cast", det, dtype=dt) if np.dtype(det.dtype) != dt else det


@converter("MelWeightMatrix")
def _mel_weight_matrix(n, num_mel_bins, dft_length, sample_rate, lower_edge_hertz, upper_edge_hertz):
    """The [dft_length // 2 + 1, num_mel_bins] matrix of triangular mel filters, a constant
    computed from its scalar parameters as ONNX's reference computes it."""
    bins, length, rate = (int(_const(v, f"MelWeightMatrix's {w}").reshape(-1)[0])
                          for v, w in ((num_mel_bins, "num_mel_bins"), (dft_length, "dft_length"),
                                       (sample_rate, "sample_rate")))
    lo, hi = (float(_const(v, "MelWeightMatrix's edge frequencies").reshape(-1)[0])
              for v in (lower_edge_hertz, upper_edge_hertz))
    if bins <= 0 or length <= 0 or rate <= 0:
        raise OnnxImportError(f"MelWeightMatrix's num_mel_bins ({bins}), dft_length ({length}) and sample_rate "
                              f"({rate}) must be positive")
    spectrogram_bins = length // 2 + 1
    lo_mel, hi_mel = (2595 * np.log1p(f / 700) / np.log(10) for f in (lo, hi))
    mels = np.arange(bins + 2) * ((hi_mel - lo_mel) / (bins + 2)) + lo_mel
    edges = (((length + 1) * (700 * np.expm1(mels / 2595 * np.log(10)))) // rate).astype(np.int64)
    if edges.min() < 0 or edges.max() >= spectrogram_bins:
        raise OnnxImportError(f"MelWeightMatrix's edge frequencies fall outside the {spectrogram_bins} spectrogram "
                              "bins")
    out = np.zeros((spectrogram_bins, bins))
    for i in range(bins):
        left, center, right = edges[i], edges[i + 1], edges[i + 2]
        if center == left:
            out[center, i] = 1
        else:
            out[left:center + 1, i] = (np.arange(left, center + 1) - left) / (center - left)
        if right > center:
            out[center:right, i] = (right - np.arange(center, right)) / (right - center)
    return out.astype(_np_dtype(n.attr("output_datatype", 1), "MelWeightMatrix's output_datatype"))


@converter("Compress")
def _compress(n, x, condition):
    """The slices of x where condition is true: the output's shape depends on the
    condition's values, so it must be known at import time."""
    cond = _const(condition, "Compress's condition").reshape(-1).astype(bool)
    axis = n.attr("axis")
    if axis is None:   # over the flattened input
        x, axis = op("reshape", x, shape=(-1,)), 0
    axis = _axis(axis, len(_shape(x)), "Compress's axis")
    if cond.size > _shape(x)[axis]:
        raise OnnxImportError(f"Compress's condition has {cond.size} entries, more than axis {axis}'s "
                              f"{_shape(x)[axis]}")
    return op("gather", x, np.nonzero(cond)[0].astype(np.int64), axis=axis)


@converter("NonZero")
def _nonzero(n, x):
    """The indices of x's nonzero elements, [rank, count]: the count depends on x's
    values, so x must be known at import time."""
    v = _const(x, "NonZero's input")
    if v.ndim == 0:
        return np.zeros((0, int(v != 0)), np.int64)
    return np.stack(np.nonzero(v)).astype(np.int64)


@converter("GatherElements")
def _gather_elements(n, data, indices):
    _check_indices(n, data, indices)
    return op("gather_elements", data, indices, axis=n.attr("axis", 0))


@converter("Pad")
def _pad(n, x, pads=None, value=None, axes=None):
    if pads is None:   # opset < 11: attributes
        p, v = list(n.attr("pads")), float(n.attr("value", 0.0))
    else:
        p = _ints(pads, "Pad's pads")
        v = _const(value, "Pad's constant value").item() if value is not None else 0
    if axes is not None:   # pads only for these axes: spread over all of them
        rank = len(_shape(x))
        ax = [_axis(a, rank, "Pad's axis") for a in _ints(axes, "Pad's axes")]
        full = [0] * (2 * rank)
        for k, a in enumerate(ax):
            full[a], full[a + rank] = p[k], p[k + len(ax)]
        p = full
    return op("pad", x, pads=tuple(p), mode=n.attr("mode", "constant"), value=v)


@converter("Tile")
def _tile(n, x, repeats):
    return op("tile", x, repeats=tuple(_ints(repeats, "Tile's repeats")))


@converter("Split")
def _split(n, x, split=None):
    sizes = _ints(split, "Split's split") if split is not None else n.attr("split")
    outs = op("split", x, axis=n.attr("axis", 0), sizes=tuple(sizes) if sizes else None,
              num_outputs=None if sizes else len(n.proto.output))
    return outs if isinstance(outs, tuple) else (outs,)


@converter("CumSum")
def _cumsum(n, x, axis):
    return op("cumsum", x, axis=int(_const(axis, "CumSum's axis").item()),
              exclusive=n.flag("exclusive", 0), reverse=n.flag("reverse", 0))


@converter("ArgMax", "ArgMin")
def _argmax(n, x):
    return op(n.op_type.lower(), x, axis=n.attr("axis", 0), keepdims=n.flag("keepdims", 1),
              select_last_index=n.flag("select_last_index", 0))


@converter("TopK")
def _top_k(n, x, k=None):
    kk = int(_const(k, "TopK's k").reshape(-1)[0]) if k is not None else int(n.attr("k"))
    return op("top_k", x, k=kk, axis=n.attr("axis", -1), largest=n.flag("largest", 1),
              sorted=n.flag("sorted", 1))


def _einsum_terms(equation: str, shapes):
    """Operand and output index strings, with '...' spelled out as upper-case letters."""
    eq = equation.replace(" ", "")
    lhs, arrow, rhs = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(shapes):
        raise OnnxImportError(f"Einsum equation {equation!r} names {len(terms)} operands, the node has {len(shapes)}")
    n_ell = max((len(sh) - (len(t) - 3) for t, sh in zip(terms, shapes) if "..." in t), default=0)
    ell = "ABCDEFGHIJ"[:n_ell]
    out_terms = []
    for t, sh in zip(terms, shapes):
        if "..." in t:
            k = len(sh) - (len(t) - 3)
            t = t.replace("...", ell[n_ell - k:])
        if len(t) != len(sh):
            raise OnnxImportError(f"Einsum term {t!r} does not match an operand of rank {len(sh)}")
        if len(set(t)) != len(t):
            raise OnnxImportError(f"Einsum with a repeated index in one operand ({t!r}, a diagonal) is not supported")
        out_terms.append(t)
    if arrow:
        out = rhs.replace("...", ell)
    else:   # implicit output: the letters used once, in alphabetical order, after the ellipsis
        counts = {c: sum(t.count(c) for t in out_terms) for t in out_terms for c in t}
        out = ell + "".join(sorted(c for c, k in counts.items() if k == 1 and c not in ell))
    return out_terms, out


@converter("Einsum")
def _einsum(n, *xs):
    """One or two operands: sums, transposes and (batched) contractions, as
    sum / transpose / broadcast_to / reshape / matmul."""
    if len(xs) > 2:
        raise OnnxImportError("Einsum with more than two operands is not supported")
    terms, out = _einsum_terms(n.attr("equation"), [_shape(x) for x in xs])
    xs = list(xs)
    # sum away indices that appear in one operand only and not in the output
    for k, (x, t) in enumerate(zip(xs, terms)):
        others = "".join(terms[:k] + terms[k + 1:]) + out
        gone = [i for i, c in enumerate(t) if c not in others]
        if gone:
            xs[k] = op("sum", x, axis=tuple(gone))
            terms[k] = "".join(c for c in t if c in others)
    if len(xs) == 1:
        (x,), (t,) = xs, terms
        return op("transpose", x, axes=tuple(t.index(c) for c in out)) if t != out else x
    (a, b), (ta, tb) = xs, terms
    size = {}
    for x, t in ((a, ta), (b, tb)):
        for c, d in zip(t, _shape(x)):
            size[c] = max(size.get(c, 1), d)
    batch = [c for c in out if c in ta and c in tb]
    left = [c for c in out if c in ta and c not in tb]
    right = [c for c in out if c in tb and c not in ta]
    contract = [c for c in ta if c in tb and c not in out]

    def arrange(x, t, order):
        x = op("transpose", x, axes=tuple(t.index(c) for c in order)) if list(t) != order else x
        full = tuple(size[c] for c in order)
        return op("broadcast_to", x, shape=full) if _shape(x) != full else x

    prod = lambda cs: int(np.prod([size[c] for c in cs], dtype=np.int64))
    a3 = op("reshape", arrange(a, ta, batch + left + contract), shape=(prod(batch), prod(left), prod(contract)))
    b3 = op("reshape", arrange(b, tb, batch + contract + right), shape=(prod(batch), prod(contract), prod(right)))
    y = op("reshape", op("matmul", a3, b3), shape=tuple(size[c] for c in batch + left + right))
    order = batch + left + right
    return op("transpose", y, axes=tuple(order.index(c) for c in out)) if order != list(out) else y


# ----------------------------------------------------------------------------- losses

def _nll(n, logp, target, weight=None):
    """NegativeLogLikelihoodLoss on log-probabilities logp [N, C, d...] and class indices
    target [N, d...]: -logp[n, target, d...] times the class weight, 0 where target is
    ignore_index; reduction none / sum / mean (the mean divides by the summed weights)."""
    reduction = n.attr("reduction", "mean")
    if reduction not in ("none", "sum", "mean"):
        raise OnnxImportError(f"{n.op_type}'s reduction must be none, sum or mean, got {reduction!r}")
    shape, tshape = _shape(logp), _shape(target)
    if len(shape) < 2 or tshape != shape[:1] + shape[2:]:
        raise OnnxImportError(f"{n.op_type}: target {list(tshape)} must be the input {list(shape)} without its "
                              "class axis 1")
    ignore = n.attr("ignore_index")
    dt = logp.dtype
    if ignore is not None:
        kept = op("where", op("equal", target, np.asarray(ignore, target.dtype)), False, True)
        target = op("where", kept, target, np.zeros((), target.dtype))   # an index gather can read
    picked = op("squeeze", op("gather_elements", logp, op("expand_dims", target, axis=(1,)), axis=1), axis=(1,))
    loss = op("neg", picked)
    w = None
    if weight is not None:
        w = op("gather", weight, target, axis=0)
    if ignore is not None:
        w = op("where", kept, np.ones((), dt) if w is None else w, np.zeros((), dt))
    if w is not None:
        loss = op("mul", loss, w)
    if reduction == "none":
        return loss
    total = op("cast", op("sum", loss), dtype=dt)
    if reduction == "sum":
        return total
    count = op("sum", w) if w is not None else np.asarray(math.prod(tshape), dt)
    return op("cast", op("div", total, op("cast", count, dtype=dt)), dtype=dt)


@converter("NegativeLogLikelihoodLoss")
def _nll_loss(n, logp, target, weight=None):
    return _nll(n, logp, target, weight)


@converter("SoftmaxCrossEntropyLoss")
def _softmax_cross_entropy(n, scores, labels, weight=None):
    """log_softmax over the class axis 1, then NegativeLogLikelihoodLoss; the optional
    second output is the log-probabilities."""
    logp = op("log_softmax", scores, axis=1)
    loss = _nll(n, logp, labels, weight)
    return (loss, logp) if len([o for o in n.proto.output if o]) > 1 else loss


# ----------------------------------------------------------------------------- attention

def _heads(x, heads: int, what: str):
    """[B, S, heads * D] -> [B, heads, S, D]."""
    b, s, hidden = _shape(x)
    if heads <= 0 or hidden % heads:
        raise OnnxImportError(f"Attention: {what}'s hidden size {hidden} is not a multiple of its {heads} heads")
    return op("transpose", op("reshape", x, shape=(b, s, heads, hidden // heads)), axes=(0, 2, 1, 3))


def _additive(mask, dt):
    """A boolean mask (true: attend) as an additive bias: 0 or -inf."""
    if np.dtype(mask.dtype) == np.bool_:
        return op("where", mask, np.zeros((), dt), np.array(-np.inf, dt))
    return mask


def _frontier_bias(q: int, kv: int, offset, dt, left: int = -1, right: int = -1, causal: bool = False):
    """The additive bias (0 or -inf) of query i attending key j, with the query at
    absolute position i + offset: causal allows j <= i + offset, a window allows
    i + offset - left <= j <= i + offset + right (a bound of -1 is none). offset is an
    int (result [q, kv]) or a per-batch int tensor (result [B, 1, q, kv])."""
    i = np.arange(q, dtype=np.int64).reshape(q, 1)
    j = np.arange(kv, dtype=np.int64).reshape(1, kv)
    if isinstance(offset, int):
        diff = i + offset - j
    else:
        diff = op("sub", op("add", i, op("reshape", op("cast", offset, dtype="int64"), shape=(-1, 1, 1, 1))), j)
    bad = []   # the conditions that mask key j for query i
    if causal:
        bad.append(op("less", diff, np.int64(0)))
    if left >= 0:
        bad.append(op("greater", diff, np.int64(left)))
    if right >= 0:
        bad.append(op("less", diff, np.int64(-right)))
    if not bad:
        return np.zeros((q, kv), dt)
    masked = bad[0]
    for b in bad[1:]:
        masked = op("where", b, True, masked)
    return op("where", masked, np.array(-np.inf, dt), np.zeros((), dt))


@converter("Attention")
def _attention(n, q, k, v, attn_mask=None, past_key=None, past_value=None, nonpad_kv_seqlen=None):
    """Scaled dot-product attention as ONNX defines it (opsets 23 to 25): 3-D inputs
    split into heads, the key/value cache concatenated, grouped-query heads repeated,
    causal / sliding-window / padding / given masks as one additive bias, softcap,
    softmax (at softmax_precision), and the optional qk_matmul_output in its four
    modes. A query row with every key masked gives 0, as the reference does."""
    dt = q.dtype
    rank = len(_shape(q))
    if rank not in (3, 4) or len(_shape(k)) != rank or len(_shape(v)) != rank:
        raise OnnxImportError(f"Attention: Q, K and V must all be 3-D or all 4-D, got {list(_shape(q))}, "
                              f"{list(_shape(k))}, {list(_shape(v))}")
    if (past_key is None) != (past_value is None):
        raise OnnxImportError("Attention: past_key and past_value must be given together")
    if nonpad_kv_seqlen is not None and past_key is not None:
        raise OnnxImportError("Attention: nonpad_kv_seqlen cannot be combined with past_key/past_value")
    qh, kvh = n.attr("q_num_heads"), n.attr("kv_num_heads")
    if rank == 3:
        if not qh or not kvh:
            raise OnnxImportError("Attention with 3-D inputs needs the q_num_heads and kv_num_heads attributes")
        q, k, v = _heads(q, qh, "Q"), _heads(k, kvh, "K"), _heads(v, kvh, "V")
    scale = n.attr("scale")
    scale = 1 / math.sqrt(_shape(q)[3]) if scale is None else float(scale)
    s = np.asarray(math.sqrt(scale), dtype=dt)   # applied to Q and K each, as the reference does
    if past_key is not None:
        k = op("concatenate", [past_key, k], axis=2)
        v = op("concatenate", [past_value, v], axis=2)
    present_k, present_v = k, v
    batch, lq, lkv = _shape(q)[0], _shape(q)[2], _shape(k)[2]
    left, right = int(n.attr("left_window_size", -1)), int(n.attr("right_window_size", -1))
    if attn_mask is not None and _shape(attn_mask)[-1] < lkv:   # a short mask: the missing keys are masked
        ms = _shape(attn_mask)
        fill = np.full(ms[:-1] + (lkv - ms[-1],), False if np.dtype(attn_mask.dtype) == np.bool_ else -np.inf,
                       dtype=attn_mask.dtype)
        attn_mask = op("concatenate", [attn_mask, fill], axis=-1)
    if nonpad_kv_seqlen is not None and past_key is None:
        offset = op("sub", op("cast", nonpad_kv_seqlen, dtype="int64"), np.int64(lq))
    else:
        offset = _shape(past_key)[2] if past_key is not None else 0
    bias = np.zeros((lq, lkv), dt)
    if n.attr("is_causal", 0):
        base = bias if attn_mask is None else _additive(attn_mask, dt)
        bias = op("add", base, _frontier_bias(lq, lkv, offset, dt, causal=True))
    elif attn_mask is not None:
        bias = op("add", bias, _additive(attn_mask, dt))
    if left >= 0 or right >= 0:
        bias = op("add", bias, _frontier_bias(lq, lkv, offset, dt, left, right))
    if nonpad_kv_seqlen is not None:
        kept = op("less", np.arange(lkv, dtype=np.int64),
                  op("reshape", op("cast", nonpad_kv_seqlen, dtype="int64"), shape=(-1, 1, 1, 1)))
        bias = op("add", bias, op("where", kept, np.zeros((), dt), np.array(-np.inf, dt)))
    nq, nk = _shape(q)[1], _shape(k)[1]
    if nq != nk:   # grouped-query attention: each K/V head serves nq // nk query heads in a row
        if nq % nk or _shape(v)[1] != nk:
            raise OnnxImportError(f"Attention: {nq} query heads cannot share {nk} key/value heads")
        reps = nq // nk

        def repeat(x):
            b, h, sq, d = _shape(x)
            return op("reshape", op("broadcast_to", op("expand_dims", x, axis=(2,)), shape=(b, h, reps, sq, d)),
                      shape=(b, h * reps, sq, d))
        k, v = repeat(k), repeat(v)
    qk = op("matmul", op("mul", q, s), op("transpose", op("mul", k, s), axes=(0, 1, 3, 2)))
    softcap = float(n.attr("softcap", 0.0))
    if softcap > 0:
        qk = op("mul", op("tanh", op("div", qk, np.asarray(softcap, dt))), np.asarray(softcap, dt))
    mode = int(n.attr("qk_matmul_output_mode", 0))
    if mode not in (0, 1, 2, 3):
        raise OnnxImportError(f"Attention's qk_matmul_output_mode must be 0 to 3, got {mode}")
    scores = op("add", qk, bias)
    qk_out = scores if mode == 2 else qk
    precision = n.attr("softmax_precision")
    if precision:
        scores = op("cast", scores, dtype=_np_dtype(precision, "Attention's softmax_precision"))
    probs = op("softmax", scores, axis=-1)
    # a row whose bias masks every key has no key to attend: 0, not softmax's NaN
    dead = op("equal", op("max", bias, axis=-1, keepdims=True), np.array(-np.inf, np.dtype(bias.dtype)))
    probs = op("where", dead, np.zeros((), np.dtype(probs.dtype)), probs)
    if mode == 3:
        qk_out = probs
    probs = op("cast", probs, dtype=dt) if np.dtype(probs.dtype) != np.dtype(dt) else probs
    qk_out = op("cast", qk_out, dtype=dt) if np.dtype(qk_out.dtype) != np.dtype(dt) else qk_out
    y = op("matmul", probs, v)
    if rank == 3:
        y = op("reshape", op("transpose", y, axes=(0, 2, 1, 3)), shape=(batch, lq, -1))
    return y, present_k, present_v, qk_out


# ----------------------------------------------------------------------------- resize
# Resize is separable and linear in its input: along each resized axis, output row o
# is a fixed combination of input rows, which the importer computes now (the shapes and
# scales are known) as a matrix W [out, in]. Nearest becomes a gather of the one row
# each output takes, the other modes a matmul with W (in float64, as ONNX defines them).

def _nearest_coeffs(rule):
    def coeffs(ratio, scale):
        if float(ratio).is_integer():
            return np.array([0.0, 1.0])
        pick_ceil = {"round_prefer_floor": ratio > 0.5, "round_prefer_ceil": ratio >= 0.5,
                     "floor": False, "ceil": True}[rule]
        return np.array([0.0, 1.0]) if pick_ceil else np.array([1.0, 0.0])
    return coeffs


def _linear_coeffs(antialias):
    def coeffs(ratio, scale):
        if not antialias:
            return np.array([1 - ratio, ratio])
        s = min(scale, 1.0)   # downsampling widens the tent to cover every input it spans
        start = int(np.floor(-1 / s) + 1)
        w = np.clip(1 - np.abs((np.arange(start, 2 - start) - ratio) * s), 0, 1)
        return w / w.sum()
    return coeffs


def _cubic_coeffs(a, antialias):
    def kernel(x):
        x = abs(x)
        if x <= 1:
            return (a + 2) * x ** 3 - (a + 3) * x ** 2 + 1
        return a * x ** 3 - 5 * a * x ** 2 + 8 * a * x - 4 * a if x < 2 else 0.0

    def coeffs(ratio, scale):
        if not antialias:
            return np.array([kernel(ratio + 1), kernel(ratio), kernel(1 - ratio), kernel(2 - ratio)])
        s = min(scale, 1.0)
        start = int(np.floor(-2 / s) + 1)
        w = np.array([kernel(s * (i - ratio)) for i in range(start, 2 - start)])
        return w / w.sum()
    return coeffs


def _source_coords(ctm, n_in, n_out, scale, roi):
    """Where output index y samples the input (coordinate_transformation_mode), and for
    tf_crop_and_resize which outputs fall outside the input (None otherwise)."""
    y = np.arange(n_out, dtype=np.float64)
    width = scale * n_in
    outside = None
    if ctm == "align_corners":
        x = np.zeros(n_out) if width == 1 else y * (n_in - 1) / (width - 1)
    elif ctm == "asymmetric":
        x = y / scale
    elif ctm == "tf_half_pixel_for_nn":
        x = (y + 0.5) / scale
    elif ctm == "tf_crop_and_resize":
        x = np.full(n_out, (roi[1] - roi[0]) * (n_in - 1) / 2) if width == 1 else \
            y * (roi[1] - roi[0]) * (n_in - 1) / (width - 1)
        x = x + roi[0] * (n_in - 1)
        outside = (x < 0) | (x > n_in - 1)
    elif ctm == "pytorch_half_pixel":
        x = np.full(n_out, -0.5) if width == 1 else (y + 0.5) / scale - 0.5
    elif ctm == "half_pixel":
        x = (y + 0.5) / scale - 0.5
    elif ctm == "half_pixel_symmetric":
        x = n_in / 2 * (1 - n_out / width) + (y + 0.5) / scale - 0.5
    else:
        raise OnnxImportError(f"Resize's coordinate_transformation_mode {ctm!r} is not one ONNX defines")
    return x, outside


def _resize_matrix(n_in, n_out, scale, ctm, roi, coeffs, exclude_outside):
    """W [n_out, n_in] (float64) and the extrapolated outputs (or None) of one axis."""
    x, outside = _source_coords(ctm, n_in, n_out, scale, roi)
    base = np.floor(x)
    ratios = np.where(x == base, 1.0, x - base)
    w = np.stack([np.asarray(coeffs(float(r), scale), dtype=np.float64) for r in ratios]) if n_out else \
        np.zeros((0, 2))
    k = w.shape[1]
    pad = int(np.ceil(k / 2))   # the neighbours of x: k consecutive indices, the nearer side preferred
    xp = x + pad
    frac = xp - np.floor(xp)
    if k % 2 == 0:
        first = np.floor(xp) + np.where(frac == 0, -(k // 2), -(k // 2) + 1)
    else:
        first = np.floor(xp) + np.where(frac <= 0.5, -((k - 1) // 2), -((k - 1) // 2) + 1)
    idx = first.astype(np.int64)[:, None] + np.arange(k)[None, :] - pad
    if exclude_outside:
        w = np.where((idx < 0) | (idx >= n_in), 0.0, w)
        total = w.sum(axis=-1, keepdims=True)
        w = w / np.where(total == 0, 1.0, total)
    m = np.zeros((n_out, n_in))
    np.add.at(m, (np.repeat(np.arange(n_out), k), np.clip(idx, 0, n_in - 1).reshape(-1)), w.reshape(-1))
    return m, outside


def _along(x, axis: int, fn):
    """fn applied with ``axis`` moved last, then moved back."""
    rank = len(_shape(x))
    if axis == rank - 1:
        return fn(x)
    perm = tuple(d for d in range(rank) if d != axis) + (axis,)
    back = tuple(int(i) for i in np.argsort(perm))
    return op("transpose", fn(op("transpose", x, axes=perm)), axes=back)


# Float inputs (op type -> input positions) that decide shapes and must be known at
# import time, as integer shape inputs must: a runtime that is handed a model taking
# them as graph inputs (ONNX's backend) specializes the model on their values.
FLOAT_SHAPE_INPUTS = {"Resize": (1, 2), "Upsample": (1,)}


@converter("Resize", "Upsample")
def _resize(n, x, roi=None, scales=None, sizes=None):
    shape = _shape(x)
    r = len(shape)
    if n.op_type == "Upsample" or n.opset < 11:   # Upsample and Resize-10: (x, scales), asymmetric, floor
        scales = roi if n.op_type == "Resize" or n.opset >= 9 else np.asarray(n.attr("scales"), np.float32)
        roi = sizes = None
        ctm, rule = "asymmetric", "floor"
    else:
        ctm, rule = n.attr("coordinate_transformation_mode", "half_pixel"), n.attr("nearest_mode", "round_prefer_floor")
    mode = n.attr("mode", "nearest")
    antialias = bool(n.attr("antialias", 0))
    if mode == "nearest":
        if antialias:
            raise OnnxImportError("Resize: antialias applies to the linear and cubic modes, not nearest")
        if rule not in ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil"):
            raise OnnxImportError(f"Resize's nearest_mode {rule!r} is not one ONNX defines")
        coeffs = _nearest_coeffs(rule)
    elif mode in ("linear", "bilinear"):
        coeffs = _linear_coeffs(antialias)
    elif mode in ("cubic", "bicubic"):
        coeffs = _cubic_coeffs(float(n.attr("cubic_coeff_a", -0.75)), antialias)
    else:
        raise OnnxImportError(f"Resize's mode {mode!r} is not nearest, linear or cubic")
    axes = [_axis(a, r, "Resize's axis") for a in n.attr("axes", list(range(r)))]
    sc = None if scales is None or _const(scales, "Resize's scales").size == 0 else \
        [float(v) for v in _const(scales, "Resize's scales").reshape(-1)]
    sz = None if sizes is None or _const(sizes, "Resize's sizes").size == 0 else _ints(sizes, "Resize's sizes")
    if (sc is None) == (sz is None):
        raise OnnxImportError("Resize needs exactly one of scales and sizes")
    given = sc if sc is not None else sz
    if len(given) != len(axes):
        raise OnnxImportError(f"Resize's {'scales' if sc is not None else 'sizes'} has {len(given)} values for "
                              f"{len(axes)} axes")
    rois = [(0.0, 1.0)] * r
    if roi is not None and _const(roi, "Resize's roi").size:
        rv = [float(v) for v in _const(roi, "Resize's roi").reshape(-1)]
        if len(rv) != 2 * len(axes):
            raise OnnxImportError(f"Resize's roi has {len(rv)} values, {2 * len(axes)} expected")
        for i, a in enumerate(axes):
            rois[a] = (rv[i], rv[len(axes) + i])
    if sc is not None:
        if any(s <= 0 for s in sc):
            raise OnnxImportError(f"Resize's scales {sc} must be positive")
        scale = {a: s for a, s in zip(axes, sc)}
        out = {a: int(s * shape[a]) for a, s in scale.items()}
    else:
        scale = {a: s / shape[a] if shape[a] else 1.0 for a, s in zip(axes, sz)}
        out = dict(zip(axes, sz))
        policy = n.attr("keep_aspect_ratio_policy", "stretch")
        if policy != "stretch":
            if policy not in ("not_larger", "not_smaller"):
                raise OnnxImportError(f"Resize's keep_aspect_ratio_policy {policy!r} is not one ONNX defines")
            s = (min if policy == "not_larger" else max)(scale.values())
            scale = {a: s for a in axes}
            out = {a: int(s * shape[a] + 0.5) for a in axes}
    if any(v < 0 for v in out.values()):
        raise OnnxImportError(f"Resize gives a negative output size {list(out.values())}")
    dt = np.dtype(x.dtype)
    y = x if mode == "nearest" else op("cast", x, dtype="float64")
    fill = float(n.attr("extrapolation_value", 0.0))
    for a in axes:
        if math.isclose(scale[a], 1.0) and out[a] == shape[a] and rois[a] == (0.0, 1.0):
            continue
        if shape[a] == 0:
            raise OnnxImportError(f"Resize cannot resize the empty axis {a}")
        m, outside = _resize_matrix(shape[a], out[a], scale[a], ctm, rois[a], coeffs,
                                    bool(n.attr("exclude_outside", 0)))
        if mode == "nearest":
            y = op("gather", y, m.argmax(axis=1).astype(np.int64), axis=a)
        else:
            y = _along(y, a, lambda t: op("matmul", t, np.ascontiguousarray(m.T)))
        if outside is not None and outside.any():
            where = outside.reshape((-1,) + (1,) * (r - 1 - a))
            y = op("where", where, np.asarray(fill, np.dtype(y.dtype)), y)
    if mode != "nearest":   # back to x's dtype as ONNX does: integers rounded and saturated
        if dt.kind in "iu":
            info = np.iinfo(dt)
            y = op("clip", op("round", y), min=float(info.min), max=float(info.max))
        y = op("cast", y, dtype=dt)
    return y


# ----------------------------------------------------------------------------- masks, one-hot, norms, more

@converter("Trilu")
def _trilu(n, x, k=None):
    """The upper (j - i >= k) or lower (j - i <= k) triangle of the last two axes, zeros elsewhere."""
    shape = _shape(x)
    if len(shape) < 2:
        raise OnnxImportError(f"Trilu needs an input of rank >= 2, got {list(shape)}")
    kk = 0 if k is None else int(_const(k, "Trilu's k").reshape(-1)[0])
    d = np.arange(shape[-1])[None, :] - np.arange(shape[-2])[:, None]
    keep = d >= kk if n.flag("upper", 1) else d <= kk
    return op("where", keep, x, np.zeros((), x.dtype))


@converter("Hardmax")
def _hardmax(n, x):
    """1 at the first maximum along axis, 0 elsewhere (before opset 13: of the 2-D view at axis)."""
    shape = _shape(x)
    if n.opset < 13:
        axis = _axis(n.attr("axis", 1), len(shape), "Hardmax's axis")
        flat = op("reshape", x, shape=(int(np.prod(shape[:axis], dtype=np.int64)), -1))
        return op("reshape", _hardmax_last(flat), shape=shape)
    axis = _axis(n.attr("axis", -1), len(shape), "Hardmax's axis")
    if axis == len(shape) - 1:
        return _hardmax_last(x)
    return _along(x, axis, _hardmax_last)


def _hardmax_last(x):
    shape = _shape(x)
    first = op("argmax", x, axis=-1, keepdims=True)
    hot = op("equal", op("cast", first, dtype="int64"), np.arange(shape[-1], dtype=np.int64))
    return op("cast", hot, dtype=x.dtype)


@converter("OneHot")
def _one_hot(n, indices, depth, values):
    """values[1] where the new axis' position equals the index (negative ones count from
    depth), values[0] elsewhere; indices outside [-depth, depth) select nothing."""
    d = _const(depth, "OneHot's depth").reshape(-1)
    if d.size != 1:
        raise OnnxImportError(f"OneHot's depth must hold one value, got {d.size}")
    d = int(d[0])
    if d < 1:
        raise OnnxImportError(f"OneHot's depth must be positive, got {d}")
    if tuple(_shape(values)) != (2,):
        raise OnnxImportError(f"OneHot's values must be [off, on], got shape {list(_shape(values))}")
    rank = len(_shape(indices)) + 1
    axis = _axis(n.attr("axis", -1), rank, "OneHot's axis")
    idx = op("cast", indices, dtype="int64")   # float indices count as their integer part
    idx = op("where", op("less", idx, np.int64(0)), op("add", idx, np.int64(d)), idx)
    iota = np.arange(d, dtype=np.int64).reshape((d,) + (1,) * (rank - 1 - axis))
    hot = op("equal", op("expand_dims", idx, axis=(axis,)), iota)
    off, on = (op("reshape", op("slice", values, begin=(i,), end=(i + 1,), step=(1,)), shape=()) for i in (0, 1))
    return op("where", hot, on, off)


@converter("LpNormalization")
def _lp_normalization(n, x):
    p = n.attr("p", 2)
    if p not in (1, 2):
        raise OnnxImportError(f"LpNormalization's p must be 1 or 2, got {p}")
    axis = n.attr("axis", -1)
    norm = op("sum", op("abs", x), axis=axis, keepdims=True) if p == 1 else \
        op("sqrt", op("sum", op("mul", x, x), axis=axis, keepdims=True))
    norm = op("cast", norm, dtype=x.dtype)
    zero = op("equal", norm, np.zeros((), x.dtype))
    return op("where", zero, np.zeros((), x.dtype), op("div", x, op("where", zero, np.ones((), x.dtype), norm)))


@converter("InstanceNormalization")
def _instance_norm(n, x, scale, bias):
    """Each (sample, channel) normalized over its spatial axes, then scale[c] and bias[c]."""
    shape = _shape(x)
    if len(shape) < 3:
        raise OnnxImportError(f"InstanceNormalization needs an input [N, C, D1, ...], got {list(shape)}")
    axes = tuple(range(2, len(shape)))
    eps = np.asarray(n.attr("epsilon", 1e-5), x.dtype)
    mean = op("cast", op("mean", x, axis=axes, keepdims=True), dtype=x.dtype)
    centered = op("sub", x, mean)
    var = op("cast", op("mean", op("mul", centered, centered), axis=axes, keepdims=True), dtype=x.dtype)
    per_channel = (-1,) + (1,) * (len(shape) - 2)
    y = op("div", centered, op("sqrt", op("add", var, eps)))
    return op("add", op("mul", y, op("reshape", scale, shape=per_channel)), op("reshape", bias, shape=per_channel))


@converter("EyeLike")
def _eye_like(n, x):
    shape = _shape(x)
    if len(shape) != 2:
        raise OnnxImportError(f"EyeLike needs a 2-D input, got {list(shape)}")
    dt = _np_dtype(n.attr("dtype"), "EyeLike's dtype") if n.attr("dtype") is not None else np.dtype(x.dtype)
    return np.eye(shape[0], shape[1], k=int(n.attr("k", 0)), dtype=dt)


@converter("Asinh", "Acosh", "Atanh")
def _inverse_hyperbolic(n, x):
    one = np.ones((), x.dtype)
    if n.op_type == "Atanh":   # atanh x = log((1 + x) / (1 - x)) / 2
        return op("mul", op("log", op("div", op("add", one, x), op("sub", one, x))), np.asarray(0.5, x.dtype))
    # asinh x = log(x + sqrt(x^2 + 1)), acosh x = log(x + sqrt(x^2 - 1))
    sq = op("add" if n.op_type == "Asinh" else "sub", op("mul", x, x), one)
    return op("log", op("add", x, op("sqrt", sq)))


@converter("Col2Im")
def _col2im(n, x, image_shape, block_shape):
    image, block = _ints(image_shape, "Col2Im's image_shape"), _ints(block_shape, "Col2Im's block_shape")
    if len(image) != 2 or len(block) != 2:
        raise OnnxImportError(f"Col2Im with {len(image)} spatial axes: mlc's col2im takes 2 (image_shape {image})")
    attrs = {k: tuple(n.attr(k)) for k in ("strides", "pads", "dilations") if n.attr(k) is not None}
    return op("col2im", x, image_shape=tuple(image), kernel_shape=tuple(block), **attrs)


# ----------------------------------------------------------------------------- quantization
# Integer quantization as ONNX's reference computes it: scale and zero point per tensor,
# per axis or per block; integer sums exact (int32 matmul; convolutions in float64, exact
# for these sums); requantization in float64, rounded half to even and saturated.

_QUANT_RANGE = {np.dtype(np.uint8): (0, 255), np.dtype(np.int8): (-128, 127),
                np.dtype(np.uint16): (0, 65535), np.dtype(np.int16): (-32768, 32767)}


def _quant_param(v, x, axis: int, block: int, what: str):
    """A scale or zero point broadcastable against x: one value, one per index along
    axis, or (block_size > 0) one per block of that many indices along axis."""
    shape, vs = _shape(x), _shape(v)
    if len(vs) == 0 or math.prod(vs) == 1:
        return op("reshape", v, shape=())
    rank = len(shape)
    a = _axis(axis, rank, f"{what}'s axis")
    if not block:
        if len(vs) != 1 or vs[0] != shape[a]:
            raise OnnxImportError(f"{what} of shape {list(vs)} must hold 1 or {shape[a]} values (axis {a} of "
                                  f"{list(shape)})")
        return op("reshape", v, shape=tuple(shape[a] if d == a else 1 for d in range(rank)))
    if len(vs) != rank or vs[a] != -(-shape[a] // block) or any(vs[d] != shape[d] for d in range(rank) if d != a):
        raise OnnxImportError(f"{what} of shape {list(vs)} does not fit blocks of {block} along axis {a} of "
                              f"{list(shape)}")
    idx = np.arange(shape[a], dtype=np.int64) // block   # each index reads its block's value
    return op("gather", v, idx, axis=a)


def _saturate(y, dt):
    lo, hi = _QUANT_RANGE[dt]
    return op("cast", op("clip", op("round", y), min=float(lo), max=float(hi)), dtype=dt)


def _quant_dtype(n, zero_point):
    dt = np.dtype(zero_point.dtype) if zero_point is not None else \
        (_np_dtype(n.attr("output_dtype"), "output_dtype") if n.attr("output_dtype") else np.dtype(np.uint8))
    if dt not in _QUANT_RANGE:
        raise OnnxImportError(f"{n.op_type} to {dt}: mlc quantizes to uint8, int8, uint16 and int16")
    return dt


@converter("QuantizeLinear")
def _quantize_linear(n, x, scale, zero_point=None):
    dt = _quant_dtype(n, zero_point)
    axis, block = n.attr("axis", 1), n.attr("block_size", 0)
    precision = n.attr("precision")
    s = _quant_param(scale, x, axis, block, "QuantizeLinear's y_scale")
    if precision:
        p = _np_dtype(precision, "QuantizeLinear's precision")
        x, s = op("cast", x, dtype=p), op("cast", s, dtype=p)
    q = op("cast", op("round", op("div", x, s)), dtype="int32")
    if zero_point is not None:
        q = op("add", q, op("cast", _quant_param(zero_point, x, axis, block, "QuantizeLinear's y_zero_point"),
                            dtype="int32"))
    return _saturate(q, dt)


@converter("DequantizeLinear")
def _dequantize_linear(n, x, scale, zero_point=None):
    if np.dtype(x.dtype) not in _QUANT_RANGE and np.dtype(x.dtype) != np.int32:
        raise OnnxImportError(f"DequantizeLinear of {np.dtype(x.dtype)}: mlc dequantizes integer types")
    axis, block = n.attr("axis", 1), n.attr("block_size", 0)
    d = op("cast", x, dtype="float32")
    if zero_point is not None:
        d = op("sub", d, op("cast", _quant_param(zero_point, x, axis, block, "DequantizeLinear's x_zero_point"),
                            dtype="float32"))
    y = op("mul", d, _quant_param(scale, x, axis, block, "DequantizeLinear's x_scale"))
    out = _np_dtype(n.attr("output_dtype"), "output_dtype") if n.attr("output_dtype") else np.dtype(scale.dtype)
    return op("cast", y, dtype=out)


def _centered(v, zero_point, shape_for_zp=None):
    """v - zero_point in int32; shape_for_zp reshapes a per-row/per-channel zero point."""
    v = op("cast", v, dtype="int32")
    if zero_point is None:
        return v
    zp = op("cast", zero_point, dtype="int32")
    if shape_for_zp is not None and math.prod(_shape(zero_point)) > 1:
        zp = op("reshape", zp, shape=shape_for_zp)
    return op("sub", v, zp)


@converter("MatMulInteger")
def _matmul_integer(n, a, b, a_zero_point=None, b_zero_point=None):
    """(a - a_zero_point) @ (b - b_zero_point) in int32; a's zero point may be per row, b's per column."""
    return op("matmul", _centered(a, a_zero_point, (-1, 1)), _centered(b, b_zero_point))


def _conv_integer(n, x, w, x_zero_point, w_zero_point, bias=None):
    xc = _centered(x, x_zero_point)
    wc = _centered(w, w_zero_point, (-1,) + (1,) * (len(_shape(w)) - 1))
    attrs = _spatial_attrs(n, ("strides", "dilations", "pads", "group", "auto_pad", "kernel_shape"))
    y = op("conv", op("cast", xc, dtype="float64"), op("cast", wc, dtype="float64"), **attrs)
    return _add_channel_bias(y, None if bias is None else op("cast", bias, dtype="float64"))


@converter("ConvInteger")
def _conv_integer_op(n, x, w, x_zero_point=None, w_zero_point=None):
    return op("cast", _conv_integer(n, x, w, x_zero_point, w_zero_point), dtype="int32")


def _requantize(acc, factor, y_zero_point, like):
    """acc * factor (float64) + y_zero_point, rounded half to even and saturated to the zero point's type."""
    y = op("mul", op("cast", acc, dtype="float64"), op("cast", factor, dtype="float64"))
    dt = np.dtype(y_zero_point.dtype) if y_zero_point is not None else np.dtype(like.dtype)
    if y_zero_point is not None:
        y = op("add", y, op("cast", y_zero_point, dtype="float64"))
    if dt not in _QUANT_RANGE:
        raise OnnxImportError(f"requantizing to {dt}: mlc quantizes to uint8, int8, uint16 and int16")
    return _saturate(y, dt)


@converter("QLinearMatMul")
def _qlinear_matmul(n, a, a_scale, a_zero_point, b, b_scale, b_zero_point, y_scale, y_zero_point=None):
    acc = op("matmul", _centered(a, a_zero_point), _centered(b, b_zero_point))
    factor = op("div", op("mul", a_scale, b_scale), y_scale)   # in the scales' type, as the reference does
    return _requantize(acc, factor, y_zero_point, a)


@converter("QLinearConv")
def _qlinear_conv(n, x, x_scale, x_zero_point, w, w_scale, w_zero_point, y_scale, y_zero_point=None, bias=None):
    acc = _conv_integer(n, x, w, x_zero_point, w_zero_point, bias)
    ws = w_scale if math.prod(_shape(w_scale)) == 1 else \
        op("reshape", w_scale, shape=(-1,) + (1,) * (len(_shape(x)) - 2))
    factor = op("div", op("mul", x_scale, ws), y_scale)
    return _requantize(acc, factor, y_zero_point, x)


# ----------------------------------------------------------------------------- GatherND, ScatterElements, ScatterND

def _wrap_negative(idx, sizes):
    """Indices below 0 count from the end (sizes broadcast against idx)."""
    idx = op("cast", idx, dtype="int64")
    return op("where", op("less", idx, np.int64(0)), op("add", idx, sizes), idx)


def _row_index(n, data_shape, indices, batch_dims: int = 0):
    """ND indices [..., k] into data's axes batch_dims .. batch_dims+k, as one index into
    data viewed as [B * P, R] (B, P, R: the products of the batch, indexed and rest axes)."""
    ishape = _shape(indices)
    k = ishape[-1]
    if k > len(data_shape) - batch_dims:
        raise OnnxImportError(f"{n.op_type}: indices of depth {k} index data {list(data_shape)} past its rank")
    dims = np.asarray(data_shape[batch_dims:batch_dims + k], np.int64)
    idx = _wrap_negative(indices, dims)
    strides = np.asarray([math.prod(data_shape[batch_dims + i + 1:batch_dims + k]) for i in range(k)], np.int64)
    lin = op("sum", op("mul", idx, strides), axis=-1) if k else np.zeros(ishape[:-1], np.int64)
    if batch_dims:
        batch = np.arange(math.prod(data_shape[:batch_dims]), dtype=np.int64).reshape(
            data_shape[:batch_dims] + (1,) * (len(ishape) - 1 - batch_dims)) * math.prod(dims.tolist())
        lin = op("add", lin, batch)
    return lin, k


@converter("GatherND")
def _gather_nd(n, data, indices):
    b = int(n.attr("batch_dims", 0))
    shape, ishape = _shape(data), _shape(indices)
    if ishape[:b] != shape[:b]:
        raise OnnxImportError(f"GatherND: the {b} batch axes of indices {list(ishape)} and data {list(shape)} differ")
    lin, k = _row_index(n, shape, indices, b)
    rest = shape[b + k:]
    rows = op("reshape", data, shape=(-1, math.prod(rest)))
    return op("reshape", op("gather", rows, lin, axis=0), shape=ishape[:-1] + rest)


_SCATTER_IDENTITY = {"mul": 1, "max": -np.inf, "min": np.inf}


def _identity_value(reduction, dt):
    v = _SCATTER_IDENTITY[reduction]
    if dt.kind in "iu" and not np.isfinite(v):
        v = np.iinfo(dt).min if v < 0 else np.iinfo(dt).max
    return np.asarray(v, dt)


def _scatter_combine(reduction, data, hits, mask):
    """data where nothing lands, else data combined (mul/max/min) with what lands there."""
    fn = {"mul": "mul", "max": "maximum", "min": "minimum"}[reduction]
    return op("where", mask, op(fn, data, hits), data)


def _scatter_rows(n, rows, lin, upd, reduction):
    """Scatter update rows upd [M, R] into rows [P, R] at row indices lin [M]."""
    dt = np.dtype(rows.dtype)
    if reduction == "add":
        return op("scatter_add", rows, lin, upd, axis=0)
    p = _shape(rows)[0]
    if reduction == "none":   # the rows that are written, and what is written there
        written = op("greater", op("scatter_add", np.zeros((p,), np.int32), lin,
                                   np.ones(_shape(lin), np.int32), axis=0), np.int32(0))
        values = op("scatter_add", np.zeros(_shape(rows), dt), lin, upd, axis=0)
        return op("where", op("reshape", written, shape=(p, 1)), values, rows)
    # mul/max/min: each row reduces the updates aimed at it (a dense [M, P] match)
    match = op("equal", op("reshape", lin, shape=(-1, 1)), np.arange(p, dtype=np.int64))
    ident = _identity_value(reduction, dt)
    picked = op("where", op("expand_dims", match, axis=(2,)), op("expand_dims", upd, axis=(1,)), ident)
    hits = op({"mul": "prod", "max": "max", "min": "min"}[reduction], picked, axis=0)
    hits = op("cast", hits, dtype=dt) if np.dtype(hits.dtype) != dt else hits
    mask = op("greater", op("sum", op("cast", match, dtype="int32"), axis=0), np.int32(0))
    return _scatter_combine(reduction, rows, hits, op("reshape", mask, shape=(p, 1)))


def _reduction(n):
    r = n.attr("reduction", "none")
    if r not in ("none", "add", "mul", "max", "min"):
        raise OnnxImportError(f"{n.op_type}'s reduction must be none, add, mul, max or min, got {r!r}")
    return r


@converter("ScatterND")
def _scatter_nd(n, data, indices, updates):
    shape = _shape(data)
    lin, k = _row_index(n, shape, indices)
    rest = shape[k:]
    if _shape(updates) != _shape(indices)[:-1] + rest:
        raise OnnxImportError(f"ScatterND: updates {list(_shape(updates))} must have shape "
                              f"{list(_shape(indices)[:-1] + rest)}")
    r = math.prod(rest)
    out = _scatter_rows(n, op("reshape", data, shape=(-1, r)), op("reshape", lin, shape=(-1,)),
                        op("reshape", updates, shape=(-1, r)), _reduction(n))
    return op("reshape", out, shape=shape)


@converter("ScatterElements", "Scatter")
def _scatter_elements(n, data, indices, updates):
    """Each update goes to its own position with the axis coordinate replaced by its index."""
    shape, ishape = _shape(data), _shape(indices)
    rank = len(shape)
    axis = _axis(n.attr("axis", 0), rank, f"{n.op_type}'s axis")
    if len(ishape) != rank or _shape(updates) != ishape or any(i > d for i, d in zip(ishape, shape)):
        raise OnnxImportError(f"{n.op_type}: indices {list(ishape)} and updates {list(_shape(updates))} must have "
                              f"one shape, of data's rank and within data {list(shape)}")
    reduction = _reduction(n)
    idx = _wrap_negative(indices, np.int64(shape[axis]))
    dt = np.dtype(data.dtype)
    if reduction == "add":
        return op("scatter_elements_add", data, idx, updates, axis=axis)
    if reduction == "none":
        written = op("greater", op("scatter_elements_add", np.zeros(shape, np.int32), idx,
                                   np.ones(ishape, np.int32), axis=axis), np.int32(0))
        values = op("scatter_elements_add", np.zeros(shape, dt), idx, updates, axis=axis)
        return op("where", written, values, data)
    # mul/max/min: a new axis after `axis` spans data's extent there; each update matches one entry
    d = shape[axis]
    iota = np.arange(d, dtype=np.int64).reshape((d,) + (1,) * (rank - axis - 1))
    match = op("equal", op("expand_dims", idx, axis=(axis + 1,)), iota)
    ident = _identity_value(reduction, dt)
    picked = op("where", match, op("expand_dims", updates, axis=(axis + 1,)), ident)
    hits = op({"mul": "prod", "max": "max", "min": "min"}[reduction], picked, axis=axis)
    hits = op("cast", hits, dtype=dt) if np.dtype(hits.dtype) != dt else hits
    mask = op("greater", op("sum", op("cast", match, dtype="int32"), axis=axis), np.int32(0))
    # hits and mask cover indices' extent on the other axes: widen them to data's
    widen = tuple(0 for _ in range(rank)) + tuple(0 if a == axis else s - i for a, (i, s) in
                                                   enumerate(zip(ishape, shape)))
    if any(widen):
        hits = op("pad", hits, pads=widen, value=ident.item())
        mask = op("pad", mask, pads=widen, value=False)
    return _scatter_combine(reduction, data, hits, mask)


# ----------------------------------------------------------------------------- BatchNormalization in training mode

def _batch_norm_any(n, x, scale, bias, mean, var, _inference=CONVERTERS["BatchNormalization"]):
    """training_mode=1 (opset 14 and newer): normalized with the batch's own mean and
    (population) variance over every axis but 1; the optional outputs are the running
    statistics, momentum * given + (1 - momentum) * the batch's."""
    if n.opset < 14 or not n.flag("training_mode", 0):
        return _inference(n, x, scale, bias, mean, var)
    rank = len(_shape(x))
    axes = (0,) + tuple(range(2, rank))
    dt = np.dtype(x.dtype)
    m = op("cast", op("mean", x, axis=axes), dtype=dt)
    centered = op("sub", x, op("reshape", m, shape=(-1,) + (1,) * (rank - 2)))
    v = op("cast", op("mean", op("mul", centered, centered), axis=axes), dtype=dt)
    y = op("batch_norm", x, scale, bias, m, v, epsilon=float(n.attr("epsilon", 1e-5)))
    momentum = float(n.attr("momentum", 0.9))

    def running(given, batch):
        return op("add", op("mul", given, np.asarray(momentum, np.dtype(given.dtype))),
                  op("mul", op("cast", batch, dtype=given.dtype), np.asarray(1 - momentum, np.dtype(given.dtype))))
    return y, running(mean, m), running(var, v)


CONVERTERS["BatchNormalization"] = _batch_norm_any


# ----------------------------------------------------------------------------- LpPool

@converter("LpPool", "GlobalLpPool")
def _lp_pool(n, x):
    """(the sum of |x|^p over each window)^(1/p)."""
    p = float(n.attr("p", 2))
    rank = len(_shape(x))
    xp = op("pow", op("abs", x), np.asarray(p, x.dtype))
    if n.op_type == "GlobalLpPool":
        kernel = _shape(x)[2:]
        avg = op("global_avg_pool", xp)
    else:
        attrs = _spatial_attrs(n, ("kernel_shape", "strides", "pads", "dilations", "ceil_mode", "auto_pad"))
        kernel = attrs.get("kernel_shape") or ()
        if len(kernel) != rank - 2:
            raise OnnxImportError(f"LpPool's kernel_shape {list(kernel)} does not match the input's "
                                  f"{rank - 2} spatial axes")
        # the sum over the window, padding counting as 0: the average over the whole window
        avg = op("avg_pool", xp, count_include_pad=True, **attrs)
    total = op("mul", avg, np.asarray(math.prod(kernel), np.dtype(avg.dtype)))
    return op("cast", op("pow", total, np.asarray(1.0 / p, np.dtype(avg.dtype))), dtype=x.dtype)


# ----------------------------------------------------------------------------- GridSample

def _reflect(x, lo: float, hi: float):
    """x folded back into [lo, hi] by reflecting at the borders as often as needed."""
    span = np.asarray(hi - lo, np.dtype(x.dtype))

    def fold(dx, near, far):   # dx >= 0 past the `near` border
        k = op("floor", op("div", dx, span))
        r = op("sub", dx, op("mul", k, span))
        even = op("equal", op("sub", k, op("mul", op("floor", op("mul", k, 0.5)), 2.0)), 0.0)
        return op("where", even, op("add" if near == lo else "sub", np.asarray(near, x.dtype), r),
                  op("sub" if near == lo else "add", np.asarray(far, x.dtype), r))
    below = fold(op("sub", np.asarray(lo, x.dtype), x), lo, hi)
    above = fold(op("sub", x, np.asarray(hi, x.dtype)), hi, lo)
    return op("where", op("less", x, np.asarray(lo, x.dtype)), below,
              op("where", op("greater", x, np.asarray(hi, x.dtype)), above, x))


def _cubic_weights(t):
    a = -0.75   # Keys' cubic convolution, as ONNX's GridSample uses

    def near(d):   # |d| <= 1
        return op("add", op("mul", op("mul", op("sub", op("mul", d, a + 2), a + 3), d), d), 1.0)

    def far(d):    # 1 < |d| < 2
        return op("sub", op("mul", op("add", op("mul", op("sub", op("mul", d, a), 5 * a), d), 8 * a), d), 4 * a)
    one = np.asarray(1.0, np.dtype(t.dtype))
    return [far(op("add", t, one)), near(t), near(op("sub", one, t)), far(op("sub", np.asarray(2.0, t.dtype), t))]


@converter("GridSample")
def _grid_sample(n, x, grid):
    """Samples of x [N, C, *D] at grid [N, *out, k] (normalized coordinates, last axis
    first): nearest, linear or cubic, with zeros / border / reflection padding. Every
    tap is a gather_elements of x flattened over its spatial axes."""
    mode = {"bilinear": "linear", "bicubic": "cubic"}.get(n.attr("mode", "linear"), n.attr("mode", "linear"))
    pad_mode = n.attr("padding_mode", "zeros")
    if mode not in ("nearest", "linear", "cubic") or pad_mode not in ("zeros", "border", "reflection"):
        raise OnnxImportError(f"GridSample's mode {mode!r} / padding_mode {pad_mode!r} is not one ONNX defines")
    align = n.flag("align_corners", 0)
    xs, gs = _shape(x), _shape(grid)
    nd = len(xs) - 2
    if gs[0] != xs[0] or gs[-1] != nd or len(gs) != nd + 2:
        raise OnnxImportError(f"GridSample: grid {list(gs)} must be [N, *out, {nd}] for input {list(xs)}")
    dims, out = xs[2:], gs[1:-1]
    p = math.prod(out)
    gdt = np.dtype(grid.dtype)
    taps = []   # per spatial axis: [(index, weight)], index and weight [N, P]
    for i, d in enumerate(dims):
        g = op("reshape", op("slice", grid, begin=(0,) * (nd + 1) + (nd - 1 - i,), end=(None,) * (nd + 1) + (nd - i,),
                             step=(1,) * (nd + 2)), shape=(xs[0], p))
        if align:   # -1 and 1 are the centers of the corner pixels
            c = op("mul", op("add", g, 1.0), (d - 1) / 2)
        else:       # -1 and 1 are the outer edges of the corner pixels
            c = op("div", op("sub", op("mul", op("add", g, 1.0), float(d)), 1.0), 2.0)
        c = op("cast", c, dtype=gdt)
        if mode == "nearest":
            c = op("round", c)
        lo, hi = (0.0, d - 1.0) if align else (-0.5, d - 0.5)
        if pad_mode == "border":
            outside = op("where", op("less", c, lo), True, op("greater", c, hi))
            c = op("where", outside, op("clip", c, min=0.0, max=d - 1.0), c)
        elif pad_mode == "reflection":
            c = _reflect(c, lo, hi)
        if mode == "nearest":
            idx = [op("cast", c, dtype="int64")]
            w = [None]
        else:
            base = op("floor", c)
            t = op("sub", c, base)
            base = op("cast", base, dtype="int64")
            offsets = (0, 1) if mode == "linear" else (-1, 0, 1, 2)
            idx = [op("add", base, np.int64(o)) for o in offsets]
            w = [op("sub", 1.0, t), t] if mode == "linear" else _cubic_weights(t)
        axis_taps = []
        for k, wk in zip(idx, w):
            valid = None
            if pad_mode == "zeros":
                valid = op("where", op("less", k, np.int64(0)), False, op("less", k, np.int64(d)))
                k = op("clip", k, min=0, max=d - 1)
            elif pad_mode == "border":
                k = op("clip", k, min=0, max=d - 1)
            else:
                k = op("cast", _reflect(op("cast", k, dtype=gdt), lo, hi), dtype="int64")
                k = op("clip", k, min=0, max=d - 1)
            if valid is not None:
                zero = np.zeros((), gdt)
                wk = op("where", valid, np.ones((), gdt) if wk is None else wk, zero)
            axis_taps.append((k, wk))
        taps.append(axis_taps)
    flat = op("reshape", x, shape=(xs[0], xs[1], math.prod(dims)))
    strides = [math.prod(dims[i + 1:]) for i in range(nd)]
    total = None
    for combo in itertools.product(*taps):
        index, weight = None, None
        for (k, wk), s in zip(combo, strides):
            term = op("mul", k, np.int64(s)) if s != 1 else k
            index = term if index is None else op("add", index, term)
            if wk is not None:
                weight = wk if weight is None else op("mul", weight, wk)
        index = op("broadcast_to", op("reshape", index, shape=(xs[0], 1, p)), shape=(xs[0], xs[1], p))
        v = op("gather_elements", flat, index, axis=2)
        if weight is not None:
            v = op("mul", v, op("cast", op("reshape", weight, shape=(xs[0], 1, p)), dtype=x.dtype))
        total = v if total is None else op("add", total, v)
    return op("reshape", total, shape=(xs[0], xs[1]) + tuple(out))


# ----------------------------------------------------------------------------- DFT, CumProd, ReverseSequence, MaxUnpool

@converter("DFT")
def _dft(n, x, dft_length=None, axis=None):
    """The discrete Fourier transform along one axis of a real ([..., 1]) or complex
    ([..., 2]) signal as matmuls with cos/sin matrices computed at import (float64,
    rounded to x's dtype); onesided keeps the first n//2 + 1 frequencies, and an
    inverse of a onesided spectrum is the real signal whose spectrum it is."""
    shape = _shape(x)
    rank = len(shape)
    if shape[-1] not in (1, 2):
        raise OnnxImportError(f"DFT: the last axis holds the real and imaginary parts (1 or 2), got {list(shape)}")
    if n.opset >= 20:
        ax = -2 if axis is None else int(_const(axis, "DFT's axis").reshape(-1)[0])
    else:
        ax = n.attr("axis", 1)
    ax = _axis(ax, rank, "DFT's axis")
    if ax == rank - 1:
        raise OnnxImportError("DFT's axis cannot be the last axis (real and imaginary parts)")
    inverse, onesided = n.flag("inverse", 0), n.flag("onesided", 0)
    m = shape[ax]
    length = int(_const(dft_length, "DFT's dft_length").reshape(-1)[0]) if dft_length is not None else \
        (2 * (m - 1) if inverse and onesided else m)
    if length < 1:
        raise OnnxImportError(f"DFT's length must be positive, got {length}")
    dt = np.dtype(x.dtype)
    parts = [op("reshape", op("slice", x, begin=(0,) * (rank - 1) + (i,), end=(None,) * (rank - 1) + (i + 1,),
                              step=(1,) * rank), shape=shape[:-1]) for i in range(shape[-1])]
    a, b = parts[0], (parts[1] if len(parts) > 1 else None)
    if inverse and onesided:   # bins k < n//2 + 1 of a Hermitian spectrum -> the real signal
        k = np.arange(m)[:, None]
        t = np.arange(length)[None, :]
        theta = 2 * np.pi * ((k * t) % length) / length
        w = np.where((k == 0) | (2 * k == length), 1.0, 2.0) * (k <= length // 2) / length
        cos, sin = w * np.cos(theta), w * np.sin(theta)
        re = _along(a, ax, lambda v: op("matmul", v, cos.astype(dt)))
        if b is not None:
            re = op("sub", re, _along(b, ax, lambda v: op("matmul", v, sin.astype(dt))))
        return op("expand_dims", re, axis=(rank - 1,))
    bins = length // 2 + 1 if onesided and not inverse else length
    t = np.arange(m)[:, None]
    k = np.arange(bins)[None, :]
    theta = 2 * np.pi * ((t * k) % length) / length
    keep = (t < length) / (length if inverse else 1)   # samples past the length are cut
    cos, sin = (keep * np.cos(theta)).astype(dt), (keep * np.sin(theta) * (1 if inverse else -1)).astype(dt)

    def mm(v, mat):
        return _along(v, ax, lambda u: op("matmul", u, mat))
    # (a + ib)(cos + i sin): sin carries the transform's sign
    re, im = mm(a, cos), mm(a, sin)
    if b is not None:
        re, im = op("sub", re, mm(b, sin)), op("add", im, mm(b, cos))
    return op("concatenate", [op("expand_dims", re, axis=(rank - 1,)), op("expand_dims", im, axis=(rank - 1,))],
              axis=-1)


@converter("CumProd")
def _cumprod(n, x, axis):
    """Products of the prefixes along axis (exclusive: without the entry itself; reverse:
    of the suffixes), as a masked product over a second copy of the axis: O(n^2) along it,
    as mlc's cumsum is."""
    rank = len(_shape(x))
    a = _axis(int(_const(axis, "CumProd's axis").reshape(-1)[0]), rank, "CumProd's axis")
    m = _shape(x)[a]
    i, j = np.arange(m)[:, None], np.arange(m)[None, :]
    exclusive, reverse = n.flag("exclusive", 0), n.flag("reverse", 0)
    take = {(0, 0): j <= i, (1, 0): j < i, (0, 1): j >= i, (1, 1): j > i}[(int(exclusive), int(reverse))]

    def scan(v):   # v [..., m] -> [..., m]
        picked = op("where", take, op("expand_dims", v, axis=(len(_shape(v)) - 1,)), np.ones((), v.dtype))
        out = op("prod", picked, axis=-1)
        return op("cast", out, dtype=v.dtype) if np.dtype(out.dtype) != np.dtype(v.dtype) else out
    return _along(x, a, scan)


@converter("ReverseSequence")
def _reverse_sequence(n, x, lens):
    """For each batch entry b, its first lens[b] steps along time_axis reversed."""
    shape = _shape(x)
    rank = len(shape)
    t_ax = _axis(n.attr("time_axis", 0), rank, "ReverseSequence's time_axis")
    b_ax = _axis(n.attr("batch_axis", 1), rank, "ReverseSequence's batch_axis")
    if {t_ax, b_ax} != {0, 1}:
        raise OnnxImportError("ReverseSequence's time_axis and batch_axis must be 0 and 1")
    t = np.arange(shape[t_ax], dtype=np.int64).reshape((-1, 1) if t_ax == 0 else (1, -1))
    length = op("reshape", op("cast", lens, dtype="int64"), shape=(1, -1) if t_ax == 0 else (-1, 1))
    idx = op("where", op("less", t, length), op("sub", op("sub", length, np.int64(1)), t), t)
    idx = op("broadcast_to", op("reshape", idx, shape=shape[:2] + (1,) * (rank - 2)), shape=shape)
    return op("gather_elements", x, idx, axis=t_ax)


@converter("MaxUnpool")
def _max_unpool(n, x, indices, output_shape=None):
    """Each value placed at its flat index (as MaxPool's indices output gives it) in a
    zero tensor of the unpooled shape (padded with zeros at the end to output_shape)."""
    shape = _shape(x)
    kernel = list(n.attr("kernel_shape"))
    nd = len(kernel)
    strides = list(n.attr("strides") or [1] * nd)
    pads = list(n.attr("pads") or [0] * (2 * nd))
    unpooled = shape[:2] + tuple((shape[2 + i] - 1) * strides[i] - pads[i] - pads[nd + i] + kernel[i]
                                 for i in range(nd))
    out = tuple(_ints(output_shape, "MaxUnpool's output_shape")) if output_shape is not None else unpooled
    if len(out) != len(shape) or any(o < u for o, u in zip(out, unpooled)):
        raise OnnxImportError(f"MaxUnpool's output shape {list(out)} is smaller than the unpooled shape "
                              f"{list(unpooled)}")
    flat = op("scatter_add", np.zeros((math.prod(unpooled),), x.dtype), op("reshape", indices, shape=(-1,)),
              op("reshape", x, shape=(-1,)), axis=0)
    y = op("reshape", flat, shape=unpooled)
    if out != unpooled:   # a larger output_shape: zeros after the unpooled values, as ONNX's reference does
        y = op("pad", y, pads=(0,) * len(out) + tuple(o - u for o, u in zip(out, unpooled)))
    return y


@converter("AffineGrid")
def _affine_grid(n, theta, size):
    """The sampling grid [N, *dims, k] (GridSample's input) of the affine maps theta
    [N, k, k+1]: each output position's normalized coordinates (x along the last axis
    first, then 1) times theta."""
    dims = _ints(size, "AffineGrid's size")[2:]
    k = len(dims)
    if k not in (2, 3) or _shape(theta)[1:] != (k, k + 1):
        raise OnnxImportError(f"AffineGrid: theta {list(_shape(theta))} must be [N, {k}, {k + 1}] for size {dims}")
    align = n.flag("align_corners", 0)
    axes = [np.linspace(-1.0, 1.0, d) if align else (2 * np.arange(d) + 1) / d - 1 for d in dims]
    mesh = np.meshgrid(*axes, indexing="ij")   # mesh[i] varies along spatial axis i
    base = np.stack([m.reshape(-1) for m in reversed(mesh)] + [np.ones(math.prod(dims))], axis=1)
    grid = op("matmul", base.astype(np.dtype(theta.dtype)), op("transpose", theta, axes=(0, 2, 1)))
    return op("reshape", grid, shape=(_shape(theta)[0], *dims, k))


# ----------------------------------------------------------------------------- opsets 1 to 6
# What older versions of ops spell differently, adapted before the current converter
# runs: binary ops broadcast only when asked (broadcast=1), aligning the second
# operand at ``axis``; AveragePool counts the padding; PRelu's one-axis slope is per
# channel (axis 1); Concat's axis defaults to 1; Cast names its target type; Pad's pads
# are "paddings"; Tile-1 repeats along one axis.

_LEGACY_BROADCAST = ("Add", "Sub", "Mul", "Div", "Pow", "And", "Or", "Xor", "Equal", "Less", "Greater", "Gemm")


def _legacy(names, adapt):
    for name in names:
        def convert(n, *args, _current=CONVERTERS[name]):
            if n.opset < 7:
                args = adapt(n, list(args))
            return _current(n, *args)
        CONVERTERS[name] = convert


def _legacy_broadcast(n, args):
    if n.op_type == "Gemm":   # C broadcasts when broadcast=1, numpy's way
        return args
    a, b = args[0], args[1]
    ra, rb = len(_shape(a)), len(_shape(b))
    if not n.flag("broadcast", 0):
        if _shape(a) != _shape(b):
            raise OnnxImportError(f"{n.op_type} (opset {n.opset}) without broadcast=1 needs operands of one shape, "
                                  f"got {list(_shape(a))} and {list(_shape(b))}")
        return args
    axis = n.attr("axis")
    if axis is not None and rb:   # b's dims line up with a's from axis on
        axis = _axis(axis, ra, f"{n.op_type}'s axis")
        if axis + rb > ra:
            raise OnnxImportError(f"{n.op_type}: operand {list(_shape(b))} does not fit {list(_shape(a))} "
                                  f"at axis {axis}")
        args[1] = op("reshape", b, shape=_shape(b) + (1,) * (ra - axis - rb))
    return args


def _legacy_concat(n, args):
    n.attrs.setdefault("axis", 1)
    return args


def _legacy_cast(n, args):
    to = n.attrs.get("to")
    if isinstance(to, str):   # Cast-1 names the type: "FLOAT"
        from onnx import TensorProto
        try:
            n.attrs["to"] = TensorProto.DataType.Value(to.upper())
        except ValueError:
            raise OnnxImportError(f"Cast's 'to' attribute {to!r} names no ONNX element type") from None
    return args


def _legacy_pad(n, args):
    if "paddings" in n.attrs:
        n.attrs["pads"] = n.attrs.pop("paddings")
    return args


def _legacy_tile(n, args):
    if len(args) == 3:   # Tile-1: (input, tiles, axis): repeat `tiles` times along `axis`
        x, tiles, axis = args
        reps = [1] * len(_shape(x))
        reps[_axis(_ints(axis, "Tile's axis")[0], len(reps), "Tile's axis")] = _ints(tiles, "Tile's tiles")[0]
        return [x, np.asarray(reps, np.int64)]
    return args


def _legacy_prelu(n, args):
    x, slope = args
    rank = len(_shape(x))
    if rank > 2 and len(_shape(slope)) == 1 and _shape(slope)[0] == _shape(x)[1] > 1:   # one slope per channel
        args[1] = op("reshape", slope, shape=(-1,) + (1,) * (rank - 2))
    return args


def _legacy_avg_pool(n, args):
    n.attrs.setdefault("count_include_pad", 1)   # before count_include_pad, padding counted (ONNX's reference)
    return args


_legacy(_LEGACY_BROADCAST, _legacy_broadcast)
_legacy(("AveragePool",), _legacy_avg_pool)
_legacy(("PRelu",), _legacy_prelu)
_legacy(("Concat",), _legacy_concat)
_legacy(("Cast",), _legacy_cast)
_legacy(("Pad",), _legacy_pad)
_legacy(("Tile",), _legacy_tile)


# ----------------------------------------------------------------------------- sequences
# A sequence whose length and positions are known at import time is a Python list of
# values; each op on it builds a new list (ONNX sequences are values). A converter
# returns it wrapped in a 1-tuple: a bare list would read as the node's outputs.

def _seq(v, what: str) -> list:
    if not isinstance(v, list):
        raise OnnxImportError(f"{what} must be a sequence")
    return v


def _seq_position(seq: list, pos, what: str, insert: bool = False) -> int:
    """A position in [-len, len) (or [-len, len] to insert), made non-negative; absent: the end."""
    if pos is None:
        return len(seq) if insert else len(seq) - 1
    p, k = int(_const(pos, what).reshape(-1)[0]), len(seq)
    if not -k <= p < k + insert:
        raise OnnxImportError(f"{what} {p} is out of range for a sequence of {k} tensors")
    return p + k if p < 0 else p


@converter("SequenceConstruct")
def _sequence_construct(n, *xs):
    return (list(xs),)


@converter("SequenceEmpty")
def _sequence_empty(n):
    return ([],)


@converter("SequenceLength")
def _sequence_length(n, seq):
    return np.array(len(_seq(seq, "SequenceLength's input")), np.int64)


@converter("SequenceAt")
def _sequence_at(n, seq, pos):
    s = _seq(seq, "SequenceAt's input")
    if not s:
        raise OnnxImportError("SequenceAt of an empty sequence")
    return s[_seq_position(s, pos, "SequenceAt's position")]


@converter("SequenceInsert")
def _sequence_insert(n, seq, t, pos=None):
    s = list(_seq(seq, "SequenceInsert's input"))
    s.insert(_seq_position(s, pos, "SequenceInsert's position", insert=True), t)
    return (s,)


@converter("SequenceErase")
def _sequence_erase(n, seq, pos=None):
    s = list(_seq(seq, "SequenceErase's input"))
    if not s:
        raise OnnxImportError("SequenceErase of an empty sequence")
    del s[_seq_position(s, pos, "SequenceErase's position")]
    return (s,)


@converter("ConcatFromSequence")
def _concat_from_sequence(n, seq):
    s = _seq(seq, "ConcatFromSequence's input")
    if not s:
        raise OnnxImportError("ConcatFromSequence of an empty sequence")
    rank = len(_shape(s[0]))
    if n.flag("new_axis", 0):   # stacked along a new axis, which may also be the last
        axis = _axis(n.attr("axis"), rank + 1, "ConcatFromSequence's axis")
        s = [op("expand_dims", x, axis=(axis,)) for x in s]
    else:
        axis = _axis(n.attr("axis"), rank, "ConcatFromSequence's axis")
    return op("concatenate", list(s), axis=axis)


@converter("SplitToSequence")
def _split_to_sequence(n, x, split=None):
    shape = _shape(x)
    axis = _axis(n.attr("axis", 0), len(shape), "SplitToSequence's axis")
    dim = shape[axis]
    if split is None:   # pieces of 1, the axis kept or dropped
        parts = [op("slice", x, begin=tuple(k if a == axis else 0 for a in range(len(shape))),
                    end=tuple(k + 1 if a == axis else None for a in range(len(shape))),
                    step=(1,) * len(shape)) for k in range(dim)]
        return ([op("squeeze", p, axis=(axis,)) for p in parts] if not n.flag("keepdims", 1) else parts,)
    sp = _const(split, "SplitToSequence's split")
    if sp.ndim == 0:   # pieces of that length, the last one shorter
        chunk = int(sp)
        if chunk <= 0:
            raise OnnxImportError(f"SplitToSequence's split must be positive, got {chunk}")
        sizes = [chunk] * (dim // chunk) + ([dim % chunk] if dim % chunk else [])
    else:
        sizes = [int(v) for v in sp.reshape(-1)]
        if any(v < 0 for v in sizes) or sum(sizes) != dim:
            raise OnnxImportError(f"SplitToSequence's split {sizes} must be >= 0 and add up to {dim}")
    outs = op("split", x, axis=axis, sizes=tuple(sizes))
    return (list(outs) if isinstance(outs, tuple) else [outs],)


# ----------------------------------------------------------------------------- ops ONNX defines as functions
# ONNX defines some ops as a function of other ops (a body in the op's schema, or one
# built for the node's attributes and input types). Those listed here import as their
# body, each body node through its own converter: mlc computes exactly what ONNX
# specifies, with no semantics of the importer's own.

def _function_body(n, args):
    from onnx import FunctionProto, TypeProto, defs, helper
    schema = defs.get_schema(n.op_type, n.opset, "")
    plain = [v for v in schema.function_opset_versions if v <= n.opset]
    built = [v for v in schema.context_dependent_function_opset_versions if v <= n.opset]
    node = type(n.proto)()
    node.CopyFrom(n.proto)
    given = {a.name for a in node.attribute}
    node.attribute.extend(spec.default_value for k, spec in schema.attributes.items()
                          if k not in given and spec.default_value.name)
    f = FunctionProto()
    if not built and not plain:
        raise OnnxImportError(f"{n.op_type} has no ONNX function body at opset {n.opset}")
    try:
        if built and (not plain or max(built) >= max(plain)):
            types = [helper.make_tensor_type_proto(helper.np_dtype_to_tensor_dtype(np.dtype(a.dtype)), _shape(a))
                     if a is not None else TypeProto() for a in args]
            f.ParseFromString(schema.get_context_dependent_function_with_opset_version(
                max(built), node.SerializeToString(), [t.SerializeToString() for t in types]))
        else:
            f.ParseFromString(schema.get_function_with_opset_version(max(plain)))
    except Exception as e:   # ONNX refuses to build the body for these attributes or input types
        raise OnnxImportError(f"ONNX cannot build {n.op_type}'s function body for this node: {_short(e)}") from None
    return f, {a.name: a for a in node.attribute}


def _expand(n, *args):
    from onnx import helper
    f, attrs = _function_body(n, args)
    opset = next((o.version for o in f.opset_import if o.domain in ("", "ai.onnx")), n.opset)
    env = {name: (args[k] if k < len(args) else None) for k, name in enumerate(f.input)}
    env[""] = None
    for body_node in f.node:
        node = helper.make_node(body_node.op_type, list(body_node.input), list(body_node.output),
                                domain=body_node.domain)
        for a in body_node.attribute:   # a reference to the op's attribute takes its value (or is absent)
            if a.ref_attr_name:
                if a.ref_attr_name in attrs:
                    node.attribute.append(attrs[a.ref_attr_name])
                    node.attribute[-1].name = a.name
            else:
                node.attribute.append(a)
        if (node.domain or "ai.onnx") != "ai.onnx" or node.op_type not in CONVERTERS:
            raise OnnxImportError(f"{n.op_type} is defined by an ONNX function that uses {node.op_type}, "
                                  "which mlc does not import")
        missing = [x for x in node.input if x not in env]
        if missing:
            raise OnnxImportError(f"{n.op_type}'s ONNX function body uses {missing[0]!r} before computing it")
        ins = [env[x] for x in node.input]
        while ins and ins[-1] is None:
            ins.pop()
        # env: a Scan, Loop or If in the body reads the body's values from its subgraph
        result = CONVERTERS[node.op_type](_Node(node, opset, env), *ins)
        for name, r in zip(node.output, result if isinstance(result, (tuple, list)) else (result,)):
            if name:
                env[name] = r
    return tuple(env[o] for o in f.output)


_FUNCTION_OPS = ("RMSNormalization", "CenterCropPad", "SpaceToDepth", "DepthToSpace", "Swish", "SwiGLU",
                 "DynamicQuantizeLinear", "LinearAttention",
                 "BlackmanWindow", "HammingWindow", "HannWindow", "GroupNormalization", "MeanVarianceNormalization",
                 "RotaryEmbedding", "CausalConvWithState")
for _name in _FUNCTION_OPS:
    CONVERTERS.setdefault(_name, _expand)


# ----------------------------------------------------------------------------- the importer

def _value_type(vi) -> tuple[list, np.dtype | None]:
    t = vi.type.tensor_type
    dtype = _np_dtype(t.elem_type, f"{vi.name!r}") if t.elem_type else None
    # dim_value -1 is how some exporters write a dynamic dimension: like an unnamed one (other negatives stay errors)
    dims = [d.dim_value if d.HasField("dim_value") and d.dim_value != -1 else (d.dim_param or "?")
            for d in t.shape.dim] if t.HasField("shape") else None
    return dims, dtype


def data_inputs(graph, weight_names) -> list:
    """The graph inputs that take data at run time. Old models list their weights as
    inputs too, and some list values their own nodes compute: neither is an input."""
    produced = {o for node in graph.node for o in node.output}
    return [vi for vi in graph.input if vi.name not in weight_names and vi.name not in produced]


def supported_op_types() -> list[str]:
    return sorted(CONVERTERS)


def _node_label(i: int, node) -> str:
    return f"node {i} {node.name!r} ({node.op_type})"


def _check_graph(graph, opset: int, outer=()) -> list:
    """What onnx.checker and ONNX Runtime refuse, refused before import: a name given
    twice, a value written by two nodes (one would silently win), a graph output
    that nothing computes, nodes that do not fit their op's schema. Returns each
    node's schema. ``outer``: the names a subgraph may also read (its scope's)."""
    inputs, inits, produced, schemas = set(), set(), {}, []
    for vi in graph.input:
        if vi.name in inputs:
            raise OnnxImportError(f"the graph input {vi.name!r} is listed twice")
        inputs.add(vi.name)
    for t in graph.initializer:
        if t.name in inits:
            raise OnnxImportError(f"the initializer {t.name!r} is listed twice")
        inits.add(t.name)
    for i, node in enumerate(graph.node):
        schemas.append(_check_schema(node, opset, _node_label(i, node)))
        for o in node.output:
            if o in produced:
                raise OnnxImportError(f"{_node_label(i, node)} writes {o!r}, which {produced[o]} writes too "
                                      "(each value must have one writer)")
            if o in inits:
                raise OnnxImportError(f"{_node_label(i, node)} writes {o!r}, which is an initializer")
            if o:
                produced[o] = _node_label(i, node)
    for vi in graph.output:
        if vi.name not in produced and vi.name not in inputs and vi.name not in inits and vi.name not in outer:
            raise OnnxImportError(f"graph output {vi.name!r} is computed by no node and is no input or initializer")
    return schemas


def _count(lo: int, hi: int, what: str) -> str:
    return f"{lo} {what}" if lo == hi else (f"at least {lo} {what}" if hi >= 2 ** 31 - 1 else f"{lo} to {hi} {what}")


def _check_schema(node, opset: int, label: str):
    """The node's input and output counts and its attributes' names and types, against
    the op's definition at the model's opset."""
    from onnx import AttributeProto, defs
    try:
        schema = defs.get_schema(node.op_type, opset, "")
    except defs.SchemaError:
        raise OnnxImportError(f"{label}: {node.op_type} is not an operator of opset {opset}") from None
    if not schema.min_input <= len(node.input) <= schema.max_input:
        raise OnnxImportError(f"{label}: has {len(node.input)} inputs, {node.op_type} takes "
                              f"{_count(schema.min_input, schema.max_input, 'inputs')}")
    optional = defs.OpSchema.FormalParameterOption.Optional
    for k, name in enumerate(node.input):
        formal = schema.inputs[min(k, len(schema.inputs) - 1)]
        if not name and formal.option != optional:
            raise OnnxImportError(f"{label}: input {k} ({formal.name}) is required but not given")
    if not schema.min_output <= len(node.output) <= schema.max_output:
        raise OnnxImportError(f"{label}: has {len(node.output)} outputs, {node.op_type} has "
                              f"{_count(schema.min_output, schema.max_output, 'outputs')}")
    given = set()
    for a in node.attribute:
        spec = schema.attributes.get(a.name)
        if spec is None:
            raise OnnxImportError(f"{label}: unknown attribute {a.name!r} ({node.op_type} takes "
                                  f"{', '.join(sorted(schema.attributes)) or 'none'})")
        if a.name in given:
            raise OnnxImportError(f"{label}: attribute {a.name!r} is given twice")
        given.add(a.name)
        if a.ref_attr_name:
            raise OnnxImportError(f"{label}: attribute {a.name!r} refers to a function attribute outside a function")
        if a.type != spec.type.value:
            got = AttributeProto.AttributeType.Name(a.type) if a.type in AttributeProto.AttributeType.values() \
                else str(a.type)
            raise OnnxImportError(f"{label}: attribute {a.name!r} is {got}, {node.op_type} takes {spec.type.name}")
    missing = [k for k, spec in schema.attributes.items() if spec.required and k not in given]
    if missing:
        raise OnnxImportError(f"{label}: missing required attribute(s) {', '.join(missing)}")
    return schema


def _onnx_type(dtype) -> str:
    from onnx import TensorProto, helper
    try:
        return f"tensor({TensorProto.DataType.Name(helper.np_dtype_to_tensor_dtype(np.dtype(dtype))).lower()})"
    except (KeyError, TypeError, ValueError):
        return f"tensor({dtype})"


def _check_input_types(label: str, schema, args) -> None:
    """Each input's element type among those its op allows, and inputs that share a type
    variable of one type: ONNX Runtime refuses a model that mixes them, which mlc's
    ops would otherwise promote."""
    allowed = {c.type_param_str: c.allowed_type_strs for c in schema.type_constraints}
    bound: dict = {}
    for k, a in enumerate(args):
        if a is None:
            continue
        formal = schema.inputs[min(k, len(schema.inputs) - 1)]
        if isinstance(a, list):   # a sequence: where the op takes one (its converter checks what it holds)
            if not any(t.startswith("seq(") for t in allowed.get(formal.type_str, [formal.type_str])):
                raise OnnxImportError(f"{label}: input {k} ({formal.name}) is a sequence, which the op does not take")
            continue
        t = _onnx_type(a.dtype)
        if t not in allowed.get(formal.type_str, [formal.type_str]):
            raise OnnxImportError(f"{label}: input {k} ({formal.name}) is a {t}, which the op does not take "
                                  f"(it takes {', '.join(allowed.get(formal.type_str, [formal.type_str]))})")
        if formal.type_str in allowed and formal.is_homogeneous:   # Loop's carried values may differ in type
            first = bound.setdefault(formal.type_str, (k, t))
            if first[1] != t:
                raise OnnxImportError(f"{label}: input {k} ({formal.name}) is a {t} but input {first[0]} is a "
                                      f"{first[1]}; the op takes one type for both")


def _check_result(label: str, name: str, r) -> None:
    """A value the importer computed: a size any memory can hold."""
    if isinstance(r, (Tracer, np.ndarray)):
        nbytes = math.prod(r.shape) * np.dtype(r.dtype).itemsize
        if nbytes > MAX_NBYTES:
            raise OnnxImportError(f"{label}: its output {name!r} would have shape {list(r.shape)} ({nbytes} bytes), "
                                  f"more than any memory holds")


def run_nodes(graph, env, opset: int, schemas: list, where: str = "") -> None:
    """Convert ``graph``'s nodes in order, reading and writing values by name in ``env``
    (a subgraph's env sees its enclosing graphs' values). ``where`` prefixes the node
    labels of a subgraph ("node 3 'loop' (Loop), body: ")."""
    for i, node in enumerate(graph.node):
        label = where + _node_label(i, node)
        if (node.domain or "ai.onnx") != "ai.onnx" or node.op_type not in CONVERTERS:
            raise OnnxImportError(f"{label}: op type {node.op_type} (domain {node.domain or 'ai.onnx'}) is not "
                                  "supported")
        try:
            args = [env[x] for x in node.input]
        except KeyError as e:
            raise OnnxImportError(f"{label} uses {e.args[0]!r}, which no earlier node or input defines") from None
        _check_input_types(label, schemas[i], args)
        while args and args[-1] is None:
            args.pop()
        # The node's attributes and inputs are whatever the file says: an error they cause in
        # the converter or the op is the model's, reported with the node named.
        try:
            result = CONVERTERS[node.op_type](_Node(node, opset, env), *args)
        except (TraceError, OnnxImportError, TypeError, ValueError, IndexError, OverflowError,
                ZeroDivisionError) as e:
            raise OnnxImportError(f"{label}: {e}") from None
        results = result if isinstance(result, (tuple, list)) else (result,)
        wanted = [k for k, o in enumerate(node.output) if o]
        if wanted and wanted[-1] >= len(results):
            raise OnnxImportError(f"{label}: mlc computes {len(results)} of its {len(node.output)} outputs")
        for out_name, r in zip(node.output, results):
            if out_name:
                _check_result(label, out_name, r)
                env[out_name] = r


def from_onnx(model_or_path, input_shapes: dict | None = None, name: str | None = None,
              constant_inputs: dict | None = None, sequence_inputs: dict | None = None) -> Graph:
    """Import an ONNX model (a path, bytes or onnx.ModelProto) as an mlc Graph.

    ``input_shapes`` gives shapes for inputs whose declared shape has symbolic
    dimensions (e.g. a batch dimension ``N``). ``constant_inputs`` binds graph inputs
    to values known now (inputs that decide shapes, such as axes or a target shape
    passed as an input), which then leave the graph's signature.

    A sequence-typed input takes its tensors' (shape, dtype) pairs from
    ``sequence_inputs`` ({name: [(shape, dtype), ...]}) and becomes one graph input per
    tensor, named ``name_k``; a sequence output becomes one graph output per tensor.
    ``graph.onnx_outputs`` then says how they group: (name, count) per ONNX output, the
    count None for a tensor."""
    onnx = _onnx()
    model = load_model(model_or_path)
    graph = model.graph
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    newest = onnx.defs.onnx_opset_version()
    if opset is None:
        raise OnnxImportError("the model imports no version of the default ONNX domain (opset_import)")
    if not MIN_OPSET <= opset <= newest:
        raise OnnxImportError(f"the model uses opset {opset}; mlc imports opsets {MIN_OPSET} to {newest}")

    unsupported = {}
    for node in graph.node:
        domain = node.domain or "ai.onnx"
        if domain not in ("ai.onnx",) or node.op_type not in CONVERTERS:
            version = next((o.version for o in model.opset_import if (o.domain or "ai.onnx") == domain), "?")
            unsupported.setdefault((node.op_type, domain, version), 0)
            unsupported[(node.op_type, domain, version)] += 1
    if unsupported:
        listing = ", ".join(f"{t} (domain {d}, opset {v}; {c} node{'s' * (c > 1)})"
                            for (t, d, v), c in sorted(unsupported.items()))
        raise OnnxImportError(f"the model uses {len(unsupported)} op type(s) mlc does not support: {listing}")
    schemas = _check_graph(graph, opset)

    from onnx import numpy_helper
    weights = {}
    for init in graph.initializer:
        try:
            weights[init.name] = numpy_helper.to_array(init)
        except Exception as e:
            raise OnnxImportError(f"initializer {init.name!r} cannot be read: {_short(e)}") from None
    for k, v in (constant_inputs or {}).items():
        weights[k] = np.asarray(v)
    inputs = data_inputs(graph, weights)
    input_shapes = dict(input_shapes or {})
    seq_inputs = dict(sequence_inputs or {})
    types, names, counts = [], [], []   # counts: per ONNX input, its tensors (None: a tensor input)
    for vi in inputs:
        if vi.type.HasField("sequence_type"):
            if vi.name not in seq_inputs:
                raise OnnxImportError(f"input {vi.name!r} is a sequence; pass sequence_inputs={{{vi.name!r}: "
                                      "[(shape, dtype), ...]} for the tensors it holds")
            elems = list(seq_inputs.pop(vi.name))
            for k, (shape, dt) in enumerate(elems):
                try:
                    types.append(TensorType(list(shape), np.dtype(dt)))
                except (TypeError, ValueError) as e:
                    raise OnnxImportError(f"input {vi.name!r}, tensor {k}: {e}") from None
                names.append(f"{vi.name}_{k}")
            counts.append(len(elems))
            continue
        counts.append(None)
        names.append(vi.name)
        dims, dtype = _value_type(vi)
        if vi.name in input_shapes:
            dims = list(input_shapes.pop(vi.name))
        if dims is None or any(not isinstance(d, int) for d in dims):
            raise SymbolicShapeError(f"input {vi.name!r} has shape {dims}, which is not static; pass "
                                     f"input_shapes={{{vi.name!r}: (...)}}", vi.name, dims)
        if dtype is None:
            raise OnnxImportError(f"input {vi.name!r} declares no element type")
        try:
            types.append(TensorType(dims, dtype))
        except (TypeError, ValueError) as e:
            raise OnnxImportError(f"input {vi.name!r}: {e}") from None
        nbytes = math.prod(dims) * dtype.itemsize
        if nbytes > MAX_NBYTES:
            raise OnnxImportError(f"input {vi.name!r} declares shape {dims} ({nbytes} bytes), more than any "
                                  "memory holds")
    if input_shapes:
        raise OnnxImportError(f"input_shapes names unknown inputs: {', '.join(input_shapes)}")
    if seq_inputs:
        raise OnnxImportError(f"sequence_inputs names unknown sequence inputs: {', '.join(seq_inputs)}")
    out_counts: list = []

    def build(*tracers):
        env: dict = dict(weights)
        it = iter(tracers)
        for vi, count in zip(inputs, counts):
            env[vi.name] = next(it) if count is None else [next(it) for _ in range(count)]
        env[""] = None   # an omitted optional input
        run_nodes(graph, env, opset, schemas)
        flat = []
        for o in graph.output:
            v = env[o.name]
            out_counts.append(len(v) if isinstance(v, list) else None)
            flat.extend(v if isinstance(v, list) else [v])
        return tuple(flat)

    try:
        g = trace_info(build, types, name=name or graph.name or "onnx_model", input_names=names).graph
    except TraceError as e:
        raise OnnxImportError(str(e)) from None
    g.onnx_outputs = [(o.name, c) for o, c in zip(graph.output, out_counts)]
    if all(c is None for c in out_counts):
        _check_declared_outputs(graph, g)
    out_names = [o.name if c is None else f"{o.name}_{k}" for o, c in zip(graph.output, out_counts)
                 for k in range(1 if c is None else c)]
    for n_, v in zip(out_names, g.outputs):   # exported libraries and printouts name outputs as ONNX does
        if v.name is None and v.producer is not None:
            v.name = n_
    return g


def _check_declared_outputs(graph, g: Graph) -> None:
    for vi, v in zip(graph.output, g.outputs):
        dims, dtype = _value_type(vi)
        if dtype is not None and np.dtype(dtype) != v.dtype.np:
            raise OnnxImportError(f"output {vi.name!r} is declared {dtype} but the model computes {v.type}")
        # the static dims of a partly dynamic shape must hold too ("?" and named dims match any extent)
        if dims and len(dims) == len(v.shape) and any(isinstance(d, int) and d != n for d, n in zip(dims, v.shape)) \
                or dims and all(isinstance(d, int) for d in dims) and tuple(dims) != v.shape:
            raise OnnxImportError(f"output {vi.name!r} is declared with shape {dims} but the model computes "
                                  f"{list(v.shape)}")


# Loop, Scan, If, RNN, GRU and LSTM: their converters register themselves from there
from . import onnx_control  # noqa: E402, F401
