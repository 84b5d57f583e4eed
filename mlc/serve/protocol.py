"""What the Open Inference Protocol (KServe v2) says about tensors, shared by the REST
and gRPC front ends: the datatype names, tensors decoded from JSON data or raw bytes
and encoded back, the checks of a request against a model's inputs, and the error a
client's mistake becomes (``InferError``: an HTTP status and a message naming the
input and what was expected)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# the protocol's datatype names and the numpy dtypes they travel as (little-endian);
# BYTES (strings) is not served: mlc's models take numeric tensors
DATATYPES = {
    "BOOL": np.dtype(np.bool_), "UINT8": np.dtype("<u1"), "UINT16": np.dtype("<u2"), "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"), "INT8": np.dtype("<i1"), "INT16": np.dtype("<i2"), "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"), "FP16": np.dtype("<f2"), "FP32": np.dtype("<f4"), "FP64": np.dtype("<f8"),
}
_NAME_OF = {dt.newbyteorder("=") if dt.byteorder not in "|=" else dt: name for name, dt in DATATYPES.items()}


class InferError(Exception):
    """A request the server cannot serve, with the HTTP status it answers (400 the client's
    mistake, 401 bad credentials, 404 unknown model, 413 too large, 503 not ready or
    shutting down, 500 the model failed)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def datatype_of(dtype) -> str:
    """The protocol's name of a numpy dtype; ValueError for one it has no name for."""
    dt = np.dtype(dtype)
    dt = dt.newbyteorder("=") if dt.byteorder not in "|=" else dt
    name = _NAME_OF.get(dt)
    if name is None:
        raise ValueError(f"no Open Inference Protocol datatype for {dt}")
    return name


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a served model: its name, datatype and shape (-1 for the
    dynamic batch dimension)."""
    name: str
    datatype: str
    shape: tuple

    @property
    def dtype(self) -> np.dtype:
        return DATATYPES[self.datatype]

    def metadata(self) -> dict:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}

    def __str__(self) -> str:
        return f"{self.name}: {self.datatype}{list(self.shape)}"


def _shape_of(name: str, shape) -> tuple:
    try:
        dims = tuple(int(d) for d in shape)
    except (TypeError, ValueError):
        raise InferError(f"input '{name}': shape must be a list of integers, got {shape!r}")
    if any(d < 0 for d in dims):
        raise InferError(f"input '{name}': shape {list(dims)} has a negative dimension")
    return dims


def _known_datatype(name: str, datatype) -> np.dtype:
    dt = DATATYPES.get(datatype)
    if dt is None:
        raise InferError(f"input '{name}': unknown datatype {datatype!r} (the protocol's are "
                         f"{', '.join(DATATYPES)}; BYTES is not served)")
    return dt


def from_json_data(name: str, datatype, shape, data) -> np.ndarray:
    """A tensor from a JSON request's ``data`` (flat or nested, row-major)."""
    dt = _known_datatype(name, datatype)
    dims = _shape_of(name, shape)
    if not isinstance(data, list):
        raise InferError(f"input '{name}': 'data' must be a list of values, got {type(data).__name__}")
    try:
        arr = np.asarray(data)
        if arr.dtype == object or arr.dtype.kind not in "biuf":
            raise ValueError("not numbers")
        if dt.kind == "b" and arr.dtype.kind != "b":
            raise ValueError("not booleans")
        if dt.kind in "iub" and arr.dtype.kind == "f":
            raise ValueError("not integers")
        if dt.kind in "iu" and arr.size:
            info = np.iinfo(dt)
            lo, hi = arr.min(), arr.max()
            if lo < info.min or hi > info.max:
                raise InferError(f"input '{name}': value {lo if lo < info.min else hi} is out of {datatype}'s range "
                                 f"[{info.min}, {info.max}]")
        arr = arr.astype(dt, copy=False)
    except (ValueError, TypeError, OverflowError):
        raise InferError(f"input '{name}': 'data' must hold {datatype} values" +
                         (" (true or false)" if dt.kind == "b" else ""))
    count = int(np.prod(dims))
    if arr.size != count:
        raise InferError(f"input '{name}': {arr.size} elements in 'data', but shape {list(dims)} holds {count}")
    return arr.reshape(dims)


def from_raw(name: str, datatype, shape, raw: bytes) -> np.ndarray:
    """A tensor from its raw little-endian bytes (the binary extension, gRPC's raw contents)."""
    dt = _known_datatype(name, datatype)
    dims = _shape_of(name, shape)
    count = int(np.prod(dims))
    if len(raw) != count * dt.itemsize:
        raise InferError(f"input '{name}': {len(raw)} bytes of data, but {datatype} shape {list(dims)} takes "
                         f"{count * dt.itemsize}")
    return np.frombuffer(raw, dtype=dt).reshape(dims)


def to_raw(arr: np.ndarray) -> bytes:
    return np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()


def check_inputs(model, given: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The request's tensors in the model's input order, after checking their names,
    datatypes and shapes against the model's (``model.inputs``, ``model.max_batch``):
    InferError naming the input and what was expected otherwise."""
    expected = {s.name: s for s in model.inputs}
    sig = ", ".join(map(str, model.inputs))
    unknown = [n for n in given if n not in expected]
    if unknown:
        raise InferError(f"model '{model.name}' has no input {', '.join(map(repr, unknown))}; its inputs are {sig}")
    missing = [str(s) for s in model.inputs if s.name not in given]
    if missing:
        raise InferError(f"missing input {', '.join(missing)} for model '{model.name}'")
    rows = None
    out = []
    for spec in model.inputs:
        a = given[spec.name]
        if a.dtype != spec.dtype:
            raise InferError(f"input '{spec.name}': datatype {datatype_of(a.dtype)}, expected {spec.datatype}")
        ok = a.ndim == len(spec.shape) and all(e in (-1, d) for e, d in zip(spec.shape, a.shape))
        if not ok:
            raise InferError(f"input '{spec.name}': shape {list(a.shape)}, expected {list(spec.shape)}")
        if model.max_batch:
            n = a.shape[0]
            if rows is not None and n != rows:
                raise InferError(f"input '{spec.name}': batch dimension {n}, but other inputs have {rows}")
            rows = n
            if not 1 <= n <= model.max_batch:
                raise InferError(f"input '{spec.name}': batch dimension {n}, expected 1 to {model.max_batch} "
                                 f"(the server's --max-batch)")
        out.append(a)
    return out


def requested_outputs(model, names) -> list[int]:
    """The positions of the outputs a request names (all when it names none)."""
    if not names:
        return list(range(len(model.outputs)))
    index = {s.name: i for i, s in enumerate(model.outputs)}
    bad = [n for n in names if n not in index]
    if bad:
        raise InferError(f"model '{model.name}' has no output {', '.join(map(repr, bad))}; its outputs are "
                         + ", ".join(map(str, model.outputs)))
    return [index[n] for n in names]
