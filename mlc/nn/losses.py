"""Losses, written with traced ops (so they compile and differentiate)."""
from __future__ import annotations

import numpy as np

from ..frontend.trace import apply as op


def _reduce(x, reduction: str):
    if reduction == "mean":
        return op("mean", x)
    if reduction == "sum":
        return op("sum", x)
    if reduction == "none":
        return x
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def one_hot(labels, num_classes: int, dtype=np.float32):
    """labels (integers) -> [..., num_classes] with 1 at each label."""
    classes = np.arange(num_classes, dtype=np.int64)
    return op("cast", op("equal", op("expand_dims", labels, axis=-1), classes), dtype=dtype)


def cross_entropy(logits, labels, reduction: str = "mean", label_smoothing: float = 0.0):
    """Softmax cross-entropy from logits [N, C] (or [..., C]) and integer labels [N]
    (or [...]); the log-softmax is computed stably."""
    if np.dtype(labels.dtype).kind not in "iu":
        raise TypeError(f"cross_entropy: labels must be integer class indices, got {labels.dtype}")
    if tuple(labels.shape) != tuple(logits.shape[:-1]):
        raise ValueError(f"cross_entropy: labels of shape {tuple(labels.shape)} do not match logits of shape "
                         f"{tuple(logits.shape)} (expected {tuple(logits.shape[:-1])})")
    c = logits.shape[-1]
    target = one_hot(labels, c, logits.dtype)
    if label_smoothing:
        target = target * (1.0 - label_smoothing) + label_smoothing / c
    return _reduce(-op("sum", target * op("log_softmax", logits, axis=-1), axis=-1), reduction)


def mse(pred, target, reduction: str = "mean"):
    d = pred - target
    return _reduce(d * d, reduction)


def binary_cross_entropy(probs, target, reduction: str = "mean", eps: float = 1e-7):
    """-[t log p + (1 - t) log(1 - p)], with p clipped to [eps, 1 - eps] (as torch clamps the log)."""
    p = op("clip", probs, min=eps, max=1.0 - eps)
    return _reduce(-(target * op("log", p) + (1.0 - target) * op("log", 1.0 - p)), reduction)


def binary_cross_entropy_with_logits(logits, target, reduction: str = "mean"):
    """The same from logits, stably: max(x, 0) - x t + log(1 + exp(-|x|))."""
    x = logits
    return _reduce(op("relu", x) - x * target + op("log", 1.0 + op("exp", -op("abs", x))), reduction)
