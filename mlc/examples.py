"""Bundled examples for ``mlc ir`` and ``mlc demo``: each is a function plus
example inputs made from a fixed seed."""
from __future__ import annotations

import numpy as np


def mlp(x, w1, b1, w2):
    """A two-layer perceptron with a softmax head."""
    import mlc
    h = mlc.relu(x @ w1 + b1)
    return mlc.softmax(h @ w2, axis=-1)


def mlp_inputs(batch: int = 32, seed: int = 0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((batch, 784)).astype(np.float32),
            (rng.standard_normal((784, 128)) * 0.05).astype(np.float32),
            (rng.standard_normal(128) * 0.1).astype(np.float32),
            (rng.standard_normal((128, 10)) * 0.1).astype(np.float32))


def mlp_numpy(x, w1, b1, w2):
    h = np.maximum(x @ w1 + b1, 0)
    z = h @ w2
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def gelu_chain(x):
    """An elementwise chain: tanh-approximated GELU."""
    import mlc
    return 0.5 * x * (1.0 + mlc.tanh(0.7978845608 * (x + 0.044715 * x * x * x)))


def gelu_inputs(seed: int = 0):
    return (np.random.default_rng(seed).standard_normal((64, 256)).astype(np.float32),)


EXAMPLES = {
    "mlp": (mlp, mlp_inputs),
    "gelu": (gelu_chain, gelu_inputs),
}
