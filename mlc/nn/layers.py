"""Layers written with traced ops: they compile, fuse and differentiate like any
other mlc code. A layer holds only its configuration; its parameters and state are
plain pytrees of numpy arrays:

    model = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(32 * 14 * 14, 10))
    params, state = model.init(seed=0)
    logits, state = model.apply(params, state, x, train=True, seed=step_seed)

``params`` are what the optimizer trains; ``state`` holds what training updates
without gradients (BatchNorm's running statistics). ``seed`` (an int64 scalar
array, usually different every step) drives Dropout; each Dropout layer draws its
own stream from it.
"""
from __future__ import annotations

import itertools
import math

import numpy as np

from ..frontend.trace import apply as op
from . import init as initializers


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, (int, np.integer)) else tuple(int(x) for x in v)


class Module:
    """A layer: ``init(seed) -> (params, state)`` and
    ``apply(params, state, x, train=False, seed=None) -> (y, new_state)``."""

    def init(self, seed: int = 0):
        return self.init_with(np.random.default_rng(seed))

    def init_with(self, rng: np.random.Generator):
        return {}, {}

    def apply(self, params, state, x, train: bool = False, seed=None):
        return self.forward(params, x), state

    def forward(self, params, x):
        raise NotImplementedError(f"{type(self).__name__} must define forward or apply")

    def __call__(self, params, x):
        """Inference with no state (layers without running statistics)."""
        return self.forward(params, x)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


class Linear(Module):
    """y = x @ w + b with w of shape [in_features, out_features] (PyTorch's initialization)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        self.in_features, self.out_features, self.bias = in_features, out_features, bias

    def init_with(self, rng):
        p = {"w": initializers.torch_default(rng, (self.in_features, self.out_features), self.in_features)}
        if self.bias:
            p["b"] = initializers.torch_default(rng, (self.out_features,), self.in_features)
        return p, {}

    def forward(self, params, x):
        if x.shape[-1] != self.in_features:
            raise ValueError(f"Linear({self.in_features}, {self.out_features}) got input of shape {tuple(x.shape)}")
        y = x @ params["w"]
        return y + params["b"] if self.bias else y


class Conv2d(Module):
    """2-D convolution over NCHW input; weights [out, in / groups, kh, kw]."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True):
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"Conv2d: channels ({in_channels}, {out_channels}) must divide by groups={groups}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride = _pair(kernel_size), _pair(stride)
        self.padding, self.dilation, self.groups, self.bias = _pair(padding), _pair(dilation), groups, bias

    def init_with(self, rng):
        kh, kw = self.kernel_size
        fan_in = self.in_channels // self.groups * kh * kw
        p = {"w": initializers.torch_default(rng, (self.out_channels, self.in_channels // self.groups, kh, kw), fan_in)}
        if self.bias:
            p["b"] = initializers.torch_default(rng, (self.out_channels,), fan_in)
        return p, {}

    def forward(self, params, x):
        ph, pw = self.padding
        y = op("conv", x, params["w"], strides=self.stride, dilations=self.dilation, pads=(ph, pw, ph, pw),
               group=self.groups)
        return y + op("reshape", params["b"], shape=(self.out_channels, 1, 1)) if self.bias else y


class BatchNorm2d(Module):
    """Batch normalization over NCHW: batch statistics while training (and a running
    average kept in ``state``), the running statistics in inference."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1):
        self.num_features, self.eps, self.momentum = num_features, eps, momentum

    def init_with(self, rng):
        c = self.num_features
        return ({"scale": initializers.ones((c,)), "bias": initializers.zeros((c,))},
                {"mean": initializers.zeros((c,)), "var": initializers.ones((c,))})

    def apply(self, params, state, x, train=False, seed=None):
        if not train:
            return op("batch_norm", x, params["scale"], params["bias"], state["mean"], state["var"],
                      epsilon=self.eps), state
        mean = op("mean", x, axis=(0, 2, 3))
        centered = x - op("reshape", mean, shape=(1, -1, 1, 1))
        var = op("mean", centered * centered, axis=(0, 2, 3))
        y = op("batch_norm", x, params["scale"], params["bias"], mean, var, epsilon=self.eps)
        n = x.size // x.shape[1]
        m = self.momentum
        new_state = {"mean": state["mean"] * (1.0 - m) + mean * m,
                     "var": state["var"] * (1.0 - m) + var * (m * n / max(n - 1, 1))}   # unbiased, as torch
        return y, new_state

    def forward(self, params, x):
        raise TypeError("BatchNorm2d keeps running statistics: use apply(params, state, x, train=...)")


class LayerNorm(Module):
    """Normalization over the last axis with a learned scale and bias."""

    def __init__(self, normalized_shape: int, eps: float = 1e-5):
        self.normalized_shape, self.eps = int(normalized_shape), eps

    def init_with(self, rng):
        n = self.normalized_shape
        return {"scale": initializers.ones((n,)), "bias": initializers.zeros((n,))}, {}

    def forward(self, params, x):
        return op("layer_norm", x, params["scale"], params["bias"], axis=-1, epsilon=self.eps)


_STREAMS = itertools.count(1)


class Dropout(Module):
    """Zeroes each element with probability p while training and scales the rest by
    1 / (1 - p); the identity in inference. Reproducible: the mask is a pure function
    of the step's ``seed`` and this layer's stream."""

    def __init__(self, p: float = 0.5, stream: int | None = None):
        if not 0.0 <= p < 1.0:
            raise ValueError(f"Dropout: p must be in [0, 1), got {p}")
        self.p = p
        self.stream = next(_STREAMS) if stream is None else stream

    def apply(self, params, state, x, train=False, seed=None):
        if not train or self.p == 0.0:
            return x, state
        if seed is None:
            raise ValueError("Dropout in training needs a seed: apply(..., train=True, seed=np.int64 array)")
        keep = op("random_uniform", seed, shape=tuple(x.shape), stream=self.stream) >= self.p
        return op("where", keep, x * (1.0 / (1.0 - self.p)), 0.0), state

    def forward(self, params, x):
        return x


class Embedding(Module):
    """Rows of a [num_embeddings, dim] table picked by integer ids."""

    def __init__(self, num_embeddings: int, embedding_dim: int):
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim

    def init_with(self, rng):
        return {"table": initializers.normal(rng, (self.num_embeddings, self.embedding_dim))}, {}

    def forward(self, params, ids):
        if np.dtype(ids.dtype).kind not in "iu":
            raise TypeError(f"Embedding: ids must be integers, got {ids.dtype}")
        return op("gather", params["table"], ids, axis=0)


class MultiHeadAttention(Module):
    """Self-attention over x [batch, seq, dim] with ``heads`` heads; ``causal`` masks
    future positions."""

    def __init__(self, dim: int, heads: int, causal: bool = False, bias: bool = True):
        if dim % heads:
            raise ValueError(f"MultiHeadAttention: dim {dim} must divide by heads {heads}")
        self.dim, self.heads, self.causal, self.bias = dim, heads, causal, bias

    def init_with(self, rng):
        p = {}
        for name in ("q", "k", "v", "o"):
            p["w" + name] = initializers.xavier_uniform(rng, (self.dim, self.dim))
            if self.bias:
                p["b" + name] = initializers.zeros((self.dim,))
        return p, {}

    def _project(self, params, x, name):
        y = x @ params["w" + name]
        return y + params["b" + name] if self.bias else y

    def forward(self, params, x):
        b, t, d = x.shape
        h, hd = self.heads, d // self.heads

        def heads(y):   # [b, t, d] -> [b, h, t, hd]
            return op("transpose", op("reshape", y, shape=(b, t, h, hd)), axes=(0, 2, 1, 3))

        q, k, v = (heads(self._project(params, x, n)) for n in ("q", "k", "v"))
        scores = (q @ op("transpose", k, axes=(0, 1, 3, 2))) * (1.0 / math.sqrt(hd))
        if self.causal:
            future = np.triu(np.ones((t, t), bool), 1)
            scores = op("where", future, -1e9, scores)
        ctx = op("softmax", scores, axis=-1) @ v
        ctx = op("reshape", op("transpose", ctx, axes=(0, 2, 1, 3)), shape=(b, t, d))
        return self._project(params, ctx, "o")


class Sequential(Module):
    """Layers applied in order; params and state are lists with one entry per layer."""

    def __init__(self, *layers: Module):
        self.layers = list(layers)

    def init_with(self, rng):
        ps, ss = [], []
        for layer in self.layers:
            p, s = layer.init_with(rng)
            ps.append(p)
            ss.append(s)
        return ps, ss

    def apply(self, params, state, x, train=False, seed=None):
        new_state = []
        for layer, p, s in zip(self.layers, params, state):
            x, s = layer.apply(p, s, x, train=train, seed=seed)
            new_state.append(s)
        return x, new_state

    def forward(self, params, x):
        y, _ = self.apply(params, [{} for _ in self.layers], x)
        return y

    def __repr__(self) -> str:
        return "Sequential(\n" + "".join(f"  {layer!r},\n" for layer in self.layers) + ")"


# ----------------------------------------------------------------------------- parameter-free layers

class _Stateless(Module):
    fn = None

    def forward(self, params, x):
        return type(self).fn(x)


def _activation(name: str, fn) -> type:
    return type(name, (_Stateless,), {"fn": staticmethod(fn), "__doc__": f"The {name} activation as a layer."})


ReLU = _activation("ReLU", lambda x: op("relu", x))
GELU = _activation("GELU", lambda x: op("gelu", x))
Tanh = _activation("Tanh", lambda x: op("tanh", x))
Sigmoid = _activation("Sigmoid", lambda x: op("sigmoid", x))


class LeakyReLU(Module):
    def __init__(self, negative_slope: float = 0.01):
        self.negative_slope = negative_slope

    def forward(self, params, x):
        return op("leaky_relu", x, alpha=self.negative_slope)


class Flatten(Module):
    """[N, ...] -> [N, prod(...)]."""

    def forward(self, params, x):
        return op("reshape", x, shape=(x.shape[0], -1))


class MaxPool2d(Module):
    def __init__(self, kernel_size, stride=None, padding=0):
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride) if stride is not None else self.kernel_size
        self.padding = _pair(padding)

    def forward(self, params, x):
        ph, pw = self.padding
        return op("max_pool", x, kernel_shape=self.kernel_size, strides=self.stride, pads=(ph, pw, ph, pw))


class AvgPool2d(MaxPool2d):
    def forward(self, params, x):
        ph, pw = self.padding
        return op("avg_pool", x, kernel_shape=self.kernel_size, strides=self.stride, pads=(ph, pw, ph, pw))
