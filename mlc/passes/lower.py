"""Graph -> tensor level: each op node becomes a Kernel (one kernel per op for now;
the kernel boundary is explicit in ``LoweredGraph.calls``).

Constants become runtime parameters, except one-element constants, which are
folded into the kernels that read them as literals. A graph output that is not
computed by a kernel of its own (an input, a constant, or a value returned twice)
gets a ``copy`` kernel so every output buffer is written by exactly one kernel.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import ops
from ..ir.graph import Graph, Node, Value
from ..ir.tensor import Kernel, Placeholder, ScalarConstant, stages_of


@dataclass
class KernelCall:
    kernel: Kernel
    inputs: list[Value]        # graph values bound to kernel.inputs that are not ScalarConstants
    outputs: list[Value]       # graph values bound to kernel.outputs


@dataclass
class LoweredGraph:
    graph: Graph
    calls: list[KernelCall]
    params: list[Value] = field(default_factory=list)          # constants passed at run time
    param_data: list[np.ndarray] = field(default_factory=list)
    outputs: list[Value] = field(default_factory=list)         # graph outputs after copy insertion

    def __str__(self) -> str:
        return "\n\n".join(str(c.kernel) for c in self.calls)


_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def lower_node(node: Node, name: str, constant_of: dict) -> tuple[Kernel, list[Value]]:
    """The kernel for one node, and the graph values its placeholders bind to."""
    op = ops.get(node.op)
    inputs, bound = [], []
    for n, v in enumerate(node.inputs):
        pname = _LETTERS[n] if n < len(_LETTERS) else f"in{n}"
        data = constant_of.get(v)
        if data is not None and data.size == 1:
            inputs.append(ScalarConstant(pname, v.shape, v.dtype, data.reshape(-1)[0].item()))
        else:
            inputs.append(Placeholder(pname, v.shape, v.dtype))
            bound.append(v)
    out_types = [o.type for o in node.outputs]
    stages = op.lower(inputs, out_types, **node.attrs)
    outputs = stages[len(stages) - len(out_types):]
    for o, t in zip(outputs, out_types):
        if o.type != t:
            raise RuntimeError(f"lowering of {node.op} produced {o.type}, its type rule says {t}")
    stages = stages_of(outputs)
    temp = 0
    for s in stages:
        if s in outputs:
            s.name = "out" if len(outputs) == 1 else f"out{outputs.index(s)}"
        else:
            s.name, temp = f"T{temp}", temp + 1
    return Kernel(name, inputs, stages, outputs, op.kind), bound


def lower_graph(graph: Graph) -> LoweredGraph:
    constant_of = {n.output: n.attrs["value"] for n in graph.nodes if n.op == "constant"}
    lowered = LoweredGraph(graph, [])
    param_index: dict[Value, int] = {}

    def use(v: Value):
        if v in constant_of and v not in param_index and constant_of[v].size != 1:
            param_index[v] = len(lowered.params)
            lowered.params.append(v)
            lowered.param_data.append(np.ascontiguousarray(constant_of[v]))

    counter = 0
    for node in graph.nodes:
        if node.op == "constant":
            continue
        kernel, bound = lower_node(node, f"{node.op}_{counter}", constant_of)
        counter += 1
        for v in bound:
            use(v)
        lowered.calls.append(KernelCall(kernel, bound, list(node.outputs)))

    produced = {o for c in lowered.calls for o in c.outputs}
    seen: set[Value] = set()
    for v in graph.outputs:
        if v not in produced or v in seen:
            copy = Node("copy", [v], {}, [v.type])
            kernel, bound = lower_node(copy, f"copy_{counter}", constant_of)
            counter += 1
            for b in bound:
                use(b)
            lowered.calls.append(KernelCall(kernel, bound, [copy.output]))
            v = copy.output
        seen.add(v)
        lowered.outputs.append(v)
    return lowered
