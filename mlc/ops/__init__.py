"""The op registry, built explicitly from each op family's ``OPS`` list.

``get(name)`` returns the ``OpDef`` record (type rule, numpy reference, lowering,
gradient slot, kind). Adding an op means adding a record to one family file.
"""
from __future__ import annotations

import numpy as np

from ..ir.graph import Graph, verify as _verify_graph
from ..ir.types import TensorType
from . import collective, control, conv, elementwise, im2col, indexing, linalg, nn, pool, random, reduction, shape
from .registry import OpDef, OpTypeError

# ``constant`` has no inputs: its value attribute is the data. Graph lowering keeps
# constants as runtime parameters (or literals when they hold one element).
CONSTANT = OpDef("constant", "opaque",
                 infer=lambda ins, value: [TensorType.of(value)],
                 reference=lambda value: value,
                 lower=lambda ins, outs, value: [],
                 params=(), attrs={"value": None}, doc="A constant tensor.")

_FAMILIES = (elementwise, reduction, linalg, shape, conv, im2col, pool, nn, indexing, random, collective, control)


def _build() -> dict[str, OpDef]:
    table: dict[str, OpDef] = {CONSTANT.name: CONSTANT}
    for family in _FAMILIES:
        for op in family.OPS:
            if op.name in table:
                raise RuntimeError(f"op {op.name} is registered twice")
            table[op.name] = op
    return table


REGISTRY: dict[str, OpDef] = _build()


def get(name: str) -> OpDef:
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown op {name!r}") from None


def communicates(name: str) -> bool:
    """Whether op ``name`` is a collective: it talks to other processes, which wait for
    it, so passes never drop, merge, fold or fuse it."""
    return get(name).kind == "collective"


def is_control(name: str) -> bool:
    """Whether op ``name`` is structured control flow (``ops/control.py``): its bodies are
    graphs, planned and run as nested programs rather than fused into kernels."""
    return get(name).kind == "control"


def infer(name: str, in_types, attrs: dict) -> list[TensorType]:
    """Output types of ``name`` on these input types; attrs must be canonical."""
    op = get(name)
    return op.output_types(in_types, attrs)


def verify(graph: Graph) -> None:
    """The graph verifier with every op's type rule."""
    _verify_graph(graph, infer)


def run_reference(graph: Graph, *args) -> list[np.ndarray]:
    """The reference interpreter: run ``graph`` with each op's numpy reference."""
    if len(args) != len(graph.inputs):
        raise TypeError(f"graph @{graph.name} takes {len(graph.inputs)} inputs, got {len(args)}")
    env = {}
    for v, a in zip(graph.inputs, args):
        a = np.asarray(a)
        if a.shape != v.shape or a.dtype != v.dtype.np:
            raise TypeError(f"input %{v.name}: expected {v.type}, got {a.dtype}{list(a.shape)}")
        env[v] = a
    for n in graph.nodes:
        op = get(n.op)
        with np.errstate(all="ignore"):
            result = op.reference(*[env[v] for v in n.inputs], **n.attrs)
        results = result if isinstance(result, (tuple, list)) else (result,)
        for o, r in zip(n.outputs, results):
            r = np.asarray(r)
            if r.shape != o.shape:
                raise RuntimeError(f"reference of {n.op} gave shape {r.shape}, type rule says {o.type}")
            env[o] = r.astype(o.dtype.np, copy=False)
    return [env[v] for v in graph.outputs]


__all__ = ["OpDef", "OpTypeError", "REGISTRY", "get", "infer", "verify", "run_reference"]
