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


def transformer_block(x, wq, bq, wk, bk, wv, bv, wo, bo, ln1_scale, ln1_bias,
                      w1, b1, w2, b2, ln2_scale, ln2_bias, heads: int = 12):
    """A post-LN (BERT-style) transformer encoder block on x of shape (batch, seq, hidden):

        a = softmax(Q K^T / sqrt(d)) V per head, with Q, K, V = x @ w + b and d = hidden / heads
        h = layer_norm(x + a @ wo + bo)
        y = layer_norm(h + gelu(h @ w1 + b1) @ w2 + b2)

    gelu is the exact erf form; layer_norm uses epsilon 1e-5. ``heads`` is a
    Python int, so it is baked into the trace as a constant."""
    import math

    import mlc
    batch, seq, hidden = x.shape
    d = hidden // heads

    def split_heads(t):   # (batch, seq, hidden) -> (batch, heads, seq, d)
        return mlc.transpose(t.reshape(batch, seq, heads, d), axes=[0, 2, 1, 3])

    q = split_heads(x @ wq + bq)
    k = split_heads(x @ wk + bk)
    v = split_heads(x @ wv + bv)
    scores = (q @ mlc.transpose(k, axes=[0, 1, 3, 2])) / math.sqrt(d)
    a = mlc.softmax(scores, axis=-1) @ v                                    # (batch, heads, seq, d)
    a = mlc.transpose(a, axes=[0, 2, 1, 3]).reshape(batch, seq, hidden)
    h = mlc.layer_norm(x + (a @ wo + bo), ln1_scale, ln1_bias, axis=-1, epsilon=1e-5)
    f = mlc.gelu(h @ w1 + b1) @ w2 + b2
    return mlc.layer_norm(h + f, ln2_scale, ln2_bias, axis=-1, epsilon=1e-5)


def transformer_inputs(seq: int = 128, hidden: int = 768, heads: int = 12, ffn: int = 3072, seed: int = 0):
    """The arguments of ``transformer_block`` in order (batch 1, float32), weights
    scaled by 0.02; ``heads`` only checks that it divides ``hidden`` (pass it to
    ``transformer_block`` as a keyword when it is not 12)."""
    if hidden % heads:
        raise ValueError(f"hidden ({hidden}) must be a multiple of heads ({heads})")
    rng = np.random.default_rng(seed)

    def w(*shape, scale=0.02):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    x = rng.standard_normal((1, seq, hidden)).astype(np.float32)
    wq, bq, wk, bk, wv, bv, wo, bo = (w(hidden, hidden), w(hidden), w(hidden, hidden), w(hidden),
                                      w(hidden, hidden), w(hidden), w(hidden, hidden), w(hidden))
    ln1_scale, ln1_bias = 1.0 + w(hidden, scale=0.1), w(hidden)
    w1, b1, w2, b2 = w(hidden, ffn), w(ffn), w(ffn, hidden), w(hidden)
    ln2_scale, ln2_bias = 1.0 + w(hidden, scale=0.1), w(hidden)
    return (x, wq, bq, wk, bk, wv, bv, wo, bo, ln1_scale, ln1_bias,
            w1, b1, w2, b2, ln2_scale, ln2_bias)


def transformer_numpy(x, wq, bq, wk, bk, wv, bv, wo, bo, ln1_scale, ln1_bias,
                      w1, b1, w2, b2, ln2_scale, ln2_bias, heads: int = 12):
    """``transformer_block`` in plain numpy (float64 inside, float32 out)."""
    import math
    x = np.asarray(x, np.float64)
    batch, seq, hidden = x.shape
    d = hidden // heads

    def split_heads(t):
        return t.reshape(batch, seq, heads, d).transpose(0, 2, 1, 3)

    def layer_norm(t, scale, bias, eps=1e-5):
        mu = t.mean(axis=-1, keepdims=True)
        var = ((t - mu) ** 2).mean(axis=-1, keepdims=True)
        return (t - mu) / np.sqrt(var + eps) * scale + bias

    q, k, v = split_heads(x @ wq + bq), split_heads(x @ wk + bk), split_heads(x @ wv + bv)
    s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(d)
    e = np.exp(s - s.max(axis=-1, keepdims=True))
    a = (e / e.sum(axis=-1, keepdims=True)) @ v
    a = a.transpose(0, 2, 1, 3).reshape(batch, seq, hidden)
    h = layer_norm(x + a @ wo + bo, ln1_scale, ln1_bias)
    u = h @ w1 + b1
    g = 0.5 * u * (1.0 + np.vectorize(math.erf)(u / math.sqrt(2.0)))
    return layer_norm(h + g @ w2 + b2, ln2_scale, ln2_bias).astype(np.float32)


EXAMPLES = {
    "mlp": (mlp, mlp_inputs),
    "gelu": (gelu_chain, gelu_inputs),
    "transformer": (transformer_block, transformer_inputs),
}
