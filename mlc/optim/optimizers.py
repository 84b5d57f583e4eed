"""Optimizers as pure functions over pytrees, written with traced ops (PyTorch's
update rules, so results can be compared step for step)."""
from __future__ import annotations

import numpy as np

from ..frontend.trace import apply as op
from ..tree import flatten, leaves, tree_map, unflatten


def _schedule(lr):
    return lr if callable(lr) else (lambda step: lr)


class Optimizer:
    """``init(params) -> state``; ``update(grads, state, params) -> (params, state)``.
    ``lr`` is a number or a schedule (``mlc.optim.cosine`` ...) of the step count."""

    def __init__(self, lr, weight_decay: float = 0.0):
        if not callable(lr) and lr < 0:
            raise ValueError(f"{type(self).__name__}: lr must be >= 0, got {lr}")
        self.lr = _schedule(lr)
        self.weight_decay = weight_decay

    def slots(self) -> tuple[str, ...]:
        """Names of the per-parameter state trees (e.g. Adam's "m" and "v")."""
        return ()

    def init(self, params) -> dict:
        for p in leaves(params):
            if not isinstance(p, np.ndarray) or p.dtype.kind != "f":
                raise TypeError(f"{type(self).__name__}.init: parameters must be float numpy arrays, got "
                                f"{getattr(p, 'dtype', type(p).__name__)}")
        state = {"step": np.zeros((), np.int64)}
        for name in self.slots():
            state[name] = tree_map(np.zeros_like, params)
        return state

    def update(self, grads, state, params):
        step = state["step"]
        t = op("cast", step, dtype="float64")   # step-size arithmetic in double, as PyTorch does in Python
        lr = self.lr(t)
        ps, tree = flatten(params)
        old = {name: leaves(state[name]) for name in self.slots()}
        new = {name: [] for name in self.slots()}
        new_ps = []
        for i, (g, p) in enumerate(zip(leaves(grads), ps)):
            p2, s2 = self.update_one(g, p, {name: old[name][i] for name in self.slots()}, lr, t)
            new_ps.append(p2)
            for name in self.slots():
                new[name].append(s2[name])
        new_state = {"step": step + 1}
        for name in self.slots():
            new_state[name] = unflatten(tree, new[name])
        return unflatten(tree, new_ps), new_state

    def update_one(self, g, p, slots: dict, lr, t):
        raise NotImplementedError


def _cast_lr(lr, p):
    return op("cast", lr, dtype=p.dtype) if hasattr(lr, "dtype") and lr.dtype != p.dtype else lr


class SGD(Optimizer):
    """p -= lr * g, with optional momentum (PyTorch's: the buffer starts as the first
    gradient), Nesterov momentum, dampening and L2 weight decay."""

    def __init__(self, lr, momentum: float = 0.0, nesterov: bool = False, dampening: float = 0.0,
                 weight_decay: float = 0.0):
        super().__init__(lr, weight_decay)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("SGD: Nesterov momentum needs momentum > 0 and no dampening")
        self.momentum, self.nesterov, self.dampening = momentum, nesterov, dampening

    def slots(self):
        return ("momentum",) if self.momentum else ()

    def update_one(self, g, p, slots, lr, t):
        lr = _cast_lr(lr, p)
        if self.weight_decay:
            g = g + self.weight_decay * p
        if not self.momentum:
            return p - lr * g, {}
        buf = op("where", op("equal", t, 0.0), g, slots["momentum"] * self.momentum + g * (1.0 - self.dampening))
        d = g + buf * self.momentum if self.nesterov else buf
        return p - lr * d, {"momentum": buf}


class Adam(Optimizer):
    """Adam with bias correction; ``weight_decay`` adds an L2 term to the gradient
    (PyTorch's Adam). Use AdamW for decoupled weight decay."""

    decoupled = False

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0):
        super().__init__(lr, weight_decay)
        self.beta1, self.beta2 = betas
        self.eps = eps

    def slots(self):
        return ("m", "v")

    def update_one(self, g, p, slots, lr, t):
        lr = _cast_lr(lr, p)
        b1, b2 = self.beta1, self.beta2
        if self.weight_decay and not self.decoupled:
            g = g + self.weight_decay * p
        if self.weight_decay and self.decoupled:
            p = p - lr * self.weight_decay * p
        m = slots["m"] * b1 + g * (1.0 - b1)
        v = slots["v"] * b2 + g * g * (1.0 - b2)
        n = t + 1.0
        c1 = 1.0 - op("pow", np.float64(b1), n)
        c2 = 1.0 - op("pow", np.float64(b2), n)
        step_size = _cast_lr(lr / c1, p)
        denom = op("sqrt", v) * _cast_lr(op("rsqrt", c2), p) + self.eps
        return p - step_size * m / denom, {"m": m, "v": v}


class AdamW(Adam):
    """Adam with decoupled weight decay: p -= lr * weight_decay * p before the Adam step."""

    decoupled = True

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 1e-2):
        super().__init__(lr, betas, eps, weight_decay)


class RMSProp(Optimizer):
    """v = alpha v + (1 - alpha) g^2; p -= lr g / (sqrt(v) + eps), optionally with
    momentum and centering (PyTorch's RMSprop)."""

    def __init__(self, lr=1e-2, alpha: float = 0.99, eps: float = 1e-8, momentum: float = 0.0,
                 centered: bool = False, weight_decay: float = 0.0):
        super().__init__(lr, weight_decay)
        self.alpha, self.eps, self.momentum, self.centered = alpha, eps, momentum, centered

    def slots(self):
        return ("v",) + (("g_avg",) if self.centered else ()) + (("momentum",) if self.momentum else ())

    def update_one(self, g, p, slots, lr, t):
        lr = _cast_lr(lr, p)
        if self.weight_decay:
            g = g + self.weight_decay * p
        a = self.alpha
        v = slots["v"] * a + g * g * (1.0 - a)
        new = {"v": v}
        avg = v
        if self.centered:
            g_avg = slots["g_avg"] * a + g * (1.0 - a)
            new["g_avg"] = g_avg
            avg = v - g_avg * g_avg
        denom = op("sqrt", avg) + self.eps
        if self.momentum:
            buf = slots["momentum"] * self.momentum + g / denom
            new["momentum"] = buf
            return p - lr * buf, new
        return p - lr * g / denom, new


def l2_penalty(params, coeff: float):
    """coeff / 2 * sum of squared parameters: add to the loss (gradient coeff * p)."""
    return sum(op("sum", p * p) for p in leaves(params)) * (0.5 * coeff)


def l1_penalty(params, coeff: float):
    """coeff * sum of absolute parameters: add to the loss."""
    return sum(op("sum", op("abs", p)) for p in leaves(params)) * coeff
