"""``mlc.<op>`` functions, one per registered op, generated from the registry.

Inside ``mlc.trace``/``mlc.jit`` they record graph nodes; called on plain numpy
arrays they evaluate the op's numpy reference.
"""
from __future__ import annotations

from .. import ops
from .trace import apply


def _op_function(name: str):
    op = ops.get(name)

    def fn(*args, **kwargs):
        return apply(name, *args, **kwargs)

    fn.__name__ = fn.__qualname__ = name
    params = list(op.params) + [f"{k}={v!r}" for k, v in op.attrs.items()]
    fn.__doc__ = f"{name}({', '.join(params)})\n\n{op.doc}"
    return fn


OP_FUNCTIONS = {name: _op_function(name) for name in ops.REGISTRY if name != "constant"}
