"""Learning-rate schedules: functions of the step count (a traced float64 scalar, or
a number), so the rate is computed inside the compiled step and never forces a
recompile. Each also works on plain numbers: ``cosine(0.1, 100)(50)``."""
from __future__ import annotations

import math

import numpy as np

from ..frontend.trace import apply as op


def _as_f64(step):
    return np.float64(step) if isinstance(step, (int, float, np.integer, np.floating)) else step


def constant(lr: float):
    return lambda step: _as_f64(step) * 0.0 + lr


def step_decay(lr: float, step_size: int, gamma: float = 0.1):
    """lr * gamma ** floor(step / step_size) (PyTorch's StepLR)."""
    if step_size < 1:
        raise ValueError(f"step_decay: step_size must be >= 1, got {step_size}")
    return lambda step: lr * op("pow", np.float64(gamma), op("floor", _as_f64(step) * (1.0 / step_size)))


def cosine(lr: float, total_steps: int, min_lr: float = 0.0):
    """min_lr + (lr - min_lr) * (1 + cos(pi * min(step, total) / total)) / 2 (cosine annealing)."""
    if total_steps < 1:
        raise ValueError(f"cosine: total_steps must be >= 1, got {total_steps}")

    def schedule(step):
        t = op("minimum", _as_f64(step), np.float64(total_steps)) * (math.pi / total_steps)
        return min_lr + (lr - min_lr) * 0.5 * (1.0 + op("cos", t))
    return schedule


def warmup(schedule, warmup_steps: int):
    """Linear warm-up from 0 over ``warmup_steps``, then ``schedule`` (shifted)."""
    def warmed(step):
        s = _as_f64(step)
        ramp = op("minimum", (s + 1.0) * (1.0 / warmup_steps), np.float64(1.0))
        return ramp * schedule(op("maximum", s - float(warmup_steps), np.float64(0.0)))
    return warmed
