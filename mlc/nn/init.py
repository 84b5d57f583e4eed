"""Parameter initialization schemes (numpy, seeded): what a layer's ``init`` draws from."""
from __future__ import annotations

import math

import numpy as np


def fans(shape) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight: [in, out] for linear layers, [out, in, *kernel] for convs."""
    if len(shape) == 2:
        return shape[0], shape[1]
    receptive = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive


def uniform(rng, shape, bound, dtype=np.float32):
    return rng.uniform(-bound, bound, shape).astype(dtype)


def normal(rng, shape, std=1.0, dtype=np.float32):
    return (rng.standard_normal(shape) * std).astype(dtype)


def kaiming_uniform(rng, shape, fan_in=None, gain=math.sqrt(2.0), dtype=np.float32):
    """He initialization: U(-b, b) with b = gain * sqrt(3 / fan_in) (gain sqrt(2) suits ReLU)."""
    fan_in = fan_in or fans(shape)[0]
    return uniform(rng, shape, gain * math.sqrt(3.0 / fan_in), dtype)


def kaiming_normal(rng, shape, fan_in=None, gain=math.sqrt(2.0), dtype=np.float32):
    fan_in = fan_in or fans(shape)[0]
    return normal(rng, shape, gain / math.sqrt(fan_in), dtype)


def xavier_uniform(rng, shape, gain=1.0, dtype=np.float32):
    """Glorot initialization: U(-b, b) with b = gain * sqrt(6 / (fan_in + fan_out))."""
    fan_in, fan_out = fans(shape)
    return uniform(rng, shape, gain * math.sqrt(6.0 / (fan_in + fan_out)), dtype)


def xavier_normal(rng, shape, gain=1.0, dtype=np.float32):
    fan_in, fan_out = fans(shape)
    return normal(rng, shape, gain * math.sqrt(2.0 / (fan_in + fan_out)), dtype)


def torch_default(rng, shape, fan_in, dtype=np.float32):
    """PyTorch's default for Linear/Conv weights and biases: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    return uniform(rng, shape, 1.0 / math.sqrt(max(fan_in, 1)), dtype)


def zeros(shape, dtype=np.float32):
    return np.zeros(shape, dtype)


def ones(shape, dtype=np.float32):
    return np.ones(shape, dtype)
