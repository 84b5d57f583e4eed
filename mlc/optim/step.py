"""The compiled training step: forward, backward and update in one executable."""
from __future__ import annotations

from typing import Callable

from .. import dist
from ..driver import JitFunction
from ..tree import flatten, unflatten
from ..transforms import value_and_grad
from .optimizers import Optimizer


def train_step(loss_fn: Callable, optimizer: Optimizer, has_state: bool = False, data_parallel: bool = False,
               bucket_bytes: int | None = None, **jit_options) -> JitFunction:
    """Compile one training step of ``loss_fn`` with ``optimizer``.

    Without state: ``loss_fn(params, *batch) -> loss`` and
    ``step(params, opt_state, *batch) -> loss``.
    With ``has_state`` (e.g. BatchNorm running statistics):
    ``loss_fn(params, model_state, *batch) -> (loss, new_model_state)`` and
    ``step(params, opt_state, model_state, *batch) -> loss``.

    The parameters, optimizer state (and model state) are updated in place: pass
    the same (writeable, C-contiguous) arrays every step. The step is traced and
    compiled on the first call for each batch shape.

    ``data_parallel=True`` (under ``mpirun -n N``): every rank passes the same global
    batch and computes on its own 1/N of the rows (``mlc.dist.shard_batch``); after
    autodiff, the gradients are averaged over the ranks by bucketed all-reduces
    (``mlc.dist.allreduce_gradients``, ``bucket_bytes`` per bucket), and so is the
    loss. Every rank then applies the same update: the parameters stay identical and
    equal to single-process training on the whole batch."""
    def grads_of(params, fixed: tuple, batch: tuple, has_aux: bool = False):
        """(value, grads) of loss_fn(params, *fixed, *batch); averaged over the ranks
        of a data-parallel job (each computing on its rows of the batch)."""
        if data_parallel:
            batch = dist.shard_batch(batch)
        value, grads = value_and_grad(loss_fn, has_aux=has_aux)(params, *fixed, *batch)
        if not data_parallel:
            return value, grads
        leaves, tree = flatten(grads)
        grads = unflatten(tree, dist.allreduce_gradients(leaves, bucket_bytes or dist.DEFAULT_BUCKET_BYTES))
        loss = dist.allreduce(value[0] if has_aux else value, op="mean")
        return ((loss, value[1]) if has_aux else loss), grads

    if has_state:
        def step(params, opt_state, model_state, *batch):
            (loss, new_model_state), grads = grads_of(params, (model_state,), batch, has_aux=True)
            new_params, new_opt_state = optimizer.update(grads, opt_state, params)
            return loss, new_params, new_opt_state, new_model_state
        in_place = (0, 1, 2)
    else:
        def step(params, opt_state, *batch):
            loss, grads = grads_of(params, (), batch)
            new_params, new_opt_state = optimizer.update(grads, opt_state, params)
            return loss, new_params, new_opt_state
        in_place = (0, 1)
    step.__name__ = f"train_{getattr(loss_fn, '__name__', 'step')}"
    return JitFunction(step, in_place=in_place, **jit_options)
