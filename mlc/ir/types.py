"""Element types and tensor types shared by every IR level.

A ``DType`` is a small immutable record; the module-level singletons
(``float32``, ``int64``, ...) are the only instances, so ``is`` comparison works.
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True, eq=False)
class DType:
    name: str      # numpy name: "float32"
    short: str     # IR spelling: "f32"
    kind: str      # "float", "int", "uint" or "bool"
    bits: int

    @property
    def np(self) -> np.dtype:
        return np.dtype(self.name)

    @property
    def itemsize(self) -> int:
        return max(1, self.bits // 8)

    @property
    def is_float(self) -> bool:
        return self.kind == "float"

    @property
    def is_int(self) -> bool:
        """Signed or unsigned integer (not bool)."""
        return self.kind in ("int", "uint")

    @property
    def is_bool(self) -> bool:
        return self.kind == "bool"

    def __repr__(self) -> str:
        return self.short

    __str__ = __repr__

    def __reduce__(self):
        return (dtype, (self.name,))


float16 = DType("float16", "f16", "float", 16)
float32 = DType("float32", "f32", "float", 32)
float64 = DType("float64", "f64", "float", 64)
int8 = DType("int8", "i8", "int", 8)
int16 = DType("int16", "i16", "int", 16)
int32 = DType("int32", "i32", "int", 32)
int64 = DType("int64", "i64", "int", 64)
uint8 = DType("uint8", "u8", "uint", 8)
uint16 = DType("uint16", "u16", "uint", 16)
uint32 = DType("uint32", "u32", "uint", 32)
uint64 = DType("uint64", "u64", "uint", 64)
bool_ = DType("bool", "bool", "bool", 8)

ALL_DTYPES = (float16, float32, float64, int8, int16, int32, int64, uint8, uint16, uint32, uint64, bool_)
_BY_NAME = {d.name: d for d in ALL_DTYPES} | {d.short: d for d in ALL_DTYPES}


def dtype(x) -> DType:
    """The mlc DType for a name ("float32" / "f32"), a numpy dtype, or a DType."""
    if isinstance(x, DType):
        return x
    if isinstance(x, str) and x in _BY_NAME:
        return _BY_NAME[x]
    if x is None:   # numpy reads None as float64; here it is a missing dtype
        raise TypeError("not a dtype: None")
    try:
        name = np.dtype(x).name
    except TypeError:
        raise TypeError(f"not a dtype: {x!r}") from None
    if name not in _BY_NAME:
        supported = ", ".join(d.name for d in ALL_DTYPES)
        raise TypeError(f"dtype {name} is not supported by mlc (supported: {supported})")
    return _BY_NAME[name]


_to_dtype = dtype   # TensorType's ``dtype`` field and parameter shadow the function


def promote(*dtypes: DType) -> DType:
    """numpy's promotion of array dtypes (np.result_type), restricted to mlc's dtypes."""
    return dtype(np.result_type(*[d.np for d in dtypes]))


@dataclass(frozen=True)
class TensorType:
    shape: tuple[int, ...]
    dtype: DType

    def __init__(self, shape: Sequence[int], dtype):
        shape = tuple(shape)
        try:
            shape = tuple(operator.index(s) for s in shape)
        except TypeError:
            raise TypeError(f"dimensions must be integers, got shape {shape!r}") from None
        if any(s < 0 for s in shape):
            raise ValueError(f"negative dimension in shape {shape}")
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "dtype", _to_dtype(dtype))

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)   # exact: numpy's int64 product would wrap

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def __str__(self) -> str:
        return f"{self.dtype.short}[{','.join(map(str, self.shape))}]"

    __repr__ = __str__

    @staticmethod
    def of(array) -> "TensorType":
        return TensorType(np.shape(array), dtype(np.asarray(array).dtype))
