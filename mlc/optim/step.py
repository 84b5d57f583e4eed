"""The compiled training step: forward, backward and update in one executable."""
from __future__ import annotations

from typing import Callable

from ..driver import JitFunction
from ..transforms import value_and_grad
from .optimizers import Optimizer


def train_step(loss_fn: Callable, optimizer: Optimizer, has_state: bool = False, **jit_options) -> JitFunction:
    """Compile one training step of ``loss_fn`` with ``optimizer``.

    Without state: ``loss_fn(params, *batch) -> loss`` and
    ``step(params, opt_state, *batch) -> loss``.
    With ``has_state`` (e.g. BatchNorm running statistics):
    ``loss_fn(params, model_state, *batch) -> (loss, new_model_state)`` and
    ``step(params, opt_state, model_state, *batch) -> loss``.

    The parameters, optimizer state (and model state) are updated in place: pass
    the same (writeable, C-contiguous) arrays every step. The step is traced and
    compiled on the first call for each batch shape."""
    if has_state:
        def step(params, opt_state, model_state, *batch):
            (loss, new_model_state), grads = value_and_grad(loss_fn, has_aux=True)(params, model_state, *batch)
            new_params, new_opt_state = optimizer.update(grads, opt_state, params)
            return loss, new_params, new_opt_state, new_model_state
        in_place = (0, 1, 2)
    else:
        def step(params, opt_state, *batch):
            loss, grads = value_and_grad(loss_fn)(params, *batch)
            new_params, new_opt_state = optimizer.update(grads, opt_state, params)
            return loss, new_params, new_opt_state
        in_place = (0, 1)
    step.__name__ = f"train_{getattr(loss_fn, '__name__', 'step')}"
    return JitFunction(step, in_place=in_place, **jit_options)
