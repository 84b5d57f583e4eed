"""Vectorizable math for float32, emitted inline as LLVM IR.

LLVM lowers ``llvm.exp.v8f32`` to eight scalar ``expf`` calls; the inline version
below keeps the whole vector in registers. Accuracy: within 2 ulp of the
correctly rounded result over the whole float32 range, including overflow to
inf, gradual underflow to denormals and 0, and NaN propagation.
"""
from __future__ import annotations

import llvmlite.ir as ir

_LOG2E = 1.44269504088896341
_LN2_HI = 0.693359375           # ln 2 split in two so n * _LN2_HI is exact
_LN2_LO = -2.12194440e-4
# minimax polynomial for (e^r - 1 - r) / r^2 on [-ln2/2, ln2/2] (Cephes expf)
_EXP_POLY = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1,
             5.0000001201e-1)


def _const(t: ir.Type, value):
    if isinstance(t, ir.VectorType):
        return ir.Constant(t, [ir.Constant(t.element, value)] * t.count)
    return ir.Constant(t, value)


def _with_element(t: ir.Type, element: ir.Type) -> ir.Type:
    return ir.VectorType(element, t.count) if isinstance(t, ir.VectorType) else element


def _suffix(t: ir.Type) -> str:
    return f"v{t.count}f32" if isinstance(t, ir.VectorType) else "f32"


def exp_f32(b: ir.IRBuilder, x, declare):
    """e**x for a float or <N x float> value. ``declare(name, ret, args)`` gives intrinsics."""
    t = x.type
    it = _with_element(t, ir.IntType(32))
    flags = ("contract",)
    fmin = declare(f"llvm.minnum.{_suffix(t)}", t, [t, t])
    fmax = declare(f"llvm.maxnum.{_suffix(t)}", t, [t, t])
    floor = declare(f"llvm.floor.{_suffix(t)}", t, [t])
    # beyond these bounds the result is inf or 0 anyway; clamping keeps n in range
    xc = b.call(fmax, [b.call(fmin, [x, _const(t, 89.0)]), _const(t, -104.0)])
    n = b.call(floor, [b.fadd(b.fmul(xc, _const(t, _LOG2E)), _const(t, 0.5))])
    r = b.fsub(xc, b.fmul(n, _const(t, _LN2_HI)))
    r = b.fsub(r, b.fmul(n, _const(t, _LN2_LO)))
    y = _const(t, _EXP_POLY[0])
    for c in _EXP_POLY[1:]:
        y = b.fadd(b.fmul(y, r, flags=flags), _const(t, c), flags=flags)
    y = b.fadd(b.fadd(b.fmul(y, b.fmul(r, r), flags=flags), r, flags=flags), _const(t, 1.0))
    # y * 2**n as two exact power-of-two factors, so that n down to -150 (denormal
    # results) and up to 129 (overflow to inf) both stay representable
    ni = b.fptosi(n, it)
    n1 = b.ashr(ni, _const(it, 1))
    n2 = b.sub(ni, n1)
    p1 = b.bitcast(b.shl(b.add(n1, _const(it, 127)), _const(it, 23)), t)
    p2 = b.bitcast(b.shl(b.add(n2, _const(it, 127)), _const(it, 23)), t)
    result = b.fmul(b.fmul(y, p1), p2)
    is_nan = b.fcmp_unordered("uno", x, x)
    return b.select(is_nan, x, result)
