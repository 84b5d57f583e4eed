"""Neural-network layers with ONNX semantics: activations (leaky_relu, elu, selu,
gelu, hard_sigmoid, softplus, clip, ...) and normalizations (batch_norm,
layer_norm, lrn).

Activations and normalizations take floating-point tensors and keep their dtype;
float16 is computed in float32 and rounded once at the end. ``clip`` takes any
numeric dtype. Attributes are Python numbers, as ONNX attributes are. Every op has a
gradient rule (``vjp``, at the end of the file); batch_norm's covers all five inputs, so
a training-mode batch_norm(x, scale, bias, mean(x), var(x)) differentiates through the
batch statistics.
"""
from __future__ import annotations

import math

import numpy as np

from ..ir import expr as E
from ..ir.expr import Const, cast
from ..ir.tensor import compute, reduce
from ..ir.types import float32
from .reduction import reduce_stage
from .registry import OpDef, broadcast_load, check, normalize_axis, unbroadcast


def _acc(dt):
    """The dtype a float op computes in: float32 for float16, else the dtype itself."""
    return float32 if dt.bits < 32 else dt


def _np_acc(x):
    x = np.asarray(x)
    return x.astype(np.float32) if x.dtype == np.float16 else x


_erf = np.vectorize(math.erf, otypes=[np.float64])


def _np_erf(x):
    return _erf(np.asarray(x, np.float64)).astype(np.asarray(x).dtype)


def _log1p(u):
    """log(1 + u) accurate for small u (Goldberg's trick: log(w) * u / (w - 1), w = 1 + u)."""
    one = Const(1.0, u.dtype)
    w = one + u
    return E.select(E.binop("eq", w, one), u, E.call("log", w) * (u / (w - one)))


def _softplus(x):
    """log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|)), without overflow."""
    return E.maximum(x, Const(0.0, x.dtype)) + _log1p(E.call("exp", -E.call("abs", x)))


def _np_softplus(x):
    return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))


def _broadcasts_to(shape, target) -> bool:
    """numpy broadcasting of ``shape`` gives exactly ``target`` (ONNX unidirectional broadcasting)."""
    try:
        return len(shape) <= len(target) and np.broadcast_shapes(tuple(shape), tuple(target)) == tuple(target)
    except ValueError:
        return False


def _tanh(x):
    return E.call("tanh", x)


# ----------------------------------------------------------------------------- activations

def _float_infer(name):
    def infer(ins, **attrs):
        (x,) = ins
        check(x.dtype.is_float, f"{name}: expects a floating-point tensor, got {x}")
        return [x]
    return infer


def _activation(name, ref, scalar, attrs=None, doc="", canonicalize=None) -> OpDef:
    """``ref(x, **attrs)`` on x in the compute dtype (numpy); ``scalar(x, c, **attrs)``
    on an expression in the compute dtype, with ``c(v)`` making a constant of it."""
    def reference(x, **a):
        x = np.asarray(x)
        with np.errstate(all="ignore"):
            return np.asarray(ref(_np_acc(x), **a)).astype(x.dtype)

    def lower(ins, outs, **a):
        (x,), (o,) = ins, outs
        acc = _acc(o.dtype)

        def c(v):
            return Const(v, acc)
        return [compute(o.shape, lambda *i: cast(o.dtype, scalar(cast(acc, x[i]), c, **a)))]

    return OpDef(name, "injective", _float_infer(name), reference, lower, attrs=dict(attrs or {}),
                 canonicalize=canonicalize, doc=doc)


def _float_attrs(*names):
    def canon(ins, attrs):
        out = dict(attrs)
        for n in names:
            check(isinstance(attrs[n], (int, float, np.integer, np.floating)) and not isinstance(attrs[n], bool),
                  f"attribute {n} must be a number, got {attrs[n]!r}")
            out[n] = float(attrs[n])
        return out
    return canon


def _gelu_canon(ins, attrs):
    check(attrs["approximate"] in ("none", "tanh"),
          f"gelu: approximate must be 'none' or 'tanh', got {attrs['approximate']!r}")
    return dict(attrs)


_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def _gelu_scalar(x, c, approximate):
    if approximate == "tanh":
        inner = c(_SQRT_2_OVER_PI) * (x + c(0.044715) * x * x * x)
        return c(0.5) * x * (c(1.0) + _tanh(inner))
    return c(0.5) * x * (c(1.0) + E.call("erf", x * c(1.0 / math.sqrt(2.0))))


def _gelu_ref(x, approximate):
    if approximate == "tanh":
        return 0.5 * x * (1 + np.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x ** 3)))
    return 0.5 * x * (1 + _np_erf(x / np.sqrt(2)))


def _lt0(x):
    return E.binop("lt", x, Const(0.0, x.dtype))


_SELU_ALPHA = 1.67326319217681884765625
_SELU_GAMMA = 1.05070102214813232421875

ACTIVATIONS = [
    _activation("leaky_relu", lambda x, alpha: np.where(x < 0, alpha * x, x),
                lambda x, c, alpha: E.select(_lt0(x), c(alpha) * x, x),
                {"alpha": 0.01}, "alpha * x where x < 0, else x (ONNX LeakyRelu).", _float_attrs("alpha")),
    _activation("elu", lambda x, alpha: np.where(x < 0, alpha * (np.exp(x) - 1), x),
                lambda x, c, alpha: E.select(_lt0(x), c(alpha) * (E.call("exp", x) - c(1.0)), x),
                {"alpha": 1.0}, "alpha * (exp(x) - 1) where x < 0, else x (ONNX Elu).", _float_attrs("alpha")),
    _activation("selu", lambda x, alpha, gamma: np.where(x <= 0, gamma * (alpha * np.exp(x) - alpha), gamma * x),
                lambda x, c, alpha, gamma: E.select(E.binop("le", x, c(0.0)),
                                                    c(gamma) * (c(alpha) * E.call("exp", x) - c(alpha)),
                                                    c(gamma) * x),
                {"alpha": _SELU_ALPHA, "gamma": _SELU_GAMMA},
                "gamma * (alpha * exp(x) - alpha) where x <= 0, else gamma * x (ONNX Selu).",
                _float_attrs("alpha", "gamma")),
    _activation("celu", lambda x, alpha: np.maximum(x, 0) + np.minimum(0, alpha * (np.exp(x / alpha) - 1)),
                lambda x, c, alpha: E.maximum(x, c(0.0))
                + E.minimum(c(0.0), c(alpha) * (E.call("exp", x / c(alpha)) - c(1.0))),
                {"alpha": 1.0}, "max(0, x) + min(0, alpha * (exp(x / alpha) - 1)) (ONNX Celu).",
                _float_attrs("alpha")),
    _activation("gelu", _gelu_ref, _gelu_scalar, {"approximate": "none"},
                "x * Phi(x) with the exact erf form, or the tanh approximation (ONNX Gelu).", _gelu_canon),
    _activation("hard_sigmoid", lambda x, alpha, beta: np.clip(alpha * x + beta, 0, 1),
                lambda x, c, alpha, beta: E.minimum(E.maximum(c(alpha) * x + c(beta), c(0.0)), c(1.0)),
                {"alpha": 0.2, "beta": 0.5}, "max(0, min(1, alpha * x + beta)) (ONNX HardSigmoid).",
                _float_attrs("alpha", "beta")),
    _activation("hard_swish", lambda x: x * np.clip(x / 6 + 0.5, 0, 1),
                lambda x, c: x * E.minimum(E.maximum(x * c(1.0 / 6.0) + c(0.5), c(0.0)), c(1.0)),
                doc="x * hard_sigmoid(x, 1/6, 0.5) (ONNX HardSwish)."),
    _activation("softplus", _np_softplus, lambda x, c: _softplus(x),
                doc="log(1 + exp(x)), computed without overflow (ONNX Softplus)."),
    _activation("softsign", lambda x: x / (1 + np.abs(x)), lambda x, c: x / (c(1.0) + E.call("abs", x)),
                doc="x / (1 + |x|) (ONNX Softsign)."),
    _activation("mish", lambda x: x * np.tanh(_np_softplus(x)), lambda x, c: x * _tanh(_softplus(x)),
                doc="x * tanh(softplus(x)) (ONNX Mish)."),
    _activation("thresholded_relu", lambda x, alpha: np.where(x > alpha, x, 0),
                lambda x, c, alpha: E.select(E.binop("gt", x, c(alpha)), x, c(0.0)),
                {"alpha": 1.0}, "x where x > alpha, else 0 (ONNX ThresholdedRelu).", _float_attrs("alpha")),
]


# ----------------------------------------------------------------------------- prelu

def _prelu_infer(ins):
    x, slope = ins
    check(x.dtype.is_float and slope.dtype.is_float,
          f"prelu: expects floating-point tensors, got {x} and {slope}")
    check(_broadcasts_to(slope.shape, x.shape),
          f"prelu: slope {slope} does not broadcast to the shape of {x}")
    return [x]


def _prelu_lower(ins, outs):
    (x, s), (o,) = ins, outs
    acc = _acc(o.dtype)

    def fn(*i):
        v = cast(acc, x[i])
        return cast(o.dtype, E.select(_lt0(v), cast(acc, broadcast_load(s, i)) * v, v))
    return [compute(o.shape, fn)]


def _prelu_ref(x, slope):
    x = np.asarray(x)
    xa = _np_acc(x)
    return np.where(xa < 0, np.asarray(slope).astype(xa.dtype) * xa, xa).astype(x.dtype)


# ----------------------------------------------------------------------------- clip

def _clip_canon(ins, attrs):
    dt = ins[0].dtype
    out = {}
    for n in ("min", "max"):
        v = attrs[n]
        if v is not None:
            check(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool),
                  f"clip: {n} must be a number or None, got {v!r}")
            v = float(v) if dt.is_float else int(v)
        out[n] = v
    return out


def _clip_infer(ins, min, max):
    (x,) = ins
    check(not x.dtype.is_bool, f"clip: expects a numeric tensor, got {x}")
    if x.dtype.is_int:
        info = np.iinfo(x.dtype.np)
        for v in (min, max):
            check(v is None or info.min <= v <= info.max, f"clip: bound {v} does not fit {x.dtype}")
    return [x]


def _clip_ref(x, min, max):
    x = np.asarray(x)
    lo = None if min is None else x.dtype.type(min)
    hi = None if max is None else x.dtype.type(max)
    r = x
    if lo is not None:
        r = np.maximum(r, lo)
    if hi is not None:
        r = np.minimum(r, hi)
    return np.asarray(r, x.dtype)


def _clip_lower(ins, outs, min, max):
    (x,), (o,) = ins, outs

    def fn(*i):
        v = x[i]
        if min is not None:
            v = E.maximum(v, Const(min, o.dtype))
        if max is not None:
            v = E.minimum(v, Const(max, o.dtype))
        return v
    return [compute(o.shape, fn)]


# ----------------------------------------------------------------------------- batch_norm

def _batch_norm_infer(ins, epsilon):
    x, *params = ins
    check(x.dtype.is_float, f"batch_norm: expects a floating-point input, got {x}")
    check(x.rank >= 1, f"batch_norm: expects an input of rank >= 1 (N, C, ...), got {x}")
    c = x.shape[1] if x.rank >= 2 else 1
    for name, p in zip(("scale", "bias", "mean", "var"), params):
        check(p.dtype.is_float, f"batch_norm: {name} must be floating-point, got {p}")
        check(p.shape == (c,), f"batch_norm: {name} must have shape [{c}] (the channels of {x}), got {p}")
    return [x]


def _batch_norm_ref(x, scale, bias, mean, var, epsilon):
    x = np.asarray(x)
    xa = _np_acc(x)
    shape = (1, -1) + (1,) * (x.ndim - 2) if x.ndim >= 2 else (-1,)
    scale, bias, mean, var = (np.asarray(p).astype(xa.dtype).reshape(shape) for p in (scale, bias, mean, var))
    return ((xa - mean) / np.sqrt(var + xa.dtype.type(epsilon)) * scale + bias).astype(x.dtype)


def _batch_norm_lower(ins, outs, epsilon):
    (x, scale, bias, mean, var), (o,) = ins, outs
    acc = _acc(o.dtype)
    c = scale.shape[0]
    one = Const(1.0, acc)
    # per channel: scale / sqrt(var + eps)
    factor = compute((c,), lambda k: cast(acc, scale[k]) * (one / E.call("sqrt", cast(acc, var[k])
                                                                         + Const(epsilon, acc))), "factor")

    def fn(*i):
        k = i[1] if len(i) >= 2 else Const(0)
        return cast(o.dtype, (cast(acc, x[i]) - cast(acc, mean[k])) * factor[k] + cast(acc, bias[k]))
    return [factor, compute(o.shape, fn)]


# ----------------------------------------------------------------------------- layer_norm

def _layer_norm_canon(ins, attrs):
    x = ins[0]
    check(x.rank >= 1, f"layer_norm: expects a tensor of rank >= 1, got {x}")
    return {"axis": normalize_axis(attrs["axis"], x.rank, "layer_norm"), "epsilon": float(attrs["epsilon"])}


def _layer_norm_infer(ins, axis, epsilon):
    x, scale, bias = ins
    norm_shape = x.shape[axis:]
    for name, p in (("scale", scale), ("bias", bias)):
        check(p.dtype.is_float, f"layer_norm: {name} must be floating-point, got {p}")
        check(_broadcasts_to(p.shape, norm_shape),
              f"layer_norm: {name} {p} does not broadcast to the normalized shape {list(norm_shape)}")
    check(x.dtype.is_float, f"layer_norm: expects a floating-point input, got {x}")
    return [x]


def _layer_norm_ref(x, scale, bias, axis, epsilon):
    x = np.asarray(x)
    xa = _np_acc(x)
    axes = tuple(range(axis, x.ndim))
    mean = xa.mean(axis=axes, keepdims=True)
    d = xa - mean
    var = (d * d).mean(axis=axes, keepdims=True)
    y = d / np.sqrt(var + xa.dtype.type(epsilon))
    return (y * np.asarray(scale).astype(xa.dtype) + np.asarray(bias).astype(xa.dtype)).astype(x.dtype)


def _layer_norm_lower(ins, outs, axis, epsilon):
    (x, scale, bias), (o,) = ins, outs
    acc = _acc(o.dtype)
    axes = tuple(range(axis, len(x.shape)))
    n = int(np.prod(x.shape[axis:], dtype=np.int64))
    inv_n = Const(1.0 / max(n, 1), acc)
    total = reduce_stage(x, axes, False, "sum", acc, name="sum")
    mean = compute(total.shape, lambda *i: total[i] * inv_n, "mean")

    def centered(idx):
        return cast(acc, x[tuple(idx)]) - mean[tuple(idx[:axis])]

    sq = reduce_stage(x, axes, False, "sum", acc, body=lambda idx: centered(idx) * centered(idx), name="sumsq")
    one = Const(1.0, acc)
    inv_std = compute(sq.shape, lambda *i: one / E.call("sqrt", sq[i] * inv_n + Const(epsilon, acc)), "inv_std")

    def fn(*i):
        return cast(o.dtype, centered(i) * inv_std[i[:axis]] * cast(acc, broadcast_load(scale, i))
                    + cast(acc, broadcast_load(bias, i)))
    return [total, mean, sq, inv_std, compute(o.shape, fn)]


# ----------------------------------------------------------------------------- lrn

def _lrn_canon(ins, attrs):
    size = attrs["size"]
    check(isinstance(size, (int, np.integer)) and not isinstance(size, bool) and size >= 1,
          f"lrn: size must be a positive int, got {size!r}")
    return {"size": int(size), "alpha": float(attrs["alpha"]), "beta": float(attrs["beta"]),
            "bias": float(attrs["bias"])}


def _lrn_infer(ins, size, alpha, beta, bias):
    (x,) = ins
    check(x.dtype.is_float, f"lrn: expects a floating-point tensor, got {x}")
    check(x.rank >= 2, f"lrn: expects a tensor of rank >= 2 (N, C, ...), got {x}")
    return [x]


def _lrn_window(size):
    return (size - 1) // 2, -(-(size - 1) // 2)   # channels before, after


def _lrn_ref(x, size, alpha, beta, bias):
    x = np.asarray(x)
    xa = _np_acc(x)
    before, after = _lrn_window(size)
    c = x.shape[1]
    sq = np.zeros_like(xa)
    for k in range(c):
        lo, hi = max(0, k - before), min(c, k + after + 1)
        sq[:, k] = (xa[:, lo:hi] ** 2).sum(axis=1)
    return (xa / (bias + alpha / size * sq) ** beta).astype(x.dtype)


def _lrn_lower(ins, outs, size, alpha, beta, bias):
    (x,), (o,) = ins, outs
    acc = _acc(o.dtype)
    c = x.shape[1]
    before, _ = _lrn_window(size)
    zero = Const(0.0, acc)

    def sumsq(*i):
        def body(k):
            ch = i[1] - before + k
            inside = E.binop("and", E.binop("ge", ch, Const(0)), E.binop("lt", ch, Const(c)))
            idx = list(i)
            idx[1] = E.minimum(E.maximum(ch, Const(0)), Const(max(c - 1, 0)))   # reads stay in bounds
            v = cast(acc, x[tuple(idx)])
            return E.select(inside, v * v, zero)
        return reduce("sum", [size], body)

    sq = compute(o.shape, sumsq, "sumsq")

    def fn(*i):
        base = Const(bias, acc) + Const(alpha / size, acc) * sq[i]
        if beta == 0.75:   # the common case: base^-0.75 = rsqrt(base) * rsqrt(sqrt(base))
            s = E.call("sqrt", base)
            den = s * E.call("sqrt", s)
        else:
            den = E.binop("pow", base, Const(beta, acc))
        return cast(o.dtype, cast(acc, x[i]) / den)
    return [sq, compute(o.shape, fn)]


# ----------------------------------------------------------------------------- gradient rules
# vjp(em, ins, outs, cts, **attrs) -> input cotangents (ops/autodiff.py). Rules compute in the
# input's dtype, float16 in float32 (as the forward does), and return the input's dtype. At a
# kink (where the derivative jumps) each rule takes the side torch's backward takes.

def _in_acc(em, t):
    """t in the dtype the op computes in: float16 is widened to float32."""
    return em("cast", t, dtype="float32") if t.dtype == np.float16 else t


def _like(em, t, like):
    return t if t.dtype == like.dtype else em("cast", t, dtype=like.dtype)


_SQRT_2PI = math.sqrt(2.0 * math.pi)


def _gelu_grad(em, x, approximate):
    if approximate == "tanh":
        k = 0.044715
        t = em("tanh", _SQRT_2_OVER_PI * (x + k * x * x * x))
        return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * (_SQRT_2_OVER_PI * (1.0 + 3.0 * k * x * x))
    cdf = 0.5 * (1.0 + em("erf", x * (1.0 / math.sqrt(2.0))))
    return cdf + x * em("exp", -0.5 * x * x) * (1.0 / _SQRT_2PI)


# name -> the cotangent of x as ops, given (em, x, y, g, **attrs) in the compute dtype
_ACTIVATION_GRADS = {
    # torch's leaky_relu_backward: g where x > 0, else alpha * g (the slope at 0 is alpha)
    "leaky_relu": lambda em, x, y, g, alpha: em("where", x > 0.0, g, alpha * g),
    # elu, selu, celu: the exponential side at 0 (torch's elu_backward), d/dx = y + alpha there
    "elu": lambda em, x, y, g, alpha: em("where", x > 0.0, g, g * (y + alpha)),
    "selu": lambda em, x, y, g, alpha, gamma: em("where", x > 0.0, gamma * g, g * (y + gamma * alpha)),
    "celu": lambda em, x, y, g, alpha: em("where", x > 0.0, g, g * em("exp", x * (1.0 / alpha))),
    "gelu": lambda em, x, y, g, approximate: g * _gelu_grad(em, x, approximate),
    "hard_sigmoid": lambda em, x, y, g, alpha, beta: _hard_sigmoid_grad(em, x, g, alpha, beta),
    # torch's hardswish_backward: 0 below -3, x/3 + 1/2 on [-3, 3], 1 above 3
    "hard_swish": lambda em, x, y, g: em("where", x < -3.0, 0.0,
                                          em("where", x > 3.0, g, g * (x * (1.0 / 3.0) + 0.5))),
    "softplus": lambda em, x, y, g: g * em("sigmoid", x),
    "softsign": lambda em, x, y, g: g / ((1.0 + em("abs", x)) * (1.0 + em("abs", x))),
    "mish": lambda em, x, y, g: g * _mish_grad(em, x),
    # 0 at the threshold itself (torch's threshold_backward)
    "thresholded_relu": lambda em, x, y, g, alpha: em("where", x > alpha, g, 0.0),
}


def _hard_sigmoid_grad(em, x, g, alpha, beta):
    """alpha * g where 0 < alpha * x + beta < 1; the clipped sides and the kinks get 0
    (torch's hardsigmoid_backward)."""
    z = alpha * x + beta
    return em("where", em("where", z > 0.0, z < 1.0, False), alpha * g, 0.0)


def _mish_grad(em, x):
    t = em("tanh", em("softplus", x))
    return t + x * (1.0 - t * t) * em("sigmoid", x)


def _activation_vjp(name):
    rule = _ACTIVATION_GRADS[name]

    def vjp(em, ins, outs, cts, **attrs):
        x = ins[0]
        return [_like(em, rule(em, _in_acc(em, x), _in_acc(em, outs[0]), _in_acc(em, cts[0]), **attrs), x)]
    return vjp


for _op in ACTIVATIONS:
    _op.vjp = _activation_vjp(_op.name)


def _prelu_vjp(em, ins, outs, cts):
    x, slope = ins
    g = _in_acc(em, cts[0])
    xa, s = _in_acc(em, x), _in_acc(em, slope)
    neg = xa < 0.0
    return [_like(em, em("where", neg, g * s, g), x), unbroadcast(em, em("where", neg, g * xa, 0.0), slope)]


def _clip_vjp(em, ins, outs, cts, min, max):
    """g where min <= x <= max, as torch.clamp's gradient (the bounds themselves pass g);
    min > max (a constant result) passes nothing. Integer clips have no gradient."""
    x, g = ins[0], cts[0]
    if x.dtype.kind != "f":
        return [None]
    inside = None
    if min is not None:
        inside = x >= min
    if max is not None:
        inside = x <= max if inside is None else em("where", inside, x <= max, False)
    return [g if inside is None else em("where", inside, g, 0.0)]


def _channel_shape(x):
    """batch_norm's per-channel parameters broadcast against x with this shape."""
    return (1, x.shape[1]) + (1,) * (len(x.shape) - 2) if len(x.shape) >= 2 else (1,)


def _per_channel(em, t, x, like):
    """Sum t (x's shape) over every axis but the channel axis: a [C] cotangent for ``like``."""
    axes = tuple(d for d in range(len(x.shape)) if not (d == 1 and len(x.shape) >= 2))
    if axes:
        t = em("sum", t, axis=axes, keepdims=False)
    return _like(em, em("reshape", t, shape=tuple(like.shape)), like)


def _batch_norm_vjp(em, ins, outs, cts, epsilon):
    """y = (x - mean) * r * scale + bias with r = (var + eps)^-1/2, per channel. Every
    input gets its gradient, so a training-mode batch_norm(x, s, b, mean(x), var(x))
    differentiates through the batch statistics too."""
    x, scale, bias, mean, var = ins
    shp = _channel_shape(x)
    xa, g = _in_acc(em, x), _in_acc(em, cts[0])
    s, m, v = (em("reshape", _in_acc(em, p), shape=shp) for p in (scale, mean, var))
    r = em("rsqrt", v + epsilon)
    gs = g * s
    xc = xa - m
    return [_like(em, gs * r, x),
            _per_channel(em, g * xc * r, x, scale),
            _per_channel(em, g, x, bias),
            _per_channel(em, -(gs * r), x, mean),
            _per_channel(em, gs * xc * (-0.5 * r * r * r), x, var)]


def _layer_norm_vjp(em, ins, outs, cts, axis, epsilon):
    """Closed form: with xhat = (x - mu) * rstd and gh = g * scale,
    dx = rstd * (gh - mean(gh) - xhat * mean(gh * xhat)) over the normalized axes."""
    x, scale, bias = ins
    axes = tuple(range(axis, len(x.shape)))
    xa, g = _in_acc(em, x), _in_acc(em, cts[0])
    mu = em("mean", xa, axis=axes, keepdims=True)
    xc = xa - mu
    rstd = em("rsqrt", em("mean", xc * xc, axis=axes, keepdims=True) + epsilon)
    xhat = xc * rstd
    gh = g * _in_acc(em, scale)
    dx = rstd * (gh - em("mean", gh, axis=axes, keepdims=True)
                 - xhat * em("mean", gh * xhat, axis=axes, keepdims=True))
    return [_like(em, dx, x), unbroadcast(em, g * xhat, scale), unbroadcast(em, g, bias)]


def _channel_window_sum(em, t, before, after):
    """out[:, c] = sum of t[:, c - before .. c + after] (zeros outside), by pad and slices."""
    r, c = len(t.shape), t.shape[1]
    pads = [0] * (2 * r)
    pads[1], pads[r + 1] = before, after
    p = em("pad", t, pads=tuple(pads))
    total = None
    for k in range(before + after + 1):
        piece = em("slice", p, begin=(0, k), end=(t.shape[0], k + c))
        total = piece if total is None else total + piece
    return total


def _lrn_vjp(em, ins, outs, cts, size, alpha, beta, bias):
    """y = x * base^-beta, base = bias + alpha/size * S, S[c] = sum of x^2 over c's window:
    dx = g * base^-beta - 2 alpha beta / size * x * (sum over the windows holding x of
    g * x * base^(-beta - 1))."""
    x = ins[0]
    xa, g = _in_acc(em, x), _in_acc(em, cts[0])
    before, after = _lrn_window(size)
    base = bias + (alpha / size) * _channel_window_sum(em, xa * xa, before, after)
    t = g * xa * em("pow", base, -beta - 1.0)
    back = _channel_window_sum(em, t, after, before)   # the transposed window
    return [_like(em, g * em("pow", base, -beta) - (2.0 * alpha * beta / size) * xa * back, x)]


# ----------------------------------------------------------------------------- the list

OPS = [
    *ACTIVATIONS,
    OpDef("prelu", "injective", _prelu_infer, _prelu_ref, _prelu_lower, params=("x", "slope"),
          vjp=_prelu_vjp, doc="slope * x where x < 0, else x; slope broadcasts to x's shape (ONNX PRelu)."),
    OpDef("clip", "injective", _clip_infer, _clip_ref, _clip_lower, attrs={"min": None, "max": None},
          canonicalize=_clip_canon, vjp=_clip_vjp,
          doc="min(max(x, min), max); a None bound is no bound; min > max gives max (ONNX Clip)."),
    OpDef("batch_norm", "injective", _batch_norm_infer, _batch_norm_ref, _batch_norm_lower,
          params=("x", "scale", "bias", "mean", "var"), attrs={"epsilon": 1e-5},
          canonicalize=lambda ins, a: {"epsilon": float(a["epsilon"])}, vjp=_batch_norm_vjp,
          doc="Inference batch normalization over channel axis 1 (ONNX BatchNormalization): "
              "(x - mean) / sqrt(var + epsilon) * scale + bias; a rank-1 input has one channel."),
    OpDef("layer_norm", "reduction", _layer_norm_infer, _layer_norm_ref, _layer_norm_lower,
          params=("x", "scale", "bias"), attrs={"axis": -1, "epsilon": 1e-5}, canonicalize=_layer_norm_canon,
          vjp=_layer_norm_vjp,
          doc="Normalize over axes [axis, rank) to zero mean and unit variance, then * scale + bias "
              "(ONNX LayerNormalization output Y; scale and bias broadcast to x.shape[axis:], "
              "pass a scalar 0 for a missing bias)."),
    OpDef("lrn", "reduction", _lrn_infer, _lrn_ref, _lrn_lower,
          attrs={"size": None, "alpha": 1e-4, "beta": 0.75, "bias": 1.0}, canonicalize=_lrn_canon,
          vjp=_lrn_vjp, doc="Local response normalization across channels (axis 1) (ONNX LRN): "
              "x / (bias + alpha / size * sum of x^2 over the size-channel window)^beta."),
]
