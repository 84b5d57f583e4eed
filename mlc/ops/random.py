"""Counter-based random numbers: reproducible from a seed, identical in the numpy
reference and in compiled code, and independent of how the kernel is scheduled.

Element ``i`` of ``random_uniform(seed, shape, stream)`` is a SplitMix64 hash of
(seed, stream, i), so each element is computed on its own (the op is injective and
fuses like any elementwise op) and a different ``stream`` gives an independent
sequence from the same seed (one per dropout layer).
"""
from __future__ import annotations

import numpy as np

from ..ir import expr as E
from ..ir.expr import Const, cast
from ..ir.tensor import compute
from ..ir.types import TensorType, float32, int64
from .registry import OpDef, check

_GOLDEN = 0x9E3779B97F4A7C15
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB
_STREAM = 0xD1B54A32D192ED03
_MASK = (1 << 64) - 1


def _signed(v: int) -> int:
    """A 64-bit pattern as the int64 constant codegen multiplies with (wrapping)."""
    v &= _MASK
    return v - (1 << 64) if v >> 63 else v


def _np_uniform(seed, shape, stream):
    with np.errstate(over="ignore"):
        z = (np.uint64(np.asarray(seed).astype(np.int64).view(np.uint64)) * np.uint64(_GOLDEN)
             + np.uint64(stream * _STREAM & _MASK) + np.arange(int(np.prod(shape)), dtype=np.uint64))
        z = z + np.uint64(_GOLDEN)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(_MIX1)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(_MIX2)
        z = z ^ (z >> np.uint64(31))
    return ((z >> np.uint64(40)).astype(np.float32) * np.float32(2.0 ** -24)).reshape(shape)


def _uniform_infer(ins, shape, stream):
    (seed,) = ins
    check(seed.dtype == int64 and seed.shape == (), f"random_uniform: the seed must be an int64 scalar, got {seed}")
    return [TensorType(shape, float32)]


def _uniform_lower(ins, outs, shape, stream):
    (seed,), (o,) = ins, outs

    def fn(*idx):
        flat = Const(0)
        for i, n in zip(idx, shape):
            flat = flat * n + i
        z = seed[()] * Const(_signed(_GOLDEN), int64) + Const(_signed(stream * _STREAM), int64) + flat
        z = z + Const(_signed(_GOLDEN), int64)
        z = E.binop("xor", z, E.binop("shr", z, Const(30, int64))) * Const(_signed(_MIX1), int64)
        z = E.binop("xor", z, E.binop("shr", z, Const(27, int64))) * Const(_signed(_MIX2), int64)
        z = E.binop("xor", z, E.binop("shr", z, Const(31, int64)))
        return cast(float32, E.binop("shr", z, Const(40, int64))) * Const(2.0 ** -24, float32)

    return [compute(o.shape, fn)]


def _uniform_canon(ins, attrs):
    shape = attrs["shape"]
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(int(n) for n in shape)
    return {"shape": shape, "stream": int(attrs["stream"])}


OPS = [
    OpDef("random_uniform", "injective", _uniform_infer, _np_uniform, _uniform_lower, params=("seed",),
          attrs={"shape": None, "stream": 0}, canonicalize=_uniform_canon,
          vjp=lambda em, ins, outs, cts, **attrs: [None],
          doc="float32 uniform in [0, 1) of the given shape, a pure function of (seed, stream, element index)."),
]
