"""Optimizers, learning-rate schedules and the compiled training step (``mlc.optim``).

An optimizer is a pair of pure functions over pytrees: ``init(params) -> state``
(numpy arrays) and ``update(grads, state, params) -> (new_params, new_state)``
written with traced ops. ``train_step`` compiles forward, backward and update into
ONE executable that writes the new parameters and optimizer state into the
arrays it is given:

    opt = mlc.optim.Adam(lr=mlc.optim.cosine(1e-3, total_steps=1000))
    opt_state = opt.init(params)
    step = mlc.optim.train_step(loss_fn, opt)       # loss_fn(params, *batch) -> scalar
    for x, y in loader:
        loss = step(params, opt_state, x, y)        # params, opt_state updated in place
"""
from .optimizers import SGD, Adam, AdamW, Optimizer, RMSProp, l1_penalty, l2_penalty
from .schedules import constant, cosine, step_decay, warmup
from .step import train_step

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSProp", "l1_penalty", "l2_penalty", "constant", "cosine",
           "step_decay", "warmup", "train_step"]
