"""Recurrent layers on ``mlc.scan``: ``RNN``, ``GRU`` and ``LSTM`` with PyTorch's
semantics, parameter names and shapes, so a PyTorch state dict is their parameters:

    lstm = nn.LSTM(input_size=32, hidden_size=64, num_layers=2, bidirectional=True)
    params, _ = lstm.init(seed=0)          # {"weight_ih_l0": [256, 32], ..., "bias_hh_l1_reverse": [256]}
    params = {k: v.numpy() for k, v in torch_lstm.state_dict().items()}   # or PyTorch's weights
    out, (h_n, c_n) = lstm(params, x)      # x: [T, B, 32] ([B, T, 32] with batch_first=True)

Each layer and direction is one ``scan`` whose step does only the recurrent
product: the input's product with every step's weights is one matmul over the whole
sequence before the loop. The loop stays a loop in the compiled code.
"""
from __future__ import annotations

import math

import numpy as np

from ..frontend.control import scan
from ..frontend.trace import apply as op
from . import init as initializers
from .layers import Module


class _Recurrent(Module):
    gates = 1         # weight rows per hidden unit
    has_cell = False  # LSTM's second state

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, bidirectional: bool = False):
        for name, v in (("input_size", input_size), ("hidden_size", hidden_size), ("num_layers", num_layers)):
            if not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{type(self).__name__}: {name} must be a positive int, got {v!r}")
        self.input_size, self.hidden_size, self.num_layers = int(input_size), int(hidden_size), int(num_layers)
        self.bias, self.batch_first, self.bidirectional = bool(bias), bool(batch_first), bool(bidirectional)

    @property
    def directions(self) -> int:
        return 2 if self.bidirectional else 1

    def param_names(self):
        """(layer, direction, {role: PyTorch name}) for every layer and direction."""
        for layer in range(self.num_layers):
            for d in range(self.directions):
                sfx = f"_l{layer}" + ("_reverse" if d else "")
                names = {"w_ih": "weight_ih" + sfx, "w_hh": "weight_hh" + sfx}
                if self.bias:
                    names.update(b_ih="bias_ih" + sfx, b_hh="bias_hh" + sfx)
                yield layer, d, names

    def init_with(self, rng):
        h, g = self.hidden_size, self.gates * self.hidden_size
        bound = 1.0 / math.sqrt(h)   # PyTorch's: every weight and bias uniform in +-1/sqrt(hidden)
        params = {}
        for layer, _, names in self.param_names():
            fan = self.input_size if layer == 0 else h * self.directions
            shapes = {"w_ih": (g, fan), "w_hh": (g, h), "b_ih": (g,), "b_hh": (g,)}
            for role, name in names.items():
                params[name] = initializers.uniform(rng, shapes[role], bound)
        return params, {}

    def step(self, carry, xp, w_hh_t, b_hh):
        """One time step: ``xp`` is the input's projection (with its bias) at this step."""
        raise NotImplementedError

    def __call__(self, params, x, state=None):
        return self.forward(params, x, state)

    def forward(self, params, x, state=None):
        """``(output, final state)``. ``x``: [T, B, input_size] ([B, T, input_size] with
        batch_first, or [T, input_size] unbatched); ``state``: h0 (LSTM: (h0, c0)), each
        [num_layers * directions, B, hidden_size], zeros when None."""
        missing = [n for _, _, names in self.param_names() for n in names.values() if n not in params]
        if missing:
            raise KeyError(f"{type(self).__name__}: parameters {', '.join(missing)} are missing")
        if len(x.shape) not in (2, 3) or x.shape[-1] != self.input_size:
            raise ValueError(f"{type(self).__name__}(input_size={self.input_size}) takes [T, B, {self.input_size}]"
                             f"{' (batch first: [B, T, ...])' if self.batch_first else ''} or [T, {self.input_size}]"
                             f", got an input of shape {tuple(x.shape)}")
        unbatched = len(x.shape) == 2
        if unbatched:
            x = op("expand_dims", x, axis=1)
        elif self.batch_first:
            x = op("transpose", x, axes=(1, 0, 2))
        steps, batch = x.shape[0], x.shape[1]
        h, layers = self.hidden_size, self.num_layers * self.directions
        states = self._initial(state, batch, x.dtype, unbatched)
        finals = []
        for layer in range(self.num_layers):
            outs = []
            for _, d, names in (t for t in self.param_names() if t[0] == layer):
                k = layer * self.directions + d
                w_ih, w_hh = params[names["w_ih"]], params[names["w_hh"]]
                flat = op("reshape", x, shape=(steps * batch, x.shape[2]))
                xp = flat @ op("transpose", w_ih)
                if self.bias:
                    xp = xp + params[names["b_ih"]]
                xp = op("reshape", xp, shape=(steps, batch, self.gates * h))
                b_hh = params[names["b_hh"]] if self.bias else None
                w_hh_t = op("transpose", w_hh)
                carry0 = tuple(s[k] for s in states) if self.has_cell else states[0][k]
                final, ys = scan(lambda c, xt: self.step(c, xt, w_hh_t, b_hh), carry0, xp, reverse=d == 1)
                finals.append(final)
                outs.append(ys)
            x = outs[0] if len(outs) == 1 else op("concatenate", outs, axis=2)
        if unbatched:
            x = op("squeeze", x, axis=1)
        elif self.batch_first:
            x = op("transpose", x, axes=(1, 0, 2))

        def stacked(parts):
            parts = [op("expand_dims", p, axis=0) for p in parts]
            s = parts[0] if layers == 1 else op("concatenate", parts, axis=0)
            return op("squeeze", s, axis=1) if unbatched else s
        if self.has_cell:
            return x, (stacked([f[0] for f in finals]), stacked([f[1] for f in finals]))
        return x, stacked(finals)

    def _initial(self, state, batch: int, dtype, unbatched: bool) -> list:
        layers, h = self.num_layers * self.directions, self.hidden_size
        shape = (layers, batch, h)
        parts = (state if self.has_cell else (state,)) if state is not None else None
        if parts is None:
            return [np.zeros(shape, np.dtype(dtype)) for _ in range(1 + self.has_cell)]
        if self.has_cell and len(parts) != 2:
            raise ValueError(f"{type(self).__name__}: state must be (h0, c0)")
        out = []
        for p in parts:
            if unbatched:
                p = op("expand_dims", p, axis=1)
            if tuple(p.shape) != shape:
                raise ValueError(f"{type(self).__name__}: an initial state must have shape "
                                 f"{[layers] + ([] if unbatched else [batch]) + [h]}, got {list(p.shape)}")
            out.append(p)
        return out


def _gates(z, n: int, h: int):
    return [z[:, i * h:(i + 1) * h] for i in range(n)]


def _recurrent(h_prev, w_hh_t, b_hh):
    r = h_prev @ w_hh_t
    return r + b_hh if b_hh is not None else r


class RNN(_Recurrent):
    """Elman RNN: h' = act(x W_ih^T + b_ih + h W_hh^T + b_hh), act tanh or relu."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, nonlinearity: str = "tanh",
                 bias: bool = True, batch_first: bool = False, bidirectional: bool = False):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, bidirectional)
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"RNN: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity

    def step(self, h, xp, w_hh_t, b_hh):
        h = op(self.nonlinearity, xp + _recurrent(h, w_hh_t, b_hh))
        return h, h


class GRU(_Recurrent):
    """PyTorch's GRU: gates r, z, n in that order; n = tanh(x_n + r * (h W_hn^T + b_hn)),
    h' = (1 - z) * n + z * h."""
    gates = 3

    def step(self, h, xp, w_hh_t, b_hh):
        hs = self.hidden_size
        xr, xz, xn = _gates(xp, 3, hs)
        hr, hz, hn = _gates(_recurrent(h, w_hh_t, b_hh), 3, hs)
        r, z = op("sigmoid", xr + hr), op("sigmoid", xz + hz)
        n = op("tanh", xn + r * hn)
        h = (1.0 - z) * n + z * h
        return h, h


class LSTM(_Recurrent):
    """PyTorch's LSTM: gates i, f, g, o in that order; c' = f * c + i * g, h' = o * tanh(c');
    state (h, c)."""
    gates = 4
    has_cell = True

    def step(self, carry, xp, w_hh_t, b_hh):
        h, c = carry
        i, f, g, o = _gates(xp + _recurrent(h, w_hh_t, b_hh), 4, self.hidden_size)
        c = op("sigmoid", f) * c + op("sigmoid", i) * op("tanh", g)
        h = op("sigmoid", o) * op("tanh", c)
        return (h, c), h
