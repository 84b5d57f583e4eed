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
from ..ir.graph import Graph, Node, print_graph

ANCHOR_KINDS = ("reduction", "contraction")


@dataclass
class Group:
    nodes: list[Node] = field(default_factory=list)
    anchor: Node | None = None


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
    group_of: dict[int, Group] = {}        # node id -> its group
    producer_group: dict[int, Group] = {}  # value id -> group of the node producing it
    groups: list[Group] = []

    def input_groups(g: Group) -> set[int]:
        members = {id(n) for n in g.nodes}
        return {id(producer_group[id(v)]) for n in g.nodes for v in n.inputs
                if id(v) in producer_group and id(v.producer) not in members}

    by_id: dict[int, Group] = {}

    def depends_on(start: Group, target: Group) -> bool:
        """Whether ``start`` reads, directly or through other groups, from ``target``."""
        stack, seen = [start], set()
        while stack:
            g = stack.pop()
            for gid in input_groups(g):
                if gid == id(target):
                    return True
                if gid not in seen:
                    seen.add(gid)
                    stack.append(by_id[gid])
        return False

    def can_join(g: Group, n: Node) -> bool:
        others = {id(producer_group[id(v)]): producer_group[id(v)] for v in n.inputs
                  if id(v) in producer_group and producer_group[id(v)] is not g}
        return not any(depends_on(h, g) for h in others.values())

    for n in graph.nodes:
        if n.op == "constant":
            continue
        kind = ops.get(n.op).kind
        candidates = list(dict.fromkeys(id(producer_group[id(v)]) for v in n.inputs if id(v) in producer_group))
        chosen = None
        for gid in candidates:
            g = by_id[gid]
            if kind == "injective" or (kind == "reduction" and g.anchor is None):
                if can_join(g, n):
                    chosen = g
                    break
        if chosen is None:
            chosen = Group()
            groups.append(chosen)
            by_id[id(chosen)] = chosen
        chosen.nodes.append(n)
        if kind in ANCHOR_KINDS:
            chosen.anchor = n
        group_of[id(n)] = chosen
        for o in n.outputs:
            producer_group[id(o)] = chosen

    ordered = _schedule(groups, input_groups, by_id)
    constants = [n for n in graph.nodes if n.op == "constant"]
    nodes = constants + [n for g in ordered for n in g.nodes]
    return FusedGraph(Graph(graph.name, graph.inputs, nodes, graph.outputs), [g.nodes for g in ordered])


def _schedule(groups: list[Group], input_groups, by_id) -> list[Group]:
    """Groups in an order where every group runs after the groups it reads from
    (a group grows after later groups are created, so creation order can be wrong);
    among ready groups, creation order."""
    rank = {id(g): k for k, g in enumerate(groups)}
    deps = {id(g): input_groups(g) for g in groups}
    readers: dict[int, list[int]] = {}
    for gid, ds in deps.items():
        for d in ds:
            readers.setdefault(d, []).append(gid)
    waiting = {gid: len(ds) for gid, ds in deps.items()}
    ready = [(rank[gid], gid) for gid, w in waiting.items() if w == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        _, gid = heapq.heappop(ready)
        order.append(by_id[gid])
        for r in readers.get(gid, []):
            waiting[r] -= 1
            if waiting[r] == 0:
                heapq.heappush(ready, (rank[r], r))
    assert len(order) == len(groups), "fusion made a cycle"
    return order
