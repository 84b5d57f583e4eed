"""``mlc.<op>`` functions, one per registered op, generated from the registry.

Inside ``mlc.trace``/``mlc.jit`` they record graph nodes; called on plain numpy
arrays they evaluate the op's numpy reference.
"""
from __future__ import annotations

import inspect

from .. import ops
from .trace import apply


def signature_of(op) -> inspect.Signature:
    """The op's call signature as ``help()`` and editors show it: its inputs (a variadic
    op takes one sequence of tensors), then its attributes with their defaults."""
    P = inspect.Parameter
    params = [P(p.lstrip("*"), P.POSITIONAL_OR_KEYWORD) for p in op.params]
    params += [P(k, P.POSITIONAL_OR_KEYWORD, default=v) for k, v in op.attrs.items()]
    return inspect.Signature(params)


def _op_function(name: str):
    op = ops.get(name)

    def fn(*args, **kwargs):
        return apply(name, *args, **kwargs)

    fn.__name__ = fn.__qualname__ = name
    fn.__module__ = "mlc"
    fn.__signature__ = signature_of(op)
    article = "An" if op.kind[0] in "aeiou" else "A"
    fn.__doc__ = f"{op.doc}\n\n{article} {op.kind} op. Inside mlc.trace / mlc.jit it records a graph node; on numpy " \
                 f"arrays it evaluates the numpy reference."
    return fn


# control flow takes Python functions: mlc.scan, mlc.while_loop, mlc.cond (frontend/control.py)
OP_FUNCTIONS = {name: _op_function(name) for name in ops.REGISTRY if name != "constant" and not ops.is_control(name)}
