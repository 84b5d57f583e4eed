"""Fused graph -> tensor level: each group of nodes (``passes.fuse``) becomes one Kernel.

Each node of a group is lowered by its op's rule, reading the stages of the nodes
before it in the group. The tensor-level passes below (``inline``,
``simplify_indices``, ``reindex_reductions``; run, verified and dumped by the pass
manager) then inline every injective stage that is not a kernel output into the
stages that read it, when that reads each of its elements about once (so nothing
expensive is recomputed), and tidy the index arithmetic. What is left is
materialized inside the kernel.

Constants become runtime parameters, except one-element constants, which are
folded into the kernels that read them as literals. A graph output that is not
computed by a kernel of its own (an input, a constant, or a value returned twice)
gets a ``copy`` kernel so every output buffer is written by exactly one kernel.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np

from .. import ops
from ..ir import expr as E
from ..ir.graph import Graph, Node, Value
from ..ir.tensor import Compute, Kernel, Placeholder, Reduce, ScalarConstant, Tensor, compute, stages_of
from ..ir.types import DType
from .fuse import FusedGraph


@dataclass
class CollectiveKernel:
    """A collective op (``ops/collective.py``): one call into the runtime's
    communicator, not compute stages. Scheduled into a ``CallExtern`` statement."""
    name: str
    op: str
    attrs: dict
    in_type: object      # TensorType, or None (recv)
    out_type: object
    kind: str = "collective"
    site: str | None = None   # the user's source line, named when ranks disagree on the call

    def descriptor(self) -> str:
        """The JSON the runtime's dispatcher reads (``runtime/comm.py``)."""
        attrs = {k: (list(v) if isinstance(v, tuple) else v.name if isinstance(v, DType) else v)
                 for k, v in self.attrs.items()}
        t = self.in_type
        d = {"op": self.op, "attrs": attrs, "in": [t.dtype.np.str, list(t.shape)] if t else None,
             "out": [self.out_type.dtype.np.str, list(self.out_type.shape)]}
        if self.site:
            d["site"] = self.site
        return json.dumps(d, sort_keys=True)

    def __str__(self) -> str:
        ins = f"x: {self.in_type}" if self.in_type is not None else ""
        return f"collective @{self.name}({ins}) -> {self.out_type} {{ {self.descriptor()} }}"


@dataclass
class ControlKernel:
    """A control-flow op (``ops/control.py``): not stages but bodies, each compiled as a
    program of its own (by the driver) and run by the entry (``codegen``) from a loop or
    a branch, as the memory plan's ``ControlCall`` places it."""
    name: str
    op: str
    attrs: dict          # the op's attributes, its body graphs among them
    in_types: list
    out_types: list
    kind: str = "control"

    def bodies(self) -> list[tuple[str, Graph]]:
        """(attribute name, graph) of each body, in attribute order."""
        return [(k, v) for k, v in self.attrs.items() if isinstance(v, Graph)]

    def __str__(self) -> str:
        ins = ", ".join(f"{_LETTERS[n] if n < len(_LETTERS) else f'in{n}'}: {t}" for n, t in enumerate(self.in_types))
        attrs = ", ".join(f"{k}={v!r}" for k, v in self.attrs.items() if not isinstance(v, Graph))
        bodies = ", ".join(f"{k}=@{g.name}" for k, g in self.bodies())
        return (f"control @{self.name}({ins}) -> ({', '.join(map(str, self.out_types))}) "
                f"{{ {self.op} {attrs}; {bodies} }}")


@dataclass
class KernelCall:
    kernel: Kernel
    inputs: list[Value]        # graph values bound to kernel.inputs that are not ScalarConstants
    outputs: list[Value]       # graph values bound to kernel.outputs
    view: bool = False         # output = input reinterpreted (buffers are dense row-major): the plan may skip it


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
INLINE_MAX_READS = 1.25       # reads per element up to which any injective stage is inlined
INLINE_MAX_READS_CHEAP = 4.0  # ... and a cheap one (no calls, few operations)
CHEAP_NODES = 12
REINDEX_MIN_ROW = 16          # innermost extent from which a reduction is recomputed in its reader's shape


def lower_group(nodes: list[Node], name: str, constant_of: dict, outputs: list[Value]) -> tuple[Kernel, list[Value]]:
    """The kernel computing ``outputs`` from the group ``nodes``, and the graph values
    its placeholders bind to."""
    tensor_of: dict[Value, Tensor] = {}
    inputs: list[Tensor] = []
    bound: list[Value] = []
    for node in nodes:
        op = ops.get(node.op)
        ins = []
        for v in node.inputs:
            if v not in tensor_of:
                n = len(inputs)
                pname = _LETTERS[n] if n < len(_LETTERS) else f"in{n}"
                data = constant_of.get(v)
                if data is not None and data.size == 1:
                    tensor_of[v] = ScalarConstant(pname, v.shape, v.dtype, data.reshape(-1)[0].item())
                else:
                    tensor_of[v] = Placeholder(pname, v.shape, v.dtype)
                    bound.append(v)
                inputs.append(tensor_of[v])
            ins.append(tensor_of[v])
        out_types = [o.type for o in node.outputs]
        stages = op.lower(ins, out_types, **node.attrs)
        results = stages[len(stages) - len(out_types):]
        for o, r in zip(node.outputs, results):
            if r.type != o.type:
                raise RuntimeError(f"lowering of {node.op} produced {r.type}, its type rule says {o.type}")
            tensor_of[o] = r
    out_stages = []
    for v in outputs:
        t = tensor_of[v]
        if not isinstance(t, Compute) or t in out_stages:   # an input passed through, or a repeat
            t = _copy_stage(t)
        out_stages.append(t)
    kinds = {ops.get(n.op).kind for n in nodes}
    kind = next((k for k in ("contraction", "reduction") if k in kinds), "injective")
    return name_stages(Kernel(name, inputs, stages_of(out_stages), out_stages, kind)), bound


def name_stages(kernel: Kernel) -> Kernel:
    """Outputs ``out`` (``out0``, ``out1``, ...), temporaries ``T0``, ``T1``, ... in order."""
    temp = 0
    for s in kernel.stages:
        if s in kernel.outputs:
            s.name = "out" if len(kernel.outputs) == 1 else f"out{kernel.outputs.index(s)}"
        else:
            s.name, temp = f"T{temp}", temp + 1
    return kernel


# ----------------------------------------------------------------------------- tensor-level passes
# Kernel -> Kernel, run in this order on every kernel by the pass manager (passes/manager.py)

def inline(kernel: Kernel) -> Kernel:
    """Injective temporaries read about once per element are inlined into their readers."""
    kernel.stages = _inline(kernel.stages, kernel.outputs)
    return name_stages(kernel)


def simplify_indices(kernel: Kernel) -> Kernel:
    """Index arithmetic left by reshapes is simplified with the ranges of the axes."""
    _simplify_indices(kernel.stages)
    return kernel


def reindex_reductions(kernel: Kernel) -> Kernel:
    """A reduction read through a reshape by one elementwise stage is recomputed in the
    reader's index space, so the reader becomes its epilogue."""
    kernel.stages = _reindex_reductions(kernel.stages, kernel.outputs)
    return name_stages(kernel)


def _copy_stage(t: Tensor) -> Compute:
    return compute(t.shape, lambda *i: t[i], "copy")


def _iterations(s: Compute) -> int:
    n = math.prod(s.shape)
    return n * math.prod(s.body.extents) if isinstance(s.body, Reduce) else n


def _body(s: Compute):
    return s.body.body if isinstance(s.body, Reduce) else s.body


def _cheap(e) -> bool:
    nodes = list(E.walk(e))
    return len(nodes) <= CHEAP_NODES and not any(isinstance(x, E.Call) for x in nodes)


def _inline(stages: list[Compute], keep: list[Compute]) -> list[Compute]:
    """Inline injective stages (not in ``keep``) into their readers where each of
    their elements is read about once; the stages that remain, in order."""
    reads: dict[Compute, int] = {}
    for s in stages:
        for x in E.walk(_body(s)):
            if isinstance(x, E.Load) and isinstance(x.source, Compute):
                reads[x.source] = reads.get(x.source, 0) + _iterations(s)
    loads: dict = {}
    kept = []
    for s in stages:
        body = E.substitute(_body(s), {}, loads=loads) if loads else _body(s)
        if isinstance(s.body, Reduce):
            s.body = Reduce(s.body.combiner, s.body.axes, s.body.extents, body)
        else:
            s.body = body
        per_element = reads.get(s, 0) / max(1, math.prod(s.shape))
        if s not in keep and not isinstance(s.body, Reduce) and (
                per_element <= INLINE_MAX_READS or (per_element <= INLINE_MAX_READS_CHEAP and _cheap(body))):
            loads[s] = (lambda st: lambda idx: E.substitute(st.body, dict(zip(st.axes, idx))))(s)
        else:
            kept.append(s)
    return kept


def _ranges(s: Compute) -> dict:
    r = {v: (0, n - 1) for v, n in zip(s.axes, s.shape)}
    if isinstance(s.body, Reduce):
        r.update({v: (0, n - 1) for v, n in zip(s.body.axes, s.body.extents)})
    return r


def _set_body(s: Compute, body) -> None:
    s.body = Reduce(s.body.combiner, s.body.axes, s.body.extents, body) if isinstance(s.body, Reduce) else body


def _simplify_indices(stages: list[Compute]) -> None:
    """Index arithmetic from reshapes (``(j * 3136 + k) // 3136 % 64``) simplified with
    the ranges of the stage's axes, so reads become affine again."""
    for s in stages:
        _set_body(s, E.simplify_index(_body(s), _ranges(s)))


def _affine_reads(s: Compute) -> bool:
    variables = list(s.axes) + list(s.body.axes if isinstance(s.body, Reduce) else [])
    return all(E.linear_coefficient(i, v) is not None for x in E.walk(_body(s)) if isinstance(x, E.Load)
               for i in x.indices for v in variables)


def _reindex_reductions(stages: list[Compute], keep: list[Compute]) -> list[Compute]:
    """A reduction read by one elementwise stage through a reshape (the matrix form of a
    convolution followed by its bias and activation in NCHW) is recomputed in that
    stage's index space, where the reader reads it element for element: then it is
    the reduction's epilogue, applied to the accumulators, instead of a second pass
    over memory with div/mod index arithmetic."""
    out = list(stages)
    for r in stages:
        if not isinstance(r.body, Reduce) or r in keep:
            continue
        readers = [s for s in out if any(isinstance(x, E.Load) and x.source is r for x in E.walk(_body(s)))]
        if len(readers) != 1 or isinstance(readers[0].body, Reduce):
            continue
        e = readers[0]
        loads = [x for x in E.walk(e.body) if isinstance(x, E.Load) and x.source is r]
        idx = {tuple(map(str, x.indices)) for x in loads}
        identity = r.shape == e.shape and all(i is a for i, a in zip(loads[0].indices, e.axes))
        if len(idx) != 1 or identity or not e.shape or not r.shape or math.prod(e.shape) != math.prod(r.shape):
            continue
        if e.shape[-1] < REINDEX_MIN_ROW and e.shape[-1] != r.shape[-1]:
            continue   # rows this short would leave the micro-kernel without a vector of columns
        axes = [E.Var(a.name) for a in e.axes]
        where = [E.substitute(i, dict(zip(e.axes, axes))) for i in loads[0].indices]
        red = r.body
        body = E.substitute(red.body, dict(zip(r.axes, where)))
        new = Compute(r.name, e.shape, axes, Reduce(red.combiner, red.axes, red.extents, body))
        _set_body(new, E.simplify_index(body, _ranges(new)))
        if not _affine_reads(new):
            continue   # index arithmetic that did not simplify would cost more than the second pass
        e.body = E.substitute(e.body, {}, loads={r: lambda _idx, new=new, e=e: E.Load(new, list(e.axes))})
        out[out.index(r)] = new
    return out


def lower_graph(fused: FusedGraph) -> LoweredGraph:
    graph = fused.graph
    constant_of = {n.output: n.attrs["value"] for n in graph.nodes if n.op == "constant"}
    lowered = LoweredGraph(graph, [])
    param_index: dict[Value, int] = {}

    def use(v: Value, any_size: bool = False):
        if v in constant_of and v not in param_index and (any_size or constant_of[v].size != 1):
            param_index[v] = len(lowered.params)
            lowered.params.append(v)
            lowered.param_data.append(np.ascontiguousarray(constant_of[v]))

    read_by: dict[Value, set[int]] = {}   # value -> the groups that read it
    for k, group in enumerate(fused.groups):
        for n in group:
            for v in n.inputs:
                read_by.setdefault(v, set()).add(k)
    graph_outputs = set(graph.outputs)

    names = fused.kernel_names()
    for k, group in enumerate(fused.groups):
        # a group's results: the values a graph output or another group needs
        outs = [o for n in group for o in n.outputs if o in graph_outputs or read_by.get(o, set()) - {k}]
        if len(group) == 1 and ops.communicates(group[0].op):   # always run, even if nothing reads it
            n = group[0]
            for v in n.inputs:
                use(v, any_size=True)   # the runtime needs a buffer even for one element
            kernel = CollectiveKernel(names[k], n.op, dict(n.attrs), n.inputs[0].type if n.inputs else None,
                                      n.outputs[0].type, site=n.loc)
            lowered.calls.append(KernelCall(kernel, list(n.inputs), list(n.outputs)))
            continue
        if not outs:
            continue   # nothing reads it (only after an unoptimized build: DCE removes such nodes)
        if len(group) == 1 and ops.is_control(group[0].op):   # its bodies are compiled by the driver
            n = group[0]
            for v in n.inputs:
                use(v, any_size=True)   # each operand is a buffer the body reads
            kernel = ControlKernel(names[k], n.op, dict(n.attrs), [v.type for v in n.inputs],
                                   [o.type for o in n.outputs])
            lowered.calls.append(KernelCall(kernel, list(n.inputs), list(n.outputs)))
            continue
        kernel, bound = lower_group(group, names[k], constant_of, outs)
        for v in bound:
            use(v)
        view = len(group) == 1 and ops.get(group[0].op).view and len(bound) == 1 and bound[0].type.nbytes == \
            outs[0].type.nbytes
        lowered.calls.append(KernelCall(kernel, bound, outs, view))

    produced = {o for c in lowered.calls for o in c.outputs}
    seen: set[Value] = set()
    counter = len(fused.groups)
    for v in graph.outputs:
        if v not in produced or v in seen:
            copy = Node("copy", [v], {}, [v.type])
            kernel, bound = lower_group([copy], f"copy_{counter}", constant_of, [copy.output])
            counter += 1
            for b in bound:
                use(b)
            lowered.calls.append(KernelCall(kernel, bound, [copy.output]))
            v = copy.output
        seen.add(v)
        lowered.outputs.append(v)
    return lowered
