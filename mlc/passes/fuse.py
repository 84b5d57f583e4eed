"""Fusion: partition the graph's op nodes into groups, each compiled as ONE kernel.

The rules follow the op kinds (DESIGN.md §4-5), walking nodes in order:

* an injective op joins the group of one of its producers: chains of elementwise
  and shape ops become one kernel, and an injective op after a matmul, conv or
  reduction becomes that kernel's epilogue (bias, activation, residual add);
* a reduction joins its producer's group when that group holds only injective ops
  (an elementwise prologue); a contraction (matmul, conv) never does: its micro-kernel
  wants plain, affine reads of its operands, and each operand element is read many
  times. A group holds at most one reduction or contraction, its anchor;
* a merge that would make a group both feed and read another group (a cycle) is
  refused.

What the group computes is decided here; how much of it is recomputed is decided
in lowering (``passes.lower``), which inlines an injective stage into its readers
only when that does not recompute it (each element read about once), and keeps
reductions and contractions materialized. So fusion never recomputes an expensive
producer.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from .. import ops
from ..ir.graph import Graph, Node, Value, print_graph

ANCHOR_KINDS = ("reduction", "contraction", "collective", "control")
ALONE_KINDS = ("collective", "control")   # a collective's or a control-flow op's group holds it alone


@dataclass(eq=False)   # compared and hashed by identity
class Group:
    nodes: list[Node] = field(default_factory=list)
    anchor: Node | None = None
    reads: set["Group"] = field(default_factory=set)   # the other groups it reads values from


@dataclass
class FusedGraph:
    """The graph with its nodes ordered group by group; ``groups`` in execution order."""
    graph: Graph
    groups: list[list[Node]]

    def kernel_names(self) -> list[str]:
        return [kernel_name(g, k) for k, g in enumerate(self.groups)]

    def __str__(self) -> str:
        return print_graph(self.graph, elide_constants=True,
                           groups=[(name, g) for name, g in zip(self.kernel_names(), self.groups)])


def kernel_name(nodes: list[Node], index: int) -> str:
    """``conv_add_relu_3``: the ops of a group (at most four), then its position."""
    names = list(dict.fromkeys(n.op for n in nodes))
    if len(names) > 4:
        names = names[:3] + ["etc"]
    return "_".join(names) + f"_{index}"


def unfused(graph: Graph) -> FusedGraph:
    """One kernel per op (-O0 and -O1)."""
    return FusedGraph(graph, [[n] for n in graph.nodes if n.op != "constant"])


def fuse(graph: Graph) -> FusedGraph:
    producer_group: dict[Value, Group] = {}   # value -> group of the node producing it
    groups: list[Group] = []

    def depends_on(start: Group, target: Group) -> bool:
        """Whether ``start`` reads, directly or through other groups, from ``target``."""
        stack, seen = [start], set()
        while stack:
            for h in stack.pop().reads:
                if h is target:
                    return True
                if h not in seen:
                    seen.add(h)
                    stack.append(h)
        return False

    def can_join(g: Group, n: Node) -> bool:
        others = {producer_group[v] for v in n.inputs if v in producer_group} - {g}
        return not any(depends_on(h, g) for h in others)

    for n in graph.nodes:
        if n.op == "constant":
            continue
        kind = ops.get(n.op).kind
        candidates = dict.fromkeys(producer_group[v] for v in n.inputs if v in producer_group)
        chosen = next((g for g in candidates
                       if (kind == "injective" or (kind == "reduction" and g.anchor is None)) and can_join(g, n)
                       and not (g.anchor is not None and ops.get(g.anchor.op).kind in ALONE_KINDS)), None)
        if chosen is None:
            chosen = Group()
            groups.append(chosen)
        chosen.nodes.append(n)
        chosen.reads |= set(candidates) - {chosen}
        if kind in ANCHOR_KINDS:
            chosen.anchor = n
        for o in n.outputs:
            producer_group[o] = chosen

    ordered = _schedule(groups)
    constants = [n for n in graph.nodes if n.op == "constant"]
    nodes = constants + [n for g in ordered for n in g.nodes]
    return FusedGraph(Graph(graph.name, graph.inputs, nodes, graph.outputs), [g.nodes for g in ordered])


def _schedule(groups: list[Group]) -> list[Group]:
    """Groups in an order where every group runs after the groups it reads from
    (a group grows after later groups are created, so creation order can be wrong);
    among ready groups, creation order."""
    rank = {g: k for k, g in enumerate(groups)}
    readers: dict[Group, list[Group]] = {}
    for g in groups:
        for d in g.reads:
            readers.setdefault(d, []).append(g)
    waiting = {g: len(g.reads) for g in groups}
    ready = [rank[g] for g in groups if not g.reads]   # positions, so the heap pops in creation order
    heapq.heapify(ready)
    order = []
    while ready:
        g = groups[heapq.heappop(ready)]
        order.append(g)
        for r in readers.get(g, []):
            waiting[r] -= 1
            if waiting[r] == 0:
                heapq.heappush(ready, rank[r])
    assert len(order) == len(groups), "fusion made a cycle"
    return order
